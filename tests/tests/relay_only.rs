//! "Hide my IP" (relay-only) for real: coturn on loopback (started by this test with its own
//! config, shared-secret auth), a hum-relay that hands out TURN credentials (`--turn-url`,
//! `--turn-secret`), and `hum` processes with `--relay-only`: the media path is TURN on both
//! sides (the selected candidate pair, from webrtc-rs stats), the audio arrives, and without a
//! TURN server a relay-only join fails with a sentence that says why. Stream viewers with
//! `hum watch --relay-only` relay chunks to each other over TURN-only links.
//!
//! coturn refuses to relay to loopback peers unless `allow-loopback-peers` is set (here both
//! peers' relayed addresses are 127.0.0.1). Needs Debian's `coturn` (scripts/setup --test).

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use hum_media::synth::read_wav;
use hum_tests::KillOnDrop;
use hum_tests::stream::{go_live, u, viewer_report, watch};
use hum_tests::voice::{World, s, tone_share, wait_exit};

const SECRET: &str = "relay-only-test-secret";

/// A coturn process on 127.0.0.1 with shared-secret auth; killed on drop.
struct Coturn {
    _child: KillOnDrop,
    ip: String,
    port: u16,
}

impl Coturn {
    fn start(dir: &Path) -> Result<Coturn> {
        Coturn::start_on(dir, "127.0.0.1")
    }

    /// coturn listening (and relaying) on `ip` only.
    fn start_on(dir: &Path, ip: &str) -> Result<Coturn> {
        // A free UDP port: bind, read, release (coturn binds it right after).
        let port = UdpSocket::bind((ip, 0))?.local_addr()?.port();
        let conf = dir.join("turnserver.conf");
        std::fs::write(
            &conf,
            format!(
                "listening-ip={ip}\nlistening-port={port}\nrelay-ip={ip}\n\
                 min-port=40000\nmax-port=45000\nuse-auth-secret\nstatic-auth-secret={SECRET}\n\
                 realm=hum.test\nallow-loopback-peers\nno-multicast-peers\nfingerprint\n\
                 no-cli\nno-tls\nno-dtls\nno-tcp\nsimple-log\nlog-file={log}\n\
                 pidfile={pid}\nuserdb={db}\n",
                log = dir.join("turn.log").display(),
                pid = dir.join("turn.pid").display(),
                db = dir.join("turndb").display(),
            ),
        )?;
        let child = Command::new("turnserver")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(
                "starting turnserver (Debian package coturn; scripts/setup --test installs it)",
            )?;
        let turn = Coturn {
            _child: KillOnDrop(child),
            ip: ip.to_owned(),
            port,
        };
        turn.wait_ready()?;
        Ok(turn)
    }

    /// Ready when it answers a STUN binding request (an event, not a sleep).
    fn wait_ready(&self) -> Result<()> {
        let sock = UdpSocket::bind((self.ip.as_str(), 0))?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        // Binding request: type 0x0001, length 0, magic cookie, 12-byte transaction id.
        let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        req.extend_from_slice(b"hum-ready-01");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            sock.send_to(&req, (self.ip.as_str(), self.port))?;
            if let Ok((n, _)) = sock.recv_from(&mut buf)
                && n >= 20
                && buf[0..2] == [0x01, 0x01]
                && buf[8..20] == req[8..20]
            {
                return Ok(());
            }
        }
        bail!("coturn did not answer STUN on {}:{}", self.ip, self.port)
    }

    fn url(&self) -> String {
        format!("turn:{}:{}?transport=udp", self.ip, self.port)
    }
}

fn relay_args(url: &str) -> Vec<String> {
    vec![
        "--turn-url".into(),
        url.into(),
        "--turn-secret".into(),
        SECRET.into(),
    ]
}

