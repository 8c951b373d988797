//! What natter's decoders must do with any input, whatever it is and however
//! it is cut into reads.
//!
//! One copy of these checks serves two callers: the fuzz targets in
//! `fuzz/fuzz_targets/` (libFuzzer feeds them generated inputs) and the
//! regular test `tests/fuzz_corpus.rs`, which includes this file as a module
//! and replays every input saved in `fuzz/corpus/`. An input the fuzzer
//! found interesting, or one that once failed, is a regression test from
//! the moment it is saved there.
//!
//! # Reading an input
//!
//! An input is raw bytes: a short header, then the stream. Missing header
//! bytes read as 0, so every file is a valid case.
//!
//! | byte | meaning |
//! |---|---|
//! | 0 | framing, `% 3`: 0 line mode, 1 the byte delimiter of byte 1, 2 EOF mode |
//! | 1 | the delimiter, in byte mode (any byte, `\n` and `\r` included) |
//! | 2-3 | the frame limit, u16 little-endian: `0xffff` is `usize::MAX`, `0xfffe` is `usize::MAX - 1`, anything else is taken `% 1024` |
//! | 4 | how many read sizes follow, `% 32`; none (or only zeros) means the stream arrives in one read |
//! | 5.. | the read sizes (0 is an empty read), used in turn and cycled |
//! | rest | the stream |
//!
//! # What must hold
//!
//! * Nothing panics, and the decoder never yields without using up input.
//! * After the decoder asks for more bytes, it holds at most one frame's
//!   worth (the limit, plus a line mode's `\r`): an oversized frame is never
//!   buffered.
//! * The decoded items are exactly what the stream means, computed here the
//!   obvious way ([`expected`]): the stream split at every delimiter, a
//!   line mode's one trailing `\r` removed, each piece a frame if it is
//!   within the limit and one `FrameTooLong` report if not; bytes left at
//!   the end are the last frame; in EOF mode the whole stream is one frame.
//!   So every frame is within the limit, no frame contains the delimiter,
//!   frames and reports account for every byte of the input, and the result
//!   is the same for every cut of the stream into reads, including one read.
//! * Every decoded frame encodes and decodes back to itself.
//! * `JsonCodec` yields, for each frame, the value serde_json parses from
//!   it, or a `Json` error whose message stays short, and the same
//!   `FrameTooLong` reports.

use bytes::BytesMut;
use natter::{CodecError, Delimiter, DelimiterCodec, Frame, JsonCodec};
use serde_json::Value;
use tokio_util::codec::{Decoder, Encoder};

/// One case: a codec configuration, the reads, and the stream.
#[derive(Debug, Clone)]
pub struct Case<'a> {
    /// The framing.
    pub delimiter: Delimiter,
    /// The frame limit.
    pub max: usize,
    /// Read sizes, cycled; none, or only zeros, means a single read.
    pub reads: Vec<usize>,
    /// The bytes the peer sends.
    pub stream: &'a [u8],
}

impl<'a> Case<'a> {
    /// Reads an input as described in the module documentation.
    pub fn parse(data: &'a [u8]) -> Case<'a> {
        let byte = |at: usize| data.get(at).copied().unwrap_or(0);
        let delimiter = match byte(0) % 3 {
            0 => Delimiter::Line,
            1 => Delimiter::Byte(byte(1)),
            _ => Delimiter::Eof,
        };
        let max = match u16::from_le_bytes([byte(2), byte(3)]) {
            0xffff => usize::MAX,
            0xfffe => usize::MAX - 1,
            raw => usize::from(raw) % 1024,
        };
        let count = usize::from(byte(4) % 32);
        let reads = (0..count).map(|i| usize::from(byte(5 + i))).collect();
        let start = (5 + count).min(data.len());
        Case {
            delimiter,
            max,
            reads,
            stream: &data[start..],
        }
    }

    /// A fresh codec for this case.
    pub fn codec(&self) -> DelimiterCodec {
        DelimiterCodec::new(self.delimiter.clone()).max_frame_length(self.max)
    }

    /// The stream cut into reads.
    pub fn chunks(&self) -> Vec<&'a [u8]> {
        // Only empty reads would never get through the stream.
        if self.reads.iter().all(|&size| size == 0) {
            return vec![self.stream];
        }
        let mut chunks = Vec::new();
        let mut rest = self.stream;
        for &size in self.reads.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        chunks
    }

