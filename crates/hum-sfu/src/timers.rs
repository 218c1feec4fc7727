//! When each participant's `Rtc` next wants its timeout: one deadline per key, the earliest
//! found without looking at the others.
//!
//! The runtime used to scan every participant on every loop turn, twice (the next wake-up,
//! then who is due): with thousands of subscribers that is thousands of comparisons per
//! datagram. A binary heap with lazy deletion makes both O(log n): a changed deadline pushes
//! a new entry and leaves the old one, which is skipped when it reaches the top because it no
//! longer matches the key's deadline. The heap is rebuilt when stale entries outnumber live
//! ones, so its size stays bounded by about twice the participants.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The live deadline of each armed key; an entry in `heap` counts only if it matches.
    armed: HashMap<u64, Instant>,
}

/// Stale entries tolerated beyond twice the live ones before the heap is rebuilt.
const SLACK: usize = 64;

impl Timers {
    /// Arms `key` for `at`, replacing its earlier deadline.
    pub fn set(&mut self, key: u64, at: Instant) {
        if self.armed.insert(key, at) == Some(at) {
            return;
        }
        self.heap.push(Reverse((at, key)));
        if self.heap.len() > 2 * self.armed.len() + SLACK {
            self.heap = self.armed.iter().map(|(k, t)| Reverse((*t, *k))).collect();
        }
    }

    /// Forgets `key` (it left).
    pub fn remove(&mut self, key: u64) {
        self.armed.remove(&key);
    }

    /// The earliest deadline, if any key is armed.
    pub fn next(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, key))) = self.heap.peek().copied() {
            if self.armed.get(&key) == Some(&at) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// A key whose deadline is at or before `now`, disarmed (the caller feeds its timeout and
    /// arms it again with what its `Rtc` asks next); `None` when nobody is due.
    pub fn pop_due(&mut self, now: Instant) -> Option<u64> {
        while let Some(Reverse((at, key))) = self.heap.peek().copied() {
            if at > now {
                return None;
            }
            self.heap.pop();
            if self.armed.get(&key) == Some(&at) {
                self.armed.remove(&key);
                return Some(key);
            }
        }
        None
    }

    #[cfg(test)]
    fn heap_len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn keys_come_due_in_deadline_order_and_once() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.set(1, ms(t0, 30));
        t.set(2, ms(t0, 10));
        t.set(3, ms(t0, 20));
        assert_eq!(t.next(), Some(ms(t0, 10)));
        assert_eq!(t.pop_due(ms(t0, 5)), None);
        assert_eq!(t.pop_due(ms(t0, 25)), Some(2));
        assert_eq!(t.pop_due(ms(t0, 25)), Some(3));
        assert_eq!(t.pop_due(ms(t0, 25)), None);
        assert_eq!(t.next(), Some(ms(t0, 30)));
        assert_eq!(t.pop_due(ms(t0, 99)), Some(1));
        // Disarmed: nothing left until a key is armed again.
        assert_eq!(t.pop_due(ms(t0, 99)), None);
        assert_eq!(t.next(), None);
    }

    #[test]
    fn a_moved_deadline_replaces_the_old_one_either_way() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.set(1, ms(t0, 10));
        t.set(1, ms(t0, 50)); // later: the entry at 10 is stale
        t.set(2, ms(t0, 40));
        t.set(2, ms(t0, 5)); // earlier
        assert_eq!(t.next(), Some(ms(t0, 5)));
        assert_eq!(t.pop_due(ms(t0, 20)), Some(2));
        assert_eq!(
            t.pop_due(ms(t0, 20)),
            None,
            "1's stale entry at 10 is skipped"
        );
        assert_eq!(t.next(), Some(ms(t0, 50)));
        // Back to a deadline it had before: still one wake-up, not two.
        t.set(1, ms(t0, 10));
        t.set(1, ms(t0, 10));
        assert_eq!(t.pop_due(ms(t0, 60)), Some(1));
        assert_eq!(t.pop_due(ms(t0, 60)), None);
    }

    #[test]
    fn a_removed_key_never_comes_due() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.set(7, ms(t0, 1));
        t.set(8, ms(t0, 2));
        t.remove(7);
        assert_eq!(t.next(), Some(ms(t0, 2)));
        assert_eq!(t.pop_due(ms(t0, 10)), Some(8));
        assert_eq!(t.pop_due(ms(t0, 10)), None);
    }

    #[test]
    fn stale_entries_do_not_pile_up() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        for k in 0..10 {
            t.set(k, ms(t0, 1_000));
        }
        // A busy subscriber's deadline moves with every packet.
        for i in 0..100_000u64 {
            t.set(3, ms(t0, 1 + i % 997));
        }
        assert!(t.heap_len() <= 2 * 10 + SLACK + 1, "heap {}", t.heap_len());
        let mut due = vec![];
        while let Some(k) = t.pop_due(ms(t0, 2_000)) {
            due.push(k);
        }
        due.sort();
        assert_eq!(due, (0..10).collect::<Vec<_>>());
    }
}
