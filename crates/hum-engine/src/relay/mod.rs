//! The client side of the relay protocol (docs/protocol.md): connect, log in with the identity's
//! key, keep the session alive, reconnect with backoff, correlate requests with their replies,
//! and publish everything the relay pushes as an event stream.
//!
//! One background task owns the WebSocket. [`RelayClient`] is a cheap handle to it: requests go
//! in over a channel with a oneshot for the answer; events come out of a broadcast channel that
//! any number of subscribers (the app, the voice engine, a bot) read independently.
//!
//! Across a reconnect the client re-joins the voice channel it was in, with the voice state it
//! last set, and watches again the servers it watched (`watch_servers`), so the relay's rosters
//! are rebuilt as clients come back (the relay keeps no presence on disk). A relay cluster lists
//! its nodes (the `nodes` event); when the node the client is on is lost, it reconnects to
//! another (`nodes.rs` picks which) and re-joins there.

mod nodes;
mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hum_proto::signal::Handle;
use hum_proto::signal::{
    ChannelInfo, ChannelPermissions, ErrorCode, Friend, InviteInfo, Limits, Member, Name,
    Permissions, Reply, Request, Role, ServerInfo, ServerSummary, SignalPayload, SignalScope,
    UserSummary, VoiceState, VoiceStatePatch, VoiceTopology,
};
use hum_proto::signal::{DisplayName, Event, TurnServer};
use hum_proto::{CallId, ChannelId, InviteCode, ServerId, UserId};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::identity::Identity;

/// How to reach the relay and how patient to be with it.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// The relay's WebSocket URL, e.g. `ws://127.0.0.1:7700/ws`.
    pub url: String,
    /// How long a request may wait for its answer.
    pub request_timeout: Duration,
    /// How long connecting plus logging in may take.
    pub connect_timeout: Duration,
    /// Interval of keep-alive pings; the session is declared lost after three silent intervals.
    pub keepalive: Duration,
    /// First and longest wait between reconnection attempts (doubling, with jitter).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Sent in `hello` so relay operators can tell clients apart.
    pub client_name: String,
}

impl RelayConfig {
    /// The default relay Hum runs on this machine.
    pub const DEFAULT_URL: &'static str = "ws://127.0.0.1:7700/ws";

