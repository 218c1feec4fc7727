//! One remote participant's audio on the way to the speaker: RTP payloads in, samples out.
//!
//! `RTP (ts, Opus) → JitterBuffer → OpusDecoder (packet | FEC | PLC) → FIFO → frames`
//!
//! The FIFO decouples the sender's packet size from ours: a peer sending 10 ms packets plays
//! fine into a 20 ms output clock and the other way round.

use std::collections::VecDeque;
use std::time::Instant;

use crate::codec::OpusDecoder;
use crate::jitter::{JitterBuffer, JitterConfig, JitterStats, Playout};
use crate::level::{SpeakingDetector, dbfs};
use crate::{MediaError, SAMPLE_RATE};

#[derive(Debug)]
pub struct RemoteAudio {
    jb: JitterBuffer,
    dec: OpusDecoder,
    fifo: VecDeque<f32>,
    scratch: Vec<f32>,
    speaking: SpeakingDetector,
    /// Output block size the speaking detector's hangover was set up for.
    speaking_block: usize,
    trim_step: u32,
    pending_trim: usize,
    level_dbfs: f32,
    decode_errors: u64,
}

impl RemoteAudio {
    pub fn new(jitter: JitterConfig) -> Result<Self, MediaError> {
        Ok(Self {
            jb: JitterBuffer::new(jitter),
            dec: OpusDecoder::new()?,
            fifo: VecDeque::new(),
            scratch: vec![0.0; 5760],
            speaking: SpeakingDetector::default(),
            speaking_block: 0,
            trim_step: 0,
            pending_trim: 0,
            level_dbfs: -100.0,
            decode_errors: 0,
        })
    }

    /// An RTP packet's payload arrived at `now`.
    pub fn push(&mut self, now: Instant, rtp_timestamp: u32, payload: Vec<u8>) {
        if payload.is_empty() || payload.len() > crate::codec::MAX_PACKET {
            return;
        }
        let samples = opus::packet::get_nb_samples(&payload, SAMPLE_RATE).unwrap_or(0) as u32;
        self.jb.push(now, rtp_timestamp, samples, payload);
    }

    /// Fills `out` with the next samples to play at `now`.
    pub fn pull(&mut self, now: Instant, out: &mut [f32]) {
        let step = out.len() as u32;
        if step != self.trim_step {
            // Pulling less than a packet: the buffer may shrink in steps of one pull.
            self.trim_step = step;
            self.jb.set_trim_step(step);
        }
        let mut guard = 0;
        while self.fifo.len() < out.len() && guard < 16 {
            guard += 1;
            let p = self.jb.pop(now);
            let n = self.jb.last_samples() as usize;
            let n = n.min(self.scratch.len());
            let got = match p {
                Playout::Silence => {
                    let missing = out.len() - self.fifo.len();
                    self.fifo.extend(std::iter::repeat_n(0.0, missing));
                    break;
                }
                Playout::Packet(pkt) => self.dec.decode(&pkt, &mut self.scratch),
                Playout::Fec(next) => self.dec.decode_fec(&next, &mut self.scratch[..n]),
                Playout::Conceal => self.dec.conceal(&mut self.scratch[..n]),
            };
            let got = match got {
                Ok(k) => k,
                Err(_) => {
                    // A corrupt packet from outside: conceal rather than fail the whole mix.
                    self.decode_errors += 1;
                    self.dec
                        .conceal(&mut self.scratch[..n.max(480)])
                        .unwrap_or(0)
                }
            };
            self.fifo
                .extend(&self.scratch[..got.min(self.scratch.len())]);
            self.pending_trim += self.jb.take_trim() as usize;
            // Trim only what leaves this pull covered: never conceal to make room.
            if self.pending_trim > 0 && self.fifo.len() >= out.len() + self.pending_trim {
                self.fifo.drain(..self.pending_trim);
                self.pending_trim = 0;
            }
        }
        for x in out.iter_mut() {
            *x = self.fifo.pop_front().unwrap_or(0.0);
        }
        self.level_dbfs = dbfs(out);
        if out.len() != self.speaking_block && !out.is_empty() {
            // The indicator's hangover is 300 ms whatever size the player pulls.
            self.speaking_block = out.len();
            let block_ms = (out.len() * 1000 / SAMPLE_RATE as usize).max(1);
            self.speaking = SpeakingDetector::new(-45.0, (300 / block_ms).max(1) as u32);
        }
        self.speaking.update_level(self.level_dbfs);
    }

