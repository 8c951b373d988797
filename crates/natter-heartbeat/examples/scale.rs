//! Scale check: one master and many nodes on loopback (1,000 nodes pinged
//! every second for 30 s by default).
//!
//! ```sh
//! cargo build --release -p natter-heartbeat                # the heartbeat binary, first
//! cargo run --release -p natter-heartbeat --example scale  # 1,000 nodes, 30 s
//! cargo run --release -p natter-heartbeat --example scale -- --quick   # 100 nodes, 5 s
//! cargo run --release -p natter-heartbeat --example scale -- --nodes 2000 --secs 60
//! ```
//!
//! The master runs alone in its own process, so its CPU time and memory
//! are its own: this example starts the `heartbeat` binary that sits next
//! to it in `target/<profile>/` (building the example does not build it:
//! build it first, as above, after every change; or name one with
//! `--master-bin`) as
//! `heartbeat master --json --listen 127.0.0.1:0 --interval-ms I --stats-interval-ms I`,
//! and reads its events from its stdout. The nodes run in this process,
//! as the library's [`Node`]s, each with its own heartbeat port.
//!
//! Once every node has joined and two stats periods have passed (so the
//! first pings, which dial, are not counted), a window of `--secs` starts
//! and ends on the master's `ping_stats` reports. Reported:
//!
//! - the ping round trip as the master measures it (from the ping's task
//!   sending it to the pong being read), p50/p90/p99/p99.9/max of every
//!   ping answered in the window. A round's pings all leave at once and
//!   the nodes share the machine, so most of it is waiting behind the
//!   rest of the round (compare `--nodes 1`);
//! - the master's CPU (user + system time from `/proc/PID/stat`, over the
//!   window's wall time; 100 % is one core fully busy) and memory (VmRSS
//!   and VmHWM from `/proc/PID/status` at the end);
//! - the event counts of the whole run: every node must have joined once,
//!   and no node may have been lost. The example exits 1 otherwise.
//!
//! Needs Linux (`/proc`, and `kill` and `getconf` on the path). About two
//! sockets per node are open where the nodes run and one per node in the
//! master; the open-file limit is raised to its hard limit (`ulimit -Hn`).
//! Beyond `--nodes-per-process` nodes (5,000 by default, some 10,000
//! sockets), the nodes run in helper processes, copies of this example
//! started with `--serve-nodes`, each with its own limit; their CPU time
//! is added up.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use natter_heartbeat::event::{EventStream, NodeEvent};
use natter_heartbeat::{Node, NodeConfig};
use serde_json::Value;
use tokio::sync::mpsc;

/// How long the master may take to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long all nodes may take to join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Nodes started at once, each batch registered before the next.
const START_BATCH: usize = 100;
/// Stats periods let pass after the last node joined, before measuring.
const WARMUP_PERIODS: u32 = 2;
/// How long the master may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

type Result<T, E = String> = std::result::Result<T, E>;

