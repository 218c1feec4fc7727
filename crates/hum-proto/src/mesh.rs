//! The livestream mesh wire format (binary), spoken between viewers over data channels and between a
//! viewer and the root seed.
//!
//! Every message is `[version=1][type][body]`, integers big-endian. Decoding never panics: anything
//! short, long, unknown or over [`MAX_MESSAGE_BYTES`] is a [`MeshDecodeError`]. Chunk payloads ride in
//! [`MeshMsg::Data`] together with the root seed's signed [`ChunkRecord`] for that chunk, so a receiver
//! can check the signature and then the BLAKE3 hash before using or relaying a single byte.
//!
//! | type | message | body |
//! | --- | --- | --- |
//! | 1 | Announce | layer u8, base seq u64, bit count u16, bitmap (ceil(bits/8) bytes, bit i = seq base+i, LSB first) |
//! | 2 | Request | layer u8, seq u64, deadline ms u32 (how long the requester can still use it) |
//! | 3 | Data | record (layer u8, seq u64, hash 32, bytes u32, start us u64, duration us u32, flags u8, signature 64), hops u8, payload len u32, payload |
//! | 4 | Cancel | layer u8, seq u64 |
//! | 5 | Absent | layer u8, seq u64, reason u8 (0 not held, 1 busy, 2 too old) |
//! | 6 | BufferHealth | buffered ms u32, playhead seq u64 |
//! | 7 | SliceRequest | layer u8, seq u64, part u8, parts u8 (part < parts), deadline ms u32 |
//! | 8 | Slice | record (as in Data), hops u8, index u16, encoded len u32, encoded (slice bytes with its BLAKE3 proof: exactly [`encoded_slice_len`]) |
//! | 9 | SliceRequest with a mask | as type 7, then mask u128 (bit i = slice i; only slices in both the share and the mask are asked for) |
//!
//! Slices (types 7 and 8) are the chunk's 16 KiB BLAKE3 chunk groups ([`SLICE_BYTES`]), each sent
//! with the sibling hashes on its path from the root (the bao pre-order encoding), so a receiver
//! checks one slice against the signed record's hash on arrival and forwards it at once
//! (hum-mesh `slice`). Decoding checks the shape (index within the chunk, exact encoded length);
//! whether the bytes verify is the receiver's job.
//!
//! A `SliceRequest` whose mask is [`ALL_SLICES`] is sent as type 7 (what session-6 peers speak);
//! any other mask (the end-game re-asking only the missing slices of a late part) as type 9.

use std::sync::Arc;

use thiserror::Error;

/// The only version this code speaks.
pub const MESH_VERSION: u8 = 1;
/// No mesh message may exceed this (a 500 ms chunk at 16 Mbit/s is 1 MB).
pub const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;
/// The largest have-map window an announcement may carry.
pub const MAX_ANNOUNCE_BITS: u16 = 4096;

/// Payload bytes per slice: BLAKE3 chunk groups of 16 x 1 KiB (the last slice may be shorter).
pub const SLICE_BYTES: u32 = 16 * 1024;
/// The most slices a chunk may have (a 2 MiB chunk).
pub const MAX_SLICES: u32 = 128;
/// The largest chunk that can be sliced.
pub const MAX_SLICED_CHUNK: u32 = SLICE_BYTES * MAX_SLICES;
/// A [`MeshMsg::SliceRequest`] mask that restricts nothing (every slice of the share).
pub const ALL_SLICES: u128 = u128::MAX;

/// How many slices a chunk of `bytes` has (an empty chunk is one empty slice).
pub fn slice_count(bytes: u32) -> u32 {
    bytes.div_ceil(SLICE_BYTES).max(1)
}

/// The payload bytes slice `index` of a `bytes`-byte chunk carries.
pub fn slice_len(bytes: u32, index: u32) -> u32 {
    bytes
        .saturating_sub(index.saturating_mul(SLICE_BYTES))
        .min(SLICE_BYTES)
}

