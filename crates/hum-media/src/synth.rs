//! Synthetic sources and sinks: the same traits as devices, for bots, tests and machines with no
//! sound card. All are unpaced (as fast as they are called); wrap them in
//! [`Paced`](crate::pacer::Paced) to run in real time.

use std::f32::consts::PI;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::{AudioSink, AudioSource, MediaError, SAMPLE_RATE};

/// `n` samples of a sine at `freq` Hz.
pub fn tone_samples(freq: f32, amplitude: f32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| amplitude * (2.0 * PI * freq * i as f32 / SAMPLE_RATE as f32).sin())
        .collect()
}

/// `n` samples of a linear chirp sweeping `f0` → `f1` Hz: a signal with a sharp
/// autocorrelation peak, so it can be found (and timed) in a recording.
pub fn chirp_samples(f0: f32, f1: f32, amplitude: f32, n: usize) -> Vec<f32> {
    let dur = n as f32 / SAMPLE_RATE as f32;
    let k = (f1 - f0) / dur;
    (0..n)
        .map(|i| {
            let t = i as f32 / SAMPLE_RATE as f32;
            // Short fades avoid clicks that would smear the spectrum.
            let fade = (i.min(n - 1 - i) as f32 / 240.0).min(1.0);
            amplitude * fade * (2.0 * PI * (f0 * t + 0.5 * k * t * t)).sin()
        })
        .collect()
}

/// Endless silence.
#[derive(Debug, Default)]
pub struct SilenceSource;

impl SilenceSource {
    pub fn new() -> Self {
        Self
    }
}

impl AudioSource for SilenceSource {
    fn read(&mut self, frame: &mut [f32]) -> Result<(), MediaError> {
        frame.fill(0.0);
        Ok(())
    }
    fn name(&self) -> String {
        "silence".into()
    }
}

/// An endless sine.
#[derive(Debug)]
pub struct ToneSource {
    freq: f32,
    amplitude: f32,
    /// The oscillator as a unit phasor (cos, sin), rotated by `step` each sample: a multiply
    /// instead of a `sin` per sample, so a benchmark's tone costs next to nothing. Kept in f64
    /// and renormalised every frame, it stays exact to ~1e-12 over hours.
    phasor: (f64, f64),
    step: (f64, f64),
}

impl ToneSource {
    pub fn new(freq: f32, amplitude: f32) -> Self {
        let w = 2.0 * std::f64::consts::PI * freq as f64 / SAMPLE_RATE as f64;
        Self {
            freq,
            amplitude,
            phasor: (1.0, 0.0),
            step: (w.cos(), w.sin()),
        }
    }
}

impl AudioSource for ToneSource {
    fn read(&mut self, frame: &mut [f32]) -> Result<(), MediaError> {
        let (mut c, mut s) = self.phasor;
        let (dc, ds) = self.step;
        for x in frame.iter_mut() {
            *x = self.amplitude * s as f32;
            (c, s) = (c * dc - s * ds, s * dc + c * ds);
        }
        let norm = (c * c + s * s).sqrt();
        self.phasor = (c / norm, s / norm);
        Ok(())
    }
    fn name(&self) -> String {
        format!("tone {} Hz", self.freq)
    }
}

/// Plays a fixed buffer, optionally looping, then silence (or [`MediaError::Ended`]).
#[derive(Debug)]
pub struct BufferSource {
    name: String,
    samples: Arc<[f32]>,
    pos: usize,
    looping: bool,
    end_with_error: bool,
}

impl BufferSource {
    pub fn new(name: impl Into<String>, samples: Vec<f32>) -> Self {
        Self {
            name: name.into(),
            samples: samples.into(),
            pos: 0,
            looping: false,
            end_with_error: false,
        }
    }

    /// Restart from the beginning when the buffer is exhausted.
    pub fn looping(mut self, yes: bool) -> Self {
        self.looping = yes;
        self
    }

    /// Return [`MediaError::Ended`] after the buffer instead of silence.
    pub fn end_with_error(mut self, yes: bool) -> Self {
        self.end_with_error = yes;
        self
    }

    /// A chirp repeated every `period` samples (chirp then silence), for end-to-end tests.
    pub fn chirp_train(chirp_len: usize, period: usize) -> Self {
        let mut s = chirp_samples(300.0, 3400.0, 0.5, chirp_len);
        s.resize(period.max(chirp_len), 0.0);
        Self::new("chirp", s).looping(true)
    }

