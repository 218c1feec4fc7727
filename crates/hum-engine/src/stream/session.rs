//! Going live and watching as one piece both front ends use (`hum stream start` / `hum watch`
//! and the app's Go Live dialog and player): the relay requests (`stream_start`, `stream_join`,
//! `stream_mesh`, `stream_end`, `stream_leave`), the node, the media source, and the task that
//! carries the relay's stream events (signals, viewers, the end) to the node.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hum_mesh::Layer;
use hum_mesh::manifest::Publisher;
use hum_proto::signal::{
    Event, MeshSignal, Name, Reply, Request, StreamInfo, StreamLayer, StreamLayerName, pick_layer,
};
use hum_proto::{Bitrate, ChannelId, StreamId, UserId};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::StreamError;
use super::node::{
    Command, NodeConfig, NodeHandle, NodeReport, PlayedChunk, spawn_uploader, spawn_viewer, unix_ms,
};
use super::source::{AudioInput, MediaStream, SourceConfig, VideoInput};
use super::splice::{Quality, QualityControl};
use crate::{ClientError, ClientEvent, RelayClient};

/// Why a stream stopped for this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The streamer ended it (or went offline): the relay said `stream_ended`.
    StreamEnded,
    /// The relay client stopped (shut down or replaced).
    ClientStopped,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::StreamEnded => "stream ended",
            EndReason::ClientStopped => "relay client stopped",
        }
    }
}

/// `ws://HOST/mesh?ticket=T` from the relay's `/ws` URL.
pub fn mesh_url(relay: &str, ticket: &str) -> String {
    let base = relay.trim_end_matches('/');
    let base = base.strip_suffix("/ws").unwrap_or(base);
    format!("{base}/mesh?ticket={ticket}")
}

fn unexpected(expected: &'static str, r: Reply) -> StreamError {
    StreamError::Relay(ClientError::UnexpectedReply {
        expected,
        got: format!("{r:?}"),
    })
}

/// A single-use ticket for the relay's `/mesh` (`stream_mesh` or `recording_open`).
pub async fn mesh_ticket(client: &RelayClient, req: Request) -> Result<String, StreamError> {
    match client.request(req).await? {
        Reply::MeshTicket { ticket } => Ok(ticket),
        r => Err(unexpected("mesh_ticket", r)),
    }
}

/// Forward the node's outgoing signals through the relay, in order.
fn forward_signals(
    client: RelayClient,
    stream: StreamId,
    mut rx: mpsc::UnboundedReceiver<(UserId, MeshSignal)>,
) {
    tokio::spawn(async move {
        while let Some((to, signal)) = rx.recv().await {
            if let Err(e) = client
                .request(Request::StreamSignal { stream, to, signal })
                .await
            {
                tracing::debug!(%to, "stream signal not delivered: {e}");
            }
        }
    });
}

/// Carries the relay's events about `stream` to `node` until the stream ends; counts viewers
/// (the streamer hears `stream_viewer`).
fn pump(
    mut events: broadcast::Receiver<ClientEvent>,
    stream: StreamId,
    node: NodeHandle,
    viewers: Arc<AtomicU32>,
    ended: watch::Sender<Option<EndReason>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let why = loop {
            match events.recv().await {
                Ok(ClientEvent::Relay(Event::StreamSignal {
                    stream: s,
                    from,
                    signal,
                })) if s == stream => node.signal(from, signal),
                Ok(ClientEvent::Relay(Event::StreamViewer {
                    stream: s,
                    user,
                    relay,
                    joined,
                })) if s == stream => {
                    if joined {
                        viewers.fetch_add(1, Ordering::SeqCst);
                    } else {
                        let _ = viewers.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                            Some(v.saturating_sub(1))
                        });
                    }
                    // The relay's root already knows; this feeds an in-process root if any.
                    node.send(if joined {
                        Command::ViewerJoined { user, relay }
                    } else {
                        Command::ViewerLeft { user }
                    });
                }
                Ok(ClientEvent::Relay(Event::StreamEnded { stream: s, .. })) if s == stream => {
                    break EndReason::StreamEnded;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break EndReason::ClientStopped,
            }
        };
        ended.send_replace(Some(why));
    })
}

