//! `hum bench sfu --sfu janus`: [Janus](https://janus.conf.meetecho.com/) 1.x with its
//! VideoRoom plugin as the SFU under the bench's load, for a side-by-side with Hum's.
//!
//! Janus runs as its own process with a configuration generated into a temporary folder: only
//! the VideoRoom plugin and the plain-HTTP transport (on a free loopback port) are loaded (the
//! folders it loads from hold links to those two alone), no STUN or NAT lookups, no event
//! handlers, and its log (errors only) goes to a file. Janus gathers ICE candidates on
//! non-loopback interfaces only (loopback in its enforce list is skipped), so its clients bind
//! to the address Janus reports as its local IP: still local delivery through the kernel's
//! loopback device, as for Hum's clients on 127.0.0.1.
//!
//! Signalling is Janus's HTTP API: one session for the whole bench whose events are fetched by
//! one long poll (`GET /janus/<session>?maxev=N`) and handed to the request with the same
//! transaction. Each room is a VideoRoom room; a publisher is a handle that `joinandconfigure`s
//! with the str0m client's offer (one send-only Opus m-line) and Janus answers; a subscriber
//! is one handle subscribed to all the room's feeds at once (Janus 1.x multistream: `join`
//! with `streams`), for which Janus makes the offer and the client answers with `start`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::super::tempdir::TempDir;
use super::{
    MediaConn, Participant, Role, SfuBench, Shared, Signalling, accept_answer, accept_offer,
    http_request, make_offer, new_client, spawn_media,
};

/// How long Janus may take to answer a request (its plugin events included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const PLUGIN: &str = "janus.plugin.videoroom";
/// The VideoRoom's error code for a feed it does not know (yet).
const NO_SUCH_FEED: u64 = 428;

/// A Janus process started for the bench (killed when dropped) and its API session.
pub(super) struct JanusServer {
    child: tokio::process::Child,
    pid: u32,
    dir: TempDir,
    api: Arc<Api>,
    poller: tokio::task::JoinHandle<()>,
    publishers: usize,
    /// Where the clients' sockets are: the address Janus gathers its host candidates on.
    client_ip: IpAddr,
}

impl JanusServer {
    /// Starts Janus, opens the bench's session and creates one room per bench room.
    pub(super) async fn start(args: &SfuBench) -> Result<JanusServer> {
        let bin = match &args.janus_bin {
            Some(b) => b.clone(),
            None => find_on_path("janus").context(
                "no `janus` binary on PATH: --sfu janus needs Janus 1.x with its VideoRoom \
                 plugin (Debian/Ubuntu: `apt-get install janus`), or point --janus-bin at one",
            )?,
        };
        let lib = match &args.janus_lib {
            Some(l) => l.clone(),
            None => find_lib(&bin)?,
        };
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
            l.local_addr()?.port()
        };
        let dir =
            std::env::temp_dir().join(format!("hum-bench-janus-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let dir = TempDir(dir);
        write_config(&dir.0, &lib, port, args.janus_event_loops)?;
        let log = dir.0.join("janus.log");
        let out = std::fs::File::create(dir.0.join("stdout.log"))?;
        let mut child = tokio::process::Command::new(&bin)
            .arg("--config")
            .arg(dir.0.join("janus.jcfg"))
            .arg("--configs-folder")
            .arg(&dir.0)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("janus exited at once")?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();

        // Its HTTP transport listens once the core and the plugins are up.
        let mut session = None;
        for _ in 0..200 {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "janus ({}) exited at start ({status}); its output:\n{}\n{}",
                    bin.display(),
                    tail(&dir.0.join("stdout.log")),
                    tail(&log)
                );
            }
            if let Ok(v) = post(
                addr,
                "/janus",
                &json!({"janus": "create", "transaction": "s"}),
            )
            .await
            {
                session = Some(success_id(&v).context("creating a Janus session")?);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let Some(session) = session else {
            bail!(
                "janus ({}) did not answer on {addr} within 10 s; its log:\n{}",
                bin.display(),
                tail(&log)
            );
        };
        // Janus (libnice) gathers host candidates on its non-loopback interfaces only, and
        // names the first one its local IP: the clients sit there (local delivery through the
        // loopback device all the same).
        let info = post(
            addr,
            "/janus",
            &json!({"janus": "info", "transaction": "i"}),
        )
        .await?;
        let client_ip: IpAddr = info["local-ip"]
            .as_str()
            .and_then(|ip| ip.parse().ok())
            .with_context(|| format!("no local-ip in Janus's info: {info}"))?;
        if client_ip.is_loopback() || client_ip.is_unspecified() {
            bail!(
                "Janus's local IP is {client_ip}: it gathers ICE candidates on non-loopback \
                 interfaces only, and this machine has none up"
            );
        }
        let api = Arc::new(Api {
            addr,
            session,
            pending: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        });
        let poller = tokio::spawn(poll_events(api.clone()));
        let server = JanusServer {
            child,
            pid,
            dir,
            api,
            poller,
            publishers: args.publishers,
            client_ip,
        };

        // One handle creates the rooms (in-memory only; Opus, and VP8 for --video).
        let admin = server.api.attach().await.map_err(|e| server.explain(e))?;
        for r in 0..args.rooms {
            let body = json!({
                "request": "create",
                "room": room_id(r),
                "publishers": args.publishers,
                "audiocodec": "opus",
                "videocodec": "vp8",
                "is_private": true,
                "permanent": false,
            });
            let (data, _) = server
                .api
                .message(admin, body, None)
                .await
                .map_err(|e| server.explain(e))?;
            if data["videoroom"] != "created" {
                bail!("Janus did not create room {}: {data}", room_id(r));
            }
        }
        let _ = server.api.detach(admin).await;
        Ok(server)
    }

    pub(super) fn pid(&self) -> u32 {
        self.pid
    }

    /// The error with the tail of Janus's log when Janus has died.
    fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        if std::fs::metadata(format!("/proc/{}", self.pid)).is_err() {
            e.context(format!(
                "janus exited; its log:\n{}",
                tail(&self.dir.0.join("janus.log"))
            ))
        } else {
            e
        }
    }

