//! The background task behind a [`RelayClient`](super::RelayClient): one WebSocket session at a
//! time, reconnecting with exponential backoff (with jitter, so a relay restart is not met by
//! every client at the same instant). Each attempt dials the URL [`Nodes`] picks: with a relay
//! cluster's node list, a client whose node died moves to another node.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hum_proto::signal::{
    ClientMessage, ErrorCode, Event, PROTOCOL_VERSION, Reply, Request, ServerMessage, VoiceState,
    decode_server_message, encode, relay_name_from_url,
};
use hum_proto::{ChannelId, RequestId, ServerId, UserId};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::nodes::Nodes;
use super::{ClientError, ClientEvent, Command, ConnectionState, RelayConfig, next_request_id};
use crate::identity::Identity;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The largest message accepted from the relay: replies about big servers (every member of a
/// 5,000-member server) run to megabytes; the relay sends them as 4 KiB fragments.
const MAX_INCOMING_BYTES: usize = 16 << 20;

pub(super) struct Task {
    pub identity: Identity,
    pub config: RelayConfig,
    pub commands: mpsc::Receiver<Command>,
    pub events: broadcast::Sender<ClientEvent>,
    pub state: watch::Sender<ConnectionState>,
    pub next_id: AtomicU64,
    /// The voice channel to re-join after a reconnect, with the voice state last published.
    pub rejoin: Option<(ChannelId, VoiceState)>,
    /// The servers last watched (`subscribe`), sent again after a reconnect; `None`: never
    /// asked (the session hears every server).
    pub watching: watch::Sender<Option<Vec<ServerId>>>,
    /// The URLs to dial: the configured one, plus a relay cluster's nodes.
    pub nodes: Nodes,
    /// The URL of the node the session is (or was last) logged in on.
    pub node_url: watch::Sender<Option<String>>,
}

/// Why a session ended.
enum End {
    Shutdown,
    Lost(String),
}

/// Why connecting failed; `fatal` errors are not retried.
struct ConnectError {
    reason: String,
    fatal: bool,
}

/// What to do with an answer when it arrives.
enum Pending {
    /// A caller waits for it; `request` is kept only for the kinds whose success changes what
    /// is re-joined after a reconnect.
    Caller {
        reply: oneshot::Sender<Result<Reply, ClientError>>,
        tracked: Option<Request>,
    },
    /// The client's own keep-alive ping.
    KeepAlive,
    /// The client's own re-join after a reconnect.
    Rejoin(ChannelId),
    /// The client's own `subscribe` after a reconnect.
    Resubscribe,
}

impl Task {
    pub async fn run(mut self) {
        let mut attempt: u32 = 0;
        let mut backoff = self.config.backoff_min;
        loop {
            attempt += 1;
            self.set_state(ConnectionState::Connecting { attempt });
            let retry_in;
            let url = self.nodes.next();
            match self.open(&url).await {
                Ok((ws, state)) => {
                    attempt = 0;
                    backoff = self.config.backoff_min;
                    self.nodes.connected(&url);
                    self.node_url.send_replace(Some(url));
                    self.set_state(state);
                    match self.session(ws).await {
                        End::Shutdown => break,
                        End::Lost(reason) => {
                            retry_in = backoff;
                            self.set_state(ConnectionState::Disconnected {
                                reason,
                                retry_in: Some(retry_in),
                            });
                        }
                    }
                }
                // A listed node that refuses us (another protocol version mid-upgrade, another
                // login name) is not the end: the next node may take us.
                Err(e) if e.fatal && self.nodes.is_configured(&url) => {
                    self.set_state(ConnectionState::Disconnected {
                        reason: e.reason.clone(),
                        retry_in: None,
                    });
                    self.refuse_until_shutdown(&e.reason).await;
                    break;
                }
                Err(e) => {
                    retry_in = jitter(backoff, attempt);
                    self.set_state(ConnectionState::Disconnected {
                        reason: e.reason,
                        retry_in: Some(retry_in),
                    });
                }
            }
            if !self.wait_refusing(retry_in).await {
                break;
            }
            backoff = (backoff * 2).min(self.config.backoff_max);
        }
        self.set_state(ConnectionState::Stopped);
    }

    fn set_state(&self, state: ConnectionState) {
        if *self.state.borrow() != state {
            self.state.send_replace(state.clone());
            let _ = self.events.send(ClientEvent::State(state));
        }
    }

    /// Sleep `d` while answering requests with `Disconnected`; `false` on shutdown.
    async fn wait_refusing(&mut self, d: Duration) -> bool {
        let sleep = tokio::time::sleep(d);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                cmd = self.commands.recv() => match cmd {
                    None | Some(Command::Shutdown) => return false,
                    Some(Command::Request { reply, .. }) => {
                        let _ = reply.send(Err(ClientError::Disconnected(
                            "reconnecting to the relay".into(),
                        )));
                    }
                },
            }
        }
    }

    async fn refuse_until_shutdown(&mut self, reason: &str) {
        while let Some(Command::Request { reply, .. }) = self.commands.recv().await {
            let _ = reply.send(Err(ClientError::Disconnected(reason.to_owned())));
        }
    }

    /// Connect to `url` and log in.
    async fn open(&mut self, url: &str) -> Result<(Ws, ConnectionState), ConnectError> {
        let timeout = self.config.connect_timeout;
        match tokio::time::timeout(timeout, self.open_inner(url)).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError {
                reason: format!("connecting to {url} took longer than {timeout:?}"),
                fatal: false,
            }),
        }
    }

    async fn open_inner(&mut self, url: &str) -> Result<(Ws, ConnectionState), ConnectError> {
        let retry = |reason: String| ConnectError {
            reason,
            fatal: false,
        };
        let mut ws_config = WebSocketConfig::default();
        ws_config.max_message_size = Some(MAX_INCOMING_BYTES);
        ws_config.max_frame_size = Some(MAX_INCOMING_BYTES);
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(ws_config), true)
            .await
            .map_err(|e| retry(format!("cannot reach the relay at {url}: {e}")))?;

        let hello = Request::Hello {
            protocol: PROTOCOL_VERSION,
            client: Some(self.config.client_name.clone()),
        };
        let nonce = match self.handshake_step(&mut ws, hello).await? {
            Reply::Challenge {
                protocol, nonce, ..
            } if protocol == PROTOCOL_VERSION => nonce,
            Reply::Challenge { protocol, .. } => {
                return Err(ConnectError {
                    reason: format!(
                        "the relay speaks protocol {protocol}, this client {PROTOCOL_VERSION}"
                    ),
                    fatal: true,
                });
            }
            other => return Err(retry(format!("unexpected answer to hello: {other:?}"))),
        };
        // The login names the relay we dialed, so no other relay can use the signature.
        let relay = relay_name_from_url(url).ok_or_else(|| ConnectError {
            reason: format!("the relay URL {url} names no host"),
            fatal: true,
        })?;
        let login = Request::Login {
            public_key: self.identity.user_id(),
            signature: self.identity.sign_login(&relay, &nonce),
            display_name: Some(self.identity.display_name().clone()),
            relay: Some(relay),
        };
        match self.handshake_step(&mut ws, login).await? {
            Reply::Welcome {
                user,
                new_account,
                limits,
                ..
            } => Ok((
                ws,
                ConnectionState::Connected {
                    user,
                    new_account,
                    limits,
                    node: url.to_string(),
                },
            )),
            other => Err(retry(format!("unexpected answer to login: {other:?}"))),
        }
    }

    /// Send one handshake request and wait for its answer; events that arrive meanwhile are
    /// passed on.
    async fn handshake_step(
        &mut self,
        ws: &mut Ws,
        request: Request,
    ) -> Result<Reply, ConnectError> {
        let retry = |reason: String| ConnectError {
            reason,
            fatal: false,
        };
        let id = next_request_id(&self.next_id);
        let text = encode(&ClientMessage { id, request });
        ws.send(Message::text(text))
            .await
            .map_err(|e| retry(format!("relay connection failed: {e}")))?;
        loop {
            let frame = ws
                .next()
                .await
                .ok_or_else(|| retry("the relay closed the connection during login".into()))?
                .map_err(|e| retry(format!("relay connection failed: {e}")))?;
            let Message::Text(text) = frame else { continue };
            match decode_server_message(text.as_str()) {
                Ok(ServerMessage::Reply { re, reply }) if re == id => return Ok(reply),
                Ok(ServerMessage::Error { code, message, .. }) => {
                    let fatal = matches!(
                        code,
                        ErrorCode::UnsupportedVersion
                            | ErrorCode::BadSignature
                            | ErrorCode::WrongRelay
                    );
                    return Err(ConnectError {
                        reason: format!("the relay refused the login: {message}"),
                        fatal,
                    });
                }
                Ok(ServerMessage::Event { event }) => {
                    let _ = self.events.send(ClientEvent::Relay(event));
                }
                Ok(ServerMessage::Reply { .. }) => {}
                Err(e) => tracing::warn!("undecodable frame from the relay: {e}"),
            }
        }
    }

    /// Run one logged-in session until it is lost or shut down.
    async fn session(&mut self, ws: Ws) -> End {
        let (mut sink, mut stream) = ws.split();
        let mut pending: HashMap<RequestId, Pending> = HashMap::new();
        let keepalive = self.config.keepalive;
        let mut ticker = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
        let mut last_heard = Instant::now();

        // Watch again first, so the re-join's events already follow the lazy rules.
        let watching = self.watching.borrow().clone();
        if let Some(servers) = watching {
            let id = next_request_id(&self.next_id);
            pending.insert(id, Pending::Resubscribe);
            let request = Request::Subscribe { servers };
            if let Err(e) = sink
                .send(Message::text(encode(&ClientMessage { id, request })))
                .await
            {
                return self.lose(pending, format!("relay connection failed: {e}"));
            }
        }
        if let Some((channel, voice)) = self.rejoin {
            let id = next_request_id(&self.next_id);
            let request = Request::ChannelJoin {
                channel,
                voice: Some(voice),
            };
            pending.insert(id, Pending::Rejoin(channel));
            if let Err(e) = sink
                .send(Message::text(encode(&ClientMessage { id, request })))
                .await
            {
                return self.lose(pending, format!("relay connection failed: {e}"));
            }
        }

        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    None | Some(Command::Shutdown) => {
                        let _ = sink.send(Message::Close(None)).await;
                        fail_all(pending, &ClientError::Stopped);
                        return End::Shutdown;
                    }
                    Some(Command::Request { request, reply }) => {
                        let id = next_request_id(&self.next_id);
                        let tracked = matches!(
                            request,
                            Request::ChannelJoin { .. }
                                | Request::ChannelLeave
                                | Request::VoiceUpdate { .. }
                                | Request::Subscribe { .. }
                        ).then(|| request.clone());
                        let text = encode(&ClientMessage { id, request });
                        pending.insert(id, Pending::Caller { reply, tracked });
                        if let Err(e) = sink.send(Message::text(text)).await {
                            return self.lose(pending, format!("relay connection failed: {e}"));
                        }
                    }
                },
                frame = stream.next() => {
                    last_heard = Instant::now();
                    match frame {
                        None => return self.lose(pending, "the relay closed the connection".into()),
                        Some(Err(e)) => return self.lose(pending, format!("relay connection failed: {e}")),
                        Some(Ok(Message::Text(text))) => self.on_frame(text.as_str(), &mut pending),
                        Some(Ok(Message::Close(frame))) => {
                            let why = frame
                                .map(|f| f.reason.to_string())
                                .filter(|r| !r.is_empty())
                                .unwrap_or_else(|| "no reason given".into());
                            return self.lose(pending, format!("the relay closed the connection: {why}"));
                        }
                        Some(Ok(_)) => {}
                    }
                },
                _ = ticker.tick() => {
                    if last_heard.elapsed() > keepalive * 3 {
                        return self.lose(pending, "the relay stopped answering".into());
                    }
                    let id = next_request_id(&self.next_id);
                    pending.insert(id, Pending::KeepAlive);
                    let ping = encode(&ClientMessage { id, request: Request::Ping });
                    if let Err(e) = sink.send(Message::text(ping)).await {
                        return self.lose(pending, format!("relay connection failed: {e}"));
                    }
                },
            }
        }
    }

    fn lose(&self, pending: HashMap<RequestId, Pending>, reason: String) -> End {
        fail_all(pending, &ClientError::Disconnected(reason.clone()));
        End::Lost(reason)
    }

    fn on_frame(&mut self, text: &str, pending: &mut HashMap<RequestId, Pending>) {
        let msg = match decode_server_message(text) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("undecodable frame from the relay: {e}");
                return;
            }
        };
        match msg {
            ServerMessage::Event { event } => {
                if let Event::Nodes { nodes } = &event {
                    let refused = self.nodes.learn(nodes);
                    tracing::debug!(listed = nodes.len(), refused, "the relay cluster's nodes");
                }
                self.track_event(&event);
                let _ = self.events.send(ClientEvent::Relay(event));
            }
            ServerMessage::Reply { re, reply } => {
                if let Some(p) = pending.remove(&re) {
                    self.answer(p, Ok(reply));
                }
            }
            ServerMessage::Error { re, code, message } => {
                let err = ClientError::Relay { code, message };
                match re.and_then(|re| pending.remove(&re)) {
                    Some(p) => self.answer(p, Err(err)),
                    None => tracing::warn!("relay error without a request: {err}"),
                }
            }
        }
    }

    fn answer(&mut self, pending: Pending, answer: Result<Reply, ClientError>) {
        match pending {
            Pending::Caller { reply, tracked } => {
                if let (Some(request), Ok(r)) = (tracked, &answer) {
                    self.track_success(&request, r);
                }
                let _ = reply.send(answer);
            }
            Pending::KeepAlive => {}
            Pending::Resubscribe => {
                if let Err(e) = answer {
                    // A server left meanwhile: the app will watch what it shows next.
                    tracing::warn!("watching the same servers again after a reconnect: {e}");
                }
            }
            Pending::Rejoin(channel) => match answer {
                Ok(Reply::Joined {
                    channel,
                    permissions,
                    ..
                }) => {
                    let (server, id) = (channel.server, channel.id);
                    let _ = self.events.send(ClientEvent::Rejoined { channel });
                    // What we may do there now (changed while we were away, perhaps): said as
                    // the relay says a change.
                    let _ = self
                        .events
                        .send(ClientEvent::Relay(Event::VoicePermissions {
                            server,
                            channel: id,
                            permissions,
                        }));
                }
                Ok(other) => tracing::warn!("unexpected answer to re-join: {other:?}"),
                Err(e) => {
                    self.rejoin = None;
                    let _ = self.events.send(ClientEvent::RejoinFailed {
                        channel,
                        reason: e.to_string(),
                    });
                }
            },
        }
    }

    /// Remember which channel to re-join, and with what voice state.
    fn track_success(&mut self, request: &Request, reply: &Reply) {
        match (request, reply) {
            (Request::ChannelJoin { channel, voice }, Reply::Joined { .. }) => {
                self.rejoin = Some((*channel, voice.unwrap_or_default()));
            }
            (Request::ChannelLeave, _) => self.rejoin = None,
            (Request::Subscribe { servers }, _) => {
                self.watching.send_replace(Some(servers.clone()));
            }
            (Request::VoiceUpdate { voice }, _) => {
                if let Some((_, state)) = &mut self.rejoin {
                    *state = voice.apply(*state);
                }
            }
            _ => {}
        }
    }

    fn track_event(&mut self, event: &Event) {
        let me: UserId = self.identity.user_id();
        let gone = match (event, &self.rejoin) {
            (Event::RosterLeave { channel, user, .. }, Some((c, _))) => {
                *channel == *c && *user == me
            }
            (Event::ChannelDeleted { channel, .. }, Some((c, _))) => *channel == *c,
            _ => false,
        };
        if gone {
            self.rejoin = None;
        }
    }
}

fn fail_all(pending: HashMap<RequestId, Pending>, err: &ClientError) {
    for p in pending.into_values() {
        if let Pending::Caller { reply, .. } = p {
            let _ = reply.send(Err(err.clone()));
        }
    }
}

/// Spread reconnects over [d/2, d] so clients of a restarted relay do not return in lockstep.
fn jitter(d: Duration, attempt: u32) -> Duration {
    use rand::Rng;
    let _ = attempt;
    let ms = d.as_millis() as u64;
    Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms.max(1)))
}
