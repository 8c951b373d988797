//! Specifications of natter's framing from the outside.
//!
//! The byte-exact rules live next to the codec (`codec/tests.rs`). This file
//! checks them in general: property tests show that any list of frames comes
//! back unchanged however the stream is cut into reads, that oversized
//! frames are reported once each without harming their neighbours, and that
//! natter agrees with tokio-util's `LinesCodec` and `AnyDelimiterCodec`
//! wherever their rules are the same. Then frames cross a real loopback TCP
//! connection through `Framed`, as a server and client will use them.

use std::future::Future;
use std::time::Duration;

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use natter::{CodecError, DelimiterCodec, Frame, JsonCodec};
use proptest::prelude::*;
use proptest::sample::Index;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{
    AnyDelimiterCodec, AnyDelimiterCodecError, Decoder, Encoder, Framed, LinesCodec,
    LinesCodecError,
};

// ---------------------------------------------------------------------------
// Feeding a decoder the way a socket would
// ---------------------------------------------------------------------------

/// One item a decoder produced: a frame's bytes, or the report that a frame
/// passed the length limit. Lets natter's and tokio-util's codecs, whose
/// items and errors differ in type, be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decoded {
    Frame(Vec<u8>),
    TooLong,
}

fn from_natter(item: Result<Frame, CodecError>) -> Decoded {
    match item {
        Ok(frame) => Decoded::Frame(frame.to_vec()),
        Err(CodecError::FrameTooLong { .. }) => Decoded::TooLong,
        Err(other) => panic!("unexpected decode error: {other}"),
    }
}

fn from_lines_codec(item: Result<String, LinesCodecError>) -> Decoded {
    match item {
        Ok(line) => Decoded::Frame(line.into_bytes()),
        Err(LinesCodecError::MaxLineLengthExceeded) => Decoded::TooLong,
        Err(other) => panic!("unexpected LinesCodec error: {other}"),
    }
}

fn from_any_delimiter_codec(item: Result<bytes::Bytes, AnyDelimiterCodecError>) -> Decoded {
    match item {
        Ok(chunk) => Decoded::Frame(chunk.to_vec()),
        Err(AnyDelimiterCodecError::MaxChunkLengthExceeded) => Decoded::TooLong,
        Err(other) => panic!("unexpected AnyDelimiterCodec error: {other}"),
    }
}

/// Feeds `chunks` to `decoder` one read at a time, decoding after each read
/// until it asks for more, then ends the stream with `decode_eof`. Keeps
/// going after errors (unlike `Framed`) so that what the codec does with the
/// bytes after an error is checked too.
fn decode_reads<D: Decoder>(
    mut decoder: D,
    chunks: &[&[u8]],
    classify: impl Fn(Result<D::Item, D::Error>) -> Decoded,
) -> Vec<Decoded> {
    let total: usize = chunks.iter().map(|chunk| chunk.len()).sum();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut drain = |buf: &mut BytesMut, out: &mut Vec<Decoded>, at_eof: bool| loop {
        let item = if at_eof {
            decoder.decode_eof(buf)
        } else {
            decoder.decode(buf)
        };
        match item {
            Ok(None) => break,
            Ok(Some(item)) => out.push(classify(Ok(item))),
            Err(err) => out.push(classify(Err(err))),
        }
        // Every item uses up at least one byte (an error may take one more
        // call to do so); anything beyond that is a decoder stuck in a loop.
        assert!(
            out.len() <= 2 * total + 1,
            "decoder yields without consuming input"
        );
    };
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        drain(&mut buf, &mut out, false);
    }
    drain(&mut buf, &mut out, true);
    out
}

fn decode_natter(codec: DelimiterCodec, chunks: &[&[u8]]) -> Vec<Decoded> {
    decode_reads(codec, chunks, from_natter)
}

/// How a test stream is cut into reads.
#[derive(Debug, Clone)]
enum Reads {
    /// At these positions (any position, repeats make empty reads).
    CutAt(Vec<Index>),
    /// One byte per read: every boundary at once.
    OneByteEach,
}

