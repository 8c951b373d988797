//! Soak test: minutes of mixed load with random faults against an
//! in-process natter server, on loopback only.
//!
//! Healthy clients pipeline batches of frames and check every reply, while
//! faulty peers do one random thing after another: reset mid-frame or with
//! replies pending, half-close, send an oversized frame, ask for big
//! replies and never read them, send a frame that makes the handler panic,
//! say nothing, or trickle a frame a byte at a time. The run reports what it
//! sent and got back, and the process's file descriptors and memory (RSS)
//! at the start, as it goes, and at the end.
//!
//!     cargo run --release --example soak -- --duration-secs 180
//!
//! It exits 1 if any frame on a healthy connection went unanswered or was
//! answered wrongly, or if a fault did not end the way it should.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use natter::layer::HandlerTimeoutLayer;
use natter::{Conn, DelimiterCodec, Frame, Server};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};
use tower::service_fn;

#[derive(Parser, Debug)]
#[command(about = "Mixed load with random faults against an in-process natter server")]
struct Args {
    /// How long the load runs, in seconds.
    #[arg(long, default_value_t = 60)]
    duration_secs: u64,
    /// Healthy clients, each checking every reply it gets.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Faulty peers at once, each doing one random fault after another.
    #[arg(long, default_value_t = 16)]
    faulty: usize,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 15)]
    report_secs: u64,
}

/// The server's frame limit: an oversized frame is one byte more.
const MAX_FRAME: usize = 16 * 1024;
/// The reply to a frame `big`.
const BIG_REPLY: usize = 32 * 1024;
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest any single wait of a client may take before it counts as a
/// failure.
const PATIENCE: Duration = Duration::from_secs(10);

const FAULTS: [&str; 8] = [
    "reset mid-frame",
    "reset with replies pending",
    "half-close",
    "oversized frame",
    "never reads",
    "panicking frame",
    "silent",
    "slowloris",
];

#[derive(Default)]
struct Stats {
    /// Frames healthy clients sent, got back right, and lost (no reply or
    /// a wrong one).
    sent: AtomicU64,
    answered: AtomicU64,
    lost: AtomicU64,
    /// Connections healthy clients opened.
    healthy_connections: AtomicU64,
    faults: [AtomicU64; FAULTS.len()],
    /// Faults that did not end as they should, with the first few reasons.
    unexpected: AtomicU64,
}

impl Stats {
    fn unexpected(&self, what: String) {
        if self.unexpected.fetch_add(1, Ordering::Relaxed) < 10 {
            eprintln!("unexpected: {what}");
        }
    }
}

/// This process's resident memory in KiB and its open file descriptors.
fn process_usage() -> (u64, usize) {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count().saturating_sub(1));
    (rss, fds)
}

