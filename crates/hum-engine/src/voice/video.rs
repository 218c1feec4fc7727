//! Video in a media session: one VP8 camera/screen track each way next to the Opus track.
//!
//! ```text
//!  VideoSource ─► video capture thread (read, VP8 encode) ─► broadcast ─► one VP8 track per peer
//!                         ▲ keyframe flag (a peer connected, PLI/FIR, a send loop lagged)
//!  peer's VP8 track ─► FrameAssembler (RTP ─► frames, loss) ─┬─► EncodedVideoFrame broadcast
//!                          │ PLI on loss / corruption         │    (the app: WebCodecs)
//!                          ◄───────────────────────────────── └─► decode thread ─► VideoSink
//! ```
//!
//! - Sending: [`VideoIo::source`] is read on its own thread (sources block, like audio's) and
//!   encoded once; each peer's send loop drops frames until its connection is up and then waits
//!   for a keyframe, which it asks for. The target rate is a [`Bitrate`] set from outside
//!   ([`VoiceSession::set_video_bitrate`](super::VoiceSession::set_video_bitrate)).
//! - Receiving: every remote video track's packets go through a [`FrameAssembler`]; complete
//!   frames are published as [`EncodedVideoFrame`]s (for a front end that decodes itself) and,
//!   when a [`VideoSinkFactory`] is given, decoded on a thread per track and written to the
//!   sink it opens. A loss, a frame libvpx calls corrupt, or a front end asking
//!   ([`VoiceSession::request_keyframe`](super::VoiceSession::request_keyframe)) sends a PLI,
//!   repeated every [`PLI_INTERVAL`] until a keyframe arrives.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hum_media::video::simulcast::{LayerConfig, LayerFrame, SimulcastEncoder};
use hum_media::video::{
    EncoderConfig, VideoError, VideoFormat, VideoSink, VideoSource, Vp8Decoder, Vp8Encoder,
};
use hum_proto::Bitrate;
use hum_proto::UserId;
use hum_proto::signal::VideoQuality;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use tokio::sync::{broadcast, mpsc};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use super::assembler::{Assembled, AssemblerConfig, FrameAssembler};
use super::{VoiceError, VoiceEvent};

pub mod congestion;
pub mod screen;

use screen::{ScreenSender, ScreenSource, VideoKind};

/// How often a PLI is repeated while a keyframe is awaited.
pub const PLI_INTERVAL: Duration = Duration::from_millis(300);

/// The default camera bitrate of the one layer sent (720p30 in libwebrtc's range).
pub const DEFAULT_VIDEO_BITRATE: Bitrate = Bitrate::from_kbps(1_500);

/// Encoded frames kept for a slow subscriber of [`EncodedVideoFrame`]s before it lags.
const FRAME_CHANNEL: usize = 256;

/// Video endpoints and settings of a media session. `Default` is "no video": no video line is
/// negotiated and the session is exactly the voice-only one.
pub struct VideoIo {
    /// What we send (test pattern, Y4M file, camera, screen); `None`: we send no video.
    pub source: Option<Box<dyn VideoSource>>,
    /// Target rate of the video we send; the session never sends more than this.
    pub bitrate: Bitrate,
    /// Negotiate video to receive it even when we send none.
    pub receive: bool,
    /// Decode every remote video track into a sink this opens (none: encoded frames only,
    /// through [`VoiceSession::video_frames`](super::VoiceSession::video_frames)).
    pub sinks: Option<Arc<dyn VideoSinkFactory>>,
    /// Share this screen from the start (a share can also start later:
    /// [`VoiceSession::start_screen_share`](super::VoiceSession::start_screen_share)).
    pub screen: Option<ScreenSource>,
}

impl Default for VideoIo {
    fn default() -> Self {
        Self {
            source: None,
            bitrate: DEFAULT_VIDEO_BITRATE,
            receive: false,
            sinks: None,
            screen: None,
        }
    }
}

impl std::fmt::Debug for VideoIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoIo")
            .field("source", &self.source.as_ref().map(|s| s.name()))
            .field("bitrate", &self.bitrate)
            .field("receive", &self.receive)
            .field("sinks", &self.sinks.is_some())
            .field("screen", &self.screen)
            .finish()
    }
}

impl VideoIo {
    /// Whether the session carries a video line at all.
    pub fn enabled(&self) -> bool {
        self.source.is_some() || self.receive || self.sinks.is_some() || self.screen.is_some()
    }
}

/// The video bitrate that fits a budget: what is `available` for Hum's own sending minus the
/// audio, at most `wanted`, at least the 30 kbit/s a VP8 stream needs to stay alive.
pub fn video_bitrate_within(available: Bitrate, audio: Bitrate, wanted: Bitrate) -> Bitrate {
    let left = available.bps().saturating_sub(audio.bps());
    Bitrate::from_bps(left.min(wanted.bps()).max(30_000))
}

/// One remote video track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteVideoTrack {
    pub user: UserId,
    /// The sender's track id.
    pub track: String,
    /// The simulcast layer (RID), if the sender uses them.
    pub layer: Option<String>,
}

/// Opens a sink for each remote video track (a Y4M file per stream, an analyser, a window).
pub trait VideoSinkFactory: Send + Sync + 'static {
    fn open(&self, track: &RemoteVideoTrack) -> Result<Box<dyn VideoSink>, String>;
}

/// One received VP8 frame, before decoding: what a front end feeds to WebCodecs'
/// `VideoDecoder` (`EncodedVideoChunk { type: keyframe ? "key" : "delta", timestamp, data }`).
#[derive(Debug, Clone)]
pub struct EncodedVideoFrame {
    pub user: UserId,
    /// The sender's track id (one per camera or screen).
    pub track: String,
    /// The simulcast layer (RID), if any.
    pub layer: Option<String>,
    /// The VP8 frame (RFC 6386), payload descriptors removed.
    pub data: Bytes,
    pub keyframe: bool,
    /// RTP timestamp, 90 kHz, as sent.
    pub timestamp: u32,
    /// Media time since this track's first frame, in microseconds (WebCodecs' unit; the RTP
    /// timestamp unwrapped).
    pub timestamp_us: u64,
    /// Picture size from the last keyframe (0 before the first).
    pub width: u32,
    pub height: u32,
    /// When its last packet arrived.
    pub arrival: Instant,
    /// Frames before this one were lost: a decoder must skip deltas until a keyframe.
    pub after_loss: bool,
}

/// A member's camera went on or off (in a channel: the roster's `video` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CameraChange {
    pub user: UserId,
    pub camera: bool,
}

/// Counters of one remote video track.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteVideoStats {
    pub packets: u64,
    pub frames: u64,
    pub keyframes: u64,
    pub losses: u64,
    pub plis_sent: u64,
    pub decoded: u64,
}

