//! Which chunks a peer holds, over a sliding window of [`WINDOW`] sequence numbers.
//!
//! Live chunks older than a few seconds are useless, so a have-map only remembers the newest
//! `WINDOW` sequence numbers: setting a bit beyond the window slides it forward and forgets the oldest.
//! An announcement is the window as a bitmap (16 bytes for 128 chunks, not a list of numbers).

use hum_proto::mesh::{Layer, MAX_ANNOUNCE_BITS, MeshMsg};
use thiserror::Error;

/// Why a peer's announcement was refused (it came off the wire: never trusted, never a panic).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AnnounceError {
    #[error("announcement window {base}+{bits} runs past the largest sequence number")]
    SeqOverflow { base: u64, bits: u16 },
    #[error("announcement window of {0} bits exceeds {MAX_ANNOUNCE_BITS}")]
    Window(u16),
    #[error("announcement bitmap of {have} bytes does not match {bits} bits")]
    Bitmap { bits: u16, have: usize },
}

/// Sequence numbers a have-map covers.
pub const WINDOW: u64 = 128;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HaveMap {
    base: u64,
    bits: u128,
}

impl HaveMap {
    pub fn new() -> Self {
        HaveMap::default()
    }

    /// The oldest sequence number the window covers.
    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn has(&self, seq: u64) -> bool {
        seq >= self.base && seq - self.base < WINDOW && (self.bits >> (seq - self.base)) & 1 == 1
    }

    pub fn set(&mut self, seq: u64) {
        if seq < self.base {
            return;
        }
        if seq - self.base >= WINDOW {
            let shift = seq - self.base - (WINDOW - 1);
            self.bits = if shift >= WINDOW {
                0
            } else {
                self.bits >> shift
            };
            self.base += shift;
        }
        self.bits |= 1u128 << (seq - self.base);
    }

    /// The newest sequence number held, if any.
    pub fn newest(&self) -> Option<u64> {
        if self.bits == 0 {
            None
        } else {
            // `127 - lz` first: `base + 127` alone overflows for a window near `u64::MAX`.
            Some(self.base + (127 - self.bits.leading_zeros() as u64))
        }
    }

    pub fn count(&self) -> u32 {
        self.bits.count_ones()
    }

    /// A compact announcement of the window, trimmed to end at the newest chunk held.
    pub fn announce(&self, layer: Layer) -> MeshMsg {
        if self.bits == 0 {
            return MeshMsg::Announce {
                layer,
                base: self.base,
                bits: 0,
                bitmap: Vec::new(),
            };
        }
        let skip = self.bits.trailing_zeros() as u64;
        let from = self.base + skip;
        let bits = self.newest().map_or(0, |n| n - from + 1) as u16;
        let bytes = (bits as usize).div_ceil(8);
        let bitmap = (self.bits >> skip).to_le_bytes()[..bytes].to_vec();
        MeshMsg::Announce {
            layer,
            base: from,
            bits,
            bitmap,
        }
    }

    /// Read an announcement (as decoded from the wire). Bits beyond our window are ignored; a window
    /// whose sequence numbers would pass `u64::MAX`, or whose bitmap does not match its bit count, is
    /// refused (an honest peer never sends one).
    pub fn from_announce(base: u64, bits: u16, bitmap: &[u8]) -> Result<HaveMap, AnnounceError> {
        if bits > MAX_ANNOUNCE_BITS {
            return Err(AnnounceError::Window(bits));
        }
        if bitmap.len() != (bits as usize).div_ceil(8) {
            return Err(AnnounceError::Bitmap {
                bits,
                have: bitmap.len(),
            });
        }
        if bits > 0 && base.checked_add(bits as u64 - 1).is_none() {
            return Err(AnnounceError::SeqOverflow { base, bits });
        }
        let mut m = HaveMap::new();
        for i in 0..bits as u64 {
            if (bitmap[(i / 8) as usize] >> (i % 8)) & 1 == 1 {
                m.set(base + i);
            }
        }
        Ok(m)
    }

