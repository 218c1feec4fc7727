//! The frame transform: SFrame on each encoded frame, with per-sender keys.
//!
//! Where it sits: after the encoder and before the RTP packetiser on the way out; after the
//! depacketiser (the reassembled frame) and before the decoder on the way in. For Opus a frame
//! is one RTP payload; for VP8 it is the whole frame the assembler put together.
//!
//! Wire layout of a transformed frame: `clear prefix ‖ SFrame header ‖ ciphertext ‖ tag`. The
//! clear prefix is given to SFrame as metadata, so it is authenticated: changing one bit of it
//! breaks decryption.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hum_proto::UserId;
use sframe::frame::{EncryptedFrameView, MediaFrameView, MonotonicCounter};
use sframe::key::{DecryptionKey, EncryptionKey};

use crate::replay::{Replay, ReplayWindow};
use crate::{E2eeError, MAX_FRAME, SUITE, SenderKey};

/// What a frame is, for how much of it stays in clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// Opus: encrypted whole. The SFU reads the speaker's level from the RTP header extension
    /// (RFC 6464), which is outside the frame.
    Audio,
    /// VP8: the payload header stays in clear (see [`clear_prefix`]).
    Vp8,
}

/// Bytes at the start of `frame` left unencrypted for the SFU (authenticated all the same).
///
/// VP8 (RFC 6386 9.1, the choice Jitsi and LiveKit make with insertable streams): the 3-byte
/// frame tag (bit 0 of the first byte is 0 on a keyframe, which is how the SFU finds where it
/// may switch layers; also version, show-frame and partition size), plus on a keyframe the
/// 7 bytes of start code and dimensions: 10 bytes of a keyframe, 3 of a delta frame. The RTP
/// VP8 payload descriptor (picture id, TL0PICIDX, which the SFU rewrites) is added by the
/// packetiser after this transform, so it is outside SFrame altogether.
pub fn clear_prefix(kind: MediaKind, frame: &[u8]) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Vp8 => match frame.first() {
            Some(b) if b & 1 == 0 => 10.min(frame.len()),
            Some(_) => 3.min(frame.len()),
            None => 0,
        },
    }
}

/// The SFrame key id (KID) of a sender's key of `epoch`. Receivers look keys up by sender (the
/// SFU names each forwarded track after its owner), so the KID only tells one sender's epochs
/// apart: old frames from new ones around a rotation.
pub fn key_id(epoch: u32) -> u64 {
    u64::from(epoch)
}

/// The transform between encoder and packetiser (and depacketiser and decoder). The media
/// engine holds it as a trait object; [`KeyRing`] is the SFrame implementation.
pub trait FrameTransform: Send + Sync + std::fmt::Debug {
    /// Our encoded frame, ready for the packetiser.
    fn encrypt(&self, kind: MediaKind, frame: &[u8]) -> Result<Vec<u8>, E2eeError>;
    /// A reassembled frame from `from` (outside bytes), ready for the decoder.
    fn decrypt(&self, from: &UserId, kind: MediaKind, data: &[u8]) -> Result<Vec<u8>, E2eeError>;
}

struct Sending {
    epoch: u32,
    key: EncryptionKey,
    /// SFrame's counter (CTR) is the nonce: one per key, never reused (a fresh counter goes
    /// with every fresh key).
    counter: MonotonicCounter,
}

/// Receive keys kept per sender: the newest two by arrival (frames still in flight from the
/// epoch before a rotation decrypt).
pub const EPOCHS_KEPT: usize = 2;

/// One sender's key of one epoch, with the counters already accepted under it.
struct Receiving {
    epoch: u32,
    /// To tell a re-sent key from a new one of the same epoch.
    fingerprint: [u8; 32],
    key: DecryptionKey,
    replay: ReplayWindow,
}

