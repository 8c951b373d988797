//! natter's echo server with the full layer stack in front of the handler:
//! `CatchPanicLayer`, `HandlerTimeoutLayer` (5 s) and a tower
//! `ConcurrencyLimitLayer` (1 per connection, natter's default frames in
//! flight). The suite runs it beside the plain `echo` example to measure
//! what the layers cost per frame end to end.
//!
//! ```text
//! natter-layered [--listen 127.0.0.1:0]
//! ```

use std::convert::Infallible;
use std::process::ExitCode;
use std::time::Duration;

use natter::layer::{CatchPanicLayer, HandlerTimeoutLayer};
use natter::{Conn, Frame, Server};
use tower::limit::ConcurrencyLimitLayer;
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
    // The echo example's settings (no idle timeout, no driver handler
    // timeout), so the two servers differ only in the layers.
    let server = Server::builder()
        .max_connections(1_000_000)
        .idle_timeout(None)
        .handler_timeout(None)
        .layer(CatchPanicLayer::new())
        .layer(HandlerTimeoutLayer::new(Duration::from_secs(5)))
        .layer(ConcurrencyLimitLayer::new(1))
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
    let echo = service_fn(|frame: Frame| async move { Ok::<_, Infallible>(frame) });
    match server.serve(move |_: &Conn| echo).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("natter-layered: {error}");
            ExitCode::FAILURE
        }
    }
}
