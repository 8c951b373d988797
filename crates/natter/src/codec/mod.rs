//! Framing: [`DelimiterCodec`] cuts a byte stream into [`Frame`]s and
//! [`JsonCodec`] turns those frames into typed values.
//!
//! The codecs know nothing of sockets or services: they are plain
//! tokio-util [`Decoder`]/[`Encoder`]s, usable on any
//! [`Framed`](tokio_util::codec::Framed), and they fail with their own
//! [`CodecError`]. natter's connections run any codec whose frames are
//! [`Frame`]s (see [`FrameCodec`]); [`Frames`] adapts one whose frames are
//! other bytes, such as tokio-util's `LengthDelimitedCodec`.
//!
//! # What a decode error does to the stream
//!
//! A frame longer than the limit yields [`CodecError::FrameTooLong`] as
//! soon as the limit is passed. The codec then discards that frame's bytes
//! as they arrive, up to and including its delimiter, and decodes normally
//! after it; the discarded frame is reported once, never silently.
//!
//! `Framed` itself ends its stream after any decode error (it yields the
//! error, then `None`), and does not decode the bytes it already holds until
//! more arrive. natter's connection driver reads and decodes on its own, so
//! neither applies there: by default the connection answers every frame
//! before the long one and closes, and with an
//! [`on_error`](crate::ServerBuilder::on_error) hook it answers the long
//! frame in its place and goes on with the next.

pub(crate) mod error;
mod frames;
mod json;

pub use error::CodecError;
pub use frames::{FrameCodec, Frames};
pub use json::JsonCodec;

use std::any::Any;
use std::ops::Range;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use memchr::memmem;
use tokio_util::codec::{Decoder, Encoder};

use crate::Frame;

/// The longest frame accepted by default: 64 KiB.
pub const DEFAULT_MAX_FRAME_LENGTH: usize = 64 * 1024;

/// Where one frame ends and the next begins.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Delimiter {
    /// A frame ends at this byte; the byte is not part of the frame.
    Byte(u8),
    /// A frame ends at `\n`; one `\r` right before it is removed too
    /// (`a\r\n` is `a`, `a\r\r\n` is `a\r`), also for the last frame at
    /// end of input (`a\r` then end of input is `a`). Any other `\r` is
    /// data.
    Line,
    /// A frame ends at this sequence of two or more bytes (`\r\n\r\n`,
    /// `END\r\n`), which is not part of the frame. Build it with
    /// [`Delimiter::sequence`].
    Sequence(Bytes),
    /// No delimiter: everything up to end of input is one frame (the
    /// original chitchat's delimiter 0).
    Eof,
}

impl Delimiter {
    /// The delimiter the original framework meant by a byte: `0` is
    /// [`Eof`](Delimiter::Eof), `b'\n'` is [`Line`](Delimiter::Line) (with
    /// its `\r` handling), anything else is [`Byte`](Delimiter::Byte).
    ///
    /// ```
    /// use natter::Delimiter;
    /// assert_eq!(Delimiter::from_byte(0), Delimiter::Eof);
    /// assert_eq!(Delimiter::from_byte(b'\n'), Delimiter::Line);
    /// assert_eq!(Delimiter::from_byte(b';'), Delimiter::Byte(b';'));
    /// ```
    pub const fn from_byte(byte: u8) -> Delimiter {
        match byte {
            0 => Delimiter::Eof,
            b'\n' => Delimiter::Line,
            byte => Delimiter::Byte(byte),
        }
    }

    /// A delimiter of any length: several bytes are a
    /// [`Sequence`](Delimiter::Sequence), one byte a
    /// [`Byte`](Delimiter::Byte) (with no `\r` handling, even for `\n`), and
    /// none at all [`Eof`](Delimiter::Eof).
    ///
    /// ```
    /// use natter::Delimiter;
    /// assert!(matches!(Delimiter::sequence("\r\n\r\n"), Delimiter::Sequence(_)));
    /// assert_eq!(Delimiter::sequence(";"), Delimiter::Byte(b';'));
    /// assert_eq!(Delimiter::sequence(""), Delimiter::Eof);
    /// ```
    pub fn sequence(bytes: impl Into<Bytes>) -> Delimiter {
        let bytes = bytes.into();
        match bytes.len() {
            0 => Delimiter::Eof,
            1 => Delimiter::Byte(bytes[0]),
            _ => Delimiter::Sequence(bytes),
        }
    }

