//! Livestreams in the app: go live (pattern, camera, screen or a Y4M file, with the microphone or
//! a tone), the live streams of a server, watching one (its frames go to the webview as
//! `VideoPacket`s under `live/<id>`, decoded by the same `VideoTile` as calls) and what watching
//! gives back (relay upload from the bandwidth settings).
//!
//! hum-engine's `stream::session` does the work (the CLI runs the same code); this module keeps
//! one stream I send and one I watch, and reports both as [`LiveStatus`] (a `LiveStatusChanged`
//! event every second while either runs, and when one starts or ends). Stream starts and ends
//! in my servers are `LiveChanged` (refetch `live_list`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hum_engine::ClientEvent;
use hum_engine::RelayClient;
use hum_engine::stream::player::{AudioPlayout, spawn_player};
use hum_engine::stream::session::EndReason;
use hum_engine::stream::session::stream_layers;
use hum_engine::stream::source::{AudioInput, LayerSpec, SourceConfig, VideoInput};
use hum_engine::stream::{
    LiveOptions, LiveSession, NodeReport, Quality, WatchOptions, WatchSession, layer_label,
};
use hum_engine::voice::hum_media::AudioSink;
use hum_engine::voice::hum_media::device::CpalSink;
use hum_engine::voice::hum_media::pacer::Paced;
use hum_engine::voice::hum_media::synth::NullSink;
use hum_proto::mesh::Layer;
use hum_proto::signal::{Event, Name, Reply, Request, StreamInfo, StreamLayerName};
use hum_proto::{Bitrate, ChannelId, ServerId, StreamId};
use serde::{Deserialize, Serialize};
use specta::Type;
use tauri::{AppHandle, Manager, State};
use tauri_specta::Event as _;

use super::connection::client_error;
use crate::channels::{VideoMeta, VideoPacket};
use crate::error::{CmdResult, CommandError, ErrorCode};
use crate::state::AppState;

/// A live stream as the channel list shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Type)]
pub struct LiveStreamView {
    pub id: u64,
    pub server: u64,
    pub channel: u64,
    pub title: String,
    /// Public key, hex.
    pub streamer_id: String,
    pub streamer_name: String,
    /// Bits per second.
    pub bitrate: u64,
    pub viewers: u32,
    /// The relay keeps a recording (the streamer opted in): shown to viewers.
    pub recording: bool,
    /// Unix ms of the stream's media time 0.
    pub started_ms: u64,
}

impl From<&StreamInfo> for LiveStreamView {
    fn from(s: &StreamInfo) -> Self {
        Self {
            id: s.id.0,
            server: s.server.0,
            channel: s.channel.0,
            title: s.title.as_str().to_owned(),
            streamer_id: s.streamer.id.to_string(),
            streamer_name: s.streamer.display_name.as_str().to_owned(),
            bitrate: s.bitrate.bps(),
            viewers: s.viewers,
            recording: s.recording,
            started_ms: s.started_ms,
        }
    }
}

/// Where a stream's picture comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
#[serde(rename_all = "snake_case")]
pub enum LiveSource {
    Pattern,
    Camera,
    Screen,
    File,
}

/// The Go Live dialog's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct GoLive {
    pub channel: u64,
    pub title: String,
    pub source: LiveSource,
    /// The Y4M file of `source: file`.
    pub file: Option<String>,
    /// Sound from the microphone (else a quiet tone, so viewers hear the stream is alive).
    pub microphone: bool,
    /// Let the relay keep a recording (viewers see it).
    pub record: bool,
}

/// The stream I send.
#[derive(Clone, Debug, PartialEq, Serialize, Type)]
pub struct StreamingView {
    pub stream: LiveStreamView,
    pub source: LiveSource,
    pub viewers: u32,
    pub chunks: u64,
    /// Bytes uploaded to the relay (one copy of the stream, however many watch).
    pub uploaded_bytes: u64,
}

