//! Slices below the chunk: BLAKE3 verified streaming (the bao format, through the `bao-tree` crate).
//!
//! A chunk's name in the signed manifest is `blake3(payload)`. BLAKE3 is a tree hash, so the same
//! hash also authenticates any 16 KiB *slice* of the payload together with the sibling hashes on its
//! path from the root (its proof: 64 bytes per tree level, 3 levels for a 125 kB chunk). A viewer can
//! therefore take a chunk's slices from several peers at once, check each against the chunk hash the
//! moment it arrives, and forward it downstream before the rest of the chunk is in: a relay weaker
//! than the stream adds one slice's time to the hop, not a whole chunk's. A forged slice fails its
//! proof on its own, so the peer that sent it is known and can be penalised as for a bad chunk.
//!
//! - [`SliceOutboard`]: the hash tree of a held chunk (what serving slices needs beside the bytes).
//! - [`encode_slice`] / [`verify_slice`]: one slice with its proof; checked against hash and size.
//! - [`SliceAssembler`]: one chunk rebuilt from verified slices, from any senders, in any order.
//! - The messages are [`hum_proto::mesh::MeshMsg::SliceRequest`] (ask for a share of a chunk's
//!   slices) and [`hum_proto::mesh::MeshMsg::Slice`] (one slice); slice geometry lives there too.
//!   Decoding + verification are fuzzed by `fuzz/fuzz_targets/mesh_slice.rs`.
//! - [`SliceProof`]: real bao proofs, or the simulator's stand-in bodies.
//!
//! The encoded slice is forwarded unchanged: its proof runs from the chunk's root, so every hop
//! checks it against the signed record alone, without the rest of the chunk.

use std::io::Cursor;
use std::sync::Arc;

use bao_tree::io::outboard::PreOrderMemOutboard;
use bao_tree::io::sync::{DecodeResponseIter, encode_ranges_validated};
use bao_tree::io::{BaoContentItem, Leaf};
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};
use hum_proto::mesh::ChunkRecord;
use thiserror::Error;

use crate::PeerId;

/// Slices are BLAKE3 chunk groups of 2^4 x 1 KiB.
const SLICE_LOG: u8 = 4;
const BLOCK: BlockSize = BlockSize::from_chunk_log(SLICE_LOG);
pub use hum_proto::mesh::{MAX_SLICES, SLICE_BYTES, encoded_slice_len, slice_count, slice_len};
/// The largest chunk that can be sliced.
pub const MAX_CHUNK_BYTES: u32 = hum_proto::mesh::MAX_SLICED_CHUNK;
/// The largest encoded slice: its bytes plus one hash pair per level of a 128-slice tree.
pub const MAX_ENCODED_SLICE: usize = SLICE_BYTES as usize + 64 * 8;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SliceError {
    #[error("chunk of {0} bytes is larger than the {MAX_CHUNK_BYTES}-byte slicing limit")]
    ChunkTooLarge(u32),
    #[error("slice {index} is past the chunk's {count} slices")]
    Index { index: u32, count: u32 },
    #[error("slice {0} does not verify against the chunk hash")]
    Mismatch(u32),
    #[error("slice {index}: {len} encoded bytes, expected {expected}")]
    Length {
        index: u32,
        len: usize,
        expected: usize,
    },
    #[error("slice {index} is for a different chunk (layer/seq/hash)")]
    OtherChunk { index: u32 },
}

fn tree(bytes: u32) -> BaoTree {
    BaoTree::new(bytes as u64, BLOCK)
}

fn ranges(index: u32) -> ChunkRanges {
    let per = 1u64 << SLICE_LOG;
    ChunkRanges::from(ChunkNum(index as u64 * per)..ChunkNum((index as u64 + 1) * per))
}

