//! `hum-relay`: run the Hum signalling relay.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hum_relay::{RelayConfig, start};

/// Hum's relay: accounts, friends, servers, voice channels and WebRTC signalling over WebSocket.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:7700", env = "HUM_RELAY_LISTEN")]
    listen: SocketAddr,
    /// Directory for the database (default: the platform data dir, e.g. ~/.local/share/hum/relay).
    #[arg(long, env = "HUM_RELAY_DATA")]
    data: Option<PathBuf>,
    /// Where accounts, friends and servers are stored: `sqlite` (the default: relay.sqlite3 in
    /// --data) or a PostgreSQL URL, `postgres://USER:PASSWORD@HOST:PORT/DB` or
    /// `postgresql:///DB?host=/run/postgresql` (a Unix socket). See docs/cluster.md.
    #[arg(long, env = "HUM_RELAY_STORE", hide_env_values = true)]
    store: Option<String>,
    /// Most open connections (WebSockets and HTTP requests not yet done); more get HTTP 503.
    /// Lowered at start to fit the open-file limit (the soft limit is raised to the hard one).
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Sustained requests per second per connection.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Requests a connection may send at once.
    #[arg(long, default_value_t = 200)]
    burst: u32,
    /// Largest accepted text frame in bytes.
    #[arg(long, default_value_t = hum_proto::signal::MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// How often to ping each connection, e.g. "10s", "500ms".
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    ping_interval: Duration,
    /// Drop a connection after this long without hearing from it.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// A new TCP connection must send its complete HTTP request (the WebSocket upgrade) within this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    upgrade_timeout: Duration,
    /// A connection must log in within this long.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    login_timeout: Duration,
    /// A call nobody answers ends after this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    ring_timeout: Duration,
    /// Bytes queued to one client before it counts as too slow and is dropped (close 4002).
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    outbox_bytes: usize,
    /// Largest max_participants an admin may give a channel.
    #[arg(long, default_value_t = 1_000)]
    max_channel_size: u32,
    /// UDP address of the embedded SFU (voice channels past --mesh-limit members use it).
    /// Default: the IP of --listen with a free port (printed at start and in /metrics);
    /// `off`: no SFU, every channel stays a mesh (at most 8 people).
    #[arg(long, env = "HUM_SFU_BIND")]
    sfu_bind: Option<String>,
    /// The address clients reach the SFU at, put in its ICE candidate (behind NAT or in a
    /// container: the public IP and port). Default: the bound address.
    #[arg(long, env = "HUM_SFU_PUBLIC_ADDR")]
    sfu_public_addr: Option<SocketAddr>,
    /// A voice channel is a full mesh up to this many members and moves to the SFU beyond
    /// (back at 2 fewer). At most 8; 0 puts every channel on the SFU.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(0..=8))]
    mesh_limit: u8,
    /// New accounts (first login of a key) per source address (IPv4, or IPv6 /64) and hour.
    #[arg(long, default_value_t = 10)]
    new_accounts_per_hour: u32,
    /// New accounts one source address may create at once before the hourly rate applies.
    #[arg(long, default_value_t = 5)]
    new_accounts_burst: u32,
    /// Servers one account may own.
    #[arg(long, default_value_t = 20)]
    max_owned_servers: usize,
    /// Voice channels per server.
    #[arg(long, default_value_t = 1_000)]
    max_channels_per_server: usize,
    /// Live invites per server.
    #[arg(long, default_value_t = 100)]
    max_invites_per_server: usize,
    /// Live invites one account may hold across all servers.
    #[arg(long, default_value_t = 200)]
    max_invites_per_user: usize,
    /// Bandwidth probes (/probe) running at once, in total...
    #[arg(long, default_value_t = 4)]
    max_probes: usize,
    /// ...and per source address (more get HTTP 429).
    #[arg(long, default_value_t = 1)]
    probes_per_address: usize,
    /// After a friend request is declined, how long before the same user may ask again.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    friend_request_cooldown: Duration,
    /// Apply the per-address limits (new accounts, probes) to loopback clients too (off: local
    /// tools and benchmarks open many accounts from 127.0.0.1; behind a reverse proxy on the
    /// same host every client is loopback, so these limits need the proxy's own).
    #[arg(long)]
    limit_loopback: bool,
    /// A TURN server for relaying media (`turn:host:port?transport=udp`, repeatable). Clients
    /// get time-limited credentials for it at login; needs --turn-secret.
    #[arg(long, env = "HUM_TURN_URL")]
    turn_url: Vec<String>,
    /// The secret shared with the TURN server (coturn `use-auth-secret` +
    /// `static-auth-secret`).
    #[arg(long, env = "HUM_TURN_SECRET", hide_env_values = true)]
    turn_secret: Option<String>,
    /// How long handed-out TURN credentials stay valid.
    #[arg(long, default_value = "12h", value_parser = humantime::parse_duration)]
    turn_ttl: Duration,
    /// Run as one node of a cluster sharing this Redis (`redis://HOST:PORT`,
    /// `redis+unix:///PATH`) and the --store PostgreSQL database with the other nodes
    /// (docs/cluster.md). Absent: a single relay.
    #[arg(long, env = "HUM_RELAY_REDIS", hide_env_values = true)]
    redis: Option<String>,
    /// The cluster's name (several clusters may share one Redis): a-z, 0-9 and '-'.
    #[arg(long, default_value = "hum", env = "HUM_RELAY_CLUSTER")]
    cluster: String,
    /// This node's name in the cluster (a-z, 0-9 and '-'); default: `node-` and the process id.
    #[arg(long, env = "HUM_RELAY_NODE")]
    node_id: Option<String>,
    /// The URL clients reach this node at, handed to clients in the node list; default
    /// `ws://LISTEN/ws`.
    #[arg(long, env = "HUM_RELAY_PUBLIC_URL")]
    public_url: Option<String>,
    /// A cluster node silent this long is dead: its sessions end on the other nodes.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    node_ttl: Duration,
    /// Serve the browser client (the web build of the UI, `ui/dist-web`) from this directory:
    /// `GET /`, `GET /invite/CODE` and its files (docs/browser.md). Default: no web client.
    #[arg(long, env = "HUM_RELAY_WEB_DIR")]
    web_dir: Option<PathBuf>,
    /// A JSON file announcing the newest desktop-client release,
    /// `{"version": "0.2.0", "url": "https://...", "notes": "..."}`: clients ask for it
    /// (`client_release`) and tell their user when they are older. Read and checked at start (a
    /// bad file stops the relay with the reason); restart the relay to change it.
    #[arg(long, env = "HUM_CLIENT_RELEASE")]
    client_release: Option<PathBuf>,
    /// A name clients reach this relay by, `HOST[:PORT]` as in their relay URL (repeat for each
    /// name, or comma-separate in the environment). Given: every login must be signed for one
    /// of these names, so another relay cannot reuse a user's login (docs/security.md).
    /// Default: logins are not bound.
    #[arg(long = "login-name", env = "HUM_RELAY_LOGIN_NAMES", value_delimiter = ',', value_parser = parse_login_name)]
    login_names: Vec<String>,
}

