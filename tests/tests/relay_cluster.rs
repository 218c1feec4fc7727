//! Several `hum-relay` processes acting as one (docs/cluster.md): one throwaway PostgreSQL and
//! one throwaway Redis (started by the test, `hum_relay::store::testing`), each relay started
//! with `--store postgres://... --redis ...`. Clients on different nodes become friends, see
//! each other's presence, share a server, its channels and rosters, signal each other, and talk
//! in a mesh voice channel (real `hum voice join` processes, audio checked). A node killed with
//! SIGKILL: the others end its sessions (presence offline, roster leave) once its announcement
//! expires, its client logs in on another node and rejoins, and a new node cannot join a cluster
//! that is running with live state.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use hum_media::analysis::find;
use hum_media::synth::read_wav;
use hum_relay::store::testing::{TempPostgres, TempRedis};
use hum_tests::relay::{Client, Relay};
use hum_tests::voice::{chirp_file, s, tone_share, wait_exit};
use hum_tests::{KillOnDrop, workspace_bin};
use serde_json::{Value, json};

/// A node is declared dead this long after its last refresh.
const TTL: &str = "1500ms";

/// A cluster name of its own per test (the tests share one Redis).
fn cluster_name(test: &str) -> String {
    format!("t{}-{test}", std::process::id())
}

/// `n` relay nodes of one cluster on a fresh database.
struct Cluster {
    nodes: Vec<Relay>,
    args: Vec<String>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    fn start(test: &str, n: usize) -> Result<Cluster> {
        let db = TempPostgres::shared()
            .create_database()
            .map_err(anyhow::Error::msg)?;
        let redis = TempRedis::shared().url();
        let args = vec![
            "--store".to_string(),
            db,
            "--redis".into(),
            redis,
            "--cluster".into(),
            cluster_name(test),
            "--node-ttl".into(),
            TTL.into(),
            "--sfu-bind".into(),
            "off".into(),
        ];
        let mut c = Cluster {
            nodes: Vec::new(),
            args,
            _dirs: Vec::new(),
        };
        for i in 0..n {
            let node = c.node(i)?;
            c.nodes.push(node);
        }
        Ok(c)
    }

    /// Start node `n{i}` (not added to `nodes`).
    fn node(&mut self, i: usize) -> Result<Relay> {
        let dir = tempfile::tempdir()?;
        let id = format!("n{i}");
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        args.extend(["--node-id", &id]);
        let relay = Relay::start(dir.path(), &args)?;
        self._dirs.push(dir);
        Ok(relay)
    }
}

