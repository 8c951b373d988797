//! What the programs report on stdout, and how.
//!
//! Each thing worth telling the user is one typed event, [`MasterEvent`] or
//! [`NodeEvent`], with two renderings: a JSON object for `--json` (field
//! names fixed by CONTRACT.md section 2, since black-box tests read them)
//! and a sentence for people. An [`EventSink`] writes them to stdout, one
//! per line, flushed at once; stdout carries nothing else (logs go to
//! stderr).
//!
//! ```
//! use natter_heartbeat::event::{Event, MasterEvent};
//!
//! let joined = MasterEvent::NodeJoined {
//!     node: "n1".into(),
//!     addr: "127.0.0.1:4000".parse().unwrap(),
//! };
//! assert_eq!(joined.to_json(), r#"{"event":"node_joined","node":"n1","addr":"127.0.0.1:4000"}"#);
//! assert_eq!(joined.to_string(), r#"node "n1" joined from 127.0.0.1:4000"#);
//! ```

use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::detector::{Registration, Transition};

/// Something a program reports: a JSON line with `--json`, else a sentence.
///
/// Both renderings are a single line (no newline inside), so that one event
/// is always exactly one line of output.
pub trait Event: fmt::Display {
    /// The event as one compact JSON object with a string field `event`.
    fn to_json(&self) -> String;
}

/// What the master reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum MasterEvent {
    /// The registration port is open at `addr` (the real bound address).
    Listening {
        /// The bound address.
        addr: SocketAddr,
    },
    /// A node registered (for the first time, or again while live), and
    /// will be pinged at `addr`.
    NodeJoined {
        /// The node's id.
        node: String,
        /// Its heartbeat address.
        addr: SocketAddr,
    },
    /// A live node failed `failures` pings in a row.
    NodeLost {
        /// The node's id.
        node: String,
    },
    /// A lost node answered a ping or registered again.
    NodeRecovered {
        /// The node's id.
        node: String,
    },
    /// A node said it was leaving.
    NodeLeft {
        /// The node's id.
        node: String,
    },
    /// A registration from `peer` was refused (wrong or missing token).
    RegistrationRejected {
        /// Where the registration came from.
        peer: SocketAddr,
        /// Why, as sent to the node.
        reason: String,
    },
    /// The pings that finished during the last stats period. Reported
    /// only when asked for ([`MasterConfig::stats_interval`], `heartbeat
    /// master --stats-interval-ms`); off by default, so the output of
    /// CONTRACT.md section 2 is unchanged.
    ///
    /// [`MasterConfig::stats_interval`]: crate::MasterConfig::stats_interval
    PingStats {
        /// Pings answered in time by a pong with their `seq`.
        answered: u64,
        /// Pings that failed: timed out, refused, or answered wrongly.
        failed: u64,
        /// The round trip of each answered ping in microseconds, as the
        /// master measured it (sending, and dialling if the connection
        /// had to be made, until the pong was read), in the order they
        /// finished.
        rtt_us: Vec<u64>,
    },
}

impl MasterEvent {
    /// The event for an accepted registration of node `node` at heartbeat
    /// address `addr`, as classified by
    /// [`Detector::registered`](crate::detector::Detector::registered).
    pub fn registration(node: String, addr: SocketAddr, registration: Registration) -> Self {
        match registration {
            Registration::Joined | Registration::Rejoined => MasterEvent::NodeJoined { node, addr },
            Registration::Recovered => MasterEvent::NodeRecovered { node },
        }
    }

    /// The event for a [`Transition`] of node `node`, as returned by the
    /// [`Detector`](crate::detector::Detector).
    pub fn transition(node: String, transition: Transition) -> Self {
        match transition {
            Transition::Lost => MasterEvent::NodeLost { node },
            Transition::Recovered => MasterEvent::NodeRecovered { node },
            Transition::Left => MasterEvent::NodeLeft { node },
        }
    }
}

/// What a node reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum NodeEvent {
    /// The node's heartbeat listener is open at `addr` (the real bound
    /// address, which is also what it registers with).
    Listening {
        /// The bound address.
        addr: SocketAddr,
    },
    /// The master accepted the node's registration.
    Registered {
        /// The master's address exactly as given to `--master`.
        master: String,
    },
    /// Nothing was heard from the master for `--master-timeout-ms`.
    MasterLost,
}

// Sentences quote ids with `{:?}` and escape other peer-supplied text, so a
// newline or quote sent by a peer can never break the one-event-per-line
// rule or forge a second line.

