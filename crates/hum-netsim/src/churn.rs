//! Seeded join/leave schedules.
//!
//! Churn is described as a fraction of the starting population that leaves during the run; each
//! departure is matched by a newcomer joining at an independent uniformly random time, so the audience
//! size stays about constant while its membership turns over.

use rand::Rng;
use rand::seq::SliceRandom;

use crate::Time;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChurnEvent {
    /// The `i`-th member of the starting population leaves.
    Leave(usize),
    /// The `i`-th newcomer joins.
    Join(usize),
}

#[derive(Clone, Debug, Default)]
pub struct ChurnSchedule {
    /// Sorted by time (then event, for determinism).
    pub events: Vec<(Time, ChurnEvent)>,
}

impl ChurnSchedule {
    /// `fraction` of `population` leave at uniform times in `[start, end)`, and as many newcomers join
    /// at uniform times in the same window.
    pub fn generate<R: Rng>(
        rng: &mut R,
        population: usize,
        fraction: f64,
        start: Time,
        end: Time,
    ) -> Self {
        let f = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let leaving = ((population as f64) * f).round() as usize;
        let mut who: Vec<usize> = (0..population).collect();
        who.shuffle(rng);
        who.truncate(leaving);
        let (a, b) = (
            start.as_micros(),
            end.as_micros().max(start.as_micros() + 1),
        );
        let mut events = Vec::with_capacity(2 * leaving);
        for i in who {
            events.push((Time::from_micros(rng.gen_range(a..b)), ChurnEvent::Leave(i)));
        }
        for j in 0..leaving {
            events.push((Time::from_micros(rng.gen_range(a..b)), ChurnEvent::Join(j)));
        }
        events.sort();
        ChurnSchedule { events }
    }

    pub fn leaves(&self) -> usize {
        self.events
            .iter()
            .filter(|(_, e)| matches!(e, ChurnEvent::Leave(_)))
            .count()
    }
}
