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
