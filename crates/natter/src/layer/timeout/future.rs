use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::deadline::Deadline;
use crate::BoxError;
use pin_project_lite::pin_project;

pin_project! {
    /// Response future of [`HandlerTimeout`](super::HandlerTimeout).
    pub struct HandlerTimeoutFuture<F> {
        #[pin]
        future: F,
        // The clock starts at the first `Pending`, so the time counts from
        // the first poll, which the connection driver makes as it hands
        // the frame over.
        deadline: Deadline,
    }
}

impl<F> HandlerTimeoutFuture<F> {
    #[inline]
    pub(crate) fn new(future: F, deadline: Deadline) -> Self {
        HandlerTimeoutFuture { future, deadline }
    }
}

impl<F, T, E> Future for HandlerTimeoutFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.future.poll(cx) {
            return Poll::Ready(result.map_err(Into::into));
        }
        this.deadline.poll_expired(cx).map(Err)
    }
}

impl<F> std::fmt::Debug for HandlerTimeoutFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerTimeoutFuture")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
