//! One connection: its context [`Conn`], and the driver that runs
//! stream -> codec -> layers -> `Service<Frame>` for it.
//!
//! The server and the client both hand every stream they get, over any
//! [transport](crate::transport), to the same driver; nothing else in
//! natter reads or writes one. The driver owns every per-connection
//! concern: reply order and what a failed frame puts on the wire, the read
//! idle timeout, bounded write buffering with its write timeout, closing
//! after the frame in hand, and draining on graceful shutdown.
//!
//! The driver's own parts (how it reads, writes, orders handler futures and
//! closes) are private; [`Conn`] is what a handler sees of its connection.

mod buffers;
mod close;
mod connection;
mod driver;
mod offer;
mod pipeline;
mod read;
mod state;
mod write;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Waker;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::codec::Encoder;
use tokio_util::sync::CancellationToken;
use tower::Service;

pub(crate) use self::connection::Connection;
pub(crate) use self::driver::Signals;
use self::state::LocalState;
pub(crate) use self::state::SharedState;
use crate::codec::FrameCodec;
use crate::transport::Addr;
use crate::{BoxError, DelimiterCodec, Error, Frame, IntoReply};

/// A service natter can run on a connection: it takes [`Frame`]s, answers
/// with anything [`IntoReply`], fails with anything that converts into a
/// [`BoxError`], and can move to the connection's task.
///
/// Every such `tower::Service` is one; there is nothing to implement.
pub trait FrameService:
    Service<
        Frame,
        Response: IntoReply + Send + 'static,
        Error: Into<BoxError>,
        Future: Send + 'static,
    > + Send
    + 'static
{
}

impl<S> FrameService for S where
    S: Service<
            Frame,
            Response: IntoReply + Send + 'static,
            Error: Into<BoxError>,
            Future: Send + 'static,
        > + Send
        + 'static
{
}

