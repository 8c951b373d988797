//! [`ClientService`]: the client as a request/response `tower::Service`.
//!
//! Each request is written on the connection and its response is the next
//! frame the server sends that no earlier request is waiting for. Matching
//! is by position, so the order of the wire and the order of the waiting
//! queue must be the same: the request is queued for writing and its waiter
//! is queued in one step, under one lock.
//!
//! The request is encoded straight into the link's queue, which the
//! connection's driver empties into its write buffer once per batch; no
//! request is allocated on its own. The queue holds at most `max_pending`
//! requests, and `poll_ready` also waits while it holds `write_buffer`
//! bytes or more, until the driver takes them.
//!
//! A request whose caller gave up (a timeout layer dropped its future)
//! keeps its place in the queue: the late answer is read and discarded, and
//! the next answer goes to the next request. An answer is never given to
//! the wrong request (the trap of tokio-tower #28).
//!
//! Each waiting request holds one of its link's `max_pending` places (a
//! count, taken by `poll_ready` and given back when the answer comes) until
//! its answer comes or the link closes, so `poll_ready` waits once
//! `max_pending` requests are unanswered.
//!
//! Matching by position relies on the server answering every request with
//! exactly one frame, in order, or closing the connection: natter's server
//! does (see [`on_error`](crate::ServerBuilder::on_error)). The moment the
//! connection stops reading (the server closed, an answer was over the
//! frame limit, the client was closed), every request still waiting fails
//! with [`Error::Closed`]: no answer can come for it any more.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use bytes::BytesMut;
use futures::StreamExt;
use futures::future::{Ready, ready};
use tokio::sync::{oneshot, watch};
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::backoff::Backoff;
use super::dial::dial_within;
use crate::codec::FrameCodec;
use crate::conn::{Conn, ConnConfig, Connection, EncodeInto, Requests, Signals};
use crate::event::{EventKind, EventSender, Events};
use crate::stats::{Counters, Stats};
use crate::transport::{Addr, Dial, Dialled};
use crate::{BoxError, Error, Frame};

/// A request sent and not answered yet: the slot its answer goes to, and
/// when the driver took it to write. (It holds a place under `max_pending`
/// until it is answered.)
struct Waiter {
    slot: usize,
    sent: Option<Instant>,
}

/// Where a request's answer waits for its [`ResponseFuture`]: one per
/// future not finished yet, in the link's queue, reused.
enum Slot {
    /// Unused.
    Free,
    /// Not answered yet; the waker of the future's last poll.
    Waiting(Option<Waker>),
    Answered(Frame),
    /// The connection stopped reading first.
    Failed,
    /// The future was dropped (its caller gave up): the answer is
    /// discarded when it comes.
    Abandoned,
}

/// One connection, as the requests on it see it.
struct Link {
    conn: Conn,
    /// The requests' bytes and their waiters.
    queue: Mutex<Queue>,
    /// `queue` holds `high_water` bytes or more that the driver has not
    /// taken: `poll_ready` waits. Changed under the lock only.
    full: AtomicBool,
    high_water: usize,
    /// Places under `max_pending` that no request holds (waiting for its
    /// answer) and no `poll_ready` took.
    free: AtomicUsize,
    /// A task waits in `Queue::room` for a place: whoever gives one back
    /// wakes it.
    waiting: AtomicBool,
    counters: Arc<Counters>,
    /// Set once the connection stops reading: the link takes no more
    /// requests, and the supervisor publishes what comes next. Until then
    /// `poll_ready` need not look for a new state.
    dead: AtomicBool,
}

/// What a link's lock guards: the requests not yet written, and every
/// request not yet answered, in the same order.
struct Queue {
    /// Requests encoded and not yet taken by the driver.
    bytes: BytesMut,
    /// How many requests `bytes` holds.
    frames: u64,
    /// The connection's codec, for requests.
    encoder: Box<dyn EncodeInto>,
    /// Requests written (or queued to be) and not yet answered, in wire
    /// order.
    waiters: VecDeque<Waiter>,
    /// The answers' slots, and the unused ones among them.
    slots: Vec<Slot>,
    free_slots: Vec<usize>,
    /// The driver, to wake when the first request of a batch is queued.
    driver: Option<Waker>,
    /// Tasks whose `poll_ready` waits for a place, or for the driver to take
    /// `bytes`.
    room: Vec<Waker>,
    /// The time of the driver's current pass, read once when first needed:
    /// every request it takes and every answer it reads is timed by it
    /// (for `natter_client_request_duration_seconds`), rather than by a
    /// clock read each.
    clock: Option<Instant>,
    /// The last duration worked out in this pass, and the send time it was
    /// for: the answers of one batch of requests took the same time.
    took: Option<(Instant, Duration)>,
}

