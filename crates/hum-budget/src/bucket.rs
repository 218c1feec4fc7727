//! Hum's one token bucket. The upload limiter (own media and relaying), the livestream mesh's
//! serve queues (a viewer's relay budget, the root seed's global cap) and the relay server's
//! request and account-creation limits all count with this type.
//!
//! - Units are the caller's: bits for uploads (so any integer [`Bitrate`] refills exactly; see
//!   [`bits`]), pico-events for rate limits ([`TokenBucket::per_interval`]).
//! - Tokens are kept in unit-nanoseconds (`units * 1e9`), so refilling at any integer rate over any
//!   integer number of nanoseconds is exact: no rounding drift over a long session.
//! - A send may take the bucket into debt (a whole chunk is charged at once); nothing more is
//!   released until the debt is repaid, so the long-run rate never exceeds the budget.
//! - Sans-IO: time is an argument, a [`Duration`] since an origin the owner picks (the start of a
//!   run, a session, a process). Nothing reads a clock.

use std::time::Duration;

use hum_proto::Bitrate;

const NANOS: i128 = 1_000_000_000;

/// Bits in `bytes` (the unit upload buckets count in).
pub const fn bits(bytes: u64) -> u64 {
    bytes.saturating_mul(8)
}

/// A token bucket: `burst` units, refilled at `rate` units per second (`None`: unlimited).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    rate: Option<u64>,
    burst: u64,
    /// Unit-nanoseconds; negative while in debt.
    tokens: i128,
    last: Duration,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(now: Duration, rate: Option<u64>, burst: u64) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: to_tokens(burst),
            last: now,
        }
    }

    /// An upload budget counted in bits: `rate` (`None`: unlimited), a burst of `burst` at that
    /// rate but at least `min_burst_bytes` (so a full-size packet always fits at low rates).
    pub fn upload(
        now: Duration,
        rate: Option<Bitrate>,
        burst: Duration,
        min_burst_bytes: u64,
    ) -> Self {
        TokenBucket::new(
            now,
            rate.map(Bitrate::bps),
            burst_bits(rate, burst, min_burst_bytes),
        )
    }

    /// `burst` events, one more earned every `interval` (rate limits). Units are pico-events ([`EVENT`])
    /// and the rate is rounded up, so an interval of an hour is early by less than 10 ns.
    pub fn per_interval(now: Duration, interval: Duration, burst: u32) -> Self {
        let per_sec = (EVENT as u128 * NANOS as u128).div_ceil(interval.as_nanos().max(1)) as u64;
        TokenBucket::new(now, Some(per_sec.max(1)), u64::from(burst.max(1)) * EVENT)
    }

    /// Units per second (`None`: unlimited).
    pub fn rate(&self) -> Option<u64> {
        self.rate
    }

    /// The burst, in units.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Whole units held now (negative: in debt), as of the last refill.
    pub fn units(&self) -> i64 {
        (self.tokens.div_euclid(NANOS)).clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// Earn what the time since the last refill is worth, up to the burst.
    pub fn refill(&mut self, now: Duration) {
        let elapsed = now.saturating_sub(self.last);
        self.last = self.last.max(now);
        self.tokens = match self.rate {
            Some(rate) => {
                (self.tokens + elapsed.as_nanos() as i128 * rate as i128).min(to_tokens(self.burst))
            }
            None => to_tokens(self.burst),
        };
    }

    /// Change the rate and burst from `now` on; tokens earned so far are kept up to the new burst.
    pub fn set_rate(&mut self, now: Duration, rate: Option<u64>, burst: u64) {
        self.refill(now);
        self.rate = rate;
        self.burst = burst;
        self.tokens = self.tokens.min(to_tokens(burst));
    }

    /// [`TokenBucket::set_rate`] for an upload budget made by [`TokenBucket::upload`].
    pub fn set_upload(
        &mut self,
        now: Duration,
        rate: Option<Bitrate>,
        burst: Duration,
        min_burst_bytes: u64,
    ) {
        self.set_rate(
            now,
            rate.map(Bitrate::bps),
            burst_bits(rate, burst, min_burst_bytes),
        );
    }

    /// Does the bucket hold `units` (exactly, however large)? `holds(0)`: not in debt. A zero
    /// rate holds nothing.
    pub fn holds(&self, units: u64) -> bool {
        self.rate != Some(0) && self.tokens >= to_tokens(units)
    }

    /// May a send of `units` start now? It may once the bucket holds `min(units, burst)`: a send
    /// larger than the burst passes when the bucket is full and leaves it in debt.
    pub fn ready(&self, units: u64) -> bool {
        self.holds(units.min(self.burst))
    }

    /// Charge `units` (may go into debt).
    pub fn charge(&mut self, units: u64) {
        if self.rate.is_some() {
            self.tokens -= to_tokens(units);
        }
    }

    /// Forgive debt beyond `units`, so one huge charge cannot block the bucket for hours.
    pub fn cap_debt(&mut self, units: u64) {
        self.tokens = self.tokens.max(-to_tokens(units));
    }

    /// Take `units` if the bucket holds them now (after refilling at `now`).
    pub fn try_take(&mut self, now: Duration, units: u64) -> bool {
        self.refill(now);
        if self.holds(units) {
            self.charge(units);
            true
        } else {
            false
        }
    }

    /// How long until the bucket holds `units` with no further charges, from the last refill
    /// (zero: now; `None`: never, at a zero rate). Rounded up to a whole nanosecond, so a refill at
    /// `last + wait` always finds them.
    pub fn wait_for(&self, units: u64) -> Option<Duration> {
        let missing = to_tokens(units) - self.tokens;
        if self.rate.is_none() || (missing <= 0 && self.rate != Some(0)) {
            return Some(Duration::ZERO);
        }
        let rate = self.rate? as i128;
        if rate == 0 {
            return None;
        }
        let nanos = (missing + rate - 1) / rate;
        Some(Duration::from_nanos(nanos.min(u64::MAX as i128) as u64))
    }

    /// When [`TokenBucket::holds`]`(units)` will be true with no further charges (`None`: never).
    pub fn holds_at(&self, units: u64) -> Option<Duration> {
        self.wait_for(units).map(|w| self.last.saturating_add(w))
    }

    /// When [`TokenBucket::ready`]`(units)` will be true with no further charges (`None`: never).
    pub fn ready_at(&self, units: u64) -> Option<Duration> {
        self.holds_at(units.min(self.burst))
    }

    /// Is the bucket full at `now` (it then holds nothing worth keeping)?
    pub fn is_full(&mut self, now: Duration) -> bool {
        self.refill(now);
        self.tokens >= to_tokens(self.burst)
    }
}

