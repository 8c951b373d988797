//! The cost of natter's layers: one frame through a bare echo service,
//! through each layer alone, and stacked with a tower layer, the way the
//! connection driver calls a service: `poll_ready`, `call`, one poll of
//! the response future (the echo is ready at once).
//!
//! A natter server's own protections (panics caught, the handler timeout)
//! are not layers: the driver applies them around the user's service
//! without a wrapper future. What they cost is measured end to end by the
//! suite (`layered` against `natter`); BENCHMARKS.md has both.
//!
//! ```text
//! cargo bench -p natter-bench --bench layers -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Subtract `bare` from any line to get what that stack adds per frame.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_main};
use natter::Frame;
use natter::layer::{CatchPanicLayer, HandlerTimeoutLayer};
use tower::limit::ConcurrencyLimitLayer;
use tower::{Layer, Service, service_fn};

/// One frame through `service`, as the driver does it.
fn one_frame<S>(service: &mut S, frame: Frame) -> S::Response
where
    S: Service<Frame>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    match service.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("the service is always ready"),
    }
    let mut future = pin!(service.call(frame));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(response)) => response,
        _ => panic!("the echo replies at once"),
    }
}

/// The echo example's service.
fn echo() -> impl Service<Frame, Response = Frame, Error = Infallible, Future: Send> + Send {
    service_fn(|frame: Frame| async move { Ok::<_, Infallible>(frame) })
}

fn layers(c: &mut Criterion) {
    // `HandlerTimeout` needs a tokio timer to exist.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _context = runtime.enter();
    let frame = Frame::from_static(&[b'x'; 64]);
    let timeout = HandlerTimeoutLayer::new(Duration::from_secs(5));
    let tower_layer = ConcurrencyLimitLayer::new(1);

    let mut group = c.benchmark_group("one frame");
    let mut bare = echo();
    group.bench_function("bare", |b| {
        b.iter(|| black_box(one_frame(&mut bare, black_box(frame.clone()))))
    });
    let mut panic = CatchPanicLayer::new().layer(echo());
    group.bench_function("CatchPanic", |b| {
        b.iter(|| black_box(one_frame(&mut panic, black_box(frame.clone()))))
    });
    let mut handler_timeout = timeout.layer(echo());
    group.bench_function("HandlerTimeout", |b| {
        b.iter(|| black_box(one_frame(&mut handler_timeout, black_box(frame.clone()))))
    });
    let mut limit = tower_layer.layer(echo());
    group.bench_function("ConcurrencyLimit", |b| {
        b.iter(|| black_box(one_frame(&mut limit, black_box(frame.clone()))))
    });
    let mut natter_layers = CatchPanicLayer::new().layer(timeout.layer(echo()));
    group.bench_function("CatchPanic+HandlerTimeout", |b| {
        b.iter(|| black_box(one_frame(&mut natter_layers, black_box(frame.clone()))))
    });
    let mut full = CatchPanicLayer::new().layer(timeout.layer(tower_layer.layer(echo())));
    group.bench_function("CatchPanic+HandlerTimeout+ConcurrencyLimit", |b| {
        b.iter(|| black_box(one_frame(&mut full, black_box(frame.clone()))))
    });
    group.finish();
}

// `criterion_group!` defines an undocumented `pub fn benches`.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::layers);
}
criterion_main!(group::benches);
