//! The relay as every live stream's root seed and tracker: thin tokio glue around
//! [`hum_mesh::host::RootHost`] (docs/stream.md, "Where things run").
//!
//! ```text
//!  hub thread ── LiveCmd ──▶ Live::exec ──▶ one task per stream (RootHost + recording)
//!      ▲                                      ▲ uploads, viewer requests │ chunks to viewers
//!      │                                      │                          ▼
//!      └── HubCmd::LiveSignal (grants, gone) ─┘      GET /mesh?ticket=… (WebSocket, per member)
//! ```
//!
//! Transport: a WebSocket on the relay's own HTTP port, one per member and stream (see
//! docs/stream.md for why not a WebRTC data channel). Binary frames carry the same fragments as
//! the mesh's data channels (`hum_mesh::fragment`, <= 60 KiB each), reassembled with the same
//! bounds and decoded with the same size-limited decoder before anything reaches the host. The
//! streamer may only upload `data`; a viewer may only send what a viewer sends an upstream.
//! Outgoing frames go through a bounded queue per connection: when a viewer does not read, its
//! chunks are dropped (it asks someone else), never buffered without bound.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hum_mesh::fragment::{self, Reassembler};
use hum_mesh::host::{HostConfig, HostOutput, RootHost};
use hum_mesh::manifest::Verifier;
use hum_mesh::{Layer, MeshMsg, Time};
use hum_proto::{Bitrate, StreamId, UserId};
use tokio::sync::mpsc;

use crate::hub::LiveCmd;
use crate::metrics::Metrics;
use crate::recording::{RecordingWriter, Recordings};
use crate::server::{HubCmd, SharedState};

/// Frames queued to one `/mesh` connection before its chunks are dropped (~2.4 MiB).
const OUT_QUEUE: usize = 40;
/// Tickets outstanding at once (each lives until redeemed or its stream ends).
const MAX_TICKETS: usize = 100_000;
/// Undecodable frames tolerated on one connection before it is closed.
const MAX_WIRE_ERRORS: u32 = 32;
/// Fragments are reassembled within this long (as on the data channels).
const FRAGMENT_LIFETIME: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
enum Ticket {
    Stream { stream: StreamId, user: UserId },
    Recording(u64),
}

enum StreamMsg {
    Cmd(LiveCmd),
    Attach {
        user: UserId,
        conn: u64,
        tx: mpsc::Sender<Vec<u8>>,
    },
    Detach {
        user: UserId,
        conn: u64,
    },
    FromMember {
        user: UserId,
        msg: MeshMsg,
    },
}

#[derive(Default)]
struct Inner {
    streams: HashMap<StreamId, mpsc::UnboundedSender<StreamMsg>>,
    tickets: HashMap<String, Ticket>,
    next_conn: u64,
}

/// Every live stream's host task, and the tickets that open `/mesh`.
pub(crate) struct Live {
    inner: Mutex<Inner>,
    hub_tx: mpsc::Sender<HubCmd>,
    metrics: Arc<Metrics>,
    recordings: Option<Recordings>,
    rt: tokio::runtime::Handle,
}

impl Live {
    pub(crate) fn new(
        hub_tx: mpsc::Sender<HubCmd>,
        metrics: Arc<Metrics>,
        recordings: Option<Recordings>,
    ) -> Live {
        Live {
            inner: Mutex::default(),
            hub_tx,
            metrics,
            recordings,
            rt: tokio::runtime::Handle::current(),
        }
    }

