//! The connection driver: reads frames, calls the service, writes replies.
//!
//! One `poll` runs a whole batch, in steps with one job each:
//!
//! | step | job |
//! |---|---|
//! | [`signals`](Step::signals) | cut, close, graceful shutdown |
//! | [`take_sent`](Step::take_sent) | frames sent through [`Conn`], into the write buffer |
//! | [`take_replies`](Step::take_replies) | finished handlers' replies, in frame order; failed frames per the [error policy](crate::ServerBuilder::on_error) |
//! | [`read_frames`](Step::read_frames) | new frames, handed to the service while there is room |
//! | [`flush`](Step::flush) | one write for the whole batch |
//! | [`idle`](Step::idle), [`write_stalled`](Step::write_stalled) | the idle and write timeouts |
//! | [`release`](Step::release) | empty buffers back to the pool before waiting |
//!
//! Replies and new frames alternate while they make progress (frames a
//! handler sent through `Conn` go before its reply; others are taken once
//! per pass, and wake the connection); only replies that reach 16 KiB
//! (large frames) are written before the batch ends. Nothing that has our
//! waker (the signals, the send queue, the idle timer) is polled again
//! while the task's waker is the same: a check of its flag replaces the
//! poll (for the send queue only while no wake-up for a frame already
//! taken can still be on its way, see `outbound_watched`). Reading pauses
//! while the write buffer is above its high-water mark, so a peer that
//! does not read cannot make the connection buffer without bound; the
//! write timeout then closes it. A client's connection reads its answers
//! regardless (they are bounded by `max_pending`): a server that pauses
//! the same way would otherwise deadlock with it.
//!
//! How a connection ends:
//! * it stops *reading* when the peer half-closes, on a failed frame that
//!   no hook answered, on [`Conn::close`], or (graceful shutdown) once the
//!   bytes the stream already holds are read;
//! * it then finishes every frame in hand, writes every reply and queued
//!   frame, sends FIN, and reads and discards for a short linger so that
//!   the peer gets our last bytes rather than a reset;
//! * a cut, a write timeout or a dead stream end it at once.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use pin_project_lite::pin_project;
use tokio::sync::mpsc;
use tokio::task::coop;
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower::Service;

use super::close;
use super::offer::{Offer, offer};
use super::pipeline::{HandlerFuture, Outcome, Pipeline};
use super::read::{FrameReader, ReadError};
use super::write::FrameWriter;
use super::{Conn, ConnConfig, ErrorHook, Outbound, Requests};
use crate::codec::FrameCodec;
use crate::event::{EventKind, EventSender};
use crate::layer::panic::panic_error;
use crate::stats::{CloseReason, Counters, Tally};
use crate::transport::Io;
use crate::{BoxError, Error, Frame, IntoReply};

/// The server-wide (or client-wide) signals a connection obeys.
#[derive(Debug, Clone, Default)]
pub(crate) struct Signals {
    /// Graceful shutdown: read what the stream already holds, answer it,
    /// close.
    shutdown: CancellationToken,
    /// Stop now.
    cut: CancellationToken,
    /// Set before either token is cancelled: a connection that has
    /// registered for both checks this flag alone while it is not set.
    raised: Arc<AtomicBool>,
}

impl Signals {
    /// Starts a graceful shutdown.
    pub(crate) fn shut_down(&self) {
        self.raised.store(true, Ordering::Release);
        self.shutdown.cancel();
    }

    /// Stops every connection now.
    pub(crate) fn cut(&self) {
        self.raised.store(true, Ordering::Release);
        self.cut.cancel();
    }

    /// Waits for [`shut_down`](Self::shut_down).
    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Waits for [`cut`](Self::cut).
    pub(crate) fn cut_token(&self) -> &CancellationToken {
        &self.cut
    }

    /// Whether either signal was given.
    #[inline]
    fn raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }
}

/// Replies that fill this many bytes are written at once, mid-batch: a
/// write this big already amortises its system call, and waiting for the
/// rest of the batch would only delay the peer. Smaller replies wait for
/// the end of the batch, so that a batch of small frames costs one write.
const FLUSH_AT: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Open,
    /// Graceful shutdown: read only what is already there.
    Draining,
    Done,
}

