//! The Rust relay client (hum-engine) and the `hum` CLI against a real relay process.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hum_engine::{ClientEvent, ConnectionState, Identity, RelayClient, RelayConfig};
use hum_proto::signal::{DisplayName, ErrorCode, Name, VoiceState, VoiceStatePatch};
use hum_tests::relay::Relay;
use hum_tests::workspace_bin;
use serde_json::Value;

fn identity(seed: u8, name: &str) -> Identity {
    Identity::from_seed(
        [seed; 32],
        DisplayName::new(name).expect("test names are valid"),
    )
}

fn config(relay: &Relay) -> RelayConfig {
    let mut c = RelayConfig::new(relay.ws_url());
    c.backoff_min = Duration::from_millis(100);
    c.backoff_max = Duration::from_millis(500);
    c.request_timeout = Duration::from_secs(5);
    c
}

/// Wait for the first event that `pick` accepts.
async fn wait_for<T>(
    rx: &mut tokio::sync::broadcast::Receiver<ClientEvent>,
    what: &str,
    mut pick: impl FnMut(&ClientEvent) -> Option<T>,
) -> Result<T> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let e = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .with_context(|| format!("timed out waiting for {what}"))??;
        if let Some(t) = pick(&e) {
            return Ok(t);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reconnects_after_relay_restart_and_rejoins_its_channel() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &[])?;
    let addr = relay.addr;

    let alice = RelayClient::connect(identity(1, "alice"), config(&relay)).await?;
    let bob = RelayClient::connect(identity(2, "bob"), config(&relay)).await?;
    let server = alice.server_create(Name::new("Lounge")?).await?;
    let channel = alice
        .channel_create(server.id, Name::new("General")?, Some(4), None)
        .await?;
    let invite = alice.invite_create(server.id, Some(1), None).await?;
    bob.invite_join(invite.code).await?;
    alice
        .channel_join(channel.id, VoiceState::default())
        .await?;
    let (joined, perms) = bob.channel_join(channel.id, VoiceState::default()).await?;
    assert!(perms.speak);
    assert_eq!(joined.roster.len(), 2);
    bob.voice_update(VoiceStatePatch {
        muted: Some(true),
        ..Default::default()
    })
    .await?;

    let mut alice_rx = alice.subscribe();
    let mut bob_rx = bob.subscribe();
    relay.kill();

    // While the relay is down, requests fail at once instead of hanging.
    wait_for(&mut bob_rx, "bob to notice the relay is gone", |e| {
        matches!(e, ClientEvent::State(ConnectionState::Disconnected { .. })).then_some(())
    })
    .await?;
    let err = bob.ping().await.unwrap_err();
    assert!(err.to_string().contains("not connected"), "{err}");

    // Same address, same data: accounts, server and channel survive; presence is rebuilt by
    // the clients re-joining.
    let relay = Relay::start_at(dir.path(), &addr.to_string(), &[])?;
    for (rx, who) in [(&mut alice_rx, "alice"), (&mut bob_rx, "bob")] {
        let rejoined = wait_for(rx, &format!("{who} to re-join"), |e| match e {
            ClientEvent::Rejoined { channel } => Some(channel.clone()),
            ClientEvent::RejoinFailed { reason, .. } => panic!("{who} could not re-join: {reason}"),
            _ => None,
        })
        .await?;
        assert_eq!(rejoined.id, channel.id);
    }
    let channels = alice.channels(server.id).await?;
    let roster = &channels[0].roster;
    assert_eq!(roster.len(), 2, "{roster:?}");
    let bob_entry = roster
        .iter()
        .find(|r| r.user.id == bob.user_id())
        .context("bob missing from the rebuilt roster")?;
    assert!(bob_entry.voice.muted, "bob's mute survived the reconnect");

    // After leaving, a reconnect does not put bob back.
    bob.channel_leave().await?;
    drop(relay);
    wait_for(&mut bob_rx, "bob to notice the second restart", |e| {
        matches!(e, ClientEvent::State(ConnectionState::Disconnected { .. })).then_some(())
    })
    .await?;
    let _relay = Relay::start_at(dir.path(), &addr.to_string(), &[])?;
    wait_for(&mut bob_rx, "bob to reconnect", |e| {
        matches!(e, ClientEvent::State(ConnectionState::Connected { .. })).then_some(())
    })
    .await?;
    wait_for(&mut alice_rx, "alice to re-join", |e| {
        matches!(e, ClientEvent::Rejoined { .. }).then_some(())
    })
    .await?;
    let roster = alice.channels(server.id).await?.remove(0).roster;
    assert_eq!(roster.len(), 1, "only alice is back: {roster:?}");
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn typed_errors_reach_the_caller() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &[])?;
    let alice = RelayClient::connect(identity(3, "alice"), config(&relay)).await?;
    let bob = identity(4, "bob").user_id();
    let err = alice.call_invite(bob).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFriends), "{err}");
    let err = alice
        .server_info(hum_proto::ServerId(999))
        .await
        .unwrap_err();
    assert!(err.code().is_some(), "{err}");
    alice.ping().await?;
    Ok(())
}