    pub fn level_dbfs(&self) -> f32 {
        self.level_dbfs
    }

    pub fn speaking(&self) -> bool {
        self.speaking.speaking()
    }

    pub fn jitter_buffer(&self) -> &JitterBuffer {
        &self.jb
    }

    pub fn stats(&self) -> JitterStats {
        self.jb.stats()
    }

    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FrameDuration;
    use crate::analysis::{find, tone_purity};
    use crate::codec::{OpusConfig, OpusEncoder};
    use crate::synth::{chirp_samples, tone_samples};
    use rand::{Rng, SeedableRng};
    use std::time::Duration;

    /// Encodes `signal` in `fd` frames, sends each packet through a network with `loss` and
    /// up to `jitter_ms` of jitter (reordering included), plays at 20 ms.
    fn through_network(
        signal: &[f32],
        fd: FrameDuration,
        loss: f64,
        jitter_ms: u64,
        seed: u64,
    ) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut enc = OpusEncoder::new(OpusConfig {
            frame: fd,
            ..Default::default()
        })
        .expect("enc");
        let t0 = Instant::now();
        let mut arrivals = Vec::new();
        for (i, f) in signal.chunks_exact(fd.samples()).enumerate() {
            let p = enc.encode(f).expect("encode");
            if rng.gen_bool(loss) {
                continue;
            }
            let sent = Duration::from_millis(fd.millis() * i as u64);
            let at = sent + Duration::from_millis(5 + rng.gen_range(0..=jitter_ms));
            arrivals.push((at, (i * fd.samples()) as u32, p));
        }
        arrivals.sort_by_key(|a| a.0);
        let mut rx = RemoteAudio::new(JitterConfig::default()).expect("rx");
        let mut out = Vec::new();
        let mut frame = vec![0.0; 960];
        let mut next = 0;
        let total = signal.len() / 960 + 30;
        for k in 0..total {
            let now = Duration::from_millis(20 * k as u64 + 3);
            while next < arrivals.len() && arrivals[next].0 <= now {
                let (at, ts, p) = arrivals[next].clone();
                rx.push(t0 + at, ts, p);
                next += 1;
            }
            rx.pull(t0 + now, &mut frame);
            out.extend_from_slice(&frame);
        }
        out
    }

    #[test]
    fn a_tone_through_a_lossy_jittery_network_is_still_that_tone() {
        let tone = tone_samples(600.0, 0.4, 48_000 * 3);
        for fd in [FrameDuration::Ms20, FrameDuration::Ms10] {
            let out = through_network(&tone, fd, 0.05, 40, 11);
            // Look at the steady part: the tone must dominate, another tone must not.
            let mid = &out[48_000..48_000 * 2];
            assert!(
                tone_purity(mid, 600.0) > 0.8,
                "{fd:?}: {}",
                tone_purity(mid, 600.0)
            );
            assert!(tone_purity(mid, 1500.0) < 0.05);
        }
    }

    #[test]
    fn a_chirp_arrives_with_high_correlation_and_a_plausible_delay() {
        let mut sig = vec![0.0; 48_000 * 2];
        let chirp = chirp_samples(300.0, 3400.0, 0.5, 24_000);
        sig[9_600..9_600 + 24_000].copy_from_slice(&chirp);
        let out = through_network(&sig, FrameDuration::Ms20, 0.02, 20, 5);
        let m = find(&out, &chirp).expect("found");
        assert!(m.correlation > 0.8, "{m:?}");
        let delay_ms = (m.offset as i64 - 9_600) * 1000 / 48_000;
        assert!((0..=200).contains(&delay_ms), "delay {delay_ms} ms");
    }

    /// 20 ms packets arriving every 20 ms at `phase_us` (+ up to 2 ms), pulled 10 ms at a time. Packet
    /// `late` (if any) arrives 35 ms late, forcing an underrun early on. Returns how long after
    /// its packet arrived a burst sent at 3 s is played (ms), and the buffer's stats.
    fn burst_delay(late: Option<usize>, phase_us: u64) -> (f64, JitterStats) {
        let mut sig = vec![0.0f32; 48_000 * 4];
        for (i, x) in sig[144_000..148_800].iter_mut().enumerate() {
            *x = 0.5 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 48_000.0).sin();
        }
        let mut enc = OpusEncoder::new(OpusConfig::default()).expect("enc");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(phase_us);
        let t0 = Instant::now();
        let mut arrivals: Vec<(Duration, u32, Vec<u8>)> = sig
            .chunks(960)
            .enumerate()
            .map(|(k, f)| {
                // Up to 2 ms of jitter: a busy sender's scheduling.
                let jitter = rng.gen_range(0..2_000);
                let mut at = Duration::from_micros(20_000 * (k as u64 + 1) + phase_us + jitter);
                if late == Some(k) {
                    at += Duration::from_millis(35);
                }
                (at, (k * 960) as u32, enc.encode(f).expect("encode"))
            })
            .collect();
        arrivals.sort_by_key(|a| a.0);
        let burst_arrival = arrivals
            .iter()
            .find(|a| a.1 == 150 * 960)
            .map(|a| a.0)
            .expect("burst packet");
        let mut rx = RemoteAudio::new(JitterConfig::default()).expect("rx");
        let mut out = vec![0.0; 480];
        let mut next = 0;
        for j in 0..400u64 {
            let now = Duration::from_millis(10 * j);
            while next < arrivals.len() && arrivals[next].0 <= now {
                let (at, ts, p) = arrivals[next].clone();
                rx.push(t0 + at, ts, p);
                next += 1;
            }
            rx.pull(t0 + now, &mut out);
            if now > burst_arrival
                && let Some(i) = out.iter().position(|x| x.abs() > 0.1)
            {
                let played = now + Duration::from_micros(i as u64 * 1_000_000 / 48_000);
                return ((played - burst_arrival).as_secs_f64() * 1000.0, rx.stats());
            }
        }
        panic!("burst never played");
    }

    #[test]
    fn after_an_early_underrun_the_delay_returns_to_within_a_pull_of_the_minimum() {
        for phase_us in (0..20_000).step_by(2_500) {
            let (clean, _) = burst_delay(None, phase_us);
            let (recovered, stats) = burst_delay(Some(10), phase_us);
            assert!(stats.underruns >= 1, "{stats:?}");
            // 6.5 ms of Opus look-ahead + at most a pull (10 ms) + the 3 ms safety margin + the
            // measured jitter (< 2 ms) the buffer keeps on top.
            assert!(
                recovered <= 22.0,
                "phase {phase_us}: {recovered} ms ({stats:?})"
            );
            assert!(clean <= 22.0, "phase {phase_us}: {clean} ms");
        }
    }

    #[test]
    fn garbage_payloads_never_panic() {
        let mut rx = RemoteAudio::new(JitterConfig::default()).expect("rx");
        let t0 = Instant::now();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut out = vec![0.0; 960];
        for i in 0..200u32 {
            let len = rng.gen_range(0..300);
            let p: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            rx.push(t0 + Duration::from_millis(20 * i as u64), rng.r#gen(), p);
            rx.pull(t0 + Duration::from_millis(20 * i as u64 + 10), &mut out);
            assert!(out.iter().all(|x| x.is_finite()));
        }
    }
}
