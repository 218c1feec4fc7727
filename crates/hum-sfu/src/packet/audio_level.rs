//! RFC 6464 client-to-mixer audio level: one byte per audio packet, `V | level`, where level is
//! 0..=127 in -dBov (0 is the loudest, 127 silence) and V the sender's voice-activity flag.
//! This is all the SFU reads of an audio packet; the Opus payload stays opaque.

/// An audio level in -dBov: 0 loudest, 127 silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AudioLevel(u8);

impl AudioLevel {
    pub const SILENCE: AudioLevel = AudioLevel(127);

    /// From -dBov, clamped to 0..=127.
    pub fn from_neg_dbov(v: u8) -> Self {
        AudioLevel(v.min(127))
    }

    /// From the extension's one data byte: the level and the voice-activity flag.
    pub fn from_ext_byte(b: u8) -> (Self, bool) {
        (AudioLevel(b & 0x7f), b & 0x80 != 0)
    }

    /// From str0m's parsed value (negative dBov, e.g. -30); out-of-range values clamp.
    pub fn from_dbov(dbov: i8) -> Self {
        AudioLevel((-i16::from(dbov)).clamp(0, 127) as u8)
    }

    pub fn neg_dbov(self) -> u8 {
        self.0
    }

    /// Loudness on 0..=127 (127 loudest), the scale speaker detection works on.
    pub fn loudness(self) -> u8 {
        127 - self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_and_str0m_forms_agree() {
        assert_eq!(
            AudioLevel::from_ext_byte(0x80 | 30),
            (AudioLevel::from_neg_dbov(30), true)
        );
        assert_eq!(AudioLevel::from_ext_byte(127), (AudioLevel::SILENCE, false));
        assert_eq!(AudioLevel::from_dbov(-30), AudioLevel::from_neg_dbov(30));
        assert_eq!(AudioLevel::from_dbov(5), AudioLevel::from_neg_dbov(0));
        assert_eq!(AudioLevel::from_dbov(i8::MIN), AudioLevel::SILENCE);
        assert_eq!(AudioLevel::from_neg_dbov(200), AudioLevel::SILENCE);
        assert_eq!(AudioLevel::from_neg_dbov(30).loudness(), 97);
    }
}
