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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceConfig {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub video_bitrate: Bitrate,
    /// Chunk duration (100-500 ms): one keyframe per chunk.
    pub chunk: Duration,
    pub audio: bool,
    /// Layers below the top one (the picture above), best first; each its own encoder, chunk
    /// sequence and swarm (docs/stream.md, "Layers").
    pub lower: [Option<LayerSpec>; 3],
}

/// A layer below the stream's top one: its picture size and video rate (`width == 0`: audio
/// only, which needs `audio`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerSpec {
    pub layer: Layer,
    pub width: u32,
    pub height: u32,
    pub video_bitrate: Bitrate,
}

impl LayerSpec {
    pub fn audio_only() -> Self {
        LayerSpec {
            layer: Layer::Audio,
            width: 0,
            height: 0,
            video_bitrate: Bitrate::ZERO,
        }
    }
    pub fn is_audio_only(&self) -> bool {
        self.width == 0
    }
}

/// Audio as the tracker plans it (Opus 32 kbit/s plus the chunk framing, rounded up).
const AUDIO_PLANNED_BPS: u64 = 40_000;

impl SourceConfig {
    /// The stream's bitrate as the tracker should plan it: video, audio and the keyframe per chunk
    /// (a VP8 keyframe of the pattern is several times a delta frame).
    pub fn planned_rate(&self) -> Bitrate {
        Self::planned(self.video_bitrate, self.audio)
    }

    fn planned(video: Bitrate, audio: bool) -> Bitrate {
        let audio = if audio { AUDIO_PLANNED_BPS } else { 0 };
        Bitrate::from_bps(video.bps() * 3 / 2 + audio)
    }

    /// Every layer published, best first: `(layer, planned rate, width, height)`; the top one is
    /// `top` at this config's picture.
    pub fn ladder(&self, top: Layer) -> Vec<(Layer, Bitrate, u32, u32)> {
        let mut out = vec![(top, self.planned_rate(), self.width, self.height)];
        for l in self.lower.iter().flatten() {
            if l.is_audio_only() && !self.audio {
                continue;
            }
            out.push((
                l.layer,
                Self::planned(l.video_bitrate, self.audio),
                l.width,
                l.height,
            ));
        }
        out
    }

    /// 160x96 at 20 fps, 300 kbit/s, 250 ms chunks, audio, one layer: cheap enough for unit
    /// tests in a debug build.
    pub fn small_for_tests() -> SourceConfig {
        SourceConfig {
            width: 160,
            height: 96,
            fps: 20,
            video_bitrate: Bitrate::from_kbps(300),
            chunk: Duration::from_millis(250),
            audio: true,
            lower: [None; 3],
        }
    }

    /// The design's ladder for a 1920x1080 source: 1080p ~4.5 Mbit/s, 720p ~2, 480p ~0.65,
    /// audio only 64 kbit/s (video rates here are the encoder's targets; the planned rates
    /// add the keyframe per chunk and audio).
    pub fn design_ladder(fps: u32, chunk: Duration) -> SourceConfig {
        SourceConfig {
            width: 1920,
            height: 1080,
            fps,
            video_bitrate: Bitrate::from_kbps(3000),
            chunk,
            audio: true,
            lower: [
                Some(LayerSpec {
                    layer: Layer::Medium,
                    width: 1280,
                    height: 720,
                    video_bitrate: Bitrate::from_kbps(1300),
                }),
                Some(LayerSpec {
                    layer: Layer::Low,
                    width: 854,
                    height: 480,
                    video_bitrate: Bitrate::from_kbps(400),
                }),
                Some(LayerSpec::audio_only()),
            ],
        }
    }

    /// Fewer layers when the streamer's measured upload cannot carry them all (with 20%
    /// headroom): the best layers go first; the lowest layer always stays. Returns the config
    /// and the name of its (new) top layer.
    pub fn fit_upload(&self, top: Layer, upload: Bitrate) -> (SourceConfig, Layer) {
        let ladder = self.ladder(top);
        let need =
            |from: usize| -> u64 { ladder[from..].iter().map(|l| l.1.bps()).sum::<u64>() * 6 / 5 };
        let mut first = 0;
        while first + 1 < ladder.len() && need(first) > upload.bps() {
            first += 1;
        }
        if first == 0 {
            return (*self, top);
        }
        let lower: Vec<LayerSpec> = self.lower.iter().flatten().copied().collect();
        // The new top is lower[first - 1]; what stays below it shifts up.
        let new_top = lower[first - 1];
        let mut rest = [None; 3];
        for (i, l) in lower[first..].iter().enumerate() {
            rest[i] = Some(*l);
        }
        if new_top.is_audio_only() {
            // Only audio fits: an audio-only stream (no picture).
            return (
                SourceConfig {
                    width: 0,
                    height: 0,
                    video_bitrate: Bitrate::ZERO,
                    lower: [None; 3],
                    ..*self
                },
                Layer::Audio,
            );
        }
        (
            SourceConfig {
                width: new_top.width,
                height: new_top.height,
                video_bitrate: new_top.video_bitrate,
                lower: rest,
                ..*self
            },
            new_top.layer,
        )
    }
}

