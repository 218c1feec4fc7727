//! Servers and their voice channels: list with rosters, create, join, leave, mute and deafen.
//!
//! The views are shaped for the sidebar (ids as numbers, users as hex keys, voice flags flat);
//! the data is the relay's, fetched through hum-engine's `RelayClient`.

use hum_engine::ClientError;
use hum_engine::voice::VoiceEvent;
use hum_engine::voice::link::VoiceLink;
use hum_proto::signal::{
    ChannelInfo, ChannelPermissions, ErrorCode as RelayCode, Name, Permissions, ServerInfo,
    VoiceStatePatch,
};
use hum_proto::{ChannelId, ServerId};
use serde::{Deserialize, Serialize};
use specta::Type;
use tauri::{AppHandle, Manager, State};
use tauri_specta::Event;

use super::connection::client_error;
use crate::channels::PeerStatsView;
use crate::error::{CmdResult, CommandError, ErrorCode};
use crate::state::AppState;

#[derive(Clone, Debug, PartialEq, Serialize, Type)]
pub struct MemberVoice {
    /// Public key, hex.
    pub user_id: String,
    pub display_name: String,
    pub muted: bool,
    pub deafened: bool,
    pub speaking: bool,
}

/// What one role may do in a channel (the relay's `Permissions`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct RolePermissions {
    pub join: bool,
    /// Without it the relay keeps the member muted.
    pub speak: bool,
    pub video: bool,
    pub stream: bool,
}

/// Per-role permissions of a channel; the owner may always do everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct ChannelPermissionsView {
    pub member: RolePermissions,
    pub admin: RolePermissions,
}

impl From<Permissions> for RolePermissions {
    fn from(p: Permissions) -> Self {
        Self {
            join: p.join,
            speak: p.speak,
            video: p.video,
            stream: p.stream,
        }
    }
}

impl From<RolePermissions> for Permissions {
    fn from(p: RolePermissions) -> Self {
        Self {
            join: p.join,
            speak: p.speak,
            video: p.video,
            stream: p.stream,
        }
    }
}

/// The most participants a channel may have (the relay's `max_channel_size` default).
pub const MAX_CHANNEL_SIZE: u32 = 1000;

/// How a channel carries audio now (the relay's `VoiceTopology`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Type)]
#[serde(rename_all = "snake_case")]
pub enum VoiceMode {
    /// Everyone connects to everyone (small channels).
    #[default]
    Mesh,
    /// Everyone connects once to the relay's SFU (past the mesh limit).
    Sfu,
}

/// What the relay announces about channels' voice that `channel_list` does not carry: the mode
/// (`channel_mode`, to every member of the server), the SFU's dominant speaker (`sfu_speaker`)
/// and the videos the SFU paused for my link (`sfu_paused`, to me alone). Forgotten when the
/// connection drops (the relay re-announces on join).
#[derive(Debug, Default)]
pub struct VoiceRooms(std::sync::Mutex<std::collections::BTreeMap<u64, RoomLive>>);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct RoomLive {
    mode: VoiceMode,
    speaker: Option<hum_proto::UserId>,
    /// (owner, screen share) of each video paused for my link.
    paused: std::collections::BTreeSet<(hum_proto::UserId, bool)>,
}

impl VoiceRooms {
    /// Takes what a relay event says; whether a channel's view changed.
    pub fn observe(&self, ev: &hum_engine::ClientEvent) -> bool {
        use hum_engine::ClientEvent;
        use hum_proto::signal::{Event, VoiceTopology};
        let Ok(mut rooms) = self.0.lock() else {
            return false;
        };
        let (channel, next) = match ev {
            ClientEvent::State(_) => {
                let changed = !rooms.is_empty();
                rooms.clear();
                return changed;
            }
            ClientEvent::Relay(Event::ChannelMode { channel, mode, .. }) => {
                let mode = match mode {
                    VoiceTopology::Mesh => VoiceMode::Mesh,
                    VoiceTopology::Sfu => VoiceMode::Sfu,
                };
                let old = rooms.get(&channel.0).cloned().unwrap_or_default();
                // A mesh has no dominant speaker of the SFU's, and pauses nothing.
                let next = if mode == VoiceMode::Sfu {
                    RoomLive { mode, ..old }
                } else {
                    RoomLive {
                        mode,
                        ..Default::default()
                    }
                };
                (channel.0, next)
            }
            // Only an SFU channel has a dominant speaker.
            ClientEvent::Relay(Event::SfuSpeaker { channel, user, .. }) => {
                let old = rooms.get(&channel.0).cloned().unwrap_or_default();
                (
                    channel.0,
                    RoomLive {
                        mode: VoiceMode::Sfu,
                        speaker: Some(*user),
                        ..old
                    },
                )
            }
            ClientEvent::Relay(Event::SfuPaused {
                channel,
                user,
                track,
                paused,
            }) => {
                let mut next = rooms.get(&channel.0).cloned().unwrap_or_default();
                next.mode = VoiceMode::Sfu;
                let key = (*user, track.starts_with("screen"));
                if *paused {
                    next.paused.insert(key);
                } else {
                    next.paused.remove(&key);
                }
                (channel.0, next)
            }
            ClientEvent::Relay(Event::ChannelDeleted { channel, .. }) => {
                return rooms.remove(&channel.0).is_some();
            }
            _ => return false,
        };
        let fresh = next == RoomLive::default();
        let old = rooms.insert(channel, next.clone());
        old != Some(next) && !(old.is_none() && fresh)
    }

