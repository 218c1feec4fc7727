//! A sans-IO adaptive jitter buffer for Opus packets.
//!
//! Time is an input: [`JitterBuffer::push`] takes the arrival instant, [`JitterBuffer::pop`]
//! the playout instant. Nothing here reads a clock, so tests replay exact arrival patterns.
//!
//! ## How it works
//! - Packets are keyed by their (unwrapped) RTP timestamp; the *cursor* is the timestamp to play
//!   next. Each `pop` yields what to decode for the cursor: the packet, its FEC copy from the
//!   next packet, or a concealment frame (Opus PLC).
//! - **Target depth** follows the measured jitter: for each packet, its *relative delay* is its
//!   transit time minus the smallest transit time seen in a sliding window; the target is the
//!   95th percentile of those delays plus one frame, clamped to `[min_delay, max_delay]`.
//! - **Depth** is how much audio is queued from the cursor to the newest packet. Growing: when
//!   nothing at or after the cursor has arrived (underrun), we conceal *without* advancing, which
//!   adds one frame of delay. Shrinking: once per adaptation window, if the smallest depth seen in
//!   the window exceeded the target by a frame, one frame is dropped.
//! - After a long underrun (the sender stopped or went quiet) the buffer rebuffers from scratch.
//!
//! Invariants (checked in tests): the cursor never moves backwards; a packet is played at most
//! once; every pop accounts for exactly one frame of output.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::SAMPLE_RATE;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterConfig {
    /// Samples per packet the sender uses (960 = 20 ms). Packets of other sizes are accepted;
    /// this is the unit of adaptation and concealment.
    pub frame_samples: u32,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// How many recent packets the jitter estimate looks at.
    pub window_packets: usize,
    /// Pops between two shrink decisions.
    pub adapt_pops: u32,
    /// Consecutive underruns after which the stream is considered paused and rebuffers.
    pub rebuffer_after: u32,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            frame_samples: 960,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(400),
            window_packets: 250,
            adapt_pops: 25,
            rebuffer_after: 25,
        }
    }
}

/// What to decode next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// Decode this packet normally.
    Packet(Vec<u8>),
    /// The packet at the cursor was lost; recover it from this (the next) packet's FEC data.
    Fec(Vec<u8>),
    /// Nothing usable: let the decoder conceal (PLC).
    Conceal,
    /// Not playing (buffering or paused): output silence, do not touch the decoder.
    Silence,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    pub received: u64,
    pub played: u64,
    pub fec_recovered: u64,
    pub concealed: u64,
    /// Packets that arrived after their playout time.
    pub late: u64,
    pub duplicates: u64,
    /// Frames dropped to shrink the buffer.
    pub dropped: u64,
    /// Frames of a gap of lost packets skipped rather than concealed (the buffer was deep
    /// enough after an outage).
    pub skipped: u64,
    /// Times decoded audio was trimmed (by the trim step) to shrink the buffer.
    pub trimmed: u64,
    /// Frames inserted to grow it (underruns).
    pub underruns: u64,
    pub rebuffers: u64,
}

#[derive(Debug)]
struct Entry {
    payload: Vec<u8>,
    samples: u32,
    arrival: Instant,
}

#[derive(Debug)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    packets: BTreeMap<i64, Entry>,
    last_ts: Option<(u32, i64)>,
    cursor: Option<i64>,
    /// Arrival of the first packet since (re)buffering.
    buffering_since: Option<Instant>,
    epoch: Option<Instant>,
    transits: VecDeque<i64>,
    /// Reused for the percentile (no allocation per packet).
    scratch: Vec<i64>,
    rfc3550_jitter_us: f64,
    last_transit: Option<i64>,
    target_samples: i64,
    min_depth_in_window: i64,
    /// Shortest time a played packet waited in the buffer during this window (samples).
    min_wait_in_window: i64,
    pops_in_window: u32,
    underrun_run: u32,
    last_samples: u32,
    /// When the player pulls less than a packet at a time: shrink by this many samples of
    /// decoded audio instead of a whole packet (0 = whole packets).
    trim_step: u32,
    pending_trim: u32,
    stats: JitterStats,
}

/// Safety margin kept when shrinking by waiting time.
const WAIT_MARGIN_US: i64 = 3_000;

