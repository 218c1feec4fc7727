//! On-demand mode: the viewers of a recording fetch its whole range from each other, rarest
//! first, with the relay's recording store as the root (docs/stream.md, "Recordings").
//!
//! Sans-IO like the rest of the mesh: time and messages are inputs, [`Output`]s come out
//! (`Send`, `Event`, `Timeout`), nothing here reads a clock or owns a socket. It speaks the live
//! mesh's messages ([`MeshMsg`]): `announce` (blocks of the whole range), `request`, `data`,
//! `absent`.
//!
//! - **What to fetch**: the chunks just after the playhead first, in order (playback needs
//!   them next); then every other missing chunk of the recording **rarest first** (fewest peers
//!   known to hold it), ties broken by a per-viewer seeded order, so viewers who start together
//!   fetch different chunks and then swap them.
//! - **From whom**: a peer that announced the chunk (up to `peer_inflight` requests each, the
//!   least loaded first), whenever; the root (up to `root_inflight`) only for chunks playback
//!   needs soon that no peer with room holds: the playhead's next chunk, and chunks due within
//!   `root_lookahead` of the playback clock (chunk `k` is due `k` chunk durations after the
//!   viewer joined). So the relay's store sends about one copy of the recording at the playing
//!   pace to the swarm's frontmost viewer, and the viewers behind it fetch from each other what
//!   the ones ahead hold. (Before that rule the root served any chunk no peer had announced:
//!   over loopback a joiner fetched the whole recording from the root before its peer links had
//!   opened, and peers carried nothing.)
//! - **Trust**: every chunk is checked against the streamer's signed record (signature, then
//!   BLAKE3 hash, layer, sequence number in range) before it is kept, played or served; a peer
//!   that sends `max_strikes` bad chunks is banned ([`MeshEvent::Banned`]).
//! - **Serving**: a peer's request is answered at once with the chunk (`data`) or `absent`; a
//!   viewer keeps serving after it holds everything, until the caller stops it.
//!
//! Memory: the whole recording's chunks as they arrive (a recording is played whole), one bit per
//! chunk per peer, two bytes per chunk of availability. `chunks` is capped at [`MAX_CHUNKS`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use hum_mesh::havemap::HaveMap;
use hum_mesh::manifest::Verifier;
use hum_mesh::{AbsentReason, ChunkRecord, Layer, MeshEvent, MeshMsg, Output, PeerId, Time};

/// The most chunks a recording may have here (72 h of 250 ms chunks).
pub const MAX_CHUNKS: u64 = 1 << 20;
/// Chunks per announcement (a 32-byte bitmap).
const BLOCK: u64 = 256;
/// The chunks after the playback clock's own that the root serves besides `root_lookahead`.
const URGENT: u64 = 1;

#[derive(Clone, Debug)]
pub struct OnDemandConfig {
    /// The layer the recording keeps (every record must carry it).
    pub layer: Layer,
    /// Chunks in the recording (sequence numbers `0..chunks`).
    pub chunks: u64,
    /// Requests in flight to one peer.
    pub peer_inflight: usize,
    /// Requests in flight to the root.
    pub root_inflight: usize,
    /// A request unanswered this long is given up (and may go to the root).
    pub request_timeout: Duration,
    /// A chunk's duration: chunk `k` is due `k * chunk` after the viewer joined.
    pub chunk: Duration,
    /// The root serves the chunks due this far ahead of the playback clock (and the playhead's
    /// next chunk); later ones come from peers, or from the root once they are this close.
    pub root_lookahead: Duration,
    /// Bad chunks from a peer before it is banned.
    pub max_strikes: u8,
    /// Seeds the order among equally rare chunks.
    pub seed: u64,
}

