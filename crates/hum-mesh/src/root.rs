//! The root seed: the server's end of the mesh.
//!
//! It publishes every chunk (signing its record) and serves requests like any peer, but under a
//! **global cap**: one token bucket for all of its egress. The tracker hands out grants on the root's
//! uplink to at most the cap (minus a reserve for fallback), so the number of peers seeded per chunk is
//! bounded by the cap, not by the audience, and server egress plateaus. Fallback requests (a viewer
//! about to miss a deadline) share the same bucket but come second: the peers the root feeds by grant
//! carry whole subtrees, and starving them to answer fallbacks would turn one late chunk into a late
//! chunk for everyone below them (congestion collapse). Within each class, earliest deadline first; what
//! the cap cannot serve in time is refused with `Absent(Busy)` at once so the viewer does not wait.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use hum_proto::Bitrate;
use hum_proto::mesh::{AbsentReason, ChunkRecord, Layer, MeshMsg};

use crate::chunker::Chunk;
use crate::manifest::Publisher;
use crate::serve::{Priority, ServeQueue, ServeRequest, WHOLE, share_bytes};
use crate::slice::{SliceOutboard, SliceProof, encode_slice, encoded_slice_len};
use crate::{Output, PeerId, Time};

/// How often the root's starvation controller looks at its queue (see [`RootSeed::with_ceiling`]).
pub const POLICY_PERIOD: Duration = Duration::from_millis(500);
/// A requester that reports less buffered media than this is about to stall: refusing it is what
/// the policy calls starving (viewers report buffer health in two bands split here).
pub const STARVING_MS: u32 = 500;
/// The rate comes down (by an eighth of the cap) only after this many quiet periods in a row: a
/// starving audience that the raised rate just fed is calm *because* of it, and stepping down at
/// once starved it again.
pub const CALM_PERIODS: u32 = 4;
/// A period counts as starved when more starving requests went unserved in it than one per this
/// many viewers of the audience (at least one): a healthy audience of 10,000 has a few busy
/// refusals every period (end-game requests that the mesh answers anyway), an audience the cap
/// really starves has hundreds.
pub const STARVING_PER_VIEWERS: u32 = 250;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RootStats {
    pub bytes_sent: u64,
    /// Time (microseconds) the root ran above its cap, and the highest rate it ran at.
    pub over_cap_us: u64,
    pub peak_rate: Bitrate,
    /// Periods in which viewers were starved (see `starving`), each of which raised the rate
    /// (towards the ceiling).
    pub starved_periods: u64,
    /// Requests that expired in the root's queue.
    pub expired: u64,
    /// Of the busy refusals and expired requests, those of peers that reported a buffer under
    /// [`STARVING_MS`]: the signal the policy acts on.
    pub starving: u64,
    /// Of which to peers holding a root grant (the mesh's feed).
    pub feed_bytes: u64,
    pub chunks_sent: u64,
    pub busy: u64,
    /// Slices sent (answers to `SliceRequest`).
    pub slices_sent: u64,
}

pub struct RootSeed {
    layer: Layer,
    /// None for a root that serves chunks someone else signed ([`RootSeed::relayed`]).
    publisher: Option<Publisher>,
    window: u64,
    chunks: Vec<Option<crate::StoredChunk>>,
    newest: Option<u64>,
    serve: ServeQueue,
    lookahead: u64,
    granted: Vec<PeerId>,
    /// The operator's target (`cap`) and hard ceiling, and the rate the root serves at now.
    cap: Bitrate,
    ceiling: Bitrate,
    rate: Bitrate,
    /// The starvation controller: busy + expired counts at the start of the current period.
    period_end: Time,
    period_pressure: u64,
    /// Viewers in the stream (the tracker knows; see [`RootSeed::set_audience`]).
    audience: u32,
    /// Calm periods in a row (see [`CALM_PERIODS`]).
    calm: u32,
    /// Peers whose last buffer-health report was under [`STARVING_MS`].
    health: BTreeMap<PeerId, u32>,
    /// How slices (`SliceRequest`) are answered, and the hash trees of held chunks (made on the
    /// first slice request for a chunk, [`SliceProof::Bao`] only).
    proof: SliceProof,
    outboards: Vec<Option<(u64, Arc<SliceOutboard>)>>,
    now: Time,
    out: VecDeque<Output>,
    scratch: Vec<ServeRequest>,
    pub stats: RootStats,
}