/// The per-connection settings of [`ServerBuilder`](crate::ServerBuilder)
/// and [`ClientBuilder`](crate::ClientBuilder), written once: both
/// builders keep a `conn: ConnConfig` field.
macro_rules! connection_options {
    ($on_error_example:literal) => {
        /// What a frame that fails puts on the wire: the reply this hook
        /// returns, in the failed frame's place, or (`None`, and without a
        /// hook) nothing, and the connection closes after the replies
        /// before it. Either way the error is reported as an
        /// [`Event`](crate::Event).
        ///
        /// A peer that pipelines requests matches replies to requests by
        /// position, so a failed frame must be answered or end the
        /// connection: writing nothing and carrying on would hand every
        /// later reply to the request before it.
        ///
        /// | what failed | error | default | with a hook |
        /// |---|---|---|---|
        /// | the handler, or any tower layer around it (`Timeout`, `LoadShed`, `RateLimit`...) | [`Handler`](crate::Error::Handler) (find the layer's error with [`downcast_ref`](crate::Error::downcast_ref)), or the natter error it returned | close | its reply, or close |
        /// | the handler panicked | [`Panic`](crate::Error::Panic) | close | its reply, or close |
        /// | the handler ran past `handler_timeout` or a [`HandlerTimeoutLayer`](crate::layer::HandlerTimeoutLayer) | [`HandlerTimeout`](crate::Error::HandlerTimeout) | close | its reply, or close |
        /// | the reply cannot be encoded (delimiter inside, too long) | [`DelimiterInFrame`](crate::Error::DelimiterInFrame), [`FrameTooLongToSend`](crate::Error::FrameTooLongToSend), [`Encode`](crate::Error::Encode) | close | its reply, or close |
        /// | a received frame is over the codec's limit | [`FrameTooLong`](crate::Error::FrameTooLong) | close | its reply, or close (the codec skips the frame) |
        /// | the hook's own reply cannot be encoded, or the hook panics | as above | close | close |
        /// | other bytes the codec cannot decode | [`Decode`](crate::Error::Decode) | close | close |
        /// | the service's `poll_ready` fails | as returned | close | close |
        /// | idle, write timeout, the stream fails | [`IdleTimeout`](crate::Error::IdleTimeout), [`WriteTimeout`](crate::Error::WriteTimeout), [`Io`](crate::Error::Io) | close | close |
        ///
        /// "Close" means: the frames before the failed one are answered,
        /// no later frame is (not even one already being handled), and the
        /// connection closes. What the handler returns decides nothing else:
        /// `Ok(())` or `Ok(None)` is a deliberate "no reply" and the
        /// connection carries on.
        ///
        #[doc = $on_error_example]
        pub fn on_error<F>(mut self, hook: F) -> Self
        where
            F: Fn(&crate::Error, &crate::Conn) -> Option<crate::Frame> + Send + Sync + 'static,
        {
            self.conn.on_error = Some(crate::conn::ErrorHook(std::sync::Arc::new(hook)));
            self
        }

        /// Closes a connection that completes no frame for this long,
        /// counted from connect or the last complete frame (a partial frame
        /// does not count; the clock stops while a handler for the
        /// connection runs). `None` turns it off. On a client the clock
        /// runs while requests wait for their answers: it is how a client
        /// notices a server that went silent (a partition, a frozen
        /// process), and the waiting requests then fail with
        /// [`Error::Closed`](crate::Error::Closed). Set it above the
        /// slowest answer you expect.
        ///
        /// Default: 5 minutes on a server, where a peer that connects and
        /// says nothing, trickles a frame that never ends, or vanished
        /// without a FIN would otherwise hold its connection and slot
        /// forever; off on a client, whose server may rightly stay silent
        /// while the client sends.
        pub fn idle_timeout(mut self, timeout: impl Into<Option<std::time::Duration>>) -> Self {
            self.conn.idle_timeout = timeout.into();
            self
        }

        /// Closes a connection whose peer has not read what we wrote for
        /// this long (default 30 s; `None` turns it off).
        pub fn write_timeout(mut self, timeout: impl Into<Option<std::time::Duration>>) -> Self {
            self.conn.write_timeout = timeout.into();
            self
        }

        /// Bytes waiting to be written above which a connection stops
        /// reading and handling frames until the peer reads (default
        /// 64 KiB). Bounds the memory a peer that does not read can make us
        /// hold. A [`ClientService`](crate::ClientService)'s `poll_ready`
        /// also waits while this many bytes of requests are queued and
        /// not yet taken by the writer; its connection goes on reading
        /// answers whatever it has to write (they are bounded by
        /// `max_pending`).
        pub fn write_buffer(mut self, high_water: usize) -> Self {
            self.conn.write_buffer = high_water;
            self
        }

        /// Bounds how long one frame may take (default 60 s; `None` turns
        /// it off): its handler from its first `Pending`, and before that
        /// the wait for the service to be ready (a concurrency or rate
        /// limit held elsewhere). Past it the frame fails with
        /// [`Error::HandlerTimeout`](crate::Error::HandlerTimeout) and, as
        /// every failed frame, is answered by the
        /// [`on_error`](Self::on_error) hook or closes the connection after
        /// the replies before it. Without it a handler that never returns,
        /// or a service never ready, holds its connection and a connection
        /// slot until shutdown whatever the peer does: the idle clock stops
        /// while a frame is in hand.
        pub fn handler_timeout(mut self, timeout: impl Into<Option<std::time::Duration>>) -> Self {
            self.conn.handler_timeout = timeout.into();
            self
        }

        /// How many frames of one connection may be handled at once
        /// (default 1). Replies are written in frame order whatever the
        /// value.
        pub fn max_in_flight(mut self, frames: usize) -> Self {
            self.conn.max_in_flight = frames;
            self
        }

        /// How many frames sent through [`Conn::send`](crate::Conn::send)
        /// may wait for the writer before the sender waits (default 64).
        /// A [`ClientService`](crate::ClientService)'s requests do not go
        /// through this queue: `max_pending` bounds them, and
        /// [`write_buffer`](Self::write_buffer) their bytes.
        pub fn send_queue(mut self, frames: usize) -> Self {
            self.conn.send_queue = frames;
            self
        }

        /// How long a closing connection keeps reading and discarding what
        /// the peer still sends, so the peer receives our last frames and a
        /// FIN rather than a reset (default 500 ms).
        pub fn linger(mut self, linger: std::time::Duration) -> Self {
            self.conn.linger = linger;
            self
        }

        /// Shared state every connection's [`Conn::state`](crate::Conn::state)
        /// returns, by type (one value per type; setting a type again
        /// replaces it). The value is stored under its own type: give it a
        /// `T` and read it with `state::<T>()` (an `Arc<T>` given here would
        /// be found as `state::<Arc<T>>()`).
        pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
            self.conn.state.insert(value);
            self
        }
    };
}

