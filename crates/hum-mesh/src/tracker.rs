//! The relay's tracker: who feeds whom.
//!
//! The relay knows every viewer's relay budget and roughly where it is, so it introduces peers and
//! reserves *grants*: a grant is a share of an upstream's budget reserved for one downstream (a
//! quarter of the stream by default, so a viewer has at least four upstreams when peers are strong and
//! up to six when they are weak). Rules, and why:
//!
//! - **Shallow first.** Peers sit on levels (root = 0, a peer = 1 + the deepest of its upstreams). A
//!   newcomer gets grants from the lowest level with spare upload: every level adds a store-and-forward
//!   hop of lag.
//! - **Low RTT and spare upload.** Within a level a few random candidates are scored by spare upload
//!   over RTT; random sampling keeps the cost O(1) per grant at 100,000 peers and spreads load.
//! - **Relays outrank leaves.** A leaf (a peer that relays nothing) holding a grant shallower than the
//!   shallowest spare upload gives it up to a relay that needs a seat, and is refilled deeper. Leaves
//!   that joined early would otherwise sit on the top levels' upload and push every later relay (and its
//!   whole subtree) a level down: with one server copy that made a 19-27 level tree at 10k-100k peers;
//!   with it, 8-9.
//! - **The root seeds the strongest.** Root grants (bounded by the global cap) go to peers that can
//!   relay a full stream; when the root is full and a stronger peer arrives, a weak root child is moved
//!   down (it gets new grants like any orphan); a relay left with no upstream takes a free root seat.
//!   Weak peers never sit at the top of the tree.
//! - **No cycles.** A peer that already feeds others only gets upstreams from levels above its own.
//! - **Replace at once.** When a peer leaves, its downstreams are returned as orphans to be refilled.
//!   A leave announced ahead (graceful: the host's draining, docs/mesh.md "Leaving") is the same
//!   [`Tracker::leave`] here, only earlier: the leaver is out of the tracker's books at once (its
//!   downstreams re-seated, its own grants back in the pools for them, never granted again) while
//!   in the mesh it keeps serving a few seconds.
//!
//! Peer ids index a table, so the relay should assign dense ids.

use std::time::Duration;

use hum_proto::Bitrate;

use crate::PeerId;

#[derive(Clone, Debug)]
pub struct TrackerConfig {
    pub stream_rate: Bitrate,
    /// The usual grant size.
    pub grant_unit: Bitrate,
    /// At most this many grants per peer: bounds its connections (and so its usable upload).
    pub max_grants: u32,
    /// Grants the root may hand out (its cap minus the fallback reserve).
    pub root_capacity: Bitrate,
    /// Candidates sampled per grant.
    pub candidates: usize,
    pub max_upstreams: usize,
    /// Grant at most this fraction of a peer's budget: a queue served at 100% utilisation grows
    /// without bound, and end-game duplicates need room.
    pub utilisation: f64,
    /// Peers with less relay budget than this do not relay this layer: serving a chunk at rate B takes
    /// `duration * r / B`, so a peer at a quarter of the stream rate would add four chunk durations of
    /// lag per hop to everyone below it. (They can still relay a lower layer; see `layer::relayable`.)
    pub min_relay: Bitrate,
    /// A peer banned by this many distinct downstreams (each caught it serving a chunk that failed
    /// verification) relays for nobody any more: its remaining downstreams are moved at once.
    pub evict_after: u8,
}