/// The hash tree of a chunk, kept beside its payload by whoever serves slices of it (about 64 bytes
/// per slice). Built from the whole payload, so only a peer holding the whole chunk has one; a relay
/// forwarding slices it is still receiving forwards their verified encodings unchanged instead.
#[derive(Clone, Debug)]
pub struct SliceOutboard {
    ob: PreOrderMemOutboard,
}

impl SliceOutboard {
    pub fn new(payload: &[u8]) -> Result<Self, SliceError> {
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        if len > MAX_CHUNK_BYTES {
            return Err(SliceError::ChunkTooLarge(len));
        }
        Ok(SliceOutboard {
            ob: PreOrderMemOutboard::create(payload, BLOCK),
        })
    }
    /// The chunk's BLAKE3 hash (what the manifest names it by).
    pub fn root(&self) -> [u8; 32] {
        *self.ob.root.as_bytes()
    }
    pub fn slices(&self) -> u32 {
        slice_count(self.ob.tree.size() as u32)
    }
}

/// Slice `index` of `payload` with its proof, in the bao pre-order encoding: the hash pairs from the
/// root down, then the slice's bytes. Checks the payload against the outboard while encoding (a
/// relay never sends bytes that would not verify).
pub fn encode_slice(payload: &[u8], ob: &SliceOutboard, index: u32) -> Result<Vec<u8>, SliceError> {
    let count = ob.slices();
    if index >= count || ob.ob.tree.size() != payload.len() as u64 {
        return Err(SliceError::Index { index, count });
    }
    let mut out = Vec::with_capacity(encoded_slice_len(payload.len() as u32, index));
    encode_ranges_validated(payload, &ob.ob, &ranges(index), &mut out)
        .map_err(|_| SliceError::Mismatch(index))?;
    Ok(out)
}

/// Checks encoded slice `index` of the chunk named `hash` of `bytes` bytes, and returns its payload
/// bytes. Anything that does not verify (a flipped bit in the data or the proof, a proof for
/// another slice, trailing bytes) is [`SliceError`]: never a panic.
pub fn verify_slice(
    hash: &[u8; 32],
    bytes: u32,
    index: u32,
    encoded: &[u8],
) -> Result<Vec<u8>, SliceError> {
    if bytes > MAX_CHUNK_BYTES {
        return Err(SliceError::ChunkTooLarge(bytes));
    }
    let count = slice_count(bytes);
    if index >= count {
        return Err(SliceError::Index { index, count });
    }
    let expected = encoded_slice_len(bytes, index);
    if encoded.len() != expected {
        return Err(SliceError::Length {
            index,
            len: encoded.len(),
            expected,
        });
    }
    let rs = ranges(index);
    let iter = DecodeResponseIter::new(
        blake3::Hash::from_bytes(*hash),
        tree(bytes),
        Cursor::new(encoded),
        &rs,
    );
    let mut out = None;
    for item in iter {
        match item {
            Ok(BaoContentItem::Parent(_)) => {}
            Ok(BaoContentItem::Leaf(Leaf { offset, data })) => {
                if offset != index as u64 * SLICE_BYTES as u64 || out.is_some() {
                    return Err(SliceError::Mismatch(index));
                }
                out = Some(data.to_vec());
            }
            Err(_) => return Err(SliceError::Mismatch(index)),
        }
    }
    let data = out.ok_or(SliceError::Mismatch(index))?;
    if data.len() != slice_len(bytes, index) as usize {
        return Err(SliceError::Mismatch(index));
    }
    Ok(data)
}

/// What [`SliceAssembler::accept`] made of a slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// New and verified: forward it to whoever waits for this chunk.
    New,
    /// Verified, but we had it already (from another sender).
    Duplicate,
}

/// One chunk rebuilt from verified slices. Each slice is checked against the signed record's hash on
/// arrival, so a bad one is refused alone and its sender is named (`Err` from [`accept`]); good
/// slices from other senders are kept.
///
/// [`accept`]: SliceAssembler::accept
#[derive(Debug)]
pub struct SliceAssembler {
    record: Arc<ChunkRecord>,
    buf: Vec<u8>,
    have: u128,
    count: u32,
    /// Who sent each verified slice (for crediting upstreams).
    from: Vec<Option<PeerId>>,
}

