//! What the programs report on stdout, and how.
//!
//! Each thing worth telling the user is one typed event, [`MasterEvent`] or
//! [`NodeEvent`], with two renderings: a JSON object for `--json` (field
//! names are part of the command line's promise, since programs read them;
//! see the crate's README) and a sentence for people. An [`EventSink`]
//! writes them to stdout, one per line; stdout carries nothing else (logs
//! go to stderr).
//!
//! Neither the [`EventStream`] nor the [`EventSink`] ever makes the master
//! or node wait for its reader: both are bounded, drop the newest events
//! when full, and say so in place with an [`EventsDropped`] event
//! (`{"event":"events_dropped","count":N}`).
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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Notify;

use crate::detector::{Registration, Transition};
use crate::queue::{Entry, LossyQueue};

/// How many events an [`EventStream`] holds for its reader by default
/// before it drops newer ones.
pub const DEFAULT_EVENT_CAPACITY: usize = 16_384;

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
    /// A registration from `peer` was refused: `wrong token`, `missing
    /// token`, `id in use` or `node limit`.
    RegistrationRejected {
        /// Where the registration came from.
        peer: SocketAddr,
        /// Why, as sent to the node.
        reason: String,
    },
    /// A node lost for `forget_after` was dropped from the master's
    /// table; it may join again as a new node.
    NodeForgotten {
        /// The node's id.
        node: String,
    },
    /// `count` events could not be kept for the reader (it fell behind
    /// by [`MasterConfig::event_capacity`](crate::MasterConfig::event_capacity)
    /// events, or stdout was not taking them) and were dropped here.
    EventsDropped {
        /// How many.
        count: u64,
    },
    /// The pings that finished during the last stats period. Reported
    /// only when asked for ([`MasterConfig::stats_interval`], `heartbeat
    /// master --stats-interval-ms`); off by default.
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
    /// `count` events could not be kept for the reader and were dropped
    /// here; see [`MasterEvent::EventsDropped`].
    EventsDropped {
        /// How many.
        count: u64,
    },
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
            MasterEvent::NodeForgotten { node } => {
                write!(f, "node {node:?} forgotten: lost for too long")
            }
            MasterEvent::EventsDropped { count } => EventsDropped { count: *count }.fmt(f),
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
            NodeEvent::EventsDropped { count } => EventsDropped { count: *count }.fmt(f),
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

/// `count` events were dropped here: what a bounded queue says in place
/// of the events it could not keep. JSON: `{"event":"events_dropped","count":N}`.
///
/// ```
/// use natter_heartbeat::event::{Event, EventsDropped};
///
/// let dropped = EventsDropped { count: 12 };
/// assert_eq!(dropped.to_json(), r#"{"event":"events_dropped","count":12}"#);
/// assert_eq!(dropped.to_string(), "12 events were dropped here: the output could not keep up");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventsDropped {
    /// How many events were dropped.
    pub count: u64,
}

impl fmt::Display for EventsDropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.count;
        let events = if count == 1 {
            "event was"
        } else {
            "events were"
        };
        write!(
            f,
            "{count} {events} dropped here: the output could not keep up"
        )
    }
}

