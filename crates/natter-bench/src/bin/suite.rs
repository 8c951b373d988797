//! The comparison suite: natter's echo example against the two baselines,
//! scenario by scenario, servers interleaved, medians and ratios.
//!
//! ```text
//! cargo build --release --example echo -p natter
//! cargo build --release -p natter-bench
//! target/release/suite [--reps 5] [--json bench.json] [--quick]
//! ```
//!
//! The suite builds nothing: it runs the binaries next to its own
//! (`loadgen`, `baseline-framed`, `baseline-raw`, and `examples/echo`),
//! and says how to build them if one is missing. For every scenario and
//! repetition it starts each server afresh (natter, framed, raw, natter,
//! ...), runs `loadgen` against it and stops it, so slow drifts of the
//! machine fall on all three alike. Servers run pinned to one core and the
//! load generator to another (`taskset`, when present), every server with
//! the same number of tokio worker threads (`TOKIO_WORKER_THREADS`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use natter_bench::LoadReport;
use serde::Serialize;
use serde_json::json;

/// Runs natter's echo example and two hand-written baselines under the same
/// load and prints medians with ratios.
#[derive(Debug, Parser)]
struct Args {
    /// Repetitions of every scenario for every server.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// A few seconds in all, with tiny sizes: a smoke test, not a
    /// measurement.
    #[arg(long)]
    quick: bool,
    /// Also write every run and the medians here, as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where the binaries are (default: the folder of this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Scenarios to run (default: all), comma-separated.
    #[arg(long, value_enum, value_delimiter = ',')]
    scenarios: Vec<Scenario>,
    /// Servers to run (default: all), comma-separated.
    #[arg(long, value_enum, value_delimiter = ',')]
    servers: Vec<ServerKind>,
    /// Measurement window of each timed run, seconds.
    #[arg(long, default_value_t = 3.0)]
    duration_secs: f64,
    /// Load before each window, seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Connections held open in the idle scenario.
    #[arg(long, default_value_t = 10_000)]
    idle_connections: usize,
    /// The core the servers run on.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// The core the load generator runs on.
    #[arg(long, default_value_t = 1)]
    load_cpu: usize,
    /// Tokio worker threads of every server.
    #[arg(long, default_value_t = 1)]
    worker_threads: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Scenario {
    Throughput,
    Latency,
    Bandwidth,
    Idle,
    Churn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum ServerKind {
    Natter,
    /// natter with its default stack on (idle and handler timeouts, panic
    /// isolation) plus a HandlerTimeoutLayer, same echo (throughput and
    /// latency scenarios only).
    Layered,
    Framed,
    Raw,
}

impl ServerKind {
    const ALL: [ServerKind; 4] = [
        ServerKind::Natter,
        ServerKind::Layered,
        ServerKind::Framed,
        ServerKind::Raw,
    ];

    fn name(self) -> &'static str {
        match self {
            ServerKind::Natter => "natter",
            ServerKind::Layered => "layered",
            ServerKind::Framed => "framed",
            ServerKind::Raw => "raw",
        }
    }

    fn binary(self, bin_dir: &Path) -> PathBuf {
        match self {
            ServerKind::Natter => bin_dir.join("examples").join("echo"),
            ServerKind::Layered => bin_dir.join("natter-layered"),
            ServerKind::Framed => bin_dir.join("baseline-framed"),
            ServerKind::Raw => bin_dir.join("baseline-raw"),
        }
    }

    fn args(self) -> Vec<String> {
        let mut args = vec!["--listen".to_owned(), "127.0.0.1:0".to_owned()];
        if self == ServerKind::Natter {
            // Room for the idle scenario's connections.
            args.extend(["--max-connections".to_owned(), "1000000".to_owned()]);
        }
        args
    }

    /// Whether this server takes part in `scenario`: the layered server
    /// only answers the question "what do the layers cost per frame".
    fn runs(self, scenario: Scenario) -> bool {
        self != ServerKind::Layered || matches!(scenario, Scenario::Throughput | Scenario::Latency)
    }
}

/// Whether more or less of a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Better {
    Higher,
    Lower,
}

/// One number a scenario yields per run.
struct Metric {
    name: &'static str,
    unit: &'static str,
    better: Better,
    value: fn(&Outcome) -> f64,
}