    pub fn new(url: impl Into<String>) -> Self {
        RelayConfig {
            url: url.into(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(15),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            client_name: format!("hum-engine/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig::new(RelayConfig::DEFAULT_URL)
    }
}

/// Where the connection to the relay stands. Shown to the user as-is.
#[derive(Clone, Debug, PartialEq)]
pub enum ConnectionState {
    /// Trying to connect (attempt 1 is the first).
    Connecting { attempt: u32 },
    /// Logged in.
    Connected {
        user: UserSummary,
        new_account: bool,
        limits: Limits,
        /// The URL of the relay (in a cluster: the node) the session is logged in on; after a
        /// node is lost, the one it moved to.
        node: String,
    },
    /// Lost or could not connect; `retry_in` is `None` when the client gave up for good (for
    /// example the relay speaks another protocol version, or it rejected our key).
    Disconnected {
        reason: String,
        retry_in: Option<Duration>,
    },
    /// [`RelayClient::shutdown`] was called.
    Stopped,
}

impl ConnectionState {
    pub fn is_connected(&self) -> bool {
        matches!(self, ConnectionState::Connected { .. })
    }
}

/// Everything a subscriber hears from the client.
#[derive(Clone, Debug)]
pub enum ClientEvent {
    /// The connection changed state.
    State(ConnectionState),
    /// The relay pushed an event.
    Relay(Event),
    /// After a reconnect, the client re-joined the voice channel it was in. Followed by a
    /// `Relay(Event::VoicePermissions)` with what we may do in it (from the `joined` reply).
    Rejoined { channel: ChannelInfo },
    /// After a reconnect, re-joining the voice channel failed (it may be gone or full).
    RejoinFailed { channel: ChannelId, reason: String },
}

/// Why a request did not get a successful reply.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ClientError {
    /// The relay answered with a typed error.
    #[error("{message}")]
    Relay { code: ErrorCode, message: String },
    #[error("not connected to the relay: {0}")]
    Disconnected(String),
    #[error("the relay did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the relay client was shut down")]
    Stopped,
    /// The relay answered with a reply of the wrong kind (a relay bug or a protocol mismatch).
    #[error("unexpected reply from the relay: expected {expected}, got {got}")]
    UnexpectedReply { expected: &'static str, got: String },
}

impl ClientError {
    /// The relay's error code, if the relay answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Relay { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// One of my servers, as [`RelayClient::servers_shown`] gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEntry {
    /// On screen (or the client watches everything): members and channels.
    Shown(ServerInfo),
    /// Not watched: its name and my role only.
    Listed(ServerSummary),
}

pub(crate) enum Command {
    Request {
        request: Request,
        reply: oneshot::Sender<Result<Reply, ClientError>>,
    },
    Shutdown,
}

struct Inner {
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<ClientEvent>,
    state: watch::Receiver<ConnectionState>,
    node_url: watch::Receiver<Option<String>>,
    watching: watch::Receiver<Option<Vec<ServerId>>>,
    user: UserId,
    config: RelayConfig,
}

/// A handle to a relay session. Clone it freely; the session ends when [`shutdown`] is called
/// or the last handle is dropped.
///
/// [`shutdown`]: RelayClient::shutdown
#[derive(Clone)]
pub struct RelayClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RelayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayClient")
            .field("url", &self.inner.config.url)
            .field("user", &self.inner.user)
            .field("state", &*self.inner.state.borrow())
            .finish()
    }
}

/// The largest `member_list` page the relay gives.
pub const MEMBER_PAGE_MAX: u32 = 1000;

/// How many events a slow subscriber may fall behind before it misses some.
const EVENT_BUFFER: usize = 4096;

impl RelayClient {
    /// Start a session in the background: it connects, logs in and keeps reconnecting until
    /// shut down. Never fails; watch [`state`](Self::state) or the events to see how it goes.
    /// Must be called within a tokio runtime.
    pub fn start(identity: Identity, config: RelayConfig) -> Self {
        let (commands, command_rx) = mpsc::channel(256);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (state_tx, state) = watch::channel(ConnectionState::Connecting { attempt: 1 });
        let (node_tx, node_url) = watch::channel(None);
        let (watching_tx, watching) = watch::channel(None);
        let user = identity.user_id();
        let task = session::Task {
            identity,
            config: config.clone(),
            commands: command_rx,
            events: events.clone(),
            state: state_tx,
            next_id: AtomicU64::new(1),
            rejoin: None,
            watching: watching_tx,
            nodes: nodes::Nodes::new(config.url.clone()),
            node_url: node_tx,
        };
        tokio::spawn(task.run());
        RelayClient {
            inner: Arc::new(Inner {
                commands,
                events,
                state,
                node_url,
                watching,
                user,
                config,
            }),
        }
    }

    /// Start a session and wait until it is logged in. Fails with the first connection error,
    /// so a command-line tool can say at once that the relay is unreachable.
    pub async fn connect(identity: Identity, config: RelayConfig) -> Result<Self, ClientError> {
        let client = RelayClient::start(identity, config);
        match client.wait_connected().await {
            Ok(()) => Ok(client),
            Err(e) => {
                client.shutdown().await;
                Err(e)
            }
        }
    }

    /// Wait for the current connection attempt to finish: `Ok` once logged in, the reason
    /// otherwise. Does not wait through retries.
    pub async fn wait_connected(&self) -> Result<(), ClientError> {
        let mut state = self.inner.state.clone();
        loop {
            match &*state.borrow_and_update() {
                ConnectionState::Connected { .. } => return Ok(()),
                ConnectionState::Disconnected { reason, .. } => {
                    return Err(ClientError::Disconnected(reason.clone()));
                }
                ConnectionState::Stopped => return Err(ClientError::Stopped),
                ConnectionState::Connecting { .. } => {}
            }
            if state.changed().await.is_err() {
                return Err(ClientError::Stopped);
            }
        }
    }

    /// Subscribe to events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ClientEvent> {
        self.inner.events.subscribe()
    }

    /// The connection's current state.
    pub fn state(&self) -> ConnectionState {
        self.inner.state.borrow().clone()
    }

    /// A watch on the connection state, for UIs that show it.
    pub fn state_watch(&self) -> watch::Receiver<ConnectionState> {
        self.inner.state.clone()
    }

    /// The URL of the relay node this client is logged in on (or was last; `None` before its
    /// first login). The configured URL unless a relay cluster's node was lost and the client
    /// moved to another (docs/cluster.md, "Node loss").
    pub fn node_url(&self) -> Option<String> {
        self.inner.node_url.borrow().clone()
    }

