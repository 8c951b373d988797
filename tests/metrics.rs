//! What a server and a client count, through the `metrics` facade (with
//! metrics-util's debugging recorder) and in their `Stats` snapshots:
//! exact numbers after a known exchange.

mod support;

use std::collections::HashMap;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use natter::{Client, DelimiterCodec, EventKind, Server};
use support::*;
use tokio::io::AsyncWriteExt;
use tower::{Service, ServiceExt};

/// Every series of the snapshot, as `name{label=value,...}` -> value.
fn series(snapshotter: &Snapshotter) -> HashMap<String, DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|label| format!("{}={}", label.key(), label.value()))
                .collect();
            labels.sort();
            (format!("{}{{{}}}", key.name(), labels.join(",")), value)
        })
        .collect()
}

fn counter(series: &HashMap<String, DebugValue>, key: &str) -> u64 {
    match series.get(key) {
        Some(DebugValue::Counter(value)) => *value,
        other => panic!("{key}: {other:?} in {series:#?}"),
    }
}

fn gauge(series: &HashMap<String, DebugValue>, key: &str) -> f64 {
    match series.get(key) {
        Some(DebugValue::Gauge(value)) => value.into_inner(),
        other => panic!("{key}: {other:?}"),
    }
}

fn histogram_count(series: &HashMap<String, DebugValue>, key: &str) -> usize {
    match series.get(key) {
        Some(DebugValue::Histogram(values)) => values.len(),
        other => panic!("{key}: {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_server_counts_connections_frames_bytes_and_errors_by_kind() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // natter takes its handles when the server is bound, from the recorder
    // installed then (here, for this thread).
    let server = {
        let _installed = metrics::set_default_local_recorder(&recorder);
        Server::builder()
            .name("echo")
            .max_connections(1)
            .codec(DelimiterCodec::lines().max_frame_length(8))
            .bind("127.0.0.1:0")
            .await
            .unwrap()
    };
    within("the test", async {
        let server = start(server, echo);
        let mut events = server.handle.events();

        // A: two frames, 8 bytes each way; then a refused connection while
        // A holds the only slot.
        let mut a = connect(server.addr).await;
        exchange(&mut a, "one\ntwo\n", "one\ntwo\n").await;
        let refused = connect(server.addr).await;
        next_event(&mut events, "the refusal", |event| {
            matches!(event.error(), Some(natter::Error::ConnectionLimit { .. }))
        })
        .await;
        drop(refused);
        finish_writing(&mut a).await;
        assert_eq!(read_to_eof(&mut a).await, "");
        closed_event(&mut events, addr_of(&a)).await;

        // B: a frame over the limit (10 bytes read), no reply.
        let mut b = connect(server.addr).await;
        b.write_all(b"123456789\n").await.unwrap();
        let (got, _how) = read_until_closed(&mut b).await;
        assert_eq!(got, "");
        closed_event(&mut events, addr_of(&b)).await;

        let series = series(&snapshotter);
        let s = |name: &str| format!("{name}{{server=echo}}");
        assert_eq!(counter(&series, &s("natter_connections_accepted_total")), 2);
        assert_eq!(gauge(&series, &s("natter_connections_open")), 0.0);
        assert_eq!(counter(&series, &s("natter_frames_read_total")), 2);
        assert_eq!(counter(&series, &s("natter_frames_written_total")), 2);
        assert_eq!(counter(&series, &s("natter_bytes_read_total")), 18);
        assert_eq!(counter(&series, &s("natter_bytes_written_total")), 8);
        assert_eq!(
            counter(
                &series,
                "natter_errors_total{kind=frame_too_long,server=echo}"
            ),
            1
        );
        assert_eq!(
            counter(
                &series,
                "natter_errors_total{kind=connection_limit,server=echo}"
            ),
            1
        );
        assert_eq!(
            counter(
                &series,
                "natter_connections_closed_total{reason=peer,server=echo}"
            ),
            1
        );
        assert_eq!(
            counter(
                &series,
                "natter_connections_closed_total{reason=error,server=echo}"
            ),
            1
        );
        // The echo's handler answers at once: it is not timed.
        assert_eq!(
            histogram_count(&series, &s("natter_handler_duration_seconds")),
            0
        );

        // The snapshot says the same, without a recorder.
        let stats = server.handle.stats();
        assert_eq!(stats.connections_accepted, 2);
        assert_eq!(stats.connections_open, 0);
        assert_eq!(stats.connections_refused, 1);
        assert_eq!(stats.frames_read, 2);
        assert_eq!(stats.frames_written, 2);
        assert_eq!(stats.bytes_read, 18);
        assert_eq!(stats.bytes_written, 8);
        assert_eq!(stats.errors.get("frame_too_long"), Some(&1));
        assert_eq!(stats.errors.get("connection_limit"), Some(&1));
        assert_eq!(stats.connections_closed.get("peer"), Some(&1));
        assert_eq!(stats.connections_closed.get("error"), Some(&1));
        assert_eq!(server.handle.refused_connections(), 1);
        server.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "current_thread")]
async fn a_client_service_counts_requests_in_flight_and_their_durations() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    within("the test", async {
        let server = echo_server().await;
        let mut client = {
            let _installed = metrics::set_default_local_recorder(&recorder);
            Client::builder()
                .name("pinger")
                .connect_service(server.addr)
                .await
                .unwrap()
        };
        let mut answers = Vec::new();
        for i in 0..5 {
            let ready = client.ready().await.unwrap();
            answers.push(ready.call(format!("r{i}").into()));
        }
        assert_eq!(client.stats().requests_in_flight, 5);
        for answer in answers {
            answer.await.unwrap();
        }
        let stats = client.stats();
        assert_eq!(stats.requests_in_flight, 0);
        assert_eq!(stats.frames_written, 5);
        assert_eq!(stats.frames_read, 5);
        let series = series(&snapshotter);
        assert_eq!(
            gauge(&series, "natter_client_requests_in_flight{client=pinger}"),
            0.0
        );
        assert_eq!(
            histogram_count(
                &series,
                "natter_client_request_duration_seconds{client=pinger}"
            ),
            5
        );
        assert_eq!(
            counter(&series, "natter_connections_accepted_total{client=pinger}"),
            1
        );
        client.close();
        server.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "current_thread")]
async fn without_a_name_series_carry_no_server_label_and_reconnects_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    within("the test", async {
        let addr = refusing_addr();
        let client = {
            let _installed = metrics::set_default_local_recorder(&recorder);
            Client::builder()
                .reconnect(natter::client::Backoff::new(
                    std::time::Duration::from_millis(5),
                    std::time::Duration::from_millis(20),
                ))
                .connect_service(addr)
                .await
                .unwrap()
        };
        let mut events = client.events();
        for _ in 0..2 {
            next_event(&mut events, "a redial", |event| {
                matches!(event.kind, EventKind::Reconnecting { .. })
            })
            .await;
        }
        assert!(client.stats().reconnects >= 2);
        let series = series(&snapshotter);
        assert!(counter(&series, "natter_client_reconnects_total{}") >= 2);
        assert!(counter(&series, "natter_errors_total{kind=connect}") >= 1);
        client.close();
    })
    .await
}