    /// Forgets every video paused for me (I left the channel: my subscriptions on the SFU went
    /// with me, and the SFU says nothing more of them).
    pub fn forget_paused(&self) {
        if let Ok(mut rooms) = self.0.lock() {
            for r in rooms.values_mut() {
                r.paused.clear();
            }
        }
    }

    /// Fills in the mode, speaker and paused videos of a channel's view.
    pub fn apply(&self, view: &mut ChannelView) {
        if let Some(r) = self.0.lock().ok().and_then(|m| m.get(&view.id).cloned()) {
            view.mode = r.mode;
            view.speaker = r.speaker.map(|u| u.to_string());
            view.paused_videos = r
                .paused
                .iter()
                .map(|(user, screen)| PausedVideo {
                    user_id: user.to_string(),
                    screen: *screen,
                })
                .collect();
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Type)]
pub struct ChannelView {
    pub id: u64,
    pub name: String,
    pub max_participants: u32,
    pub permissions: ChannelPermissionsView,
    /// Who is in it now, in join order.
    pub roster: Vec<MemberVoice>,
    /// Mesh or SFU, as the relay last announced (mesh until it says otherwise).
    pub mode: VoiceMode,
    /// An admin's mesh limit: past this many members the channel moves to the SFU (0: always
    /// the SFU). Null: the relay's own limit.
    pub mesh_limit: Option<u32>,
    /// On the SFU: the dominant speaker (public key, hex), the one the stage spotlights.
    pub speaker: Option<String>,
    /// On the SFU: the videos paused for me because my connection does not carry them (the
    /// SFU resumes them when it does). Their tiles say so instead of freezing.
    pub paused_videos: Vec<PausedVideo>,
}

/// A member's camera (or screen share) the SFU paused for my link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Type)]
pub struct PausedVideo {
    pub user_id: String,
    /// The screen share, not the camera.
    pub screen: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Type)]
pub struct ServerView {
    pub id: u64,
    pub name: String,
    /// `member`, `admin` or `owner`: admins and owners may create channels.
    pub role: String,
    /// Empty while `hidden`.
    pub channels: Vec<ChannelView>,
    /// True: not on screen, so its channels were not fetched (`servers_watch` it to see
    /// them). Absent: `channels` is every channel.
    #[specta(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden: Option<bool>,
}

/// Where I am in voice.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Type)]
pub struct MyVoice {
    pub channel: Option<u64>,
    pub muted: bool,
    pub deafened: bool,
    /// Muted because the channel's permissions do not let me speak (not by me): unmuting is
    /// refused and nothing is sent. When `speak` comes back I stay muted until I unmute.
    pub muted_by_channel: bool,
    /// Set when audio runs degraded (no microphone or speaker): what the user should know.
    pub audio_notice: Option<String>,
}

/// Something about the call's audio the user should see (device lost, negotiation failed...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Type, Event)]
pub struct AudioNotice {
    pub message: String,
}

/// I started or stopped speaking (voice activity or push-to-talk), for my own indicator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type, Event)]
pub struct SelfSpeaking {
    pub speaking: bool,
}

/// Leaves the voice channel's audio, if any (a call's session is not touched).
pub(crate) async fn leave_voice(state: &AppState) -> bool {
    let link = state.link.lock().await.take();
    match link {
        Some(link) => {
            stop_link(state, link).await;
            true
        }
        None => false,
    }
}

async fn stop_link(state: &AppState, link: VoiceLink) {
    // What the SFU paused for me was about my subscriptions there, which end here.
    state.rooms.forget_paused();
    state.privacy.stop();
    state.set_session(None);
    state.level_follower.stop(&state.levels);
    // Before the session stops: its capture thread waits on my camera's frames.
    super::video::stop_call_video(state);
    link.leave().await;
}

