//! `hum bench relay`: many logged-in clients sitting in voice channels, sending signalling to
//! each other at a fixed total rate, while the relay's CPU and memory are read from /proc.
//!
//! Forward latency is measured from just before a client hands a `signal` request to its socket
//! until the addressed peer's event stream yields it. Both ends live in this process (one
//! clock), so the figure includes the client side as well as the relay: an upper bound on the
//! relay's share.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use hum_engine::{ClientEvent, Identity, RelayClient, RelayConfig};
use hum_proto::signal::{DisplayName, Event, Name, SignalPayload, SignalScope, VoiceState};
use hum_proto::{ChannelId, UserId};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::Cli;

mod sfu;

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Load the relay with N clients in voice channels exchanging signalling.
    Relay(RelayBench),
    /// Load the relay's embedded SFU with audio publishers and subscribers (str0m clients,
    /// in this process) and measure forwarded packets per core, delivery and latency.
    Sfu(sfu::SfuBench),
}

#[derive(Args, Debug)]
pub struct RelayBench {
    /// Concurrent logged-in clients.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Clients per voice channel.
    #[arg(long, default_value_t = 8)]
    per_channel: usize,
    /// Members per server. Everyone in a server hears everyone join, so one huge server makes
    /// setup O(N^2) in events; real communities are many servers.
    #[arg(long, default_value_t = 100)]
    per_server: usize,
    /// Total signalling messages per second, spread over all clients.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// How long to measure (after every client is connected).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Use a relay already running at --relay with this pid (for its CPU and memory) instead
    /// of starting one.
    #[arg(long)]
    relay_pid: Option<u32>,
    /// The hum-relay binary to start (default: next to this `hum`).
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// Logins in flight at once while connecting the clients.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
}

#[derive(Serialize, Debug)]
struct Report {
    clients: usize,
    channels: usize,
    rate_per_s: u32,
    duration_s: f64,
    setup_s: f64,
    sent: u64,
    received: u64,
    send_errors: u64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    relay_cpu_pct_of_one_core: f64,
    relay_rss_mb: f64,
    relay_peak_rss_mb: f64,
}

pub async fn run(cli: &Cli, cmd: &BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Relay(args) => relay(cli, args).await,
        BenchCmd::Sfu(args) => sfu::run(cli, args).await,
    }
}

/// A relay started for the benchmark, stopped when dropped.
struct SpawnedRelay {
    child: tokio::process::Child,
    _data: tempdir::TempDir,
}

