//! Client → relay: every request is one JSON object with an `id` and a `type`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::StreamId;
use crate::signal::stream::{MeshSignal, StreamLayer, StreamLayerName};
use crate::units::Bitrate;

use crate::ids::{
    CallId, ChannelId, InviteCode, Nonce, RequestId, SealedMediaKey, ServerId, Signature, UserId,
};
use crate::signal::model::{
    ChannelPermissions, DisplayName, Handle, Name, Role, VoiceState, VoiceStatePatch,
};

/// One frame from a client: `{"id": 7, "type": "...", ...fields of the request}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClientMessage {
    /// Echoed as `re` in the reply or error, so the client can match them up.
    pub id: RequestId,
    #[serde(flatten)]
    pub request: Request,
}

/// Where a [`Request::Signal`] belongs: a 1-on-1 call, or a voice channel the sender and the
/// receiver are both in. JSON: `{"call": 5}` or `{"channel": 3}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignalScope {
    Call(CallId),
    Channel(ChannelId),
}

/// WebRTC negotiation, opaque to the relay, forwarded between two peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SignalPayload {
    /// An SDP offer.
    Offer { sdp: String },
    /// An SDP answer.
    Answer { sdp: String },
    /// A trickled ICE candidate (the `candidate` line, as in RTCIceCandidateInit).
    Ice {
        candidate: String,
        #[serde(default)]
        sdp_mid: Option<String>,
        #[serde(default)]
        sdp_mline_index: Option<u16>,
        #[serde(default)]
        username_fragment: Option<String>,
    },
    /// No more ICE candidates for this negotiation.
    EndOfCandidates,
    /// Ask the peer to make a fresh offer (e.g. after glare or an ICE restart).
    Renegotiate,
    /// The sender is tearing down its peer connection to the receiver in this scope.
    Bye,
    /// End-to-end media encryption (docs/e2ee.md): the sender's media key for `epoch`, sealed
    /// for the receiver alone (X25519 of the two identity keys, AES-GCM) and signed by the
    /// sender. Opaque to the relay, which forwards it as any signal.
    E2eeKey {
        epoch: u32,
        /// Fresh random bytes per message.
        salt: Nonce,
        // Boxed, as is `signature`: keeps every request small (clippy's large_enum_variant).
        /// The sender key, sealed.
        sealed: Box<SealedMediaKey>,
        /// The sender's Ed25519 signature over the sealed key, both parties, channel, epoch and salt.
        signature: Box<Signature>,
    },
    /// In a mesh (call or channel): which layer of the sender's video the receiver wants
    /// (`high` for the speaker, a pinned tile or a screen share, `low` for a thumbnail, `off`
    /// when not shown; `auto` = the sender's default, high). The sender encodes each layer
    /// once for everyone who wants it and pauses layers nobody wants; a receiver that never
    /// asks is sent no video. Opaque to the relay.
    VideoQuality { quality: VideoQuality },
    /// The sender's camera went on or off (also said once its connection is up): the receiver
    /// shows its avatar at once instead of a frozen last picture. In a channel the roster's
    /// `video` flag says the same; in a 1-on-1 call this is the only word. Opaque to the relay.
    Camera { on: bool },
}

