//! Rate limits with Hum's one token bucket ([`TokenBucket`], from hum-budget), per connection with a strike
//! count ([`RateLimiter`]: a client that keeps flooding after `rate_limited` is disconnected) and
//! per source address ([`AddressLimiter`]: new accounts). Sans-IO: time is an input in
//! milliseconds.

use std::time::Duration;

use hum_budget::TokenBucket;
use hum_budget::bucket::EVENT;

/// What to do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit: handle it.
    Allow,
    /// Over the limit: answer `rate_limited`, drop the frame.
    Reject,
    /// Over the limit for too long: close the connection.
    Disconnect,
}

/// Milliseconds as the offset [`TokenBucket`] counts time in.
fn at(now_ms: u64) -> Duration {
    Duration::from_millis(now_ms)
}

/// Milliseconds until `bucket` holds one more event (0: now), rounded up.
fn wait_ms(bucket: &TokenBucket) -> u64 {
    bucket
        .wait_for(EVENT)
        .map_or(u64::MAX, |w| w.as_nanos().div_ceil(1_000_000) as u64)
}

/// A [`TokenBucket`] of requests per connection, plus a strike count so a client that keeps
/// flooding after being told `rate_limited` is eventually disconnected.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    bucket: TokenBucket,
    strikes: u32,
    max_strikes: u32,
}

impl RateLimiter {
    /// A full bucket at `now_ms`. After `max_strikes` rejected frames in a row without the client
    /// slowing down enough to earn a token, [`Verdict::Disconnect`].
    pub fn new(rate_per_sec: u32, burst: u32, max_strikes: u32, now_ms: u64) -> Self {
        RateLimiter {
            bucket: TokenBucket::per_interval(
                at(now_ms),
                Duration::from_secs(1) / rate_per_sec.max(1),
                burst,
            ),
            strikes: 0,
            max_strikes,
        }
    }

    pub fn check(&mut self, now_ms: u64) -> Verdict {
        if self.bucket.try_take(at(now_ms), EVENT) {
            self.strikes = 0;
            Verdict::Allow
        } else {
            self.strikes = self.strikes.saturating_add(1);
            if self.strikes > self.max_strikes {
                Verdict::Disconnect
            } else {
                Verdict::Reject
            }
        }
    }
}

/// Who a source address is, for per-address limits: the IPv4 address, or the /64 prefix of an
/// IPv6 address (one host usually holds a whole /64, so per-address would be no limit at all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceKey(u128);

impl SourceKey {
    /// As the cluster's log carries it (decimal).
    pub fn to_log(self) -> String {
        self.0.to_string()
    }

    /// From the cluster's log (`None` if it is not a key).
    pub fn from_log(s: &str) -> Option<SourceKey> {
        s.parse().ok().map(SourceKey)
    }

    pub fn of(ip: std::net::IpAddr) -> Self {
        match ip {
            std::net::IpAddr::V4(v4) => SourceKey(u128::from(u32::from(v4))),
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey(u128::from(u32::from(v4))),
                None => SourceKey((u128::from(v6) >> 64 << 64) | (1 << 32)),
            },
        }
    }
}

/// One [`TokenBucket`] per source address, in bounded memory: buckets that have refilled
/// completely hold nothing worth keeping and are forgotten when the map reaches `max_entries`;
/// if every entry is still draining, the oldest-keyed half is forgotten (those addresses get a
/// fresh bucket: under a flood from that many addresses the limit loosens rather than the
/// relay's memory growing).
#[derive(Clone, Debug)]
pub struct AddressLimiter {
    interval: Duration,
    burst: u32,
    max_entries: usize,
    buckets: std::collections::BTreeMap<SourceKey, TokenBucket>,
}

impl AddressLimiter {
    /// `per_hour` tokens an hour per address, `burst` at once.
    pub fn per_hour(per_hour: u32, burst: u32, max_entries: usize) -> Self {
        AddressLimiter {
            interval: Duration::from_secs(3600) / per_hour.max(1),
            burst,
            max_entries: max_entries.max(1),
            buckets: std::collections::BTreeMap::new(),
        }
    }

