//! Handing a frame to the user's service, panics caught.
//!
//! `poll_ready` and then `call`, under one `catch_unwind`: a panic in a
//! user's service fails its own frame, or closes its own connection,
//! instead of unwinding through the connection's task. Panics in the
//! response future are the [pipeline](super::pipeline)'s to catch.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::task::{Context, Poll};

use tower::Service;

use crate::layer::panic::panic_error;
use crate::{BoxError, Frame};

/// What became of a frame offered to the service.
pub(super) enum Offer<F> {
    /// Taken: the future that handles it.
    Taken(F),
    /// The service is not ready; the frame is handed back.
    Busy(Frame),
    /// `poll_ready` failed (or panicked): the service takes no more frames.
    Unusable(BoxError),
    /// `call` panicked: the frame's result is this error.
    Panicked(BoxError),
}

/// Offers `frame` to `service`.
#[inline]
pub(super) fn offer<S>(service: &mut S, frame: Frame, cx: &mut Context<'_>) -> Offer<S::Future>
where
    S: Service<Frame>,
    S::Error: Into<BoxError>,
{
    let mut called = false;
    let offered = catch_unwind(AssertUnwindSafe(|| match service.poll_ready(cx) {
        Poll::Ready(Ok(())) => {
            called = true;
            Offer::Taken(service.call(frame))
        }
        Poll::Ready(Err(error)) => Offer::Unusable(error.into()),
        Poll::Pending => Offer::Busy(frame),
    }));
    match offered {
        Ok(offer) => offer,
        Err(payload) if called => Offer::Panicked(panic_error(payload)),
        Err(payload) => Offer::Unusable(panic_error(payload)),
    }
}