impl Event for EventsDropped {
    fn to_json(&self) -> String {
        format!(r#"{{"event":"events_dropped","count":{}}}"#, self.count)
    }
}

impl From<EventsDropped> for MasterEvent {
    fn from(EventsDropped { count }: EventsDropped) -> Self {
        MasterEvent::EventsDropped { count }
    }
}

impl From<EventsDropped> for NodeEvent {
    fn from(EventsDropped { count }: EventsDropped) -> Self {
        NodeEvent::EventsDropped { count }
    }
}

/// The events of a running [`Master`](crate::Master) or
/// [`Node`](crate::Node), in the order they happened.
///
/// The stream holds a bounded number of events for its reader
/// ([`MasterConfig::event_capacity`](crate::MasterConfig::event_capacity),
/// [`NodeConfig::event_capacity`](crate::NodeConfig::event_capacity);
/// [`DEFAULT_EVENT_CAPACITY`] by default), so that a reader that falls
/// behind, or never reads, costs bounded memory and never slows the master
/// or node down. When it is full, newer events are dropped, and the reader
/// gets one [`EventsDropped`] event (as `MasterEvent::EventsDropped` or
/// `NodeEvent::EventsDropped`) with their count in their place, after the
/// events kept before them. [`recv`](Self::recv) returns `None` once the
/// master or node has stopped and every event was read.
#[derive(Debug)]
pub struct EventStream<E> {
    shared: Arc<StreamShared<E>>,
}

/// The producing side of an [`EventStream`]; clones share it, and the
/// stream ends when the last one is dropped.
#[derive(Debug)]
pub(crate) struct EventSender<E> {
    shared: Arc<StreamShared<E>>,
}

#[derive(Debug)]
struct StreamShared<E> {
    state: Mutex<StreamState<E>>,
    /// Wakes the reader: one permit is kept if it is not waiting yet.
    notify: Notify,
    senders: AtomicUsize,
}

#[derive(Debug)]
struct StreamState<E> {
    queue: LossyQueue<E>,
    /// No sender is left.
    ended: bool,
    /// The stream was dropped: events have nowhere to go.
    unread: bool,
}

/// A bounded event stream holding up to `capacity` events, and its sender.
pub(crate) fn event_stream<E>(capacity: usize) -> (EventSender<E>, EventStream<E>) {
    let shared = Arc::new(StreamShared {
        state: Mutex::new(StreamState {
            queue: LossyQueue::new(capacity, usize::MAX),
            ended: false,
            unread: false,
        }),
        notify: Notify::new(),
        senders: AtomicUsize::new(1),
    });
    (
        EventSender {
            shared: shared.clone(),
        },
        EventStream { shared },
    )
}

impl<E> StreamShared<E> {
    fn state(&self) -> MutexGuard<'_, StreamState<E>> {
        // Only queue operations run under the lock, and they leave the
        // queue consistent even if one panicked midway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<E> EventSender<E> {
    /// Queues `event` for the reader, or drops and counts it if the
    /// stream is full. Never waits.
    pub(crate) fn send(&self, event: E) {
        let mut state = self.shared.state();
        if state.unread {
            return;
        }
        state.queue.push(event, 0);
        drop(state);
        self.shared.notify.notify_one();
    }
}

impl<E> Clone for EventSender<E> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        EventSender {
            shared: self.shared.clone(),
        }
    }
}

impl<E> Drop for EventSender<E> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.state().ended = true;
            self.shared.notify.notify_one();
        }
    }
}

impl<E: From<EventsDropped>> EventStream<E> {
    /// The next event; `None` once the master or node has stopped and
    /// every event was read.
    pub async fn recv(&mut self) -> Option<E> {
        loop {
            {
                let mut state = self.shared.state();
                if let Some(event) = Self::take(&mut state) {
                    return Some(event);
                }
                if state.ended {
                    return None;
                }
            }
            self.shared.notify.notified().await;
        }
    }

    /// The next event if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<E> {
        Self::take(&mut self.shared.state())
    }

    fn take(state: &mut StreamState<E>) -> Option<E> {
        state.queue.pop().map(|entry| match entry {
            Entry::Item(event) => event,
            Entry::Dropped(count) => EventsDropped { count }.into(),
        })
    }
}

impl<E> EventStream<E> {
    /// How many events were dropped so far because the stream was full.
    pub fn dropped(&self) -> u64 {
        self.shared.state().queue.dropped()
    }
}

