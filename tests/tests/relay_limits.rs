//! Bad input and limits over a real relay: garbage, wrong types, huge frames, floods, too many
//! connections, frozen clients. Every bad frame gets a typed error, the connection and the relay
//! live on (abuse is closed with a reason), and /healthz stays good throughout.

use std::time::Duration;

use hum_tests::relay::{Client, Closed, Relay};
use serde_json::json;
use tokio::io::AsyncReadExt;

fn healthy(relay: &Relay) -> anyhow::Result<()> {
    let (status, body) = relay.get("/healthz")?;
    anyhow::ensure!(
        status == 200 && body.trim() == "ok",
        "healthz: {status} {body}"
    );
    Ok(())
}

#[tokio::test]
async fn garbage_and_wrong_types_get_typed_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &[])?;
    let mut c = Client::login(relay.addr, 1, "Ada").await?;

    let cases: &[(&str, Option<u64>, &str)] = &[
        ("this is not json", None, "bad_json"),
        ("{\"id\": 1, \"type\": \"ping\"", None, "bad_json"),
        ("[1, 2, 3]", None, "bad_json"),
        ("\"ping\"", None, "bad_json"),
        ("{\"type\": \"ping\"}", None, "bad_request"),
        (
            "{\"id\": \"seven\", \"type\": \"ping\"}",
            None,
            "bad_request",
        ),
        ("{\"id\": -4, \"type\": \"ping\"}", None, "bad_request"),
        ("{\"id\": 5}", Some(5), "bad_request"),
        ("{\"id\": 6, \"type\": 42}", Some(6), "bad_request"),
        (
            "{\"id\": 7, \"type\": \"launch_missiles\"}",
            Some(7),
            "unknown_type",
        ),
        (
            "{\"id\": 8, \"type\": \"friend_request\"}",
            Some(8),
            "bad_request",
        ),
        (
            "{\"id\": 9, \"type\": \"friend_request\", \"user\": 12}",
            Some(9),
            "bad_request",
        ),
        (
            "{\"id\": 10, \"type\": \"channel_join\", \"channel\": \"x\"}",
            Some(10),
            "bad_request",
        ),
        (
            "{\"id\": 11, \"type\": \"channel_join\", \"channel\": -1}",
            Some(11),
            "bad_request",
        ),
        (
            "{\"id\": 12, \"type\": \"server_create\", \"name\": \"\"}",
            Some(12),
            // A name breaking the naming rules has its own code (hum_proto::names).
            "invalid_name",
        ),
        (
            "{\"id\": 13, \"type\": \"server_create\", \"name\": \"   padded   \"}",
            Some(13),
            // A name breaking the naming rules has its own code (hum_proto::names).
            "invalid_name",
        ),
        (
            "{\"id\": 14, \"type\": \"signal\", \"to\": \"00\", \"scope\": {}, \"payload\": {}}",
            Some(14),
            "bad_request",
        ),
        (
            "{\"id\": 15, \"type\": \"signal\", \"to\": \"0000000000000000000000000000000000000000000000000000000000000000\", \"scope\": {\"room\": 1}, \"payload\": {\"kind\": \"offer\", \"sdp\": \"\"}}",
            Some(15),
            "bad_request",
        ),
        (
            "{\"id\": 16, \"type\": \"hello\", \"protocol\": 1}",
            Some(16),
            "out_of_order",
        ),
    ];
    for (frame, re, want) in cases {
        c.send_text(*frame).await?;
        let m = c.answer_to(*re).await?;
        assert_eq!(m["type"], "error", "{frame} -> {m}");
        assert_eq!(m["code"], *want, "{frame} -> {m}");
        assert!(m["message"].as_str().is_some_and(|s| !s.is_empty()), "{m}");
    }
    // A deeply nested document does not crash the decoder.
    let deep = format!("{}{}", "[".repeat(100_000 / 2), "]".repeat(100_000 / 2));
    c.send_text(&deep[..60_000]).await?;
    assert_eq!(c.answer_to(None).await?["code"], "bad_json");
    // Binary frames are not the protocol.
    c.send_binary(vec![0xde, 0xad, 0xbe, 0xef]).await?;
    assert_eq!(c.answer_to(None).await?["code"], "bad_json");
    // Still alive and logged in.
    assert_eq!(c.ok("ping", json!({})).await?["type"], "pong");
    healthy(&relay)?;
    Ok(())
}

#[tokio::test]
async fn oversized_frames_are_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &[])?;
    let mut c = Client::login(relay.addr, 1, "Ada").await?;
    // Over the message limit but readable: a typed error, the connection lives.
    let big = format!(
        "{{\"id\": 1, \"type\": \"set_profile\", \"display_name\": \"{}\"}}",
        "x".repeat(100_000)
    );
    c.send_text(big).await?;
    let m = c.answer_to(None).await?;
    assert_eq!(m["code"], "too_large", "{m}");
    assert_eq!(c.ok("ping", json!({})).await?["type"], "pong");
    // Far over it: refused before being buffered, closed with 1009 (message too big).
    let huge = "y".repeat(3 << 20);
    let _ = c.send_text(huge).await;
    let closed = c.wait_closed(Duration::from_secs(5)).await?;
    assert!(
        matches!(closed, Closed::Code(1009) | Closed::Dropped),
        "{closed:?}"
    );
    healthy(&relay)?;
    let mut d = Client::login(relay.addr, 2, "Bob").await?;
    assert_eq!(d.ok("ping", json!({})).await?["type"], "pong");
    Ok(())
}

