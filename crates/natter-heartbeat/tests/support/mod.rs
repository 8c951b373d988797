//! Running `heartbeat` processes from tests.
//!
//! A [`Heartbeat`] is one child process with its stdout read line by line
//! on a thread (so every wait has a deadline) and its stderr collected (so
//! a full pipe never blocks it, and a failing test can show it). Every
//! stdout line must be one JSON event: that is what `--json` promises.
//! Dropping a `Heartbeat` kills the process, so a failing test leaves no
//! child behind.

#![allow(dead_code)] // Each test file uses its own part of this module.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_heartbeat");

/// One `heartbeat` process.
pub(crate) struct Heartbeat {
    name: String,
    child: Child,
    lines: Receiver<String>,
    /// Until the output is read: where its stdout lines will go.
    unread: Option<mpsc::Sender<String>>,
    stderr: Arc<Mutex<String>>,
    /// Every stdout line read so far, for failure messages.
    seen: Vec<String>,
    stdout_closed: bool,
}

impl Heartbeat {
    /// Starts `heartbeat ARGS`, called `name` in failure messages.
    pub(crate) fn start(name: &str, args: &[&str]) -> Heartbeat {
        let mut heartbeat = Heartbeat::start_with(name, args, &[]);
        heartbeat.read_output();
        heartbeat
    }

    /// Starts `heartbeat ARGS` with the extra environment `env`, and does
    /// not read its stdout and stderr until [`read_output`]: until then
    /// they are pipes nobody reads, which fill up.
    ///
    /// [`read_output`]: Self::read_output
    pub(crate) fn start_with(name: &str, args: &[&str], env: &[(&str, &str)]) -> Heartbeat {
        let child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start heartbeat");
        let (sender, lines) = mpsc::channel();
        Heartbeat {
            name: name.to_owned(),
            child,
            lines,
            unread: Some(sender),
            stderr: Arc::default(),
            seen: Vec::new(),
            stdout_closed: false,
        }
    }

