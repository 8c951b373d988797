//! The timers behind a handler timeout: [`Expiry`] for
//! [`HandlerTimeoutFuture`], and [`Deadline`], which also measures the
//! handler, for the connection driver.
//!
//! [`HandlerTimeoutFuture`]: super::HandlerTimeoutFuture

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep, sleep_until};

use crate::{BoxError, Error};

/// How long a handler may take, counted from the moment it first returns
/// `Pending`.
///
/// Most handlers answer at once, and reading the clock alone costs more than
/// they do, so nothing is armed, and no clock read, until a handler turns
/// out to wait. The timer is made then, boxed so that the futures moved
/// around per frame stay small.
#[derive(Debug)]
pub(crate) struct Expiry {
    /// `None`: no limit (or one too long to represent, `Duration::MAX`).
    timeout: Option<Duration>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Expiry {
    #[inline]
    pub(crate) fn new(timeout: Option<Duration>) -> Self {
        Expiry {
            timeout,
            sleep: None,
        }
    }

    /// Called when the handler returned `Pending`: starts the clock the
    /// first time, and returns [`Error::HandlerTimeout`] once it has run
    /// out.
    #[inline]
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<BoxError> {
        if self.sleep.is_none() && self.timeout.is_some() {
            self.arm(Instant::now());
        }
        self.poll_armed(cx)
    }

    /// Sets the timer to run out `timeout` after `now`.
    fn arm(&mut self, now: Instant) {
        let Some(timeout) = self.timeout else {
            return;
        };
        // A timeout too long to represent (`Duration::MAX`) never ends.
        let Some(deadline) = now.checked_add(timeout) else {
            self.timeout = None;
            return;
        };
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.sleep = Some(Box::pin(sleep_until(deadline))),
        }
    }

    /// Polls the timer as it was last armed.
    fn poll_armed(&mut self, cx: &mut Context<'_>) -> Poll<BoxError> {
        let (Some(timeout), Some(sleep)) = (self.timeout, &mut self.sleep) else {
            return Poll::Pending;
        };
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Box::new(Error::HandlerTimeout { timeout })),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// An [`Expiry`] kept from handler to handler, that also says how long
/// each handler waited, for the handler-duration metric: the timer, once
/// made, is reset for the next handler that waits rather than made again.
#[derive(Debug)]
pub(crate) struct Deadline {
    expiry: Expiry,
    /// When the handler first waited; `None` while it has not.
    started: Option<Instant>,
}

impl Deadline {
    pub(crate) fn new(timeout: Option<Duration>) -> Self {
        Deadline {
            expiry: Expiry::new(timeout),
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
            self.expiry.arm(now);
        }
        self.expiry.poll_armed(cx)
    }

    /// The handler finished: returns how long it waited (`None` if it
    /// answered at once), and the next one starts its own clock.
    #[inline]
    pub(crate) fn disarm(&mut self) -> Option<Duration> {
        self.started.take().map(|started| started.elapsed())
    }
}
