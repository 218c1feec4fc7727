//! Who to ask: the upstream set, weighted request spreading and throughput estimates.
//!
//! A viewer keeps 3-6 upstreams. Each has a *grant* (the rate the tracker reserved for us on its
//! uplink); new chunks are spread over upstreams by smooth weighted round-robin on grant times health,
//! so each upstream carries about the share it promised. Health halves on a timeout or a busy answer
//! and recovers on every delivery, so a slow upstream is asked less without being dropped at the first
//! hiccup. Per-upstream throughput is an EWMA of delivered bytes over request-to-delivery time; the
//! end-game picks the known holder with the best of it.
//!
//! An upstream the tracker says is **leaving** (a graceful leave, docs/mesh.md "Leaving") is kept
//! for what is already asked of it; once the viewer's other grants cover the stream (its new
//! upstreams are in: [`Scheduler::set_use_leaving`]) it gets no new chunk: `choose` skips it, and
//! the end-game takes it only when no other upstream is known to hold the chunk. It goes when its
//! links close.
//!
//! Invariants: an upstream appears once; a banned peer is never an upstream again.

use std::time::Duration;

use hum_proto::Bitrate;

use crate::PeerId;
use crate::havemap::HaveMap;

#[derive(Clone, Debug)]
pub struct Upstream {
    pub peer: PeerId,
    /// Reserved rate on its uplink.
    pub grant: Bitrate,
    /// 1.0 healthy; halves on timeouts, recovers on deliveries (min 1/16).
    pub health: f64,
    /// Smooth weighted round-robin credit.
    credit: f64,
    /// Bytes per second, EWMA; `None` until the first delivery.
    pub throughput: Option<f64>,
    pub have: HaveMap,
    pub inflight: u32,
    /// Leaving (announced): serves what it was asked, is asked nothing new.
    pub leaving: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Scheduler {
    ups: Vec<Upstream>,
    banned: Vec<PeerId>,
    /// Leaving upstreams are still chosen (the viewer's other grants do not cover the stream
    /// yet: make before break).
    use_leaving: bool,
}

impl Scheduler {
    pub fn new() -> Self {
        Scheduler::default()
    }

    pub fn upstreams(&self) -> &[Upstream] {
        &self.ups
    }

    pub fn len(&self) -> usize {
        self.ups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ups.is_empty()
    }

    /// The grants of upstreams that are not leaving.
    pub fn total_grant(&self) -> Bitrate {
        self.ups
            .iter()
            .filter(|u| !u.leaving)
            .map(|u| u.grant)
            .sum()
    }

    /// `peer` announced that it leaves: it is asked nothing new from now on (see the module
    /// doc). False if it is not an upstream.
    pub fn set_leaving(&mut self, peer: PeerId) -> bool {
        match self.get_mut(peer) {
            Some(u) => {
                u.leaving = true;
                true
            }
            None => false,
        }
    }

    /// Whether leaving upstreams are still asked for new chunks: the viewer says so while the
    /// grants of the others do not cover the stream yet (its new upstreams are not all in).
    pub fn set_use_leaving(&mut self, on: bool) {
        self.use_leaving = on;
    }

    pub fn is_leaving(&self, peer: PeerId) -> bool {
        self.ups.iter().any(|u| u.peer == peer && u.leaving)
    }

    pub fn is_banned(&self, p: PeerId) -> bool {
        self.banned.contains(&p)
    }

    /// Add (or re-grant) an upstream. Banned peers are refused.
    pub fn add(&mut self, peer: PeerId, grant: Bitrate) -> bool {
        if self.is_banned(peer) {
            return false;
        }
        if let Some(u) = self.ups.iter_mut().find(|u| u.peer == peer) {
            u.grant = grant;
            // A new grant from the tracker: it stays after all.
            u.leaving = false;
            return true;
        }
        self.ups.push(Upstream {
            peer,
            grant,
            health: 1.0,
            credit: 0.0,
            throughput: None,
            have: HaveMap::new(),
            inflight: 0,
            leaving: false,
        });
        true
    }

