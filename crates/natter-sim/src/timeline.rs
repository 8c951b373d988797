//! A [`Timeline`]: the fault schedule of one run, as actions on the
//! simulation at given instants of simulated time, applied between steps.

use std::time::Duration;

use turmoil::Sim;

/// One action of a [`Timeline`].
type Action<'a> = Box<dyn FnOnce(&mut Sim<'a>) + 'a>;

/// What happens to the network (or the hosts) when, in simulated time
/// since the start of the run.
///
/// ```no_run
/// use std::time::Duration;
/// use natter_sim::Timeline;
///
/// # fn run(sim: &mut turmoil::Sim<'_>) -> turmoil::Result {
/// let mut timeline = Timeline::new();
/// timeline.at(Duration::from_secs(5), |sim| sim.partition("client", "server"));
/// timeline.at(Duration::from_secs(9), |sim| sim.repair("client", "server"));
/// timeline.run(sim, Duration::from_secs(20))
/// # }
/// ```
#[derive(Default)]
pub struct Timeline<'a> {
    actions: Vec<(Duration, Action<'a>)>,
}

impl<'a> Timeline<'a> {
    /// An empty timeline.
    pub fn new() -> Self {
        Timeline {
            actions: Vec::new(),
        }
    }

    /// Does `action` at `at` (before the first step at or after it).
    /// Actions at the same instant run in the order they were added.
    pub fn at(&mut self, at: Duration, action: impl FnOnce(&mut Sim<'a>) + 'a) -> &mut Self {
        self.actions.push((at, Box::new(action)));
        self
    }

    /// Steps `sim` until `until` has passed in simulated time, doing each
    /// action when its time comes. Fails as soon as a host fails.
    pub fn run(mut self, sim: &mut Sim<'a>, until: Duration) -> turmoil::Result {
        // Stable: actions at one instant keep the order they were added in.
        self.actions.sort_by_key(|(at, _)| *at);
        let mut actions = self.actions.into_iter().peekable();
        while sim.elapsed() < until {
            while let Some((_, action)) = actions.next_if(|(at, _)| *at <= sim.elapsed()) {
                action(sim);
            }
            sim.step()?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Timeline<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at: Vec<Duration> = self.actions.iter().map(|(at, _)| *at).collect();
        f.debug_struct("Timeline").field("at", &at).finish()
    }
}
