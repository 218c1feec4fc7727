//! The upload limiter: every byte Hum uploads is accounted here, and every relay upload waits here
//! until it fits.
//!
//! Two token buckets in a hierarchy:
//!
//! ```text
//!            total bucket (rate = Hum's available upload)
//!             /                          \
//!   own class (voice, own video)     relay bucket (rate = relay cap)
//!   never waits: charged, may          waits until BOTH buckets
//!   push the total into debt           hold its bytes
//! ```
//!
//! Own sending has strict priority: it is never delayed by the limiter (its encoders adapt to the
//! network through congestion control) and it is charged to the total bucket first, so relaying gets
//! only what own sending leaves. Relaying therefore never exceeds `min(relay cap, total - own)` over
//! any window longer than a burst, and can never starve own sending.
//!
//! Invariants (tested below): relay bytes admitted in `[0, t]` <= `relay_rate * t + relay_burst`;
//! own bytes are always admitted; own + relay admitted <= `total_rate * t + total_burst + own`
//! overshoot (own traffic alone may exceed the total: the limiter does not police it).
//!
//! Sans-IO: `now` is an argument; nothing reads a clock.

use std::time::{Duration, Instant};

use hum_proto::Bitrate;

use crate::bucket::{TokenBucket, bits};

/// Who is sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrafficClass {
    /// Hum's own voice and video: priority, never delayed here.
    Own,
    /// Other viewers' stream chunks this client relays.
    Relay,
}

/// The limiter's answer for a relay send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Send now; the bytes are charged.
    Now,
    /// Not yet: ask again at this instant (nothing was charged).
    At(Instant),
    /// The relay rate is zero: nothing may be relayed until the rates change.
    Blocked,
}

/// Bytes sent per class since the limiter was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimiterStats {
    pub own_bytes: u64,
    pub relay_bytes: u64,
    /// Relay sends that had to wait.
    pub relay_deferred: u64,
}

/// Burst sizes, as time at the bucket's rate, with a floor of a couple of full-size packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimiterConfig {
    /// How much relay data may leave back to back. Small, because a burst of B bytes adds B / C of
    /// queuing delay at a bottleneck of capacity C, and that delay is what a game feels.
    pub relay_burst: Duration,
    pub total_burst: Duration,
    /// Burst floor in bytes (so a 1200-byte packet always fits at low rates).
    pub min_burst_bytes: u64,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        LimiterConfig {
            relay_burst: Duration::from_millis(5),
            total_burst: Duration::from_millis(20),
            min_burst_bytes: 3_000,
        }
    }
}

/// The hierarchical limiter. See the module docs.
#[derive(Clone, Debug)]
pub struct UploadLimiter {
    config: LimiterConfig,
    /// The buckets' clock starts here.
    origin: Instant,
    total: TokenBucket,
    relay: TokenBucket,
    stats: LimiterStats,
}

/// Debt is bounded to this many bursts so one huge own burst cannot block relaying for hours.
const MAX_DEBT_BURSTS: u64 = 64;

impl UploadLimiter {
    /// `total`: Hum's whole upload budget (`None` = not known yet, unlimited for own sending);
    /// `relay`: the relay cap.
    pub fn new(
        now: Instant,
        config: LimiterConfig,
        total: Option<Bitrate>,
        relay: Bitrate,
    ) -> Self {
        let min = config.min_burst_bytes;
        UploadLimiter {
            config,
            origin: now,
            total: TokenBucket::upload(Duration::ZERO, total, config.total_burst, min),
            relay: TokenBucket::upload(Duration::ZERO, Some(relay), config.relay_burst, min),
            stats: LimiterStats::default(),
        }
    }

