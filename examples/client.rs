//! A small `nc` for natter: each line of stdin is one request, and each
//! response is printed as one line of stdout, in request order.
//!
//! ```text
//! cargo run --release --example client -- --connect ADDR [--delim BYTE]
//!     [--pipeline N] [--connect-timeout-ms MS]
//!     [--tls [--tls-ca CA.pem] [--server-name NAME]]
//! ```
//!
//! | flag | default | meaning |
//! |---|---|---|
//! | `--connect` | (required) | `HOST:PORT`, or `unix:PATH` for a Unix domain socket |
//! | `--delim` | `10` | delimiter byte of the connection's frames, 1-255 (stdin is always lines) |
//! | `--pipeline` | `1` | requests in flight at once on the one connection |
//! | `--connect-timeout-ms` | `5000` | give up connecting (TLS handshake included) after this long |
//! | `--tls` | off | speak TLS (`HOST:PORT` only) |
//! | `--tls-ca` | the platform's roots | PEM file of the certificate authorities to trust (with `--tls`) |
//! | `--server-name` | the host part of `--connect` | the name the server's certificate must be valid for; an IP address is checked against the certificate's IP addresses (with `--tls`) |
//!
//! `--tls-ca` may also name a self-signed server certificate itself, as
//! long as it is not marked as a CA: `openssl req -x509` marks it unless
//! given `-addext basicConstraints=critical,CA:FALSE`, and such a
//! certificate is then refused as not trusted.
//!
//! Each line of stdin (split at `\n`, one trailing `\r` removed) is sent as
//! one request; each response is printed followed by `\n`, in request
//! order. At the end of stdin, once every request is answered, the client
//! closes the connection and exits 0. It exits 1 with an error on stderr
//! when it cannot connect (naming the address), when the server's
//! certificate is not trusted (saying so), or when the server closes with
//! requests unanswered (saying how many). Bad arguments exit 2. The full
//! command line is documented in docs/cli.md.
//!
//! ```text
//! cargo run --release --example echo -- --listen 127.0.0.1:7878 &
//! printf 'hello\nworld\n' | cargo run --release --example client -- --connect 127.0.0.1:7878 --pipeline 8
//! ```
//!
//! It is built on [`ClientService`](natter::ClientService), the client as a
//! request/response `tower::Service`: up to `--pipeline` requests are in
//! flight on the one connection, and each gets its own response.

use std::io::{self, BufRead, Write};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use natter::transport::tls::TlsConnector;
use natter::{Client, Delimiter, DelimiterCodec, Error, EventKind, Frame};
use tokio::sync::mpsc;
use tower::{Service, ServiceExt};

/// Sends each line of stdin as a request; prints each response.
#[derive(Debug, Parser)]
#[command(name = "client")]
struct Args {
    /// Server address: HOST:PORT or unix:PATH.
    #[arg(long)]
    connect: String,
    /// Delimiter of frames on the connection, as a decimal byte (1-255).
    #[arg(long, default_value_t = b'\n', value_parser = clap::value_parser!(u8).range(1..))]
    delim: u8,
    /// Requests in flight at once.
    #[arg(long, default_value = "1")]
    pipeline: NonZeroUsize,
    /// Give up connecting after this long.
    #[arg(long, default_value_t = 5000)]
    connect_timeout_ms: u64,
    /// Speak TLS (HOST:PORT only).
    #[arg(long)]
    tls: bool,
    /// PEM file of the certificate authorities to trust (default: the
    /// platform's).
    #[arg(long, value_name = "CA.pem", requires = "tls")]
    tls_ca: Option<PathBuf>,
    /// Verify the server's certificate for this name (default: the host
    /// part of --connect).
    #[arg(long, value_name = "NAME", requires = "tls")]
    server_name: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.tls && args.connect.starts_with("unix:") {
        Args::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--tls needs a HOST:PORT --connect address, not unix:PATH",
            )
            .exit();
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("client: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let mut builder = Client::builder()
        .codec(DelimiterCodec::new(Delimiter::from_byte(args.delim)))
        .connect_timeout(Duration::from_millis(args.connect_timeout_ms));
    if args.tls {
        builder = builder.tls(tls_connector(&args)?);
    }
    // An untrusted certificate fails here, with an error that says so.
    let mut service = builder
        .connect_service(&args.connect)
        .await
        .map_err(|error| error.to_string())?;
    let mut events = service.events();

    let mut lines = stdin_lines();
    let mut in_flight = FuturesOrdered::new();
    let (mut sent, mut answered) = (0, 0);
    let (mut reading, mut lost) = (true, false);
    let unanswered =
        |count: usize| format!("connection closed with {count} requests sent and not answered");

    loop {
        tokio::select! {
            biased;
            Some(response) = in_flight.next() => {
                let frame: Frame = match response {
                    Ok(frame) => frame,
                    // Answers come in order, so every later request is
                    // unanswered too.
                    Err(Error::Closed) => return Err(unanswered(sent - answered)),
                    Err(error) => return Err(error.to_string()),
                };
                print_line(&frame).map_err(|error| format!("writing stdout: {error}"))?;
                answered += 1;
            }
            line = lines.recv(), if reading && in_flight.len() < args.pipeline.get() => match line {
                Some(Ok(request)) => match service.ready().await {
                    Ok(ready) => {
                        in_flight.push_back(ready.call(request));
                        sent += 1;
                    }
                    // The connection is gone: print the answers that made
                    // it, then report the rest.
                    Err(_) => (reading, lost) = (false, true),
                },
                Some(Err(error)) => return Err(format!("reading stdin: {error}")),
                None => reading = false,
            },
            else => break,
        }
    }
    if lost {
        return Err(unanswered(sent - answered));
    }

    // Every request is answered: close, and wait until the connection is
    // gone (our FIN sent, the server's received).
    service.close();
    while let Some(event) = events.next().await {
        if let EventKind::Closed = event.kind {
            break;
        }
    }
    Ok(())
}

/// Whom `--tls` trusts, and the name it verifies.
fn tls_connector(args: &Args) -> Result<TlsConnector, String> {
    let connector = match &args.tls_ca {
        Some(ca) => TlsConnector::from_pem_file(ca).map_err(|error| error.to_string())?,
        // Without a store no certificate can verify: say so in the words
        // of any other certificate that does not.
        None => TlsConnector::with_native_roots().map_err(|error| {
            format!(
                "{error}; so the server's certificate is not trusted (name its CA with --tls-ca)"
            )
        })?,
    };
    match &args.server_name {
        Some(name) => connector
            .server_name(name)
            .map_err(|error| error.to_string()),
        None => Ok(connector),
    }
}

/// Reads stdin on a thread of its own (reading it blocks), one line at a
/// time: split at `\n`, one `\r` before it removed.
fn stdin_lines() -> mpsc::Receiver<io::Result<Frame>> {
    let (sender, lines) = mpsc::channel(64);
    std::thread::spawn(move || {
        for line in io::stdin().lock().split(b'\n') {
            let line = line.map(|mut line| {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Frame::from(line)
            });
            if sender.blocking_send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// Prints one response as a line, at once.
fn print_line(frame: &[u8]) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(frame)?;
    stdout.write_all(b"\n")?;
    stdout.flush()
}