impl OnDemandConfig {
    pub fn new(layer: Layer, chunks: u64, seed: u64) -> Self {
        OnDemandConfig {
            layer,
            chunks: chunks.min(MAX_CHUNKS),
            peer_inflight: 4,
            root_inflight: 2,
            request_timeout: Duration::from_secs(3),
            chunk: Duration::from_millis(250),
            root_lookahead: Duration::from_secs(2),
            max_strikes: 2,
            seed,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct OnDemandStats {
    pub chunks_from_root: u64,
    pub chunks_from_peers: u64,
    pub bytes_from_root: u64,
    pub bytes_from_peers: u64,
    /// Chunks that failed verification (dropped; the sender got a strike).
    pub bad_chunks: u64,
    pub duplicates: u64,
    /// Chunks this viewer served to peers, and their payload bytes.
    pub chunks_served: u64,
    pub bytes_served: u64,
    /// Requests given up after `request_timeout`.
    pub timeouts: u64,
    /// Chunks the root does not have (skipped by the player).
    pub missing: u64,
    /// Requests sent to the root and to peers.
    pub root_requests: u64,
    pub peer_requests: u64,
}

struct PeerState {
    /// Bit `i`: the peer holds chunk `i` (from its announcements and what it sent us).
    has: Vec<u64>,
    inflight: usize,
    strikes: u8,
}

impl PeerState {
    fn has(&self, seq: u64) -> bool {
        self.has
            .get((seq / 64) as usize)
            .is_some_and(|w| w >> (seq % 64) & 1 == 1)
    }
    /// Set the bit; true if it was clear.
    fn set(&mut self, seq: u64) -> bool {
        let Some(w) = self.has.get_mut((seq / 64) as usize) else {
            return false;
        };
        let was = *w >> (seq % 64) & 1 == 1;
        *w |= 1 << (seq % 64);
        !was
    }
    fn clear(&mut self, seq: u64) -> bool {
        let Some(w) = self.has.get_mut((seq / 64) as usize) else {
            return false;
        };
        let was = *w >> (seq % 64) & 1 == 1;
        *w &= !(1 << (seq % 64));
        was
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Missing,
    Held,
    /// The root does not have it: the player skips it.
    Absent,
}

/// One viewer of a recording.
pub struct OnDemand {
    cfg: OnDemandConfig,
    root: PeerId,
    verifier: Verifier,
    slots: Vec<Slot>,
    store: BTreeMap<u64, hum_mesh::StoredChunk>,
    hops: BTreeMap<u64, u8>,
    /// How many peers (not the root) are known to hold each chunk.
    avail: Vec<u16>,
    /// Requests in flight: chunk -> (who, given up at).
    requested: BTreeMap<u64, (PeerId, Time)>,
    root_inflight: usize,
    /// Chunks a peer failed to deliver: the root may serve them.
    failed: BTreeSet<u64>,
    peers: BTreeMap<PeerId, PeerState>,
    banned: BTreeSet<PeerId>,
    next_play: u64,
    started: bool,
    /// When `pump` should run again because the root horizon moves (`Time::MAX`: nothing waits).
    next_tick: Time,
    /// When the viewer joined: the playback clock's zero.
    joined: Time,
    out: VecDeque<Output>,
    pub stats: OnDemandStats,
}

impl std::fmt::Debug for OnDemand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnDemand")
            .field("chunks", &self.cfg.chunks)
            .field("held", &self.store.len())
            .field("peers", &self.peers.len())
            .finish()
    }
}

fn mix(seed: u64, seq: u64) -> u64 {
    // splitmix64 of seed ^ seq: a fixed pseudo-random order per viewer.
    let mut z =
        (seed ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl OnDemand {
    /// A viewer of a recording of `cfg.chunks` chunks whose records `verifier` checks; `root`
    /// is the relay's store (it holds every chunk).
    pub fn new(root: PeerId, verifier: Verifier, mut cfg: OnDemandConfig, now: Time) -> Self {
        cfg.chunks = cfg.chunks.min(MAX_CHUNKS);
        let n = cfg.chunks as usize;
        let mut od = OnDemand {
            cfg,
            root,
            verifier,
            slots: vec![Slot::Missing; n],
            store: BTreeMap::new(),
            hops: BTreeMap::new(),
            avail: vec![0; n],
            requested: BTreeMap::new(),
            root_inflight: 0,
            failed: BTreeSet::new(),
            peers: BTreeMap::new(),
            banned: BTreeSet::new(),
            next_play: 0,
            started: false,
            next_tick: Time::MAX,
            joined: now,
            out: VecDeque::new(),
            stats: OnDemandStats::default(),
        };
        od.pump(now);
        od
    }

    pub fn chunks(&self) -> u64 {
        self.cfg.chunks
    }

    /// Every chunk held (or known absent at the root): playback reached the end.
    pub fn is_complete(&self) -> bool {
        self.next_play >= self.cfg.chunks
    }

    pub fn held(&self) -> u64 {
        self.store.len() as u64
    }

    pub fn has(&self, seq: u64) -> bool {
        self.store.contains_key(&seq)
    }

    pub fn chunk(&self, seq: u64) -> Option<&hum_mesh::StoredChunk> {
        self.store.get(&seq)
    }

    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.keys().copied()
    }

    /// A link to `peer` opened: tell it what we hold and fetch from it what it announces.
    pub fn add_peer(&mut self, now: Time, peer: PeerId) {
        if peer == self.root || self.banned.contains(&peer) || self.peers.contains_key(&peer) {
            return;
        }
        let words = self.cfg.chunks.div_ceil(64) as usize;
        self.peers.insert(
            peer,
            PeerState {
                has: vec![0; words],
                inflight: 0,
                strikes: 0,
            },
        );
        let blocks: BTreeSet<u64> = self.store.keys().map(|s| s / BLOCK).collect();
        for b in blocks {
            let msg = self.announce(b);
            self.out.push_back(Output::Send { to: peer, msg });
        }
        self.pump(now);
    }

    /// `peer`'s link closed (or it left): what it held and what we asked of it are forgotten.
    /// The root's link closing forgets what we asked of the root (asked again once it reopens
    /// or a peer has it) rather than waiting for those requests to time out.
    pub fn peer_gone(&mut self, now: Time, peer: PeerId) {
        if peer == self.root {
            let root = self.root;
            self.requested.retain(|_, (who, _)| *who != root);
            self.root_inflight = 0;
            self.pump(now);
            return;
        }
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        for (wi, w) in p.has.iter().enumerate() {
            let mut bits = *w;
            while bits != 0 {
                let i = wi as u64 * 64 + u64::from(bits.trailing_zeros());
                bits &= bits - 1;
                if let Some(a) = self.avail.get_mut(i as usize) {
                    *a = a.saturating_sub(1);
                }
            }
        }
        self.requested.retain(|_, (who, _)| *who != peer);
        self.pump(now);
    }

    pub fn handle_input(&mut self, now: Time, from: PeerId, msg: MeshMsg) {
        if self.banned.contains(&from) {
            return;
        }
        // A message on a link means the link is open, whichever side saw it open first: the
        // other side announces what it holds as soon as it does, and a viewer that dropped that
        // announcement (the peer not added yet) would never fetch from a peer that already
        // holds everything (it announces nothing more). Seen over loopback: the fourth viewer
        // fetched the whole recording from the relay with three open links to complete peers.
        if from != self.root && !self.peers.contains_key(&from) {
            self.add_peer(now, from);
        }
        match msg {
            MeshMsg::Announce {
                layer,
                base,
                bits,
                bitmap,
            } => {
                if layer != self.cfg.layer {
                    return;
                }
                // The same checks as the live mesh (window size, bitmap length, overflow).
                if HaveMap::from_announce(base, bits, &bitmap).is_err() {
                    return;
                }

                let Some(p) = self.peers.get_mut(&from) else {
                    return;
                };
                for i in 0..u64::from(bits) {
                    if bitmap[(i / 8) as usize] >> (i % 8) & 1 == 1 {
                        let seq = base + i;
                        if seq < self.cfg.chunks && p.set(seq) {
                            self.avail[seq as usize] = self.avail[seq as usize].saturating_add(1);
                        }
                    }
                }
                self.pump(now);
            }
            MeshMsg::Request { layer, seq, .. } => self.serve(from, layer, seq),
            MeshMsg::Data {
                record,
                hops,
                payload,
            } => self.on_data(now, from, record, hops, payload),
            MeshMsg::Absent { seq, .. } => {
                if self.requested.get(&seq).is_some_and(|(w, _)| *w == from) {
                    self.requested.remove(&seq);
                    if from == self.root {
                        self.root_inflight = self.root_inflight.saturating_sub(1);
                        if self.slots.get(seq as usize) == Some(&Slot::Missing) {
                            self.slots[seq as usize] = Slot::Absent;
                            self.stats.missing += 1;
                            self.play(now);
                        }
                    } else if let Some(p) = self.peers.get_mut(&from) {
                        p.inflight = p.inflight.saturating_sub(1);
                        if p.clear(seq) {
                            self.avail[seq as usize] = self.avail[seq as usize].saturating_sub(1);
                        }
                        self.failed.insert(seq);
                    }
                    self.pump(now);
                }
            }
            // Requests are answered at once: nothing to cancel. Slices are the live mesh's.
            MeshMsg::Cancel { .. } | MeshMsg::BufferHealth { .. } | MeshMsg::Slice { .. } => {}
            MeshMsg::SliceRequest { layer, seq, .. } => {
                self.out.push_back(Output::Send {
                    to: from,
                    msg: MeshMsg::Absent {
                        layer,
                        seq,
                        reason: AbsentReason::NotHeld,
                    },
                });
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Time) {
        let expired: Vec<(u64, PeerId)> = self
            .requested
            .iter()
            .filter(|(_, (_, t))| *t <= now)
            .map(|(s, (w, _))| (*s, *w))
            .collect();
        for (seq, who) in expired {
            self.requested.remove(&seq);
            self.stats.timeouts += 1;
            if who == self.root {
                self.root_inflight = self.root_inflight.saturating_sub(1);
            } else if let Some(p) = self.peers.get_mut(&who) {
                p.inflight = p.inflight.saturating_sub(1);
                self.failed.insert(seq);
            }
        }
        self.pump(now);
    }

    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        let next = self
            .requested
            .values()
            .map(|(_, t)| *t)
            .min()
            .unwrap_or(Time::MAX);
        Output::Timeout(next.min(self.next_tick))
    }

    /// The first chunk the root is not asked for yet at `now`: the playback clock's chunk plus
    /// `root_lookahead`. (Not the playhead's next chunk whenever it is missing: with a root that
    /// answers at once, that alone fetched the whole recording from the root in a chain.)
    fn root_horizon(&self, now: Time) -> u64 {
        let chunk = self.cfg.chunk.as_micros().max(1) as u64;
        let elapsed = now.0.saturating_sub(self.joined.0);
        let ahead = (self.cfg.root_lookahead.as_micros() as u64).div_ceil(chunk);
        (elapsed / chunk)
            .saturating_add(ahead)
            .saturating_add(URGENT)
    }

    /// When the root horizon moves next (the playback clock's next chunk boundary).
    fn tick_after(&self, now: Time) -> Time {
        let chunk = self.cfg.chunk.as_micros().max(1) as u64;
        let elapsed = now.0.saturating_sub(self.joined.0);
        Time(
            self.joined
                .0
                .saturating_add((elapsed / chunk + 1).saturating_mul(chunk)),
        )
    }

    fn announce(&self, block: u64) -> MeshMsg {
        let base = block * BLOCK;
        let end = (base + BLOCK).min(self.cfg.chunks);
        let bits = (end - base) as u16;
        let mut bitmap = vec![0u8; (bits as usize).div_ceil(8)];
        for s in base..end {
            if self.store.contains_key(&s) {
                let i = s - base;
                bitmap[(i / 8) as usize] |= 1 << (i % 8);
            }
        }
        MeshMsg::Announce {
            layer: self.cfg.layer,
            base,
            bits,
            bitmap,
        }
    }

    fn serve(&mut self, to: PeerId, layer: Layer, seq: u64) {
        if to == self.root {
            return;
        }
        let msg = match self.store.get(&seq) {
            Some((record, payload)) if layer == self.cfg.layer => {
                self.stats.chunks_served += 1;
                self.stats.bytes_served += payload.len() as u64;
                MeshMsg::Data {
                    record: record.clone(),
                    hops: self.hops.get(&seq).copied().unwrap_or(0).saturating_add(1),
                    payload: payload.clone(),
                }
            }
            _ => MeshMsg::Absent {
                layer,
                seq,
                reason: AbsentReason::NotHeld,
            },
        };
        self.out.push_back(Output::Send { to, msg });
    }

    fn on_data(
        &mut self,
        now: Time,
        from: PeerId,
        record: Arc<ChunkRecord>,
        hops: u8,
        payload: Arc<[u8]>,
    ) {
        let seq = record.seq;
        let ok = record.layer == self.cfg.layer
            && seq < self.cfg.chunks
            && self.verifier.verify_chunk(&record, &payload).is_ok();
        // The request it answers (if it was ours to this sender) is done either way.
        if self.requested.get(&seq).is_some_and(|(w, _)| *w == from) {
            self.requested.remove(&seq);
            if from == self.root {
                self.root_inflight = self.root_inflight.saturating_sub(1);
            } else if let Some(p) = self.peers.get_mut(&from) {
                p.inflight = p.inflight.saturating_sub(1);
            }
        }
        if !ok {
            self.stats.bad_chunks += 1;
            self.out
                .push_back(Output::Event(MeshEvent::Penalised { peer: from }));
            if from != self.root {
                self.failed
                    .insert(seq.min(self.cfg.chunks.saturating_sub(1)));
                let strikes = self.peers.get_mut(&from).map(|p| {
                    p.strikes = p.strikes.saturating_add(1);
                    p.strikes
                });
                if strikes.is_some_and(|s| s >= self.cfg.max_strikes) {
                    self.banned.insert(from);
                    self.peer_gone(now, from);
                    self.out
                        .push_back(Output::Event(MeshEvent::Banned { peer: from }));
                }
            }
            self.pump(now);
            return;
        }
        if from != self.root
            && let Some(p) = self.peers.get_mut(&from)
            && p.set(seq)
        {
            self.avail[seq as usize] = self.avail[seq as usize].saturating_add(1);
        }
        if self.slots[seq as usize] != Slot::Missing {
            self.stats.duplicates += 1;
            self.pump(now);
            return;
        }
        let len = payload.len() as u64;
        if from == self.root {
            self.stats.chunks_from_root += 1;
            self.stats.bytes_from_root += len;
        } else {
            self.stats.chunks_from_peers += 1;
            self.stats.bytes_from_peers += len;
        }
        self.slots[seq as usize] = Slot::Held;
        self.store.insert(seq, (record, payload));
        self.hops.insert(seq, hops);
        self.failed.remove(&seq);
        let msg = self.announce(seq / BLOCK);
        for &p in self.peers.keys() {
            self.out.push_back(Output::Send {
                to: p,
                msg: msg.clone(),
            });
        }
        self.play(now);
        self.pump(now);
    }

    /// Hand the player every chunk from the playhead that is held (or absent everywhere).
    fn play(&mut self, now: Time) {
        while let Some(slot) = self.slots.get(self.next_play as usize).copied() {
            let seq = self.next_play;
            match slot {
                Slot::Missing => break,
                Slot::Held => {
                    if !self.started {
                        self.started = true;
                        self.out
                            .push_back(Output::Event(MeshEvent::Started { seq, at: now }));
                    }
                    let hops = self.hops.get(&seq).copied().unwrap_or(0);
                    self.out.push_back(Output::Event(MeshEvent::Played {
                        seq,
                        at: now,
                        on_time: true,
                        hops,
                        play_us: self.cfg.chunk.as_micros() as u64,
                    }));
                }
                Slot::Absent => self.out.push_back(Output::Event(MeshEvent::Skipped {
                    seq,
                    at: now,
                    jump: false,
                })),
            }
            self.next_play += 1;
        }
    }

    /// Fill the request slots: the chunks due soon in order (from a peer that holds one, else
    /// the root), then the rest rarest first from peers.
    fn pump(&mut self, now: Time) {
        self.next_tick = if self.next_play < self.cfg.chunks {
            self.tick_after(now)
        } else {
            Time::MAX
        };
        let peers_full = self
            .peers
            .values()
            .all(|p| p.inflight >= self.cfg.peer_inflight);
        if peers_full && self.root_inflight >= self.cfg.root_inflight {
            return;
        }
        let urgent_end = self.root_horizon(now).min(self.cfg.chunks);
        let mut cands: Vec<(u8, u16, u64, u64)> = Vec::new();
        for seq in self.next_play..self.cfg.chunks {
            if self.slots[seq as usize] != Slot::Missing || self.requested.contains_key(&seq) {
                continue;
            }
            let avail = self.avail[seq as usize];
            if seq < urgent_end {
                cands.push((0, 0, seq, seq));
            } else {
                cands.push((1, avail, mix(self.cfg.seed, seq), seq));
            }
        }
        cands.sort_unstable();
        let deadline = now + self.cfg.request_timeout;
        for (class, avail, _, seq) in cands {
            // The least loaded peer that holds it and has room.
            let peer = self
                .peers
                .iter()
                .filter(|(_, p)| p.inflight < self.cfg.peer_inflight && p.has(seq))
                .min_by_key(|(id, p)| (p.inflight, mix(self.cfg.seed, u64::from(id.0) ^ seq)))
                .map(|(id, _)| *id);
            let to = match peer {
                Some(p) => p,
                None if self.root_inflight < self.cfg.root_inflight
                    && (class == 0
                        || self.failed.contains(&seq)
                        || (avail == 0 && !self.peers.is_empty())) =>
                {
                    self.root
                }
                None => continue,
            };
            if to == self.root {
                self.root_inflight += 1;
                self.stats.root_requests += 1;
            } else if let Some(p) = self.peers.get_mut(&to) {
                p.inflight += 1;
                self.stats.peer_requests += 1;
            }
            self.requested.insert(seq, (to, deadline));
            self.out.push_back(Output::Send {
                to,
                msg: MeshMsg::Request {
                    layer: self.cfg.layer,
                    seq,
                    deadline_ms: self.cfg.request_timeout.as_millis() as u32,
                },
            });
            let peers_full = self
                .peers
                .values()
                .all(|p| p.inflight >= self.cfg.peer_inflight);
            if peers_full && self.root_inflight >= self.cfg.root_inflight {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hum_mesh::chunker::Chunk;
    use hum_mesh::manifest::Publisher;

    const ROOT: PeerId = PeerId(0);

    fn recording(n: u64) -> (Publisher, Vec<hum_mesh::StoredChunk>) {
        let publisher = Publisher::from_seed([7; 32]);
        let chunks = (0..n)
            .map(|seq| {
                let payload: Arc<[u8]> = Arc::from(
                    (0..2_000u32)
                        .map(|i| (i as u64 ^ seq.wrapping_mul(31)) as u8)
                        .collect::<Vec<u8>>(),
                );
                let c = Chunk::new(Layer::High, seq, seq * 250_000, 250_000, true, payload);
                let r = publisher.sign(&c, c.payload.len() as u32);
                (Arc::new(r), c.payload.clone())
            })
            .collect();
        (publisher, chunks)
    }

    /// Links with a latency and a per-sender upload rate (a serialisation queue): the root is
    /// the relay's store, serving every request it gets at `root_kbps`.
    struct Net {
        now: Time,
        queue: BTreeMap<(Time, u64), (PeerId, PeerId, MeshMsg)>,
        busy: BTreeMap<PeerId, Time>,
        n: u64,
        latency: Duration,
        kbps: BTreeMap<PeerId, u64>,
        root_sent: u64,
    }

    impl Net {
        fn send(&mut self, from: PeerId, to: PeerId, msg: MeshMsg) {
            let bytes = msg.encode().map(|b| b.len()).unwrap_or(0) as u64;
            let rate = self.kbps.get(&from).copied().unwrap_or(4_000);
            let start = self
                .busy
                .get(&from)
                .copied()
                .unwrap_or(Time::ZERO)
                .max(self.now);
            let done = start + Duration::from_micros(bytes * 8 * 1000 / rate);
            self.busy.insert(from, done);
            self.n += 1;
            self.queue
                .insert((done + self.latency, self.n), (from, to, msg));
        }
    }

    struct Sim {
        net: Net,
        viewers: BTreeMap<PeerId, OnDemand>,
        store: Vec<hum_mesh::StoredChunk>,
        corrupt: BTreeSet<PeerId>,
        events: Vec<(PeerId, MeshEvent)>,
        wake: BTreeMap<PeerId, Time>,
    }

    impl Sim {
        fn new(n: u64, root_kbps: u64) -> (Sim, Verifier) {
            let (publisher, store) = recording(n);
            let mut kbps = BTreeMap::new();
            kbps.insert(ROOT, root_kbps);
            let sim = Sim {
                net: Net {
                    now: Time::ZERO,
                    queue: BTreeMap::new(),
                    busy: BTreeMap::new(),
                    n: 0,
                    latency: Duration::from_millis(20),
                    kbps,
                    root_sent: 0,
                },
                viewers: BTreeMap::new(),
                store,
                corrupt: BTreeSet::new(),
                events: Vec::new(),
                wake: BTreeMap::new(),
            };
            (sim, Verifier::new(publisher.public_key()))
        }

        fn join(&mut self, id: PeerId, verifier: &Verifier) {
            self.join_unlinked(id, verifier);
            let others: Vec<PeerId> = self.viewers.keys().copied().filter(|o| *o != id).collect();
            self.link(id, &others);
        }

        /// A viewer that fetches alone (from the root) until [`Sim::link`].
        fn join_unlinked(&mut self, id: PeerId, verifier: &Verifier) {
            let now = self.net.now;
            let cfg = OnDemandConfig::new(Layer::High, self.store.len() as u64, u64::from(id.0));
            self.viewers
                .insert(id, OnDemand::new(ROOT, verifier.clone(), cfg, now));
            self.drain(id);
        }

        /// Links `id` with `others` (their WebRTC links open now).
        fn link(&mut self, id: PeerId, others: &[PeerId]) {
            let now = self.net.now;
            for &o in others {
                if let Some(v) = self.viewers.get_mut(&id) {
                    v.add_peer(now, o);
                }
                if let Some(ov) = self.viewers.get_mut(&o) {
                    ov.add_peer(now, id);
                }
                self.drain(o);
            }
            self.drain(id);
        }

        fn drain(&mut self, id: PeerId) {
            let Some(v) = self.viewers.get_mut(&id) else {
                return;
            };
            loop {
                match v.poll_output() {
                    Output::Timeout(t) => {
                        self.wake.insert(id, t);
                        break;
                    }
                    Output::Send { to, mut msg } => {
                        if self.corrupt.contains(&id)
                            && let MeshMsg::Data { payload, .. } = &mut msg
                        {
                            let mut bad = payload.to_vec();
                            bad[0] ^= 0x5a;
                            *payload = Arc::from(bad);
                        }
                        self.net.send(id, to, msg)
                    }
                    Output::Event(e) => self.events.push((id, e)),
                }
            }
        }

        /// Run until `until` (virtual time).
        fn run(&mut self, until: Time) {
            loop {
                let next_msg = self.net.queue.keys().next().map(|k| k.0);
                let next_wake = self.wake.values().min().copied();
                let t = match (next_msg, next_wake) {
                    (Some(a), Some(b)) => a.min(b),
                    (Some(a), None) => a,
                    (None, Some(b)) => b,
                    (None, None) => break,
                };
                if t > until {
                    break;
                }
                self.net.now = t;
                if next_msg == Some(t) {
                    let (_, (from, to, msg)) = self.net.queue.pop_first().expect("a message");
                    if to == ROOT {
                        // The relay's recording store answers every request at once.
                        if let MeshMsg::Request { layer, seq, .. } = msg {
                            let reply = match self.store.get(seq as usize) {
                                Some((r, p)) => {
                                    self.net.root_sent += 1;
                                    MeshMsg::Data {
                                        record: r.clone(),
                                        hops: 0,
                                        payload: p.clone(),
                                    }
                                }
                                None => MeshMsg::Absent {
                                    layer,
                                    seq,
                                    reason: AbsentReason::NotHeld,
                                },
                            };
                            self.net.send(ROOT, from, reply);
                        }
                    } else if let Some(v) = self.viewers.get_mut(&to) {
                        v.handle_input(t, from, msg);
                        self.drain(to);
                    }
                } else {
                    let due: Vec<PeerId> = self
                        .wake
                        .iter()
                        .filter(|(_, w)| **w <= t)
                        .map(|(p, _)| *p)
                        .collect();
                    for p in due {
                        self.wake.remove(&p);
                        if let Some(v) = self.viewers.get_mut(&p) {
                            v.handle_timeout(t);
                        }
                        self.drain(p);
                    }
                }
            }
        }
    }

    #[test]
    fn three_viewers_fetch_the_whole_recording_mostly_from_each_other() {
        let n = 120;
        // The root serves ~1 Mbit/s in all; each viewer uploads 4 Mbit/s.
        let (mut sim, verifier) = Sim::new(n, 1_000);
        for (i, id) in [PeerId(1), PeerId(2), PeerId(3)].into_iter().enumerate() {
            sim.net.now = Time::from_millis(100 * i as u64);
            sim.join(id, &verifier);
        }
        sim.run(Time::from_millis(60_000));
        let mut from_peers = 0;
        for (id, v) in &sim.viewers {
            assert!(v.is_complete(), "{id:?} did not finish: {v:?}");
            assert_eq!(v.held(), n);
            for seq in 0..n {
                let (r, p) = v.chunk(seq).expect("held");
                assert_eq!(r.seq, seq);
                verifier.verify_chunk(r, p).expect("every chunk verifies");
            }
            let played = sim
                .events
                .iter()
                .filter(|(p, e)| p == id && matches!(e, MeshEvent::Played { .. }))
                .count() as u64;
            assert_eq!(played, n, "{id:?} played every chunk once");
            from_peers += v.stats.chunks_from_peers;
            assert_eq!(v.stats.bad_chunks, 0);
        }
        // Three copies were fetched; the root sent well under two of them.
        assert_eq!(sim.net.root_sent + from_peers, 3 * n);
        assert!(
            sim.net.root_sent < 2 * n,
            "root sent {} of {} chunks",
            sim.net.root_sent,
            3 * n
        );
        assert!(from_peers > n, "peers served only {from_peers}");
    }

    /// The real run's case (stream_mesh, loopback): the root answers at once, and a joiner's
    /// peer links open a second after it joined. The root still serves only what playback
    /// needs soon, so the viewers behind the first fetch most of the recording from the ones
    /// ahead. (When the root served any chunk no peer had announced, each joiner fetched the
    /// whole recording from it before its links opened: 4 copies of 4.)
    #[test]
    fn a_fast_root_and_late_peer_links_still_leave_most_chunks_to_peers() {
        let n = 80;
        let (mut sim, verifier) = Sim::new(n, 1_000_000);
        sim.net.latency = Duration::from_millis(1);
        // (ms, viewer, joins or its links open)
        let mut plan: Vec<(u64, u32, bool)> = (0..4u32)
            .flat_map(|i| {
                [
                    (500 * u64::from(i), i + 1, true),
                    (1_000 + 500 * u64::from(i), i + 1, false),
                ]
            })
            .collect();
        plan.sort_unstable_by_key(|&(t, _, join)| (t, !join));
        for (t, id, join) in plan {
            sim.run(Time::from_millis(t));
            sim.net.now = sim.net.now.max(Time::from_millis(t));
            if join {
                sim.join_unlinked(PeerId(id), &verifier);
            } else {
                // The joiner offered links to the viewers before it; they open now.
                let earlier: Vec<PeerId> = (1..id).map(PeerId).collect();
                sim.link(PeerId(id), &earlier);
            }
        }
        sim.run(Time::from_millis(60_000));
        let mut from_peers = 0;
        for (id, v) in &sim.viewers {
            assert!(v.is_complete(), "{id:?} did not finish: {v:?}");
            assert_eq!(v.stats.chunks_from_root + v.stats.chunks_from_peers, n);
            from_peers += v.stats.chunks_from_peers;
        }
        assert_eq!(sim.net.root_sent + from_peers, 4 * n);
        // About one copy at the playing pace for the first viewer, plus each joiner's first
        // seconds before its links opened.
        assert!(
            sim.net.root_sent * 2 < 4 * n,
            "root sent {} of {} chunks",
            sim.net.root_sent,
            4 * n
        );
    }

    /// The peer's side of a link opens first and it announces at once: the joiner gets that
    /// announcement before its own side says the link is open. A peer that already holds the
    /// whole recording announces nothing more, so the joiner must keep what it was told.
    #[test]
    fn an_announcement_that_arrives_before_the_link_opens_here_is_kept() {
        let n = 40;
        let (mut sim, verifier) = Sim::new(n, 1_000_000);
        sim.join(PeerId(1), &verifier);
        sim.run(Time::from_millis(20_000));
        assert!(sim.viewers[&PeerId(1)].is_complete());
        sim.join_unlinked(PeerId(2), &verifier);
        let now = sim.net.now;
        if let Some(v) = sim.viewers.get_mut(&PeerId(1)) {
            v.add_peer(now, PeerId(2));
        }
        sim.drain(PeerId(1));
        sim.run(Time::from_millis(20_100));
        sim.net.now = sim.net.now.max(Time::from_millis(20_100));
        if let Some(v) = sim.viewers.get_mut(&PeerId(2)) {
            v.add_peer(sim.net.now, PeerId(1));
        }
        sim.drain(PeerId(2));
        sim.run(Time::from_millis(60_000));
        let v = &sim.viewers[&PeerId(2)];
        assert!(v.is_complete());
        assert!(
            v.stats.chunks_from_peers >= n / 2,
            "the joiner ignored its peer: {:?}",
            v.stats
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let run = || {
            let (mut sim, verifier) = Sim::new(60, 1_000);
            sim.join(PeerId(1), &verifier);
            sim.join(PeerId(2), &verifier);
            sim.run(Time::from_millis(30_000));
            sim.viewers
                .values()
                .map(|v| (v.stats.chunks_from_root, v.stats.chunks_from_peers))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn a_peer_serving_corrupt_chunks_is_banned_and_nothing_corrupt_is_kept() {
        let n = 80;
        let (mut sim, verifier) = Sim::new(n, 1_000);
        sim.corrupt.insert(PeerId(2));
        // The corrupt viewer starts first, so it holds chunks the others ask it for.
        sim.join(PeerId(2), &verifier);
        sim.run(Time::from_millis(2_000));
        sim.join(PeerId(1), &verifier);
        sim.join(PeerId(3), &verifier);
        sim.run(Time::from_millis(60_000));
        for id in [PeerId(1), PeerId(3)] {
            let v = &sim.viewers[&id];
            assert!(v.is_complete());
            for seq in 0..n {
                let (r, p) = v.chunk(seq).expect("held");
                verifier.verify_chunk(r, p).expect("nothing corrupt kept");
            }
            assert!(v.stats.bad_chunks >= 1);
            assert!(
                sim.events
                    .iter()
                    .any(|(p, e)| *p == id && *e == MeshEvent::Banned { peer: PeerId(2) }),
                "{id:?} did not ban the corrupt peer"
            );
            assert!(v.peers().all(|p| p != PeerId(2)));
        }
    }

    #[test]
    fn hostile_announcements_and_requests_do_not_panic_or_count() {
        let (publisher, store) = recording(10);
        let verifier = Verifier::new(publisher.public_key());
        let mut v = OnDemand::new(
            ROOT,
            verifier,
            OnDemandConfig::new(Layer::High, 10, 1),
            Time::ZERO,
        );
        v.add_peer(Time::ZERO, PeerId(5));
        for (base, bits) in [(u64::MAX - 3, 8u16), (u64::MAX, 1), (5, 4096), (9, 16)] {
            v.handle_input(
                Time::ZERO,
                PeerId(5),
                MeshMsg::Announce {
                    layer: Layer::High,
                    base,
                    bits,
                    bitmap: vec![0xff; (bits as usize).div_ceil(8)],
                },
            );
        }
        // Only chunks 5..10 exist: the availability counts stay inside the range.
        assert_eq!(v.avail.iter().map(|a| u32::from(*a)).sum::<u32>(), 5);
        v.handle_input(
            Time::ZERO,
            PeerId(5),
            MeshMsg::Request {
                layer: Layer::High,
                seq: u64::MAX,
                deadline_ms: 1,
            },
        );
        // A record for a sequence number out of range is refused as bad.
        let (r, p) = store[3].clone();
        let mut far = *r;
        far.seq = 1 << 40;
        v.handle_input(
            Time::ZERO,
            PeerId(5),
            MeshMsg::Data {
                record: Arc::new(far),
                hops: 0,
                payload: p,
            },
        );
        assert_eq!(v.stats.bad_chunks, 1);
        let mut absent = false;
        loop {
            let o = v.poll_output();
            if matches!(o, Output::Timeout(_)) {
                break;
            }
            if let Output::Send {
                to: PeerId(5),
                msg: MeshMsg::Absent { seq: u64::MAX, .. },
            } = o
            {
                absent = true;
            }
        }
        assert!(absent, "a request out of range is answered absent");
    }
}
