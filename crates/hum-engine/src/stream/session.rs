//! Going live and watching as one piece both front ends use (`hum stream start` / `hum watch`
//! and the app's Go Live dialog and player): the relay requests (`stream_start`, `stream_join`,
//! `stream_mesh`, `stream_end`, `stream_leave`), the node, the media source, and the task that
//! carries the relay's stream events (signals, viewers, the end) to the node.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hum_mesh::Layer;
use hum_mesh::manifest::Publisher;
use hum_proto::signal::{Event, MeshSignal, Name, Reply, Request, StreamInfo};
use hum_proto::{Bitrate, ChannelId, StreamId, UserId};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, watch};

use super::StreamError;
use super::node::{
    Command, NodeConfig, NodeHandle, NodeReport, PlayedChunk, spawn_uploader, spawn_viewer, unix_ms,
};
use super::source::{AudioInput, MediaStream, SourceConfig, VideoInput};
use crate::{ClientError, ClientEvent, RelayClient};

/// Why a stream stopped for this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The streamer ended it (or went offline): the relay said `stream_ended`.
    StreamEnded,
    /// The relay client stopped (shut down or replaced).
    ClientStopped,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::StreamEnded => "stream ended",
            EndReason::ClientStopped => "relay client stopped",
        }
    }
}

/// `ws://HOST/mesh?ticket=T` from the relay's `/ws` URL.
pub fn mesh_url(relay: &str, ticket: &str) -> String {
    let base = relay.trim_end_matches('/');
    let base = base.strip_suffix("/ws").unwrap_or(base);
    format!("{base}/mesh?ticket={ticket}")
}

fn unexpected(expected: &'static str, r: Reply) -> StreamError {
    StreamError::Relay(ClientError::UnexpectedReply {
        expected,
        got: format!("{r:?}"),
    })
}

/// A single-use ticket for the relay's `/mesh` (`stream_mesh` or `recording_open`).
pub async fn mesh_ticket(client: &RelayClient, req: Request) -> Result<String, StreamError> {
    match client.request(req).await? {
        Reply::MeshTicket { ticket } => Ok(ticket),
        r => Err(unexpected("mesh_ticket", r)),
    }
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

/// Carries the relay's events about `stream` to `node` until the stream ends; counts viewers
/// (the streamer hears `stream_viewer`).
fn pump(
    mut events: broadcast::Receiver<ClientEvent>,
    stream: StreamId,
    node: NodeHandle,
    viewers: Arc<AtomicU32>,
    ended: watch::Sender<Option<EndReason>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let why = loop {
            match events.recv().await {
                Ok(ClientEvent::Relay(Event::StreamSignal {
                    stream: s,
                    from,
                    signal,
                })) if s == stream => node.signal(from, signal),
                Ok(ClientEvent::Relay(Event::StreamViewer {
                    stream: s,
                    user,
                    relay,
                    joined,
                })) if s == stream => {
                    if joined {
                        viewers.fetch_add(1, Ordering::SeqCst);
                    } else {
                        let _ = viewers.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                            Some(v.saturating_sub(1))
                        });
                    }
                    // The relay's root already knows; this feeds an in-process root if any.
                    node.send(if joined {
                        Command::ViewerJoined { user, relay }
                    } else {
                        Command::ViewerLeft { user }
                    });
                }
                Ok(ClientEvent::Relay(Event::StreamEnded { stream: s, .. })) if s == stream => {
                    break EndReason::StreamEnded;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break EndReason::ClientStopped,
            }
        };
        ended.send_replace(Some(why));
    })
}

/// Reopens a viewer's `/mesh` link to the relay's root when it closes under us (a network drop,
/// a relay-side close): a fresh single-use ticket from `stream_mesh`, retried with backoff
/// (250 ms doubling to 10 s) until the node says the link is open again or the stream ended.
fn reopen_root(
    client: RelayClient,
    stream: StreamId,
    node: NodeHandle,
    ended: watch::Receiver<Option<EndReason>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut reports = node.report_watch();
        loop {
            if reports.changed().await.is_err() {
                return;
            }
            let (drops, reopened) = {
                let r = reports.borrow_and_update();
                (r.root_link_drops, r.root_reconnects)
            };
            if drops <= reopened {
                continue;
            }
            let mut wait = Duration::from_millis(250);
            while node.report().root_reconnects < drops {
                if ended.borrow().is_some() {
                    return;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
                match mesh_ticket(&client, Request::StreamMesh { stream }).await {
                    Ok(t) => node.send(Command::RootUrl(mesh_url(&client.config().url, &t))),
                    Err(e) => tracing::debug!(%stream, "no new /mesh ticket yet: {e}"),
                }
            }
            tracing::info!(%stream, "the root's /mesh link is open again");
        }
    })
}

/// What a streamer sends and how.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    pub channel: ChannelId,
    pub title: Name,
    pub video: VideoInput,
    pub audio: AudioInput,
    pub source: SourceConfig,
    /// Let the relay keep a recording (viewers see that it does).
    pub record: bool,
    /// Local UDP addresses for the mesh's WebRTC links.
    pub bind: Vec<String>,
}

