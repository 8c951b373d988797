//! [`IntoReply`]: what a service's response means on the wire.

use bytes::{Bytes, BytesMut};

use crate::Frame;

/// A service response that natter writes back on the connection: zero or
/// one frame per request, in request order.
///
/// `()` and `None` send nothing; a [`Frame`], bytes or text send one frame
/// (the codec appends the delimiter). Send more than one frame per request
/// through [`Conn::send`](crate::Conn::send).
///
/// ```
/// use natter::{Frame, IntoReply};
/// assert_eq!(().into_reply(), None);
/// assert_eq!("pong".into_reply(), Some(Frame::from("pong")));
/// assert_eq!(Some(String::from("x")).into_reply(), Some(Frame::from("x")));
/// ```
pub trait IntoReply {
    /// The frame to send, if any.
    fn into_reply(self) -> Option<Frame>;
}

impl IntoReply for () {
    fn into_reply(self) -> Option<Frame> {
        None
    }
}

impl IntoReply for Frame {
    fn into_reply(self) -> Option<Frame> {
        Some(self)
    }
}

impl<T: IntoReply> IntoReply for Option<T> {
    fn into_reply(self) -> Option<Frame> {
        self.and_then(IntoReply::into_reply)
    }
}

macro_rules! into_frame_reply {
    ($($ty:ty),*) => {$(
        impl IntoReply for $ty {
            fn into_reply(self) -> Option<Frame> {
                Some(Frame::from(self))
            }
        }
    )*};
}

into_frame_reply!(
    Bytes,
    BytesMut,
    Vec<u8>,
    String,
    &'static str,
    &'static [u8]
);
