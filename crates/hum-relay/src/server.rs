//! The I/O shell around the hub: axum routes, one task per WebSocket, and the hub thread.
//!
//! ```text
//!  WebSocket task (per connection)            hub thread (one)
//!  ─────────────────────────────              ─────────────────────────────
//!  read frame → rate limit → decode
//!    before login: Handshake (verify sig)  ──Login{tx}──▶  Hub::login
//!    after login ─────────────────────────── Request ───▶  Hub::request
//!  write frames ◀──── bounded mpsc ◀────── encode once ◀── Hub::drain (fan-out)
//!  close / ping timeout ─────────────────── Disconnect ─▶  Hub::disconnect
//! ```
//!
//! Decoding and signature checks run on the connection tasks (in parallel); all state lives on
//! the hub thread (no locks, SQLite writes off the reactor). A fan-out message is encoded once
//! and shared by reference count. A client whose queue holds more than `outbox_bytes` (see
//! [`crate::outbox`]) or that blocks writes for too long is disconnected rather than allowed to
//! grow the relay's memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use hum_proto::signal::{
    DisplayName, ErrorCode, ProtoError, Request, ServerMessage, decode_client_message_limited,
    encode, peek_request_id,
};
use hum_proto::{RequestId, UserId};
use rand::SeedableRng;
use rand::rngs::OsRng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};

use crate::accept::{AT_CAPACITY, ConnSlot, SlotCell};
use crate::handshake::{Handshake, Step};
use crate::hub::{ConnId, Hub, HubConfig, Output, SfuCmd, close};
use crate::limits::{RateLimiter, SourceKey, Verdict};
use crate::metrics::Metrics;
use crate::outbox::{Outbound, OutboxTx, PushError, outbox};
use crate::store::Store;
use hum_sfu::SfuEvent;

/// Everything `hum-relay` can be told on its command line.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Where the persistent data lives (`--store`); `None`: SQLite in `data_dir`.
    pub store: Option<crate::store::Location>,
    /// Open TCP connections (pending HTTP and WebSockets) beyond this get HTTP 503. Lowered at
    /// start to what the open-file limit allows.
    pub max_connections: usize,
    /// A new TCP connection must complete its HTTP request (the WebSocket upgrade) this fast.
    pub upgrade_timeout: Duration,
    /// Largest text frame handled; larger ones get `too_large`.
    pub max_message_bytes: usize,
    pub rate_per_sec: u32,
    pub rate_burst: u32,
    /// The relay pings every connection this often...
    pub ping_interval: Duration,
    /// ...and drops one it has heard nothing from (not even a pong) for this long.
    pub idle_timeout: Duration,
    /// A connection must log in within this long.
    pub login_timeout: Duration,
    /// Bytes queued per client before it counts as too slow and is dropped.
    pub outbox_bytes: usize,
    /// A write blocked this long (client not reading) drops the client.
    pub write_timeout: Duration,
    pub max_probes: usize,
    /// Bandwidth probes one source address (IPv4, or IPv6 /64) may run at once.
    pub probes_per_address: usize,
    /// Apply the per-address limits (new accounts, probes) to loopback clients too. Off by
    /// default: local tools, benchmarks and tests open many accounts from 127.0.0.1.
    pub limit_loopback: bool,
    pub probe_max_bytes: u64,
    pub probe_max_duration: Duration,
    pub hub: HubConfig,
    /// Where the embedded SFU binds its UDP socket (`None`: no SFU, every channel a mesh).
    /// Port 0 picks a free port.
    pub sfu_bind: Option<SocketAddr>,
    /// The address clients reach the SFU at (its ICE candidate); `None`: the bound address.
    pub sfu_public_addr: Option<SocketAddr>,
    /// Run as one node of a cluster (`--redis`; docs/cluster.md). `None`: a single relay.
    pub cluster: Option<ClusterConfig>,
    /// Serve the browser client from this directory (`--web-dir`, docs/browser.md): `GET /`,
    /// `GET /invite/CODE` and the build's files. `None`: no web client (the default).
    pub web_dir: Option<PathBuf>,
    /// The names (`host[:port]`) clients reach this relay by (`--login-name`): a login must be
    /// signed for one of them (docs/security.md, "Login binding"). Empty: logins are not bound.
    pub login_names: Vec<String>,
}

/// One node of a relay cluster: the nodes share a PostgreSQL database (`store`) and a Redis.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT` or `redis+unix:///PATH`.
    pub redis: String,
    /// The cluster's name (several clusters may share a Redis).
    pub cluster: String,
    /// This node's name within the cluster.
    pub node: hum_proto::cluster::NodeId,
    /// The URL clients reach this node's WebSocket at; `None`: `ws://LISTEN/ws`.
    pub public_url: Option<String>,
    /// A node that stops refreshing its announcement for this long is dead.
    pub ttl: Duration,
}

impl RelayConfig {
    /// Defaults for everything but where to listen and where to keep data.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        RelayConfig {
            listen,
            data_dir,
            store: None,
            max_connections: 10_000,
            upgrade_timeout: Duration::from_secs(10),
            max_message_bytes: hum_proto::signal::MAX_MESSAGE_BYTES,
            rate_per_sec: 50,
            rate_burst: 200,
            ping_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            login_timeout: Duration::from_secs(15),
            outbox_bytes: 4 * 1024 * 1024,
            write_timeout: Duration::from_secs(10),
            max_probes: 4,
            probes_per_address: 1,
            limit_loopback: false,
            probe_max_bytes: 64 * 1024 * 1024,
            probe_max_duration: Duration::from_secs(10),
            hub: HubConfig::default(),
            sfu_bind: None,
            sfu_public_addr: None,
            cluster: None,
            web_dir: None,
            login_names: Vec::new(),
        }
    }

    /// The key per-address limits count `peer` under, or `None` if they do not apply to it
    /// (loopback, unless `limit_loopback`).
    pub(crate) fn source_key(&self, peer: SocketAddr) -> Option<SourceKey> {
        let ip = match peer.ip() {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            ip => ip,
        };
        (self.limit_loopback || !ip.is_loopback()).then(|| SourceKey::of(ip))
    }

    /// Frames above this are not even read into memory: the connection is closed (1009).
    /// Between `max_message_bytes` and this, the client gets a typed `too_large` and lives on.
    fn hard_frame_limit(&self) -> usize {
        (self.max_message_bytes.saturating_mul(16)).max(1 << 20)
    }
}

