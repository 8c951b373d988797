//! natter's echo server with its full default stack: everything a
//! `Server::builder()` turns on by default (the idle timeout, 5 min; the
//! handler timeout, 60 s; panic isolation, always on), plus a
//! `HandlerTimeoutLayer` (5 s) stacked by the user. The suite runs it
//! beside the plain `echo` example, which turns the idle and handler
//! timeouts off (docs/cli.md), to measure what the protections cost
//! per frame end to end. The handler is the echo example's own.
//!
//! ```text
//! natter-layered [--listen 127.0.0.1:0]
//! ```

use std::convert::Infallible;
use std::process::ExitCode;
use std::time::Duration;

use natter::layer::HandlerTimeoutLayer;
use natter::{Conn, Frame, Server};
use tower::service_fn;

#[tokio::main]
async fn main() -> ExitCode {
    natter_bench::raise_fd_limit();
    // The same log setup as the echo example, so the two differ only in
    // the layers.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let listen = match natter_bench::listen_arg() {
        Ok(listen) => listen,
        Err(error) => {
            eprintln!("natter-layered: {error}");
            return ExitCode::from(2);
        }
    };
    // natter's defaults, but for the connection limit (the idle scenario
    // opens 10,000).
    let server = Server::builder()
        .max_connections(1_000_000)
        .layer(HandlerTimeoutLayer::new(Duration::from_secs(5)))
        .bind(&listen)
        .await;
    let server = match server {
        Ok(server) => server,
        Err(error) => {
            eprintln!("natter-layered: {error}");
            return ExitCode::FAILURE;
        }
    };
    natter_bench::announce(server.local_addr());
    let echo = service_fn(|frame: Frame| std::future::ready(Ok::<_, Infallible>(frame)));
    match server.serve(move |_: &Conn| echo).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("natter-layered: {error}");
            ExitCode::FAILURE
        }
    }
}
