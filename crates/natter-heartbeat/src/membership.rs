//! The master's membership table: what the registration endpoint
//! ([`master`](crate::master)) and the [`pinger`](crate::pinger) share.
//!
//! It holds the [`Detector`] that decides who is live, lost or refused,
//! each node's ping connection, the ping statistics, the [`LogBudget`] and
//! the sender of the [`MasterEvent`]s. Every change goes through it under
//! one lock, held for a map lookup or two and never across I/O, so the
//! events come out in the order the detector decided them. Events go into
//! a bounded [`EventStream`](crate::EventStream) and log lines into a
//! non-blocking writer, so holding the lock never waits for output.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tower::util::BoxCloneSyncService;

use crate::detector::{Detector, NodeState, PingTarget, Refusal};
use crate::event::{EventSender, MasterEvent};
use crate::logs::{Change, LogBudget};
use crate::protocol::{Ping, Pong};

/// How the master reaches one node: a ping in, the node's pong out.
pub(crate) type PingService = BoxCloneSyncService<Ping, Pong, natter::Error>;

/// Makes the [`PingService`] for a node's heartbeat address. The master
/// dials real nodes (`pinger::NodeLink`); tests use nodes made of
/// closures.
pub(crate) type Connector = Arc<dyn Fn(SocketAddr) -> PingService + Send + Sync>;

/// The shared table; see the [module](self).
pub(crate) struct Membership {
    state: Mutex<State>,
    connector: Connector,
    events: EventSender<MasterEvent>,
    metrics: Metrics,
}

/// The master's series, through the `metrics` facade (see the crate's
/// README): handles taken once, from the recorder installed when the
/// master started.
struct Metrics {
    known: metrics::Gauge,
    alive: metrics::Gauge,
    lost: metrics::Gauge,
    pings_sent: metrics::Counter,
    pings_answered: metrics::Counter,
    pings_failed: metrics::Counter,
    rtt: metrics::Histogram,
}

impl Metrics {
    fn new() -> Self {
        Metrics {
            known: metrics::gauge!("heartbeat_nodes_known"),
            alive: metrics::gauge!("heartbeat_nodes_alive"),
            lost: metrics::gauge!("heartbeat_nodes_lost"),
            pings_sent: metrics::counter!("heartbeat_pings_sent_total"),
            pings_answered: metrics::counter!("heartbeat_pings_answered_total"),
            pings_failed: metrics::counter!("heartbeat_pings_failed_total"),
            rtt: metrics::histogram!("heartbeat_ping_rtt_seconds"),
        }
    }
}

struct State {
    detector: Detector,
    /// The ping connection of each node that has been pinged, at the
    /// address the detector has for it (a registration drops it).
    links: HashMap<String, PingService>,
    /// The pings finished since the last [`MasterEvent::PingStats`], if
    /// statistics were asked for.
    stats: Option<PingTally>,
    logs: LogBudget,
}

/// Pings finished in one stats period.
#[derive(Default)]
struct PingTally {
    failed: u64,
    rtts: Vec<Duration>,
}

