//! The relay's brain: a sans-IO state machine over every logged-in session.
//!
//! The hub owns the persistent [`Model`] (written through to the [`Store`]) and the live state:
//! who is online on which connection, who is in which voice channel with what voice state, and
//! the 1-on-1 calls. It reads no clock and owns no socket: time comes in as `now_ms` (Unix
//! milliseconds), requests come in already decoded and authenticated, and everything it wants
//! sent comes out of [`Hub::drain`] as [`Output`]s. The server module runs it on one dedicated
//! thread, so there are no locks and the order of events is the order of inputs.
//!
//! Rules (checked by the tests beside each part):
//! - every request gets exactly one reply or error, to the connection that sent it;
//! - roster and channel events go to every online member of the channel's server, the subject
//!   included, so a client can keep its state from events alone;
//! - presence events go to online mutual friends;
//! - signalling is forwarded only between the two parties of an accepted call, or between two
//!   users in the same voice channel; `from` is set by the hub, never taken from the client;
//! - one session per account: a new login with the same key replaces the old session.

mod community;
mod mode;
mod social;
mod stream;
mod voice;
mod watch;

#[cfg(test)]
mod abuse_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hum_proto::signal::{
    ChannelInfo, DisplayName, ErrorCode, Event, Limits, Member, Permissions, Presence, ProtoError,
    Reply, Request, RosterEntry, ServerInfo, ServerMessage, Status, UserSummary, VoiceLocation,
    VoiceState,
};
use hum_proto::{CallId, ChannelId, RequestId, ServerId, UserId};
use rand_chacha::ChaCha8Rng;

use crate::limits::{AddressLimiter, SourceKey};
use crate::model::Model;
use crate::store::{Store, StoreError};

/// A connection, numbered by the server module.
pub type ConnId = u64;

/// WebSocket close codes the relay uses (4000-4999 is the application range).
pub mod close {
    /// The same key logged in elsewhere.
    pub const SESSION_REPLACED: u16 = 4001;
    /// The client did not read its messages fast enough.
    pub const TOO_SLOW: u16 = 4002;
    /// No `login` within the allowed time.
    pub const LOGIN_TIMEOUT: u16 = 4003;
    /// Nothing received (not even a pong) for too long.
    pub const IDLE_TIMEOUT: u16 = 4004;
    /// Policy violation: flooding or persistent garbage (RFC 6455).
    pub const POLICY: u16 = 1008;
    /// A frame too large to even read (RFC 6455).
    pub const TOO_BIG: u16 = 1009;
    /// The relay is shutting down (RFC 6455 "going away").
    pub const GOING_AWAY: u16 = 1001;
}

/// What the hub wants done.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Send `msg` to each of `to` (encoded once by the caller).
    Send { to: Vec<ConnId>, msg: ServerMessage },
    /// Close `conn` with a WebSocket close code and reason.
    Close {
        conn: ConnId,
        code: u16,
        reason: String,
    },
    /// Ask the embedded SFU to do something (the server module carries it out).
    Sfu(SfuCmd),
    /// Tell the live-stream host (root seeds, tracker, recordings) something.
    Live(LiveCmd),
}

pub use stream::LiveCmd;

/// What the hub asks of the SFU. Requests carry the connection and request id so the SFU's
/// answer can be returned with [`Hub::sfu_done`].
#[derive(Clone, Debug, PartialEq)]
pub enum SfuCmd {
    /// `user` joins `channel`'s SFU room with an offer; `permissions` bound what it may publish.
    Join {
        conn: ConnId,
        re: RequestId,
        channel: ChannelId,
        user: UserId,
        sdp: String,
        permissions: hum_proto::signal::Permissions,
    },
    /// `user` renegotiates its own tracks.
    Offer {
        conn: ConnId,
        re: RequestId,
        user: UserId,
        sdp: String,
    },
    /// `user` answers the SFU's offer.
    Answer {
        conn: ConnId,
        re: RequestId,
        user: UserId,
        sdp: String,
    },
    /// `user` leaves the SFU.
    Leave { user: UserId },
    /// `user` wants `quality` of `owner`'s video (`sfu_quality`).
    Quality {
        conn: ConnId,
        re: RequestId,
        user: UserId,
        owner: UserId,
        quality: hum_proto::signal::VideoQuality,
    },
    /// `user`'s channel permissions changed while on the SFU (role, channel permissions): what
    /// it publishes is re-checked (a revoked `speak`/`video` withdraws the track).
    Permissions {
        channel: ChannelId,
        user: UserId,
        permissions: hum_proto::signal::Permissions,
    },
}

