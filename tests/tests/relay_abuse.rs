//! A relay that holds under abuse (issue 16, relay hardening), over the real binary on loopback:
//! slow readers, connections that never finish the upgrade, per-address limits, names.
//! Assertions are on events and counts, never on wall-clock durations.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use hum_tests::relay::{Client, Relay};
use serde_json::{Value, json};

fn metric(relay: &Relay, name: &str) -> anyhow::Result<u64> {
    let (status, body) = relay.get("/metrics")?;
    anyhow::ensure!(status == 200, "metrics: {status}");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no metric {name}"))
}

/// An owner, a server with one channel, and an invite code.
async fn server_with_channel(owner: &mut Client) -> anyhow::Result<(Value, Value, Value)> {
    let sid = owner.ok("server_create", json!({"name": "Club"})).await?["server"]["id"].clone();
    let cid = owner
        .ok("channel_create", json!({"server": sid, "name": "Lounge"}))
        .await?["channel"]["id"]
        .clone();
    let code = owner.ok("invite_create", json!({"server": sid})).await?["invite"]["code"].clone();
    Ok((sid, cid, code))
}

/// One member stops reading while three others send it 60 KB signals. The relay drops it once
/// its queue passes the byte budget (4 MiB by default), long before the old frame bound (8,192
/// frames, ~500 MB of 60 KB signals) or the 10 s write timeout, and its queued bytes are given
/// back. Counted in signals sent, not in seconds.
#[tokio::test]
async fn a_member_that_stops_reading_is_dropped_by_bytes_queued() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &[])?;
    let mut senders = vec![Client::login(relay.addr, 1, "Owner").await?];
    let (_sid, cid, code) = server_with_channel(&mut senders[0]).await?;
    for seed in 2..=3 {
        let mut c = Client::login(relay.addr, seed, &format!("Sender{seed}")).await?;
        c.ok("invite_join", json!({"code": code})).await?;
        senders.push(c);
    }
    let mut slow = Client::login(relay.addr, 9, "Slow").await?;
    slow.ok("invite_join", json!({"code": code})).await?;
    for c in senders.iter_mut() {
        c.ok("channel_join", json!({"channel": cid})).await?;
    }
    slow.ok("channel_join", json!({"channel": cid})).await?;
    let slow_id = slow.user();
    let _frozen = slow.freeze();

    let sdp = "v".repeat(60_000);
    let mut sent = 0usize;
    let mut dropped_after = None;
    'send: for round in 0..200 {
        for c in senders.iter_mut() {
            let m = c
                .request(
                    "signal",
                    json!({"to": slow_id, "scope": {"channel": cid},
                           "payload": {"kind": "offer", "sdp": sdp}}),
                )
                .await?;
            if m["type"] == "error" && m["code"] == "rate_limited" {
                // Three senders share no bucket; wait for a token (events, not time, decide).
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            if m["type"] == "error" {
                dropped_after = Some(sent);
                break 'send;
            }
            sent += 1;
        }
        let _ = round;
    }
    // 200 rounds x 3 senders x 60 KB = 36 MB offered; the relay must have given up far sooner:
    // 4 MiB of queue plus what the kernel's socket buffers hold (a few MB on loopback).
    let n = dropped_after.ok_or_else(|| {
        anyhow::anyhow!("the frozen member was never dropped after {sent} signals of 60 KB")
    })?;
    assert!(n < 200, "dropped only after {n} signals of 60 KB");
    // The others see it leave the channel, and its queue's bytes are back.
    senders[0]
        .event_where("roster_leave", |e| e["user"] == json!(slow_id))
        .await?;
    assert_eq!(metric(&relay, "hum_relay_closed_slow_total")?, 1);
    assert_eq!(metric(&relay, "hum_relay_outbox_bytes")?, 0);
    // The senders are fine.
    assert_eq!(senders[1].ok("ping", json!({})).await?["type"], "pong");
    Ok(())
}

/// A reader too slow for what it is sent gets the close code 4002 with a reason it can read.
#[tokio::test]
async fn a_slow_reader_gets_a_clear_close_reason() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // A small budget so that one burst of signals overflows it before the reader reads.
    let relay = Relay::start(dir.path(), &["--outbox-bytes", "200000"])?;
    let mut owner = Client::login(relay.addr, 1, "Owner").await?;
    let (_sid, cid, code) = server_with_channel(&mut owner).await?;
    let mut slow = Client::login(relay.addr, 2, "Slow").await?;
    slow.ok("invite_join", json!({"code": code})).await?;
    owner.ok("channel_join", json!({"channel": cid})).await?;
    slow.ok("channel_join", json!({"channel": cid})).await?;
    let sdp = "v".repeat(60_000);
    let to = slow.user();
    let mut refused = false;
    for _ in 0..100 {
        let m = owner
            .request(
                "signal",
                json!({"to": to, "scope": {"channel": cid}, "payload": {"kind": "offer", "sdp": sdp}}),
            )
            .await?;
        if m["type"] == "error" {
            refused = true;
            break;
        }
    }
    assert!(refused, "the slow reader was never dropped");
    let closed = slow.wait_closed(Duration::from_secs(30)).await?;
    assert_eq!(closed, hum_tests::relay::Closed::Code(4002));
    Ok(())
}

/// Read until the relay closes `s` (EOF or reset). A read that times out is a failure: the
/// relay never closed it. The timeout is a safety net, far above the relay's deadline.
fn closed_by_relay(s: &mut TcpStream) -> anyhow::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                anyhow::bail!("the relay never closed a connection that sent no request")
            }
            Err(_) => return Ok(()),
        }
    }
}

