//! In-memory connections: servers and clients with no socket at all.
//!
//! [`channel`] makes a listener and a dialer joined in memory: every dial
//! is a new [`tokio::io::duplex`] pipe, accepted by the listener. Give the
//! listener to [`ServerBuilder::listener`](crate::ServerBuilder::listener)
//! and the dialer to a client, and every layer, limit, event and shutdown
//! works as over TCP, in a test that opens no socket:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), natter::BoxError> {
//! use natter::transport::memory;
//! use natter::{Client, Conn, Frame, Server};
//! use tower::{Service, ServiceExt, service_fn};
//!
//! let (listener, dialer) = memory::channel();
//! let server = Server::builder().listener(listener)?;
//! let handle = server.handle();
//! tokio::spawn(server.serve(|_conn: &Conn| {
//!     service_fn(|frame: Frame| async move { Ok::<_, natter::Error>(frame) })
//! }));
//!
//! let mut client = Client::builder().connect_service(dialer).await?;
//! let answer = client.ready().await?.call("hello".into()).await?;
//! assert_eq!(answer, "hello");
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! To run one connection over a stream you already have, use
//! [`ServerBuilder::serve_io`](crate::ServerBuilder::serve_io) on the server
//! side and [`Once`] on the client side.

use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::mpsc;

use super::{Addr, Dial, Dialled, Io, Listener};
use crate::Error;

/// How many bytes each direction of an in-memory connection buffers.
const PIPE_SIZE: usize = 64 * 1024;

impl Io for DuplexStream {
    fn transport(&self) -> &'static str {
        "memory"
    }
}

/// A listener and a dialer joined in memory. See the [module](self) docs.
pub fn channel() -> (MemoryListener, MemoryDialer) {
    let (sender, receiver) = mpsc::channel(64);
    let local = Addr::memory();
    let listener = MemoryListener {
        receiver,
        local: local.clone(),
    };
    let dialer = MemoryDialer {
        sender,
        server: local,
    };
    (listener, dialer)
}

/// The listening end of [`channel`].
#[derive(Debug)]
pub struct MemoryListener {
    receiver: mpsc::Receiver<(DuplexStream, Addr)>,
    local: Addr,
}

impl Listener for MemoryListener {
    type Io = DuplexStream;

    async fn accept(&mut self) -> io::Result<(DuplexStream, Addr)> {
        match self.receiver.recv().await {
            Some(accepted) => Ok(accepted),
            // Every dialer is gone: no connection will ever come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Addr> {
        Ok(self.local.clone())
    }
}

/// The dialing end of [`channel`]; clone it for several clients.
#[derive(Debug, Clone)]
pub struct MemoryDialer {
    sender: mpsc::Sender<(DuplexStream, Addr)>,
    server: Addr,
}

impl Dial for MemoryDialer {
    type Io = DuplexStream;

    async fn dial(&self) -> Result<Dialled<DuplexStream>, Error> {
        let (ours, theirs) = tokio::io::duplex(PIPE_SIZE);
        let local = Addr::memory();
        self.sender
            .send((theirs, local.clone()))
            .await
            .map_err(|_| {
                Error::connect(
                    &self.server,
                    io::Error::new(io::ErrorKind::ConnectionRefused, "the listener is gone"),
                )
            })?;
        Ok(Dialled {
            io: ours,
            peer: self.server.clone(),
            local,
        })
    }

    fn target(&self) -> String {
        self.server.to_string()
    }
}

/// A dialer that hands out one stream you already have, once: a client
/// over an existing connection. A second dial (a reconnect) fails.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), natter::Error> {
/// use natter::transport::memory::Once;
///
/// let (ours, _theirs) = tokio::io::duplex(1024);
/// let client = natter::Client::builder().connect(Once::new(ours)).await?;
/// # drop(client); Ok(()) }
/// ```
#[derive(Debug)]
pub struct Once<T> {
    io: Mutex<Option<T>>,
    peer: Addr,
}

impl<T> Once<T> {
    /// Hands out `io`, whose peer is shown as a new in-memory address.
    pub fn new(io: T) -> Self {
        Once::with_peer(io, Addr::memory())
    }

    /// Hands out `io`, whose peer is `peer`.
    pub fn with_peer(io: T, peer: Addr) -> Self {
        Once {
            io: Mutex::new(Some(io)),
            peer,
        }
    }
}

impl<T: Io> Dial for Once<T> {
    type Io = T;

    async fn dial(&self) -> Result<Dialled<T>, Error> {
        let io = self
            .io
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let io = io.ok_or_else(|| {
            Error::connect(
                &self.peer,
                io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the one stream was used already",
                ),
            )
        })?;
        Ok(Dialled {
            io,
            peer: self.peer.clone(),
            local: Addr::memory(),
        })
    }

    fn target(&self) -> String {
        self.peer.to_string()
    }
}

/// Makes any `AsyncRead + AsyncWrite` stream an [`Io`], with the trait's
/// defaults (transport `"stream"`, no unread-input probe).
#[derive(Debug)]
pub struct Stream<T>(pub T);

impl<T: AsyncRead + Unpin> AsyncRead for Stream<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stream<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for Stream<T> {}
