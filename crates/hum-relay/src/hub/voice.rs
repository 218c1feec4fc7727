//! Voice channels: create/rename/configure/delete, join/leave, voice state, and the signalling
//! forwarder (for channels and calls).
//!
//! A user is in at most one channel; joining another leaves the first. Permissions are enforced
//! on the voice state the relay stores: without `speak` a participant is kept muted and not
//! speaking, without `video`/`stream` those flags stay off. When an admin changes a channel's
//! permissions or a member's role, the relay re-applies them to everyone in the channel (and
//! removes those who lost `join`), and tells each member whose own permissions changed
//! (`voice_permissions`, to them alone: their client stops sending what it may not).

use hum_proto::signal::{
    ChannelPermissions, ErrorCode, Event, Name, Permissions, ProtoError, Reply, Request, Role,
    RosterEntry, RosterLeaveReason, SignalPayload, SignalScope, VoiceState, VoiceStatePatch,
    VoiceTopology,
};
use hum_proto::{ChannelId, RequestId, ServerId, UserId};

use super::{ConnId, Hub, HubResult, Output, SfuCmd, db_err, err};
use crate::model::ChannelRec;

/// Clamp a voice state to what `perms` allow.
fn constrain(mut v: VoiceState, perms: Permissions) -> VoiceState {
    if !perms.speak {
        v.muted = true;
        v.speaking = false;
    }
    if !perms.video {
        v.video = false;
    }
    if !perms.stream {
        v.streaming = false;
    }
    v
}

impl Hub {
    /// The server whose channel `u` is in, if any.
    pub(super) fn current_server(&self, u: &UserId) -> Option<ServerId> {
        let c = self.online.get(u)?.channel?;
        Some(self.model.channels.get(&c)?.server)
    }

    fn channel_server(&self, channel: ChannelId) -> Result<ServerId, ProtoError> {
        self.model
            .channels
            .get(&channel)
            .map(|c| c.server)
            .ok_or_else(|| err(ErrorCode::NotFound, "no such channel"))
    }