impl std::fmt::Debug for RootSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootSeed")
            .field("newest", &self.newest)
            .field("stats", &self.stats)
            .finish()
    }
}

impl RootSeed {
    /// `cap` is the server's total mesh egress.
    pub fn new(layer: Layer, publisher: Publisher, cap: Bitrate, window: u64, now: Time) -> Self {
        Self::build(layer, Some(publisher), cap, window, now)
    }

    /// A root that does not sign: it serves chunks the streamer signed and uploaded once (the
    /// relay as root seed, [`crate::host::RootHost`]); publish them with
    /// [`RootSeed::publish_signed`].
    pub fn relayed(layer: Layer, cap: Bitrate, window: u64, now: Time) -> Self {
        Self::build(layer, None, cap, window, now)
    }

    fn build(
        layer: Layer,
        publisher: Option<Publisher>,
        cap: Bitrate,
        window: u64,
        now: Time,
    ) -> Self {
        let window = window.max(8);
        RootSeed {
            layer,
            publisher,
            window,
            chunks: vec![None; window as usize],
            newest: None,
            // A burst of half a second (a few chunks): enough for a fallback to be paid from tokens
            // in hand (see `with_strict_class`); the long-run rate is the cap either way.
            serve: ServeQueue::new(cap, Duration::from_millis(500), now, Priority::BufferHealth)
                .with_strict_class(1),
            lookahead: 4,
            granted: Vec::new(),
            cap,
            ceiling: cap,
            rate: cap,
            period_end: now + POLICY_PERIOD,
            period_pressure: 0,
            audience: 0,
            calm: 0,
            health: BTreeMap::new(),
            proof: SliceProof::Bao,
            outboards: vec![None; window as usize],
            now,
            out: VecDeque::new(),
            scratch: Vec::new(),
            stats: RootStats::default(),
        }
    }

    /// The operator's hard ceiling (at least the cap): when viewers starve (in a [`POLICY_PERIOD`],
    /// more than one per [`STARVING_PER_VIEWERS`] of the audience had a request refused as `Busy`
    /// or expired in the queue while reporting under [`STARVING_MS`] of buffer) the root raises its
    /// rate by a quarter of the cap, up to this; it holds the rate while more than a quarter of that
    /// threshold starve and lowers it by an eighth after [`CALM_PERIODS`] quiet periods, back to the cap. The cap
    /// is the target, never a reason to starve viewers; the ceiling is the promise to the operator.
    /// `RootStats` says what was spent above the cap and why.
    pub fn with_ceiling(mut self, ceiling: Bitrate) -> Self {
        self.ceiling = ceiling.max(self.cap);
        self
    }

    /// How slice requests are answered: real BLAKE3 proofs (the default) or `hum sim`'s stand-ins.
    pub fn with_slice_proof(mut self, proof: SliceProof) -> Self {
        self.proof = proof;
        self
    }

    /// How many viewers watch (the tracker's count): the starvation threshold scales with it
    /// ([`STARVING_PER_VIEWERS`]). Zero (never set) means any starving request starves the period.
    pub fn set_audience(&mut self, viewers: u32) {
        self.audience = viewers;
    }

    /// The rate the root serves at now (between the cap and the ceiling).
    pub fn rate(&self) -> Bitrate {
        self.rate
    }

    /// Evaluate the starvation controller once per period.
    fn police(&mut self, now: Time) {
        if now < self.period_end {
            return;
        }
        let elapsed = now.since(self.period_end - POLICY_PERIOD);
        if self.rate > self.cap {
            self.stats.over_cap_us += elapsed.as_micros() as u64;
        }
        self.period_end = now + POLICY_PERIOD;
        self.stats.expired = self.serve.expired;
        let pressure = self.stats.starving;
        let threshold = u64::from(self.audience / STARVING_PER_VIEWERS);
        let starved = pressure - self.period_pressure > threshold;
        // Quiet means at most a quarter of the threshold: between that and the threshold holds a
        // raised rate (the audience it feeds is still hungry); the end-game's trickle of a lossy
        // but healthy audience is quiet.
        let quiet = pressure - self.period_pressure <= threshold / 4;
        self.period_pressure = pressure;
        self.calm = if quiet { self.calm + 1 } else { 0 };
        let rate = if starved {
            self.stats.starved_periods += 1;
            (self.rate + Bitrate::from_bps(self.cap.bps() / 4)).min(self.ceiling)
        } else if self.calm < CALM_PERIODS {
            self.rate
        } else {
            (self.rate - Bitrate::from_bps(self.cap.bps() / 8)).max(self.cap)
        };
        if rate != self.rate {
            self.rate = rate;
            self.serve.set_rate(rate, now);
        }
        self.stats.peak_rate = self.stats.peak_rate.max(self.rate);
    }

