//! The handler futures of one connection, completed in frame order, with
//! panics caught.
//!
//! One frame at a time (the default) needs no queue: the future lives in a
//! slot inside the driver, so handling a frame allocates nothing, and a
//! panic while polling it can only be that frame's: one `catch_unwind`
//! around the poll covers it. With more frames in flight, `FuturesOrdered`
//! runs them concurrently and yields their results in the order the frames
//! arrived; there each future carries its own [`CatchPanicFuture`], so a
//! panic is charged to its own frame and the frames before it keep their
//! replies.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{FuturesOrdered, Stream};
use pin_project_lite::pin_project;

use crate::BoxError;
use crate::layer::panic::{CatchPanicFuture, panic_error};

/// A handler's future, as the driver's service returns it.
pub(crate) trait HandlerFuture: Future<Output = Result<Self::Response, BoxError>> {
    type Response;
}

impl<F, T> HandlerFuture for F
where
    F: Future<Output = Result<T, BoxError>>,
{
    type Response = T;
}

pin_project! {
    #[project = Projection]
    pub(crate) enum Pipeline<F: HandlerFuture> {
        // `failed`: the frame's `call` panicked, so it has no future; its
        // error is the next result.
        Single { #[pin] slot: Option<F>, failed: Option<BoxError> },
        Many { queue: FuturesOrdered<CatchPanicFuture<F>> },
    }
}

impl<F: HandlerFuture> Pipeline<F> {
    pub(crate) fn new(max_in_flight: usize) -> Self {
        if max_in_flight <= 1 {
            Pipeline::Single {
                slot: None,
                failed: None,
            }
        } else {
            Pipeline::Many {
                queue: FuturesOrdered::new(),
            }
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        match self {
            Pipeline::Single { slot, failed } => usize::from(slot.is_some() || failed.is_some()),
            Pipeline::Many { queue } => queue.len(),
        }
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a future; the caller keeps `len()` within its limit (one for a
    /// single slot).
    #[inline]
    pub(crate) fn push(self: Pin<&mut Self>, future: F) {
        match self.project() {
            Projection::Single { mut slot, .. } => {
                debug_assert!(slot.is_none(), "one frame at a time");
                slot.set(Some(future));
            }
            Projection::Many { queue } => queue.push_back(CatchPanicFuture::future(future)),
        }
    }

    /// Adds the result of a frame whose service `call` failed (panicked),
    /// to be yielded in its frame's turn.
    pub(crate) fn push_failed(self: Pin<&mut Self>, error: BoxError) {
        match self.project() {
            Projection::Single { failed, .. } => *failed = Some(error),
            Projection::Many { queue } => queue.push_back(CatchPanicFuture::panicked(error)),
        }
    }

    /// The next result in frame order; `Ready(None)` when empty. A handler
    /// that panics yields [`Error::Panic`](crate::Error::Panic), boxed.
    #[inline]
    pub(crate) fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<F::Response, BoxError>>> {
        match self.project() {
            Projection::Single { mut slot, failed } => {
                let Some(future) = slot.as_mut().as_pin_mut() else {
                    return Poll::Ready(failed.take().map(Err));
                };
                let output = match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(output)) => output,
                    Err(payload) => Err(panic_error(payload)),
                };
                slot.set(None);
                Poll::Ready(Some(output))
            }
            Projection::Many { queue } => Pin::new(queue).poll_next(cx),
        }
    }
}
