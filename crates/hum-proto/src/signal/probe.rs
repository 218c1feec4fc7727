//! The bandwidth probe at `GET /probe` (a second WebSocket, no login): the client sends binary
//! frames for a few seconds, then the text frame `done`; the relay answers with one text frame,
//! a [`ProbeReport`], measured on the relay from the first byte to the last.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the relay measured of a client's upload.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProbeReport {
    /// Payload bytes received in binary frames.
    pub bytes: u64,
    /// Milliseconds from the first binary frame's arrival to the last one's.
    pub elapsed_ms: u64,
    /// Megabits per second: the bytes that arrived after the first frame, times 8, over
    /// `elapsed` (0 when fewer than two frames arrived).
    pub mbps: f64,
    /// True when the relay stopped counting at its time or size cap before `done`.
    #[serde(default)]
    pub capped: bool,
}

impl ProbeReport {
    /// A report for `total_bytes` received, of which `timed_bytes` arrived after the first frame
    /// over `elapsed_us` microseconds (the first frame only starts the clock).
    pub fn measure(total_bytes: u64, timed_bytes: u64, elapsed_us: u64, capped: bool) -> Self {
        let mbps = if elapsed_us == 0 {
            0.0
        } else {
            timed_bytes as f64 * 8.0 / elapsed_us as f64
        };
        ProbeReport {
            bytes: total_bytes,
            elapsed_ms: elapsed_us / 1_000,
            mbps,
            capped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbps_is_bits_per_microsecond() {
        let r = ProbeReport::measure(1_260_000, 1_250_000, 1_000_000, false);
        assert_eq!((r.bytes, r.elapsed_ms), (1_260_000, 1_000));
        assert!((r.mbps - 10.0).abs() < 1e-9);
        assert_eq!(ProbeReport::measure(5, 0, 0, false).mbps, 0.0);
    }
}
