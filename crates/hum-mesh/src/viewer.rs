//! A viewer peer: fetches the stream from its upstreams, plays it, and relays it under its budget.
//!
//! Flow of a chunk: when a viewer joins, the tracker tells it the live sequence number and gives it
//! upstream grants. The viewer keeps *frontier* requests open for the next chunks up to a little past
//! the live edge, spread over its upstreams by weight ([`Scheduler::choose`]); an upstream that does
//! not hold a chunk yet holds the request and serves it as soon as the chunk arrives and its budget
//! allows (lowest buffer health first). So a fresh chunk flows down the mesh one store-and-forward per
//! hop, with no announcement round per hop.
//!
//! Every chunk is verified (signature, then BLAKE3) before it is stored, played or relayed. A bad chunk
//! is dropped, its sender gets a strike, and at `max_strikes` it is banned.
//!
//! Requests that are slow get escalated once their deadline is within `urgent` (end-game: a second
//! request to the best upstream known to hold the chunk, else to the root seed). Missing chunks behind
//! the frontier (an upstream left, a chunk was corrupt) go through the [`Picker`].
//!
//! Invariants: a slot holds one sequence number; `low <= frontier <= low + window`; a chunk is `Have`
//! only after it verified; a banned peer's messages are ignored.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use hum_proto::Bitrate;
use hum_proto::mesh::{AbsentReason, ChunkRecord, Layer, MeshMsg};

use crate::havemap::HaveMap;
use crate::manifest::Verifier;
use crate::picker::{Pick, PickSlot, Picker, SlotState};
use crate::player::Player;
use crate::scheduler::Scheduler;
use crate::serve::{Priority, ServeQueue, ServeRequest, TokenBucket};
use crate::{MeshEvent, Output, PeerId, Time};

/// How often a viewer short of upstream grants asks the tracker again.
const TRACKER_RETRY: Duration = Duration::from_secs(2);

/// The ring slot of `seq` in a window of `w` (`seq % w`; a mask when `w` is a power of two, as the
/// default 32-chunk window is: a 64-bit division per slot visit was the hottest instruction of a
/// 10k-viewer simulation, in `next_wake`'s scan).
#[inline]
fn ix(seq: u64, w: u64) -> usize {
    if w.is_power_of_two() {
        (seq & (w - 1)) as usize
    } else {
        (seq % w) as usize
    }
}

#[derive(Clone, Debug)]
pub struct ViewerConfig {
    pub layer: Layer,
    /// The layer's bitrate (what the viewer's grants should add up to).
    pub stream_rate: Bitrate,
    pub chunk: Duration,
    /// Upload the user gives to relaying.
    pub relay_budget: Bitrate,
    /// Chunks tracked (at least 8 s worth).
    pub window: u64,
    pub start_buffer: Duration,
    pub max_stall: Duration,
    /// Escalate a request once its chunk is due within this.
    pub urgent: Duration,
    /// Before playback starts, escalate a request after this.
    pub startup_timeout: Duration,
    /// Frontier requests this many chunks past the live edge.
    pub lookahead: u64,
    /// The fastest a chunk can arrive from anyone (the picker drops what cannot make it).
    pub min_fetch: Duration,
    pub max_strikes: u8,
    pub announce_interval: Duration,
}