/// The result of one run of one server.
#[derive(Debug, Clone, Serialize)]
struct Outcome {
    scenario: Scenario,
    server: ServerKind,
    rep: usize,
    report: LoadReport,
    /// Idle scenario: server RSS per connection, bytes.
    rss_per_connection: Option<f64>,
    rss_before_kib: Option<u64>,
    rss_after_kib: Option<u64>,
}

impl Scenario {
    const ALL: [Scenario; 5] = [
        Scenario::Throughput,
        Scenario::Latency,
        Scenario::Bandwidth,
        Scenario::Idle,
        Scenario::Churn,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Throughput => "throughput",
            Scenario::Latency => "latency",
            Scenario::Bandwidth => "bandwidth",
            Scenario::Idle => "idle",
            Scenario::Churn => "churn",
        }
    }

    /// What the load looks like, for the table.
    fn shape(self, plan: &Plan) -> String {
        match self {
            Scenario::Throughput => "64 conns x 16 in flight x 64 B".into(),
            Scenario::Latency => "1 conn, 1 in flight, 64 B".into(),
            Scenario::Bandwidth => "4 conns x 8 in flight x 16 KiB".into(),
            Scenario::Idle => format!("{} idle conns (one echo each)", plan.idle_connections),
            Scenario::Churn => "16 workers: connect, 64 B echo, close".into(),
        }
    }

    fn loadgen_args(self, plan: &Plan) -> Vec<String> {
        let (mode, connections, in_flight, size) = match self {
            Scenario::Throughput => ("echo", 64, 16, 64),
            Scenario::Latency => ("echo", 1, 1, 64),
            Scenario::Bandwidth => ("echo", 4, 8, 16 * 1024),
            Scenario::Idle => ("idle", plan.idle_connections, 1, 64),
            Scenario::Churn => ("churn", 16, 1, 64),
        };
        let mut args = vec![
            format!("--mode={mode}"),
            format!("--connections={connections}"),
            format!("--in-flight={in_flight}"),
            format!("--size={size}"),
            format!("--duration-secs={}", plan.duration_secs),
            format!("--warmup-secs={}", plan.warmup_secs),
        ];
        if self == Scenario::Churn {
            // Bounded in count too: every churned connection leaves a
            // TIME_WAIT socket behind on the client side.
            args.push("--max-frames=200000".into());
        }
        args
    }

    fn metrics(self) -> Vec<Metric> {
        fn rate(outcome: &Outcome) -> f64 {
            outcome.report.frames_per_sec
        }
        fn p50(outcome: &Outcome) -> f64 {
            outcome.report.p50_us
        }
        fn p99(outcome: &Outcome) -> f64 {
            outcome.report.p99_us
        }
        fn p999(outcome: &Outcome) -> f64 {
            outcome.report.p999_us
        }
        fn mb(outcome: &Outcome) -> f64 {
            outcome.report.mb_per_sec
        }
        fn rss(outcome: &Outcome) -> f64 {
            outcome.rss_per_connection.unwrap_or(f64::NAN)
        }
        let metric = |name, unit, better, value| Metric {
            name,
            unit,
            better,
            value,
        };
        match self {
            Scenario::Throughput => vec![
                metric("frames/s", "frames/s", Better::Higher, rate),
                metric("p99", "us", Better::Lower, p99),
            ],
            Scenario::Latency => vec![
                metric("p50", "us", Better::Lower, p50),
                metric("p99", "us", Better::Lower, p99),
                metric("p999", "us", Better::Lower, p999),
            ],
            Scenario::Bandwidth => vec![metric("MB/s", "MB/s", Better::Higher, mb)],
            Scenario::Idle => vec![metric("RSS/conn", "bytes", Better::Lower, rss)],
            Scenario::Churn => vec![
                metric("conns/s", "conns/s", Better::Higher, rate),
                metric("p99", "us", Better::Lower, p99),
            ],
        }
    }

    /// Issue 7's target for a metric, as text, and whether the medians
    /// meet it (`None`: no target).
    fn target(self, metric: &str, natter: f64, framed: f64, raw: f64) -> Option<(String, bool)> {
        match (self, metric) {
            (Scenario::Throughput, "frames/s") | (Scenario::Bandwidth, "MB/s") => Some((
                "≥ 0.95x raw and > framed".into(),
                natter >= 0.95 * raw && natter > framed,
            )),
            (Scenario::Latency, "p99") => Some(("≤ 1.1x raw".into(), natter <= 1.1 * raw)),
            (Scenario::Idle, "RSS/conn") => {
                Some(("≤ framed + 1 KiB".into(), natter <= framed + 1024.0))
            }
            _ => None,
        }
    }
}