/// Tunables. The defaults are the relay's defaults.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Announced to clients at login (enforced by the connection layer).
    pub limits: Limits,
    /// A call nobody answers ends after this long.
    pub ring_timeout_ms: u64,
    /// `max_participants` of a channel created without one.
    pub default_channel_size: u32,
    /// The largest `max_participants` an admin may set.
    pub max_channel_size: u32,
    pub max_servers_per_user: usize,
    pub max_channels_per_server: usize,
    pub max_members_per_server: usize,
    /// Friends plus pending requests either way.
    pub max_friends: usize,
    /// Ringing plus active calls.
    pub max_calls_per_user: usize,
    pub max_invites_per_server: usize,
    /// When a voice channel is a mesh and when it uses the SFU.
    pub mode: mode::ModePolicy,
    /// New accounts per source address (IPv4 address or IPv6 /64): sustained per hour...
    pub new_accounts_per_hour: u32,
    /// ...and at once.
    pub new_accounts_burst: u32,
    /// Servers one account may own (create) at a time.
    pub max_owned_servers_per_user: usize,
    /// Live invites one account may have created, across all servers.
    pub max_invites_per_user: usize,
    /// After a declined friend request, how long before the same user may ask again.
    pub friend_request_cooldown_secs: u64,
    /// The TURN server whose credentials clients get at login (`None`: no TURN).
    pub turn: Option<crate::turn::TurnConfig>,
    /// The newest client release this relay announces (`--client-release`), for
    /// `client_release`.
    pub client_release: Option<hum_proto::signal::ReleaseInfo>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            limits: Limits {
                max_message_bytes: hum_proto::signal::MAX_MESSAGE_BYTES as u32,
                rate_per_sec: 50,
                rate_burst: 200,
            },
            ring_timeout_ms: 60_000,
            default_channel_size: 25,
            max_channel_size: 1_000,
            max_servers_per_user: 200,
            max_channels_per_server: 1_000,
            max_members_per_server: 100_000,
            max_friends: 2_000,
            max_calls_per_user: 4,
            max_invites_per_server: 100,
            mode: mode::ModePolicy::default(),
            new_accounts_per_hour: 10,
            new_accounts_burst: 5,
            max_owned_servers_per_user: 20,
            max_invites_per_user: 200,
            friend_request_cooldown_secs: 24 * 3600,
            turn: None,
            client_release: None,
        }
    }
}

/// A logged-in session.
#[derive(Clone, Debug)]
struct Online {
    conn: ConnId,
    channel: Option<ChannelId>,
    voice: VoiceState,
    /// What the user may do in `channel`, as last told (`joined`, then `voice_permissions`).
    perms: Permissions,
    calls: BTreeSet<CallId>,
    /// The servers this session watches (`subscribe`); `None`: it never asked, so it watches
    /// every server it is a member of (older clients).
    subs: Option<BTreeSet<ServerId>>,
}

/// Members in one page of `member_list`, and in a `server` sent to a session that subscribes.
pub const MEMBER_PAGE: usize = 100;
/// The largest `member_list` page.
pub const MAX_MEMBER_PAGE: u32 = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallState {
    Ringing { since_ms: u64 },
    Active,
}

#[derive(Clone, Debug)]
struct CallRec {
    caller: UserId,
    callee: UserId,
    state: CallState,
}

impl CallRec {
    fn other(&self, u: &UserId) -> Option<UserId> {
        if *u == self.caller {
            Some(self.callee)
        } else if *u == self.callee {
            Some(self.caller)
        } else {
            None
        }
    }
}

/// Counts for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    pub sessions: usize,
    pub users: usize,
    pub servers: usize,
    pub channels: usize,
    pub voice_participants: usize,
    pub calls: usize,
}

type HubResult = Result<Reply, ProtoError>;

fn err(code: ErrorCode, message: impl Into<String>) -> ProtoError {
    ProtoError::new(code, message)
}

/// A database failure, logged; the client sees `internal`.
fn db_err(e: StoreError) -> ProtoError {
    tracing::error!(error = %e, "database write failed");
    err(
        ErrorCode::Internal,
        "the relay could not save this change; try again",
    )
}