impl ViewerConfig {
    pub fn new(layer: Layer, stream_rate: Bitrate, chunk: Duration, relay_budget: Bitrate) -> Self {
        let chunk_us = chunk.as_micros().max(1) as u64;
        ViewerConfig {
            layer,
            stream_rate,
            chunk,
            relay_budget,
            window: (8_000_000u64.div_ceil(chunk_us)).max(32),
            start_buffer: (chunk * 4).max(Duration::from_millis(1000)),
            max_stall: chunk,
            urgent: (chunk * 2).max(Duration::from_millis(500)),
            startup_timeout: Duration::from_millis(1500),
            lookahead: 2,
            min_fetch: Duration::from_millis(60),
            max_strikes: 2,
            announce_interval: Duration::from_secs(4),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ViewerStats {
    pub chunks_received: u64,
    pub duplicates: u64,
    pub bad_chunks: u64,
    pub bytes_served: u64,
    pub chunks_served: u64,
    pub fallback_requests: u64,
    pub escalations: u64,
}

#[derive(Clone, Debug)]
struct Slot {
    seq: u64,
    state: SlotState,
    hops: u8,
    asked: [Option<PeerId>; 2],
    sent_at: Time,
    escalated: bool,
}

impl Slot {
    fn empty() -> Slot {
        Slot {
            seq: u64::MAX,
            state: SlotState::Dropped,
            hops: 0,
            asked: [None; 2],
            sent_at: Time::ZERO,
            escalated: false,
        }
    }
    fn asked(&self, p: PeerId) -> bool {
        self.asked.contains(&Some(p))
    }
}

pub struct Viewer {
    id: PeerId,
    root: PeerId,
    cfg: ViewerConfig,
    verifier: Verifier,
    slots: Vec<Slot>,
    /// Chunk bodies, parallel to `slots` (kept apart so scans over slot states stay in cache); valid
    /// only where the record's seq matches.
    chunks: Vec<Option<crate::StoredChunk>>,
    low: u64,
    frontier: u64,
    joined: Option<(Time, u64)>,
    newest: Option<u64>,
    sched: Scheduler,
    serve: ServeQueue,
    player: Player,
    picker: Picker,
    mine: HaveMap,
    downstreams: Vec<(PeerId, Time)>,
    strikes: Vec<(PeerId, u8)>,
    health_band: u8,
    announce_due: Time,
    /// While our grants fall short of the stream rate, ask the tracker again at this time.
    retry_tracker: Option<Time>,
    /// What the tracker reserved for us on the root seed's uplink.
    granted_by_root: u64,
    now: Time,
    out: VecDeque<Output>,
    scratch_events: Vec<MeshEvent>,
    scratch_serve: Vec<ServeRequest>,
    pub stats: ViewerStats,
}

impl std::fmt::Debug for Viewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Viewer")
            .field("id", &self.id)
            .field("low", &self.low)
            .field("frontier", &self.frontier)
            .finish()
    }
}

impl Viewer {
    pub fn new(id: PeerId, root: PeerId, verifier: Verifier, cfg: ViewerConfig, now: Time) -> Self {
        let bucket = TokenBucket::new(
            cfg.relay_budget.bps(),
            cfg.chunk.max(Duration::from_millis(250)),
            now,
        );
        let window = cfg.window.max(8);
        Viewer {
            id,
            root,
            verifier,
            slots: vec![Slot::empty(); window as usize],
            chunks: vec![None; window as usize],
            low: 0,
            frontier: 0,
            joined: None,
            newest: None,
            sched: Scheduler::new(),
            serve: ServeQueue::new(bucket, Priority::BufferHealth),
            player: Player::new(cfg.chunk, cfg.start_buffer, cfg.max_stall),
            picker: Picker {
                urgent: cfg.urgent,
                min_fetch: cfg.min_fetch,
            },
            mine: HaveMap::new(),
            downstreams: Vec::new(),
            strikes: Vec::new(),
            health_band: u8::MAX,
            announce_due: now + cfg.announce_interval,
            retry_tracker: None,
            granted_by_root: 0,
            now,
            out: VecDeque::new(),
            scratch_events: Vec::new(),
            scratch_serve: Vec::new(),
            stats: ViewerStats::default(),
            cfg,
        }
    }

    pub fn id(&self) -> PeerId {
        self.id
    }
    pub fn player(&self) -> &Player {
        &self.player
    }
    pub fn scheduler(&self) -> &Scheduler {
        &self.sched
    }
    /// Where this viewer's hot heap data is (address, bytes): the slot ring, the upstreams, the serve queues, the downstreams and the output queue's next free place. A simulator
    /// running many viewers prefetches it before handing the viewer its next event (each first touch is
    /// otherwise a cache miss); nothing is read here.
    pub fn hot_memory(&self) -> [(*const u8, usize); 6] {
        let [ready, held] = self.serve.hot_memory();
        let (a, b) = self.out.as_slices();
        let out_end = if b.is_empty() {
            a.as_ptr_range().end
        } else {
            b.as_ptr_range().end
        };
        [
            (
                self.slots.as_ptr().cast(),
                std::mem::size_of_val(&self.slots[..]),
            ),
            (
                self.sched.upstreams().as_ptr().cast(),
                std::mem::size_of_val(self.sched.upstreams()),
            ),
            ready,
            held,
            (
                self.downstreams.as_ptr().cast(),
                std::mem::size_of_val(&self.downstreams[..]),
            ),
            (out_end.cast(), 2 * std::mem::size_of::<Output>()),
        ]
    }
    /// Who the queued outputs are addressed to (a simulator prefetches their network state).
    pub fn pending_sends(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.out.iter().filter_map(|o| match o {
            Output::Send { to, .. } => Some(*to),
            _ => None,
        })
    }
    pub fn has(&self, seq: u64) -> bool {
        let s = &self.slots[ix(seq, self.cfg.window)];
        s.seq == seq && s.state == SlotState::Have
    }
    /// The verified chunk `seq` (record and payload) while it is in the window: what a player
    /// decodes when [`MeshEvent::Played`] names it.
    pub fn chunk(&self, seq: u64) -> Option<&crate::StoredChunk> {
        if !self.has(seq) {
            return None;
        }
        self.chunks[ix(seq, self.cfg.window)]
            .as_ref()
            .filter(|(r, _)| r.seq == seq)
    }

