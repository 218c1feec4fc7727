//! A quick load check of a running relay with raw WebSocket clients (independent of hum-engine):
//! N clients log in, join servers and channels, then send channel signalling at a fixed total
//! rate while forward latency (send → peer's event, one process, one clock) and the relay's
//! memory (from /proc) are measured.
//!
//! ```text
//! ulimit -n 65536
//! hum-relay --listen 127.0.0.1:7710 --data /tmp/load-relay & PID=$!
//! cargo run --release -p hum-relay --example load -- 127.0.0.1:7710 $PID 5000 8 1000 20 5000
//! #                                               addr           pid  clients per-channel rate/s secs per-server
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{Conn, rss_mb};

/// A client whose key (and name) follow from `seed`.
async fn login(addr: &str, seed: u64) -> anyhow::Result<Conn> {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[31] = 0x77;
    Conn::login(
        addr,
        &SigningKey::from_bytes(&bytes),
        &format!("load-{seed}"),
    )
    .await
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: &str| a.get(i).cloned().unwrap_or_else(|| d.to_string());
    let addr = arg(1, "127.0.0.1:7700");
    let pid: u32 = arg(2, "0").parse()?;
    let clients: usize = arg(3, "1000").parse()?;
    let per_channel: usize = arg(4, "8").parse()?;
    let rate: u64 = arg(5, "1000").parse()?;
    let secs: u64 = arg(6, "20").parse()?;
    let per_server: usize = arg(7, &clients.to_string()).parse()?;
    let (rss0, _) = rss_mb(pid);
    let setup = Instant::now();

    // Owners: one per server; each server gets its channels and an invite.
    let n_servers = clients.div_ceil(per_server);
    let mut channel_of = vec![0u64; clients];
    let mut code_of_server = Vec::new();
    let mut owners = Vec::new();
    for s in 0..n_servers {
        let mut owner = login(&addr, 1_000_000 + s as u64).await?;
        let sid = owner
            .req("server_create", json!({"name": format!("load-{s}")}))
            .await?["server"]["id"]
            .clone();
        let first = s * per_server;
        let last = ((s + 1) * per_server).min(clients);
        let mut i = first;
        while i < last {
            let cid = owner
                .req("channel_create", json!({"server": sid, "name": format!("c{i}"), "max_participants": per_channel}))
                .await?["channel"]["id"]
                .as_u64()
                .unwrap_or(0);
            for slot in channel_of
                .iter_mut()
                .take((i + per_channel).min(last))
                .skip(i)
            {
                *slot = cid;
            }
            i += per_channel;
        }
        code_of_server.push(
            owner.req("invite_create", json!({"server": sid})).await?["invite"]["code"].clone(),
        );
        owners.push(owner);
    }

    // Connect and join, 64 at a time. Each client starts reading at once (so the events of
    // everyone else joining never pile up unread), counting signal events and their latency.
    let start = Instant::now();
    let hist = Arc::new(Mutex::new(hdrhistogram::Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let received = Arc::new(AtomicU64::new(0));
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut joins = Vec::new();
    for i in 0..clients {
        let permit = sem.clone().acquire_owned().await?;
        let addr = addr.clone();
        let code = code_of_server[i / per_server].clone();
        let cid = channel_of[i];
        let hist = hist.clone();
        let received = received.clone();
        joins.push(tokio::spawn(async move {
            let _p = permit;
            let mut c = login(&addr, i as u64).await?;
            c.req("invite_join", json!({"code": code})).await?;
            c.req("channel_join", json!({"channel": cid})).await?;
            let user = c.user.clone();
            let (mut sink, mut stream) = c.ws.split();
            let (tx, mut rx) = mpsc::unbounded_channel::<String>();
            tokio::spawn(async move {
                while let Some(t) = rx.recv().await {
                    if sink.send(Message::Text(t.into())).await.is_err() {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                while let Some(Ok(m)) = stream.next().await {
                    let Message::Text(t) = m else { continue };
                    if !t.contains("\"signal\"") {
                        continue;
                    }
                    let Ok(v) = serde_json::from_str::<Value>(&t) else {
                        continue;
                    };
                    if let Some(sent_us) = v["event"]["payload"]["sdp"]
                        .as_str()
                        .and_then(|s| s.parse::<u64>().ok())
                    {
                        let now = start.elapsed().as_micros() as u64;
                        let _ = hist.lock().await.record(now.saturating_sub(sent_us).max(1));
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            anyhow::Ok((user, tx))
        }));
    }
    let mut writers = Vec::new();
    let mut users = Vec::new();
    for j in joins {
        let (user, tx) = j.await??;
        users.push(user);
        writers.push(tx);
    }
    let setup_s = setup.elapsed().as_secs_f64();
    let (rss_connected, _) = rss_mb(pid);
    eprintln!(
        "{clients} clients connected and joined in {setup_s:.1} s; relay RSS {rss_connected:.1} MB"
    );
    // Let the join storm drain before measuring.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut by_channel: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, c) in channel_of.iter().enumerate() {
        by_channel.entry(*c).or_default().push(i);
    }

    let cpu0 = cpu_ticks(pid);
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut seq = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    while t0.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        let due = rate * t0.elapsed().as_millis() as u64 / 1000;
        while sent < due {
            let i = (rnd() % clients as u64) as usize;
            let peers = &by_channel[&channel_of[i]];
            let j = peers[(rnd() % peers.len() as u64) as usize];
            if j == i {
                continue;
            }
            seq += 1;
            let now = start.elapsed().as_micros();
            let msg = json!({"id": 1_000_000 + seq, "type": "signal", "to": users[j],
                "scope": {"channel": channel_of[i]}, "payload": {"kind": "offer", "sdp": now.to_string()}});
            let _ = writers[i].send(msg.to_string());
            sent += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu = (cpu_ticks(pid) - cpu0) as f64 / 100.0 / t0.elapsed().as_secs_f64() * 100.0;
    let (rss, hwm) = rss_mb(pid);
    let h = hist.lock().await;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "clients={clients} per_server={per_server} per_channel={per_channel} rate={rate}/s secs={secs} setup_s={setup_s:.1} \
         sent={sent} received={} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2} relay_cpu_pct={cpu:.1} \
         relay_rss_mb_idle={rss0:.1} relay_rss_mb_connected={rss_connected:.1} relay_rss_mb={rss:.1} relay_peak_rss_mb={hwm:.1}",
        received.load(Ordering::Relaxed),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0
    );
    drop(owners);
    Ok(())
}
