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
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_FRAME: usize = 64 * 1024;
/// Same first read buffer as `Framed`.
const READ_BUFFER: usize = 8 * 1024;

#[tokio::main]
async fn main() -> ExitCode {
    natter_bench::raise_fd_limit();
    let listen = match natter_bench::listen_arg() {
        Ok(listen) => listen,
        Err(error) => {
            eprintln!("baseline-raw: {error}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(&listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("baseline-raw: cannot listen on {listen}: {error}");
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
                        eprintln!("baseline-raw: {error}");
                    }
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
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
