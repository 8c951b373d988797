//! The connection driver: reads frames, calls the service, writes replies.
//!
//! One `poll` runs a whole batch: it handles every frame the socket has
//! ready (up to the in-flight limit), encodes every finished reply into the
//! write buffer, and only then flushes, once; only replies that reach 16
//! KiB (large frames) are written before the batch ends. Reading pauses
//! while the write buffer is above its high-water mark, so a peer that does
//! not read cannot make the server buffer without bound; the write timeout
//! then closes it.
//!
//! How a connection ends:
//! * it stops *reading* when the peer half-closes, on a fatal error, on
//!   [`Conn::close`], or (graceful shutdown) once the bytes the socket
//!   already holds are read;
//! * it then finishes every frame in hand, writes every reply and queued
//!   frame, sends FIN, and reads and discards for a short linger so that
//!   the peer gets our last bytes rather than a reset;
//! * a cut, a write timeout or a dead socket end it at once.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Sink, StreamExt};
use pin_project_lite::pin_project;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::codec::{Encoder, Framed};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower::Service;

use super::pipeline::{HandlerFuture, Pipeline};
use super::{Conn, ConnConfig, Outbound};
use crate::event::{EventKind, EventSender};
use crate::layer::panic::panic_error;
use crate::{BoxError, DelimiterCodec, Error, Frame, IntoReply};

/// The server-wide (or client-wide) signals a connection obeys.
#[derive(Debug, Clone, Default)]
pub(crate) struct Signals {
    /// Graceful shutdown: read what the socket already holds, answer it,
    /// close.
    pub(crate) shutdown: CancellationToken,
    /// Stop now.
    pub(crate) cut: CancellationToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Open,
    /// Graceful shutdown: read only what is already there.
    Draining,
    Done,
}

/// Whether the kernel holds bytes, or an end of stream, that this socket
/// has not read yet: a real `recv(MSG_PEEK)`, not tokio's cached readiness.
///
/// Tokio forgets a socket's readiness after a short read, so a read that
/// returns `Pending` does not prove the socket empty: bytes that arrived
/// since are reported only when the reactor next polls the kernel. A
/// draining connection that stopped at that `Pending` would drop frames the
/// peer sent before shutdown began (the kernel acknowledged them), so it
/// asks the kernel, and waits for those bytes when there are some.
fn unread_input(stream: &TcpStream) -> bool {
    let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    socket2::SockRef::from(stream).peek(&mut probe).is_ok()
}

/// The size of a connection's read buffer, and of its write buffer:
/// `Framed`'s own first size. A connection holds them only while it has
/// bytes to read or write: it gives them back whenever it waits with them
/// empty (see the end of `poll_drive`), so an idle connection holds neither.
const BUFFER_SIZE: usize = 8 * 1024;

/// The largest read buffer a connection takes up front, whatever its last
/// one grew to: the default frame limit and then some.
const MAX_READ_BUFFER: usize = 128 * 1024;

/// Replies that fill this many bytes are written at once, mid-batch: a
/// write this big already amortises its system call, and waiting for the
/// rest of the batch would only delay the peer. Smaller replies wait for
/// the end of the batch, so that a batch of small frames costs one write.
const FLUSH_AT: usize = 16 * 1024;

/// How many spare buffers a thread keeps.
const SPARE_BUFFERS: usize = 32;

thread_local! {
    /// Empty buffers given back by this thread's waiting connections, for
    /// the next connection that has bytes to read or write. A busy
    /// connection waits between every batch; without these it would pay an
    /// allocation and a free for each of its buffers every time.
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// Fills an empty buffer slot with a buffer of at least `capacity` bytes:
/// a spare one when spares are big enough, else a new one.
fn take_buffer(slot: &mut BytesMut, capacity: usize) {
    let spare = if capacity <= 2 * BUFFER_SIZE {
        SPARE
            .try_with(|spare| spare.borrow_mut().pop())
            .ok()
            .flatten()
    } else {
        None
    };
    *slot = match spare {
        Some(mut buffer) => {
            // Empty, so growing it copies nothing.
            buffer.reserve(capacity);
            buffer
        }
        None => BytesMut::with_capacity(capacity.max(BUFFER_SIZE)),
    };
}

/// Empties a buffer slot whose buffer holds no bytes, and returns the
/// buffer's whole capacity when nothing else shares it (no frame still
/// points into it), 0 otherwise. Such a buffer is kept as a spare when it
/// is of the usual size; a larger one is dropped, so a burst of large
/// frames leaves nothing large behind.
fn give_back(slot: &mut BytesMut) -> usize {
    let mut buffer = std::mem::take(slot);
    if !buffer.try_reclaim(BUFFER_SIZE) {
        return 0;
    }
    let capacity = buffer.capacity();
    if capacity <= 2 * BUFFER_SIZE {
        let _ = SPARE.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < SPARE_BUFFERS {
                spare.push(buffer);
            }
        });
    }
    capacity
}

