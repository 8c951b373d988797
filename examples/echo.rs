//! An echo server: every frame comes back followed by the delimiter.
//!
//! ```text
//! cargo run --release --example echo -- --listen 127.0.0.1:7878 --delim 10
//! ```
//!
//! Its command line is documented in docs/cli.md ("echo"). The
//! whole server is one builder and one closure; everything else (framing,
//! limits, idle timeout, draining on SIGINT/SIGTERM) is natter's.

use std::convert::Infallible;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use natter::{Conn, Delimiter, DelimiterCodec, Frame, Server};
use tower::service_fn;

/// natter's echo server.
#[derive(Debug, Parser)]
struct Args {
    /// Address to bind; port 0 picks a free one.
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

    let delay = Duration::from_millis(args.handler_delay_ms);
    let server = Server::builder()
        .codec(
            DelimiterCodec::new(Delimiter::from_byte(args.delim)).max_frame_length(args.max_frame),
        )
        .idle_timeout(
            (args.idle_timeout_ms > 0).then(|| Duration::from_millis(args.idle_timeout_ms)),
        )
        .max_connections(args.max_connections)
        // The contract puts no bound on --handler-delay-ms.
        .handler_timeout(None)
        .drain_timeout(Duration::from_secs(4) + delay)
        .bind(&args.listen)
        .await;
    let server = match server {
        Ok(server) => server,
        Err(error) => {
            eprintln!("echo: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", server.local_addr());

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
