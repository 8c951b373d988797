//! Any codec on a natter connection: [`FrameCodec`], and [`Frames`] for
//! codecs whose frames are other bytes.

use bytes::Bytes;
use tokio_util::codec::{Decoder, Encoder};

use crate::{BoxError, Frame};

/// A codec natter's connections can run: it decodes [`Frame`]s, encodes
/// them, and can be cloned and shared between tasks (a connection keeps one
/// to encode the frames sent through [`Conn::send`](crate::Conn::send)).
///
/// Every such tokio-util codec is one; there is nothing to implement.
/// [`DelimiterCodec`](super::DelimiterCodec) is the default. For a codec
/// whose frames are `BytesMut` or `Bytes`, wrap it in [`Frames`].
///
/// Its errors reach [`Events`](crate::Events) and the
/// [`on_error`](crate::ServerBuilder::on_error) hook as
/// [`Error`](crate::Error)s: [`CodecError`](super::CodecError)s as the
/// matching variant, others as [`Error::Decode`](crate::Error::Decode) and
/// [`Error::Encode`](crate::Error::Encode). A decode error other than
/// [`FrameTooLong`](super::CodecError::FrameTooLong) always closes the
/// connection: only the codec knows where the next frame starts, and
/// `FrameTooLong` is how it says it does.
pub trait FrameCodec:
    Decoder<Item = Frame, Error: Into<BoxError>>
    + Encoder<Frame, Error: Into<BoxError>>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<C> FrameCodec for C where
    C: Decoder<Item = Frame, Error: Into<BoxError>>
        + Encoder<Frame, Error: Into<BoxError>>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Adapts a codec whose frames are `BytesMut` (or anything that converts
/// into a [`Frame`]) and that encodes `Bytes`, such as tokio-util's
/// `LengthDelimitedCodec`, into a [`FrameCodec`].
///
/// ```
/// use natter::codec::Frames;
/// use tokio_util::codec::LengthDelimitedCodec;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), natter::Error> {
/// let codec = Frames(LengthDelimitedCodec::builder().max_frame_length(4096).new_codec());
/// let server = natter::Server::builder().codec(codec).bind("127.0.0.1:0").await?;
/// # drop(server); Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Frames<C>(pub C);

impl<C> Decoder for Frames<C>
where
    C: Decoder,
    C::Item: Into<Frame>,
{
    type Item = Frame;
    type Error = C::Error;

    #[inline]
    fn decode(&mut self, buf: &mut bytes::BytesMut) -> Result<Option<Frame>, C::Error> {
        Ok(self.0.decode(buf)?.map(Into::into))
    }

    fn decode_eof(&mut self, buf: &mut bytes::BytesMut) -> Result<Option<Frame>, C::Error> {
        Ok(self.0.decode_eof(buf)?.map(Into::into))
    }
}

impl<C: Encoder<Bytes>> Encoder<Frame> for Frames<C> {
    type Error = C::Error;

    #[inline]
    fn encode(&mut self, frame: Frame, dst: &mut bytes::BytesMut) -> Result<(), C::Error> {
        self.0.encode(frame.into_bytes(), dst)
    }
}
