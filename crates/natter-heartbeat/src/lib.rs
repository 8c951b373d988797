//! natter-heartbeat: a master that pings its nodes and reports the lost
//! ones, built on natter. A Rust retelling of the heartbeat demo that came
//! with the Go framework chitchat.
//!
//! A master accepts registrations on one port; each node runs a heartbeat
//! listener of its own, registers its address with the master, and answers
//! the master's pings. The master reports a node lost after `failures`
//! unanswered pings in a row; a node reports the master lost when it has
//! heard nothing for `master-timeout`. The `heartbeat` binary's command line,
//! events and exit codes are documented in the crate's README.
//!
//! The crate is layered so that everything but the sockets is pure:
//!
//! - [`protocol`]: the JSON messages on the wire.
//! - [`detector`]: when a node (or the master) counts as lost, who may
//!   register, when a lost node is probed and forgotten, as state machines
//!   fed with outcomes and instants.
//! - [`rule`]: when a node counts as lost: a fixed number of failed pings
//!   in a row, or phi accrual.
//! - [`event`]: what is reported on stdout, as JSON lines or sentences,
//!   through bounded queues that never make the work wait.
//! - [`Master`] (its registration endpoint, the membership table, the
//!   pinger) and [`Node`]: the networking, on natter's server and client,
//!   usable in-process; each reports through an [`EventStream`].
//! - [`network`]: where the master and nodes listen and dial: real TCP,
//!   or a simulated network in tests.
//! - [`cli`]: the command line, and its conversion to the configurations.
//! - [`run_master`], [`run_node`], [`run_demo`]: the `heartbeat` binary's
//!   three roles, printing events through an
//!   [`EventSink`].
//!
//! The wire protocol is described in [`protocol`] and in the crate's
//! README.
#![warn(missing_docs)]

pub mod cli;
mod demo;
pub mod detector;
pub mod event;
mod logs;
mod master;
mod membership;
pub mod network;
mod node;
mod pinger;
pub mod protocol;
mod queue;
pub mod rule;

use std::time::Duration;

use cli::{MasterArgs, NodeArgs};
use event::{EventSink, Format};

pub use event::EventStream;
pub use master::{DetectorChoice, Master, MasterConfig};
pub use node::{Departure, Node, NodeConfig};

