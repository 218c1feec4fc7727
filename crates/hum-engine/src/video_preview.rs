//! The local video preview: a [`VideoSource`] (the test pattern, a Y4M file or a camera) run
//! through hum-media's VP8 encoder on a thread of its own, handing each encoded frame to a
//! callback. The desktop app streams these frames to its webview, which decodes them with
//! WebCodecs (docs/app.md, "Video"): the self-view of the camera button, and the same encoded
//! frames a call will send, so what the user sees is what peers get.
//!
//! Nothing here knows tauri; the callback decides where frames go. Remote tracks reach the app
//! as the same [`PreviewFrame`] shape (encoded VP8 + keyframe flag + timestamps + size), so the
//! app's channel and video tile serve both.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use hum_media::video::{
    EncoderConfig, PatternSource, VideoError, VideoFormat, VideoFrame, VideoSource, Vp8Encoder,
    WallAnchor, Y4mSource,
};
use hum_proto::units::Bitrate;
use thiserror::Error;

/// Where the preview's pictures come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreviewSource {
    /// hum-media's moving test pattern with its machine-readable frame code.
    Pattern,
    /// A Y4M file, looped, at its own size and rate.
    Y4m(PathBuf),
    /// A camera through nokhwa: an index, `/dev/videoN` or part of its name; `None` = the first.
    Camera(Option<String>),
}

impl PreviewSource {
    /// Parses the setting's text form: `pattern`, `camera`, `camera:NAME`, or `file:PATH` / a
    /// path ending in `.y4m`.
    pub fn parse(s: &str) -> Result<Self, PreviewError> {
        let s = s.trim();
        match s {
            "pattern" => Ok(Self::Pattern),
            "camera" | "" => Ok(Self::Camera(None)),
            _ => {
                if let Some(dev) = s.strip_prefix("camera:") {
                    Ok(Self::Camera(Some(dev.to_owned()).filter(|d| !d.is_empty())))
                } else if let Some(path) = s.strip_prefix("file:") {
                    Ok(Self::Y4m(PathBuf::from(path)))
                } else if s.ends_with(".y4m") {
                    Ok(Self::Y4m(PathBuf::from(s)))
                } else {
                    Err(PreviewError::UnknownSource(s.to_owned()))
                }
            }
        }
    }

    /// The text form [`parse`](Self::parse) reads.
    pub fn to_setting(&self) -> String {
        match self {
            Self::Pattern => "pattern".into(),
            Self::Y4m(p) => format!("file:{}", p.display()),
            Self::Camera(None) => "camera".into(),
            Self::Camera(Some(d)) => format!("camera:{d}"),
        }
    }
}

/// What to preview and how to encode it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewConfig {
    pub source: PreviewSource,
    /// Asked-for size and rate (a camera gives the closest it has; a Y4M file its own).
    pub format: VideoFormat,
    pub bitrate: Bitrate,
}

impl PreviewConfig {
    /// The camera's top simulcast layer: 1280x720 at 30 fps, 1.5 Mbit/s (docs/video.md).
    pub fn hd(source: PreviewSource) -> Self {
        Self {
            source,
            format: VideoFormat::new(1280, 720, 30),
            bitrate: Bitrate::from_kbps(1500),
        }
    }

    /// The middle layer: 640x360 at 30 fps, 500 kbit/s (what a thumbnail receives).
    pub fn sd(source: PreviewSource) -> Self {
        Self {
            source,
            format: VideoFormat::new(640, 360, 30),
            bitrate: Bitrate::from_kbps(500),
        }
    }
}

/// One encoded frame, ready for a decoder (WebCodecs `EncodedVideoChunk`, libvpx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewFrame {
    /// The VP8 frame.
    pub data: Vec<u8>,
    pub keyframe: bool,
    /// Media time since the stream's first frame, microseconds (WebCodecs' timestamp unit).
    pub timestamp_us: u64,
    /// Capture time, Unix milliseconds (latency across processes, like the pattern's code).
    pub capture_unix_ms: u64,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Error)]
pub enum PreviewError {
    #[error(
        "unknown video source \"{0}\": use pattern, camera, camera:NAME or a .y4m file (file:PATH)"
    )]
    UnknownSource(String),
    #[error("{0}")]
    Video(#[from] VideoError),
}

/// Counters of a running preview.
#[derive(Debug, Default)]
struct Counters {
    frames: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
}

/// A running preview; dropping it (or [`stop`](Self::stop)) ends the thread.
pub struct VideoPreview {
    name: String,
    format: VideoFormat,
    stop: Arc<AtomicBool>,
    keyframe: Arc<AtomicBool>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<Option<PreviewError>>>,
}

