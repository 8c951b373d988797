//! Byte-exact specifications of the framing rules.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use super::*;

/// Feeds `chunks` one at a time, then ends the stream; returns every frame
/// (as text) and error, in order.
fn decode_all(mut codec: DelimiterCodec, chunks: &[&[u8]]) -> Vec<Result<String, String>> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let push = |item: Result<Option<Frame>, CodecError>, out: &mut Vec<_>| match item {
        Ok(Some(frame)) => {
            out.push(Ok(String::from_utf8(frame.to_vec()).unwrap()));
            true
        }
        Ok(None) => false,
        Err(err) => {
            out.push(Err(err.to_string()));
            true
        }
    };
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while push(codec.decode(&mut buf), &mut out) {}
    }
    while push(codec.decode_eof(&mut buf), &mut out) {}
    out
}

fn frames(items: &[&str]) -> Vec<Result<String, String>> {
    items.iter().map(|s| Ok(s.to_string())).collect()
}

fn too_long(limit: usize) -> Result<String, String> {
    Err(CodecError::FrameTooLong { limit }.to_string())
}

#[test]
fn crlf_is_stripped_in_line_mode() {
    let out = decode_all(DelimiterCodec::lines(), &[b"a\r\nb\n"]);
    assert_eq!(out, frames(&["a", "b"]));
}

#[test]
fn only_one_cr_is_stripped_and_a_lone_cr_is_data() {
    let out = decode_all(DelimiterCodec::lines(), &[b"a\r\r\nb\rc\n\r\n"]);
    assert_eq!(out, frames(&["a\r", "b\rc", ""]));
}

#[test]
fn cr_split_from_its_lf_across_reads_is_still_stripped() {
    let out = decode_all(DelimiterCodec::lines(), &[b"abc\r", b"\n"]);
    assert_eq!(out, frames(&["abc"]));
}

#[test]
fn empty_frames_are_frames() {
    let out = decode_all(DelimiterCodec::lines(), &[b"\n\n"]);
    assert_eq!(out, frames(&["", ""]));
    let out = decode_all(DelimiterCodec::byte(b';'), &[b";;x;"]);
    assert_eq!(out, frames(&["", "", "x"]));
}

#[test]
fn custom_delimiter_strips_nothing_else() {
    let out = decode_all(DelimiterCodec::byte(b'|'), &[b"a\r|b\n|c"]);
    assert_eq!(out, frames(&["a\r", "b\n", "c"]));
}

#[test]
fn byte_newline_keeps_the_cr() {
    let out = decode_all(DelimiterCodec::byte(b'\n'), &[b"a\r\n"]);
    assert_eq!(out, frames(&["a\r"]));
}

#[test]
fn trailing_bytes_at_eof_are_the_last_frame() {
    let out = decode_all(DelimiterCodec::lines(), &[b"a\nrest"]);
    assert_eq!(out, frames(&["a", "rest"]));
    let out = decode_all(DelimiterCodec::lines(), &[b"a\nrest\r"]);
    assert_eq!(out, frames(&["a", "rest"]));
    let out = decode_all(DelimiterCodec::byte(b';'), &[b"a;rest\r"]);
    assert_eq!(out, frames(&["a", "rest\r"]));
}

#[test]
fn nothing_after_the_last_delimiter_is_no_frame() {
    assert_eq!(
        decode_all(DelimiterCodec::lines(), &[b"a\n"]),
        frames(&["a"])
    );
    assert_eq!(decode_all(DelimiterCodec::lines(), &[]), frames(&[]));
}

#[test]
fn eof_mode_delivers_the_whole_stream_as_one_frame() {
    let out = decode_all(DelimiterCodec::eof(), &[b"a\nb", b"\r\n", b"c"]);
    assert_eq!(out, frames(&["a\nb\r\nc"]));
}

#[test]
fn eof_mode_with_an_empty_stream_yields_no_frame() {
    assert_eq!(decode_all(DelimiterCodec::eof(), &[b""]), frames(&[]));
}

