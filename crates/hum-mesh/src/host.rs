//! A stream's root as a host runs it: the [`RootSeed`] and the [`Tracker`] side by side, keyed by
//! account ([`UserId`]) instead of mesh [`PeerId`], speaking the relay's [`MeshSignal`]s.
//!
//! The relay runs one per live stream (docs/stream.md). Its inputs: the streamer's **uploads**
//! (each chunk once, with the record the streamer signed: checked here against the stream key and
//! the BLAKE3 hash before it is served), viewers joining and leaving (with their relay budgets),
//! their `want` and `ban` signals, and the mesh messages they send the root. Its outputs
//! ([`HostOutput`]): mesh messages to viewers, signals to viewers (`grants`, `gone`), and the next
//! timeout. Sans-IO like the rest of the crate: time is an input, nothing here reads a clock or
//! owns a socket.
//!
//! **Leaving.** A viewer that stops watching announces it (`leave`) before it goes: the host takes
//! it out of the tracker's books at once and tells each of its downstreams it is `leaving`; each
//! asks for new grants (`want`) at once, while the leaver (still linked) keeps serving what they
//! ask until their new upstreams cover the stream. It is *draining* until it leaves (`stream_leave`: its downstreams then hear `gone`) or
//! [`HostConfig::leave_grace`] passes, whichever is first. A viewer that goes without a word (a
//! crash, a lost connection) is removed at once as before (docs/stream.md, "Leaving").
//!
//! The root is `PeerId(0)`, whose user is the streamer (viewers verify chunks with the streamer's
//! key and address the root by the streamer's id); viewers get dense ids from 1 for the tracker.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use hum_proto::signal::{MeshGrant, MeshSignal};
use hum_proto::{Bitrate, UserId};
use thiserror::Error;

use crate::manifest::{Verifier, VerifyError};
use crate::root::RootSeed;
use crate::tracker::{Grant, Tracker, TrackerConfig};
use crate::{ChunkRecord, Layer, MeshMsg, Output, PeerId, Time};

const ROOT: PeerId = PeerId(0);
/// The tracker does not measure RTT between viewers yet: every pair counts the same.
pub const ASSUMED_RTT: Duration = Duration::from_millis(40);
/// Chunks the root keeps for serving (64 x 250 ms = 16 s).
pub const WINDOW: u64 = 64;
/// A draining viewer is removed after this even if it never says `stream_leave` (it waits at
/// most [`LEAVE_QUIET_MAX`] for its downstreams to stop asking).
pub const LEAVE_GRACE: Duration = Duration::from_secs(5);
/// A leaving viewer serves at most this long ...
pub const LEAVE_QUIET_MAX: Duration = Duration::from_secs(3);
/// ... and closes its links sooner once no downstream has asked it anything for this long.
pub const LEAVE_QUIET: Duration = Duration::from_secs(1);

/// A viewer that announced its leave: removed at `until` at the latest; `downs` (its downstreams
/// when it announced, re-seated since) hear `gone` when it goes.
#[derive(Clone, Debug)]
struct Drain {
    until: Time,
    downs: Vec<UserId>,
}

/// The host's settings.
#[derive(Clone, Debug)]
pub struct HostConfig {
    pub layer: Layer,
    pub stream_rate: Bitrate,
    /// The root's global egress cap: 1.25 x the stream by default, as `hum sim` (`default_cap`).
    pub cap: Bitrate,
    /// Largest chunk payload accepted from the streamer.
    pub max_chunk_bytes: usize,
    /// The root's hard ceiling: it serves above the cap only while viewers starve (the root
    /// policy, `RootSeed::with_ceiling`); twice the cap by default, as `hum sim`.
    pub ceiling: Bitrate,
    /// How long a viewer that announced its leave stays draining at most (it should leave
    /// sooner, once its downstreams stop asking).
    pub leave_grace: Duration,
}