    /// The bytes that end a frame, or `None` in EOF mode.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Delimiter::Byte(byte) => Some(std::slice::from_ref(byte)),
            Delimiter::Line => Some(b"\n"),
            Delimiter::Sequence(bytes) => Some(bytes),
            Delimiter::Eof => None,
        }
    }
}

/// A tokio-util codec for frames that end at a delimiter.
///
/// * Decodes into [`Frame`]s, delimiter excluded. Empty frames are frames.
///   At end of input, trailing bytes without a delimiter are the last frame.
/// * Encodes anything that is `AsRef<[u8]>` by appending the delimiter. A
///   frame that contains the delimiter is refused with
///   [`CodecError::DelimiterInFrame`] rather than silently split in two, and
///   one longer than the limit with [`CodecError::FrameTooLongToSend`].
///   Exactly the frame's bytes and the delimiter are written: in line mode a
///   frame that ends in `\r` reads back without that `\r` (line mode's one
///   ambiguity; use [`byte`](Self::byte)`(b'\n')` to keep every `\r`).
/// * A frame longer than [`max_frame_length`](Self::max_frame_length)
///   (64 KiB by default; the delimiter and a stripped `\r` do not count)
///   is a [`CodecError::FrameTooLong`] the moment the limit is passed, and
///   its bytes are dropped rather than buffered; decoding goes on after it.
///
/// Single-byte delimiters are found with `memchr`, sequences with its
/// `memmem` finder, and bytes already searched are never searched again
/// while a frame arrives in pieces.
///
/// ```
/// use bytes::BytesMut;
/// use natter::DelimiterCodec;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = DelimiterCodec::lines();
/// let mut buf = BytesMut::from("hello\r\nwor");
/// assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "hello");
/// assert_eq!(codec.decode(&mut buf).unwrap(), None); // "wor" waits for more
/// buf.extend_from_slice(b"ld\n");
/// assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "world");
///
/// let mut out = BytesMut::new();
/// codec.encode("reply", &mut out).unwrap();
/// assert_eq!(&out[..], b"reply\n");
///
/// // A multi-byte delimiter, as in a protocol whose messages end at a blank line.
/// let mut blank_line = DelimiterCodec::sequence("\r\n\r\n");
/// let mut buf = BytesMut::from("GET / HTTP/1.0\r\nHost: x\r\n\r\nnext");
/// assert_eq!(blank_line.decode(&mut buf).unwrap().unwrap(), "GET / HTTP/1.0\r\nHost: x");
/// ```
#[derive(Debug, Clone)]
pub struct DelimiterCodec {
    delimiter: Delimiter,
    /// The substring finder, for a [`Delimiter::Sequence`].
    finder: Option<Arc<memmem::Finder<'static>>>,
    max_frame_length: usize,
    /// Bytes at the front of the buffer already searched for the delimiter.
    next_index: usize,
    /// Dropping the rest of an oversized frame, up to its delimiter.
    discarding: bool,
    /// Bytes left without a delimiter at end of input are an error, not
    /// the last frame.
    strict_end: bool,
    /// Cut every complete frame in the buffer at once (see
    /// [`cut_in_batches`]).
    batches: bool,
    /// Frames cut from the buffer in one piece, each with its delimiter,
    /// and where the next one to hand out starts.
    batch: Bytes,
    next: usize,
    /// Where the last frame handed out of `batch` lies in memory. `batch`
    /// keeps those bytes alive and unchanged, and they hold no delimiter:
    /// a frame to send that lies within them (an echo of the frame, or of
    /// part of it) needs no search for one.
    last: Range<usize>,
}

impl PartialEq for DelimiterCodec {
    /// Two codecs are equal when they frame alike (whatever they have
    /// decoded so far).
    fn eq(&self, other: &Self) -> bool {
        self.delimiter == other.delimiter && self.max_frame_length == other.max_frame_length
    }
}

impl Eq for DelimiterCodec {}

impl DelimiterCodec {
    /// A codec for `delimiter`, with the default 64 KiB frame limit.
    pub fn new(delimiter: Delimiter) -> Self {
        let finder = match &delimiter {
            Delimiter::Sequence(bytes) => Some(Arc::new(memmem::Finder::new(bytes).into_owned())),
            _ => None,
        };
        DelimiterCodec {
            delimiter,
            finder,
            max_frame_length: DEFAULT_MAX_FRAME_LENGTH,
            next_index: 0,
            discarding: false,
            strict_end: false,
            batches: false,
            batch: Bytes::new(),
            next: 0,
            last: 0..0,
        }
    }