impl Reads {
    fn cut<'a>(&self, input: &'a [u8]) -> Vec<&'a [u8]> {
        match self {
            Reads::OneByteEach => input.chunks(1).collect(),
            Reads::CutAt(cuts) => {
                let mut at: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
                at.sort_unstable();
                at.push(input.len());
                let mut start = 0;
                at.into_iter()
                    .map(|end| {
                        let chunk = &input[start..end];
                        start = end;
                        chunk
                    })
                    .collect()
            }
        }
    }
}

fn reads() -> impl Strategy<Value = Reads> {
    prop_oneof![
        4 => prop::collection::vec(any::<Index>(), 0..24).prop_map(Reads::CutAt),
        1 => Just(Reads::OneByteEach),
    ]
}

// ---------------------------------------------------------------------------
// Generating streams of frames
// ---------------------------------------------------------------------------

/// A byte, often one of those that framing treats specially.
fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        6 => any::<u8>(),
        1 => Just(b'\r'),
        1 => Just(b'\n'),
        1 => Just(b';'),
        1 => Just(0u8),
    ]
}

/// A custom delimiter: often a familiar one, sometimes any byte at all.
fn delimiter() -> impl Strategy<Value = u8> {
    prop_oneof![Just(b'\n'), Just(b';'), Just(0u8), Just(b'\r'), any::<u8>()]
}

/// The bytes of one frame that never contain `delimiter`.
fn frame_without(delimiter: u8, max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(byte(), 0..=max_len).prop_map(move |mut frame| {
        for b in &mut frame {
            if *b == delimiter {
                *b = delimiter.wrapping_add(1);
            }
        }
        frame
    })
}

/// A line-mode frame: no `\n`, and not ending in `\r` (which would be read
/// as part of a CRLF). A `\r` anywhere else is data.
fn line(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    frame_without(b'\n', max_len).prop_map(|mut frame| {
        if frame.last() == Some(&b'\r') {
            frame.push(b'.');
        }
        frame
    })
}

/// A line-mode stream: each line ends in `\n` or `\r\n`.
#[derive(Debug, Clone)]
struct Lines {
    /// Each line, and whether it ends in `\r\n` rather than `\n`.
    lines: Vec<(Vec<u8>, bool)>,
    /// Whether the last line goes without its line ending (it is then
    /// still a frame at end of stream, unless it is empty).
    unterminated_last: bool,
}

impl Lines {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, (line, crlf)) in self.lines.iter().enumerate() {
            out.extend_from_slice(line);
            if i + 1 == self.lines.len() && self.unterminated_last && !line.is_empty() {
                break;
            }
            out.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
        }
        out
    }

    fn frames(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.lines.iter().map(|(line, _)| line)
    }
}

fn lines(max_line_len: usize) -> impl Strategy<Value = Lines> {
    (
        prop::collection::vec((line(max_line_len), any::<bool>()), 0..20),
        any::<bool>(),
    )
        .prop_map(|(lines, unterminated_last)| Lines {
            lines,
            unterminated_last,
        })
}

/// A stream of frames each followed by one delimiter byte.
#[derive(Debug, Clone)]
struct Delimited {
    delimiter: u8,
    frames: Vec<Vec<u8>>,
    unterminated_last: bool,
}

impl Delimited {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, frame) in self.frames.iter().enumerate() {
            out.extend_from_slice(frame);
            if i + 1 == self.frames.len() && self.unterminated_last && !frame.is_empty() {
                break;
            }
            out.push(self.delimiter);
        }
        out
    }
}

fn delimited(max_frame_len: usize) -> impl Strategy<Value = Delimited> {
    delimiter().prop_flat_map(move |delimiter| {
        (
            prop::collection::vec(frame_without(delimiter, max_frame_len), 0..20),
            any::<bool>(),
        )
            .prop_map(move |(frames, unterminated_last)| Delimited {
                delimiter,
                frames,
                unterminated_last,
            })
    })
}