    fn check_size(&self, max: u32) -> Result<(), ProtoError> {
        if max == 0 || max > self.config.max_channel_size {
            return Err(err(
                ErrorCode::BadRequest,
                format!(
                    "max_participants must be 1-{}",
                    self.config.max_channel_size
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn channel_create(
        &mut self,
        now_secs: u64,
        user: UserId,
        server: ServerId,
        name: Name,
        max_participants: Option<u32>,
        permissions: Option<ChannelPermissions>,
    ) -> HubResult {
        self.require_role(server, &user, Role::Admin)?;
        let max = max_participants.unwrap_or(self.config.default_channel_size);
        self.check_size(max)?;
        let count = self
            .model
            .servers
            .get(&server)
            .map_or(0, |s| s.channels.len());
        if count >= self.config.max_channels_per_server {
            return Err(err(
                ErrorCode::LimitReached,
                format!(
                    "at most {} channels per server",
                    self.config.max_channels_per_server
                ),
            ));
        }
        let permissions = permissions.unwrap_or_default();
        let id = self
            .store
            .create_channel(server, &name, max, &permissions, now_secs)
            .map_err(db_err)?;
        self.model.add_channel(
            id,
            ChannelRec {
                server,
                name,
                max_participants: max,
                permissions,
                mesh_limit: None,
                roster: Vec::new(),
            },
        );
        let channel = self
            .channel_info(id)
            .ok_or_else(|| err(ErrorCode::Internal, "channel vanished"))?;
        self.event_to_server(
            server,
            Event::ChannelCreated {
                channel: channel.clone(),
            },
        );
        Ok(Reply::Channel { channel })
    }

    /// Apply `edit` to a channel's stored fields (name, limit, permissions), persist them and
    /// announce the change; if the database refuses, the in-memory channel is put back as it was
    /// so memory never disagrees with disk. Returns who is in the channel now.
    fn edit_channel(
        &mut self,
        channel: ChannelId,
        edit: impl FnOnce(&mut ChannelRec),
    ) -> Result<Vec<UserId>, ProtoError> {
        let ch = self
            .model
            .channels
            .get_mut(&channel)
            .ok_or_else(|| err(ErrorCode::NotFound, "no such channel"))?;
        let before = (
            ch.name.clone(),
            ch.max_participants,
            ch.permissions,
            ch.mesh_limit,
        );
        edit(ch);
        let saved = self
            .store
            .update_channel(
                channel,
                &ch.name,
                ch.max_participants,
                &ch.permissions,
                ch.mesh_limit,
            )
            .map_err(db_err);
        if let Err(e) = saved {
            (ch.name, ch.max_participants, ch.permissions, ch.mesh_limit) = before;
            return Err(e);
        }
        let roster = ch.roster.clone();
        self.announce_channel(channel);
        Ok(roster)
    }

    fn announce_channel(&mut self, channel: ChannelId) {
        if let Some(info) = self.channel_info(channel) {
            self.event_to_server(info.server, Event::ChannelUpdated { channel: info });
        }
    }

    pub(super) fn channel_rename(
        &mut self,
        user: UserId,
        channel: ChannelId,
        name: Name,
    ) -> HubResult {
        let server = self.channel_server(channel)?;
        self.require_role(server, &user, Role::Admin)?;
        // Friends see channel names in presence.
        let roster = self.edit_channel(channel, |c| c.name = name)?;
        for u in roster {
            self.push_presence(&u);
        }
        Ok(Reply::Ok)
    }

    pub(super) fn channel_configure(
        &mut self,
        user: UserId,
        channel: ChannelId,
        max_participants: Option<u32>,
        permissions: Option<ChannelPermissions>,
        mesh_limit: Option<u32>,
    ) -> HubResult {
        let server = self.channel_server(channel)?;
        self.require_role(server, &user, Role::Admin)?;
        if let Some(m) = max_participants {
            self.check_size(m)?;
        }
        // The relay's limit or more clears the channel's (stored with the channel, so it
        // outlives a restart). A lower limit does not evict anyone; lost permissions do apply
        // at once.
        let relay_max = self.config.mode.mesh_max;
        let roster = self.edit_channel(channel, |c| {
            if let Some(m) = max_participants {
                c.max_participants = m;
            }
            if let Some(p) = permissions {
                c.permissions = p;
            }
            if let Some(l) = mesh_limit {
                c.mesh_limit = ((l as usize) < relay_max).then_some(l);
            }
        })?;
        for u in roster {
            self.enforce_permissions(&u);
        }
        if mesh_limit.is_some() {
            // A lower limit may move the channel to the SFU now, a higher one back to mesh.
            self.update_mode(channel);
        }
        Ok(Reply::Ok)
    }

    /// Re-apply `u`'s channel permissions: remove them if they lost `join`, else clamp their
    /// voice state and announce any change.
    pub(super) fn enforce_permissions(&mut self, u: &UserId) {
        let Some(channel) = self.online.get(u).and_then(|o| o.channel) else {
            return;
        };
        let Some(ch) = self.model.channels.get(&channel) else {
            return;
        };
        let server = ch.server;
        let Some(role) = self.model.role(server, u) else {
            self.leave_channel(u, RosterLeaveReason::Removed);
            return;
        };
        let perms = ch.permissions.for_role(role);
        if !perms.join {
            self.leave_channel(u, RosterLeaveReason::Removed);
            return;
        }
        // On the SFU the permissions are enforced on the media too: a revoked `speak` or
        // `video` withdraws the published track (the others stop receiving it).
        if self.voice.get(&channel).is_some_and(|v| v.sfu.contains(u)) {
            self.out.push(Output::Sfu(SfuCmd::Permissions {
                channel,
                user: *u,
                permissions: perms,
            }));
        }
        let Some(o) = self.online.get_mut(u) else {
            return;
        };
        let told = std::mem::replace(&mut o.perms, perms);
        let new = constrain(o.voice, perms);
        if told != perms {
            // Before the roster says it: the member's client mutes itself on this, where a
            // stale echo of its own earlier mute in `roster_update` would look the same.
            self.event_to_user(
                u,
                Event::VoicePermissions {
                    server,
                    channel,
                    permissions: perms,
                },
            );
        }
        let Some(o) = self.online.get_mut(u) else {
            return;
        };
        if new != o.voice {
            o.voice = new;
            self.event_to_watchers(
                server,
                Some(channel),
                Event::RosterUpdate {
                    server,
                    channel,
                    user: *u,
                    voice: new,
                },
            );
        }
    }

    pub(super) fn channel_delete(&mut self, user: UserId, channel: ChannelId) -> HubResult {
        let server = self.channel_server(channel)?;
        self.require_role(server, &user, Role::Admin)?;
        self.store.delete_channel(channel).map_err(db_err)?;
        self.clear_roster(channel, RosterLeaveReason::Deleted);
        self.model.remove_channel(channel);
        self.voice.remove(&channel);
        self.event_to_server(server, Event::ChannelDeleted { server, channel });
        Ok(Reply::Ok)
    }

    /// Everyone out of `channel` (it is being deleted).
    pub(super) fn clear_roster(&mut self, channel: ChannelId, reason: RosterLeaveReason) {
        let roster = self
            .model
            .channels
            .get(&channel)
            .map(|c| c.roster.clone())
            .unwrap_or_default();
        for u in roster {
            self.leave_channel(&u, reason);
        }
    }

    pub(super) fn channel_list(&self, user: UserId, server: ServerId) -> HubResult {
        self.role_in(server, &user)?;
        let channels = self
            .model
            .servers
            .get(&server)
            .map(|s| {
                s.channels
                    .iter()
                    .filter_map(|c| self.channel_info(*c))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Reply::Channels { server, channels })
    }

    pub(super) fn channel_join(
        &mut self,
        user: UserId,
        channel: ChannelId,
        voice: Option<VoiceState>,
    ) -> HubResult {
        let server = self.channel_server(channel)?;
        let role = self.role_in(server, &user)?;
        let (perms, full) = {
            let ch = self
                .model
                .channels
                .get(&channel)
                .ok_or_else(|| err(ErrorCode::NotFound, "no such channel"))?;
            let perms = ch.permissions.for_role(role);
            (perms, ch.roster.len() >= ch.max_participants as usize)
        };
        if !perms.join {
            return Err(err(
                ErrorCode::Forbidden,
                "your role may not join this channel",
            ));
        }
        let current = self.online.get(&user).and_then(|o| o.channel);
        // What `joined` tells the member; `voice_permissions` says when it changes.
        if let Some(o) = self.online.get_mut(&user) {
            o.perms = perms;
        }
        if current != Some(channel) {
            if full {
                return Err(err(ErrorCode::ChannelFull, "the channel is full"));
            }
            self.leave_channel(&user, RosterLeaveReason::Left);
            let v = constrain(voice.unwrap_or_default(), perms);
            if let Some(o) = self.online.get_mut(&user) {
                o.channel = Some(channel);
                o.voice = v;
            }
            if let Some(ch) = self.model.channels.get_mut(&channel) {
                ch.roster.push(user);
            }
            // The mode first: members that move to the SFU must not offer a mesh connection to
            // the newcomer announced next.
            if !self.update_mode(channel) {
                // Unchanged: the joiner alone hears the mode (the others know it).
                let mode = self.mode_of(channel);
                self.event_to_user(
                    &user,
                    Event::ChannelMode {
                        server,
                        channel,
                        mode,
                    },
                );
            }
            let entry = RosterEntry {
                user: self.summary(&user),
                voice: v,
            };
            self.event_to_watchers(
                server,
                Some(channel),
                Event::RosterJoin {
                    server,
                    channel,
                    entry,
                },
            );
            self.push_presence(&user);
        }
        let mode = self.mode_of(channel);
        let channel = self
            .channel_info(channel)
            .ok_or_else(|| err(ErrorCode::Internal, "channel vanished"))?;
        Ok(Reply::Joined {
            channel,
            permissions: perms,
            mode,
        })
    }

    /// Take `u` out of whatever channel it is in, telling the server's members.
    pub(super) fn leave_channel(&mut self, u: &UserId, reason: RosterLeaveReason) {
        let Some(o) = self.online.get_mut(u) else {
            return;
        };
        let Some(channel) = o.channel.take() else {
            return;
        };
        o.voice = VoiceState::default();
        let Some(ch) = self.model.channels.get_mut(&channel) else {
            return;
        };
        ch.roster.retain(|x| x != u);
        let server = ch.server;
        // The leaver hears it too (they may not have asked: removed, deleted), before the others
        // would stop counting them as a member.
        let mut to = self.watchers(server, Some(channel));
        if let Some(c) = self.conn_of(u)
            && !to.contains(&c)
        {
            to.push(c);
        }
        let event = Event::RosterLeave {
            server,
            channel,
            user: *u,
            reason,
        };
        self.send(to, hum_proto::signal::ServerMessage::event(event));
        if reason != RosterLeaveReason::Disconnected {
            self.push_presence(u);
        }
        if let Some(v) = self.voice.get_mut(&channel)
            && v.sfu.remove(u)
        {
            self.out.push(Output::Sfu(SfuCmd::Leave { user: *u }));
        }
        self.update_mode(channel);
    }

    // --- mesh or SFU ----------------------------------------------------------------------------

    /// The channel's mode now.
    pub(super) fn mode_of(&self, channel: ChannelId) -> VoiceTopology {
        self.voice
            .get(&channel)
            .map_or(VoiceTopology::Mesh, |v| v.mode)
    }

    /// Re-applies the mode rule after the roster of `channel` changed; announces a change to
    /// the server's members. Returns whether the mode changed.
    pub(super) fn update_mode(&mut self, channel: ChannelId) -> bool {
        let Some(ch) = self.model.channels.get(&channel) else {
            self.voice.remove(&channel);
            return false;
        };
        let (server, members) = (ch.server, ch.roster.len());
        // A camera on anywhere in the channel lowers the mesh's limit (ModePolicy::with_video).
        let video = ch
            .roster
            .iter()
            .any(|u| self.online.get(u).is_some_and(|o| o.voice.video));
        let current = self.mode_of(channel);
        let limit = ch.mesh_limit.map(|l| l as usize);
        let next = self
            .config
            .mode
            .with_limit(limit)
            .with_video(video)
            .next(current, members);
        if members == 0 {
            self.voice.remove(&channel);
        } else {
            self.voice.entry(channel).or_default().mode = next;
        }
        if next == current {
            return false;
        }
        tracing::info!(%channel, members, ?next, "voice channel changes mode");
        self.event_to_watchers(
            server,
            Some(channel),
            Event::ChannelMode {
                server,
                channel,
                mode: next,
            },
        );
        true
    }

    /// `sfu_join`, `sfu_offer`, `sfu_answer`, `sfu_quality`: checked here, answered by the SFU later
    /// (`Some(Ok(()))`), or refused now. `None`: not an SFU request.
    pub(super) fn sfu_request(
        &mut self,
        conn: ConnId,
        re: RequestId,
        user: UserId,
        req: &Request,
    ) -> Option<Result<(), ProtoError>> {
        let r = match req {
            Request::SfuJoin { channel, sdp } => self.sfu_join(conn, re, user, *channel, sdp),
            Request::SfuOffer { sdp } => self.in_sfu(&user).map(|_| {
                self.out.push(Output::Sfu(SfuCmd::Offer {
                    conn,
                    re,
                    user,
                    sdp: sdp.clone(),
                }))
            }),
            Request::SfuAnswer { sdp } => self.in_sfu(&user).map(|_| {
                self.out.push(Output::Sfu(SfuCmd::Answer {
                    conn,
                    re,
                    user,
                    sdp: sdp.clone(),
                }))
            }),
            Request::SfuQuality {
                user: owner,
                quality,
            } => self.in_sfu(&user).map(|_| {
                self.out.push(Output::Sfu(SfuCmd::Quality {
                    conn,
                    re,
                    user,
                    owner: *owner,
                    quality: *quality,
                }))
            }),
            _ => return None,
        };
        Some(r)
    }

    fn in_sfu(&self, user: &UserId) -> Result<ChannelId, ProtoError> {
        let channel = self
            .online
            .get(user)
            .and_then(|o| o.channel)
            .ok_or_else(|| err(ErrorCode::NotInChannel, "you are not in a voice channel"))?;
        if !self
            .voice
            .get(&channel)
            .is_some_and(|v| v.sfu.contains(user))
        {
            return Err(err(
                ErrorCode::InvalidState,
                "you are not connected to the SFU: send sfu_join first",
            ));
        }
        Ok(channel)
    }

    fn sfu_join(
        &mut self,
        conn: ConnId,
        re: RequestId,
        user: UserId,
        channel: ChannelId,
        sdp: &str,
    ) -> Result<(), ProtoError> {
        if !self.config.mode.sfu_enabled {
            return Err(err(
                ErrorCode::InvalidState,
                "this relay runs no SFU (started with --sfu-bind off)",
            ));
        }
        if self.online.get(&user).and_then(|o| o.channel) != Some(channel) {
            return Err(err(ErrorCode::NotInChannel, "you are not in that channel"));
        }
        if self.mode_of(channel) != VoiceTopology::Sfu {
            return Err(err(
                ErrorCode::InvalidState,
                "the channel is in mesh mode: send offers to the other members",
            ));
        }
        let ch = self
            .model
            .channels
            .get(&channel)
            .ok_or_else(|| err(ErrorCode::NotFound, "no such channel"))?;
        let role = self.model.role(ch.server, &user).unwrap_or(Role::Member);
        let permissions = ch.permissions.for_role(role);
        let v = self.voice.entry(channel).or_default();
        if !v.sfu.insert(user) {
            // A second join replaces the first connection (e.g. after an ICE failure).
            self.out.push(Output::Sfu(SfuCmd::Leave { user }));
        }
        self.out.push(Output::Sfu(SfuCmd::Join {
            conn,
            re,
            channel,
            user,
            sdp: sdp.to_string(),
            permissions,
        }));
        Ok(())
    }

    pub(super) fn sfu_leave(&mut self, user: UserId) -> HubResult {
        let channel = self
            .online
            .get(&user)
            .and_then(|o| o.channel)
            .ok_or_else(|| err(ErrorCode::NotInChannel, "you are not in a voice channel"))?;
        if let Some(v) = self.voice.get_mut(&channel)
            && v.sfu.remove(&user)
        {
            self.out.push(Output::Sfu(SfuCmd::Leave { user }));
        }
        Ok(Reply::Ok)
    }

    /// The SFU finished a request of `user` (`Ok(Some(sdp))`: an answer to return).
    pub fn sfu_done(
        &mut self,
        conn: ConnId,
        re: RequestId,
        user: UserId,
        joining: bool,
        result: Result<Option<String>, String>,
    ) {
        let reply = match result {
            Ok(Some(sdp)) => Ok(Reply::Sdp { sdp }),
            Ok(None) => Ok(Reply::Ok),
            Err(message) => {
                if joining {
                    self.sfu_forget(&user);
                }
                Err(err(ErrorCode::BadRequest, format!("SFU: {message}")))
            }
        };
        self.reply(conn, re, reply);
    }

    fn sfu_forget(&mut self, user: &UserId) {
        for v in self.voice.values_mut() {
            v.sfu.remove(user);
        }
    }

    /// The SFU offers `user` new tracks.
    pub fn sfu_offer(&mut self, user: UserId, sdp: String) {
        let Some(channel) = self.online.get(&user).and_then(|o| o.channel) else {
            return;
        };
        self.event_to_user(&user, Event::SfuOffer { channel, sdp });
    }

    /// The SFU's connection to `user` ended (ICE timeout, DTLS close).
    pub fn sfu_disconnected(&mut self, user: UserId) {
        self.sfu_forget(&user);
    }

    /// The SFU says which layers of `user`'s track `track` someone wants: tell `user` (the
    /// publisher pauses the others). Only while it is in a channel (on the SFU).
    pub fn sfu_layers(&mut self, user: UserId, track: String, rids: Vec<String>) {
        let Some(channel) = self.online.get(&user).and_then(|o| o.channel) else {
            return;
        };
        self.event_to_user(
            &user,
            Event::SfuLayers {
                channel,
                track,
                rids,
            },
        );
    }

    /// The SFU paused (or resumed) `owner`'s video `track` for `user`, whose link does not
    /// carry it: tell `user`, while it is in a channel (on the SFU).
    pub fn sfu_paused(&mut self, user: UserId, owner: UserId, track: String, paused: bool) {
        let Some(channel) = self.online.get(&user).and_then(|o| o.channel) else {
            return;
        };
        self.event_to_user(
            &user,
            Event::SfuPaused {
                channel,
                user: owner,
                track,
                paused,
            },
        );
    }

    /// The dominant speaker of an SFU room changed: tell the channel's members.
    pub fn sfu_speaker(&mut self, channel: ChannelId, user: UserId) {
        let Some(ch) = self.model.channels.get(&channel) else {
            return;
        };
        let (server, roster) = (ch.server, ch.roster.clone());
        self.event_to_users(
            roster.iter(),
            Event::SfuSpeaker {
                server,
                channel,
                user,
            },
        );
    }

    pub(super) fn channel_leave(&mut self, user: UserId) -> HubResult {
        if self.online.get(&user).and_then(|o| o.channel).is_none() {
            return Err(err(
                ErrorCode::NotInChannel,
                "you are not in a voice channel",
            ));
        }
        self.leave_channel(&user, RosterLeaveReason::Left);
        Ok(Reply::Ok)
    }

    pub(super) fn voice_update(&mut self, user: UserId, patch: VoiceStatePatch) -> HubResult {
        let channel = self
            .online
            .get(&user)
            .and_then(|o| o.channel)
            .ok_or_else(|| err(ErrorCode::NotInChannel, "you are not in a voice channel"))?;
        let ch = self
            .model
            .channels
            .get(&channel)
            .ok_or_else(|| err(ErrorCode::NotFound, "no such channel"))?;
        let server = ch.server;
        let role = self.model.role(server, &user).unwrap_or(Role::Member);
        let perms = ch.permissions.for_role(role);
        if (patch.muted == Some(false) || patch.speaking == Some(true)) && !perms.speak {
            return Err(err(
                ErrorCode::Forbidden,
                "you may not speak in this channel",
            ));
        }
        if patch.video == Some(true) && !perms.video {
            return Err(err(
                ErrorCode::Forbidden,
                "you may not send video in this channel",
            ));
        }
        if patch.streaming == Some(true) && !perms.stream {
            return Err(err(
                ErrorCode::Forbidden,
                "you may not stream in this channel",
            ));
        }
        let Some(o) = self.online.get_mut(&user) else {
            return Err(err(
                ErrorCode::NotInChannel,
                "you are not in a voice channel",
            ));
        };
        let new = constrain(patch.apply(o.voice), perms);
        if new != o.voice {
            let camera_changed = new.video != o.voice.video;
            o.voice = new;
            self.event_to_watchers(
                server,
                Some(channel),
                Event::RosterUpdate {
                    server,
                    channel,
                    user,
                    voice: new,
                },
            );
            if camera_changed {
                // A camera turned on in a mesh past the video limit moves it to the SFU.
                self.update_mode(channel);
            }
        }
        Ok(Reply::Ok)
    }

    // --- signalling -----------------------------------------------------------------------------

    pub(super) fn signal(
        &mut self,
        user: UserId,
        to: UserId,
        scope: SignalScope,
        payload: SignalPayload,
    ) -> HubResult {
        if to == user {
            return Err(err(ErrorCode::BadRequest, "you cannot signal yourself"));
        }
        match scope {
            SignalScope::Call(call) => {
                let (other, active) = self.call_peer(&user, call)?;
                if other != to {
                    return Err(err(
                        ErrorCode::Forbidden,
                        "`to` is not the other party of that call",
                    ));
                }
                if !active {
                    return Err(err(
                        ErrorCode::InvalidState,
                        "the call has not been accepted yet",
                    ));
                }
            }
            SignalScope::Channel(channel) => {
                let mine = self.online.get(&user).and_then(|o| o.channel);
                if mine != Some(channel) {
                    return Err(err(ErrorCode::NotInChannel, "you are not in that channel"));
                }
                let theirs = self.online.get(&to).and_then(|o| o.channel);
                if theirs != Some(channel) {
                    return Err(err(
                        ErrorCode::NotInChannel,
                        "that user is not in that channel",
                    ));
                }
            }
        }
        let conn = self
            .conn_of(&to)
            .ok_or_else(|| err(ErrorCode::NotFound, "that user is offline"))?;
        self.send(
            vec![conn],
            hum_proto::signal::ServerMessage::event(Event::Signal {
                from: user,
                scope,
                payload,
            }),
        );
        Ok(Reply::Ok)
    }
}
