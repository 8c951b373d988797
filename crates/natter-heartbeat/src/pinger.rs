//! The master's pinger: every interval, one ping to every live node and a
//! probe to each lost node whose turn it is.
//!
//! The loop itself knows nothing of sockets. It asks the [`Membership`]
//! for a round (one [`PingTarget`] and one [`PingService`] per node due),
//! sends each ping through tower's timeout layer set to the ping timeout,
//! and reports each outcome back to the membership, which turns the
//! detector's transitions into events. So the timing rules can be tested
//! with paused time and in-memory nodes, and the real nodes are reached
//! through [`NodeLink`], natter's [`ClientService`] kept open between
//! pings.
//!
//! # Live nodes first
//!
//! Every ping of a round runs in a task of its own, so that one slow node
//! never delays another. Heartbeats (to live nodes that have answered)
//! are all started at the start of the round, and never wait for
//! anything. Probes (to nodes not heard from yet, oldest registration
//! first, then to lost ones) are handed to a second loop, which starts
//! them [`PROBE_BATCH`] at a time and lets the other tasks run in
//! between: 5,000 probes started at once would stand in the run queue
//! between a live node's pong and the task that reads it (in a debug
//! build, some 200 µs each: a second). A round's probes not started by
//! the next round are dropped; their nodes have newer ones. At most
//! [`MAX_PROBES_IN_FLIGHT`] probes are in flight at once, and a probe
//! waits for its turn within its own ping timeout (a probe that gets no
//! turn in time fails like one that got no pong).
//! This is a bound on sockets, not on probes per round: a refused
//! connection on loopback frees its place within microseconds, so
//! thousands of dead loopback fakes are all probed every round; but
//! registrations at unroutable addresses, each holding a socket until its
//! ping timeout, cannot run the process out of file descriptors, which
//! the live nodes' connections need.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use natter::transport::Dial;
use natter::{Client, ClientService, Frame};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tower::{Service, ServiceExt};

use crate::detector::{PingKind, PingTarget};
use crate::membership::{Connector, Membership, PingService};
use crate::network::Network;
use crate::protocol::{self, Ping, Pong};

/// Probes (pings to nodes that have not answered yet, or are lost) in
/// flight at once, at most; see [Live nodes first](self#live-nodes-first).
/// Together with at most one kept connection per node (`--max-nodes`,
/// 10,000 by default), this bounds the master's sockets.
pub(crate) const MAX_PROBES_IN_FLIGHT: usize = 4096;

/// Pings every node of `membership` each `interval`, allowing each ping
/// `ping_timeout`, until the future is dropped (which also abandons the
/// pings in flight).
///
/// Pings of one round run concurrently, so one slow node never delays the
/// others, and a ping may still be waiting when the next round starts (a
/// ping timeout longer than the interval): the detector counts each
/// outcome by sequence number.
///
/// With `stats_interval`, the ping statistics are reported just before
/// the first round that starts at least that long after the last report
/// (the first report: after the first round), so a report never cuts a
/// round in two.
pub(crate) async fn run(
    membership: Arc<Membership>,
    interval: Duration,
    ping_timeout: Duration,
    stats_interval: Option<Duration>,
) {
    let probes_due = ProbesDue::default();
    // Two loops in this one task: the rounds, and the probes they hand
    // over. Neither ends; dropping this future drops both, and with them
    // every ping in flight.
    tokio::join!(
        run_rounds(
            &membership,
            interval,
            ping_timeout,
            stats_interval,
            &probes_due
        ),
        send_probes(&membership, ping_timeout, &probes_due),
    );
}

