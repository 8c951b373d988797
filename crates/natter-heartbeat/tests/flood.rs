//! A flood of fake registrations: 5,000 nodes at dead loopback
//! addresses registered at once, then 2,000 more on connections reset
//! without reading the answer, with three live nodes and a ping every
//! 200 ms. The live nodes are never lost, a killed one is still lost in
//! time, and stderr grows by at most 1 MB a minute. Alone in its test
//! binary so that no other test competes for the CPU.

mod support;

use std::time::{Duration, Instant};

use support::{
    Heartbeat, bounded, event_is, flood, flood_and_reset, join, lost_in_time, start_master,
};

/// Nodes lose the master after this much silence: long enough for a
/// healthy node pinged every 200 ms, short enough to notice a stall.
const MASTER_TIMEOUT_MS: &str = "2000";

/// How long the flood test watches the master.
const FLOOD_WINDOW: Duration = Duration::from_secs(15);

/// Fake nodes registered at once.
const FAKES: usize = 5000;

/// Fake nodes registered on connections reset at once.
const RUDE: usize = 2000;

#[test]
fn a_flood_of_fake_nodes_neither_loses_live_nodes_nor_floods_stderr() {
    bounded(Duration::from_secs(120), || {
        let (mut master, addr) = start_master(&[]);
        let mut nodes: Vec<(Heartbeat, &str)> = ["n1", "n2", "n3"]
            .into_iter()
            .map(|id| (join(&mut master, &addr, id, MASTER_TIMEOUT_MS, &[]).0, id))
            .collect();

        let stderr_before = master.stderr().len();
        let started = Instant::now();
        let answers = flood(&addr, "fake", FAKES, 50);
        assert_eq!(answers.accepted, FAKES, "{answers:?}");
        eprintln!("{FAKES} fakes registered in {:?}", started.elapsed());
        // Rude ones too: each connection is an error for the master.
        flood_and_reset(&addr, "rude", RUDE);
        eprintln!("{RUDE} more sent and reset by {:?}", started.elapsed());

        // Every fake is lost; no live node ever is.
        let mut fakes_lost = 0;
        let deadline = started + FLOOD_WINDOW;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(event) = master.next_event(left) else {
                if left.is_zero() {
                    break;
                }
                continue;
            };
            if event["event"] == "node_lost" {
                let node = event["node"].as_str().unwrap_or_default();
                assert!(
                    node.starts_with("fake-") || node.starts_with("rude-"),
                    "a live node was lost: {event}"
                );
                fakes_lost += usize::from(node.starts_with("fake-"));
            }
        }
        assert_eq!(fakes_lost, FAKES);
        for (node, id) in &mut nodes {
            node.expect_none(Duration::ZERO, "master_lost", |event| {
                event["event"] == "master_lost"
            });
            assert!(node.is_running(), "{id}");
        }
        // At most 1 MB a minute, however many pings fail.
        let grown = master.stderr().len() - stderr_before;
        let allowed = (1_000_000.0 * FLOOD_WINDOW.as_secs_f64() / 60.0) as usize;
        eprintln!(
            "stderr grew by {grown} bytes in {:?} (allowed {allowed})",
            started.elapsed()
        );
        assert!(grown <= allowed, "stderr grew by {grown} bytes");

        // A live node that dies is still reported in time.
        let (n2, _) = nodes.remove(1);
        n2.signal("KILL");
        let killed = Instant::now();
        master.expect(lost_in_time(), "n2 lost", |event| {
            assert!(
                event["event"] != "node_lost" || event["node"] == "n2",
                "{event}"
            );
            event_is(event, "node_lost", "n2")
        });
        eprintln!(
            "n2 lost {:?} after SIGKILL (bound {:?})",
            killed.elapsed(),
            lost_in_time()
        );
    });
}
