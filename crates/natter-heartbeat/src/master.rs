//! The master: accepts registrations, pings every node, reports changes.
//!
//! Three parts, each with one job:
//!
//! - the **registration endpoint**, a natter [`Server`] on `listen`: one
//!   [`RegistrationRequest`] per frame, answered with a
//!   [`RegistrationReply`] (a `leave` gets none);
//! - the [`pinger`](crate::pinger), which pings every node each interval
//!   (and, if asked for, reports [`MasterEvent::PingStats`]);
//! - the [`Membership`] they share: who the nodes are, how to reach them,
//!   and the events and log lines of every change.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use natter::{Conn, Frame, Server, ServerHandle};
use tokio::task::JoinHandle;
use tower::service_fn;

use crate::Error;
use crate::detector::{DEFAULT_FORGET_AFTER, DEFAULT_MAX_NODES, Detector};
use crate::event::{DEFAULT_EVENT_CAPACITY, EventStream, MasterEvent, event_stream};
use crate::logs;
use crate::membership::Membership;
use crate::network::{Network, Tcp};
use crate::pinger::{self, NodeLink};
use crate::protocol::{self, RegistrationReply, RegistrationRequest, reachable_heartbeat_addr};
use crate::rule::{PhiAccrual, Rule};

/// A registration connection that completes no frame for this long is
/// closed. A node sends its request as soon as it connects, so only a
/// stuck or hostile peer waits this long.
const REGISTRATION_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long shutdown waits for registrations being answered.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// Which rule a [`Master`] uses to decide that a node is lost (see
/// [`crate::rule`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DetectorChoice {
    /// [`MasterConfig::failures`] failed pings in a row.
    Fixed,
    /// Phi accrual ([`PhiAccrual`] with its defaults for the interval),
    /// lost above this threshold (`--phi-threshold`, default 8.0).
    Phi {
        /// The suspicion level above which a node is lost.
        threshold: f64,
    },
}

impl MasterConfig {
    /// The [`Rule`] this configuration asks for.
    pub fn rule(&self) -> Rule {
        match self.detector {
            DetectorChoice::Fixed => Rule::fixed(self.failures),
            DetectorChoice::Phi { threshold } => {
                Rule::Phi(PhiAccrual::new(self.interval).threshold(threshold))
            }
        }
    }
}

/// How a [`Master`] runs: the `heartbeat master` flags.
#[derive(Debug, Clone, PartialEq)]
pub struct MasterConfig {
    /// Where registrations are accepted; port 0 picks a free one.
    pub listen: SocketAddr,
    /// How often every node is pinged.
    pub interval: Duration,
    /// Consecutive failed pings after which a node is lost, with the
    /// fixed rule (`--failures`).
    pub failures: NonZeroU32,
    /// How the master decides that a node is lost (`--detector`): the
    /// fixed rule of [`failures`](Self::failures) in a row (the default),
    /// or phi accrual.
    pub detector: DetectorChoice,
    /// How long each ping may take, connecting included.
    pub ping_timeout: Duration,
    /// If set, only registrations carrying this token are accepted.
    pub token: Option<String>,
    /// At most this many nodes, live and lost: a registration of a new id
    /// beyond it is rejected with reason `node limit` (`--max-nodes`).
    pub max_nodes: usize,
    /// A node lost for this long is forgotten (`node_forgotten`) and may
    /// join again as a new node (`--forget-after-ms`). Until then it is
    /// probed less and less often, at least every 8 intervals.
    pub forget_after: Duration,
    /// How many events the [`EventStream`] holds for a reader that falls
    /// behind before it drops newer ones (and reports
    /// [`MasterEvent::EventsDropped`]).
    pub event_capacity: usize,
    /// If set, a [`MasterEvent::PingStats`] with the pings that finished
    /// since the last one is emitted this often (`--stats-interval-ms`):
    /// just before the first ping round that starts at least this long
    /// after the last report, so that each report covers whole rounds
    /// (every ping of a round finishes within the ping timeout; with the
    /// default timeout, the interval, before the next round). Off by
    /// default: the round trips are then not even recorded.
    pub stats_interval: Option<Duration>,
}

