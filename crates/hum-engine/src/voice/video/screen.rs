//! Screen sharing in a media session: a second video track beside the camera.
//!
//! ```text
//! ScreenSource (xcap monitor/window | pattern | Y4M) ─► screen thread: fit to the profile,
//!     one VP8 encoder (ScreenProfile) ─► broadcast ─► each mesh peer's screen send loop
//!                                                      ─► its `screen-<ssrc>` VP8 track
//! ```
//!
//! - Every mesh connection of a session with video, and its SFU connection, carries a
//!   `screen-<ssrc>` track from the start (negotiated with the camera's, idle until a share
//!   starts), so a share starts and stops without renegotiation ([`add_screen_track`], one
//!   code path for both). Receivers tell it from the camera by its track id
//!   ([`VideoKind::of_track`]): it is its own remote stream. The SFU publishes it as a
//!   single-layer video track and forwards it under `screen-t<n>`, so it arrives the same way.
//! - One layer, the [`ScreenProfile`]'s size, rate and bitrate (no simulcast: a shared screen is
//!   shown large, the "high" layer, by whoever watches it; docs/video.md). Peers that show
//!   video (they sent a `video_quality`, any value) get it; nothing is encoded while nobody
//!   does.
//! - A send loop starts each peer on a keyframe; a PLI/FIR on the screen track asks the encoder
//!   for one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use hum_media::video::scale::scale;
use hum_media::video::{EncodedFrame, ScreenProfile, VideoError, VideoSource, Vp8Encoder};
use hum_proto::Bitrate;
use tokio::sync::{broadcast, mpsc};

use crate::voice::{VoiceError, VoiceEvent};

use rtc::media::Sample;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_VP8;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::Track;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::peer_connection::PeerConnection;
use webrtc::rtp_transceiver::RtpSender;

use super::SessionVideo;

/// Which of a member's video tracks a stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VideoKind {
    Camera,
    Screen,
}

impl VideoKind {
    /// From the sender's track id: `screen-…` is a screen share, anything else a camera.
    pub fn of_track(track_id: &str) -> Self {
        if track_id.starts_with("screen") {
            VideoKind::Screen
        } else {
            VideoKind::Camera
        }
    }
}

/// What to share and how.
pub struct ScreenSource {
    /// A monitor or window (`CaptureThread::open_screen`), or for tests the pattern or a Y4M
    /// file; read at the profile's frame rate.
    pub source: Box<dyn VideoSource>,
    pub profile: ScreenProfile,
}

impl std::fmt::Debug for ScreenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScreenSource")
            .field("source", &self.source.name())
            .field("profile", &self.profile)
            .finish()
    }
}

/// What our screen share does now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScreenShareStats {
    pub sharing: bool,
    /// Frames read from the source since the session started.
    pub captured: u64,
    /// Frames encoded (only while a peer watches).
    pub encoded: u64,
    /// Encoded size and the profile's rate of the current (or last) share.
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate: Bitrate,
}

#[derive(Default)]
struct Counters {
    captured: AtomicU64,
    encoded: AtomicU64,
    /// width << 32 | height of the last encoded frame.
    size: AtomicU64,
    fps: AtomicU64,
    bitrate: AtomicU64,
}

struct Running {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

/// The session's screen share: idle, or one capture + encode thread.
pub(crate) struct ScreenSender {
    frames: broadcast::Sender<Arc<EncodedFrame>>,
    keyframe: Arc<AtomicBool>,
    /// One flag per peer send loop: it sends now (so frames are encoded).
    viewers: Arc<Mutex<Vec<Weak<AtomicBool>>>>,
    counters: Arc<Counters>,
    running: Mutex<Option<Running>>,
    events: mpsc::UnboundedSender<VoiceEvent>,
}

fn anyone_watches(viewers: &Mutex<Vec<Weak<AtomicBool>>>) -> bool {
    let Ok(mut v) = viewers.lock() else {
        return false;
    };
    v.retain(|w| w.strong_count() > 0);
    v.iter()
        .any(|w| w.upgrade().is_some_and(|f| f.load(Ordering::Relaxed)))
}

impl ScreenSender {
    pub(crate) fn new(events: mpsc::UnboundedSender<VoiceEvent>) -> Self {
        Self {
            frames: broadcast::channel(48).0,
            keyframe: Arc::new(AtomicBool::new(true)),
            viewers: Arc::default(),
            counters: Arc::default(),
            running: Mutex::new(None),
            events,
        }
    }

