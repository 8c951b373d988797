//! Failure detection as pure state machines: the master's [`Detector`] and
//! the node's [`MasterWatchdog`].
//!
//! Neither does I/O or reads a clock. The networking code feeds them what
//! happened (a node registered, a ping was answered or timed out, a message
//! arrived at some instant) and prints what they return, so every rule of
//! the contract about *when* an event is reported lives here, testable
//! without sockets or sleeps.
//!
//! How the master's side fits together:
//!
//! ```
//! use std::num::NonZeroU32;
//! use natter_heartbeat::detector::{Detector, Registration, Transition};
//!
//! let mut detector = Detector::new(NonZeroU32::new(3).unwrap());
//! assert_eq!(detector.registered("n1", "127.0.0.1:4000".parse().unwrap()), Registration::Joined);
//!
//! // Every interval: one ping per node, each with a fresh seq ...
//! for _ in 0..2 {
//!     let ping = detector.start_ping("n1").unwrap();
//!     // ... sent to ping.addr; no pong within the ping timeout:
//!     assert_eq!(detector.ping_failed("n1", ping.seq), None);
//! }
//! let ping = detector.start_ping("n1").unwrap();
//! assert_eq!(detector.ping_failed("n1", ping.seq), Some(Transition::Lost));
//!
//! // A lost node is still pinged; its first pong brings it back.
//! let ping = detector.start_ping("n1").unwrap();
//! assert_eq!(detector.ping_succeeded("n1", ping.seq), Some(Transition::Recovered));
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use tokio::time::Instant;

/// Whether the master considers a node reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// Registered and answering (or not yet failing often enough to say
    /// otherwise).
    Live,
    /// `failures` pings in a row went unanswered. Still pinged; one pong
    /// makes it [`Live`](NodeState::Live) again.
    Lost,
}

/// What the master knows about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// Where the node's heartbeat listener is: where pings go.
    pub addr: SocketAddr,
    /// Live or lost.
    pub state: NodeState,
    /// Unanswered pings since the last answered one (or since the node
    /// registered).
    pub consecutive_failures: u32,
}

/// How a registration changed the master's view; each maps to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Registration {
    /// A node the master did not know: `node_joined`.
    Joined,
    /// A live node registered again (typically after it lost the master, or
    /// restarted); it now has the new address: `node_joined` again.
    Rejoined,
    /// A lost node registered again, at its new address: `node_recovered`.
    Recovered,
}

/// A change of a node's state that the master reports, once per change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// Live to lost: `node_lost`.
    Lost,
    /// Lost to live: `node_recovered`.
    Recovered,
    /// The node said it was leaving and is forgotten: `node_left`.
    Left,
}

/// A ping to send: to `addr`, carrying `seq`, on behalf of node `id`.
///
/// Report its outcome with [`Detector::ping_succeeded`] or
/// [`Detector::ping_failed`], passing this `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingTarget {
    /// The node being pinged.
    pub id: String,
    /// Its heartbeat address.
    pub addr: SocketAddr,
    /// The sequence number to put in the [`Ping`](crate::protocol::Ping).
    pub seq: u64,
}

/// The master's failure detector: which nodes exist, where they listen,
/// and whether they are live or lost.
///
/// A node is lost after `failures` consecutive failed pings, and recovered
/// by its first answered ping (or by registering again). Every method that
/// changes a node's state returns the change, so the caller prints each
/// `node_lost` / `node_recovered` / `node_left` exactly once.
///
/// # Sequence numbers
///
/// Each ping gets a sequence number from [`start_ping`](Detector::start_ping)
/// (unique across all nodes and never reused). Outcomes count in sequence
/// order: once the outcome of a ping is counted, outcomes of older pings to
/// that node are stale and ignored, and so are outcomes of pings sent before
/// the node last registered (they went to its old address). So a pong that
/// arrives late for ping 4 cannot vouch for the node after ping 5 has
/// already failed, and a timeout reported late for ping 4 cannot undo the
/// success of ping 5. Pings may overlap (a ping timeout longer than the
/// interval): each outcome is counted if no newer one has been.
///
/// The caller checks that a pong's `seq` is the one it sent on that
/// connection; a mismatch is a failed ping.
#[derive(Debug, Clone)]
pub struct Detector {
    failures: NonZeroU32,
    /// The last sequence number handed out; 0 before the first.
    last_seq: u64,
    nodes: BTreeMap<String, Node>,
}

