//! Middleware for natter services, tower style: one folder per behaviour,
//! each a `Layer` plus the `Service` it builds, usable with
//! [`tower::ServiceBuilder`] or [`ServerBuilder::layer`](crate::ServerBuilder::layer).
//!
//! Two kinds of behaviour protect a connection, and each lives in one place:
//!
//! * **Per frame** (this module): [`HandlerTimeoutLayer`] bounds one
//!   frame's handling, [`CatchPanicLayer`] turns a panicking handler into an
//!   [`Error::Panic`](crate::Error::Panic). Any other tower layer composes
//!   with them: `tower::timeout::TimeoutLayer`, `tower::limit`,
//!   `tower::load_shed`...
//! * **Per connection** (options of [`ServerBuilder`](crate::ServerBuilder)
//!   and [`ClientBuilder`](crate::ClientBuilder), enforced by the
//!   connection driver in [`conn`](crate::conn)): the read idle timeout, the
//!   write timeout with bounded write buffering, the connection limit and
//!   graceful shutdown. These watch the socket between frames, when no
//!   service is being called, so a request middleware cannot see them.
//!
//! natter's connection driver catches panics in every connection's stack
//! (as [`CatchPanic`] does): a panic anywhere in a user's service closes
//! only that connection.

pub mod panic;
pub mod timeout;

pub use panic::{CatchPanic, CatchPanicLayer};
pub use timeout::{HandlerTimeout, HandlerTimeoutLayer};
