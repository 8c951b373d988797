//! [`CodecError`]: what framing can get wrong, and nothing else.

use std::io;
use std::sync::Arc;

/// Why [`DelimiterCodec`](super::DelimiterCodec) or
/// [`JsonCodec`](super::JsonCodec) failed.
///
/// Only framing failures: a codec on a bare
/// [`Framed`](tokio_util::codec::Framed) never sees natter's connection
/// errors. natter's connections turn it into the matching
/// [`natter::Error`](crate::Error) variant.
///
/// ```
/// use bytes::BytesMut;
/// use natter::codec::CodecError;
/// use natter::DelimiterCodec;
/// use tokio_util::codec::Decoder;
///
/// let mut codec = DelimiterCodec::lines().max_frame_length(4);
/// let mut buf = BytesMut::from("toolong\nok\n");
/// assert!(matches!(codec.decode(&mut buf), Err(CodecError::FrameTooLong { limit: 4 })));
/// // The codec skipped the long frame; the next one decodes.
/// assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "ok");
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A frame being read (or, in EOF mode, the whole stream) passed the
    /// limit. Reported as soon as the limit is passed; the codec drops the
    /// rest of that frame as it arrives and then decodes the next one.
    #[error("frame longer than the limit of {limit} bytes")]
    FrameTooLong {
        /// The limit that was passed.
        limit: usize,
    },

    /// Input ended in the middle of a frame (see
    /// [`DelimiterCodec::strict_end`](super::DelimiterCodec::strict_end)):
    /// these bytes came without the delimiter that would end them.
    #[error("input ended in the middle of a frame: {len} bytes without a delimiter")]
    IncompleteFrame {
        /// How many bytes were left.
        len: usize,
    },

    /// A frame to be sent is longer than the limit, so a peer with the same
    /// limit would refuse it. Nothing was written.
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

    /// A frame is not the JSON [`JsonCodec`](super::JsonCodec) expected, or
    /// a value could not be serialized.
    #[error("invalid JSON: {source}{}", quote_prefix(prefix))]
    Json {
        /// The start of the offending frame, escaped (empty when
        /// serializing).
        prefix: String,
        /// What serde_json said.
        source: Arc<serde_json::Error>,
    },

    /// Reading or writing the stream failed (as `Framed` reports it through
    /// the codec).
    #[error("I/O error: {0}")]
    Io(Arc<io::Error>),
}

impl From<io::Error> for CodecError {
    fn from(error: io::Error) -> Self {
        CodecError::Io(Arc::new(error))
    }
}

/// How many bytes of a bad frame an error quotes.
const PREFIX_LEN: usize = 64;

impl CodecError {
    /// A JSON error quoting an escaped prefix of `frame`.
    pub(crate) fn json(source: serde_json::Error, frame: &[u8]) -> CodecError {
        CodecError::Json {
            prefix: escaped_prefix(frame),
            source: Arc::new(source),
        }
    }
}

/// The first bytes of `frame`, escaped for a log line.
pub(crate) fn escaped_prefix(frame: &[u8]) -> String {
    use std::fmt::Write as _;
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
    prefix
}

pub(crate) fn quote_prefix(prefix: &str) -> String {
    if prefix.is_empty() {
        String::new()
    } else {
        format!(" (frame starts with \"{prefix}\")")
    }
}
