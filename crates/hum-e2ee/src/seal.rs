//! A sender key sealed for one member, carried by the relay as an opaque signal.
//!
//! - Pairwise secret: X25519 between our identity key and theirs (both Ed25519 keys, taken in
//!   Montgomery form, as age and libsodium's `crypto_sign_ed25519_*_to_curve25519` do). The
//!   relay knows only public keys, so it can neither open nor forge a sealed key.
//! - Wrapping key: HKDF (SFrame's own key derivation) over the pairwise secret bound to sender,
//!   recipient, channel, epoch and a fresh 32-byte salt; the 32-byte sender key is encrypted with
//!   it (AES-GCM, through the `sframe` crate). A fresh salt per message means a fresh wrapping key,
//!   so the fixed nonce (counter 0) is never reused under one key.
//! - Signature: Ed25519 by the sender over all of it, so a member can prove to itself who sent
//!   the key even if the pairwise secret of another pair leaked.

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use hum_proto::{ChannelId, Nonce, SealedMediaKey, Signature, UserId};
use sframe::frame::{EncryptedFrameView, MediaFrameView, MonotonicCounter};
use sframe::key::{DecryptionKey, EncryptionKey};

use crate::{E2eeError, SUITE, SenderKey};

/// Bytes of a sealed key on the wire: 1 SFrame header byte (KID 0, CTR 0) + 32 + 16-byte tag.
pub const SEALED_LEN: usize = SealedMediaKey::LEN;

/// Our identity key, for agreeing pairwise secrets and signing sealed keys. Built from the
/// account's Ed25519 signing key (in the client: `Identity::e2ee_keys`).
#[derive(Clone)]
pub struct LocalKeys {
    key: SigningKey,
}

impl std::fmt::Debug for LocalKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeys")
            .field("user", &self.user_id())
            .finish_non_exhaustive()
    }
}

impl LocalKeys {
    pub fn new(key: SigningKey) -> Self {
        Self { key }
    }

    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self::new(SigningKey::from_bytes(&seed))
    }

    pub fn user_id(&self) -> UserId {
        UserId(self.key.verifying_key().to_bytes())
    }

    /// X25519 of our key with `other`'s: the same 32 bytes on both sides. `None` if `other`
    /// is not a valid Ed25519 point, or a small-order one (an all-zero secret).
    pub fn agree(&self, other: &UserId) -> Option<[u8; 32]> {
        let theirs = VerifyingKey::from_bytes(&other.0).ok()?;
        let dh = theirs
            .to_montgomery()
            .mul_clamped(self.key.to_scalar_bytes())
            .to_bytes();
        (dh != [0u8; 32]).then_some(dh)
    }
}

/// A sender key sealed for one recipient, as carried in the `e2ee_key` signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedKey {
    pub epoch: u32,
    /// Fresh random bytes per message.
    pub salt: Nonce,
    pub sealed: SealedMediaKey,
    /// The sender's Ed25519 signature over [`signed_bytes`].
    pub signature: Signature,
}

fn wrapping_material(
    dh: &[u8; 32],
    from: &UserId,
    to: &UserId,
    channel: ChannelId,
    epoch: u32,
    salt: &Nonce,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + 32 * 4 + 12);
    m.extend_from_slice(b"hum-e2ee-key-v1\0");
    m.extend_from_slice(dh);
    m.extend_from_slice(&from.0);
    m.extend_from_slice(&to.0);
    m.extend_from_slice(&channel.0.to_be_bytes());
    m.extend_from_slice(&epoch.to_be_bytes());
    m.extend_from_slice(&salt.0);
    m
}

/// What the sender signs: everything about the sealed key, and whom it is for.
fn signed_bytes(
    from: &UserId,
    to: &UserId,
    channel: ChannelId,
    epoch: u32,
    salt: &Nonce,
    sealed: &[u8],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(20 + 32 * 3 + 12 + sealed.len());
    m.extend_from_slice(b"hum-e2ee-key-sig-v1\0");
    m.extend_from_slice(&from.0);
    m.extend_from_slice(&to.0);
    m.extend_from_slice(&channel.0.to_be_bytes());
    m.extend_from_slice(&epoch.to_be_bytes());
    m.extend_from_slice(&salt.0);
    m.extend_from_slice(sealed);
    m
}

impl LocalKeys {
    /// Seals `key` for `to` in `channel`.
    pub fn seal(
        &self,
        to: &UserId,
        channel: ChannelId,
        key: &SenderKey,
        salt: Nonce,
    ) -> Result<SealedKey, E2eeError> {
        let me = self.user_id();
        let dh = self.agree(to).ok_or(E2eeError::BadKey {
            from: *to,
            reason: "not a usable identity key",
        })?;
        let wrap = EncryptionKey::derive_from(
            SUITE,
            0u64,
            wrapping_material(&dh, &me, to, channel, key.epoch, &salt),
        )
        .map_err(|e| E2eeError::Encrypt(e.to_string()))?;
        let mut counter = MonotonicCounter::default();
        let enc = MediaFrameView::try_new(&mut counter, &key.secret)
            .and_then(|m| m.encrypt(&wrap))
            .map_err(|e| E2eeError::Encrypt(e.to_string()))?;
        let sealed: [u8; SEALED_LEN] = enc
            .sframe_cipher_text()
            .try_into()
            .map_err(|_| E2eeError::Encrypt("unexpected sealed key length".into()))?;
        let sig = self
            .key
            .sign(&signed_bytes(&me, to, channel, key.epoch, &salt, &sealed));
        Ok(SealedKey {
            epoch: key.epoch,
            salt,
            sealed: SealedMediaKey(sealed),
            signature: Signature(sig.to_bytes()),
        })
    }

