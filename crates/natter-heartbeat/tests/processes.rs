//! The `heartbeat` binary as its README describes it, driven from
//! outside: real processes on loopback, `--json` events read with
//! deadlines, signals sent with `kill`. Intervals are short (200 ms) so the
//! whole file runs in seconds; every wait is bounded.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    FAILURES, Heartbeat, INTERVAL_MS, PING_TIMEOUT_MS, Peer, SECOND, free_addr, interval, join,
    lost_bound, start_master,
};

/// Long enough that a healthy node, pinged every 200 ms, never loses the
/// master; short enough to see it lost within a test.
const MASTER_TIMEOUT_MS: &str = "1000";

fn lost(id: &str) -> Value {
    json!({"event": "node_lost", "node": id})
}

fn is_lost(event: &Value) -> bool {
    event["event"] == "node_lost"
}

#[test]
fn three_nodes_join_and_stay_live() {
    let (mut master, addr) = start_master(&[]);
    let mut nodes: Vec<Heartbeat> = ["n1", "n2", "n3"]
        .into_iter()
        .map(|id| join(&mut master, &addr, id, MASTER_TIMEOUT_MS, &[]).0)
        .collect();
    // Longer than the nodes' master timeout: they are pinged, so neither
    // side reports anything.
    master.expect_silence(Duration::from_millis(1500));
    for node in &mut nodes {
        node.expect_silence(Duration::ZERO);
        assert_eq!(node.seen().len(), 2, "listening and registered only");
    }
}

#[test]
fn a_killed_node_is_lost_in_time_and_the_others_are_not() {
    let (mut master, addr) = start_master(&[]);
    let _n1 = join(&mut master, &addr, "n1", MASTER_TIMEOUT_MS, &[]);
    let (n2, _) = join(&mut master, &addr, "n2", MASTER_TIMEOUT_MS, &[]);
    let _n3 = join(&mut master, &addr, "n3", MASTER_TIMEOUT_MS, &[]);
    master.expect_silence(interval() * 2);

    n2.signal("KILL");
    let killed = Instant::now();
    let bound = lost_bound(FAILURES, INTERVAL_MS, PING_TIMEOUT_MS);
    master.expect(bound, "node_lost n2", |event| {
        assert!(!is_lost(event) || *event == lost("n2"), "{event}");
        *event == lost("n2")
    });
    eprintln!(
        "n2 lost {:?} after SIGKILL (bound {bound:?})",
        killed.elapsed()
    );

    // Reported once; the live nodes are never lost.
    master.expect_none(interval() * 6, "event after node_lost", |_| true);
}

#[test]
fn a_frozen_node_is_lost_then_recovered() {
    let (mut master, addr) = start_master(&[]);
    let (n1, _) = join(&mut master, &addr, "n1", MASTER_TIMEOUT_MS, &[]);
    let _n2 = join(&mut master, &addr, "n2", MASTER_TIMEOUT_MS, &[]);

    n1.signal("STOP");
    let stopped = Instant::now();
    let bound = lost_bound(FAILURES, INTERVAL_MS, PING_TIMEOUT_MS);
    master.expect_event(bound, lost("n1"));
    eprintln!(
        "n1 lost {:?} after SIGSTOP (bound {bound:?})",
        stopped.elapsed()
    );
    assert_eq!(master.seen().iter().filter(|e| is_lost(e)).count(), 1);

    n1.signal("CONT");
    master.expect_event(
        interval() * 2 + 2 * SECOND,
        json!({"event": "node_recovered", "node": "n1"}),
    );
    master.expect_none(interval() * 6, "event after node_recovered", |_| true);
}

#[test]
fn a_terminated_node_leaves_and_is_never_lost() {
    let (mut master, addr) = start_master(&[]);
    let (mut n1, _) = join(&mut master, &addr, "n1", MASTER_TIMEOUT_MS, &[]);
    let (mut n2, _) = join(&mut master, &addr, "n2", MASTER_TIMEOUT_MS, &[]);

    for (node, signal) in [(&mut n1, "TERM"), (&mut n2, "INT")] {
        node.signal(signal);
        let status = node.wait_exit(2 * SECOND);
        assert_eq!(status.code(), Some(0), "SIG{signal}: {status}");
    }
    master.expect_all(
        SECOND,
        &[
            json!({"event": "node_left", "node": "n1"}),
            json!({"event": "node_left", "node": "n2"}),
        ],
    );
    // Long enough for any number of failed pings to have been reported.
    master.expect_none(interval() * (FAILURES + 3), "node_lost", is_lost);
}