fn us_to_samples(us: i64) -> i64 {
    us * SAMPLE_RATE as i64 / 1_000_000
}

fn samples_to_duration(s: i64) -> Duration {
    Duration::from_micros((s.max(0) as u64) * 1_000_000 / SAMPLE_RATE as u64)
}

impl JitterBuffer {
    pub fn new(cfg: JitterConfig) -> Self {
        Self {
            target_samples: us_to_samples(cfg.min_delay.as_micros() as i64)
                .max(cfg.frame_samples as i64),
            cfg,
            packets: BTreeMap::new(),
            last_ts: None,
            cursor: None,
            buffering_since: None,
            epoch: None,
            transits: VecDeque::new(),
            scratch: Vec::new(),
            rfc3550_jitter_us: 0.0,
            last_transit: None,
            min_depth_in_window: i64::MAX,
            min_wait_in_window: i64::MAX,
            pops_in_window: 0,
            underrun_run: 0,
            last_samples: 0,
            trim_step: 0,
            pending_trim: 0,
            stats: JitterStats::default(),
        }
    }

    /// The player pulls `samples` at a time, less than a packet: when every packet waited more
    /// than that (plus a margin), shrink by trimming that much decoded audio
    /// ([`JitterBuffer::take_trim`]) rather than dropping a whole packet. Finer steps keep the
    /// delay within one pull of the minimum at any clock phase. 0 turns it off.
    pub fn set_trim_step(&mut self, samples: u32) {
        self.trim_step = samples;
    }

    /// Samples of decoded audio the player should skip now (and forget).
    pub fn take_trim(&mut self) -> u32 {
        std::mem::take(&mut self.pending_trim)
    }

    /// Samples covered by the last [`JitterBuffer::pop`] (0 after `Silence`).
    pub fn last_samples(&self) -> u32 {
        self.last_samples
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// The delay the buffer currently aims for.
    pub fn target_delay(&self) -> Duration {
        samples_to_duration(self.target_samples)
    }

    /// Interarrival jitter as RFC 3550 defines it (what RTCP reports).
    pub fn jitter(&self) -> Duration {
        Duration::from_micros(self.rfc3550_jitter_us as u64)
    }

    /// Audio queued from the cursor to the end of the newest packet.
    pub fn depth(&self) -> Duration {
        samples_to_duration(self.depth_samples())
    }

    fn depth_samples(&self) -> i64 {
        match (self.cursor, self.packets.last_key_value()) {
            (Some(c), Some((ts, e))) => (ts + e.samples as i64 - c).max(0),
            (None, Some((ts, e))) => {
                let first = self
                    .packets
                    .first_key_value()
                    .map(|(k, _)| *k)
                    .unwrap_or(*ts);
                ts + e.samples as i64 - first
            }
            _ => 0,
        }
    }

    fn unwrap_ts(&mut self, ts: u32) -> i64 {
        let ext = match self.last_ts {
            None => ts as i64,
            Some((last, last_ext)) => last_ext + ts.wrapping_sub(last) as i32 as i64,
        };
        if self.last_ts.is_none_or(|(_, e)| ext > e) {
            self.last_ts = Some((ts, ext));
        }
        ext
    }

    /// A packet arrived at `now`. `samples` is its duration (from the Opus TOC; pass
    /// `frame_samples` if unknown).
    pub fn push(&mut self, now: Instant, rtp_timestamp: u32, samples: u32, payload: Vec<u8>) {
        let ts = self.unwrap_ts(rtp_timestamp);
        let samples = if samples == 0 || samples > 5760 {
            self.cfg.frame_samples
        } else {
            samples
        };
        self.stats.received += 1;
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = us_to_samples(now.saturating_duration_since(epoch).as_micros() as i64);
        self.observe_transit(arrival - ts);

        if let Some(c) = self.cursor {
            if ts < c {
                self.stats.late += 1;
                return;
            }
            // Far ahead of the cursor: the sender jumped (restart, long pause). Start over.
            let limit = 2 * us_to_samples(self.cfg.max_delay.as_micros() as i64);
            if ts - c > limit {
                self.rebuffer();
            }
        }
        if self.packets.contains_key(&ts) {
            self.stats.duplicates += 1;
            return;
        }
        if self.packets.len() >= 1000 {
            // Bounded memory whatever the peer sends.
            self.rebuffer();
        }
        self.buffering_since.get_or_insert(now);
        self.packets.insert(
            ts,
            Entry {
                payload,
                samples,
                arrival: now,
            },
        );
    }

    fn observe_transit(&mut self, transit: i64) {
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs() as f64 * 1e6 / SAMPLE_RATE as f64;
            self.rfc3550_jitter_us += (d - self.rfc3550_jitter_us) / 16.0;
        }
        self.last_transit = Some(transit);
        self.transits.push_back(transit);
        while self.transits.len() > self.cfg.window_packets.max(2) {
            self.transits.pop_front();
        }
        let min = self.transits.iter().copied().min().unwrap_or(transit);
        self.scratch.clear();
        self.scratch.extend(self.transits.iter().map(|t| t - min));
        let k = ((self.scratch.len() - 1) as f64 * 0.95).round() as usize;
        let p95 = *self.scratch.select_nth_unstable(k).1;
        let lo = us_to_samples(self.cfg.min_delay.as_micros() as i64);
        let hi = us_to_samples(self.cfg.max_delay.as_micros() as i64);
        self.target_samples = (p95 + self.cfg.frame_samples as i64).clamp(lo, hi.max(lo));
    }

