//! `hum stream start` (go live with a test pattern: each chunk is signed and uploaded once to the
//! relay, which is the stream's root seed and tracker), `hum watch STREAM` (a headless viewer
//! that relays to others and reports), and recordings (`hum stream recordings|play|delete`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use hum_engine::ice::IceConfig;
use hum_engine::stream::playback::fetch_recording;
use hum_engine::stream::player::{AudioPlayout, FrameHasher, spawn_player};
use hum_engine::stream::session::{RecordingOptions, RecordingSession};
use hum_engine::stream::session::{mesh_ticket, mesh_url};
use hum_engine::stream::source::{AudioInput, LayerSpec, SourceConfig, VideoInput};
use hum_engine::stream::{
    EndReason, LiveOptions, LiveSession, PlayedChunk, WatchOptions, WatchSession,
};
use hum_mesh::Layer;
use hum_proto::signal::{Name, Reply, Request, StreamInfo};
use hum_proto::{Bitrate, StreamId};
use serde_json::json;

use crate::Cli;
use crate::commands::connect;

#[derive(Subcommand, Debug)]
pub enum StreamCmd {
    /// Go live in a channel. Prints the stream id, then (at the end) what the root seed sent.
    Start(Box<StartArgs>),
    /// The live streams of a server.
    List {
        #[arg(long)]
        server: String,
    },
    /// The recordings kept in a server.
    Recordings {
        #[arg(long)]
        server: String,
    },
    /// Fetch a recording from the relay, verifying every chunk against the streamer's key.
    Play {
        /// The recording id (from `hum stream recordings`).
        recording: u64,
    },
    /// Delete one of your recordings.
    DeleteRecording { recording: u64 },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// hum-media's test pattern (moving boxes and a frame code) through VP8, and a 440 Hz tone.
    Pattern,
    /// A Y4M file (`--file`), looped.
    File,
    /// The first camera.
    Camera,
    /// The primary screen.
    Screen,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    #[arg(long)]
    pub server: String,
    #[arg(long)]
    pub channel: String,
    #[arg(long, default_value = "live")]
    pub title: String,
    #[arg(long, value_enum, default_value = "pattern")]
    pub source: Source,
    /// The Y4M file of `--source file`.
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// Sound from the default microphone instead of the tone.
    #[arg(long)]
    pub mic: bool,
    #[arg(long, default_value_t = 320)]
    pub width: u32,
    #[arg(long, default_value_t = 180)]
    pub height: u32,
    /// Frames per second; a chunk must be a whole number of frames.
    #[arg(long, default_value_t = 20)]
    pub fps: u32,
    /// VP8 target bitrate in kbit/s.
    #[arg(long, default_value_t = 300)]
    pub video_kbps: u64,
    /// Chunk duration in ms (100-500; one keyframe per chunk).
    #[arg(long, default_value_t = 250)]
    pub chunk_ms: u32,
    /// No audio track.
    #[arg(long)]
    pub no_audio: bool,
    /// Let the relay keep a recording (viewers see that it does).
    #[arg(long)]
    pub record: bool,
    /// Stop after this long (e.g. 60s); default: until interrupted.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Local UDP address for the mesh's WebRTC links.
    #[arg(long, default_value = "0.0.0.0:0")]
    pub bind: String,
    /// Hide my IP: the mesh's WebRTC links go through the relay's TURN server only, so no
    /// host or server-reflexive address is sent to other viewers (the relay must hand out TURN
    /// credentials). Costs latency (an extra hop) and the TURN server's bandwidth.
    #[arg(long)]
    pub relay_only: bool,
    /// A layer below the top one (the --width/--height/--video-kbps picture, `high`), best
    /// first: `NAME:WxH@KBPS` (NAME medium or low) or `audio` (audio only). Repeat for several.
    #[arg(long = "layer", value_parser = parse_layer)]
    pub layers: Vec<LayerSpec>,
    /// Your measured upload in kbit/s: the best layers are left out while the ladder would not
    /// fit in it (with 20% headroom).
    #[arg(long)]
    pub upload_kbps: Option<u64>,
    /// Testing only: close the upload link to the relay after this long (it is reopened).
    #[arg(long, hide = true, value_parser = humantime::parse_duration)]
    pub drop_root_after: Option<Duration>,
    /// Decode every frame published (each layer) and write each picture's hash here, one a
    /// line: `layer media_time_us blake3_hex` (compare with `hum watch --frame-hashes`).
    #[arg(long)]
    pub frame_hashes: Option<std::path::PathBuf>,
}