/// Most queued frames written before one flush.
const WRITE_BATCH: usize = 64;
/// Bytes tungstenite buffers before writing to the socket (the batch is flushed anyway).
const WRITE_BUFFER: usize = 4 * 1024;

/// What the hub thread is asked to do.
pub(crate) enum HubCmd {
    Login {
        conn: ConnId,
        re: RequestId,
        user: UserId,
        display_name: Option<DisplayName>,
        tx: OutboxTx,
        /// The client's address, for per-address limits (new accounts).
        source: Option<SourceKey>,
    },
    Request {
        conn: ConnId,
        re: RequestId,
        req: Request,
    },
    Disconnect {
        conn: ConnId,
    },
    Tick,
    /// The SFU finished a request (`Ok(Some(sdp))`: an SDP answer for the client).
    SfuDone {
        conn: ConnId,
        re: RequestId,
        user: UserId,
        joining: bool,
        result: Result<Option<String>, String>,
    },
    /// Something the SFU reports.
    SfuEvent(SfuEvent),
    /// A stream's root (crate::live) signals a viewer.
    LiveSignal {
        stream: hum_proto::StreamId,
        to: UserId,
        signal: hum_proto::signal::MeshSignal,
    },
    /// The next record of the cluster's log (crate::bus).
    Log(crate::bus::Record),
    /// The membership watcher saw node number `node` die or leave.
    NodeGone {
        node: u64,
    },
    /// The cluster's live nodes changed (or were listed for the first time): tell this node's
    /// clients (crate::node_list). Not a hub input.
    Nodes(Vec<hum_proto::cluster::NodeInfo>),
}

pub(crate) struct Shared {
    config: RelayConfig,
    hub_tx: mpsc::Sender<HubCmd>,
    metrics: Arc<Metrics>,
    next_conn: AtomicU64,
    probe_slots: Arc<Semaphore>,
    /// Probes running per source address.
    probe_sources: Arc<std::sync::Mutex<HashMap<SourceKey, usize>>>,
    hub_alive: Arc<AtomicBool>,
    relay_name: String,
    /// `config.login_names`, shared by every connection's handshake.
    login_names: Arc<[String]>,
    /// Set on shutdown: every connection closes with 1001.
    stopping: tokio::sync::watch::Sender<bool>,
    /// `config.max_connections` capped by the descriptor limit.
    max_connections: usize,
    /// Live streams' root seeds and trackers, and `/mesh` tickets.
    live: Arc<crate::live::Live>,
}

/// A running relay.
#[derive(Debug)]
pub struct RelayHandle {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    /// The embedded SFU's UDP address, if it runs.
    pub sfu_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    shutdown: Option<oneshot::Sender<()>>,
    stopping: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RelayHandle {
    /// Wait until the server stops (it runs until [`RelayHandle::shutdown`] or an I/O error).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.server
            .await
            .context("relay task panicked")?
            .context("relay server failed")
    }