/// A `Framed` that holds no buffer yet (`Framed::new` takes 8 KiB for
/// each at once); they are taken on first use.
fn framed_without_buffers(
    stream: TcpStream,
    codec: DelimiterCodec,
) -> Framed<TcpStream, DelimiterCodec> {
    let mut framed = Framed::new(stream, codec);
    give_back(framed.read_buffer_mut());
    give_back(framed.write_buffer_mut());
    framed
}

/// The write buffer, taken first if it was given back.
#[inline]
fn write_buffer(framed: &mut Framed<TcpStream, DelimiterCodec>) -> &mut BytesMut {
    let buffer = framed.write_buffer_mut();
    if buffer.capacity() == 0 {
        take_buffer(buffer, BUFFER_SIZE);
    }
    buffer
}

enum Exit {
    /// Every reply written: close politely.
    Finished,
    /// Drop the socket now.
    Aborted,
}

/// One accepted or dialled connection and everything it runs with.
///
/// Built in two steps, because the service factory needs the connection's
/// [`Conn`] before the service exists: [`Connection::new`], then
/// [`serve`](Connection::serve), then [`run`](Connection::run).
pub(crate) struct Connection<S = ()> {
    stream: TcpStream,
    conn: Conn,
    outbound: Outbound,
    service: S,
    config: ConnConfig,
    signals: Signals,
    events: EventSender,
}

impl Connection {
    pub(crate) fn new(
        stream: TcpStream,
        config: ConnConfig,
        signals: Signals,
        events: EventSender,
    ) -> Self {
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        let peer = stream.peer_addr().unwrap_or(unknown);
        let local = stream.local_addr().unwrap_or(unknown);
        let (conn, outbound) = Conn::new(peer, local, &config);
        Connection {
            stream,
            conn,
            outbound,
            service: (),
            config,
            signals,
            events,
        }
    }

    /// The connection will hand its frames to `service`.
    pub(crate) fn serve<S>(self, service: S) -> Connection<S> {
        Connection {
            stream: self.stream,
            conn: self.conn,
            outbound: self.outbound,
            service,
            config: self.config,
            signals: self.signals,
            events: self.events,
        }
    }
}

impl<S> Connection<S> {
    /// The connection's context.
    pub(crate) fn conn(&self) -> &Conn {
        &self.conn
    }
}

impl<S> Connection<S>
where
    S: Service<Frame>,
    S::Response: IntoReply,
    S::Error: Into<BoxError>,
{
    /// Runs the connection to its end and returns the last error it
    /// reported. Never panics on anything the peer or the service does:
    /// every failure becomes an event.
    ///
    /// When the socket and the service are gone, `forget` runs, and only
    /// then do [`Conn::closed`] and the `Closed` event announce the end: a
    /// caller that keeps books on its connections (the server's list and
    /// slots) updates them in `forget`, so that whoever waits for the end
    /// finds the connection already forgotten.
    pub(crate) async fn run(self, forget: impl FnOnce()) -> Option<Error> {
        let conn = self.conn.clone();
        let events = self.events.clone();
        let last_error = self.drive().await;
        forget();
        conn.mark_closed();
        events.send(conn.peer_addr(), EventKind::Closed);
        last_error
    }

    async fn drive(self) -> Option<Error> {
        let Connection {
            stream,
            conn,
            outbound,
            service,
            config,
            signals,
            events,
        } = self;
        let peer = conn.peer_addr();
        events.send(peer, EventKind::Connected);
        let now = Instant::now();
        let idle_deadline = config.idle_timeout.map_or(now, |timeout| now + timeout);
        let mut driver = pin!(Driver {
            framed: framed_without_buffers(stream, config.codec.clone()),
            encoder: config.codec.clone(),
            service,
            // The connection's own handler timeout closes the connection.
            pipeline: Pipeline::new(config.max_in_flight, config.handler_timeout),
            pending: None,
            read_capacity: BUFFER_SIZE,
            failed: false,
            outbound: outbound.receiver,
            reading: Reading::Open,
            idle_deadline,
            idle_timer: sleep_until(idle_deadline),
            write_deadline: None,
            write_timer: sleep_until(now),
            close: Box::pin(conn.close_token().clone().cancelled_owned()),
            shutdown: Box::pin(signals.shutdown.cancelled_owned()),
            cut: Box::pin(signals.cut.clone().cancelled_owned()),
            conn: conn.clone(),
            events: events.clone(),
            config,
            last_error: None,
        });
        let exit = poll_fn(|cx| driver.as_mut().poll_drive(cx)).await;
        if let Exit::Finished = exit {
            let linger = driver.config.linger;
            let stream = driver.as_mut().project().framed.get_mut();
            tokio::select! {
                () = signals.cut.cancelled() => {}
                () = close_politely(stream, linger) => {}
            }
        }
        driver.project().last_error.take()
    }
}