impl<E> Drop for EventStream<E> {
    fn drop(&mut self) {
        let mut state = self.shared.state();
        state.unread = true;
        while state.queue.pop().is_some() {}
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

/// How many lines an [`EventSink`] holds for its writer, at most: a burst
/// of 2,000 nodes joining and being lost, on top of the 64 KiB a pipe
/// holds. The queue only has to bridge a reader's pauses; a reader that
/// has stopped learns how much it missed.
const SINK_MAX_LINES: usize = 4096;

/// How many bytes of lines an [`EventSink`] holds for its writer, at
/// most: a bound on its memory however long the output is blocked.
const SINK_MAX_BYTES: usize = 1024 * 1024;

/// Writes events, one per line, from a thread of its own, so that
/// emitting never waits for the output.
///
/// [`emit`](Self::emit) renders the event and queues the line; a
/// dedicated thread writes queued lines in batches and flushes after each
/// batch. A full pipe on stdout (a reader that stopped reading) blocks
/// only that thread: the queue fills up to 4,096 lines or 1 MiB, then newer
/// events are dropped and counted, and once the output takes lines again
/// the sink writes one [`EventsDropped`] line with the count, after the
/// lines queued before the loss and before newer ones.
///
/// Clones share the queue and the thread, so tasks can each hold one, and
/// lines never interleave. When writing fails (stdout closed, say), the
/// error is returned by the next `emit`, and the caller decides whether
/// the program can go on.
///
/// ```
/// use std::time::Duration;
/// use natter_heartbeat::event::{EventSink, Format, NodeEvent};
///
/// let sink = EventSink::stdout(Format::Json);
/// sink.emit(&NodeEvent::MasterLost)?; // prints {"event":"master_lost"}
/// sink.flush(Duration::from_secs(1))?; // before exiting
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct EventSink {
    shared: Arc<SinkShared>,
    format: Format,
    /// Shared by the clones only (the writer thread holds `shared`): when
    /// the last clone goes, the writer finishes the queue and stops.
    _closer: Arc<WriterHandle>,
}

#[derive(Debug)]
struct SinkShared {
    state: Mutex<SinkState>,
    /// The writer waits here for lines.
    lines: Condvar,
    /// [`EventSink::flush`] waits here for the writer.
    written: Condvar,
}

#[derive(Debug)]
struct SinkState {
    queue: LossyQueue<String>,
    /// Lines queued so far (not counting those dropped).
    queued: u64,
    /// Lines written so far.
    written: u64,
    /// No sink is left: the writer finishes the queue and stops.
    closed: bool,
    /// Writing failed: what to tell the next `emit`.
    failed: Option<(io::ErrorKind, String)>,
}

/// Closes the queue when the last clone of a sink is dropped.
#[derive(Debug)]
struct WriterHandle(Arc<SinkShared>);

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.0.state().closed = true;
        self.0.lines.notify_one();
    }
}

impl SinkShared {
    fn state(&self) -> MutexGuard<'_, SinkState> {
        // Queue operations cannot be left half done by a panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl EventSink {
    /// A sink that writes to the process's stdout.
    pub fn stdout(format: Format) -> Self {
        EventSink::new(io::stdout(), format)
    }

