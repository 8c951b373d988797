//! Specifications of natter's server, from a client's side of a real
//! loopback socket.
//!
//! Each test starts a server on a free port, talks to it with plain
//! `TcpStream`s and shows the exact bytes that go each way. Tests wait for
//! what they expect (a reply, an end of stream, an [`Event`]), never for a
//! fixed time, and every wait is bounded (see `support::within`). The
//! runtime has two worker threads, as a real server's would, so that the
//! server's tasks and the test race each other for real.

mod support;

use std::convert::Infallible;
use std::future::pending;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use natter::layer::HandlerTimeoutLayer;
use natter::{BoxError, Conn, DelimiterCodec, Error, EventKind, Frame, Server, ServerBuilder};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep};
use tower::layer::util::Identity;
use tower::limit::ConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::load_shed::error::Overloaded;
use tower::service_fn;
use tower::timeout::TimeoutLayer;
use tower::timeout::error::Elapsed;

/// Counts handlers running at once and the most seen.
#[derive(Debug, Default)]
struct Concurrency {
    now: AtomicUsize,
    most: AtomicUsize,
}

impl Concurrency {
    fn enter(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }

    fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }
}

/// A handler that sleeps as many milliseconds as the frame says ("250"),
/// then echoes it; any other frame is echoed at once.
async fn echo_after_delay(frame: Frame, running: Arc<Concurrency>) -> Result<Frame, Infallible> {
    running.enter();
    if let Some(ms) = std::str::from_utf8(&frame)
        .ok()
        .and_then(|text| text.parse().ok())
    {
        sleep(Duration::from_millis(ms)).await;
    }
    running.leave();
    Ok(frame)
}

/// A handler that tells the test it has started, then takes `delay` (or
/// forever) before echoing.
fn announced(
    started: mpsc::UnboundedSender<Frame>,
    delay: Option<Duration>,
) -> impl FnMut(&Conn) -> EchoAnnounced {
    move |_conn: &Conn| EchoAnnounced {
        started: started.clone(),
        delay,
    }
}

#[derive(Clone)]
struct EchoAnnounced {
    started: mpsc::UnboundedSender<Frame>,
    delay: Option<Duration>,
}

impl tower::Service<Frame> for EchoAnnounced {
    type Response = Frame;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Frame, Infallible>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, frame: Frame) -> Self::Future {
        let _ = self.started.send(frame.clone());
        let delay = self.delay;
        Box::pin(async move {
            match delay {
                Some(delay) => sleep(delay).await,
                None => pending().await,
            }
            Ok(frame)
        })
    }
}

/// Binds a server without layers on a free port.
async fn bind(builder: ServerBuilder<Identity>) -> Server<Identity> {
    builder.bind("127.0.0.1:0").await.expect("bind")
}

