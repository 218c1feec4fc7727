//! Audio levels and speaking indicators.

use crate::analysis::rms;

/// Level of a frame in dBFS (0 = full-scale square wave; silence is -100).
pub fn dbfs(frame: &[f32]) -> f32 {
    let r = rms(frame);
    if r <= 1e-5 { -100.0 } else { 20.0 * r.log10() }
}

/// Turns per-frame levels into a stable "is speaking" flag: on as soon as the level crosses
/// the threshold, off only after `hangover_frames` quiet frames, so the indicator does not
/// flicker between syllables.
#[derive(Debug, Clone)]
pub struct SpeakingDetector {
    threshold_dbfs: f32,
    hangover_frames: u32,
    quiet_run: u32,
    speaking: bool,
}

impl SpeakingDetector {
    pub fn new(threshold_dbfs: f32, hangover_frames: u32) -> Self {
        Self {
            threshold_dbfs,
            hangover_frames,
            quiet_run: hangover_frames,
            speaking: false,
        }
    }

    /// Feeds one frame's level (or a VAD decision via `loud`); returns the current state.
    pub fn update(&mut self, loud: bool) -> bool {
        if loud {
            self.quiet_run = 0;
            self.speaking = true;
        } else {
            self.quiet_run = self.quiet_run.saturating_add(1);
            if self.quiet_run > self.hangover_frames {
                self.speaking = false;
            }
        }
        self.speaking
    }

    pub fn update_level(&mut self, level_dbfs: f32) -> bool {
        self.update(level_dbfs >= self.threshold_dbfs)
    }

    pub fn speaking(&self) -> bool {
        self.speaking
    }
}

impl Default for SpeakingDetector {
    fn default() -> Self {
        // -45 dBFS and 300 ms at 20 ms frames.
        Self::new(-45.0, 15)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::tone_samples;

    #[test]
    fn levels() {
        assert_eq!(dbfs(&[0.0; 960]), -100.0);
        let t = tone_samples(440.0, 1.0, 960);
        assert!((dbfs(&t) + 3.0).abs() < 0.2, "{}", dbfs(&t));
    }

    #[test]
    fn speaking_has_hangover() {
        let mut s = SpeakingDetector::new(-40.0, 2);
        assert!(!s.update_level(-60.0));
        assert!(s.update_level(-20.0));
        assert!(s.update_level(-60.0));
        assert!(s.update_level(-60.0));
        assert!(!s.update_level(-60.0));
    }
}