#[derive(Debug, Clone)]
struct Node {
    status: NodeStatus,
    /// The newest seq sent to this node at its current address.
    last_sent: u64,
    /// Outcomes of seqs up to and including this one are no longer counted.
    counted_up_to: u64,
}

impl Detector {
    /// A detector with no nodes that declares a node lost after `failures`
    /// consecutive failed pings (the contract's `--failures`, default 3).
    pub fn new(failures: NonZeroU32) -> Detector {
        Detector {
            failures,
            last_seq: 0,
            nodes: BTreeMap::new(),
        }
    }

    /// The number of consecutive failed pings that makes a node lost.
    pub fn failures(&self) -> NonZeroU32 {
        self.failures
    }

    /// A node registered (an accepted `register`) with heartbeat address
    /// `addr`.
    ///
    /// A known node takes the new address, starts live with no failures,
    /// and outcomes of pings already sent to it are ignored from now on.
    pub fn registered(&mut self, id: &str, addr: SocketAddr) -> Registration {
        let fresh = Node {
            status: NodeStatus {
                addr,
                state: NodeState::Live,
                consecutive_failures: 0,
            },
            last_sent: self.last_seq,
            counted_up_to: self.last_seq,
        };
        match self.nodes.insert(id.to_owned(), fresh) {
            None => Registration::Joined,
            Some(old) => match old.status.state {
                NodeState::Live => Registration::Rejoined,
                NodeState::Lost => Registration::Recovered,
            },
        }
    }

    /// A node said it is leaving: forget it. [`Transition::Left`] if it was
    /// known (live or lost), `None` for an id never registered or already
    /// gone. Outcomes of its pings still in flight are then ignored.
    pub fn left(&mut self, id: &str) -> Option<Transition> {
        self.nodes.remove(id).map(|_| Transition::Left)
    }

    /// Hands out the next ping for node `id` (`None` if it is unknown).
    ///
    /// Call this when the ping is about to be sent, and report its outcome
    /// with the returned `seq`.
    pub fn start_ping(&mut self, id: &str) -> Option<PingTarget> {
        let node = self.nodes.get_mut(id)?;
        self.last_seq += 1;
        node.last_sent = self.last_seq;
        Some(PingTarget {
            id: id.to_owned(),
            addr: node.status.addr,
            seq: self.last_seq,
        })
    }

    /// Hands out one ping for every known node, live and lost alike, in
    /// order of id: what the master sends each interval.
    pub fn start_round(&mut self) -> Vec<PingTarget> {
        let ids: Vec<String> = self.nodes.keys().cloned().collect();
        ids.iter().filter_map(|id| self.start_ping(id)).collect()
    }

    /// Ping `seq` to node `id` was answered in time (a pong with the same
    /// `seq`). [`Transition::Recovered`] if the node was lost.
    ///
    /// Ignored (`None`, nothing changes) if the node is unknown or the
    /// outcome is stale (see [Sequence numbers](Detector#sequence-numbers)).
    pub fn ping_succeeded(&mut self, id: &str, seq: u64) -> Option<Transition> {
        let node = self.countable(id, seq)?;
        node.status.consecutive_failures = 0;
        match node.status.state {
            NodeState::Live => None,
            NodeState::Lost => {
                node.status.state = NodeState::Live;
                Some(Transition::Recovered)
            }
        }
    }

    /// Ping `seq` to node `id` failed: no connection, no pong within the
    /// ping timeout, or a bad answer. [`Transition::Lost`] when this failure
    /// is the `failures`-th in a row of a live node.
    ///
    /// Ignored (`None`, nothing changes) if the node is unknown or the
    /// outcome is stale (see [Sequence numbers](Detector#sequence-numbers)).
    pub fn ping_failed(&mut self, id: &str, seq: u64) -> Option<Transition> {
        let threshold = self.failures.get();
        let node = self.countable(id, seq)?;
        node.status.consecutive_failures = node.status.consecutive_failures.saturating_add(1);
        match node.status.state {
            NodeState::Live if node.status.consecutive_failures >= threshold => {
                node.status.state = NodeState::Lost;
                Some(Transition::Lost)
            }
            NodeState::Live | NodeState::Lost => None,
        }
    }