#[test]
fn a_node_restarted_on_the_same_address_joins_again() {
    let (mut master, addr) = start_master(&[]);
    let (old, n1_addr) = join(&mut master, &addr, "n1", MASTER_TIMEOUT_MS, &[]);
    old.signal("KILL");
    drop(old);
    // The same id from a new process on the same port, before the old one
    // is lost: accepted as the same node, node_joined again.
    let (_new, new_addr) = join(
        &mut master,
        &addr,
        "n1",
        MASTER_TIMEOUT_MS,
        &["--listen", &n1_addr],
    );
    assert_eq!(new_addr, n1_addr);
    let bound = lost_bound(FAILURES, INTERVAL_MS, PING_TIMEOUT_MS);
    master.expect_silence(bound);
}

#[test]
fn a_lost_node_registering_again_is_recovered() {
    let (mut master, addr) = start_master(&[]);
    let (old, _) = join(&mut master, &addr, "n1", MASTER_TIMEOUT_MS, &[]);
    old.signal("KILL");
    master.expect_event(
        lost_bound(FAILURES, INTERVAL_MS, PING_TIMEOUT_MS),
        lost("n1"),
    );

    let args = ["--master-timeout-ms", MASTER_TIMEOUT_MS];
    let (mut new, _) = Heartbeat::node("n1", &addr, &args);
    new.expect_event(5 * SECOND, json!({"event": "registered", "master": addr}));
    master.expect_event(SECOND, json!({"event": "node_recovered", "node": "n1"}));
    // Recovered once, and live at the new address from then on.
    master.expect_silence(interval() * 8);
}

#[test]
fn nodes_started_before_the_master_join_it() {
    let addr = free_addr();
    let args = ["--master-timeout-ms", MASTER_TIMEOUT_MS];
    let (mut n1, n1_addr) = Heartbeat::node("n1", &addr, &args);
    let (mut n2, n2_addr) = Heartbeat::node("n2", &addr, &args);
    // Both try to register and fail for a while.
    std::thread::sleep(Duration::from_millis(700));

    let (mut master, _) = start_master(&["--listen", &addr]);
    master.expect_all(
        3 * SECOND,
        &[
            json!({"event": "node_joined", "node": "n1", "addr": n1_addr}),
            json!({"event": "node_joined", "node": "n2", "addr": n2_addr}),
        ],
    );
    for node in [&mut n1, &mut n2] {
        node.expect_event(SECOND, json!({"event": "registered", "master": addr}));
    }
}

#[test]
fn a_killed_master_is_lost_and_a_restarted_one_gets_the_nodes_back() {
    let (mut master, addr) = start_master(&[]);
    let (mut n1, n1_addr) = join(&mut master, &addr, "n1", MASTER_TIMEOUT_MS, &[]);
    let (mut n2, n2_addr) = join(&mut master, &addr, "n2", MASTER_TIMEOUT_MS, &[]);

    master.signal("KILL");
    let killed = Instant::now();
    drop(master);
    let master_timeout = Duration::from_millis(MASTER_TIMEOUT_MS.parse().unwrap());
    for node in [&mut n1, &mut n2] {
        node.expect_event(master_timeout + SECOND, json!({"event": "master_lost"}));
        // Silence is the signal, not the closed connection: the last ping
        // came at most an interval before the kill.
        let after = killed.elapsed();
        assert!(
            after >= master_timeout - interval() * 2,
            "master_lost after only {after:?}"
        );
    }

    // Reported once, while the nodes keep trying to register.
    n1.expect_none(Duration::from_millis(1500), "second master_lost", |_| true);

    let (mut master, _) = start_master(&["--listen", &addr]);
    master.expect_all(
        3 * SECOND,
        &[
            json!({"event": "node_joined", "node": "n1", "addr": n1_addr}),
            json!({"event": "node_joined", "node": "n2", "addr": n2_addr}),
        ],
    );
    for node in [&mut n1, &mut n2] {
        node.expect_event(SECOND, json!({"event": "registered", "master": addr}));
    }
}