impl fmt::Display for MasterEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MasterEvent::Listening { addr } => {
                write!(f, "master listening for registrations on {addr}")
            }
            MasterEvent::NodeJoined { node, addr } => write!(f, "node {node:?} joined from {addr}"),
            MasterEvent::NodeLost { node } => write!(f, "node {node:?} lost"),
            MasterEvent::NodeRecovered { node } => write!(f, "node {node:?} recovered"),
            MasterEvent::NodeLeft { node } => write!(f, "node {node:?} left"),
            MasterEvent::RegistrationRejected { peer, reason } => {
                write!(
                    f,
                    "registration from {peer} rejected: {}",
                    reason.escape_debug()
                )
            }
            MasterEvent::PingStats {
                answered,
                failed,
                rtt_us,
            } => {
                write!(f, "pings since the last report: {answered} answered")?;
                let mut sorted = rtt_us.clone();
                sorted.sort_unstable();
                if let (Some(median), Some(max)) = (sorted.get(sorted.len() / 2), sorted.last()) {
                    write!(f, " (round trip median {median} µs, max {max} µs)")?;
                }
                write!(f, ", {failed} failed")
            }
        }
    }
}

impl fmt::Display for NodeEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeEvent::Listening { addr } => write!(f, "node listening for pings on {addr}"),
            NodeEvent::Registered { master } => {
                write!(f, "registered with the master at {}", master.escape_debug())
            }
            NodeEvent::MasterLost => f.write_str("lost the master: it has been silent too long"),
        }
    }
}

impl Event for MasterEvent {
    fn to_json(&self) -> String {
        to_json(self)
    }
}

impl Event for NodeEvent {
    fn to_json(&self) -> String {
        to_json(self)
    }
}

fn to_json(event: &impl Serialize) -> String {
    // Events hold only strings, numbers and socket addresses, which
    // serde_json always serializes; an error here would be a bug in the
    // event types.
    serde_json::to_string(event).expect("events always serialize to JSON")
}

/// The events of a running [`Master`](crate::Master) or
/// [`Node`](crate::Node), in the order they happened.
///
/// Events wait here until read, however many (they are rare: a few per
/// node joining, failing or leaving, and one per stats period if asked
/// for), so a slow reader loses none and never slows the master or node
/// down. [`recv`](Self::recv) returns
/// `None` once the master or node has stopped and every event was read.
#[derive(Debug)]
pub struct EventStream<E> {
    receiver: mpsc::UnboundedReceiver<E>,
}

impl<E> EventStream<E> {
    pub(crate) fn new(receiver: mpsc::UnboundedReceiver<E>) -> Self {
        EventStream { receiver }
    }

    /// The next event; `None` once the master or node has stopped and
    /// every event was read.
    pub async fn recv(&mut self) -> Option<E> {
        self.receiver.recv().await
    }

    /// The next event if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<E> {
        self.receiver.try_recv().ok()
    }
}

/// How events are written: the `--json` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// Plain sentences, for people (the default).
    #[default]
    Sentences,
    /// One JSON object per line, for programs (`--json`).
    Json,
}

impl Format {
    /// [`Format::Json`] if `json` (the `--json` flag), else sentences.
    pub fn from_json_flag(json: bool) -> Format {
        if json {
            Format::Json
        } else {
            Format::Sentences
        }
    }

    /// `event` in this format, without a line ending.
    pub fn render(self, event: &impl Event) -> String {
        match self {
            Format::Sentences => event.to_string(),
            Format::Json => event.to_json(),
        }
    }
}

/// Writes events, one per line, each flushed as soon as it is written.
///
/// Clones share the writer and take turns line by line, so tasks can each
/// hold one and lines never interleave. Writes are blocking and short; an
/// error (stdout closed, say) is returned to the caller, who decides
/// whether the program can go on.
///
/// ```
/// use natter_heartbeat::event::{EventSink, Format, NodeEvent};
///
/// let sink = EventSink::stdout(Format::Json);
/// sink.emit(&NodeEvent::MasterLost)?; // prints {"event":"master_lost"}
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct EventSink<W = io::Stdout> {
    out: Arc<Mutex<W>>,
    format: Format,
}

impl EventSink<io::Stdout> {
    /// A sink that writes to the process's stdout.
    pub fn stdout(format: Format) -> Self {
        EventSink::new(io::stdout(), format)
    }
}

