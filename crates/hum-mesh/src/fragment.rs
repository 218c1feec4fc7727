//! Mesh messages over data channels: split into fragments that fit one SCTP message, and put back
//! together.
//!
//! A mesh message may be up to [`MAX_MESSAGE_BYTES`] (a 500 ms chunk at 16 Mbit/s), but WebRTC data
//! channels refuse messages over the negotiated `max-message-size` (64 KiB unless both sides raise
//! it; webrtc-rs stops at 256 KiB). So every mesh message is sent as one or more fragments:
//!
//! `[message id: u32][index: u16][count: u16][bytes]`, big-endian, `bytes` at most
//! [`MAX_FRAGMENT_PAYLOAD`], every fragment but the last exactly that long.
//!
//! Chunks travel on an unordered, partially reliable channel, so fragments may arrive in any order
//! and some never. The [`Reassembler`] is outside input's first stop and is bounded: at most
//! [`MAX_PENDING`] messages in progress (the oldest is dropped for a new one), each at most
//! [`MAX_MESSAGE_BYTES`], and a message not complete within its lifetime is dropped. It never panics;
//! malformed fragments are typed errors. Sans-IO: time is an input. Fuzzed by
//! `fuzz/fuzz_targets/mesh_fragment.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use hum_proto::mesh::MAX_MESSAGE_BYTES;
use thiserror::Error;

use crate::Time;

/// Header bytes in front of every fragment.
pub const HEADER: usize = 8;
/// Payload bytes per fragment: with the header, below the 64 KiB default SCTP message size.
pub const MAX_FRAGMENT_PAYLOAD: usize = 60 * 1024;
/// The most fragments one message may have.
pub const MAX_PARTS: u16 = MAX_MESSAGE_BYTES.div_ceil(MAX_FRAGMENT_PAYLOAD) as u16;
/// Messages being reassembled at once, per link.
pub const MAX_PENDING: usize = 8;

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum FragmentError {
    #[error("fragment of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("fragment carries {0} bytes, more than {MAX_FRAGMENT_PAYLOAD}")]
    TooLong(usize),
    #[error("fragment count {0} is not in 1..={MAX_PARTS}")]
    Count(u16),
    #[error("fragment index {index} is not below its count {count}")]
    Index { index: u16, count: u16 },
    #[error("fragment {index} of {count} has {len} bytes; only the last may be short")]
    Length { index: u16, count: u16, len: usize },
    #[error("message {id} was announced with {was} fragments, now {now}")]
    Mismatch { id: u32, was: u16, now: u16 },
}

/// Split `bytes` (one encoded mesh message) into fragments for message `id`.
pub fn split(id: u32, bytes: &[u8]) -> Vec<Vec<u8>> {
    let count = bytes.len().div_ceil(MAX_FRAGMENT_PAYLOAD).max(1);
    let mut out = Vec::with_capacity(count);
    for index in 0..count {
        let lo = index * MAX_FRAGMENT_PAYLOAD;
        let hi = (lo + MAX_FRAGMENT_PAYLOAD).min(bytes.len());
        let mut f = Vec::with_capacity(HEADER + hi - lo);
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&(index as u16).to_be_bytes());
        f.extend_from_slice(&(count as u16).to_be_bytes());
        f.extend_from_slice(&bytes[lo..hi]);
        out.push(f);
    }
    out
}

#[derive(Debug)]
struct Partial {
    count: u16,
    parts: Vec<Option<Vec<u8>>>,
    have: u16,
    first: Time,
}

/// Puts fragments back together. See the module doc for its bounds.
#[derive(Debug)]
pub struct Reassembler {
    lifetime: Duration,
    pending: BTreeMap<u32, Partial>,
    /// Messages dropped incomplete (expired or evicted), for stats.
    pub dropped: u64,
}

impl Reassembler {
    /// Incomplete messages older than `lifetime` are dropped (the sender's channel gave up on them).
    pub fn new(lifetime: Duration) -> Self {
        Reassembler {
            lifetime,
            pending: BTreeMap::new(),
            dropped: 0,
        }
    }