/// `--login-name`: a `host[:port]` (a URL is taken for its host and port).
fn parse_login_name(s: &str) -> Result<String, String> {
    let name = if s.contains("://") {
        hum_proto::signal::relay_name_from_url(s).ok_or_else(|| format!("{s:?} names no host"))?
    } else {
        s.trim().to_ascii_lowercase()
    };
    if name.is_empty()
        || name.len() > hum_proto::signal::MAX_RELAY_NAME
        || !name.bytes().all(|b| b.is_ascii_graphic())
        || name.contains('/')
    {
        return Err(format!(
            "{s:?} is not a HOST[:PORT] (printable ASCII, at most 261 characters, no path)"
        ));
    }
    Ok(name)
}

/// `--client-release FILE`: at most 64 KiB of JSON, every field checked.
fn load_client_release(path: &std::path::Path) -> anyhow::Result<hum_proto::signal::ReleaseInfo> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(64 * 1024 + 1).read_to_string(&mut text))
        .with_context(|| format!("--client-release {}: cannot read it", path.display()))?;
    anyhow::ensure!(
        text.len() <= 64 * 1024,
        "--client-release {}: larger than 64 KiB",
        path.display()
    );
    let release: hum_proto::signal::ReleaseInfo = serde_json::from_str(&text).with_context(|| {
        format!(
            "--client-release {}: expected {{\"version\": \"1.2.3\", \"url\": \"https://...\", \"notes\": \"...\"}}",
            path.display()
        )
    })?;
    release
        .validate()
        .with_context(|| format!("--client-release {}", path.display()))?;
    Ok(release)
}

