use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, ToSocketAddrs};
use tower::layer::util::{Identity, Stack};

use super::{Config, Server, Shared};
use crate::Error;
use crate::conn::{ConnConfig, DEFAULT_SERVER_IDLE_TIMEOUT, Signals};
use crate::event::{DEFAULT_EVENT_CAPACITY, EventSender};

/// The default connection limit.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// How long graceful shutdown waits for busy connections by default.
pub(crate) const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// The default listen backlog.
pub(crate) const DEFAULT_BACKLOG: u32 = 1024;

/// Configures a [`Server`]: codec, per-connection limits, layers, then
/// [`bind`](Self::bind).
///
/// ```
/// use std::time::Duration;
/// use natter::{DelimiterCodec, Server};
/// use natter::layer::HandlerTimeoutLayer;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), natter::Error> {
/// let server = Server::builder()
///     .codec(DelimiterCodec::lines().max_frame_length(4096))
///     .idle_timeout(Duration::from_secs(60))
///     .max_connections(1000)
///     .layer(HandlerTimeoutLayer::new(Duration::from_secs(5)))
///     .layer(tower::limit::ConcurrencyLimitLayer::new(1))
///     .bind("127.0.0.1:0")
///     .await?;
/// assert_ne!(server.local_addr().port(), 0);
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until `bind` is called"]
pub struct ServerBuilder<L> {
    conn: ConnConfig,
    max_connections: usize,
    drain_timeout: Duration,
    event_capacity: usize,
    backlog: u32,
    layer: L,
}

impl ServerBuilder<Identity> {
    pub(super) fn new() -> Self {
        ServerBuilder {
            conn: ConnConfig {
                idle_timeout: Some(DEFAULT_SERVER_IDLE_TIMEOUT),
                ..ConnConfig::default()
            },
            max_connections: DEFAULT_MAX_CONNECTIONS,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            backlog: DEFAULT_BACKLOG,
            layer: Identity::new(),
        }
    }
}

impl<L> ServerBuilder<L> {
    crate::conn::connection_options!();

    /// Connections beyond this many are closed at once, without a reply,
    /// and counted (default 10,000). A slot frees when a connection closes.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
        self
    }

    /// How long graceful shutdown waits for busy connections before it cuts
    /// them (default 5 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// How many events a slow reader of [`Events`](crate::Events) may fall
    /// behind before the oldest are dropped (default 1024).
    pub fn event_capacity(mut self, events: usize) -> Self {
        self.event_capacity = events;
        self
    }

    /// How many connections, handshake done, the kernel may hold for the
    /// server before it accepts them (default 1024; the kernel caps it, at
    /// `net.core.somaxconn` on Linux). When that queue is full the kernel
    /// drops new connection attempts, and their clients retry only after a
    /// second or more: with the standard library's 128, a burst of a few
    /// hundred connects stalled for that long.
    pub fn backlog(mut self, connections: u32) -> Self {
        self.backlog = connections;
        self
    }

    /// Adds a tower layer around every connection's service. As with
    /// [`tower::ServiceBuilder`], the first layer added is the outermost.
    pub fn layer<T>(self, layer: T) -> ServerBuilder<Stack<T, L>> {
        ServerBuilder {
            conn: self.conn,
            max_connections: self.max_connections,
            drain_timeout: self.drain_timeout,
            event_capacity: self.event_capacity,
            backlog: self.backlog,
            layer: Stack::new(layer, self.layer),
        }
    }

    /// Checks the configuration and binds the listener. Fails right here,
    /// naming the address, if the address is in use or invalid, or with
    /// [`Error::InvalidConfig`].
    pub async fn bind<A>(self, addr: A) -> Result<Server<L>, Error>
    where
        A: ToSocketAddrs + fmt::Display,
    {
        self.validate()?;
        let listener = bind_listener(&addr, self.backlog)
            .await
            .map_err(|source| Error::bind(&addr, source))?;
        self.listen(listener)
    }

    /// Serves on a listener bound elsewhere (for instance inherited from a
    /// supervisor).
    pub fn listener(self, listener: TcpListener) -> Result<Server<L>, Error> {
        self.validate()?;
        self.listen(listener)
    }

    fn validate(&self) -> Result<(), Error> {
        if self.max_connections == 0 {
            return Err(Error::InvalidConfig("max_connections must be at least 1"));
        }
        if self.conn.max_in_flight == 0 {
            return Err(Error::InvalidConfig("max_in_flight must be at least 1"));
        }
        if self.conn.write_buffer == 0 {
            return Err(Error::InvalidConfig("write_buffer must be at least 1 byte"));
        }
        if self.conn.idle_timeout == Some(Duration::ZERO)
            || self.conn.write_timeout == Some(Duration::ZERO)
            || self.conn.handler_timeout == Some(Duration::ZERO)
        {
            return Err(Error::InvalidConfig(
                "a timeout must be longer than zero; use None to turn it off",
            ));
        }
        Ok(())
    }

    fn listen(self, listener: TcpListener) -> Result<Server<L>, Error> {
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            local_addr,
            connections: Mutex::default(),
            signals: Signals::default(),
            finished: Default::default(),
            events: EventSender::new(self.event_capacity),
            refused: Default::default(),
        });
        Ok(Server {
            listener,
            layer: self.layer,
            config: Config {
                conn: self.conn,
                max_connections: self.max_connections,
                drain_timeout: self.drain_timeout,
            },
            shared,
        })
    }
}

impl<L> fmt::Debug for ServerBuilder<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("conn", &self.conn)
            .field("max_connections", &self.max_connections)
            .field("drain_timeout", &self.drain_timeout)
            .field("backlog", &self.backlog)
            .finish_non_exhaustive()
    }
}

/// Listens on the first address `addr` resolves to that can be bound, as
/// `TcpListener::bind` does, but with `backlog` rather than its fixed 128.
async fn bind_listener(addr: impl ToSocketAddrs, backlog: u32) -> io::Result<TcpListener> {
    let mut last = io::Error::new(
        io::ErrorKind::InvalidInput,
        "the address resolved to nothing",
    );
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // Like `TcpListener::bind`: a restarted server binds again at once
        // while its old connections linger in TIME_WAIT.
        #[cfg(not(windows))]
        socket.set_reuseaddr(true)?;
        if let Err(error) = socket.bind(addr) {
            last = error;
            continue;
        }
        match socket.listen(backlog) {
            Ok(listener) => return Ok(listener),
            Err(error) => last = error,
        }
    }
    Err(last)
}