fn usage_line() -> String {
    let (rss, fds) = process_usage();
    format!("RSS {:.1} MiB, {fds} fds", rss as f64 / 1024.0)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // The panicking frames are the point; any other panic is still shown.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&"a panicking frame") {
            default_hook(info);
        }
    }));
    let server = Server::builder()
        .codec(DelimiterCodec::lines().max_frame_length(MAX_FRAME))
        .idle_timeout(IDLE_TIMEOUT)
        .write_timeout(WRITE_TIMEOUT)
        .max_in_flight(4)
        .max_connections(4_000)
        .layer(HandlerTimeoutLayer::new(Duration::from_secs(2)))
        .bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = server.local_addr().socket_addr().expect("a TCP server");
    let handle = server.handle();
    let big = Frame::from(vec![b'b'; BIG_REPLY]);
    let serving = tokio::spawn(server.serve(move |_: &Conn| {
        let big = big.clone();
        service_fn(move |frame: Frame| {
            let big = big.clone();
            async move {
                if frame.starts_with(b"panic") {
                    panic!("a panicking frame");
                }
                if frame == "big" {
                    return Ok::<_, Infallible>(big);
                }
                if frame.starts_with(b"slow") {
                    sleep(Duration::from_millis(2)).await;
                }
                Ok(frame)
            }
        })
    }));
    println!(
        "soak: {} s, {} healthy clients, {} faulty peers, server on {addr}; at start: {}",
        args.duration_secs,
        args.clients,
        args.faulty,
        usage_line()
    );

    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    for id in 0..args.clients {
        tasks.spawn(healthy(id, addr, stats.clone(), stop.clone()));
    }
    for _ in 0..args.faulty {
        tasks.spawn(faulty(addr, stats.clone(), stop.clone()));
    }

    let began = Instant::now();
    let duration = Duration::from_secs(args.duration_secs);
    let report = Duration::from_secs(args.report_secs.max(1));
    while began.elapsed() < duration {
        sleep(report.min(duration.saturating_sub(began.elapsed()))).await;
        println!(
            "{:>5.0} s: sent {}, answered {}, lost {}; {} faults; {} connections open; {}",
            began.elapsed().as_secs_f64(),
            stats.sent.load(Ordering::Relaxed),
            stats.answered.load(Ordering::Relaxed),
            stats.lost.load(Ordering::Relaxed),
            stats
                .faults
                .iter()
                .map(|count| count.load(Ordering::Relaxed))
                .sum::<u64>(),
            handle.connection_count(),
            usage_line()
        );
    }
    stop.store(true, Ordering::Relaxed);
    let finishing = async { while tasks.join_next().await.is_some() {} };
    if timeout(PATIENCE, finishing).await.is_err() {
        stats.unexpected("clients did not finish within 10 s of the end".into());
    }
    let open_at_end = handle.connection_count();
    handle.shutdown().await;
    let _ = serving.await;

    let sent = stats.sent.load(Ordering::Relaxed);
    let answered = stats.answered.load(Ordering::Relaxed);
    let lost = stats.lost.load(Ordering::Relaxed);
    let unexpected = stats.unexpected.load(Ordering::Relaxed);
    println!(
        "done after {:.0} s: healthy clients sent {sent} frames on {} connections, {answered} \
         answered, {lost} lost",
        began.elapsed().as_secs_f64(),
        stats.healthy_connections.load(Ordering::Relaxed)
    );
    for (name, count) in FAULTS.iter().zip(&stats.faults) {
        println!("  fault {name:<27} {}", count.load(Ordering::Relaxed));
    }
    println!(
        "  connections open when the load stopped: {open_at_end}; refused at the limit: {}; \
         unexpected fault outcomes: {unexpected}",
        handle.refused_connections()
    );
    println!("at end (server shut down): {}", usage_line());
    if lost > 0 || unexpected > 0 || sent != answered {
        println!("FAILED");
        return ExitCode::FAILURE;
    }
    println!("OK");
    ExitCode::SUCCESS
}

/// A healthy client: connects, pipelines batches of frames and checks that
/// each reply is its frame, in order; now and then it closes cleanly and
/// connects again.
async fn healthy(id: usize, addr: SocketAddr, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Ok(Ok(stream)) = timeout(PATIENCE, TcpStream::connect(addr)).await else {
            stats.unexpected(format!("healthy client {id} could not connect"));
            sleep(Duration::from_millis(100)).await;
            continue;
        };
        stats.healthy_connections.fetch_add(1, Ordering::Relaxed);
        let (mut reading, mut writing) = stream.into_split();
        let batches = rand::rng().random_range(1..200);
        for _ in 0..batches {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let (batch, expected) = {
                let mut rng = rand::rng();
                let mut batch = Vec::new();
                for _ in 0..rng.random_range(1..16) {
                    let kind = if rng.random_bool(0.1) { "slow" } else { "h" };
                    let pad = "x".repeat(rng.random_range(0..512));
                    batch.extend_from_slice(format!("{kind}{id}-{seq}-{pad}\n").as_bytes());
                    seq += 1;
                }
                let expected = batch.clone();
                (batch, expected)
            };
            let frames = expected.iter().filter(|&&b| b == b'\n').count() as u64;
            stats.sent.fetch_add(frames, Ordering::Relaxed);
            // Written in random pieces while the replies are read.
            let write = async {
                let mut rest = &batch[..];
                while !rest.is_empty() {
                    let cut = rand::rng().random_range(1..=rest.len());
                    writing.write_all(&rest[..cut]).await?;
                    rest = &rest[cut..];
                }
                Ok::<_, std::io::Error>(())
            };
            let mut got = vec![0; expected.len()];
            let read = reading.read_exact(&mut got);
            let outcome = timeout(PATIENCE, futures::future::try_join(write, read)).await;
            match outcome {
                Ok(Ok(_)) if got == expected => {
                    stats.answered.fetch_add(frames, Ordering::Relaxed);
                }
                outcome => {
                    let answered = got
                        .iter()
                        .zip(&expected)
                        .take_while(|(a, b)| a == b)
                        .filter(|(a, _)| **a == b'\n')
                        .count() as u64;
                    stats.answered.fetch_add(answered, Ordering::Relaxed);
                    stats.lost.fetch_add(frames - answered, Ordering::Relaxed);
                    let why = match outcome {
                        Err(_) => "timed out".to_owned(),
                        Ok(Err(error)) => error.to_string(),
                        Ok(Ok(_)) => "a wrong reply".to_owned(),
                    };
                    eprintln!(
                        "healthy client {id}: {} frames lost: {why}",
                        frames - answered
                    );
                    break;
                }
            }
            let pause = rand::rng().random_range(0..5);
            sleep(Duration::from_millis(pause)).await;
        }
        // A clean close: half-close, read the end of stream.
        let _ = writing.shutdown().await;
        let mut rest = Vec::new();
        match timeout(PATIENCE, reading.read_to_end(&mut rest)).await {
            Ok(Ok(_)) if rest.is_empty() => {}
            other => stats.unexpected(format!(
                "healthy client {id}: closing: {other:?}, {} stray bytes",
                rest.len()
            )),
        }
    }
}