impl Membership {
    /// A membership with no nodes yet, deciding with `detector`. With
    /// `ping_stats`, every ping's outcome is kept until
    /// [`report_ping_stats`](Self::report_ping_stats).
    pub(crate) fn new(
        detector: Detector,
        connector: Connector,
        events: EventSender<MasterEvent>,
        ping_stats: bool,
    ) -> Self {
        Membership {
            state: Mutex::new(State {
                detector,
                links: HashMap::new(),
                stats: ping_stats.then(PingTally::default),
                logs: LogBudget::new(Instant::now()),
            }),
            connector,
            events,
            metrics: Metrics::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change is a call or two on the detector and the map; a
        // panic between them leaves at worst a connection to redial.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Node `id` asks to register at heartbeat address `addr`, from
    /// `peer` (its token, if one is needed, was right). Reports the
    /// outcome, `node_joined`, `node_recovered` or
    /// `registration_rejected`, and returns the refusal if any.
    pub(crate) fn register(
        &self,
        id: String,
        addr: SocketAddr,
        peer: SocketAddr,
    ) -> Result<(), Refusal> {
        let mut state = self.state();
        match state.detector.registered(&id, addr, Instant::now()) {
            Ok(registration) => {
                // Its next ping dials the new address (or the same address
                // anew: the node may have restarted there).
                state.links.remove(&id);
                let event = MasterEvent::registration(id, addr, registration);
                let change = match event {
                    MasterEvent::NodeRecovered { .. } => Change::Recovered,
                    _ => Change::Joined,
                };
                if state.logs.allow(change, Instant::now()) {
                    tracing::info!(%peer, "{event}");
                }
                self.events.send(event);
                Ok(())
            }
            Err(refusal) => {
                self.log_rejection(&mut state, &id, peer, refusal.reason());
                self.events.send(MasterEvent::RegistrationRejected {
                    peer,
                    reason: refusal.reason().to_owned(),
                });
                Err(refusal)
            }
        }
    }

    /// A registration from `peer` was refused before it reached the table
    /// (a wrong or missing token): reports `registration_rejected`.
    pub(crate) fn rejected(&self, id: &str, peer: SocketAddr, reason: &str) {
        let mut state = self.state();
        self.log_rejection(&mut state, id, peer, reason);
        self.events.send(MasterEvent::RegistrationRejected {
            peer,
            reason: reason.to_owned(),
        });
    }

    fn log_rejection(&self, state: &mut State, id: &str, peer: SocketAddr, reason: &str) {
        if state.logs.allow(Change::Rejected, Instant::now()) {
            tracing::warn!(node = %id.escape_debug(), %peer, %reason, "registration rejected");
        }
    }

    /// Node `id` said it is leaving.
    pub(crate) fn leave(&self, id: &str) {
        let mut state = self.state();
        if let Some(transition) = state.detector.left(id) {
            state.links.remove(id);
            let event = MasterEvent::transition(id.to_owned(), transition);
            if state.logs.allow(Change::Left, Instant::now()) {
                tracing::info!("{event}");
            }
            self.events.send(event);
        }
    }

    /// The round due at `now`: the pings to send, each with the service
    /// to send it on (heartbeats first, then probes). Nodes lost for too
    /// long are forgotten here (`node_forgotten`), and the log summary is
    /// written when one is due.
    pub(crate) fn start_round(&self, now: Instant) -> Vec<(PingTarget, PingService)> {
        let mut state = self.state();
        let round = state.detector.start_round(now);
        for id in round.forgotten {
            state.links.remove(&id);
            let event = MasterEvent::NodeForgotten { node: id };
            if state.logs.allow(Change::Forgotten, now) {
                tracing::info!("{event}");
            }
            self.events.send(event);
        }
        let (mut live, mut lost) = (0u64, 0u64);
        for (_, node) in state.detector.nodes() {
            match node.state {
                NodeState::Live => live += 1,
                NodeState::Lost => lost += 1,
            }
        }
        self.metrics.known.set((live + lost) as f64);
        self.metrics.alive.set(live as f64);
        self.metrics.lost.set(lost as f64);
        self.metrics.pings_sent.increment(round.pings.len() as u64);
        if let Some(summary) = state.logs.summary(now) {
            let seconds = summary.period.as_secs_f64().round();
            if summary.pings_failed > 0 {
                tracing::warn!(
                    "in the last {seconds} s: {} pings failed, {} answered; now {live} nodes live, {lost} lost",
                    summary.pings_failed,
                    summary.pings_answered,
                );
            }
            if summary.unlogged != Default::default() {
                tracing::warn!(
                    "in the last {seconds} s, too many node changes to log one by one; not logged: {}",
                    summary.unlogged
                );
            }
        }
        let links = &mut state.links;
        round
            .pings
            .into_iter()
            .map(|target| {
                let link = links
                    .entry(target.id.clone())
                    .or_insert_with(|| (self.connector)(target.addr))
                    .clone();
                (target, link)
            })
            .collect()
    }

    /// Ping `seq` to node `id` was answered in time, after `rtt`.
    pub(crate) fn ping_succeeded(&self, id: &str, seq: u64, rtt: Duration) {
        self.metrics.pings_answered.increment(1);
        self.metrics.rtt.record(rtt.as_secs_f64());
        let mut state = self.state();
        state.logs.ping(true);
        if let Some(stats) = &mut state.stats {
            stats.rtts.push(rtt);
        }
        if let Some(transition) = state.detector.ping_succeeded(id, seq, Instant::now()) {
            let event = MasterEvent::transition(id.to_owned(), transition);
            if state.logs.allow(Change::Recovered, Instant::now()) {
                tracing::info!("{event}");
            }
            self.events.send(event);
        }
    }

    /// Ping `seq` to node `id` failed at `now`.
    pub(crate) fn ping_failed(&self, id: &str, seq: u64, now: Instant) {
        self.metrics.pings_failed.increment(1);
        let mut state = self.state();
        state.logs.ping(false);
        if let Some(stats) = &mut state.stats {
            stats.failed += 1;
        }
        if let Some(transition) = state.detector.ping_failed(id, seq, now) {
            let event = MasterEvent::transition(id.to_owned(), transition);
            if state.logs.allow(Change::Lost, now) {
                let rule = state.detector.rule();
                tracing::warn!(%rule, "{event}");
            }
            self.events.send(event);
        }
    }

    /// Emits a [`MasterEvent::PingStats`] with the pings finished since
    /// the last one, and starts counting afresh. Does nothing if
    /// statistics were not asked for.
    pub(crate) fn report_ping_stats(&self) {
        let mut state = self.state();
        if let Some(stats) = &mut state.stats {
            let PingTally { failed, rtts } = std::mem::take(stats);
            self.events.send(MasterEvent::PingStats {
                answered: rtts.len() as u64,
                failed,
                rtt_us: rtts
                    .iter()
                    .map(|rtt| u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX))
                    .collect(),
            });
        }
    }
}
