//! Video through the relay's embedded SFU with simulcast, real processes: one `hum voice join`
//! publishes the moving test pattern (its frame number drawn into the pixels) as three
//! simulcast layers (640x360 / 320x180 / 160x90 from a 640x360 source: the debug-build sizes
//! of the 1280x720 ladder); two others record what they receive (`--record-video`: one JSON
//! line per decoded frame with its size and pattern code).
//!
//! - The one asking `high` decodes 640x360 frames whose codes advance.
//! - The one asking `low` decodes 160x90 frames; when it asks `high` (at a time of its own,
//!   `--video-quality-at`), the SFU switches it at a keyframe of the top layer (the decoded
//!   size changes, which VP8 can only do on a keyframe) and the codes go on advancing.
//!
//! - A screen share (`--screen pattern:640x360`) goes through the SFU as one more published
//!   VP8 track with one layer: the other member decodes it on a `screen-…` track of the sharer,
//!   every code readable and increasing, >= 90 % of the frames in the span received; both
//!   when the viewer is there before the share starts and when it joins a running share (the
//!   SFU must get it a keyframe: a single-layer subscription starts at one).
//!
//! - The publisher encodes only the layers some subscriber takes (the SFU's `sfu_layers`):
//!   with two thumbnails only the low layer runs; when one subscriber asks `high` the top
//!   layer resumes and its switch lands; the middle layer, which nobody takes, stays paused.
//!
//! Checked from the recordings and the events, not from wall-clock bounds.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use hum_tests::video::{continuous, of_user, size, streams};
use hum_tests::voice::{World, s, wait_exit, wait_for};
use serde_json::Value;

/// Every decoded frame recorded in `dir` (one received stream expected).
fn frames(dir: &Path) -> Result<Vec<Value>> {
    let mut st = streams(dir)?;
    ensure!(
        st.len() <= 1,
        "expected one received stream in {}, found {:?}",
        dir.display(),
        st.keys().collect::<Vec<_>>()
    );
    Ok(st.pop_first().map(|(_, f)| f).unwrap_or_default())
}

/// The readable pattern codes, checked to increase (no repeats, nothing out of order).
fn increasing_codes(who: &str, frames: &[&Value]) -> Result<Vec<u64>> {
    let codes: Vec<u64> = frames.iter().filter_map(|f| f["code"].as_u64()).collect();
    for w in codes.windows(2) {
        if w[1] <= w[0] {
            bail!("{who}: code {} after {}", w[1], w[0]);
        }
    }
    Ok(codes)
}

/// The publisher's `video_send` lines (frames captured, encoded per layer, layers running).
fn video_send(w: &World, i: usize) -> Vec<Value> {
    w.events(i)
        .into_iter()
        .filter(|e| e["type"] == "video_send")
        .collect()
}

fn active(v: &Value) -> Vec<bool> {
    v["active"]
        .as_array()
        .map(|a| a.iter().map(|b| b.as_bool().unwrap_or(false)).collect())
        .unwrap_or_default()
}

fn encoded(v: &Value, layer: usize) -> u64 {
    v["encoded"][layer].as_u64().unwrap_or(u64::MAX)
}

