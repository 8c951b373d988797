//! One reply per request, or the connection closes: what every failure
//! puts on the wire, seen by natter's own pipelined `ClientService`.
//!
//! Each case sends `ok-1`, a request that fails, `ok-2` and `ok-3`, all at
//! once, and checks what each request got:
//!
//! | server | `ok-1` | failing request | `ok-2`, `ok-3` |
//! |---|---|---|---|
//! | default | `ok-1` | `Error::Closed` | `Error::Closed` |
//! | `on_error` hook | `ok-1` | the hook's reply | `ok-2`, `ok-3` |
//!
//! for a handler error, tower's `LoadShed` and `Timeout`, natter's
//! `HandlerTimeoutLayer` and `handler_timeout`, a panic, a reply that
//! cannot be encoded and a request over the server's frame limit, with 1
//! and with 16 frames in flight on the server. A property test then draws
//! any sequence of handler outcomes: every request gets its own answer or
//! an error, never another's.

mod support;

use std::task::{Context, Poll};
use std::time::Duration;

use natter::layer::HandlerTimeoutLayer;
use natter::{BoxError, Client, ClientService, Conn, DelimiterCodec, Error, Frame, Server};
use proptest::prelude::*;
use support::*;
use tokio::time::sleep;
use tower::load_shed::LoadShedLayer;
use tower::timeout::TimeoutLayer;
use tower::{Service, ServiceExt, service_fn};

/// The server's frame limit; the client's is larger, so that it can send
/// a request over it.
const SERVER_LIMIT: usize = 64;

/// How a request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    HandlerError,
    LoadShed,
    TowerTimeout,
    HandlerTimeoutLayer,
    ConnectionHandlerTimeout,
    Panic,
    Unencodable,
    OverLong,
}

const FAILURES: [Failure; 8] = [
    Failure::HandlerError,
    Failure::LoadShed,
    Failure::TowerTimeout,
    Failure::HandlerTimeoutLayer,
    Failure::ConnectionHandlerTimeout,
    Failure::Panic,
    Failure::Unencodable,
    Failure::OverLong,
];

/// The failing request of each case.
fn bad_request(failure: Failure) -> Frame {
    match failure {
        Failure::OverLong => Frame::from(vec![b'x'; SERVER_LIMIT + 1]),
        _ => Frame::from("bad"),
    }
}

/// Echoes, and fails "bad" as `failure` says (`LoadShed` and `OverLong`
/// fail outside the handler).
async fn handle(frame: Frame, failure: Failure) -> Result<Frame, BoxError> {
    if frame != "bad" {
        return Ok(frame);
    }
    match failure {
        Failure::HandlerError => Err("no such command".into()),
        Failure::TowerTimeout
        | Failure::HandlerTimeoutLayer
        | Failure::ConnectionHandlerTimeout => {
            sleep(Duration::from_secs(30)).await;
            Ok(frame)
        }
        Failure::Panic => panic!("boom"),
        Failure::Unencodable => Ok(Frame::from("two\nlines")),
        Failure::LoadShed | Failure::OverLong => Ok(frame),
    }
}

/// A service that is not ready exactly once, before its second call, so
/// that `LoadShed` in front of it sheds the second request and no other.
#[derive(Clone)]
struct BusyOnce<S> {
    inner: S,
    calls: usize,
    was_busy: bool,
}

impl<S: Service<Frame>> Service<Frame> for BusyOnce<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        if self.calls == 1 && !self.was_busy {
            self.was_busy = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, frame: Frame) -> S::Future {
        self.calls += 1;
        self.inner.call(frame)
    }
}

type BoxedService = tower::util::BoxService<Frame, Frame, BoxError>;

/// The per-connection service of a case: the handler behind the case's
/// layers.
fn service_for(failure: Failure) -> BoxedService {
    let handler = service_fn(move |frame: Frame| handle(frame, failure));
    let timeout = Duration::from_millis(100);
    match failure {
        Failure::LoadShed => tower::ServiceBuilder::new()
            .layer(LoadShedLayer::new())
            .service(BusyOnce {
                inner: handler,
                calls: 0,
                was_busy: false,
            })
            .boxed(),
        Failure::TowerTimeout => tower::ServiceBuilder::new()
            .layer(TimeoutLayer::new(timeout))
            .service(handler)
            .boxed(),
        Failure::HandlerTimeoutLayer => tower::ServiceBuilder::new()
            .layer(HandlerTimeoutLayer::new(timeout))
            .service(handler)
            .boxed(),
        _ => handler.boxed(),
    }
}

/// What the hook answers: the error, so each reply names its failure.
fn hook(error: &Error, _: &Conn) -> Option<Frame> {
    Some(Frame::from(format!("-ERR {error}")))
}