    // ---- inputs -------------------------------------------------------------------------------

    /// The tracker's answer to our join: the live sequence number now.
    pub fn join(&mut self, now: Time, live_seq: u64) {
        self.now = now;
        if self.joined.is_none() {
            // Start with the next chunk, not the newest: its arrival time is what the mesh delivers
            // in steady state, so the startup buffer measured from it holds.
            self.joined = Some((now, live_seq));
            self.low = live_seq + 1;
            self.frontier = live_seq + 1;
            self.retry_tracker = Some(now + TRACKER_RETRY);
            self.rebalance_root_share();
        }
        self.fill(now);
    }

    /// The tracker granted us `grant` of `peer`'s uplink.
    pub fn add_upstream(&mut self, now: Time, peer: PeerId, grant: Bitrate) {
        self.now = now;
        if peer == self.root {
            self.granted_by_root = grant.bps();
        }
        if peer != self.id && self.sched.add(peer, grant.bps()) {
            self.rebalance_root_share();
            self.fill(now);
            self.pick_missing(now);
        }
    }

    /// `peer` is gone (left, or its grant was withdrawn): stop asking it, stop serving it, re-route.
    pub fn peer_gone(&mut self, now: Time, peer: PeerId) {
        self.now = now;
        if peer == self.root {
            self.granted_by_root = 0;
        }
        let was_up = self.sched.remove(peer);
        self.serve.forget(peer);
        self.downstreams.retain(|(p, _)| *p != peer);
        if was_up {
            for i in 0..self.slots.len() {
                let s = &mut self.slots[i];
                if s.state == SlotState::Requested && s.asked(peer) {
                    for a in s.asked.iter_mut() {
                        if *a == Some(peer) {
                            *a = None;
                        }
                    }
                    if s.asked.iter().all(|a| a.is_none()) {
                        s.state = SlotState::Missing;
                        s.escalated = false;
                    }
                }
            }
            self.maybe_need_upstreams();
            self.pick_missing(now);
        }
    }

    pub fn handle_input(&mut self, now: Time, from: PeerId, msg: MeshMsg) {
        self.now = now;
        if self.sched.is_banned(from) {
            return;
        }
        match msg {
            MeshMsg::Data {
                record,
                hops,
                payload,
            } => self.on_data(now, from, record, hops, payload),
            MeshMsg::Request {
                layer,
                seq,
                deadline_ms,
            } if layer == self.cfg.layer => self.on_request(now, from, seq, deadline_ms),
            MeshMsg::Request { layer, seq, .. } => self.send(
                from,
                MeshMsg::Absent {
                    layer,
                    seq,
                    reason: AbsentReason::NotHeld,
                },
            ),
            MeshMsg::Cancel { seq, .. } => {
                let b = self.bytes_of(seq);
                self.serve.cancel(from, seq, b);
            }
            MeshMsg::Absent { seq, .. } => self.on_absent(now, from, seq),
            MeshMsg::Announce {
                layer,
                base,
                bits,
                bitmap,
            } if layer == self.cfg.layer => match HaveMap::from_announce(base, bits, &bitmap) {
                Ok(map) => {
                    self.sched.note_announce(from, &map);
                    self.pick_missing(now);
                }
                // Only a broken or hostile peer announces past the last sequence number: a strike,
                // as for a bad chunk.
                Err(_) => self.penalise(from),
            },
            MeshMsg::Announce { .. } => {}
            MeshMsg::BufferHealth { buffered_ms, .. } => self.serve.set_health(from, buffered_ms),
        }
        self.release(now);
    }

