use std::time::Duration;

use tower::Layer;

use super::HandlerTimeout;

/// Applies [`HandlerTimeout`] to a service.
#[derive(Debug, Clone, Copy)]
pub struct HandlerTimeoutLayer {
    timeout: Duration,
    close: bool,
}

impl HandlerTimeoutLayer {
    /// Calls that take longer than `timeout` fail; the connection stays open.
    pub fn new(timeout: Duration) -> Self {
        HandlerTimeoutLayer {
            timeout,
            close: false,
        }
    }

    /// Whether the connection closes after a timeout (default `false`: the
    /// error is reported and the next frame is handled).
    pub fn close_connection(mut self, close: bool) -> Self {
        self.close = close;
        self
    }
}

impl<S> Layer<S> for HandlerTimeoutLayer {
    type Service = HandlerTimeout<S>;

    fn layer(&self, inner: S) -> HandlerTimeout<S> {
        HandlerTimeout {
            inner,
            timeout: self.timeout,
            close: self.close,
        }
    }
}
