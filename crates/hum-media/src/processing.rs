//! The capture chain: what leaves the microphone and whether it is sent.
//!
//! `frame → noise suppression → level → gate (mute / push-to-talk / voice activity) → encoder`
//!
//! The gate never stops the frame clock: a closed gate yields silence, which Opus DTX turns
//! into 1-byte packets, so RTP timestamps stay continuous and the far end's jitter buffer never
//! has to guess whether a gap was loss or silence.
//!
//! Settings live in [`CaptureControls`], a shared handle of atomics, so a UI or a hotkey can
//! flip mute or push-to-talk from any thread while the capture thread runs. The pipeline itself
//! is built on the capture thread (the WebRTC VAD is not `Send`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};

use nnnoiseless::DenoiseState;
use webrtc_vad::{SampleRate, Vad, VadMode};

use crate::level::{SpeakingDetector, dbfs};
use crate::monitor::{InputLevel, LevelMeter, level_channel};

/// How the microphone is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VoiceMode {
    /// Send while voice is detected.
    #[default]
    VoiceActivity,
    /// Send only while the push-to-talk key is held.
    PushToTalk,
    /// Always send.
    Open,
}

impl VoiceMode {
    fn to_u8(self) -> u8 {
        match self {
            VoiceMode::VoiceActivity => 0,
            VoiceMode::PushToTalk => 1,
            VoiceMode::Open => 2,
        }
    }
    fn from_u8(v: u8) -> Self {
        match v {
            1 => VoiceMode::PushToTalk,
            2 => VoiceMode::Open,
            _ => VoiceMode::VoiceActivity,
        }
    }
}

/// Live capture settings, shared between the capture thread and whoever controls it.
#[derive(Debug, Clone)]
pub struct CaptureControls(Arc<ControlsInner>);

#[derive(Debug)]
struct ControlsInner {
    muted: AtomicBool,
    ptt_pressed: AtomicBool,
    noise_suppression: AtomicBool,
    mode: AtomicU8,
    /// f32 bits, 0..=1.
    sensitivity: AtomicU32,
    /// The newest input level, published by whichever pipeline runs on these controls.
    level: tokio::sync::watch::Sender<InputLevel>,
}

impl Default for CaptureControls {
    fn default() -> Self {
        Self(Arc::new(ControlsInner {
            muted: AtomicBool::new(false),
            ptt_pressed: AtomicBool::new(false),
            noise_suppression: AtomicBool::new(true),
            mode: AtomicU8::new(VoiceMode::default().to_u8()),
            sensitivity: AtomicU32::new(0.5f32.to_bits()),
            level: level_channel(),
        }))
    }
}

impl CaptureControls {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn set_muted(&self, v: bool) {
        self.0.muted.store(v, Ordering::Relaxed)
    }
    pub fn muted(&self) -> bool {
        self.0.muted.load(Ordering::Relaxed)
    }
    pub fn set_ptt_pressed(&self, v: bool) {
        self.0.ptt_pressed.store(v, Ordering::Relaxed)
    }
    pub fn ptt_pressed(&self) -> bool {
        self.0.ptt_pressed.load(Ordering::Relaxed)
    }
    pub fn set_noise_suppression(&self, v: bool) {
        self.0.noise_suppression.store(v, Ordering::Relaxed)
    }
    pub fn noise_suppression(&self) -> bool {
        self.0.noise_suppression.load(Ordering::Relaxed)
    }
    pub fn set_mode(&self, m: VoiceMode) {
        self.0.mode.store(m.to_u8(), Ordering::Relaxed)
    }
    pub fn mode(&self) -> VoiceMode {
        VoiceMode::from_u8(self.0.mode.load(Ordering::Relaxed))
    }
    /// 0 = only loud, close speech opens the gate; 1 = almost anything does.
    pub fn set_vad_sensitivity(&self, s: f32) {
        let s = if s.is_finite() {
            s.clamp(0.0, 1.0)
        } else {
            0.5
        };
        self.0.sensitivity.store(s.to_bits(), Ordering::Relaxed)
    }
    pub fn vad_sensitivity(&self) -> f32 {
        f32::from_bits(self.0.sensitivity.load(Ordering::Relaxed))
    }

