//! Smoke tests of the measurement tools: every mode runs to the end on
//! tiny loads and reports what it should. No timing is asserted (this
//! machine's numbers mean nothing in a test); only that the runs complete,
//! every echo checks out, and the reports and tables have their parts.
//!
//! natter's echo example is another crate's target, so the suite runs here
//! with the servers of this crate only (`--servers raw`); the full suite is
//! run by hand (BENCHMARKS.md).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use natter_bench::LoadReport;

fn bin(name: &str) -> PathBuf {
    match name {
        "loadgen" => env!("CARGO_BIN_EXE_loadgen").into(),
        "suite" => env!("CARGO_BIN_EXE_suite").into(),
        "baseline-raw" => env!("CARGO_BIN_EXE_baseline-raw").into(),
        "baseline-raw-tls" => env!("CARGO_BIN_EXE_baseline-raw-tls").into(),
        other => panic!("no binary {other}"),
    }
}

/// A server of this crate on a free port, killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(name: &str, args: &[&str]) -> Server {
        use std::io::BufRead;
        let mut child = Command::new(bin(name))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the server's first line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line {line:?}"))
            .to_owned();
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a program to its end, killing it after `limit`.
fn run(program: &Path, args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the program");
    let started = Instant::now();
    while child.try_wait().expect("waiting").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!(
                "{} {args:?} still running after {limit:?}",
                program.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("its output");
    assert!(
        output.status.success(),
        "{} {args:?} failed: {}\n{}",
        program.display(),
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    output
}

/// Runs loadgen against `addr` and parses its report.
fn loadgen(addr: &str, args: &[&str]) -> LoadReport {
    let addr = format!("--addr={addr}");
    let mut all = vec![addr.as_str(), "--duration-secs=0.3", "--warmup-secs=0.1"];
    all.extend_from_slice(args);
    let output = run(&bin("loadgen"), &all, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().expect("a report")).expect("a JSON report")
}

/// A folder of its own, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("natter-bench-smoke-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).expect("a temporary folder");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn loadgen_natter_client_checks_every_answer() {
    let server = Server::start("baseline-raw", &[]);
    let report = loadgen(
        &server.addr,
        &["--client=natter", "--connections=4", "--in-flight=16"],
    );
    assert_eq!(report.client, "natter");
    assert!(report.frames > 0, "{report:?}");
}

#[test]
fn loadgen_rate_mode_keeps_to_its_schedule() {
    let server = Server::start("baseline-raw", &[]);
    let report = loadgen(
        &server.addr,
        &["--mode=rate", "--rate=2000", "--burst=4", "--connections=4"],
    );
    assert_eq!(report.mode, "rate");
    assert_eq!(report.target_rate, 2000.0);
    assert!(report.frames > 0, "{report:?}");
}

#[test]
fn loadgen_speaks_tls_to_the_tls_baseline() {
    let dir = TempDir::new("tls");
    let files = natter_bench::tls::generate(&dir.0).expect("certificates");
    let (cert, key, ca) = (
        files.cert.display().to_string(),
        files.key.display().to_string(),
        files.ca.display().to_string(),
    );
    let server = Server::start(
        "baseline-raw-tls",
        &["--tls-cert", &cert, "--tls-key", &key],
    );
    let ca = format!("--tls-ca={ca}");
    let report = loadgen(&server.addr, &[&ca, "--connections=2", "--in-flight=4"]);
    assert!(report.frames > 0, "{report:?}");
    let report = loadgen(
        &server.addr,
        &[&ca, "--client=natter", "--connections=2", "--in-flight=4"],
    );
    assert!(report.frames > 0, "{report:?}");
}

#[test]
fn suite_quick_runs_the_client_open_loop_and_tls_scenarios() {
    let output = run(
        &bin("suite"),
        &[
            "--quick",
            "--servers=raw",
            "--scenarios=client,open-loop,tls-throughput",
        ],
        Duration::from_secs(300),
    );
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("| requests/s |"), "{table}");
    assert!(table.contains("| 90 % |"), "{table}");
    assert!(table.contains("| tls-throughput |"), "{table}");
}

#[test]
fn suite_callgrind_quick_counts_instructions() {
    let valgrind = Command::new("valgrind")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !valgrind.is_ok_and(|status| status.success()) {
        eprintln!("valgrind is not installed: skipped");
        return;
    }
    let output = run(
        &bin("suite"),
        &[
            "--callgrind",
            "--cg-frames=1000,2000",
            "--servers=raw",
            "--scenarios=throughput,client",
        ],
        Duration::from_secs(600),
    );
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("| raw |"), "{table}");
    assert!(table.contains("| natter ClientService |"), "{table}");
}