    /// Starts reading stdout (line by line, for the `expect` methods) and
    /// stderr (collected), each on a thread, if that has not begun yet.
    pub(crate) fn read_output(&mut self) {
        let Some(sender) = self.unread.take() else {
            return;
        };
        let stdout = self.child.stdout.take().expect("piped stdout");
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr_pipe = self.child.stderr.take().expect("piped stderr");
        let collected = self.stderr.clone();
        thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            loop {
                match stderr_pipe.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let text = String::from_utf8_lossy(&buffer[..n]);
                        collected.lock().unwrap().push_str(&text);
                    }
                }
            }
        });
    }

    /// The process's resident memory (VmRSS), in KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Starts `heartbeat master --json` on a free loopback port (unless
    /// `args` has `--listen`) and returns it with its address, read from
    /// its first event.
    pub(crate) fn master(args: &[&str]) -> (Heartbeat, String) {
        let mut all = vec!["master", "--json"];
        if !args.contains(&"--listen") {
            all.extend(["--listen", "127.0.0.1:0"]);
        }
        all.extend_from_slice(args);
        let mut master = Heartbeat::start("master", &all);
        let addr = master.expect_listening();
        (master, addr)
    }

    /// Starts `heartbeat node --json --id ID --master MASTER ARGS` and
    /// returns it with its heartbeat address, read from its first event.
    pub(crate) fn node(id: &str, master: &str, args: &[&str]) -> (Heartbeat, String) {
        let mut all = vec!["node", "--json", "--id", id, "--master", master];
        all.extend_from_slice(args);
        let mut node = Heartbeat::start(id, &all);
        let addr = node.expect_listening();
        (node, addr)
    }

    fn expect_listening(&mut self) -> String {
        let event = self.expect(Duration::from_secs(10), "listening", |event| {
            event["event"] == "listening"
        });
        assert_eq!(
            self.seen.len(),
            1,
            "{}: listening is the first event",
            self.name
        );
        let addr = event["addr"].as_str().expect("addr is a string").to_owned();
        assert_eq!(event, json!({"event": "listening", "addr": addr}));
        addr
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next event, if one comes within `within`. Panics on a stdout
    /// line that is not a JSON object with a string field `event`.
    pub(crate) fn next_event(&mut self, within: Duration) -> Option<Value> {
        match self.lines.recv_timeout(within) {
            Ok(line) => {
                self.seen.push(line.clone());
                let value: Value = serde_json::from_str(&line).unwrap_or_else(|error| {
                    panic!("{}: stdout line is not JSON ({error}): {line:?}", self.name)
                });
                assert!(
                    value["event"].is_string(),
                    "{}: stdout line has no string field event: {line}",
                    self.name
                );
                Some(value)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                // The process closed its stdout (it is gone): do not spin.
                self.stdout_closed = true;
                thread::sleep(within.min(Duration::from_millis(50)));
                None
            }
        }
    }

    /// The next stdout line as it is, if one comes within `within` (for
    /// runs without `--json`).
    pub(crate) fn next_raw_line(&mut self, within: Duration) -> Option<String> {
        self.lines.recv_timeout(within).ok()
    }

    /// Reads events until one satisfies `matches`, which is returned.
    /// Panics, describing `what` was awaited, if none does within
    /// `within`.
    pub(crate) fn expect(
        &mut self,
        within: Duration,
        what: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left) {
                Some(event) if matches(&event) => return event,
                Some(_) => {}
                None if Instant::now() >= deadline || self.stdout_closed => {
                    panic!(
                        "{}: no {what} within {within:?}\n{}",
                        self.name,
                        self.report()
                    )
                }
                None => {}
            }
        }
    }

    /// [`expect`](Self::expect)s exactly `event`.
    pub(crate) fn expect_event(&mut self, within: Duration, event: Value) -> Value {
        let what = event.to_string();
        self.expect(within, &what, |seen| *seen == event)
    }

    /// Reads events until every one of `expected` has come, in any order
    /// and among others; panics if that takes longer than `within`.
    pub(crate) fn expect_all(&mut self, within: Duration, expected: &[Value]) {
        let deadline = Instant::now() + within;
        let mut missing: Vec<&Value> = expected.iter().collect();
        while !missing.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left) {
                Some(event) => missing.retain(|wanted| **wanted != event),
                None if Instant::now() >= deadline || self.stdout_closed => panic!(
                    "{}: still missing {missing:?} after {within:?}\n{}",
                    self.name,
                    self.report()
                ),
                None => {}
            }
        }
    }

    /// Reads events for `during`; panics if any satisfies `forbidden`.
    pub(crate) fn expect_none(
        &mut self,
        during: Duration,
        what: &str,
        forbidden: impl Fn(&Value) -> bool,
    ) {
        let deadline = Instant::now() + during;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left) {
                Some(event) => assert!(
                    !forbidden(&event),
                    "{}: unexpected {what}: {event}\n{}",
                    self.name,
                    self.report()
                ),
                None if Instant::now() >= deadline => break,
                None => {}
            }
        }
    }

    /// Asserts that no stdout line at all comes for `during`.
    pub(crate) fn expect_silence(&mut self, during: Duration) {
        self.expect_none(during, "event", |_| true);
    }

    /// Every event read so far.
    pub(crate) fn seen(&self) -> Vec<Value> {
        self.seen
            .iter()
            .map(|line| serde_json::from_str(line).expect("checked when read"))
            .collect()
    }

    /// Sends signal `name` (`KILL`, `TERM`, `STOP`...) with `kill`.
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {}", self.pid());
    }

    /// Waits for the process to exit; panics if it takes longer than
    /// `within`.
    pub(crate) fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}: still running after {within:?}\n{}",
                    self.name,
                    self.report()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the process is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// What the process wrote on stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The events seen and the end of stderr, for failure messages.
    fn report(&self) -> String {
        let stderr = self.stderr();
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "events seen:\n  {}\nstderr (last lines):\n  {}",
            self.seen.join("\n  "),
            tail.join("\n  ")
        )
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        // SIGKILL works on a stopped process too.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address with a port that was free a moment ago.
pub(crate) fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").to_string()
}

/// A connection that sends `bytes` (possibly none) and then waits.
pub(crate) struct Peer {
    what: String,
    stream: TcpStream,
}

