//! `--layers`: the root publishes all four layers; each viewer watches the layer hum-mesh's
//! `choose_watch` picks from its download setting and measured throughput, and relays what
//! `relayable` says its budget affords.
//!
//! Each layer is its own mesh (its own root seed stream, tracker and grants: the tracker introduces
//! peers per layer), so the run is one `simulate` per layer over that layer's members, and the
//! reports are combined. How a viewer's relay budget is split: all of it goes to the layer it
//! watches if `relayable` allows that layer; otherwise (a weak peer on a video layer) all of it goes
//! to the audio layer, which the peer then also fetches just to relay ("relay-only" members of the
//! audio mesh); a budget too small even for audio relays nothing. A peer thus relays at most one
//! layer, so the per-layer usable uploads add up to the population's.
//!
//! Approximation: a relay-only audio member appears as a node in two meshes, each with its own
//! copy of its access links (its audio download, 64 kbit/s, is not charged against its video
//! download, which has at least 8 Mbit/s; its upload in the video mesh is zero).

use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use hum_mesh::Layer;
use hum_mesh::layer::{LayerRates, choose_watch, relayable};
use hum_proto::Bitrate;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::population::{self, Member};
use crate::report::{LagHistogram, LayerReport, Report, RootPolicy, Totals};
use crate::sim::{SimConfig, simulate};

/// The per-layer audiences of a `--layers` run: (watchers, relay-only members) per layer index.
pub struct Audience {
    pub watchers: [Vec<Member>; 4],
    pub relay_only: [Vec<Member>; 4],
}

/// Draw the audience and assign layers (deterministic in `cfg.seed`).
pub fn assign(cfg: &SimConfig, rates: &LayerRates) -> Audience {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6c61_7965_7273);
    let mut a = Audience {
        watchers: Default::default(),
        relay_only: Default::default(),
    };
    for _ in 0..cfg.viewers {
        let m = population::draw(&mut rng, &cfg.upload, &cfg.rtt);
        let (cap, measured) = population::draw_download(&mut rng, &m);
        let watch = choose_watch(cap, Bitrate::from_mbps_f64(measured), rates);
        let can = relayable(Bitrate::from_mbps_f64(m.relay_mbps), rates);
        let mut mw = m;
        if !can.contains(&watch) {
            mw.relay_mbps = 0.0;
            if can.contains(&Layer::Audio) {
                a.relay_only[Layer::Audio.index()].push(m);
            }
        }
        a.watchers[watch.index()].push(mw);
    }
    a
}

fn name(l: Layer) -> &'static str {
    match l {
        Layer::High => "high",
        Layer::Medium => "medium",
        Layer::Low => "low",
        Layer::Audio => "audio",
    }
}

/// Run every layer and combine the reports (top level: totals over the layers).
pub fn simulate_layers(cfg: &SimConfig) -> anyhow::Result<Report> {
    if cfg.server_cap.is_some() {
        bail!("--server-cap is per layer in --layers mode and not supported there yet");
    }
    let wall = Instant::now();
    let rates = LayerRates::design_default();
    let aud = assign(cfg, &rates);
    let mut layer_reports = Vec::new();
    let mut subs: Vec<Report> = Vec::new();
    for l in Layer::ALL {
        let i = l.index();
        let watchers = aud.watchers[i].len();
        let relay_only = aud.relay_only[i].len();
        let mut members = aud.watchers[i].clone();
        members.extend_from_slice(&aud.relay_only[i]);
        let relays = members.iter().filter(|m| m.relay_mbps > 0.0).count();
        if members.is_empty() {
            layer_reports.push(LayerReport {
                layer: name(l).into(),
                bitrate_mbps: rates.rate(l).mbps_f64(),
                viewers: 0,
                relay_only: 0,
                relays: 0,
                relay_only_bytes_served: 0,
                server_egress_mbps: 0.0,
                server_cap_mbps: 0.0,
                lower_bound_mbps: 0.0,
                usable_peer_upload_mbps: 0.0,
                peer_share: 0.0,
                continuity: f64::NAN,
                on_time_share: f64::NAN,
                startup_s_p50: f64::NAN,
                lag_s_p50: f64::NAN,
                lag_s_p95: f64::NAN,
                max_hops: 0,
            });
            continue;
        }
        let mut sub = cfg.clone();
        sub.layered = false;
        sub.layer = l;
        sub.bitrate = rates.rate(l);
        sub.viewers = members.len();
        sub.members = Some(Arc::new(members));
        sub.seed = cfg.seed.wrapping_add(0x1000 * (i as u64 + 1));
        let r = simulate(&sub)?;
        layer_reports.push(LayerReport {
            layer: name(l).into(),
            bitrate_mbps: r.bitrate_mbps,
            viewers: watchers,
            relay_only,
            relays,
            relay_only_bytes_served: r.totals.served_by_member[watchers..].iter().sum(),
            server_egress_mbps: r.server_egress_mbps,
            server_cap_mbps: r.server_cap_mbps,
            lower_bound_mbps: r.lower_bound_mbps,
            usable_peer_upload_mbps: r.usable_peer_upload_mbps,
            peer_share: r.peer_share,
            continuity: r.continuity,
            on_time_share: r.on_time_share,
            startup_s_p50: r.startup_s_p50,
            lag_s_p50: r.lag_s_p50,
            lag_s_p95: r.lag_s_p95,
            max_hops: r.max_hops,
        });
        subs.push(r);
    }
    Ok(combine(cfg, &rates, subs, layer_reports, wall))
}