    /// Opens a key `from` sealed for us in `channel`. Checks the signature first, then the
    /// AEAD tag; either failing is [`E2eeError::BadKey`].
    pub fn open(
        &self,
        from: &UserId,
        channel: ChannelId,
        s: &SealedKey,
    ) -> Result<SenderKey, E2eeError> {
        let bad = |reason| E2eeError::BadKey {
            from: *from,
            reason,
        };
        let me = self.user_id();
        let vk = VerifyingKey::from_bytes(&from.0).map_err(|_| bad("not an identity key"))?;
        let sig = ed25519_dalek::Signature::from_bytes(&s.signature.0);
        vk.verify(
            &signed_bytes(from, &me, channel, s.epoch, &s.salt, &s.sealed.0),
            &sig,
        )
        .map_err(|_| bad("the signature does not verify"))?;
        let dh = self.agree(from).ok_or(bad("not a usable identity key"))?;
        let unwrap = DecryptionKey::derive_from(
            SUITE,
            0u64,
            wrapping_material(&dh, from, &me, channel, s.epoch, &s.salt),
        )
        .map_err(|_| bad("the wrapping key does not derive"))?;
        let media = EncryptedFrameView::try_new(&s.sealed.0)
            .and_then(|e| e.decrypt(&unwrap))
            .map_err(|_| bad("it does not open (not sealed for us)"))?;
        let secret: [u8; 32] = media
            .payload()
            .try_into()
            .map_err(|_| bad("the key has the wrong length"))?;
        Ok(SenderKey {
            epoch: s.epoch,
            secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok<T>(r: Result<T, E2eeError>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    const CH: ChannelId = ChannelId(5);

    #[test]
    fn agreement_is_symmetric() {
        let (a, b) = (LocalKeys::from_seed([1; 32]), LocalKeys::from_seed([2; 32]));
        let ab = a.agree(&b.user_id());
        assert!(ab.is_some());
        assert_eq!(ab, b.agree(&a.user_id()));
        assert_ne!(ab, LocalKeys::from_seed([3; 32]).agree(&a.user_id()));
        // Not a point / the identity point: no secret.
        let not_a_point = (0..=255u8)
            .map(|b| [b; 32])
            .find(|k| VerifyingKey::from_bytes(k).is_err())
            .unwrap_or_else(|| panic!("every pattern decoded"));
        assert_eq!(a.agree(&UserId(not_a_point)), None);
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(a.agree(&UserId(identity)), None);
    }

    #[test]
    fn sealed_keys_open_only_for_their_recipient() {
        let (alice, bob, eve) = (
            LocalKeys::from_seed([1; 32]),
            LocalKeys::from_seed([2; 32]),
            LocalKeys::from_seed([3; 32]),
        );
        let (a, b) = (alice.user_id(), bob.user_id());
        let k = SenderKey {
            epoch: 3,
            secret: [42; 32],
        };
        let sealed = ok(alice.seal(&b, CH, &k, Nonce([5; 32])));
        assert!(!sealed.sealed.0.windows(32).any(|w| w == k.secret));
        assert_eq!(bob.open(&a, CH, &sealed), Ok(k.clone()));
        // Eve (another member) cannot open it.
        assert!(eve.open(&a, CH, &sealed).is_err());
        // Claimed to come from someone else (the relay relabelling it): refused.
        assert!(bob.open(&eve.user_id(), CH, &sealed).is_err());
        // Replayed into another channel, or as another epoch: refused.
        assert!(bob.open(&a, ChannelId(6), &sealed).is_err());
        let mut replay = sealed.clone();
        replay.epoch = 4;
        assert!(bob.open(&a, CH, &replay).is_err());
        // Any bit of the sealed bytes, salt or signature changed: refused.
        for i in 0..SEALED_LEN {
            let mut t = sealed.clone();
            t.sealed.0[i] ^= 1;
            assert!(bob.open(&a, CH, &t).is_err(), "sealed byte {i}");
        }
        let mut t = sealed.clone();
        t.salt.0[0] ^= 1;
        assert!(bob.open(&a, CH, &t).is_err());
        let mut t = sealed.clone();
        t.signature.0[10] ^= 1;
        assert!(bob.open(&a, CH, &t).is_err());
    }

    #[test]
    fn a_valid_signature_with_a_forged_box_is_refused() {
        // Eve signs a box of her own making addressed to Bob but claims Alice's key is hers: the
        // signature is Eve's, so it fails under Alice's key; under Eve's name it opens as Eve's.
        let (alice, bob, eve) = (
            LocalKeys::from_seed([1; 32]),
            LocalKeys::from_seed([2; 32]),
            LocalKeys::from_seed([3; 32]),
        );
        let k = SenderKey {
            epoch: 1,
            secret: [9; 32],
        };
        let s = ok(eve.seal(&bob.user_id(), CH, &k, Nonce([1; 32])));
        assert!(bob.open(&alice.user_id(), CH, &s).is_err());
        assert_eq!(bob.open(&eve.user_id(), CH, &s), Ok(k));
    }
}