impl<W: Write> EventSink<W> {
    /// A sink that writes to `out` in `format`.
    pub fn new(out: W, format: Format) -> Self {
        EventSink {
            out: Arc::new(Mutex::new(out)),
            format,
        }
    }

    /// The format this sink writes.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Writes `event` as one line and flushes it.
    pub fn emit(&self, event: &impl Event) -> io::Result<()> {
        let mut line = self.format.render(event);
        line.push('\n');
        // A panic while another clone held the lock cannot have left a
        // partial line behind (the line goes out in one write_all), so the
        // writer is still usable.
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        out.write_all(line.as_bytes())?;
        out.flush()
    }
}

impl<W> Clone for EventSink<W> {
    fn clone(&self) -> Self {
        EventSink {
            out: Arc::clone(&self.out),
            format: self.format,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Each event with its exact JSON line (CONTRACT.md section 2) and its
    /// sentence.
    fn master_events() -> Vec<(MasterEvent, &'static str, &'static str)> {
        vec![
            (
                MasterEvent::Listening {
                    addr: addr("127.0.0.1:7940"),
                },
                r#"{"event":"listening","addr":"127.0.0.1:7940"}"#,
                "master listening for registrations on 127.0.0.1:7940",
            ),
            (
                MasterEvent::NodeJoined {
                    node: "n1".into(),
                    addr: addr("127.0.0.1:4000"),
                },
                r#"{"event":"node_joined","node":"n1","addr":"127.0.0.1:4000"}"#,
                r#"node "n1" joined from 127.0.0.1:4000"#,
            ),
            (
                MasterEvent::NodeLost { node: "n1".into() },
                r#"{"event":"node_lost","node":"n1"}"#,
                r#"node "n1" lost"#,
            ),
            (
                MasterEvent::NodeRecovered { node: "n1".into() },
                r#"{"event":"node_recovered","node":"n1"}"#,
                r#"node "n1" recovered"#,
            ),
            (
                MasterEvent::NodeLeft { node: "n1".into() },
                r#"{"event":"node_left","node":"n1"}"#,
                r#"node "n1" left"#,
            ),
            (
                MasterEvent::RegistrationRejected {
                    peer: addr("127.0.0.1:51000"),
                    reason: "wrong token".into(),
                },
                r#"{"event":"registration_rejected","peer":"127.0.0.1:51000","reason":"wrong token"}"#,
                "registration from 127.0.0.1:51000 rejected: wrong token",
            ),
        ]
    }

    fn node_events() -> Vec<(NodeEvent, &'static str, &'static str)> {
        vec![
            (
                NodeEvent::Listening {
                    addr: addr("127.0.0.1:4000"),
                },
                r#"{"event":"listening","addr":"127.0.0.1:4000"}"#,
                "node listening for pings on 127.0.0.1:4000",
            ),
            (
                NodeEvent::Registered {
                    master: "localhost:7940".into(),
                },
                r#"{"event":"registered","master":"localhost:7940"}"#,
                "registered with the master at localhost:7940",
            ),
            (
                NodeEvent::MasterLost,
                r#"{"event":"master_lost"}"#,
                "lost the master: it has been silent too long",
            ),
        ]
    }

    #[test]
    fn master_events_render_as_in_the_contract() {
        for (event, json, sentence) in master_events() {
            assert_eq!(event.to_json(), json);
            assert_eq!(event.to_string(), sentence);
        }
    }

    #[test]
    fn node_events_render_as_in_the_contract() {
        for (event, json, sentence) in node_events() {
            assert_eq!(event.to_json(), json);
            assert_eq!(event.to_string(), sentence);
        }
    }

    #[test]
    fn every_json_event_is_an_object_with_a_string_field_event() {
        let lines = master_events()
            .into_iter()
            .map(|(event, ..)| event.to_json())
            .chain(node_events().into_iter().map(|(event, ..)| event.to_json()));
        for line in lines {
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert!(value["event"].is_string(), "{line}");
        }
    }

    #[test]
    fn ping_stats_render_as_one_line() {
        let stats = MasterEvent::PingStats {
            answered: 3,
            failed: 1,
            rtt_us: vec![250, 90, 120],
        };
        assert_eq!(
            stats.to_json(),
            r#"{"event":"ping_stats","answered":3,"failed":1,"rtt_us":[250,90,120]}"#
        );
        assert_eq!(
            stats.to_string(),
            "pings since the last report: 3 answered (round trip median 120 µs, max 250 µs), 1 failed"
        );
        let none_answered = MasterEvent::PingStats {
            answered: 0,
            failed: 2,
            rtt_us: vec![],
        };
        assert_eq!(
            none_answered.to_string(),
            "pings since the last report: 0 answered, 2 failed"
        );
    }

    #[test]
    fn ipv6_addresses_are_written_with_brackets() {
        let event = MasterEvent::Listening {
            addr: addr("[::1]:7940"),
        };
        assert_eq!(
            event.to_json(),
            r#"{"event":"listening","addr":"[::1]:7940"}"#
        );
    }

    #[test]
    fn text_from_peers_cannot_break_a_line() {
        let node = "evil\n{\"event\":\"node_lost\",\"node\":\"n1\"}".to_owned();
        let events = [
            MasterEvent::NodeJoined {
                node: node.clone(),
                addr: addr("127.0.0.1:4000"),
            },
            MasterEvent::NodeLost { node: node.clone() },
            MasterEvent::NodeRecovered { node: node.clone() },
            MasterEvent::NodeLeft { node: node.clone() },
            MasterEvent::RegistrationRejected {
                peer: addr("127.0.0.1:4000"),
                reason: node.clone(),
            },
        ];
        for event in &events {
            for format in [Format::Json, Format::Sentences] {
                let line = format.render(event);
                assert!(!line.contains(['\n', '\r']), "{format:?}: {line}");
            }
        }
        assert_eq!(
            events[1].to_string(),
            r#"node "evil\n{\"event\":\"node_lost\",\"node\":\"n1\"}" lost"#
        );
        let registered = NodeEvent::Registered {
            master: "a\nb:1".into(),
        };
        assert_eq!(
            registered.to_string(),
            r"registered with the master at a\nb:1"
        );
    }

    #[test]
    fn detector_results_map_to_events() {
        let a = addr("127.0.0.1:4000");
        let n1 = || "n1".to_owned();
        let table = [
            (
                MasterEvent::registration(n1(), a, Registration::Joined),
                MasterEvent::NodeJoined {
                    node: n1(),
                    addr: a,
                },
            ),
            (
                MasterEvent::registration(n1(), a, Registration::Rejoined),
                MasterEvent::NodeJoined {
                    node: n1(),
                    addr: a,
                },
            ),
            (
                MasterEvent::registration(n1(), a, Registration::Recovered),
                MasterEvent::NodeRecovered { node: n1() },
            ),
            (
                MasterEvent::transition(n1(), Transition::Lost),
                MasterEvent::NodeLost { node: n1() },
            ),
            (
                MasterEvent::transition(n1(), Transition::Recovered),
                MasterEvent::NodeRecovered { node: n1() },
            ),
            (
                MasterEvent::transition(n1(), Transition::Left),
                MasterEvent::NodeLeft { node: n1() },
            ),
        ];
        for (got, want) in table {
            assert_eq!(got, want);
        }
    }

    /// A writer that records what was written and how often it was flushed.
    #[derive(Default)]
    struct Recorder {
        written: Vec<u8>,
        flushed_at: Vec<usize>,
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            self.flushed_at.push(self.written.len());
            Ok(())
        }
    }

    #[test]
    fn a_sink_writes_one_flushed_line_per_event() {
        let sink = EventSink::new(Recorder::default(), Format::Json);
        let other_task = sink.clone();
        sink.emit(&NodeEvent::Listening {
            addr: addr("127.0.0.1:4000"),
        })
        .unwrap();
        other_task.emit(&NodeEvent::MasterLost).unwrap();

        let out = sink.out.lock().unwrap();
        let text = std::str::from_utf8(&out.written).unwrap();
        assert_eq!(
            text,
            "{\"event\":\"listening\",\"addr\":\"127.0.0.1:4000\"}\n{\"event\":\"master_lost\"}\n"
        );
        let first_line_end = text.find('\n').unwrap() + 1;
        assert_eq!(out.flushed_at, [first_line_end, text.len()]);
    }

    #[test]
    fn a_sink_writes_sentences_without_json() {
        let sink = EventSink::new(Recorder::default(), Format::from_json_flag(false));
        sink.emit(&MasterEvent::NodeLeft { node: "n1".into() })
            .unwrap();
        assert_eq!(sink.out.lock().unwrap().written, b"node \"n1\" left\n");
    }

    #[test]
    fn a_write_error_is_returned() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let sink = EventSink::new(Closed, Format::Json);
        let err = sink.emit(&NodeEvent::MasterLost).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