/// Reopens a member's `/mesh` link to the relay's root when it closes under us (a network drop,
/// a relay-side close): a fresh single-use ticket from `ticket` (`stream_mesh`, or
/// `recording_open` for a recording's store), retried with backoff (250 ms doubling to 10 s)
/// until the node says the link is open again or the stream ended. The same for a viewer (its
/// root is one of its upstreams), the streamer (its uploads wait in the node's backlog
/// meanwhile) and a recording's viewer.
fn reopen_root(
    client: RelayClient,
    ticket: Request,
    node: NodeHandle,
    ended: watch::Receiver<Option<EndReason>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut reports = node.report_watch();
        loop {
            if reports.changed().await.is_err() {
                return;
            }
            let (drops, reopened) = {
                let r = reports.borrow_and_update();
                (r.root_link_drops, r.root_reconnects)
            };
            if drops <= reopened {
                continue;
            }
            let mut wait = Duration::from_millis(250);
            while node.report().root_reconnects < drops {
                if ended.borrow().is_some() {
                    return;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
                match mesh_ticket(&client, ticket.clone()).await {
                    Ok(t) => node.send(Command::RootUrl(mesh_url(&client.config().url, &t))),
                    Err(e) => tracing::debug!("no new /mesh ticket yet: {e}"),
                }
            }
            tracing::info!("the root's /mesh link is open again");
        }
    })
}

type SignalTx = mpsc::UnboundedSender<(UserId, MeshSignal)>;
type SignalRx = mpsc::UnboundedReceiver<(UserId, MeshSignal)>;

/// What going live and watching share once the node runs: the relay client, the stream, the
/// node, the task carrying the relay's events for the stream to it, the one reopening the root's
/// link, and how it ended.
struct Member {
    client: RelayClient,
    info: StreamInfo,
    node: NodeHandle,
    ended: watch::Receiver<Option<EndReason>>,
    events: tokio::task::JoinHandle<()>,
    reconnect: tokio::task::JoinHandle<()>,
    began: Instant,
}

impl Member {
    /// Asks for the first `/mesh` ticket; on failure `undo` (leave or end) is sent.
    async fn ticket(
        client: &RelayClient,
        stream: StreamId,
        undo: Request,
    ) -> Result<(String, SignalTx, SignalRx), StreamError> {
        match mesh_ticket(client, Request::StreamMesh { stream }).await {
            Ok(t) => {
                let (sig_tx, sig_rx) = mpsc::unbounded_channel();
                Ok((mesh_url(&client.config().url, &t), sig_tx, sig_rx))
            }
            Err(e) => {
                let _ = client.request(undo).await;
                Err(e)
            }
        }
    }

    /// Runs the stream's event pump and root-link reopening around a started `node`.
    fn start(
        client: &RelayClient,
        info: StreamInfo,
        node: NodeHandle,
        events: broadcast::Receiver<ClientEvent>,
        signals: SignalRx,
        viewers: Arc<AtomicU32>,
    ) -> Member {
        forward_signals(client.clone(), info.id, signals);
        let (ended_tx, ended) = watch::channel(None);
        let events = pump(events, info.id, node.clone(), viewers, ended_tx);
        let reconnect = reopen_root(
            client.clone(),
            Request::StreamMesh { stream: info.id },
            node.clone(),
            ended.clone(),
        );
        Member {
            client: client.clone(),
            info,
            node,
            ended,
            events,
            reconnect,
            began: Instant::now(),
        }
    }

    async fn ended(&mut self) -> EndReason {
        loop {
            if let Some(r) = *self.ended.borrow_and_update() {
                return r;
            }
            if self.ended.changed().await.is_err() {
                return EndReason::ClientStopped;
            }
        }
    }

    /// Stops the node, then tells the relay (`stream_end` or `stream_leave`).
    async fn stop(self, last: Request) -> (NodeReport, f64) {
        self.reconnect.abort();
        let report = self.node.stop().await;
        let _ = self.client.request(last).await;
        self.events.abort();
        (report, self.began.elapsed().as_secs_f64().max(1e-3))
    }
}