    /// Messages in progress.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// One fragment in; the whole message out once its last fragment arrived.
    pub fn push(&mut self, now: Time, frag: &[u8]) -> Result<Option<Vec<u8>>, FragmentError> {
        if frag.len() < HEADER {
            return Err(FragmentError::Short(frag.len()));
        }
        let id = u32::from_be_bytes([frag[0], frag[1], frag[2], frag[3]]);
        let index = u16::from_be_bytes([frag[4], frag[5]]);
        let count = u16::from_be_bytes([frag[6], frag[7]]);
        let body = &frag[HEADER..];
        if body.len() > MAX_FRAGMENT_PAYLOAD {
            return Err(FragmentError::TooLong(body.len()));
        }
        if count == 0 || count > MAX_PARTS {
            return Err(FragmentError::Count(count));
        }
        if index >= count {
            return Err(FragmentError::Index { index, count });
        }
        if index + 1 < count && body.len() != MAX_FRAGMENT_PAYLOAD {
            return Err(FragmentError::Length {
                index,
                count,
                len: body.len(),
            });
        }
        if count == 1 {
            return Ok(Some(body.to_vec()));
        }
        self.expire(now);
        if let Some(p) = self.pending.get(&id)
            && p.count != count
        {
            let was = p.count;
            self.pending.remove(&id);
            self.dropped += 1;
            return Err(FragmentError::Mismatch {
                id,
                was,
                now: count,
            });
        }
        if !self.pending.contains_key(&id) && self.pending.len() >= MAX_PENDING {
            // Drop the oldest: under loss the newest messages are the ones still worth finishing.
            let oldest = self
                .pending
                .iter()
                .min_by_key(|(k, p)| (p.first, **k))
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.pending.remove(&k);
                self.dropped += 1;
            }
        }
        let p = self.pending.entry(id).or_insert_with(|| Partial {
            count,
            parts: vec![None; count as usize],
            have: 0,
            first: now,
        });
        let slot = &mut p.parts[index as usize];
        if slot.is_none() {
            *slot = Some(body.to_vec());
            p.have += 1;
        }
        if p.have < p.count {
            return Ok(None);
        }
        let p = self.pending.remove(&id).expect("present: just filled");
        let mut out = Vec::with_capacity(p.parts.iter().flatten().map(Vec::len).sum());
        for part in p.parts.into_iter().flatten() {
            out.extend_from_slice(&part);
        }
        Ok(Some(out))
    }

    fn expire(&mut self, now: Time) {
        let life = self.lifetime;
        let before = self.pending.len();
        self.pending.retain(|_, p| now.since(p.first) <= life);
        self.dropped += (before - self.pending.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn round_trips_any_order_and_ignores_duplicates() {
        let m = msg(3 * MAX_FRAGMENT_PAYLOAD + 17);
        let mut f = split(9, &m);
        assert_eq!(f.len(), 4);
        f.reverse();
        let mut r = Reassembler::new(Duration::from_secs(2));
        let t = Time::from_millis(1);
        assert_eq!(r.push(t, &f[0]), Ok(None));
        assert_eq!(r.push(t, &f[0]), Ok(None));
        assert_eq!(r.push(t, &f[1]), Ok(None));
        assert_eq!(r.push(t, &f[2]), Ok(None));
        assert_eq!(r.push(t, &f[3]), Ok(Some(m)));
        assert_eq!(r.pending(), 0);
        // Small messages are one fragment; an empty one too.
        assert_eq!(split(1, b"hi").len(), 1);
        assert_eq!(r.push(t, &split(2, b"").remove(0)), Ok(Some(vec![])));
    }

    #[test]
    fn bounded_expired_and_malformed() {
        let mut r = Reassembler::new(Duration::from_secs(2));
        let t = Time::from_millis(1);
        for id in 0..(MAX_PENDING as u32 + 3) {
            let f = split(id, &msg(2 * MAX_FRAGMENT_PAYLOAD));
            assert_eq!(r.push(t, &f[0]), Ok(None));
        }
        assert_eq!(r.pending(), MAX_PENDING);
        assert_eq!(r.dropped, 3);
        // Two seconds later everything in progress is gone.
        let f = split(100, &msg(2 * MAX_FRAGMENT_PAYLOAD));
        assert_eq!(r.push(t + Duration::from_millis(2001), &f[0]), Ok(None));
        assert_eq!(r.pending(), 1);
        assert_eq!(r.dropped, 3 + MAX_PENDING as u64);

        assert_eq!(r.push(t, &[0; 7]), Err(FragmentError::Short(7)));
        let mut bad = f[0].clone();
        bad[6..8].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(r.push(t, &bad), Err(FragmentError::Count(0)));
        bad[6..8].copy_from_slice(&(MAX_PARTS + 1).to_be_bytes());
        assert_eq!(r.push(t, &bad), Err(FragmentError::Count(MAX_PARTS + 1)));
        bad[6..8].copy_from_slice(&2u16.to_be_bytes());
        bad[4..6].copy_from_slice(&2u16.to_be_bytes());
        assert_eq!(
            r.push(t, &bad),
            Err(FragmentError::Index { index: 2, count: 2 })
        );
        let short = split(5, &msg(MAX_FRAGMENT_PAYLOAD + 1))[0][..100].to_vec();
        assert!(matches!(
            r.push(t, &short),
            Err(FragmentError::Length { .. })
        ));
        let mut three = split(100, &msg(3 * MAX_FRAGMENT_PAYLOAD))[1].clone();
        three[6..8].copy_from_slice(&3u16.to_be_bytes());
        assert_eq!(
            r.push(t, &three),
            Err(FragmentError::Mismatch {
                id: 100,
                was: 2,
                now: 3
            })
        );
        // The largest message fits exactly.
        let big = msg(MAX_MESSAGE_BYTES);
        let parts = split(7, &big);
        assert_eq!(parts.len(), MAX_PARTS as usize);
        let mut r = Reassembler::new(Duration::from_secs(2));
        let mut done = None;
        for p in &parts {
            done = r.push(t, p).expect("valid");
        }
        assert_eq!(done, Some(big));
    }
}