    /// Carry out a hub command (called on the hub thread, in the hub's order: a ticket is known
    /// before the reply that carries it is sent).
    pub(crate) fn exec(&self, cmd: LiveCmd) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        match cmd {
            LiveCmd::Start {
                stream,
                streamer,
                bitrate,
                recording,
                layers,
            } => {
                let (tx, rx) = mpsc::unbounded_channel();
                inner.streams.insert(stream, tx);
                let writer = match (&self.recordings, recording) {
                    (Some(r), Some(id)) => match r.writer(id) {
                        Ok(w) => Some(w),
                        Err(e) => {
                            tracing::error!("recording {id}: {e}");
                            None
                        }
                    },
                    _ => None,
                };
                let layers = if layers.is_empty() {
                    vec![(Layer::High, bitrate)]
                } else {
                    layers
                };
                let task = StreamTask {
                    stream,
                    hosts: BTreeMap::new(),
                    layers,
                    members: HashMap::new(),
                    streamer,
                    start: Instant::now(),
                    conns: HashMap::new(),
                    hub_tx: self.hub_tx.clone(),
                    metrics: self.metrics.clone(),
                    writer,
                    next_msg: 0,
                };
                self.rt.spawn(task.run(rx));
            }
            LiveCmd::End { stream } => {
                if let Some(tx) = inner.streams.remove(&stream) {
                    let _ = tx.send(StreamMsg::Cmd(LiveCmd::End { stream }));
                }
                inner
                    .tickets
                    .retain(|_, t| !matches!(t, Ticket::Stream { stream: s, .. } if *s == stream));
            }
            LiveCmd::Ticket {
                ticket,
                stream,
                user,
            } => {
                if inner.tickets.len() < MAX_TICKETS {
                    inner
                        .tickets
                        .insert(ticket, Ticket::Stream { stream, user });
                }
            }
            LiveCmd::PlayTicket { ticket, recording } => {
                if inner.tickets.len() < MAX_TICKETS {
                    inner.tickets.insert(ticket, Ticket::Recording(recording));
                }
            }
            c @ (LiveCmd::Joined { stream, .. }
            | LiveCmd::Left { stream, .. }
            | LiveCmd::Budget { stream, .. }
            | LiveCmd::Signal { stream, .. }) => {
                if let Some(tx) = inner.streams.get(&stream) {
                    let _ = tx.send(StreamMsg::Cmd(c));
                }
            }
        }
    }

    fn redeem(&self, ticket: &str) -> Option<Ticket> {
        self.inner.lock().ok()?.tickets.remove(ticket)
    }

    fn stream_tx(&self, s: StreamId) -> Option<(mpsc::UnboundedSender<StreamMsg>, u64)> {
        let mut inner = self.inner.lock().ok()?;
        inner.next_conn += 1;
        let conn = inner.next_conn;
        inner.streams.get(&s).cloned().map(|tx| (tx, conn))
    }
}

/// One stream's root: a host state machine per layer (each layer is its own swarm: its own
/// tracker, window and cap), the members' `/mesh` connections (one per member, whatever layer it
/// watches), the recording (the best layer).
struct StreamTask {
    stream: StreamId,
    /// One per layer, built at once; empty only if the streamer's id is not a valid key.
    hosts: BTreeMap<Layer, RootHost>,
    /// The published layers, best first, with their planned rates.
    layers: Vec<(Layer, Bitrate)>,
    /// The layer each viewer watches.
    members: HashMap<UserId, Layer>,
    streamer: UserId,
    start: Instant,
    conns: HashMap<UserId, (u64, mpsc::Sender<Vec<u8>>)>,
    hub_tx: mpsc::Sender<HubCmd>,
    metrics: Arc<Metrics>,
    writer: Option<RecordingWriter>,
    next_msg: u32,
}

