//! The handler futures of one connection, completed in frame order, with
//! panics caught, the connection's handler timeout applied, and the time
//! each handler waited measured.
//!
//! One frame at a time (the default) needs no queue: the user's future
//! lives in a slot inside the driver, so handling a frame allocates
//! nothing. A panic while polling it can only be that frame's, so one
//! `catch_unwind` around the poll covers it, and one [`Deadline`], kept from
//! frame to frame and armed only when a handler waits, bounds and times it.
//!
//! With more frames in flight, `FuturesOrdered` runs them concurrently and
//! yields their results in the order the frames arrived. There each future
//! is an [`InFlight`] with its own `catch_unwind` and deadline, so a panic
//! or a timeout is charged to its own frame and the frames before it keep
//! their replies.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{FuturesOrdered, Stream};
use pin_project_lite::pin_project;

use crate::BoxError;
use crate::layer::panic::panic_error;
use crate::layer::timeout::deadline::Deadline;

/// A handler's future, as a user's service returns it.
pub(crate) trait HandlerFuture:
    Future<Output = Result<Self::Response, Self::Error>>
{
    type Response;
    type Error: Into<BoxError>;
}

impl<F, T, E> HandlerFuture for F
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Response = T;
    type Error = E;
}

/// A frame's outcome: its handler's reply or failure.
pub(crate) type Outcome<R> = Result<R, BoxError>;

/// A frame's outcome, and how long its handler waited (`None` if it
/// answered at once).
struct Done<R> {
    outcome: Outcome<R>,
    waited: Option<Duration>,
}

/// Polls a handler's future with panics caught and its deadline applied;
/// once it is done, `waited` says how long it waited.
#[inline]
fn poll_handler<F: HandlerFuture>(
    future: Pin<&mut F>,
    deadline: &mut Deadline,
    waited: &mut Option<Duration>,
    cx: &mut Context<'_>,
) -> Poll<Outcome<F::Response>> {
    let outcome = match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
        Ok(Poll::Ready(output)) => output.map_err(Into::into),
        Ok(Poll::Pending) => match deadline.poll_expired(cx) {
            Poll::Ready(error) => Err(error),
            Poll::Pending => return Poll::Pending,
        },
        Err(payload) => Err(panic_error(payload)),
    };
    *waited = deadline.disarm();
    Poll::Ready(outcome)
}

pin_project! {
    /// One of several frames in flight.
    #[project = InFlightProjection]
    enum InFlight<F> {
        Running { #[pin] future: F, deadline: Deadline },
        Failed { error: Option<BoxError> },
    }
}

impl<F: HandlerFuture> Future for InFlight<F> {
    type Output = Done<F::Response>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            InFlightProjection::Running { future, deadline } => {
                let mut waited = None;
                poll_handler(future, deadline, &mut waited, cx)
                    .map(|outcome| Done { outcome, waited })
            }
            InFlightProjection::Failed { error } => Poll::Ready(Done {
                outcome: Err(error.take().expect("polled after it finished")),
                waited: None,
            }),
        }
    }
}

pin_project! {
    pub(crate) struct Pipeline<F: HandlerFuture> {
        // Frames in hand, kept here because the driver asks after every
        // step.
        len: usize,
        // How long the handler of the last outcome waited.
        waited: Option<Duration>,
        #[pin]
        inner: Inner<F>,
    }
}

pin_project! {
    #[project = Projection]
    enum Inner<F: HandlerFuture> {
        Single {
            // The frame in flight, if it has a future.
            #[pin]
            slot: Option<F>,
            // The frame in flight failed before it had a future (`call`
            // panicked, or it could not be decoded): this is its result.
            failed: Option<BoxError>,
            deadline: Deadline,
        },
        Many {
            queue: FuturesOrdered<InFlight<F>>,
            timeout: Option<Duration>,
        },
    }
}

impl<F: HandlerFuture> Pipeline<F> {
    /// A pipeline of up to `max_in_flight` frames, each handler bounded by
    /// `timeout`.
    pub(crate) fn new(max_in_flight: usize, timeout: Option<Duration>) -> Self {
        let inner = if max_in_flight <= 1 {
            Inner::Single {
                slot: None,
                failed: None,
                deadline: Deadline::new(timeout),
            }
        } else {
            Inner::Many {
                queue: FuturesOrdered::new(),
                timeout,
            }
        };
        Pipeline {
            len: 0,
            waited: None,
            inner,
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a future; the caller keeps `len()` within its limit (one for a
    /// single slot).
    #[inline]
    pub(crate) fn push(self: Pin<&mut Self>, future: F) {
        let this = self.project();
        *this.len += 1;
        match this.inner.project() {
            Projection::Single { mut slot, .. } => {
                debug_assert!(slot.is_none(), "one frame at a time");
                slot.set(Some(future));
            }
            Projection::Many { queue, timeout } => {
                queue.push_back(InFlight::Running {
                    future,
                    deadline: Deadline::new(*timeout),
                });
            }
        }
    }

    /// Adds the result of a frame that failed before it had a future, to
    /// be yielded in its frame's turn.
    pub(crate) fn push_failed(self: Pin<&mut Self>, error: BoxError) {
        let this = self.project();
        *this.len += 1;
        match this.inner.project() {
            Projection::Single { failed, .. } => *failed = Some(error),
            Projection::Many { queue, .. } => {
                queue.push_back(InFlight::Failed { error: Some(error) })
            }
        }
    }

    /// How long the handler of the last outcome [`poll_next`](Self::poll_next)
    /// returned waited; `None` if it answered at once.
    #[inline]
    pub(crate) fn waited(&self) -> Option<Duration> {
        self.waited
    }

    /// The next outcome in frame order; `Ready(None)` when empty. A handler
    /// that panics yields [`Error::Panic`](crate::Error::Panic), one that
    /// runs out of time [`Error::HandlerTimeout`](crate::Error::HandlerTimeout),
    /// boxed.
    #[inline]
    pub(crate) fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Outcome<F::Response>>> {
        let this = self.project();
        if *this.len == 0 {
            return Poll::Ready(None);
        }
        let outcome = match this.inner.project() {
            Projection::Single {
                mut slot,
                failed,
                deadline,
            } => match slot.as_mut().as_pin_mut() {
                Some(future) => match poll_handler(future, deadline, this.waited, cx) {
                    Poll::Ready(outcome) => {
                        slot.set(None);
                        outcome
                    }
                    Poll::Pending => return Poll::Pending,
                },
                None => {
                    *this.waited = None;
                    Err(failed.take().expect("the frame in flight failed"))
                }
            },
            Projection::Many { queue, .. } => match Pin::new(queue).poll_next(cx) {
                Poll::Ready(Some(done)) => {
                    *this.waited = done.waited;
                    done.outcome
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            },
        };
        *this.len -= 1;
        Poll::Ready(Some(outcome))
    }
}