/// How [`poll_drive`](Driver::poll_drive) ended.
pub(super) enum Exit {
    /// Every reply written: close politely.
    Finished,
    /// Drop the stream now.
    Aborted,
}

/// The per-connection limits the driver enforces.
struct Limits {
    idle_timeout: Option<Duration>,
    /// How long a frame may wait for the service to be ready, as for its
    /// handler to finish.
    handler_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    write_buffer: usize,
    max_in_flight: usize,
    linger: Duration,
}

impl<T, C, S> Driver<T, C, S, S::Future>
where
    T: Io,
    C: FrameCodec,
    S: Service<Frame>,
    S::Response: IntoReply,
    S::Error: Into<BoxError>,
{
    /// A driver for one connection, ready to be polled.
    pub(super) fn new(
        io: T,
        service: S,
        conn: Conn,
        outbound: Outbound,
        config: ConnConfig<C>,
        signals: &Signals,
        events: EventSender,
    ) -> Self {
        let now = Instant::now();
        let idle_deadline = config.idle_timeout.map_or(now, |timeout| now + timeout);
        Driver {
            io,
            reader: FrameReader::new(config.codec),
            writer: FrameWriter::default(),
            service,
            pipeline: Pipeline::new(config.max_in_flight, config.handler_timeout),
            pending: None,
            failed: false,
            outbound: outbound.receiver,
            requests: outbound.requests,
            answers: Vec::new(),
            reading: Reading::Open,
            idle_deadline,
            idle_timer: sleep_until(idle_deadline),
            idle_watched: false,
            write_deadline: None,
            write_timer: sleep_until(now),
            close: Box::pin(conn.close_token().clone().cancelled_owned()),
            shutdown: Box::pin(signals.shutdown.clone().cancelled_owned()),
            cut: Box::pin(signals.cut.clone().cancelled_owned()),
            signals: signals.clone(),
            waker: None,
            sent: 0,
            taken: 0,
            outbound_watched: false,
            conn,
            counters: events.counters().clone(),
            events,
            limits: Limits {
                idle_timeout: config.idle_timeout,
                handler_timeout: config.handler_timeout,
                write_timeout: config.write_timeout,
                write_buffer: config.write_buffer,
                max_in_flight: config.max_in_flight,
                linger: config.linger,
            },
            on_error: config.on_error,
            ready_timer: None,
            waiting_ready: false,
            last_error: None,
            shut: false,
            fin_sent: false,
            tally: Tally::default(),
            reason: CloseReason::Peer,
        }
    }
}