    /// Frames for one peer's send loop, its "I send now" flag, and the keyframe flag.
    pub(crate) fn subscribe(
        &self,
    ) -> (
        broadcast::Receiver<Arc<EncodedFrame>>,
        Arc<AtomicBool>,
        Arc<AtomicBool>,
    ) {
        let watching = Arc::new(AtomicBool::new(false));
        if let Ok(mut v) = self.viewers.lock() {
            v.push(Arc::downgrade(&watching));
        }
        (self.frames.subscribe(), watching, self.keyframe.clone())
    }

    pub(crate) fn sharing(&self) -> bool {
        self.running
            .lock()
            .is_ok_and(|r| r.as_ref().is_some_and(|r| !r.done.load(Ordering::SeqCst)))
    }

    pub(crate) fn stats(&self) -> ScreenShareStats {
        let c = &self.counters;
        let size = c.size.load(Ordering::Relaxed);
        ScreenShareStats {
            sharing: self.sharing(),
            captured: c.captured.load(Ordering::Relaxed),
            encoded: c.encoded.load(Ordering::Relaxed),
            width: (size >> 32) as u32,
            height: size as u32,
            fps: c.fps.load(Ordering::Relaxed) as u32,
            bitrate: Bitrate::from_bps(c.bitrate.load(Ordering::Relaxed)),
        }
    }