impl HostConfig {
    pub fn new(layer: Layer, stream_rate: Bitrate) -> Self {
        HostConfig {
            layer,
            stream_rate,
            cap: Bitrate::from_bps(stream_rate.bps().saturating_mul(5) / 4),
            max_chunk_bytes: hum_proto::mesh::MAX_MESSAGE_BYTES,
            ceiling: Bitrate::from_bps(stream_rate.bps().saturating_mul(5) / 2),
            leave_grace: LEAVE_GRACE,
        }
    }
}

/// What the host wants done. Drain with [`RootHost::poll_output`] until a `Timeout`.
#[derive(Debug)]
pub enum HostOutput {
    Send { to: UserId, msg: MeshMsg },
    Signal { to: UserId, signal: MeshSignal },
    Timeout(Time),
}

/// Why an upload was refused (nothing of it is served or kept).
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum UploadError {
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("chunk of layer {0:?} in a stream of layer {1:?}")]
    WrongLayer(Layer, Layer),
    #[error("chunk {seq} is not after the newest published chunk {newest}")]
    NotNewer { seq: u64, newest: u64 },
    #[error("chunk of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("record says {record} bytes, payload has {payload}")]
    SizeMismatch { record: u32, payload: usize },
}

/// Counts for reports and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Chunks (and payload bytes) accepted from the streamer.
    pub uploaded: u64,
    pub uploaded_bytes: u64,
    pub refused: u64,
    /// Chunks (and payload bytes) the root sent to viewers.
    pub served: u64,
    pub served_bytes: u64,
    pub viewers: u64,
    pub bans: u64,
    /// Leaves announced (graceful), and the downstreams told `leaving` by them.
    pub leaves_announced: u64,
    pub reseated: u64,
    /// Relay offers that moved ([`RootHost::viewer_budget`]), and the downstreams a lowered one
    /// no longer covered (moved elsewhere).
    pub budget_changes: u64,
    pub budget_orphans: u64,
}

pub struct RootHost {
    cfg: HostConfig,
    streamer: UserId,
    seed: RootSeed,
    tracker: Tracker,
    verifier: Verifier,
    ids: BTreeMap<UserId, PeerId>,
    users: BTreeMap<PeerId, UserId>,
    next_id: u32,
    draining: BTreeMap<UserId, Drain>,
    out: VecDeque<HostOutput>,
    pub stats: HostStats,
}

impl std::fmt::Debug for RootHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootHost")
            .field("streamer", &self.streamer)
            .field("stats", &self.stats)
            .finish()
    }
}

impl RootHost {
    /// `verifier` holds the streamer's key (the stream key). `seed` seeds the tracker's sampling.
    pub fn new(
        cfg: HostConfig,
        streamer: UserId,
        verifier: Verifier,
        seed: u64,
        now: Time,
    ) -> Self {
        let root = RootSeed::relayed(cfg.layer, cfg.cap, WINDOW, now).with_ceiling(cfg.ceiling);
        // As in `hum sim`: the tracker may grant 80% of the cap, the rest is kept for fallbacks.
        let tracker = Tracker::new(
            TrackerConfig::new(cfg.stream_rate, cfg.cap.scale(0.8)),
            ROOT,
            seed,
        );
        let mut ids = BTreeMap::new();
        let mut users = BTreeMap::new();
        ids.insert(streamer, ROOT);
        users.insert(ROOT, streamer);
        RootHost {
            cfg,
            streamer,
            seed: root,
            tracker,
            verifier,
            ids,
            users,
            next_id: 1,
            draining: BTreeMap::new(),
            out: VecDeque::new(),
            stats: HostStats::default(),
        }
    }

    pub fn streamer(&self) -> UserId {
        self.streamer
    }

    pub fn newest(&self) -> Option<u64> {
        self.seed.newest()
    }

    /// The root seed's own counters (egress, busy refusals, ...).
    pub fn root_stats(&self) -> crate::root::RootStats {
        self.seed.stats
    }

