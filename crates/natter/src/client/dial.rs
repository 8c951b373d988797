//! What a client connects to: an address (`HOST:PORT`, `unix:PATH`) or any
//! [`Dial`], bounded by the connect timeout.

use std::net::SocketAddr;
use std::time::Duration;

use crate::Error;
use crate::transport::tcp::TcpDialer;
#[cfg(unix)]
use crate::transport::unix::UnixDialer;
use crate::transport::{Addr, BoundIo, Dial, Dialled};

/// What [`ClientBuilder`](super::ClientBuilder)'s `connect` methods take:
///
/// * an address: `"HOST:PORT"` or a `SocketAddr` for TCP (TLS if the
///   builder has a [`tls`](super::ClientBuilder::tls) connector),
///   `"unix:PATH"` for a Unix socket, or an [`Addr`] (a server's
///   `local_addr()`);
/// * any [`Dial`]: an in-memory
///   [`MemoryDialer`](crate::transport::memory::MemoryDialer), a stream
///   you already have in [`Once`](crate::transport::memory::Once), or a
///   transport of your own.
///
/// There is nothing to implement: every [`Dial`] is a `Target`.
pub trait Target {
    /// What dials it.
    type Dialer: Dial;

    /// The dialer, with the builder's options for addresses.
    fn into_dialer(self, options: &DialOptions) -> Result<Self::Dialer, Error>;
}

/// The builder's options an address is dialled with.
#[derive(Debug, Clone, Default)]
pub struct DialOptions {
    pub(crate) local_addr: Option<SocketAddr>,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::transport::tls::TlsConnector>,
}

impl<D: Dial> Target for D {
    type Dialer = D;

    fn into_dialer(self, _: &DialOptions) -> Result<D, Error> {
        Ok(self)
    }
}

impl Target for &str {
    type Dialer = AddrDialer;

    fn into_dialer(self, options: &DialOptions) -> Result<AddrDialer, Error> {
        AddrDialer::new(self, options)
    }
}

impl Target for String {
    type Dialer = AddrDialer;

    fn into_dialer(self, options: &DialOptions) -> Result<AddrDialer, Error> {
        AddrDialer::new(&self, options)
    }
}

impl Target for &String {
    type Dialer = AddrDialer;

    fn into_dialer(self, options: &DialOptions) -> Result<AddrDialer, Error> {
        AddrDialer::new(self, options)
    }
}

impl Target for SocketAddr {
    type Dialer = AddrDialer;

    fn into_dialer(self, options: &DialOptions) -> Result<AddrDialer, Error> {
        AddrDialer::new(&self.to_string(), options)
    }
}

impl Target for Addr {
    type Dialer = AddrDialer;

    /// A server's [`local_addr`](crate::Server::local_addr), say. An
    /// unnamed Unix socket or an in-memory address cannot be dialled.
    fn into_dialer(self, options: &DialOptions) -> Result<AddrDialer, Error> {
        (&self).into_dialer(options)
    }
}

impl Target for &Addr {
    type Dialer = AddrDialer;

    fn into_dialer(self, options: &DialOptions) -> Result<AddrDialer, Error> {
        match self {
            Addr::Tcp(addr) => AddrDialer::new(&addr.to_string(), options),
            Addr::Unresolved(addr) => AddrDialer::new(addr, options),
            #[cfg(unix)]
            Addr::Unix(unix) => match unix.path() {
                Some(path) if options.tls_unset() => Ok(AddrDialer::Unix(UnixDialer::new(path))),
                Some(_) => Err(Error::InvalidConfig(
                    "TLS is for TCP addresses; over a Unix socket use tls::TlsDialer",
                )),
                None => Err(Error::InvalidConfig(
                    "an unnamed Unix socket address cannot be dialled",
                )),
            },
            _ => Err(Error::InvalidConfig(
                "only TCP and named Unix socket addresses can be dialled",
            )),
        }
    }
}

impl DialOptions {
    fn tls_unset(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_none();
        #[cfg(not(feature = "tls"))]
        true
    }
}

/// Dials an address given as text, over the transport it names.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AddrDialer {
    /// `HOST:PORT`.
    Tcp(TcpDialer),
    /// `unix:PATH`.
    #[cfg(unix)]
    Unix(UnixDialer),
    /// `HOST:PORT` with TLS.
    #[cfg(feature = "tls")]
    Tls(crate::transport::tls::TlsDialer<TcpDialer>),
}

impl AddrDialer {
    fn new(addr: &str, options: &DialOptions) -> Result<AddrDialer, Error> {
        #[cfg(unix)]
        if let Some(path) = addr.strip_prefix("unix:") {
            #[cfg(feature = "tls")]
            if options.tls.is_some() {
                return Err(Error::InvalidConfig(
                    "TLS is for TCP addresses; over a Unix socket use tls::TlsDialer",
                ));
            }
            return Ok(AddrDialer::Unix(UnixDialer::new(path)));
        }
        let mut tcp = TcpDialer::new(addr);
        if let Some(local) = options.local_addr {
            tcp = tcp.local_addr(local);
        }
        #[cfg(feature = "tls")]
        if let Some(connector) = &options.tls {
            return Ok(AddrDialer::Tls(crate::transport::tls::TlsDialer::new(
                tcp,
                connector.clone(),
                addr,
            )?));
        }
        Ok(AddrDialer::Tcp(tcp))
    }
}

impl Dial for AddrDialer {
    type Io = BoundIo;

    async fn dial(&self) -> Result<Dialled<BoundIo>, Error> {
        match self {
            AddrDialer::Tcp(dialer) => {
                let dialled = dialer.dial().await?;
                Ok(Dialled {
                    io: BoundIo::Tcp(dialled.io),
                    peer: dialled.peer,
                    local: dialled.local,
                })
            }
            #[cfg(unix)]
            AddrDialer::Unix(dialer) => {
                let dialled = dialer.dial().await?;
                Ok(Dialled {
                    io: BoundIo::Unix(dialled.io),
                    peer: dialled.peer,
                    local: dialled.local,
                })
            }
            #[cfg(feature = "tls")]
            AddrDialer::Tls(dialer) => {
                let dialled = dialer.dial().await?;
                Ok(Dialled {
                    io: BoundIo::Tls(Box::new(dialled.io)),
                    peer: dialled.peer,
                    local: dialled.local,
                })
            }
        }
    }

    fn target(&self) -> String {
        match self {
            AddrDialer::Tcp(dialer) => dialer.target(),
            #[cfg(unix)]
            AddrDialer::Unix(dialer) => dialer.target(),
            #[cfg(feature = "tls")]
            AddrDialer::Tls(dialer) => dialer.target(),
        }
    }
}

/// Dials once, within `timeout`. Fails with [`Error::ConnectTimeout`] or
/// the dialer's error, naming the address.
pub(crate) async fn dial_within<D: Dial>(
    dialer: &D,
    timeout: Duration,
) -> Result<Dialled<D::Io>, Error> {
    match tokio::time::timeout(timeout, dialer.dial()).await {
        Ok(result) => result,
        Err(_) => Err(Error::ConnectTimeout {
            addr: dialer.target(),
            timeout,
        }),
    }
}
