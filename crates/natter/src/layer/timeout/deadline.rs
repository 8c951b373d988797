//! The timer behind a handler timeout, shared by [`HandlerTimeoutFuture`]
//! and the connection driver.
//!
//! [`HandlerTimeoutFuture`]: super::HandlerTimeoutFuture

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep, sleep_until};

use crate::{BoxError, Error};

/// How long a handler may take, counted from the moment it first returns
/// `Pending`; and how long it took, for the handler-duration metric.
///
/// Most handlers answer at once, and reading the clock alone costs more than
/// they do, so nothing is armed, and no clock read, until a handler turns
/// out to wait. The timer is made then, boxed so that the futures moved
/// around per frame stay small, and kept for the next handler after
/// [`disarm`](Self::disarm).
#[derive(Debug)]
pub(crate) struct Deadline {
    /// `None`: no limit.
    timeout: Option<Duration>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// When the handler first waited; `None` while it has not.
    started: Option<Instant>,
}

impl Deadline {
    pub(crate) fn new(timeout: Option<Duration>) -> Self {
        Deadline {
            timeout,
            sleep: None,
            started: None,
        }
    }

    /// Called when the handler returned `Pending`: starts the clock if it
    /// is not running, and returns [`Error::HandlerTimeout`] once it has
    /// run out.
    #[inline]
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<BoxError> {
        if self.started.is_none() {
            let now = Instant::now();
            self.started = Some(now);
            // A timeout too long to represent (`Duration::MAX`) never ends.
            if let Some(deadline) = self.timeout.and_then(|timeout| now.checked_add(timeout)) {
                match &mut self.sleep {
                    Some(sleep) => sleep.as_mut().reset(deadline),
                    None => self.sleep = Some(Box::pin(sleep_until(deadline))),
                }
            }
        }
        let (Some(timeout), Some(sleep)) = (self.timeout, &mut self.sleep) else {
            return Poll::Pending;
        };
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Box::new(Error::HandlerTimeout { timeout })),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The handler finished: returns how long it waited (`None` if it
    /// answered at once), and the next one starts its own clock.
    #[inline]
    pub(crate) fn disarm(&mut self) -> Option<Duration> {
        self.started.take().map(|started| started.elapsed())
    }
}
