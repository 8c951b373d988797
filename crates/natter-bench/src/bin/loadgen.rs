//! Load generator for line-framed echo servers: keeps frames in flight (or
//! sends them on a schedule), checks every byte that comes back, and
//! reports rates and latencies.
//!
//! ```text
//! loadgen --addr 127.0.0.1:7878 --connections 64 --in-flight 16 --size 64 --duration-secs 5
//! loadgen --addr ... --client natter        # the same load through natter's ClientService
//! loadgen --addr ... --mode rate --rate 1000000 --connections 64   # open loop
//! loadgen --addr ... --tls-ca ca.pem        # echo or rate mode over TLS
//! loadgen --addr ... --mode idle --connections 10000   # then hold until stdin closes
//! loadgen --addr ... --mode churn --connections 16 --duration-secs 5
//! ```
//!
//! * `echo`: every connection keeps `--in-flight` frames outstanding; each
//!   echoed byte is compared with the byte sent at that position, so a
//!   lost, reordered or corrupted byte fails the run (exit 1). Latency is
//!   from the write that sent a frame to the read that completed its echo.
//!   With `--client hand` (the default) this is loadgen's own pipelined
//!   loop: per connection a writer that tops up the free slots with one
//!   write, and a reader that checks the bytes. With `--client natter`
//!   every connection is a natter `ClientService`, with `--in-flight`
//!   requests outstanding on each through `ready()` + `call()`, every
//!   answer compared with its request.
//! * `rate`: open loop, as wrk2 does it. Requests go out on a fixed
//!   schedule, `--rate` per second in all, whatever the answers do: each
//!   connection sends `--burst` frames in one write when its turn comes,
//!   turns `burst x connections / rate` apart, the connections' turns
//!   spread evenly over that interval. Latency is from the request's
//!   *scheduled* send time, so a server that stalls is charged for the
//!   requests that queue behind the stall (no coordinated omission). One
//!   pacing task wakes the writers; it sleeps on a timer when the next turn
//!   is over 2 ms away (tokio's timers have 1 ms resolution) and otherwise
//!   yields to the runtime and looks again, so loadgen keeps its core busy
//!   in this mode. The report's `target_rate` is the rate asked for,
//!   `frames_per_sec` what was achieved, and `send_lag_*` how late loadgen
//!   itself wrote (included in the latencies).
//! * `idle`: opens the connections, echoes one frame on each (so the
//!   server has accepted and served every one), prints a JSON line with
//!   `"mode":"idle"`, then holds them until stdin reaches end of file or
//!   `--hold-secs` pass.
//! * `churn`: `--connections` workers each connect, echo one frame and
//!   close, as fast as they can; the rate is connections per second.
//!
//! `--tls-ca CA.pem` speaks TLS (rustls, ring provider) in `echo` and
//! `rate` modes, trusting only that CA and checking the server's
//! certificate for `--server-name` (default `localhost`); the handshake is
//! done before the window opens.
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

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use futures::FutureExt;
use hdrhistogram::Histogram;
use natter::{ClientService, Frame};
use natter_bench::{Frames, LoadReport, STALL_TIMEOUT};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio::time::timeout;
use tokio_rustls::rustls::pki_types::ServerName;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Echo,
    Rate,
    Idle,
    Churn,
}

/// Who writes the requests and reads the answers in echo mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ClientKind {
    /// loadgen's own pipelined read/write loop.
    Hand,
    /// One natter `ClientService` per connection.
    Natter,
}

