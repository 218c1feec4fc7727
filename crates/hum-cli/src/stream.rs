//! `hum stream start` (go live with a test pattern; this process is the stream's root seed and
//! tracker for now) and `hum watch STREAM` (a headless viewer that relays to others and reports).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use hum_engine::stream::node::unix_ms;
use hum_engine::stream::source::{PatternStream, SourceConfig};
use hum_engine::stream::{Command, NodeConfig, NodeHandle, spawn_root, spawn_viewer};
use hum_engine::{ClientEvent, RelayClient};
use hum_mesh::Layer;
use hum_proto::signal::{Event, MeshSignal, Name, Reply, Request, StreamInfo};
use hum_proto::{Bitrate, StreamId, UserId};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use crate::Cli;
use crate::commands::connect;

#[derive(Subcommand, Debug)]
pub enum StreamCmd {
    /// Go live in a channel. Prints the stream id, then (at the end) what the root seed sent.
    Start(StartArgs),
    /// The live streams of a server.
    List {
        #[arg(long)]
        server: String,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// hum-media's test pattern (moving boxes and a frame code) through VP8, and a 440 Hz tone.
    Pattern,
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
    /// The root seed's upload cap in kbit/s (default: 1.25x the stream, one copy plus fallback).
    #[arg(long)]
    pub cap_kbps: Option<u64>,
    /// Stop after this long (e.g. 60s); default: until interrupted.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Local UDP address for the mesh's WebRTC links.
    #[arg(long, default_value = "0.0.0.0:0")]
    pub bind: String,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The stream id (from `hum stream list` or the streamer's output).
    pub stream: u64,
    /// Upload (kbit/s) you give to relaying the stream to other viewers; 0: none.
    #[arg(long, default_value_t = 2000)]
    pub relay_kbps: u64,
    /// Stop after this long; default: until the stream ends or you interrupt.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Local UDP address for the mesh's WebRTC links.
    #[arg(long, default_value = "0.0.0.0:0")]
    pub bind: String,
    /// Testing only: serve every chunk to other viewers with its payload altered.
    #[arg(long, hide = true)]
    pub corrupt: bool,
}

/// Forward the node's outgoing signals through the relay, in order.
fn forward_signals(
    client: RelayClient,
    stream: StreamId,
    mut rx: mpsc::UnboundedReceiver<(UserId, MeshSignal)>,
) {
    tokio::spawn(async move {
        while let Some((to, signal)) = rx.recv().await {
            if let Err(e) = client
                .request(Request::StreamSignal { stream, to, signal })
                .await
            {
                tracing::debug!(%to, "stream signal not delivered: {e}");
            }
        }
    });
}

/// What a node hears from the relay, until the stream ends or `until` passes.
async fn pump(
    events: &mut broadcast::Receiver<ClientEvent>,
    stream: StreamId,
    node: &NodeHandle,
    streamer: bool,
    until: Option<Instant>,
) -> &'static str {
    let sleep = async {
        match until {
            Some(t) => tokio::time::sleep_until(t.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return "duration",
            _ = tokio::signal::ctrl_c() => return "interrupted",
            ev = events.recv() => match ev {
                Ok(ClientEvent::Relay(Event::StreamSignal { stream: s, from, signal })) if s == stream => {
                    node.signal(from, signal);
                }
                Ok(ClientEvent::Relay(Event::StreamViewer { stream: s, user, relay, joined })) if s == stream && streamer => {
                    node.send(if joined {
                        Command::ViewerJoined { user, relay }
                    } else {
                        Command::ViewerLeft { user }
                    });
                }
                Ok(ClientEvent::Relay(Event::StreamEnded { stream: s, .. })) if s == stream => {
                    return "stream ended";
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return "relay client stopped",
            }
        }
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
    }
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
    };
    let rate = source.planned_rate();
    let cap = args
        .cap_kbps
        .map(Bitrate::from_kbps)
        .unwrap_or(Bitrate::from_bps(rate.bps() * 5 / 4));
    // Subscribe before going live so no join is missed.
    let mut events = client.subscribe();
    let started_ms = unix_ms();
    let info = match client
        .request(Request::StreamStart {
            channel: channel.id,
            title: Name::new(args.title.clone()).context("invalid title")?,
            bitrate: rate,
            chunk_ms: args.chunk_ms,
            started_ms: Some(started_ms),
        })
        .await
        .context("going live")?
    {
        Reply::Stream { stream } => stream,
        r => bail!("unexpected reply {r:?}"),
    };
    print_info(cli, &info);
    let (sig_tx, sig_rx) = mpsc::unbounded_channel();
    forward_signals(client.clone(), info.id, sig_rx);
    let root = spawn_root(
        client.user_id(),
        identity.stream_publisher(),
        NodeConfig {
            bind: vec![args.bind.clone()],
            layer: Layer::High,
            stream_rate: rate,
            chunk: source.chunk,
            relay_budget: cap,
            started_ms,
            corrupt: false,
        },
        sig_tx,
    );
    let media = PatternStream::start(source, Layer::High, root.clone())
        .map_err(|e| anyhow!("starting the pattern source: {e}"))?;
    let began = Instant::now();
    let why = pump(
        &mut events,
        info.id,
        &root,
        true,
        args.duration.map(|d| began + d),
    )
    .await;
    let chunks = media.stop().unwrap_or(0);
    let _ = client.request(Request::StreamEnd { stream: info.id }).await;
    let report = root.stop().await;
    let secs = began.elapsed().as_secs_f64();
    let egress = report.bytes_sent_data + report.bytes_sent_ctl;
    if cli.json {
        println!(
            "{}",
            json!({
                "stream": info.id, "ended": why, "seconds": secs, "chunks": chunks,
                "stream_kbps": rate.bps() / 1000, "cap_kbps": cap.bps() / 1000,
                "root_egress_bytes": egress, "root_egress_kbps": egress as f64 * 8.0 / secs / 1000.0,
                "stream_bytes": report.published_bytes,
                "root_copies": egress as f64 / (report.published_bytes.max(1)) as f64,
                "root": report,
            })
        );
    } else {
        println!(
            "stream {} ended ({why}) after {secs:.1} s: {chunks} chunks; root seed sent {:.0} kbit/s ({} chunks) to {} viewers",
            info.id,
            egress as f64 * 8.0 / secs / 1000.0,
            report.chunks_sent,
            report.viewers
        );
    }
    client.shutdown().await;
    Ok(())
}

pub async fn run_watch(cli: &Cli, args: &WatchArgs) -> Result<()> {
    let client = connect(cli).await?;
    let stream = StreamId(args.stream);
    let mut events = client.subscribe();
    let info = match client
        .request(Request::StreamJoin {
            stream,
            relay: Some(Bitrate::from_kbps(args.relay_kbps)),
        })
        .await
        .context("joining the stream")?
    {
        Reply::Stream { stream } => stream,
        r => bail!("unexpected reply {r:?}"),
    };
    if !cli.json {
        print_info(cli, &info);
    }
    let (sig_tx, sig_rx) = mpsc::unbounded_channel();
    forward_signals(client.clone(), stream, sig_rx);
    let viewer = spawn_viewer(
        client.user_id(),
        info.streamer.id,
        NodeConfig {
            bind: vec![args.bind.clone()],
            layer: Layer::High,
            stream_rate: info.bitrate,
            chunk: Duration::from_millis(u64::from(info.chunk_ms)),
            relay_budget: Bitrate::from_kbps(args.relay_kbps),
            started_ms: info.started_ms,
            corrupt: args.corrupt,
        },
        sig_tx,
    )
    .map_err(|e| anyhow!("{e}"))?;
    let began = Instant::now();
    let why = pump(
        &mut events,
        stream,
        &viewer,
        false,
        args.duration.map(|d| began + d),
    )
    .await;
    let report = viewer.stop().await;
    let _ = client.request(Request::StreamLeave { stream }).await;
    let secs = began.elapsed().as_secs_f64();
    if cli.json {
        println!(
            "{}",
            json!({"stream": stream, "ended": why, "seconds": secs, "viewer": report})
        );
    } else {
        let total = report.bytes_from_root + report.bytes_from_peers;
        println!(
            "watched {secs:.1} s ({why}): played {} chunks ({} verified, {} corrupt), skipped {}, continuity {:.2}%, lag p50 {} ms / p95 {} ms; {} of {} bytes from peers; banned {}",
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
    client.shutdown().await;
    Ok(())
}