impl TrackerConfig {
    pub fn new(stream_rate: Bitrate, root_capacity: Bitrate) -> Self {
        TrackerConfig {
            stream_rate,
            grant_unit: Bitrate::from_bps(stream_rate.bps() / 4),
            max_grants: 80,
            root_capacity,
            candidates: 6,
            max_upstreams: 6,
            utilisation: 0.8,
            min_relay: stream_rate,
            evict_after: 3,
        }
    }
    fn min_grant(&self) -> u64 {
        (self.grant_unit.bps() / 4).max(1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub up: PeerId,
    pub rate: Bitrate,
}

#[derive(Clone, Debug, Default)]
struct Entry {
    alive: bool,
    budget: u64,
    spare: u64,
    level: u8,
    /// Relays this layer (its usable budget is worth granting).
    relay: bool,
    ups: Vec<(u32, u64)>,
    downs: Vec<(u32, u64)>,
    banned: Vec<u32>,
    /// Distinct downstreams that banned this peer.
    banned_by: u8,
}

#[derive(Debug)]
pub struct Tracker {
    cfg: TrackerConfig,
    root: PeerId,
    peers: Vec<Entry>,
    pools: Vec<Vec<u32>>,
    rng: u64,
    /// Per level of the upstream: (leaf, upstream) grants held by leaves (peers that relay nothing).
    /// A relay outranks a leaf at every level: see [`Tracker::preempt_leaves`]. Validated lazily.
    leafy: Vec<Vec<(u32, u32)>>,
    /// (orphan, the upstream it lost) from preemptions inside `fill`: see [`Tracker::take_orphans`].
    orphans: Vec<(PeerId, PeerId)>,
}

impl Tracker {
    pub fn new(cfg: TrackerConfig, root: PeerId, seed: u64) -> Self {
        let mut t = Tracker {
            cfg,
            root,
            peers: Vec::new(),
            pools: vec![Vec::new(); 64],
            leafy: vec![Vec::new(); 64],
            orphans: Vec::new(),
            rng: seed | 1,
        };
        let cap = t.cfg.root_capacity.bps();
        let r = t.entry(root);
        r.alive = true;
        r.budget = cap;
        r.spare = cap;
        r.level = 0;
        t
    }

    pub fn config(&self) -> &TrackerConfig {
        &self.cfg
    }

    fn entry(&mut self, p: PeerId) -> &mut Entry {
        let i = p.0 as usize;
        if i >= self.peers.len() {
            self.peers.resize_with(i + 1, Entry::default);
        }
        &mut self.peers[i]
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*: deterministic and cheap.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// What a peer with `budget` can usefully give (its grant slots bound it).
    pub fn usable(&self, budget: Bitrate) -> Bitrate {
        Bitrate::from_bps(
            budget
                .bps()
                .min(self.cfg.max_grants as u64 * self.cfg.grant_unit.bps()),
        )
    }

    /// In the tracker's books (joined, not left).
    pub fn is_alive(&self, p: PeerId) -> bool {
        self.peers.get(p.0 as usize).is_some_and(|e| e.alive)
    }

    pub fn level(&self, p: PeerId) -> u8 {
        self.peers.get(p.0 as usize).map_or(0, |e| e.level)
    }

    pub fn upstreams(&self, p: PeerId) -> Vec<Grant> {
        self.peers.get(p.0 as usize).map_or(Vec::new(), |e| {
            e.ups
                .iter()
                .map(|&(u, g)| Grant {
                    up: PeerId(u),
                    rate: Bitrate::from_bps(g),
                })
                .collect()
        })
    }

    /// Peers that lost a grant inside `join`/`refill` (leaf preemption): tell each that the upstream is
    /// gone and refill it.
    pub fn take_orphans(&mut self) -> Vec<(PeerId, PeerId)> {
        std::mem::take(&mut self.orphans)
    }

    /// (level, pool entries, live entries with spare) per non-empty level: for diagnostics.
    pub fn pool_summary(&self) -> Vec<(usize, usize, usize)> {
        let min = self.cfg.min_grant();
        self.pools
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.is_empty())
            .map(|(l, p)| {
                let live = p.iter().filter(|&&c| {
                    let e = &self.peers[c as usize];
                    e.alive && e.spare >= min && e.level as usize == l
                });
                (l, p.len(), live.count())
            })
            .collect()
    }

    /// Alive peers with spare upload but in no pool at their level: should be none.
    pub fn unpooled_with_spare(&self) -> Vec<(u32, u8, u64)> {
        let min = self.cfg.min_grant();
        (1..self.peers.len())
            .filter(|&i| {
                let e = &self.peers[i];
                e.alive && e.spare >= min && !self.pools[e.level as usize].contains(&(i as u32))
            })
            .map(|i| (i as u32, self.peers[i].level, self.peers[i].spare))
            .collect()
    }

    pub fn root_spare(&self) -> Bitrate {
        Bitrate::from_bps(self.peers[self.root.0 as usize].spare)
    }

    /// A viewer joins with `budget` of relay upload. Returns its grants and the peers that lost a grant
    /// to make room (each to be told and refilled).
    pub fn join(
        &mut self,
        peer: PeerId,
        budget: Bitrate,
        rtt: &dyn Fn(PeerId, PeerId) -> Duration,
    ) -> (Vec<Grant>, Vec<(PeerId, PeerId)>) {
        let usable = self.grantable(budget);
        let e = self.entry(peer);
        *e = Entry {
            alive: true,
            budget: budget.bps(),
            spare: usable,
            level: 1,
            relay: usable > 0,
            ..Entry::default()
        };
        let mut orphans = Vec::new();
        let r = self.cfg.stream_rate.bps();
        if budget.bps() >= r {
            // Move weak root children down to make room for a strong newcomer: the root's few seeds
            // should be the peers that can feed the most others (a child with less than the stream
            // rate, or less than half the newcomer's budget, counts as weak).
            let mine = budget.bps();
            while self.peers[self.root.0 as usize].spare < r {
                let root = self.root.0 as usize;
                let weak = self.peers[root]
                    .downs
                    .iter()
                    .filter(|(d, _)| {
                        let b = self.peers[*d as usize].budget;
                        b < r || b.saturating_mul(2) < mine
                    })
                    .min_by_key(|(d, _)| (self.peers[*d as usize].budget, *d))
                    .copied();
                let Some((d, _)) = weak else { break };
                self.drop_edge(PeerId(d), self.root);
                orphans.push((PeerId(d), self.root));
            }
            let root = self.root.0 as usize;
            if self.peers[root].spare >= r {
                self.link(peer.0, self.root.0, r);
            }
        }
        let mut grants = self.fill(peer, rtt);
        if let Some(&(u, g)) = self.peers[peer.0 as usize]
            .ups
            .iter()
            .find(|x| x.0 == self.root.0)
            && !grants.iter().any(|x| x.up.0 == u)
        {
            grants.insert(
                0,
                Grant {
                    up: self.root,
                    rate: Bitrate::from_bps(g),
                },
            );
        }
        self.relevel(peer);
        (grants, orphans)
    }

    /// Top `peer` up to the stream rate (after it lost an upstream). Returns the new grants only.
    pub fn refill(&mut self, peer: PeerId, rtt: &dyn Fn(PeerId, PeerId) -> Duration) -> Vec<Grant> {
        if !self.peers.get(peer.0 as usize).is_some_and(|e| e.alive) {
            return Vec::new();
        }
        self.fill(peer, rtt)
    }

    fn fill(&mut self, peer: PeerId, rtt: &dyn Fn(PeerId, PeerId) -> Duration) -> Vec<Grant> {
        let r = self.cfg.stream_rate.bps();
        let unit = self.cfg.grant_unit.bps();
        let mut touched: Vec<u32> = Vec::new();
        let feeds_others = !self.peers[peer.0 as usize].downs.is_empty();
        let my_level = self.peers[peer.0 as usize].level;
        // A peer that feeds others must not take an upstream from its own subtree (a cycle would make
        // both wait on each other); `candidate` checks that, so any level is allowed.
        let _ = (feeds_others, my_level);
        let max_level = u8::MAX;
        // Spread over peers of the shallowest level that has any, then ask more of those, and only then
        // go a level deeper: depth costs lag on every chunk, fewer upstreams only costs redundancy.
        if self.peers[peer.0 as usize].relay {
            self.reseed_root(peer, &mut touched);
            self.preempt_leaves(peer, &mut touched);
        }
        let shallowest = self
            .candidate(peer, max_level, rtt)
            .map(|c| self.peers[c as usize].level);
        if let Some(l) = shallowest {
            self.take(peer, l.min(max_level), rtt, &mut touched);
            self.grow_existing(peer, &mut touched);
            self.take(peer, max_level, rtt, &mut touched);
            self.grow_existing(peer, &mut touched);
        }
        let _ = unit;
        // Whatever the mesh cannot give, the root gives if it can.
        let have: u64 = self.peers[peer.0 as usize].ups.iter().map(|u| u.1).sum();
        let root = self.root.0;
        if have < r {
            let g = (r - have).min(self.peers[root as usize].spare);
            if g >= self.cfg.min_grant() {
                if self.peers[peer.0 as usize].ups.iter().any(|u| u.0 == root) {
                    self.grow(peer.0, root, g);
                } else {
                    self.link(peer.0, root, g);
                }
                touched.push(root);
            }
        }
        self.relevel(peer);
        touched.sort_unstable();
        touched.dedup();
        let e = &self.peers[peer.0 as usize];
        touched
            .into_iter()
            .filter_map(|u| {
                e.ups.iter().find(|x| x.0 == u).map(|&(u, g)| Grant {
                    up: PeerId(u),
                    rate: Bitrate::from_bps(g),
                })
            })
            .collect()
    }

    /// A relay with no upstream takes the root's seat if the root has a whole stream to spare (its
    /// seed left, or the cap grew): the root's few seeds must be relays, or the whole tree starves.
    fn reseed_root(&mut self, peer: PeerId, touched: &mut Vec<u32>) {
        let r = self.cfg.stream_rate.bps();
        let root = self.root.0;
        let e = &self.peers[peer.0 as usize];
        if e.ups.is_empty() && self.peers[root as usize].spare >= r {
            self.link(peer.0, root, r);
            touched.push(root);
        }
    }

    /// The shallowest level holding a peer with spare upload (pool entries are validated lazily).
    fn shallowest_spare(&mut self) -> Option<u8> {
        let min = self.cfg.min_grant();
        for l in 1..self.pools.len() {
            while let Some(&c) = self.pools[l].last() {
                let ce = &self.peers[c as usize];
                if ce.alive && ce.spare >= min && ce.level as usize == l {
                    return Some(l as u8);
                }
                self.pools[l].pop();
            }
        }
        None
    }

    /// Relays outrank leaves at every level: while a leaf holds a grant shallower than the
    /// shallowest spare upload, a relay takes that grant and the leaf is moved down (returned as an
    /// orphan, refilled like any other). Without this, leaves that happen to join early sit on the
    /// top levels' upload and every relay after them starts a level deeper: with a few seeds at the
    /// root that made a 20-level tree. The leaf loses a level of lag, the relay's whole subtree
    /// gains one.
    fn preempt_leaves(&mut self, peer: PeerId, touched: &mut Vec<u32>) {
        let r = self.cfg.stream_rate.bps();
        let min = self.cfg.min_grant();
        let mut budget = 16;
        loop {
            let e = &self.peers[peer.0 as usize];
            let have: u64 = e.ups.iter().map(|u| u.1).sum();
            if have >= r || e.ups.len() >= self.cfg.max_upstreams || budget == 0 {
                return;
            }
            let feeds = !e.downs.is_empty();
            budget -= 1;
            let spare_at = self.shallowest_spare().unwrap_or(u8::MAX);
            // The shallowest valid leaf grant above `spare_at` whose upstream we may use.
            let mut found = None;
            'levels: for l in 1..(spare_at as usize).min(self.leafy.len()) {
                while let Some(&(leaf, up)) = self.leafy[l].last() {
                    let le = &self.peers[leaf as usize];
                    let ue = &self.peers[up as usize];
                    let valid = le.alive
                        && !le.relay
                        && ue.alive
                        && ue.relay
                        && ue.level as usize == l
                        && le.ups.iter().any(|x| x.0 == up);
                    if !valid {
                        self.leafy[l].pop();
                        continue;
                    }
                    let me = &self.peers[peer.0 as usize];
                    if up == peer.0
                        || me.ups.iter().any(|x| x.0 == up)
                        || me.banned.contains(&up)
                        || ue.banned.contains(&peer.0)
                        || (feeds && self.descends_from(up, peer.0))
                    {
                        // Usable by someone else: leave it, try a deeper level.
                        continue 'levels;
                    }
                    self.leafy[l].pop();
                    found = Some((leaf, up));
                    break 'levels;
                }
            }
            let Some((leaf, up)) = found else { return };
            self.drop_edge(PeerId(leaf), PeerId(up));
            self.orphans.push((PeerId(leaf), PeerId(up)));
            let g = self.peers[up as usize].spare.min(r - have);
            if g >= min {
                self.link(peer.0, up, g);
                touched.push(up);
            }
        }
    }

    fn take(
        &mut self,
        peer: PeerId,
        max_level: u8,
        rtt: &dyn Fn(PeerId, PeerId) -> Duration,
        touched: &mut Vec<u32>,
    ) {
        let r = self.cfg.stream_rate.bps();
        let unit = self.cfg.grant_unit.bps();
        loop {
            let e = &self.peers[peer.0 as usize];
            let have: u64 = e.ups.iter().map(|u| u.1).sum();
            if have >= r || e.ups.len() >= self.cfg.max_upstreams {
                break;
            }
            let need = r - have;
            let slots_left = self.cfg.max_upstreams - e.ups.len();
            let Some(c) = self.candidate(peer, max_level, rtt) else {
                break;
            };
            let spare = self.peers[c as usize].spare;
            let g = if slots_left > 1 {
                spare.min(unit).min(need)
            } else {
                spare.min(need)
            };
            self.link(peer.0, c, g);
            touched.push(c);
        }
    }

    fn grow_existing(&mut self, peer: PeerId, touched: &mut Vec<u32>) {
        let r = self.cfg.stream_rate.bps();
        let ups: Vec<u32> = self.peers[peer.0 as usize]
            .ups
            .iter()
            .map(|u| u.0)
            .collect();
        for u in ups {
            let have: u64 = self.peers[peer.0 as usize].ups.iter().map(|u| u.1).sum();
            if have >= r {
                break;
            }
            if u == self.root.0 {
                continue;
            }
            let g = (r - have).min(self.peers[u as usize].spare);
            if g > 0 {
                self.grow(peer.0, u, g);
                touched.push(u);
            }
        }
    }

    fn grow(&mut self, down: u32, up: u32, g: u64) {
        let g = g.min(self.peers[up as usize].spare);
        self.peers[up as usize].spare -= g;
        if let Some(x) = self.peers[up as usize]
            .downs
            .iter_mut()
            .find(|x| x.0 == down)
        {
            x.1 += g;
        }
        if let Some(x) = self.peers[down as usize].ups.iter_mut().find(|x| x.0 == up) {
            x.1 += g;
        }
    }

    fn relevel(&mut self, peer: PeerId) {
        let e = &self.peers[peer.0 as usize];
        let lvl = e
            .ups
            .iter()
            .map(|&(u, _)| self.peers[u as usize].level)
            .max()
            .map_or(1, |m| m.saturating_add(1))
            .min(63);
        let spare = e.spare;
        let changed = e.level != lvl;
        let has_ups = !e.ups.is_empty();
        self.peers[peer.0 as usize].level = lvl;
        if (changed || has_ups) && spare >= self.cfg.min_grant() && peer != self.root {
            self.pools[lvl as usize].push(peer.0);
        }
    }

    fn candidate(
        &mut self,
        peer: PeerId,
        max_level: u8,
        rtt: &dyn Fn(PeerId, PeerId) -> Duration,
    ) -> Option<u32> {
        let min = self.cfg.min_grant();
        for l in 1..self.pools.len() {
            if l as u8 > max_level {
                break;
            }
            let mut best: Option<(f64, u32)> = None;
            let mut tries = 0;
            while tries < self.cfg.candidates * 2 && !self.pools[l].is_empty() {
                tries += 1;
                let i = (self.next_rand() % self.pools[l].len() as u64) as usize;
                let c = self.pools[l][i];
                let ce = &self.peers[c as usize];
                if !ce.alive || ce.spare < min || ce.level as usize != l {
                    self.pools[l].swap_remove(i);
                    continue;
                }
                let me = &self.peers[peer.0 as usize];
                if c == peer.0
                    || me.ups.iter().any(|u| u.0 == c)
                    || me.downs.iter().any(|d| d.0 == c)
                    || me.banned.contains(&c)
                    || ce.banned.contains(&peer.0)
                {
                    continue;
                }
                if !me.downs.is_empty() && ce.level >= me.level && self.descends_from(c, peer.0) {
                    continue;
                }
                let rtt_ms = rtt(peer, PeerId(c)).as_secs_f64() * 1000.0;
                let score = (ce.spare as f64 / 1e6) / (1.0 + rtt_ms / 40.0);
                if best.is_none_or(|(s, _)| score > s) {
                    best = Some((score, c));
                }
                if tries >= self.cfg.candidates && best.is_some() {
                    break;
                }
            }
            if let Some((_, c)) = best {
                return Some(c);
            }
        }
        None
    }

    /// Whether `c` is (or may be: the walk is bounded) in `peer`'s subtree.
    ///
    /// The walk goes up from `c` through its upstreams, each ancestor once: grants form a DAG (a peer
    /// has up to six upstreams), and counting paths instead of ancestors gave up ("maybe") for almost
    /// any candidate a few levels down, so an orphaned relay with a subtree found no upstream at all
    /// and starved its subtree (20% churn at 10k viewers).
    fn descends_from(&self, c: u32, peer: u32) -> bool {
        let mut stack = vec![c];
        let mut seen: Vec<u32> = Vec::with_capacity(64);
        while let Some(x) = stack.pop() {
            if x == peer {
                return true;
            }
            if seen.contains(&x) {
                continue;
            }
            seen.push(x);
            if seen.len() > 512 {
                return true;
            }
            for &(u, _) in &self.peers[x as usize].ups {
                if u != self.root.0 {
                    stack.push(u);
                }
            }
        }
        false
    }

    fn link(&mut self, down: u32, up: u32, g: u64) {
        self.peers[up as usize].spare -= g.min(self.peers[up as usize].spare);
        self.peers[up as usize].downs.push((down, g));
        self.peers[down as usize].ups.push((up, g));
        let l = self.peers[up as usize].level as usize;
        if !self.peers[down as usize].relay && up != self.root.0 && l < self.leafy.len() {
            self.leafy[l].push((down, up));
        }
    }

    /// Remove the grant from `up` to `down` (a ban, or making room at the root).
    pub fn drop_edge(&mut self, down: PeerId, up: PeerId) {
        let (d, u) = (down.0 as usize, up.0 as usize);
        if d >= self.peers.len() || u >= self.peers.len() {
            return;
        }
        let mut g = 0;
        self.peers[d].ups.retain(|&(x, gg)| {
            if x == up.0 {
                g += gg;
                false
            } else {
                true
            }
        });
        self.peers[u].downs.retain(|&(x, _)| x != down.0);
        self.give_back(u, g);
    }

    /// `down` refuses `up` from now on (it banned it). At `evict_after` distinct bans `up` is evicted
    /// as a relay: its other downstreams become orphans (see [`Tracker::take_orphans`]). Without this
    /// the tracker kept re-granting a malicious relay's upload to newcomers and orphans, and each of
    /// them had to catch it serving garbage before banning it (87,000 bans in a 10k run with 10%
    /// malicious peers).
    pub fn ban(&mut self, down: PeerId, up: PeerId) {
        self.drop_edge(down, up);
        let e = self.entry(down);
        if e.banned.contains(&up.0) {
            return;
        }
        e.banned.push(up.0);
        if up == self.root {
            return;
        }
        let evict_after = self.cfg.evict_after;
        let u = self.entry(up);
        u.banned_by = u.banned_by.saturating_add(1);
        if u.banned_by >= evict_after && u.relay {
            u.relay = false;
            u.spare = 0;
            let downs = std::mem::take(&mut u.downs);
            for (d, _) in downs {
                self.peers[d as usize].ups.retain(|&(x, _)| x != up.0);
                self.orphans.push((PeerId(d), up));
            }
            // A root seat is for a relay: an evicted one gives it back, so an orphaned relay can take
            // it (with one server copy, the whole audience hung below a malicious seed otherwise).
            let root = self.root;
            if self.peers[up.0 as usize]
                .ups
                .iter()
                .any(|&(x, _)| x == root.0)
            {
                self.drop_edge(up, root);
                self.orphans.push((up, root));
            }
        }
    }

    fn give_back(&mut self, u: usize, g: u64) {
        let min = self.cfg.min_grant();
        let e = &mut self.peers[u];
        let was = e.spare;
        e.spare += g;
        if e.alive && was < min && e.spare >= min && u != self.root.0 as usize {
            let l = e.level as usize;
            self.pools[l].push(u as u32);
        }
    }

    /// What a peer with relay budget `budget` may grant: nothing below `min_relay`, else its
    /// usable budget at `utilisation`.
    fn grantable(&self, budget: Bitrate) -> u64 {
        if budget.bps() < self.cfg.min_relay.bps() {
            0
        } else {
            (self.usable(budget).bps() as f64 * self.cfg.utilisation) as u64
        }
    }

    /// A viewer's relay budget moved (its throttler holds relaying down to protect a game, or
    /// lets it back up; the user moved the slider). Raised: the spare joins its level's pool for
    /// the next grants. Lowered below what it has granted: its newest downstream grants go
    /// until the rest fit, each returned as (orphan, `peer`) to be told and refilled elsewhere
    /// (as [`Tracker::take_orphans`]); below `min_relay` it relays nothing any more.
    pub fn set_budget(&mut self, peer: PeerId, budget: Bitrate) -> Vec<(PeerId, PeerId)> {
        let i = peer.0 as usize;
        if i >= self.peers.len() || !self.peers[i].alive || peer == self.root {
            return Vec::new();
        }
        let usable = self.grantable(budget);
        let min = self.cfg.min_grant();
        let mut orphans = Vec::new();
        let mut granted: u64 = self.peers[i].downs.iter().map(|&(_, g)| g).sum();
        while granted > usable {
            let Some((d, g)) = self.peers[i].downs.pop() else {
                break;
            };
            granted -= g;
            self.peers[d as usize].ups.retain(|&(x, _)| x != peer.0);
            orphans.push((PeerId(d), peer));
        }
        let e = &mut self.peers[i];
        let was = e.spare;
        e.budget = budget.bps();
        e.relay = usable > 0;
        e.spare = usable.saturating_sub(granted);
        if was < min && e.spare >= min {
            let l = e.level as usize;
            self.pools[l].push(i as u32);
        }
        orphans
    }

    /// A peer leaves. Returns its downstreams, which lost a grant and should be refilled.
    pub fn leave(&mut self, peer: PeerId) -> Vec<PeerId> {
        let i = peer.0 as usize;
        if i >= self.peers.len() || !self.peers[i].alive || peer == self.root {
            return Vec::new();
        }
        self.peers[i].alive = false;
        let ups = std::mem::take(&mut self.peers[i].ups);
        for (u, g) in ups {
            self.peers[u as usize].downs.retain(|&(x, _)| x != peer.0);
            self.give_back(u as usize, g);
        }
        let downs = std::mem::take(&mut self.peers[i].downs);
        let mut orphans = Vec::with_capacity(downs.len());
        for (d, _) in downs {
            self.peers[d as usize].ups.retain(|&(x, _)| x != peer.0);
            orphans.push(PeerId(d));
        }
        orphans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtt(_: PeerId, _: PeerId) -> Duration {
        Duration::from_millis(40)
    }

    fn tracker(root_mbps: u64) -> Tracker {
        Tracker::new(
            TrackerConfig::new(Bitrate::from_mbps(4), Bitrate::from_mbps(root_mbps)),
            PeerId(0),
            7,
        )
    }

    fn total(g: &[Grant]) -> u64 {
        g.iter().map(|g| g.rate.bps()).sum()
    }

    #[test]
    fn strong_peers_sit_under_the_root_and_weak_ones_below() {
        let mut t = tracker(8);
        let (g1, _) = t.join(PeerId(1), Bitrate::from_mbps(20), &rtt);
        assert_eq!(
            g1,
            vec![Grant {
                up: PeerId(0),
                rate: Bitrate::from_mbps(4)
            }]
        );
        assert_eq!(t.level(PeerId(1)), 1);
        let (g2, _) = t.join(PeerId(2), Bitrate::from_kbps(500), &rtt);
        assert_eq!(total(&g2), 4_000_000);
        assert_eq!(
            g2,
            vec![Grant {
                up: PeerId(1),
                rate: Bitrate::from_mbps(4)
            }],
            "the only candidate gives it all"
        );
        assert_eq!(t.level(PeerId(2)), 2);
    }

    #[test]
    fn grants_spread_over_several_upstreams_and_respect_spare() {
        let mut t = tracker(12);
        for p in 1..4 {
            t.join(PeerId(p), Bitrate::from_mbps(8), &rtt);
            assert_eq!(t.level(PeerId(p)), 1);
        }
        let (g, _) = t.join(PeerId(6), Bitrate::ZERO, &rtt);
        assert_eq!(total(&g), 4_000_000);
        assert!(g.len() == 3, "{g:?}");
        assert!(g.iter().all(|x| x.rate.bps() <= 2_000_000), "{g:?}");
        assert_eq!(t.level(PeerId(6)), 2);
    }

    #[test]
    fn a_weak_root_child_is_moved_down_for_a_strong_newcomer() {
        let mut t = tracker(4);
        let (g, _) = t.join(PeerId(1), Bitrate::from_kbps(500), &rtt);
        assert_eq!(
            g,
            vec![Grant {
                up: PeerId(0),
                rate: Bitrate::from_mbps(4)
            }],
            "nobody else can feed it"
        );
        let (g, orphans) = t.join(PeerId(2), Bitrate::from_mbps(20), &rtt);
        assert_eq!(orphans, vec![(PeerId(1), PeerId(0))]);
        assert_eq!(
            g,
            vec![Grant {
                up: PeerId(0),
                rate: Bitrate::from_mbps(4)
            }]
        );
        let g = t.refill(PeerId(1), &rtt);
        assert_eq!(total(&g), 4_000_000);
        assert!(g.iter().all(|x| x.up == PeerId(2)));
    }

    #[test]
    fn a_relay_takes_a_shallow_grant_from_a_leaf_and_the_leaf_moves_down() {
        let mut t = tracker(4);
        // The root's one seed: 10 Mbit/s of budget, 8 grantable.
        t.join(PeerId(1), Bitrate::from_mbps(10), &rtt);
        for leaf in [2, 3] {
            let (g, _) = t.join(PeerId(leaf), Bitrate::ZERO, &rtt);
            assert_eq!(total(&g), 4_000_000);
            assert!(g.iter().all(|x| x.up == PeerId(1)), "{g:?}");
        }
        // Level 1 is full of leaves; a relay arrives and outranks one of them.
        let (g, orphans) = t.join(PeerId(4), Bitrate::from_mbps(10), &rtt);
        assert_eq!(
            g,
            vec![Grant {
                up: PeerId(1),
                rate: Bitrate::from_mbps(4)
            }]
        );
        assert_eq!(t.level(PeerId(4)), 2);
        let mut moved = orphans;
        moved.extend(t.take_orphans());
        assert_eq!(moved, vec![(PeerId(3), PeerId(1))]);
        let g = t.refill(PeerId(3), &rtt);
        assert_eq!(total(&g), 4_000_000);
        assert!(g.iter().all(|x| x.up == PeerId(4)), "{g:?}");
        assert_eq!(t.level(PeerId(3)), 3);
    }

    #[test]
    fn a_relay_orphaned_of_everything_takes_the_roots_free_seat() {
        let mut t = tracker(4);
        t.join(PeerId(1), Bitrate::from_mbps(10), &rtt);
        t.join(PeerId(2), Bitrate::from_mbps(10), &rtt);
        assert_eq!(t.upstreams(PeerId(2))[0].up, PeerId(1));
        let orphans = t.leave(PeerId(1));
        assert_eq!(orphans, vec![PeerId(2)]);
        let g = t.refill(PeerId(2), &rtt);
        assert_eq!(
            g,
            vec![Grant {
                up: PeerId(0),
                rate: Bitrate::from_mbps(4)
            }]
        );
        assert_eq!(t.level(PeerId(2)), 1);
    }

    #[test]
    fn a_relay_banned_by_three_downstreams_relays_for_nobody() {
        let mut t = tracker(4);
        t.join(PeerId(1), Bitrate::from_mbps(40), &rtt);
        for leaf in 2..=6 {
            t.join(PeerId(leaf), Bitrate::ZERO, &rtt);
            assert!(t.upstreams(PeerId(leaf)).iter().all(|g| g.up == PeerId(1)));
        }
        t.ban(PeerId(2), PeerId(1));
        t.ban(PeerId(2), PeerId(1));
        t.ban(PeerId(3), PeerId(1));
        assert!(t.take_orphans().is_empty(), "two distinct bans: not yet");
        let spare = t.root_spare();
        t.ban(PeerId(4), PeerId(1));
        let orphans = t.take_orphans();
        let mut moved: Vec<u32> = orphans
            .iter()
            .filter(|(_, lost)| *lost == PeerId(1))
            .map(|(d, _)| d.0)
            .collect();
        moved.sort_unstable();
        assert_eq!(moved, vec![5, 6], "its remaining downstreams are moved");
        assert!(
            orphans.contains(&(PeerId(1), PeerId(0))),
            "and it gives its root seat back"
        );
        assert!(t.root_spare() > spare);
        assert!(t.upstreams(PeerId(1)).iter().all(|g| g.up != PeerId(0)));
        assert!(t.refill(PeerId(5), &rtt).iter().all(|g| g.up != PeerId(1)));
        let (g, _) = t.join(PeerId(7), Bitrate::ZERO, &rtt);
        assert!(
            g.iter().all(|x| x.up != PeerId(1)),
            "never granted again: {g:?}"
        );
    }

    #[test]
    fn leaving_returns_orphans_and_frees_upstream_spare() {
        let mut t = tracker(4);
        t.join(PeerId(1), Bitrate::from_mbps(8), &rtt);
        t.join(PeerId(2), Bitrate::from_mbps(8), &rtt); // root full: fed by 1
        let (g3, _) = t.join(PeerId(3), Bitrate::ZERO, &rtt);
        assert!(!g3.is_empty());
        let before = t.root_spare();
        let orphans = t.leave(PeerId(1));
        assert!(orphans.contains(&PeerId(2)));
        assert!(t.root_spare() > before, "the root's grant to 1 came back");
        let g = t.refill(PeerId(2), &rtt);
        assert_eq!(
            total(&g),
            4_000_000
                - total(
                    &t.upstreams(PeerId(2))
                        .iter()
                        .filter(|x| !g.contains(x))
                        .copied()
                        .collect::<Vec<_>>()
                )
        );
    }

    #[test]
    fn banned_upstreams_are_never_granted_again() {
        let mut t = tracker(0);
        t.join(PeerId(1), Bitrate::from_mbps(8), &rtt);
        // With no root capacity, 1 is fed by nobody; still it can feed 2.
        let (g, _) = t.join(PeerId(2), Bitrate::ZERO, &rtt);
        assert!(g.iter().all(|x| x.up == PeerId(1)));
        t.ban(PeerId(2), PeerId(1));
        assert!(t.upstreams(PeerId(2)).is_empty());
        assert!(t.refill(PeerId(2), &rtt).is_empty());
    }

    /// A relay's budget falls (its throttler protects a game) and comes back: the grants it
    /// can no longer cover are moved off it, newest first; back up, it grants again.
    #[test]
    fn a_lowered_budget_gives_up_the_newest_grants_and_a_raised_one_grants_again() {
        let mut t = tracker(4);
        t.join(PeerId(1), Bitrate::from_mbps(20), &rtt);
        for p in 2..=5 {
            let (g, _) = t.join(PeerId(p), Bitrate::ZERO, &rtt);
            assert_eq!(
                g,
                vec![Grant {
                    up: PeerId(1),
                    rate: Bitrate::from_mbps(4)
                }],
                "peer {p}: the root is full, peer 1 feeds it"
            );
        }
        // 8 Mbit/s at 80%: 6.4 Mbit/s covers one 4 Mbit/s grant of the four.
        let orphans = t.set_budget(PeerId(1), Bitrate::from_mbps(8));
        assert_eq!(
            orphans,
            vec![
                (PeerId(5), PeerId(1)),
                (PeerId(4), PeerId(1)),
                (PeerId(3), PeerId(1))
            ]
        );
        for p in 3..=5 {
            assert!(t.upstreams(PeerId(p)).is_empty(), "peer {p}");
        }
        // Refilled, they share what peer 1 has left (6.4 - 4 Mbit/s), no more.
        let refilled: u64 = (3..=5).map(|p| total(&t.refill(PeerId(p), &rtt))).sum();
        assert_eq!(refilled, 2_400_000);
        assert_eq!(
            total(&t.upstreams(PeerId(2))),
            4_000_000,
            "the oldest stays"
        );
        // Below the stream rate it relays nothing at all.
        let gone = t.set_budget(PeerId(1), Bitrate::from_mbps(1));
        assert!(gone.contains(&(PeerId(2), PeerId(1))), "{gone:?}");
        for p in 2..=5 {
            assert!(t.upstreams(PeerId(p)).is_empty(), "peer {p}");
        }
        // Back up: it feeds the orphans that ask again, and newcomers.
        assert!(t.set_budget(PeerId(1), Bitrate::from_mbps(20)).is_empty());
        for p in 2..=5 {
            t.refill(PeerId(p), &rtt);
            assert_eq!(total(&t.upstreams(PeerId(p))), 4_000_000, "peer {p}");
        }
        let (g, _) = t.join(PeerId(6), Bitrate::ZERO, &rtt);
        assert_eq!(total(&g), 0, "16 of 16 Mbit/s granted: none left");
        // Unknown, gone and the root are ignored.
        assert!(t.set_budget(PeerId(40), Bitrate::ZERO).is_empty());
        assert!(t.set_budget(PeerId(0), Bitrate::ZERO).is_empty());
    }
}