impl std::fmt::Debug for VideoPreview {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoPreview")
            .field("name", &self.name)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// Opens the source `config` names, in real time.
pub fn open_source(config: &PreviewConfig) -> Result<Box<dyn VideoSource>, PreviewError> {
    Ok(match &config.source {
        PreviewSource::Pattern => Box::new(PatternSource::realtime(config.format)?),
        PreviewSource::Y4m(path) => Box::new(Y4mSource::open(path, true)?),
        PreviewSource::Camera(device) => camera(device.as_deref(), config.format)?,
    })
}

fn camera(device: Option<&str>, want: VideoFormat) -> Result<Box<dyn VideoSource>, PreviewError> {
    Ok(Box::new(hum_media::video::CaptureThread::open_camera(
        device, want,
    )?))
}

impl VideoPreview {
    /// Opens the source (its errors come back here: no camera, a bad file) and starts encoding
    /// on a thread named after it. `on_frame` gets every encoded frame; returning `false` stops
    /// the preview (nobody listens any more).
    pub fn start(
        config: PreviewConfig,
        on_frame: impl FnMut(PreviewFrame) -> bool + Send + 'static,
    ) -> Result<Self, PreviewError> {
        let source = open_source(&config)?;
        Self::start_with(source, config.bitrate, on_frame)
    }

    /// Like [`start`](Self::start) with a source opened by the caller (tests use a virtual
    /// clock).
    pub fn start_with(
        source: Box<dyn VideoSource>,
        bitrate: Bitrate,
        on_frame: impl FnMut(PreviewFrame) -> bool + Send + 'static,
    ) -> Result<Self, PreviewError> {
        let format = source.format();
        let name = source.name();
        let encoder = Vp8Encoder::new(EncoderConfig::camera(
            format.width,
            format.height,
            format.fps.max(1),
            bitrate,
        ))?;
        let stop = Arc::new(AtomicBool::new(false));
        let keyframe = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let run = Run {
            source,
            encoder,
            stop: stop.clone(),
            keyframe: keyframe.clone(),
            counters: counters.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("preview {name}"))
            .spawn(move || run.run(on_frame))
            .map_err(VideoError::Io)?;
        Ok(Self {
            name,
            format,
            stop,
            keyframe,
            counters,
            thread: Some(thread),
        })
    }

    /// The source's name ("test pattern 1280x720@30", "camera …").
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Size and nominal rate of the frames.
    pub fn format(&self) -> VideoFormat {
        self.format
    }

    /// The next frame will be a keyframe (a decoder joined late or lost its state).
    pub fn request_keyframe(&self) {
        self.keyframe.store(true, Ordering::Relaxed);
    }

    /// Frames and bytes handed to the callback so far, and frames the encoder's rate control
    /// dropped.
    pub fn stats(&self) -> (u64, u64, u64) {
        (
            self.counters.frames.load(Ordering::Relaxed),
            self.counters.bytes.load(Ordering::Relaxed),
            self.counters.dropped.load(Ordering::Relaxed),
        )
    }

    /// Whether the thread still runs (a file ended, a camera went away, the callback said stop).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops and waits for the thread; the error that ended it early, if any.
    pub fn stop(mut self) -> Option<PreviewError> {
        self.halt()
    }

    fn halt(&mut self) -> Option<PreviewError> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok().flatten())
    }
}

impl Drop for VideoPreview {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The encoding thread's state.
struct Run {
    source: Box<dyn VideoSource>,
    encoder: Vp8Encoder,
    stop: Arc<AtomicBool>,
    keyframe: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

impl Run {
    fn run(mut self, mut on_frame: impl FnMut(PreviewFrame) -> bool) -> Option<PreviewError> {
        let anchor = WallAnchor::now();
        let mut first: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            let frame = match self.source.read() {
                Ok(f) => f,
                Err(e) => return Some(e.into()),
            };
            if self.keyframe.swap(false, Ordering::Relaxed) {
                self.encoder.request_keyframe();
            }
            let encoded = match self.encoder.encode(&frame) {
                Ok(Some(e)) => e,
                Ok(None) => {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(e) => return Some(e.into()),
            };
            let start = *first.get_or_insert(encoded.captured);
            let out = PreviewFrame {
                timestamp_us: encoded
                    .captured
                    .saturating_duration_since(start)
                    .as_micros() as u64,
                capture_unix_ms: anchor.unix_ms(encoded.captured),
                keyframe: encoded.keyframe,
                width: encoded.width,
                height: encoded.height,
                data: encoded.data,
            };
            self.counters.frames.fetch_add(1, Ordering::Relaxed);
            self.counters
                .bytes
                .fetch_add(out.data.len() as u64, Ordering::Relaxed);
            if !on_frame(out) {
                return None;
            }
        }
        None
    }
}

/// One camera for two consumers: the self-view preview reads the camera and [`tap`]s every frame
/// into the share; a call's video track reads them back through a [`reader`] (a [`VideoSource`]
/// that blocks while the camera is off). So a camera that can be opened once serves both, the
/// call's media session can start before the camera is turned on, and turning it on or off
/// mid-call needs no renegotiation (the track is there, silent while off).
///
/// One reader at a time: a new reader, or [`close_readers`], ends the previous one (its `read`
/// returns [`VideoError::Ended`], which ends the session's capture thread).
///
/// [`tap`]: Self::tap
/// [`reader`]: Self::reader
/// [`close_readers`]: Self::close_readers
#[derive(Default)]
pub struct CameraShare {
    state: std::sync::Mutex<ShareState>,
    ready: std::sync::Condvar,
}

#[derive(Default)]
struct ShareState {
    /// The newest frame not yet read (a slow reader skips to the newest, like a camera does).
    frame: Option<VideoFrame>,
    /// Generation of the live reader (0: none).
    reader: u64,
    last: u64,
}

impl std::fmt::Debug for CameraShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraShare").finish_non_exhaustive()
    }
}

