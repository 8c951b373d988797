//! The `heartbeat` command line (documented in the crate's README),
//! parsed by clap, and how it becomes a [`MasterConfig`] or [`NodeConfig`].
//!
//! ```text
//! heartbeat                                   # the demo
//! heartbeat master [--listen ADDR] [--interval-ms 1000] [--failures 3]
//!                  [--ping-timeout-ms MS] [--token T] [--json]
//!                  [--max-nodes 10000] [--forget-after-ms 300000]
//!                  [--stats-interval-ms MS] [--detector fixed|phi]
//!                  [--phi-threshold 8.0]
//! heartbeat node --id NAME --master ADDR [--listen ADDR]
//!                [--master-timeout-ms 10000] [--token T] [--json]
//! ```
//!
//! The master listens on [`DEFAULT_MASTER_LISTEN`] (`127.0.0.1:7940`) unless
//! told otherwise: the port next to the seed demo's heartbeat port 7939, so
//! a node started with `--master 127.0.0.1:7940` finds a master started
//! with no flags. `--stats-interval-ms` is off by default: it adds
//! `ping_stats` events (see
//! [`MasterEvent::PingStats`](crate::event::MasterEvent::PingStats)) for
//! measuring a master. Bad arguments make clap print the problem on stderr
//! and exit 2.
//!
//! This module depends on the core ([`Master`](crate::Master),
//! [`Node`](crate::Node)), never the other way round: the conversions
//! from the arguments to the configurations live here.
//!
//! ```
//! use clap::Parser;
//! use natter_heartbeat::cli::{Cli, Command};
//!
//! let cli = Cli::try_parse_from(["heartbeat", "master", "--interval-ms", "200"]).unwrap();
//! let Some(Command::Master(args)) = cli.command else { unreachable!() };
//! assert_eq!(args.interval().as_millis(), 200);
//! assert_eq!(args.ping_timeout().as_millis(), 200, "defaults to the interval");
//! assert_eq!(args.failures.get(), 3);
//! ```

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Parser, Subcommand};

use crate::detector::{DEFAULT_FORGET_AFTER, DEFAULT_MAX_NODES};
use crate::rule::DEFAULT_PHI_THRESHOLD;
use crate::{DetectorChoice, MasterConfig, NodeConfig};

/// Where the master listens for registrations when `--listen` is not given.
pub const DEFAULT_MASTER_LISTEN: &str = "127.0.0.1:7940";

/// Where a node's heartbeat listener binds when `--listen` is not given: a
/// free port on loopback.
pub const DEFAULT_NODE_LISTEN: &str = crate::node::DEFAULT_NODE_LISTEN;

/// The whole command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "heartbeat",
    version,
    about = "A master pings its registered nodes and reports which are lost",
    long_about = "A master pings its registered nodes and reports which are lost.\n\n\
                  With no subcommand, runs a self-contained demo on loopback."
)]
pub struct Cli {
    /// `master`, `node`, or nothing for the demo.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The role to run.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Accept node registrations and ping every node each interval.
    Master(MasterArgs),
    /// Register with a master and answer its pings.
    Node(NodeArgs),
}

/// `heartbeat master ...`
#[derive(Debug, Clone, Args)]
pub struct MasterArgs {
    /// Address for node registrations; port 0 picks a free one.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_MASTER_LISTEN)]
    pub listen: SocketAddr,

    /// Ping every node this often, in milliseconds.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub interval_ms: u64,

    /// Consecutive failed pings after which a node is reported lost (with
    /// `--detector fixed`).
    #[arg(long, value_name = "N", default_value = "3", value_parser = parse_at_least_one)]
    pub failures: NonZeroU32,

    /// How a node is judged lost: `fixed`, after `--failures` failed pings
    /// in a row; `phi`, phi accrual over the intervals between its answers.
    #[arg(long, value_name = "fixed|phi", value_enum, default_value_t = Detector::Fixed)]
    pub detector: Detector,

    /// With `--detector phi`: the suspicion level above which a node is
    /// reported lost.
    #[arg(long, value_name = "PHI", default_value_t = DEFAULT_PHI_THRESHOLD, value_parser = parse_threshold)]
    pub phi_threshold: f64,

    /// How long to wait for each pong, in milliseconds [default: the
    /// interval].
    #[arg(
        long,
        value_name = "MS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub ping_timeout_ms: Option<u64>,

    /// Accept only registrations carrying this token.
    #[arg(long, value_name = "T")]
    pub token: Option<String>,

    /// Print events as JSON lines instead of sentences.
    #[arg(long)]
    pub json: bool,

    /// Serve metrics in Prometheus text format at http://IP:PORT/metrics
    /// (the address is logged on stderr).
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_listen: Option<SocketAddr>,

