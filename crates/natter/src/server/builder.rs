use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower::Layer;
use tower::layer::util::{Identity, Stack};

use super::{Config, Server, Shared};
use crate::codec::FrameCodec;
use crate::conn::{Conn, ConnConfig, Connection, DEFAULT_SERVER_IDLE_TIMEOUT, Signals};
use crate::event::{DEFAULT_EVENT_CAPACITY, EventSender};
use crate::stats::Counters;
use crate::transport::tcp::{DEFAULT_BACKLOG, TcpListener};
use crate::transport::{Addr, Bound, Io, Listener};
use crate::{DelimiterCodec, Error, FrameService};

/// The default connection limit.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// How long graceful shutdown waits for busy connections by default.
pub(crate) const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

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
///     .bind("127.0.0.1:0")
///     .await?;
/// assert_ne!(server.local_addr().socket_addr().unwrap().port(), 0);
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until `bind` is called"]
pub struct ServerBuilder<L, C = DelimiterCodec> {
    conn: ConnConfig<C>,
    name: Option<String>,
    max_connections: usize,
    drain_timeout: Duration,
    event_capacity: usize,
    backlog: u32,
    #[cfg(feature = "tls")]
    tls: Option<crate::transport::tls::TlsAcceptor>,
    layer: L,
}

impl ServerBuilder<Identity> {
    pub(super) fn new() -> Self {
        ServerBuilder {
            conn: ConnConfig {
                idle_timeout: Some(DEFAULT_SERVER_IDLE_TIMEOUT),
                ..ConnConfig::default()
            },
            name: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            backlog: DEFAULT_BACKLOG,
            #[cfg(feature = "tls")]
            tls: None,
            layer: Identity::new(),
        }
    }
}

