//! Encoded media frames in, chunks out.
//!
//! A chunk is a run of consecutive frames of one layer lasting between `min` and `max` (100-500 ms by
//! default: long enough that per-chunk overhead is small, short enough that store-and-forward at each
//! hop adds little lag). A chunk is cut at a keyframe once `min` has passed, or at `max` regardless;
//! a chunk that starts with a keyframe is a *start point* where a viewer may begin. Each chunk is named
//! by the BLAKE3 hash of its bytes.
//!
//! Chunk bytes are the frames, each as `[ts offset us: u32][flags: u8][len: u32][data]`, so a viewer
//! can split them again with [`Chunk::frames`]. Flags: bit 0 keyframe, bit 1 the audio track (clear:
//! video); other bits must be zero. Only a video keyframe cuts a chunk or makes a start point, so audio
//! frames interleave with video in one chunk (docs/stream.md).

use std::sync::Arc;
use std::time::Duration;

use hum_proto::mesh::Layer;

/// Which track of a chunk a frame belongs to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Track {
    #[default]
    Video,
    Audio,
}

const FLAG_KEY: u8 = 1;
const FLAG_AUDIO: u8 = 2;

/// One encoded frame from the encoder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Media time, microseconds since the stream began.
    pub ts_us: u64,
    pub keyframe: bool,
    pub track: Track,
    pub data: Vec<u8>,
}

impl Frame {
    /// A video frame.
    pub fn video(ts_us: u64, keyframe: bool, data: Vec<u8>) -> Frame {
        Frame {
            ts_us,
            keyframe,
            track: Track::Video,
            data,
        }
    }
    /// An audio frame (never a cut point).
    pub fn audio(ts_us: u64, data: Vec<u8>) -> Frame {
        Frame {
            ts_us,
            keyframe: false,
            track: Track::Audio,
            data,
        }
    }
    /// A video keyframe: where a chunk may be cut and a viewer may start.
    fn cuts(&self) -> bool {
        self.keyframe && self.track == Track::Video
    }
}

/// A finished chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub layer: Layer,
    pub seq: u64,
    pub start_us: u64,
    pub duration_us: u32,
    pub start_point: bool,
    pub hash: [u8; 32],
    pub payload: Arc<[u8]>,
}

impl Chunk {
    /// Build a chunk from raw payload bytes (the hash is computed here).
    pub fn new(
        layer: Layer,
        seq: u64,
        start_us: u64,
        duration_us: u32,
        start_point: bool,
        payload: Arc<[u8]>,
    ) -> Chunk {
        let hash = *blake3::hash(&payload).as_bytes();
        Chunk {
            layer,
            seq,
            start_us,
            duration_us,
            start_point,
            hash,
            payload,
        }
    }

    /// Split the payload back into frames; `None` if it is not a well-formed chunk body.
    pub fn frames(&self) -> Option<Vec<Frame>> {
        let mut out = Vec::new();
        let mut p = &self.payload[..];
        while !p.is_empty() {
            if p.len() < 9 {
                return None;
            }
            let off = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as u64;
            let flags = p[4];
            if flags & !(FLAG_KEY | FLAG_AUDIO) != 0 {
                return None;
            }
            let len = u32::from_be_bytes([p[5], p[6], p[7], p[8]]) as usize;
            p = &p[9..];
            if p.len() < len {
                return None;
            }
            out.push(Frame {
                ts_us: self.start_us.saturating_add(off),
                keyframe: flags & FLAG_KEY != 0,
                track: if flags & FLAG_AUDIO != 0 {
                    Track::Audio
                } else {
                    Track::Video
                },
                data: p[..len].to_vec(),
            });
            p = &p[len..];
        }
        Some(out)
    }
}

#[derive(Debug)]
pub struct Chunker {
    layer: Layer,
    min_us: u64,
    max_us: u64,
    next_seq: u64,
    buf: Vec<u8>,
    start_us: Option<u64>,
    start_point: bool,
}

impl Chunker {
    /// `min`/`max` chunk duration; `max` is raised to `min` if smaller.
    pub fn new(layer: Layer, min: Duration, max: Duration) -> Self {
        let min_us = min.as_micros() as u64;
        Chunker {
            layer,
            min_us,
            max_us: (max.as_micros() as u64).max(min_us),
            next_seq: 0,
            buf: Vec::new(),
            start_us: None,
            start_point: false,
        }
    }

