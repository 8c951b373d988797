//! Benchmarks of natter against two hand-written tokio echo servers.
//!
//! The binaries of this crate are the parts of one comparison:
//!
//! * `loadgen` drives an echo server over loopback (frames in flight per
//!   connection, idle connections, or connection churn), checks every byte
//!   that comes back and prints one [`LoadReport`] as JSON;
//! * `baseline-framed` and `baseline-raw` are the two yardsticks: the usual
//!   `Framed` + `LinesCodec` loop, and a raw read/`memchr`/write loop;
//!   `baseline-raw-tls` is the raw loop behind tokio-rustls;
//! * `suite` starts each server in turn (natter's `echo` example and the
//!   two baselines), runs `loadgen` against it, interleaves the servers over
//!   several repetitions and prints medians and ratios.
//!
//! This library holds what they share: the report format, the frames the
//! load generator sends, and the start-up chores of every binary. How to
//! run it all is in BENCHMARKS.md at the root of the repository.

use serde::{Deserialize, Serialize};

pub mod tls;

/// What one `loadgen` run measured; printed as one line of JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadReport {
    /// `echo`, `idle` or `churn`.
    pub mode: String,
    /// Connections used (open at once for `echo` and `idle`; workers for
    /// `churn`).
    pub connections: usize,
    /// Frames in flight per connection (`echo`).
    pub in_flight: usize,
    /// Payload bytes per frame, delimiter excluded.
    pub frame_size: usize,
    /// Length of the measurement window, in seconds.
    pub seconds: f64,
    /// Frames echoed and verified inside the window (`churn`: connections
    /// completed, each one frame).
    pub frames: u64,
    /// Frames per second inside the window (`churn`: connections per
    /// second).
    pub frames_per_sec: f64,
    /// Echoed bytes (payload and delimiter, one direction) per second, in
    /// MB (10^6 bytes).
    pub mb_per_sec: f64,
    /// Round-trip latency percentiles in microseconds (`churn`: connect,
    /// one frame, close).
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// 99.9th percentile, microseconds.
    pub p999_us: f64,
    /// Largest latency seen, microseconds.
    pub max_us: f64,
    /// Connections that failed to connect (`churn` retries them).
    pub connect_errors: u64,
    /// `rate` mode: the rate asked for, requests per second in all.
    #[serde(default)]
    pub target_rate: f64,
    /// `rate` mode: how late loadgen wrote its bursts after their
    /// scheduled times, median and 99th percentile, microseconds (part of
    /// the latencies above; large values mean loadgen could not keep the
    /// schedule).
    #[serde(default)]
    pub send_lag_p50_us: f64,
    /// See `send_lag_p50_us`.
    #[serde(default)]
    pub send_lag_p99_us: f64,
    /// Which client sent the load: `hand` (loadgen's own loop) or `natter`
    /// (one `ClientService` per connection).
    #[serde(default)]
    pub client: String,
}

/// Longest time any single step (a connect, a read) may take before the
/// load generator gives up on the server, so a hung server cannot hang a
/// benchmark.
pub const STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The frames a load generator sends: a fixed set of distinct frames of one
/// size, each ending in `\n`, used in turn. Comparing every echoed frame
/// with the one sent at that position checks every byte and the order.
#[derive(Debug, Clone)]
pub struct Frames {
    frames: Vec<Vec<u8>>,
}

impl Frames {
    /// How many distinct frames there are; frame `i` of a connection is
    /// `get(i)`, so reordering within this distance is detected.
    pub const DISTINCT: usize = 61;

    /// Frames of `size` payload bytes (printable ASCII, never `\r` or
    /// `\n`), each followed by `\n`.
    pub fn new(size: usize) -> Self {
        let frames = (0..Self::DISTINCT)
            .map(|k| {
                let mut frame: Vec<u8> = (0..size)
                    .map(|i| b'a' + ((i * 7 + k * 13) % 26) as u8)
                    .collect();
                // Make the first bytes a visible sequence number when the
                // frame is long enough; a human reading a dump then sees it.
                let tag = format!("{k:02}:");
                if size >= tag.len() {
                    frame[..tag.len()].copy_from_slice(tag.as_bytes());
                }
                frame.push(b'\n');
                frame
            })
            .collect();
        Frames { frames }
    }

