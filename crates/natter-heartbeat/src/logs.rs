//! How the master keeps its log short whatever happens: one line per node
//! state change within a budget, and periodic summaries for the rest.
//!
//! A registry anyone can write to is also a log anyone can fill: 5,000
//! fake nodes at dead addresses once produced one WARN line per failed
//! ping, 750,000 lines in 30 s. Here a failed ping is never a line of its
//! own (only at `debug`); a node joining, being lost, recovering, leaving
//! or being forgotten, and a rejected registration, is one line each, as
//! long as the [`LogBudget`] allows (a burst of [`BURST`] lines, then
//! [`PER_SECOND`] a second). What goes over the budget is counted, and
//! every [`SUMMARY_PERIOD`] one line says how many changes were not logged
//! one by one and how many pings failed. So stderr grows by at most some
//! 150 KB a minute under any flood, against a limit of 1 MB.
//!
//! The same goes for errors on the connections of natter's servers (bad
//! input, a peer that resets, an idle timeout): natter logs each one, and
//! 5,000 registrations on connections closed without reading the answer
//! made 5,000 WARN lines (860 KB). The binary turns natter's own lines
//! (`natter::event`) off, and [`log_connection_errors`] logs the errors
//! from the server's event stream within a budget of their own.
//!
//! The budget is pure bookkeeping, driven with instants like the
//! [`detector`](crate::detector), so it is tested on a paused clock.

use std::fmt;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

/// Lines the budget allows at once, after a quiet spell.
pub(crate) const BURST: u32 = 100;

/// Lines the budget allows per second, sustained.
pub(crate) const PER_SECOND: u32 = 10;

/// How often counts are summarised, at most.
pub(crate) const SUMMARY_PERIOD: Duration = Duration::from_secs(10);

/// A node state change worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Change {
    Joined,
    Recovered,
    Lost,
    Left,
    Forgotten,
    Rejected,
    /// Not a node's change: an error on a connection.
    ConnectionError,
}

/// Counts of the changes that were not logged one by one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Unlogged {
    pub(crate) joined: u64,
    pub(crate) recovered: u64,
    pub(crate) lost: u64,
    pub(crate) left: u64,
    pub(crate) forgotten: u64,
    pub(crate) rejected: u64,
    pub(crate) connection_errors: u64,
}

impl Unlogged {
    fn count(&mut self, change: Change) {
        let counter = match change {
            Change::Joined => &mut self.joined,
            Change::Recovered => &mut self.recovered,
            Change::Lost => &mut self.lost,
            Change::Left => &mut self.left,
            Change::Forgotten => &mut self.forgotten,
            Change::Rejected => &mut self.rejected,
            Change::ConnectionError => &mut self.connection_errors,
        };
        *counter += 1;
    }

    fn total(&self) -> u64 {
        self.joined
            + self.recovered
            + self.lost
            + self.left
            + self.forgotten
            + self.rejected
            + self.connection_errors
    }
}

impl fmt::Display for Unlogged {
    /// `4900 joined, 12 lost`: the non-zero counts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = [
            (self.joined, "joined"),
            (self.recovered, "recovered"),
            (self.lost, "lost"),
            (self.left, "left"),
            (self.forgotten, "forgotten"),
            (self.rejected, "registrations rejected"),
            (self.connection_errors, "connection errors"),
        ];
        let mut first = true;
        for (count, what) in counts.into_iter().filter(|(count, _)| *count > 0) {
            if !first {
                f.write_str(", ")?;
            }
            write!(f, "{count} {what}")?;
            first = false;
        }
        Ok(())
    }
}

/// What happened during one summary period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    /// How long the period was.
    pub(crate) period: Duration,
    /// Pings answered in time.
    pub(crate) pings_answered: u64,
    /// Pings that failed.
    pub(crate) pings_failed: u64,
    /// Changes over the budget, not logged one by one.
    pub(crate) unlogged: Unlogged,
}

/// The budget of per-change log lines and the counts for the summaries.
#[derive(Debug)]
pub(crate) struct LogBudget {
    /// Lines allowed now, in thousandths of a line.
    tokens: u64,
    refilled: Instant,
    period_start: Instant,
    summary: Summary,
}

const MILLI: u64 = 1000;

impl LogBudget {
    /// A full budget, its first summary period starting at `now`.
    pub(crate) fn new(now: Instant) -> Self {
        LogBudget {
            tokens: u64::from(BURST) * MILLI,
            refilled: now,
            period_start: now,
            summary: Summary::default(),
        }
    }

