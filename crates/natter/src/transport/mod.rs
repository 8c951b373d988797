//! Transports: where a connection's bytes come from and go to.
//!
//! natter's connection driver runs over any byte stream that implements
//! [`Io`]: a TCP or Unix socket, a TLS session over either, an in-memory
//! [`tokio::io::duplex`] pipe, or a type of your own. Two seams bring
//! streams to it:
//!
//! * a [`Listener`] accepts them for a [`Server`](crate::Server)
//!   ([`ServerBuilder::listener`](crate::ServerBuilder::listener));
//! * a [`Dial`] opens them for a [`Client`](crate::Client) or
//!   [`ClientService`](crate::ClientService) (every `connect` method of
//!   [`ClientBuilder`](crate::ClientBuilder) takes one), again on every
//!   reconnect.
//!
//! Both report where each end is as an [`Addr`], which covers every
//! transport, so events, [`Conn::peer_addr`](crate::Conn::peer_addr) and
//! [`ServerHandle::close`](crate::ServerHandle::close) work the same over
//! all of them.
//!
//! What is particular to one transport is an option of that transport, not
//! an assumption of the driver: TCP's listen backlog and `TCP_NODELAY` live
//! in [`tcp`], the stale socket file in [`unix`], certificates and the
//! handshake timeout in `tls` (the `tls` feature, on by default). The one thing the driver asks of a stream
//! beyond reading and writing is [`Io::has_unread_input`], which lets a
//! graceful shutdown answer every byte the peer sent before it.
//!
//! | transport | server | client | address |
//! |---|---|---|---|
//! | TCP | [`ServerBuilder::bind`](crate::ServerBuilder::bind)`("IP:PORT")` | `connect("HOST:PORT")` | [`Addr::Tcp`] |
//! | Unix socket | `bind("unix:PATH")` | `connect("unix:PATH")` | [`Addr::Unix`] |
//! | TLS over TCP | `.tls(..)` then `bind("IP:PORT")` | `.tls(..)` then `connect("HOST:PORT")` | [`Addr::Tcp`] |
//! | in memory | `.listener(`[`memory::channel`]`().0)`, or [`ServerBuilder::serve_io`](crate::ServerBuilder::serve_io) for one stream | `connect(dialer)`, or [`memory::Once`] for one stream | [`Addr::Memory`] |

mod addr;
pub mod memory;
pub mod tcp;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(unix)]
pub mod unix;

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite};

pub use self::addr::{Addr, UnixAddr};
use crate::Error;

/// A connection's byte stream, as the driver uses it.
///
/// Any `AsyncRead + AsyncWrite` stream can be one: implement this trait
/// (its methods have defaults) or wrap the stream in
/// [`memory::Stream`]. natter implements it for tokio's `TcpStream`,
/// `UnixStream` and `DuplexStream`, and for TLS streams over any of them.
///
/// ```
/// use natter::transport::Io;
///
/// // A stream of your own: a wrapper that counts bytes, say.
/// struct Counted(tokio::io::DuplexStream);
/// # impl tokio::io::AsyncRead for Counted {
/// #     fn poll_read(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> std::task::Poll<std::io::Result<()>> {
/// #         std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
/// #     }
/// # }
/// # impl tokio::io::AsyncWrite for Counted {
/// #     fn poll_write(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
/// #         std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
/// #     }
/// #     fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
/// #         std::pin::Pin::new(&mut self.0).poll_flush(cx)
/// #     }
/// #     fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
/// #         std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
/// #     }
/// # }
/// impl Io for Counted {}
/// ```
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The transport's name, for logs and metrics: `"tcp"`, `"unix"`,
    /// `"tls"`, `"memory"`...
    fn transport(&self) -> &'static str {
        "stream"
    }

    /// Whether the peer sent bytes (or an end of stream) that a read has
    /// not returned yet, as far as the transport can tell without reading
    /// them.
    ///
    /// A draining connection (graceful shutdown) reads until a read would
    /// wait, then asks this: `true` makes it wait for those bytes and answer
    /// them too. Sockets need it because tokio caches readiness: a read can
    /// wait although the kernel already holds bytes that arrived since. The
    /// default, `false`, is right for streams without such a cache (an
    /// in-memory pipe: a read that waits proves it empty).
    fn has_unread_input(&self) -> bool {
        false
    }
}

impl<T: Io + ?Sized> Io for Box<T> {
    fn transport(&self) -> &'static str {
        (**self).transport()
    }

    fn has_unread_input(&self) -> bool {
        (**self).has_unread_input()
    }
}

/// Accepts connections for a [`Server`](crate::Server).
///
/// Implemented by natter's [`tcp::TcpListener`], [`unix::UnixListener`],
/// the TLS listener and [`Bound`], and by tokio's `TcpListener` and
/// `UnixListener` as they are. Implement it to serve any other source of
/// streams (a simulated network, a socket inherited from a supervisor).
///
/// `accept` must return promptly: anything slow that a connection needs
/// before its first frame (a TLS handshake) belongs in its [`Io`], where it
/// runs in the connection's own task under a timeout, so that one stalled
/// peer never holds up the others.
pub trait Listener: Send + 'static {
    /// The streams it accepts.
    type Io: Io;

    /// Waits for the next connection: its stream and the peer's address.
    ///
    /// An error is reported and the server calls `accept` again (after a
    /// pause when the error is not the peer's, such as running out of file
    /// descriptors).
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, Addr)>> + Send;

    /// The address it listens on.
    fn local_addr(&self) -> io::Result<Addr>;
}