/// Per-sender SFrame keys of one room: ours to encrypt, the other members' to decrypt.
pub struct KeyRing {
    sending: Mutex<Sending>,
    /// Per sender, its keys in arrival order, at most [`EPOCHS_KEPT`].
    receiving: Mutex<BTreeMap<UserId, Vec<Receiving>>>,
    /// Frames [`FrameTransform::decrypt`] refused (no key yet, wrong key, altered, plaintext,
    /// replayed).
    refused: AtomicU64,
    /// Frames [`FrameTransform::decrypt`] opened.
    opened: AtomicU64,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("sending_epoch", &self.sending_epoch())
            .field("senders", &self.senders())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl KeyRing {
    pub fn new(ours: &SenderKey) -> Result<Self, E2eeError> {
        Ok(Self {
            sending: Mutex::new(Self::sending(ours)?),
            receiving: Mutex::new(BTreeMap::new()),
            refused: AtomicU64::new(0),
            opened: AtomicU64::new(0),
        })
    }

    fn sending(k: &SenderKey) -> Result<Sending, E2eeError> {
        Ok(Sending {
            epoch: k.epoch,
            key: EncryptionKey::derive_from(SUITE, key_id(k.epoch), k.secret)
                .map_err(|e| E2eeError::Encrypt(e.to_string()))?,
            counter: MonotonicCounter::default(),
        })
    }

    /// Encrypt with `k` from now on (a rotation).
    pub fn set_sending(&self, k: &SenderKey) -> Result<(), E2eeError> {
        let s = Self::sending(k)?;
        *lock(&self.sending) = s;
        Ok(())
    }

    pub fn sending_epoch(&self) -> u32 {
        lock(&self.sending).epoch
    }

    /// `from`'s key of `k.epoch`.
    pub fn add_receiving(&self, from: UserId, k: &SenderKey) -> Result<(), E2eeError> {
        let key = DecryptionKey::derive_from(SUITE, key_id(k.epoch), k.secret).map_err(|_| {
            E2eeError::BadKey {
                from,
                reason: "the key does not derive",
            }
        })?;
        let mut r = lock(&self.receiving);
        let keys = r.entry(from).or_default();
        let fingerprint = *blake3::hash(&k.secret).as_bytes();
        let replay = match keys.iter().position(|x| x.epoch == k.epoch) {
            // The same key again (re-sent after a reconnect): the counters it accepted stay
            // accepted, or a replay of its old frames would open again.
            Some(i) if keys[i].fingerprint == fingerprint => keys.remove(i).replay,
            Some(i) => {
                keys.remove(i);
                ReplayWindow::default()
            }
            None => ReplayWindow::default(),
        };
        keys.push(Receiving {
            epoch: k.epoch,
            fingerprint,
            key,
            replay,
        });
        while keys.len() > EPOCHS_KEPT {
            keys.remove(0);
        }
        Ok(())
    }

    /// Forget every key of `user` (they left): nothing of theirs decrypts any more.
    pub fn remove(&self, user: &UserId) {
        lock(&self.receiving).remove(user);
    }

    /// The senders we hold keys of.
    pub fn senders(&self) -> Vec<UserId> {
        lock(&self.receiving).keys().copied().collect()
    }

    /// How many received frames did not decrypt so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// How many received frames decrypted so far.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// The epochs of `user` we can decrypt.
    pub fn epochs_of(&self, user: &UserId) -> Vec<u32> {
        lock(&self.receiving)
            .get(user)
            .map(|v| v.iter().map(|x| x.epoch).collect())
            .unwrap_or_default()
    }
}

impl FrameTransform for KeyRing {
    fn encrypt(&self, kind: MediaKind, frame: &[u8]) -> Result<Vec<u8>, E2eeError> {
        if frame.len() > MAX_FRAME {
            return Err(E2eeError::TooLarge(frame.len()));
        }
        let n = clear_prefix(kind, frame);
        let (clear, secret) = frame.split_at(n);
        let mut s = lock(&self.sending);
        let Sending { key, counter, .. } = &mut *s;
        let enc = MediaFrameView::try_with_meta_data(counter, &secret, &clear)
            .and_then(|m| m.encrypt(key))
            .map_err(|e| E2eeError::Encrypt(e.to_string()))?;
        let body = enc.sframe_cipher_text();
        let mut out = Vec::with_capacity(n + body.len());
        out.extend_from_slice(clear);
        out.extend_from_slice(body);
        Ok(out)
    }

