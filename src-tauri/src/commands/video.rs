//! Video: my camera's self-view (hum-engine's `VideoPreview`), the video source setting and the
//! stream of encoded frames to the webview (`channels::VideoPacket`, decoded there by WebCodecs).
//!
//! Every running preview is a stream with an id: `self` is my camera (the control bar's camera
//! button); `bench-N` are extra pattern streams a benchmark starts (`video_bench_start`) to
//! measure decoding several tiles at once. Remote tracks of a call arrive on the same channel as
//! `<user hex>/camera` (`follow_call_video`); a call's video track reads my camera through
//! `AppState::camera_share`, which the self-view's preview taps.

use std::collections::BTreeMap;
use std::sync::Arc;

use hum_engine::video_preview::{
    CameraShare, PreviewConfig, PreviewSource, VideoPreview, open_source,
};
use hum_engine::voice::hum_media::video::VideoFormat;
use hum_engine::voice::{VideoIo, VoiceSession};
use hum_proto::units::Bitrate;
use serde::{Deserialize, Serialize};
use specta::Type;
use tauri::State;
use tauri::ipc::Channel;

use crate::channels::{VideoHub, VideoPacket, remote_stream_id};
use crate::error::{CmdResult, CommandError, ErrorCode};
use crate::settings_store::keys;
use crate::state::AppState;

/// The stream id of my own camera.
pub const SELF_STREAM: &str = "self";
/// Overrides the source setting (`pattern`, `camera[:NAME]`, `file:PATH.y4m`): the e2e test and
/// benchmarks start the app with the pattern.
pub const SOURCE_ENV: &str = "HUM_VIDEO_SOURCE";
/// Most bench streams at once.
pub const MAX_BENCH_STREAMS: u8 = 9;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
pub enum VideoQuality {
    /// 1280x720 at 30 fps, 1.5 Mbit/s (the camera's top simulcast layer).
    #[serde(rename = "720p30")]
    P720,
    /// 640x360 at 30 fps, 500 kbit/s.
    #[serde(rename = "360p30")]
    P360,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct VideoSettings {
    /// `camera` (the first camera), `camera:ID` (an index or `/dev/videoN` from
    /// `video_sources_list`), `pattern` (the test pattern) or `file:PATH` (a Y4M file, looped).
    pub source: String,
    pub quality: VideoQuality,
}

impl Default for VideoSettings {
    fn default() -> Self {
        Self {
            source: "camera".into(),
            quality: VideoQuality::P720,
        }
    }
}

/// A choice for the source setting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Type)]
pub struct VideoSourceView {
    /// The setting's value for it.
    pub id: String,
    pub name: String,
}

/// My camera's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Type)]
pub struct CameraView {
    pub on: bool,
    /// The stream id its frames carry.
    pub stream_id: String,
    /// What it shows ("test pattern 1280x720@30", "camera …"); empty when off.
    pub source: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

impl CameraView {
    fn off() -> Self {
        Self {
            on: false,
            stream_id: SELF_STREAM.into(),
            source: String::new(),
            width: 0,
            height: 0,
            fps: 0,
        }
    }
}

/// The running previews, by stream id.
#[derive(Default)]
pub struct Previews(std::sync::Mutex<BTreeMap<String, VideoPreview>>);

impl Previews {
    fn insert(&self, id: &str, p: VideoPreview) -> CmdResult<()> {
        let old = self
            .0
            .lock()
            .map_err(CommandError::internal)?
            .insert(id.to_owned(), p);
        drop(old); // joins its thread outside the lock
        Ok(())
    }

    /// Stops the streams whose id matches; how many.
    fn remove(&self, matches: impl Fn(&str) -> bool) -> usize {
        let removed: Vec<VideoPreview> = match self.0.lock() {
            Ok(mut m) => {
                let ids: Vec<String> = m.keys().filter(|k| matches(k)).cloned().collect();
                ids.iter().filter_map(|k| m.remove(k)).collect()
            }
            Err(_) => Vec::new(),
        };
        let n = removed.len();
        drop(removed);
        n
    }

