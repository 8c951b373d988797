//! What a server or client has done, in numbers: a [`Stats`] snapshot for
//! anyone, and the same numbers through the [`metrics`] facade for a
//! dashboard (the `metrics` feature, on by default).
//!
//! Every connection of a server (or client) counts into one set of
//! counters. The driver tallies frames and bytes as it goes and adds them
//! up once per batch, so counting costs a few atomic additions per batch
//! of frames, not per frame; errors, connections and closes are counted
//! where they are reported as [`Event`](crate::Event)s.
//!
//! # Metrics
//!
//! natter records through the `metrics` facade and leaves the choice of
//! exporter to the application (Prometheus, StatsD, OpenTelemetry...). Its
//! handles are taken when a server is bound or a client connects, from the
//! recorder installed then: install yours first. Without one, nothing is
//! recorded and the handles cost a branch.
//!
//! | series | type | labels | meaning |
//! |---|---|---|---|
//! | `natter_connections_accepted_total` | counter | | connections accepted (server) or established (client) |
//! | `natter_connections_open` | gauge | | connections open now |
//! | `natter_connections_refused_total` | counter | | connections closed at once for the connection limit |
//! | `natter_connections_closed_total` | counter | `reason`: `peer`, `local`, `shutdown`, `cut`, `error` | connections closed, by why |
//! | `natter_frames_read_total` | counter | | frames decoded |
//! | `natter_frames_written_total` | counter | | frames encoded for the peer (replies, hook replies, [`Conn::send`](crate::Conn::send)) |
//! | `natter_bytes_read_total` | counter | | bytes read from the stream |
//! | `natter_bytes_written_total` | counter | | bytes written to the stream |
//! | `natter_errors_total` | counter | `kind`: [`Error::kind`] | errors reported |
//! | `natter_handler_duration_seconds` | histogram | | how long each handler that did not answer at once took (from its first `Pending`); a handler whose future is ready at once takes no measurable time and is not recorded (`natter_frames_read_total` counts every frame) |
//! | `natter_client_requests_in_flight` | gauge | | [`ClientService`](crate::ClientService) requests sent and not answered |
//! | `natter_client_reconnects_total` | counter | | redials of a `ClientService` |
//! | `natter_client_request_duration_seconds` | histogram | | from a request's send (the connection taking it to write) to its answer (the connection reading it); the clock is read once per batch of requests or answers, not per request |
//!
//! Every series also carries `server="NAME"` (or `client="NAME"`) when the
//! builder was given a [`name`](crate::ServerBuilder::name), so that two
//! servers in one process are told apart. Labels never carry a peer
//! address: their number stays small whatever the peers do.
//!
//! ```no_run
//! // The application picks the exporter, before building servers.
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! metrics_exporter_prometheus::PrometheusBuilder::new()
//!     .set_buckets(natter::stats::DURATION_BUCKETS)? // histograms, not summaries
//!     .with_http_listener(([127, 0, 0, 1], 9000))
//!     .install()?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::Error;

/// The error kinds, in the order their counters are kept.
const KINDS: [&str; 19] = [
    "frame_too_long",
    "encode",
    "json",
    "decode",
    "io",
    "tls",
    "handler_timeout",
    "idle_timeout",
    "write_timeout",
    "handler_error",
    "panic",
    "connection_limit",
    "bind",
    "connect",
    "connect_timeout",
    "config",
    "not_ready",
    "closed",
    "unknown_peer",
];

/// Bucket bounds, in seconds, that suit natter's duration histograms
/// (`natter_handler_duration_seconds`, `natter_client_request_duration_seconds`):
/// from 10 µs to 10 s. An exporter that renders histograms needs bounds;
/// with `metrics-exporter-prometheus`:
///
/// ```no_run
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// metrics_exporter_prometheus::PrometheusBuilder::new()
///     .set_buckets(natter::stats::DURATION_BUCKETS)?
///     .with_http_listener(([127, 0, 0, 1], 9000))
///     .install()?;
/// # Ok(()) }
/// ```
pub const DURATION_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The index of `connection_limit` in [`KINDS`]: a refused connection.
const CONNECTION_LIMIT: usize = 11;