    /// A single click every `period` samples, for latency measurement.
    pub fn impulse_train(period: usize) -> Self {
        // A 1 ms 1 kHz burst survives Opus far better than a single-sample spike.
        let mut s = tone_samples(1000.0, 0.8, 48);
        s.resize(period, 0.0);
        Self::new("impulse", s).looping(true)
    }

    /// Opens a WAV file. Any sample format and channel count is accepted; channels are mixed
    /// down and other sample rates are resampled linearly to 48 kHz.
    pub fn from_wav(path: &Path) -> Result<Self, MediaError> {
        let wav_err = |reason: String| MediaError::Wav {
            path: path.display().to_string(),
            reason,
        };
        let reader = hound::WavReader::open(path).map_err(|e| wav_err(e.to_string()))?;
        let spec = reader.spec();
        let interleaved: Vec<f32> = match spec.sample_format {
            hound::SampleFormat::Float => reader
                .into_samples::<f32>()
                .collect::<Result<_, _>>()
                .map_err(|e| wav_err(e.to_string()))?,
            hound::SampleFormat::Int => {
                let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
                reader
                    .into_samples::<i32>()
                    .map(|s| s.map(|v| v as f32 * scale))
                    .collect::<Result<_, _>>()
                    .map_err(|e| wav_err(e.to_string()))?
            }
        };
        let ch = spec.channels.max(1) as usize;
        let mono: Vec<f32> = interleaved
            .chunks(ch)
            .map(|c| c.iter().sum::<f32>() / ch as f32)
            .collect();
        let samples = resample_linear(&mono, spec.sample_rate, SAMPLE_RATE);
        Ok(Self::new(path.display().to_string(), samples))
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

impl AudioSource for BufferSource {
    fn read(&mut self, frame: &mut [f32]) -> Result<(), MediaError> {
        if self.pos >= self.samples.len() && !self.looping && self.end_with_error {
            return Err(MediaError::Ended);
        }
        for x in frame.iter_mut() {
            if self.pos >= self.samples.len() {
                if self.looping && !self.samples.is_empty() {
                    self.pos = 0;
                } else {
                    *x = 0.0;
                    continue;
                }
            }
            *x = self.samples[self.pos];
            self.pos += 1;
        }
        Ok(())
    }
    fn name(&self) -> String {
        self.name.clone()
    }
}

/// Linear-interpolation resampler: good enough for test and bot input, not for music.
pub fn resample_linear(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || input.is_empty() || from == 0 {
        return input.to_vec();
    }
    let out_len = (input.len() as u64 * to as u64 / from as u64) as usize;
    let ratio = from as f64 / to as f64;
    (0..out_len)
        .map(|i| {
            let pos = i as f64 * ratio;
            let j = pos as usize;
            let frac = (pos - j as f64) as f32;
            let a = input[j.min(input.len() - 1)];
            let b = input[(j + 1).min(input.len() - 1)];
            a + (b - a) * frac
        })
        .collect()
}

/// Discards everything.
#[derive(Debug, Default)]
pub struct NullSink;

impl AudioSink for NullSink {
    fn write(&mut self, _frame: &[f32]) -> Result<(), MediaError> {
        Ok(())
    }
    fn name(&self) -> String {
        "null".into()
    }
}

/// Keeps everything in memory; clones share the buffer, so a test can read what a pipeline
/// running on another thread wrote.
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    buf: Arc<Mutex<Vec<f32>>>,
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn samples(&self) -> Vec<f32> {
        self.buf.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

impl AudioSink for MemorySink {
    fn write(&mut self, frame: &[f32]) -> Result<(), MediaError> {
        if let Ok(mut b) = self.buf.lock() {
            b.extend_from_slice(frame);
        }
        Ok(())
    }
    fn name(&self) -> String {
        "memory".into()
    }
}

/// Writes 48 kHz mono 16-bit PCM. The header is fixed up on [`AudioSink::finish`] (and on
/// drop), so a killed process still leaves a readable prefix once `finish` ran at least once
/// via [`WavSink::flush`].
pub struct WavSink {
    path: PathBuf,
    writer: Option<hound::WavWriter<BufWriter<File>>>,
}

impl std::fmt::Debug for WavSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavSink").field("path", &self.path).finish()
    }
}

impl WavSink {
    pub fn create(path: &Path) -> Result<Self, MediaError> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(path, spec).map_err(|e| MediaError::Wav {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: Some(writer),
        })
    }