/// The channel the relay took me (`me`) out of without my asking, and what to tell me: removed
/// from the server (kicked, banned) or no longer allowed to join, or the channel or its server
/// deleted. A leave I asked for, or a dropped connection (hum-engine re-joins), is not one.
pub fn removal_notice(
    ev: &hum_engine::ClientEvent,
    me: hum_proto::UserId,
) -> Option<(ChannelId, &'static str)> {
    use hum_proto::signal::{Event, RosterLeaveReason};
    match ev {
        hum_engine::ClientEvent::Relay(Event::RosterLeave {
            channel,
            user,
            reason,
            ..
        }) if *user == me => match reason {
            RosterLeaveReason::Removed => Some((
                *channel,
                "You were taken out of the voice channel: you were removed from the server, or \
                 may no longer join this channel.",
            )),
            RosterLeaveReason::Deleted => Some((
                *channel,
                "The voice channel you were in was deleted (or its whole server).",
            )),
            RosterLeaveReason::Left | RosterLeaveReason::Disconnected => None,
        },
        _ => None,
    }
}

/// Stops my voice link if the relay took me out of `channel` (see [`removal_notice`]), so the
/// app no longer shows me in a channel I am not in; says why.
pub async fn taken_out_of_voice(app: &AppHandle, channel: ChannelId, message: &str) {
    let state = app.state::<AppState>();
    let link = {
        let mut slot = state.link.lock().await;
        match slot.as_ref() {
            // Not the link I have now (a later join): nothing to stop.
            Some(l) if l.channel() == channel => slot.take(),
            _ => None,
        }
    };
    let Some(link) = link else {
        return;
    };
    stop_link(&state, link).await;
    if let Ok(me) = state.my_voice() {
        let _ = state.set_my_voice(MyVoice {
            channel: None,
            audio_notice: Some(message.to_owned()),
            muted_by_channel: false,
            ..me
        });
    }
    let _ = AudioNotice {
        message: message.to_owned(),
    }
    .emit(app);
    let _ = super::connection::ServersChanged.emit(app);
}

/// Stops my voice link first if it is in one of `server`'s channels (leaving or deleting it).
async fn leave_voice_in(state: &AppState, relay: &hum_engine::RelayClient, server: ServerId) {
    let here = state.link.lock().await.as_ref().map(|l| l.channel());
    let Some(here) = here else {
        return;
    };
    if let Ok(channels) = relay.channels(server).await
        && channels.iter().any(|c| c.id == here)
        && leave_voice(state).await
        && let Ok(me) = state.my_voice()
    {
        let _ = state.set_my_voice(MyVoice {
            channel: None,
            audio_notice: None,
            muted_by_channel: false,
            ..me
        });
    }
}

pub fn channel_view(c: &ChannelInfo) -> ChannelView {
    ChannelView {
        id: c.id.0,
        name: c.name.to_string(),
        max_participants: c.max_participants,
        permissions: ChannelPermissionsView {
            member: c.permissions.member.into(),
            admin: c.permissions.admin.into(),
        },
        roster: c
            .roster
            .iter()
            .map(|e| MemberVoice {
                user_id: e.user.id.to_string(),
                display_name: e.user.display_name.to_string(),
                muted: e.voice.muted,
                deafened: e.voice.deafened,
                speaking: e.voice.speaking,
            })
            .collect(),
        // As `channel_list` says; the relay's later `channel_mode` events win (VoiceRooms).
        mode: match c.mode {
            hum_proto::signal::VoiceTopology::Mesh => VoiceMode::Mesh,
            hum_proto::signal::VoiceTopology::Sfu => VoiceMode::Sfu,
        },
        mesh_limit: c.mesh_limit,
        speaker: None,
        paused_videos: Vec::new(),
    }
}

pub fn server_view(s: &ServerInfo) -> ServerView {
    ServerView {
        id: s.id.0,
        name: s.name.to_string(),
        role: s.role.as_str().into(),
        channels: s.channels.iter().map(channel_view).collect(),
        hidden: (!s.has_every_channel()).then_some(true),
    }
}

fn name(kind: &str, s: &str) -> CmdResult<Name> {
    Name::new(s.trim()).map_err(|e| CommandError::invalid(format!("{kind} {e}.")))
}

/// My servers: those on screen (`servers_watch`) and the one of my voice channel with their
/// channels and who is in each, the others by name (`hidden`). Before any `servers_watch`,
/// all of them in full.
#[tauri::command]
#[specta::specta]
pub async fn servers_list(state: State<'_, AppState>) -> CmdResult<Vec<ServerView>> {
    let relay = state.relay()?;
    let voice = state.link.lock().await.as_ref().map(VoiceLink::server);
    let mut out = Vec::new();
    for entry in relay.servers_shown(voice).await.map_err(client_error)? {
        out.push(match entry {
            hum_engine::ServerEntry::Shown(info) => {
                let mut view = server_view(&info);
                for c in &mut view.channels {
                    state.rooms.apply(c);
                }
                view
            }
            hum_engine::ServerEntry::Listed(s) => ServerView {
                id: s.id.0,
                name: s.name.to_string(),
                role: s.role.as_str().into(),
                channels: Vec::new(),
                hidden: Some(true),
            },
        });
    }
    Ok(out)
}

