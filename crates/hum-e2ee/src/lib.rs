//! End-to-end encryption of a room's media with SFrame (RFC 9605, the `sframe` crate).
//!
//! DTLS-SRTP protects media hop by hop: on the SFU it is decrypted. SFrame encrypts each
//! encoded frame (an Opus packet, a VP8 frame) *before* it is packetised and decrypts it after
//! the frame is reassembled, so the SFU, the relay and a TURN server forward bytes they cannot
//! read. This crate is sans-IO: no sockets, no clock of its own, no async.
//!
//! - [`frame`]: the transform between encoder and packetiser ([`FrameTransform`]), and the
//!   per-sender key ring that implements it with SFrame ([`KeyRing`]). What stays in clear for
//!   the SFU (the VP8 payload header) is decided in [`frame::clear_prefix`].
//! - [`seal`]: a sender key sealed for one member: X25519 between the two accounts' identity
//!   keys, AES-GCM, signed with the sender's Ed25519 key. The relay only knows public keys.
//! - [`agent`]: who gets which key when: our key to every member, a fresh key (a new epoch)
//!   to those still present when someone leaves, switched to after [`agent::ROTATION_DELAY`].
//! - [`safety_number`]: what members compare to know nobody is in the middle.
//!
//! docs/e2ee.md has the design, the threat model and what was measured.

pub mod agent;
#[doc(hidden)]
pub mod fixture;
pub mod frame;
pub mod replay;
pub mod seal;

pub use agent::{KeyAgent, Outgoing};
pub use frame::{FrameTransform, KeyRing, MediaKind};
pub use seal::{LocalKeys, SealedKey};

use hum_proto::UserId;

/// SFrame's mandatory suite (RFC 9605 4.5): AES-GCM 128 with HKDF-SHA256, 16-byte tag.
pub const SUITE: sframe::CipherSuite = sframe::CipherSuite::AesGcm128Sha256;

/// The largest frame we encrypt or accept (a large VP8 keyframe is well under this).
pub const MAX_FRAME: usize = 1 << 20;

/// Why a frame or a key did not go through. Never a panic: every input from outside lands here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum E2eeError {
    #[error(
        "no end-to-end key from {from} for key id {key_id} (not received yet, or rotated away)"
    )]
    NoKey { from: UserId, key_id: u64 },
    #[error("a frame from {0} does not decrypt: wrong key, altered, or not encrypted")]
    Decrypt(UserId),
    #[error("a frame from {from} is not an SFrame frame: {reason}")]
    Malformed { from: UserId, reason: String },
    #[error("a frame of {0} bytes is larger than the {MAX_FRAME} bytes allowed")]
    TooLarge(usize),
    #[error("encrypting a frame failed: {0}")]
    Encrypt(String),
    #[error("an end-to-end key from {from} was refused: {reason}")]
    BadKey { from: UserId, reason: &'static str },
    /// RFC 9605 9.3: a frame whose counter was already accepted under this key (a copy), or that
    /// is older than the anti-replay window ([`replay::REPLAY_WINDOW`]).
    #[error(
        "a frame from {from} (key id {key_id}, counter {counter}) was refused as a replay{}",
        if *too_old { ": older than the anti-replay window" } else { "" }
    )]
    Replayed {
        from: UserId,
        key_id: u64,
        counter: u64,
        too_old: bool,
    },
}

/// A sender's media key for one epoch: 32 random bytes. The SFrame key id of its frames is the
/// epoch ([`frame::key_id`]).
#[derive(Clone, PartialEq, Eq)]
pub struct SenderKey {
    pub epoch: u32,
    pub secret: [u8; 32],
}

impl std::fmt::Debug for SenderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("SenderKey")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl SenderKey {
    pub fn random(epoch: u32, rng: &mut (impl rand::RngCore + rand::CryptoRng)) -> Self {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        Self { epoch, secret }
    }
}

/// A number two members read to each other (or compare on screen) to know that the keys they
/// exchange are the ones of the people they think: 60 decimal digits in 12 groups of 5, the
/// same on both sides (the two public keys in a fixed order, hashed). Same idea as Signal's
/// safety numbers. A relay that swapped a member's key would change it.
pub fn safety_number(a: &UserId, b: &UserId) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut h = blake3::Hasher::new_derive_key("hum e2ee safety number v1");
    h.update(&lo.0);
    h.update(&hi.0);
    let mut out = [0u8; 60];
    h.finalize_xof().fill(&mut out);
    let groups: Vec<String> = out
        .chunks(5)
        .map(|c| {
            let v = c.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", v % 100_000)
        })
        .collect();
    groups.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safety_numbers_are_symmetric_and_tell_keys_apart() {
        let (a, b, c) = (UserId([1; 32]), UserId([2; 32]), UserId([3; 32]));
        let ab = safety_number(&a, &b);
        assert_eq!(ab, safety_number(&b, &a));
        assert_ne!(ab, safety_number(&a, &c));
        assert_eq!(ab.len(), 12 * 5 + 11);
        assert!(
            ab.split(' ')
                .all(|g| g.len() == 5 && g.bytes().all(|d| d.is_ascii_digit()))
        );
    }
}
