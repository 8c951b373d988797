//! [`ClientService`]: the client as a request/response `tower::Service`.
//!
//! Each request is written on the connection and its response is the next
//! frame the server sends that no earlier request is waiting for. Matching
//! is by position, so the order of the wire and the order of the waiting
//! queue must be the same: the request is queued for writing and its waiter
//! is queued in one step, under one lock.
//!
//! A request whose caller gave up (a timeout layer dropped its future)
//! keeps its place in the queue: the late answer is read and discarded, and
//! the next answer goes to the next request. An answer is never given to
//! the wrong request (the trap of tokio-tower #28).
//!
//! Each waiting request holds a permit of its link's `pending` semaphore
//! until its answer comes or the link closes, so `poll_ready` waits once
//! `max_pending` requests are unanswered.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::future::{Ready, ready};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio_stream::wrappers::WatchStream;
use tokio_util::codec::Encoder;
use tokio_util::sync::{CancellationToken, PollSemaphore, PollSender};
use tracing::Instrument;

use super::backoff::Backoff;
use super::dial::Dialer;
use crate::conn::{ConnConfig, Connection, Signals};
use crate::event::{EventKind, EventSender, Events};
use crate::{BoxError, DelimiterCodec, Error, Frame};

/// A request sent and not answered yet: where its answer goes, and its
/// place under the `max_pending` limit.
type Waiter = (oneshot::Sender<Frame>, OwnedSemaphorePermit);

/// One connection, as the requests on it see it.
struct Link {
    sender: mpsc::Sender<Bytes>,
    codec: DelimiterCodec,
    /// Requests written (or queued to be) and not yet answered, in wire
    /// order.
    waiters: Mutex<VecDeque<Waiter>>,
    /// One permit per request that may still be sent (`max_pending`).
    pending: Arc<Semaphore>,
}

impl Link {
    fn waiters(&self) -> MutexGuard<'_, VecDeque<Waiter>> {
        self.waiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Clone)]
enum LinkState {
    Up(Arc<Link>),
    /// Lost; redialling.
    Connecting,
    Closed,
}

/// The client as a `tower::Service<Frame>` whose response is the server's
/// next frame.
///
/// Cheap to clone; clones share the connection, and requests from any of
/// them may be in flight at once (pipelined). Wrap it in tower layers for
/// timeouts, retries, buffering or concurrency limits. When the connection
/// closes, every waiting request fails with [`Error::Closed`]; with
/// [`reconnect`](super::ClientBuilder::reconnect) new requests wait for the
/// redial, and no request is ever sent twice. At most
/// [`max_pending`](super::ClientBuilder::max_pending) requests (1024 by
/// default) wait for their answers at once; `poll_ready` waits beyond
/// that.
///
/// ```no_run
/// use std::time::Duration;
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # async fn demo() -> Result<(), natter::BoxError> {
/// let client = natter::Client::builder().connect_service("127.0.0.1:7878").await?;
/// let mut service = ServiceBuilder::new()
///     .timeout(Duration::from_secs(1))
///     .concurrency_limit(16)
///     .service(client);
/// let answer = service.ready().await?.call("ping".into()).await?;
/// println!("{answer:?}");
/// # Ok(()) }
/// ```
pub struct ClientService {
    updates: WatchStream<LinkState>,
    current: LinkState,
    /// A sender of the current link, holding the slot `poll_ready` reserved.
    sender: Option<PollSender<Bytes>>,
    /// The current link's `pending` semaphore, and the permit `poll_ready`
    /// took from it for the next request.
    permits: Option<PollSemaphore>,
    permit: Option<OwnedSemaphorePermit>,
    /// Whether `sender` holds a reserved slot. `PollSender::send_item`
    /// panics without one, so `call` checks this first.
    reserved: bool,
    control: Arc<Control>,
}

/// What every clone shares.
struct Control {
    states: Arc<watch::Sender<LinkState>>,
    events: EventSender,
    closing: CancellationToken,
}

impl ClientService {
    pub(super) async fn start(
        stream: TcpStream,
        dialer: Dialer,
        backoff: Option<Backoff>,
        (config, max_pending): (ConnConfig, usize),
        events: EventSender,
    ) -> ClientService {
        let (states, _) = watch::channel(LinkState::Connecting);
        let control = Arc::new(Control {
            states: Arc::new(states),
            events,
            closing: CancellationToken::new(),
        });
        let service = ClientService::subscribe(control.clone());
        let supervisor = Supervisor {
            dialer,
            backoff,
            config,
            max_pending,
            events: control.events.clone(),
            states: control.states.clone(),
            closing: control.closing.clone(),
        };
        let (up, connected) = oneshot::channel();
        tokio::spawn(supervisor.run(stream, up));
        // The first link is published before `start` returns, so the first
        // request never waits for it.
        let _ = connected.await;
        service
    }

