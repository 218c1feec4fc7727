//! What a settings screen and an in-call meter need: the live microphone level, a way to get it
//! without being in a call, and a test sound for the speakers.
//!
//! - [`InputLevel`] is published by every [`CapturePipeline`] (so by a call's capture thread
//!   and by an [`InputMonitor`] alike) into its [`CaptureControls`], about 20 times a second.
//!   Anyone holding the controls reads it with [`CaptureControls::input_level`], a
//!   `tokio::sync::watch` receiver: the newest value wins, a slow UI never blocks audio.
//! - [`InputMonitor`] runs the capture chain on a device (or any [`AudioSource`]) outside a call,
//!   so the sensitivity slider can show where the gate would open.
//! - [`play_test_sound`] plays a short chime on a sink; [`play_test_sound_on_device`] on an
//!   output device.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::watch;

use crate::device::{CpalSink, CpalSource};
use crate::processing::{CaptureControls, CapturePipeline};
use crate::{AudioSink, AudioSource, FrameDuration, MediaError, SAMPLE_RATE};

/// The microphone level after noise suppression, before the gate, over the last ~50 ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputLevel {
    /// RMS level in dBFS (a full-scale sine is -3; silence is -100).
    pub level_db: f32,
    /// Peak sample in dBFS.
    pub peak_db: f32,
    /// Whether the gate (mute, push-to-talk, voice activity) was open at the end of the window:
    /// what would be sent right now.
    pub gate_open: bool,
    /// The voice-activity level floor for the current sensitivity (where to draw the marker on
    /// the meter). The VAD also needs the sound to be voice-like, so it is a floor, not the rule.
    pub threshold_db: f32,
}

impl InputLevel {
    /// Silence, gate shut.
    pub const SILENT: InputLevel = InputLevel {
        level_db: -100.0,
        peak_db: -100.0,
        gate_open: false,
        threshold_db: -45.0,
    };

    /// `level_db` mapped to 0..=1 over -60..0 dBFS, for a meter bar.
    pub fn fraction(&self) -> f32 {
        ((self.level_db + 60.0) / 60.0).clamp(0.0, 1.0)
    }
}

impl Default for InputLevel {
    fn default() -> Self {
        Self::SILENT
    }
}

/// How much audio one [`InputLevel`] summarizes: 50 ms, i.e. 20 updates a second (with 20 ms
/// frames a window is rounded up to 3 frames: ~17 a second).
pub const METER_WINDOW_SAMPLES: usize = SAMPLE_RATE as usize / 20;

/// Accumulates frames into [`InputLevel`]s, one per [`METER_WINDOW_SAMPLES`].
#[derive(Debug, Clone, Default)]
pub struct LevelMeter {
    energy: f64,
    samples: usize,
    peak: f32,
}

impl LevelMeter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one (processed, pre-gate) frame; returns a level once a window is complete.
    pub fn push(
        &mut self,
        frame: &[f32],
        gate_open: bool,
        threshold_db: f32,
    ) -> Option<InputLevel> {
        for &x in frame {
            self.energy += (x as f64) * (x as f64);
            self.peak = self.peak.max(x.abs());
        }
        self.samples += frame.len();
        if self.samples < METER_WINDOW_SAMPLES {
            return None;
        }
        let rms = (self.energy / self.samples.max(1) as f64).sqrt() as f32;
        let level = InputLevel {
            level_db: to_db(rms),
            peak_db: to_db(self.peak),
            gate_open,
            threshold_db,
        };
        *self = Self::default();
        Some(level)
    }
}

fn to_db(x: f32) -> f32 {
    if x <= 1e-5 { -100.0 } else { 20.0 * x.log10() }
}

/// A fresh channel for levels; the sender lives in [`CaptureControls`].
pub(crate) fn level_channel() -> watch::Sender<InputLevel> {
    watch::Sender::new(InputLevel::SILENT)
}

/// The capture chain running on its own thread outside a call, publishing levels into its
/// controls. Start it when the settings screen opens, stop (or drop) it when it closes or a
/// call starts (a call's capture thread then publishes into the same controls).
pub struct InputMonitor {
    controls: CaptureControls,
    source_name: String,
    stop: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for InputMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputMonitor")
            .field("source", &self.source_name)
            .finish()
    }
}

impl InputMonitor {
    /// Opens capture device `device` (an id or name from
    /// [`list_devices`](crate::device::list_devices); `None` = the default) and monitors it.
    /// Fails with [`MediaError::NoDevice`] / [`MediaError::DeviceUnavailable`] when there is no
    /// such device (or no sound card at all).
    pub fn open_device(
        device: Option<&str>,
        controls: CaptureControls,
        frame: FrameDuration,
    ) -> Result<Self, MediaError> {
        let source = CpalSource::open(device)?;
        Self::start(Box::new(source), controls, frame)
    }