/// One event in [`TokenBucket::per_interval`] units (pico-events).
pub const EVENT: u64 = 1_000_000_000_000;

fn to_tokens(units: u64) -> i128 {
    units as i128 * NANOS
}

fn burst_bits(rate: Option<Bitrate>, window: Duration, min_bytes: u64) -> u64 {
    let min = bits(min_bytes);
    match rate {
        // Unlimited: the burst only bounds what a debt may be forgiven down to.
        None => min.max(bits(1 << 20)),
        Some(r) => {
            let b = (r.bps() as u128 * window.as_nanos() / NANOS as u128) as u64;
            b.max(min)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn paces_repays_debt_and_caps_at_the_burst() {
        // 8 Mbit/s, burst 100 ms = 800 kbit.
        let mut b = TokenBucket::upload(ms(0), Some(Bitrate::from_mbps(8)), ms(100), 0);
        assert_eq!(b.burst(), 800_000);
        assert!(b.holds(0));
        b.charge(bits(250_000));
        assert_eq!(b.units(), -1_200_000, "a whole chunk is charged");
        assert!(!b.holds(0));
        assert_eq!(b.holds_at(0), Some(ms(150)));
        b.refill(ms(150));
        assert!(b.holds(0));
        b.refill(ms(10_000));
        assert_eq!(b.units(), 800_000, "tokens capped at the burst");
    }

    #[test]
    fn the_promised_instant_is_exact_for_awkward_rates() {
        let mut b = TokenBucket::upload(ms(0), Some(Bitrate::from_bps(52_965_097)), ms(250), 0);
        b.charge(bits(b.units() as u64 / 8 + 6));
        let at = b.holds_at(0).expect("nonzero rate");
        assert!(at > ms(0));
        b.refill(at);
        assert!(
            b.holds(0),
            "a refill at the promised instant repays the debt"
        );
        b.refill(at + Duration::from_secs(3600));
        assert_eq!(b.units() as u64, b.burst(), "no drift over an hour");
    }

    #[test]
    fn a_send_larger_than_the_burst_passes_when_full_and_leaves_debt() {
        let mut b = TokenBucket::upload(ms(0), Some(Bitrate::from_kbps(100)), ms(5), 3_000);
        assert_eq!(b.burst(), bits(3_000));
        assert!(b.ready(bits(16_000)) && !b.holds(bits(16_000)));
        b.charge(bits(16_000));
        // 3000 - 16000 = -13000 bytes; 1000 more bytes need 14000 at 12.5 kB/s = 1.12 s.
        assert_eq!(b.ready_at(bits(1_000)), Some(ms(1_120)));
    }

    #[test]
    fn zero_rate_holds_nothing_and_unlimited_holds_everything() {
        let mut zero = TokenBucket::new(ms(0), Some(0), 1_000);
        assert!(!zero.holds(0) && !zero.ready(1));
        assert_eq!(zero.wait_for(0), None);
        zero.set_rate(ms(5), Some(8_000), 1_000);
        assert!(zero.ready(1), "tokens earned before are kept: it was full");
        let mut free = TokenBucket::new(ms(0), None, 10);
        free.charge(1_000_000);
        free.refill(ms(0));
        assert!(free.holds(10) && free.ready(1 << 40));
    }

    #[test]
    fn per_interval_counts_events() {
        // Burst 2, one more every 30 minutes.
        let mut b = TokenBucket::per_interval(ms(0), Duration::from_secs(1800), 2);
        assert!(b.try_take(ms(0), EVENT));
        assert!(b.try_take(ms(1), EVENT));
        assert!(!b.try_take(ms(2), EVENT));
        let wait = b.wait_for(EVENT).expect("nonzero rate");
        assert!(
            wait <= Duration::from_secs(1800) && wait > Duration::from_secs(1799),
            "{wait:?}"
        );
        assert!(!b.try_take(ms(2) + wait - ms(1), EVENT));
        assert!(b.try_take(ms(2) + wait, EVENT));
        assert!(!b.is_full(ms(2) + wait));
        assert!(b.is_full(ms(2) + wait + Duration::from_secs(3600)));
    }

    #[test]
    fn debt_can_be_capped() {
        let mut b = TokenBucket::new(ms(0), Some(1_000), 100);
        b.charge(1_000_000);
        b.cap_debt(6_400);
        assert_eq!(b.units(), -6_400);
    }
}