/// What a stream did, from the streamer's side.
#[derive(Clone, Debug, Serialize)]
pub struct LiveSummary {
    pub stream: StreamId,
    pub seconds: f64,
    pub chunks: u64,
    pub stream_kbps: u64,
    /// Everything this process sent on mesh links (to the relay's /mesh: it has no other).
    pub upload_bytes: u64,
    pub upload_kbps: f64,
    /// One copy of the stream (payload bytes published).
    pub stream_bytes: u64,
    pub upload_copies: f64,
    pub uploader: NodeReport,
}

/// A stream this process sends: the relay hosts its root seed and tracker; each chunk is signed
/// here and uploaded once.
pub struct LiveSession {
    client: RelayClient,
    info: StreamInfo,
    node: NodeHandle,
    media: MediaStream,
    viewers: Arc<AtomicU32>,
    ended: watch::Receiver<Option<EndReason>>,
    events: tokio::task::JoinHandle<()>,
    began: Instant,
}

impl std::fmt::Debug for LiveSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSession")
            .field("stream", &self.info.id)
            .finish_non_exhaustive()
    }
}

impl LiveSession {
    /// Goes live in `opts.channel` (the relay checks the `stream` permission), opens the media
    /// (a missing camera, file or microphone is an error here, after which the stream is ended)
    /// and starts uploading.
    pub async fn start(
        client: &RelayClient,
        publisher: Publisher,
        opts: LiveOptions,
    ) -> Result<Self, StreamError> {
        let rate = opts.source.planned_rate();
        // Subscribe before going live so no join is missed.
        let events = client.subscribe();
        let started_ms = unix_ms();
        let chunk_ms = opts.source.chunk.as_millis() as u32;
        let info = match client
            .request(Request::StreamStart {
                channel: opts.channel,
                title: opts.title.clone(),
                bitrate: rate,
                chunk_ms,
                started_ms: Some(started_ms),
                record: opts.record,
            })
            .await?
        {
            Reply::Stream { stream } => stream,
            r => return Err(unexpected("stream", r)),
        };
        let end = |client: RelayClient, id| async move {
            let _ = client.request(Request::StreamEnd { stream: id }).await;
        };
        let ticket = match mesh_ticket(client, Request::StreamMesh { stream: info.id }).await {
            Ok(t) => t,
            Err(e) => {
                end(client.clone(), info.id).await;
                return Err(e);
            }
        };
        let (sig_tx, sig_rx) = mpsc::unbounded_channel();
        forward_signals(client.clone(), info.id, sig_rx);
        let node = spawn_uploader(
            client.user_id(),
            publisher,
            NodeConfig {
                bind: opts.bind.clone(),
                layer: Layer::High,
                stream_rate: rate,
                chunk: opts.source.chunk,
                relay_budget: Bitrate::ZERO,
                started_ms,
                corrupt: false,
                root_url: Some(mesh_url(&client.config().url, &ticket)),
                played: None,
            },
            sig_tx,
        );
        let media = match MediaStream::start_with(
            opts.source,
            opts.video.clone(),
            opts.audio.clone(),
            Layer::High,
            node.clone(),
        ) {
            Ok(m) => m,
            Err(e) => {
                node.stop().await;
                end(client.clone(), info.id).await;
                return Err(e);
            }
        };
        let viewers = Arc::new(AtomicU32::new(0));
        let (ended_tx, ended) = watch::channel(None);
        let events = pump(events, info.id, node.clone(), viewers.clone(), ended_tx);
        Ok(LiveSession {
            client: client.clone(),
            info,
            node,
            media,
            viewers,
            ended,
            events,
            began: Instant::now(),
        })
    }

    pub fn info(&self) -> &StreamInfo {
        &self.info
    }

    /// Viewers now (from the relay's `stream_viewer` events).
    pub fn viewers(&self) -> u32 {
        self.viewers.load(Ordering::SeqCst)
    }

    /// The uploader's counts so far.
    pub fn report(&self) -> NodeReport {
        self.node.report()
    }

    /// Why the stream ended without us (the relay ended it), once it has.
    pub fn ended_watch(&self) -> watch::Receiver<Option<EndReason>> {
        self.ended.clone()
    }

    /// Waits until the relay ends the stream or the client stops.
    pub async fn ended(&mut self) -> EndReason {
        loop {
            if let Some(r) = *self.ended.borrow_and_update() {
                return r;
            }
            if self.ended.changed().await.is_err() {
                return EndReason::ClientStopped;
            }
        }
    }

    /// Stops the source, flushes the uploads (the relay has read them all when the uploader
    /// stops), then ends the stream.
    pub async fn stop(self) -> LiveSummary {
        let chunks = self.media.stop().unwrap_or(0);
        let report = self.node.stop().await;
        let _ = self
            .client
            .request(Request::StreamEnd {
                stream: self.info.id,
            })
            .await;
        self.events.abort();
        let seconds = self.began.elapsed().as_secs_f64().max(1e-3);
        let upload = report.bytes_sent_data + report.bytes_sent_ctl;
        LiveSummary {
            stream: self.info.id,
            seconds,
            chunks,
            stream_kbps: self.info.bitrate.bps() / 1000,
            upload_bytes: upload,
            upload_kbps: upload as f64 * 8.0 / seconds / 1000.0,
            stream_bytes: report.published_bytes,
            upload_copies: upload as f64 / report.published_bytes.max(1) as f64,
            uploader: report,
        }
    }
}