/// Sizes and durations of this invocation.
#[derive(Debug, Clone, Serialize)]
struct Plan {
    reps: usize,
    duration_secs: f64,
    warmup_secs: f64,
    idle_connections: usize,
    server_cpu: usize,
    load_cpu: usize,
    worker_threads: usize,
    pinned: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("suite: {error}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, String>;

fn run(args: Args) -> Result<bool> {
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .map_err(|error| format!("cannot find my own binary: {error}"))?
            .parent()
            .ok_or("my binary has no folder")?
            .to_path_buf(),
    };
    let loadgen = bin_dir.join("loadgen");
    let servers = if args.servers.is_empty() {
        ServerKind::ALL.to_vec()
    } else {
        args.servers.clone()
    };
    let scenarios = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios.clone()
    };
    let missing: Vec<_> = servers
        .iter()
        .map(|server| server.binary(&bin_dir))
        .chain([loadgen.clone()])
        .filter(|path| !path.is_file())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "missing {}.\nThe suite builds nothing; build everything first (same target folder):\n  \
             cargo build --release --example echo -p natter\n  cargo build --release -p natter-bench",
            missing
                .iter()
                .map(|path| path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    let limit = natter_bench::raise_fd_limit();
    let pinned = Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    let plan = if args.quick {
        Plan {
            reps: 1,
            duration_secs: 0.3,
            warmup_secs: 0.1,
            idle_connections: 200,
            server_cpu: args.server_cpu,
            load_cpu: args.load_cpu,
            worker_threads: args.worker_threads,
            pinned,
        }
    } else {
        Plan {
            reps: args.reps.max(1),
            duration_secs: args.duration_secs,
            warmup_secs: args.warmup_secs,
            idle_connections: args.idle_connections,
            server_cpu: args.server_cpu,
            load_cpu: args.load_cpu,
            worker_threads: args.worker_threads,
            pinned,
        }
    };
    if scenarios.contains(&Scenario::Idle) && (limit as usize) < plan.idle_connections + 100 {
        return Err(format!(
            "the idle scenario needs {} open files, the limit is {limit}: raise it (`ulimit -n {}`) \
             or pass a smaller --idle-connections",
            plan.idle_connections + 100,
            plan.idle_connections + 100
        ));
    }
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loadavg = loadavg
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let setup = if plan.pinned {
        format!(
            "servers pinned to CPU {} (taskset -c {}), loadgen to CPU {}; TOKIO_WORKER_THREADS={} for every server; loadgen on one thread",
            plan.server_cpu, plan.server_cpu, plan.load_cpu, plan.worker_threads
        )
    } else {
        format!(
            "taskset not found: NOT pinned; TOKIO_WORKER_THREADS={} for every server; loadgen on one thread",
            plan.worker_threads
        )
    };
    println!(
        "# natter benchmark suite{}",
        if args.quick {
            " (--quick: smoke test, not a measurement)"
        } else {
            ""
        }
    );
    println!();
    println!("- {setup}");
    println!(
        "- {} repetition(s), servers interleaved; {} s window after {} s warm-up; load average at start: {loadavg}",
        plan.reps, plan.duration_secs, plan.warmup_secs
    );
    println!();

    let logs = bin_dir.join("bench-logs");
    std::fs::create_dir_all(&logs)
        .map_err(|error| format!("cannot create {}: {error}", logs.display()))?;
    let mut outcomes = Vec::new();
    for &scenario in &scenarios {
        for rep in 0..plan.reps {
            for &server in servers.iter().filter(|server| server.runs(scenario)) {
                let outcome = run_one(scenario, server, rep, &plan, &bin_dir, &loadgen, &logs)
                    .map_err(|error| {
                        format!(
                            "{} / {} / rep {rep}: {error}",
                            scenario.name(),
                            server.name()
                        )
                    })?;
                eprintln!(
                    "  {:<10} {:<6} rep {rep}: {:>10.0} frames/s {:>8.1} MB/s p50 {:>7.1} us p99 {:>7.1} us{}",
                    scenario.name(),
                    server.name(),
                    outcome.report.frames_per_sec,
                    outcome.report.mb_per_sec,
                    outcome.report.p50_us,
                    outcome.report.p99_us,
                    outcome
                        .rss_per_connection
                        .map(|rss| format!(" RSS/conn {rss:.0} B"))
                        .unwrap_or_default()
                );
                outcomes.push(outcome);
            }
        }
    }

    let (table, medians, all_met) = summarize(&scenarios, &servers, &outcomes, &plan);
    println!("{table}");
    if let Some(path) = &args.json {
        let document = json!({
            "setup": setup,
            "loadavg_at_start": loadavg,
            "plan": plan,
            "all_targets_met": all_met,
            "medians": medians,
            "runs": outcomes,
        });
        let text = serde_json::to_string_pretty(&document).map_err(|error| error.to_string())?;
        std::fs::write(path, text)
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
        println!("JSON: {}", path.display());
    }
    Ok(true)
}

/// One server, started for one run.
struct Server {
    child: Child,
    addr: SocketAddr,
    // Kept open so the server never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Server {
    fn start(kind: ServerKind, plan: &Plan, bin_dir: &Path, logs: &Path) -> Result<Server> {
        let log = File::create(logs.join(format!("{}.stderr", kind.name())))
            .map_err(|error| error.to_string())?;
        let mut command = pinned_command(plan, plan.server_cpu, &kind.binary(bin_dir));
        command
            .args(kind.args())
            .env("TOKIO_WORKER_THREADS", plan.worker_threads.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = command
            .spawn()
            .map_err(|error| format!("cannot start the server: {error}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (line, stdout) = match read_line_within(stdout, Duration::from_secs(10)) {
            Ok(pair) => pair,
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(error);
            }
        };
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|addr| addr.parse().ok())
            .ok_or_else(|| {
                format!("the server's first line was {line:?}, not `listening on IP:PORT`")
            })?;
        Ok(Server {
            child,
            addr,
            _stdout: stdout,
        })
    }