    pub fn handle_timeout(&mut self, now: Time) {
        self.now = now;
        if self.retry_tracker.is_some_and(|t| now >= t) {
            self.retry_tracker = None;
            self.maybe_need_upstreams();
        }
        self.advance_player(now);
        self.escalate(now);
        self.release(now);
        if now >= self.announce_due {
            self.announce_due = now + self.cfg.announce_interval;
            let horizon = now - self.cfg.announce_interval * 2;
            self.downstreams.retain(|(_, t)| *t >= horizon);
            if !self.downstreams.is_empty() {
                let a = self.mine.announce(self.cfg.layer);
                for i in 0..self.downstreams.len() {
                    let to = self.downstreams[i].0;
                    self.send(to, a.clone());
                }
            }
        }
        self.fill(now);
        self.pick_missing(now);
        self.slide();
        self.health(now);
    }

    pub fn poll_output(&mut self) -> Output {
        match self.out.pop_front() {
            Some(o) => o,
            None => Output::Timeout(self.next_wake()),
        }
    }

    // ---- handlers -----------------------------------------------------------------------------

    fn on_data(
        &mut self,
        now: Time,
        from: PeerId,
        record: Arc<ChunkRecord>,
        hops: u8,
        payload: Arc<[u8]>,
    ) {
        if record.layer != self.cfg.layer {
            return;
        }
        if self.verifier.verify_chunk(&record, &payload).is_err() {
            self.stats.bad_chunks += 1;
            let w = self.cfg.window;
            let s = &mut self.slots[ix(record.seq, w)];
            if s.seq == record.seq && s.state == SlotState::Requested && s.asked(from) {
                s.asked = [None; 2];
                s.state = SlotState::Missing;
                s.escalated = false;
            }
            self.penalise(from);
            self.pick_missing(now);
            return;
        }
        let seq = record.seq;
        if seq < self.low || seq >= self.low + self.cfg.window {
            self.stats.duplicates += 1;
            return;
        }
        self.advance_player(now);
        let w = self.cfg.window;
        let idx = ix(seq, w);
        if self.slots[idx].seq != seq {
            self.slots[idx] = Slot {
                seq,
                state: SlotState::Missing,
                ..Slot::empty()
            };
        }
        if self.slots[idx].state == SlotState::Have {
            self.stats.duplicates += 1;
            self.sched.note_have(from, seq);
            return;
        }
        let slot = &mut self.slots[idx];
        let elapsed = now.since(slot.sent_at);
        let asked_from = slot.asked(from);
        let others: [Option<PeerId>; 2] = slot.asked.map(|a| a.filter(|p| *p != from));
        slot.state = SlotState::Have;
        slot.hops = hops.saturating_add(1);
        slot.asked = [None; 2];
        let bytes = record.bytes;
        self.chunks[idx] = Some((record, payload));
        for p in others.into_iter().flatten() {
            self.send(
                p,
                MeshMsg::Cancel {
                    layer: self.cfg.layer,
                    seq,
                },
            );
        }
        if asked_from {
            self.sched.on_delivery(from, bytes, elapsed);
        }
        self.sched.note_have(from, seq);
        self.mine.set(seq);
        self.stats.chunks_received += 1;
        self.newest = Some(self.newest.map_or(seq, |n| n.max(seq)));
        if !self.player.is_started() {
            self.player.begin(now, seq);
            if seq > self.low {
                self.low = seq;
                self.frontier = self.frontier.max(seq + 1);
            }
        }
        self.serve.on_have(seq, bytes);
        self.advance_player(now);
        self.slide();
        self.fill(now);
        self.pick_missing(now);
        self.health(now);
    }