/// What a correct decoder yields for `frames` under `limit`: each frame, or
/// one report for each frame longer than the limit.
fn expected(frames: impl IntoIterator<Item = impl AsRef<[u8]>>, limit: usize) -> Vec<Decoded> {
    frames
        .into_iter()
        .map(|frame| match frame.as_ref() {
            frame if frame.len() > limit => Decoded::TooLong,
            frame => Decoded::Frame(frame.to_vec()),
        })
        .collect()
}

fn no_limit<T: AsRef<[u8]>>(frames: impl IntoIterator<Item = T>) -> Vec<Decoded> {
    expected(frames, usize::MAX)
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_lines_decode_unchanged_however_the_stream_is_cut(lines in lines(40), reads in reads()) {
        let input = lines.bytes();
        let out = decode_natter(DelimiterCodec::lines(), &reads.cut(&input));
        prop_assert_eq!(out, no_limit(lines.frames()));
    }

    #[test]
    fn any_frames_with_a_custom_delimiter_decode_unchanged_however_the_stream_is_cut(
        stream in delimited(40),
        reads in reads(),
    ) {
        let input = stream.bytes();
        let out = decode_natter(DelimiterCodec::byte(stream.delimiter), &reads.cut(&input));
        prop_assert_eq!(out, no_limit(&stream.frames));
    }

    #[test]
    fn eof_mode_decodes_any_stream_as_one_frame_however_it_is_cut(
        frame in prop::collection::vec(byte(), 0..200),
        limit in prop::option::of(0usize..200),
        reads in reads(),
    ) {
        let codec = match limit {
            Some(limit) => DelimiterCodec::eof().max_frame_length(limit),
            None => DelimiterCodec::eof(),
        };
        let out = decode_natter(codec, &reads.cut(&frame));
        let want = if frame.is_empty() {
            vec![] // an empty stream is no frame at all
        } else {
            expected([&frame], limit.unwrap_or(usize::MAX))
        };
        prop_assert_eq!(out, want);
    }

    #[test]
    fn each_oversized_line_is_reported_once_and_the_others_arrive_intact(
        lines in lines(64),
        limit in 0usize..48,
        reads in reads(),
    ) {
        let input = lines.bytes();
        let codec = DelimiterCodec::lines().max_frame_length(limit);
        let out = decode_natter(codec, &reads.cut(&input));
        prop_assert_eq!(out, expected(lines.frames(), limit));
    }

    #[test]
    fn each_oversized_delimited_frame_is_reported_once_and_the_others_arrive_intact(
        stream in delimited(64),
        limit in 0usize..48,
        reads in reads(),
    ) {
        let input = stream.bytes();
        let codec = DelimiterCodec::byte(stream.delimiter).max_frame_length(limit);
        let out = decode_natter(codec, &reads.cut(&input));
        prop_assert_eq!(out, expected(&stream.frames, limit));
    }

    #[test]
    fn byte_mode_agrees_with_tokio_util_any_delimiter_codec(
        delimiter in delimiter(),
        input in prop::collection::vec(byte(), 0..400),
        limit in prop::option::of(0usize..48),
        reads in reads(),
    ) {
        let chunks = reads.cut(&input);
        let (natter, tokio_util) = match limit {
            Some(limit) => (
                DelimiterCodec::byte(delimiter).max_frame_length(limit),
                AnyDelimiterCodec::new_with_max_length(vec![delimiter], vec![delimiter], limit),
            ),
            None => (
                DelimiterCodec::byte(delimiter).max_frame_length(usize::MAX),
                AnyDelimiterCodec::new(vec![delimiter], vec![delimiter]),
            ),
        };
        prop_assert_eq!(
            decode_natter(natter, &chunks),
            decode_reads(tokio_util, &chunks, from_any_delimiter_codec)
        );
    }

    #[test]
    fn line_mode_agrees_with_tokio_util_lines_codec_on_ascii_without_cr(
        input in prop::collection::vec(
            prop_oneof![4 => b' '..=b'~', 1 => Just(b'\n'), 1 => Just(b'\t')],
            0..400,
        ),
        limit in prop::option::of(0usize..48),
        reads in reads(),
    ) {
        let chunks = reads.cut(&input);
        let (natter, tokio_util) = match limit {
            Some(limit) => (
                DelimiterCodec::lines().max_frame_length(limit),
                LinesCodec::new_with_max_length(limit),
            ),
            None => (DelimiterCodec::lines().max_frame_length(usize::MAX), LinesCodec::new()),
        };
        prop_assert_eq!(
            decode_natter(natter, &chunks),
            decode_reads(tokio_util, &chunks, from_lines_codec)
        );
    }

    #[test]
    fn what_the_line_encoder_writes_decodes_to_the_same_frames(
        frames in prop::collection::vec(line(40), 0..20),
        reads in reads(),
    ) {
        // Frames that end in `\r` are left out: the encoder writes exactly
        // the frame and `\n`, so such a frame reads back without that `\r`
        // (line mode's one ambiguity, see `line_mode_writes_a_trailing_cr_as_is`).
        let mut codec = DelimiterCodec::lines();
        let mut wire = BytesMut::new();
        for frame in &frames {
            codec.encode(frame, &mut wire).unwrap();
        }
        let out = decode_natter(DelimiterCodec::lines(), &reads.cut(&wire));
        prop_assert_eq!(out, no_limit(&frames));
    }

    #[test]
    fn what_the_byte_encoder_writes_decodes_to_the_same_frames(
        stream in delimited(40),
        reads in reads(),
    ) {
        let mut codec = DelimiterCodec::byte(stream.delimiter);
        let mut wire = BytesMut::new();
        for frame in &stream.frames {
            codec.encode(frame, &mut wire).unwrap();
        }
        let out = decode_natter(DelimiterCodec::byte(stream.delimiter), &reads.cut(&wire));
        prop_assert_eq!(out, no_limit(&stream.frames));
    }
}