    /// VmRSS of the server process, KiB.
    fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .map_err(|error| format!("cannot read the server's /proc status: {error}"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| "no VmRSS in /proc status".into())
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `taskset -c CPU program` when pinning, else `program`.
fn pinned_command(plan: &Plan, cpu: usize, program: &Path) -> Command {
    if plan.pinned {
        let mut command = Command::new("taskset");
        command.arg("-c").arg(cpu.to_string()).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Reads one line of `stdout` in a helper thread, giving up after `limit`.
fn read_line_within(
    stdout: ChildStdout,
    limit: Duration,
) -> Result<(String, BufReader<ChildStdout>)> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let result = reader.read_line(&mut line);
        let _ = sender.send((result, line, reader));
    });
    match receiver.recv_timeout(limit) {
        Ok((Ok(1..), line, reader)) => Ok((line, reader)),
        Ok((Ok(_), _, _)) => Err("the program closed its stdout without a line".into()),
        Ok((Err(error), _, _)) => Err(format!("cannot read the program's stdout: {error}")),
        Err(_) => Err(format!("no line on stdout within {limit:?}")),
    }
}

fn run_one(
    scenario: Scenario,
    kind: ServerKind,
    rep: usize,
    plan: &Plan,
    bin_dir: &Path,
    loadgen: &Path,
    logs: &Path,
) -> Result<Outcome> {
    let server = Server::start(kind, plan, bin_dir, logs)?;
    let outcome = drive(scenario, kind, rep, plan, loadgen, &server);
    server.stop();
    outcome
}

fn drive(
    scenario: Scenario,
    kind: ServerKind,
    rep: usize,
    plan: &Plan,
    loadgen: &Path,
    server: &Server,
) -> Result<Outcome> {
    let mut command = pinned_command(plan, plan.load_cpu, loadgen);
    command
        .arg(format!("--addr={}", server.addr))
        .args(scenario.loadgen_args(plan))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut outcome = Outcome {
        scenario,
        server: kind,
        rep,
        report: LoadReport::default(),
        rss_per_connection: None,
        rss_before_kib: None,
        rss_after_kib: None,
    };
    if scenario == Scenario::Idle {
        // Let the server finish starting up before the baseline reading.
        std::thread::sleep(Duration::from_millis(300));
        let before = server.rss_kib()?;
        command.stdin(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|error| format!("cannot start loadgen: {error}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let ready = read_line_within(stdout, Duration::from_secs(120));
        let measured = ready.and_then(|(line, _)| {
            let report: LoadReport = serde_json::from_str(line.trim())
                .map_err(|error| format!("bad loadgen report {line:?}: {error}"))?;
            // Let the server settle before reading its memory.
            std::thread::sleep(Duration::from_millis(500));
            let after = server.rss_kib()?;
            Ok((report, after))
        });
        drop(stdin); // releases the connections
        let finished = wait_within(&mut child, Duration::from_secs(30));
        let (report, after) =
            measured.map_err(|error| format!("{error}{}", stderr_of(&mut child)))?;
        finished?;
        let connections = report.connections.max(1) as f64;
        outcome.rss_per_connection = Some((after as f64 - before as f64) * 1024.0 / connections);
        outcome.rss_before_kib = Some(before);
        outcome.rss_after_kib = Some(after);
        outcome.report = report;
        return Ok(outcome);
    }
    let started = Instant::now();
    let child = command
        .spawn()
        .map_err(|error| format!("cannot start loadgen: {error}"))?;
    let limit =
        Duration::from_secs_f64(plan.warmup_secs + plan.duration_secs) + Duration::from_secs(60);
    let output = output_within(child, limit)?;
    if !output.status.success() {
        return Err(format!(
            "loadgen failed after {:?}: {}",
            started.elapsed(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    outcome.report = serde_json::from_str(line)
        .map_err(|error| format!("bad loadgen report {line:?}: {error}"))?;
    Ok(outcome)
}

fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Some(stderr) = child.stderr.as_mut() {
        let _ = stderr.read_to_string(&mut text);
    }
    if text.is_empty() {
        text
    } else {
        format!("; loadgen said: {}", text.trim())
    }
}

/// Waits for `child` to exit, killing it after `limit`.
fn wait_within(child: &mut Child, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(format!("loadgen exited with {status}{}", stderr_of(child)));
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("loadgen still running after {limit:?}; killed"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(error) => return Err(error.to_string()),
        }
    }
}

/// `wait_with_output`, killing the child after `limit`.
fn output_within(child: Child, limit: Duration) -> Result<std::process::Output> {
    let id = child.id();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(limit) {
        Ok(output) => output.map_err(|error| error.to_string()),
        Err(_) => {
            // The waiting thread owns the child; kill it by id.
            let _ = Command::new("kill").arg("-9").arg(id.to_string()).status();
            Err(format!("loadgen still running after {limit:?}; killed"))
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The markdown table of medians, the same as JSON, and whether every
/// target with all three servers measured was met.
fn summarize(
    scenarios: &[Scenario],
    servers: &[ServerKind],
    outcomes: &[Outcome],
    plan: &Plan,
) -> (String, Vec<serde_json::Value>, bool) {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| scenario | load | metric | natter | framed | raw | natter/framed | natter/raw | target | met |"
    );
    let _ = writeln!(table, "|---|---|---|---:|---:|---:|---:|---:|---|---|");
    let mut medians = Vec::new();
    let mut all_met = true;
    for &scenario in scenarios {
        for metric in scenario.metrics() {
            let mut by_server = BTreeMap::new();
            for &server in servers {
                let mut values: Vec<f64> = outcomes
                    .iter()
                    .filter(|outcome| outcome.scenario == scenario && outcome.server == server)
                    .map(metric.value)
                    .collect();
                by_server.insert(server, median(&mut values));
            }
            let get = |server| by_server.get(&server).copied().unwrap_or(f64::NAN);
            let (natter, framed, raw) = (
                get(ServerKind::Natter),
                get(ServerKind::Framed),
                get(ServerKind::Raw),
            );
            let target = scenario.target(metric.name, natter, framed, raw);
            let measured = !natter.is_nan() && !framed.is_nan() && !raw.is_nan();
            let verdict = match (&target, measured) {
                (Some((_, met)), true) => {
                    all_met &= *met;
                    if *met { "yes" } else { "**no**" }
                }
                (Some(_), false) => "n/a",
                (None, _) => "",
            };
            let number = |value: f64| {
                if value.is_nan() {
                    "-".to_owned()
                } else if value >= 100.0 {
                    format!("{value:.0}")
                } else {
                    format!("{value:.1}")
                }
            };
            let ratio = |a: f64, b: f64| {
                if a.is_nan() || b.is_nan() || b == 0.0 {
                    "-".to_owned()
                } else {
                    format!("{:.2}", a / b)
                }
            };
            let _ = writeln!(
                table,
                "| {} | {} | {} ({}, {} is better) | {} | {} | {} | {} | {} | {} | {} |",
                scenario.name(),
                scenario.shape(plan),
                metric.name,
                metric.unit,
                if metric.better == Better::Higher {
                    "higher"
                } else {
                    "lower"
                },
                number(natter),
                number(framed),
                number(raw),
                ratio(natter, framed),
                ratio(natter, raw),
                target.as_ref().map(|(text, _)| text.as_str()).unwrap_or(""),
                verdict
            );
            let finite = |value: f64| if value.is_nan() { None } else { Some(value) };
            medians.push(json!({
                "scenario": scenario,
                "metric": metric.name,
                "unit": metric.unit,
                "better": metric.better,
                "natter": finite(natter),
                "framed": finite(framed),
                "raw": finite(raw),
                "natter_over_framed": finite(natter / framed),
                "natter_over_raw": finite(natter / raw),
                "target": target.as_ref().map(|(text, _)| text.clone()),
                "met": target.as_ref().filter(|_| measured).map(|(_, met)| *met),
            }));
        }
    }
    layer_table(scenarios, outcomes, &mut table, &mut medians, &mut all_met);
    (table, medians, all_met)
}

/// The cost of the default layer stack end to end: natter with its
/// defaults on plus a HandlerTimeoutLayer against the echo example (its
/// timeouts off), same handler.
fn layer_table(
    scenarios: &[Scenario],
    outcomes: &[Outcome],
    table: &mut String,
    medians: &mut Vec<serde_json::Value>,
    all_met: &mut bool,
) {
    let median_of = |scenario: Scenario, server: ServerKind, value: fn(&Outcome) -> f64| {
        let mut values: Vec<f64> = outcomes
            .iter()
            .filter(|outcome| outcome.scenario == scenario && outcome.server == server)
            .map(value)
            .collect();
        median(&mut values)
    };
    // (scenario, metric, its value in one run, whether higher is better)
    type Row = (Scenario, &'static str, fn(&Outcome) -> f64, bool);
    let rows: [Row; 3] = [
        (
            Scenario::Throughput,
            "frames/s",
            |o| o.report.frames_per_sec,
            true,
        ),
        (Scenario::Latency, "p50 us", |o| o.report.p50_us, false),
        (Scenario::Latency, "p99 us", |o| o.report.p99_us, false),
    ];
    let mut header = false;
    for (scenario, metric, value, higher) in rows {
        if !scenarios.contains(&scenario) {
            continue;
        }
        let (bare, layered) = (
            median_of(scenario, ServerKind::Natter, value),
            median_of(scenario, ServerKind::Layered, value),
        );
        if bare.is_nan() || layered.is_nan() {
            continue;
        }
        if !header {
            let _ = writeln!(
                table,
                "\nDefault layer stack end to end (idle timeout 5 min, handler timeout 60 s, panic isolation, plus HandlerTimeoutLayer 5 s; same echo):\n"
            );
            let _ = writeln!(
                table,
                "| scenario | metric | natter | natter + layers | layers/natter | target | met |"
            );
            let _ = writeln!(table, "|---|---|---:|---:|---:|---|---|");
            header = true;
        }
        let ratio = layered / bare;
        // Under 5% more cost per frame: 5% fewer frames/s at most, or 5%
        // more latency at most.
        let (target, met) = if higher {
            ("≥ 0.95 (< 5% cost)", ratio >= 0.95)
        } else {
            ("≤ 1.05 (< 5% cost)", ratio <= 1.05)
        };
        if scenario == Scenario::Throughput {
            *all_met &= met;
        }
        let _ = writeln!(
            table,
            "| {} | {metric} | {bare:.1} | {layered:.1} | {ratio:.3} | {target} | {} |",
            scenario.name(),
            if met { "yes" } else { "**no**" }
        );
        medians.push(json!({
            "scenario": scenario,
            "metric": format!("layers: {metric}"),
            "natter": bare,
            "layered": layered,
            "layered_over_natter": ratio,
            "target": target,
            "met": met,
        }));
    }
}