    /// Joins participant `n` to room `room`: a publisher publishes feed `n`; a subscriber
    /// subscribes to every publisher of its room on one handle.
    pub(super) async fn join(
        &self,
        n: usize,
        room: usize,
        role: Role,
        shared: Arc<Shared>,
    ) -> Result<(Participant, oneshot::Receiver<()>)> {
        let api = &self.api;
        let handle = api.attach().await.map_err(|e| self.explain(e))?;
        let (rtc, socket, local, mid, video_mid) = match role {
            Role::Publisher(index) => {
                let (mut rtc, socket, local) = new_client(self.client_ip).await?;
                let stream = Some(format!("bench-{n}"));
                let offer = make_offer(&mut rtc, role, stream, shared.video.is_some())?;
                let body = json!({
                    "request": "joinandconfigure",
                    "ptype": "publisher",
                    "room": room_id(room),
                    "id": feed_id(usize::from(index)),
                    "display": format!("bench-{n}"),
                });
                let jsep = json!({"type": "offer", "sdp": offer.sdp, "trickle": false});
                let (data, answer) = api
                    .message(handle, body, Some(jsep))
                    .await
                    .map_err(|e| self.explain(e))?;
                if data["videoroom"] != "joined" {
                    bail!("publisher {n}: Janus did not join it: {data}");
                }
                let answer = answer
                    .as_ref()
                    .and_then(|j| j["sdp"].as_str())
                    .with_context(|| format!("publisher {n}: Janus's joined has no answer"))?;
                accept_answer(&mut rtc, offer.pending, answer)?;
                (rtc, socket, local, Some(offer.audio), offer.video)
            }
            Role::Counter | Role::Measurer => {
                let streams: Vec<Value> = (0..self.publishers)
                    .map(|p| json!({"feed": feed_id(room * self.publishers + p)}))
                    .collect();
                let body = json!({
                    "request": "join",
                    "ptype": "subscriber",
                    "room": room_id(room),
                    "streams": streams,
                });
                // A feed whose PeerConnection the client saw up may not be set up on Janus's
                // side yet ("No such feed", 428): try again for a while.
                let mut tries = 0;
                let (data, offer) = loop {
                    let (data, offer) = api
                        .exchange(handle, body.clone(), None)
                        .await
                        .map_err(|e| self.explain(e))?;
                    if data["error_code"] == NO_SUCH_FEED && tries < 50 {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    refused(&body, &data)?;
                    break (data, offer);
                };
                if data["videoroom"] != "attached" {
                    bail!("subscriber {n}: Janus did not attach it: {data}");
                }
                let offer = offer
                    .as_ref()
                    .and_then(|j| j["sdp"].as_str())
                    .with_context(|| format!("subscriber {n}: Janus's attached has no offer"))?;
                let (mut rtc, socket, local) = new_client(self.client_ip).await?;
                let answer = accept_offer(&mut rtc, offer)
                    .with_context(|| format!("subscriber {n}: Janus's offer"))?;
                let jsep = json!({"type": "answer", "sdp": answer, "trickle": false});
                let (data, _) = api
                    .message(handle, json!({"request": "start"}), Some(jsep))
                    .await
                    .map_err(|e| self.explain(e))?;
                if data["started"] != "ok" {
                    bail!("subscriber {n}: Janus did not start it: {data}");
                }
                (rtc, socket, local, None, None)
            }
        };
        // Janus renegotiates only on request: no offers for the media task.
        let conn = MediaConn {
            rtc,
            socket,
            local,
            mid,
            video_mid,
        };
        let (media, up) = spawn_media(conn, role, None, shared);
        let participant = Participant {
            media,
            signalling: Signalling::Janus {
                api: api.clone(),
                handle,
            },
        };
        Ok((participant, up))
    }

    pub(super) async fn stop(mut self) {
        self.poller.abort();
        let _ = post(
            self.api.addr,
            &format!("/janus/{}", self.api.session),
            &json!({"janus": "destroy", "transaction": "d"}),
        )
        .await;
        let _ = self.child.kill().await;
    }
}

/// Room `r` (0-based) of the bench.
fn room_id(r: usize) -> u64 {
    r as u64 + 1
}

/// The feed of publisher `index` (counted over all rooms).
fn feed_id(index: usize) -> u64 {
    index as u64 + 1
}

/// The bench's Janus session: requests, and the events its long poll hands back.
pub(super) struct Api {
    addr: SocketAddr,
    session: u64,
    /// Requests waiting for their plugin event, by transaction.
    pending: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    next: AtomicU64,
}

impl Api {
    fn transaction(&self) -> String {
        format!("t{}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// A new VideoRoom handle.
    async fn attach(&self) -> Result<u64> {
        let body = json!({"janus": "attach", "plugin": PLUGIN, "transaction": self.transaction()});
        let v = post(self.addr, &format!("/janus/{}", self.session), &body).await?;
        success_id(&v).context("attaching to the VideoRoom plugin")
    }

    pub(super) async fn detach(&self, handle: u64) -> Result<()> {
        let body = json!({"janus": "detach", "transaction": self.transaction()});
        post(
            self.addr,
            &format!("/janus/{}/{handle}", self.session),
            &body,
        )
        .await?;
        Ok(())
    }

    /// A VideoRoom request on `handle`, with an optional JSEP. Returns the plugin's data and
    /// the JSEP of its answer, whether Janus answers at once (`success`) or acknowledges and
    /// answers in an event later (`ack`).
    async fn message(
        &self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<(Value, Option<Value>)> {
        let (data, jsep) = self.exchange(handle, body.clone(), jsep).await?;
        refused(&body, &data)?;
        Ok((data, jsep))
    }

    /// [`Api::message`] without looking at the plugin's answer.
    async fn exchange(
        &self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<(Value, Option<Value>)> {
        let tx = self.transaction();
        let mut msg = json!({"janus": "message", "body": body, "transaction": tx});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        // Registered before the request: the event can come before the request's answer.
        let (ev_tx, ev_rx) = oneshot::channel();
        self.pending.lock().expect("lock").insert(tx.clone(), ev_tx);
        let path = format!("/janus/{}/{handle}", self.session);
        let reply = post(self.addr, &path, &msg).await;
        let event = match reply {
            Ok(v) if v["janus"] == "ack" => {
                match tokio::time::timeout(REQUEST_TIMEOUT, ev_rx).await {
                    Ok(Ok(ev)) => ev,
                    Ok(Err(_)) => bail!("Janus's event stream ended"),
                    Err(_) => {
                        self.pending.lock().expect("lock").remove(&tx);
                        bail!(
                            "no answer from Janus to {} within {REQUEST_TIMEOUT:?}",
                            msg["body"]
                        )
                    }
                }
            }
            other => {
                self.pending.lock().expect("lock").remove(&tx);
                other?
            }
        };
        if event["janus"] == "error" {
            bail!("Janus refused {}: {}", msg["body"], event["error"]);
        }
        let data = event["plugindata"]["data"].clone();
        let jsep = event.get("jsep").cloned();
        Ok((data, jsep))
    }
}

/// The VideoRoom's refusal of `body`, if its answer `data` is one.
fn refused(body: &Value, data: &Value) -> Result<()> {
    if data.get("error").is_some() {
        bail!(
            "the VideoRoom refused {body}: {} (code {})",
            data["error"],
            data["error_code"]
        );
    }
    Ok(())
}

/// The session's long poll: hands each event with a waiting transaction to its request and
/// keeps the session alive.
async fn poll_events(api: Arc<Api>) {
    let path = format!("/janus/{}?maxev=100", api.session);
    loop {
        let events = match http_request(api.addr, "GET", &path, None).await {
            Ok(body) => match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Array(evs)) => evs,
                Ok(ev) => vec![ev],
                Err(_) => continue,
            },
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        for ev in events {
            let Some(tx) = ev["transaction"].as_str() else {
                continue;
            };
            // Plugin events carry the transaction of the request they answer.
            if ev["janus"] != "event" {
                continue;
            }
            if let Some(waiting) = api.pending.lock().expect("lock").remove(tx) {
                let _ = waiting.send(ev);
            }
        }
    }
}

/// POSTs a JSON request to Janus's API and returns its JSON answer.
async fn post(addr: SocketAddr, path: &str, body: &Value) -> Result<Value> {
    let body = serde_json::to_vec(body)?;
    let reply = http_request(addr, "POST", path, Some(&body)).await?;
    serde_json::from_slice(&reply).with_context(|| {
        format!(
            "Janus's answer is not JSON: {}",
            String::from_utf8_lossy(&reply[..reply.len().min(300)])
        )
    })
}

/// The id in a `success` answer (a new session or handle), or Janus's error.
fn success_id(v: &Value) -> Result<u64> {
    if v["janus"] != "success" {
        bail!("Janus answered {v}");
    }
    v["data"]["id"]
        .as_u64()
        .with_context(|| format!("no id in Janus's answer {v}"))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Janus's library folder (holding `plugins/` and `transports/`) for the binary `bin`:
/// `lib/janus` or `lib/<multiarch>/janus` beside its `bin/` (Debian: /usr/lib/<triplet>/janus;
/// a source build: <prefix>/lib/janus).
fn find_lib(bin: &Path) -> Result<PathBuf> {
    let bin = std::fs::canonicalize(bin).unwrap_or_else(|_| bin.to_path_buf());
    let prefix = bin
        .parent()
        .and_then(Path::parent)
        .context("no prefix for the janus binary")?;
    let triplet = format!("{}-linux-gnu", std::env::consts::ARCH);
    let candidates = [
        prefix.join("lib").join(&triplet).join("janus"),
        prefix.join("lib").join("janus"),
        prefix.join("lib64").join("janus"),
    ];
    candidates
        .iter()
        .find(|c| c.join("plugins").join("libjanus_videoroom.so").exists())
        .cloned()
        .with_context(|| {
            format!(
                "no Janus VideoRoom plugin (plugins/libjanus_videoroom.so) under {}: pass --janus-lib",
                candidates
                    .iter()
                    .map(|c| c.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )
        })
}

/// Janus's configuration in `dir`: the core (`janus.jcfg`), the HTTP transport on `port` and
/// the VideoRoom plugin, with folders of links to the two modules the bench uses.
fn write_config(dir: &Path, lib: &Path, port: u16, event_loops: usize) -> Result<()> {
    for (folder, module) in [
        ("plugins", "libjanus_videoroom.so"),
        ("transports", "libjanus_http.so"),
    ] {
        let from = lib.join(folder).join(module);
        if !from.exists() {
            bail!(
                "{} is missing (is Janus installed in full?)",
                from.display()
            );
        }
        let to = dir.join(folder);
        std::fs::create_dir_all(&to)?;
        std::os::unix::fs::symlink(&from, to.join(module))
            .with_context(|| format!("linking {}", from.display()))?;
    }
    std::fs::create_dir_all(dir.join("none"))?;
    let d = dir.display();
    let core = format!(
        r#"general: {{
	configs_folder = "{d}"
	plugins_folder = "{d}/plugins"
	transports_folder = "{d}/transports"
	events_folder = "{d}/none"
	loggers_folder = "{d}/none"
	log_to_stdout = false
	log_to_file = "{d}/janus.log"
	debug_level = 2
	session_timeout = 120
	event_loops = {event_loops}
}}
certificates: {{
}}
media: {{
}}
nat: {{
	ignore_mdns = true
}}
plugins: {{
}}
transports: {{
}}
loggers: {{
}}
events: {{
	broadcast = false
}}
"#
    );
    std::fs::write(dir.join("janus.jcfg"), core)?;
    let http = format!(
        r#"general: {{
	json = "plain"
	base_path = "/janus"
	http = true
	port = {port}
	ip = "127.0.0.1"
	https = false
}}
admin: {{
	admin_http = false
	admin_https = false
}}
"#
    );
    std::fs::write(dir.join("janus.transport.http.jcfg"), http)?;
    std::fs::write(dir.join("janus.plugin.videoroom.jcfg"), "general: {\n}\n")?;
    Ok(())
}

/// The last lines of a log file, for an error message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