/// A stream's layer, as the player's quality menu picks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
#[serde(rename_all = "snake_case")]
pub enum LiveLayer {
    High,
    Medium,
    Low,
    Audio,
}

impl LiveLayer {
    pub fn mesh(self) -> Layer {
        match self {
            LiveLayer::High => Layer::High,
            LiveLayer::Medium => Layer::Medium,
            LiveLayer::Low => Layer::Low,
            LiveLayer::Audio => Layer::Audio,
        }
    }
    pub fn from_mesh(l: Layer) -> Self {
        match l {
            Layer::High => LiveLayer::High,
            Layer::Medium => LiveLayer::Medium,
            Layer::Low => LiveLayer::Low,
            Layer::Audio => LiveLayer::Audio,
        }
    }
    /// The name reports use ("high", "low", ...).
    fn from_report(name: &str) -> Option<Self> {
        Layer::ALL
            .into_iter()
            .find(|l| StreamLayerName::from_mesh(*l).as_str() == name)
            .map(Self::from_mesh)
    }
}

/// One entry of the player's quality menu: a layer the stream publishes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Type)]
pub struct LiveQualityOption {
    pub layer: LiveLayer,
    /// "360p", "180p", "Audio only" (hum-engine's `layer_label`).
    pub label: String,
    pub width: u32,
    pub height: u32,
    /// Planned rate, bits/s.
    pub bitrate: u64,
}

/// The layers of a stream as the quality menu lists them, best first.
fn quality_options(info: &StreamInfo) -> Vec<LiveQualityOption> {
    stream_layers(info)
        .iter()
        .map(|l| LiveQualityOption {
            layer: LiveLayer::from_mesh(l.layer.mesh()),
            label: layer_label(l),
            width: l.width,
            height: l.height,
            bitrate: l.bitrate.bps(),
        })
        .collect()
}

/// The stream I watch, and what I give back.
#[derive(Clone, Debug, PartialEq, Serialize, Type)]
pub struct WatchingView {
    pub stream: LiveStreamView,
    /// The `VideoTile` stream id its frames arrive under.
    pub video_id: String,
    pub started: bool,
    pub played: u64,
    pub skipped: u64,
    /// Played / (played + skipped), percent.
    pub continuity_pct: f64,
    /// How far behind capture the newest played chunk was, ms.
    pub behind_live_ms: Option<u64>,
    pub bytes_from_root: u64,
    pub bytes_from_peers: u64,
    /// Relay upload I offer (bandwidth settings, less what the throttler took), bits/s.
    pub relay_budget: u64,
    /// Chunk bytes I sent to other viewers so far: what the server did not have to send.
    pub relayed_bytes: u64,
    /// Chunks I sent to other viewers.
    pub chunks_relayed: u64,
    /// My relay upload over the last second, bits/s.
    pub relay_now: u64,
    /// The last 60 seconds of `relay_now`, oldest first.
    pub relay_history: Vec<u64>,
    /// Mesh links open (the relay's root and peers).
    pub links: u64,
    /// The quality menu: the layers the stream publishes, best first.
    pub qualities: Vec<LiveQualityOption>,
    /// My pick: `None` is auto (capped by the bandwidth settings' download quality).
    pub quality: Option<LiveLayer>,
    /// The layer playing now (in auto, the one auto picked; after a pick, until the player
    /// cuts over, still the old one).
    pub playing: LiveLayer,
}

/// Everything the live panel shows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Type)]
pub struct LiveStatus {
    pub streaming: Option<StreamingView>,
    pub watching: Option<WatchingView>,
    /// Something that ended under me ("The stream ended.", a source that failed).
    pub notice: Option<String>,
}

/// The live panel's state changed.
#[derive(Clone, Debug, PartialEq, Serialize, Type, tauri_specta::Event)]
pub struct LiveStatusChanged {
    pub status: LiveStatus,
}

/// A stream started or ended in one of my servers, or its audience changed: refetch `live_list`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type, tauri_specta::Event)]
pub struct LiveChanged {
    pub server: Option<u64>,
}