    /// Stop accepting, close every WebSocket with 1001 ("going away") and wait (at most
    /// `grace`) until they are closed, then end the server task.
    pub async fn shutdown(mut self, grace: Duration) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.stopping.send_replace(true);
        let _ = tokio::time::timeout(grace, async {
            while self.metrics.connections.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        self.server.abort();
        let _ = self.server.await;
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Open the database, start the hub thread, bind and serve.
pub async fn start(mut config: RelayConfig) -> anyhow::Result<RelayHandle> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let location = config
        .store
        .clone()
        .unwrap_or_else(|| crate::store::Location::SqliteIn(config.data_dir.clone()));
    // Opening and loading block (the PostgreSQL client runs its own runtime, which tokio
    // forbids on a task): blocking threads do both.
    let cluster_cfg = config.cluster.clone();
    let (store, joined) = tokio::task::spawn_blocking(move || {
        let Some(c) = cluster_cfg else {
            let store = Store::open(&location)
                .with_context(|| format!("opening the database ({location})"))?;
            tracing::info!(store = %location, "database open");
            return anyhow::Ok((store, None));
        };
        let store = Store::open_for_cluster(&location)
            .with_context(|| format!("opening the cluster's database ({location})"))?;
        let joined = crate::cluster::join(&c.redis, &c.cluster, &c.node)
            .with_context(|| format!("joining cluster {} in Redis", c.cluster))?;
        tracing::info!(store = %location, cluster = %c.cluster, node = %c.node, number = joined.number, "database open; joined the cluster");
        let tape = crate::store::tape::TapeControl::default();
        let store = Store::new(crate::store::tape::TapeStore::new(store, tape.clone()));
        let log = crate::cluster::Log::connect(&c.redis, &c.cluster, joined.number)?;
        anyhow::Ok((store, Some((c, joined, tape, log))))
    })
    .await
    .context("the thread opening the database")??;
    if joined.is_some() && config.sfu_bind.is_some() {
        tracing::warn!(
            "a cluster node runs no SFU yet (rooms across nodes need the cascade, docs/cluster.md): voice channels stay meshes"
        );
        config.sfu_bind = None;
    }
    config.hub.limits.max_message_bytes =
        u32::try_from(config.max_message_bytes).unwrap_or(u32::MAX);
    config.hub.limits.rate_per_sec = config.rate_per_sec;
    config.hub.limits.rate_burst = config.rate_burst;
    let metrics = Arc::new(Metrics::default());
    let hub_alive = Arc::new(AtomicBool::new(true));
    let (hub_tx, hub_rx) = mpsc::channel(8192);
    let sfu = match config.sfu_bind {
        Some(bind) => Some(
            crate::sfu::SfuLink::start(
                bind,
                config.sfu_public_addr,
                hub_tx.clone(),
                metrics.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let sfu_addr = sfu.as_ref().map(|s| s.local_addr());
    config.hub.mode.sfu_enabled = sfu.is_some();
    // Every node of a cluster runs the same hub on the same inputs: same RNG seed too.
    let rng = match &joined {
        Some((_, j, _, _)) => ChaCha8Rng::from_seed(j.seed),
        None => ChaCha8Rng::from_rng(OsRng)?,
    };
    let hub_config = config.hub.clone();
    let mut hub = tokio::task::spawn_blocking(move || Hub::new(store, hub_config, rng))
        .await
        .context("the thread loading the database")?
        .context("loading the database")?;
    let recordings = crate::recording::Recordings::open(&config.data_dir).with_context(|| {
        format!(
            "opening the recordings in {}",
            config.data_dir.join("recordings").display()
        )
    })?;
    hub.set_recordings(recordings.clone());
    let live = Arc::new(crate::live::Live::new(
        hub_tx.clone(),
        metrics.clone(),
        Some(recordings),
    ));
    let stopping = tokio::sync::watch::Sender::new(false);
    let mut first_conn = 1;
    let mut node = None;
    let link = match joined {
        Some((c, joined, tape, log)) => {
            first_conn = crate::bus::conn_base(joined.number) + 1;
            start_log_reader(&c, hub_tx.clone())?;
            node = Some((c, joined.number));
            Some(ClusterLink {
                me: joined.number,
                log,
                seq: crate::bus::Sequencer::new(joined.number),
                tape,
            })
        }
        None => None,
    };
    {
        let metrics = metrics.clone();
        let alive = hub_alive.clone();
        let live = live.clone();
        std::thread::Builder::new()
            .name("hum-hub".into())
            .spawn(move || {
                hub_thread(hub, hub_rx, &metrics, sfu.as_ref(), &live, link);
                alive.store(false, Ordering::SeqCst);
            })
            .context("spawning the hub thread")?;
    }
    {
        let tx = hub_tx.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                if tx.send(HubCmd::Tick).await.is_err() {
                    return;
                }
            }
        });
    }

    // Clients past the descriptor limit would time out instead of getting the 503: raise the
    // soft limit to the hard one, and cap connections below what remains.
    let nofile = crate::accept::raise_descriptor_limit();
    let max_connections = crate::accept::descriptor_cap(config.max_connections, nofile);
    if max_connections < config.max_connections {
        tracing::warn!(
            open_file_limit = nofile,
            requested = config.max_connections,
            max_connections,
            "the open-file limit allows fewer connections than --max-connections; raise the hard limit (ulimit -Hn) to serve more"
        );
    } else {
        tracing::info!(
            open_file_limit = nofile,
            max_connections,
            "connection limit"
        );
    }
    metrics
        .max_connections
        .store(max_connections as u64, Ordering::Relaxed);
    metrics
        .open_file_limit
        .store(nofile.unwrap_or(0), Ordering::Relaxed);
    // Checked before binding: a wrong --web-dir stops the start with what to do.
    let web = config
        .web_dir
        .as_deref()
        .map(crate::web::WebDir::open)
        .transpose()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    if let Some((c, number)) = node {
        start_membership(&c, number, addr, hub_tx.clone(), stopping.subscribe())?;
    }
    if config.login_names.is_empty() {
        tracing::info!(
            "logins are not bound to this relay's name: pass --login-name HOST[:PORT] (docs/security.md)"
        );
    } else {
        tracing::info!(names = %config.login_names.join(", "), "logins must be signed for one of these names");
    }
    let login_names: Arc<[String]> = Arc::from(config.login_names.clone());
    let shared = Arc::new(Shared {
        login_names,
        probe_slots: Arc::new(Semaphore::new(config.max_probes)),
        probe_sources: Arc::default(),
        config,
        hub_tx,
        metrics: metrics.clone(),
        next_conn: AtomicU64::new(first_conn),
        hub_alive,
        relay_name: format!("hum-relay/{}", env!("CARGO_PKG_VERSION")),
        max_connections,
        stopping,
        live,
    });
    let stopping = shared.stopping.clone();
    let app = Router::new()
        .route("/ws", get(ws_handler))
        .route("/probe", get(crate::probe::probe_handler))
        .route("/mesh", get(crate::live::mesh_handler))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_handler))
        .with_state(shared.clone());
    let app = match &web {
        Some(dir) => app.fallback_service(crate::web::router(dir.clone())),
        None => app,
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(crate::accept::accept_loop(listener, app, shared, stop_rx));
    Ok(RelayHandle {
        addr,
        sfu_addr,
        metrics,
        shutdown: Some(stop_tx),
        stopping,
        server,
    })
}

// --- the hub thread -------------------------------------------------------------------------------

/// The hub thread's side of the cluster (crate::bus): where it logs inputs, the order it takes
/// them in, and the store's tape.
struct ClusterLink {
    me: u64,
    log: crate::cluster::Log,
    seq: crate::bus::Sequencer,
    tape: crate::store::tape::TapeControl,
}

/// Read the cluster's log on a thread of its own, handing each record to the hub thread.
fn start_log_reader(c: &ClusterConfig, tx: mpsc::Sender<HubCmd>) -> anyhow::Result<()> {
    let (url, cluster) = (c.redis.clone(), c.cluster.clone());
    std::thread::Builder::new()
        .name("hum-cluster-log".into())
        .spawn(move || {
            let r = crate::cluster::read_log(&url, &cluster, |rec| {
                match tx.blocking_send(HubCmd::Log(rec)) {
                    Ok(()) => std::ops::ControlFlow::Continue(()),
                    Err(_) => std::ops::ControlFlow::Break(()),
                }
            });
            if let Err(e) = r {
                tracing::error!(error = %e, "cluster: the log reader stopped");
            }
        })
        .context("spawning the cluster log reader")?;
    Ok(())
}

/// Announce this node (refreshing well within its TTL; leaving on shutdown) and watch the
/// others: a node that expires or leaves is reported to the hub thread, which logs its death.
fn start_membership(
    c: &ClusterConfig,
    number: u64,
    addr: SocketAddr,
    tx: mpsc::Sender<HubCmd>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    if c.public_url.is_none() && addr.ip().is_unspecified() {
        tracing::warn!(
            %addr,
            "this node listens on every address and has no --public-url: its clients are told ws://{addr}/ws as where to reconnect, which they cannot reach; pass --public-url"
        );
    }
    let url = c
        .public_url
        .clone()
        .unwrap_or_else(|| format!("ws://{addr}/ws"));
    let me = hum_proto::cluster::NodeInfo::new(c.node.clone(), url, unix_ms())
        .context("the node's public URL (--public-url)")?;
    let mut members = crate::cluster::Membership::connect(&c.redis, &c.cluster)?;
    members.announce(&me, c.ttl)?;
    let ttl = c.ttl;
    std::thread::Builder::new()
        .name("hum-cluster-beat".into())
        .spawn(move || {
            loop {
                std::thread::sleep(ttl / 3);
                if *stopping.borrow_and_update() {
                    let _ = members.leave(&me.id);
                    return;
                }
                if let Err(e) = members.announce(&me, ttl) {
                    tracing::warn!(error = %e, "cluster: could not refresh this node's announcement");
                }
            }
        })
        .context("spawning the cluster heartbeat")?;
    let watcher = crate::cluster::Watcher::connect(&c.redis, &c.cluster)?;
    let mut lookup = redis::Client::open(c.redis.as_str())?.get_connection()?;
    let mut lister = crate::cluster::Membership::connect(&c.redis, &c.cluster)?;
    let (cluster, me_id) = (c.cluster.clone(), c.node.clone());
    std::thread::Builder::new()
        .name("hum-cluster-watch".into())
        .spawn(move || {
            // The clients' node list (crate::node_list): listed at the first tick, on every
            // membership change, and every 5 s in case a notification was missed.
            let mut listed: Option<Vec<hum_proto::cluster::NodeInfo>> = None;
            let mut stale = true;
            let mut quiet_ticks = 0u32;
            let r = watcher.run(Duration::from_millis(500), |change| {
                use crate::cluster::Change;
                if change.is_some() {
                    stale = true;
                } else {
                    quiet_ticks += 1;
                    if quiet_ticks.is_multiple_of(10) {
                        stale = true;
                    }
                }
                if stale {
                    match lister.live_nodes() {
                        Ok(live) => {
                            stale = false;
                            let nodes = crate::node_list::client_list(live);
                            if listed.as_ref() != Some(&nodes) {
                                listed = Some(nodes.clone());
                                if tx.blocking_send(HubCmd::Nodes(nodes)).is_err() {
                                    return std::ops::ControlFlow::Break(());
                                }
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "cluster: cannot list the live nodes for clients"),
                    }
                }
                let gone = match change {
                    Some(Change::Expired(id) | Change::Left(id)) if id != me_id => id,
                    _ => return std::ops::ControlFlow::Continue(()),
                };
                match crate::cluster::node_number(&mut lookup, &cluster, &gone) {
                    Ok(Some(node)) if node != number => {
                        tracing::warn!(node = %gone, number = node, "cluster: a node is gone; ending its sessions");
                        if tx.blocking_send(HubCmd::NodeGone { node }).is_err() {
                            return std::ops::ControlFlow::Break(());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, node = %gone, "cluster: cannot look up a gone node's number"),
                }
                std::ops::ControlFlow::Continue(())
            });
            if let Err(e) = r {
                tracing::error!(error = %e, "cluster: the membership watcher stopped");
            }
        })
        .context("spawning the cluster watcher")?;
    Ok(())
}

fn hub_thread(
    mut hub: Hub,
    mut rx: mpsc::Receiver<HubCmd>,
    metrics: &Metrics,
    sfu: Option<&crate::sfu::SfuLink>,
    live: &crate::live::Live,
    mut cluster: Option<ClusterLink>,
) {
    let mut conns: HashMap<ConnId, OutboxTx> = HashMap::new();
    let mut nodes = crate::node_list::NodeList::default();
    while let Some(cmd) = rx.blocking_recv() {
        let cmd = match cmd {
            HubCmd::Nodes(list) => {
                tell_nodes(&mut nodes, list, &conns);
                continue;
            }
            cmd => cmd,
        };
        let mut now = unix_ms();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| match cluster.as_mut() {
            None => apply_local(&mut hub, &mut conns, cmd, now, metrics, sfu),
            Some(link) => apply_clustered(
                &mut hub, &mut conns, link, cmd, &mut now, metrics, sfu, live, &mut nodes,
            ),
        }));
        if result.is_err() {
            // A bug, not bad input: keep serving everyone else.
            tracing::error!("the hub panicked while handling a command; continuing");
        }
        let sfu_cmds = match cluster.as_mut() {
            None => dispatch(&mut hub, &mut conns, metrics, now, Some(live)),
            Some(link) => {
                let log = &mut link.log;
                let sink = Delivery {
                    conns: &mut conns,
                    nodes: Some(&mut nodes),
                };
                dispatch_with(&mut hub, sink, metrics, Some(live), &mut |_, c| {
                    log_input(log, now, crate::bus::Input::Disconnect { conn: c });
                })
            }
        };
        for cmd in sfu_cmds {
            match sfu {
                Some(s) => s.exec(cmd),
                None => tracing::error!("the hub asked for an SFU that does not run"),
            }
        }
    }
    tracing::info!("hub thread stopped");
}

/// A single relay: every command goes straight to the hub.
fn apply_local(
    hub: &mut Hub,
    conns: &mut HashMap<ConnId, OutboxTx>,
    cmd: HubCmd,
    now: u64,
    metrics: &Metrics,
    sfu: Option<&crate::sfu::SfuLink>,
) {
    match cmd {
        HubCmd::Login {
            conn,
            re,
            user,
            display_name,
            tx,
            source,
        } => {
            conns.insert(conn, tx);
            hub.login_from(now, conn, re, user, display_name, source);
        }
        HubCmd::Request { conn, re, req } => hub.request(now, conn, re, req),
        HubCmd::Disconnect { conn } => {
            conns.remove(&conn);
            hub.disconnect(now, conn);
        }
        HubCmd::Tick => {
            hub.tick(now);
            metrics.set_hub(hub.stats());
            if let Some(s) = sfu {
                s.refresh_metrics();
            }
        }
        HubCmd::SfuDone {
            conn,
            re,
            user,
            joining,
            result,
        } => hub.sfu_done(conn, re, user, joining, result),
        HubCmd::SfuEvent(ev) => crate::sfu::on_event(hub, ev),
        HubCmd::LiveSignal { stream, to, signal } => hub.live_signal(stream, to, signal),
        HubCmd::Log(_) | HubCmd::NodeGone { .. } | HubCmd::Nodes(_) => {
            tracing::error!("a cluster command reached a relay that is not in a cluster")
        }
    }
}

/// Log `input`; a failure is logged (the caller answers the client when it can).
fn log_input(log: &mut crate::cluster::Log, now: u64, input: crate::bus::Input) -> bool {
    match log.entry(now, input) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "cluster: cannot append to the log");
            false
        }
    }
}

