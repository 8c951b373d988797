//! When a node counts as lost: the rule the master's
//! [`Detector`](crate::detector::Detector) applies to one node's ping
//! outcomes.
//!
//! The [`Detector`](crate::detector::Detector) keeps everything else
//! (registration, `id in use`, the node limit, sequence numbers, probing
//! lost nodes with backoff, forgetting them); a rule only answers "is this
//! live node lost now?" from what it remembers of the node's pings. Two
//! rules, both pure state machines fed with instants of tokio's clock:
//!
//! - [`FixedThreshold`] (the default, `--detector fixed`): `failures`
//!   failed pings in a row;
//! - [`PhiAccrual`] (`--detector phi`): the phi-accrual detector of
//!   Hayashibara et al. (2004), as in Akka and Cassandra: how unlikely the
//!   current silence is, given the intervals between the node's answered
//!   pings so far.
//!
//! [`Rule`] is the choice between them that a
//! [`MasterConfig`](crate::MasterConfig) carries; a new rule implements
//! [`LossRule`] and joins it.

use std::collections::VecDeque;
use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use tokio::time::Instant;

/// A rule that says, from one node's ping outcomes, when it is lost.
///
/// It keeps its memory of each node in a [`History`](Self::History) that
/// the detector holds; the detector starts a fresh one when the node
/// registers (again), and reports each outcome of a ping that counts (see
/// [Sequence numbers](crate::detector::Detector#sequence-numbers)),
/// including the answer that brings a lost node back.
pub trait LossRule: fmt::Debug + Clone + Send + Sync + 'static {
    /// What the rule remembers of one node.
    type History: fmt::Debug + Clone + Send + Sync;

    /// The memory of a node that registered, or came back, at `now`.
    fn fresh(&self, now: Instant) -> Self::History;

    /// A ping of the node was answered at `now`.
    fn answered(&self, history: &mut Self::History, now: Instant);

    /// A ping of the node failed at `now`, the `in_a_row`-th failure since
    /// the last answer (or since it registered). Whether it is lost now.
    fn failed(&self, history: &mut Self::History, in_a_row: u32, now: Instant) -> bool;
}

/// Lost after `failures` failed pings in a row: the master's rule unless
/// told otherwise (`--failures`, default 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedThreshold {
    /// Failed pings in a row that make a node lost.
    pub failures: NonZeroU32,
}

impl LossRule for FixedThreshold {
    type History = ();

    fn fresh(&self, _: Instant) {}

    fn answered(&self, _: &mut (), _: Instant) {}

    fn failed(&self, _: &mut (), in_a_row: u32, _: Instant) -> bool {
        in_a_row >= self.failures.get()
    }
}

