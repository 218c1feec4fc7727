//! Eight real `hum voice join` processes in one channel through a real relay: a full mesh of 28
//! WebRTC connections (7 per process). Every process sends its own tone and records the mix it
//! hears; each recording must hold the other seven tones (Goertzel) and not its own.
//!
//! Bounded for a small machine: 10 s of audio, quiet tones (0.08 each, so seven never clip).

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use hum_media::analysis::{rms, tone_purity};
use hum_media::synth::read_wav;
use hum_tests::voice::{World, s, tone_file, tone_share, wait_exit, wait_for};

/// Far enough apart that a few seconds of Goertzel separate them; no one is another's harmonic.
const TONES: [f32; 8] = [350.0, 490.0, 630.0, 770.0, 910.0, 1190.0, 1330.0, 1610.0];

#[test]
fn eight_processes_in_a_mesh_everyone_hears_the_other_seven() -> Result<()> {
    let w = World::new(8)?;
    let started = Instant::now();
    let mut procs = Vec::new();
    for (i, hz) in TONES.iter().enumerate() {
        let tone = w.path(&format!("tone{i}.wav"));
        tone_file(&tone, *hz, 0.08)?;
        let rec = w.path(&format!("rec{i}.wav"));
        procs.push(w.voice(
            i,
            &[
                "--play",
                s(&tone),
                "--loop",
                "--record",
                s(&rec),
                "--duration",
                "10s",
            ],
        )?);
    }
    // Everyone connects to the seven others.
    wait_for("28 connections", Duration::from_secs(20), || {
        Ok((0..8).all(|i| {
            let mut peers: Vec<String> = w
                .events(i)
                .iter()
                .filter(|e| e["type"] == "peer_connected")
                .filter_map(|e| e["user"].as_str().map(str::to_string))
                .collect();
            peers.sort();
            peers.dedup();
            peers.len() == 7
        }))
    })?;
    let connected = started.elapsed();
    ensure!(w.roster()?.len() == 8, "roster: {:?}", w.roster()?);
    for p in &mut procs {
        wait_exit(p, Duration::from_secs(40))?;
    }
    eprintln!(
        "8-way mesh: all 28 connections up after {:.1} s; processes done after {:.1} s",
        connected.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    let mut worst = f32::MAX;
    for (i, own) in TONES.iter().enumerate() {
        let heard = read_wav(&w.path(&format!("rec{i}.wav")))?;
        ensure!(
            heard.len() > 48_000 * 8,
            "rec{i}: only {} samples",
            heard.len()
        );
        // The last seconds, once every connection is up (minus the final fade-out second).
        let end = heard.len() - 48_000;
        let window = &heard[end - 3 * 48_000..end];
        let purities: Vec<f32> = TONES.iter().map(|hz| tone_purity(window, *hz)).collect();
        // Seven equal tones hold ~1/7 = 0.14 of the energy each: count the 100 ms blocks where
        // a tone has at least half its fair share.
        let shares: Vec<f32> = TONES
            .iter()
            .map(|hz| tone_share(window, *hz, 0.07))
            .collect();
        eprintln!(
            "rec{i}: rms {:.3}, purity per tone {purities:.3?}, share of blocks {shares:.2?}",
            rms(window)
        );
        for (j, hz) in TONES.iter().enumerate() {
            if i == j {
                assert!(
                    purities[j] < 0.01,
                    "{i} hears its own {own} Hz tone: {}",
                    purities[j]
                );
            } else {
                assert!(
                    shares[j] >= 0.9,
                    "{i} does not hear {j}'s {hz} Hz tone: blocks {shares:?}"
                );
                worst = worst.min(shares[j]);
            }
        }
    }
    eprintln!(
        "weakest tone in any recording: present in {:.0}% of the blocks",
        worst * 100.0
    );
    Ok(())
}