#[tokio::test]
async fn floods_are_rate_limited_then_closed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &["--rate", "5", "--burst", "10"])?;
    let mut c = Client::login(relay.addr, 1, "Ada").await?;
    // The bucket started full (10) and the login took 2 frames (hello, login): at least 8
    // tokens are left however long anything took, and refills only add to them.
    for i in 0..20u64 {
        c.send_text(json!({"id": 100 + i, "type": "ping"}).to_string())
            .await?;
    }
    let (mut pongs, mut limited) = (0, 0);
    for _ in 0..20 {
        let m = c.recv().await?;
        match (m["type"].as_str(), m["code"].as_str()) {
            (Some("reply"), _) => pongs += 1,
            (Some("error"), Some("rate_limited")) => {
                // The refused request is named, so a client can fail it at once.
                assert!(
                    m["re"].as_u64().is_some_and(|re| (100..120).contains(&re)),
                    "{m}"
                );
                limited += 1
            }
            _ => panic!("unexpected {m}"),
        }
    }
    // Every request was answered, the burst was honoured, and the flood was limited.
    assert_eq!(pongs + limited, 20);
    assert!(
        pongs >= 8 && limited > 0,
        "pongs {pongs}, limited {limited}"
    );
    // A client that slows down is fine again: one ping at a time, its next token comes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = c.request("ping", json!({})).await?;
        if m["type"] == "reply" {
            assert_eq!(m["reply"]["type"], "pong", "{m}");
            break;
        }
        assert_eq!(m["code"], "rate_limited", "{m}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "still rate limited after 20 s of one ping per 250 ms (rate 5/s): {m}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // One that keeps flooding is closed with "policy violation".
    for i in 0..400u64 {
        if c.send_text(json!({"id": 1000 + i, "type": "ping"}).to_string())
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(
        c.wait_closed(Duration::from_secs(5)).await?,
        Closed::Code(1008)
    );
    healthy(&relay)?;
    Ok(())
}

#[tokio::test]
async fn the_connection_limit_answers_503_and_frees_up() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &["--max-connections", "2"])?;
    let a = Client::login(relay.addr, 1, "A").await?;
    let _b = Client::login(relay.addr, 2, "B").await?;
    let err = Client::connect(relay.addr)
        .await
        .expect_err("third connection must be refused");
    assert!(format!("{err:#}").contains("503"), "{err:#}");
    healthy(&relay)?;
    a.close().await;
    // The slot frees once the relay notices the close.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Err(e) = Client::connect(relay.addr).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no slot freed within 20 s after a client left: {e:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics) = relay.get("/metrics")?;
    let rejected: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hum_relay_connections_rejected_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // At least the refused third client (retries while the slot frees may add more).
    assert!(rejected >= 1, "{metrics}");
    Ok(())
}

#[tokio::test]
async fn a_frozen_client_is_dropped_from_its_channel() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(
        dir.path(),
        &["--ping-interval", "200ms", "--idle-timeout", "1s"],
    )?;
    let mut owner = Client::login(relay.addr, 1, "Owner").await?;
    let mut frozen = Client::login(relay.addr, 2, "Frozen").await?;
    let sid = owner.ok("server_create", json!({"name": "S"})).await?["server"]["id"].clone();
    let cid = owner
        .ok("channel_create", json!({"server": sid, "name": "C"}))
        .await?["channel"]["id"]
        .clone();
    let code = owner.ok("invite_create", json!({"server": sid})).await?["invite"]["code"].clone();
    frozen.ok("invite_join", json!({"code": code})).await?;
    frozen.ok("channel_join", json!({"channel": cid})).await?;
    let f = frozen.user();
    owner
        .event_where("roster_join", |e| e["entry"]["user"]["id"] == f)
        .await?;
    // Stop reading: no pongs go back. The relay must notice and drop it from the channel.
    let mut held = frozen.freeze();
    let left = owner
        .event_where("roster_leave", |e| e["user"] == f)
        .await?;
    assert_eq!(left["reason"], "disconnected");
    // It was the idle timeout that closed it: the close frame (code 4004, the relay's idle
    // timeout) waits in the frozen socket. Read the raw bytes: a WebSocket read would first try
    // to answer the queued pings on the closed connection and fail.
    let tcp = held.get_mut();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = tcp.read(&mut buf).await {
            raw.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the relay ends the frozen connection within 10 s");
    // An unmasked server frame: FIN + close opcode, a short length, then the code.
    let idle_close = |w: &[u8]| w[0] == 0x88 && w[1] < 126 && w[2..4] == 4004u16.to_be_bytes();
    assert!(
        raw.windows(4).any(idle_close),
        "no close frame with code 4004 (idle timeout) in the {} bytes sent to the frozen client",
        raw.len()
    );
    Ok(())
}

#[tokio::test]
async fn metrics_count_connections_messages_errors_and_channels() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &[])?;
    let mut c = Client::login(relay.addr, 1, "Ada").await?;
    let sid = c.ok("server_create", json!({"name": "S"})).await?["server"]["id"].clone();
    c.ok("channel_create", json!({"server": sid, "name": "C"}))
        .await?;
    c.send_text("nope").await?;
    c.answer_to(None).await?;
    // Gauges are refreshed every second: read until every line shows (or a generous deadline).
    let want = [
        "hum_relay_connections 1",
        "hum_relay_sessions 1",
        "hum_relay_channels 1",
        "hum_relay_errors_total{code=\"bad_json\"} 1",
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let (status, text) = relay.get("/metrics")?;
        assert_eq!(status, 200);
        let missing: Vec<&str> = want
            .iter()
            .copied()
            .filter(|w| !text.lines().any(|l| l == *w))
            .collect();
        if missing.is_empty() {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still missing {missing:?} after 20 s in\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let msgs: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("hum_relay_messages_in_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(msgs >= 5, "{text}");
    Ok(())
}
