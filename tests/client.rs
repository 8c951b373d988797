//! Specifications of natter's client, over real loopback sockets.
//!
//! Two kinds of server answer the client: natter's own `Server`, and a
//! plain `TcpListener` that reads and writes raw bytes, which pins down
//! exactly what the client puts on the wire and what it accepts from it.
//! Every test is bounded by a timeout, and none sleeps to wait for
//! something it can await instead (the sleeps below are a handler's or a
//! server's simulated work).

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::future::{Ready, join_all, ready};
use futures::{FutureExt, StreamExt};
use natter::client::Backoff;
use natter::{
    BoxError, Client, Conn, Error, EventKind, Events, Frame, IntoReply, Server, ServerHandle,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use support::{refusing_addr, unresponsive_listener};
use tokio::sync::{mpsc, oneshot};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Runs a test body, failing it if it takes longer than a few seconds.
async fn within<F: Future>(body: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), body)
        .await
        .expect("the test did not finish within 10 s")
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// A plain TCP listener on a free loopback port.
async fn raw_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Accepts one connection on a raw listener, ready for line reads.
async fn accept(listener: &TcpListener) -> BufReader<TcpStream> {
    BufReader::new(listener.accept().await.unwrap().0)
}

/// The next line the raw server receives, `\n` included ("" at EOF).
async fn read_line(server: &mut BufReader<TcpStream>) -> String {
    let mut line = Vec::new();
    server.read_until(b'\n', &mut line).await.unwrap();
    String::from_utf8(line).unwrap()
}

/// Starts a natter server on a free loopback port.
async fn natter_server<M, S>(
    server: natter::ServerBuilder<tower::layer::util::Identity>,
    make_service: M,
) -> (SocketAddr, ServerHandle)
where
    M: FnMut(&Conn) -> S + Send + 'static,
    S: Service<Frame> + Send + 'static,
    S::Response: IntoReply + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let server = server.bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().socket_addr().unwrap();
    let handle = server.handle();
    tokio::spawn(server.serve(make_service));
    (addr, handle)
}