/// What a streamer sends and how.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    pub channel: ChannelId,
    pub title: Name,
    pub video: VideoInput,
    pub audio: AudioInput,
    pub source: SourceConfig,
    /// Let the relay keep a recording (viewers see that it does).
    pub record: bool,
    /// Local UDP addresses for the mesh's WebRTC links.
    pub bind: Vec<String>,
    /// TURN servers and relay-only ("hide my IP") for the mesh's WebRTC links
    /// ([`crate::ice::IceConfig::from_relay`]).
    pub ice: crate::ice::IceConfig,
    /// The streamer's measured upload (the bandwidth service's): the best layers are left out
    /// while the whole ladder would not fit ([`SourceConfig::fit_upload`]); `None`: all.
    pub upload: Option<Bitrate>,
    /// Every chunk published, every layer (for a decoder: `hum stream start --frame-hashes`).
    pub published: Option<mpsc::Sender<PlayedChunk>>,
}

/// What a stream did, from the streamer's side.
#[derive(Clone, Debug, Serialize)]
pub struct LiveSummary {
    pub stream: StreamId,
    pub seconds: f64,
    pub chunks: u64,
    pub stream_kbps: u64,
    /// Everything this process sent on mesh links (to the relay's /mesh: it has no other).
    pub upload_bytes: u64,
    pub upload_kbps: f64,
    /// One copy of the stream (payload bytes published).
    pub stream_bytes: u64,
    pub upload_copies: f64,
    pub uploader: NodeReport,
}

/// A stream this process sends: the relay hosts its root seed and tracker; each chunk is signed
/// here and uploaded once.
pub struct LiveSession {
    m: Member,
    media: MediaStream,
    viewers: Arc<AtomicU32>,
}

impl std::fmt::Debug for LiveSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSession")
            .field("stream", &self.m.info.id)
            .finish_non_exhaustive()
    }
}

impl LiveSession {
    /// Goes live in `opts.channel` (the relay checks the `stream` permission), opens the media
    /// (a missing camera, file or microphone is an error here, after which the stream is ended)
    /// and starts uploading.
    pub async fn start(
        client: &RelayClient,
        publisher: Publisher,
        opts: LiveOptions,
    ) -> Result<Self, StreamError> {
        let (source, top) = match opts.upload {
            Some(u) => opts.source.fit_upload(Layer::High, u),
            None => (opts.source, Layer::High),
        };
        let ladder = source.ladder(top);
        let rate = source.planned_rate();
        let layers: Vec<StreamLayer> = ladder
            .iter()
            .map(|(l, rate, w, h)| StreamLayer {
                layer: StreamLayerName::from_mesh(*l),
                bitrate: *rate,
                width: *w,
                height: *h,
            })
            .collect();
        let total = Bitrate::from_bps(ladder.iter().map(|l| l.1.bps()).sum());
        // Subscribe before going live so no join is missed.
        let events = client.subscribe();
        let started_ms = unix_ms();
        let chunk_ms = opts.source.chunk.as_millis() as u32;
        let info = match client
            .request(Request::StreamStart {
                channel: opts.channel,
                title: opts.title.clone(),
                bitrate: rate,
                chunk_ms,
                started_ms: Some(started_ms),
                record: opts.record,
                layers,
            })
            .await?
        {
            Reply::Stream { stream } => stream,
            r => return Err(unexpected("stream", r)),
        };
        let end = Request::StreamEnd { stream: info.id };
        let (url, sig_tx, sig_rx) = Member::ticket(client, info.id, end.clone()).await?;
        let node = spawn_uploader(
            client.user_id(),
            publisher,
            NodeConfig {
                bind: opts.bind.clone(),
                ice: opts.ice.clone(),
                layer: top,
                stream_rate: total,
                chunk: source.chunk,
                relay_budget: Bitrate::ZERO,
                upload: None,
                started_ms,
                corrupt: false,
                root_url: Some(url),
                played: opts.published.clone(),
            },
            sig_tx,
        );
        let media = match MediaStream::start_with(
            source,
            opts.video.clone(),
            opts.audio.clone(),
            top,
            node.clone(),
        ) {
            Ok(m) => m,
            Err(e) => {
                node.stop().await;
                let _ = client.request(end).await;
                return Err(e);
            }
        };
        let viewers = Arc::new(AtomicU32::new(0));
        let m = Member::start(client, info, node, events, sig_rx, viewers.clone());
        Ok(LiveSession { m, media, viewers })
    }

    pub fn info(&self) -> &StreamInfo {
        &self.m.info
    }

    /// Viewers now (from the relay's `stream_viewer` events).
    pub fn viewers(&self) -> u32 {
        self.viewers.load(Ordering::SeqCst)
    }

    /// The uploader's counts so far.
    pub fn report(&self) -> NodeReport {
        self.m.node.report()
    }

