//! Voice end to end: a real relay and real `hum` processes on loopback, talking WebRTC to each
//! other. What is checked is the audio itself (a chirp found by correlation, tones by Goertzel),
//! not just that packets moved.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use hum_media::analysis::{find, rms, tone_purity};
use hum_media::synth::read_wav;
use hum_tests::KillOnDrop;
use hum_tests::voice::{World, chirp_file, s, tone_share, wait_exit, wait_for};

#[test]
fn two_clients_hear_each_other_through_the_relay() -> Result<()> {
    let w = World::new(2)?;
    let chirp = chirp_file(&w.path("chirp.wav"))?;
    let (rec0, rec1) = (w.path("rec0.wav"), w.path("rec1.wav"));
    let mut a = w.voice(
        0,
        &[
            "--play",
            s(&w.path("chirp.wav")),
            "--record",
            s(&rec0),
            "--duration",
            "7s",
        ],
    )?;
    let mut b = w.voice(
        1,
        &["--tone", "800", "--record", s(&rec1), "--duration", "7s"],
    )?;
    wait_exit(&mut a, Duration::from_secs(30))?;
    wait_exit(&mut b, Duration::from_secs(30))?;

    // B heard A's chirp: the waveform itself, by normalised correlation.
    let heard = read_wav(&rec1)?;
    let m = find(&heard, &chirp).context("B recorded nothing")?;
    assert!(m.correlation > 0.9, "chirp not in B's recording: {m:?}");
    // A heard B's tone.
    let heard = read_wav(&rec0)?;
    let tail = &heard[heard.len() / 2..];
    assert!(
        tone_share(tail, 800.0, 0.7) > 0.9,
        "A does not hear B's tone: {}",
        tone_share(tail, 800.0, 0.7)
    );
    // Both saw the other connect and reported link stats.
    for i in 0..2 {
        let ev = w.events(i);
        assert!(
            ev.iter()
                .any(|e| e["type"] == "peer_connected" && e["user"] == w.users[1 - i])
        );
        assert!(
            ev.iter()
                .any(|e| e["type"] == "stats" && e["packets"].as_u64() > Some(50))
        );
    }
    Ok(())
}

#[test]
fn three_clients_mute_and_push_to_talk_really_silence() -> Result<()> {
    let w = World::new(3)?;
    let rec = w.path("rec2.wav");
    // 0 talks, then mutes from 4.5 s; 1 holds push-to-talk only for its first 4.5 s.
    let mut a = w.voice(
        0,
        &[
            "--tone",
            "400",
            "--mute-at",
            "4500ms-60s",
            "--duration",
            "9s",
        ],
    )?;
    let mut b = w.voice(
        1,
        &[
            "--tone",
            "900",
            "--mode",
            "ptt",
            "--ptt-held",
            "0s-4500ms",
            "--duration",
            "9s",
        ],
    )?;
    let mut c = w.voice(
        2,
        &["--tone", "1700", "--record", s(&rec), "--duration", "9s"],
    )?;
    // While muted (from 4.5 s of its 9 s), the roster everyone sees says so: read it until it
    // does (each read is a `hum channel list` process, so no fixed sleep guesses the moment).
    let mut last = Vec::new();
    let seen = wait_for(
        "0 shown muted in the roster",
        Duration::from_secs(30),
        || {
            last = w.roster()?;
            Ok(last
                .iter()
                .any(|e| e["user"]["id"] == w.users[0] && e["voice"]["muted"] == true))
        },
    );
    ensure!(seen.is_ok(), "0 never shown muted; last roster: {last:?}");
    for p in [&mut a, &mut b, &mut c] {
        wait_exit(p, Duration::from_secs(30))?;
    }
    let heard = read_wav(&rec)?;
    let sec = |a: f32, b: f32| {
        &heard[(a * 48_000.0) as usize..((b * 48_000.0) as usize).min(heard.len())]
    };
    // Before: both tones (each about half the energy of the mix).
    let before = sec(2.0, 4.0);
    assert!(
        tone_share(before, 400.0, 0.25) > 0.9,
        "0 not heard: {}",
        tone_share(before, 400.0, 0.25)
    );
    assert!(
        tone_share(before, 900.0, 0.25) > 0.9,
        "1 not heard: {}",
        tone_share(before, 900.0, 0.25)
    );
    // After mute and PTT release: silence, not just quieter.
    let after = sec(6.0, 8.5);
    assert!(
        rms(after) < 0.005,
        "still hearing something: rms {}",
        rms(after)
    );
    // 2 never hears itself.
    assert!(tone_purity(before, 1700.0) < 0.02);
    Ok(())
}

#[test]
fn a_killed_client_leaves_the_roster_and_a_rejoin_reconnects() -> Result<()> {
    let w = World::new(2)?;
    let mut a = w.voice(0, &["--tone", "500", "--duration", "20s"])?;
    let b = w.voice(1, &["--tone", "700"])?;
    wait_for("both connected", Duration::from_secs(15), || {
        Ok(w.events(0).iter().any(|e| e["type"] == "peer_connected"))
    })?;
    assert_eq!(w.roster()?.len(), 2);
    drop(b); // SIGKILL: no goodbye, the relay notices the dead connection.
    wait_for(
        "roster without the killed client",
        Duration::from_secs(15),
        || Ok(w.roster()?.len() == 1),
    )?;
    wait_for("peer_left at the survivor", Duration::from_secs(15), || {
        Ok(w.events(0)
            .iter()
            .any(|e| e["type"] == "peer_left" && e["user"] == w.users[1]))
    })?;
    // Rejoin: connects again.
    let mut b = w.voice(1, &["--tone", "700", "--duration", "4s"])?;
    wait_for("reconnected", Duration::from_secs(15), || {
        Ok(w.events(0)
            .iter()
            .filter(|e| e["type"] == "peer_connected")
            .count()
            >= 2)
    })?;
    wait_exit(&mut b, Duration::from_secs(20))?;
    // A clean leave also leaves the roster.
    wait_for("roster after leave", Duration::from_secs(10), || {
        Ok(w.roster()?.len() == 1)
    })?;
    drop(a.0.kill());
    Ok(())
}

#[test]
fn without_the_sfu_a_ninth_participant_is_told_the_channel_needs_it() -> Result<()> {
    // The relay embeds the SFU by default (tests/tests/voice_sfu.rs moves the channel onto it); a relay
    // run without it keeps channels at a full mesh of 8 and says why to the 9th.
    let w = World::with_relay_args(9, &["--sfu-bind", "off"])?;
    // Eight people sit in the channel (roster only, no audio: cheap).
    let sitters: Vec<KillOnDrop> = (0..8)
        .map(|i| {
            w.cmd(i, &["channel", "join", "--server", "Guild", "Lounge"])
                .stdout(Stdio::null())
                .spawn()
                .map(KillOnDrop)
                .context("spawning a sitter")
        })
        .collect::<Result<_>>()?;
    wait_for("8 in the roster", Duration::from_secs(20), || {
        Ok(w.roster()?.len() == 8)
    })?;
    let out = w
        .cmd(
            8,
            &[
                "voice",
                "join",
                "--server",
                "Guild",
                "--channel",
                "Lounge",
                "--tone",
                "300",
                "--duration",
                "3s",
            ],
        )
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SFU"), "{err}");
    // And it did not stay in the roster.
    assert_eq!(w.roster()?.len(), 8);
    drop(sitters);
    Ok(())
}