    /// Starts sharing `share` (a running share is replaced). Fails at once if the encoder
    /// refuses the source's size.
    pub(crate) fn start(&self, share: ScreenSource) -> Result<(), VoiceError> {
        let ScreenSource {
            mut source,
            profile,
        } = share;
        let format = source.format();
        let first = profile.config(format.width.max(2), format.height.max(2));
        Vp8Encoder::new(first).map_err(|e| VoiceError::WebRtc(format!("screen encoder: {e}")))?;
        self.stop();
        self.counters
            .fps
            .store(u64::from(first.fps), Ordering::Relaxed);
        self.counters
            .bitrate
            .store(first.bitrate.bps(), Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (halt, finished) = (stop.clone(), done.clone());
        let (tx, keyframe, viewers, counters, events) = (
            self.frames.clone(),
            self.keyframe.clone(),
            self.viewers.clone(),
            self.counters.clone(),
            self.events.clone(),
        );
        // Every peer starts the new share on a keyframe.
        keyframe.store(true, Ordering::SeqCst);
        // Said before the thread runs: a source that ends at once reports its end after this.
        let _ = self.events.send(VoiceEvent::ScreenShare {
            sharing: true,
            reason: None,
        });
        let spawned = std::thread::Builder::new()
            .name("screen share".into())
            .spawn(move || {
                let name = source.name();
                let ended = share_loop(
                    &mut *source,
                    profile,
                    &halt,
                    &tx,
                    &keyframe,
                    &viewers,
                    &counters,
                );
                finished.store(true, Ordering::SeqCst);
                if !halt.load(Ordering::SeqCst) {
                    // Ended by itself (a window closed, a file ended): said once.
                    let why = match ended {
                        Ok(()) => format!("screen share {name} ended"),
                        Err(e) => format!("screen share {name} stopped: {e}"),
                    };
                    tracing::info!("{why}");
                    let _ = events.send(VoiceEvent::ScreenShare {
                        sharing: false,
                        reason: Some(why),
                    });
                }
            });
        let thread = match spawned {
            Ok(t) => t,
            Err(e) => {
                let why = format!("screen thread: {e}");
                let _ = self.events.send(VoiceEvent::ScreenShare {
                    sharing: false,
                    reason: Some(why.clone()),
                });
                return Err(VoiceError::WebRtc(why));
            }
        };
        if let Ok(mut r) = self.running.lock() {
            *r = Some(Running { stop, done, thread });
        }
        Ok(())
    }

    /// Stops sharing (blocks until the thread ends: at most one frame's read). `false` if
    /// nothing was shared.
    pub(crate) fn stop(&self) -> bool {
        let running = self.running.lock().ok().and_then(|mut r| r.take());
        let Some(r) = running else {
            return false;
        };
        let was = !r.done.load(Ordering::SeqCst);
        r.stop.store(true, Ordering::SeqCst);
        let _ = r.thread.join();
        if was {
            let _ = self.events.send(VoiceEvent::ScreenShare {
                sharing: false,
                reason: None,
            });
        }
        was
    }
}

/// Reads, fits and encodes until stopped or the source ends.
fn share_loop(
    source: &mut dyn VideoSource,
    profile: ScreenProfile,
    halt: &AtomicBool,
    tx: &broadcast::Sender<Arc<EncodedFrame>>,
    keyframe: &AtomicBool,
    viewers: &Mutex<Vec<Weak<AtomicBool>>>,
    counters: &Counters,
) -> Result<(), VideoError> {
    let mut encoder: Option<Vp8Encoder> = None;
    while !halt.load(Ordering::SeqCst) {
        let frame = match source.read() {
            Ok(f) => f,
            Err(VideoError::Ended) => return Ok(()),
            Err(e) => return Err(e),
        };
        counters.captured.fetch_add(1, Ordering::Relaxed);
        if !anyone_watches(viewers) {
            // Nobody to send to: nothing is encoded; the next viewer starts on a keyframe.
            encoder = None;
            keyframe.store(true, Ordering::Relaxed);
            continue;
        }
        // A window can change size: the encoder follows the capture.
        let cfg = profile.config(frame.width(), frame.height());
        if encoder
            .as_ref()
            .is_none_or(|e| (e.config().width, e.config().height) != (cfg.width, cfg.height))
        {
            encoder = Some(Vp8Encoder::new(cfg)?);
        }
        let Some(enc) = encoder.as_mut() else {
            continue;
        };
        let fitted;
        let frame = if (frame.width(), frame.height()) == (cfg.width, cfg.height) {
            &frame
        } else {
            fitted = scale(&frame, cfg.width, cfg.height)?;
            &fitted
        };
        if keyframe.swap(false, Ordering::Relaxed) {
            enc.request_keyframe();
        }
        if let Some(out) = enc.encode(frame)? {
            counters.encoded.fetch_add(1, Ordering::Relaxed);
            counters.size.store(
                u64::from(out.width) << 32 | u64::from(out.height),
                Ordering::Relaxed,
            );
            let _ = tx.send(Arc::new(out));
        }
    }
    Ok(())
}

/// The id of our screen track with `ssrc` (receivers read it with [`VideoKind::of_track`]; the
/// SFU forwards a `screen…` track under a `screen-…` id of its own).
pub(crate) fn screen_track_id(ssrc: u32) -> String {
    format!("screen-{ssrc:08x}")
}

/// Where one connection's screen track goes: a mesh peer or the SFU.
pub(crate) struct ScreenLink {
    /// The `msid` stream id (the SFU reads the owner from the forwarded copy, not from this).
    pub(crate) stream_id: String,
    pub(crate) ssrc: u32,
    pub(crate) connected: Arc<AtomicBool>,
    pub(crate) closed: Arc<AtomicBool>,
    /// The other side shows video (a mesh peer said `video_quality`; always for the SFU,
    /// which forwards to every member that subscribes).
    pub(crate) viewer: Arc<AtomicBool>,
    /// To the SFU: the track's mid, written in each packet's `sdes:mid` extension (filled in
    /// once the local description is set; nothing is sent before).
    pub(crate) mid: Option<Arc<Mutex<Option<String>>>>,
    /// End-to-end encryption of each frame (SFU with E2EE on, docs/e2ee.md).
    pub(crate) transform: Option<Arc<dyn hum_e2ee::FrameTransform>>,
}

/// Adds the session's screen track (one VP8 encoding, idle until a share starts) to `pc` and
/// starts its send loop and keyframe-request reader; the same for mesh peers and the SFU.
pub(crate) async fn add_screen_track(
    pc: &Arc<dyn PeerConnection>,
    video: &SessionVideo,
    link: ScreenLink,
) -> Result<Vec<tokio::task::JoinHandle<()>>, VoiceError> {
    let track = Arc::new(TrackLocalStaticSample::new(
        Instant::now(),
        MediaStreamTrack::new(
            link.stream_id.clone(),
            screen_track_id(link.ssrc),
            "screen".to_owned(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(link.ssrc),
                    ..Default::default()
                },
                codec: crate::voice::peer::vp8_codec(),
                ..Default::default()
            }],
        ),
    )?);
    let sender = pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
    let (frames, watching, keyframe) = video.screen.subscribe();
    Ok(vec![
        tokio::spawn(crate::voice::peer::keyframe_requests(
            track.clone(),
            keyframe.clone(),
        )),
        tokio::spawn(screen_write_loop(
            link, track, sender, watching, keyframe, frames,
        )),
    ])
}

