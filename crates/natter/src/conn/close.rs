//! Closing a connection so that the peer gets our last bytes.
//!
//! Closing a socket that still holds unread bytes makes the kernel send a
//! reset, and a reset can destroy replies the peer has not read yet. So a
//! connection that finished sends FIN, then reads and discards whatever
//! the peer still sends until it closes too, for at most a short linger.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Sends FIN, then reads and discards until the peer closes or `linger`
/// passes.
pub(super) async fn close_politely<T>(io: &mut T, linger: Duration)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    if io.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(linger, async {
        let mut scratch = [0u8; 1024];
        while let Ok(1..) = io.read(&mut scratch).await {}
    })
    .await;
}
