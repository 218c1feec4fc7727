//! Sequence number and timestamp rewriting for one outgoing stream (one subscriber's copy of one
//! publication).
//!
//! The subscriber sees one continuous stream although the SFU forwards different incoming
//! streams over time (simulcast layers, or the same stream after a pause). At each switch the
//! rewriter picks new offsets so that the outgoing sequence number continues at last + 1 (no
//! gap the receiver would NACK or conceal) and the outgoing timestamp advances by the wall time
//! since the last forwarded packet (the receiver's jitter buffer sees real pacing).
//!
//! Invariants: outgoing sequence numbers of forwarded in-order packets are strictly increasing
//! by one across switches; a packet from before the current source's switch point is dropped
//! (it belongs to a stream the receiver no longer follows).

use std::time::{Duration, Instant};

/// The outgoing header fields of a forwarded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// Extended outgoing sequence number (starts below 65,536: no SRTP rollover to signal).
    pub seq: u64,
    pub timestamp: u32,
}

#[derive(Debug, Clone, Copy)]
struct Source {
    /// out_seq = in_seq + seq_offset (wrapping in u64 arithmetic).
    seq_offset: u64,
    /// out_ts = in_ts + ts_offset (wrapping).
    ts_offset: u32,
    /// The first incoming sequence number of this source.
    first_in: u64,
}

#[derive(Debug)]
pub struct Rewriter {
    clock_rate: u32,
    source: Option<Source>,
    /// Highest outgoing sequence number, its timestamp and when it was forwarded.
    last: Option<(u64, u32, Instant)>,
    next_initial_seq: u64,
}

impl Rewriter {
    /// `clock_rate` in Hz (48,000 for Opus, 90,000 for video); `initial_seq` the first outgoing
    /// sequence number (keep it below 65,536).
    pub fn new(clock_rate: u32, initial_seq: u16) -> Self {
        Rewriter {
            clock_rate,
            source: None,
            last: None,
            next_initial_seq: u64::from(initial_seq),
        }
    }

    /// Ends the current source: the next packet starts a new one (a layer switch or a resume).
    pub fn switch(&mut self) {
        self.source = None;
    }

    /// Rewrites one forwarded packet (extended incoming sequence number, RTP timestamp, arrival
    /// time). `None`: drop it (older than the current source's switch point).
    pub fn rewrite(&mut self, in_seq: u64, in_ts: u32, now: Instant) -> Option<Rewritten> {
        let src = match self.source {
            Some(s) => s,
            None => {
                let (out_seq, out_ts) = match self.last {
                    None => (self.next_initial_seq, in_ts),
                    Some((seq, ts, at)) => {
                        let ticks =
                            ticks(now.saturating_duration_since(at), self.clock_rate).max(1);
                        (seq.wrapping_add(1), ts.wrapping_add(ticks))
                    }
                };
                let s = Source {
                    seq_offset: out_seq.wrapping_sub(in_seq),
                    ts_offset: out_ts.wrapping_sub(in_ts),
                    first_in: in_seq,
                };
                self.source = Some(s);
                s
            }
        };
        if in_seq < src.first_in {
            return None;
        }
        let out = Rewritten {
            seq: in_seq.wrapping_add(src.seq_offset),
            timestamp: in_ts.wrapping_add(src.ts_offset),
        };
        match self.last {
            Some((seq, _, _)) if seq >= out.seq => {}
            _ => self.last = Some((out.seq, out.timestamp, now)),
        }
        Some(out)
    }
}

fn ticks(d: Duration, clock_rate: u32) -> u32 {
    let t = d.as_micros() * u128::from(clock_rate) / 1_000_000;
    u32::try_from(t).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuous_across_a_switch() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut r = Rewriter::new(90_000, 100);
        // Layer A: seq 5000.., ts 1_000_000.., 3000 ticks per 33 ms frame.
        let a: Vec<_> = (0..3u64)
            .map(|i| {
                r.rewrite(5000 + i, 1_000_000 + 3000 * i as u32, ms(33 * i))
                    .expect("fwd")
            })
            .collect();
        assert_eq!(
            a.iter().map(|x| x.seq).collect::<Vec<_>>(),
            vec![100, 101, 102]
        );
        assert_eq!(a[2].timestamp, a[0].timestamp + 6000);
        // Switch to layer B with unrelated seq/ts, 33 ms after the last packet.
        r.switch();
        let b0 = r.rewrite(42, 7, ms(99)).expect("fwd");
        assert_eq!(b0.seq, 103);
        assert_eq!(b0.timestamp, a[2].timestamp + 2970, "33 ms at 90 kHz");
        let b1 = r.rewrite(43, 3007, ms(132)).expect("fwd");
        assert_eq!((b1.seq, b1.timestamp), (104, b0.timestamp + 3000));
        // A late packet of B from before its switch point is dropped; reordered ones inside B pass.
        assert_eq!(r.rewrite(41, 0, ms(133)), None);
        let late = r
            .rewrite(42, 7, ms(134))
            .expect("reordered duplicate keeps its number");
        assert_eq!(late.seq, 103);
    }

    #[test]
    fn wraps_the_16_bit_incoming_space_via_extended_numbers() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(48_000, 1);
        let a = r.rewrite(65_535, u32::MAX - 100, t0).expect("fwd");
        let b = r
            .rewrite(
                65_536,
                u32::MAX.wrapping_add(860),
                t0 + Duration::from_millis(20),
            )
            .expect("fwd");
        assert_eq!(b.seq, a.seq + 1);
        assert_eq!(b.timestamp.wrapping_sub(a.timestamp), 960);
    }
}