#[test]
fn a_frame_exactly_at_the_limit_is_accepted() {
    let codec = DelimiterCodec::lines().max_frame_length(4);
    assert_eq!(decode_all(codec.clone(), &[b"abcd\n"]), frames(&["abcd"]));
    // The stripped `\r` does not count toward the limit.
    assert_eq!(decode_all(codec.clone(), &[b"abcd\r\n"]), frames(&["abcd"]));
    assert_eq!(decode_all(codec, &[b"abcd\r", b"\n"]), frames(&["abcd"]));
    let codec = DelimiterCodec::byte(b';').max_frame_length(4);
    assert_eq!(decode_all(codec, &[b"abcd;"]), frames(&["abcd"]));
    let codec = DelimiterCodec::eof().max_frame_length(4);
    assert_eq!(decode_all(codec, &[b"ab", b"cd"]), frames(&["abcd"]));
}

#[test]
fn one_byte_over_the_limit_is_an_error() {
    let codec = DelimiterCodec::lines().max_frame_length(4);
    assert_eq!(
        decode_all(codec.clone(), &[b"abcde\nok\n"]),
        vec![too_long(4), Ok("ok".into())]
    );
    // A kept `\r` counts: "abc\r\r" is the frame "abc\r\r" minus one `\r`.
    assert_eq!(decode_all(codec, &[b"abcd\r\r\n"]), vec![too_long(4)]);
    let codec = DelimiterCodec::byte(b';').max_frame_length(4);
    assert_eq!(decode_all(codec, &[b"abcd\r;"]), vec![too_long(4)]);
    let codec = DelimiterCodec::eof().max_frame_length(4);
    assert_eq!(decode_all(codec, &[b"abcde"]), vec![too_long(4)]);
}