impl<L, C> ServerBuilder<L, C> {
    crate::conn::connection_options!(
        r#"```
use natter::{Conn, Error, Frame, Server};

# #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), natter::Error> {
let server = Server::builder()
    .on_error(|error: &Error, _conn: &Conn| {
        if error.is_overloaded() {
            Some(Frame::from("-ERR busy"))
        } else if let Error::FrameTooLong { .. } = error {
            Some(Frame::from("-ERR line too long"))
        } else {
            None // anything else: close the connection
        }
    })
    .bind("127.0.0.1:0")
    .await?;
# drop(server); Ok(()) }
```"#
    );

    /// The framing (default: [`DelimiterCodec::lines`], 64 KiB frames).
    /// Any [`FrameCodec`] works: a `DelimiterCodec` with another delimiter
    /// or limit, or another tokio-util codec through
    /// [`Frames`](crate::codec::Frames).
    pub fn codec<D: FrameCodec>(self, codec: D) -> ServerBuilder<L, D> {
        ServerBuilder {
            conn: self.conn.with_codec(codec),
            name: self.name,
            max_connections: self.max_connections,
            drain_timeout: self.drain_timeout,
            event_capacity: self.event_capacity,
            backlog: self.backlog,
            #[cfg(feature = "tls")]
            tls: self.tls,
            layer: self.layer,
        }
    }

    /// Names the server in its metrics: every series carries
    /// `server="NAME"`, so that two servers in one process are told apart
    /// (see [`stats`](crate::stats)).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

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

    /// For TCP: how many connections, handshake done, the kernel may hold
    /// for the server before it accepts them (default 1024; the kernel caps
    /// it, at `net.core.somaxconn` on Linux). When that queue is full the
    /// kernel drops new connection attempts, and their clients retry only
    /// after a second or more: with the standard library's 128, a burst of a
    /// few hundred connects stalled for that long.
    pub fn backlog(mut self, connections: u32) -> Self {
        self.backlog = connections;
        self
    }

    /// Speaks TLS on the TCP listener [`bind`](Self::bind) makes (see
    /// [`TlsAcceptor`](crate::transport::tls::TlsAcceptor) for certificates and the
    /// handshake timeout). `bind("unix:PATH")` then fails with
    /// [`Error::InvalidConfig`]; for TLS over a Unix socket, give a
    /// [`TlsListener`](crate::transport::tls::TlsListener) to
    /// [`listener`](Self::listener).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, acceptor: crate::transport::tls::TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
    }

    /// Adds a tower layer around every connection's service. As with
    /// [`tower::ServiceBuilder`], the first layer added is the outermost.
    ///
    /// Each connection gets its own stack: the layer wraps the service the
    /// factory makes for that connection. A layer that keeps state
    /// (`ConcurrencyLimitLayer`, `RateLimitLayer`, `BufferLayer`) therefore
    /// limits each connection on its own; a per-connection concurrency limit
    /// or `LoadShed` only acts when [`max_in_flight`](Self::max_in_flight)
    /// lets a connection hand over more than one frame at a time (the
    /// default is one). For a limit across every connection, share one
    /// state between the stacks:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use natter::{Conn, Frame, Server};
    /// use tokio::sync::Semaphore;
    /// use tower::limit::GlobalConcurrencyLimitLayer;
    /// use tower::{ServiceBuilder, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), natter::Error> {
    /// // At most 64 frames handled at once, over all connections together.
    /// let server = Server::builder()
    ///     .layer(GlobalConcurrencyLimitLayer::with_semaphore(Arc::new(Semaphore::new(64))))
    ///     .bind("127.0.0.1:0")
    ///     .await?;
    /// # let handle = server.handle();
    /// # tokio::spawn(server.serve(|_conn: &Conn| service_fn(|f: Frame| async move { Ok::<_, natter::Error>(f) })));
    /// # handle.shutdown().await;
    /// # Ok(()) }
    /// ```
    ///
    /// One service shared by every connection, for a handler that owns
    /// state all connections use, or a rate limit across all of them: a
    /// [`Buffer`](tower::buffer::Buffer) in front of it, cloned into each
    /// connection's factory call. The shared service runs in the buffer's
    /// own task, outside any connection, so natter cannot isolate a panic
    /// there: put a [`CatchPanicLayer`](crate::layer::CatchPanicLayer)
    /// inside the buffer, or one panicking frame stops the buffer for every
    /// connection.
    ///
    /// ```
    /// use std::time::Duration;
    /// use natter::layer::CatchPanicLayer;
    /// use natter::{BoxError, Conn, Frame, Server};
    /// use tower::{ServiceBuilder, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), natter::Error> {
    /// // 100 frames per second, over all connections together.
    /// let shared = ServiceBuilder::new()
    ///     .buffer(1024)
    ///     .layer(CatchPanicLayer::new())
    ///     .rate_limit(100, Duration::from_secs(1))
    ///     .service(service_fn(|frame: Frame| async move { Ok::<_, BoxError>(frame) }));
    /// let server = Server::builder().bind("127.0.0.1:0").await?;
    /// # let handle = server.handle();
    /// tokio::spawn(server.serve(move |_conn: &Conn| shared.clone()));
    /// # handle.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn layer<T>(self, layer: T) -> ServerBuilder<Stack<T, L>, C> {
        ServerBuilder {
            conn: self.conn,
            name: self.name,
            max_connections: self.max_connections,
            drain_timeout: self.drain_timeout,
            event_capacity: self.event_capacity,
            backlog: self.backlog,
            #[cfg(feature = "tls")]
            tls: self.tls,
            layer: Stack::new(layer, self.layer),
        }
    }