impl MasterConfig {
    /// The defaults of `heartbeat master`, listening on `listen`: a ping
    /// every second, each allowed a second, lost after 3 failures, no
    /// token, at most 10,000 nodes, lost nodes forgotten after 5 minutes,
    /// no ping statistics.
    pub fn new(listen: SocketAddr) -> Self {
        MasterConfig {
            listen,
            interval: Duration::from_secs(1),
            failures: NonZeroU32::new(3).expect("3 is not zero"),
            detector: DetectorChoice::Fixed,
            ping_timeout: Duration::from_secs(1),
            token: None,
            max_nodes: DEFAULT_MAX_NODES,
            forget_after: DEFAULT_FORGET_AFTER,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            stats_interval: None,
        }
    }
}

/// A running master.
///
/// ```no_run
/// use natter_heartbeat::{Master, MasterConfig};
///
/// # async fn demo() -> Result<(), natter_heartbeat::Error> {
/// let (master, mut events) = Master::start(MasterConfig::new("127.0.0.1:0".parse().unwrap())).await?;
/// println!("registrations go to {}", master.local_addr());
/// while let Some(event) = events.recv().await {
///     println!("{event}"); // node "n1" joined from 127.0.0.1:4000, ...
/// }
/// # Ok(()) }
/// ```
///
/// Dropping it stops everything at once; [`shutdown`](Self::shutdown)
/// lets registrations being answered finish first.
#[derive(Debug)]
pub struct Master {
    local_addr: SocketAddr,
    server: ServerHandle,
    task: JoinHandle<Result<(), natter::Error>>,
}

impl Master {
    /// Binds the registration endpoint and starts pinging. The first event
    /// is [`MasterEvent::Listening`] with the bound address.
    ///
    /// Fails, naming the address, if it cannot listen there, and with
    /// [`Error::InvalidConfig`] for a zero interval, ping timeout, forget
    /// time, event capacity or stats interval.
    pub async fn start(config: MasterConfig) -> Result<(Master, EventStream<MasterEvent>), Error> {
        Master::start_on(config, Tcp).await
    }

    /// [`start`](Self::start) on another [`Network`]: listens for
    /// registrations and dials the nodes through `network` (a simulated
    /// one, in tests).
    pub async fn start_on<N: Network>(
        config: MasterConfig,
        network: N,
    ) -> Result<(Master, EventStream<MasterEvent>), Error> {
        if config.interval.is_zero()
            || config.ping_timeout.is_zero()
            || config.forget_after.is_zero()
            || config.event_capacity == 0
            || config.stats_interval.is_some_and(|every| every.is_zero())
        {
            return Err(Error::InvalidConfig(
                "the interval, the ping timeout, the forget time, the event capacity \
                 and the stats interval must be more than zero",
            ));
        }
        let server = Server::builder()
            .codec(protocol::codec())
            .idle_timeout(REGISTRATION_IDLE_TIMEOUT)
            .drain_timeout(DRAIN_TIMEOUT)
            .listener(network.listen(config.listen).await?)?;
        let local_addr = crate::tcp_addr(&server.local_addr());
        let handle = server.handle();
        let connection_errors = logs::log_connection_errors(server.events(), "registration port");
        let (sender, receiver) = event_stream(config.event_capacity);
        sender.send(MasterEvent::Listening { addr: local_addr });
        let rule = config.rule();
        let detector = Detector::with_rule(rule.clone())
            .max_nodes(config.max_nodes)
            .interval(config.interval)
            .forget_after(config.forget_after);
        let membership = Arc::new(Membership::new(
            detector,
            NodeLink::connector(network, config.interval, config.ping_timeout),
            sender,
            config.stats_interval.is_some(),
        ));
        let token: Option<Arc<str>> = config.token.map(Arc::from);

        let registrations = {
            let membership = membership.clone();
            server.serve(move |conn: &Conn| {
                let membership = membership.clone();
                let token = token.clone();
                let conn = conn.clone();
                service_fn(move |frame: Frame| {
                    let reply = answer(&membership, &conn, token.as_deref(), &frame);
                    std::future::ready(reply)
                })
            })
        };
        let pings = pinger::run(
            membership,
            config.interval,
            config.ping_timeout,
            config.stats_interval,
        );
        tracing::info!(
            addr = %local_addr,
            interval = ?config.interval,
            %rule,
            ping_timeout = ?config.ping_timeout,
            max_nodes = config.max_nodes,
            forget_after = ?config.forget_after,
            stats_interval = ?config.stats_interval,
            "master started"
        );
        // Pinging stops when the registration endpoint has shut down; the
        // pings in flight and every node connection go with it.
        let task = tokio::spawn(async move {
            let connection_errors = async {
                connection_errors.await;
                std::future::pending().await
            };
            tokio::select! {
                served = registrations => served,
                () = pings => Ok(()),
                () = connection_errors => Ok(()),
            }
        });
        let master = Master {
            local_addr,
            server: handle,
            task,
        };
        Ok((master, receiver))
    }