/// A WebSocket connect that must be refused with HTTP 503.
async fn refused_503(relay: &Relay) -> anyhow::Result<()> {
    match Client::connect(relay.addr).await {
        Ok(_) => anyhow::bail!("connected although the relay is at its limit"),
        Err(e) => {
            let e = format!("{e:#}");
            anyhow::ensure!(e.contains("503"), "expected HTTP 503, got: {e}");
            Ok(())
        }
    }
}

/// Connections that never send a byte, or stop in the middle of their request head, count
/// against --max-connections (plus 8 connections of headroom for health checks) while pending
/// and are closed at the upgrade deadline; then real clients get in again.
#[tokio::test]
async fn connections_that_never_finish_the_upgrade_are_counted_and_closed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(
        dir.path(),
        &["--max-connections", "8", "--upgrade-timeout", "1s"],
    )?;
    let mut pending = Vec::new();
    for i in 0..8 + 8 {
        let mut s = TcpStream::connect(relay.addr)?;
        if i % 2 == 1 {
            // Half a request head, then nothing.
            s.write_all(b"GET /ws HTTP/1.1\r\nHost: relay\r\nUpgrade: websock")?;
        }
        pending.push(s);
    }
    // All 16 slots are held by pending connections: a real client is refused with 503.
    refused_503(&relay).await?;
    for s in pending.iter_mut() {
        closed_by_relay(s)?;
    }
    // Their slots are back.
    let mut c = Client::login(relay.addr, 1, "Ada").await?;
    assert_eq!(c.ok("ping", json!({})).await?["type"], "pong");
    assert!(metric(&relay, "hum_relay_connections_rejected_total")? >= 1);
    Ok(())
}

/// Under a hard open-file limit of 100 the relay caps WebSockets at 100 - 64 reserved - 8 for
/// plain HTTP = 28 (whatever --max-connections says) and refuses the rest with 503, instead of
/// running out of descriptors and letting new clients time out; /healthz still answers.
#[tokio::test]
async fn past_the_descriptor_limit_clients_get_503_not_a_timeout() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start_wrapped(
        &["prlimit", "--nofile=100:100", "--"],
        dir.path(),
        "127.0.0.1:0",
        &[],
    )?;
    assert_eq!(metric(&relay, "hum_relay_open_file_limit")?, 100);
    assert_eq!(metric(&relay, "hum_relay_max_connections")?, 28);
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..60 {
        match Client::connect(relay.addr).await {
            Ok(c) => open.push(c),
            Err(e) => {
                let e = format!("{e:#}");
                assert!(e.contains("503"), "expected HTTP 503, got: {e}");
                refused += 1;
            }
        }
    }
    assert_eq!((open.len(), refused), (28, 32));
    let (status, _) = relay.get("/healthz")?;
    assert_eq!(status, 200);
    // The relay still answers everyone it holds.
    let mut last = open.pop().expect("28 open");
    last.login_with_name(Some("Ada")).await?;
    assert_eq!(last.ok("ping", json!({})).await?["type"], "pong");
    Ok(())
}

/// The soft open-file limit is raised to the hard one at start.
#[tokio::test]
async fn the_soft_descriptor_limit_is_raised_to_the_hard_one() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start_wrapped(
        &["prlimit", "--nofile=100:4096", "--"],
        dir.path(),
        "127.0.0.1:0",
        &[],
    )?;
    assert_eq!(metric(&relay, "hum_relay_open_file_limit")?, 4096);
    assert_eq!(metric(&relay, "hum_relay_max_connections")?, 4096 - 64 - 8);
    Ok(())
}

/// SIGTERM: every client gets a 1001 ("going away") close frame before the relay exits.
#[tokio::test]
async fn sigterm_closes_every_client_with_1001() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &[])?;
    let mut a = Client::login(relay.addr, 1, "Ada").await?;
    let mut b = Client::connect(relay.addr).await?; // not logged in yet
    let status = relay.terminate()?;
    assert!(status.success(), "relay exit: {status}");
    for c in [&mut a, &mut b] {
        assert_eq!(
            c.wait_closed(Duration::from_secs(30)).await?,
            hum_tests::relay::Closed::Code(1001)
        );
    }
    Ok(())
}

/// The silence timeout is enforced when it passes, not on the next ping tick: with pings a
/// minute apart, a frozen client is still dropped after the 2 s of silence allowed, and the
/// others see it leave (waited for with the harness's usual 5 s per event).
#[tokio::test]
async fn the_silence_timeout_does_not_wait_for_the_ping_tick() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(
        dir.path(),
        &[
            "--ping-interval",
            "60s",
            "--idle-timeout",
            "2s",
            "--login-timeout",
            "60s",
        ],
    )?;
    let mut owner = Client::login(relay.addr, 1, "Owner").await?;
    let (_sid, cid, code) = server_with_channel(&mut owner).await?;
    let mut frozen = Client::login(relay.addr, 2, "Frozen").await?;
    frozen.ok("invite_join", json!({"code": code})).await?;
    frozen.ok("channel_join", json!({"channel": cid})).await?;
    let id = frozen.user();
    let _held = frozen.freeze();
    // The owner speaks a second after the frozen client's last word, so it has a second more
    // before its own silence runs out; the frozen client's leave must come before.
    tokio::time::sleep(Duration::from_secs(1)).await;
    owner.ok("ping", json!({})).await?;
    let left = owner
        .event_where("roster_leave", |e| e["user"] == json!(id))
        .await
        .is_ok();
    assert!(
        left,
        "the silent client was not dropped before the next ping tick"
    );
    Ok(())
}
