use std::time::Duration;

use tower::Layer;

use super::HandlerTimeout;

/// Applies [`HandlerTimeout`] to a service.
#[derive(Debug, Clone, Copy)]
pub struct HandlerTimeoutLayer {
    timeout: Duration,
}

impl HandlerTimeoutLayer {
    /// Calls that take longer than `timeout` fail with
    /// [`Error::HandlerTimeout`](crate::Error::HandlerTimeout).
    pub fn new(timeout: Duration) -> Self {
        HandlerTimeoutLayer { timeout }
    }
}

impl<S> Layer<S> for HandlerTimeoutLayer {
    type Service = HandlerTimeout<S>;

    fn layer(&self, inner: S) -> HandlerTimeout<S> {
        HandlerTimeout::new(inner, self.timeout)
    }
}