/// Every interval: the round's heartbeats are started at once, its probes
/// handed to [`send_probes`].
async fn run_rounds(
    membership: &Arc<Membership>,
    interval: Duration,
    ping_timeout: Duration,
    stats_interval: Option<Duration>,
    probes_due: &ProbesDue,
) {
    let mut ticker = tokio::time::interval(interval);
    // After a stall (a suspended process), carry on at the interval rather
    // than firing a burst of rounds to catch up.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut in_flight = JoinSet::new();
    let mut next_report = None;
    loop {
        // When the round was due, not when the timer fired: a late timer
        // does not push the reports back.
        let round = ticker.tick().await;
        while in_flight.try_join_next().is_some() {}
        if let Some(every) = stats_interval {
            let next = next_report.get_or_insert(round + every);
            if round >= *next {
                membership.report_ping_stats();
                *next = round + every;
            }
        }
        let mut probes = Vec::new();
        for (target, service) in membership.start_round(round) {
            match target.kind {
                PingKind::Heartbeat => {
                    in_flight.spawn(ping_and_report(
                        membership.clone(),
                        service,
                        target,
                        ping_timeout,
                        None,
                    ));
                }
                PingKind::Probe => probes.push((target, service)),
            }
        }
        let unsent = probes_due.replace(probes);
        if unsent > 0 {
            tracing::debug!(unsent, "the last round's probes were not all sent in time");
        }
    }
}

/// Starts the probes handed over by [`run_rounds`], [`PROBE_BATCH`] at a
/// time, letting every other task run between batches. Thousands of
/// probes then never stand in the run queue between a live node's pong
/// and the task that reads it.
async fn send_probes(membership: &Arc<Membership>, ping_timeout: Duration, probes_due: &ProbesDue) {
    let places = Arc::new(Semaphore::new(MAX_PROBES_IN_FLIGHT));
    let mut in_flight = JoinSet::new();
    loop {
        probes_due.handed_over.notified().await;
        loop {
            let batch = probes_due.take(PROBE_BATCH);
            if batch.is_empty() {
                break;
            }
            for (target, service) in batch {
                in_flight.spawn(ping_and_report(
                    membership.clone(),
                    service,
                    target,
                    ping_timeout,
                    Some(places.clone()),
                ));
            }
            while in_flight.try_join_next().is_some() {}
            tokio::task::yield_now().await;
        }
    }
}

/// Probes started at a time; see [`send_probes`].
const PROBE_BATCH: usize = 64;

/// The probes of the last round not started yet.
#[derive(Default)]
struct ProbesDue {
    probes: std::sync::Mutex<std::collections::VecDeque<(PingTarget, PingService)>>,
    handed_over: tokio::sync::Notify,
}

impl ProbesDue {
    /// Hands over a round's probes; those of the round before that were
    /// not started yet are dropped (their nodes have newer ones), and
    /// counted.
    fn replace(&self, probes: Vec<(PingTarget, PingService)>) -> usize {
        let empty = probes.is_empty();
        let unsent = {
            let mut due = self
                .probes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            std::mem::replace(&mut *due, probes.into()).len()
        };
        if !empty {
            self.handed_over.notify_one();
        }
        unsent
    }

    /// Up to `n` probes to start.
    fn take(&self, n: usize) -> Vec<(PingTarget, PingService)> {
        let mut due = self
            .probes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = n.min(due.len());
        due.drain(..n).collect()
    }
}

/// Sends one ping (see [`ping`]) and reports its outcome to `membership`.
async fn ping_and_report(
    membership: Arc<Membership>,
    service: PingService,
    target: PingTarget,
    ping_timeout: Duration,
    places: Option<Arc<Semaphore>>,
) {
    match ping(service, &target, ping_timeout, places).await {
        Ok(rtt) => membership.ping_succeeded(&target.id, target.seq, rtt),
        Err(()) => membership.ping_failed(&target.id, target.seq, Instant::now()),
    }
}

