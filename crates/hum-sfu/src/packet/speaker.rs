//! Dominant speaker identification after Volfin and Cohen, "Dominant Speaker Identification for
//! Multipoint Videoconferencing" (2013), on RFC 6464 levels, with the parameters Jitsi and
//! mediasoup use.
//!
//! Each speaker's level per 20 ms frame becomes an *immediate* activity: the number of "active
//! sub-bands" out of N1 = 13 (we only have a level, so it is the loudness quantised to 13
//! steps). A *medium* block is N2 = 5 immediates; its activity counts immediates above 7. A
//! *long* interval is N3 = 10 medium blocks (1 s); its activity counts medium blocks above 4.
//! Each activity `k` of `n` becomes a speech-activity score, the log-likelihood ratio of speech
//! (binomial, p = 0.5) against noise (exponential, λ = 0.78 / 24 / 47):
//! `ln C(n,k) + k ln p + (n-k) ln(1-p) - ln λ + λ k`, floored at 1e-10.
//!
//! Every 300 ms a challenger replaces the dominant speaker only when its scores beat the
//! dominant's on all three time scales by the margins C1 = 3, C2 = 2, C3 = 0 (log ratios); of
//! several, the largest medium margin wins. Those margins are the hysteresis: a cough beats the
//! dominant on the immediate scale but not on the long one, and a speaker who keeps talking
//! keeps the floor. On top, a change is held for at least `min_hold` (no flapping in crosstalk).
//!
//! Time is an input: `on_level(id, level, now)` per audio packet, `tick(now)` at any rate.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::audio_level::AudioLevel;

const N1: u32 = 13;
const N2: usize = 5;
const N3: usize = 10;
const MEDIUM_THRESHOLD: u8 = 7;
const LONG_THRESHOLD: u32 = 4;
const IMMEDIATES: usize = N2 * N3;
const SUBUNIT: u8 = 127_u8.div_ceil(N1 as u8);
const LAMBDA: [f64; 3] = [0.78, 24.0, 47.0];
const MARGIN: [f64; 3] = [3.0, 2.0, 0.0];
const MIN_SCORE: f64 = 1e-10;

#[derive(Debug, Clone, Copy)]
pub struct SpeakerConfig {
    /// How often the global decision runs (300 ms in the paper's implementations).
    pub decision_interval: Duration,
    /// The audio frame length the levels arrive at.
    pub frame: Duration,
    /// No level for longer than this counts as silence (DTX sends nothing when quiet).
    pub level_idle: Duration,
    /// A new dominant speaker keeps the floor at least this long.
    pub min_hold: Duration,
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        SpeakerConfig {
            decision_interval: Duration::from_millis(300),
            frame: Duration::from_millis(20),
            level_idle: Duration::from_millis(40),
            min_hold: Duration::from_millis(1000),
        }
    }
}

#[derive(Debug)]
struct Speaker {
    /// Newest first.
    immediates: VecDeque<u8>,
    last_level_at: Instant,
    /// This speaker's noise floor (loudness): levels within one step of it count as silence,
    /// so a noisy microphone and a quiet one stand on equal footing.
    floor: Option<u8>,
    /// The lowest loudness in the current floor window, and the window's length in frames.
    window_min: u8,
    window_len: u32,
}

/// The floor follows a rising background within this many frames (15 s of 20 ms frames).
const FLOOR_WINDOW: u32 = 750;

impl Speaker {
    fn push(&mut self, immediate: u8) {
        if self.immediates.len() == IMMEDIATES {
            self.immediates.pop_back();
        }
        self.immediates.push_front(immediate);
    }

