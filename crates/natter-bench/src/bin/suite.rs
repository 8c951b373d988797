//! The comparison suite: natter's echo example against the two baselines,
//! scenario by scenario, servers interleaved, medians and ratios.
//!
//! ```text
//! cargo build --release --example echo -p natter
//! cargo build --release -p natter-bench
//! target/release/suite [--reps 5] [--json bench.json] [--quick]
//! target/release/suite --callgrind [--quick]       # instructions per frame
//! target/release/suite --scenarios client,open-loop,tls-throughput,tls-bandwidth
//! target/release/suite --worker-threads 2 --scenarios throughput
//! ```
//!
//! Besides the wall-clock scenarios it measures natter's client
//! (`ClientService` against loadgen's own loop, both against the raw
//! server), open-loop latency at 50 % and 90 % of the raw loop's maximum
//! rate, TLS (natter's echo against `baseline-raw-tls`, with a CA and
//! certificate made at run time), and the cost of an installed Prometheus
//! recorder (the `metrics` server). `--callgrind` counts instructions
//! instead of timing: each server under `valgrind --tool=callgrind` for two
//! frame counts, the difference divided by the difference in frames, so
//! start-up and shutdown cancel out.
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
use natter_bench::tls::TlsFiles;
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
    /// Tokio worker threads of every server. Above 1 nothing is pinned:
    /// the servers' workers and the load generator share every core.
    #[arg(long, default_value_t = 1)]
    worker_threads: usize,
    /// Count instructions under callgrind instead of timing (see
    /// BENCHMARKS.md): server instructions per frame for every server
    /// (scenario `throughput`; `tls-throughput` for natter and raw over
    /// TLS), and loadgen's per request for both clients (scenario
    /// `client`).
    #[arg(long)]
    callgrind: bool,
    /// A failed run (loadgen found a wrong or missing echo, a server did
    /// not start) is reported and left out instead of stopping the suite;
    /// the suite still exits 1 at the end.
    #[arg(long)]
    keep_going: bool,
    /// Callgrind: the two frame counts; per frame is the difference in
    /// instructions over the difference in frames.
    #[arg(long, value_delimiter = ',', default_values_t = [200_000u64, 400_000])]
    cg_frames: Vec<u64>,
    /// Callgrind, server runs: connections.
    #[arg(long, default_value_t = 8)]
    cg_connections: usize,
    /// Callgrind, server runs: frames in flight per connection.
    #[arg(long, default_value_t = 16)]
    cg_in_flight: usize,
    /// Callgrind, server runs: payload bytes per frame.
    #[arg(long, default_value_t = 64)]
    cg_size: usize,
    /// Open loop: rounds (every load level and server once per round).
    #[arg(long, default_value_t = 9)]
    open_loop_reps: usize,
    /// Open loop: load levels, percent of the raw loop's maximum rate.
    #[arg(long, value_delimiter = ',', default_values_t = [50u32, 90])]
    open_loop_loads: Vec<u32>,
    /// Open loop: connections the scheduled requests are spread over.
    #[arg(long, default_value_t = 64)]
    open_loop_connections: usize,
    /// Open loop: frames each connection sends at once (one write) when
    /// its turn comes.
    #[arg(long, default_value_t = 16)]
    open_loop_burst: usize,
    /// Open loop: the raw loop's maximum rate, frames/s; measured first
    /// (closed loop, the throughput load) when not given.
    #[arg(long)]
    max_rate: Option<f64>,
    /// Open loop: closed-loop runs of the raw server that measure its
    /// maximum rate (median), unless the throughput scenario ran.
    #[arg(long, default_value_t = 3)]
    calibration_reps: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Scenario {
    Throughput,
    Latency,
    Bandwidth,
    Idle,
    Churn,
    /// natter's `ClientService` against loadgen's own loop, both against
    /// the raw server.
    Client,
    /// Constant-rate load at fractions of the raw loop's maximum.
    OpenLoop,
    /// The throughput load over TLS: natter's echo against
    /// baseline-raw-tls.
    TlsThroughput,
    /// The bandwidth load over TLS.
    TlsBandwidth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum ServerKind {
    Natter,
    /// natter with its default stack on (idle and handler timeouts, panic
    /// isolation) plus a HandlerTimeoutLayer, same echo (throughput,
    /// latency and open-loop scenarios only).
    Layered,
    Framed,
    Raw,
    /// natter's echo with a Prometheus recorder installed
    /// (`--metrics-listen 127.0.0.1:0`; throughput scenario only).
    Metrics,
}

/// Who drives the load: loadgen's own loop, or natter's `ClientService`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
enum ClientKind {
    Hand,
    Natter,
}

impl ClientKind {
    fn name(self) -> &'static str {
        match self {
            ClientKind::Hand => "hand",
            ClientKind::Natter => "natter",
        }
    }
}

impl ServerKind {
    const ALL: [ServerKind; 5] = [
        ServerKind::Natter,
        ServerKind::Layered,
        ServerKind::Framed,
        ServerKind::Raw,
        ServerKind::Metrics,
    ];

