//! `hum bench sfu`: the relay's embedded SFU under a synthetic audio load, measured from a
//! separate load-generator process (this one).
//!
//! The relay runs as its own process (started here, or an existing one with `--relay-pid`),
//! exactly as `scripts/run` starts it: the SFU shares its process and UDP port. This process
//! logs in `rooms x (publishers + subscribers)` accounts through the relay's real signalling
//! (`channel_join`, `sfu_join`, the SFU's `sfu_offer`s), and each account's media runs over
//! its own UDP socket as a [str0m] client (light enough for thousands in one process; the app
//! itself uses webrtc-rs, which the SFU's own tests cover).
//!
//! - A **publisher** sends one Opus-sized packet (80 bytes, 50 per second) whose payload
//!   carries its index, a sequence number and its send time on this process's clock. With
//!   `--video` it also sends a camera: one VP8 m-line (no simulcast), 30 frames per second at
//!   `--video-kbps`, a keyframe every 2 s and whenever the SFU asks: a VP8 frame header (what
//!   an SFU reads to find keyframes) and then the same index, number and send time. Subscribers then offer a video m-line too, so the SFU
//!   estimates their bandwidth (and paces what it sends them) as it does for the app.
//! - A **subscriber** offers one receive-only audio m-line (so it publishes nothing, as the
//!   issue's "10 publishers to 3,000 subscribers" asks). Every participant counts the RTP
//!   datagrams it gets. With audio only, most do nothing else (no SRTP decryption: the load
//!   generator must not be the bottleneck on a small machine); every `--latency-every`th one
//!   decrypts everything through str0m and reads the send time: forward latency publisher ->
//!   SFU -> subscriber, one clock, so an upper bound including both ends' scheduling. With
//!   `--video` all of them decrypt, so all send the TWCC feedback the SFU's estimate needs.
//!
//! The figure of merit is forwarded packets per second per core: the RTP datagrams the
//! participants received in the window over the relay process's CPU seconds (/proc) in it.
//! Delivery is checked from the receiving side too: what they counted against what the
//! publishers sent times the listeners in their room. The SFU's own `rtp_forwarded_total`
//! (the relay's /metrics, refreshed once a second, so only a rough cross-check) is reported
//! beside it.
//!
//! `--sfu janus` puts [Janus](https://janus.conf.meetecho.com/)'s VideoRoom plugin in the
//! relay's place under the same load, on the same machine (module [`janus`]): only the server
//! process and its signalling differ; the clients, their media, the counting and the report
//! are this module's.
//!
//! [str0m]: https://github.com/algesten/str0m

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use hdrhistogram::Histogram;
use hum_engine::{ClientEvent, RelayClient};
use hum_proto::ChannelId;
use hum_proto::signal::{Event, Name, VoiceState};
use hum_proto::units::Bitrate;
use serde::Serialize;
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::{
    SpawnedRelay, bench_identity, client_config, paced, raise_fd_limit, relay_under_test,
    sample_proc,
};
use crate::Cli;

mod janus;

/// Audio packet interval and payload size (Opus at ~32 kbit/s in 20 ms frames).
const PACKET_INTERVAL: Duration = Duration::from_millis(20);
const PAYLOAD_BYTES: usize = 80;
/// First byte of a bench payload (anything else is not ours).
const MAGIC: u8 = 0xb5;
/// How long one participant's ICE + DTLS may take once its signalling is done.
const MEDIA_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// With `--video`: frame interval (30 fps), keyframe interval, and a keyframe's size in
/// delta frames (a camera's keyframe is several times a delta frame).
const FRAME_INTERVAL: Duration = Duration::from_micros(33_333);
const KEYFRAME_EVERY: u32 = 60;
const KEYFRAME_SCALE: usize = 4;
/// A bench video frame's VP8 header: frame tag, start code, width and height.
const VP8_HEADER: usize = 10;