struct Sending {
    session: LiveSession,
    source: LiveSource,
    ticker: Task,
}

/// A task of Tauri's runtime.
type Task = tauri::async_runtime::JoinHandle<()>;

struct Watching {
    session: WatchSession,
    player: tokio::task::JoinHandle<()>,
    /// The stream's sound (to the chosen speaker; a paced null sink when there is none).
    audio: Option<Arc<AudioPlayout>>,
    ticker: Task,
    behind: Arc<AtomicU64>,
    relay_budget: u64,
    history: VecDeque<u64>,
    last_sent: u64,
}

/// The app's livestream state (`app.manage`d beside `AppState`).
#[derive(Default)]
pub struct LiveState {
    sending: tokio::sync::Mutex<Option<Sending>>,
    watching: tokio::sync::Mutex<Option<Watching>>,
    notice: std::sync::Mutex<Option<String>>,
}

/// The stream id frames of stream `id` reach the webview under.
pub fn video_id(id: u64) -> String {
    format!("live/{id}")
}

fn no_behind() -> u64 {
    u64::MAX
}

const HISTORY: usize = 60;

/// The layers the app streams: 640x360 at 20 fps, 700 kbit/s of VP8 (`high`), 320x180 at 200
/// kbit/s (`low`) and audio only, each with 32 kbit/s Opus, 250 ms chunks of 5 frames; fewer
/// when the bandwidth settings' available upload cannot carry them.
pub fn app_source() -> SourceConfig {
    SourceConfig {
        width: 640,
        height: 360,
        fps: 20,
        video_bitrate: Bitrate::from_kbps(700),
        chunk: Duration::from_millis(250),
        audio: true,
        lower: [
            Some(LayerSpec {
                layer: Layer::Low,
                width: 320,
                height: 180,
                video_bitrate: Bitrate::from_kbps(200),
            }),
            Some(LayerSpec::audio_only()),
            None,
        ],
    }
}

/// The upload Hum may use (the bandwidth settings' total less the reservation), when known.
fn available_upload(state: &AppState) -> Option<Bitrate> {
    let (settings, _) = super::settings::load_bandwidth(state);
    let r = super::settings::report(state, &settings).ok()?;
    (r.effective.available > 0).then(|| Bitrate::from_bps(r.effective.available))
}

/// The stream's sound goes to the speaker chosen in the voice settings (the system's default
/// if none), or to a paced null sink on a machine without one (as calls do).
fn stream_audio(state: &AppState) -> Option<Arc<AudioPlayout>> {
    let settings = super::voice::load(state);
    let sink: Box<dyn AudioSink> = match CpalSink::open(settings.output_device.as_deref()) {
        Ok(s) => Box::new(s),
        Err(e) => {
            tracing::info!("stream sound: no speaker ({e}); a null sink plays it");
            Box::new(Paced::new(NullSink))
        }
    };
    match AudioPlayout::start(sink) {
        Ok(a) => Some(Arc::new(a)),
        Err(e) => {
            tracing::warn!("stream sound: {e}");
            None
        }
    }
}

/// The best layer the bandwidth settings' download quality allows (`None`: auto, the best).
fn download_layer(state: &AppState) -> Option<Layer> {
    use hum_budget::DownloadQuality as Q;
    let (settings, _) = super::settings::load_bandwidth(state);
    match settings.download_quality {
        Q::Auto => None,
        Q::P1080 => Some(Layer::High),
        Q::P720 => Some(Layer::Medium),
        Q::P480 => Some(Layer::Low),
        Q::AudioOnly => Some(Layer::Audio),
    }
}

/// The relay upload offered to a stream's mesh: the budget service's offer (the settings' relay
/// share, or the throttler's cap while it protects the connection) while it runs, else the
/// settings' share.
pub fn relay_budget(state: &AppState) -> u64 {
    if let Some(service) = super::budget::service(state) {
        return service.relay_offer().bps();
    }
    let (settings, _) = super::settings::load_bandwidth(state);
    super::settings::report(state, &settings)
        .map(|r| r.effective.relay)
        .unwrap_or(0)
}