/// `low:160x90@100` or `audio`.
fn parse_layer(s: &str) -> Result<LayerSpec, String> {
    if s == "audio" {
        return Ok(LayerSpec::audio_only());
    }
    let bad = || format!("{s}: expected NAME:WxH@KBPS (NAME medium or low) or audio");
    let (name, rest) = s.split_once(':').ok_or_else(bad)?;
    let layer = match name {
        "medium" => Layer::Medium,
        "low" => Layer::Low,
        _ => return Err(bad()),
    };
    let (size, kbps) = rest.split_once('@').ok_or_else(bad)?;
    let (w, h) = size.split_once('x').ok_or_else(bad)?;
    let num = |v: &str| v.parse::<u32>().map_err(|_| bad());
    let (width, height) = (num(w)?, num(h)?);
    if width == 0 || height == 0 || width % 2 == 1 || height % 2 == 1 {
        return Err(format!("{s}: the picture must be even and not empty"));
    }
    Ok(LayerSpec {
        layer,
        width,
        height,
        video_bitrate: Bitrate::from_kbps(u64::from(num(kbps)?)),
    })
}

/// The bandwidth panel's relay contribution, as `hum watch --contribution` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RelayLevel {
    Off,
    Low,
    Medium,
    High,
    Custom,
}

/// `--contribution LEVEL --upload-kbps N [--relay-kbps C]` as the settings the app would save.
fn relay_settings(
    level: RelayLevel,
    upload_kbps: u64,
    custom_kbps: u64,
) -> Result<hum_engine::budget::model::BandwidthSettings> {
    use hum_engine::budget::model::{
        BandwidthSettings, RelayContribution, ReservedUpload, TotalUpload,
    };
    let relay = match level {
        RelayLevel::Off => RelayContribution::Off,
        RelayLevel::Low => RelayContribution::Low,
        RelayLevel::Medium => RelayContribution::Medium,
        RelayLevel::High => RelayContribution::High,
        RelayLevel::Custom => RelayContribution::Custom {
            rate: Bitrate::from_kbps(custom_kbps),
        },
    };
    let settings = BandwidthSettings {
        total_upload: TotalUpload::Manual {
            rate: Bitrate::from_kbps(upload_kbps),
        },
        reserved: ReservedUpload::Manual {
            rate: Bitrate::ZERO,
        },
        relay,
        ..BandwidthSettings::default()
    };
    settings.validate().map_err(|e| anyhow!("{e}"))?;
    Ok(settings)
}