#[tokio::test]
async fn connect_reports_an_unreachable_relay() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = RelayClient::connect(
        identity(5, "carol"),
        RelayConfig::new(format!("ws://127.0.0.1:{port}/ws")),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("cannot reach the relay"), "{err}");
}

/// Run `hum` with an identity file and the relay; `Ok(stdout)` on success.
fn hum(relay: &str, identity: &std::path::Path, args: &[&str]) -> Result<String> {
    let out = Command::new(workspace_bin("hum-cli", "hum")?)
        .arg("--relay")
        .arg(relay)
        .arg("--identity")
        .arg(identity)
        .args(args)
        .output()
        .context("running hum")?;
    if !out.status.success() {
        bail!(
            "hum {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn json(s: &str) -> Result<Value> {
    serde_json::from_str(s).with_context(|| format!("not JSON: {s}"))
}

#[test]
fn cli_sets_up_friends_servers_and_channels() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &[])?;
    let url = relay.ws_url();
    let alice = dir.path().join("alice.json");
    let bob = dir.path().join("bob.json");

    // Without an identity the CLI says what to do.
    let err = hum(&url, &alice, &["whoami"]).unwrap_err().to_string();
    assert!(err.contains("hum identity create"), "{err}");

    let a = json(&hum(
        &url,
        &alice,
        &["--json", "identity", "create", "--name", "alice"],
    )?)?;
    let b = json(&hum(
        &url,
        &bob,
        &["--json", "identity", "create", "--name", "bob"],
    )?)?;
    let (a_key, b_key) = (a["user"].as_str().unwrap(), b["user"].as_str().unwrap());
    assert!(hum(&url, &alice, &["identity", "create", "--name", "x"]).is_err());
    let who = json(&hum(&url, &alice, &["--json", "whoami"])?)?;
    assert_eq!(who["user"]["id"], a_key);

    // Friends (a key must have logged in once to be found).
    hum(&url, &bob, &["whoami"])?;
    hum(&url, &alice, &["friends", "add", b_key])?;
    let pending = json(&hum(&url, &bob, &["--json", "friends", "list"])?)?;
    assert_eq!(pending["incoming"][0]["id"], a_key);
    hum(&url, &bob, &["friends", "accept", a_key])?;
    let friends = json(&hum(&url, &alice, &["--json", "friends", "list"])?)?;
    assert_eq!(friends["friends"][0]["user"]["id"], b_key);

    // A server, an invite, a channel, by name.
    let server = json(&hum(
        &url,
        &alice,
        &["--json", "server", "create", "Lounge"],
    )?)?;
    assert_eq!(server["name"], "Lounge");
    let code = hum(
        &url,
        &alice,
        &["server", "invite", "Lounge", "--max-uses", "1"],
    )?;
    hum(&url, &bob, &["server", "join", code.trim()])?;
    hum(
        &url,
        &alice,
        &[
            "channel",
            "create",
            "--server",
            "Lounge",
            "General",
            "--max",
            "3",
            "--member-perms",
            "join,speak",
        ],
    )?;
    // Bob cannot create channels: a member.
    let err = hum(
        &url,
        &bob,
        &["channel", "create", "--server", "Lounge", "Nope"],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("error"), "{err}");

    // Bob sits in the channel for a while; alice sees him in the roster.
    let mut sitting = Command::new(workspace_bin("hum-cli", "hum")?)
        .args(["--relay", &url, "--identity"])
        .arg(&bob)
        .args([
            "channel",
            "join",
            "--server",
            "Lounge",
            "General",
            "--muted",
            "--duration",
            "20s",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut seen = false;
    for _ in 0..100 {
        let list = json(&hum(
            &url,
            &alice,
            &["--json", "channel", "list", "--server", "Lounge"],
        )?)?;
        let roster = &list[0]["roster"];
        if roster.as_array().is_some_and(|r| r.len() == 1) {
            assert_eq!(roster[0]["user"]["id"], b_key);
            assert_eq!(roster[0]["voice"]["muted"], true);
            assert_eq!(list[0]["max_participants"], 3);
            assert_eq!(list[0]["permissions"]["member"]["video"], false);
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = sitting.kill();
    let _ = sitting.wait();
    assert!(seen, "bob never appeared in the roster");

    // The owner makes bob an admin (by display name): he may create channels; a member again
    // (by key): he may not; then removes him from the server.
    let err = hum(&url, &bob, &["server", "role", "Lounge", "alice", "member"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("error"), "a member changed a role: {err}");
    hum(&url, &alice, &["server", "role", "Lounge", "bob", "admin"])?;
    hum(
        &url,
        &bob,
        &["channel", "create", "--server", "Lounge", "Bobs"],
    )?;
    hum(&url, &alice, &["server", "role", "Lounge", b_key, "member"])?;
    let err = hum(
        &url,
        &bob,
        &["channel", "create", "--server", "Lounge", "Nope"],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("error"), "{err}");
    let err = hum(&url, &alice, &["server", "kick", "Lounge", "nobody"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no member of Lounge is called `nobody`"),
        "{err}"
    );
    hum(&url, &alice, &["server", "kick", "Lounge", "bob"])?;
    let servers = json(&hum(&url, &bob, &["--json", "server", "list"])?)?;
    assert_eq!(servers, serde_json::json!([]), "bob is still a member");
    let info = json(&hum(&url, &alice, &["--json", "server", "info", "Lounge"])?)?;
    assert_eq!(info["members"].as_array().map(Vec::len), Some(1));

    // Bans (issue 13): bob rejoins, is banned by name, cannot rejoin; the ban list names him;
    // unbanned by name he can join again with an invite.
    let code = hum(&url, &alice, &["server", "invite", "Lounge"])?;
    let code = code.trim();
    hum(&url, &bob, &["server", "join", code])?;
    assert_eq!(
        hum(&url, &alice, &["server", "bans", "Lounge"])?.trim(),
        "nobody is banned"
    );
    let err = hum(&url, &bob, &["server", "bans", "Lounge"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("error"), "a member listed the bans: {err}");
    hum(&url, &alice, &["server", "ban", "Lounge", "bob"])?;
    let servers = json(&hum(&url, &bob, &["--json", "server", "list"])?)?;
    assert_eq!(servers, serde_json::json!([]), "the ban did not remove bob");
    let err = hum(&url, &bob, &["server", "join", code])
        .unwrap_err()
        .to_string();
    assert!(err.contains("banned"), "{err}");
    let bans = json(&hum(&url, &alice, &["--json", "server", "bans", "Lounge"])?)?;
    assert_eq!(bans[0]["id"], b_key, "{bans}");
    assert_eq!(bans[0]["display_name"], "bob", "{bans}");
    let err = hum(&url, &alice, &["server", "unban", "Lounge", "nobody"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("nobody called `nobody` is banned"), "{err}");
    hum(&url, &alice, &["server", "unban", "Lounge", "bob"])?;
    let err = hum(&url, &alice, &["server", "unban", "Lounge", b_key])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not banned"), "{err}");
    hum(&url, &bob, &["server", "join", code])?;

    // Rename (an admin or the owner; every member sees it), leave, delete (the owner).
    hum(&url, &alice, &["server", "rename", "Lounge", "Den"])?;
    let servers = json(&hum(&url, &bob, &["--json", "server", "list"])?)?;
    assert_eq!(servers[0]["name"], "Den", "{servers}");
    hum(&url, &bob, &["server", "leave", "Den"])?;
    let servers = json(&hum(&url, &bob, &["--json", "server", "list"])?)?;
    assert_eq!(servers, serde_json::json!([]), "bob did not leave");
    let err = hum(&url, &alice, &["server", "leave", "Den"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("owner cannot leave"), "{err}");
    hum(&url, &alice, &["server", "delete", "Den"])?;
    let servers = json(&hum(&url, &alice, &["--json", "server", "list"])?)?;
    assert_eq!(servers, serde_json::json!([]), "the server was not deleted");
    Ok(())
}