fn live_state(app: &AppHandle) -> tauri::State<'_, LiveState> {
    app.state::<LiveState>()
}

fn watching_view(w: &Watching, r: &NodeReport) -> WatchingView {
    let total = r.played + r.skipped;
    let behind = w.behind.load(Ordering::Relaxed);
    WatchingView {
        stream: LiveStreamView::from(w.session.info()),
        video_id: video_id(w.session.info().id.0),
        started: r.started,
        played: r.played,
        skipped: r.skipped,
        continuity_pct: if total == 0 {
            100.0
        } else {
            (r.played as f64 * 1000.0 / total as f64).round() / 10.0
        },
        behind_live_ms: (behind != no_behind()).then_some(behind),
        bytes_from_root: r.bytes_from_root,
        bytes_from_peers: r.bytes_from_peers,
        relay_budget: w.relay_budget,
        relayed_bytes: r.bytes_sent_data,
        chunks_relayed: r.chunks_sent,
        relay_now: w.history.back().copied().unwrap_or(0),
        relay_history: w.history.iter().copied().collect(),
        links: r.links,
        qualities: quality_options(w.session.info()),
        quality: match w.session.quality() {
            Quality::Auto => None,
            Quality::Fixed(l) => Some(LiveLayer::from_mesh(l)),
        },
        playing: LiveLayer::from_report(r.layer)
            .unwrap_or_else(|| LiveLayer::from_mesh(w.session.layer())),
    }
}

/// The status now (and, for the watcher, one more second of relay history when `tick`).
async fn status(app: &AppHandle, tick: bool) -> LiveStatus {
    let live = live_state(app);
    let streaming = live.sending.lock().await.as_ref().map(|s| {
        let r = s.session.report();
        let mut stream = LiveStreamView::from(s.session.info());
        stream.viewers = s.session.viewers();
        StreamingView {
            stream,
            source: s.source,
            viewers: s.session.viewers(),
            chunks: r.published,
            uploaded_bytes: r.bytes_sent_data + r.bytes_sent_ctl,
        }
    });
    let watching = {
        let mut guard = live.watching.lock().await;
        guard.as_mut().map(|w| {
            let r = w.session.report();
            if tick {
                let now = r.bytes_sent_data;
                w.history
                    .push_back(now.saturating_sub(w.last_sent).saturating_mul(8));
                w.last_sent = now;
                while w.history.len() > HISTORY {
                    w.history.pop_front();
                }
            }
            watching_view(w, &r)
        })
    };
    let notice = live.notice.lock().ok().and_then(|n| n.clone());
    LiveStatus {
        streaming,
        watching,
        notice,
    }
}

async fn emit_status(app: &AppHandle, tick: bool) {
    let status = status(app, tick).await;
    if let Err(e) = (LiveStatusChanged { status }).emit(app) {
        tracing::debug!("live status not delivered: {e}");
    }
}

fn set_notice(app: &AppHandle, n: Option<String>) {
    if let Ok(mut slot) = live_state(app).notice.lock() {
        *slot = n;
    }
}

/// Every second while a session runs: the status, and the end when the relay ends it.
fn ticker(
    app: AppHandle,
    mut ended: tokio::sync::watch::Receiver<Option<EndReason>>,
    watching: bool,
) -> Task {
    tauri::async_runtime::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = every.tick() => emit_status(&app, watching).await,
                r = ended.changed() => {
                    let why = if r.is_err() { Some(EndReason::ClientStopped) } else { *ended.borrow() };
                    if let Some(why) = why {
                        let live = live_state(&app);
                        if watching {
                            if let Some(w) = live.watching.lock().await.take() {
                                set_notice(&app, Some(format!(
                                    "\"{}\" ended.",
                                    w.session.info().title.as_str()
                                )));
                                finish_watch(w, false).await;
                            }
                        } else if let Some(s) = live.sending.lock().await.take() {
                            set_notice(&app, Some(match why {
                                EndReason::StreamEnded => "Your stream was ended by the relay.".into(),
                                EndReason::ClientStopped => "Your stream stopped: the relay connection closed.".into(),
                            }));
                            s.session.stop().await;
                        }
                        emit_status(&app, false).await;
                        let _ = LiveChanged { server: None }.emit(&app);
                        return;
                    }
                }
            }
        }
    })
}

