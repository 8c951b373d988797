//! [`JsonCodec`]: typed values as JSON, one per delimited frame.

use std::fmt;
use std::marker::PhantomData;

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::{Decoder, Encoder};

use super::{CodecError, DelimiterCodec};

/// A codec that sends any `Serialize` value as compact JSON plus the
/// delimiter, and decodes each frame into a `T`.
///
/// Framing is a [`DelimiterCodec`] underneath (line mode by default), so
/// limits and end-of-stream rules are the same. A frame that is not a valid
/// `T` is a [`CodecError::Json`] quoting the start of the frame; with `Framed`
/// that ends the stream like any decode error, so a protocol that must
/// survive bad frames decodes [`Frame`](crate::Frame)s and calls
/// [`Frame::json`](crate::Frame::json) itself.
///
/// Any other tokio-util `Encoder` can take this one's place: natter's
/// connections accept frames from whatever encoder you use.
///
/// ```
/// use bytes::BytesMut;
/// use natter::JsonCodec;
/// use serde::{Deserialize, Serialize};
/// use tokio_util::codec::{Decoder, Encoder};
///
/// #[derive(Serialize, Deserialize, Debug, PartialEq)]
/// struct Ping { seq: u64 }
///
/// let mut codec = JsonCodec::<Ping>::new();
/// let mut buf = BytesMut::new();
/// codec.encode(Ping { seq: 1 }, &mut buf).unwrap();
/// assert_eq!(&buf[..], b"{\"seq\":1}\n");
/// assert_eq!(codec.decode(&mut buf).unwrap(), Some(Ping { seq: 1 }));
/// ```
pub struct JsonCodec<T> {
    framing: DelimiterCodec,
    _item: PhantomData<fn() -> T>,
}

impl<T> JsonCodec<T> {
    /// JSON values one per line, with the default frame limit.
    pub fn new() -> Self {
        Self::with_framing(DelimiterCodec::lines())
    }

    /// JSON values framed by `framing`. Its delimiter must not be a byte
    /// compact JSON can contain (a newline, a NUL or any other control byte
    /// is safe), or encoding fails with [`CodecError::DelimiterInFrame`].
    pub fn with_framing(framing: DelimiterCodec) -> Self {
        JsonCodec {
            framing,
            _item: PhantomData,
        }
    }

    /// The framing codec underneath.
    pub fn framing(&self) -> &DelimiterCodec {
        &self.framing
    }
}

impl<T> Default for JsonCodec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for JsonCodec<T> {
    fn clone(&self) -> Self {
        Self::with_framing(self.framing.clone())
    }
}

impl<T> fmt::Debug for JsonCodec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonCodec")
            .field("framing", &self.framing)
            .field("item", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T: DeserializeOwned> Decoder for JsonCodec<T> {
    type Item = T;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<T>, CodecError> {
        self.framing
            .decode(buf)?
            .map(|frame| {
                serde_json::from_slice(&frame).map_err(|source| CodecError::json(source, &frame))
            })
            .transpose()
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<T>, CodecError> {
        self.framing
            .decode_eof(buf)?
            .map(|frame| {
                serde_json::from_slice(&frame).map_err(|source| CodecError::json(source, &frame))
            })
            .transpose()
    }
}

impl<T, U: Serialize> Encoder<U> for JsonCodec<T> {
    type Error = CodecError;

    fn encode(&mut self, item: U, dst: &mut BytesMut) -> Result<(), CodecError> {
        // Serialize straight into the write buffer, then check the framing
        // rule on what was written; on failure, take it back out.
        let start = dst.len();
        if let Err(source) = serde_json::to_writer(dst.writer(), &item) {
            dst.truncate(start);
            return Err(CodecError::json(source, &[]));
        }
        if let Err(error) = self.framing.check_frame(&dst[start..]) {
            dst.truncate(start);
            return Err(error);
        }
        self.framing.put_delimiter(dst);
        Ok(())
    }
}