/// The phi-accrual failure detector (Hayashibara, Défago, Yared, Katayama:
/// "The φ Accrual Failure Detector", 2004), in the form Akka and Cassandra
/// use.
///
/// Each answered ping is a heartbeat arriving; the rule keeps the last
/// [`max_samples`](Self::max_samples) intervals between arrivals and models
/// them as a normal distribution. At a failed ping, the silence since the
/// last arrival gets a suspicion level
///
/// ```text
/// phi = -log10(P(an interval at least this long))
/// ```
///
/// where the distribution's mean is the intervals' mean plus
/// [`acceptable_pause`](Self::acceptable_pause), and its standard deviation
/// at least [`min_std_dev`](Self::min_std_dev): a steady link (every answer
/// exactly one interval apart) would otherwise make any delay look
/// impossible. The node is lost when phi passes
/// [`threshold`](Self::threshold) (8: a silence that long has a chance of
/// 1 in 10^8), or when the silence reaches
/// [`max_silence`](Self::max_silence), whatever the history, which keeps the
/// time to report a dead node bounded. A node's history starts with two
/// intervals one [`interval`](Self::interval) apart, give or take a
/// quarter, as Akka's first-heartbeat estimate.
///
/// On a steady link it reports a frozen or killed node at the same failed
/// ping as three failures in a row (after some 4 intervals of silence);
/// where answers come irregularly (a jittery link, latency spikes it has
/// seen before) it waits longer before it suspects, which is what it is
/// for. An interval is recorded at most [`max_silence`](Self::max_silence)
/// long, so one long outage cannot stretch the next detection past it. See the crate's README for both measured in
/// simulation.
///
/// ```
/// use std::time::Duration;
/// use natter_heartbeat::rule::{LossRule, PhiAccrual};
/// use tokio::time::Instant;
///
/// let phi = PhiAccrual::new(Duration::from_secs(1));
/// let start = Instant::now();
/// let mut history = phi.fresh(start);
/// for second in 1..=10 {
///     phi.answered(&mut history, start + Duration::from_secs(second));
/// }
/// let last = start + Duration::from_secs(10);
/// // 3.5 seconds of silence after ten steady answers: not yet.
/// assert!(!phi.failed(&mut history, 3, last + Duration::from_millis(3500)));
/// // Four: lost.
/// assert!(phi.failed(&mut history, 4, last + Duration::from_secs(4)));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PhiAccrual {
    /// The master's ping interval: the first estimate of the intervals.
    pub interval: Duration,
    /// Lost above this suspicion level (`--phi-threshold`, default 8.0).
    pub threshold: f64,
    /// The standard deviation used at least (default: a tenth of the
    /// interval).
    pub min_std_dev: Duration,
    /// A pause taken as normal, added to the mean interval (default: 2.3
    /// intervals, so that on a steady link a silent node is reported at
    /// the same failed ping as with three failures in a row).
    pub acceptable_pause: Duration,
    /// How many intervals the history keeps (default 100).
    pub max_samples: usize,
    /// Lost after this long without an answer, whatever phi says
    /// (default: 9 intervals, so that a dead node is reported within
    /// `10 * interval + ping timeout`).
    pub max_silence: Duration,
}

/// The suspicion level above which [`PhiAccrual`] reports a node lost
/// unless told otherwise (`--phi-threshold`).
pub const DEFAULT_PHI_THRESHOLD: f64 = 8.0;

impl PhiAccrual {
    /// The defaults for a master pinging every `interval`.
    pub fn new(interval: Duration) -> PhiAccrual {
        PhiAccrual {
            interval,
            threshold: DEFAULT_PHI_THRESHOLD,
            min_std_dev: interval / 10,
            acceptable_pause: interval * 23 / 10,
            max_samples: 100,
            max_silence: interval * 9,
        }
    }

    /// The same with another threshold.
    pub fn threshold(mut self, threshold: f64) -> PhiAccrual {
        self.threshold = threshold;
        self
    }

    /// The suspicion level of a silence of `silence` after the intervals
    /// in `history`.
    pub fn phi(&self, history: &PhiHistory, silence: Duration) -> f64 {
        let n = history.intervals.len().max(1) as f64;
        let mean = history.intervals.iter().sum::<f64>() / n;
        let variance = history
            .intervals
            .iter()
            .map(|x| (x - mean) * (x - mean))
            .sum::<f64>()
            / n;
        let mean = mean + self.acceptable_pause.as_secs_f64();
        let std_dev = variance.sqrt().max(self.min_std_dev.as_secs_f64());
        phi(silence.as_secs_f64(), mean, std_dev)
    }
}

/// What [`PhiAccrual`] remembers of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct PhiHistory {
    /// The last answer (or the registration).
    last: Instant,
    /// Seconds between answers, oldest first.
    intervals: VecDeque<f64>,
}

impl LossRule for PhiAccrual {
    type History = PhiHistory;

    fn fresh(&self, now: Instant) -> PhiHistory {
        let first = self.interval.as_secs_f64();
        PhiHistory {
            last: now,
            intervals: VecDeque::from([first * 0.75, first * 1.25]),
        }
    }

