//! Failure detection as pure state machines: the master's [`Detector`] and
//! the node's [`MasterWatchdog`].
//!
//! Neither does I/O or reads a clock. The networking code feeds them what
//! happened (a node registered, a ping was answered or timed out, a message
//! arrived at some instant) and prints what they return, so every rule
//! about *when* an event is reported lives here, testable without sockets
//! or sleeps.
//!
//! How the master's side fits together:
//!
//! ```
//! use std::num::NonZeroU32;
//! use natter_heartbeat::detector::{Detector, Registration, Transition};
//! use tokio::time::Instant;
//!
//! let mut detector = Detector::new(NonZeroU32::new(3).unwrap());
//! let addr = "127.0.0.1:4000".parse().unwrap();
//! assert_eq!(detector.registered("n1", addr, Instant::now()), Ok(Registration::Joined));
//!
//! // Every interval: one ping per node, each with a fresh seq ...
//! for _ in 0..2 {
//!     let ping = detector.start_ping("n1").unwrap();
//!     // ... sent to ping.addr; no pong within the ping timeout:
//!     assert_eq!(detector.ping_failed("n1", ping.seq, Instant::now()), None);
//! }
//! let ping = detector.start_ping("n1").unwrap();
//! assert_eq!(detector.ping_failed("n1", ping.seq, Instant::now()), Some(Transition::Lost));
//!
//! // A lost node is still probed, less and less often; its first pong
//! // brings it back.
//! let ping = detector.start_ping("n1").unwrap();
//! assert_eq!(detector.ping_succeeded("n1", ping.seq, Instant::now()), Some(Transition::Recovered));
//! ```

use std::collections::BTreeMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use tokio::time::Instant;

use crate::rule::{LossRule, Rule, RuleHistory};

/// The most nodes a master knows at once unless told otherwise
/// (`--max-nodes`).
pub const DEFAULT_MAX_NODES: usize = 10_000;

/// How long a lost node is kept unless told otherwise
/// (`--forget-after-ms`): 5 minutes.
pub const DEFAULT_FORGET_AFTER: Duration = Duration::from_secs(300);

/// The longest wait between two probes of a lost node, in intervals. A
/// lost node that answers again is then recovered within this many
/// intervals plus the ping timeout, inside the promised `10 * interval +
/// ping timeout` with room for a late round.
pub const MAX_REPROBE_INTERVALS: u32 = 8;

/// Whether the master considers a node reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// Registered and answering (or not yet failing often enough to say
    /// otherwise).
    Live,
    /// `failures` pings in a row went unanswered. Still probed, less and
    /// less often; one pong makes it [`Live`](NodeState::Live) again.
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
    /// Whether the node has answered a ping since it registered.
    pub answered: bool,
}

/// How a registration changed the master's view; each maps to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Registration {
    /// A node the master did not know: `node_joined`.
    Joined,
    /// A live node registered again from the same heartbeat address
    /// (typically after it lost the master, or restarted on the same
    /// port): `node_joined` again.
    Rejoined,
    /// A lost node registered again, at its new address: `node_recovered`.
    Recovered,
}

/// Why a registration was refused; the master answers `rejected` with
/// [`reason`](Refusal::reason) and changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The id belongs to a live node at another heartbeat address. The
    /// live node is left alone; once it is lost, the id may be taken.
    IdInUse,
    /// The id is new and the master already knows `max_nodes` nodes.
    NodeLimit,
}

impl Refusal {
    /// The reason sent to the node and reported in
    /// `registration_rejected`: `id in use` or `node limit`.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::IdInUse => "id in use",
            Refusal::NodeLimit => "node limit",
        }
    }
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

/// Why a ping is sent, which says how much it may be held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PingKind {
    /// To a live node that has answered since it registered: its ping
    /// goes out every interval, never held back.
    Heartbeat,
    /// To a node that has not answered yet (it may be a fake at a dead
    /// address) or a lost one being probed again. Such pings may wait for
    /// their turn (within their ping timeout) when too many are
    /// outstanding, so that thousands of unreachable addresses cannot run
    /// the master out of sockets.
    Probe,
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
    /// A heartbeat of a live node or a probe.
    pub kind: PingKind,
}

/// What one round holds: the pings to send and the nodes forgotten.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// The pings to send now: heartbeats first (in order of id), then
    /// probes of nodes not heard from yet (oldest registration first),
    /// then of lost nodes (in order of id).
    pub pings: Vec<PingTarget>,
    /// Nodes lost for `forget_after` or longer, dropped from the table in
    /// this round (`node_forgotten`).
    pub forgotten: Vec<String>,
}