/// Why a connection closed, as `natter_connections_closed_total` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The peer half-closed (or the stream ended).
    Peer,
    /// [`Conn::close`](crate::Conn::close) or
    /// [`ServerHandle::close`](crate::ServerHandle::close).
    Local,
    /// Graceful shutdown.
    Shutdown,
    /// Cut.
    Cut,
    /// An error closed it.
    Error,
}

const REASONS: [&str; 5] = ["peer", "local", "shutdown", "cut", "error"];

impl CloseReason {
    fn index(self) -> usize {
        self as usize
    }
}

impl Error {
    /// A short, stable name of the error's kind, as the `kind` label of
    /// `natter_errors_total` and [`Stats::errors`] show it:
    /// `frame_too_long`, `encode` (a frame that cannot be sent),
    /// `json`, `decode`, `io`, `tls`, `handler_timeout`, `idle_timeout`,
    /// `write_timeout`, `handler_error`, `panic`, `connection_limit`,
    /// `bind`, `connect`, `connect_timeout`, `config`, `not_ready`,
    /// `closed`, `unknown_peer`.
    pub fn kind(&self) -> &'static str {
        KINDS[self.kind_index()]
    }

    fn kind_index(&self) -> usize {
        match self {
            Error::FrameTooLong { .. } => 0,
            Error::FrameTooLongToSend { .. }
            | Error::DelimiterInFrame { .. }
            | Error::Encode(_) => 1,
            Error::Json { .. } => 2,
            Error::Decode(_) => 3,
            Error::Io(_) => 4,
            Error::Tls(_) => 5,
            Error::HandlerTimeout { .. } => 6,
            Error::IdleTimeout(_) => 7,
            Error::WriteTimeout(_) => 8,
            Error::Handler(_) => 9,
            Error::Panic(_) => 10,
            Error::ConnectionLimit { .. } => 11,
            Error::Bind { .. } => 12,
            Error::Connect { .. } => 13,
            Error::ConnectTimeout { .. } => 14,
            Error::InvalidConfig(_) => 15,
            Error::NotReady => 16,
            Error::Closed => 17,
            Error::UnknownPeer(_) => 18,
        }
    }
}

/// A snapshot of a server's or client's counters: see
/// [`ServerHandle::stats`](crate::ServerHandle::stats) and
/// [`ClientService::stats`](crate::ClientService::stats). The same
/// numbers as the [metrics](self) of the same names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections accepted (server) or established (client).
    pub connections_accepted: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Connections closed at once for the connection limit.
    pub connections_refused: u64,
    /// Connections closed, by reason (`peer`, `local`, `shutdown`, `cut`,
    /// `error`); reasons never seen are left out.
    pub connections_closed: BTreeMap<&'static str, u64>,
    /// Frames decoded.
    pub frames_read: u64,
    /// Frames encoded for the peer.
    pub frames_written: u64,
    /// Bytes read from the stream.
    pub bytes_read: u64,
    /// Bytes written to the stream.
    pub bytes_written: u64,
    /// Errors reported, by [`Error::kind`]; kinds never seen are left out.
    pub errors: BTreeMap<&'static str, u64>,
    /// For a [`ClientService`](crate::ClientService): requests sent and not
    /// answered.
    pub requests_in_flight: u64,
    /// For a [`ClientService`](crate::ClientService): redials.
    pub reconnects: u64,
}

/// The counters every connection of one server or client adds to.
#[derive(Debug)]
pub(crate) struct Counters {
    accepted: AtomicU64,
    open: AtomicU64,
    closed: [AtomicU64; REASONS.len()],
    frames_read: AtomicU64,
    frames_written: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    errors: [AtomicU64; KINDS.len()],
    in_flight: AtomicU64,
    reconnects: AtomicU64,
    #[cfg(feature = "metrics")]
    handles: handles::Handles,
}

/// What a connection did in one batch, added to the counters at once.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    pub(crate) frames_read: u64,
    pub(crate) frames_written: u64,
    pub(crate) bytes_read: u64,
    pub(crate) bytes_written: u64,
    /// Handlers that answered at once (their duration is 0).
    pub(crate) immediate: u64,
}

impl Tally {
    pub(crate) fn is_empty(&self) -> bool {
        self.frames_read == 0
            && self.frames_written == 0
            && self.bytes_read == 0
            && self.bytes_written == 0
            && self.immediate == 0
    }
}

