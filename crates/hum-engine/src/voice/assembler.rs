//! VP8 frames from RTP packets (RFC 7741), sans-IO: packets and the time go in, whole frames
//! (or "something was lost here") come out.
//!
//! A frame is the run of packets with consecutive sequence numbers that starts with a packet
//! whose descriptor says "start of partition 0" and ends with the RTP marker bit. Packets may
//! arrive out of order (a NACK retransmission comes late): they wait in a map keyed by the
//! unwrapped sequence number. Frames leave strictly in sequence order. When the next expected
//! packet is missing and a later complete frame is ready, the gap is waited for up to
//! [`AssemblerConfig::max_wait`] (long enough for a retransmission on a sane link); after that
//! the gap is declared lost ([`Assembled::Lost`]) and the later frame goes out.
//!
//! Invariants (checked in the tests): frames leave in increasing sequence order, every packet
//! is in at most one frame, the buffer never holds more than `max_packets` packets nor a frame
//! of more than `max_frame_bytes` (bytes from the network are bounded).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hum_sfu::packet::vp8;

/// Bounds and timing.
#[derive(Debug, Clone, Copy)]
pub struct AssemblerConfig {
    /// How long a gap in the sequence numbers is waited for once a later frame is complete.
    pub max_wait: Duration,
    /// Packets held at most (beyond this the oldest are dropped as lost).
    pub max_packets: usize,
    /// The largest frame accepted (a 4K keyframe at a high rate is well under this).
    pub max_frame_bytes: usize,
}

impl Default for AssemblerConfig {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_millis(150),
            max_packets: 2048,
            max_frame_bytes: 4 << 20,
        }
    }
}

/// One complete VP8 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFrameData {
    /// The VP8 frame (payload descriptors stripped).
    pub data: Vec<u8>,
    /// RTP timestamp (90 kHz).
    pub timestamp: u32,
    pub keyframe: bool,
    /// When its last packet arrived.
    pub arrival: Instant,
}

/// What the assembler produces, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assembled {
    Frame(VideoFrameData),
    /// Packets before the next frame never came (or were unusable): the decoder must wait for
    /// a keyframe.
    Lost,
}

#[derive(Debug)]
struct Pkt {
    timestamp: u32,
    marker: bool,
    starts_frame: bool,
    keyframe: bool,
    /// The VP8 bytes after the descriptor.
    body: Vec<u8>,
    arrival: Instant,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssemblerStats {
    pub packets: u64,
    pub frames: u64,
    pub keyframes: u64,
    pub losses: u64,
    /// Packets that could not be used (bad descriptor, too old, duplicate, over a bound).
    pub discarded: u64,
}

/// See the module doc.
#[derive(Debug)]
pub struct FrameAssembler {
    cfg: AssemblerConfig,
    /// Highest unwrapped sequence number seen.
    highest: Option<i64>,
    /// The sequence number the next frame must start at (`None` before the first frame).
    next: Option<i64>,
    pending: BTreeMap<i64, Pkt>,
    /// Since when a complete frame has been waiting behind a gap.
    blocked_since: Option<Instant>,
    stats: AssemblerStats,
}

impl FrameAssembler {
    pub fn new(cfg: AssemblerConfig) -> Self {
        Self {
            cfg,
            highest: None,
            next: None,
            pending: BTreeMap::new(),
            blocked_since: None,
            stats: AssemblerStats::default(),
        }
    }

    pub fn stats(&self) -> AssemblerStats {
        self.stats
    }

    /// The nearest unwrapped value of a 16-bit sequence number.
    fn unwrap(&mut self, seq: u16) -> i64 {
        let Some(h) = self.highest else {
            let v = i64::from(seq);
            self.highest = Some(v);
            return v;
        };
        let diff = seq.wrapping_sub(h as u16) as i16;
        let v = h + i64::from(diff);
        self.highest = Some(h.max(v));
        v
    }