/// How a viewer watches.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// Upload given to relaying the stream to other viewers (0: none).
    pub relay: Bitrate,
    pub bind: Vec<String>,
    /// Tests only: serve every chunk with its payload altered.
    pub corrupt: bool,
    /// Every verified chunk the player plays (for a decoder); bounded, never blocks the mesh.
    pub played: Option<mpsc::Sender<PlayedChunk>>,
}

/// A stream this process watches (and relays to other viewers).
pub struct WatchSession {
    client: RelayClient,
    info: StreamInfo,
    node: NodeHandle,
    ended: watch::Receiver<Option<EndReason>>,
    events: tokio::task::JoinHandle<()>,
    reconnect: tokio::task::JoinHandle<()>,
    began: Instant,
}

impl std::fmt::Debug for WatchSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchSession")
            .field("stream", &self.info.id)
            .finish_non_exhaustive()
    }
}

impl WatchSession {
    /// Joins `stream` (the relay checks `join`), reaches the root on `/mesh` and peers over
    /// WebRTC.
    pub async fn join(
        client: &RelayClient,
        stream: StreamId,
        opts: WatchOptions,
    ) -> Result<Self, StreamError> {
        let events = client.subscribe();
        let info = match client
            .request(Request::StreamJoin {
                stream,
                relay: Some(opts.relay),
            })
            .await?
        {
            Reply::Stream { stream } => stream,
            r => return Err(unexpected("stream", r)),
        };
        let ticket = match mesh_ticket(client, Request::StreamMesh { stream }).await {
            Ok(t) => t,
            Err(e) => {
                let _ = client.request(Request::StreamLeave { stream }).await;
                return Err(e);
            }
        };
        let (sig_tx, sig_rx) = mpsc::unbounded_channel();
        forward_signals(client.clone(), stream, sig_rx);
        let node = match spawn_viewer(
            client.user_id(),
            info.streamer.id,
            NodeConfig {
                bind: opts.bind,
                layer: Layer::High,
                stream_rate: info.bitrate,
                chunk: Duration::from_millis(u64::from(info.chunk_ms)),
                relay_budget: opts.relay,
                started_ms: info.started_ms,
                corrupt: opts.corrupt,
                root_url: Some(mesh_url(&client.config().url, &ticket)),
                played: opts.played,
            },
            sig_tx,
        ) {
            Ok(n) => n,
            Err(e) => {
                let _ = client.request(Request::StreamLeave { stream }).await;
                return Err(e);
            }
        };
        let (ended_tx, ended) = watch::channel(None);
        let events = pump(
            events,
            stream,
            node.clone(),
            Arc::new(AtomicU32::new(0)),
            ended_tx,
        );
        let reconnect = reopen_root(client.clone(), stream, node.clone(), ended.clone());
        Ok(WatchSession {
            client: client.clone(),
            info,
            node,
            ended,
            events,
            reconnect,
            began: Instant::now(),
        })
    }

    pub fn info(&self) -> &StreamInfo {
        &self.info
    }

    /// The viewer's counts so far (played, from root/peers, relayed).
    pub fn report(&self) -> NodeReport {
        self.node.report()
    }

    pub fn report_watch(&self) -> watch::Receiver<NodeReport> {
        self.node.report_watch()
    }

    pub fn ended_watch(&self) -> watch::Receiver<Option<EndReason>> {
        self.ended.clone()
    }

    /// Waits until the stream ends or the client stops.
    pub async fn ended(&mut self) -> EndReason {
        loop {
            if let Some(r) = *self.ended.borrow_and_update() {
                return r;
            }
            if self.ended.changed().await.is_err() {
                return EndReason::ClientStopped;
            }
        }
    }

    /// Seconds since joining.
    pub fn seconds(&self) -> f64 {
        self.began.elapsed().as_secs_f64()
    }

    /// Stops watching (leaves the stream at the relay); the final report.
    pub async fn stop(self) -> NodeReport {
        self.reconnect.abort();
        let report = self.node.stop().await;
        let _ = self
            .client
            .request(Request::StreamLeave {
                stream: self.info.id,
            })
            .await;
        self.events.abort();
        report
    }

    /// Tests only: close the link to the relay's root, as a network drop would (the session
    /// reopens it with a fresh ticket).
    pub fn drop_root_link(&self) {
        self.node.send(Command::DropRootLink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_url_replaces_the_ws_path() {
        assert_eq!(
            mesh_url("ws://127.0.0.1:7700/ws", "abc"),
            "ws://127.0.0.1:7700/mesh?ticket=abc"
        );
        assert_eq!(
            mesh_url("wss://relay.example/", "t"),
            "wss://relay.example/mesh?ticket=t"
        );
    }
}