/// A cluster node: this node's clients' inputs go to the log; the log's entries, in order,
/// go to the hub (crate::bus). `now` becomes the entry's time.
#[allow(clippy::too_many_arguments)]
fn apply_clustered(
    hub: &mut Hub,
    conns: &mut HashMap<ConnId, OutboxTx>,
    link: &mut ClusterLink,
    cmd: HubCmd,
    now: &mut u64,
    metrics: &Metrics,
    sfu: Option<&crate::sfu::SfuLink>,
    live: &crate::live::Live,
    nodes: &mut crate::node_list::NodeList,
) {
    use crate::bus::Input;
    let unavailable = |conns: &HashMap<ConnId, OutboxTx>, conn: ConnId, re: RequestId| {
        if let Some(tx) = conns.get(&conn) {
            let msg = ServerMessage::error(
                Some(re),
                ProtoError::new(
                    ErrorCode::Internal,
                    "the relay cluster's bus is unavailable; try again",
                ),
            );
            let _ = tx.push(Outbound::Text(Utf8Bytes::from(encode(&msg))));
        }
    };
    match cmd {
        HubCmd::Login {
            conn,
            re,
            user,
            display_name,
            tx,
            source,
        } => {
            conns.insert(conn, tx);
            let input = Input::Login {
                conn,
                re,
                user,
                display_name,
                source: source.map(SourceKey::to_log),
            };
            if !log_input(&mut link.log, *now, input) {
                unavailable(conns, conn, re);
            }
        }
        HubCmd::Request { conn, re, req } => {
            if !log_input(&mut link.log, *now, Input::Request { conn, re, req }) {
                unavailable(conns, conn, re);
            }
        }
        HubCmd::Disconnect { conn } => {
            conns.remove(&conn);
            log_input(&mut link.log, *now, Input::Disconnect { conn });
        }
        HubCmd::Tick => {
            log_input(&mut link.log, *now, Input::Tick);
            metrics.set_hub(hub.stats());
        }
        HubCmd::NodeGone { node } => {
            log_input(&mut link.log, *now, Input::NodeDown { node });
        }
        HubCmd::Log(record) => {
            link.seq.push(record);
            while let Some(ready) = link.seq.next_ready() {
                let entry = ready.entry;
                match ready.results {
                    None => link.tape.record(),
                    Some(r) => link.tape.replay(r),
                }
                *now = entry.now_ms;
                match entry.input {
                    Input::Login {
                        conn,
                        re,
                        user,
                        display_name,
                        source,
                    } => {
                        let source = source.as_deref().and_then(SourceKey::from_log);
                        hub.login_from(entry.now_ms, conn, re, user, display_name, source)
                    }
                    Input::Request { conn, re, req } => hub.request(entry.now_ms, conn, re, req),
                    Input::Disconnect { conn } => hub.disconnect(entry.now_ms, conn),
                    Input::Tick => hub.tick(entry.now_ms),
                    Input::NodeDown { node } if node == link.me => {
                        // Cut off from Redis for longer than the TTL: the others have ended
                        // this node's sessions and dropped what it had not finished. Its state
                        // can no longer be trusted; clients reconnect to a live node.
                        tracing::error!(
                            "cluster: the other nodes declared this node dead; stopping"
                        );
                        std::process::exit(75);
                    }
                    Input::NodeDown { node } => {
                        hub.disconnect_where(entry.now_ms, |c| crate::bus::node_of(c) == node)
                    }
                }
                let effects = link.tape.take();
                if entry.node == link.me
                    && let Err(e) = link.log.results(entry.seq, effects)
                {
                    // The others wait for these results; without them they stall until this
                    // node is declared dead.
                    tracing::error!(error = %e, "cluster: cannot log an entry's results");
                }
                // Deliver as we go: outputs address this moment's connections.
                let sink = Delivery {
                    conns,
                    nodes: Some(nodes),
                };
                let cmds = dispatch_with(hub, sink, metrics, Some(live), &mut |_, c| {
                    log_input(&mut link.log, entry.now_ms, Input::Disconnect { conn: c });
                });
                for cmd in cmds {
                    if let Some(s) = sfu {
                        s.exec(cmd);
                    }
                }
            }
        }
        // Not replicated: no SFU runs in a cluster yet, and a root's signal only goes to this
        // node's viewers.
        HubCmd::SfuDone {
            conn,
            re,
            user,
            joining,
            result,
        } => hub.sfu_done(conn, re, user, joining, result),
        HubCmd::SfuEvent(ev) => crate::sfu::on_event(hub, ev),
        HubCmd::LiveSignal { stream, to, signal } => hub.live_signal(stream, to, signal),
        // Handled by the hub thread before it gets here.
        HubCmd::Nodes(_) => {}
    }
}

