//! Who watches: upload budgets and round-trip times. See docs/sim-population.md for the sources.
//!
//! The default population draws each viewer's connection from a mix of access technologies, then
//! applies the design's bandwidth panel: Hum may use what remains after the auto reserve for other
//! apps (~70% of the uplink), and the relay preset (off / low 10% / medium 25% / high 50%) takes its
//! share of that.

use std::path::Path;

use anyhow::{Context, bail};
use rand::Rng;

/// One viewer's link and settings.
#[derive(Clone, Copy, Debug)]
pub struct Member {
    pub up_mbps: f64,
    pub down_mbps: f64,
    /// What the viewer's relay preset allows, Mbit/s.
    pub relay_mbps: f64,
    /// One-way access delay, ms (RTT between two peers = 2 * (a + b)).
    pub access_ms: f64,
}

/// A connection type: (share of viewers, upload Mbit/s range, download Mbit/s range, name).
type Connection = (f64, (f64, f64), (f64, f64), &'static str);

const CONNECTIONS: [Connection; 6] = [
    (0.30, (50.0, 300.0), (100.0, 1000.0), "fibre"),
    (0.30, (10.0, 40.0), (100.0, 500.0), "cable"),
    (0.10, (1.0, 5.0), (10.0, 50.0), "dsl"),
    (
        0.10,
        (10.0, 50.0),
        (50.0, 300.0),
        "fixed wireless / 5G home",
    ),
    (0.15, (5.0, 20.0), (20.0, 100.0), "mobile"),
    (0.05, (0.5, 2.0), (5.0, 20.0), "constrained"),
];

/// (share of viewers, fraction of "available")
const PRESETS: [(f64, f64); 4] = [(0.25, 0.0), (0.20, 0.10), (0.35, 0.25), (0.20, 0.50)];

/// The mobile class of [`CONNECTIONS`] (the `mobile` preset draws only from it).
const MOBILE: usize = 4;

/// `weak`: relay budgets, Mbit/s (uniform).
pub const WEAK_RELAY_MBPS: (f64, f64) = (0.3, 3.0);

/// `optin25`: the share of viewers who relay at all.
pub const OPTIN_SHARE: f64 = 0.25;

/// `mobile`: one-way access delay, ms (uniform), and the loss the run gets unless `--loss` is given.
pub const MOBILE_ACCESS_MS: (f64, f64) = (20.0, 60.0);
pub const MOBILE_LOSS: f64 = 0.01;

/// The auto reserve leaves about this much of the uplink to Hum (hum-budget: 25% reserved before a
/// measurement; measured use plus 10% headroom after).
pub const AVAILABLE_FRACTION: f64 = 0.70;

#[derive(Clone, Debug)]
pub enum UploadDist {
    /// The realistic mix above.
    Default,
    /// `optin25`: the default connections, but three viewers in four relay nothing (relaying is
    /// opt-in and most never opt in); the rest pick low / medium / high as the default's opted-in do.
    OptIn25,
    /// `weak`: every viewer relays a uniform 0.3-3 Mbit/s (most spare uploads below the stream rate).
    Weak,
    /// `mobile`: every viewer on a mobile link (5-20 Mbit/s up) with the default presets; the run also
    /// gets high RTTs (see [`RttDist`]: access delay 20-60 ms, so 80-240 ms between two peers) and 1%
    /// loss unless `--loss` says otherwise.
    Mobile,
    /// Every viewer relays exactly this (Mbit/s).
    Fixed(f64),
    /// (relay budget Mbit/s, weight) pairs.
    Table(Vec<(f64, f64)>),
}

#[derive(Clone, Debug)]
pub enum RttDist {
    /// A mix of near and far peers (RTT between two typical peers ~40-120 ms).
    Default,
    /// Every pair of peers has this RTT.
    Fixed(f64),
    /// (RTT ms to a typical peer, weight) pairs; a node's access delay is RTT/4.
    Table(Vec<(f64, f64)>),
}

fn parse_table(path: &Path) -> anyhow::Result<Vec<(f64, f64)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut it = line.split_whitespace();
        let v: f64 = it.next().and_then(|x| x.parse().ok()).with_context(|| {
            format!("{}:{}: expected '<value> [weight]'", path.display(), i + 1)
        })?;
        let w: f64 = match it.next() {
            Some(x) => x
                .parse()
                .with_context(|| format!("{}:{}: bad weight", path.display(), i + 1))?,
            None => 1.0,
        };
        if !(v.is_finite() && v >= 0.0 && w.is_finite() && w > 0.0) {
            bail!(
                "{}:{}: values must be >= 0 and weights > 0",
                path.display(),
                i + 1
            );
        }
        out.push((v, w));
    }
    if out.is_empty() {
        bail!("{}: no entries", path.display());
    }
    Ok(out)
}

impl UploadDist {
    /// `default`, `optin25`, `weak`, `mobile`, `none`, `fixed:MBPS`, or a file of `<relay Mbit/s>
    /// <weight>` lines.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "default" | "realistic" => Ok(UploadDist::Default),
            "optin25" => Ok(UploadDist::OptIn25),
            "weak" => Ok(UploadDist::Weak),
            "mobile" => Ok(UploadDist::Mobile),
            "none" => Ok(UploadDist::Fixed(0.0)),
            _ if s.starts_with("fixed:") => {
                let v: f64 = s[6..].parse().context("--upload-dist fixed:MBPS")?;
                if !(v.is_finite() && v >= 0.0) {
                    bail!("--upload-dist fixed: needs a rate >= 0");
                }
                Ok(UploadDist::Fixed(v))
            }
            _ => Ok(UploadDist::Table(parse_table(Path::new(s))?)),
        }
    }
}