/// The master's failure detector: which nodes exist, where they listen,
/// and whether they are live or lost.
///
/// A node is lost when its [`Rule`] says so (by default `failures`
/// consecutive failed pings; see [`crate::rule`]), and recovered by its
/// first answered ping (or by registering again). Every method that
/// changes a node's state returns the change, so the caller prints each
/// `node_lost` / `node_recovered` / `node_left` exactly once.
///
/// # Who may register
///
/// The table holds at most `max_nodes` nodes ([`Refusal::NodeLimit`] for
/// a new id beyond that). An id that is live at another heartbeat address
/// is refused ([`Refusal::IdInUse`]): a second process with the same id,
/// or a forged registration, cannot take a live node's place. The same
/// address may register again at any time, and anyone may take the id of
/// a lost node.
///
/// # Lost nodes: probing and forgetting
///
/// A lost node is not pinged every round but probed with backoff: in the
/// first round after it was lost, then after 2, 4, and from then on 6 to 8
/// intervals (the spread keeps thousands of dead nodes lost at once from
/// being probed in the same round). So a node that comes back is
/// recovered within [`MAX_REPROBE_INTERVALS`] intervals plus the ping
/// timeout, and a dead one costs a ping every 7 intervals or so. A node
/// lost for `forget_after` is dropped from the table
/// ([`Round::forgotten`]); it may register again later as a new node.
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
    rule: Rule,
    max_nodes: usize,
    interval: Duration,
    forget_after: Duration,
    /// The last sequence number handed out; 0 before the first.
    last_seq: u64,
    /// Registrations accepted so far.
    registrations: u64,
    nodes: BTreeMap<String, Node>,
}

#[derive(Debug, Clone)]
struct Node {
    status: NodeStatus,
    /// What the rule remembers of its pings.
    history: RuleHistory,
    /// The newest seq sent to this node at its current address.
    last_sent: u64,
    /// Outcomes of seqs up to and including this one are no longer counted.
    counted_up_to: u64,
    /// Set while the node is lost.
    lost: Option<LostNode>,
    /// Which registration this was (the detector's count): orders the
    /// probes of nodes not heard from yet, oldest first.
    registration: u64,
}

/// How a lost node is being probed.
#[derive(Debug, Clone, Copy)]
struct LostNode {
    /// When the failure that lost it was reported.
    since: Instant,
    /// Probes sent since it was lost.
    probes: u32,
    /// The first round at or after this instant probes it; `None`: the
    /// next round.
    next_probe: Option<Instant>,
    /// Spreads the probes of nodes lost at the same time over rounds.
    salt: u32,
}

impl Detector {
    /// A detector with no nodes that declares a node lost after `failures`
    /// consecutive failed pings (`--failures`, default 3), for a master
    /// pinging every second, with at most [`DEFAULT_MAX_NODES`] nodes and
    /// lost nodes forgotten after [`DEFAULT_FORGET_AFTER`].
    pub fn new(failures: NonZeroU32) -> Detector {
        Detector::with_rule(Rule::fixed(failures))
    }

    /// The same, deciding who is lost with `rule` (see [`crate::rule`]).
    pub fn with_rule(rule: Rule) -> Detector {
        Detector {
            rule,
            max_nodes: DEFAULT_MAX_NODES,
            interval: Duration::from_secs(1),
            forget_after: DEFAULT_FORGET_AFTER,
            last_seq: 0,
            registrations: 0,
            nodes: BTreeMap::new(),
        }
    }

    /// At most `nodes` nodes, live and lost (`--max-nodes`).
    pub fn max_nodes(mut self, nodes: usize) -> Detector {
        self.max_nodes = nodes;
        self
    }

    /// The master's ping interval, the unit of the probes' backoff.
    pub fn interval(mut self, interval: Duration) -> Detector {
        self.interval = interval;
        self
    }

    /// Forget a node lost for this long (`--forget-after-ms`).
    pub fn forget_after(mut self, after: Duration) -> Detector {
        self.forget_after = after;
        self
    }

    /// The rule that decides when a node is lost.
    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    /// A node asks to register (a `register` with the right token, or no
    /// token needed) with heartbeat address `addr`, at `now`.
    ///
    /// A new id joins, unless the table is full. A known id registering
    /// from its address again, or taking over a lost entry, takes the
    /// (new) address, starts live with no failures, and outcomes of pings
    /// already sent to it are ignored from now on. A known id that is live
    /// at another address is refused and left alone.
    pub fn registered(
        &mut self,
        id: &str,
        addr: SocketAddr,
        now: Instant,
    ) -> Result<Registration, Refusal> {
        let registration = match self.nodes.get(id) {
            None if self.nodes.len() >= self.max_nodes => return Err(Refusal::NodeLimit),
            None => Registration::Joined,
            Some(node) => match node.status.state {
                NodeState::Live if node.status.addr != addr => return Err(Refusal::IdInUse),
                NodeState::Live => Registration::Rejoined,
                NodeState::Lost => Registration::Recovered,
            },
        };
        let fresh = Node {
            status: NodeStatus {
                addr,
                state: NodeState::Live,
                consecutive_failures: 0,
                answered: false,
            },
            history: self.rule.fresh(now),
            last_sent: self.last_seq,
            counted_up_to: self.last_seq,
            lost: None,
            registration: self.registrations,
        };
        self.registrations += 1;
        self.nodes.insert(id.to_owned(), fresh);
        Ok(registration)
    }

