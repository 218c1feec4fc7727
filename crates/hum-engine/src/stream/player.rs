//! A viewer's picture: the chunks its player plays (verified, [`PlayedChunk`]) split into their
//! VP8 frames, each handed on at its media time within the chunk, so a decoder downstream (the
//! app's WebCodecs tile) shows motion at the stream's rate rather than a burst per chunk.
//!
//! Audio frames are not handed on yet (no audio output for streams).

use std::time::Duration;

use hum_mesh::Layer;
use hum_mesh::chunker::{Chunk, Track};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::node::PlayedChunk;

/// One encoded video frame of a stream, ready for a decoder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlayerFrame {
    pub data: Vec<u8>,
    pub keyframe: bool,
    /// Media time since the stream began, µs (WebCodecs' timestamp unit).
    pub timestamp_us: u64,
    /// When the streamer captured it, Unix ms (the stream's start + media time).
    pub capture_unix_ms: u64,
    pub width: u32,
    pub height: u32,
}

/// The picture size a VP8 keyframe declares (RFC 6386 section 9.1); `None` for a delta frame or
/// anything too short or without the start code.
pub fn vp8_keyframe_size(data: &[u8]) -> Option<(u32, u32)> {
    if data.len() < 10 || data[0] & 1 != 0 || data[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u32::from(u16::from_le_bytes([data[6], data[7]]) & 0x3fff);
    let h = u32::from(u16::from_le_bytes([data[8], data[9]]) & 0x3fff);
    (w > 0 && h > 0).then_some((w, h))
}

/// The video frames of one played chunk, in order; frames before the first keyframe of a
/// stream (size unknown) are left out. `size` carries the last keyframe's size across chunks.
pub fn video_frames(
    c: &PlayedChunk,
    started_ms: u64,
    size: &mut Option<(u32, u32)>,
) -> Vec<PlayerFrame> {
    let chunk = Chunk::new(
        Layer::High,
        c.seq,
        c.start_us,
        c.duration_us,
        true,
        c.payload.clone(),
    );
    let Some(frames) = chunk.frames() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for f in frames.into_iter().filter(|f| f.track == Track::Video) {
        if f.keyframe
            && let Some(s) = vp8_keyframe_size(&f.data)
        {
            *size = Some(s);
        }
        let Some((width, height)) = *size else {
            continue;
        };
        out.push(PlayerFrame {
            keyframe: f.keyframe,
            timestamp_us: f.ts_us,
            capture_unix_ms: started_ms + f.ts_us / 1000,
            width,
            height,
            data: f.data,
        });
    }
    out
}

/// Plays chunks from `rx` until it closes or `on_frame` returns false: each video frame goes to
/// `on_frame` at its offset from the time its chunk was played.
pub fn spawn_player(
    mut rx: mpsc::Receiver<PlayedChunk>,
    started_ms: u64,
    mut on_frame: impl FnMut(PlayerFrame) -> bool + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut size = None;
        while let Some(c) = rx.recv().await {
            let at = Instant::now();
            for f in video_frames(&c, started_ms, &mut size) {
                let off = f.timestamp_us.saturating_sub(c.start_us);
                tokio::time::sleep_until(at + Duration::from_micros(off)).await;
                if !on_frame(f) {
                    return;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::source::{SourceConfig, StreamEncoder};
    use hum_proto::Bitrate;

    #[test]
    fn played_chunks_become_sized_frames_in_order() {
        let cfg = SourceConfig {
            width: 160,
            height: 96,
            fps: 20,
            video_bitrate: Bitrate::from_kbps(300),
            chunk: Duration::from_millis(250),
            audio: true,
        };
        let mut enc = StreamEncoder::new(cfg, Layer::High).expect("encoder");
        let mut chunks = Vec::new();
        for _ in 0..11 {
            chunks.extend(enc.next_frame().expect("encode"));
        }
        assert_eq!(chunks.len(), 2);
        let mut size = None;
        let mut all = Vec::new();
        for c in &chunks {
            let played = PlayedChunk {
                seq: c.seq,
                start_us: c.start_us,
                duration_us: c.duration_us,
                payload: c.payload.clone(),
            };
            all.extend(video_frames(&played, 1_000, &mut size));
        }
        assert_eq!(all.len(), 10, "5 video frames a chunk, audio left out");
        assert!(all[0].keyframe && all[5].keyframe && !all[1].keyframe);
        assert!(all.iter().all(|f| (f.width, f.height) == (160, 96)));
        assert_eq!(all[3].timestamp_us, 150_000);
        assert_eq!(all[3].capture_unix_ms, 1_150);
        assert!(
            all.windows(2)
                .all(|w| w[0].timestamp_us < w[1].timestamp_us)
        );
        // Garbage is no frame, never a panic.
        assert_eq!(vp8_keyframe_size(&[0u8; 3]), None);
        assert_eq!(
            vp8_keyframe_size(&[1, 0, 0, 0x9d, 1, 0x2a, 1, 0, 1, 0]),
            None
        );
        let bad = PlayedChunk {
            seq: 0,
            start_us: 0,
            duration_us: 1,
            payload: vec![0xffu8; 5].into(),
        };
        assert!(video_frames(&bad, 0, &mut None).is_empty());
    }
}