    /// The live microphone level (after noise suppression, before the gate) and whether the
    /// gate is open, about 20 times a second, from whichever capture pipeline runs on these
    /// controls: a call's capture thread or an [`InputMonitor`](crate::monitor::InputMonitor).
    pub fn input_level(&self) -> tokio::sync::watch::Receiver<InputLevel> {
        self.0.level.subscribe()
    }

    fn publish_level(&self, level: InputLevel) {
        self.0.level.send_replace(level);
    }
}

/// RNNoise (nnnoiseless) on 10 ms blocks. It wants samples in the i16 range.
pub struct NoiseSuppressor {
    state: Box<DenoiseState<'static>>,
    scratch: [f32; nnnoiseless::FRAME_SIZE],
    out: [f32; nnnoiseless::FRAME_SIZE],
}

impl std::fmt::Debug for NoiseSuppressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NoiseSuppressor")
    }
}

impl Default for NoiseSuppressor {
    fn default() -> Self {
        Self {
            state: DenoiseState::new(),
            scratch: [0.0; nnnoiseless::FRAME_SIZE],
            out: [0.0; nnnoiseless::FRAME_SIZE],
        }
    }
}

impl NoiseSuppressor {
    /// Denoises in place. `frame.len()` must be a multiple of 480 (10 ms); any rest is left as is.
    /// Returns RNNoise's voice probability for the last block.
    pub fn process(&mut self, frame: &mut [f32]) -> f32 {
        let mut vad = 0.0;
        for block in frame.chunks_exact_mut(nnnoiseless::FRAME_SIZE) {
            for (s, x) in self.scratch.iter_mut().zip(block.iter()) {
                *s = x * 32768.0;
            }
            vad = self.state.process_frame(&mut self.out, &self.scratch);
            for (x, o) in block.iter_mut().zip(self.out.iter()) {
                *x = (o / 32768.0).clamp(-1.0, 1.0);
            }
        }
        vad
    }
}

/// Voice activity: the WebRTC VAD's decision, and a level floor so distant noise that
/// "sounds like voice" does not open the gate. Sensitivity moves both.
pub struct VoiceDetector {
    vad: Vad,
    mode_for: f32,
    pcm: Vec<i16>,
    hangover: SpeakingDetector,
}

impl std::fmt::Debug for VoiceDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VoiceDetector")
    }
}

impl VoiceDetector {
    pub fn new(frame_samples: usize) -> Self {
        // 300 ms of hangover keeps word endings.
        let hang = (300 / (frame_samples as u32 * 1000 / crate::SAMPLE_RATE).max(1)).max(1);
        Self {
            vad: Vad::new_with_rate_and_mode(SampleRate::Rate48kHz, VadMode::Aggressive),
            mode_for: f32::NAN,
            pcm: Vec::with_capacity(frame_samples),
            hangover: SpeakingDetector::new(0.0, hang),
        }
    }

    /// Threshold in dBFS for a sensitivity in 0..=1: -30 dBFS (insensitive) … -60 dBFS.
    pub fn threshold_dbfs(sensitivity: f32) -> f32 {
        -30.0 - 30.0 * sensitivity
    }

    /// Is this frame (with its level) voice? Includes hangover.
    pub fn is_voice(&mut self, frame: &[f32], level_dbfs: f32, sensitivity: f32) -> bool {
        if self.mode_for != sensitivity {
            let mode = if sensitivity >= 0.75 {
                VadMode::Quality
            } else if sensitivity >= 0.5 {
                VadMode::LowBitrate
            } else if sensitivity >= 0.25 {
                VadMode::Aggressive
            } else {
                VadMode::VeryAggressive
            };
            self.vad.set_mode(mode);
            self.mode_for = sensitivity;
        }
        let loud = level_dbfs >= Self::threshold_dbfs(sensitivity);
        let voiced = loud && {
            self.pcm.clear();
            self.pcm
                .extend(frame.iter().map(|&x| crate::format::to_i16(x)));
            // Frames that are not 10/20/30 ms are judged on level alone.
            self.vad.is_voice_segment(&self.pcm).unwrap_or(true)
        };
        self.hangover.update(voiced)
    }
}

