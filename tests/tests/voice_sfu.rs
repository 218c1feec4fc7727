//! Voice channels on the relay's embedded SFU, with real `hum voice join` processes: every
//! process sends its own tone and records the mix it hears.
//!
//! 1. Sixteen processes in one channel (the relay started with `--mesh-limit 0`, so the channel
//!    is on the SFU from the first member): each plays packets of each of the other fifteen
//!    (received over its one SFU connection) and never hears its own tone; the SFU counts 16
//!    participants. How much of each tone survives is printed, not asserted: on a 2-core box the
//!    16 debug-build processes starve each other's audio threads.
//! 2. A mesh of eight, then a ninth joins: the relay moves the channel to the SFU, every member
//!    moves (mesh connections closed, one SFU connection), and audio goes on. The longest gap
//!    of each tone in each recording around the switch is measured and printed (the number in
//!    docs/sfu.md); the test asserts that every tone is heard again after the switch, not a
//!    wall-clock bound.
//! 3. Members lose `speak` (an admin's `hum channel configure`) and get it back, on the SFU and
//!    in a mesh: the others stop hearing them, their own clients stop sending (on the SFU the
//!    RTP rate into it drops to the owner's), say they are muted by the channel, and stay muted
//!    after it comes back.
//!
//! Bounded for a small machine: short durations, quiet tones.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use hum_media::analysis::{rms, tone_purity};
use hum_media::synth::read_wav;
use hum_tests::voice::{World, s, tone_file, tone_share, wait_exit, wait_for};

/// 80 Hz apart (8 bins of a 100 ms block), none a low multiple of another.
const TONES16: [f32; 16] = [
    330.0, 410.0, 490.0, 570.0, 650.0, 730.0, 810.0, 890.0, 970.0, 1050.0, 1130.0, 1210.0, 1370.0,
    1450.0, 1530.0, 1610.0,
];

/// Users `i` saw as connected (over the mesh or the SFU).
fn heard_users(w: &World, i: usize) -> BTreeSet<String> {
    w.events(i)
        .iter()
        .filter(|e| e["type"] == "peer_connected")
        .filter_map(|e| e["user"].as_str().map(str::to_string))
        .collect()
}

fn start(
    w: &World,
    i: usize,
    hz: f32,
    amplitude: f32,
    duration: &str,
) -> Result<hum_tests::KillOnDrop> {
    let tone = w.path(&format!("tone{i}.wav"));
    tone_file(&tone, hz, amplitude)?;
    let rec = w.path(&format!("rec{i}.wav"));
    w.voice(
        i,
        &[
            "--play",
            s(&tone),
            "--loop",
            "--record",
            s(&rec),
            "--duration",
            duration,
        ],
    )
}

