//! Closing a connection so that the peer gets our last bytes.
//!
//! Closing a socket that still holds unread bytes makes the kernel send a
//! reset, and a reset can destroy replies the peer has not read yet. So a
//! connection that finished sends FIN, then reads and discards whatever
//! the peer still sends until it closes too, for at most a short linger
//! (the driver's timer bounds it).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Sends FIN (once it can; `fin_sent` remembers it across polls), then
/// reads and discards until the peer closes or the stream fails. The
/// caller bounds it in time.
///
/// The shutdown is asked for once: a stream may refuse a second one (a
/// simulated one does; Linux takes it), and that must not end the linger.
pub(super) fn poll_close_politely<T>(
    io: &mut T,
    cx: &mut Context<'_>,
    fin_sent: &mut bool,
) -> Poll<()>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    if !*fin_sent {
        if ready!(Pin::new(&mut *io).poll_shutdown(cx)).is_err() {
            return Poll::Ready(());
        }
        *fin_sent = true;
    }
    let mut scratch = [0u8; 1024];
    loop {
        let mut buf = ReadBuf::new(&mut scratch);
        match ready!(Pin::new(&mut *io).poll_read(cx, &mut buf)) {
            Ok(()) if !buf.filled().is_empty() => continue,
            _ => return Poll::Ready(()),
        }
    }
}