/// The server on screen (null: none): the relay then sends member and voice changes only for
/// it and my own channel (docs/protocol.md "subscribe"), and `servers_list` fetches only it
/// (and my voice channel's server) in full. Kept across reconnects.
#[tauri::command]
#[specta::specta]
pub async fn servers_watch(state: State<'_, AppState>, server: Option<u64>) -> CmdResult<()> {
    state
        .relay()?
        .watch_servers(server.map(ServerId).into_iter().collect())
        .await
        .map_err(client_error)
}

#[tauri::command]
#[specta::specta]
pub async fn server_create(state: State<'_, AppState>, name_text: String) -> CmdResult<ServerView> {
    let relay = state.relay()?;
    let info = relay
        .server_create(name("Server name:", &name_text)?)
        .await
        .map_err(client_error)?;
    Ok(server_view(&info))
}

/// The relay's refusals of renaming, deleting or leaving a server, in words.
fn server_admin_error(e: ClientError, forbidden: &str) -> CommandError {
    admin_refusal(e, forbidden, "This server no longer exists.")
}

/// The relay's refusal of an admin action in words: `forbidden` (the rank it needs), `gone`
/// (what it acted on no longer exists), or that I am no longer a member; anything else as
/// [`client_error`] says it.
pub(crate) fn admin_refusal(e: ClientError, forbidden: &str, gone: &str) -> CommandError {
    match e.code() {
        Some(RelayCode::Forbidden) => CommandError::new(ErrorCode::Rejected, forbidden),
        Some(RelayCode::NotFound) => CommandError::new(ErrorCode::NotFound, gone),
        Some(RelayCode::NotMember) => CommandError::new(
            ErrorCode::Rejected,
            "You are no longer a member of this server.",
        ),
        _ => client_error(e),
    }
}

/// Renames a server (admins and the owner); every member sees the new name.
#[tauri::command]
#[specta::specta]
pub async fn server_rename(
    state: State<'_, AppState>,
    server: u64,
    name_text: String,
) -> CmdResult<()> {
    let name = name("Server name:", &name_text)?;
    state
        .relay()?
        .server_rename(ServerId(server), name)
        .await
        .map_err(|e| server_admin_error(e, "Only the server's owner and admins can rename it."))
}

/// Deletes a server with all its voice channels, for every member (the owner only). Whoever is
/// in one of its channels is taken out (the relay's `roster_leave`, see [`taken_out_of_voice`]).
#[tauri::command]
#[specta::specta]
pub async fn server_delete(state: State<'_, AppState>, server: u64) -> CmdResult<()> {
    state
        .relay()?
        .server_delete(ServerId(server))
        .await
        .map_err(|e| server_admin_error(e, "Only the server's owner can delete it."))
}

/// Leaves a server (not its owner, who deletes it instead); coming back takes a new invite.
/// Leaves its voice channel first if I am in one.
#[tauri::command]
#[specta::specta]
pub async fn server_leave(state: State<'_, AppState>, server: u64) -> CmdResult<()> {
    let relay = state.relay()?;
    leave_voice_in(&state, &relay, ServerId(server)).await;
    relay.server_leave(ServerId(server)).await.map_err(|e| {
        server_admin_error(
            e,
            "The owner cannot leave their server: delete it instead (or keep it).",
        )
    })
}

/// Makes an invite code for a server (give it to a friend or a bot: `hum server join CODE`).
#[tauri::command]
#[specta::specta]
pub async fn invite_create(state: State<'_, AppState>, server: u64) -> CmdResult<String> {
    let invite = state
        .relay()?
        .invite_create(ServerId(server), None, None)
        .await
        .map_err(client_error)?;
    Ok(invite.code.to_string())
}

/// Joins a server with an invite code or a `hum://invite/CODE` link.
#[tauri::command]
#[specta::specta]
pub async fn invite_join(state: State<'_, AppState>, code: String) -> CmdResult<ServerView> {
    let code = hum_proto::links::parse_invite(&code)
        .map_err(|e| CommandError::invalid(format!("That is not an invite: {e}.")))?;
    let info = state
        .relay()?
        .invite_join(code)
        .await
        .map_err(client_error)?;
    Ok(server_view(&info))
}

/// Creates a voice channel (admins and owners); `max_participants` null = the relay's default.
#[tauri::command]
#[specta::specta]
pub async fn channel_create(
    state: State<'_, AppState>,
    server: u64,
    name_text: String,
    max_participants: Option<u32>,
) -> CmdResult<ChannelView> {
    if let Some(m) = max_participants
        && !(1..=MAX_CHANNEL_SIZE).contains(&m)
    {
        return Err(CommandError::invalid(format!(
            "Max participants must be between 1 and {MAX_CHANNEL_SIZE}."
        )));
    }
    let relay = state.relay()?;
    let info = relay
        .channel_create(
            ServerId(server),
            name("Channel name:", &name_text)?,
            max_participants,
            None,
        )
        .await
        .map_err(client_error)?;
    Ok(channel_view(&info))
}

