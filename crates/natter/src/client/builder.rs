use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tower::Layer;
use tower::layer::util::{Identity, Stack};

use super::dial::{DialOptions, Target, dial_within};
use super::{Backoff, Client, ClientService, Discard};
use crate::codec::FrameCodec;
use crate::conn::{Conn, ConnConfig, Connection, Signals};
use crate::event::{DEFAULT_EVENT_CAPACITY, EventKind, EventSender};
use crate::stats::Counters;
use crate::transport::{Addr, Dial};
use crate::{DelimiterCodec, Error, FrameService};

/// How long connecting may take by default.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many requests a [`ClientService`] may have sent and not had
/// answered, by default.
pub(crate) const DEFAULT_MAX_PENDING: usize = 1024;

/// Configures a [`Client`] or [`ClientService`], then connects.
///
/// Every `connect` method takes a [`Target`]: `"HOST:PORT"`, a
/// `SocketAddr`, `"unix:PATH"`, or any [`Dial`](crate::transport::Dial).
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
pub struct ClientBuilder<L, C = DelimiterCodec> {
    conn: ConnConfig<C>,
    name: Option<String>,
    connect_timeout: Duration,
    options: DialOptions,
    event_capacity: usize,
    reconnect: Option<Backoff>,
    max_pending: usize,
    layer: L,
}

impl ClientBuilder<Identity> {
    pub(super) fn new() -> Self {
        ClientBuilder {
            conn: ConnConfig::default(),
            name: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            options: DialOptions::default(),
            event_capacity: DEFAULT_EVENT_CAPACITY,
            reconnect: None,
            max_pending: DEFAULT_MAX_PENDING,
            layer: Identity::new(),
        }
    }
}

impl<L, C> ClientBuilder<L, C> {
    crate::conn::connection_options!(
        r#"On a client, the hook answers frames the server sent that the handler
of [`connect_with`](Self::connect_with) failed on:

```no_run
use natter::{Client, Conn, Error, Frame};
use tower::service_fn;

# async fn demo() -> Result<(), natter::Error> {
let client = Client::builder()
    .on_error(|_: &Error, _conn: &Conn| Some(Frame::from("NACK")))
    .connect_with("127.0.0.1:7878", |_conn: &Conn| {
        service_fn(|frame: Frame| async move {
            let n: u64 = frame.json()?;
            Ok::<_, natter::Error>(format!("ACK {n}"))
        })
    })
    .await?;
# drop(client); Ok(()) }
```"#
    );

    /// The framing (default: [`DelimiterCodec::lines`], 64 KiB frames);
    /// any [`FrameCodec`], as on the server.
    pub fn codec<D: FrameCodec>(self, codec: D) -> ClientBuilder<L, D> {
        ClientBuilder {
            conn: self.conn.with_codec(codec),
            name: self.name,
            connect_timeout: self.connect_timeout,
            options: self.options,
            event_capacity: self.event_capacity,
            reconnect: self.reconnect,
            max_pending: self.max_pending,
            layer: self.layer,
        }
    }

    /// Gives up connecting after this long (default 10 s) with
    /// [`Error::ConnectTimeout`]. It bounds the whole dial, a TLS handshake
    /// included.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// For TCP: binds our end to this address before connecting (the
    /// original client could not choose one).
    pub fn local_addr(mut self, addr: SocketAddr) -> Self {
        self.options.local_addr = Some(addr);
        self
    }

