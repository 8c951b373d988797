//! Panic isolation: a service that panics becomes an
//! [`Error::Panic`] instead of taking its task down.
//!
//! natter's connection driver catches panics itself, for every connection:
//! a panicking handler closes its own connection (after flushing the
//! replies already produced) and nothing else. It does the same as this
//! layer with fewer `catch_unwind`s per frame, so a natter server needs no
//! `CatchPanicLayer`. Use the layer where no natter driver runs the
//! service: a [`ClientService`](crate::ClientService) stack, or any
//! other tower stack.

mod future;
mod layer;

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::task::{Context, Poll};

use tower::Service;

pub use self::future::CatchPanicFuture;
pub use self::layer::CatchPanicLayer;
use crate::{BoxError, Error};

/// Catches panics in the inner service's `poll_ready`, `call` and response
/// future, and returns them as [`Error::Panic`] (boxed, as tower errors
/// are).
///
/// ```
/// use natter::layer::CatchPanicLayer;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let service = ServiceBuilder::new()
///     .layer(CatchPanicLayer::new())
///     .service(service_fn(|_frame: natter::Frame| async {
///         panic!("bug");
///         #[allow(unreachable_code)]
///         Ok::<(), std::convert::Infallible>(())
///     }));
/// let error = service.oneshot(natter::Frame::from("x")).await.unwrap_err();
/// assert!(matches!(natter::Error::from_service(error), natter::Error::Panic(msg) if msg == "bug"));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S> CatchPanic<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        CatchPanic { inner }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Request> Service<Request> for CatchPanic<S>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = CatchPanicFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match catch_unwind(AssertUnwindSafe(|| self.inner.poll_ready(cx))) {
            Ok(ready) => ready.map_err(Into::into),
            Err(payload) => Poll::Ready(Err(panic_error(payload))),
        }
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(future) => CatchPanicFuture::future(future),
            Err(payload) => CatchPanicFuture::panicked(panic_error(payload)),
        }
    }
}

/// The panic message, when the payload is the usual `&str` or `String`.
pub(crate) fn panic_error(payload: Box<dyn Any + Send>) -> BoxError {
    let message = if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic with a non-text payload".to_owned()
    };
    Box::new(Error::Panic(message))
}