impl RttDist {
    /// `default`, `fixed:MS`, or a file of `<rtt ms> <weight>` lines.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "default" => Ok(RttDist::Default),
            _ if s.starts_with("fixed:") => {
                let v: f64 = s[6..].parse().context("--rtt-dist fixed:MS")?;
                if !(v.is_finite() && v >= 0.0) {
                    bail!("--rtt-dist fixed: needs an RTT >= 0");
                }
                Ok(RttDist::Fixed(v))
            }
            _ => Ok(RttDist::Table(parse_table(Path::new(s))?)),
        }
    }
}

fn weighted<R: Rng>(rng: &mut R, table: &[(f64, f64)]) -> f64 {
    let total: f64 = table.iter().map(|t| t.1).sum();
    let mut x = rng.gen_range(0.0..total);
    for &(v, w) in table {
        if x < w {
            return v;
        }
        x -= w;
    }
    table[table.len() - 1].0
}

fn uniform<R: Rng>(rng: &mut R, (a, b): (f64, f64)) -> f64 {
    if b > a { rng.gen_range(a..b) } else { a }
}

/// Draw one viewer.
pub fn draw<R: Rng>(rng: &mut R, up: &UploadDist, rtt: &RttDist) -> Member {
    let x: f64 = rng.gen_range(0.0..1.0);
    let mut acc = 0.0;
    let mut conn = CONNECTIONS[0];
    for c in CONNECTIONS {
        acc += c.0;
        if x < acc {
            conn = c;
            break;
        }
    }
    if matches!(up, UploadDist::Mobile) {
        conn = CONNECTIONS[MOBILE];
    }
    let up_mbps = uniform(rng, conn.1);
    let down_mbps = uniform(rng, conn.2);
    let relay_mbps = match up {
        UploadDist::Default | UploadDist::Mobile => {
            let p = weighted(rng, &PRESETS.map(|(share, frac)| (frac, share)));
            up_mbps * AVAILABLE_FRACTION * p
        }
        UploadDist::OptIn25 => {
            if rng.gen_range(0.0..1.0) < OPTIN_SHARE {
                // The opted-in pick among the default's non-off presets, in the default's proportions.
                let on: Vec<(f64, f64)> = PRESETS
                    .iter()
                    .filter(|p| p.1 > 0.0)
                    .map(|&(share, frac)| (frac, share))
                    .collect();
                up_mbps * AVAILABLE_FRACTION * weighted(rng, &on)
            } else {
                0.0
            }
        }
        UploadDist::Weak => uniform(rng, WEAK_RELAY_MBPS),
        UploadDist::Fixed(v) => *v,
        UploadDist::Table(t) => weighted(rng, t),
    };
    let up_mbps = up_mbps.max(relay_mbps / AVAILABLE_FRACTION);
    let access_ms = match rtt {
        // Four classes of "how far from the typical peer": same metro, same region, same continent, far.
        RttDist::Default if matches!(up, UploadDist::Mobile) => uniform(rng, MOBILE_ACCESS_MS),
        RttDist::Default => {
            weighted(rng, &[(5.0, 0.3), (10.0, 0.35), (20.0, 0.25), (40.0, 0.1)])
                * uniform(rng, (0.8, 1.2))
        }
        RttDist::Fixed(ms) => ms / 4.0,
        RttDist::Table(t) => weighted(rng, t) / 4.0,
    };
    Member {
        up_mbps,
        down_mbps: down_mbps.max(8.0),
        relay_mbps,
        access_ms,
    }
}

/// `--layers`: the viewer's download-quality setting (the design's "Download quality: auto | 1080p |
/// 720p | 480p | audio-only"), as (share of viewers, cap, name). `None` = auto. Assumed shares, not
/// measured ones: see docs/sim-population.md.
pub const DOWNLOAD_SETTINGS: [(f64, Option<hum_mesh::Layer>, &str); 5] = [
    (0.70, None, "auto"),
    (0.08, Some(hum_mesh::Layer::High), "1080p"),
    (0.10, Some(hum_mesh::Layer::Medium), "720p"),
    (0.08, Some(hum_mesh::Layer::Low), "480p"),
    (0.04, Some(hum_mesh::Layer::Audio), "audio-only"),
];

/// The share of a viewer's downlink its throughput measurement sees at join (Wi-Fi, other
/// household traffic): uniform in this range.
pub const MEASURED_DOWN_SHARE: (f64, f64) = (0.15, 1.0);

/// Draw a viewer's download setting and the download throughput it measures (Mbit/s). The raw
/// downlink (before the 8 Mbit/s floor `draw` applies for the single-layer runs) is not kept, so
/// this uses `down_mbps`.
pub fn draw_download<R: Rng>(rng: &mut R, m: &Member) -> (Option<hum_mesh::Layer>, f64) {
    let x: f64 = rng.gen_range(0.0..1.0);
    let mut acc = 0.0;
    let mut cap = None;
    for (share, c, _) in DOWNLOAD_SETTINGS {
        acc += share;
        if x < acc {
            cap = c;
            break;
        }
    }
    (cap, m.down_mbps * uniform(rng, MEASURED_DOWN_SHARE))
}