#[derive(Args, Debug)]
pub struct SfuBench {
    /// The SFU under test: Hum's relay with its embedded SFU, or Janus's VideoRoom plugin
    /// (the `janus` binary, started here with a generated configuration).
    #[arg(long, value_enum, default_value_t = SfuKind::Hum)]
    sfu: SfuKind,
    /// Audio publishers per room.
    #[arg(long, default_value_t = 10)]
    publishers: usize,
    /// Listen-only subscribers per room.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Publishers also send video (one VP8 stream each at --video-kbps, 30 fps) and every
    /// participant receives it.
    #[arg(long)]
    video: bool,
    /// With --video: each publisher's video rate, kbit/s.
    #[arg(long, default_value_t = 300)]
    video_kbps: u64,
    /// Rooms (voice channels on the SFU), each with its own publishers and subscribers.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// How long to measure, after everyone is connected and a short warm-up.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Every Nth subscriber decrypts what it gets and measures forward latency (the others
    /// only count datagrams). 1: all of them.
    #[arg(long, default_value_t = 20)]
    latency_every: usize,
    /// Use a relay already running at --relay with this pid instead of starting one. Its
    /// channels are set to the SFU per channel; it needs --max-channel-size large enough.
    #[arg(long)]
    relay_pid: Option<u32>,
    /// The hum-relay binary to start (default: next to this `hum`).
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// Joins in flight at once while connecting.
    #[arg(long, default_value_t = 32)]
    connect_concurrency: usize,
    /// With --sfu janus: the janus binary (default: `janus` on PATH).
    #[arg(long)]
    janus_bin: Option<PathBuf>,
    /// With --sfu janus: the folder holding its `plugins/` and `transports/` (default: found
    /// next to the binary, e.g. /usr/lib/x86_64-linux-gnu/janus for Debian's package).
    #[arg(long)]
    janus_lib: Option<PathBuf>,
    /// With --sfu janus: its `event_loops` setting (0, its default: one thread per handle).
    #[arg(long, default_value_t = 0)]
    janus_event_loops: usize,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SfuKind {
    /// hum-relay with its embedded SFU (hum-sfu).
    Hum,
    /// Janus 1.x with its VideoRoom plugin.
    Janus,
}

#[derive(Serialize, Debug)]
struct Report {
    sfu: SfuKind,
    rooms: usize,
    publishers_per_room: usize,
    subscribers_per_room: usize,
    /// Each publisher's video rate with --video, kbit/s.
    video_kbps: Option<u64>,
    duration_s: f64,
    setup_s: f64,
    /// RTP packets the publishers sent in the window (audio, and video with --video).
    sent: u64,
    /// What their listeners should have received: every other member of the room on Hum's
    /// SFU (publishers hear each other), the subscribers on Janus (its publishers' handles
    /// only send).
    expected: u64,
    /// RTP datagrams the participants received in the window.
    received: u64,
    delivered_ratio: f64,
    /// Received (forwarded and delivered) packets per second.
    forwarded_per_s: f64,
    /// The SFU's own `rtp_forwarded_total` over the window, per second (the relay refreshes
    /// it once a second: a rough cross-check). None for Janus.
    sfu_forwarded_per_s: Option<f64>,
    /// CPU of the server process (the relay, or Janus with all its threads).
    server_cpu_pct_of_one_core: f64,
    /// Delivered packets per CPU-second of the server process: the figure of merit.
    forwarded_per_core_s: f64,
    server_rss_mb: f64,
    server_peak_rss_mb: f64,
    /// The SFU's drops on a full socket buffer in the window. None for Janus.
    sfu_send_dropped: Option<u64>,
    load_generator_cpu_pct_of_one_core: f64,
    latency_samples: u64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    latency_max_ms: f64,
}

/// What every participant adds to while the bench runs.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    connected: AtomicUsize,
    failed: AtomicUsize,
}

struct Shared {
    counters: Counters,
    latency: Mutex<Histogram<u64>>,
    epoch: Instant,
    /// Publishers send only while this is set (after everyone is connected).
    sending: AtomicBool,
    /// With --video: each publisher's video rate.
    video: Option<Bitrate>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Publisher(u16),
    /// Counts RTP datagrams without decrypting them.
    Counter,
    /// Decrypts everything and reads the publishers' send times.
    Measurer,
}

