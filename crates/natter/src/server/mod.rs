//! The server: accepts connections and runs each one as a service pipeline.
//!
//! [`Server::builder`] reads as a sentence: codec, per-connection limits,
//! layers, then [`bind`](ServerBuilder::bind), which fails right there on a
//! bad configuration or an address in use. [`Server::serve`] runs until a
//! [`ServerHandle`] shuts it down (or
//! [`serve_with_shutdown`](Server::serve_with_shutdown)'s signal fires).
//!
//! The server accepts from any [`Listener`]: TCP, Unix sockets, TLS, in
//! memory, or one of yours (see [`transport`](crate::transport)).
//!
//! Graceful shutdown happens here, in this order: the listener is dropped
//! first (a listener left open keeps completing handshakes in the kernel,
//! and those connections would hang; a Unix listener removes its socket
//! file), every connection reads what its stream already holds, answers it
//! and closes, and `serve` returns when the last one is gone. Connections
//! still busy after the drain timeout are cut.

mod builder;
mod handle;

use std::collections::HashMap;
use std::future::{Future, pending};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tower::Layer;

pub use self::builder::ServerBuilder;
pub use self::handle::ServerHandle;
use crate::codec::FrameCodec;
use crate::conn::{Conn, ConnConfig, Connection, Signals};
use crate::event::{EventKind, EventSender, Events};
use crate::transport::{Addr, Bound, Listener};
use crate::{DelimiterCodec, Error, FrameService};

/// A bound server, ready to [`serve`](Server::serve).
///
/// ```no_run
/// use natter::{Conn, Frame, Server};
/// use tower::service_fn;
///
/// # async fn demo() -> Result<(), natter::Error> {
/// let server = Server::builder().bind("127.0.0.1:7878").await?;
/// println!("listening on {}", server.local_addr());
/// server
///     .serve_with_shutdown(
///         |_conn: &Conn| service_fn(|frame: Frame| async move { Ok::<_, natter::Error>(frame) }),
///         async { tokio::signal::ctrl_c().await.ok(); },
///     )
///     .await
/// # }
/// ```
///
/// `L` is the stack of layers, `T` the [`Listener`] (by default the one
/// [`bind`](ServerBuilder::bind) makes), `C` the codec.
pub struct Server<L, T = Bound, C = DelimiterCodec> {
    listener: T,
    layer: L,
    config: Config<C>,
    shared: Arc<Shared>,
}

/// Server-wide settings, from the builder.
#[derive(Debug, Clone)]
struct Config<C> {
    conn: ConnConfig<C>,
    max_connections: usize,
    drain_timeout: Duration,
}

/// What the server and its handles share.
struct Shared {
    local_addr: Addr,
    connections: Mutex<HashMap<Addr, Conn>>,
    signals: Signals,
    /// Cancelled when `serve` has returned (or will never run).
    finished: tokio_util::sync::CancellationToken,
    events: EventSender,
}

impl Shared {
    fn connections(&self) -> MutexGuard<'_, HashMap<Addr, Conn>> {
        // A panic while holding this lock cannot leave the map half-updated
        // (single insert/remove calls), so a poisoned lock is still good.
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Marks the server finished however `serve` ends, including when its
/// future is dropped: then the connections are cut rather than orphaned.
struct Finish(Arc<Shared>);

impl Drop for Finish {
    fn drop(&mut self) {
        self.0.signals.cut();
        self.0.finished.cancel();
        self.0.events.end();
    }
}

impl Server<tower::layer::util::Identity> {
    /// A builder with the defaults: line mode, 64 KiB frames, 10,000
    /// connections, a 5-minute idle timeout, one frame at a time per
    /// connection, and a connection closed after any frame that fails.
    pub fn builder() -> ServerBuilder<tower::layer::util::Identity> {
        ServerBuilder::new()
    }
}

impl<L, T, C> Server<L, T, C>
where
    T: Listener,
    C: FrameCodec,
{
    /// The address the server is listening on (with the real port when
    /// bound to port 0). [`Addr::socket_addr`] gives the `SocketAddr` of a
    /// TCP server.
    pub fn local_addr(&self) -> Addr {
        self.shared.local_addr.clone()
    }

    /// A handle to list and close connections and to shut the server down,
    /// usable from anywhere while `serve` runs.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle::new(self.shared.clone())
    }

    /// The server's [`Events`], from now on.
    pub fn events(&self) -> Events {
        self.shared.events.subscribe()
    }

