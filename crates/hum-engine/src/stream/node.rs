//! The runtime around one sans-IO mesh state machine: a tokio task that feeds it time and the
//! messages of its WebRTC links, and carries out what it asks ("mutate, then drain until Timeout").
//!
//! Two roles share the loop: the **root** (the stream's root seed plus its tracker; it runs in the
//! streamer's process for now) and a **viewer**. Mesh peer ids are local to each process: a root
//! numbers viewers densely for its tracker; a viewer calls the streamer `PeerId(0)` and numbers the
//! others as it meets them. Signalling ([`MeshSignal`]) goes out on a channel the caller forwards
//! (through the relay in the app and the CLI, directly in tests).
//!
//! Outside input (a peer's bytes) goes through [`Reassembler`] (bounded) and `MeshMsg::decode`
//! (size-limited, typed errors) before it reaches the state machine, which verifies every chunk.
//! Independently of the viewer's own checks, every chunk the player plays is verified again against
//! the signed record here and counted (`played_verified` / `played_corrupt`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hum_mesh::chunker::Chunk;
use hum_mesh::fragment::{self, Reassembler};
use hum_mesh::host::{LEAVE_QUIET, LEAVE_QUIET_MAX};
use hum_mesh::manifest::{Publisher, Verifier};
use hum_mesh::picker::SlotState;
use hum_mesh::root::RootSeed;
use hum_mesh::tracker::{Grant, Tracker, TrackerConfig};
use hum_mesh::viewer::{Viewer, ViewerConfig};
use hum_mesh::{Layer, MeshEvent, MeshMsg, Output, PeerId, Time};
use hum_proto::signal::{MeshGrant, MeshSignal};
use hum_proto::{Bitrate, UserId};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use super::link::{Lane, LinkEvent, MeshLink};
use super::ondemand::{OnDemand, OnDemandConfig};
use super::relay_link::RelayLink;
use super::splice::{Pick, Splicer};

/// A link to one mesh neighbour: WebRTC to a peer, or the relay's `/mesh` to a relay-hosted root.
#[derive(Clone)]
enum Link {
    Rtc(Arc<MeshLink>),
    Relay(Arc<RelayLink>),
}

impl Link {
    fn send(&self, lane: Lane, bytes: Vec<u8>) {
        match self {
            Link::Rtc(l) => l.send(lane, bytes),
            Link::Relay(l) => l.send(lane, bytes),
        }
    }
    fn is_closed(&self) -> bool {
        match self {
            Link::Rtc(l) => l.is_closed(),
            Link::Relay(l) => l.is_closed(),
        }
    }
    async fn close(&self) {
        match self {
            Link::Rtc(l) => l.close().await,
            Link::Relay(l) => l.close().await,
        }
    }
}

const ROOT: PeerId = PeerId(0);
/// The tracker does not measure RTT between viewers yet: every pair counts the same.
const ASSUMED_RTT: Duration = Duration::from_millis(40);

/// Settings shared by both roles.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Local UDP addresses for WebRTC (e.g. `127.0.0.1:0` in tests).
    pub bind: Vec<String>,
    /// TURN servers and relay-only ("hide my IP") for the WebRTC links to other viewers.
    pub ice: crate::ice::IceConfig,
    pub layer: Layer,
    pub stream_rate: Bitrate,
    pub chunk: Duration,
    /// Upload this node gives to relaying (a viewer's setting; the root's global cap).
    pub relay_budget: Bitrate,
    /// Viewer: relay from the bandwidth service's limiter (the one bucket for everything the
    /// client sends, its relay cap following the settings and the throttler) instead of a bucket
    /// of its own at `relay_budget` (which is still what the tracker is told).
    pub upload: Option<crate::budget::BudgetService>,
    /// Unix ms of the stream's media time 0 (for lag).
    pub started_ms: u64,
    /// Tests only: serve every chunk with its payload altered (a hostile relay).
    pub corrupt: bool,
    /// The relay hosts the root: its `/mesh` URL with a ticket (`stream_mesh`). The link to the
    /// root (`PeerId(0)`, the streamer's id) goes there instead of over WebRTC.
    pub root_url: Option<String>,
    /// Viewer: every chunk the player plays (verified), for a decoder or a player; uploader: every
    /// chunk it publishes (the streamer's own check). A full queue drops the chunk for that
    /// consumer (the mesh never waits for it).
    pub played: Option<mpsc::Sender<PlayedChunk>>,
}

/// A chunk the viewer's player reached, verified against the streamer's signed record.
#[derive(Clone, Debug)]
pub struct PlayedChunk {
    /// The layer it came from (a layer switch changes it at a chunk boundary).
    pub layer: Layer,
    pub seq: u64,
    /// Media time of the chunk's start, µs since the stream began.
    pub start_us: u64,
    pub duration_us: u32,
    /// How long it plays, µs: its duration, or less while the player catches up with the live
    /// edge (`hum_mesh::player::CATCH_UP_RATE`); frames and sound are paced to match.
    pub play_us: u32,
    /// The frames (docs/stream.md, "Chunk format"; `hum_mesh::chunker::Chunk::frames` reads it).
    pub payload: Arc<[u8]>,
}

impl PlayedChunk {
    /// A chunk as played (tests, and anything that plays chunks it made itself).
    pub fn from_chunk(c: &Chunk) -> Self {
        PlayedChunk {
            layer: c.layer,
            seq: c.seq,
            start_us: c.start_us,
            duration_us: c.duration_us,
            play_us: c.duration_us,
            payload: c.payload.clone(),
        }
    }

    /// Played faster than real time (the player is catching up).
    pub fn is_fast(&self) -> bool {
        self.play_us < self.duration_us
    }

    /// Its frames, in order; `None` if the payload is not a well-formed chunk body.
    pub fn frames(&self) -> Option<Vec<hum_mesh::chunker::Frame>> {
        Chunk::new(
            self.layer,
            self.seq,
            self.start_us,
            self.duration_us,
            true,
            self.payload.clone(),
        )
        .frames()
    }
}

/// What the caller tells a running node.
#[derive(Debug)]
pub enum Command {
    /// A signal from another member of the stream.
    Signal { from: UserId, signal: MeshSignal },
    /// Root: publish a finished chunk.
    Publish(Chunk),
    /// Root: a viewer joined (with its relay budget).
    ViewerJoined { user: UserId, relay: Bitrate },
    /// Root: a viewer left.
    ViewerLeft { user: UserId },
    /// Stop; the final report comes back.
    Stop(oneshot::Sender<NodeReport>),
    /// Viewer: leave gracefully (docs/stream.md "Leaving"): tell the tracker (`leave`), stop
    /// watching (the report's playback counts stop here) and keep serving until no downstream
    /// has asked anything for `LEAVE_QUIET` (`LEAVE_QUIET_MAX` at most); then `done` fires and
    /// the caller stops the node. Other roles: `done` at once.
    Leave(oneshot::Sender<()>),
    /// The relay-hosted root's `/mesh` with a fresh ticket: reopen the root's link if it closed.
    RootUrl(String),
    /// Tests only: close the link to the relay-hosted root (as a network drop would).
    DropRootLink,
    /// Viewer: move to `layer` (planned at `rate`). A second machine joins that layer's swarm
    /// (the next grants are its) from the end of what the current one holds; the player cuts
    /// over at a chunk boundary ([`Splicer`]) and the old machine goes.
    SwitchLayer { layer: Layer, rate: Bitrate },
    /// Recording: offer links to these viewers of the same recording.
    Peers(Vec<UserId>),
}