    fn at(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.origin)
    }

    /// Change the rates (settings changed, or the throttler moved the relay cap). Tokens already
    /// earned are kept up to the new burst size.
    pub fn set_rates(&mut self, now: Instant, total: Option<Bitrate>, relay: Bitrate) {
        let (t, c) = (self.at(now), self.config);
        self.total
            .set_upload(t, total, c.total_burst, c.min_burst_bytes);
        self.relay
            .set_upload(t, Some(relay), c.relay_burst, c.min_burst_bytes);
    }

    pub fn total_rate(&self) -> Option<Bitrate> {
        self.total.rate().map(Bitrate::from_bps)
    }

    pub fn relay_rate(&self) -> Bitrate {
        self.relay.rate().map_or(Bitrate::ZERO, Bitrate::from_bps)
    }

    /// Account own sending (voice, own video). Never refused.
    pub fn on_own_sent(&mut self, now: Instant, bytes: u64) {
        self.total.refill(self.at(now));
        charge(&mut self.total, bytes);
        self.stats.own_bytes += bytes;
    }

    /// Ask to relay `bytes`. On [`Admit::Now`] the bytes are charged and must be sent.
    pub fn try_relay(&mut self, now: Instant, bytes: u64) -> Admit {
        self.refill(now);
        let t = self.at(now);
        if self.relay.rate() == Some(0) || self.total.rate() == Some(0) {
            return Admit::Blocked;
        }
        let need = bits(bytes);
        if self.total.ready(need) && self.relay.ready(need) {
            self.relay_charge(bytes);
            Admit::Now
        } else {
            self.stats.relay_deferred += 1;
            match (self.total.ready_at(need), self.relay.ready_at(need)) {
                (Some(a), Some(b)) => Admit::At(self.origin + a.max(b).max(t)),
                _ => Admit::Blocked,
            }
        }
    }

    pub fn stats(&self) -> LimiterStats {
        self.stats
    }

    // The relay class as a budget a serve queue spends step by step (the livestream mesh orders
    // and drops its requests itself): bytes may go when both buckets hold them; a whole chunk may
    // take both into debt, so the long-run relay rate stays within its cap and what own sending
    // leaves of the total.

    /// Earn what the time up to `now` is worth, in both buckets.
    pub fn refill(&mut self, now: Instant) {
        let t = self.at(now);
        self.total.refill(t);
        self.relay.refill(t);
    }

    /// Do both buckets hold `bytes` (`relay_holds(0)`: neither is in debt)? Never at a zero rate.
    pub fn relay_holds(&self, bytes: u64) -> bool {
        let need = bits(bytes);
        self.total.holds(need) && self.relay.holds(need)
    }

    /// Charge `bytes` of relaying that is being sent. The relay bucket's debt is not forgiven
    /// (relaying must never exceed its cap); the total's is, as for own sending.
    pub fn relay_charge(&mut self, bytes: u64) {
        charge(&mut self.total, bytes);
        self.relay.charge(bits(bytes));
        self.stats.relay_bytes += bytes;
    }

    /// When `relay_holds(bytes)` will be true with no further charges (`None`: never).
    pub fn relay_holds_at(&self, bytes: u64) -> Option<Instant> {
        let need = bits(bytes);
        let at = self.total.holds_at(need)?.max(self.relay.holds_at(need)?);
        Some(self.origin + at)
    }

    /// How long until `relay_holds(bytes)`, from the last refill (`None`: never).
    pub fn relay_wait_for(&self, bytes: u64) -> Option<Duration> {
        let need = bits(bytes);
        Some(self.total.wait_for(need)?.max(self.relay.wait_for(need)?))
    }

    /// The most both buckets can hold at once, in bytes.
    pub fn relay_burst_bytes(&self) -> u64 {
        self.total.burst().min(self.relay.burst()) / 8
    }
}

