//! The handler futures of one connection, completed in frame order.
//!
//! One frame at a time (the default) needs no queue: the future lives in a
//! slot inside the driver, so handling a frame allocates nothing. With more
//! frames in flight, `FuturesOrdered` runs them concurrently and yields
//! their results in the order the frames arrived.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{FuturesOrdered, Stream};
use pin_project_lite::pin_project;

pin_project! {
    #[project = Projection]
    pub(crate) enum Pipeline<F: Future> {
        Single { #[pin] slot: Option<F> },
        Many { queue: FuturesOrdered<F> },
    }
}

impl<F: Future> Pipeline<F> {
    pub(crate) fn new(max_in_flight: usize) -> Self {
        if max_in_flight <= 1 {
            Pipeline::Single { slot: None }
        } else {
            Pipeline::Many {
                queue: FuturesOrdered::new(),
            }
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        match self {
            Pipeline::Single { slot } => usize::from(slot.is_some()),
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
            Projection::Single { mut slot } => {
                debug_assert!(slot.is_none(), "one frame at a time");
                slot.set(Some(future));
            }
            Projection::Many { queue } => queue.push_back(future),
        }
    }

    /// The next result in frame order; `Ready(None)` when empty.
    #[inline]
    pub(crate) fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        match self.project() {
            Projection::Single { mut slot } => {
                let Some(future) = slot.as_mut().as_pin_mut() else {
                    return Poll::Ready(None);
                };
                let output = futures::ready!(future.poll(cx));
                slot.set(None);
                Poll::Ready(Some(output))
            }
            Projection::Many { queue } => Pin::new(queue).poll_next(cx),
        }
    }
}