impl CameraShare {
    /// Wraps the camera's source: every frame read from it is also offered to the reader.
    pub fn tap(self: &Arc<Self>, source: Box<dyn VideoSource>) -> Box<dyn VideoSource> {
        Box::new(TapSource {
            inner: source,
            share: self.clone(),
        })
    }

    /// A source of the tapped frames, nominally `format` (frames come at whatever size the
    /// camera gives). Ends the previous reader.
    pub fn reader(self: &Arc<Self>, format: VideoFormat) -> Box<dyn VideoSource> {
        let generation = match self.state.lock() {
            Ok(mut s) => {
                s.last += 1;
                s.reader = s.last;
                s.frame = None;
                s.reader
            }
            Err(_) => 0,
        };
        self.ready.notify_all();
        Box::new(SharedSource {
            share: self.clone(),
            generation,
            format,
        })
    }

    /// Ends the live reader (a call's session is about to stop and joins its capture thread).
    pub fn close_readers(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.reader = 0;
            s.frame = None;
        }
        self.ready.notify_all();
    }

    /// Whether a reader is live (a call takes the camera's frames).
    pub fn has_reader(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.reader != 0)
    }

    fn offer(&self, frame: &VideoFrame) {
        if let Ok(mut s) = self.state.lock()
            && s.reader != 0
        {
            s.frame = Some(frame.clone());
            drop(s);
            self.ready.notify_all();
        }
    }
}

struct TapSource {
    inner: Box<dyn VideoSource>,
    share: Arc<CameraShare>,
}

impl VideoSource for TapSource {
    fn read(&mut self) -> Result<VideoFrame, VideoError> {
        let frame = self.inner.read()?;
        self.share.offer(&frame);
        Ok(frame)
    }
    fn format(&self) -> VideoFormat {
        self.inner.format()
    }
    fn name(&self) -> String {
        self.inner.name()
    }
}

struct SharedSource {
    share: Arc<CameraShare>,
    generation: u64,
    format: VideoFormat,
}