    /// Line mode: frames end at `\n`, and a `\r` before it is removed.
    pub fn lines() -> Self {
        Self::new(Delimiter::Line)
    }

    /// Frames end at `byte`, which is removed; nothing else is.
    ///
    /// `DelimiterCodec::byte(b'\n')` is a newline codec *without* `\r`
    /// stripping; use [`lines`](Self::lines) for text protocols.
    pub fn byte(byte: u8) -> Self {
        Self::new(Delimiter::Byte(byte))
    }

    /// Frames end at a sequence of bytes (see [`Delimiter::sequence`]).
    pub fn sequence(bytes: impl Into<Bytes>) -> Self {
        Self::new(Delimiter::sequence(bytes))
    }

    /// EOF mode: the whole input, up to end of stream, is one frame.
    pub fn eof() -> Self {
        Self::new(Delimiter::Eof)
    }

    /// Sets the longest frame accepted, in bytes, delimiter and stripped
    /// `\r` excluded. A frame of exactly this length is accepted. In EOF
    /// mode the limit covers the whole stream. Frames to send are held to
    /// the same limit.
    ///
    /// Pass `usize::MAX` to lift the limit; a peer can then make the reader
    /// buffer without bound, so do that only for trusted peers.
    pub fn max_frame_length(mut self, max_frame_length: usize) -> Self {
        self.max_frame_length = max_frame_length;
        self
    }

    /// Whether bytes left without a delimiter at end of input are
    /// [`CodecError::IncompleteFrame`] (`true`) or the last frame (`false`,
    /// the default, as a line protocol's server wants: `printf 'a\nb'`
    /// sends two lines). A client that matches answers to requests wants
    /// `true`: an answer cut short by a closing server is not an answer.
    /// [`ClientService`](crate::ClientService) sets it on its codec. EOF
    /// mode is not affected: there the end of input ends the frame.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use natter::{CodecError, DelimiterCodec};
    /// use tokio_util::codec::Decoder;
    ///
    /// let mut codec = DelimiterCodec::lines().strict_end(true);
    /// let mut buf = BytesMut::from("whole\ncut sh");
    /// assert_eq!(codec.decode_eof(&mut buf).unwrap().unwrap(), "whole");
    /// assert!(matches!(codec.decode_eof(&mut buf), Err(CodecError::IncompleteFrame { len: 6 })));
    /// ```
    pub fn strict_end(mut self, strict: bool) -> Self {
        self.strict_end = strict;
        self
    }

    /// The delimiter.
    pub fn delimiter(&self) -> &Delimiter {
        &self.delimiter
    }

    /// The longest frame accepted, in bytes.
    pub fn max_length(&self) -> usize {
        self.max_frame_length
    }

    /// Whether `content` (a frame's bytes before the delimiter, or all
    /// buffered bytes when no delimiter is in sight) can still be, or be part
    /// of, a frame within the limit. In line mode one trailing `\r` may be
    /// the stripped one, so it does not count.
    fn within_limit(&self, content: &[u8]) -> bool {
        let max = self.max_frame_length;
        content.len() <= max
            || (self.delimiter == Delimiter::Line
                && content.len() == max.saturating_add(1)
                && content.last() == Some(&b'\r'))
    }

    /// Reports an oversized frame and drops what is buffered of it. `searched`
    /// bytes at the front of `buf` are known to end no frame.
    fn overflow(&mut self, buf: &mut BytesMut, searched: usize) -> CodecError {
        buf.advance(searched);
        self.next_index = 0;
        self.discarding = true;
        CodecError::FrameTooLong {
            limit: self.max_frame_length,
        }
    }

    /// Drops bytes up to and including the next `delimiter`. Returns whether
    /// it was found (and the codec is back to decoding).
    fn discard(&mut self, delimiter: u8, buf: &mut BytesMut) -> bool {
        match memchr::memchr(delimiter, buf) {
            Some(at) => {
                buf.advance(at + 1);
                self.discarding = false;
                true
            }
            None => {
                buf.clear();
                false
            }
        }
    }

    /// Cuts the frame ending at the delimiter found at `at`.
    fn take_frame(&self, buf: &mut BytesMut, at: usize) -> Frame {
        let mut frame = buf.split_to(at + 1);
        frame.truncate(self.strip_cr(&frame[..at]));
        Frame::from(frame.freeze())
    }