pub async fn run(cli: &Cli, args: &SfuBench) -> Result<()> {
    if args.publishers == 0 || args.rooms == 0 {
        bail!("need at least one publisher and one room");
    }
    if args.publishers > usize::from(u16::MAX) {
        bail!("at most {} publishers per room", u16::MAX);
    }
    if args.video && !(10..=20_000).contains(&args.video_kbps) {
        bail!("--video-kbps must be 10..20000");
    }
    if args.sfu == SfuKind::Janus && (args.relay_pid.is_some() || args.relay_bin.is_some()) {
        bail!("--relay-pid and --relay-bin are for --sfu hum");
    }
    raise_fd_limit();
    str0m::crypto::from_feature_flags().install_process_default();

    let setup_start = Instant::now();
    let server = Arc::new(match args.sfu {
        SfuKind::Hum => Server::Hum(HumServer::start(cli, args).await?),
        SfuKind::Janus => Server::Janus(janus::JanusServer::start(args).await?),
    });
    let pid = server.pid();

    let shared = Arc::new(Shared {
        counters: Counters::default(),
        latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        epoch: Instant::now(),
        sending: AtomicBool::new(false),
        video: args.video.then(|| Bitrate::from_kbps(args.video_kbps)),
    });

    // Publishers first (so subscribers get every track in the SFU's first offer), then
    // subscribers; a bounded number of joins in flight.
    let mut roles = Vec::new();
    for r in 0..args.rooms {
        for p in 0..args.publishers {
            roles.push((r, Role::Publisher((r * args.publishers + p) as u16)));
        }
    }
    for r in 0..args.rooms {
        for s in 0..args.subscribers {
            let measure = args.latency_every > 0 && s % args.latency_every == 0;
            roles.push((
                r,
                if measure {
                    Role::Measurer
                } else {
                    Role::Counter
                },
            ));
        }
    }
    let total = roles.len();
    let sem = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency.max(1)));
    let mut joins = Vec::with_capacity(total);
    for (i, (room, role)) in roles.into_iter().enumerate() {
        // Publishers must be published before subscribers join: wait for them all.
        if i == args.publishers * args.rooms {
            let _all = sem
                .clone()
                .acquire_many_owned(args.connect_concurrency.max(1) as u32)
                .await?;
        }
        let permit = sem.clone().acquire_owned().await?;
        let (server, shared) = (server.clone(), shared.clone());
        joins.push(tokio::spawn(async move {
            let r = server.join(i + 1, room, role, shared).await;
            drop(permit);
            r
        }));
    }
    let mut participants = Vec::with_capacity(total);
    for j in joins {
        participants.push(j.await??);
    }
    // Media connects after signalling: wait for every ICE/DTLS handshake.
    let deadline = Instant::now() + Duration::from_secs(60 + total as u64 / 20);
    loop {
        let c = &shared.counters;
        let (up, failed) = (
            c.connected.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
        );
        if failed > 0 {
            bail!("{failed} of {total} participants' media connections failed");
        }
        if up == total {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {up} of {total} media connections came up");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let setup_s = setup_start.elapsed().as_secs_f64();
    eprintln!(
        "{total} participants in {} room(s) on {:?} connected in {setup_s:.1} s; measuring for {:?}",
        args.rooms, args.sfu, args.duration
    );

    // Warm up (first packets, str0m's first reports), then measure a clean window.
    shared.sending.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The relay's /metrics can take a while to answer under load: it is read outside the
    // window, whose counters and CPU times are all sampled at its two ends.
    let sfu_before = server.counters().await?;
    let sfu_start = Instant::now();
    let c = &shared.counters;
    let (sent0, recv0) = (
        c.sent.load(Ordering::Relaxed),
        c.received.load(Ordering::Relaxed),
    );
    shared.latency.lock().expect("lock").reset();
    let before = sample_proc(pid)?;
    let me_before = sample_proc(std::process::id())?;
    let start = Instant::now();
    tokio::time::sleep(args.duration).await;
    shared.sending.store(false, Ordering::Relaxed);
    let sent = c.sent.load(Ordering::Relaxed) - sent0;
    let elapsed = start.elapsed().as_secs_f64();
    let after = sample_proc(pid)?;
    let me_after = sample_proc(std::process::id())?;
    // Packets in flight at the window's end still count (they were sent in it); nothing is
    // sent after it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = c.received.load(Ordering::Relaxed) - recv0;
    let sfu_after = server.counters().await?;
    let sfu_span = sfu_start.elapsed().as_secs_f64();

    let expected = sent * server.listeners_per_packet(args.publishers, args.subscribers);
    let cpu_s = after.cpu_s - before.cpu_s;
    let sfu_delta = sfu_before.zip(sfu_after).map(|(b, a)| SfuCounters {
        forwarded: a.forwarded.saturating_sub(b.forwarded),
        send_dropped: a.send_dropped.saturating_sub(b.send_dropped),
    });
    let h = shared.latency.lock().expect("lock").clone();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let report = Report {
        sfu: args.sfu,
        rooms: args.rooms,
        publishers_per_room: args.publishers,
        subscribers_per_room: args.subscribers,
        video_kbps: args.video.then_some(args.video_kbps),
        duration_s: elapsed,
        setup_s,
        sent,
        expected,
        received,
        delivered_ratio: if expected == 0 {
            0.0
        } else {
            received as f64 / expected as f64
        },
        forwarded_per_s: received as f64 / elapsed,
        sfu_forwarded_per_s: sfu_delta.as_ref().map(|d| d.forwarded as f64 / sfu_span),
        server_cpu_pct_of_one_core: cpu_s / elapsed * 100.0,
        forwarded_per_core_s: if cpu_s > 0.0 {
            received as f64 / cpu_s
        } else {
            0.0
        },
        server_rss_mb: after.rss_mb,
        server_peak_rss_mb: after.peak_rss_mb,
        sfu_send_dropped: sfu_delta.map(|d| d.send_dropped),
        load_generator_cpu_pct_of_one_core: (me_after.cpu_s - me_before.cpu_s) / elapsed * 100.0,
        latency_samples: h.len(),
        latency_p50_ms: ms(0.5),
        latency_p99_ms: ms(0.99),
        latency_max_ms: h.max() as f64 / 1000.0,
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    for p in participants {
        p.stop().await;
    }
    match Arc::into_inner(server) {
        Some(server) => server.stop().await,
        None => bail!("a join still holds the server under test"),
    }
    Ok(())
}

/// The server under test and its signalling: the one part of the bench that differs between
/// Hum and Janus.
enum Server {
    Hum(HumServer),
    Janus(janus::JanusServer),
}

impl Server {
    /// The process whose CPU and memory are measured.
    fn pid(&self) -> u32 {
        match self {
            Server::Hum(h) => h.pid,
            Server::Janus(j) => j.pid(),
        }
    }

    /// Listeners of each packet a publisher sends.
    fn listeners_per_packet(&self, publishers: usize, subscribers: usize) -> u64 {
        match self {
            // Hum's SFU offers every publisher the others' tracks too.
            Server::Hum(_) => (publishers + subscribers - 1) as u64,
            // A Janus publisher handle only sends; hearing the others would take a second
            // (subscriber) PeerConnection per publisher.
            Server::Janus(_) => subscribers as u64,
        }
    }

    /// The SFU's own counters, where it exports them.
    async fn counters(&self) -> Result<Option<SfuCounters>> {
        match self {
            Server::Hum(h) => sfu_counters(h.metrics_addr).await.map(Some),
            Server::Janus(_) => Ok(None),
        }
    }

    /// Joins participant `n` to room `room` (0-based) in `role`, and returns it once its media
    /// connection is up.
    async fn join(
        &self,
        n: usize,
        room: usize,
        role: Role,
        shared: Arc<Shared>,
    ) -> Result<Participant> {
        let (participant, up) = match self {
            Server::Hum(h) => h.join(n, room, role, shared).await?,
            Server::Janus(j) => j.join(n, room, role, shared).await?,
        };
        // The join (and its slot among --connect-concurrency) lasts until the media connection
        // is up: thousands of DTLS handshakes in flight at once time out.
        match tokio::time::timeout(MEDIA_UP_TIMEOUT, up).await {
            Ok(Ok(())) => Ok(participant),
            Ok(Err(_)) => {
                participant.stop().await;
                bail!("participant {n}: its media connection failed")
            }
            Err(_) => {
                participant.stop().await;
                bail!("participant {n}: no media connection within {MEDIA_UP_TIMEOUT:?}")
            }
        }
    }

    async fn stop(self) {
        match self {
            Server::Hum(h) => h.stop().await,
            Server::Janus(j) => j.stop().await,
        }
    }
}

/// hum-relay (started here, or one already running) with a server whose channels are on the
/// SFU from their first member, one channel per room.
struct HumServer {
    spawned: Option<SpawnedRelay>,
    url: String,
    pid: u32,
    metrics_addr: SocketAddr,
    owner: RelayClient,
    channels: Vec<ChannelId>,
    invite: hum_proto::InviteCode,
}

impl HumServer {
    async fn start(cli: &Cli, args: &SfuBench) -> Result<HumServer> {
        let size = (args.publishers + args.subscribers).to_string();
        let (spawned, url, pid) = relay_under_test(
            cli,
            args.relay_pid,
            args.relay_bin.as_deref(),
            &["--mesh-limit", "0", "--max-channel-size", size.as_str()],
        )
        .await?;
        let metrics_addr = metrics_addr(&url)?;

        // The owner makes one server with a channel per room, on the SFU from the first member.
        let owner = RelayClient::connect(bench_identity(0)?, client_config(&url)).await?;
        let server =
            paced(|| owner.server_create(Name::new("sfu-bench").expect("valid name"))).await?;
        let mut channels = Vec::with_capacity(args.rooms);
        for r in 0..args.rooms {
            let name = Name::new(format!("room-{r}"))?;
            let max = Some((args.publishers + args.subscribers) as u32);
            let ch = paced(|| owner.channel_create(server.id, name.clone(), max, None)).await?;
            paced(|| owner.channel_configure_with_mesh_limit(ch.id, None, None, Some(0))).await?;
            channels.push(ch.id);
        }
        let invite = paced(|| owner.invite_create(server.id, None, None))
            .await?
            .code;
        Ok(HumServer {
            spawned,
            url,
            pid,
            metrics_addr,
            owner,
            channels,
            invite,
        })
    }

    /// Logs participant `n` in, joins its channel and the SFU through the relay's signalling;
    /// the SFU's later offers (new tracks) are answered by its media task.
    async fn join(
        &self,
        n: usize,
        room: usize,
        role: Role,
        shared: Arc<Shared>,
    ) -> Result<(Participant, oneshot::Receiver<()>)> {
        let channel = self.channels[room];
        let client = RelayClient::connect(bench_identity(n)?, client_config(&self.url)).await?;
        paced(|| client.invite_join(self.invite.clone())).await?;
        // Subscribe before joining: the SFU's first offer may come right after its answer.
        let mut events = client.subscribe();
        paced(|| client.channel_join(channel, VoiceState::default())).await?;

        let (mut rtc, socket, local) = new_client(Ipv4Addr::LOCALHOST.into()).await?;
        let stream = match role {
            Role::Publisher(_) => Some(client.user_id().to_string()),
            _ => None,
        };
        let offer = make_offer(&mut rtc, role, stream, shared.video.is_some())?;
        let answer = paced(|| client.sfu_join(channel, offer.sdp.clone())).await?;
        accept_answer(&mut rtc, offer.pending, &answer)?;

        let (cmd_tx, cmd_rx) = mpsc::channel::<OfferCmd>(8);
        let conn = MediaConn {
            rtc,
            socket,
            local,
            mid: Some(offer.audio),
            video_mid: offer.video,
        };
        let (media, up) = spawn_media(conn, role, Some(cmd_rx), shared);
        let c = client.clone();
        let offers = tokio::spawn(async move {
            loop {
                let ev = match events.recv().await {
                    Ok(ev) => ev,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                if let ClientEvent::Relay(Event::SfuOffer { channel: ch, sdp }) = ev
                    && ch == channel
                {
                    let (tx, rx) = oneshot::channel();
                    if cmd_tx.send((sdp, tx)).await.is_err() {
                        return;
                    }
                    match rx.await {
                        Ok(Ok(answer)) => {
                            if let Err(e) = c.sfu_answer(answer).await {
                                eprintln!("sfu_answer: {e}");
                            }
                        }
                        Ok(Err(e)) => eprintln!("the SFU's offer: {e:#}"),
                        Err(_) => return,
                    }
                }
            }
        });
        let participant = Participant {
            media,
            signalling: Signalling::Hum { client, offers },
        };
        Ok((participant, up))
    }

    async fn stop(self) {
        self.owner.shutdown().await;
        drop(self.spawned);
    }
}

fn print_report(r: &Report) {
    let server = match r.sfu {
        SfuKind::Hum => "relay",
        SfuKind::Janus => "janus",
    };
    let video = r
        .video_kbps
        .map(|k| format!(" + VP8 {k} kbit/s 30 fps"))
        .unwrap_or_default();
    println!(
        "{:?}: {} room(s) x ({} publishers + {} subscribers), audio 50 packets/s each{video}, {:.1} s (setup {:.1} s)",
        r.sfu, r.rooms, r.publishers_per_room, r.subscribers_per_room, r.duration_s, r.setup_s
    );
    let drops = r
        .sfu_send_dropped
        .map(|d| format!(", SFU send drops {d}"))
        .unwrap_or_default();
    println!(
        "sent {} received {} of {} expected ({:.2}%){drops}",
        r.sent,
        r.received,
        r.expected,
        r.delivered_ratio * 100.0,
    );
    let counter = r
        .sfu_forwarded_per_s
        .map(|f| format!(" (the SFU's counter: ~{f:.0})"))
        .unwrap_or_default();
    println!(
        "forwarded {:.0} packets/s{counter}; {server} CPU {:.1}% of one core -> {:.0} forwarded packets/s per core",
        r.forwarded_per_s, r.server_cpu_pct_of_one_core, r.forwarded_per_core_s
    );
    println!(
        "{server} RSS {:.1} MB (peak {:.1} MB); load generator CPU {:.1}% of one core",
        r.server_rss_mb, r.server_peak_rss_mb, r.load_generator_cpu_pct_of_one_core
    );
    println!(
        "forward latency ({} samples) p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        r.latency_samples, r.latency_p50_ms, r.latency_p99_ms, r.latency_max_ms
    );
}

/// One bench account in its room: its media task and its signalling.
struct Participant {
    media: tokio::task::JoinHandle<()>,
    signalling: Signalling,
}

enum Signalling {
    /// Its relay session, and the task answering the SFU's offers.
    Hum {
        client: RelayClient,
        offers: tokio::task::JoinHandle<()>,
    },
    /// Its VideoRoom handle.
    Janus { api: Arc<janus::Api>, handle: u64 },
}

impl Participant {
    async fn stop(self) {
        self.media.abort();
        match self.signalling {
            Signalling::Hum { client, offers } => {
                offers.abort();
                let _ = client.sfu_leave().await;
                client.shutdown().await;
            }
            Signalling::Janus { api, handle } => {
                let _ = api.detach(handle).await;
            }
        }
    }
}

/// A request to the media task: accept the SFU's offer and hand back the answer.
type OfferCmd = (String, oneshot::Sender<Result<String>>);

/// A str0m client (Opus, and VP8 for --video) on its own UDP socket on `ip` (a local
/// address).
async fn new_client(ip: IpAddr) -> Result<(Rtc, UdpSocket, SocketAddr)> {
    let socket = UdpSocket::bind((ip, 0)).await?;
    let local = socket.local_addr()?;
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .set_rtp_mode(false)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp")?);
    Ok((rtc, socket, local))
}

/// A client's first offer and the m-lines in it.
struct Offer {
    audio: Mid,
    video: Option<Mid>,
    sdp: String,
    pending: str0m::change::SdpPendingOffer,
}

/// The client's offer: one audio m-line (and a video one with `video`), send-only for a
/// publisher (in media stream `stream`), receive-only otherwise.
fn make_offer(rtc: &mut Rtc, role: Role, stream: Option<String>, video: bool) -> Result<Offer> {
    let dir = match role {
        Role::Publisher(_) => Direction::SendOnly,
        _ => Direction::RecvOnly,
    };
    let mut api = rtc.sdp_api();
    let audio = api.add_media(MediaKind::Audio, dir, stream.clone(), None, None);
    let video = video.then(|| api.add_media(MediaKind::Video, dir, stream, None, None));
    let (offer, pending) = api.apply().context("no offer to make")?;
    Ok(Offer {
        audio,
        video,
        sdp: offer.to_sdp_string(),
        pending,
    })
}

fn accept_answer(
    rtc: &mut Rtc,
    pending: str0m::change::SdpPendingOffer,
    answer: &str,
) -> Result<()> {
    let answer = str0m::change::SdpAnswer::from_sdp_string(answer)
        .map_err(|e| anyhow::anyhow!("the SFU's answer: {e}"))?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| anyhow::anyhow!("accepting the SFU's answer: {e}"))
}

/// Accepts the SFU's offer and returns the client's answer.
fn accept_offer(rtc: &mut Rtc, offer: &str) -> Result<String> {
    let offer = SdpOffer::from_sdp_string(offer).map_err(|e| anyhow::anyhow!("{e}"))?;
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(answer.to_sdp_string())
}

/// Starts a participant's media task; the receiver fires once its connection is up. `offers`
/// brings the SFU's renegotiations, if it makes any (the task ends when they end).
fn spawn_media(
    conn: MediaConn,
    role: Role,
    offers: Option<mpsc::Receiver<OfferCmd>>,
    shared: Arc<Shared>,
) -> (tokio::task::JoinHandle<()>, oneshot::Receiver<()>) {
    let (up_tx, up) = oneshot::channel();
    (
        tokio::spawn(media_loop(conn, role, offers, up_tx, shared)),
        up,
    )
}

/// One participant's str0m client, its socket and (for a publisher) the m-lines it sends on.
struct MediaConn {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    mid: Option<Mid>,
    video_mid: Option<Mid>,
}

/// RTP (not RTCP, STUN or DTLS) by RFC 5761's demultiplexing rule.
fn is_rtp(d: &[u8]) -> bool {
    d.len() >= 12 && (128..192).contains(&d[0]) && !(192..224).contains(&d[1])
}

/// Drives one str0m client: its socket, its timers, the SFU's renegotiations, and (for a
/// publisher) a packet every 20 ms and with --video a frame every 33 ms while the bench is
/// sending. A publisher counts the RTP datagrams it transmits (a video frame is several).
async fn media_loop(
    conn: MediaConn,
    role: Role,
    mut offers: Option<mpsc::Receiver<OfferCmd>>,
    up: oneshot::Sender<()>,
    shared: Arc<Shared>,
) {
    let MediaConn {
        mut rtc,
        socket,
        local,
        mid,
        video_mid,
    } = conn;
    let mut up = Some(up);
    let mut buf = vec![0u8; 2048];
    let mut connected = false;
    let mut seq: u32 = 0;
    let mut next_send = Instant::now();
    let mut frame: u32 = 0;
    let mut next_frame = Instant::now();
    let mut keyframe_asked = false;
    let counters = &shared.counters;
    let is_publisher = matches!(role, Role::Publisher(_));
    loop {
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    if is_publisher && is_rtp(&t.contents) {
                        counters.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => match e {
                    str0m::Event::Connected => {
                        connected = true;
                        counters.connected.fetch_add(1, Ordering::Relaxed);
                        if let Some(up) = up.take() {
                            let _ = up.send(());
                        }
                    }
                    str0m::Event::MediaData(d) if role == Role::Measurer => {
                        record_latency(&shared, &d.data);
                    }
                    str0m::Event::KeyframeRequest(_) => keyframe_asked = true,
                    _ => {}
                },
                Err(e) => {
                    eprintln!("media connection: {e}");
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        };
        if !rtc.is_alive() {
            if !connected {
                counters.failed.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let publishing = is_publisher && connected && shared.sending.load(Ordering::Relaxed);
        let video = shared.video.zip(video_mid);
        let wake = match (publishing, video) {
            (false, _) => timeout,
            (true, None) => timeout.min(next_send),
            (true, Some(_)) => timeout.min(next_send).min(next_frame),
        };
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let Ok((len, src)) = r else { continue };
                let data = &buf[..len];
                if is_rtp(data) {
                    counters.received.fetch_add(1, Ordering::Relaxed);
                    // With video every client decrypts and so sends the transport-wide
                    // feedback the SFU's bandwidth estimate lives on (without it the estimate
                    // stays at its start and the SFU's pacer holds video back).
                    if role == Role::Counter && shared.video.is_none() {
                        continue;
                    }
                }
                if let Ok(recv) = Receive::new(Protocol::Udp, src, local, data) {
                    let _ = rtc.handle_input(Input::Receive(Instant::now(), recv));
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if publishing && now >= next_send {
                    if let (Role::Publisher(index), Some(mid)) = (role, mid) {
                        send_packet(&mut rtc, mid, index, seq, now, &shared);
                        seq = seq.wrapping_add(1);
                    }
                    // Keep the 50/s cadence; after a stall, skip the missed slots instead of
                    // catching up (a slot already due would send twice in a row).
                    next_send += PACKET_INTERVAL;
                    if next_send <= now {
                        next_send = now + PACKET_INTERVAL;
                    }
                }
                if publishing && now >= next_frame
                    && let (Role::Publisher(index), Some((rate, mid))) = (role, video)
                {
                    let keyframe = keyframe_asked || frame.is_multiple_of(KEYFRAME_EVERY);
                    keyframe_asked = false;
                    send_frame(&mut rtc, mid, index, frame, keyframe, rate, now, &shared);
                    frame = frame.wrapping_add(1);
                    next_frame += FRAME_INTERVAL;
                    if next_frame <= now {
                        next_frame = now + FRAME_INTERVAL;
                    }
                }
                let _ = rtc.handle_input(Input::Timeout(now));
            }
            cmd = async {
                match offers.as_mut() {
                    Some(o) => o.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let Some((sdp, reply)) = cmd else { return };
                let _ = reply.send(accept_offer(&mut rtc, &sdp));
            }
        }
    }
}

fn send_packet(rtc: &mut Rtc, mid: Mid, index: u16, seq: u32, now: Instant, shared: &Shared) {
    let Some(writer) = rtc.writer(mid) else {
        return;
    };
    let Some(pt) = writer
        .payload_params()
        .find(|p| p.spec().codec == Codec::Opus)
        .map(|p| p.pt())
    else {
        return;
    };
    let mut payload = vec![0u8; PAYLOAD_BYTES];
    stamp(&mut payload, MAGIC, index, seq, now, shared);
    // 960 samples of 48 kHz per 20 ms packet.
    let rtp_time = MediaTime::new(u64::from(seq) * 960, Frequency::FORTY_EIGHT_KHZ);
    let _ = writer.write(pt, now, rtp_time, payload);
}

/// One video frame of a publisher's camera at `rate` (str0m packetizes it for VP8): a VP8
/// frame header (3-byte tag; a keyframe's start code and 640x360) and the bench's stamp.
#[allow(clippy::too_many_arguments)]
fn send_frame(
    rtc: &mut Rtc,
    mid: Mid,
    index: u16,
    frame: u32,
    keyframe: bool,
    rate: Bitrate,
    now: Instant,
    shared: &Shared,
) {
    let Some(writer) = rtc.writer(mid) else {
        return;
    };
    let Some(pt) = writer
        .payload_params()
        .find(|p| p.spec().codec == Codec::Vp8)
        .map(|p| p.pt())
    else {
        return;
    };
    let per_frame = (rate.bytes_per_sec() as f64 * FRAME_INTERVAL.as_secs_f64()) as usize;
    let size = if keyframe {
        per_frame * KEYFRAME_SCALE
    } else {
        per_frame
    };
    let mut data = vec![0u8; size.max(VP8_HEADER + PAYLOAD_BYTES)];
    data[..VP8_HEADER].copy_from_slice(&if keyframe {
        [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]
    } else {
        [0x11, 0x02, 0x00, 0, 0, 0, 0, 0, 0, 0]
    });
    stamp(&mut data[VP8_HEADER..], MAGIC, index, frame, now, shared);
    // 3,000 ticks of 90 kHz per frame at 30 fps.
    let rtp_time = MediaTime::new(u64::from(frame) * 3_000, Frequency::NINETY_KHZ);
    let _ = writer.write(pt, now, rtp_time, data);
}

/// Writes the bench header: first byte, publisher index, sequence number, send time.
fn stamp(payload: &mut [u8], first: u8, index: u16, seq: u32, now: Instant, shared: &Shared) {
    payload[0] = first;
    payload[1..3].copy_from_slice(&index.to_be_bytes());
    payload[3..7].copy_from_slice(&seq.to_be_bytes());
    let sent_ns = now.duration_since(shared.epoch).as_nanos() as u64;
    payload[7..15].copy_from_slice(&sent_ns.to_be_bytes());
}

fn record_latency(shared: &Shared, data: &[u8]) {
    // An audio packet starts with the stamp, a video frame (a VP8 tag first) after its header.
    let data = match data.first() {
        Some(&MAGIC) => data,
        Some(_) => data.get(VP8_HEADER..).unwrap_or_default(),
        None => return,
    };
    if data.len() < 15 || data[0] != MAGIC {
        return;
    }
    let sent_ns = u64::from_be_bytes(data[7..15].try_into().expect("8 bytes"));
    let now_ns = shared.epoch.elapsed().as_nanos() as u64;
    let us = now_ns.saturating_sub(sent_ns) / 1000;
    let _ = shared.latency.lock().expect("lock").record(us.max(1));
}

/// The relay's HTTP address (for /metrics) from its WebSocket URL.
fn metrics_addr(url: &str) -> Result<SocketAddr> {
    let host = url
        .strip_prefix("ws://")
        .and_then(|r| r.split('/').next())
        .with_context(|| format!("{url}: expected ws://HOST:PORT/ws (a local relay)"))?;
    host.parse()
        .with_context(|| format!("{url}: expected an IP address and port"))
}

struct SfuCounters {
    forwarded: u64,
    send_dropped: u64,
}

/// `hum_sfu_rtp_forwarded_total` and `hum_sfu_send_dropped_total` from the relay's /metrics.
async fn sfu_counters(addr: SocketAddr) -> Result<SfuCounters> {
    let body = http_request(addr, "GET", "/metrics", None)
        .await
        .with_context(|| format!("reading the relay's /metrics at {addr}"))?;
    let body = String::from_utf8_lossy(&body);
    let value = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .with_context(|| format!("the relay's /metrics has no {name} (is its SFU on?)"))
    };
    Ok(SfuCounters {
        forwarded: value("hum_sfu_rtp_forwarded_total")?,
        send_dropped: value("hum_sfu_send_dropped_total")?,
    })
}

/// One plain HTTP/1.0 request to a local server (the relay's /metrics, Janus's API; no
/// keep-alive, no TLS: all this tool needs), returning the body of a 200 answer.
async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    if let Some(b) = body {
        s.write_all(b).await?;
    }
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await?;
    parse_http_response(&resp).with_context(|| format!("{method} {path} at {addr}"))
}

/// The body of an HTTP/1.x response if its status is 200 (a chunked body is decoded).
fn parse_http_response(resp: &[u8]) -> Result<Vec<u8>> {
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the response's headers")?;
    let head = String::from_utf8_lossy(&resp[..split]);
    let body = &resp[split + 4..];
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        bail!(
            "HTTP status {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Ok(body.to_vec());
    }
    let (mut out, mut rest) = (Vec::new(), body);
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk size without its line end")?;
        let size = std::str::from_utf8(&rest[..eol])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok())
            .context("a bad chunk size")?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).context("a chunk cut short")?;
        out.extend_from_slice(chunk);
        rest = rest
            .get(size + 2..)
            .context("a chunk without its line end")?;
    }
}

#[cfg(test)]
mod tests {
    use super::parse_http_response;

    #[test]
    fn http_responses_parse_plain_and_chunked_and_refuse_errors() {
        let plain = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_http_response(plain).unwrap(), b"{}");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(parse_http_response(chunked).unwrap(), b"{\"a\":1}");
        assert!(parse_http_response(b"HTTP/1.0 404 Not Found\r\n\r\nnope").is_err());
        assert!(parse_http_response(b"HTTP/1.0 200 OK\r\n").is_err());
        let short = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nab";
        assert!(parse_http_response(short).is_err());
    }
}