/// Layers nobody on the SFU takes are paused at the publisher (relay `--mesh-limit 0`; member
/// 0 sends the 640x360 pattern, layers 160x90 / 320x180 / 640x360; members 1 and 2 record and
/// both ask `low`):
///
/// - The publisher starts with every layer; the SFU tells it (`sfu_layers`) that only the low
///   layer is taken, and then only the low layer runs (`video_send`: active low only), while
///   both members decode thumbnails; the paused layers' encode counts stand still for 3 s.
/// - Member 1 asks `high` (`--video-quality-file`): the top layer resumes (active low + high)
///   and member 1 switches to 640x360 on a keyframe, codes increasing, never back down;
///   member 2 stays at 160x90.
/// - The middle layer, which nobody takes, is not encoded again after the first pause.
#[test]
fn the_publisher_encodes_only_the_layers_someone_on_the_sfu_takes() -> Result<()> {
    let w = World::with_relay_args(3, &["--mesh-limit", "0"])?;
    let (rec1, rec2) = (w.path("rec-1"), w.path("rec-2"));
    let quality_file = w.path("member-1-quality");
    let common = ["--duration", "120s"];
    let procs = vec![
        w.voice(
            0,
            &[
                &common[..],
                &[
                    "--tone",
                    "440",
                    "--video",
                    "pattern",
                    "--video-size",
                    "640x360",
                    "--video-fps",
                    "15",
                    "--video-kbps",
                    "600",
                ],
            ]
            .concat(),
        )?,
        w.voice(
            1,
            &[
                &common[..],
                &[
                    "--tone",
                    "550",
                    "--record-video",
                    s(&rec1),
                    "--video-quality",
                    "low",
                    "--video-quality-file",
                    s(&quality_file),
                ],
            ]
            .concat(),
        )?,
        w.voice(
            2,
            &[
                &common[..],
                &[
                    "--tone",
                    "660",
                    "--record-video",
                    s(&rec2),
                    "--video-quality",
                    "low",
                ],
            ]
            .concat(),
        )?,
    ];
    let count = |f: &[Value], wh: (u64, u64)| f.iter().filter(|f| size(f) == wh).count();
    let dump = |e: anyhow::Error| -> anyhow::Error {
        for (i, rec) in [(1, &rec1), (2, &rec2)] {
            let f = frames(rec).unwrap_or_default();
            eprintln!(
                "member {i}: {} frames ({} low, {} high)",
                f.len(),
                count(&f, (160, 90)),
                count(&f, (640, 360))
            );
        }
        eprintln!("publisher: last video_send {:?}", video_send(&w, 0).last());
        e
    };

    // Both take the low layer: only it runs.
    wait_for(
        "both decode 20 thumbnails and only the low layer runs",
        Duration::from_secs(90),
        || {
            Ok(count(&frames(&rec1)?, (160, 90)) >= 20
                && count(&frames(&rec2)?, (160, 90)) >= 20
                && video_send(&w, 0)
                    .last()
                    .is_some_and(|v| active(v) == [true, false, false]))
        },
    )
    .map_err(dump)?;
    let paused = video_send(&w, 0).last().cloned().context("video_send")?;
    let lines = video_send(&w, 0).len();
    // Three more lines (about 3 s): the paused layers stay paused.
    wait_for("3 more video_send lines", Duration::from_secs(30), || {
        Ok(video_send(&w, 0).len() >= lines + 3)
    })
    .map_err(dump)?;
    let still = video_send(&w, 0).last().cloned().context("video_send")?;
    ensure!(
        active(&still) == [true, false, false]
            && encoded(&still, 1) == encoded(&paused, 1)
            && encoded(&still, 2) == encoded(&paused, 2)
            && encoded(&still, 0) > encoded(&paused, 0),
        "paused layers moved: {paused} -> {still}"
    );

    // Member 1 spotlights member 0.
    std::fs::write(&quality_file, b"high")?;
    wait_for(
        "member 1 decodes 30 frames at 640x360 and the publisher runs low + high (30 more top frames)",
        Duration::from_secs(90),
        || {
            let f = frames(&rec1)?;
            let after = f
                .iter()
                .rposition(|f| size(f) == (160, 90))
                .map_or(0, |p| p + 1);
            Ok(
                f[after..].iter().filter(|f| size(f) == (640, 360)).count() >= 30
                    // The publisher's line (once a second) may lag the decoded frames: wait
                    // for it to count the resumed top layer's frames too (CI: 28 of 30).
                    && video_send(&w, 0).last().is_some_and(|v| {
                        active(v) == [true, false, true]
                            && encoded(v, 2) >= encoded(&paused, 2) + 30
                    }),
            )
        },
    )
    .map_err(dump)?;
    let end = video_send(&w, 0).last().cloned().context("video_send")?;
    let (f1, f2) = (frames(&rec1)?, frames(&rec2)?);
    drop(procs);

    // Member 1: thumbnails, then the full picture from a keyframe on, never back.
    let first_low = f1
        .iter()
        .position(|f| size(f) == (160, 90))
        .context("member 1: no low frame")?;
    let tail = &f1[first_low..];
    let low_end = tail
        .iter()
        .position(|f| size(f) != (160, 90))
        .context("member 1 never left the low layer")?;
    let high: Vec<&Value> = tail[low_end..].iter().collect();
    ensure!(
        high.iter().all(|f| size(f) == (640, 360)),
        "member 1: after the switch, frames not at 640x360"
    );
    let codes = increasing_codes("member 1 after the switch", &high)?;
    ensure!(
        codes.len() >= 20,
        "member 1: {} readable codes",
        codes.len()
    );
    // Member 2 only ever took low.
    let first_low2 = f2
        .iter()
        .position(|f| size(f) == (160, 90))
        .context("member 2: no low frame")?;
    ensure!(
        f2[first_low2..].iter().all(|f| size(f) == (160, 90)),
        "member 2 got a layer it did not take"
    );
    // The publisher: the middle layer never ran again; the top layer resumed.
    let captured = end["captured"].as_u64().context("captured")?;
    eprintln!(
        "publisher at the pause: {paused}\n3 s later: {still}\nat the end: {end}\nmember 1: {low_end} low then {} high; member 2: {} low",
        high.len(),
        f2.len() - first_low2
    );
    ensure!(
        encoded(&end, 1) == encoded(&paused, 1),
        "the middle layer nobody takes was encoded again: {paused} -> {end}"
    );
    ensure!(
        encoded(&end, 2) >= encoded(&paused, 2) + 30,
        "the top layer did not resume: {paused} -> {end}"
    );
    ensure!(
        (0..3).all(|l| encoded(&end, l) <= captured),
        "a layer was encoded more than once per frame: {end}"
    );
    Ok(())
}

