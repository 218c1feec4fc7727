//! Congestion control of the video we send to a mesh peer (sans-IO: instants and rates in).
//!
//! webrtc-rs 0.21 does the measuring: our packets carry transport-wide sequence numbers
//! (`TwccSenderInterceptor`), the peer's `TwccReceiverInterceptor` reports their arrival times,
//! and `CongestionControlInterceptor` feeds those reports to its GCC estimator ([`Gcc`]: delay
//! gradient through a Kalman filter and an adaptive overuse threshold, AIMD, and a loss-based
//! half). Its estimate of what the path to this peer carries arrives on the read leg as
//! `Attribute::TargetBitrateChanged`; the engine's last interceptor copies it out.
//!
//! This module turns that estimate into what the peer's send loop does: [`LayerControl`] picks
//! the simulcast layer the peer gets (at most the one it asked for) and the encoder rate of that
//! layer, after [`AUDIO_RESERVE`] for audio (audio keeps priority) and within the user's budget.
//!
//! - **Down at once**: a layer runs while what is available is at least [`DOWN_FRACTION`] of
//!   its nominal rate (the ladder's share); below that the peer drops to the next layer down,
//!   at the next decision. The low layer always runs (at least [`MIN_LAYER_RATE`]).
//! - **Up after [`UP_HOLD`]**: the next layer up is taken once the estimate has stayed at
//!   [`UP_FRACTION`] of its nominal rate for `UP_HOLD` (the gap between the two fractions is
//!   the hysteresis).
//! - **Probing by trying, with back-off**: the sender is application-limited (it sends what
//!   the encoder makes), so an estimate above what is sent is a guess until it is tried. A layer
//!   taken and lost again within [`PROBE_WINDOW`] was a failed probe: the next try waits
//!   [`FIRST_BACKOFF`], doubling to [`MAX_BACKOFF`]; a layer that holds `PROBE_WINDOW` resets it.
//! - **Rate**: the layer sent is encoded at what is available, at most its nominal rate.

use std::time::{Duration, Instant};

use hum_proto::Bitrate;
use rtc::interceptor::Gcc;

use super::SIMULCAST_LAYERS;

/// Kept out of the estimate for audio: Opus at 36 kbit/s plus RTP/SRTP headers at 50 packets/s.
pub const AUDIO_RESERVE: Bitrate = Bitrate::from_kbps(48);
/// The least a running layer is encoded at (a VP8 stream below this is not worth watching).
pub const MIN_LAYER_RATE: Bitrate = Bitrate::from_kbps(30);
/// A layer keeps running while what is available is at least this share of its nominal rate.
pub const DOWN_FRACTION: f64 = 0.6;
/// A layer is taken once what is available reaches this share of its nominal rate...
pub const UP_FRACTION: f64 = 0.75;
/// ...and has stayed there this long.
pub const UP_HOLD: Duration = Duration::from_secs(1);
/// A layer lost again within this time of taking it was a failed probe.
pub const PROBE_WINDOW: Duration = Duration::from_secs(5);
/// Wait after the first failed probe; doubles with each further one.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(4);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The estimator's floor.
pub const ESTIMATE_MIN: Bitrate = Bitrate::from_kbps(80);

/// The GCC estimator of one peer connection, starting at what the user allows (`cap` for video
/// plus audio): on a narrow path it backs off within the first round trips of feedback. Its
/// ceiling is twice that (at least 1 Mbit/s): the sender is application-limited, and an
/// estimate that grows while nothing tests it would only make the next probe costlier.
pub fn estimator(cap: Bitrate) -> Gcc {
    let initial = cap.bps().saturating_add(AUDIO_RESERVE.bps());
    let max = initial.saturating_mul(2).max(1_000_000);
    Gcc::new(initial as f64, ESTIMATE_MIN.bps() as f64, max as f64)
}

/// What is available for video to one peer: the estimate less audio, within the budget `cap`.
pub fn available(estimate: Bitrate, cap: Bitrate) -> Bitrate {
    estimate.saturating_sub(AUDIO_RESERVE).min(cap)
}

