//! The throttler and limiter closed-loop through hum-netsim's bottleneck queue model: a user on a
//! 10 Mbps uplink plays a game (an echo flow to a game server) while relaying as fast as the relay
//! setting allows. The setting is deliberately too generous (the total was measured while the link
//! was idle and nothing is reserved), so only the throttler stands between relaying and lag.
//!
//! Asserted: the game's queuing delay stays within the target plus a margin while relaying uses
//! most of what the game leaves; when the game stops, relaying grows back to the link; and without
//! the throttler the same setup makes the game lag by hundreds of milliseconds (so the test can
//! fail).

use std::time::{Duration, Instant};

use hum_budget::{
    Admit, LimiterConfig, ProbePath, ThrottleEvent, ThrottleOutput, Throttler, ThrottlerConfig,
    UploadLimiter,
};
use hum_netsim::{EventKind, Net, NodeConfig, Time};
use hum_proto::Bitrate;

const LINK: Bitrate = Bitrate::from_mbps(10);
const RELAY_PKT: u64 = 1_200;
const GAME_PKT: u64 = 1_000;
const GAME_HZ: u64 = 128; // ~1 Mbps of game upload
const VOICE_PKT: u64 = 120;

#[derive(Debug)]
enum Msg {
    Probe(u64),
    ProbeEcho(u64),
    Game(Time),
    GameEcho(Time),
    Relay,
    Voice,
    ThrottlerTick,
    RelayWake,
    GameTick,
    VoiceTick,
}

struct Outcome {
    /// (sent at, queuing delay) of every game packet that came back.
    game: Vec<(Time, Duration)>,
    /// (delivered at, bytes) of relayed data.
    relay: Vec<(Time, u64)>,
    events: Vec<(Time, ThrottleEvent)>,
    game_lost: u64,
}

impl Outcome {
    fn game_p95_ms(&self, from: Time, to: Time) -> f64 {
        let mut q: Vec<f64> = self
            .game
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, d)| d.as_secs_f64() * 1e3)
            .collect();
        assert!(!q.is_empty());
        q.sort_by(f64::total_cmp);
        q[(q.len() * 95 / 100).min(q.len() - 1)]
    }

    fn relay_mbps(&self, from: Time, to: Time) -> f64 {
        let bytes: u64 = self
            .relay
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|x| x.1)
            .sum();
        bytes as f64 * 8.0 / to.since(from).as_secs_f64() / 1e6
    }
}

