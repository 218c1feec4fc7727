//! The report: a table, one JSON object, and SVG plots.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

/// Lag samples in 10 ms buckets up to 120 s (the last bucket collects everything beyond).
#[derive(Clone, Debug)]
pub struct LagHistogram {
    buckets: Vec<u64>,
    count: u64,
}

const BUCKET_US: u64 = 10_000;
const BUCKETS: usize = 12_000;

impl Default for LagHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LagHistogram {
    pub fn new() -> Self {
        LagHistogram {
            buckets: vec![0; BUCKETS],
            count: 0,
        }
    }
    pub fn add(&mut self, lag_us: u64) {
        let i = ((lag_us / BUCKET_US) as usize).min(BUCKETS - 1);
        self.buckets[i] += 1;
        self.count += 1;
    }
    pub fn count(&self) -> u64 {
        self.count
    }
    /// Add another histogram's samples.
    pub fn merge(&mut self, other: &LagHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += *b;
        }
        self.count += other.count;
    }
    /// Upper edge of the bucket holding quantile `q`, seconds.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return f64::NAN;
        }
        let target = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut acc = 0;
        for (i, &b) in self.buckets.iter().enumerate() {
            acc += b;
            if acc >= target {
                return (i as u64 + 1) as f64 * BUCKET_US as f64 / 1e6;
            }
        }
        BUCKETS as f64 * BUCKET_US as f64 / 1e6
    }
    /// (lag s, fraction <= lag) at the non-empty buckets, thinned to at most ~400 points.
    pub fn cdf(&self) -> Vec<(f64, f64)> {
        let mut out = Vec::new();
        if self.count == 0 {
            return out;
        }
        let last = self.buckets.iter().rposition(|&b| b > 0).unwrap_or(0);
        let step = (last / 400).max(1);
        let mut acc = 0;
        for (i, &b) in self.buckets.iter().enumerate().take(last + 1) {
            acc += b;
            if i % step == 0 || i == last {
                out.push((
                    (i as u64 + 1) as f64 * BUCKET_US as f64 / 1e6,
                    acc as f64 / self.count as f64,
                ));
            }
        }
        out
    }
}

/// What the root seed spent above its cap, and why (`hum_mesh::root::RootSeed::with_ceiling`): it
/// raises its rate while viewers starve (a `Busy` refusal, a request expired in its queue), up to the
/// operator's ceiling.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct RootPolicy {
    pub ceiling_mbps: f64,
    /// The highest rate the root ran at.
    pub peak_mbps: f64,
    /// Seconds it ran above the cap.
    pub over_cap_s: f64,
    /// Policy periods (500 ms) with starved viewers: each raised the rate.
    pub starved_periods: u64,
    pub busy_refusals: u64,
    pub expired_requests: u64,
    /// Of those, the ones of peers that reported under 500 ms of buffer (what raises the rate).
    pub starving_requests: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub viewers: usize,
    pub bitrate_mbps: f64,
    pub chunk_ms: u64,
    pub duration_s: f64,
    pub churn: f64,
    /// Share of departures announced (graceful leave, `--graceful`).
    pub graceful: f64,
    /// `--exodus`: what the stayers lost when the top of the mesh left together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub departure: Option<DepartureReport>,
    pub seed: u64,
    pub server_cap_mbps: f64,
    pub root_policy: RootPolicy,
    /// Server mesh egress, steady state (from 5 s after the join window to the end).
    pub server_egress_mbps: f64,
    /// max(r, N*r - usable peer upload).
    pub lower_bound_mbps: f64,
    pub usable_peer_upload_mbps: f64,
    pub population_can_supply: bool,
    /// Share of delivered chunk bytes that came from peers, not the server.
    pub peer_share: f64,
    /// 1 - stalled time / watching time (after playback started), over all honest viewers.
    pub continuity: f64,
    /// Chunks played on time / chunks played, late or skipped.
    pub on_time_share: f64,
    pub chunks_on_time: u64,
    pub chunks_late: u64,
    pub chunks_skipped: u64,
    pub startup_s_p50: f64,
    pub startup_s_p95: f64,
    pub started_viewers: usize,
    /// Playback lag behind the live edge (media time of the chunk's start), seconds.
    pub lag_s_p50: f64,
    pub lag_s_p95: f64,
    pub lag_s_p99: f64,
    pub max_hops: u8,
    pub mean_hops: f64,
    pub fallback_requests: u64,
    pub penalties: u64,
    pub bans: u64,
    pub bans_of_honest_peers: u64,
    pub wall_s: f64,
    /// Times a state machine asked to be woken again at the same instant (should be 0).
    pub timer_spins: u64,
    /// Chunks viewers stored whose bytes were not the broadcaster's (must be 0: a viewer keeps
    /// only chunks that verify). Checked by the simulator, apart from the viewer's verification.
    pub corrupt_chunks_stored: u64,
    /// Of those, chunks a viewer then played (must be 0).
    pub corrupt_chunks_played: u64,
    /// `--slices`: upstreams sharing each chunk (0: whole chunks), and slice messages delivered.
    pub slice_parts: u8,
    pub slices_delivered: u64,
    /// Per-part end-game: missing slices of a late or failed part re-asked from another upstream.
    pub part_repairs: u64,
    #[serde(skip)]
    pub egress_series: Vec<(f64, f64)>,
    #[serde(skip)]
    pub lag_cdf: Vec<(f64, f64)>,
    /// Raw sums behind the ratios above (to combine the layers of a `--layers` run).
    #[serde(skip)]
    pub totals: Totals,
    /// `--layers` only: one entry per layer, best first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<LayerReport>>,
}

