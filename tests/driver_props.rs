//! The connection driver's one promise, as a property over real loopback
//! sockets: whatever frames a peer sends, however its bytes are cut into
//! writes and spaced in time, and wherever it half-closes, the replies it
//! reads are exactly the handled results of its frames, in frame order,
//! and then the server closes.
//!
//! Handlers take different times (and with several frames in flight finish
//! out of order), some frames have no reply, and the last frame may be left
//! without its delimiter at the half-close. Each case is a fresh server on
//! its own port; the case count is small so that the file runs in seconds.
//!
//! The same property holds with no socket at all: one connection served by
//! `ServerBuilder::serve_io` over a `tokio::io::duplex` pipe so narrow that
//! every write, the peer's and the server's, is partial.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use natter::{Conn, DelimiterCodec, Frame, Server};
use proptest::prelude::*;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tower::service_fn;

/// What the handler makes of a frame: nothing for a frame that starts with
/// `#`, else the frame reversed. It takes `len % 3` milliseconds, so with
/// several frames in flight later frames often finish first.
fn handled(frame: &[u8]) -> Option<Vec<u8>> {
    if frame.first() == Some(&b'#') {
        return None;
    }
    Some(frame.iter().rev().copied().collect())
}

/// A pause between two writes.
#[derive(Debug, Clone, Copy)]
enum Pause {
    None,
    Yield,
    Sleep(u8),
}

/// One case: the framing, the frames, how the bytes are cut and spaced.
#[derive(Debug, Clone)]
struct Case {
    delimiter: u8,
    line_mode: bool,
    frames: Vec<Vec<u8>>,
    /// Whether the last frame goes without its delimiter (the half-close
    /// ends it).
    unterminated_last: bool,
    cuts: Vec<usize>,
    pauses: Vec<Pause>,
    max_in_flight: usize,
}

impl Case {
    fn bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (i, frame) in self.frames.iter().enumerate() {
            bytes.extend_from_slice(frame);
            let last = i + 1 == self.frames.len();
            if !(last && self.unterminated_last) {
                if self.line_mode && i % 2 == 1 {
                    bytes.push(b'\r');
                }
                bytes.push(self.delimiter);
            }
        }
        bytes
    }

    fn expected_replies(&self) -> Vec<u8> {
        let mut replies = Vec::new();
        let last = self.frames.len().saturating_sub(1);
        for (i, frame) in self.frames.iter().enumerate() {
            // An unterminated last frame that is empty is no frame at all.
            if i == last && self.unterminated_last && frame.is_empty() {
                continue;
            }
            if let Some(reply) = handled(frame) {
                replies.extend_from_slice(&reply);
                replies.push(self.delimiter);
            }
        }
        replies
    }

    fn codec(&self) -> DelimiterCodec {
        if self.line_mode {
            DelimiterCodec::lines()
        } else {
            DelimiterCodec::byte(self.delimiter)
        }
    }
}

fn case() -> impl Strategy<Value = Case> {
    let framing = prop_oneof![
        Just((b'\n', true)),
        Just((b';', false)),
        Just((0xff, false)),
        Just((b'\n', false)),
    ];
    (framing, 1usize..=4).prop_flat_map(|((delimiter, line_mode), max_in_flight)| {
        let byte = prop_oneof![
            4 => b'a'..=b'z',
            1 => Just(b'#'),
            1 => Just(b'\r'),
            1 => any::<u8>(),
        ]
        .prop_filter("not the delimiter", move |b| *b != delimiter);
        let frame = prop::collection::vec(byte, 0..24).prop_filter(
            "a line does not end in \\r (it would be stripped)",
            move |frame| !(line_mode && frame.last() == Some(&b'\r')),
        );
        let pause = prop_oneof![
            3 => Just(Pause::None),
            2 => Just(Pause::Yield),
            1 => (0u8..3).prop_map(Pause::Sleep),
        ];
        (
            prop::collection::vec(frame, 0..16),
            any::<bool>(),
            prop::collection::vec(0usize..400, 0..12),
            prop::collection::vec(pause, 12),
        )
            .prop_map(move |(frames, unterminated_last, cuts, pauses)| Case {
                delimiter,
                line_mode,
                unterminated_last: unterminated_last && !frames.is_empty(),
                frames,
                cuts,
                pauses,
                max_in_flight,
            })
    })
}

/// The handler: [`handled`], after `len % 3` milliseconds.
async fn handler(frame: Frame) -> Result<Option<Frame>, Infallible> {
    tokio::time::sleep(Duration::from_millis(frame.len() as u64 % 3)).await;
    Ok(handled(&frame).map(Frame::from))
}

/// Runs one case against a fresh server; returns what the peer read before
/// the server closed.
async fn run(case: &Case) -> Vec<u8> {
    let server = Server::builder()
        .codec(case.codec())
        .max_in_flight(case.max_in_flight)
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = start(server, |_: &Conn| service_fn(handler));
    let stream = connect(server.addr).await;
    let (reading, writing) = stream.into_split();
    let got = talk(case, reading, writing).await;
    server.shutdown().await;
    got
}

/// Runs one case over an in-memory pipe of `pipe` bytes, served by
/// `serve_io`.
async fn run_in_memory(case: &Case, pipe: usize) -> Vec<u8> {
    let (server_end, client_end) = tokio::io::duplex(pipe);
    let served = tokio::spawn(
        Server::builder()
            .codec(case.codec())
            .max_in_flight(case.max_in_flight)
            .serve_io(server_end, |_: &Conn| service_fn(handler)),
    );
    let (reading, writing) = tokio::io::split(client_end);
    let got = talk(case, reading, writing).await;
    within("serve_io to return", served)
        .await
        .expect("serve_io task")
        .expect("serve_io ended with an error");
    got
}

/// Writes the case's bytes as it says, half-closes, and returns what was
/// read until the server closed.
async fn talk<R, W>(case: &Case, mut reading: R, mut writing: W) -> Vec<u8>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        reading.read_to_end(&mut got).await.map(|_| got)
    });

    let bytes = case.bytes();
    let mut cuts: Vec<usize> = case
        .cuts
        .iter()
        .map(|cut| cut % (bytes.len() + 1))
        .collect();
    cuts.sort_unstable();
    cuts.push(bytes.len());
    let mut start = 0;
    for (i, end) in cuts.into_iter().enumerate() {
        writing.write_all(&bytes[start..end]).await.expect("write");
        start = end;
        match case.pauses[i % case.pauses.len()] {
            Pause::None => {}
            Pause::Yield => tokio::task::yield_now().await,
            Pause::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms.into())).await,
        }
    }
    writing.shutdown().await.expect("half-close");
    within("the server to answer and close", reader)
        .await
        .expect("reader task")
        .expect("a clean end of stream")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn replies_are_the_handled_frames_in_order_however_the_peer_writes_and_half_closes(
        case in case()
    ) {
        let got = RUNTIME.block_on(within("the case", run(&case)));
        let expected = case.expected_replies();
        prop_assert!(
            got == expected,
            "got {:?}, expected {:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_same_holds_in_memory_through_a_pipe_of_a_few_bytes(
        case in case(),
        pipe in 1usize..32,
    ) {
        let got = RUNTIME.block_on(within("the case", run_in_memory(&case, pipe)));
        let expected = case.expected_replies();
        prop_assert!(
            got == expected,
            "got {:?}, expected {:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected)
        );
    }
}