    fn rebuffer(&mut self) {
        self.packets.clear();
        self.cursor = None;
        self.buffering_since = None;
        self.underrun_run = 0;
        self.min_depth_in_window = i64::MAX;
        self.min_wait_in_window = i64::MAX;
        self.pops_in_window = 0;
        self.stats.rebuffers += 1;
    }

    /// What to play at `now`. Call once per frame of output; the result covers one packet's
    /// duration ([`JitterBuffer::last_samples`]).
    pub fn pop(&mut self, now: Instant) -> Playout {
        self.last_samples = 0;
        let Some(cursor) = self.cursor else {
            // Buffering: wait until the oldest packet has waited the target delay.
            let Some(since) = self.buffering_since else {
                return Playout::Silence;
            };
            if now.saturating_duration_since(since)
                + samples_to_duration(self.cfg.frame_samples as i64)
                <= self.target_delay()
            {
                return Playout::Silence;
            }
            let Some((&first, _)) = self.packets.first_key_value() else {
                return Playout::Silence;
            };
            self.cursor = Some(first);
            return self.pop(now);
        };

        let depth = self.depth_samples();
        if depth == 0 {
            // Underrun: nothing at or after the cursor. Conceal in place; delay grows by a frame.
            self.underrun_run += 1;
            if self.underrun_run > self.cfg.rebuffer_after {
                self.rebuffer();
                return Playout::Silence;
            }
            self.stats.underruns += 1;
            self.stats.concealed += 1;
            // Grow by one pull, not a whole packet, when the player pulls less at a time: the
            // late packet usually arrives within it, and 10 ms less delay is kept afterwards.
            self.last_samples = if self.trim_step > 0 && self.trim_step < self.cfg.frame_samples {
                self.trim_step
            } else {
                self.cfg.frame_samples
            };
            return Playout::Conceal;
        }
        self.underrun_run = 0;

        // Shrink decision, once per adaptation window.
        self.min_depth_in_window = self.min_depth_in_window.min(depth);
        if let Some(e) = self.packets.get(&cursor) {
            let waited = us_to_samples(now.saturating_duration_since(e.arrival).as_micros() as i64);
            self.min_wait_in_window = self.min_wait_in_window.min(waited);
        }
        self.pops_in_window += 1;
        if self.pops_in_window >= self.cfg.adapt_pops {
            let frame = self.cfg.frame_samples as i64;
            let excess = self.min_depth_in_window - self.target_samples;
            // Every packet of the window waited at least a frame (plus a margin) longer than
            // needed: playing one frame earlier would still have found each of them in time.
            let idle = self.min_wait_in_window != i64::MAX
                && self.min_wait_in_window >= frame + us_to_samples(WAIT_MARGIN_US)
                && depth >= 2 * frame;
            let step = self.trim_step as i64;
            // Keep the measured jitter (the target's allowance beyond one frame) on top of the
            // margin: a quiet half second is no proof that the next spike will not come.
            let jitter_allowance = (self.target_samples - frame).max(0);
            let trim = step > 0
                && step < frame
                && self.pending_trim == 0
                && self.min_wait_in_window != i64::MAX
                && self.min_wait_in_window
                    >= step + us_to_samples(WAIT_MARGIN_US) + jitter_allowance;
            self.pops_in_window = 0;
            self.min_depth_in_window = i64::MAX;
            self.min_wait_in_window = i64::MAX;
            if excess < frame && trim {
                // Every packet could have been played a pull earlier: skip a pull's worth of
                // decoded audio (the player does it) and keep playing this packet.
                self.pending_trim = self.trim_step;
                self.stats.trimmed += 1;
            } else if excess >= frame || idle {
                let skip = self.frame_at(cursor);
                self.packets.remove(&cursor);
                self.cursor = Some(cursor + skip as i64);
                self.stats.dropped += 1;
                return self.pop(now);
            }
        }

        // A gap of lost packets (an outage, e.g. while ICE switches paths) after which newer
        // packets already wait: the underrun that went with the outage has already filled its
        // time in place, so concealing the gap too would add its length to the delay for good
        // (shed afterwards one frame per window: seconds of audio played fast). Skip as much
        // of the gap as the excess over the target allows; a short gap (one lost packet, the
        // FEC case) is still concealed.
        if !self.packets.contains_key(&cursor)
            && let Some((&next, _)) = self.packets.range(cursor..).next()
        {
            let frame = self.cfg.frame_samples as i64;
            let gap = next - cursor;
            let excess = self.depth_samples() - self.target_samples;
            if gap >= 2 * frame && excess >= frame {
                let skip = gap.min(excess - excess % frame);
                self.cursor = Some(cursor + skip);
                self.stats.skipped += (skip / frame) as u64;
                return self.pop(now);
            }
        }

        let frame = self.frame_at(cursor);
        self.cursor = Some(cursor + frame as i64);
        self.last_samples = frame;
        if let Some(e) = self.packets.remove(&cursor) {
            self.stats.played += 1;
            return Playout::Packet(e.payload);
        }
        self.stats.concealed += 1;
        match self.packets.get(&(cursor + frame as i64)) {
            Some(next) => {
                self.stats.fec_recovered += 1;
                Playout::Fec(next.payload.clone())
            }
            None => Playout::Conceal,
        }
    }