    /// Gates a loudness against the noise floor, tracking the floor: down at once, up slowly
    /// (to the geometric mean of the old floor and the last window's minimum).
    fn gate(&mut self, loudness: u8) -> u8 {
        if loudness == 0 {
            return 0;
        }
        match self.floor {
            Some(f) if f <= loudness => {
                self.window_min = self.window_min.min(loudness);
                self.window_len += 1;
                if self.window_len >= FLOOR_WINDOW {
                    let raised = (f64::from(f) * f64::from(self.window_min)).sqrt().round() as u8;
                    self.floor = Some(raised.max(f));
                    self.window_len = 0;
                    self.window_min = u8::MAX;
                }
            }
            _ => {
                self.floor = Some(loudness);
                self.window_len = 0;
                self.window_min = u8::MAX;
            }
        }
        let f = self.floor.unwrap_or(0);
        if loudness < f.saturating_add(SUBUNIT) {
            0
        } else {
            loudness
        }
    }

    /// Frames with no level are silence.
    fn catch_up(&mut self, now: Instant, cfg: &SpeakerConfig) {
        let mut n = 0;
        while now.saturating_duration_since(self.last_level_at) > cfg.level_idle && n < IMMEDIATES {
            self.push(0);
            self.last_level_at += cfg.frame;
            n += 1;
        }
        if n == IMMEDIATES {
            self.last_level_at = now;
        }
    }

    fn scores(&self) -> [f64; 3] {
        let imm = self.immediates.front().copied().unwrap_or(0);
        let medium = |block: usize| {
            self.immediates
                .iter()
                .skip(block * N2)
                .take(N2)
                .filter(|&&i| i > MEDIUM_THRESHOLD)
                .count() as u32
        };
        let long = (0..N3).filter(|&b| medium(b) > LONG_THRESHOLD).count() as u32;
        [
            score(u32::from(imm), N1, LAMBDA[0]),
            score(medium(0), N2 as u32, LAMBDA[1]),
            score(long, N3 as u32, LAMBDA[2]),
        ]
    }
}

fn ln_binomial(n: u32, k: u32) -> f64 {
    (1..=k)
        .map(|i| (f64::from(n - k + i) / f64::from(i)).ln())
        .sum()
}

fn score(k: u32, n: u32, lambda: f64) -> f64 {
    let k = k.min(n);
    let p: f64 = 0.5;
    let s = ln_binomial(n, k) + f64::from(k) * p.ln() + f64::from(n - k) * (1.0 - p).ln()
        - lambda.ln()
        + lambda * f64::from(k);
    s.max(MIN_SCORE)
}

/// The dominant speaker of one room. `K` is the participant id.
#[derive(Debug)]
pub struct DominantSpeaker<K> {
    cfg: SpeakerConfig,
    speakers: BTreeMap<K, Speaker>,
    dominant: Option<K>,
    dominant_since: Option<Instant>,
    last_decision: Option<Instant>,
}

impl<K: Ord + Copy> DominantSpeaker<K> {
    pub fn new(cfg: SpeakerConfig) -> Self {
        DominantSpeaker {
            cfg,
            speakers: BTreeMap::new(),
            dominant: None,
            dominant_since: None,
            last_decision: None,
        }
    }

    pub fn dominant(&self) -> Option<K> {
        self.dominant
    }

    /// One audio packet's level from `id`.
    pub fn on_level(&mut self, id: K, level: AudioLevel, now: Instant) {
        let cfg = self.cfg;
        let s = self.speakers.entry(id).or_insert_with(|| Speaker {
            immediates: VecDeque::with_capacity(IMMEDIATES),
            last_level_at: now,
            floor: None,
            window_min: u8::MAX,
            window_len: 0,
        });
        s.catch_up(now, &cfg);
        let loudness = s.gate(level.loudness());
        s.push((loudness / SUBUNIT).min(N1 as u8));
        s.last_level_at = now;
    }

    pub fn remove(&mut self, id: K) {
        self.speakers.remove(&id);
        if self.dominant == Some(id) {
            self.dominant = None;
            self.dominant_since = None;
        }
    }