    /// `peer` holds (or no longer holds) a grant on the root: its requests are the mesh's feed.
    pub fn set_granted(&mut self, peer: PeerId, granted: bool) {
        self.granted.retain(|p| *p != peer);
        if granted {
            self.granted.push(peer);
        }
    }

    /// Peers currently holding a root grant.
    pub fn granted(&self) -> &[PeerId] {
        &self.granted
    }

    pub fn newest(&self) -> Option<u64> {
        self.newest
    }

    pub fn cap(&self) -> Bitrate {
        self.cap
    }

    fn get(&self, seq: u64) -> Option<&crate::StoredChunk> {
        self.chunks[(seq % self.window) as usize]
            .as_ref()
            .filter(|(r, _)| r.seq == seq)
    }

    fn bytes_of(&self, seq: u64) -> u32 {
        self.get(seq).map_or(0, |(r, _)| r.bytes)
    }

    /// Publish the next chunk; `bytes` is the size it counts for. Returns its signed record.
    ///
    /// # Panics
    /// On a [`RootSeed::relayed`] root, which has no key to sign with (a programming error).
    pub fn publish(&mut self, now: Time, chunk: &Chunk, bytes: u32) -> ChunkRecord {
        let rec = self
            .publisher
            .as_ref()
            .expect("publish needs a root built with a Publisher; use publish_signed")
            .sign(chunk, bytes);
        self.publish_signed(now, rec, chunk.payload.clone());
        rec
    }

    /// Publish a chunk whose record is already signed (the caller has verified it: the relay's
    /// [`crate::host::RootHost`] checks signature and hash before it calls this).
    pub fn publish_signed(&mut self, now: Time, rec: ChunkRecord, payload: Arc<[u8]>) {
        self.now = now;
        self.police(now);
        let (seq, bytes) = (rec.seq, rec.bytes);
        self.chunks[(seq % self.window) as usize] = Some((Arc::new(rec), payload));
        self.newest = Some(self.newest.map_or(seq, |n| n.max(seq)));
        self.serve.on_have(seq, bytes);
        self.release(now);
    }

    pub fn handle_input(&mut self, now: Time, from: PeerId, msg: MeshMsg) {
        self.now = now;
        match msg {
            MeshMsg::Request {
                layer,
                seq,
                deadline_ms,
            } => self.on_request(now, from, layer, seq, deadline_ms, None),
            MeshMsg::SliceRequest {
                layer,
                seq,
                part,
                parts,
                deadline_ms,
                mask,
            } => self.on_request(
                now,
                from,
                layer,
                seq,
                deadline_ms,
                Some((part, parts, mask)),
            ),
            MeshMsg::Cancel { seq, .. } => {
                self.serve.cancel(from, seq);
            }
            MeshMsg::BufferHealth { buffered_ms, .. } => {
                if buffered_ms < STARVING_MS {
                    self.health.insert(from, buffered_ms);
                } else {
                    self.health.remove(&from);
                }
            }
            MeshMsg::Data { .. }
            | MeshMsg::Announce { .. }
            | MeshMsg::Absent { .. }
            | MeshMsg::Slice { .. } => {}
        }
        self.release(now);
    }

