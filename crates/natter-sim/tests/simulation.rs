//! natter's client and server under faults that loopback cannot make:
//! partitions, latency spikes and message loss, simulated by turmoil on
//! simulated time, from a seed.
//!
//! Each test is a scenario run for every seed chosen (see
//! `natter_sim::seeds`): the seed draws the fault schedule and turmoil's
//! network randomness; the run's outcomes, stamped with simulated time,
//! are checked against the properties natter promises. A failing seed is
//! printed with the command that replays it.
//!
//! ```text
//! cargo test -p natter-sim --test simulation                     # the CI seeds
//! NATTER_SIM_SEEDS=2000 cargo test --release -p natter-sim --test simulation
//! NATTER_SIM_SEED=17 cargo test -p natter-sim --test simulation -- client_requests_under_partitions --exact
//! ```

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use natter::client::Backoff;
use natter::{Client, Conn, Frame, Server};
use natter_sim::Timeline;
use natter_sim::net::{SimDialer, SimListener};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tower::{Service, ServiceExt, service_fn};

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Simulated time since the start of the run.
fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

const SERVER: &str = "server";
const PORT: u16 = 7878;
const TICK: Duration = Duration::from_millis(5);

fn sim(seed: u64, run_for: Duration) -> turmoil::Sim<'static> {
    turmoil::Builder::new()
        .rng_seed(seed)
        .tick_duration(TICK)
        .simulation_duration(run_for + Duration::from_secs(60))
        .min_message_latency(ms(1))
        .max_message_latency(ms(4))
        .build()
}

/// How a fault cuts a link off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Segments held, delivered at the heal (TCP retransmitting across a
    /// short partition).
    Hold,
    /// Segments dropped: connections that lose one are black holes.
    Drop,
}

/// One fault on the link between the server and a client.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Partition {
        cut: Cut,
    },
    /// One-way latency from `latency` to 1.5 times it.
    Latency {
        latency: f64,
    },
    /// Each message lost (a black hole for its connection) at this rate.
    Loss {
        rate: f64,
    },
}

/// A fault on `client`'s link from `start` for `length` seconds.
#[derive(Debug, Clone)]
struct Window {
    client: String,
    start: f64,
    length: f64,
    fault: Fault,
}

impl Window {
    fn end(&self) -> f64 {
        self.start + self.length
    }

    fn schedule(&self, timeline: &mut Timeline<'static>) {
        let (a, b) = (self.client.clone(), self.client.clone());
        let fault = self.fault;
        timeline.at(secs(self.start), move |sim| match fault {
            Fault::Partition { cut: Cut::Hold } => sim.hold(SERVER, a.as_str()),
            Fault::Partition { cut: Cut::Drop } => sim.partition(SERVER, a.as_str()),
            Fault::Latency { latency } => {
                sim.set_link_latency(SERVER, a.as_str(), secs(latency));
                sim.set_link_max_message_latency(SERVER, a.as_str(), secs(latency * 1.5));
            }
            Fault::Loss { rate } => sim.set_link_fail_rate(SERVER, a.as_str(), rate),
        });
        timeline.at(secs(self.end()), move |sim| match fault {
            Fault::Partition { cut: Cut::Hold } => sim.release(SERVER, b.as_str()),
            Fault::Partition { cut: Cut::Drop } => sim.repair(SERVER, b.as_str()),
            Fault::Latency { .. } => {
                sim.set_link_latency(SERVER, b.as_str(), ms(1));
                sim.set_link_max_message_latency(SERVER, b.as_str(), ms(4));
            }
            Fault::Loss { .. } => sim.set_link_fail_rate(SERVER, b.as_str(), 0.0),
        });
    }
}

