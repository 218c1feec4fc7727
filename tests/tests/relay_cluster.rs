//! Several `hum-relay` processes acting as one (docs/cluster.md): one throwaway PostgreSQL and
//! one throwaway Redis (started by the test, `hum_relay::store::testing`), each relay started
//! with `--store postgres://... --redis ...`. Clients on different nodes become friends, see
//! each other's presence, share a server, its channels and rosters, signal each other, and talk
//! in a mesh voice channel (real `hum voice join` processes, audio checked). A node killed with
//! SIGKILL: the others end its sessions (presence offline, roster leave) once its announcement
//! expires, its client logs in on another node and rejoins (and its voice comes back), and a new
//! node cannot join a cluster that is running with live state.

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
        Cluster::start_with(test, n, &[])
    }

    /// Like [`Cluster::start`], every node also given `extra` arguments.
    fn start_with(test: &str, n: usize, extra: &[&str]) -> Result<Cluster> {
        let db = TempPostgres::shared()
            .create_database()
            .map_err(anyhow::Error::msg)?;
        let redis = TempRedis::shared().url();
        let mut args = vec![
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
        args.extend(extra.iter().map(|a| a.to_string()));
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

// ---------------------------------------------------------------------------------------------
// The 5,000-member server benchmark (issue 17): how long it takes to bring 5,000 members into
// one server (log in, join by invite, sit in a voice channel of 8) with clients that subscribe
// lazily, on one SQLite node and on three cluster nodes. Not a pass/fail test: it prints the
// time; docs/cluster.md has the numbers and the command.
//
//   cargo test -p hum-tests --test relay_cluster -- --ignored --nocapture bench_5000
//   HUM_BENCH_MEMBERS=1000 ... (a smaller run)

/// A lean raw-JSON WebSocket client for the benchmark: thousands live in one process, each
/// counting the events it hears instead of keeping them.
struct Lean {
    ws: futures_util::stream::SplitSink<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        tokio_tungstenite::tungstenite::Message,
    >,
    rx: futures_util::stream::SplitStream<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    >,
    next_id: u64,
    /// Events heard so far, by type.
    events: std::collections::BTreeMap<String, u64>,
}

/// The benchmark's member `i`: an Ed25519 key of its own (any number of them, unlike `key(u8)`).
fn member_key(i: usize) -> ed25519_dalek::SigningKey {
    let mut seed = [0x5au8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    ed25519_dalek::SigningKey::from_bytes(&seed)
}

impl Lean {
    async fn login(addr: std::net::SocketAddr, i: usize) -> Result<Lean> {
        use ed25519_dalek::Signer;
        use futures_util::StreamExt;
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await?;
        let (ws, rx) = ws.split();
        let mut c = Lean {
            ws,
            rx,
            next_id: 1,
            events: Default::default(),
        };
        let key = member_key(i);
        let challenge = c
            .ok(
                "hello",
                json!({"protocol": hum_proto::signal::PROTOCOL_VERSION}),
            )
            .await?;
        let nonce: hum_proto::Nonce = serde_json::from_value(challenge["nonce"].clone())?;
        let sig = key.sign(&hum_proto::signal::login_signing_bytes(&nonce));
        let user = hum_proto::UserId(key.verifying_key().to_bytes()).to_hex();
        let sig: String = sig.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
        c.ok(
            "login",
            json!({"public_key": user, "signature": sig, "display_name": format!("m{i}")}),
        )
        .await?;
        Ok(c)
    }

    /// A request that must succeed; events read meanwhile are counted.
    async fn ok(&mut self, ty: &str, fields: Value) -> Result<Value> {
        use futures_util::SinkExt;
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = match fields {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        msg.insert("id".into(), json!(id));
        msg.insert("type".into(), json!(ty));
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::Text(
                Value::Object(msg).to_string().into(),
            ))
            .await?;
        loop {
            let m = self.next().await?.context("closed")?;
            match m["type"].as_str() {
                Some("event") => self.count(&m),
                Some("reply") if m["re"] == id => return Ok(m["reply"].clone()),
                _ => bail!("`{ty}` failed: {m}"),
            }
        }
    }

    fn count(&mut self, m: &Value) {
        let ty = m["event"]["type"].as_str().unwrap_or("?").to_string();
        *self.events.entry(ty).or_default() += 1;
    }

    /// The next text frame (None: closed).
    async fn next(&mut self) -> Result<Option<Value>> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match tokio::time::timeout(Duration::from_secs(120), self.rx.next())
                .await
                .context("nothing from the relay for 120 s")?
            {
                None => return Ok(None),
                Some(Ok(Message::Text(t))) => return Ok(Some(serde_json::from_str(&t)?)),
                Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("connection error: {e}"),
            }
        }
    }

    /// Read (and count) events until `done` says so or the connection closes.
    async fn drain_until(&mut self, done: impl Fn(&Self) -> bool) -> Result<()> {
        while !done(self) {
            match self.next().await? {
                Some(m) if m["type"] == "event" => self.count(&m),
                Some(m) => bail!("unexpected frame: {m}"),
                None => bail!("closed"),
            }
        }
        Ok(())
    }

    fn heard(&self, ty: &str) -> u64 {
        self.events.get(ty).copied().unwrap_or(0)
    }
}

/// Bring `members` members into one server made on `nodes[0]`, member `i` on node
/// `i % nodes.len()`, each logging in, subscribing to nothing (lazy: the app open on another
/// screen), joining by invite and taking a seat in a voice channel of 8. One watcher per node
/// subscribes to the server (it is on screen there) and must hear every join. Returns seconds
/// from the first member's connect to the last join heard by every watcher.
async fn five_thousand(nodes: &[std::net::SocketAddr], members: usize) -> Result<f64> {
    const PER_CHANNEL: usize = 8;
    let mut owner = Lean::login(nodes[0], 0).await?;
    let sid = owner.ok("server_create", json!({"name": "Big"})).await?["server"]["id"].clone();
    let code = owner.ok("invite_create", json!({"server": sid})).await?["invite"]["code"].clone();
    let mut channels = Vec::new();
    for c in 0..members.div_ceil(PER_CHANNEL) {
        let ch = owner
            .ok(
                "channel_create",
                json!({"server": sid, "name": format!("room-{c}"), "max_participants": PER_CHANNEL}),
            )
            .await?;
        channels.push(ch["channel"]["id"].clone());
    }
    owner.ok("subscribe", json!({"servers": [sid]})).await?;
    // Watchers: members too, looking at the server.
    let mut watchers = Vec::new();
    for (n, addr) in nodes.iter().enumerate() {
        let mut w = Lean::login(*addr, 1_000_000 + n).await?;
        w.ok("invite_join", json!({"code": code})).await?;
        w.ok("subscribe", json!({"servers": [sid]})).await?;
        watchers.push(w);
    }
    // Joins a watcher hears from here on: every member, and the watchers after it.
    let expect: Vec<u64> = (0..watchers.len())
        .map(|n| (members + watchers.len() - 1 - n) as u64)
        .collect();
    for w in &mut watchers {
        *w.events.entry("member_joined".into()).or_default() = 0;
    }
    let start = std::time::Instant::now();
    let watching: Vec<_> = watchers
        .into_iter()
        .zip(expect)
        .map(|(mut w, want)| {
            tokio::spawn(async move {
                w.drain_until(|w| w.heard("member_joined") >= want).await?;
                anyhow::Ok(w)
            })
        })
        .collect();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
    let mut joins = Vec::with_capacity(members);
    for i in 1..=members {
        let permit = sem.clone().acquire_owned().await?;
        let addr = nodes[i % nodes.len()];
        let (code, sid) = (code.clone(), sid.clone());
        let channel = channels[(i - 1) / PER_CHANNEL].clone();
        joins.push(tokio::spawn(async move {
            let mut m = Lean::login(addr, i).await?;
            m.ok("subscribe", json!({"servers": []})).await?;
            let s = m.ok("invite_join", json!({"code": code})).await?;
            ensure!(s["server"]["id"] == sid);
            // Not watching it, the member gets a summary, not 625 channels.
            ensure!(
                s["server"]["channels"]
                    .as_array()
                    .is_some_and(Vec::is_empty)
                    && s["server"]["channel_count"].is_u64(),
                "a lazy member's invite_join reply is not a summary: {}",
                s["server"]["channel_count"]
            );
            m.ok("channel_join", json!({"channel": channel})).await?;
            drop(permit);
            anyhow::Ok(m)
        }));
    }
    let mut seated = Vec::with_capacity(members);
    for j in joins {
        seated.push(j.await??);
    }
    let all_seated = start.elapsed().as_secs_f64();
    let mut heard = Vec::new();
    for w in watching {
        let w = w.await??;
        heard.push((w.heard("member_joined"), w.heard("roster_join")));
    }
    let secs = start.elapsed().as_secs_f64();
    // A lazy member hears its own channel's roster, not the server's member changes.
    let max_joined = seated.iter().map(|m| m.heard("member_joined")).max();
    let max_roster = seated.iter().map(|m| m.heard("roster_join")).max();
    eprintln!(
        "{members} members on {} node(s): all seated in {all_seated:.1} s, every watcher heard \
         every join in {secs:.1} s; watchers heard (member_joined, roster_join) {heard:?}; a lazy \
         member heard at most {max_joined:?} member_joined and {max_roster:?} roster_join",
        nodes.len()
    );
    ensure!(max_joined == Some(0), "lazy members heard member joins");
    Ok(secs)
}

fn bench_members() -> usize {
    std::env::var("HUM_BENCH_MEMBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000)
}

/// The owner makes a channel per 8 members at once: past the default request burst.
const BENCH_RELAY_ARGS: &[&str] = &["--burst", "2000", "--rate", "1000"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints the 5,000-member setup time (docs/cluster.md)"]
async fn bench_5000_members_one_node() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut args = vec!["--sfu-bind", "off"];
    args.extend_from_slice(BENCH_RELAY_ARGS);
    let relay = Relay::start(dir.path(), &args)?;
    five_thousand(&[relay.addr], bench_members()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints the 5,000-member setup time (docs/cluster.md)"]
async fn bench_5000_members_three_nodes() -> Result<()> {
    let cluster = Cluster::start_with("bench", 3, BENCH_RELAY_ARGS)?;
    let addrs: Vec<_> = cluster.nodes.iter().map(|n| n.addr).collect();
    five_thousand(&addrs, bench_members()).await?;
    Ok(())
}

/// An engine identity with a one-byte seed.
fn engine_identity(seed: u8, name: &str) -> hum_engine::Identity {
    hum_engine::Identity::from_seed(
        [seed; 32],
        hum_proto::signal::DisplayName::new(name).expect("test names are valid"),
    )
}

fn engine_config(url: &str) -> hum_engine::RelayConfig {
    let mut c = hum_engine::RelayConfig::new(url);
    c.backoff_min = Duration::from_millis(100);
    c.backoff_max = Duration::from_millis(500);
    c
}

/// The next relay event `pick` accepts (others are skipped, unless `refuse` names them).
async fn engine_event<T>(
    rx: &mut tokio::sync::broadcast::Receiver<hum_engine::ClientEvent>,
    what: &str,
    refuse: impl Fn(&hum_proto::signal::Event) -> bool,
    pick: impl Fn(&hum_proto::signal::Event) -> Option<T>,
) -> Result<T> {
    loop {
        let e = tokio::time::timeout(hum_tests::relay::WAIT, rx.recv())
            .await
            .with_context(|| format!("waiting for {what}"))??;
        if let hum_engine::ClientEvent::Relay(ev) = e {
            ensure!(!refuse(&ev), "while waiting for {what}: {ev:?}");
            if let Some(t) = pick(&ev) {
                return Ok(t);
            }
        }
    }
}

/// The engine watches only the server on screen (`watch_servers`): across two nodes it hears
/// roster and member changes of that server and none of the other server it is in, pages
/// through members with `member_list`, and hears everything again when it watches both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_watching_one_server_hears_only_its_rosters() -> Result<()> {
    use hum_engine::RelayClient;
    use hum_proto::signal::{Event, Name, VoiceState};
    let cluster = Cluster::start("watch", 2)?;
    let urls: Vec<String> = cluster.nodes.iter().map(Relay::ws_url).collect();
    let ada = RelayClient::connect(engine_identity(1, "Ada"), engine_config(&urls[0])).await?;
    let bob = RelayClient::connect(engine_identity(2, "Bob"), engine_config(&urls[0])).await?;
    let cy = RelayClient::connect(engine_identity(3, "Cy"), engine_config(&urls[1])).await?;
    let mut ids = Vec::new();
    for name in ["Shown", "Hidden"] {
        let s = ada.server_create(Name::new(name)?).await?;
        let ch = ada
            .channel_create(s.id, Name::new("Room")?, Some(8), None)
            .await?;
        let invite = ada.invite_create(s.id, None, None).await?;
        bob.invite_join(invite.code.clone()).await?;
        cy.invite_join(invite.code.clone()).await?;
        ids.push((s.id, ch.id, invite));
    }
    let [(shown, shown_ch, _), (hidden, hidden_ch, hidden_invite)] =
        <[_; 2]>::try_from(ids).map_err(|_| anyhow::anyhow!("two servers"))?;

    // Cy (node 2) looks at "Shown" only. Before that it saw everything in full; after, the
    // hidden server is listed by name unless it holds Cy's voice channel.
    let entry_ids = |entries: &[hum_engine::ServerEntry]| {
        entries
            .iter()
            .map(|e| match e {
                hum_engine::ServerEntry::Shown(s) => (s.id, true),
                hum_engine::ServerEntry::Listed(s) => (s.id, false),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(cy.watched(), None);
    let all = cy.servers_shown(None).await?;
    assert_eq!(entry_ids(&all), vec![(shown, true), (hidden, true)]);
    cy.watch_servers(vec![shown]).await?;
    assert_eq!(cy.watched(), Some(vec![shown]));
    let some = cy.servers_shown(None).await?;
    assert_eq!(entry_ids(&some), vec![(shown, true), (hidden, false)]);
    let with_voice = cy.servers_shown(Some(hidden)).await?;
    assert_eq!(entry_ids(&with_voice), vec![(shown, true), (hidden, true)]);
    let mut rx = cy.subscribe();
    let is_hidden = |e: &Event| match e {
        Event::RosterJoin { server, .. }
        | Event::RosterLeave { server, .. }
        | Event::MemberJoined { server, .. } => *server == hidden,
        _ => false,
    };
    // Bob (node 1) sits in the hidden server's channel, then a newcomer joins it: Cy hears
    // neither. Then Bob moves to the shown server's channel: Cy hears that join, and nothing of
    // the hidden server came before it (one connection's events arrive in order).
    bob.channel_join(hidden_ch, VoiceState::default()).await?;
    let dee = RelayClient::connect(engine_identity(4, "Dee"), engine_config(&urls[0])).await?;
    dee.invite_join(hidden_invite.code.clone()).await?;
    bob.channel_join(shown_ch, VoiceState::default()).await?;
    let who = engine_event(
        &mut rx,
        "Bob's roster_join in the shown server",
        is_hidden,
        |e| match e {
            Event::RosterJoin { server, entry, .. } if *server == shown => Some(entry.user.id),
            _ => None,
        },
    )
    .await?;
    assert_eq!(who, bob.user_id());

    // "Hidden" has 4 members (Ada, Bob, Cy, Dee): two pages of 2.
    let (page, next) = cy.member_page(hidden, None, Some(2)).await?;
    assert_eq!(page.len(), 2);
    let next = next.context("a second page")?;
    let (rest, last) = cy.member_page(hidden, Some(next), Some(2)).await?;
    assert_eq!((rest.len(), last), (2, None));
    let all = cy.members(hidden).await?;
    assert_eq!(all.len(), 4);
    let mut seen: Vec<_> = page.iter().chain(&rest).map(|m| m.user.id).collect();
    seen.sort();
    let mut want: Vec<_> = all.iter().map(|m| m.user.id).collect();
    want.sort();
    assert_eq!(seen, want, "the pages walk every member once");

    // Watching both: the hidden server's changes come again.
    cy.watch_servers(vec![shown, hidden]).await?;
    dee.channel_join(hidden_ch, VoiceState::default()).await?;
    let who = engine_event(
        &mut rx,
        "Dee's roster_join in the hidden server",
        |_| false,
        |e| match e {
            Event::RosterJoin { server, entry, .. } if *server == hidden => Some(entry.user.id),
            _ => None,
        },
    )
    .await?;
    assert_eq!(who, dee.user_id());
    Ok(())
}

/// The next client event `pick` accepts; any event `refuse` names fails the wait. The bound
/// is on the whole wait (a client retrying forever emits state events all along), and only
/// stops a broken test.
async fn client_event<T>(
    rx: &mut tokio::sync::broadcast::Receiver<hum_engine::ClientEvent>,
    what: &str,
    refuse: impl Fn(&hum_engine::ClientEvent) -> bool,
    pick: impl Fn(&hum_engine::ClientEvent) -> Option<T>,
) -> Result<T> {
    let deadline = tokio::time::Instant::now() + hum_tests::relay::WAIT * 3;
    loop {
        let e = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .with_context(|| format!("waiting for {what}"))??;
        ensure!(!refuse(&e), "while waiting for {what}: {e:?}");
        if let Some(t) = pick(&e) {
            return Ok(t);
        }
    }
}

/// Node loss (issue 17, docs/cluster.md "Node loss"): an engine client given only node 0's URL
/// sits in a voice channel with members on nodes 1 and 2. Node 0 is killed (SIGKILL). The client
/// moves to another node by itself (it learned the nodes from the `nodes` event), re-joins its
/// channel, and both other members see it back in the roster while staying connected where they
/// were. Nothing stored is lost: the server, channel, friendship and invite are all there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_client_moves_to_another_node_and_rejoins_its_channel() -> Result<()> {
    use hum_engine::{ClientEvent, ConnectionState, RelayClient};
    use hum_proto::signal::{Event, Name, VoiceState};
    let mut cluster = Cluster::start("move", 3)?;
    let urls: Vec<String> = cluster.nodes.iter().map(Relay::ws_url).collect();
    let ada = RelayClient::start(engine_identity(1, "Ada"), engine_config(&urls[0]));
    let mut ada_rx = ada.subscribe();
    ada.wait_connected().await?;
    assert_eq!(ada.node_url().as_deref(), Some(urls[0].as_str()));
    // Ada hears the three nodes (one `nodes` event after its welcome, more as nodes come up).
    let mut want = urls.clone();
    want.sort();
    client_event(
        &mut ada_rx,
        "the three nodes",
        |_| false,
        |e| match e {
            ClientEvent::Relay(Event::Nodes { nodes }) => {
                let mut got: Vec<String> = nodes.iter().map(|n| n.ws_url.clone()).collect();
                got.sort();
                (got == want).then_some(())
            }
            _ => None,
        },
    )
    .await?;
    let bob = RelayClient::connect(engine_identity(2, "Bob"), engine_config(&urls[1])).await?;
    let cy = RelayClient::connect(engine_identity(3, "Cy"), engine_config(&urls[2])).await?;
    let mut bob_rx = bob.subscribe();
    let mut cy_rx = cy.subscribe();

    // Stored: a friendship, a server with a channel, an invite.
    ada.friend_request(bob.user_id()).await?;
    client_event(
        &mut bob_rx,
        "Ada's friend request",
        |_| false,
        |e| matches!(e, ClientEvent::Relay(Event::FriendRequestReceived { .. })).then_some(()),
    )
    .await?;
    bob.friend_accept(ada.user_id()).await?;
    let server = ada.server_create(Name::new("Club")?).await?;
    let room = ada
        .channel_create(server.id, Name::new("Room")?, Some(8), None)
        .await?;
    let invite = ada.invite_create(server.id, None, None).await?;
    bob.invite_join(invite.code.clone()).await?;
    cy.invite_join(invite.code.clone()).await?;

    // Ada (node 0), then Bob (node 1) and Cy (node 2) sit in the room. Bob and Cy hear Ada's
    // first join here, so the one after the kill is her re-join.
    let is_ada_join = |e: &ClientEvent| match e {
        ClientEvent::Relay(Event::RosterJoin { channel, entry, .. }) => {
            (*channel == room.id && entry.user.id == ada.user_id()).then_some(())
        }
        _ => None,
    };
    ada.channel_join(room.id, VoiceState::default()).await?;
    client_event(&mut bob_rx, "Ada's join (Bob)", |_| false, is_ada_join).await?;
    client_event(&mut cy_rx, "Ada's join (Cy)", |_| false, is_ada_join).await?;
    bob.channel_join(room.id, VoiceState::default()).await?;
    let (joined, _) = cy.channel_join(room.id, VoiceState::default()).await?;
    assert_eq!(joined.roster.len(), 3);

    // Node 0 dies.
    let killed = std::time::Instant::now();
    cluster.nodes.remove(0).kill();
    let channel = client_event(
        &mut ada_rx,
        "Ada's client re-joining on another node",
        |e| matches!(e, ClientEvent::RejoinFailed { .. }),
        |e| match e {
            ClientEvent::Rejoined { channel } => Some(channel.clone()),
            _ => None,
        },
    )
    .await?;
    let rejoined = killed.elapsed();
    let on = ada.node_url().context("Ada is logged in somewhere")?;
    ensure!(
        on == urls[1] || on == urls[2],
        "Ada should be on node 1 or 2, is on {on}"
    );
    assert_eq!(channel.id, room.id);
    let mut roster: Vec<_> = channel.roster.iter().map(|r| r.user.id).collect();
    roster.sort();
    let mut everyone = vec![ada.user_id(), bob.user_id(), cy.user_id()];
    everyone.sort();
    assert_eq!(roster, everyone, "Ada is back with Bob and Cy");

    // The others see her back, and were never disconnected themselves.
    let lost = |e: &ClientEvent| {
        matches!(
            e,
            ClientEvent::State(
                ConnectionState::Disconnected { .. } | ConnectionState::Connecting { .. }
            )
        )
    };
    client_event(&mut bob_rx, "Ada back in Bob's roster", lost, is_ada_join).await?;
    client_event(&mut cy_rx, "Ada back in Cy's roster", lost, is_ada_join).await?;
    let seen = killed.elapsed();
    assert_eq!(bob.node_url().as_deref(), Some(urls[1].as_str()));
    assert_eq!(cy.node_url().as_deref(), Some(urls[2].as_str()));
    eprintln!(
        "node loss: Ada re-joined on {on} {:.0} ms after the kill; both others saw her back after {:.0} ms",
        rejoined.as_secs_f64() * 1000.0,
        seen.as_secs_f64() * 1000.0
    );

    // Nothing stored was lost.
    let servers = ada.servers().await?;
    ensure!(servers.iter().any(|s| s.id == server.id), "{servers:?}");
    let friends = ada.friends().await?;
    ensure!(
        friends.friends.iter().any(|f| f.user.id == bob.user_id()),
        "{friends:?}"
    );
    let channels = ada.channels(server.id).await?;
    ensure!(channels.iter().any(|c| c.id == room.id), "{channels:?}");
    let dee = RelayClient::start(engine_identity(4, "Dee"), engine_config(&on));
    let mut dee_rx = dee.subscribe();
    dee.wait_connected().await?;
    dee.invite_join(invite.code.clone()).await?;
    // Node 0 drops out of the list (at once, or when its announcement expires).
    let mut alive = vec![urls[1].clone(), urls[2].clone()];
    alive.sort();
    client_event(
        &mut dee_rx,
        "the two live nodes",
        |_| false,
        |e| match e {
            ClientEvent::Relay(Event::Nodes { nodes }) => {
                let mut got: Vec<String> = nodes.iter().map(|n| n.ws_url.clone()).collect();
                got.sort();
                (got == alive).then_some(())
            }
            _ => None,
        },
    )
    .await?;
    Ok(())
}

/// Node loss with audio (issue 17): Ada on node 0 and Bob on node 1 talk in a mesh channel (real
/// WebRTC, each sending a tone). Node 0 is killed: Ada's client moves to node 1 by itself and
/// re-joins; Bob hears her leave and come back and makes a new connection, while Ada still holds
/// her old one. Audio must come back both ways (docs/voice.md, "A member whose relay session
/// moved").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voice_comes_back_after_a_members_node_dies() -> Result<()> {
    use hum_tests::talker::{Talker, both_hear, room_for_two};
    let mut cluster = Cluster::start("voicemove", 2)?;
    let urls: Vec<String> = cluster.nodes.iter().map(Relay::ws_url).collect();
    let mut ada = Talker::start(&urls[0], 1, "Ada", 440.0).await?;
    let mut bob = Talker::start(&urls[1], 2, "Bob", 660.0).await?;
    let room = room_for_two(&mut ada, &mut bob).await?;
    both_hear(&ada, &bob, (0, 0)).await?;

    let killed = std::time::Instant::now();
    cluster.nodes.remove(0).kill();
    ada.rejoined(room).await?;
    bob.sees_join(room, ada.id()).await?;
    let back = killed.elapsed();
    ensure!(
        ada.client.node_url().as_deref() == Some(urls[1].as_str()),
        "Ada should be on node 1, is on {:?}",
        ada.client.node_url()
    );
    let since = (ada.played(), bob.played());
    let wait = both_hear(&ada, &bob, since).await?;
    eprintln!(
        "node 0 killed: Ada back in the channel on node 1 after {:.0} ms; both hear each other again {:.0} ms later ({} the smaller id)",
        back.as_secs_f64() * 1000.0,
        wait.as_secs_f64() * 1000.0,
        if ada.id() < bob.id() {
            "Ada has"
        } else {
            "Bob has"
        },
    );
    ada.stop().await;
    bob.stop().await;
    Ok(())
}