/// The socket address of a TCP address: every heartbeat endpoint is TCP.
pub(crate) fn tcp_addr(addr: &natter::Addr) -> std::net::SocketAddr {
    addr.socket_addr()
        .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// Why a `heartbeat` program stopped with an error (exit status 1).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Listening or connecting failed in a way that stops the program
    /// (the address is in use, say). Failures of single connections are
    /// logged and survived instead.
    #[error(transparent)]
    Network(#[from] natter::Error),
    /// The master refused this node's token (wrong or missing). The node
    /// gives up. (Other rejections, `id in use` and `node limit`, are
    /// retried.)
    #[error("registration rejected by the master at {master}: {reason}")]
    Rejected {
        /// The master's address as given to `--master`.
        master: String,
        /// The reason the master gave.
        reason: String,
    },
    /// The metrics endpoint could not be served.
    #[error("cannot serve metrics on {addr}: {reason}")]
    Metrics {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why.
        reason: String,
    },
    /// Events could not be written to stdout.
    #[error("cannot write events to stdout")]
    Output(#[source] std::io::Error),
    /// A master's or node's task ended unexpectedly (it panicked).
    #[error("stopped unexpectedly: {0}")]
    Stopped(String),
    /// A [`MasterConfig`] or [`NodeConfig`] that cannot work.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
    /// The demo did not go as it should.
    #[error("the demo failed: {0}")]
    Demo(String),
}

/// How long a stopping program waits for its last events to reach stdout
/// (a blocked stdout must not keep it from exiting).
const OUTPUT_DRAIN: Duration = Duration::from_millis(500);

/// Runs `heartbeat master`: listens for registrations, pings every node
/// each interval and prints master events until SIGINT or SIGTERM.
///
/// Events go to stdout through an [`EventSink`], so a stdout that nobody
/// reads never holds up pinging or registration.
pub async fn run_master(args: MasterArgs) -> Result<(), Error> {
    if let Some(addr) = args.metrics_listen {
        serve_metrics(addr)?;
    }
    let sink = EventSink::stdout(Format::from_json_flag(args.json));
    let mut stop = ShutdownSignal::new();
    let (master, mut events) = Master::start(MasterConfig::from(&args)).await?;
    let printed = print_events(&mut events, &sink, &mut stop).await;
    let stopped = master.shutdown().await;
    drain(&mut events, &sink);
    printed?;
    stopped
}

/// Installs the Prometheus exporter, with its own HTTP listener on `addr`,
/// before the master starts (its handles, and natter's, are taken then).
fn serve_metrics(addr: std::net::SocketAddr) -> Result<(), Error> {
    // The exporter does not say which port it bound: resolve a port 0 first.
    let bound = std::net::TcpListener::bind(addr)
        .and_then(|probe| probe.local_addr())
        .map_err(|source| Error::Metrics {
            addr,
            reason: source.to_string(),
        })?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(natter::stats::DURATION_BUCKETS)
        .and_then(|exporter| exporter.with_http_listener(bound).install())
        .map_err(|error| Error::Metrics {
            addr,
            reason: error.to_string(),
        })?;
    tracing::info!("metrics on http://{bound}/metrics");
    Ok(())
}

/// Runs `heartbeat node`: answers pings, registers with the master (again
/// whenever it lost the master) and prints node events; on SIGINT or
/// SIGTERM tells the master it leaves and returns.
pub async fn run_node(args: NodeArgs) -> Result<(), Error> {
    let sink = EventSink::stdout(Format::from_json_flag(args.json));
    let mut stop = ShutdownSignal::new();
    let (node, mut events) = Node::start(NodeConfig::from(&args)).await?;
    let printed = print_events(&mut events, &sink, &mut stop).await;
    let stopped = match printed {
        // The node stopped by itself: its token was rejected.
        Ok(Ended::Stopped) => node.join().await,
        // Whether the master was told or not, the node stops as asked
        // (it warned on stderr if not).
        Ok(Ended::Signalled) | Err(_) => node.leave().await.map(|_| ()),
    };
    drain(&mut events, &sink);
    printed?;
    stopped
}

/// Runs the demo (`heartbeat` with no arguments): a master and three nodes
/// on loopback; one node is stopped and the master reports it lost.
pub async fn run_demo() -> Result<(), Error> {
    let sink = EventSink::stdout(Format::Sentences);
    let result = demo::run(sink.clone()).await;
    let _ = sink.flush(OUTPUT_DRAIN);
    result
}

/// Prints the events still waiting, and lets the sink write them out for
/// at most [`OUTPUT_DRAIN`].
fn drain<E: event::Event + From<event::EventsDropped>>(
    events: &mut EventStream<E>,
    sink: &EventSink,
) {
    while let Some(event) = events.try_recv() {
        if sink.emit(&event).is_err() {
            return;
        }
    }
    let _ = sink.flush(OUTPUT_DRAIN);
}

/// Why [`print_events`] returned.
enum Ended {
    /// The events ended: the master or node stopped by itself.
    Stopped,
    /// SIGINT or SIGTERM came.
    Signalled,
}

/// Prints `events` through `sink` until they end or `stop` fires.
async fn print_events<E: event::Event + From<event::EventsDropped>>(
    events: &mut EventStream<E>,
    sink: &EventSink,
    stop: &mut ShutdownSignal,
) -> Result<Ended, Error> {
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => sink.emit(&event).map_err(Error::Output)?,
                None => return Ok(Ended::Stopped),
            },
            () = stop.recv() => return Ok(Ended::Signalled),
        }
    }
}

/// SIGINT or SIGTERM, listened for from the moment this is created (so a
/// signal that comes before the first `recv` is not missed).
struct ShutdownSignal {
    #[cfg(unix)]
    signals: Option<[tokio::signal::unix::Signal; 2]>,
}

impl ShutdownSignal {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signals = signal(SignalKind::interrupt())
                .and_then(|interrupt| Ok([interrupt, signal(SignalKind::terminate())?]));
            let signals = signals
                .inspect_err(|error| tracing::warn!(%error, "cannot listen for SIGINT and SIGTERM"))
                .ok();
            ShutdownSignal { signals }
        }
        #[cfg(not(unix))]
        ShutdownSignal {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        match &mut self.signals {
            Some([interrupt, terminate]) => {
                tokio::select! {
                    _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
                    _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
                }
            }
            None => std::future::pending().await,
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The README's example compiles.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_says_rejected() {
        let err = Error::Rejected {
            master: "127.0.0.1:7940".into(),
            reason: "wrong token".into(),
        };
        assert_eq!(
            err.to_string(),
            "registration rejected by the master at 127.0.0.1:7940: wrong token"
        );
    }
}
