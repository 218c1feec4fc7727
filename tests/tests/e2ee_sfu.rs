//! End-to-end encryption through the SFU (issue 16, docs/e2ee.md), with real `hum voice join`
//! processes on a relay whose channels always use its SFU (`--mesh-limit 0`):
//!
//! - a (600 Hz) and b (900 Hz) and d (1500 Hz) join with `--e2ee`; c (1300 Hz) joins without.
//! - The members with E2EE exchange keys through the relay (`e2ee_key` events) and hear each
//!   other. c receives exactly what the SFU forwards (it reports a's and b's first packets)
//!   and decodes none of it: no trace of a's or b's tone in c's recording, so what the SFU
//!   handles is not the plain Opus. a and b drop c's unencrypted audio instead of playing it.
//! - d leaves: a and b each make a new key (epoch 2), hand it to the other, switch to it
//!   (`e2ee_rotated`), and still hear each other at the end, long after the switch: the new
//!   keys went through and only the new keys are in use.

use std::time::Duration;

use anyhow::{Result, ensure};
use hum_media::synth::read_wav;
use hum_tests::KillOnDrop;
use hum_tests::voice::{World, s, tone_file, tone_share, wait_exit, wait_for};
use serde_json::Value;

const TONES: [f32; 4] = [600.0, 900.0, 1300.0, 1500.0];

fn start(w: &World, i: usize, duration: &str, e2ee: bool) -> Result<KillOnDrop> {
    let tone = w.path(&format!("tone{i}.wav"));
    tone_file(&tone, TONES[i], 0.1)?;
    let rec = w.path(&format!("rec{i}.wav"));
    let mut args = vec![
        "--play",
        s(&tone),
        "--loop",
        "--record",
        s(&rec),
        "--duration",
        duration,
    ];
    if e2ee {
        args.push("--e2ee");
    }
    w.voice(i, &args)
}

fn has(events: &[Value], f: impl Fn(&Value) -> bool) -> bool {
    events.iter().any(f)
}

/// `i` holds `from`'s key of `epoch`.
fn key_from(w: &World, i: usize, from: usize, epoch: u64) -> bool {
    has(&w.events(i), |e| {
        e["type"] == "e2ee_key" && e["user"] == w.users[from].as_str() && e["epoch"] == epoch
    })
}

/// The share of 100 ms blocks of the last 3 s (before the final second) of `i`'s recording in
/// which `hz` is heard.
fn heard(w: &World, i: usize, hz: f32) -> Result<f32> {
    let rec = read_wav(&w.path(&format!("rec{i}.wav")))?;
    ensure!(rec.len() > 48_000 * 5, "rec{i}: only {} samples", rec.len());
    let end = rec.len() - 48_000;
    Ok(tone_share(&rec[end - 3 * 48_000..end], hz, 0.1))
}

/// `i` played a first packet of `from` (over the SFU: the SFU reports each sender at its first
/// packet).
fn connected(w: &World, i: usize, from: usize) -> bool {
    has(&w.events(i), |e| {
        e["type"] == "peer_connected" && e["user"] == w.users[from].as_str()
    })
}

#[test]
fn the_sfu_forwards_ciphertext_members_hear_each_other_and_keys_rotate_on_leave() -> Result<()> {
    let w = World::with_relay_args(4, &["--mesh-limit", "0"])?;
    let (a, b, c, d) = (0, 1, 2, 3);
    let mut pa = start(&w, a, "22s", true)?;
    let mut pb = start(&w, b, "22s", true)?;
    let mut pc = start(&w, c, "22s", false)?;
    let mut pd = start(&w, d, "6s", true)?;
    wait_for(
        "a, b and d to hold each other's keys",
        Duration::from_secs(30),
        || {
            Ok([(a, b), (a, d), (b, a), (b, d), (d, a), (d, b)]
                .iter()
                .all(|(i, from)| key_from(&w, *i, *from, 1)))
        },
    )?;
    ensure!(
        !has(&w.events(c), |e| e["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("e2ee"))),
        "c (without --e2ee) took part in the key exchange: {:?}",
        w.events(c)
    );
    wait_exit(&mut pd, Duration::from_secs(30))?;
    // d left: a and b rotate, each sends the other its epoch-2 key and switches to it.
    wait_for(
        "a and b to rotate after d left",
        Duration::from_secs(20),
        || {
            Ok(key_from(&w, a, b, 2)
                && key_from(&w, b, a, 2)
                && [a, b].iter().all(|i| {
                    has(&w.events(*i), |e| {
                        e["type"] == "e2ee_rotated" && e["epoch"] == 2
                    })
                }))
        },
    )?;
    for p in [&mut pa, &mut pb, &mut pc] {
        wait_exit(p, Duration::from_secs(40))?;
    }
    let (a_hears_b, b_hears_a) = (heard(&w, a, TONES[b])?, heard(&w, b, TONES[a])?);
    let (c_hears_a, c_hears_b) = (heard(&w, c, TONES[a])?, heard(&w, c, TONES[b])?);
    let (a_hears_c, b_hears_c) = (heard(&w, a, TONES[c])?, heard(&w, b, TONES[c])?);
    let refused = |i: usize| {
        w.events(i)
            .iter()
            .filter(|e| e["type"] == "e2ee_stats")
            .filter_map(|e| e["refused_frames"].as_u64())
            .next_back()
            .unwrap_or(0)
    };
    eprintln!(
        "after the rotation: a hears b in {:.0}% of blocks, b hears a in {:.0}%; \
         c (no key) hears a {:.0}%, b {:.0}%; \
         a hears c {:.0}%, b hears c {:.0}%; frames refused: a {}, b {}",
        a_hears_b * 100.0,
        b_hears_a * 100.0,
        c_hears_a * 100.0,
        c_hears_b * 100.0,
        a_hears_c * 100.0,
        b_hears_c * 100.0,
        refused(a),
        refused(b),
    );
    ensure!(
        a_hears_b > 0.6 && b_hears_a > 0.6,
        "a and b do not hear each other after the rotation: {a_hears_b}, {b_hears_a}"
    );
    // c gets the SFU's packets of a and b but no sound out of them.
    ensure!(
        connected(&w, c, a) && connected(&w, c, b),
        "c received nothing of a or b over the SFU: {:?}",
        w.events(c)
    );
    ensure!(
        c_hears_a < 0.05 && c_hears_b < 0.05,
        "the SFU forwarded decodable audio: c hears a {c_hears_a}, b {c_hears_b}"
    );
    // c's plaintext is refused by those expecting encryption, not played.
    ensure!(
        a_hears_c < 0.05 && b_hears_c < 0.05,
        "plaintext played in an E2EE room: {a_hears_c}, {b_hears_c}"
    );
    ensure!(
        refused(a) > 100 && refused(b) > 100,
        "a and b should have refused c's frames: {}, {}",
        refused(a),
        refused(b)
    );
    Ok(())
}