    /// Take a token for `key`; `Err(ms)` says how long until one is available.
    pub fn try_take(&mut self, key: SourceKey, now_ms: u64) -> Result<(), u64> {
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_entries {
            self.buckets.retain(|_, b| !b.is_full(at(now_ms)));
            if self.buckets.len() >= self.max_entries {
                let drop: Vec<SourceKey> = self
                    .buckets
                    .keys()
                    .take(self.max_entries.div_ceil(2))
                    .copied()
                    .collect();
                for k in drop {
                    self.buckets.remove(&k);
                }
            }
        }
        let bucket = self
            .buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::per_interval(at(now_ms), self.interval, self.burst));
        if bucket.try_take(at(now_ms), EVENT) {
            Ok(())
        } else {
            Err(wait_ms(bucket))
        }
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady_rate() {
        let mut r = RateLimiter::new(10, 5, 100, 0);
        for _ in 0..5 {
            assert_eq!(r.check(0), Verdict::Allow);
        }
        assert_eq!(r.check(0), Verdict::Reject);
        // 100 ms earns one token at 10/s.
        assert_eq!(r.check(100), Verdict::Allow);
        assert_eq!(r.check(100), Verdict::Reject);
        // A long pause refills only up to the burst.
        let allowed = (0..20)
            .filter(|_| r.check(60_000) == Verdict::Allow)
            .count();
        assert_eq!(allowed, 5);
    }

    #[test]
    fn persistent_flooding_disconnects_but_a_pause_forgives() {
        let mut r = RateLimiter::new(1, 1, 3, 0);
        assert_eq!(r.check(0), Verdict::Allow);
        assert_eq!(r.check(0), Verdict::Reject);
        assert_eq!(r.check(0), Verdict::Reject);
        assert_eq!(r.check(1_000), Verdict::Allow);
        for _ in 0..3 {
            assert_eq!(r.check(1_000), Verdict::Reject);
        }
        assert_eq!(r.check(1_000), Verdict::Disconnect);
    }

    #[test]
    fn time_going_backwards_does_not_mint_tokens() {
        let mut r = RateLimiter::new(10, 1, 10, 5_000);
        assert_eq!(r.check(5_000), Verdict::Allow);
        assert_eq!(r.check(0), Verdict::Reject);
        assert_eq!(r.check(5_050), Verdict::Reject);
        assert_eq!(r.check(5_100), Verdict::Allow);
    }

    #[test]
    fn per_address_buckets_are_separate_and_refill() {
        let ip = |s: &str| SourceKey::of(s.parse().unwrap());
        let mut l = AddressLimiter::per_hour(2, 2, 100);
        assert_eq!(l.try_take(ip("10.0.0.1"), 0), Ok(()));
        assert_eq!(l.try_take(ip("10.0.0.1"), 0), Ok(()));
        // Empty: the next token in half an hour.
        assert_eq!(l.try_take(ip("10.0.0.1"), 0), Err(1_800_000));
        assert_eq!(l.try_take(ip("10.0.0.1"), 1_000_000), Err(800_000));
        // Another address has its own bucket.
        assert_eq!(l.try_take(ip("10.0.0.2"), 0), Ok(()));
        assert_eq!(l.try_take(ip("10.0.0.1"), 1_800_000), Ok(()));
        // One IPv6 /64 is one source; an IPv4-mapped address is its IPv4 address.
        assert_eq!(ip("2001:db8::1"), ip("2001:db8::ffff:2"));
        assert_ne!(ip("2001:db8::1"), ip("2001:db8:0:1::1"));
        assert_eq!(ip("::ffff:10.0.0.1"), ip("10.0.0.1"));
    }

    #[test]
    fn per_address_memory_is_bounded() {
        let mut l = AddressLimiter::per_hour(1, 1, 64);
        for i in 0..10_000u32 {
            let key = SourceKey::of(std::net::IpAddr::V4(i.into()));
            assert_eq!(l.try_take(key, u64::from(i)), Ok(()));
            assert!(l.len() <= 64);
        }
        // Hours later every bucket has refilled: the next new address clears them all.
        for i in 0..64u32 {
            let key = SourceKey::of(std::net::IpAddr::V4((1_000_000 + i).into()));
            let _ = l.try_take(key, 100 * 3_600_000);
        }
        assert!(l.len() <= 64);
        let key = SourceKey::of(std::net::IpAddr::V4(u32::MAX.into()));
        assert_eq!(l.try_take(key, 200 * 3_600_000), Ok(()));
        assert_eq!(l.len(), 1);
    }
}