/// Draws up to `max` faults for `client` in `[from, to)`, one at a time
/// on its link (they do not overlap).
fn draw_faults(rng: &mut SmallRng, client: &str, from: f64, to: f64, max: usize) -> Vec<Window> {
    let mut windows = Vec::new();
    let mut at = from;
    for _ in 0..rng.random_range(0..=max) {
        at += rng.random_range(0.0..6.0);
        let length = rng.random_range(0.3..8.0);
        if at + length > to {
            break;
        }
        let fault = match rng.random_range(0..4) {
            0 => Fault::Partition { cut: Cut::Hold },
            1 => Fault::Partition { cut: Cut::Drop },
            2 => Fault::Latency {
                latency: rng.random_range(0.05..1.5),
            },
            _ => Fault::Loss {
                rate: rng.random_range(0.01..0.2),
            },
        };
        windows.push(Window {
            client: client.to_owned(),
            start: at,
            length,
            fault,
        });
        at += length;
    }
    windows
}

mod client_requests {
    //! Scenario 1: four pipelined `ClientService`s with reconnect against
    //! one server, through partitions, latency spikes and loss.

    use super::*;

    pub(super) const CLIENTS: usize = 4;
    /// Requests each client runs at once.
    const WORKERS: usize = 6;
    pub(super) const MAX_PENDING: usize = 8;
    pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
    const BACKOFF_MAX: Duration = Duration::from_secs(1);
    /// Faults happen in `[FAULTS_FROM, FAULTS_UNTIL)`; requests go on
    /// until `END`.
    const FAULTS_FROM: f64 = 2.0;
    const FAULTS_UNTIL: f64 = 40.0;
    pub(super) const END: f64 = 55.0;

    /// How long after the last fault a client may take to be back: a dead
    /// connection found by the idle timeout, the longest backoff, a
    /// connect, and a request.
    pub(super) fn back_within() -> Duration {
        IDLE_TIMEOUT + BACKOFF_MAX + CONNECT_TIMEOUT + REQUEST_TIMEOUT
    }

    /// One request and what became of it.
    #[derive(Debug, Clone)]
    pub(super) struct Outcome {
        pub(super) client: usize,
        pub(super) request: String,
        pub(super) started: Duration,
        /// When `call` was made (after `ready`), if it was.
        pub(super) called: Option<Duration>,
        pub(super) ended: Duration,
        pub(super) result: Result<String, String>,
    }

    #[derive(Default)]
    pub(super) struct Run {
        pub(super) faults: Vec<Window>,
        pub(super) outcomes: Vec<Outcome>,
        /// Every request the server's handler saw.
        pub(super) received: Vec<String>,
        /// The most requests in flight seen on each client.
        pub(super) most_in_flight: Vec<u64>,
    }

    pub(super) fn run(seed: u64) -> Result<Run, String> {
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x636c_6965_6e74);
        let mut sim = sim(seed, secs(END));
        let received = Arc::new(Mutex::new(Vec::new()));
        let server_received = received.clone();
        sim.host(SERVER, move || {
            let received = server_received.clone();
            async move {
                let listener = SimListener::bind(([0, 0, 0, 0], PORT).into()).await?;
                let server = Server::builder().max_in_flight(4).listener(listener)?;
                server
                    .serve(move |_: &Conn| {
                        let received = received.clone();
                        service_fn(move |frame: Frame| {
                            let request = String::from_utf8_lossy(&frame).into_owned();
                            received.lock().unwrap().push(request.clone());
                            // Each request takes its own time, up to 80 ms.
                            let delay = ms(request.bytes().map(u64::from).sum::<u64>() % 80);
                            async move {
                                tokio::time::sleep(delay).await;
                                Ok::<_, natter::Error>(Frame::from(format!("ok {request}")))
                            }
                        })
                    })
                    .await?;
                Ok(())
            }
        });

