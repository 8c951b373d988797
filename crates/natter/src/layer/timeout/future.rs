use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::deadline::Expiry;
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
        expiry: Expiry,
    }
}

impl<F> HandlerTimeoutFuture<F> {
    #[inline]
    pub(crate) fn new(future: F, expiry: Expiry) -> Self {
        HandlerTimeoutFuture { future, expiry }
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
        this.expiry.poll_expired(cx).map(Err)
    }
}

impl<F> std::fmt::Debug for HandlerTimeoutFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerTimeoutFuture")
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}