    /// Checks the configuration and listens on `addr`: `IP:PORT` or
    /// `HOST:PORT` for TCP (TLS if [`tls`](Self::tls) was set), or
    /// `unix:PATH` for a Unix socket. Fails right here, naming the address,
    /// if it is in use or invalid, or with [`Error::InvalidConfig`].
    ///
    /// A Unix socket file that nothing listens on is taken over; see
    /// [`UnixListener`](crate::transport::unix::UnixListener).
    pub async fn bind(self, addr: impl fmt::Display) -> Result<Server<L, Bound, C>, Error> {
        self.validate()?;
        let addr = addr.to_string();
        #[cfg(unix)]
        if let Some(path) = addr.strip_prefix("unix:") {
            // Serving plain text where TLS was asked for would be worse
            // than not serving.
            #[cfg(feature = "tls")]
            if self.tls.is_some() {
                return Err(Error::InvalidConfig(
                    "TLS is for TCP addresses; over a Unix socket use tls::TlsListener",
                ));
            }
            let listener = crate::transport::unix::UnixListener::bind(path)?;
            return self.listen(Bound::Unix(listener));
        }
        let listener = TcpListener::bind(&addr, self.backlog)
            .await
            .map_err(|source| Error::bind(&addr, source))?;
        #[cfg(feature = "tls")]
        if let Some(acceptor) = self.tls.clone() {
            let listener = crate::transport::tls::TlsListener::new(listener, acceptor);
            return self.listen(Bound::Tls(listener));
        }
        self.listen(Bound::Tcp(listener))
    }

    /// Serves on any [`Listener`]: one bound elsewhere (a tokio
    /// `TcpListener` inherited from a supervisor), an in-memory
    /// [`channel`](crate::transport::memory::channel), or your own.
    pub fn listener<T: Listener>(self, listener: T) -> Result<Server<L, T, C>, Error> {
        self.validate()?;
        self.listen(listener)
    }

    /// Runs one connection over `io`, a stream you already have (one end of
    /// a [`tokio::io::duplex`], say), with every setting and layer of this
    /// builder, and returns when it is closed: `Err` with the last error it
    /// reported, if any. Its peer is shown as a new in-memory address.
    ///
    /// ```
    /// use natter::{Conn, Frame, Server};
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// use tower::service_fn;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let (server_end, mut client_end) = tokio::io::duplex(1024);
    /// let served = tokio::spawn(Server::builder().serve_io(server_end, |_conn: &Conn| {
    ///     service_fn(|frame: Frame| async move { Ok::<_, natter::Error>(frame) })
    /// }));
    /// client_end.write_all(b"a\nb\n").await.unwrap();
    /// client_end.shutdown().await.unwrap();
    /// let mut echoed = String::new();
    /// client_end.read_to_string(&mut echoed).await.unwrap();
    /// assert_eq!(echoed, "a\nb\n");
    /// assert!(served.await.unwrap().is_ok());
    /// # }
    /// ```
    pub async fn serve_io<T, M, S>(self, io: T, make_service: M) -> Result<(), Error>
    where
        T: Io,
        C: FrameCodec,
        M: FnOnce(&Conn) -> S,
        L: Layer<S>,
        L::Service: FrameService,
    {
        self.validate()?;
        let events = EventSender::new(self.event_capacity, self.counters());
        let connection = Connection::new(
            io,
            Addr::memory(),
            Addr::memory(),
            self.conn,
            Signals::default(),
            events,
        );
        let layer = self.layer;
        let service = connection.make_service(|conn| layer.layer(make_service(conn)))?;
        match connection.run(service, || ()).await {
            None => Ok(()),
            Some(error) => Err(error),
        }
    }

    fn counters(&self) -> Arc<Counters> {
        Arc::new(Counters::new("server", self.name.as_deref()))
    }

    fn validate(&self) -> Result<(), Error> {
        if self.max_connections == 0 {
            return Err(Error::InvalidConfig("max_connections must be at least 1"));
        }
        if self.event_capacity == 0 {
            return Err(Error::InvalidConfig("event_capacity must be at least 1"));
        }
        self.conn.validate()
    }

    fn listen<T: Listener>(self, listener: T) -> Result<Server<L, T, C>, Error> {
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            local_addr,
            connections: Mutex::default(),
            signals: Signals::default(),
            finished: Default::default(),
            events: EventSender::new(self.event_capacity, self.counters()),
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

impl<L, C: fmt::Debug> fmt::Debug for ServerBuilder<L, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("conn", &self.conn)
            .field("max_connections", &self.max_connections)
            .field("drain_timeout", &self.drain_timeout)
            .field("backlog", &self.backlog)
            .finish_non_exhaustive()
    }
}
