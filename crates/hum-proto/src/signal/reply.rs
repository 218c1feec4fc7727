//! Relay → client: replies to requests, typed errors, and pushed events.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::StreamId;
use crate::ids::{CallId, ChannelId, Nonce, RequestId, ServerId, UserId};
use crate::signal::error::{ErrorCode, ProtoError};
use crate::signal::model::{
    ChannelInfo, Friend, Handle, InviteInfo, Limits, Member, Name, Permissions, Presence,
    ReleaseInfo, RosterEntry, ServerInfo, ServerSummary, TurnServer, UserSummary, VoiceState,
    VoiceTopology,
};
use crate::signal::request::{SignalPayload, SignalScope};
use crate::signal::stream::{MeshSignal, RecordingInfo, StreamInfo};
use crate::units::Bitrate;

/// One frame from the relay. `type` is `reply`, `error` or `event`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The answer to request `re`.
    Reply { re: RequestId, reply: Reply },
    /// Request `re` failed. `re` is `null` when the frame had no readable `id` (or the error is
    /// about the connection, e.g. just before the relay closes it).
    Error {
        re: Option<RequestId>,
        code: ErrorCode,
        message: String,
    },
    /// Something happened that this client should know about.
    Event { event: Event },
}

impl ServerMessage {
    pub fn reply(re: RequestId, reply: Reply) -> Self {
        ServerMessage::Reply { re, reply }
    }
    pub fn error(re: Option<RequestId>, err: ProtoError) -> Self {
        ServerMessage::Error {
            re,
            code: err.code,
            message: err.message,
        }
    }
    pub fn event(event: Event) -> Self {
        ServerMessage::Event { event }
    }
}

/// A successful answer. Which variant answers which request is listed on each
/// [`crate::signal::Request`] variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// To `hello`: sign `"hum-relay-login-v1\0"` followed by the 32 `nonce` bytes, then send
    /// `login`.
    Challenge {
        /// The protocol version the relay speaks.
        protocol: u32,
        nonce: Nonce,
        /// The relay software and version, for logs.
        relay: String,
    },
    /// To `login`: the session is open.
    Welcome {
        user: UserSummary,
        /// True the first time this key logged in.
        new_account: bool,
        limits: Limits,
        /// TURN credentials for relaying media, when the relay has a TURN server
        /// (`--turn-url`, `--turn-secret`). Absent otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        turn: Option<TurnServer>,
    },
    /// Done; nothing to return.
    Ok,
    /// To `ping`.
    Pong,
    /// To `friend_list`.
    Friends {
        /// Mutual friends with their presence.
        friends: Vec<Friend>,
        /// Users who asked you and are waiting for your answer.
        incoming: Vec<UserSummary>,
        /// Users you asked who have not answered.
        outgoing: Vec<UserSummary>,
    },
    /// To `handle_set`, `handle_get` and `handle_lookup`: a user and their handle (`null`: none).
    Handle {
        user: UserSummary,
        handle: Option<Handle>,
    },
    /// To `call_invite`: the new call, now ringing.
    Call { call: CallId },
    /// To `server_create`, `server_info`, `invite_join`.
    Server { server: ServerInfo },
    /// To `server_list`.
    Servers { servers: Vec<ServerSummary> },
    /// To `invite_create`.
    Invite { invite: InviteInfo },
    /// To `channel_create`.
    Channel { channel: ChannelInfo },
    /// To `channel_list`.
    Channels {
        server: ServerId,
        channels: Vec<ChannelInfo>,
    },
    /// To `channel_join`: the channel with its roster (you are the last entry) and what you may do
    /// in it. Send offers to everyone else on the roster.
    Joined {
        channel: ChannelInfo,
        permissions: Permissions,
        /// How the channel carries audio now: `mesh` (send offers to the others) or `sfu`
        /// (send `sfu_join`). Absent from older relays: `mesh`.
        #[serde(default)]
        mode: VoiceTopology,
    },
    /// To `ban_list`: the users banned from `server` (those without an account show as
    /// `user-` and the first 8 hex digits of their key).
    Bans {
        server: ServerId,
        users: Vec<UserSummary>,
    },
    /// To `stream_start` and `stream_join`.
    Stream { stream: StreamInfo },
    /// To `stream_list`.
    Streams { streams: Vec<StreamInfo> },
    /// To `stream_mesh` and `recording_open`: connect to `ws://RELAY/mesh?ticket=TICKET`.
    MeshTicket { ticket: String },
    /// To `recording_list`.
    Recordings { recordings: Vec<RecordingInfo> },
    /// To `recording_join`: connect to `ws://RELAY/mesh?ticket=TICKET` (the relay's store) and
    /// offer links to `peers` (other viewers of the recording now).
    RecordingSwarm { ticket: String, peers: Vec<UserId> },
    /// To `sfu_join` and `sfu_offer`: the SFU's SDP answer.
    Sdp { sdp: String },
    /// To `turn_credentials`: fresh TURN credentials.
    Turn { turn: TurnServer },
    /// To `member_list`: one page of members; `next` is the `after` of the next page (absent:
    /// this was the last).
    Members {
        server: ServerId,
        members: Vec<Member>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<UserId>,
    },
    /// To `client_release`: the newest client release the relay announces, if any.
    ClientRelease {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        release: Option<ReleaseInfo>,
    },
}

