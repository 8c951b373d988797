//! The demo (`heartbeat` with no arguments): a master and three nodes in
//! this process, on free loopback ports. One node is stopped abruptly and
//! the master reports it lost; the other two leave politely and the master
//! reports them left. Everything is narrated in sentences on stdout.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;

use crate::event::{Event, EventSink, EventStream, MasterEvent};
use crate::{Error, Master, MasterConfig, Node, NodeConfig};

/// The master pings this often, and allows each ping as long.
const INTERVAL: Duration = Duration::from_millis(250);

/// The nodes, in the order they start; the last one is stopped abruptly.
const NODES: [&str; 3] = ["n1", "n2", "n3"];

/// Runs the demo, writing to `sink`. Fails if the master does not report
/// what it should in time.
pub(crate) async fn run(sink: EventSink) -> Result<(), Error> {
    let started = Instant::now();
    let say = |text: String| sink.emit(&Narration(text)).map_err(Error::Output);
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let config = MasterConfig {
        interval: INTERVAL,
        ping_timeout: INTERVAL,
        ..MasterConfig::new(loopback)
    };
    say(format!(
        "Demo: a master and three nodes on loopback. The master pings every node every {} ms \
         and calls a node lost after {} unanswered pings in a row.",
        INTERVAL.as_millis(),
        config.failures
    ))?;

    let (master, events) = Master::start(config).await?;
    let mut master_events = Narrator {
        events,
        sink: sink.clone(),
    };
    master_events
        .until("the master listening", Duration::from_secs(1), |event| {
            matches!(event, MasterEvent::Listening { .. })
        })
        .await?;

    let mut nodes = Vec::new();
    let mut narrations = Vec::new();
    for id in NODES {
        let config = NodeConfig {
            listen: loopback,
            ..NodeConfig::new(id, master.local_addr().to_string())
        };
        let (node, mut events) = Node::start(config).await?;
        let sink = sink.clone();
        narrations.push(tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                sink.emit(&Narration(format!("{id}: {event}")))?;
            }
            Ok::<(), std::io::Error>(())
        }));
        nodes.push(node);
    }
    let mut joined = BTreeSet::new();
    master_events
        .until("all three nodes joining", Duration::from_secs(5), |event| {
            if let MasterEvent::NodeJoined { node, .. } = event {
                joined.insert(node.clone());
            }
            joined.len() == NODES.len()
        })
        .await?;
    // Let a few rounds of pings pass (and every node hear its own
    // registration answered) before saying so.
    master_events.for_a_while(INTERVAL * 4).await?;
    say("All three nodes joined and answer every ping.".into())?;

    let lost = NODES[2];
    say(format!(
        "Stopping {lost} abruptly, as if its machine had died: it says no goodbye."
    ))?;
    let stopped = Instant::now();
    nodes.pop().expect("three nodes").abort();
    master_events
        .until(
            &format!("{lost} being lost"),
            Duration::from_secs(5),
            |event| matches!(event, MasterEvent::NodeLost { node } if node == lost),
        )
        .await?;
    say(format!(
        "The master noticed: {lost} lost {} ms after it stopped.",
        stopped.elapsed().as_millis()
    ))?;

    say("Stopping n1 and n2 politely: each tells the master it leaves.".into())?;
    for node in nodes {
        if let crate::Departure::Untold { reason } = node.leave().await? {
            say(format!(
                "A node could not tell the master it leaves: {reason}."
            ))?;
        }
    }
    let mut left = BTreeSet::new();
    master_events
        .until("n1 and n2 leaving", Duration::from_secs(3), |event| {
            if let MasterEvent::NodeLeft { node } = event {
                left.insert(node.clone());
            }
            left.len() == 2
        })
        .await?;
    master.shutdown().await?;
    for narration in narrations {
        narration
            .await
            .map_err(|join| Error::Stopped(join.to_string()))?
            .map_err(Error::Output)?;
    }
    say(format!(
        "Demo finished in {:.1} s.",
        started.elapsed().as_secs_f64()
    ))
}

/// Tells the master's events as they come.
struct Narrator {
    events: EventStream<MasterEvent>,
    sink: EventSink,
}

impl Narrator {
    /// Narrates events until one makes `done` true. Fails if that takes
    /// longer than `within` (saying that `what` did not happen) or the
    /// master stops.
    async fn until(
        &mut self,
        what: &str,
        within: Duration,
        mut done: impl FnMut(&MasterEvent) -> bool,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + within;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .map_err(|_| Error::Demo(format!("no sign of {what} within {within:?}")))?
                .ok_or_else(|| Error::Demo(format!("the master stopped before {what}")))?;
            self.tell(&event)?;
            if done(&event) {
                return Ok(());
            }
        }
    }

    /// Narrates whatever happens during `duration`.
    async fn for_a_while(&mut self, duration: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + duration;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            self.tell(&event)?;
        }
        Ok(())
    }

    fn tell(&self, event: &MasterEvent) -> Result<(), Error> {
        self.sink
            .emit(&Narration(format!("master: {event}")))
            .map_err(Error::Output)
    }
}

/// A line of the demo's story.
struct Narration(String);

impl fmt::Display for Narration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Event for Narration {
    fn to_json(&self) -> String {
        serde_json::json!({ "event": "narration", "text": self.0 }).to_string()
    }
}