    /// One RTP packet of the stream. Never panics on any payload.
    pub fn push(
        &mut self,
        now: Instant,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Vec<Assembled> {
        self.stats.packets += 1;
        let n = self.unwrap(seq);
        let d = match vp8::parse(payload) {
            Ok(d) if d.header_len <= payload.len() => d,
            _ => {
                self.stats.discarded += 1;
                return self.poll(now);
            }
        };
        if self.next.is_some_and(|next| n < next) || self.pending.contains_key(&n) {
            // Too late (its frame is out or given up) or a duplicate.
            self.stats.discarded += 1;
            return self.poll(now);
        }
        self.pending.insert(
            n,
            Pkt {
                timestamp,
                marker,
                starts_frame: d.starts_frame(),
                keyframe: d.keyframe,
                body: payload[d.header_len..].to_vec(),
                arrival: now,
            },
        );
        while self.pending.len() > self.cfg.max_packets {
            self.pending.pop_first();
            self.stats.discarded += 1;
            self.blocked_since.get_or_insert(now);
        }
        self.poll(now)
    }

    /// Time passed without packets (call it every few tens of ms): gives up on old gaps.
    pub fn poll(&mut self, now: Instant) -> Vec<Assembled> {
        let mut out = Vec::new();
        loop {
            // The first frame: wait for a frame start.
            let next = match self.next {
                Some(n) => n,
                None => match self.pending.iter().find(|(_, p)| p.starts_frame) {
                    Some((&n, _)) => {
                        self.discard_before(n);
                        self.next = Some(n);
                        n
                    }
                    None => break,
                },
            };
            if let Some((frame, end)) = self.complete_at(next) {
                self.take(next, end, frame, &mut out);
                self.blocked_since = None;
                continue;
            }
            // Blocked: is there a complete frame further on?
            let Some(later) = self
                .pending
                .range(next + 1..)
                .filter(|(_, p)| p.starts_frame)
                .map(|(&n, _)| n)
                .find(|&n| self.complete_at(n).is_some())
            else {
                break;
            };
            let since = *self.blocked_since.get_or_insert(now);
            if now.saturating_duration_since(since) < self.cfg.max_wait {
                break;
            }
            // Give up on the gap.
            self.discard_before(later);
            self.next = Some(later);
            self.blocked_since = None;
            self.stats.losses += 1;
            out.push(Assembled::Lost);
        }
        out
    }

    /// If packets `start..` form a whole frame, its size and last sequence number.
    fn complete_at(&self, start: i64) -> Option<(usize, i64)> {
        let first = self.pending.get(&start)?;
        if !first.starts_frame {
            return None;
        }
        let mut bytes = 0usize;
        let mut at = start;
        loop {
            let p = self.pending.get(&at)?;
            if p.timestamp != first.timestamp {
                return None;
            }
            bytes += p.body.len();
            if p.marker {
                return Some((bytes, at));
            }
            at += 1;
        }
    }

    fn take(&mut self, start: i64, end: i64, bytes: usize, out: &mut Vec<Assembled>) {
        let mut data = Vec::with_capacity(bytes.min(self.cfg.max_frame_bytes));
        let (mut timestamp, mut keyframe, mut arrival) = (0, false, None);
        for n in start..=end {
            if let Some(p) = self.pending.remove(&n) {
                if n == start {
                    timestamp = p.timestamp;
                    keyframe = p.keyframe;
                }
                arrival = Some(arrival.map_or(p.arrival, |a: Instant| a.max(p.arrival)));
                data.extend_from_slice(&p.body);
            }
        }
        self.next = Some(end + 1);
        let Some(arrival) = arrival else { return };
        if bytes > self.cfg.max_frame_bytes || data.is_empty() {
            self.stats.discarded += (end - start + 1) as u64;
            self.stats.losses += 1;
            out.push(Assembled::Lost);
            return;
        }
        self.stats.frames += 1;
        if keyframe {
            self.stats.keyframes += 1;
        }
        out.push(Assembled::Frame(VideoFrameData {
            data,
            timestamp,
            keyframe,
            arrival,
        }));
    }

    fn discard_before(&mut self, n: i64) {
        let keep = self.pending.split_off(&n);
        self.stats.discarded += self.pending.len() as u64;
        self.pending = keep;
    }
}

#[cfg(test)]
mod tests {
    use hum_sfu::packet::vp8::synthetic_payload;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// A frame of `n` packets starting at `seq`.
    fn frame(seq: u16, ts: u32, n: usize, key: bool) -> Vec<(u16, u32, bool, Vec<u8>)> {
        (0..n)
            .map(|i| {
                (
                    seq.wrapping_add(i as u16),
                    ts,
                    i + 1 == n,
                    synthetic_payload(ts as u16 & 0x7fff, i == 0, key, 20),
                )
            })
            .collect()
    }

