//! Events: what happened on which connection, as a bounded stream that
//! never blocks the connections.
//!
//! The original framework reported errors on a channel that its users had
//! to drain, or every connection stalled. Here each connection publishes to
//! a fixed-size ring ([`tokio::sync::broadcast`]): publishing never waits.
//! A reader that falls behind loses the oldest events and learns how many
//! through [`Events::dropped`]. Every event is also emitted as a `tracing`
//! event inside the connection's span, so a subscriber sees them without
//! reading this stream at all.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::Error;
use crate::stats::Counters;
use crate::transport::Addr;

/// How many events a reader may fall behind by default before the oldest
/// are dropped.
pub(crate) const DEFAULT_EVENT_CAPACITY: usize = 1024;

/// Something that happened on one connection.
#[derive(Debug, Clone)]
pub struct Event {
    /// The remote address of the connection.
    pub peer: Addr,
    /// What happened.
    pub kind: EventKind,
}

/// What happened; see [`Event`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum EventKind {
    /// The connection was accepted (server) or established (client).
    Connected,
    /// Something failed.
    Error {
        /// What failed.
        error: Error,
        /// Whether the connection closes because of it (after writing the
        /// replies before it); a [`Closed`](Self::Closed) event follows when
        /// it is gone. `false` when an
        /// [`on_error`](crate::ServerBuilder::on_error) hook answered the
        /// failed frame, or the error did not concern one connection (a
        /// failed redial, a refused connection).
        closing: bool,
    },
    /// The connection is closed and its task has finished.
    Closed,
    /// A reconnecting [`ClientService`](crate::ClientService) lost its
    /// connection and will redial after `delay`; `peer` is the address it
    /// last had.
    Reconnecting {
        /// Attempts since the connection was lost, from 1.
        attempt: u32,
        /// The wait before this attempt.
        delay: std::time::Duration,
    },
}

impl Event {
    /// The error, if this is an error event.
    pub fn error(&self) -> Option<&Error> {
        match &self.kind {
            EventKind::Error { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Whether this is an error that closes its connection.
    pub fn is_closing_error(&self) -> bool {
        matches!(self.kind, EventKind::Error { closing: true, .. })
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            EventKind::Connected => write!(f, "{}: connected", self.peer),
            EventKind::Error {
                error,
                closing: true,
            } => write!(f, "{}: {error}; closing the connection", self.peer),
            EventKind::Error { error, .. } => write!(f, "{}: {error}", self.peer),
            EventKind::Closed => write!(f, "{}: closed", self.peer),
            EventKind::Reconnecting { attempt, delay } => {
                write!(
                    f,
                    "{}: reconnecting in {delay:?} (attempt {attempt})",
                    self.peer
                )
            }
        }
    }
}

/// The publishing side, shared by every connection of a server or client,
/// with the counters of the [`Stats`](crate::stats::Stats) they keep.
#[derive(Debug, Clone)]
pub(crate) struct EventSender {
    sender: broadcast::Sender<Event>,
    counters: Arc<Counters>,
    /// Cancelled when the server or client is done: the streams end once
    /// they have yielded what was sent before.
    ended: CancellationToken,
}

impl EventSender {
    pub(crate) fn new(capacity: usize, counters: Arc<Counters>) -> Self {
        EventSender {
            sender: broadcast::channel(capacity.max(1)).0,
            counters,
            ended: CancellationToken::new(),
        }
    }

    /// No event will come any more: every stream ends after the ones it
    /// has not read yet.
    pub(crate) fn end(&self) {
        self.ended.cancel();
    }

    /// The counters this server or client keeps.
    pub(crate) fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Publishes `kind` for `peer`, counts it, and logs it. Never waits.
    pub(crate) fn send(&self, peer: &Addr, kind: EventKind) {
        match &kind {
            EventKind::Connected => {
                self.counters.connected();
                tracing::debug!(%peer, "connected")
            }
            EventKind::Closed => tracing::debug!(%peer, "closed"),
            EventKind::Reconnecting { attempt, delay } => {
                self.counters.reconnecting();
                tracing::info!(%peer, attempt, ?delay, "reconnecting")
            }
            EventKind::Error {
                error,
                closing: true,
            } => {
                self.counters.error(error);
                tracing::warn!(%peer, %error, "closing connection")
            }
            EventKind::Error { error, .. } => {
                self.counters.error(error);
                tracing::warn!(%peer, %error, "error")
            }
        }
        // No reader is not an error: tracing has the event.
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(Event {
                peer: peer.clone(),
                kind,
            });
        }
    }

    pub(crate) fn subscribe(&self) -> Events {
        Events {
            inner: BroadcastStream::new(self.sender.subscribe()),
            dropped: 0,
            ended: Box::pin(self.ended.clone().cancelled_owned()),
        }
    }
}

/// A stream of [`Event`]s, from the moment it was created.
///
/// Get one from [`ServerHandle::events`](crate::ServerHandle::events),
/// [`Client::events`](crate::Client::events) or
/// [`ClientService::events`](crate::ClientService::events); each reader has
/// its own copy of every event. Reading is optional: an unread stream holds
/// at most its capacity of events and never slows a connection.
///
/// The stream ends (yields `None`) once the server's `serve` has returned,
/// or the client's connection (with a `ClientService`, its last one) is
/// gone, after every event sent before.
///
/// ```no_run
/// # async fn demo(handle: natter::ServerHandle) {
/// use futures::StreamExt;
///
/// let mut events = handle.events();
/// while let Some(event) = events.next().await {
///     if let Some(error) = event.error() {
///         eprintln!("{}: {error}", event.peer);
///     }
/// }
/// # }
/// ```
pub struct Events {
    inner: BroadcastStream<Event>,
    dropped: u64,
    ended: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Events {
    /// How many events this reader missed because it fell more than the
    /// capacity behind.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        loop {
            match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(event))) => return Poll::Ready(Some(event)),
                Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(missed)))) => {
                    self.dropped += missed;
                }
                Poll::Ready(None) => return Poll::Ready(None),
                // Nothing buffered: the end, if it has come.
                Poll::Pending => return self.ended.as_mut().poll(cx).map(|()| None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn a_reader_that_falls_behind_counts_what_it_missed() {
        let sender = EventSender::new(4, Arc::new(Counters::new("server", None)));
        let mut events = sender.subscribe();
        let peer = Addr::from("127.0.0.1:1".parse::<std::net::SocketAddr>().unwrap());
        for _ in 0..10 {
            sender.send(&peer, EventKind::Connected); // never waits
        }
        sender.end();
        let mut seen = 0;
        while events.next().await.is_some() {
            seen += 1;
        }
        assert_eq!(seen, 4);
        assert_eq!(events.dropped(), 6);
    }
}
