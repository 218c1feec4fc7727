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
//! **Leaving gracefully** (make-before-break, docs/mesh.md "Leaving"): a viewer that stops watching
//! tells the tracker first ([`Viewer::leave`]: it asks for no more upstreams) and keeps serving
//! what its downstreams ask until they have stopped asking ([`Viewer::drained`]); a downstream
//! told its upstream is leaving ([`Viewer::upstream_leaving`]) asks it nothing new but keeps what
//! it already asked of it, while the tracker's new grants come in.
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
use crate::serve::{Priority, ServeQueue, ServeRequest, WHOLE, share_bytes, share_mask};
use crate::slice::{
    Accepted, SliceAssembler, SliceOutboard, SliceProof, encode_slice, slice_count,
};
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
    /// Fetch chunks as verified slices (`SliceRequest`/`Slice`) and forward each slice as soon as
    /// it verifies, with this proof; `None`: whole chunks (`Request`/`Data`). Either way the viewer
    /// answers both kinds of request.
    pub slices: Option<SliceProof>,
    /// In slice mode, how many upstreams share each chunk's slices (each asked for a part).
    pub slice_parts: u8,
    /// In slice mode with parts: when one part is complete and another has sent nothing, ask the
    /// quick upstream for the late part's slices (a failed part is re-asked at once either way).
    pub repair_late_parts: bool,
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
            slices: None,
            slice_parts: 2,
            repair_late_parts: true,
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
    /// Slices verified and kept, forwarded, and refused (a bad proof: the sender was struck).
    pub slices_received: u64,
    pub slices_served: u64,
    pub bad_slices: u64,
    /// Per-part end-game: a late or failed part's missing slices re-asked from another upstream.
    pub part_repairs: u64,
}

#[derive(Clone, Debug)]
struct Slot {
    seq: u64,
    state: SlotState,
    hops: u8,
    asked: [Option<PeerId>; 3],
    sent_at: Time,
    escalated: bool,
    /// Slices verified so far (slice mode; bit `i` = slice `i`).
    got: u128,
    /// Split over this many upstreams (slice mode): `asked[j]` carries the slices `i % parts ==
    /// j`; 0: not split (`asked` are whole-chunk or all-missing-slices askers).
    parts: u8,
    /// A late part's missing slices were re-asked from another upstream (cancel the rest once in).
    repaired: bool,
}

impl Slot {
    fn empty() -> Slot {
        Slot {
            seq: u64::MAX,
            state: SlotState::Dropped,
            hops: 0,
            asked: [None; 3],
            sent_at: Time::ZERO,
            escalated: false,
            got: 0,
            parts: 0,
            repaired: false,
        }
    }
    fn asked(&self, p: PeerId) -> bool {
        self.asked.contains(&Some(p))
    }
}

/// A chunk's slices with their proofs ([`SliceProof::Bao`]): the assembler while it is incomplete,
/// the encoded slices for serving (kept once complete).
#[derive(Debug)]
struct BaoSlot {
    seq: u64,
    asm: Option<SliceAssembler>,
    enc: Vec<Option<Arc<[u8]>>>,
}