    /// Speaks TLS to `HOST:PORT` addresses (see
    /// [`TlsConnector`](crate::transport::tls::TlsConnector) for trust anchors and the
    /// server name).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, connector: crate::transport::tls::TlsConnector) -> Self {
        self.options.tls = Some(connector);
        self
    }

    /// Names the client in its metrics: every series carries
    /// `client="NAME"` (see [`stats`](crate::stats)).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How many events a slow reader may fall behind (default 1024).
    pub fn event_capacity(mut self, events: usize) -> Self {
        self.event_capacity = events;
        self
    }

    /// Makes a [`ClientService`] dial again with `backoff` when its
    /// connection is lost, and when the first dial fails (off by default).
    ///
    /// With it, [`connect_service`](Self::connect_service) succeeds even
    /// when the server is not up yet: it returns a service whose
    /// `poll_ready` waits until a dial succeeds (each failed attempt is an
    /// [`Event`](crate::Event)), so a client may start before its server.
    /// Requests waiting when a connection dropped fail (they may or may not
    /// have been answered, so they are never sent again); new requests wait
    /// until the connection is back. Bound that wait with a timeout layer.
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
    pub fn layer<T>(self, layer: T) -> ClientBuilder<Stack<T, L>, C> {
        ClientBuilder {
            conn: self.conn,
            name: self.name,
            connect_timeout: self.connect_timeout,
            options: self.options,
            event_capacity: self.event_capacity,
            reconnect: self.reconnect,
            max_pending: self.max_pending,
            layer: Stack::new(layer, self.layer),
        }
    }

    /// Connects; frames the server sends are read and dropped.
    pub async fn connect(self, target: impl Target) -> Result<Client, Error>
    where
        C: FrameCodec,
        L: Layer<Discard>,
        L::Service: FrameService,
    {
        self.connect_with(target, |_: &Conn| Discard).await
    }

    /// Connects, and hands every frame the server sends to the service
    /// `make_service` builds for this connection (wrapped in the builder's
    /// layers). Its responses are written back, and its failures follow
    /// [`on_error`](Self::on_error), as on a server.
    pub async fn connect_with<M, S>(
        self,
        target: impl Target,
        make_service: M,
    ) -> Result<Client, Error>
    where
        C: FrameCodec,
        M: FnOnce(&Conn) -> S,
        L: Layer<S>,
        L::Service: FrameService,
    {
        self.validate()?;
        let dialer = target.into_dialer(&self.options)?;
        let dialled = dial_within(&dialer, self.connect_timeout).await?;
        let events = EventSender::new(self.event_capacity, self.counters());
        let signals = Signals::default();
        let connection = Connection::new(
            dialled.io,
            dialled.peer,
            dialled.local,
            self.conn,
            signals.clone(),
            events.clone(),
        );
        let layer = self.layer;
        let service = connection.make_service(|conn| layer.layer(make_service(conn)))?;
        let conn = connection.conn().clone();
        let ending = events.clone();
        let task = tokio::spawn(async move {
            let last_error = connection.run(service, || ()).await;
            // After the `Closed` event: the streams end behind it.
            ending.end();
            last_error
        });
        Ok(Client::new(conn, task, events, signals))
    }

    /// Connects in request/response mode: see [`ClientService`].
    pub async fn connect_service(self, target: impl Target) -> Result<ClientService, Error>
    where
        C: FrameCodec,
    {
        self.validate()?;
        if self.max_pending == 0 {
            return Err(Error::InvalidConfig("max_pending must be at least 1"));
        }
        let dialer = target.into_dialer(&self.options)?;
        let events = EventSender::new(self.event_capacity, self.counters());
        let first = match dial_within(&dialer, self.connect_timeout).await {
            Ok(dialled) => Some(dialled),
            // With reconnect, a server that is not up yet is dialled again.
            Err(error) if self.reconnect.is_some() => {
                let error = EventKind::Error {
                    error,
                    closing: false,
                };
                events.send(&Addr::from_target(&dialer.target()), error);
                None
            }
            Err(error) => return Err(error),
        };
        let settings = super::service::Settings {
            config: self.conn,
            connect_timeout: self.connect_timeout,
            backoff: self.reconnect,
            max_pending: self.max_pending,
        };
        Ok(ClientService::start(dialer, first, settings, events).await)
    }
}

impl<L, C> ClientBuilder<L, C> {
    fn validate(&self) -> Result<(), Error> {
        if self.event_capacity == 0 {
            return Err(Error::InvalidConfig("event_capacity must be at least 1"));
        }
        self.conn.validate()
    }

    fn counters(&self) -> std::sync::Arc<Counters> {
        std::sync::Arc::new(Counters::new("client", self.name.as_deref()))
    }
}

impl<L, C: fmt::Debug> fmt::Debug for ClientBuilder<L, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("conn", &self.conn)
            .field("connect_timeout", &self.connect_timeout)
            .field("options", &self.options)
            .field("reconnect", &self.reconnect)
            .field("max_pending", &self.max_pending)
            .finish_non_exhaustive()
    }
}