    /// Runs the decision when due; returns the new dominant speaker when it changed.
    pub fn tick(&mut self, now: Instant) -> Option<K> {
        if let Some(at) = self.last_decision
            && now.saturating_duration_since(at) < self.cfg.decision_interval
        {
            return None;
        }
        self.last_decision = Some(now);
        let cfg = self.cfg;
        for s in self.speakers.values_mut() {
            s.catch_up(now, &cfg);
        }
        if let Some(since) = self.dominant_since
            && now.saturating_duration_since(since) < self.cfg.min_hold
        {
            return None;
        }
        let scores: Vec<(K, [f64; 3])> = self
            .speakers
            .iter()
            .map(|(k, s)| (*k, s.scores()))
            .collect();
        let next = match self
            .dominant
            .and_then(|d| scores.iter().find(|(k, _)| *k == d))
        {
            None => scores
                .iter()
                .filter(|(_, s)| s[1] > MIN_SCORE)
                .max_by(|a, b| a.1[1].total_cmp(&b.1[1]).then(a.1[2].total_cmp(&b.1[2])))
                .map(|(k, _)| *k),
            Some(&(dk, ds)) => {
                let mut best: Option<(K, f64)> = None;
                for (k, s) in scores.iter().filter(|(k, _)| *k != dk) {
                    let c: [f64; 3] = [0, 1, 2].map(|i| (s[i] / ds[i]).ln());
                    if (0..3).all(|i| c[i] > MARGIN[i]) && best.is_none_or(|(_, b)| c[1] > b) {
                        best = Some((*k, c[1]));
                    }
                }
                best.map(|(k, _)| k)
            }
        };
        match next {
            Some(k) if Some(k) != self.dominant => {
                self.dominant = Some(k);
                self.dominant_since = Some(now);
                Some(k)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A recorded-style level trace: per 20 ms frame, each speaker's -dBov or `None` (DTX).
    type Trace = Vec<Vec<Option<u8>>>;

    /// Speech: syllables of 80-240 ms around -25 dBov with 40-100 ms dips between them.
    /// Silence: background noise at -72..-80 dBov, or nothing (DTX).
    fn speech(rng: &mut ChaCha8Rng, frames: usize) -> Vec<Option<u8>> {
        let mut v = Vec::with_capacity(frames);
        while v.len() < frames {
            for _ in 0..rng.gen_range(4..12) {
                v.push(Some(rng.gen_range(20..32)));
            }
            for _ in 0..rng.gen_range(2..5) {
                v.push(Some(rng.gen_range(60..80)));
            }
        }
        v.truncate(frames);
        v
    }

    fn silence(rng: &mut ChaCha8Rng, frames: usize, dtx: bool) -> Vec<Option<u8>> {
        (0..frames)
            .map(|_| {
                if dtx {
                    None
                } else {
                    Some(rng.gen_range(72..80))
                }
            })
            .collect()
    }

    /// Runs a trace (speakers x frames), returns (frame index, new dominant) for each change.
    fn run(trace: &Trace) -> Vec<(usize, usize)> {
        let t0 = Instant::now();
        let mut d = DominantSpeaker::new(SpeakerConfig::default());
        let mut changes = vec![];
        let frames = trace[0].len();
        for f in 0..frames {
            let now = t0 + Duration::from_millis(20 * f as u64);
            for (id, s) in trace.iter().enumerate() {
                if let Some(l) = s[f] {
                    d.on_level(id, AudioLevel::from_neg_dbov(l), now);
                }
            }
            if let Some(k) = d.tick(now) {
                changes.push((f, k));
            }
        }
        changes
    }

    fn concat(parts: Vec<Vec<Option<u8>>>) -> Vec<Option<u8>> {
        parts.into_iter().flatten().collect()
    }

    #[test]
    fn a_change_of_speaker_is_detected_within_two_seconds() {
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            // 0: talks 6 s then silent 6 s; 1: silent (DTX) 6 s then talks 6 s; 2: background noise.
            let a = concat(vec![speech(&mut rng, 300), silence(&mut rng, 300, false)]);
            let b = concat(vec![silence(&mut rng, 300, true), speech(&mut rng, 300)]);
            let c = silence(&mut rng, 600, false);
            let changes = run(&vec![a, b, c]);
            assert_eq!(changes.len(), 2, "seed {seed}: {changes:?}");
            assert_eq!(changes[0].1, 0);
            assert!(
                changes[0].0 < 50,
                "seed {seed}: first speaker found within 1 s: {changes:?}"
            );
            assert_eq!(changes[1].1, 1);
            assert!(
                (300..400).contains(&changes[1].0),
                "seed {seed}: switch within 2 s: {changes:?}"
            );
        }
    }

    #[test]
    fn short_noises_do_not_take_the_floor() {
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(100 + seed);
            let a = speech(&mut rng, 750);
            // Speaker 1 coughs/clicks: a loud 60-160 ms burst every ~2 s, otherwise DTX.
            let mut b: Vec<Option<u8>> = vec![None; 750];
            let mut f = 100;
            while f < 740 {
                for x in b.iter_mut().skip(f).take(rng.gen_range(3..8)) {
                    *x = Some(rng.gen_range(5..15));
                }
                f += rng.gen_range(80..120);
            }
            let changes = run(&vec![a, b]);
            assert_eq!(changes, vec![(changes[0].0, 0)], "seed {seed}");
        }
    }

    #[test]
    fn crosstalk_does_not_flap() {
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(200 + seed);
            // Both talk at once for 15 s at similar levels.
            let changes = run(&vec![speech(&mut rng, 750), speech(&mut rng, 750)]);
            // At most: the first pick and a couple of real handovers, never a change per decision.
            assert!(
                changes.len() <= 4,
                "seed {seed}: {} changes: {changes:?}",
                changes.len()
            );
            for w in changes.windows(2) {
                assert!(w[1].0 - w[0].0 >= 50, "held >= 1 s: {changes:?}");
            }
        }
    }