/// A bandwidth service for a viewer, as the app runs one: the throttler probes the RTT to the
/// relay over the signalling connection. Waits (at most 3 s) for the throttler's warm-up, so
/// the grants the tracker gives at the join can be served at once (the app's service runs from
/// login and has warmed up long before one watches).
async fn viewer_budget(
    client: &hum_engine::relay::RelayClient,
    settings: hum_engine::budget::model::BandwidthSettings,
) -> hum_engine::budget::BudgetService {
    use hum_engine::budget::{BudgetConfig, BudgetService, RelayPingProber};
    let relaying = settings.relay != hum_engine::budget::model::RelayContribution::Off;
    let mut config = BudgetConfig::new(settings);
    // The total is typed in and nothing is reserved: no interface counters or process list.
    config.system_sample_every = None;
    if relaying {
        config.relay_prober = Some(std::sync::Arc::new(RelayPingProber::new(
            client.clone(),
            Duration::from_secs(1),
        )));
        config.throttler.probe_interval = RelayPingProber::THROTTLER_INTERVAL;
    }
    let service = BudgetService::spawn(config);
    if relaying {
        let until = Instant::now() + Duration::from_secs(3);
        while service.relay_cap() == Bitrate::ZERO && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    service
}

/// `high`, `medium`, `low`, `audio`.
fn parse_quality(s: &str) -> Result<Layer, String> {
    Ok(match s {
        "high" => Layer::High,
        "medium" => Layer::Medium,
        "low" => Layer::Low,
        "audio" => Layer::Audio,
        _ => return Err(format!("{s}: expected high, medium, low or audio")),
    })
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The stream id (from `hum stream list` or the streamer's output), or with --recording a
    /// recording id (from `hum stream recordings`).
    pub stream: u64,
    /// Watch a recording in the on-demand mesh: its viewers fetch the whole range from each
    /// other, rarest first, the relay's store as root. Runs until --duration (serving later
    /// viewers after it holds everything) or, without it, until every chunk is played.
    #[arg(long, conflicts_with_all = ["quality", "auto", "switch_to", "play"])]
    pub recording: bool,
    /// Upload (kbit/s) you give to relaying the stream to other viewers; 0: none. Without
    /// --contribution it is a bucket of this viewer's own; with `--contribution custom` it is
    /// the custom limit.
    #[arg(long, default_value_t = 2000)]
    pub relay_kbps: u64,
    /// Relay contribution as the app's bandwidth panel sets it, through a bandwidth service:
    /// `off`, `low` (10% of --upload-kbps), `medium` (25%), `high` (50%) or `custom`
    /// (--relay-kbps), every relayed chunk spending the service's one upload bucket (own media
    /// first) under the throttler's cap, which follows the RTT to the relay. The report gains
    /// `budget`.
    #[arg(
        long,
        value_enum,
        requires = "upload_kbps",
        conflicts_with = "recording"
    )]
    pub contribution: Option<RelayLevel>,
    /// With --contribution: your total upload in kbit/s (the bandwidth panel's manual limit;
    /// nothing is reserved for other apps).
    #[arg(long)]
    pub upload_kbps: Option<u64>,
    /// Stop after this long; default: until the stream ends or you interrupt.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Local UDP address for the mesh's WebRTC links.
    #[arg(long, default_value = "0.0.0.0:0")]
    pub bind: String,
    /// Hide my IP: the mesh's WebRTC links go through the relay's TURN server only, so no
    /// host or server-reflexive address is sent to other viewers (the relay must hand out TURN
    /// credentials). Costs latency (an extra hop) and the TURN server's bandwidth.
    #[arg(long)]
    pub relay_only: bool,
    /// Testing only: serve every chunk to other viewers with its payload altered.
    #[arg(long, hide = true)]
    pub corrupt: bool,
    /// Testing only: close the link to the relay's root after this long (it is reopened).
    #[arg(long, hide = true, value_parser = humantime::parse_duration)]
    pub drop_root_after: Option<Duration>,
    /// The layer to watch (high, medium, low, audio); default: the best the stream has.
    #[arg(long, value_parser = parse_quality)]
    pub quality: Option<Layer>,
    /// Auto quality: move between --quality (default the best) and the layers below it as the
    /// player stalls (down) or plays cleanly for a while (up).
    #[arg(long)]
    pub auto: bool,
    /// Switch to this layer after `--switch-after` (at a chunk boundary, without a gap; a fixed
    /// pick, as in the app's quality menu: `--auto` stops there).
    #[arg(long, value_parser = parse_quality, requires = "switch_after")]
    pub switch_to: Option<Layer>,
    #[arg(long, value_parser = humantime::parse_duration)]
    pub switch_after: Option<Duration>,
    /// Play what arrives: the sound decoded into a paced sink (a WAV file with --audio-wav,
    /// else nowhere) and the picture's frames paced as the app's player paces them; the report
    /// gains `audio` and `video_frames`.
    #[arg(long)]
    pub play: bool,
    /// With --play: write the stream's sound here (48 kHz mono WAV).
    #[arg(long, requires = "play")]
    pub audio_wav: Option<std::path::PathBuf>,
    /// Decode every frame played and write each picture's hash here, one a line: `layer
    /// media_time_us blake3_hex` (the streamer's `hum stream start --frame-hashes` has the same
    /// line for every picture that arrived intact); the report gains `decode`.
    #[arg(long, conflicts_with = "recording")]
    pub frame_hashes: Option<std::path::PathBuf>,
}