    /// The length of `content` once a line mode's trailing `\r` is removed.
    fn strip_cr(&self, content: &[u8]) -> usize {
        match (&self.delimiter, content.last()) {
            (Delimiter::Line, Some(b'\r')) => content.len() - 1,
            _ => content.len(),
        }
    }

    /// Cuts the frame ending at the delimiter found at `at` and, when
    /// cutting in batches, every other complete frame after it that fits
    /// within the limit with it, to be returned next.
    fn take_frames(&mut self, delimiter: u8, buf: &mut BytesMut, at: usize) -> Frame {
        if !self.batches {
            self.next_index = 0;
            return self.take_frame(buf, at);
        }
        // Together no longer than the limit, so that none of them can be
        // too long: only the first frame of a batch is ever refused.
        let window = buf.len().min(self.max_frame_length).max(at + 1);
        let Some(last) = memchr::memrchr(delimiter, &buf[at + 1..window]) else {
            self.next_index = window - (at + 1);
            return self.take_frame(buf, at);
        };
        let end = at + 1 + last + 1;
        // No delimiter between the last one and the window's end.
        self.next_index = window - end;
        self.batch = buf.split_to(end).freeze();
        self.next = 0;
        self.hand_out(at)
    }

    /// Whether a batch has frames not handed out yet.
    #[inline]
    fn batch_ready(&self) -> bool {
        self.next < self.batch.len()
    }

    /// The next frame of a batch.
    fn next_ready(&mut self) -> Frame {
        let delimiter = match self.delimiter {
            Delimiter::Byte(byte) => byte,
            _ => b'\n',
        };
        let at = find(delimiter, &self.batch[self.next..])
            .expect("every frame of a batch ends at a delimiter");
        self.hand_out(at)
    }

    /// Hands out the frame of the batch whose delimiter is `at` bytes on.
    fn hand_out(&mut self, at: usize) -> Frame {
        let start = self.next;
        let len = self.strip_cr(&self.batch[start..start + at]);
        let frame = self.batch.slice(start..start + len);
        self.next = start + at + 1;
        let address = frame.as_ptr() as usize;
        self.last = address..address + len;
        Frame::from(frame)
    }

    /// Whether `data` lies within the last frame handed out of the batch,
    /// which is still held: then it holds no delimiter, and is no longer
    /// than the limit.
    #[inline]
    fn handed_out(&self, data: &[u8]) -> bool {
        let address = data.as_ptr() as usize;
        self.last.start <= address && address + data.len() <= self.last.end
    }

    /// Lets go of a batch whose frames were all handed out, so that the
    /// read buffer is the only one to hold its memory again.
    fn end_batch(&mut self) {
        if !self.batch_ready() {
            self.batch = Bytes::new();
            self.next = 0;
            self.last = 0..0;
        }
    }

    /// Single-byte and line mode.
    fn decode_byte(
        &mut self,
        delimiter: u8,
        buf: &mut BytesMut,
    ) -> Result<Option<Frame>, CodecError> {
        if self.discarding && !self.discard(delimiter, buf) {
            return Ok(None);
        }
        // Search no further than the longest frame could reach: the limit,
        // plus a line mode's `\r`, plus the delimiter itself.
        let slack = if self.delimiter == Delimiter::Line {
            2
        } else {
            1
        };
        let search_end = buf.len().min(self.max_frame_length.saturating_add(slack));
        let found = find(delimiter, &buf[self.next_index..search_end])
            .map(|offset| self.next_index + offset);
        match found {
            Some(at) if self.within_limit(&buf[..at]) => {
                Ok(Some(self.take_frames(delimiter, buf, at)))
            }
            Some(at) => Err(self.overflow(buf, at)),
            None if !self.within_limit(&buf[..search_end]) => Err(self.overflow(buf, search_end)),
            None => {
                self.next_index = search_end;
                Ok(None)
            }
        }
    }

