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

use futures::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};

/// natter's echo example accepts frames up to this long; `LinesCodec`
/// counts a stripped `\r` in its limit, hence the one extra byte.
const MAX_LINE: usize = 64 * 1024 + 1;

#[tokio::main]
async fn main() -> ExitCode {
    natter_bench::serve_baseline("baseline-framed", echo).await
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