    fn on_request(&mut self, now: Time, from: PeerId, seq: u64, deadline_ms: u32) {
        match self.downstreams.iter_mut().find(|(p, _)| *p == from) {
            Some(d) => d.1 = now,
            None => {
                self.downstreams.push((from, now));
                let a = self.mine.announce(self.cfg.layer);
                self.send(from, a);
            }
        }
        let deadline = now + Duration::from_millis(deadline_ms as u64);
        let req = ServeRequest {
            to: from,
            seq,
            deadline,
            buffer_ms: u32::MAX / 2,
        };
        let layer = self.cfg.layer;
        if seq < self.low {
            self.send(
                from,
                MeshMsg::Absent {
                    layer,
                    seq,
                    reason: AbsentReason::TooOld,
                },
            );
        } else if self.has(seq) {
            let b = self.bytes_of(seq);
            if self
                .serve
                .bucket
                .wait_for(self.serve.backlog_bytes() + b as u64)
                > Duration::from_millis(deadline_ms as u64)
            {
                self.send(
                    from,
                    MeshMsg::Absent {
                        layer,
                        seq,
                        reason: AbsentReason::Busy,
                    },
                );
            } else {
                self.serve.push_ready(req, b);
            }
        } else if seq < self.low + self.cfg.window
            && seq <= self.live_estimate(now) + self.cfg.lookahead + 2
        {
            if !self.serve.push_held(req) {
                self.send(
                    from,
                    MeshMsg::Absent {
                        layer,
                        seq,
                        reason: AbsentReason::Busy,
                    },
                );
            }
        } else {
            self.send(
                from,
                MeshMsg::Absent {
                    layer,
                    seq,
                    reason: AbsentReason::NotHeld,
                },
            );
        }
    }

    fn on_absent(&mut self, now: Time, from: PeerId, seq: u64) {
        let w = self.cfg.window;
        let s = &mut self.slots[ix(seq, w)];
        if s.seq == seq && s.state == SlotState::Requested && s.asked(from) {
            for a in s.asked.iter_mut() {
                if *a == Some(from) {
                    *a = None;
                }
            }
            let mut retry = None;
            if s.asked.iter().all(|a| a.is_none()) {
                if from == self.root {
                    // The last resort is busy: try the mesh once more (an upstream may have it by
                    // now), else give the chunk up (the player will skip it).
                    s.state = SlotState::Dropped;
                    retry = Some(seq);
                } else {
                    s.state = SlotState::Missing;
                    s.escalated = false;
                }
            }
            if from != self.root {
                self.sched.on_failure(from);
            }
            if let Some(seq) = retry {
                let root = self.root;
                let alt = self.sched.best_holder(seq, Some(root)).or_else(|| {
                    self.sched
                        .upstreams()
                        .iter()
                        .filter(|u| u.peer != root)
                        .max_by(|a, b| a.health.total_cmp(&b.health))
                        .map(|u| u.peer)
                });
                if let Some(p) = alt {
                    self.request(now, seq, p);
                    self.slots[ix(seq, w)].escalated = true;
                }
            }
        }
        self.pick_missing(now);
    }

    fn penalise(&mut self, peer: PeerId) {
        let n = match self.strikes.iter_mut().find(|(p, _)| *p == peer) {
            Some(e) => {
                e.1 = e.1.saturating_add(1);
                e.1
            }
            None => {
                self.strikes.push((peer, 1));
                1
            }
        };
        self.out
            .push_back(Output::Event(MeshEvent::Penalised { peer }));
        if n >= self.cfg.max_strikes {
            self.sched.ban(peer);
            self.serve.forget(peer);
            self.downstreams.retain(|(p, _)| *p != peer);
            self.out
                .push_back(Output::Event(MeshEvent::Banned { peer }));
            let now = self.now;
            self.peer_gone(now, peer);
            self.maybe_need_upstreams();
        }
    }

    // ---- machinery ----------------------------------------------------------------------------

    fn send(&mut self, to: PeerId, msg: MeshMsg) {
        self.out.push_back(Output::Send { to, msg });
    }

    fn bytes_of(&self, seq: u64) -> u32 {
        match &self.chunks[ix(seq, self.cfg.window)] {
            Some((r, _)) if r.seq == seq => r.bytes,
            _ => 0,
        }
    }

    /// While the mesh grants fall short of the stream rate, the root seed carries the shortfall as a
    /// weighted upstream (so a single weak upstream is not asked for the whole stream).
    fn rebalance_root_share(&mut self) {
        let root = self.root;
        let mesh: u64 = self
            .sched
            .upstreams()
            .iter()
            .filter(|u| u.peer != root)
            .map(|u| u.grant_bps)
            .sum();
        let short = self.cfg.stream_rate.bps().saturating_sub(mesh);
        let root_grant = self.granted_by_root.max(short);
        if root_grant > 0 {
            self.sched.add(root, root_grant);
        } else {
            self.sched.remove(root);
        }
    }

