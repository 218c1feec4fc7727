//! The signed manifest: per layer, sequence -> hash and timing, one signed record per chunk.
//!
//! The root seed signs a [`ChunkRecord`] for every chunk it publishes and the record travels with the
//! chunk (and can be fetched from the relay). A receiver checks the signature against the stream's
//! public key, then the BLAKE3 hash of the payload against the record, before it plays or relays a
//! byte: a peer can withhold chunks but cannot forge or alter one.
//!
//! Signature checks are a pure function of (key, record, signature), so a [`Verifier`] remembers the
//! records it has already accepted. Viewers in one process (the simulator) may share one `Verifier`;
//! that memoises the Ed25519 check, it does not skip it: a record that differs in any byte is checked
//! afresh. The BLAKE3 check of each payload is never shared.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier as _, VerifyingKey};
use hum_proto::mesh::ChunkRecord;
use thiserror::Error;

use crate::chunker::Chunk;

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    #[error("chunk record signature does not verify against the stream key")]
    BadSignature,
    #[error("chunk payload does not match the BLAKE3 hash in its signed record")]
    BadHash,
}

/// The root seed's signing side.
pub struct Publisher {
    key: SigningKey,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("public", &self.key.verifying_key())
            .finish()
    }
}

impl Publisher {
    /// From a 32-byte secret seed (the caller draws it from its RNG or key store).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Publisher {
            key: SigningKey::from_bytes(&seed),
        }
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The signed record for `chunk`; `bytes` is the size it counts for (its payload length in the app).
    pub fn sign(&self, chunk: &Chunk, bytes: u32) -> ChunkRecord {
        let mut r = ChunkRecord {
            layer: chunk.layer,
            seq: chunk.seq,
            hash: chunk.hash,
            bytes,
            start_us: chunk.start_us,
            duration_us: chunk.duration_us,
            flags: if chunk.start_point {
                ChunkRecord::FLAG_START_POINT
            } else {
                0
            },
            signature: [0; 64],
        };
        r.signature = self.key.sign(&r.signing_bytes()).to_bytes();
        r
    }
}

const MEMO_CAP: usize = 1 << 16;

/// Records already verified, by (layer, seq). A record is accepted from the memo only if it is
/// byte-for-byte the one that verified (signature included), so the memo never vouches for anything
/// the Ed25519 check did not see.
#[derive(Default)]
struct Memo {
    map: HashMap<(u8, u64), ChunkRecord>,
    order: VecDeque<(u8, u64)>,
}

/// Checks records and payloads against a stream key.
#[derive(Clone)]
pub struct Verifier {
    key: VerifyingKey,
    memo: Arc<Mutex<Memo>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("key", &self.key).finish()
    }
}

impl Verifier {
    pub fn new(key: VerifyingKey) -> Self {
        Verifier {
            key,
            memo: Arc::new(Mutex::new(Memo::default())),
        }
    }

    pub fn verify_record(&self, r: &ChunkRecord) -> Result<(), VerifyError> {
        let id = (r.layer as u8, r.seq);
        if let Ok(m) = self.memo.lock()
            && m.map.get(&id) == Some(r)
        {
            return Ok(());
        }
        let sig = Signature::from_bytes(&r.signature);
        self.key
            .verify(&r.signing_bytes(), &sig)
            .map_err(|_| VerifyError::BadSignature)?;
        if let Ok(mut m) = self.memo.lock()
            && m.map.insert(id, *r).is_none()
        {
            m.order.push_back(id);
            if m.order.len() > MEMO_CAP
                && let Some(old) = m.order.pop_front()
            {
                m.map.remove(&old);
            }
        }
        Ok(())
    }

    /// Signature, then payload hash.
    pub fn verify_chunk(&self, r: &ChunkRecord, payload: &[u8]) -> Result<(), VerifyError> {
        self.verify_record(r)?;
        if blake3::hash(payload).as_bytes() != &r.hash {
            return Err(VerifyError::BadHash);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hum_proto::mesh::Layer;

    fn chunk(seq: u64) -> Chunk {
        Chunk::new(
            Layer::High,
            seq,
            seq * 250_000,
            250_000,
            true,
            Arc::from(&b"media"[..]),
        )
    }

    #[test]
    fn good_chunks_verify_and_anything_altered_does_not() {
        let p = Publisher::from_seed([1; 32]);
        let v = Verifier::new(p.public_key());
        let c = chunk(3);
        let r = p.sign(&c, 125_000);
        assert_eq!(v.verify_chunk(&r, &c.payload), Ok(()));
        assert_eq!(v.verify_chunk(&r, &c.payload), Ok(()), "memoised path");
        assert_eq!(v.verify_chunk(&r, b"mediA"), Err(VerifyError::BadHash));
        let mut forged = r;
        forged.seq = 4;
        assert_eq!(
            v.verify_chunk(&forged, &c.payload),
            Err(VerifyError::BadSignature)
        );
        let mut resized = r;
        resized.bytes = 1;
        assert_eq!(v.verify_record(&resized), Err(VerifyError::BadSignature));
        let other = Verifier::new(Publisher::from_seed([2; 32]).public_key());
        assert_eq!(other.verify_record(&r), Err(VerifyError::BadSignature));
    }
}
