//! Framing: [`DelimiterCodec`] cuts a byte stream into [`Frame`]s and
//! [`JsonCodec`] turns those frames into typed values.
//!
//! The codecs know nothing of sockets or services: they are plain
//! tokio-util [`Decoder`]/[`Encoder`]s, usable on any
//! [`Framed`](tokio_util::codec::Framed). The server and client use them the
//! same way.
//!
//! # What a decode error does to the stream
//!
//! A frame longer than the limit yields [`Error::FrameTooLong`] as soon as
//! the limit is passed. The codec then discards that frame's bytes as they
//! arrive, up to and including its delimiter, and decodes normally after
//! it; the discarded frame is reported once, never silently. Note that
//! `Framed` itself ends the stream after any decode error (it yields the
//! error, then `None`): natter's connection driver therefore treats an
//! oversized frame as the end of that connection, after handling every frame
//! decoded before it.

mod json;

pub use json::JsonCodec;

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::{Error, Frame};

/// The longest frame accepted by default: 64 KiB.
pub const DEFAULT_MAX_FRAME_LENGTH: usize = 64 * 1024;

/// Where one frame ends and the next begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delimiter {
    /// A frame ends at this byte; the byte is not part of the frame.
    Byte(u8),
    /// A frame ends at `\n`; one `\r` right before it is removed too
    /// (`a\r\n` is `a`, `a\r\r\n` is `a\r`). A `\r` anywhere else is data.
    Line,
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

    /// The byte that ends a frame, or `None` in EOF mode.
    pub const fn byte(self) -> Option<u8> {
        match self {
            Delimiter::Byte(byte) => Some(byte),
            Delimiter::Line => Some(b'\n'),
            Delimiter::Eof => None,
        }
    }
}

/// A tokio-util codec for frames that end at a delimiter byte.
///
/// * Decodes into [`Frame`]s, delimiter excluded. Empty frames are frames.
///   At end of input, trailing bytes without a delimiter are the last frame.
/// * Encodes anything that is `AsRef<[u8]>` by appending the delimiter; a
///   frame that contains the delimiter is refused with
///   [`Error::DelimiterInFrame`] rather than silently split in two. Exactly
///   the frame's bytes and the delimiter are written: in line mode a frame
///   that ends in `\r` reads back without that `\r` (line mode's one
///   ambiguity; use [`byte`](Self::byte)`(b'\n')` to keep every `\r`).
/// * A frame longer than [`max_frame_length`](Self::max_frame_length)
///   (64 KiB by default; the delimiter and a stripped `\r` do not count)
///   is an [`Error::FrameTooLong`] the moment the limit is passed, and its
///   bytes are dropped rather than buffered.
///
/// Delimiters are found with `memchr`, and bytes already searched are never
/// searched again while a frame arrives in pieces.
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
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelimiterCodec {
    delimiter: Delimiter,
    max_frame_length: usize,
    /// Bytes at the front of the buffer already searched for the delimiter.
    next_index: usize,
    /// Dropping the rest of an oversized frame, up to its delimiter.
    discarding: bool,
}

impl DelimiterCodec {
    /// A codec for `delimiter`, with the default 64 KiB frame limit.
    pub const fn new(delimiter: Delimiter) -> Self {
        DelimiterCodec {
            delimiter,
            max_frame_length: DEFAULT_MAX_FRAME_LENGTH,
            next_index: 0,
            discarding: false,
        }
    }

    /// Line mode: frames end at `\n`, and a `\r` before it is removed.
    pub const fn lines() -> Self {
        Self::new(Delimiter::Line)
    }

    /// Frames end at `byte`, which is removed; nothing else is.
    ///
    /// `DelimiterCodec::byte(b'\n')` is a newline codec *without* `\r`
    /// stripping; use [`lines`](Self::lines) for text protocols.
    pub const fn byte(byte: u8) -> Self {
        Self::new(Delimiter::Byte(byte))
    }

    /// EOF mode: the whole input, up to end of stream, is one frame.
    pub const fn eof() -> Self {
        Self::new(Delimiter::Eof)
    }

    /// Sets the longest frame accepted, in bytes, delimiter and stripped
    /// `\r` excluded. A frame of exactly this length is accepted. In EOF
    /// mode the limit covers the whole stream.
    ///
    /// Pass `usize::MAX` to lift the limit; a peer can then make the reader
    /// buffer without bound, so do that only for trusted peers.
    pub const fn max_frame_length(mut self, max_frame_length: usize) -> Self {
        self.max_frame_length = max_frame_length;
        self
    }

    /// The delimiter.
    pub const fn delimiter(&self) -> Delimiter {
        self.delimiter
    }

    /// The longest frame accepted, in bytes.
    pub const fn max_length(&self) -> usize {
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
    /// bytes at the front of `buf` are known to hold no delimiter.
    fn overflow(&mut self, buf: &mut BytesMut, searched: usize) -> Error {
        buf.advance(searched);
        self.next_index = 0;
        self.discarding = true;
        Error::FrameTooLong {
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
        match (self.delimiter, content.last()) {
            (Delimiter::Line, Some(b'\r')) => content.len() - 1,
            _ => content.len(),
        }
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
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
        let Some(delimiter) = self.delimiter.byte() else {
            // EOF mode: nothing is a frame until the stream ends, but the
            // limit is enforced as bytes arrive.
            if self.discarding {
                buf.clear();
            } else if buf.len() > self.max_frame_length {
                let searched = buf.len();
                return Err(self.overflow(buf, searched));
            }
            return Ok(None);
        };
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
                self.next_index = 0;
                Ok(Some(self.take_frame(buf, at)))
            }
            Some(at) => Err(self.overflow(buf, at)),
            None if !self.within_limit(&buf[..search_end]) => Err(self.overflow(buf, search_end)),
            None => {
                self.next_index = search_end;
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
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
        // The bytes left without a delimiter are the last frame (in EOF
        // mode, the only one). `decode` already checked the limit.
        let mut frame = buf.split();
        frame.truncate(self.strip_cr(&frame));
        Ok(Some(Frame::from(frame.freeze())))
    }
}

impl<T: AsRef<[u8]>> Encoder<T> for DelimiterCodec {
    type Error = Error;

    #[inline]
    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), Error> {
        let data = item.as_ref();
        match self.delimiter.byte() {
            Some(delimiter) => {
                if let Some(offset) = find(delimiter, data) {
                    return Err(Error::DelimiterInFrame { delimiter, offset });
                }
                // The frame's bytes, then the delimiter: nothing else, even
                // for a line ending in `\r` (the wire contract of the echo
                // example: `a\r\r\n` is answered `a\r\n`).
                dst.reserve(data.len() + 1);
                dst.put_slice(data);
                dst.put_u8(delimiter);
            }
            None => dst.extend_from_slice(data),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