/// A queue's bytes above this capacity are given back once taken: one
/// large request does not pin its size for the connection's life.
const KEEP_CAPACITY: usize = 16 * 1024;

impl Link {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits for the driver to take the queued bytes: returns whether there
    /// is room now.
    #[cold]
    fn wait_for_room(&self, cx: &mut Context<'_>) -> bool {
        let mut queue = self.queue();
        if !self.full.load(Ordering::Relaxed) || self.is_dead() {
            return true;
        }
        queue.wait(cx);
        false
    }

    /// Takes a place under `max_pending`, if one is free.
    #[inline]
    fn take_place(&self) -> bool {
        let mut free = self.free.load(Ordering::SeqCst);
        while free > 0 {
            match self.free.compare_exchange_weak(
                free,
                free - 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(now) => free = now,
            }
        }
        false
    }

    /// Takes a place, or waits for one: returns whether it got one, or the
    /// link died (nothing to wait for then).
    #[cold]
    fn wait_for_place(&self, cx: &mut Context<'_>) -> bool {
        {
            let mut queue = self.queue();
            queue.wait(cx);
            // Set after the waker is in, looked at after `free` is raised:
            // either `give_places` sees it, or the second try below sees
            // the place.
            self.waiting.store(true, Ordering::SeqCst);
        }
        self.take_place() || self.is_dead()
    }

    /// Gives places back; wakes whoever waits for one.
    #[inline]
    fn give_places(&self, places: usize) {
        self.free.fetch_add(places, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) {
            self.wake_waiting();
        }
    }

    #[cold]
    fn wake_waiting(&self) {
        let room = self.queue().room_to_wake(self);
        room.into_iter().for_each(Waker::wake);
    }

    /// Queues `request` and its waiter, in one step; wakes the driver for
    /// the first request of a batch. Returns the slot its answer will be
    /// in.
    fn send(&self, request: Frame) -> Result<usize, Error> {
        let mut guard = self.queue();
        // Checked under the lock `fail_waiting` takes after setting it: a
        // request never waits on a link that failed its waiters.
        if self.is_dead() {
            return Err(Error::Closed);
        }
        let queue = &mut *guard;
        queue.encoder.encode_into(request, &mut queue.bytes)?;
        queue.frames += 1;
        let slot = queue.slot();
        queue.waiters.push_back(Waiter { slot, sent: None });
        if queue.bytes.len() >= self.high_water {
            self.full.store(true, Ordering::Relaxed);
        }
        let driver = queue.driver.take();
        drop(guard);
        if let Some(driver) = driver {
            driver.wake();
        }
        Ok(slot)
    }

    /// Whether the connection stopped reading.
    #[inline]
    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Fails every waiting request with `Error::Closed`, and wakes whoever
    /// waits for a place: the link is dead, and they are to look for the
    /// next one.
    fn fail_waiting(&self) {
        self.dead.store(true, Ordering::Release);
        let mut wake = Vec::new();
        let failed = {
            let mut guard = self.queue();
            let queue = &mut *guard;
            for waiter in &queue.waiters {
                match std::mem::replace(&mut queue.slots[waiter.slot], Slot::Failed) {
                    Slot::Waiting(waker) => wake.extend(waker),
                    // Nobody will look: the slot is free.
                    _ => {
                        queue.slots[waiter.slot] = Slot::Free;
                        queue.free_slots.push(waiter.slot);
                    }
                }
            }
            let failed = queue.waiters.len();
            queue.waiters.clear();
            // Requests not taken by the writer are never sent.
            queue.bytes.clear();
            queue.frames = 0;
            wake.append(&mut queue.room_to_wake(self));
            failed
        };
        wake.into_iter().for_each(Waker::wake);
        for _ in 0..failed {
            self.counters.request_done(None);
        }
    }
}

