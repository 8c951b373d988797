//! natter-heartbeat: a master that pings its nodes and reports the lost
//! ones, built on natter. A Rust retelling of the heartbeat demo that came
//! with the Go framework chitchat.
//!
//! A master accepts registrations on one port; each node runs a heartbeat
//! listener of its own, registers its address with the master, and answers
//! the master's pings. The master reports a node lost after `failures`
//! unanswered pings in a row; a node reports the master lost when it has
//! heard nothing for `master-timeout`. The `heartbeat` binary's command line
//! and output are fixed by CONTRACT.md section 2.
//!
//! The crate is layered so that everything but the sockets is pure:
//!
//! - [`protocol`]: the JSON messages on the wire.
//! - [`detector`]: when a node (or the master) counts as lost, as state
//!   machines fed with outcomes and instants.
//! - [`event`]: what is reported on stdout, as JSON lines or sentences.
//! - [`cli`]: the command line.
//! - [`run_master`], [`run_node`], [`run_demo`]: the networking that ties
//!   these to natter's server and client.
#![warn(missing_docs)]

pub mod cli;
pub mod detector;
pub mod event;
pub mod protocol;

use cli::{MasterArgs, NodeArgs};

/// Why a `heartbeat` program stopped with an error (exit status 1).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// This part of the program is not written yet.
    #[error("{what} is not yet implemented")]
    NotYetImplemented {
        /// Which part.
        what: &'static str,
    },
    /// The master refused this node's registration (wrong or missing
    /// token). The node gives up.
    #[error("registration rejected by the master at {master}: {reason}")]
    Rejected {
        /// The master's address as given to `--master`.
        master: String,
        /// The reason the master gave.
        reason: String,
    },
    /// Events could not be written to stdout.
    #[error("cannot write events to stdout")]
    Output(#[source] std::io::Error),
}

/// Runs `heartbeat master`: listens for registrations, pings every node
/// each interval and prints master events until SIGINT or SIGTERM.
pub async fn run_master(args: MasterArgs) -> Result<(), Error> {
    let _ = args;
    Err(Error::NotYetImplemented { what: "the master" })
}

/// Runs `heartbeat node`: answers pings, registers with the master (again
/// whenever it lost the master) and prints node events; on SIGINT or
/// SIGTERM tells the master it leaves and returns.
pub async fn run_node(args: NodeArgs) -> Result<(), Error> {
    let _ = args;
    Err(Error::NotYetImplemented { what: "the node" })
}

/// Runs the demo (`heartbeat` with no arguments): a master and three nodes
/// on loopback; one node is stopped and the master reports it lost.
pub async fn run_demo() -> Result<(), Error> {
    Err(Error::NotYetImplemented { what: "the demo" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_says_rejected() {
        let err = Error::Rejected {
            master: "127.0.0.1:7940".into(),
            reason: "wrong token".into(),
        };
        assert_eq!(
            err.to_string(),
            "registration rejected by the master at 127.0.0.1:7940: wrong token"
        );
    }
}