/// One extra layer's encoder and chunker (video: its own VP8 at its size; audio only: the
/// stream's Opus frames, cut at the video layers' chunk boundaries so sequence numbers match).
struct LowerEnc {
    spec: LayerSpec,
    vp8: Option<Vp8Encoder>,
    chunker: Chunker,
}

/// Pattern frames in, chunks out; no clock of its own (the caller paces it).
pub struct StreamEncoder {
    cfg: SourceConfig,
    /// The top layer's encoder (`None`: an audio-only stream).
    vp8: Option<Vp8Encoder>,
    lower: Vec<LowerEnc>,
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
        let vp8_at = |w: u32, h: u32, rate: Bitrate| {
            Vp8Encoder::new(EncoderConfig::camera(w, h, cfg.fps, rate).without_frame_drops())
                .map_err(|e| StreamError::Media(e.to_string()))
        };
        let audio_only = cfg.width == 0;
        if audio_only && !cfg.audio {
            return Err(StreamError::Media(
                "a stream needs a picture or audio".into(),
            ));
        }
        let vp8 = if audio_only {
            None
        } else {
            Some(vp8_at(cfg.width, cfg.height, cfg.video_bitrate)?)
        };
        let mut lower = Vec::new();
        for spec in cfg.lower.iter().flatten() {
            if spec.layer == layer || lower.iter().any(|l: &LowerEnc| l.spec.layer == spec.layer) {
                return Err(StreamError::Media(format!(
                    "layer {:?} twice in the ladder",
                    spec.layer
                )));
            }
            let vp8 = if spec.is_audio_only() {
                if !cfg.audio {
                    continue;
                }
                None
            } else {
                Some(vp8_at(spec.width, spec.height, spec.video_bitrate)?)
            };
            lower.push(LowerEnc {
                spec: *spec,
                vp8,
                chunker: Chunker::new(spec.layer, cfg.chunk, cfg.chunk * 2),
            });
        }
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
            lower,
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
        // An audio-only stream draws a token picture nobody encodes (the clock still ticks).
        let (w, h) = if self.cfg.width == 0 {
            (16, 16)
        } else {
            (self.cfg.width, self.cfg.height)
        };
        let img = pattern_frame(w, h, self.frame, captured, &self.anchor)
            .map_err(|e| StreamError::Media(e.to_string()))?;
        self.encode(&img)
    }

    /// Encode `picture` as the next video frame (scaled to the stream's size when it differs),
    /// with the audio up to it; returns the chunks it closed.
    pub fn push_picture(&mut self, picture: &VideoFrame) -> Result<Vec<Chunk>, StreamError> {
        if self.cfg.width == 0
            || (picture.width() == self.cfg.width && picture.height() == self.cfg.height)
        {
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
        let media = |e: VideoError| StreamError::Media(e.to_string());
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
                let at = self.audio_frame * AUDIO_FRAME_US;
                for l in &mut self.lower {
                    out.extend(l.chunker.push(Frame::audio(at, data.clone())));
                }
                out.extend(self.chunker.push(Frame::audio(at, data)));
                self.audio_frame += 1;
            }
        }
        let boundary = k.is_multiple_of(self.frames_per_chunk());
        if let Some(vp8) = &mut self.vp8 {
            if boundary {
                vp8.request_keyframe();
            }
            if let Some(e) = vp8.encode(img).map_err(media)? {
                out.extend(self.chunker.push(Frame::video(ts, e.keyframe, e.data)));
            }
        } else if boundary {
            out.extend(self.chunker.flush(ts));
        }
        for l in &mut self.lower {
            match &mut l.vp8 {
                Some(vp8) => {
                    if boundary {
                        vp8.request_keyframe();
                    }
                    let scaled = hum_media::video::scale::scale(img, l.spec.width, l.spec.height)
                        .map_err(media)?;
                    if let Some(e) = vp8.encode(&scaled).map_err(media)? {
                        out.extend(l.chunker.push(Frame::video(ts, e.keyframe, e.data)));
                    }
                }
                // Audio only: cut where the video layers cut (their keyframes), so chunk `n` of
                // every layer covers the same media time.
                None if boundary => out.extend(l.chunker.flush(ts)),
                None => {}
            }
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
        let cfg = SourceConfig::small_for_tests();
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

    #[test]
    fn every_layer_cuts_at_the_same_media_times_and_video_layers_start_on_keyframes() {
        let cfg = SourceConfig {
            lower: [
                Some(LayerSpec {
                    layer: Layer::Low,
                    width: 80,
                    height: 48,
                    video_bitrate: Bitrate::from_kbps(100),
                }),
                Some(LayerSpec::audio_only()),
                None,
            ],
            ..SourceConfig::small_for_tests()
        };
        let mut enc = StreamEncoder::new(cfg, Layer::High).expect("encoder");
        let mut by_layer: std::collections::BTreeMap<Layer, Vec<Chunk>> = Default::default();
        for _ in 0..41 {
            for c in enc.next_frame().expect("encode") {
                by_layer.entry(c.layer).or_default().push(c);
            }
        }
        assert_eq!(by_layer.len(), 3);
        for (layer, chunks) in &by_layer {
            assert_eq!(chunks.len(), 8, "{layer:?}");
            for (i, c) in chunks.iter().enumerate() {
                assert_eq!(c.seq, i as u64);
                let frames = c.frames().expect("well formed");
                let video: Vec<_> = frames.iter().filter(|f| f.track == Track::Video).collect();
                let audio = frames.len() - video.len();
                assert!(
                    (12..=13).contains(&audio),
                    "{layer:?} {i}: {audio} audio frames"
                );
                if *layer == Layer::Audio {
                    assert!(video.is_empty());
                    // Its first audio frame is within 20 ms of the video layers' cut.
                    assert!(c.start_us >= i as u64 * 250_000);
                    assert!(c.start_us < i as u64 * 250_000 + 20_000);
                } else {
                    assert_eq!(c.start_us, i as u64 * 250_000);
                    assert!(c.start_point);
                    assert_eq!(video.len(), 5);
                    assert!(hum_media::video::vp8::is_keyframe(&video[0].data));
                }
            }
        }
        // The lower layer is smaller than the top one.
        let bytes = |l| by_layer[&l].iter().map(|c| c.payload.len()).sum::<usize>();
        assert!(bytes(Layer::Low) < bytes(Layer::High));
        assert!(bytes(Layer::Audio) < bytes(Layer::Low));
        let ladder = cfg.ladder(Layer::High);
        assert_eq!(
            ladder.iter().map(|l| l.0).collect::<Vec<_>>(),
            vec![Layer::High, Layer::Low, Layer::Audio]
        );
    }

    #[test]
    fn a_weak_upload_publishes_fewer_layers() {
        let full = SourceConfig::design_ladder(30, Duration::from_millis(250));
        let rates: Vec<u64> = full
            .ladder(Layer::High)
            .iter()
            .map(|l| l.1.bps() / 1000)
            .collect();
        // 1080p ~4.5, 720p ~2, 480p ~0.65 Mbit/s, audio ~64 kbit/s, as planned by the tracker.
        assert_eq!(rates, vec![4540, 1990, 640, 40]);
        let (c, top) = full.fit_upload(Layer::High, Bitrate::from_mbps(20));
        assert_eq!((top, c), (Layer::High, full));
        // 8.6 Mbit/s with headroom do not fit in 5; 720p and below (3.2 with headroom) do.
        let (c, top) = full.fit_upload(Layer::High, Bitrate::from_mbps(5));
        assert_eq!(top, Layer::Medium);
        assert_eq!((c.width, c.height), (1280, 720));
        assert_eq!(
            c.ladder(top).iter().map(|l| l.0).collect::<Vec<_>>(),
            vec![Layer::Medium, Layer::Low, Layer::Audio]
        );
        let (c, top) = full.fit_upload(Layer::High, Bitrate::from_kbps(500));
        assert_eq!(top, Layer::Audio);
        assert_eq!(c.ladder(top).len(), 1);
        let mut enc =
            StreamEncoder::new(SourceConfig { fps: 20, ..c }, top).expect("an audio-only encoder");
        let mut chunks = Vec::new();
        for _ in 0..11 {
            chunks.extend(enc.next_frame().expect("encode"));
        }
        assert_eq!(chunks.len(), 2);
        assert!(chunks.iter().all(|c| c.layer == Layer::Audio));
    }
}