async fn finish_watch(w: Watching, abort_ticker: bool) {
    w.player.abort();
    if abort_ticker {
        w.ticker.abort();
    }
    w.session.stop().await;
    // The player task held the other handle: the sound thread stops with the last one.
    drop(w.audio);
}

/// Starts forwarding stream starts/ends (and, to the streamer, joins) as `LiveChanged`. Runs
/// beside the relay client (connection::start).
pub fn start(app: &AppHandle, client: &RelayClient) {
    let mut events = client.subscribe();
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let server = match events.recv().await {
                Ok(ClientEvent::Relay(Event::StreamStarted { stream })) => Some(stream.server.0),
                Ok(ClientEvent::Relay(Event::StreamEnded { server, .. })) => Some(server.0),
                Ok(ClientEvent::Relay(Event::StreamViewer { .. })) | Ok(ClientEvent::State(_)) => {
                    None
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => None,
                Err(RecvError::Closed) => return,
            };
            let _ = LiveChanged { server }.emit(&app);
        }
    });
}

/// The live streams of a server.
#[tauri::command]
#[specta::specta]
pub async fn live_list(state: State<'_, AppState>, server: u64) -> CmdResult<Vec<LiveStreamView>> {
    match state
        .relay()?
        .request(Request::StreamList {
            server: ServerId(server),
        })
        .await
        .map_err(client_error)?
    {
        Reply::Streams { streams } => Ok(streams.iter().map(LiveStreamView::from).collect()),
        r => Err(CommandError::internal(format!("unexpected reply {r:?}"))),
    }
}

/// The live panel's state now.
#[tauri::command]
#[specta::specta]
pub async fn live_status(app: AppHandle) -> CmdResult<LiveStatus> {
    Ok(status(&app, false).await)
}

fn stream_error(e: hum_engine::stream::StreamError) -> CommandError {
    match e {
        hum_engine::stream::StreamError::Relay(e) => client_error(e),
        hum_engine::stream::StreamError::Media(m) => CommandError::new(ErrorCode::Device, m),
        e => CommandError::internal(e),
    }
}

/// Goes live in a channel (the `stream` permission); ends a stream I was already sending.
#[tauri::command]
#[specta::specta]
pub async fn live_start(
    app: AppHandle,
    state: State<'_, AppState>,
    request: GoLive,
) -> CmdResult<LiveStatus> {
    let relay = state.relay()?;
    let title = Name::new(request.title.trim().to_owned())
        .map_err(|e| CommandError::invalid(format!("Title: {e}")))?;
    let video = match request.source {
        LiveSource::Pattern => VideoInput::Pattern,
        LiveSource::Camera => VideoInput::Camera(None),
        LiveSource::Screen => VideoInput::Screen,
        LiveSource::File => match request.file.as_deref().map(str::trim) {
            Some(f) if !f.is_empty() => VideoInput::File(f.into()),
            _ => return Err(CommandError::invalid("Choose a .y4m file to stream.")),
        },
    };
    let audio = if request.microphone {
        AudioInput::Microphone(None)
    } else {
        AudioInput::Tone
    };
    live_stop(app.clone()).await?;
    let session = LiveSession::start(
        &relay,
        state.identity()?.stream_publisher(),
        LiveOptions {
            channel: ChannelId(request.channel),
            title,
            video,
            audio,
            source: app_source(),
            record: request.record,
            bind: vec!["0.0.0.0:0".into()],
            ice: super::privacy::ice_config(state.kv.as_ref(), &relay).await?,
            upload: available_upload(&state),
            published: None,
        },
    )
    .await
    .map_err(stream_error)?;
    let ticker = ticker(app.clone(), session.ended_watch(), false);
    set_notice(&app, None);
    *live_state(&app).sending.lock().await = Some(Sending {
        session,
        source: request.source,
        ticker,
    });
    let _ = LiveChanged { server: None }.emit(&app);
    let s = status(&app, false).await;
    emit_status(&app, false).await;
    Ok(s)
}