/// Waits for the next event of the given kind and returns it.
async fn next_event(events: &mut Events, wanted: impl Fn(&EventKind) -> bool) -> EventKind {
    loop {
        let event = events.next().await.expect("the event stream ended");
        if wanted(&event.kind) {
            return event.kind;
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Reading {
    sensor: String,
    celsius: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Ack {
    seq: u64,
    sensor: String,
}

fn ack(seq: u64, sensor: &str) -> Ack {
    Ack {
        seq,
        sensor: sensor.into(),
    }
}

/// A handler that parses every frame as a `T` and passes the values on;
/// a frame that is not a `T` is the handler's error.
fn pass_on<T>(
    values: mpsc::UnboundedSender<T>,
) -> impl Service<Frame, Response = (), Error = Error, Future = Ready<Result<(), Error>>> + Send
where
    T: DeserializeOwned + Send + 'static,
{
    service_fn(move |frame: Frame| {
        ready(frame.json::<T>().map(|value| {
            let _ = values.send(value);
        }))
    })
}

// ---------------------------------------------------------------------------
// Typed frames, both ways
// ---------------------------------------------------------------------------

#[tokio::test]
async fn send_json_writes_one_line_of_compact_json() {
    within(async {
        let (listener, addr) = raw_listener().await;
        let client = Client::builder().connect(addr).await.unwrap();
        let mut server = accept(&listener).await;

        let reading = Reading {
            sensor: "t1".into(),
            celsius: 21.5,
        };
        client.send_json(&reading).await.unwrap();
        client
            .send_json(&serde_json::json!({"text": "two\nlines"}))
            .await
            .unwrap();

        assert_eq!(
            read_line(&mut server).await,
            "{\"sensor\":\"t1\",\"celsius\":21.5}\n"
        );
        assert_eq!(read_line(&mut server).await, "{\"text\":\"two\\nlines\"}\n");
    })
    .await;
}

#[tokio::test]
async fn a_handler_receives_the_typed_values_a_raw_server_writes() {
    within(async {
        let (listener, addr) = raw_listener().await;
        let (values, mut received) = mpsc::unbounded_channel::<Ack>();
        let client = Client::builder()
            .connect_with(addr, |_: &Conn| pass_on(values))
            .await
            .unwrap();
        let mut server = accept(&listener).await;

        // One write holding two frames, the second with a CRLF ending.
        server
            .write_all(b"{\"seq\":1,\"sensor\":\"t1\"}\n{\"seq\":2,\"sensor\":\"t2\"}\r\n")
            .await
            .unwrap();

        assert_eq!(received.recv().await.unwrap(), ack(1, "t1"));
        assert_eq!(received.recv().await.unwrap(), ack(2, "t2"));
        client.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn typed_values_round_trip_through_a_natter_server() {
    within(async {
        // The server parses each Reading and acknowledges it with an Ack.
        let (addr, _server) = natter_server(Server::builder(), |_: &Conn| {
            let mut seq = 0;
            service_fn(move |frame: Frame| {
                seq += 1;
                let ack = frame.json::<Reading>().and_then(|reading| {
                    Frame::from_json(&Ack {
                        seq,
                        sensor: reading.sensor,
                    })
                });
                async move { ack }
            })
        })
        .await;
        let (values, mut acks) = mpsc::unbounded_channel::<Ack>();
        let client = Client::builder()
            .connect_with(addr, |_: &Conn| pass_on(values))
            .await
            .unwrap();

        for sensor in ["t1", "t2", "t3"] {
            client
                .send_json(&Reading {
                    sensor: sensor.into(),
                    celsius: -4.25,
                })
                .await
                .unwrap();
        }

        for (seq, sensor) in [(1, "t1"), (2, "t2"), (3, "t3")] {
            assert_eq!(acks.recv().await.unwrap(), ack(seq, sensor));
        }
        client.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_frame_that_is_not_the_expected_json_is_reported_and_closes_the_connection() {
    within(async {
        let (listener, addr) = raw_listener().await;
        let (values, mut received) = mpsc::unbounded_channel::<Ack>();
        let client = Client::builder()
            .connect_with(addr, |_: &Conn| pass_on(values))
            .await
            .unwrap();
        let mut events = client.events();
        let mut server = accept(&listener).await;

        server
            .write_all(b"{\"seq\":1,\"sensor\":\"t1\"}\nnot json\n{\"seq\":2,\"sensor\":\"t2\"}\n")
            .await
            .unwrap();

        assert_eq!(received.recv().await.unwrap(), ack(1, "t1"));
        let error = next_event(&mut events, |kind| matches!(kind, EventKind::Error { .. })).await;
        let EventKind::Error {
            error: Error::Json { prefix, .. },
            closing: true,
        } = error
        else {
            panic!("expected a JSON error that closes, got {error:?}");
        };
        assert_eq!(prefix, "not json");
        // The frame after the bad one is not handled: the client closed.
        assert_eq!(read_line(&mut server).await, "");
        assert!(received.recv().await.is_none());
        let closed = next_event(&mut events, |kind| matches!(kind, EventKind::Closed)).await;
        assert!(matches!(closed, EventKind::Closed));
        assert!(matches!(client.close().await, Err(Error::Json { .. })));
    })
    .await;
}

#[tokio::test]
async fn without_a_handler_a_natter_server_s_replies_are_dropped_and_the_connection_stays_up() {
    within(async {
        let (seen, mut frames) = mpsc::unbounded_channel::<Frame>();
        let (addr, _server) = natter_server(Server::builder(), move |_: &Conn| {
            let seen = seen.clone();
            service_fn(move |frame: Frame| {
                let _ = seen.send(frame.clone());
                async move { Ok::<_, Error>(frame) } // echoed, and dropped by the client
            })
        })
        .await;
        let client = Client::builder().connect(addr).await.unwrap();
        let mut events = client.events();

        for i in 0..100 {
            client.send(format!("frame {i}")).await.unwrap();
        }
        for i in 0..100 {
            assert_eq!(frames.recv().await.unwrap(), format!("frame {i}").as_str());
        }

        client.close().await.unwrap();
        let closed = next_event(&mut events, |kind| {
            matches!(kind, EventKind::Error { .. } | EventKind::Closed)
        })
        .await;
        assert!(matches!(closed, EventKind::Closed), "{closed:?}");
    })
    .await;
}

// ---------------------------------------------------------------------------
// close()
// ---------------------------------------------------------------------------

/// A client whose handler signals when it starts, sleeps 300 ms, then
/// finishes with `outcome`; and the raw server that sent it one frame.
async fn client_with_slow_handler(
    outcome: Result<(), &'static str>,
) -> (
    Client,
    oneshot::Receiver<()>,
    Arc<AtomicBool>,
    BufReader<TcpStream>,
) {
    let (listener, addr) = raw_listener().await;
    let (started, started_rx) = oneshot::channel();
    let mut started = Some(started);
    let finished = Arc::new(AtomicBool::new(false));
    let done = finished.clone();
    let client = Client::builder()
        .connect_with(addr, move |_: &Conn| {
            service_fn(move |_: Frame| {
                if let Some(started) = started.take() {
                    let _ = started.send(());
                }
                let done = done.clone();
                async move {
                    tokio::time::sleep(ms(300)).await;
                    done.store(true, Ordering::SeqCst);
                    outcome.map_err(BoxError::from)
                }
            })
        })
        .await
        .unwrap();
    let mut server = accept(&listener).await;
    server.write_all(b"work\n").await.unwrap();
    (client, started_rx, finished, server)
}

#[tokio::test]
async fn close_waits_for_the_running_handler_to_finish() {
    within(async {
        let (client, started, finished, mut server) = client_with_slow_handler(Ok(())).await;
        started.await.unwrap();

        let begun = Instant::now();
        let closing = tokio::spawn(client.close());
        assert_eq!(read_line(&mut server).await, "", "the server sees our FIN");
        drop(server);
        closing.await.unwrap().unwrap();

        assert!(
            finished.load(Ordering::SeqCst),
            "close returned before the handler finished"
        );
        assert!(
            begun.elapsed() >= ms(250),
            "close took only {:?}",
            begun.elapsed()
        );
    })
    .await;
}

#[tokio::test]
async fn close_returns_the_error_of_a_handler_that_failed() {
    within(async {
        let (client, started, finished, mut server) =
            client_with_slow_handler(Err("disk full")).await;
        started.await.unwrap();

        let closing = tokio::spawn(client.close());
        assert_eq!(read_line(&mut server).await, "");
        drop(server);
        let error = closing.await.unwrap().unwrap_err();

        assert!(finished.load(Ordering::SeqCst));
        assert!(matches!(error, Error::Handler(_)), "{error:?}");
        assert_eq!(error.to_string(), "handler failed: disk full");
    })
    .await;
}

// ---------------------------------------------------------------------------
// ClientService: request/response
// ---------------------------------------------------------------------------

/// A raw server that reads `count` requests before answering any, then
/// answers each with `re:` and the request, in order. A client that did not
/// pipeline would never get an answer.
async fn answer_after_reading_all(listener: TcpListener, count: usize) {
    let mut server = accept(&listener).await;
    let mut requests = Vec::new();
    for _ in 0..count {
        requests.push(read_line(&mut server).await);
    }
    let answers: String = requests
        .iter()
        .map(|request| format!("re:{request}"))
        .collect();
    server.write_all(answers.as_bytes()).await.unwrap();
    // Stay connected until the client closes.
    assert_eq!(read_line(&mut server).await, "");
}

#[tokio::test]
async fn pipelined_requests_are_each_answered_with_their_own_response() {
    within(async {
        let (listener, addr) = raw_listener().await;
        let server = tokio::spawn(answer_after_reading_all(listener, 200));
        let service = Client::builder().connect_service(addr).await.unwrap();

        let requests =
            (0..200).map(|i| service.clone().oneshot(Frame::from(format!("request {i}"))));
        let responses = join_all(requests).await;

        for (i, response) in responses.into_iter().enumerate() {
            assert_eq!(response.unwrap(), format!("re:request {i}").as_str());
        }
        service.close();
        server.await.unwrap();
    })
    .await;
}

/// A request's wake-up must never be lost when the driver, on another
/// worker thread, takes the request before the caller's wake-up lands (it
/// once was: the late wake-up spent the driver's fresh registration, and the
/// next request waited forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_from_another_thread_never_stall_the_connection() {
    within(async {
        let service = Client::builder()
            .connect_service(echo_server().await)
            .await
            .unwrap();
        pipeline(service, 20_000, 8, |i| format!("request {i}")).await;
    })
    .await;
}

/// A natter echo server on a free loopback port (it runs until the test
/// ends).
async fn echo_server() -> SocketAddr {
    let (addr, _handle) = natter_server(Server::builder(), |_: &Conn| {
        service_fn(|frame: Frame| ready(Ok::<_, BoxError>(frame)))
    })
    .await;
    addr
}

/// Sends `total` requests through `service` with `window` in flight, the
/// next one as soon as an answer comes, as the `client` example does;
/// each answer must be its own request echoed. Closes the service at the
/// end.
async fn pipeline(
    mut service: natter::ClientService,
    total: usize,
    window: usize,
    request: impl Fn(usize) -> String,
) {
    let mut in_flight = futures::stream::FuturesOrdered::new();
    let (mut sent, mut answered) = (0, 0);
    while answered < total {
        if sent < total && in_flight.len() < window {
            let frame = Frame::from(request(sent));
            in_flight.push_back(service.ready().await.unwrap().call(frame));
            sent += 1;
            continue;
        }
        let answer = in_flight.next().await.unwrap().unwrap();
        assert!(answer == request(answered).as_str(), "answer {answered}");
        answered += 1;
    }
    service.close();
}

#[tokio::test]
async fn the_idle_timeout_closes_a_connection_whose_server_stops_answering_and_fails_its_request() {
    within(async {
        let (listener, addr) = raw_listener().await;
        let server = tokio::spawn(async move {
            let mut server = accept(&listener).await;
            let first = read_line(&mut server).await;
            server
                .write_all(format!("re:{first}").as_bytes())
                .await
                .unwrap();
            // Reads the second request and never answers it.
            let _ = read_line(&mut server).await;
            read_line(&mut server).await
        });
        let service = Client::builder()
            .idle_timeout(ms(200))
            .connect_service(addr)
            .await
            .unwrap();
        let mut events = service.events();
        assert_eq!(
            service.clone().oneshot(Frame::from("first")).await.unwrap(),
            "re:first"
        );

        let started = Instant::now();
        let unanswered = service.clone().oneshot(Frame::from("second")).await;

        assert!(matches!(unanswered, Err(Error::Closed)), "{unanswered:?}");
        assert!(started.elapsed() >= ms(150), "{:?}", started.elapsed());
        let error = next_event(&mut events, |kind| matches!(kind, EventKind::Error { .. })).await;
        assert!(
            matches!(
                &error,
                EventKind::Error {
                    error: Error::IdleTimeout(_),
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(server.await.unwrap(), "", "the client closed");
    })
    .await;
}

#[tokio::test]
async fn call_all_yields_responses_in_request_order_even_when_the_server_finishes_them_out_of_order()
 {
    within(async {
        // Up to 8 frames at once, later frames finishing sooner.
        let (addr, _server) = natter_server(Server::builder().max_in_flight(8), |_: &Conn| {
            service_fn(|frame: Frame| async move {
                let n: u64 = frame.to_str().unwrap().parse().unwrap();
                tokio::time::sleep(ms(8 - n % 8)).await;
                Ok::<_, Error>(Frame::from(format!("{}", n * n)))
            })
        })
        .await;
        let service = Client::builder().connect_service(addr).await.unwrap();

        let requests = futures::stream::iter((0..64u64).map(|n| Frame::from(n.to_string())));
        let responses: Vec<_> = service.clone().call_all(requests).collect().await;

        let expected: Vec<String> = (0..64u64).map(|n| (n * n).to_string()).collect();
        let got: Vec<String> = responses
            .into_iter()
            .map(|r| r.unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(got, expected);
    })
    .await;
}

#[tokio::test]
async fn a_timed_out_request_s_late_answer_is_never_given_to_the_next_request() {
    within(async {
        let (listener, addr) = raw_listener().await;
        let client = Client::builder().connect_service(addr).await.unwrap();
        let mut service = ServiceBuilder::new().timeout(ms(100)).service(client);
        let mut server = accept(&listener).await;

        let slow = service.ready().await.unwrap().call("slow".into());
        assert_eq!(read_line(&mut server).await, "slow\n");
        let error = slow.await.unwrap_err();
        assert!(error.is::<tower::timeout::error::Elapsed>(), "{error}");

        // The next request goes out before the late answer comes in.
        let next = tokio::spawn(service.ready().await.unwrap().call("next".into()));
        assert_eq!(read_line(&mut server).await, "next\n");
        server.write_all(b"answer to slow\n").await.unwrap();
        server.write_all(b"answer to next\n").await.unwrap();

        assert_eq!(next.await.unwrap().unwrap(), "answer to next");
        assert_eq!(
            service
                .ready()
                .await
                .unwrap()
                .call("again".into())
                .await
                .ok(),
            None,
            "times out: no answer"
        );
    })
    .await;
}

#[tokio::test]
async fn a_server_that_reads_but_never_answers_fills_max_pending_and_then_readiness_waits() {
    within(async {
        let (listener, addr) = raw_listener().await;
        let client = Client::builder()
            .max_pending(3)
            .connect_service(addr)
            .await
            .unwrap();
        // Callers give up after 50 ms, but their requests keep their places
        // until answered.
        let mut service = ServiceBuilder::new().timeout(ms(50)).service(client);
        let mut server = accept(&listener).await;
        for request in ["a", "b", "c"] {
            let call = service.ready().await.unwrap().call(request.into());
            assert_eq!(read_line(&mut server).await, format!("{request}\n"));
            assert!(call.await.is_err(), "no answer, so it times out");
        }
        // Three unanswered: no fourth request until an answer comes.
        assert!(service.ready().now_or_never().is_none());

        server.write_all(b"answer to a\n").await.unwrap();
        let call = service.ready().await.unwrap().call("d".into());
        assert_eq!(read_line(&mut server).await, "d\n");
        server.write_all(b"to b\nto c\nto d\n").await.unwrap();
        assert_eq!(call.await.unwrap(), "to d");
        // Everything answered: all three places are free again.
        for request in ["e", "f", "g"] {
            let call = service.ready().await.unwrap().call(request.into());
            assert_eq!(read_line(&mut server).await, format!("{request}\n"));
            server
                .write_all(format!("to {request}\n").as_bytes())
                .await
                .unwrap();
            assert_eq!(call.await.unwrap(), format!("to {request}"));
        }
    })
    .await;
}

#[tokio::test]
async fn a_server_that_does_not_read_makes_readiness_wait_once_write_buffer_bytes_are_queued() {
    within(async {
        // A pipe of 256 bytes, and a write buffer of 128: at most about
        // 256 + 2 x 128 bytes (and a request) can be out of the caller's
        // hands, whatever max_pending allows.
        let (ours, theirs) = tokio::io::duplex(256);
        let mut service = Client::builder()
            .write_buffer(128)
            .max_pending(1000)
            .connect_service(natter::transport::memory::Once::new(ours))
            .await
            .unwrap();
        let request = Frame::from("x".repeat(63));
        let mut calls = Vec::new();
        while let Ok(ready) = tokio::time::timeout(ms(100), service.ready()).await {
            calls.push(ready.unwrap().call(request.clone()));
            assert!(calls.len() <= 16, "readiness never waited");
        }
        assert!(calls.len() >= 4, "only {} requests went out", calls.len());

        // Once the server reads and answers, every request is answered
        // and readiness comes back.
        let (read, mut write) = tokio::io::split(theirs);
        let mut read = BufReader::new(read);
        let answers = tokio::spawn(async move {
            let mut line = String::new();
            loop {
                line.clear();
                if read.read_line(&mut line).await.unwrap() == 0 {
                    break;
                }
                write.write_all(line.as_bytes()).await.unwrap();
            }
        });
        for call in calls {
            assert_eq!(call.await.unwrap(), request);
        }
        let answer = service.ready().await.unwrap().call(request.clone());
        assert_eq!(answer.await.unwrap(), request);
        service.close();
        answers.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_place_taken_by_poll_ready_and_not_used_is_free_again_once_its_service_is_dropped() {
    within(async {
        let (listener, addr) = raw_listener().await;
        let service = Client::builder()
            .max_pending(1)
            .connect_service(addr)
            .await
            .unwrap();
        let mut server = accept(&listener).await;
        let mut first = service.clone();
        first.ready().await.unwrap();
        // The one place is taken: another clone waits.
        let mut second = service.clone();
        assert!(second.ready().now_or_never().is_none());
        drop(first);
        let answer = tokio::spawn(second.oneshot("after".into()));
        assert_eq!(read_line(&mut server).await, "after\n");
        server.write_all(b"re:after\n").await.unwrap();
        assert_eq!(answer.await.unwrap().unwrap(), "re:after");
    })
    .await;
}

#[tokio::test]
async fn max_pending_zero_is_refused() {
    let error = Client::builder()
        .max_pending(0)
        .connect_service(refusing_addr())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidConfig(_)), "{error}");
}

#[tokio::test]
async fn buffer_and_concurrency_limit_layers_bound_the_requests_in_flight() {
    within(async {
        let (listener, addr) = raw_listener().await;
        let received = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let most_in_flight = Arc::new(AtomicUsize::new(0));

        // The server reads on one task and answers, 20 ms apart, on another,
        // so it sees how many requests are in flight at once.
        let server = {
            let (received, answered, most_in_flight) =
                (received.clone(), answered.clone(), most_in_flight.clone());
            tokio::spawn(async move {
                let (read, mut write) = listener.accept().await.unwrap().0.into_split();
                let (queue, mut to_answer) = mpsc::unbounded_channel::<Vec<u8>>();
                let counted = answered.clone();
                let writer = tokio::spawn(async move {
                    while let Some(request) = to_answer.recv().await {
                        tokio::time::sleep(ms(20)).await;
                        // Counted before writing: the client may send its
                        // next request as soon as the answer is out.
                        counted.fetch_add(1, Ordering::SeqCst);
                        write.write_all(&request).await.unwrap();
                    }
                });
                let mut read = BufReader::new(read);
                loop {
                    let mut request = Vec::new();
                    if read.read_until(b'\n', &mut request).await.unwrap() == 0 {
                        break;
                    }
                    let now = received.fetch_add(1, Ordering::SeqCst) + 1
                        - answered.load(Ordering::SeqCst);
                    most_in_flight.fetch_max(now, Ordering::SeqCst);
                    queue.send(request).unwrap();
                }
                drop(queue);
                writer.await.unwrap();
            })
        };
        let client = Client::builder().connect_service(addr).await.unwrap();
        let service = ServiceBuilder::new()
            .buffer(16)
            .concurrency_limit(4)
            .service(client.clone());

        let callers = (0..20).map(|i| {
            let mut service = service.clone(); // ready() the clone we call
            tokio::spawn(async move {
                service
                    .ready()
                    .await?
                    .call(Frame::from(format!("{i}")))
                    .await
            })
        });
        for (i, caller) in join_all(callers).await.into_iter().enumerate() {
            assert_eq!(caller.unwrap().unwrap(), i.to_string().as_str());
        }

        let most = most_in_flight.load(Ordering::SeqCst);
        assert!(
            (2..=4).contains(&most),
            "{most} requests were in flight at once"
        );
        assert_eq!(received.load(Ordering::SeqCst), 20);
        client.close();
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_call_on_a_clone_not_made_ready_fails_unsent_instead_of_panicking() {
    within(async {
        let (listener, addr) = raw_listener().await;
        let service = Client::builder().connect_service(addr).await.unwrap();
        let mut server = accept(&listener).await;

        // tower's trap (tower #547): a clone does not carry readiness.
        let mut clone = service.clone();
        let error = clone.call("skipped ready".into()).await.unwrap_err();
        assert!(matches!(error, Error::NotReady), "{error:?}");

        // Nothing was sent, and the connection carries on.
        let answer = tokio::spawn(clone.oneshot("made ready".into()));
        assert_eq!(read_line(&mut server).await, "made ready\n");
        server.write_all(b"re:made ready\n").await.unwrap();
        assert_eq!(answer.await.unwrap().unwrap(), "re:made ready");
    })
    .await;
}

#[tokio::test]
async fn a_request_containing_the_delimiter_fails_unsent_and_the_connection_carries_on() {
    within(async {
        let (listener, addr) = raw_listener().await;
        let mut service = Client::builder().connect_service(addr).await.unwrap();
        let mut server = accept(&listener).await;

        let error = service
            .ready()
            .await
            .unwrap()
            .call("two\nlines".into())
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::DelimiterInFrame { offset: 3 }),
            "{error:?}"
        );

        let answer = tokio::spawn(service.clone().oneshot("one line".into()));
        assert_eq!(
            read_line(&mut server).await,
            "one line\n",
            "nothing else was sent"
        );
        server.write_all(b"re:one line\n").await.unwrap();
        assert_eq!(answer.await.unwrap().unwrap(), "re:one line");
    })
    .await;
}

#[tokio::test]
async fn every_waiting_request_fails_with_closed_when_a_raw_server_vanishes() {
    within(async {
        let (listener, addr) = raw_listener().await;
        let mut service = Client::builder().connect_service(addr).await.unwrap();
        let mut server = accept(&listener).await;

        let waiting: Vec<_> = (0..3)
            .map(|i| tokio::spawn(service.clone().oneshot(Frame::from(format!("{i}")))))
            .collect();
        for _ in 0..3 {
            read_line(&mut server).await;
        }
        drop(server);

        for request in waiting {
            assert!(matches!(request.await.unwrap(), Err(Error::Closed)));
        }
        assert!(matches!(service.ready().await, Err(Error::Closed)));
        assert!(matches!(
            service.clone().oneshot("late".into()).await,
            Err(Error::Closed)
        ));
    })
    .await;
}

#[tokio::test]
async fn every_waiting_request_fails_with_closed_when_a_natter_server_is_cut() {
    within(async {
        let (handling, mut handled) = mpsc::unbounded_channel();
        let (addr, server) = natter_server(Server::builder(), move |_: &Conn| {
            let handling = handling.clone();
            service_fn(move |_: Frame| {
                let _ = handling.send(());
                std::future::pending::<Result<Frame, Error>>() // never answers
            })
        })
        .await;
        let mut service = Client::builder().connect_service(addr).await.unwrap();

        let waiting: Vec<_> = (0..5)
            .map(|i| tokio::spawn(service.clone().oneshot(Frame::from(format!("{i}")))))
            .collect();
        handled.recv().await.unwrap();
        server.cut().await;

        for request in waiting {
            assert!(matches!(request.await.unwrap(), Err(Error::Closed)));
        }
        assert!(matches!(service.ready().await, Err(Error::Closed)));
    })
    .await;
}

#[tokio::test]
async fn reconnects_after_the_server_restarts_and_never_sends_a_request_twice() {
    within(async {
        let (listener, addr) = raw_listener().await;
        let service = Client::builder()
            .reconnect(Backoff::new(ms(10), ms(200)))
            .connect_service(addr)
            .await
            .unwrap();
        let mut events = service.events();
        let mut server = accept(&listener).await;

        // Answered before the restart.
        let a = tokio::spawn(service.clone().oneshot("a".into()));
        assert_eq!(read_line(&mut server).await, "a\n");
        server.write_all(b"re:a\n").await.unwrap();
        assert_eq!(a.await.unwrap().unwrap(), "re:a");

        // Waiting when the server goes away: fails, is not sent again.
        let b = tokio::spawn(service.clone().oneshot("b".into()));
        assert_eq!(read_line(&mut server).await, "b\n");
        drop((server, listener));
        assert!(matches!(b.await.unwrap(), Err(Error::Closed)));

        // The port refuses for a while: the client keeps trying.
        let mut attempts = Vec::new();
        while attempts.len() < 2 {
            if let EventKind::Reconnecting { attempt, .. } = next_event(&mut events, |kind| {
                matches!(kind, EventKind::Reconnecting { .. })
            })
            .await
            {
                attempts.push(attempt);
            }
        }
        assert_eq!(attempts, [1, 2]);

        // Restarted on the same port: a request made while the client is
        // still redialling waits for the new connection.
        let listener = TcpListener::bind(addr).await.unwrap();
        let c = tokio::spawn(service.clone().oneshot("c".into()));
        let mut server = accept(&listener).await;
        assert_eq!(
            read_line(&mut server).await,
            "c\n",
            "the first frame after the restart is the new request"
        );
        server.write_all(b"re:c\n").await.unwrap();
        assert_eq!(c.await.unwrap().unwrap(), "re:c");
        let d = tokio::spawn(service.clone().oneshot("d".into()));
        assert_eq!(read_line(&mut server).await, "d\n");
        server.write_all(b"re:d\n").await.unwrap();
        assert_eq!(d.await.unwrap().unwrap(), "re:d");

        // Everything the new connection ever carried: c and d, nothing else.
        service.close();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"", "frames sent after c and d");
    })
    .await;
}

// ---------------------------------------------------------------------------
// Dialling
// ---------------------------------------------------------------------------

#[tokio::test]
async fn connecting_to_a_server_that_never_answers_times_out_naming_the_address() {
    within(async {
        let (_listener, _fillers, addr) = unresponsive_listener().await;
        let timeout = ms(300);

        let begun = Instant::now();
        let (client, service) = tokio::join!(
            Client::builder().connect_timeout(timeout).connect(addr),
            Client::builder()
                .connect_timeout(timeout)
                .connect_service(addr),
        );
        let took = begun.elapsed();

        for error in [client.unwrap_err(), service.unwrap_err()] {
            let Error::ConnectTimeout {
                addr: named,
                timeout: allowed,
            } = &error
            else {
                panic!("expected a connect timeout, got {error:?}");
            };
            assert_eq!(named, &addr.to_string());
            assert_eq!(*allowed, timeout);
            assert!(error.is_timeout());
            assert!(error.to_string().contains(&addr.to_string()), "{error}");
        }
        assert!(
            took >= timeout && took < timeout + ms(700),
            "gave up after {took:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_refused_connection_is_an_error_naming_the_address() {
    within(async {
        let addr = refusing_addr();

        let error = Client::builder().connect(addr).await.unwrap_err();
        let Error::Connect {
            addr: named,
            source,
        } = &error
        else {
            panic!("expected a connect error, got {error:?}");
        };
        assert_eq!(named, &addr.to_string());
        assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(error.to_string().contains(&addr.to_string()), "{error}");

        let error = Client::builder().connect_service(addr).await.unwrap_err();
        assert!(
            matches!(&error, Error::Connect { addr: named, .. } if named == &addr.to_string()),
            "{error:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_chosen_local_address_is_the_one_the_server_sees() {
    within(async {
        let (listener, addr) = raw_listener().await;

        let local = refusing_addr(); // a free port
        let client = Client::builder()
            .local_addr(local)
            .connect(addr)
            .await
            .unwrap();
        assert_eq!(client.local_addr(), local);
        assert_eq!(listener.accept().await.unwrap().1, local);

        let local = refusing_addr();
        let _service = Client::builder()
            .local_addr(local)
            .connect_service(addr)
            .await
            .unwrap();
        assert_eq!(listener.accept().await.unwrap().1, local);
    })
    .await;
}

#[tokio::test]
async fn with_reconnect_a_client_started_before_its_server_waits_for_it() {
    within(async {
        // Nothing listens here yet.
        let addr = refusing_addr();
        let mut client = Client::builder()
            .reconnect(Backoff::new(ms(10), ms(50)))
            .connect_service(addr)
            .await
            .expect("with reconnect, a refused first dial is retried, not an error");
        let mut events = client.events();
        let asked = tokio::spawn(async move {
            let ready = client.ready().await?;
            ready.call("hello".into()).await
        });
        // The dial is retried (and each failure reported) while nothing
        // listens.
        next_event(&mut events, |kind| {
            matches!(kind, EventKind::Reconnecting { .. })
        })
        .await;

        let listener = TcpListener::bind(addr).await.unwrap();
        let mut server = accept(&listener).await;
        assert_eq!(read_line(&mut server).await, "hello\n");
        server.get_mut().write_all(b"hi\n").await.unwrap();
        assert_eq!(asked.await.unwrap().unwrap(), "hi");
    })
    .await;
}

#[tokio::test]
async fn without_reconnect_a_refused_first_dial_is_an_error() {
    within(async {
        let addr = refusing_addr();
        let error = Client::builder().connect_service(addr).await.unwrap_err();
        assert!(matches!(error, Error::Connect { .. }), "{error}");
    })
    .await;
}

/// A `ClientService` made by `builder` against a raw server, with two
/// requests waiting ("one" and "two", both read by the server).
async fn two_waiting_requests(
    builder: natter::ClientBuilder<tower::layer::util::Identity>,
) -> (
    natter::ClientService,
    BufReader<TcpStream>,
    natter::client::ResponseFuture,
    natter::client::ResponseFuture,
) {
    let (listener, addr) = raw_listener().await;
    let mut client = builder.connect_service(addr).await.unwrap();
    let mut server = accept(&listener).await;
    let first = client.ready().await.unwrap().call("one".into());
    let second = client.ready().await.unwrap().call("two".into());
    assert_eq!(read_line(&mut server).await, "one\n");
    assert_eq!(read_line(&mut server).await, "two\n");
    (client, server, first, second)
}

/// Two requests wait; the server answers the first with more than the
/// client's frame limit, then writes `after` and keeps the connection
/// open. Both requests must fail at once.
async fn an_answer_over_the_limit_fails_both_waiting_requests(
    builder: natter::ClientBuilder<tower::layer::util::Identity>,
    after: &str,
) {
    let builder = builder
        .codec(natter::DelimiterCodec::lines().max_frame_length(16))
        // Were the waiting requests to wait for the connection's end,
        // they would wait out this linger, past the test's bound.
        .linger(Duration::from_secs(60));
    let (_client, mut server, first, second) = two_waiting_requests(builder).await;
    server
        .get_mut()
        .write_all(format!("{}\n{after}", "x".repeat(100)).as_bytes())
        .await
        .unwrap();
    assert!(matches!(first.await, Err(Error::Closed)));
    assert!(matches!(second.await, Err(Error::Closed)));
    drop(server);
}

#[tokio::test]
async fn an_answer_over_the_frame_limit_fails_every_waiting_request_at_once() {
    within(an_answer_over_the_limit_fails_both_waiting_requests(
        Client::builder(),
        "",
    ))
    .await;
}

#[tokio::test]
async fn an_answer_over_the_frame_limit_fails_every_waiting_request_even_with_an_error_hook() {
    // The hook is for a handler's frames; a ClientService has none, and an
    // answer it cannot read must not let the next answer land on this
    // request.
    let builder = Client::builder().on_error(|_, _| Some("sorry".into()));
    within(an_answer_over_the_limit_fails_both_waiting_requests(
        builder, "to two\n",
    ))
    .await;
}

#[tokio::test]
async fn a_frame_no_request_waits_for_closes_the_connection_after_the_answers_before_it() {
    within(async {
        let (mut client, mut server, first, second) = two_waiting_requests(Client::builder()).await;
        let mut events = client.events();
        server
            .get_mut()
            .write_all(b"to one\nto two\nunasked\n")
            .await
            .unwrap();
        assert_eq!(first.await.unwrap(), "to one");
        assert_eq!(second.await.unwrap(), "to two");
        let error = next_event(&mut events, |kind| matches!(kind, EventKind::Error { .. })).await;
        assert!(
            format!("{error:?}").contains("no request was waiting for"),
            "{error:?}"
        );
        assert!(matches!(client.ready().await, Err(Error::Closed)));
    })
    .await;
}

#[tokio::test]
async fn an_answer_cut_short_by_a_closing_server_is_not_an_answer() {
    within(async {
        let (client, mut server, first, second) = two_waiting_requests(Client::builder()).await;
        let mut events = client.events();
        // The second answer is cut off by the close.
        server.get_mut().write_all(b"VALUE-1\nVAL").await.unwrap();
        drop(server);
        assert_eq!(first.await.unwrap(), "VALUE-1");
        assert!(matches!(second.await, Err(Error::Closed)));
        let error = next_event(&mut events, |kind| matches!(kind, EventKind::Error { .. })).await;
        assert!(
            matches!(
                &error,
                EventKind::Error {
                    error: Error::Decode(_),
                    closing: true
                }
            ),
            "{error:?}"
        );
    })
    .await;
}

/// A client pipelining large requests to a natter echo server must never
/// deadlock with it: the client goes on reading answers while its write
/// buffer is full. (It once paused, as a server does: the server, whose
/// answers it did not read, paused too and stopped taking its requests,
/// and both waited for the write timeout.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_pipelined_requests_to_an_echo_server_never_deadlock() {
    within(async {
        // A client write buffer larger than the sockets' own: the client
        // may queue more than the server takes while it does not read.
        let big = 16 << 20;
        let service = Client::builder()
            .write_buffer(big)
            .connect_service(echo_server().await)
            .await
            .unwrap();
        let body = "x".repeat(60_000);
        pipeline(service, 1_500, 1024, |i| format!("{i} {body}")).await;
    })
    .await;
}

/// Stress: a tiny write buffer and `max_pending`, several callers on two
/// worker threads, and callers giving up at random (their futures
/// dropped): readiness (a place, room in the queue) and every answer must
/// keep coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_places_room_and_abandoned_requests_across_threads() {
    use futures::stream::FuturesOrdered;
    within(async {
        let (addr, _server) = natter_server(Server::builder(), |_: &Conn| {
            service_fn(|frame: Frame| ready(Ok::<_, BoxError>(frame)))
        })
        .await;
        let service = Client::builder()
            .write_buffer(64)
            .max_pending(4)
            .connect_service(addr)
            .await
            .unwrap();
        let tasks = (0..4_u64).map(|task| {
            let mut service = service.clone();
            tokio::spawn(async move {
                let mut in_flight = FuturesOrdered::new();
                let (mut sent, mut done) = (0_u64, 0_u64);
                while done < 3_000 {
                    if sent < 3_000 && in_flight.len() < 8 {
                        let frame = Frame::from(format!("{task} {sent} {}", "y".repeat(20)));
                        let call = service.ready().await.unwrap().call(frame);
                        let expect = format!("{task} {sent} ");
                        // Every 7th caller gives up almost at once.
                        let patience = if sent % 7 == 3 { 1 } else { 10_000_000 };
                        in_flight.push_back(async move {
                            let patience = Duration::from_micros(patience);
                            if let Ok(answer) = tokio::time::timeout(patience, call).await {
                                assert!(answer.unwrap().to_str().unwrap().starts_with(&expect))
                            }
                        });
                        sent += 1;
                        continue;
                    }
                    in_flight.next().await.unwrap();
                    done += 1;
                }
            })
        });
        for task in join_all(tasks).await {
            task.unwrap();
        }
        service.close();
    })
    .await;
}

/// Stress: the server closes the connection every few frames while
/// callers on two worker threads keep sending: every request ends (answered
/// or `Closed`), and readiness comes back on the next connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_requests_across_reconnects_always_end() {
    use futures::stream::FuturesUnordered;
    within(async {
        let (addr, _server) = natter_server(Server::builder(), |conn: &Conn| {
            let conn = conn.clone();
            let mut n = 0_u32;
            service_fn(move |frame: Frame| {
                n += 1;
                if n % 37 == 0 {
                    conn.close();
                }
                ready(Ok::<_, BoxError>(frame))
            })
        })
        .await;
        let service = Client::builder()
            .reconnect(Backoff::new(ms(1), ms(2)))
            .max_pending(16)
            .connect_service(addr)
            .await
            .unwrap();
        let tasks = (0..4_u64).map(|task| {
            let mut service = service.clone();
            tokio::spawn(async move {
                let mut in_flight = FuturesUnordered::new();
                let (mut answered, mut sent) = (0_u64, 0_u64);
                while answered < 1_000 {
                    if in_flight.len() < 8 && sent < 100_000 {
                        let frame = Frame::from(format!("{task} {sent}"));
                        let expect = frame.clone();
                        let call = service.ready().await.unwrap().call(frame);
                        in_flight.push(async move { (call.await, expect) });
                        sent += 1;
                        continue;
                    }
                    match in_flight.next().await.unwrap() {
                        (Ok(answer), expect) => {
                            assert_eq!(answer, expect);
                            answered += 1;
                        }
                        (Err(Error::Closed), _) => {}
                        (Err(error), _) => panic!("{error}"),
                    }
                }
            })
        });
        for task in join_all(tasks).await {
            task.unwrap();
        }
        service.close();
    })
    .await;
}