impl Counters {
    /// Counters whose metrics carry `role="name"` (`server` or `client`)
    /// when there is a name.
    pub(crate) fn new(role: &'static str, name: Option<&str>) -> Counters {
        #[cfg(not(feature = "metrics"))]
        let _ = (role, name);
        Counters {
            accepted: AtomicU64::new(0),
            open: AtomicU64::new(0),
            closed: Default::default(),
            frames_read: AtomicU64::new(0),
            frames_written: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            errors: Default::default(),
            in_flight: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            handles: handles::Handles::new(role, name),
        }
    }

    pub(crate) fn connected(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        {
            self.handles.accepted.increment(1);
            self.handles.open.increment(1.0);
        }
    }

    pub(crate) fn closed(&self, reason: CloseReason) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.closed[reason.index()].fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        {
            self.handles.open.decrement(1.0);
            self.handles.closed[reason.index()].increment(1);
        }
    }

    pub(crate) fn error(&self, error: &Error) {
        let kind = error.kind_index();
        self.errors[kind].fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        {
            self.handles.errors[kind].increment(1);
            if kind == CONNECTION_LIMIT {
                self.handles.refused.increment(1);
            }
        }
    }

    /// Adds a batch's tally.
    pub(crate) fn add(&self, tally: &Tally) {
        let add = |counter: &AtomicU64, value: u64| {
            if value > 0 {
                counter.fetch_add(value, Ordering::Relaxed);
            }
        };
        add(&self.frames_read, tally.frames_read);
        add(&self.frames_written, tally.frames_written);
        add(&self.bytes_read, tally.bytes_read);
        add(&self.bytes_written, tally.bytes_written);
        #[cfg(feature = "metrics")]
        self.handles.add(tally);
    }

    /// A handler that waited took `took`.
    pub(crate) fn handler_took(&self, took: Duration) {
        #[cfg(feature = "metrics")]
        self.handles.handler_duration.record(took.as_secs_f64());
        #[cfg(not(feature = "metrics"))]
        let _ = took;
    }

    pub(crate) fn request_sent(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.handles.in_flight.increment(1.0);
    }

    /// A request left the in-flight count; `took` if it was answered.
    pub(crate) fn request_done(&self, took: Option<Duration>) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        {
            self.handles.in_flight.decrement(1.0);
            if let Some(took) = took {
                self.handles.request_duration.record(took.as_secs_f64());
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = took;
    }

    /// A request was answered after `took` (if it is known); counted out
    /// of flight by [`requests_done`](Self::requests_done).
    #[inline]
    pub(crate) fn request_answered(&self, took: Option<Duration>) {
        #[cfg(feature = "metrics")]
        if let Some(took) = took {
            self.handles.request_duration.record(took.as_secs_f64());
        }
        #[cfg(not(feature = "metrics"))]
        let _ = took;
    }

    /// `count` requests left the in-flight count, answered.
    pub(crate) fn requests_done(&self, count: usize) {
        self.in_flight.fetch_sub(count as u64, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.handles.in_flight.decrement(count as f64);
    }

    pub(crate) fn reconnecting(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.handles.reconnects.increment(1);
    }

    pub(crate) fn refused(&self) -> u64 {
        self.errors[CONNECTION_LIMIT].load(Ordering::Relaxed)
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let by_name = |names: &[&'static str], counters: &[AtomicU64]| {
            names
                .iter()
                .zip(counters)
                .filter_map(|(name, counter)| match load(counter) {
                    0 => None,
                    count => Some((*name, count)),
                })
                .collect()
        };
        Stats {
            connections_accepted: load(&self.accepted),
            connections_open: load(&self.open),
            connections_refused: self.refused(),
            connections_closed: by_name(&REASONS, &self.closed),
            frames_read: load(&self.frames_read),
            frames_written: load(&self.frames_written),
            bytes_read: load(&self.bytes_read),
            bytes_written: load(&self.bytes_written),
            errors: by_name(&KINDS, &self.errors),
            requests_in_flight: load(&self.in_flight),
            reconnects: load(&self.reconnects),
        }
    }
}

#[cfg(feature = "metrics")]
mod handles {
    use metrics::{Counter, Gauge, Histogram, Label};

    use super::{KINDS, REASONS, Tally};

    /// The metrics handles of one server or client, taken once from the
    /// recorder installed when it was made.
    #[derive(Debug)]
    pub(super) struct Handles {
        pub(super) accepted: Counter,
        pub(super) open: Gauge,
        pub(super) refused: Counter,
        pub(super) closed: Vec<Counter>,
        frames_read: Counter,
        frames_written: Counter,
        bytes_read: Counter,
        bytes_written: Counter,
        pub(super) errors: Vec<Counter>,
        pub(super) handler_duration: Histogram,
        pub(super) in_flight: Gauge,
        pub(super) reconnects: Counter,
        pub(super) request_duration: Histogram,
    }

    impl Handles {
        pub(super) fn new(role: &'static str, name: Option<&str>) -> Handles {
            let base: Vec<Label> = name
                .map(|name| vec![Label::new(role, name.to_owned())])
                .unwrap_or_default();
            let with = |key: &'static str, value: &'static str| {
                let mut labels = base.clone();
                labels.push(Label::new(key, value));
                labels
            };
            Handles {
                accepted: metrics::counter!("natter_connections_accepted_total", base.clone()),
                open: metrics::gauge!("natter_connections_open", base.clone()),
                refused: metrics::counter!("natter_connections_refused_total", base.clone()),
                closed: REASONS
                    .iter()
                    .map(|reason| {
                        metrics::counter!("natter_connections_closed_total", with("reason", reason))
                    })
                    .collect(),
                frames_read: metrics::counter!("natter_frames_read_total", base.clone()),
                frames_written: metrics::counter!("natter_frames_written_total", base.clone()),
                bytes_read: metrics::counter!("natter_bytes_read_total", base.clone()),
                bytes_written: metrics::counter!("natter_bytes_written_total", base.clone()),
                errors: KINDS
                    .iter()
                    .map(|kind| metrics::counter!("natter_errors_total", with("kind", kind)))
                    .collect(),
                handler_duration: metrics::histogram!(
                    "natter_handler_duration_seconds",
                    base.clone()
                ),
                // The client's own series only on a client.
                in_flight: match role {
                    "client" => metrics::gauge!("natter_client_requests_in_flight", base.clone()),
                    _ => Gauge::noop(),
                },
                reconnects: match role {
                    "client" => metrics::counter!("natter_client_reconnects_total", base.clone()),
                    _ => Counter::noop(),
                },
                request_duration: match role {
                    "client" => {
                        metrics::histogram!("natter_client_request_duration_seconds", base)
                    }
                    _ => Histogram::noop(),
                },
            }
        }

        pub(super) fn add(&self, tally: &Tally) {
            if tally.frames_read > 0 {
                self.frames_read.increment(tally.frames_read);
            }
            if tally.frames_written > 0 {
                self.frames_written.increment(tally.frames_written);
            }
            if tally.bytes_read > 0 {
                self.bytes_read.increment(tally.bytes_read);
            }
            if tally.bytes_written > 0 {
                self.bytes_written.increment(tally.bytes_written);
            }
            // Handlers that answered at once are not timed: they took no
            // measurable time, and a sample costs the exporter a clock read
            // and a push, as much as the rest of a small frame's handling.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_counter_and_refusals_are_the_connection_limit_kind() {
        assert_eq!(KINDS[CONNECTION_LIMIT], "connection_limit");
        assert_eq!(
            Error::ConnectionLimit { limit: 1 }.kind(),
            "connection_limit"
        );
        assert_eq!(Error::FrameTooLong { limit: 1 }.kind(), "frame_too_long");
        assert_eq!(Error::IdleTimeout(Duration::ZERO).kind(), "idle_timeout");
        assert_eq!(Error::DelimiterInFrame { offset: 0 }.kind(), "encode");
        let counters = Counters::new("server", None);
        counters.error(&Error::ConnectionLimit { limit: 1 });
        counters.error(&Error::Closed);
        let stats = counters.snapshot();
        assert_eq!(stats.connections_refused, 1);
        assert_eq!(stats.errors.get("closed"), Some(&1));
        assert_eq!(stats.errors.len(), 2, "kinds never seen are left out");
    }
}