    fn answered(&self, history: &mut PhiHistory, now: Instant) {
        let interval = now
            .saturating_duration_since(history.last)
            .min(self.max_silence)
            .as_secs_f64();
        history.last = history.last.max(now);
        if history.intervals.len() >= self.max_samples.max(1) {
            history.intervals.pop_front();
        }
        history.intervals.push_back(interval);
    }

    fn failed(&self, history: &mut PhiHistory, _: u32, now: Instant) -> bool {
        let silence = now.saturating_duration_since(history.last);
        silence >= self.max_silence || self.phi(history, silence) > self.threshold
    }
}

/// `-log10` of the chance that a normal variable of `mean` and `std_dev`
/// exceeds `x`, with the logistic approximation of the normal distribution
/// Akka uses (within 0.01 % of it; exact enough far into the tail, where
/// `1 - cdf` would round to 0).
fn phi(x: f64, mean: f64, std_dev: f64) -> f64 {
    let y = (x - mean) / std_dev;
    // P(X > x) = e / (1 + e), e = exp(-a); in logarithms, so that it stays
    // finite far into the tail, where e underflows.
    let a = y * (1.5976 + 0.070566 * y * y);
    if a > 0.0 {
        (a + (-a).exp().ln_1p()) / std::f64::consts::LN_10
    } else {
        a.exp().ln_1p() / std::f64::consts::LN_10
    }
}

/// The rule a [`Detector`](crate::detector::Detector) applies: one of the
/// master's two (`--detector fixed|phi`).
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// `failures` failed pings in a row.
    Fixed(FixedThreshold),
    /// Phi accrual.
    Phi(PhiAccrual),
}

impl Rule {
    /// `failures` failed pings in a row.
    pub fn fixed(failures: NonZeroU32) -> Rule {
        Rule::Fixed(FixedThreshold { failures })
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Fixed(rule) => write!(f, "{} failed pings in a row", rule.failures),
            Rule::Phi(rule) => write!(f, "phi accrual, threshold {}", rule.threshold),
        }
    }
}

/// What a [`Rule`] remembers of one node.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleHistory {
    /// [`FixedThreshold`] remembers nothing (the detector counts).
    Fixed,
    /// [`PhiAccrual`]'s intervals.
    Phi(PhiHistory),
}

impl LossRule for Rule {
    type History = RuleHistory;

    fn fresh(&self, now: Instant) -> RuleHistory {
        match self {
            Rule::Fixed(_) => RuleHistory::Fixed,
            Rule::Phi(rule) => RuleHistory::Phi(rule.fresh(now)),
        }
    }

    fn answered(&self, history: &mut RuleHistory, now: Instant) {
        if let (Rule::Phi(rule), RuleHistory::Phi(history)) = (self, history) {
            rule.answered(history, now);
        }
    }

