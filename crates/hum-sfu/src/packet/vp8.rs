//! The VP8 RTP payload descriptor (RFC 7741 §4.2) and the first bytes of the VP8 payload header
//! (RFC 6386 §9.1): all the SFU reads of a video payload.
//!
//! The SFU never decodes video. It needs two facts per packet: does a frame start here, and is
//! that frame a keyframe (a simulcast layer switch may only happen there). Both sit in the
//! unencrypted leading bytes, which an end-to-end encryption scheme (SFrame-style) leaves in
//! clear for this reason.

use thiserror::Error;

/// Why a payload is not a VP8 payload the SFU can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Vp8Error {
    #[error("VP8 payload is empty")]
    Empty,
    #[error("VP8 payload descriptor is truncated (needs {needed} bytes, has {len})")]
    Truncated { needed: usize, len: usize },
}

/// The parts of one packet's VP8 payload descriptor the SFU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// S bit: the packet starts a VP8 partition.
    pub start_of_partition: bool,
    /// PID: the partition index (0 is the first partition of a frame).
    pub partition_id: u8,
    /// The picture id (7 or 15 bits) when present.
    pub picture_id: Option<u16>,
    /// TL0PICIDX when present.
    pub tl0_pic_idx: Option<u8>,
    /// Temporal layer index when present.
    pub temporal_id: Option<u8>,
    /// Length of the descriptor: the VP8 payload starts at this offset.
    pub header_len: usize,
    /// This packet starts a frame (S=1, PID=0) whose payload header says "key frame".
    pub keyframe: bool,
}

impl Vp8Descriptor {
    /// The packet starts a new frame.
    pub fn starts_frame(&self) -> bool {
        self.start_of_partition && self.partition_id == 0
    }
}

fn byte(payload: &[u8], at: usize) -> Result<u8, Vp8Error> {
    payload.get(at).copied().ok_or(Vp8Error::Truncated {
        needed: at + 1,
        len: payload.len(),
    })
}

/// Parses the payload descriptor of one VP8 RTP payload. Never panics on any input.
pub fn parse(payload: &[u8]) -> Result<Vp8Descriptor, Vp8Error> {
    let first = *payload.first().ok_or(Vp8Error::Empty)?;
    let extended = first & 0x80 != 0;
    let start_of_partition = first & 0x10 != 0;
    let partition_id = first & 0x07;
    let mut at = 1;
    let (mut picture_id, mut tl0_pic_idx, mut temporal_id) = (None, None, None);
    if extended {
        let x = byte(payload, at)?;
        at += 1;
        let (has_i, has_l, has_t, has_k) =
            (x & 0x80 != 0, x & 0x40 != 0, x & 0x20 != 0, x & 0x10 != 0);
        if has_i {
            let b = byte(payload, at)?;
            at += 1;
            if b & 0x80 != 0 {
                // M bit: a 15-bit picture id.
                let lo = byte(payload, at)?;
                at += 1;
                picture_id = Some((u16::from(b & 0x7f) << 8) | u16::from(lo));
            } else {
                picture_id = Some(u16::from(b & 0x7f));
            }
        }
        if has_l {
            tl0_pic_idx = Some(byte(payload, at)?);
            at += 1;
        }
        if has_t || has_k {
            let b = byte(payload, at)?;
            at += 1;
            if has_t {
                temporal_id = Some(b >> 6);
            }
        }
    }
    if at > payload.len() {
        return Err(Vp8Error::Truncated {
            needed: at,
            len: payload.len(),
        });
    }
    // RFC 6386 §9.1: in the first partition's first byte, bit 0 (P) is 0 for a key frame.
    // A key frame also carries the start code 9d 01 2a at bytes 3..6 of the frame; requiring it
    // keeps a stray byte from being taken for a keyframe (and a wrong switch).
    let frame = &payload[at..];
    let keyframe = start_of_partition
        && partition_id == 0
        && frame.first().is_some_and(|b| b & 0x01 == 0)
        && frame.get(3..6) == Some(&[0x9d, 0x01, 0x2a][..]);
    Ok(Vp8Descriptor {
        start_of_partition,
        partition_id,
        picture_id,
        tl0_pic_idx,
        temporal_id,
        header_len: at,
        keyframe,
    })
}

/// Builds a synthetic VP8 payload: a descriptor with a 15-bit picture id and, when `start`, a
/// frame header that is a key frame when `keyframe`. For tests, benchmarks and load generators.
pub fn synthetic_payload(picture_id: u16, start: bool, keyframe: bool, body_len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(body_len + 13);
    p.push(0x80 | if start { 0x10 } else { 0 });
    p.push(0x80); // I: picture id present
    p.push(0x80 | ((picture_id >> 8) as u8 & 0x7f));
    p.push(picture_id as u8);
    if start {
        // Frame tag: P (bit 0) = 0 for key frame, show_frame set; then the key frame start code.
        p.extend_from_slice(&[if keyframe { 0x10 } else { 0x11 }, 0x02, 0x00]);
        if keyframe {
            p.extend_from_slice(&[0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]);
        }
    }
    p.resize(p.len() + body_len, 0xab);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_start_is_recognised() {
        let d = parse(&synthetic_payload(300, true, true, 50)).expect("valid");
        assert!(d.keyframe && d.starts_frame());
        assert_eq!(d.picture_id, Some(300));
        assert_eq!(d.header_len, 4);
    }

    #[test]
    fn delta_frames_and_continuations_are_not_keyframes() {
        assert!(
            !parse(&synthetic_payload(1, true, false, 50))
                .expect("valid")
                .keyframe
        );
        let cont = parse(&synthetic_payload(1, false, false, 50)).expect("valid");
        assert!(!cont.keyframe && !cont.starts_frame());
    }

    #[test]
    fn short_picture_id_and_all_extensions() {
        // X, S, PID 0 | I L T K | 7-bit pid | tl0 | tid=2
        let p = [0x90, 0xf0, 0x05, 0x07, 0x80, 0x10, 0, 0, 0x9d, 0x01, 0x2a];
        let d = parse(&p).expect("valid");
        assert_eq!(d.picture_id, Some(5));
        assert_eq!(d.tl0_pic_idx, Some(7));
        assert_eq!(d.temporal_id, Some(2));
        assert_eq!(d.header_len, 5);
        assert!(d.keyframe);
    }

    #[test]
    fn truncated_and_empty_are_errors() {
        assert_eq!(parse(&[]), Err(Vp8Error::Empty));
        assert!(matches!(parse(&[0x80]), Err(Vp8Error::Truncated { .. })));
        assert!(matches!(
            parse(&[0x80, 0x80, 0x80]),
            Err(Vp8Error::Truncated { .. })
        ));
        // A keyframe bit without the start code is not a keyframe.
        assert!(!parse(&[0x10, 0x10, 0, 0, 1, 2, 3]).expect("valid").keyframe);
    }

    #[test]
    fn every_short_input_parses_without_panic() {
        for len in 0..8 {
            for seed in 0..=255u8 {
                let p: Vec<u8> = (0..len)
                    .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8 * 7))
                    .collect();
                let _ = parse(&p);
            }
        }
    }
}