/// Counts a node reports (the `hum watch --json` object).
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeReport {
    pub role: &'static str,
    pub started: bool,
    /// From the first grant to the first chunk played.
    pub startup_ms: Option<u64>,
    pub played: u64,
    /// Played late (the player stalled for them).
    pub stalled: u64,
    pub skipped: u64,
    /// played / (played + skipped).
    pub continuity: f64,
    /// How far behind the capture of its first frame each chunk was, in ms, when a viewer
    /// played it, or when the streamer uploaded it (a chunk leaves once its last frame is
    /// encoded: a chunk's length plus encoding, more when the streamer cannot keep up with real
    /// time, which every viewer then sees as lag it cannot take back).
    pub lag_ms_p50: u64,
    pub lag_ms_p95: u64,
    pub lag_ms_max: u64,
    /// Chunks (and their payload bytes) that verified and were kept, by source.
    pub chunks_from_root: u64,
    pub chunks_from_peers: u64,
    pub bytes_from_root: u64,
    pub bytes_from_peers: u64,
    /// Every played chunk checked again against its signed record, independently of the viewer.
    pub played_verified: u64,
    pub played_corrupt: u64,
    /// Played chunks no longer in the window when checked (should stay 0).
    pub played_unavailable: u64,
    /// Chunks that failed verification (the sender got a strike).
    pub penalties: u64,
    /// Peers this node banned.
    pub banned: Vec<String>,
    /// Bytes this node sent on its links (chunks / control), and chunks served.
    pub bytes_sent_data: u64,
    pub bytes_sent_ctl: u64,
    pub chunks_sent: u64,
    /// Messages sent, by kind.
    pub msgs_sent: BTreeMap<&'static str, u64>,
    /// Outside input refused before the state machine (bad fragments, undecodable messages).
    pub wire_errors: u64,
    pub links: u64,
    /// WebRTC links that opened, by the path their data took: through a TURN server (ours or
    /// the peer's) or directly; `links_route_unknown` when the statistics named no pair.
    pub links_relayed: u64,
    pub links_direct: u64,
    pub links_route_unknown: u64,
    /// Root: chunks published, viewers now, bans reported to the tracker.
    pub published: u64,
    /// Root: payload bytes published (one copy of the stream).
    pub published_bytes: u64,
    pub viewers: u64,
    pub tracker_bans: u64,
    /// Viewer: times the relay's `/mesh` link (the root) closed under us, and times it was
    /// opened again with a fresh ticket ([`Command::RootUrl`]).
    pub root_link_drops: u64,
    pub root_reconnects: u64,
    /// Viewer: the layer playing now, chunks played from each layer, switches done.
    pub layer: &'static str,
    pub played_by_layer: BTreeMap<&'static str, u64>,
    pub layer_switches: u64,
    /// Recording (on-demand mesh): chunks in it, whether every one is held, chunks and bytes
    /// served to other viewers of it, requests that timed out.
    pub recording_chunks: u64,
    pub complete: bool,
    pub chunks_served: u64,
    pub bytes_served: u64,
    pub timeouts: u64,
    /// Viewer: skipped chunk slots by what the viewer knew of them when playback gave them up
    /// ([`SkipNote::cause`]), and the first [`SKIP_LOG`] of them in detail.
    pub skip_causes: BTreeMap<&'static str, u64>,
    /// Viewer: chunks played faster than real time to catch up with the live edge, and the lag
    /// that took back (µs).
    pub caught_up: u64,
    pub caught_up_us: u64,
    pub skip_log: Vec<SkipNote>,
}

/// Skips a report lists one by one (the rest are only counted in `skip_causes`).
pub const SKIP_LOG: usize = 64;

/// One skipped chunk slot, as the viewer saw it when its player gave it up.
#[derive(Clone, Debug, Serialize)]
pub struct SkipNote {
    /// Since the node started, ms.
    pub at_ms: u64,
    pub seq: u64,
    pub layer: &'static str,
    /// `jump`: playback had fallen half a window behind the live edge and jumped over it;
    /// `dropped`: given up before its deadline (no one could deliver it in time, or the root
    /// refused it); `not_asked`: missing with no request out (`no_holder` when no upstream had
    /// announced it); `asked_root` / `asked_peer`: a request was out and not answered in time.
    pub cause: &'static str,
    /// Whom the request still out went to (`root`, or a user id's first 8 hex digits).
    pub asked: Vec<String>,
    pub escalated: bool,
    /// How long the request still out had waited, ms.
    pub waited_ms: Option<u64>,
    /// Upstreams that had announced holding it.
    pub holders: u8,
    pub upstreams: usize,
    /// Chunks between it and the viewer's live edge.
    pub behind_live: u64,
}

/// A layer's name as reports and the CLI write it.
pub fn layer_name(l: Layer) -> &'static str {
    hum_proto::signal::StreamLayerName::from_mesh(l).as_str()
}

/// A running node: send it commands, read its report.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    tx: mpsc::UnboundedSender<Command>,
    report: watch::Receiver<NodeReport>,
}

impl NodeHandle {
    pub fn send(&self, c: Command) {
        let _ = self.tx.send(c);
    }
    pub fn signal(&self, from: UserId, signal: MeshSignal) {
        self.send(Command::Signal { from, signal });
    }
    /// The latest report (updated as events happen).
    pub fn report(&self) -> NodeReport {
        self.report.borrow().clone()
    }
    pub fn report_watch(&self) -> watch::Receiver<NodeReport> {
        self.report.clone()
    }
    /// Viewer: leave gracefully ([`Command::Leave`]); returns once the downstreams have stopped
    /// asking (3 s at most). Then [`NodeHandle::stop`].
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Leave(tx));
        let _ = tokio::time::timeout(LEAVE_QUIET_MAX + Duration::from_secs(1), rx).await;
    }

    /// Stop the node and return its final report.
    pub async fn stop(&self) -> NodeReport {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Stop(tx));
        match rx.await {
            Ok(r) => r,
            Err(_) => self.report(),
        }
    }
}

enum Machine {
    Root {
        seed: Box<RootSeed>,
        tracker: Tracker,
    },
    Viewer {
        /// The machine of the layer playing now.
        viewer: Box<Viewer>,
        layer: Layer,
        /// During a layer switch: the new layer's machine, and whether it has joined its swarm.
        next: Option<(Layer, Box<Viewer>, bool)>,
        splice: Splicer,
        joined_at: Option<Instant>,
        check: Verifier,
    },
    /// The streamer when the relay is the root: sign each chunk, upload it once.
    Upload { publisher: Publisher },
    /// A viewer of a recording in the on-demand mesh (the relay's store is the root).
    OnDemand { od: Box<OnDemand>, check: Verifier },
}