/// Ends the stream I send (nothing if none).
#[tauri::command]
#[specta::specta]
pub async fn live_stop(app: AppHandle) -> CmdResult<()> {
    let taken = live_state(&app).sending.lock().await.take();
    if let Some(s) = taken {
        s.ticker.abort();
        s.session.stop().await;
        emit_status(&app, false).await;
        let _ = LiveChanged { server: None }.emit(&app);
    }
    Ok(())
}

/// Watches a stream (leaving one I watched): its frames arrive on the video channel under
/// `live/<id>`; I relay to other viewers up to my bandwidth settings' relay share.
#[tauri::command]
#[specta::specta]
pub async fn live_watch(
    app: AppHandle,
    state: State<'_, AppState>,
    stream: u64,
) -> CmdResult<LiveStatus> {
    let relay = state.relay()?;
    live_leave(app.clone()).await?;
    let budget = relay_budget(&state);
    let (played_tx, played_rx) = tokio::sync::mpsc::channel(16);
    let session = WatchSession::join(
        &relay,
        StreamId(stream),
        WatchOptions {
            relay: Bitrate::from_bps(budget),
            // Relaying spends the bandwidth service's limiter (own media first, the throttler's cap).
            upload: super::budget::service(&state),
            bind: vec!["0.0.0.0:0".into()],
            // "Hide my IP" covers the viewers' mesh links too.
            ice: super::privacy::ice_config(state.kv.as_ref(), &relay).await?,
            corrupt: false,
            played: Some(played_tx),
            layer: download_layer(&state),
            // Auto: the best layer first, then by the player's stalls.
            auto: download_layer(&state).is_none(),
        },
    )
    .await
    .map_err(stream_error)?;
    let id = video_id(stream);
    let behind = Arc::new(AtomicU64::new(no_behind()));
    let (hub, behind2) = (state.video.clone(), behind.clone());
    let audio = stream_audio(&state);
    let player = spawn_player(
        played_rx,
        session.info().started_ms,
        audio.clone(),
        move |f| {
            let now = hum_engine::stream::node::unix_ms();
            behind2.store(now.saturating_sub(f.capture_unix_ms), Ordering::Relaxed);
            if let Some(p) = VideoPacket::build(
                &id,
                VideoMeta {
                    keyframe: f.keyframe,
                    after_loss: false,
                    width: f.width,
                    height: f.height,
                    timestamp_us: f.timestamp_us,
                    capture_unix_ms: f.capture_unix_ms,
                },
                &f.data,
            ) {
                hub.publish(&p);
            }
            true
        },
    );
    let ticker = ticker(app.clone(), session.ended_watch(), true);
    set_notice(&app, None);
    *live_state(&app).watching.lock().await = Some(Watching {
        session,
        player,
        audio,
        ticker,
        behind,
        relay_budget: budget,
        history: VecDeque::new(),
        last_sent: 0,
    });
    let s = status(&app, false).await;
    emit_status(&app, false).await;
    Ok(s)
}

/// Stops watching (nothing if I watch nothing).
#[tauri::command]
#[specta::specta]
pub async fn live_leave(app: AppHandle) -> CmdResult<()> {
    let taken = live_state(&app).watching.lock().await.take();
    if let Some(w) = taken {
        finish_watch(w, true).await;
        emit_status(&app, false).await;
    }
    Ok(())
}

