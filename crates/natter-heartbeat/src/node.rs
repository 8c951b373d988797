//! The node: answers pings, registers with the master, notices when the
//! master has gone silent.
//!
//! - The **heartbeat endpoint** is a natter [`Server`] on `listen`: each
//!   [`Ping`] frame is answered with its [`Pong`], and every ping counts as
//!   hearing from the master.
//! - The node's **life** is a loop: register (retried until the master
//!   accepts, so start order does not matter), then watch for silence with
//!   a [`MasterWatchdog`]; when the master has been silent for
//!   `master_timeout`, report it and register again, so a restarted master
//!   gets the node back. A rejection for the token ends the loop; one for
//!   `id in use` or `node limit` is retried, since the id or a place may
//!   free up.
//! - On [`Node::leave`] the node tells the master it is leaving, then
//!   closes its endpoint.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use natter::transport::Dial;
use natter::{BoxError, Client, Conn, Frame, Server};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tower::{ServiceExt, service_fn};

use crate::Error;
use crate::detector::MasterWatchdog;
use crate::event::{DEFAULT_EVENT_CAPACITY, EventSender, EventStream, NodeEvent, event_stream};
use crate::logs;
use crate::network::{Network, Tcp};
use crate::protocol::{self, Ping, RegistrationReply, RegistrationRequest};

/// Where a node's heartbeat listener binds unless told otherwise: a free
/// port on loopback.
pub(crate) const DEFAULT_NODE_LISTEN: &str = "127.0.0.1:0";

/// One registration attempt (connecting included) may take this long.
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(1);

/// Registration attempts start at most this often. With
/// [`REGISTRATION_TIMEOUT`], a node retries at least once a second.
const REGISTRATION_RETRY: Duration = Duration::from_millis(500);

/// Telling the master we leave (connecting included) may take this long,
/// so that a stopping node exits promptly even without a master.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long shutdown waits for pings being answered.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// At most this many connections to the heartbeat endpoint. The master
/// needs one; the rest is room for peers that connect and say nothing
/// (closed by the idle timeout), so that a few of them cannot keep the
/// master out.
const MAX_CONNECTIONS: usize = 256;

/// How a [`Node`] runs: the `heartbeat node` flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node's name, unique among the master's nodes.
    pub id: String,
    /// The master's registration address, `HOST:PORT`.
    pub master: String,
    /// Where the heartbeat endpoint listens; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Silence from the master for this long means it has lost us.
    pub master_timeout: Duration,
    /// The token to register with, if the master wants one.
    pub token: Option<String>,
    /// How many events the [`EventStream`] holds for a reader that falls
    /// behind before it drops newer ones (and reports
    /// [`NodeEvent::EventsDropped`]).
    pub event_capacity: usize,
}

impl NodeConfig {
    /// The defaults of `heartbeat node`: listening on a free loopback port,
    /// master lost after 10 s of silence, no token.
    pub fn new(id: impl Into<String>, master: impl Into<String>) -> Self {
        NodeConfig {
            id: id.into(),
            master: master.into(),
            listen: DEFAULT_NODE_LISTEN
                .parse()
                .expect("the default listen address parses"),
            master_timeout: Duration::from_secs(10),
            token: None,
            event_capacity: DEFAULT_EVENT_CAPACITY,
        }
    }
}

/// A running node.
///
/// ```no_run
/// use natter_heartbeat::{Node, NodeConfig};
///
/// # async fn demo() -> Result<(), natter_heartbeat::Error> {
/// let (node, mut events) = Node::start(NodeConfig::new("n1", "127.0.0.1:7940")).await?;
/// while let Some(event) = events.recv().await {
///     println!("{event}"); // node listening for pings on ..., registered with ...
/// }
/// // The events end when the node stops by itself: the master rejected it.
/// node.join().await
/// # }
/// ```
///
/// Dropping it (or [`abort`](Self::abort)) stops it at once, as a crash
/// would: the master is not told, and will report the node lost.
#[derive(Debug)]
pub struct Node {
    local_addr: SocketAddr,
    leave: Option<oneshot::Sender<()>>,
    /// `Ok(Some(..))`: it left, and whether the master was told.
    task: JoinHandle<Result<Option<Departure>, Error>>,
}