    /// A node said it is leaving: forget it. [`Transition::Left`] if it was
    /// known (live or lost), `None` for an id never registered or already
    /// gone. Outcomes of its pings still in flight are then ignored.
    pub fn left(&mut self, id: &str) -> Option<Transition> {
        self.nodes.remove(id).map(|_| Transition::Left)
    }

    /// Hands out the next ping for node `id` (`None` if it is unknown),
    /// whatever its state and schedule.
    ///
    /// Call this when the ping is about to be sent, and report its outcome
    /// with the returned `seq`.
    pub fn start_ping(&mut self, id: &str) -> Option<PingTarget> {
        let node = self.nodes.get_mut(id)?;
        self.last_seq += 1;
        node.last_sent = self.last_seq;
        let kind = if node.status.answered && node.lost.is_none() {
            PingKind::Heartbeat
        } else {
            PingKind::Probe
        };
        Some(PingTarget {
            id: id.to_owned(),
            addr: node.status.addr,
            seq: self.last_seq,
            kind,
        })
    }

    /// The round due at `now`: one ping for every live node, a probe for
    /// each lost node whose turn it is (see [Lost nodes](Detector#lost-nodes-probing-and-forgetting)),
    /// and the nodes lost for `forget_after`, which are dropped. What the
    /// master does each interval.
    pub fn start_round(&mut self, now: Instant) -> Round {
        let forget_after = self.forget_after;
        let forgotten: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, node)| {
                node.lost
                    .is_some_and(|lost| now.saturating_duration_since(lost.since) >= forget_after)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &forgotten {
            self.nodes.remove(id);
        }

        let interval = self.interval;
        // Heartbeats first, in order of id; then nodes not heard from yet,
        // oldest registration first (a flood of fakes registered after a
        // real node does not go before it); then lost nodes, in order of
        // id.
        let mut due = Vec::new();
        for (id, node) in &mut self.nodes {
            let order = match &mut node.lost {
                None if node.status.answered => (0, 0),
                None => (1, node.registration),
                Some(lost) => {
                    if lost.next_probe.is_some_and(|at| now < at) {
                        continue;
                    }
                    lost.probes += 1;
                    lost.next_probe = Some(now + interval * reprobe_gap(lost.probes, lost.salt));
                    (2, 0)
                }
            };
            due.push((order, id.clone()));
        }
        due.sort_by_key(|(order, _)| *order);
        let pings = due
            .iter()
            .filter_map(|(_, id)| self.start_ping(id))
            .collect();
        Round { pings, forgotten }
    }

    /// Ping `seq` to node `id` was answered in time (a pong with the same
    /// `seq`), at `now`. [`Transition::Recovered`] if the node was lost.
    ///
    /// Ignored (`None`, nothing changes) if the node is unknown or the
    /// outcome is stale (see [Sequence numbers](Detector#sequence-numbers)).
    pub fn ping_succeeded(&mut self, id: &str, seq: u64, now: Instant) -> Option<Transition> {
        let rule = self.rule.clone();
        let node = self.countable(id, seq)?;
        node.status.consecutive_failures = 0;
        node.status.answered = true;
        node.lost = None;
        match node.status.state {
            NodeState::Live => {
                rule.answered(&mut node.history, now);
                None
            }
            NodeState::Lost => {
                node.status.state = NodeState::Live;
                // The gap is remembered too: a link that pauses now and
                // then (latency spikes) should not be suspected at every
                // pause.
                rule.answered(&mut node.history, now);
                Some(Transition::Recovered)
            }
        }
    }