impl SliceAssembler {
    pub fn new(record: Arc<ChunkRecord>) -> Result<Self, SliceError> {
        if record.bytes > MAX_CHUNK_BYTES {
            return Err(SliceError::ChunkTooLarge(record.bytes));
        }
        let count = slice_count(record.bytes);
        Ok(SliceAssembler {
            buf: vec![0; record.bytes as usize],
            have: 0,
            count,
            from: vec![None; count as usize],
            record,
        })
    }
    pub fn record(&self) -> &Arc<ChunkRecord> {
        &self.record
    }
    pub fn count(&self) -> u32 {
        self.count
    }
    pub fn has(&self, index: u32) -> bool {
        index < self.count && self.have & (1u128 << index) != 0
    }
    pub fn received(&self) -> u32 {
        self.have.count_ones()
    }
    pub fn is_complete(&self) -> bool {
        self.received() == self.count
    }
    /// The slices still missing, lowest first.
    pub fn missing(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.count).filter(|i| !self.has(*i))
    }
    /// Who sent slice `index` (once verified).
    pub fn sender(&self, index: u32) -> Option<PeerId> {
        self.from.get(index as usize).copied().flatten()
    }

    /// Verifies slice `index` of `record` from `from` and keeps its bytes. `record` must be this
    /// chunk's (same layer, seq and hash; the caller has checked its signature).
    pub fn accept(
        &mut self,
        from: PeerId,
        record: &ChunkRecord,
        index: u32,
        encoded: &[u8],
    ) -> Result<Accepted, SliceError> {
        let r = &self.record;
        if record.layer != r.layer
            || record.seq != r.seq
            || record.hash != r.hash
            || record.bytes != r.bytes
        {
            return Err(SliceError::OtherChunk { index });
        }
        let data = verify_slice(&r.hash, r.bytes, index, encoded)?;
        if self.has(index) {
            return Ok(Accepted::Duplicate);
        }
        let at = (index * SLICE_BYTES) as usize;
        self.buf[at..at + data.len()].copy_from_slice(&data);
        self.have |= 1u128 << index;
        self.from[index as usize] = Some(from);
        Ok(Accepted::New)
    }

    /// The whole payload, once every slice is in (its hash is the record's: every byte was
    /// verified against it).
    pub fn finish(self) -> Option<Arc<[u8]>> {
        self.is_complete().then(|| self.buf.into())
    }
}

/// How a peer makes and checks the `encoded` bytes of a [`hum_proto::mesh::MeshMsg::Slice`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SliceProof {
    /// The real format: the slice's bytes with its BLAKE3 proof ([`encode_slice`] /
    /// [`verify_slice`] against the signed record's hash).
    Bao,
    /// `hum sim`'s media are a few stand-in bytes that count for `record.bytes`: a slice carries the
    /// whole stand-in body, checked against the record's hash like a chunk (a forged slice still
    /// fails on arrival, before it is forwarded or played), and the network is charged
    /// [`encoded_slice_len`] for it.
    StandIn,
}