    fn maybe_need_upstreams(&mut self) {
        self.rebalance_root_share();
        let root = self.root;
        let have: u64 = self
            .sched
            .upstreams()
            .iter()
            .filter(|u| u.peer != root)
            .map(|u| u.grant_bps)
            .sum::<u64>()
            + self.granted_by_root;
        let want = self.cfg.stream_rate.bps();
        if have < want {
            self.retry_tracker = Some(self.now + TRACKER_RETRY);
            let unit = (want / 4).max(1);
            let count = (want - have).div_ceil(unit).clamp(1, 6) as u8;
            self.out
                .push_back(Output::Event(MeshEvent::NeedUpstreams { count }));
        }
    }

    /// The newest chunk that exists by now, as far as we can tell.
    fn live_estimate(&self, now: Time) -> u64 {
        let by_clock = self.joined.map_or(0, |(at, seq)| {
            seq + now.since(at).as_micros() as u64 / self.cfg.chunk.as_micros().max(1) as u64
        });
        by_clock.max(self.newest.unwrap_or(0))
    }

    fn deadline_ms(&self, now: Time, seq: u64) -> u32 {
        match self.player.due(seq) {
            Some(d) => d.since(now).as_millis().min(u32::MAX as u128) as u32,
            // Before playback there is no deadline; do not let a request linger long.
            None => 2500,
        }
    }

    fn request(&mut self, now: Time, seq: u64, to: PeerId) {
        let deadline_ms = self.deadline_ms(now, seq);
        let w = self.cfg.window;
        let s = &mut self.slots[ix(seq, w)];
        if s.seq != seq {
            *s = Slot {
                seq,
                ..Slot::empty()
            };
        }
        if s.asked(to) {
            return;
        }
        match s.asked.iter_mut().find(|a| a.is_none()) {
            Some(a) => *a = Some(to),
            None => s.asked[1] = Some(to),
        }
        if s.state != SlotState::Requested {
            s.sent_at = now;
        }
        s.state = SlotState::Requested;
        if to == self.root {
            self.stats.fallback_requests += 1;
            self.out
                .push_back(Output::Event(MeshEvent::Fallback { seq }));
        }
        self.send(
            to,
            MeshMsg::Request {
                layer: self.cfg.layer,
                seq,
                deadline_ms,
            },
        );
    }

    /// Open frontier requests up to the live edge plus lookahead.
    fn fill(&mut self, now: Time) {
        if self.joined.is_none() {
            return;
        }
        let target =
            (self.live_estimate(now) + self.cfg.lookahead).min(self.low + self.cfg.window - 1);
        while self.frontier <= target {
            let seq = self.frontier;
            self.frontier += 1;
            let idx = ix(seq, self.cfg.window);
            if self.slots[idx].seq == seq && self.slots[idx].state == SlotState::Have {
                continue;
            }
            self.slots[idx] = Slot {
                seq,
                state: SlotState::Missing,
                ..Slot::empty()
            };
            // No upstream at all (the tracker had nothing): the root seed is the fallback.
            let up = self.sched.choose(None).unwrap_or(self.root);
            self.request(now, seq, up);
        }
    }

    /// Run the picker over missing chunks behind the frontier.
    fn pick_missing(&mut self, now: Time) {
        let from = self.low.max(self.player.next_seq());
        let mut any = false;
        for seq in from..self.frontier {
            let s = &self.slots[ix(seq, self.cfg.window)];
            if s.seq == seq && s.state == SlotState::Missing {
                any = true;
                break;
            }
        }
        if !any {
            return;
        }
        let mut slots = Vec::new();
        for seq in from..self.frontier {
            let s = &self.slots[ix(seq, self.cfg.window)];
            if s.seq == seq && s.state == SlotState::Missing {
                slots.push(PickSlot {
                    seq,
                    state: SlotState::Missing,
                    avail: self.sched.availability(seq),
                    deadline: self.player.due(seq),
                });
            }
        }
        let mut picks = Vec::new();
        self.picker.pick(now, &slots, &mut picks);
        for p in picks {
            match p {
                Pick::Drop(seq) => {
                    let w = self.cfg.window;
                    self.slots[ix(seq, w)].state = SlotState::Dropped;
                }
                Pick::Urgent(seq) => {
                    let escalated = self.slots[ix(seq, self.cfg.window)].escalated;
                    let to = match self.sched.best_holder(seq, None) {
                        Some(p) if !escalated => p,
                        _ => self.root,
                    };
                    self.request(now, seq, to);
                    self.slots[ix(seq, self.cfg.window)].escalated = true;
                }
                Pick::Rare(seq) => {
                    if let Some(p) = self.sched.best_holder(seq, None) {
                        self.sched.note_request(p);
                        self.request(now, seq, p);
                    }
                }
            }
        }
        // Missing chunks with no known holder and no urgency: a frontier request to a weighted upstream.
        let starved: Vec<u64> = (from..self.frontier)
            .filter(|&seq| {
                let s = &self.slots[ix(seq, self.cfg.window)];
                s.seq == seq && s.state == SlotState::Missing && !s.escalated
            })
            .collect();
        for seq in starved {
            if let Some(up) = self.sched.choose(None) {
                self.request(now, seq, up);
            }
        }
    }