/// The player's quality menu: a layer (`None`: auto, capped by the download-quality setting).
/// The switch is gapless; the status says which layer plays once the player has cut over.
#[tauri::command]
#[specta::specta]
pub async fn live_quality(app: AppHandle, layer: Option<LiveLayer>) -> CmdResult<LiveStatus> {
    {
        let live = live_state(&app);
        let guard = live.watching.lock().await;
        let Some(w) = guard.as_ref() else {
            return Err(CommandError::invalid(
                "You are not watching a stream: open one to pick its quality.",
            ));
        };
        let q = layer.map_or(Quality::Auto, |l| Quality::Fixed(l.mesh()));
        w.session.set_quality(q).await.map_err(stream_error)?;
    }
    let s = status(&app, false).await;
    emit_status(&app, false).await;
    Ok(s)
}

/// Clears the notice (the user closed it).
#[tauri::command]
#[specta::specta]
pub fn live_dismiss(app: AppHandle) {
    set_notice(&app, None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use hum_proto::UserId;
    use hum_proto::signal::{DisplayName, UserSummary};

    #[test]
    fn stream_view_and_wire_shapes() {
        let info = StreamInfo {
            id: StreamId(7),
            server: ServerId(1),
            channel: ChannelId(2),
            streamer: UserSummary {
                id: UserId([0xab; 32]),
                display_name: DisplayName::new("ada").expect("name"),
            },
            title: Name::new("speedrun").expect("title"),
            bitrate: Bitrate::from_kbps(760),
            chunk_ms: 250,
            started_ms: 1_700_000_000_000,
            viewers: 3,
            recording: true,
            layers: vec![],
        };
        let v = LiveStreamView::from(&info);
        assert_eq!((v.id, v.server, v.channel, v.viewers), (7, 1, 2, 3));
        assert_eq!(v.streamer_id, "ab".repeat(32));
        assert!(v.recording);
        assert_eq!(video_id(7), "live/7");
        let go: GoLive = serde_json::from_str(
            r#"{"channel":2,"title":"t","source":"pattern","file":null,"microphone":false,"record":true}"#,
        )
        .expect("go live json");
        assert_eq!(go.source, LiveSource::Pattern);
        assert_eq!(
            serde_json::to_string(&LiveSource::Screen).expect("json"),
            r#""screen""#
        );
        // The quality menu: one entry (named by its size) for a stream that lists no layers;
        // each published layer, best first, for one that does.
        let menu = quality_options(&info);
        assert_eq!(menu.len(), 1);
        assert_eq!(
            (menu[0].layer, menu[0].label.as_str()),
            (LiveLayer::High, "High")
        );
        let layered = StreamInfo {
            layers: [
                (StreamLayerName::High, 640, 360, 700),
                (StreamLayerName::Low, 320, 180, 200),
                (StreamLayerName::Audio, 0, 0, 40),
            ]
            .map(
                |(layer, width, height, kbps)| hum_proto::signal::StreamLayer {
                    layer,
                    bitrate: Bitrate::from_kbps(kbps),
                    width,
                    height,
                },
            )
            .to_vec(),
            ..info
        };
        let labels: Vec<(LiveLayer, String)> = quality_options(&layered)
            .into_iter()
            .map(|o| (o.layer, o.label))
            .collect();
        assert_eq!(
            labels,
            [
                (LiveLayer::High, "360p".to_owned()),
                (LiveLayer::Low, "180p".to_owned()),
                (LiveLayer::Audio, "Audio only".to_owned())
            ]
        );
        assert_eq!(LiveLayer::from_report("low"), Some(LiveLayer::Low));
        assert_eq!(LiveLayer::from_report("bogus"), None);
        assert_eq!(
            serde_json::from_str::<LiveLayer>(r#""audio""#).expect("layer json"),
            LiveLayer::Audio
        );
        let s = app_source();
        assert_eq!(
            (s.chunk.as_micros() * u128::from(s.fps)) % 1_000_000,
            0,
            "whole frames per chunk"
        );
    }
}
