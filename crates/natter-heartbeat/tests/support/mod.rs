//! Running `heartbeat` processes from tests.
//!
//! A [`Heartbeat`] is one child process with its stdout read line by line
//! on a thread (so every wait has a deadline) and its stderr collected (so
//! a full pipe never blocks it, and a failing test can show it). Every
//! stdout line must be one JSON event: that is the contract of `--json`.
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
    stderr: Arc<Mutex<String>>,
    /// Every stdout line read so far, for failure messages.
    seen: Vec<String>,
    stdout_closed: bool,
}

impl Heartbeat {
    /// Starts `heartbeat ARGS`, called `name` in failure messages.
    pub(crate) fn start(name: &str, args: &[&str]) -> Heartbeat {
        let mut child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start heartbeat");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let collected = stderr.clone();
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
        Heartbeat {
            name: name.to_owned(),
            child,
            lines,
            stderr,
            seen: Vec::new(),
            stdout_closed: false,
        }
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

/// `(failures + 1) * interval + ping_timeout + 1 s`: the contract's bound on
/// reporting a killed or frozen node lost.
pub(crate) fn lost_bound(failures: u32, interval_ms: u64, ping_timeout_ms: u64) -> Duration {
    Duration::from_millis((u64::from(failures) + 1) * interval_ms + ping_timeout_ms + 1000)
}