pin_project! {
    /// One connection's state, polled by the connection's future.
    #[project = Step]
    pub(super) struct Driver<T, C, S, F: HandlerFuture> {
        io: T,
        reader: FrameReader<C>,
        writer: FrameWriter,
        service: S,
        #[pin]
        pipeline: Pipeline<F>,
        // Decoded, waiting for the service to be ready.
        pending: Option<Frame>,
        // A frame failed and closed the connection. The frames after it get
        // no reply: a pipelined peer matches replies to its requests by
        // position, and would take the next reply for the failed frame's.
        failed: bool,
        outbound: mpsc::Receiver<Bytes>,
        // A client's requests, queued already encoded. With them, every
        // frame read is the answer to one, handed to them rather than to
        // the service.
        requests: Option<Arc<dyn Requests>>,
        // Answers read and not yet handed over (a client's).
        answers: Vec<Frame>,
        reading: Reading,
        // The idle deadline moves with every frame; the timer is only reset
        // when it fires early, so a busy connection does not touch the
        // timer wheel per frame.
        idle_deadline: Instant,
        #[pin]
        idle_timer: Sleep,
        // `idle_timer` has our waker: it was polled with `waker` and not
        // reset since, so until it fires, polling it again changes nothing.
        idle_watched: bool,
        write_deadline: Option<Instant>,
        #[pin]
        write_timer: Sleep,
        close: Pin<Box<WaitForCancellationFutureOwned>>,
        shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
        cut: Pin<Box<WaitForCancellationFutureOwned>>,
        // The tokens behind `shutdown` and `cut`.
        signals: Signals,
        // The waker `close`, `shutdown` and `cut` were last
        // polled with. Their registrations stand while the task's waker is
        // the same, so a check of the flags then replaces polling them,
        // which takes their locks and costs as much as a few frames.
        waker: Option<Waker>,
        // `Conn::sent` when the driver last took what handlers sent.
        sent: u64,
        // Frames taken from `outbound` so far.
        taken: u64,
        // `outbound` came up empty at a `poll_recv` that left our waker
        // with it, and nothing was taken since: a cheap emptiness check
        // then replaces `poll_recv` (which takes the waker again and costs
        // as much as a frame). Only when every frame taken before had been
        // counted in `Conn::sent` before that `poll_recv`: a sender counts
        // its frame after its wake-up, and a wake-up still on its way for
        // a frame already taken would spend the registration, leaving the
        // next frame to wake nobody.
        outbound_watched: bool,
        conn: Conn,
        events: EventSender,
        counters: Arc<Counters>,
        limits: Limits,
        on_error: Option<ErrorHook>,
        // What the connection returns: the last error reported.
        last_error: Option<Error>,
        // A frame waits for the service to be ready: since when, bounded
        // like a handler (made only for a service that ever makes a frame
        // wait).
        ready_timer: Option<Pin<Box<Sleep>>>,
        waiting_ready: bool,
        // Closing politely: the linger started.
        shut: bool,
        // Closing politely: the stream took our FIN.
        fin_sent: bool,
        // What this batch did, added to the counters at its end.
        tally: Tally,
        // Why the connection ends, for the closed-connections metric.
        reason: CloseReason,
    }
}

/// What one poll has seen so far.
#[derive(Default)]
struct Pass {
    /// A frame was read or the last handler finished: the idle deadline
    /// moves to now.
    active: bool,
    /// The stream had nothing to read, and has our waker: reading again
    /// before it wakes us would only find it empty again.
    read_blocked: bool,
}

/// What the flush step decided.
enum Flushed {
    /// Flushed early, or there is room again: read and handle more before
    /// waiting.
    Again,
    Exit(Exit),
    Wait,
}

impl<T, C, S> Driver<T, C, S, S::Future>
where
    T: Io,
    C: FrameCodec,
    S: Service<Frame>,
    S::Response: IntoReply,
    S::Error: Into<BoxError>,
{
    /// Runs the connection until it has nothing left to do.
    pub(super) fn poll_drive(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Exit> {
        let mut this = self.project();
        let exit = this.poll_batch(cx);
        this.count();
        exit
    }
}

impl<T, C, S> Step<'_, T, C, S, S::Future>
where
    T: Io,
    C: FrameCodec,
    S: Service<Frame>,
    S::Response: IntoReply,
    S::Error: Into<BoxError>,
{
    /// One batch: everything that can be done now.
    fn poll_batch(&mut self, cx: &mut Context<'_>) -> Poll<Exit> {
        let this = self;
        if this.signals(cx) {
            *this.reason = CloseReason::Cut;
            return Poll::Ready(Exit::Aborted);
        }
        let flush_at = FLUSH_AT.min(this.limits.write_buffer);
        let mut pass = Pass::default();
        loop {
            // Move everything that is ready into the write buffer, reading
            // frames as long as there is room for them. (Frames sent
            // through `Conn` later wake us, or come before the reply of the
            // handler that sent them.)
            this.take_sent(cx);
            loop {
                let mut progress = this.take_replies(cx, &mut pass);
                match this.read_frames(cx, &mut pass) {
                    Ok(read) => progress |= read,
                    Err(exit) => return Poll::Ready(exit),
                }
                // Enough for a full-sized write: send it now rather than
                // after the whole batch, so the peer gets its first replies
                // while we read on (large frames).
                if !progress || this.writer.len() >= flush_at {
                    break;
                }
            }
            let finishing = this.finishing();
            match this.flush(cx, finishing, flush_at) {
                Flushed::Again => continue,
                Flushed::Exit(exit) => return Poll::Ready(exit),
                Flushed::Wait => {}
            }
            if finishing && this.writer.is_empty() {
                return Poll::Ready(Exit::Finished);
            }
            if this.idle(cx, &mut pass) {
                continue;
            }
            if this.ready_stalled(cx) {
                continue;
            }
            if this.write_stalled(cx) {
                return Poll::Ready(Exit::Aborted);
            }
            this.release();
            return Poll::Pending;
        }
    }

    /// Adds this batch's tally to the counters.
    fn count(&mut self) {
        self.tally.bytes_read += self.reader.take_read();
        self.tally.bytes_written += self.writer.take_written();
        if !self.tally.is_empty() {
            self.counters.add(self.tally);
            *self.tally = Tally::default();
        }
    }
}

impl<T, C, S> Driver<T, C, S, S::Future>
where
    T: Io,
    C: FrameCodec,
    S: Service<Frame>,
    S::Response: IntoReply,
    S::Error: Into<BoxError>,
{
    /// Closes politely (see [`close`](super::close)), within the linger;
    /// a cut ends it at once.
    pub(super) fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        if this.cut.as_mut().poll(cx).is_ready() {
            *this.reason = CloseReason::Cut;
            return Poll::Ready(());
        }
        if !*this.shut {
            *this.shut = true;
            let linger = Instant::now().checked_add(this.limits.linger);
            if let Some(deadline) = linger {
                this.write_timer.as_mut().reset(deadline);
            }
        }
        if this.write_timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        close::poll_close_politely(this.io, cx, this.fin_sent)
    }

    /// The last error the connection reported.
    pub(super) fn take_last_error(self: Pin<&mut Self>) -> Option<Error> {
        self.project().last_error.take()
    }

    /// Counts the connection as closed; its context and event sender, for
    /// its end.
    pub(super) fn finish(self: Pin<&mut Self>) -> (&Conn, &EventSender) {
        let this = self.project();
        this.counters.closed(*this.reason);
        (this.conn, this.events)
    }
}