/// Runs `secs` of simulated time; the game plays while `game_on(t)`.
fn simulate(seed: u64, throttle: bool, secs: u64, game_on: impl Fn(Time) -> bool) -> Outcome {
    let mut net: Net<Msg> = Net::new(seed);
    let user = net.add_node(
        NodeConfig::new(LINK, Bitrate::from_mbps(100), Duration::from_millis(8))
            .with_up_queue_limit(Duration::from_millis(600)),
    );
    let relay_srv = net.add_node(NodeConfig::unlimited(Duration::from_millis(7)));
    let game_srv = net.add_node(NodeConfig::unlimited(Duration::from_millis(5)));
    let peer = net.add_node(NodeConfig::unlimited(Duration::from_millis(12)));
    let game_base = net.rtt(user, game_srv);

    let t0 = Instant::now();
    let at = |t: Time| t0 + Duration::from_micros(t.as_micros());
    // Rounded up: waking a microsecond early would find the limiter not ready yet.
    let to_sim =
        |i: Instant| Time::from_micros(i.duration_since(t0).as_nanos().div_ceil(1_000) as u64);

    // The user's setting: relay up to the whole (idle-measured) link.
    let ceiling = LINK;
    let mut throttler = Throttler::new(at(Time::ZERO), ThrottlerConfig::default(), ceiling);
    let first_cap = if throttle { Bitrate::ZERO } else { ceiling };
    let mut limiter = UploadLimiter::new(
        at(Time::ZERO),
        LimiterConfig::default(),
        Some(LINK),
        first_cap,
    );

    let mut out = Outcome {
        game: Vec::new(),
        relay: Vec::new(),
        events: Vec::new(),
        game_lost: 0,
    };
    let mut throttler_timer: Option<Time> = None;
    let mut relay_wake: Option<Time> = None;
    net.schedule(Time::ZERO, None, Msg::GameTick);
    net.schedule(Time::ZERO, None, Msg::VoiceTick);
    net.schedule(Time::ZERO, None, Msg::RelayWake);
    if throttle {
        net.schedule(Time::ZERO, None, Msg::ThrottlerTick);
    }
    let end = Time::from_secs(secs);

    while let Some(ev) = net.next_event_until(end) {
        let now = ev.at;
        let mut pump_relay = false;
        let mut throttler_touched = false;
        match ev.kind {
            EventKind::Deliver {
                from,
                to,
                payload,
                bytes,
            } => match payload {
                Msg::Probe(seq) => {
                    net.send(to, from, 64, Msg::ProbeEcho(seq));
                }
                Msg::ProbeEcho(seq) => {
                    throttler.on_probe_reply(at(now), seq);
                    throttler_touched = true;
                }
                Msg::Game(sent) => {
                    net.send(to, from, GAME_PKT, Msg::GameEcho(sent));
                }
                Msg::GameEcho(sent) => {
                    out.game
                        .push((sent, now.since(sent).saturating_sub(game_base)));
                }
                Msg::Relay => out.relay.push((now, bytes)),
                Msg::Voice => {}
                _ => unreachable!("timers are not delivered"),
            },
            EventKind::Timer { payload, .. } => match payload {
                Msg::ThrottlerTick => {
                    throttler_timer = None;
                    throttler.handle_timeout(at(now));
                    throttler_touched = true;
                }
                Msg::RelayWake => {
                    relay_wake = None;
                    pump_relay = true;
                }
                Msg::GameTick => {
                    if game_on(now) {
                        let r = net.send(user, game_srv, GAME_PKT, Msg::Game(now));
                        if !matches!(r, hum_netsim::SendOutcome::Queued { .. }) {
                            out.game_lost += 1;
                        }
                    }
                    let next = Time::from_micros(now.as_micros() + 1_000_000 / GAME_HZ);
                    net.schedule(next, None, Msg::GameTick);
                }
                Msg::VoiceTick => {
                    // Own voice: 20 ms Opus frames, always admitted, charged to the total.
                    limiter.on_own_sent(at(now), VOICE_PKT);
                    net.send(user, relay_srv, VOICE_PKT, Msg::Voice);
                    net.schedule(
                        Time::from_micros(now.as_micros() + 20_000),
                        None,
                        Msg::VoiceTick,
                    );
                }
                _ => unreachable!("messages are not timers"),
            },
        }
        if throttler_touched {
            while let Some(o) = throttler.poll_output() {
                match o {
                    ThrottleOutput::Probe {
                        path: ProbePath::Relay,
                        seq,
                    } => {
                        net.send(user, relay_srv, 64, Msg::Probe(seq));
                    }
                    ThrottleOutput::Probe { .. } => {}
                    ThrottleOutput::Event(e) => {
                        if let ThrottleEvent::CapChanged { cap } = e {
                            limiter.set_rates(at(now), Some(LINK), cap);
                            pump_relay = true;
                        }
                        out.events.push((now, e));
                    }
                }
            }
            let next = to_sim(
                throttler
                    .poll_timeout()
                    .expect("relay path is always probed"),
            );
            if throttler_timer.is_none_or(|t| next < t) {
                throttler_timer = Some(next);
                net.schedule(next, None, Msg::ThrottlerTick);
            }
        }
        if pump_relay {
            // A greedy relay: as much as the limiter admits.
            loop {
                match limiter.try_relay(at(now), RELAY_PKT) {
                    Admit::Now => {
                        net.send(user, peer, RELAY_PKT, Msg::Relay);
                        throttler.on_relay_sent(RELAY_PKT);
                    }
                    Admit::At(t) => {
                        let t = to_sim(t);
                        if relay_wake.is_none_or(|w| t < w) {
                            relay_wake = Some(t);
                            net.schedule(t, None, Msg::RelayWake);
                        }
                        break;
                    }
                    Admit::Blocked => break,
                }
            }
        }
    }
    out
}

fn s(secs: u64) -> Time {
    Time::from_secs(secs)
}

#[test]
fn game_stays_within_target_while_relay_uses_the_rest_and_recovers() {
    // Game from 0 to 30 s, then the user stops playing.
    let out = simulate(1, true, 45, |t| t < s(30));
    let p95 = out.game_p95_ms(s(3), s(30));
    let relay = out.relay_mbps(s(5), s(30));
    // What the game leaves: the link minus game and voice (probes are ~20 kbps).
    let game_mbps = (GAME_PKT * GAME_HZ * 8) as f64 / 1e6;
    let left = LINK.mbps_f64() - game_mbps - 0.048;
    let recovered = out.relay_mbps(s(35), s(45));
    println!(
        "netsim: game p95 queuing delay {p95:.1} ms, relay {relay:.2} of {left:.2} Mbps left ({:.0}%), after the game stops {recovered:.2} Mbps, {} cap changes",
        100.0 * relay / left,
        out.events.len()
    );
    // Within the target plus a margin of 8 ms (detection takes a few probes).
    let target = ThrottlerConfig::default().target.as_secs_f64() * 1e3;
    assert!(p95 <= target + 8.0, "game p95 queuing delay {p95:.1} ms");
    assert!(
        relay >= 0.7 * left,
        "relay {relay:.2} Mbps of {left:.2} left"
    );
    assert!(
        recovered >= 0.7 * (LINK.mbps_f64() - 0.05),
        "recovered only to {recovered:.2} Mbps"
    );
    assert_eq!(out.game_lost, 0);
}

#[test]
fn without_the_throttler_the_game_lags() {
    let out = simulate(1, false, 10, |_| true);
    let p95 = out.game_p95_ms(s(2), s(10));
    println!("netsim without throttler: game p95 queuing delay {p95:.1} ms");
    assert!(p95 > 200.0, "expected hundreds of ms of lag, got {p95:.1}");
}

#[test]
fn same_seed_same_run() {
    let a = simulate(9, true, 8, |_| true);
    let b = simulate(9, true, 8, |_| true);
    assert_eq!(a.game, b.game);
    assert_eq!(a.relay, b.relay);
}