/// `--exodus`: the top of the mesh left together; the stayers (viewers playing before it that did
/// not leave) over the window after it.
#[derive(Clone, Debug, Serialize)]
pub struct DepartureReport {
    pub leavers: usize,
    /// Of those, announced (graceful).
    pub graceful: usize,
    pub stayers: usize,
    pub window_s: f64,
    /// 1 - the stayers' stalled time / their time in the window.
    pub continuity: f64,
    /// Chunk slots skipped in the window by viewers still watching.
    pub stayers_skipped: u64,
}

/// The sums a report's ratios come from.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    pub watch_us: u64,
    pub stall_us: u64,
    pub root_bytes: u64,
    pub delivered_bytes: u64,
    /// Sorted.
    pub startup_us: Vec<u64>,
    pub lag: LagHistogram,
    /// Chunk bytes each starting member served (by member index; 0 once it left).
    pub served_by_member: Vec<u64>,
}

/// One layer of a `--layers` run.
#[derive(Clone, Debug, Serialize)]
pub struct LayerReport {
    /// `high`, `medium`, `low` or `audio`.
    pub layer: String,
    pub bitrate_mbps: f64,
    /// Viewers watching this layer.
    pub viewers: usize,
    /// Viewers watching a video layer their budget cannot relay, that fetch this (audio) layer only
    /// to relay it. They are members of this layer's mesh (its demand, continuity and lag include
    /// them) but not counted in `viewers`.
    pub relay_only: usize,
    /// Members whose budget goes to this layer (`hum_mesh::layer::relayable`).
    pub relays: usize,
    /// Chunk bytes the relay-only members served in this layer's mesh.
    pub relay_only_bytes_served: u64,
    pub server_egress_mbps: f64,
    pub server_cap_mbps: f64,
    /// max(r_l, N_l*r_l - usable upload for this layer), N_l = viewers + relay_only.
    pub lower_bound_mbps: f64,
    pub usable_peer_upload_mbps: f64,
    pub peer_share: f64,
    pub continuity: f64,
    pub on_time_share: f64,
    pub startup_s_p50: f64,
    pub lag_s_p50: f64,
    pub lag_s_p95: f64,
    pub max_hops: u8,
}

