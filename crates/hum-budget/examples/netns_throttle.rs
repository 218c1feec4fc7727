//! The real-network check of the throttler: run by `scripts/test.d/40-budget-netns.sh` inside two
//! network namespaces joined by a veth pair whose uplink is a `tc tbf` bottleneck.
//!
//! ```text
//! netns_throttle server <bind-ip>
//! netns_throttle client <server-ip> <link-mbps>
//! ```
//!
//! The server echoes UDP on port 7001 (game packets and RTT probes) and counts relay bytes on port
//! 7002 (answering `STATS` queries on 7003 with the count so far). The client plays a game (an echo
//! flow, 64 packets/s), and uploads relay data paced by hum-budget's limiter, in phases:
//!
//! 1. idle: game only, to learn the unloaded game RTT;
//! 2. no throttler: relay at the user's setting (the whole link), which is what a naive relay does;
//! 3. throttler: the same setting, the RTT throttler probing the server and moving the relay cap;
//! 4. game over: the game stops; relaying should grow back to the link.
//!
//! It prints the numbers and exits non-zero if the throttler phase misses the bar: game RTT p95
//! inflation <= 15 ms and relay >= 70% of the capacity the game leaves, or if the no-throttler
//! phase did not inflate the game's RTT by at least 100 ms (the setup would be proving nothing).

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hum_budget::{
    Admit, BandwidthSettings, LimiterConfig, Measurements, ProbePath, RelayContribution,
    ReservedUpload, ThrottleEvent, ThrottleOutput, Throttler, ThrottlerConfig, TotalUpload,
    UploadLimiter,
};
use hum_proto::Bitrate;

const ECHO_PORT: u16 = 7001;
const SINK_PORT: u16 = 7002;
const STATS_PORT: u16 = 7003;
const RELAY_PAYLOAD: usize = 1_200;
const GAME_PAYLOAD: usize = 300;
const GAME_HZ: u32 = 64;
const PROBE_PAYLOAD: usize = 64;
/// IPv4 + UDP + Ethernet headers: what tbf counts on top of the payload.
const WIRE_OVERHEAD: usize = 20 + 8 + 14;

const RELAY_SOCKETS: usize = 4;
/// The user typed their ISP plan's upload, which the line does not quite deliver.
const ADVERTISED_OVER_REAL: f64 = 1.2;

const KIND_PROBE: u8 = 1;
const KIND_GAME: u8 = 2;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("server") if args.len() == 3 => server(&args[2]),
        Some("client") if args.len() == 4 => match args[3].parse::<u64>() {
            Ok(mbps) if mbps > 0 => client(&args[2], mbps),
            _ => Err("link-mbps must be a positive whole number".into()),
        },
        _ => Err("usage: netns_throttle server <bind-ip> | client <server-ip> <link-mbps>".into()),
    };
    match result {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("netns_throttle: {e}");
            std::process::exit(2);
        }
    }
}

type Res<T> = Result<T, String>;

fn bind(addr: String) -> Res<UdpSocket> {
    UdpSocket::bind(&addr).map_err(|e| format!("bind {addr}: {e}"))
}

fn server(ip: &str) -> Res<bool> {
    let echo = bind(format!("{ip}:{ECHO_PORT}"))?;
    let sink = bind(format!("{ip}:{SINK_PORT}"))?;
    let stats = bind(format!("{ip}:{STATS_PORT}"))?;
    let received = Arc::new(Mutex::new(0u64));
    let r2 = received.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok(n) = sink.recv(&mut buf) {
            *r2.lock().unwrap_or_else(|e| e.into_inner()) += n as u64;
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((_, from)) = stats.recv_from(&mut buf) {
            let n = *received.lock().unwrap_or_else(|e| e.into_inner());
            let mut reply = [0u8; 9];
            reply[0] = buf[0];
            reply[1..].copy_from_slice(&n.to_le_bytes());
            let _ = stats.send_to(&reply, from);
        }
    });
    eprintln!("netns_throttle server on {ip}");
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = echo.recv_from(&mut buf).map_err(|e| e.to_string())?;
        let _ = echo.send_to(&buf[..n], from);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    NoThrottle,
    Drain,
    Throttle,
    GameOver,
}

/// Phase schedule (seconds from start) and the measuring windows inside them.
const PHASES: [(Phase, f64); 5] = [
    (Phase::Idle, 3.0),
    (Phase::NoThrottle, 8.0),
    (Phase::Drain, 3.0),
    (Phase::Throttle, 25.0),
    (Phase::GameOver, 8.0),
];
/// Measure each phase after this much of it has passed (the controller settling).
const SETTLE: [f64; 5] = [0.5, 3.0, 0.0, 5.0, 4.0];

