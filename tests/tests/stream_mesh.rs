//! Livestreaming with real processes on loopback: a relay, `hum stream start --source pattern`
//! (the streamer, which is the stream's root seed and tracker for now) and `hum watch` viewers that
//! fetch chunks over WebRTC data channels from each other and the root.
//!
//! What is asserted comes from each viewer's JSON report: every chunk it played verified again
//! against the streamer's signed record (`played_verified == played`, none corrupt), continuity,
//! bytes from peers vs the root; and, with one viewer serving corrupt chunks, that it is banned and
//! nothing corrupt plays. No wall-clock bounds: the run lengths only bound how long it takes.
//!
//! Light for a 2-core machine: 320x180 at 20 fps (~0.35 Mbit/s), 15 s per viewer.
//! The benchmark (`--ignored`) prints the root's egress with 4 and 8 viewers (docs/mesh.md).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use hum_tests::KillOnDrop;
use hum_tests::voice::{World, wait_exit, wait_for};
use serde_json::Value;

const WATCH_SECS: u64 = 15;

struct Run {
    streamer: Value,
    viewers: Vec<Value>,
}

/// Streams while `viewers` (1..=n, `corrupt` among them first if given) each watch WATCH_SECS.
fn run(w: &World, n: usize, corrupt: Option<usize>) -> Result<Run> {
    let secs = WATCH_SECS + n as u64 / 2 + 4;
    let log = std::fs::File::create(w.path("streamer.jsonl"))?;
    let mut streamer = KillOnDrop(
        w.cmd(
            0,
            &[
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
                &format!("{secs}s"),
            ],
        )
        .stdout(log)
        .spawn()
        .context("spawning hum stream start")?,
    );
    let lines = || -> Vec<Value> {
        std::fs::read_to_string(w.path("streamer.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    wait_for("the stream to go live", Duration::from_secs(30), || {
        Ok(!lines().is_empty())
    })?;
    let id = lines()[0]["stream"]["id"]
        .as_u64()
        .context("stream id")?
        .to_string();
    let mut order: Vec<usize> = (1..=n).collect();
    if let Some(c) = corrupt {
        order.retain(|&i| i != c);
        order.insert(0, c);
    }
    let mut procs = Vec::new();
    for &i in &order {
        let out = std::fs::File::create(w.path(&format!("watch{i}.json")))?;
        let dur = format!("{WATCH_SECS}s");
        let mut args = vec![
            "watch",
            id.as_str(),
            "--bind",
            "127.0.0.1:0",
            "--duration",
            &dur,
        ];
        if Some(i) == corrupt {
            // The strongest upload: the tracker gives it the root's seat and others' grants.
            args.extend(["--corrupt", "--relay-kbps", "20000"]);
        }
        procs.push(KillOnDrop(w.cmd(i, &args).stdout(out).spawn()?));
        std::thread::sleep(Duration::from_millis(300));
    }
    for p in &mut procs {
        wait_exit(p, Duration::from_secs(WATCH_SECS + 60))?;
    }
    wait_exit(&mut streamer, Duration::from_secs(secs + 60))?;
    let mut viewers = Vec::new();
    for i in 1..=n {
        let text = std::fs::read_to_string(w.path(&format!("watch{i}.json")))?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("viewer {i} printed {text}"))?;
        viewers.push(v["viewer"].clone());
    }
    let streamer = lines().last().cloned().context("streamer report")?;
    Ok(Run { streamer, viewers })
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

#[test]
fn eight_viewers_play_only_verified_chunks_mostly_from_each_other() -> Result<()> {
    let w = World::new(8)?;
    let r = run(&w, 8, None)?;
    let mut from_peers = 0;
    for (i, v) in r.viewers.iter().enumerate() {
        ensure!(u(v, "played") >= 20, "viewer {} played little: {v}", i + 1);
        ensure!(
            u(v, "played_verified") == u(v, "played") && u(v, "played_corrupt") == 0,
            "viewer {} played a chunk that does not verify: {v}",
            i + 1
        );
        let continuity = v["continuity"].as_f64().unwrap_or(0.0);
        ensure!(
            continuity >= 0.99,
            "viewer {}: continuity {continuity}: {v}",
            i + 1
        );
        ensure!(u(v, "wire_errors") == 0, "viewer {}: {v}", i + 1);
        from_peers += u(v, "bytes_from_peers");
    }
    ensure!(from_peers > 0, "no byte came from a peer: {:?}", r.viewers);
    eprintln!(
        "8 viewers: root sent {:.2} copies of the stream ({:.0} kbit/s for a {} kbit/s plan)",
        r.streamer["root_copies"].as_f64().unwrap_or(0.0),
        r.streamer["root_egress_kbps"].as_f64().unwrap_or(0.0),
        u(&r.streamer, "stream_kbps")
    );
    Ok(())
}

#[test]
fn a_viewer_serving_corrupt_chunks_is_banned_and_nothing_corrupt_plays() -> Result<()> {
    let w = World::new(5)?;
    let r = run(&w, 5, Some(1))?;
    let bad = &w.users[1];
    let mut bans = 0;
    for (i, v) in r.viewers.iter().enumerate().skip(1) {
        ensure!(u(v, "played") > 0, "viewer {} played nothing: {v}", i + 1);
        ensure!(
            u(v, "played_verified") == u(v, "played") && u(v, "played_corrupt") == 0,
            "viewer {} played a corrupt chunk: {v}",
            i + 1
        );
        let banned: Vec<&str> = v["banned"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        ensure!(
            banned.iter().all(|b| b == bad),
            "viewer {} banned an honest peer: {v}",
            i + 1
        );
        bans += banned.len();
    }
    ensure!(
        bans >= 1,
        "nobody banned the corrupt viewer: {:?}",
        r.viewers
    );
    ensure!(
        u(&r.streamer["root"], "tracker_bans") >= 1,
        "the tracker heard no ban: {}",
        r.streamer
    );
    Ok(())
}

/// `cargo test -p hum-tests --test stream_mesh -- --ignored --nocapture`: the root's egress with
/// 4 and 8 viewers (copies of the stream it sent, kbit/s), continuity and lag.
#[test]
#[ignore = "benchmark: prints numbers for docs/mesh.md"]
fn bench_root_egress_4_and_8_viewers() -> Result<()> {
    for n in [4, 8] {
        let w = World::new(n)?;
        let r = run(&w, n, None)?;
        let cont: Vec<f64> = r
            .viewers
            .iter()
            .map(|v| v["continuity"].as_f64().unwrap_or(0.0))
            .collect();
        let mut lag50: Vec<u64> = r.viewers.iter().map(|v| u(v, "lag_ms_p50")).collect();
        let mut lag95: Vec<u64> = r.viewers.iter().map(|v| u(v, "lag_ms_p95")).collect();
        lag50.sort_unstable();
        lag95.sort_unstable();
        let peers: u64 = r.viewers.iter().map(|v| u(v, "bytes_from_peers")).sum();
        let root: u64 = r.viewers.iter().map(|v| u(v, "bytes_from_root")).sum();
        println!(
            "{n} viewers: root egress {:.0} kbit/s = {:.2} copies of the stream (stream {:.0} kbit/s over {:.1} s); \
             viewers got {:.1}% of chunk bytes from peers; continuity min {:.4}; lag p50 median {} ms, p95 max {} ms",
            r.streamer["root_egress_kbps"].as_f64().unwrap_or(0.0),
            r.streamer["root_copies"].as_f64().unwrap_or(0.0),
            u(&r.streamer, "stream_bytes") as f64 * 8.0
                / r.streamer["seconds"].as_f64().unwrap_or(1.0)
                / 1000.0,
            r.streamer["seconds"].as_f64().unwrap_or(0.0),
            100.0 * peers as f64 / (peers + root).max(1) as f64,
            cont.iter().cloned().fold(1.0, f64::min),
            lag50[lag50.len() / 2],
            lag95.last().copied().unwrap_or(0),
        );
    }
    Ok(())
}
