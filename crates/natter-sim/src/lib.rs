//! natter-sim: deterministic fault simulation for natter, for tests.
//!
//! Every fault test of the workspace that runs on loopback sees processes
//! die or freeze, but never a link that partitions, delays or drops.
//! [turmoil](https://docs.rs/turmoil) simulates hosts and the links between
//! them on simulated time, from a seed; this crate lets natter run on it:
//!
//! - [`net`]: a natter [`Listener`](natter::transport::Listener) and
//!   [`Dial`](natter::transport::Dial) over turmoil's TCP, so natter's real
//!   server and client (and anything built on them, such as the heartbeat
//!   master and node) run inside turmoil hosts unchanged;
//! - [`Timeline`]: a run's fault schedule, applied at instants of
//!   simulated time;
//! - [`mod@seeds`]: the runner that runs a scenario for each seed, and prints
//!   the command that replays a failing one.
//!
//! The crate is a dev-dependency only; nothing in the programs depends on
//! it. The scenarios live in `tests/simulation.rs` of this crate (natter's
//! client and server) and of `natter-heartbeat`.

pub mod net;
pub mod seeds;
mod timeline;

pub use timeline::Timeline;