/// Sends our screen share on one connection's screen track while it is up and the other side
/// shows video, from a keyframe on.
async fn screen_write_loop(
    link: ScreenLink,
    track: Arc<TrackLocalStaticSample>,
    sender: Arc<dyn RtpSender>,
    // We send on this connection now (the share's encoder runs while some loop does).
    watching: Arc<AtomicBool>,
    // Ask the share's encoder for a keyframe.
    keyframe: Arc<AtomicBool>,
    mut frames: broadcast::Receiver<Arc<EncodedFrame>>,
) {
    let ScreenLink {
        connected,
        closed,
        viewer,
        mid,
        transform,
        ..
    } = link;
    let mut target: Option<(u32, u8)> = None;
    let mut started = false;
    let mut prev: Option<Instant> = None;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let frame = tokio::select! {
            f = frames.recv() => match f {
                Ok(f) => Some(f),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    started = false;
                    None
                }
                Err(_) => return,
            },
            _ = tick.tick() => None,
        };
        if closed.load(Ordering::SeqCst) {
            watching.store(false, Ordering::Relaxed);
            return;
        }
        let on = connected.load(Ordering::SeqCst) && viewer.load(Ordering::SeqCst);
        watching.store(on, Ordering::Relaxed);
        let Some(f) = frame else { continue };
        if !on {
            started = false;
            continue;
        }
        if !started && !f.keyframe {
            keyframe.store(true, Ordering::Relaxed);
            continue;
        }
        let mid = match &mid {
            None => None,
            Some(m) => match m.lock().ok().and_then(|m| m.clone()) {
                Some(m) => Some(m),
                // Not negotiated yet: the SFU could not tell the packets' track.
                None => continue,
            },
        };
        if target.is_none() {
            let pt = match sender.get_parameters().await {
                Ok(p) => p
                    .rtp_parameters
                    .codecs
                    .iter()
                    .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(MIME_TYPE_VP8))
                    .map(|c| c.payload_type),
                Err(_) => None,
            };
            let ssrc = track.ssrcs().await.first().copied();
            match (pt, ssrc) {
                (Some(pt), Some(ssrc)) => target = Some((ssrc, pt)),
                _ => continue,
            }
        }
        let Some((ssrc, pt)) = target else { continue };
        let duration = frame_duration(prev, f.captured, 30);
        prev = Some(f.captured);
        // End to end (docs/e2ee.md): encrypted before the packetiser sees it.
        let Some(data) = crate::e2ee::seal_video(transform.as_deref(), &f.data) else {
            continue;
        };
        let sample = Sample {
            data,
            duration,
            ..Sample::new(f.captured)
        };
        let mut writer = track.sample_writer(ssrc, pt);
        if let Some(mid) = &mid {
            writer = writer.with_extension(crate::voice::sfu_video::text_extension(
                rtc::sdp::extmap::SDES_MID_URI,
                mid,
            ));
        }
        match writer.write_sample(&sample).await {
            Ok(()) => {
                started = true;
                crate::budget::count_own_media(sample.data.len());
            }
            Err(e) => tracing::trace!("screen write_sample: {e}"),
        }
    }
}

/// What can be shared: a monitor or a window (X11 through xcap), or for tests and demos the
/// moving test pattern or a Y4M file. `parse` reads the CLI's and the app's spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareTarget {
    /// The test pattern (its frame code in the pixels) at this size.
    Pattern { width: u32, height: u32 },
    /// A monitor by id (`None`: the primary one).
    Monitor(Option<u32>),
    /// A window by id.
    Window(u32),
    /// A Y4M file, looped.
    File(std::path::PathBuf),
}