/// The relay's state machine. See the module doc.
pub struct Hub {
    store: Store,
    model: Model,
    config: HubConfig,
    online: HashMap<UserId, Online>,
    conns: HashMap<ConnId, UserId>,
    calls: BTreeMap<CallId, CallRec>,
    /// Mesh or SFU, per voice channel with members.
    voice: BTreeMap<ChannelId, mode::ChannelVoice>,
    /// Who watches which server ([`Hub::watchers`]), kept in step by [`Hub::rewatch`].
    watch: watch::WatchIndex,
    next_call: u64,
    rng: ChaCha8Rng,
    streams: stream::Streams,
    /// Where recordings are kept (`None`: this relay keeps none).
    recordings: Option<crate::recording::Recordings>,
    out: Vec<Output>,
    /// New accounts per source address.
    new_accounts: AddressLimiter,
}

/// Source addresses whose new-account budget is remembered at once (a few MB at most).
const NEW_ACCOUNT_SOURCES: usize = 65_536;

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// Load the persistent model from `store`. `rng` makes invite codes.
    pub fn new(store: Store, config: HubConfig, rng: ChaCha8Rng) -> Result<Hub, StoreError> {
        let model = store.load()?;
        let new_accounts = AddressLimiter::per_hour(
            config.new_accounts_per_hour,
            config.new_accounts_burst,
            NEW_ACCOUNT_SOURCES,
        );
        Ok(Hub {
            store,
            model,
            config,
            online: HashMap::new(),
            conns: HashMap::new(),
            calls: BTreeMap::new(),
            voice: BTreeMap::new(),
            watch: watch::WatchIndex::default(),
            next_call: 1,
            rng,
            streams: stream::Streams::default(),
            recordings: None,
            out: Vec::new(),
            new_accounts,
        })
    }

    /// Keep recordings there (the server module opens them beside the database).
    pub fn set_recordings(&mut self, r: crate::recording::Recordings) {
        self.recordings = Some(r);
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Everything the hub wants sent or closed since the last drain.
    pub fn drain(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    pub fn stats(&self) -> HubStats {
        HubStats {
            sessions: self.online.len(),
            users: self.model.users.len(),
            servers: self.model.servers.len(),
            channels: self.model.channels.len(),
            voice_participants: self.online.values().filter(|o| o.channel.is_some()).count(),
            calls: self.calls.len(),
        }
    }

    /// The user logged in on `conn`, if any.
    pub fn user_of(&self, conn: ConnId) -> Option<UserId> {
        self.conns.get(&conn).copied()
    }

    /// Check the model's invariants plus the live ones (tests).
    pub fn check(&self) -> Result<(), String> {
        self.model.check()?;
        self.streams.check()?;
        for (u, o) in &self.online {
            if self.conns.get(&o.conn) != Some(u) {
                return Err(format!("{u:?} online on a connection not mapped back"));
            }
            if let Some(c) = o.channel
                && !self
                    .model
                    .channels
                    .get(&c)
                    .is_some_and(|ch| ch.roster.contains(u))
            {
                return Err(format!(
                    "{u:?} thinks it is in {c} but is not on the roster"
                ));
            }
            for call in &o.calls {
                if self.calls.get(call).is_none_or(|c| c.other(u).is_none()) {
                    return Err(format!("{u:?} holds call {call} it is not party to"));
                }
            }
        }
        for (c, ch) in &self.model.channels {
            for u in &ch.roster {
                if self.online.get(u).and_then(|o| o.channel) != Some(*c) {
                    return Err(format!("{u:?} on the roster of {c} but not online in it"));
                }
            }
        }
        for (id, call) in &self.calls {
            for u in [call.caller, call.callee] {
                if !self.online.get(&u).is_some_and(|o| o.calls.contains(id)) {
                    return Err(format!("call {id} party {u:?} is offline or unaware"));
                }
            }
        }
        let mut expected = watch::WatchIndex::default();
        for u in self.online.keys() {
            expected.set(*u, self.watch_set_of(u));
        }
        self.watch.check(&expected)?;
        Ok(())
    }

    // --- session --------------------------------------------------------------------------------

    /// `conn` proved it holds `user`'s key. Replaces any older session of the same user.
    pub fn login(
        &mut self,
        now_ms: u64,
        conn: ConnId,
        re: RequestId,
        user: UserId,
        display_name: Option<DisplayName>,
    ) {
        self.login_from(now_ms, conn, re, user, display_name, None);
    }

    /// [`Hub::login`] from a known source address: a new account counts against that address's
    /// budget of new accounts (`new_accounts_per_hour`, `new_accounts_burst`).
    pub fn login_from(
        &mut self,
        now_ms: u64,
        conn: ConnId,
        re: RequestId,
        user: UserId,
        display_name: Option<DisplayName>,
        source: Option<SourceKey>,
    ) {
        if self.conns.contains_key(&conn) {
            self.reply(
                conn,
                re,
                Err(err(ErrorCode::OutOfOrder, "already logged in")),
            );
            return;
        }
        let existing = self.model.users.get(&user).map(|u| u.display_name.clone());
        let new_account = existing.is_none();
        if new_account
            && let Some(source) = source
            && let Err(wait_ms) = self.new_accounts.try_take(source, now_ms)
        {
            let minutes = wait_ms.div_ceil(60_000).max(1);
            let e = err(
                ErrorCode::RateLimited,
                format!(
                    "too many new accounts from your address; log in with an existing key or try again in {minutes} min"
                ),
            );
            self.reply(conn, re, Err(e));
            return;
        }
        let name = match (display_name, existing.clone()) {
            (Some(n), _) => n,
            (None, Some(n)) => n,
            (None, None) => default_name(&user),
        };
        if let Err(e) = self.store.upsert_user(&user, &name, now_ms / 1000) {
            self.reply(conn, re, Err(db_err(e)));
            return;
        }
        let renamed = existing.is_some_and(|old| old != name);
        self.model
            .users
            .insert(user, crate::model::UserRec { display_name: name });

        if let Some(old) = self.online.get(&user).map(|o| o.conn) {
            self.send(vec![old], ServerMessage::event(Event::SessionReplaced));
            self.out.push(Output::Close {
                conn: old,
                code: close::SESSION_REPLACED,
                reason: "logged in elsewhere".into(),
            });
            // The old session's channel and calls end; the new session rejoins as it likes.
            self.end_session(now_ms, old, false);
        }
        self.online.insert(
            user,
            Online {
                conn,
                channel: None,
                voice: VoiceState::default(),
                perms: Permissions::ALL,
                calls: BTreeSet::new(),
                subs: None,
            },
        );
        self.conns.insert(conn, user);
        self.rewatch(&user);
        let welcome = Reply::Welcome {
            user: self.summary(&user),
            new_account,
            limits: self.config.limits,
            turn: self
                .config
                .turn
                .as_ref()
                .map(|t| t.credentials(&user, now_ms / 1000)),
        };
        self.reply(conn, re, Ok(welcome));
        if renamed {
            self.push_user_updated(&user);
        }
        self.push_presence(&user);
    }

    /// `conn` closed (or timed out). Unknown or replaced connections are ignored.
    pub fn disconnect(&mut self, now_ms: u64, conn: ConnId) {
        self.end_session(now_ms, conn, true);
    }

    /// Every connection `lost` picks (a dead cluster node's) closed, in connection order so
    /// every node's hub does the same.
    pub fn disconnect_where(&mut self, now_ms: u64, lost: impl Fn(ConnId) -> bool) {
        let mut gone: Vec<ConnId> = self.conns.keys().copied().filter(|c| lost(*c)).collect();
        gone.sort_unstable();
        for conn in gone {
            self.end_session(now_ms, conn, true);
        }
    }

    fn end_session(&mut self, _now_ms: u64, conn: ConnId, announce_offline: bool) {
        let Some(user) = self.conns.remove(&conn) else {
            return;
        };
        if self.online.get(&user).map(|o| o.conn) != Some(conn) {
            return;
        }
        self.leave_channel(&user, hum_proto::signal::RosterLeaveReason::Disconnected);
        self.streams_session_ended(&user);
        let calls: Vec<CallId> = self
            .online
            .get(&user)
            .map(|o| o.calls.iter().copied().collect())
            .unwrap_or_default();
        for call in calls {
            self.end_call(
                call,
                hum_proto::signal::CallEndReason::Disconnected,
                Some(&user),
            );
        }
        self.online.remove(&user);
        self.rewatch(&user);
        if announce_offline {
            self.push_presence(&user);
        }
    }

    /// Time passes: ringing calls time out.
    pub fn tick(&mut self, now_ms: u64) {
        let timeout = self.config.ring_timeout_ms;
        let expired: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| {
                matches!(c.state, CallState::Ringing { since_ms } if now_ms.saturating_sub(since_ms) >= timeout)
            })
            .map(|(id, _)| *id)
            .collect();
        for call in expired {
            self.end_call(call, hum_proto::signal::CallEndReason::Timeout, None);
        }
    }

    /// A decoded request from a logged-in connection. Exactly one reply or error goes back.
    pub fn request(&mut self, now_ms: u64, conn: ConnId, re: RequestId, req: Request) {
        let Some(user) = self.conns.get(&conn).copied() else {
            let e = match req {
                Request::Hello { .. } | Request::Login { .. } => err(
                    ErrorCode::OutOfOrder,
                    "handshake requests go to the connection, not the hub",
                ),
                _ => err(
                    ErrorCode::NotLoggedIn,
                    "log in first: send `hello`, then `login`",
                ),
            };
            self.reply(conn, re, Err(e));
            return;
        };
        // SFU requests are answered when the SFU is done (`sfu_done`), unless refused now.
        match self.sfu_request(conn, re, user, &req) {
            Some(Ok(())) => return,
            Some(Err(e)) => {
                self.reply(conn, re, Err(e));
                return;
            }
            None => {}
        }
        let result = self.dispatch(now_ms, user, req);
        self.reply(conn, re, result);
    }

    fn dispatch(&mut self, now_ms: u64, user: UserId, req: Request) -> HubResult {
        let now_secs = now_ms / 1000;
        match req {
            Request::Hello { .. } | Request::Login { .. } => {
                Err(err(ErrorCode::OutOfOrder, "already logged in"))
            }
            Request::Ping => Ok(Reply::Pong),
            Request::SetProfile { display_name } => self.set_profile(user, display_name),
            Request::FriendRequest { user: to } => self.friend_request(now_secs, user, to),
            Request::FriendAccept { user: from } => self.friend_accept(now_secs, user, from),
            Request::FriendDecline { user: from } => self.friend_decline(now_secs, user, from),
            Request::FriendRemove { user: other } => self.friend_remove(user, other),
            Request::FriendList => Ok(self.friend_list(&user)),
            Request::HandleSet { handle } => self.handle_set(now_secs, user, handle),
            Request::HandleGet { user: of } => self.handle_get(of),
            Request::HandleLookup { handle } => self.handle_lookup(&handle),
            Request::CallInvite { user: to } => self.call_invite(now_ms, user, to),
            Request::CallAccept { call } => self.call_accept(user, call),
            Request::CallDecline { call } => self.call_decline(user, call),
            Request::CallCancel { call } => self.call_cancel(user, call),
            Request::CallHangup { call } => self.call_hangup(user, call),
            Request::Signal { to, scope, payload } => self.signal(user, to, scope, payload),
            Request::ServerCreate { name } => self.server_create(now_secs, user, name),
            Request::ServerList => Ok(self.server_list(&user)),
            Request::ServerInfo { server } => self.server_info_req(user, server),
            Request::ServerRename { server, name } => self.server_rename(user, server, name),
            Request::ServerDelete { server } => self.server_delete(user, server),
            Request::ServerLeave { server } => self.server_leave(user, server),
            Request::MemberKick {
                server,
                user: target,
            } => self.member_kick(user, server, target),
            Request::MemberSetRole {
                server,
                user: target,
                role,
            } => self.member_set_role(user, server, target, role),
            Request::InviteCreate {
                server,
                max_uses,
                expires_in_secs,
            } => self.invite_create(now_secs, user, server, max_uses, expires_in_secs),
            Request::InviteJoin { code } => self.invite_join(now_secs, user, code),
            Request::InviteRevoke { code } => self.invite_revoke(user, code),
            Request::ChannelCreate {
                server,
                name,
                max_participants,
                permissions,
            } => self.channel_create(now_secs, user, server, name, max_participants, permissions),
            Request::ChannelRename { channel, name } => self.channel_rename(user, channel, name),
            Request::ChannelConfigure {
                channel,
                max_participants,
                permissions,
                mesh_limit,
            } => self.channel_configure(user, channel, max_participants, permissions, mesh_limit),
            Request::ChannelDelete { channel } => self.channel_delete(user, channel),
            Request::ChannelList { server } => self.channel_list(user, server),
            Request::ChannelJoin { channel, voice } => self.channel_join(user, channel, voice),
            Request::ChannelLeave => self.channel_leave(user),
            Request::VoiceUpdate { voice } => self.voice_update(user, voice),
            Request::StreamStart {
                channel,
                title,
                bitrate,
                chunk_ms,
                started_ms,
                record,
                layers,
            } => self.stream_start(
                now_ms, user, channel, title, bitrate, chunk_ms, started_ms, record, layers,
            ),
            Request::StreamEnd { stream } => self.stream_end(user, stream),
            Request::StreamList { server } => self.stream_list(user, server),
            Request::StreamJoin {
                stream,
                relay,
                layer,
            } => self.stream_join(user, stream, relay, layer),
            Request::StreamLeave { stream } => self.stream_leave(user, stream),
            Request::StreamSignal { stream, to, signal } => {
                self.stream_signal(user, stream, to, signal)
            }
            Request::StreamMesh { stream } => self.stream_mesh(user, stream),
            Request::RecordingList { server } => self.recording_list(user, server),
            Request::RecordingOpen { recording } => self.recording_open(user, recording),
            Request::RecordingDelete { recording } => self.recording_delete(user, recording),
            Request::RecordingJoin { recording } => self.recording_join(user, recording),
            Request::RecordingLeave { recording } => self.recording_leave(user, recording),
            Request::RecordingSignal {
                recording,
                to,
                signal,
            } => self.recording_signal(user, recording, to, signal),
            Request::SfuJoin { .. }
            | Request::SfuOffer { .. }
            | Request::SfuAnswer { .. }
            | Request::SfuQuality { .. } => Err(err(
                ErrorCode::Internal,
                "SFU requests are handled before dispatch",
            )),
            Request::SfuLeave => self.sfu_leave(user),
            Request::MemberBan {
                server,
                user: target,
            } => self.member_ban(now_secs, user, server, target),
            Request::MemberUnban {
                server,
                user: target,
            } => self.member_unban(user, server, target),
            Request::BanList { server } => self.ban_list(user, server),
            Request::Subscribe { servers } => self.subscribe(user, servers),
            Request::MemberList {
                server,
                after,
                limit,
            } => self.member_list(user, server, after, limit),
            Request::TurnCredentials => match &self.config.turn {
                Some(t) => Ok(Reply::Turn {
                    turn: t.credentials(&user, now_secs),
                }),
                None => Err(err(
                    ErrorCode::NotFound,
                    "this relay has no TURN server (--turn-url, --turn-secret)",
                )),
            },
            Request::ClientRelease => Ok(Reply::ClientRelease {
                release: self.config.client_release.clone(),
            }),
        }
    }

    // --- output helpers -------------------------------------------------------------------------

    fn reply(&mut self, conn: ConnId, re: RequestId, result: HubResult) {
        let msg = match result {
            Ok(reply) => ServerMessage::reply(re, reply),
            Err(e) => ServerMessage::error(Some(re), e),
        };
        self.out.push(Output::Send {
            to: vec![conn],
            msg,
        });
    }

    fn send(&mut self, to: Vec<ConnId>, msg: ServerMessage) {
        if !to.is_empty() {
            self.out.push(Output::Send { to, msg });
        }
    }

    fn conn_of(&self, u: &UserId) -> Option<ConnId> {
        self.online.get(u).map(|o| o.conn)
    }

    /// Send `event` to whichever of `users` are online.
    fn event_to_users<'a>(&mut self, users: impl IntoIterator<Item = &'a UserId>, event: Event) {
        let to: Vec<ConnId> = users.into_iter().filter_map(|u| self.conn_of(u)).collect();
        self.send(to, ServerMessage::event(event));
    }

    fn event_to_user(&mut self, user: &UserId, event: Event) {
        if let Some(c) = self.conn_of(user) {
            self.send(vec![c], ServerMessage::event(event));
        }
    }

    /// The connections that hear member and voice changes of `server` (`channel`: the channel
    /// concerned): online members watching `server` (`subscribe`; everyone who never
    /// subscribed), from the watch index, and those in `channel`. Costs the number of watchers
    /// and the channel's roster, not the server's members.
    fn watchers(&self, server: ServerId, channel: Option<ChannelId>) -> Vec<ConnId> {
        let mut to: Vec<ConnId> = self
            .watch
            .watching(server)
            .filter_map(|u| self.conn_of(u))
            .collect();
        if let Some(c) = channel
            && let Some(ch) = self.model.channels.get(&c)
            && ch.server == server
        {
            for u in &ch.roster {
                if let Some(o) = self.online.get(u)
                    && o.channel == Some(c)
                    && !self.watch.watches(u, server)
                {
                    to.push(o.conn);
                }
            }
        }
        to
    }

    /// The servers `user` watches now: none offline; those it is a member of, all of them if it
    /// never sent `subscribe`, else those of its last `subscribe`.
    fn watch_set_of(&self, user: &UserId) -> BTreeSet<ServerId> {
        let Some(o) = self.online.get(user) else {
            return BTreeSet::new();
        };
        let Some(member_of) = self.model.user_servers.get(user) else {
            return BTreeSet::new();
        };
        match &o.subs {
            None => member_of.clone(),
            Some(subs) => subs.intersection(member_of).copied().collect(),
        }
    }

    /// Bring `user`'s entries in the watch index up to date, after anything that changes what
    /// it watches: login, session end, `subscribe`, joining or leaving a server.
    fn rewatch(&mut self, user: &UserId) {
        let servers = self.watch_set_of(user);
        self.watch.set(*user, servers);
    }

    /// Send a member or voice change of `server` to its watchers ([`Hub::watchers`]).
    fn event_to_watchers(&mut self, server: ServerId, channel: Option<ChannelId>, event: Event) {
        let to = self.watchers(server, channel);
        self.send(to, ServerMessage::event(event));
    }

    /// `subscribe`: watch exactly `servers` (each one `user` is a member of).
    fn subscribe(&mut self, user: UserId, servers: Vec<ServerId>) -> HubResult {
        if let Some(s) = servers
            .iter()
            .find(|s| self.model.role(**s, &user).is_none())
        {
            return Err(err(
                ErrorCode::NotFound,
                format!("you are not a member of server {s}"),
            ));
        }
        if let Some(o) = self.online.get_mut(&user) {
            o.subs = Some(servers.into_iter().collect());
        }
        self.rewatch(&user);
        Ok(Reply::Ok)
    }

    /// `member_list`: a page of members in user-id order.
    fn member_list(
        &self,
        user: UserId,
        server: ServerId,
        after: Option<UserId>,
        limit: Option<u32>,
    ) -> HubResult {
        let s = self
            .model
            .servers
            .get(&server)
            .filter(|s| s.members.contains_key(&user))
            .ok_or_else(|| err(ErrorCode::NotFound, "no such server (or not a member)"))?;
        let limit = match limit {
            None => MEMBER_PAGE,
            Some(n @ 1..=MAX_MEMBER_PAGE) => n as usize,
            Some(n) => {
                return Err(err(
                    ErrorCode::BadRequest,
                    format!("limit {n} is outside 1..={MAX_MEMBER_PAGE}"),
                ));
            }
        };
        let range = match after {
            Some(a) => s
                .members
                .range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => s.members.range(..),
        };
        let members: Vec<Member> = range
            .take(limit + 1)
            .map(|(u, r)| self.member_view(u, *r))
            .collect();
        let (members, next) = if members.len() > limit {
            let page = members[..limit].to_vec();
            let next = page.last().map(|m| m.user.id);
            (page, next)
        } else {
            (members, None)
        };
        Ok(Reply::Members {
            server,
            members,
            next,
        })
    }

    /// Send `event` to every online member of `server`.
    fn event_to_server(&mut self, server: ServerId, event: Event) {
        let to: Vec<ConnId> = match self.model.servers.get(&server) {
            Some(s) => s.members.keys().filter_map(|u| self.conn_of(u)).collect(),
            None => return,
        };
        self.send(to, ServerMessage::event(event));
    }

    // --- views ----------------------------------------------------------------------------------

    fn summary(&self, u: &UserId) -> UserSummary {
        let display_name = self
            .model
            .users
            .get(u)
            .map(|r| r.display_name.clone())
            .unwrap_or_else(|| default_name(u));
        UserSummary {
            id: *u,
            display_name,
        }
    }

    fn presence(&self, u: &UserId) -> Presence {
        let Some(o) = self.online.get(u) else {
            return Presence::OFFLINE;
        };
        let channel = o.channel.and_then(|c| {
            let ch = self.model.channels.get(&c)?;
            let srv = self.model.servers.get(&ch.server)?;
            Some(VoiceLocation {
                server: ch.server,
                server_name: srv.name.clone(),
                channel: c,
                channel_name: ch.name.clone(),
            })
        });
        let in_call = o.calls.iter().any(|c| {
            self.calls
                .get(c)
                .is_some_and(|r| r.state == CallState::Active)
        });
        Presence {
            status: Status::Online,
            channel,
            in_call,
        }
    }

    /// Tell `u`'s online friends where `u` is now.
    fn push_presence(&mut self, u: &UserId) {
        let Some(friends) = self.model.friends.get(u) else {
            return;
        };
        let to: Vec<ConnId> = friends.iter().filter_map(|f| self.conn_of(f)).collect();
        let presence = self.presence(u);
        self.send(
            to,
            ServerMessage::event(Event::Presence { user: *u, presence }),
        );
    }

    fn member_view(&self, u: &UserId, role: hum_proto::signal::Role) -> Member {
        Member {
            user: self.summary(u),
            role,
            online: self.online.contains_key(u),
        }
    }

    fn channel_info(&self, id: ChannelId) -> Option<ChannelInfo> {
        self.channel_view(id, true)
    }

    /// A channel, with its roster or (`with_roster` false) without building it at all.
    fn channel_view(&self, id: ChannelId, with_roster: bool) -> Option<ChannelInfo> {
        let ch = self.model.channels.get(&id)?;
        let roster = if with_roster {
            ch.roster
                .iter()
                .map(|u| RosterEntry {
                    user: self.summary(u),
                    voice: self.online.get(u).map(|o| o.voice).unwrap_or_default(),
                })
                .collect()
        } else {
            Vec::new()
        };
        Some(ChannelInfo {
            id,
            server: ch.server,
            name: ch.name.clone(),
            max_participants: ch.max_participants,
            permissions: ch.permissions,
            roster,
            mode: self.mode_of(id),
            mesh_limit: ch.mesh_limit,
        })
    }

    /// `id` as `viewer` sees it. A viewer that subscribes (lazy) gets the first page of members
    /// and rosters only if it watches `id` (or of the channel it is in): a join to a big server
    /// costs a page, not the whole server. In the reply to a join (`Shape::Joined`), a
    /// server such a viewer does not watch is a summary: no members, no channels, the counts.
    fn server_info(&self, id: ServerId, viewer: &UserId, shape: Shape) -> Option<ServerInfo> {
        let s = self.model.servers.get(&id)?;
        let role = *s.members.get(viewer)?;
        let o = self.online.get(viewer);
        let lazy = o.and_then(|o| o.subs.as_ref());
        let watches = lazy.is_none_or(|subs| subs.contains(&id));
        let summary = shape == Shape::Joined && !watches;
        let page = match (lazy, summary) {
            (_, true) => 0,
            (Some(_), false) => MEMBER_PAGE,
            (None, false) => usize::MAX,
        };
        let in_channel = o.and_then(|o| o.channel);
        let count = |n: usize| Some(u32::try_from(n).unwrap_or(u32::MAX));
        Some(ServerInfo {
            id,
            name: s.name.clone(),
            owner: s.owner,
            role,
            members: s
                .members
                .iter()
                .take(page)
                .map(|(u, r)| self.member_view(u, *r))
                .collect(),
            channels: s
                .channels
                .iter()
                .take(if summary { 0 } else { usize::MAX })
                .filter_map(|c| self.channel_view(*c, watches || in_channel == Some(*c)))
                .collect(),
            member_count: count(s.members.len()),
            channel_count: count(s.channels.len()),
        })
    }
}

/// How much of a server a reply carries (`Hub::server_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// The client asked for this server (`server_info`) or just made it (`server_create`):
    /// members (a page, to a lazy session) and every channel.
    Asked,
    /// The reply to `invite_join`: a lazy session that does not watch the server gets a summary,
    /// so a join to a big server costs a few hundred bytes, not its channel list.
    Joined,
}

/// The name a key gets if it never chose one: `user-` and the first 8 hex digits of the key.
pub fn default_name(u: &UserId) -> DisplayName {
    let hex = u.to_hex();
    DisplayName::new(format!("user-{}", &hex[..8])).expect("13 ASCII characters make a valid name")
}