// ---------------------------------------------------------------------------
// Over a real loopback TCP connection
// ---------------------------------------------------------------------------

/// Every async test must finish within this, so a hang fails instead of
/// stalling the run.
const TEST_TIMEOUT: Duration = Duration::from_secs(10);

async fn within_timeout<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test did not finish in time")
}

/// Both ends of a fresh connection on 127.0.0.1: (client, server).
async fn connected_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.unwrap(), accepted.unwrap().0)
}

/// Reads frames from `stream` until the peer closes it.
async fn read_frames(stream: TcpStream, codec: DelimiterCodec) -> Vec<Result<Frame, CodecError>> {
    Framed::new(stream, codec).collect().await
}

#[tokio::test]
async fn frames_cross_a_tcp_connection_unchanged_including_empty_and_cr_inside() {
    within_timeout(async {
        let (client, server) = connected_pair().await;
        let big = vec![b'z'; 60 * 1024]; // many socket reads, within the limit
        let sent: Vec<Frame> = vec![
            Frame::from("hello"),
            Frame::new(),
            Frame::from("carriage\rreturn inside"),
            Frame::from(&b"\x00binary\xff"[..]),
            Frame::new(),
            Frame::from(big),
            Frame::from("last"),
        ];
        let writer = tokio::spawn({
            let sent = sent.clone();
            async move {
                let mut framed = Framed::new(client, DelimiterCodec::lines());
                for frame in sent {
                    framed.feed(frame).await.unwrap();
                }
                SinkExt::<Frame>::close(&mut framed).await.unwrap();
            }
        });
        let received = read_frames(server, DelimiterCodec::lines()).await;
        writer.await.unwrap();
        let received: Vec<Frame> = received.into_iter().map(Result::unwrap).collect();
        assert_eq!(received, sent);
    })
    .await;
}

