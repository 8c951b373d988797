//! Unix domain sockets, server and client.
//!
//! A socket file outlives a server that crashed. [`UnixListener::bind`]
//! therefore takes over a socket file that nothing listens on, refuses one
//! that a live server holds or a path that is not a socket (naming the
//! path), and removes its own file when it is dropped, which a server does
//! as its shutdown begins.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixStream;

use super::{Addr, Dial, Dialled, Io, Listener};
use crate::Error;

impl Io for UnixStream {
    fn transport(&self) -> &'static str {
        "unix"
    }

    fn has_unread_input(&self) -> bool {
        super::tcp::peek(self)
    }
}

/// A Unix socket listener that cleans up after itself.
#[derive(Debug)]
pub struct UnixListener {
    inner: tokio::net::UnixListener,
    path: PathBuf,
    local: Addr,
    /// The socket file we made (device, inode): removed on drop only if
    /// the path still names it, never a newer server's file.
    file: Option<(u64, u64)>,
}

impl UnixListener {
    /// Listens at `path`.
    ///
    /// A socket file that nothing listens on (left by a server that
    /// crashed) is replaced. Fails with [`Error::Bind`] naming the path if a
    /// server is listening there, if the path exists and is not a socket,
    /// or if the socket cannot be made (no such directory, no permission).
    pub fn bind(path: impl AsRef<Path>) -> Result<UnixListener, Error> {
        let path = path.as_ref();
        let addr = Addr::unix(path);
        let fail = |source: io::Error| Error::bind(&addr, source);
        let inner = match tokio::net::UnixListener::bind(path) {
            Ok(inner) => inner,
            Err(error) if error.kind() == io::ErrorKind::AddrInUse => {
                take_over(path).map_err(fail)?;
                tokio::net::UnixListener::bind(path).map_err(fail)?
            }
            Err(error) => return Err(fail(error)),
        };
        let file = std::fs::symlink_metadata(path)
            .ok()
            .map(|meta| (meta.dev(), meta.ino()));
        Ok(UnixListener {
            inner,
            path: path.to_owned(),
            local: addr,
            file,
        })
    }

    /// The socket file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes the socket file at `path` if nothing listens on it.
fn take_over(path: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "a server is listening on this socket",
        )),
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "taking over a stale socket file");
            std::fs::remove_file(path)
        }
        Err(error) => Err(error),
    }
}

impl Drop for UnixListener {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| Some((meta.dev(), meta.ino())) == self.file);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Listener for UnixListener {
    type Io = UnixStream;

    async fn accept(&mut self) -> io::Result<(UnixStream, Addr)> {
        let (stream, peer) = self.inner.accept().await?;
        Ok((stream, Addr::from_unix(&peer)))
    }

    fn local_addr(&self) -> io::Result<Addr> {
        Ok(self.local.clone())
    }
}

impl Listener for tokio::net::UnixListener {
    type Io = UnixStream;

    async fn accept(&mut self) -> io::Result<(UnixStream, Addr)> {
        let (stream, peer) = tokio::net::UnixListener::accept(self).await?;
        Ok((stream, Addr::from_unix(&peer)))
    }

    fn local_addr(&self) -> io::Result<Addr> {
        tokio::net::UnixListener::local_addr(self).map(|addr| Addr::from_unix(&addr))
    }
}

/// Dials a Unix socket at a path.
#[derive(Debug, Clone)]
pub struct UnixDialer {
    path: PathBuf,
}

impl UnixDialer {
    /// Dials the socket at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        UnixDialer { path: path.into() }
    }
}

impl Dial for UnixDialer {
    type Io = UnixStream;

    async fn dial(&self) -> Result<Dialled<UnixStream>, Error> {
        let io = UnixStream::connect(&self.path)
            .await
            .map_err(|source| Error::connect(self.target(), source))?;
        let local = io
            .local_addr()
            .map(|addr| Addr::from_unix(&addr))
            .unwrap_or_else(|_| Addr::unnamed_unix());
        Ok(Dialled {
            io,
            peer: Addr::unix(&self.path),
            local,
        })
    }

    fn target(&self) -> String {
        Addr::unix(&self.path).to_string()
    }
}