#[test]
fn simulcast_through_the_sfu_high_and_low_subscribers_and_a_switch() -> Result<()> {
    // --mesh-limit 0: the channel is on the SFU from its first member.
    let w = World::with_relay_args(3, &["--mesh-limit", "0"])?;
    let (rec_high, rec_low) = (w.path("rec-high"), w.path("rec-low"));
    let mut publisher = w.voice(
        0,
        &[
            "--tone",
            "440",
            "--video",
            "pattern",
            "--video-size",
            "640x360",
            "--video-fps",
            "15",
            "--video-kbps",
            "900",
            "--duration",
            "16s",
        ],
    )?;
    let mut high = w.voice(
        1,
        &[
            "--tone",
            "550",
            "--record-video",
            s(&rec_high),
            "--video-quality",
            "high",
            "--duration",
            "14s",
        ],
    )?;
    let mut low = w.voice(
        2,
        &[
            "--tone",
            "660",
            "--record-video",
            s(&rec_low),
            "--video-quality",
            "low",
            "--video-quality-at",
            "8s=high",
            "--duration",
            "14s",
        ],
    )?;
    // The low subscriber must have seen the low layer before its switch (a hang guard, not a
    // timing assertion: on a loaded machine the first frames may come late).
    let seen_low = wait_for(
        "the low subscriber decodes 160x90 frames",
        Duration::from_secs(30),
        || {
            Ok(frames(&rec_low)?
                .iter()
                .filter(|f| size(f) == (160, 90))
                .count()
                >= 10)
        },
    );
    if let Err(e) = seen_low {
        let metrics = w.relay.get("/metrics").map(|m| m.1).unwrap_or_default();
        let sfu: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("hum_sfu"))
            .collect();
        for i in 0..3 {
            eprintln!("events of {i}: {:?}", w.events(i));
        }
        eprintln!(
            "SFU: {sfu:?}\nlow: {:?}",
            frames(&rec_low)?.iter().map(size).collect::<Vec<_>>()
        );
        return Err(e);
    }
    // All three take part in video, so the SFU estimates the bandwidth towards each (the
    // layer choice needs it); an audio-only member would not be estimated (hum-sfu's
    // webrtc_clients test).
    let metrics = w.relay.get("/metrics")?.1;
    ensure!(
        metrics
            .lines()
            .any(|l| l.trim() == "hum_sfu_estimating_participants 3"),
        "SFU: {:?}",
        metrics
            .lines()
            .filter(|l| l.starts_with("hum_sfu_"))
            .collect::<Vec<_>>()
    );
    wait_exit(&mut high, Duration::from_secs(60)).context("high subscriber")?;
    wait_exit(&mut low, Duration::from_secs(60)).context("low subscriber")?;
    wait_exit(&mut publisher, Duration::from_secs(60)).context("publisher")?;

    // The SFU's counters, for the log (send_dropped, rtp_forwarded, keyframe requests).
    let metrics = w.relay.get("/metrics").map(|m| m.1).unwrap_or_default();
    for l in metrics.lines().filter(|l| l.starts_with("hum_sfu")) {
        eprintln!("{l}");
    }
    // Both asked through the relay (`sfu_quality` answered ok).
    for i in [1, 2] {
        let asked: Vec<String> = w
            .events(i)
            .iter()
            .filter(|e| e["type"] == "video_quality")
            .filter_map(|e| e["quality"].as_str().map(str::to_string))
            .collect();
        ensure!(
            !asked.is_empty(),
            "subscriber {i}: no sfu_quality went through"
        );
    }

    // High: the top layer, codes advancing.
    let hi = frames(&rec_high)?;
    let hi_top: Vec<&Value> = hi.iter().filter(|f| size(f) == (640, 360)).collect();
    eprintln!(
        "high subscriber: {} frames decoded, {} at 640x360",
        hi.len(),
        hi_top.len()
    );
    ensure!(
        hi_top.len() >= 30,
        "high subscriber: {} frames at 640x360 of {} (sizes {:?})",
        hi_top.len(),
        hi.len(),
        hi.iter()
            .map(size)
            .collect::<std::collections::BTreeSet<_>>()
    );
    let codes = increasing_codes("high", &hi_top)?;
    ensure!(
        codes.len() * 10 >= hi_top.len() * 9,
        "high subscriber: only {} of {} codes readable",
        codes.len(),
        hi_top.len()
    );

    // Low, then high: a different size first, one switch up at a keyframe, frames go on.
    let lo = frames(&rec_low)?;
    let first_top = lo
        .iter()
        .position(|f| size(f) == (640, 360))
        .with_context(|| {
            format!(
                "low subscriber never switched to 640x360 (sizes {:?})",
                lo.iter()
                    .map(size)
                    .collect::<std::collections::BTreeSet<_>>()
            )
        })?;
    let before: Vec<&Value> = lo[..first_top].iter().collect();
    let after: Vec<&Value> = lo[first_top..].iter().collect();
    ensure!(
        before.iter().all(|f| size(f) == (160, 90)),
        "low subscriber: frames before the switch are not all 160x90"
    );
    ensure!(
        after.iter().all(|f| size(f) == (640, 360)),
        "low subscriber: it went back down after the switch"
    );
    ensure!(
        after.len() >= 15,
        "low subscriber: only {} frames after the switch",
        after.len()
    );
    let after_codes = increasing_codes("low after the switch", &after)?;
    ensure!(
        after_codes.len() >= 10,
        "low subscriber: {} readable codes after the switch",
        after_codes.len()
    );
    // Across the switch the frame numbers never go back (the 160x90 codes may be unreadable:
    // 4-pixel cells after VP8 at ~90 kbit/s). The first 640x360 frame may show the same
    // captured frame as the last 160x90 one: every layer encodes each capture, and the
    // publisher sends a capture's layers low to high, so the top layer's keyframe for capture
    // N arrives just after the low layer's frame N (the same picture, now sharper).
    let before_codes = increasing_codes("low before the switch", &before)?;
    if let (Some(b), Some(a)) = (before_codes.last(), after_codes.first()) {
        ensure!(a >= b, "code {a} after the switch follows {b} before it");
    }
    eprintln!(
        "high: {} frames at 640x360 ({} codes, {}..{}); low: {} frames at 160x90 ({} codes readable), then {} at 640x360 from code {:?}",
        hi_top.len(),
        codes.len(),
        codes.first().unwrap_or(&0),
        codes.last().unwrap_or(&0),
        before.len(),
        before_codes.len(),
        after.len(),
        after_codes.first()
    );
    Ok(())
}