/// What a hooked server answers for `failure`.
fn hook_reply(failure: Failure) -> String {
    let error = match failure {
        Failure::HandlerError => "handler failed: no such command".to_owned(),
        Failure::LoadShed => "handler failed: service overloaded".to_owned(),
        Failure::TowerTimeout => "handler failed: request timed out".to_owned(),
        Failure::HandlerTimeoutLayer | Failure::ConnectionHandlerTimeout => {
            "handler did not finish within 100ms".to_owned()
        }
        Failure::Panic => "handler panicked: boom".to_owned(),
        Failure::Unencodable => "frame to send contains the delimiter at offset 3".to_owned(),
        Failure::OverLong => format!("frame longer than the limit of {SERVER_LIMIT} bytes"),
    };
    format!("-ERR {error}")
}

async fn server_for(failure: Failure, in_flight: usize, hooked: bool) -> Running {
    let mut builder = Server::builder()
        .codec(DelimiterCodec::lines().max_frame_length(SERVER_LIMIT))
        .max_in_flight(in_flight);
    if failure == Failure::ConnectionHandlerTimeout {
        builder = builder.handler_timeout(Duration::from_millis(100));
    }
    if hooked {
        builder = builder.on_error(hook);
    }
    let server = builder.bind("127.0.0.1:0").await.expect("bind");
    start(server, move |_: &Conn| service_for(failure))
}

async fn client_of(server: &Running) -> ClientService {
    Client::builder()
        .codec(DelimiterCodec::lines().max_frame_length(1024))
        .connect_service(server.addr)
        .await
        .expect("connect")
}

/// Sends every request before any answer comes (as far as the connection
/// lasts: once it has closed, a request fails as it is sent); returns each
/// one's result.
async fn pipeline(client: &mut ClientService, requests: Vec<Frame>) -> Vec<Result<Frame, Error>> {
    let mut answers = Vec::new();
    for request in requests {
        let answer = within("the client to be ready", client.ready())
            .await
            .map(|ready| ready.call(request));
        answers.push(answer);
    }
    let mut results = Vec::new();
    for answer in answers {
        results.push(match answer {
            Ok(answer) => within("an answer", answer).await,
            Err(error) => Err(error),
        });
    }
    results
}