#[test]
fn a_wrong_or_missing_token_is_rejected_and_the_node_exits_1() {
    let (mut master, addr) = start_master(&["--token", "s3cret"]);
    for (id, args, reason) in [
        ("wrong", &["--token", "guess"][..], "wrong token"),
        ("missing", &[][..], "missing token"),
    ] {
        let mut all = vec!["--master-timeout-ms", MASTER_TIMEOUT_MS];
        all.extend_from_slice(args);
        let (mut node, _) = Heartbeat::node(id, &addr, &all);
        let started = Instant::now();
        let status = node.wait_exit(5 * SECOND);
        assert_eq!(status.code(), Some(1), "{id}: {status}");
        assert!(started.elapsed() < 5 * SECOND);
        let stderr = node.stderr();
        assert!(stderr.contains("rejected"), "{id}: stderr: {stderr}");
        node.expect_none(Duration::ZERO, "registered", |_| true);

        let event = master.expect(SECOND, "registration_rejected", |event| {
            event["event"] == "registration_rejected"
        });
        assert_eq!(event["reason"], reason, "{event}");
        let peer = event["peer"].as_str().expect("peer is a string");
        assert!(peer.starts_with("127.0.0.1:"), "{event}");
        assert_eq!(event.as_object().unwrap().len(), 3, "{event}");
    }
    // The right token is accepted.
    join(
        &mut master,
        &addr,
        "right",
        MASTER_TIMEOUT_MS,
        &["--token", "s3cret"],
    );
}

#[test]
fn bad_input_on_either_port_closes_that_connection_only() {
    let (mut master, master_addr) = start_master(&[]);
    let (mut n1, n1_addr) = join(&mut master, &master_addr, "n1", MASTER_TIMEOUT_MS, &[]);

    let oversized = vec![b'x'; 64 * 1024];
    let start = Instant::now();
    let mut closed_quickly = Vec::new();
    let mut silent = Vec::new();
    for (port, addr) in [("master", &master_addr), ("node", &n1_addr)] {
        for (what, bytes) in [
            ("garbage", &b"\xff\xfe\x00\x01garbage\n"[..]),
            ("non-JSON", b"hello there\n"),
            ("JSON of the wrong kind", b"{\"type\":\"pong\",\"seq\":1}\n"),
            ("JSON but no object", b"[1,2,3]\n"),
            ("an oversized frame", &oversized),
        ] {
            closed_quickly.push(Peer::send(
                addr,
                &format!("{what} on the {port} port"),
                bytes,
            ));
        }
        silent.push(Peer::send(
            addr,
            &format!("a silent peer on the {port} port"),
            b"",
        ));
    }
    for peer in closed_quickly {
        peer.expect_closed_by(start + 2 * SECOND);
    }
    // No event on either side, and the node is still pinged (no
    // master_lost) while the connections above come and go.
    master.expect_silence(Duration::from_millis(1200));
    n1.expect_silence(Duration::ZERO);

    // Silent peers are closed after the idle timeouts: the node's is its
    // master timeout, the master's 5 s.
    let silent_node = silent.pop().expect("pushed second");
    let silent_master = silent.pop().expect("pushed first");
    silent_node.expect_closed_by(start + Duration::from_millis(1000) + 2 * SECOND);
    silent_master.expect_closed_by(start + Duration::from_secs(5) + 2 * SECOND);

    // Both keep working.
    let _n2 = join(&mut master, &master_addr, "n2", MASTER_TIMEOUT_MS, &[]);
    master.expect_none(interval() * 5, "node_lost", is_lost);
    n1.expect_silence(Duration::ZERO);
}

#[test]
fn without_json_events_are_sentences() {
    let mut master = Heartbeat::start("master", &["master", "--listen", "127.0.0.1:0"]);
    let line = master.next_raw_line(5 * SECOND).expect("a first line");
    assert!(
        line.starts_with("master listening for registrations on 127.0.0.1:"),
        "{line}"
    );
}