    pub fn remove(&mut self, peer: PeerId) -> bool {
        let before = self.ups.len();
        self.ups.retain(|u| u.peer != peer);
        self.ups.len() != before
    }

    pub fn ban(&mut self, peer: PeerId) {
        self.remove(peer);
        if !self.banned.contains(&peer) {
            self.banned.push(peer);
        }
    }

    fn get_mut(&mut self, peer: PeerId) -> Option<&mut Upstream> {
        self.ups.iter_mut().find(|u| u.peer == peer)
    }

    /// The next upstream for a new chunk, by smooth weighted round-robin, skipping `exclude` and
    /// leaving upstreams.
    pub fn choose(&mut self, exclude: Option<PeerId>) -> Option<PeerId> {
        let mut total = 0.0;
        let mut best: Option<usize> = None;
        for i in 0..self.ups.len() {
            let u = &mut self.ups[i];
            if Some(u.peer) == exclude || (u.leaving && !self.use_leaving) {
                continue;
            }
            let w = u.grant.bps() as f64 * u.health;
            u.credit += w;
            total += w;
            if best.is_none_or(|b| self.ups[i].credit > self.ups[b].credit) {
                best = Some(i);
            }
        }
        let u = &mut self.ups[best?];
        u.credit -= total;
        u.inflight += 1;
        Some(u.peer)
    }

    /// The best upstream known to hold `seq` (one that is not leaving, then highest throughput,
    /// then fewest in flight), other than `exclude`.
    pub fn best_holder(&self, seq: u64, exclude: Option<PeerId>) -> Option<PeerId> {
        self.ups
            .iter()
            .filter(|u| Some(u.peer) != exclude && u.have.has(seq))
            .max_by(|a, b| {
                let ta = a.throughput.unwrap_or(0.0) * a.health;
                let tb = b.throughput.unwrap_or(0.0) * b.health;
                b.leaving
                    .cmp(&a.leaving)
                    .then(ta.total_cmp(&tb))
                    .then(b.inflight.cmp(&a.inflight))
            })
            .map(|u| u.peer)
    }

    /// How many upstreams are known to hold `seq`.
    pub fn availability(&self, seq: u64) -> u8 {
        self.ups.iter().filter(|u| u.have.has(seq)).count().min(255) as u8
    }

    pub fn note_have(&mut self, peer: PeerId, seq: u64) {
        if let Some(u) = self.get_mut(peer) {
            u.have.set(seq);
        }
    }

    pub fn note_announce(&mut self, peer: PeerId, map: &HaveMap) {
        if let Some(u) = self.get_mut(peer) {
            u.have.merge(map);
        }
    }

    /// A request to `peer` was sent outside `choose` (end-game, re-request).
    pub fn note_request(&mut self, peer: PeerId) {
        if let Some(u) = self.get_mut(peer) {
            u.inflight += 1;
        }
    }

    /// `bytes` arrived from `peer`, `elapsed` after we asked.
    pub fn on_delivery(&mut self, peer: PeerId, bytes: u32, elapsed: Duration) {
        if let Some(u) = self.get_mut(peer) {
            u.inflight = u.inflight.saturating_sub(1);
            u.health = (u.health * 2.0).min(1.0);
            let secs = elapsed.as_secs_f64().max(1e-3);
            let sample = bytes as f64 / secs;
            u.throughput = Some(match u.throughput {
                None => sample,
                Some(t) => 0.8 * t + 0.2 * sample,
            });
        }
    }