#[tokio::test]
async fn three_nodes_act_as_one_relay_and_survive_a_kill() -> Result<()> {
    let mut cluster = Cluster::start("one", 3)?;
    let [a1, a2, a3] = [0, 1, 2].map(|i| cluster.nodes[i].addr);
    let mut ada = Client::login(a1, 1, "Ada").await?;
    let mut bob = Client::login(a2, 2, "Bob").await?;
    let mut cy = Client::login(a3, 3, "Cy").await?;
    let (a, b, c) = (ada.user(), bob.user(), cy.user());

    // Friends across nodes, with presence.
    ada.ok("friend_request", json!({"user": b})).await?;
    let req = bob.event("friend_request_received").await?;
    assert_eq!(req["from"]["id"], a);
    bob.ok("friend_accept", json!({"user": a})).await?;
    let added = ada.event("friend_added").await?;
    assert_eq!(added["friend"]["user"]["id"], b);
    assert_eq!(added["friend"]["presence"]["status"], "online");
    ada.ok("friend_request", json!({"user": c})).await?;
    cy.event("friend_request_received").await?;
    cy.ok("friend_accept", json!({"user": a})).await?;
    ada.event_where("friend_added", |e| e["friend"]["user"]["id"] == c)
        .await?;

    // A server made on node 1, joined from nodes 2 and 3: everyone sees everyone.
    let sid = ada.ok("server_create", json!({"name": "Club"})).await?["server"]["id"].clone();
    let code = ada.ok("invite_create", json!({"server": sid})).await?["invite"]["code"].clone();
    bob.ok("invite_join", json!({"code": code})).await?;
    let j = ada.event("member_joined").await?;
    assert_eq!(j["member"]["user"]["id"], b);
    cy.ok("invite_join", json!({"code": code})).await?;
    for m in [&mut ada, &mut bob] {
        m.event_where("member_joined", |e| e["member"]["user"]["id"] == c)
            .await?;
    }
    let cid = ada
        .ok(
            "channel_create",
            json!({"server": sid, "name": "Stage", "max_participants": 5}),
        )
        .await?["channel"]["id"]
        .clone();
    for m in [&mut bob, &mut cy] {
        m.event("channel_created").await?;
    }
    // Ids come from the one database: every node sees the same server.
    let info = cy.ok("server_info", json!({"server": sid})).await?["server"].clone();
    assert_eq!(info["name"], "Club");
    assert_eq!(info["members"].as_array().map(Vec::len), Some(3));

    // Rosters and signalling across nodes.
    bob.ok("channel_join", json!({"channel": cid})).await?;
    for m in [&mut ada, &mut cy] {
        let e = m.event("roster_join").await?;
        assert_eq!(e["entry"]["user"]["id"], b);
    }
    let joined = cy.ok("channel_join", json!({"channel": cid})).await?;
    assert_eq!(
        joined["channel"]["roster"].as_array().map(Vec::len),
        Some(2)
    );
    ada.event_where("roster_join", |e| e["entry"]["user"]["id"] == c)
        .await?;
    bob.event_where("roster_join", |e| e["entry"]["user"]["id"] == c)
        .await?;
    cy.ok(
        "signal",
        json!({"to": b, "scope": {"channel": cid}, "payload": {"kind": "offer", "sdp": "v=0"}}),
    )
    .await?;
    let got = bob.event("signal").await?;
    assert_eq!(got["from"], c);
    bob.ok(
        "signal",
        json!({"to": c, "scope": {"channel": cid}, "payload": {"kind": "answer", "sdp": "v=0"}}),
    )
    .await?;
    assert_eq!(cy.event("signal").await?["from"], b);
    // Presence follows the channel, across nodes.
    let p = ada
        .event_where("presence", |e| {
            e["user"] == c && e["presence"]["channel"]["channel"] == cid
        })
        .await?;
    assert_eq!(p["presence"]["status"], "online");

    // A new node cannot join a cluster that runs with live state: it exits with the reason.
    let bin = workspace_bin("hum-relay", "hum-relay")?;
    let late_dir = tempfile::tempdir()?;
    let mut late_args: Vec<String> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data".into(),
        late_dir.path().display().to_string(),
        "--node-id".into(),
        "late".into(),
    ];
    late_args.extend(cluster.args.iter().cloned());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args(late_args)
            .env("RUST_LOG", "error")
            .output()
    })
    .await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "a late node must not start");
    ensure!(
        stderr.contains("running with live state"),
        "late node: {stderr}"
    );

    // Node 3 dies (SIGKILL): once its announcement expires the others end Cy's session.
    let dead = cluster.nodes.remove(2);
    dead.kill();
    let gone = ada
        .event_where("roster_leave", |e| e["user"] == c)
        .await
        .context("node 3's client leaves the roster when node 3 dies")?;
    assert_eq!(gone["channel"], cid);
    bob.event_where("roster_leave", |e| e["user"] == c).await?;
    ada.event_where("presence", |e| {
        e["user"] == c && e["presence"]["status"] == "offline"
    })
    .await?;

    // Cy moves to node 1 and rejoins: nothing stored was lost.
    let mut cy = Client::login(a1, 3, "Cy").await?;
    let servers = cy.ok("server_list", json!({})).await?;
    assert_eq!(servers["servers"][0]["id"], sid);
    cy.ok("channel_join", json!({"channel": cid})).await?;
    bob.event_where("roster_join", |e| e["entry"]["user"]["id"] == c)
        .await?;
    ada.event_where("presence", |e| {
        e["user"] == c && e["presence"]["status"] == "online"
    })
    .await?;
    // The survivors are unaffected: node 2's client still signals node 1's.
    bob.ok(
        "signal",
        json!({"to": c, "scope": {"channel": cid}, "payload": {"kind": "offer", "sdp": "v=0"}}),
    )
    .await?;
    assert_eq!(cy.event("signal").await?["from"], b);
    Ok(())
}

