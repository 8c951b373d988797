//! An echo server: every frame comes back followed by the delimiter.
//!
//! ```text
//! cargo run --release --example echo -- [--listen ADDR] [--delim BYTE]
//!     [--max-frame BYTES] [--idle-timeout-ms MS] [--handler-delay-ms MS]
//!     [--max-connections N] [--tls-cert CERT.pem --tls-key KEY.pem]
//!     [--metrics-listen IP:PORT]
//! ```
//!
//! | flag | default | meaning |
//! |---|---|---|
//! | `--listen` | `127.0.0.1:7878` | `IP:PORT` (port 0 picks a free one) or `unix:PATH` for a Unix domain socket |
//! | `--delim` | `10` | delimiter as a decimal byte; `0` reads each connection to EOF as one frame |
//! | `--max-frame` | `65536` | longest frame in bytes, delimiter (and a stripped `\r`) excluded; EOF mode: the whole stream |
//! | `--idle-timeout-ms` | `0` (off) | close a connection that completes no frame for this long |
//! | `--handler-delay-ms` | `0` | the handler sleeps this long before it replies |
//! | `--max-connections` | `10000` | connections beyond this are closed at once, without a reply |
//! | `--tls-cert`, `--tls-key` | (none) | a PEM certificate chain and its private key (PKCS#8, RSA or EC): the TCP listener speaks TLS |
//! | `--metrics-listen` | (none) | serve the server's metrics in Prometheus text at `http://IP:PORT/metrics` |
//!
//! The first line on stdout is `listening on IP:PORT` (the real bound
//! address) or `listening on unix:PATH`; with `--metrics-listen` the second
//! is `metrics on http://IP:PORT/metrics` (port 0 picks a free one); logs go
//! to stderr. SIGINT or
//! SIGTERM: stop accepting, answer every frame already read, close, exit 0.
//! Exit 1 when the address cannot be listened on (in use; a Unix PATH that
//! is a live socket or not a socket at all; a Unix socket file that nothing
//! listens on is taken over, and removed on exit) or when the certificate
//! or key cannot be read or do not match, naming the address or the file.
//! Bad arguments exit 2. With TLS, a peer that sends anything but a
//! handshake, or stalls in it, is closed within the idle timeout if one is
//! set, else within 10 s. The full command line is documented in
//! docs/cli.md.
//!
//! ```text
//! cargo run --release --example echo -- --listen unix:/tmp/echo.sock
//! cargo run --release --example echo -- --tls-cert cert.pem --tls-key key.pem
//! openssl s_client -connect 127.0.0.1:7878 -quiet
//! ```
//!
//! The whole server is one builder and one closure; everything else
//! (framing, limits, idle timeout, TLS, Unix sockets, draining on
//! SIGINT/SIGTERM) is natter's.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use natter::transport::tls::TlsAcceptor;
use natter::{Conn, Delimiter, DelimiterCodec, Frame, Server};
use tower::service_fn;

/// natter's echo server.
#[derive(Debug, Parser)]
#[command(name = "echo")]
struct Args {
    /// Address to bind: IP:PORT (port 0 picks a free one) or unix:PATH.
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: String,
    /// Delimiter as a decimal byte; 0 reads each connection to EOF.
    #[arg(long, default_value_t = b'\n')]
    delim: u8,
    /// Longest frame in bytes (EOF mode: the whole stream).
    #[arg(long, default_value_t = 65536)]
    max_frame: usize,
    /// Close a connection that completes no frame for this long; 0 is off.
    #[arg(long, default_value_t = 0)]
    idle_timeout_ms: u64,
    /// Sleep this long in the handler before replying.
    #[arg(long, default_value_t = 0)]
    handler_delay_ms: u64,
    /// Close connections beyond this many at once.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// PEM certificate chain: the TCP listener speaks TLS (with --tls-key).
    #[arg(long, value_name = "CERT.pem", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, RSA or EC) of --tls-cert.
    #[arg(long, value_name = "KEY.pem", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve metrics in Prometheus text format at http://IP:PORT/metrics.
    #[arg(long, value_name = "IP:PORT")]
    metrics_listen: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(_), Some(_)) if args.listen.starts_with("unix:") => Args::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--tls-cert and --tls-key need a TCP --listen address (IP:PORT), not unix:PATH",
            )
            .exit(),
        // Read and checked before anything listens: a bad file is an
        // error naming it, never a server that fails every handshake. A
        // peer that stalls in the handshake is closed by the idle timeout
        // or this one, whichever comes first: a second under the 10 s
        // promised, so that timer slack stays within it.
        (Some(cert), Some(key)) => match TlsAcceptor::from_pem_files(cert, key) {
            Ok(acceptor) => Some(acceptor.handshake_timeout(Duration::from_secs(9))),
            Err(error) => {
                eprintln!("echo: {error}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };

    // The recorder goes in before the server is built: natter takes its
    // metrics handles then.
    let metrics = match args.metrics_listen.map(serve_metrics).transpose() {
        Ok(metrics) => metrics,
        Err(error) => {
            eprintln!("echo: {error}");
            return ExitCode::FAILURE;
        }
    };

    let delay = Duration::from_millis(args.handler_delay_ms);
    let mut builder = Server::builder()
        .codec(
            DelimiterCodec::new(Delimiter::from_byte(args.delim)).max_frame_length(args.max_frame),
        )
        .idle_timeout(
            (args.idle_timeout_ms > 0).then(|| Duration::from_millis(args.idle_timeout_ms)),
        )
        .max_connections(args.max_connections)
        // --handler-delay-ms has no upper bound.
        .handler_timeout(None)
        .drain_timeout(Duration::from_secs(4) + delay);
    if let Some(acceptor) = tls {
        builder = builder.tls(acceptor);
    }
    let server = builder.bind(&args.listen).await;
    let server = match server {
        Ok(server) => server,
        Err(error) => {
            eprintln!("echo: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", server.local_addr());
    if let Some(metrics) = metrics {
        println!("metrics on http://{metrics}/metrics");
    }

    // Without a delay a frame is answered by `future::ready`, which the
    // driver can inline whole; only --handler-delay-ms pays for a sleeping
    // future. Two servers rather than one handler that picks: a handler
    // future of two kinds (an `Either`) is bigger, and moved and dropped
    // once per frame.
    let served = if delay.is_zero() {
        let echo = service_fn(|frame: Frame| std::future::ready(Ok::<_, Infallible>(frame)));
        server
            .serve_with_shutdown(move |_: &Conn| echo, terminated())
            .await
    } else {
        let echo = service_fn(move |frame: Frame| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, Infallible>(frame)
        });
        server
            .serve_with_shutdown(move |_: &Conn| echo, terminated())
            .await
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("echo: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Installs the Prometheus exporter with its own HTTP listener on `addr`;
/// returns the address it listens on.
///
/// The exporter does not say which port it bound, so a port 0 is resolved
/// first, by binding it and letting go (the exporter binds it again at
/// once, with `SO_REUSEADDR`).
fn serve_metrics(addr: SocketAddr) -> Result<SocketAddr, String> {
    let failed = |error: &dyn std::fmt::Display| format!("cannot serve metrics on {addr}: {error}");
    let bound = std::net::TcpListener::bind(addr)
        .and_then(|probe| probe.local_addr())
        .map_err(|error| failed(&error))?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(natter::stats::DURATION_BUCKETS)
        .and_then(|exporter| exporter.with_http_listener(bound).install())
        .map_err(|error| failed(&error))?;
    Ok(bound)
}

async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!("echo: cannot listen for signals; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}