/// What the capture chain decided about one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CaptureDecision {
    /// The frame holds audio to send (otherwise it was zeroed).
    pub transmit: bool,
    /// Level after noise suppression, before the gate (for the local meter).
    pub level_dbfs: f32,
    /// For the speaking indicator: transmitting and not silent.
    pub speaking: bool,
}

/// Noise suppression + gate, one frame at a time. Build it on the capture thread.
#[derive(Debug)]
pub struct CapturePipeline {
    controls: CaptureControls,
    ns: NoiseSuppressor,
    vad: VoiceDetector,
    meter: LevelMeter,
}

impl CapturePipeline {
    pub fn new(controls: CaptureControls, frame_samples: usize) -> Self {
        Self {
            controls,
            ns: NoiseSuppressor::default(),
            vad: VoiceDetector::new(frame_samples),
            meter: LevelMeter::new(),
        }
    }

    pub fn controls(&self) -> &CaptureControls {
        &self.controls
    }

    /// Processes `frame` in place; a closed gate leaves it silent.
    pub fn process(&mut self, frame: &mut [f32]) -> CaptureDecision {
        // RNNoise is most of the chain's CPU: skip it when its output cannot be sent (muted,
        // push-to-talk released: the meter then shows the raw microphone) and on digital
        // silence (nothing to remove).
        let closed_by_user = self.controls.muted()
            || (self.controls.mode() == VoiceMode::PushToTalk && !self.controls.ptt_pressed());
        if self.controls.noise_suppression() && !closed_by_user && frame.iter().any(|&x| x != 0.0) {
            self.ns.process(frame);
        }
        let level = dbfs(frame);
        let sensitivity = self.controls.vad_sensitivity();
        let open = !self.controls.muted()
            && match self.controls.mode() {
                VoiceMode::Open => true,
                VoiceMode::PushToTalk => self.controls.ptt_pressed(),
                VoiceMode::VoiceActivity => self.vad.is_voice(frame, level, sensitivity),
            };
        if let Some(l) = self
            .meter
            .push(frame, open, VoiceDetector::threshold_dbfs(sensitivity))
        {
            self.controls.publish_level(l);
        }
        if !open {
            frame.fill(0.0);
        }
        CaptureDecision {
            transmit: open,
            level_dbfs: level,
            speaking: open && level > -60.0,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::analysis::rms;
    use crate::synth::tone_samples;
    use rand::{Rng, SeedableRng};

    /// A loud voiced "vowel": 140 Hz with six harmonics, `n` samples at 48 kHz. Opens the VAD.
    pub(crate) fn vowel(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let t = i as f32 / 48_000.0;
                (1..8)
                    .map(|h| {
                        0.3 / h as f32 * (2.0 * std::f32::consts::PI * 140.0 * h as f32 * t).sin()
                    })
                    .sum()
            })
            .collect()
    }

