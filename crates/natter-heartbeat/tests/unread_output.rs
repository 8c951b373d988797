//! A master whose stdout and stderr nobody reads: it keeps pinging (its
//! nodes never lose it), its memory stays bounded, and once its output is
//! read again it says how many events it dropped. Alone in its test
//! binary so that no other test competes for the CPU.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Heartbeat, SECOND, bounded, event_is, flood, free_addr};

/// Nodes lose the master after this much silence: long enough for a
/// healthy node pinged every 200 ms, short enough to notice a stall.
const MASTER_TIMEOUT_MS: &str = "2000";

#[test]
fn a_master_whose_output_nobody_reads_keeps_pinging_in_bounded_memory() {
    bounded(Duration::from_secs(120), || {
        let addr = free_addr();
        let args = [
            "master",
            "--json",
            "--listen",
            &addr,
            "--interval-ms",
            "200",
            "--max-nodes",
            "100",
        ];
        // Debug logs, so that stderr fills up too.
        let mut master = Heartbeat::start_with("master", &args, &[("RUST_LOG", "debug")]);
        let mut nodes: Vec<Heartbeat> = ["n1", "n2"]
            .into_iter()
            .map(|id| {
                let (mut node, _) =
                    Heartbeat::node(id, &addr, &["--master-timeout-ms", MASTER_TIMEOUT_MS]);
                node.expect_event(10 * SECOND, json!({"event": "registered", "master": addr}));
                node
            })
            .collect();

        // 100 fakes join and 79,900 are rejected for the node limit: an
        // event each, far more than the pipe (64 KiB) and the master's
        // output queue (4,096 lines) hold.
        let answers = flood(&addr, "fake", 80_000, 20);
        assert_eq!(answers.accepted, 98, "{answers:?}");
        let rss_full = master.rss_kib();
        // As many again: memory stays where it was.
        let answers = flood(&addr, "more", 80_000, 20);
        assert_eq!(answers.rejected.get("node limit"), Some(&80_000));
        let rss_after = master.rss_kib();
        eprintln!(
            "master VmRSS: {rss_full} KiB after the first flood, {rss_after} KiB after the second"
        );
        assert!(
            rss_after < rss_full + 8 * 1024,
            "{rss_full} KiB, then {rss_after} KiB"
        );

        // The nodes are still pinged: they never lose the master.
        nodes[0].expect_none(3 * SECOND, "master_lost", |event| {
            event["event"] == "master_lost"
        });
        nodes[1].expect_none(Duration::ZERO, "master_lost", |event| {
            event["event"] == "master_lost"
        });

        // Output flows again: the loss is told in place, then newer events
        // come through.
        master.read_output();
        let dropped = master.expect(30 * SECOND, "events_dropped", |event| {
            event["event"] == "events_dropped"
        });
        assert!(dropped["count"].as_u64() > Some(0), "{dropped}");
        assert_eq!(dropped.as_object().map(|o| o.len()), Some(2), "{dropped}");
        nodes.remove(0).signal("KILL");
        master.expect(30 * SECOND, "n1 lost", |event| {
            event_is(event, "node_lost", "n1")
        });
    });
}
