//! The streamer's media, cut into mesh chunks (format: docs/stream.md).
//!
//! A test pattern (hum-media's, with its frame code) goes through one VP8 encoder (one layer) with a
//! keyframe forced at every chunk boundary, so every chunk is a start point (a viewer may join at
//! any chunk); Opus audio (a quiet 440 Hz tone, 20 ms frames) interleaves with the video frames in
//! the same chunk. Media time is the frame index (video: `k / fps`; audio: `a * 20 ms`), in
//! microseconds since the stream began.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hum_media::codec::{OpusConfig, OpusEncoder};
use hum_media::device::AudioSource;
use hum_media::video::pattern::pattern_frame;
use hum_media::video::{
    EncoderConfig, VideoError, VideoFormat, VideoFrame, VideoSource, Vp8Encoder, WallAnchor,
    Y4mSource,
};
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
    /// Microphone frames (the tone when `None`).
    mic: Option<MicQueue>,
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
            mic: None,
        })
    }

    fn frames_per_chunk(&self) -> u64 {
        (u64::from(self.cfg.fps) * self.cfg.chunk.as_micros() as u64 / 1_000_000).max(1)
    }

    /// Media time of video frame `k`.
    pub fn video_ts(&self, k: u64) -> u64 {
        k * 1_000_000 / u64::from(self.cfg.fps.max(1))
    }

    /// Encode the next pattern frame (and the audio up to it); returns the chunks it closed.
    pub fn next_frame(&mut self) -> Result<Vec<Chunk>, StreamError> {
        let ts = self.video_ts(self.frame);
        let captured = self.epoch + Duration::from_micros(ts);
        let img = pattern_frame(
            self.cfg.width,
            self.cfg.height,
            self.frame,
            captured,
            &self.anchor,
        )
        .map_err(|e| StreamError::Media(e.to_string()))?;
        self.encode(&img)
    }

    /// Encode `picture` as the next video frame (scaled to the stream's size when it differs),
    /// with the audio up to it; returns the chunks it closed.
    pub fn push_picture(&mut self, picture: &VideoFrame) -> Result<Vec<Chunk>, StreamError> {
        if picture.width() == self.cfg.width && picture.height() == self.cfg.height {
            self.encode(picture)
        } else {
            let scaled = hum_media::video::scale::scale(picture, self.cfg.width, self.cfg.height)
                .map_err(|e| StreamError::Media(e.to_string()))?;
            self.encode(&scaled)
        }
    }

    fn next_audio(&mut self) -> [f32; AUDIO_SAMPLES] {
        let mut pcm = [0f32; AUDIO_SAMPLES];
        match &self.mic {
            // A late microphone frame is silence here (the queue drops what comes too late).
            Some(q) => {
                if let Some(f) = q.lock().ok().and_then(|mut q| q.pop_front()) {
                    pcm.copy_from_slice(&f[..AUDIO_SAMPLES]);
                }
            }
            None => {
                for s in pcm.iter_mut() {
                    *s = 0.1 * self.phase.sin();
                    self.phase = (self.phase + 2.0 * std::f32::consts::PI * 440.0 / 48_000.0)
                        % (2.0 * std::f32::consts::PI);
                }
            }
        }
        pcm
    }

    fn encode(&mut self, img: &VideoFrame) -> Result<Vec<Chunk>, StreamError> {
        let k = self.frame;
        self.frame += 1;
        let ts = self.video_ts(k);
        let mut out = Vec::new();
        if self.opus.is_some() {
            while self.audio_frame * AUDIO_FRAME_US < ts {
                let pcm = self.next_audio();
                let Some(opus) = self.opus.as_mut() else {
                    break;
                };
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
        if let Some(e) = self
            .vp8
            .encode(img)
            .map_err(|e| StreamError::Media(e.to_string()))?
        {
            out.extend(self.chunker.push(Frame::video(ts, e.keyframe, e.data)));
        }
        Ok(out)
    }
}

/// Where the stream's picture comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VideoInput {
    /// hum-media's test pattern with its frame code (drawn at the stream's size).
    Pattern,
    /// A Y4M file, looped at its own rate.
    File(PathBuf),
    /// A camera (an index, `/dev/videoN` or part of its name; `None` = the first).
    Camera(Option<String>),
    /// The primary screen (X11; Wayland through the desktop portal).
    Screen,
}

/// Where the stream's sound comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AudioInput {
    /// A quiet 440 Hz tone (tests, demos).
    Tone,
    /// A microphone (a device id or name; `None` = the default input).
    Microphone(Option<String>),
}

/// The newest frame of a live source, handed from its reader thread to the encoder: the encoder
/// runs on the stream's own clock (a whole number of frames per chunk) and takes whatever the
/// source shows at each tick, so a camera at 30 fps or a file at 25 streams at the stream's rate.
type Latest = Arc<Mutex<Option<VideoFrame>>>;

/// Microphone frames (20 ms each) waiting for the encoder; the oldest is dropped past this many
/// (the encoder fills a gap with silence, so a queue would only add delay).
const MIC_QUEUE: usize = 5;
type MicQueue = Arc<Mutex<VecDeque<Vec<f32>>>>;