    fn noise(n: usize, amp: f32, seed: u64) -> Vec<f32> {
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| r.gen_range(-amp..amp)).collect()
    }

    #[test]
    fn noise_suppression_attenuates_steady_noise() {
        // Low-pass ("fan") noise at -50 and -30 dBFS: RNNoise learns it and removes >20 dB.
        for amp in [0.01f32, 0.1] {
            let mut ns = NoiseSuppressor::default();
            let white = noise(96_000, amp, 1);
            let mut y = 0.0f32;
            let input: Vec<f32> = white
                .iter()
                .map(|x| {
                    y = 0.9 * y + x;
                    y * 0.3
                })
                .collect();
            let mut out = input.clone();
            for f in out.chunks_mut(960) {
                ns.process(f);
            }
            let before = rms(&input[48_000..]);
            let after = rms(&out[48_000..]);
            assert!(after < before * 0.1, "{amp}: noise {before} -> {after}");
        }
    }

    #[test]
    fn mute_and_ptt_really_silence() {
        let c = CaptureControls::new();
        c.set_noise_suppression(false);
        let mut p = CapturePipeline::new(c.clone(), 960);
        let tone = tone_samples(300.0, 0.5, 960);

        c.set_mode(VoiceMode::Open);
        let mut f = tone.clone();
        assert!(p.process(&mut f).transmit);
        assert!(rms(&f) > 0.3);

        c.set_muted(true);
        let mut f = tone.clone();
        let d = p.process(&mut f);
        assert!(!d.transmit && !d.speaking);
        assert_eq!(rms(&f), 0.0);
        assert!(
            d.level_dbfs > -10.0,
            "the local meter still shows the mic level"
        );
        c.set_muted(false);

        c.set_mode(VoiceMode::PushToTalk);
        let mut f = tone.clone();
        assert!(!p.process(&mut f).transmit);
        assert_eq!(rms(&f), 0.0);
        c.set_ptt_pressed(true);
        let mut f = tone.clone();
        assert!(p.process(&mut f).transmit);
        assert!(rms(&f) > 0.3);
    }

    #[test]
    fn noise_suppression_runs_only_when_its_output_can_be_sent() {
        let c = CaptureControls::new();
        c.set_mode(VoiceMode::Open);
        let mut p = CapturePipeline::new(c.clone(), 960);
        // "Fan" noise, as above.
        let mut y = 0.0f32;
        let hiss: Vec<f32> = noise(96_000, 0.05, 3)
            .iter()
            .map(|x| {
                y = 0.9 * y + x;
                y * 0.3
            })
            .collect();
        let raw = dbfs(&hiss[48_000..48_960]);
        // Let RNNoise learn the hiss, then compare a frame with and without it.
        for f in hiss[..48_000].chunks(960) {
            p.process(&mut f.to_vec());
        }
        let denoised = p.process(&mut hiss[48_000..48_960].to_vec()).level_dbfs;
        assert!(denoised < raw - 10.0, "NS on: {denoised} vs raw {raw}");
        c.set_muted(true);
        let muted = p.process(&mut hiss[48_000..48_960].to_vec()).level_dbfs;
        assert_eq!(
            muted, raw,
            "muted: RNNoise skipped, the meter shows the raw microphone"
        );
        c.set_muted(false);
        c.set_mode(VoiceMode::PushToTalk);
        assert_eq!(
            p.process(&mut hiss[48_000..48_960].to_vec()).level_dbfs,
            raw
        );
        c.set_ptt_pressed(true);
        assert!(p.process(&mut hiss[48_000..48_960].to_vec()).level_dbfs < raw - 10.0);
        // Digital silence stays silence.
        let mut z = vec![0.0; 960];
        assert_eq!(p.process(&mut z).level_dbfs, -100.0);
        assert!(z.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn vad_opens_for_voice_like_sound_not_for_quiet_noise_and_sensitivity_matters() {
        let c = CaptureControls::new();
        c.set_noise_suppression(false);
        let mut p = CapturePipeline::new(c.clone(), 960);
        // Quiet hiss (-50 dBFS) at default sensitivity (-45 dBFS floor): gate stays shut.
        let hiss = noise(48_000, 0.0055, 2);
        let opened = hiss
            .chunks(960)
            .filter(|f| p.process(&mut f.to_vec()).transmit)
            .count();
        assert_eq!(opened, 0);
        // A loud harmonic "vowel" opens it.
        let vowel = vowel(48_000);
        let opened = vowel
            .chunks(960)
            .filter(|f| p.process(&mut f.to_vec()).transmit)
            .count();
        assert!(opened > 40, "opened {opened}/50");
        // Sensitivity moves the level floor.
        assert!(VoiceDetector::threshold_dbfs(1.0) < VoiceDetector::threshold_dbfs(0.0));
        c.set_vad_sensitivity(f32::NAN);
        assert_eq!(c.vad_sensitivity(), 0.5);
    }
}