/// Sends one ping: `Ok` with the round trip for a pong with the ping's
/// `seq` within the timeout, `Err` for anything else. A probe first waits
/// for a place among the `probes` in flight, within the same timeout.
/// Each outcome is logged at `debug` only: failures are summarised by the
/// [`Membership`], never logged one by one.
async fn ping(
    service: PingService,
    target: &PingTarget,
    timeout: Duration,
    probes: Option<Arc<Semaphore>>,
) -> Result<Duration, ()> {
    let PingTarget { id, addr, seq, .. } = target;
    let started = Instant::now();
    let exchange = async {
        let _place = match &probes {
            Some(probes) => Some(probes.acquire().await.map_err(|_| natter::Error::Closed)?),
            None => None,
        };
        service.oneshot(Ping { seq: *seq }).await
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(pong)) if pong.seq == *seq => {
            let rtt = started.elapsed();
            tracing::debug!(node = %id.escape_debug(), %addr, seq, ?rtt, "ping succeeded");
            Ok(rtt)
        }
        Ok(Ok(pong)) => {
            tracing::debug!(node = %id.escape_debug(), %addr, seq, answered = pong.seq, "ping failed: the pong answers another ping");
            Err(())
        }
        Ok(Err(error)) => {
            tracing::debug!(node = %id.escape_debug(), %addr, seq, %error, "ping failed");
            Err(())
        }
        Err(_) => {
            tracing::debug!(node = %id.escape_debug(), %addr, seq, ?timeout, "ping failed: no pong in time");
            Err(())
        }
    }
}

/// The pings to one node, over one natter [`ClientService`] that stays
/// open from ping to ping and is dialled again after it fails.
///
/// Why not a dial per ping, as the original did: at 1,000 nodes and a 1 s
/// interval that is 1,000 handshakes a second, and each closed connection
/// holds a port in TIME_WAIT for a minute, so some 60,000 ports, which is
/// the whole ephemeral range. A kept connection costs one socket per node
/// and turns a ping into one write and one read. It also reads better:
/// a killed node closes the connection (the next ping redials and is
/// refused), a frozen one keeps it open and lets pings time out.
///
/// A ping that times out keeps its place on the connection
/// ([`ClientService`] matches answers in order), so the late pong is
/// discarded when it comes and the next pong goes to the next ping. Any
/// other failure (closed, refused, an answer that is not a pong) drops the
/// connection and the next ping dials afresh.
///
/// A connection that brings no pong, late or not, for `idle_timeout` (two
/// intervals and a ping timeout: two pings in a row unanswered) is closed,
/// and the next ping dials afresh. A connection can die without a word: a
/// lost segment that is never retransmitted, state dropped by a middlebox.
/// Kept open, it would swallow every later ping and keep a reachable node
/// lost until TCP gave up on it (some 15 minutes); the simulation found
/// this (natter-heartbeat's `tests/simulation.rs`, seed 0).
#[derive(Clone)]
pub(crate) struct NodeLink<D> {
    dialer: D,
    connect_timeout: Duration,
    idle_timeout: Duration,
    connection: Arc<tokio::sync::Mutex<Connection>>,
}

/// The current connection of a [`NodeLink`], if any. `generation` counts
/// dials, so that a failure on an old connection does not drop a newer
/// one that an overlapping ping already dialled.
#[derive(Default)]
struct Connection {
    generation: u64,
    service: Option<ClientService>,
}

impl<D: Dial + Clone> NodeLink<D> {
    /// A link to the node `dialer` reaches, pinged every `interval`, each
    /// ping allowed `ping_timeout`; nothing is dialled until the first
    /// ping. Dialling gives up after the ping timeout (which bounds the
    /// whole ping anyway).
    pub(crate) fn new(dialer: D, interval: Duration, ping_timeout: Duration) -> Self {
        NodeLink {
            dialer,
            connect_timeout: ping_timeout,
            idle_timeout: interval * 2 + ping_timeout,
            connection: Arc::default(),
        }
    }

    /// A connector that makes a [`NodeLink`] for each address, dialled
    /// on `network`.
    pub(crate) fn connector<N: Network<Dialer = D>>(
        network: N,
        interval: Duration,
        ping_timeout: Duration,
    ) -> Connector {
        Arc::new(move |addr: SocketAddr| {
            PingService::new(NodeLink::new(
                network.dialer(&addr.to_string()),
                interval,
                ping_timeout,
            ))
        })
    }