impl Queue {
    /// An unused slot, now waiting for its answer.
    #[inline]
    fn slot(&mut self) -> usize {
        match self.free_slots.pop() {
            Some(slot) => {
                self.slots[slot] = Slot::Waiting(None);
                slot
            }
            None => {
                self.slots.push(Slot::Waiting(None));
                self.slots.len() - 1
            }
        }
    }

    /// How long a request sent at `sent` took, answered in this pass.
    #[inline]
    fn took(&mut self, sent: Instant) -> Duration {
        match self.took {
            Some((then, took)) if then == sent => took,
            _ => {
                let now = *self.clock.get_or_insert_with(Instant::now);
                let took = now.saturating_duration_since(sent);
                self.took = Some((sent, took));
                took
            }
        }
    }

    /// Frees `slot`.
    #[inline]
    fn free(&mut self, slot: usize) {
        self.slots[slot] = Slot::Free;
        self.free_slots.push(slot);
    }

    /// Keeps `cx`'s waker, to be woken by a place, room, or the link's
    /// death.
    fn wait(&mut self, cx: &mut Context<'_>) {
        if !self.room.iter().any(|waker| waker.will_wake(cx.waker())) {
            self.room.push(cx.waker().clone());
        }
    }

    /// Every task in `room`, to be woken once the lock is let go.
    fn room_to_wake(&mut self, link: &Link) -> Vec<Waker> {
        link.waiting.store(false, Ordering::SeqCst);
        std::mem::take(&mut self.room)
    }
}

impl Requests for Link {
    fn take(&self, waker: &Waker, room: bool, put: &mut dyn FnMut(&[u8])) -> u64 {
        let mut guard = self.queue();
        let queue = &mut *guard;
        // A new pass: its time is read when first needed.
        queue.clock = None;
        queue.took = None;
        if !room {
            return 0;
        }
        if !queue
            .driver
            .as_ref()
            .is_some_and(|driver| driver.will_wake(waker))
        {
            queue.driver = Some(waker.clone());
        }
        if queue.frames == 0 {
            return 0;
        }
        put(&queue.bytes);
        // The requests just taken are the last ones queued: they are sent
        // now.
        let now = *queue.clock.insert(Instant::now());
        let taken = queue.frames as usize;
        for waiter in queue.waiters.iter_mut().rev().take(taken) {
            waiter.sent = Some(now);
        }
        if queue.bytes.capacity() > KEEP_CAPACITY {
            queue.bytes = BytesMut::new();
        } else {
            queue.bytes.clear();
        }
        let room = if self.full.load(Ordering::Relaxed) {
            self.full.store(false, Ordering::Relaxed);
            queue.room_to_wake(self)
        } else {
            Vec::new()
        };
        let frames = std::mem::take(&mut queue.frames);
        drop(guard);
        room.into_iter().for_each(Waker::wake);
        frames
    }

