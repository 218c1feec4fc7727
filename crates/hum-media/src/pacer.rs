//! Real-time pacing for synthetic sources and sinks.
//!
//! A WAV file can be read as fast as the disk allows; a microphone cannot. [`Paced`] makes a
//! synthetic source or sink behave like a device: frame `k` is available (or consumed) at
//! `start + k·frame`, measured from the first call. Deadlines are absolute, so sleeping late
//! once does not accumulate drift.
//!
//! A paced sink, like a sound card's buffer, takes a frame up to [`SINK_LEAD`] before the
//! device plays it without blocking: a player that already waits for
//! [`AudioSink::due`] then does not sleep twice per frame.

use std::time::{Duration, Instant};

use crate::{AudioSink, AudioSource, MediaError, SAMPLE_RATE};

/// How far ahead of its play time a paced sink accepts a frame without blocking.
pub const SINK_LEAD: Duration = Duration::from_millis(5);

/// Wraps a source or sink so it runs at the speed of the audio it carries.
#[derive(Debug)]
pub struct Paced<T> {
    inner: T,
    start: Option<Instant>,
    samples: u64,
}

impl<T> Paced<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            start: None,
            samples: 0,
        }
    }

    pub fn into_inner(self) -> T {
        self.inner
    }

    pub fn inner(&self) -> &T {
        &self.inner
    }

    fn due_at(start: Instant, samples: u64) -> Instant {
        start + Duration::from_micros(samples * 1_000_000 / SAMPLE_RATE as u64)
    }

    fn wait_until(&mut self, samples: u64, lead: Duration) {
        let start = *self.start.get_or_insert_with(Instant::now);
        let due = Self::due_at(start, samples)
            .checked_sub(lead)
            .unwrap_or(start);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}

impl<T: AudioSource> AudioSource for Paced<T> {
    fn read(&mut self, frame: &mut [f32]) -> Result<(), MediaError> {
        // Captured audio exists only once its last sample has been "spoken".
        self.inner.read(frame)?;
        self.samples += frame.len() as u64;
        self.wait_until(self.samples, Duration::ZERO);
        Ok(())
    }

    fn name(&self) -> String {
        self.inner.name()
    }
}

impl<T: AudioSink> AudioSink for Paced<T> {
    fn write(&mut self, frame: &[f32]) -> Result<(), MediaError> {
        // A device consumes frame k at start + k·frame; block until shortly before then.
        self.wait_until(self.samples, SINK_LEAD);
        self.samples += frame.len() as u64;
        self.inner.write(frame)
    }

    fn finish(&mut self) -> Result<(), MediaError> {
        self.inner.finish()
    }

    fn due(&self) -> Option<Instant> {
        self.start.map(|s| Self::due_at(s, self.samples))
    }

    fn name(&self) -> String {
        self.inner.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::SilenceSource;

    #[test]
    fn paced_source_takes_real_time_and_does_not_drift() {
        let mut s = Paced::new(SilenceSource::new());
        let mut buf = vec![0.0; 480];
        let t0 = Instant::now();
        for _ in 0..10 {
            s.read(&mut buf).expect("read");
        }
        // 10 × 10 ms: at least 100 ms must have passed (sleep never returns early).
        assert!(t0.elapsed() >= Duration::from_millis(99));
    }

    #[test]
    fn paced_sink_takes_real_time_and_accepts_a_frame_just_before_its_slot() {
        let mut s = Paced::new(crate::synth::NullSink);
        let buf = vec![0.0; 480];
        let t0 = Instant::now();
        for _ in 0..11 {
            s.write(&buf).expect("write");
        }
        // Frame k plays at k·10 ms; the 11th (k = 10) is accepted from 95 ms on.
        assert!(t0.elapsed() >= Duration::from_millis(94));
        assert!(s.due().expect("started") >= t0 + Duration::from_millis(110));
    }
}