/// How [`Node::leave`] went: whether the master was told.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Departure {
    /// The master took the `leave`: it reports `node_left`.
    Told,
    /// The master could not be told (it is gone, refused the connection,
    /// or did not take the message within a second): it will report the
    /// node lost once its pings fail.
    Untold {
        /// Why, for a log line.
        reason: String,
    },
}

impl Departure {
    /// Whether the master was told.
    pub fn told(&self) -> bool {
        matches!(self, Departure::Told)
    }
}

impl Node {
    /// Opens the heartbeat endpoint and starts registering. The first event
    /// is [`NodeEvent::Listening`] with the bound address, which is also
    /// the address the node registers.
    ///
    /// Fails, naming the address, if it cannot listen there, and with
    /// [`Error::InvalidConfig`] for a zero master timeout or event
    /// capacity.
    pub async fn start(config: NodeConfig) -> Result<(Node, EventStream<NodeEvent>), Error> {
        Node::start_on(config, Tcp).await
    }

    /// [`start`](Self::start) on another [`Network`]: listens for pings and
    /// dials the master through `network` (a simulated one, in tests).
    pub async fn start_on<N: Network>(
        config: NodeConfig,
        network: N,
    ) -> Result<(Node, EventStream<NodeEvent>), Error> {
        if config.master_timeout.is_zero() || config.event_capacity == 0 {
            return Err(Error::InvalidConfig(
                "the master timeout and the event capacity must be more than zero",
            ));
        }
        let server = Server::builder()
            .codec(protocol::codec())
            // The master pings every interval; a connection silent for as
            // long as it takes to lose the master is of no use.
            .idle_timeout(config.master_timeout)
            .max_connections(MAX_CONNECTIONS)
            .drain_timeout(DRAIN_TIMEOUT)
            .listener(network.listen(config.listen).await?)?;
        let local_addr = crate::tcp_addr(&server.local_addr());
        let handle = server.handle();
        let (sender, receiver) = event_stream(config.event_capacity);
        sender.send(NodeEvent::Listening { addr: local_addr });
        tracing::info!(node = %config.id, addr = %local_addr, master = %config.master, "node started");

        let (heard_sender, heard) = watch::channel(Instant::now());
        let heard_sender = Arc::new(heard_sender);
        let connection_errors = logs::log_connection_errors(server.events(), "heartbeat port");
        let pings = server.serve(move |conn: &Conn| {
            let heard = heard_sender.clone();
            let conn = conn.clone();
            service_fn(move |frame: Frame| std::future::ready(answer(&conn, &heard, &frame)))
        });
        let (leave, told_to_leave) = oneshot::channel();
        let task = tokio::spawn(async move {
            let life = async {
                let request = RegistrationRequest::Register {
                    id: config.id.clone(),
                    heartbeat_addr: local_addr,
                    token: config.token.clone(),
                };
                let master = network.dialer(&config.master);
                let attempt = || register(master.clone(), &request);
                let outcome = tokio::select! {
                    rejected = live(attempt, &config, heard, &sender) => Err(rejected),
                    Ok(()) = told_to_leave => Ok(Some(tell_master_we_leave(&config, master.clone()).await)),
                };
                handle.shutdown().await;
                outcome
            };
            let connection_errors = async {
                connection_errors.await;
                std::future::pending().await
            };
            let (served, outcome) = tokio::select! {
                done = async { tokio::join!(pings, life) } => done,
                () = connection_errors => unreachable!("logging connection errors never ends"),
            };
            served?;
            outcome
        });
        let node = Node {
            local_addr,
            leave: Some(leave),
            task,
        };
        Ok((node, receiver))
    }

    /// The heartbeat endpoint's address (with the real port when bound to
    /// port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the node politely: tells the master it leaves (giving up after
    /// a second if the master does not take it), then closes the heartbeat
    /// endpoint. The master reports `node_left`, not `node_lost`, if it was
    /// told: the [`Departure`] says whether it was. An `Err` means the node
    /// had stopped before (its token was rejected).
    pub async fn leave(mut self) -> Result<Departure, Error> {
        if let Some(leave) = self.leave.take() {
            let _ = leave.send(());
        }
        let ended = (&mut self.task)
            .await
            .map_err(|join| Error::Stopped(join.to_string()))??;
        Ok(ended.unwrap_or(Departure::Untold {
            reason: "the node had stopped".into(),
        }))
    }