    /// Merge another map's knowledge into this one (a peer's announcement plus what it sent us).
    pub fn merge(&mut self, other: &HaveMap) {
        if let Some(n) = other.newest() {
            let lo = other.base.max(n.saturating_sub(WINDOW - 1));
            for s in lo..=n {
                if other.has(s) {
                    self.set(s);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_fixture(base: u64, s: &str) -> HaveMap {
        let mut m = HaveMap::new();
        for (i, c) in s.chars().enumerate() {
            if c == '1' {
                m.set(base + i as u64);
            }
        }
        m
    }

    fn fixture(m: &HaveMap, from: u64, n: u64) -> String {
        (from..from + n)
            .map(|s| if m.has(s) { '1' } else { '0' })
            .collect()
    }

    #[test]
    fn set_has_newest() {
        let m = from_fixture(10, "1101");
        assert_eq!(fixture(&m, 10, 4), "1101");
        assert_eq!(m.newest(), Some(13));
        assert_eq!(m.count(), 3);
        assert!(!m.has(9));
    }

    #[test]
    fn window_slides_and_forgets_the_oldest() {
        let mut m = from_fixture(0, "11");
        m.set(WINDOW); // slides by one: seq 0 falls out
        assert!(!m.has(0));
        assert!(m.has(1) && m.has(WINDOW));
        m.set(10 * WINDOW);
        assert_eq!(m.count(), 1);
        m.set(5); // too old: ignored
        assert_eq!(m.count(), 1);
    }

    #[test]
    fn announcement_is_compact_and_round_trips() {
        let m = from_fixture(1000, "1011000001");
        let msg = m.announce(Layer::High);
        let MeshMsg::Announce {
            base,
            bits,
            ref bitmap,
            ..
        } = msg
        else {
            panic!("announce")
        };
        assert_eq!(bits, 10);
        assert_eq!(bitmap.len(), 2);
        let back = HaveMap::from_announce(base, bits, bitmap).expect("valid");
        assert_eq!(fixture(&back, 1000, 10), "1011000001");
        let wire = msg.encode().expect("encodes");
        assert!(wire.len() < 20, "{} bytes", wire.len());
    }

    #[test]
    fn hostile_windows_are_typed_errors_not_overflows() {
        assert_eq!(
            HaveMap::from_announce(u64::MAX, 2, &[0b11]),
            Err(AnnounceError::SeqOverflow {
                base: u64::MAX,
                bits: 2
            })
        );
        assert_eq!(
            HaveMap::from_announce(u64::MAX - 10, 4096, &[0xff; 512]),
            Err(AnnounceError::SeqOverflow {
                base: u64::MAX - 10,
                bits: 4096
            })
        );
        assert_eq!(
            HaveMap::from_announce(0, 4097, &[0; 513]),
            Err(AnnounceError::Window(4097))
        );
        assert_eq!(
            HaveMap::from_announce(0, 9, &[1]),
            Err(AnnounceError::Bitmap { bits: 9, have: 1 })
        );
        // The very last sequence numbers are legal, and the map handles them without overflowing.
        let m = HaveMap::from_announce(u64::MAX - 1, 2, &[0b11]).expect("fits exactly");
        assert!(m.has(u64::MAX) && m.has(u64::MAX - 1));
        assert_eq!(m.newest(), Some(u64::MAX));
        let mut a = HaveMap::new();
        a.merge(&m);
        assert_eq!(a.newest(), Some(u64::MAX));
        let MeshMsg::Announce { base, bits, .. } = m.announce(Layer::High) else {
            panic!("announce")
        };
        assert_eq!((base, bits), (u64::MAX - 1, 2));
        assert_eq!(HaveMap::from_announce(5, 0, &[]), Ok(HaveMap::new()));
    }

    #[test]
    fn merge_unions() {
        let mut a = from_fixture(0, "1100");
        a.merge(&from_fixture(0, "0011"));
        assert_eq!(fixture(&a, 0, 4), "1111");
    }
}