impl VideoSource for SharedSource {
    fn read(&mut self) -> Result<VideoFrame, VideoError> {
        let mut s = self.share.state.lock().map_err(|_| VideoError::Ended)?;
        loop {
            if s.reader != self.generation {
                return Err(VideoError::Ended);
            }
            if let Some(f) = s.frame.take() {
                return Ok(f);
            }
            // Woken by a frame or by close_readers; the timeout only bounds a missed wake-up.
            s = self
                .share
                .ready
                .wait_timeout(s, std::time::Duration::from_millis(250))
                .map_err(|_| VideoError::Ended)?
                .0;
        }
    }
    fn format(&self) -> VideoFormat {
        self.format
    }
    fn name(&self) -> String {
        "shared camera".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hum_media::video::{FrameClock, PatternAnalyser, Vp8Decoder};
    use std::sync::mpsc;

    fn virtual_pattern(w: u32, h: u32) -> Box<dyn VideoSource> {
        let t0 = Instant::now();
        Box::new(
            PatternSource::new(
                w,
                h,
                FrameClock::virtual_from(t0, 30),
                WallAnchor::fixed(t0, 1_700_000_000_000_000),
            )
            .expect("pattern"),
        )
    }

    #[test]
    fn a_shared_camera_feeds_the_reader_only_while_tapped_and_closing_ends_it() {
        let share = Arc::new(CameraShare::default());
        let mut tapped = share.tap(virtual_pattern(160, 90));
        // No reader: frames pass through and nothing is kept.
        tapped.read().expect("frame");
        assert!(!share.has_reader());
        let mut reader = share.reader(VideoFormat::new(160, 90, 30));
        assert_eq!(reader.format(), VideoFormat::new(160, 90, 30));
        let sent = tapped.read().expect("frame");
        let got = reader.read().expect("the tapped frame");
        assert_eq!(got, sent);
        // The newest wins when the reader is slow.
        tapped.read().expect("frame");
        let newest = tapped.read().expect("frame");
        assert_eq!(reader.read().expect("newest"), newest);
        // A reader blocked on a camera that is off ends when the share closes it.
        let t = std::thread::spawn(move || reader.read().err());
        share.close_readers();
        assert!(matches!(t.join().expect("join"), Some(VideoError::Ended)));
        // A new reader ends the old one.
        let mut first = share.reader(VideoFormat::new(160, 90, 30));
        let _second = share.reader(VideoFormat::new(160, 90, 30));
        assert!(matches!(first.read(), Err(VideoError::Ended)));
    }

    #[test]
    fn sources_parse_from_their_setting() {
        for s in ["pattern", "camera", "camera:/dev/video2", "file:/tmp/a.y4m"] {
            assert_eq!(PreviewSource::parse(s).expect(s).to_setting(), s);
        }
        assert_eq!(
            PreviewSource::parse("clip.y4m").expect("y4m"),
            PreviewSource::Y4m("clip.y4m".into())
        );
        assert_eq!(
            PreviewSource::parse("camera:").expect("camera"),
            PreviewSource::Camera(None)
        );
        let e = PreviewSource::parse("webcam").expect_err("unknown");
        assert!(e.to_string().contains("pattern, camera"), "{e}");
    }

    /// A 320x180 pattern preview handing frames over a bounded channel: the thread runs at most
    /// a few frames ahead of the reader.
    fn pattern_preview() -> (VideoPreview, mpsc::Receiver<PreviewFrame>) {
        let (tx, rx) = mpsc::sync_channel(2);
        let preview = VideoPreview::start_with(
            virtual_pattern(320, 180),
            Bitrate::from_kbps(300),
            move |f| tx.send(f).is_ok(),
        )
        .expect("start");
        (preview, rx)
    }

    #[test]
    fn the_pattern_is_encoded_and_every_code_decodes_in_order() {
        let (preview, rx) = pattern_preview();
        assert_eq!(preview.format(), VideoFormat::new(320, 180, 30));
        let frames: Vec<PreviewFrame> = rx.iter().take(40).collect();
        drop(rx); // unblocks the thread's send, so the stop below is seen
        drop(preview);
        assert!(frames[0].keyframe, "a decoder can start at the first frame");
        let mut decoder = Vp8Decoder::new().expect("decoder");
        let t0 = Instant::now();
        let mut analyser = PatternAnalyser::new(WallAnchor::fixed(t0, 1_700_000_000_000_000));
        for (i, f) in frames.iter().enumerate() {
            assert_eq!((f.width, f.height), (320, 180));
            // 30 fps on the media clock: frame i at i/30 s.
            assert_eq!(f.timestamp_us, i as u64 * 1_000_000 / 30);
            let picture = decoder.decode(&f.data, t0).expect("decodes");
            analyser.observe(&picture, t0);
        }
        let report = analyser.report();
        assert_eq!(report.decoded, 40, "{report:?}");
        assert_eq!((report.lost, report.out_of_order), (0, 0), "{report:?}");
    }

    #[test]
    fn a_keyframe_request_makes_the_next_frame_a_keyframe() {
        let (preview, rx) = pattern_preview();
        let mut rx = rx.into_iter();
        let first: Vec<bool> = rx.by_ref().take(5).map(|f| f.keyframe).collect();
        assert_eq!(first, [true, false, false, false, false]);
        preview.request_keyframe();
        // At most the frames already handed over (2) or being encoded (1) precede it.
        assert!(
            rx.take(4).any(|f| f.keyframe),
            "no keyframe after the request"
        );
    }

    #[test]
    fn the_callback_stops_the_preview() {
        let mut n = 0;
        let preview = VideoPreview::start_with(
            virtual_pattern(160, 90),
            Bitrate::from_kbps(100),
            move |_| {
                n += 1;
                n < 3
            },
        )
        .expect("start");
        assert!(preview.stop().is_none());
    }

    #[test]
    fn a_missing_file_or_camera_is_a_sentence() {
        let e = VideoPreview::start(
            PreviewConfig::sd(PreviewSource::Y4m("/nonexistent/clip.y4m".into())),
            |_| true,
        )
        .expect_err("no file");
        assert!(e.to_string().contains("cannot open"), "{e}");
        // This machine (and CI) has no camera: a clear sentence, never a panic. With a camera
        // the preview runs.
        match VideoPreview::start(
            PreviewConfig::sd(PreviewSource::Camera(Some("no-such-camera-xyz".into()))),
            |_| true,
        ) {
            Err(e) => assert!(e.to_string().contains("camera"), "{e}"),
            Ok(p) => panic!("opened a camera named no-such-camera-xyz: {}", p.name()),
        }
    }
}