    /// At most this many nodes, live and lost: a registration of a new id
    /// beyond it is rejected with reason `node limit`.
    #[arg(
        long,
        value_name = "N",
        default_value_t = DEFAULT_MAX_NODES as u64,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub max_nodes: u64,

    /// Forget a node lost for this long, in milliseconds (it may join
    /// again later).
    #[arg(
        long,
        value_name = "MS",
        default_value_t = DEFAULT_FORGET_AFTER.as_millis() as u64,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub forget_after_ms: u64,

    /// Also report ping statistics this often, in milliseconds: pings
    /// answered and failed, and each round trip, as `ping_stats` events
    /// [default: off].
    #[arg(
        long,
        value_name = "MS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub stats_interval_ms: Option<u64>,
}

impl MasterArgs {
    /// `--interval-ms` as a duration.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// `--ping-timeout-ms` as a duration, or the interval if not given.
    pub fn ping_timeout(&self) -> Duration {
        self.ping_timeout_ms
            .map_or_else(|| self.interval(), Duration::from_millis)
    }

    /// `--stats-interval-ms` as a duration, if given.
    pub fn stats_interval(&self) -> Option<Duration> {
        self.stats_interval_ms.map(Duration::from_millis)
    }

    /// `--forget-after-ms` as a duration.
    pub fn forget_after(&self) -> Duration {
        Duration::from_millis(self.forget_after_ms)
    }
}

impl From<&MasterArgs> for MasterConfig {
    fn from(args: &MasterArgs) -> Self {
        MasterConfig {
            listen: args.listen,
            interval: args.interval(),
            failures: args.failures,
            detector: match args.detector {
                Detector::Fixed => DetectorChoice::Fixed,
                Detector::Phi => DetectorChoice::Phi {
                    threshold: args.phi_threshold,
                },
            },
            ping_timeout: args.ping_timeout(),
            token: args.token.clone(),
            max_nodes: usize::try_from(args.max_nodes).unwrap_or(usize::MAX),
            forget_after: args.forget_after(),
            stats_interval: args.stats_interval(),
            ..MasterConfig::new(args.listen)
        }
    }
}

/// `--detector`: which rule decides that a node is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Detector {
    /// `--failures` failed pings in a row.
    Fixed,
    /// Phi accrual.
    Phi,
}

/// `heartbeat node ...`
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// This node's name, unique among the master's nodes.
    #[arg(long, value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
    pub id: String,

    /// The master's registration address, HOST:PORT.
    #[arg(long, value_name = "ADDR", value_parser = parse_host_port)]
    pub master: String,

    /// Address for the heartbeat listener the master pings; port 0 picks a
    /// free one.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_NODE_LISTEN)]
    pub listen: SocketAddr,

    /// Report the master lost after this long without a word from it, in
    /// milliseconds.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub master_timeout_ms: u64,

    /// Token to present when registering.
    #[arg(long, value_name = "T")]
    pub token: Option<String>,

    /// Print events as JSON lines instead of sentences.
    #[arg(long)]
    pub json: bool,
}

impl NodeArgs {
    /// `--master-timeout-ms` as a duration.
    pub fn master_timeout(&self) -> Duration {
        Duration::from_millis(self.master_timeout_ms)
    }
}

impl From<&NodeArgs> for NodeConfig {
    fn from(args: &NodeArgs) -> Self {
        NodeConfig {
            listen: args.listen,
            master_timeout: args.master_timeout(),
            token: args.token.clone(),
            ..NodeConfig::new(args.id.clone(), args.master.clone())
        }
    }
}

/// Accepts a number above 0.
fn parse_threshold(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(threshold) if threshold.is_finite() && threshold > 0.0 => Ok(threshold),
        _ => Err(format!("expected a number above 0, got {value:?}")),
    }
}

/// Accepts a whole number of 1 or more.
fn parse_at_least_one(value: &str) -> Result<NonZeroU32, String> {
    let n: u32 = value
        .parse()
        .map_err(|_| format!("expected a whole number, got {value:?}"))?;
    NonZeroU32::new(n).ok_or_else(|| "must be 1 or more".to_owned())
}