    /// The most a decoder may hold while it waits for more bytes: one
    /// frame within the limit, plus a line mode's `\r` that may turn out to
    /// be stripped.
    fn buffer_bound(&self) -> usize {
        self.max.saturating_add(1)
    }
}

/// One decoded item, comparable across codecs and with [`expected`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A frame's bytes.
    Frame(Vec<u8>),
    /// One report of a frame passing the limit.
    TooLong,
}

/// What `stream` means under `delimiter` and `max`, one item per frame,
/// each with the number of input bytes it accounts for (frame, stripped
/// `\r`, delimiter).
pub fn expected(delimiter: Delimiter, max: usize, stream: &[u8]) -> Vec<(Decoded, usize)> {
    let judge = |content: &[u8]| {
        let frame = match (&delimiter, content.last()) {
            (Delimiter::Line, Some(b'\r')) => &content[..content.len() - 1],
            _ => content,
        };
        if frame.len() <= max {
            Decoded::Frame(frame.to_vec())
        } else {
            Decoded::TooLong
        }
    };
    let Some(byte) = delimiter.as_bytes().map(|bytes| bytes[0]) else {
        return match stream {
            [] => Vec::new(),
            whole => vec![(judge(whole), whole.len())],
        };
    };
    let mut items = Vec::new();
    let mut rest = stream;
    while let Some(at) = rest.iter().position(|&b| b == byte) {
        items.push((judge(&rest[..at]), at + 1));
        rest = &rest[at + 1..];
    }
    if !rest.is_empty() {
        items.push((judge(rest), rest.len()));
    }
    items
}

/// Feeds `chunks` to `decoder` as `Framed` would (decode after each read
/// until it asks for more, `decode_eof` at the end), but keeps going after
/// errors so that what follows an error is checked too. Checks that the
/// decoder makes progress, holds at most `bound` bytes while it waits, and
/// leaves nothing behind.
pub fn decode_in_reads<D: Decoder>(
    decoder: &mut D,
    chunks: &[&[u8]],
    bound: usize,
) -> Vec<Result<D::Item, D::Error>> {
    let total: usize = chunks.iter().map(|chunk| chunk.len()).sum();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut at_eof = false;
    for chunk in chunks.iter().map(Some).chain([None]) {
        match chunk {
            Some(chunk) => buf.extend_from_slice(chunk),
            None => at_eof = true,
        }
        loop {
            let item = if at_eof {
                decoder.decode_eof(&mut buf)
            } else {
                decoder.decode(&mut buf)
            };
            match item {
                Ok(None) => break,
                Ok(Some(item)) => out.push(Ok(item)),
                Err(error) => out.push(Err(error)),
            }
            // Every frame or report uses up at least one byte.
            assert!(
                out.len() <= total + 1,
                "the decoder yields without using up input ({} items from {total} bytes)",
                out.len()
            );
        }
        assert!(
            buf.len() <= bound,
            "the decoder holds {} bytes while it waits, more than one frame's worth ({bound})",
            buf.len()
        );
    }
    assert!(
        buf.is_empty(),
        "{} bytes left undecoded at the end of the stream",
        buf.len()
    );
    out
}

/// The natter decode result as a [`Decoded`]; any error but
/// `FrameTooLong` naming the configured limit is a failure.
fn classify(item: Result<Frame, CodecError>, max: usize) -> Decoded {
    match item {
        Ok(frame) => Decoded::Frame(frame.to_vec()),
        Err(CodecError::FrameTooLong { limit }) if limit == max => Decoded::TooLong,
        Err(other) => panic!("unexpected decode error: {other:?}"),
    }
}