#[test]
fn ping_stats_come_only_when_asked_for() {
    // Without the flag there are none: see three_nodes_join_and_stay_live,
    // whose master stays silent.
    let (mut master, addr) = start_master(&["--stats-interval-ms", "300"]);
    let _n1 = join(&mut master, &addr, "n1", MASTER_TIMEOUT_MS, &[]);
    let stats = master.expect(5 * SECOND, "ping_stats with answered pings", |event| {
        event["event"] == "ping_stats" && event["answered"].as_u64() > Some(0)
    });
    assert_eq!(stats["failed"], 0, "{stats}");
    let rtts = stats["rtt_us"].as_array().expect("rtt_us is an array");
    assert_eq!(
        Some(rtts.len() as u64),
        stats["answered"].as_u64(),
        "{stats}"
    );
    assert!(
        rtts.iter().all(|rtt| rtt.as_u64() < Some(1_000_000)),
        "{stats}"
    );
}

#[test]
fn an_address_in_use_exits_1_naming_it() {
    let (_master, addr) = start_master(&[]);
    let mut second = Heartbeat::start("second master", &["master", "--json", "--listen", &addr]);
    let status = second.wait_exit(5 * SECOND);
    assert_eq!(status.code(), Some(1), "{status}");
    assert!(second.stderr().contains(&addr), "{}", second.stderr());
}

#[test]
fn the_demo_narrates_a_lost_node_and_exits_0() {
    let mut demo = Heartbeat::start("demo", &[]);
    let started = Instant::now();
    let status = demo.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{status}\n{}", demo.stderr());
    eprintln!("demo took {:?}", started.elapsed());
    let mut story = Vec::new();
    while let Some(line) = demo.next_raw_line(Duration::from_millis(100)) {
        story.push(line);
    }
    let story = story.join("\n");
    assert!(story.contains(r#"master: node "n3" lost"#), "{story}");
    assert!(!story.contains(r#"node "n1" lost"#), "{story}");
    assert!(!story.contains('{'), "sentences, not JSON: {story}");
}

/// `--detector phi`: a killed or frozen node is lost within `10 *
/// interval + ping-timeout + 1 s`, and healthy loopback nodes never are.
fn phi_bound() -> Duration {
    interval() * 10 + Duration::from_millis(PING_TIMEOUT_MS) + SECOND
}

#[test]
fn with_phi_a_killed_node_is_lost_in_time_and_healthy_ones_never() {
    let (mut master, addr) = start_master(&["--detector", "phi"]);
    let _n1 = join(&mut master, &addr, "n1", MASTER_TIMEOUT_MS, &[]);
    let (n2, _) = join(&mut master, &addr, "n2", MASTER_TIMEOUT_MS, &[]);
    let _n3 = join(&mut master, &addr, "n3", MASTER_TIMEOUT_MS, &[]);
    // Fifteen intervals of healthy pings: nothing to report.
    master.expect_silence(interval() * 15);

    n2.signal("KILL");
    let killed = Instant::now();
    let bound = phi_bound();
    master.expect(bound, "node_lost n2", |event| {
        assert!(!is_lost(event) || *event == lost("n2"), "{event}");
        *event == lost("n2")
    });
    eprintln!(
        "phi: n2 lost {:?} after SIGKILL (bound {bound:?})",
        killed.elapsed()
    );
    master.expect_none(interval() * 10, "event after node_lost", |_| true);
}

#[test]
fn with_phi_a_frozen_node_is_lost_in_time_then_recovered() {
    let (mut master, addr) = start_master(&["--detector", "phi", "--phi-threshold", "8.0"]);
    let (n1, _) = join(&mut master, &addr, "n1", MASTER_TIMEOUT_MS, &[]);
    let _n2 = join(&mut master, &addr, "n2", MASTER_TIMEOUT_MS, &[]);
    master.expect_silence(interval() * 10);

    n1.signal("STOP");
    let stopped = Instant::now();
    let bound = phi_bound();
    master.expect_event(bound, lost("n1"));
    eprintln!(
        "phi: n1 lost {:?} after SIGSTOP (bound {bound:?})",
        stopped.elapsed()
    );
    n1.signal("CONT");
    master.expect_event(
        interval() * 10 + 2 * SECOND,
        json!({"event": "node_recovered", "node": "n1"}),
    );
    master.expect_none(interval() * 6, "event after node_recovered", |_| true);
}