/// The size of slice `index` on the wire, proof included (64 bytes per parent in BLAKE3's tree of
/// the chunk's slices), without encoding it.
pub fn encoded_slice_len(bytes: u32, index: u32) -> usize {
    slice_len(bytes, index) as usize + 64 * slice_depth(slice_count(bytes), index) as usize
}

/// How many parents slice `index` has in BLAKE3's tree of `n` slices: the left subtree holds the
/// largest power of two below `n`, the rest is the right subtree.
fn slice_depth(mut n: u32, mut index: u32) -> u32 {
    let mut d = 0;
    while n > 1 {
        let left = 1 << (31 - (n - 1).leading_zeros());
        if index < left {
            n = left;
        } else {
            n -= left;
            index -= left;
        }
        d += 1;
    }
    d
}

/// A quality layer. Each is its own chunk stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Layer {
    High = 0,
    Medium = 1,
    Low = 2,
    Audio = 3,
}

impl Layer {
    pub const ALL: [Layer; 4] = [Layer::High, Layer::Medium, Layer::Low, Layer::Audio];

    pub fn from_u8(b: u8) -> Option<Layer> {
        Layer::ALL.get(b as usize).copied()
    }
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a peer answers a request with [`MeshMsg::Absent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AbsentReason {
    /// The peer does not hold the chunk (and does not expect to in time).
    NotHeld = 0,
    /// The peer holds it but its upload budget cannot serve it before the deadline.
    Busy = 1,
    /// The chunk has left the peer's window.
    TooOld = 2,
}

/// The root seed's signed description of one chunk: the manifest, one entry at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkRecord {
    pub layer: Layer,
    pub seq: u64,
    /// BLAKE3 of the payload.
    pub hash: [u8; 32],
    /// Size the chunk counts for (its payload length in the app).
    pub bytes: u32,
    /// Media time of the chunk's first frame, microseconds since the stream began.
    pub start_us: u64,
    pub duration_us: u32,
    /// Bit 0: the chunk starts with a keyframe, so a viewer may start playback here.
    pub flags: u8,
    /// Ed25519 over [`ChunkRecord::signing_bytes`].
    pub signature: [u8; 64],
}

impl ChunkRecord {
    pub const FLAG_START_POINT: u8 = 1;
    const BODY: usize = 1 + 8 + 32 + 4 + 8 + 4 + 1;
    pub const ENCODED_LEN: usize = Self::BODY + 64;

    pub fn is_start_point(&self) -> bool {
        self.flags & Self::FLAG_START_POINT != 0
    }

    /// The bytes the root seed signs: a domain tag, then every field but the signature.
    pub fn signing_bytes(&self) -> [u8; 16 + Self::BODY] {
        let mut out = [0u8; 16 + Self::BODY];
        out[..16].copy_from_slice(b"hum-mesh-chunk-1");
        let mut w = Writer {
            buf: Vec::with_capacity(Self::BODY),
        };
        self.write_body(&mut w);
        out[16..].copy_from_slice(&w.buf);
        out
    }

    /// The record alone on the wire (body then signature, as inside `Data`): for messages outside
    /// [`MeshMsg`] that carry a record, such as hum-mesh's slices.
    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut w = Writer {
            buf: Vec::with_capacity(Self::ENCODED_LEN),
        };
        self.write_body(&mut w);
        w.bytes(&self.signature);
        let mut out = [0u8; Self::ENCODED_LEN];
        out.copy_from_slice(&w.buf);
        out
    }

    /// Reads a record written by [`ChunkRecord::to_bytes`] from the front of `buf`.
    pub fn from_bytes(buf: &[u8]) -> Result<Self, MeshDecodeError> {
        Self::read(&mut Reader { buf, at: 0 })
    }

    fn write_body(&self, w: &mut Writer) {
        w.u8(self.layer as u8);
        w.u64(self.seq);
        w.bytes(&self.hash);
        w.u32(self.bytes);
        w.u64(self.start_us);
        w.u32(self.duration_us);
        w.u8(self.flags);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, MeshDecodeError> {
        let layer = r.layer()?;
        let seq = r.u64()?;
        let hash = r.array::<32>()?;
        let bytes = r.u32()?;
        let start_us = r.u64()?;
        let duration_us = r.u32()?;
        let flags = r.u8()?;
        let signature = r.array::<64>()?;
        Ok(ChunkRecord {
            layer,
            seq,
            hash,
            bytes,
            start_us,
            duration_us,
            flags,
            signature,
        })
    }
}

/// One mesh message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MeshMsg {
    /// "I hold these chunks": bit `i` of `bitmap` is sequence `base + i`.
    Announce {
        layer: Layer,
        base: u64,
        bits: u16,
        bitmap: Vec<u8>,
    },
    /// "Send me this chunk; it is useless to me after `deadline_ms`." A peer that does not hold it yet
    /// but expects to may keep the request open until then.
    Request {
        layer: Layer,
        seq: u64,
        deadline_ms: u32,
    },
    /// A chunk with its signed record; `hops` counts relays since the root seed (root = 0). The record
    /// is shared (every relay forwards the root's record unchanged), which keeps the message small.
    Data {
        record: Arc<ChunkRecord>,
        hops: u8,
        payload: Arc<[u8]>,
    },
    /// "I no longer need this chunk."
    Cancel { layer: Layer, seq: u64 },
    /// "I will not send this chunk."
    Absent {
        layer: Layer,
        seq: u64,
        reason: AbsentReason,
    },
    /// "I have `buffered_ms` of media ahead of my playhead": low values get served first.
    BufferHealth { buffered_ms: u32, playhead: u64 },
    /// "Send me the slices `i` of chunk `seq` with `i % parts == part`, each as soon as you have it
    /// verified." Several upstreams asked for different parts carry one chunk together; one that does
    /// not hold the chunk yet keeps the request and forwards slices as they arrive. Only slices
    /// whose bit is set in `mask` are asked for ([`ALL_SLICES`]: the whole share): the end-game
    /// re-asks just the missing slices of a late part from another peer.
    SliceRequest {
        layer: Layer,
        seq: u64,
        part: u8,
        parts: u8,
        deadline_ms: u32,
        mask: u128,
    },
    /// Slice `index` of the chunk `record` names, with its proof; forwarded unchanged by relays.
    Slice {
        record: Arc<ChunkRecord>,
        hops: u8,
        index: u16,
        encoded: Arc<[u8]>,
    },
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MeshDecodeError {
    #[error("mesh message of {0} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("mesh message truncated: needed {needed} more bytes at offset {at}")]
    Truncated { at: usize, needed: usize },
    #[error("mesh message version {0} is not supported (expected {MESH_VERSION})")]
    Version(u8),
    #[error("unknown mesh message type {0}")]
    UnknownType(u8),
    #[error("unknown layer {0}")]
    Layer(u8),
    #[error("unknown absent reason {0}")]
    Reason(u8),
    #[error("announcement window of {0} bits exceeds {MAX_ANNOUNCE_BITS}")]
    Window(u16),
    #[error("{0} unexpected bytes after the message")]
    Trailing(usize),
    #[error("slice request for part {part} of {parts}")]
    Part { part: u8, parts: u8 },
    #[error("slice {index} of a {bytes}-byte chunk does not exist")]
    SliceIndex { index: u16, bytes: u32 },
    #[error("encoded slice of {len} bytes, expected {expected}")]
    SliceLength { len: usize, expected: usize },
    #[error("a masked slice request (type 9) must not ask for every slice: that is type 7")]
    MaskAll,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MeshEncodeError {
    #[error("mesh message of {0} bytes would exceed the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("announcement bitmap of {have} bytes does not match {bits} bits")]
    Bitmap { bits: u16, have: usize },
}

impl MeshMsg {
    /// The encoded size, without encoding (the simulator charges the network this).
    pub fn encoded_len(&self) -> usize {
        2 + match self {
            MeshMsg::Announce { bitmap, .. } => 1 + 8 + 2 + bitmap.len(),
            MeshMsg::Request { .. } => 1 + 8 + 4,
            MeshMsg::Data { payload, .. } => ChunkRecord::ENCODED_LEN + 1 + 4 + payload.len(),
            MeshMsg::Cancel { .. } => 1 + 8,
            MeshMsg::Absent { .. } => 1 + 8 + 1,
            MeshMsg::BufferHealth { .. } => 4 + 8,
            MeshMsg::SliceRequest { mask, .. } => {
                1 + 8 + 1 + 1 + 4 + if *mask == ALL_SLICES { 0 } else { 16 }
            }
            MeshMsg::Slice { encoded, .. } => ChunkRecord::ENCODED_LEN + 1 + 2 + 4 + encoded.len(),
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, MeshEncodeError> {
        let len = self.encoded_len();
        if len > MAX_MESSAGE_BYTES {
            return Err(MeshEncodeError::TooLarge(len));
        }
        let mut w = Writer {
            buf: Vec::with_capacity(len),
        };
        w.u8(MESH_VERSION);
        match self {
            MeshMsg::Announce {
                layer,
                base,
                bits,
                bitmap,
            } => {
                if bitmap.len() != (*bits as usize).div_ceil(8) || *bits > MAX_ANNOUNCE_BITS {
                    return Err(MeshEncodeError::Bitmap {
                        bits: *bits,
                        have: bitmap.len(),
                    });
                }
                w.u8(1);
                w.u8(*layer as u8);
                w.u64(*base);
                w.u16(*bits);
                w.bytes(bitmap);
            }
            MeshMsg::Request {
                layer,
                seq,
                deadline_ms,
            } => {
                w.u8(2);
                w.u8(*layer as u8);
                w.u64(*seq);
                w.u32(*deadline_ms);
            }
            MeshMsg::Data {
                record,
                hops,
                payload,
            } => {
                w.u8(3);
                record.write_body(&mut w);
                w.bytes(&record.signature);
                w.u8(*hops);
                w.u32(payload.len() as u32);
                w.bytes(payload);
            }
            MeshMsg::Cancel { layer, seq } => {
                w.u8(4);
                w.u8(*layer as u8);
                w.u64(*seq);
            }
            MeshMsg::Absent { layer, seq, reason } => {
                w.u8(5);
                w.u8(*layer as u8);
                w.u64(*seq);
                w.u8(*reason as u8);
            }
            MeshMsg::BufferHealth {
                buffered_ms,
                playhead,
            } => {
                w.u8(6);
                w.u32(*buffered_ms);
                w.u64(*playhead);
            }
            MeshMsg::SliceRequest {
                layer,
                seq,
                part,
                parts,
                deadline_ms,
                mask,
            } => {
                w.u8(if *mask == ALL_SLICES { 7 } else { 9 });
                w.u8(*layer as u8);
                w.u64(*seq);
                w.u8(*part);
                w.u8(*parts);
                w.u32(*deadline_ms);
                if *mask != ALL_SLICES {
                    w.bytes(&mask.to_be_bytes());
                }
            }
            MeshMsg::Slice {
                record,
                hops,
                index,
                encoded,
            } => {
                w.u8(8);
                record.write_body(&mut w);
                w.bytes(&record.signature);
                w.u8(*hops);
                w.u16(*index);
                w.u32(encoded.len() as u32);
                w.bytes(encoded);
            }
        }
        debug_assert_eq!(w.buf.len(), len);
        Ok(w.buf)
    }

    pub fn decode(buf: &[u8]) -> Result<MeshMsg, MeshDecodeError> {
        if buf.len() > MAX_MESSAGE_BYTES {
            return Err(MeshDecodeError::TooLarge(buf.len()));
        }
        let mut r = Reader { buf, at: 0 };
        let v = r.u8()?;
        if v != MESH_VERSION {
            return Err(MeshDecodeError::Version(v));
        }
        let msg = match r.u8()? {
            1 => {
                let layer = r.layer()?;
                let base = r.u64()?;
                let bits = r.u16()?;
                if bits > MAX_ANNOUNCE_BITS {
                    return Err(MeshDecodeError::Window(bits));
                }
                let bitmap = r.take((bits as usize).div_ceil(8))?.to_vec();
                MeshMsg::Announce {
                    layer,
                    base,
                    bits,
                    bitmap,
                }
            }
            2 => MeshMsg::Request {
                layer: r.layer()?,
                seq: r.u64()?,
                deadline_ms: r.u32()?,
            },
            3 => {
                let record = Arc::new(ChunkRecord::read(&mut r)?);
                let hops = r.u8()?;
                let n = r.u32()? as usize;
                let payload: Arc<[u8]> = Arc::from(r.take(n)?);
                MeshMsg::Data {
                    record,
                    hops,
                    payload,
                }
            }
            4 => MeshMsg::Cancel {
                layer: r.layer()?,
                seq: r.u64()?,
            },
            5 => {
                let layer = r.layer()?;
                let seq = r.u64()?;
                let reason = match r.u8()? {
                    0 => AbsentReason::NotHeld,
                    1 => AbsentReason::Busy,
                    2 => AbsentReason::TooOld,
                    x => return Err(MeshDecodeError::Reason(x)),
                };
                MeshMsg::Absent { layer, seq, reason }
            }
            6 => MeshMsg::BufferHealth {
                buffered_ms: r.u32()?,
                playhead: r.u64()?,
            },
            t @ (7 | 9) => {
                let layer = r.layer()?;
                let seq = r.u64()?;
                let part = r.u8()?;
                let parts = r.u8()?;
                if parts == 0 || part >= parts {
                    return Err(MeshDecodeError::Part { part, parts });
                }
                let deadline_ms = r.u32()?;
                let mask = if t == 9 {
                    let mask = u128::from_be_bytes(r.take(16)?.try_into().expect("16 bytes"));
                    // One encoding per message: the whole share travels as type 7.
                    if mask == ALL_SLICES {
                        return Err(MeshDecodeError::MaskAll);
                    }
                    mask
                } else {
                    ALL_SLICES
                };
                MeshMsg::SliceRequest {
                    layer,
                    seq,
                    part,
                    parts,
                    deadline_ms,
                    mask,
                }
            }
            8 => {
                let record = Arc::new(ChunkRecord::read(&mut r)?);
                let hops = r.u8()?;
                let index = r.u16()?;
                if record.bytes > MAX_SLICED_CHUNK || index as u32 >= slice_count(record.bytes) {
                    return Err(MeshDecodeError::SliceIndex {
                        index,
                        bytes: record.bytes,
                    });
                }
                let len = r.u32()? as usize;
                let expected = encoded_slice_len(record.bytes, index as u32);
                if len != expected {
                    return Err(MeshDecodeError::SliceLength { len, expected });
                }
                let encoded: Arc<[u8]> = Arc::from(r.take(len)?);
                MeshMsg::Slice {
                    record,
                    hops,
                    index,
                    encoded,
                }
            }
            t => return Err(MeshDecodeError::UnknownType(t)),
        };
        let rest = buf.len() - r.at;
        if rest != 0 {
            return Err(MeshDecodeError::Trailing(rest));
        }
        Ok(msg)
    }
}

struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MeshDecodeError> {
        let left = self.buf.len() - self.at;
        if n > left {
            return Err(MeshDecodeError::Truncated {
                at: self.at,
                needed: n - left,
            });
        }
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], MeshDecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, MeshDecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, MeshDecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, MeshDecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, MeshDecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn layer(&mut self) -> Result<Layer, MeshDecodeError> {
        let b = self.u8()?;
        Layer::from_u8(b).ok_or(MeshDecodeError::Layer(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ChunkRecord {
        ChunkRecord {
            layer: Layer::Medium,
            seq: 42,
            hash: [7; 32],
            bytes: 125_000,
            start_us: 21_000_000,
            duration_us: 500_000,
            flags: ChunkRecord::FLAG_START_POINT,
            signature: [9; 64],
        }
    }

    fn all() -> Vec<MeshMsg> {
        vec![
            MeshMsg::Announce {
                layer: Layer::High,
                base: 100,
                bits: 12,
                bitmap: vec![0b1011_0001, 0b0000_1111],
            },
            MeshMsg::Request {
                layer: Layer::Low,
                seq: 5,
                deadline_ms: 1500,
            },
            MeshMsg::Data {
                record: Arc::new(record()),
                hops: 3,
                payload: Arc::from(&b"chunk bytes"[..]),
            },
            MeshMsg::Cancel {
                layer: Layer::Audio,
                seq: u64::MAX,
            },
            MeshMsg::Absent {
                layer: Layer::High,
                seq: 3,
                reason: AbsentReason::Busy,
            },
            MeshMsg::BufferHealth {
                buffered_ms: 2500,
                playhead: 77,
            },
            MeshMsg::SliceRequest {
                layer: Layer::High,
                seq: 9,
                part: 2,
                parts: 3,
                deadline_ms: 700,
                mask: ALL_SLICES,
            },
            MeshMsg::SliceRequest {
                layer: Layer::Low,
                seq: 10,
                part: 0,
                parts: 1,
                deadline_ms: 300,
                mask: (1 << 5) | (1 << 127),
            },
            MeshMsg::Slice {
                record: Arc::new(ChunkRecord {
                    bytes: 40_000,
                    ..record()
                }),
                hops: 2,
                index: 2,
                // 40 kB = 3 slices; slice 2 is the right child of the root: 1 parent, 7,232 bytes.
                encoded: vec![5u8; 64 + 40_000 - 2 * 16_384].into(),
            },
        ]
    }

    #[test]
    fn slice_geometry_matches_blake3s_tree() {
        assert_eq!(slice_count(0), 1);
        assert_eq!(slice_count(125_000), 8);
        assert_eq!(slice_len(125_000, 7), 125_000 - 7 * 16_384);
        // 8 slices: a full tree of depth 3.
        assert_eq!(encoded_slice_len(125_000, 0), 16_384 + 3 * 64);
        // 3 slices: 0 and 1 under the left child, 2 is the root's right child.
        assert_eq!(encoded_slice_len(40_000, 0), 16_384 + 2 * 64);
        assert_eq!(encoded_slice_len(40_000, 2), 40_000 - 2 * 16_384 + 64);
        assert_eq!(encoded_slice_len(100, 0), 100);
    }

    #[test]
    fn a_slice_request_for_the_whole_share_keeps_session_6s_bytes() {
        let m = |mask| MeshMsg::SliceRequest {
            layer: Layer::High,
            seq: 1,
            part: 1,
            parts: 2,
            deadline_ms: 9,
            mask,
        };
        let all = m(ALL_SLICES).encode().unwrap();
        assert_eq!((all[1], all.len()), (7, 2 + 15));
        let some = m(0b1010).encode().unwrap();
        assert_eq!((some[1], some.len()), (9, 2 + 15 + 16));
        assert_eq!(&some[2..17], &all[2..17]);
        assert_eq!(MeshMsg::decode(&some), Ok(m(0b1010)));
        // The all-slices mask has one encoding (type 7); type 9 carrying it is refused.
        let mut nine = m((1 << 5) | 1).encode().unwrap();
        let len = nine.len();
        nine[len - 16..].copy_from_slice(&ALL_SLICES.to_be_bytes());
        assert!(matches!(
            MeshMsg::decode(&nine),
            Err(MeshDecodeError::MaskAll)
        ));
        // A mask cut short is an error, not a panic.
        assert!(matches!(
            MeshMsg::decode(&some[..some.len() - 1]),
            Err(MeshDecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn slice_messages_refuse_bad_shapes() {
        let m = MeshMsg::SliceRequest {
            layer: Layer::High,
            seq: 1,
            part: 0,
            parts: 2,
            deadline_ms: 1,
            mask: ALL_SLICES,
        };
        let mut b = m.encode().unwrap();
        b[11] = 2; // part 2 of 2
        assert_eq!(
            MeshMsg::decode(&b),
            Err(MeshDecodeError::Part { part: 2, parts: 2 })
        );
        b[11] = 0;
        b[12] = 0; // of 0 parts
        assert_eq!(
            MeshMsg::decode(&b),
            Err(MeshDecodeError::Part { part: 0, parts: 0 })
        );
        let s = all().pop().unwrap();
        let b = s.encode().unwrap();
        let at = 2 + ChunkRecord::ENCODED_LEN + 1;
        let mut bad = b.clone();
        bad[at..at + 2].copy_from_slice(&3u16.to_be_bytes());
        assert_eq!(
            MeshMsg::decode(&bad),
            Err(MeshDecodeError::SliceIndex {
                index: 3,
                bytes: 40_000
            })
        );
        let mut bad = b.clone();
        bad[at + 2..at + 6].copy_from_slice(&7_000u32.to_be_bytes());
        assert!(matches!(
            MeshMsg::decode(&bad),
            Err(MeshDecodeError::SliceLength { len: 7_000, .. })
        ));
    }

    #[test]
    fn every_message_round_trips_and_encoded_len_is_exact() {
        for m in all() {
            let b = m.encode().expect("encodes");
            assert_eq!(b.len(), m.encoded_len(), "{m:?}");
            assert_eq!(MeshMsg::decode(&b), Ok(m));
        }
    }

    #[test]
    fn every_strict_prefix_is_truncated_not_a_panic() {
        for m in all() {
            let b = m.encode().expect("encodes");
            for n in 0..b.len() {
                assert!(
                    matches!(
                        MeshMsg::decode(&b[..n]),
                        Err(MeshDecodeError::Truncated { .. })
                    ),
                    "prefix {n} of {m:?}"
                );
            }
        }
    }

    #[test]
    fn bad_inputs_give_clear_errors() {
        assert_eq!(MeshMsg::decode(&[2, 1]), Err(MeshDecodeError::Version(2)));
        assert_eq!(
            MeshMsg::decode(&[1, 99]),
            Err(MeshDecodeError::UnknownType(99))
        );
        assert_eq!(
            MeshMsg::decode(&[1, 4, 9, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(MeshDecodeError::Layer(9))
        );
        assert_eq!(
            MeshMsg::decode(&[1, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]),
            Err(MeshDecodeError::Reason(7))
        );
        assert_eq!(
            MeshMsg::decode(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]),
            Err(MeshDecodeError::Window(0xffff))
        );
        let mut b = MeshMsg::Cancel {
            layer: Layer::High,
            seq: 1,
        }
        .encode()
        .expect("encodes");
        b.push(0);
        assert_eq!(MeshMsg::decode(&b), Err(MeshDecodeError::Trailing(1)));
        let huge = vec![0u8; MAX_MESSAGE_BYTES + 1];
        assert_eq!(
            MeshMsg::decode(&huge),
            Err(MeshDecodeError::TooLarge(MAX_MESSAGE_BYTES + 1))
        );
        // A Data message claiming a 4 GB payload is refused without allocating it.
        let mut d = MeshMsg::Data {
            record: Arc::new(record()),
            hops: 0,
            payload: Arc::from(&b""[..]),
        }
        .encode()
        .expect("encodes");
        let n = d.len();
        d[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            MeshMsg::decode(&d),
            Err(MeshDecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn encode_refuses_inconsistent_bitmaps() {
        let m = MeshMsg::Announce {
            layer: Layer::High,
            base: 0,
            bits: 20,
            bitmap: vec![0; 2],
        };
        assert_eq!(
            m.encode(),
            Err(MeshEncodeError::Bitmap { bits: 20, have: 2 })
        );
    }

    #[test]
    fn record_bytes_round_trip_and_refuse_short_input() {
        let r = record();
        let b = r.to_bytes();
        assert_eq!(ChunkRecord::from_bytes(&b), Ok(r));
        assert!(matches!(
            ChunkRecord::from_bytes(&b[..b.len() - 1]),
            Err(MeshDecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn signing_bytes_cover_every_field_but_the_signature() {
        let a = record();
        let mut b = a;
        b.signature = [0; 64];
        assert_eq!(a.signing_bytes(), b.signing_bytes());
        b.seq += 1;
        assert_ne!(a.signing_bytes(), b.signing_bytes());
    }
}