/// Sends FIN, then reads and discards what the peer still sends until it
/// closes too or `linger` passes. Closing a socket with unread bytes makes
/// the kernel send a reset, which can destroy replies the peer has not read
/// yet.
async fn close_politely(stream: &mut TcpStream, linger: Duration) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(linger, async {
        let mut scratch = [0u8; 1024];
        while let Ok(1..) = stream.read(&mut scratch).await {}
    })
    .await;
}

pin_project! {
    struct Driver<S, F: HandlerFuture> {
        framed: Framed<TcpStream, DelimiterCodec>,
        encoder: DelimiterCodec,
        service: S,
        #[pin]
        pipeline: Pipeline<F>,
        // Decoded, waiting for the service to be ready.
        pending: Option<Frame>,
        // The size of read buffer to take: what the last one grew to.
        read_capacity: usize,
        // A frame failed in a way that closes the connection. The frames
        // after it get no reply: a pipelined peer matches replies to its
        // requests by position, and would take the next reply for the
        // failed frame's.
        failed: bool,
        outbound: mpsc::Receiver<Bytes>,
        reading: Reading,
        // The idle deadline moves with every frame; the timer is only reset
        // when it fires early, so a busy connection does not touch the
        // timer wheel per frame.
        idle_deadline: Instant,
        #[pin]
        idle_timer: Sleep,
        write_deadline: Option<Instant>,
        #[pin]
        write_timer: Sleep,
        close: Pin<Box<WaitForCancellationFutureOwned>>,
        shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
        cut: Pin<Box<WaitForCancellationFutureOwned>>,
        conn: Conn,
        events: EventSender,
        config: ConnConfig,
        // What `run` returns: the last error reported.
        last_error: Option<Error>,
    }
}

/// What became of a frame offered to the service.
enum Offer<F> {
    /// Taken: the future that handles it.
    Taken(F),
    /// The service is not ready; the frame is handed back.
    Busy(Frame),
    /// `poll_ready` failed (or panicked): the service takes no more frames.
    Closed(BoxError),
    /// `call` panicked: the frame's result is this error.
    Panicked(BoxError),
}

/// `poll_ready`, then `call` if ready, under one `catch_unwind`: a panic in
/// a user's service closes its own connection instead of the task (the
/// panic is reported as [`Error::Panic`]). The pipeline catches panics of
/// the future itself.
#[inline]
fn offer<S>(service: &mut S, frame: Frame, cx: &mut Context<'_>) -> Offer<S::Future>
where
    S: Service<Frame>,
    S::Error: Into<BoxError>,
{
    let mut called = false;
    let offered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        match service.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                called = true;
                Offer::Taken(service.call(frame))
            }
            Poll::Ready(Err(error)) => Offer::Closed(error.into()),
            Poll::Pending => Offer::Busy(frame),
        }
    }));
    match offered {
        Ok(offer) => offer,
        Err(payload) if called => Offer::Panicked(panic_error(payload)),
        Err(payload) => Offer::Closed(panic_error(payload)),
    }
}

