use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tower::Layer;
use tower::layer::util::{Identity, Stack};
use tracing::Instrument;

use super::dial::Dialer;
use super::{Backoff, Client, ClientService, Discard};
use crate::conn::{Conn, ConnConfig, Connection, Signals};
use crate::event::{DEFAULT_EVENT_CAPACITY, EventSender};
use crate::{Error, FrameService};

/// How long connecting may take by default.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many requests a [`ClientService`] may have sent and not had
/// answered, by default.
pub(crate) const DEFAULT_MAX_PENDING: usize = 1024;

/// Configures a [`Client`] or [`ClientService`], then connects.
///
/// ```no_run
/// use std::time::Duration;
/// use natter::{Client, Conn, Frame};
/// use tower::service_fn;
///
/// # async fn demo() -> Result<(), natter::Error> {
/// // Print whatever the server sends on its own.
/// let client = Client::builder()
///     .connect_timeout(Duration::from_secs(2))
///     .local_addr("127.0.0.1:0".parse().unwrap())
///     .connect_with("127.0.0.1:7878", |_conn: &Conn| {
///         service_fn(|frame: Frame| async move {
///             println!("server says {frame:?}");
///             Ok::<(), natter::Error>(())
///         })
///     })
///     .await?;
/// client.send("hello").await?;
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until it connects"]
pub struct ClientBuilder<L> {
    conn: ConnConfig,
    connect_timeout: Duration,
    local_addr: Option<SocketAddr>,
    event_capacity: usize,
    reconnect: Option<Backoff>,
    max_pending: usize,
    layer: L,
}

impl ClientBuilder<Identity> {
    pub(super) fn new() -> Self {
        ClientBuilder {
            conn: ConnConfig::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            local_addr: None,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            reconnect: None,
            max_pending: DEFAULT_MAX_PENDING,
            layer: Identity::new(),
        }
    }
}

impl<L> ClientBuilder<L> {
    crate::conn::connection_options!();

    /// Gives up connecting after this long (default 10 s) with
    /// [`Error::ConnectTimeout`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Binds our end to this address before connecting (the original
    /// client could not choose one).
    pub fn local_addr(mut self, addr: SocketAddr) -> Self {
        self.local_addr = Some(addr);
        self
    }

    /// How many events a slow reader may fall behind (default 1024).
    pub fn event_capacity(mut self, events: usize) -> Self {
        self.event_capacity = events;
        self
    }

    /// Makes a [`ClientService`] redial with `backoff` when its connection
    /// is lost (off by default). Requests waiting when the connection
    /// dropped fail (they may or may not have been answered, so they are
    /// never sent again); new requests wait until the connection is back.
    pub fn reconnect(mut self, backoff: Backoff) -> Self {
        self.reconnect = Some(backoff);
        self
    }

    /// How many requests a [`ClientService`] may have sent and not had
    /// answered (default 1024). At the limit `poll_ready` waits until an
    /// answer comes or the connection closes: a server that reads requests
    /// but never answers cannot make the client queue without bound. A
    /// request whose caller gave up (a timeout layer dropped its future)
    /// keeps its place until its late answer comes, so it counts too.
    pub fn max_pending(mut self, requests: usize) -> Self {
        self.max_pending = requests;
        self
    }

    /// Adds a tower layer around the handler of frames from the server
    /// (see [`connect_with`](Self::connect_with)).
    pub fn layer<T>(self, layer: T) -> ClientBuilder<Stack<T, L>> {
        ClientBuilder {
            conn: self.conn,
            connect_timeout: self.connect_timeout,
            local_addr: self.local_addr,
            event_capacity: self.event_capacity,
            reconnect: self.reconnect,
            max_pending: self.max_pending,
            layer: Stack::new(layer, self.layer),
        }
    }

    /// Connects; frames the server sends are read and dropped.
    pub async fn connect<A>(self, addr: A) -> Result<Client, Error>
    where
        A: fmt::Display,
        L: Layer<Discard>,
        L::Service: FrameService,
    {
        self.connect_with(addr, |_: &Conn| Discard).await
    }

    /// Connects, and hands every frame the server sends to the service
    /// `make_service` builds for this connection (wrapped in the builder's
    /// layers). Its responses are written back, as on a server.
    pub async fn connect_with<A, M, S>(self, addr: A, make_service: M) -> Result<Client, Error>
    where
        A: fmt::Display,
        M: FnOnce(&Conn) -> S,
        L: Layer<S>,
        L::Service: FrameService,
    {
        let stream = self.dialer(&addr)?.dial().await?;
        let events = EventSender::new(self.event_capacity);
        let signals = Signals::default();
        let connection = Connection::new(stream, self.conn, signals.clone(), events.clone());
        let conn = connection.conn().clone();
        let service = self.layer.layer(make_service(&conn));
        let span = tracing::info_span!("client", peer = %conn.peer_addr());
        let task = tokio::spawn(connection.serve(service).run(|| ()).instrument(span));
        Ok(Client {
            conn,
            task: Some(task),
            events,
            signals,
        })
    }

    /// Connects in request/response mode: see [`ClientService`].
    pub async fn connect_service<A: fmt::Display>(self, addr: A) -> Result<ClientService, Error> {
        if self.max_pending == 0 {
            return Err(Error::InvalidConfig("max_pending must be at least 1"));
        }
        let dialer = self.dialer(&addr)?;
        let stream = dialer.dial().await?;
        let events = EventSender::new(self.event_capacity);
        let limits = (self.conn, self.max_pending);
        Ok(ClientService::start(stream, dialer, self.reconnect, limits, events).await)
    }

    fn dialer(&self, addr: &impl fmt::Display) -> Result<Dialer, Error> {
        if self.conn.max_in_flight == 0 || self.conn.write_buffer == 0 {
            return Err(Error::InvalidConfig(
                "max_in_flight and write_buffer must be at least 1",
            ));
        }
        Ok(Dialer::new(addr, self.local_addr, self.connect_timeout))
    }
}

impl<L> fmt::Debug for ClientBuilder<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("conn", &self.conn)
            .field("connect_timeout", &self.connect_timeout)
            .field("local_addr", &self.local_addr)
            .field("reconnect", &self.reconnect)
            .field("max_pending", &self.max_pending)
            .finish_non_exhaustive()
    }
}