    fn answer(&self, answers: &mut Vec<Frame>) -> Result<(), Error> {
        let mut guard = self.queue();
        let queue = &mut *guard;
        let mut answered = 0;
        // Usually one future waits (the oldest); any others after it.
        let mut first: Option<Waker> = None;
        let mut others = Vec::new();
        let mut lost = false;
        for frame in answers.drain(..) {
            let Some(waiter) = queue.waiters.pop_front() else {
                lost = true;
                break;
            };
            answered += 1;
            let took = waiter.sent.map(|sent| queue.took(sent));
            self.counters.request_answered(took);
            let slot = &mut queue.slots[waiter.slot];
            match std::mem::replace(slot, Slot::Answered(frame)) {
                Slot::Waiting(None) => {}
                Slot::Waiting(Some(waker)) => match first {
                    None => first = Some(waker),
                    Some(_) => others.push(waker),
                },
                // Its caller gave up: the answer was its, and is discarded.
                _ => queue.free(waiter.slot),
            }
        }
        drop(guard);
        if answered > 0 {
            self.give_places(answered);
            self.counters.requests_done(answered);
        }
        first.into_iter().chain(others).for_each(Waker::wake);
        if lost {
            return Err(Error::from_service(
                "the server sent a frame no request was waiting for".into(),
            ));
        }
        Ok(())
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
/// timeouts, retries, buffering or concurrency limits.
///
/// Each response is the next frame the server sends, so the server must
/// answer every request with exactly one frame, in order, and send nothing
/// else, or close the connection. A natter server keeps the first half of
/// that whatever its handler's errors and layers do (see
/// [`on_error`](crate::ServerBuilder::on_error)); the rest is the
/// handler's part: a handler that answers a request with `()` or `None`,
/// or sends frames of its own through [`Conn::send`](crate::Conn::send) (a
/// greeting, a push), makes every later answer land on the request before
/// it. Such protocols are for [`Client::connect_with`](crate::ClientBuilder::connect_with)
/// and a handler of your own, which sees every frame as it comes.
///
/// A `ClientService` is a tower service: put request timeouts, retries and
/// limits around it with [`tower::ServiceBuilder`]. Of the builder's
/// options, those of the connection apply (codec, idle and write timeouts,
/// write buffer, linger, reconnect, `max_pending`);
/// [`layer`](crate::ClientBuilder::layer), `handler_timeout`,
/// `max_in_flight`, `send_queue` and `on_error` concern a handler of frames the server
/// sends, which a `ClientService` does not have.
///
/// When the connection
/// stops reading, every waiting request fails at once with
/// [`Error::Closed`]; with [`reconnect`](super::ClientBuilder::reconnect)
/// new requests wait for the redial, and no request is ever sent twice. At
/// most
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
    /// `poll_ready` took a place under the current link's `max_pending`
    /// for the next request: the readiness `call` needs.
    placed: bool,
    control: Arc<Control>,
}

/// What every clone shares.
struct Control {
    states: Arc<watch::Sender<LinkState>>,
    events: EventSender,
    closing: CancellationToken,
}

/// How a [`ClientService`]'s connections are made and run.
pub(super) struct Settings<C> {
    pub(super) config: ConnConfig<C>,
    pub(super) connect_timeout: Duration,
    pub(super) backoff: Option<Backoff>,
    pub(super) max_pending: usize,
}

impl ClientService {
    /// Starts the supervisor of `dialer`'s connections. With a `first`
    /// connection, returns once it is published, so the first request never
    /// waits for it; without one (a failed first dial, with reconnect), at
    /// once, and requests wait for a redial.
    pub(super) async fn start<D: Dial, C: FrameCodec>(
        dialer: D,
        first: Option<Dialled<D::Io>>,
        mut settings: Settings<C>,
        events: EventSender,
    ) -> ClientService {
        // An answer cut short by a closing server is not an answer.
        crate::codec::make_strict_at_end(&mut settings.config.codec);
        let (states, _) = watch::channel(LinkState::Connecting);
        let control = Arc::new(Control {
            states: Arc::new(states),
            events,
            closing: CancellationToken::new(),
        });
        let service = ClientService::subscribe(control.clone());
        let supervisor = Supervisor {
            dialer,
            settings,
            events: control.events.clone(),
            states: control.states.clone(),
            closing: control.closing.clone(),
        };
        let (up, connected) = oneshot::channel();
        let waits = first.is_some();
        tokio::spawn(supervisor.run(first, up));
        if waits {
            let _ = connected.await;
        }
        service
    }

    fn subscribe(control: Arc<Control>) -> ClientService {
        let receiver = control.states.subscribe();
        let current = receiver.borrow().clone();
        let mut service = ClientService {
            updates: WatchStream::from_changes(receiver),
            current: LinkState::Closed,
            placed: false,
            control,
        };
        service.apply(current);
        service
    }

    fn apply(&mut self, state: LinkState) {
        self.give_place_back();
        self.current = state;
    }

    /// Gives back the place `poll_ready` took and no request used.
    fn give_place_back(&mut self) {
        if std::mem::take(&mut self.placed) {
            if let LinkState::Up(link) = &self.current {
                link.give_places(1);
            }
        }
    }

    /// The server's address, while connected.
    pub fn peer_addr(&self) -> Option<Addr> {
        match &*self.control.states.borrow() {
            LinkState::Up(link) => Some(link.conn.peer_addr()),
            _ => None,
        }
    }

    /// Our end's address, while connected.
    pub fn local_addr(&self) -> Option<Addr> {
        match &*self.control.states.borrow() {
            LinkState::Up(link) => Some(link.conn.local_addr()),
            _ => None,
        }
    }