        let outcomes = Rc::new(RefCell::new(Vec::new()));
        let most_in_flight = Rc::new(RefCell::new(vec![0; CLIENTS]));
        let mut faults = Vec::new();
        for client in 0..CLIENTS {
            let name = format!("c{client}");
            faults.extend(draw_faults(&mut rng, &name, FAULTS_FROM, FAULTS_UNTIL, 5));
            let pauses: Vec<u64> = (0..WORKERS).map(|_| rng.random()).collect();
            let outcomes = outcomes.clone();
            let most_in_flight = most_in_flight.clone();
            sim.host(name.as_str(), move || {
                let outcomes = outcomes.clone();
                let most_in_flight = most_in_flight.clone();
                let pauses = pauses.clone();
                async move {
                    let service = Client::builder()
                        .connect_timeout(CONNECT_TIMEOUT)
                        .idle_timeout(IDLE_TIMEOUT)
                        .max_pending(MAX_PENDING)
                        // No jitter: natter draws it from the thread's
                        // generator, which the seed does not drive.
                        .reconnect(Backoff::new(ms(100), BACKOFF_MAX).jitter(0.0))
                        .connect_service(SimDialer::new(format!("{SERVER}:{PORT}")))
                        .await?;
                    let local = tokio::task::LocalSet::new();
                    for (worker, pause_seed) in pauses.into_iter().enumerate() {
                        let mut service = service.clone();
                        let outcomes = outcomes.clone();
                        local.spawn_local(async move {
                            let mut pauses = SmallRng::seed_from_u64(pause_seed);
                            for n in 0.. {
                                if now() >= secs(END - 1.0) {
                                    break;
                                }
                                let request = format!("c{client}/w{worker}/{n}");
                                let started = now();
                                let mut called = None;
                                let result = tokio::time::timeout(REQUEST_TIMEOUT, async {
                                    let ready = service.ready().await?;
                                    called = Some(now());
                                    ready.call(Frame::from(request.clone())).await
                                })
                                .await;
                                let result = match result {
                                    Ok(Ok(answer)) => {
                                        Ok(String::from_utf8_lossy(&answer).into_owned())
                                    }
                                    Ok(Err(error)) => Err(error.to_string()),
                                    Err(_) => Err("timed out".to_owned()),
                                };
                                outcomes.borrow_mut().push(Outcome {
                                    client,
                                    request,
                                    started,
                                    called,
                                    ended: now(),
                                    result,
                                });
                                tokio::time::sleep(ms(pauses.random_range(0..200))).await;
                            }
                        });
                    }
                    let watch = async {
                        loop {
                            let in_flight = service.stats().requests_in_flight;
                            {
                                let mut most = most_in_flight.borrow_mut();
                                most[client] = most[client].max(in_flight);
                            }
                            tokio::time::sleep(ms(20)).await;
                        }
                    };
                    tokio::select! {
                        () = local => {}
                        () = watch => {}
                    }
                    Ok(())
                }
            });
        }
        let mut timeline = Timeline::new();
        for window in &faults {
            window.schedule(&mut timeline);
        }
        timeline
            .run(&mut sim, secs(END))
            .map_err(|error| format!("a host failed: {error}"))?;
        let outcomes = outcomes.borrow().clone();
        let most_in_flight = most_in_flight.borrow().clone();
        let received = received.lock().unwrap().clone();
        Ok(Run {
            faults,
            outcomes,
            received,
            most_in_flight,
        })
    }

    pub(super) fn check(run: &Run) -> Result<(), String> {
        let mut seen = BTreeSet::new();
        for request in &run.received {
            if !seen.insert(request) {
                return Err(format!("{request} reached the server twice"));
            }
        }
        for outcome in &run.outcomes {
            let Outcome {
                request, result, ..
            } = outcome;
            match result {
                Ok(answer) if *answer != format!("ok {request}") => {
                    return Err(format!(
                        "{request} was answered {answer:?}: another request's answer"
                    ));
                }
                Err(error) if error.is_empty() => {
                    return Err(format!("{request} failed without a word"));
                }
                _ => {}
            }
            if let Some(called) = outcome.called {
                // Turmoil moves time in ticks.
                if outcome.ended - called > REQUEST_TIMEOUT + TICK * 2 {
                    return Err(format!(
                        "{request} waited {:?} after it was sent, past its timeout",
                        outcome.ended - called
                    ));
                }
            }
        }
        for (client, &most) in run.most_in_flight.iter().enumerate() {
            if most > MAX_PENDING as u64 {
                return Err(format!(
                    "c{client} had {most} requests in flight, max_pending {MAX_PENDING}"
                ));
            }
        }
        // Back after the faults: every request of a client started once its
        // last fault has been over for a while is answered.
        for client in 0..CLIENTS {
            let name = format!("c{client}");
            let quiet_from = run
                .faults
                .iter()
                .filter(|w| w.client == name)
                .map(|w| secs(w.end()))
                .max()
                .unwrap_or_default()
                + back_within();
            let after: Vec<&Outcome> = run
                .outcomes
                .iter()
                .filter(|o| o.client == client && o.started >= quiet_from)
                .collect();
            if after.is_empty() {
                return Err(format!("{name}: no request after {quiet_from:?}"));
            }
            if let Some(failed) = after.iter().find(|o| o.result.is_err()) {
                return Err(format!(
                    "{name}: {} failed at {:?} ({:?}), {quiet_from:?} after its last fault ended",
                    failed.request, failed.ended, failed.result
                ));
            }
        }
        Ok(())
    }

    pub(super) fn describe(run: &Run) -> String {
        let mut text = String::new();
        for w in &run.faults {
            text.push_str(&format!(
                "\n        {}: {:?} from {:.2} to {:.2} s",
                w.client,
                w.fault,
                w.start,
                w.end()
            ));
        }
        text
    }
}

