//! What to fetch next: a pure function of the window's state, tested with string fixtures.
//!
//! The window is the chunks from the playhead forward. Each missing chunk falls in exactly one class:
//! - **drop**: its playback deadline is nearer than the fastest possible fetch; asking would only waste
//!   someone's upload, so it is given up (the player will skip it);
//! - **urgent**: its deadline is within the urgent horizon; these go first, in sequence order, because
//!   the next chunk to play matters more than any other;
//! - **rare**: older-than-the-edge chunks with time to spare go rarest-first (fewest upstreams holding
//!   them), so that scarce chunks get copied while their holders are still around;
//! - **wait**: nobody we know holds it yet and it is not urgent; the frontier requests (held by an
//!   upstream until it has the chunk) cover these.
//!
//! Chunks already held or requested are the scheduler's business (timeouts, end-game), not the picker's.

use std::time::Duration;

use crate::Time;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    Have,
    Requested,
    Missing,
    Dropped,
}

/// One chunk as the picker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PickSlot {
    pub seq: u64,
    pub state: SlotState,
    /// How many of our upstreams are known to hold it.
    pub avail: u8,
    /// Its playback deadline, once playback has started.
    pub deadline: Option<Time>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    Drop(u64),
    Urgent(u64),
    Rare(u64),
}

#[derive(Clone, Copy, Debug)]
pub struct Picker {
    /// Chunks due within this are urgent.
    pub urgent: Duration,
    /// The fastest a chunk can be fetched from anyone (a round trip plus its transfer time).
    pub min_fetch: Duration,
}

impl Picker {
    /// Classify `slots` and append picks to `out`: drops, then urgent by sequence, then rare by
    /// (availability, sequence).
    pub fn pick(&self, now: Time, slots: &[PickSlot], out: &mut Vec<Pick>) {
        let start = out.len();
        let mut rare: Vec<(u8, u64)> = Vec::new();
        for s in slots {
            if s.state != SlotState::Missing {
                continue;
            }
            match s.deadline {
                Some(d) if d < now + self.min_fetch => out.push(Pick::Drop(s.seq)),
                Some(d) if d < now + self.urgent => out.push(Pick::Urgent(s.seq)),
                _ if s.avail > 0 => rare.push((s.avail, s.seq)),
                _ => {}
            }
        }
        // Drops before urgent, each in sequence order (a stable sort keeps the scan's order).
        out[start..].sort_by_key(|p| match *p {
            Pick::Drop(s) => (0, s),
            Pick::Urgent(s) => (1, s),
            Pick::Rare(s) => (2, s),
        });
        rare.sort_unstable();
        out.extend(rare.into_iter().map(|(_, s)| Pick::Rare(s)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `states`: H have, R requested, M missing, D dropped. `avail`: a digit per chunk. Chunk `i` (seq
    /// 100 + i) is due at `first_due_ms + i * 250` ms, or never if `first_due_ms` is `None`.
    fn slots(states: &str, avail: &str, first_due_ms: Option<u64>) -> Vec<PickSlot> {
        assert_eq!(states.len(), avail.len(), "fixture lengths");
        states
            .chars()
            .zip(avail.chars())
            .enumerate()
            .map(|(i, (st, av))| PickSlot {
                seq: 100 + i as u64,
                state: match st {
                    'H' => SlotState::Have,
                    'R' => SlotState::Requested,
                    'M' => SlotState::Missing,
                    'D' => SlotState::Dropped,
                    c => panic!("bad state {c}"),
                },
                avail: av.to_digit(10).expect("digit") as u8,
                deadline: first_due_ms.map(|d| Time::from_millis(d + 250 * i as u64)),
            })
            .collect()
    }

    /// Picks as a compact string: "d100 u101 r104".
    fn run(states: &str, avail: &str, first_due_ms: Option<u64>, now_ms: u64) -> String {
        let p = Picker {
            urgent: Duration::from_millis(600),
            min_fetch: Duration::from_millis(100),
        };
        let mut out = vec![];
        p.pick(
            Time::from_millis(now_ms),
            &slots(states, avail, first_due_ms),
            &mut out,
        );
        out.iter()
            .map(|p| match p {
                Pick::Drop(s) => format!("d{s}"),
                Pick::Urgent(s) => format!("u{s}"),
                Pick::Rare(s) => format!("r{s}"),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn nothing_missing_nothing_picked() {
        assert_eq!(run("HHRRD", "11111", Some(1000), 0), "");
    }

    #[test]
    fn before_playback_it_is_rarest_first_and_unknown_chunks_wait() {
        // Availability 0 -> wait; then 1s before 2s before 3s; ties by sequence.
        assert_eq!(
            run("HMMMMMM", "0312102", None, 0),
            "r102 r104 r103 r106 r101"
        );
    }

    #[test]
    fn near_the_deadline_it_is_sequential() {
        // Due at 200, 450, 700, 950... ms; now = 0: the first three are inside 600 ms... of which
        // 100/101 are urgent (due < 600), 102+ are rare.
        assert_eq!(
            run("MMMMM", "33313", Some(200), 0),
            "u100 u101 r103 r102 r104"
        );
        // Urgent even when nobody announced it (the root seed will serve it).
        assert_eq!(run("MHM", "000", Some(200), 0), "u100");
    }

    #[test]
    fn chunks_that_cannot_arrive_in_time_are_dropped_first() {
        // Now = 1000 ms: seq 100 (due 1000) and 101 (due 1050? no: 1250) ...
        // 100 is due now (< now + min_fetch) -> drop; 101 due 1250 -> urgent; 102 due 1500 urgent; 103 rare.
        assert_eq!(
            run(
                "MMMMH",
                "1111 1".replace(' ', "").as_str(),
                Some(1000),
                1000
            ),
            "d100 u101 u102 r103"
        );
    }

    #[test]
    fn requested_chunks_are_left_to_the_scheduler() {
        assert_eq!(run("RMRM", "1111", Some(200), 0), "u101 r103");
    }
}
