//! The seed-driven runner: a scenario is a function of one seed, which
//! draws everything random in it (the fault schedule, turmoil's latencies
//! and losses), checks its properties, and returns `Err` (or panics) if one
//! does not hold.
//!
//! [`Seeds::run`] runs a scenario for every seed chosen by the environment:
//!
//! | variable | seeds run |
//! |---|---|
//! | (none) | the fixed set the test names, which CI runs |
//! | `NATTER_SIM_SEED=N` | only seed `N`: replays one run |
//! | `NATTER_SIM_SEEDS=K` | `K` seeds, from `NATTER_SIM_FIRST_SEED` (default 0) |
//!
//! Every failing seed is printed with the one-line command that replays
//! it, and the test fails after the last seed, naming them all:
//!
//! ```text
//! seed 1234 failed: node n07 partitioned for 12.0 s at 20.0 s was not reported lost within 5.1 s
//!     replay: NATTER_SIM_SEED=1234 cargo test -p natter-heartbeat --test simulation -- heartbeat_under_faults --exact
//! ```
//!
//! A replay runs the same fault schedule and the same network draws. It is
//! exact as long as the code under test takes the same path: tokio picks
//! among ready `select!` branches at random, and that randomness is not
//! seeded (short of building with `--cfg tokio_unstable`), so a failure
//! that hangs on which of two simultaneous events wins may need a few
//! replays, or a run of many seeds, to show again.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

/// Replays one seed.
pub const SEED_VAR: &str = "NATTER_SIM_SEED";
/// Runs this many seeds instead of the fixed set.
pub const SEEDS_VAR: &str = "NATTER_SIM_SEEDS";
/// The first of the `NATTER_SIM_SEEDS` seeds (default 0).
pub const FIRST_SEED_VAR: &str = "NATTER_SIM_FIRST_SEED";

/// Runs scenarios over seeds; knows how to name the command that replays
/// one. Make it with [`seeds!`](macro@crate::seeds), which fills in the package
/// and the test target.
#[derive(Debug, Clone, Copy)]
pub struct Seeds {
    package: &'static str,
    test: &'static str,
}

/// A [`Seeds`] for the calling test target: `seeds!()` in
/// `crates/foo/tests/simulation.rs` replays with `cargo test -p foo --test
/// simulation`.
#[macro_export]
macro_rules! seeds {
    () => {
        $crate::seeds::Seeds::new(env!("CARGO_PKG_NAME"), env!("CARGO_CRATE_NAME"))
    };
}

impl Seeds {
    /// Seeds of the test target `test` in package `package`.
    pub fn new(package: &'static str, test: &'static str) -> Seeds {
        Seeds { package, test }
    }

    /// The command that runs `scenario` with `seed` alone.
    pub fn replay_command(&self, scenario: &str, seed: u64) -> String {
        format!(
            "{SEED_VAR}={seed} cargo test -p {} --test {} -- {scenario} --exact",
            self.package, self.test
        )
    }

    /// The seeds the environment asks for, or `ci`.
    pub fn chosen(ci: impl IntoIterator<Item = u64>) -> Vec<u64> {
        let number = |name: &str| {
            std::env::var(name).ok().map(|value| {
                value
                    .trim()
                    .parse::<u64>()
                    .unwrap_or_else(|_| panic!("{name}={value:?}: expected a whole number"))
            })
        };
        if let Some(seed) = number(SEED_VAR) {
            return vec![seed];
        }
        if let Some(count) = number(SEEDS_VAR) {
            let first = number(FIRST_SEED_VAR).unwrap_or(0);
            return (first..first.saturating_add(count)).collect();
        }
        ci.into_iter().collect()
    }

    /// Runs `scenario` (the test's name, for the replay command) with
    /// every seed chosen (see the [module](self)): without variables, the
    /// seeds `ci` (a range, and the seeds that once found a bug, kept as
    /// regression tests). Returns what each passing run returned, in the
    /// order run. Panics after the last seed if any failed, having printed
    /// each failure with its replay command.
    pub fn run<T>(
        &self,
        scenario: &str,
        ci: impl IntoIterator<Item = u64>,
        run: impl Fn(u64) -> Result<T, String>,
    ) -> Vec<(u64, T)> {
        let seeds = Seeds::chosen(ci);
        let started = Instant::now();
        let mut passed = Vec::with_capacity(seeds.len());
        let mut failed = Vec::new();
        for &seed in &seeds {
            let outcome = catch_unwind(AssertUnwindSafe(|| run(seed))).unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panicked".to_owned());
                Err(format!("panicked: {message}"))
            });
            match outcome {
                Ok(value) => passed.push((seed, value)),
                Err(reason) => {
                    eprintln!(
                        "{scenario}: seed {seed} failed: {reason}\n    replay: {}",
                        self.replay_command(scenario, seed)
                    );
                    failed.push(seed);
                }
            }
        }
        eprintln!(
            "{scenario}: {} of {} seeds passed in {:.1} s",
            passed.len(),
            seeds.len(),
            started.elapsed().as_secs_f64()
        );
        assert!(
            failed.is_empty(),
            "{scenario}: {} of {} seeds failed: {failed:?} (each is printed above with its replay command)",
            failed.len(),
            seeds.len()
        );
        passed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replay_command_names_the_seed_the_package_and_the_test() {
        let seeds = Seeds::new("natter-heartbeat", "simulation");
        assert_eq!(
            seeds.replay_command("heartbeat_under_faults", 42),
            "NATTER_SIM_SEED=42 cargo test -p natter-heartbeat --test simulation -- heartbeat_under_faults --exact"
        );
    }

    #[test]
    fn without_variables_the_ci_seeds_run() {
        // The variables are not set in CI; a developer who exported one
        // would see this test follow it.
        if std::env::var_os(SEED_VAR).is_none() && std::env::var_os(SEEDS_VAR).is_none() {
            assert_eq!(Seeds::chosen(3..6), [3, 4, 5]);
        }
    }

    #[test]
    fn every_failing_seed_is_run_and_reported() {
        if std::env::var_os(SEED_VAR).is_some() || std::env::var_os(SEEDS_VAR).is_some() {
            return;
        }
        let seeds = Seeds::new("p", "t");
        let ran = std::sync::Mutex::new(Vec::new());
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            seeds.run("s", 0..4, |seed| {
                ran.lock().unwrap().push(seed);
                match seed {
                    1 => Err("odd".to_owned()),
                    2 => panic!("boom"),
                    _ => Ok(seed * 10),
                }
            })
        }));
        let message = *outcome.unwrap_err().downcast::<String>().unwrap();
        assert!(message.contains("2 of 4 seeds failed: [1, 2]"), "{message}");
        assert_eq!(*ran.lock().unwrap(), [0, 1, 2, 3]);
        let passed = seeds.run("s", 0..4, |seed| {
            if seed < 4 {
                Ok(seed * 10)
            } else {
                Err(String::new())
            }
        });
        assert_eq!(passed, [(0, 0), (1, 10), (2, 20), (3, 30)]);
    }
}