#[test]
fn client_requests_under_partitions() {
    natter_sim::seeds!().run("client_requests_under_partitions", 0..4, |seed| {
        let run = client_requests::run(seed)?;
        client_requests::check(&run).map_err(|broken| {
            format!("{broken}\n    faults:{}", client_requests::describe(&run))
        })?;
        let answered = run.outcomes.iter().filter(|o| o.result.is_ok()).count();
        Ok((answered, run.outcomes.len()))
    });
}

mod drain {
    //! Scenario 2: a server's graceful shutdown while some peers are cut
    //! off, some are slow, and one does not read its answers.

    use super::*;

    pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
    /// The peers: two plain ones and one behind a slow link are reachable;
    /// two are cut off (held, dropped) just before the shutdown; one sends
    /// and never reads.
    pub(super) const REACHABLE: [&str; 3] = ["fast0", "fast1", "slow"];
    const CUT_HOLD: &str = "cut_hold";
    const CUT_DROP: &str = "cut_drop";
    const DEAF: &str = "deaf";

    #[derive(Debug, Default)]
    pub(super) struct Run {
        pub(super) shutdown_at: Duration,
        /// When `shutdown` returned, if it did.
        pub(super) returned_at: Option<Duration>,
        /// When `serve` returned, and how.
        pub(super) served: Option<(Duration, String)>,
        /// Per peer: the requests the server's handler took.
        pub(super) handled: BTreeMap<String, Vec<String>>,
        /// Per peer: the answers it received.
        pub(super) answered: BTreeMap<String, BTreeSet<String>>,
        pub(super) slow_latency: f64,
    }

    pub(super) fn run(seed: u64) -> Result<Run, String> {
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x0064_7261_696e);
        let end = 20.0;
        let mut sim = sim(seed, secs(end));
        let shutdown_at = secs(rng.random_range(4.0..8.0));
        let cut_at = shutdown_at - secs(rng.random_range(0.05..1.0));
        let slow_latency = rng.random_range(0.1..0.6);
        let handler_delays: Vec<u64> = (0..64).map(|_| rng.random_range(0..300)).collect();