    /// Tests only: close the upload link to the relay, as a network drop would (the session
    /// reopens it with a fresh ticket; chunks published meanwhile wait in the node).
    pub fn drop_root_link(&self) {
        self.m.node.send(Command::DropRootLink);
    }

    /// Why the stream ended without us (the relay ended it), once it has.
    pub fn ended_watch(&self) -> watch::Receiver<Option<EndReason>> {
        self.m.ended.clone()
    }

    /// Waits until the relay ends the stream or the client stops.
    pub async fn ended(&mut self) -> EndReason {
        self.m.ended().await
    }

    /// Stops the source, flushes the uploads (the relay has read them all when the uploader
    /// stops), then ends the stream.
    pub async fn stop(self) -> LiveSummary {
        let chunks = self.media.stop().unwrap_or(0);
        let (stream, kbps) = (self.m.info.id, self.m.info.bitrate.bps() / 1000);
        let (report, seconds) = self.m.stop(Request::StreamEnd { stream }).await;
        let upload = report.bytes_sent_data + report.bytes_sent_ctl;
        LiveSummary {
            stream,
            seconds,
            chunks,
            stream_kbps: kbps,
            upload_bytes: upload,
            upload_kbps: upload as f64 * 8.0 / seconds / 1000.0,
            stream_bytes: report.published_bytes,
            upload_copies: upload as f64 / report.published_bytes.max(1) as f64,
            uploader: report,
        }
    }
}

/// The bandwidth service's next event (never, without a service or once it is gone).
/// Whether a relay offer moved enough to tell the tracker: by more than a fifth, or to or from
/// nothing (a throttler's small steps are not worth a message each).
fn offer_moved(told: Bitrate, now: Bitrate) -> bool {
    let (a, b) = (told.bps(), now.bps());
    (a == 0) != (b == 0) || a.abs_diff(b) * 5 > a
}

async fn next_budget_event(
    rx: &mut Option<tokio::sync::broadcast::Receiver<crate::budget::BudgetEvent>>,
) -> crate::budget::BudgetEvent {
    use tokio::sync::broadcast::error::RecvError;
    if let Some(r) = rx {
        loop {
            match r.recv().await {
                Ok(ev) => return ev,
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break,
            }
        }
    }
    *rx = None;
    std::future::pending().await
}

/// How a viewer watches.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// Upload given to relaying the stream to other viewers (0: none).
    pub relay: Bitrate,
    /// Relay from the bandwidth service's limiter (the app) instead of a bucket at `relay` (the
    /// CLI, which has no service).
    pub upload: Option<crate::budget::BudgetService>,
    pub bind: Vec<String>,
    /// TURN servers and relay-only ("hide my IP") for the mesh's WebRTC links
    /// ([`crate::ice::IceConfig::from_relay`]).
    pub ice: crate::ice::IceConfig,
    /// Tests only: serve every chunk with its payload altered.
    pub corrupt: bool,
    /// Every verified chunk the player plays (for a decoder); bounded, never blocks the mesh.
    pub played: Option<mpsc::Sender<PlayedChunk>>,
    /// The best layer to watch (`None`: the best the stream has; a layer the stream lacks: the
    /// best below it), and the cap of auto quality, now or when picked later
    /// ([`WatchSession::set_quality`]): the download-quality setting.
    pub layer: Option<Layer>,
    /// Auto quality: start at `layer` and move between it and the layers below by the player's
    /// stalls ([`super::splice::AutoQuality`]); else `layer` is a fixed pick.
    pub auto: bool,
}

/// The layers of a stream as published, best first (one `high` layer for a stream that lists
/// none).
pub fn stream_layers(info: &StreamInfo) -> Vec<StreamLayer> {
    if info.layers.is_empty() {
        vec![StreamLayer {
            layer: StreamLayerName::High,
            bitrate: info.bitrate,
            width: 0,
            height: 0,
        }]
    } else {
        info.layers.clone()
    }
}

/// A layer as the player's quality menu names it: its picture height ("360p"), "Audio only", or
/// the layer's name when the stream gave no size (a stream that lists no layers).
pub fn layer_label(l: &StreamLayer) -> String {
    match l.layer {
        StreamLayerName::Audio => "Audio only".into(),
        _ if l.height > 0 => format!("{}p", l.height),
        n => {
            let name = n.as_str();
            let mut c = name.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        }
    }
}