/// Accepts `HOST:PORT` (an IP or a name, resolved when connecting) and
/// keeps it as written, since the node reports it back verbatim in its
/// `registered` event.
fn parse_host_port(value: &str) -> Result<String, String> {
    if value.parse::<SocketAddr>().is_ok() {
        return Ok(value.to_owned());
    }
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| format!("expected HOST:PORT, got {value:?}"))?;
    if host.is_empty() || host.contains([':', '[', ']']) || host.contains(char::is_whitespace) {
        return Err(format!("expected HOST:PORT, got {value:?}"));
    }
    port.parse::<u16>()
        .map_err(|_| format!("invalid port {port:?} in {value:?}"))?;
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("heartbeat").chain(args.iter().copied()))
    }

    fn master(args: &[&str]) -> MasterArgs {
        let mut all = vec!["master"];
        all.extend_from_slice(args);
        match parse(&all).unwrap().command {
            Some(Command::Master(args)) => args,
            other => panic!("not master: {other:?}"),
        }
    }

    fn node(args: &[&str]) -> NodeArgs {
        let mut all = vec!["node"];
        all.extend_from_slice(args);
        match parse(&all).unwrap().command {
            Some(Command::Node(args)) => args,
            other => panic!("not node: {other:?}"),
        }
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_detector_is_fixed_unless_phi_is_asked_for() {
        let config = MasterConfig::from(&master(&[]));
        assert_eq!(config.detector, DetectorChoice::Fixed);
        let config = MasterConfig::from(&master(&["--detector", "phi"]));
        assert_eq!(config.detector, DetectorChoice::Phi { threshold: 8.0 });
        let config = MasterConfig::from(&master(&["--detector", "phi", "--phi-threshold", "10.5"]));
        assert_eq!(config.detector, DetectorChoice::Phi { threshold: 10.5 });
        for bad in [
            &["--detector", "gossip"][..],
            &["--phi-threshold", "0"],
            &["--phi-threshold=-1"],
            &["--phi-threshold", "NaN"],
        ] {
            let mut all = vec!["master"];
            all.extend_from_slice(bad);
            let error = parse(&all).unwrap_err();
            assert!(
                matches!(
                    error.kind(),
                    ErrorKind::InvalidValue | ErrorKind::ValueValidation
                ),
                "{bad:?}: {:?}",
                error.kind()
            );
        }
    }

    #[test]
    fn no_arguments_runs_the_demo() {
        assert!(parse(&[]).unwrap().command.is_none());
    }

    #[test]
    fn master_defaults() {
        let args = master(&[]);
        assert_eq!(args.listen, DEFAULT_MASTER_LISTEN.parse().unwrap());
        assert_eq!(args.listen.to_string(), "127.0.0.1:7940");
        assert_eq!(args.interval(), Duration::from_millis(1000));
        assert_eq!(args.failures.get(), 3);
        assert_eq!(args.ping_timeout_ms, None);
        assert_eq!(args.ping_timeout(), Duration::from_millis(1000));
        assert_eq!(args.token, None);
        assert!(!args.json);
        assert_eq!(args.stats_interval(), None, "no ping_stats unless asked");
        assert_eq!(args.max_nodes, 10_000);
        assert_eq!(args.forget_after(), Duration::from_secs(300));
        let config = MasterConfig::from(&args);
        assert_eq!(config.max_nodes, 10_000);
        assert_eq!(config.forget_after, Duration::from_secs(300));
        assert_eq!(
            config,
            MasterConfig::new(args.listen),
            "the flags' defaults are the library's"
        );
    }

    #[test]
    fn ping_timeout_defaults_to_the_interval() {
        assert_eq!(
            master(&["--interval-ms", "250"]).ping_timeout(),
            Duration::from_millis(250)
        );
        assert_eq!(
            master(&["--interval-ms", "250", "--ping-timeout-ms", "100"]).ping_timeout(),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn master_flags() {
        let args = master(&[
            "--listen",
            "0.0.0.0:0",
            "--interval-ms",
            "200",
            "--failures",
            "5",
            "--ping-timeout-ms",
            "150",
            "--token",
            "s3cret",
            "--json",
            "--stats-interval-ms",
            "1000",
            "--max-nodes",
            "5",
            "--forget-after-ms",
            "2500",
        ]);
        assert_eq!(args.listen, "0.0.0.0:0".parse().unwrap());
        assert_eq!(args.interval_ms, 200);
        assert_eq!(args.failures.get(), 5);
        assert_eq!(args.ping_timeout_ms, Some(150));
        assert_eq!(args.token.as_deref(), Some("s3cret"));
        assert!(args.json);
        assert_eq!(args.stats_interval(), Some(Duration::from_secs(1)));
        let config = MasterConfig::from(&args);
        assert_eq!(config.max_nodes, 5);
        assert_eq!(config.forget_after, Duration::from_millis(2500));
        assert_eq!(config.token.as_deref(), Some("s3cret"));
        assert_eq!(config.ping_timeout, Duration::from_millis(150));
    }

    #[test]
    fn node_defaults() {
        let args = node(&["--id", "n1", "--master", "127.0.0.1:7940"]);
        assert_eq!(args.id, "n1");
        assert_eq!(args.master, "127.0.0.1:7940");
        assert_eq!(args.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(args.master_timeout(), Duration::from_secs(10));
        assert_eq!(args.token, None);
        assert!(!args.json);
        assert_eq!(
            NodeConfig::from(&args),
            NodeConfig::new("n1", "127.0.0.1:7940"),
            "the flags' defaults are the library's"
        );
    }

    #[test]
    fn node_flags() {
        let args = node(&[
            "--id",
            "n1",
            "--master",
            "localhost:7940",
            "--listen",
            "[::1]:4000",
            "--master-timeout-ms",
            "3000",
            "--token",
            "s3cret",
            "--json",
        ]);
        assert_eq!(args.master, "localhost:7940", "kept as written");
        assert_eq!(args.listen, "[::1]:4000".parse().unwrap());
        assert_eq!(args.master_timeout(), Duration::from_secs(3));
        assert_eq!(args.token.as_deref(), Some("s3cret"));
        assert!(args.json);
    }

    #[test]
    fn master_address_forms() {
        for ok in [
            "127.0.0.1:7940",
            "localhost:7940",
            "[::1]:7940",
            "example.com:1",
        ] {
            assert_eq!(node(&["--id", "n1", "--master", ok]).master, ok);
        }
        for bad in [
            "127.0.0.1",
            "localhost",
            ":7940",
            "host:",
            "host:70000",
            "::1:7940",
            "a b:1",
        ] {
            let err = parse(&["node", "--id", "n1", "--master", bad]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{bad}");
        }
    }

    #[test]
    fn bad_arguments_are_usage_errors_exit_2() {
        let table: &[(&[&str], ErrorKind)] = &[
            (&["master", "--bogus"], ErrorKind::UnknownArgument),
            (
                &["master", "--interval-ms", "0"],
                ErrorKind::ValueValidation,
            ),
            (
                &["master", "--interval-ms", "-5"],
                ErrorKind::UnknownArgument,
            ),
            (
                &["master", "--interval-ms", "soon"],
                ErrorKind::ValueValidation,
            ),
            (&["master", "--failures", "0"], ErrorKind::ValueValidation),
            (&["master", "--max-nodes", "0"], ErrorKind::ValueValidation),
            (
                &["master", "--forget-after-ms", "0"],
                ErrorKind::ValueValidation,
            ),
            (
                &["master", "--ping-timeout-ms", "0"],
                ErrorKind::ValueValidation,
            ),
            (
                &["master", "--stats-interval-ms", "0"],
                ErrorKind::ValueValidation,
            ),
            (
                &["master", "--listen", "localhost:7940"],
                ErrorKind::ValueValidation,
            ),
            (&["master", "--listen"], ErrorKind::InvalidValue),
            (
                &["node", "--master", "127.0.0.1:7940"],
                ErrorKind::MissingRequiredArgument,
            ),
            (&["node", "--id", "n1"], ErrorKind::MissingRequiredArgument),
            (
                &["node", "--id", "", "--master", "127.0.0.1:7940"],
                ErrorKind::InvalidValue,
            ),
            (
                &[
                    "node",
                    "--id",
                    "n1",
                    "--master",
                    "127.0.0.1:7940",
                    "--master-timeout-ms",
                    "0",
                ],
                ErrorKind::ValueValidation,
            ),
            (
                &[
                    "node",
                    "--id",
                    "n1",
                    "--master",
                    "127.0.0.1:7940",
                    "--interval-ms",
                    "5",
                ],
                ErrorKind::UnknownArgument,
            ),
            (&["--json"], ErrorKind::UnknownArgument),
            (&["worker"], ErrorKind::InvalidSubcommand),
        ];
        for (args, kind) in table {
            let err = parse(args).unwrap_err();
            assert_eq!(err.kind(), *kind, "{args:?}: {err}");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn failures_must_be_at_least_one() {
        assert_eq!(master(&["--failures", "1"]).failures.get(), 1);
        let err = parse(&["master", "--failures", "0"]).unwrap_err();
        assert!(err.to_string().contains("must be 1 or more"), "{err}");
    }

    #[test]
    fn help_and_version_exit_0() {
        for args in [
            &["--help"][..],
            &["master", "--help"],
            &["node", "--help"],
            &["--version"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 0, "{args:?}");
        }
    }

    #[test]
    fn help_documents_the_master_default_address() {
        let help = Cli::command()
            .find_subcommand_mut("master")
            .unwrap()
            .render_help()
            .to_string();
        assert!(help.contains("[default: 127.0.0.1:7940]"), "{help}");
    }
}