fn phase_bounds(i: usize) -> (f64, f64) {
    let start: f64 = PHASES[..i].iter().map(|p| p.1).sum();
    (start, start + PHASES[i].1)
}

fn client(server_ip: &str, link_mbps: u64) -> Res<bool> {
    let server: SocketAddr = format!("{server_ip}:{ECHO_PORT}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let echo = bind("0.0.0.0:0".into())?;
    echo.connect(server).map_err(|e| e.to_string())?;
    // A relay feeds several peers, each over its own socket; that also matters for the no-throttler
    // phase: one UDP socket's send buffer alone would cap the queue it can build at ~100 ms.
    let mut relays = Vec::new();
    for _ in 0..RELAY_SOCKETS {
        let relay = bind("0.0.0.0:0".into())?;
        relay
            .connect((server.ip(), SINK_PORT))
            .map_err(|e| e.to_string())?;
        relay.set_nonblocking(true).map_err(|e| e.to_string())?;
        relays.push(relay);
    }
    let mut next_relay_socket = 0usize;
    let stats = bind("0.0.0.0:0".into())?;
    stats
        .connect((server.ip(), STATS_PORT))
        .map_err(|e| e.to_string())?;

    let t0 = Instant::now();
    // The user's settings: the total is their ISP plan's advertised upload (20% more than the line
    // really gives), nothing reserved, and a custom relay limit of all of it. Generous on purpose:
    // only the throttler stands between relaying and the game.
    let link = Bitrate::from_bps((link_mbps as f64 * 1e6 * ADVERTISED_OVER_REAL) as u64);
    let settings = BandwidthSettings {
        total_upload: TotalUpload::Manual { rate: link },
        reserved: ReservedUpload::Manual {
            rate: Bitrate::ZERO,
        },
        relay: RelayContribution::Custom { rate: link },
        ..BandwidthSettings::default()
    };
    settings.validate().map_err(|e| e.to_string())?;
    let budget = settings.effective(&Measurements::default());
    let ceiling = budget.relay;

    // Echo replies: probes go to the control loop, game RTTs to a log.
    let (probe_tx, probe_rx) = mpsc::channel::<(u64, Instant)>();
    let game_log: Arc<Mutex<Vec<(f64, f64)>>> = Arc::default();
    {
        let echo = echo.try_clone().map_err(|e| e.to_string())?;
        let game_log = game_log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok(n) = echo.recv(&mut buf) {
                let now = Instant::now();
                if n < 17 {
                    continue;
                }
                let seq = u64::from_le_bytes(buf[1..9].try_into().unwrap_or_default());
                let sent_us = u64::from_le_bytes(buf[9..17].try_into().unwrap_or_default());
                let sent = t0 + Duration::from_micros(sent_us);
                match buf[0] {
                    KIND_PROBE => {
                        let _ = probe_tx.send((seq, now));
                    }
                    KIND_GAME => {
                        let rtt = now.saturating_duration_since(sent).as_secs_f64() * 1e3;
                        game_log
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((sent.duration_since(t0).as_secs_f64(), rtt));
                    }
                    _ => {}
                }
            }
        });
    }
    // Relay byte counts at the server, queried at window edges: (tag, bytes, when answered).
    let counts: Arc<Mutex<Vec<(u8, u64, f64)>>> = Arc::default();
    {
        let stats = stats.try_clone().map_err(|e| e.to_string())?;
        let counts = counts.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            while let Ok(n) = stats.recv(&mut buf) {
                if n == 9 {
                    let bytes = u64::from_le_bytes(buf[1..9].try_into().unwrap_or_default());
                    let at = t0.elapsed().as_secs_f64();
                    counts
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((buf[0], bytes, at));
                }
            }
        });
    }

    let send_echo = |kind: u8, seq: u64, size: usize| {
        let mut pkt = vec![0u8; size];
        pkt[0] = kind;
        pkt[1..9].copy_from_slice(&seq.to_le_bytes());
        let sent_us = t0.elapsed().as_micros() as u64;
        pkt[9..17].copy_from_slice(&sent_us.to_le_bytes());
        let _ = echo.send(&pkt);
    };

    let mut limiter = UploadLimiter::new(
        t0,
        LimiterConfig::default(),
        Some(budget.available),
        Bitrate::ZERO,
    );
    let mut throttler: Option<Throttler> = None;
    let mut events: Vec<(f64, String)> = Vec::new();
    let mut caps: Vec<(f64, f64)> = Vec::new();
    let relay_pkt = vec![0u8; RELAY_PAYLOAD];
    let game_gap = Duration::from_secs(1) / GAME_HZ;
    let mut next_game = t0;
    let mut game_seq = 0u64;
    let mut relay_wake: Option<Instant> = Some(t0);
    let mut phase_idx = 0usize;
    let mut queried = [false; 10];
    let total: f64 = PHASES.iter().map(|p| p.1).sum();

    loop {
        let now = Instant::now();
        let t = now.duration_since(t0).as_secs_f64();
        if t >= total {
            break;
        }
        // Phase transitions.
        while phase_idx + 1 < PHASES.len() && t >= phase_bounds(phase_idx).1 {
            phase_idx += 1;
            match PHASES[phase_idx].0 {
                Phase::NoThrottle => limiter.set_rates(now, Some(budget.available), ceiling),
                Phase::Drain => limiter.set_rates(now, Some(budget.available), Bitrate::ZERO),
                Phase::Throttle => {
                    throttler = Some(Throttler::new(now, ThrottlerConfig::default(), ceiling));
                }
                Phase::Idle | Phase::GameOver => {}
            }
            relay_wake = Some(now);
        }
        let phase = PHASES[phase_idx].0;
        // Window edges: ask the server for its byte count.
        for (i, _) in PHASES.iter().enumerate() {
            let (start, end) = phase_bounds(i);
            for (j, edge) in [start + SETTLE[i], end].into_iter().enumerate() {
                let tag = (i * 2 + j) as u8;
                if t >= edge && !queried[tag as usize] {
                    queried[tag as usize] = true;
                    let _ = stats.send(&[tag]);
                }
            }
        }
        // The game.
        if phase != Phase::GameOver && now >= next_game {
            send_echo(KIND_GAME, game_seq, GAME_PAYLOAD);
            game_seq += 1;
            next_game += game_gap;
            if next_game < now {
                next_game = now + game_gap;
            }
        }
        // The throttler.
        if let Some(th) = throttler.as_mut() {
            while let Ok((seq, at)) = probe_rx.try_recv() {
                th.on_probe_reply(at, seq);
            }
            if th.poll_timeout().is_some_and(|d| d <= now) {
                th.handle_timeout(now);
            }
            while let Some(out) = th.poll_output() {
                match out {
                    ThrottleOutput::Probe {
                        path: ProbePath::Relay,
                        seq,
                    } => {
                        send_echo(KIND_PROBE, seq, PROBE_PAYLOAD);
                    }
                    ThrottleOutput::Probe { .. } => {}
                    ThrottleOutput::Event(ev) => {
                        if let ThrottleEvent::CapChanged { cap } = ev {
                            caps.push((t, cap.mbps_f64()));
                            limiter.set_rates(now, Some(budget.available), cap);
                            relay_wake = Some(now);
                        } else {
                            events.push((t, format!("{ev:?}")));
                        }
                    }
                }
            }
        } else {
            while probe_rx.try_recv().is_ok() {}
        }
        // The relay: as much as the limiter admits.
        if relay_wake.is_some_and(|w| w <= now) {
            relay_wake = None;
            loop {
                match limiter.try_relay(now, RELAY_PAYLOAD as u64) {
                    Admit::Now => {
                        if let Some(th) = throttler.as_mut() {
                            th.on_relay_sent(RELAY_PAYLOAD as u64);
                        }
                        let _ = relays[next_relay_socket].send(&relay_pkt);
                        next_relay_socket = (next_relay_socket + 1) % relays.len();
                    }
                    Admit::At(at) => {
                        relay_wake = Some(at);
                        break;
                    }
                    Admit::Blocked => break,
                }
            }
        }
        // Sleep until the next thing to do (at most 2 ms, to pick up probe replies promptly).
        let mut next = now + Duration::from_millis(2);
        if phase != Phase::GameOver {
            next = next.min(next_game);
        }
        if let Some(w) = relay_wake {
            next = next.min(w);
        }
        if let Some(d) = throttler.as_ref().and_then(Throttler::poll_timeout) {
            next = next.min(d);
        }
        let wait = next.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
    // The last window edge falls on the end of the run.
    for (tag, done) in queried.iter().enumerate().take(PHASES.len() * 2) {
        if !done {
            let _ = stats.send(&[tag as u8]);
        }
    }
    std::thread::sleep(Duration::from_millis(700));

    // Report.
    let games = game_log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let counts = counts.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let pct = |v: &mut Vec<f64>, p: usize| -> f64 {
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_by(f64::total_cmp);
        v[(v.len() * p / 100).min(v.len() - 1)]
    };
    let window = |i: usize| (phase_bounds(i).0 + SETTLE[i], phase_bounds(i).1);
    let rtts = |i: usize| -> Vec<f64> {
        let (a, b) = window(i);
        games
            .iter()
            .filter(|(t, _)| *t >= a && *t < b)
            .map(|x| x.1)
            .collect()
    };
    let relay_mbps = |i: usize| -> f64 {
        let get = |tag: usize| counts.iter().find(|c| c.0 as usize == tag);
        match (get(i * 2), get(i * 2 + 1)) {
            (Some(a), Some(b)) if b.2 > a.2 => (b.1 - a.1) as f64 * 8.0 / (b.2 - a.2) / 1e6,
            _ => f64::NAN,
        }
    };
    let mut idle = rtts(0);
    let base = idle.iter().copied().fold(f64::INFINITY, f64::min);
    let idle_p50 = pct(&mut idle, 50);
    let idle_p95 = pct(&mut idle, 95);
    let inflation = |i: usize| -> (f64, f64, usize) {
        let mut v: Vec<f64> = rtts(i).iter().map(|r| r - base).collect();
        let n = v.len();
        (pct(&mut v, 50), pct(&mut v, 95), n)
    };
    let sent_game = |i: usize| {
        let (a, b) = window(i);
        ((b - a) * GAME_HZ as f64).round() as usize
    };
    let (nt_p50, nt_p95, nt_n) = inflation(1);
    let (th_p50, th_p95, th_n) = inflation(3);
    let nt_relay = relay_mbps(1);
    let th_relay = relay_mbps(3);
    let go_relay = relay_mbps(4);
    // Capacity the game leaves, in relay payload terms (tbf counts headers too).
    let game_wire = ((GAME_PAYLOAD + WIRE_OVERHEAD) as f64 * 8.0 * GAME_HZ as f64) / 1e6;
    let probe_wire = ((PROBE_PAYLOAD + WIRE_OVERHEAD) as f64 * 8.0 * 20.0) / 1e6;
    let payload_share = RELAY_PAYLOAD as f64 / (RELAY_PAYLOAD + WIRE_OVERHEAD) as f64;
    let left = (link_mbps as f64 - game_wire - probe_wire) * payload_share;
    let link_payload = (link_mbps as f64 - probe_wire) * payload_share;

    println!(
        "link: tbf {link_mbps} Mbit/s; relay setting {ceiling}; game {GAME_HZ} pkt/s x {GAME_PAYLOAD} B"
    );
    println!(
        "idle:          game RTT min {base:.2} ms, p50 {idle_p50:.2} ms, p95 {idle_p95:.2} ms"
    );
    println!(
        "no throttler:  game RTT inflation p50 {nt_p50:.1} ms, p95 {nt_p95:.1} ms ({nt_n}/{} echoes back); relay {nt_relay:.2} Mbit/s",
        sent_game(1)
    );
    println!(
        "throttler:     game RTT inflation p50 {th_p50:.1} ms, p95 {th_p95:.1} ms ({th_n}/{} echoes back); relay {th_relay:.2} Mbit/s = {:.0}% of the {left:.2} Mbit/s the game leaves",
        sent_game(3),
        100.0 * th_relay / left
    );
    println!(
        "game over:     relay {go_relay:.2} Mbit/s = {:.0}% of the link ({link_payload:.2} Mbit/s payload)",
        100.0 * go_relay / link_payload
    );
    // Time-weighted mean relay cap per measuring window (what the throttler allowed).
    let mean_cap = |i: usize| -> f64 {
        let (a, b) = window(i);
        let mut acc = 0.0;
        let mut cur = caps
            .iter()
            .take_while(|c| c.0 <= a)
            .last()
            .map_or(0.0, |c| c.1);
        let mut at = a;
        for &(t, c) in caps.iter().filter(|c| c.0 > a && c.0 < b) {
            acc += cur * (t - at);
            cur = c;
            at = t;
        }
        acc += cur * (b - at);
        acc / (b - a)
    };
    println!(
        "relay cap (time-weighted mean): throttler phase {:.2} Mbit/s, game over {:.2} Mbit/s",
        mean_cap(3),
        mean_cap(4)
    );
    for (t, e) in &events {
        println!("  event at {t:.1} s: {e}");
    }
    let mut ok = true;
    let mut check = |cond: bool, what: String| {
        println!("{} {what}", if cond { "PASS" } else { "FAIL" });
        ok &= cond;
    };
    check(
        nt_p95 >= 100.0,
        format!("without the throttler the game lags (p95 {nt_p95:.1} ms >= 100 ms)"),
    );
    check(
        th_p95 <= 15.0,
        format!("with the throttler game p95 inflation {th_p95:.1} ms <= 15 ms"),
    );
    check(
        th_relay >= 0.7 * left,
        format!("relay {th_relay:.2} Mbit/s >= 70% of {left:.2} Mbit/s left"),
    );
    check(
        go_relay >= 0.7 * link_payload,
        format!("after the game stops relay {go_relay:.2} Mbit/s >= 70% of the link"),
    );
    Ok(ok)
}