impl SliceProof {
    /// Checks slice `index` of `record` (whose signature the caller checked); returns the slice's
    /// payload bytes for [`SliceProof::Bao`], the stand-in body for [`SliceProof::StandIn`].
    pub fn check(self, record: &ChunkRecord, index: u32, encoded: &[u8]) -> Result<(), SliceError> {
        match self {
            SliceProof::Bao => verify_slice(&record.hash, record.bytes, index, encoded).map(|_| ()),
            SliceProof::StandIn => {
                if index >= slice_count(record.bytes) {
                    Err(SliceError::Index {
                        index,
                        count: slice_count(record.bytes),
                    })
                } else if blake3::hash(encoded).as_bytes() == &record.hash {
                    Ok(())
                } else {
                    Err(SliceError::Mismatch(index))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hum_proto::mesh::Layer;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn payload(n: usize, seed: u64) -> Vec<u8> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.r#gen()).collect()
    }

    fn record_for(p: &[u8]) -> Arc<ChunkRecord> {
        Arc::new(ChunkRecord {
            layer: Layer::High,
            seq: 7,
            hash: *blake3::hash(p).as_bytes(),
            bytes: p.len() as u32,
            start_us: 0,
            duration_us: 250_000,
            flags: 1,
            signature: [0; 64],
        })
    }

    /// The fuzz seeds of `mesh_slice` (and the slice messages of `mesh_decode`) are real encodings:
    /// this test fails when a checked-in seed differs from what the code encodes today, and
    /// `HUM_BLESS=1 cargo test -p hum-mesh fuzz_seeds` rewrites them.
    #[test]
    fn fuzz_seeds_are_current() {
        use hum_proto::mesh::MeshMsg;
        let root = std::path::PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../fuzz/seeds");
        let p = payload(40_000, 4);
        let rec = record_for(&p);
        let ob = SliceOutboard::new(&p).unwrap();
        let mut seeds = vec![(
            "request".to_string(),
            MeshMsg::SliceRequest {
                layer: Layer::Medium,
                seq: 99,
                part: 1,
                parts: 3,
                deadline_ms: 1500,
                mask: hum_proto::mesh::ALL_SLICES,
            },
        )];
        for i in 0..3u32 {
            seeds.push((
                format!("slice{i}"),
                MeshMsg::Slice {
                    record: rec.clone(),
                    hops: 3,
                    index: i as u16,
                    encoded: encode_slice(&p, &ob, i).unwrap().into(),
                },
            ));
        }
        // The end-game's re-ask of two missing slices (type 9).
        seeds.push((
            "request_mask".to_string(),
            MeshMsg::SliceRequest {
                layer: Layer::High,
                seq: 99,
                part: 0,
                parts: 1,
                deadline_ms: 300,
                mask: 0b1010,
            },
        ));
        let mut files: Vec<(String, Vec<u8>)> = seeds
            .iter()
            .map(|(name, m)| (format!("mesh_slice/{name}"), m.encode().unwrap()))
            .collect();
        files.push((
            "mesh_decode/slice_request".into(),
            seeds[0].1.encode().unwrap(),
        ));
        files.push(("mesh_decode/slice".into(), seeds[1].1.encode().unwrap()));
        let bless = std::env::var_os("HUM_BLESS").is_some();
        for (name, bytes) in files {
            let path = root.join(&name);
            if bless {
                std::fs::write(&path, &bytes).unwrap();
            } else {
                let stored = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("fuzz seed {name}: {e} (HUM_BLESS=1 writes it)"));
                assert!(
                    stored == bytes,
                    "fuzz seed {name} is stale (HUM_BLESS=1 rewrites it)"
                );
            }
        }
    }

    #[test]
    fn stand_in_proofs_check_the_body_against_the_hash() {
        let body = b"stand-in".to_vec();
        let mut rec = *record_for(&body);
        rec.bytes = 125_000;
        assert_eq!(SliceProof::StandIn.check(&rec, 7, &body), Ok(()));
        assert_eq!(
            SliceProof::StandIn.check(&rec, 3, b"forged"),
            Err(SliceError::Mismatch(3))
        );
        assert!(SliceProof::StandIn.check(&rec, 8, &body).is_err());
        // The real proof refuses the stand-in.
        assert!(SliceProof::Bao.check(&rec, 0, &body).is_err());
    }

    #[test]
    fn outboard_root_is_the_manifest_hash_for_every_size() {
        for n in [
            0usize, 1, 1023, 1024, 16_383, 16_384, 16_385, 125_000, 200_000,
        ] {
            let p = payload(n, n as u64);
            let ob = SliceOutboard::new(&p).unwrap();
            assert_eq!(ob.root(), *blake3::hash(&p).as_bytes(), "size {n}");
            assert_eq!(ob.slices(), slice_count(n as u32));
            for i in 0..ob.slices() {
                let e = encode_slice(&p, &ob, i).unwrap();
                assert_eq!(
                    e.len(),
                    encoded_slice_len(n as u32, i),
                    "size {n} slice {i}"
                );
                let got = verify_slice(&ob.root(), n as u32, i, &e).unwrap();
                let at = (i * SLICE_BYTES) as usize;
                assert_eq!(got, &p[at..at + got.len()]);
            }
        }
    }

    #[test]
    fn slices_from_several_senders_in_any_order_rebuild_the_chunk() {
        let p = payload(125_000, 1);
        let rec = record_for(&p);
        let ob = SliceOutboard::new(&p).unwrap();
        let mut asm = SliceAssembler::new(rec.clone()).unwrap();
        assert_eq!(asm.count(), 8);
        // Three upstreams, each carrying the slices of its part, arriving interleaved backwards.
        for i in (0..8u32).rev() {
            let from = PeerId(i % 3);
            let e = encode_slice(&p, &ob, i).unwrap();
            assert_eq!(asm.accept(from, &rec, i, &e), Ok(Accepted::New));
            assert_eq!(asm.sender(i), Some(from));
        }
        let e = encode_slice(&p, &ob, 3).unwrap();
        assert_eq!(asm.accept(PeerId(9), &rec, 3, &e), Ok(Accepted::Duplicate));
        let whole = asm.finish().unwrap();
        assert_eq!(&whole[..], &p[..]);
    }

    #[test]
    fn a_tampered_slice_is_refused_alone_and_its_sender_named() {
        let p = payload(125_000, 2);
        let rec = record_for(&p);
        let ob = SliceOutboard::new(&p).unwrap();
        let mut asm = SliceAssembler::new(rec.clone()).unwrap();
        let good = encode_slice(&p, &ob, 2).unwrap();
        assert_eq!(asm.accept(PeerId(1), &rec, 2, &good), Ok(Accepted::New));
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..200 {
            let i = rng.gen_range(0..8u32);
            let mut bad = encode_slice(&p, &ob, i).unwrap();
            // Flip one bit anywhere: in the proof or in the data.
            let at = rng.gen_range(0..bad.len());
            bad[at] ^= 1 << rng.gen_range(0..8);
            let r = asm.accept(PeerId(5), &rec, i, &bad);
            assert_eq!(
                r,
                Err(SliceError::Mismatch(i)),
                "bit flip at {at} of slice {i}"
            );
        }
        // A good slice sent as another index, truncated, or with a byte appended.
        let s4 = encode_slice(&p, &ob, 4).unwrap();
        assert_eq!(
            asm.accept(PeerId(5), &rec, 5, &s4),
            Err(SliceError::Mismatch(5))
        );
        assert!(asm.accept(PeerId(5), &rec, 4, &s4[..s4.len() - 1]).is_err());
        let mut long = s4.clone();
        long.push(0);
        assert!(asm.accept(PeerId(5), &rec, 4, &long).is_err());
        assert!(asm.accept(PeerId(5), &rec, 8, &s4).is_err());
        // A slice of another chunk.
        let other = payload(125_000, 9);
        let orec = record_for(&other);
        let oob = SliceOutboard::new(&other).unwrap();
        let o1 = encode_slice(&other, &oob, 1).unwrap();
        assert_eq!(
            asm.accept(PeerId(5), &orec, 1, &o1),
            Err(SliceError::OtherChunk { index: 1 })
        );
        assert_eq!(
            asm.accept(PeerId(5), &rec, 1, &o1),
            Err(SliceError::Mismatch(1))
        );
        // Nothing bad was kept: only the one good slice is in.
        assert_eq!(asm.received(), 1);
        assert!(asm.missing().eq([0, 1, 3, 4, 5, 6, 7]));
    }
}
