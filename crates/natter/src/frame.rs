//! [`Frame`]: the bytes of one message.
//!
//! A frame is what the codec cuts out of the byte stream, delimiter excluded,
//! and what a [`Service`](tower::Service) is called with. It wraps
//! [`Bytes`], so cloning and splitting it never copies the payload.

use std::borrow::Borrow;
use std::fmt;
use std::ops::{Deref, RangeBounds};

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// The bytes of one message, delimiter excluded.
///
/// Cheap to clone and to split: every copy shares one reference-counted
/// buffer. It dereferences to `[u8]`, so slice methods work on it directly.
///
/// ```
/// use natter::Frame;
///
/// let mut frame = Frame::from("hello world");
/// let hello = frame.split_to(5);
/// assert_eq!(hello, "hello");
/// assert_eq!(frame, " world");
/// assert_eq!(frame.len(), 6);
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frame(Bytes);

impl Frame {
    /// An empty frame. Empty frames are frames: `"\n\n"` is two of them.
    pub const fn new() -> Self {
        Frame(Bytes::new())
    }

    /// A frame over static bytes, without allocating.
    pub const fn from_static(bytes: &'static [u8]) -> Self {
        Frame(Bytes::from_static(bytes))
    }

    /// A frame holding a copy of `data`.
    pub fn copy_from_slice(data: &[u8]) -> Self {
        Frame(Bytes::copy_from_slice(data))
    }

    /// Serializes `value` as compact JSON into a new frame.
    ///
    /// Compact JSON never contains a raw newline, so the result is always a
    /// valid line-mode frame.
    ///
    /// ```
    /// let frame = natter::Frame::from_json(&serde_json::json!({"ping": 1})).unwrap();
    /// assert_eq!(frame, r#"{"ping":1}"#);
    /// ```
    pub fn from_json<T: Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        serde_json::to_vec(value)
            .map(Frame::from)
            .map_err(|source| Error::json(source, &[]))
    }

    /// Parses the frame as JSON into a `T`.
    ///
    /// The error shows the start of the frame, so a bad peer is easy to
    /// recognise in a log.
    ///
    /// ```
    /// #[derive(serde::Deserialize)]
    /// struct Ping { seq: u64 }
    ///
    /// let ping: Ping = natter::Frame::from(r#"{"seq":7}"#).json().unwrap();
    /// assert_eq!(ping.seq, 7);
    /// assert!(natter::Frame::from("garbage").json::<Ping>().is_err());
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.0).map_err(|source| Error::json(source, &self.0))
    }

    /// Splits the frame in two at `at`: `self` keeps `[at, len)`, the result
    /// holds `[0, at)`. Does not copy.
    ///
    /// # Panics
    /// If `at > self.len()`, like [`Bytes::split_to`].
    pub fn split_to(&mut self, at: usize) -> Frame {
        Frame(self.0.split_to(at))
    }

    /// Splits the frame in two at `at`: `self` keeps `[0, at)`, the result
    /// holds `[at, len)`. Does not copy.
    ///
    /// # Panics
    /// If `at > self.len()`, like [`Bytes::split_off`].
    pub fn split_off(&mut self, at: usize) -> Frame {
        Frame(self.0.split_off(at))
    }

    /// A sub-frame of `range`, sharing the buffer. Does not copy.
    ///
    /// # Panics
    /// If the range is out of bounds, like [`Bytes::slice`].
    pub fn slice(&self, range: impl RangeBounds<usize>) -> Frame {
        Frame(self.0.slice(range))
    }

    /// The frame as UTF-8 text.
    pub fn to_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.0)
    }

    /// The underlying [`Bytes`].
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Unwraps the frame into its [`Bytes`], without copying.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Bytes` prints as an escaped byte string: b"ping\r".
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Deref for Frame {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Borrow<[u8]> for Frame {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl From<Bytes> for Frame {
    fn from(bytes: Bytes) -> Self {
        Frame(bytes)
    }
}

impl From<BytesMut> for Frame {
    fn from(bytes: BytesMut) -> Self {
        Frame(bytes.freeze())
    }
}

impl From<Vec<u8>> for Frame {
    fn from(bytes: Vec<u8>) -> Self {
        Frame(bytes.into())
    }
}

impl From<String> for Frame {
    fn from(text: String) -> Self {
        Frame(text.into())
    }
}

impl From<&'static str> for Frame {
    fn from(text: &'static str) -> Self {
        Frame(Bytes::from_static(text.as_bytes()))
    }
}

impl From<&'static [u8]> for Frame {
    fn from(bytes: &'static [u8]) -> Self {
        Frame(Bytes::from_static(bytes))
    }
}

impl<const N: usize> From<&'static [u8; N]> for Frame {
    fn from(bytes: &'static [u8; N]) -> Self {
        Frame(Bytes::from_static(bytes))
    }
}

impl From<Frame> for Bytes {
    fn from(frame: Frame) -> Self {
        frame.0
    }
}

impl PartialEq<[u8]> for Frame {
    fn eq(&self, other: &[u8]) -> bool {
        self.0 == other
    }
}

impl PartialEq<&[u8]> for Frame {
    fn eq(&self, other: &&[u8]) -> bool {
        self.0 == *other
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Frame {
    fn eq(&self, other: &&[u8; N]) -> bool {
        self.0 == other[..]
    }
}

impl PartialEq<str> for Frame {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Frame {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<String> for Frame {
    fn eq(&self, other: &String) -> bool {
        self.0 == other.as_bytes()
    }
}