/// `--sfu-bind`: `off`, or an address; absent: the listen IP with a free port.
fn sfu_bind(arg: Option<&str>, listen: SocketAddr) -> anyhow::Result<Option<SocketAddr>> {
    match arg {
        Some("off") => Ok(None),
        Some(a) => a.parse().map(Some).with_context(|| {
            format!("--sfu-bind {a:?}: expected `off` or an address like 0.0.0.0:7701")
        }),
        None => Ok(Some(SocketAddr::new(listen.ip(), 0))),
    }
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    let dirs = directories::ProjectDirs::from("", "", "hum")
        .context("cannot find a home directory for the default data dir; pass --data DIR")?;
    Ok(dirs.data_dir().join("relay"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let data = match args.data {
        Some(d) => d,
        None => default_data_dir()?,
    };
    let mut config = RelayConfig::new(args.listen, data.clone());
    config.store = Some(hum_relay::store::Location::parse(
        args.store.as_deref(),
        &data,
    )?);
    config.max_connections = args.max_connections;
    config.rate_per_sec = args.rate;
    config.rate_burst = args.burst;
    config.max_message_bytes = args.max_message_bytes;
    config.ping_interval = args.ping_interval;
    config.idle_timeout = args.idle_timeout;
    config.login_timeout = args.login_timeout;
    config.outbox_bytes = args.outbox_bytes;
    config.upgrade_timeout = args.upgrade_timeout;
    config.hub.ring_timeout_ms = args.ring_timeout.as_millis() as u64;
    config.hub.max_channel_size = args.max_channel_size;
    config.hub.new_accounts_per_hour = args.new_accounts_per_hour;
    config.hub.new_accounts_burst = args.new_accounts_burst;
    config.hub.max_owned_servers_per_user = args.max_owned_servers;
    config.hub.max_channels_per_server = args.max_channels_per_server;
    config.hub.max_invites_per_server = args.max_invites_per_server;
    config.hub.max_invites_per_user = args.max_invites_per_user;
    config.hub.friend_request_cooldown_secs = args.friend_request_cooldown.as_secs();
    config.max_probes = args.max_probes;
    config.probes_per_address = args.probes_per_address;
    config.limit_loopback = args.limit_loopback;
    config.hub.mode.mesh_max = usize::from(args.mesh_limit);
    config.hub.turn = match (args.turn_url.is_empty(), args.turn_secret) {
        (true, None) => None,
        (false, Some(secret)) if !secret.is_empty() => Some(hum_relay::turn::TurnConfig {
            urls: args.turn_url,
            secret,
            ttl_secs: args.turn_ttl.as_secs().max(60),
        }),
        _ => anyhow::bail!(
            "--turn-url and --turn-secret go together (the URL clients use and the secret shared with the TURN server)"
        ),
    };
    if let Some(path) = &args.client_release {
        let release = load_client_release(path)?;
        tracing::info!(version = %release.version, url = %release.url, "announcing a client release");
        config.hub.client_release = Some(release);
    }
    if let Some(t) = &config.hub.turn {
        tracing::info!(urls = ?t.urls, ttl_secs = t.ttl_secs, "clients get TURN credentials at login");
    }
    config.sfu_bind = sfu_bind(args.sfu_bind.as_deref(), args.listen)?;
    config.sfu_public_addr = args.sfu_public_addr;
    config.web_dir = args.web_dir;
    config.login_names = args.login_names;
    if let Some(b) = config.sfu_bind
        && b.ip().is_unspecified()
        && config.sfu_public_addr.is_none()
    {
        tracing::warn!(
            "the SFU binds {b} but has no --sfu-public-addr: its ICE candidate names an unspecified address and clients cannot reach it; pass --sfu-public-addr IP:PORT"
        );
    }

    if let Some(redis) = args.redis {
        let node = args
            .node_id
            .unwrap_or_else(|| format!("node-{}", std::process::id()));
        config.cluster = Some(hum_relay::server::ClusterConfig {
            redis,
            node: hum_proto::cluster::NodeId::new(node.clone())
                .map_err(|e| anyhow::anyhow!("--node-id {node:?}: {e}"))?,
            cluster: args.cluster,
            public_url: args.public_url,
            ttl: args.node_ttl.max(Duration::from_millis(300)),
        });
    }

    let relay = start(config).await?;
    // Tests and scripts read this line to learn the port.
    println!("listening on {}", relay.addr);
    std::io::stdout().flush()?;
    tracing::info!(addr = %relay.addr, data = %data.display(), "hum-relay ready: ws://{}/ws", relay.addr);
    match relay.sfu_addr {
        Some(a) => tracing::info!("SFU on udp://{a}"),
        None => tracing::info!("no SFU (--sfu-bind off): voice channels stay meshes of at most 8"),
    }

    // SIGTERM / Ctrl-C: every client gets a 1001 close frame before the process exits.
    shutdown_signal().await;
    tracing::info!("shutting down: closing every connection with 1001");
    relay.shutdown(Duration::from_secs(3)).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