    /// A sink that writes to `out` in `format`, from a thread it starts.
    pub fn new<W: Write + Send + 'static>(out: W, format: Format) -> Self {
        EventSink::with_limits(out, format, SINK_MAX_LINES, SINK_MAX_BYTES)
    }

    fn with_limits<W: Write + Send + 'static>(
        out: W,
        format: Format,
        max_lines: usize,
        max_bytes: usize,
    ) -> Self {
        let shared = Arc::new(SinkShared {
            state: Mutex::new(SinkState {
                queue: LossyQueue::new(max_lines, max_bytes),
                queued: 0,
                written: 0,
                closed: false,
                failed: None,
            }),
            lines: Condvar::new(),
            written: Condvar::new(),
        });
        let writer = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("event-writer".into())
            .spawn(move || write_lines(&writer, out, format));
        if let Err(error) = spawned {
            shared.state().failed = Some((error.kind(), error.to_string()));
        }
        EventSink {
            _closer: Arc::new(WriterHandle(shared.clone())),
            shared,
            format,
        }
    }

    /// The format this sink writes.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Queues `event` as one line; never waits. If the queue is full the
    /// event is dropped and counted (see [`EventSink`]). Fails only if
    /// writing has failed before.
    pub fn emit(&self, event: &impl Event) -> io::Result<()> {
        let line = self.format.render(event);
        let mut state = self.shared.state();
        if let Some((kind, message)) = &state.failed {
            return Err(io::Error::new(*kind, message.clone()));
        }
        let len = line.len() + 1;
        if state.queue.push(line, len) {
            state.queued += 1;
        }
        drop(state);
        self.shared.lines.notify_one();
        Ok(())
    }

    /// Waits until every line queued so far is written, or `within` has
    /// passed (the output may be blocked): `Ok(true)` if written,
    /// `Ok(false)` if not in time, an error if writing failed.
    pub fn flush(&self, within: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + within;
        let mut state = self.shared.state();
        let target = state.queued;
        loop {
            if let Some((kind, message)) = &state.failed {
                return Err(io::Error::new(*kind, message.clone()));
            }
            if state.written >= target {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            state = self
                .shared
                .written
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// How many events were dropped so far because the output was not
    /// taking them.
    pub fn dropped(&self) -> u64 {
        self.shared.state().queue.dropped()
    }
}

/// The writer thread: takes whatever is queued, writes it in one go and
/// flushes, until the sinks are gone and the queue is empty, or writing
/// fails.
fn write_lines<W: Write>(shared: &SinkShared, mut out: W, format: Format) {
    let mut batch = String::new();
    loop {
        let mut state = shared.state();
        while state.queue.is_empty() && !state.closed {
            state = shared
                .lines
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.queue.is_empty() {
            return;
        }
        batch.clear();
        let mut lines = 0;
        while let Some(entry) = state.queue.pop() {
            match entry {
                Entry::Item(line) => {
                    lines += 1;
                    batch.push_str(&line);
                }
                Entry::Dropped(count) => batch.push_str(&format.render(&EventsDropped { count })),
            }
            batch.push('\n');
        }
        drop(state);
        let result = out.write_all(batch.as_bytes()).and_then(|()| out.flush());
        let mut state = shared.state();
        match result {
            Ok(()) => state.written += lines,
            Err(error) => state.failed = Some((error.kind(), error.to_string())),
        }
        let failed = state.failed.is_some();
        drop(state);
        shared.written.notify_all();
        if failed {
            return;
        }
        // Keep a big batch's buffer from staying allocated for good.
        if batch.capacity() > 64 * 1024 {
            batch = String::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Each event with its exact JSON line (as the README documents it)
    /// and its sentence.
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
            (
                MasterEvent::NodeForgotten { node: "n1".into() },
                r#"{"event":"node_forgotten","node":"n1"}"#,
                r#"node "n1" forgotten: lost for too long"#,
            ),
            (
                MasterEvent::EventsDropped { count: 42 },
                r#"{"event":"events_dropped","count":42}"#,
                "42 events were dropped here: the output could not keep up",
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
            (
                NodeEvent::EventsDropped { count: 1 },
                r#"{"event":"events_dropped","count":1}"#,
                "1 event was dropped here: the output could not keep up",
            ),
        ]
    }

    #[test]
    fn master_events_render_as_documented() {
        for (event, json, sentence) in master_events() {
            assert_eq!(event.to_json(), json);
            assert_eq!(event.to_string(), sentence);
        }
    }

    #[test]
    fn node_events_render_as_documented() {
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

    /// A writer that records what was written; clones share the record.
    /// While `blocked`, writes wait, as on a full pipe nobody reads.
    #[derive(Clone, Default)]
    struct Recorder {
        written: Arc<Mutex<Vec<u8>>>,
        blocked: Arc<(Mutex<bool>, Condvar)>,
    }

    impl Recorder {
        fn text(&self) -> String {
            String::from_utf8(self.written.lock().unwrap().clone()).unwrap()
        }

        fn block(&self, blocked: bool) {
            *self.blocked.0.lock().unwrap() = blocked;
            self.blocked.1.notify_all();
        }
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (lock, unblocked) = &*self.blocked;
            let guard = lock.lock().unwrap();
            drop(unblocked.wait_while(guard, |blocked| *blocked).unwrap());
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_sink_writes_one_line_per_event_in_order() {
        let out = Recorder::default();
        let sink = EventSink::new(out.clone(), Format::Json);
        let other_task = sink.clone();
        sink.emit(&NodeEvent::Listening {
            addr: addr("127.0.0.1:4000"),
        })
        .unwrap();
        other_task.emit(&NodeEvent::MasterLost).unwrap();
        assert!(sink.flush(SECOND * 5).unwrap());
        assert_eq!(
            out.text(),
            "{\"event\":\"listening\",\"addr\":\"127.0.0.1:4000\"}\n{\"event\":\"master_lost\"}\n"
        );
    }

    #[test]
    fn a_sink_writes_sentences_without_json() {
        let out = Recorder::default();
        let sink = EventSink::new(out.clone(), Format::from_json_flag(false));
        sink.emit(&MasterEvent::NodeLeft { node: "n1".into() })
            .unwrap();
        assert!(sink.flush(SECOND * 5).unwrap());
        assert_eq!(out.text(), "node \"n1\" left\n");
    }

    #[test]
    fn a_write_error_is_returned_by_the_next_emit() {
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
        sink.emit(&NodeEvent::MasterLost).unwrap();
        let err = sink.flush(SECOND * 5).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        let err = sink.emit(&NodeEvent::MasterLost).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    fn left(i: usize) -> MasterEvent {
        MasterEvent::NodeLeft {
            node: format!("n{i}"),
        }
    }

    #[test]
    fn a_blocked_output_never_blocks_emit_and_the_loss_is_told_in_place() {
        let out = Recorder::default();
        out.block(true);
        let sink = EventSink::with_limits(out.clone(), Format::Json, 10, usize::MAX);
        // The writer takes the first line and blocks on it; 10 more wait
        // in the queue; the rest are dropped. None of it waits.
        let started = Instant::now();
        for i in 0..1000 {
            sink.emit(&left(i)).unwrap();
            if i == 0 {
                // Let the writer take the first line before going on.
                while !sink.shared.state().queue.is_empty() {
                    std::thread::yield_now();
                }
            }
        }
        assert!(started.elapsed() < SECOND, "{:?}", started.elapsed());
        assert_eq!(sink.dropped(), 989);
        assert!(!sink.flush(Duration::from_millis(50)).unwrap(), "blocked");
        out.block(false);
        assert!(sink.flush(SECOND * 5).unwrap());
        sink.emit(&left(1000)).unwrap();
        assert!(sink.flush(SECOND * 5).unwrap());
        let expected: Vec<String> = (0..=10)
            .map(|i| left(i).to_json())
            .chain([
                r#"{"event":"events_dropped","count":989}"#.to_owned(),
                left(1000).to_json(),
            ])
            .collect();
        assert_eq!(out.text().lines().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn the_loss_is_told_once_output_flows_even_without_newer_events() {
        let out = Recorder::default();
        out.block(true);
        let sink = EventSink::with_limits(out.clone(), Format::Sentences, 2, usize::MAX);
        for i in 0..10 {
            sink.emit(&left(i)).unwrap();
        }
        out.block(false);
        assert!(sink.flush(SECOND * 5).unwrap());
        let deadline = Instant::now() + SECOND * 5;
        while !out.text().contains("dropped") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let text = out.text();
        let last = text.lines().last().unwrap();
        assert!(
            last.ends_with("events were dropped here: the output could not keep up"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_full_stream_drops_newer_events_and_says_how_many_in_place() {
        let (sender, mut events) = event_stream(3);
        for i in 0..10 {
            sender.send(left(i));
        }
        assert_eq!(events.dropped(), 7);
        assert_eq!(events.recv().await, Some(left(0)));
        sender.send(left(10));
        drop(sender);
        let rest: Vec<MasterEvent> = std::iter::from_fn(|| events.try_recv()).collect();
        assert_eq!(
            rest,
            [
                left(1),
                left(2),
                MasterEvent::EventsDropped { count: 7 },
                left(10)
            ]
        );
        assert_eq!(events.recv().await, None, "ended with the last sender");
    }

    #[tokio::test]
    async fn a_stream_ends_when_every_sender_is_gone() {
        let (sender, mut events) = event_stream::<NodeEvent>(8);
        let other = sender.clone();
        sender.send(NodeEvent::MasterLost);
        drop(sender);
        let reader = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(event) = events.recv().await {
                seen.push(event);
            }
            seen
        });
        tokio::task::yield_now().await;
        other.send(NodeEvent::EventsDropped { count: 1 });
        drop(other);
        let seen = tokio::time::timeout(SECOND * 5, reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            seen,
            [NodeEvent::MasterLost, NodeEvent::EventsDropped { count: 1 }]
        );
    }
}