pub(crate) use connection_options;

/// What an [`on_error`](crate::ServerBuilder::on_error) hook is.
type HookFn = dyn Fn(&Error, &Conn) -> Option<Frame> + Send + Sync;

/// The hook of [`on_error`](crate::ServerBuilder::on_error).
#[derive(Clone)]
pub(crate) struct ErrorHook(pub(crate) Arc<HookFn>);

impl fmt::Debug for ErrorHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ErrorHook")
    }
}

/// The settings of one connection, shared by the server and client
/// builders.
#[derive(Debug, Clone)]
pub(crate) struct ConnConfig<C = DelimiterCodec> {
    pub(crate) codec: C,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) write_timeout: Option<Duration>,
    /// The longest one frame's handler may run.
    pub(crate) handler_timeout: Option<Duration>,
    /// Stop reading and handling while this many bytes wait to be written.
    pub(crate) write_buffer: usize,
    pub(crate) max_in_flight: usize,
    /// Frames sent through `Conn` that may wait for the writer.
    pub(crate) send_queue: usize,
    /// How long a closing connection reads and discards what the peer
    /// still sends, so that the peer gets our last replies and a FIN rather
    /// than a reset.
    pub(crate) linger: Duration,
    /// User state shared by every connection.
    pub(crate) state: SharedState,
    /// What a failed frame is answered with.
    pub(crate) on_error: Option<ErrorHook>,
}

/// Defaults of [`ConnConfig`], documented on the builders.
pub(crate) const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(60);
/// A server's idle timeout (a client has none by default).
pub(crate) const DEFAULT_SERVER_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
pub(crate) const DEFAULT_WRITE_BUFFER: usize = 64 * 1024;
pub(crate) const DEFAULT_SEND_QUEUE: usize = 64;
pub(crate) const DEFAULT_LINGER: Duration = Duration::from_millis(500);

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            codec: DelimiterCodec::lines(),
            idle_timeout: None,
            write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
            handler_timeout: Some(DEFAULT_HANDLER_TIMEOUT),
            write_buffer: DEFAULT_WRITE_BUFFER,
            max_in_flight: 1,
            send_queue: DEFAULT_SEND_QUEUE,
            linger: DEFAULT_LINGER,
            state: SharedState::default(),
            on_error: None,
        }
    }
}

impl<C> ConnConfig<C> {
    /// The same settings with another codec.
    pub(crate) fn with_codec<D>(self, codec: D) -> ConnConfig<D> {
        ConnConfig {
            codec,
            idle_timeout: self.idle_timeout,
            write_timeout: self.write_timeout,
            handler_timeout: self.handler_timeout,
            write_buffer: self.write_buffer,
            max_in_flight: self.max_in_flight,
            send_queue: self.send_queue,
            linger: self.linger,
            state: self.state,
            on_error: self.on_error,
        }
    }