    fn subscribe(control: Arc<Control>) -> ClientService {
        let receiver = control.states.subscribe();
        let current = receiver.borrow().clone();
        let mut service = ClientService {
            updates: WatchStream::from_changes(receiver),
            current: LinkState::Closed,
            sender: None,
            permits: None,
            permit: None,
            reserved: false,
            control,
        };
        service.apply(current);
        service
    }

    fn apply(&mut self, state: LinkState) {
        self.reserved = false;
        self.permit = None;
        (self.sender, self.permits) = match &state {
            LinkState::Up(link) => (
                Some(PollSender::new(link.sender.clone())),
                Some(PollSemaphore::new(link.pending.clone())),
            ),
            _ => (None, None),
        };
        self.current = state;
    }

    /// The connection's [`Events`], from now on (including reconnects).
    pub fn events(&self) -> Events {
        self.control.events.subscribe()
    }

    /// Closes the connection for every clone: requests still waiting fail
    /// with [`Error::Closed`], and there is no redial.
    pub fn close(&self) {
        self.control.closing.cancel();
    }
}

impl Clone for ClientService {
    /// A new handle on the same connection. Like every tower service, a
    /// clone does not carry the readiness `poll_ready` reserved.
    fn clone(&self) -> Self {
        ClientService::subscribe(self.control.clone())
    }
}