#[tokio::test]
async fn crlf_lines_from_a_raw_peer_arrive_without_their_cr() {
    within_timeout(async {
        let (mut client, server) = connected_pair().await;
        let writer = tokio::spawn(async move {
            // Line endings split from their `\r` across writes, and a last
            // line without any line ending.
            for part in [&b"one\r"[..], b"\ntwo\r\n\r", b"\nthree\r\r\n", b"tail"] {
                client.write_all(part).await.unwrap();
                client.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            client.shutdown().await.unwrap();
        });
        let received = read_frames(server, DelimiterCodec::lines()).await;
        writer.await.unwrap();
        let received: Vec<Frame> = received.into_iter().map(Result::unwrap).collect();
        assert_eq!(received, ["one", "two", "", "three\r", "tail"]);
    })
    .await;
}

#[tokio::test]
async fn frames_echoed_through_framed_are_their_bytes_plus_the_delimiter() {
    // The echo example's rule (docs/cli.md) at the codec level: `a\r\r\n`
    // is the frame `a\r`, written back as `a\r\n`; CRLF comes back as LF.
    within_timeout(async {
        let (mut client, server) = connected_pair().await;
        let echo = tokio::spawn(async move {
            let mut framed = Framed::new(server, DelimiterCodec::lines());
            while let Some(frame) = framed.next().await {
                framed.send(frame.unwrap()).await.unwrap();
            }
        });
        client.write_all(b"a\r\r\nb\r\n\nc\rd\n").await.unwrap();
        client.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        echo.await.unwrap();
        assert_eq!(answer, b"a\r\nb\n\nc\rd\n");
    })
    .await;
}

#[tokio::test]
async fn framed_ends_the_stream_after_an_oversized_frame() {
    // `Framed` yields a decode error, then `None`, even with good frames
    // still buffered behind it: the connection driver must expect exactly
    // this (see the codec module docs).
    within_timeout(async {
        let (mut client, server) = connected_pair().await;
        let writer = tokio::spawn(async move {
            client
                .write_all(b"ok\n0123456789abcdefXYZ\nafter\n")
                .await
                .unwrap();
            client.shutdown().await.unwrap();
        });
        let received = read_frames(server, DelimiterCodec::lines().max_frame_length(16)).await;
        writer.await.unwrap();
        assert_eq!(received.len(), 2, "{received:?}");
        assert_eq!(received[0].as_ref().unwrap(), "ok");
        assert!(matches!(
            received[1],
            Err(CodecError::FrameTooLong { limit: 16 })
        ));
    })
    .await;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Heartbeat {
    node: String,
    seq: u64,
    tags: Vec<String>,
}

#[tokio::test]
async fn json_values_cross_a_tcp_connection_and_back() {
    within_timeout(async {
        let (client, server) = connected_pair().await;
        let echo = tokio::spawn(async move {
            // The server answers each heartbeat with the next sequence number.
            let mut framed = Framed::new(server, JsonCodec::<Heartbeat>::new());
            while let Some(beat) = framed.next().await {
                let mut beat = beat.unwrap();
                beat.seq += 1;
                framed.send(beat).await.unwrap();
            }
        });
        let mut framed = Framed::new(client, JsonCodec::<Heartbeat>::new());
        let sent: Vec<Heartbeat> = (0..3)
            .map(|seq| Heartbeat {
                node: format!("node-{seq}"),
                seq,
                // A newline inside a string is escaped by JSON, so it is
                // safe in line mode.
                tags: vec!["multi\nline".into(), String::new()],
            })
            .collect();
        for beat in &sent {
            framed.send(beat).await.unwrap();
            let reply = framed.next().await.expect("server closed early").unwrap();
            assert_eq!(
                reply,
                Heartbeat {
                    seq: beat.seq + 1,
                    ..beat.clone()
                }
            );
        }
        SinkExt::<&Heartbeat>::close(&mut framed).await.unwrap();
        echo.await.unwrap();
    })
    .await;
}
