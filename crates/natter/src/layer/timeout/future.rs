use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

use crate::{BoxError, Error};

pin_project! {
    /// Response future of [`HandlerTimeout`](super::HandlerTimeout).
    pub struct HandlerTimeoutFuture<F> {
        #[pin]
        future: F,
        // Made, and the clock read, only when the handler first returns
        // `Pending`: most handlers answer at once, and reading the clock
        // alone costs more than they do. So the time counts from the first
        // poll, which the connection driver makes as it hands the frame
        // over. Boxed, so that the future the driver moves around per frame
        // stays small.
        sleep: Option<Pin<Box<Sleep>>>,
        timeout: Duration,
        close: bool,
    }
}

impl<F> HandlerTimeoutFuture<F> {
    #[inline]
    pub(super) fn new(future: F, timeout: Duration, close: bool) -> Self {
        HandlerTimeoutFuture {
            future,
            sleep: None,
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

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.future.poll(cx) {
            return Poll::Ready(result.map_err(Into::into));
        }
        if this.sleep.is_none() {
            // `Duration::MAX` (the driver's handler timeout when it is
            // turned off) is too far to represent: never.
            let Some(deadline) = Instant::now().checked_add(*this.timeout) else {
                return Poll::Pending;
            };
            *this.sleep = Some(Box::pin(sleep_until(deadline)));
        }
        let Some(sleep) = this.sleep.as_mut() else {
            return Poll::Pending;
        };
        match sleep.as_mut().poll(cx) {
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