    /// What the master knows about node `id`.
    pub fn node(&self, id: &str) -> Option<&NodeStatus> {
        self.nodes.get(id).map(|node| &node.status)
    }

    /// Every known node, in order of id.
    pub fn nodes(&self) -> impl Iterator<Item = (&str, &NodeStatus)> + '_ {
        self.nodes
            .iter()
            .map(|(id, node)| (id.as_str(), &node.status))
    }

    /// How many nodes are known.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node is known.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node, if the outcome of ping `seq` to it still counts; marks it
    /// counted.
    fn countable(&mut self, id: &str, seq: u64) -> Option<&mut Node> {
        let node = self.nodes.get_mut(id)?;
        if seq <= node.counted_up_to || seq > node.last_sent {
            return None;
        }
        node.counted_up_to = seq;
        Some(node)
    }
}

/// The node's side: has the master gone silent?
///
/// The master pings every node each interval, so a node that hears nothing
/// from it for `master-timeout` has been lost by the master (or the master
/// is gone). The watchdog is armed when a registration is accepted, reset by
/// everything heard from the master after that, and reports the silence
/// once; it stays quiet until something is heard again.
///
/// It reads no clock: pass it the current [`Instant`] (tokio's, so tests
/// can pause time). A node's loop sleeps until [`deadline`] and then asks
/// [`check`]:
///
/// ```
/// # async fn example(mut pings: tokio::sync::mpsc::Receiver<()>) {
/// use std::time::Duration;
/// use natter_heartbeat::detector::MasterWatchdog;
/// use tokio::time::{Instant, sleep_until};
///
/// let mut watchdog = MasterWatchdog::new(Duration::from_secs(10), Instant::now());
/// loop {
///     let Some(deadline) = watchdog.deadline() else { break };
///     tokio::select! {
///         Some(()) = pings.recv() => watchdog.heard(Instant::now()),
///         () = sleep_until(deadline) => {
///             if watchdog.check(Instant::now()) {
///                 println!("{{\"event\":\"master_lost\"}}");
///             }
///         }
///     }
/// }
/// // Lost: register again, then `watchdog.heard(Instant::now())`.
/// # }
/// ```
///
/// [`deadline`]: MasterWatchdog::deadline
/// [`check`]: MasterWatchdog::check
#[derive(Debug, Clone)]
pub struct MasterWatchdog {
    timeout: Duration,
    last_heard: Instant,
    lost: bool,
}

impl MasterWatchdog {
    /// An armed watchdog that last heard from the master at `now` (when its
    /// registration was accepted).
    pub fn new(timeout: Duration, now: Instant) -> MasterWatchdog {
        MasterWatchdog {
            timeout,
            last_heard: now,
            lost: false,
        }
    }

    /// Something arrived from the master at `now` (a ping, an accepted
    /// registration): the silence starts over, and a lost master counts as
    /// found again.
    pub fn heard(&mut self, now: Instant) {
        // Reports may arrive out of order from different tasks; the latest
        // instant wins.
        if now > self.last_heard || self.lost {
            self.last_heard = now;
        }
        self.lost = false;
    }

    /// `true` exactly once per silence: the first time it is called at or
    /// after `timeout` since the master was last heard. Report
    /// `master_lost` then.
    pub fn check(&mut self, now: Instant) -> bool {
        if self.lost || now.saturating_duration_since(self.last_heard) < self.timeout {
            return false;
        }
        self.lost = true;
        true
    }

    /// When the silence becomes long enough to report; `None` once it has
    /// been reported (until the master is heard again).
    pub fn deadline(&self) -> Option<Instant> {
        (!self.lost).then(|| self.last_heard + self.timeout)
    }