impl ShareTarget {
    /// `pattern`, `pattern:WxH`, `screen`, `screen:ID`, `window:ID`, `file:PATH` or a path
    /// ending in `.y4m`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let id = |v: &str| {
            v.parse::<u32>()
                .map_err(|_| format!("`{s}`: `{v}` is not a monitor or window id"))
        };
        Ok(match s.split_once(':') {
            None if s == "pattern" => ShareTarget::Pattern {
                width: 1280,
                height: 720,
            },
            None if s == "screen" => ShareTarget::Monitor(None),
            Some(("pattern", size)) => {
                let (w, h) = size
                    .split_once('x')
                    .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
                    .ok_or_else(|| format!("`{s}`: expected pattern:WIDTHxHEIGHT"))?;
                ShareTarget::Pattern {
                    width: w,
                    height: h,
                }
            }
            Some(("screen", v)) => ShareTarget::Monitor(Some(id(v)?)),
            Some(("window", v)) => ShareTarget::Window(id(v)?),
            Some(("file", p)) => ShareTarget::File(p.into()),
            _ if s.ends_with(".y4m") => ShareTarget::File(s.into()),
            _ => {
                return Err(format!(
                    "`{s}`: share `screen`, `screen:ID`, `window:ID`, `pattern[:WxH]` or a .y4m file"
                ));
            }
        })
    }

    /// Opens the source at `profile`'s frame rate: the screen errors are hum-media's
    /// sentences (no display, Wayland, a window that went away).
    pub fn open(&self, profile: ScreenProfile) -> Result<ScreenSource, VideoError> {
        use hum_media::video::screen::ScreenTarget;
        use hum_media::video::{CaptureThread, PatternSource, VideoFormat, Y4mSource};
        let fps = profile.config(1280, 720).fps;
        let source: Box<dyn VideoSource> = match self {
            ShareTarget::Pattern { width, height } => Box::new(PatternSource::realtime(
                VideoFormat::new(*width, *height, fps),
            )?),
            ShareTarget::Monitor(id) => {
                Box::new(CaptureThread::open_screen(ScreenTarget::Monitor(*id), fps)?)
            }
            ShareTarget::Window(id) => {
                Box::new(CaptureThread::open_screen(ScreenTarget::Window(*id), fps)?)
            }
            ShareTarget::File(p) => Box::new(Y4mSource::open(p, true)?),
        };
        Ok(ScreenSource { source, profile })
    }
}

/// One entry of a share picker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareChoice {
    /// What [`ShareTarget::parse`] takes: `screen:ID`, `window:ID` or `pattern`.
    pub target: String,
    /// `screen`, `window` or `test`.
    pub kind: &'static str,
    pub name: String,
    pub width: u32,
    pub height: u32,
}

/// What can be shared here, and why screens and windows are missing when they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareChoices {
    pub choices: Vec<ShareChoice>,
    /// A sentence for the user when capture is not available (no display, Wayland).
    pub unavailable: Option<String>,
}

/// Why this process cannot capture a screen, from its environment (`None`: X11 is there).
pub fn capture_unavailable(display: Option<&str>, wayland: Option<&str>) -> Option<String> {
    let set = |v: Option<&str>| v.is_some_and(|v| !v.is_empty());
    match (set(display), set(wayland)) {
        (true, _) => None,
        (false, true) => Some(
            "Screen sharing needs X11 for now: this Wayland session gives Hum no X11 display \
             (capture through the desktop portal and PipeWire is not built yet). Start Hum under \
             X11, or with XWayland's DISPLAY set (then only X11 windows can be shared)."
                .into(),
        ),
        (false, false) => {
            Some("No display to capture: DISPLAY (X11) and WAYLAND_DISPLAY are both unset.".into())
        }
    }
}

