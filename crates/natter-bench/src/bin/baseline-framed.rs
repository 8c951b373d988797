//! Baseline: the echo server most tokio users would write, `Framed` with
//! tokio-util's `LinesCodec`.
//!
//! ```text
//! baseline-framed [--listen 127.0.0.1:0]
//! ```
//!
//! It is the strong form of the usual `while let Some(line) =
//! framed.next().await { framed.send(line).await }` loop: replies are
//! `feed`-ed, and flushed once no further frame is ready without waiting
//! (so a batch of pipelined frames costs one write, as in natter), not
//! once per frame. Same runtime as natter's echo example (`#[tokio::main]`,
//! worker threads from `TOKIO_WORKER_THREADS`), `TCP_NODELAY` on, frames up
//! to 64 KiB.

use std::process::ExitCode;
use std::time::Duration;

use futures::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};

/// natter's echo example accepts frames up to this long; `LinesCodec`
/// counts a stripped `\r` in its limit, hence the one extra byte.
const MAX_LINE: usize = 64 * 1024 + 1;

#[tokio::main]
async fn main() -> ExitCode {
    natter_bench::raise_fd_limit();
    let listen = match natter_bench::listen_arg() {
        Ok(listen) => listen,
        Err(error) => {
            eprintln!("baseline-framed: {error}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(&listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("baseline-framed: cannot listen on {listen}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let Ok(addr) = listener.local_addr() else {
        return ExitCode::FAILURE;
    };
    natter_bench::announce(addr);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    if let Err(error) = echo(stream).await {
                        eprintln!("baseline-framed: {error}");
                    }
                });
            }
            // Out of file descriptors and the like: let connections close.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn echo(stream: TcpStream) -> Result<(), LinesCodecError> {
    let mut framed = Framed::new(stream, LinesCodec::new_with_max_length(MAX_LINE));
    while let Some(line) = framed.next().await {
        framed.feed(line?).await?;
        // Every frame that is ready without waiting joins this batch.
        loop {
            match framed.next().now_or_never() {
                Some(Some(line)) => framed.feed(line?).await?,
                Some(None) => {
                    SinkExt::<String>::flush(&mut framed).await?;
                    return Ok(());
                }
                None => break,
            }
        }
        SinkExt::<String>::flush(&mut framed).await?;
    }
    Ok(())
}