/// A stream this process watches (and relays to other viewers).
pub struct WatchSession {
    m: Member,
    switch: Switch,
    /// The quality picks to the steering task (which owns [`QualityControl`]), each with where
    /// to say when its switch is done.
    picks: mpsc::UnboundedSender<(Quality, oneshot::Sender<Result<(), StreamError>>)>,
    steer: tokio::task::JoinHandle<()>,
}

/// What a layer switch needs (shared with the steering task).
#[derive(Clone)]
struct Switch {
    client: RelayClient,
    info: StreamInfo,
    node: NodeHandle,
    /// The relay upload the tracker was last offered.
    relay: Arc<std::sync::Mutex<Bitrate>>,
    layer: Arc<std::sync::Mutex<Layer>>,
    /// The viewer's pick now (the steering task's [`QualityControl::choice`]).
    choice: Arc<std::sync::Mutex<Quality>>,
}

impl Switch {
    async fn to(&self, layer: Layer) -> Result<(), StreamError> {
        let want = pick_layer(&self.info.layers, Some(StreamLayerName::from_mesh(layer)));
        let Some(spec) = stream_layers(&self.info)
            .into_iter()
            .find(|l| l.layer == want)
        else {
            return Ok(());
        };
        let layer = spec.layer.mesh();
        {
            let Ok(mut cur) = self.layer.lock() else {
                return Ok(());
            };
            if *cur == layer {
                return Ok(());
            }
            *cur = layer;
        }
        self.node.send(Command::SwitchLayer {
            layer,
            rate: spec.bitrate,
        });
        let relay = self.relay.lock().map(|r| *r).unwrap_or_default();
        match self
            .client
            .request(Request::StreamJoin {
                stream: self.info.id,
                relay: Some(relay),
                layer: Some(spec.layer),
            })
            .await?
        {
            Reply::Stream { .. } => Ok(()),
            r => Err(unexpected("stream", r)),
        }
    }

    /// Offers the tracker `relay` of upload if it moved enough from the last offer (a fifth,
    /// or to or from nothing): `stream_join` again on the layer watched, which the relay
    /// applies in place (docs/protocol.md). What the budget service lets out moves with its
    /// throttler (a game's ping rising holds relaying down); a tracker that still counts the
    /// old offer grants upload this viewer no longer gives, and its downstreams starve.
    async fn reoffer(&self, relay: Bitrate) -> Result<(), StreamError> {
        let told = self.relay.lock().map(|r| *r).unwrap_or_default();
        if !offer_moved(told, relay) {
            return Ok(());
        }
        let layer = self.layer.lock().map(|l| *l).unwrap_or(Layer::High);
        if let Ok(mut r) = self.relay.lock() {
            *r = relay;
        }
        tracing::info!(stream = %self.info.id, from = %told, to = %relay, "relay offer moved");
        match self
            .client
            .request(Request::StreamJoin {
                stream: self.info.id,
                relay: Some(relay),
                layer: Some(StreamLayerName::from_mesh(layer)),
            })
            .await?
        {
            Reply::Stream { .. } => Ok(()),
            r => Err(unexpected("stream", r)),
        }
    }