#[test]
fn sixteen_processes_through_the_sfu_each_receive_the_other_fifteen() -> Result<()> {
    let w = World::with_relay_args(16, &["--mesh-limit", "0"])?;
    let started = Instant::now();
    let mut procs = Vec::new();
    for (i, hz) in TONES16.iter().enumerate() {
        procs.push(start(&w, i, *hz, 0.05, "12s")?);
    }
    wait_for("everyone hears 15 others", Duration::from_secs(30), || {
        Ok((0..16).all(|i| heard_users(&w, i).len() == 15))
    })?;
    let connected = started.elapsed();
    ensure!(w.roster()?.len() == 16, "roster: {:?}", w.roster()?);
    // The relay refreshes the SFU's counters once a second.
    let mut metrics = String::new();
    wait_for(
        "the SFU's counters on /metrics",
        Duration::from_secs(5),
        || {
            metrics = w.relay.get("/metrics")?.1;
            Ok(metrics.contains("hum_sfu_participants 16"))
        },
    )
    .ok();
    ensure!(
        metrics.contains("hum_sfu_participants 16"),
        "the SFU does not show 16 participants:\n{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("hum_sfu"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for p in &mut procs {
        wait_exit(p, Duration::from_secs(60))?;
    }
    eprintln!(
        "16 through the SFU: everyone heard the 15 others after {:.1} s; processes done after {:.1} s",
        connected.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let mut worst = f32::MAX;
    let mut results = Vec::new();
    for (i, own) in TONES16.iter().enumerate() {
        let heard = read_wav(&w.path(&format!("rec{i}.wav")))?;
        ensure!(
            heard.len() > 48_000 * 8,
            "rec{i}: only {} samples",
            heard.len()
        );
        let end = heard.len() - 48_000;
        let window = &heard[end - 3 * 48_000..end];
        // Fifteen equal tones hold ~1/15 of the energy each: count the 100 ms blocks where a
        // tone has at least 40 % of that.
        let shares: Vec<f32> = TONES16
            .iter()
            .map(|hz| tone_share(window, *hz, 0.027))
            .collect();
        let purities: Vec<f32> = TONES16.iter().map(|hz| tone_purity(window, *hz)).collect();
        eprintln!(
            "rec{i}: rms {:.3}, purity per tone {purities:.3?}, share of blocks {shares:.2?}",
            rms(window)
        );
        results.push((i, *own, purities, shares));
    }
    // Measured, not asserted: on 2 shared cores, 16 debug-build processes decoding 15 streams
    // each (240 decoders) plus the relay's debug SFU forwarding 240 streams starve the audio
    // threads, and the recordings are mostly concealment (docs/sfu.md). What is asserted:
    // each process played packets of each of the 15 others (above) and never its own.
    for (i, own, purities, shares) in &results {
        assert!(
            purities[*i] < 0.01,
            "{i} hears its own {own} Hz tone: {}",
            purities[*i]
        );
        for (j, share) in shares.iter().enumerate() {
            if j != *i {
                worst = worst.min(*share);
            }
        }
    }
    eprintln!(
        "weakest tone in any recording: present in {:.0}% of the blocks",
        worst * 100.0
    );
    Ok(())
}

/// The same eight tones as the 8-way mesh test, plus one for the ninth.
const TONES9: [f32; 9] = [
    350.0, 490.0, 630.0, 770.0, 910.0, 1190.0, 1330.0, 1610.0, 1470.0,
];

/// The longest run (in 20 ms blocks) in which `hz` is missing from `samples`.
fn longest_gap_blocks(samples: &[f32], hz: f32) -> usize {
    let (mut run, mut longest) = (0, 0);
    for b in samples.chunks_exact(960) {
        // Eight tones hold ~1/8 of the energy each; "missing" is under a fifth of that.
        if tone_purity(b, hz) < 0.025 {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    longest
}

#[test]
fn a_ninth_member_moves_a_mesh_of_eight_to_the_sfu_and_audio_goes_on() -> Result<()> {
    let w = World::new(9)?;
    let mut procs = Vec::new();
    let mut starts = Vec::new();
    for (i, hz) in TONES9.iter().take(8).enumerate() {
        starts.push(Instant::now());
        procs.push(start(&w, i, *hz, 0.08, "16s")?);
    }
    wait_for("the 8-way mesh", Duration::from_secs(30), || {
        Ok((0..8).all(|i| heard_users(&w, i).len() == 7))
    })?;
    // Let the mesh play a moment, then the ninth joins.
    std::thread::sleep(Duration::from_secs(2));
    let ninth_at = Instant::now();
    procs.push(start(&w, 8, TONES9[8], 0.08, "14s")?);
    wait_for("everyone on the SFU", Duration::from_secs(30), || {
        Ok((0..9).all(|i| heard_users(&w, i).len() == 8)
            && (0..8).all(|i| {
                w.events(i)
                    .iter()
                    .filter(|e| e["type"] == "peer_left" && e["reason"] == "moved to the SFU")
                    .count()
                    == 7
            }))
    })?;
    let moved = ninth_at.elapsed();
    ensure!(w.roster()?.len() == 9, "roster: {:?}", w.roster()?);
    for p in &mut procs {
        wait_exit(p, Duration::from_secs(60))?;
    }
    eprintln!(
        "9th joined: everyone on the SFU and the mesh closed after {:.1} s",
        moved.as_secs_f64()
    );

    // Per listener of the first eight: from 0.5 s before the ninth joined to the end (minus
    // the fade-out second), the longest gap of each other original member's tone.
    let mut gaps_ms = Vec::new();
    for (i, own) in TONES9.iter().take(8).enumerate() {
        let heard = read_wav(&w.path(&format!("rec{i}.wav")))?;
        let switch = ninth_at.duration_since(starts[i]).as_secs_f64() - 0.5;
        let from = ((switch * 48_000.0) as usize).min(heard.len());
        let end = heard.len().saturating_sub(48_000);
        ensure!(
            end > from + 3 * 48_000,
            "rec{i}: too short after the switch"
        );
        let after = &heard[from..end];
        let tail = &heard[end - 2 * 48_000..end];
        for (j, hz) in TONES9.iter().enumerate() {
            if i == j {
                assert!(tone_purity(tail, *own) < 0.01, "{i} hears itself");
                continue;
            }
            // Audio resumes: the last 2 s hold every other tone, the ninth's too.
            let share = tone_share(tail, *hz, 0.05);
            assert!(
                share >= 0.8,
                "{i} does not hear {j}'s {hz} Hz tone after the switch: {share:.2} of the blocks"
            );
            if j < 8 {
                gaps_ms.push(longest_gap_blocks(after, *hz) * 20);
            }
        }
    }
    gaps_ms.sort_unstable();
    let median = gaps_ms[gaps_ms.len() / 2];
    let p90 = gaps_ms[gaps_ms.len() * 9 / 10];
    let max = gaps_ms[gaps_ms.len() - 1];
    eprintln!(
        "audio gap at the mesh -> SFU switch over {} listener/speaker pairs: median {median} ms, p90 {p90} ms, max {max} ms (20 ms resolution)",
        gaps_ms.len()
    );
    Ok(())
}

/// The amplitude of `hz` in each 100 ms block of `samples` (a sine of amplitude A gives ~A).
fn tone_amplitudes(samples: &[f32], hz: f32) -> Vec<f32> {
    samples
        .chunks_exact(4_800)
        .map(|b| (2.0 * tone_purity(b, hz)).sqrt() * rms(b))
        .collect()
}

/// The share of 100 ms blocks of `samples` in which `hz` is louder than `min_amplitude`.
fn loud_share(samples: &[f32], hz: f32, min_amplitude: f32) -> f32 {
    let a = tone_amplitudes(samples, hz);
    a.iter().filter(|x| **x > min_amplitude).count() as f32 / a.len().max(1) as f32
}

/// `samples[from_s..to_s]` (seconds from the start of the recording), clamped.
fn window(samples: &[f32], from_s: f64, to_s: f64) -> &[f32] {
    let at = |s: f64| ((s.max(0.0) * 48_000.0) as usize).min(samples.len());
    let (a, b) = (at(from_s), at(to_s));
    &samples[a..b.max(a)]
}

/// The admin (user 3, never in voice) runs `hum channel configure` on the channel with `args`.
/// Not the owner: one session per account, so the owner's configure would log its own voice
/// process out (the cause of this test's old flakiness, docs/sfu.md).
fn configure(w: &World, args: &[&str]) -> Result<()> {
    let out = w
        .cmd(
            3,
            &[
                &["channel", "configure", "--server", "Guild", "Lounge"],
                args,
            ]
            .concat(),
        )
        .output()?;
    ensure!(
        out.status.success(),
        "hum channel configure {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// When `i`'s recording got its first sample (its `recording` line), in Unix ms.
fn recording_started(w: &World, i: usize) -> Result<f64> {
    w.events(i)
        .iter()
        .find(|e| e["type"] == "recording")
        .and_then(|e| e["started_unix_ms"].as_f64())
        .ok_or_else(|| anyhow::anyhow!("process {i} printed no `recording` line"))
}

#[test]
fn a_revoked_speak_permission_withdraws_the_members_audio_on_the_sfu() -> Result<()> {
    revoked_speak(true)
}

/// In a mesh nothing between the members can drop what a member may not say: their own client
/// must stop sending (before issue 13 it did not, and the others heard them on).
#[test]
fn a_revoked_speak_permission_silences_the_member_in_a_mesh() -> Result<()> {
    revoked_speak(false)
}

/// Members lose `speak` and get it back, on the SFU (`sfu`) or in a mesh: their clients stop
/// sending, say they are muted by the channel, and stay muted when it comes back.
fn revoked_speak(sfu: bool) -> Result<()> {
    // User 0 owns the server (it keeps every permission) and speaks; 1 and 2 are members who
    // speak; 3 is an admin who only changes the channel; 4 observes the roster.
    let relay_args: &[&str] = if sfu { &["--mesh-limit", "0"] } else { &[] };
    let w = World::with_relay_args(4, relay_args)?;
    let promoted = w
        .cmd(0, &["server", "role", "Guild", &w.users[3], "admin"])
        .output()?;
    ensure!(
        promoted.status.success(),
        "hum server role: {}",
        String::from_utf8_lossy(&promoted.stderr)
    );
    let hz = [440.0_f32, 620.0, 860.0];
    let amplitude = 0.08;
    let mut procs = Vec::new();
    for (i, f) in hz.iter().enumerate() {
        procs.push(start(&w, i, *f, amplitude, "30s")?);
    }
    wait_for(
        "everyone hears the 2 others",
        Duration::from_secs(30),
        || Ok((0..3).all(|i| heard_users(&w, i).len() == 2)),
    )?;
    // Audio plays a moment, then the admin takes `speak` from members.
    std::thread::sleep(Duration::from_secs(3));
    // What reaches the SFU from all publishers, per second: 3 talkers before.
    let rtp_before = if sfu {
        rtp_in_rate(&w, Duration::from_secs(3))?
    } else {
        std::thread::sleep(Duration::from_secs(3));
        0.0
    };
    let revoking = unix_ms();
    configure(&w, &["--member-perms", "join"])?;
    // The relay has applied it when the command returns.
    let revoked = unix_ms();
    // Everyone is told (the roster shows the members muted), the owner not; all 3 still in.
    let roster = w.roster()?;
    ensure!(roster.len() == 3, "roster after the revocation: {roster:?}");
    for e in &roster {
        let owner = e["user"]["id"].as_str() == Some(w.users[0].as_str());
        ensure!(
            e["voice"]["muted"].as_bool() == Some(!owner),
            "roster after the revocation: {roster:?}"
        );
    }
    // The members' clients send nothing now (not even the silence a mute sends): only the
    // owner's packets reach the SFU, where all three did (a client that kept sending had the
    // SFU drop its packets, and the rate stayed the same).
    std::thread::sleep(Duration::from_secs(2));
    if sfu {
        let rtp_during = rtp_in_rate(&w, Duration::from_secs(4))?;
        eprintln!(
            "RTP into the SFU: {rtp_before:.0}/s with 3 talkers, {rtp_during:.0}/s while members \
             may not speak"
        );
        ensure!(
            rtp_before >= 100.0 && rtp_during <= rtp_before * 0.6,
            "members still send after losing speak: {rtp_before:.0}/s before, {rtp_during:.0}/s \
             after"
        );
    } else {
        std::thread::sleep(Duration::from_secs(4));
    }
    // Given back: the SFU would publish the members' tracks again, but they stay muted until
    // they unmute themselves (nobody is unmuted behind their back).
    let restoring = unix_ms();
    configure(&w, &["--member-perms", "all"])?;
    let restored = unix_ms();
    std::thread::sleep(Duration::from_secs(2));
    let roster = w.roster()?;
    for e in &roster {
        let owner = e["user"]["id"].as_str() == Some(w.users[0].as_str());
        ensure!(
            e["voice"]["muted"].as_bool() == Some(!owner),
            "roster after the restore: {roster:?}"
        );
    }
    for p in &mut procs {
        wait_exit(p, Duration::from_secs(60))?;
    }
    for i in 0..3 {
        let heard = read_wav(&w.path(&format!("rec{i}.wav")))?;
        let zero = recording_started(&w, i)?;
        // Seconds into rec{i}.wav at a wall-clock time.
        let at = |unix_ms: f64| (unix_ms - zero) / 1000.0;
        let end = heard.len() as f64 / 48_000.0 - 1.0;
        let before = window(&heard, at(revoking) - 2.5, at(revoking));
        // From 1.5 s after the revocation (the jitter buffer and a loaded receiver's late
        // playout) to the restore.
        let during = window(&heard, at(revoked) + 1.5, at(restoring));
        // From 3 s after the restore (a renegotiation) to the end.
        let after = window(&heard, at(restored) + 3.0, end);
        ensure!(
            before.len() >= 2 * 48_000 && during.len() >= 4 * 48_000 && after.len() >= 2 * 48_000,
            "rec{i}: windows too short ({} / {} / {} samples)",
            before.len(),
            during.len(),
            after.len()
        );
        for (j, f) in hz.iter().enumerate() {
            if i == j {
                continue;
            }
            let shares = [
                loud_share(before, *f, amplitude / 4.0),
                loud_share(during, *f, amplitude / 4.0),
                loud_share(after, *f, amplitude / 4.0),
            ];
            // The whole recording, one character per 500 ms: '#' heard, '.' not, '|' at the
            // revocation and at the restore.
            let marks = [at(revoked), at(restored)];
            let timeline: String = tone_amplitudes(&heard, *f)
                .chunks(5)
                .enumerate()
                .map(|(k, b)| {
                    let t = k as f64 * 0.5;
                    if marks.iter().any(|m| (t..t + 0.5).contains(m)) {
                        '|'
                    } else if b.iter().filter(|x| **x > amplitude / 4.0).count() >= 3 {
                        '#'
                    } else {
                        '.'
                    }
                })
                .collect();
            eprintln!(
                "{i} hears {j}'s {f} Hz (before / revoked / restored): {shares:.2?} {timeline}"
            );
            // Heard in at least half the blocks (a loaded 2-core box starves the audio threads
            // now and then: 0.76-1.0 seen), gone after the revocation, back after the restore.
            ensure!(shares[0] >= 0.5, "{i} did not hear {j} before: {shares:?}");
            if j == 0 {
                // The owner keeps speaking throughout.
                ensure!(shares[1] >= 0.5, "{i} lost the owner: {shares:?}");
            } else {
                // A track still forwarded is heard in 80-100 % of the blocks.
                ensure!(
                    shares[1] <= 0.05,
                    "{i} still hears member {j} after the revocation: {shares:?}"
                );
            }
            if j == 0 {
                ensure!(
                    shares[2] >= 0.5,
                    "{i} does not hear the owner after: {shares:?}"
                );
            } else {
                ensure!(
                    shares[2] <= 0.05,
                    "{i} hears member {j} after the restore without their unmuting: {shares:?}"
                );
            }
        }
        // Each member's client said it was muted by the channel, then that it may speak again
        // while still muted.
        if i != 0 {
            let states: Vec<(bool, bool)> = w
                .events(i)
                .iter()
                .filter(|e| e["type"] == "local_state")
                .filter_map(|e| Some((e["muted"].as_bool()?, e["muted_by_channel"].as_bool()?)))
                .collect();
            ensure!(
                states.ends_with(&[(true, true), (true, false)]),
                "member {i}'s local states: {states:?}"
            );
        }
    }
    Ok(())
}

/// RTP packets per second into the relay's SFU over `span` (from its /metrics, refreshed once
/// a second).
fn rtp_in_rate(w: &World, span: Duration) -> Result<f64> {
    let read = || -> Result<(Instant, f64)> {
        let metrics = w.relay.get("/metrics")?.1;
        let v = metrics
            .lines()
            .find_map(|l| l.strip_prefix("hum_sfu_rtp_in_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or_else(|| anyhow::anyhow!("no hum_sfu_rtp_in_total on /metrics"))?;
        Ok((Instant::now(), v))
    };
    let (t0, a) = read()?;
    std::thread::sleep(span);
    let (t1, b) = read()?;
    Ok((b - a) / t1.duration_since(t0).as_secs_f64())
}

/// The users `i` was told were the SFU's dominant speaker, in order (`dominant_speaker` lines).
fn dominant_speakers(w: &World, i: usize) -> Vec<String> {
    w.events(i)
        .iter()
        .filter(|e| e["type"] == "dominant_speaker")
        .filter_map(|e| e["user"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn the_one_who_speaks_becomes_the_dominant_speaker_at_the_others() -> Result<()> {
    let w = World::with_relay_args(3, &["--mesh-limit", "0"])?;
    let sr = 48_000;
    // 0 sends silence throughout; 1 "talks" for 12 s (tone syllables: 300 ms on, 200 ms off),
    // then is silent; 2 is silent for 12 s, then talks: the floor goes to 1, then to 2. (A
    // steady tone would not do: the detector takes a level that never changes for background
    // noise.)
    let file = |name: &str, parts: &[(f32, f32, usize)]| -> Result<String> {
        let mut sig = Vec::new();
        for (hz, amplitude, secs) in parts {
            for _ in 0..secs * 2 {
                sig.extend(hum_media::synth::tone_samples(*hz, *amplitude, sr * 3 / 10));
                sig.extend(std::iter::repeat_n(0.0, sr / 5));
            }
        }
        let p = w.path(name);
        hum_media::synth::write_wav(&p, &sig)?;
        Ok(s(&p).to_string())
    };
    let silent = file("silent.wav", &[(440.0, 0.0, 22)])?;
    let first = file("first.wav", &[(440.0, 0.2, 12), (440.0, 0.0, 10)])?;
    let second = file("second.wav", &[(660.0, 0.0, 12), (660.0, 0.2, 10)])?;
    let mut procs = Vec::new();
    for (i, wav) in [&silent, &first, &second].into_iter().enumerate() {
        procs.push(w.voice(i, &["--play", wav, "--duration", "22s"])?);
    }
    let (u1, u2) = (w.users[1].clone(), w.users[2].clone());
    let announced = wait_for(
        "1, then 2 announced as the dominant speaker",
        Duration::from_secs(60),
        || {
            Ok([0, 1]
                .iter()
                .all(|i| dominant_speakers(&w, *i).last() == Some(&u2))
                && dominant_speakers(&w, 2).contains(&u1))
        },
    );
    if announced.is_err() {
        for i in 0..3 {
            eprintln!("{i}: {:?}", dominant_speakers(&w, i));
        }
    }
    announced?;
    for p in &mut procs {
        wait_exit(p, Duration::from_secs(60))?;
    }
    for i in 0..3 {
        eprintln!("{i} was told the dominant speaker: {:?}", {
            let names: Vec<usize> = dominant_speakers(&w, i)
                .iter()
                .filter_map(|u| w.users.iter().position(|x| x == u))
                .collect();
            names
        });
    }
    // The silent member never took the floor; at 0 the floor went 1 -> 2, in that order.
    let at0 = dominant_speakers(&w, 0);
    ensure!(
        !at0.contains(&w.users[0]) && !dominant_speakers(&w, 1).contains(&w.users[0]),
        "the silent member was the dominant speaker: {at0:?}"
    );
    let one = at0.iter().position(|u| *u == u1);
    let two = at0.iter().rposition(|u| *u == u2);
    ensure!(
        matches!((one, two), (Some(a), Some(b)) if a < b),
        "0 did not see the floor go from 1 to 2: {at0:?}"
    );
    Ok(())
}

/// `hum bench sfu` (the numbers in docs/sfu.md) on a load a debug build carries: two rooms of
/// 3 publishers + 6 subscribers. Every packet a publisher sends reaches every other member of
/// its room (counted by the receivers, within the window plus half a second), the SFU's own
/// counter saw forwarding, and the decrypting subscribers measured latency. Guards the
/// benchmark against reporting numbers for a load that did not flow.
#[test]
fn the_sfu_benchmark_delivers_the_load_it_reports() -> Result<()> {
    let r = bench_sfu("hum", false)?;
    let n = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    ensure!(
        n("expected") == n("sent") * 8.0,
        "each packet has 8 listeners: {r}"
    );
    ensure!(
        n("sfu_forwarded_per_s") > 0.0,
        "the SFU counted nothing: {r}"
    );
    Ok(())
}

/// The same load against Janus's VideoRoom (`hum bench sfu --sfu janus`, the side-by-side in
/// docs/sfu.md): Janus started with the bench's generated configuration, every publisher
/// published through `joinandconfigure`, every subscriber subscribed to its room's three feeds
/// on one handle, and every packet reached the room's 6 subscribers (Janus's publishers only
/// send). Needs the `janus` package (scripts/setup --test installs it); fails without it.
#[test]
fn the_sfu_benchmark_drives_janus_with_the_same_load() -> Result<()> {
    let r = bench_sfu("janus", false)?;
    let n = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    ensure!(r["sfu"] == "janus", "{r}");
    ensure!(
        n("expected") == n("sent") * 6.0,
        "each packet has 6 listeners: {r}"
    );
    Ok(())
}

/// `hum bench sfu --video`: every publisher also sends a 300 kbit/s VP8 camera (about 2
/// packets per frame at 30 fps, a keyframe every 2 s), and all of it reaches every other member
/// of its room through the SFU, which estimates and paces each video subscriber. With the
/// receivers counting without decrypting (no TWCC feedback) the SFU's estimate stayed at its
/// 1 Mbit/s start and 9% of a heavier load was held back; this checks the whole load arrives.
#[test]
fn the_sfu_benchmark_carries_video_too() -> Result<()> {
    let r = bench_sfu("hum", true)?;
    let n = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    ensure!(r["video_kbps"] == 300, "{r}");
    // Audio alone is 6 x 50 packets/s; video adds at least 60 per publisher.
    ensure!(
        n("sent") >= 6.0 * 110.0 * 3.0 * 0.8,
        "the publishers sent no video: {r}"
    );
    ensure!(
        n("expected") == n("sent") * 8.0,
        "each packet has 8 listeners: {r}"
    );
    Ok(())
}

/// Runs `hum bench sfu --sfu <sfu>` on two rooms of 3 publishers + 6 subscribers for 3 s (with
/// `--video` when `video`) and checks what both servers must show: the packets sent, all of
/// them delivered, latency measured, the server's CPU read.
fn bench_sfu(sfu: &str, video: bool) -> Result<serde_json::Value> {
    let hum = hum_tests::workspace_bin("hum-cli", "hum")?;
    let out = std::process::Command::new(hum)
        .args(["--json", "bench", "sfu", "--sfu", sfu])
        .args(["--publishers", "3", "--subscribers", "6", "--rooms", "2"])
        .args(["--duration", "3s", "--latency-every", "2"])
        .args(if video { &["--video"][..] } else { &[] })
        .output()?;
    ensure!(
        out.status.success(),
        "hum bench sfu --sfu {sfu} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    eprintln!("{r}");
    let n = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    // 6 publishers at 50 packets/s for ~3 s.
    ensure!(
        n("sent") >= 6.0 * 50.0 * 3.0 * 0.8,
        "too few packets sent: {r}"
    );
    let ratio = n("delivered_ratio");
    ensure!((0.95..=1.05).contains(&ratio), "delivered {ratio}: {r}");
    ensure!(
        n("latency_samples") > 100.0 && n("latency_p50_ms") > 0.0,
        "{r}"
    );
    ensure!(n("server_cpu_pct_of_one_core") > 0.0, "{r}");
    Ok(r)
}