/// A faulty peer: one random fault after another until told to stop.
async fn faulty(addr: SocketAddr, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let fault = rand::rng().random_range(0..FAULTS.len());
        if let Err(what) = timeout(PATIENCE, one_fault(fault, addr))
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
        {
            stats.unexpected(format!("{}: {what}", FAULTS[fault]));
        }
        stats.faults[fault].fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(read @ 1..) = stream.read(&mut buf).await {
        got.extend_from_slice(&buf[..read]);
    }
    got
}

async fn one_fault(fault: usize, addr: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|error| format!("connect: {error}"))?;
    let io = |error: std::io::Error| error.to_string();
    match fault {
        // Reset in the middle of a frame.
        0 => {
            stream
                .write_all(b"a frame that is cut sho")
                .await
                .map_err(io)?;
            stream.set_zero_linger().map_err(io)?;
        }
        // Reset with a hundred replies on their way.
        1 => {
            stream
                .write_all("r\n".repeat(100).as_bytes())
                .await
                .map_err(io)?;
            stream.set_zero_linger().map_err(io)?;
        }
        // Half-close after two frames and a half: all three are answered.
        2 => {
            stream.write_all(b"a\nb\nc").await.map_err(io)?;
            stream.shutdown().await.map_err(io)?;
            let got = read_until_closed(&mut stream).await;
            if got != b"a\nb\nc\n" {
                return Err(format!("got {:?}", String::from_utf8_lossy(&got)));
            }
        }
        // A frame one byte over the limit: closed without a reply.
        3 => {
            let oversized = vec![b'o'; MAX_FRAME + 1];
            let _ = stream.write_all(&oversized).await;
            let got = read_until_closed(&mut stream).await;
            if !got.is_empty() {
                return Err(format!("{} bytes of reply", got.len()));
            }
        }
        // Asks for 3 MiB of replies and reads none: the write timeout
        // closes it.
        4 => {
            drop(stream);
            let socket = TcpSocket::new_v4().map_err(io)?;
            socket.set_recv_buffer_size(4096).map_err(io)?;
            let mut stream = socket.connect(addr).await.map_err(io)?;
            stream
                .write_all("big\n".repeat(100).as_bytes())
                .await
                .map_err(io)?;
            sleep(WRITE_TIMEOUT + Duration::from_millis(500)).await;
            stream.set_zero_linger().map_err(io)?;
        }
        // A frame that makes the handler panic: the frame before it is
        // answered, then the connection closes.
        5 => {
            stream.write_all(b"ok\npanic\nnever\n").await.map_err(io)?;
            let got = read_until_closed(&mut stream).await;
            if got != b"ok\n" {
                return Err(format!("got {:?}", String::from_utf8_lossy(&got)));
            }
        }
        // Says nothing: the idle timeout closes it.
        6 => {
            let began = Instant::now();
            let got = read_until_closed(&mut stream).await;
            if !got.is_empty() || began.elapsed() + Duration::from_millis(100) < IDLE_TIMEOUT {
                return Err(format!("closed after {:?}", began.elapsed()));
            }
        }
        // One byte every 200 ms of a frame that never ends: the idle
        // timeout closes it all the same.
        _ => {
            let began = Instant::now();
            let mut scratch = [0u8; 16];
            loop {
                tokio::select! {
                    read = stream.read(&mut scratch) => match read {
                        Ok(0) | Err(_) => break,
                        Ok(_) => return Err("a frame that never ended was answered".into()),
                    },
                    () = sleep(Duration::from_millis(200)) => {
                        if stream.write_all(b"s").await.is_err() {
                            break;
                        }
                    }
                }
            }
            if began.elapsed() + Duration::from_millis(100) < IDLE_TIMEOUT {
                return Err(format!("closed after {:?}", began.elapsed()));
            }
        }
    }
    Ok(())
}
