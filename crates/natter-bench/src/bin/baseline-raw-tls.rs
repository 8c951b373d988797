//! Baseline: the raw echo loop of `baseline-raw` behind TLS, written by
//! hand with tokio-rustls (ring provider), the yardstick of natter's TLS
//! echo.
//!
//! ```text
//! baseline-raw-tls --tls-cert CERT.pem --tls-key KEY.pem [--listen 127.0.0.1:0]
//! ```
//!
//! Every accepted connection (`TCP_NODELAY` on) does the TLS handshake in
//! its own task, then runs [`natter_bench::raw_echo`] on the TLS stream:
//! read, `memchr`, copy every frame of the read into one buffer, one
//! `write_all` and a `flush`. rustls' safe defaults: TLS 1.3 with the
//! client's preferred cipher suite. Same runtime as natter's echo example.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio::net::TcpStream;

/// The raw echo loop over tokio-rustls.
#[derive(Debug, Parser)]
#[command(name = "baseline-raw-tls")]
struct Args {
    /// Address to bind (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// PEM certificate chain.
    #[arg(long, value_name = "CERT.pem")]
    tls_cert: PathBuf,
    /// PEM private key (PKCS#8, RSA or EC) of --tls-cert.
    #[arg(long, value_name = "KEY.pem")]
    tls_key: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = match natter_bench::tls::server_config(&args.tls_cert, &args.tls_key) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("baseline-raw-tls: {error}");
            return ExitCode::FAILURE;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    natter_bench::serve_on(
        "baseline-raw-tls",
        &args.listen,
        move |stream: TcpStream| {
            let accept = acceptor.accept(stream);
            async move {
                match natter_bench::raw_echo(accept.await?).await {
                    // A peer that closes without a TLS close_notify (as
                    // loadgen does at the end of a run) is done, not failed.
                    Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
                    other => other,
                }
            }
        },
    )
    .await
}
