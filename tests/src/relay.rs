//! Harness for the relay's end-to-end tests: start a real `hum-relay` process on a free loopback
//! port, and talk to it with raw-JSON WebSocket clients (so tests can also send garbage).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use ed25519_dalek::{Signer, SigningKey};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{KillOnDrop, workspace_bin};

/// How long a test waits for any one expected message.
pub const WAIT: Duration = Duration::from_secs(5);

/// A `hum-relay` process, killed on drop.
#[derive(Debug)]
pub struct Relay {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    child: KillOnDrop,
}

impl Relay {
    /// Start `hum-relay --listen 127.0.0.1:0 --data DIR ARGS...` and wait for its
    /// "listening on ADDR" line.
    pub fn start(data_dir: &Path, args: &[&str]) -> Result<Relay> {
        Relay::start_at(data_dir, "127.0.0.1:0", args)
    }

    /// Like [`Relay::start`] on a given address (to restart a relay where clients expect it).
    pub fn start_at(data_dir: &Path, listen: &str, args: &[&str]) -> Result<Relay> {
        Relay::start_wrapped(&[], data_dir, listen, args)
    }

    /// Like [`Relay::start_at`], run through a wrapper command (e.g. `prlimit --nofile=128:128`).
    pub fn start_wrapped(
        wrapper: &[&str],
        data_dir: &Path,
        listen: &str,
        args: &[&str],
    ) -> Result<Relay> {
        let bin = workspace_bin("hum-relay", "hum-relay")?;
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .arg("--listen")
            .arg(listen)
            .arg("--data")
            .arg(data_dir)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning hum-relay")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let child = KillOnDrop(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the relay never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .context("hum-relay did not print its address within 60 s")?;
        let addr = line
            .strip_prefix("listening on ")
            .ok_or_else(|| anyhow!("unexpected first line from hum-relay: {line}"))?
            .trim()
            .parse()
            .context("parsing the relay's address")?;
        Ok(Relay {
            addr,
            data_dir: data_dir.to_path_buf(),
            child,
        })
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// A plain HTTP/1.0 GET: (status, body).
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.addr, path)
    }

    /// SIGKILL the relay (no graceful shutdown) and wait for it.
    pub fn kill(mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }

    /// SIGKILL the relay, then start it again on the same address and data directory with
    /// `args` (a crash and a restart, as far as its clients and its files can tell).
    pub fn kill_and_restart(&mut self, args: &[&str]) -> Result<()> {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        *self = Relay::start_at(&self.data_dir.clone(), &self.addr.to_string(), args)?;
        Ok(())
    }

    /// Send SIGTERM (a polite stop) and wait for the process to exit.
    pub fn terminate(mut self) -> Result<std::process::ExitStatus> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.0.id().to_string())
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        Ok(self.child.0.wait()?)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.0.try_wait(), Ok(None))
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, WAIT)?;
    s.set_read_timeout(Some(WAIT))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP response: {buf:.80}"))?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A deterministic test identity: Ed25519 key from a one-byte seed.
pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn user_hex(key: &SigningKey) -> String {
    hum_proto::UserId(key.verifying_key().to_bytes()).to_hex()
}

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// What ended a connection, as seen by the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Closed {
    /// A close frame with this code.
    Code(u16),
    /// The TCP connection ended without a close frame (or with an error).
    Dropped,
}

/// A raw-JSON WebSocket client.
#[derive(Debug)]
pub struct Client {
    ws: Ws,
    next_id: u64,
    /// Events received while waiting for something else, oldest first.
    pub events: VecDeque<Value>,
    pub key: SigningKey,
    /// Set once the connection closed.
    pub closed: Option<Closed>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Result<Client> {
        Self::connect_as(addr, key(0)).await
    }