    /// A delimiter of several bytes. A delimiter may straddle two reads, so
    /// the last `len - 1` bytes searched are searched again with the next.
    fn decode_sequence(
        &mut self,
        finder: &memmem::Finder<'_>,
        buf: &mut BytesMut,
    ) -> Result<Option<Frame>, CodecError> {
        let len = finder.needle().len();
        if self.discarding {
            match finder.find(buf) {
                Some(at) => {
                    buf.advance(at + len);
                    self.discarding = false;
                }
                None => {
                    // Keep what may be the start of the delimiter.
                    let drop = buf.len().saturating_sub(len - 1);
                    buf.advance(drop);
                    return Ok(None);
                }
            }
        }
        let reach = self.max_frame_length.saturating_add(len);
        let search_end = buf.len().min(reach);
        let start = self.next_index.min(search_end);
        match finder.find(&buf[start..search_end]) {
            Some(offset) => {
                let at = start + offset;
                self.next_index = 0;
                let mut frame = buf.split_to(at + len);
                frame.truncate(at);
                Ok(Some(Frame::from(frame.freeze())))
            }
            // No delimiter ends within the limit: the frame is too long.
            // Bytes that cannot begin its delimiter go now.
            None if search_end == reach => Err(self.overflow(buf, search_end - (len - 1))),
            None => {
                self.next_index = search_end.saturating_sub(len - 1).max(start);
                Ok(None)
            }
        }
    }

    /// Checks that `data` can be sent as one frame: within the limit, and
    /// without the delimiter inside it (or, for a sequence, across its end).
    #[inline]
    pub(crate) fn check_frame(&self, data: &[u8]) -> Result<(), CodecError> {
        if data.len() > self.max_frame_length {
            return Err(self.too_long_to_send(data.len()));
        }
        let offset = match &self.delimiter {
            Delimiter::Line => find(b'\n', data),
            Delimiter::Byte(byte) => find(*byte, data),
            Delimiter::Sequence(_) => self.find_sequence_in(data),
            Delimiter::Eof => None,
        };
        match offset {
            Some(offset) => Err(CodecError::DelimiterInFrame { offset }),
            None => Ok(()),
        }
    }

    /// [`check_frame`](Self::check_frame) in byte and line mode.
    #[inline]
    fn check_byte_frame(&self, byte: u8, data: &[u8]) -> Result<(), CodecError> {
        if data.len() > self.max_frame_length {
            return Err(self.too_long_to_send(data.len()));
        }
        if let Some(offset) = find(byte, data) {
            return Err(CodecError::DelimiterInFrame { offset });
        }
        Ok(())
    }

    #[cold]
    fn too_long_to_send(&self, len: usize) -> CodecError {
        CodecError::FrameTooLongToSend {
            len,
            limit: self.max_frame_length,
        }
    }

    /// Where a sequence delimiter would be read in `data` followed by the
    /// delimiter, if not at its end: "xa" + delimiter "aa" reads back as
    /// "x", so the first delimiter on the wire must be the one appended.
    fn find_sequence_in(&self, data: &[u8]) -> Option<usize> {
        let finder = self.finder.as_deref()?;
        let sequence = finder.needle();
        finder.find(data).or_else(|| {
            let tail = data.len().saturating_sub(sequence.len() - 1);
            let mut window = data[tail..].to_vec();
            window.extend_from_slice(sequence);
            let first = finder.find(&window)?;
            (tail + first < data.len()).then_some(tail + first)
        })
    }

    /// Appends the delimiter.
    #[inline]
    pub(crate) fn put_delimiter(&self, dst: &mut BytesMut) {
        match &self.delimiter {
            Delimiter::Byte(byte) => dst.put_u8(*byte),
            Delimiter::Line => dst.put_u8(b'\n'),
            Delimiter::Sequence(sequence) => dst.put_slice(sequence),
            Delimiter::Eof => {}
        }
    }
}

/// Lets `codec`, if it is a [`DelimiterCodec`] in byte or line mode, cut
/// all the complete frames of a read at once and hand them out one by
/// one: one split of the read buffer and one cheaper split of that piece
/// per frame, instead of one split of the buffer per frame.
///
/// Only natter's connections do this: they own the codec and its buffer
/// for the connection's whole life. Anyone else may take a buffer back
/// from a codec (`Framed::into_parts`, to switch protocols), and expect
/// every byte not decoded yet to be in it, not in the codec.
/// Makes a [`DelimiterCodec`] strict about its end (see
/// [`DelimiterCodec::strict_end`]); any other codec is left as it is.
pub(crate) fn make_strict_at_end<C: Any>(codec: &mut C) {
    if let Some(codec) = (codec as &mut dyn Any).downcast_mut::<DelimiterCodec>() {
        codec.strict_end = true;
    }
}

