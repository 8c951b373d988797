//! Handler timeout: one frame's handling may take at most a set time.
//!
//! Unlike `tower::timeout::Timeout`, whose `Elapsed` arrives boxed and must
//! be downcast, this layer fails with a typed
//! [`Error::HandlerTimeout`](crate::Error::HandlerTimeout), and says whether
//! the connection should close after it (by default it stays open and the
//! next frame is handled). The timer bounds one call; the connection's idle
//! time is the [idle timeout](crate::ServerBuilder::idle_timeout)'s job.

pub(crate) mod deadline;
mod future;
mod layer;

use std::task::{Context, Poll};
use std::time::Duration;

use tower::Service;

use self::deadline::Deadline;
pub use self::future::HandlerTimeoutFuture;
pub use self::layer::HandlerTimeoutLayer;
use crate::BoxError;

/// Fails a call that does not finish within `timeout` with
/// [`Error::HandlerTimeout`](crate::Error::HandlerTimeout). The handler's
/// future is dropped at that moment.
///
/// The time counts from the response future's first poll (tower's
/// `Timeout` counts from `call`): a handler that answers at once never
/// reads the clock. The connection driver polls a frame's future as soon
/// as it has called the service, so there the two are the same moment.
///
/// ```
/// use std::time::Duration;
/// use natter::layer::HandlerTimeoutLayer;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let slow = service_fn(|_frame: natter::Frame| async {
///     tokio::time::sleep(Duration::from_secs(60)).await;
///     Ok::<(), std::convert::Infallible>(())
/// });
/// let service = ServiceBuilder::new()
///     .layer(HandlerTimeoutLayer::new(Duration::from_secs(1)).close_connection(true))
///     .service(slow);
/// let error = natter::Error::from_service(service.oneshot("x".into()).await.unwrap_err());
/// assert!(error.is_timeout() && error.closes_connection());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct HandlerTimeout<S> {
    inner: S,
    timeout: Duration,
    close: bool,
}

impl<S> HandlerTimeout<S> {
    /// Wraps `inner`; the connection stays open after a timeout.
    pub fn new(inner: S, timeout: Duration) -> Self {
        HandlerTimeout {
            inner,
            timeout,
            close: false,
        }
    }
}

impl<S, Request> Service<Request> for HandlerTimeout<S>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = HandlerTimeoutFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Request) -> Self::Future {
        HandlerTimeoutFuture::new(
            self.inner.call(request),
            Deadline::new(Some(self.timeout), self.close),
        )
    }
}
