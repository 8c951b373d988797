//! [`Connection`]: the one way a connection is built and run, for the
//! server and the client alike.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower::Service;

use super::driver::{Driver, Exit, Signals};
use super::{Conn, ConnConfig, Outbound, Requests};
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

    /// Writes what `requests` queues too (a `ClientService`'s requests).
    pub(crate) fn write_requests(&mut self, requests: Arc<dyn Requests>) {
        self.outbound.requests = Some(requests);
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

    /// The connection's future: runs it to its end, in a tracing span that
    /// names it, and returns the last error it reported. Never panics on
    /// anything the peer or the service does: every failure becomes an
    /// event.
    ///
    /// When the stream and the service are gone, `forget` runs, and only
    /// then do [`Conn::closed`] and the `Closed` event announce the end: a
    /// caller that keeps books on its connections (the server's list and
    /// slots) updates them in `forget`, so that whoever waits for the end
    /// finds the connection already forgotten.
    ///
    /// A hand-written future rather than an `async fn`: an idle connection
    /// is this future and nothing else, and an `async fn` would keep a
    /// copy of every argument beside the driver made from them.
    pub(crate) fn run<S, G>(self, service: S, forget: G) -> Running<T, C, S, G>
    where
        S: Service<Frame>,
        S::Response: IntoReply,
        S::Error: Into<BoxError>,
        G: FnOnce(),
    {
        let span = tracing::info_span!(
            "conn",
            id = self.conn.id(),
            transport = self.conn.transport(),
            peer = %self.conn.peer_addr_ref(),
        );
        span.in_scope(|| {
            self.events
                .send(self.conn.peer_addr_ref(), EventKind::Connected);
        });
        Running {
            driver: Driver::new(
                self.io,
                service,
                self.conn,
                self.outbound,
                self.config,
                &self.signals,
                self.events,
            ),
            phase: Phase::Driving,
            span,
            forget: Some(forget),
        }
    }
}

/// Where a [`Running`] connection is.
enum Phase {
    Driving,
    Closing,
    Done,
}

pin_project! {
    /// A connection's future; see [`Connection::run`].
    pub(crate) struct Running<T, C, S: Service<Frame, Error: Into<BoxError>>, G> {
        #[pin]
        driver: Driver<T, C, S, S::Future>,
        phase: Phase,
        span: tracing::Span,
        forget: Option<G>,
    }
}

impl<T, C, S, G> Future for Running<T, C, S, G>
where
    T: Io,
    C: FrameCodec,
    S: Service<Frame>,
    S::Response: IntoReply,
    S::Error: Into<BoxError>,
    G: FnOnce(),
{
    type Output = Option<Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Error>> {
        let mut this = self.project();
        let _entered = this.span.enter();
        loop {
            match this.phase {
                Phase::Driving => match this.driver.as_mut().poll_drive(cx) {
                    Poll::Ready(Exit::Finished) => *this.phase = Phase::Closing,
                    Poll::Ready(Exit::Aborted) => *this.phase = Phase::Done,
                    Poll::Pending => return Poll::Pending,
                },
                Phase::Closing => match this.driver.as_mut().poll_close(cx) {
                    Poll::Ready(()) => *this.phase = Phase::Done,
                    Poll::Pending => return Poll::Pending,
                },
                Phase::Done => {
                    let Some(forget) = this.forget.take() else {
                        panic!("a connection's future polled after it finished");
                    };
                    let last_error = this.driver.as_mut().take_last_error();
                    let (conn, events) = this.driver.as_mut().finish();
                    forget();
                    conn.mark_closed();
                    events.send(conn.peer_addr_ref(), EventKind::Closed);
                    return Poll::Ready(last_error);
                }
            }
        }
    }
}