fn text(result: &Result<Frame, Error>) -> String {
    match result {
        Ok(frame) => String::from_utf8_lossy(frame).into_owned(),
        Err(error) => format!("error: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_failed_request_closes_the_connection_and_no_later_request_gets_an_answer() {
    within("the test", async {
        for failure in FAILURES {
            for in_flight in [1, 16] {
                let server = server_for(failure, in_flight, false).await;
                let mut client = client_of(&server).await;
                let mut events = server.handle.events();
                let requests = vec![
                    Frame::from("ok-1"),
                    bad_request(failure),
                    Frame::from("ok-2"),
                    Frame::from("ok-3"),
                ];
                let got = pipeline(&mut client, requests).await;
                let case = format!("{failure:?}, {in_flight} in flight");
                assert_eq!(text(&got[0]), "ok-1", "{case}");
                for result in &got[1..] {
                    assert!(
                        matches!(result, Err(Error::Closed)),
                        "{case}: {}",
                        text(result)
                    );
                }
                let event =
                    next_event(&mut events, "the failure", |event| event.error().is_some()).await;
                assert!(event.is_closing_error(), "{case}: {event}");
                server.shutdown().await;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_hook_a_failed_request_gets_the_hook_s_reply_and_the_next_ones_their_own() {
    within("the test", async {
        for failure in FAILURES {
            for in_flight in [1, 16] {
                let server = server_for(failure, in_flight, true).await;
                let mut client = client_of(&server).await;
                let requests = vec![
                    Frame::from("ok-1"),
                    bad_request(failure),
                    Frame::from("ok-2"),
                    Frame::from("ok-3"),
                ];
                let got: Vec<String> = pipeline(&mut client, requests)
                    .await
                    .iter()
                    .map(text)
                    .collect();
                let case = format!("{failure:?}, {in_flight} in flight");
                assert_eq!(
                    got,
                    [
                        "ok-1".to_owned(),
                        hook_reply(failure),
                        "ok-2".into(),
                        "ok-3".into()
                    ],
                    "{case}"
                );
                // And the connection carries on.
                let again = pipeline(&mut client, vec![Frame::from("ok-4")]).await;
                assert_eq!(text(&again[0]), "ok-4", "{case}");
                server.shutdown().await;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_declines_or_panics_closes_the_connection() {
    within("the test", async {
        for hook_panics in [false, true] {
            let server = Server::builder()
                .on_error(move |_: &Error, _: &Conn| {
                    if hook_panics {
                        panic!("the hook itself fails");
                    }
                    None
                })
                .bind("127.0.0.1:0")
                .await
                .unwrap();
            let server = start(server, |_: &Conn| service_for(Failure::HandlerError));
            let mut client = client_of(&server).await;
            let got = pipeline(
                &mut client,
                vec![Frame::from("ok-1"), Frame::from("bad"), Frame::from("ok-2")],
            )
            .await;
            assert_eq!(text(&got[0]), "ok-1");
            assert!(matches!(got[1], Err(Error::Closed)), "{}", text(&got[1]));
            assert!(matches!(got[2], Err(Error::Closed)), "{}", text(&got[2]));
            server.shutdown().await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_reply_that_cannot_be_encoded_closes_the_connection() {
    within("the test", async {
        let server = Server::builder()
            .on_error(|_: &Error, _: &Conn| Some(Frame::from("not\none frame")))
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let server = start(server, |_: &Conn| service_for(Failure::HandlerError));
        let mut events = server.handle.events();
        let mut client = client_of(&server).await;
        let peer = addr_of_client(&client);
        let got = pipeline(&mut client, vec![Frame::from("ok-1"), Frame::from("bad")]).await;
        assert_eq!(text(&got[0]), "ok-1");
        assert!(matches!(got[1], Err(Error::Closed)));
        let first = next_error(&mut events, peer).await;
        assert!(matches!(first, Error::Handler(_)), "{first}");
        let second = next_error(&mut events, peer).await;
        assert!(matches!(second, Error::DelimiterInFrame { .. }), "{second}");
        server.shutdown().await;
    })
    .await
}

/// The server-side address of a client's connection (its local address).
fn addr_of_client(client: &ClientService) -> std::net::SocketAddr {
    client
        .local_addr()
        .and_then(|addr| addr.socket_addr())
        .expect("a connected TCP client")
}

// ---------------------------------------------------------------------------
// Any sequence of outcomes
// ---------------------------------------------------------------------------

/// What the handler does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Answer,
    /// Answers after a few milliseconds (so that, with frames in flight,
    /// later requests finish first).
    SlowAnswer,
    Fail,
    Panic,
    Unencodable,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        4 => Just(Outcome::Answer),
        2 => Just(Outcome::SlowAnswer),
        1 => Just(Outcome::Fail),
        1 => Just(Outcome::Panic),
        1 => Just(Outcome::Unencodable),
    ]
}

/// Request `i` is the text `i:outcome`; the handler's answer is `r-i`. A
/// failure's hook reply names `i` too: the handler's error and the panic
/// carry it, and the unencodable reply has its newline at offset `i`.
async fn scripted(frame: Frame) -> Result<Frame, BoxError> {
    let text = frame.to_str().expect("text").to_owned();
    let (index, outcome) = text.split_once(':').expect("i:outcome");
    let index: usize = index.parse().expect("an index");
    match outcome {
        "Answer" => Ok(Frame::from(format!("r-{index}"))),
        "SlowAnswer" => {
            sleep(Duration::from_millis(index as u64 % 4)).await;
            Ok(Frame::from(format!("r-{index}")))
        }
        "Fail" => Err(format!("fail {index}").into()),
        "Panic" => panic!("boom {index}"),
        "Unencodable" => Ok(Frame::from(format!("{}\n", "x".repeat(index)))),
        other => unreachable!("{other}"),
    }
}

fn expected(index: usize, outcome: Outcome, hooked: bool, closed: bool) -> String {
    if closed {
        return "error: connection closed".to_owned();
    }
    let error = match outcome {
        Outcome::Answer | Outcome::SlowAnswer => return format!("r-{index}"),
        Outcome::Fail => format!("handler failed: fail {index}"),
        Outcome::Panic => format!("handler panicked: boom {index}"),
        Outcome::Unencodable => format!("frame to send contains the delimiter at offset {index}"),
    };
    if hooked {
        format!("-ERR {error}")
    } else {
        "error: connection closed".to_owned()
    }
}

async fn run_outcomes(outcomes: &[Outcome], in_flight: usize, hooked: bool) -> Vec<String> {
    let mut builder = Server::builder().max_in_flight(in_flight);
    if hooked {
        builder = builder.on_error(hook);
    }
    let server = start(
        builder.bind("127.0.0.1:0").await.expect("bind"),
        |_: &Conn| service_fn(scripted),
    );
    let mut client = client_of(&server).await;
    let requests = outcomes
        .iter()
        .enumerate()
        .map(|(i, outcome)| Frame::from(format!("{i}:{outcome:?}")))
        .collect();
    let got = pipeline(&mut client, requests)
        .await
        .iter()
        .map(text)
        .collect();
    server.shutdown().await;
    got
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_request_gets_its_own_answer_or_an_error_never_another_s(
        outcomes in prop::collection::vec(outcome(), 1..24),
        in_flight in prop_oneof![Just(1usize), Just(4), Just(16)],
        hooked in any::<bool>(),
    ) {
        let got = RUNTIME.block_on(within("the case", run_outcomes(&outcomes, in_flight, hooked)));
        let mut closed = false;
        let want: Vec<String> = outcomes
            .iter()
            .enumerate()
            .map(|(i, &outcome)| {
                let answer = expected(i, outcome, hooked, closed);
                closed |= !hooked && !matches!(outcome, Outcome::Answer | Outcome::SlowAnswer);
                answer
            })
            .collect();
        prop_assert_eq!(got, want);
    }
}