/// Checks a channel's settings before the relay sees them; returns the relay's permissions.
pub fn validate_channel_config(
    max_participants: u32,
    permissions: &ChannelPermissionsView,
) -> CmdResult<ChannelPermissions> {
    if !(1..=MAX_CHANNEL_SIZE).contains(&max_participants) {
        return Err(CommandError::invalid(format!(
            "Max participants must be between 1 and {MAX_CHANNEL_SIZE}."
        )));
    }
    for (role, p) in [
        ("Members", permissions.member),
        ("Admins", permissions.admin),
    ] {
        if !p.join && (p.speak || p.video || p.stream) {
            return Err(CommandError::invalid(format!(
                "{role} who may not join cannot speak, share video or stream in it: allow Join, \
                 or clear the other boxes."
            )));
        }
    }
    Ok(ChannelPermissions {
        member: permissions.member.into(),
        admin: permissions.admin.into(),
    })
}

/// The relay's refusals of a channel edit, in words.
pub fn channel_edit_error(e: ClientError) -> CommandError {
    match e.code() {
        Some(RelayCode::BadRequest) => CommandError::new(
            ErrorCode::InvalidInput,
            format!("The relay refused these settings: {e}."),
        ),
        _ => admin_refusal(
            e,
            "Only the server's owner and admins can change a channel's settings.",
            "This channel no longer exists.",
        ),
    }
}

/// Changes a channel's participant limit and per-role permissions (admins and owners). Lost
/// permissions apply at once: whoever may no longer join is removed, whoever may no longer speak
/// is muted (the relay does it and every roster shows it). `mesh_limit`: past this many members
/// the channel moves to the SFU (0: always); null: the relay's own limit.
#[tauri::command]
#[specta::specta]
pub async fn channel_configure(
    state: State<'_, AppState>,
    channel: u64,
    max_participants: u32,
    permissions: ChannelPermissionsView,
    mesh_limit: Option<u32>,
) -> CmdResult<()> {
    let perms = validate_channel_config(max_participants, &permissions)?;
    if mesh_limit.is_some_and(|l| l > MESH_LIMIT_MAX) {
        return Err(CommandError::new(
            ErrorCode::InvalidInput,
            format!("The mesh limit is at most {MESH_LIMIT_MAX} (past that, use the relay's own)."),
        ));
    }
    // The relay clears a channel's limit when sent its own limit or more (docs/protocol.md).
    let mesh_limit = mesh_limit.unwrap_or(u32::MAX);
    state
        .relay()?
        .channel_configure_with_mesh_limit(
            ChannelId(channel),
            Some(max_participants),
            Some(perms),
            Some(mesh_limit),
        )
        .await
        .map_err(channel_edit_error)
}

/// The highest mesh limit an admin may set (a mesh of more than 8 is past what uplinks carry).
pub const MESH_LIMIT_MAX: u32 = 8;