    /// The account this session logs in as.
    pub fn user_id(&self) -> UserId {
        self.inner.user
    }

    pub fn config(&self) -> &RelayConfig {
        &self.inner.config
    }

    /// End the session: the socket is closed and later requests fail with `Stopped`.
    pub async fn shutdown(&self) {
        let _ = self.inner.commands.send(Command::Shutdown).await;
    }

    /// Send any request and wait for its answer.
    pub async fn request(&self, request: Request) -> Result<Reply, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Request { request, reply: tx })
            .await
            .map_err(|_| ClientError::Stopped)?;
        let timeout = self.inner.config.request_timeout;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(ClientError::Stopped),
            Err(_) => Err(ClientError::Timeout(timeout)),
        }
    }

    async fn expect_ok(&self, request: Request) -> Result<(), ClientError> {
        match self.request(request).await? {
            Reply::Ok => Ok(()),
            other => Err(unexpected("ok", &other)),
        }
    }

    // ---- typed requests -------------------------------------------------------------------

    /// Round trip to the relay.
    pub async fn ping(&self) -> Result<(), ClientError> {
        match self.request(Request::Ping).await? {
            Reply::Pong => Ok(()),
            other => Err(unexpected("pong", &other)),
        }
    }

    pub async fn set_display_name(&self, display_name: DisplayName) -> Result<(), ClientError> {
        self.expect_ok(Request::SetProfile { display_name }).await
    }

    /// Friends with presence, plus pending incoming and outgoing requests.
    pub async fn friends(&self) -> Result<FriendList, ClientError> {
        match self.request(Request::FriendList).await? {
            Reply::Friends {
                friends,
                incoming,
                outgoing,
            } => Ok(FriendList {
                friends,
                incoming,
                outgoing,
            }),
            other => Err(unexpected("friends", &other)),
        }
    }

    pub async fn friend_request(&self, user: UserId) -> Result<(), ClientError> {
        self.expect_ok(Request::FriendRequest { user }).await
    }
    pub async fn friend_accept(&self, user: UserId) -> Result<(), ClientError> {
        self.expect_ok(Request::FriendAccept { user }).await
    }
    pub async fn friend_decline(&self, user: UserId) -> Result<(), ClientError> {
        self.expect_ok(Request::FriendDecline { user }).await
    }
    pub async fn friend_remove(&self, user: UserId) -> Result<(), ClientError> {
        self.expect_ok(Request::FriendRemove { user }).await
    }

    async fn handle_request(
        &self,
        request: Request,
    ) -> Result<(UserSummary, Option<Handle>), ClientError> {
        match self.request(request).await? {
            Reply::Handle { user, handle } => Ok((user, handle)),
            other => Err(unexpected("handle", &other)),
        }
    }
    /// Take `handle` on this relay (`None`: give yours up); returns what the relay stored.
    /// Refused with `handle_taken` when someone holds it or a look-alike.
    pub async fn handle_set(&self, handle: Option<Handle>) -> Result<Option<Handle>, ClientError> {
        Ok(self.handle_request(Request::HandleSet { handle }).await?.1)
    }
    /// `user`'s handle, if they took one.
    pub async fn handle_get(&self, user: UserId) -> Result<Option<Handle>, ClientError> {
        Ok(self.handle_request(Request::HandleGet { user }).await?.1)
    }
    /// Who holds `handle` (ignoring case and look-alikes); `not_found` if nobody.
    pub async fn handle_lookup(
        &self,
        handle: Handle,
    ) -> Result<(UserSummary, Option<Handle>), ClientError> {
        self.handle_request(Request::HandleLookup { handle }).await
    }

    /// Ring a mutual friend; returns the new call's id.
    pub async fn call_invite(&self, user: UserId) -> Result<CallId, ClientError> {
        match self.request(Request::CallInvite { user }).await? {
            Reply::Call { call } => Ok(call),
            other => Err(unexpected("call", &other)),
        }
    }
    pub async fn call_accept(&self, call: CallId) -> Result<(), ClientError> {
        self.expect_ok(Request::CallAccept { call }).await
    }
    pub async fn call_decline(&self, call: CallId) -> Result<(), ClientError> {
        self.expect_ok(Request::CallDecline { call }).await
    }
    pub async fn call_cancel(&self, call: CallId) -> Result<(), ClientError> {
        self.expect_ok(Request::CallCancel { call }).await
    }
    pub async fn call_hangup(&self, call: CallId) -> Result<(), ClientError> {
        self.expect_ok(Request::CallHangup { call }).await
    }

    /// Forward WebRTC signalling to a peer in the same call or voice channel.
    pub async fn signal(
        &self,
        to: UserId,
        scope: SignalScope,
        payload: SignalPayload,
    ) -> Result<(), ClientError> {
        self.expect_ok(Request::Signal { to, scope, payload }).await
    }

    pub async fn server_create(&self, name: Name) -> Result<ServerInfo, ClientError> {
        match self.request(Request::ServerCreate { name }).await? {
            Reply::Server { server } => Ok(server),
            other => Err(unexpected("server", &other)),
        }
    }
    pub async fn servers(&self) -> Result<Vec<ServerSummary>, ClientError> {
        match self.request(Request::ServerList).await? {
            Reply::Servers { servers } => Ok(servers),
            other => Err(unexpected("servers", &other)),
        }
    }
    pub async fn server_info(&self, server: ServerId) -> Result<ServerInfo, ClientError> {
        match self.request(Request::ServerInfo { server }).await? {
            Reply::Server { server } => Ok(server),
            other => Err(unexpected("server", &other)),
        }
    }
    /// Lazy subscriptions (docs/protocol.md, "subscribe"): hear member changes and voice
    /// activity only for `servers` (the one on screen) plus the channel this session is in.
    /// Each call replaces the last list; the session sends it again after a reconnect. A
    /// session that never calls this hears every server it is a member of (the old way).
    pub async fn watch_servers(&self, servers: Vec<ServerId>) -> Result<(), ClientError> {
        self.expect_ok(Request::Subscribe { servers }).await
    }
    /// The servers last watched (`None`: never called, so every server is heard).
    pub fn watched(&self) -> Option<Vec<ServerId>> {
        self.inner.watching.borrow().clone()
    }
    /// My servers as a client that shows some of them: in full (`server_info`) those it
    /// watches, or all of them if it never called [`watch_servers`](Self::watch_servers), and
    /// `also` (the server of my voice channel: its roster is heard anyway); the rest listed by
    /// name only, so a refresh costs what is on screen, not every big server's channel list.
    pub async fn servers_shown(
        &self,
        also: Option<ServerId>,
    ) -> Result<Vec<ServerEntry>, ClientError> {
        let watched = self.watched();
        let mut out = Vec::new();
        for s in self.servers().await? {
            let shown = Some(s.id) == also || watched.as_ref().is_none_or(|w| w.contains(&s.id));
            out.push(if shown {
                ServerEntry::Shown(self.server_info(s.id).await?)
            } else {
                ServerEntry::Listed(s)
            });
        }
        Ok(out)
    }
    /// One page of `server`'s members in user-id order after `after` (`None`: from the first),
    /// at most `limit` (1-1000; `None`: the relay's default, 100). Returns the page and the
    /// `after` of the next one (`None`: this was the last).
    pub async fn member_page(
        &self,
        server: ServerId,
        after: Option<UserId>,
        limit: Option<u32>,
    ) -> Result<(Vec<Member>, Option<UserId>), ClientError> {
        match self
            .request(Request::MemberList {
                server,
                after,
                limit,
            })
            .await?
        {
            Reply::Members { members, next, .. } => Ok((members, next)),
            other => Err(unexpected("members", &other)),
        }
    }
    /// Every member of `server`, fetched in pages of [`MEMBER_PAGE_MAX`] (a lazy session's
    /// `server_info` holds only the first 100).
    pub async fn members(&self, server: ServerId) -> Result<Vec<Member>, ClientError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = self
                .member_page(server, after, Some(MEMBER_PAGE_MAX))
                .await?;
            all.extend(page);
            match next {
                // A relay that answered a `next` not past this page would loop forever.
                Some(n) if Some(n) != after => after = Some(n),
                _ => return Ok(all),
            }
        }
    }
    /// Renames a server (admins and the owner); its members get `server_updated`.
    pub async fn server_rename(&self, server: ServerId, name: Name) -> Result<(), ClientError> {
        self.expect_ok(Request::ServerRename { server, name }).await
    }
    /// Deletes a server with its channels, for everyone (the owner only); its members get
    /// `server_removed`.
    pub async fn server_delete(&self, server: ServerId) -> Result<(), ClientError> {
        self.expect_ok(Request::ServerDelete { server }).await
    }
    /// Makes a member an admin or an admin a member (the owner only).
    pub async fn member_set_role(
        &self,
        server: ServerId,
        user: UserId,
        role: Role,
    ) -> Result<(), ClientError> {
        self.expect_ok(Request::MemberSetRole { server, user, role })
            .await
    }
    /// Removes a member (admins may remove members; the owner anyone).
    pub async fn member_kick(&self, server: ServerId, user: UserId) -> Result<(), ClientError> {
        self.expect_ok(Request::MemberKick { server, user }).await
    }
    /// Removes a member and keeps them out until unbanned (admins ban members; the owner
    /// anyone).
    pub async fn member_ban(&self, server: ServerId, user: UserId) -> Result<(), ClientError> {
        self.expect_ok(Request::MemberBan { server, user }).await
    }
    /// Lets a banned user join again with an invite (admins and the owner); `not_found` when
    /// they are not banned.
    pub async fn member_unban(&self, server: ServerId, user: UserId) -> Result<(), ClientError> {
        self.expect_ok(Request::MemberUnban { server, user }).await
    }
    /// Who is banned from `server` (admins and the owner). Users without an account show as
    /// `user-` and the first 8 hex digits of their key.
    pub async fn ban_list(&self, server: ServerId) -> Result<Vec<UserSummary>, ClientError> {
        match self.request(Request::BanList { server }).await? {
            Reply::Bans { users, .. } => Ok(users),
            other => Err(unexpected("bans", &other)),
        }
    }
    /// Leaves a server (not its owner: the owner deletes it instead).
    pub async fn server_leave(&self, server: ServerId) -> Result<(), ClientError> {
        self.expect_ok(Request::ServerLeave { server }).await
    }

    pub async fn invite_create(
        &self,
        server: ServerId,
        max_uses: Option<u32>,
        expires_in: Option<Duration>,
    ) -> Result<InviteInfo, ClientError> {
        let request = Request::InviteCreate {
            server,
            max_uses,
            expires_in_secs: expires_in.map(|d| d.as_secs().max(1)),
        };
        match self.request(request).await? {
            Reply::Invite { invite } => Ok(invite),
            other => Err(unexpected("invite", &other)),
        }
    }
    pub async fn invite_join(&self, code: InviteCode) -> Result<ServerInfo, ClientError> {
        match self.request(Request::InviteJoin { code }).await? {
            Reply::Server { server } => Ok(server),
            other => Err(unexpected("server", &other)),
        }
    }
    pub async fn invite_revoke(&self, code: InviteCode) -> Result<(), ClientError> {
        self.expect_ok(Request::InviteRevoke { code }).await
    }

    pub async fn channel_create(
        &self,
        server: ServerId,
        name: Name,
        max_participants: Option<u32>,
        permissions: Option<ChannelPermissions>,
    ) -> Result<ChannelInfo, ClientError> {
        let request = Request::ChannelCreate {
            server,
            name,
            max_participants,
            permissions,
        };
        match self.request(request).await? {
            Reply::Channel { channel } => Ok(channel),
            other => Err(unexpected("channel", &other)),
        }
    }
    pub async fn channels(&self, server: ServerId) -> Result<Vec<ChannelInfo>, ClientError> {
        match self.request(Request::ChannelList { server }).await? {
            Reply::Channels { channels, .. } => Ok(channels),
            other => Err(unexpected("channels", &other)),
        }
    }
    pub async fn channel_rename(&self, channel: ChannelId, name: Name) -> Result<(), ClientError> {
        self.expect_ok(Request::ChannelRename { channel, name })
            .await
    }
    pub async fn channel_configure(
        &self,
        channel: ChannelId,
        max_participants: Option<u32>,
        permissions: Option<ChannelPermissions>,
    ) -> Result<(), ClientError> {
        self.channel_configure_with_mesh_limit(channel, max_participants, permissions, None)
            .await
    }
    /// [`RelayClient::channel_configure`] that may also set the channel's mesh limit (past it the
    /// channel moves to the SFU; the relay's limit or more clears it). `None`s stay as they are.
    pub async fn channel_configure_with_mesh_limit(
        &self,
        channel: ChannelId,
        max_participants: Option<u32>,
        permissions: Option<ChannelPermissions>,
        mesh_limit: Option<u32>,
    ) -> Result<(), ClientError> {
        let request = Request::ChannelConfigure {
            channel,
            max_participants,
            permissions,
            mesh_limit,
        };
        self.expect_ok(request).await
    }
    pub async fn channel_delete(&self, channel: ChannelId) -> Result<(), ClientError> {
        self.expect_ok(Request::ChannelDelete { channel }).await
    }

    /// Join a voice channel (leaving any other); returns the channel with its roster and what
    /// this user may do in it. The client re-joins it by itself after a reconnect.
    pub async fn channel_join(
        &self,
        channel: ChannelId,
        voice: VoiceState,
    ) -> Result<(ChannelInfo, Permissions), ClientError> {
        let (channel, permissions, _) = self.channel_join_mode(channel, voice).await?;
        Ok((channel, permissions))
    }

    /// [`RelayClient::channel_join`], plus how the channel carries audio now (mesh or SFU).
    pub async fn channel_join_mode(
        &self,
        channel: ChannelId,
        voice: VoiceState,
    ) -> Result<(ChannelInfo, Permissions, VoiceTopology), ClientError> {
        let request = Request::ChannelJoin {
            channel,
            voice: Some(voice),
        };
        match self.request(request).await? {
            Reply::Joined {
                channel,
                permissions,
                mode,
            } => Ok((channel, permissions, mode)),
            other => Err(unexpected("joined", &other)),
        }
    }

    /// Connect to the SFU of the channel we are in with our SDP offer; returns its answer.
    pub async fn sfu_join(&self, channel: ChannelId, sdp: String) -> Result<String, ClientError> {
        self.expect_sdp(Request::SfuJoin { channel, sdp }).await
    }

    /// Our answer to the SFU's last `sfu_offer`.
    pub async fn sfu_answer(&self, sdp: String) -> Result<(), ClientError> {
        self.expect_ok(Request::SfuAnswer { sdp }).await
    }

    /// Renegotiate our own tracks with the SFU; returns its answer.
    pub async fn sfu_offer(&self, sdp: String) -> Result<String, ClientError> {
        self.expect_sdp(Request::SfuOffer { sdp }).await
    }

    /// Disconnect from the SFU, staying in the channel.
    pub async fn sfu_leave(&self) -> Result<(), ClientError> {
        self.expect_ok(Request::SfuLeave).await
    }

    /// Which simulcast layer of `user`'s video we want from the SFU (`sfu_quality`).
    pub async fn sfu_quality(
        &self,
        user: UserId,
        quality: hum_proto::signal::VideoQuality,
    ) -> Result<(), ClientError> {
        self.expect_ok(Request::SfuQuality { user, quality }).await
    }

    /// Fresh credentials for the relay's TURN server; `None` when the relay has none.
    pub async fn turn_credentials(&self) -> Result<Option<TurnServer>, ClientError> {
        match self.request(Request::TurnCredentials).await {
            Ok(Reply::Turn { turn }) => Ok(Some(turn)),
            Ok(other) => Err(unexpected("turn", &other)),
            Err(e) if e.code() == Some(ErrorCode::NotFound) => Ok(None),
            // Relays older than this request: no TURN either.
            Err(e) if e.code() == Some(ErrorCode::UnknownType) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn expect_sdp(&self, request: Request) -> Result<String, ClientError> {
        match self.request(request).await? {
            Reply::Sdp { sdp } => Ok(sdp),
            other => Err(unexpected("sdp", &other)),
        }
    }
    pub async fn channel_leave(&self) -> Result<(), ClientError> {
        self.expect_ok(Request::ChannelLeave).await
    }
    /// Publish a change of voice state (muted, deafened, speaking, ...) to the channel.
    pub async fn voice_update(&self, voice: VoiceStatePatch) -> Result<(), ClientError> {
        self.expect_ok(Request::VoiceUpdate { voice }).await
    }
}

/// The answer to `friend_list`.
#[derive(Clone, Debug, PartialEq)]
pub struct FriendList {
    pub friends: Vec<Friend>,
    pub incoming: Vec<UserSummary>,
    pub outgoing: Vec<UserSummary>,
}

fn unexpected(expected: &'static str, got: &Reply) -> ClientError {
    let got = serde_json::to_value(got)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    ClientError::UnexpectedReply { expected, got }
}

/// Request ids are unique per client for its whole life, across reconnects.
pub(crate) fn next_request_id(counter: &AtomicU64) -> hum_proto::RequestId {
    hum_proto::RequestId(counter.fetch_add(1, Ordering::Relaxed))
}
