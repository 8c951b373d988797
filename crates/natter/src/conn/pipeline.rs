//! The handler futures of one connection, completed in frame order, with
//! panics caught and the connection's handler timeout applied.
//!
//! One frame at a time (the default) needs no queue: the user's future
//! lives in a slot inside the driver, so handling a frame allocates
//! nothing, and it needs no wrapper either. A panic while polling it can
//! only be that frame's, so one `catch_unwind` around the poll covers it,
//! and one timer, kept from frame to frame and armed only when a handler
//! waits, bounds it.
//!
//! With more frames in flight, `FuturesOrdered` runs them concurrently and
//! yields their results in the order the frames arrived. There each future
//! carries its own [`CatchPanicFuture`] and [`HandlerTimeoutFuture`], so a
//! panic or a timeout is charged to its own frame and the frames before it
//! keep their replies.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{FuturesOrdered, Stream};
use pin_project_lite::pin_project;

use crate::BoxError;
use crate::layer::panic::{CatchPanicFuture, panic_error};
use crate::layer::timeout::HandlerTimeoutFuture;
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

pin_project! {
    /// The single frame in flight.
    #[project = SlotProjection]
    enum Slot<F> {
        Empty,
        Running { #[pin] future: F },
        // The frame's `call` panicked, so it has no future; this is its
        // result.
        Failed { error: Option<BoxError> },
    }
}

pin_project! {
    pub(crate) struct Pipeline<F: HandlerFuture> {
        // Frames in hand, kept here because the driver asks after every
        // step.
        len: usize,
        #[pin]
        inner: Inner<F>,
    }
}

pin_project! {
    #[project = Projection]
    enum Inner<F: HandlerFuture> {
        Single {
            #[pin]
            slot: Slot<F>,
            deadline: Deadline,
        },
        Many {
            queue: FuturesOrdered<CatchPanicFuture<HandlerTimeoutFuture<F>>>,
            timeout: Option<Duration>,
        },
    }
}

impl<F: HandlerFuture> Pipeline<F> {
    /// A pipeline of up to `max_in_flight` frames, each handler bounded by
    /// `timeout` (which closes the connection).
    pub(crate) fn new(max_in_flight: usize, timeout: Option<Duration>) -> Self {
        let inner = if max_in_flight <= 1 {
            Inner::Single {
                slot: Slot::Empty,
                deadline: Deadline::new(timeout),
            }
        } else {
            Inner::Many {
                queue: FuturesOrdered::new(),
                timeout,
            }
        };
        Pipeline { len: 0, inner }
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
                debug_assert!(matches!(*slot, Slot::Empty), "one frame at a time");
                slot.set(Slot::Running { future });
            }
            Projection::Many { queue, timeout } => {
                let future = HandlerTimeoutFuture::new(future, Deadline::new(*timeout));
                queue.push_back(CatchPanicFuture::future(future));
            }
        }
    }

    /// Adds the result of a frame whose service `call` failed (panicked),
    /// to be yielded in its frame's turn.
    pub(crate) fn push_failed(self: Pin<&mut Self>, error: BoxError) {
        let this = self.project();
        *this.len += 1;
        match this.inner.project() {
            Projection::Single { mut slot, .. } => slot.set(Slot::Failed { error: Some(error) }),
            Projection::Many { queue, .. } => queue.push_back(CatchPanicFuture::panicked(error)),
        }
    }

    /// The next result in frame order; `Ready(None)` when empty. A handler
    /// that panics yields [`Error::Panic`](crate::Error::Panic), one that
    /// runs out of time [`Error::HandlerTimeout`](crate::Error::HandlerTimeout),
    /// boxed.
    #[inline]
    pub(crate) fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<F::Response, BoxError>>> {
        let this = self.project();
        if *this.len == 0 {
            return Poll::Ready(None);
        }
        let output = match this.inner.project() {
            Projection::Single { mut slot, deadline } => {
                let future = match slot.as_mut().project() {
                    SlotProjection::Running { future } => future,
                    SlotProjection::Empty => return Poll::Ready(None),
                    SlotProjection::Failed { error } => {
                        let error = error.take();
                        slot.set(Slot::Empty);
                        *this.len -= 1;
                        return Poll::Ready(error.map(Err));
                    }
                };
                let output = match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(Poll::Ready(output)) => output.map_err(Into::into),
                    Ok(Poll::Pending) => match deadline.poll_expired(cx) {
                        Poll::Ready(error) => Err(error),
                        Poll::Pending => return Poll::Pending,
                    },
                    Err(payload) => Err(panic_error(payload)),
                };
                deadline.disarm();
                slot.set(Slot::Empty);
                output
            }
            Projection::Many { queue, .. } => match Pin::new(queue).poll_next(cx) {
                Poll::Ready(Some(output)) => output,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            },
        };
        *this.len -= 1;
        Poll::Ready(Some(output))
    }
}
