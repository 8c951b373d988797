//! Load generator for line-framed echo servers: keeps frames in flight,
//! checks every byte that comes back, and reports rates and latencies.
//!
//! ```text
//! loadgen --addr 127.0.0.1:7878 --connections 64 --in-flight 16 --size 64 --duration-secs 5
//! loadgen --addr ... --mode idle --connections 10000   # then hold until stdin closes
//! loadgen --addr ... --mode churn --connections 16 --duration-secs 5
//! ```
//!
//! * `echo`: every connection keeps `--in-flight` frames outstanding; each
//!   echoed byte is compared with the byte sent at that position, so a
//!   lost, reordered or corrupted byte fails the run (exit 1). Latency is
//!   from the write that sent a frame to the read that completed its echo.
//! * `idle`: opens the connections, echoes one frame on each (so the
//!   server has accepted and served every one), prints a JSON line with
//!   `"mode":"idle"`, then holds them until stdin reaches end of file or
//!   `--hold-secs` pass.
//! * `churn`: `--connections` workers each connect, echo one frame and
//!   close, as fast as they can; the rate is connections per second.
//!
//! Every run is bounded: by `--duration-secs` (after `--warmup-secs`), by
//! `--max-frames` in all, and by a stall timeout on every read and
//! connect. The report ([`natter_bench::LoadReport`]) is one line of JSON on
//! stdout; a human summary goes to stderr. It runs on one thread: pin it to
//! one core (`taskset -c 1`) to keep it off the server's.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use natter_bench::{Frames, LoadReport, STALL_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio::time::timeout;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Echo,
    Idle,
    Churn,
}

/// Load generator for line-framed echo servers.
#[derive(Debug, Parser)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:7878")]
    addr: SocketAddr,
    /// What to measure.
    #[arg(long, value_enum, default_value = "echo")]
    mode: Mode,
    /// Connections (workers in churn mode).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Frames in flight per connection (echo mode).
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Payload bytes per frame, delimiter excluded.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Length of the measurement window.
    #[arg(long, default_value_t = 5.0)]
    duration_secs: f64,
    /// Load before the window opens, not counted.
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Stop after this many frames (churn: connections) in all, window or
    /// not.
    #[arg(long, default_value_t = 100_000_000)]
    max_frames: u64,
    /// Idle mode: release the connections after this long even if stdin
    /// stays open.
    #[arg(long, default_value_t = 60.0)]
    hold_secs: f64,
    /// Connects in progress at once while opening connections.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
}

