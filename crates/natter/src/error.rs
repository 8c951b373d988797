//! [`Error`]: every failure natter reports, as one typed enum.
//!
//! Each variant names one failure a person can act on. The connection
//! driver attaches the peer's address when it reports an error (see
//! [`Event`](crate::Event)), so the error itself carries only what is not
//! already known there. Errors are `Clone`: one closed connection can fail
//! every request waiting on it with the same error.
//!
//! Errors of any tower layer arrive boxed; [`Error::from_service`] keeps a
//! natter error as itself and wraps anything else in [`Error::Handler`],
//! where [`Error::downcast_ref`], [`Error::is_timeout`] and
//! [`Error::is_overloaded`] still find it.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::codec::CodecError;
use crate::codec::error::{escaped_prefix, quote_prefix};
use crate::transport::Addr;

/// A boxed error, as tower middleware returns them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in natter.
///
/// ```
/// let err = natter::Error::FrameTooLong { limit: 16 };
/// assert_eq!(err.to_string(), "frame longer than the limit of 16 bytes");
/// ```
///
/// Whether an error closes its connection does not depend on the variant
/// but on where it happened: see [the policy](crate::ServerBuilder::on_error).
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

    /// A frame to be sent is longer than the codec's limit. Nothing was
    /// written.
    #[error("frame to send is {len} bytes, longer than the limit of {limit}")]
    FrameTooLongToSend {
        /// The frame's length.
        len: usize,
        /// The limit.
        limit: usize,
    },

    /// A frame to be sent contains the delimiter, so the peer would read it
    /// as two frames. Nothing was written.
    #[error("frame to send contains the delimiter at offset {offset}")]
    DelimiterInFrame {
        /// Where the first delimiter starts in the frame.
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

    /// A codec other than natter's own could not decode the bytes
    /// received. The connection closes.
    #[error("could not decode a frame: {0}")]
    Decode(Arc<dyn std::error::Error + Send + Sync + 'static>),

    /// The socket (or the stream under the connection) failed.
    #[error("I/O error: {0}")]
    Io(Arc<io::Error>),

    /// A handler did not finish within the connection's
    /// [`handler_timeout`](crate::ServerBuilder::handler_timeout) or a
    /// [`HandlerTimeoutLayer`](crate::layer::HandlerTimeoutLayer)'s time.
    #[error("handler did not finish within {timeout:?}")]
    HandlerTimeout {
        /// The time allowed.
        timeout: Duration,
    },

    /// The peer completed no frame within the idle timeout.
    #[error("no complete frame within the idle timeout of {0:?}")]
    IdleTimeout(Duration),

    /// The peer did not read what we wrote within the write timeout.
    #[error("peer did not read within the write timeout of {0:?}")]
    WriteTimeout(Duration),

    /// The handler, or a tower layer around it, returned an error that is
    /// not a natter error (find it with [`downcast_ref`](Error::downcast_ref)).
    #[error("handler failed: {0}")]
    Handler(Arc<dyn std::error::Error + Send + Sync + 'static>),

    /// The handler panicked. Nothing outside its connection is affected.
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

    /// TLS could not be set up: a certificate or key file that cannot be
    /// read or does not fit, no trusted certificates. (A handshake that
    /// fails is an [`Error::Io`] on a server's connection and an
    /// [`Error::Connect`] for a client; both say why.)
    #[error("TLS: {0}")]
    Tls(Arc<dyn std::error::Error + Send + Sync + 'static>),

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

    /// A codec other than natter's own, or an encoder passed to
    /// [`Conn::send_with`](crate::Conn::send_with), could not encode a frame.
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
    UnknownPeer(Addr),
}

impl Error {
    /// Whether this error is a timeout of any kind, including tower's
    /// [`Elapsed`](tower::timeout::error::Elapsed) returned by a layer.
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

    /// Whether a tower layer refused the request because the service was
    /// overloaded ([`Overloaded`](tower::load_shed::error::Overloaded), from
    /// `LoadShed`).
    pub fn is_overloaded(&self) -> bool {
        self.downcast_ref::<tower::load_shed::error::Overloaded>()
            .is_some()
    }

    /// The error a handler, layer or codec returned, if it is a `T`: how an
    /// [`on_error`](crate::ServerBuilder::on_error) hook tells the errors of
    /// its own types and layers apart.
    ///
    /// ```
    /// use natter::{BoxError, Error};
    ///
    /// #[derive(Debug, thiserror::Error)]
    /// #[error("no such key: {0}")]
    /// struct NoSuchKey(String);
    ///
    /// let boxed: BoxError = Box::new(NoSuchKey("a".into()));
    /// let error = Error::from_service(boxed);
    /// assert_eq!(error.downcast_ref::<NoSuchKey>().unwrap().0, "a");
    /// ```
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        match self {
            Error::Handler(source) | Error::Decode(source) | Error::Encode(source) => {
                source.downcast_ref::<T>()
            }
            _ => None,
        }
    }

    /// Turns the boxed error of a service (after any tower layers) into a
    /// natter error: a natter error inside the box comes out as itself,
    /// anything else as [`Error::Handler`].
    pub fn from_service(error: BoxError) -> Error {
        match error.downcast::<Error>() {
            Ok(error) => *error,
            Err(other) => match other.downcast::<CodecError>() {
                Ok(error) => Error::from(*error),
                Err(other) => Error::Handler(Arc::from(other)),
            },
        }
    }

    /// A codec's decode error: natter's own as the matching variant,
    /// anything else as [`Error::Decode`].
    pub(crate) fn from_decode(error: BoxError) -> Error {
        Error::from_codec(error, Error::Decode)
    }

    /// A codec's encode error: natter's own as the matching variant,
    /// anything else as [`Error::Encode`].
    pub(crate) fn from_encode(error: BoxError) -> Error {
        Error::from_codec(error, Error::Encode)
    }

    fn from_codec(
        error: BoxError,
        other: fn(Arc<dyn std::error::Error + Send + Sync>) -> Error,
    ) -> Error {
        match error.downcast::<CodecError>() {
            Ok(error) => Error::from(*error),
            Err(error) => match error.downcast::<Error>() {
                Ok(error) => *error,
                Err(error) => other(Arc::from(error)),
            },
        }
    }

    pub(crate) fn json(source: serde_json::Error, frame: &[u8]) -> Error {
        Error::Json {
            prefix: escaped_prefix(frame),
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

impl From<CodecError> for Error {
    fn from(error: CodecError) -> Self {
        match error {
            CodecError::FrameTooLong { limit } => Error::FrameTooLong { limit },
            CodecError::FrameTooLongToSend { len, limit } => {
                Error::FrameTooLongToSend { len, limit }
            }
            CodecError::DelimiterInFrame { offset } => Error::DelimiterInFrame { offset },
            CodecError::Json { prefix, source } => Error::Json { prefix, source },
            CodecError::Io(source) => Error::Io(source),
            error @ CodecError::IncompleteFrame { .. } => Error::Decode(Arc::new(error)),
        }
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
    }

    #[test]
    fn tower_elapsed_counts_as_a_timeout() {
        let boxed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert!(Error::from_service(boxed).is_timeout());
    }

    #[test]
    fn tower_overloaded_is_recognised() {
        let boxed: BoxError = Box::new(tower::load_shed::error::Overloaded::new());
        let error = Error::from_service(boxed);
        assert!(error.is_overloaded());
        assert!(!error.is_timeout());
    }

    #[test]
    fn codec_errors_in_a_box_keep_their_variant() {
        let boxed: BoxError = Box::new(CodecError::FrameTooLong { limit: 3 });
        assert!(matches!(
            Error::from_service(boxed),
            Error::FrameTooLong { limit: 3 }
        ));
        let boxed: BoxError = Box::new(CodecError::DelimiterInFrame { offset: 1 });
        assert!(matches!(
            Error::from_encode(boxed),
            Error::DelimiterInFrame { offset: 1 }
        ));
        let boxed: BoxError = "bad length prefix".into();
        assert!(matches!(Error::from_decode(boxed), Error::Decode(_)));
    }
}