#[test]
fn the_limit_is_reported_as_soon_as_it_is_passed() {
    let mut codec = DelimiterCodec::lines().max_frame_length(4);
    let mut buf = BytesMut::from(&b"abc"[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    buf.extend_from_slice(b"de"); // five bytes and no delimiter yet
    assert!(matches!(
        codec.decode(&mut buf),
        Err(CodecError::FrameTooLong { limit: 4 })
    ));
    assert!(buf.is_empty(), "the oversized frame is not buffered");
    buf.extend_from_slice(&[b'x'; 1000]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(buf.is_empty(), "its rest is dropped as it arrives");
    buf.extend_from_slice(b"xx\nnext\n");
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "next");
}

#[test]
fn the_limit_is_passed_across_chunk_boundaries() {
    let codec = DelimiterCodec::lines().max_frame_length(8);
    let out = decode_all(codec, &[b"ok\nabc", b"def", b"ghi", b"jkl\nafter\n"]);
    assert_eq!(out, vec![Ok("ok".into()), too_long(8), Ok("after".into())]);
    let codec = DelimiterCodec::eof().max_frame_length(8);
    let out = decode_all(codec, &[b"abc", b"def", b"ghi", b"jkl"]);
    assert_eq!(out, vec![too_long(8)]);
}

#[test]
fn line_mode_cr_at_the_limit_waits_for_the_next_byte() {
    let mut codec = DelimiterCodec::lines().max_frame_length(2);
    let mut buf = BytesMut::from(&b"ab\r"[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    buf.extend_from_slice(b"x");
    assert!(matches!(
        codec.decode(&mut buf),
        Err(CodecError::FrameTooLong { limit: 2 })
    ));
}

#[test]
fn oversized_trailing_bytes_at_eof_are_an_error() {
    let codec = DelimiterCodec::lines().max_frame_length(3);
    assert_eq!(
        decode_all(codec, &[b"a\nabcd"]),
        vec![Ok("a".into()), too_long(3)]
    );
}

#[test]
fn frames_before_an_oversized_one_in_the_same_read_come_first() {
    let codec = DelimiterCodec::lines().max_frame_length(3);
    let out = decode_all(codec, &[b"a\nb\ntoolong\nc\n"]);
    assert_eq!(
        out,
        vec![Ok("a".into()), Ok("b".into()), too_long(3), Ok("c".into())]
    );
}

#[test]
fn lifted_limit_accepts_large_frames() {
    let big = vec![b'x'; 1 << 20];
    let mut input = big.clone();
    input.push(b'\n');
    let codec = DelimiterCodec::lines().max_frame_length(usize::MAX);
    assert_eq!(
        decode_all(codec, &[&input]),
        vec![Ok(String::from_utf8(big).unwrap())]
    );
}

#[test]
fn a_partial_frame_is_never_rescanned() {
    let mut codec = DelimiterCodec::lines();
    let mut buf = BytesMut::from(&b"abc"[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert_eq!(codec.next_index, 3);
    buf.extend_from_slice(b"de");
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert_eq!(codec.next_index, 5);
    buf.extend_from_slice(b"\n");
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "abcde");
    assert_eq!(codec.next_index, 0);
}

#[test]
fn encoding_appends_the_delimiter() {
    let mut out = BytesMut::new();
    DelimiterCodec::lines().encode("a", &mut out).unwrap();
    DelimiterCodec::lines()
        .encode(Frame::new(), &mut out)
        .unwrap();
    DelimiterCodec::byte(b';').encode(b"b", &mut out).unwrap();
    DelimiterCodec::eof().encode("c\nd", &mut out).unwrap();
    assert_eq!(&out[..], b"a\n\nb;c\nd");
}

#[test]
fn encoding_a_frame_with_the_delimiter_is_an_error() {
    let mut out = BytesMut::from("kept");
    let err = DelimiterCodec::lines()
        .encode("a\nb", &mut out)
        .unwrap_err();
    assert!(matches!(err, CodecError::DelimiterInFrame { offset: 1 }));
    assert_eq!(
        err.to_string(),
        "frame to send contains the delimiter at offset 1"
    );
    assert_eq!(&out[..], b"kept", "nothing is written");
}

#[test]
fn json_codec_round_trips_and_refuses_a_delimiter_in_the_json() {
    let mut codec = JsonCodec::<Vec<String>>::new();
    let mut buf = BytesMut::new();
    codec.encode(vec!["a\nb".to_string()], &mut buf).unwrap();
    assert_eq!(&buf[..], b"[\"a\\nb\"]\n");
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(vec!["a\nb".to_string()])
    );

    let mut comma = JsonCodec::<Vec<u8>>::with_framing(DelimiterCodec::byte(b','));
    let err = comma.encode(vec![1u8, 2], &mut buf).unwrap_err();
    assert!(matches!(err, CodecError::DelimiterInFrame { .. }));
    assert!(buf.is_empty());
}

#[test]
fn json_codec_reports_bad_frames_with_a_prefix() {
    let mut codec = JsonCodec::<u32>::new();
    let mut buf = BytesMut::from("not json\n");
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(
        err.to_string().contains("frame starts with \"not json\""),
        "{err}"
    );
}

#[test]
fn line_mode_writes_a_trailing_cr_as_is() {
    // The echo example's rule: `a\r\r\n` is the frame `a\r`, answered `a\r\n`.
    let mut out = BytesMut::new();
    DelimiterCodec::lines().encode("a\r", &mut out).unwrap();
    assert_eq!(&out[..], b"a\r\n");
}

#[test]
fn the_last_frame_at_end_of_input_loses_one_trailing_cr_in_line_mode() {
    // `printf 'x\ny\r'` then half-close: frames `x` and `y`.
    let out = decode_all(DelimiterCodec::lines(), &[b"x\ny\r"]);
    assert_eq!(out, frames(&["x", "y"]));
    let out = decode_all(DelimiterCodec::byte(b'\n'), &[b"x\ny\r"]);
    assert_eq!(out, frames(&["x", "y\r"]), "byte mode strips nothing");
}

#[test]
fn a_frame_longer_than_the_limit_is_refused_on_encode() {
    let mut out = BytesMut::from("kept");
    let err = DelimiterCodec::lines()
        .max_frame_length(3)
        .encode("abcd", &mut out)
        .unwrap_err();
    assert!(matches!(
        err,
        CodecError::FrameTooLongToSend { len: 4, limit: 3 }
    ));
    assert_eq!(&out[..], b"kept", "nothing is written");
    DelimiterCodec::lines()
        .max_frame_length(3)
        .encode("abc", &mut out)
        .unwrap();
    assert_eq!(&out[..], b"keptabc\n");
}

#[test]
fn a_multi_byte_delimiter_cuts_frames_and_is_removed() {
    let codec = || DelimiterCodec::sequence("\r\n\r\n");
    let out = decode_all(codec(), &[b"a\r\nb\r\n\r\nc\r\n\r\n\r\n\r\nd"]);
    assert_eq!(out, frames(&["a\r\nb", "c", "", "d"]));
}

#[test]
fn a_multi_byte_delimiter_split_across_reads_is_found() {
    let codec = DelimiterCodec::sequence("END\r\n");
    let out = decode_all(codec, &[b"one", b"EN", b"D", b"\r", b"\ntwoE", b"ND\r\n"]);
    assert_eq!(out, frames(&["one", "two"]));
}

#[test]
fn a_multi_byte_delimiter_frame_over_the_limit_is_reported_once_and_skipped() {
    let codec = DelimiterCodec::sequence("||").max_frame_length(3);
    let out = decode_all(codec.clone(), &[b"abc||abcd||x||"]);
    assert_eq!(out, vec![Ok("abc".into()), too_long(3), Ok("x".into())]);
    // The long frame's delimiter arrives in pieces while it is skipped.
    let out = decode_all(codec, &[b"abcdef|", b"|ok||"]);
    assert_eq!(out, vec![too_long(3), Ok("ok".into())]);
}

#[test]
fn a_multi_byte_delimiter_frame_of_exactly_the_limit_is_accepted() {
    let codec = DelimiterCodec::sequence("\r\n\r\n").max_frame_length(4);
    let out = decode_all(codec, &[b"abcd\r\n", b"\r\n"]);
    assert_eq!(out, frames(&["abcd"]));
}

#[test]
fn a_frame_that_would_read_back_shorter_is_refused_for_a_sequence() {
    // "xa" + "aa" on the wire is "xaaa": the reader would cut it at "x".
    let mut out = BytesMut::new();
    let err = DelimiterCodec::sequence("aa")
        .encode("xa", &mut out)
        .unwrap_err();
    assert!(matches!(err, CodecError::DelimiterInFrame { offset: 1 }));
    DelimiterCodec::sequence("ab")
        .encode("xa", &mut out)
        .unwrap();
    assert_eq!(&out[..], b"xaab");
}

/// What a natter connection's batched codec decodes from `chunks`, one
/// read at a time, in the same shape as [`decode_all`].
fn decode_all_batched(mut codec: DelimiterCodec, chunks: &[&[u8]]) -> Vec<Result<String, String>> {
    cut_in_batches(&mut codec);
    assert!(codec.batches);
    decode_all(codec, chunks)
}

#[test]
fn a_batch_hands_out_every_frame_of_a_read_in_order() {
    let chunks: &[&[u8]] = &[b"a\r\nb\n\nc", b"d\r", b"\ne\nf"];
    let out = decode_all_batched(DelimiterCodec::lines(), chunks);
    assert_eq!(out, frames(&["a", "b", "", "cd", "e", "f"]));
    assert_eq!(out, decode_all(DelimiterCodec::lines(), chunks));
}

#[test]
fn a_batch_keeps_its_frames_within_the_limit_together() {
    // Limit 4: "ab\ncd\n" is 6 bytes, so the read is cut in two batches,
    // and the over-long frame after them is still refused as it is met.
    let mut codec = DelimiterCodec::lines().max_frame_length(4);
    cut_in_batches(&mut codec);
    let mut buf = BytesMut::from(&b"ab\ncd\nefghij\nk\n"[..]);
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "ab");
    assert!(!codec.batch_ready(), "the next frame would pass the limit");
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "cd");
    assert!(matches!(
        codec.decode(&mut buf),
        Err(CodecError::FrameTooLong { limit: 4 })
    ));
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "k");
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
}

#[test]
fn a_batch_is_let_go_once_handed_out() {
    let mut codec = DelimiterCodec::lines();
    cut_in_batches(&mut codec);
    let mut buf = BytesMut::from(&b"a\nb\nc"[..]);
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "a");
    end_batch(&mut codec);
    assert!(codec.batch_ready(), "a frame of the batch is still to come");
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "b");
    end_batch(&mut codec);
    assert!(codec.batch.is_empty() && codec.last.is_empty());
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
}