type Result<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args = Args::parse();
    natter_bench::raise_fd_limit();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loadgen: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match args.mode {
            Mode::Echo => echo(&args).await,
            Mode::Idle => idle(&args).await,
            Mode::Churn => churn(&args).await,
        }
    });
    match outcome {
        Ok(report) => {
            eprintln!(
                "loadgen {}: {} conns, {:.0} frames/s, {:.1} MB/s, p50 {:.1} us, p99 {:.1} us, p999 {:.1} us",
                report.mode,
                report.connections,
                report.frames_per_sec,
                report.mb_per_sec,
                report.p50_us,
                report.p99_us,
                report.p999_us
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("loadgen: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the report as the one JSON line on stdout.
fn print_report(report: &LoadReport) -> Result<()> {
    let json = serde_json::to_string(report).map_err(|error| error.to_string())?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{json}")
        .and_then(|()| stdout.flush())
        .map_err(|error| format!("cannot write the report: {error}"))
}

fn histogram() -> Histogram<u64> {
    // 1 ns to 100 s at 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

fn fill_latencies(report: &mut LoadReport, latencies: &Histogram<u64>) {
    let us = |ns: u64| ns as f64 / 1000.0;
    report.p50_us = us(latencies.value_at_quantile(0.50));
    report.p99_us = us(latencies.value_at_quantile(0.99));
    report.p999_us = us(latencies.value_at_quantile(0.999));
    report.max_us = us(latencies.max());
}

async fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let stream = timeout(STALL_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
        .map_err(|error| format!("cannot connect to {addr}: {error}"))?;
    stream
        .set_nodelay(true)
        .map_err(|error| error.to_string())?;
    Ok(stream)
}

/// Opens `count` connections, `concurrency` connects at a time.
async fn connect_all(addr: SocketAddr, count: usize, concurrency: usize) -> Result<Vec<TcpStream>> {
    use futures::StreamExt;
    let streams: Vec<Result<TcpStream>> = futures::stream::iter((0..count).map(|_| connect(addr)))
        .buffered(concurrency.max(1))
        .collect()
        .await;
    streams.into_iter().collect()
}

/// The measurement window shared by every connection of a run.
struct Window {
    origin: Instant,
    /// Nanoseconds since `origin` at which counting starts and stops.
    start: u64,
    end: u64,
    /// Frames (churn: connections) still allowed, in all.
    budget: AtomicU64,
    /// Latest completion inside the window, ns since `origin`; the window
    /// ends there when the budget runs out first.
    last: AtomicU64,
}

impl Window {
    fn new(args: &Args) -> Self {
        let secs = |s: f64| (s.max(0.0) * 1e9) as u64;
        let start = secs(args.warmup_secs);
        Window {
            origin: Instant::now(),
            start,
            end: start + secs(args.duration_secs).max(1),
            budget: AtomicU64::new(args.max_frames),
            last: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn contains(&self, t: u64) -> bool {
        (self.start..self.end).contains(&t)
    }

    fn over(&self, t: u64) -> bool {
        t >= self.end
    }

    /// Takes up to `wanted` from the budget; returns how many it got.
    fn claim(&self, wanted: u64) -> u64 {
        let mut left = self.budget.load(Ordering::Relaxed);
        loop {
            let take = left.min(wanted);
            if take == 0 {
                return 0;
            }
            match self.budget.compare_exchange_weak(
                left,
                left - take,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return take,
                Err(now) => left = now,
            }
        }
    }

    fn completed_at(&self, t: u64) {
        self.last.fetch_max(t, Ordering::Relaxed);
    }

    /// Seconds of measurement: the window, or less if the budget ran out.
    fn seconds(&self) -> f64 {
        let last = self.last.load(Ordering::Relaxed).min(self.end);
        last.saturating_sub(self.start) as f64 / 1e9
    }
}

/// What one connection (or churn worker) counted inside the window.
struct Tally {
    frames: u64,
    bytes: u64,
    latencies: Histogram<u64>,
    connect_errors: u64,
}

impl Tally {
    fn new() -> Self {
        Tally {
            frames: 0,
            bytes: 0,
            latencies: histogram(),
            connect_errors: 0,
        }
    }

    fn add(&mut self, other: &Tally) {
        self.frames += other.frames;
        self.bytes += other.bytes;
        self.connect_errors += other.connect_errors;
        self.latencies
            .add(&other.latencies)
            .expect("same histogram bounds");
    }

    fn report(&self, mode: &str, args: &Args, window: &Window) -> LoadReport {
        let seconds = window.seconds();
        let per_sec = |n: u64| {
            if seconds > 0.0 {
                n as f64 / seconds
            } else {
                0.0
            }
        };
        let mut report = LoadReport {
            mode: mode.to_owned(),
            connections: args.connections,
            in_flight: args.in_flight,
            frame_size: args.size,
            seconds,
            frames: self.frames,
            frames_per_sec: per_sec(self.frames),
            mb_per_sec: per_sec(self.bytes) / 1e6,
            connect_errors: self.connect_errors,
            ..LoadReport::default()
        };
        fill_latencies(&mut report, &self.latencies);
        report
    }
}

async fn echo(args: &Args) -> Result<LoadReport> {
    if args.in_flight == 0 || args.connections == 0 {
        return Err("--connections and --in-flight must be at least 1".into());
    }
    let streams = connect_all(args.addr, args.connections, args.connect_concurrency).await?;
    let frames = Arc::new(Frames::new(args.size));
    let window = Arc::new(Window::new(args));
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(index, stream)| {
            let frames = frames.clone();
            let window = window.clone();
            let in_flight = args.in_flight;
            tokio::spawn(async move {
                echo_connection(stream, index as u64, in_flight, &frames, &window).await
            })
        })
        .collect();
    let mut total = Tally::new();
    for task in tasks {
        let tally = task
            .await
            .map_err(|error| format!("connection task failed: {error}"))??;
        total.add(&tally);
    }
    let report = total.report("echo", args, &window);
    print_report(&report)?;
    Ok(report)
}

/// One connection of echo mode: a writer that tops up to `in_flight`
/// outstanding frames with one write, and a reader that checks the echo
/// byte by byte and frees the writer's slots.
async fn echo_connection(
    mut stream: TcpStream,
    offset: u64,
    in_flight: usize,
    frames: &Frames,
    window: &Window,
) -> Result<Tally> {
    let (mut reader, mut writer) = stream.split();
    let sent = AtomicU64::new(0);
    let received = AtomicU64::new(0);
    let writer_done = AtomicBool::new(false);
    let room = Notify::new();
    let done = Notify::new();
    // When frame `seq` was written, ns since the window's origin, at
    // `seq % in_flight` (at most `in_flight` frames are outstanding).
    let sent_at: Vec<AtomicU64> = (0..in_flight).map(|_| AtomicU64::new(0)).collect();
    let limit = in_flight as u64;

    let write = async {
        let mut buffer = Vec::new();
        let mut seq = 0u64;
        loop {
            let now = window.now();
            if window.over(now) {
                break;
            }
            let free = limit - (seq - received.load(Ordering::Acquire));
            if free == 0 {
                room.notified().await;
                continue;
            }
            let count = window.claim(free);
            if count == 0 {
                break;
            }
            for next in seq..seq + count {
                buffer.extend_from_slice(frames.get(offset + next));
                sent_at[(next % limit) as usize].store(now, Ordering::Relaxed);
            }
            seq += count;
            sent.store(seq, Ordering::Release);
            writer
                .write_all(&buffer)
                .await
                .map_err(|error| format!("write failed: {error}"))?;
            buffer.clear();
        }
        writer_done.store(true, Ordering::Release);
        done.notify_one();
        Ok::<(), String>(())
    };

    let read = async {
        let mut tally = Tally::new();
        let mut buffer = vec![0u8; 64 * 1024];
        let mut seq = 0u64;
        let mut at = 0usize;
        loop {
            if writer_done.load(Ordering::Acquire) && seq == sent.load(Ordering::Acquire) {
                return Ok(tally);
            }
            let read = tokio::select! {
                read = timeout(STALL_TIMEOUT, reader.read(&mut buffer)) => read,
                () = done.notified() => continue,
            };
            let read = read
                .map_err(|_| format!("no echo for {STALL_TIMEOUT:?}"))?
                .map_err(|error| format!("read failed: {error}"))?;
            if read == 0 {
                return Err(format!(
                    "the server closed the connection after {seq} frames"
                ));
            }
            let now = window.now();
            let mut input = &buffer[..read];
            while !input.is_empty() {
                if seq >= sent.load(Ordering::Acquire) {
                    return Err("the server sent more than it was sent".into());
                }
                let expected = &frames.get(offset + seq)[at..];
                let len = expected.len().min(input.len());
                if input[..len] != expected[..len] {
                    return Err(format!("frame {seq} came back wrong at byte {at}"));
                }
                input = &input[len..];
                at += len;
                if at == frames.get(offset + seq).len() {
                    if window.contains(now) {
                        let sent = sent_at[(seq % limit) as usize].load(Ordering::Relaxed);
                        tally
                            .latencies
                            .saturating_record(now.saturating_sub(sent).max(1));
                        tally.frames += 1;
                        tally.bytes += at as u64;
                        window.completed_at(now);
                    }
                    seq += 1;
                    at = 0;
                }
            }
            received.store(seq, Ordering::Release);
            room.notify_one();
        }
    };

    let ((), tally) = tokio::try_join!(write, read)?;
    Ok(tally)
}

/// Sends one frame on `stream` and checks its echo.
async fn round_trip(stream: &mut TcpStream, frame: &[u8]) -> Result<()> {
    stream
        .write_all(frame)
        .await
        .map_err(|error| format!("write failed: {error}"))?;
    let mut echo = vec![0u8; frame.len()];
    timeout(STALL_TIMEOUT, stream.read_exact(&mut echo))
        .await
        .map_err(|_| format!("no echo for {STALL_TIMEOUT:?}"))?
        .map_err(|error| format!("read failed: {error}"))?;
    if echo != frame {
        return Err("the echo differs from the frame sent".into());
    }
    Ok(())
}

async fn idle(args: &Args) -> Result<LoadReport> {
    let frames = Frames::new(args.size);
    let slots = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let frame = Arc::new(frames.get(0).to_vec());
    let opening: Vec<_> = (0..args.connections)
        .map(|_| {
            let slots = slots.clone();
            let frame = frame.clone();
            let addr = args.addr;
            tokio::spawn(async move {
                let _slot = slots
                    .acquire_owned()
                    .await
                    .map_err(|error| error.to_string())?;
                let mut stream = connect(addr).await?;
                round_trip(&mut stream, &frame).await?;
                Ok::<_, String>(stream)
            })
        })
        .collect();
    let mut streams = Vec::with_capacity(args.connections);
    for task in opening {
        streams.push(task.await.map_err(|error| error.to_string())??);
    }
    let report = LoadReport {
        mode: "idle".into(),
        connections: streams.len(),
        frame_size: args.size,
        ..LoadReport::default()
    };
    print_report(&report)?;
    // Hold until stdin ends (the suite closes it once it has measured) or
    // the hold time passes.
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
    });
    let _ = timeout(
        Duration::from_secs_f64(args.hold_secs.max(0.0)),
        stdin_closed,
    )
    .await;
    drop(streams);
    Ok(report)
}

async fn churn(args: &Args) -> Result<LoadReport> {
    let frames = Arc::new(Frames::new(args.size));
    let window = Arc::new(Window::new(args));
    let workers: Vec<_> = (0..args.connections.max(1))
        .map(|worker| {
            let frames = frames.clone();
            let window = window.clone();
            let addr = args.addr;
            tokio::spawn(async move {
                let mut tally = Tally::new();
                let mut seq = worker as u64;
                while !window.over(window.now()) && window.claim(1) == 1 {
                    let started = window.now();
                    let mut stream = match TcpStream::connect(addr).await {
                        Ok(stream) => stream,
                        Err(error) => {
                            // Out of ports or a full backlog: count it, back off.
                            tally.connect_errors += 1;
                            if tally.connect_errors > 1000 {
                                return Err(format!("too many failed connects, last: {error}"));
                            }
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    round_trip(&mut stream, frames.get(seq)).await?;
                    drop(stream);
                    seq += 1;
                    let now = window.now();
                    if window.contains(now) {
                        tally
                            .latencies
                            .saturating_record(now.saturating_sub(started).max(1));
                        tally.frames += 1;
                        tally.bytes += frames.get(seq).len() as u64;
                        window.completed_at(now);
                    }
                }
                Ok::<_, String>(tally)
            })
        })
        .collect();
    let mut total = Tally::new();
    for worker in workers {
        total.add(&worker.await.map_err(|error| error.to_string())??);
    }
    let report = total.report("churn", args, &window);
    print_report(&report)?;
    Ok(report)
}