impl fmt::Debug for ClientService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.current {
            LinkState::Up(_) => "up",
            LinkState::Connecting => "connecting",
            LinkState::Closed => "closed",
        };
        f.debug_struct("ClientService")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl tower::Service<Frame> for ClientService {
    type Response = Frame;
    type Error = Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            while let Poll::Ready(update) = self.updates.poll_next_unpin(cx) {
                self.apply(update.unwrap_or(LinkState::Closed));
            }
            let (Some(sender), Some(permits)) = (self.sender.as_mut(), self.permits.as_mut())
            else {
                return match self.current {
                    LinkState::Closed => Poll::Ready(Err(Error::Closed)),
                    _ => Poll::Pending,
                };
            };
            // A place under `max_pending` first, then a slot in the send
            // queue.
            if self.permit.is_none() {
                match permits.poll_acquire(cx) {
                    Poll::Ready(Some(permit)) => self.permit = Some(permit),
                    // The semaphore is never closed.
                    Poll::Ready(None) => return Poll::Ready(Err(Error::Closed)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            match sender.poll_reserve(cx) {
                Poll::Ready(Ok(())) => {
                    self.reserved = true;
                    return Poll::Ready(Ok(()));
                }
                // This link's driver is gone; the supervisor is about to
                // publish what comes next, and `updates` will wake us.
                Poll::Ready(Err(_)) => {
                    self.apply(LinkState::Connecting);
                    continue;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn call(&mut self, request: Frame) -> ResponseFuture {
        // Without a slot reserved by `poll_ready` (a clone, say, which does
        // not carry readiness), the request fails unsent.
        let permit = self.permit.take();
        let (true, Some(permit)) = (std::mem::take(&mut self.reserved), permit) else {
            return ResponseFuture::failed(Error::NotReady);
        };
        let (LinkState::Up(link), Some(sender)) = (&self.current, self.sender.as_mut()) else {
            return ResponseFuture::failed(Error::Closed);
        };
        let mut bytes = BytesMut::new();
        if let Err(error) = link.codec.clone().encode(request, &mut bytes) {
            return ResponseFuture::failed(error);
        }
        let (waiter, answer) = oneshot::channel();
        let mut waiters = link.waiters();
        // `send_item` fails if the connection closed since `poll_ready`:
        // the request is not sent at all.
        if sender.send_item(bytes.freeze()).is_err() {
            return ResponseFuture::failed(Error::Closed);
        }
        waiters.push_back((waiter, permit));
        ResponseFuture::waiting(answer)
    }
}

pin_project_lite::pin_project! {
    /// The response of a [`ClientService`] request.
    pub struct ResponseFuture {
        #[pin]
        state: ResponseState,
    }
}

pin_project_lite::pin_project! {
    #[project = ResponseProjection]
    enum ResponseState {
        Waiting { #[pin] answer: oneshot::Receiver<Frame> },
        Failed { error: Option<Error> },
    }
}

impl ResponseFuture {
    fn waiting(answer: oneshot::Receiver<Frame>) -> Self {
        ResponseFuture {
            state: ResponseState::Waiting { answer },
        }
    }

    fn failed(error: Error) -> Self {
        ResponseFuture {
            state: ResponseState::Failed { error: Some(error) },
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Frame, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            // A dropped waiter means the connection closed unanswered.
            ResponseProjection::Waiting { answer } => answer.poll(cx).map_err(|_| Error::Closed),
            ResponseProjection::Failed { error } => {
                Poll::Ready(Err(error.take().unwrap_or(Error::Closed)))
            }
        }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// The connection's handler in request/response mode: each frame from the
/// server answers the oldest waiting request.
struct Responder {
    link: Arc<Link>,
}

impl tower::Service<Frame> for Responder {
    type Response = ();
    type Error = BoxError;
    type Future = Ready<Result<(), BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, frame: Frame) -> Self::Future {
        let Some((waiter, _place)) = self.link.waiters().pop_front() else {
            return ready(Err(
                "the server sent a frame no request was waiting for; dropped".into(),
            ));
        };
        // A caller that gave up dropped its receiver: the answer was its,
        // and is discarded. Either way its place is free again.
        let _ = waiter.send(frame);
        ready(Ok(()))
    }
}

/// Owns the connection of a [`ClientService`] and its redials.
struct Supervisor {
    dialer: Dialer,
    backoff: Option<Backoff>,
    config: ConnConfig,
    max_pending: usize,
    events: EventSender,
    states: Arc<watch::Sender<LinkState>>,
    closing: CancellationToken,
}

impl Supervisor {
    async fn run(self, first: TcpStream, up: oneshot::Sender<()>) {
        let mut up = Some(up);
        let mut stream = first;
        let mut peer = stream.peer_addr().ok();
        loop {
            self.serve(stream, up.take()).await;
            if self.closing.is_cancelled() || self.states.is_closed() {
                break;
            }
            let Some(next) = self.redial(peer).await else {
                break;
            };
            stream = next;
            peer = stream.peer_addr().ok().or(peer);
        }
        self.states.send_replace(LinkState::Closed);
    }

    /// Runs one connection until it ends, then fails the requests still
    /// waiting on it.
    async fn serve(&self, stream: TcpStream, up: Option<oneshot::Sender<()>>) {
        let connection = Connection::new(
            stream,
            self.config.clone(),
            Signals::default(),
            self.events.clone(),
        );
        let conn = connection.conn().clone();
        let link = Arc::new(Link {
            sender: conn.sender(),
            codec: conn.codec().clone(),
            waiters: Mutex::default(),
            pending: Arc::new(Semaphore::new(self.max_pending.min(Semaphore::MAX_PERMITS))),
        });
        self.states.send_replace(LinkState::Up(link.clone()));
        if let Some(up) = up {
            let _ = up.send(());
        }
        let responder = Responder { link: link.clone() };
        let span = tracing::info_span!("client", peer = %conn.peer_addr());
        let mut running = pin!(connection.serve(responder).run(|| ()).instrument(span));
        tokio::select! {
            _ = &mut running => {}
            () = self.states.closed() => {
                conn.close();
                running.await;
            }
            () = self.closing.cancelled() => {
                conn.close();
                running.await;
            }
        }
        // Dropping the waiters fails their requests with `Error::Closed`.
        link.waiters().clear();
    }

    /// Redials with backoff until it connects, gives up, or is told to
    /// stop. Reports each attempt.
    async fn redial(&self, peer: Option<SocketAddr>) -> Option<TcpStream> {
        let backoff = self.backoff.as_ref()?;
        self.states.send_replace(LinkState::Connecting);
        let peer = peer.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        let mut attempt = 0;
        loop {
            attempt += 1;
            if !backoff.allows(attempt) {
                return None;
            }
            let delay = backoff.delay(attempt);
            self.events
                .send(peer, EventKind::Reconnecting { attempt, delay });
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.states.closed() => return None,
                () = self.closing.cancelled() => return None,
            }
            match self.dialer.dial().await {
                Ok(stream) => return Some(stream),
                Err(error) => self.events.send(peer, EventKind::Error(error)),
            }
        }
    }
}