/// `--frame-hashes`: a task that decodes and hashes every chunk it is sent, then hands it on to
/// `next` (the player) if there is one. Its hasher comes back once every sender is gone.
fn spawn_hasher(
    next: Option<tokio::sync::mpsc::Sender<PlayedChunk>>,
) -> Result<(
    tokio::sync::mpsc::Sender<PlayedChunk>,
    tokio::task::JoinHandle<FrameHasher>,
)> {
    let mut hasher = FrameHasher::new().map_err(|e| anyhow!("VP8 decoder: {e}"))?;
    // Deep enough for a few seconds of every layer: a full queue would drop chunks unhashed.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<PlayedChunk>(256);
    let task = tokio::spawn(async move {
        while let Some(c) = rx.recv().await {
            hasher.push(&c);
            if let Some(n) = &next {
                let _ = n.try_send(c);
            }
        }
        hasher
    });
    Ok((tx, task))
}

/// Waits for the hasher (its senders were dropped with the session), writes its lines to `path`.
async fn finish_hasher(
    task: tokio::task::JoinHandle<FrameHasher>,
    path: &std::path::Path,
) -> Result<hum_engine::stream::player::DecodeReport> {
    let hasher = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .context("the frame hasher did not finish")?
        .context("the frame hasher failed")?;
    std::fs::write(path, hasher.to_lines())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(hasher.report())
}

/// Waits for the stream to end, the duration to pass or an interrupt.
async fn until_end(
    ended: &mut tokio::sync::watch::Receiver<Option<EndReason>>,
    until: Option<Instant>,
) -> &'static str {
    let sleep = async {
        match until {
            Some(t) => tokio::time::sleep_until(t.into()).await,
            None => std::future::pending().await,
        }
    };
    let end = async {
        loop {
            if let Some(r) = *ended.borrow_and_update() {
                return r.as_str();
            }
            if ended.changed().await.is_err() {
                return EndReason::ClientStopped.as_str();
            }
        }
    };
    tokio::select! {
        _ = sleep => "duration",
        _ = tokio::signal::ctrl_c() => "interrupted",
        why = end => why,
    }
}

fn print_info(cli: &Cli, s: &StreamInfo) {
    if cli.json {
        println!("{}", json!({"stream": s}));
    } else {
        println!(
            "stream {} \"{}\" by {} in channel {}: {} kbit/s, {} ms chunks, {} viewers",
            s.id,
            s.title,
            s.streamer.display_name,
            s.channel,
            s.bitrate.bps() / 1000,
            s.chunk_ms,
            s.viewers
        );
    }
}

pub async fn run_stream(cli: &Cli, cmd: &StreamCmd) -> Result<()> {
    match cmd {
        StreamCmd::List { server } => {
            let client = connect(cli).await?;
            let s = crate::resolve::server(&client, server).await?;
            match client.request(Request::StreamList { server: s.id }).await? {
                Reply::Streams { streams } => {
                    for st in &streams {
                        print_info(cli, st);
                    }
                }
                r => bail!("unexpected reply {r:?}"),
            }
            client.shutdown().await;
            Ok(())
        }
        StreamCmd::Start(args) => start(cli, args).await,
        StreamCmd::Recordings { server } => {
            let client = connect(cli).await?;
            let s = crate::resolve::server(&client, server).await?;
            match client
                .request(Request::RecordingList { server: s.id })
                .await?
            {
                Reply::Recordings { recordings } => {
                    for r in &recordings {
                        if cli.json {
                            println!("{}", json!({ "recording": r }));
                        } else {
                            println!(
                                "recording {} \"{}\" by {}: {} chunks, {} bytes{}",
                                r.id,
                                r.title,
                                r.streamer.display_name,
                                r.chunks,
                                r.bytes,
                                if r.ended { "" } else { " (live)" }
                            );
                        }
                    }
                }
                r => bail!("unexpected reply {r:?}"),
            }
            client.shutdown().await;
            Ok(())
        }
        StreamCmd::Play { recording } => play(cli, *recording).await,
        StreamCmd::DeleteRecording { recording } => {
            let client = connect(cli).await?;
            client
                .request(Request::RecordingDelete {
                    recording: *recording,
                })
                .await
                .context("deleting the recording")?;
            client.shutdown().await;
            Ok(())
        }
    }
}