/// Member 0 shares the pattern as a screen (no camera) in a channel on the SFU (`--mesh-limit
/// 0`); member 1 records what it receives. The share is published as one more video track
/// with one layer and forwarded under a `screen-…` id: member 1's only stream of member 0 is
/// on a screen track, at 640x360, every code readable and strictly increasing, >= 90 % of the
/// frames in the span received. The frame count, the rate over the capture times and the
/// latency are printed for docs/video.md and docs/sfu.md.
///
/// Here the viewer is on the SFU before the share starts, so the share reaches it from its
/// first keyframe.
#[test]
fn a_screen_share_through_the_sfu_reaches_the_other_member_on_a_screen_track() -> Result<()> {
    screen_share_through_the_sfu(Order::ViewerFirst)
}

/// The same, but the viewer joins a share that is running (the sharer alone on the SFU for a
/// few seconds, its screen already flowing in): the SFU must get it a keyframe (its subscriber's
/// PLI or a keyframe asked for the new subscription), or it decodes nothing until the sharer's
/// next periodic keyframe, if any.
#[test]
fn a_member_who_joins_during_a_screen_share_on_the_sfu_sees_it() -> Result<()> {
    screen_share_through_the_sfu(Order::SharerFirst)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    ViewerFirst,
    SharerFirst,
}

