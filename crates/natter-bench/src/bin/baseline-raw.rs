//! Baseline: the practical limit of an echo server on tokio, a raw loop.
//!
//! ```text
//! baseline-raw [--listen 127.0.0.1:0]
//! ```
//!
//! Read into one `BytesMut`, find each `\n` with `memchr`, copy every
//! complete frame of the read (one trailing `\r` removed, `\n` appended,
//! the same bytes natter's line mode sends back) into one output buffer and
//! write it with one `write_all`. No codec, no service, no per-frame
//! allocation. Same runtime as natter's echo example; `TCP_NODELAY` on; a
//! frame over 64 KiB closes the connection.

use std::io;
use std::process::ExitCode;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MAX_FRAME: usize = 64 * 1024;
/// Same first read buffer as `Framed`.
const READ_BUFFER: usize = 8 * 1024;

#[tokio::main]
async fn main() -> ExitCode {
    natter_bench::serve_baseline("baseline-raw", echo).await
}

async fn echo(mut stream: TcpStream) -> io::Result<()> {
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
            output.clear();
        }
        if read == 0 {
            return Ok(());
        }
        if input.len() > MAX_FRAME + 1 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
        }
    }
}