impl Report {
    pub fn json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        // NaN is not JSON: an empty sample becomes null.
        if let Some(o) = v.as_object_mut() {
            for (_, x) in o.iter_mut() {
                if x.as_f64().is_some_and(|f| !f.is_finite()) {
                    *x = serde_json::Value::Null;
                }
            }
        }
        v
    }

    /// The report without `wall_s` (for same-seed comparisons).
    pub fn deterministic_json(&self) -> String {
        let mut v = self.json();
        if let Some(o) = v.as_object_mut() {
            o.remove("wall_s");
        }
        v.to_string()
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        let ratio = self.server_egress_mbps / self.lower_bound_mbps;
        let _ = writeln!(
            s,
            "hum sim: {} viewers, {:.2} Mbit/s, {} ms chunks, {:.0} s, churn {:.0}%, seed {}",
            self.viewers,
            self.bitrate_mbps,
            self.chunk_ms,
            self.duration_s,
            self.churn * 100.0,
            self.seed
        );
        let mut rows: Vec<(&str, String)> = vec![
            (
                "server egress",
                format!(
                    "{:.1} Mbit/s (cap {:.1})",
                    self.server_egress_mbps, self.server_cap_mbps
                ),
            ),
            (
                "lower bound",
                format!("{:.1} Mbit/s ({:.2}x)", self.lower_bound_mbps, ratio),
            ),
            (
                "usable peer upload",
                format!(
                    "{:.1} Mbit/s ({})",
                    self.usable_peer_upload_mbps,
                    if self.population_can_supply {
                        "population can supply the stream"
                    } else {
                        "population CANNOT supply the stream"
                    }
                ),
            ),
            ("peer share", format!("{:.2}%", self.peer_share * 100.0)),
            (
                "continuity",
                format!(
                    "{:.3}% of watch time playing ({} chunks on time, {} late, {} skipped)",
                    self.continuity * 100.0,
                    self.chunks_on_time,
                    self.chunks_late,
                    self.chunks_skipped
                ),
            ),
            (
                "startup p50 / p95",
                format!(
                    "{:.2} s / {:.2} s ({} viewers started)",
                    self.startup_s_p50, self.startup_s_p95, self.started_viewers
                ),
            ),
            (
                "lag p50 / p95 / p99",
                format!(
                    "{:.2} / {:.2} / {:.2} s",
                    self.lag_s_p50, self.lag_s_p95, self.lag_s_p99
                ),
            ),
            (
                "hops max / mean",
                format!("{} / {:.2}", self.max_hops, self.mean_hops),
            ),
            ("fallback requests", format!("{}", self.fallback_requests)),
            (
                "root above cap",
                format!(
                    "{:.1} s, peak {:.2} Mbit/s (ceiling {:.2}); starved periods {} ({} busy, {} expired, {} of starving peers)",
                    self.root_policy.over_cap_s,
                    self.root_policy.peak_mbps,
                    self.root_policy.ceiling_mbps,
                    self.root_policy.starved_periods,
                    self.root_policy.busy_refusals,
                    self.root_policy.expired_requests,
                    self.root_policy.starving_requests
                ),
            ),
            (
                "penalties / bans",
                format!(
                    "{} / {} ({} of honest peers)",
                    self.penalties, self.bans, self.bans_of_honest_peers
                ),
            ),
            (
                "corrupt chunks",
                format!(
                    "{} stored, {} played",
                    self.corrupt_chunks_stored, self.corrupt_chunks_played
                ),
            ),
            (
                "slices",
                if self.slice_parts == 0 {
                    "off (whole chunks)".to_string()
                } else {
                    format!(
                        "{} delivered, up to {} upstreams per chunk; {} part repairs",
                        self.slices_delivered, self.slice_parts, self.part_repairs
                    )
                },
            ),
            (
                "wall time",
                format!("{:.1} s (timer spins {})", self.wall_s, self.timer_spins),
            ),
        ];
        if let Some(d) = &self.departure {
            rows.push((
                "departure",
                format!(
                    "{} left together ({} announced): {} stayers at {:.3}% over the next {:.0} s ({} skipped)",
                    d.leavers,
                    d.graceful,
                    d.stayers,
                    d.continuity * 100.0,
                    d.window_s,
                    d.stayers_skipped
                ),
            ));
        }
        for (k, v) in rows {
            let _ = writeln!(s, "  {k:<20} {v}");
        }
        if let Some(layers) = &self.layers {
            let _ = writeln!(
                s,
                "  {:<7} {:>6} {:>7} {:>6} {:>7} {:>8} {:>8} {:>9} {:>6} {:>6}",
                "layer",
                "Mbit/s",
                "viewers",
                "+relay",
                "relays",
                "egress",
                "bound",
                "contin.",
                "lag50",
                "lag95"
            );
            for l in layers {
                let _ = writeln!(
                    s,
                    "  {:<7} {:>6.3} {:>7} {:>6} {:>7} {:>8.2} {:>8.2} {:>8.3}% {:>6.2} {:>6.2}",
                    l.layer,
                    l.bitrate_mbps,
                    l.viewers,
                    l.relay_only,
                    l.relays,
                    l.server_egress_mbps,
                    l.lower_bound_mbps,
                    l.continuity * 100.0,
                    l.lag_s_p50,
                    l.lag_s_p95
                );
            }
        }
        s
    }
}

/// A plotted line: (label, colour, points).
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