    /// `peer` timed out or said busy/absent.
    pub fn on_failure(&mut self, peer: PeerId) {
        if let Some(u) = self.get_mut(peer) {
            u.inflight = u.inflight.saturating_sub(1);
            u.health = (u.health / 2.0).max(1.0 / 16.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(weights: &[(char, u64)]) -> Scheduler {
        let mut s = Scheduler::new();
        for &(c, w) in weights {
            s.add(PeerId(c as u32), Bitrate::from_bps(w));
        }
        s
    }

    fn sequence(s: &mut Scheduler, n: usize) -> String {
        (0..n)
            .map(|_| char::from_u32(s.choose(None).expect("an upstream").0).expect("char"))
            .collect()
    }

    #[test]
    fn requests_follow_grants_smoothly() {
        let mut s = sched(&[('A', 2), ('B', 1), ('C', 1)]);
        assert_eq!(sequence(&mut s, 8), "ABCAABCA");
        let seq = sequence(&mut s, 400);
        let count = |c| seq.chars().filter(|&x| x == c).count();
        assert_eq!((count('A'), count('B'), count('C')), (200, 100, 100));
        // Smooth: A never three times in a row.
        assert!(!seq.contains("AAA"), "{seq}");
    }

    #[test]
    fn equal_grants_round_robin_in_order() {
        let mut s = sched(&[('A', 1), ('B', 1), ('C', 1)]);
        assert_eq!(sequence(&mut s, 6), "ABCABC");
    }

    #[test]
    fn a_failing_upstream_is_asked_less_and_recovers() {
        let mut s = sched(&[('A', 1), ('B', 1)]);
        for _ in 0..3 {
            s.on_failure(PeerId('B' as u32));
        }
        let seq = sequence(&mut s, 90);
        let b = seq.chars().filter(|&x| x == 'B').count();
        assert!(
            (9..=11).contains(&b),
            "B at 1/8 health gets about 1 in 9: {seq}"
        );
        for _ in 0..3 {
            s.on_delivery(PeerId('B' as u32), 1000, Duration::from_millis(10));
        }
        assert_eq!(s.upstreams()[1].health, 1.0);
    }

    #[test]
    fn end_game_prefers_the_fastest_known_holder() {
        let mut s = sched(&[('A', 1), ('B', 1), ('C', 1)]);
        let (a, b, c) = (PeerId('A' as u32), PeerId('B' as u32), PeerId('C' as u32));
        s.on_delivery(a, 100_000, Duration::from_millis(100)); // 1 MB/s
        s.on_delivery(b, 100_000, Duration::from_millis(50)); // 2 MB/s
        s.note_have(a, 7);
        s.note_have(c, 7);
        // B is fastest but does not hold 7; A beats C (unknown throughput).
        assert_eq!(s.best_holder(7, None), Some(a));
        assert_eq!(s.best_holder(7, Some(a)), Some(c));
        assert_eq!(s.best_holder(8, None), None);
        assert_eq!(s.availability(7), 2);
    }

    #[test]
    fn a_leaving_upstream_gets_no_new_chunk_and_is_the_last_holder_asked() {
        let mut s = sched(&[('A', 1), ('B', 1), ('C', 1)]);
        let (a, b) = (PeerId('A' as u32), PeerId('B' as u32));
        s.on_delivery(a, 400_000, Duration::from_millis(100)); // A is the fastest
        s.note_have(a, 7);
        s.note_have(b, 7);
        s.note_have(a, 8);
        assert!(s.set_leaving(a));
        assert!(!s.set_leaving(PeerId('Z' as u32)));
        let seq = sequence(&mut s, 30);
        assert!(!seq.contains('A'), "{seq}");
        // Until the others' grants cover the stream the viewer keeps asking it.
        s.set_use_leaving(true);
        assert!(sequence(&mut s, 3).contains('A'));
        s.set_use_leaving(false);
        assert_eq!(s.best_holder(7, None), Some(b), "another holder first");
        assert_eq!(s.best_holder(8, None), Some(a), "the only holder still");
        assert_eq!(s.total_grant(), Bitrate::from_bps(2));
        // A new grant means it stays.
        s.add(a, Bitrate::from_bps(1));
        assert!(!s.is_leaving(a));
        assert!(sequence(&mut s, 3).contains('A'));
    }

    #[test]
    fn banned_peers_never_return_and_exclusion_works() {
        let mut s = sched(&[('A', 1), ('B', 1)]);
        let a = PeerId('A' as u32);
        s.ban(a);
        assert!(!s.add(a, Bitrate::from_bps(5)));
        assert_eq!(s.len(), 1);
        assert_eq!(s.choose(Some(PeerId('B' as u32))), None);
    }
}
