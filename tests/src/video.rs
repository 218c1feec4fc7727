//! Reading what `hum voice join --record-video DIR` wrote: one `<user16>-<track>.jsonl` file per
//! received stream, one JSON line per decoded frame (`width`, `height`, `code` read from the
//! test pattern's pixels, `capture_ms`, `latency_ms`, ...).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

/// Decoded frames per received stream in `dir`, keyed by the file stem (`<user16>-<track>`).
/// A missing directory is no streams yet.
pub fn streams(dir: &Path) -> Result<BTreeMap<String, Vec<Value>>> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for e in rd {
        let p = e?.path();
        if p.extension().and_then(|x| x.to_str()) != Some("jsonl") {
            continue;
        }
        let stem = p
            .file_stem()
            .and_then(|x| x.to_str())
            .unwrap_or_default()
            .to_string();
        let text = std::fs::read_to_string(&p)?;
        // The last line may be half written while the process runs.
        let frames = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        out.insert(stem, frames);
    }
    Ok(out)
}

/// The streams of `user` (files starting with the first 16 hex digits of the key), with their
/// stems.
pub fn of_user<'a>(
    streams: &'a BTreeMap<String, Vec<Value>>,
    user: &str,
) -> Vec<(&'a str, &'a Vec<Value>)> {
    streams
        .iter()
        .filter(|(stem, _)| stem.starts_with(&user[..16]))
        .map(|(stem, f)| (stem.as_str(), f))
        .collect()
}

/// `(width, height)` of a recorded frame.
pub fn size(f: &Value) -> (u64, u64) {
    (
        f["width"].as_u64().unwrap_or(0),
        f["height"].as_u64().unwrap_or(0),
    )
}

/// `(code, capture_ms)` of every frame, checked: each `size`, each code readable, strictly
/// increasing (no repeats, nothing out of order).
pub fn readable_codes(who: &str, frames: &[Value], want: (u64, u64)) -> Result<Vec<(u64, u64)>> {
    let mut codes = Vec::new();
    for f in frames {
        let wh = size(f);
        ensure!(wh == want, "{who}: a {wh:?} frame, sent {want:?}: {f}");
        let code = f["code"]
            .as_u64()
            .with_context(|| format!("{who}: unreadable pattern code: {f}"))?;
        let capture = f["capture_ms"].as_u64().context("capture_ms")?;
        codes.push((code, capture));
    }
    for w in codes.windows(2) {
        if w[1].0 <= w[0].0 {
            bail!("{who}: code {} after {}", w[1].0, w[0].0);
        }
    }
    Ok(codes)
}

/// What one received stream of the test pattern came to (see [`continuous`]).
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub frames: usize,
    pub size: (u64, u64),
    pub first_code: u64,
    pub last_code: u64,
    /// Frames over the capture time between the first and the last.
    pub fps: f64,
    pub capture_secs: f64,
    pub latency_p50_ms: u64,
    pub latency_max_ms: u64,
}

impl std::fmt::Display for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} frames at {}x{}, codes {}..{} ({} sent in that span), {:.1} fps over {:.1} s of \
             capture time, latency p50 {} ms, max {} ms",
            self.frames,
            self.size.0,
            self.size.1,
            self.first_code,
            self.last_code,
            self.last_code - self.first_code + 1,
            self.fps,
            self.capture_secs,
            self.latency_p50_ms,
            self.latency_max_ms,
        )
    }
}

/// Checks one received stream of the pattern as [`readable_codes`] does and that >= 90 % of the
/// frames sent between its first and last code arrived; returns the numbers for the docs.
pub fn continuous(who: &str, frames: &[Value], want: (u64, u64)) -> Result<Received> {
    let codes = readable_codes(who, frames, want)?;
    let (Some(&first), Some(&last)) = (codes.first(), codes.last()) else {
        bail!("{who}: no frames");
    };
    let span = last.0 - first.0 + 1;
    ensure!(
        codes.len() as u64 * 100 >= span * 90,
        "{who}: {} of {span} frames between codes {} and {} arrived",
        codes.len(),
        first.0,
        last.0
    );
    let mut latency: Vec<u64> = frames
        .iter()
        .filter_map(|f| f["latency_ms"].as_u64())
        .collect();
    latency.sort_unstable();
    let secs = (last.1.wrapping_sub(first.1) as u32) as f64 / 1000.0;
    Ok(Received {
        frames: codes.len(),
        size: want,
        first_code: first.0,
        last_code: last.0,
        fps: codes.len() as f64 / secs.max(0.001),
        capture_secs: secs,
        latency_p50_ms: latency.get(latency.len() / 2).copied().unwrap_or(0),
        latency_max_ms: latency.last().copied().unwrap_or(0),
    })
}