    /// The one task that moves the layer, so switches never interleave: the viewer's picks
    /// (`picks`), and the rule of [`QualityControl`] over the player's stalls and skips (each
    /// report change, in auto only) and the bandwidth service's asks to lower the viewing layer.
    fn steer(
        self,
        cap: Option<Layer>,
        choice: Quality,
        budget: Option<crate::budget::BudgetService>,
        mut picks: mpsc::UnboundedReceiver<(Quality, oneshot::Sender<Result<(), StreamError>>)>,
    ) -> tokio::task::JoinHandle<()> {
        let mut budget_events = budget.as_ref().map(|b| b.subscribe());
        tokio::spawn(async move {
            let layers: Vec<Layer> = stream_layers(&self.info)
                .iter()
                .map(|l| l.layer.mesh())
                .collect();
            let start = Instant::now();
            let mut reports = self.node.report_watch();
            let trouble = |r: &NodeReport| r.stalled + r.skipped;
            let mut q = QualityControl::new(layers, cap, choice, Duration::ZERO, 0);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                let auto = q.choice() == Quality::Auto;
                let mut asked = false;
                let mut budget_moved = false;
                let mut picked = None;
                tokio::select! {
                    p = picks.recv() => match p {
                        Some(p) => picked = Some(p),
                        None => return,
                    },
                    r = reports.changed(), if auto => if r.is_err() { return },
                    _ = tick.tick(), if auto => {}
                    ev = next_budget_event(&mut budget_events) => {
                        asked = matches!(ev, crate::budget::BudgetEvent::LowerViewingLayer { .. });
                        budget_moved = true;
                    }
                }
                let now = start.elapsed();
                let count = trouble(&reports.borrow_and_update());
                let (pick, why) = match &picked {
                    Some((choice, _)) => (q.set(now, *choice, count), "quality picked"),
                    None if asked => (q.lower(now), "protecting the connection"),
                    None => (q.update(now, count), "auto quality"),
                };
                if let Ok(mut c) = self.choice.lock() {
                    *c = q.choice();
                }
                let done = match pick {
                    Some(l) => {
                        tracing::info!(stream = %self.info.id, "{why}: {}", super::node::layer_name(l));
                        let r = self.to(l).await;
                        if let Err(e) = &r {
                            tracing::warn!("{why}: switch: {e}");
                        }
                        r
                    }
                    None => Ok(()),
                };
                if let Some((_, reply)) = picked {
                    let _ = reply.send(done);
                }
                if budget_moved
                    && let Some(b) = &budget
                    && let Err(e) = self.reoffer(b.relay_offer()).await
                {
                    tracing::warn!("telling the tracker our relay offer: {e}");
                }
            }
        })
    }
}

impl std::fmt::Debug for WatchSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchSession")
            .field("stream", &self.m.info.id)
            .finish_non_exhaustive()
    }
}

impl WatchSession {
    /// Joins `stream` (the relay checks `join`), reaches the root on `/mesh` and peers over
    /// WebRTC.
    pub async fn join(
        client: &RelayClient,
        stream: StreamId,
        opts: WatchOptions,
    ) -> Result<Self, StreamError> {
        let events = client.subscribe();
        let info = match client
            .request(Request::StreamJoin {
                stream,
                relay: Some(opts.relay),
                layer: opts.layer.map(StreamLayerName::from_mesh),
            })
            .await?
        {
            Reply::Stream { stream } => stream,
            r => return Err(unexpected("stream", r)),
        };
        let leave = Request::StreamLeave { stream };
        let (url, sig_tx, sig_rx) = Member::ticket(client, stream, leave.clone()).await?;
        let layers = stream_layers(&info);
        let want = pick_layer(&info.layers, opts.layer.map(StreamLayerName::from_mesh));
        let watch = layers
            .iter()
            .find(|x| x.layer == want)
            .copied()
            .unwrap_or(layers[0]);
        let node = match spawn_viewer(
            client.user_id(),
            info.streamer.id,
            NodeConfig {
                bind: opts.bind,
                ice: opts.ice,
                layer: watch.layer.mesh(),
                stream_rate: watch.bitrate,
                chunk: Duration::from_millis(u64::from(info.chunk_ms)),
                relay_budget: opts.relay,
                upload: opts.upload.clone(),
                started_ms: info.started_ms,
                corrupt: opts.corrupt,
                root_url: Some(url),
                played: opts.played,
            },
            sig_tx,
        ) {
            Ok(n) => n,
            Err(e) => {
                let _ = client.request(leave).await;
                return Err(e);
            }
        };
        let viewers = Arc::new(AtomicU32::new(0));
        let choice = if opts.auto {
            Quality::Auto
        } else {
            Quality::Fixed(watch.layer.mesh())
        };
        let switch = Switch {
            client: client.clone(),
            info: info.clone(),
            node: node.clone(),
            relay: Arc::new(std::sync::Mutex::new(opts.relay)),
            layer: Arc::new(std::sync::Mutex::new(watch.layer.mesh())),
            choice: Arc::new(std::sync::Mutex::new(choice)),
        };
        let m = Member::start(client, info, node, events, sig_rx, viewers);
        let (picks, picks_rx) = mpsc::unbounded_channel();
        let steer = switch
            .clone()
            .steer(opts.layer, choice, opts.upload, picks_rx);
        Ok(WatchSession {
            m,
            switch,
            picks,
            steer,
        })
    }

    pub fn info(&self) -> &StreamInfo {
        &self.m.info
    }