    fn urgent_at(&self, s: &Slot) -> Time {
        match self.player.due(s.seq) {
            Some(d) => d - self.cfg.urgent,
            None => s.sent_at + self.cfg.startup_timeout,
        }
    }

    /// End-game for slow requests: a second request to the best known holder, else the root seed.
    fn escalate(&mut self, now: Time) {
        for seq in self.low..self.frontier {
            let s = &self.slots[ix(seq, self.cfg.window)];
            if s.seq != seq
                || s.state != SlotState::Requested
                || s.escalated
                || self.urgent_at(s) > now
            {
                continue;
            }
            let first = s.asked[0].or(s.asked[1]);
            if let Some(f) = first {
                self.sched.on_failure(f);
            }
            self.stats.escalations += 1;
            let to = self.sched.best_holder(seq, first).unwrap_or(self.root);
            let to = if Some(to) == first { self.root } else { to };
            self.request(now, seq, to);
            self.slots[ix(seq, self.cfg.window)].escalated = true;
        }
    }

    fn release(&mut self, now: Time) {
        let mut out = std::mem::take(&mut self.scratch_serve);
        out.clear();
        {
            let chunks = &self.chunks;
            let w = self.cfg.window;
            self.serve.release(
                now,
                |seq| match &chunks[ix(seq, w)] {
                    Some((r, _)) if r.seq == seq => r.bytes,
                    _ => 0,
                },
                &mut out,
            );
        }
        for r in out.iter() {
            let s = &self.slots[ix(r.seq, self.cfg.window)];
            if s.seq != r.seq || s.state != SlotState::Have {
                continue;
            }
            let hops = s.hops;
            if let Some((rec, payload)) = self.chunks[ix(r.seq, self.cfg.window)]
                .as_ref()
                .filter(|(rec, _)| rec.seq == r.seq)
            {
                let msg = MeshMsg::Data {
                    record: rec.clone(),
                    hops,
                    payload: payload.clone(),
                };
                self.stats.bytes_served += rec.bytes as u64;
                self.stats.chunks_served += 1;
                self.out.push_back(Output::Send { to: r.to, msg });
            }
        }
        self.scratch_serve = out;
    }

    fn advance_player(&mut self, now: Time) {
        let mut ev = std::mem::take(&mut self.scratch_events);
        ev.clear();
        {
            let slots = &self.slots;
            let w = self.cfg.window;
            let has = |seq: u64| {
                let s = &slots[ix(seq, w)];
                s.seq == seq && s.state == SlotState::Have
            };
            let hops = |seq: u64| slots[ix(seq, w)].hops;
            self.player.advance(now, has, hops, &mut ev);
        }
        for e in ev.drain(..) {
            self.out.push_back(Output::Event(e));
        }
        self.scratch_events = ev;
    }

    /// Move `low` up behind the playhead (keeping a quarter window for slower downstreams).
    fn slide(&mut self) {
        if self.joined.is_none() {
            return;
        }
        let started = self.player.is_started();
        let keep = self.cfg.window / 4;
        let mut new_low = if started {
            self.player.next_seq().saturating_sub(keep).max(self.low)
        } else {
            self.low
        };
        // Never let a stalled (or not yet started) playhead freeze the fetch window: the live edge
        // keeps moving, and our downstreams need us to keep fetching. If the playhead falls out of
        // the window, it jumps.
        let behind = self.cfg.window / 2;
        let floor = self.live_estimate(self.now).saturating_sub(behind);
        if new_low < floor {
            new_low = floor;
        }
        self.low = new_low;
        self.frontier = self.frontier.max(self.low);
        if started && self.player.next_seq() < self.low {
            let (now, low) = (self.now, self.low);
            self.player.jump_to(now, low);
        }
    }

