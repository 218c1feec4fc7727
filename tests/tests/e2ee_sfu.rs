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
//!
//! And a reconnect: c reaches the relay through a TCP proxy the test cuts. The relay sees c leave
//! (a and b rotate and drop c's keys), c's client reconnects and re-joins by itself, the keys go
//! both ways again, and at the end all three hear each other with E2EE on.

use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
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

/// A TCP proxy in front of the relay for one client, whose connections the test can cut (both
/// ends see the connection close, as when a network drops).
struct Proxy {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: SocketAddr) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let conns = Arc::new(Mutex::new(Vec::new()));
        let kept = conns.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(up) = TcpStream::connect(target) else {
                    continue;
                };
                let (Ok(c2), Ok(u2), Ok(c3), Ok(u3)) = (
                    client.try_clone(),
                    up.try_clone(),
                    client.try_clone(),
                    up.try_clone(),
                ) else {
                    continue;
                };
                kept.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend([c3, u3]);
                pump(client, u2);
                pump(up, c2);
            }
        });
        Ok(Proxy { addr, conns })
    }

    /// Closes every connection made so far; new ones go through.
    fn cut(&self) -> usize {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        for s in conns.iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
        let n = conns.len() / 2;
        conns.clear();
        n
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if std::io::Write::write_all(&mut to, &buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// How many times `i` received `from`'s key of `epoch`.
fn keys_from(w: &World, i: usize, from: usize, epoch: u64) -> usize {
    w.events(i)
        .iter()
        .filter(|e| {
            e["type"] == "e2ee_key" && e["user"] == w.users[from].as_str() && e["epoch"] == epoch
        })
        .count()
}

#[test]
fn a_member_whose_relay_link_drops_rejoins_and_keys_go_both_ways_again() -> Result<()> {
    let w = World::with_relay_args(3, &["--mesh-limit", "0"])?;
    let (a, b, c) = (0, 1, 2);
    let relay: SocketAddr = w
        .url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .context("relay address")?
        .parse()?;
    let proxy = Proxy::start(relay)?;
    let mut pa = start(&w, a, "26s", true)?;
    let mut pb = start(&w, b, "26s", true)?;
    // c as `start` would, but through the proxy.
    let tone = w.path(&format!("tone{c}.wav"));
    tone_file(&tone, TONES[c], 0.1)?;
    let rec = w.path(&format!("rec{c}.wav"));
    let log = std::fs::File::create(w.path(&format!("events{c}.jsonl")))?;
    let mut pc = KillOnDrop(
        std::process::Command::new(&w.hum)
            .args(["--relay", &format!("ws://{}/ws", proxy.addr), "--identity"])
            .arg(w.identity(c))
            .args([
                "--json",
                "voice",
                "join",
                "--server",
                "Guild",
                "--channel",
                "Lounge",
                "--bind",
                "127.0.0.1:0",
                "--play",
            ])
            .arg(&tone)
            .args(["--loop", "--record"])
            .arg(&rec)
            .args(["--duration", "26s", "--e2ee"])
            .env(
                "HUM_LOG",
                std::env::var("HUM_TEST_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdout(log)
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning c's hum voice join")?,
    );
    let pairs = [(a, b), (a, c), (b, a), (b, c), (c, a), (c, b)];
    wait_for(
        "everyone to hold everyone's key",
        Duration::from_secs(30),
        || Ok(pairs.iter().all(|(i, from)| key_from(&w, *i, *from, 1))),
    )?;
    // Heard over the SFU before the cut, so the cut happens mid-call.
    wait_for("c to hear a and b", Duration::from_secs(20), || {
        Ok(connected(&w, c, a) && connected(&w, c, b))
    })?;
    let cut = proxy.cut();
    ensure!(cut == 1, "c had {cut} relay connections through the proxy");
    // The relay saw c leave: a and b rotate to epoch 2 and hand it to each other; c comes back,
    // gets their current keys (2) and they get c's key again.
    wait_for(
        "keys to go both ways again after c's reconnect",
        Duration::from_secs(30),
        || {
            Ok(key_from(&w, a, b, 2)
                && key_from(&w, b, a, 2)
                && key_from(&w, c, a, 2)
                && key_from(&w, c, b, 2)
                && keys_from(&w, a, c, 1) >= 2
                && keys_from(&w, b, c, 1) >= 2)
        },
    )?;
    for p in [&mut pa, &mut pb, &mut pc] {
        wait_exit(p, Duration::from_secs(40))?;
    }
    let mut shares = Vec::new();
    for (i, from) in pairs {
        shares.push((i, from, heard(&w, i, TONES[from])?));
    }
    eprintln!(
        "after c's reconnect (last 3 s): {}",
        shares
            .iter()
            .map(|(i, f, s)| format!(
                "{} hears {} {:.0}%",
                ["a", "b", "c"][*i],
                ["a", "b", "c"][*f],
                s * 100.0
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (i, from, share) in shares {
        ensure!(
            share > 0.6,
            "after the reconnect {i} hears {from} in only {:.0}% of blocks",
            share * 100.0
        );
    }
    Ok(())
}

/// The frames `dir` (a `--record-video` directory) decoded of `user`'s camera: one JSON line
/// per decoded frame, in files named after the sender's first 16 hex digits.
fn decoded_of(dir: &std::path::Path, user: &str) -> Vec<Value> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        let stem = p.file_stem().and_then(|x| x.to_str()).unwrap_or_default();
        if p.extension().and_then(|x| x.to_str()) == Some("jsonl") && stem.starts_with(&user[..16])
        {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            out.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
        }
    }
    out
}

/// Readable pattern codes, in the order decoded.
fn codes(frames: &[Value]) -> Vec<u64> {
    frames.iter().filter_map(|f| f["code"].as_u64()).collect()
}

#[test]
fn video_through_the_sfu_decrypts_for_members_and_not_for_a_keyless_one() -> Result<()> {
    let w = World::with_relay_args(3, &["--mesh-limit", "0"])?;
    let (a, b, c) = (0, 1, 2);
    let recs: Vec<_> = (0..3).map(|i| w.path(&format!("video-{i}"))).collect();
    let mut procs = Vec::new();
    for (i, tone) in ["440", "550", "660"].iter().enumerate() {
        let mut args = vec![
            "--tone",
            tone,
            "--video",
            "pattern",
            "--video-size",
            "320x180",
            "--video-kbps",
            "300",
            "--record-video",
            s(&recs[i]),
            "--duration",
            "25s",
        ];
        if i != c {
            args.push("--e2ee");
        }
        procs.push(w.voice(i, &args)?);
    }
    wait_for(
        "a and b to hold each other's key",
        Duration::from_secs(30),
        || Ok(key_from(&w, a, b, 1) && key_from(&w, b, a, 1)),
    )?;
    let enough = |i: usize, from: usize| codes(&decoded_of(&recs[i], &w.users[from])).len() >= 30;
    let seen = wait_for(
        "a and b to decode 30 frames of each other's camera",
        Duration::from_secs(60),
        || Ok(enough(a, b) && enough(b, a)),
    );
    for p in procs.iter_mut() {
        wait_exit(p, Duration::from_secs(60))?;
    }
    let summary = |i: usize, from: usize| {
        let f = decoded_of(&recs[i], &w.users[from]);
        (f.len(), codes(&f).len())
    };
    eprintln!(
        "decoded (frames, readable codes): a of b {:?}, b of a {:?}; c (no key) of a {:?}, of b {:?}; a of c {:?}",
        summary(a, b),
        summary(b, a),
        summary(c, a),
        summary(c, b),
        summary(a, c),
    );
    seen?;
    for (i, from) in [(a, b), (b, a)] {
        let cs = codes(&decoded_of(&recs[i], &w.users[from]));
        // In order; a code may repeat when the SFU switches layers (the same frame of another
        // simulcast layer).
        ensure!(
            cs.windows(2).all(|x| x[1] >= x[0]),
            "{i} decoded {from}'s codes out of order: {cs:?}"
        );
    }
    // c receives what the SFU forwards and decodes none of it (nothing readable: ciphertext).
    for from in [a, b] {
        let (frames, readable) = summary(c, from);
        ensure!(
            readable == 0,
            "c (no key) read {readable} of {frames} frames of {from}'s camera through the SFU"
        );
    }
    // And a and b do not show c's unencrypted camera.
    ensure!(
        codes(&decoded_of(&recs[a], &w.users[c])).is_empty(),
        "a showed c's unencrypted camera in an E2EE room"
    );
    Ok(())
}
