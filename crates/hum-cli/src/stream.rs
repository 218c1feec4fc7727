//! `hum stream start` (go live with a test pattern: each chunk is signed and uploaded once to the
//! relay, which is the stream's root seed and tracker), `hum watch STREAM` (a headless viewer
//! that relays to others and reports), and recordings (`hum stream recordings|play|delete`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use hum_engine::stream::node::unix_ms;
use hum_engine::stream::playback::fetch_recording;
use hum_engine::stream::source::{PatternStream, SourceConfig};
use hum_engine::stream::{Command, NodeConfig, NodeHandle, spawn_uploader, spawn_viewer};
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
    /// Let the relay keep a recording (viewers see that it does).
    #[arg(long)]
    pub record: bool,
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
                    // The relay's root already knows; this feeds an in-process root if any.
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

/// `ws://HOST/mesh?ticket=T` from the relay's `/ws` URL.
fn mesh_url(relay: &str, ticket: &str) -> String {
    let base = relay.trim_end_matches('/');
    let base = base.strip_suffix("/ws").unwrap_or(base);
    format!("{base}/mesh?ticket={ticket}")
}

async fn mesh_ticket(client: &RelayClient, req: Request) -> Result<String> {
    match client
        .request(req)
        .await
        .context("asking for a /mesh ticket")?
    {
        Reply::MeshTicket { ticket } => Ok(ticket),
        r => bail!("unexpected reply {r:?}"),
    }
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
    let ticket = mesh_ticket(&client, Request::RecordingOpen { recording }).await?;
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
    };
    let rate = source.planned_rate();
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
            record: args.record,
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
    let ticket = mesh_ticket(&client, Request::StreamMesh { stream: info.id }).await?;
    let root = spawn_uploader(
        client.user_id(),
        identity.stream_publisher(),
        NodeConfig {
            bind: vec![args.bind.clone()],
            layer: Layer::High,
            stream_rate: rate,
            chunk: source.chunk,
            relay_budget: Bitrate::ZERO,
            started_ms,
            corrupt: false,
            root_url: Some(mesh_url(&cli.relay, &ticket)),
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
    // Flush the uploads (the relay has read them all when this returns), then end the stream.
    let report = root.stop().await;
    let _ = client.request(Request::StreamEnd { stream: info.id }).await;
    let secs = began.elapsed().as_secs_f64();
    // Everything this process sent on mesh links (to the relay's /mesh: it has no other).
    let upload = report.bytes_sent_data + report.bytes_sent_ctl;
    if cli.json {
        println!(
            "{}",
            json!({
                "stream": info.id, "ended": why, "seconds": secs, "chunks": chunks,
                "stream_kbps": rate.bps() / 1000,
                "upload_bytes": upload, "upload_kbps": upload as f64 * 8.0 / secs / 1000.0,
                "stream_bytes": report.published_bytes,
                "upload_copies": upload as f64 / (report.published_bytes.max(1)) as f64,
                "uploader": report,
            })
        );
    } else {
        println!(
            "stream {} ended ({why}) after {secs:.1} s: {chunks} chunks; uploaded {:.0} kbit/s ({:.2} copies of the stream) to the relay",
            info.id,
            upload as f64 * 8.0 / secs / 1000.0,
            upload as f64 / (report.published_bytes.max(1)) as f64,
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
    let ticket = mesh_ticket(&client, Request::StreamMesh { stream }).await?;
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
            root_url: Some(mesh_url(&cli.relay, &ticket)),
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