    /// Waits until the node stops by itself, which it does only when the
    /// master rejects its token ([`Error::Rejected`]).
    pub async fn join(mut self) -> Result<(), Error> {
        (&mut self.task)
            .await
            .map_err(|join| Error::Stopped(join.to_string()))?
            .map(|_| ())
    }

    /// Stops the node at once, as a crash would: nothing is said to the
    /// master, connections are dropped.
    pub fn abort(self) {
        // Dropping does it.
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers one frame on the heartbeat endpoint. A ping counts as hearing
/// from the master; anything else closes the connection (natter logs the
/// error with the peer's address) and is not reported.
fn answer(
    conn: &Conn,
    heard: &watch::Sender<Instant>,
    frame: &Frame,
) -> Result<Frame, natter::Error> {
    let ping = frame.json::<Ping>().inspect_err(|_| conn.close())?;
    heard.send_replace(Instant::now());
    tracing::debug!(seq = ping.seq, master = %conn.peer_addr(), "pong");
    Frame::from_json(&ping.answer())
}

/// The node's life: register, watch for silence, register again... Only a
/// rejection of its token ends it, and is returned.
///
/// `register` makes one registration attempt; `heard` holds when the
/// master was last heard from (a ping).
async fn live<R, F>(
    mut register: R,
    config: &NodeConfig,
    mut heard: watch::Receiver<Instant>,
    events: &EventSender<NodeEvent>,
) -> Error
where
    R: FnMut() -> F,
    F: Future<Output = Result<RegistrationReply, BoxError>>,
{
    loop {
        if let Err(reason) = register_until_accepted(&mut register, &config.master).await {
            tracing::error!(master = %config.master, %reason, "registration rejected");
            return Error::Rejected {
                master: config.master.clone(),
                reason,
            };
        }
        tracing::info!(master = %config.master, "registered");
        events.send(NodeEvent::Registered {
            master: config.master.clone(),
        });
        let mut watchdog = MasterWatchdog::new(config.master_timeout, Instant::now());
        while let Some(deadline) = watchdog.deadline() {
            tokio::select! {
                // A ping that arrived with the deadline still counts.
                biased;
                Ok(()) = heard.changed() => watchdog.heard(*heard.borrow_and_update()),
                () = sleep_until(deadline) => {
                    if watchdog.check(Instant::now()) {
                        tracing::warn!(
                            master = %config.master,
                            timeout = ?config.master_timeout,
                            "nothing heard from the master; registering again"
                        );
                        events.send(NodeEvent::MasterLost);
                    }
                }
            }
        }
    }
}

/// Registration attempts, each bounded by [`REGISTRATION_TIMEOUT`] and
/// started at most every [`REGISTRATION_RETRY`], until the master accepts
/// (`Ok`) or rejects the token (`Err` with the reason, see
/// [`RegistrationReply::gives_up`]). Other rejections (`id in use`, `node
/// limit`) are retried like a master that does not answer.
async fn register_until_accepted<R, F>(register: &mut R, master: &str) -> Result<(), String>
where
    R: FnMut() -> F,
    F: Future<Output = Result<RegistrationReply, BoxError>>,
{
    let mut failures: u32 = 0;
    let mut refusals: u32 = 0;
    let mut last_reason = String::new();
    loop {
        let started = Instant::now();
        match tokio::time::timeout(REGISTRATION_TIMEOUT, register()).await {
            Ok(Ok(RegistrationReply::Accepted)) => return Ok(()),
            Ok(Ok(RegistrationReply::Rejected { reason }))
                if RegistrationReply::gives_up(&reason) =>
            {
                return Err(reason);
            }
            Ok(Ok(RegistrationReply::Rejected { reason })) => {
                refusals += 1;
                // Two attempts a second for as long as the id is taken:
                // warn at the first, when the reason changes, then every
                // 10 s or so.
                if refusals % 20 == 1 || reason != last_reason {
                    tracing::warn!(%master, %reason, refusals, "registration rejected; retrying");
                } else {
                    tracing::debug!(%master, %reason, refusals, "registration rejected; retrying");
                }
                last_reason = reason;
            }
            failed => {
                let error = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => format!("no answer within {REGISTRATION_TIMEOUT:?}"),
                };
                failures += 1;
                // A master that is down for long would fill the log at two
                // lines a second: warn at the first failure, then every
                // 10 s or so.
                if failures % 20 == 1 {
                    tracing::warn!(%master, %error, failures, "registration failed; retrying");
                } else {
                    tracing::debug!(%master, %error, failures, "registration failed; retrying");
                }
            }
        }
        sleep_until(started + REGISTRATION_RETRY).await;
    }
}

/// One registration attempt: connect, send `request`, read the reply.
async fn register(
    master: impl Dial,
    request: &RegistrationRequest,
) -> Result<RegistrationReply, BoxError> {
    let client = Client::builder()
        .codec(protocol::codec())
        .connect_timeout(REGISTRATION_TIMEOUT)
        .connect_service(master)
        .await?;
    let reply = client.clone().oneshot(Frame::from_json(request)?).await;
    client.close();
    Ok(reply?.json()?)
}

/// Tells the master this node leaves, within [`LEAVE_TIMEOUT`]. Sent even
/// if the node never saw its registration accepted (the answer may have
/// been on its way); a master that does not know the node ignores it.
async fn tell_master_we_leave(config: &NodeConfig, master: impl Dial) -> Departure {
    let leave = RegistrationRequest::Leave {
        id: config.id.clone(),
        token: config.token.clone(),
    };
    let told = async {
        let client = Client::builder()
            .codec(protocol::codec())
            .connect_timeout(LEAVE_TIMEOUT)
            .connect(master)
            .await?;
        client.send_json(&leave).await?;
        // Returns once the frame is written and the master has closed too.
        client.close().await
    };
    let reason = match tokio::time::timeout(LEAVE_TIMEOUT, told).await {
        Ok(Ok(())) => {
            tracing::info!(master = %config.master, "told the master we leave");
            return Departure::Told;
        }
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!("no answer within {LEAVE_TIMEOUT:?}"),
    };
    tracing::warn!(master = %config.master, %reason, "could not tell the master we leave");
    Departure::Untold { reason }
}

#[cfg(test)]
mod tests {
    //! The node's life against a scripted master, with tokio's clock
    //! paused: registration retries, silence, registering again.

    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(3);