    /// The viewer's counts so far (played, from root/peers, relayed).
    pub fn report(&self) -> NodeReport {
        self.m.node.report()
    }

    pub fn report_watch(&self) -> watch::Receiver<NodeReport> {
        self.m.node.report_watch()
    }

    pub fn ended_watch(&self) -> watch::Receiver<Option<EndReason>> {
        self.m.ended.clone()
    }

    /// Waits until the stream ends or the client stops.
    pub async fn ended(&mut self) -> EndReason {
        self.m.ended().await
    }

    /// Seconds since joining.
    pub fn seconds(&self) -> f64 {
        self.m.began.elapsed().as_secs_f64()
    }

    /// Stops watching: a graceful leave while the stream is live (the tracker hears `leave`
    /// first and this viewer keeps serving its downstreams until they stop asking, 3 s at most:
    /// docs/stream.md "Leaving"), then leaves the stream at the relay; the final report.
    pub async fn stop(self) -> NodeReport {
        self.steer.abort();
        if self.m.ended.borrow().is_none() {
            self.m.node.leave().await;
        }
        let stream = self.m.info.id;
        self.m.stop(Request::StreamLeave { stream }).await.0
    }

    /// The layer watched now (or being switched to).
    pub fn layer(&self) -> Layer {
        self.switch.layer.lock().map(|l| *l).unwrap_or(Layer::High)
    }

    /// The viewer's pick now ([`Quality::Auto`] or the fixed layer).
    pub fn quality(&self) -> Quality {
        self.switch
            .choice
            .lock()
            .map(|c| *c)
            .unwrap_or(Quality::Auto)
    }

    /// The player's quality menu: [`Quality::Fixed`] watches that layer (the best published
    /// one no better than it) and stops auto quality; [`Quality::Auto`] starts it again from
    /// the layer watched now, never above the download-quality cap given at join
    /// (`WatchOptions::layer`). The rule is [`QualityControl`]'s. A switch starts a machine for
    /// the new layer's swarm, the relay moves us there (`stream_join` again with the layer),
    /// and the player cuts over at a chunk boundary without a gap (`stream::splice`); this
    /// returns once the relay has moved us.
    pub async fn set_quality(&self, quality: Quality) -> Result<(), StreamError> {
        let (tx, rx) = oneshot::channel();
        if self.picks.send((quality, tx)).is_err() {
            return Ok(());
        }
        rx.await.unwrap_or(Ok(()))
    }

    /// Tests only: close the link to the relay's root, as a network drop would (the session
    /// reopens it with a fresh ticket).
    pub fn drop_root_link(&self) {
        self.m.node.send(Command::DropRootLink);
    }
}

/// Watching a recording in the on-demand mesh (`recording_join`): the relay's store is the root,
/// the other viewers of the recording are peers (docs/stream.md, "Recordings"). The node keeps
/// serving what it holds to later viewers until [`RecordingSession::stop`].
pub struct RecordingSession {
    client: RelayClient,
    recording: u64,
    node: NodeHandle,
    pump: tokio::task::JoinHandle<()>,
    /// Reopens the link to the relay's store if it closes under us.
    reconnect: tokio::task::JoinHandle<()>,
}

/// How to watch a recording.
#[derive(Clone, Debug)]
pub struct RecordingOptions {
    pub bind: Vec<String>,
    /// TURN servers and relay-only ("hide my IP") for the mesh's WebRTC links
    /// ([`crate::ice::IceConfig::from_relay`]).
    pub ice: crate::ice::IceConfig,
    /// Upload given to other viewers (reported; requests are answered as they come).
    pub relay: Bitrate,
    /// Tests only: serve every chunk with its payload altered.
    pub corrupt: bool,
    pub played: Option<mpsc::Sender<PlayedChunk>>,
}