    #[test]
    fn removed_dominant_is_replaced() {
        let t0 = Instant::now();
        let mut d = DominantSpeaker::new(SpeakerConfig::default());
        // Both talk (syllables: loud frames with quieter gaps; a constant level is a floor).
        let syllable =
            |f: u64, loud: u8| AudioLevel::from_neg_dbov(if f % 8 < 6 { loud } else { 70 });
        for f in 0..100u64 {
            let now = t0 + Duration::from_millis(20 * f);
            d.on_level(1u32, syllable(f, 25), now);
            d.on_level(2u32, syllable(f, 30), now);
            d.tick(now);
        }
        let first = d.dominant().expect("someone");
        d.remove(first);
        assert_eq!(d.dominant(), None);
        let now = t0 + Duration::from_millis(2100);
        let other = if first == 1 { 2 } else { 1 };
        d.on_level(other, syllable(0, 30), now);
        assert_eq!(d.tick(now), Some(other));
    }

    #[test]
    fn scores_grow_with_activity() {
        // Medium and long: monotone. Immediate: the binomial term peaks mid-range, but full
        // activity still scores far above little.
        for (n, l) in [(N2 as u32, LAMBDA[1]), (N3 as u32, LAMBDA[2])] {
            let s: Vec<f64> = (0..=n).map(|k| score(k, n, l)).collect();
            assert!(s.windows(2).all(|w| w[1] >= w[0]), "{s:?}");
            assert_eq!(s[0], MIN_SCORE);
        }
        assert_eq!(score(0, N1, LAMBDA[0]), MIN_SCORE);
        assert!(score(N1, N1, LAMBDA[0]) > 1.0);
        assert!(score(10, N1, LAMBDA[0]) > 2.0 * score(N1, N1, LAMBDA[0]));
    }

    #[test]
    fn background_noise_is_gated_by_the_floor() {
        let t0 = Instant::now();
        let mut d = DominantSpeaker::new(SpeakerConfig::default());
        // Speaker 1: a loud but steady fan (-45 dBov) for 10 s; speaker 2 silent, then talks.
        for f in 0..500u64 {
            let now = t0 + Duration::from_millis(20 * f);
            d.on_level(1u32, AudioLevel::from_neg_dbov(45), now);
            if f >= 250 {
                let l = if f % 10 < 7 { 25 } else { 70 };
                d.on_level(2u32, AudioLevel::from_neg_dbov(l), now);
            }
            d.tick(now);
        }
        assert_eq!(d.dominant(), Some(2));
    }
}
