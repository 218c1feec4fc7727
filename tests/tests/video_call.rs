//! A 1-on-1 video call between two real `hum call` processes through a real relay, each sending
//! the moving test pattern (its frame number and capture time are drawn into the pixels) and
//! recording what it receives (`--record-video`: a Y4M file + one JSON line per decoded frame).
//! Checked from the recordings alone: frames decode, every code is readable, codes arrive in
//! order, and at least 95 % of the frames sent at 30 fps between the first and the last one
//! received arrived (counted by codes, not by time).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hum_tests::KillOnDrop;
use hum_tests::voice::World;
use serde_json::Value;

/// The decoded frames of the one stream recorded in `dir`.
fn recorded(dir: &Path) -> Result<(Vec<Value>, u64)> {
    let mut logs = Vec::new();
    let mut y4m_bytes = 0;
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        match p.extension().and_then(|x| x.to_str()) {
            Some("jsonl") => logs.push(p),
            Some("y4m") => y4m_bytes += std::fs::metadata(&p)?.len(),
            _ => {}
        }
    }
    if logs.len() != 1 {
        bail!(
            "expected one received stream in {}, found {logs:?}",
            dir.display()
        );
    }
    let text = std::fs::read_to_string(&logs[0])?;
    let lines = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<Vec<Value>, _>>()?;
    Ok((lines, y4m_bytes))
}

/// Checks one recording; returns (frames, share of the sent frames that arrived).
fn check(who: &str, dir: &Path, size: (u64, u64)) -> Result<(usize, f64)> {
    let (lines, y4m_bytes) = recorded(dir)?;
    if lines.len() < 60 {
        bail!("{who}: only {} frames decoded", lines.len());
    }
    let mut codes = Vec::new();
    for l in &lines {
        let w = l["width"].as_u64().context("width")?;
        let h = l["height"].as_u64().context("height")?;
        if (w, h) != size {
            bail!("{who}: a {w}x{h} frame, sent {size:?}: {l}");
        }
        let code = l["code"]
            .as_u64()
            .with_context(|| format!("{who}: unreadable pattern code: {l}"))?;
        codes.push((code, l["capture_ms"].as_u64().context("capture_ms")?));
    }
    for w in codes.windows(2) {
        if w[1].0 <= w[0].0 {
            bail!(
                "{who}: code {} after {} (out of order or repeated)",
                w[1].0,
                w[0].0
            );
        }
    }
    let (first, last) = (codes[0], codes[codes.len() - 1]);
    let sent = last.0 - first.0 + 1;
    let share = codes.len() as f64 / sent as f64;
    // The sender's own clock says 30 fps (media time from the codes, not this test's clock).
    let ms_per_frame = (last.1 - first.1) as f64 / (last.0 - first.0) as f64;
    if !(30.0..=36.7).contains(&ms_per_frame) {
        bail!("{who}: the sender's codes say {ms_per_frame:.1} ms per frame, not 30 fps");
    }
    // The Y4M file holds the same frames (header + per-frame marker + I420 planes).
    let frame_bytes = size.0 * size.1 * 3 / 2;
    if y4m_bytes < lines.len() as u64 * frame_bytes {
        bail!(
            "{who}: the Y4M file has {y4m_bytes} bytes for {} frames",
            lines.len()
        );
    }
    Ok((codes.len(), share))
}