    fn with<T>(&self, id: &str, f: impl FnOnce(&VideoPreview) -> T) -> Option<T> {
        self.0.lock().ok()?.get(id).map(f)
    }
}

pub fn load(state: &AppState) -> VideoSettings {
    state
        .kv
        .get(keys::VIDEO)
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

/// The source to use: the environment's override, else the setting.
pub fn effective_source(settings: &VideoSettings, env: Option<String>) -> CmdResult<PreviewSource> {
    let text = env.unwrap_or_else(|| settings.source.clone());
    PreviewSource::parse(&text).map_err(|e| CommandError::invalid(e.to_string()))
}

pub fn config(source: PreviewSource, quality: VideoQuality) -> PreviewConfig {
    match quality {
        VideoQuality::P720 => PreviewConfig::hd(source),
        VideoQuality::P360 => PreviewConfig::sd(source),
    }
}

/// A camera error in words, with what to do.
pub fn camera_error(e: &hum_engine::video_preview::PreviewError) -> CommandError {
    let text = e.to_string();
    let message = if text.starts_with("no camera found") {
        format!(
            "{}. Plug in a camera, or pick the test pattern under Settings → Devices → Camera.",
            capitalise(&text)
        )
    } else {
        format!("Could not start the camera: {text}.")
    };
    CommandError::new(ErrorCode::Device, message)
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Starts a preview streaming to the hub under `id`.
fn start(hub: Arc<VideoHub>, id: &str, config: PreviewConfig) -> CmdResult<VideoPreview> {
    start_tapped(hub, id, config, None)
}

/// Like [`start`]; with a share, a call's video track gets the same camera frames.
fn start_tapped(
    hub: Arc<VideoHub>,
    id: &str,
    config: PreviewConfig,
    share: Option<Arc<CameraShare>>,
) -> CmdResult<VideoPreview> {
    let stream = id.to_owned();
    let mut source = open_source(&config).map_err(|e| camera_error(&e))?;
    if let Some(share) = share {
        source = share.tap(source);
    }
    VideoPreview::start_with(source, config.bitrate, move |frame| {
        if let Some(p) = VideoPacket::encode(&stream, &frame) {
            hub.publish(&p);
        }
        true
    })
    .map_err(|e| camera_error(&e))
}

/// The video of a call: my camera through the share (silent while it is off, so turning it on
/// mid-call needs no renegotiation), at the quality setting's size and rate; video is always
/// negotiated so the friend's camera shows whenever they turn it on.
pub fn call_video_io(state: &AppState) -> VideoIo {
    let settings = load(state);
    let cfg = config(PreviewSource::Pattern, settings.quality);
    VideoIo {
        source: Some(state.camera_share.reader(cfg.format)),
        bitrate: cfg.bitrate,
        receive: true,
        sinks: None,
        screen: None,
    }
}

/// Forwards a session's (a call's or a voice channel's) received video frames to the webview
/// (as `<user hex>/camera`) until [`stop_call_video`], and a member's camera going off as an
/// `ended` packet (their tile shows their avatar at once). The session's camera starts as my
/// camera is now (on or off).
pub fn follow_call_video(state: &AppState, session: &Arc<VoiceSession>) {
    session.set_camera(state.previews.with(SELF_STREAM, |_| ()).is_some());
    let mut rx = session.video_frames();
    let mut cameras = session.camera_changes();
    let hub = state.video.clone();
    let task = tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            tokio::select! {
                f = rx.recv() => match f {
                    Ok(f) => {
                        if let Some(p) = VideoPacket::remote(&f) {
                            hub.publish(&p);
                        }
                    }
                    // Frames were skipped: the tile notices the gap and asks for a keyframe.
                    Err(RecvError::Lagged(n)) => tracing::debug!("call video: {n} frames skipped"),
                    Err(_) => return,
                },
                c = cameras.recv() => match c {
                    Ok(c) if !c.camera => {
                        if let Some(p) = VideoPacket::ended(&remote_stream_id(&c.user, "camera")) {
                            hub.publish(&p);
                        }
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(_) => return,
                },
            }
        }
    });
    if let Ok(mut slot) = state.call_video.lock()
        && let Some(old) = slot.replace(task.abort_handle())
    {
        old.abort();
    }
}

/// The call stops: its video track stops reading my camera, its frames stop flowing.
pub fn stop_call_video(state: &AppState) {
    state.camera_share.close_readers();
    if let Ok(mut slot) = state.call_video.lock()
        && let Some(old) = slot.take()
    {
        old.abort();
    }
}

/// Encoded video frames of every stream, raw bytes (`channels::VideoPacket`). The UI opens one
/// at start and keeps it.
#[tauri::command]
#[specta::specta]
pub fn video_subscribe(state: State<'_, AppState>, on_frame: Channel<VideoPacket>) {
    state.video.subscribe(on_frame);
}

#[tauri::command]
#[specta::specta]
pub fn video_settings_get(state: State<'_, AppState>) -> VideoSettings {
    load(&state)
}

/// Validates the source and saves. A running camera keeps its source until turned off and on.
#[tauri::command]
#[specta::specta]
pub fn video_settings_set(
    state: State<'_, AppState>,
    settings: VideoSettings,
) -> CmdResult<VideoSettings> {
    PreviewSource::parse(&settings.source).map_err(|e| CommandError::invalid(e.to_string()))?;
    let value = serde_json::to_value(&settings).map_err(CommandError::internal)?;
    state
        .kv
        .set(keys::VIDEO, value)
        .map_err(|e| CommandError::storage("Could not save the video settings", e))?;
    Ok(settings)
}

/// The cameras the system has (none is an empty list of cameras) and the test pattern.
#[tauri::command]
#[specta::specta]
pub async fn video_sources_list() -> CmdResult<Vec<VideoSourceView>> {
    use hum_engine::voice::hum_media::video::camera::list_cameras;
    let cameras = tauri::async_runtime::spawn_blocking(list_cameras)
        .await
        .map_err(CommandError::internal)?
        .unwrap_or_else(|e| {
            tracing::warn!("cameras not listed: {e}");
            Vec::new()
        });
    let mut out: Vec<VideoSourceView> = cameras
        .into_iter()
        .map(|c| VideoSourceView {
            id: format!("camera:{}", c.index),
            name: c.name,
        })
        .collect();
    out.push(VideoSourceView {
        id: "pattern".into(),
        name: "Test pattern (moving, with a frame code)".into(),
    });
    Ok(out)
}

/// Why the camera stays off in a channel whose permissions deny `video`.
pub const NO_VIDEO_HERE: &str = "This channel's permissions do not let you send video.";

/// Turns my camera on (the source setting, or `HUM_VIDEO_SOURCE`) or off. Its frames stream as
/// `self`; a missing camera is a sentence saying what to do.
#[tauri::command]
#[specta::specta]
pub async fn camera_set(state: State<'_, AppState>, on: bool) -> CmdResult<CameraView> {
    if !on {
        state.previews.remove(|id| id == SELF_STREAM);
        if let Some(session) = state.session() {
            // Nothing leaves, and the others' tiles go (in a channel: through the roster).
            session.set_camera(false);
        }
        return Ok(CameraView::off());
    }
    if let Some(view) = state.previews.with(SELF_STREAM, view_of) {
        return Ok(view);
    }
    let settings = load(&state);
    let source = effective_source(&settings, std::env::var(SOURCE_ENV).ok())?;
    let hub = state.video.clone();
    let cfg = config(source, settings.quality);
    let share = state.camera_share.clone();
    // Opening a camera can take a moment: off the main thread.
    let preview = tauri::async_runtime::spawn_blocking(move || {
        start_tapped(hub, SELF_STREAM, cfg, Some(share))
    })
    .await
    .map_err(CommandError::internal)??;
    let view = view_of(&preview);
    state.previews.insert(SELF_STREAM, preview)?;
    if let Some(session) = state.session()
        && !session.set_camera(true)
        && !session.video_allowed()
    {
        // The channel's permissions deny `video`: nothing would be sent, so no self-view.
        state.previews.remove(|id| id == SELF_STREAM);
        return Err(CommandError::new(ErrorCode::Rejected, NO_VIDEO_HERE));
    }
    Ok(view)
}

fn view_of(p: &VideoPreview) -> CameraView {
    let f = p.format();
    CameraView {
        on: true,
        stream_id: SELF_STREAM.into(),
        source: p.name().to_owned(),
        width: f.width,
        height: f.height,
        fps: f.fps,
    }
}

/// The next frame of `stream_id` will be a keyframe (a tile's decoder started late or failed).
#[tauri::command]
#[specta::specta]
pub fn video_keyframe(state: State<'_, AppState>, stream_id: String) {
    if state
        .previews
        .with(&stream_id, VideoPreview::request_keyframe)
        .is_some()
    {
        return;
    }
    // A remote track (`<user hex>/camera` or `/screen`): a PLI to its sender.
    if let Some((user, kind)) = stream_id.split_once('/').and_then(|(u, k)| {
        Some((
            u.parse::<hum_proto::UserId>().ok()?,
            hum_engine::voice::VideoKind::of_track(k),
        ))
    }) && let Some(session) = state.session()
    {
        session.request_keyframe_of(user, kind);
    }
}

/// How big a remote camera is shown, which decides the layer asked of its sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
#[serde(rename_all = "snake_case")]
pub enum TileQuality {
    /// The spotlight: the speaker, a pinned tile, a screen share (the full picture).
    High,
    /// A thumbnail (a quarter of the picture's size: 320x180 of a 720p camera).
    Low,
    /// Not on screen: nothing is sent.
    Off,
}

/// The layer of a remote camera (`<user hex>/camera`) the app wants for how it shows it: in a
/// mesh its sender is asked (`video_quality`; it encodes each layer once for everyone and pauses
/// the ones nobody shows), on the SFU the relay (`sfu_quality`). Unknown streams are ignored.
#[tauri::command]
#[specta::specta]
pub async fn video_quality_set(
    state: State<'_, AppState>,
    stream_id: String,
    quality: TileQuality,
) -> CmdResult<()> {
    let Some(user) = stream_id
        .split_once('/')
        .and_then(|(u, _)| u.parse::<hum_proto::UserId>().ok())
    else {
        return Ok(());
    };
    let q = match quality {
        TileQuality::High => hum_proto::signal::VideoQuality::High,
        TileQuality::Low => hum_proto::signal::VideoQuality::Low,
        TileQuality::Off => hum_proto::signal::VideoQuality::Off,
    };
    let link = state.link.lock().await;
    let result = match link.as_ref() {
        Some(link) => link.set_video_quality(user, q).await,
        None => match state.session() {
            Some(session) => session.set_video_quality(user, q).await,
            None => Ok(()),
        },
    };
    // Asking is best effort: the tile shows whatever layer arrives.
    if let Err(e) = result {
        tracing::debug!(%user, "video quality: {e}");
    }
    Ok(())
}

/// Benchmark helper: starts `streams` extra test-pattern streams (`bench-0`…) of the given size
/// at 30 fps, replacing earlier ones; 0 stops them. Returns their ids.
#[tauri::command]
#[specta::specta]
pub async fn video_bench_start(
    state: State<'_, AppState>,
    streams: u8,
    width: u32,
    height: u32,
) -> CmdResult<Vec<String>> {
    state.previews.remove(|id| id.starts_with("bench-"));
    if streams > MAX_BENCH_STREAMS {
        return Err(CommandError::invalid(format!(
            "At most {MAX_BENCH_STREAMS} bench streams."
        )));
    }
    let mut ids = Vec::new();
    for i in 0..streams {
        let id = format!("bench-{i}");
        let cfg = PreviewConfig {
            source: PreviewSource::Pattern,
            format: VideoFormat::new(width, height, 30),
            bitrate: Bitrate::from_bps(u64::from(width) * u64::from(height) * 30 / 14),
        };
        let hub = state.video.clone();
        let sid = id.clone();
        let p = tauri::async_runtime::spawn_blocking(move || start(hub, &sid, cfg))
            .await
            .map_err(CommandError::internal)??;
        state.previews.insert(&id, p)?;
        ids.push(id);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings_store::MemoryKv;

    fn state() -> AppState {
        let dir = tempfile::tempdir().expect("tempdir");
        AppState::load(dir.keep(), Box::new(MemoryKv::default())).expect("state")
    }

    #[test]
    fn the_environment_overrides_the_source_setting() {
        let s = VideoSettings::default();
        assert_eq!(
            effective_source(&s, None).expect("camera"),
            PreviewSource::Camera(None)
        );
        assert_eq!(
            effective_source(&s, Some("pattern".into())).expect("pattern"),
            PreviewSource::Pattern
        );
        let e = effective_source(&s, Some("webcam".into())).expect_err("unknown");
        assert_eq!(e.code, ErrorCode::InvalidInput);
    }

    #[test]
    fn settings_are_validated_and_kept() {
        let st = state();
        assert_eq!(load(&st), VideoSettings::default());
        assert_eq!(
            serde_json::to_string(&VideoSettings::default()).expect("json"),
            r#"{"source":"camera","quality":"720p30"}"#
        );
        let pattern = VideoSettings {
            source: "pattern".into(),
            quality: VideoQuality::P360,
        };
        let value = serde_json::to_value(&pattern).expect("json");
        st.kv.set(keys::VIDEO, value).expect("set");
        assert_eq!(load(&st), pattern);
    }

    #[test]
    fn a_pattern_preview_streams_packets_to_the_hub_and_stops() {
        let hub = Arc::new(VideoHub::default());
        let (tx, rx) = std::sync::mpsc::channel();
        hub.subscribe(Channel::new(move |body| {
            let _ = tx.send(body);
            Ok(())
        }));
        let previews = Previews::default();
        let p = start(
            hub.clone(),
            SELF_STREAM,
            PreviewConfig {
                source: PreviewSource::Pattern,
                format: VideoFormat::new(320, 180, 30),
                bitrate: Bitrate::from_kbps(200),
            },
        )
        .expect("pattern");
        previews.insert(SELF_STREAM, p).expect("insert");
        let first = rx.recv().expect("a frame");
        let tauri::ipc::InvokeResponseBody::Raw(b) = first else {
            panic!("not raw");
        };
        assert_eq!(b[1] & 1, 1, "the first frame is a keyframe");
        assert_eq!(&b[24..28], b"self");
        assert_eq!(previews.remove(|id| id == SELF_STREAM), 1);
        // remove() joined the thread: whatever it sent is queued now, and nothing comes after.
        while rx.try_recv().is_ok() {}
        assert!(rx.try_recv().is_err(), "frames after stop");
    }

    #[test]
    fn no_camera_says_what_to_do() {
        let e = hum_engine::video_preview::PreviewError::Video(
            hum_engine::voice::hum_media::video::VideoError::NoCamera {
                detail: " (no /dev/video* device)".into(),
            },
        );
        let c = camera_error(&e);
        assert_eq!(c.code, ErrorCode::Device);
        assert!(
            c.message.starts_with("No camera found") && c.message.contains("test pattern"),
            "{}",
            c.message
        );
    }
}