/// The session-wide video state shared by its peers.
pub(crate) struct SessionVideo {
    pub(crate) sender: Option<VideoSender>,
    pub(crate) enabled: bool,
    /// We show what we receive (a sink or a front end): we ask each mesh peer for a layer.
    pub(crate) receiving: bool,
    /// Per mesh peer: the layer they asked us for ([`NO_LAYER`]: none; they get no video).
    wishes: Mutex<BTreeMap<UserId, Arc<AtomicU8>>>,
    /// Per mesh peer: they show video (said `video_quality`, any value), so they get our
    /// screen share.
    screen_viewers: Mutex<BTreeMap<UserId, Arc<AtomicBool>>>,
    /// Our screen share (idle until started).
    pub(crate) screen: ScreenSender,
    /// What we ask each mesh peer for (default `Auto`); held while a request is sent, so the
    /// last one said is the last one sent.
    pub(crate) asks: tokio::sync::Mutex<BTreeMap<UserId, VideoQuality>>,
    sinks: Option<Arc<dyn VideoSinkFactory>>,
    frames: broadcast::Sender<EncodedVideoFrame>,
    /// Per remote user and track kind: a front end asked for a keyframe.
    want_key: Mutex<BTreeMap<(UserId, VideoKind), Arc<AtomicBool>>>,
    stats: Mutex<BTreeMap<(UserId, VideoKind), RemoteVideoStats>>,
    /// What each member said of their camera (the roster's `video` flag); absent: not known.
    cameras: Mutex<BTreeMap<UserId, bool>>,
    changes: broadcast::Sender<CameraChange>,
    events: mpsc::UnboundedSender<VoiceEvent>,
    /// Decode threads end (and finish their sinks) when this is set.
    closing: Arc<AtomicBool>,
    decoders: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl SessionVideo {
    pub(crate) fn start(
        io: VideoIo,
        events: mpsc::UnboundedSender<VoiceEvent>,
    ) -> Result<Self, VoiceError> {
        let enabled = io.enabled();
        let sender = match io.source {
            Some(source) => Some(VideoSender::start(source, io.bitrate, events.clone())?),
            None => None,
        };
        let screen = ScreenSender::new(events.clone());
        if let Some(share) = io.screen {
            screen.start(share)?;
        }
        Ok(Self {
            sender,
            enabled,
            receiving: io.receive || io.sinks.is_some(),
            wishes: Mutex::new(BTreeMap::new()),
            screen_viewers: Mutex::new(BTreeMap::new()),
            screen,
            asks: tokio::sync::Mutex::new(BTreeMap::new()),
            sinks: io.sinks,
            frames: broadcast::channel(FRAME_CHANNEL).0,
            want_key: Mutex::new(BTreeMap::new()),
            stats: Mutex::new(BTreeMap::new()),
            cameras: Mutex::new(BTreeMap::new()),
            changes: broadcast::channel(64).0,
            events,
            closing: Arc::new(AtomicBool::new(false)),
            decoders: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<EncodedVideoFrame> {
        self.frames.subscribe()
    }

    /// The layer `user` wants of our video, shared with their connection's send loop.
    pub(crate) fn wish(&self, user: UserId) -> Arc<AtomicU8> {
        match self.wishes.lock() {
            Ok(mut m) => m
                .entry(user)
                .or_insert_with(|| Arc::new(AtomicU8::new(NO_LAYER)))
                .clone(),
            Err(_) => Arc::new(AtomicU8::new(NO_LAYER)),
        }
    }

    /// `user` (a mesh peer) asked for `quality` of our video.
    pub(crate) fn set_wish(&self, user: UserId, quality: VideoQuality) {
        let layer = mesh_layer(quality).map_or(NO_LAYER, |l| l as u8);
        tracing::debug!(%user, ?quality, layer, "video layer asked for");
        self.wish(user).store(layer, Ordering::SeqCst);
        self.screen_viewer(user).store(true, Ordering::SeqCst);
    }

    /// Whether `user` gets our screen share, shared with their connection's screen send loop.
    pub(crate) fn screen_viewer(&self, user: UserId) -> Arc<AtomicBool> {
        match self.screen_viewers.lock() {
            Ok(mut m) => m
                .entry(user)
                .or_insert_with(|| Arc::new(AtomicBool::new(false)))
                .clone(),
            Err(_) => Arc::new(AtomicBool::new(false)),
        }
    }

    /// `user`'s connection is gone: they get nothing until they ask again.
    pub(crate) fn forget_wish(&self, user: &UserId) {
        if let Ok(m) = self.wishes.lock()
            && let Some(w) = m.get(user)
        {
            w.store(NO_LAYER, Ordering::SeqCst);
        }
        if let Ok(m) = self.screen_viewers.lock()
            && let Some(w) = m.get(user)
        {
            w.store(false, Ordering::SeqCst);
        }
    }

    pub(crate) fn request_keyframe(&self, user: UserId, kind: VideoKind) {
        if let Ok(m) = self.want_key.lock()
            && let Some(f) = m.get(&(user, kind))
        {
            f.store(true, Ordering::SeqCst);
        }
    }

    pub(crate) fn stats(&self, user: &UserId, kind: VideoKind) -> Option<RemoteVideoStats> {
        self.stats.lock().ok()?.get(&(*user, kind)).copied()
    }

    /// What `user` says of their camera now. A change is reported (a [`VoiceEvent::Video`]
    /// and a [`CameraChange`]); the first word of a member is reported only if their camera is
    /// on (a member without one is not news). While off, their frames are held back.
    pub(crate) fn set_remote_camera(&self, user: UserId, camera: bool) {
        let before = match self.cameras.lock() {
            Ok(mut m) => m.insert(user, camera),
            Err(_) => return,
        };
        if before == Some(camera) || (before.is_none() && !camera) {
            return;
        }
        let _ = self.events.send(VoiceEvent::Video {
            user: Some(user),
            camera,
        });
        let _ = self.changes.send(CameraChange { user, camera });
    }

    /// Forgets what `user` said of their camera (they left).
    pub(crate) fn forget_remote_camera(&self, user: &UserId) {
        if let Ok(mut m) = self.cameras.lock() {
            m.remove(user);
        }
    }

    /// Whether `user` said their camera is off.
    fn camera_off(&self, user: &UserId) -> bool {
        self.cameras
            .lock()
            .is_ok_and(|m| m.get(user) == Some(&false))
    }

    pub(crate) fn camera_changes(&self) -> broadcast::Receiver<CameraChange> {
        self.changes.subscribe()
    }

    /// Turns the video we send on or off (reported as `VoiceEvent::Video { user: None }`);
    /// `false` without a source.
    pub(crate) fn set_local_camera(&self, on: bool) -> bool {
        let Some(s) = &self.sender else {
            return false;
        };
        s.on.store(on, Ordering::SeqCst);
        let _ = self.events.send(VoiceEvent::Video {
            user: None,
            camera: on,
        });
        true
    }

    /// Whether the video we send is on (`None`: we send none).
    pub(crate) fn local_camera(&self) -> Option<bool> {
        self.sender.as_ref().map(|s| s.on.load(Ordering::SeqCst))
    }

    /// Stops sending and receiving: the capture thread ends, every decode thread finishes its
    /// sink (a recording is complete when this returns). Blocking.
    pub(crate) fn stop(&self) {
        if let Some(s) = &self.sender {
            s.stop();
        }
        self.screen.stop();
        self.closing.store(true, Ordering::SeqCst);
        let threads = self
            .decoders
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
    }

    fn update_stats(&self, user: UserId, kind: VideoKind, f: impl FnOnce(&mut RemoteVideoStats)) {
        if let Ok(mut m) = self.stats.lock() {
            f(m.entry((user, kind)).or_default());
        }
    }
}

/// Simulcast layers, low to high (RIDs `q`, `h`, `f`): all three to the SFU, the one each
/// mesh peer asks for to that peer.
pub const SIMULCAST_LAYERS: usize = 3;

/// "No layer" in a wish or a send loop's state.
pub(crate) const NO_LAYER: u8 = u8::MAX;

/// The simulcast layer a mesh receiver's `quality` asks for (`None`: nothing). `Auto` is the
/// sender's default: the full picture, as before layers were chosen.
pub fn mesh_layer(quality: VideoQuality) -> Option<usize> {
    match quality {
        VideoQuality::High | VideoQuality::Auto => Some(SIMULCAST_LAYERS - 1),
        VideoQuality::Medium => Some(1),
        VideoQuality::Low => Some(0),
        VideoQuality::Off => None,
    }
}

/// What the video we send cost so far: frames captured while the camera was on, and frames
/// encoded per layer (each layer is encoded once per captured frame at most, however many
/// peers receive it), and which layers run now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VideoSendStats {
    pub captured: u64,
    pub encoded: [u64; SIMULCAST_LAYERS],
    pub active: [bool; SIMULCAST_LAYERS],
    /// The rate each running layer is encoded at now (the ladder's share, lowered by the
    /// congestion controllers of the peers receiving it; zero: not running).
    pub bitrate: [Bitrate; SIMULCAST_LAYERS],
}

#[derive(Default)]
struct SendCounters {
    captured: AtomicU64,
    encoded: [AtomicU64; SIMULCAST_LAYERS],
    active: AtomicU8,
    bitrate_bps: [AtomicU64; SIMULCAST_LAYERS],
}

/// What one consumer of our layers needs encoded: a mask of layers (bit `i` = layer `i`), and
/// the rate its congestion controller allows for them (0: no limit). A mesh send loop asks
/// for the one layer its peer wants; the SFU connection for the layers the SFU says some
/// subscriber takes (`sfu_layers`, [`Self::all`] until it first says).
#[derive(Debug, Default)]
pub(crate) struct LayerDemand {
    pub(crate) mask: AtomicU8,
    pub(crate) cap_bps: AtomicU64,
}

impl LayerDemand {
    /// Every layer, no rate limit.
    pub(crate) fn all() -> Self {
        Self {
            mask: AtomicU8::new((1 << SIMULCAST_LAYERS) - 1),
            cap_bps: AtomicU64::new(0),
        }
    }
}

/// The nominal rate of each layer of the ladder for a `width` x `height` source and `total`.
pub fn ladder_rates(width: u32, height: u32, total: Bitrate) -> [Bitrate; SIMULCAST_LAYERS] {
    simulcast_ladder(width, height, total).map(|l| l.bitrate)
}

/// The simulcast ladder for a source of `width` x `height`: a quarter, a half and the full
/// size (1280x720 gives 320x180 / 640x360 / 1280x720, the camera ladder of docs/video.md),
/// sizes even; `total` split 10 / 25 / 65 % (150 / 375 / 975 kbit/s of 1.5 Mbit/s), each at
/// least 30 kbit/s.
pub fn simulcast_ladder(
    width: u32,
    height: u32,
    total: Bitrate,
) -> [LayerConfig; SIMULCAST_LAYERS] {
    let even = |v: u32| (v & !1).max(2);
    let share = |pct: u64| Bitrate::from_bps((total.bps() * pct / 100).max(30_000));
    [
        LayerConfig {
            width: even(width / 4),
            height: even(height / 4),
            bitrate: share(10),
        },
        LayerConfig {
            width: even(width / 2),
            height: even(height / 2),
            bitrate: share(25),
        },
        LayerConfig {
            width: even(width),
            height: even(height),
            bitrate: share(65),
        },
    ]
}

/// The capture + encode thread of the video we send: one [`SimulcastEncoder`] whose layers run
/// while someone wants them ([`LayerDemand`]s: each layer a mesh peer asked for, a peer getting
/// one layer on its one track, and the layers the SFU says its subscribers take). A captured
/// frame is encoded once per running layer, whatever the number of peers; layers nobody wants
/// are paused, and a resumed layer starts with a keyframe.
pub(crate) struct VideoSender {
    /// Simulcast layers to the SFU.
    layers: broadcast::Sender<Arc<LayerFrame>>,
    /// The same frames for mesh peers' send loops (each picks its layer).
    mesh: broadcast::Sender<Arc<LayerFrame>>,
    /// Per mesh send loop and SFU connection: the mask of layers it needs now (dead entries
    /// are pruned).
    demand: Arc<Mutex<Vec<Weak<LayerDemand>>>>,
    /// Per simulcast layer: a keyframe is wanted (a PLI, a peer switching to the layer).
    layer_keyframes: Arc<[AtomicBool; SIMULCAST_LAYERS]>,
    counters: Arc<SendCounters>,
    bitrate_bps: Arc<AtomicU64>,
    /// The camera is on: while off the source is still read (and dropped) but nothing is
    /// encoded or sent, and every stream starts again on a keyframe.
    on: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub(crate) format: VideoFormat,
}

/// The layers someone needs: the union of every consumer's mask; and per layer the lowest
/// rate a consumer receiving it allows (`u64::MAX`: no limit).
fn wanted_layers(demand: &Mutex<Vec<Weak<LayerDemand>>>) -> (u8, [u64; SIMULCAST_LAYERS]) {
    let mut mask = 0;
    let mut caps = [u64::MAX; SIMULCAST_LAYERS];
    if let Ok(mut d) = demand.lock() {
        d.retain(|w| match w.upgrade() {
            Some(m) => {
                let loop_mask = m.mask.load(Ordering::Relaxed);
                let cap = m.cap_bps.load(Ordering::Relaxed);
                mask |= loop_mask;
                for (i, c) in caps.iter_mut().enumerate() {
                    if loop_mask & (1 << i) != 0 && cap > 0 {
                        *c = (*c).min(cap);
                    }
                }
                true
            }
            None => false,
        });
    }
    (mask, caps)
}

impl VideoSender {
    fn start(
        mut source: Box<dyn VideoSource>,
        bitrate: Bitrate,
        events: mpsc::UnboundedSender<VoiceEvent>,
    ) -> Result<Self, VoiceError> {
        let format = source.format();
        // Checked before the thread starts: a source whose size libvpx refuses fails here.
        Vp8Encoder::new(EncoderConfig::camera(
            format.width,
            format.height,
            format.fps.max(1),
            bitrate,
        ))
        .map_err(|e| VoiceError::WebRtc(format!("video encoder: {e}")))?;
        let (layers, _) = broadcast::channel::<Arc<LayerFrame>>(48);
        let (mesh, _) = broadcast::channel::<Arc<LayerFrame>>(48);
        let demand: Arc<Mutex<Vec<Weak<LayerDemand>>>> = Arc::default();
        let layer_keyframes: Arc<[AtomicBool; SIMULCAST_LAYERS]> =
            Arc::new(std::array::from_fn(|_| AtomicBool::new(true)));
        let counters = Arc::new(SendCounters::default());
        let bitrate_bps = Arc::new(AtomicU64::new(bitrate.bps()));
        let stop = Arc::new(AtomicBool::new(false));
        let on = Arc::new(AtomicBool::new(true));
        let (sfu_tx, mesh_tx, wanted, layer_kf, count, rate, halt, live) = (
            layers.clone(),
            mesh.clone(),
            demand.clone(),
            layer_keyframes.clone(),
            counters.clone(),
            bitrate_bps.clone(),
            stop.clone(),
            on.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("video capture".into())
            .spawn(move || {
                let name = source.name();
                let fail = |what: String| {
                    tracing::warn!("{what}");
                    let _ = events.send(VoiceEvent::Error(what));
                };
                let mut simulcast: Option<SimulcastEncoder> = None;
                let mut last_mask = 0u8;
                while !halt.load(Ordering::Relaxed) {
                    let frame = match source.read() {
                        Ok(f) => f,
                        Err(VideoError::Ended) => return,
                        Err(e) => return fail(format!("video source {name}: {e}")),
                    };
                    if !live.load(Ordering::SeqCst) {
                        // Camera off: nothing leaves; each stream restarts on a keyframe.
                        for f in layer_kf.iter() {
                            f.store(true, Ordering::Relaxed);
                        }
                        continue;
                    }
                    count.captured.fetch_add(1, Ordering::Relaxed);
                    let (mask, caps) = wanted_layers(&wanted);
                    if mask != last_mask {
                        tracing::info!(
                            "video layers wanted: {}{}{} (low, medium, high)",
                            mask & 1,
                            (mask >> 1) & 1,
                            (mask >> 2) & 1
                        );
                        last_mask = mask;
                    }
                    count.active.store(mask, Ordering::Relaxed);
                    if mask == 0 {
                        // Nobody wants any layer: free the encoders; the next start on keyframes.
                        simulcast = None;
                        continue;
                    }
                    let size = (frame.width(), frame.height());
                    let total = Bitrate::from_bps(rate.load(Ordering::Relaxed));
                    let ladder = simulcast_ladder(size.0, size.1, total);
                    if simulcast
                        .as_ref()
                        .and_then(|e| e.layer(SIMULCAST_LAYERS - 1))
                        .is_none_or(|l| (l.width, l.height) != size)
                    {
                        simulcast = match SimulcastEncoder::new(&ladder, format.fps.max(1)) {
                            Ok(e) => Some(e),
                            Err(e) => return fail(format!("simulcast encoder: {e}")),
                        };
                    }
                    let Some(enc) = simulcast.as_mut() else {
                        continue;
                    };
                    for (i, l) in ladder.iter().enumerate() {
                        let on = mask & (1 << i) != 0;
                        enc.set_active(i, on);
                        // The ladder's share, or less if a receiving peer's path carries less.
                        let rate = l
                            .bitrate
                            .min(Bitrate::from_bps(caps[i]))
                            .max(congestion::MIN_LAYER_RATE);
                        count.bitrate_bps[i]
                            .store(if on { rate.bps() } else { 0 }, Ordering::Relaxed);
                        if enc.layer(i).is_some_and(|c| c.bitrate != rate)
                            && let Err(e) = enc.set_bitrate(i, rate)
                        {
                            tracing::debug!("simulcast bitrate: {e}");
                        }
                        if layer_kf[i].swap(false, Ordering::Relaxed) {
                            enc.request_keyframe(i);
                        }
                    }
                    match enc.encode(&frame) {
                        Ok(out) => {
                            for l in out {
                                if let Some(c) = count.encoded.get(l.layer) {
                                    c.fetch_add(1, Ordering::Relaxed);
                                }
                                let l = Arc::new(l);
                                if sfu_tx.receiver_count() > 0 {
                                    let _ = sfu_tx.send(l.clone());
                                }
                                let _ = mesh_tx.send(l);
                            }
                        }
                        Err(e) => return fail(format!("simulcast encoder: {e}")),
                    }
                }
            })
            .map_err(|e| VoiceError::WebRtc(format!("video thread: {e}")))?;
        Ok(Self {
            layers,
            mesh,
            demand,
            layer_keyframes,
            counters,
            bitrate_bps,
            on,
            stop,
            thread: Mutex::new(Some(thread)),
            format,
        })
    }

    /// The encoded layers for a mesh peer's send loop, and the mask through which it says
    /// which layers it needs (a layer runs while some mask has its bit).
    pub(crate) fn subscribe_mesh(
        &self,
    ) -> (broadcast::Receiver<Arc<LayerFrame>>, Arc<LayerDemand>) {
        (self.mesh.subscribe(), self.demand(LayerDemand::default()))
    }

    /// The simulcast layers for the SFU connection, and the mask through which it says which
    /// layers the SFU wants (at first all: an SFU that never says gets every layer).
    pub(crate) fn subscribe_layers(
        &self,
    ) -> (broadcast::Receiver<Arc<LayerFrame>>, Arc<LayerDemand>) {
        (self.layers.subscribe(), self.demand(LayerDemand::all()))
    }

    /// Registers one consumer's demand; it counts while the returned `Arc` lives.
    fn demand(&self, demand: LayerDemand) -> Arc<LayerDemand> {
        let demand = Arc::new(demand);
        if let Ok(mut d) = self.demand.lock() {
            d.push(Arc::downgrade(&demand));
        }
        demand
    }

    /// Per layer: set to get a keyframe of it at the next frame.
    pub(crate) fn layer_keyframe_flags(&self) -> Arc<[AtomicBool; SIMULCAST_LAYERS]> {
        self.layer_keyframes.clone()
    }

    pub(crate) fn stats(&self) -> VideoSendStats {
        let c = &self.counters;
        let active = c.active.load(Ordering::Relaxed);
        VideoSendStats {
            captured: c.captured.load(Ordering::Relaxed),
            encoded: std::array::from_fn(|i| c.encoded[i].load(Ordering::Relaxed)),
            active: std::array::from_fn(|i| active & (1 << i) != 0),
            bitrate: std::array::from_fn(|i| {
                Bitrate::from_bps(c.bitrate_bps[i].load(Ordering::Relaxed))
            }),
        }
    }

    pub(crate) fn set_bitrate(&self, b: Bitrate) {
        self.bitrate_bps.store(b.bps(), Ordering::Relaxed);
    }

    pub(crate) fn bitrate(&self) -> Bitrate {
        Bitrate::from_bps(self.bitrate_bps.load(Ordering::Relaxed))
    }

    /// The budget knob ([`Self::set_bitrate`]), shared with the mesh send loops.
    pub(crate) fn bitrate_knob(&self) -> Arc<AtomicU64> {
        self.bitrate_bps.clone()
    }

    /// Stops the thread (it ends after the frame it is reading).
    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// VP8 decode + sink on its own thread (libvpx blocks; a sink may write files).
struct DecodeThread {
    tx: SyncSender<(Bytes, Instant)>,
    /// Set by the thread when the decoder wants a keyframe.
    want_key: Arc<AtomicBool>,
    decoded: Arc<AtomicU64>,
}

impl DecodeThread {
    fn start(
        track: &RemoteVideoTrack,
        mut sink: Box<dyn VideoSink>,
        closing: Arc<AtomicBool>,
    ) -> Result<(Self, std::thread::JoinHandle<()>), String> {
        let mut decoder = Vp8Decoder::new().map_err(|e| e.to_string())?;
        let (tx, rx) = sync_channel::<(Bytes, Instant)>(30);
        let want_key = Arc::new(AtomicBool::new(false));
        let decoded = Arc::new(AtomicU64::new(0));
        let (want, count) = (want_key.clone(), decoded.clone());
        let name = format!("video decode {}", track.user);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let mut sink_failed = false;
                loop {
                    let (data, arrival) = match rx.recv_timeout(Duration::from_millis(50)) {
                        Ok(m) => m,
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                            if closing.load(Ordering::SeqCst) {
                                break;
                            }
                            continue;
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    if data.is_empty() {
                        // The transport lost frames before the next one.
                        decoder.frame_lost();
                    } else if let Ok(frame) = decoder.decode(&data, arrival) {
                        count.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = sink.write(&frame)
                            && !sink_failed
                        {
                            tracing::warn!("video sink {}: {e}", sink.name());
                            sink_failed = true;
                        }
                    }
                    if decoder.take_keyframe_request() {
                        want.store(true, Ordering::Relaxed);
                    }
                }
                if let Err(e) = sink.finish() {
                    tracing::warn!("video sink {}: {e}", sink.name());
                }
            })
            .map_err(|e| e.to_string())?;
        Ok((
            Self {
                tx,
                want_key,
                decoded,
            },
            thread,
        ))
    }

    /// Hands a frame over (an empty one says "lost"); a full queue drops it and reports a loss.
    fn send(&self, data: Bytes, arrival: Instant) {
        match self.tx.try_send((data, arrival)) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                // The decoder fell behind: the next frame cannot reference what was skipped.
                self.want_key.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Width and height from a VP8 keyframe header (RFC 6386 9.1).
fn keyframe_size(data: &[u8]) -> Option<(u32, u32)> {
    if !hum_media::video::vp8::is_keyframe(data) {
        return None;
    }
    let w = u32::from(u16::from_le_bytes([data[6], data[7]]) & 0x3fff);
    let h = u32::from(u16::from_le_bytes([data[8], data[9]]) & 0x3fff);
    Some((w, h))
}

/// Receives one remote video track until it ends.
pub(crate) async fn receive(track: Arc<dyn TrackRemote>, user: UserId, video: Arc<SessionVideo>) {
    receive_with_transform(track, user, video, None).await;
}

/// [`receive`] with end-to-end decryption of each assembled frame (SFU tracks with E2EE on,
/// docs/e2ee.md): a frame that does not decrypt is treated as lost.
pub(crate) async fn receive_with_transform(
    track: Arc<dyn TrackRemote>,
    user: UserId,
    video: Arc<SessionVideo>,
    transform: Option<Arc<dyn hum_e2ee::FrameTransform>>,
) {
    let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
    let info = RemoteVideoTrack {
        user,
        track: track.track_id().await,
        layer: track.rid(ssrc).await,
    };
    let kind = VideoKind::of_track(&info.track);
    let asked = Arc::new(AtomicBool::new(false));
    if let Ok(mut m) = video.want_key.lock() {
        m.insert((user, kind), asked.clone());
    }
    // The sink opens with the track's first frame: a screen track idle since negotiation (no
    // share yet) leaves no empty recording behind.
    let mut decode: Option<DecodeThread> = None;
    let mut sink_opened = false;
    // A screen track may stay silent for the whole session: keyframes are asked for only once
    // it carried something.
    let mut heard = kind == VideoKind::Camera;
    let mut asm = FrameAssembler::new(AssemblerConfig::default());
    // A keyframe is awaited from the start (we may join a running stream).
    let mut awaiting_key = true;
    let started = Instant::now();
    let mut last_pli: Option<Instant> = None;
    let mut after_loss = false;
    // Frames were held back while the sender's camera was off (or before we knew it was on).
    let mut held_back = false;
    let mut size = (0, 0);
    // (first RTP timestamp, last raw, last unwrapped) for timestamp_us.
    let mut clock: Option<(i64, u32, i64)> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let out = tokio::select! {
            ev = track.poll() => match ev {
                Some(TrackRemoteEvent::OnRtpPacket(p)) => {
                    video.update_stats(user, kind, |s| s.packets += 1);
                    heard = true;
                    asm.push(
                        Instant::now(),
                        p.header.sequence_number,
                        p.header.timestamp,
                        p.header.marker,
                        &p.payload,
                    )
                }
                Some(TrackRemoteEvent::OnEnded) | None => break,
                Some(_) => continue,
            },
            _ = tick.tick() => asm.poll(Instant::now()),
        };
        for a in out {
            match a {
                Assembled::Lost => {
                    after_loss = true;
                    awaiting_key = true;
                    video.update_stats(user, kind, |s| s.losses += 1);
                    if let Some(d) = &decode {
                        d.send(Bytes::new(), Instant::now());
                    }
                }
                Assembled::Frame(mut f) => {
                    if transform.is_some() {
                        let data = std::mem::take(&mut f.data);
                        match crate::e2ee::open_video(transform.as_deref(), &user, data) {
                            Some(plain) => f.data = plain,
                            None => {
                                after_loss = true;
                                awaiting_key = true;
                                if let Some(d) = &decode {
                                    d.send(Bytes::new(), Instant::now());
                                }
                                continue;
                            }
                        }
                    }
                    if kind == VideoKind::Camera && video.camera_off(&user) {
                        held_back = true;
                        continue;
                    }
                    if std::mem::take(&mut held_back) && !f.keyframe {
                        // The first frame after a pause may reference one we dropped.
                        after_loss = true;
                        awaiting_key = true;
                        if let Some(d) = &decode {
                            d.send(Bytes::new(), Instant::now());
                        }
                    }
                    if let Some(wh) = keyframe_size(&f.data) {
                        size = wh;
                    }
                    if f.keyframe {
                        awaiting_key = false;
                        after_loss = false;
                    }
                    if !std::mem::replace(&mut sink_opened, true) {
                        decode = open_decode(&video, &info);
                    }
                    video.update_stats(user, kind, |s| {
                        s.frames += 1;
                        s.keyframes += u64::from(f.keyframe);
                    });
                    let unwrapped = match clock {
                        None => i64::from(f.timestamp),
                        Some((_, raw, last)) => {
                            last + i64::from(f.timestamp.wrapping_sub(raw) as i32)
                        }
                    };
                    let first = clock.map_or(unwrapped, |c| c.0);
                    clock = Some((first, f.timestamp, unwrapped));
                    let timestamp_us = (unwrapped - first).max(0) as u64 * 100 / 9;
                    let data = Bytes::from(f.data);
                    if let Some(d) = &decode {
                        d.send(data.clone(), f.arrival);
                    }
                    let _ = video.frames.send(EncodedVideoFrame {
                        user,
                        track: info.track.clone(),
                        layer: info.layer.clone(),
                        data,
                        keyframe: f.keyframe,
                        timestamp: f.timestamp,
                        timestamp_us,
                        width: size.0,
                        height: size.1,
                        arrival: f.arrival,
                        after_loss,
                    });
                }
            }
        }
        if let Some(d) = &decode {
            if d.want_key.swap(false, Ordering::Relaxed) {
                awaiting_key = true;
                last_pli = None;
            }
            let n = d.decoded.load(Ordering::Relaxed);
            video.update_stats(user, kind, |s| s.decoded = n);
        }
        if asked.swap(false, Ordering::SeqCst) {
            awaiting_key = true;
            last_pli = None;
        }
        // Ask for a keyframe while one is awaited: at once after a loss, every PLI_INTERVAL
        // after that (and not in the first interval of a new track: its first frame is one).
        let now = Instant::now();
        let due = match last_pli {
            Some(t) => now.saturating_duration_since(t) >= PLI_INTERVAL,
            None => now.saturating_duration_since(started) >= PLI_INTERVAL || after_loss,
        };
        if awaiting_key && due && heard {
            last_pli = Some(now);
            video.update_stats(user, kind, |s| s.plis_sent += 1);
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrc,
            };
            if let Err(e) = track.write_rtcp(vec![Box::new(pli)]).await {
                tracing::debug!(%user, "PLI: {e}");
            }
        }
    }
    if let Ok(mut m) = video.want_key.lock() {
        m.remove(&(user, kind));
    }
}

/// The decode thread of a remote track, if the session decodes (a sink factory); a sink that
/// does not open is reported, and the track is then only forwarded.
fn open_decode(video: &SessionVideo, info: &RemoteVideoTrack) -> Option<DecodeThread> {
    let factory = video.sinks.as_ref()?;
    match factory
        .open(info)
        .and_then(|sink| DecodeThread::start(info, sink, video.closing.clone()))
    {
        Ok((d, thread)) => {
            if let Ok(mut t) = video.decoders.lock() {
                t.push(thread);
            }
            Some(d)
        }
        Err(e) => {
            let _ = video
                .events
                .send(VoiceEvent::Error(format!("video from {}: {e}", info.user)));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    //! Two sessions in one process over loopback WebRTC, signalling in memory: the test pattern
    //! both ways, decoded and read back; a keyframe asked for by the receiver arrives.

    use std::sync::Mutex as StdMutex;

    use hum_media::pacer::Paced;
    use hum_media::processing::{CaptureControls, VoiceMode};
    use hum_media::synth::{NullSink, SilenceSource};
    use hum_media::video::{PatternAnalyser, PatternSource, VideoFrame, WallAnchor};

    use super::*;
    use crate::voice::{MemorySignalHub, VoiceConfig, VoiceSession};

    #[derive(Clone)]
    struct Shared(Arc<StdMutex<PatternAnalyser>>);

    impl VideoSink for Shared {
        fn write(&mut self, frame: &VideoFrame) -> Result<(), VideoError> {
            if let Ok(mut a) = self.0.lock() {
                a.observe(frame, Instant::now());
            }
            Ok(())
        }
        fn name(&self) -> String {
            "shared analyser".into()
        }
    }

    impl VideoSinkFactory for Shared {
        fn open(&self, _track: &RemoteVideoTrack) -> Result<Box<dyn VideoSink>, String> {
            Ok(Box::new(self.clone()))
        }
    }

    fn party(hub: &MemorySignalHub, me: UserId) -> (Arc<VoiceSession>, Shared) {
        party_sized(hub, me, (320, 180))
    }

    fn party_sized(
        hub: &MemorySignalHub,
        me: UserId,
        size: (u32, u32),
    ) -> (Arc<VoiceSession>, Shared) {
        let analyser = Shared(Arc::new(StdMutex::new(PatternAnalyser::new(
            WallAnchor::now(),
        ))));
        let (session, _events) = party_with(hub, me, size, Arc::new(analyser.clone()));
        (session, analyser)
    }

    /// A session sending the pattern at `w` x `h` as its camera, decoding into `sinks`.
    fn party_with(
        hub: &MemorySignalHub,
        me: UserId,
        (w, h): (u32, u32),
        sinks: Arc<dyn VideoSinkFactory>,
    ) -> (Arc<VoiceSession>, mpsc::UnboundedReceiver<VoiceEvent>) {
        let source = PatternSource::realtime(VideoFormat::new(w, h, 30)).expect("pattern");
        let controls = CaptureControls::new();
        controls.set_mode(VoiceMode::Open);
        controls.set_noise_suppression(false);
        let (signaller, mut inbox) = hub.register(me);
        let (session, events) = VoiceSession::start_with_video(
            me,
            VoiceConfig {
                bind: vec!["127.0.0.1:0".into()],
                ..Default::default()
            },
            Box::new(Paced::new(SilenceSource::new())),
            Box::new(Paced::new(NullSink)),
            controls,
            VideoIo {
                source: Some(Box::new(source)),
                bitrate: Bitrate::from_kbps(300),
                receive: true,
                sinks: Some(sinks),
                screen: None,
            },
            signaller,
        )
        .expect("start");
        let s = session.clone();
        tokio::spawn(async move {
            while let Some((from, payload)) = inbox.recv().await {
                if let Err(e) = s.handle_signal(from, payload).await {
                    eprintln!("signal from {from}: {e}");
                }
            }
        });
        (session, events)
    }

    /// One analyser per remote track (the camera and the screen apart), and the sizes each
    /// decoded.
    #[derive(Clone, Default)]
    struct PerTrack(Arc<StdMutex<BTreeMap<String, TrackSeen>>>);

    #[derive(Clone)]
    struct TrackSeen {
        analyser: Arc<StdMutex<PatternAnalyser>>,
        sizes: Arc<StdMutex<Vec<(u32, u32)>>>,
    }

    impl VideoSink for TrackSeen {
        fn write(&mut self, frame: &VideoFrame) -> Result<(), VideoError> {
            if let Ok(mut a) = self.analyser.lock() {
                a.observe(frame, Instant::now());
            }
            if let Ok(mut s) = self.sizes.lock()
                && s.last() != Some(&(frame.width(), frame.height()))
            {
                s.push((frame.width(), frame.height()));
            }
            Ok(())
        }
        fn name(&self) -> String {
            "track analyser".into()
        }
    }

    impl VideoSinkFactory for PerTrack {
        fn open(&self, track: &RemoteVideoTrack) -> Result<Box<dyn VideoSink>, String> {
            let seen = TrackSeen {
                analyser: Arc::new(StdMutex::new(PatternAnalyser::new(WallAnchor::now()))),
                sizes: Arc::default(),
            };
            let mut m = self.0.lock().map_err(|e| e.to_string())?;
            if m.insert(track.track.clone(), seen.clone()).is_some() {
                return Err(format!("track {} opened twice", track.track));
            }
            Ok(Box::new(seen))
        }
    }

    /// A track's id, its analyser's report and the sizes it decoded.
    type TrackReport = (String, hum_media::video::PatternReport, Vec<(u32, u32)>);

    impl PerTrack {
        /// The report and decoded sizes of the one track of `kind` (`None`: not opened yet).
        fn of(&self, kind: VideoKind) -> Option<TrackReport> {
            let m = self.0.lock().ok()?;
            let mut of_kind = m.iter().filter(|(t, _)| VideoKind::of_track(t) == kind);
            let (track, seen) = of_kind.next()?;
            assert!(of_kind.next().is_none(), "one {kind:?} track");
            let report = seen.analyser.lock().ok()?.report();
            let sizes = seen.sizes.lock().ok()?.clone();
            Some((track.clone(), report, sizes))
        }

        fn decoded(&self, kind: VideoKind) -> u64 {
            self.of(kind).map_or(0, |(_, r, _)| r.decoded)
        }
    }

    fn decoded(a: &Shared) -> u64 {
        a.0.lock().map(|a| a.report().decoded).unwrap_or(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pattern_video_both_ways_decodes_in_order_and_a_requested_keyframe_arrives() {
        let hub = MemorySignalHub::new();
        let (a_id, b_id) = (UserId([1; 32]), UserId([2; 32]));
        let (a, seen_by_a) = party(&hub, a_id);
        let (b, seen_by_b) = party(&hub, b_id);
        let mut frames_at_b = b.video_frames();
        b.add_peer(a_id).await.expect("b waits");
        a.add_peer(b_id).await.expect("a offers");

        // 45 frames (1.5 s of 30 fps) read back on each side; a hang guard only.
        let deadline = Instant::now() + Duration::from_secs(30);
        while decoded(&seen_by_a) < 45 || decoded(&seen_by_b) < 45 {
            assert!(
                Instant::now() < deadline,
                "a decoded {}, b decoded {}",
                decoded(&seen_by_a),
                decoded(&seen_by_b)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (who, an) in [("a", &seen_by_a), ("b", &seen_by_b)] {
            let r = an.0.lock().expect("analyser").report();
            assert_eq!(r.unreadable, 0, "{who}: {r:?}");
            assert_eq!(r.out_of_order, 0, "{who}: {r:?}");
            assert_eq!(r.duplicates, 0, "{who}: {r:?}");
        }

        // The encoded frames B got from A: a keyframe first, with the size; then ask for
        // another keyframe (a PLI through A's interceptor chain to A's encoder).
        let first = frames_at_b.recv().await.expect("a frame");
        assert_eq!(first.user, a_id);
        assert!(first.keyframe, "the first frame is a keyframe");
        assert_eq!((first.width, first.height), (320, 180));
        let keyframes = |s: &Arc<VoiceSession>| s.video_stats(&a_id).map_or(0, |s| s.keyframes);
        let before = keyframes(&b);
        b.request_keyframe(a_id);
        let deadline = Instant::now() + Duration::from_secs(10);
        while keyframes(&b) <= before {
            assert!(Instant::now() < deadline, "no keyframe after the request");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stats = b.video_stats(&a_id).expect("stats");
        assert!(stats.plis_sent >= 1, "{stats:?}");
        assert_eq!(stats.losses, 0, "{stats:?}");
        a.leave().await;
        b.leave().await;
    }

    /// Waits (a hang guard only) until `b` gets a keyframe of `a`'s video at `size`.
    async fn keyframe_of_size(
        frames: &mut broadcast::Receiver<EncodedVideoFrame>,
        from: UserId,
        size: (u32, u32),
    ) -> u64 {
        let mut seen = 0;
        loop {
            let f = tokio::time::timeout(Duration::from_secs(20), frames.recv())
                .await
                .unwrap_or_else(|_| panic!("no keyframe at {size:?} within 20 s"));
            match f {
                Ok(f) if f.user == from => {
                    seen += 1;
                    if f.keyframe && (f.width, f.height) == size {
                        return seen;
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_receiver_switches_layers_and_unwanted_layers_are_not_encoded() {
        let hub = MemorySignalHub::new();
        let (a_id, b_id) = (UserId([1; 32]), UserId([2; 32]));
        let (a, _) = party_sized(&hub, a_id, (640, 360));
        let (b, _) = party_sized(&hub, b_id, (320, 180));
        let mut at_b = b.video_frames();
        b.set_video_quality(a_id, VideoQuality::Low)
            .await
            .expect("ask");
        b.add_peer(a_id).await.expect("b waits");
        a.add_peer(b_id).await.expect("a offers");
        // B asked for low before connecting: A's thumbnails arrive (160x90 of 640x360).
        keyframe_of_size(&mut at_b, a_id, (160, 90)).await;
        let stats = a.video_send_stats().expect("a sends");
        assert_eq!(stats.active, [true, false, false], "{stats:?}");
        assert_eq!(stats.encoded[1], 0, "{stats:?}");
        // Spotlight: the full picture, on the same track.
        b.set_video_quality(a_id, VideoQuality::High)
            .await
            .expect("ask");
        keyframe_of_size(&mut at_b, a_id, (640, 360)).await;
        // Low is no longer wanted by anyone: it pauses.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = a.video_send_stats().expect("a sends");
            if s.active == [false, false, true] {
                assert_eq!(s.encoded[1], 0, "{s:?}");
                assert!(
                    s.encoded[0] <= s.captured && s.encoded[2] <= s.captured,
                    "{s:?}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "layers {s:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Off: nothing is encoded for B (A has no other peer).
        b.set_video_quality(a_id, VideoQuality::Off)
            .await
            .expect("ask");
        let deadline = Instant::now() + Duration::from_secs(10);
        while a.video_send_stats().expect("a sends").active != [false, false, false] {
            assert!(Instant::now() < deadline, "still encoding for nobody");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        a.leave().await;
        b.leave().await;
    }

    /// The SFU connection's demand (what `sfu_layers` sets): all layers until told, then only
    /// those wanted; a layer wanted again resumes on a keyframe. No network: the capture
    /// thread and the SFU's frame channel only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sfu_demand_pauses_unwanted_layers_and_a_resumed_one_starts_on_a_keyframe() {
        let source = PatternSource::realtime(VideoFormat::new(320, 180, 30)).expect("pattern");
        let (events, _ev) = mpsc::unbounded_channel();
        let send =
            VideoSender::start(Box::new(source), Bitrate::from_kbps(600), events).expect("sender");
        let (mut frames, demand) = send.subscribe_layers();
        // Frames of `layer` that arrive within a few captures (a hang guard, not a timing check).
        async fn next_of(
            frames: &mut broadcast::Receiver<Arc<LayerFrame>>,
            layer: usize,
        ) -> Arc<LayerFrame> {
            loop {
                let f = tokio::time::timeout(Duration::from_secs(20), frames.recv())
                    .await
                    .expect("no frame within 20 s")
                    .expect("frames");
                if f.layer == layer {
                    return f;
                }
            }
        }
        // Until the SFU says: every layer.
        for l in 0..SIMULCAST_LAYERS {
            next_of(&mut frames, l).await;
        }
        assert_eq!(send.stats().active, [true; SIMULCAST_LAYERS]);
        // `sfu_layers ["q"]`: only the low layer is encoded.
        demand
            .mask
            .store(super::super::sfu_video::rid_mask(&["q"]), Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(20);
        while send.stats().active != [true, false, false] {
            assert!(Instant::now() < deadline, "{:?}", send.stats());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let paused = send.stats();
        for _ in 0..15 {
            next_of(&mut frames, 0).await;
        }
        let later = send.stats();
        assert_eq!(
            (later.encoded[1], later.encoded[2]),
            (paused.encoded[1], paused.encoded[2]),
            "paused layers were encoded: {paused:?} -> {later:?}"
        );
        assert!(
            later.encoded[0] >= paused.encoded[0] + 10,
            "{paused:?} -> {later:?}"
        );
        // `sfu_layers ["q", "f"]`: the top layer resumes, and on a keyframe.
        frames = frames.resubscribe();
        demand.mask.store(
            super::super::sfu_video::rid_mask(&["q", "f"]),
            Ordering::Relaxed,
        );
        let first = next_of(&mut frames, 2).await;
        assert!(
            first.frame.keyframe,
            "the resumed layer starts on a keyframe"
        );
        let s = send.stats();
        assert_eq!(s.active, [true, false, true], "{s:?}");
        assert_eq!(s.encoded[1], paused.encoded[1], "{s:?}");
        // The SFU connection gone: nothing is encoded for it.
        drop(demand);
        let deadline = Instant::now() + Duration::from_secs(20);
        while send.stats().active != [false; SIMULCAST_LAYERS] {
            assert!(Instant::now() < deadline, "{:?}", send.stats());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        send.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_screen_share_arrives_as_its_own_stream_beside_the_camera() {
        use screen::ShareTarget;

        let hub = MemorySignalHub::new();
        let (a_id, b_id) = (UserId([1; 32]), UserId([2; 32]));
        let (a, mut a_events) = party_with(&hub, a_id, (320, 180), Arc::new(PerTrack::default()));
        let seen_by_b = PerTrack::default();
        let (b, _b_events) = party_with(&hub, b_id, (320, 180), Arc::new(seen_by_b.clone()));
        let mut at_b = b.video_frames();
        b.add_peer(a_id).await.expect("b waits");
        a.add_peer(b_id).await.expect("a offers");

        // A's camera runs first; the screen track is idle (no sink opened for it).
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen_by_b.decoded(VideoKind::Camera) < 15 {
            assert!(Instant::now() < deadline, "no camera at b");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            seen_by_b.of(VideoKind::Screen).is_none(),
            "an idle screen track"
        );
        assert!(!a.screen_share_stats().sharing);

        // The share starts on the running connection (no renegotiation).
        let share = ShareTarget::parse("pattern:480x270")
            .expect("target")
            .open(hum_media::video::ScreenProfile::P720Fps30)
            .expect("open");
        a.start_screen_share(share).expect("share");
        let camera_before = seen_by_b.decoded(VideoKind::Camera);

        // B's first frame on A's screen track is a keyframe at the share's size.
        let first = loop {
            let f = tokio::time::timeout(Duration::from_secs(20), at_b.recv())
                .await
                .expect("a screen frame within 20 s (hang guard)");
            match f {
                Ok(f) if f.user == a_id && VideoKind::of_track(&f.track) == VideoKind::Screen => {
                    break f;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("{e}"),
            }
        };
        assert!(first.track.starts_with("screen-"), "{}", first.track);
        assert!(first.keyframe, "the share starts on a keyframe");
        assert_eq!((first.width, first.height), (480, 270));

        // 45 screen frames (1.5 s at 30 fps) decoded and read back; a hang guard only.
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen_by_b.decoded(VideoKind::Screen) < 45 {
            assert!(
                Instant::now() < deadline,
                "b decoded {} screen frames",
                seen_by_b.decoded(VideoKind::Screen)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (track, screen, sizes) = seen_by_b.of(VideoKind::Screen).expect("screen");
        assert_eq!(track, first.track);
        assert_eq!(sizes, [(480, 270)], "{track}");
        assert_eq!(screen.unreadable, 0, "{screen:?}");
        assert_eq!(screen.out_of_order, 0, "{screen:?}");
        assert_eq!(screen.duplicates, 0, "{screen:?}");

        // The camera went on beside it, on its own track, with its own counters and codes.
        let (camera_track, camera, camera_sizes) = seen_by_b.of(VideoKind::Camera).expect("camera");
        assert_ne!(camera_track, track);
        assert_eq!(camera_sizes, [(320, 180)]);
        assert!(camera.decoded > camera_before, "{camera:?}");
        assert_eq!(
            (camera.unreadable, camera.out_of_order, camera.duplicates),
            (0, 0, 0),
            "{camera:?}"
        );
        let camera_stats = b
            .video_stats_of(&a_id, VideoKind::Camera)
            .expect("camera stats");
        let screen_stats = b
            .video_stats_of(&a_id, VideoKind::Screen)
            .expect("screen stats");
        assert_eq!(b.video_stats(&a_id), Some(camera_stats));
        assert!(
            screen_stats.frames >= 45 && screen_stats.keyframes >= 1,
            "{screen_stats:?}"
        );
        // `decoded` is copied from the decode thread each 50 ms tick: it may trail by a frame.
        assert!(
            screen_stats.decoded > 0 && screen_stats.decoded <= screen_stats.frames,
            "{screen_stats:?}"
        );
        assert_eq!(screen_stats.losses, 0, "{screen_stats:?}");
        let sent = a.screen_share_stats();
        assert!(sent.sharing, "{sent:?}");
        assert_eq!(
            (sent.width, sent.height, sent.fps),
            (480, 270, 30),
            "{sent:?}"
        );
        assert!(
            sent.encoded >= 45 && sent.encoded <= sent.captured,
            "{sent:?}"
        );

        // Stopping joins the capture thread: nothing more is captured or encoded.
        assert!(a.stop_screen_share());
        let stopped = a.screen_share_stats();
        assert!(!stopped.sharing, "{stopped:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let later = a.screen_share_stats();
        assert_eq!(
            (later.captured, later.encoded),
            (stopped.captured, stopped.encoded)
        );
        assert!(!a.stop_screen_share(), "already stopped");
        let mut said = Vec::new();
        while let Ok(ev) = a_events.try_recv() {
            if let VoiceEvent::ScreenShare { sharing, reason } = ev {
                said.push((sharing, reason));
            }
        }
        assert_eq!(said, [(true, None), (false, None)]);
        a.leave().await;
        b.leave().await;
    }
}