    /// Makes the file on disk valid up to what was written so far.
    pub fn flush(&mut self) -> Result<(), MediaError> {
        if let Some(w) = self.writer.as_mut() {
            w.flush().map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    fn err(&self, e: hound::Error) -> MediaError {
        MediaError::Wav {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        }
    }
}

impl AudioSink for WavSink {
    fn write(&mut self, frame: &[f32]) -> Result<(), MediaError> {
        let Some(w) = self.writer.as_mut() else {
            return Err(MediaError::Ended);
        };
        for &x in frame {
            if let Err(e) = w.write_sample(crate::format::to_i16(x)) {
                return Err(MediaError::Wav {
                    path: self.path.display().to_string(),
                    reason: e.to_string(),
                });
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), MediaError> {
        if let Some(w) = self.writer.take() {
            w.finalize().map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }
}

impl Drop for WavSink {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Reads a WAV file as 48 kHz mono f32 (for tests that inspect recordings).
pub fn read_wav(path: &Path) -> Result<Vec<f32>, MediaError> {
    let src = BufferSource::from_wav(path)?;
    Ok(src.samples.to_vec())
}

/// Writes 48 kHz mono f32 samples to a 16-bit WAV file.
pub fn write_wav(path: &Path, samples: &[f32]) -> Result<(), MediaError> {
    let mut sink = WavSink::create(path)?;
    sink.write(samples)?;
    sink.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::tone_purity;

    #[test]
    fn tone_source_is_continuous_across_frames() {
        let mut src = ToneSource::new(440.0, 0.5);
        let mut all = Vec::new();
        let mut f = vec![0.0; 480];
        for _ in 0..10 {
            src.read(&mut f).expect("read");
            all.extend_from_slice(&f);
        }
        assert!(tone_purity(&all, 440.0) > 0.95);
        // Sample for sample the sine it claims to be, a minute in.
        let mut src = ToneSource::new(440.0, 0.5);
        let mut f = vec![0.0; 960];
        for _ in 0..3_000 {
            src.read(&mut f).expect("read");
        }
        src.read(&mut f).expect("read");
        let t0 = 3_000 * 960;
        for (i, x) in f.iter().enumerate() {
            let t = (t0 + i) as f64 / 48_000.0;
            let want = 0.5 * (2.0 * std::f64::consts::PI * 440.0 * t).sin();
            assert!((*x as f64 - want).abs() < 1e-4, "sample {i}: {x} vs {want}");
        }
    }

    #[test]
    fn wav_round_trip_and_resampling() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("t.wav");
        let tone = tone_samples(1000.0, 0.5, 4800);
        write_wav(&p, &tone).expect("write");
        let back = read_wav(&p).expect("read");
        assert_eq!(back.len(), tone.len());
        let err: f32 = back
            .iter()
            .zip(&tone)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 1e-3, "max error {err}");

        // A 16 kHz stereo file comes out as 48 kHz mono with the same tone.
        let p2 = dir.path().join("s.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&p2, spec).expect("create");
        for i in 0..1600 {
            let v = (0.5 * (2.0 * PI * 500.0 * i as f32 / 16_000.0).sin() * 32767.0) as i16;
            w.write_sample(v).expect("l");
            w.write_sample(v).expect("r");
        }
        w.finalize().expect("finalize");
        let s = read_wav(&p2).expect("read");
        assert_eq!(s.len(), 4800);
        assert!(tone_purity(&s, 500.0) > 0.9);
    }

    #[test]
    fn missing_wav_is_a_clear_error() {
        let e = BufferSource::from_wav(Path::new("/nonexistent/x.wav")).expect_err("must fail");
        assert!(e.to_string().contains("/nonexistent/x.wav"), "{e}");
    }

    #[test]
    fn buffer_source_ends_or_loops() {
        let mut f = [0.0f32; 4];
        let mut once = BufferSource::new("b", vec![1.0, 2.0, 3.0]).end_with_error(true);
        once.read(&mut f).expect("first");
        assert_eq!(f, [1.0, 2.0, 3.0, 0.0]);
        assert!(matches!(once.read(&mut f), Err(MediaError::Ended)));
        let mut lp = BufferSource::new("b", vec![1.0, 2.0, 3.0]).looping(true);
        lp.read(&mut f).expect("loop");
        assert_eq!(f, [1.0, 2.0, 3.0, 1.0]);
    }
}