pub(crate) fn cut_in_batches<C: Any>(codec: &mut C) {
    if let Some(codec) = (codec as &mut dyn Any).downcast_mut::<DelimiterCodec>() {
        codec.batches = true;
    }
}

/// Lets a codec that [`cut_in_batches`] go of its batch once every frame of
/// it was handed out: a connection does this before it gives its read
/// buffer back while it waits.
pub(crate) fn end_batch<C: Any>(codec: &mut C) {
    if let Some(codec) = (codec as &mut dyn Any).downcast_mut::<DelimiterCodec>() {
        codec.end_batch();
    }
}

/// How far the inlined search looks before handing over to
/// `memchr::memchr`: past a 64 B frame and its delimiter. (256 decoded and
/// encoded 1 KiB frames about 3 % slower, 64 B frames the same.)
const SHORT_SEARCH: usize = 128;

/// The first `delimiter` in `haystack`.
///
/// `memchr::memchr` picks its AVX2 routine at run time, through a function
/// pointer and several calls that cannot be inlined; for a short frame that
/// dispatch costs more than the search. So the first bytes are searched with
/// SSE2, which every x86-64 processor has and which therefore inlines here,
/// and only a longer haystack goes on to `memchr::memchr`.
#[inline]
pub(crate) fn find(delimiter: u8, haystack: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    if let Some(finder) = memchr::arch::x86_64::sse2::memchr::One::new(delimiter) {
        let head = haystack.len().min(SHORT_SEARCH);
        if let Some(at) = finder.find(&haystack[..head]) {
            return Some(at);
        }
        if head == haystack.len() {
            return None;
        }
        return memchr::memchr(delimiter, &haystack[head..]).map(|at| head + at);
    }
    memchr::memchr(delimiter, haystack)
}

impl Default for DelimiterCodec {
    /// Line mode with the default 64 KiB limit.
    fn default() -> Self {
        Self::lines()
    }
}

impl Decoder for DelimiterCodec {
    type Item = Frame;
    type Error = CodecError;

    #[inline]
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if self.batch_ready() {
            return Ok(Some(self.next_ready()));
        }
        match &self.delimiter {
            Delimiter::Line => self.decode_byte(b'\n', buf),
            Delimiter::Byte(byte) => {
                let byte = *byte;
                self.decode_byte(byte, buf)
            }
            Delimiter::Sequence(_) => {
                let finder = self.finder.clone().expect("a sequence has a finder");
                self.decode_sequence(&finder, buf)
            }
            Delimiter::Eof => {
                // Nothing is a frame until the stream ends, but the limit is
                // enforced as bytes arrive.
                if self.discarding {
                    buf.clear();
                } else if buf.len() > self.max_frame_length {
                    let searched = buf.len();
                    return Err(self.overflow(buf, searched));
                }
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        self.next_index = 0;
        if self.discarding {
            // The oversized frame ends with the stream; it was reported.
            self.discarding = false;
            buf.clear();
            return Ok(None);
        }
        if buf.is_empty() {
            return Ok(None);
        }
        if self.strict_end && self.delimiter != Delimiter::Eof {
            let len = buf.len();
            buf.clear();
            return Err(CodecError::IncompleteFrame { len });
        }
        // The bytes left without a delimiter are the last frame (in EOF
        // mode, the only one). `decode` already checked the limit.
        let mut frame = buf.split();
        frame.truncate(self.strip_cr(&frame));
        Ok(Some(Frame::from(frame.freeze())))
    }
}

impl<T: AsRef<[u8]>> Encoder<T> for DelimiterCodec {
    type Error = CodecError;

    #[inline]
    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), CodecError> {
        let data = item.as_ref();
        // The frame's bytes, then the delimiter: nothing else, even for a
        // line ending in `\r` (`a\r\r\n` is answered `a\r\n`).
        let byte = match &self.delimiter {
            Delimiter::Line => b'\n',
            Delimiter::Byte(byte) => *byte,
            Delimiter::Sequence(_) | Delimiter::Eof => {
                self.check_frame(data)?;
                dst.extend_from_slice(data);
                self.put_delimiter(dst);
                return Ok(());
            }
        };
        // A frame this codec just decoded, or part of one, is known to
        // fit.
        if !self.handed_out(data) {
            self.check_byte_frame(byte, data)?;
        }
        dst.reserve(data.len() + 1);
        dst.put_slice(data);
        dst.put_u8(byte);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
