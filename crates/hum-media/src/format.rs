//! The one audio format Hum moves around: 48 kHz mono, in 10 or 20 ms frames.

use std::time::Duration;

/// Samples per second everywhere in Hum (Opus' native rate, so no resampling on the wire).
pub const SAMPLE_RATE: u32 = 48_000;

/// How much audio one Opus packet carries. 20 ms is the default (fewer packets, better
/// compression); 10 ms halves the packetisation delay at roughly the cost of extra headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FrameDuration {
    Ms10,
    #[default]
    Ms20,
}

impl FrameDuration {
    pub const fn samples(self) -> usize {
        match self {
            FrameDuration::Ms10 => 480,
            FrameDuration::Ms20 => 960,
        }
    }

    pub const fn millis(self) -> u64 {
        match self {
            FrameDuration::Ms10 => 10,
            FrameDuration::Ms20 => 20,
        }
    }

    pub const fn duration(self) -> Duration {
        Duration::from_millis(self.millis())
    }

    /// Parses "10", "10ms", "20", "20ms".
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().trim_end_matches("ms") {
            "10" => Some(FrameDuration::Ms10),
            "20" => Some(FrameDuration::Ms20),
            _ => None,
        }
    }
}

/// Samples in a duration at [`SAMPLE_RATE`].
pub fn samples_in(d: Duration) -> usize {
    (d.as_micros() * SAMPLE_RATE as u128 / 1_000_000) as usize
}

/// Converts an `f32` sample to `i16`, clamping.
pub fn to_i16(x: f32) -> i16 {
    (x.clamp(-1.0, 1.0) * i16::MAX as f32).round() as i16
}

pub fn from_i16(x: i16) -> f32 {
    x as f32 / i16::MAX as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes() {
        assert_eq!(FrameDuration::Ms10.samples(), 480);
        assert_eq!(FrameDuration::Ms20.samples(), 960);
        assert_eq!(samples_in(Duration::from_millis(20)), 960);
        assert_eq!(FrameDuration::parse("10ms"), Some(FrameDuration::Ms10));
        assert_eq!(FrameDuration::parse("15"), None);
        assert_eq!(to_i16(2.0), i16::MAX);
        assert!((from_i16(to_i16(0.5)) - 0.5).abs() < 1e-4);
    }
}
