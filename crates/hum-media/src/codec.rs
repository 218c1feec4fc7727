//! Opus, configured for voice: in-band FEC (each packet carries a coarse copy of the previous
//! one, so a single loss is recovered from the next packet), DTX (near-silence is sent as
//! rare tiny packets), 20 or 10 ms frames and a configurable bitrate.

use opus::{Application, Bitrate, Channels};

use crate::{FrameDuration, MediaError, SAMPLE_RATE};

/// Largest Opus packet we produce or accept (RFC 6716 caps a frame at 1275 bytes).
pub const MAX_PACKET: usize = 1500;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpusConfig {
    pub frame: FrameDuration,
    /// Bits per second. 32-40 kbps is transparent enough for voice.
    pub bitrate_bps: u32,
    pub fec: bool,
    /// Discontinuous transmission: near-silence becomes 1-byte packets.
    pub dtx: bool,
    /// The loss rate the encoder should plan FEC for (0-100).
    pub expected_loss_percent: u8,
    /// 0-10; 10 is best quality. Voice at 48 kHz is cheap either way.
    pub complexity: u8,
}

impl Default for OpusConfig {
    fn default() -> Self {
        Self {
            frame: FrameDuration::Ms20,
            bitrate_bps: 36_000,
            fec: true,
            // Silence (a closed gate sends digital silence) becomes 1-byte packets. Speech after
            // a DTX period decodes at its level (tested below).
            dtx: true,
            expected_loss_percent: 10,
            complexity: 9,
        }
    }
}

pub struct OpusEncoder {
    enc: opus::Encoder,
    config: OpusConfig,
    buf: Vec<u8>,
    /// The last packet was a DTX packet.
    in_dtx: bool,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("config", &self.config)
            .finish()
    }
}

impl OpusEncoder {
    pub fn new(config: OpusConfig) -> Result<Self, MediaError> {
        let mut enc = opus::Encoder::new(SAMPLE_RATE, Channels::Mono, Application::Voip)?;
        enc.set_bitrate(Bitrate::Bits(
            config.bitrate_bps.clamp(6_000, 510_000) as i32
        ))?;
        enc.set_inband_fec(config.fec)?;
        enc.set_packet_loss_perc(config.expected_loss_percent.min(100) as i32)?;
        enc.set_dtx(config.dtx)?;
        enc.set_complexity(config.complexity.min(10) as i32)?;
        Ok(Self {
            enc,
            config,
            buf: vec![0; MAX_PACKET],
            in_dtx: false,
        })
    }

    pub fn config(&self) -> OpusConfig {
        self.config
    }

    /// Changes the bitrate on the fly (e.g. when the network degrades).
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), MediaError> {
        self.enc
            .set_bitrate(Bitrate::Bits(bps.clamp(6_000, 510_000) as i32))?;
        self.config.bitrate_bps = bps;
        Ok(())
    }

    /// Tells the encoder how much of what it sends is lost (0-100). In-band FEC costs bits and
    /// about a third of the encoder's CPU; libopus only adds it when this is above 0, so a
    /// clean network gets neither the cost nor the quality loss.
    pub fn set_expected_loss(&mut self, percent: u8) -> Result<(), MediaError> {
        let p = percent.min(100);
        if p != self.config.expected_loss_percent {
            self.enc.set_packet_loss_perc(p as i32)?;
            self.config.expected_loss_percent = p;
        }
        Ok(())
    }

    /// Switches DTX on or off (e.g. on for a gated microphone, off for a continuous file).
    pub fn set_dtx(&mut self, on: bool) -> Result<(), MediaError> {
        if on != self.config.dtx {
            self.enc.set_dtx(on)?;
            self.config.dtx = on;
        }
        Ok(())
    }

    /// Encodes exactly one frame. With DTX on, silence yields packets of 1-2 bytes that need
    /// not be sent ([`is_dtx_packet`]).
    pub fn encode(&mut self, frame: &[f32]) -> Result<Vec<u8>, MediaError> {
        if frame.len() != self.config.frame.samples() {
            return Err(MediaError::Format(format!(
                "Opus frame must be {} samples, got {}",
                self.config.frame.samples(),
                frame.len()
            )));
        }
        let mut n = self.enc.encode_float(frame, &mut self.buf)?;
        if self.in_dtx && !is_dtx_packet(&self.buf[..n]) {
            // Leaving DTX: start this talk spurt from a fresh encoder, as the decoder does
            // ([`OpusDecoder`]). The decoder did not decode the frames DTX skipped, so its
            // state no longer matches ours; with both fresh they match again (without this a
            // tone after silence decodes at over twice its level in libopus 1.6.1).
            self.enc.reset_state()?;
            n = self.enc.encode_float(frame, &mut self.buf)?;
        }
        self.in_dtx = self.config.dtx && is_dtx_packet(&self.buf[..n]);
        Ok(self.buf[..n].to_vec())
    }
}