fn wait(child: &mut KillOnDrop, who: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.0.try_wait()? {
            if !status.success() {
                bail!("{who} exited with {status}");
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{who} did not finish (hang guard)");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn video_call_both_ways_with_the_pattern() -> Result<()> {
    let mut w = World::empty()?;
    w.create_users(2)?;
    let (a, b) = (w.users[0].clone(), w.users[1].clone());
    // Both log in once (the relay knows a key only after that), then befriend.
    w.run(1, &["friends", "list"])?;
    for (i, args) in [(0, ["friends", "add", &b]), (1, ["friends", "accept", &a])] {
        let status = w.cmd(i, &args).status()?;
        if !status.success() {
            bail!("hum {args:?} failed");
        }
    }
    let (rec_a, rec_b) = (w.path("rec-a"), w.path("rec-b"));
    let size = "640x360";
    let common = |rec: &Path| {
        vec![
            "--video".to_string(),
            "pattern".into(),
            "--video-size".into(),
            size.into(),
            "--video-kbps".into(),
            "800".into(),
            "--record-video".into(),
            rec.display().to_string(),
            "--bind".into(),
            "127.0.0.1:0".into(),
        ]
    };
    let spawn = |i: usize, args: Vec<String>, log: &str| -> Result<KillOnDrop> {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = std::fs::File::create(w.path(log))?;
        Ok(KillOnDrop(
            w.cmd(i, &refs)
                .stdout(out)
                .stderr(Stdio::inherit())
                .spawn()
                .context("spawning hum call")?,
        ))
    };
    let mut args_b = vec![
        "call".to_string(),
        "--answer".into(),
        a.clone(),
        "--tone".into(),
        "440".into(),
    ];
    args_b.extend(common(&rec_b));
    let mut callee = spawn(1, args_b, "b.jsonl")?;
    // The caller rings once the callee is online (its call service listens from login on).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = w.run(0, &["friends", "list"])?;
        if list["friends"][0]["presence"]["status"] == "online" {
            break;
        }
        if Instant::now() > deadline {
            bail!("the callee never came online: {list}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut args_a = vec![
        "call".to_string(),
        b.clone(),
        "--tone".into(),
        "660".into(),
        "--duration".into(),
        "6s".into(),
    ];
    args_a.extend(common(&rec_a));
    let mut caller = spawn(0, args_a, "a.jsonl")?;
    wait(&mut caller, "the caller", Duration::from_secs(60))?;
    wait(&mut callee, "the callee", Duration::from_secs(30))?;

    for (who, dir) in [("a (from b)", &rec_a), ("b (from a)", &rec_b)] {
        let (frames, share) = check(who, dir, (640, 360))?;
        eprintln!(
            "{who}: {frames} frames, {:.1} % of those sent",
            share * 100.0
        );
        assert!(
            share >= 0.95,
            "{who}: only {:.1} % of the frames arrived",
            share * 100.0
        );
    }
    Ok(())
}

/// The JSON lines a `hum call` printed so far.
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Polls `f` every 100 ms until it says yes (a hang guard, not a measured bound).
fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("timed out waiting for {what}")
}

/// Camera off in a 1-on-1 call is said (the `camera` signal), not guessed from frames stopping:
/// the caller sends the pattern and turns its camera off (`--video-off-file`) once the callee
/// decodes it; the callee prints the caller's `video` event with `camera: false`, and no frame
/// captured after the caller turned it off reaches the callee. On again is said too.
#[test]
fn camera_off_in_a_call_is_said_not_timed_out() -> Result<()> {
    let mut w = World::empty()?;
    w.create_users(2)?;
    let (a, b) = (w.users[0].clone(), w.users[1].clone());
    w.run(1, &["friends", "list"])?;
    for (i, args) in [(0, ["friends", "add", &b]), (1, ["friends", "accept", &a])] {
        if !w.cmd(i, &args).status()?.success() {
            bail!("hum {args:?} failed");
        }
    }
    let rec_b = w.path("rec-b");
    let off_a = w.path("camera-a-off");
    let spawn = |i: usize, args: &[&str], log: &str| -> Result<KillOnDrop> {
        let out = std::fs::File::create(w.path(log))?;
        Ok(KillOnDrop(
            w.cmd(i, args)
                .stdout(out)
                .stderr(Stdio::inherit())
                .spawn()
                .context("spawning hum call")?,
        ))
    };
    let rec = rec_b.display().to_string();
    let _callee = spawn(
        1,
        &[
            "call",
            "--answer",
            &a,
            "--tone",
            "440",
            "--bind",
            "127.0.0.1:0",
            "--record-video",
            &rec,
        ],
        "b.jsonl",
    )?;
    wait_until("the callee online", Duration::from_secs(30), || {
        Ok(w.run(0, &["friends", "list"])?["friends"][0]["presence"]["status"] == "online")
    })?;
    let off = off_a.display().to_string();
    let _caller = spawn(
        0,
        &[
            "call",
            &b,
            "--tone",
            "660",
            "--duration",
            "60s",
            "--bind",
            "127.0.0.1:0",
            "--video",
            "pattern",
            "--video-size",
            "320x180",
            "--video-kbps",
            "300",
            "--video-off-file",
            &off,
        ],
        "a.jsonl",
    )?;
    // The decoded frames so far (the last line may be half written while the callee runs).
    let frames = || -> Result<Vec<Value>> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&rec_b) {
            for e in rd {
                let p = e?.path();
                if p.extension().and_then(|x| x.to_str()) == Some("jsonl") {
                    out.extend(
                        std::fs::read_to_string(&p)?
                            .lines()
                            .filter_map(|l| serde_json::from_str::<Value>(l).ok()),
                    );
                }
            }
        }
        Ok(out)
    };
    wait_until(
        "the callee decodes 30 frames",
        Duration::from_secs(60),
        || Ok(frames()?.len() >= 30),
    )?;
    let a_key = a.as_str();
    let a_said = |camera: bool| {
        move |e: &Value| e["type"] == "video" && e["camera"] == camera && e["user"] == a_key
    };
    // Said once the connection is up (the caller's camera is on).
    ensure_event(&w.path("b.jsonl"), a_said(true), "the caller's camera on")?;

    std::fs::write(&off_a, b"")?;
    wait_until(
        "the callee hears that the caller's camera is off",
        Duration::from_secs(30),
        || Ok(lines(&w.path("b.jsonl")).iter().any(a_said(false))),
    )?;
    let turned_off = lines(&w.path("a.jsonl"))
        .into_iter()
        .find(|e| e["type"] == "video" && e["user"].is_null() && e["camera"] == false)
        .context("the caller did not report its own camera off")?;
    let off_ms = turned_off["at_unix_ms"].as_u64().context("at_unix_ms")? as u32;
    let before = frames()?;
    let last = before
        .last()
        .and_then(|f| f["capture_ms"].as_u64())
        .context("capture_ms")? as u32;
    // (Codes carry the low 32 bits of the capture time in Unix ms.)
    if (last.wrapping_sub(off_ms) as i32) > 0 {
        bail!("a frame captured at {last} arrived after the camera went off at {off_ms}");
    }

    // On again: said, and frames flow again.
    std::fs::remove_file(&off_a)?;
    wait_until(
        "the callee hears the caller's camera on again and decodes 10 more frames",
        Duration::from_secs(30),
        || {
            Ok(lines(&w.path("b.jsonl"))
                .iter()
                .filter(|e| a_said(true)(e))
                .count()
                >= 2
                && frames()?.len() >= before.len() + 10)
        },
    )?;
    eprintln!(
        "camera off at {off_ms}: last frame before captured at {last}; {} frames before, {} after",
        before.len(),
        frames()?.len()
    );
    Ok(())
}

fn ensure_event(path: &Path, f: impl Fn(&Value) -> bool, what: &str) -> Result<()> {
    wait_until(what, Duration::from_secs(30), || {
        Ok(lines(path).iter().any(&f))
    })
}
