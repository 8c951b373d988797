//! The master: accepts registrations, pings every node, reports changes.
//!
//! Three parts, each with one job:
//!
//! - the **registration endpoint**, a natter [`Server`] on `listen`: one
//!   [`RegistrationRequest`] per frame, answered with a
//!   [`RegistrationReply`] (a `leave` gets none);
//! - the [`pinger`](crate::pinger), which pings every node each interval
//!   (and, if asked for, reports [`MasterEvent::PingStats`]);
//! - the [`Membership`] they share: the [`Detector`] that decides who is
//!   live or lost, each node's ping connection, and the sender of the
//!   [`MasterEvent`]s. Every change goes through it under one lock, so the
//!   events come out in the order the detector decided them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use natter::{Conn, Frame, Server, ServerHandle};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tower::service_fn;

use crate::Error;
use crate::cli::MasterArgs;
use crate::detector::{Detector, PingTarget};
use crate::event::{EventStream, MasterEvent};
use crate::pinger::{self, Connector, NodeLink, PingService};
use crate::protocol::{self, RegistrationReply, RegistrationRequest, reachable_heartbeat_addr};

/// A registration connection that completes no frame for this long is
/// closed. A node sends its request as soon as it connects, so only a
/// stuck or hostile peer waits this long.
const REGISTRATION_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long shutdown waits for registrations being answered.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// How a [`Master`] runs: the `heartbeat master` flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterConfig {
    /// Where registrations are accepted; port 0 picks a free one.
    pub listen: SocketAddr,
    /// How often every node is pinged.
    pub interval: Duration,
    /// Consecutive failed pings after which a node is lost.
    pub failures: NonZeroU32,
    /// How long each ping may take, connecting included.
    pub ping_timeout: Duration,
    /// If set, only registrations carrying this token are accepted.
    pub token: Option<String>,
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
    /// token, no ping statistics.
    pub fn new(listen: SocketAddr) -> Self {
        MasterConfig {
            listen,
            interval: Duration::from_secs(1),
            failures: NonZeroU32::new(3).expect("3 is not zero"),
            ping_timeout: Duration::from_secs(1),
            token: None,
            stats_interval: None,
        }
    }
}

