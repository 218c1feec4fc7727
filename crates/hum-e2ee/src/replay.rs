//! Anti-replay for received frames (RFC 9605 9.3): one window per sender and key id.
//!
//! SFrame's counter (CTR) is unique per key, so a frame whose counter was already accepted under
//! the same key is a copy: the SFU (or anyone on the path) sending it again. Without a window a
//! replayed Opus frame plays twice and a replayed VP8 frame is decoded again (a glitch, or a
//! picture from the past). The window remembers the highest counter accepted and which of the
//! [`REPLAY_WINDOW`] counters below it were accepted; a counter seen before, or older than the
//! window, is refused.
//!
//! Order matters: a counter is *checked* before decryption and *marked* only after the frame
//! authenticated, so a forged frame with a made-up counter cannot move the window or block the
//! real frame that carries that counter.
//!
//! One counter per key covers a sender's audio and video together (both are encrypted under the
//! sender's one key), so the window must span the frames of both kinds that can overtake each
//! other on the way: 1,024 counters is about 12 s of 20 ms Opus plus 30 fps video, far more than
//! any jitter buffer waits; a frame older than that would be dropped by the player anyway.

/// How many counters below the highest accepted one are remembered.
pub const REPLAY_WINDOW: u64 = 1024;

const WORDS: usize = (REPLAY_WINDOW / 64) as usize;

/// Why a counter is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Accepted before under this key.
    Seen,
    /// More than [`REPLAY_WINDOW`] below the highest accepted counter.
    TooOld,
}

/// The counters accepted under one key: the highest, and a bitmap of the window below it
/// (bit `c % REPLAY_WINDOW` for counter `c`).
#[derive(Clone, Default)]
pub struct ReplayWindow {
    top: Option<u64>,
    seen: [u64; WORDS],
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("top", &self.top)
            .finish_non_exhaustive()
    }
}

impl ReplayWindow {
    fn bit(c: u64) -> (usize, u64) {
        let i = c % REPLAY_WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    /// Whether a frame with counter `ctr` may be decrypted. Changes nothing.
    pub fn check(&self, ctr: u64) -> Result<(), Replay> {
        let Some(top) = self.top else { return Ok(()) };
        if ctr > top {
            return Ok(());
        }
        if top - ctr >= REPLAY_WINDOW {
            return Err(Replay::TooOld);
        }
        let (w, m) = Self::bit(ctr);
        if self.seen[w] & m != 0 {
            Err(Replay::Seen)
        } else {
            Ok(())
        }
    }

    /// Marks `ctr` accepted (call only after the frame authenticated and passed [`Self::check`]).
    pub fn accept(&mut self, ctr: u64) {
        match self.top {
            Some(top) if ctr <= top => {
                if top - ctr >= REPLAY_WINDOW {
                    return;
                }
            }
            Some(top) => {
                // The window slides up: the counters it leaves behind free their bits.
                if ctr - top >= REPLAY_WINDOW {
                    self.seen = [0; WORDS];
                } else {
                    for c in top + 1..=ctr {
                        let (w, m) = Self::bit(c);
                        self.seen[w] &= !m;
                    }
                }
                self.top = Some(ctr);
            }
            None => self.top = Some(ctr),
        }
        let (w, m) = Self::bit(ctr);
        self.seen[w] |= m;
    }

    /// The highest counter accepted so far.
    pub fn top(&self) -> Option<u64> {
        self.top
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(w: &mut ReplayWindow, c: u64) -> Result<(), Replay> {
        w.check(c)?;
        w.accept(c);
        Ok(())
    }

    #[test]
    fn each_counter_once_in_any_order_within_the_window() {
        let mut w = ReplayWindow::default();
        assert_eq!(take(&mut w, 5), Ok(()));
        assert_eq!(take(&mut w, 5), Err(Replay::Seen));
        // Late but inside the window: fine once.
        assert_eq!(take(&mut w, 3), Ok(()));
        assert_eq!(take(&mut w, 3), Err(Replay::Seen));
        assert_eq!(take(&mut w, 0), Ok(()));
        assert_eq!(take(&mut w, 4), Ok(()));
        assert_eq!(w.top(), Some(5));
        // A jump: the old ones below the window are refused, the skipped ones in it are not.
        assert_eq!(take(&mut w, 5 + REPLAY_WINDOW), Ok(()));
        assert_eq!(take(&mut w, 5), Err(Replay::TooOld));
        assert_eq!(take(&mut w, 6), Ok(()));
        assert_eq!(take(&mut w, 6), Err(Replay::Seen));
        assert_eq!(take(&mut w, 4 + REPLAY_WINDOW), Ok(()));
    }

    #[test]
    fn sliding_frees_bits_of_counters_that_left_the_window() {
        let mut w = ReplayWindow::default();
        for c in 0..3 * REPLAY_WINDOW {
            assert_eq!(take(&mut w, c), Ok(()), "{c}");
            assert_eq!(w.check(c), Err(Replay::Seen));
        }
        // Counter 3W-1 is top; 2W shares its bit with 0 and W: still seen, not stale.
        assert_eq!(w.check(2 * REPLAY_WINDOW), Err(Replay::Seen));
        assert_eq!(w.check(2 * REPLAY_WINDOW - 1), Err(Replay::TooOld));
        // Skip ahead by less than a window: the skipped counters are free.
        let top = 3 * REPLAY_WINDOW - 1;
        assert_eq!(take(&mut w, top + 10), Ok(()));
        for c in top + 1..top + 10 {
            assert_eq!(w.check(c), Ok(()), "{c}");
        }
    }

    #[test]
    fn a_checked_but_unaccepted_counter_stays_open() {
        // A forged frame is checked, fails to authenticate, and is never accepted: the real
        // frame with that counter still goes through.
        let mut w = ReplayWindow::default();
        assert_eq!(take(&mut w, 1), Ok(()));
        assert_eq!(w.check(2), Ok(()));
        assert_eq!(w.check(u64::MAX), Ok(()));
        assert_eq!(take(&mut w, 2), Ok(()));
        assert_eq!(w.top(), Some(2));
    }

    #[test]
    fn matches_a_set_model_on_random_sequences() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9605);
        for _ in 0..50 {
            let mut w = ReplayWindow::default();
            let mut accepted = std::collections::BTreeSet::new();
            let mut top: Option<u64> = None;
            let mut base = 0u64;
            for _ in 0..2_000 {
                base += rng.gen_range(0..3);
                let c = base.saturating_sub(rng.gen_range(0..1_200));
                let want = match top {
                    Some(t) if c <= t && t - c >= REPLAY_WINDOW => Err(Replay::TooOld),
                    _ if accepted.contains(&c) => Err(Replay::Seen),
                    _ => Ok(()),
                };
                assert_eq!(w.check(c), want, "counter {c}, top {top:?}");
                if want.is_ok() && rng.gen_bool(0.9) {
                    w.accept(c);
                    accepted.insert(c);
                    top = top.max(Some(c));
                }
            }
        }
    }
}