#[test]
fn a_frame_just_decoded_is_sent_back_as_it_came() {
    let mut codec = DelimiterCodec::lines().max_frame_length(16);
    cut_in_batches(&mut codec);
    let mut buf = BytesMut::from(&b"one\r\ntwo\nthree\n"[..]);
    let one = codec.decode(&mut buf).unwrap().unwrap();
    let mut out = BytesMut::new();
    codec.encode(one.clone(), &mut out).unwrap();
    codec.encode(one.slice(1..), &mut out).unwrap();
    assert_eq!(&out[..], b"one\nne\n");
    // Anything else is checked as always, even bytes of the same batch.
    let two = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(two, "two");
    let across = Frame::from(codec.batch.slice(codec.next - 4..codec.next + 2));
    assert_eq!(across, "two\nth");
    assert!(matches!(
        codec.encode(across, &mut out),
        Err(CodecError::DelimiterInFrame { offset: 3 })
    ));
    assert!(matches!(
        codec.encode(Frame::from("x\ny"), &mut out),
        Err(CodecError::DelimiterInFrame { offset: 1 })
    ));
    assert!(matches!(
        codec.encode(Frame::from("0123456789abcdefg"), &mut out),
        Err(CodecError::FrameTooLongToSend { .. })
    ));
    codec.encode(two, &mut out).unwrap();
    assert_eq!(&out[..], b"one\nne\ntwo\n");
}