/// A send loop's decision: the layer the peer gets now and the rate to encode it at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub layer: usize,
    pub bitrate: Bitrate,
}

/// Per peer: which layer the estimate allows (see the module doc).
#[derive(Debug, Clone)]
pub struct LayerControl {
    current: Option<usize>,
    wish: Option<usize>,
    up_since: Option<Instant>,
    last_up: Option<Instant>,
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl Default for LayerControl {
    fn default() -> Self {
        Self {
            current: None,
            wish: None,
            up_since: None,
            last_up: None,
            retry_at: None,
            backoff: FIRST_BACKOFF,
        }
    }
}

fn fits(nominal: &[Bitrate; SIMULCAST_LAYERS], layer: usize, available: Bitrate, f: f64) -> bool {
    layer == 0 || available >= nominal[layer].scale(f)
}

impl LayerControl {
    /// Decides at `now`: `nominal` is the ladder's rate per layer, `wish` the highest layer the
    /// peer asked for, `available` what [`available`] says.
    pub fn update(
        &mut self,
        now: Instant,
        nominal: &[Bitrate; SIMULCAST_LAYERS],
        wish: usize,
        available: Bitrate,
    ) -> Decision {
        let wish = wish.min(SIMULCAST_LAYERS - 1);
        let asked_more = self.wish.is_none_or(|w| wish > w);
        self.wish = Some(wish);
        let mut layer = match self.current {
            // A first decision or a new wish: the highest layer the estimate already allows.
            Some(c) if !asked_more => c.min(wish),
            _ => (0..=wish)
                .rev()
                .find(|&l| fits(nominal, l, available, UP_FRACTION))
                .unwrap_or(0)
                .max(self.current.unwrap_or(0).min(wish)),
        };
        // Down at once.
        while !fits(nominal, layer, available, DOWN_FRACTION) {
            layer -= 1;
        }
        if self.current.is_some_and(|c| layer < c) {
            self.up_since = None;
            if self
                .last_up
                .is_some_and(|t| now.saturating_duration_since(t) < PROBE_WINDOW)
            {
                // The layer we tried did not hold: try again later, later each time.
                self.retry_at = Some(now + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
            self.last_up = None;
        }
        // Up after a hold, when not backing off.
        if layer < wish
            && fits(nominal, layer + 1, available, UP_FRACTION)
            && self.retry_at.is_none_or(|t| now >= t)
        {
            let since = *self.up_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= UP_HOLD {
                layer += 1;
                self.up_since = None;
                self.last_up = Some(now);
            }
        } else {
            self.up_since = None;
        }
        if self
            .last_up
            .is_some_and(|t| now.saturating_duration_since(t) >= PROBE_WINDOW)
        {
            // The layer held: the probe succeeded.
            self.last_up = None;
            self.backoff = FIRST_BACKOFF;
        }
        self.current = Some(layer);
        Decision {
            layer,
            bitrate: available.min(nominal[layer]).max(MIN_LAYER_RATE),
        }
    }

    /// The layer decided last.
    pub fn layer(&self) -> Option<usize> {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rtc::interceptor::{BandwidthEstimator, PacketReport};
    use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;

    const NOMINAL: [Bitrate; 3] = [
        Bitrate::from_kbps(150),
        Bitrate::from_kbps(375),
        Bitrate::from_kbps(975),
    ];

    fn kbps(k: u64) -> Bitrate {
        Bitrate::from_kbps(k)
    }

    #[test]
    fn the_first_decision_takes_the_highest_layer_that_fits() {
        let t = Instant::now();
        assert_eq!(
            LayerControl::default()
                .update(t, &NOMINAL, 2, kbps(2000))
                .layer,
            2
        );
        assert_eq!(
            LayerControl::default()
                .update(t, &NOMINAL, 2, kbps(500))
                .layer,
            1
        );
        assert_eq!(
            LayerControl::default()
                .update(t, &NOMINAL, 1, kbps(2000))
                .layer,
            1
        );
        let low = LayerControl::default().update(t, &NOMINAL, 2, kbps(10));
        assert_eq!(
            low,
            Decision {
                layer: 0,
                bitrate: MIN_LAYER_RATE
            }
        );
    }

    #[test]
    fn down_at_once_up_after_the_hold_and_the_rate_follows() {
        let t0 = Instant::now();
        let mut c = LayerControl::default();
        assert_eq!(
            c.update(t0, &NOMINAL, 2, kbps(1500)),
            Decision {
                layer: 2,
                bitrate: kbps(975)
            }
        );
        // 480 kbit/s is below half of the high layer's 975: medium, at once, at 375 (nominal).
        let d = c.update(t0 + Duration::from_millis(100), &NOMINAL, 2, kbps(480));
        assert_eq!(
            d,
            Decision {
                layer: 1,
                bitrate: kbps(375)
            }
        );
        // Between the fractions: medium stays.
        let d = c.update(t0 + Duration::from_secs(20), &NOMINAL, 2, kbps(700));
        assert_eq!(d.layer, 1);
        // 0.75 x 975 = 731: up only after holding UP_HOLD.
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(c.update(t1, &NOMINAL, 2, kbps(800)).layer, 1);
        assert_eq!(
            c.update(t1 + Duration::from_millis(500), &NOMINAL, 2, kbps(800))
                .layer,
            1
        );
        assert_eq!(
            c.update(t1 + UP_HOLD, &NOMINAL, 2, kbps(800)),
            Decision {
                layer: 2,
                bitrate: kbps(800)
            }
        );
        // Down to the low layer in one step when the estimate collapses.
        assert_eq!(
            c.update(t1 + Duration::from_secs(20), &NOMINAL, 2, kbps(90))
                .layer,
            0
        );
    }

    #[test]
    fn a_failed_probe_backs_off_and_doubles() {
        let t0 = Instant::now();
        let mut c = LayerControl::default();
        assert_eq!(c.update(t0, &NOMINAL, 2, kbps(450)).layer, 1);
        let mut at = |s: u64, ms: u64, k: u64| {
            c.update(
                t0 + Duration::from_millis(s * 1000 + ms),
                &NOMINAL,
                2,
                kbps(k),
            )
            .layer
        };
        assert_eq!(at(10, 0, 800), 1);
        assert_eq!(at(11, 0, 800), 2, "taken after the hold");
        assert_eq!(at(12, 0, 400), 1, "did not hold: a failed probe");
        // The estimate says yes again at once, but the retry waits FIRST_BACKOFF (4 s).
        assert_eq!(at(13, 0, 800), 1);
        assert_eq!(at(15, 0, 800), 1);
        assert_eq!(at(16, 0, 800), 1, "hold starts at the end of the back-off");
        assert_eq!(at(17, 0, 800), 2);
        assert_eq!(at(18, 0, 400), 1, "failed again: now 8 s");
        assert_eq!(at(25, 0, 800), 1);
        assert_eq!(at(26, 0, 800), 1);
        assert_eq!(at(27, 0, 800), 2);
        // This time it holds past PROBE_WINDOW: the back-off resets to 4 s.
        assert_eq!(at(33, 0, 800), 2);
        assert_eq!(
            at(34, 0, 400),
            1,
            "a later drop is congestion, not a failed probe"
        );
        assert_eq!(at(35, 0, 800), 1);
        assert_eq!(at(36, 0, 800), 2, "no back-off after a layer that held");
    }

    #[test]
    fn a_higher_wish_is_granted_without_waiting_and_a_lower_one_at_once() {
        let t0 = Instant::now();
        let mut c = LayerControl::default();
        assert_eq!(c.update(t0, &NOMINAL, 0, kbps(2000)).layer, 0);
        assert_eq!(
            c.update(t0 + Duration::from_millis(50), &NOMINAL, 2, kbps(2000))
                .layer,
            2
        );
        assert_eq!(
            c.update(t0 + Duration::from_millis(100), &NOMINAL, 1, kbps(2000))
                .layer,
            1
        );
        // A wish above what the estimate allows gets what it allows.
        assert_eq!(
            c.update(t0 + Duration::from_millis(150), &NOMINAL, 2, kbps(500))
                .layer,
            1
        );
    }

    #[test]
    fn available_reserves_audio_and_keeps_the_budget() {
        assert_eq!(available(kbps(1000), kbps(1500)), kbps(952));
        assert_eq!(available(kbps(3000), kbps(1500)), kbps(1500));
        assert_eq!(available(kbps(20), kbps(1500)), Bitrate::ZERO);
    }

    /// A packet-level model of a `tc tbf` bottleneck: a FIFO served at `rate`, packets that
    /// would wait longer than `limit` are dropped, then a fixed one-way delay with a little
    /// seeded jitter.
    struct Bottleneck {
        rate_bps: u64,
        limit: Duration,
        free_at: Instant,
    }

    impl Bottleneck {
        fn pass(&mut self, sent: Instant, bytes: usize, jitter: Duration) -> Option<Instant> {
            let start = self.free_at.max(sent);
            if start.saturating_duration_since(sent) > self.limit {
                return None;
            }
            let serve = Duration::from_secs_f64(bytes as f64 * 8.0 / self.rate_bps as f64);
            self.free_at = start + serve;
            Some(self.free_at + Duration::from_millis(10) + jitter)
        }
    }

    struct Sent {
        id: u64,
        size: usize,
        departure: Instant,
        arrival: Option<Instant>,
    }

    /// Sender (GCC + LayerControl + an encoder that makes what it is told) and a bottleneck
    /// whose rate changes at given seconds; feedback every 100 ms as TWCC would. Returns the
    /// decision per 100 ms tick and the video bytes that arrived per second.
    fn simulate(seed: u64, link: &[(u64, u64)], seconds: u64) -> (Vec<Decision>, Vec<u64>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let t0 = Instant::now();
        let epoch = t0; // the receiver's clock origin
        let cap = kbps(1500);
        let mut gcc = estimator(cap);
        let mut control = LayerControl::default();
        let mut path = Bottleneck {
            rate_bps: link[0].1 * 1000,
            limit: Duration::from_millis(200),
            free_at: t0,
        };
        let mut pending: Vec<Sent> = Vec::new();
        let mut decisions = Vec::new();
        let mut arrived_per_s = vec![0u64; seconds as usize];
        let mut id = 0u64;
        let mut decision = control.update(
            t0,
            &NOMINAL,
            2,
            available(Bitrate::from_bps(gcc.target_bitrate() as u64), cap),
        );
        // 1 ms steps: a video frame every 33 ms, audio every 20 ms, feedback every 100 ms.
        for ms in 0..seconds * 1000 {
            let now = t0 + Duration::from_millis(ms);
            if let Some(&(_, k)) = link.iter().rev().find(|(s, _)| ms >= s * 1000) {
                path.rate_bps = k * 1000;
            }
            let mut send =
                |size: usize, pending: &mut Vec<Sent>, rng: &mut rand_chacha::ChaCha8Rng| {
                    let jitter = Duration::from_micros(rng.gen_range(0..2000));
                    let arrival = path.pass(now, size, jitter);
                    id += 1;
                    pending.push(Sent {
                        id,
                        size,
                        departure: now,
                        arrival,
                    });
                };
            if ms % 20 == 0 {
                send(130, &mut pending, &mut rng);
            }
            if ms % 33 == 0 {
                // The encoder hits its target on average, frame sizes vary +-30 %.
                let mean = decision.bitrate.bps() as f64 / 30.0 / 8.0;
                let mut left = (mean * rng.gen_range(0.7..1.3)) as usize;
                while left > 0 {
                    let size = left.min(1200);
                    send(size + 40, &mut pending, &mut rng);
                    left -= size;
                }
            }
            if ms % 100 == 0 && ms > 0 {
                // Feedback about everything that arrived (or should have) 20 ms ago.
                let horizon = now - Duration::from_millis(20);
                let (due, keep): (Vec<Sent>, Vec<Sent>) = pending.drain(..).partition(|p| {
                    p.arrival
                        .map_or(p.departure + Duration::from_millis(80) <= horizon, |a| {
                            a <= horizon
                        })
                });
                pending = keep;
                let reports: Vec<PacketReport> = due
                    .iter()
                    .map(|p| PacketReport {
                        ssrc: 1,
                        id: p.id,
                        rtp_sequence_number: p.id as u16,
                        is_twcc: true,
                        twcc_sequence_number: p.id as u16,
                        size: p.size,
                        arrived: p.arrival.is_some(),
                        departure: p.departure,
                        arrival: p.arrival.map(|a| a - epoch),
                        ecn: Ecn::default(),
                    })
                    .collect();
                for p in due.iter().filter(|p| p.size > 200) {
                    if let Some(a) = p.arrival {
                        let s = ((a - t0).as_millis() / 1000) as usize;
                        if let Some(b) = arrived_per_s.get_mut(s) {
                            *b += p.size as u64;
                        }
                    }
                }
                gcc.on_reports(now + Duration::from_millis(10), &reports);
                let estimate = Bitrate::from_bps(gcc.target_bitrate() as u64);
                decision = control.update(now, &NOMINAL, 2, available(estimate, cap));
                decisions.push(decision);
            }
        }
        (decisions, arrived_per_s)
    }

    /// The closed loop through webrtc-rs' real GCC: 600 kbit/s from the start, lifted at 25 s.
    /// The high layer (975 kbit/s) does not fit: the sender drops to medium within 5 s, stays
    /// below the link with rarer and rarer probes of the high layer, video keeps arriving every
    /// second, and after the limit is lifted it climbs back to the high layer at its full rate.
    #[test]
    fn gcc_and_layers_settle_below_a_600_kbit_link_and_climb_back() {
        for seed in 1..=5u64 {
            let (d, arrived) = simulate(seed, &[(0, 600), (25, 10_000)], 50);
            let tick = |s: f64| (s * 10.0) as usize - 1;
            let first_medium = d.iter().position(|d| d.layer < 2).expect("never dropped");
            assert!(
                first_medium < tick(5.0),
                "seed {seed}: dropped only at tick {first_medium}"
            );
            // 5 s to the lift: mostly medium; probes of the high layer (each costs a second or
            // two of loss) become rarer; on average what is sent fits the link.
            let limited = &d[tick(5.0)..tick(25.0)];
            let on_high = limited.iter().filter(|d| d.layer == 2).count();
            let probes = limited
                .windows(2)
                .filter(|w| w[0].layer < 2 && w[1].layer == 2)
                .count();
            let mean = limited.iter().map(|d| d.bitrate.bps()).sum::<u64>() / limited.len() as u64;
            let back = d[tick(25.0)..]
                .iter()
                .position(|d| d.layer == 2)
                .map(|t| t as f64 / 10.0);
            eprintln!(
                "seed {seed}: dropped after {:.1} s; 5-25 s: {on_high} of {} ticks on high, \
                 {probes} probes, mean video {mean} bit/s; back on high {back:?} s after the lift",
                (first_medium + 1) as f64 / 10.0,
                limited.len()
            );
            assert!(
                on_high * 3 < limited.len(),
                "seed {seed}: {on_high} of {} ticks on high",
                limited.len()
            );
            assert!(
                (1..=3).contains(&probes),
                "seed {seed}: {probes} probes in 20 s"
            );
            assert!(
                mean < 600_000 - AUDIO_RESERVE.bps(),
                "seed {seed}: mean video {mean} bit/s over a 600 kbit/s link"
            );
            assert!(mean > 250_000, "seed {seed}: mean video only {mean} bit/s");
            for (s, bytes) in arrived.iter().enumerate() {
                assert!(
                    *bytes > 10_000,
                    "seed {seed}: second {s}: only {bytes} bytes of video arrived"
                );
            }
            // Lifted at 25 s: back on high at its nominal rate by 46 s (the back-off after
            // failed probes is at most MAX_BACKOFF) and staying.
            let end = &d[tick(46.0)..];
            assert!(
                end.iter().all(|d| *d
                    == Decision {
                        layer: 2,
                        bitrate: NOMINAL[2]
                    }),
                "seed {seed}: {:?}",
                &end[..5]
            );
        }
    }
}
