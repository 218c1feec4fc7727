//! Units that cross crate boundaries.
//!
//! A bitrate is always carried as bits per second in a [`Bitrate`]; constructors and accessors
//! name the unit so conversions are explicit at the call site.

use std::fmt;
use std::ops::{Add, Sub};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A data rate in bits per second.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(transparent)]
pub struct Bitrate(u64);

impl Bitrate {
    pub const ZERO: Bitrate = Bitrate(0);

    pub const fn from_bps(bps: u64) -> Self {
        Bitrate(bps)
    }
    pub const fn from_kbps(kbps: u64) -> Self {
        Bitrate(kbps * 1_000)
    }
    pub const fn from_mbps(mbps: u64) -> Self {
        Bitrate(mbps * 1_000_000)
    }
    /// From a fractional megabit rate; negative or non-finite values become zero.
    pub fn from_mbps_f64(mbps: f64) -> Self {
        if mbps.is_finite() && mbps > 0.0 {
            Bitrate((mbps * 1e6).round() as u64)
        } else {
            Bitrate(0)
        }
    }
    pub const fn bps(self) -> u64 {
        self.0
    }
    pub fn kbps_f64(self) -> f64 {
        self.0 as f64 / 1e3
    }
    pub fn mbps_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }
    /// Bytes per second, rounded down.
    pub const fn bytes_per_sec(self) -> u64 {
        self.0 / 8
    }
    /// `self * fraction`, with the fraction clamped to `[0, 1]`.
    pub fn scale(self, fraction: f64) -> Self {
        let f = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Bitrate((self.0 as f64 * f).round() as u64)
    }
    pub const fn saturating_sub(self, other: Bitrate) -> Bitrate {
        Bitrate(self.0.saturating_sub(other.0))
    }
    pub fn min(self, other: Bitrate) -> Bitrate {
        Bitrate(self.0.min(other.0))
    }
    pub fn max(self, other: Bitrate) -> Bitrate {
        Bitrate(self.0.max(other.0))
    }
}

impl Add for Bitrate {
    type Output = Bitrate;
    fn add(self, rhs: Bitrate) -> Bitrate {
        Bitrate(self.0.saturating_add(rhs.0))
    }
}

impl std::iter::Sum for Bitrate {
    fn sum<I: Iterator<Item = Bitrate>>(iter: I) -> Bitrate {
        iter.fold(Bitrate::ZERO, |a, b| a + b)
    }
}

impl Sub for Bitrate {
    type Output = Bitrate;
    /// Saturating: a rate never goes below zero.
    fn sub(self, rhs: Bitrate) -> Bitrate {
        self.saturating_sub(rhs)
    }
}

impl fmt::Display for Bitrate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 1_000_000 {
            write!(f, "{:.2} Mbps", self.mbps_f64())
        } else if self.0 >= 1_000 {
            write!(f, "{:.0} kbps", self.kbps_f64())
        } else {
            write!(f, "{} bps", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_name_their_unit() {
        assert_eq!(Bitrate::from_kbps(500).bps(), 500_000);
        assert_eq!(Bitrate::from_mbps(4).bytes_per_sec(), 500_000);
        assert_eq!(Bitrate::from_mbps_f64(2.5), Bitrate::from_kbps(2_500));
        assert_eq!(Bitrate::from_mbps_f64(-1.0), Bitrate::ZERO);
        assert_eq!(Bitrate::from_mbps_f64(f64::NAN), Bitrate::ZERO);
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Bitrate::from_kbps(1) - Bitrate::from_kbps(2), Bitrate::ZERO);
        assert_eq!(
            Bitrate::from_mbps(10).scale(0.25),
            Bitrate::from_kbps(2_500)
        );
        assert_eq!(Bitrate::from_mbps(10).scale(7.0), Bitrate::from_mbps(10));
    }

    #[test]
    fn displays_human_units() {
        assert_eq!(Bitrate::from_kbps(500).to_string(), "500 kbps");
        assert_eq!(Bitrate::from_kbps(2_500).to_string(), "2.50 Mbps");
        assert_eq!(Bitrate::from_bps(12).to_string(), "12 bps");
    }

    #[test]
    fn serialises_as_plain_bps() {
        assert_eq!(
            serde_json::to_string(&Bitrate::from_kbps(64)).unwrap(),
            "64000"
        );
    }
}
