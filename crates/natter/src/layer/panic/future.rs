use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::panic_error;
use crate::BoxError;

pin_project! {
    /// Response future of [`CatchPanic`](super::CatchPanic).
    #[project = Projection]
    pub struct CatchPanicFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProjection]
    enum State<F> {
        Running { #[pin] future: F },
        Panicked { error: Option<BoxError> },
    }
}

impl<F> CatchPanicFuture<F> {
    pub(crate) fn future(future: F) -> Self {
        CatchPanicFuture {
            state: State::Running { future },
        }
    }

    pub(crate) fn panicked(error: BoxError) -> Self {
        CatchPanicFuture {
            state: State::Panicked { error: Some(error) },
        }
    }
}

impl<F, T, E> Future for CatchPanicFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProjection::Running { future } => {
                match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(poll) => poll.map_err(Into::into),
                    Err(payload) => Poll::Ready(Err(panic_error(payload))),
                }
            }
            StateProjection::Panicked { error } => Poll::Ready(Err(error
                .take()
                .expect("CatchPanicFuture polled after completion"))),
        }
    }
}

impl<F> std::fmt::Debug for CatchPanicFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatchPanicFuture").finish_non_exhaustive()
    }
}