/// Decodes the case in its reads and in one read, and checks every
/// invariant of `DelimiterCodec` listed in the module documentation.
pub fn check_delimiter_codec(data: &[u8]) {
    let case = Case::parse(data);
    let bound = case.buffer_bound();
    let decode = |chunks: &[&[u8]]| -> Vec<Decoded> {
        decode_in_reads(&mut case.codec(), chunks, bound)
            .into_iter()
            .map(|item| classify(item, case.max))
            .collect()
    };
    let in_reads = decode(&case.chunks());
    let at_once = decode(&[case.stream]);
    let model = expected(case.delimiter.clone(), case.max, case.stream);

    let accounted: usize = model.iter().map(|(_, bytes)| bytes).sum();
    assert_eq!(accounted, case.stream.len(), "the model loses bytes");
    let want: Vec<Decoded> = model.into_iter().map(|(item, _)| item).collect();
    assert_eq!(
        at_once, want,
        "one read: not what the stream means ({case:?})"
    );
    assert_eq!(
        in_reads, want,
        "cut into reads: not what the stream means ({case:?})"
    );

    for item in &in_reads {
        let Decoded::Frame(frame) = item else {
            continue;
        };
        assert!(frame.len() <= case.max, "a frame passed the limit");
        if let Some(byte) = case.delimiter.as_bytes().map(|bytes| bytes[0]) {
            assert!(!frame.contains(&byte), "a frame contains the delimiter");
        }
    }
    check_round_trip(&case, &in_reads);
}

/// Every decoded frame, encoded again, decodes to itself. The one
/// documented exception: in line mode a frame ending in `\r` reads back
/// without it, so such frames are left out.
fn check_round_trip(case: &Case<'_>, decoded: &[Decoded]) {
    let frames: Vec<&Vec<u8>> = decoded
        .iter()
        .filter_map(|item| match item {
            Decoded::Frame(frame) => Some(frame),
            Decoded::TooLong => None,
        })
        .filter(|frame| !(case.delimiter == Delimiter::Line && frame.last() == Some(&b'\r')))
        // EOF mode has one frame per stream, and an empty stream none.
        .filter(|frame| case.delimiter != Delimiter::Eof || !frame.is_empty())
        .collect();
    let mut codec = case.codec();
    let mut wire = BytesMut::new();
    for frame in &frames {
        codec
            .encode(frame.as_slice(), &mut wire)
            .expect("a decoded frame encodes");
    }
    let again: Vec<Decoded> = decode_in_reads(&mut case.codec(), &[&wire], case.buffer_bound())
        .into_iter()
        .map(|item| classify(item, case.max))
        .collect();
    let frames: Vec<Decoded> = frames
        .into_iter()
        .map(|frame| Decoded::Frame(frame.clone()))
        .collect();
    assert_eq!(again, frames, "decoded frames do not survive a round trip");
}

/// One `JsonCodec` item: a value, a frame that is not JSON, or a report of
/// an oversized frame.
#[derive(Debug, Clone, PartialEq)]
enum Parsed {
    Value(Value),
    NotJson,
    TooLong,
}

/// Decodes the case with `JsonCodec<serde_json::Value>` over the case's
/// framing, and checks it against serde_json on each expected frame.
pub fn check_json_codec(data: &[u8]) {
    let case = Case::parse(data);
    let mut codec = JsonCodec::<Value>::with_framing(case.codec());
    let got: Vec<Parsed> = decode_in_reads(&mut codec, &case.chunks(), case.buffer_bound())
        .into_iter()
        .map(|item| match item {
            Ok(value) => Parsed::Value(value),
            Err(error @ CodecError::Json { .. }) => {
                let message = error.to_string();
                assert!(
                    message.len() <= 1024,
                    "a JSON error quotes too much: {} bytes",
                    message.len()
                );
                Parsed::NotJson
            }
            Err(CodecError::FrameTooLong { limit }) if limit == case.max => Parsed::TooLong,
            Err(other) => panic!("unexpected decode error: {other:?}"),
        })
        .collect();
    let want: Vec<Parsed> = expected(case.delimiter.clone(), case.max, case.stream)
        .into_iter()
        .map(|(item, _)| match item {
            Decoded::Frame(frame) => match serde_json::from_slice::<Value>(&frame) {
                Ok(value) => Parsed::Value(value),
                Err(_) => Parsed::NotJson,
            },
            Decoded::TooLong => Parsed::TooLong,
        })
        .collect();
    assert_eq!(got, want, "JsonCodec disagrees with serde_json ({case:?})");
}