    /// Monitors any source (a paced synthetic one in tests). It must be paced like a device:
    /// the monitor reads as fast as the source delivers.
    pub fn start(
        mut source: Box<dyn AudioSource>,
        controls: CaptureControls,
        frame: FrameDuration,
    ) -> Result<Self, MediaError> {
        let stop = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let source_name = source.name();
        let thread = {
            let (stop, failure, controls) = (stop.clone(), failure.clone(), controls.clone());
            std::thread::Builder::new()
                .name("hum-input-monitor".into())
                .spawn(move || {
                    let mut pipeline = CapturePipeline::new(controls, frame.samples());
                    let mut buf = vec![0.0f32; frame.samples()];
                    while !stop.load(Ordering::SeqCst) {
                        if let Err(e) = source.read(&mut buf) {
                            if let Ok(mut f) = failure.lock() {
                                *f = Some(format!("microphone '{}' stopped: {e}", source.name()));
                            }
                            break;
                        }
                        pipeline.process(&mut buf);
                    }
                })?
        };
        Ok(Self {
            controls,
            source_name,
            stop,
            failure,
            thread: Some(thread),
        })
    }

    /// Levels, about 20 a second.
    pub fn levels(&self) -> watch::Receiver<InputLevel> {
        self.controls.input_level()
    }

