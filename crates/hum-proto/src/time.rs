//! The sans-IO clock of the livestream mesh and the simulated network: [`Time`], microseconds
//! since an origin the owner picks (the start of a run, a node, a simulation). The state machines
//! (hum-mesh) and the network model (hum-netsim) share it, so a simulation hands its clock to the
//! mesh as is; the app converts from `Instant` once, at the node's loop. (The SFU and the bandwidth
//! limiter take `Instant`, as str0m does; hum-budget's token bucket counts a `Duration` offset,
//! which [`Time::offset`] and [`Time::from_offset`] convert.)

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A point on a sans-IO clock, in microseconds since the owner's origin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    pub const ZERO: Time = Time(0);
    pub const MAX: Time = Time(u64::MAX);

    pub const fn from_micros(us: u64) -> Time {
        Time(us)
    }
    pub const fn from_millis(ms: u64) -> Time {
        Time(ms.saturating_mul(1_000))
    }
    pub const fn from_secs(s: u64) -> Time {
        Time(s.saturating_mul(1_000_000))
    }
    pub const fn as_micros(self) -> u64 {
        self.0
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }
    /// `self - earlier`, zero if `earlier` is later.
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
    /// As an offset from the origin (what hum-budget's token bucket counts in).
    pub fn offset(self) -> Duration {
        Duration::from_micros(self.0)
    }
    /// Back from an offset, rounded up to a whole microsecond (so a wake-up at the result finds
    /// what was promised for the offset).
    pub fn from_offset(d: Duration) -> Time {
        Time(d.as_nanos().div_ceil(1_000).min(u128::from(u64::MAX)) as u64)
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(self.0.saturating_add(micros(d)))
    }
}

impl Sub<Duration> for Time {
    type Output = Time;
    fn sub(self, d: Duration) -> Time {
        Time(self.0.saturating_sub(micros(d)))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.6}s", self.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_and_offsets_round_trip_rounding_up() {
        assert_eq!(Time::MAX + Duration::from_secs(1), Time::MAX);
        assert_eq!(Time::ZERO - Duration::from_secs(1), Time::ZERO);
        assert_eq!(
            Time::from_secs(2).since(Time::from_millis(500)),
            Duration::from_millis(1_500)
        );
        assert_eq!(
            Time::from_millis(1).since(Time::from_secs(1)),
            Duration::ZERO
        );
        assert_eq!(Time::from_offset(Time(7).offset()), Time(7));
        assert_eq!(Time::from_offset(Duration::from_nanos(1_001)), Time(2));
        assert_eq!(Time::from_offset(Duration::MAX), Time::MAX);
        assert_eq!(Time::from_millis(1_500).to_string(), "1.500000s");
    }
}
