//! [`Connection`]: the one way a connection is built and run, for the
//! server and the client alike.

use std::panic::{AssertUnwindSafe, catch_unwind};

use tower::Service;
use tracing::Instrument;

use super::driver::{self, Signals};
use super::{Conn, ConnConfig, Outbound};
use crate::codec::FrameCodec;
use crate::event::{EventKind, EventSender};
use crate::transport::{Addr, Io};
use crate::{BoxError, Error, Frame, IntoReply};

/// One accepted or dialled stream and everything it runs with.
///
/// Built in two steps, because the service factory needs the connection's
/// [`Conn`] before the service exists: [`Connection::new`], then
/// [`make_service`](Connection::make_service), then
/// [`run`](Connection::run).
pub(crate) struct Connection<T, C> {
    io: T,
    conn: Conn,
    outbound: Outbound,
    config: ConnConfig<C>,
    signals: Signals,
    events: EventSender,
}

impl<T: Io, C: FrameCodec> Connection<T, C> {
    pub(crate) fn new(
        io: T,
        peer: Addr,
        local: Addr,
        config: ConnConfig<C>,
        signals: Signals,
        events: EventSender,
    ) -> Self {
        let (conn, outbound) = Conn::new(peer, local, io.transport(), &config);
        Connection {
            io,
            conn,
            outbound,
            config,
            signals,
            events,
        }
    }

    /// The connection's context.
    pub(crate) fn conn(&self) -> &Conn {
        &self.conn
    }

    /// Builds the connection's service with `make`. A factory that panics
    /// fails this connection only: the panic is reported and the stream
    /// dropped.
    pub(crate) fn make_service<S>(&self, make: impl FnOnce(&Conn) -> S) -> Result<S, Error> {
        catch_unwind(AssertUnwindSafe(|| make(&self.conn))).map_err(|_| {
            let error = Error::Panic("the service factory panicked".into());
            self.events.send(
                self.conn.peer_addr_ref(),
                EventKind::Error {
                    error: error.clone(),
                    closing: true,
                },
            );
            error
        })
    }

    /// Runs the connection to its end, in a tracing span that names it, and
    /// returns the last error it reported. Never panics on anything the
    /// peer or the service does: every failure becomes an event.
    ///
    /// When the stream and the service are gone, `forget` runs, and only
    /// then do [`Conn::closed`] and the `Closed` event announce the end: a
    /// caller that keeps books on its connections (the server's list and
    /// slots) updates them in `forget`, so that whoever waits for the end
    /// finds the connection already forgotten.
    pub(crate) async fn run<S>(self, service: S, forget: impl FnOnce()) -> Option<Error>
    where
        S: Service<Frame>,
        S::Response: IntoReply,
        S::Error: Into<BoxError>,
    {
        let span = tracing::info_span!(
            "conn",
            id = self.conn.id(),
            transport = self.conn.transport(),
            peer = %self.conn.peer_addr_ref(),
        );
        let conn = self.conn.clone();
        let events = self.events.clone();
        let last_error = driver::drive(
            self.io,
            service,
            self.conn,
            self.outbound,
            self.config,
            self.signals,
            self.events,
        )
        .instrument(span)
        .await;
        forget();
        conn.mark_closed();
        events.send(conn.peer_addr_ref(), EventKind::Closed);
        last_error
    }
}