impl Peer {
    /// Connects to `addr` and sends `bytes`; `what` names it in messages.
    pub(crate) fn send(addr: &str, what: &str, bytes: &[u8]) -> Peer {
        let mut stream = TcpStream::connect(addr).expect("connect");
        // The server may close before it has read everything (an oversized
        // frame): a failed write means the same as a close.
        let _ = stream.write_all(bytes);
        Peer {
            what: what.to_owned(),
            stream,
        }
    }

    /// Asserts that the server closes this connection by `deadline`,
    /// without sending anything first.
    pub(crate) fn expect_closed_by(mut self, deadline: Instant) {
        let mut buffer = [0u8; 256];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{}: connection still open", self.what);
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut buffer) {
                Ok(0) => return,
                Ok(n) => panic!("{}: got a reply: {:?}", self.what, &buffer[..n]),
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return, // reset: closed too
            }
        }
    }
}

/// `(failures + 1) * interval + ping_timeout + 1 s`: the promised bound on
/// reporting a killed or frozen node lost.
pub(crate) fn lost_bound(failures: u32, interval_ms: u64, ping_timeout_ms: u64) -> Duration {
    Duration::from_millis((u64::from(failures) + 1) * interval_ms + ping_timeout_ms + 1000)
}

/// The ping interval the process tests run with: short, so that a whole
/// file runs in seconds.
pub(crate) const INTERVAL_MS: u64 = 200;
/// Failed pings before a node is lost.
pub(crate) const FAILURES: u32 = 3;
/// The ping timeout: by default, the interval.
pub(crate) const PING_TIMEOUT_MS: u64 = INTERVAL_MS;

pub(crate) const SECOND: Duration = Duration::from_secs(1);

pub(crate) fn interval() -> Duration {
    Duration::from_millis(INTERVAL_MS)
}

/// How long a master started by [`start_master`] may take to report a
/// dead node lost.
pub(crate) fn lost_in_time() -> Duration {
    lost_bound(FAILURES, INTERVAL_MS, PING_TIMEOUT_MS)
}

/// A master pinging every [`INTERVAL_MS`], a node lost after
/// [`FAILURES`] failed pings; `extra` arguments after those.
pub(crate) fn start_master(extra: &[&str]) -> (Heartbeat, String) {
    let interval = INTERVAL_MS.to_string();
    let failures = FAILURES.to_string();
    let mut args = vec!["--interval-ms", &interval, "--failures", &failures];
    args.extend_from_slice(extra);
    Heartbeat::master(&args)
}

/// Starts node `id` for the master at `master_addr`, losing the master
/// after `master_timeout_ms` of silence, with `extra` arguments; waits
/// until both sides report the registration. Returns the node with its
/// heartbeat address.
pub(crate) fn join(
    master: &mut Heartbeat,
    master_addr: &str,
    id: &str,
    master_timeout_ms: &str,
    extra: &[&str],
) -> (Heartbeat, String) {
    let mut args = vec!["--master-timeout-ms", master_timeout_ms];
    args.extend_from_slice(extra);
    let (mut node, addr) = Heartbeat::node(id, master_addr, &args);
    node.expect_event(
        5 * SECOND,
        json!({"event": "registered", "master": master_addr}),
    );
    master.expect_event(
        5 * SECOND,
        json!({"event": "node_joined", "node": id, "addr": addr}),
    );
    (node, addr)
}

/// Whether `event` is a `kind` event about node `node`.
pub(crate) fn event_is(event: &Value, kind: &str, node: &str) -> bool {
    event["event"] == kind && event["node"] == node
}

/// Runs `test` (a whole test, blocking) with a time limit: panics if it
/// takes longer than `limit`, and passes on its panic if it fails.
/// Every wait inside is bounded too; this is the backstop.
pub(crate) fn bounded<T: Send + 'static>(
    limit: Duration,
    test: impl FnOnce() -> T + Send + 'static,
) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime for the time limit");
    let outcome = runtime
        .block_on(async { tokio::time::timeout(limit, tokio::task::spawn_blocking(test)).await });
    // A test still running holds its processes; they are killed when its
    // thread drops them, or when this test binary exits.
    runtime.shutdown_background();
    match outcome {
        Ok(Ok(value)) => value,
        Ok(Err(failed)) => std::panic::resume_unwind(failed.into_panic()),
        Err(_) => panic!("the test took longer than {limit:?}"),
    }
}