/// What a client asks of the relay.
///
/// Order: `hello` first, then `login`; every other request needs a logged-in session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    // --- session ---------------------------------------------------------------------------
    /// First message on a connection. Reply: `challenge`.
    Hello {
        /// The protocol version the client speaks (this document: 1).
        protocol: u32,
        /// Free text naming the client software, for logs (at most 64 characters).
        #[serde(default)]
        client: Option<String>,
    },
    /// Prove ownership of `public_key` by signing the challenge. Reply: `welcome`.
    Login {
        public_key: UserId,
        /// Ed25519 signature over the bytes `"hum-relay-login-v1\0"` followed by the 32 bytes
        /// of the challenge nonce.
        signature: Signature,
        /// The display name to use. Required the first time a key logs in unless the relay may
        /// pick one; when given later it replaces the stored name.
        #[serde(default)]
        display_name: Option<DisplayName>,
        /// The relay name (`host[:port]` of the URL the client dialed, at most 261 bytes) the
        /// login is signed for. Given: `signature` is over `"hum-relay-login-v2\0"`, the name's
        /// length (2 bytes, big-endian), the name and the nonce, and a relay that knows its
        /// names refuses another one (`wrong_relay`). Absent: the unbound form above, which such
        /// a relay refuses too (docs/security.md, "Login binding").
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relay: Option<String>,
    },
    /// Liveness and round-trip check. Reply: `pong`.
    Ping,
    /// Change the display name. Reply: `ok`; friends and co-members get `user_updated`.
    SetProfile { display_name: DisplayName },

    // --- friends -----------------------------------------------------------------------------
    /// Ask `user` to be friends. If they already asked you, you become friends at once.
    /// Reply: `ok`.
    FriendRequest { user: UserId },
    /// Accept `user`'s pending request. Reply: `ok`.
    FriendAccept { user: UserId },
    /// Decline `user`'s pending request. Reply: `ok`.
    FriendDecline { user: UserId },
    /// End a friendship, or withdraw your own pending request. Reply: `ok`.
    FriendRemove { user: UserId },
    /// Reply: `friends`.
    FriendList,

    // --- handles (docs/protocol.md, "Handles") ------------------------------------------------
    /// Take `handle` (without the `@`) as yours on this relay, replacing your old one; `null`
    /// gives yours up. Reply: `handle`; `handle_taken` if someone holds it or a look-alike.
    HandleSet {
        #[serde(default)]
        handle: Option<Handle>,
    },
    /// The handle of `user` (any user who ever logged in). Reply: `handle`.
    HandleGet { user: UserId },
    /// Who holds `handle` (matched ignoring case and look-alikes). Reply: `handle`;
    /// `not_found` if nobody does. Send `friend_request` to the `user` it names.
    HandleLookup { handle: Handle },

    // --- 1-on-1 calls (mutual friends only) ------------------------------------------------
    /// Ring a mutual friend. Reply: `call` with the new call id.
    CallInvite { user: UserId },
    /// Accept a ringing call you were invited to. Reply: `ok`.
    CallAccept { call: CallId },
    /// Decline a ringing call you were invited to. Reply: `ok`.
    CallDecline { call: CallId },
    /// Withdraw a call you started that has not been answered. Reply: `ok`.
    CallCancel { call: CallId },
    /// End an accepted call. Reply: `ok`.
    CallHangup { call: CallId },

    // --- signalling --------------------------------------------------------------------------
    /// Forward `payload` to `to`, who must be the other party of an accepted call (`scope` =
    /// `{"call": id}`) or in the same voice channel as the sender (`{"channel": id}`).
    /// Reply: `ok` once forwarded; `to` gets a `signal` event.
    Signal {
        to: UserId,
        scope: SignalScope,
        payload: SignalPayload,
    },

    // --- servers -----------------------------------------------------------------------------
    /// Create a server; you become its owner. Reply: `server`.
    ServerCreate { name: Name },
    /// Servers you are a member of. Reply: `servers`.
    ServerList,
    /// One server in full. Reply: `server`.
    ServerInfo { server: ServerId },
    /// Rename (admin or owner). Reply: `ok`; members get `server_updated`.
    ServerRename { server: ServerId, name: Name },
    /// Delete (owner only). Reply: `ok`; members get `server_removed`.
    ServerDelete { server: ServerId },
    /// Leave a server you are a member of (the owner cannot leave; delete instead). Reply: `ok`.
    ServerLeave { server: ServerId },
    /// Remove a member (admins may remove members; the owner anyone). Reply: `ok`.
    MemberKick { server: ServerId, user: UserId },
    /// Make a member an admin or an admin a member (owner only). Reply: `ok`.
    MemberSetRole {
        server: ServerId,
        user: UserId,
        role: Role,
    },

    // --- invites -----------------------------------------------------------------------------
    /// Create an invite code (admin or owner). Reply: `invite`.
    InviteCreate {
        server: ServerId,
        /// `null` or absent: unlimited uses.
        #[serde(default)]
        max_uses: Option<u32>,
        /// `null` or absent: never expires.
        #[serde(default)]
        expires_in_secs: Option<u64>,
    },
    /// Join the server an invite code points at. Reply: `server`.
    InviteJoin { code: InviteCode },
    /// Revoke an invite code (admin or owner). Reply: `ok`.
    InviteRevoke { code: InviteCode },

    // --- voice channels ----------------------------------------------------------------------
    /// Create a voice channel (admin or owner). Reply: `channel`.
    ChannelCreate {
        server: ServerId,
        name: Name,
        /// Absent: the relay's default.
        #[serde(default)]
        max_participants: Option<u32>,
        /// Absent: everyone may do everything.
        #[serde(default)]
        permissions: Option<ChannelPermissions>,
    },
    /// Rename a channel (admin or owner). Reply: `ok`; members get `channel_updated`.
    ChannelRename { channel: ChannelId, name: Name },
    /// Change a channel's limit or permissions (admin or owner); absent fields stay.
    /// Reply: `ok`; members get `channel_updated`.
    ChannelConfigure {
        channel: ChannelId,
        #[serde(default)]
        max_participants: Option<u32>,
        #[serde(default)]
        permissions: Option<ChannelPermissions>,
        /// The channel's mesh limit: past this many members it moves to the SFU (0: always the
        /// SFU). It can only lower the relay's limit; the relay's limit or more clears it.
        #[serde(default)]
        mesh_limit: Option<u32>,
    },
    /// Delete a channel (admin or owner); anyone in it is removed. Reply: `ok`.
    ChannelDelete { channel: ChannelId },
    /// A server's channels with their rosters. Reply: `channels`.
    ChannelList { server: ServerId },
    /// Join a voice channel, leaving any other first. Reply: `joined` with the roster.
    ChannelJoin {
        channel: ChannelId,
        /// Initial voice state; absent: all false (muted is forced on without `speak`).
        #[serde(default)]
        voice: Option<VoiceState>,
    },
    /// Leave the voice channel you are in. Reply: `ok`.
    ChannelLeave,
    /// Update your voice state in the channel you are in. Reply: `ok`; members get
    /// `roster_update`.
    VoiceUpdate { voice: VoiceStatePatch },

    // --- live streams (docs/stream.md) ------------------------------------------------------
    /// Go live in a channel (needs the `stream` permission there). The relay is the stream's root
    /// seed and tracker (the streamer uploads each chunk once, `stream_mesh`); the streamer's
    /// account key signs every chunk. Reply: `stream`; every
    /// online member of the server gets `stream_started`.
    StreamStart {
        channel: ChannelId,
        title: Name,
        /// The stream's bitrate (one layer for now).
        bitrate: Bitrate,
        /// Nominal chunk duration, 100-500 ms.
        chunk_ms: u32,
        /// Unix milliseconds of the stream's media time 0; absent: now.
        #[serde(default)]
        started_ms: Option<u64>,
        /// Keep a recording on the relay (shown to viewers as `recording`); absent: no.
        #[serde(default)]
        record: bool,
        /// The layers published, best first (at most 4, distinct, each with a nonzero rate);
        /// absent: one layer, `high` at `bitrate`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        layers: Vec<StreamLayer>,
    },
    /// End your stream. Reply: `ok`; members get `stream_ended`.
    StreamEnd { stream: StreamId },
    /// The live streams in a server's channels. Reply: `streams`.
    StreamList { server: ServerId },
    /// Watch a stream (needs `join` in its channel), offering `relay` of your upload to relay it
    /// (absent: none). Reply: `stream`; the streamer gets `stream_viewer`.
    StreamJoin {
        stream: StreamId,
        #[serde(default)]
        relay: Option<Bitrate>,
        /// The layer to watch (absent: the best one). Joining again with another layer while
        /// watching switches layers (the viewer leaves that layer's swarm for the new one's).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        layer: Option<StreamLayerName>,
    },
    /// Stop watching. Reply: `ok`; the streamer gets `stream_viewer` with `joined: false`.
    StreamLeave { stream: StreamId },
    /// Forward mesh signalling to `to`, another member (streamer or viewer) of the same stream.
    /// Reply: `ok`; `to` gets `stream_signal`.
    StreamSignal {
        stream: StreamId,
        to: UserId,
        signal: MeshSignal,
    },
    /// A ticket for the relay's `/mesh` WebSocket, where the relay is the stream's root seed: the
    /// streamer uploads chunks there, a viewer fetches from the root there. Streamer or viewer of
    /// `stream` only. Reply: `mesh_ticket`.
    StreamMesh { stream: StreamId },
    /// The recordings kept in a server (members). Reply: `recordings`.
    RecordingList { server: ServerId },
    /// A ticket to fetch a recording's chunks from `/mesh` (needs `join` in its channel).
    /// Reply: `mesh_ticket`.
    RecordingOpen { recording: u64 },
    /// Delete your recording (its streamer only; not while live). Reply: `ok`.
    RecordingDelete { recording: u64 },
    /// Watch a recording in the on-demand mesh: its viewers fetch the whole range from each
    /// other, the relay's store as root (docs/stream.md, "Recordings"). Needs `join` in its
    /// channel. Reply: `recording_swarm` (a `/mesh` ticket to the store and up to 8 other viewers
    /// now in the swarm, to offer links to). Until `recording_leave` or the session ends.
    RecordingJoin { recording: u64 },
    /// Leave a recording's swarm. Reply: `ok`.
    RecordingLeave { recording: u64 },
    /// Forward mesh signalling (`offer`, `answer`, `bye`) to `to`, another viewer in the same
    /// recording's swarm. Reply: `ok`; `to` gets `recording_signal`.
    RecordingSignal {
        recording: u64,
        to: UserId,
        signal: MeshSignal,
    },

    // --- SFU (voice channels in mode `sfu`) ------------------------------------------------
    /// Connect to the SFU for the voice channel you are in (its mode must be `sfu`), with an
    /// SDP offer carrying your own tracks (send-only or send-receive Opus). Reply: `sdp` with
    /// the SFU's answer. Others' tracks follow in `sfu_offer` events.
    SfuJoin { channel: ChannelId, sdp: String },
    /// Your answer to the last `sfu_offer` event. Reply: `ok`.
    SfuAnswer { sdp: String },
    /// Renegotiate your own tracks with the SFU (e.g. add a camera). Reply: `sdp` with the
    /// answer; `invalid_state` while an `sfu_offer` waits for your answer (answer it, retry).
    SfuOffer { sdp: String },
    /// Disconnect from the SFU but stay in the channel (it went back to mesh). Reply: `ok`.
    /// Leaving the channel does this by itself.
    SfuLeave,
    /// Which simulcast layer of `user`'s video you want from the SFU: `high` (the spotlight: the
    /// best layer your bandwidth allows), `medium` (at most the middle layer), `low` (a
    /// thumbnail), `off` (none: hidden), `auto` (the default: the dominant speaker high,
    /// others low). The SFU still caps by its bandwidth estimate for you, and switches at the
    /// next keyframe. Kept for cameras `user` publishes later. Reply: `ok`.
    SfuQuality { user: UserId, quality: VideoQuality },

    // --- moderation --------------------------------------------------------------------------
    /// Ban `user` from `server`: removed if a member (as `member_kick`, same role rules: admins
    /// ban members, the owner anyone but itself) and unable to join again by invite until
    /// unbanned. `user` need not be a member or even have an account. Reply: `ok`.
    MemberBan { server: ServerId, user: UserId },
    /// Lift a ban (admin or owner). Reply: `ok`.
    MemberUnban { server: ServerId, user: UserId },
    /// Who is banned from `server` (admin or owner). Reply: `bans`.
    BanList { server: ServerId },

    // --- media relaying ------------------------------------------------------------------------
    /// Fresh TURN credentials (those in `welcome` expire). Reply: `turn`; `not_found` when the
    /// relay has no TURN server.
    TurnCredentials,

    // --- lazy subscriptions (big servers) -------------------------------------------------------
    /// The servers this session is looking at. Member changes (`member_joined`, `member_left`,
    /// `member_updated`) and voice activity (`roster_join`, `roster_leave`, `roster_update`,
    /// `channel_mode`) then come only for these servers, plus those of the channel you are in.
    /// Each `subscribe` replaces the last list; `[]` watches nothing. A session that never sends
    /// it gets everything (what clients before it expect). After it, a `server` in a reply holds
    /// at most the first 100 members (`member_count` says how many there are; page with
    /// `member_list`) and channel rosters only for subscribed servers. Reply: `ok`; `not_found`
    /// for a server you are not a member of (nothing changes).
    Subscribe { servers: Vec<ServerId> },
    /// A page of `server`'s members in user-id order, after `after` (absent: the first page);
    /// `limit` 1-1000, default 100. Reply: `members`.
    MemberList {
        server: ServerId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<UserId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },

    // --- client updates ------------------------------------------------------------------------
    /// The newest desktop-client release the relay's operator announces (`--client-release`).
    /// Reply: `client_release`, whose `release` is absent when the relay announces none. The
    /// client compares it with its own version and tells the user; it never replaces itself.
    ClientRelease,
}

