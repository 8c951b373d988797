//! Throughput of [`DelimiterCodec`] against tokio-util's `LinesCodec` and
//! `AnyDelimiterCodec`, on the same input in the same run.
//!
//! Decoding is measured the way `Framed` drives a codec: bytes arrive in
//! 4 KiB reads appended to one `BytesMut`, and after each read the codec
//! decodes until it asks for more. Each frame size is its own group, so the
//! ratios between codecs can be read off directly. Run and read it as
//! described in BENCHMARKS.md:
//!
//! ```text
//! cargo bench -p natter --bench codec -- --warm-up-time 1 --measurement-time 3
//! ```

use std::fmt::Debug;
use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_main};
use natter::DelimiterCodec;
use tokio_util::codec::{AnyDelimiterCodec, Decoder, Encoder, LinesCodec};

/// How much a socket read hands the codec at a time.
const READ_SIZE: usize = 4 * 1024;
/// `Framed`'s initial read buffer.
const INITIAL_BUFFER: usize = 8 * 1024;
/// The bytes decoded per iteration, whatever the frame size.
const INPUT_SIZE: usize = 1024 * 1024;
/// Frame lengths measured, delimiter excluded.
const FRAME_SIZES: [(&str, usize); 3] = [("64B", 64), ("1KiB", 1024), ("64KiB", 64 * 1024)];
/// A limit above the largest frame, for every codec.
const MAX_LENGTH: usize = 128 * 1024;

/// ASCII lines of `len` bytes each (so `LinesCodec` accepts them), each
/// ending in `\n`, about `INPUT_SIZE` bytes in all.
fn lines_of(len: usize) -> Vec<u8> {
    let line: Vec<u8> = (0..len).map(|i| b' ' + (i % 95) as u8).collect();
    let count = INPUT_SIZE.div_ceil(len + 1);
    let mut input = Vec::with_capacity(count * (len + 1));
    for _ in 0..count {
        input.extend_from_slice(&line);
        input.push(b'\n');
    }
    input
}

/// Feeds `input` to `codec` in `READ_SIZE` reads, decoding after each read
/// until it returns `None`; returns the number of frames.
fn decode_in_reads<D>(mut codec: D, input: &[u8]) -> usize
where
    D: Decoder,
    D::Error: Debug,
{
    let mut buf = BytesMut::with_capacity(INITIAL_BUFFER);
    let mut frames = 0;
    for read in input.chunks(READ_SIZE) {
        buf.extend_from_slice(read);
        while let Some(frame) = codec.decode(&mut buf).expect("valid input") {
            black_box(frame);
            frames += 1;
        }
    }
    frames
}

fn natter_lines() -> DelimiterCodec {
    DelimiterCodec::lines().max_frame_length(MAX_LENGTH)
}

fn lines_codec() -> LinesCodec {
    LinesCodec::new_with_max_length(MAX_LENGTH)
}

fn any_delimiter_codec() -> AnyDelimiterCodec {
    AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), b"\n".to_vec(), MAX_LENGTH)
}

fn decode(c: &mut Criterion) {
    for (name, len) in FRAME_SIZES {
        let input = lines_of(len);
        let expected = input.len() / (len + 1);
        // The three must agree on the input before their speed is compared.
        assert_eq!(decode_in_reads(natter_lines(), &input), expected);
        assert_eq!(decode_in_reads(lines_codec(), &input), expected);
        assert_eq!(decode_in_reads(any_delimiter_codec(), &input), expected);

        let mut group = c.benchmark_group(format!("decode/{name}"));
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function("natter", |b| {
            b.iter(|| decode_in_reads(natter_lines(), black_box(&input)))
        });
        group.bench_function("LinesCodec", |b| {
            b.iter(|| decode_in_reads(lines_codec(), black_box(&input)))
        });
        group.bench_function("AnyDelimiterCodec", |b| {
            b.iter(|| decode_in_reads(any_delimiter_codec(), black_box(&input)))
        });
        group.finish();
    }
}

/// Encodes every frame into `out` (cleared first), as `Framed` fills its
/// write buffer.
fn encode_all<E, T>(codec: &mut E, frames: &[T], out: &mut BytesMut)
where
    E: for<'a> Encoder<&'a T>,
    for<'a> <E as Encoder<&'a T>>::Error: Debug,
{
    out.clear();
    for frame in frames {
        codec.encode(frame, out).expect("valid frame");
    }
    black_box(&out);
}

fn encode(c: &mut Criterion) {
    for (name, len) in &FRAME_SIZES[..2] {
        let line: String = (0..*len).map(|i| (b' ' + (i % 95) as u8) as char).collect();
        let frames = vec![line; 256 * 1024 / (len + 1)];
        let bytes = frames.len() * (len + 1);
        let mut out = BytesMut::with_capacity(bytes);

        let mut group = c.benchmark_group(format!("encode/{name}"));
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function("natter", |b| {
            let mut codec = natter_lines();
            b.iter(|| encode_all(&mut codec, &frames, &mut out))
        });
        group.bench_function("LinesCodec", |b| {
            let mut codec = lines_codec();
            b.iter(|| encode_all(&mut codec, &frames, &mut out))
        });
        group.bench_function("AnyDelimiterCodec", |b| {
            let mut codec = any_delimiter_codec();
            b.iter(|| encode_all(&mut codec, &frames, &mut out))
        });
        group.finish();
    }
}

// `criterion_group!` defines an undocumented `pub fn benches`.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::decode, super::encode);
}
criterion_main!(group::benches);