impl RecordingSession {
    pub async fn join(
        client: &RelayClient,
        info: &hum_proto::signal::RecordingInfo,
        relay_url: &str,
        opts: RecordingOptions,
    ) -> Result<Self, StreamError> {
        let recording = info.id;
        let mut events = client.subscribe();
        let (ticket, peers) = match client.request(Request::RecordingJoin { recording }).await? {
            Reply::RecordingSwarm { ticket, peers } => (ticket, peers),
            r => return Err(unexpected("recording_swarm", r)),
        };
        let layer = info.layer.unwrap_or(StreamLayerName::High).mesh();
        let (sig_tx, mut sig_rx) = mpsc::unbounded_channel::<(UserId, MeshSignal)>();
        let me = client.user_id();
        let node = match super::node::spawn_recording(
            me,
            info.streamer.id,
            NodeConfig {
                bind: opts.bind,
                ice: opts.ice,
                layer,
                stream_rate: info.bitrate,
                chunk: Duration::from_millis(u64::from(info.chunk_ms.max(1))),
                relay_budget: opts.relay,
                upload: None,
                started_ms: info.started_ms,
                corrupt: opts.corrupt,
                root_url: Some(mesh_url(relay_url, &ticket)),
                played: opts.played,
            },
            info.chunks,
            u64::from_be_bytes(me.0[..8].try_into().unwrap_or([0; 8])),
            sig_tx,
        ) {
            Ok(n) => n,
            Err(e) => {
                let _ = client.request(Request::RecordingLeave { recording }).await;
                return Err(e);
            }
        };
        node.send(Command::Peers(peers));
        let c = client.clone();
        tokio::spawn(async move {
            while let Some((to, signal)) = sig_rx.recv().await {
                if let Err(e) = c
                    .request(Request::RecordingSignal {
                        recording,
                        to,
                        signal,
                    })
                    .await
                {
                    tracing::debug!(%to, "recording signal not delivered: {e}");
                }
            }
        });
        let n = node.clone();
        let pump = tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(ClientEvent::Relay(Event::RecordingSignal {
                        recording: r,
                        from,
                        signal,
                    })) if r == recording => n.signal(from, signal),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        // A recording does not end under its viewers: the watch only stays unended.
        let (_, unended) = watch::channel(None);
        let reconnect = reopen_root(
            client.clone(),
            Request::RecordingOpen { recording },
            node.clone(),
            unended,
        );
        Ok(RecordingSession {
            client: client.clone(),
            recording,
            node,
            pump,
            reconnect,
        })
    }

    pub fn report(&self) -> NodeReport {
        self.node.report()
    }

    pub fn report_watch(&self) -> watch::Receiver<NodeReport> {
        self.node.report_watch()
    }

    /// Tests only: close the link to the relay's store, as a network drop would (the session
    /// reopens it with a fresh `recording_open` ticket).
    pub fn drop_root_link(&self) {
        self.node.send(Command::DropRootLink);
    }

    /// Leave the swarm; the final report.
    pub async fn stop(self) -> NodeReport {
        let r = self.node.stop().await;
        self.pump.abort();
        self.reconnect.abort();
        let _ = self
            .client
            .request(Request::RecordingLeave {
                recording: self.recording,
            })
            .await;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracker_hears_of_an_offer_only_when_it_moved_enough() {
        let k = Bitrate::from_kbps;
        assert!(!offer_moved(k(2_000), k(2_000)));
        assert!(!offer_moved(k(2_000), k(1_700)), "a small step");
        assert!(offer_moved(k(2_000), k(1_500)), "a quarter down");
        assert!(offer_moved(k(2_000), k(2_500)), "a quarter up");
        assert!(offer_moved(k(2_000), Bitrate::ZERO), "relaying stops");
        assert!(offer_moved(Bitrate::ZERO, k(10)), "relaying starts");
        assert!(!offer_moved(Bitrate::ZERO, Bitrate::ZERO));
    }

    #[test]
    fn mesh_url_replaces_the_ws_path() {
        assert_eq!(
            mesh_url("ws://127.0.0.1:7700/ws", "abc"),
            "ws://127.0.0.1:7700/mesh?ticket=abc"
        );
        assert_eq!(
            mesh_url("wss://relay.example/", "t"),
            "wss://relay.example/mesh?ticket=t"
        );
    }

    #[test]
    fn layers_are_named_by_picture_height() {
        let l = |layer, height| StreamLayer {
            layer,
            bitrate: Bitrate::from_kbps(200),
            width: height * 16 / 9,
            height,
        };
        assert_eq!(layer_label(&l(StreamLayerName::High, 720)), "720p");
        assert_eq!(layer_label(&l(StreamLayerName::Low, 180)), "180p");
        assert_eq!(layer_label(&l(StreamLayerName::Audio, 0)), "Audio only");
        assert_eq!(layer_label(&l(StreamLayerName::High, 0)), "High");
    }
}
