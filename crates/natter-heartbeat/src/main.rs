//! The `heartbeat` binary: parse the command line, send logs to stderr, run
//! the chosen role. The command line, events and exit codes are described
//! in the crate's README and in [`natter_heartbeat::cli`].
//!
//! Exit status: 0 on success, 1 on an error (printed on stderr), 2 for bad
//! arguments (clap's usage error).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use natter_heartbeat::cli::{Cli, Command};
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Log lines waiting for stderr, at most; newer ones are dropped (and
/// counted) while stderr does not take them. Some 2 MB at most.
const LOG_QUEUE_LINES: usize = 8192;

/// How often to check whether log lines were dropped, and say so.
const LOG_DROP_CHECK: Duration = Duration::from_secs(10);

/// How long the final error message may take to reach stderr.
const ERROR_OUTPUT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the logs queued at exit may take to reach stderr.
const LOG_FLUSH_TIMEOUT: Duration = Duration::from_millis(300);

fn main() -> ExitCode {
    // Exits 2 on bad arguments, 0 for --help and --version.
    let cli = Cli::parse();
    // The demo narrates on stdout; its logs show only what went wrong
    // (failed pings, the lost node) unless RUST_LOG asks for more.
    let (log_guard, dropped_logs) = init_logging(if cli.command.is_none() {
        "warn"
    } else {
        "info"
    });
    raise_open_file_limit();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(log_guard, &err),
    };
    let result = runtime.block_on(async {
        tokio::spawn(report_dropped_logs(dropped_logs));
        match cli.command {
            Some(Command::Master(args)) => natter_heartbeat::run_master(args).await,
            Some(Command::Node(args)) => natter_heartbeat::run_node(args).await,
            None => natter_heartbeat::run_demo().await,
        }
    });
    // Tasks still running (a blocked stdout's writer, pings being
    // abandoned) must not delay the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => {
            finish_logs(log_guard);
            ExitCode::SUCCESS
        }
        Err(err) => fail(log_guard, &err),
    }
}

/// Lets the log writer write what is queued, for [`LOG_FLUSH_TIMEOUT`] at
/// most: a stderr that nobody reads must not hold up the exit (the
/// guard alone would wait a second).
fn finish_logs(log_guard: WorkerGuard) {
    let (finished, wait) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("log-flush".into())
        .spawn(move || {
            drop(log_guard);
            let _ = finished.send(());
        });
    if spawned.is_ok() {
        let _ = wait.recv_timeout(LOG_FLUSH_TIMEOUT);
    }
}

/// Logs go to stderr, because stdout carries only events. `RUST_LOG`
/// chooses what is shown; the default is `default_level`. Colours only
/// on a terminal.
///
/// natter's own line per connection event (`natter::event`) is off unless
/// `RUST_LOG` names it: the master and the node log those errors
/// themselves, within a budget, so that thousands of peers that reset
/// their connections cannot fill stderr.
///
/// Lines are written by tracing-appender's worker thread from a bounded
/// queue, lossy: a stderr that nobody reads (a full pipe) never blocks a
/// runtime thread, and costs at most [`LOG_QUEUE_LINES`] lines of memory.
/// The guard writes what is queued when dropped (waiting a second at
/// most).
fn init_logging(default_level: &str) -> (WorkerGuard, ErrorCounter) {
    let asked = std::env::var(EnvFilter::DEFAULT_ENV).ok();
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    if !asked.is_some_and(|asked| asked.contains("natter::event")) {
        if let Ok(off) = "natter::event=off".parse() {
            filter = filter.add_directive(off);
        }
    }
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("log-writer")
        .finish(std::io::stderr());
    let dropped = writer.error_counter();
    // Fails only if a subscriber is already set, which would then log.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    (guard, dropped)
}

/// Says, in the log, how many log lines were dropped because stderr did
/// not take them, once it takes lines again.
async fn report_dropped_logs(dropped: ErrorCounter) {
    let mut reported = 0;
    let mut ticker = tokio::time::interval(LOG_DROP_CHECK);
    loop {
        ticker.tick().await;
        let now = dropped.dropped_lines();
        if now > reported {
            tracing::warn!(
                dropped = now - reported,
                "log lines dropped: stderr was not taking them"
            );
            reported = now;
        }
    }
}

/// A master keeps a connection to each of its nodes (up to `--max-nodes`,
/// 10,000 by default) and a node may face many peers: raise the soft limit
/// on open files to the hard one, which is often 1,024 against some
/// 500,000.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
}

/// Prints `err` and its causes on stderr (regardless of `RUST_LOG`, so the
/// reason for a failure is always shown), after the logs, and returns exit
/// status 1. A stderr that takes nothing delays the exit by a second or
/// two at most.
fn fail(log_guard: WorkerGuard, err: &dyn std::error::Error) -> ExitCode {
    let mut message = format!("heartbeat: error: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message.push('\n');
    finish_logs(log_guard);
    let (written, wait) = std::sync::mpsc::channel();
    let _ = std::thread::Builder::new()
        .name("error-writer".into())
        .spawn(move || {
            let _ = std::io::stderr().write_all(message.as_bytes());
            let _ = written.send(());
        });
    let _ = wait.recv_timeout(ERROR_OUTPUT_TIMEOUT);
    ExitCode::FAILURE
}