// ---------------------------------------------------------------------------
// Framing on the wire
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crlf_is_stripped_in_line_mode_and_a_cr_elsewhere_is_data() {
    within("the test", async {
        let server = echo_server().await;
        let mut client = connect(server.addr).await;
        exchange(&mut client, "a\r\nb\r\r\nc\rd\n\r\n", "a\nb\r\nc\rd\n\n").await;
        // The last frame, cut by the half-close, loses its `\r` too.
        client.write_all(b"e\r").await.unwrap();
        finish_writing(&mut client).await;
        assert_eq!(read_to_eof(&mut client).await, "e\n");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_frames_are_frames() {
    within("the test", async {
        let server = echo_server().await;
        let mut client = connect(server.addr).await;
        exchange(&mut client, "\n\nx\n\n", "\n\nx\n\n").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_left_at_half_close_are_the_last_frame_then_the_server_closes() {
    within("the test", async {
        let server = echo_server().await;
        let mut client = connect(server.addr).await;
        client.write_all(b"a\nb").await.unwrap();
        finish_writing(&mut client).await;
        assert_eq!(read_to_eof(&mut client).await, "a\nb\n");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eof_mode_echoes_the_whole_stream_verbatim_then_closes() {
    within("the test", async {
        let server = Server::builder().codec(DelimiterCodec::eof());
        let server = start(bind(server).await, echo);
        let mut client = connect(server.addr).await;
        client.write_all(b"line one\r\n").await.unwrap();
        client
            .write_all(b"\0\n\nno newline at the end")
            .await
            .unwrap();
        finish_writing(&mut client).await;
        assert_eq!(
            read_to_eof(&mut client).await,
            "line one\r\n\0\n\nno newline at the end"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eof_mode_with_nothing_sent_closes_without_a_reply() {
    within("the test", async {
        let server = Server::builder().codec(DelimiterCodec::eof());
        let server = start(bind(server).await, echo);
        let mut client = connect(server.addr).await;
        finish_writing(&mut client).await;
        assert_eq!(read_to_eof(&mut client).await, "");
    })
    .await
}

// ---------------------------------------------------------------------------
// Oversized frames
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_only_its_connection_after_the_frames_before_it_are_answered() {
    within("the test", async {
        let server = Server::builder().codec(DelimiterCodec::lines().max_frame_length(8));
        let server = start(bind(server).await, echo);
        let mut events = server.handle.events();
        let mut bystander = connect(server.addr).await;
        exchange(&mut bystander, "before\n", "before\n").await;

        let mut offender = connect(server.addr).await;
        // 8 bytes is the limit and is accepted (a stripped `\r` does not
        // count); 9 is not; nothing after it is read.
        offender
            .write_all(b"ok\n12345678\n1234567\r\n123456789\nnever\n")
            .await
            .unwrap();
        let (got, _how) = read_until_closed(&mut offender).await;
        assert_eq!(got, "ok\n12345678\n1234567\n");

        let event = next_event(&mut events, "an error event", |event| {
            event.error().is_some()
        })
        .await;
        assert_eq!(
            event.peer,
            addr_of(&offender),
            "the error names the offender"
        );
        let error = event.error().unwrap();
        assert!(matches!(error, Error::FrameTooLong { limit: 8 }), "{error}");
        assert!(event.is_closing_error());
        closed_event(&mut events, addr_of(&offender)).await;

        exchange(&mut bystander, "after\n", "after\n").await;
        let mut newcomer = connect(server.addr).await;
        exchange(&mut newcomer, "new\n", "new\n").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_never_ends_is_reported_while_it_arrives_and_its_connection_closed() {
    within("the test", async {
        let server = Server::builder().codec(DelimiterCodec::lines().max_frame_length(1024));
        let server = start(bind(server).await, echo);
        let mut events = server.handle.events();
        let offender = connect(server.addr).await;
        let offender_addr = addr_of(&offender);
        let (mut reading, mut writing) = offender.into_split();

        // A line with no end, sent for as long as the server takes it.
        let writer = tokio::spawn(async move {
            let chunk = vec![b'x'; 64 * 1024];
            while writing.write_all(&chunk).await.is_ok() {}
        });
        // Reported once the limit is passed, while the line still arrives.
        let error = next_error(&mut events, offender_addr).await;
        assert!(
            matches!(error, Error::FrameTooLong { limit: 1024 }),
            "{error}"
        );
        // Closed without a reply; our writes then fail.
        let mut got = Vec::new();
        let _ = within("the server to close", reading.read_to_end(&mut got)).await;
        assert_eq!(got, b"", "no reply to an oversized frame");
        within("the server to stop taking the line", writer)
            .await
            .unwrap();
    })
    .await
}

// ---------------------------------------------------------------------------
// Many connections
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_connections_each_get_their_own_replies() {
    const CONNECTIONS: usize = 1000;
    within("the test", async {
        let server = Server::builder().event_capacity(4 * CONNECTIONS);
        let server = start(bind(server).await, echo);
        let mut events = server.handle.events();
        let mut clients = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            clients.push(connect(server.addr).await);
        }
        connected_events(&mut events, CONNECTIONS).await;
        assert_eq!(server.handle.connection_count(), CONNECTIONS);

        let conversations: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(i, mut client)| {
                tokio::spawn(async move {
                    let first = format!("hello from {i}\n");
                    let second = format!("{i} again\n");
                    exchange(
                        &mut client,
                        &format!("{first}{second}"),
                        &format!("{first}{second}"),
                    )
                    .await;
                    client
                })
            })
            .collect();
        let mut clients = Vec::with_capacity(CONNECTIONS);
        for conversation in conversations {
            clients.push(conversation.await.expect("a conversation failed"));
        }
        assert_eq!(server.handle.connection_count(), CONNECTIONS);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_listed_and_one_is_closed_by_its_address() {
    within("the test", async {
        let server = echo_server().await;
        let handle = server.handle.clone();
        let mut events = handle.events();
        let mut a = connect(server.addr).await;
        let mut b = connect(server.addr).await;
        let mut c = connect(server.addr).await;
        connected_events(&mut events, 3).await;

        let mut listed = handle.connections();
        listed.sort();
        let mut expected = vec![addr_of(&a), addr_of(&b), addr_of(&c)];
        expected.sort();
        assert_eq!(listed, expected);
        assert_eq!(handle.connection_count(), 3);

        let b_addr = addr_of(&b);
        let closing = tokio::spawn({
            let handle = handle.clone();
            async move { handle.close(b_addr).await }
        });
        assert_eq!(read_to_eof(&mut b).await, "");
        drop(b);
        within("close(b) to return", closing)
            .await
            .unwrap()
            .expect("close(b)");
        // `close` returns once the connection is gone.
        assert!(
            !handle.connections().contains(&b_addr.into()),
            "{b_addr} still listed"
        );
        assert_eq!(handle.connection_count(), 2);

        exchange(&mut a, "a\n", "a\n").await;
        exchange(&mut c, "c\n", "c\n").await;

        let unknown: SocketAddr = "127.0.0.1:1".parse().unwrap();
        match handle.close(unknown).await {
            Err(Error::UnknownPeer(peer)) => assert_eq!(peer, unknown),
            other => panic!("closing an unknown peer: {other:?}"),
        }
        match handle.close(b_addr).await {
            Err(Error::UnknownPeer(peer)) => assert_eq!(peer, b_addr),
            other => panic!("closing a closed peer: {other:?}"),
        }
    })
    .await
}

// ---------------------------------------------------------------------------
// Closing from the handler; timeouts
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_closes_its_connection_after_its_reply_is_sent() {
    within("the test", async {
        let server = start(bind(Server::builder()).await, |conn: &Conn| {
            let conn = conn.clone();
            service_fn(move |frame: Frame| {
                let conn = conn.clone();
                async move {
                    if frame == "bye" {
                        conn.close();
                    }
                    Ok::<_, Infallible>(frame)
                }
            })
        });
        let mut client = connect(server.addr).await;
        client.write_all(b"hi\nbye\nnot read\n").await.unwrap();
        assert_eq!(read_to_eof(&mut client).await, "hi\nbye\n");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_task_closes_a_quiet_connection_at_once() {
    within("the test", async {
        let (conns, mut conns_rx) = mpsc::unbounded_channel::<Conn>();
        let server = start(bind(Server::builder()).await, move |conn: &Conn| {
            let _ = conns.send(conn.clone());
            echo(conn)
        });
        let mut client = connect(server.addr).await;
        exchange(&mut client, "a\n", "a\n").await;
        let conn = conns_rx.recv().await.expect("connected");
        sleep(Duration::from_millis(50)).await;
        tokio::spawn(async move { conn.close() }).await.unwrap();
        assert_eq!(read_to_eof(&mut client).await, "");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_the_idle_timeout_and_a_partial_frame_does_not_count() {
    within("the test", async {
        let idle = Duration::from_millis(200);
        let server = start(bind(Server::builder().idle_timeout(idle)).await, echo);
        let mut events = server.handle.events();
        let mut client = connect(server.addr).await;
        let mut bystander = connect(server.addr).await;
        let began = Instant::now();
        exchange(&mut client, "a\n", "a\n").await;
        client.write_all(b"partial").await.unwrap();

        assert_eq!(read_to_eof(&mut client).await, "");
        assert!(
            began.elapsed() >= Duration::from_millis(190),
            "closed after {:?}",
            began.elapsed()
        );
        let error = next_error(&mut events, addr_of(&client)).await;
        assert!(
            matches!(error, Error::IdleTimeout(timeout) if timeout == idle),
            "{error}"
        );
        assert!(error.is_timeout());

        // The other connection was idle just as long.
        assert_eq!(read_to_eof(&mut bystander).await, "");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_clock_stops_while_a_handler_runs() {
    within("the test", async {
        let running = Arc::new(Concurrency::default());
        let builder = Server::builder().idle_timeout(Duration::from_millis(200));
        let server = start(bind(builder).await, move |_: &Conn| {
            let running = running.clone();
            service_fn(move |frame| echo_after_delay(frame, running.clone()))
        });
        let mut client = connect(server.addr).await;
        exchange(&mut client, "600\n", "600\n").await;
        // The clock restarted when the handler finished.
        exchange(&mut client, "0\n", "0\n").await;
    })
    .await
}

// ---------------------------------------------------------------------------
// A peer that does not read
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_stops_the_reading_at_the_high_water_mark_then_times_out() {
    const BIG: usize = 256 * 1024;
    const ASKED: usize = 1000;
    within("the test", async {
        let handled = Arc::new(AtomicUsize::new(0));
        let big = Bytes::from(vec![b'x'; BIG]);
        let write_timeout = Duration::from_millis(500);
        let builder = Server::builder()
            .codec(DelimiterCodec::lines().max_frame_length(BIG))
            .write_buffer(64 * 1024)
            .write_timeout(write_timeout);
        let server = start(bind(builder).await, {
            let handled = handled.clone();
            move |_: &Conn| {
                let handled = handled.clone();
                let big = big.clone();
                service_fn(move |frame: Frame| {
                    let reply = if frame == "big" {
                        handled.fetch_add(1, Ordering::SeqCst);
                        Frame::from(big.clone())
                    } else {
                        frame
                    };
                    async move { Ok::<_, Infallible>(reply) }
                })
            }
        });
        let mut events = server.handle.events();
        let mut reader = connect(server.addr).await;

        // Asks for 250 MiB of replies in 4 KB and never reads one.
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut sluggard = within("connect", socket.connect(server.addr))
            .await
            .unwrap();
        sluggard
            .write_all("big\n".repeat(ASKED).as_bytes())
            .await
            .unwrap();

        // Everyone else is served meanwhile.
        exchange(&mut reader, "still served\n", "still served\n").await;

        let error = next_error(&mut events, addr_of(&sluggard)).await;
        assert!(
            matches!(error, Error::WriteTimeout(timeout) if timeout == write_timeout),
            "{error}"
        );
        closed_event(&mut events, addr_of(&sluggard)).await;
        // What the kernel's socket buffers hold (a few MiB) plus the high
        // water mark, not 250 MiB: the server stopped reading.
        let handled = handled.load(Ordering::SeqCst);
        assert!(
            handled < 100,
            "{handled} big replies were produced for a peer that reads nothing"
        );

        exchange(&mut reader, "and after\n", "and after\n").await;
        drop(sluggard);
    })
    .await
}

// ---------------------------------------------------------------------------
// Failing handlers
// ---------------------------------------------------------------------------

/// Echoes, except that "fail" makes the handler return an error and
/// "boom" makes it panic.
fn fallible(
    _: &Conn,
) -> impl tower::Service<Frame, Response = Frame, Error = BoxError, Future: Send> + Send + use<> {
    service_fn(|frame: Frame| async move {
        if frame == "fail" {
            return Err::<Frame, BoxError>("no such command".into());
        }
        if frame == "boom" {
            panic!("boom");
        }
        Ok(frame)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_error_closes_the_connection_after_the_replies_before_it() {
    within("the test", async {
        let server = start(bind(Server::builder()).await, fallible);
        let mut events = server.handle.events();
        let mut client = connect(server.addr).await;
        client.write_all(b"a\nfail\nb\n").await.unwrap();
        // `b` is not answered: a pipelined peer would take its reply for
        // the failed frame's.
        assert_eq!(read_to_eof(&mut client).await, "a\n");

        let event = next_event(&mut events, "the error", |event| event.error().is_some()).await;
        match event.error().unwrap() {
            Error::Handler(source) => assert_eq!(source.to_string(), "no such command"),
            other => panic!("expected a handler error, got {other:?}"),
        }
        assert!(event.is_closing_error());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_on_error_hook_a_handler_error_is_answered_in_its_place_and_the_connection_kept() {
    within("the test", async {
        let builder = Server::builder()
            .on_error(|error: &Error, _: &Conn| Some(Frame::from(format!("-ERR {error}"))));
        let server = start(bind(builder).await, fallible);
        let mut events = server.handle.events();
        let mut client = connect(server.addr).await;
        exchange(
            &mut client,
            "a\nfail\nb\n",
            "a\n-ERR handler failed: no such command\nb\n",
        )
        .await;
        let event = next_event(&mut events, "the error", |event| event.error().is_some()).await;
        assert!(!event.is_closing_error());
        exchange(&mut client, "c\n", "c\n").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_closes_only_its_own_connection() {
    within("the test", async {
        let server = start(bind(Server::builder()).await, fallible);
        let mut events = server.handle.events();
        let mut bystander = connect(server.addr).await;
        exchange(&mut bystander, "x\n", "x\n").await;

        let mut victim = connect(server.addr).await;
        victim.write_all(b"a\nboom\nb\n").await.unwrap();
        let (got, _how) = read_until_closed(&mut victim).await;
        assert_eq!(got, "a\n");

        let error = next_error(&mut events, addr_of(&victim)).await;
        assert!(
            matches!(&error, Error::Panic(message) if message == "boom"),
            "{error:?}"
        );
        closed_event(&mut events, addr_of(&victim)).await;

        exchange(&mut bystander, "y\n", "y\n").await;
        let mut newcomer = connect(server.addr).await;
        exchange(&mut newcomer, "z\n", "z\n").await;
    })
    .await
}

/// Echoes, but panics outside its future: frame "call" panics in `call`
/// itself, and after frame "ready" the next `poll_ready` panics. Frame
/// "slow" is answered after a while, so later frames overtake it when
/// several are in flight.
#[derive(Clone, Default)]
struct Fragile {
    poisoned: bool,
}

impl tower::Service<Frame> for Fragile {
    type Response = Frame;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<Frame, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        if self.poisoned {
            panic!("ready boom");
        }
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, frame: Frame) -> Self::Future {
        if frame == "call" {
            panic!("call boom");
        }
        self.poisoned = frame == "ready";
        let slow = frame == "slow";
        Box::pin(async move {
            if slow {
                sleep(Duration::from_millis(30)).await;
            }
            Ok(frame)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_panics_outside_its_future_closes_its_connection_in_frame_order() {
    within("the test", async {
        // (frames in flight, what the peer sends, what it gets, the panic)
        let cases = [
            (1, "a\ncall\nb\n", "a\n", "call boom"),
            (4, "slow\ncall\nb\n", "slow\n", "call boom"),
            (1, "a\nready\nb\n", "a\nready\n", "ready boom"),
            (4, "slow\nready\nb\n", "slow\nready\n", "ready boom"),
        ];
        for (in_flight, request, reply, panic) in cases {
            let server = Server::builder().max_in_flight(in_flight);
            let server = start(bind(server).await, |_: &Conn| Fragile::default());
            let mut events = server.handle.events();
            let mut client = connect(server.addr).await;
            client.write_all(request.as_bytes()).await.unwrap();
            let (got, _how) = read_until_closed(&mut client).await;
            assert_eq!(got, reply, "{in_flight} in flight, {request:?}");
            let error = next_error(&mut events, addr_of(&client)).await;
            assert!(
                matches!(&error, Error::Panic(message) if message == panic),
                "{in_flight} in flight, {request:?}: {error:?}"
            );
            closed_event(&mut events, addr_of(&client)).await;
            // The server itself serves on.
            let mut other = connect(server.addr).await;
            exchange(&mut other, "x\n", "x\n").await;
        }
    })
    .await
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_never_blocks_the_server_and_a_slow_reader_counts_what_it_missed() {
    within("the test", async {
        let builder = Server::builder()
            .event_capacity(4)
            .on_error(|_: &Error, _: &Conn| Some(Frame::from("-ERR")));
        let server = start(bind(builder).await, fallible);
        let mut lagging = server.handle.events();
        let _never_read = server.handle.events();

        // 1 Connected + 200 handler errors, with nobody reading.
        let mut client = connect(server.addr).await;
        let request = format!("{}ok\n", "fail\n".repeat(200));
        let replies = format!("{}ok\n", "-ERR\n".repeat(200));
        exchange(&mut client, &request, &replies).await;
        // + 1 Connected.
        let mut second = connect(server.addr).await;
        exchange(&mut second, "still serving\n", "still serving\n").await;

        let mut seen = Vec::new();
        while let Some(Some(event)) = futures::StreamExt::next(&mut lagging).now_or_never() {
            seen.push(event);
        }
        assert_eq!(
            seen.len(),
            4,
            "the reader keeps the newest `event_capacity`: {seen:?}"
        );
        assert_eq!(lagging.dropped(), 202 - 4);
        assert!(matches!(seen[3].kind, EventKind::Connected) && seen[3].peer == addr_of(&second));
        assert!(
            seen[..3]
                .iter()
                .all(|event| matches!(event.error(), Some(Error::Handler(_))))
        );
    })
    .await
}

// ---------------------------------------------------------------------------
// Stopping the server
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_every_frame_received_before_it_then_closes() {
    within("the test", async {
        let (started, mut handling) = mpsc::unbounded_channel();
        let delay = Some(Duration::from_millis(100));
        let server = start(bind(Server::builder()).await, announced(started, delay));
        let mut events = server.handle.events();
        let mut busy = connect(server.addr).await;
        let mut idle = connect(server.addr).await;
        connected_events(&mut events, 2).await;

        // Three frames in one write; the first is being handled (one at a
        // time), the other two wait in the server's buffer.
        busy.write_all(b"1\n2\n3\n").await.unwrap();
        assert_eq!(within("frame 1", handling.recv()).await.unwrap(), "1");
        let shutdown = tokio::spawn({
            let handle = server.handle.clone();
            async move { handle.shutdown().await }
        });

        // An idle connection is closed at once.
        assert_eq!(read_to_eof(&mut idle).await, "");
        // New connections are refused (or, if the kernel completed the
        // handshake just before the listener closed, reset unanswered).
        match TcpStream::connect(server.addr).await {
            Err(error) => assert!(refused_or_reset(&error), "{error}"),
            Ok(mut late) => {
                let _ = late.write_all(b"late\n").await;
                let (got, _how) = read_until_closed(&mut late).await;
                assert_eq!(got, "", "a connection made during shutdown was served");
            }
        }
        // Every frame received before the shutdown is answered, then FIN.
        assert_eq!(read_to_eof(&mut busy).await, "1\n2\n3\n");
        drop(busy);

        within("shutdown to return", shutdown).await.unwrap();
        let served = within("serve to return", server.served).await;
        served.unwrap().expect("serve returned an error");
        assert_eq!(server.handle.connection_count(), 0);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_returns_promptly_even_while_a_handler_sleeps_forever() {
    within("the test", async {
        let (started, mut handling) = mpsc::unbounded_channel();
        let server = start(bind(Server::builder()).await, announced(started, None));
        let mut client = connect(server.addr).await;
        client.write_all(b"forever\n").await.unwrap();
        within("the handler to start", handling.recv())
            .await
            .unwrap();

        tokio::time::timeout(Duration::from_secs(1), server.handle.cut())
            .await
            .expect("cut() took longer than a second");
        within("serve to return", server.served)
            .await
            .unwrap()
            .expect("serve returned an error");
        let (got, _how) = read_until_closed(&mut client).await;
        assert_eq!(got, "", "a cut connection gets no reply");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_shutdown_drains_when_its_signal_fires() {
    within("the test", async {
        let server = bind(Server::builder()).await;
        let addr = server.local_addr().socket_addr().expect("a TCP server");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve_with_shutdown(echo, async {
            let _ = stopped.await;
        }));
        let mut client = connect(addr).await;
        exchange(&mut client, "hello\n", "hello\n").await;
        stop.send(()).unwrap();
        assert_eq!(read_to_eof(&mut client).await, "");
        drop(client);
        within("serve to return", serving)
            .await
            .unwrap()
            .expect("serve returned an error");
    })
    .await
}

// ---------------------------------------------------------------------------
// Frames in flight
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_several_frames_in_flight_replies_keep_the_frame_order() {
    within("the test", async {
        let running = Arc::new(Concurrency::default());
        let server = start(bind(Server::builder().max_in_flight(4)).await, {
            let running = running.clone();
            move |_: &Conn| {
                let running = running.clone();
                service_fn(move |frame| echo_after_delay(frame, running.clone()))
            }
        });
        let mut client = connect(server.addr).await;
        let frames = "300\n100\n0\n200\n50\n10\n0\n120\n";
        exchange(&mut client, frames, frames).await;
        let most = running.most();
        assert!((2..=4).contains(&most), "{most} handlers ran at once");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_limit_below_max_in_flight_makes_frames_wait_in_order() {
    within("the test", async {
        let running = Arc::new(Concurrency::default());
        let builder = Server::builder()
            .max_in_flight(4)
            .layer(ConcurrencyLimitLayer::new(1));
        let server = start(builder.bind("127.0.0.1:0").await.unwrap(), {
            let running = running.clone();
            move |_: &Conn| {
                let running = running.clone();
                service_fn(move |frame| echo_after_delay(frame, running.clone()))
            }
        });
        let mut client = connect(server.addr).await;
        let frames = "50\n0\n30\n0\n";
        exchange(&mut client, frames, frames).await;
        assert_eq!(running.most(), 1);
    })
    .await
}

// ---------------------------------------------------------------------------
// Connection limit
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_a_connection_is_closed_at_once_until_a_slot_frees() {
    within("the test", async {
        let server = start(bind(Server::builder().max_connections(2)).await, echo);
        let mut events = server.handle.events();
        let mut first = connect(server.addr).await;
        let mut second = connect(server.addr).await;
        exchange(&mut first, "1\n", "1\n").await;
        exchange(&mut second, "2\n", "2\n").await;

        let mut third = connect(server.addr).await;
        let error = next_error(&mut events, addr_of(&third)).await;
        assert!(
            matches!(error, Error::ConnectionLimit { limit: 2 }),
            "{error}"
        );
        let (got, _how) = read_until_closed(&mut third).await;
        assert_eq!(got, "", "a refused connection gets no reply");
        assert_eq!(server.handle.refused_connections(), 1);
        assert_eq!(server.handle.connection_count(), 2);

        // The first leaves; its slot is free as soon as it is closed.
        finish_writing(&mut first).await;
        assert_eq!(read_to_eof(&mut first).await, "");
        let first_addr = addr_of(&first);
        drop(first);
        closed_event(&mut events, first_addr).await;

        let mut fourth = connect(server.addr).await;
        exchange(&mut fourth, "4\n", "4\n").await;
        exchange(&mut second, "2 again\n", "2 again\n").await;
        assert_eq!(server.handle.refused_connections(), 1);
    })
    .await
}

// ---------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------

/// Echoes; a frame "slow" takes a minute.
fn slow_on_demand(
    _: &Conn,
) -> impl tower::Service<Frame, Response = Frame, Error = Infallible, Future: Send> + Send + use<> {
    service_fn(|frame: Frame| async move {
        if frame == "slow" {
            sleep(Duration::from_secs(60)).await;
        }
        Ok(frame)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_timeout_layer_fails_a_slow_handler_with_a_downcastable_elapsed_and_closes() {
    within("the test", async {
        let builder = Server::builder().layer(TimeoutLayer::new(Duration::from_millis(100)));
        let server = start(builder.bind("127.0.0.1:0").await.unwrap(), slow_on_demand);
        let mut events = server.handle.events();
        let mut client = connect(server.addr).await;
        client.write_all(b"first\nslow\nfast\n").await.unwrap();
        assert_eq!(read_to_eof(&mut client).await, "first\n");

        let error = next_error(&mut events, addr_of(&client)).await;
        assert!(
            matches!(&error, Error::Handler(source) if source.is::<Elapsed>()),
            "{error:?}"
        );
        assert!(error.is_timeout());
        assert!(error.downcast_ref::<Elapsed>().is_some());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_shed_over_a_concurrency_limit_rejects_frames_beyond_it_as_overloaded() {
    within("the test", async {
        let builder = Server::builder()
            .max_in_flight(4)
            .layer(LoadShedLayer::new())
            .layer(ConcurrencyLimitLayer::new(1));
        let running = Arc::new(Concurrency::default());
        let server = start(
            builder.bind("127.0.0.1:0").await.unwrap(),
            move |_: &Conn| {
                let running = running.clone();
                service_fn(move |frame| echo_after_delay(frame, running.clone()))
            },
        );
        let mut events = server.handle.events();
        let mut client = connect(server.addr).await;
        // "shed" arrives while "200" holds the only permit; "200" is still
        // answered, then the connection closes.
        client.write_all(b"200\nshed\n").await.unwrap();
        assert_eq!(read_to_eof(&mut client).await, "200\n");

        let error = next_error(&mut events, addr_of(&client)).await;
        assert!(
            matches!(&error, Error::Handler(source) if source.is::<Overloaded>()),
            "{error:?}"
        );
        assert!(error.is_overloaded());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_timeout_layer_reports_a_typed_timeout_and_closes_the_connection_by_default() {
    within("the test", async {
        let limit = Duration::from_millis(100);
        let builder = Server::builder().layer(HandlerTimeoutLayer::new(limit));
        let server = start(builder.bind("127.0.0.1:0").await.unwrap(), slow_on_demand);
        let mut events = server.handle.events();
        let mut bystander = connect(server.addr).await;
        let mut client = connect(server.addr).await;
        client
            .write_all(b"first\nslow\nnever handled\n")
            .await
            .unwrap();
        assert_eq!(read_to_eof(&mut client).await, "first\n");

        let error = next_error(&mut events, addr_of(&client)).await;
        assert!(
            matches!(error, Error::HandlerTimeout { timeout } if timeout == limit),
            "{error:?}"
        );
        assert!(error.is_timeout());
        exchange(&mut bystander, "unaffected\n", "unaffected\n").await;
    })
    .await
}

/// The server's own handler timeout counts each frame from that frame's
/// start: frames that each take most of it pass one after the other, even
/// though together they take longer; a frame that takes too long closes the
/// connection after the replies due. One frame in flight and several.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_handler_timeout_counts_each_frame_from_its_own_start() {
    within("the test", async {
        let limit = Duration::from_millis(300);
        for in_flight in [1, 4] {
            let builder = Server::builder()
                .handler_timeout(Some(limit))
                .max_in_flight(in_flight);
            let server = start(bind(builder).await, |_: &Conn| {
                service_fn(|frame: Frame| async move {
                    let took = match &frame[..] {
                        b"most" => Duration::from_millis(200),
                        b"too long" => Duration::from_secs(5),
                        _ => Duration::ZERO,
                    };
                    sleep(took).await;
                    Ok::<_, Infallible>(frame)
                })
            });
            let mut events = server.handle.events();
            let mut client = connect(server.addr).await;
            let began = Instant::now();
            exchange(&mut client, "most\nmost\nmost\n", "most\nmost\nmost\n").await;
            if in_flight == 1 {
                assert!(began.elapsed() >= 3 * Duration::from_millis(200));
            }
            client.write_all(b"a\ntoo long\nb\n").await.unwrap();
            let (got, _how) = read_until_closed(&mut client).await;
            assert_eq!(got, "a\n", "{in_flight} in flight");
            let error = next_error(&mut events, addr_of(&client)).await;
            assert!(
                matches!(error, Error::HandlerTimeout { timeout } if timeout == limit),
                "{in_flight} in flight: {error:?}"
            );
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_on_error_hook_a_timed_out_frame_is_answered_and_the_connection_kept() {
    within("the test", async {
        let limit = Duration::from_millis(100);
        let builder = Server::builder()
            .layer(HandlerTimeoutLayer::new(limit))
            .on_error(|error: &Error, _: &Conn| {
                error.is_timeout().then(|| Frame::from("-ERR timeout"))
            });
        let server = start(builder.bind("127.0.0.1:0").await.unwrap(), slow_on_demand);
        let mut events = server.handle.events();
        let mut client = connect(server.addr).await;
        exchange(&mut client, "slow\nnext\n", "-ERR timeout\nnext\n").await;

        let event = next_event(&mut events, "the error", |event| event.error().is_some()).await;
        assert!(matches!(event.error(), Some(Error::HandlerTimeout { .. })));
        assert!(!event.is_closing_error());
        exchange(&mut client, "still open\n", "still open\n").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_and_natter_layers_compose_in_one_stack() {
    within("the test", async {
        let builder = Server::builder()
            .max_in_flight(4)
            .layer(HandlerTimeoutLayer::new(Duration::from_millis(150)))
            .layer(LoadShedLayer::new())
            .layer(ConcurrencyLimitLayer::new(1))
            .layer(TimeoutLayer::new(Duration::from_secs(30)))
            .on_error(|error: &Error, _: &Conn| {
                let reply = if error.is_overloaded() {
                    "-ERR busy"
                } else if error.is_timeout() {
                    "-ERR timeout"
                } else {
                    return None;
                };
                Some(Frame::from(reply))
            });
        let server = start(builder.bind("127.0.0.1:0").await.unwrap(), slow_on_demand);
        let mut events = server.handle.events();
        let mut client = connect(server.addr).await;
        // "slow" holds the permit until the handler timeout drops it;
        // "shed" is rejected meanwhile; each is answered in its place, and
        // "after" comes once the permit is free.
        exchange(&mut client, "slow\nshed\n", "-ERR timeout\n-ERR busy\n").await;
        let first = next_error(&mut events, addr_of(&client)).await;
        let second = next_error(&mut events, addr_of(&client)).await;
        assert!(matches!(first, Error::HandlerTimeout { .. }), "{first:?}");
        assert!(
            matches!(&second, Error::Handler(source) if source.is::<Overloaded>()),
            "{second:?}"
        );
        exchange(&mut client, "after\n", "after\n").await;
    })
    .await
}

// ---------------------------------------------------------------------------
// Sending through Conn
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_a_handler_sends_through_conn_are_written_before_its_reply() {
    within("the test", async {
        let server = start(bind(Server::builder()).await, |conn: &Conn| {
            // A greeting, sent before the peer says anything.
            let greeter = conn.clone();
            tokio::spawn(async move { greeter.send("welcome").await });
            let conn = conn.clone();
            service_fn(move |frame: Frame| {
                let conn = conn.clone();
                async move {
                    conn.send(
                        b"you said "
                            .iter()
                            .chain(frame.iter())
                            .copied()
                            .collect::<Vec<u8>>(),
                    )
                    .await?;
                    conn.send_json(&serde_json::json!({ "len": frame.len() }))
                        .await?;
                    Ok::<_, Error>(format!("done, {}", conn.peer_addr()))
                }
            })
        });
        let mut client = connect(server.addr).await;
        let greeting = read_exactly(&mut client, "welcome\n".len()).await;
        assert_eq!(greeting, "welcome\n");
        let reply = format!("you said hi\n{{\"len\":2}}\ndone, {}\n", addr_of(&client));
        exchange(&mut client, "hi\n", &reply).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_sent_from_elsewhere_after_the_handler_sent_its_own_is_written_at_once() {
    within("the test", async {
        // The handler sends through `Conn` (which takes the driver's
        // waker from the send queue), then, while the connection is
        // quiet, another task sends: it must be written without the peer
        // saying anything.
        let (later, mut later_rx) = mpsc::unbounded_channel::<Conn>();
        let server = start(bind(Server::builder()).await, move |conn: &Conn| {
            let conn = conn.clone();
            let later = later.clone();
            service_fn(move |frame: Frame| {
                let conn = conn.clone();
                let later = later.clone();
                async move {
                    conn.send("first").await?;
                    let _ = later.send(conn.clone());
                    Ok::<_, Error>(frame)
                }
            })
        });
        let mut client = connect(server.addr).await;
        exchange(&mut client, "hi\n", "first\nhi\n").await;
        let conn = later_rx.recv().await.expect("the handler ran");
        sleep(Duration::from_millis(50)).await;
        tokio::spawn(async move { conn.send("later").await })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read_exactly(&mut client, "later\n".len()).await, "later\n");
    })
    .await
}

/// A stream of frames sent through `Conn` from another thread while the
/// driver writes the ones before: a sender's wake-up that lands after the
/// driver took its frame must not leave the next frame waiting for a
/// wake-up nobody sends (it once did, and the stream stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_frames_sent_from_another_thread_is_never_stranded() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    within("the test", async {
        let count = 50_000;
        let (conns, mut conn) = mpsc::unbounded_channel::<Conn>();
        let server = start(bind(Server::builder()).await, move |conn: &Conn| {
            let _ = conns.send(conn.clone());
            service_fn(|_: Frame| std::future::ready(Ok::<_, Infallible>(())))
        });
        let client = connect(server.addr).await;
        let conn = conn.recv().await.expect("a connection");
        let runtime = tokio::runtime::Handle::current();
        // A thread of the blocking pool: it sends while the driver runs.
        let sender = tokio::task::spawn_blocking(move || {
            for i in 0..count {
                runtime.block_on(conn.send(i.to_string())).unwrap();
            }
        });
        let mut lines = BufReader::new(client).lines();
        for i in 0..count {
            let line = lines.next_line().await.unwrap().expect("a frame");
            assert_eq!(line, i.to_string());
        }
        sender.await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_a_frame_that_contains_the_delimiter_fails_and_writes_nothing() {
    within("the test", async {
        let server = start(bind(Server::builder()).await, |conn: &Conn| {
            let conn = conn.clone();
            service_fn(move |_frame: Frame| {
                let conn = conn.clone();
                async move {
                    let refused = conn.send("two\nframes").await;
                    Ok::<_, Infallible>(match refused {
                        Err(Error::DelimiterInFrame { offset: 3 }) => "refused",
                        _ => "sent",
                    })
                }
            })
        });
        let mut client = connect(server.addr).await;
        exchange(&mut client, "go\n", "refused\n").await;
    })
    .await
}

// ---------------------------------------------------------------------------
// A slow log sink
// ---------------------------------------------------------------------------

/// A log sink that takes 100 ms to write each of natter's log events, as a
/// blocking write to a full stderr pipe might.
struct SlowLogSink;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SlowLogSink {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target().starts_with("natter") {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A closed connection is forgotten (gone from the list, its slot free)
/// before anyone is told it is closed, however slowly the server logs.
#[test]
fn a_connection_is_forgotten_before_it_is_reported_closed_even_with_a_slow_log_sink() {
    use tracing_subscriber::layer::SubscriberExt;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(|| {
            let subscriber = tracing_subscriber::registry().with(SlowLogSink);
            // For the life of this worker thread.
            std::mem::forget(tracing::subscriber::set_default(subscriber));
        })
        .build()
        .unwrap();
    runtime.block_on(within("the test", async {
        let server = start(bind(Server::builder().max_connections(1)).await, echo);
        let handle = server.handle.clone();
        let mut events = handle.events();
        let mut first = connect(server.addr).await;
        exchange(&mut first, "1\n", "1\n").await;

        // Closed by address; the client reads the end and leaves. (Both on
        // this thread, not in a task the server's worker would run.)
        let first_addr = addr_of(&first);
        let (closed, ()) = tokio::join!(handle.close(first_addr), async move {
            assert_eq!(read_to_eof(&mut first).await, "");
        });
        closed.expect("close");
        assert!(
            handle.connections().is_empty(),
            "close() returned before the connection was gone"
        );

        closed_event(&mut events, first_addr).await;
        let mut second = connect(server.addr).await;
        exchange(&mut second, "2\n", "2\n").await;
        assert_eq!(handle.refused_connections(), 0);
    }));
}

/// A service that is never ready (a server-wide concurrency limit held
/// elsewhere, say) does not hold a frame forever: the handler timeout
/// bounds the wait for readiness too, and the frame fails as a timed-out
/// one, answered by the hook or closing the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_waiting_for_a_service_that_is_never_ready_times_out_like_a_slow_handler() {
    use tower::limit::GlobalConcurrencyLimitLayer;
    within("the test", async {
        for hooked in [false, true] {
            let held = Arc::new(tokio::sync::Semaphore::new(0));
            let builder = Server::builder()
                .handler_timeout(Duration::from_millis(200))
                .layer(GlobalConcurrencyLimitLayer::with_semaphore(held.clone()));
            let builder = if hooked {
                builder.on_error(|error: &Error, _: &Conn| {
                    error.is_timeout().then(|| Frame::from("-ERR busy"))
                })
            } else {
                builder
            };
            let server = start(builder.bind("127.0.0.1:0").await.unwrap(), echo);
            let mut events = server.handle.events();
            let mut client = connect(server.addr).await;
            if hooked {
                exchange(&mut client, "a\nb\n", "-ERR busy\n-ERR busy\n").await;
            } else {
                client.write_all(b"a\nb\n").await.unwrap();
                assert_eq!(read_to_eof(&mut client).await, "");
            }
            let error = next_error(&mut events, addr_of(&client)).await;
            assert!(
                matches!(error, Error::HandlerTimeout { timeout } if timeout == Duration::from_millis(200)),
                "{error:?}"
            );
            server.shutdown().await;
        }
    })
    .await
}