    /// Whether the silence has been reported and nothing was heard since.
    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// The silence that counts as losing the master.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn detector(failures: u32) -> Detector {
        Detector::new(NonZeroU32::new(failures).unwrap())
    }

    /// One step of a scripted run against node "n1".
    #[derive(Debug, Clone, Copy)]
    enum Step {
        /// Register "n1" at this address; expect this result.
        Register(&'static str, Registration),
        /// Send one ping and report it answered.
        Pong,
        /// Send one ping and report it failed.
        Fail,
        /// "n1" leaves.
        Leave,
    }

    /// Runs `steps` against a fresh detector, and returns what each step
    /// reported (`None` for a registration, which is checked in place).
    fn run(failures: u32, steps: &[Step]) -> Vec<Option<Transition>> {
        let mut detector = detector(failures);
        steps
            .iter()
            .map(|step| match *step {
                Step::Register(at, expected) => {
                    assert_eq!(detector.registered("n1", addr(at)), expected, "{step:?}");
                    None
                }
                Step::Pong => {
                    let seq = detector.start_ping("n1").expect("n1 is known").seq;
                    detector.ping_succeeded("n1", seq)
                }
                Step::Fail => {
                    let seq = detector.start_ping("n1").expect("n1 is known").seq;
                    detector.ping_failed("n1", seq)
                }
                Step::Leave => detector.left("n1"),
            })
            .collect()
    }

    const A: &str = "127.0.0.1:4000";
    const B: &str = "127.0.0.1:5000";

    #[test]
    fn transitions_are_reported_once_per_change() {
        use Registration::{Joined, Recovered as Back, Rejoined};
        use Step::{Fail, Leave, Pong, Register};
        use Transition::{Left, Lost, Recovered};

        /// (what it shows, `failures`, the steps, what each step reports)
        type Case = (
            &'static str,
            u32,
            &'static [Step],
            &'static [Option<Transition>],
        );

        #[rustfmt::skip]
        let table: &[Case] = &[
            ("answered pings report nothing", 3,
                &[Register(A, Joined), Pong, Pong, Pong],
                &[None, None, None, None]),
            ("the third failure in a row loses the node, once", 3,
                &[Register(A, Joined), Fail, Fail, Fail, Fail, Fail],
                &[None, None, None, Some(Lost), None, None]),
            ("a pong resets the count", 3,
                &[Register(A, Joined), Fail, Fail, Pong, Fail, Fail, Fail],
                &[None, None, None, None, None, None, Some(Lost)]),
            ("the first pong of a lost node recovers it, once", 3,
                &[Register(A, Joined), Fail, Fail, Fail, Pong, Pong],
                &[None, None, None, Some(Lost), Some(Recovered), None]),
            ("a recovered node needs a full run of failures again", 3,
                &[Register(A, Joined), Fail, Fail, Fail, Pong, Fail, Fail, Fail],
                &[None, None, None, Some(Lost), Some(Recovered), None, None, Some(Lost)]),
            ("failures 1: every failure of a live node loses it", 1,
                &[Register(A, Joined), Fail, Fail, Pong, Fail],
                &[None, Some(Lost), None, Some(Recovered), Some(Lost)]),
            ("registering again while live rejoins", 3,
                &[Register(A, Joined), Pong, Register(B, Rejoined)],
                &[None, None, None]),
            ("registering again while lost recovers", 3,
                &[Register(A, Joined), Fail, Fail, Fail, Register(B, Back), Pong],
                &[None, None, None, Some(Lost), None, None]),
            ("registering again resets the failure count", 3,
                &[Register(A, Joined), Fail, Fail, Register(B, Rejoined), Fail, Fail, Fail],
                &[None, None, None, None, None, None, Some(Lost)]),
            ("leaving is reported once; the node is then new again", 3,
                &[Register(A, Joined), Leave, Leave, Register(A, Joined)],
                &[None, Some(Left), None, None]),
            ("a lost node can leave", 2,
                &[Register(A, Joined), Fail, Fail, Leave],
                &[None, None, Some(Lost), Some(Left)]),
        ];
        for (name, failures, steps, expected) in table {
            assert_eq!(run(*failures, steps), *expected, "{name}");
        }
    }

    #[test]
    fn new_node_is_live_at_its_address() {
        let mut d = detector(3);
        d.registered("n1", addr(A));
        assert_eq!(
            d.node("n1"),
            Some(&NodeStatus {
                addr: addr(A),
                state: NodeState::Live,
                consecutive_failures: 0,
            })
        );
        assert_eq!(d.node("n2"), None);
    }

    #[test]
    fn registering_again_moves_the_pings_to_the_new_address() {
        let mut d = detector(3);
        d.registered("n1", addr(A));
        assert_eq!(d.start_ping("n1").unwrap().addr, addr(A));
        d.registered("n1", addr(B));
        assert_eq!(d.start_ping("n1").unwrap().addr, addr(B));
        assert_eq!(d.node("n1").unwrap().addr, addr(B));
    }

    #[test]
    fn a_late_pong_for_an_older_ping_does_not_count_after_a_newer_ping_failed() {
        let mut d = detector(2);
        d.registered("n1", addr(A));
        let old = d.start_ping("n1").unwrap().seq;
        let new = d.start_ping("n1").unwrap().seq;
        assert_eq!(d.ping_failed("n1", new), None);
        assert_eq!(d.ping_succeeded("n1", old), None);
        assert_eq!(
            d.node("n1").unwrap().consecutive_failures,
            1,
            "the late pong was ignored"
        );
        let next = d.start_ping("n1").unwrap().seq;
        assert_eq!(d.ping_failed("n1", next), Some(Transition::Lost));
    }

    #[test]
    fn a_late_pong_does_not_recover_a_node_lost_by_newer_pings() {
        let mut d = detector(1);
        d.registered("n1", addr(A));
        let old = d.start_ping("n1").unwrap().seq;
        let new = d.start_ping("n1").unwrap().seq;
        assert_eq!(d.ping_failed("n1", new), Some(Transition::Lost));
        assert_eq!(d.ping_succeeded("n1", old), None);
        assert_eq!(d.node("n1").unwrap().state, NodeState::Lost);
    }

    #[test]
    fn a_late_timeout_for_an_older_ping_does_not_undo_a_newer_pong() {
        let mut d = detector(1);
        d.registered("n1", addr(A));
        let old = d.start_ping("n1").unwrap().seq;
        let new = d.start_ping("n1").unwrap().seq;
        assert_eq!(d.ping_succeeded("n1", new), None);
        assert_eq!(d.ping_failed("n1", old), None);
        assert_eq!(d.node("n1").unwrap().state, NodeState::Live);
    }

    #[test]
    fn a_timeout_reported_after_the_next_ping_was_sent_still_counts() {
        // ping timeout == interval: ping 1's timeout and ping 2's send race.
        // A frozen node must still be lost, so ping 1's failure counts.
        let mut d = detector(2);
        d.registered("n1", addr(A));
        let first = d.start_ping("n1").unwrap().seq;
        let second = d.start_ping("n1").unwrap().seq;
        assert_eq!(d.ping_failed("n1", first), None);
        assert_eq!(d.ping_failed("n1", second), Some(Transition::Lost));
    }

    #[test]
    fn each_outcome_counts_once() {
        let mut d = detector(2);
        d.registered("n1", addr(A));
        let seq = d.start_ping("n1").unwrap().seq;
        assert_eq!(d.ping_failed("n1", seq), None);
        assert_eq!(d.ping_failed("n1", seq), None);
        assert_eq!(d.node("n1").unwrap().consecutive_failures, 1);
        assert_eq!(d.ping_succeeded("n1", seq), None);
        assert_eq!(d.node("n1").unwrap().consecutive_failures, 1);
    }

    #[test]
    fn outcomes_of_pings_to_the_old_address_are_ignored_after_registering_again() {
        let mut d = detector(1);
        d.registered("n1", addr(A));
        let to_old_address = d.start_ping("n1").unwrap().seq;
        d.registered("n1", addr(B));
        assert_eq!(d.ping_failed("n1", to_old_address), None);
        assert_eq!(d.node("n1").unwrap().state, NodeState::Live);

        // Same for a lost node that re-registered: an old pong is not news.
        let lost = d.start_ping("n1").unwrap().seq;
        assert_eq!(d.ping_failed("n1", lost), Some(Transition::Lost));
        let stale = d.start_ping("n1").unwrap().seq;
        assert_eq!(d.registered("n1", addr(A)), Registration::Recovered);
        assert_eq!(d.ping_succeeded("n1", stale), None);
    }

    #[test]
    fn outcomes_of_pings_never_sent_or_to_unknown_nodes_are_ignored() {
        let mut d = detector(1);
        assert_eq!(d.ping_failed("ghost", 1), None);
        d.registered("n1", addr(A));
        d.registered("n2", addr(B));
        let to_n2 = d.start_ping("n2").unwrap().seq;
        assert_eq!(d.ping_failed("n1", to_n2), None, "that seq went to n2");
        assert_eq!(d.ping_failed("n1", 0), None);
        assert_eq!(d.ping_failed("n1", u64::MAX), None, "not sent yet");
        assert_eq!(d.node("n1").unwrap().consecutive_failures, 0);
    }

    #[test]
    fn pings_in_flight_when_a_node_leaves_are_ignored() {
        let mut d = detector(1);
        d.registered("n1", addr(A));
        let seq = d.start_ping("n1").unwrap().seq;
        assert_eq!(d.left("n1"), Some(Transition::Left));
        assert_eq!(d.ping_failed("n1", seq), None);
        d.registered("n1", addr(A));
        assert_eq!(
            d.ping_failed("n1", seq),
            None,
            "sent before it registered again"
        );
    }

    #[test]
    fn a_round_pings_every_node_live_or_lost_with_distinct_seqs() {
        let mut d = detector(1);
        assert!(d.start_round().is_empty());
        d.registered("n2", addr(B));
        d.registered("n1", addr(A));
        let seq = d.start_ping("n2").unwrap().seq;
        assert_eq!(d.ping_failed("n2", seq), Some(Transition::Lost));

        let round = d.start_round();
        let summary: Vec<_> = round.iter().map(|p| (p.id.as_str(), p.addr)).collect();
        assert_eq!(summary, [("n1", addr(A)), ("n2", addr(B))]);
        assert!(round[0].seq > seq && round[1].seq > round[0].seq);
        assert_eq!(d.start_ping("ghost"), None);
    }

    #[test]
    fn nodes_lists_every_node_in_order_of_id() {
        let mut d = detector(3);
        assert!(d.is_empty());
        d.registered("b", addr(B));
        d.registered("a", addr(A));
        let ids: Vec<&str> = d.nodes().map(|(id, _)| id).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(d.len(), 2);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// Whatever the order of outcomes, a node's reported transitions
            /// alternate lost, recovered, lost, ..., and `Lost` is reported
            /// exactly when the last `failures` counted outcomes all failed
            /// and the node was live.
            #[test]
            fn transitions_alternate_and_match_the_state(
                failures in 1u32..5,
                in_flight in 1usize..4,
                outcomes in proptest::collection::vec((any::<bool>(), any::<prop::sample::Index>()), 0..60),
            ) {
                let mut d = detector(failures);
                d.registered("n1", addr(A));
                let mut pending: Vec<u64> = Vec::new();
                let mut last = Transition::Recovered;
                for (success, pick) in outcomes {
                    while pending.len() < in_flight {
                        pending.push(d.start_ping("n1").unwrap().seq);
                    }
                    let seq = pending.remove(pick.index(pending.len()));
                    let before = d.node("n1").unwrap().clone();
                    let transition = if success {
                        d.ping_succeeded("n1", seq)
                    } else {
                        d.ping_failed("n1", seq)
                    };
                    let after = d.node("n1").unwrap().clone();
                    if let Some(t) = transition {
                        prop_assert_ne!(t, last, "the same transition twice in a row");
                        last = t;
                    }
                    match transition {
                        Some(Transition::Lost) => {
                            prop_assert_eq!(before.state, NodeState::Live);
                            prop_assert_eq!(after.consecutive_failures, failures);
                        }
                        Some(Transition::Recovered) => {
                            prop_assert_eq!(before.state, NodeState::Lost);
                        }
                        Some(Transition::Left) => prop_assert!(false, "nobody left"),
                        None => prop_assert_eq!(before.state, after.state),
                    }
                    if after.state == NodeState::Live {
                        prop_assert!(after.consecutive_failures < failures);
                    }
                }
            }
        }
    }

    mod watchdog {
        use tokio::time::{advance, sleep_until};

        use super::*;

        const TIMEOUT: Duration = Duration::from_secs(10);
        const MS: Duration = Duration::from_millis(1);

        #[tokio::test(start_paused = true)]
        async fn silence_is_reported_at_the_timeout_not_earlier() {
            let mut watchdog = MasterWatchdog::new(TIMEOUT, Instant::now());
            advance(TIMEOUT - MS).await;
            assert!(!watchdog.check(Instant::now()));
            advance(MS).await;
            assert!(watchdog.check(Instant::now()));
        }

        #[tokio::test(start_paused = true)]
        async fn silence_is_reported_once() {
            let mut watchdog = MasterWatchdog::new(TIMEOUT, Instant::now());
            advance(TIMEOUT).await;
            assert!(watchdog.check(Instant::now()));
            assert!(watchdog.is_lost());
            assert_eq!(watchdog.deadline(), None);
            advance(TIMEOUT * 5).await;
            assert!(!watchdog.check(Instant::now()));
        }

        #[tokio::test(start_paused = true)]
        async fn hearing_from_the_master_restarts_the_silence() {
            let mut watchdog = MasterWatchdog::new(TIMEOUT, Instant::now());
            for _ in 0..5 {
                advance(TIMEOUT - MS).await;
                watchdog.heard(Instant::now());
            }
            assert_eq!(watchdog.deadline(), Some(Instant::now() + TIMEOUT));
            advance(TIMEOUT - MS).await;
            assert!(!watchdog.check(Instant::now()));
        }

        #[tokio::test(start_paused = true)]
        async fn a_found_master_can_be_lost_again() {
            let mut watchdog = MasterWatchdog::new(TIMEOUT, Instant::now());
            advance(TIMEOUT).await;
            assert!(watchdog.check(Instant::now()));
            advance(Duration::from_secs(3)).await;
            watchdog.heard(Instant::now());
            assert!(!watchdog.is_lost());
            advance(TIMEOUT - MS).await;
            assert!(!watchdog.check(Instant::now()));
            advance(MS).await;
            assert!(watchdog.check(Instant::now()));
        }

        #[tokio::test(start_paused = true)]
        async fn an_older_report_does_not_move_the_deadline_back() {
            let start = Instant::now();
            let mut watchdog = MasterWatchdog::new(TIMEOUT, start);
            advance(Duration::from_secs(5)).await;
            watchdog.heard(Instant::now());
            watchdog.heard(start);
            assert_eq!(watchdog.deadline(), Some(Instant::now() + TIMEOUT));
        }

        /// The loop a node runs: pings arrive every second for a while, then
        /// stop; `master_lost` comes exactly `TIMEOUT` after the last one.
        #[tokio::test(start_paused = true)]
        async fn driven_by_sleep_until_it_fires_one_timeout_after_the_last_ping() {
            let (pings, mut heard) = tokio::sync::mpsc::channel::<()>(1);
            tokio::spawn(async move {
                for _ in 0..5 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    pings.send(()).await.unwrap();
                }
                // Keep the channel open but silent.
                std::future::pending::<()>().await;
            });

            let start = Instant::now();
            let mut watchdog = MasterWatchdog::new(TIMEOUT, start);
            let mut lost_at = Vec::new();
            while let Some(deadline) = watchdog.deadline() {
                tokio::select! {
                    Some(()) = heard.recv() => watchdog.heard(Instant::now()),
                    () = sleep_until(deadline) => {
                        if watchdog.check(Instant::now()) {
                            lost_at.push(Instant::now() - start);
                        }
                    }
                }
            }
            assert_eq!(lost_at, [Duration::from_secs(5) + TIMEOUT]);
        }
    }
}