/// One chunk slot as [`Viewer::slot_view`] shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotView {
    pub state: SlotState,
    /// The upstreams (or the root) a request for it is out to.
    pub asked: [Option<PeerId>; 3],
    /// Re-asked (end-game) or asked urgently already.
    pub escalated: bool,
    /// When the request still out was sent.
    pub requested_at: Option<Time>,
    /// Upstreams known (from their announcements) to hold it.
    pub holders: u8,
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
    /// Slices with their proofs, parallel to `slots` ([`SliceProof::Bao`] only; empty until used).
    bao: Vec<Option<Box<BaoSlot>>>,
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
    granted_by_root: Bitrate,
    /// We announced that we leave: serving only, no more upstreams asked for.
    leaving: bool,
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
    /// Relay from `budget` (in the app: the bandwidth service's limiter, shared with everything
    /// else the client sends) instead of a bucket of its own at `relay_budget`. Before any request
    /// is queued.
    pub fn with_upload_budget(mut self, budget: Box<dyn crate::serve::UploadBudget>) -> Self {
        self.serve = ServeQueue::with_budget(budget, Priority::BufferHealth);
        self
    }

    pub fn new(id: PeerId, root: PeerId, verifier: Verifier, cfg: ViewerConfig, now: Time) -> Self {
        let window = cfg.window.max(8);
        Viewer {
            id,
            root,
            verifier,
            slots: vec![Slot::empty(); window as usize],
            chunks: vec![None; window as usize],
            bao: Vec::new(),
            low: 0,
            frontier: 0,
            joined: None,
            newest: None,
            sched: Scheduler::new(),
            serve: ServeQueue::new(
                cfg.relay_budget,
                cfg.chunk.max(Duration::from_millis(250)),
                now,
                Priority::BufferHealth,
            ),
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
            granted_by_root: Bitrate::ZERO,
            leaving: false,
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
    /// What this viewer knows of chunk `seq` while it is in the window (reports that explain a
    /// skip read it): `None` once the slot holds another chunk.
    pub fn slot_view(&self, seq: u64) -> Option<SlotView> {
        let s = &self.slots[ix(seq, self.cfg.window)];
        (s.seq == seq).then(|| SlotView {
            state: s.state,
            asked: s.asked,
            escalated: s.escalated,
            requested_at: (s.state == SlotState::Requested).then_some(s.sent_at),
            holders: self.sched.availability(seq),
        })
    }
    /// The root seed's peer id (the fallback upstream).
    pub fn root(&self) -> PeerId {
        self.root
    }
    /// The newest chunk the viewer believes the root has published (its live edge).
    pub fn live_edge(&self) -> u64 {
        self.live_estimate(self.now)
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
            self.granted_by_root = grant;
        }
        if peer != self.id && self.sched.add(peer, grant) {
            self.rebalance_root_share();
            self.fill(now);
            self.pick_missing(now);
        }
    }

    /// `peer` is gone (left, or its grant was withdrawn): stop asking it, stop serving it, re-route.
    pub fn peer_gone(&mut self, now: Time, peer: PeerId) {
        self.now = now;
        if peer == self.root {
            self.granted_by_root = Bitrate::ZERO;
        }
        let was_up = self.sched.remove(peer);
        self.serve.forget(peer);
        self.downstreams.retain(|(p, _)| *p != peer);
        if was_up {
            for i in 0..self.slots.len() {
                let seq = self.slots[i].seq;
                if self.repair_parts(now, seq, peer, None) {
                    continue;
                }
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

    /// The tracker says `peer`, one of our upstreams, is leaving: keep asking it (it serves
    /// during its grace) only until the grants of the others cover the stream, keep what is
    /// asked of it already, and ask the tracker for more if we are short. Its links closing
    /// later ([`Viewer::peer_gone`]) removes it.
    pub fn upstream_leaving(&mut self, now: Time, peer: PeerId) {
        self.now = now;
        if peer == self.root || peer == self.id || !self.sched.set_leaving(peer) {
            return;
        }
        self.maybe_need_upstreams();
        self.pick_missing(now);
    }

    /// We leave (announced to the tracker): from now on we only serve. We ask for no more
    /// upstreams and extend our frontier no further (what we fetch would take upload the
    /// tracker has granted to others already): we serve what we hold and what we had asked for,
    /// and answer `absent` for the rest at once, so the asker goes elsewhere.
    pub fn leave(&mut self, now: Time) {
        self.now = now;
        self.leaving = true;
        self.retry_tracker = None;
    }

    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// Leaving: nothing is queued to serve and no downstream has asked anything for `quiet`
    /// (each has moved to its new upstreams), so our links can close without costing anyone.
    pub fn drained(&self, now: Time, quiet: Duration) -> bool {
        let last_ask = self.downstreams.iter().map(|(_, t)| *t).max();
        self.serve.ready_len() == 0
            && self.serve.held_len() == 0
            && last_ask.is_none_or(|t| now.since(t) >= quiet)
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
            MeshMsg::Cancel { seq, .. } => self.serve.cancel(from, seq),
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
            MeshMsg::SliceRequest {
                layer,
                seq,
                part,
                parts,
                deadline_ms,
                mask,
            } if layer == self.cfg.layer => {
                self.on_request_share(now, from, seq, deadline_ms, Some((part, parts, mask)))
            }
            MeshMsg::SliceRequest { layer, seq, .. } => self.send(
                from,
                MeshMsg::Absent {
                    layer,
                    seq,
                    reason: AbsentReason::NotHeld,
                },
            ),
            MeshMsg::Slice {
                record,
                hops,
                index,
                encoded,
            } => self.on_slice(now, from, record, hops, index as u32, encoded),
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
                s.asked = [None; 3];
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
        if self.cfg.slices == Some(SliceProof::Bao) {
            self.bao_from_payload(seq, &payload);
        }
        let slot = &mut self.slots[idx];
        slot.hops = hops.saturating_add(1);
        self.complete(now, from, record, payload, true);
    }

    /// Chunk `record` is in and verified (whole, or its last slice from `from`): store it, cancel
    /// the other requests, serve what waits for it, and move the player on.
    fn complete(
        &mut self,
        now: Time,
        from: PeerId,
        record: Arc<ChunkRecord>,
        payload: Arc<[u8]>,
        cancel_others: bool,
    ) {
        let seq = record.seq;
        let idx = ix(seq, self.cfg.window);
        let slot = &mut self.slots[idx];
        let elapsed = now.since(slot.sent_at);
        // A split chunk's upstreams were credited part by part (`on_slice`).
        let asked_from = slot.asked(from) && slot.parts < 2;
        let others: [Option<PeerId>; 3] = slot.asked.map(|a| a.filter(|p| *p != from));
        slot.state = SlotState::Have;
        slot.asked = [None; 3];
        let bytes = record.bytes;
        self.chunks[idx] = Some((record, payload));
        if cancel_others {
            for p in others.into_iter().flatten() {
                self.send(
                    p,
                    MeshMsg::Cancel {
                        layer: self.cfg.layer,
                        seq,
                    },
                );
            }
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

    /// The slices of a chunk that came whole, encoded for serving slice requests later.
    fn bao_from_payload(&mut self, seq: u64, payload: &[u8]) {
        let Ok(ob) = SliceOutboard::new(payload) else {
            return;
        };
        let enc = (0..ob.slices())
            .map(|i| encode_slice(payload, &ob, i).ok().map(Arc::from))
            .collect();
        let idx = ix(seq, self.cfg.window);
        self.bao_init();
        self.bao[idx] = Some(Box::new(BaoSlot {
            seq,
            asm: None,
            enc,
        }));
    }

    fn bao_init(&mut self) {
        if self.bao.is_empty() {
            self.bao.resize_with(self.slots.len(), || None);
        }
    }

    /// The record of chunk `seq` if we hold any verified part of it.
    fn record_of(&self, seq: u64) -> Option<Arc<ChunkRecord>> {
        let idx = ix(seq, self.cfg.window);
        if let Some((r, _)) = self.chunks[idx].as_ref().filter(|(r, _)| r.seq == seq) {
            return Some(r.clone());
        }
        match self.bao.get(idx) {
            Some(Some(b)) if b.seq == seq => b.asm.as_ref().map(|a| a.record().clone()),
            _ => None,
        }
    }

    /// The encoded slice `index` of chunk `seq`, if we have it verified.
    fn encoded_of(&mut self, seq: u64, index: u32) -> Option<Arc<[u8]>> {
        let idx = ix(seq, self.cfg.window);
        let proof = self.cfg.slices.unwrap_or(SliceProof::Bao);
        match proof {
            SliceProof::StandIn => self.chunks[idx]
                .as_ref()
                .filter(|(r, _)| r.seq == seq)
                .map(|(_, p)| p.clone()),
            SliceProof::Bao => {
                if let Some(Some(b)) = self.bao.get(idx)
                    && b.seq == seq
                {
                    return b.enc.get(index as usize).cloned().flatten();
                }
                if !self.has(seq) {
                    return None;
                }
                let payload = self.chunks[idx].as_ref()?.1.clone();
                self.bao_from_payload(seq, &payload);
                self.bao[idx]
                    .as_ref()
                    .and_then(|b| b.enc.get(index as usize).cloned().flatten())
            }
        }
    }

    /// A slice from `from`: checked (signature, then its proof) before anything else; kept, and
    /// forwarded at once to whoever waits for it; the chunk completes with its last slice.
    fn on_slice(
        &mut self,
        now: Time,
        from: PeerId,
        record: Arc<ChunkRecord>,
        hops: u8,
        index: u32,
        encoded: Arc<[u8]>,
    ) {
        if record.layer != self.cfg.layer {
            return;
        }
        let seq = record.seq;
        let proof = self.cfg.slices.unwrap_or(SliceProof::Bao);
        let w = self.cfg.window;
        let idx = ix(seq, w);
        let in_window = seq >= self.low && seq < self.low + w;
        let ok = self.verifier.verify_record(&record).is_ok()
            && index < slice_count(record.bytes)
            && match proof {
                SliceProof::StandIn => proof.check(&record, index, &encoded).is_ok(),
                // The assembler checks the proof (below); outside the window only the proof.
                SliceProof::Bao if !in_window => proof.check(&record, index, &encoded).is_ok(),
                SliceProof::Bao => true,
            };
        if !ok {
            self.bad_slice(now, from, seq);
            return;
        }
        if !in_window {
            self.stats.duplicates += 1;
            return;
        }
        if self.slots[idx].seq != seq {
            self.slots[idx] = Slot {
                seq,
                state: SlotState::Missing,
                ..Slot::empty()
            };
        }
        let bit = 1u128 << index;
        if self.slots[idx].state == SlotState::Have || self.slots[idx].got & bit != 0 {
            self.stats.duplicates += 1;
            return;
        }
        if proof == SliceProof::Bao {
            self.bao_init();
            let fresh = !matches!(&self.bao[idx], Some(b) if b.seq == seq && b.asm.is_some());
            if fresh {
                let Ok(asm) = SliceAssembler::new(record.clone()) else {
                    self.bad_slice(now, from, seq);
                    return;
                };
                let n = asm.count() as usize;
                self.bao[idx] = Some(Box::new(BaoSlot {
                    seq,
                    asm: Some(asm),
                    enc: vec![None; n],
                }));
            }
            let Some(b) = self.bao[idx].as_mut() else {
                return;
            };
            let Some(asm) = b.asm.as_mut() else { return };
            match asm.accept(from, &record, index, &encoded) {
                Ok(Accepted::New) => b.enc[index as usize] = Some(encoded.clone()),
                Ok(Accepted::Duplicate) => {
                    self.stats.duplicates += 1;
                    return;
                }
                Err(_) => {
                    self.bad_slice(now, from, seq);
                    return;
                }
            }
        } else if self.chunks[idx].as_ref().is_none_or(|(r, _)| r.seq != seq) {
            // The stand-in body is the chunk's bytes (checked against the hash above).
            self.chunks[idx] = Some((record.clone(), encoded.clone()));
        }
        self.stats.slices_received += 1;
        let slot = &mut self.slots[idx];
        slot.got |= bit;
        slot.hops = slot.hops.max(hops.saturating_add(1));
        let n = slice_count(record.bytes);
        let done = slot.got.count_ones() >= n;
        if slot.parts > 1 && slot.state == SlotState::Requested {
            // The part this slice belongs to is complete: its upstream delivered its share (a
            // per-part throughput sample, so a slow part's upstream is asked for less).
            let j = (index % slot.parts as u32) as usize;
            let all = if n >= 128 {
                u128::MAX
            } else {
                (1u128 << n) - 1
            };
            let share = share_mask(j as u8, slot.parts, all);
            if share & !slot.got == 0
                && let Some(up) = slot.asked[j]
            {
                let elapsed = now.since(slot.sent_at);
                let bytes = share_bytes(share, record.bytes);
                self.sched.on_delivery(up, bytes, elapsed);
            }
        }
        let slot = &self.slots[idx];
        let escalated = slot.escalated || slot.repaired;
        self.serve.on_slice(seq, record.bytes, index);
        if !done && self.cfg.repair_late_parts {
            self.repair_lagging_part(now, seq, index);
        }
        if done {
            let payload = match proof {
                SliceProof::StandIn => encoded,
                SliceProof::Bao => {
                    let asm = self.bao[idx].as_mut().and_then(|b| b.asm.take());
                    match asm.and_then(|a| a.finish()) {
                        Some(p) => p,
                        None => return,
                    }
                }
            };
            self.sched.note_have(from, seq);
            self.complete(now, from, record, payload, escalated);
        }
    }

    /// Per-part end-game, early: slice `index` completed its part of split chunk `seq`, and
    /// another part has not sent a single slice yet. That part's upstream is a whole share
    /// behind; the quick one is asked for what the late part misses (whichever comes first is
    /// kept; the rest is cancelled when the chunk completes).
    fn repair_lagging_part(&mut self, now: Time, seq: u64, index: u32) {
        let s = &self.slots[ix(seq, self.cfg.window)];
        if s.parts < 2 || s.repaired || s.escalated || s.state != SlotState::Requested {
            return;
        }
        let (parts, asked, got) = (s.parts, s.asked, s.got);
        let missing = self.missing_slices(seq);
        let all = missing | got;
        let j = (index % parts as u32) as usize;
        let Some(quick) = asked[j] else {
            return;
        };
        if share_mask(j as u8, parts, missing) != 0 {
            return;
        }
        for (k, up) in asked[..parts as usize].iter().enumerate() {
            let share = share_mask(k as u8, parts, all);
            if k != j
                && share & got == 0
                && let Some(late) = up.filter(|p| *p != quick)
            {
                self.repair_parts(now, seq, late, Some(quick));
                return;
            }
        }
    }

    /// A slice that does not verify: refused before it is kept or forwarded; its sender is struck
    /// as for a bad chunk and asked for nothing more of this chunk.
    fn bad_slice(&mut self, now: Time, from: PeerId, seq: u64) {
        self.stats.bad_slices += 1;
        if self.repair_parts(now, seq, from, None) {
            self.penalise(from);
            self.pick_missing(now);
            return;
        }
        let w = self.cfg.window;
        let s = &mut self.slots[ix(seq, w)];
        if s.seq == seq && s.state == SlotState::Requested && s.asked(from) {
            for a in s.asked.iter_mut() {
                if *a == Some(from) {
                    *a = None;
                }
            }
            if s.asked.iter().all(|a| a.is_none()) {
                s.state = SlotState::Missing;
                s.escalated = false;
            }
        }
        self.penalise(from);
        self.pick_missing(now);
    }

    fn on_request(&mut self, now: Time, from: PeerId, seq: u64, deadline_ms: u32) {
        self.on_request_share(now, from, seq, deadline_ms, None)
    }

    /// A request for chunk `seq`, whole or (`share`: part, parts, mask) a share of its slices.
    fn on_request_share(
        &mut self,
        now: Time,
        from: PeerId,
        seq: u64,
        deadline_ms: u32,
        share: Option<(u8, u8, u128)>,
    ) {
        match self.downstreams.iter_mut().find(|(p, _)| *p == from) {
            Some(d) => d.1 = now,
            None => {
                self.downstreams.push((from, now));
                let a = self.mine.announce(self.cfg.layer);
                self.send(from, a);
            }
        }
        let deadline = now + Duration::from_millis(deadline_ms as u64);
        let req = match share {
            None => ServeRequest::whole(from, seq, deadline, u32::MAX / 2),
            Some((part, parts, mask)) => {
                ServeRequest::part(from, seq, deadline, u32::MAX / 2, part, parts).with_mask(mask)
            }
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
            let whole = self.bytes_of(seq);
            let b = match share {
                None => whole,
                Some(_) => share_bytes(req.share_mask(), whole),
            };
            if self
                .serve
                .wait_for(self.serve.backlog_bytes() + b as u64)
                .is_none_or(|w| w > Duration::from_millis(deadline_ms as u64))
            {
                self.send(
                    from,
                    MeshMsg::Absent {
                        layer,
                        seq,
                        reason: AbsentReason::Busy,
                    },
                );
            } else if share.is_some() {
                self.serve.push_ready_part(req, whole);
            } else {
                self.serve.push_ready(req, b);
            }
        } else if seq < self.low + self.cfg.window
            && seq <= self.live_estimate(now) + self.cfg.lookahead + 2
            // Leaving, we fetch nothing new: only what we had asked for already is held.
            && (!self.leaving || seq < self.frontier)
        {
            let got = {
                let s = &self.slots[ix(seq, self.cfg.window)];
                if s.seq == seq { s.got } else { 0 }
            };
            if self.serve.push_held(req) {
                // Slices of it we already verified go at once; the rest as they arrive.
                if share.is_some()
                    && got != 0
                    && let Some(rec) = self.record_of(seq)
                {
                    let whole = rec.bytes;
                    for i in 0..slice_count(whole) {
                        if got & (1u128 << i) != 0 {
                            self.serve.on_slice(seq, whole, i);
                        }
                    }
                }
            } else {
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
        if from != self.root && self.repair_parts(now, seq, from, None) {
            self.sched.on_failure(from);
            self.pick_missing(now);
            return;
        }
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
        let (mut staying, mut leaving) = (Bitrate::ZERO, Bitrate::ZERO);
        for u in self.sched.upstreams().iter().filter(|u| u.peer != root) {
            if u.leaving {
                leaving = leaving + u.grant;
            } else {
                staying = staying + u.grant;
            }
        }
        // Make before break: leaving upstreams keep their share until the others cover the
        // stream (they still serve; the root would only say busy to a whole audience at once).
        let use_leaving = staying < self.cfg.stream_rate && leaving > Bitrate::ZERO;
        self.sched.set_use_leaving(use_leaving);
        let mesh = if use_leaving {
            staying + leaving
        } else {
            staying
        };
        let short = self.cfg.stream_rate - mesh;
        let root_grant = self.granted_by_root.max(short);
        if root_grant > Bitrate::ZERO {
            self.sched.add(root, root_grant);
        } else {
            self.sched.remove(root);
        }
    }

    fn maybe_need_upstreams(&mut self) {
        self.rebalance_root_share();
        if self.leaving {
            return;
        }
        let root = self.root;
        let have = (self
            .sched
            .upstreams()
            .iter()
            .filter(|u| u.peer != root && !u.leaving)
            .map(|u| u.grant)
            .sum::<Bitrate>()
            + self.granted_by_root)
            .bps();
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
        // Whole chunks: two askers at most (the frontier's and the end-game's); slices: the parts'
        // upstreams plus the end-game's.
        let cap = if self.cfg.slices.is_some() { 3 } else { 2 };
        match s.asked[..cap].iter_mut().find(|a| a.is_none()) {
            Some(a) => *a = Some(to),
            None => s.asked[cap - 1] = Some(to),
        }
        if s.state != SlotState::Requested {
            s.sent_at = now;
        }
        s.state = SlotState::Requested;
        // From here on the askers are not parts: each was asked for every slice still missing.
        s.parts = 0;
        let missing = !s.got;
        if to == self.root {
            self.stats.fallback_requests += 1;
            self.out
                .push_back(Output::Event(MeshEvent::Fallback { seq }));
        }
        let msg = match self.cfg.slices {
            // In slice mode a single upstream is asked for all of the chunk's slices we miss.
            Some(_) => MeshMsg::SliceRequest {
                layer: self.cfg.layer,
                seq,
                part: 0,
                parts: 1,
                deadline_ms,
                mask: missing,
            },
            None => MeshMsg::Request {
                layer: self.cfg.layer,
                seq,
                deadline_ms,
            },
        };
        self.send(to, msg);
    }

    /// Slice mode: ask up to `slice_parts` different upstreams (weighted as for whole chunks) for
    /// one part each of chunk `seq`'s slices, so weak upstreams carry a share of every chunk.
    fn request_split(&mut self, now: Time, seq: u64) {
        let want = self.cfg.slice_parts.clamp(1, 3) as usize;
        let mut ups: [Option<PeerId>; 3] = [None; 3];
        let mut k = 0;
        for _ in 0..want * 2 {
            let Some(u) = self.sched.choose(None) else {
                break;
            };
            if !ups.contains(&Some(u)) {
                ups[k] = Some(u);
                k += 1;
                if k == want {
                    break;
                }
            }
        }
        if k <= 1 {
            let up = ups[0].unwrap_or(self.root);
            self.request(now, seq, up);
            return;
        }
        let deadline_ms = self.deadline_ms(now, seq);
        let w = self.cfg.window;
        let s = &mut self.slots[ix(seq, w)];
        if s.seq != seq {
            *s = Slot {
                seq,
                ..Slot::empty()
            };
        }
        s.asked = ups;
        s.sent_at = now;
        s.state = SlotState::Requested;
        s.parts = k as u8;
        s.repaired = false;
        let missing = !s.got;
        for (j, up) in ups[..k].iter().enumerate() {
            let Some(to) = *up else { continue };
            if to == self.root {
                self.stats.fallback_requests += 1;
                self.out
                    .push_back(Output::Event(MeshEvent::Fallback { seq }));
            }
            self.send(
                to,
                MeshMsg::SliceRequest {
                    layer: self.cfg.layer,
                    seq,
                    part: j as u8,
                    parts: k as u8,
                    deadline_ms,
                    mask: missing,
                },
            );
        }
    }

    /// The slices of chunk `seq` we still miss (bit `i` = slice `i`; all ones while its size is
    /// unknown).
    fn missing_slices(&self, seq: u64) -> u128 {
        let s = &self.slots[ix(seq, self.cfg.window)];
        let got = if s.seq == seq { s.got } else { 0 };
        let all = match self.record_of(seq) {
            Some(r) if slice_count(r.bytes) < 128 => (1u128 << slice_count(r.bytes)) - 1,
            _ => u128::MAX,
        };
        all & !got
    }

    /// Per-part end-game: the upstream `from` of one or more parts of split chunk `seq` failed
    /// (absent, busy, gone, banned) or lags: ask `to` (or, if `None`, another upstream) for just
    /// the slices those parts still miss, at once, instead of waiting for the chunk's end-game
    /// near its deadline. False if nobody else can be asked (the caller falls back to the
    /// whole-chunk rules).
    fn repair_parts(&mut self, now: Time, seq: u64, from: PeerId, to: Option<PeerId>) -> bool {
        let w = self.cfg.window;
        let s = &self.slots[ix(seq, w)];
        if s.seq != seq || s.state != SlotState::Requested || s.parts < 2 || !s.asked(from) {
            return false;
        }
        let (parts, asked) = (s.parts, s.asked);
        let missing = self.missing_slices(seq);
        let mut want = 0u128;
        for (j, up) in asked[..parts as usize].iter().enumerate() {
            if *up == Some(from) {
                want |= share_mask(j as u8, parts, missing);
            }
        }
        if want == 0 {
            return true;
        }
        let alt = to.or_else(|| {
            // A sibling part's upstream that delivered its whole share is quick and has the
            // chunk flowing; otherwise any other upstream (weighted as for fresh requests).
            let done = (0..parts as usize).find(|&j| {
                asked[j].is_some_and(|p| p != from && p != self.root)
                    && share_mask(j as u8, parts, missing) == 0
            });
            done.and_then(|j| asked[j])
                .or_else(|| {
                    (0..4)
                        .filter_map(|_| self.sched.choose(Some(from)))
                        .find(|p| !asked.contains(&Some(*p)))
                })
                // Else a sibling part's upstream, still busy with its own share.
                .or_else(|| {
                    asked[..parts as usize]
                        .iter()
                        .flatten()
                        .copied()
                        .find(|p| *p != from)
                })
        });
        let Some(alt) = alt.filter(|p| *p != from) else {
            return false;
        };
        let s = &mut self.slots[ix(seq, w)];
        for a in s.asked[..parts as usize].iter_mut() {
            if *a == Some(from) {
                *a = Some(alt);
            }
        }
        if to.is_some() {
            // Merely late, still serving: keep it where the chunk's completion cancels it.
            if let Some(spare) = s.asked[parts as usize..].iter_mut().find(|a| a.is_none()) {
                *spare = Some(from);
            }
        }
        s.repaired = true;
        if alt == self.root {
            self.stats.fallback_requests += 1;
            self.out
                .push_back(Output::Event(MeshEvent::Fallback { seq }));
        }
        self.stats.part_repairs += 1;
        let deadline_ms = self.deadline_ms(now, seq);
        self.send(
            alt,
            MeshMsg::SliceRequest {
                layer: self.cfg.layer,
                seq,
                part: 0,
                parts: 1,
                deadline_ms,
                mask: want,
            },
        );
        true
    }

    /// Open frontier requests up to the live edge plus lookahead.
    fn fill(&mut self, now: Time) {
        if self.joined.is_none() || self.leaving {
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
            // Slices that arrived before we asked (forwarded ahead) are kept.
            let got = if self.slots[idx].seq == seq {
                self.slots[idx].got
            } else {
                0
            };
            self.slots[idx] = Slot {
                seq,
                state: SlotState::Missing,
                got,
                ..Slot::empty()
            };
            if self.cfg.slices.is_some() && self.cfg.slice_parts > 1 {
                self.request_split(now, seq);
                continue;
            }
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
            let mut first = s.asked[0].or(s.asked[1]);
            if s.parts > 1 {
                // Split: only the upstreams of parts still missing slices were slow.
                let (parts, asked) = (s.parts, s.asked);
                let missing = self.missing_slices(seq);
                first = None;
                for (j, up) in asked[..parts as usize].iter().enumerate() {
                    if share_mask(j as u8, parts, missing) != 0
                        && let Some(p) = *up
                    {
                        first = first.or(Some(p));
                        self.sched.on_failure(p);
                    }
                }
            } else if let Some(f) = first {
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
        self.serve.release(now, &mut out);
        for r in out.iter() {
            if r.slice != WHOLE {
                let s = &self.slots[ix(r.seq, self.cfg.window)];
                let held = s.state == SlotState::Have || s.got & (1u128 << r.slice) != 0;
                if s.seq != r.seq || !held {
                    continue;
                }
                let hops = s.hops;
                let Some(record) = self.record_of(r.seq) else {
                    continue;
                };
                let Some(encoded) = self.encoded_of(r.seq, r.slice as u32) else {
                    continue;
                };
                self.stats.bytes_served += r.cost as u64;
                self.stats.slices_served += 1;
                self.out.push_back(Output::Send {
                    to: r.to,
                    msg: MeshMsg::Slice {
                        record,
                        hops,
                        index: r.slice,
                        encoded,
                    },
                });
                continue;
            }
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
            // Every slot jumped over is a skip, as a deadline drop is: continuity counts them.
            for seq in self.player.jump_to(now, low) {
                self.out.push_back(Output::Event(MeshEvent::Skipped {
                    seq,
                    at: now,
                    jump: true,
                }));
            }
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
    use crate::chunker::Chunk;
    use crate::manifest::Publisher;
    use crate::root::RootSeed;
    use crate::slice::{SliceOutboard, encode_slice};

    fn slice_viewer(id: u32, publisher: &Publisher) -> Viewer {
        let mut cfg = ViewerConfig::new(
            Layer::High,
            Bitrate::from_mbps(4),
            Duration::from_millis(250),
            Bitrate::from_mbps(20),
        );
        cfg.slices = Some(SliceProof::Bao);
        cfg.slice_parts = 1;
        Viewer::new(
            PeerId(id),
            PeerId(0),
            Verifier::new(publisher.public_key()),
            cfg,
            Time::ZERO,
        )
    }

    /// Every message sent by the root (peer 0) or a viewer, delivered at once, in order, until
    /// nothing moves; returns (from, to, msg, whether the sender then held the chunk `watch`).
    fn pump(
        now: Time,
        root: &mut RootSeed,
        vs: &mut [Viewer],
        watch: u64,
    ) -> Vec<(u32, u32, MeshMsg, bool)> {
        let mut log = vec![];
        let mut queue = VecDeque::new();
        loop {
            while let Output::Send { to, msg } = root.poll_output() {
                queue.push_back((0u32, to, msg, true));
            }
            for v in vs.iter_mut() {
                loop {
                    match v.poll_output() {
                        Output::Send { to, msg } => {
                            queue.push_back((v.id().0, to, msg, v.has(watch)))
                        }
                        Output::Event(_) => {}
                        Output::Timeout(_) => break,
                    }
                }
            }
            // One message at a time, so a relay's answer to it is seen before the next arrives.
            let Some((from, to, msg, had)) = queue.pop_front() else {
                return log;
            };
            if to.0 == 0 {
                root.handle_input(now, PeerId(from), msg.clone());
            } else if let Some(v) = vs.iter_mut().find(|v| v.id() == to) {
                v.handle_input(now, PeerId(from), msg.clone());
            }
            log.push((from, to.0, msg, had));
        }
    }

    #[test]
    fn a_relay_forwards_each_verified_slice_before_its_chunk_is_complete() {
        let publisher = Publisher::from_seed([4; 32]);
        let mut root = RootSeed::new(
            Layer::High,
            Publisher::from_seed([4; 32]),
            Bitrate::from_mbps(100),
            32,
            Time::ZERO,
        );
        root.set_granted(PeerId(1), true);
        // A (1) is fed by the root, B (2) by A only.
        let mut vs = [slice_viewer(1, &publisher), slice_viewer(2, &publisher)];
        let t0 = Time::from_millis(1);
        vs[0].add_upstream(t0, PeerId(0), Bitrate::from_mbps(4));
        vs[0].join(t0, 0);
        vs[1].add_upstream(t0, PeerId(1), Bitrate::from_mbps(4));
        vs[1].join(t0, 0);
        let asked = pump(t0, &mut root, &mut vs, 1);
        assert!(
            asked.iter().any(|(f, t, m, _)| *f == 2
                && *t == 1
                && matches!(m, MeshMsg::SliceRequest { seq: 1, .. })),
            "B asks A for chunk 1's slices before A has any"
        );
        let body: Vec<u8> = (0..125_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let chunk = Chunk::new(
            Layer::High,
            1,
            250_000,
            250_000,
            true,
            Arc::from(body.clone()),
        );
        let t1 = Time::from_millis(250);
        root.publish(t1, &chunk, body.len() as u32);
        let log = pump(t1, &mut root, &mut vs, 1);
        let a_to_b: Vec<_> = log
            .iter()
            .filter(|(f, t, m, _)| *f == 1 && *t == 2 && matches!(m, MeshMsg::Slice { .. }))
            .collect();
        assert_eq!(a_to_b.len(), 8, "A forwards each of the 8 slices once");
        assert!(
            !a_to_b[0].3,
            "the first slice left A before A had the whole chunk (cut-through)"
        );
        assert!(vs[0].has(1) && vs[1].has(1));
        assert_eq!(&vs[1].chunk(1).unwrap().1[..], &body[..]);
        assert_eq!(vs[1].stats.slices_received, 8);
        assert_eq!(vs[0].stats.slices_served, 8);
        assert!(
            !log.iter()
                .any(|(_, _, m, _)| matches!(m, MeshMsg::Data { .. }))
        );
    }

    /// C (3) splits chunk 1 over upstreams 8 and 9; returns C, the chunk's slices, and which
    /// part each upstream was asked for.
    fn split_viewer() -> (Viewer, Vec<MeshMsg>, [(u32, u8); 2]) {
        let publisher = Publisher::from_seed([6; 32]);
        let body: Vec<u8> = (0..125_000u32).map(|i| (i % 251) as u8).collect();
        let chunk = Chunk::new(
            Layer::High,
            1,
            250_000,
            250_000,
            true,
            Arc::from(body.clone()),
        );
        let record = Arc::new(publisher.sign(&chunk, body.len() as u32));
        let ob = SliceOutboard::new(&body).unwrap();
        let slices = (0..8)
            .map(|i| MeshMsg::Slice {
                record: record.clone(),
                hops: 1,
                index: i as u16,
                encoded: encode_slice(&body, &ob, i).unwrap().into(),
            })
            .collect();
        let mut c = slice_viewer(3, &publisher);
        c.cfg.slice_parts = 2;
        let t0 = Time::from_millis(1);
        c.add_upstream(t0, PeerId(8), Bitrate::from_mbps(2));
        c.add_upstream(t0, PeerId(9), Bitrate::from_mbps(2));
        c.join(t0, 0);
        let mut parts = vec![];
        for (to, m) in drain_sends(&mut c) {
            if let MeshMsg::SliceRequest {
                seq: 1,
                part,
                parts: 2,
                mask: hum_proto::mesh::ALL_SLICES,
                ..
            } = m
            {
                parts.push((to, part));
            }
        }
        parts.sort();
        assert_eq!(
            parts.len(),
            2,
            "chunk 1 is split over both upstreams: {parts:?}"
        );
        (c, slices, [parts[0], parts[1]])
    }

    fn drain_sends(v: &mut Viewer) -> Vec<(u32, MeshMsg)> {
        let mut out = vec![];
        loop {
            match v.poll_output() {
                Output::Send { to, msg } => out.push((to.0, msg)),
                Output::Event(_) => {}
                Output::Timeout(_) => return out,
            }
        }
    }

    /// The slices `i % 2 == part` of an 8-slice chunk.
    fn share_of(part: u8) -> u128 {
        (0..8)
            .filter(|i| i % 2 == part as u32)
            .map(|i| 1u128 << i)
            .sum()
    }

    #[test]
    fn a_part_late_by_a_whole_share_is_re_asked_from_the_quick_upstream_by_mask() {
        let (mut c, slices, [(p8, part8), (p9, part9)]) = split_viewer();
        assert_eq!((p8, p9), (8, 9));
        let t1 = Time::from_millis(300);
        // Upstream 8 delivers its whole share; 9 has sent nothing.
        for i in (0..8).filter(|i| i % 2 == part8 as usize) {
            c.handle_input(t1, PeerId(8), slices[i].clone());
        }
        let asked: Vec<_> = drain_sends(&mut c)
            .into_iter()
            .filter_map(|(to, m)| match m {
                MeshMsg::SliceRequest {
                    seq: 1,
                    part: 0,
                    parts: 1,
                    mask,
                    ..
                } => Some((to, mask)),
                _ => None,
            })
            .collect();
        assert_eq!(
            asked,
            vec![(8, share_of(part9))],
            "only the late part's slices, from the quick upstream"
        );
        assert_eq!(c.stats.part_repairs, 1);
        for i in (0..8).filter(|i| i % 2 == part9 as usize) {
            c.handle_input(t1, PeerId(8), slices[i].clone());
        }
        assert!(c.has(1));
        let sent = drain_sends(&mut c);
        assert!(
            sent.iter()
                .any(|(to, m)| *to == 9 && matches!(m, MeshMsg::Cancel { seq: 1, .. })),
            "the late upstream is told to stop: {sent:?}"
        );
    }

    #[test]
    fn a_busy_part_is_re_asked_at_once_for_just_its_missing_slices() {
        let (mut c, slices, [(_, part8), (_, part9)]) = split_viewer();
        let t1 = Time::from_millis(300);
        // 9 sent one slice of its share, then says it is busy.
        let first = (0..8).find(|i| i % 2 == part9 as usize).unwrap();
        c.handle_input(t1, PeerId(9), slices[first].clone());
        c.handle_input(
            t1,
            PeerId(9),
            MeshMsg::Absent {
                layer: Layer::High,
                seq: 1,
                reason: AbsentReason::Busy,
            },
        );
        let asked: Vec<_> = drain_sends(&mut c)
            .into_iter()
            .filter_map(|(to, m)| match m {
                MeshMsg::SliceRequest { seq: 1, mask, .. } => Some((to, mask)),
                _ => None,
            })
            .collect();
        assert_eq!(asked, vec![(8, share_of(part9) & !(1u128 << first))]);
        assert_ne!(part8, part9);
        for (i, s) in slices.iter().enumerate() {
            if i != first {
                c.handle_input(t1, PeerId(8), s.clone());
            }
        }
        assert!(c.has(1));
    }

    #[test]
    fn a_bad_slice_is_refused_before_it_is_kept_or_forwarded_and_its_sender_struck() {
        let publisher = Publisher::from_seed([5; 32]);
        let body: Vec<u8> = (0..60_000u32).map(|i| (i % 253) as u8).collect();
        let chunk = Chunk::new(
            Layer::High,
            1,
            250_000,
            250_000,
            true,
            Arc::from(body.clone()),
        );
        let record = Arc::new(publisher.sign(&chunk, body.len() as u32));
        let ob = SliceOutboard::new(&body).unwrap();
        let mut c = slice_viewer(3, &publisher);
        let t0 = Time::from_millis(1);
        c.add_upstream(t0, PeerId(9), Bitrate::from_mbps(4));
        c.join(t0, 0);
        // A downstream (4) waits on C for the whole chunk's slices.
        c.handle_input(
            t0,
            PeerId(4),
            MeshMsg::SliceRequest {
                layer: Layer::High,
                seq: 1,
                part: 0,
                parts: 1,
                deadline_ms: 3000,
                mask: hum_proto::mesh::ALL_SLICES,
            },
        );
        while !matches!(c.poll_output(), Output::Timeout(_)) {}
        let slice = |i: u32, flip: bool| {
            let mut e = encode_slice(&body, &ob, i).unwrap();
            if flip {
                let n = e.len();
                e[n - 1] ^= 1;
            }
            MeshMsg::Slice {
                record: record.clone(),
                hops: 1,
                index: i as u16,
                encoded: e.into(),
            }
        };
        let t1 = Time::from_millis(300);
        c.handle_input(t1, PeerId(9), slice(0, false));
        c.handle_input(t1, PeerId(9), slice(1, true));
        let mut fwd = vec![];
        let mut events = vec![];
        loop {
            match c.poll_output() {
                Output::Send {
                    to,
                    msg: MeshMsg::Slice { index, .. },
                } => fwd.push((to.0, index)),
                Output::Send { .. } => {}
                Output::Event(e) => events.push(e),
                Output::Timeout(_) => break,
            }
        }
        assert_eq!(
            fwd,
            vec![(4, 0)],
            "the good slice went on, the bad one did not"
        );
        assert!(events.contains(&MeshEvent::Penalised { peer: PeerId(9) }));
        assert_eq!((c.stats.slices_received, c.stats.bad_slices), (1, 1));
        assert!(!c.has(1));
    }

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