    fn failed(&self, history: &mut RuleHistory, in_a_row: u32, now: Instant) -> bool {
        match (self, history) {
            (Rule::Fixed(rule), _) => rule.failed(&mut (), in_a_row, now),
            (Rule::Phi(rule), RuleHistory::Phi(history)) => rule.failed(history, in_a_row, now),
            // A history from another rule (never made by the detector).
            (Rule::Phi(rule), history) => {
                *history = RuleHistory::Phi(rule.fresh(now));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The rules on tokio's paused clock.

    use tokio::time::advance;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_fixed_rule_counts_failures_in_a_row() {
        let rule = FixedThreshold {
            failures: NonZeroU32::new(3).unwrap(),
        };
        let now = Instant::now();
        assert!(!rule.failed(&mut (), 2, now));
        assert!(rule.failed(&mut (), 3, now));
        assert!(rule.failed(&mut (), 4, now));
    }

    #[test]
    fn phi_grows_with_the_silence_and_matches_the_normal_tail() {
        // One standard deviation past the mean: P = 0.159, phi = 0.80.
        assert!(
            (phi(2.0, 1.0, 1.0) - 0.80).abs() < 0.01,
            "{}",
            phi(2.0, 1.0, 1.0)
        );
        // At the mean: P = 0.5.
        assert!((phi(1.0, 1.0, 1.0) - 0.301).abs() < 0.01);
        let levels: Vec<f64> = (0..40).map(|i| phi(f64::from(i) * 0.1, 1.0, 0.2)).collect();
        assert!(levels.windows(2).all(|w| w[0] <= w[1]), "{levels:?}");
        assert!(phi(10.0, 1.0, 0.1).is_finite());
    }

    /// Answers every `every` for `count` answers, on the paused clock.
    async fn steady(rule: &PhiAccrual, history: &mut PhiHistory, every: Duration, count: u32) {
        for _ in 0..count {
            advance(every).await;
            rule.answered(history, Instant::now());
        }
    }

    /// The silence after which `rule` first reports the node lost, checked
    /// every 100 ms.
    fn lost_after(rule: &PhiAccrual, history: &PhiHistory) -> Duration {
        let mut history = history.clone();
        let last = history.last;
        (1..)
            .map(|tenths| Duration::from_millis(100) * tenths)
            .find(|&silence| rule.failed(&mut history, 1, last + silence))
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn on_a_steady_link_phi_suspects_after_about_three_intervals() {
        let rule = PhiAccrual::new(SECOND);
        let mut history = rule.fresh(Instant::now());
        steady(&rule, &mut history, SECOND, 50).await;
        let after = lost_after(&rule, &history);
        // mean 1 s + pause 2.3 s + about 5.3 minimal standard deviations.
        assert_eq!(after, Duration::from_millis(3900), "{after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn irregular_answers_make_phi_wait_longer() {
        let rule = PhiAccrual::new(SECOND);
        let mut steady_history = rule.fresh(Instant::now());
        steady(&rule, &mut steady_history, SECOND, 50).await;
        let mut jittery = rule.fresh(Instant::now());
        for i in 0..50 {
            let every = if i % 5 == 0 { SECOND * 3 } else { SECOND / 2 };
            advance(every).await;
            rule.answered(&mut jittery, Instant::now());
        }
        assert!(lost_after(&rule, &jittery) > lost_after(&rule, &steady_history) + SECOND);
    }

    #[tokio::test(start_paused = true)]
    async fn the_silence_is_capped_whatever_the_history() {
        let rule = PhiAccrual::new(SECOND);
        let mut history = rule.fresh(Instant::now());
        // Answers far apart: phi alone would wait very long.
        steady(&rule, &mut history, SECOND * 30, 20).await;
        assert_eq!(lost_after(&rule, &history), rule.max_silence);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_node_is_judged_by_the_first_estimate() {
        let rule = PhiAccrual::new(SECOND);
        let history = rule.fresh(Instant::now());
        let after = lost_after(&rule, &history);
        assert!((SECOND * 3..SECOND * 5).contains(&after), "{after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_history_keeps_the_last_max_samples_intervals() {
        let rule = PhiAccrual {
            max_samples: 10,
            ..PhiAccrual::new(SECOND)
        };
        let mut history = rule.fresh(Instant::now());
        steady(&rule, &mut history, SECOND * 5, 10).await;
        steady(&rule, &mut history, SECOND, 10).await;
        assert_eq!(history.intervals.len(), 10);
        assert!(history.intervals.iter().all(|&x| x == 1.0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_higher_threshold_waits_longer() {
        let low = PhiAccrual::new(SECOND).threshold(1.0);
        let high = PhiAccrual::new(SECOND).threshold(12.0);
        let mut history = low.fresh(Instant::now());
        steady(&low, &mut history, SECOND, 20).await;
        assert!(lost_after(&low, &history) < lost_after(&high, &history));
    }
}