struct Node {
    me: UserId,
    cfg: NodeConfig,
    start: Instant,
    machine: Machine,
    ids: BTreeMap<UserId, PeerId>,
    users: BTreeMap<PeerId, UserId>,
    next_id: u32,
    links: BTreeMap<UserId, Link>,
    /// Links we offered (for glare: the lower user id's offer wins).
    offered: BTreeMap<UserId, bool>,
    reasm: BTreeMap<UserId, Reassembler>,
    next_msg: u32,
    link_tx: mpsc::UnboundedSender<LinkEvent>,
    signals: mpsc::UnboundedSender<(UserId, MeshSignal)>,
    report: NodeReport,
    report_tx: watch::Sender<NodeReport>,
    lags: Vec<u64>,
    /// start_us of chunks seen, by seq (for lag), pruned to the last few hundred.
    starts: BTreeMap<u64, u64>,
    /// Viewer: what the root granted us last (restored when its link is reopened).
    root_grant: Bitrate,
    /// Uploader: chunks published while the relay's link was down, sent when it is reopened
    /// (at most the root's window: older ones could not be served any more).
    backlog: std::collections::VecDeque<MeshMsg>,
    /// Viewer, leaving: since when, and who waits for the downstreams to stop asking.
    leaving: Option<(Time, Option<oneshot::Sender<()>>)>,
}

/// Chunks an uploader keeps while its link to the relay is down (the root's window).
const UPLOAD_BACKLOG: usize = 64;

/// Start a root: `publisher` signs with the streamer's key (`me`'s). Signals to send come out on
/// `signals`.
pub fn spawn_root(
    me: UserId,
    publisher: Publisher,
    cfg: NodeConfig,
    signals: mpsc::UnboundedSender<(UserId, MeshSignal)>,
) -> NodeHandle {
    let start = Instant::now();
    let seed = RootSeed::new(cfg.layer, publisher, cfg.relay_budget, 64, Time::ZERO);
    let tracker = Tracker::new(
        TrackerConfig::new(cfg.stream_rate, cfg.relay_budget),
        ROOT,
        u64::from_be_bytes(me.0[..8].try_into().unwrap_or([1; 8])),
    );
    spawn(
        me,
        me,
        cfg,
        start,
        Machine::Root {
            seed: Box::new(seed),
            tracker,
        },
        signals,
        "root",
    )
}

/// A mesh viewer of `layer` (at `rate`), relaying from the bandwidth service when there is one.
fn new_viewer(
    cfg: &NodeConfig,
    layer: Layer,
    rate: Bitrate,
    key: ed25519_dalek::VerifyingKey,
    start: Instant,
    now: Time,
) -> Viewer {
    let vc = ViewerConfig::new(layer, rate, cfg.chunk, cfg.relay_budget);
    let viewer = Viewer::new(PeerId(1), ROOT, Verifier::new(key), vc, now);
    match &cfg.upload {
        Some(service) => viewer.with_upload_budget(Box::new(service.relay_budget(start))),
        None => viewer,
    }
}

/// Start a viewer of `streamer`'s stream (whose key verifies every chunk).
pub fn spawn_viewer(
    me: UserId,
    streamer: UserId,
    cfg: NodeConfig,
    signals: mpsc::UnboundedSender<(UserId, MeshSignal)>,
) -> Result<NodeHandle, super::StreamError> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(&streamer.0)
        .map_err(|_| super::StreamError::BadStreamKey)?;
    let start = Instant::now();
    let viewer = new_viewer(&cfg, cfg.layer, cfg.stream_rate, key, start, Time::ZERO);
    let machine = Machine::Viewer {
        viewer: Box::new(viewer),
        layer: cfg.layer,
        next: None,
        splice: Splicer::new(cfg.layer),
        joined_at: None,
        check: Verifier::new(key),
    };
    Ok(spawn(me, streamer, cfg, start, machine, signals, "viewer"))
}

/// Start a viewer of a recording of `chunks` chunks of `cfg.layer` by `streamer` in the
/// on-demand mesh: `cfg.root_url` is the relay's store (`recording_join`'s ticket); send
/// [`Command::Peers`] with the other viewers it named. `seed` orders equally rare chunks.
pub fn spawn_recording(
    me: UserId,
    streamer: UserId,
    cfg: NodeConfig,
    chunks: u64,
    seed: u64,
    signals: mpsc::UnboundedSender<(UserId, MeshSignal)>,
) -> Result<NodeHandle, super::StreamError> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(&streamer.0)
        .map_err(|_| super::StreamError::BadStreamKey)?;
    let start = Instant::now();
    let od = OnDemand::new(
        ROOT,
        Verifier::new(key),
        OnDemandConfig {
            chunk: cfg.chunk,
            ..OnDemandConfig::new(cfg.layer, chunks, seed)
        },
        Time::ZERO,
    );
    let machine = Machine::OnDemand {
        od: Box::new(od),
        check: Verifier::new(key),
    };
    let h = spawn(me, streamer, cfg, start, machine, signals, "recording");
    h.send(Command::Peers(Vec::new()));
    Ok(h)
}

/// Start the streamer's uploader (the relay hosts the root: `cfg.root_url` must be set): each
/// published chunk is signed with `publisher` and sent to the relay once.
pub fn spawn_uploader(
    me: UserId,
    publisher: Publisher,
    cfg: NodeConfig,
    signals: mpsc::UnboundedSender<(UserId, MeshSignal)>,
) -> NodeHandle {
    let start = Instant::now();
    spawn(
        me,
        me,
        cfg,
        start,
        Machine::Upload { publisher },
        signals,
        "uploader",
    )
}

fn spawn(
    me: UserId,
    streamer: UserId,
    cfg: NodeConfig,
    start: Instant,
    machine: Machine,
    signals: mpsc::UnboundedSender<(UserId, MeshSignal)>,
    role: &'static str,
) -> NodeHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let (link_tx, link_rx) = mpsc::unbounded_channel();
    let report = NodeReport {
        role,
        layer: layer_name(cfg.layer),
        ..NodeReport::default()
    };
    let (report_tx, report_rx) = watch::channel(report.clone());
    let mut node = Node {
        me,
        cfg,
        start,
        machine,
        ids: BTreeMap::new(),
        users: BTreeMap::new(),
        next_id: 2,
        links: BTreeMap::new(),
        offered: BTreeMap::new(),
        reasm: BTreeMap::new(),
        next_msg: 0,
        link_tx,
        signals,
        report,
        report_tx,
        lags: Vec::new(),
        starts: BTreeMap::new(),
        root_grant: Bitrate::ZERO,
        backlog: std::collections::VecDeque::new(),
        leaving: None,
    };
    node.ids.insert(streamer, ROOT);
    node.users.insert(ROOT, streamer);
    if role == "viewer" || role == "recording" {
        node.ids.insert(me, PeerId(1));
        node.users.insert(PeerId(1), me);
    } else {
        node.next_id = 1;
    }
    tokio::spawn(node.run(rx, link_rx));
    NodeHandle {
        tx,
        report: report_rx,
    }
}

