use std::sync::Arc;

use super::Shared;
use crate::Error;
use crate::event::Events;
use crate::stats::Stats;
use crate::transport::Addr;

/// Controls a running [`Server`](super::Server) from anywhere: lists and
/// closes connections, shuts the server down. Cheap to clone.
///
/// Unlike the original framework's `Cut`, both ways of stopping wait until
/// every connection is closed.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl ServerHandle {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        ServerHandle { shared }
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> Addr {
        self.shared.local_addr.clone()
    }

    /// The remote addresses of the open connections (distinct for every
    /// transport; see [`Addr`]).
    pub fn connections(&self) -> Vec<Addr> {
        self.shared.connections().keys().cloned().collect()
    }

    /// How many connections are open.
    pub fn connection_count(&self) -> usize {
        self.shared.connections().len()
    }

    /// How many connections were closed at once because the server was at
    /// its connection limit.
    pub fn refused_connections(&self) -> u64 {
        self.shared.events.counters().refused()
    }

    /// A snapshot of the server's counters: connections, frames, bytes and
    /// errors by kind, the same numbers its [metrics](crate::stats) carry.
    pub fn stats(&self) -> Stats {
        self.shared.events.counters().snapshot()
    }

    /// Closes the connection from `peer` once its frames in hand are
    /// answered, and waits until it is gone. The other connections carry
    /// on. Fails with [`Error::UnknownPeer`] if there is no such connection.
    pub async fn close(&self, peer: impl Into<Addr>) -> Result<(), Error> {
        let peer = peer.into();
        let conn = self.shared.connections().get(&peer).cloned();
        let conn = conn.ok_or(Error::UnknownPeer(peer))?;
        conn.close();
        conn.closed().await;
        Ok(())
    }

    /// A stream of the server's [`Events`], from now on.
    pub fn events(&self) -> Events {
        self.shared.events.subscribe()
    }

    /// Graceful shutdown: stop accepting, answer every frame already
    /// received, flush, close; connections still busy after the drain
    /// timeout are cut. Returns when `serve` has returned.
    pub async fn shutdown(&self) {
        self.shared.signals.shut_down();
        self.shared.finished.cancelled().await;
    }

    /// Stops at once (the original's `Cut`): stop accepting and drop every
    /// connection without answering. Returns when `serve` has returned.
    pub async fn cut(&self) {
        self.shared.signals.cut();
        self.shared.finished.cancelled().await;
    }

    /// Whether shutdown (graceful or not) has begun.
    pub fn is_shutting_down(&self) -> bool {
        let signals = &self.shared.signals;
        signals.shutdown_token().is_cancelled() || signals.cut_token().is_cancelled()
    }
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.shared.local_addr)
            .field("connections", &self.connection_count())
            .finish()
    }
}