/// `hum watch --recording ID`: the on-demand mesh.
async fn watch_recording(cli: &Cli, args: &WatchArgs) -> Result<()> {
    let client = connect(cli).await?;
    let info = find_recording(&client, args.stream).await?;
    let session = RecordingSession::join(
        &client,
        &info,
        &cli.relay,
        RecordingOptions {
            bind: vec![args.bind.clone()],
            ice: IceConfig::from_relay(&client, args.relay_only).await?,
            relay: Bitrate::from_kbps(args.relay_kbps),
            corrupt: args.corrupt,
            played: None,
        },
    )
    .await
    .map_err(|e| anyhow!("joining the recording's swarm: {e}"))?;
    let began = Instant::now();
    if let Some(d) = args.drop_root_after {
        tokio::time::sleep(d).await;
        session.drop_root_link();
    }
    let mut reports = session.report_watch();
    let done = async {
        while !reports.borrow_and_update().complete {
            if reports.changed().await.is_err() {
                break;
            }
        }
    };
    let why = match args.duration {
        Some(d) => {
            tokio::select! {
                _ = tokio::time::sleep_until((began + d).into()) => "duration",
                _ = tokio::signal::ctrl_c() => "interrupted",
            }
        }
        None => {
            tokio::select! {
                _ = done => "complete",
                _ = tokio::signal::ctrl_c() => "interrupted",
            }
        }
    };
    let report = session.stop().await;
    let secs = began.elapsed().as_secs_f64();
    if cli.json {
        println!(
            "{}",
            json!({"recording": info, "ended": why, "seconds": secs, "viewer": report})
        );
    } else {
        println!(
            "recording {} ({why}, {secs:.1} s): played {} of {} chunks ({} verified, {} corrupt); {} chunks from peers, {} from the relay; served {} chunks to others",
            info.id,
            report.played,
            report.recording_chunks,
            report.played_verified,
            report.played_corrupt,
            report.chunks_from_peers,
            report.chunks_from_root,
            report.chunks_served,
        );
    }
    client.shutdown().await;
    Ok(())
}

/// A recording in one of our servers (its server is not known here: look in each).
async fn find_recording(
    client: &hum_engine::RelayClient,
    recording: u64,
) -> Result<hum_proto::signal::RecordingInfo> {
    let servers = match client.request(Request::ServerList).await? {
        Reply::Servers { servers } => servers,
        r => bail!("unexpected reply {r:?}"),
    };
    let mut info = None;
    for s in servers {
        if let Reply::Recordings { recordings } = client
            .request(Request::RecordingList { server: s.id })
            .await?
        {
            info = recordings.into_iter().find(|r| r.id == recording).or(info);
        }
    }
    info.with_context(|| format!("no recording {recording} in your servers"))
}

async fn play(cli: &Cli, recording: u64) -> Result<()> {
    let client = connect(cli).await?;
    // Its server is not known here: find it among ours.
    let servers = match client.request(Request::ServerList).await? {
        Reply::Servers { servers } => servers,
        r => bail!("unexpected reply {r:?}"),
    };
    let mut info = None;
    for s in servers {
        if let Reply::Recordings { recordings } = client
            .request(Request::RecordingList { server: s.id })
            .await?
        {
            info = recordings.into_iter().find(|r| r.id == recording).or(info);
        }
    }
    let info = info.with_context(|| format!("no recording {recording} in your servers"))?;
    let ticket = mesh_ticket(&client, Request::RecordingOpen { recording })
        .await
        .map_err(|e| anyhow!("asking for a /mesh ticket: {e}"))?;
    let report = fetch_recording(
        &mesh_url(&cli.relay, &ticket),
        info.streamer.id,
        info.chunks,
    )
    .await
    .map_err(|e| anyhow!("{e}"))?;
    if cli.json {
        println!("{}", json!({ "recording": info, "playback": report }));
    } else {
        println!(
            "recording {recording}: {} of {} chunks verified ({} corrupt, {} missing), {} bytes, {:.1} s of media",
            report.verified,
            report.chunks,
            report.corrupt,
            report.missing,
            report.bytes,
            report.media_ms as f64 / 1000.0
        );
    }
    client.shutdown().await;
    Ok(())
}

