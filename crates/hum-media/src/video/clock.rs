//! Time for video: when frames are due, and how a capture instant is written into pixels.
//!
//! Media timestamps are `std::time::Instant` (the one clock of this layer, shared with audio).
//! Two helpers sit on top of it:
//! - [`FrameClock`] says when frame `k` of a `fps` stream is captured: `start + k/fps`, either
//!   in real time (it sleeps until then, with absolute deadlines so it never drifts) or on a
//!   virtual timeline (no sleeping; tests and benchmarks run as fast as the CPU allows and the
//!   timestamps are still exactly those of a real-time stream).
//! - [`WallAnchor`] maps an `Instant` to Unix milliseconds. `Instant` cannot leave a process;
//!   the test pattern needs a capture time that a receiver in another process on the same
//!   machine can compare with its own arrival time, so the pattern carries Unix time.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A fixed pairing of an `Instant` with the Unix time at that instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallAnchor {
    instant: Instant,
    unix_us: u64,
}

impl WallAnchor {
    /// Reads both clocks now. Two processes on one machine that do this agree to well under a
    /// millisecond (unless the wall clock is stepped between the two readings).
    pub fn now() -> Self {
        let unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Self {
            instant: Instant::now(),
            unix_us,
        }
    }

    /// An explicit pairing (tests: a virtual timeline with a chosen Unix origin).
    pub fn fixed(instant: Instant, unix_us: u64) -> Self {
        Self { instant, unix_us }
    }

    /// Unix time of `t` in milliseconds.
    pub fn unix_ms(&self, t: Instant) -> u64 {
        let us = if t >= self.instant {
            self.unix_us
                .saturating_add((t - self.instant).as_micros() as u64)
        } else {
            self.unix_us
                .saturating_sub((self.instant - t).as_micros() as u64)
        };
        us / 1000
    }
}

/// When each frame of a constant-rate source is captured. See the module doc.
#[derive(Debug, Clone)]
pub struct FrameClock {
    fps: u32,
    start: Option<Instant>,
    next: u64,
    realtime: bool,
}

impl FrameClock {
    /// Real time: frame 0 is captured at the first call, frame `k` at `start + k/fps`; the
    /// call sleeps until then.
    pub fn realtime(fps: u32) -> Self {
        Self {
            fps: fps.max(1),
            start: None,
            next: 0,
            realtime: true,
        }
    }

    /// A virtual timeline starting at `start`: returns at once with the instant frame `k`
    /// would have been captured at.
    pub fn virtual_from(start: Instant, fps: u32) -> Self {
        Self {
            fps: fps.max(1),
            start: Some(start),
            next: 0,
            realtime: false,
        }
    }

    pub fn fps(&self) -> u32 {
        self.fps
    }

    pub fn is_realtime(&self) -> bool {
        self.realtime
    }

    /// The index the next [`tick`](Self::tick) returns.
    pub fn frame_index(&self) -> u64 {
        self.next
    }

    /// The duration of one frame.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(1_000_000_000 / self.fps as u64)
    }

    /// Waits (in real time) for the next frame and returns its index and capture instant.
    pub fn tick(&mut self) -> (u64, Instant) {
        let start = *self.start.get_or_insert_with(Instant::now);
        let k = self.next;
        self.next += 1;
        let due = start + Duration::from_nanos(k * 1_000_000_000 / self.fps as u64);
        if self.realtime {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        (k, due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_clock_gives_exact_frame_instants_without_sleeping() {
        let t0 = Instant::now();
        let mut c = FrameClock::virtual_from(t0, 30);
        let ticks: Vec<_> = (0..31).map(|_| c.tick()).collect();
        assert_eq!(ticks[0], (0, t0));
        assert_eq!(ticks[30].1 - t0, Duration::from_secs(1));
        assert_eq!(c.frame_index(), 31);
    }

    #[test]
    fn realtime_clock_never_returns_before_the_frame_is_due() {
        let mut c = FrameClock::realtime(100);
        let (_, first) = c.tick();
        for _ in 0..3 {
            let (k, due) = c.tick();
            assert_eq!(due - first, Duration::from_millis(10 * k));
            assert!(Instant::now() >= due);
        }
    }

    #[test]
    fn wall_anchor_maps_both_directions() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let a = WallAnchor::fixed(t0, 5_000_000);
        assert_eq!(a.unix_ms(t0), 5_000);
        assert_eq!(a.unix_ms(t0 + Duration::from_millis(42)), 5_042);
        assert_eq!(a.unix_ms(t0 - Duration::from_millis(42)), 4_958);
    }
}