fn svg_plot(title: &str, xlabel: &str, ylabel: &str, series: &[Series<'_>], log_x: bool) -> String {
    let (w, h, ml, mr, mt, mb) = (640.0, 400.0, 70.0, 20.0, 40.0, 50.0);
    let fx = |x: f64| if log_x { x.max(1e-9).log10() } else { x };
    let pts = series.iter().flat_map(|s| s.2.iter().copied());
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for (x, y) in pts {
        x0 = x0.min(fx(x));
        x1 = x1.max(fx(x));
        y1 = y1.max(y);
    }
    if !x0.is_finite() || !x1.is_finite() {
        x0 = 0.0;
        x1 = 1.0;
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let y1 = if y1 <= 0.0 { 1.0 } else { y1 * 1.1 };
    let px = |x: f64| ml + (fx(x) - x0) / (x1 - x0) * (w - ml - mr);
    let py = |y: f64| h - mb - y / y1 * (h - mt - mb);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="15">{title}</text>"#,
        w / 2.0
    );
    let _ = writeln!(
        s,
        r#"<line x1="{ml}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{ml}" y1="{mt}" x2="{ml}" y2="{}" stroke="black"/>"#,
        h - mb,
        w - mr,
        h - mb,
        h - mb
    );
    for i in 0..=4 {
        let yv = y1 * i as f64 / 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{:.3}</text>"#,
            ml - 5.0,
            py(yv) + 4.0,
            yv
        );
        let xv = x0 + (x1 - x0) * i as f64 / 4.0;
        let label = if log_x {
            format!("{:.0}", 10f64.powf(xv))
        } else {
            format!("{xv:.2}")
        };
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{label}</text>"#,
            ml + (xv - x0) / (x1 - x0) * (w - ml - mr),
            h - mb + 18.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{xlabel}</text>"#,
        w / 2.0,
        h - 10.0
    );
    let _ = writeln!(
        s,
        r#"<text x="15" y="{}" transform="rotate(-90 15 {})" text-anchor="middle">{ylabel}</text>"#,
        h / 2.0,
        h / 2.0
    );
    for (i, (name, color, data)) in series.iter().enumerate() {
        let path: Vec<String> = data
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for &(x, y) in data
            .iter()
            .take(if data.len() <= 12 { data.len() } else { 0 })
        {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                px(x),
                py(y)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" fill="{color}">{name}</text>"#,
            ml + 10.0,
            mt + 15.0 + 15.0 * i as f64
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Write `egress.svg` (server egress over time against the bound) and `lag-cdf.svg` into `dir`.
pub fn write_plots(dir: &Path, rep: &Report) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let bound: Vec<(f64, f64)> = rep
        .egress_series
        .iter()
        .map(|&(t, _)| (t, rep.lower_bound_mbps))
        .collect();
    let egress = svg_plot(
        &format!("Server egress, {} viewers", rep.viewers),
        "time (s)",
        "Mbit/s",
        &[
            ("server egress", "#c0392b", rep.egress_series.clone()),
            ("lower bound", "#2c3e50", bound),
        ],
        false,
    );
    std::fs::write(dir.join("egress.svg"), egress)
        .with_context(|| format!("writing {}", dir.display()))?;
    let cdf = svg_plot(
        &format!("Lag behind the live edge, {} viewers", rep.viewers),
        "lag (s)",
        "fraction of chunks",
        &[("lag CDF", "#2980b9", rep.lag_cdf.clone())],
        false,
    );
    std::fs::write(dir.join("lag-cdf.svg"), cdf)
        .with_context(|| format!("writing {}", dir.display()))?;
    Ok(())
}

/// `egress-vs-viewers.svg` from several reports (the bench script's sweep): egress and bound vs N.
pub fn write_sweep_plot(dir: &Path, reps: &[Report]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let e: Vec<(f64, f64)> = reps
        .iter()
        .map(|r| (r.viewers as f64, r.server_egress_mbps))
        .collect();
    let b: Vec<(f64, f64)> = reps
        .iter()
        .map(|r| (r.viewers as f64, r.lower_bound_mbps))
        .collect();
    let svg = svg_plot(
        "Server egress vs viewers",
        "viewers (log)",
        "Mbit/s",
        &[
            ("server egress", "#c0392b", e),
            ("lower bound", "#2c3e50", b),
        ],
        true,
    );
    std::fs::write(dir.join("egress-vs-viewers.svg"), svg)?;
    Ok(())
}