    /// Whether `change` may be logged on a line of its own at `now`; if
    /// not, it is counted for the next summary.
    pub(crate) fn allow(&mut self, change: Change, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled);
        let earned = elapsed.as_millis() as u64 * u64::from(PER_SECOND);
        self.tokens = (self.tokens + earned).min(u64::from(BURST) * MILLI);
        self.refilled = now;
        if self.tokens >= MILLI {
            self.tokens -= MILLI;
            true
        } else {
            self.summary.unlogged.count(change);
            false
        }
    }

    /// Counts a ping's outcome for the next summary.
    pub(crate) fn ping(&mut self, answered: bool) {
        if answered {
            self.summary.pings_answered += 1;
        } else {
            self.summary.pings_failed += 1;
        }
    }

    /// Once a [`SUMMARY_PERIOD`] has passed since the last one: the
    /// summary of the period, if anything in it is worth a line (a failed
    /// ping or an unlogged change), and a new period starts.
    pub(crate) fn summary(&mut self, now: Instant) -> Option<Summary> {
        let period = now.saturating_duration_since(self.period_start);
        if period < SUMMARY_PERIOD {
            return None;
        }
        self.period_start = now;
        let summary = Summary {
            period,
            ..std::mem::take(&mut self.summary)
        };
        (summary.pings_failed > 0 || summary.unlogged.total() > 0).then_some(summary)
    }
}

/// Logs the errors on the connections of a natter server, read from its
/// `events`, within a [`LogBudget`] of their own: one line each (the
/// peer, the error) as long as the budget allows, then a count every
/// [`SUMMARY_PERIOD`]. `endpoint` names the server in the lines. Returns
/// when the server has stopped.
pub(crate) async fn log_connection_errors(mut events: natter::Events, endpoint: &'static str) {
    let mut budget = LogBudget::new(Instant::now());
    let mut summaries = tokio::time::interval(SUMMARY_PERIOD);
    let mut missed = 0;
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { return };
                let Some(error) = event.error() else { continue };
                if budget.allow(Change::ConnectionError, Instant::now()) {
                    if event.is_closing_error() {
                        tracing::warn!(peer = %event.peer, %error, "{endpoint}: connection closed");
                    } else {
                        tracing::warn!(peer = %event.peer, %error, "{endpoint}: connection error");
                    }
                }
            }
            _ = summaries.tick() => {
                // The stream holds only so many events (connections opened
                // and closed too); those it could not hold are counted.
                let lagged = events.dropped() - missed;
                missed = events.dropped();
                let unlogged = budget
                    .summary(Instant::now())
                    .map_or(0, |summary| summary.unlogged.connection_errors);
                if unlogged > 0 || lagged > 0 {
                    tracing::warn!(
                        "{endpoint}: in the last {} s, {unlogged} connection errors not logged \
                         one by one, {lagged} connection events missed",
                        SUMMARY_PERIOD.as_secs()
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::advance;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_a_steady_rate_then_counts() {
        let mut budget = LogBudget::new(Instant::now());
        let allowed = (0..1000)
            .filter(|_| budget.allow(Change::Joined, Instant::now()))
            .count();
        assert_eq!(allowed, BURST as usize);
        advance(Duration::from_secs(1)).await;
        let allowed = (0..1000)
            .filter(|_| budget.allow(Change::Lost, Instant::now()))
            .count();
        assert_eq!(allowed, PER_SECOND as usize);
        advance(SUMMARY_PERIOD).await;
        let summary = budget.summary(Instant::now()).unwrap();
        assert_eq!(summary.unlogged.joined, 900);
        assert_eq!(summary.unlogged.lost, 990);
        assert_eq!(summary.period, SUMMARY_PERIOD + Duration::from_secs(1));
        assert_eq!(
            summary.unlogged.to_string(),
            "900 joined, 990 lost",
            "only what happened"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_changes_costs_a_bounded_number_of_lines_a_minute() {
        // 5,000 changes every second for a minute.
        let mut budget = LogBudget::new(Instant::now());
        let mut lines = 0;
        for _ in 0..60 {
            for _ in 0..5000 {
                lines += u32::from(budget.allow(Change::Lost, Instant::now()));
                budget.ping(false);
            }
            advance(Duration::from_secs(1)).await;
            lines += u32::from(budget.summary(Instant::now()).is_some());
        }
        assert!(lines <= BURST + 60 * PER_SECOND + 6, "{lines}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_period_has_no_summary() {
        let mut budget = LogBudget::new(Instant::now());
        budget.ping(true);
        assert!(budget.allow(Change::Joined, Instant::now()));
        advance(SUMMARY_PERIOD).await;
        assert_eq!(budget.summary(Instant::now()), None);
        budget.ping(false);
        assert_eq!(budget.summary(Instant::now()), None, "not due yet");
        advance(SUMMARY_PERIOD).await;
        let summary = budget.summary(Instant::now()).unwrap();
        assert_eq!((summary.pings_answered, summary.pings_failed), (0, 1));
    }
}