fn rtp_in(w: &World) -> Result<u64> {
    let m = w.relay.get("/metrics")?.1;
    Ok(m.lines()
        .find_map(|l| l.strip_prefix("hum_sfu_rtp_in_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

fn screen_share_through_the_sfu(order: Order) -> Result<()> {
    let w = World::with_relay_args(2, &["--mesh-limit", "0"])?;
    let rec = w.path("rec-screen");
    let start_viewer = || {
        w.voice(
            1,
            &[
                "--tone",
                "550",
                "--record-video",
                s(&rec),
                "--duration",
                "24s",
            ],
        )
    };
    let start_sharer = || {
        w.voice(
            0,
            &[
                "--tone",
                "440",
                "--screen",
                "pattern:640x360",
                "--screen-profile",
                "720p30",
                "--duration",
                if order == Order::ViewerFirst {
                    "20s"
                } else {
                    "30s"
                },
            ],
        )
    };
    let (first, second) = match order {
        Order::ViewerFirst => ("the viewer", "the sharer"),
        Order::SharerFirst => ("the sharer", "the viewer"),
    };
    let p_first = if order == Order::ViewerFirst {
        start_viewer()?
    } else {
        start_sharer()?
    };
    wait_for(
        &format!("{first} on the SFU"),
        Duration::from_secs(30),
        || {
            Ok(w.relay
                .get("/metrics")?
                .1
                .contains("hum_sfu_participants 1"))
        },
    )?;
    if order == Order::SharerFirst {
        // ~3 s of the share (30 fps, a few packets a frame) and the tone are in before the
        // viewer comes: its first packets are deltas of a picture it never saw.
        wait_for(
            "the share flowing into the SFU",
            Duration::from_secs(30),
            || Ok(rtp_in(&w)? >= 600),
        )?;
    }
    eprintln!("{first} is on the SFU; starting {second}");
    let p_second = if order == Order::ViewerFirst {
        start_sharer()?
    } else {
        start_viewer()?
    };
    let (sharer, viewer) = match order {
        Order::ViewerFirst => (p_second, p_first),
        Order::SharerFirst => (p_first, p_second),
    };
    let mut procs = [sharer, viewer];
    let of_0 = |st: &BTreeMap<String, Vec<Value>>| -> Vec<(String, Vec<Value>)> {
        of_user(st, &w.users[0])
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect()
    };
    let seen = wait_for(
        "member 1 decodes 60 frames of member 0's screen through the SFU",
        Duration::from_secs(60),
        || Ok(of_0(&streams(&rec)?).iter().any(|(_, f)| f.len() >= 60)),
    );
    if let Err(e) = seen {
        let metrics = w.relay.get("/metrics").map(|m| m.1).unwrap_or_default();
        eprintln!(
            "member 1: streams {:?}; SFU {:?}; member 0 events {:?}; member 1 events {:?}",
            streams(&rec)?
                .iter()
                .map(|(k, v)| (k.clone(), v.len()))
                .collect::<Vec<_>>(),
            metrics
                .lines()
                .filter(|l| l.starts_with("hum_sfu"))
                .collect::<Vec<_>>(),
            w.events(0),
            w.events(1)
        );
        return Err(e);
    }
    for p in &mut procs {
        wait_exit(p, Duration::from_secs(90))?;
    }
    let metrics = w.relay.get("/metrics").map(|m| m.1).unwrap_or_default();
    for l in metrics.lines().filter(|l| l.starts_with("hum_sfu")) {
        eprintln!("{l}");
    }
    let st = streams(&rec)?;
    let mine = of_0(&st);
    ensure!(
        mine.len() == 1,
        "member 1 recorded {} streams of member 0 ({:?}); only the screen was sent",
        mine.len(),
        st.keys().collect::<Vec<_>>()
    );
    let (stem, frames) = &mine[0];
    // The SFU's id for a forwarded screen, `screen-t<publication>` (a mesh peer's would be
    // `screen-<ssrc hex>`): the share went through the SFU, on a screen track.
    ensure!(
        stem.contains("-screen_t"),
        "member 0's stream {stem} is not the SFU's screen track"
    );
    let r = continuous("member 1 from member 0's screen", frames, (640, 360))?;
    eprintln!("member 1 from member 0's screen through the SFU ({stem}): {r}");
    let ev0 = w.events(0);
    ensure!(
        ev0.iter()
            .any(|e| e["type"] == "screen_share" && e["sharing"] == true),
        "member 0 did not report its share"
    );
    Ok(())
}

/// Sizes in the 8-camera test (below): the speaker sends a 640x360 source, everyone else
/// 320x180 (layers a quarter, a half and the full size).
const SPEAKER_HIGH: (u64, u64) = (640, 360);
const SPEAKER_LOW: (u64, u64) = (160, 90);
const THUMB_LOW: (u64, u64) = (80, 44);
/// Frames of the speaker's camera judged at the end of each recording: 10 s of the speaker's
/// frames at the unshaped subscribers; the shaped one decodes far fewer (see the test).
const JUDGED: usize = 150;
const JUDGED_SHAPED: usize = 60;
/// Decoded frames per second of the speaker's 15 the shaped member must reach over its judged
/// frames: with every thumbnail forwarded into its 600 kbit/s link it decoded 1-2.4 (the link
/// overfull, keyframes lost); with the thumbnails that do not fit paused, all of them.
const SHAPED_MIN_FPS: f64 = 8.0;

fn env_var(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is not set: scripts/test.d/70-sfu-netns.sh runs this test (as root)")
    })
}

/// The speaker's camera as subscriber `rec` decoded it (its only stream of `user` that is not a
/// screen).
fn camera_of(rec: &Path, user: &str) -> Result<Vec<Value>> {
    let st = streams(rec)?;
    Ok(of_user(&st, user)
        .into_iter()
        .find(|(stem, _)| !stem.contains("-screen"))
        .map(|(_, f)| f.clone())
        .unwrap_or_default())
}

/// How many frames of `user`'s camera `rec` holds so far (lines counted, not parsed: polled).
fn camera_lines(rec: &Path, user: &str) -> usize {
    let Ok(rd) = std::fs::read_dir(rec) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&user[..16]) && n.ends_with(".jsonl") && !n.contains("-screen")
            })
        })
        .map(|p| {
            std::fs::read(p)
                .map(|b| b.iter().filter(|c| **c == b'\n').count())
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
}

/// Runs of equal sizes, for the log: `160x90 x12, 640x360 x300`.
fn size_runs(frames: &[Value]) -> String {
    let mut runs: Vec<((u64, u64), usize)> = Vec::new();
    for f in frames {
        match runs.last_mut() {
            Some((s, n)) if *s == size(f) => *n += 1,
            _ => runs.push((size(f), 1)),
        }
    }
    runs.iter()
        .map(|((w, h), n)| format!("{w}x{h} x{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Eight members on the SFU (`--mesh-limit 0`), every one with a camera in simulcast: member 0
/// talks (tone syllables, so the SFU's dominant speaker is member 0) and sends the 640x360
/// pattern at 15 fps and 700 kbit/s (layers 160x90 / 320x180 / 640x360); members 1-7 are
/// silent and send a 320x180 pattern at 5 fps and 100 kbit/s (small and slow: 8 debug-build
/// clients share 2 cores with the SFU), record what they decode (`--record-video`) and leave
/// the layer choice to the SFU (automatic: the speaker high, the others thumbnails). Member 7
/// runs in a network namespace whose link from the relay's side is shaped to 600 kbit/s with
/// `tc tbf` (scripts/test.d/70-sfu-netns.sh builds it, runs this test as root and names the
/// namespace and both addresses in `HUM_SFU_NETNS`, `HUM_SFU_NETNS_HOST`, `HUM_SFU_NETNS_PEER`;
/// the relay listens on the host side of the veth pair, which the other members reach as a
/// local address).
///
/// Checked from the recordings once members 1-6 decoded 300 frames of the speaker and member 7
/// 100 (it decodes far fewer per second: its link is full, see docs/sfu.md), over the last 150
/// (members 1-6, 10 s of the speaker's frames) and 60 (member 7) of them:
/// - every member was told member 0 is the dominant speaker;
/// - members 1-6 decode the speaker at 640x360 (high), >= 2/3 of the judged frames (short dips of
///   their estimates on a loaded machine: 10 frames at 160x90 at two members in one run), and
///   one of them may dip longer if it decoded >= 100 frames at 640x360 in all;
/// - member 7 decodes it below 640x360, at 160x90 (low) in >= 3/4 of the judged frames, at
///   >= 8 frames/s;
/// - the SFU paused some camera for member 7's link at some point (`sfu_paused`), and no
///   unshaped member ends with a camera paused;
/// - every subscriber decodes the other cameras as 80x44 thumbnails (their low layer): the last
///   30 (>= 10) at members 1-6, the last 20 (>= 5) at member 7 (paused and resumed there).
///
/// Without the `tc tbf` (`HUM_SFU_NETNS_KBIT=0` in the stage) member 7 gets 640x360 like the
/// others and the test fails (run of 7 December 2026). With it, it also fails when an unshaped
/// subscriber's estimate drops and never climbs back to the high layer ("The estimate is never
/// asked to grow", docs/sfu.md): a finding of the SFU, not of the test.
#[test]
#[ignore = "needs root and a network namespace: scripts/test.d/70-sfu-netns.sh runs it"]
fn eight_cameras_on_the_sfu_the_speaker_high_but_low_behind_a_600_kbit_link() -> Result<()> {
    let ns = env_var("HUM_SFU_NETNS")?;
    let host = env_var("HUM_SFU_NETNS_HOST")?;
    let peer = env_var("HUM_SFU_NETNS_PEER")?;
    // Nine accounts from one non-loopback address: more than the default burst of 5.
    let w = World::with_relay_at(
        8,
        &format!("{host}:0"),
        &["--mesh-limit", "0", "--new-accounts-burst", "20"],
    )?;
    let sr = 48_000;
    // Syllables (300 ms of tone, 200 ms off): a steady tone would pass for background noise.
    let mut talk = Vec::new();
    for _ in 0..2 * 20 {
        talk.extend(hum_media::synth::tone_samples(440.0, 0.2, sr * 3 / 10));
        talk.extend(std::iter::repeat_n(0.0, sr / 5));
    }
    let (talk_wav, silent_wav) = (w.path("talk.wav"), w.path("silent.wav"));
    hum_media::synth::write_wav(&talk_wav, &talk)?;
    hum_media::synth::write_wav(&silent_wav, &vec![0.0; sr])?;
    let recs: Vec<_> = (0..8).map(|i| w.path(&format!("rec-{i}"))).collect();
    let shaped = 7;
    // A cap; the test ends once the recordings hold enough frames.
    let duration = ["--duration", "150s"];
    let mut procs = vec![
        w.voice(
            0,
            &[
                &duration[..],
                &[
                    "--play",
                    s(&talk_wav),
                    "--loop",
                    "--video",
                    "pattern",
                    "--video-size",
                    "640x360",
                    "--video-fps",
                    "15",
                    "--video-kbps",
                    "700",
                ],
            ]
            .concat(),
        )?,
    ];
    let wrapper = ["ip", "netns", "exec", ns.as_str()];
    let peer_bind = format!("{peer}:0");
    for (i, rec) in recs.iter().enumerate().skip(1) {
        let args = [
            &duration[..],
            &[
                "--play",
                s(&silent_wav),
                "--loop",
                "--video",
                "pattern",
                "--video-size",
                "320x180",
                "--video-fps",
                "5",
                "--video-kbps",
                "100",
                "--record-video",
                s(rec),
            ],
        ]
        .concat();
        procs.push(if i == shaped {
            w.voice_via(&wrapper, &peer_bind, i, &args)?
        } else {
            w.voice(i, &args)?
        });
    }
    let speaker = w.users[0].clone();
    let dump = |e: anyhow::Error| -> anyhow::Error {
        for (i, rec) in recs.iter().enumerate().skip(1) {
            eprintln!(
                "member {i}: speaker {}",
                size_runs(&camera_of(rec, &speaker).unwrap_or_default())
            );
        }
        let metrics = w.relay.get("/metrics").map(|m| m.1).unwrap_or_default();
        for l in metrics.lines().filter(|l| l.starts_with("hum_sfu")) {
            eprintln!("{l}");
        }
        e
    };
    wait_for(
        "members 1-6 decode 300 frames of the speaker, member 7 100",
        Duration::from_secs(140),
        || {
            for (i, p) in procs.iter_mut().enumerate() {
                if let Some(status) = p.0.try_wait()? {
                    bail!("member {i}'s hum voice join ended early: {status}");
                }
            }
            for (i, rec) in recs.iter().enumerate().skip(1) {
                let want = if i == shaped { 100 } else { 300 };
                if camera_lines(rec, &speaker) < want {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .map_err(dump)?;
    let metrics = w.relay.get("/metrics").map(|m| m.1).unwrap_or_default();
    drop(procs);
    for l in metrics.lines().filter(|l| l.starts_with("hum_sfu")) {
        eprintln!("{l}");
    }

    for i in 0..8 {
        let told: Vec<String> = w
            .events(i)
            .iter()
            .filter(|e| e["type"] == "dominant_speaker")
            .filter_map(|e| e["user"].as_str().map(str::to_string))
            .collect();
        ensure!(
            i == 0 || told.last() == Some(&speaker),
            "member {i} was told the dominant speaker is {told:?}, not member 0"
        );
    }
    let mut failures = Vec::new();
    let mut dipped: Vec<String> = Vec::new();
    for (i, rec) in recs.iter().enumerate().skip(1) {
        let f = camera_of(rec, &speaker)?;
        let want = if i == shaped {
            SPEAKER_LOW
        } else {
            SPEAKER_HIGH
        };
        let n = if i == shaped { JUDGED_SHAPED } else { JUDGED };
        let judged = &f[f.len().saturating_sub(n)..];
        let right = judged.iter().filter(|f| size(f) == want).count();
        // Decoded frames per second of arrival time over the judged frames (for the report).
        let secs = match (judged.first(), judged.last()) {
            (Some(a), Some(b)) => {
                let t = |f: &Value| f["arrival_unix_ms"].as_u64().unwrap_or(0);
                t(b).saturating_sub(t(a)) as f64 / 1000.0
            }
            _ => 0.0,
        };
        eprintln!(
            "member {i}{}: the speaker's camera, {} frames: {}; the last {}: {right} at {}x{} \
             ({:.1} decoded per second over them)",
            if i == shaped { " (600 kbit/s)" } else { "" },
            f.len(),
            size_runs(&f),
            judged.len(),
            want.0,
            want.1,
            judged.len() as f64 / secs.max(0.001),
        );
        let fps = judged.len() as f64 / secs.max(0.001);
        if i == shaped && fps < SHAPED_MIN_FPS {
            failures.push(format!(
                "member {i}: the speaker's camera at {fps:.1} decoded frames per second"
            ));
        }
        if i == shaped {
            // Below the top layer, mostly the lowest: the silent members' audio costs less than
            // the SFU reserves for it, so for a few seconds at a time the middle layer can fit
            // the 600 kbit/s link (session 22: 9 of the last 60 at 320x180).
            let high = judged.iter().filter(|f| size(f) == SPEAKER_HIGH).count();
            if high > 0 || right * 4 < n * 3 {
                failures.push(format!(
                    "member {i}: of the speaker's last {n} frames {right} at {want:?}, {high} at {SPEAKER_HIGH:?}"
                ));
            }
        } else if right * 3 < n * 2 {
            // An unshaped member may dip (its delay-based estimate on this loaded 2-core box,
            // docs/sfu.md): a short dip (>= 2/3 of the judged frames high) passes; one longer
            // dip is judged below, over all six.
            dipped.push(format!(
                "member {i}: {right} of the speaker's last {n} frames at {want:?}"
            ));
            let high_total = f.iter().filter(|f| size(f) == SPEAKER_HIGH).count();
            if high_total < 100 {
                failures.push(format!(
                    "member {i}: {high_total} of the speaker's frames at {want:?} in all"
                ));
            }
        }
        // What the SFU said it paused for this member's link (`sfu_paused`): the last word per
        // camera owner.
        let mut paused: std::collections::BTreeMap<String, bool> = Default::default();
        let mut words = 0;
        for e in w.events(i).iter().filter(|e| e["type"] == "video_paused") {
            if let (Some(u), Some(p)) = (e["user"].as_str(), e["paused"].as_bool()) {
                paused.insert(u.to_string(), p);
                words += 1;
            }
        }
        let now_paused = paused.values().filter(|p| **p).count();
        eprintln!(
            "member {i}: {words} pause/resume words, cameras paused for its link at the end: \
             {now_paused}"
        );
        // An unshaped member's estimate can dip on a loaded machine (and a camera be paused
        // for a while), but it must not stay down.
        if i != shaped && now_paused > 0 {
            failures.push(format!(
                "member {i} (unshaped) had cameras paused for its link: {paused:?}"
            ));
        }
        if i == shaped && words == 0 {
            failures.push(format!(
                "member {i}: nothing ever paused, so its 600 kbit/s link carries every thumbnail"
            ));
        }
        // The other cameras: thumbnails at the unshaped members. The shaped member's are
        // paused and resumed as its estimate moves (they flap, docs/sfu.md): each must still
        // have decoded some thumbnails. (Until session 22 none seemed to: the recorder's log was
        // buffered and the processes are killed, so a stream of fewer than ~32 frames left an
        // empty file.)
        let st = streams(rec)?;
        for j in (1..8).filter(|j| *j != i) {
            let thumbs = of_user(&st, &w.users[j])
                .into_iter()
                .find(|(stem, _)| !stem.contains("-screen"))
                .map(|(_, f)| f.clone())
                .unwrap_or_default();
            if i == shaped {
                // What its engine received of that camera (the last `video_stats` line).
                let stats = w
                    .events(i)
                    .into_iter()
                    .filter(|e| e["type"] == "video_stats" && e["user"] == w.users[j].as_str())
                    .last()
                    .unwrap_or_default();
                eprintln!(
                    "member {i} from member {j} ({}): {}; received {stats}",
                    match paused.get(&w.users[j]) {
                        Some(true) => "paused at the end",
                        Some(false) => "resumed at the end",
                        None => "never paused",
                    },
                    size_runs(&thumbs)
                );
                // The last 20 (the first may come at another layer, before the SFU's
                // automatic choice: one 160x90 in session 22's run).
                let last = &thumbs[thumbs.len().saturating_sub(20)..];
                if last.len() < 5 || last.iter().any(|f| size(f) != THUMB_LOW) {
                    failures.push(format!(
                        "member {i} from member {j}: {}",
                        size_runs(&thumbs)
                    ));
                }
                continue;
            }
            let last = &thumbs[thumbs.len().saturating_sub(30)..];
            if last.len() < 10 || last.iter().any(|f| size(f) != THUMB_LOW) {
                failures.push(format!(
                    "member {i} from member {j}: {}",
                    size_runs(&thumbs)
                ));
            }
        }
    }
    // The shaped member low while the others stay high: at most one unshaped member dipped for
    // long (session 22's stage run: member 3 fell to 160x90 for 3 s, then 320x180 to the end).
    if dipped.len() > 1 {
        failures.extend(dipped);
    } else {
        for d in &dipped {
            eprintln!("tolerated: {d}");
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}
