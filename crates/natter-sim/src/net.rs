//! natter over turmoil's simulated TCP: a [`Listener`] for a server and a
//! [`Dial`] for a client, so natter's real server and client code run
//! inside turmoil hosts, unchanged.
//!
//! turmoil's `TcpStream` is an `AsyncRead + AsyncWrite` stream, so
//! [`memory::Stream`](natter::transport::memory::Stream) makes it an [`Io`](natter::transport::Io); its
//! addresses are ordinary `SocketAddr`s (turmoil gives each host an IP),
//! reported as [`Addr::Tcp`] like real TCP.
//!
//! What turmoil's TCP does under faults, which the scenarios rely on:
//!
//! - a **held** link (`Sim::hold`) delays every segment until it is
//!   released, then delivers them in order: what real TCP's retransmission
//!   does across a short partition;
//! - a **partitioned** link (`Sim::partition`) drops segments. A dial
//!   across it waits (its SYN is lost) until the client's connect timeout.
//!   A connection that loses a segment never gets it again (turmoil does
//!   not retransmit): every later segment waits behind the gap, so the
//!   connection is silently dead, a black hole, as when a middlebox drops
//!   the connection's state. Only a timeout finds it, and dropping it
//!   sends a reset the peer sees;
//! - random message loss (`fail_rate`) is the same as a partition that
//!   lasts one message: it black-holes the connections it hits.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use natter::transport::memory::Stream;
use natter::transport::{Addr, Dial, Dialled, Listener};

/// A stream of turmoil's simulated TCP, as natter's driver uses it.
pub type SimStream = Stream<turmoil::net::TcpStream>;

/// Accepts simulated TCP connections for a natter [`Server`](natter::Server).
///
/// ```no_run
/// # async fn host() -> Result<(), Box<dyn std::error::Error>> {
/// use natter::{Conn, Frame, Server};
/// use natter_sim::net::SimListener;
/// use tower::service_fn;
///
/// // Inside a turmoil host:
/// let listener = SimListener::bind("0.0.0.0:7878".parse()?).await?;
/// let server = Server::builder().listener(listener)?;
/// server
///     .serve(|_: &Conn| service_fn(|frame: Frame| async move { Ok::<_, natter::Error>(frame) }))
///     .await?;
/// # Ok(()) }
/// ```
pub struct SimListener {
    inner: turmoil::net::TcpListener,
    local: Addr,
}

impl std::fmt::Debug for SimListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimListener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl SimListener {
    /// Listens on `addr` of the current host: `0.0.0.0:PORT` (port 0
    /// picks a free one). Must be called inside a turmoil host.
    pub async fn bind(addr: SocketAddr) -> io::Result<SimListener> {
        let inner = turmoil::net::TcpListener::bind(addr).await?;
        let local = Addr::Tcp(inner.local_addr()?);
        Ok(SimListener { inner, local })
    }
}

impl Listener for SimListener {
    type Io = SimStream;

    async fn accept(&mut self) -> io::Result<(SimStream, Addr)> {
        let (stream, peer) = self.inner.accept().await?;
        Ok((Stream(stream), Addr::Tcp(peer)))
    }

    fn local_addr(&self) -> io::Result<Addr> {
        Ok(self.local.clone())
    }
}

/// Dials simulated TCP for a natter [`Client`](natter::Client) or
/// [`ClientService`](natter::ClientService): `HOST:PORT`, where HOST is a
/// turmoil host name or IP. Clone it for several clients.
#[derive(Debug, Clone)]
pub struct SimDialer {
    target: Arc<str>,
}

impl SimDialer {
    /// Dials `target`, `HOST:PORT`.
    pub fn new(target: impl Into<String>) -> SimDialer {
        SimDialer {
            target: Arc::from(target.into()),
        }
    }
}

impl Dial for SimDialer {
    type Io = SimStream;

    async fn dial(&self) -> Result<Dialled<SimStream>, natter::Error> {
        let failed = |source: io::Error| natter::Error::Connect {
            addr: self.target.to_string(),
            source: Arc::new(source),
        };
        let stream = turmoil::net::TcpStream::connect(&*self.target)
            .await
            .map_err(failed)?;
        let peer = stream.peer_addr().map_err(failed)?;
        let local = stream.local_addr().map_err(failed)?;
        Ok(Dialled {
            io: Stream(stream),
            peer: Addr::Tcp(peer),
            local: Addr::Tcp(local),
        })
    }

    fn target(&self) -> String {
        self.target.to_string()
    }
}