/// The monitors and windows of this display (X11 through xcap) and the test pattern. Blocking
/// (it asks the X server).
pub fn share_choices() -> ShareChoices {
    use hum_media::video::screen::{list_screens, list_windows};
    let display = std::env::var("DISPLAY").ok();
    let wayland = std::env::var("WAYLAND_DISPLAY").ok();
    let mut choices = Vec::new();
    let mut unavailable = capture_unavailable(display.as_deref(), wayland.as_deref());
    if unavailable.is_none() {
        match list_screens() {
            Ok(screens) => choices.extend(screens.into_iter().map(|s| ShareChoice {
                target: format!("screen:{}", s.id),
                kind: "screen",
                name: if s.primary {
                    format!("{} (primary)", s.name)
                } else {
                    s.name
                },
                width: s.width,
                height: s.height,
            })),
            Err(e) => unavailable = Some(format!("Screen capture is not available: {e}")),
        }
        match list_windows() {
            Ok(windows) => choices.extend(
                windows
                    .into_iter()
                    .filter(|w| w.width >= 16 && w.height >= 16)
                    .map(|w| ShareChoice {
                        target: format!("window:{}", w.id),
                        kind: "window",
                        name: match (w.title.is_empty(), w.app.is_empty()) {
                            (false, false) => format!("{} — {}", w.title, w.app),
                            (false, true) => w.title,
                            (true, false) => w.app,
                            (true, true) => format!("Window {}", w.id),
                        },
                        width: w.width,
                        height: w.height,
                    }),
            ),
            Err(e) => tracing::warn!("windows not listed: {e}"),
        }
    }
    choices.push(ShareChoice {
        target: "pattern".into(),
        kind: "test",
        name: "Test pattern (moving, with a frame code)".into(),
        width: 1280,
        height: 720,
    });
    ShareChoices {
        choices,
        unavailable,
    }
}

/// `720p30`, `1080p30`, `1080p60` or `text`.
pub fn parse_profile(s: &str) -> Result<ScreenProfile, String> {
    Ok(match s {
        "720p30" => ScreenProfile::P720Fps30,
        "1080p30" => ScreenProfile::P1080Fps30,
        "1080p60" => ScreenProfile::P1080Fps60,
        "text" => ScreenProfile::Text,
        _ => return Err(format!("`{s}`: use 720p30, 1080p30, 1080p60 or text")),
    })
}