impl<T, C, S> Step<'_, T, C, S, S::Future>
where
    T: Io,
    C: FrameCodec,
    S: Service<Frame>,
    S::Response: IntoReply,
    S::Error: Into<BoxError>,
{
    /// Obeys the signals; returns whether the connection is cut.
    fn signals(&mut self, cx: &mut Context<'_>) -> bool {
        if self
            .waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            // Polled with this waker before: each signal sets its flag
            // before it wakes us.
            let raised = self.signals.raised();
            if raised && self.signals.cut.is_cancelled() {
                return true;
            }
            if *self.reading == Reading::Open {
                if self.conn.close_requested() {
                    self.stop_reading(CloseReason::Local);
                } else if raised && self.signals.shutdown.is_cancelled() {
                    *self.reading = Reading::Draining;
                    *self.reason = CloseReason::Shutdown;
                }
            }
            return false;
        }
        *self.waker = Some(cx.waker().clone());
        *self.outbound_watched = false;
        *self.idle_watched = false;
        if self.cut.as_mut().poll(cx).is_ready() {
            return true;
        }
        if *self.reading == Reading::Open {
            if self.close.as_mut().poll(cx).is_ready() {
                self.stop_reading(CloseReason::Local);
            } else if self.shutdown.as_mut().poll(cx).is_ready() {
                *self.reading = Reading::Draining;
                *self.reason = CloseReason::Shutdown;
            }
        }
        false
    }

    /// Frames sent through `Conn` (and a client's requests), into the
    /// write buffer.
    fn take_sent(&mut self, cx: &mut Context<'_>) {
        if self.requests.is_some() {
            let room = self.writer.len() < self.limits.write_buffer;
            self.take_requests(cx.waker(), room);
        }
        if *self.outbound_watched && self.outbound.is_empty() {
            return;
        }
        *self.outbound_watched = false;
        // Read before `poll_recv` registers our waker. Counts, not sets,
        // are compared: a frame counted and not yet taken while another is
        // taken and not yet counted sits behind the first, and tokio's
        // `is_empty` (tail minus head) reports it, so the next poll
        // registers again.
        let counted = self.conn.sent();
        while self.writer.len() < self.limits.write_buffer {
            match self.outbound.poll_recv(cx) {
                Poll::Ready(Some(bytes)) => {
                    self.writer.put(&bytes);
                    *self.taken += 1;
                    self.tally.frames_written += 1;
                }
                Poll::Ready(None) => break,
                Poll::Pending => {
                    // Unless it was only out of budget (tokio's `coop`),
                    // which wakes us without keeping our waker.
                    *self.outbound_watched = counted == *self.taken && coop::has_budget_remaining();
                    break;
                }
            }
        }
    }

    /// A client's requests, into the write buffer if there is `room`: all
    /// that are queued (their number is bounded by `max_pending`, their
    /// bytes by the client, which waits while the queue holds
    /// `write_buffer` bytes).
    #[inline(never)]
    fn take_requests(&mut self, waker: &Waker, room: bool) {
        if let Some(requests) = self.requests.as_ref() {
            let writer = &mut *self.writer;
            self.tally.frames_written += requests.take(waker, room, &mut |bytes| writer.put(bytes));
        }
    }

    /// Handlers that finished, in frame order: their replies into the write
    /// buffer, their failures to the error policy.
    fn take_replies(&mut self, cx: &mut Context<'_>, pass: &mut Pass) -> bool {
        let mut progress = false;
        while self.writer.len() < self.limits.write_buffer {
            let Poll::Ready(Some(outcome)) = self.pipeline.as_mut().poll_next(cx) else {
                break;
            };
            progress = true;
            self.settle(outcome, pass);
        }
        progress
    }

    /// A frame's outcome, in its turn: its reply into the write buffer, or
    /// its failure to the error policy.
    #[inline]
    fn settle(&mut self, outcome: Outcome<S::Response>, pass: &mut Pass) {
        match self.pipeline.waited() {
            None => self.tally.immediate += 1,
            Some(took) => self.counters.handler_took(took),
        }
        // What the handler sent itself was queued before it finished, so it
        // goes before the reply.
        let sent = self.conn.sent();
        if sent != *self.sent {
            *self.sent = sent;
            self.take_sent_now();
        }
        match outcome {
            // After a frame that closed the connection nothing is answered,
            // not even frames already in flight.
            Ok(_) if *self.failed => {}
            Ok(response) => {
                if let Some(frame) = response.into_reply() {
                    match self.writer.encode(self.reader.codec(), frame) {
                        Ok(()) => self.tally.frames_written += 1,
                        Err(error) => self.frame_failed(error),
                    }
                }
            }
            Err(error) => self.handler_failed(error),
        }
        if self.pipeline.is_empty() {
            pass.active = true;
        }
    }

    /// What handlers sent through `Conn`, into the write buffer before
    /// their replies.
    #[cold]
    fn take_sent_now(&mut self) {
        *self.outbound_watched = false;
        while let Ok(bytes) = self.outbound.try_recv() {
            self.writer.put(&bytes);
            *self.taken += 1;
            self.tally.frames_written += 1;
        }
    }

    #[cold]
    fn handler_failed(&mut self, error: BoxError) {
        self.frame_failed(Error::from_service(error));
    }

    /// New frames, handed to the service while there is room for them. A
    /// frame already decoded is in hand and is handled even when reading
    /// stopped. Fails only when the stream is dead.
    fn read_frames(&mut self, cx: &mut Context<'_>, pass: &mut Pass) -> Result<bool, Exit> {
        if self.requests.is_some() {
            return self.read_answers(cx, pass);
        }
        let mut progress = false;
        while (self.pending.is_some() || *self.reading != Reading::Done)
            && self.pipeline.len() < self.limits.max_in_flight
            && self.writer.len() < self.limits.write_buffer
        {
            if self.conn.close_requested() && *self.reading != Reading::Done {
                self.stop_reading(CloseReason::Local);
                continue;
            }
            let frame = match self.pending.take() {
                Some(frame) => frame,
                None if pass.read_blocked => break,
                None => match self.reader.poll_next(self.io, cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        pass.active = true;
                        self.tally.frames_read += 1;
                        frame
                    }
                    Poll::Ready(Some(Err(ReadError::Decode { error, resumable }))) => {
                        if self.refused(error, resumable) {
                            progress = true;
                            continue;
                        }
                        break;
                    }
                    Poll::Ready(Some(Err(ReadError::Io(error)))) => {
                        return Err(self.read_failed(error));
                    }
                    Poll::Ready(None) => {
                        self.stop_reading(CloseReason::Peer);
                        break;
                    }
                    Poll::Pending => {
                        self.read_blocked(pass);
                        break;
                    }
                },
            };
            // A span per frame, at trace level only: otherwise it costs one
            // check of the level.
            let offered = if tracing::level_enabled!(tracing::Level::TRACE) {
                self.offer_traced(frame, cx)
            } else {
                offer(self.service, frame, cx)
            };
            match offered {
                Offer::Taken(future) => {
                    self.pipeline.as_mut().push(future);
                    *self.waiting_ready = false;
                    progress = true;
                }
                Offer::Panicked(error) => {
                    *self.waiting_ready = false;
                    self.pipeline.as_mut().push_failed(error);
                    progress = true;
                }
                Offer::Unusable(error) => {
                    self.unusable(error);
                    break;
                }
                Offer::Busy(frame) => {
                    *self.pending = Some(frame);
                    self.wait_ready();
                    break;
                }
            }
        }
        Ok(progress)
    }

    /// A client's side of [`read_frames`](Self::read_frames): every frame
    /// read is the answer to the oldest waiting request, and the answers of
    /// a read go to the requests at once, without the service (a request
    /// is answered at once, with no handler to wait for). The codec
    /// refusing an answer closes the connection whatever the error policy
    /// (there is no handler whose place a hook's reply could take).
    #[inline(never)]
    fn read_answers(&mut self, cx: &mut Context<'_>, pass: &mut Pass) -> Result<bool, Exit> {
        let mut progress = false;
        let mut failed = None;
        // Answers are read whatever the write buffer holds: they are
        // bounded by `max_pending`, not by what we write, and a server
        // that pauses its reading while we do not read its answers would
        // otherwise never take the requests we wait to write (a deadlock
        // once both ends queue more than the sockets hold).
        while *self.reading != Reading::Done && !pass.read_blocked {
            if self.conn.close_requested() {
                self.stop_reading(CloseReason::Local);
                break;
            }
            match self.reader.poll_next(self.io, cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    pass.active = true;
                    self.tally.frames_read += 1;
                    self.answers.push(frame);
                    progress = true;
                }
                Poll::Ready(Some(Err(error))) => {
                    failed = Some(error);
                    break;
                }
                Poll::Ready(None) => {
                    self.stop_reading(CloseReason::Peer);
                    break;
                }
                Poll::Pending => {
                    self.read_blocked(pass);
                    break;
                }
            }
        }
        // The answers before a failure are answers.
        if !self.answers.is_empty() {
            if let Some(requests) = self.requests.as_ref() {
                if let Err(error) = requests.answer(self.answers) {
                    self.answers.clear();
                    self.close_for(error);
                }
            }
        }
        match failed {
            None => {}
            // No hook: a client has no handler whose place its reply could
            // take.
            Some(ReadError::Decode { error, .. }) => {
                self.refused(error, false);
            }
            Some(ReadError::Io(error)) => return Err(self.read_failed(error)),
        }
        Ok(progress)
    }

    /// The stream has nothing to read now, and has our waker. Draining, a
    /// connection with nothing left unread stops reading.
    #[inline]
    fn read_blocked(&mut self, pass: &mut Pass) {
        pass.read_blocked = true;
        if *self.reading == Reading::Draining && !self.io.has_unread_input() {
            self.stop_reading(CloseReason::Shutdown);
        }
    }

    /// `offer`, in a span of its own.
    #[cold]
    fn offer_traced(&mut self, frame: Frame, cx: &mut Context<'_>) -> Offer<S::Future> {
        let span = tracing::trace_span!("frame", len = frame.len());
        span.in_scope(|| offer(self.service, frame, cx))
    }

    /// The codec refused a frame: returns whether it goes on (the hook
    /// answers the frame in its turn, after the frames before it).
    #[cold]
    fn refused(&mut self, error: Error, resumable: bool) -> bool {
        if resumable && self.on_error.is_some() {
            self.pipeline.as_mut().push_failed(Box::new(error));
            return true;
        }
        // Without a hook the answer is known: close, after answering the
        // frames before this one.
        self.stop_reading(CloseReason::Error);
        self.report(error, true);
        false
    }

    /// The stream failed.
    #[cold]
    fn read_failed(&mut self, error: std::io::Error) -> Exit {
        self.stop_reading(CloseReason::Error);
        self.report(Error::from(error), true);
        Exit::Aborted
    }

    /// A service that fails readiness cannot take frames any more.
    #[cold]
    fn unusable(&mut self, error: BoxError) {
        self.stop_reading(CloseReason::Error);
        self.report(Error::from_service(error), true);
    }

    /// Whether the connection has nothing left but writing; if so, refuses
    /// new frames from `Conn` and takes the ones queued.
    fn finishing(&mut self) -> bool {
        let finishing =
            *self.reading == Reading::Done && self.pending.is_none() && self.pipeline.is_empty();
        if finishing {
            // A client's requests still queued are not taken: no answer
            // can be read any more, and their callers get `Closed`, so a
            // request that fails is never one the server saw (a retry
            // would run it twice).
            self.outbound.close();
            *self.outbound_watched = false;
            while let Ok(bytes) = self.outbound.try_recv() {
                self.writer.put(&bytes);
            }
        }
        finishing
    }

    /// One write for the whole batch (or for its first 16 KiB).
    fn flush(&mut self, cx: &mut Context<'_>, finishing: bool, flush_at: usize) -> Flushed {
        let before = self.writer.len();
        if !self.writer.has_work() {
            return Flushed::Wait;
        }
        match self.writer.poll_flush(self.io, cx) {
            Poll::Ready(Ok(())) => *self.write_deadline = None,
            Poll::Ready(Err(error)) => {
                self.report(Error::from(error), true);
                return Flushed::Exit(Exit::Aborted);
            }
            Poll::Pending => {
                let after = self.writer.len();
                if after < before || self.write_deadline.is_none() {
                    *self.write_deadline = self
                        .limits
                        .write_timeout
                        .map(|timeout| Instant::now() + timeout);
                }
            }
        }
        let after = self.writer.len();
        if before >= flush_at && after < before && after < self.limits.write_buffer && !finishing {
            return Flushed::Again;
        }
        Flushed::Wait
    }

    /// The idle timeout: nothing in hand and no complete frame for too
    /// long. Returns whether it fired (reading stopped).
    fn idle(&mut self, cx: &mut Context<'_>, pass: &mut Pass) -> bool {
        let Some(timeout) = self.limits.idle_timeout else {
            return false;
        };
        if *self.reading != Reading::Open || !self.pipeline.is_empty() || self.pending.is_some() {
            return false;
        }
        // One clock read for all the frames of this poll, not one per frame:
        // they all happened just now.
        if pass.active {
            *self.idle_deadline = Instant::now() + timeout;
            pass.active = false;
        }
        let deadline = *self.idle_deadline;
        let mut fired = if *self.idle_watched {
            self.idle_timer.is_elapsed()
        } else {
            self.poll_idle_timer(cx)
        };
        if fired && self.idle_timer.deadline() < deadline {
            // The timer was set for an older deadline and frames came
            // since: set it for the current one. A busy connection so
            // touches the timer wheel once per timeout period, not once per
            // batch.
            self.idle_timer.as_mut().reset(deadline);
            fired = self.poll_idle_timer(cx);
        }
        if fired {
            self.stop_reading(CloseReason::Error);
            self.report(Error::IdleTimeout(timeout), true);
        }
        fired
    }

    /// Polls the idle timer; returns whether it fired.
    fn poll_idle_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let fired = self.idle_timer.as_mut().poll(cx).is_ready();
        // Unless it was only out of budget (tokio's `coop`), which wakes
        // us without keeping our waker, it has our waker until it fires.
        *self.idle_watched = !fired && coop::has_budget_remaining();
        fired
    }

    /// The frame in hand starts waiting for the service to be ready: the
    /// handler timeout bounds that wait too, so that a service that is
    /// never ready (a concurrency limit held elsewhere, a rate limit) does
    /// not hold the frame, and its connection, forever.
    #[cold]
    fn wait_ready(&mut self) {
        if *self.waiting_ready {
            return;
        }
        let Some(timeout) = self.limits.handler_timeout else {
            return;
        };
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            return;
        };
        *self.waiting_ready = true;
        match self.ready_timer.as_mut() {
            Some(timer) => timer.as_mut().reset(deadline),
            None => *self.ready_timer = Some(Box::pin(sleep_until(deadline))),
        }
    }

    /// Whether the frame in hand waited for the service past the handler
    /// timeout; if so, it fails with [`Error::HandlerTimeout`] in its turn
    /// (answered by the hook, or closing the connection), and the
    /// connection goes on with the next.
    fn ready_stalled(&mut self, cx: &mut Context<'_>) -> bool {
        if !*self.waiting_ready || self.pending.is_none() {
            return false;
        }
        let (Some(timer), Some(timeout)) = (self.ready_timer.as_mut(), self.limits.handler_timeout)
        else {
            return false;
        };
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        *self.waiting_ready = false;
        *self.pending = None;
        self.pipeline
            .as_mut()
            .push_failed(Box::new(Error::HandlerTimeout { timeout }));
        true
    }

    /// The write timeout: the peer stopped reading what we write. Returns
    /// whether it fired.
    fn write_stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let (Some(deadline), Some(timeout)) = (*self.write_deadline, self.limits.write_timeout)
        else {
            return false;
        };
        if self.write_timer.deadline() != deadline {
            self.write_timer.as_mut().reset(deadline);
        }
        if self.write_timer.as_mut().poll(cx).is_ready() {
            self.report(Error::WriteTimeout(timeout), true);
            return true;
        }
        false
    }

    /// Gives empty buffers back before waiting: thousands of idle
    /// connections then cost no buffer memory.
    fn release(&mut self) {
        self.reader.release();
        self.writer.release();
    }

    /// A frame failed: the `on_error` hook's reply goes in its place, or
    /// the connection closes after the replies before it.
    fn frame_failed(&mut self, error: Error) {
        if *self.failed {
            // A frame in flight behind the one that closed the connection:
            // counted, logged at debug, but no event of its own (the close
            // was reported once).
            self.counters.error(&error);
            tracing::debug!(%error, "frame after the one that closed the connection");
            return;
        }
        let Some(reply) = self.ask_hook(&error) else {
            self.close_for(error);
            return;
        };
        match self.writer.encode(self.reader.codec(), reply) {
            Ok(()) => self.report(error, false),
            Err(unencodable) => {
                self.close_for(error);
                self.report(unencodable, true);
            }
        }
    }

    /// The hook's reply to `error`; `None` without a hook, or when the
    /// hook panics (reported).
    fn ask_hook(&mut self, error: &Error) -> Option<Frame> {
        let hook = self.on_error.as_ref()?;
        let conn = &*self.conn;
        match catch_unwind(AssertUnwindSafe(|| (hook.0)(error, conn))) {
            Ok(reply) => reply,
            Err(payload) => {
                let panic = Error::from_service(panic_error(payload));
                self.report(panic, true);
                None
            }
        }
    }

    /// Closes the connection for a failed frame: no later frame is read or
    /// answered.
    fn close_for(&mut self, error: Error) {
        self.stop_reading(CloseReason::Error);
        *self.failed = true;
        *self.pending = None;
        self.report(error, true);
    }

    fn stop_reading(&mut self, reason: CloseReason) {
        if *self.reading != Reading::Done {
            if *self.reading == Reading::Open || reason == CloseReason::Error {
                *self.reason = reason;
            }
            *self.reading = Reading::Done;
            self.conn.mark_done_reading();
        }
    }

    fn report(&mut self, error: Error, closing: bool) {
        if closing {
            *self.reason = CloseReason::Error;
        }
        self.events.send(
            self.conn.peer_addr_ref(),
            EventKind::Error {
                error: error.clone(),
                closing,
            },
        );
        *self.last_error = Some(error);
    }
}