/// Turns measured loss into the encoder's expected loss: up at once when losses appear, down
/// slowly (×0.8 a second), so FEC is on while a network is lossy and off on a clean one.
///
/// libwebrtc does the same from RTCP receiver reports. Feed it whatever loss measure exists:
/// the far end's report of our stream if available, else the loss we see from that peer
/// (paths are usually lossy both ways: the same Wi-Fi, the same access link).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LossEstimator {
    estimate: f32,
}

impl LossEstimator {
    /// Below this (0.2 %) FEC is switched off; at or above 0.5 % it comes on.
    const OFF_BELOW: f32 = 0.002;
    const ON_FROM: f32 = 0.005;

    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the loss fraction (0..=1) measured over the last window (about a second); returns
    /// the percentage to configure (0 = no FEC).
    pub fn update(&mut self, window_loss: f32) -> u8 {
        let l = if window_loss.is_finite() {
            window_loss.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let was_on = self.estimate >= Self::OFF_BELOW;
        self.estimate = if l > self.estimate {
            l
        } else {
            0.8 * self.estimate + 0.2 * l
        };
        let on = if was_on {
            self.estimate >= Self::OFF_BELOW
        } else {
            self.estimate >= Self::ON_FROM
        };
        if !on {
            self.estimate = self.estimate.min(Self::OFF_BELOW * 0.99);
            return 0;
        }
        // Plan for a bit more than measured (bursts), at least 1 % and at most 30 %.
        ((self.estimate * 150.0).ceil() as u8).clamp(1, 30)
    }

    pub fn estimate(&self) -> f32 {
        self.estimate
    }
}

/// Opus emits packets of at most 2 bytes while in DTX: they carry no audio.
pub fn is_dtx_packet(packet: &[u8]) -> bool {
    packet.len() <= 2
}

pub struct OpusDecoder {
    dec: opus::Decoder,
    /// The last packet decoded was a DTX packet: the next real one starts a talk spurt, which
    /// our encoder begins from a fresh state, so the decoder resets too.
    after_dtx: bool,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder").finish()
    }
}

impl OpusDecoder {
    pub fn new() -> Result<Self, MediaError> {
        Ok(Self {
            dec: opus::Decoder::new(SAMPLE_RATE, Channels::Mono)?,
            after_dtx: false,
        })
    }

    /// Decodes a packet into `out` (sized for the frame); returns the samples written.
    pub fn decode(&mut self, packet: &[u8], out: &mut [f32]) -> Result<usize, MediaError> {
        if packet.is_empty() || packet.len() > MAX_PACKET {
            return Err(MediaError::Format(format!(
                "Opus packet of {} bytes",
                packet.len()
            )));
        }
        self.leave_dtx(packet)?;
        self.after_dtx = is_dtx_packet(packet);
        Ok(self.dec.decode_float(packet, out, false)?)
    }

    fn leave_dtx(&mut self, packet: &[u8]) -> Result<(), MediaError> {
        if self.after_dtx && !is_dtx_packet(packet) {
            self.dec.reset_state()?;
            self.after_dtx = false;
        }
        Ok(())
    }

