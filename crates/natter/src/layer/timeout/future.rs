use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Sleep, sleep};

use crate::{BoxError, Error};

pin_project! {
    /// Response future of [`HandlerTimeout`](super::HandlerTimeout).
    pub struct HandlerTimeoutFuture<F> {
        #[pin]
        future: F,
        #[pin]
        sleep: Sleep,
        timeout: Duration,
        close: bool,
    }
}

impl<F> HandlerTimeoutFuture<F> {
    pub(super) fn new(future: F, timeout: Duration, close: bool) -> Self {
        HandlerTimeoutFuture {
            future,
            sleep: sleep(timeout),
            timeout,
            close,
        }
    }
}

impl<F, T, E> Future for HandlerTimeoutFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.future.poll(cx) {
            return Poll::Ready(result.map_err(Into::into));
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Box::new(Error::HandlerTimeout {
                timeout: *this.timeout,
                close: *this.close,
            }))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F> std::fmt::Debug for HandlerTimeoutFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerTimeoutFuture")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