    /// How the scripted master answers one registration attempt.
    #[derive(Debug, Clone)]
    enum Answer {
        Refused,
        Silent,
        Reply(RegistrationReply),
    }

    struct Script {
        answers: Mutex<VecDeque<Answer>>,
        attempts: Mutex<Vec<Duration>>,
        start: Instant,
    }

    impl Script {
        fn new(answers: impl IntoIterator<Item = Answer>) -> Arc<Self> {
            Arc::new(Script {
                answers: Mutex::new(answers.into_iter().collect()),
                attempts: Mutex::default(),
                start: Instant::now(),
            })
        }

        fn attempts(&self) -> Vec<Duration> {
            self.attempts.lock().unwrap().clone()
        }

        /// One attempt; once the script is used up, the master is silent.
        async fn attempt(self: Arc<Self>) -> Result<RegistrationReply, BoxError> {
            self.attempts.lock().unwrap().push(self.start.elapsed());
            let answer = self.answers.lock().unwrap().pop_front();
            match answer.unwrap_or(Answer::Silent) {
                Answer::Refused => Err("connection refused".into()),
                Answer::Silent => std::future::pending().await,
                Answer::Reply(reply) => Ok(reply),
            }
        }
    }

    struct Life {
        events: EventStream<NodeEvent>,
        heard: watch::Sender<Instant>,
        task: JoinHandle<Error>,
        start: Instant,
    }

    impl Drop for Life {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn live_with(script: &Arc<Script>) -> Life {
        let config = NodeConfig {
            master_timeout: TIMEOUT,
            ..NodeConfig::new("n1", "master:1")
        };
        let (sender, events) = event_stream(DEFAULT_EVENT_CAPACITY);
        let (heard, heard_receiver) = watch::channel(Instant::now());
        let script = script.clone();
        let task = tokio::spawn(async move {
            live(
                || script.clone().attempt(),
                &config,
                heard_receiver,
                &sender,
            )
            .await
        });
        Life {
            events,
            heard,
            task,
            start: Instant::now(),
        }
    }

    impl Life {
        /// The next event and when it came (since the start), if one comes
        /// within a minute.
        async fn next(&mut self) -> Option<(NodeEvent, Duration)> {
            let event = tokio::time::timeout(Duration::from_secs(60), self.events.recv()).await;
            event
                .ok()
                .flatten()
                .map(|event| (event, self.start.elapsed()))
        }
    }