/// Opens connections for a [`Client`](crate::Client) or
/// [`ClientService`](crate::ClientService): once to connect, and again on
/// every reconnect.
///
/// The client bounds each dial with its connect timeout.
pub trait Dial: Send + Sync + 'static {
    /// The streams it opens.
    type Io: Io;

    /// Opens one connection. Fails naming the address it dialled.
    fn dial(&self) -> impl Future<Output = Result<Dialled<Self::Io>, Error>> + Send;

    /// Where it dials, as errors name it (`127.0.0.1:7878`,
    /// `unix:/run/app.sock`).
    fn target(&self) -> String;
}

/// A connection a [`Dial`] opened.
#[derive(Debug)]
pub struct Dialled<T> {
    /// The stream.
    pub io: T,
    /// The server's address.
    pub peer: Addr,
    /// Our end's address.
    pub local: Addr,
}

/// The listener [`ServerBuilder::bind`](crate::ServerBuilder::bind)
/// makes: TCP, a Unix socket, or TLS over TCP, chosen by the address and
/// the builder's options.
#[derive(Debug)]
#[non_exhaustive]
pub enum Bound {
    /// `IP:PORT` or `HOST:PORT`.
    Tcp(tcp::TcpListener),
    /// `unix:PATH`.
    #[cfg(unix)]
    Unix(unix::UnixListener),
    /// `IP:PORT` with TLS.
    #[cfg(feature = "tls")]
    Tls(crate::transport::tls::TlsListener<tcp::TcpListener>),
}

/// A stream [`Bound`] accepted.
#[derive(Debug)]
#[non_exhaustive]
pub enum BoundIo {
    /// TCP.
    Tcp(tokio::net::TcpStream),
    /// A Unix socket.
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
    /// TLS over TCP. Boxed: a TLS session's state is large, and a plain
    /// TCP connection should not carry room for it.
    #[cfg(feature = "tls")]
    Tls(Box<crate::transport::tls::TlsStream<tokio::net::TcpStream>>),
}

impl Listener for Bound {
    type Io = BoundIo;

    async fn accept(&mut self) -> io::Result<(BoundIo, Addr)> {
        match self {
            Bound::Tcp(listener) => {
                let (io, peer) = listener.accept().await?;
                Ok((BoundIo::Tcp(io), peer))
            }
            #[cfg(unix)]
            Bound::Unix(listener) => {
                let (io, peer) = listener.accept().await?;
                Ok((BoundIo::Unix(io), peer))
            }
            #[cfg(feature = "tls")]
            Bound::Tls(listener) => {
                let (io, peer) = listener.accept().await?;
                Ok((BoundIo::Tls(Box::new(io)), peer))
            }
        }
    }

    fn local_addr(&self) -> io::Result<Addr> {
        match self {
            Bound::Tcp(listener) => listener.local_addr(),
            #[cfg(unix)]
            Bound::Unix(listener) => listener.local_addr(),
            #[cfg(feature = "tls")]
            Bound::Tls(listener) => listener.local_addr(),
        }
    }
}

/// Forwards `AsyncRead` and `AsyncWrite` to whichever stream an enum holds.
macro_rules! delegate_io {
    ($ty:ident { $($variant:ident $(#[$cfg:meta])?),* }) => {
        impl tokio::io::AsyncRead for $ty {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                match self.get_mut() {
                    $($(#[$cfg])? $ty::$variant(io) => std::pin::Pin::new(io).poll_read(cx, buf),)*
                }
            }
        }

        impl tokio::io::AsyncWrite for $ty {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<io::Result<usize>> {
                match self.get_mut() {
                    $($(#[$cfg])? $ty::$variant(io) => std::pin::Pin::new(io).poll_write(cx, buf),)*
                }
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> std::task::Poll<io::Result<usize>> {
                match self.get_mut() {
                    $($(#[$cfg])? $ty::$variant(io) => std::pin::Pin::new(io).poll_write_vectored(cx, bufs),)*
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    $($(#[$cfg])? $ty::$variant(io) => io.is_write_vectored(),)*
                }
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                match self.get_mut() {
                    $($(#[$cfg])? $ty::$variant(io) => std::pin::Pin::new(io).poll_flush(cx),)*
                }
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                match self.get_mut() {
                    $($(#[$cfg])? $ty::$variant(io) => std::pin::Pin::new(io).poll_shutdown(cx),)*
                }
            }
        }

        impl Io for $ty {
            fn transport(&self) -> &'static str {
                match self {
                    $($(#[$cfg])? $ty::$variant(io) => io.transport(),)*
                }
            }

            fn has_unread_input(&self) -> bool {
                match self {
                    $($(#[$cfg])? $ty::$variant(io) => io.has_unread_input(),)*
                }
            }
        }
    };
}

delegate_io!(BoundIo {
    Tcp,
    Unix #[cfg(unix)],
    Tls #[cfg(feature = "tls")]
});