    /// A snapshot of the client's counters (requests in flight, reconnects,
    /// frames, bytes, errors by kind): see [`stats`](crate::stats).
    pub fn stats(&self) -> Stats {
        self.control.events.counters().snapshot()
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

impl Drop for ClientService {
    fn drop(&mut self) {
        self.give_place_back();
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

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // The usual case, inline: a live link with a place free and room in
        // its queue.
        if let LinkState::Up(link) = &self.current {
            if !link.is_dead()
                && !link.full.load(Ordering::Relaxed)
                && (self.placed || link.take_place())
            {
                self.placed = true;
                return Poll::Ready(Ok(()));
            }
        }
        self.poll_ready_slow(cx)
    }

    fn call(&mut self, request: Frame) -> ResponseFuture {
        // Without the place `poll_ready` took (a clone, say, which does not
        // carry readiness), the request fails unsent.
        if !std::mem::take(&mut self.placed) {
            return ResponseFuture::failed(Error::NotReady);
        }
        let LinkState::Up(link) = &self.current else {
            return ResponseFuture::failed(Error::Closed);
        };
        // Fails unsent if the request cannot be encoded, or if the
        // connection stopped reading since `poll_ready`: its place is free
        // again.
        match link.send(request) {
            Ok(slot) => {
                link.counters.request_sent();
                ResponseFuture::waiting(link.clone(), slot)
            }
            Err(error) => {
                link.give_places(1);
                ResponseFuture::failed(error)
            }
        }
    }
}

impl ClientService {
    /// `poll_ready` when the link is dead or gone, or a place or room must
    /// be waited for.
    #[inline(never)]
    fn poll_ready_slow(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            // While the current link is alive there is no new state to
            // look for: every change follows its death (`fail_waiting`),
            // which also wakes a wait for a place.
            if !matches!(&self.current, LinkState::Up(link) if !link.is_dead()) {
                while let Poll::Ready(update) = self.updates.poll_next_unpin(cx) {
                    self.apply(update.unwrap_or(LinkState::Closed));
                }
                match &self.current {
                    LinkState::Up(link) if !link.is_dead() => {}
                    LinkState::Closed => return Poll::Ready(Err(Error::Closed)),
                    // Dead or redialling: `updates` will wake us.
                    _ => return Poll::Pending,
                }
            }
            let LinkState::Up(link) = &self.current else {
                return Poll::Pending;
            };
            // A place under `max_pending` first, then room in the queue.
            if !self.placed {
                if !link.take_place() && !link.wait_for_place(cx) {
                    return Poll::Pending;
                }
                self.placed = true;
            }
            if link.full.load(Ordering::Relaxed) && !link.wait_for_room(cx) {
                return Poll::Pending;
            }
            if link.is_dead() {
                continue;
            }
            return Poll::Ready(Ok(()));
        }
    }
}

/// The response of a [`ClientService`] request.
pub struct ResponseFuture {
    state: ResponseState,
}

enum ResponseState {
    /// The answer will be in this slot of the link's queue.
    Waiting {
        link: Arc<Link>,
        slot: usize,
    },
    Failed(Error),
    Done,
}

impl ResponseFuture {
    fn waiting(link: Arc<Link>, slot: usize) -> Self {
        ResponseFuture {
            state: ResponseState::Waiting { link, slot },
        }
    }