/// What the master answered to a [`flood`] of registrations.
#[derive(Debug, Default)]
pub(crate) struct FloodAnswers {
    /// `accepted` answers.
    pub(crate) accepted: usize,
    /// `rejected` answers, by reason.
    pub(crate) rejected: std::collections::BTreeMap<String, usize>,
}

/// Registers `count` fake nodes `PREFIX-0`, `PREFIX-1`... with the master
/// at `master`, all at once: `connections` connections each send their
/// share of `register` lines in one write, then read the answers. Each
/// fake gives a heartbeat address of its own on loopback (127.x.y.z) at a
/// port where nothing listens: a dead node.
pub(crate) fn flood(master: &str, prefix: &str, count: usize, connections: usize) -> FloodAnswers {
    let dead_port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("local addr").port()
    };
    let per_connection = count.div_ceil(connections);
    let workers: Vec<_> = (0..connections)
        .map(|connection| {
            let master = master.to_owned();
            let prefix = prefix.to_owned();
            thread::spawn(move || {
                let ids = (connection * per_connection..(connection + 1) * per_connection)
                    .take_while(|&i| i < count);
                let mut lines = String::new();
                let mut sent = 0;
                for i in ids {
                    let addr = format!(
                        "127.{}.{}.{}:{dead_port}",
                        1 + i / 62_500,
                        (i / 250) % 250,
                        i % 250 + 1
                    );
                    let register = json!({"type": "register", "id": format!("{prefix}-{i}"), "heartbeat_addr": addr});
                    lines.push_str(&register.to_string());
                    lines.push('\n');
                    sent += 1;
                }
                let mut stream = TcpStream::connect(&master).expect("connect to the master");
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .expect("read timeout");
                stream.write_all(lines.as_bytes()).expect("send registrations");
                let mut answers = Vec::with_capacity(sent);
                for line in BufReader::new(stream).lines().take(sent) {
                    let line = line.expect("an answer from the master");
                    answers.push(serde_json::from_str::<Value>(&line).expect("a JSON answer"));
                }
                answers
            })
        })
        .collect();
    let mut outcome = FloodAnswers::default();
    for worker in workers {
        for answer in worker.join().expect("a flooding thread") {
            match answer["type"].as_str() {
                Some("accepted") => outcome.accepted += 1,
                _ => {
                    let reason = answer["reason"].as_str().unwrap_or("?").to_owned();
                    *outcome.rejected.entry(reason).or_default() += 1;
                }
            }
        }
    }
    outcome
}

/// Sends one `register` for `id` at `heartbeat_addr` to the master at
/// `master` on a connection of its own, and returns the answer.
pub(crate) fn register(master: &str, id: &str, heartbeat_addr: &str) -> Value {
    let mut stream = TcpStream::connect(master).expect("connect to the master");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let request = json!({"type": "register", "id": id, "heartbeat_addr": heartbeat_addr});
    stream
        .write_all(format!("{request}\n").as_bytes())
        .expect("send a registration");
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .expect("an answer from the master");
    serde_json::from_str(&answer).expect("a JSON answer")
}

/// Registers `count` fake nodes `PREFIX-0`... as a rude peer would: each
/// on a connection of its own that is reset (RST) right after the
/// `register` line is sent, without reading the answer. Some of them may
/// not be registered at all (the reset can overtake the line).
pub(crate) fn flood_and_reset(master: &str, prefix: &str, count: usize) {
    let dead_port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("local addr").port()
    };
    let threads = 10;
    let workers: Vec<_> = (0..threads)
        .map(|thread| {
            let master = master.to_owned();
            let prefix = prefix.to_owned();
            thread::spawn(move || {
                for i in (thread..count).step_by(threads) {
                    let addr = format!("127.3.{}.{}:{dead_port}", (i / 250) % 250, i % 250 + 1);
                    let register = json!({"type": "register", "id": format!("{prefix}-{i}"), "heartbeat_addr": addr});
                    let Ok(mut stream) = TcpStream::connect(&master) else {
                        continue;
                    };
                    let _ = stream.write_all(format!("{register}\n").as_bytes());
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a flooding thread");
    }
}
