//! natter: long-lived, delimiter-framed TCP conversations.
#![warn(missing_docs)]

pub mod codec;
mod error;
mod frame;

pub use codec::{Delimiter, DelimiterCodec, JsonCodec};
pub use error::{BoxError, Error};
pub use frame::Frame;
