//! The client: dials a server, over any [transport](crate::transport), and
//! runs the connection with the same driver as the server's connections.
//!
//! Two ways to talk:
//! * [`Client`]: send frames and typed values whenever you like; frames the
//!   server sends are handed to an optional handler service (with the same
//!   [`Conn`] context a server gives), or read and dropped.
//! * [`ClientService`]: request/response for protocols that answer every
//!   frame in order. It is a `tower::Service<Frame>`, so timeouts, retries,
//!   buffering and concurrency limits are tower layers; several requests
//!   may be in flight (pipelined), and it can redial with backoff.

mod backoff;
mod builder;
mod dial;
mod service;

use futures::future::{Ready, ready};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::codec::Encoder;

pub use self::backoff::Backoff;
pub use self::builder::ClientBuilder;
pub use self::dial::{AddrDialer, DialOptions, Target};
pub use self::service::{ClientService, ResponseFuture};
use crate::conn::{Conn, Signals};
use crate::event::{EventSender, Events};
use crate::transport::Addr;
use crate::{BoxError, Error, Frame};

/// A connection to a server: send frames on it, handle what comes back.
///
/// ```no_run
/// # async fn demo() -> Result<(), natter::Error> {
/// use natter::Client;
///
/// let client = Client::builder().connect("127.0.0.1:7878").await?;
/// client.send("hello").await?;
/// client.send_json(&serde_json::json!({"type": "ping", "seq": 1})).await?;
/// client.close().await?; // everything sent is flushed first
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Client {
    conn: Conn,
    task: Option<JoinHandle<Option<Error>>>,
    events: EventSender,
    signals: Signals,
}

impl Client {
    /// A builder with the defaults: line mode, 64 KiB frames, a 10 s
    /// connect timeout, no handler.
    pub fn builder() -> ClientBuilder<tower::layer::util::Identity> {
        ClientBuilder::new()
    }

    pub(crate) fn new(
        conn: Conn,
        task: JoinHandle<Option<Error>>,
        events: EventSender,
        signals: Signals,
    ) -> Client {
        Client {
            conn,
            task: Some(task),
            events,
            signals,
        }
    }

    /// The connection's context, the same a handler gets.
    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    /// The server's address.
    pub fn peer_addr(&self) -> Addr {
        self.conn.peer_addr()
    }

    /// Our end's address.
    pub fn local_addr(&self) -> Addr {
        self.conn.local_addr()
    }

    /// Sends one frame; see [`Conn::send`].
    pub async fn send(&self, frame: impl AsRef<[u8]>) -> Result<(), Error> {
        self.conn.send(frame).await
    }

    /// Sends `value` as one compact JSON frame (the original's `Write`).
    pub async fn send_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        self.conn.send_json(value).await
    }

    /// Sends `item` as `encoder` writes it (the original's `SetWriteFunc`).
    pub async fn send_with<E, T>(&self, encoder: &mut E, item: T) -> Result<(), Error>
    where
        E: Encoder<T>,
        E::Error: Into<BoxError>,
    {
        self.conn.send_with(encoder, item).await
    }

    /// A snapshot of the connection's counters: see [`stats`](crate::stats).
    pub fn stats(&self) -> crate::Stats {
        self.events.counters().snapshot()
    }

    /// The connection's [`Events`], from now on.
    pub fn events(&self) -> Events {
        self.events.subscribe()
    }

    /// Closes the connection: everything sent so far is written, a handler
    /// that is running finishes, then the socket closes. Returns the last
    /// error the connection reported (a handler's error, a frame too long,
    /// a reset...), if any.
    pub async fn close(mut self) -> Result<(), Error> {
        self.conn.close();
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match task.await {
            Ok(None) => Ok(()),
            Ok(Some(error)) => Err(error),
            Err(join) => Err(Error::Panic(join.to_string())),
        }
    }

    /// Drops the connection at once, without flushing.
    pub fn abort(self) {
        self.signals.cut();
    }
}

impl Drop for Client {
    /// Closes the connection as [`close`](Client::close) does, in the
    /// background.
    fn drop(&mut self) {
        self.conn.close();
    }
}

/// The handler of a client without one: reads frames and drops them, as
/// the original client did without a `readfunc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Discard;

impl tower::Service<Frame> for Discard {
    type Response = ();
    type Error = std::convert::Infallible;
    type Future = Ready<Result<(), std::convert::Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Frame) -> Self::Future {
        ready(Ok(()))
    }
}