    fn failed(error: Error) -> Self {
        ResponseFuture {
            state: ResponseState::Failed(error),
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Frame, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let ResponseState::Waiting { link, slot } = &self.state else {
            return match std::mem::replace(&mut self.state, ResponseState::Done) {
                ResponseState::Failed(error) => Poll::Ready(Err(error)),
                _ => Poll::Ready(Err(Error::Closed)),
            };
        };
        let slot = *slot;
        let mut queue = link.queue();
        let answer = match std::mem::replace(&mut queue.slots[slot], Slot::Free) {
            Slot::Answered(frame) => Ok(frame),
            Slot::Waiting(mut waker) => {
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    waker = Some(cx.waker().clone());
                }
                queue.slots[slot] = Slot::Waiting(waker);
                return Poll::Pending;
            }
            // The connection stopped reading before the answer came.
            _ => Err(Error::Closed),
        };
        queue.free_slots.push(slot);
        drop(queue);
        self.state = ResponseState::Done;
        Poll::Ready(answer)
    }
}

impl Drop for ResponseFuture {
    fn drop(&mut self) {
        if let ResponseState::Waiting { link, slot } = &self.state {
            let mut queue = link.queue();
            match &queue.slots[*slot] {
                // Its place in the queue stays: the answer, when it comes,
                // is this request's, and is discarded.
                Slot::Waiting(_) => queue.slots[*slot] = Slot::Abandoned,
                _ => queue.free(*slot),
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
/// server answers the oldest waiting request. (The driver gives the link
/// the answers itself, since the link is its `Requests`.)
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
        // The driver hands a client's answers to the link directly, a
        // read's worth at once; this is the same, for one.
        ready(self.link.answer(&mut vec![frame]).map_err(Into::into))
    }
}

/// Owns the connection of a [`ClientService`] and its redials.
struct Supervisor<D, C> {
    dialer: D,
    settings: Settings<C>,
    events: EventSender,
    states: Arc<watch::Sender<LinkState>>,
    closing: CancellationToken,
}

impl<D: Dial, C: FrameCodec> Supervisor<D, C> {
    async fn run(self, first: Option<Dialled<D::Io>>, up: oneshot::Sender<()>) {
        let mut up = Some(up);
        let mut next = first;
        let mut peer = Addr::from_target(&self.dialer.target());
        loop {
            let dialled = match next.take() {
                Some(dialled) => dialled,
                None => match self.redial(&peer).await {
                    Some(dialled) => dialled,
                    None => break,
                },
            };
            peer = dialled.peer.clone();
            self.serve(dialled, up.take()).await;
            if self.closing.is_cancelled() || self.states.is_closed() {
                break;
            }
        }
        self.states.send_replace(LinkState::Closed);
        self.events.end();
    }

    /// Runs one connection until it ends. The requests still waiting on it
    /// fail as soon as it stops reading.
    async fn serve(&self, dialled: Dialled<D::Io>, up: Option<oneshot::Sender<()>>) {
        let mut connection = Connection::new(
            dialled.io,
            dialled.peer,
            dialled.local,
            self.settings.config.clone(),
            Signals::default(),
            self.events.clone(),
        );
        let conn = connection.conn().clone();
        let link = Arc::new(Link {
            conn: conn.clone(),
            queue: Mutex::new(Queue {
                bytes: BytesMut::new(),
                frames: 0,
                encoder: Box::new(self.settings.config.codec.clone()),
                waiters: VecDeque::new(),
                slots: Vec::new(),
                free_slots: Vec::new(),
                driver: None,
                room: Vec::new(),
                clock: None,
                took: None,
            }),
            full: AtomicBool::new(false),
            high_water: self.settings.config.write_buffer,
            free: AtomicUsize::new(self.settings.max_pending),
            waiting: AtomicBool::new(false),
            counters: self.events.counters().clone(),
            dead: AtomicBool::new(false),
        });
        connection.write_requests(link.clone());
        self.states.send_replace(LinkState::Up(link.clone()));
        if let Some(up) = up {
            let _ = up.send(());
        }
        let responder = Responder { link: link.clone() };
        // The connection is a task of its own: its every wake-up (several
        // per batch of requests) then polls it alone, not this select too.
        // Dropping the supervisor drops it, as when it was polled here.
        let mut running = AbortOnDropHandle::new(tokio::spawn(connection.run(responder, || ())));
        let mut failed_waiters = false;
        loop {
            tokio::select! {
                _ = &mut running => break,
                () = conn.done_reading(), if !failed_waiters => {
                    // No answer can come any more: dropping the waiters
                    // fails their requests with `Error::Closed` now, not
                    // after the connection's linger.
                    link.fail_waiting();
                    failed_waiters = true;
                }
                () = self.states.closed() => {
                    conn.close();
                    let _ = running.await;
                    break;
                }
                () = self.closing.cancelled() => {
                    conn.close();
                    let _ = running.await;
                    break;
                }
            }
        }
        link.fail_waiting();
    }

    /// Dials again with backoff until it connects, gives up, or is told to
    /// stop. Reports each attempt.
    async fn redial(&self, peer: &Addr) -> Option<Dialled<D::Io>> {
        let backoff = self.settings.backoff.as_ref()?;
        self.states.send_replace(LinkState::Connecting);
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
            match dial_within(&self.dialer, self.settings.connect_timeout).await {
                Ok(dialled) => return Some(dialled),
                Err(error) => self.events.send(
                    peer,
                    EventKind::Error {
                        error,
                        closing: false,
                    },
                ),
            }
        }
    }
}
