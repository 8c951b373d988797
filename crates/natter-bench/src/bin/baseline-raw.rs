//! Baseline: the practical limit of an echo server on tokio, a raw loop.
//!
//! ```text
//! baseline-raw [--listen 127.0.0.1:0]
//! ```
//!
//! Read into one `BytesMut`, find each `\n` with `memchr`, copy every
//! complete frame of the read (one trailing `\r` removed, `\n` appended,
//! the same bytes natter's line mode sends back) into one output buffer and
//! write it with one `write_all` ([`natter_bench::raw_echo`]). No codec, no
//! service, no per-frame allocation. Same runtime as natter's echo example;
//! `TCP_NODELAY` on; a frame over 64 KiB closes the connection.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    natter_bench::serve_baseline("baseline-raw", natter_bench::raw_echo).await
}