    fn decrypt(&self, from: &UserId, kind: MediaKind, data: &[u8]) -> Result<Vec<u8>, E2eeError> {
        let r = self.open(from, kind, data);
        let n = if r.is_ok() {
            &self.opened
        } else {
            &self.refused
        };
        n.fetch_add(1, Ordering::Relaxed);
        r
    }
}

impl KeyRing {
    fn open(&self, from: &UserId, kind: MediaKind, data: &[u8]) -> Result<Vec<u8>, E2eeError> {
        if data.len() > MAX_FRAME {
            return Err(E2eeError::TooLarge(data.len()));
        }
        let n = clear_prefix(kind, data);
        let (clear, sealed) = data.split_at(n);
        let enc = EncryptedFrameView::try_with_meta_data(&sealed, &clear).map_err(|e| {
            E2eeError::Malformed {
                from: *from,
                reason: e.to_string(),
            }
        })?;
        let kid = enc.header().key_id();
        let counter = enc.header().counter();
        let mut r = lock(&self.receiving);
        let rx = r
            .get_mut(from)
            .and_then(|keys| keys.iter_mut().find(|x| key_id(x.epoch) == kid))
            .ok_or(E2eeError::NoKey {
                from: *from,
                key_id: kid,
            })?;
        // Checked before, marked after authenticating (crate::replay).
        rx.replay
            .check(counter)
            .map_err(|why| E2eeError::Replayed {
                from: *from,
                key_id: kid,
                counter,
                too_old: why == Replay::TooOld,
            })?;
        let media = enc
            .decrypt(&rx.key)
            .map_err(|_| E2eeError::Decrypt(*from))?;
        rx.replay.accept(counter);
        let mut out = Vec::with_capacity(n + media.payload().len());
        out.extend_from_slice(clear);
        out.extend_from_slice(media.payload());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(epoch: u32, b: u8) -> SenderKey {
        SenderKey {
            epoch,
            secret: [b; 32],
        }
    }

    fn ring(k: &SenderKey) -> KeyRing {
        KeyRing::new(k).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ok<T>(r: Result<T, E2eeError>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    const A: UserId = UserId([0xa1; 32]);
    const B: UserId = UserId([0xb2; 32]);

    #[test]
    fn frames_round_trip_and_wrong_keys_fail_cleanly() {
        let alice = ring(&key(1, 7));
        let bob = ring(&key(1, 9));
        let eve = ring(&key(1, 3));
        ok(bob.add_receiving(A, &key(1, 7)));
        ok(eve.add_receiving(A, &key(1, 8)));
        let opus: Vec<u8> = (0..80u8).map(|i| i.wrapping_mul(37)).collect();
        let ct = ok(alice.encrypt(MediaKind::Audio, &opus));
        assert!(
            !ct.windows(16).any(|w| opus.windows(16).any(|o| o == w)),
            "plaintext visible in the ciphertext"
        );
        // 1 header byte (KID and CTR < 8) + 16-byte tag.
        assert_eq!(ct.len(), opus.len() + 17);
        assert_eq!(bob.decrypt(&A, MediaKind::Audio, &ct), Ok(opus.clone()));
        // The wrong key: a clear error, no panic.
        assert_eq!(
            eve.decrypt(&A, MediaKind::Audio, &ct),
            Err(E2eeError::Decrypt(A))
        );
        // Plaintext is refused, not played.
        assert!(bob.decrypt(&A, MediaKind::Audio, &opus).is_err());
        // Nobody else's key.
        assert_eq!(
            bob.decrypt(&B, MediaKind::Audio, &ct),
            Err(E2eeError::NoKey { from: B, key_id: 1 })
        );
        // Empty and one-byte input.
        assert!(bob.decrypt(&A, MediaKind::Audio, &[]).is_err());
        assert!(bob.decrypt(&A, MediaKind::Vp8, &[0]).is_err());
        // Counters advance: the same frame twice gives two ciphertexts.
        assert_ne!(ok(alice.encrypt(MediaKind::Audio, &opus)), ct);
    }

    #[test]
    fn a_tampered_frame_is_rejected() {
        let alice = ring(&key(2, 7));
        let bob = ring(&key(1, 9));
        ok(bob.add_receiving(A, &key(2, 7)));
        let ct = ok(alice.encrypt(MediaKind::Audio, b"twenty ms of opus, say"));
        for i in 0..ct.len() {
            let mut t = ct.clone();
            t[i] ^= 0x10;
            assert!(
                bob.decrypt(&A, MediaKind::Audio, &t).is_err(),
                "a flipped bit at {i} went through"
            );
        }
        let mut short = ct.clone();
        short.pop();
        assert!(bob.decrypt(&A, MediaKind::Audio, &short).is_err());
        let mut long = ct.clone();
        long.push(0);
        assert!(bob.decrypt(&A, MediaKind::Audio, &long).is_err());
        assert!(bob.decrypt(&A, MediaKind::Audio, &ct).is_ok());
        assert_eq!(bob.refused(), ct.len() as u64 + 2);
    }

    #[test]
    fn vp8_payload_header_stays_clear_and_authenticated() {
        let alice = ring(&key(4, 7));
        let bob = ring(&key(1, 9));
        ok(bob.add_receiving(A, &key(4, 7)));
        // A keyframe: P bit 0, start code 9d 01 2a, 640x360.
        let mut kf = vec![0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01];
        kf.extend((0..500).map(|i| i as u8));
        let ct = ok(alice.encrypt(MediaKind::Vp8, &kf));
        assert_eq!(&ct[..10], &kf[..10], "the SFU reads the keyframe header");
        assert_ne!(&ct[11..21], &kf[10..20]);
        // The clear header is authenticated (tried first: after the real frame opened, its
        // counter is a replay).
        let mut altered = ct.clone();
        altered[7] ^= 1;
        assert_eq!(
            bob.decrypt(&A, MediaKind::Vp8, &altered),
            Err(E2eeError::Decrypt(A))
        );
        assert_eq!(bob.decrypt(&A, MediaKind::Vp8, &ct), Ok(kf.clone()));
        // A delta frame keeps 3 bytes.
        let delta = vec![0x31, 0x10, 0x00, 1, 2, 3, 4, 5];
        let ct = ok(alice.encrypt(MediaKind::Vp8, &delta));
        assert_eq!(&ct[..3], &delta[..3]);
        assert_eq!(bob.decrypt(&A, MediaKind::Vp8, &ct), Ok(delta));
    }

    #[test]
    fn the_sfu_still_finds_keyframes_in_encrypted_vp8() {
        // What hum-sfu parses: the RTP VP8 payload descriptor the packetiser adds, then the
        // frame's first bytes. Encrypt a keyframe and a delta frame, packetise the first packet
        // as the packetiser does (descriptor with picture id) and let the SFU's parser look.
        let alice = ring(&key(1, 7));
        for (frame, is_key) in [
            (
                vec![
                    0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01, 9, 9, 9,
                ],
                true,
            ),
            (vec![0x31, 0x10, 0x00, 7, 7, 7, 7], false),
        ] {
            let ct = ok(alice.encrypt(MediaKind::Vp8, &frame));
            // X=1, S=1, PID 0; I=1 with a 15-bit picture id.
            let mut pkt = vec![0x90, 0x80, 0x80, 0x05];
            pkt.extend_from_slice(&ct);
            let d = hum_sfu::packet::vp8::parse(&pkt).unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(d.keyframe, is_key);
        }
    }

    #[test]
    fn old_epochs_age_out_and_removed_senders_decrypt_nothing() {
        let alice = ring(&key(1, 7));
        let bob = ring(&key(1, 9));
        ok(bob.add_receiving(A, &key(1, 7)));
        let e1 = ok(alice.encrypt(MediaKind::Audio, b"one"));
        for e in 2..=3u32 {
            ok(alice.set_sending(&key(e, 7 + e as u8)));
            ok(bob.add_receiving(A, &key(e, 7 + e as u8)));
        }
        assert_eq!(bob.epochs_of(&A), vec![2, 3]);
        assert_eq!(
            bob.decrypt(&A, MediaKind::Audio, &e1),
            Err(E2eeError::NoKey { from: A, key_id: 1 })
        );
        let e3 = ok(alice.encrypt(MediaKind::Audio, b"three"));
        assert_eq!(
            bob.decrypt(&A, MediaKind::Audio, &e3),
            Ok(b"three".to_vec())
        );
        bob.remove(&A);
        assert!(bob.decrypt(&A, MediaKind::Audio, &e3).is_err());
        assert!(bob.senders().is_empty());
    }

    #[test]
    fn replayed_frames_are_refused_per_sender_and_key() {
        let alice = ring(&key(1, 7));
        let bob = ring(&key(1, 8));
        let carol = ring(&key(1, 9));
        ok(carol.add_receiving(A, &key(1, 7)));
        ok(carol.add_receiving(B, &key(1, 8)));
        let f1 = ok(alice.encrypt(MediaKind::Audio, b"one"));
        let f2 = ok(alice.encrypt(MediaKind::Audio, b"two"));
        // Bob's first frame has the same key id and counter as Alice's: another sender, its
        // own window.
        let g1 = ok(bob.encrypt(MediaKind::Audio, b"bob"));
        assert_eq!(
            carol.decrypt(&A, MediaKind::Audio, &f2),
            Ok(b"two".to_vec())
        );
        // Out of order inside the window: fine, once.
        assert_eq!(
            carol.decrypt(&A, MediaKind::Audio, &f1),
            Ok(b"one".to_vec())
        );
        assert_eq!(
            carol.decrypt(&B, MediaKind::Audio, &g1),
            Ok(b"bob".to_vec())
        );
        assert_eq!(
            carol.decrypt(&A, MediaKind::Audio, &f1),
            Err(E2eeError::Replayed {
                from: A,
                key_id: 1,
                counter: 0,
                too_old: false
            })
        );
        assert!(matches!(
            carol.decrypt(&A, MediaKind::Audio, &f2),
            Err(E2eeError::Replayed { counter: 1, .. })
        ));
        // A forged frame with a fresh counter does not authenticate and burns nothing: the
        // real frame with that counter still opens.
        let f3 = ok(alice.encrypt(MediaKind::Audio, b"three"));
        let mut forged = f3.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(
            carol.decrypt(&A, MediaKind::Audio, &forged),
            Err(E2eeError::Decrypt(A))
        );
        assert_eq!(
            carol.decrypt(&A, MediaKind::Audio, &f3),
            Ok(b"three".to_vec())
        );
        // The same key handed again (a reconnect) keeps the window; a new epoch has its own.
        ok(carol.add_receiving(A, &key(1, 7)));
        assert!(carol.decrypt(&A, MediaKind::Audio, &f3).is_err());
        ok(alice.set_sending(&key(2, 17)));
        ok(carol.add_receiving(A, &key(2, 17)));
        let e2 = ok(alice.encrypt(MediaKind::Audio, b"epoch two"));
        assert_eq!(
            carol.decrypt(&A, MediaKind::Audio, &e2),
            Ok(b"epoch two".to_vec())
        );
        assert!(carol.decrypt(&A, MediaKind::Audio, &e2).is_err());
        // Far behind the window: refused as too old, not decrypted.
        let old = ok(alice.encrypt(MediaKind::Audio, b"old"));
        for _ in 0..crate::replay::REPLAY_WINDOW {
            let f = ok(alice.encrypt(MediaKind::Audio, b"x"));
            ok(carol.decrypt(&A, MediaKind::Audio, &f));
        }
        assert!(matches!(
            carol.decrypt(&A, MediaKind::Audio, &old),
            Err(E2eeError::Replayed { too_old: true, .. })
        ));
        assert_eq!(carol.refused(), 6);
        assert_eq!(carol.opened(), 5 + crate::replay::REPLAY_WINDOW);
    }

    #[test]
    fn oversized_frames_are_refused() {
        let bob = ring(&key(1, 9));
        let big = vec![0u8; MAX_FRAME + 1];
        assert_eq!(
            bob.decrypt(&A, MediaKind::Vp8, &big),
            Err(E2eeError::TooLarge(MAX_FRAME + 1))
        );
        assert_eq!(
            bob.encrypt(MediaKind::Vp8, &big),
            Err(E2eeError::TooLarge(MAX_FRAME + 1))
        );
    }
}