fn charge(bucket: &mut TokenBucket, bytes: u64) {
    bucket.charge(bits(bytes));
    bucket.cap_debt(bucket.burst().max(1) * MAX_DEBT_BURSTS);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Drive a greedy relay sender (and optionally a steady own flow) for `secs`, returning stats.
    fn run(
        limiter: &mut UploadLimiter,
        t0: Instant,
        secs: u64,
        own_rate: Bitrate,
        pkt: u64,
    ) -> LimiterStats {
        let start = limiter.stats();
        let mut now = t0;
        let end = t0 + Duration::from_secs(secs);
        let own_gap = if own_rate == Bitrate::ZERO {
            None
        } else {
            Some(Duration::from_nanos(
                1_200 * 8 * 1_000_000_000 / own_rate.bps(),
            ))
        };
        let mut next_own = t0;
        let mut next_relay = t0;
        while now < end {
            if let Some(gap) = own_gap
                && next_own <= now
            {
                limiter.on_own_sent(now, 1_200);
                next_own += gap;
            }
            if next_relay <= now {
                match limiter.try_relay(now, pkt) {
                    Admit::Now => {}
                    Admit::At(t) => {
                        assert!(t > now, "At must be in the future");
                        next_relay = t;
                    }
                    Admit::Blocked => next_relay = end,
                }
            }
            let next = match own_gap {
                Some(_) => next_own.min(next_relay),
                None => next_relay,
            };
            now = now.max(next);
        }
        let s = limiter.stats();
        LimiterStats {
            own_bytes: s.own_bytes - start.own_bytes,
            relay_bytes: s.relay_bytes - start.relay_bytes,
            relay_deferred: s.relay_deferred - start.relay_deferred,
        }
    }

    #[test]
    fn relay_never_exceeds_its_cap() {
        let t0 = Instant::now();
        let relay = Bitrate::from_mbps(2);
        let mut l = UploadLimiter::new(
            t0,
            LimiterConfig::default(),
            Some(Bitrate::from_mbps(10)),
            relay,
        );
        let s = run(&mut l, t0, 10, Bitrate::ZERO, 1_200);
        let burst = TokenBucket::upload(Duration::ZERO, Some(relay), ms(5), 3_000).burst() / 8;
        let limit = relay.bytes_per_sec() * 10 + burst;
        assert!(s.relay_bytes <= limit, "{} > {limit}", s.relay_bytes);
        // ... and uses it (within 1%).
        assert!(s.relay_bytes as f64 >= 0.99 * (relay.bytes_per_sec() * 10) as f64);
    }

    fn five_total_four_relay(t0: Instant) -> UploadLimiter {
        UploadLimiter::new(
            t0,
            LimiterConfig::default(),
            Some(Bitrate::from_mbps(5)),
            Bitrate::from_mbps(4),
        )
    }

    #[test]
    fn own_sending_has_priority() {
        let t0 = Instant::now();
        // 5 Mbps total, relay allowed 4, own sends 3: relay gets only the 2 left.
        let mut l = five_total_four_relay(t0);
        let s = run(&mut l, t0, 10, Bitrate::from_mbps(3), 1_200);
        let own_rate = s.own_bytes as f64 * 8.0 / 10.0;
        let relay_rate = s.relay_bytes as f64 * 8.0 / 10.0;
        assert!((own_rate - 3e6).abs() < 0.01e6, "own {own_rate}");
        assert!(
            relay_rate <= 2.0e6 * 1.01 + 8.0 * 12_500.0 / 10.0,
            "relay {relay_rate}"
        );
        assert!(relay_rate >= 1.95e6, "relay {relay_rate}");
        // Own sending beyond the total is still admitted; relay then gets nothing.
        let t1 = t0 + Duration::from_secs(10);
        let s = run(&mut l, t1, 5, Bitrate::from_mbps(6), 1_200);
        assert!(s.own_bytes as f64 * 8.0 / 5.0 > 5.9e6);
        assert!(s.relay_bytes <= 64 * 12_500, "relay {}", s.relay_bytes);
    }

    #[test]
    fn a_serve_queue_spending_the_relay_class_shares_the_total_with_own_sending() {
        // 5 Mbps total, relay cap 4, own sends 3: a queue releasing 50 kB chunks whenever
        // neither bucket is in debt gets the 2 left, and never more than its cap alone.
        let t0 = Instant::now();
        let mut l = five_total_four_relay(t0);
        let (mut relayed, mut now) = (0u64, t0);
        let mut next_own = t0;
        let end = t0 + Duration::from_secs(10);
        while now < end {
            while next_own <= now {
                l.on_own_sent(next_own, 1_200);
                next_own += Duration::from_nanos(1_200 * 8 * 1_000_000_000 / 3_000_000);
            }
            l.refill(now);
            if l.relay_holds(0) {
                l.relay_charge(50_000);
                relayed += 50_000;
            }
            let at = l.relay_holds_at(0).expect("nonzero rates");
            now = at
                .max(now)
                .min(next_own)
                .max(now + Duration::from_micros(1));
        }
        let rate = relayed as f64 * 8.0 / 10.0;
        assert!((1.8e6..=2.1e6).contains(&rate), "relay {rate}");
        assert_eq!(l.stats().relay_bytes, relayed);
        // Alone, it is held to the cap.
        l.set_rates(end, Some(Bitrate::from_mbps(100)), Bitrate::from_mbps(4));
        let (start, mut now, mut alone) = (end, end, 0u64);
        while now < start + Duration::from_secs(10) {
            l.refill(now);
            if l.relay_holds(0) {
                l.relay_charge(50_000);
                alone += 50_000;
            }
            now = l
                .relay_holds_at(0)
                .expect("nonzero rates")
                .max(now + Duration::from_micros(1));
        }
        let rate = alone as f64 * 8.0 / 10.0;
        assert!((3.9e6..=4.1e6).contains(&rate), "alone {rate}");
        // Relay turned off: nothing is held, ever.
        l.set_rates(now, Some(Bitrate::from_mbps(100)), Bitrate::ZERO);
        l.refill(now + Duration::from_secs(1));
        assert!(!l.relay_holds(0));
        assert_eq!(l.relay_holds_at(0), None);
        assert_eq!(l.relay_wait_for(0), None);
    }

    #[test]
    fn zero_relay_blocks_and_unknown_total_is_unlimited_for_own() {
        let t0 = Instant::now();
        let mut l = UploadLimiter::new(t0, LimiterConfig::default(), None, Bitrate::ZERO);
        assert_eq!(l.try_relay(t0, 1_000), Admit::Blocked);
        for i in 0..1_000 {
            l.on_own_sent(t0 + ms(i), 100_000);
        }
        l.set_rates(t0 + ms(1_000), None, Bitrate::from_mbps(1));
        assert_eq!(l.try_relay(t0 + ms(1_000), 1_000), Admit::Now);
    }

    #[test]
    fn oversized_packets_pass_when_full_and_leave_debt() {
        let t0 = Instant::now();
        let mut l = UploadLimiter::new(t0, LimiterConfig::default(), None, Bitrate::from_kbps(100));
        // burst = max(100 kbps * 5 ms, 3000) = 3000 bytes; a 16 KB chunk passes once full...
        assert_eq!(l.try_relay(t0, 16_000), Admit::Now);
        // ... and leaves 3000 - 16000 = -13000 bytes: a 1000-byte packet waits for 14000 bytes at
        // 12.5 KB/s = 1.12 s.
        match l.try_relay(t0, 1_000) {
            Admit::At(t) => {
                let wait = t - t0;
                assert_eq!(wait, ms(1_120));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rate_changes_take_effect_and_admit_at_is_exact() {
        let t0 = Instant::now();
        let mut l = UploadLimiter::new(t0, LimiterConfig::default(), None, Bitrate::from_mbps(8));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut now = t0;
        let mut sent_in_phase = [0u64; 3];
        let rates = [
            Bitrate::from_mbps(8),
            Bitrate::from_kbps(800),
            Bitrate::from_mbps(3),
        ];
        for (phase, rate) in rates.iter().enumerate() {
            l.set_rates(now, None, *rate);
            let end = now + Duration::from_secs(4);
            while now < end {
                let pkt = rng.gen_range(200..1_400);
                match l.try_relay(now, pkt) {
                    Admit::Now => sent_in_phase[phase] += pkt,
                    Admit::At(t) => {
                        // Asking exactly at the promised instant succeeds.
                        assert_eq!(l.try_relay(t, pkt), Admit::Now);
                        sent_in_phase[phase] += pkt;
                        now = t;
                    }
                    Admit::Blocked => panic!("blocked at nonzero rate"),
                }
            }
        }
        for (sent, rate) in sent_in_phase.iter().zip(rates) {
            let got = *sent as f64 * 8.0 / 4.0;
            let want = rate.bps() as f64;
            assert!((got - want).abs() / want < 0.02, "got {got} want {want}");
        }
    }
}
