//! [`Error`]: every failure natter reports, as one typed enum.
//!
//! Each variant names one failure a person can act on. The connection
//! driver attaches the peer's address when it reports an error (see
//! [`Event`](crate::Event)), so the error itself carries only what is not
//! already known there. Errors are `Clone`: one closed connection can fail
//! every request waiting on it with the same error.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A boxed error, as tower middleware returns them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How many bytes of a bad frame an error quotes.
const PREFIX_LEN: usize = 64;

/// Everything that can go wrong in natter.
///
/// ```
/// let err = natter::Error::FrameTooLong { limit: 16 };
/// assert_eq!(err.to_string(), "frame longer than the limit of 16 bytes");
/// assert!(err.closes_connection());
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A frame (or, in EOF mode, the whole stream) passed the codec's
    /// `max_frame_length`. Reported as soon as the limit is passed; the rest
    /// of the frame is discarded, never buffered.
    #[error("frame longer than the limit of {limit} bytes")]
    FrameTooLong {
        /// The limit that was passed.
        limit: usize,
    },

    /// A frame to be sent contains the delimiter byte, so the peer would
    /// read it as two frames. Nothing was written.
    #[error("frame to send contains the delimiter byte {delimiter:#04x} at offset {offset}")]
    DelimiterInFrame {
        /// The delimiter byte.
        delimiter: u8,
        /// Where the first one is in the frame.
        offset: usize,
    },

    /// A frame is not the JSON the receiver expected, or a value could not
    /// be serialized.
    #[error("invalid JSON: {source}{}", quote_prefix(prefix))]
    Json {
        /// The start of the offending frame, escaped (empty when
        /// serializing).
        prefix: String,
        /// What serde_json said.
        source: Arc<serde_json::Error>,
    },

    /// The socket failed.
    #[error("I/O error: {0}")]
    Io(Arc<io::Error>),

    /// A handler did not finish within the time the
    /// [`HandlerTimeoutLayer`](crate::layer::HandlerTimeoutLayer) allows.
    #[error("handler did not finish within {timeout:?}")]
    HandlerTimeout {
        /// The time allowed.
        timeout: Duration,
        /// Whether the layer was configured to close the connection after
        /// a timeout.
        close: bool,
    },

    /// The peer completed no frame within the idle timeout.
    #[error("no complete frame within the idle timeout of {0:?}")]
    IdleTimeout(Duration),

    /// The peer did not read what we wrote within the write timeout.
    #[error("peer did not read within the write timeout of {0:?}")]
    WriteTimeout(Duration),

    /// The handler returned an error. The connection stays open.
    #[error("handler failed: {0}")]
    Handler(Arc<dyn std::error::Error + Send + Sync + 'static>),

    /// The handler panicked. Its connection is closed; nothing else is
    /// affected.
    #[error("handler panicked: {0}")]
    Panic(String),

    /// The server already has its maximum number of connections; this one
    /// was closed at once.
    #[error("connection limit of {limit} reached; connection refused")]
    ConnectionLimit {
        /// The configured maximum.
        limit: usize,
    },

    /// Binding the listening socket failed (address in use, no
    /// permission...).
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// Why it failed.
        source: Arc<io::Error>,
    },

    /// Connecting failed (refused, unreachable...).
    #[error("could not connect to {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// Why it failed.
        source: Arc<io::Error>,
    },

    /// Connecting took longer than the connect timeout.
    #[error("connecting to {addr} timed out after {timeout:?}")]
    ConnectTimeout {
        /// The address dialled.
        addr: String,
        /// The time allowed.
        timeout: Duration,
    },

    /// A builder was given a setting that cannot work.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),

    /// An encoder passed to [`Conn::send_with`](crate::Conn::send_with)
    /// failed.
    #[error("could not encode a frame: {0}")]
    Encode(Arc<dyn std::error::Error + Send + Sync + 'static>),

    /// A service was called without a successful `poll_ready` first (for
    /// instance on a clone, which never carries the readiness its original
    /// reserved). Nothing was sent. Call `ready()` on the service you call.
    #[error("service called before it was ready; nothing was sent (call `ready()` first)")]
    NotReady,

    /// The connection is closed, so the frame or request could not be sent
    /// or answered.
    #[error("connection closed")]
    Closed,

    /// No connection from this peer address (for
    /// [`ServerHandle::close`](crate::ServerHandle::close)).
    #[error("no connection from {0}")]
    UnknownPeer(SocketAddr),
}