impl<S> Driver<S, S::Future>
where
    S: Service<Frame>,
    S::Response: IntoReply,
    S::Error: Into<BoxError>,
{
    fn poll_drive(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Exit> {
        let mut this = self.project();
        if this.cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Exit::Aborted);
        }
        if *this.reading == Reading::Open {
            if this.close.as_mut().poll(cx).is_ready() {
                *this.reading = Reading::Done;
            } else if this.shutdown.as_mut().poll(cx).is_ready() {
                *this.reading = Reading::Draining;
            }
        }
        let high_water = this.config.write_buffer;
        let flush_at = FLUSH_AT.min(high_water);
        let peer = this.conn.peer_addr();
        let report = |events: &EventSender, last: &mut Option<Error>, error: Error| {
            events.send(peer, EventKind::Error(error.clone()));
            *last = Some(error);
        };

        // Whether `outbound` has our waker since it last came up empty. Once
        // it has, a cheap emptiness check replaces `poll_recv` (which takes
        // the waker again and costs as much as a frame) on every pass.
        let mut outbound_watched = false;
        // A frame was read or the last handler finished in this poll: the
        // idle deadline moves to now.
        let mut active = false;
        loop {
            // Move everything that is ready into the write buffer, reading
            // frames as long as there is room for them.
            loop {
                let mut progress = false;

                // Frames sent through `Conn`.
                if !outbound_watched || !this.outbound.is_empty() {
                    while this.framed.write_buffer().len() < high_water {
                        match this.outbound.poll_recv(cx) {
                            Poll::Ready(Some(bytes)) => {
                                write_buffer(this.framed).extend_from_slice(&bytes);
                                progress = true;
                            }
                            Poll::Ready(None) => break,
                            Poll::Pending => {
                                outbound_watched = true;
                                break;
                            }
                        }
                    }
                }

                // Handlers that finished, in frame order.
                while this.framed.write_buffer().len() < high_water {
                    let Poll::Ready(Some(result)) = this.pipeline.as_mut().poll_next(cx) else {
                        break;
                    };
                    progress = true;
                    // What the handler sent itself was queued before it
                    // finished, so it goes before the reply.
                    if !this.outbound.is_empty() {
                        while let Ok(bytes) = this.outbound.try_recv() {
                            write_buffer(this.framed).extend_from_slice(&bytes);
                        }
                    }
                    match result {
                        // After a frame that closed the connection nothing
                        // is answered, not even frames already in flight.
                        Ok(_) if *this.failed => {}
                        Ok(response) => {
                            if let Some(frame) = response.into_reply() {
                                let buffer = write_buffer(this.framed);
                                if let Err(error) = this.encoder.encode(frame, buffer) {
                                    report(this.events, this.last_error, error);
                                }
                            }
                        }
                        Err(error) => {
                            let error = Error::from_service(error);
                            if error.closes_connection() {
                                *this.reading = Reading::Done;
                                *this.failed = true;
                                *this.pending = None;
                            }
                            report(this.events, this.last_error, error);
                        }
                    }
                    if this.pipeline.is_empty() {
                        active = true;
                    }
                }

                // New frames, while there is room for them. A frame already
                // decoded is in hand and is handled even when reading stopped.
                while (this.pending.is_some() || *this.reading != Reading::Done)
                    && this.pipeline.len() < this.config.max_in_flight
                    && this.framed.write_buffer().len() < high_water
                {
                    if this.conn.close_requested() && *this.reading != Reading::Done {
                        *this.reading = Reading::Done;
                        continue;
                    }
                    if this.pending.is_none() && this.framed.read_buffer().capacity() == 0 {
                        take_buffer(this.framed.read_buffer_mut(), *this.read_capacity);
                    }
                    let frame = match this.pending.take() {
                        Some(frame) => frame,
                        None => match this.framed.poll_next_unpin(cx) {
                            Poll::Ready(Some(Ok(frame))) => {
                                active = true;
                                frame
                            }
                            Poll::Ready(Some(Err(error))) => {
                                *this.reading = Reading::Done;
                                let dead_socket = matches!(error, Error::Io(_));
                                report(this.events, this.last_error, error);
                                if dead_socket {
                                    return Poll::Ready(Exit::Aborted);
                                }
                                break;
                            }
                            Poll::Ready(None) => {
                                *this.reading = Reading::Done;
                                break;
                            }
                            Poll::Pending => {
                                if *this.reading == Reading::Draining
                                    && !unread_input(this.framed.get_ref())
                                {
                                    *this.reading = Reading::Done;
                                }
                                break;
                            }
                        },
                    };
                    match offer(this.service, frame, cx) {
                        Offer::Taken(future) => {
                            this.pipeline.as_mut().push(future);
                            progress = true;
                        }
                        Offer::Panicked(error) => {
                            this.pipeline.as_mut().push_failed(error);
                            progress = true;
                        }
                        Offer::Closed(error) => {
                            // A service that fails readiness cannot take
                            // frames any more.
                            *this.reading = Reading::Done;
                            report(this.events, this.last_error, Error::from_service(error));
                            break;
                        }
                        Offer::Busy(frame) => {
                            *this.pending = Some(frame);
                            break;
                        }
                    }
                }

                // Enough for a full-sized write: send it now rather than
                // after the whole batch, so the peer gets its first replies
                // while we read on (large frames).
                if !progress || this.framed.write_buffer().len() >= flush_at {
                    break;
                }
            }

            let finishing = *this.reading == Reading::Done
                && this.pending.is_none()
                && this.pipeline.is_empty();
            if finishing {
                // Refuse new frames from `Conn`, write the ones queued.
                this.outbound.close();
                while let Ok(bytes) = this.outbound.try_recv() {
                    write_buffer(this.framed).extend_from_slice(&bytes);
                }
            }

            // One flush for the whole batch (or for its first 16 KiB).
            let before = this.framed.write_buffer().len();
            if before > 0 {
                match Sink::<Frame>::poll_flush(Pin::new(&mut *this.framed), cx) {
                    Poll::Ready(Ok(())) => *this.write_deadline = None,
                    Poll::Ready(Err(error)) => {
                        report(this.events, this.last_error, error);
                        return Poll::Ready(Exit::Aborted);
                    }
                    Poll::Pending => {
                        let after = this.framed.write_buffer().len();
                        if after < before || this.write_deadline.is_none() {
                            *this.write_deadline = this
                                .config
                                .write_timeout
                                .map(|timeout| Instant::now() + timeout);
                        }
                    }
                }
                let after = this.framed.write_buffer().len();
                if before >= flush_at && after < before && after < high_water && !finishing {
                    // Flushed early, or room again: read and handle more
                    // before sleeping.
                    continue;
                }
            }
            if finishing && this.framed.write_buffer().is_empty() {
                return Poll::Ready(Exit::Finished);
            }

            // Idle: nothing in hand and no complete frame for too long.
            if let Some(timeout) = this.config.idle_timeout {
                if *this.reading == Reading::Open
                    && this.pipeline.is_empty()
                    && this.pending.is_none()
                {
                    // One clock read for all the frames of this poll, not
                    // one per frame: they all happened just now.
                    if active {
                        *this.idle_deadline = Instant::now() + timeout;
                        active = false;
                    }
                    let deadline = *this.idle_deadline;
                    let mut fired = this.idle_timer.as_mut().poll(cx).is_ready();
                    if fired && this.idle_timer.deadline() < deadline {
                        // The timer was set for an older deadline and frames
                        // came since: set it for the current one. A busy
                        // connection so touches the timer wheel once per
                        // timeout period, not once per batch.
                        this.idle_timer.as_mut().reset(deadline);
                        fired = this.idle_timer.as_mut().poll(cx).is_ready();
                    }
                    if fired {
                        *this.reading = Reading::Done;
                        report(this.events, this.last_error, Error::IdleTimeout(timeout));
                        continue;
                    }
                }
            }

            // Write: the peer stopped reading what we write.
            if let (Some(deadline), Some(timeout)) =
                (*this.write_deadline, this.config.write_timeout)
            {
                if this.write_timer.deadline() != deadline {
                    this.write_timer.as_mut().reset(deadline);
                }
                if this.write_timer.as_mut().poll(cx).is_ready() {
                    report(this.events, this.last_error, Error::WriteTimeout(timeout));
                    return Poll::Ready(Exit::Aborted);
                }
            }
            // Waiting: an empty buffer is given back rather than held (a
            // frame a handler still holds keeps only its own bytes alive).
            // Thousands of idle connections then cost no buffer memory.
            if this.framed.read_buffer().is_empty() && this.framed.read_buffer().capacity() > 0 {
                // A connection whose frames made its buffer grow takes one
                // of that size next time rather than growing it again.
                match give_back(this.framed.read_buffer_mut()) {
                    0 => {}
                    capacity => *this.read_capacity = capacity.min(MAX_READ_BUFFER),
                }
            }
            if this.framed.write_buffer().is_empty() && this.framed.write_buffer().capacity() > 0 {
                give_back(this.framed.write_buffer_mut());
            }
            return Poll::Pending;
        }
    }
}