    fn name(self) -> &'static str {
        match self {
            ServerKind::Natter => "natter",
            ServerKind::Layered => "layered",
            ServerKind::Framed => "framed",
            ServerKind::Raw => "raw",
            ServerKind::Metrics => "metrics",
        }
    }

    /// The program, over TLS when `tls` is given (natter's echo and the
    /// raw loop only).
    fn binary(self, bin_dir: &Path, tls: bool) -> PathBuf {
        match self {
            ServerKind::Natter | ServerKind::Metrics => bin_dir.join("examples").join("echo"),
            ServerKind::Layered => bin_dir.join("natter-layered"),
            ServerKind::Framed => bin_dir.join("baseline-framed"),
            ServerKind::Raw if tls => bin_dir.join("baseline-raw-tls"),
            ServerKind::Raw => bin_dir.join("baseline-raw"),
        }
    }

    fn args(self, tls: Option<&TlsFiles>) -> Vec<String> {
        let mut args = vec!["--listen".to_owned(), "127.0.0.1:0".to_owned()];
        if matches!(self, ServerKind::Natter | ServerKind::Metrics) {
            // Room for the idle scenario's connections.
            args.extend(["--max-connections".to_owned(), "1000000".to_owned()]);
        }
        if self == ServerKind::Metrics {
            args.extend(["--metrics-listen".to_owned(), "127.0.0.1:0".to_owned()]);
        }
        if let Some(tls) = tls {
            args.extend([
                "--tls-cert".to_owned(),
                tls.cert.display().to_string(),
                "--tls-key".to_owned(),
                tls.key.display().to_string(),
            ]);
        }
        args
    }

    /// Whether this server takes part in `scenario`: the layered server
    /// only answers the question "what do the layers cost per frame", the
    /// metrics server "what does a recorder cost"; the client scenario
    /// runs against the raw server only, TLS compares natter and raw.
    fn runs(self, scenario: Scenario) -> bool {
        match scenario {
            Scenario::Throughput => true,
            Scenario::Latency | Scenario::OpenLoop => self != ServerKind::Metrics,
            Scenario::Bandwidth | Scenario::Idle | Scenario::Churn => {
                matches!(
                    self,
                    ServerKind::Natter | ServerKind::Framed | ServerKind::Raw
                )
            }
            Scenario::Client => self == ServerKind::Raw,
            Scenario::TlsThroughput | Scenario::TlsBandwidth => {
                matches!(self, ServerKind::Natter | ServerKind::Raw)
            }
        }
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

/// What one run is: a server, the client that drives it, and (open loop)
/// the load level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
struct Variant {
    server: ServerKind,
    client: ClientKind,
    /// Open loop: percent of the raw loop's maximum rate.
    load_pct: Option<u32>,
}

/// The result of one run of one server.
#[derive(Debug, Clone, Serialize)]
struct Outcome {
    scenario: Scenario,
    server: ServerKind,
    client: ClientKind,
    load_pct: Option<u32>,
    rep: usize,
    report: LoadReport,
    /// Idle scenario: server RSS per connection, bytes.
    rss_per_connection: Option<f64>,
    rss_before_kib: Option<u64>,
    rss_after_kib: Option<u64>,
}

impl Scenario {
    const ALL: [Scenario; 9] = [
        Scenario::Throughput,
        Scenario::Latency,
        Scenario::Bandwidth,
        Scenario::Idle,
        Scenario::Churn,
        Scenario::Client,
        Scenario::OpenLoop,
        Scenario::TlsThroughput,
        Scenario::TlsBandwidth,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Throughput => "throughput",
            Scenario::Latency => "latency",
            Scenario::Bandwidth => "bandwidth",
            Scenario::Idle => "idle",
            Scenario::Churn => "churn",
            Scenario::Client => "client",
            Scenario::OpenLoop => "open-loop",
            Scenario::TlsThroughput => "tls-throughput",
            Scenario::TlsBandwidth => "tls-bandwidth",
        }
    }

    fn tls(self) -> bool {
        matches!(self, Scenario::TlsThroughput | Scenario::TlsBandwidth)
    }

    /// What the load looks like, for the table.
    fn shape(self, plan: &Plan) -> String {
        match self {
            Scenario::Throughput | Scenario::TlsThroughput | Scenario::Client => {
                "64 conns x 16 in flight x 64 B".into()
            }
            Scenario::Latency => "1 conn, 1 in flight, 64 B".into(),
            Scenario::Bandwidth | Scenario::TlsBandwidth => "4 conns x 8 in flight x 16 KiB".into(),
            Scenario::Idle => format!("{} idle conns (one echo each)", plan.idle_connections),
            Scenario::Churn => "16 workers: connect, 64 B echo, close".into(),
            Scenario::OpenLoop => {
                format!(
                    "{} conns, 64 B, constant rate, bursts of {}",
                    plan.open_loop_connections, plan.open_loop_burst
                )
            }
        }
    }

    /// loadgen's arguments for one run; `rate` is the open loop's.
    fn loadgen_args(self, plan: &Plan, variant: Variant, rate: Option<f64>) -> Vec<String> {
        let (mode, connections, in_flight, size) = match self {
            Scenario::Throughput | Scenario::TlsThroughput | Scenario::Client => {
                ("echo", 64, 16, 64)
            }
            Scenario::Latency => ("echo", 1, 1, 64),
            Scenario::Bandwidth | Scenario::TlsBandwidth => ("echo", 4, 8, 16 * 1024),
            Scenario::Idle => ("idle", plan.idle_connections, 1, 64),
            Scenario::Churn => ("churn", 16, 1, 64),
            Scenario::OpenLoop => ("rate", plan.open_loop_connections, 1, 64),
        };
        let mut args = vec![
            format!("--mode={mode}"),
            format!("--connections={connections}"),
            format!("--in-flight={in_flight}"),
            format!("--size={size}"),
            format!("--duration-secs={}", plan.duration_secs),
            format!("--warmup-secs={}", plan.warmup_secs),
            format!("--client={}", variant.client.name()),
        ];
        if self == Scenario::Churn {
            // Bounded in count too: every churned connection leaves a
            // TIME_WAIT socket behind on the client side.
            args.push("--max-frames=200000".into());
        }
        if let Some(rate) = rate {
            args.push(format!("--rate={rate:.0}"));
            args.push(format!("--burst={}", plan.open_loop_burst));
        }
        args
    }

    /// The runs of one repetition, in the order they take turns.
    fn variants(self, servers: &[ServerKind], plan: &Plan) -> Vec<Variant> {
        let runs = servers.iter().filter(|server| server.runs(self));
        let hand = |server: &ServerKind| Variant {
            server: *server,
            client: ClientKind::Hand,
            load_pct: None,
        };
        match self {
            Scenario::Client => runs
                .flat_map(|server| {
                    [ClientKind::Hand, ClientKind::Natter].map(|client| Variant {
                        client,
                        ..hand(server)
                    })
                })
                .collect(),
            Scenario::OpenLoop => {
                let runs: Vec<_> = runs.collect();
                plan.open_loop_loads
                    .iter()
                    .flat_map(|&pct| {
                        runs.iter().map(move |server| Variant {
                            load_pct: Some(pct),
                            ..hand(server)
                        })
                    })
                    .collect()
            }
            _ => runs.map(hand).collect(),
        }
    }

    /// Repetitions of this scenario.
    fn reps(self, plan: &Plan) -> usize {
        if self == Scenario::OpenLoop {
            plan.open_loop_reps
        } else {
            plan.reps
        }
    }

    /// Whether the main table (natter, framed, raw) shows it; the other
    /// scenarios have tables of their own.
    fn in_main_table(self) -> bool {
        !matches!(self, Scenario::Client | Scenario::OpenLoop)
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
            Scenario::Throughput | Scenario::TlsThroughput | Scenario::Client => vec![
                metric("frames/s", "frames/s", Better::Higher, rate),
                metric("p99", "us", Better::Lower, p99),
            ],
            Scenario::OpenLoop => vec![
                metric("achieved", "frames/s", Better::Higher, rate),
                metric("p50", "us", Better::Lower, p50),
                metric("p99", "us", Better::Lower, p99),
            ],
            Scenario::Latency => vec![
                metric("p50", "us", Better::Lower, p50),
                metric("p99", "us", Better::Lower, p99),
                metric("p999", "us", Better::Lower, p999),
            ],
            Scenario::Bandwidth | Scenario::TlsBandwidth => {
                vec![metric("MB/s", "MB/s", Better::Higher, mb)]
            }
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
    /// Servers and loadgen pinned to their cores (taskset present and one
    /// worker thread).
    pinned: bool,
    open_loop_reps: usize,
    open_loop_loads: Vec<u32>,
    open_loop_connections: usize,
    open_loop_burst: usize,
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
    let scenarios = if !args.scenarios.is_empty() {
        args.scenarios.clone()
    } else if args.callgrind {
        vec![
            Scenario::Throughput,
            Scenario::TlsThroughput,
            Scenario::Client,
        ]
    } else {
        Scenario::ALL.to_vec()
    };
    let tls_needed = scenarios.iter().any(|scenario| scenario.tls());
    let mut programs: Vec<PathBuf> = Vec::new();
    for &scenario in &scenarios {
        for server in servers.iter().filter(|server| server.runs(scenario)) {
            programs.push(server.binary(&bin_dir, scenario.tls()));
        }
    }
    programs.push(loadgen.clone());
    programs.dedup();
    let missing: Vec<_> = programs.iter().filter(|path| !path.is_file()).collect();
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
    let taskset = Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    // With more than one worker the server is meant to use both cores:
    // nothing is pinned, and the load generator shares them.
    let pinned = taskset && args.worker_threads <= 1;
    let quick = args.quick;
    let plan = Plan {
        reps: if quick { 1 } else { args.reps.max(1) },
        duration_secs: if quick { 0.3 } else { args.duration_secs },
        warmup_secs: if quick { 0.1 } else { args.warmup_secs },
        idle_connections: if quick { 200 } else { args.idle_connections },
        server_cpu: args.server_cpu,
        load_cpu: args.load_cpu,
        worker_threads: args.worker_threads.max(1),
        pinned,
        open_loop_reps: if quick { 1 } else { args.open_loop_reps.max(1) },
        open_loop_loads: args.open_loop_loads.clone(),
        open_loop_connections: args.open_loop_connections.max(1),
        open_loop_burst: args.open_loop_burst.max(1),
    };
    if !args.callgrind
        && scenarios.contains(&Scenario::Idle)
        && (limit as usize) < plan.idle_connections + 100
    {
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
    } else if plan.worker_threads > 1 {
        format!(
            "TOKIO_WORKER_THREADS={} for every server, NOT pinned: the server's workers and loadgen (one thread) share all {} cores, so loadgen's CPU time is taken from the server's",
            plan.worker_threads,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        )
    } else {
        format!(
            "taskset not found: NOT pinned; TOKIO_WORKER_THREADS={} for every server; loadgen on one thread",
            plan.worker_threads
        )
    };
    println!(
        "# natter benchmark suite{}{}",
        if args.callgrind { ", callgrind" } else { "" },
        if quick {
            " (--quick: smoke test, not a measurement)"
        } else {
            ""
        }
    );
    println!();
    println!("- {setup}");
    if !args.callgrind {
        println!(
            "- {} repetition(s) ({} for open loop), servers interleaved; {} s window after {} s warm-up; load average at start: {loadavg}",
            plan.reps, plan.open_loop_reps, plan.duration_secs, plan.warmup_secs
        );
    } else {
        println!("- load average at start: {loadavg}");
    }
    println!();

    let logs = bin_dir.join("bench-logs");
    std::fs::create_dir_all(&logs)
        .map_err(|error| format!("cannot create {}: {error}", logs.display()))?;
    // The CA, certificate and key of the TLS scenarios, made now, removed
    // at the end.
    let tls_dir = TempDir::new(tls_needed)?;
    let tls = match &tls_dir {
        Some(dir) => Some(natter_bench::tls::generate(&dir.0)?),
        None => None,
    };
    let ctx = Ctx {
        plan: &plan,
        bin_dir: &bin_dir,
        loadgen: &loadgen,
        logs: &logs,
        tls: tls.as_ref(),
    };

    if args.callgrind {
        let frames = match args.cg_frames.as_slice() {
            _ if quick => (5_000, 10_000),
            &[a, b] if a < b => (a, b),
            _ => return Err("--cg-frames takes two counts, the smaller first".into()),
        };
        let shape = CgShape {
            connections: args.cg_connections.max(1),
            in_flight: args.cg_in_flight.max(1),
            size: args.cg_size,
            frames,
        };
        let (table, document) = callgrind(&ctx, &scenarios, &servers, &shape)?;
        println!("{table}");
        if let Some(path) = &args.json {
            let document = json!({
                "setup": setup,
                "loadavg_at_start": loadavg,
                "callgrind": document,
            });
            write_json(path, &document)?;
        }
        return Ok(true);
    }

    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for &scenario in &scenarios {
        let variants = scenario.variants(&servers, &plan);
        if variants.is_empty() {
            eprintln!(
                "  {}: none of the chosen servers runs it; skipped",
                scenario.name()
            );
            continue;
        }
        let max_rate = if scenario == Scenario::OpenLoop {
            let max = match args.max_rate {
                Some(rate) => rate,
                None => calibrate(&ctx, &outcomes, args.calibration_reps.max(1), quick)?,
            };
            println!(
                "- open loop: the raw loop's maximum is {max:.0} frames/s; loads {}\n",
                plan.open_loop_loads
                    .iter()
                    .map(|pct| format!("{pct} % = {:.0}/s", max * f64::from(*pct) / 100.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Some(max)
        } else {
            None
        };
        for rep in 0..scenario.reps(&plan) {
            for &variant in &variants {
                let rate = max_rate
                    .zip(variant.load_pct)
                    .map(|(max, pct)| max * f64::from(pct) / 100.0);
                let outcome = match run_one(&ctx, scenario, variant, rep, rate) {
                    Ok(outcome) => outcome,
                    Err(error) => {
                        let error = format!(
                            "{} / {} / {} client / rep {rep}: {error}",
                            scenario.name(),
                            variant.server.name(),
                            variant.client.name()
                        );
                        if !args.keep_going {
                            return Err(error);
                        }
                        eprintln!("  FAILED {error}");
                        failures.push(error);
                        continue;
                    }
                };
                eprintln!(
                    "  {:<14} {:<7} {:<6}{} rep {rep}: {:>10.0} frames/s {:>8.1} MB/s p50 {:>7.1} us p99 {:>7.1} us{}",
                    scenario.name(),
                    variant.server.name(),
                    variant.client.name(),
                    variant
                        .load_pct
                        .map(|pct| format!(" {pct:>3} %"))
                        .unwrap_or_default(),
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
    if !failures.is_empty() {
        println!(
            "{} run(s) FAILED and are left out of the medians:\n",
            failures.len()
        );
        for failure in &failures {
            println!("- {failure}");
        }
        println!();
    }
    if let Some(path) = &args.json {
        let document = json!({
            "setup": setup,
            "loadavg_at_start": loadavg,
            "plan": plan,
            "all_targets_met": all_met,
            "failures": failures,
            "medians": medians,
            "runs": outcomes,
        });
        write_json(path, &document)?;
    }
    Ok(failures.is_empty())
}

fn write_json(path: &Path, document: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(document).map_err(|error| error.to_string())?;
    std::fs::write(path, text)
        .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    println!("JSON: {}", path.display());
    Ok(())
}

/// A folder of this process's own under the system's temporary folder,
/// removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    /// `None` when not `wanted`.
    fn new(wanted: bool) -> Result<Option<TempDir>> {
        if !wanted {
            return Ok(None);
        }
        let path = std::env::temp_dir().join(format!("natter-suite-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .map_err(|error| format!("cannot create {}: {error}", path.display()))?;
        Ok(Some(TempDir(path)))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What every run needs.
struct Ctx<'a> {
    plan: &'a Plan,
    bin_dir: &'a Path,
    loadgen: &'a Path,
    logs: &'a Path,
    tls: Option<&'a TlsFiles>,
}

/// The raw loop's maximum rate for the open loop: the median of this
/// invocation's throughput runs of the raw server if there are any, else
/// of `reps` closed-loop runs made now with the throughput load.
fn calibrate(ctx: &Ctx<'_>, outcomes: &[Outcome], reps: usize, quick: bool) -> Result<f64> {
    let mut rates: Vec<f64> = outcomes
        .iter()
        .filter(|outcome| {
            outcome.scenario == Scenario::Throughput && outcome.server == ServerKind::Raw
        })
        .map(|outcome| outcome.report.frames_per_sec)
        .collect();
    if rates.is_empty() {
        let reps = if quick { 1 } else { reps };
        let raw = Variant {
            server: ServerKind::Raw,
            client: ClientKind::Hand,
            load_pct: None,
        };
        for rep in 0..reps {
            let outcome = run_one(ctx, Scenario::Throughput, raw, rep, None)
                .map_err(|error| format!("measuring the raw loop's maximum: {error}"))?;
            eprintln!(
                "  calibration raw rep {rep}: {:>10.0} frames/s",
                outcome.report.frames_per_sec
            );
            rates.push(outcome.report.frames_per_sec);
        }
    }
    let max = median(&mut rates);
    if max.is_finite() && max > 0.0 {
        Ok(max)
    } else {
        Err("could not measure the raw loop's maximum rate".into())
    }
}

/// One server, started for one run.
struct Server {
    child: Child,
    addr: SocketAddr,
    // Kept open so the server never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Server {
    /// Starts `kind` (over TLS with `tls`), under callgrind writing to
    /// `callgrind_out` when given.
    fn start(
        ctx: &Ctx<'_>,
        kind: ServerKind,
        tls: bool,
        callgrind_out: Option<&Path>,
    ) -> Result<Server> {
        let plan = ctx.plan;
        let log = File::create(ctx.logs.join(format!("{}.stderr", kind.name())))
            .map_err(|error| error.to_string())?;
        let program = kind.binary(ctx.bin_dir, tls);
        let tls_files = if tls {
            Some(ctx.tls.ok_or("no TLS files")?)
        } else {
            None
        };
        let mut command = match callgrind_out {
            Some(out) => {
                let mut command = pinned_command(plan, plan.server_cpu, Path::new("valgrind"));
                command.args(valgrind_args(out)).arg(&program);
                command
            }
            None => pinned_command(plan, plan.server_cpu, &program),
        };
        // Under valgrind start-up takes seconds.
        let patience = if callgrind_out.is_some() { 120 } else { 10 };
        command
            .args(kind.args(tls_files))
            .env("TOKIO_WORKER_THREADS", plan.worker_threads.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = command
            .spawn()
            .map_err(|error| format!("cannot start the server: {error}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (line, stdout) = match read_line_within(stdout, Duration::from_secs(patience)) {
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

    /// SIGTERM, and wait (up to `limit`) for the server to exit, so that
    /// valgrind writes its counts; SIGKILL after that.
    fn terminate(mut self, limit: Duration) -> Result<()> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() >= deadline => {
                    self.stop();
                    return Err(format!(
                        "the server did not exit within {limit:?} of SIGTERM"
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(error) => return Err(error.to_string()),
            }
        }
    }
}

/// valgrind's arguments before the program: callgrind, its counts to `out`.
fn valgrind_args(out: &Path) -> Vec<String> {
    vec![
        "--tool=callgrind".to_owned(),
        format!("--callgrind-out-file={}", out.display()),
    ]
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
    ctx: &Ctx<'_>,
    scenario: Scenario,
    variant: Variant,
    rep: usize,
    rate: Option<f64>,
) -> Result<Outcome> {
    let server = Server::start(ctx, variant.server, scenario.tls(), None)?;
    let outcome = drive(ctx, scenario, variant, rep, rate, &server);
    server.stop();
    outcome
}

fn drive(
    ctx: &Ctx<'_>,
    scenario: Scenario,
    variant: Variant,
    rep: usize,
    rate: Option<f64>,
    server: &Server,
) -> Result<Outcome> {
    let plan = ctx.plan;
    let mut command = pinned_command(plan, plan.load_cpu, ctx.loadgen);
    command
        .arg(format!("--addr={}", server.addr))
        .args(scenario.loadgen_args(plan, variant, rate))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if scenario.tls() {
        let tls = ctx.tls.ok_or("no TLS files")?;
        command.arg("--tls-ca").arg(&tls.ca);
    }
    let mut outcome = Outcome {
        scenario,
        server: variant.server,
        client: variant.client,
        load_pct: variant.load_pct,
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
    let limit =
        Duration::from_secs_f64(plan.warmup_secs + plan.duration_secs) + Duration::from_secs(60);
    outcome.report = run_loadgen(command, limit)?;
    Ok(outcome)
}

/// Runs a prepared loadgen command to its end (killing it after `limit`)
/// and returns its report.
fn run_loadgen(mut command: Command, limit: Duration) -> Result<LoadReport> {
    let started = Instant::now();
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start loadgen: {error}"))?;
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
    serde_json::from_str(line).map_err(|error| format!("bad loadgen report {line:?}: {error}"))
}

/// The load of a callgrind run.
struct CgShape {
    connections: usize,
    in_flight: usize,
    size: usize,
    /// The two frame counts.
    frames: (u64, u64),
}

/// The total instruction count in a callgrind output file.
fn callgrind_total(out: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(out)
        .map_err(|error| format!("cannot read {}: {error}", out.display()))?;
    text.lines()
        .find_map(|line| {
            line.strip_prefix("summary:")
                .or_else(|| line.strip_prefix("totals:"))
        })
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no summary line in {}", out.display()))
}

/// loadgen's arguments for a callgrind run: exactly `frames` frames, no
/// warm-up, no time limit to speak of.
fn cg_loadgen_args(
    connections: usize,
    in_flight: usize,
    size: usize,
    frames: u64,
    client: ClientKind,
) -> Vec<String> {
    vec![
        "--mode=echo".to_owned(),
        format!("--connections={connections}"),
        format!("--in-flight={in_flight}"),
        format!("--size={size}"),
        format!("--max-frames={frames}"),
        "--duration-secs=100000".to_owned(),
        "--warmup-secs=0".to_owned(),
        format!("--client={}", client.name()),
    ]
}

/// How long one callgrind run may take.
const CG_LIMIT: Duration = Duration::from_secs(30 * 60);

/// `--callgrind`: server instructions per frame for every server
/// (scenario throughput), loadgen's instructions per request for both
/// clients against the raw server (scenario client). Returns the tables
/// and the counts as JSON.
fn callgrind(
    ctx: &Ctx<'_>,
    scenarios: &[Scenario],
    servers: &[ServerKind],
    shape: &CgShape,
) -> Result<(String, serde_json::Value)> {
    let (a, b) = shape.frames;
    let per = |counts: (u64, u64)| counts.1.saturating_sub(counts.0) as f64 / (b - a) as f64;
    let mut table = String::new();
    let mut document = serde_json::Map::new();
    // Plain TCP (scenario throughput), then over TLS (tls-throughput).
    for (scenario, tls) in [
        (Scenario::Throughput, false),
        (Scenario::TlsThroughput, true),
    ] {
        if !scenarios.contains(&scenario) {
            continue;
        }
        let over = if tls { "-tls" } else { "" };
        let mut rows: Vec<(ServerKind, (u64, u64))> = Vec::new();
        for &kind in servers.iter().filter(|kind| kind.runs(scenario)) {
            let mut counts = [0u64; 2];
            for (slot, frames) in [a, b].into_iter().enumerate() {
                let out = ctx
                    .logs
                    .join(format!("callgrind-{}{over}-{frames}.out", kind.name()));
                let server = Server::start(ctx, kind, tls, Some(&out))
                    .map_err(|error| format!("{} under callgrind: {error}", kind.name()))?;
                let mut command = pinned_command(ctx.plan, ctx.plan.load_cpu, ctx.loadgen);
                command
                    .arg(format!("--addr={}", server.addr))
                    .args(cg_loadgen_args(
                        shape.connections,
                        shape.in_flight,
                        shape.size,
                        frames,
                        ClientKind::Hand,
                    ));
                if tls {
                    command
                        .arg("--tls-ca")
                        .arg(&ctx.tls.ok_or("no TLS files")?.ca);
                }
                let report = run_loadgen(command, CG_LIMIT);
                let stopped = server.terminate(Duration::from_secs(60));
                report.map_err(|error| format!("{} under callgrind: {error}", kind.name()))?;
                stopped?;
                counts[slot] = callgrind_total(&out)?;
                eprintln!(
                    "  callgrind {:<12} {frames:>9} frames: {:>14} instructions",
                    format!("{}{over}", kind.name()),
                    counts[slot]
                );
            }
            rows.push((kind, (counts[0], counts[1])));
        }
        let raw = rows
            .iter()
            .find(|(kind, _)| *kind == ServerKind::Raw)
            .map(|(_, counts)| per(*counts));
        let natter = rows
            .iter()
            .find(|(kind, _)| *kind == ServerKind::Natter)
            .map(|(_, counts)| per(*counts));
        let _ = writeln!(
            table,
            "{}Server instructions per frame{} (callgrind; {} conns x {} in flight x {} B; per frame = (instructions at {b} frames - at {a}) / {}, so start-up and handshakes cancel out):\n",
            if table.is_empty() { "" } else { "\n" },
            if tls {
                " over TLS (natter's echo with --tls-cert/--tls-key, raw = baseline-raw-tls)"
            } else {
                ""
            },
            shape.connections,
            shape.in_flight,
            shape.size,
            b - a
        );
        let _ = writeln!(
            table,
            "| server | instructions, {a} frames | instructions, {b} frames | per frame | / raw | / natter |"
        );
        let _ = writeln!(table, "|---|---:|---:|---:|---:|---:|");
        let mut json_rows = Vec::new();
        for (kind, counts) in &rows {
            let per_frame = per(*counts);
            let ratio = |base: Option<f64>| {
                base.filter(|base| *base > 0.0)
                    .map_or("-".to_owned(), |base| format!("{:.2}", per_frame / base))
            };
            let _ = writeln!(
                table,
                "| {} | {} | {} | {per_frame:.0} | {} | {} |",
                kind.name(),
                counts.0,
                counts.1,
                ratio(raw),
                ratio(natter)
            );
            json_rows.push(json!({
                "server": kind,
                "instructions": [counts.0, counts.1],
                "per_frame": per_frame,
                "over_raw": raw.map(|raw| per_frame / raw),
            }));
        }
        document.insert(
            if tls { "tls_servers" } else { "servers" }.into(),
            json!({
                "connections": shape.connections,
                "in_flight": shape.in_flight,
                "size": shape.size,
                "frames": [a, b],
                "rows": json_rows,
            }),
        );
    }
    if scenarios.contains(&Scenario::Client) {
        // The client scenario's load, loadgen under callgrind, the raw
        // server at full speed.
        let (connections, in_flight, size) = (64, 16, 64);
        let mut rows = Vec::new();
        for client in [ClientKind::Hand, ClientKind::Natter] {
            let mut counts = [0u64; 2];
            for (slot, frames) in [a, b].into_iter().enumerate() {
                let out = ctx
                    .logs
                    .join(format!("callgrind-loadgen-{}-{frames}.out", client.name()));
                let server = Server::start(ctx, ServerKind::Raw, false, None)?;
                let mut command =
                    pinned_command(ctx.plan, ctx.plan.load_cpu, Path::new("valgrind"));
                command
                    .args(valgrind_args(&out))
                    .arg(ctx.loadgen)
                    .arg(format!("--addr={}", server.addr))
                    .args(cg_loadgen_args(
                        connections,
                        in_flight,
                        size,
                        frames,
                        client,
                    ));
                let report = run_loadgen(command, CG_LIMIT);
                server.stop();
                report.map_err(|error| {
                    format!(
                        "loadgen --client {} under callgrind: {error}",
                        client.name()
                    )
                })?;
                counts[slot] = callgrind_total(&out)?;
                eprintln!(
                    "  callgrind loadgen --client {:<6} {frames:>9} requests: {:>14} instructions",
                    client.name(),
                    counts[slot]
                );
            }
            rows.push((client, (counts[0], counts[1])));
        }
        let hand = per(rows[0].1);
        let natter = per(rows[1].1);
        let ratio = natter / hand;
        let _ = writeln!(
            table,
            "\nClient instructions per request (loadgen under callgrind; {connections} conns x {in_flight} in flight x {size} B against the raw server; per request = (at {b} - at {a}) / {}):\n",
            b - a
        );
        let _ = writeln!(
            table,
            "| client | instructions, {a} requests | instructions, {b} requests | per request | / hand |"
        );
        let _ = writeln!(table, "|---|---:|---:|---:|---:|");
        for (client, counts) in &rows {
            let per_request = per(*counts);
            let _ = writeln!(
                table,
                "| {} | {} | {} | {per_request:.0} | {:.2} |",
                match client {
                    ClientKind::Hand => "hand-written loop",
                    ClientKind::Natter => "natter ClientService",
                },
                counts.0,
                counts.1,
                per_request / hand
            );
        }
        let _ = writeln!(
            table,
            "\nnatter/hand: {ratio:.2}x instructions per request (target ≤ 2x: {})",
            if ratio <= 2.0 { "met" } else { "**not met**" }
        );
        document.insert(
            "clients".into(),
            json!({
                "connections": connections,
                "in_flight": in_flight,
                "size": size,
                "frames": [a, b],
                "hand": {"instructions": [rows[0].1.0, rows[0].1.1], "per_request": hand},
                "natter": {"instructions": [rows[1].1.0, rows[1].1.1], "per_request": natter},
                "natter_over_hand": ratio,
            }),
        );
    }
    Ok((table, serde_json::Value::Object(document)))
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
    if scenarios.iter().any(|scenario| scenario.in_main_table()) {
        let _ = writeln!(
            table,
            "| scenario | load | metric | natter | framed | raw | natter/framed | natter/raw | target | met |"
        );
        let _ = writeln!(table, "|---|---|---|---:|---:|---:|---:|---:|---|---|");
    }
    let mut medians = Vec::new();
    let mut all_met = true;
    for &scenario in scenarios.iter().filter(|scenario| scenario.in_main_table()) {
        for metric in scenario.metrics() {
            let mut by_server = BTreeMap::new();
            for &server in servers {
                let mut values: Vec<f64> = outcomes
                    .iter()
                    .filter(|outcome| {
                        outcome.scenario == scenario
                            && outcome.server == server
                            && outcome.client == ClientKind::Hand
                    })
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
    metrics_table(scenarios, outcomes, &mut table, &mut medians, &mut all_met);
    client_table(scenarios, outcomes, &mut table, &mut medians, &mut all_met);
    open_loop_table(
        scenarios,
        servers,
        outcomes,
        plan,
        &mut table,
        &mut medians,
        &mut all_met,
    );
    (table, medians, all_met)
}

/// The median of `value` over the outcomes `which` picks (NaN if none).
fn median_of(
    outcomes: &[Outcome],
    which: impl Fn(&Outcome) -> bool,
    value: impl Fn(&Outcome) -> f64,
) -> f64 {
    let mut values: Vec<f64> = outcomes
        .iter()
        .filter(|outcome| which(outcome))
        .map(value)
        .collect();
    median(&mut values)
}

/// What an installed Prometheus recorder costs: the echo example with
/// `--metrics-listen` against the same without (throughput scenario).
fn metrics_table(
    scenarios: &[Scenario],
    outcomes: &[Outcome],
    table: &mut String,
    medians: &mut Vec<serde_json::Value>,
    all_met: &mut bool,
) {
    if !scenarios.contains(&Scenario::Throughput) {
        return;
    }
    let of = |server: ServerKind, value: fn(&Outcome) -> f64| {
        median_of(
            outcomes,
            |outcome| outcome.scenario == Scenario::Throughput && outcome.server == server,
            value,
        )
    };
    type Value = fn(&Outcome) -> f64;
    let rows: [(&str, Value, bool); 2] = [
        ("frames/s", |o| o.report.frames_per_sec, true),
        ("p99 us", |o| o.report.p99_us, false),
    ];
    let mut header = false;
    for (metric, value, higher) in rows {
        let (bare, recorded) = (
            of(ServerKind::Natter, value),
            of(ServerKind::Metrics, value),
        );
        if bare.is_nan() || recorded.is_nan() {
            return;
        }
        if !header {
            let _ = writeln!(
                table,
                "\nMetrics cost (echo with --metrics-listen, a Prometheus recorder installed, against the same echo without; throughput load):\n"
            );
            let _ = writeln!(
                table,
                "| metric | natter | natter + recorder | recorder/natter | target | met |"
            );
            let _ = writeln!(table, "|---|---:|---:|---:|---|---|");
            header = true;
        }
        let ratio = recorded / bare;
        let target = higher.then_some(("≥ 0.97", ratio >= 0.97));
        if let Some((_, met)) = target {
            *all_met &= met;
        }
        let _ = writeln!(
            table,
            "| {metric} | {bare:.1} | {recorded:.1} | {ratio:.3} | {} | {} |",
            target.map_or("", |(text, _)| text),
            target.map_or("", |(_, met)| if met { "yes" } else { "**no**" })
        );
        medians.push(json!({
            "scenario": Scenario::Throughput,
            "metric": format!("metrics recorder: {metric}"),
            "natter": bare,
            "metrics": recorded,
            "metrics_over_natter": ratio,
            "target": target.map(|(text, _)| text),
            "met": target.map(|(_, met)| met),
        }));
    }
}

/// natter's `ClientService` against loadgen's own loop, both against the
/// raw server.
fn client_table(
    scenarios: &[Scenario],
    outcomes: &[Outcome],
    table: &mut String,
    medians: &mut Vec<serde_json::Value>,
    all_met: &mut bool,
) {
    if !scenarios.contains(&Scenario::Client) {
        return;
    }
    let of = |client: ClientKind, value: fn(&Outcome) -> f64| {
        median_of(
            outcomes,
            |outcome| outcome.scenario == Scenario::Client && outcome.client == client,
            value,
        )
    };
    type Value = fn(&Outcome) -> f64;
    let rows: [(&str, Value, Option<f64>); 3] = [
        ("requests/s", |o| o.report.frames_per_sec, Some(0.8)),
        ("p50 us", |o| o.report.p50_us, None),
        ("p99 us", |o| o.report.p99_us, None),
    ];
    let _ = writeln!(
        table,
        "\nClient (64 conns x 16 in flight x 64 B request/response against the raw server; hand = loadgen's own pipelined loop, natter = one ClientService per connection, ready() + call()):\n"
    );
    let _ = writeln!(
        table,
        "| metric | hand-written loop | natter ClientService | natter/hand | target | met |"
    );
    let _ = writeln!(table, "|---|---:|---:|---:|---|---|");
    for (metric, value, floor) in rows {
        let (hand, natter) = (of(ClientKind::Hand, value), of(ClientKind::Natter, value));
        let ratio = natter / hand;
        let met = floor.map(|floor| ratio >= floor);
        if let Some(met) = met {
            *all_met &= met;
        }
        let _ = writeln!(
            table,
            "| {metric} | {hand:.1} | {natter:.1} | {ratio:.3} | {} | {} |",
            floor.map_or(String::new(), |floor| format!("≥ {floor}x")),
            met.map_or("", |met| if met { "yes" } else { "**no**" })
        );
        let finite = |value: f64| if value.is_nan() { None } else { Some(value) };
        medians.push(json!({
            "scenario": Scenario::Client,
            "metric": metric,
            "hand": finite(hand),
            "natter": finite(natter),
            "natter_over_hand": finite(ratio),
            "target": floor.map(|floor| format!(">= {floor}x")),
            "met": met,
        }));
    }
}

/// Open-loop latency: every server at each load level, against raw.
fn open_loop_table(
    scenarios: &[Scenario],
    servers: &[ServerKind],
    outcomes: &[Outcome],
    plan: &Plan,
    table: &mut String,
    medians: &mut Vec<serde_json::Value>,
    all_met: &mut bool,
) {
    if !scenarios.contains(&Scenario::OpenLoop) {
        return;
    }
    let _ = writeln!(
        table,
        "\nOpen loop ({}; requests on a fixed schedule, latency from the scheduled send time; medians of {} rounds):\n",
        Scenario::OpenLoop.shape(plan),
        plan.open_loop_reps
    );
    let _ = writeln!(
        table,
        "| load | rate asked (/s) | server | achieved (/s) | p50 us | p99 us | p50/raw | p99/raw | target | met | loadgen late, p99 us |"
    );
    let _ = writeln!(
        table,
        "|---|---:|---|---:|---:|---:|---:|---:|---|---|---:|"
    );
    for &pct in &plan.open_loop_loads {
        let of = |server: ServerKind, value: fn(&Outcome) -> f64| {
            median_of(
                outcomes,
                |outcome| {
                    outcome.scenario == Scenario::OpenLoop
                        && outcome.server == server
                        && outcome.load_pct == Some(pct)
                },
                value,
            )
        };
        let raw_p50 = of(ServerKind::Raw, |o| o.report.p50_us);
        let raw_p99 = of(ServerKind::Raw, |o| o.report.p99_us);
        for &server in servers
            .iter()
            .filter(|server| server.runs(Scenario::OpenLoop))
        {
            let asked = of(server, |o| o.report.target_rate);
            let achieved = of(server, |o| o.report.frames_per_sec);
            let p50 = of(server, |o| o.report.p50_us);
            let p99 = of(server, |o| o.report.p99_us);
            let late = of(server, |o| o.report.send_lag_p99_us);
            if achieved.is_nan() {
                continue;
            }
            let (p50_ratio, p99_ratio) = (p50 / raw_p50, p99 / raw_p99);
            let judged = server != ServerKind::Raw && !p99_ratio.is_nan();
            let met = judged.then_some(p99_ratio <= 1.1);
            if let (ServerKind::Natter, Some(met)) = (server, met) {
                *all_met &= met;
            }
            let ratio = |value: f64| {
                if value.is_nan() {
                    "-".to_owned()
                } else {
                    format!("{value:.2}")
                }
            };
            let _ = writeln!(
                table,
                "| {pct} % | {asked:.0} | {} | {achieved:.0} | {p50:.1} | {p99:.1} | {} | {} | {} | {} | {late:.1} |",
                server.name(),
                ratio(p50_ratio),
                ratio(p99_ratio),
                if judged { "p99 ≤ 1.1x raw" } else { "" },
                met.map_or("", |met| if met { "yes" } else { "**no**" })
            );
            let finite = |value: f64| if value.is_nan() { None } else { Some(value) };
            medians.push(json!({
                "scenario": Scenario::OpenLoop,
                "load_pct": pct,
                "server": server,
                "rate_asked": finite(asked),
                "achieved": finite(achieved),
                "p50_us": finite(p50),
                "p99_us": finite(p99),
                "p50_over_raw": finite(p50_ratio),
                "p99_over_raw": finite(p99_ratio),
                "loadgen_late_p99_us": finite(late),
                "met": met,
            }));
        }
    }
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