impl Error {
    /// Whether this error ends the connection it happened on.
    ///
    /// Handler errors keep the connection open (the next frame is handled
    /// as usual); a handler timeout does when its layer says so; everything
    /// the socket or the peer did wrong closes it.
    pub fn closes_connection(&self) -> bool {
        match self {
            Error::Handler(_) | Error::Json { .. } => false,
            Error::HandlerTimeout { close, .. } => *close,
            _ => true,
        }
    }

    /// Whether this error is a timeout of any kind, including tower's
    /// [`Elapsed`](tower::timeout::error::Elapsed) returned by a handler.
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::HandlerTimeout { .. }
            | Error::IdleTimeout(_)
            | Error::WriteTimeout(_)
            | Error::ConnectTimeout { .. } => true,
            Error::Handler(source) => source.is::<tower::timeout::error::Elapsed>(),
            Error::Io(source) => source.kind() == io::ErrorKind::TimedOut,
            _ => false,
        }
    }

    /// Turns the boxed error of a service (after any tower layers) into a
    /// natter error: a natter error inside the box comes out as itself,
    /// anything else as [`Error::Handler`].
    pub fn from_service(error: BoxError) -> Error {
        match error.downcast::<Error>() {
            Ok(error) => *error,
            Err(other) => Error::Handler(Arc::from(other)),
        }
    }

    pub(crate) fn json(source: serde_json::Error, frame: &[u8]) -> Error {
        let mut prefix = String::new();
        for chunk in frame[..frame.len().min(PREFIX_LEN)].utf8_chunks() {
            for c in chunk.valid().chars() {
                let _ = write!(prefix, "{}", c.escape_debug());
            }
            for byte in chunk.invalid() {
                let _ = write!(prefix, "\\x{byte:02x}");
            }
        }
        if frame.len() > PREFIX_LEN {
            prefix.push_str("...");
        }
        Error::Json {
            prefix,
            source: Arc::new(source),
        }
    }

    pub(crate) fn bind(addr: impl ToString, source: io::Error) -> Error {
        Error::Bind {
            addr: addr.to_string(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn connect(addr: impl ToString, source: io::Error) -> Error {
        Error::Connect {
            addr: addr.to_string(),
            source: Arc::new(source),
        }
    }
}

fn quote_prefix(prefix: &str) -> String {
    if prefix.is_empty() {
        String::new()
    } else {
        format!(" (frame starts with \"{prefix}\")")
    }
}

impl From<io::Error> for Error {
    fn from(error: io::Error) -> Self {
        Error::Io(Arc::new(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_error_quotes_an_escaped_prefix_of_the_frame() {
        let err = crate::Frame::from(&b"{\"a\":\xff\n"[..])
            .json::<serde_json::Value>()
            .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("invalid JSON: "), "{text}");
        assert!(
            text.ends_with(r#"(frame starts with "{\"a\":\xff\n")"#),
            "{text}"
        );
    }

    #[test]
    fn json_error_prefix_is_bounded() {
        let long = vec![b'x'; 10_000];
        let err = crate::Frame::from(long)
            .json::<serde_json::Value>()
            .unwrap_err();
        assert!(err.to_string().len() < 200);
    }

    #[test]
    fn service_errors_keep_their_natter_type() {
        let boxed: BoxError = Box::new(Error::IdleTimeout(Duration::from_secs(1)));
        assert!(matches!(Error::from_service(boxed), Error::IdleTimeout(_)));
        let boxed: BoxError = "boom".into();
        let err = Error::from_service(boxed);
        assert_eq!(err.to_string(), "handler failed: boom");
        assert!(!err.closes_connection());
    }

    #[test]
    fn tower_elapsed_counts_as_a_timeout() {
        let boxed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert!(Error::from_service(boxed).is_timeout());
    }
}