    /// Duration of the packet at `ts`, or of the packet after a gap.
    fn frame_at(&self, ts: i64) -> u32 {
        match self.packets.get(&ts) {
            Some(e) => e.samples,
            None => match self.packets.range(ts..).next() {
                // A gap shorter than a frame (mixed frame sizes): conceal exactly the gap.
                Some((next, _)) if (*next - ts) < self.cfg.frame_samples as i64 => {
                    (*next - ts) as u32
                }
                _ => self.cfg.frame_samples,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Sends `n` 20 ms packets whose payload is their index, through a network whose one-way
    /// delay is `base + jitter(i)` and which drops packet `i` when `lost(i)`; pops every 20 ms.
    /// Returns the sequence of playouts (with the index decoded back) and the buffer.
    fn simulate(
        n: u32,
        jitter: impl Fn(u32, &mut ChaCha8Rng) -> Duration,
        lost: impl Fn(u32, &mut ChaCha8Rng) -> bool,
        seed: u64,
        ts0: u32,
    ) -> (Vec<Playout>, JitterBuffer) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let t0 = Instant::now();
        let base = Duration::from_millis(30);
        let mut arrivals: Vec<(Duration, u32)> = Vec::new();
        for i in 0..n {
            if lost(i, &mut rng) {
                continue;
            }
            let at = Duration::from_millis(20 * i as u64) + base + jitter(i, &mut rng);
            arrivals.push((at, i));
        }
        arrivals.sort();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut out = Vec::new();
        let mut next = 0;
        // Pops are at 20 ms steps with an arbitrary phase of 7 ms.
        for k in 0..(n + 40) {
            let now = Duration::from_millis(20 * k as u64 + 7);
            while next < arrivals.len() && arrivals[next].0 <= now {
                let (at, i) = arrivals[next];
                jb.push(
                    t0 + at,
                    ts0.wrapping_add(i * 960),
                    960,
                    i.to_be_bytes().to_vec(),
                );
                next += 1;
            }
            out.push(jb.pop(t0 + now));
        }
        (out, jb)
    }

    fn idx(p: &[u8]) -> u32 {
        u32::from_be_bytes([p[0], p[1], p[2], p[3]])
    }

    fn played(out: &[Playout]) -> Vec<u32> {
        out.iter()
            .filter_map(|p| match p {
                Playout::Packet(b) => Some(idx(b)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn with_sub_packet_pulls_an_underrun_conceals_one_pull_not_a_packet() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut jb = JitterBuffer::new(JitterConfig::default());
        jb.set_trim_step(480);
        jb.push(ms(0), 0, 960, vec![0]);
        // Buffering, then the packet plays; the next one is late: conceal 10 ms, in place.
        let mut t = 0;
        while !matches!(jb.pop(ms(t)), Playout::Packet(_)) {
            t += 10;
            assert!(t < 100, "never started");
        }
        assert_eq!(jb.pop(ms(t + 20)), Playout::Conceal);
        assert_eq!(jb.last_samples(), 480);
        jb.push(ms(t + 25), 960, 960, vec![1]);
        assert_eq!(jb.pop(ms(t + 30)), Playout::Packet(vec![1]));
        assert_eq!(jb.last_samples(), 960);
        // Without a trim step the same underrun conceals a whole packet.
        let mut jb = JitterBuffer::new(JitterConfig::default());
        jb.push(ms(0), 0, 960, vec![0]);
        let mut t = 0;
        while !matches!(jb.pop(ms(t)), Playout::Packet(_)) {
            t += 10;
        }
        assert_eq!(jb.pop(ms(t + 20)), Playout::Conceal);
        assert_eq!(jb.last_samples(), 960);
    }

    #[test]
    fn an_outage_with_lost_packets_does_not_leave_its_length_as_extra_delay() {
        // 280 ms of packets lost at once (ICE switching paths): the underrun conceals the
        // outage in place; the lost packets must not be concealed a second time once newer
        // ones are waiting, or the delay grows by the outage and is shed by dropping real
        // audio one frame per adaptation window for seconds afterwards.
        let n = 500;
        let (out, jb) = simulate(
            n,
            |_, _| Duration::ZERO,
            |i, _| (100..114).contains(&i),
            3,
            7,
        );
        let p = played(&out);
        let expected: Vec<u32> = (0..n).filter(|i| !(100..114).contains(i)).collect();
        assert_eq!(p, expected, "real audio dropped: {:?}", jb.stats());
        let concealed = out[..n as usize]
            .iter()
            .filter(|o| matches!(o, Playout::Conceal | Playout::Fec(_)))
            .count();
        assert!(
            concealed <= 16,
            "concealed {concealed} frames: {:?}",
            jb.stats()
        );
        assert!(jb.stats().skipped >= 12, "{:?}", jb.stats());
    }

    #[test]
    fn clean_network_plays_everything_in_order_once() {
        let (out, jb) = simulate(500, |_, _| Duration::ZERO, |_, _| false, 1, 0);
        let p = played(&out);
        assert_eq!(p, (0..500).collect::<Vec<_>>());
        // No concealment while the stream runs (after it ends, the buffer underruns, then rebuffers).
        let stream_part = &out[..500];
        assert!(!stream_part.contains(&Playout::Conceal));
        assert_eq!(jb.stats().rebuffers, 1);
        assert!(
            jb.target_delay() <= Duration::from_millis(40),
            "{:?}",
            jb.target_delay()
        );
    }

    #[test]
    fn timestamps_wrap_around() {
        let (out, _) = simulate(
            200,
            |_, _| Duration::ZERO,
            |_, _| false,
            1,
            u32::MAX - 960 * 50,
        );
        assert_eq!(played(&out), (0..200).collect::<Vec<_>>());
    }

    #[test]
    fn target_follows_jitter_up_and_down() {
        // 0-80 ms of uniform jitter for 10 s, then none for 20 s.
        let (out, jb) = simulate(
            1500,
            |i, r| {
                if i < 500 {
                    Duration::from_millis(r.gen_range(0..80))
                } else {
                    Duration::ZERO
                }
            },
            |_, _| false,
            2,
            1234,
        );
        // Cursor never moves back and nothing plays twice.
        let p = played(&out);
        assert!(p.windows(2).all(|w| w[0] < w[1]), "not monotonic");
        // During the jittery part the buffer grew and concealment stayed rare.
        let first: Vec<_> = out[100..500]
            .iter()
            .filter(|p| **p == Playout::Conceal)
            .collect();
        assert!(
            first.len() < 20,
            "too much concealment under jitter: {}",
            first.len()
        );
        // Afterwards it shrank back close to the floor.
        assert!(
            jb.target_delay() <= Duration::from_millis(40),
            "{:?}",
            jb.target_delay()
        );
        assert!(
            jb.depth() <= Duration::from_millis(80),
            "depth {:?}",
            jb.depth()
        );
        assert!(jb.stats().dropped > 0);
    }

    #[test]
    fn jittery_target_is_larger_than_clean_target() {
        let (_, clean) = simulate(300, |_, _| Duration::ZERO, |_, _| false, 3, 0);
        let (_, jittery) = simulate(
            300,
            |_, r| Duration::from_millis(r.gen_range(0..60)),
            |_, _| false,
            3,
            0,
        );
        assert!(jittery.target_delay() >= clean.target_delay() + Duration::from_millis(30));
        assert!(jittery.jitter() > clean.jitter());
    }

    #[test]
    fn isolated_losses_use_fec_from_the_next_packet() {
        let (out, jb) = simulate(300, |_, _| Duration::ZERO, |i, _| i % 10 == 5, 4, 0);
        let fec: Vec<u32> = out
            .iter()
            .filter_map(|p| match p {
                Playout::Fec(b) => Some(idx(b)),
                _ => None,
            })
            .collect();
        // Each lost packet i is recovered from packet i + 1.
        assert_eq!(
            fec,
            (0..30)
                .map(|k| k * 10 + 6)
                .filter(|&i| i < 300)
                .collect::<Vec<_>>()
        );
        assert_eq!(jb.stats().fec_recovered, 30);
    }

    #[test]
    fn late_duplicate_and_absurd_packets_do_not_break_it() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        for i in 0..10u32 {
            jb.push(
                t0 + Duration::from_millis(20 * i as u64),
                i * 960,
                960,
                vec![i as u8],
            );
        }
        for k in 0..8u64 {
            jb.pop(t0 + Duration::from_millis(200 + 20 * k));
        }
        jb.push(t0 + Duration::from_millis(400), 0, 960, vec![0]); // late
        jb.push(t0 + Duration::from_millis(400), 9 * 960, 960, vec![9]); // duplicate
        assert_eq!(jb.stats().late, 1);
        assert_eq!(jb.stats().duplicates, 1);
        // A jump of hours: rebuffer, no panic, no giant buffer.
        jb.push(t0 + Duration::from_millis(420), 2_000_000_000, 960, vec![1]);
        assert_eq!(jb.stats().rebuffers, 1);
        assert!(jb.depth() <= Duration::from_millis(20));
        // Bogus durations are clamped.
        jb.push(t0 + Duration::from_millis(440), 2_000_000_960, 0, vec![2]);
        jb.push(
            t0 + Duration::from_millis(460),
            2_000_001_920,
            99_999,
            vec![3],
        );
        assert!(jb.depth() <= Duration::from_millis(60));
    }

    #[test]
    fn a_long_silence_rebuffers_instead_of_concealing_forever() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        for i in 0..5u32 {
            jb.push(
                t0 + Duration::from_millis(20 * i as u64),
                i * 960,
                960,
                vec![1],
            );
        }
        let outs: Vec<Playout> = (0..60u64)
            .map(|k| jb.pop(t0 + Duration::from_millis(40 + 20 * k)))
            .collect();
        assert!(outs.iter().filter(|p| **p == Playout::Conceal).count() <= 26);
        assert_eq!(outs.last(), Some(&Playout::Silence));
    }
}