/// Joins a voice channel (leaving any other) with audio and video: the engine's `VoiceLink` runs
/// the mesh (or the SFU connection) and publishes my speaking/mute/camera state to every roster;
/// my camera goes to everyone while it is on, everyone's cameras come to the webview.
#[tauri::command]
#[specta::specta]
pub async fn channel_join(
    app: AppHandle,
    state: State<'_, AppState>,
    channel: u64,
) -> CmdResult<MyVoice> {
    let relay = state.relay()?;
    super::calls::hang_up_for_channel(&app).await;
    let mut me = state.my_voice()?;
    leave_voice(&state).await;
    super::devices::stop_monitor(&state);
    let settings = super::voice::load(&state);
    // "Hide my IP" and E2EE (Settings -> Privacy): before the devices open, so a relay without
    // TURN is refused with a sentence and nothing to undo.
    let mut config = super::privacy::voice_config(state.kv.as_ref(), &relay).await?;
    // The key exchange starts before the join: the others' keys arrive right after it.
    state
        .privacy
        .start(&app, &state, &relay, ChannelId(channel), &mut config)?;
    let (io, notices) = match super::devices::open_audio(&settings, me.muted || me.deafened) {
        Ok(x) => x,
        Err(e) => {
            state.privacy.stop();
            return Err(e);
        }
    };
    let video = super::video::call_video_io(&state);
    let joined =
        VoiceLink::join_channel_with_video(relay, ChannelId(channel), config, io, video).await;
    let (link, mut events) = match joined {
        Ok(j) => j,
        Err(e) => {
            state.privacy.stop();
            // The video track's reader of my camera goes with the session that never started.
            super::video::stop_call_video(&state);
            return Err(CommandError::new(ErrorCode::Rejected, e.to_string()));
        }
    };
    if me.deafened {
        link.session.set_deafened(true);
    }
    for (user, pct) in &settings.user_volumes {
        if let Ok(u) = user.parse() {
            link.session.set_volume(u, f32::from(*pct) / 100.0);
        }
    }
    state.set_session(Some(link.session.clone()));
    super::video::follow_call_video(&state, &link.session);
    state
        .level_follower
        .follow(state.levels.clone(), link.input_level());
    // The channel may not let me speak: then I join muted by it.
    me.muted_by_channel = link.session.muted_by_channel();
    me.muted = link.session.controls().muted();
    *state.link.lock().await = Some(link);
    tauri::async_runtime::spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev {
                VoiceEvent::Speaking {
                    user: None,
                    speaking,
                } => {
                    let _ = SelfSpeaking { speaking }.emit(&app);
                }
                VoiceEvent::Error(message) => {
                    let _ = AudioNotice { message }.emit(&app);
                }
                VoiceEvent::LocalState {
                    muted,
                    muted_by_channel,
                    ..
                } => {
                    // The channel took (or gave back) my permission to speak: the control bar
                    // shows why I cannot unmute.
                    let state = app.state::<AppState>();
                    if let Ok(me) = state.my_voice()
                        && me.channel.is_some()
                        && (me.muted, me.muted_by_channel) != (muted, muted_by_channel)
                    {
                        let _ = state.set_my_voice(MyVoice {
                            muted,
                            muted_by_channel,
                            ..me
                        });
                        let _ = super::connection::ServersChanged.emit(&app);
                    }
                }
                VoiceEvent::Stats { user, stats } => {
                    app.state::<AppState>()
                        .stats
                        .publish(&PeerStatsView::new(user, &stats));
                }
                VoiceEvent::Route { user, route } => {
                    app.state::<AppState>().privacy.route(user, route.relayed());
                    let _ = super::privacy::PrivacyChanged {}.emit(&app);
                }
                _ => {}
            }
        }
    });
    me.channel = Some(channel);
    me.audio_notice = (!notices.is_empty()).then(|| notices.join(" "));
    state.set_my_voice(me.clone())?;
    Ok(me)
}

#[tauri::command]
#[specta::specta]
pub async fn channel_leave(state: State<'_, AppState>) -> CmdResult<MyVoice> {
    if !leave_voice(&state).await {
        state.relay()?.channel_leave().await.map_err(client_error)?;
    }
    let me = MyVoice {
        channel: None,
        audio_notice: None,
        muted_by_channel: false,
        ..state.my_voice()?
    };
    state.set_my_voice(me.clone())?;
    Ok(me)
}

/// Why I cannot unmute while the channel does not let me speak.
pub const MUTED_BY_CHANNEL: &str =
    "This channel's permissions do not let you speak: you stay muted until an admin allows it.";

/// Mute and/or deafen (deafening also mutes, as users expect). Unmuting is refused while the
/// channel's permissions do not let me speak (`muted_by_channel`).
#[tauri::command]
#[specta::specta]
pub async fn voice_state_set(
    state: State<'_, AppState>,
    muted: bool,
    deafened: bool,
) -> CmdResult<MyVoice> {
    let muted = muted || deafened;
    let mut me = state.my_voice()?;
    if let Some(session) = state.session() {
        // The link publishes the change to the roster.
        let unmuted = session.set_muted(muted);
        session.set_deafened(deafened);
        if !unmuted {
            me.muted = true;
            me.muted_by_channel = true;
            me.deafened = deafened;
            state.set_my_voice(me)?;
            return Err(CommandError::new(ErrorCode::Rejected, MUTED_BY_CHANNEL));
        }
    } else if me.channel.is_some() {
        let relay = state.relay()?;
        let patch = VoiceStatePatch {
            muted: Some(muted),
            deafened: Some(deafened),
            ..Default::default()
        };
        relay.voice_update(patch).await.map_err(client_error)?;
    }
    me.muted = muted;
    me.deafened = deafened;
    state.set_my_voice(me.clone())?;
    Ok(me)
}

/// Sets how loud one person is for me (0-200 %), now and in future calls.
#[tauri::command]
#[specta::specta]
pub fn user_volume_set(state: State<'_, AppState>, user_id: String, percent: u16) -> CmdResult<()> {
    let user = super::friends::parse_user(&user_id)?;
    let mut settings = super::voice::load(&state);
    settings.user_volumes.insert(user.to_string(), percent);
    super::voice::save(&state, &settings)?;
    if let Some(session) = state.session() {
        session.set_volume(user, f32::from(percent) / 100.0);
    }
    Ok(())
}