    /// Refuses settings that cannot work, the same way for servers and
    /// clients.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.max_in_flight == 0 {
            return Err(Error::InvalidConfig("max_in_flight must be at least 1"));
        }
        if self.write_buffer == 0 {
            return Err(Error::InvalidConfig("write_buffer must be at least 1 byte"));
        }
        if self.send_queue == 0 {
            return Err(Error::InvalidConfig("send_queue must be at least 1 frame"));
        }
        if self.idle_timeout == Some(Duration::ZERO)
            || self.write_timeout == Some(Duration::ZERO)
            || self.handler_timeout == Some(Duration::ZERO)
        {
            return Err(Error::InvalidConfig(
                "a timeout must be longer than zero; use None to turn it off",
            ));
        }
        Ok(())
    }
}

/// Encodes frames sent through a [`Conn`] with the connection's codec,
/// whatever its type.
trait EncodeFrame: Send + Sync {
    fn encode_frame(&self, frame: Frame, dst: &mut BytesMut) -> Result<(), Error>;
}

impl<C: FrameCodec> EncodeFrame for C {
    fn encode_frame(&self, frame: Frame, dst: &mut BytesMut) -> Result<(), Error> {
        self.clone()
            .encode(frame, dst)
            .map_err(|error| Error::from_encode(error.into()))
    }
}

/// Encodes frames with a codec of its own, whatever its type: a
/// [`ClientService`](crate::ClientService) link's, which encodes each
/// request straight into its queue.
pub(crate) trait EncodeInto: Send {
    /// Appends `frame` to `dst`; on failure `dst` is as it was.
    fn encode_into(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), Error>;
}

impl<C: FrameCodec> EncodeInto for C {
    #[inline]
    fn encode_into(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), Error> {
        let start = dst.len();
        self.encode(frame, dst).map_err(|error| {
            dst.truncate(start);
            Error::from_encode(error.into())
        })
    }
}

/// Bytes to write that do not go through the [`Conn`] send queue: the
/// requests of a [`ClientService`](crate::ClientService), which are queued
/// (with their waiters) under a lock of its own, already encoded.
pub(crate) trait Requests: Send + Sync {
    /// Called at the start of each pass of the driver. With `room` in the
    /// write buffer, hands everything queued to `put` (at most one call)
    /// and returns how many frames that was, and keeps `waker`, to wake it
    /// when more is queued.
    fn take(&self, waker: &Waker, room: bool, put: &mut dyn FnMut(&[u8])) -> u64;

    /// The frames just read, in order, each the answer to the oldest
    /// request still waiting: takes them all out of `answers`. Fails when
    /// one answers no request (the server is out of step): the frames
    /// before it are answered, the rest dropped.
    fn answer(&self, answers: &mut Vec<Frame>) -> Result<(), Error>;
}

/// Numbers connections, process-wide.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The context of one connection: its addresses, a way to send frames on it
/// from anywhere, and a way to close it.
///
/// A service factory gets one for each connection; clone it freely (into the
/// service, into other tasks). Shared user state goes in the factory
/// closure (an `Arc` it clones into each service), per-connection state in
/// the service the factory builds: both are plain Rust ownership.
///
/// ```no_run
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use natter::{Conn, Frame, Server};
/// use tower::service_fn;
///
/// # async fn demo() -> Result<(), natter::Error> {
/// let total = Arc::new(AtomicU64::new(0)); // shared by every connection
/// let server = Server::builder().bind("127.0.0.1:0").await?;
/// server
///     .serve(move |conn: &Conn| {
///         let total = total.clone();
///         let conn = conn.clone();
///         let mut mine = 0u64; // this connection's own state
///         service_fn(move |frame: Frame| {
///             mine += 1;
///             let n = total.fetch_add(1, Ordering::Relaxed) + 1;
///             let conn = conn.clone();
///             async move {
///                 if frame == "bye" {
///                     conn.close(); // after this reply is written
///                 }
///                 Ok::<_, natter::Error>(format!("{} says: frame {mine} here, {n} in all", conn.peer_addr()))
///             }
///         })
///     })
///     .await
/// # }
/// ```
#[derive(Clone)]
pub struct Conn {
    shared: Arc<Shared>,
}

