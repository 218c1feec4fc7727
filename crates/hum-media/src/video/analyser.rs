//! [`PatternAnalyser`]: reads the test pattern's code from received frames and reports loss,
//! order and latency. Sans-IO: arrival instants are inputs ([`PatternAnalyser::observe`]); as a
//! [`VideoSink`] it stamps arrivals with `Instant::now()`.

use std::collections::BTreeSet;
use std::time::Instant;

use super::clock::WallAnchor;
use super::pattern::{FRAME_MODULUS, PatternCode, read_code};
use super::{VideoError, VideoFrame, VideoSink};

/// What the analyser has seen so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatternReport {
    /// Frames observed.
    pub frames: u64,
    /// Frames whose code was read.
    pub decoded: u64,
    /// Frames without a readable code (corrupt picture, wrong content).
    pub unreadable: u64,
    /// Frame numbers between the first and the last seen that never arrived.
    pub lost: u64,
    /// Frames that arrived after a later frame.
    pub out_of_order: u64,
    /// Frames seen more than once.
    pub duplicates: u64,
    /// Latency percentiles over decoded frames, in ms (capture time in the code to arrival).
    pub latency_p50_ms: Option<i64>,
    pub latency_p95_ms: Option<i64>,
    pub latency_max_ms: Option<i64>,
}

/// Reads the code of every frame it is given. See the module doc.
#[derive(Debug)]
pub struct PatternAnalyser {
    anchor: WallAnchor,
    /// Last raw (24-bit) frame number and its unwrapped value.
    last: Option<(u32, i64)>,
    highest: i64,
    seen: BTreeSet<i64>,
    latencies: Vec<i64>,
    report: PatternReport,
}

impl PatternAnalyser {
    /// `anchor` maps arrival instants to Unix time (use [`WallAnchor::now`] in a receiving
    /// process; the sender's anchor when both share a virtual timeline).
    pub fn new(anchor: WallAnchor) -> Self {
        Self {
            anchor,
            last: None,
            highest: i64::MIN,
            seen: BTreeSet::new(),
            latencies: Vec::new(),
            report: PatternReport::default(),
        }
    }

    /// Reads `frame`'s code and records it as arrived at `arrival`.
    pub fn observe(&mut self, frame: &VideoFrame, arrival: Instant) -> Option<PatternCode> {
        self.report.frames += 1;
        let Some(code) = read_code(frame) else {
            self.report.unreadable += 1;
            return None;
        };
        self.report.decoded += 1;
        let n = match self.last {
            None => code.frame as i64,
            Some((raw, unwrapped)) => {
                // Serial-number arithmetic on 24 bits: the nearest unwrapped value.
                let d = code.frame.wrapping_sub(raw) & (FRAME_MODULUS - 1);
                let d = if d >= FRAME_MODULUS / 2 {
                    d as i64 - FRAME_MODULUS as i64
                } else {
                    d as i64
                };
                unwrapped + d
            }
        };
        self.last = Some((code.frame, n));
        if !self.seen.insert(n) {
            self.report.duplicates += 1;
        } else if n < self.highest {
            self.report.out_of_order += 1;
        }
        self.highest = self.highest.max(n);
        self.latencies
            .push(code.latency_ms(self.anchor.unix_ms(arrival)));
        Some(code)
    }

    /// The report so far.
    pub fn report(&self) -> PatternReport {
        let mut r = self.report.clone();
        if let (Some(&lo), Some(&hi)) = (self.seen.first(), self.seen.last()) {
            r.lost = (hi - lo + 1) as u64 - self.seen.len() as u64;
        }
        let mut l = self.latencies.clone();
        l.sort_unstable();
        let pick = |q: f64| l.get(((l.len() - 1) as f64 * q).round() as usize).copied();
        if !l.is_empty() {
            r.latency_p50_ms = pick(0.5);
            r.latency_p95_ms = pick(0.95);
            r.latency_max_ms = l.last().copied();
        }
        r
    }
}

impl VideoSink for PatternAnalyser {
    fn write(&mut self, frame: &VideoFrame) -> Result<(), VideoError> {
        self.observe(frame, Instant::now());
        Ok(())
    }
    fn name(&self) -> String {
        "pattern analyser".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::pattern::pattern_frame;
    use std::time::Duration;

    #[test]
    fn counts_loss_reordering_duplicates_and_latency() {
        let t0 = Instant::now();
        let anchor = WallAnchor::fixed(t0, 10_000_000);
        let frame = |k: u64| {
            pattern_frame(160, 90, k, t0 + Duration::from_millis(33 * k), &anchor).expect("f")
        };
        let mut a = PatternAnalyser::new(anchor);
        // Arrives 40 ms after capture; 3 is lost, 5 comes before 4, 6 twice, one black frame.
        for k in [0u64, 1, 2, 5, 4, 6, 6] {
            let arrival = t0 + Duration::from_millis(33 * k + 40);
            assert_eq!(
                a.observe(&frame(k), arrival).map(|c| c.frame),
                Some(k as u32)
            );
        }
        a.observe(&VideoFrame::black(160, 90, t0).expect("f"), t0);
        let r = a.report();
        assert_eq!(
            (
                r.frames,
                r.decoded,
                r.unreadable,
                r.lost,
                r.out_of_order,
                r.duplicates
            ),
            (8, 7, 1, 1, 1, 1)
        );
        assert_eq!((r.latency_p50_ms, r.latency_max_ms), (Some(40), Some(40)));
    }

    #[test]
    fn frame_numbers_unwrap_across_the_24_bit_boundary() {
        let t0 = Instant::now();
        let anchor = WallAnchor::fixed(t0, 0);
        let mut a = PatternAnalyser::new(anchor);
        for k in [
            FRAME_MODULUS as u64 - 2,
            FRAME_MODULUS as u64 - 1,
            1 << 24,
            (1 << 24) + 2,
        ] {
            let f = pattern_frame(160, 90, k, t0, &anchor).expect("f");
            a.observe(&f, t0);
        }
        let r = a.report();
        assert_eq!((r.lost, r.out_of_order, r.duplicates), (1, 0, 0));
    }
}
