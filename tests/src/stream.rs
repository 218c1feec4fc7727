//! Livestream helpers for end-to-end tests: user 0 goes live with `hum stream start`, others
//! watch with `hum watch`, each process's JSON read back from files in the world's directory.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::KillOnDrop;
use crate::voice::{World, wait_for};

/// User 0 goes live with the pattern source for `secs` (its JSON lines in `streamer.jsonl`);
/// the stream's id once it is live.
pub fn go_live(w: &World, secs: u64, extra: &[&str]) -> Result<(KillOnDrop, String)> {
    let dur = format!("{secs}s");
    let mut args = vec![
        "stream",
        "start",
        "--server",
        "Guild",
        "--channel",
        "Lounge",
        "--source",
        "pattern",
        "--bind",
        "127.0.0.1:0",
        "--duration",
        &dur,
    ];
    args.extend_from_slice(extra);
    let log = std::fs::File::create(w.path("streamer.jsonl"))?;
    let streamer = KillOnDrop(
        w.cmd(0, &args)
            .stdout(log)
            .spawn()
            .context("spawning hum stream start")?,
    );
    wait_for("the stream to go live", Duration::from_secs(30), || {
        Ok(!streamer_lines(w).is_empty())
    })?;
    let id = streamer_lines(w)[0]["stream"]["id"]
        .as_u64()
        .context("stream id")?
        .to_string();
    Ok((streamer, id))
}

/// The streamer's JSON lines so far.
pub fn streamer_lines(w: &World) -> Vec<Value> {
    std::fs::read_to_string(w.path("streamer.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Viewer `i` watches stream `id` for `secs` (its report in `watch{i}.json`).
pub fn watch(w: &World, id: &str, i: usize, secs: u64, more: &[&str]) -> Result<KillOnDrop> {
    let out = std::fs::File::create(w.path(&format!("watch{i}.json")))?;
    let dur = format!("{secs}s");
    let mut args = vec!["watch", id, "--bind", "127.0.0.1:0", "--duration", &dur];
    args.extend_from_slice(more);
    Ok(KillOnDrop(w.cmd(i, &args).stdout(out).spawn()?))
}

/// Viewer `i`'s whole JSON report.
pub fn viewer_report(w: &World, i: usize) -> Result<Value> {
    let text = std::fs::read_to_string(w.path(&format!("watch{i}.json")))?;
    serde_json::from_str(&text).with_context(|| format!("viewer {i} printed {text}"))
}

/// A number field of a JSON report (0 when missing).
pub fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}