#[test]
fn only_delimiter_codecs_cut_in_batches() {
    let mut other = JsonCodec::<()>::new();
    cut_in_batches(&mut other);
    let mut sequence = DelimiterCodec::sequence("\r\n\r\n");
    cut_in_batches(&mut sequence);
    let out = decode_all(sequence, &[b"a\r\n\r\nb\r\n\r\n"]);
    assert_eq!(out, frames(&["a", "b"]));
}

mod batches {
    use proptest::prelude::*;

    use super::*;

    /// A stream of short frames, delimiters, `\r`s and data, cut into reads.
    fn stream() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
        (
            prop::collection::vec(
                prop::sample::select(vec![b'a', b'b', b'\r', b'\n', b';']),
                0..200,
            ),
            prop::collection::vec(1usize..40, 1..20),
        )
    }

    fn cut<'a>(input: &'a [u8], reads: &[usize]) -> Vec<&'a [u8]> {
        let mut chunks = Vec::new();
        let mut rest = input;
        for &len in reads.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(len.min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        chunks
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the stream, the limit and the reads, a batched codec
        /// decodes exactly what a plain one does: the same frames and
        /// the same errors, in the same order.
        #[test]
        fn a_batched_codec_decodes_what_a_plain_one_does(
            (input, reads) in stream(),
            limit in prop::option::of(0usize..12),
            byte in any::<bool>(),
        ) {
            let codec = if byte { DelimiterCodec::byte(b';') } else { DelimiterCodec::lines() };
            let codec = match limit {
                Some(limit) => codec.max_frame_length(limit),
                None => codec,
            };
            let chunks = cut(&input, &reads);
            prop_assert_eq!(
                decode_all_batched(codec.clone(), &chunks),
                decode_all(codec, &chunks)
            );
        }

        /// Sending back what a batched codec decoded, whole or in part,
        /// writes what a plain codec writes.
        #[test]
        fn a_batched_codec_encodes_its_frames_as_a_plain_one_does(
            (input, reads) in stream(),
            limit in prop::option::of(0usize..12),
            byte in any::<bool>(),
            skip in 0usize..3,
            before in 0usize..3,
            after in 0usize..3,
        ) {
            let codec = if byte { DelimiterCodec::byte(b';') } else { DelimiterCodec::lines() };
            let mut plain = match limit {
                Some(limit) => codec.max_frame_length(limit),
                None => codec,
            };
            let mut batched = plain.clone();
            cut_in_batches(&mut batched);
            let mut buf = BytesMut::new();
            for chunk in cut(&input, &reads) {
                buf.extend_from_slice(chunk);
                loop {
                    match batched.decode(&mut buf) {
                        Ok(Some(frame)) => {
                            let part = frame.slice(skip.min(frame.len())..);
                            // And bytes around it, when it came in a batch.
                            let batch = &batched.batch;
                            let around = if batched.last.is_empty() || batch.is_empty() {
                                part.clone()
                            } else {
                                let start = batched.last.start - batch.as_ptr() as usize;
                                let end = (start + batched.last.len() + after).min(batch.len());
                                Frame::from(batch.slice(start.saturating_sub(before)..end))
                            };
                            for reply in [frame, part, around] {
                                let (mut ours, mut theirs) = (BytesMut::new(), BytesMut::new());
                                let ours_ok = batched.encode(reply.clone(), &mut ours).is_ok();
                                let theirs_ok = plain.encode(reply, &mut theirs).is_ok();
                                prop_assert_eq!(ours_ok, theirs_ok);
                                prop_assert_eq!(&ours[..], &theirs[..]);
                            }
                        }
                        Ok(None) => break,
                        Err(_) => {}
                    }
                }
                end_batch(&mut batched);
            }
        }
    }
}