impl ClientKind {
    fn name(self) -> &'static str {
        match self {
            ClientKind::Hand => "hand",
            ClientKind::Natter => "natter",
        }
    }
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
    /// Echo mode: loadgen's own loop, or natter's `ClientService`.
    #[arg(long, value_enum, default_value = "hand")]
    client: ClientKind,
    /// Rate mode: requests per second in all, over every connection.
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// Rate mode: frames each connection sends at once (one write) when
    /// its turn comes; the turns come at rate / connections / burst per
    /// second.
    #[arg(long, default_value_t = 1)]
    burst: usize,
    /// Speak TLS, trusting only the CA certificate(s) in this PEM file
    /// (echo and rate modes).
    #[arg(long, value_name = "CA.pem")]
    tls_ca: Option<PathBuf>,
    /// The name the server's certificate must be valid for (with
    /// --tls-ca).
    #[arg(long, default_value = natter_bench::tls::SERVER_NAME)]
    server_name: String,
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
        match (args.mode, args.client) {
            (Mode::Echo, ClientKind::Hand) => echo(&args, None).await,
            (Mode::Echo, ClientKind::Natter) => natter_echo(&args).await,
            (Mode::Rate, ClientKind::Hand) => {
                if !(args.rate.is_finite() && args.rate > 0.0) {
                    return Err("--rate must be above 0".into());
                }
                echo(&args, Some(args.rate)).await
            }
            (_, ClientKind::Natter) => Err("--client natter is for echo mode".into()),
            (Mode::Idle | Mode::Churn, _) if args.tls_ca.is_some() => {
                Err("--tls-ca is for echo and rate modes".into())
            }
            (Mode::Idle, _) => idle(&args).await,
            (Mode::Churn, _) => churn(&args).await,
        }
    });
    match outcome {
        Ok(report) => {
            eprintln!(
                "loadgen {} ({} client): {} conns, {:.0} frames/s, {:.1} MB/s, p50 {:.1} us, p99 {:.1} us, p999 {:.1} us{}",
                report.mode,
                args.client.name(),
                report.connections,
                report.frames_per_sec,
                report.mb_per_sec,
                report.p50_us,
                report.p99_us,
                report.p999_us,
                if report.mode == "rate" {
                    format!(
                        "; sent late by p50 {:.1} us, p99 {:.1} us",
                        report.send_lag_p50_us, report.send_lag_p99_us
                    )
                } else {
                    String::new()
                }
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

/// A connection of echo or rate mode: plain TCP, or TLS over it.
enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// What a TLS connection needs: the client configuration and the name to
/// check.
#[derive(Clone)]
struct Tls {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl Tls {
    fn from_args(args: &Args) -> Result<Option<Tls>> {
        let Some(ca) = &args.tls_ca else {
            return Ok(None);
        };
        let config = natter_bench::tls::client_config(ca)?;
        let name = ServerName::try_from(args.server_name.clone())
            .map_err(|error| format!("--server-name {:?}: {error}", args.server_name))?;
        Ok(Some(Tls {
            connector: tokio_rustls::TlsConnector::from(config),
            name,
        }))
    }
}

/// Connects, and does the TLS handshake with `tls`.
async fn connect_stream(addr: SocketAddr, tls: Option<Tls>) -> Result<Stream> {
    let tcp = connect(addr).await?;
    let Some(tls) = tls else {
        return Ok(Stream::Tcp(tcp));
    };
    let stream = timeout(STALL_TIMEOUT, tls.connector.connect(tls.name, tcp))
        .await
        .map_err(|_| format!("the TLS handshake with {addr} timed out"))?
        .map_err(|error| format!("the TLS handshake with {addr} failed: {error}"))?;
    Ok(Stream::Tls(Box::new(stream)))
}

/// Opens `count` connections, `concurrency` connects at a time.
async fn connect_all(
    addr: SocketAddr,
    count: usize,
    concurrency: usize,
    tls: Option<Tls>,
) -> Result<Vec<Stream>> {
    use futures::StreamExt;
    let streams: Vec<Result<Stream>> =
        futures::stream::iter((0..count).map(|_| connect_stream(addr, tls.clone())))
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
    /// Open loop: how late each burst was written after its scheduled
    /// time (loadgen's own lag, included in `latencies`).
    send_lag: Histogram<u64>,
    connect_errors: u64,
}

impl Tally {
    fn new() -> Self {
        Tally {
            frames: 0,
            bytes: 0,
            latencies: histogram(),
            send_lag: histogram(),
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
        self.send_lag
            .add(&other.send_lag)
            .expect("same histogram bounds");
    }

    fn report(&self, mode: &str, args: &Args, window: &Window) -> LoadReport {
        let target_rate = if args.mode == Mode::Rate {
            args.rate
        } else {
            0.0
        };
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
            target_rate,
            client: args.client.name().to_owned(),
            ..LoadReport::default()
        };
        fill_latencies(&mut report, &self.latencies);
        if !self.send_lag.is_empty() {
            report.send_lag_p50_us = self.send_lag.value_at_quantile(0.50) as f64 / 1000.0;
            report.send_lag_p99_us = self.send_lag.value_at_quantile(0.99) as f64 / 1000.0;
        }
        report
    }
}

/// How a connection's writer decides when to send.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// Closed loop: keep this many frames outstanding.
    InFlight(usize),
    /// Open loop: burst `k` (frames `k * burst` to `(k + 1) * burst - 1`)
    /// is due at `phase + k * interval`, ns since the window's origin.
    Schedule(Schedule),
}

/// An open-loop connection's schedule.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    phase: f64,
    interval: f64,
    burst: u64,
}

impl Schedule {
    /// When burst `k` is due, ns since the origin.
    fn burst_due(&self, k: u64) -> u64 {
        (self.phase + k as f64 * self.interval) as u64
    }

    /// When frame `seq` is due (its burst's time), ns since the origin.
    fn due(&self, seq: u64) -> u64 {
        self.burst_due(seq / self.burst)
    }

    /// How many frames are due by `now`.
    fn due_by(&self, now: u64) -> u64 {
        if (now as f64) < self.phase {
            0
        } else {
            (((now as f64 - self.phase) / self.interval) as u64 + 1) * self.burst
        }
    }
}

/// Open loop: wakes each connection's writer when its next burst is due.
/// One task for all of them; it waits on a timer when the next burst is
/// more than 2 ms away (tokio's timers have 1 ms resolution), else yields
/// to the runtime and looks again, so loadgen's core stays busy.
async fn pace(schedules: Vec<Schedule>, wake: Vec<Arc<Notify>>, window: Arc<Window>) {
    let mut next: Vec<u64> = vec![0; schedules.len()];
    loop {
        let now = window.now();
        if window.over(now) {
            break;
        }
        let mut soonest = u64::MAX;
        for ((schedule, wake), next) in schedules.iter().zip(&wake).zip(&mut next) {
            let mut due = schedule.burst_due(*next);
            if due <= now {
                wake.notify_one();
                while due <= now {
                    *next += 1;
                    due = schedule.burst_due(*next);
                }
            }
            soonest = soonest.min(due);
        }
        let wait = soonest.saturating_sub(window.now());
        if wait > 2_000_000 {
            tokio::time::sleep(Duration::from_nanos(wait - 1_000_000)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    // The writers see the window is over.
    for wake in &wake {
        wake.notify_one();
    }
}

/// Echo mode with loadgen's own loop (closed), or rate mode (`rate`
/// frames per second in all: open).
async fn echo(args: &Args, rate: Option<f64>) -> Result<LoadReport> {
    if args.in_flight == 0 || args.connections == 0 || args.burst == 0 {
        return Err("--connections, --in-flight and --burst must be at least 1".into());
    }
    let tls = Tls::from_args(args)?;
    let streams = connect_all(args.addr, args.connections, args.connect_concurrency, tls).await?;
    let frames = Arc::new(Frames::new(args.size));
    let window = Arc::new(Window::new(args));
    let connections = args.connections as f64;
    let schedules: Option<Vec<Schedule>> = rate.map(|rate| {
        // Each connection sends `burst` frames every `interval`.
        let burst = args.burst as u64;
        let interval = 1e9 * connections * burst as f64 / rate;
        (0..args.connections)
            .map(|index| Schedule {
                phase: interval * index as f64 / connections,
                interval,
                burst,
            })
            .collect()
    });
    let wakes: Vec<Arc<Notify>> = (0..args.connections)
        .map(|_| Arc::new(Notify::new()))
        .collect();
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(index, stream)| {
            let frames = frames.clone();
            let window = window.clone();
            let pace = match &schedules {
                None => Pace::InFlight(args.in_flight),
                Some(schedules) => Pace::Schedule(schedules[index]),
            };
            let wake = wakes[index].clone();
            tokio::spawn(async move {
                let offset = index as u64;
                let connection = Connection {
                    offset,
                    pace,
                    wake: &wake,
                    frames: &frames,
                    window: &window,
                };
                match stream {
                    Stream::Tcp(mut stream) => {
                        let (reader, writer) = stream.split();
                        connection.run(reader, writer).await
                    }
                    Stream::Tls(stream) => {
                        let (reader, writer) = tokio::io::split(*stream);
                        connection.run(reader, writer).await
                    }
                }
            })
        })
        .collect();
    if let Some(schedules) = schedules {
        tokio::spawn(pace(schedules, wakes, window.clone()));
    }
    let mut total = Tally::new();
    for task in tasks {
        let tally = task
            .await
            .map_err(|error| format!("connection task failed: {error}"))??;
        total.add(&tally);
    }
    let mode = if rate.is_some() { "rate" } else { "echo" };
    let report = total.report(mode, args, &window);
    print_report(&report)?;
    Ok(report)
}

/// One connection of echo or rate mode, before it runs.
struct Connection<'a> {
    /// Where in the frame sequence it starts.
    offset: u64,
    pace: Pace,
    /// Open loop: notified when the next burst is due.
    wake: &'a Notify,
    frames: &'a Frames,
    window: &'a Window,
}

impl Connection<'_> {
    /// Runs the connection: a writer that sends frames (tops up the free
    /// slots, or sends what the schedule says is due, with one write), and a
    /// reader that checks the echo byte by byte and frees the writer's slots.
    async fn run<R, W>(self, mut reader: R, mut writer: W) -> Result<Tally>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let Connection {
            offset,
            pace,
            wake,
            frames,
            window,
        } = self;
        let sent = AtomicU64::new(0);
        let received = AtomicU64::new(0);
        let writer_done = AtomicBool::new(false);
        let room = Notify::new();
        let done = Notify::new();
        // Closed loop: when frame `seq` was written, ns since the window's
        // origin, at `seq % in_flight` (at most `in_flight` frames are
        // outstanding). Open loop: not needed, the schedule says.
        let in_flight = match pace {
            Pace::InFlight(in_flight) => in_flight,
            Pace::Schedule(_) => 1,
        };
        let sent_at: Vec<AtomicU64> = (0..in_flight).map(|_| AtomicU64::new(0)).collect();
        // Open loop: how late each burst left, after its scheduled time.
        let send_lag = std::sync::Mutex::new(histogram());
        let limit = in_flight as u64;

        let write = async {
            let mut buffer = Vec::new();
            let mut seq = 0u64;
            loop {
                let now = window.now();
                if window.over(now) {
                    break;
                }
                let wanted = match pace {
                    Pace::InFlight(_) => limit - (seq - received.load(Ordering::Acquire)),
                    Pace::Schedule(schedule) => schedule.due_by(now).saturating_sub(seq),
                };
                if wanted == 0 {
                    match pace {
                        Pace::InFlight(_) => room.notified().await,
                        Pace::Schedule(_) => wake.notified().await,
                    }
                    continue;
                }
                let count = window.claim(wanted);
                if count == 0 {
                    break;
                }
                if let (Pace::Schedule(schedule), Ok(mut lag)) = (pace, send_lag.try_lock()) {
                    if window.contains(now) {
                        lag.saturating_record(now.saturating_sub(schedule.due(seq)).max(1));
                    }
                }
                for next in seq..seq + count {
                    buffer.extend_from_slice(frames.get(offset + next));
                    if let Pace::InFlight(_) = pace {
                        sent_at[(next % limit) as usize].store(now, Ordering::Relaxed);
                    }
                }
                seq += count;
                sent.store(seq, Ordering::Release);
                writer
                    .write_all(&buffer)
                    .await
                    .map_err(|error| format!("write failed: {error}"))?;
                // Nothing for TCP; TLS may hold the last record back until
                // flushed.
                writer
                    .flush()
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
                            let sent = match pace {
                                Pace::InFlight(_) => {
                                    sent_at[(seq % limit) as usize].load(Ordering::Relaxed)
                                }
                                Pace::Schedule(schedule) => schedule.due(seq),
                            };
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

        let ((), mut tally) = tokio::try_join!(write, read)?;
        tally.send_lag = send_lag
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(tally)
    }
}

/// Echo mode through natter: one `ClientService` per connection.
async fn natter_echo(args: &Args) -> Result<LoadReport> {
    use futures::StreamExt;
    if args.in_flight == 0 || args.connections == 0 {
        return Err("--connections and --in-flight must be at least 1".into());
    }
    let connector = match &args.tls_ca {
        Some(ca) => Some(
            natter::transport::tls::TlsConnector::from_pem_file(ca)
                .and_then(|connector| connector.server_name(&args.server_name))
                .map_err(|error| error.to_string())?,
        ),
        None => None,
    };
    let addr = args.addr;
    let services: Vec<std::result::Result<ClientService, natter::Error>> =
        futures::stream::iter((0..args.connections).map(|_| {
            let mut builder = natter::Client::builder().max_pending(args.in_flight.max(1024));
            if let Some(connector) = &connector {
                builder = builder.tls(connector.clone());
            }
            builder.connect_service(addr)
        }))
        .buffered(args.connect_concurrency.max(1))
        .collect()
        .await;
    let services = services
        .into_iter()
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|error| format!("cannot connect to {addr}: {error}"))?;
    let frames = Frames::new(args.size);
    // The requests: each distinct frame without its delimiter, which the
    // client's codec adds.
    let requests: Arc<Vec<Frame>> = Arc::new(
        (0..Frames::DISTINCT as u64)
            .map(|seq| {
                let frame = frames.get(seq);
                Frame::copy_from_slice(&frame[..frame.len() - 1])
            })
            .collect(),
    );
    let window = Arc::new(Window::new(args));
    let tasks: Vec<_> = services
        .into_iter()
        .enumerate()
        .map(|(index, service)| {
            let requests = requests.clone();
            let window = window.clone();
            let in_flight = args.in_flight;
            tokio::spawn(async move {
                natter_connection(service, index as u64, in_flight, &requests, &window).await
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

/// One connection through natter's `ClientService`: keeps `in_flight`
/// requests outstanding (`ready()` + `call()` for each), and checks every
/// answer against its request.
///
/// The answers come in order, so the response futures wait in a queue and
/// only the oldest is awaited; once it is in, every later one that is
/// already in is taken too, at one clock reading, as the hand loop does
/// for one read. Nothing is allocated per request here (a
/// `FuturesOrdered` would allocate a task node each), so what is counted
/// is natter's work.
async fn natter_connection(
    mut service: ClientService,
    offset: u64,
    in_flight: usize,
    requests: &[Frame],
    window: &Window,
) -> Result<Tally> {
    use std::collections::VecDeque;
    use std::task::Poll;
    use tower::{Service, ServiceExt};
    let request = |seq: u64| &requests[((offset + seq) % requests.len() as u64) as usize];
    let mut tally = Tally::new();
    // Outstanding requests, oldest first: the answer and when it was sent.
    let mut answers: VecDeque<(natter::client::ResponseFuture, u64)> =
        VecDeque::with_capacity(in_flight);
    let mut sent = 0u64;
    let mut answered = 0u64;
    let mut sending = true;
    loop {
        if sending {
            let now = window.now();
            let free = (in_flight - answers.len()) as u64;
            if window.over(now) {
                sending = false;
            } else if free > 0 {
                let count = window.claim(free);
                if count == 0 {
                    sending = false;
                }
                for _ in 0..count {
                    // Fails (does not hang) if the connection is lost.
                    let ready = service
                        .ready()
                        .await
                        .map_err(|error| format!("not ready: {error}"))?;
                    answers.push_back((ready.call(request(sent).clone()), now));
                    sent += 1;
                }
            }
        }
        if answers.is_empty() {
            break;
        }
        let batch = std::future::poll_fn(|cx| {
            let mut now = None;
            while let Some((answer, sent)) = answers.front_mut() {
                let Poll::Ready(result) = answer.poll_unpin(cx) else {
                    break;
                };
                let sent = *sent;
                answers.pop_front();
                let now = *now.get_or_insert_with(|| window.now());
                let checked = result
                    .map_err(|error| format!("request {answered} failed: {error}"))
                    .and_then(|frame| {
                        if frame[..] == request(answered)[..] {
                            Ok(frame)
                        } else {
                            Err(format!("the answer to request {answered} was wrong"))
                        }
                    });
                let frame = match checked {
                    Ok(frame) => frame,
                    Err(error) => return Poll::Ready(Err(error)),
                };
                if window.contains(now) {
                    tally
                        .latencies
                        .saturating_record(now.saturating_sub(sent).max(1));
                    tally.frames += 1;
                    tally.bytes += frame.len() as u64 + 1;
                    window.completed_at(now);
                }
                answered += 1;
            }
            if now.is_some() {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        });
        timeout(STALL_TIMEOUT, batch)
            .await
            .map_err(|_| format!("no answer for {STALL_TIMEOUT:?}"))??;
    }
    service.close();
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