/// Wall-clock free helper for a send loop: the RTP duration of a frame captured at `captured`
/// after one captured at `prev`, or one frame at `fps`.
pub(crate) fn frame_duration(
    prev: Option<Instant>,
    captured: Instant,
    fps: u32,
) -> std::time::Duration {
    let frame_time = std::time::Duration::from_secs(1) / fps.max(1);
    prev.and_then(|p| captured.checked_duration_since(p))
        .filter(|d| !d.is_zero() && *d < std::time::Duration::from_secs(1))
        .unwrap_or(frame_time)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hum_media::video::{FrameClock, PatternSource, VideoFormat, VideoFrame, WallAnchor};

    use super::*;

    #[test]
    fn a_track_id_starting_with_screen_is_a_screen_anything_else_a_camera() {
        assert_eq!(VideoKind::of_track("screen-5343abcd"), VideoKind::Screen);
        assert_eq!(VideoKind::of_track("screen"), VideoKind::Screen);
        assert_eq!(VideoKind::of_track("video-0000002a"), VideoKind::Camera);
        assert_eq!(VideoKind::of_track("camera"), VideoKind::Camera);
        assert_eq!(VideoKind::of_track(""), VideoKind::Camera);
        // Only the prefix counts.
        assert_eq!(VideoKind::of_track("my-screen"), VideoKind::Camera);
    }

    #[test]
    fn share_targets_parse_in_the_cli_and_app_spelling() {
        let ok = |s: &str| ShareTarget::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(
            ok("pattern"),
            ShareTarget::Pattern {
                width: 1280,
                height: 720
            }
        );
        assert_eq!(
            ok("pattern:640x360"),
            ShareTarget::Pattern {
                width: 640,
                height: 360
            }
        );
        assert_eq!(ok("screen"), ShareTarget::Monitor(None));
        assert_eq!(ok("screen:2"), ShareTarget::Monitor(Some(2)));
        assert_eq!(ok("window:4194311"), ShareTarget::Window(4_194_311));
        assert_eq!(
            ok("file:/tmp/a b.y4m"),
            ShareTarget::File("/tmp/a b.y4m".into())
        );
        assert_eq!(ok("clip.y4m"), ShareTarget::File("clip.y4m".into()));
        // A path with a colon in it is still a file when it ends in .y4m.
        assert_eq!(
            ok("C:/clips/x.y4m"),
            ShareTarget::File("C:/clips/x.y4m".into())
        );
    }

    #[test]
    fn bad_share_targets_are_a_sentence_that_names_them() {
        for (s, says) in [
            ("pattern:640", "expected pattern:WIDTHxHEIGHT"),
            ("pattern:axb", "expected pattern:WIDTHxHEIGHT"),
            ("pattern:", "expected pattern:WIDTHxHEIGHT"),
            ("screen:main", "`main` is not a monitor or window id"),
            ("window:", "`` is not a monitor or window id"),
            ("window:-1", "`-1` is not a monitor or window id"),
            ("window", "share `screen`, `screen:ID`"),
            ("desktop", "share `screen`, `screen:ID`"),
            ("", "share `screen`, `screen:ID`"),
        ] {
            let e = ShareTarget::parse(s).expect_err(s);
            assert!(e.starts_with(&format!("`{s}`:")), "{s}: {e}");
            assert!(e.contains(says), "{s}: {e}");
        }
    }

    #[test]
    fn profiles_parse_by_name_and_nothing_else() {
        assert_eq!(parse_profile("720p30"), Ok(ScreenProfile::P720Fps30));
        assert_eq!(parse_profile("1080p30"), Ok(ScreenProfile::P1080Fps30));
        assert_eq!(parse_profile("1080p60"), Ok(ScreenProfile::P1080Fps60));
        assert_eq!(parse_profile("text"), Ok(ScreenProfile::Text));
        for bad in ["720p", "1080P60", "4k", ""] {
            let e = parse_profile(bad).expect_err(bad);
            assert_eq!(
                e,
                format!("`{bad}`: use 720p30, 1080p30, 1080p60 or text"),
                "{bad}"
            );
        }
    }

    #[test]
    fn capture_is_unavailable_without_x11_and_the_sentence_says_why() {
        assert_eq!(capture_unavailable(Some(":0"), None), None);
        // XWayland: DISPLAY is set, so X11 capture works.
        assert_eq!(capture_unavailable(Some(":1"), Some("wayland-0")), None);
        let none = capture_unavailable(None, None).expect("no display");
        assert!(none.starts_with("No display to capture:"), "{none}");
        assert!(
            none.contains("DISPLAY") && none.contains("WAYLAND_DISPLAY"),
            "{none}"
        );
        // Set but empty counts as unset.
        assert_eq!(capture_unavailable(Some(""), Some("")), Some(none));
        let wayland = capture_unavailable(None, Some("wayland-0")).expect("wayland only");
        assert!(
            wayland.starts_with("Screen sharing needs X11 for now:"),
            "{wayland}"
        );
        assert!(wayland.contains("PipeWire"), "{wayland}");
        assert_eq!(
            capture_unavailable(Some(""), Some("wayland-0")),
            Some(wayland)
        );
    }

    #[test]
    fn a_frame_lasts_the_capture_gap_or_one_frame_at_the_rate() {
        let t = Instant::now() + Duration::from_secs(10);
        let ms = Duration::from_millis;
        // The first frame, and the rate's frame time.
        assert_eq!(frame_duration(None, t, 30), Duration::from_secs(1) / 30);
        assert_eq!(frame_duration(None, t, 60), Duration::from_secs(1) / 60);
        // A rate of 0 is read as 1 fps, not a division by zero.
        assert_eq!(frame_duration(None, t, 0), Duration::from_secs(1));
        // The real gap between captures (a slow window, a 5 fps text share).
        assert_eq!(frame_duration(Some(t - ms(40)), t, 30), ms(40));
        assert_eq!(frame_duration(Some(t - ms(200)), t, 5), ms(200));
        assert_eq!(frame_duration(Some(t - ms(999)), t, 30), ms(999));
        // No gap, a capture before the last one, or a second or more: one frame.
        assert_eq!(frame_duration(Some(t), t, 30), Duration::from_secs(1) / 30);
        assert_eq!(
            frame_duration(Some(t + ms(5)), t, 30),
            Duration::from_secs(1) / 30
        );
        assert_eq!(
            frame_duration(Some(t - ms(1000)), t, 30),
            Duration::from_secs(1) / 30
        );
    }

    /// The pattern on a virtual clock (no sleeping), ending after `frames`.
    struct Finite {
        pattern: PatternSource,
        left: u32,
    }

    impl Finite {
        fn new(width: u32, height: u32, frames: u32) -> Self {
            let t0 = Instant::now();
            Self {
                pattern: PatternSource::new(
                    width,
                    height,
                    FrameClock::virtual_from(t0, 30),
                    WallAnchor::fixed(t0, 1_700_000_000_000_000),
                )
                .expect("pattern"),
                left: frames,
            }
        }
    }

    impl VideoSource for Finite {
        fn read(&mut self) -> Result<VideoFrame, VideoError> {
            if self.left == 0 {
                return Err(VideoError::Ended);
            }
            self.left -= 1;
            self.pattern.read()
        }
        fn format(&self) -> VideoFormat {
            self.pattern.format()
        }
        fn name(&self) -> String {
            "finite pattern".into()
        }
    }

    fn share_events(rx: &mut mpsc::UnboundedReceiver<VoiceEvent>) -> Vec<(bool, Option<String>)> {
        let mut out = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            if let VoiceEvent::ScreenShare { sharing, reason } = ev {
                out.push((sharing, reason));
            }
        }
        out
    }

    /// Waits (a hang guard only) until the share's thread has finished by itself.
    fn until_done(s: &ScreenSender) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while s.sharing() {
            assert!(Instant::now() < deadline, "the share did not end");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn nothing_is_encoded_while_nobody_watches_and_a_source_that_ends_says_so_once() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let s = ScreenSender::new(tx);
        let (_frames, watching, _keyframe) = s.subscribe();
        assert!(!watching.load(Ordering::SeqCst));
        s.start(ScreenSource {
            source: Box::new(Finite::new(320, 180, 20)),
            profile: ScreenProfile::P720Fps30,
        })
        .expect("start");
        until_done(&s);
        let stats = s.stats();
        assert!(!stats.sharing, "{stats:?}");
        assert_eq!((stats.captured, stats.encoded), (20, 0), "{stats:?}");
        assert_eq!(
            share_events(&mut rx),
            [
                (true, None),
                (false, Some("screen share finite pattern ended".into()))
            ]
        );
        // It ended by itself: stopping it now is not news.
        assert!(!s.stop());
        assert_eq!(share_events(&mut rx), []);
    }

    #[test]
    fn a_watched_share_is_encoded_once_fitted_to_the_profile_from_a_keyframe() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let s = ScreenSender::new(tx);
        let (mut frames, watching, keyframe) = s.subscribe();
        watching.store(true, Ordering::SeqCst);
        // 1920x1080 is scaled to fit 720p30.
        s.start(ScreenSource {
            source: Box::new(Finite::new(1920, 1080, 12)),
            profile: ScreenProfile::P720Fps30,
        })
        .expect("start");
        until_done(&s);
        let mut got = Vec::new();
        while let Ok(f) = frames.try_recv() {
            got.push(f);
        }
        let stats = s.stats();
        assert_eq!(stats.captured, 12, "{stats:?}");
        assert!(stats.encoded >= 1, "{stats:?}");
        assert_eq!(
            got.len() as u64,
            stats.encoded,
            "one broadcast per encoded frame"
        );
        assert!(
            got[0].keyframe,
            "the first frame a viewer gets is a keyframe"
        );
        assert!(got.iter().all(|f| (f.width, f.height) == (1280, 720)));
        assert_eq!((stats.width, stats.height, stats.fps), (1280, 720, 30));
        assert_eq!(stats.bitrate, Bitrate::from_kbps(1_500));
        // The keyframe the start asked for was taken by the encoder.
        assert!(!keyframe.load(Ordering::SeqCst));
        assert_eq!(share_events(&mut rx)[0], (true, None));
    }

    #[test]
    fn stopping_joins_the_thread_and_says_so_once() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let s = ScreenSender::new(tx);
        assert!(!s.stop(), "nothing shared yet");
        let pattern = PatternSource::realtime(VideoFormat::new(160, 90, 30)).expect("pattern");
        s.start(ScreenSource {
            source: Box::new(pattern),
            profile: ScreenProfile::P720Fps30,
        })
        .expect("start");
        assert!(s.sharing());
        assert!(s.stop());
        // Joined: the thread ran its last read, and nothing counts any more.
        assert!(!s.sharing());
        let after = s.stats().captured;
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(s.stats().captured, after);
        assert!(!s.stop());
        assert_eq!(share_events(&mut rx), [(true, None), (false, None)]);
    }
}
