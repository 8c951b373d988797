//! natter: long-lived, delimiter-framed conversations over TCP, TLS, Unix
//! sockets or any stream, as a tokio-util codec plus a tower middleware
//! stack.
//!
//! Each connection is a service pipeline: bytes are cut into [`Frame`]s by
//! a [`DelimiterCodec`] (or any codec), each frame is handed to your
//! [`tower::Service<Frame>`](tower::Service) (or a closure), and its
//! response is written back in order. Timeouts, connection limits, panic
//! isolation, error reporting and graceful shutdown come from natter's
//! layers and options, and any other tower layer composes with them.
//!
//! Every frame gets exactly one reply, a deliberate "no reply", or, when
//! it fails, the reply of an [`on_error`](ServerBuilder::on_error) hook;
//! otherwise the connection closes after the replies before it. A
//! pipelining peer therefore never gets an answer meant for another
//! request.
//!
//! # A complete server
//!
//! ```no_run
//! use std::time::Duration;
//! use natter::{Conn, Frame, Server};
//! use natter::layer::HandlerTimeoutLayer;
//! use tower::service_fn;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), natter::Error> {
//!     let server = Server::builder()
//!         .idle_timeout(Duration::from_secs(60))
//!         .max_connections(1_000)
//!         .layer(HandlerTimeoutLayer::new(Duration::from_secs(5)))
//!         .bind("127.0.0.1:7878")
//!         .await?;
//!     println!("listening on {}", server.local_addr());
//!
//!     let shutdown = async { tokio::signal::ctrl_c().await.unwrap_or(()) };
//!     server
//!         .serve_with_shutdown(
//!             |conn: &Conn| {
//!                 // An `Addr`: TCP, a Unix socket, in memory...
//!                 let peer = conn.peer_addr();
//!                 service_fn(move |frame: Frame| {
//!                     let reply = format!("{peer} said {} bytes", frame.len());
//!                     async move { Ok::<_, natter::Error>(reply) }
//!                 })
//!             },
//!             shutdown,
//!         )
//!         .await
//! }
//! ```
//!
//! # The parts
//!
//! * [`codec`]: [`DelimiterCodec`] (any delimiter byte or sequence, line
//!   mode with `\r\n`, read-to-EOF mode, a frame limit) and [`JsonCodec`].
//!   Plain tokio-util codecs, usable on any `Framed`; [`codec::Frames`]
//!   puts any other codec on a natter connection.
//! * [`transport`]: where bytes come from. TCP, Unix sockets, TLS, in
//!   memory, or yours through the [`Listener`](transport::Listener) and
//!   [`Dial`](transport::Dial) seams; [`Addr`] names a peer of any of them.
//! * [`conn`]: [`Conn`], a connection's context (addresses, send, close),
//!   and the driver that runs stream -> codec -> layers -> service for every
//!   connection, server or client.
//! * [`layer`]: per-frame middleware ([`HandlerTimeoutLayer`](layer::HandlerTimeoutLayer),
//!   [`CatchPanicLayer`](layer::CatchPanicLayer)).
//! * [`Server`], [`ServerHandle`]: accept, limit, list and close
//!   connections, shut down gracefully or at once.
//! * [`Client`], [`ClientService`]: dial, send, handle server frames, or
//!   request/response as a tower service with optional reconnect.
//! * [`Events`]: what happened on which connection, never blocking.
//! * [`stats`]: the same in numbers, as a [`Stats`] snapshot and through
//!   the `metrics` facade.
//! * [`Error`]: every failure, typed.
#![warn(missing_docs)]

pub mod client;
pub mod codec;
pub mod conn;
mod error;
mod event;
mod frame;
pub mod layer;
mod reply;
mod server;
pub mod stats;
pub mod transport;

pub use client::{Client, ClientBuilder, ClientService};
pub use codec::{CodecError, Delimiter, DelimiterCodec, JsonCodec};
pub use conn::{Conn, FrameService};
pub use error::{BoxError, Error};
pub use event::{Event, EventKind, Events};
pub use frame::Frame;
pub use reply::IntoReply;
pub use server::{Server, ServerBuilder, ServerHandle};
pub use stats::Stats;
pub use transport::Addr;

/// The README's code blocks, compiled and run as doc tests so they cannot
/// rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