    /// A request for chunk `seq`, whole or (`share`: part, parts, mask) a share of its slices.
    fn on_request(
        &mut self,
        now: Time,
        from: PeerId,
        layer: Layer,
        seq: u64,
        deadline_ms: u32,
        share: Option<(u8, u8, u128)>,
    ) {
        let deadline = now + Duration::from_millis(deadline_ms as u64);
        // The serve queue orders by "buffer health" first: 0 for the feed (a granted seed
        // asking ahead for a chunk not yet published), 1 for everything else (fallbacks,
        // catch-up, end-game), so fallbacks never delay the feed that whole subtrees wait on.
        let feed = self.granted.contains(&from) && self.newest.is_none_or(|n| seq > n);
        let buffer_ms = if feed { 0 } else { 1 };
        let req = match share {
            None => ServeRequest::whole(from, seq, deadline, buffer_ms),
            Some((part, parts, mask)) => {
                ServeRequest::part(from, seq, deadline, buffer_ms, part, parts).with_mask(mask)
            }
        };
        if layer != self.layer {
            self.out.push_back(Output::Send {
                to: from,
                msg: MeshMsg::Absent {
                    layer,
                    seq,
                    reason: AbsentReason::NotHeld,
                },
            });
        } else if self.get(seq).is_some() {
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
                self.stats.busy += 1;
                self.note_starving(from);
                self.out.push_back(Output::Send {
                    to: from,
                    msg: MeshMsg::Absent {
                        layer,
                        seq,
                        reason: AbsentReason::Busy,
                    },
                });
            } else if share.is_some() {
                self.serve.push_ready_part(req, whole);
            } else {
                self.serve.push_ready(req, b);
            }
        } else if self
            .newest
            .is_none_or(|n| seq > n && seq <= n + self.lookahead)
        {
            if !self.serve.push_held(req) {
                self.stats.busy += 1;
                self.note_starving(from);
                self.out.push_back(Output::Send {
                    to: from,
                    msg: MeshMsg::Absent {
                        layer,
                        seq,
                        reason: AbsentReason::Busy,
                    },
                });
            }
        } else {
            let reason = if self.newest.is_some_and(|n| seq <= n) {
                AbsentReason::TooOld
            } else {
                AbsentReason::NotHeld
            };
            self.out.push_back(Output::Send {
                to: from,
                msg: MeshMsg::Absent { layer, seq, reason },
            });
        }
    }

    /// The encoded slice `index` of held chunk `seq`.
    fn encoded(&mut self, seq: u64, index: u32) -> Option<Arc<[u8]>> {
        let (_, payload) = self.get(seq)?.clone();
        match self.proof {
            SliceProof::StandIn => Some(payload),
            SliceProof::Bao => {
                let i = (seq % self.window) as usize;
                let ob = match &self.outboards[i] {
                    Some((s, ob)) if *s == seq => ob.clone(),
                    _ => {
                        let ob = Arc::new(SliceOutboard::new(&payload).ok()?);
                        self.outboards[i] = Some((seq, ob.clone()));
                        ob
                    }
                };
                encode_slice(&payload, &ob, index).ok().map(Arc::from)
            }
        }
    }

    /// A peer left: drop its pending requests.
    pub fn peer_gone(&mut self, peer: PeerId) {
        self.serve.forget(peer);
        self.health.remove(&peer);
        self.set_granted(peer, false);
    }

    pub fn handle_timeout(&mut self, now: Time) {
        self.now = now;
        self.police(now);
        self.release(now);
    }

    pub fn poll_output(&mut self) -> Output {
        match self.out.pop_front() {
            Some(o) => o,
            None => Output::Timeout(self.serve.next_wake(self.now).unwrap_or(Time::MAX)),
        }
    }

    /// A request from `peer` went unserved: a starvation signal if `peer` says it is about to stall.
    fn note_starving(&mut self, peer: PeerId) {
        if self.health.contains_key(&peer) {
            self.stats.starving += 1;
        }
    }

    fn release(&mut self, now: Time) {
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        self.serve.release(now, &mut out);
        if !self.health.is_empty() {
            // Requests that expired unserved in the queue, from peers about to stall.
            let n = self
                .serve
                .expired_to()
                .iter()
                .filter(|to| self.health.contains_key(to))
                .count();
            self.stats.starving += n as u64;
        }
        for r in out.iter() {
            if r.slice != WHOLE {
                let Some(rec) = self.get(r.seq).map(|(rec, _)| rec.clone()) else {
                    continue;
                };
                let Some(encoded) = self.encoded(r.seq, r.slice as u32) else {
                    continue;
                };
                let bytes = encoded_slice_len(rec.bytes, r.slice as u32) as u64;
                self.stats.bytes_sent += bytes;
                if self.granted.contains(&r.to) {
                    self.stats.feed_bytes += bytes;
                }
                self.stats.slices_sent += 1;
                self.out.push_back(Output::Send {
                    to: r.to,
                    msg: MeshMsg::Slice {
                        record: rec,
                        hops: 0,
                        index: r.slice,
                        encoded,
                    },
                });
            } else if let Some((rec, payload)) = self.get(r.seq) {
                let bytes = rec.bytes as u64;
                let msg = MeshMsg::Data {
                    record: rec.clone(),
                    hops: 0,
                    payload: payload.clone(),
                };
                self.stats.bytes_sent += bytes;
                if self.granted.contains(&r.to) {
                    self.stats.feed_bytes += bytes;
                }
                self.stats.chunks_sent += 1;
                self.out.push_back(Output::Send { to: r.to, msg });
            }
        }
        self.scratch = out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seq: u64) -> Chunk {
        Chunk::new(
            Layer::High,
            seq,
            seq * 250_000,
            250_000,
            true,
            Arc::from(&seq.to_be_bytes()[..]),
        )
    }

    fn root(cap: Bitrate) -> RootSeed {
        RootSeed::new(
            Layer::High,
            Publisher::from_seed([3; 32]),
            cap,
            32,
            Time::ZERO,
        )
    }

    /// Peers 1, 2 and 3 each ask the root for chunk `seq`.
    fn request_from_three(r: &mut RootSeed, now: Time, seq: u64, deadline_ms: u32) {
        for p in 1..=3 {
            r.handle_input(
                now,
                PeerId(p),
                MeshMsg::Request {
                    layer: Layer::High,
                    seq,
                    deadline_ms,
                },
            );
        }
    }

    fn drain(r: &mut RootSeed) -> (Vec<(u32, u64)>, Time) {
        let mut sent = vec![];
        loop {
            match r.poll_output() {
                Output::Send {
                    to,
                    msg: MeshMsg::Data { record, .. },
                } => sent.push((to.0, record.seq)),
                Output::Send { .. } | Output::Event(_) => {}
                Output::Timeout(t) => return (sent, t),
            }
        }
    }

    #[test]
    fn the_feed_is_served_at_publish_and_fallbacks_wait_their_turn() {
        // 16 Mbit/s = 2 MB/s; chunks of 125 kB take 62.5 ms each.
        let mut r = root(Bitrate::from_mbps(16));
        for p in 1..=3 {
            r.set_granted(PeerId(p), true);
        }
        r.publish(Time::ZERO, &chunk(0), 125_000);
        request_from_three(&mut r, Time::ZERO, 1, 2000);
        // A fallback for the old chunk arrives first.
        r.handle_input(
            Time::ZERO,
            PeerId(9),
            MeshMsg::Request {
                layer: Layer::High,
                seq: 0,
                deadline_ms: 2000,
            },
        );
        let (sent, _) = drain(&mut r);
        assert_eq!(sent, vec![(9, 0)], "idle root serves the fallback at once");
        r.publish(Time::from_millis(250), &chunk(1), 125_000);
        let mut all = drain(&mut r).0;
        let mut now = Time::from_millis(250);
        while all.len() < 3 {
            let (_, wake) = drain(&mut r);
            assert!(
                wake < Time::from_millis(600),
                "served within a few chunk times: {wake:?}"
            );
            now = wake.max(now);
            r.handle_timeout(now);
            all.extend(drain(&mut r).0);
        }
        assert_eq!(all.iter().map(|x| x.1).collect::<Vec<_>>(), vec![1, 1, 1]);
        assert_eq!(r.stats.feed_bytes, 3 * 125_000);
    }

    #[test]
    fn starved_viewers_raise_the_rate_up_to_the_ceiling_and_calm_brings_it_back() {
        // Cap 4 Mbit/s (chunks of 125 kB = 250 ms each at the cap), ceiling 8.
        let mut r = root(Bitrate::from_mbps(4)).with_ceiling(Bitrate::from_mbps(8));
        // A refusal only counts as starving for a peer about to stall; until they say so, nothing.
        for p in 1..=3 {
            r.handle_input(
                Time::ZERO,
                PeerId(p),
                MeshMsg::BufferHealth {
                    buffered_ms: 100,
                    playhead: 0,
                },
            );
        }
        // Three viewers want every chunk within 300 ms: the cap serves one per chunk time.
        for seq in 0..20u64 {
            let now = Time::from_millis(250 * seq);
            r.publish(now, &chunk(seq), 125_000);
            request_from_three(&mut r, now, seq, 300);
            let (_, wake) = drain(&mut r);
            if wake < now + Duration::from_millis(250) {
                r.handle_timeout(wake);
                drain(&mut r);
            }
        }
        assert!(r.stats.starved_periods > 0 && r.stats.starving > 0);
        assert_eq!(r.rate(), Bitrate::from_mbps(8), "raised to the ceiling");
        assert_eq!(r.stats.peak_rate, Bitrate::from_mbps(8));
        assert!(r.stats.over_cap_us > 0);
        // Calm: nobody asks; the rate falls back to the cap, never below.
        for seq in 20..60u64 {
            let now = Time::from_millis(250 * seq);
            r.publish(now, &chunk(seq), 125_000);
            drain(&mut r);
        }
        assert_eq!(r.rate(), Bitrate::from_mbps(4));
        assert_eq!(r.cap(), Bitrate::from_mbps(4));
    }

    #[test]
    fn a_few_starving_requests_in_a_large_audience_do_not_raise_the_rate() {
        // The same three starving viewers as above, but among 10,000: under one starving request
        // per 250 viewers per period is the end-game's ordinary noise, not the cap starving anyone.
        let mut r = root(Bitrate::from_mbps(4)).with_ceiling(Bitrate::from_mbps(8));
        r.set_audience(10_000);
        for p in 1..=3 {
            r.handle_input(
                Time::ZERO,
                PeerId(p),
                MeshMsg::BufferHealth {
                    buffered_ms: 100,
                    playhead: 0,
                },
            );
        }
        for seq in 0..20u64 {
            let now = Time::from_millis(250 * seq);
            r.publish(now, &chunk(seq), 125_000);
            request_from_three(&mut r, now, seq, 300);
            let (_, wake) = drain(&mut r);
            if wake < now + Duration::from_millis(250) {
                r.handle_timeout(wake);
                drain(&mut r);
            }
        }
        assert!(r.stats.starving > 0, "the refusals were seen");
        assert_eq!(r.stats.starved_periods, 0);
        assert_eq!(r.rate(), Bitrate::from_mbps(4));
        // With 500 viewers the threshold is two per period, and the three are over it.
        r.set_audience(500);
        for seq in 20..40u64 {
            let now = Time::from_millis(250 * seq);
            r.publish(now, &chunk(seq), 125_000);
            request_from_three(&mut r, now, seq, 300);
            let (_, wake) = drain(&mut r);
            if wake < now + Duration::from_millis(250) {
                r.handle_timeout(wake);
                drain(&mut r);
            }
        }
        assert!(r.stats.starved_periods > 0);
        assert!(r.rate() > Bitrate::from_mbps(4));
    }

    #[test]
    fn refusals_of_peers_with_a_healthy_buffer_are_not_starvation() {
        let mut r = root(Bitrate::from_mbps(4)).with_ceiling(Bitrate::from_mbps(8));
        for seq in 0..20u64 {
            let now = Time::from_millis(250 * seq);
            r.publish(now, &chunk(seq), 125_000);
            request_from_three(&mut r, now, seq, 300);
            drain(&mut r);
        }
        assert!(r.stats.busy > 0);
        assert_eq!(r.stats.starving, 0);
        assert_eq!(r.rate(), Bitrate::from_mbps(4));
    }

    #[test]
    fn without_a_ceiling_the_cap_holds() {
        let mut r = root(Bitrate::from_mbps(4));
        for seq in 0..20u64 {
            let now = Time::from_millis(250 * seq);
            r.publish(now, &chunk(seq), 125_000);
            request_from_three(&mut r, now, seq, 300);
            drain(&mut r);
        }
        assert!(
            r.stats.busy > 0,
            "starved, but the operator allowed nothing more"
        );
        assert_eq!(r.rate(), Bitrate::from_mbps(4));
        assert_eq!(r.stats.over_cap_us, 0);
    }
}