    /// Recovers the frame *before* `next_packet` from its in-band FEC data. `out` must be the
    /// size of the lost frame.
    pub fn decode_fec(&mut self, next_packet: &[u8], out: &mut [f32]) -> Result<usize, MediaError> {
        if next_packet.is_empty() || next_packet.len() > MAX_PACKET {
            return Err(MediaError::Format("bad FEC packet".into()));
        }
        self.leave_dtx(next_packet)?;
        Ok(self.dec.decode_float(next_packet, out, true)?)
    }

    /// Packet loss concealment: extrapolates a plausible frame (fading to silence when losses
    /// continue).
    pub fn conceal(&mut self, out: &mut [f32]) -> Result<usize, MediaError> {
        Ok(self.dec.decode_float(&[], out, false)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::tone_purity;
    use crate::synth::tone_samples;

    fn round_trip(frame: FrameDuration) -> Vec<f32> {
        let cfg = OpusConfig {
            frame,
            ..Default::default()
        };
        let mut enc = OpusEncoder::new(cfg).expect("enc");
        let mut dec = OpusDecoder::new().expect("dec");
        let tone = tone_samples(700.0, 0.4, 48_000);
        let mut out = Vec::new();
        let mut buf = vec![0.0; frame.samples()];
        for f in tone.chunks(frame.samples()) {
            let p = enc.encode(f).expect("encode");
            assert!(p.len() < 400);
            let n = dec.decode(&p, &mut buf).expect("decode");
            assert_eq!(n, frame.samples());
            out.extend_from_slice(&buf);
        }
        out
    }

    #[test]
    fn tone_survives_opus_at_20_and_10_ms() {
        for fd in [FrameDuration::Ms20, FrameDuration::Ms10] {
            let out = round_trip(fd);
            // Skip the codec's start-up; the tone must dominate what comes out.
            assert!(tone_purity(&out[4800..], 700.0) > 0.9, "{fd:?}");
        }
    }

    #[test]
    fn dtx_makes_silence_tiny_and_fec_recovers_a_lost_frame() {
        let mut enc = OpusEncoder::new(OpusConfig {
            dtx: true,
            ..Default::default()
        })
        .expect("enc");
        let silence = vec![0.0; 960];
        let mut sizes = Vec::new();
        for _ in 0..50 {
            sizes.push(enc.encode(&silence).expect("e").len());
        }
        // After a short hangover, DTX sends (almost) only 1-2 byte packets.
        let tiny = sizes[20..].iter().filter(|&&n| n <= 2).count();
        assert!(tiny >= 20, "{sizes:?}");
        assert!(is_dtx_packet(&[0x08]) && !is_dtx_packet(&[1, 2, 3]));

        let mut enc = OpusEncoder::new(OpusConfig::default()).expect("enc");
        let mut dec = OpusDecoder::new().expect("dec");
        let tone = tone_samples(500.0, 0.4, 960 * 30);
        let packets: Vec<Vec<u8>> = tone
            .chunks(960)
            .map(|f| enc.encode(f).expect("e"))
            .collect();
        let mut out = vec![0.0; 960];
        for p in &packets[..20] {
            dec.decode(p, &mut out).expect("d");
        }
        // Packet 20 is lost: recover it from packet 21's FEC.
        let n = dec.decode_fec(&packets[21], &mut out).expect("fec");
        assert_eq!(n, 960);
        assert!(tone_purity(&out, 500.0) > 0.8, "FEC frame is not the tone");
        assert!(dec.decode(&[], &mut out).is_err());
        assert!(enc.encode(&[0.0; 100]).is_err());
    }

    #[test]
    fn loss_estimate_rises_at_once_and_falls_slowly() {
        let mut e = LossEstimator::new();
        assert_eq!(e.update(0.0), 0);
        assert_eq!(e.update(0.001), 0, "0.1 % is noise, not a reason for FEC");
        assert_eq!(e.update(0.1), 15);
        // Clean again: FEC stays on for a while (losses come in bursts), then goes off.
        let on: Vec<u8> = (0..30).map(|_| e.update(0.0)).collect();
        assert!(on[..5].iter().all(|&p| p > 0), "{on:?}");
        assert_eq!(*on.last().expect("30"), 0, "{on:?}");
        assert_eq!(e.update(f32::NAN), 0);
        assert_eq!(e.update(7.0), 30);
    }

    #[test]
    fn fec_is_only_encoded_when_loss_is_expected() {
        // Syllables, not a steady vowel: a steady vowel would soon count as background noise to
        // SILK's VAD, and SILK adds FEC only for active speech.
        let vowel = syllables(48_000);
        // Two decoders in the same state lose a frame: one recovers it from the next frame's FEC
        // data, the other conceals. Without FEC data "recovery" is exactly concealment.
        let fec_differs_from_plc = |loss: u8| {
            let mut enc = OpusEncoder::new(OpusConfig::default()).expect("enc");
            enc.set_expected_loss(loss).expect("loss");
            assert_eq!(enc.config().expected_loss_percent, loss);
            let packets: Vec<Vec<u8>> = vowel
                .chunks(960)
                .map(|f| enc.encode(f).expect("e"))
                .collect();
            let (mut a, mut b) = (
                OpusDecoder::new().expect("a"),
                OpusDecoder::new().expect("b"),
            );
            let mut out = vec![0.0; 960];
            // Frame 36 (0.72 s) is mid-syllable.
            for p in &packets[..36] {
                a.decode(p, &mut out).expect("d");
                b.decode(p, &mut out).expect("d");
            }
            let (mut fa, mut fb) = (vec![0.0; 960], vec![0.0; 960]);
            a.decode_fec(&packets[37], &mut fa).expect("fec");
            b.conceal(&mut fb).expect("plc");
            fa.iter()
                .zip(&fb)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max)
        };
        assert!(fec_differs_from_plc(10) > 0.01, "FEC data present at 10 %");
        assert!(fec_differs_from_plc(0) < 1e-6, "no FEC data at 0 %");
    }

    /// A speech-like signal: a voiced vowel with a gliding pitch, three syllables a second.
    fn syllables(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let t = i as f32 / 48_000.0;
                let f0 = 140.0 + 40.0 * (t * 5.0).sin();
                let syllable = (2.0 * std::f32::consts::PI * 3.0 * t).sin().max(0.0);
                syllable
                    * (1..8)
                        .map(|h| {
                            0.3 / h as f32 * (2.0 * std::f32::consts::PI * f0 * h as f32 * t).sin()
                        })
                        .sum::<f32>()
            })
            .collect()
    }

    /// Encodes `sig` (DTX on or off), decodes every packet including DTX ones, returns the
    /// RMS of each decoded frame and the number of DTX packets.
    fn decoded_frame_levels(sig: &[f32], dtx: bool) -> (Vec<f32>, usize) {
        let mut enc = OpusEncoder::new(OpusConfig {
            dtx,
            expected_loss_percent: 0,
            ..Default::default()
        })
        .expect("enc");
        let mut dec = OpusDecoder::new().expect("dec");
        let mut out = vec![0.0; 960];
        let mut tiny = 0;
        let levels = sig
            .chunks_exact(960)
            .map(|f| {
                let p = enc.encode(f).expect("e");
                tiny += usize::from(is_dtx_packet(&p));
                dec.decode(&p, &mut out).expect("d");
                crate::analysis::rms(&out)
            })
            .collect();
        (levels, tiny)
    }

    #[test]
    fn speech_after_a_dtx_period_has_the_right_level() {
        // Talk spurts separated by 1 s of digital silence, as a closed voice gate sends.
        let talk = syllables(96_000);
        let mut sig = Vec::new();
        for _ in 0..4 {
            sig.extend(std::iter::repeat_n(0.0, 48_000));
            sig.extend_from_slice(&talk);
        }
        let (plain, none) = decoded_frame_levels(&sig, false);
        let (dtx, tiny) = decoded_frame_levels(&sig, true);
        assert_eq!(none, 0);
        assert!(
            tiny >= 4 * 30,
            "DTX should cover the silences: {tiny} tiny packets"
        );
        // Never louder than without DTX (the onset frame ramps in a little softer)...
        for (i, (a, b)) in plain.iter().zip(&dtx).enumerate() {
            if *a > 0.02 {
                assert!(b / a < 1.2, "frame {i}: {b} with DTX vs {a} without");
            }
        }
        // ...and each talk spurt carries the same energy (±10 %).
        for spurt in 0..4 {
            let frames = (spurt * 150 + 50)..(spurt * 150 + 150);
            let energy = |l: &[f32]| l[frames.clone()].iter().map(|x| x * x).sum::<f32>();
            let ratio = energy(&dtx) / energy(&plain);
            assert!(
                (ratio - 1.0).abs() < 0.1,
                "spurt {spurt}: energy ratio {ratio}"
            );
        }
        // And the loudest frames match.
        let loudest = |l: &[f32]| l.iter().fold(0.0f32, |m, x| m.max(*x));
        assert!((loudest(&dtx) / loudest(&plain) - 1.0).abs() < 0.1);
    }

    #[test]
    fn a_chirp_after_a_dtx_period_comes_back_at_its_level() {
        // The case plain libopus gets wrong (see the next test): our encoder and decoder both
        // start a talk spurt after DTX from a fresh state.
        let mut sig = Vec::new();
        for _ in 0..2 {
            sig.extend(std::iter::repeat_n(0.0, 48_000));
            sig.extend(crate::synth::chirp_samples(300.0, 3400.0, 0.5, 48_000));
        }
        let (levels, tiny) = decoded_frame_levels(&sig, true);
        assert!(tiny >= 2 * 25, "{tiny} DTX packets");
        let loudest = levels.iter().fold(0.0f32, |m, x| m.max(*x));
        assert!((loudest - 0.354).abs() < 0.05, "{loudest}");
        let (plain, _) = decoded_frame_levels(&sig, false);
        for spurt in 0..2 {
            let frames = (spurt * 100 + 50)..(spurt * 100 + 100);
            let energy = |l: &[f32]| l[frames.clone()].iter().map(|x| x * x).sum::<f32>();
            let ratio = energy(&levels) / energy(&plain);
            assert!((ratio - 1.0).abs() < 0.1, "spurt {spurt}: {ratio}");
        }
    }

    #[test]
    fn a_chirp_after_silence_is_mis_scaled_by_any_decoder_that_missed_the_silence() {
        // A pure chirp, decoded by a decoder that did not decode the silence before it (a fresh
        // one: no DTX involved at all), comes out at twice its level ~0.3 s in. With DTX the
        // decoder also "missed" the silence (it saw 1-byte packets), hence the same result. This
        // is how libopus 1.6.1 treats a synthetic sweep; speech is fine either way, and our
        // encoder/decoder pair resets at the end of DTX (above).
        let mut enc = OpusEncoder::new(OpusConfig {
            dtx: false,
            expected_loss_percent: 0,
            ..Default::default()
        })
        .expect("enc");
        let mut sig = vec![0.0; 48_000];
        sig.extend(crate::synth::chirp_samples(300.0, 3400.0, 0.5, 48_000));
        let packets: Vec<Vec<u8>> = sig.chunks(960).map(|f| enc.encode(f).expect("e")).collect();
        let loudest = |skip: usize| {
            let mut dec = OpusDecoder::new().expect("dec");
            let mut out = vec![0.0; 960];
            let mut m = 0.0f32;
            for p in &packets[skip..] {
                dec.decode(p, &mut out).expect("d");
                m = m.max(crate::analysis::rms(&out));
            }
            m
        };
        let continuous = loudest(0);
        let joined_after_silence = loudest(50);
        assert!((continuous - 0.354).abs() < 0.05, "{continuous}");
        assert!(
            joined_after_silence > 1.5 * continuous,
            "libopus no longer mis-scales a chirp for a late decoder ({joined_after_silence}); \
             update docs/media.md"
        );
    }
}