/// Take the cluster's new live-node list and tell every welcomed client here, if it changed.
fn tell_nodes(
    nodes: &mut crate::node_list::NodeList,
    list: Vec<hum_proto::cluster::NodeInfo>,
    conns: &HashMap<ConnId, OutboxTx>,
) {
    let Some(frame) = nodes.set(list) else { return };
    for c in nodes.told() {
        // A full queue is noticed (and the client dropped) by the next dispatch.
        if let Some(tx) = conns.get(&c) {
            let _ = tx.push(Outbound::Text(frame.clone()));
        }
    }
    nodes.prune(0, |c| conns.contains_key(&c));
}

/// Where the hub's outputs go: this relay's connections, and (in a cluster) the node list a
/// connection is told right after its `welcome`.
struct Delivery<'a> {
    conns: &'a mut HashMap<ConnId, OutboxTx>,
    nodes: Option<&'a mut crate::node_list::NodeList>,
}

/// Deliver the hub's outputs (a single relay: a dropped client leaves the hub at once).
fn dispatch(
    hub: &mut Hub,
    conns: &mut HashMap<ConnId, OutboxTx>,
    metrics: &Metrics,
    now: u64,
    live: Option<&crate::live::Live>,
) -> Vec<SfuCmd> {
    let sink = Delivery { conns, nodes: None };
    dispatch_with(hub, sink, metrics, live, &mut |hub, c| {
        hub.disconnect(now, c)
    })
}