    fn contiguous(&self) -> u64 {
        let mut n = 0;
        let mut s = self.player.next_seq();
        while n < self.cfg.window && self.has(s) {
            n += 1;
            s += 1;
        }
        n
    }

    /// Tell upstreams when our buffer health crosses a band (not on every change: that would be a
    /// message per chunk per upstream).
    fn health(&mut self, now: Time) {
        if !self.player.is_started() {
            return;
        }
        let bh = self.player.buffer_health(now, self.contiguous());
        let ms = bh.as_millis();
        // Two bands: close to a stall, or not. Serving order only needs to know who is in trouble.
        let band_of = |ms: u128| u8::from(ms >= 500);
        // Hysteresis: fall a band at once, climb only a quarter second past the edge. A buffer that
        // breathes around an edge with every chunk would otherwise send a message per chunk per
        // upstream (it did: more messages than chunks).
        let down = band_of(ms);
        let up = band_of(ms.saturating_sub(250));
        let band = if self.health_band == u8::MAX || down < self.health_band {
            down
        } else if up > self.health_band {
            up
        } else {
            self.health_band
        };
        if band != self.health_band {
            self.health_band = band;
            let playhead = self.player.next_seq();
            let buffered_ms = bh.as_millis().min(u32::MAX as u128) as u32;
            for i in 0..self.sched.len() {
                let to = self.sched.upstreams()[i].peer;
                self.send(
                    to,
                    MeshMsg::BufferHealth {
                        buffered_ms,
                        playhead,
                    },
                );
            }
        }
    }

    fn next_wake(&self) -> Time {
        let mut t = Time::MAX;
        let has_next = self.has(self.player.next_seq());
        if let Some(w) = self.player.next_wake(self.now, has_next) {
            t = t.min(w);
        }
        let mut inflight = false;
        for seq in self.low..self.frontier {
            let s = &self.slots[ix(seq, self.cfg.window)];
            if s.seq == seq && s.state == SlotState::Requested {
                inflight = true;
                if !s.escalated {
                    t = t.min(self.urgent_at(s));
                }
            }
        }
        if let Some(w) = self.serve.next_wake(self.now) {
            t = t.min(w);
        }
        if !self.downstreams.is_empty() {
            t = t.min(self.announce_due);
        }
        if let Some(r) = self.retry_tracker {
            t = t.min(r);
        }
        // Starved (nothing in flight) with room to request more: wake when the next chunk should exist.
        if !inflight
            && self.frontier < self.low + self.cfg.window - 1
            && let Some((at, seq)) = self.joined
        {
            let next = self.live_estimate(self.now).saturating_sub(seq) + 1;
            t = t.min(at + self.cfg.chunk * next as u32);
        }
        t.max(self.now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Publisher;

    #[test]
    fn an_announce_past_the_last_sequence_number_is_a_strike_not_an_overflow() {
        let publisher = Publisher::from_seed([1; 32]);
        let cfg = ViewerConfig::new(
            Layer::High,
            Bitrate::from_mbps(4),
            Duration::from_millis(250),
            Bitrate::from_mbps(4),
        );
        let mut v = Viewer::new(
            PeerId(1),
            PeerId(0),
            Verifier::new(publisher.public_key()),
            cfg,
            Time::ZERO,
        );
        v.join(Time::ZERO, 10);
        v.add_upstream(Time::ZERO, PeerId(2), Bitrate::from_mbps(4));
        let hostile = MeshMsg::Announce {
            layer: Layer::High,
            base: u64::MAX - 3,
            bits: 16,
            bitmap: vec![0xff, 0xff],
        };
        let mut events = vec![];
        for _ in 0..2 {
            v.handle_input(Time::from_millis(5), PeerId(2), hostile.clone());
            loop {
                match v.poll_output() {
                    Output::Event(e) => events.push(e),
                    Output::Send { .. } => {}
                    Output::Timeout(_) => break,
                }
            }
        }
        assert!(events.contains(&MeshEvent::Penalised { peer: PeerId(2) }));
        assert!(events.contains(&MeshEvent::Banned { peer: PeerId(2) }));
        assert!(v.scheduler().is_banned(PeerId(2)));
    }
}