/// `hum --relay URL --identity ID --json ARGS...`, run to completion.
fn hum(bin: &Path, url: &str, identity: &Path, args: &[&str]) -> Result<Value> {
    let out = hum_cmd(bin, url, identity, args)
        .output()
        .context("running hum")?;
    if !out.status.success() {
        bail!(
            "hum {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("hum {args:?}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn hum_cmd(bin: &Path, url: &str, identity: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.arg("--relay")
        .arg(url)
        .arg("--identity")
        .arg(identity)
        .arg("--json")
        .args(args)
        .env(
            "HUM_LOG",
            std::env::var("HUM_TEST_LOG").unwrap_or_else(|_| "error".into()),
        );
    c
}

#[test]
fn a_mesh_voice_channel_spans_two_nodes_and_both_hear_each_other() -> Result<()> {
    let _serial = hum_tests::voice::SERIAL
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start("voice", 2)?;
    let urls: Vec<String> = cluster.nodes.iter().map(Relay::ws_url).collect();
    let bin = workspace_bin("hum-cli", "hum")?;
    let dir = tempfile::tempdir()?;
    let id: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("id{i}.json")))
        .collect();
    let mut users = Vec::new();
    for i in 0..2 {
        let v = hum(
            &bin,
            &urls[i],
            &id[i],
            &["identity", "create", "--name", &format!("user{i}")],
        )?;
        users.push(v["user"].as_str().context("user id")?.to_string());
    }
    // User 0 on node 0 makes the server; user 1 on node 1 joins it.
    hum(&bin, &urls[0], &id[0], &["server", "create", "Guild"])?;
    let invite = hum(&bin, &urls[0], &id[0], &["server", "invite", "Guild"])?;
    let code = invite["code"].as_str().context("invite code")?.to_string();
    hum(
        &bin,
        &urls[0],
        &id[0],
        &["channel", "create", "--server", "Guild", "Lounge"],
    )?;
    hum(&bin, &urls[1], &id[1], &["server", "join", &code])?;

    let chirp = chirp_file(&dir.path().join("chirp.wav"))?;
    let rec: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("rec{i}.wav")))
        .collect();
    let voice = |i: usize, extra: &[&str]| -> Result<KillOnDrop> {
        let log = std::fs::File::create(dir.path().join(format!("events{i}.jsonl")))?;
        let mut args = vec![
            "voice",
            "join",
            "--server",
            "Guild",
            "--channel",
            "Lounge",
            "--bind",
            "127.0.0.1:0",
            "--record",
            s(&rec[i]),
            "--duration",
            "7s",
        ];
        args.extend_from_slice(extra);
        let child = hum_cmd(&bin, &urls[i], &id[i], &args)
            .stdout(log)
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning hum voice join")?;
        Ok(KillOnDrop(child))
    };
    let chirp_path = dir.path().join("chirp.wav");
    let mut a = voice(0, &["--play", s(&chirp_path)])?;
    let mut b = voice(1, &["--tone", "800"])?;
    wait_exit(&mut a, Duration::from_secs(30))?;
    wait_exit(&mut b, Duration::from_secs(30))?;

    // Node 1's member heard node 0's chirp (the waveform, by correlation)...
    let heard = read_wav(&rec[1])?;
    let m = find(&heard, &chirp).context("user 1 recorded nothing")?;
    ensure!(
        m.correlation > 0.9,
        "chirp not in user 1's recording: {m:?}"
    );
    // ...and node 0's heard node 1's tone.
    let heard = read_wav(&rec[0])?;
    let tail = &heard[heard.len() / 2..];
    let share = tone_share(tail, 800.0, 0.7);
    ensure!(share > 0.9, "user 0 does not hear user 1's tone: {share}");
    for (i, other) in [(0, 1), (1, 0)] {
        let events: Vec<Value> =
            std::fs::read_to_string(dir.path().join(format!("events{i}.jsonl")))?
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
        ensure!(
            events
                .iter()
                .any(|e| e["type"] == "peer_connected" && e["user"] == users[other]),
            "user {i} never connected to user {other}: {events:?}"
        );
    }
    drop(cluster);
    Ok(())
}