/// Why a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallEndReason {
    /// The callee declined.
    Declined,
    /// The caller withdrew before it was answered.
    Cancelled,
    /// One side hung up.
    HungUp,
    /// One side's connection closed or timed out.
    Disconnected,
    /// Nobody answered in time.
    Timeout,
}

/// Why a server disappeared from your list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServerRemovedReason {
    /// The owner deleted it.
    Deleted,
    /// An admin or the owner removed you.
    Kicked,
    /// You left (sent to your other sessions; reserved).
    Left,
}

/// Why someone left a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberLeftReason {
    Left,
    Kicked,
}

/// Why someone left a voice channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RosterLeaveReason {
    /// They sent `channel_leave` or joined another channel.
    Left,
    /// Their connection closed or timed out.
    Disconnected,
    /// They lost the `join` permission, or were removed from the server.
    Removed,
    /// The channel was deleted.
    Deleted,
}

/// Pushed by the relay without a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    // --- friends and presence ------------------------------------------------------------------
    /// A friend's presence changed (online/offline, voice channel, in a call).
    Presence {
        user: UserId,
        presence: Presence,
    },
    /// A friend or co-member changed their display name.
    UserUpdated {
        user: UserSummary,
    },
    /// Someone asked to be your friend.
    FriendRequestReceived {
        from: UserSummary,
    },
    /// A friendship now exists (your request was accepted, or you accepted, or both asked).
    FriendAdded {
        friend: Friend,
    },
    /// Your request to `user` was declined.
    FriendDeclined {
        user: UserId,
    },
    /// `user` ended the friendship or withdrew their pending request to you.
    FriendRemoved {
        user: UserId,
    },

    // --- calls ---------------------------------------------------------------------------------
    /// A friend is calling you: answer with `call_accept` or `call_decline`.
    CallIncoming {
        call: CallId,
        from: UserSummary,
    },
    /// The callee accepted: the caller now sends the SDP offer (scope `{"call": id}`).
    CallAccepted {
        call: CallId,
        by: UserId,
    },
    /// The call is over, for the reason given.
    CallEnded {
        call: CallId,
        reason: CallEndReason,
    },

    // --- signalling ----------------------------------------------------------------------------
    /// Forwarded from a peer; `from` is filled in by the relay and can be trusted.
    Signal {
        from: UserId,
        scope: SignalScope,
        payload: SignalPayload,
    },

    // --- servers -------------------------------------------------------------------------------
    /// The server was renamed.
    ServerUpdated {
        server: ServerId,
        name: Name,
    },
    /// You are no longer a member of `server`.
    ServerRemoved {
        server: ServerId,
        reason: ServerRemovedReason,
    },
    /// Someone joined a server you are in.
    MemberJoined {
        server: ServerId,
        member: Member,
    },
    /// Someone left a server you are in.
    MemberLeft {
        server: ServerId,
        user: UserId,
        reason: MemberLeftReason,
    },
    /// A member's role changed.
    MemberUpdated {
        server: ServerId,
        member: Member,
    },

    // --- voice channels ------------------------------------------------------------------------
    ChannelCreated {
        channel: ChannelInfo,
    },
    /// Renamed or reconfigured.
    ChannelUpdated {
        channel: ChannelInfo,
    },
    /// Deleted; anyone in it was removed (they also get `roster_leave` with reason `deleted`).
    ChannelDeleted {
        server: ServerId,
        channel: ChannelId,
    },
    /// Someone joined a voice channel of a server you are in.
    RosterJoin {
        server: ServerId,
        channel: ChannelId,
        entry: RosterEntry,
    },
    /// Someone left a voice channel of a server you are in.
    RosterLeave {
        server: ServerId,
        channel: ChannelId,
        user: UserId,
        reason: RosterLeaveReason,
    },
    /// Someone's voice state changed.
    RosterUpdate {
        server: ServerId,
        channel: ChannelId,
        user: UserId,
        voice: VoiceState,
    },
    /// To you alone: what you may do in the voice channel you are in changed (an admin edited
    /// the channel's permissions or your role). On joining they come in `joined`. Without
    /// `speak` the relay keeps you muted: stop sending audio; when it comes back you stay muted
    /// until you unmute. Without `video`, turn your camera off.
    VoicePermissions {
        server: ServerId,
        channel: ChannelId,
        permissions: Permissions,
    },

    // --- session -------------------------------------------------------------------------------
    /// The same key logged in on another connection; the relay closes this one next.
    SessionReplaced,
    /// The relay cluster's live nodes (docs/cluster.md), this one included, by id: sent right
    /// after `welcome` and again whenever a node comes or goes. When this node is lost, log in
    /// at another one's `ws_url` (and re-join your channel). A single relay (no cluster) never
    /// sends it. At most 64 nodes.
    Nodes {
        nodes: Vec<crate::cluster::NodeInfo>,
    },

    // --- live streams ---------------------------------------------------------------------------
    /// A stream went live in a channel of a server you are in.
    StreamStarted {
        stream: StreamInfo,
    },
    /// A stream ended (its streamer ended it or went offline); sent to the server's members.
    StreamEnded {
        stream: StreamId,
        server: ServerId,
        channel: ChannelId,
    },
    /// To the streamer: `user` started (`joined`) or stopped watching, offering `relay` upload.
    StreamViewer {
        stream: StreamId,
        user: UserId,
        relay: Bitrate,
        joined: bool,
    },
    /// Mesh signalling from another member of a stream.
    StreamSignal {
        stream: StreamId,
        from: UserId,
        signal: MeshSignal,
    },
    /// Mesh signalling from another viewer of a recording (`recording_signal`).
    RecordingSignal {
        recording: u64,
        from: UserId,
        signal: MeshSignal,
    },

    // --- SFU ----------------------------------------------------------------------------------
    /// A voice channel of a server you are in switched between `mesh` and `sfu` (also sent to
    /// you alone right after you join a channel). Members move: to `sfu`, send `sfu_join`; to
    /// `mesh`, send `sfu_leave` and offers as in a mesh.
    ChannelMode {
        server: ServerId,
        channel: ChannelId,
        mode: VoiceTopology,
    },
    /// The SFU offers you other members' tracks (one send-only m-line per track, `msid` = the
    /// owner's user id). Answer with `sfu_answer`.
    SfuOffer {
        channel: ChannelId,
        sdp: String,
    },
    /// The dominant speaker of an SFU channel changed (sent to the channel's members).
    SfuSpeaker {
        server: ServerId,
        channel: ChannelId,
        user: UserId,
    },
    /// To a publisher on the SFU: the simulcast layers (RIDs, low to high) of its track
    /// `track` (its own track id, the `msid`) that some subscriber wants now. Encode these,
    /// pause the others (resuming one starts with a keyframe). Before the first, every layer.
    SfuLayers {
        channel: ChannelId,
        track: String,
        rids: Vec<String>,
    },
    /// To a subscriber on the SFU: `user`'s video `track` (the forwarded track id, as in the
    /// SFU's offer: `t<n>` for a camera, `screen-t<n>` for a screen share) is paused for me
    /// because my connection does not carry it (`paused: true`; the speaker's is never paused
    /// this way), or flows again (`false`). Show the tile as paused, not frozen.
    SfuPaused {
        channel: ChannelId,
        user: UserId,
        track: String,
        paused: bool,
    },
}

