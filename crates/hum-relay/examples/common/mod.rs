//! A raw WebSocket client of the relay protocol shared by the load examples (independent of
//! hum-engine, so they measure the relay alone).

use ed25519_dalek::{Signer, SigningKey};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Conn {
    pub ws: Ws,
    next: u64,
    pub user: String,
}

impl Conn {
    /// Connects, answers the login challenge with `key` and logs in as `name`.
    pub async fn login(addr: &str, key: &SigningKey, name: &str) -> anyhow::Result<Conn> {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await?;
        let user = hex(&key.verifying_key().to_bytes());
        let mut c = Conn { ws, next: 1, user };
        let ch = c
            .req(
                "hello",
                json!({"protocol": hum_proto::signal::PROTOCOL_VERSION}),
            )
            .await?;
        let nonce: hum_proto::Nonce = serde_json::from_value(ch["nonce"].clone())?;
        let sig = key.sign(&hum_proto::signal::login_signing_bytes(&nonce));
        let fields =
            json!({"public_key": c.user, "signature": hex(&sig.to_bytes()), "display_name": name});
        let w = c.req("login", fields).await?;
        anyhow::ensure!(w["type"] == "welcome", "login failed: {w}");
        Ok(c)
    }

    /// Sends a request and waits for its answer, skipping events.
    pub async fn req(&mut self, ty: &str, mut fields: Value) -> anyhow::Result<Value> {
        let id = self.next;
        self.next += 1;
        fields["id"] = json!(id);
        fields["type"] = json!(ty);
        self.ws
            .send(Message::Text(fields.to_string().into()))
            .await?;
        loop {
            let m = self
                .ws
                .next()
                .await
                .ok_or_else(|| anyhow::anyhow!("closed"))??;
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t)?;
                if v["re"].as_u64() == Some(id) {
                    anyhow::ensure!(v["type"] == "reply", "`{ty}` failed: {v}");
                    return Ok(v["reply"].clone());
                }
            }
        }
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The process's resident and peak resident memory in MB, from /proc (0 when unreadable).
pub fn rss_mb(pid: u32) -> (f64, f64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