/// One master, many nodes, on loopback: ping round trips, the master's CPU
/// and memory, and a check that no healthy node is reported lost.
#[derive(Debug, Parser)]
#[command(name = "scale")]
struct Args {
    /// Nodes to start [default: 1000; 100 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    nodes: Option<u32>,
    /// Length of the measured window, in seconds [default: 30; 5 with
    /// --quick].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    secs: Option<u64>,
    /// The master's ping interval (and stats period), in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    interval_ms: u64,
    /// A smoke run: 100 nodes for 5 s, unless --nodes or --secs say
    /// otherwise.
    #[arg(long)]
    quick: bool,
    /// The `heartbeat` binary to run as the master [default: the one next
    /// to this example, target/<profile>/heartbeat].
    #[arg(long, value_name = "PATH")]
    master_bin: Option<PathBuf>,
    /// Print each stats period's counts on stderr.
    #[arg(long)]
    verbose: bool,
    /// Run at most this many nodes in one process; more go to helper
    /// processes.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..))]
    nodes_per_process: u32,
    /// (Internal) be a helper: run `--count` nodes from number `--first`
    /// for the master at ADDR until stdin closes.
    #[arg(long, value_name = "ADDR", hide = true)]
    serve_nodes: Option<String>,
    /// (Internal) the first node's number, for --serve-nodes.
    #[arg(long, default_value_t = 0, hide = true)]
    first: u32,
    /// (Internal) how many nodes, for --serve-nodes.
    #[arg(long, default_value_t = 0, hide = true)]
    count: u32,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(master) = &args.serve_nodes {
        return match serve_nodes(master, args.first, args.count).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("scale helper: error: {error}");
                ExitCode::FAILURE
            }
        };
    }
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("scale: error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the whole check; `Ok(false)` if the master reported what it
/// should not have.
async fn run(args: Args) -> Result<bool> {
    let nodes = args.nodes.unwrap_or(if args.quick { 100 } else { 1000 });
    let secs = args.secs.unwrap_or(if args.quick { 5 } else { 30 });
    let interval = Duration::from_millis(args.interval_ms);
    // Whole stats periods in the window.
    let periods = u32::try_from((secs * 1000).div_ceil(args.interval_ms))
        .map_err(|_| "--secs is too long for --interval-ms")?;

    let fd_limit = rlimit::increase_nofile_limit(u64::MAX)
        .map_err(|error| format!("cannot raise the open-file limit: {error}"))?;
    let fds_needed = 2 * u64::from(nodes.min(args.nodes_per_process)) + 100;
    if fd_limit < fds_needed {
        return Err(format!(
            "the open-file limit is {fd_limit}, {nodes} nodes need about {fds_needed}: \
             raise the hard limit (ulimit -Hn) or use fewer --nodes"
        ));
    }

    let master_bin = match args.master_bin {
        Some(path) => path,
        None => default_master_bin()?,
    };
    let mut master = MasterProcess::spawn(&master_bin, args.interval_ms)?;
    let master_addr = master.listening().await?;
    let pid = master.pid();
    let clk_tck = clock_ticks_per_second();
    eprintln!(
        "master {} (pid {pid}) listening on {master_addr}; starting {nodes} nodes \
         (open-file limit {fd_limit}, load average {})",
        master_bin.display(),
        load_average()
    );

    // The nodes, all at once; they register in the background. Beyond
    // one process's share, in helper processes.
    let started = Instant::now();
    let own_nodes = nodes.min(args.nodes_per_process);
    let mut helpers = Vec::new();
    let mut first = own_nodes;
    while first < nodes {
        let count = (nodes - first).min(args.nodes_per_process);
        helpers.push(Helper::spawn(&master_addr, first, count)?);
        first += count;
    }
    let mut running = start_nodes(&master_addr, 0, own_nodes).await?;
    for helper in &mut helpers {
        helper.ready().await?;
    }
    let all_started = started.elapsed();
    let deadline = Instant::now() + JOIN_TIMEOUT;
    while master.counts.joined < u64::from(nodes) {
        master.next_event(deadline, "every node joined").await?;
    }
    let all_joined = started.elapsed();
    eprintln!(
        "{nodes} nodes started in {:.2} s, all joined after {:.2} s; warming up for {WARMUP_PERIODS} \
         stats periods, then measuring for {periods} periods of {} ms",
        all_started.as_secs_f64(),
        all_joined.as_secs_f64(),
        args.interval_ms
    );

    // Events that waited while the nodes were starting are old news: the
    // window starts on fresh ones.
    master.drain_backlog();
    let period_deadline = || Instant::now() + interval * 3 + Duration::from_secs(5);
    for _ in 0..WARMUP_PERIODS {
        master.next_stats(period_deadline()).await?;
    }

    // The window: from one stats report to the `periods`-th after it.
    let load_before = load_average();
    let master_cpu_before = cpu_ticks(pid)?;
    let node_pids: Vec<u32> = std::iter::once(std::process::id())
        .chain(helpers.iter().map(Helper::pid))
        .collect();
    let own_cpu_before = cpu_ticks_of(&node_pids)?;
    let window_start = Instant::now();
    let mut rtt_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .map_err(|error| format!("histogram: {error}"))?;
    let (mut answered, mut failed) = (0u64, 0u64);
    for _ in 0..periods {
        let stats = master.next_stats(period_deadline()).await?;
        answered += stats.answered;
        if args.verbose {
            eprintln!(
                "{:6.2} s: {} answered, {} failed",
                window_start.elapsed().as_secs_f64(),
                stats.answered,
                stats.failed
            );
        }
        failed += stats.failed;
        for rtt in stats.rtt_us {
            rtt_us
                .record(rtt.clamp(1, 60_000_000))
                .map_err(|error| format!("histogram: {error}"))?;
        }
    }
    let wall = window_start.elapsed();
    let master_cpu = cpu_ticks(pid)?.since(master_cpu_before, clk_tck);
    let own_cpu = cpu_ticks_of(&node_pids)?.since(own_cpu_before, clk_tck);
    let memory = memory_kib(pid)?;
    let load_after = load_average();

    master.stop().await;
    // What this process's nodes saw after their first registration (whose
    // event was read while starting them): a node registers again only if
    // it lost the master.
    let (mut registered, mut master_lost) = (0u64, 0u64);
    for (_, events) in &mut running {
        while let Some(event) = events.try_recv() {
            match event {
                NodeEvent::Registered { .. } => registered += 1,
                NodeEvent::MasterLost => master_lost += 1,
                _ => {}
            }
        }
    }
    drop(running);
    drop(helpers);
    let counts = master.counts;

    let rounds = answered as f64 / f64::from(nodes);
    println!(
        "scale: 1 master (own process), {nodes} nodes ({} process{}), loopback",
        node_pids.len(),
        if node_pids.len() == 1 { "" } else { "es" }
    );
    println!(
        "  interval {} ms, window {:.1} s ({periods} stats periods after {WARMUP_PERIODS} of warm-up), \
         all {nodes} nodes joined {:.2} s after the first started",
        args.interval_ms,
        wall.as_secs_f64(),
        all_joined.as_secs_f64()
    );
    println!(
        "  load average before / after the window: {load_before} / {load_after} ({} CPUs)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "  pings in the window: {answered} answered ({rounds:.2} per node, one per interval), {failed} failed"
    );
    println!(
        "  ping round trip (master-measured): p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
        rtt_us.value_at_quantile(0.50),
        rtt_us.value_at_quantile(0.90),
        rtt_us.value_at_quantile(0.99),
        rtt_us.value_at_quantile(0.999),
        rtt_us.max()
    );
    println!(
        "  master CPU: {:.2} s user + {:.2} s sys over {:.1} s = {:.1} % of one core",
        master_cpu.user,
        master_cpu.system,
        wall.as_secs_f64(),
        master_cpu.percent_of(wall)
    );
    println!(
        "  master memory: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
        memory.rss as f64 / 1024.0,
        memory.hwm as f64 / 1024.0
    );
    println!(
        "  nodes' process CPU (for comparison): {:.2} s user + {:.2} s sys = {:.1} % of one core",
        own_cpu.user,
        own_cpu.system,
        own_cpu.percent_of(wall)
    );
    println!(
        "  master events over the whole run: node_joined {} (want {nodes}), node_lost {} (want 0), \
         node_recovered {}, node_left {}, registration_rejected {}",
        counts.joined, counts.lost, counts.recovered, counts.left, counts.rejected
    );
    println!(
        "  the {own_nodes} nodes of this process, after their first registration: \
         {registered} registered again, {master_lost} master_lost"
    );
    let ok = counts.joined == u64::from(nodes) && counts.lost == 0;
    println!(
        "  {}",
        if ok {
            "OK: every node joined once and none was reported lost"
        } else {
            "FAILED: a node was reported lost, or did not join exactly once"
        }
    );
    Ok(ok)
}

/// Starts nodes `n{first}`... (`count` of them) for the master at
/// `master`, [`START_BATCH`] at a time: each batch is registered before
/// the next starts. All at once, 10,000 registrations on a busy 2-core
/// machine take longer than a node waits for an answer (1 s); the nodes
/// then register again and are reported as joining twice.
async fn start_nodes(
    master: &str,
    first: u32,
    count: u32,
) -> Result<Vec<(Node, EventStream<NodeEvent>)>> {
    let mut running: Vec<(Node, EventStream<NodeEvent>)> = Vec::with_capacity(count as usize);
    let mut registered = 0;
    for i in first..first + count {
        // Each node on a loopback address of its own, as each would be on
        // a host of its own: 10,000 listeners on one address would take a
        // third of the ephemeral ports, which the master's connections
        // and the nodes' registrations need too.
        let config = NodeConfig {
            listen: SocketAddr::from((
                [
                    127,
                    1 + (i / 62_500) as u8,
                    (i / 250 % 250) as u8,
                    (i % 250 + 1) as u8,
                ],
                0,
            )),
            ..NodeConfig::new(format!("n{i:05}"), master)
        };
        let node = Node::start(config)
            .await
            .map_err(|error| format!("node {i} did not start: {error}"))?;
        running.push(node);
        if running.len() - registered == START_BATCH || i + 1 == first + count {
            let deadline = Instant::now() + JOIN_TIMEOUT;
            for (node, events) in &mut running[registered..] {
                loop {
                    let event = tokio::time::timeout_at(deadline.into(), events.recv())
                        .await
                        .map_err(|_| format!("node at {} did not register", node.local_addr()))?
                        .ok_or("a node stopped")?;
                    if let NodeEvent::Registered { .. } = event {
                        break;
                    }
                }
            }
            registered = running.len();
        }
    }
    Ok(running)
}

/// A helper process's life: start the nodes, say `ready`, run until the
/// parent closes stdin (or dies).
async fn serve_nodes(master: &str, first: u32, count: u32) -> Result<()> {
    rlimit::increase_nofile_limit(u64::MAX)
        .map_err(|error| format!("cannot raise the open-file limit: {error}"))?;
    let running = start_nodes(master, first, count).await?;
    println!("ready");
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await
    .map_err(|error| error.to_string())?;
    drop(running);
    Ok(())
}

/// A helper process running some of the nodes.
struct Helper {
    child: Child,
    stdout: Option<ChildStdout>,
}

impl Helper {
    fn spawn(master: &str, first: u32, count: u32) -> Result<Helper> {
        let exe = std::env::current_exe().map_err(|error| format!("where am I? {error}"))?;
        let mut child = Command::new(exe)
            .arg("--serve-nodes")
            .arg(master)
            .args(["--first", &first.to_string(), "--count", &count.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|error| format!("cannot start a helper: {error}"))?;
        let stdout = child.stdout.take();
        Ok(Helper { child, stdout })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the helper's nodes have started.
    async fn ready(&mut self) -> Result<()> {
        let stdout = self.stdout.take().ok_or("helper already waited for")?;
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        match tokio::time::timeout(JOIN_TIMEOUT, line).await {
            Ok(Ok(Ok(line))) if line.trim() == "ready" => Ok(()),
            other => Err(format!("a helper did not start its nodes: {other:?}")),
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Closing stdin tells it to stop; kill it if it lingers.
        drop(self.child.stdin.take());
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The CPU time of the processes `pids`, added up.
fn cpu_ticks_of(pids: &[u32]) -> Result<CpuTicks> {
    pids.iter()
        .try_fold(CpuTicks { user: 0, system: 0 }, |total, &pid| {
            let ticks = cpu_ticks(pid)?;
            Ok(CpuTicks {
                user: total.user + ticks.user,
                system: total.system + ticks.system,
            })
        })
}

/// `heartbeat` next to this example: the example is
/// `target/<profile>/examples/scale`, the binary `target/<profile>/heartbeat`.
fn default_master_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|error| format!("where am I? {error}"))?;
    let profile_dir = exe
        .parent()
        .and_then(|examples| examples.parent())
        .ok_or("cannot find the target directory")?;
    let bin = profile_dir.join(format!("heartbeat{}", std::env::consts::EXE_SUFFIX));
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "no master binary at {}: build it first with \
             `cargo build --release -p natter-heartbeat` (same profile as this example), \
             or name one with --master-bin",
            bin.display()
        ))
    }
}

/// The master process, its events, and what they counted.
struct MasterProcess {
    child: Child,
    events: mpsc::UnboundedReceiver<Value>,
    counts: Counts,
}

/// The master's node events seen so far.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    joined: u64,
    lost: u64,
    recovered: u64,
    left: u64,
    rejected: u64,
}