impl Event {
    /// The `type` string of this event, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Presence { .. } => "presence",
            Event::UserUpdated { .. } => "user_updated",
            Event::FriendRequestReceived { .. } => "friend_request_received",
            Event::FriendAdded { .. } => "friend_added",
            Event::FriendDeclined { .. } => "friend_declined",
            Event::FriendRemoved { .. } => "friend_removed",
            Event::CallIncoming { .. } => "call_incoming",
            Event::CallAccepted { .. } => "call_accepted",
            Event::CallEnded { .. } => "call_ended",
            Event::Signal { .. } => "signal",
            Event::ServerUpdated { .. } => "server_updated",
            Event::ServerRemoved { .. } => "server_removed",
            Event::MemberJoined { .. } => "member_joined",
            Event::MemberLeft { .. } => "member_left",
            Event::MemberUpdated { .. } => "member_updated",
            Event::ChannelCreated { .. } => "channel_created",
            Event::ChannelUpdated { .. } => "channel_updated",
            Event::ChannelDeleted { .. } => "channel_deleted",
            Event::RosterJoin { .. } => "roster_join",
            Event::RosterLeave { .. } => "roster_leave",
            Event::RosterUpdate { .. } => "roster_update",
            Event::VoicePermissions { .. } => "voice_permissions",
            Event::SessionReplaced => "session_replaced",
            Event::Nodes { .. } => "nodes",
            Event::StreamStarted { .. } => "stream_started",
            Event::StreamEnded { .. } => "stream_ended",
            Event::StreamViewer { .. } => "stream_viewer",
            Event::StreamSignal { .. } => "stream_signal",
            Event::RecordingSignal { .. } => "recording_signal",
            Event::ChannelMode { .. } => "channel_mode",
            Event::SfuOffer { .. } => "sfu_offer",
            Event::SfuSpeaker { .. } => "sfu_speaker",
            Event::SfuLayers { .. } => "sfu_layers",
            Event::SfuPaused { .. } => "sfu_paused",
        }
    }
}