    async fn exchange(self, ping: Ping) -> Result<Pong, natter::Error> {
        let request = Frame::from_json(&ping)?;
        let mut retried = false;
        loop {
            let (generation, reused, mut service) = self.connection().await?;
            let result = match service.ready().await {
                Ok(ready) => ready.call(request.clone()).await,
                Err(error) => Err(error),
            };
            match result.map(|answer| answer.json::<Pong>()) {
                Ok(Ok(pong)) => return Ok(pong),
                Ok(Err(bad_answer)) => {
                    self.forget(generation).await;
                    return Err(bad_answer);
                }
                Err(error) => {
                    self.forget(generation).await;
                    // A kept connection may have been closed by the node
                    // since the last ping (its idle timeout, a restart on
                    // the same port): only a fresh dial tells whether the
                    // node is really gone. The ping was not answered, so
                    // sending it again is harmless.
                    if reused && !retried && matches!(error, natter::Error::Closed) {
                        retried = true;
                        continue;
                    }
                    return Err(error);
                }
            }
        }
    }

    /// The open connection, dialling one if there is none: its generation,
    /// whether it was open already, and a handle on it.
    async fn connection(&self) -> Result<(u64, bool, ClientService), natter::Error> {
        let mut connection = self.connection.lock().await;
        if let Some(service) = &connection.service {
            return Ok((connection.generation, true, service.clone()));
        }
        let service = Client::builder()
            .codec(protocol::codec())
            .connect_timeout(self.connect_timeout)
            .idle_timeout(self.idle_timeout)
            // Nobody reads the connection's event stream (its events are
            // logged anyway), and a ring of the default 1024 events is
            // some 100 KiB per node, most of the master's memory at 1,000
            // nodes.
            .event_capacity(1)
            .connect_service(self.dialer.clone())
            .await?;
        connection.generation += 1;
        connection.service = Some(service.clone());
        Ok((connection.generation, false, service))
    }

    /// Drops connection `generation` if it is still the current one.
    async fn forget(&self, generation: u64) {
        let mut connection = self.connection.lock().await;
        if connection.generation == generation {
            if let Some(service) = connection.service.take() {
                service.close();
            }
        }
    }
}

impl<D: Dial + Clone> Service<Ping> for NodeLink<D> {
    type Response = Pong;
    type Error = natter::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Pong, natter::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), natter::Error>> {
        // Connecting happens in `call`, inside the caller's timeout.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ping: Ping) -> Self::Future {
        Box::pin(self.clone().exchange(ping))
    }
}

#[cfg(test)]
mod tests {
    //! The pinger against in-memory nodes, with tokio's clock paused: each
    //! test runs its whole timeline in an instant, and the times it checks
    //! are exact.

    use std::collections::HashMap;
    use std::num::NonZeroU32;
    use std::sync::Mutex;

    use tower::service_fn;

    use super::*;
    use crate::detector::Detector;
    use crate::event::{DEFAULT_EVENT_CAPACITY, EventStream, MasterEvent, event_stream};

    const INTERVAL: Duration = Duration::from_millis(100);