    /// Ping `seq` to node `id` failed at `now`: no connection, no pong
    /// within the ping timeout, or a bad answer. [`Transition::Lost`] when
    /// this failure is the `failures`-th in a row of a live node; the node
    /// is forgotten `forget_after` after `now` unless it comes back.
    ///
    /// Ignored (`None`, nothing changes) if the node is unknown or the
    /// outcome is stale (see [Sequence numbers](Detector#sequence-numbers)).
    pub fn ping_failed(&mut self, id: &str, seq: u64, now: Instant) -> Option<Transition> {
        let rule = self.rule.clone();
        let node = self.countable(id, seq)?;
        node.status.consecutive_failures = node.status.consecutive_failures.saturating_add(1);
        match node.status.state {
            NodeState::Live
                if rule.failed(&mut node.history, node.status.consecutive_failures, now) =>
            {
                node.status.state = NodeState::Lost;
                node.lost = Some(LostNode {
                    since: now,
                    probes: 0,
                    next_probe: None,
                    salt: salt(id, seq),
                });
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

/// The wait after probe number `probes` (from 1) of a lost node, in
/// intervals: 2, 4, then 6 to 8 as `salt` and `probes` have it.
fn reprobe_gap(probes: u32, salt: u32) -> u32 {
    match probes {
        0 | 1 => 2,
        2 => 4,
        _ => MAX_REPROBE_INTERVALS - (salt.wrapping_add(probes) % 3),
    }
}

/// A number that differs from node to node, to spread their probes.
fn salt(id: &str, seq: u64) -> u32 {
    let mut hasher = DefaultHasher::new();
    (id, seq).hash(&mut hasher);
    hasher.finish() as u32
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
        Register(&'static str, Result<Registration, Refusal>),
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
                    assert_eq!(
                        detector.registered("n1", addr(at), Instant::now()),
                        expected,
                        "{step:?}"
                    );
                    None
                }
                Step::Pong => {
                    let seq = detector.start_ping("n1").expect("n1 is known").seq;
                    detector.ping_succeeded("n1", seq, Instant::now())
                }
                Step::Fail => {
                    let seq = detector.start_ping("n1").expect("n1 is known").seq;
                    detector.ping_failed("n1", seq, Instant::now())
                }
                Step::Leave => detector.left("n1"),
            })
            .collect()
    }

    const A: &str = "127.0.0.1:4000";
    const B: &str = "127.0.0.1:5000";

    #[test]
    fn transitions_are_reported_once_per_change() {
        use Step::{Fail, Leave, Pong, Register};
        use Transition::{Left, Lost, Recovered};
        const JOINED: Result<Registration, Refusal> = Ok(Registration::Joined);
        const REJOINED: Result<Registration, Refusal> = Ok(Registration::Rejoined);
        const BACK: Result<Registration, Refusal> = Ok(Registration::Recovered);
        const IN_USE: Result<Registration, Refusal> = Err(Refusal::IdInUse);

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
                &[Register(A, JOINED), Pong, Pong, Pong],
                &[None, None, None, None]),
            ("the third failure in a row loses the node, once", 3,
                &[Register(A, JOINED), Fail, Fail, Fail, Fail, Fail],
                &[None, None, None, Some(Lost), None, None]),
            ("a pong resets the count", 3,
                &[Register(A, JOINED), Fail, Fail, Pong, Fail, Fail, Fail],
                &[None, None, None, None, None, None, Some(Lost)]),
            ("the first pong of a lost node recovers it, once", 3,
                &[Register(A, JOINED), Fail, Fail, Fail, Pong, Pong],
                &[None, None, None, Some(Lost), Some(Recovered), None]),
            ("a recovered node needs a full run of failures again", 3,
                &[Register(A, JOINED), Fail, Fail, Fail, Pong, Fail, Fail, Fail],
                &[None, None, None, Some(Lost), Some(Recovered), None, None, Some(Lost)]),
            ("failures 1: every failure of a live node loses it", 1,
                &[Register(A, JOINED), Fail, Fail, Pong, Fail],
                &[None, Some(Lost), None, Some(Recovered), Some(Lost)]),
            ("registering again from the same address while live rejoins", 3,
                &[Register(A, JOINED), Pong, Register(A, REJOINED)],
                &[None, None, None]),
            ("another address is refused while the node is live, even failing", 3,
                &[Register(A, JOINED), Pong, Register(B, IN_USE), Fail, Fail, Register(B, IN_USE), Pong],
                &[None, None, None, None, None, None, None]),
            ("registering again while lost recovers, at any address", 3,
                &[Register(A, JOINED), Fail, Fail, Fail, Register(B, BACK), Pong],
                &[None, None, None, Some(Lost), None, None]),
            ("registering again resets the failure count", 3,
                &[Register(A, JOINED), Fail, Fail, Register(A, REJOINED), Fail, Fail, Fail],
                &[None, None, None, None, None, None, Some(Lost)]),
            ("leaving is reported once; the node is then new again", 3,
                &[Register(A, JOINED), Leave, Leave, Register(B, JOINED)],
                &[None, Some(Left), None, None]),
            ("a lost node can leave", 2,
                &[Register(A, JOINED), Fail, Fail, Leave],
                &[None, None, Some(Lost), Some(Left)]),
        ];
        for (name, failures, steps, expected) in table {
            assert_eq!(run(*failures, steps), *expected, "{name}");
        }
    }

    #[test]
    fn new_node_is_live_at_its_address() {
        let mut d = detector(3);
        d.registered("n1", addr(A), Instant::now()).unwrap();
        assert_eq!(
            d.node("n1"),
            Some(&NodeStatus {
                addr: addr(A),
                state: NodeState::Live,
                consecutive_failures: 0,
                answered: false,
            })
        );
        assert_eq!(d.node("n2"), None);
    }

    #[test]
    fn a_live_id_at_another_address_is_refused_and_left_alone() {
        let mut d = detector(3);
        d.registered("n1", addr(A), Instant::now()).unwrap();
        let seq = d.start_ping("n1").unwrap().seq;
        assert_eq!(
            d.registered("n1", addr(B), Instant::now()),
            Err(Refusal::IdInUse)
        );
        assert_eq!(d.node("n1").unwrap().addr, addr(A));
        assert_eq!(
            d.ping_succeeded("n1", seq, Instant::now()),
            None,
            "pings in flight still count"
        );
        assert!(d.node("n1").unwrap().answered);
        assert_eq!(d.start_ping("n1").unwrap().addr, addr(A));
    }

    #[test]
    fn a_lost_node_is_taken_over_at_its_new_address() {
        let mut d = detector(1);
        d.registered("n1", addr(A), Instant::now()).unwrap();
        let seq = d.start_ping("n1").unwrap().seq;
        assert_eq!(
            d.ping_failed("n1", seq, Instant::now()),
            Some(Transition::Lost)
        );
        assert_eq!(
            d.registered("n1", addr(B), Instant::now()),
            Ok(Registration::Recovered)
        );
        assert_eq!(d.start_ping("n1").unwrap().addr, addr(B));
        assert_eq!(d.node("n1").unwrap().state, NodeState::Live);
    }

    #[test]
    fn new_ids_beyond_the_limit_are_refused_known_ones_are_not() {
        let mut d = detector(1).max_nodes(2);
        d.registered("n1", addr(A), Instant::now()).unwrap();
        d.registered("n2", addr(B), Instant::now()).unwrap();
        assert_eq!(
            d.registered("n3", addr(A), Instant::now()),
            Err(Refusal::NodeLimit)
        );
        assert_eq!(d.len(), 2);
        assert_eq!(
            d.registered("n2", addr(B), Instant::now()),
            Ok(Registration::Rejoined)
        );
        assert_eq!(d.left("n1"), Some(Transition::Left));
        assert_eq!(
            d.registered("n3", addr(A), Instant::now()),
            Ok(Registration::Joined)
        );
        assert_eq!(Refusal::NodeLimit.reason(), "node limit");
        assert_eq!(Refusal::IdInUse.reason(), "id in use");
    }

    #[test]
    fn a_late_pong_for_an_older_ping_does_not_count_after_a_newer_ping_failed() {
        let mut d = detector(2);
        d.registered("n1", addr(A), Instant::now()).unwrap();
        let old = d.start_ping("n1").unwrap().seq;
        let new = d.start_ping("n1").unwrap().seq;
        assert_eq!(d.ping_failed("n1", new, Instant::now()), None);
        assert_eq!(d.ping_succeeded("n1", old, Instant::now()), None);
        assert_eq!(
            d.node("n1").unwrap().consecutive_failures,
            1,
            "the late pong was ignored"
        );
        let next = d.start_ping("n1").unwrap().seq;
        assert_eq!(
            d.ping_failed("n1", next, Instant::now()),
            Some(Transition::Lost)
        );
    }

    #[test]
    fn a_late_pong_does_not_recover_a_node_lost_by_newer_pings() {
        let mut d = detector(1);
        d.registered("n1", addr(A), Instant::now()).unwrap();
        let old = d.start_ping("n1").unwrap().seq;
        let new = d.start_ping("n1").unwrap().seq;
        assert_eq!(
            d.ping_failed("n1", new, Instant::now()),
            Some(Transition::Lost)
        );
        assert_eq!(d.ping_succeeded("n1", old, Instant::now()), None);
        assert_eq!(d.node("n1").unwrap().state, NodeState::Lost);
    }

    #[test]
    fn a_late_timeout_for_an_older_ping_does_not_undo_a_newer_pong() {
        let mut d = detector(1);
        d.registered("n1", addr(A), Instant::now()).unwrap();
        let old = d.start_ping("n1").unwrap().seq;
        let new = d.start_ping("n1").unwrap().seq;
        assert_eq!(d.ping_succeeded("n1", new, Instant::now()), None);
        assert_eq!(d.ping_failed("n1", old, Instant::now()), None);
        assert_eq!(d.node("n1").unwrap().state, NodeState::Live);
    }

    #[test]
    fn a_timeout_reported_after_the_next_ping_was_sent_still_counts() {
        // ping timeout == interval: ping 1's timeout and ping 2's send race.
        // A frozen node must still be lost, so ping 1's failure counts.
        let mut d = detector(2);
        d.registered("n1", addr(A), Instant::now()).unwrap();
        let first = d.start_ping("n1").unwrap().seq;
        let second = d.start_ping("n1").unwrap().seq;
        assert_eq!(d.ping_failed("n1", first, Instant::now()), None);
        assert_eq!(
            d.ping_failed("n1", second, Instant::now()),
            Some(Transition::Lost)
        );
    }

    #[test]
    fn each_outcome_counts_once() {
        let mut d = detector(2);
        d.registered("n1", addr(A), Instant::now()).unwrap();
        let seq = d.start_ping("n1").unwrap().seq;
        assert_eq!(d.ping_failed("n1", seq, Instant::now()), None);
        assert_eq!(d.ping_failed("n1", seq, Instant::now()), None);
        assert_eq!(d.node("n1").unwrap().consecutive_failures, 1);
        assert_eq!(d.ping_succeeded("n1", seq, Instant::now()), None);
        assert_eq!(d.node("n1").unwrap().consecutive_failures, 1);
    }

    #[test]
    fn outcomes_of_pings_to_the_old_address_are_ignored_after_registering_again() {
        let mut d = detector(1);
        d.registered("n1", addr(A), Instant::now()).unwrap();
        let to_old_address = d.start_ping("n1").unwrap().seq;
        assert_eq!(
            d.registered("n1", addr(A), Instant::now()),
            Ok(Registration::Rejoined)
        );
        assert_eq!(d.ping_failed("n1", to_old_address, Instant::now()), None);
        assert_eq!(d.node("n1").unwrap().state, NodeState::Live);

        // Same for a lost node that re-registered: an old pong is not news.
        let lost = d.start_ping("n1").unwrap().seq;
        assert_eq!(
            d.ping_failed("n1", lost, Instant::now()),
            Some(Transition::Lost)
        );
        let stale = d.start_ping("n1").unwrap().seq;
        assert_eq!(
            d.registered("n1", addr(B), Instant::now()),
            Ok(Registration::Recovered)
        );
        assert_eq!(d.ping_succeeded("n1", stale, Instant::now()), None);
    }

    #[test]
    fn outcomes_of_pings_never_sent_or_to_unknown_nodes_are_ignored() {
        let mut d = detector(1);
        assert_eq!(d.ping_failed("ghost", 1, Instant::now()), None);
        d.registered("n1", addr(A), Instant::now()).unwrap();
        d.registered("n2", addr(B), Instant::now()).unwrap();
        let to_n2 = d.start_ping("n2").unwrap().seq;
        assert_eq!(
            d.ping_failed("n1", to_n2, Instant::now()),
            None,
            "that seq went to n2"
        );
        assert_eq!(d.ping_failed("n1", 0, Instant::now()), None);
        assert_eq!(
            d.ping_failed("n1", u64::MAX, Instant::now()),
            None,
            "not sent yet"
        );
        assert_eq!(d.node("n1").unwrap().consecutive_failures, 0);
    }

    #[test]
    fn pings_in_flight_when_a_node_leaves_are_ignored() {
        let mut d = detector(1);
        d.registered("n1", addr(A), Instant::now()).unwrap();
        let seq = d.start_ping("n1").unwrap().seq;
        assert_eq!(d.left("n1"), Some(Transition::Left));
        assert_eq!(d.ping_failed("n1", seq, Instant::now()), None);
        d.registered("n1", addr(A), Instant::now()).unwrap();
        assert_eq!(
            d.ping_failed("n1", seq, Instant::now()),
            None,
            "sent before it registered again"
        );
    }

    #[test]
    fn a_round_pings_every_live_node_heartbeats_first_with_distinct_seqs() {
        let mut d = detector(1);
        let now = Instant::now();
        assert_eq!(d.start_round(now), Round::default());
        d.registered("n3", addr(B), Instant::now()).unwrap();
        d.registered("n2", addr(B), Instant::now()).unwrap();
        d.registered("n1", addr(A), Instant::now()).unwrap();
        let seq = d.start_ping("n3").unwrap().seq;
        assert_eq!(d.ping_failed("n3", seq, now), Some(Transition::Lost));
        let seq = d.start_ping("n2").unwrap().seq;
        assert_eq!(d.ping_succeeded("n2", seq, Instant::now()), None);

        let round = d.start_round(now);
        let summary: Vec<_> = round
            .pings
            .iter()
            .map(|p| (p.id.as_str(), p.addr, p.kind))
            .collect();
        assert_eq!(
            summary,
            [
                ("n2", addr(B), PingKind::Heartbeat),
                ("n1", addr(A), PingKind::Probe),
                ("n3", addr(B), PingKind::Probe),
            ],
            "n2 answered; n1 has not yet; n3 is lost"
        );
        assert!(round.pings.windows(2).all(|w| w[0].seq != w[1].seq));
        assert!(round.pings.iter().all(|p| p.seq > seq));
        assert_eq!(d.start_ping("ghost"), None);
    }

    mod probing {
        //! Lost nodes over time, on tokio's paused clock: the rounds a
        //! master with a 1 s interval would run.

        use tokio::time::advance;

        use super::*;

        const INTERVAL: Duration = Duration::from_secs(1);

        /// A detector that has lost "n1" (failures 1) at the current
        /// instant, with `forget_after`.
        fn lost_n1(forget_after: Duration) -> Detector {
            let mut d = detector(1).interval(INTERVAL).forget_after(forget_after);
            d.registered("n1", addr(A), Instant::now()).unwrap();
            let seq = d.start_ping("n1").unwrap().seq;
            assert_eq!(
                d.ping_failed("n1", seq, Instant::now()),
                Some(Transition::Lost)
            );
            d
        }

        /// Runs a round every interval for `rounds` rounds, every ping
        /// failing; returns the rounds (counted from 1) that probed "n1".
        async fn probed_rounds(d: &mut Detector, rounds: u32) -> Vec<u32> {
            let mut probed = Vec::new();
            for round in 1..=rounds {
                advance(INTERVAL).await;
                for ping in d.start_round(Instant::now()).pings {
                    assert_eq!(ping.kind, PingKind::Probe);
                    assert_eq!(d.ping_failed(&ping.id, ping.seq, Instant::now()), None);
                    probed.push(round);
                }
            }
            probed
        }

        #[tokio::test(start_paused = true)]
        async fn a_lost_node_is_probed_less_and_less_often() {
            let mut d = lost_n1(Duration::from_secs(3600));
            let probed = probed_rounds(&mut d, 200).await;
            assert_eq!(probed[..4], [1, 3, 7, probed[3]]);
            let gaps: Vec<u32> = probed.windows(2).map(|w| w[1] - w[0]).collect();
            assert_eq!(gaps[..2], [2, 4]);
            assert!(
                gaps[2..]
                    .iter()
                    .all(|&gap| (6..=MAX_REPROBE_INTERVALS).contains(&gap)),
                "{gaps:?}"
            );
            assert!(
                gaps[2..].iter().any(|&gap| gap != gaps[2]),
                "spread, not a fixed beat: {gaps:?}"
            );
            // A dead node costs about one probe in 7 rounds, against one
            // per round before.
            assert!((25..=35).contains(&probed.len()), "{}", probed.len());
        }

        #[tokio::test(start_paused = true)]
        async fn a_lost_node_that_answers_again_is_recovered_within_the_bound() {
            // Whenever the node comes back, the next probe reaches it within
            // MAX_REPROBE_INTERVALS intervals.
            for back_after in 0..40 {
                let mut d = lost_n1(Duration::from_secs(3600));
                probed_rounds(&mut d, back_after).await;
                let mut waited = 0;
                let recovered = loop {
                    advance(INTERVAL).await;
                    waited += 1;
                    let round = d.start_round(Instant::now());
                    if let Some(ping) = round.pings.first() {
                        break d.ping_succeeded(&ping.id, ping.seq, Instant::now());
                    }
                };
                assert_eq!(recovered, Some(Transition::Recovered));
                assert!(
                    waited <= MAX_REPROBE_INTERVALS,
                    "back after {back_after} rounds: waited {waited}"
                );
                // Live again: pinged every round.
                for _ in 0..3 {
                    advance(INTERVAL).await;
                    assert_eq!(d.start_round(Instant::now()).pings.len(), 1);
                }
            }
        }

        #[tokio::test(start_paused = true)]
        async fn a_node_lost_for_forget_after_is_forgotten_once() {
            let forget_after = Duration::from_secs(30);
            let mut d = lost_n1(forget_after);
            let lost_at = Instant::now();
            let mut forgotten_at = None;
            for _ in 0..40 {
                advance(INTERVAL).await;
                let round = d.start_round(Instant::now());
                if !round.forgotten.is_empty() {
                    assert_eq!(round.forgotten, ["n1"]);
                    assert!(round.pings.is_empty(), "not pinged once forgotten");
                    assert_eq!(forgotten_at, None, "forgotten once");
                    forgotten_at = Some(Instant::now() - lost_at);
                } else if let Some(ping) = round.pings.first() {
                    d.ping_failed(&ping.id, ping.seq, Instant::now());
                }
            }
            assert_eq!(forgotten_at, Some(forget_after));
            assert_eq!(d.node("n1"), None);
            assert_eq!(
                d.registered("n1", addr(B), Instant::now()),
                Ok(Registration::Joined)
            );
        }

        #[tokio::test(start_paused = true)]
        async fn a_node_that_comes_back_is_not_forgotten() {
            let mut d = lost_n1(Duration::from_secs(10));
            advance(Duration::from_secs(5)).await;
            assert_eq!(
                d.registered("n1", addr(B), Instant::now()),
                Ok(Registration::Recovered)
            );
            advance(Duration::from_secs(60)).await;
            let round = d.start_round(Instant::now());
            assert!(round.forgotten.is_empty());
            assert_eq!(round.pings.len(), 1);
        }

        #[tokio::test(start_paused = true)]
        async fn a_live_node_is_never_forgotten() {
            let mut d = detector(3).forget_after(Duration::from_secs(1));
            d.registered("n1", addr(A), Instant::now()).unwrap();
            for _ in 0..10 {
                advance(INTERVAL).await;
                let round = d.start_round(Instant::now());
                assert!(round.forgotten.is_empty());
                let ping = &round.pings[0];
                d.ping_succeeded(&ping.id, ping.seq, Instant::now());
            }
        }

        #[tokio::test(start_paused = true)]
        async fn a_forgotten_node_frees_its_place() {
            let mut d = lost_n1(Duration::from_secs(5)).max_nodes(1);
            assert_eq!(
                d.registered("n2", addr(B), Instant::now()),
                Err(Refusal::NodeLimit)
            );
            advance(Duration::from_secs(5)).await;
            assert_eq!(d.start_round(Instant::now()).forgotten, ["n1"]);
            assert_eq!(
                d.registered("n2", addr(B), Instant::now()),
                Ok(Registration::Joined)
            );
        }
    }

    #[test]
    fn nodes_lists_every_node_in_order_of_id() {
        let mut d = detector(3);
        assert!(d.is_empty());
        d.registered("b", addr(B), Instant::now()).unwrap();
        d.registered("a", addr(A), Instant::now()).unwrap();
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
                d.registered("n1", addr(A), Instant::now()).unwrap();
                let mut pending: Vec<u64> = Vec::new();
                let mut last = Transition::Recovered;
                for (success, pick) in outcomes {
                    while pending.len() < in_flight {
                        pending.push(d.start_ping("n1").unwrap().seq);
                    }
                    let seq = pending.remove(pick.index(pending.len()));
                    let before = d.node("n1").unwrap().clone();
                    let transition = if success {
                        d.ping_succeeded("n1", seq, Instant::now())
                    } else {
                        d.ping_failed("n1", seq, Instant::now())
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

    mod with_phi {
        //! The detector's bookkeeping is the same whatever the rule: the
        //! table, refusals, probes with backoff, forgetting, recovery,
        //! here with phi accrual on the paused clock.

        use tokio::time::advance;

        use super::*;
        use crate::rule::PhiAccrual;

        const INTERVAL: Duration = Duration::from_secs(1);

        #[tokio::test(start_paused = true)]
        async fn phi_keeps_registration_limits_probes_and_forgetting() {
            let mut d = Detector::with_rule(Rule::Phi(PhiAccrual::new(INTERVAL)))
                .interval(INTERVAL)
                .max_nodes(2)
                .forget_after(Duration::from_secs(60));
            let now = Instant::now;
            assert_eq!(d.registered("n1", addr(A), now()), Ok(Registration::Joined));
            assert_eq!(d.registered("n2", addr(B), now()), Ok(Registration::Joined));
            assert_eq!(d.registered("n3", addr(A), now()), Err(Refusal::NodeLimit));
            assert_eq!(d.registered("n1", addr(B), now()), Err(Refusal::IdInUse));

            // n1 answers every round; n2 stops answering after 10 rounds.
            let mut lost_at = None;
            for round in 1..=20u32 {
                advance(INTERVAL).await;
                let pings = d.start_round(now()).pings;
                for ping in pings {
                    let transition = if ping.id == "n1" || round <= 10 {
                        d.ping_succeeded(&ping.id, ping.seq, now())
                    } else {
                        d.ping_failed(&ping.id, ping.seq, now())
                    };
                    if transition == Some(Transition::Lost) {
                        assert_eq!(ping.id, "n2");
                        assert_eq!(lost_at, None, "lost once");
                        lost_at = Some(round);
                    }
                }
            }
            // Silent from round 11 (last answer at round 10): lost at the
            // fourth failed ping, as with 3 failures in a row, give or take
            // one.
            assert!(matches!(lost_at, Some(13..=14)), "{lost_at:?}");
            assert_eq!(d.node("n1").unwrap().state, NodeState::Live);
            // A lost node may be taken over at another address; a lost one
            // is probed less often than every round.
            let probes: usize = {
                let mut probes = 0;
                for _ in 0..20 {
                    advance(INTERVAL).await;
                    let pings = d.start_round(now()).pings;
                    for ping in pings {
                        if ping.id == "n2" {
                            assert_eq!(ping.kind, PingKind::Probe);
                            probes += 1;
                            d.ping_failed(&ping.id, ping.seq, now());
                        } else {
                            d.ping_succeeded(&ping.id, ping.seq, now());
                        }
                    }
                }
                probes
            };
            assert!((3..=6).contains(&probes), "{probes} probes in 20 rounds");
            // An answer brings it back, once.
            let ping = d.start_ping("n2").unwrap();
            assert_eq!(
                d.ping_succeeded("n2", ping.seq, now()),
                Some(Transition::Recovered)
            );
            // Lost again and never heard from: forgotten after forget_after.
            let mut forgotten = false;
            for _ in 0..80 {
                advance(INTERVAL).await;
                let round = d.start_round(now());
                forgotten |= round.forgotten == ["n2"];
                for ping in round.pings {
                    if ping.id == "n2" {
                        d.ping_failed(&ping.id, ping.seq, now());
                    } else {
                        d.ping_succeeded(&ping.id, ping.seq, now());
                    }
                }
            }
            assert!(forgotten && d.node("n2").is_none());
            assert_eq!(d.registered("n3", addr(A), now()), Ok(Registration::Joined));
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