    async fn connect_as(addr: SocketAddr, key: SigningKey) -> Result<Client> {
        let (ws, _) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::connect_async(format!("ws://{addr}/ws")),
        )
        .await
        .context("connect timed out")??;
        Ok(Client {
            ws,
            next_id: 1,
            events: VecDeque::new(),
            key,
            closed: None,
        })
    }

    /// Connect, `hello`, sign the challenge and `login` as `key(seed)` named `name`.
    pub async fn login(addr: SocketAddr, seed: u8, name: &str) -> Result<Client> {
        let mut c = Self::connect_as(addr, key(seed)).await?;
        let welcome = c.login_with_name(Some(name)).await?;
        if welcome["type"] != "welcome" {
            bail!("login failed: {welcome}");
        }
        Ok(c)
    }

    /// The handshake on an open connection; returns the `welcome` reply body.
    pub async fn login_with_name(&mut self, name: Option<&str>) -> Result<Value> {
        let challenge = self
            .ok(
                "hello",
                json!({"protocol": hum_proto::signal::PROTOCOL_VERSION}),
            )
            .await?;
        let nonce: hum_proto::Nonce =
            serde_json::from_value(challenge["nonce"].clone()).context("challenge nonce")?;
        let sig = self
            .key
            .sign(&hum_proto::signal::login_signing_bytes(&nonce));
        let mut fields = json!({
            "public_key": self.user(),
            "signature": hex_encode(&sig.to_bytes()),
        });
        if let Some(n) = name {
            fields["display_name"] = json!(n);
        }
        self.ok("login", fields).await
    }

    /// This client's user id (public key hex).
    pub fn user(&self) -> String {
        user_hex(&self.key)
    }

    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<()> {
        self.ws.send(Message::Text(text.into().into())).await?;
        Ok(())
    }

    pub async fn send_binary(&mut self, data: Vec<u8>) -> Result<()> {
        self.ws.send(Message::Binary(data.into())).await?;
        Ok(())
    }

    /// The next text frame as JSON, within `within`. Pings are answered by tungstenite.
    pub async fn recv_within(&mut self, within: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| anyhow!("no message within {within:?}"))?;
            match frame {
                None => {
                    self.closed.get_or_insert(Closed::Dropped);
                    bail!("connection closed")
                }
                Some(Err(e)) => {
                    self.closed.get_or_insert(Closed::Dropped);
                    bail!("connection error: {e}")
                }
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(&t)
                        .with_context(|| format!("relay sent non-JSON: {t}"));
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                    self.closed = Some(Closed::Code(code));
                    bail!("connection closed with code {code}")
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    pub async fn recv(&mut self) -> Result<Value> {
        self.recv_within(WAIT).await
    }

    /// Send `{"id": n, "type": ty, ...fields}` and wait for its reply or error (buffering
    /// events). Returns the whole answer frame.
    pub async fn request(&mut self, ty: &str, fields: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = match fields {
            Value::Object(m) => m,
            Value::Null => serde_json::Map::new(),
            other => bail!("fields must be an object, got {other}"),
        };
        msg.insert("id".into(), json!(id));
        msg.insert("type".into(), json!(ty));
        self.send_text(Value::Object(msg).to_string()).await?;
        self.answer_to(Some(id)).await
    }

    /// Wait for the reply or error whose `re` is `id` (`None`: an error with `"re": null`).
    pub async fn answer_to(&mut self, id: Option<u64>) -> Result<Value> {
        loop {
            let m = self.recv().await?;
            match m["type"].as_str() {
                Some("event") => self.events.push_back(m["event"].clone()),
                Some("reply") | Some("error") if m["re"].as_u64() == id => return Ok(m),
                _ => bail!("unexpected frame while waiting for the answer to {id:?}: {m}"),
            }
        }
    }

    /// A request that must succeed: returns the `reply` body.
    pub async fn ok(&mut self, ty: &str, fields: Value) -> Result<Value> {
        let m = self.request(ty, fields).await?;
        if m["type"] != "reply" {
            bail!("`{ty}` failed: {m}");
        }
        Ok(m["reply"].clone())
    }

    /// A request that must fail: returns the error `code`.
    pub async fn err(&mut self, ty: &str, fields: Value) -> Result<String> {
        let m = self.request(ty, fields).await?;
        if m["type"] != "error" {
            bail!("`{ty}` should have failed: {m}");
        }
        if m["message"].as_str().is_none_or(str::is_empty) {
            bail!("error without a message: {m}");
        }
        Ok(m["code"].as_str().unwrap_or_default().to_string())
    }

    /// The first event of type `ty` (buffered or arriving within [`WAIT`]); earlier events of
    /// other types stay buffered.
    pub async fn event(&mut self, ty: &str) -> Result<Value> {
        self.event_where(ty, |_| true).await
    }

    /// The first event of type `ty` matching `pred`.
    pub async fn event_where(&mut self, ty: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        if let Some(pos) = self.events.iter().position(|e| e["type"] == ty && pred(e)) {
            return Ok(self.events.remove(pos).unwrap_or_default());
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self.recv_within(left).await.with_context(|| {
                format!("waiting for event `{ty}`; buffered: {:?}", self.events)
            })?;
            if m["type"] != "event" {
                bail!("unexpected frame while waiting for event `{ty}`: {m}");
            }
            let e = m["event"].clone();
            if e["type"] == ty && pred(&e) {
                return Ok(e);
            }
            self.events.push_back(e);
        }
    }

    /// Read for `within` and fail if an event of type `ty` shows up (buffered ones count).
    pub async fn no_event(&mut self, ty: &str, within: Duration) -> Result<()> {
        if let Some(e) = self.events.iter().find(|e| e["type"] == ty) {
            bail!("unexpected `{ty}` event: {e}");
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            match self.recv_within(left).await {
                Ok(m) if m["type"] == "event" => {
                    if m["event"]["type"] == ty {
                        bail!("unexpected `{ty}` event: {m}");
                    }
                    self.events.push_back(m["event"].clone());
                }
                Ok(m) => bail!("unexpected frame: {m}"),
                Err(_) if self.closed.is_none() => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Read until the relay closes the connection; returns how.
    pub async fn wait_closed(&mut self, within: Duration) -> Result<Closed> {
        let deadline = tokio::time::Instant::now() + within;
        while self.closed.is_none() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                bail!("still open after {within:?}");
            }
            match self.recv_within(left).await {
                Ok(m) if m["type"] == "event" => self.events.push_back(m["event"].clone()),
                Ok(_) => {}
                Err(_) => {}
            }
        }
        Ok(self.closed.clone().unwrap_or(Closed::Dropped))
    }

    /// Close politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Vanish without a close frame, as a killed process would (the OS closes the socket).
    pub fn kill(self) {
        drop(self);
    }

    /// Hold the socket open but never read or answer pings again (a frozen client).
    pub fn freeze(self) -> Ws {
        self.ws
    }
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
