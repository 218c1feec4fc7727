//! Per-connection rate limiting: a token bucket, plus a strike count so a client that keeps
//! flooding after being told `rate_limited` is eventually disconnected. Sans-IO: time is an
//! input in milliseconds.

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

/// A token bucket refilled at `rate_per_sec` up to `burst`, one token per frame.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    rate_per_sec: f64,
    burst: f64,
    tokens: f64,
    last_ms: u64,
    strikes: u32,
    max_strikes: u32,
}

impl RateLimiter {
    /// A full bucket at `now_ms`. After `max_strikes` rejected frames in a row without the client
    /// slowing down enough to earn a token, [`Verdict::Disconnect`].
    pub fn new(rate_per_sec: u32, burst: u32, max_strikes: u32, now_ms: u64) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            rate_per_sec: f64::from(rate_per_sec.max(1)),
            burst,
            tokens: burst,
            last_ms: now_ms,
            strikes: 0,
            max_strikes,
        }
    }

    pub fn check(&mut self, now_ms: u64) -> Verdict {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed * self.rate_per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
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
}