struct Shared {
    id: u64,
    peer: Addr,
    local: Addr,
    transport: &'static str,
    encoder: Box<dyn EncodeFrame>,
    outbound: mpsc::Sender<Bytes>,
    /// Frames queued through `send`: a handler's frames go before its
    /// reply, and this tells the driver, without looking into the queue
    /// after every frame, whether there are any.
    sent: AtomicU64,
    close: CancellationToken,
    /// Set with `close`; read once per frame without a lock.
    closing: AtomicBool,
    /// Cancelled when the connection reads no more frames (for whatever
    /// reason): no answer can come after that.
    done_reading: CancellationToken,
    closed: CancellationToken,
    state: SharedState,
    local_state: LocalState,
}

/// The driver's side of a [`Conn`]: the frames sent through it, and a
/// client's requests.
pub(crate) struct Outbound {
    pub(crate) receiver: mpsc::Receiver<Bytes>,
    pub(crate) requests: Option<Arc<dyn Requests>>,
}

impl Conn {
    pub(crate) fn new<C: FrameCodec>(
        peer: Addr,
        local: Addr,
        transport: &'static str,
        config: &ConnConfig<C>,
    ) -> (Conn, Outbound) {
        let (sender, receiver) = mpsc::channel(config.send_queue.max(1));
        let conn = Conn {
            shared: Arc::new(Shared {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                peer,
                local,
                transport,
                encoder: Box::new(config.codec.clone()),
                outbound: sender,
                sent: AtomicU64::new(0),
                close: CancellationToken::new(),
                closing: AtomicBool::new(false),
                done_reading: CancellationToken::new(),
                closed: CancellationToken::new(),
                state: config.state.clone(),
                local_state: LocalState::default(),
            }),
        };
        (
            conn,
            Outbound {
                receiver,
                requests: None,
            },
        )
    }

    /// The remote address.
    pub fn peer_addr(&self) -> Addr {
        self.shared.peer.clone()
    }

    pub(crate) fn peer_addr_ref(&self) -> &Addr {
        &self.shared.peer
    }

    /// The local address.
    pub fn local_addr(&self) -> Addr {
        self.shared.local.clone()
    }