    /// The address registrations go to (with the real port when bound to
    /// port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting registrations, answers those in hand, stops pinging
    /// and closes every connection. The event stream ends after the last
    /// event.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        self.server.shutdown().await;
        let served = (&mut self.task).await;
        served.map_err(|join| Error::Stopped(join.to_string()))??;
        tracing::info!("master stopped");
        Ok(())
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers one frame on the registration endpoint. Anything that is not a
/// registration request closes the connection (the error is logged by
/// natter with the peer's address); nothing is reported.
///
/// A token is checked first: a wrong or missing one is rejected and the
/// connection closed (the node gives up). Then the [`Membership`] decides
/// (`id in use`, `node limit`; the node keeps trying). A `leave` needs
/// the token too.
fn answer(
    membership: &Membership,
    conn: &Conn,
    token: Option<&str>,
    frame: &Frame,
) -> Result<Option<Frame>, natter::Error> {
    let peer = crate::tcp_addr(&conn.peer_addr());
    let request = frame
        .json::<RegistrationRequest>()
        .inspect_err(|_| conn.close())?;
    match request {
        RegistrationRequest::Register {
            id,
            heartbeat_addr,
            token: offered,
        } => {
            let reply = match RegistrationReply::for_token(token, offered.as_deref()) {
                RegistrationReply::Accepted => {
                    let addr = reachable_heartbeat_addr(heartbeat_addr, peer);
                    match membership.register(id, addr, peer) {
                        Ok(()) => RegistrationReply::Accepted,
                        Err(refusal) => RegistrationReply::Rejected {
                            reason: refusal.reason().to_owned(),
                        },
                    }
                }
                rejected @ RegistrationReply::Rejected { .. } => {
                    if let RegistrationReply::Rejected { reason } = &rejected {
                        membership.rejected(&id, peer, reason);
                    }
                    conn.close();
                    rejected
                }
            };
            Frame::from_json(&reply).map(Some)
        }
        RegistrationRequest::Leave { id, token: offered } => {
            if let RegistrationReply::Rejected { reason } =
                RegistrationReply::for_token(token, offered.as_deref())
            {
                // Only a node that could register may make it leave.
                tracing::debug!(node = %id.escape_debug(), %peer, %reason, "leave ignored");
            } else {
                membership.leave(&id);
            }
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_zero_interval_or_ping_timeout_is_refused() {
        let listen = "127.0.0.1:0".parse().unwrap();
        for config in [
            MasterConfig {
                interval: Duration::ZERO,
                ..MasterConfig::new(listen)
            },
            MasterConfig {
                ping_timeout: Duration::ZERO,
                ..MasterConfig::new(listen)
            },
            MasterConfig {
                stats_interval: Some(Duration::ZERO),
                ..MasterConfig::new(listen)
            },
        ] {
            let error = Master::start(config).await.unwrap_err();
            assert!(matches!(error, Error::InvalidConfig(_)), "{error:?}");
        }
    }

    #[tokio::test]
    async fn ping_stats_are_reported_when_asked_for() {
        let config = MasterConfig {
            interval: Duration::from_millis(50),
            ping_timeout: Duration::from_millis(500),
            stats_interval: Some(Duration::from_millis(200)),
            ..MasterConfig::new("127.0.0.1:0".parse().unwrap())
        };
        let (master, mut events) = Master::start(config).await.unwrap();
        let node_config = crate::NodeConfig::new("n1", master.local_addr().to_string());
        let (node, _node_events) = crate::Node::start(node_config).await.unwrap();
        let mut answered = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while answered == 0 {
            let event = tokio::time::timeout_at(deadline, events.recv())
                .await
                .expect("answered pings reported within 10 s")
                .expect("the master is running");
            if let MasterEvent::PingStats {
                answered: n,
                failed,
                rtt_us,
            } = event
            {
                assert_eq!(failed, 0);
                assert_eq!(rtt_us.len() as u64, n);
                assert!(rtt_us.iter().all(|&rtt| rtt < 500_000), "{rtt_us:?}");
                answered = n;
            }
        }
        node.leave().await.unwrap();
        master.shutdown().await.unwrap();
    }

    /// `Node::leave` says whether the master was told: it is while the
    /// master runs, and is not once it is gone.
    #[tokio::test]
    async fn leave_reports_whether_the_master_was_told() {
        const LIMIT: Duration = Duration::from_secs(10);
        use tokio::time::timeout as within_limit;
        let config = MasterConfig {
            interval: Duration::from_millis(50),
            ..MasterConfig::new("127.0.0.1:0".parse().unwrap())
        };
        let (master, mut events) = Master::start(config).await.unwrap();
        let master_addr = master.local_addr().to_string();
        for (id, master_up) in [("n1", true), ("n2", false)] {
            let node_config = crate::NodeConfig::new(id, master_addr.clone());
            let (node, mut node_events) = crate::Node::start(node_config).await.unwrap();
            within_limit(LIMIT, async {
                while let Some(event) = node_events.recv().await {
                    if matches!(event, crate::event::NodeEvent::Registered { .. }) {
                        break;
                    }
                }
            })
            .await
            .expect("registered");
            if !master_up {
                within_limit(LIMIT, master.shutdown())
                    .await
                    .unwrap()
                    .unwrap();
                let departure = within_limit(LIMIT, node.leave()).await.unwrap().unwrap();
                assert!(!departure.told(), "{departure:?}");
                return;
            }
            let departure = within_limit(LIMIT, node.leave()).await.unwrap().unwrap();
            assert_eq!(departure, crate::Departure::Told);
            within_limit(LIMIT, async {
                while let Some(event) = events.recv().await {
                    if matches!(event, MasterEvent::NodeLeft { .. }) {
                        break;
                    }
                }
            })
            .await
            .expect("node_left");
        }
        unreachable!("the loop returns");
    }

    /// The master's series: nodes known, alive and lost, pings sent,
    /// answered and failed, and their round trips.
    #[tokio::test(flavor = "current_thread")]
    async fn the_master_counts_nodes_and_pings_through_the_metrics_facade() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        const LIMIT: Duration = Duration::from_secs(10);
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let config = MasterConfig {
            interval: Duration::from_millis(50),
            stats_interval: Some(Duration::from_millis(100)),
            ..MasterConfig::new("127.0.0.1:0".parse().unwrap())
        };
        let (master, mut events) = {
            let _installed = metrics::set_default_local_recorder(&recorder);
            Master::start(config).await.unwrap()
        };
        let node_config = crate::NodeConfig::new("n1", master.local_addr().to_string());
        let (node, _node_events) = crate::Node::start(node_config).await.unwrap();
        tokio::time::timeout(LIMIT, async {
            while let Some(event) = events.recv().await {
                if matches!(event, MasterEvent::NodeJoined { .. }) {
                    break;
                }
            }
        })
        .await
        .expect("node_joined");
        // Wait for a few pings to have been answered (a snapshot of the
        // debugging recorder takes the values it shows: take one, at the end).
        tokio::time::timeout(LIMIT, async {
            let mut answered = 0;
            while let Some(event) = events.recv().await {
                if let MasterEvent::PingStats { answered: n, .. } = event {
                    answered += n;
                    if answered >= 3 {
                        break;
                    }
                }
            }
        })
        .await
        .expect("pings answered");
        let snapshot: Vec<_> = snapshotter.snapshot().into_vec();
        let value = |name: &str| {
            snapshot
                .iter()
                .find(|(key, ..)| key.key().name() == name)
                .map(|(_, _, _, value)| value)
        };
        let gauge = |name: &str| match value(name) {
            Some(DebugValue::Gauge(value)) => value.into_inner(),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(gauge("heartbeat_nodes_known"), 1.0);
        assert_eq!(gauge("heartbeat_nodes_alive"), 1.0);
        assert_eq!(gauge("heartbeat_nodes_lost"), 0.0);
        assert!(
            matches!(value("heartbeat_pings_sent_total"), Some(DebugValue::Counter(n)) if *n >= 3)
        );
        assert!(matches!(
            value("heartbeat_pings_failed_total"),
            Some(DebugValue::Counter(0))
        ));
        assert!(
            matches!(value("heartbeat_ping_rtt_seconds"), Some(DebugValue::Histogram(rtts)) if rtts.len() >= 3)
        );
        // natter's own series of the master's registration server.
        assert!(
            matches!(value("natter_connections_accepted_total"), Some(DebugValue::Counter(n)) if *n >= 1)
        );
        node.leave().await.unwrap();
        master.shutdown().await.unwrap();
    }
}
