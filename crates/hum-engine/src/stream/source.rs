//! The streamer's media, cut into mesh chunks (format: docs/stream.md).
//!
//! A test pattern (hum-media's, with its frame code) goes through one VP8 encoder (one layer) with a
//! keyframe forced at every chunk boundary, so every chunk is a start point (a viewer may join at
//! any chunk); Opus audio (a quiet 440 Hz tone, 20 ms frames) interleaves with the video frames in
//! the same chunk. Media time is the frame index (video: `k / fps`; audio: `a * 20 ms`), in
//! microseconds since the stream began.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hum_media::codec::{OpusConfig, OpusEncoder};
use hum_media::video::pattern::pattern_frame;
use hum_media::video::{EncoderConfig, Vp8Encoder, WallAnchor};
use hum_mesh::Layer;
use hum_mesh::chunker::{Chunk, Chunker, Frame};
use hum_proto::Bitrate;

use super::StreamError;
use super::node::{Command, NodeHandle};

const AUDIO_FRAME_US: u64 = 20_000;
const AUDIO_SAMPLES: usize = 960;

/// What the pattern source makes.
#[derive(Clone, Copy, Debug)]
pub struct SourceConfig {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub video_bitrate: Bitrate,
    /// Chunk duration (100-500 ms): one keyframe per chunk.
    pub chunk: Duration,
    pub audio: bool,
}

impl SourceConfig {
    /// The stream's bitrate as the tracker should plan it: video, audio and the keyframe per chunk
    /// (a VP8 keyframe of the pattern is several times a delta frame).
    pub fn planned_rate(&self) -> Bitrate {
        let audio = if self.audio { 40_000 } else { 0 };
        Bitrate::from_bps(self.video_bitrate.bps() * 3 / 2 + audio)
    }
}

/// Pattern frames in, chunks out; no clock of its own (the caller paces it).
pub struct StreamEncoder {
    cfg: SourceConfig,
    vp8: Vp8Encoder,
    opus: Option<OpusEncoder>,
    chunker: Chunker,
    anchor: WallAnchor,
    epoch: Instant,
    frame: u64,
    audio_frame: u64,
    phase: f32,
}

impl std::fmt::Debug for StreamEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamEncoder")
            .field("cfg", &self.cfg)
            .field("frame", &self.frame)
            .finish_non_exhaustive()
    }
}

impl StreamEncoder {
    pub fn new(cfg: SourceConfig, layer: Layer) -> Result<Self, StreamError> {
        let ms = cfg.chunk.as_millis();
        if !(100..=500).contains(&ms) {
            return Err(StreamError::Media(format!(
                "chunk duration {ms} ms is outside 100-500 ms"
            )));
        }
        // Viewers play chunks back to back at the nominal duration, so a chunk must be a whole
        // number of frames (250 ms at 20 fps: 5; at 15 fps it would be 3.75 and drift).
        if !(cfg.chunk.as_micros() * u128::from(cfg.fps)).is_multiple_of(1_000_000) {
            return Err(StreamError::Media(format!(
                "a {ms} ms chunk is not a whole number of frames at {} fps",
                cfg.fps
            )));
        }
        let enc = EncoderConfig::camera(cfg.width, cfg.height, cfg.fps, cfg.video_bitrate)
            .without_frame_drops();
        let vp8 = Vp8Encoder::new(enc).map_err(|e| StreamError::Media(e.to_string()))?;
        let opus = if cfg.audio {
            Some(
                OpusEncoder::new(OpusConfig {
                    dtx: false,
                    fec: false,
                    bitrate_bps: 32_000,
                    ..OpusConfig::default()
                })
                .map_err(|e| StreamError::Media(e.to_string()))?,
            )
        } else {
            None
        };
        // Cut at the forced keyframes (exactly one chunk apart); `max` only guards a missing one.
        let chunker = Chunker::new(layer, cfg.chunk, cfg.chunk * 2);
        Ok(StreamEncoder {
            cfg,
            vp8,
            opus,
            chunker,
            anchor: WallAnchor::now(),
            epoch: Instant::now(),
            frame: 0,
            audio_frame: 0,
            phase: 0.0,
        })
    }

    fn frames_per_chunk(&self) -> u64 {
        (u64::from(self.cfg.fps) * self.cfg.chunk.as_micros() as u64 / 1_000_000).max(1)
    }

    /// Media time of video frame `k`.
    pub fn video_ts(&self, k: u64) -> u64 {
        k * 1_000_000 / u64::from(self.cfg.fps.max(1))
    }