/// The `route` events user `i` printed: (local, remote) candidate types per peer.
fn routes(w: &World, i: usize) -> Vec<(String, String)> {
    w.events(i)
        .iter()
        .filter(|e| e["type"] == "route")
        .map(|e| {
            (
                e["local"].as_str().unwrap_or("").to_owned(),
                e["remote"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[test]
fn relay_only_mesh_goes_through_turn_and_audio_arrives() -> Result<()> {
    let turn_dir = tempfile::tempdir()?;
    let turn = Coturn::start(turn_dir.path())?;
    let args = relay_args(&turn.url());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let w = World::with_relay_args(2, &refs)?;

    let (rec0, rec1) = (w.path("rec0.wav"), w.path("rec1.wav"));
    let mut a = w.voice(
        0,
        &[
            "--tone",
            "600",
            "--record",
            s(&rec0),
            "--duration",
            "9s",
            "--relay-only",
        ],
    )?;
    let mut b = w.voice(
        1,
        &[
            "--tone",
            "900",
            "--record",
            s(&rec1),
            "--duration",
            "9s",
            "--relay-only",
        ],
    )?;
    wait_exit(&mut a, Duration::from_secs(40))?;
    wait_exit(&mut b, Duration::from_secs(40))?;

    relayed_and_heard(&w, [(0, &rec0, 900.0), (1, &rec1, 600.0)])
}

/// Every route member `i` reported is TURN on both sides and, in the second half of its
/// recording `rec`, the other's tone `hz` is in more than 80 % of 100 ms blocks.
fn relayed_and_heard(w: &World, recs: [(usize, &Path, f32); 2]) -> Result<()> {
    for (i, rec, hz) in recs {
        let r = routes(w, i);
        eprintln!("user {i}: routes {r:?}");
        assert!(
            !r.is_empty(),
            "user {i} reported no route: {:?}",
            w.events(i)
        );
        for (local, remote) in &r {
            assert_eq!(
                (local.as_str(), remote.as_str()),
                ("relay", "relay"),
                "user {i}: media not relayed through TURN on both sides"
            );
        }
        let heard = read_wav(rec)?;
        let tail = &heard[heard.len() / 2..];
        let share = tone_share(tail, hz, 0.7);
        eprintln!(
            "user {i}: {hz} Hz in {:.0} % of 100 ms blocks",
            share * 100.0
        );
        assert!(
            share > 0.8,
            "user {i} does not hear the other's tone: {share}"
        );
    }
    Ok(())
}

#[test]
fn relay_only_without_turn_server_fails_clearly() -> Result<()> {
    // A relay that hands out no TURN credentials.
    let w = World::new(1)?;
    let out = w
        .cmd(
            0,
            &[
                "voice",
                "join",
                "--server",
                "Guild",
                "--channel",
                "Lounge",
                "--bind",
                "127.0.0.1:0",
                "--tone",
                "600",
                "--duration",
                "2s",
                "--relay-only",
            ],
        )
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "relay-only joined without TURN");
    assert!(
        err.contains("needs a TURN server"),
        "unclear refusal: {err}"
    );

    // A relay that names a TURN server that is not running: no relayed address, said so.
    let dead = UdpSocket::bind("127.0.0.1:0")?;
    let url = format!("turn:127.0.0.1:{}?transport=udp", dead.local_addr()?.port());
    drop(dead);
    let args = relay_args(&url);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    drop(w);
    let w = World::with_relay_args(2, &refs)?;
    // The second member must exist for an offer to be made: it joins first and waits.
    let mut b = w.voice(1, &["--tone", "900", "--duration", "8s", "--relay-only"])?;
    let mut a = w.voice(0, &["--tone", "600", "--duration", "6s", "--relay-only"])?;
    let _ = wait_exit(&mut a, Duration::from_secs(40));
    let _ = wait_exit(&mut b, Duration::from_secs(40));
    let said: Vec<String> = (0..2)
        .flat_map(|i| w.events(i))
        .filter(|e| e["type"] == "error")
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect();
    assert!(
        said.iter()
            .any(|m| m.contains("no relayed address could be obtained from the TURN server")),
        "no clear error about the unreachable TURN server: {said:?}"
    );
    assert!(
        (0..2).all(|i| w.events(i).iter().all(|e| e["type"] != "peer_connected")),
        "a relay-only peer connected without TURN"
    );
    Ok(())
}

/// Viewers with "hide my IP" relay the stream to each other through TURN only: every WebRTC
/// link between them opened on a relayed pair (none direct, none unknown), chunks still came
/// from peers, and everything played verified. The streamer uploads to the relay over its
/// WebSocket (`/mesh`), which relay-only does not change.
#[test]
fn relay_only_viewers_relay_the_stream_to_each_other_through_turn() -> Result<()> {
    const VIEWERS: usize = 4;
    const WATCH: u64 = 15;
    let turn_dir = tempfile::tempdir()?;
    let turn = Coturn::start(turn_dir.path())?;
    let args = relay_args(&turn.url());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let w = World::with_relay_args(VIEWERS + 1, &refs)?;
    let (mut streamer, id) = go_live(&w, WATCH + VIEWERS as u64 + 6, &[])?;
    let mut viewers = Vec::new();
    for i in 1..=VIEWERS {
        viewers.push(watch(&w, &id, i, WATCH, &["--relay-only"])?);
        std::thread::sleep(Duration::from_millis(300));
    }
    for v in &mut viewers {
        wait_exit(v, Duration::from_secs(WATCH + 60))?;
    }
    wait_exit(&mut streamer, Duration::from_secs(WATCH + 90))?;

    let (mut from_peers, mut relayed) = (0, 0);
    for i in 1..=VIEWERS {
        let v = viewer_report(&w, i)?["viewer"].clone();
        eprintln!(
            "viewer {i}: played {}, from peers {} B, links relayed {} / direct {} / unknown {}",
            u(&v, "played"),
            u(&v, "bytes_from_peers"),
            u(&v, "links_relayed"),
            u(&v, "links_direct"),
            u(&v, "links_route_unknown"),
        );
        ensure!(u(&v, "played") >= 20, "viewer {i} played little: {v}");
        ensure!(
            u(&v, "played_verified") == u(&v, "played") && u(&v, "played_corrupt") == 0,
            "viewer {i} played a chunk that does not verify: {v}"
        );
        ensure!(
            u(&v, "links_direct") == 0 && u(&v, "links_route_unknown") == 0,
            "viewer {i} has a mesh link that is not relayed through TURN: {v}"
        );
        from_peers += u(&v, "bytes_from_peers");
        relayed += u(&v, "links_relayed");
    }
    ensure!(relayed > 0, "no viewer opened a mesh link");
    ensure!(from_peers > 0, "no byte came from a peer");
    Ok(())
}

/// The two-namespace version (scripts/test.d/46-turn-netns.sh builds the network, checks that
/// the namespaces cannot reach each other, and runs this): member 0 in one namespace, member 1
/// in another, each reaching the relay and the TURN server (one address in the root namespace)
/// and nothing of the other. A relay-only channel call between them connects, relayed on both
/// sides, and each hears the other: the only path there was went through TURN.
#[test]
#[ignore = "needs the network namespaces of scripts/test.d/46-turn-netns.sh (root)"]
fn relay_only_across_two_namespaces_that_reach_each_other_only_through_turn() -> Result<()> {
    let env = |k: &str| {
        std::env::var(k)
            .with_context(|| format!("{k} is not set: run scripts/test.d/46-turn-netns.sh"))
    };
    let server = env("HUM_TURN_NETNS_SERVER")?;
    let members = [
        (env("HUM_TURN_NETNS_A")?, env("HUM_TURN_NETNS_A_IP")?),
        (env("HUM_TURN_NETNS_B")?, env("HUM_TURN_NETNS_B_IP")?),
    ];
    let turn_dir = tempfile::tempdir()?;
    let turn = Coturn::start_on(turn_dir.path(), &server)?;
    let args = relay_args(&turn.url());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let w = World::with_relay_at(2, &format!("{server}:0"), &refs)?;
    let recs = [w.path("rec0.wav"), w.path("rec1.wav")];
    let mut procs = Vec::new();
    for (i, ((ns, ip), hz)) in members.iter().zip(["600", "900"]).enumerate() {
        procs.push(w.voice_via(
            &["ip", "netns", "exec", ns],
            &format!("{ip}:0"),
            i,
            &[
                "--tone",
                hz,
                "--record",
                s(&recs[i]),
                "--duration",
                "10s",
                "--relay-only",
            ],
        )?);
    }
    for p in &mut procs {
        wait_exit(p, Duration::from_secs(40))?;
    }
    relayed_and_heard(&w, [(0, &recs[0], 900.0), (1, &recs[1], 600.0)])
}