/// Deliver the hub's outputs to this relay's connections (in a cluster, other nodes deliver
/// the rest). Clients whose queue is full are dropped (`drop_client`), which may produce more
/// outputs (roster changes), so loop until quiet. Returns what the SFU should do, in order.
fn dispatch_with(
    hub: &mut Hub,
    sink: Delivery<'_>,
    metrics: &Metrics,
    live: Option<&crate::live::Live>,
    drop_client: &mut dyn FnMut(&mut Hub, ConnId),
) -> Vec<SfuCmd> {
    let Delivery { conns, mut nodes } = sink;
    let mut sfu = Vec::new();
    loop {
        let outputs = hub.drain();
        if outputs.is_empty() {
            return sfu;
        }
        let mut dropped = Vec::new();
        for out in outputs {
            match out {
                Output::Send { to, msg } => {
                    // Encode only what someone here receives.
                    if !to.iter().any(|c| conns.contains_key(c)) {
                        continue;
                    }
                    if let ServerMessage::Error { code, .. } = &msg {
                        metrics.error(*code);
                    }
                    let welcome = matches!(
                        &msg,
                        ServerMessage::Reply {
                            reply: hum_proto::signal::Reply::Welcome { .. },
                            ..
                        }
                    );
                    let text = Utf8Bytes::from(encode(&msg));
                    for c in to {
                        let Some(tx) = conns.get(&c) else { continue };
                        // A cluster's node list follows the welcome (crate::node_list).
                        let then = match nodes.as_deref_mut() {
                            Some(n) if welcome => n.welcomed(c),
                            _ => None,
                        };
                        for text in std::iter::once(text.clone()).chain(then) {
                            match tx.push(Outbound::Text(text)) {
                                Ok(()) => {
                                    metrics.messages_out.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(PushError::Full) => {
                                    metrics.closed_too_slow.fetch_add(1, Ordering::Relaxed);
                                    dropped.push(c);
                                    break;
                                }
                                Err(PushError::Closed) => {
                                    dropped.push(c);
                                    break;
                                }
                            }
                        }
                    }
                }
                Output::Close { conn, code, reason } => {
                    if let Some(tx) = conns.remove(&conn) {
                        tx.push_close(code, reason);
                    }
                }
                Output::Sfu(cmd) => sfu.push(cmd),
                Output::Live(cmd) => {
                    if let Some(l) = live {
                        l.exec(cmd);
                    }
                }
            }
        }
        for c in dropped {
            // The overflowed queue wakes its connection task, which closes with TOO_SLOW and
            // frees what was queued; dropping the sender also ends the queue.
            if conns.remove(&c).is_some() {
                drop_client(hub, c);
            }
        }
        if let Some(n) = nodes.as_deref_mut() {
            n.prune(conns.len(), |c| conns.contains_key(&c));
        }
    }
}

// --- HTTP handlers --------------------------------------------------------------------------------

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.hub_alive.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "hub stopped\n").into_response()
    }
}

async fn metrics_handler(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(),
    )
        .into_response()
}

/// `GET /ws`: the upgrade is done by hand (not with axum's `WebSocketUpgrade`) so the relay owns
/// the tungstenite stream and can send large messages as fragments: tungstenite keeps its write
/// buffer at the size of the largest frame it ever wrote, so one big `server_info` would
/// otherwise pin that much memory per connection for the connection's whole life.
async fn ws_handler(
    State(shared): State<Arc<Shared>>,
    mut req: axum::extract::Request,
) -> Response {
    let headers = req.headers();
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return (
            StatusCode::UPGRADE_REQUIRED,
            "this is a WebSocket endpoint\n",
        )
            .into_response();
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return (
            StatusCode::UPGRADE_REQUIRED,
            h,
            "WebSocket version 13 only\n",
        )
            .into_response();
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return (StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n").into_response();
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return (
            StatusCode::BAD_REQUEST,
            "this connection cannot be upgraded\n",
        )
            .into_response();
    };
    let peer = req
        .extensions()
        .get::<crate::accept::PeerAddr>()
        .map(|p| p.0);
    // The TCP connection's slot (counted since `accept`) now belongs to the WebSocket.
    let Some(mut slot) = req.extensions().get::<SlotCell>().and_then(SlotCell::take) else {
        return (StatusCode::SERVICE_UNAVAILABLE, AT_CAPACITY).into_response();
    };
    if !slot.upgrade() {
        return (StatusCode::SERVICE_UNAVAILABLE, AT_CAPACITY).into_response();
    }
    let hard = shared.config.hard_frame_limit();
    let config = WebSocketConfig::default()
        .max_message_size(Some(hard))
        .max_frame_size(Some(hard))
        // Small buffers: 5,000 idle clients must not cost 128 KiB each.
        .read_buffer_size(4 * 1024)
        // Frames are fed in batches and flushed once; the buffer holds about a batch.
        .write_buffer_size(WRITE_BUFFER);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let io = hyper_util::rt::TokioIo::new(upgraded);
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                connection(ws, slot, peer).await;
            }
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut res = Response::new(axum::body::Body::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    res
}

/// The close reason of a client dropped for not reading (close code 4002).
const TOO_SLOW_REASON: &str = "you did not read messages fast enough";

/// Largest frame payload the relay writes; longer messages go out as continuation frames.
const FRAGMENT: usize = 4 * 1024;

/// A text message as frames of at most [`FRAGMENT`] bytes.
fn text_frames(text: Utf8Bytes) -> Vec<Message> {
    if text.len() <= FRAGMENT {
        return vec![Message::Text(text)];
    }
    let bytes = Bytes::from(text);
    let n = bytes.len().div_ceil(FRAGMENT);
    (0..n)
        .map(|i| {
            let chunk = bytes.slice(i * FRAGMENT..((i + 1) * FRAGMENT).min(bytes.len()));
            let opcode = if i == 0 {
                OpCode::Data(Data::Text)
            } else {
                OpCode::Data(Data::Continue)
            };
            Message::Frame(Frame::message(chunk, opcode, i + 1 == n))
        })
        .collect()
}