    /// Encode the next video frame (and the audio up to it); returns the chunks it closed.
    pub fn next_frame(&mut self) -> Result<Vec<Chunk>, StreamError> {
        let k = self.frame;
        self.frame += 1;
        let ts = self.video_ts(k);
        let mut out = Vec::new();
        if let Some(opus) = self.opus.as_mut() {
            while self.audio_frame * AUDIO_FRAME_US < ts {
                let mut pcm = [0f32; AUDIO_SAMPLES];
                for s in pcm.iter_mut() {
                    *s = 0.1 * self.phase.sin();
                    self.phase = (self.phase + 2.0 * std::f32::consts::PI * 440.0 / 48_000.0)
                        % (2.0 * std::f32::consts::PI);
                }
                let data = opus
                    .encode(&pcm)
                    .map_err(|e| StreamError::Media(e.to_string()))?;
                out.extend(
                    self.chunker
                        .push(Frame::audio(self.audio_frame * AUDIO_FRAME_US, data)),
                );
                self.audio_frame += 1;
            }
        }
        if k.is_multiple_of(self.frames_per_chunk()) {
            self.vp8.request_keyframe();
        }
        let captured = self.epoch + Duration::from_micros(ts);
        let img = pattern_frame(self.cfg.width, self.cfg.height, k, captured, &self.anchor)
            .map_err(|e| StreamError::Media(e.to_string()))?;
        if let Some(e) = self
            .vp8
            .encode(&img)
            .map_err(|e| StreamError::Media(e.to_string()))?
        {
            out.extend(self.chunker.push(Frame::video(ts, e.keyframe, e.data)));
        }
        Ok(out)
    }
}

/// A pattern source running in real time on its own thread, publishing into a root node.
#[derive(Debug)]
pub struct PatternStream {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<u64, StreamError>>>,
}

impl PatternStream {
    /// Start encoding now; media time 0 is now. Chunks go to `root` as [`Command::Publish`].
    pub fn start(cfg: SourceConfig, layer: Layer, root: NodeHandle) -> Result<Self, StreamError> {
        let mut enc = StreamEncoder::new(cfg, layer)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("hum-stream-source".into())
            .spawn(move || {
                let t0 = Instant::now();
                let mut chunks = 0;
                while !flag.load(Ordering::SeqCst) {
                    let due = t0 + Duration::from_micros(enc.video_ts(enc.frame));
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    for c in enc.next_frame()? {
                        chunks += 1;
                        root.send(Command::Publish(c));
                    }
                }
                Ok(chunks)
            })
            .map_err(|e| StreamError::Media(e.to_string()))?;
        Ok(PatternStream {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop; returns the chunks published.
    pub fn stop(mut self) -> Result<u64, StreamError> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            _ => Err(StreamError::Media("source thread panicked".into())),
        }
    }
}

impl Drop for PatternStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hum_mesh::chunker::Track;

    #[test]
    fn every_chunk_starts_with_a_keyframe_and_carries_audio() {
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
        for _ in 0..41 {
            chunks.extend(enc.next_frame().expect("encode"));
        }
        // 41 frames at 20 fps: keyframes at 0, 5, ..., 40 close 8 chunks.
        assert_eq!(chunks.len(), 8);
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!(c.seq, i as u64);
            assert!(c.start_point, "chunk {i} is a join point");
            assert_eq!(c.start_us, i as u64 * 250_000);
            assert_eq!(c.duration_us, 250_000);
            assert_eq!(c.hash, *blake3::hash(&c.payload).as_bytes());
            let frames = c.frames().expect("well formed");
            let video: Vec<_> = frames.iter().filter(|f| f.track == Track::Video).collect();
            let audio: Vec<_> = frames.iter().filter(|f| f.track == Track::Audio).collect();
            assert_eq!(video.len(), 5);
            assert!(video[0].keyframe && hum_media::video::vp8::is_keyframe(&video[0].data));
            assert!(video[1..].iter().all(|f| !f.keyframe));
            // 20 ms audio frames: 12 or 13 per 250 ms, depending on where the cut falls.
            assert!((12..=13).contains(&audio.len()), "{}", audio.len());
            assert!(frames.iter().all(|f| f.ts_us >= c.start_us));
        }
        assert!(
            StreamEncoder::new(
                SourceConfig {
                    chunk: Duration::from_millis(50),
                    ..cfg
                },
                Layer::High
            )
            .is_err()
        );
        assert!(
            StreamEncoder::new(SourceConfig { fps: 15, ..cfg }, Layer::High).is_err(),
            "3.75 frames per chunk"
        );
    }
}
