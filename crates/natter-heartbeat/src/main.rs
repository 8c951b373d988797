//! The `heartbeat` binary: parse the command line, send logs to stderr, run
//! the chosen role. See CONTRACT.md section 2 and [`natter_heartbeat::cli`].
//!
//! Exit status: 0 on success, 1 on an error (printed on stderr), 2 for bad
//! arguments (clap's usage error).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use natter_heartbeat::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Exits 2 on bad arguments, 0 for --help and --version.
    let cli = Cli::parse();
    // The demo narrates on stdout; its logs show only what went wrong
    // (failed pings, the lost node) unless RUST_LOG asks for more.
    init_logging(if cli.command.is_none() {
        "warn"
    } else {
        "info"
    });

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&err),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::Master(args)) => natter_heartbeat::run_master(args).await,
            Some(Command::Node(args)) => natter_heartbeat::run_node(args).await,
            None => natter_heartbeat::run_demo().await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

/// Logs go to stderr, because stdout carries only events. `RUST_LOG`
/// chooses what is shown; the default is `default_level`. Colours only
/// on a terminal.
fn init_logging(default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // Fails only if a subscriber is already set, which would then log.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Prints `err` and its causes on stderr (regardless of `RUST_LOG`, so the
/// reason for a failure is always shown) and returns exit status 1.
fn fail(err: &dyn std::error::Error) -> ExitCode {
    let mut message = format!("heartbeat: error: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    eprintln!("{message}");
    ExitCode::FAILURE
}
