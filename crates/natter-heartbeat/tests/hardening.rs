//! The `heartbeat` master under hostile and unlucky conditions, driven
//! from outside as its README describes: the node limit, ids in use,
//! forgetting lost nodes and probing them with backoff. Real processes on
//! loopback; every wait is bounded, and so is each test as a whole.
//!
//! The heavy cases (a flood of fake registrations, a master whose output
//! nobody reads) have test files of their own, `flood.rs` and
//! `unread_output.rs`, so that cargo runs each alone and they do not
//! starve each other of CPU.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    Heartbeat, PING_TIMEOUT_MS, SECOND, bounded, event_is, free_addr, interval, join, lost_in_time,
    register, start_master,
};

/// Nodes lose the master after this much silence: long enough for a
/// healthy node pinged every 200 ms, short enough to notice a stall.
const MASTER_TIMEOUT_MS: &str = "2000";

fn rejected(event: &Value) -> bool {
    event["event"] == "registration_rejected"
}

#[test]
fn a_new_node_beyond_the_limit_is_rejected_and_joins_once_a_place_frees_up() {
    bounded(Duration::from_secs(60), || {
        let (mut master, addr) = start_master(&["--max-nodes", "2"]);
        let (mut n1, _) = join(&mut master, &addr, "n1", MASTER_TIMEOUT_MS, &[]);
        let _n2 = join(&mut master, &addr, "n2", MASTER_TIMEOUT_MS, &[]);

        let (mut n3, n3_addr) =
            Heartbeat::node("n3", &addr, &["--master-timeout-ms", MASTER_TIMEOUT_MS]);
        let event = master.expect(5 * SECOND, "registration_rejected", rejected);
        assert_eq!(event["reason"], "node limit", "{event}");
        // n3 keeps trying (it does not exit) and says why on stderr.
        master.expect_none(2 * SECOND, "n3 joining", |event| event["node"] == "n3");
        assert!(n3.is_running(), "{}", n3.stderr());
        assert!(n3.stderr().contains("node limit"), "{}", n3.stderr());
        n3.expect_none(Duration::ZERO, "registered", |event| {
            event["event"] == "registered"
        });

        // A place frees up: n3 gets it.
        n1.signal("TERM");
        assert_eq!(n1.wait_exit(2 * SECOND).code(), Some(0));
        master.expect(SECOND, "n1 leaving", |event| {
            event_is(event, "node_left", "n1")
        });
        master.expect_event(
            3 * SECOND,
            json!({"event": "node_joined", "node": "n3", "addr": n3_addr}),
        );
        n3.expect_event(SECOND, json!({"event": "registered", "master": addr}));
    });
}

#[test]
fn an_id_live_elsewhere_is_rejected_until_the_live_node_is_lost() {
    bounded(Duration::from_secs(60), || {
        let (mut master, addr) = start_master(&[]);
        let (first, _) = join(&mut master, &addr, "n1", MASTER_TIMEOUT_MS, &[]);

        // A second process with the same id, on another port.
        let (mut second, _) =
            Heartbeat::node("n1", &addr, &["--master-timeout-ms", MASTER_TIMEOUT_MS]);
        let event = master.expect(5 * SECOND, "registration_rejected", rejected);
        assert_eq!(event["reason"], "id in use", "{event}");
        // A forged registration moving n1 to a dead port: refused too.
        let dead = free_addr();
        let answer = register(&addr, "n1", &dead);
        assert_eq!(
            answer,
            json!({"type": "rejected", "reason": "id in use"}),
            "{answer}"
        );
        // The live node is untouched, and the second keeps trying.
        master.expect_none(2 * SECOND, "a change to n1", |event| event["node"] == "n1");
        assert!(second.is_running(), "{}", second.stderr());
        assert!(second.stderr().contains("id in use"), "{}", second.stderr());

        // Once the first is lost, the second takes the id over.
        first.signal("KILL");
        master.expect(lost_in_time(), "n1 lost", |event| {
            event_is(event, "node_lost", "n1")
        });
        master.expect(3 * SECOND, "n1 recovered", |event| {
            event_is(event, "node_recovered", "n1")
        });
        second.expect_event(SECOND, json!({"event": "registered", "master": addr}));
        // From now on it is pinged at the second's address.
        master.expect_none(interval() * 10, "n1 lost again", |event| {
            event_is(event, "node_lost", "n1")
        });
    });
}

#[test]
fn a_node_lost_long_enough_is_forgotten_and_may_join_again() {
    bounded(Duration::from_secs(60), || {
        let forget_after = Duration::from_millis(1500);
        let (mut master, addr) = start_master(&["--forget-after-ms", "1500"]);
        let (n1, _) = join(&mut master, &addr, "n1", MASTER_TIMEOUT_MS, &[]);
        n1.signal("KILL");
        master.expect_event(lost_in_time(), json!({"event": "node_lost", "node": "n1"}));
        let lost = Instant::now();
        master.expect_event(
            forget_after + 2 * SECOND,
            json!({"event": "node_forgotten", "node": "n1"}),
        );
        let after = lost.elapsed();
        // Reading events takes a moment: allow a little on the early side.
        assert!(
            after >= forget_after - interval(),
            "forgotten after {after:?}"
        );
        // Gone for good: nothing more about it, and the id is free.
        master.expect_none(interval() * 5, "n1", |event| event["node"] == "n1");
        join(&mut master, &addr, "n1", MASTER_TIMEOUT_MS, &[]);
    });
}

#[test]
fn a_node_lost_for_a_while_is_recovered_within_ten_intervals_of_answering() {
    bounded(Duration::from_secs(60), || {
        let (mut master, addr) = start_master(&[]);
        // The node's own master timeout (10 s by default) outlasts the
        // freeze.
        let (mut n1, _) = Heartbeat::node("n1", &addr, &[]);
        n1.expect_event(5 * SECOND, json!({"event": "registered", "master": addr}));
        n1.signal("STOP");
        master.expect_event(lost_in_time(), json!({"event": "node_lost", "node": "n1"}));
        // Stay frozen while the probes back off to their longest gap.
        master.expect_none(4 * SECOND, "an event", |_| true);
        n1.signal("CONT");
        let resumed = Instant::now();
        let bound = interval() * 10 + Duration::from_millis(PING_TIMEOUT_MS);
        master.expect_event(
            bound + SECOND,
            json!({"event": "node_recovered", "node": "n1"}),
        );
        eprintln!(
            "recovered {:?} after SIGCONT (bound {bound:?})",
            resumed.elapsed()
        );
    });
}
