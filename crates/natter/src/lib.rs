//! natter: long-lived, delimiter-framed TCP conversations.
#![warn(missing_docs)]

pub mod client;
pub mod codec;
pub mod conn;
mod error;
mod event;
mod frame;
pub mod layer;
mod reply;
mod server;

pub use client::{Client, ClientBuilder, ClientService};
pub use codec::{Delimiter, DelimiterCodec, JsonCodec};
pub use conn::Conn;
pub use error::{BoxError, Error};
pub use event::{Event, EventKind, Events};
pub use frame::Frame;
pub use reply::IntoReply;
pub use server::{Server, ServerBuilder, ServerHandle};