fn open_video(input: &VideoInput, cfg: &SourceConfig) -> Result<Box<dyn VideoSource>, StreamError> {
    let media = |e: VideoError| StreamError::Media(e.to_string());
    Ok(match input {
        VideoInput::Pattern => {
            return Err(StreamError::Media("the pattern has no reader".into()));
        }
        VideoInput::File(path) => Box::new(Y4mSource::open(path, true).map_err(media)?),
        VideoInput::Camera(device) => Box::new(
            hum_media::video::CaptureThread::open_camera(
                device.as_deref(),
                VideoFormat::new(cfg.width, cfg.height, cfg.fps),
            )
            .map_err(media)?,
        ),
        VideoInput::Screen => Box::new(
            hum_media::video::CaptureThread::open_screen(
                hum_media::video::screen::ScreenTarget::Monitor(None),
                cfg.fps,
            )
            .map_err(media)?,
        ),
    })
}

/// A source running in real time on its own thread, publishing into a node (the uploader).
#[derive(Debug)]
pub struct MediaStream {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<u64, StreamError>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// The pattern with the tone (or silence): what `hum stream start --source pattern` sends.
pub type PatternStream = MediaStream;

impl MediaStream {
    /// The test pattern (and the tone when `cfg.audio`); media time 0 is now.
    pub fn start(cfg: SourceConfig, layer: Layer, root: NodeHandle) -> Result<Self, StreamError> {
        Self::start_with(cfg, VideoInput::Pattern, AudioInput::Tone, layer, root)
    }

    /// Opens `video` and `audio` (their errors come back here: no camera, no file, no
    /// microphone) and starts encoding; media time 0 is now. Chunks go to `root` as
    /// [`Command::Publish`]. Audio is only sent when `cfg.audio`.
    pub fn start_with(
        cfg: SourceConfig,
        video: VideoInput,
        audio: AudioInput,
        layer: Layer,
        root: NodeHandle,
    ) -> Result<Self, StreamError> {
        let mut enc = StreamEncoder::new(cfg, layer)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut readers = Vec::new();
        let latest: Option<Latest> = match &video {
            VideoInput::Pattern => None,
            input => {
                let mut src = open_video(input, &cfg)?;
                let slot: Latest = Arc::new(Mutex::new(None));
                let (slot2, flag) = (slot.clone(), stop.clone());
                readers.push(
                    std::thread::Builder::new()
                        .name("hum-stream-video".into())
                        .spawn(move || {
                            while !flag.load(Ordering::SeqCst) {
                                match src.read() {
                                    Ok(f) => {
                                        if let Ok(mut s) = slot2.lock() {
                                            *s = Some(f);
                                        }
                                    }
                                    Err(e) => {
                                        tracing::warn!("stream video source stopped: {e}");
                                        return;
                                    }
                                }
                            }
                        })
                        .map_err(|e| StreamError::Media(e.to_string()))?,
                );
                Some(slot)
            }
        };
        if cfg.audio
            && let AudioInput::Microphone(device) = &audio
        {
            let mut mic = hum_media::device::CpalSource::open(device.as_deref())
                .map_err(|e| StreamError::Media(format!("microphone: {e}")))?;
            let queue: MicQueue = Arc::new(Mutex::new(VecDeque::new()));
            let (q2, flag) = (queue.clone(), stop.clone());
            readers.push(
                std::thread::Builder::new()
                    .name("hum-stream-mic".into())
                    .spawn(move || {
                        while !flag.load(Ordering::SeqCst) {
                            let mut pcm = vec![0f32; AUDIO_SAMPLES];
                            if let Err(e) = mic.read(&mut pcm) {
                                tracing::warn!("stream microphone stopped: {e}");
                                return;
                            }
                            if let Ok(mut q) = q2.lock() {
                                q.push_back(pcm);
                                while q.len() > MIC_QUEUE {
                                    q.pop_front();
                                }
                            }
                        }
                    })
                    .map_err(|e| StreamError::Media(e.to_string()))?,
            );
            enc.mic = Some(queue);
        }
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("hum-stream-source".into())
            .spawn(move || {
                let t0 = Instant::now();
                let mut chunks = 0;
                let mut last: Option<VideoFrame> = None;
                while !flag.load(Ordering::SeqCst) {
                    let due = t0 + Duration::from_micros(enc.video_ts(enc.frame));
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let out = match &latest {
                        None => enc.next_frame()?,
                        Some(slot) => {
                            if let Some(f) = slot.lock().ok().and_then(|mut s| s.take()) {
                                last = Some(f);
                            }
                            match &last {
                                // Nothing captured yet: wait for the first picture.
                                None => {
                                    std::thread::sleep(Duration::from_millis(5));
                                    continue;
                                }
                                Some(f) => enc.push_picture(f)?,
                            }
                        }
                    };
                    for c in out {
                        chunks += 1;
                        root.send(Command::Publish(c));
                    }
                }
                Ok(chunks)
            })
            .map_err(|e| StreamError::Media(e.to_string()))?;
        Ok(MediaStream {
            stop,
            thread: Some(thread),
            readers,
        })
    }

    /// Stop; returns the chunks published.
    pub fn stop(mut self) -> Result<u64, StreamError> {
        self.stop.store(true, Ordering::SeqCst);
        // Readers blocked in a device read end on their own once it returns.
        self.readers.clear();
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            _ => Err(StreamError::Media("source thread panicked".into())),
        }
    }
}

impl Drop for MediaStream {
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