async fn start(cli: &Cli, args: &StartArgs) -> Result<()> {
    let identity = crate::commands::load_identity(cli)?;
    let client = connect(cli).await?;
    let server = crate::resolve::server(&client, &args.server).await?;
    let channel = crate::resolve::channel(&client, server.id, &args.channel).await?;
    let source = SourceConfig {
        width: args.width,
        height: args.height,
        fps: args.fps,
        video_bitrate: Bitrate::from_kbps(args.video_kbps),
        chunk: Duration::from_millis(u64::from(args.chunk_ms)),
        audio: !args.no_audio,
        lower: {
            if args.layers.len() > 3 {
                bail!("at most 3 --layer below the top one");
            }
            let mut l = [None; 3];
            for (i, x) in args.layers.iter().enumerate() {
                l[i] = Some(*x);
            }
            l
        },
    };
    let video = match (&args.source, &args.file) {
        (Source::Pattern, _) => VideoInput::Pattern,
        (Source::File, Some(path)) => VideoInput::File(path.clone()),
        (Source::File, None) => bail!("--source file needs --file PATH (a .y4m file)"),
        (Source::Camera, _) => VideoInput::Camera(None),
        (Source::Screen, _) => VideoInput::Screen,
    };
    let audio = if args.mic {
        AudioInput::Microphone(None)
    } else {
        AudioInput::Tone
    };
    let (published, hasher) = match &args.frame_hashes {
        Some(_) => {
            let (tx, task) = spawn_hasher(None)?;
            (Some(tx), Some(task))
        }
        None => (None, None),
    };
    let session = LiveSession::start(
        &client,
        identity.stream_publisher(),
        LiveOptions {
            channel: channel.id,
            title: Name::new(args.title.clone()).context("invalid title")?,
            video,
            audio,
            source,
            record: args.record,
            bind: vec![args.bind.clone()],
            ice: IceConfig::from_relay(&client, args.relay_only).await?,
            upload: args.upload_kbps.map(Bitrate::from_kbps),
            published,
        },
    )
    .await
    .map_err(|e| anyhow!("going live: {e}"))?;
    print_info(cli, session.info());
    let began = Instant::now();
    let mut ended = session.ended_watch();
    if let Some(d) = args.drop_root_after {
        tokio::select! {
            _ = tokio::time::sleep(d) => session.drop_root_link(),
            _ = ended.changed() => {}
        }
    }
    let why = until_end(&mut ended, args.duration.map(|d| began + d)).await;
    let s = session.stop().await;
    let decode = match (hasher, &args.frame_hashes) {
        (Some(task), Some(path)) => Some(finish_hasher(task, path).await?),
        _ => None,
    };
    if cli.json {
        let mut v = serde_json::to_value(&s)?;
        v["ended"] = json!(why);
        if let Some(d) = decode {
            v["decode"] = serde_json::to_value(d)?;
        }
        println!("{v}");
    } else {
        println!(
            "stream {} ended ({why}) after {:.1} s: {} chunks; uploaded {:.0} kbit/s ({:.2} copies of the stream) to the relay",
            s.stream, s.seconds, s.chunks, s.upload_kbps, s.upload_copies,
        );
    }
    client.shutdown().await;
    Ok(())
}