    /// A number that no other connection of this process has, as the
    /// connection's tracing span shows it.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The transport: `"tcp"`, `"unix"`, `"tls"`, `"memory"`...
    pub fn transport(&self) -> &'static str {
        self.shared.transport
    }

    /// Sends `frame` on this connection, encoded by the connection's codec
    /// (which appends the delimiter).
    ///
    /// A frame sent this way is not the answer to any request: a peer that
    /// pipelines requests and matches answers by position (such as
    /// [`ClientService`](crate::ClientService)) would take it for one.
    ///
    /// Returns once the frame is queued for writing; waits while the queue
    /// is full, that is while the peer is not reading. Frames sent by a
    /// handler are written before that handler's reply. Fails with the
    /// codec's error if the frame cannot be encoded (with
    /// [`DelimiterCodec`]: [`Error::DelimiterInFrame`] or
    /// [`Error::FrameTooLongToSend`]), and with [`Error::Closed`] once the
    /// connection is closed.
    pub async fn send(&self, frame: impl AsRef<[u8]>) -> Result<(), Error> {
        let bytes = self.encode(Frame::copy_from_slice(frame.as_ref()))?;
        self.send_bytes(bytes).await
    }

    /// `frame`, encoded by the connection's codec.
    pub(crate) fn encode(&self, frame: Frame) -> Result<Bytes, Error> {
        let mut bytes = BytesMut::new();
        self.shared.encoder.encode_frame(frame, &mut bytes)?;
        Ok(bytes.freeze())
    }

    /// Sends `value` as a compact JSON frame. See [`send`](Self::send).
    pub async fn send_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        self.send(Frame::from_json(value)?).await
    }

    /// Sends `item` encoded by `encoder`, written to the socket exactly as
    /// the encoder produced it (the encoder does its own framing). This is
    /// the original framework's `SetWriteFunc`: any tokio-util `Encoder`.
    ///
    /// ```no_run
    /// # async fn demo(conn: natter::Conn) -> Result<(), natter::Error> {
    /// use natter::JsonCodec;
    /// let mut json = JsonCodec::<()>::new();
    /// conn.send_with(&mut json, serde_json::json!({"hello": "world"})).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_with<E, T>(&self, encoder: &mut E, item: T) -> Result<(), Error>
    where
        E: Encoder<T>,
        E::Error: Into<BoxError>,
    {
        let mut bytes = BytesMut::new();
        encoder
            .encode(item, &mut bytes)
            .map_err(|error| Error::from_encode(error.into()))?;
        self.send_bytes(bytes.freeze()).await
    }

    async fn send_bytes(&self, bytes: Bytes) -> Result<(), Error> {
        self.shared
            .outbound
            .send(bytes)
            .await
            .map_err(|_| Error::Closed)?;
        self.shared.sent.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// How many frames were queued through `send` so far.
    #[inline]
    pub(crate) fn sent(&self) -> u64 {
        self.shared.sent.load(Ordering::Acquire)
    }

    /// The shared state of type `T` given to the builder's `state` (the
    /// original framework's `Addon()`), if there is one.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use natter::{Conn, Server};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), natter::Error> {
    /// struct Stats { frames: AtomicU64 }
    /// let server = Server::builder()
    ///     .state(Stats { frames: AtomicU64::new(0) })
    ///     .bind("127.0.0.1:0")
    ///     .await?;
    /// let count = |conn: &Conn| {
    ///     let stats = conn.state::<Stats>().expect("given to the builder");
    ///     stats.frames.fetch_add(1, Ordering::Relaxed)
    /// };
    /// # let _ = (server, count);
    /// # Ok(()) }
    /// ```
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.shared.state.get()
    }

    /// Stores `value` as this connection's own state of type `T`, returning
    /// the one it replaces. Any clone of this `Conn` sees it.
    pub fn set_local<T: Send + Sync + 'static>(&self, value: T) -> Option<Arc<T>> {
        self.shared.local_state.insert(value)
    }

    /// This connection's own state of type `T`, if [`set_local`](Self::set_local) stored one.
    pub fn local<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.shared.local_state.get()
    }

    /// Closes the connection once the frames in hand are handled and every
    /// reply and queued frame is written. Never cuts a running handler
    /// short; no new frame is read after this.
    pub fn close(&self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.close.cancel();
    }

    /// Whether [`close`](Self::close) was called or the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.close_requested() || self.shared.closed.is_cancelled()
    }

    #[inline]
    pub(crate) fn close_requested(&self) -> bool {
        self.shared.closing.load(Ordering::Acquire)
    }

    /// Waits until the connection is fully closed and its task finished.
    pub async fn closed(&self) {
        self.shared.closed.cancelled().await
    }

    /// Whether `self` and `other` are handles of the same connection.
    pub(crate) fn same(&self, other: &Conn) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    pub(crate) fn close_token(&self) -> &CancellationToken {
        &self.shared.close
    }

    /// Marks that no frame will be read any more.
    pub(crate) fn mark_done_reading(&self) {
        self.shared.done_reading.cancel();
    }

    /// Waits until the connection reads no more frames.
    pub(crate) async fn done_reading(&self) {
        self.shared.done_reading.cancelled().await
    }

    pub(crate) fn mark_closed(&self) {
        self.shared.done_reading.cancel();
        self.shared.closed.cancel();
    }
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.shared.id)
            .field("transport", &self.shared.transport)
            .field("peer", &self.shared.peer)
            .field("local", &self.shared.local)
            .field("closed", &self.is_closed())
            .finish()
    }
}
