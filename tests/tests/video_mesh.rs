//! Video in a mesh voice channel, real processes: three `hum voice join --video pattern` in one
//! channel (a full mesh: everyone connects to everyone), each sending the moving test pattern
//! (its frame number and capture time drawn into the pixels) and recording what it receives
//! (`--record-video`: one JSON line per decoded frame with its size and pattern code).
//!
//! - Every member decodes the camera of each of the two others: one recorded stream per
//!   sender, frames at the size sent, codes readable and strictly increasing.
//! - Camera off: member 0 turns its camera off mid-run (`--video-off-file`: once the test
//!   creates that file, after everyone has seen everyone); both others get the
//!   `video` event saying so (the app hides the tile on it instead of freezing the last
//!   picture), and no frame captured after member 0 turned it off reaches them.
//!
//! Checked from the recordings and the events, not from wall-clock bounds.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use hum_tests::voice::{World, s, wait_exit, wait_for};
use serde_json::Value;

/// Decoded frames per received stream in `dir`, keyed by the file stem (`<user16>-<track>`).
fn streams(dir: &Path) -> Result<BTreeMap<String, Vec<Value>>> {
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

/// The frames member `i` decoded of `user`'s camera (the stream whose file starts with the
/// first 16 hex digits of the key).
fn of_user<'a>(streams: &'a BTreeMap<String, Vec<Value>>, user: &str) -> Vec<&'a Vec<Value>> {
    streams
        .iter()
        .filter(|(stem, _)| stem.starts_with(&user[..16]))
        .map(|(_, f)| f)
        .collect()
}

fn readable_codes(who: &str, frames: &[Value], size: (u64, u64)) -> Result<Vec<(u64, u64)>> {
    let mut codes = Vec::new();
    for f in frames {
        let wh = (
            f["width"].as_u64().unwrap_or(0),
            f["height"].as_u64().unwrap_or(0),
        );
        ensure!(wh == size, "{who}: a {wh:?} frame, sent {size:?}: {f}");
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

#[test]
fn three_cameras_in_a_mesh_everyone_sees_everyone_and_camera_off_is_announced() -> Result<()> {
    let w = World::new(3)?;
    let recs: Vec<_> = (0..3).map(|i| w.path(&format!("rec-{i}"))).collect();
    let off_file = w.path("camera-0-off");
    let video = |rec: &Path| -> Vec<String> {
        [
            "--video",
            "pattern",
            "--video-size",
            "320x180",
            "--video-kbps",
            "300",
            "--record-video",
            s(rec),
            "--duration",
            "25s",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let mut procs = Vec::new();
    for (i, tone) in ["440", "550", "660"].iter().enumerate() {
        let mut args = vec!["--tone".to_string(), tone.to_string()];
        args.extend(video(&recs[i]));
        if i == 0 {
            // Member 0's camera goes off when the test creates this file (below).
            args.extend(["--video-off-file".to_string(), s(&off_file).to_string()]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        procs.push(w.voice(i, &refs)?);
    }

    // Every member decodes at least 30 frames from each of the two others (a hang guard).
    let enough = |i: usize| -> Result<bool> {
        let st = streams(&recs[i])?;
        Ok((0..3)
            .filter(|j| *j != i)
            .all(|j| of_user(&st, &w.users[j]).iter().any(|f| f.len() >= 30)))
    };
    let seen = wait_for(
        "every member decodes 30 frames of each other camera",
        Duration::from_secs(60),
        || Ok(enough(0)? && enough(1)? && enough(2)?),
    );
    if let Err(e) = seen {
        for i in 0..3 {
            eprintln!(
                "member {i}: streams {:?}; events {:?}",
                streams(&recs[i])?
                    .iter()
                    .map(|(k, v)| (k.clone(), v.len()))
                    .collect::<Vec<_>>(),
                w.events(i)
            );
        }
        return Err(e);
    }

    // Camera off: both others get member 0's `video` event with camera false.
    std::fs::write(&off_file, b"")?;
    let off_event = |i: usize| -> Option<Value> {
        w.events(i).into_iter().find(|e| {
            e["type"] == "video" && e["user"] == w.users[0].as_str() && e["camera"] == false
        })
    };
    wait_for(
        "members 1 and 2 hear that member 0's camera is off",
        Duration::from_secs(60),
        || Ok(off_event(1).is_some() && off_event(2).is_some()),
    )?;
    // The sender says when it turned the camera off (its own event).
    let turned_off = w
        .events(0)
        .into_iter()
        .find(|e| e["type"] == "video" && e["user"].is_null() && e["camera"] == false)
        .context("member 0 did not report its own camera off")?;
    let off_ms = turned_off["at_unix_ms"].as_u64().context("at_unix_ms")?;

    for p in &mut procs {
        wait_exit(p, Duration::from_secs(90))?;
    }

    for i in 0..3 {
        let st = streams(&recs[i])?;
        for j in (0..3).filter(|j| *j != i) {
            let who = format!("member {i} from member {j}");
            let got = of_user(&st, &w.users[j]);
            ensure!(
                got.len() == 1,
                "{who}: {} recorded streams ({:?})",
                got.len(),
                st.keys().collect::<Vec<_>>()
            );
            let codes = readable_codes(&who, got[0], (320, 180))?;
            ensure!(codes.len() >= 30, "{who}: {} frames", codes.len());
            if j == 0 {
                // Nothing captured after the camera went off was sent.
                // (The code carries the low 32 bits of the capture time in Unix ms.)
                let last = codes.last().map_or(0, |c| c.1) as u32;
                let after = (last.wrapping_sub(off_ms as u32) as i32) > 0;
                ensure!(
                    !after,
                    "{who}: a frame captured at {last} after the camera went off at {off_ms}"
                );
            }
            eprintln!(
                "{who}: {} frames, codes {}..{}",
                codes.len(),
                codes.first().map_or(0, |c| c.0),
                codes.last().map_or(0, |c| c.0)
            );
        }
    }
    Ok(())
}
