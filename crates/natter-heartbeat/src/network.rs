//! Where a [`Master`](crate::Master) or [`Node`](crate::Node) opens its
//! connections: real TCP ([`Tcp`], what [`Master::start`](crate::Master::start)
//! and [`Node::start`](crate::Node::start) use), or any other [`Network`]
//! given to `start_on`, such as a simulated one in tests.
//!
//! A network does two things, both through natter's transport seam: it
//! listens on an address (the master's registration port, a node's
//! heartbeat port), giving a natter [`Listener`], and it makes a natter
//! [`Dial`] for an address (the master's pings to a node, a node's
//! registrations). Everything else (framing, timeouts, the detector) is the
//! same whatever the network.
//!
//! Every other clock and socket the master and node touch are outside this
//! seam, and outside `Master` and `Node` too: the `heartbeat` binary's
//! stdout and stderr writer threads and its metrics listener. `Master` and
//! `Node` read only tokio's clock, which a simulation (or a test with
//! paused time) controls.
//!
//! ```no_run
//! use natter_heartbeat::network::Tcp;
//! use natter_heartbeat::{Master, MasterConfig};
//!
//! # async fn demo() -> Result<(), natter_heartbeat::Error> {
//! let config = MasterConfig::new("127.0.0.1:0".parse().unwrap());
//! // The same as `Master::start(config)`.
//! let (master, events) = Master::start_on(config, Tcp).await?;
//! # drop((master, events)); Ok(()) }
//! ```

use std::future::Future;
use std::net::SocketAddr;

use natter::transport::tcp::{DEFAULT_BACKLOG, TcpDialer, TcpListener};
use natter::transport::{Dial, Listener};

/// Opens a master's or node's listeners and dials its peers.
pub trait Network: Clone + Send + Sync + 'static {
    /// What [`listen`](Self::listen) returns.
    type Listener: Listener;
    /// What [`dialer`](Self::dialer) returns.
    type Dialer: Dial + Clone;

    /// Listens on `addr` (port 0: a free one). Fails naming `addr`
    /// ([`natter::Error::Bind`]).
    fn listen(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = Result<Self::Listener, natter::Error>> + Send;

    /// Dials `target`: `IP:PORT` or `HOST:PORT`.
    fn dialer(&self, target: &str) -> Self::Dialer;
}

/// Real TCP, through natter's TCP transport (a listen backlog of 1024,
/// `TCP_NODELAY`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tcp;

impl Network for Tcp {
    type Listener = TcpListener;
    type Dialer = TcpDialer;

    async fn listen(&self, addr: SocketAddr) -> Result<TcpListener, natter::Error> {
        TcpListener::bind(&addr.to_string(), DEFAULT_BACKLOG)
            .await
            .map_err(|source| natter::Error::Bind {
                addr: addr.to_string(),
                source: std::sync::Arc::new(source),
            })
    }

    fn dialer(&self, target: &str) -> TcpDialer {
        TcpDialer::new(target)
    }
}