    pub fn controls(&self) -> &CaptureControls {
        &self.controls
    }

    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// Why the monitor stopped on its own (the device failed), if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Stops the capture thread (waiting for its current frame).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for InputMonitor {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The test sound: a 1 s three-note chime (E5, G#5, B5), each note struck with a soft attack
/// and an exponential decay, peaking around -10 dBFS.
pub fn test_sound_samples() -> Vec<f32> {
    let n = SAMPLE_RATE as usize;
    let notes = [(659.25f32, 0usize), (830.61, n / 6), (987.77, n / 3)];
    let mut out = vec![0.0f32; n];
    for (freq, start) in notes {
        for (i, x) in out[start..].iter_mut().enumerate() {
            let t = i as f32 / SAMPLE_RATE as f32;
            let attack = (t / 0.005).min(1.0);
            let decay = (-t * 5.0).exp();
            // A touch of the octave makes it a chime rather than a beep.
            let w = 2.0 * std::f32::consts::PI * freq * t;
            *x += 0.22 * attack * decay * (w.sin() + 0.25 * (2.0 * w).sin());
        }
    }
    // Fade the last 20 ms so it ends without a click.
    let fade = SAMPLE_RATE as usize / 50;
    for (i, x) in out[n - fade..].iter_mut().enumerate() {
        *x *= 1.0 - i as f32 / fade as f32;
    }
    out
}

/// Plays [`test_sound_samples`] into `sink` in `frame`-sized writes, then finishes the sink.
/// Blocks for as long as the sink takes (about 1 s on a device).
pub fn play_test_sound(sink: &mut dyn AudioSink, frame: FrameDuration) -> Result<(), MediaError> {
    let sound = test_sound_samples();
    let mut buf = vec![0.0f32; frame.samples()];
    for chunk in sound.chunks(frame.samples()) {
        buf[..chunk.len()].copy_from_slice(chunk);
        buf[chunk.len()..].fill(0.0);
        sink.write(&buf)?;
    }
    sink.finish()
}

/// Plays the test sound on output device `device` (`None` = the default). Blocks ~1 s; call it
/// off the UI thread (e.g. `spawn_blocking`). A missing device is [`MediaError::NoDevice`].
pub fn play_test_sound_on_device(device: Option<&str>) -> Result<(), MediaError> {
    let mut sink = CpalSink::open(device)?;
    play_test_sound(&mut sink, FrameDuration::Ms20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::rms;
    use crate::pacer::Paced;
    use crate::processing::VoiceMode;
    use crate::synth::{MemorySink, ToneSource};
    use std::time::{Duration, Instant};

    #[test]
    fn meter_measures_a_known_tone_within_half_a_db() {
        // A sine of amplitude a has an RMS of a/√2: 0.1 → -23.01 dBFS, peak -20 dBFS.
        let mut m = LevelMeter::new();
        let tone = crate::synth::tone_samples(440.0, 0.1, 48_000);
        let levels: Vec<InputLevel> = tone
            .chunks(960)
            .filter_map(|f| m.push(f, true, -45.0))
            .collect();
        // 50 frames of 20 ms, three frames a window.
        assert_eq!(levels.len(), 16);
        for l in &levels {
            assert!((l.level_db + 23.01).abs() < 0.5, "{l:?}");
            assert!((l.peak_db + 20.0).abs() < 0.2, "{l:?}");
            assert!(l.gate_open);
        }
        // 10 ms frames: exactly 20 a second.
        let mut m = LevelMeter::new();
        let n = tone
            .chunks(480)
            .filter_map(|f| m.push(f, true, -45.0))
            .count();
        assert_eq!(n, 20);
        let mut m = LevelMeter::new();
        let silent = (0..10)
            .filter_map(|_| m.push(&[0.0; 480], false, -45.0))
            .last();
        assert_eq!(silent.map(|l| l.level_db), Some(-100.0));
    }

    fn wait_for(
        rx: &mut watch::Receiver<InputLevel>,
        what: &str,
        ok: impl Fn(&InputLevel) -> bool,
    ) -> InputLevel {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let l = *rx.borrow_and_update();
            if ok(&l) {
                return l;
            }
            assert!(Instant::now() < deadline, "{what}: last {l:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The next level published after the receiver was last marked seen.
    fn wait_for_update(rx: &mut watch::Receiver<InputLevel>, what: &str) -> InputLevel {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !rx.has_changed().expect("monitor alive") {
            assert!(Instant::now() < deadline, "{what}: no new level within 5 s");
            std::thread::sleep(Duration::from_millis(2));
        }
        *rx.borrow_and_update()
    }

    #[test]
    fn monitor_reports_a_synthetic_source_level_and_the_gate_follows_ptt_and_mute() {
        let c = CaptureControls::new();
        c.set_noise_suppression(false);
        c.set_mode(VoiceMode::PushToTalk);
        // -20 dBFS peak sine: -23 dBFS RMS.
        let src = Paced::new(ToneSource::new(440.0, 0.1));
        let mon =
            InputMonitor::start(Box::new(src), c.clone(), FrameDuration::Ms10).expect("start");
        let mut rx = mon.levels();
        let l = wait_for(&mut rx, "level", |l| l.level_db > -60.0);
        assert!((l.level_db + 23.01).abs() < 0.5, "{l:?}");
        assert!(!l.gate_open, "PTT not held: {l:?}");
        c.set_ptt_pressed(true);
        wait_for(&mut rx, "PTT opens the gate", |l| l.gate_open);
        c.set_muted(true);
        let l = wait_for(&mut rx, "mute closes it", |l| !l.gate_open);
        assert!(
            l.level_db > -30.0,
            "the meter still shows the mic while muted: {l:?}"
        );
        c.set_muted(false);
        wait_for(&mut rx, "unmute", |l| l.gate_open);
        // Updates keep coming while the monitor runs, each a fresh measurement of the tone.
        // (How many per second of audio is the meter's, counted in media time above.)
        for n in 0..10 {
            let l = wait_for_update(&mut rx, &format!("update {n} after unmute"));
            assert!((l.level_db + 23.01).abs() < 0.5 && l.gate_open, "{l:?}");
        }
        assert!(mon.failure().is_none());
        mon.stop();
    }

    #[test]
    fn monitor_gate_follows_vad_and_sensitivity_sets_the_threshold() {
        let c = CaptureControls::new();
        c.set_noise_suppression(false);
        c.set_vad_sensitivity(0.5);
        // A voiced "vowel" (140 Hz with harmonics) opens the VAD; silence does not.
        let vowel = crate::processing::tests::vowel(48_000);
        let mut p = CapturePipeline::new(c.clone(), 960);
        let mut rx = c.input_level();
        for f in vowel.chunks(960).take(10) {
            p.process(&mut f.to_vec());
        }
        let l = *rx.borrow_and_update();
        assert!(l.gate_open && l.level_db > -20.0, "{l:?}");
        assert_eq!(l.threshold_db, -45.0);
        // 400 ms of silence: past the 300 ms hangover the gate closes.
        for _ in 0..20 {
            p.process(&mut [0.0; 960]);
        }
        let l = *rx.borrow_and_update();
        assert!(!l.gate_open && l.level_db == -100.0, "{l:?}");
        c.set_vad_sensitivity(1.0);
        for _ in 0..3 {
            p.process(&mut [0.0; 960]);
        }
        assert_eq!(rx.borrow().threshold_db, -60.0);
    }

    #[test]
    fn a_failing_source_is_reported() {
        let c = CaptureControls::new();
        let src = crate::synth::BufferSource::new("short", vec![0.0; 960]).end_with_error(true);
        let mon = InputMonitor::start(Box::new(src), c, FrameDuration::Ms20).expect("start");
        let t0 = Instant::now();
        while mon.failure().is_none() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let f = mon.failure().expect("reported");
        assert!(f.contains("short"), "{f}");
    }

    #[test]
    fn missing_devices_are_clear_errors() {
        let e = InputMonitor::open_device(
            Some("no-such-microphone"),
            CaptureControls::new(),
            FrameDuration::Ms20,
        )
        .expect_err("no such device");
        assert!(e.to_string().contains("no-such-microphone"), "{e}");
        let e = play_test_sound_on_device(Some("no-such-speaker")).expect_err("no such device");
        assert!(e.to_string().contains("no-such-speaker"), "{e}");
        assert!(e.to_string().contains("output"), "{e}");
    }

    #[test]
    fn the_test_sound_is_a_second_of_audible_chime() {
        let mut sink = Paced::new(MemorySink::new());
        let t0 = Instant::now();
        play_test_sound(&mut sink, FrameDuration::Ms20).expect("plays");
        // Paced like a device: it takes (about) real time.
        assert!(t0.elapsed() >= Duration::from_millis(900));
        let s = sink.inner().samples();
        assert_eq!(s.len(), 48_000);
        let peak = s.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(peak > 0.2 && peak < 0.6, "peak {peak}");
        assert!(rms(&s) > 0.03, "rms {}", rms(&s));
        assert!(crate::analysis::tone_purity(&s[..8_000], 659.25) > 0.5);
        assert!(s[47_999].abs() < 1e-3, "ends without a click");
    }
}