    fn frames(out: &[Assembled]) -> Vec<u32> {
        out.iter()
            .filter_map(|a| match a {
                Assembled::Frame(f) => Some(f.timestamp),
                Assembled::Lost => None,
            })
            .collect()
    }

    #[test]
    fn in_order_packets_make_frames_across_the_sequence_wrap() {
        let t = Instant::now();
        let mut a = FrameAssembler::new(AssemblerConfig::default());
        let mut out = Vec::new();
        let mut seq = 65_530u16;
        for k in 0..5u32 {
            for (s, ts, m, p) in frame(seq, k * 3000, 3, k == 0) {
                out.extend(a.push(t, s, ts, m, &p));
            }
            seq = seq.wrapping_add(3);
        }
        assert_eq!(frames(&out), vec![0, 3000, 6000, 9000, 12000]);
        let Assembled::Frame(first) = &out[0] else {
            panic!("{out:?}")
        };
        assert!(first.keyframe);
        assert_eq!(a.stats().losses, 0);
    }

    #[test]
    fn a_reordered_packet_is_waited_for_and_a_lost_one_is_reported_after_max_wait() {
        let t = Instant::now();
        let mut a = FrameAssembler::new(AssemblerConfig::default());
        let f0 = frame(100, 0, 2, true);
        let f1 = frame(102, 3000, 2, false);
        let f2 = frame(104, 6000, 2, false);
        let mut out = Vec::new();
        for (s, ts, m, p) in &f0 {
            out.extend(a.push(t, *s, *ts, *m, p));
        }
        // f1's second packet comes after f2: f2 waits, then f1 and f2 leave in order.
        out.extend(a.push(t, f1[0].0, f1[0].1, f1[0].2, &f1[0].3));
        for (s, ts, m, p) in &f2 {
            out.extend(a.push(t, *s, *ts, *m, p));
        }
        assert_eq!(frames(&out), vec![0]);
        out.extend(a.push(
            t + Duration::from_millis(20),
            f1[1].0,
            f1[1].1,
            f1[1].2,
            &f1[1].3,
        ));
        assert_eq!(frames(&out), vec![0, 3000, 6000]);
        // f3 loses its first packet for good: f4 waits max_wait, then a loss, then f4.
        let f3 = frame(106, 9000, 2, false);
        let f4 = frame(108, 12000, 1, false);
        out.clear();
        out.extend(a.push(t, f3[1].0, f3[1].1, f3[1].2, &f3[1].3));
        out.extend(a.push(t, f4[0].0, f4[0].1, f4[0].2, &f4[0].3));
        assert!(out.is_empty(), "{out:?}");
        assert!(a.poll(t + Duration::from_millis(100)).is_empty());
        let late = a.poll(t + Duration::from_millis(200));
        assert_eq!(late.first(), Some(&Assembled::Lost));
        assert_eq!(frames(&late), vec![12000]);
        // The straggler of the given-up frame is discarded, not assembled.
        assert!(a.push(t, f3[0].0, f3[0].1, f3[0].2, &f3[0].3).is_empty());
    }

    #[test]
    fn garbage_and_random_streams_never_panic_and_stay_bounded() {
        let t = Instant::now();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut a = FrameAssembler::new(AssemblerConfig {
            max_packets: 64,
            max_frame_bytes: 2000,
            ..Default::default()
        });
        for i in 0..20_000u32 {
            let len = rng.gen_range(0..40);
            let payload: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            let now = t + Duration::from_millis(u64::from(i));
            let seq = rng.gen_range(0..200u16);
            let ts = u32::from(seq / 3) * 3000;
            for out in a.push(now, seq, ts, rng.gen_bool(0.3), &payload) {
                if let Assembled::Frame(f) = out {
                    assert!(f.data.len() <= 2000);
                }
            }
            assert!(a.pending.len() <= 64);
        }
        // A clean stream afterwards still assembles.
        let mut b = FrameAssembler::new(AssemblerConfig::default());
        let mut n = 0;
        for k in 0..50u32 {
            for (s, ts, m, p) in frame((k * 4) as u16, k * 3000, 4, k % 10 == 0) {
                n += frames(&b.push(t, s, ts, m, &p)).len();
            }
        }
        assert_eq!(n, 50);
    }
}