/// One `ping_stats` event.
struct PingStats {
    answered: u64,
    failed: u64,
    rtt_us: Vec<u64>,
}

impl MasterProcess {
    /// Starts `heartbeat master` with JSON events and ping statistics every
    /// `interval_ms`, on a free loopback port. Its logs go to this
    /// process's stderr, warnings only unless RUST_LOG says otherwise.
    fn spawn(bin: &Path, interval_ms: u64) -> Result<MasterProcess> {
        let interval = interval_ms.to_string();
        let mut command = Command::new(bin);
        command
            .args(["master", "--json", "--listen", "127.0.0.1:0"])
            .args(["--interval-ms", &interval, "--stats-interval-ms", &interval])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "warn");
        }
        let mut child = command
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout from the master")?;
        let (sender, events) = mpsc::unbounded_channel();
        // Reads until the master closes its stdout (it exits).
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({"event": "not_json", "line": line}));
                if sender.send(event).is_err() {
                    break;
                }
            }
        });
        Ok(MasterProcess {
            child,
            events,
            counts: Counts::default(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the `listening` event; returns the address.
    async fn listening(&mut self) -> Result<String> {
        let event = self
            .next_event(Instant::now() + START_TIMEOUT, "the listening event")
            .await?;
        match (&event["event"], &event["addr"]) {
            (Value::String(kind), Value::String(addr)) if kind == "listening" => Ok(addr.clone()),
            _ => Err(format!(
                "the master's first event is not listening: {event}"
            )),
        }
    }

    /// The next event, counted; an error if none comes by `deadline` or
    /// the master stopped (`what` says what was being waited for).
    async fn next_event(&mut self, deadline: Instant, what: &str) -> Result<Value> {
        let event = tokio::time::timeout_at(deadline.into(), self.events.recv())
            .await
            .map_err(|_| {
                format!(
                    "timed out waiting for {what}; counts so far {:?}",
                    self.counts
                )
            })?
            .ok_or_else(|| format!("the master stopped while waiting for {what}"))?;
        self.count(&event);
        Ok(event)
    }

    /// Counts `event` if it is one of those counted.
    fn count(&mut self, event: &Value) {
        match event["event"].as_str() {
            Some("node_joined") => self.counts.joined += 1,
            Some("node_lost") => {
                self.counts.lost += 1;
                eprintln!("master reported a node lost: {event}");
            }
            Some("node_recovered") => self.counts.recovered += 1,
            Some("node_left") => self.counts.left += 1,
            Some("registration_rejected") => self.counts.rejected += 1,
            Some("events_dropped") => eprintln!("the master dropped events: {event}"),
            _ => {}
        }
    }

    /// Counts the events already waiting, without waiting for more.
    fn drain_backlog(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.count(&event);
        }
    }

    /// The next `ping_stats` event, counting the others on the way.
    async fn next_stats(&mut self, deadline: Instant) -> Result<PingStats> {
        loop {
            let event = self.next_event(deadline, "ping_stats").await?;
            if event["event"] != "ping_stats" {
                continue;
            }
            let number = |field: &str| {
                event[field]
                    .as_u64()
                    .ok_or_else(|| format!("ping_stats without a number {field}: {event}"))
            };
            let rtt_us = event["rtt_us"]
                .as_array()
                .and_then(|rtts| rtts.iter().map(Value::as_u64).collect::<Option<Vec<_>>>())
                .ok_or_else(|| format!("ping_stats without rtt_us: {event}"))?;
            return Ok(PingStats {
                answered: number("answered")?,
                failed: number("failed")?,
                rtt_us,
            });
        }
    }

    /// SIGTERM, then waits (bounded) for the exit, counting the last
    /// events; SIGKILL if it does not exit in time.
    async fn stop(&mut self) {
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + EXIT_TIMEOUT;
        // Read what the master printed before exiting, until its stdout
        // closes (it exited) or the deadline.
        while self
            .next_event(deadline, "the master to exit")
            .await
            .is_ok()
        {}
        // Its stdout closes just before it exits: wait a little for that.
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("warning: the master did not exit within {EXIT_TIMEOUT:?} of SIGTERM: killed");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MasterProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU time of a process so far, in clock ticks.
#[derive(Debug, Clone, Copy)]
struct CpuTicks {
    user: u64,
    system: u64,
}

/// CPU time over a window, in seconds.
#[derive(Debug, Clone, Copy)]
struct CpuSeconds {
    user: f64,
    system: f64,
}

impl CpuTicks {
    fn since(self, before: CpuTicks, ticks_per_second: u64) -> CpuSeconds {
        let seconds = |ticks: u64| ticks as f64 / ticks_per_second as f64;
        CpuSeconds {
            user: seconds(self.user - before.user),
            system: seconds(self.system - before.system),
        }
    }
}

impl CpuSeconds {
    fn percent_of(self, wall: Duration) -> f64 {
        100.0 * (self.user + self.system) / wall.as_secs_f64()
    }
}

/// utime and stime of `pid`, fields 14 and 15 of `/proc/PID/stat`.
fn cpu_ticks(pid: u32) -> Result<CpuTicks> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|error| format!("cannot read /proc/{pid}/stat: {error}"))?;
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields from after its closing parenthesis, where field 3 is.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("no command name in /proc/PID/stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |number: usize| -> Result<u64> {
        fields
            .get(number - 3)
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| format!("no field {number} in /proc/{pid}/stat"))
    };
    Ok(CpuTicks {
        user: field(14)?,
        system: field(15)?,
    })
}

/// The unit of `/proc/PID/stat` times (`getconf CLK_TCK`; 100 on Linux as
/// good as always).
fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

/// Resident memory of a process, KiB.
struct Memory {
    rss: u64,
    hwm: u64,
}

/// VmRSS and VmHWM of `pid` from `/proc/PID/status`.
fn memory_kib(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|error| format!("cannot read /proc/{pid}/status: {error}"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(Memory {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
    })
}

/// The 1-, 5- and 15-minute load averages, as `/proc/loadavg` has them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "unknown".into())
}
