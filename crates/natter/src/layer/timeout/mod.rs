//! Handler timeout: one frame's handling may take at most a set time.
//!
//! Unlike `tower::timeout::Timeout`, whose `Elapsed` arrives boxed and must
//! be downcast, this layer fails with a typed
//! [`Error::HandlerTimeout`](crate::Error::HandlerTimeout). Like every
//! failed frame, a timed-out one closes its connection after the replies
//! before it, unless an [`on_error`](crate::ServerBuilder::on_error) hook
//! answers it in its place. The timer bounds one call; the connection's
//! idle time is the [idle timeout](crate::ServerBuilder::idle_timeout)'s
//! job.

pub(crate) mod deadline;
mod future;
mod layer;

use std::task::{Context, Poll};
use std::time::Duration;

use tower::Service;

use self::deadline::Expiry;
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
///     .layer(HandlerTimeoutLayer::new(Duration::from_secs(1)))
///     .service(slow);
/// let error = natter::Error::from_service(service.oneshot("x".into()).await.unwrap_err());
/// assert!(error.is_timeout());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct HandlerTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> HandlerTimeout<S> {
    /// Wraps `inner`: calls that take longer than `timeout` fail.
    pub fn new(inner: S, timeout: Duration) -> Self {
        HandlerTimeout { inner, timeout }
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
        HandlerTimeoutFuture::new(self.inner.call(request), Expiry::new(Some(self.timeout)))
    }
}