impl Node {
    fn now(&self) -> Time {
        Time(self.start.elapsed().as_micros() as u64)
    }

    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Command>,
        mut link_rx: mpsc::UnboundedReceiver<LinkEvent>,
    ) {
        let mut wake = Time::ZERO;
        loop {
            let deadline = self.start
                + Duration::from_micros(wake.0.min(self.now().0 + 1_000_000).max(self.now().0));
            tokio::select! {
                c = rx.recv() => match c {
                    Some(Command::Stop(tx)) => {
                        self.finish_report();
                        for l in self.links.values() {
                            l.close().await;
                        }
                        let _ = tx.send(self.report.clone());
                        return;
                    }
                    Some(c) => self.command(c).await,
                    None => return,
                },
                Some(ev) = link_rx.recv() => self.link_event(ev),
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let now = self.now();
                    match &mut self.machine {
                        Machine::Root { seed, .. } => seed.handle_timeout(now),
                        Machine::Viewer { viewer, next, .. } => {
                            viewer.handle_timeout(now);
                            if let Some((_, n, _)) = next {
                                n.handle_timeout(now);
                            }
                        }
                        Machine::OnDemand { od, .. } => od.handle_timeout(now),
                        Machine::Upload { .. } => {}
                    }
                }
            }
            wake = self.drain().await;
            if self.leaving.is_some() {
                wake = wake.min(self.check_leave());
            }
        }
    }

    /// Leaving: fire the waiter once the downstreams have stopped asking (or time is up); the
    /// next time to look again.
    fn check_leave(&mut self) -> Time {
        let now = self.now();
        let Some((since, waiter)) = &mut self.leaving else {
            return Time::MAX;
        };
        let drained = match &self.machine {
            Machine::Viewer { viewer, .. } => viewer.drained(now, LEAVE_QUIET),
            _ => true,
        };
        if (drained || now.since(*since) >= LEAVE_QUIET_MAX)
            && let Some(tx) = waiter.take()
        {
            let _ = tx.send(());
        }
        now + Duration::from_millis(100)
    }

    fn peer_of(&mut self, user: UserId) -> PeerId {
        if let Some(p) = self.ids.get(&user) {
            return *p;
        }
        let p = PeerId(self.next_id);
        self.next_id += 1;
        self.ids.insert(user, p);
        self.users.insert(p, user);
        p
    }

    fn sig(&self, to: UserId, s: MeshSignal) {
        let _ = self.signals.send((to, s));
    }

    async fn command(&mut self, c: Command) {
        let now = self.now();
        match c {
            Command::Stop(_) => {}
            Command::Leave(done) => {
                let streamer = self.users[&ROOT];
                if let Machine::Viewer { viewer, next, .. } = &mut self.machine
                    && self.leaving.is_none()
                {
                    viewer.leave(now);
                    if let Some((_, n, _)) = next {
                        n.leave(now);
                    }
                    self.finish_report();
                    self.leaving = Some((now, Some(done)));
                    self.sig(streamer, MeshSignal::Leave);
                } else {
                    let _ = done.send(());
                }
            }
            Command::Peers(users) => {
                // The root's link (the relay's store) first, then an offer to each peer.
                let streamer = self.users[&ROOT];
                self.ensure_link(streamer).await;
                for u in users {
                    if u != self.me && u != streamer {
                        self.peer_of(u);
                        self.ensure_link(u).await;
                    }
                }
            }
            Command::RootUrl(url) => {
                let streamer = self.users[&ROOT];
                self.cfg.root_url = Some(url);
                if self.links.get(&streamer).is_some_and(|l| l.is_closed()) {
                    self.links.remove(&streamer);
                }
                if self.links.contains_key(&streamer) {
                    return;
                }
                self.ensure_link(streamer).await;
                if self.links.contains_key(&streamer) {
                    self.report.root_reconnects += 1;
                    if let Machine::Viewer { viewer, .. } = &mut self.machine
                        && self.root_grant > Bitrate::ZERO
                    {
                        viewer.add_upstream(now, ROOT, self.root_grant);
                    }
                    // The uploader sends what it published meanwhile, in order.
                    while let Some(m) = self.backlog.pop_front() {
                        self.transmit(ROOT, m).await;
                    }
                    self.finish_report();
                }
            }
            Command::SwitchLayer { layer, rate } => {
                let cfg = &self.cfg;
                if let Machine::Viewer {
                    layer: cur,
                    next,
                    splice,
                    ..
                } = &mut self.machine
                {
                    splice.switch_to(layer);
                    if layer == *cur {
                        *next = None;
                    } else {
                        let key = ed25519_dalek::VerifyingKey::from_bytes(&self.users[&ROOT].0);
                        if let Ok(key) = key {
                            let v = new_viewer(cfg, layer, rate, key, self.start, now);
                            *next = Some((layer, Box::new(v), false));
                        }
                    }
                    self.root_grant = Bitrate::ZERO;
                }
            }
            Command::DropRootLink => {
                let streamer = self.users[&ROOT];
                if let Some(l) = self.links.get(&streamer).cloned() {
                    // A close of our own reports nothing: handle it as the drop it stands for.
                    l.close().await;
                    self.link_event(LinkEvent::Closed { user: streamer });
                }
            }
            Command::Publish(chunk) => {
                let len = chunk.payload.len() as u32;
                match &mut self.machine {
                    Machine::Root { seed, .. } => {
                        // An in-process root carries one layer.
                        if chunk.layer != self.cfg.layer {
                            return;
                        }
                        seed.publish(now, &chunk, len);
                    }
                    Machine::Upload { publisher } => {
                        // The streamer's own copy of what it publishes (a decoder's check).
                        if let Some(tx) = &self.cfg.played {
                            let _ = tx.try_send(PlayedChunk::from_chunk(&chunk));
                        }
                        let captured = self.cfg.started_ms + chunk.start_us / 1000;
                        self.lags.push(unix_ms().saturating_sub(captured));
                        let record = Arc::new(publisher.sign(&chunk, len));
                        let msg = MeshMsg::Data {
                            record,
                            hops: 0,
                            payload: chunk.payload.clone(),
                        };
                        self.transmit(ROOT, msg).await;
                    }
                    Machine::Viewer { .. } | Machine::OnDemand { .. } => return,
                }
                self.report.published += 1;
                self.report.published_bytes += u64::from(len);
                // The uploader has no outputs to drain: its counts go out here.
                if matches!(self.machine, Machine::Upload { .. }) {
                    self.finish_report();
                }
            }
            Command::ViewerJoined { user, relay } => {
                let id = self.peer_of(user);
                if let Machine::Root { seed, tracker } = &mut self.machine {
                    let (grants, mut orphans) = tracker.join(id, relay, &|_, _| ASSUMED_RTT);
                    orphans.extend(tracker.take_orphans());
                    let live = seed.newest().unwrap_or(0);
                    self.report.viewers += 1;
                    self.send_grants(user, id, live, grants);
                    self.orphans(orphans);
                }
            }
            Command::ViewerLeft { user } => {
                let Some(&id) = self.ids.get(&user) else {
                    return;
                };
                if let Machine::Root { seed, tracker } = &mut self.machine {
                    let orphans = tracker.leave(id);
                    seed.peer_gone(id);
                    self.report.viewers = self.report.viewers.saturating_sub(1);
                    for o in orphans {
                        if let Some(&ou) = self.users.get(&o) {
                            self.sig(ou, MeshSignal::Gone { user });
                        }
                    }
                }
                self.drop_link(user).await;
            }
            Command::Signal { from, signal } => self.on_signal(now, from, signal).await,
        }
    }

    fn send_grants(&mut self, user: UserId, id: PeerId, live: u64, grants: Vec<Grant>) {
        let Machine::Root { seed, .. } = &mut self.machine else {
            return;
        };
        let mut out = Vec::new();
        for g in grants {
            if g.up == ROOT {
                // Only a real seed (a large root grant) is the root's feed; top-ups are fallback.
                seed.set_granted(id, g.rate.bps() * 2 >= self.cfg.stream_rate.bps());
            }
            if let Some(&u) = self.users.get(&g.up) {
                out.push(MeshGrant {
                    user: u,
                    rate: g.rate,
                });
            }
        }
        self.sig(
            user,
            MeshSignal::Grants {
                live_seq: live,
                grants: out,
            },
        );
    }

    /// The tracker moved `o` off `lost`: both ends hear of it.
    fn orphans(&mut self, orphans: Vec<(PeerId, PeerId)>) {
        for (o, lost) in orphans {
            let (Some(&ou), Some(&lu)) = (self.users.get(&o), self.users.get(&lost)) else {
                continue;
            };
            if lost == ROOT {
                if let Machine::Root { seed, .. } = &mut self.machine {
                    seed.set_granted(o, false);
                }
            } else {
                self.sig(lu, MeshSignal::Gone { user: ou });
            }
            self.sig(ou, MeshSignal::Gone { user: lu });
        }
    }

    async fn on_signal(&mut self, now: Time, from: UserId, signal: MeshSignal) {
        tracing::debug!(%from, offer = matches!(signal, MeshSignal::Offer { .. }), answer = matches!(signal, MeshSignal::Answer { .. }), "mesh signal");
        match signal {
            MeshSignal::Offer { sdp } => {
                if self.offered.get(&from) == Some(&true) && self.me < from {
                    // Glare: both offered; the lower id's offer wins, theirs is ignored.
                    return;
                }
                self.drop_link(from).await;
                self.peer_of(from);
                let link =
                    match MeshLink::new(from, &self.cfg.bind, &self.cfg.ice, self.link_tx.clone())
                        .await
                    {
                        Ok(l) => Arc::new(l),
                        Err(e) => {
                            tracing::warn!(%from, "mesh link: {e}");
                            return;
                        }
                    };
                self.links.insert(from, Link::Rtc(link.clone()));
                self.offered.insert(from, false);
                self.reasm.insert(
                    from,
                    Reassembler::new(Duration::from_millis(super::link::DATA_LIFETIME_MS.into())),
                );
                let signals = self.signals.clone();
                tokio::spawn(async move {
                    match link.answer(sdp).await {
                        Ok(sdp) => {
                            let _ = signals.send((from, MeshSignal::Answer { sdp }));
                        }
                        Err(e) => tracing::warn!(%from, "mesh answer: {e}"),
                    }
                });
            }
            MeshSignal::Answer { sdp } => {
                if let Some(Link::Rtc(l)) = self.links.get(&from).cloned() {
                    tokio::spawn(async move {
                        if let Err(e) = l.accept_answer(sdp).await {
                            tracing::warn!("mesh answer rejected: {e}");
                        }
                    });
                }
            }
            MeshSignal::Bye => self.drop_link(from).await,
            MeshSignal::Grants { live_seq, grants } => {
                if !self.is_from_streamer(from) {
                    return;
                }
                let streamer = self.users[&ROOT];
                self.ensure_link(streamer).await;
                let mut ups = Vec::new();
                for g in grants {
                    if g.user == self.me {
                        continue;
                    }
                    let p = self.peer_of(g.user);
                    if p == ROOT {
                        self.root_grant = g.rate;
                    }
                    self.ensure_link(g.user).await;
                    ups.push((p, g.rate));
                }
                if let Machine::Viewer {
                    viewer,
                    next,
                    joined_at,
                    ..
                } = &mut self.machine
                {
                    // During a switch the grants are the new layer's swarm's.
                    if let Some((_, n, joined)) = next {
                        if !*joined {
                            *joined = true;
                            // From the end of what the old layer holds (chunks still in the
                            // root's window), so the two overlap and the cut loses nothing.
                            let from = if viewer.player().is_started() {
                                let mut s = viewer.player().next_seq();
                                while viewer.has(s) {
                                    s += 1;
                                }
                                s.saturating_sub(1).min(live_seq)
                            } else {
                                live_seq
                            };
                            n.join(now, from);
                        }
                        for (p, rate) in ups {
                            n.add_upstream(now, p, rate);
                        }
                        return;
                    }
                    if joined_at.is_none() {
                        *joined_at = Some(Instant::now());
                        viewer.join(now, live_seq);
                    }
                    for (p, rate) in ups {
                        viewer.add_upstream(now, p, rate);
                    }
                }
            }
            MeshSignal::Gone { user } => {
                if !self.is_from_streamer(from) {
                    return;
                }
                if let (Some(&p), Machine::Viewer { viewer, next, .. }) =
                    (self.ids.get(&user), &mut self.machine)
                {
                    viewer.peer_gone(now, p);
                    if let Some((_, n, _)) = next {
                        n.peer_gone(now, p);
                    }
                }
            }
            MeshSignal::Leaving { user } => {
                if !self.is_from_streamer(from) {
                    return;
                }
                if let (Some(&p), Machine::Viewer { viewer, next, .. }) =
                    (self.ids.get(&user), &mut self.machine)
                {
                    viewer.upstream_leaving(now, p);
                    if let Some((_, n, _)) = next {
                        n.upstream_leaving(now, p);
                    }
                }
            }
            MeshSignal::Leave => {
                // An in-process root: the leaver is granted to nobody again and its downstreams
                // hear `leaving`; they drop it when its links close.
                let Some(&id) = self.ids.get(&from) else {
                    return;
                };
                if let Machine::Root { tracker, .. } = &mut self.machine {
                    for d in tracker.leave(id) {
                        if let Some(&du) = self.users.get(&d) {
                            self.sig(du, MeshSignal::Leaving { user: from });
                        }
                    }
                }
            }
            MeshSignal::Want { .. } => {
                let Some(&id) = self.ids.get(&from) else {
                    return;
                };
                if let Machine::Root { tracker, seed } = &mut self.machine {
                    let grants = tracker.refill(id, &|_, _| ASSUMED_RTT);
                    let orphans = tracker.take_orphans();
                    let live = seed.newest().unwrap_or(0);
                    if !grants.is_empty() {
                        self.send_grants(from, id, live, grants);
                    }
                    self.orphans(orphans);
                }
            }
            MeshSignal::Ban { user } => {
                let (Some(&down), Some(&up)) = (self.ids.get(&from), self.ids.get(&user)) else {
                    return;
                };
                if let Machine::Root { tracker, .. } = &mut self.machine {
                    tracker.ban(down, up);
                    let orphans = tracker.take_orphans();
                    self.report.tracker_bans += 1;
                    self.orphans(orphans);
                }
            }
        }
    }

    fn is_from_streamer(&self, from: UserId) -> bool {
        self.users.get(&ROOT) == Some(&from) && matches!(self.machine, Machine::Viewer { .. })
    }

    /// A link to `user`, offering one if there is none (we are the downstream).
    async fn ensure_link(&mut self, user: UserId) {
        if self.links.get(&user).is_some_and(|l| !l.is_closed()) {
            return;
        }
        if self.users.get(&ROOT) == Some(&user)
            && let Some(url) = self.cfg.root_url.clone()
        {
            // The relay hosts the root: one WebSocket, opened once with the ticket (a closed
            // one stays closed: the mesh and the root's fallback through peers carry on).
            if self.links.contains_key(&user) {
                return;
            }
            match RelayLink::connect(&url, user, self.link_tx.clone()).await {
                Ok(l) => {
                    self.links.insert(user, Link::Relay(Arc::new(l)));
                    self.reasm.insert(
                        user,
                        Reassembler::new(Duration::from_millis(
                            super::link::DATA_LIFETIME_MS.into(),
                        )),
                    );
                    self.report.links = self.links.len() as u64;
                }
                Err(e) => tracing::warn!("the root's link: {e}"),
            }
            return;
        }
        let link =
            match MeshLink::new(user, &self.cfg.bind, &self.cfg.ice, self.link_tx.clone()).await {
                Ok(l) => Arc::new(l),
                Err(e) => {
                    tracing::warn!(%user, "mesh link: {e}");
                    return;
                }
            };
        self.links.insert(user, Link::Rtc(link.clone()));
        self.offered.insert(user, true);
        self.reasm.insert(
            user,
            Reassembler::new(Duration::from_millis(super::link::DATA_LIFETIME_MS.into())),
        );
        self.report.links = self.links.len() as u64;
        let signals = self.signals.clone();
        tokio::spawn(async move {
            match link.offer().await {
                Ok(sdp) => {
                    let _ = signals.send((user, MeshSignal::Offer { sdp }));
                }
                Err(e) => tracing::warn!(%user, "mesh offer: {e}"),
            }
        });
    }

    async fn drop_link(&mut self, user: UserId) {
        if let Some(l) = self.links.remove(&user) {
            l.close().await;
        }
        self.reasm.remove(&user);
        self.offered.remove(&user);
        self.report.links = self.links.len() as u64;
    }

    fn link_event(&mut self, ev: LinkEvent) {
        let now = self.now();
        match ev {
            LinkEvent::Open { user } => {
                tracing::debug!(%user, "mesh link open");
                // Which path it took, asked off the loop (a statistics call).
                if let Some(Link::Rtc(link)) = self.links.get(&user) {
                    let link = link.clone();
                    let tx = self.link_tx.clone();
                    tokio::spawn(async move {
                        let route = link.route().await;
                        let _ = tx.send(LinkEvent::Route { user, route });
                    });
                }
                if self.users.get(&ROOT) != Some(&user)
                    && matches!(self.machine, Machine::OnDemand { .. })
                {
                    let p = self.peer_of(user);
                    if let Machine::OnDemand { od, .. } = &mut self.machine {
                        od.add_peer(now, p);
                    }
                }
            }
            LinkEvent::Route { user, route } => {
                tracing::debug!(%user, ?route, "mesh link route");
                match route {
                    Some(r) if r.relayed() => self.report.links_relayed += 1,
                    Some(_) => self.report.links_direct += 1,
                    None => self.report.links_route_unknown += 1,
                }
            }
            LinkEvent::Closed { user } => {
                tracing::debug!(%user, "mesh link closed");
                if let Some(&p) = self.ids.get(&user) {
                    match &mut self.machine {
                        Machine::Root { seed, .. } => seed.peer_gone(p),
                        Machine::Viewer { viewer, next, .. } => {
                            viewer.peer_gone(now, p);
                            if let Some((_, n, _)) = next {
                                n.peer_gone(now, p);
                            }
                        }
                        Machine::OnDemand { od, .. } => od.peer_gone(now, p),
                        Machine::Upload { .. } => {}
                    }
                }
                if self.cfg.root_url.is_none() || self.users.get(&ROOT) != Some(&user) {
                    self.links.remove(&user);
                } else {
                    // The relay's /mesh closed: the session asks for a new ticket (RootUrl).
                    self.report.root_link_drops += 1;
                    self.finish_report();
                }
                self.reasm.remove(&user);
                self.report.links = self.links.len() as u64;
            }
            LinkEvent::Message { user, bytes, .. } => {
                let Some(r) = self.reasm.get_mut(&user) else {
                    return;
                };
                let whole = match r.push(now, &bytes) {
                    Ok(Some(m)) => m,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::debug!(%user, "bad mesh fragment: {e}");
                        self.report.wire_errors += 1;
                        return;
                    }
                };
                let msg = match MeshMsg::decode(&whole) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::debug!(%user, "bad mesh message: {e}");
                        self.report.wire_errors += 1;
                        return;
                    }
                };
                let from = self.peer_of(user);
                self.input(now, from, msg);
            }
        }
    }

    fn input(&mut self, now: Time, from: PeerId, msg: MeshMsg) {
        match &mut self.machine {
            Machine::Root { seed, .. } => seed.handle_input(now, from, msg),
            Machine::Upload { .. } => {}
            Machine::OnDemand { od, .. } => od.handle_input(now, from, msg),
            Machine::Viewer {
                viewer,
                layer,
                next,
                ..
            } => {
                // Each layer is its own swarm: a message goes to the machine of its layer.
                let viewer = match (msg_layer(&msg), next) {
                    (Some(l), Some((nl, n, _))) if l == *nl => n,
                    _ => viewer,
                };
                let _ = layer;
                let data = match &msg {
                    MeshMsg::Data {
                        record, payload, ..
                    } => Some((record.seq, record.start_us, payload.len() as u64)),
                    _ => None,
                };
                let had = data.is_some_and(|(seq, ..)| viewer.has(seq));
                viewer.handle_input(now, from, msg);
                if let Some((seq, start_us, len)) = data
                    && !had
                    && viewer.has(seq)
                {
                    self.starts.insert(seq, start_us);
                    while self.starts.len() > 512 {
                        self.starts.pop_first();
                    }
                    if from == ROOT {
                        self.report.chunks_from_root += 1;
                        self.report.bytes_from_root += len;
                    } else {
                        self.report.chunks_from_peers += 1;
                        self.report.bytes_from_peers += len;
                    }
                }
            }
        }
    }

    /// Drain the machines' outputs until their next timeout (a viewer switching layers runs
    /// two).
    async fn drain(&mut self) -> Time {
        let mut changed = false;
        let mut wake = Time::MAX;
        for second in [false, true] {
            loop {
                let (out, from) = match &mut self.machine {
                    Machine::Root { seed, .. } if !second => (seed.poll_output(), self.cfg.layer),
                    Machine::Viewer { viewer, layer, .. } if !second => {
                        (viewer.poll_output(), *layer)
                    }
                    Machine::Viewer {
                        next: Some((l, n, _)),
                        ..
                    } => (n.poll_output(), *l),
                    Machine::OnDemand { od, .. } if !second => (od.poll_output(), self.cfg.layer),
                    _ => (Output::Timeout(Time::MAX), self.cfg.layer),
                };
                match out {
                    Output::Timeout(t) => {
                        wake = wake.min(t);
                        break;
                    }
                    Output::Send { to, msg } => {
                        changed = true;
                        self.transmit(to, msg).await;
                    }
                    Output::Event(ev) => {
                        changed = true;
                        self.event(ev, from).await;
                    }
                }
            }
        }
        if changed {
            self.finish_report();
        }
        wake
    }

    async fn transmit(&mut self, to: PeerId, msg: MeshMsg) {
        let Some(&user) = self.users.get(&to) else {
            return;
        };
        if !self.links.contains_key(&user)
            && matches!(
                self.machine,
                Machine::Viewer { .. } | Machine::Upload { .. }
            )
        {
            self.ensure_link(user).await;
        }
        let Some(link) = self.links.get(&user) else {
            return;
        };
        if matches!(self.machine, Machine::Upload { .. }) && link.is_closed() {
            // The relay's link is down: keep the chunk until the session reopens it.
            self.backlog.push_back(msg);
            while self.backlog.len() > UPLOAD_BACKLOG {
                self.backlog.pop_front();
            }
            return;
        }
        let msg = match msg {
            MeshMsg::Data {
                record,
                hops,
                payload,
            } if self.cfg.corrupt => {
                let mut bad = payload.to_vec();
                if let Some(b) = bad.first_mut() {
                    *b ^= 0x5a;
                } else {
                    bad.push(0);
                }
                MeshMsg::Data {
                    record,
                    hops,
                    payload: Arc::from(bad),
                }
            }
            m => m,
        };
        let kind = match &msg {
            MeshMsg::Announce { .. } => "announce",
            MeshMsg::Request { .. } => "request",
            MeshMsg::Data { .. } => "data",
            MeshMsg::Cancel { .. } => "cancel",
            MeshMsg::Absent { .. } => "absent",
            MeshMsg::BufferHealth { .. } => "buffer_health",
            MeshMsg::SliceRequest { .. } => "slice_request",
            MeshMsg::Slice { .. } => "slice",
        };
        *self.report.msgs_sent.entry(kind).or_default() += 1;
        let lane = if matches!(msg, MeshMsg::Data { .. } | MeshMsg::Slice { .. }) {
            self.report.chunks_sent += 1;
            Lane::Data
        } else {
            Lane::Ctl
        };
        let bytes = match msg.encode() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("mesh encode: {e}");
                return;
            }
        };
        if lane == Lane::Data && matches!(self.machine, Machine::Upload { .. }) {
            // The streamer's own stream, not relaying.
            crate::budget::count_own_media(bytes.len());
        }
        match lane {
            Lane::Data => self.report.bytes_sent_data += bytes.len() as u64,
            Lane::Ctl => self.report.bytes_sent_ctl += bytes.len() as u64,
        }
        let id = self.next_msg;
        self.next_msg = self.next_msg.wrapping_add(1);
        for f in fragment::split(id, &bytes) {
            link.send(lane, f);
        }
    }

    async fn event(&mut self, ev: MeshEvent, from: Layer) {
        let streamer = self.users[&ROOT];
        match ev {
            MeshEvent::Started { at, .. } => {
                if self.report.started {
                    return;
                }
                self.report.started = true;
                match &self.machine {
                    Machine::Viewer {
                        joined_at: Some(j), ..
                    } => self.report.startup_ms = Some(j.elapsed().as_millis() as u64),
                    // A recording's node starts when it joins: from then to the first chunk.
                    Machine::OnDemand { .. } => {
                        self.report.startup_ms = Some(at.as_micros() / 1000)
                    }
                    _ => {}
                }
            }
            MeshEvent::Played { seq, .. } | MeshEvent::Skipped { seq, .. }
                if matches!(self.machine, Machine::OnDemand { .. }) =>
            {
                self.recording_reached(seq, matches!(ev, MeshEvent::Played { .. }));
            }
            // Leaving: no longer watching; what the player still does is not counted.
            MeshEvent::Played { .. } | MeshEvent::Skipped { .. } if self.leaving.is_some() => {}
            MeshEvent::Played {
                seq,
                on_time,
                play_us,
                ..
            } => self.reached(from, seq, Some((on_time, play_us))),
            MeshEvent::Skipped { seq, at, jump } => {
                self.note_skip(from, seq, at, jump);
                self.reached(from, seq, None)
            }
            MeshEvent::Penalised { .. } => self.report.penalties += 1,
            MeshEvent::Banned { peer } => {
                if let Some(&u) = self.users.get(&peer) {
                    self.report.banned.push(u.to_hex());
                    if !matches!(self.machine, Machine::OnDemand { .. }) {
                        self.sig(streamer, MeshSignal::Ban { user: u });
                    }
                    self.sig(u, MeshSignal::Bye);
                    self.drop_link(u).await;
                }
            }
            MeshEvent::NeedUpstreams { count } => {
                // While switching, the old layer's machine asks nothing of the new swarm.
                if let Machine::Viewer {
                    layer,
                    next: Some(_),
                    ..
                } = &self.machine
                    && *layer == from
                {
                    return;
                }
                self.sig(streamer, MeshSignal::Want { count })
            }
            MeshEvent::Fallback { .. } => {}
        }
    }

    /// A layer's player reached `seq`: played (`Some((on_time, play_us))`) or given up. Through the
    /// [`Splicer`], which decides what the viewer plays (one layer at a time, each sequence
    /// number once); every chunk played is verified again here and handed to the decoder.
    fn reached(&mut self, from: Layer, seq: u64, played: Option<(bool, u64)>) {
        let Machine::Viewer {
            viewer,
            layer,
            next,
            splice,
            check,
            ..
        } = &mut self.machine
        else {
            return;
        };
        let (cur_layer, cur) = (*layer, &**viewer);
        let machine = |l: Layer| -> Option<&Viewer> {
            if l == cur_layer {
                Some(cur)
            } else {
                next.as_ref()
                    .filter(|(nl, ..)| *nl == l)
                    .map(|(_, n, _)| &**n)
            }
        };
        let (picks, cut) = splice.reached(from, seq, played.is_some(), |l, s| {
            machine(l).is_some_and(|m| m.has(s))
        });
        for p in picks {
            let (l, s) = match p {
                Pick::Skip { .. } => {
                    self.report.skipped += 1;
                    continue;
                }
                Pick::Play { layer, seq } => (layer, seq),
            };
            self.report.played += 1;
            // Late: the player waited for it.
            let this = s == seq && l == from;
            if this && played.is_some_and(|(on_time, _)| !on_time) {
                self.report.stalled += 1;
            }
            *self
                .report
                .played_by_layer
                .entry(layer_name(l))
                .or_default() += 1;
            match machine(l).and_then(|m| m.chunk(s)) {
                Some((record, payload)) => {
                    if record.layer == l && check.verify_chunk(record, payload).is_ok() {
                        self.report.played_verified += 1;
                        // Only the chunk the event names plays at the event's pace; one the
                        // splicer hands on from another layer plays at its own length.
                        let play_us = match played {
                            Some((_, p)) if this => {
                                u32::try_from(p).unwrap_or(u32::MAX).min(record.duration_us)
                            }
                            _ => record.duration_us,
                        };
                        if play_us < record.duration_us {
                            self.report.caught_up += 1;
                            self.report.caught_up_us += u64::from(record.duration_us - play_us);
                        }
                        if let Some(tx) = &self.cfg.played {
                            let _ = tx.try_send(PlayedChunk {
                                layer: l,
                                seq: s,
                                start_us: record.start_us,
                                duration_us: record.duration_us,
                                play_us,
                                payload: payload.clone(),
                            });
                        }
                    } else {
                        self.report.played_corrupt += 1;
                    }
                }
                None => self.report.played_unavailable += 1,
            }
            if let Some(start_us) = self.starts.get(&s) {
                let captured = self.cfg.started_ms + start_us / 1000;
                self.lags.push(unix_ms().saturating_sub(captured));
            }
        }
        if cut && let Some((nl, n, _)) = next.take() {
            *viewer = n;
            *layer = nl;
            self.report.layer = layer_name(nl);
            self.report.layer_switches += 1;
        }
    }

    /// Why a live viewer's player skipped `seq` (counted by cause; the first [`SKIP_LOG`] listed).
    fn note_skip(&mut self, from: Layer, seq: u64, at: Time, jump: bool) {
        let Machine::Viewer {
            viewer,
            layer,
            next,
            ..
        } = &self.machine
        else {
            return;
        };
        let m: &Viewer = if *layer == from {
            viewer
        } else {
            match next.as_ref().filter(|(l, ..)| *l == from) {
                Some((_, n, _)) => n,
                None => return,
            }
        };
        let view = m.slot_view(seq);
        let root = m.root();
        let asked: Vec<PeerId> = view
            .map(|v| v.asked.iter().flatten().copied().collect())
            .unwrap_or_default();
        let cause = match view {
            _ if jump => "jump",
            None => "left_window",
            Some(v) => match v.state {
                SlotState::Dropped => "dropped",
                SlotState::Missing if v.holders == 0 => "no_holder",
                SlotState::Missing => "not_asked",
                SlotState::Requested if asked.contains(&root) => "asked_root",
                SlotState::Requested => "asked_peer",
                SlotState::Have => "held",
            },
        };
        *self.report.skip_causes.entry(cause).or_default() += 1;
        if self.report.skip_log.len() >= SKIP_LOG {
            return;
        }
        let name = |p: &PeerId| match self.users.get(p) {
            _ if *p == root => "root".to_string(),
            Some(u) => u.to_hex()[..8].to_string(),
            None => format!("peer{}", p.0),
        };
        let note = SkipNote {
            at_ms: at.as_micros() / 1000,
            seq,
            layer: layer_name(from),
            cause,
            asked: asked.iter().map(name).collect(),
            escalated: view.is_some_and(|v| v.escalated),
            waited_ms: view
                .and_then(|v| v.requested_at)
                .map(|t| at.since(t).as_micros() as u64 / 1000),
            holders: view.map_or(0, |v| v.holders),
            upstreams: m.scheduler().upstreams().len(),
            behind_live: m.live_edge().saturating_sub(seq),
        };
        self.report.skip_log.push(note);
    }

    /// A recording's player reached `seq` (in order): played, verified again, handed on.
    fn recording_reached(&mut self, seq: u64, played: bool) {
        let Machine::OnDemand { od, check } = &self.machine else {
            return;
        };
        if !played {
            self.report.skipped += 1;
            return;
        }
        self.report.played += 1;
        *self
            .report
            .played_by_layer
            .entry(layer_name(self.cfg.layer))
            .or_default() += 1;
        match od.chunk(seq) {
            Some((record, payload)) => {
                if record.layer == self.cfg.layer
                    && record.seq == seq
                    && check.verify_chunk(record, payload).is_ok()
                {
                    self.report.played_verified += 1;
                    if let Some(tx) = &self.cfg.played {
                        let _ = tx.try_send(PlayedChunk {
                            layer: record.layer,
                            seq,
                            start_us: record.start_us,
                            duration_us: record.duration_us,
                            play_us: record.duration_us,
                            payload: payload.clone(),
                        });
                    }
                } else {
                    self.report.played_corrupt += 1;
                }
            }
            None => self.report.played_unavailable += 1,
        }
    }

    fn finish_report(&mut self) {
        if let Machine::OnDemand { od, .. } = &self.machine {
            let r = &mut self.report;
            r.recording_chunks = od.chunks();
            r.complete = od.is_complete();
            r.chunks_from_root = od.stats.chunks_from_root;
            r.chunks_from_peers = od.stats.chunks_from_peers;
            r.bytes_from_root = od.stats.bytes_from_root;
            r.bytes_from_peers = od.stats.bytes_from_peers;
            r.penalties = od.stats.bad_chunks;
            r.chunks_served = od.stats.chunks_served;
            r.bytes_served = od.stats.bytes_served;
            r.timeouts = od.stats.timeouts;
        }
        let r = &mut self.report;
        let total = r.played + r.skipped;
        r.continuity = if total == 0 {
            0.0
        } else {
            r.played as f64 / total as f64
        };
        if !self.lags.is_empty() {
            let mut l = self.lags.clone();
            l.sort_unstable();
            let q = |p: f64| l[((l.len() - 1) as f64 * p).round() as usize];
            r.lag_ms_p50 = q(0.5);
            r.lag_ms_p95 = q(0.95);
            r.lag_ms_max = *l.last().unwrap_or(&0);
        }
        self.report_tx.send_replace(r.clone());
    }
}

/// Unix time in milliseconds (lag is measured against the streamer's capture clock).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The layer a mesh message is about (`None`: buffer health, about the link).
fn msg_layer(msg: &MeshMsg) -> Option<Layer> {
    match msg {
        MeshMsg::Data { record, .. } | MeshMsg::Slice { record, .. } => Some(record.layer),
        MeshMsg::Request { layer, .. }
        | MeshMsg::Cancel { layer, .. }
        | MeshMsg::Absent { layer, .. }
        | MeshMsg::Announce { layer, .. }
        | MeshMsg::SliceRequest { layer, .. } => Some(*layer),
        MeshMsg::BufferHealth { .. } => None,
    }
}
