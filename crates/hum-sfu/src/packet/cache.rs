//! A cache of forwarded packets by outgoing sequence number, to answer NACKs (retransmission,
//! RFC 4585 / RTX RFC 4588) from the SFU without asking the publisher, with a per-subscriber
//! budget so a client flooding NACKs costs a bounded amount.
//!
//! Note: in the str0m runtime, str0m's own send buffer answers NACKs for the streams it sends
//! (it sees the RTCP first); this cache serves the sans-IO forwarding path (benchmarks,
//! simulations) and keeps the NACK policy testable.

use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct CachedPacket {
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Arc<[u8]>,
    last_sent: Instant,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NackStats {
    pub requested: u64,
    pub served: u64,
    /// Not in the cache any more (too old) or never forwarded.
    pub missing: u64,
    /// Asked again within the resend interval: dropped.
    pub too_soon: u64,
    /// Over this subscriber's budget: dropped.
    pub over_budget: u64,
}

#[derive(Debug)]
pub struct PacketCache {
    slots: Vec<Option<CachedPacket>>,
    /// Do not resend the same packet twice within this interval (about one RTT).
    resend_interval: Duration,
    /// Token bucket: resends per second, and burst.
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Option<Instant>,
    pub stats: NackStats,
}

impl PacketCache {
    /// `capacity` packets (a power of two is not required); at most `resends_per_sec` resends
    /// with a burst of `burst`.
    pub fn new(
        capacity: usize,
        resend_interval: Duration,
        resends_per_sec: u32,
        burst: u32,
    ) -> Self {
        PacketCache {
            slots: vec![None; capacity.max(1)],
            resend_interval,
            rate: f64::from(resends_per_sec),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            refilled: None,
            stats: NackStats::default(),
        }
    }

    fn slot(&self, seq: u64) -> usize {
        (seq % self.slots.len() as u64) as usize
    }

    pub fn insert(
        &mut self,
        seq: u64,
        timestamp: u32,
        marker: bool,
        payload: Arc<[u8]>,
        now: Instant,
    ) {
        let i = self.slot(seq);
        self.slots[i] = Some(CachedPacket {
            seq,
            timestamp,
            marker,
            payload,
            last_sent: now,
        });
    }

    /// Answers a NACK for `seqs` (extended outgoing numbers): the packets to resend now.
    pub fn on_nack(&mut self, seqs: &[u64], now: Instant) -> Vec<CachedPacket> {
        if let Some(at) = self.refilled {
            let dt = now.saturating_duration_since(at).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        }
        self.refilled = Some(now);
        let mut out = Vec::new();
        for &seq in seqs {
            self.stats.requested += 1;
            let i = self.slot(seq);
            let Some(p) = self.slots[i].as_mut().filter(|p| p.seq == seq) else {
                self.stats.missing += 1;
                continue;
            };
            if now.saturating_duration_since(p.last_sent) < self.resend_interval {
                self.stats.too_soon += 1;
                continue;
            }
            if self.tokens < 1.0 {
                self.stats.over_budget += 1;
                continue;
            }
            self.tokens -= 1.0;
            p.last_sent = now;
            self.stats.served += 1;
            out.push(p.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(now: Instant) -> PacketCache {
        let mut c = PacketCache::new(64, Duration::from_millis(50), 100, 20);
        for s in 0..100u64 {
            c.insert(s, s as u32 * 960, false, Arc::from(vec![s as u8; 10]), now);
        }
        c
    }

    #[test]
    fn serves_recent_packets_once_per_interval() {
        let t0 = Instant::now();
        let mut c = cache(t0);
        let t = t0 + Duration::from_millis(60);
        let got = c.on_nack(&[90, 91, 10], t);
        assert_eq!(got.iter().map(|p| p.seq).collect::<Vec<_>>(), vec![90, 91]);
        assert_eq!(&*got[0].payload, &[90u8; 10]);
        assert_eq!(c.stats.missing, 1, "seq 10 was overwritten (capacity 64)");
        assert!(c.on_nack(&[90], t + Duration::from_millis(10)).is_empty());
        assert_eq!(c.stats.too_soon, 1);
        assert_eq!(c.on_nack(&[90], t + Duration::from_millis(60)).len(), 1);
    }

    #[test]
    fn a_nack_flood_is_bounded_by_the_budget() {
        let t0 = Instant::now();
        let mut c = cache(t0);
        let mut served = 0;
        // 1 s of NACKs for every cached packet, every 10 ms.
        for i in 1..=100u64 {
            let seqs: Vec<u64> = (36..100).collect();
            served += c
                .on_nack(&seqs, t0 + Duration::from_millis(50 + i * 10))
                .len();
        }
        // Burst 20 + 100/s for ~1 s.
        assert!((100..=125).contains(&served), "served {served}");
        assert!(c.stats.over_budget + c.stats.too_soon > 6000);
    }
}