pub async fn run_watch(cli: &Cli, args: &WatchArgs) -> Result<()> {
    if args.recording {
        return watch_recording(cli, args).await;
    }
    let client = connect(cli).await?;
    let stream = StreamId(args.stream);
    let (player_tx, played_rx) = if args.play {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let (played_tx, hasher) = match &args.frame_hashes {
        Some(_) => {
            let (tx, task) = spawn_hasher(player_tx)?;
            (Some(tx), Some(task))
        }
        None => (player_tx, None),
    };
    let budget = match (args.contribution, args.upload_kbps) {
        (Some(level), Some(upload)) => {
            Some(viewer_budget(&client, relay_settings(level, upload, args.relay_kbps)?).await)
        }
        _ => None,
    };
    // With a service the tracker is offered what it will let out (the setting's share, or the
    // throttler's cap while it protects the connection), as the app does; without one
    // `--relay-kbps` is the viewer's own bucket.
    let relay = match &budget {
        Some(b) => b.relay_offer(),
        None => Bitrate::from_kbps(args.relay_kbps),
    };
    let session = WatchSession::join(
        &client,
        stream,
        WatchOptions {
            relay,
            upload: budget.clone(),
            bind: vec![args.bind.clone()],
            ice: IceConfig::from_relay(&client, args.relay_only).await?,
            corrupt: args.corrupt,
            played: played_tx,
            layer: args.quality,
            auto: args.auto,
        },
    )
    .await
    .map_err(|e| anyhow!("joining the stream: {e}"))?;
    if !cli.json {
        print_info(cli, session.info());
    }
    let video_frames = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut playing = None;
    if let Some(rx) = played_rx {
        use hum_engine::voice::hum_media::pacer::Paced;
        use hum_engine::voice::hum_media::synth::{NullSink, WavSink};
        let sink: Box<dyn hum_engine::voice::hum_media::AudioSink> = match &args.audio_wav {
            Some(p) => Box::new(Paced::new(
                WavSink::create(p).context("opening --audio-wav")?,
            )),
            None => Box::new(Paced::new(NullSink)),
        };
        let audio = std::sync::Arc::new(
            AudioPlayout::start(sink).map_err(|e| anyhow!("stream sound: {e}"))?,
        );
        let frames = video_frames.clone();
        let task = spawn_player(
            rx,
            session.info().started_ms,
            Some(audio.clone()),
            move |_| {
                frames.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                true
            },
        );
        playing = Some((task, audio));
    }
    let began = Instant::now();
    let mut ended = session.ended_watch();
    let until = args.duration.map(|d| began + d);
    if let Some(d) = args.drop_root_after {
        tokio::select! {
            _ = tokio::time::sleep(d) => session.drop_root_link(),
            _ = ended.changed() => {}
        }
    }
    if let (Some(layer), Some(d)) = (args.switch_to, args.switch_after) {
        tokio::select! {
            _ = tokio::time::sleep_until((began + d).into()) => {
                session
                    .set_quality(hum_engine::stream::Quality::Fixed(layer))
                    .await
                    .map_err(|e| anyhow!("switching layers: {e}"))?;
            }
            _ = ended.changed() => {}
        }
    }
    let why = until_end(&mut ended, until).await;
    let report = session.stop().await;
    let secs = began.elapsed().as_secs_f64();
    let audio = match playing {
        Some((task, audio)) => {
            task.abort();
            let _ = task.await;
            // The player's handle is gone: stopping finishes the sink (the WAV header).
            Some(match std::sync::Arc::try_unwrap(audio) {
                Ok(a) => a.stop(),
                Err(a) => a.report(),
            })
        }
        None => None,
    };
    let video_frames = video_frames.load(std::sync::atomic::Ordering::Relaxed);
    let decode = match (hasher, &args.frame_hashes) {
        (Some(task), Some(path)) => Some(finish_hasher(task, path).await?),
        _ => None,
    };
    if cli.json {
        let mut v = json!({"stream": stream, "ended": why, "seconds": secs, "viewer": report});
        if let Some(d) = decode {
            v["decode"] = serde_json::to_value(d)?;
        }
        if let Some(b) = &budget {
            let stats = b.limiter_stats();
            v["budget"] = json!({
                "relay_setting": b.effective().relay,
                "relay_offered": relay,
                "relay_cap": b.relay_cap(),
                "relay_bytes": stats.relay_bytes,
                "relay_deferred": stats.relay_deferred,
                "own_bytes": stats.own_bytes,
            });
        }
        if let Some(a) = audio {
            v["audio"] = serde_json::to_value(a)?;
            v["video_frames"] = json!(video_frames);
        }
        println!("{v}");
    } else {
        let total = report.bytes_from_root + report.bytes_from_peers;
        println!(
            "watched {secs:.1} s ({why}), layer {} ({} switches): played {} chunks ({} verified, {} corrupt), skipped {}, continuity {:.2}%, lag p50 {} ms / p95 {} ms; {} of {} bytes from peers; banned {}",
            report.layer,
            report.layer_switches,
            report.played,
            report.played_verified,
            report.played_corrupt,
            report.skipped,
            report.continuity * 100.0,
            report.lag_ms_p50,
            report.lag_ms_p95,
            report.bytes_from_peers,
            total,
            report.banned.len()
        );
    }
    if let Some(b) = &budget {
        b.shutdown();
    }
    client.shutdown().await;
    Ok(())
}