    fn registered() -> NodeEvent {
        NodeEvent::Registered {
            master: "master:1".into(),
        }
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[tokio::test]
    async fn a_zero_master_timeout_is_refused() {
        let config = NodeConfig {
            master_timeout: Duration::ZERO,
            ..NodeConfig::new("n1", "127.0.0.1:1")
        };
        let error = Node::start(config).await.unwrap_err();
        assert!(matches!(error, Error::InvalidConfig(_)), "{error:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn registration_is_retried_until_the_master_answers() {
        let accepted = Answer::Reply(RegistrationReply::Accepted);
        let script = Script::new([Answer::Refused, Answer::Silent, Answer::Refused, accepted]);
        let mut life = live_with(&script);
        // Refused at 0 (retry after 500 ms), silent at 500 (gives up at
        // 1500), refused at 1500, accepted at 2000.
        assert_eq!(life.next().await, Some((registered(), ms(2000))));
        let attempts = script.attempts();
        assert_eq!(attempts, [ms(0), ms(500), ms(1500), ms(2000)]);
        assert!(
            attempts
                .windows(2)
                .all(|pair| pair[1] - pair[0] <= ms(1000)),
            "at least once a second"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_master_is_lost_after_the_timeout_of_silence_then_registered_again() {
        let accepted = || Answer::Reply(RegistrationReply::Accepted);
        let script = Script::new([accepted(), Answer::Refused, accepted()]);
        let mut life = live_with(&script);
        assert_eq!(life.next().await, Some((registered(), ms(0))));
        assert_eq!(life.next().await, Some((NodeEvent::MasterLost, TIMEOUT)));
        // Registering again at once; refused, then accepted 500 ms later.
        assert_eq!(life.next().await, Some((registered(), TIMEOUT + ms(500))));
        assert_eq!(script.attempts()[1..], [TIMEOUT, TIMEOUT + ms(500)]);
    }

    #[tokio::test(start_paused = true)]
    async fn pings_keep_the_master_found() {
        let script = Script::new([Answer::Reply(RegistrationReply::Accepted)]);
        let mut life = live_with(&script);
        assert_eq!(life.next().await, Some((registered(), ms(0))));
        for _ in 0..10 {
            tokio::time::sleep(TIMEOUT - ms(1)).await;
            life.heard.send_replace(Instant::now());
        }
        let last_ping = life.start.elapsed();
        assert_eq!(
            life.next().await,
            Some((NodeEvent::MasterLost, last_ping + TIMEOUT))
        );
        assert_eq!(
            script.attempts().len(),
            2,
            "registering again after the loss"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_master_is_lost_once_per_silence() {
        // After the loss, the master stays away: retries, but no second
        // `master_lost`.
        let script = Script::new([Answer::Reply(RegistrationReply::Accepted)]);
        let mut life = live_with(&script);
        assert_eq!(life.next().await, Some((registered(), ms(0))));
        assert_eq!(life.next().await, Some((NodeEvent::MasterLost, TIMEOUT)));
        assert_eq!(life.next().await, None);
        assert!(script.attempts().len() > 20, "still trying to register");
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_rejection_ends_the_life() {
        let rejected = RegistrationReply::Rejected {
            reason: "wrong token".into(),
        };
        let script = Script::new([Answer::Refused, Answer::Reply(rejected)]);
        let mut life = live_with(&script);
        let error = (&mut life.task).await.unwrap();
        assert!(
            matches!(&error, Error::Rejected { master, reason } if master == "master:1" && reason == "wrong token"),
            "{error:?}"
        );
        assert_eq!(life.events.try_recv(), None, "nothing reported");
    }

    #[tokio::test(start_paused = true)]
    async fn id_in_use_and_node_limit_are_retried_until_accepted() {
        let rejected = |reason: &str| {
            Answer::Reply(RegistrationReply::Rejected {
                reason: reason.into(),
            })
        };
        let script = Script::new([
            rejected("id in use"),
            rejected("id in use"),
            rejected("node limit"),
            Answer::Reply(RegistrationReply::Accepted),
        ]);
        let mut life = live_with(&script);
        assert_eq!(life.next().await, Some((registered(), ms(1500))));
        assert_eq!(script.attempts(), [ms(0), ms(500), ms(1000), ms(1500)]);
    }
}