        let run = Rc::new(RefCell::new(Run {
            shutdown_at,
            slow_latency,
            ..Run::default()
        }));
        let handled = Arc::new(Mutex::new(BTreeMap::<String, Vec<String>>::new()));
        let server_run = run.clone();
        let server_handled = handled.clone();
        sim.host(SERVER, move || {
            let run = server_run.clone();
            let handled = server_handled.clone();
            let delays = handler_delays.clone();
            async move {
                let listener = SimListener::bind(([0, 0, 0, 0], PORT).into()).await?;
                let server = Server::builder()
                    .max_in_flight(4)
                    .drain_timeout(DRAIN_TIMEOUT)
                    .listener(listener)?;
                let handle = server.handle();
                let serving = tokio::task::spawn_local(server.serve(move |_: &Conn| {
                    let handled = handled.clone();
                    let delays = delays.clone();
                    service_fn(move |frame: Frame| {
                        let request = String::from_utf8_lossy(&frame).into_owned();
                        let peer = request.split('/').next().unwrap_or_default().to_owned();
                        handled
                            .lock()
                            .unwrap()
                            .entry(peer)
                            .or_default()
                            .push(request.clone());
                        let delay = ms(delays[request.len() % delays.len()]);
                        async move {
                            tokio::time::sleep(delay).await;
                            Ok::<_, natter::Error>(Frame::from(format!("ok {request}")))
                        }
                    })
                }));
                tokio::time::sleep(shutdown_at.saturating_sub(now())).await;
                let shutdown = handle.shutdown();
                tokio::pin!(shutdown);
                tokio::select! {
                    () = &mut shutdown => {}
                    () = tokio::time::sleep(secs(10.0)) => return Ok(()),
                }
                run.borrow_mut().returned_at = Some(now());
                let served = serving.await?;
                run.borrow_mut().served = Some((now(), format!("{served:?}")));
                std::future::pending::<()>().await;
                Ok(())
            }
        });