    /// Frame number `seq` of a stream, delimiter included.
    pub fn get(&self, seq: u64) -> &[u8] {
        &self.frames[(seq % Self::DISTINCT as u64) as usize]
    }
}

/// Raises this process's open-file limit to its hard limit (children
/// inherit it), so thousands of connections fit. Returns the new limit.
pub fn raise_fd_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}

/// Prints the line every server of the suite starts with (the echo
/// example's contract: `listening on IP:PORT`) and flushes it at once.
pub fn announce(addr: impl std::fmt::Display) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "listening on {addr}");
    let _ = stdout.flush();
}

/// The whole `main` of a baseline server: parse `--listen`, bind, announce
/// the address, then run `echo` on every accepted connection (with
/// `TCP_NODELAY`) in a task of its own, printing its error if it fails.
/// Exits 2 on a bad argument and 1 if the address cannot be bound.
pub async fn serve_baseline<F, Fut, E>(name: &str, echo: F) -> std::process::ExitCode
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let listen = match listen_arg() {
        Ok(listen) => listen,
        Err(error) => {
            eprintln!("{name}: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    serve_on(name, &listen, echo).await
}

/// [`serve_baseline`] on an address already parsed: bind `listen`,
/// announce it, run `echo` on every accepted connection.
pub async fn serve_on<F, Fut, E>(name: &str, listen: &str, echo: F) -> std::process::ExitCode
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    use std::process::ExitCode;
    raise_fd_limit();
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("{name}: cannot listen on {listen}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let Ok(addr) = listener.local_addr() else {
        return ExitCode::FAILURE;
    };
    announce(addr);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let name = name.to_owned();
                let connection = echo(stream);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        eprintln!("{name}: {error}");
                    }
                });
            }
            // Out of file descriptors and the like: let connections close.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}

/// The `--listen ADDR` argument of the baseline servers (default
/// `127.0.0.1:0`); the only argument they take.
pub fn listen_arg() -> Result<String, String> {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:0".to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?,
            other => return Err(format!("unknown argument {other:?}; usage: --listen ADDR")),
        }
    }
    Ok(listen)
}

/// The largest frame the baseline servers accept (natter's echo default).
pub const MAX_FRAME: usize = 64 * 1024;
/// Same first read buffer as `Framed`.
const READ_BUFFER: usize = 8 * 1024;

/// The raw echo loop of `baseline-raw` (and, over TLS, `baseline-raw-tls`):
/// read into one `BytesMut`, find each `\n` with `memchr`, copy every
/// complete frame of the read (one trailing `\r` removed, `\n` appended,
/// the same bytes natter's line mode sends back) into one output buffer and
/// write it with one `write_all` (and a `flush`, which TLS needs and a TCP
/// stream does nothing for). No codec, no service, no per-frame
/// allocation; a frame over [`MAX_FRAME`] closes the connection.
pub async fn raw_echo<S>(mut stream: S) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use bytes::{Buf, BytesMut};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut input = BytesMut::with_capacity(READ_BUFFER);
    let mut output = Vec::new();
    loop {
        if input.capacity() == input.len() {
            input.reserve(READ_BUFFER);
        }
        let read = stream.read_buf(&mut input).await?;
        let mut start = 0;
        while let Some(offset) = memchr::memchr(b'\n', &input[start..]) {
            let end = start + offset;
            let frame = &input[start..end];
            let frame = frame.strip_suffix(b"\r").unwrap_or(frame);
            output.extend_from_slice(frame);
            output.push(b'\n');
            start = end + 1;
        }
        input.advance(start);
        if read == 0 && !input.is_empty() {
            // Bytes without a delimiter at half-close: the last frame.
            let frame = input.split();
            output.extend_from_slice(frame.strip_suffix(b"\r").unwrap_or(&frame));
            output.push(b'\n');
        }
        if !output.is_empty() {
            stream.write_all(&output).await?;
            stream.flush().await?;
            output.clear();
        }
        if read == 0 {
            return Ok(());
        }
        if input.len() > MAX_FRAME + 1 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "frame too long",
            ));
        }
    }
}
