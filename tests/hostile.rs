//! Hostile and faulty peers, and faulty handlers, against a real server on
//! loopback: what each one costs the server (time, heap, file descriptors,
//! connection slots), and that it costs every other connection nothing.
//!
//! Each test is bounded in time and prints what it measured; run
//! `cargo test -p natter --test hostile -- --nocapture` to see the figures.
//!
//! Heap is measured with a counting global allocator: the most live heap
//! bytes at any moment of a scenario, above what was live when it began.
//! Heap and file descriptors are process-wide, so the tests that measure
//! them run alone ([`alone`]); the others run side by side ([`shared`]).

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{Future, pending};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures::FutureExt;
use natter::layer::HandlerTimeoutLayer;
use natter::{Conn, Delimiter, DelimiterCodec, Error, EventKind, Events, Frame, Server};
use peak_alloc::PeakAlloc;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};
use tower::service_fn;

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

const MIB: usize = 1024 * 1024;

/// What a flooding peer sends, over and over: no delimiter in it.
static FLOOD_CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

static MEASURING: RwLock<()> = RwLock::const_new(());

/// For a test that measures heap or file descriptors: no other test of
/// this file runs meanwhile.
async fn alone() -> RwLockWriteGuard<'static, ()> {
    MEASURING.write().await
}

/// For a test that may run beside others, but not beside one that measures.
async fn shared() -> RwLockReadGuard<'static, ()> {
    MEASURING.read().await
}

/// Runs `scenario`; returns its output and the most heap it held at once,
/// above what was live when it began.
async fn heap_peak<F: Future>(scenario: F) -> (F::Output, usize) {
    let base = HEAP.current_usage();
    HEAP.reset_peak_usage();
    let output = scenario.await;
    (output, HEAP.peak_usage().saturating_sub(base))
}

fn mib(bytes: usize) -> String {
    format!("{:.2} MiB", bytes as f64 / MIB as f64)
}

/// Counts the events `events` has ready, by kind: "connected", "closed",
/// or the error's variant name.
fn tally_ready(events: &mut Events, tally: &mut HashMap<String, usize>) {
    while let Some(Some(event)) = futures::StreamExt::next(events).now_or_never() {
        let kind = match &event.kind {
            EventKind::Connected => "connected".to_owned(),
            EventKind::Closed => "closed".to_owned(),
            EventKind::Error { error, .. } => format!("{error:?}")
                .split(['(', ' ', '{'])
                .next()
                .unwrap_or("error")
                .to_owned(),
            _ => "other".to_owned(),
        };
        *tally.entry(kind).or_default() += 1;
    }
}

// ---------------------------------------------------------------------------
// Slowloris
// ---------------------------------------------------------------------------

/// How one slowloris peer ended.
struct Trickled {
    /// Bytes of its never-ending frame it got to send.
    sent: usize,
    /// From connect until it saw the server close.
    lifetime: Duration,
    closed_by_server: bool,
}