impl Request {
    /// The `type` string of this request, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::Login { .. } => "login",
            Request::Ping => "ping",
            Request::SetProfile { .. } => "set_profile",
            Request::FriendRequest { .. } => "friend_request",
            Request::FriendAccept { .. } => "friend_accept",
            Request::FriendDecline { .. } => "friend_decline",
            Request::FriendRemove { .. } => "friend_remove",
            Request::FriendList => "friend_list",
            Request::HandleSet { .. } => "handle_set",
            Request::HandleGet { .. } => "handle_get",
            Request::HandleLookup { .. } => "handle_lookup",
            Request::ClientRelease => "client_release",
            Request::CallInvite { .. } => "call_invite",
            Request::CallAccept { .. } => "call_accept",
            Request::CallDecline { .. } => "call_decline",
            Request::CallCancel { .. } => "call_cancel",
            Request::CallHangup { .. } => "call_hangup",
            Request::Signal { .. } => "signal",
            Request::ServerCreate { .. } => "server_create",
            Request::ServerList => "server_list",
            Request::ServerInfo { .. } => "server_info",
            Request::ServerRename { .. } => "server_rename",
            Request::ServerDelete { .. } => "server_delete",
            Request::ServerLeave { .. } => "server_leave",
            Request::MemberKick { .. } => "member_kick",
            Request::MemberSetRole { .. } => "member_set_role",
            Request::InviteCreate { .. } => "invite_create",
            Request::InviteJoin { .. } => "invite_join",
            Request::InviteRevoke { .. } => "invite_revoke",
            Request::ChannelCreate { .. } => "channel_create",
            Request::ChannelRename { .. } => "channel_rename",
            Request::ChannelConfigure { .. } => "channel_configure",
            Request::ChannelDelete { .. } => "channel_delete",
            Request::ChannelList { .. } => "channel_list",
            Request::ChannelJoin { .. } => "channel_join",
            Request::ChannelLeave => "channel_leave",
            Request::VoiceUpdate { .. } => "voice_update",
            Request::StreamStart { .. } => "stream_start",
            Request::StreamEnd { .. } => "stream_end",
            Request::StreamList { .. } => "stream_list",
            Request::StreamJoin { .. } => "stream_join",
            Request::StreamLeave { .. } => "stream_leave",
            Request::StreamSignal { .. } => "stream_signal",
            Request::StreamMesh { .. } => "stream_mesh",
            Request::RecordingList { .. } => "recording_list",
            Request::RecordingOpen { .. } => "recording_open",
            Request::RecordingDelete { .. } => "recording_delete",
            Request::RecordingJoin { .. } => "recording_join",
            Request::RecordingLeave { .. } => "recording_leave",
            Request::RecordingSignal { .. } => "recording_signal",
            Request::SfuJoin { .. } => "sfu_join",
            Request::SfuAnswer { .. } => "sfu_answer",
            Request::SfuOffer { .. } => "sfu_offer",
            Request::SfuLeave => "sfu_leave",
            Request::SfuQuality { .. } => "sfu_quality",
            Request::MemberBan { .. } => "member_ban",
            Request::MemberUnban { .. } => "member_unban",
            Request::BanList { .. } => "ban_list",
            Request::TurnCredentials => "turn_credentials",
            Request::Subscribe { .. } => "subscribe",
            Request::MemberList { .. } => "member_list",
        }
    }
}