impl StreamTask {
    fn now(&self) -> Time {
        Time(self.start.elapsed().as_micros() as u64)
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<StreamMsg>) {
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&self.streamer.0) else {
            tracing::warn!(stream = %self.stream, "the streamer's id is not a key; not hosting");
            return;
        };
        let seed = u64::from_be_bytes(self.streamer.0[..8].try_into().unwrap_or([1; 8]));
        for (i, (layer, rate)) in self.layers.iter().enumerate() {
            self.hosts.insert(
                *layer,
                RootHost::new(
                    HostConfig::new(*layer, *rate),
                    self.streamer,
                    Verifier::new(key),
                    seed.wrapping_add(i as u64),
                    Time::ZERO,
                ),
            );
        }
        self.metrics.streams_hosted.fetch_add(1, Ordering::Relaxed);
        let mut wake = Time::ZERO;
        loop {
            let now = self.now();
            let at = wake.0.clamp(now.0, now.0 + 1_000_000);
            let deadline = self.start + Duration::from_micros(at);
            tokio::select! {
                m = rx.recv() => match m {
                    None | Some(StreamMsg::Cmd(LiveCmd::End { .. })) => break,
                    Some(m) => self.input(m),
                },
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let now = self.now();
                    for h in self.hosts.values_mut() {
                        h.handle_timeout(now);
                    }
                }
            }
            wake = self.drain().await;
        }
        self.metrics.streams_hosted.fetch_sub(1, Ordering::Relaxed);
        // Dropping the senders ends every member's connection.
        self.conns.clear();
    }

    fn input(&mut self, m: StreamMsg) {
        let now = self.now();
        if self.hosts.is_empty() {
            return;
        }
        let best = self.layers[0].0;
        match m {
            StreamMsg::Cmd(LiveCmd::Joined {
                user, relay, layer, ..
            }) => {
                let layer = if self.hosts.contains_key(&layer) {
                    layer
                } else {
                    best
                };
                // A join again (a layer switch) leaves the old layer's swarm first.
                if let Some(old) = self.members.insert(user, layer)
                    && let Some(h) = self.hosts.get_mut(&old)
                {
                    h.viewer_left(now, user);
                }
                if let Some(h) = self.hosts.get_mut(&layer) {
                    h.viewer_joined(now, user, relay);
                }
            }
            // A viewer that announced its leave (`leave`, through `Signal`) is draining in its
            // host until this, or its grace; one that just goes is removed here at once.
            StreamMsg::Cmd(LiveCmd::Budget { user, relay, .. }) => {
                if let Some(h) = self
                    .members
                    .get(&user)
                    .and_then(|layer| self.hosts.get_mut(layer))
                {
                    h.viewer_budget(now, user, relay);
                }
            }
            StreamMsg::Cmd(LiveCmd::Left { user, .. }) => {
                if let Some(old) = self.members.remove(&user)
                    && let Some(h) = self.hosts.get_mut(&old)
                {
                    h.viewer_left(now, user);
                }
            }
            StreamMsg::Cmd(LiveCmd::Signal { from, signal, .. }) => {
                let layer = self.members.get(&from).copied().unwrap_or(best);
                let Some(host) = self.hosts.get_mut(&layer) else {
                    return;
                };
                let before = host.stats;
                host.signal_in(now, from, signal);
                self.metrics
                    .stream_tracker_bans
                    .fetch_add(host.stats.bans - before.bans, Ordering::Relaxed);
                self.metrics.stream_leaves_announced.fetch_add(
                    host.stats.leaves_announced - before.leaves_announced,
                    Ordering::Relaxed,
                );
            }
            StreamMsg::Cmd(_) => {}
            StreamMsg::Attach { user, conn, tx } => {
                self.conns.insert(user, (conn, tx));
            }
            StreamMsg::Detach { user, conn } => {
                if self.conns.get(&user).is_some_and(|(c, _)| *c == conn) {
                    self.conns.remove(&user);
                    for h in self.hosts.values_mut() {
                        h.link_closed(user);
                    }
                }
            }
            StreamMsg::FromMember { user, msg } if user == self.streamer => {
                let MeshMsg::Data {
                    record, payload, ..
                } = msg
                else {
                    return;
                };
                let len = payload.len() as u64;
                let layer = record.layer;
                let Some(host) = self.hosts.get_mut(&layer) else {
                    self.metrics
                        .stream_uploads_refused
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                };
                match host.upload(now, *record, payload.clone()) {
                    Ok(()) => {
                        self.metrics
                            .stream_upload_bytes
                            .fetch_add(len, Ordering::Relaxed);
                        // The recording keeps the best layer.
                        if layer == best
                            && let Some(w) = &mut self.writer
                            && let Err(e) = w.append(&record, &payload)
                        {
                            tracing::error!(stream = %self.stream, "recording: {e}; recording stops");
                            self.writer = None;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(stream = %self.stream, "upload refused: {e}");
                        self.metrics
                            .stream_uploads_refused
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            StreamMsg::FromMember { user, msg } => {
                // A viewer talks to the root of the layer it watches (and only that one).
                let layer = self.members.get(&user).copied().unwrap_or(best);
                let Some(host) = self.hosts.get_mut(&layer) else {
                    return;
                };
                match msg {
                    MeshMsg::Request { layer: l, .. } | MeshMsg::Cancel { layer: l, .. }
                        if l == layer =>
                    {
                        host.handle_input(now, user, msg)
                    }
                    MeshMsg::BufferHealth { .. } => host.handle_input(now, user, msg),
                    _ => {}
                }
            }
        }
    }

    async fn drain(&mut self) -> Time {
        let mut wake = Time::MAX;
        let layers: Vec<Layer> = self.hosts.keys().copied().collect();
        for layer in layers {
            while let Some(host) = self.hosts.get_mut(&layer) {
                match host.poll_output() {
                    HostOutput::Timeout(t) => {
                        wake = wake.min(t);
                        break;
                    }
                    HostOutput::Signal { to, signal } => {
                        // A layer the viewer has left says nothing more to it (its `gone`s
                        // and grants belong to the old swarm).
                        if self.members.get(&to).is_some_and(|l| *l != layer) {
                            continue;
                        }
                        let _ = self
                            .hub_tx
                            .send(HubCmd::LiveSignal {
                                stream: self.stream,
                                to,
                                signal,
                            })
                            .await;
                    }
                    HostOutput::Send { to, msg } => self.send(to, &msg),
                }
            }
        }
        wake
    }

    fn send(&mut self, to: UserId, msg: &MeshMsg) {
        let Some((_, tx)) = self.conns.get(&to) else {
            return;
        };
        let Ok(bytes) = msg.encode() else { return };
        let id = self.next_msg;
        self.next_msg = self.next_msg.wrapping_add(1);
        let frags = fragment::split(id, &bytes);
        // All fragments or none: a partial message is worth nothing to the viewer.
        if tx.capacity() < frags.len() {
            self.metrics
                .stream_frames_dropped
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let is_data = matches!(msg, MeshMsg::Data { .. });
        for f in frags {
            if is_data {
                self.metrics
                    .stream_root_bytes
                    .fetch_add(f.len() as u64, Ordering::Relaxed);
            }
            let _ = tx.try_send(f);
        }
    }
}

/// `GET /mesh?ticket=…`: a member's link to a stream's root, or a recording's chunks.
pub(crate) async fn mesh_handler(
    ws: WebSocketUpgrade,
    State(shared): State<SharedState>,
    uri: Uri,
) -> Response {
    let ticket = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("ticket="))
        .unwrap_or("")
        .to_string();
    let Some(t) = shared.live().redeem(&ticket) else {
        return (
            StatusCode::FORBIDDEN,
            "unknown or used ticket: ask the relay for one (stream_mesh, recording_open)\n",
        )
            .into_response();
    };
    let max = fragment::HEADER + fragment::MAX_FRAGMENT_PAYLOAD;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            match t {
                Ticket::Stream { stream, user } => run_member(socket, shared, stream, user).await,
                Ticket::Recording(id) => run_playback(socket, shared, id).await,
            }
        })
}

async fn run_member(socket: WebSocket, shared: SharedState, stream: StreamId, user: UserId) {
    let Some((task, conn)) = shared.live().stream_tx(stream) else {
        return;
    };
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(OUT_QUEUE);
    if task
        .send(StreamMsg::Attach {
            user,
            conn,
            tx: out_tx,
        })
        .is_err()
    {
        return;
    }
    let (mut sink, mut source) = socket.split();
    let writer = tokio::spawn(async move {
        while let Some(f) = out_rx.recv().await {
            if sink.send(Message::Binary(f.into())).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    let start = Instant::now();
    let mut reasm = Reassembler::new(FRAGMENT_LIFETIME);
    let mut errors = 0u32;
    while let Some(Ok(m)) = source.next().await {
        let Message::Binary(b) = m else {
            if matches!(m, Message::Close(_)) {
                break;
            }
            continue;
        };
        let now = Time(start.elapsed().as_micros() as u64);
        let msg = match reasm.push(now, &b) {
            Ok(None) => continue,
            Ok(Some(whole)) => MeshMsg::decode(&whole).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match msg {
            Ok(msg) => {
                if task.send(StreamMsg::FromMember { user, msg }).is_err() {
                    break;
                }
            }
            Err(e) => {
                errors += 1;
                shared
                    .metrics()
                    .stream_wire_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%user, "bad /mesh frame: {e}");
                if errors > MAX_WIRE_ERRORS {
                    break;
                }
            }
        }
    }
    let _ = task.send(StreamMsg::Detach { user, conn });
    writer.abort();
}

/// A recording, chunk by chunk: the client asks `request` with `seq` = the chunk's index (0 ..
/// `chunks`), the relay answers `data` (record + payload) or `absent`.
async fn run_playback(socket: WebSocket, shared: SharedState, id: u64) {
    let Some(recs) = shared.live().recordings.clone() else {
        return;
    };
    let (mut sink, mut source) = socket.split();
    let start = Instant::now();
    let mut reasm = Reassembler::new(FRAGMENT_LIFETIME);
    let mut errors = 0u32;
    let mut next_msg = 0u32;
    while let Some(Ok(m)) = source.next().await {
        let Message::Binary(b) = m else {
            if matches!(m, Message::Close(_)) {
                break;
            }
            continue;
        };
        let now = Time(start.elapsed().as_micros() as u64);
        let whole = match reasm.push(now, &b) {
            Ok(None) => continue,
            Ok(Some(w)) => w,
            Err(_) => {
                errors += 1;
                if errors > MAX_WIRE_ERRORS {
                    break;
                }
                continue;
            }
        };
        let Ok(MeshMsg::Request { layer, seq, .. }) = MeshMsg::decode(&whole) else {
            errors += 1;
            if errors > MAX_WIRE_ERRORS {
                break;
            }
            continue;
        };
        let r = recs.clone();
        let found = tokio::task::spawn_blocking(move || r.chunk(id, seq))
            .await
            .ok()
            .and_then(|r| r.ok())
            .flatten();
        let reply = match found {
            Some((record, payload)) => {
                let m = shared.metrics();
                m.recording_chunks_served.fetch_add(1, Ordering::Relaxed);
                m.recording_bytes_served
                    .fetch_add(payload.len() as u64, Ordering::Relaxed);
                MeshMsg::Data {
                    record: Arc::new(record),
                    hops: 0,
                    payload: Arc::from(payload),
                }
            }
            None => MeshMsg::Absent {
                layer,
                seq,
                reason: hum_mesh::AbsentReason::NotHeld,
            },
        };
        let Ok(bytes) = reply.encode() else { continue };
        for f in fragment::split(next_msg, &bytes) {
            if sink.send(Message::Binary(f.into())).await.is_err() {
                return;
            }
        }
        next_msg = next_msg.wrapping_add(1);
    }
}