fn error_frame(re: Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Message {
    Message::Text(Utf8Bytes::from(encode(&ServerMessage::error(
        re,
        ProtoError::new(code, message),
    ))))
}

async fn connection<S>(socket: WebSocketStream<S>, slot: ConnSlot, peer: Option<SocketAddr>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let shared = slot.shared().clone();
    let cfg = &shared.config;
    let metrics = &shared.metrics;
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    metrics.connections_total.fetch_add(1, Ordering::Relaxed);

    let (tx, mut rx) = outbox(cfg.outbox_bytes, shared.metrics.outbox_bytes.clone());
    let overflow = rx.overflow();
    // Held here until login hands it to the hub; while held, `rx` never reports closed.
    let mut tx = Some(tx);
    let mut handshake = Handshake::new(shared.relay_name.clone(), shared.login_names.clone());
    let max_strikes = cfg.rate_burst.saturating_mul(2).max(50);
    let mut limiter = RateLimiter::new(cfg.rate_per_sec, cfg.rate_burst, max_strikes, unix_ms());
    let started = Instant::now();
    let mut last_heard = Instant::now();
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + cfg.ping_interval,
        cfg.ping_interval,
    );
    let mut stopping = shared.stopping.subscribe();
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut sink, mut stream) = socket.split();

    macro_rules! write {
        ($msg:expr) => {
            match tokio::time::timeout(cfg.write_timeout, sink.send($msg)).await {
                Ok(Ok(())) => true,
                Ok(Err(_)) => false,
                Err(_) => {
                    metrics.closed_too_slow.fetch_add(1, Ordering::Relaxed);
                    false
                }
            }
        };
    }

    let close_with: Option<(u16, String)> = loop {
        tokio::select! {
            frame = stream.next() => {
                let frame = match frame {
                    None => break None,
                    Some(Ok(f)) => f,
                    Some(Err(e)) => {
                        // tungstenite refuses frames over the hard limit before buffering them.
                        if matches!(e, tokio_tungstenite::tungstenite::Error::Capacity(_)) {
                            metrics.closed_abuse.fetch_add(1, Ordering::Relaxed);
                            metrics.error(ErrorCode::TooLarge);
                            let hard = cfg.hard_frame_limit();
                            let _ = write!(error_frame(None, ErrorCode::TooLarge,
                                format!("frame over {hard} bytes; closing")));
                            break Some((close::TOO_BIG, "frame too large".into()));
                        }
                        break None;
                    }
                };
                last_heard = Instant::now();
                let text = match frame {
                    Message::Text(t) => t,
                    Message::Binary(_) => {
                        metrics.messages_in.fetch_add(1, Ordering::Relaxed);
                        if limiter.check(unix_ms()) == Verdict::Disconnect {
                            metrics.closed_abuse.fetch_add(1, Ordering::Relaxed);
                            break Some((close::POLICY, "too many requests".into()));
                        }
                        metrics.error(ErrorCode::BadJson);
                        if !write!(error_frame(None, ErrorCode::BadJson,
                            "binary frames are not part of the protocol; send JSON text frames")) {
                            break None;
                        }
                        continue;
                    }
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                    Message::Close(_) => break None,
                };
                metrics.messages_in.fetch_add(1, Ordering::Relaxed);
                match limiter.check(unix_ms()) {
                    Verdict::Allow => {}
                    Verdict::Reject => {
                        metrics.error(ErrorCode::RateLimited);
                        let msg = format!("over {} requests/s (burst {}); slow down", cfg.rate_per_sec, cfg.rate_burst);
                        if !write!(error_frame(peek_request_id(&text), ErrorCode::RateLimited, msg)) {
                            break None;
                        }
                        continue;
                    }
                    Verdict::Disconnect => {
                        metrics.closed_abuse.fetch_add(1, Ordering::Relaxed);
                        let _ = write!(error_frame(None, ErrorCode::RateLimited, "flooding; closing"));
                        break Some((close::POLICY, "too many requests".into()));
                    }
                }
                let msg = match decode_client_message_limited(&text, cfg.max_message_bytes) {
                    Ok(m) => m,
                    Err(e) => {
                        metrics.error(e.error.code);
                        if !write!(error_frame(e.re, e.error.code, e.error.message)) {
                            break None;
                        }
                        continue;
                    }
                };
                match handshake.on_request(msg.id, &msg.request, &mut OsRng) {
                    Step::Answer(reply) => {
                        if let ServerMessage::Error { code, .. } = &reply {
                            metrics.error(*code);
                        }
                        if !write!(Message::Text(Utf8Bytes::from(encode(&reply)))) {
                            break None;
                        }
                    }
                    Step::Login { re, user, display_name } => {
                        let Some(tx) = tx.take() else { break None };
                        let source = peer.and_then(|p| cfg.source_key(p));
                        let cmd = HubCmd::Login { conn, re, user, display_name, tx, source };
                        if shared.hub_tx.send(cmd).await.is_err() {
                            break Some((close::GOING_AWAY, "relay stopping".into()));
                        }
                    }
                    Step::Forward => {
                        let cmd = HubCmd::Request { conn, re: msg.id, req: msg.request };
                        if shared.hub_tx.send(cmd).await.is_err() {
                            break Some((close::GOING_AWAY, "relay stopping".into()));
                        }
                    }
                }
            }
            _ = overflow.wait() => {
                break Some((close::TOO_SLOW, TOO_SLOW_REASON.into()));
            }
            out = rx.recv() => {
                // Write whatever is queued (up to a batch) with one flush: under a burst of
                // events this coalesces frames into few TCP writes. A frame's bytes are given
                // back to the queue's budget when it leaves the queue.
                let mut next = out;
                let mut batch = 0;
                let mut closing = None;
                let mut ok = true;
                loop {
                    if let Some(m) = &next {
                        rx.written(m);
                    }
                    match next {
                        Some(Outbound::Text(t)) => {
                            for frame in text_frames(t) {
                                let fed = tokio::select! {
                                    r = tokio::time::timeout(cfg.write_timeout, sink.feed(frame)) => matches!(r, Ok(Ok(()))),
                                    _ = overflow.wait() => false,
                                };
                                if !fed {
                                    ok = false;
                                    break;
                                }
                            }
                            if !ok {
                                break;
                            }
                        }
                        Some(Outbound::Close(code, reason)) => {
                            closing = Some((code, reason));
                            break;
                        }
                        None => {
                            closing = Some((close::TOO_SLOW, TOO_SLOW_REASON.to_string()));
                            break;
                        }
                    }
                    batch += 1;
                    if batch >= WRITE_BATCH || overflow.is_set() {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(o) => next = Some(o),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => next = None,
                    }
                }
                if overflow.is_set() {
                    break Some((close::TOO_SLOW, TOO_SLOW_REASON.into()));
                }
                if ok {
                    let flushed = tokio::select! {
                        r = tokio::time::timeout(cfg.write_timeout, sink.flush()) => r,
                        _ = overflow.wait() => Ok(Ok(())),
                    };
                    match flushed {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => ok = false,
                        Err(_) => {
                            metrics.closed_too_slow.fetch_add(1, Ordering::Relaxed);
                            ok = false;
                        }
                    }
                }
                if overflow.is_set() {
                    break Some((close::TOO_SLOW, TOO_SLOW_REASON.into()));
                }
                if !ok {
                    break None;
                }
                if closing.is_some() {
                    break closing;
                }
            }
            // The deadlines are exact, not checked only when a ping is due.
            _ = tokio::time::sleep_until((last_heard + cfg.idle_timeout).into()) => {
                break Some((close::IDLE_TIMEOUT, "nothing heard from you in time".into()));
            }
            _ = tokio::time::sleep_until((started + cfg.login_timeout).into()), if !handshake.logged_in() => {
                break Some((close::LOGIN_TIMEOUT, "log in sooner".into()));
            }
            _ = stopping.changed() => {
                break Some((close::GOING_AWAY, "the relay is shutting down; reconnect in a moment".into()));
            }
            _ = ping.tick() => {
                if !write!(Message::Ping(Bytes::new())) {
                    break None;
                }
            }
        }
    };
    // Free what is still queued now, not after the closing handshake, and leave rosters and
    // calls at once (the closing handshake may take a few seconds with a client that does not read).
    drop(rx);
    drop(tx);
    if handshake.logged_in() {
        let _ = shared.hub_tx.send(HubCmd::Disconnect { conn }).await;
    }
    if let Some((code, reason)) = close_with {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from(reason),
        };
        let sent = tokio::time::timeout(
            Duration::from_secs(2),
            sink.send(Message::Close(Some(frame))),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if sent {
            // Closing handshake: read (and discard) until the client's close, briefly. Closing
            // the socket with unread input would send a TCP reset that can destroy our close
            // frame before the client reads it.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Some(Ok(m)) = stream.next().await {
                    if matches!(m, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
    }
    drop(slot);
}

// Used by the probe module.
impl Shared {
    pub(crate) fn max_connections(&self) -> usize {
        self.max_connections
    }
    pub(crate) fn probe_slots(&self) -> &Arc<Semaphore> {
        &self.probe_slots
    }
    pub(crate) fn probe_sources(&self) -> &Arc<std::sync::Mutex<HashMap<SourceKey, usize>>> {
        &self.probe_sources
    }
    pub(crate) fn config(&self) -> &RelayConfig {
        &self.config
    }
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    pub(crate) fn live(&self) -> &crate::live::Live {
        &self.live
    }
}

pub(crate) type SharedState = Arc<Shared>;

#[cfg(test)]
mod tests {
    use super::*;
    use hum_proto::signal::Request;
    use rand::SeedableRng;

    #[test]
    fn long_messages_are_sent_as_fragments() {
        assert!(matches!(
            &text_frames(Utf8Bytes::from("short"))[..],
            [Message::Text(_)]
        ));
        let long = "é".repeat(FRAGMENT); // 2 bytes each: fragments split inside characters
        let frames = text_frames(Utf8Bytes::from(long.clone()));
        assert_eq!(frames.len(), 2);
        let mut joined = Vec::new();
        for (i, f) in frames.into_iter().enumerate() {
            let Message::Frame(f) = f else {
                panic!("expected raw frames")
            };
            let h = f.header();
            assert_eq!(h.is_final, i == 1);
            let want = if i == 0 {
                OpCode::Data(Data::Text)
            } else {
                OpCode::Data(Data::Continue)
            };
            assert_eq!(h.opcode, want);
            assert!(f.payload().len() <= FRAGMENT);
            joined.extend_from_slice(f.payload());
        }
        assert_eq!(joined, long.as_bytes());
    }

    #[test]
    fn a_client_whose_queue_is_full_is_dropped_and_leaves_the_hub() {
        let store = Store::open_in_memory().unwrap();
        let mut hub = Hub::new(store, HubConfig::default(), ChaCha8Rng::seed_from_u64(1)).unwrap();
        let metrics = Metrics::default();
        let mut conns = HashMap::new();
        let total = metrics.outbox_bytes.clone();
        let (fast_tx, mut fast_rx) = outbox(1 << 20, total.clone());
        // Room for the welcome and nothing more.
        let (slow_tx, mut slow_rx) = outbox(1, total.clone());
        conns.insert(1, fast_tx);
        conns.insert(2, slow_tx);
        hub.login(0, 1, RequestId(1), UserId([1; 32]), None);
        hub.login(0, 2, RequestId(1), UserId([2; 32]), None);
        dispatch(&mut hub, &mut conns, &metrics, 0, None);
        // The slow client's queue (1 byte) now holds its welcome; more frames overflow it.
        hub.request(0, 2, RequestId(2), Request::Ping);
        dispatch(&mut hub, &mut conns, &metrics, 0, None);
        assert!(!conns.contains_key(&2), "overflowing client dropped");
        assert_eq!(hub.user_of(2), None, "and logged out of the hub");
        assert_eq!(metrics.closed_too_slow.load(Ordering::Relaxed), 1);
        // Its queue is marked overflowed (the connection task closes with 4002 at once) and
        // ends after the frames it had.
        assert!(slow_rx.overflow().is_set());
        assert!(matches!(slow_rx.try_recv(), Ok(Outbound::Text(_))));
        assert!(matches!(
            slow_rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        // The other client is untouched.
        hub.request(0, 1, RequestId(2), Request::Ping);
        dispatch(&mut hub, &mut conns, &metrics, 0, None);
        let mut got = 0;
        while let Ok(Outbound::Text(t)) = fast_rx.try_recv() {
            assert!(
                t.as_str().starts_with("{\"type\":\"reply\""),
                "{}",
                t.as_str()
            );
            got += 1;
        }
        assert_eq!(got, 2);
        assert!(metrics.messages_out.load(Ordering::Relaxed) >= 3);
    }
}