        let answered = Rc::new(RefCell::new(BTreeMap::<String, BTreeSet<String>>::new()));
        for peer in REACHABLE.iter().chain(&[CUT_HOLD, CUT_DROP]) {
            let peer = peer.to_string();
            let answered = answered.clone();
            let pause_seed: u64 = rng.random();
            let host = peer.clone();
            sim.host(host.as_str(), move || {
                let answered = answered.clone();
                let peer = peer.clone();
                async move {
                    let service = Client::builder()
                        .connect_timeout(secs(1.0))
                        .connect_service(SimDialer::new(format!("{SERVER}:{PORT}")))
                        .await?;
                    // Three requests at a time, each sent when the one
                    // before it on its worker is answered: a load the
                    // server keeps up with.
                    let local = tokio::task::LocalSet::new();
                    for worker in 0..3 {
                        let mut service = service.clone();
                        let answered = answered.clone();
                        let peer = peer.clone();
                        let mut pauses = SmallRng::seed_from_u64(pause_seed ^ worker);
                        local.spawn_local(async move {
                            for n in 0.. {
                                let request = format!("{peer}/w{worker}/{n}");
                                let Ok(ready) = service.ready().await else {
                                    break;
                                };
                                let Ok(answer) = ready.call(Frame::from(request.clone())).await
                                else {
                                    break;
                                };
                                let answer = String::from_utf8_lossy(&answer).into_owned();
                                assert_eq!(
                                    answer,
                                    format!("ok {request}"),
                                    "another request's answer"
                                );
                                answered
                                    .borrow_mut()
                                    .entry(peer.clone())
                                    .or_default()
                                    .insert(request);
                                tokio::time::sleep(ms(pauses.random_range(0..60))).await;
                            }
                        });
                    }
                    local.await;
                    std::future::pending::<()>().await;
                    Ok(())
                }
            });
        }
        sim.host(DEAF, || async {
            use tokio::io::AsyncWriteExt;
            let mut stream = turmoil::net::TcpStream::connect((SERVER, PORT)).await?;
            for n in 0..100_000 {
                // Never reads: the server's answers pile up until it
                // stops reading too.
                if stream
                    .write_all(format!("{DEAF}/{n}\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            std::future::pending::<()>().await;
            Ok(())
        });

        let mut timeline = Timeline::new();
        timeline.at(secs(0.0), move |sim| {
            sim.set_link_latency(SERVER, "slow", secs(slow_latency));
            sim.set_link_max_message_latency(SERVER, "slow", secs(slow_latency * 1.5));
        });
        timeline.at(cut_at, |sim| sim.hold(SERVER, CUT_HOLD));
        timeline.at(cut_at, |sim| sim.partition(SERVER, CUT_DROP));
        timeline.at(secs(end - 5.0), |sim| sim.release(SERVER, CUT_HOLD));
        timeline
            .run(&mut sim, secs(end))
            .map_err(|error| format!("a host failed: {error}"))?;
        let mut run = run.replace(Run::default());
        run.handled = handled.lock().unwrap().clone();
        run.answered = answered.borrow().clone();
        Ok(run)
    }

    pub(super) fn check(run: &Run) -> Result<(), String> {
        let Some(returned_at) = run.returned_at else {
            return Err(format!(
                "shutdown at {:?} had not returned 10 s later",
                run.shutdown_at
            ));
        };
        // The drain timeout, and turmoil's ticks.
        if returned_at > run.shutdown_at + DRAIN_TIMEOUT + TICK * 5 {
            return Err(format!(
                "shutdown at {:?} returned at {returned_at:?}, past the drain timeout of {DRAIN_TIMEOUT:?}",
                run.shutdown_at
            ));
        }
        if run.served.is_none() {
            return Err("serve did not return after shutdown".to_owned());
        }
        for peer in REACHABLE {
            let handled = run.handled.get(peer).cloned().unwrap_or_default();
            if handled.is_empty() {
                return Err(format!("{peer}: no request reached the server"));
            }
            let answered = run.answered.get(peer).cloned().unwrap_or_default();
            if let Some(unanswered) = handled.iter().find(|r| !answered.contains(*r)) {
                return Err(format!(
                    "{peer}: the server took {unanswered} before it shut down, but never answered it ({} taken, {} answered)",
                    handled.len(),
                    answered.len()
                ));
            }
        }
        Ok(())
    }
}

#[test]
fn server_drain_with_partitioned_and_slow_peers() {
    natter_sim::seeds!().run(
        "server_drain_with_partitioned_and_slow_peers",
        0..6,
        |seed| {
            let run = drain::run(seed)?;
            drain::check(&run).map_err(|broken| {
                format!(
                    "{broken}\n    shutdown at {:?}, slow link {:.2} s one way, returned at {:?}",
                    run.shutdown_at, run.slow_latency, run.returned_at
                )
            })?;
            Ok(run.returned_at)
        },
    );
}

/// Seeds that failed the drain property, kept as a regression test: 1241
/// and 1271 (of 300 run), 2033, 2093, 2214, 2260, 2550, 2917 and 2996 (of
/// 1000 more). A peer behind a slow link sends a request just after the
/// draining server answered the ones before it and sent FIN; the request
/// drew a reset, which in turmoil (each segment after its own latency)
/// overtook the answers, and the peer lost them.
///
/// The cause was natter's polite close: it called `poll_shutdown` again at
/// every poll while it lingered; Linux takes a second `shutdown(SHUT_WR)`,
/// turmoil's stream answers it with `NotConnected`, and the polite close
/// then ended at once, dropping the socket with the late request unread.
/// It now asks for the shutdown once, then only reads.
#[test]
fn server_drain_answers_reach_a_slow_peer_that_sends_after_the_fin() {
    natter_sim::seeds!().run(
        "server_drain_answers_reach_a_slow_peer_that_sends_after_the_fin",
        [1241, 1271, 2033, 2093, 2214, 2260, 2550, 2917, 2996],
        |seed| {
            let run = drain::run(seed)?;
            drain::check(&run)
        },
    );
}
