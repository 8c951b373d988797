//! The read half of a connection: bytes from the stream, frames from the
//! codec.
//!
//! natter reads and decodes itself rather than through `Framed`, for two
//! of `Framed`'s habits: after a decode error it ends the stream, and it
//! does not decode the bytes it already holds until more arrive. Here a
//! codec that can go on after an error (an over-long frame, which the codec
//! skips) goes on, at once, with the frames already buffered.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::AsyncRead;
use tokio_util::codec::Decoder;

use super::buffers::{self, BUFFER_SIZE};
use crate::{BoxError, Error, Frame};

/// The largest read buffer a connection takes up front, whatever its last
/// one grew to: the default frame limit and then some.
const MAX_READ_BUFFER: usize = 128 * 1024;

/// Why no frame came.
#[derive(Debug)]
pub(super) enum ReadError {
    /// The codec refused the bytes. `resumable`: it skipped the bad frame
    /// and the next one can be read.
    Decode { error: Error, resumable: bool },
    /// The stream failed.
    Io(io::Error),
}

pub(super) struct FrameReader<C> {
    codec: C,
    buffer: BytesMut,
    /// The size of buffer to take: what the last one grew to.
    capacity: usize,
    /// The buffer may hold a frame the codec has not seen yet.
    decodable: bool,
    /// The peer half-closed: what is buffered is decoded as the stream's
    /// end, then the frames end.
    eof: bool,
    /// The last decode error took no byte from the buffer: another one in
    /// a row would mean the codec cannot get past it.
    stuck: bool,
    /// Bytes read since [`take_read`](Self::take_read).
    read: u64,
}

impl<C> FrameReader<C>
where
    C: Decoder<Item = Frame> + 'static,
    C::Error: Into<BoxError>,
{
    pub(super) fn new(mut codec: C) -> Self {
        crate::codec::cut_in_batches(&mut codec);
        FrameReader {
            codec,
            buffer: BytesMut::new(),
            capacity: BUFFER_SIZE,
            decodable: false,
            eof: false,
            stuck: false,
            read: 0,
        }
    }

    /// The codec, to encode with too: a `DelimiterCodec` knows the frames
    /// it just decoded, and does not search an echo of one for its
    /// delimiter.
    #[inline]
    pub(super) fn codec(&mut self) -> &mut C {
        &mut self.codec
    }

    /// Bytes read since the last call.
    #[inline]
    pub(super) fn take_read(&mut self) -> u64 {
        std::mem::take(&mut self.read)
    }

    /// The next frame: decoded from what is buffered if it can be, else
    /// after reading more. `Ready(None)` once the peer half-closed and
    /// every frame before that was returned.
    #[inline(always)]
    pub(super) fn poll_next<T: AsyncRead + Unpin>(
        &mut self,
        io: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame, ReadError>>> {
        loop {
            if self.decodable {
                let before = self.buffer.len();
                let decoded = if self.eof {
                    self.codec.decode_eof(&mut self.buffer)
                } else {
                    self.codec.decode(&mut self.buffer)
                };
                match decoded {
                    Ok(Some(frame)) => {
                        self.stuck = false;
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    Ok(None) => self.decodable = false,
                    Err(error) => {
                        // The buffer stays decodable: the frames after a
                        // skipped one may be there already.
                        let took_nothing = self.buffer.len() == before;
                        let error = Error::from_decode(error.into());
                        let resumable = matches!(error, Error::FrameTooLong { .. })
                            && !(took_nothing && self.stuck);
                        self.stuck = took_nothing;
                        return Poll::Ready(Some(Err(ReadError::Decode { error, resumable })));
                    }
                }
            }
            if self.eof {
                return Poll::Ready(None);
            }
            if self.buffer.capacity() == 0 {
                buffers::take(&mut self.buffer, self.capacity);
            } else if self.buffer.len() == self.buffer.capacity() {
                self.buffer.reserve(BUFFER_SIZE);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, &mut self.buffer) {
                Poll::Ready(Ok(0)) => self.eof = true,
                Poll::Ready(Ok(read)) => self.read += read as u64,
                Poll::Ready(Err(error)) => return Poll::Ready(Some(Err(ReadError::Io(error)))),
                Poll::Pending => return Poll::Pending,
            }
            self.decodable = true;
        }
    }

    /// Gives the buffer back while it is empty (a frame a handler still
    /// holds keeps only its own bytes alive). A connection whose frames
    /// made its buffer grow takes one of that size next time rather than
    /// growing it again.
    pub(super) fn release(&mut self) {
        crate::codec::end_batch(&mut self.codec);
        if self.buffer.is_empty() && self.buffer.capacity() > 0 {
            match buffers::give_back(&mut self.buffer) {
                0 => {}
                capacity => self.capacity = capacity.min(MAX_READ_BUFFER),
            }
        }
    }
}