    /// How an in-memory node answers a ping.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Behaviour {
        /// A pong with the ping's seq, at once.
        Answer,
        /// A pong after this long.
        AnswerAfter(Duration),
        /// A pong with a different seq.
        WrongSeq,
        /// An error at once (a refused connection).
        Refuse,
        /// Nothing, ever (a frozen process).
        Hang,
    }

    /// In-memory nodes by address; their behaviour can change mid-test.
    #[derive(Clone, Default)]
    struct Nodes {
        behaviour: Arc<Mutex<HashMap<SocketAddr, Behaviour>>>,
        pings: Arc<Mutex<Vec<SocketAddr>>>,
    }

    impl Nodes {
        fn set(&self, addr: SocketAddr, behaviour: Behaviour) {
            self.behaviour.lock().unwrap().insert(addr, behaviour);
        }

        fn connector(&self) -> Connector {
            let nodes = self.clone();
            Arc::new(move |addr| {
                let nodes = nodes.clone();
                PingService::new(service_fn(move |ping: Ping| {
                    nodes.pings.lock().unwrap().push(addr);
                    let behaviour = nodes.behaviour.lock().unwrap()[&addr];
                    async move {
                        match behaviour {
                            Behaviour::Answer => Ok(ping.answer()),
                            Behaviour::AnswerAfter(delay) => {
                                tokio::time::sleep(delay).await;
                                Ok(ping.answer())
                            }
                            Behaviour::WrongSeq => Ok(Pong {
                                seq: ping.seq + 1000,
                            }),
                            Behaviour::Refuse => Err(natter::Error::Closed),
                            Behaviour::Hang => std::future::pending().await,
                        }
                    }
                }))
            })
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Where registrations come from, in these tests.
    fn peer() -> SocketAddr {
        addr(9)
    }

    /// A detector for a master pinging every [`INTERVAL`].
    fn detector(failures: u32) -> Detector {
        Detector::new(NonZeroU32::new(failures).unwrap()).interval(INTERVAL)
    }

    struct Setup {
        membership: Arc<Membership>,
        events: EventStream<MasterEvent>,
        nodes: Nodes,
        pinger: tokio::task::JoinHandle<()>,
    }

    impl Drop for Setup {
        fn drop(&mut self) {
            self.pinger.abort();
        }
    }

    /// A membership with `failures`, pinged every [`INTERVAL`] with
    /// `ping_timeout`, and node "n1" at port 1 behaving as `behaviour`.
    fn setup(failures: u32, ping_timeout: Duration, behaviour: Behaviour) -> Setup {
        let nodes = Nodes::default();
        nodes.set(addr(1), behaviour);
        let (sender, mut events) = event_stream(DEFAULT_EVENT_CAPACITY);
        let membership = Arc::new(Membership::new(
            detector(failures),
            nodes.connector(),
            sender,
            true,
        ));
        membership.register("n1".into(), addr(1), peer()).unwrap();
        assert_eq!(
            events.try_recv(),
            Some(MasterEvent::NodeJoined {
                node: "n1".into(),
                addr: addr(1)
            })
        );
        let pinger = tokio::spawn(run(membership.clone(), INTERVAL, ping_timeout, None));
        Setup {
            membership,
            events,
            nodes,
            pinger,
        }
    }

    /// The next event and when it came, or `None` if there is none within
    /// `within`.
    async fn next_event(
        events: &mut EventStream<MasterEvent>,
        within: Duration,
    ) -> Option<(MasterEvent, Duration)> {
        let start = Instant::now();
        tokio::time::timeout(within, events.recv())
            .await
            .ok()
            .flatten()
            .map(|event| (event, start.elapsed()))
    }

    fn lost() -> MasterEvent {
        MasterEvent::NodeLost { node: "n1".into() }
    }

    fn recovered() -> MasterEvent {
        MasterEvent::NodeRecovered { node: "n1".into() }
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_answers_is_never_lost() {
        let mut s = setup(3, INTERVAL, Behaviour::Answer);
        assert_eq!(next_event(&mut s.events, INTERVAL * 100).await, None);
        assert!(s.nodes.pings.lock().unwrap().len() >= 100);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_timely_node_is_never_lost() {
        let mut s = setup(1, INTERVAL, Behaviour::AnswerAfter(INTERVAL * 9 / 10));
        assert_eq!(next_event(&mut s.events, INTERVAL * 50).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusing_node_is_lost_at_the_third_ping() {
        let mut s = setup(3, INTERVAL, Behaviour::Refuse);
        // Pings at 0, 100 and 200 ms, each refused at once.
        let (event, at) = next_event(&mut s.events, INTERVAL * 10).await.unwrap();
        assert_eq!((event, at), (lost(), INTERVAL * 2));
        assert_eq!(
            next_event(&mut s.events, INTERVAL * 20).await,
            None,
            "reported once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_frozen_node_is_lost_when_its_third_ping_times_out() {
        let timeout = Duration::from_millis(150);
        let mut s = setup(3, timeout, Behaviour::Hang);
        let (event, at) = next_event(&mut s.events, INTERVAL * 10).await.unwrap();
        assert_eq!((event, at), (lost(), INTERVAL * 2 + timeout));
        assert_eq!(next_event(&mut s.events, INTERVAL * 20).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_promised_bound_holds_for_every_failure_count() {
        // (failures + 1) * interval + ping timeout, from an arbitrary
        // moment of failure.
        for failures in 1..=5u32 {
            let timeout = INTERVAL;
            let mut s = setup(failures, timeout, Behaviour::Answer);
            tokio::time::sleep(INTERVAL * 7 / 2).await;
            s.nodes.set(addr(1), Behaviour::Hang);
            let bound = INTERVAL * (failures + 1) + timeout;
            let (event, at) = next_event(&mut s.events, bound * 2).await.unwrap();
            assert_eq!(event, lost(), "failures {failures}");
            assert!(
                at <= bound,
                "failures {failures}: lost after {at:?}, bound {bound:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_node_is_still_pinged_and_recovers_once() {
        let mut s = setup(2, INTERVAL, Behaviour::Refuse);
        assert_eq!(
            next_event(&mut s.events, INTERVAL * 10).await.unwrap().0,
            lost()
        );
        s.nodes.set(addr(1), Behaviour::Answer);
        let (event, at) = next_event(&mut s.events, INTERVAL * 10).await.unwrap();
        assert_eq!(event, recovered());
        assert!(at <= INTERVAL, "recovered at the next ping, after {at:?}");
        assert_eq!(next_event(&mut s.events, INTERVAL * 20).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn late_pongs_do_not_count() {
        // Every pong comes after the timeout: the node is lost, and the
        // late pongs never recover it.
        let mut s = setup(2, INTERVAL / 2, Behaviour::AnswerAfter(INTERVAL * 3 / 4));
        assert_eq!(
            next_event(&mut s.events, INTERVAL * 10).await.unwrap().0,
            lost()
        );
        assert_eq!(next_event(&mut s.events, INTERVAL * 20).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pong_for_another_ping_is_a_failure() {
        let mut s = setup(3, INTERVAL, Behaviour::WrongSeq);
        assert_eq!(
            next_event(&mut s.events, INTERVAL * 10).await.unwrap().0,
            lost()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_left_is_not_pinged_or_lost() {
        let mut s = setup(1, INTERVAL, Behaviour::Hang);
        // Leave while the first ping is in flight.
        tokio::time::sleep(INTERVAL / 2).await;
        s.membership.leave("n1");
        assert_eq!(
            s.events.try_recv(),
            Some(MasterEvent::NodeLeft { node: "n1".into() })
        );
        let pings = s.nodes.pings.lock().unwrap().len();
        assert_eq!(next_event(&mut s.events, INTERVAL * 20).await, None);
        assert_eq!(
            s.nodes.pings.lock().unwrap().len(),
            pings,
            "no ping after leaving"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn registering_again_moves_the_pings_to_the_new_address() {
        let mut s = setup(3, INTERVAL, Behaviour::Refuse);
        s.nodes.set(addr(2), Behaviour::Answer);
        assert_eq!(
            next_event(&mut s.events, INTERVAL * 10).await.unwrap().0,
            lost()
        );
        s.membership.register("n1".into(), addr(2), peer()).unwrap();
        assert_eq!(s.events.try_recv(), Some(recovered()));
        s.nodes.pings.lock().unwrap().clear();
        assert_eq!(next_event(&mut s.events, INTERVAL * 20).await, None);
        let pings = s.nodes.pings.lock().unwrap().clone();
        assert!(
            !pings.is_empty() && pings.iter().all(|&to| to == addr(2)),
            "{pings:?}"
        );
    }

    fn stats(answered: u64, failed: u64, rtt: Duration) -> MasterEvent {
        MasterEvent::PingStats {
            answered,
            failed,
            rtt_us: vec![rtt.as_micros() as u64; answered as usize],
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ping_stats_count_each_outcome_and_round_trip_once() {
        let rtt = Duration::from_millis(30);
        let mut s = setup(3, INTERVAL, Behaviour::AnswerAfter(rtt));
        // Pings at 0, 100 and 200 ms, answered at 30, 130 and 230 ms.
        tokio::time::sleep(INTERVAL * 5 / 2).await;
        s.membership.report_ping_stats();
        assert_eq!(s.events.try_recv(), Some(stats(3, 0, rtt)));
        // Pings at 300 and 400 ms, refused.
        s.nodes.set(addr(1), Behaviour::Refuse);
        tokio::time::sleep(INTERVAL * 2).await;
        s.membership.report_ping_stats();
        assert_eq!(s.events.try_recv(), Some(stats(0, 2, rtt)));
        // Counting starts afresh after each report.
        s.membership.report_ping_stats();
        assert_eq!(s.events.try_recv(), Some(stats(0, 0, rtt)));
    }

    #[tokio::test(start_paused = true)]
    async fn ping_stats_are_reported_between_rounds() {
        let rtt = Duration::from_millis(30);
        let mut s = setup(3, INTERVAL, Behaviour::AnswerAfter(rtt));
        s.pinger.abort();
        s.pinger = tokio::spawn(run(
            s.membership.clone(),
            INTERVAL,
            INTERVAL,
            Some(INTERVAL * 3 / 2),
        ));
        // Rounds at 0, 100, 200, ... ms; reports at the first round at
        // least 150 ms after the last: 200 (rounds 0 and 100), 400
        // (rounds 200 and 300), 600 ms.
        for at in [INTERVAL * 2, INTERVAL * 4, INTERVAL * 6] {
            let (event, when) = next_event(&mut s.events, INTERVAL * 5).await.unwrap();
            assert_eq!(event, stats(2, 0, rtt));
            assert_eq!(when, INTERVAL * 2, "report due at {at:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_ping_stats_unless_asked_for() {
        let nodes = Nodes::default();
        nodes.set(addr(1), Behaviour::Answer);
        let (sender, mut events) = event_stream(DEFAULT_EVENT_CAPACITY);
        let membership = Arc::new(Membership::new(
            detector(3),
            nodes.connector(),
            sender,
            false,
        ));
        membership.register("n1".into(), addr(1), peer()).unwrap();
        assert!(matches!(
            events.try_recv(),
            Some(MasterEvent::NodeJoined { .. })
        ));
        let pinger = tokio::spawn(run(membership.clone(), INTERVAL, INTERVAL, Some(INTERVAL)));
        tokio::time::sleep(INTERVAL * 5).await;
        membership.report_ping_stats();
        pinger.abort();
        assert_eq!(events.try_recv(), None);
        assert!(nodes.pings.lock().unwrap().len() >= 5, "it did ping");
    }

    #[tokio::test(start_paused = true)]
    async fn one_round_pings_every_node_at_once() {
        let s = setup(3, INTERVAL, Behaviour::Hang);
        for port in 2..=1000 {
            s.nodes.set(addr(port), Behaviour::Answer);
            s.membership
                .register(format!("n{port}"), addr(port), peer())
                .unwrap();
        }
        tokio::time::sleep(INTERVAL / 2).await;
        // Every node has had its ping by the middle of the first interval
        // (the one frozen node holds up nobody).
        assert_eq!(s.nodes.pings.lock().unwrap().len(), 1000);
    }

    /// The pings that went to `to`.
    fn pings_to(nodes: &Nodes, to: SocketAddr) -> usize {
        nodes
            .pings
            .lock()
            .unwrap()
            .iter()
            .filter(|&&a| a == to)
            .count()
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_node_is_probed_less_often_and_recovered_in_time_when_it_answers() {
        let mut s = setup(3, INTERVAL, Behaviour::Refuse);
        assert_eq!(
            next_event(&mut s.events, INTERVAL * 10).await.unwrap().0,
            lost()
        );
        // Lost after rounds 0, 1, 2; over the next 100 rounds it is probed
        // some 100 / 7 times instead of 100.
        let before = pings_to(&s.nodes, addr(1));
        tokio::time::sleep(INTERVAL * 100).await;
        let probes = pings_to(&s.nodes, addr(1)) - before;
        assert!((12..=20).contains(&probes), "{probes} probes");
        // It answers again: recovered within 10 intervals + ping timeout.
        s.nodes.set(addr(1), Behaviour::Answer);
        let (event, after) = next_event(&mut s.events, INTERVAL * 20).await.unwrap();
        assert_eq!(event, recovered());
        assert!(
            after <= INTERVAL * 10 + INTERVAL,
            "recovered after {after:?}"
        );
        // Live again: pinged every round.
        let before = pings_to(&s.nodes, addr(1));
        tokio::time::sleep(INTERVAL * 10).await;
        let pings = pings_to(&s.nodes, addr(1)) - before;
        assert!((9..=11).contains(&pings), "{pings} pings in 10 rounds");
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_lost_for_forget_after_is_forgotten_and_no_longer_pinged() {
        let nodes = Nodes::default();
        nodes.set(addr(1), Behaviour::Refuse);
        let (sender, mut events) = event_stream(DEFAULT_EVENT_CAPACITY);
        let forget_after = Duration::from_secs(3);
        let membership = Arc::new(Membership::new(
            detector(1).forget_after(forget_after),
            nodes.connector(),
            sender,
            false,
        ));
        membership.register("n1".into(), addr(1), peer()).unwrap();
        let _pinger = AbortOnDrop(tokio::spawn(run(
            membership.clone(),
            INTERVAL,
            INTERVAL,
            None,
        )));
        assert!(matches!(
            events.try_recv(),
            Some(MasterEvent::NodeJoined { .. })
        ));
        assert_eq!(
            next_event(&mut events, INTERVAL * 2).await.unwrap().0,
            lost()
        );
        let (event, after) = next_event(&mut events, forget_after * 2).await.unwrap();
        assert_eq!(event, MasterEvent::NodeForgotten { node: "n1".into() });
        assert!(
            (forget_after..=forget_after + INTERVAL).contains(&after),
            "{after:?}"
        );
        let pings = nodes.pings.lock().unwrap().len();
        assert_eq!(next_event(&mut events, INTERVAL * 50).await, None);
        assert_eq!(nodes.pings.lock().unwrap().len(), pings, "not pinged");
        // It may join again, as a new node.
        membership.register("n1".into(), addr(1), peer()).unwrap();
        assert!(matches!(
            events.try_recv(),
            Some(MasterEvent::NodeJoined { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_are_never_held_back_by_probes() {
        // One live node that has answered, then thousands of frozen fakes:
        // more probes than may be in flight. The live node is pinged every
        // round regardless, and never lost.
        let mut s = setup(1, INTERVAL, Behaviour::Answer);
        tokio::time::sleep(INTERVAL / 2).await;
        for port in 2..(MAX_PROBES_IN_FLIGHT as u16 + 500) {
            s.nodes.set(addr(port), Behaviour::Hang);
            s.membership
                .register(format!("fake{port}"), addr(port), peer())
                .unwrap();
            assert!(matches!(
                s.events.try_recv(),
                Some(MasterEvent::NodeJoined { .. })
            ));
        }
        let before = pings_to(&s.nodes, addr(1));
        let mut lost_fakes = 0;
        let deadline = Instant::now() + INTERVAL * 30;
        while let Some((event, _)) = next_event(
            &mut s.events,
            deadline.saturating_duration_since(Instant::now()),
        )
        .await
        {
            assert_ne!(event, lost(), "the live node was lost");
            lost_fakes += usize::from(matches!(event, MasterEvent::NodeLost { .. }));
        }
        assert_eq!(pings_to(&s.nodes, addr(1)) - before, 30, "every round");
        assert!(lost_fakes > 0, "the fakes are probed too");
        let in_flight = MAX_PROBES_IN_FLIGHT;
        let all = s.nodes.pings.lock().unwrap().len();
        let probes = all - pings_to(&s.nodes, addr(1));
        assert!(
            probes <= in_flight * 30,
            "at most {in_flight} probes per ping timeout: {probes}"
        );
    }

    /// Aborts the task when dropped, so a failing test leaves no pinger.
    struct AbortOnDrop(tokio::task::JoinHandle<()>);

    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
}