impl From<&MasterArgs> for MasterConfig {
    fn from(args: &MasterArgs) -> Self {
        MasterConfig {
            listen: args.listen,
            interval: args.interval(),
            failures: args.failures,
            ping_timeout: args.ping_timeout(),
            token: args.token.clone(),
            stats_interval: args.stats_interval(),
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
    /// [`Error::InvalidConfig`] for a zero interval, ping timeout or stats
    /// interval.
    pub async fn start(config: MasterConfig) -> Result<(Master, EventStream<MasterEvent>), Error> {
        if config.interval.is_zero()
            || config.ping_timeout.is_zero()
            || config.stats_interval.is_some_and(|every| every.is_zero())
        {
            return Err(Error::InvalidConfig(
                "the interval, the ping timeout and the stats interval must be longer than zero",
            ));
        }
        let server = Server::builder()
            .codec(protocol::codec())
            .idle_timeout(REGISTRATION_IDLE_TIMEOUT)
            .drain_timeout(DRAIN_TIMEOUT)
            .bind(config.listen)
            .await?;
        let local_addr = crate::tcp_addr(&server.local_addr());
        let handle = server.handle();
        let (sender, receiver) = mpsc::unbounded_channel();
        let _ = sender.send(MasterEvent::Listening { addr: local_addr });
        let connector = NodeLink::connector(config.ping_timeout);
        let membership = Arc::new(Membership::new(
            config.failures,
            connector,
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
                    let reply = membership.handle(&conn, token.as_deref(), &frame);
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
            failures = config.failures,
            ping_timeout = ?config.ping_timeout,
            stats_interval = ?config.stats_interval,
            "master started"
        );
        // Pinging stops when the registration endpoint has shut down; the
        // pings in flight and every node connection go with it.
        let task = tokio::spawn(async move {
            tokio::select! {
                served = registrations => served,
                () = pings => Ok(()),
            }
        });
        let master = Master {
            local_addr,
            server: handle,
            task,
        };
        Ok((master, EventStream::new(receiver)))
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

/// What the registration endpoint and the pinger share: who the nodes are
/// and how to reach them. Every method takes the lock once and emits the
/// events of its change while holding it.
pub(crate) struct Membership {
    state: Mutex<State>,
    connector: Connector,
    events: mpsc::UnboundedSender<MasterEvent>,
}

struct State {
    detector: Detector,
    /// The ping connection of each node that has been pinged, at the
    /// address the detector has for it (a registration drops it).
    links: HashMap<String, PingService>,
    /// The pings finished since the last [`MasterEvent::PingStats`], if
    /// statistics were asked for.
    stats: Option<PingTally>,
}

/// Pings finished in one stats period.
#[derive(Default)]
struct PingTally {
    failed: u64,
    rtts: Vec<Duration>,
}

impl Membership {
    /// A membership with no nodes yet. With `ping_stats`, every ping's
    /// outcome is kept until [`report_ping_stats`](Self::report_ping_stats).
    pub(crate) fn new(
        failures: NonZeroU32,
        connector: Connector,
        events: mpsc::UnboundedSender<MasterEvent>,
        ping_stats: bool,
    ) -> Self {
        Membership {
            state: Mutex::new(State {
                detector: Detector::new(failures),
                links: HashMap::new(),
                stats: ping_stats.then(PingTally::default),
            }),
            connector,
            events,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change is a call or two on the detector and the map; a
        // panic between them leaves at worst a connection to redial.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn emit(&self, event: MasterEvent) {
        // No reader (the `Master` was dropped) is not an error.
        let _ = self.events.send(event);
    }

    /// Answers one frame on the registration endpoint. Anything that is
    /// not a registration request closes the connection (the error is
    /// logged by natter with the peer's address); nothing is reported.
    fn handle(
        &self,
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
                let reply = RegistrationReply::for_token(token, offered.as_deref());
                match &reply {
                    RegistrationReply::Accepted => {
                        let addr = reachable_heartbeat_addr(heartbeat_addr, peer);
                        tracing::info!(node = %id, %addr, %peer, "registration accepted");
                        self.register(id, addr);
                    }
                    RegistrationReply::Rejected { reason } => {
                        tracing::warn!(node = %id, %peer, %reason, "registration rejected");
                        self.emit(MasterEvent::RegistrationRejected {
                            peer,
                            reason: reason.clone(),
                        });
                        conn.close();
                    }
                }
                Frame::from_json(&reply).map(Some)
            }
            RegistrationRequest::Leave { id, token: offered } => {
                if let RegistrationReply::Rejected { reason } =
                    RegistrationReply::for_token(token, offered.as_deref())
                {
                    // Only a node that could register may make it leave.
                    tracing::warn!(node = %id, %peer, %reason, "leave ignored");
                } else {
                    tracing::info!(node = %id, %peer, "node leaves");
                    self.leave(&id);
                }
                Ok(None)
            }
        }
    }

    /// Node `id` registered at heartbeat address `addr`.
    pub(crate) fn register(&self, id: String, addr: SocketAddr) {
        let mut state = self.state();
        let registration = state.detector.registered(&id, addr);
        // Its next ping dials the new address (or the same address anew:
        // the node may have restarted there).
        state.links.remove(&id);
        self.emit(MasterEvent::registration(id, addr, registration));
    }

    /// Node `id` said it is leaving.
    pub(crate) fn leave(&self, id: &str) {
        let mut state = self.state();
        if let Some(transition) = state.detector.left(id) {
            state.links.remove(id);
            self.emit(MasterEvent::transition(id.to_owned(), transition));
        }
    }

    /// One ping for every known node, with the service to send it on.
    pub(crate) fn start_round(&self) -> Vec<(PingTarget, PingService)> {
        let mut state = self.state();
        let State {
            detector, links, ..
        } = &mut *state;
        detector
            .start_round()
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
        let mut state = self.state();
        if let Some(stats) = &mut state.stats {
            stats.rtts.push(rtt);
        }
        if let Some(transition) = state.detector.ping_succeeded(id, seq) {
            tracing::info!(node = %id, "node recovered");
            self.emit(MasterEvent::transition(id.to_owned(), transition));
        }
    }

    /// Ping `seq` to node `id` failed.
    pub(crate) fn ping_failed(&self, id: &str, seq: u64) {
        let mut state = self.state();
        if let Some(stats) = &mut state.stats {
            stats.failed += 1;
        }
        if let Some(transition) = state.detector.ping_failed(id, seq) {
            let failures = state.detector.failures();
            tracing::warn!(node = %id, failures, "node lost");
            self.emit(MasterEvent::transition(id.to_owned(), transition));
        }
    }

    /// Emits a [`MasterEvent::PingStats`] with the pings finished since
    /// the last one, and starts counting afresh. Does nothing if
    /// statistics were not asked for.
    pub(crate) fn report_ping_stats(&self) {
        let mut state = self.state();
        if let Some(stats) = &mut state.stats {
            let PingTally { failed, rtts } = std::mem::take(stats);
            self.emit(MasterEvent::PingStats {
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
}