    /// Serves connections until a [`ServerHandle`] shuts the server down
    /// or cuts it.
    ///
    /// `make_service` is called once per connection with its [`Conn`] and
    /// returns the service that handles that connection's frames; the
    /// builder's layers wrap it. A named function works too; its service
    /// must not borrow the `&Conn` (clone what it needs), which the 2024
    /// edition spells `+ use<>`:
    ///
    /// ```
    /// use natter::{Conn, Frame};
    /// use tower::{Service, service_fn};
    ///
    /// fn greeter(
    ///     conn: &Conn,
    /// ) -> impl Service<Frame, Response = String, Error = natter::Error, Future: Send> + Send + use<> {
    ///     let peer = conn.peer_addr();
    ///     service_fn(move |frame: Frame| {
    ///         let reply = format!("{peer}: {} bytes", frame.len());
    ///         async move { Ok(reply) }
    ///     })
    /// }
    /// # async fn demo(server: natter::Server<tower::layer::util::Identity>) -> Result<(), natter::Error> {
    /// server.serve(greeter).await
    /// # }
    /// ```
    ///
    /// The service's response is the reply (see
    /// [`IntoReply`](crate::IntoReply)); its error is reported as an event
    /// and then answered by the [`on_error`](ServerBuilder::on_error) hook
    /// or, without one, closes the connection after the replies before it.
    pub async fn serve<M, S>(self, make_service: M) -> Result<(), Error>
    where
        M: FnMut(&Conn) -> S,
        L: Layer<S>,
        L::Service: FrameService,
    {
        self.serve_with_shutdown(make_service, pending()).await
    }

    /// Like [`serve`](Self::serve), and shuts down gracefully when `signal`
    /// completes.
    pub async fn serve_with_shutdown<M, S, G>(
        self,
        mut make_service: M,
        signal: G,
    ) -> Result<(), Error>
    where
        M: FnMut(&Conn) -> S,
        L: Layer<S>,
        L::Service: FrameService,
        G: Future<Output = ()>,
    {
        let Server {
            mut listener,
            layer,
            config,
            shared,
        } = self;
        let _finish = Finish(shared.clone());
        let signals = &shared.signals;
        let tracker = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(config.max_connections));
        let mut signal = std::pin::pin!(signal);
        tracing::info!(addr = %shared.local_addr, "serving");

        loop {
            let (stream, peer) = tokio::select! {
                biased;
                () = signals.shutdown_token().cancelled() => break,
                () = signals.cut_token().cancelled() => break,
                () = &mut signal => {
                    signals.shut_down();
                    break;
                }
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        accept_error_pause(&error).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                // Over the limit: closed at once, without a reply (the
                // event counts it).
                let error = Error::ConnectionLimit {
                    limit: config.max_connections,
                };
                shared.events.send(
                    &peer,
                    EventKind::Error {
                        error,
                        closing: true,
                    },
                );
                drop(stream);
                continue;
            };
            let connection = Connection::new(
                stream,
                peer.clone(),
                shared.local_addr.clone(),
                config.conn.clone(),
                shared.signals.clone(),
                shared.events.clone(),
            );
            let Ok(service) = connection.make_service(|conn| layer.layer(make_service(conn)))
            else {
                continue;
            };
            let conn = connection.conn().clone();
            shared.connections().insert(peer.clone(), conn.clone());
            let shared = shared.clone();
            let forget = move || {
                // Who waits for the end (`ServerHandle::close`, a `Closed`
                // event) must find the connection gone from the list and
                // its slot free.
                let mut connections = shared.connections();
                if connections
                    .get(&peer)
                    .is_some_and(|current| current.same(&conn))
                {
                    connections.remove(&peer);
                }
                drop(slot);
            };
            tracker.spawn(connection.run(service, forget));
        }

        // Refuse new connections before draining the others.
        drop(listener);
        tracker.close();
        tracing::info!(connections = tracker.len(), "shutting down");
        tokio::select! {
            () = tracker.wait() => {}
            () = signals.cut_token().cancelled() => tracker.wait().await,
            () = tokio::time::sleep(config.drain_timeout) => {
                tracing::warn!(connections = tracker.len(), "drain timeout passed; cutting");
                signals.cut();
                tracker.wait().await;
            }
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// How long to pause after a failed `accept`. A connection reset before
/// we accepted it is the peer's problem: go on at once. Running out of file
/// descriptors is ours: pause so the loop does not spin while connections
/// close.
async fn accept_error_pause(error: &io::Error) {
    use io::ErrorKind::*;
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        return;
    }
    tracing::warn!(%error, "accept failed; pausing");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

impl<L, T, C: std::fmt::Debug> std::fmt::Debug for Server<L, T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.shared.local_addr)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