fn combine(
    cfg: &SimConfig,
    rates: &LayerRates,
    subs: Vec<Report>,
    layers: Vec<LayerReport>,
    wall: Instant,
) -> Report {
    let sum = |f: &dyn Fn(&Report) -> f64| subs.iter().map(f).sum::<f64>();
    let sumu = |f: &dyn Fn(&Report) -> u64| subs.iter().map(f).sum::<u64>();
    let mut lag = LagHistogram::new();
    let mut startup: Vec<u64> = Vec::new();
    for r in &subs {
        lag.merge(&r.totals.lag);
        startup.extend_from_slice(&r.totals.startup_us);
    }
    startup.sort_unstable();
    let pct = |v: &[u64], p: f64| -> f64 {
        if v.is_empty() {
            f64::NAN
        } else {
            v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1e6
        }
    };
    let watch = sumu(&|r| r.totals.watch_us);
    let stall = sumu(&|r| r.totals.stall_us);
    let root = sumu(&|r| r.totals.root_bytes);
    let delivered = sumu(&|r| r.totals.delivered_bytes);
    let on_time = sumu(&|r| r.chunks_on_time);
    let late = sumu(&|r| r.chunks_late);
    let skipped = sumu(&|r| r.chunks_skipped);
    let played = on_time + late;
    let hops = sum(&|r| r.mean_hops * (r.chunks_on_time + r.chunks_late) as f64);
    let n_series = subs
        .iter()
        .map(|r| r.egress_series.len())
        .min()
        .unwrap_or(0);
    let egress_series = (0..n_series)
        .map(|k| {
            (
                subs[0].egress_series[k].0,
                subs.iter().map(|r| r.egress_series[k].1).sum(),
            )
        })
        .collect();
    Report {
        viewers: cfg.viewers,
        bitrate_mbps: rates.rate(Layer::High).mbps_f64(),
        chunk_ms: cfg.chunk.as_millis() as u64,
        duration_s: cfg.duration.as_secs_f64(),
        churn: cfg.churn,
        graceful: cfg.graceful,
        departure: None,
        seed: cfg.seed,
        server_cap_mbps: sum(&|r| r.server_cap_mbps),
        root_policy: RootPolicy {
            ceiling_mbps: sum(&|r| r.root_policy.ceiling_mbps),
            peak_mbps: sum(&|r| r.root_policy.peak_mbps),
            over_cap_s: subs
                .iter()
                .map(|r| r.root_policy.over_cap_s)
                .fold(0.0, f64::max),
            starved_periods: sumu(&|r| r.root_policy.starved_periods),
            busy_refusals: sumu(&|r| r.root_policy.busy_refusals),
            expired_requests: sumu(&|r| r.root_policy.expired_requests),
            starving_requests: sumu(&|r| r.root_policy.starving_requests),
        },
        server_egress_mbps: sum(&|r| r.server_egress_mbps),
        lower_bound_mbps: sum(&|r| r.lower_bound_mbps),
        usable_peer_upload_mbps: sum(&|r| r.usable_peer_upload_mbps),
        population_can_supply: subs.iter().all(|r| r.population_can_supply),
        peer_share: if delivered == 0 {
            0.0
        } else {
            1.0 - root as f64 / delivered as f64
        },
        continuity: if watch == 0 {
            0.0
        } else {
            1.0 - stall as f64 / watch as f64
        },
        on_time_share: if on_time + late + skipped == 0 {
            0.0
        } else {
            on_time as f64 / (on_time + late + skipped) as f64
        },
        chunks_on_time: on_time,
        chunks_late: late,
        chunks_skipped: skipped,
        startup_s_p50: pct(&startup, 0.5),
        startup_s_p95: pct(&startup, 0.95),
        started_viewers: startup.len(),
        lag_s_p50: lag.quantile(0.5),
        lag_s_p95: lag.quantile(0.95),
        lag_s_p99: lag.quantile(0.99),
        max_hops: subs.iter().map(|r| r.max_hops).max().unwrap_or(0),
        mean_hops: if played == 0 {
            0.0
        } else {
            hops / played as f64
        },
        fallback_requests: sumu(&|r| r.fallback_requests),
        penalties: sumu(&|r| r.penalties),
        bans: sumu(&|r| r.bans),
        bans_of_honest_peers: sumu(&|r| r.bans_of_honest_peers),
        wall_s: wall.elapsed().as_secs_f64(),
        timer_spins: sumu(&|r| r.timer_spins),
        corrupt_chunks_stored: sumu(&|r| r.corrupt_chunks_stored),
        corrupt_chunks_played: sumu(&|r| r.corrupt_chunks_played),
        slice_parts: cfg.slice_parts,
        slices_delivered: sumu(&|r| r.slices_delivered),
        part_repairs: sumu(&|r| r.part_repairs),
        egress_series,
        lag_cdf: lag.cdf(),
        totals: Totals {
            watch_us: watch,
            stall_us: stall,
            root_bytes: root,
            delivered_bytes: delivered,
            startup_us: startup,
            lag,
            served_by_member: Vec::new(),
        },
        layers: Some(layers),
    }
}