#[tauri::command]
#[specta::specta]
pub fn my_voice(state: State<'_, AppState>) -> CmdResult<MyVoice> {
    state.my_voice()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hum_proto::UserId;
    use hum_proto::signal::{
        ChannelPermissions, DisplayName, RosterEntry, UserSummary, VoiceState,
    };

    #[test]
    fn roster_view_keeps_order_and_flags() {
        let entry = |b: u8, n: &str, speaking: bool| RosterEntry {
            user: UserSummary {
                id: UserId([b; 32]),
                display_name: DisplayName::new(n).expect("name"),
            },
            voice: VoiceState {
                speaking,
                muted: !speaking,
                ..VoiceState::default()
            },
        };
        let c = ChannelInfo {
            id: ChannelId(9),
            server: ServerId(1),
            name: Name::new("Lobby").expect("name"),
            max_participants: 8,
            permissions: ChannelPermissions::default(),
            roster: vec![entry(2, "bot", true), entry(1, "alice", false)],
            mode: Default::default(),
            mesh_limit: None,
        };
        let v = channel_view(&c);
        assert_eq!(v.id, 9);
        assert!(v.permissions.member.join && v.permissions.admin.stream);
        assert_eq!(
            v.roster
                .iter()
                .map(|m| m.display_name.as_str())
                .collect::<Vec<_>>(),
            ["bot", "alice"]
        );
        assert!(v.roster[0].speaking && !v.roster[0].muted);
        assert!(!v.roster[1].speaking && v.roster[1].muted);
        assert_eq!(v.roster[0].user_id, "02".repeat(32));
    }

    #[test]
    fn channel_modes_and_speakers_follow_the_relay() {
        use hum_engine::ClientEvent;
        use hum_proto::signal::{Event, VoiceTopology};
        let rooms = VoiceRooms::default();
        let c = ChannelInfo {
            id: ChannelId(9),
            server: ServerId(1),
            name: Name::new("Big").expect("name"),
            max_participants: 30,
            permissions: ChannelPermissions::default(),
            roster: vec![],
            mode: Default::default(),
            mesh_limit: None,
        };
        let view = |rooms: &VoiceRooms| {
            let mut v = channel_view(&c);
            rooms.apply(&mut v);
            (v.mode, v.speaker)
        };
        assert_eq!(view(&rooms), (VoiceMode::Mesh, None));
        let mode = |m| {
            ClientEvent::Relay(Event::ChannelMode {
                server: ServerId(1),
                channel: ChannelId(9),
                mode: m,
            })
        };
        assert!(rooms.observe(&mode(VoiceTopology::Sfu)));
        assert!(
            !rooms.observe(&mode(VoiceTopology::Sfu)),
            "no change, no nudge"
        );
        let speaker = ClientEvent::Relay(Event::SfuSpeaker {
            server: ServerId(1),
            channel: ChannelId(9),
            user: UserId([5; 32]),
        });
        assert!(rooms.observe(&speaker));
        assert_eq!(view(&rooms), (VoiceMode::Sfu, Some("05".repeat(32))));
        // A camera paused for my link, then a screen share; the speaker moving keeps them.
        let paused = |track: &str, p: bool| {
            ClientEvent::Relay(Event::SfuPaused {
                channel: ChannelId(9),
                user: UserId([6; 32]),
                track: track.into(),
                paused: p,
            })
        };
        let paused_view = |rooms: &VoiceRooms| {
            let mut v = channel_view(&c);
            rooms.apply(&mut v);
            v.paused_videos
        };
        assert!(rooms.observe(&paused("t3", true)));
        assert!(!rooms.observe(&paused("t3", true)), "no change, no nudge");
        assert!(rooms.observe(&paused("screen-t4", true)));
        assert!(rooms.observe(&ClientEvent::Relay(Event::SfuSpeaker {
            server: ServerId(1),
            channel: ChannelId(9),
            user: UserId([7; 32]),
        })));
        let six = |screen| PausedVideo {
            user_id: "06".repeat(32),
            screen,
        };
        assert_eq!(paused_view(&rooms), vec![six(false), six(true)]);
        assert!(rooms.observe(&paused("t3", false)));
        assert_eq!(paused_view(&rooms), vec![six(true)]);
        // Leaving the channel forgets them; the speaker and mode stay.
        rooms.forget_paused();
        assert_eq!(paused_view(&rooms), vec![]);
        assert_eq!(view(&rooms), (VoiceMode::Sfu, Some("07".repeat(32))));
        assert!(rooms.observe(&paused("screen-t4", true)));
        assert!(rooms.observe(&speaker));
        // Back to mesh: no dominant speaker any more, nothing paused.
        assert!(rooms.observe(&mode(VoiceTopology::Mesh)));
        assert_eq!(view(&rooms), (VoiceMode::Mesh, None));
        assert_eq!(paused_view(&rooms), vec![]);
        assert!(rooms.observe(&speaker));
        // A dropped connection forgets everything (the relay re-announces).
        assert!(rooms.observe(&ClientEvent::State(hum_engine::ConnectionState::Stopped)));
        assert_eq!(view(&rooms), (VoiceMode::Mesh, None));
    }

    #[test]
    fn channel_config_is_validated_with_clear_messages() {
        let all = RolePermissions {
            join: true,
            speak: true,
            video: true,
            stream: true,
        };
        let listen_only = RolePermissions {
            speak: false,
            video: false,
            stream: false,
            ..all
        };
        let ok = ChannelPermissionsView {
            member: listen_only,
            admin: all,
        };
        let p = validate_channel_config(8, &ok).expect("valid");
        assert!(p.member.join && !p.member.speak);
        assert_eq!(p.admin, Permissions::ALL);
        let err = validate_channel_config(0, &ok).expect_err("0");
        assert_eq!(err.code, ErrorCode::InvalidInput);
        assert!(
            err.message.contains("between 1 and 1000"),
            "{}",
            err.message
        );
        assert!(validate_channel_config(1001, &ok).is_err());
        assert!(validate_channel_config(1000, &ok).is_ok());
        let speak_without_join = ChannelPermissionsView {
            member: RolePermissions { join: false, ..all },
            admin: all,
        };
        let err = validate_channel_config(8, &speak_without_join).expect_err("join");
        assert!(
            err.message.starts_with("Members who may not join"),
            "{}",
            err.message
        );
        let closed = ChannelPermissionsView {
            member: RolePermissions {
                join: false,
                speak: false,
                video: false,
                stream: false,
            },
            admin: all,
        };
        assert!(validate_channel_config(8, &closed).is_ok());
    }

    #[test]
    fn relay_refusals_of_an_edit_read_well() {
        let relay = |code, message: &str| ClientError::Relay {
            code,
            message: message.into(),
        };
        let e = channel_edit_error(relay(RelayCode::Forbidden, "admin role required"));
        assert_eq!(e.code, ErrorCode::Rejected);
        assert!(e.message.contains("owner and admins"), "{}", e.message);
        let e = channel_edit_error(relay(RelayCode::NotFound, "no such channel"));
        assert_eq!(e.code, ErrorCode::NotFound);
        let e = channel_edit_error(relay(
            RelayCode::BadRequest,
            "max_participants must be 1-1000",
        ));
        assert_eq!(
            e.message,
            "The relay refused these settings: max_participants must be 1-1000."
        );
        let e = channel_edit_error(ClientError::Disconnected("reset".into()));
        assert_eq!(e.code, ErrorCode::RelayUnavailable);
    }

    #[test]
    fn names_are_checked_before_the_relay_sees_them() {
        assert!(name("Channel name:", "  ").is_err());
        assert_eq!(
            name("Channel name:", " Lobby ").expect("ok").to_string(),
            "Lobby"
        );
    }

    #[test]
    fn being_taken_out_of_a_channel_is_told_but_leaving_or_a_drop_is_not() {
        use hum_engine::ClientEvent;
        use hum_proto::signal::{Event, RosterLeaveReason};
        let me = UserId([1; 32]);
        let leave = |user, reason| {
            ClientEvent::Relay(Event::RosterLeave {
                server: ServerId(1),
                channel: ChannelId(9),
                user,
                reason,
            })
        };
        let kicked = removal_notice(&leave(me, RosterLeaveReason::Removed), me);
        assert_eq!(kicked.map(|k| k.0), Some(ChannelId(9)));
        assert!(kicked.is_some_and(|k| k.1.contains("removed from the server")));
        let deleted = removal_notice(&leave(me, RosterLeaveReason::Deleted), me);
        assert!(deleted.is_some_and(|k| k.1.contains("deleted")));
        assert_eq!(
            removal_notice(&leave(me, RosterLeaveReason::Left), me),
            None
        );
        assert_eq!(
            removal_notice(&leave(me, RosterLeaveReason::Disconnected), me),
            None
        );
        // Someone else removed: their business.
        assert_eq!(
            removal_notice(&leave(UserId([2; 32]), RosterLeaveReason::Removed), me),
            None
        );
    }

    #[test]
    fn server_refusals_in_words() {
        let e = server_admin_error(
            ClientError::Relay {
                code: RelayCode::Forbidden,
                message: "the owner cannot leave; delete the server instead".into(),
            },
            "The owner cannot leave their server: delete it instead (or keep it).",
        );
        assert_eq!(e.code, ErrorCode::Rejected);
        assert!(
            e.message.starts_with("The owner cannot leave"),
            "{}",
            e.message
        );
        let e = server_admin_error(
            ClientError::Relay {
                code: RelayCode::NotFound,
                message: "no such server".into(),
            },
            "-",
        );
        assert_eq!(e.message, "This server no longer exists.");
        assert!(name("Server name:", "").is_err());
    }
}
