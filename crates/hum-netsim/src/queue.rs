//! The event queue: a bucketed calendar in front of a binary heap.
//!
//! Events leave in exactly `(time, seq)` order, as from one binary heap, but most of them never enter
//! a large heap: an event due within the horizon (`BUCKETS` buckets of `2^SHIFT` µs, about 4 s) is
//! appended to its bucket's vector, and only the bucket being drained is a (small) heap. At 100,000
//! simulated viewers the queue holds a few hundred thousand events; a single heap paid ~20 cache-missing
//! levels per pop, a bucket a handful. Events beyond the horizon wait in an overflow heap and move into
//! their bucket as the horizon reaches them.
//!
//! Invariants: every key in `cur` is in a bucket `<= cur_b`; every key in `buckets` is in a bucket in
//! `(cur_b, cur_b + BUCKETS)`; every key in `far` is in a bucket `>= cur_b + BUCKETS`. So the minimum
//! of `cur` is the minimum of everything.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// (time µs, insertion sequence, payload slot, node the event is for or `u32::MAX`). The sequence is
/// unique, so the last two never decide the order; the node rides along for free (the key is 24 bytes
/// either way) so the loop can prefetch the next event's state.
pub(crate) type Key = (u64, u64, u32, u32);

const SHIFT: u32 = 10;
const BUCKETS: u64 = 4096;

pub(crate) struct EventQueue {
    cur: BinaryHeap<Reverse<Key>>,
    cur_b: u64,
    buckets: Vec<Vec<Key>>,
    near: usize,
    far: BinaryHeap<Reverse<Key>>,
}

impl EventQueue {
    pub(crate) fn new() -> Self {
        EventQueue {
            cur: BinaryHeap::new(),
            cur_b: 0,
            buckets: (0..BUCKETS).map(|_| Vec::new()).collect(),
            near: 0,
            far: BinaryHeap::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.cur.len() + self.near + self.far.len()
    }

    pub(crate) fn reserve(&mut self, n: usize) {
        self.cur.reserve(n / 64);
    }

    pub(crate) fn push(&mut self, k: Key) {
        let b = k.0 >> SHIFT;
        if b <= self.cur_b {
            self.cur.push(Reverse(k));
        } else if b < self.cur_b + BUCKETS {
            self.buckets[(b % BUCKETS) as usize].push(k);
            self.near += 1;
        } else {
            self.far.push(Reverse(k));
        }
    }

    /// The smallest key, advancing through empty buckets to find it.
    pub(crate) fn peek(&mut self) -> Option<Key> {
        self.fill();
        self.cur.peek().map(|Reverse(k)| *k)
    }

    /// The smallest key if it is already in the drained bucket (no calendar advance), for prefetching.
    pub(crate) fn peek_ready(&self) -> Option<Key> {
        self.cur.peek().map(|Reverse(k)| *k)
    }

    /// The second smallest key in the drained bucket, if any (a heap's second is one of the root's
    /// children), for prefetching two events ahead.
    pub(crate) fn peek_second_ready(&self) -> Option<Key> {
        let h = self.cur.as_slice();
        match (h.get(1), h.get(2)) {
            (Some(Reverse(a)), Some(Reverse(b))) => Some(*a.min(b)),
            (Some(Reverse(a)), None) => Some(*a),
            _ => None,
        }
    }

    pub(crate) fn pop(&mut self) -> Option<Key> {
        self.fill();
        self.cur.pop().map(|Reverse(k)| k)
    }

    fn fill(&mut self) {
        while self.cur.is_empty() {
            if self.near == 0 {
                // Nothing within the horizon: jump to the overflow's first bucket.
                let Some(Reverse(k)) = self.far.peek() else {
                    return;
                };
                self.cur_b = (k.0 >> SHIFT).max(self.cur_b + 1);
            } else {
                self.cur_b += 1;
            }
            while let Some(Reverse(k)) = self.far.peek() {
                let b = k.0 >> SHIFT;
                if b >= self.cur_b + BUCKETS {
                    break;
                }
                let Some(Reverse(k)) = self.far.pop() else {
                    break;
                };
                if b <= self.cur_b {
                    self.cur.push(Reverse(k));
                } else {
                    self.buckets[(b % BUCKETS) as usize].push(k);
                    self.near += 1;
                }
            }
            let i = (self.cur_b % BUCKETS) as usize;
            let n = self.buckets[i].len();
            if n > 0 {
                self.near -= n;
                let cur = &mut self.cur;
                cur.extend(self.buckets[i].drain(..).map(Reverse));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn pops_in_exactly_the_order_of_one_binary_heap() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut q = EventQueue::new();
        let mut reference: BinaryHeap<Reverse<Key>> = BinaryHeap::new();
        let mut now = 0u64;
        let mut seq = 0u64;
        for round in 0..20_000 {
            // Mostly near-future events, some at `now`, some far beyond the horizon.
            for _ in 0..rng.gen_range(0..4) {
                let dt = match rng.gen_range(0..10) {
                    0 => 0,
                    1 => rng.gen_range(0..30_000_000),
                    _ => rng.gen_range(0..300_000),
                };
                let k = (now + dt, seq, (seq % 7) as u32, (seq % 5) as u32);
                seq += 1;
                q.push(k);
                reference.push(Reverse(k));
            }
            if round % 3 == 0 {
                assert_eq!(q.peek(), reference.peek().map(|Reverse(k)| *k));
                // Every key in the drained bucket is below every key outside it, so its second
                // (when it has one) is exactly the reference's second.
                if let Some(got) = q.peek_second_ready()
                    && let Some(first) = reference.pop()
                {
                    assert_eq!(Some(got), reference.peek().map(|Reverse(k)| *k));
                    reference.push(first);
                }
            }
            let got = q.pop();
            let want = reference.pop().map(|Reverse(k)| k);
            assert_eq!(got, want, "round {round}");
            if let Some(k) = got {
                now = k.0;
            }
            assert_eq!(q.len(), reference.len());
        }
        while let Some(Reverse(k)) = reference.pop() {
            assert_eq!(q.pop(), Some(k));
        }
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn a_push_behind_the_drained_bucket_still_comes_first() {
        let mut q = EventQueue::new();
        q.push((5_000_000, 0, 0, 0));
        // Peeking advances the calendar to 5 s; an event at 1 s pushed afterwards must come first.
        assert_eq!(q.peek(), Some((5_000_000, 0, 0, 0)));
        q.push((1_000_000, 1, 1, 1));
        assert_eq!(q.pop(), Some((1_000_000, 1, 1, 1)));
        assert_eq!(q.pop(), Some((5_000_000, 0, 0, 0)));
        assert_eq!(q.pop(), None);
    }
}