/// Sends one byte of a frame that never ends every 100-500 ms until the
/// server closes the connection (or [`LIMIT`] passes).
async fn trickle(mut stream: TcpStream) -> Trickled {
    let started = Instant::now();
    let mut sent = 0;
    let mut scratch = [0u8; 64];
    let closed_by_server = loop {
        if started.elapsed() > LIMIT {
            break false;
        }
        let pause = Duration::from_millis(rand::random_range(100..=500));
        tokio::select! {
            read = stream.read(&mut scratch) => match read {
                Ok(0) | Err(_) => break true,
                Ok(_) => panic!("a frame that never ended was answered"),
            },
            () = sleep(pause) => {
                if stream.write_all(b"x").await.is_err() {
                    break true;
                }
                sent += 1;
            }
        }
    };
    Trickled {
        sent,
        lifetime: started.elapsed(),
        closed_by_server,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_peers_never_delay_a_healthy_echo_and_the_idle_timeout_reclaims_them() {
    const PEERS: usize = 300;
    let idle = Duration::from_millis(1500);
    let _shared = shared().await;
    within("the test", async {
        let server = Server::builder().idle_timeout(idle);
        let server = start(server.bind("127.0.0.1:0").await.unwrap(), echo);
        let mut healthy = connect(server.addr).await;
        exchange(&mut healthy, "hello\n", "hello\n").await;

        let mut tricklers = JoinSet::new();
        for _ in 0..PEERS {
            tricklers.spawn(trickle(connect(server.addr).await));
        }
        let mut most = 0;
        let mut worst = Duration::ZERO;
        let mut rounds = 0;
        let began = Instant::now();
        // The healthy connection talks every 20 ms until every slowloris
        // connection is gone.
        let until_reclaimed = loop {
            let count = server.handle.connection_count();
            most = most.max(count);
            if count == 1 && most == PEERS + 1 {
                break began.elapsed();
            }
            let asked = Instant::now();
            exchange(&mut healthy, "ping\n", "ping\n").await;
            worst = worst.max(asked.elapsed());
            rounds += 1;
            sleep(Duration::from_millis(20)).await;
        };
        let mut sent = Vec::new();
        let mut longest = Duration::ZERO;
        while let Some(trickled) = tricklers.join_next().await {
            let trickled = trickled.unwrap();
            assert!(
                trickled.closed_by_server,
                "a slowloris peer was never closed"
            );
            // Measured from our connect, a moment before the server's
            // accept started its clock.
            assert!(
                trickled.lifetime + Duration::from_millis(100) >= idle,
                "closed {:?} after connecting, before the idle timeout",
                trickled.lifetime
            );
            longest = longest.max(trickled.lifetime);
            sent.push(trickled.sent);
        }
        let least = sent.iter().min().copied().unwrap_or(0);
        eprintln!(
            "slowloris: {PEERS} peers (all {most} connections open at once), healthy echo: \
             {rounds} round trips, slowest {worst:?}; all reclaimed {until_reclaimed:?} after \
             the last connect (idle timeout {idle:?}); longest slowloris life {longest:?}; each \
             sent {least}..{} bytes of its frame",
            sent.iter().max().copied().unwrap_or(0)
        );
        assert_eq!(most, PEERS + 1, "every slowloris peer was accepted");
        assert!(
            worst < Duration::from_secs(1),
            "a healthy echo took {worst:?}"
        );
        assert!(
            least >= 2,
            "trickling a partial frame must not keep a connection alive, but must have happened"
        );
        assert!(longest < idle + Duration::from_secs(2), "{longest:?}");
        exchange(&mut healthy, "after\n", "after\n").await;
    })
    .await
}

// ---------------------------------------------------------------------------
// Oversized frames
// ---------------------------------------------------------------------------

/// Connects and sends `total` bytes without a delimiter, as fast as the
/// server takes them. Returns the bytes the kernel took and how long until
/// the server closed the connection (its FIN, or a reset).
async fn flood(addr: SocketAddr, total: usize) -> (usize, Duration) {
    let started = Instant::now();
    let (mut reading, mut writing) = connect(addr).await.into_split();
    let closed = tokio::spawn(async move {
        let mut got = Vec::new();
        let _ = reading.read_to_end(&mut got).await;
        assert!(got.is_empty(), "an oversized frame was answered");
        started.elapsed()
    });
    let mut sent = 0;
    while sent < total {
        match writing
            .write(&FLOOD_CHUNK[..FLOOD_CHUNK.len().min(total - sent)])
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(n) => sent += n,
        }
    }
    (sent, within("the server to close", closed).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_and_endless_eof_streams_cost_bounded_heap_and_close_only_their_connection()
 {
    const OFFENDERS: usize = 16;
    const FLOOD: usize = 8 * MIB;
    let _alone = alone().await;
    within("the test", async {
        for codec in [DelimiterCodec::lines(), DelimiterCodec::eof()] {
            let eof_mode = *codec.delimiter() == Delimiter::Eof;
            let server = Server::builder().codec(codec);
            let server = start(server.bind("127.0.0.1:0").await.unwrap(), echo);
            let mut events = server.handle.events();
            let ((sent, slowest), peak) = heap_peak(async {
                let floods: Vec<_> = (0..OFFENDERS)
                    .map(|_| tokio::spawn(flood(server.addr, FLOOD)))
                    .collect();
                // A well-behaved peer is served meanwhile.
                let mut peer = connect(server.addr).await;
                if eof_mode {
                    peer.write_all(b"a small stream\nof two lines")
                        .await
                        .unwrap();
                    finish_writing(&mut peer).await;
                    assert_eq!(read_to_eof(&mut peer).await, "a small stream\nof two lines");
                } else {
                    for _ in 0..10 {
                        exchange(&mut peer, "still served\n", "still served\n").await;
                    }
                }
                let mut sent = 0;
                let mut slowest = Duration::ZERO;
                for flood in floods {
                    let (bytes, closed_after) = within("a flood", flood).await.unwrap();
                    sent += bytes;
                    slowest = slowest.max(closed_after);
                }
                (sent, slowest)
            })
            .await;
            let mut too_long = 0;
            while too_long < OFFENDERS {
                let event = next_event(&mut events, "FrameTooLong reports", |event| {
                    event.error().is_some()
                })
                .await;
                let error = event.error().unwrap();
                assert!(
                    matches!(error, Error::FrameTooLong { limit: 65536 }),
                    "{error}"
                );
                too_long += 1;
            }
            wait_until("every offender to be gone", || {
                server.handle.connection_count() == 0
            })
            .await;
            let mode = if eof_mode { "EOF mode" } else { "line mode" };
            eprintln!(
                "oversized ({mode}, 64 KiB limit): {OFFENDERS} peers sent {} without a \
                 delimiter; every one reported and closed, the last {slowest:?} after it began; \
                 heap peak {}",
                mib(sent),
                mib(peak)
            );
            assert!(
                peak < 8 * MIB,
                "{} of heap for {} of oversized frames",
                mib(peak),
                mib(sent)
            );
            assert!(slowest < Duration::from_secs(2), "{slowest:?}");
            server.shutdown().await;
        }
    })
    .await
}

// ---------------------------------------------------------------------------
// A peer that never reads
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_while_its_handler_writes_costs_bounded_heap_until_the_write_timeout()
 {
    const CHUNK: usize = 16 * 1024;
    let _alone = alone().await;
    within("the test", async {
        let write_timeout = Duration::from_millis(500);
        let sent = Arc::new(AtomicUsize::new(0));
        let server = Server::builder().write_timeout(write_timeout);
        let server = start(server.bind("127.0.0.1:0").await.unwrap(), {
            let sent = sent.clone();
            move |conn: &Conn| {
                let conn = conn.clone();
                let sent = sent.clone();
                service_fn(move |frame: Frame| {
                    let conn = conn.clone();
                    let sent = sent.clone();
                    async move {
                        if frame != "flood" {
                            return Ok::<_, Infallible>(Some(frame));
                        }
                        // Sends for as long as the connection takes them.
                        let chunk = Frame::from(vec![b'y'; CHUNK]);
                        while conn.send(&chunk).await.is_ok() {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(None)
                    }
                })
            }
        });
        let mut events = server.handle.events();
        let mut bystander = connect(server.addr).await;

        let ((took, sluggard), peak) = heap_peak(async {
            let socket = TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            let mut sluggard = within("connect", socket.connect(server.addr))
                .await
                .unwrap();
            let asked = Instant::now();
            sluggard.write_all(b"flood\n").await.unwrap();
            exchange(&mut bystander, "still served\n", "still served\n").await;
            let error = next_error(&mut events, addr_of(&sluggard)).await;
            assert!(
                matches!(error, Error::WriteTimeout(timeout) if timeout == write_timeout),
                "{error}"
            );
            closed_event(&mut events, addr_of(&sluggard)).await;
            (asked.elapsed(), sluggard)
        })
        .await;
        let frames = sent.load(Ordering::Relaxed);
        eprintln!(
            "never reads: the handler queued {frames} frames ({}) before the write timeout \
             ({write_timeout:?}) closed the connection {took:?} after the request; heap peak {}",
            mib(frames * CHUNK),
            mib(peak)
        );
        assert!(peak < 4 * MIB, "{} of heap", mib(peak));
        assert!(took < write_timeout + Duration::from_secs(2), "{took:?}");
        wait_until("only the bystander to be left", || {
            server.handle.connection_count() == 1
        })
        .await;
        exchange(&mut bystander, "and after\n", "and after\n").await;
        drop(sluggard);
    })
    .await
}

// ---------------------------------------------------------------------------
// Resets, half-closes, silence
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_half_closes_and_silent_peers_are_all_reclaimed_without_disturbing_a_healthy_one() {
    const EACH: usize = 100;
    let idle = Duration::from_millis(500);
    let _shared = shared().await;
    within("the test", async {
        let server = Server::builder().idle_timeout(idle).event_capacity(8192);
        let server = start(server.bind("127.0.0.1:0").await.unwrap(), echo);
        let mut events = server.handle.events();
        let addr = server.addr;
        let mut healthy = connect(addr).await;
        exchange(&mut healthy, "hello\n", "hello\n").await;

        let mut peers = JoinSet::new();
        for i in 0..4 * EACH {
            peers.spawn(async move {
                let mut stream = connect(addr).await;
                match i % 4 {
                    // Reset in the middle of a frame.
                    0 => {
                        stream.write_all(b"half a fra").await.unwrap();
                        stream.set_zero_linger().unwrap();
                    }
                    // Reset with a thousand replies on their way.
                    1 => {
                        stream
                            .write_all("a\n".repeat(1000).as_bytes())
                            .await
                            .unwrap();
                        stream.set_zero_linger().unwrap();
                    }
                    // Half-close after a frame and a half, then go without
                    // reading the replies.
                    2 => {
                        stream.write_all(b"x\ny").await.unwrap();
                        finish_writing(&mut stream).await;
                    }
                    // Connect and say nothing: the idle timeout ends it.
                    _ => {
                        let (got, _how) = read_until_closed(&mut stream).await;
                        assert_eq!(got, "");
                    }
                }
            });
        }
        let began = Instant::now();
        let mut rounds = 0;
        let mut worst = Duration::ZERO;
        while !peers.is_empty() || server.handle.connection_count() > 1 {
            let asked = Instant::now();
            exchange(&mut healthy, "ping\n", "ping\n").await;
            worst = worst.max(asked.elapsed());
            rounds += 1;
            while let Some(Some(done)) = peers.join_next().now_or_never() {
                done.unwrap();
            }
            sleep(Duration::from_millis(20)).await;
            assert!(began.elapsed() < LIMIT, "connections were not reclaimed");
        }
        let reclaimed = began.elapsed();
        // Every connection accepted is announced closed, the healthy one
        // excepted.
        let mut tally = HashMap::new();
        within("every Closed event", async {
            loop {
                tally_ready(&mut events, &mut tally);
                let connected = tally.get("connected").copied().unwrap_or(0);
                if connected > 0 && tally.get("closed").copied().unwrap_or(0) + 1 == connected {
                    break;
                }
                sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        eprintln!(
            "faults: {} peers (reset mid-frame, reset with replies pending, half-close and \
             leave, silent); all reclaimed in {reclaimed:?}; healthy echo: {rounds} round \
             trips, slowest {worst:?}; events: {tally:?}",
            4 * EACH
        );
        assert!(tally.get("IdleTimeout").copied().unwrap_or(0) >= EACH);
        assert!(
            worst < Duration::from_secs(1),
            "a healthy echo took {worst:?}"
        );
        assert_eq!(server.handle.connections(), vec![addr_of(&healthy)]);
        exchange(&mut healthy, "after\n", "after\n").await;
    })
    .await
}

// ---------------------------------------------------------------------------
// Faulty handlers
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_panicking_handlers_cost_only_their_frame_or_their_own_connection() {
    const PEERS: usize = 50;
    let _shared = shared().await;
    within("the test", async {
        // Errors are answered in their frame's place; a panic closes.
        let server = Server::builder()
            .event_capacity(4096)
            .on_error(|error: &Error, _: &Conn| match error {
                Error::Handler(_) => Some(Frame::from("-ERR")),
                _ => None,
            });
        let server = start(server.bind("127.0.0.1:0").await.unwrap(), |_: &Conn| {
            service_fn(|frame: Frame| async move {
                match &frame[..] {
                    b"fail" => Err(natter::BoxError::from("no such command")),
                    b"boom" => panic!("boom"),
                    _ => Ok(frame),
                }
            })
        });
        let mut events = server.handle.events();
        let mut peers = JoinSet::new();
        for _ in 0..PEERS {
            let mut stream = connect(server.addr).await;
            peers.spawn(async move {
                stream
                    .write_all(b"ok\nfail\nok\nboom\nnever answered\n")
                    .await
                    .unwrap();
                let (got, _how) = read_until_closed(&mut stream).await;
                assert_eq!(got, "ok\n-ERR\nok\n");
            });
        }
        while let Some(done) = peers.join_next().await {
            done.unwrap();
        }
        wait_until("every panicked connection to be gone", || {
            server.handle.connection_count() == 0
        })
        .await;
        let mut tally = HashMap::new();
        within("every Closed event", async {
            while tally.get("closed").copied().unwrap_or(0) < PEERS {
                tally_ready(&mut events, &mut tally);
                sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        eprintln!("faulty handlers: {PEERS} peers; events {tally:?}");
        assert_eq!(tally.get("Handler").copied(), Some(PEERS));
        assert_eq!(tally.get("Panic").copied(), Some(PEERS));
        let mut newcomer = connect(server.addr).await;
        exchange(&mut newcomer, "still serving\n", "still serving\n").await;
    })
    .await
}

/// Counts the handler futures that were dropped without finishing.
#[derive(Clone, Default)]
struct Abandoned(Arc<AtomicUsize>);

struct DropGuard(Abandoned);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Abandoned {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// Echoes, except that "hang" never returns (and counts its future
    /// when it is dropped).
    fn service(
        &self,
    ) -> impl tower::Service<Frame, Response = Frame, Error = Infallible, Future: Send>
    + Send
    + 'static
    + use<> {
        let abandoned = self.clone();
        service_fn(move |frame: Frame| {
            let abandoned = abandoned.clone();
            async move {
                if frame == "hang" {
                    let _counted_when_dropped = DropGuard(abandoned);
                    pending::<()>().await;
                }
                Ok(frame)
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_never_returns_is_dropped_by_the_handler_timeout_layer() {
    let _shared = shared().await;
    within("the test", async {
        // Without a hook the connection closes; with one that answers
        // timeouts, it carries on.
        for close in [false, true] {
            let abandoned = Abandoned::default();
            let timeout = Duration::from_millis(200);
            let server = Server::builder().layer(HandlerTimeoutLayer::new(timeout));
            let server = if close {
                server
            } else {
                server.on_error(|error: &Error, _: &Conn| {
                    error.is_timeout().then(|| Frame::from("late"))
                })
            };
            let server = start(server.bind("127.0.0.1:0").await.unwrap(), {
                let abandoned = abandoned.clone();
                move |_: &Conn| abandoned.service()
            });
            let mut events = server.handle.events();
            let mut client = connect(server.addr).await;
            let asked = Instant::now();
            client.write_all(b"a\nhang\nb\n").await.unwrap();
            let error = next_error(&mut events, addr_of(&client)).await;
            let took = asked.elapsed();
            assert!(matches!(error, Error::HandlerTimeout { .. }), "{error}");
            if close {
                let (got, _how) = read_until_closed(&mut client).await;
                assert_eq!(got, "a\n", "nothing after the frame that timed out");
            } else {
                assert_eq!(read_exactly(&mut client, 9).await, "a\nlate\nb\n");
                exchange(&mut client, "c\n", "c\n").await;
            }
            assert_eq!(
                abandoned.count(),
                1,
                "the stuck handler's future was dropped"
            );
            eprintln!(
                "never returns, HandlerTimeoutLayer({timeout:?}, hook: {}): reported \
                 {took:?} after the frame; the future was dropped",
                !close
            );
            server.shutdown().await;
        }
    })
    .await
}

/// A pipelined peer matches replies to requests by position, so after a
/// frame that closes the connection (a panic, a handler timeout that says
/// so) no later frame may be answered, even one that was already being
/// handled: its reply would be read as the answer to the failed frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_frames_in_flight_no_frame_after_one_that_closes_the_connection_is_answered() {
    let _shared = shared().await;
    within("the test", async {
        let timeout = Duration::from_millis(100);
        let server = Server::builder()
            .max_in_flight(4)
            .layer(HandlerTimeoutLayer::new(timeout));
        let server = start(server.bind("127.0.0.1:0").await.unwrap(), |_: &Conn| {
            service_fn(|frame: Frame| async move {
                // The failing frame takes longer than the ones after it.
                match &frame[..] {
                    b"panic" => {
                        sleep(Duration::from_millis(50)).await;
                        panic!("boom");
                    }
                    b"hang" => pending::<()>().await,
                    _ => {}
                }
                Ok::<_, Infallible>(frame)
            })
        });
        for failing in ["panic", "hang"] {
            let mut client = connect(server.addr).await;
            client
                .write_all(format!("ok\n{failing}\nafter\n").as_bytes())
                .await
                .unwrap();
            let (got, _how) = read_until_closed(&mut client).await;
            assert_eq!(got, "ok\n", "after a {failing:?} frame");
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_handler_timeout_a_handler_that_never_returns_holds_its_connection_until_shutdown_cuts_it()
 {
    let _shared = shared().await;
    within("the test", async {
        let abandoned = Abandoned::default();
        let drain = Duration::from_millis(300);
        let server = Server::builder().handler_timeout(None).drain_timeout(drain);
        let server = start(server.bind("127.0.0.1:0").await.unwrap(), {
            let abandoned = abandoned.clone();
            move |_: &Conn| abandoned.service()
        });
        let mut client = connect(server.addr).await;
        client.write_all(b"a\nhang\n").await.unwrap();
        assert_eq!(read_exactly(&mut client, 2).await, "a\n");
        // The peer leaves; the handler still runs, and holds the slot.
        drop(client);
        sleep(Duration::from_millis(300)).await;
        assert_eq!(server.handle.connection_count(), 1);
        assert_eq!(abandoned.count(), 0);
        let asked = Instant::now();
        server.shutdown().await;
        let took = asked.elapsed();
        eprintln!(
            "never returns, no timeout: held its connection until shutdown, which cut it \
             {took:?} after it began (drain timeout {drain:?})"
        );
        assert_eq!(
            abandoned.count(),
            1,
            "the stuck handler's future was dropped"
        );
        assert!(took < drain + Duration::from_secs(1), "{took:?}");
    })
    .await
}

// ---------------------------------------------------------------------------
// Many connections
// ---------------------------------------------------------------------------

/// The process's open TCP sockets, and its file descriptors, the fewest
/// seen over 100 ms: a test that just ended may still be closing its
/// runtime's. (Reading the TCP table is slow with thousands of sockets in
/// TIME_WAIT, and other tests open no TCP socket meanwhile: it is read
/// once.)
async fn settled_fds() -> (usize, usize) {
    let mut fewest = open_fds();
    for _ in 0..10 {
        sleep(Duration::from_millis(10)).await;
        fewest = fewest.min(open_fds());
    }
    (open_tcp_sockets(), fewest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connections_opened_and_closed_leak_no_descriptor_and_never_wait_for_event_readers()
 {
    const TOTAL: usize = 10_000;
    const BATCH: usize = 250;
    const EVENT_CAPACITY: usize = 64;
    let _alone = alone().await;
    let test = async {
        let server = Server::builder().event_capacity(EVENT_CAPACITY);
        let server = start(server.bind("127.0.0.1:0").await.unwrap(), echo);
        let _never_read = server.handle.events();
        let mut read_at_the_end = server.handle.events();
        let before = settled_fds().await;
        let began = Instant::now();
        for _ in 0..TOTAL / BATCH {
            let mut batch = JoinSet::new();
            for _ in 0..BATCH {
                let addr = server.addr;
                batch.spawn(async move {
                    let mut stream = connect(addr).await;
                    exchange(&mut stream, "n\n", "n\n").await;
                    finish_writing(&mut stream).await;
                    assert_eq!(read_to_eof(&mut stream).await, "");
                });
            }
            while let Some(done) = batch.join_next().await {
                done.unwrap();
            }
        }
        let took = began.elapsed();
        wait_until("every connection to be gone", || {
            server.handle.connection_count() == 0
        })
        .await;
        let after = settled_fds().await;
        // The last `Closed` events follow the list by a moment.
        let mut seen = 0;
        within("every event, kept or counted", async {
            while seen + read_at_the_end.dropped() < 2 * TOTAL as u64 {
                futures::StreamExt::next(&mut read_at_the_end).await;
                seen += 1;
            }
        })
        .await;
        eprintln!(
            "{TOTAL} connections in batches of {BATCH}: {took:?} ({:.0}/s); open TCP sockets \
             {} before, {} after (all file descriptors: {} before, {} after); an unread event \
             stream of capacity {EVENT_CAPACITY} kept {} events and counted {} dropped",
            TOTAL as f64 / took.as_secs_f64(),
            before.0,
            after.0,
            before.1,
            after.1,
            seen,
            read_at_the_end.dropped()
        );
        // TCP sockets, because a test of this binary that starts meanwhile
        // opens its runtime's descriptors (a Unix socket among them); it
        // opens no TCP socket before this test is done.
        assert!(after.0 <= before.0, "{} sockets leaked", after.0 - before.0);
        assert!(server.handle.connections().is_empty());
        // One Connected and one Closed per connection: the reader that fell
        // behind kept the newest few and counted the rest.
        assert!(seen <= 2 * EVENT_CAPACITY as u64, "{seen}");
        assert_eq!(seen + read_at_the_end.dropped(), 2 * TOTAL as u64);
        server.shutdown().await;
    };
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .expect("10,000 connections took more than a minute");
}

// ---------------------------------------------------------------------------
// Graceful shutdown under load
// ---------------------------------------------------------------------------

/// One client of the shutdown test: its address, the frames it completed
/// writing, and (from its task) what it read back.
struct Talker {
    peer: SocketAddr,
    written: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<BytesMut>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_under_load_answers_every_frame_it_received_and_half_writes_none() {
    const CLIENTS: usize = 40;
    let _shared = shared().await;
    within("the test", async {
        let handled: Arc<Mutex<HashMap<natter::Addr, usize>>> = Arc::default();
        let server = Server::builder().max_in_flight(4);
        let server = start(server.bind("127.0.0.1:0").await.unwrap(), {
            let handled = handled.clone();
            move |conn: &Conn| {
                let peer = conn.peer_addr();
                let handled = handled.clone();
                service_fn(move |frame: Frame| {
                    *handled.lock().unwrap().entry(peer.clone()).or_default() += 1;
                    async move {
                        if frame.ends_with(b"7") {
                            sleep(Duration::from_millis(2)).await;
                        }
                        Ok::<_, Infallible>(frame)
                    }
                })
            }
        });
        let stop = Arc::new(AtomicBool::new(false));
        let mut talkers = Vec::new();
        for id in 0..CLIENTS {
            let stream = connect(server.addr).await;
            let peer = addr_of(&stream);
            let written = Arc::new(AtomicUsize::new(0));
            let (mut reading, mut writing) = stream.into_split();
            let reader = tokio::spawn(async move {
                let mut got = BytesMut::new();
                while let Ok(1..) = reading.read_buf(&mut got).await {}
                got
            });
            let task = tokio::spawn({
                let written = written.clone();
                let stop = stop.clone();
                async move {
                    // Frames cut at random places, a little at a time.
                    let mut seq = 0;
                    let mut pending = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        while pending.len() < 64 {
                            pending.extend_from_slice(format!("c{id}-{seq}\n").as_bytes());
                            seq += 1;
                        }
                        let cut = rand::random_range(1..=pending.len());
                        if writing.write_all(&pending[..cut]).await.is_err() {
                            break;
                        }
                        let frames_done = pending[..cut].iter().filter(|&&b| b == b'\n').count();
                        written.fetch_add(frames_done, Ordering::SeqCst);
                        pending.drain(..cut);
                        sleep(Duration::from_millis(rand::random_range(0..3))).await;
                    }
                    // End on a frame boundary, then half-close: bytes left
                    // at a half-close would be a last frame of their own.
                    if let Some(end) = pending.iter().position(|&b| b == b'\n') {
                        let _ = writing.write_all(&pending[..=end]).await;
                    }
                    drop(writing);
                    within("the reader", reader).await.unwrap()
                }
            });
            talkers.push(Talker {
                peer,
                written,
                task,
            });
        }
        sleep(Duration::from_millis(300)).await;
        // What the server has read so far. (A frame our `write` returned
        // for may still be on its way through a busy loopback: the test
        // below this one covers bytes that reached the server's socket but
        // were not reported yet.)
        let before: Vec<usize> = {
            let handled = handled.lock().unwrap();
            talkers
                .iter()
                .map(|talker| {
                    handled
                        .get(&natter::Addr::from(talker.peer))
                        .copied()
                        .unwrap_or(0)
                })
                .collect()
        };
        let asked = Instant::now();
        let shutdown = tokio::spawn({
            let handle = server.handle.clone();
            async move { handle.shutdown().await }
        });
        // The clients stop writing as shutdown begins, and half-close.
        stop.store(true, Ordering::SeqCst);
        within("shutdown", shutdown).await.unwrap();
        let took = asked.elapsed();
        let mut answered = 0;
        let mut written = 0;
        for (id, (talker, before)) in talkers.into_iter().zip(before).enumerate() {
            let got = within("a talker", talker.task).await.unwrap();
            let expected: String = (0..)
                .map(|seq| format!("c{id}-{seq}\n"))
                .scan(0, |len, frame| {
                    *len += frame.len();
                    (*len <= got.len()).then_some(frame)
                })
                .collect();
            assert!(
                got[..] == *expected.as_bytes(),
                "client {id}: not the first frames in order, or a reply half-written: {} \
                 bytes, ending {:?}",
                got.len(),
                String::from_utf8_lossy(&got[got.len().saturating_sub(40)..])
            );
            let replies = got.iter().filter(|&&b| b == b'\n').count();
            let handled = handled
                .lock()
                .unwrap()
                .get(&natter::Addr::from(talker.peer))
                .copied();
            assert_eq!(
                Some(replies),
                handled,
                "client {id}: every frame handled is answered"
            );
            assert!(
                replies >= before,
                "client {id}: {before} frames were read before shutdown, {replies} answered"
            );
            answered += replies;
            written += talker.written.load(Ordering::SeqCst);
        }
        eprintln!(
            "shutdown under load: {CLIENTS} clients wrote {written} frames; the {answered} the \
             server read were all answered, none half-written (the rest were sent after \
             shutdown began); shutdown took {took:?}"
        );
        let served = within("serve to return", server.served).await;
        served.unwrap().expect("serve returned an error");
        assert_eq!(server.handle.connection_count(), 0);
    })
    .await
}

/// Tokio forgets a socket's readiness after a short read and learns of new
/// bytes only when its reactor next polls the kernel. Here a frame reaches
/// the server's socket while the server's only thread is busy in a handler,
/// and shutdown begins in that moment: when the thread is free again, the
/// connection's task runs before the reactor has reported the new bytes.
/// The kernel has acknowledged the frame, so it must be answered.
#[tokio::test(flavor = "current_thread")]
async fn a_frame_in_the_socket_when_shutdown_begins_is_answered_before_tokio_reports_it() {
    let _shared = shared().await;
    within("the test", async {
        let (busy, handler_busy) = std::sync::mpsc::channel::<()>();
        let (go_on, may_go_on) = std::sync::mpsc::channel::<()>();
        let may_go_on = Arc::new(Mutex::new(may_go_on));
        let server = start(Server::builder().bind("127.0.0.1:0").await.unwrap(), {
            move |_: &Conn| {
                let busy = busy.clone();
                let may_go_on = may_go_on.clone();
                service_fn(move |frame: Frame| {
                    if frame == "a" {
                        // Blocks the runtime's only thread, as a handler
                        // doing blocking work would, until the test has
                        // sent the next frame and begun the shutdown.
                        busy.send(()).unwrap();
                        let _ = may_go_on
                            .lock()
                            .unwrap()
                            .recv_timeout(Duration::from_secs(5));
                    }
                    std::future::ready(Ok::<_, Infallible>(frame))
                })
            }
        });
        let handle = server.handle.clone();
        let addr = server.addr;
        let peer = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream.set_read_timeout(Some(LIMIT)).unwrap();
            stream.write_all(b"a\n").unwrap();
            handler_busy.recv_timeout(LIMIT).unwrap();
            stream.write_all(b"b\n").unwrap();
            // On loopback the bytes are in the server's socket once
            // `write` returns and the kernel's softirq ran; give it time.
            std::thread::sleep(Duration::from_millis(50));
            let shutdown = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(handle.shutdown());
            });
            std::thread::sleep(Duration::from_millis(50));
            go_on.send(()).unwrap();
            let mut got = Vec::new();
            let _ = stream.read_to_end(&mut got);
            shutdown.join().unwrap();
            got
        });
        let got = within("the peer", tokio::task::spawn_blocking(move || peer.join()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            "a\nb\n",
            "a frame the server's kernel had acknowledged before shutdown was dropped"
        );
        within("serve to return", server.served)
            .await
            .unwrap()
            .unwrap();
    })
    .await
}

// ---------------------------------------------------------------------------
// Defaults
// ---------------------------------------------------------------------------

/// A server built with the defaults does not keep a silent peer forever.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn by_default_a_server_closes_a_silent_connection_after_five_minutes() {
    let _shared = shared().await;
    let server = start(Server::builder().bind("127.0.0.1:0").await.unwrap(), echo);
    let mut events = server.handle.events();
    let mut silent = connect(server.addr).await;
    let began = Instant::now();
    let peer = addr_of(&silent);
    // Time is paused and jumps to the next timer: `within`'s 10 s would
    // fire first, so this wait has its own, longer bound.
    let error = tokio::time::timeout(Duration::from_secs(400), async {
        loop {
            let event = futures::StreamExt::next(&mut events).await.unwrap();
            if let (true, Some(error)) = (event.peer == peer, event.error()) {
                return error.clone();
            }
        }
    })
    .await
    .expect("no idle timeout within 400 s");
    assert!(
        matches!(error, Error::IdleTimeout(idle) if idle == Duration::from_secs(300)),
        "{error}"
    );
    assert!(began.elapsed() >= Duration::from_secs(300));
    let (got, _how) = read_until_closed(&mut silent).await;
    assert_eq!(got, "");
}

/// A server built with the defaults does not let a handler that never
/// returns hold its connection forever.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn by_default_a_handler_that_never_returns_closes_its_connection_after_a_minute() {
    let _shared = shared().await;
    let abandoned = Abandoned::default();
    let server = start(Server::builder().bind("127.0.0.1:0").await.unwrap(), {
        let abandoned = abandoned.clone();
        move |_: &Conn| abandoned.service()
    });
    let mut events = server.handle.events();
    let mut client = connect(server.addr).await;
    let peer = addr_of(&client);
    client.write_all(b"a\nhang\nb\n").await.unwrap();
    let began = Instant::now();
    // Paused time jumps to the next timer; this wait has its own bound.
    let error = tokio::time::timeout(Duration::from_secs(100), async {
        loop {
            let event = futures::StreamExt::next(&mut events).await.unwrap();
            if let (true, Some(error)) = (event.peer == peer, event.error()) {
                return error.clone();
            }
        }
    })
    .await
    .expect("no handler timeout within 100 s");
    assert!(
        matches!(
            error,
            Error::HandlerTimeout { timeout } if timeout == Duration::from_secs(60)
        ),
        "{error}"
    );
    assert!(began.elapsed() >= Duration::from_secs(60));
    let (got, _how) = read_until_closed(&mut client).await;
    assert_eq!(got, "a\n", "nothing after the frame that timed out");
    assert_eq!(
        abandoned.count(),
        1,
        "the stuck handler's future was dropped"
    );
}
