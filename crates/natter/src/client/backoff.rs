//! [`Backoff`]: how long to wait before each redial.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with jitter, for [`ClientBuilder::reconnect`](super::ClientBuilder::reconnect).
///
/// Attempt `n` (from 1) waits `min * 2^(n-1)`, capped at `max`, minus a
/// random part of up to `jitter` of it, so that many clients that lost
/// the same server do not redial in step.
///
/// ```
/// use std::time::Duration;
/// use natter::client::Backoff;
///
/// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).jitter(0.0);
/// assert_eq!(backoff.delay(1), Duration::from_millis(100));
/// assert_eq!(backoff.delay(3), Duration::from_millis(400));
/// assert_eq!(backoff.delay(30), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: f64,
    max_attempts: Option<u32>,
}

impl Backoff {
    /// Waits from `min` up to `max`, doubling, with 50% jitter, forever. A
    /// `max` below `min` is taken as `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            jitter: 0.5,
            max_attempts: None,
        }
    }

    /// The share of each delay (0.0 to 1.0; outside, the nearest bound)
    /// that is randomly taken off.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// Gives up after this many failed attempts in a row. A
    /// [`ClientService`](crate::ClientService) that gives up is closed:
    /// `poll_ready` fails with [`Error::Closed`](crate::Error::Closed), and
    /// its [`Events`](crate::Events) end (the last failed dial is among
    /// them).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Whether attempt `attempt` (from 1) may be made.
    pub fn allows(&self, attempt: u32) -> bool {
        self.max_attempts.is_none_or(|max| attempt <= max)
    }

    /// The wait before attempt `attempt` (from 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        let full = self.min.saturating_mul(1 << doublings).min(self.max);
        if self.jitter == 0.0 {
            return full;
        }
        let cut = rand::rng().random_range(0.0..=self.jitter);
        full.mul_f64(1.0 - cut)
    }
}

impl Default for Backoff {
    /// From 100 ms to 10 s.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
    }
}