/// Every request `type`, in declaration order (for docs, tests and metrics labels).
pub const REQUEST_TYPES: &[&str] = &[
    "hello",
    "login",
    "ping",
    "set_profile",
    "friend_request",
    "friend_accept",
    "friend_decline",
    "friend_remove",
    "friend_list",
    "handle_set",
    "handle_get",
    "handle_lookup",
    "call_invite",
    "call_accept",
    "call_decline",
    "call_cancel",
    "call_hangup",
    "signal",
    "server_create",
    "server_list",
    "server_info",
    "server_rename",
    "server_delete",
    "server_leave",
    "member_kick",
    "member_set_role",
    "invite_create",
    "invite_join",
    "invite_revoke",
    "channel_create",
    "channel_rename",
    "channel_configure",
    "channel_delete",
    "channel_list",
    "channel_join",
    "channel_leave",
    "voice_update",
    "stream_start",
    "stream_end",
    "stream_list",
    "stream_join",
    "stream_leave",
    "stream_signal",
    "stream_mesh",
    "recording_list",
    "recording_open",
    "recording_delete",
    "recording_join",
    "recording_leave",
    "recording_signal",
    "sfu_join",
    "sfu_answer",
    "sfu_offer",
    "sfu_leave",
    "sfu_quality",
    "member_ban",
    "member_unban",
    "ban_list",
    "turn_credentials",
    "subscribe",
    "member_list",
    "client_release",
];

/// What a subscriber wants of one member's video on the SFU (`sfu_quality`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VideoQuality {
    /// The SFU decides: the dominant speaker high, everyone else low.
    #[default]
    Auto,
    High,
    Medium,
    Low,
    /// Not shown: nothing is forwarded.
    Off,
}
