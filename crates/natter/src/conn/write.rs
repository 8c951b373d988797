//! The write half of a connection: one buffer, written out at once.
//!
//! Replies and frames sent through [`Conn`](super::Conn) are encoded into
//! one buffer, and the buffer is written when a batch of frames is done:
//! one system call for a whole batch of small replies, which is the
//! biggest throughput lever in pipelined protocols.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWrite;
use tokio_util::codec::Encoder;

use super::buffers::{self, BUFFER_SIZE};
use crate::{BoxError, Error, Frame};

#[derive(Default)]
pub(super) struct FrameWriter {
    buffer: BytesMut,
    /// Bytes written since [`take_written`](Self::take_written).
    written: u64,
    /// The stream took every byte but its flush has not finished: a TLS
    /// session, say, still holds records to send. It must be flushed again
    /// even with nothing buffered here.
    unflushed: bool,
}

impl FrameWriter {
    /// Bytes written since the last call.
    #[inline]
    pub(super) fn take_written(&mut self) -> u64 {
        std::mem::take(&mut self.written)
    }

    /// Whether there is anything to write or flush.
    #[inline]
    pub(super) fn has_work(&self) -> bool {
        !self.buffer.is_empty() || self.unflushed
    }

    /// Bytes waiting to be written.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.buffer.len()
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// The buffer, taken from the pool first if it was given back.
    #[inline]
    fn buffer(&mut self) -> &mut BytesMut {
        if self.buffer.capacity() == 0 {
            buffers::take(&mut self.buffer, BUFFER_SIZE);
        }
        &mut self.buffer
    }

    /// Appends bytes already encoded (sent through `Conn`).
    #[inline]
    pub(super) fn put(&mut self, bytes: &[u8]) {
        self.buffer().extend_from_slice(bytes);
    }

    /// Encodes `frame`. On failure nothing of it stays in the buffer.
    #[inline(always)]
    pub(super) fn encode<C>(&mut self, encoder: &mut C, frame: Frame) -> Result<(), Error>
    where
        C: Encoder<Frame>,
        C::Error: Into<BoxError>,
    {
        let buffer = self.buffer();
        let start = buffer.len();
        match encoder.encode(frame, buffer) {
            Ok(()) => Ok(()),
            Err(error) => Err(self.unencodable(start, error.into())),
        }
    }

    /// Takes back what a failed encoder wrote.
    #[cold]
    fn unencodable(&mut self, start: usize, error: BoxError) -> Error {
        self.buffer.truncate(start);
        Error::from_encode(error)
    }

    /// Writes everything buffered, then flushes the stream.
    pub(super) fn poll_flush<T: AsyncWrite + Unpin>(
        &mut self,
        io: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.buffer.is_empty() {
            let written = ready!(Pin::new(&mut *io).poll_write(cx, &self.buffer))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if written == self.buffer.len() {
                // All of it: the buffer starts over at its beginning, so
                // it goes back to the pool with no need to be reclaimed.
                self.buffer.clear();
            } else {
                self.buffer.advance(written);
            }
            self.written += written as u64;
        }
        let flushed = Pin::new(io).poll_flush(cx);
        self.unflushed = flushed.is_pending();
        flushed
    }

    /// Gives the buffer back while it is empty.
    pub(super) fn release(&mut self) {
        if self.buffer.is_empty() && self.buffer.capacity() > 0 {
            buffers::give_back(&mut self.buffer);
        }
    }
}
