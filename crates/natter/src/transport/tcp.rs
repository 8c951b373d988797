//! TCP: the default transport.
//!
//! What only TCP has lives here: the listen backlog, `TCP_NODELAY` (on for
//! every natter connection, since replies are already batched per flush),
//! binding a client's local address, and the kernel peek that
//! [`Io::has_unread_input`] needs.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpSocket, TcpStream, lookup_host};

use super::{Addr, Dial, Dialled, Io, Listener};
use crate::Error;

/// The default listen backlog.
pub const DEFAULT_BACKLOG: u32 = 1024;

impl Io for TcpStream {
    fn transport(&self) -> &'static str {
        "tcp"
    }

    fn has_unread_input(&self) -> bool {
        peek(self)
    }
}

/// Whether the kernel holds bytes, or an end of stream, that this socket
/// has not read yet: a real `recv(MSG_PEEK)`, not tokio's cached readiness.
///
/// Tokio forgets a socket's readiness after a short read, so a read that
/// returns `Pending` does not prove the socket empty: bytes that arrived
/// since are reported only when the reactor next polls the kernel.
#[cfg(unix)]
pub(crate) fn peek(socket: &impl std::os::fd::AsFd) -> bool {
    let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    socket2::SockRef::from(socket).peek(&mut probe).is_ok()
}

#[cfg(windows)]
pub(crate) fn peek(socket: &impl std::os::windows::io::AsSocket) -> bool {
    let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    socket2::SockRef::from(socket).peek(&mut probe).is_ok()
}

/// A TCP listener with natter's settings: a listen backlog of 1024 rather
/// than the standard library's 128, and `TCP_NODELAY` on every accepted
/// connection.
#[derive(Debug)]
pub struct TcpListener {
    inner: tokio::net::TcpListener,
    local: Addr,
}

impl TcpListener {
    /// Listens on the first address `addr` resolves to that can be bound,
    /// as `TcpListener::bind` does, but with `backlog` pending connections
    /// rather than its fixed 128. When that queue is full the kernel drops
    /// new connection attempts, and their clients retry only after a second
    /// or more.
    pub async fn bind(addr: &str, backlog: u32) -> io::Result<TcpListener> {
        let mut last = io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        );
        for addr in lookup_host(addr).await? {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            // Like `TcpListener::bind`: a restarted server binds again at
            // once while its old connections linger in TIME_WAIT.
            #[cfg(not(windows))]
            socket.set_reuseaddr(true)?;
            if let Err(error) = socket.bind(addr) {
                last = error;
                continue;
            }
            match socket.listen(backlog) {
                Ok(listener) => return TcpListener::from_tokio(listener),
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    /// Wraps a listener bound elsewhere (inherited from a supervisor, say).
    pub fn from_tokio(inner: tokio::net::TcpListener) -> io::Result<TcpListener> {
        let local = Addr::Tcp(inner.local_addr()?);
        Ok(TcpListener { inner, local })
    }
}

impl Listener for TcpListener {
    type Io = TcpStream;

    async fn accept(&mut self) -> io::Result<(TcpStream, Addr)> {
        Listener::accept(&mut self.inner).await
    }

    fn local_addr(&self) -> io::Result<Addr> {
        Ok(self.local.clone())
    }
}

impl Listener for tokio::net::TcpListener {
    type Io = TcpStream;

    async fn accept(&mut self) -> io::Result<(TcpStream, Addr)> {
        let (stream, peer) = tokio::net::TcpListener::accept(self).await?;
        // Replies are batched per flush; never wait for Nagle.
        let _ = stream.set_nodelay(true);
        Ok((stream, Addr::Tcp(peer)))
    }

    fn local_addr(&self) -> io::Result<Addr> {
        tokio::net::TcpListener::local_addr(self).map(Addr::Tcp)
    }
}

/// Dials TCP: resolves the address, optionally binds a local one, and
/// tries each resolved address until one accepts.
#[derive(Debug, Clone)]
pub struct TcpDialer {
    addr: String,
    local: Option<SocketAddr>,
}

impl TcpDialer {
    /// Dials `addr` (`IP:PORT` or `HOST:PORT`).
    pub fn new(addr: impl Into<String>) -> Self {
        TcpDialer {
            addr: addr.into(),
            local: None,
        }
    }

    /// Binds our end to `local` before connecting.
    pub fn local_addr(mut self, local: SocketAddr) -> Self {
        self.local = Some(local);
        self
    }

    async fn try_each(&self) -> io::Result<TcpStream> {
        let mut last = io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        );
        for addr in lookup_host(&self.addr).await? {
            match self.connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(local) = self.local {
            socket.bind(local)?;
        }
        let stream = socket.connect(addr).await?;
        // Frames are batched per flush already; never wait for Nagle.
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

impl Dial for TcpDialer {
    type Io = TcpStream;

    async fn dial(&self) -> Result<Dialled<TcpStream>, Error> {
        let io = self
            .try_each()
            .await
            .map_err(|source| Error::connect(&self.addr, source))?;
        let peer = io
            .peer_addr()
            .map_err(|source| Error::connect(&self.addr, source))?;
        let local = io
            .local_addr()
            .map_err(|source| Error::connect(&self.addr, source))?;
        Ok(Dialled {
            io,
            peer: Addr::Tcp(peer),
            local: Addr::Tcp(local),
        })
    }

    fn target(&self) -> String {
        self.addr.clone()
    }
}
