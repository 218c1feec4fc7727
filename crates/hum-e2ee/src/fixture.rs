//! Fixed keys and frames for the fuzz target (fuzz/fuzz_targets/e2ee_frame.rs) and its seeds:
//! the seeds are frames these keys really decrypt, so the fuzzer starts from inside the AEAD.
//! Not for anything else: the secrets are public.

use hum_proto::{ChannelId, Nonce, UserId};

use crate::frame::{FrameTransform, KeyRing, MediaKind};
use crate::seal::{LocalKeys, SealedKey};
use crate::{E2eeError, SenderKey};

pub const CHANNEL: ChannelId = ChannelId(7);

/// The sender of every fixture frame and key.
pub fn sender() -> LocalKeys {
    LocalKeys::from_seed([0x5e; 32])
}

/// The receiver the fuzz target decrypts and opens as.
pub fn receiver() -> LocalKeys {
    LocalKeys::from_seed([0x7e; 32])
}

pub fn sender_key(epoch: u32) -> SenderKey {
    SenderKey {
        epoch,
        secret: [epoch as u8 ^ 0x42; 32],
    }
}

/// The receiver's ring: the sender's keys of epochs 1 and 2.
pub fn receiving_ring() -> Result<KeyRing, E2eeError> {
    let ring = KeyRing::new(&sender_key(9))?;
    for e in [1, 2] {
        ring.add_receiving(sender().user_id(), &sender_key(e))?;
    }
    Ok(ring)
}

/// A sealed key as the fuzz target reads it from raw bytes: epoch (4, big endian), salt (32),
/// sealed (49), signature (64).
pub fn sealed_from_bytes(b: &[u8]) -> Option<SealedKey> {
    let epoch = u32::from_be_bytes(b.get(..4)?.try_into().ok()?);
    Some(SealedKey {
        epoch,
        salt: Nonce(b.get(4..36)?.try_into().ok()?),
        sealed: hum_proto::SealedMediaKey(b.get(36..85)?.try_into().ok()?),
        signature: hum_proto::Signature(b.get(85..149)?.try_into().ok()?),
    })
}

pub fn sealed_to_bytes(k: &SealedKey) -> Vec<u8> {
    let mut v = k.epoch.to_be_bytes().to_vec();
    v.extend_from_slice(&k.salt.0);
    v.extend_from_slice(&k.sealed.0);
    v.extend_from_slice(&k.signature.0);
    v
}

/// The seeds: (name, bytes). Frames of both kinds and both epochs, and a sealed key.
pub fn seeds() -> Result<Vec<(String, Vec<u8>)>, E2eeError> {
    let mut out = Vec::new();
    for epoch in [1u32, 2] {
        let ring = KeyRing::new(&sender_key(epoch))?;
        let opus: Vec<u8> = (0..60u8).collect();
        out.push((
            format!("audio-{epoch}"),
            ring.encrypt(MediaKind::Audio, &opus)?,
        ));
        let mut kf = vec![0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01];
        kf.extend((0..40u8).map(|i| i.wrapping_mul(3)));
        out.push((
            format!("vp8-key-{epoch}"),
            ring.encrypt(MediaKind::Vp8, &kf)?,
        ));
        let delta = vec![0x31, 0x10, 0x00, 1, 2, 3, 4, 5, 6];
        out.push((
            format!("vp8-delta-{epoch}"),
            ring.encrypt(MediaKind::Vp8, &delta)?,
        ));
    }
    let sealed = sender().seal(
        &receiver().user_id(),
        CHANNEL,
        &sender_key(3),
        Nonce([0x11; 32]),
    )?;
    out.push(("sealed-key".into(), sealed_to_bytes(&sealed)));
    Ok(out)
}

/// What the fuzz target does with one input; panics only on a broken invariant. Give it a fresh
/// [`receiving_ring`] per input: a ring that opened a frame refuses its counter again (anti-replay),
/// so a shared one would keep the fuzzer's mutations of a seed out of the AEAD.
pub fn exercise(data: &[u8], ring: &KeyRing) {
    let from: UserId = sender().user_id();
    for kind in [MediaKind::Audio, MediaKind::Vp8] {
        if let Ok(plain) = ring.decrypt(&from, kind, data) {
            // Whatever decrypts is shorter by at least the SFrame header and tag.
            assert!(plain.len() + 17 <= data.len());
        }
    }
    if let Some(k) = sealed_from_bytes(data)
        && let Ok(opened) = receiver().open(&from, CHANNEL, &k)
    {
        assert_eq!(opened.epoch, k.epoch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_decrypt_and_the_checked_in_ones_are_current() {
        let ring = receiving_ring().unwrap_or_else(|e| panic!("{e}"));
        let from = sender().user_id();
        let seeds = seeds().unwrap_or_else(|e| panic!("{e}"));
        for (name, bytes) in &seeds {
            if name == "sealed-key" {
                let k = sealed_from_bytes(bytes).unwrap_or_else(|| panic!("short"));
                assert_eq!(receiver().open(&from, CHANNEL, &k), Ok(sender_key(3)));
            } else {
                let kind = if name.starts_with("vp8") {
                    MediaKind::Vp8
                } else {
                    MediaKind::Audio
                };
                assert!(ring.decrypt(&from, kind, bytes).is_ok(), "{name}");
                // Once: the second time is a replay.
                assert!(
                    matches!(
                        ring.decrypt(&from, kind, bytes),
                        Err(E2eeError::Replayed { .. })
                    ),
                    "{name} opened twice"
                );
            }
            exercise(bytes, &receiving_ring().unwrap_or_else(|e| panic!("{e}")));
        }
        let dir = std::path::PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../fuzz/seeds/e2ee_frame");
        if std::env::var_os("HUM_BLESS").is_some() {
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
            for (name, bytes) in &seeds {
                std::fs::write(dir.join(name), bytes).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        for (name, bytes) in &seeds {
            let on_disk = std::fs::read(dir.join(name))
                .unwrap_or_else(|e| panic!("fuzz seed {name}: {e} (HUM_BLESS=1 writes them)"));
            assert_eq!(
                &on_disk, bytes,
                "fuzz seed {name} is stale (HUM_BLESS=1 rewrites it)"
            );
        }
    }
}
