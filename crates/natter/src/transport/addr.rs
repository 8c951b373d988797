//! [`Addr`]: one end of a connection, whatever the transport.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The address of one end of a connection, for every transport.
///
/// Within one process, the peers of the open connections always have
/// distinct addresses, so an `Addr` names a connection: in events, in
/// [`ServerHandle::connections`](crate::ServerHandle::connections) and for
/// [`ServerHandle::close`](crate::ServerHandle::close). Unix peers that
/// bound no path (the usual client) and in-memory connections get a number
/// for that.
///
/// ```
/// use natter::transport::Addr;
///
/// let tcp = Addr::from("127.0.0.1:7878".parse::<std::net::SocketAddr>().unwrap());
/// assert_eq!(tcp.to_string(), "127.0.0.1:7878");
/// assert_eq!(tcp, "127.0.0.1:7878".parse::<std::net::SocketAddr>().unwrap());
///
/// let unix = Addr::unix("/run/app.sock");
/// assert_eq!(unix.to_string(), "unix:/run/app.sock");
/// assert!(unix.socket_addr().is_none());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Addr {
    /// A TCP socket (TLS included).
    Tcp(SocketAddr),
    /// A Unix domain socket.
    Unix(UnixAddr),
    /// An in-memory connection, numbered in the order they were made.
    Memory(u64),
    /// An address as a client was given it, not resolved yet (`HOST:PORT`):
    /// the server of a client that has not connected.
    Unresolved(Arc<str>),
}

/// A Unix domain socket's address: its path, or a number for an unnamed
/// socket.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnixAddr {
    path: Option<Arc<Path>>,
    unnamed: u64,
}

impl UnixAddr {
    /// The socket's path; `None` for an unnamed socket.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

/// Numbers unnamed Unix peers and in-memory connections, process-wide.
static NEXT: AtomicU64 = AtomicU64::new(1);

fn next_number() -> u64 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Addr {
    /// A Unix socket at `path`.
    pub fn unix(path: impl AsRef<Path>) -> Addr {
        Addr::Unix(UnixAddr {
            path: Some(Arc::from(path.as_ref())),
            unnamed: 0,
        })
    }

    /// An unnamed Unix socket, with a number no other has.
    pub fn unnamed_unix() -> Addr {
        Addr::Unix(UnixAddr {
            path: None,
            unnamed: next_number(),
        })
    }

    /// An in-memory connection's end, with a number no other has.
    pub fn memory() -> Addr {
        Addr::Memory(next_number())
    }

    /// From a tokio Unix socket address: its path, or a new number when
    /// it has none.
    #[cfg(unix)]
    pub fn from_unix(addr: &tokio::net::unix::SocketAddr) -> Addr {
        match addr.as_pathname() {
            Some(path) => Addr::unix(path),
            None => Addr::unnamed_unix(),
        }
    }

    /// The address a dialer's target names: a socket address or a Unix
    /// path when it is one, else the text as given.
    pub(crate) fn from_target(target: &str) -> Addr {
        if let Ok(addr) = target.parse::<SocketAddr>() {
            return Addr::Tcp(addr);
        }
        match target.strip_prefix("unix:") {
            Some(path) => Addr::unix(path),
            None => Addr::Unresolved(Arc::from(target)),
        }
    }

    /// The IP address and port, for TCP.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Addr::Tcp(addr) => Some(*addr),
            _ => None,
        }
    }
}

impl From<SocketAddr> for Addr {
    fn from(addr: SocketAddr) -> Self {
        Addr::Tcp(addr)
    }
}

impl PartialEq<SocketAddr> for Addr {
    fn eq(&self, other: &SocketAddr) -> bool {
        matches!(self, Addr::Tcp(addr) if addr == other)
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp(addr) => fmt::Display::fmt(addr, f),
            Addr::Unix(UnixAddr {
                path: Some(path), ..
            }) => write!(f, "unix:{}", path.display()),
            Addr::Unix(UnixAddr { unnamed, .. }) => write!(f, "unix:(unnamed #{unnamed})"),
            Addr::Memory(number) => write!(f, "memory:#{number}"),
            Addr::Unresolved(text) => f.write_str(text),
        }
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Debug for UnixAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&Addr::Unix(self.clone()), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unnamed_and_memory_addresses_are_all_distinct() {
        let a = Addr::unnamed_unix();
        let b = Addr::unnamed_unix();
        assert_ne!(a, b);
        assert_ne!(Addr::memory(), Addr::memory());
        assert!(a.to_string().starts_with("unix:(unnamed #"), "{a}");
    }

    #[test]
    fn a_named_unix_address_is_its_path() {
        assert_eq!(Addr::unix("/tmp/x"), Addr::unix("/tmp/x"));
        assert_eq!(
            Addr::unix("/tmp/x").to_string(),
            "unix:/tmp/x",
            "shown as the echo example's `--listen unix:PATH`"
        );
    }
}