    /// The streamer uploaded one chunk with its signed record. Checked (signature, hash, layer,
    /// size, order) before anything is kept; on success the chunk is served from now on.
    pub fn upload(
        &mut self,
        now: Time,
        record: ChunkRecord,
        payload: Arc<[u8]>,
    ) -> Result<(), UploadError> {
        let r = self.check_upload(&record, &payload);
        if r.is_err() {
            self.stats.refused += 1;
            return r;
        }
        self.stats.uploaded += 1;
        self.stats.uploaded_bytes += payload.len() as u64;
        self.seed.publish_signed(now, record, payload);
        self.pump();
        Ok(())
    }

    fn check_upload(&self, record: &ChunkRecord, payload: &[u8]) -> Result<(), UploadError> {
        if payload.len() > self.cfg.max_chunk_bytes {
            return Err(UploadError::TooLarge(payload.len()));
        }
        if record.layer != self.cfg.layer {
            return Err(UploadError::WrongLayer(record.layer, self.cfg.layer));
        }
        if record.bytes as usize != payload.len() {
            return Err(UploadError::SizeMismatch {
                record: record.bytes,
                payload: payload.len(),
            });
        }
        if let Some(n) = self.seed.newest()
            && record.seq <= n
        {
            return Err(UploadError::NotNewer {
                seq: record.seq,
                newest: n,
            });
        }
        self.verifier.verify_chunk(record, payload)?;
        Ok(())
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

    /// A viewer joined, offering `relay` of upload.
    pub fn viewer_joined(&mut self, now: Time, user: UserId, relay: Bitrate) {
        if user == self.streamer {
            return;
        }
        let id = self.peer_of(user);
        if self.tracker.is_alive(id) || self.draining.contains_key(&user) {
            // Joined again without leaving first: the old seat goes (as the relay does).
            self.viewer_left(now, user);
        }
        let (grants, mut orphans) = self.tracker.join(id, relay, &|_, _| ASSUMED_RTT);
        orphans.extend(self.tracker.take_orphans());
        self.stats.viewers += 1;
        // The starvation threshold scales with the audience (one starving request per 250).
        self.seed.set_audience(self.stats.viewers as u32);
        self.send_grants(user, id, grants);
        self.orphans(orphans);
        self.seed.handle_timeout(now);
        self.pump();
    }

    /// A viewer's relay offer moved (`stream_join` again on the same layer with another
    /// `relay`: its throttler's cap or its setting changed). The tracker's books follow; the
    /// downstreams a lowered offer no longer covers are moved elsewhere (both ends hear
    /// `gone`, the orphan asks for more). A viewer that had announced its leave (or is not
    /// in the books) joins again instead.
    pub fn viewer_budget(&mut self, now: Time, user: UserId, relay: Bitrate) {
        if user == self.streamer {
            return;
        }
        let Some(&id) = self.ids.get(&user) else {
            self.viewer_joined(now, user, relay);
            return;
        };
        if id == ROOT {
            return;
        }
        if !self.tracker.is_alive(id) || self.draining.contains_key(&user) {
            self.viewer_joined(now, user, relay);
            return;
        }
        self.stats.budget_changes += 1;
        let orphans = self.tracker.set_budget(id, relay);
        self.stats.budget_orphans += orphans.len() as u64;
        self.orphans(orphans);
        self.seed.handle_timeout(now);
        self.pump();
    }

    /// A viewer announced that it leaves (`leave`): out of the tracker's books now (never
    /// granted again, its own grants back in the pools), its downstreams told it is `leaving`
    /// (they ask for new grants); it stays draining (still linked, still serving them) until it
    /// leaves or the grace passes.
    pub fn viewer_leaving(&mut self, now: Time, user: UserId) {
        let Some(&id) = self.ids.get(&user) else {
            return;
        };
        if id == ROOT || !self.tracker.is_alive(id) {
            return;
        }
        self.stats.leaves_announced += 1;
        let downs = self.tracker.leave(id);
        let mut down_users = Vec::with_capacity(downs.len());
        for d in downs {
            let Some(&du) = self.users.get(&d) else {
                continue;
            };
            down_users.push(du);
            // It asks for new grants (`want`) at once and keeps asking the leaver meanwhile.
            // Not re-seated here in the same breath: when the top of the mesh leaves together,
            // the first leaver's downstreams were re-seated on the next leavers and the root's
            // spare went in top-ups, and the stayers played 40% in `hum sim` (88.7% with
            // `want`; docs/mesh.md "Leaving").
            self.signal(du, MeshSignal::Leaving { user });
        }
        self.stats.reseated += down_users.len() as u64;
        self.draining.insert(
            user,
            Drain {
                until: now + self.cfg.leave_grace,
                downs: down_users,
            },
        );
        let more = self.tracker.take_orphans();
        self.orphans(more);
        self.seed.handle_timeout(now);
        self.pump();
    }

    /// Whether `user` announced its leave and has not gone yet.
    pub fn is_draining(&self, user: UserId) -> bool {
        self.draining.contains_key(&user)
    }

    /// A viewer left (or went offline).
    pub fn viewer_left(&mut self, now: Time, user: UserId) {
        let Some(&id) = self.ids.get(&user) else {
            return;
        };
        if id == ROOT {
            return;
        }
        if let Some(d) = self.draining.remove(&user) {
            self.drained(now, user, id, d);
            return;
        }
        if !self.tracker.is_alive(id) {
            // Gone already (its grace ran out): nothing left of it here.
            return;
        }
        let orphans = self.tracker.leave(id);
        self.seed.peer_gone(id);
        self.stats.viewers = self.stats.viewers.saturating_sub(1);
        self.seed.set_audience(self.stats.viewers as u32);
        for o in orphans {
            // Each hears it and asks for more (`want`) when it needs to.
            if let Some(&ou) = self.users.get(&o) {
                self.signal(ou, MeshSignal::Gone { user });
            }
        }
        let more = self.tracker.take_orphans();
        self.orphans(more);
        self.seed.handle_timeout(now);
        self.pump();
    }

    /// A draining viewer goes (it left, or its grace ran out): the downstreams it had when it
    /// announced hear `gone` (they have been asking it nothing new since `leaving`).
    fn drained(&mut self, now: Time, user: UserId, id: PeerId, d: Drain) {
        self.seed.peer_gone(id);
        self.stats.viewers = self.stats.viewers.saturating_sub(1);
        self.seed.set_audience(self.stats.viewers as u32);
        for du in d.downs {
            self.signal(du, MeshSignal::Gone { user });
        }
        self.seed.handle_timeout(now);
        self.pump();
    }

    fn expire_drains(&mut self, now: Time) {
        while let Some((&user, _)) = self.draining.iter().find(|(_, d)| d.until <= now) {
            if let (Some(d), Some(&id)) = (self.draining.remove(&user), self.ids.get(&user)) {
                self.drained(now, user, id, d);
            }
        }
    }

    /// A viewer's link to the root closed: drop what it asked for.
    pub fn link_closed(&mut self, user: UserId) {
        if let Some(&id) = self.ids.get(&user) {
            self.seed.peer_gone(id);
        }
    }

    /// A tracker signal from a viewer (`want`, `ban`); others are ignored.
    pub fn signal_in(&mut self, now: Time, from: UserId, signal: MeshSignal) {
        let Some(&id) = self.ids.get(&from) else {
            return;
        };
        match signal {
            MeshSignal::Want { .. } => {
                let grants = self.tracker.refill(id, &|_, _| ASSUMED_RTT);
                let orphans = self.tracker.take_orphans();
                if !grants.is_empty() {
                    self.send_grants(from, id, grants);
                }
                self.orphans(orphans);
            }
            MeshSignal::Leave => {
                self.viewer_leaving(now, from);
                return;
            }
            MeshSignal::Ban { user } => {
                let Some(&up) = self.ids.get(&user) else {
                    return;
                };
                self.tracker.ban(id, up);
                self.stats.bans += 1;
                let orphans = self.tracker.take_orphans();
                self.orphans(orphans);
            }
            _ => {}
        }
        self.seed.handle_timeout(now);
        self.pump();
    }

    /// A mesh message from a viewer's link to the root (requests, cancels, buffer health).
    pub fn handle_input(&mut self, now: Time, from: UserId, msg: MeshMsg) {
        let Some(&id) = self.ids.get(&from) else {
            return;
        };
        if id == ROOT {
            return;
        }
        self.seed.handle_input(now, id, msg);
        self.pump();
    }

    pub fn handle_timeout(&mut self, now: Time) {
        self.expire_drains(now);
        self.seed.handle_timeout(now);
        self.pump();
    }

    pub fn poll_output(&mut self) -> HostOutput {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        let drain = self.draining.values().map(|d| d.until).min();
        match self.seed.poll_output() {
            Output::Timeout(t) => HostOutput::Timeout(drain.map_or(t, |d| d.min(t))),
            // `pump` moved everything else already.
            _ => HostOutput::Timeout(Time::ZERO),
        }
    }

    /// Move the seed's sends into our queue (by user).
    fn pump(&mut self) {
        loop {
            match self.seed.poll_output() {
                Output::Timeout(_) => return,
                Output::Send { to, msg } => {
                    if let Some(&u) = self.users.get(&to) {
                        if let MeshMsg::Data { payload, .. } = &msg {
                            self.stats.served += 1;
                            self.stats.served_bytes += payload.len() as u64;
                        }
                        self.out.push_back(HostOutput::Send { to: u, msg });
                    }
                }
                Output::Event(_) => {}
            }
        }
    }

    fn signal(&mut self, to: UserId, signal: MeshSignal) {
        self.out.push_back(HostOutput::Signal { to, signal });
    }

    fn send_grants(&mut self, user: UserId, id: PeerId, grants: Vec<Grant>) {
        let live = self.seed.newest().unwrap_or(0);
        let mut out = Vec::new();
        for g in grants {
            if g.up == ROOT {
                // Only a real seed (a large root grant) is the root's feed; top-ups are fallback.
                self.seed
                    .set_granted(id, g.rate.bps() * 2 >= self.cfg.stream_rate.bps());
            }
            if let Some(&u) = self.users.get(&g.up) {
                out.push(MeshGrant {
                    user: u,
                    rate: g.rate,
                });
            }
        }
        self.signal(
            user,
            MeshSignal::Grants {
                live_seq: live,
                grants: out,
            },
        );
    }

    /// The tracker moved each `o` off `lost`: both ends hear of it (`o` then asks for more).
    fn orphans(&mut self, orphans: Vec<(PeerId, PeerId)>) {
        for (o, lost) in orphans {
            let (Some(&ou), Some(&lu)) = (self.users.get(&o), self.users.get(&lost)) else {
                continue;
            };
            if lost == ROOT {
                self.seed.set_granted(o, false);
            } else {
                self.signal(lu, MeshSignal::Gone { user: ou });
            }
            self.signal(ou, MeshSignal::Gone { user: lu });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::Chunk;
    use crate::manifest::Publisher;
    use hum_proto::mesh::{AbsentReason, Layer};

    fn user(n: u8) -> UserId {
        UserId([n; 32])
    }

    fn chunk(seq: u64, body: &[u8]) -> Chunk {
        Chunk::new(
            Layer::High,
            seq,
            seq * 250_000,
            250_000,
            true,
            Arc::from(body),
        )
    }

    fn drain(h: &mut RootHost) -> Vec<HostOutput> {
        let mut v = Vec::new();
        loop {
            match h.poll_output() {
                HostOutput::Timeout(_) => return v,
                o => v.push(o),
            }
        }
    }

    fn host() -> (RootHost, Publisher) {
        let p = Publisher::from_seed([7; 32]);
        let streamer = UserId(p.public_key().to_bytes());
        let cfg = HostConfig::new(Layer::High, Bitrate::from_kbps(400));
        let h = RootHost::new(cfg, streamer, Verifier::new(p.public_key()), 1, Time::ZERO);
        (h, p)
    }

    #[test]
    fn the_root_policy_is_on_with_the_simulators_ceiling() {
        let cfg = HostConfig::new(Layer::High, Bitrate::from_kbps(400));
        assert_eq!(cfg.cap, Bitrate::from_kbps(500));
        assert_eq!(cfg.ceiling, Bitrate::from_kbps(1000), "twice the cap");
    }

    #[test]
    fn uploads_are_checked_before_they_are_served() {
        let (mut h, p) = host();
        let c = chunk(0, b"chunk zero");
        let rec = p.sign(&c, c.payload.len() as u32);
        // Altered payload, wrong size, foreign key, wrong layer: refused, nothing kept.
        assert_eq!(
            h.upload(Time::ZERO, rec, Arc::from(&b"chunk zerO"[..])),
            Err(UploadError::Verify(VerifyError::BadHash))
        );
        let short = p.sign(&c, 3);
        assert!(matches!(
            h.upload(Time::ZERO, short, c.payload.clone()),
            Err(UploadError::SizeMismatch { .. })
        ));
        let other = Publisher::from_seed([8; 32]).sign(&c, c.payload.len() as u32);
        assert_eq!(
            h.upload(Time::ZERO, other, c.payload.clone()),
            Err(UploadError::Verify(VerifyError::BadSignature))
        );
        let mut low = chunk(0, b"chunk zero");
        low.layer = Layer::Low;
        let low_rec = p.sign(&low, low.payload.len() as u32);
        assert!(matches!(
            h.upload(Time::ZERO, low_rec, low.payload.clone()),
            Err(UploadError::WrongLayer(..))
        ));
        assert_eq!(h.newest(), None);
        assert_eq!(h.stats.refused, 4);
        // The real one is accepted; a replay of it is not newer.
        h.upload(Time::ZERO, rec, c.payload.clone()).unwrap();
        assert!(matches!(
            h.upload(Time::ZERO, rec, c.payload.clone()),
            Err(UploadError::NotNewer { .. })
        ));
        assert_eq!((h.stats.uploaded, h.newest()), (1, Some(0)));
    }

    #[test]
    fn a_viewer_gets_grants_from_the_root_and_is_served_verified_chunks() {
        let (mut h, p) = host();
        let streamer = h.streamer();
        h.viewer_joined(Time::ZERO, user(1), Bitrate::from_mbps(2));
        let out = drain(&mut h);
        let grants = out.iter().find_map(|o| match o {
            HostOutput::Signal {
                to,
                signal: MeshSignal::Grants { grants, .. },
            } if *to == user(1) => Some(grants.clone()),
            _ => None,
        });
        let grants = grants.expect("the viewer got grants");
        assert!(grants.iter().any(|g| g.user == streamer), "{grants:?}");
        let c = chunk(0, b"payload");
        let rec = p.sign(&c, c.payload.len() as u32);
        h.upload(Time::from_millis(10), rec, c.payload.clone())
            .unwrap();
        h.handle_input(
            Time::from_millis(20),
            user(1),
            MeshMsg::Request {
                layer: Layer::High,
                seq: 0,
                deadline_ms: 1000,
            },
        );
        let mut got = None;
        for t in 2..50 {
            h.handle_timeout(Time::from_millis(20 * t));
            for o in drain(&mut h) {
                if let HostOutput::Send {
                    to,
                    msg:
                        MeshMsg::Data {
                            record, payload, ..
                        },
                } = o
                {
                    assert_eq!(to, user(1));
                    got = Some((record, payload));
                }
            }
        }
        let (record, payload) = got.expect("served");
        assert_eq!(*record, rec);
        assert_eq!(&payload[..], b"payload");
        assert_eq!(h.stats.served, 1);
        // A chunk never published is absent, not waited on forever.
        h.handle_input(
            Time::from_millis(2000),
            user(1),
            MeshMsg::Request {
                layer: Layer::Low,
                seq: 0,
                deadline_ms: 1000,
            },
        );
        assert!(drain(&mut h).iter().any(|o| matches!(
            o,
            HostOutput::Send {
                msg: MeshMsg::Absent {
                    reason: AbsentReason::NotHeld,
                    ..
                },
                ..
            }
        )));
        // Messages from strangers are ignored.
        h.handle_input(
            Time::from_millis(2100),
            user(9),
            MeshMsg::Request {
                layer: Layer::High,
                seq: 0,
                deadline_ms: 1000,
            },
        );
        assert!(drain(&mut h).is_empty());
        h.viewer_left(Time::from_millis(2200), user(1));
        assert_eq!(h.stats.viewers, 0);
    }

    /// (to, signal) of every signal in `out`.
    fn signals(out: &[HostOutput]) -> Vec<(UserId, MeshSignal)> {
        out.iter()
            .filter_map(|o| match o {
                HostOutput::Signal { to, signal } => Some((*to, signal.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_announced_leave_reseats_the_downstreams_first_and_says_gone_when_it_goes() {
        let (mut h, _) = host();
        // 1 takes the root's one seat; 2 and 3 can only hang below it.
        h.viewer_joined(Time::ZERO, user(1), Bitrate::from_mbps(2));
        h.viewer_joined(Time::ZERO, user(2), Bitrate::from_mbps(2));
        h.viewer_joined(Time::ZERO, user(3), Bitrate::ZERO);
        drain(&mut h);
        let t = Time::from_secs(10);
        h.signal_in(t, user(1), MeshSignal::Leave);
        let sig = signals(&drain(&mut h));
        assert!(h.is_draining(user(1)));
        let downs: Vec<UserId> = sig
            .iter()
            .filter(|(_, s)| *s == MeshSignal::Leaving { user: user(1) })
            .map(|(to, _)| *to)
            .collect();
        assert!(!downs.is_empty(), "{sig:?}");
        assert!(
            !sig.iter()
                .any(|(_, s)| matches!(s, MeshSignal::Gone { .. })),
            "nobody hears gone yet: {sig:?}"
        );
        // Each downstream asks for more and is re-seated, never on the leaver.
        for d in &downs {
            h.signal_in(t, *d, MeshSignal::Want { count: 4 });
            let sig = signals(&drain(&mut h));
            let g = sig.iter().find_map(|(to, s)| match s {
                MeshSignal::Grants { grants, .. } if to == d => Some(grants.clone()),
                _ => None,
            });
            let g = g.unwrap_or_else(|| panic!("{d:?} got no new grants: {sig:?}"));
            assert!(g.iter().all(|x| x.user != user(1)), "{g:?}");
        }
        assert_eq!(h.stats.leaves_announced, 1);
        assert_eq!(h.stats.viewers, 3, "still draining");
        // It asks for nothing more; a newcomer is never granted the leaver.
        h.signal_in(t, user(1), MeshSignal::Want { count: 2 });
        assert!(signals(&drain(&mut h)).is_empty());
        h.viewer_joined(t, user(4), Bitrate::ZERO);
        for (_, s) in signals(&drain(&mut h)) {
            if let MeshSignal::Grants { grants, .. } = s {
                assert!(grants.iter().all(|x| x.user != user(1)), "{grants:?}");
            }
        }
        // It leaves: only now its old downstreams hear gone; a second leave changes nothing.
        h.viewer_left(Time::from_secs(12), user(1));
        let gone: Vec<UserId> = signals(&drain(&mut h))
            .into_iter()
            .filter(|(_, s)| *s == MeshSignal::Gone { user: user(1) })
            .map(|(to, _)| to)
            .collect();
        assert_eq!(gone, downs);
        assert_eq!(h.stats.viewers, 3);
        h.viewer_left(Time::from_secs(13), user(1));
        assert_eq!(h.stats.viewers, 3);
        assert!(drain(&mut h).is_empty());
    }

    /// A relay's offer falls to nothing (its throttler protects a game): the viewer it fed
    /// and it both hear `gone`, and the viewer is fed from elsewhere when it asks.
    #[test]
    fn a_relay_offer_that_falls_moves_its_downstreams() {
        let (mut h, _) = host();
        h.viewer_joined(Time::ZERO, user(1), Bitrate::from_mbps(2));
        h.viewer_joined(Time::ZERO, user(2), Bitrate::ZERO);
        let fed_by_1 = signals(&drain(&mut h)).into_iter().any(|(to, s)| {
            to == user(2)
                && matches!(&s, MeshSignal::Grants { grants, .. }
                    if grants.iter().any(|g| g.user == user(1)))
        });
        assert!(fed_by_1, "user 1 (2 Mbit/s) feeds user 2");
        // The same offer again changes nothing; none at all moves user 2 off it.
        h.viewer_budget(Time::from_millis(10), user(1), Bitrate::from_mbps(2));
        assert!(signals(&drain(&mut h)).is_empty());
        h.viewer_budget(Time::from_millis(20), user(1), Bitrate::ZERO);
        let out = signals(&drain(&mut h));
        assert!(
            out.contains(&(user(2), MeshSignal::Gone { user: user(1) })),
            "{out:?}"
        );
        assert!(out.contains(&(user(1), MeshSignal::Gone { user: user(2) })));
        assert_eq!((h.stats.budget_changes, h.stats.budget_orphans), (2, 1));
        // The streamer is ignored; a viewer the host does not know is seated (it joined).
        let streamer = h.streamer();
        h.viewer_budget(Time::from_millis(30), streamer, Bitrate::ZERO);
        assert!(signals(&drain(&mut h)).is_empty());
        h.viewer_budget(Time::from_millis(30), user(9), Bitrate::ZERO);
        assert!(
            signals(&drain(&mut h))
                .iter()
                .any(|(to, s)| *to == user(9) && matches!(s, MeshSignal::Grants { .. }))
        );
    }

    #[test]
    fn a_draining_viewer_that_never_leaves_is_removed_after_the_grace() {
        let (mut h, _) = host();
        h.viewer_joined(Time::ZERO, user(1), Bitrate::from_mbps(2));
        h.viewer_joined(Time::ZERO, user(2), Bitrate::ZERO);
        drain(&mut h);
        let t = Time::from_secs(1);
        h.signal_in(t, user(1), MeshSignal::Leave);
        drain(&mut h);
        let until = t + h.cfg.leave_grace;
        let next = loop {
            match h.poll_output() {
                HostOutput::Timeout(at) => break at,
                _ => continue,
            }
        };
        assert!(next <= until, "the host wakes for the grace: {next:?}");
        h.handle_timeout(until - Duration::from_millis(1));
        assert!(signals(&drain(&mut h)).is_empty());
        h.handle_timeout(until);
        assert_eq!(
            signals(&drain(&mut h)),
            vec![(user(2), MeshSignal::Gone { user: user(1) })]
        );
        assert!(!h.is_draining(user(1)));
        assert_eq!(h.stats.viewers, 1);
        // The relay's `stream_leave` after that: nothing more.
        h.viewer_left(until + Duration::from_secs(1), user(1));
        assert_eq!(h.stats.viewers, 1);
        assert!(signals(&drain(&mut h)).is_empty());
    }
}