mod tempdir {
    /// A directory removed when dropped.
    pub struct TempDir(pub std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn raise_fd_limit() {
    // Each client holds a socket here and one in the relay; the default soft limit (1024) is
    // far too low. Children (the relay) inherit the raised limit.
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
}

async fn spawn_relay(bin: &Path, extra: &[&str]) -> Result<(SpawnedRelay, String)> {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
        l.local_addr()?.port()
    };
    let data = std::env::temp_dir().join(format!("hum-bench-relay-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&data)?;
    let child = tokio::process::Command::new(bin)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(&data)
        .args(extra)
        // Its start-up lines would bury the report; RUST_LOG set by the caller wins.
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let url = format!("ws://127.0.0.1:{port}/ws");
    let health = format!("127.0.0.1:{port}");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(&health).await.is_ok() {
            return Ok((
                SpawnedRelay {
                    child,
                    _data: tempdir::TempDir(data),
                },
                url,
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the relay at {health} did not start listening within 10 s")
}

/// The relay a benchmark loads: one already running at --relay with the given pid, or one
/// started here (`bin`, default: next to this `hum`) with `extra` arguments, stopped when the
/// returned guard drops. Returns the guard, the relay's WebSocket URL and its pid.
async fn relay_under_test(
    cli: &Cli,
    relay_pid: Option<u32>,
    bin: Option<&Path>,
    extra: &[&str],
) -> Result<(Option<SpawnedRelay>, String, u32)> {
    if let Some(pid) = relay_pid {
        return Ok((None, cli.relay.clone(), pid));
    }
    let bin = match bin {
        Some(b) => b.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory for this executable")?
            .join("hum-relay"),
    };
    let (relay, url) = spawn_relay(&bin, extra).await?;
    let pid = relay.child.id().context("relay exited at once")?;
    Ok((Some(relay), url, pid))
}

/// CPU seconds (user + system) and RSS of a process, from /proc.
struct ProcSample {
    cpu_s: f64,
    rss_mb: f64,
    peak_rss_mb: f64,
}

fn sample_proc(pid: u32) -> Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (is the relay running?)"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Linux reports in USER_HZ, which is 100 on every mainstream configuration.
    let cpu_s = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(ProcSample {
        cpu_s,
        rss_mb: kb("VmRSS:") / 1024.0,
        peak_rss_mb: kb("VmHWM:") / 1024.0,
    })
}

fn bench_identity(i: usize) -> Result<Identity> {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    seed[8] = 0xb7;
    Ok(Identity::from_seed(
        seed,
        DisplayName::new(format!("bench-{i}"))?,
    ))
}

fn client_config(url: &str) -> RelayConfig {
    let mut c = RelayConfig::new(url);
    c.request_timeout = Duration::from_secs(30);
    c.connect_timeout = Duration::from_secs(30);
    c
}

async fn relay(cli: &Cli, args: &RelayBench) -> Result<()> {
    if args.clients < 2 || args.per_channel < 2 {
        bail!("need at least 2 clients and 2 per channel");
    }
    raise_fd_limit();
    let (spawned, url, pid) =
        relay_under_test(cli, args.relay_pid, args.relay_bin.as_deref(), &[]).await?;
    let setup_start = Instant::now();

    // The owner makes the servers, their channels and an unlimited invite for each.
    let owner = RelayClient::connect(bench_identity(0)?, client_config(&url)).await?;
    let per_server = args.per_server.max(args.per_channel);
    let channels_per_server = per_server.div_ceil(args.per_channel);
    let mut invites = Vec::new();
    let mut channels = Vec::new();
    for s in 0..args.clients.div_ceil(per_server) {
        let name = Name::new(format!("bench-{s}"))?;
        let server = paced(|| owner.server_create(name.clone())).await?;
        for c in 0..channels_per_server {
            let name = Name::new(format!("room-{c}"))?;
            let max = Some(args.per_channel as u32);
            let ch = paced(|| owner.channel_create(server.id, name.clone(), max, None)).await?;
            channels.push(ch.id);
        }
        invites.push(
            paced(|| owner.invite_create(server.id, None, None))
                .await?
                .code,
        );
    }
    // Client i sits in server i / per_server, channel (i % per_server) / per_channel of it.
    let channel_of = |i: usize| {
        channels[(i / per_server) * channels_per_server + (i % per_server) / args.per_channel]
    };

    // Connect everyone, a bounded number at a time.
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let received = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency));
    let mut joins = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let permit = sem.clone().acquire_owned().await?;
        let url = url.clone();
        let code = invites[i / per_server].clone();
        let channel = channel_of(i);
        let owner_id = owner.user_id();
        let hist = hist.clone();
        let received = received.clone();
        joins.push(tokio::spawn(async move {
            let _permit = permit;
            // Client 0 is the owner's key; bench clients start at 1.
            let identity = bench_identity(i + 1)?;
            let client = RelayClient::connect(identity, client_config(&url)).await?;
            if client.user_id() != owner_id {
                client.invite_join(code).await?;
            }
            let rx = client.subscribe();
            client.channel_join(channel, VoiceState::default()).await?;
            tokio::spawn(receive_loop(rx, start, hist, received));
            anyhow::Ok((client, channel))
        }));
    }
    let mut clients: Vec<(RelayClient, ChannelId)> = Vec::with_capacity(args.clients);
    for j in joins {
        clients.push(j.await??);
    }
    let setup_s = setup_start.elapsed().as_secs_f64();
    let used_channels = clients
        .iter()
        .map(|(_, ch)| *ch)
        .collect::<std::collections::BTreeSet<_>>()
        .len();

    eprintln!(
        "{} clients in {} channels connected in {setup_s:.1} s; measuring for {:?}",
        clients.len(),
        used_channels,
        args.duration
    );

    // Peers per channel, so each message goes to someone in the sender's channel.
    let mut members: std::collections::BTreeMap<ChannelId, Vec<UserId>> = Default::default();
    for (c, ch) in &clients {
        members.entry(*ch).or_default().push(c.user_id());
    }
    let clients = Arc::new(clients);
    let members = Arc::new(members);

    hist.lock().await.reset();
    received.store(0, Ordering::Relaxed);
    let before = sample_proc(pid)?;
    let measure_start = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let tick = Duration::from_millis(10);
    let per_tick = f64::from(args.rate) * tick.as_secs_f64();
    let mut carry = 0.0;
    let mut ticker = tokio::time::interval(tick);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    while measure_start.elapsed() < args.duration {
        ticker.tick().await;
        carry += per_tick;
        while carry >= 1.0 {
            carry -= 1.0;
            let (client, ch) = &clients[rng.gen_range(0..clients.len())];
            let peers = &members[ch];
            let me = client.user_id();
            let to = loop {
                let p = peers[rng.gen_range(0..peers.len())];
                if p != me || peers.len() == 1 {
                    break p;
                }
            };
            let client = client.clone();
            let ch = *ch;
            let sent = sent.clone();
            let errors = errors.clone();
            tokio::spawn(async move {
                let t = start.elapsed().as_nanos() as u64;
                let payload = SignalPayload::Offer {
                    sdp: format!("bench:{t}"),
                };
                sent.fetch_add(1, Ordering::Relaxed);
                if client
                    .signal(to, SignalScope::Channel(ch), payload)
                    .await
                    .is_err()
                {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    }
    // Let the last messages land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let elapsed = measure_start.elapsed().as_secs_f64();
    let after = sample_proc(pid)?;

    let h = hist.lock().await;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let report = Report {
        clients: clients.len(),
        channels: used_channels,
        rate_per_s: args.rate,
        duration_s: elapsed,
        setup_s,
        sent: sent.load(Ordering::Relaxed),
        received: received.load(Ordering::Relaxed),
        send_errors: errors.load(Ordering::Relaxed),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: h.max() as f64 / 1000.0,
        relay_cpu_pct_of_one_core: (after.cpu_s - before.cpu_s) / elapsed * 100.0,
        relay_rss_mb: after.rss_mb,
        relay_peak_rss_mb: after.peak_rss_mb,
    };
    drop(h);
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "clients {} in {} channels, {} msg/s for {:.1} s (setup {:.1} s)",
            report.clients, report.channels, report.rate_per_s, report.duration_s, report.setup_s
        );
        println!(
            "sent {} received {} errors {}",
            report.sent, report.received, report.send_errors
        );
        println!(
            "forward latency p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            report.p50_ms, report.p99_ms, report.p999_ms, report.max_ms
        );
        println!(
            "relay CPU {:.1}% of one core, RSS {:.1} MB (peak {:.1} MB)",
            report.relay_cpu_pct_of_one_core, report.relay_rss_mb, report.relay_peak_rss_mb
        );
    }
    for (c, _) in clients.iter() {
        c.shutdown().await;
    }
    owner.shutdown().await;
    drop(spawned);
    Ok(())
}

/// Run a request, waiting and retrying while the relay says we are over its rate limit (the
/// owner's setup sends hundreds of requests, more than one connection may send at once).
async fn paced<T, F, Fut>(mut f: F) -> Result<T, hum_engine::ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, hum_engine::ClientError>>,
{
    loop {
        match f().await {
            Err(e) if e.code() == Some(hum_proto::signal::ErrorCode::RateLimited) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

async fn receive_loop(
    mut rx: tokio::sync::broadcast::Receiver<ClientEvent>,
    start: Instant,
    hist: Arc<Mutex<Histogram<u64>>>,
    received: Arc<AtomicU64>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match rx.recv().await {
            Ok(ClientEvent::Relay(Event::Signal {
                payload: SignalPayload::Offer { sdp },
                ..
            })) => {
                let Some(t) = sdp
                    .strip_prefix("bench:")
                    .and_then(|t| t.parse::<u64>().ok())
                else {
                    continue;
                };
                let now = start.elapsed().as_nanos() as u64;
                let us = now.saturating_sub(t) / 1000;
                received.fetch_add(1, Ordering::Relaxed);
                let _ = hist.lock().await.record(us.max(1));
            }
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}
