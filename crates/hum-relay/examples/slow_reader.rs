//! The slow-reader scenario of issue 16, against a running relay: four members in one voice
//! channel; one reads at about 120 KB/s while the other three send it 60 KB signals as fast as
//! the rate limit allows. Prints the relay's RSS (from /proc) every 5 s while it runs, when the
//! slow member is dropped, and 5 s after the senders stop.
//!
//! ```text
//! hum-relay --listen 127.0.0.1:7720 --data /tmp/slow-relay & PID=$!
//! cargo run --release -p hum-relay --example slow_reader -- 127.0.0.1:7720 $PID 55
//! #                                                         addr            pid  seconds
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{Conn, rss_mb};

/// A client whose key (and name) follow from `seed`.
async fn login(addr: &str, seed: u8) -> anyhow::Result<Conn> {
    Conn::login(
        addr,
        &SigningKey::from_bytes(&[seed; 32]),
        &format!("slow-{seed}"),
    )
    .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let addr = a.get(1).cloned().unwrap_or_else(|| "127.0.0.1:7720".into());
    let pid: u32 = a.get(2).map_or(Ok(0), |p| p.parse())?;
    let secs: u64 = a.get(3).map_or(Ok(55), |s| s.parse())?;
    let t0 = Instant::now();
    println!(
        "t=0.0s relay RSS {:.1} MB (before the scenario)",
        rss_mb(pid).0
    );

    let mut owner = login(&addr, 101).await?;
    let sid = owner.req("server_create", json!({"name": "slow"})).await?["server"]["id"].clone();
    let cid = owner
        .req("channel_create", json!({"server": sid, "name": "c"}))
        .await?["channel"]["id"]
        .clone();
    let code = owner.req("invite_create", json!({"server": sid})).await?["invite"]["code"].clone();
    let mut senders = vec![owner];
    for seed in 102..=103 {
        let mut c = login(&addr, seed).await?;
        c.req("invite_join", json!({"code": code})).await?;
        senders.push(c);
    }
    let mut slow = login(&addr, 104).await?;
    slow.req("invite_join", json!({"code": code})).await?;
    for c in senders.iter_mut() {
        c.req("channel_join", json!({"channel": cid})).await?;
    }
    slow.req("channel_join", json!({"channel": cid})).await?;
    let slow_user = slow.user.clone();

    // The slow member: read ~12 KB every 100 ms (about 120 KB/s), at the WebSocket level.
    let slow_done = Arc::new(AtomicBool::new(false));
    let slow_bytes = Arc::new(AtomicU64::new(0));
    {
        let done = slow_done.clone();
        let bytes = slow_bytes.clone();
        tokio::spawn(async move {
            let mut budget = 0usize;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                budget += 12_000;
                while budget > 0 {
                    match slow.ws.next().await {
                        Some(Ok(Message::Text(t))) => {
                            budget = budget.saturating_sub(t.len());
                            bytes.fetch_add(t.len() as u64, Ordering::Relaxed);
                        }
                        Some(Ok(Message::Close(f))) => {
                            println!(
                                "t={:.1}s slow member closed by the relay: {f:?}",
                                t0.elapsed().as_secs_f64()
                            );
                            done.store(true, Ordering::SeqCst);
                            return;
                        }
                        Some(Ok(_)) => {}
                        None | Some(Err(_)) => {
                            println!(
                                "t={:.1}s slow member's connection ended (no close frame)",
                                t0.elapsed().as_secs_f64()
                            );
                            done.store(true, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            }
        });
    }

    // Three senders, 60 KB offers to the slow member, fire and forget (answers read and counted).
    let sdp = "v".repeat(60_000);
    let sent = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in senders {
        let (mut sink, mut stream) = c.ws.split();
        let refused = refused.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                if let Message::Text(t) = m
                    && t.starts_with("{\"type\":\"error\"")
                    && !t.contains("rate_limited")
                {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let (sdp, cid, to, sent, stop) = (
            sdp.clone(),
            cid.clone(),
            slow_user.clone(),
            sent.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut id = 1_000u64;
            // Just under the relay's default 50 requests/s per connection.
            let mut tick = tokio::time::interval(Duration::from_millis(21));
            while !stop.load(Ordering::SeqCst) {
                tick.tick().await;
                id += 1;
                let msg = json!({"id": id, "type": "signal", "to": to, "scope": {"channel": cid},
                    "payload": {"kind": "offer", "sdp": sdp}});
                if sink
                    .send(Message::Text(msg.to_string().into()))
                    .await
                    .is_err()
                {
                    return;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut peak = 0f64;
    let mut reported_drop = false;
    let mut next_print = 5;
    while t0.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let rss = rss_mb(pid).0;
        peak = peak.max(rss);
        let el = t0.elapsed().as_secs();
        if el >= next_print {
            next_print += 5;
            println!(
                "t={el}s relay RSS {rss:.1} MB (peak {peak:.1}); signals sent {}, refused {}, slow read {:.1} MB",
                sent.load(Ordering::Relaxed),
                refused.load(Ordering::Relaxed),
                slow_bytes.load(Ordering::Relaxed) as f64 / 1e6
            );
        }
        if !reported_drop && refused.load(Ordering::Relaxed) > 0 {
            reported_drop = true;
            println!(
                "t={:.1}s the relay refused a signal to the slow member (dropped); RSS {rss:.1} MB",
                t0.elapsed().as_secs_f64()
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = t.await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!(
        "after: relay RSS {:.1} MB 5 s after the senders stopped (peak {peak:.1} MB); slow member dropped: {}",
        rss_mb(pid).0,
        slow_done.load(Ordering::SeqCst) || reported_drop
    );
    Ok(())
}