    /// The next sequence number this chunker will emit.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Add a frame; returns the chunk this frame closed, if any (the frame starts the next one).
    pub fn push(&mut self, frame: Frame) -> Option<Chunk> {
        let mut out = None;
        if let Some(start) = self.start_us {
            let age = frame.ts_us.saturating_sub(start);
            if age >= self.max_us || (frame.cuts() && age >= self.min_us) {
                out = self.cut(frame.ts_us);
            }
        }
        let start = *self.start_us.get_or_insert_with(|| {
            self.start_point = frame.cuts();
            frame.ts_us
        });
        let off = frame.ts_us.saturating_sub(start).min(u32::MAX as u64) as u32;
        self.buf.extend_from_slice(&off.to_be_bytes());
        let audio = if frame.track == Track::Audio {
            FLAG_AUDIO
        } else {
            0
        };
        self.buf.push((u8::from(frame.keyframe) * FLAG_KEY) | audio);
        self.buf
            .extend_from_slice(&(frame.data.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(&frame.data);
        out
    }

    /// Close the current chunk at media time `end_us` (end of stream).
    pub fn flush(&mut self, end_us: u64) -> Option<Chunk> {
        self.cut(end_us)
    }

    fn cut(&mut self, end_us: u64) -> Option<Chunk> {
        let start = self.start_us.take()?;
        let payload: Arc<[u8]> = Arc::from(std::mem::take(&mut self.buf));
        let dur = end_us.saturating_sub(start).min(u32::MAX as u64) as u32;
        let c = Chunk::new(
            self.layer,
            self.next_seq,
            start,
            dur,
            self.start_point,
            payload,
        );
        self.next_seq += 1;
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ms: u64, key: bool) -> Frame {
        Frame::video(ms * 1000, key, vec![ms as u8; 10])
    }

    #[test]
    fn audio_interleaves_and_never_cuts() {
        let mut c = Chunker::new(
            Layer::High,
            Duration::from_millis(100),
            Duration::from_millis(500),
        );
        let mut chunks = vec![];
        for ms in (0..600u64).step_by(20) {
            if ms % 200 == 0 {
                chunks.extend(c.push(frame(ms, true)));
            }
            // An audio frame flagged as a keyframe still does not cut.
            let mut a = Frame::audio(ms * 1000, vec![1, 2, 3]);
            a.keyframe = ms == 120;
            chunks.extend(c.push(a));
        }
        assert_eq!(chunks.len(), 2);
        let f = chunks[0].frames().expect("well formed");
        assert_eq!(f[0], frame(0, true));
        assert_eq!(f.iter().filter(|f| f.track == Track::Audio).count(), 10);
        assert!(chunks.iter().all(|c| c.start_point));
        // Unknown flag bits are refused.
        let mut raw = chunks[1].payload.to_vec();
        raw[4] |= 0x80;
        let bad = Chunk::new(Layer::High, 9, 0, 1, true, Arc::from(raw));
        assert!(bad.frames().is_none());
    }

    #[test]
    fn cuts_at_keyframes_after_min_and_at_max_regardless() {
        let mut c = Chunker::new(
            Layer::High,
            Duration::from_millis(100),
            Duration::from_millis(500),
        );
        let mut chunks = vec![];
        // 30 fps; keyframes at 0, 66 (too early to cut), 200, then none until 1000.
        for i in 0..34u64 {
            let ms = i * 1000 / 30;
            let key = matches!(ms, 0 | 66 | 200 | 1000);
            chunks.extend(c.push(frame(ms, key)));
        }
        chunks.extend(c.flush(34 * 1000 / 30 * 1000));
        let starts: Vec<u64> = chunks.iter().map(|c| c.start_us / 1000).collect();
        let points: Vec<bool> = chunks.iter().map(|c| c.start_point).collect();
        // 0..200 (keyframe after min), 200..700 (max), 700..1000 (keyframe), 1000..end.
        assert_eq!(starts, vec![0, 200, 700, 1000]);
        assert_eq!(points, vec![true, true, false, true]);
        assert_eq!(
            chunks.iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert!(chunks.iter().all(|c| c.duration_us as u64 <= 500_000));
    }

    #[test]
    fn frames_round_trip_and_hash_names_the_bytes() {
        let mut c = Chunker::new(
            Layer::Audio,
            Duration::from_millis(100),
            Duration::from_millis(100),
        );
        for ms in [0, 20, 40, 60, 80] {
            assert!(c.push(frame(ms, ms == 0)).is_none());
        }
        let ch = c.push(frame(100, false)).expect("cut at max");
        let frames = ch.frames().expect("well formed");
        assert_eq!(frames.len(), 5);
        assert_eq!(frames[2], frame(40, false));
        assert_eq!(ch.hash, *blake3::hash(&ch.payload).as_bytes());
        let bad = Chunk {
            payload: Arc::from(&ch.payload[..5]),
            ..ch
        };
        assert!(bad.frames().is_none());
    }
}
