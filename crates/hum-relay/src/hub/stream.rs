//! Live streams: the list of streams per channel, who watches, the mesh signalling forwarder, and
//! the commands to the stream's root seed + tracker, which the relay hosts (`crate::live`).
//!
//! The hub checks who may stream (`stream` permission in the channel) and watch (`join`), hands
//! out tickets for the `/mesh` WebSocket (the streamer uploads there, viewers fetch from the root
//! there), tells the root who joins and leaves (with the upload they offer to relay), gives it the
//! viewers' `want`, `ban` and `leave` signals (addressed to the streamer, whose key is the stream key), and
//! forwards other [`MeshSignal`]s only between members of the same stream (`from` set by the
//! hub). A stream ends when its streamer ends it or goes offline; a viewer going offline leaves.
//! Recordings (the streamer's opt-in) are kept by `crate::recording`.
//!
//! Invariants (checked by [`Hub::check`] through [`Streams::check`]): a user streams at most one
//! stream; `watching` is exactly the inverse of every stream's viewer set; a streamer never
//! watches its own stream.

use std::collections::{BTreeMap, BTreeSet};

use hum_proto::signal::{
    ErrorCode, Event, MeshSignal, Name, RecordingInfo, Reply, ServerMessage, StreamInfo,
    StreamLayer, StreamLayerName, pick_layer,
};
use hum_proto::{Bitrate, ChannelId, StreamId, UserId};

use super::{Hub, HubResult, Output, err};

/// What the hub asks of the live-stream host (`crate::live`), which runs each stream's
/// [`hum_mesh::host::RootHost`].
#[derive(Clone, Debug, PartialEq)]
pub enum LiveCmd {
    /// Host a new stream: the root seed + tracker, and a recording if `recording` is set.
    Start {
        stream: StreamId,
        streamer: UserId,
        bitrate: Bitrate,
        recording: Option<u64>,
        /// Every layer published, best first (at least one), with its planned rate.
        layers: Vec<(hum_proto::mesh::Layer, Bitrate)>,
    },
    End {
        stream: StreamId,
    },
    Joined {
        stream: StreamId,
        user: UserId,
        relay: Bitrate,
        /// The layer whose swarm the viewer joins.
        layer: hum_proto::mesh::Layer,
    },
    Left {
        stream: StreamId,
        user: UserId,
    },
    /// A viewer watching on the same layer offers another relay upload (`stream_join` again:
    /// its throttler's cap or its setting moved): the tracker's books follow, in place.
    Budget {
        stream: StreamId,
        user: UserId,
        relay: Bitrate,
    },
    /// A viewer's `want`, `ban` or `leave` for the tracker.
    Signal {
        stream: StreamId,
        from: UserId,
        signal: MeshSignal,
    },
    /// `ticket` lets `user` open `/mesh` for `stream` (to upload if it is the streamer).
    Ticket {
        ticket: String,
        stream: StreamId,
        user: UserId,
    },
    /// `ticket` lets its holder fetch recording `recording` from `/mesh`.
    PlayTicket {
        ticket: String,
        recording: u64,
    },
}

/// Streams one relay hosts at once.
pub const MAX_STREAMS: usize = 10_000;
/// Viewers of one stream.
pub const MAX_VIEWERS: usize = 100_000;

#[derive(Clone, Debug)]
pub(super) struct StreamRec {
    info: StreamInfo,
    viewers: BTreeMap<UserId, Bitrate>,
    /// The layer each viewer watches.
    layer_of: BTreeMap<UserId, StreamLayerName>,
    recording: Option<u64>,
}

/// The relay's live-stream state (not persisted: a stream lives with its streamer's session).
#[derive(Debug, Default)]
pub(super) struct Streams {
    by_id: BTreeMap<StreamId, StreamRec>,
    next: u64,
    streaming: BTreeMap<UserId, StreamId>,
    watching: BTreeMap<UserId, BTreeSet<StreamId>>,
    /// Who watches each recording in the on-demand mesh (`recording_join`), in join order.
    swarms: BTreeMap<u64, Vec<UserId>>,
}

impl Streams {
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(super) fn check(&self) -> Result<(), String> {
        for (u, s) in &self.streaming {
            if self.by_id.get(s).map(|r| r.info.streamer.id) != Some(*u) {
                return Err(format!("{u:?} streams {s} which is not theirs"));
            }
        }
        let mut inverse: BTreeMap<UserId, BTreeSet<StreamId>> = BTreeMap::new();
        for (id, r) in &self.by_id {
            if r.viewers.contains_key(&r.info.streamer.id) {
                return Err(format!("the streamer of {id} watches it"));
            }
            for v in r.viewers.keys() {
                inverse.entry(*v).or_default().insert(*id);
            }
        }
        let watching: BTreeMap<_, _> = self
            .watching
            .iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(u, s)| (*u, s.clone()))
            .collect();
        if inverse != watching {
            return Err("watching is not the inverse of the viewer sets".into());
        }
        Ok(())
    }

    fn info(&self, id: StreamId) -> Option<StreamInfo> {
        let r = self.by_id.get(&id)?;
        Some(StreamInfo {
            viewers: r.viewers.len() as u32,
            ..r.info.clone()
        })
    }

    fn member(&self, id: StreamId, u: &UserId) -> bool {
        self.by_id
            .get(&id)
            .is_some_and(|r| r.info.streamer.id == *u || r.viewers.contains_key(u))
    }
}

impl Hub {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stream_start(
        &mut self,
        now_ms: u64,
        user: UserId,
        channel: ChannelId,
        title: Name,
        bitrate: Bitrate,
        chunk_ms: u32,
        started_ms: Option<u64>,
        record: bool,
        layers: Vec<StreamLayer>,
    ) -> HubResult {
        let (server, perms) = {
            let ch = self
                .model
                .channels
                .get(&channel)
                .ok_or_else(|| err(ErrorCode::NotFound, "no such channel"))?;
            let role = self.role_in(ch.server, &user)?;
            (ch.server, ch.permissions.for_role(role))
        };
        if !perms.stream {
            return Err(err(
                ErrorCode::Forbidden,
                "you may not stream in this channel (the `stream` permission)",
            ));
        }
        if !(100..=500).contains(&chunk_ms) {
            return Err(err(ErrorCode::BadRequest, "chunk_ms must be 100-500"));
        }
        if bitrate == Bitrate::ZERO {
            return Err(err(ErrorCode::BadRequest, "bitrate must be above zero"));
        }
        if layers.len() > 4
            || layers.iter().any(|l| l.bitrate == Bitrate::ZERO)
            || layers
                .iter()
                .map(|l| l.layer)
                .collect::<BTreeSet<_>>()
                .len()
                != layers.len()
        {
            return Err(err(
                ErrorCode::BadRequest,
                "layers: at most 4, distinct, each with a rate above zero",
            ));
        }
        if self.streams.streaming.contains_key(&user) {
            return Err(err(
                ErrorCode::InvalidState,
                "you are already streaming: end that stream first",
            ));
        }
        if self.streams.by_id.len() >= MAX_STREAMS {
            return Err(err(
                ErrorCode::LimitReached,
                "this relay hosts as many streams as it can; try again later",
            ));
        }
        if record && self.recordings.is_none() {
            return Err(err(
                ErrorCode::InvalidState,
                "this relay does not keep recordings",
            ));
        }
        self.streams.next += 1;
        let id = StreamId(self.streams.next);
        let info = StreamInfo {
            id,
            server,
            channel,
            streamer: self.summary(&user),
            title,
            bitrate,
            chunk_ms,
            started_ms: started_ms.unwrap_or(now_ms),
            viewers: 0,
            recording: record,
            layers: layers.clone(),
        };
        let recording = match (&self.recordings, record) {
            (Some(r), true) => {
                let m = r
                    .create(RecordingInfo {
                        id: 0,
                        stream: id,
                        server,
                        channel,
                        streamer: info.streamer.clone(),
                        title: info.title.clone(),
                        bitrate,
                        chunk_ms,
                        started_ms: info.started_ms,
                        chunks: 0,
                        bytes: 0,
                        ended: false,
                        layer: info.layers.first().map(|l| l.layer),
                    })
                    .map_err(|e| {
                        tracing::error!("creating a recording: {e}");
                        err(ErrorCode::Internal, "could not create the recording")
                    })?;
                Some(m.id)
            }
            _ => None,
        };
        self.streams.by_id.insert(
            id,
            StreamRec {
                info: info.clone(),
                viewers: BTreeMap::new(),
                layer_of: BTreeMap::new(),
                recording,
            },
        );
        self.streams.streaming.insert(user, id);
        self.out.push(Output::Live(LiveCmd::Start {
            stream: id,
            streamer: user,
            bitrate,
            recording,
            layers: if layers.is_empty() {
                vec![(hum_proto::mesh::Layer::High, bitrate)]
            } else {
                layers.iter().map(|l| (l.layer.mesh(), l.bitrate)).collect()
            },
        }));
        self.event_to_server(
            server,
            Event::StreamStarted {
                stream: info.clone(),
            },
        );
        Ok(Reply::Stream { stream: info })
    }

    pub(super) fn stream_end(&mut self, user: UserId, stream: StreamId) -> HubResult {
        if self.streams.streaming.get(&user) != Some(&stream) {
            return Err(err(
                ErrorCode::NotFound,
                "you are not streaming that stream",
            ));
        }
        self.end_stream(stream);
        Ok(Reply::Ok)
    }

    /// Remove a stream and tell the server's members (viewers are members, so they hear it too).
    pub(super) fn end_stream(&mut self, stream: StreamId) {
        let Some(r) = self.streams.by_id.remove(&stream) else {
            return;
        };
        self.streams.streaming.remove(&r.info.streamer.id);
        self.out.push(Output::Live(LiveCmd::End { stream }));
        if let (Some(recs), Some(id)) = (&self.recordings, r.recording)
            && let Err(e) = recs.end(id)
        {
            tracing::warn!("ending recording {id}: {e}");
        }
        for v in r.viewers.keys() {
            if let Some(w) = self.streams.watching.get_mut(v) {
                w.remove(&stream);
                if w.is_empty() {
                    self.streams.watching.remove(v);
                }
            }
        }
        self.event_to_server(
            r.info.server,
            Event::StreamEnded {
                stream,
                server: r.info.server,
                channel: r.info.channel,
            },
        );
    }

    pub(super) fn stream_list(&self, user: UserId, server: hum_proto::ServerId) -> HubResult {
        self.role_in(server, &user)?;
        let streams = self
            .streams
            .by_id
            .values()
            .filter(|r| r.info.server == server)
            .filter_map(|r| self.streams.info(r.info.id))
            .collect();
        Ok(Reply::Streams { streams })
    }

    pub(super) fn stream_join(
        &mut self,
        user: UserId,
        stream: StreamId,
        relay: Option<Bitrate>,
        layer: Option<StreamLayerName>,
    ) -> HubResult {
        let (channel, streamer, layer) = {
            let r =
                self.streams.by_id.get(&stream).ok_or_else(|| {
                    err(ErrorCode::NotFound, "no such stream (it may have ended)")
                })?;
            let layer = pick_layer(&r.info.layers, layer);
            (r.info.channel, r.info.streamer.id, layer)
        };
        if streamer == user {
            return Err(err(
                ErrorCode::BadRequest,
                "you cannot watch your own stream",
            ));
        }
        let perms = {
            let ch = self
                .model
                .channels
                .get(&channel)
                .ok_or_else(|| err(ErrorCode::NotFound, "no such channel"))?;
            let role = self.role_in(ch.server, &user)?;
            ch.permissions.for_role(role)
        };
        if !perms.join {
            return Err(err(
                ErrorCode::Forbidden,
                "you may not join that stream's channel",
            ));
        }
        let relay = relay.unwrap_or(Bitrate::ZERO);
        let r = self.streams.by_id.get_mut(&stream).expect("checked above");
        if !r.viewers.contains_key(&user) && r.viewers.len() >= MAX_VIEWERS {
            return Err(err(
                ErrorCode::LimitReached,
                "this stream has as many viewers as it can take",
            ));
        }
        let again = r.viewers.insert(user, relay).is_some();
        let old_layer = r.layer_of.insert(user, layer);
        self.streams
            .watching
            .entry(user)
            .or_default()
            .insert(stream);
        if again && old_layer == Some(layer) {
            // The same swarm: the offer is updated in place (a leave and a join would move
            // every viewer it feeds); the host seats it again if it had announced its leave.
            self.out.push(Output::Live(LiveCmd::Budget {
                stream,
                user,
                relay,
            }));
        } else {
            if again {
                self.out.push(Output::Live(LiveCmd::Left { stream, user }));
            }
            self.out.push(Output::Live(LiveCmd::Joined {
                stream,
                user,
                relay,
                layer: layer.mesh(),
            }));
        }
        // A join again (another layer, another relay share) is not a new viewer.
        if !again {
            self.event_to_user(
                &streamer,
                Event::StreamViewer {
                    stream,
                    user,
                    relay,
                    joined: true,
                },
            );
        }
        let info = self.streams.info(stream).expect("present");
        Ok(Reply::Stream { stream: info })
    }

    pub(super) fn stream_leave(&mut self, user: UserId, stream: StreamId) -> HubResult {
        let left = self.leave_stream(&user, stream);
        if !left {
            return Err(err(ErrorCode::NotFound, "you are not watching that stream"));
        }
        Ok(Reply::Ok)
    }

    fn leave_stream(&mut self, user: &UserId, stream: StreamId) -> bool {
        let Some(r) = self.streams.by_id.get_mut(&stream) else {
            return false;
        };
        if r.viewers.remove(user).is_none() {
            return false;
        }
        r.layer_of.remove(user);
        let streamer = r.info.streamer.id;
        self.out.push(Output::Live(LiveCmd::Left {
            stream,
            user: *user,
        }));
        if let Some(w) = self.streams.watching.get_mut(user) {
            w.remove(&stream);
            if w.is_empty() {
                self.streams.watching.remove(user);
            }
        }
        self.event_to_user(
            &streamer,
            Event::StreamViewer {
                stream,
                user: *user,
                relay: Bitrate::ZERO,
                joined: false,
            },
        );
        true
    }

    /// `user`'s session ended: its stream ends, and it leaves every stream it watched.
    pub(super) fn streams_session_ended(&mut self, user: &UserId) {
        for members in self.streams.swarms.values_mut() {
            members.retain(|u| u != user);
        }
        self.streams.swarms.retain(|_, m| !m.is_empty());
        if let Some(s) = self.streams.streaming.get(user).copied() {
            self.end_stream(s);
        }
        let watched: Vec<StreamId> = self
            .streams
            .watching
            .get(user)
            .map(|w| w.iter().copied().collect())
            .unwrap_or_default();
        for s in watched {
            self.leave_stream(user, s);
        }
    }

    pub(super) fn stream_signal(
        &mut self,
        user: UserId,
        stream: StreamId,
        to: UserId,
        signal: MeshSignal,
    ) -> HubResult {
        if to == user {
            return Err(err(ErrorCode::BadRequest, "you cannot signal yourself"));
        }
        if !self.streams.member(stream, &user) {
            return Err(err(ErrorCode::Forbidden, "you are not in that stream"));
        }
        if !self.streams.member(stream, &to) {
            return Err(err(ErrorCode::NotFound, "that user is not in that stream"));
        }
        let streamer = self.streams.by_id.get(&stream).map(|r| r.info.streamer.id);
        if streamer == Some(to) {
            // The streamer's key names the root, which the relay hosts.
            return match signal {
                MeshSignal::Want { .. } | MeshSignal::Ban { .. } | MeshSignal::Leave => {
                    self.out.push(Output::Live(LiveCmd::Signal {
                        stream,
                        from: user,
                        signal,
                    }));
                    Ok(Reply::Ok)
                }
                _ => Err(err(
                    ErrorCode::BadRequest,
                    "the relay is this stream's root: fetch from it on /mesh (stream_mesh)",
                )),
            };
        }
        let conn = self
            .conn_of(&to)
            .ok_or_else(|| err(ErrorCode::NotFound, "that user is offline"))?;
        self.send(
            vec![conn],
            ServerMessage::event(Event::StreamSignal {
                stream,
                from: user,
                signal,
            }),
        );
        Ok(Reply::Ok)
    }
}

/// Viewers of a recording a joiner is told to link to.
const SWARM_PEERS: usize = 8;

impl Hub {
    /// A ticket for `/mesh` (the streamer's upload or a viewer's link to the root).
    pub(super) fn stream_mesh(&mut self, user: UserId, stream: StreamId) -> HubResult {
        if !self.streams.member(stream, &user) {
            return Err(err(
                ErrorCode::Forbidden,
                "you are not the streamer or a viewer of that stream",
            ));
        }
        let ticket = self.ticket();
        self.out.push(Output::Live(LiveCmd::Ticket {
            ticket: ticket.clone(),
            stream,
            user,
        }));
        Ok(Reply::MeshTicket { ticket })
    }

    fn ticket(&mut self) -> String {
        use rand::RngCore;
        let mut b = [0u8; 16];
        self.rng.fill_bytes(&mut b);
        hex::encode(b)
    }

    /// The root (in `crate::live`) signals a viewer: it comes from the streamer's id, which
    /// names the root.
    pub fn live_signal(&mut self, stream: StreamId, to: UserId, signal: MeshSignal) {
        let Some(r) = self.streams.by_id.get(&stream) else {
            return;
        };
        let from = r.info.streamer.id;
        if !r.viewers.contains_key(&to) {
            return;
        }
        if let Some(conn) = self.conn_of(&to) {
            self.send(
                vec![conn],
                ServerMessage::event(Event::StreamSignal {
                    stream,
                    from,
                    signal,
                }),
            );
        }
    }

    fn recordings_or_err(
        &self,
    ) -> Result<&crate::recording::Recordings, hum_proto::signal::ProtoError> {
        self.recordings
            .as_ref()
            .ok_or_else(|| err(ErrorCode::NotFound, "this relay does not keep recordings"))
    }

    pub(super) fn recording_list(&self, user: UserId, server: hum_proto::ServerId) -> HubResult {
        self.role_in(server, &user)?;
        let recordings = self.recordings_or_err()?.list(server);
        Ok(Reply::Recordings { recordings })
    }

    /// The recording, if `user` may watch it (`join` in its channel).
    fn recording_for(
        &self,
        user: UserId,
        id: u64,
    ) -> Result<RecordingInfo, hum_proto::signal::ProtoError> {
        let info = self
            .recordings_or_err()?
            .info(id)
            .ok_or_else(|| err(ErrorCode::NotFound, "no such recording"))?;
        let role = self.role_in(info.server, &user)?;
        let join = self
            .model
            .channels
            .get(&info.channel)
            .is_none_or(|ch| ch.permissions.for_role(role).join);
        if !join {
            return Err(err(
                ErrorCode::Forbidden,
                "you may not join that recording's channel",
            ));
        }
        Ok(info)
    }

    pub(super) fn recording_open(&mut self, user: UserId, id: u64) -> HubResult {
        self.recording_for(user, id)?;
        let ticket = self.ticket();
        self.out.push(Output::Live(LiveCmd::PlayTicket {
            ticket: ticket.clone(),
            recording: id,
        }));
        Ok(Reply::MeshTicket { ticket })
    }

    /// Join a recording's on-demand swarm: a ticket to the store (the root) and the other
    /// viewers now (the newest 8), to whom the joiner offers links.
    pub(super) fn recording_join(&mut self, user: UserId, id: u64) -> HubResult {
        self.recording_for(user, id)?;
        let ticket = self.ticket();
        self.out.push(Output::Live(LiveCmd::PlayTicket {
            ticket: ticket.clone(),
            recording: id,
        }));
        let members = self.streams.swarms.entry(id).or_default();
        members.retain(|u| *u != user);
        let peers: Vec<UserId> = members.iter().rev().take(SWARM_PEERS).copied().collect();
        members.push(user);
        Ok(Reply::RecordingSwarm { ticket, peers })
    }

    pub(super) fn recording_leave(&mut self, user: UserId, id: u64) -> HubResult {
        if let Some(m) = self.streams.swarms.get_mut(&id) {
            m.retain(|u| *u != user);
            if m.is_empty() {
                self.streams.swarms.remove(&id);
            }
        }
        Ok(Reply::Ok)
    }

    /// Forward signalling between two viewers of the same recording's swarm.
    pub(super) fn recording_signal(
        &mut self,
        user: UserId,
        recording: u64,
        to: UserId,
        signal: MeshSignal,
    ) -> HubResult {
        if to == user {
            return Err(err(ErrorCode::BadRequest, "you cannot signal yourself"));
        }
        let members = self.streams.swarms.get(&recording);
        if !members.is_some_and(|m| m.contains(&user)) {
            return Err(err(
                ErrorCode::Forbidden,
                "you are not watching that recording (recording_join)",
            ));
        }
        if !members.is_some_and(|m| m.contains(&to)) {
            return Err(err(
                ErrorCode::NotFound,
                "that user is not watching that recording",
            ));
        }
        if !matches!(
            signal,
            MeshSignal::Offer { .. } | MeshSignal::Answer { .. } | MeshSignal::Bye
        ) {
            return Err(err(
                ErrorCode::BadRequest,
                "only offer, answer and bye go between viewers of a recording",
            ));
        }
        let conn = self
            .conn_of(&to)
            .ok_or_else(|| err(ErrorCode::NotFound, "that user is offline"))?;
        self.send(
            vec![conn],
            ServerMessage::event(Event::RecordingSignal {
                recording,
                from: user,
                signal,
            }),
        );
        Ok(Reply::Ok)
    }

    pub(super) fn recording_delete(&mut self, user: UserId, id: u64) -> HubResult {
        let info = self
            .recordings_or_err()?
            .info(id)
            .ok_or_else(|| err(ErrorCode::NotFound, "no such recording"))?;
        if info.streamer.id != user {
            return Err(err(
                ErrorCode::Forbidden,
                "only the streamer may delete a recording",
            ));
        }
        if !info.ended {
            return Err(err(
                ErrorCode::InvalidState,
                "the stream is still live: end it first",
            ));
        }
        self.recordings_or_err()?.delete(id).map_err(|e| {
            tracing::error!("deleting recording {id}: {e}");
            err(ErrorCode::Internal, "could not delete the recording")
        })?;
        Ok(Reply::Ok)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use hum_proto::signal::{ChannelPermissions, DisplayName, Permissions, Request};
    use hum_proto::{RequestId, ServerId};
    use rand::SeedableRng;

    use super::super::{ConnId, HubConfig, Output};
    use super::*;
    use crate::store::Store;
    use hum_proto::mesh::Layer;

    /// A hub with users 1..=n logged in on connection n (its own small harness: the hub's
    /// shared one is private to its tests module).
    struct W {
        hub: Hub,
        re: u64,
        inbox: HashMap<ConnId, Vec<ServerMessage>>,
        live: Vec<LiveCmd>,
    }

    fn user(n: u8) -> UserId {
        UserId([n; 32])
    }

    impl W {
        fn new(n: u8) -> W {
            let store = Store::open_in_memory().unwrap();
            let hub = Hub::new(
                store,
                HubConfig::default(),
                rand_chacha::ChaCha8Rng::seed_from_u64(1),
            )
            .unwrap();
            let mut w = W {
                hub,
                re: 0,
                inbox: HashMap::new(),
                live: Vec::new(),
            };
            for u in 1..=n {
                w.re += 1;
                let name = DisplayName::new(format!("user{u}")).unwrap();
                w.hub
                    .login(1_000, u as ConnId, RequestId(w.re), user(u), Some(name));
                w.pump();
            }
            w
        }
        fn pump(&mut self) {
            for out in self.hub.drain() {
                match out {
                    Output::Send { to, msg } => {
                        for c in to {
                            self.inbox.entry(c).or_default().push(msg.clone());
                        }
                    }
                    Output::Live(cmd) => self.live.push(cmd),
                    _ => {}
                }
            }
            self.hub.check().unwrap();
        }
        fn req(&mut self, n: u8, req: Request) -> Result<Reply, ErrorCode> {
            self.re += 1;
            let re = RequestId(self.re);
            self.hub.request(2_000, n as ConnId, re, req);
            self.pump();
            let inbox = self.inbox.entry(n as ConnId).or_default();
            let pos = inbox
                .iter()
                .position(|m| matches!(m, ServerMessage::Reply { re: r, .. } | ServerMessage::Error { re: Some(r), .. } if *r == re))
                .expect("every request gets an answer");
            match inbox.remove(pos) {
                ServerMessage::Reply { reply, .. } => Ok(reply),
                ServerMessage::Error { code, .. } => Err(code),
                ServerMessage::Event { .. } => unreachable!(),
            }
        }
        fn events(&mut self, n: u8) -> Vec<Event> {
            self.inbox
                .remove(&(n as ConnId))
                .unwrap_or_default()
                .into_iter()
                .filter_map(|m| match m {
                    ServerMessage::Event { event } => Some(event),
                    _ => None,
                })
                .collect()
        }
    }

    /// A server owned by user 1 with user 2 as a member.
    fn server_with_member(w: &mut W) -> ServerId {
        let server: ServerId = match w.req(
            1,
            Request::ServerCreate {
                name: Name::new("s").unwrap(),
            },
        ) {
            Ok(Reply::Server { server }) => server.id,
            r => panic!("{r:?}"),
        };
        let code = match w.req(
            1,
            Request::InviteCreate {
                server,
                max_uses: None,
                expires_in_secs: None,
            },
        ) {
            Ok(Reply::Invite { invite }) => invite.code,
            r => panic!("{r:?}"),
        };
        w.req(2, Request::InviteJoin { code }).unwrap();
        server
    }

    fn live_channel(
        w: &mut W,
        server: ServerId,
        permissions: Option<ChannelPermissions>,
    ) -> ChannelId {
        match w.req(
            1,
            Request::ChannelCreate {
                server,
                name: Name::new("live").unwrap(),
                max_participants: None,
                permissions,
            },
        ) {
            Ok(Reply::Channel { channel }) => channel.id,
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn stream_lifecycle_permissions_and_signal_scope() {
        // 1 owns the server, 2 is a member, 3 is not.
        let mut w = W::new(3);
        let server = server_with_member(&mut w);
        let mut perms = ChannelPermissions::default();
        perms.member = Permissions {
            stream: false,
            ..perms.member
        };
        let chan = live_channel(&mut w, server, Some(perms));
        let start_ms = |title: &str, chunk_ms| Request::StreamStart {
            channel: chan,
            title: Name::new(title).unwrap(),
            bitrate: Bitrate::from_kbps(500),
            chunk_ms,
            started_ms: None,
            record: false,
            layers: vec![],
        };
        let start = |title: &str| start_ms(title, 250);
        // A member without `stream` may not go live.
        assert_eq!(w.req(2, start("no")), Err(ErrorCode::Forbidden));
        w.events(2);
        let info = match w.req(1, start("hello")) {
            Ok(Reply::Stream { stream }) => stream,
            r => panic!("{r:?}"),
        };
        assert_eq!(info.started_ms, 2_000);
        assert!(
            w.events(2)
                .iter()
                .any(|e| matches!(e, Event::StreamStarted { .. }))
        );
        assert_eq!(w.req(1, start("again")), Err(ErrorCode::InvalidState));
        assert_eq!(w.req(1, start_ms("short", 50)), Err(ErrorCode::BadRequest));
        // A non-member can neither watch nor signal.
        let join = |relay| Request::StreamJoin {
            stream: info.id,
            relay,
            layer: None,
        };
        assert_eq!(w.req(3, join(None)), Err(ErrorCode::NotMember));
        assert_eq!(w.req(1, join(None)), Err(ErrorCode::BadRequest));
        match w.req(2, join(Some(Bitrate::from_mbps(2)))) {
            Ok(Reply::Stream { stream }) => assert_eq!(stream.viewers, 1),
            r => panic!("{r:?}"),
        }
        assert!(w.events(1).iter().any(|e| matches!(
            e,
            Event::StreamViewer { joined: true, relay, .. } if *relay == Bitrate::from_mbps(2)
        )));
        // Signals flow between members of the stream only, `from` set by the relay.
        let sig = |to| Request::StreamSignal {
            stream: info.id,
            to,
            signal: MeshSignal::Want { count: 1 },
        };
        // The root (hosted by the relay, named by the streamer's key) gets viewers' `want`s.
        assert_eq!(w.req(2, sig(user(1))), Ok(Reply::Ok));
        assert!(w.live.iter().any(|c| matches!(
            c,
            LiveCmd::Signal { from, signal: MeshSignal::Want { count: 1 }, .. } if *from == user(2)
        )));
        assert!(w.live.iter().any(
            |c| matches!(c, LiveCmd::Joined { user: u, layer: Layer::High, .. } if *u == user(2))
        ));
        // A graceful leave is announced to the root the same way.
        let leave = Request::StreamSignal {
            stream: info.id,
            to: user(1),
            signal: MeshSignal::Leave,
        };
        assert_eq!(w.req(2, leave), Ok(Reply::Ok));
        assert!(w.live.iter().any(|c| matches!(
            c,
            LiveCmd::Signal { from, signal: MeshSignal::Leave, .. } if *from == user(2)
        )));
        // A one-layer stream has only `high`, whatever a viewer asks: joining again after
        // the announced leave stays in the same swarm (the host seats it again).
        w.live.clear();
        w.req(
            2,
            Request::StreamJoin {
                stream: info.id,
                relay: Some(Bitrate::from_mbps(2)),
                layer: Some(StreamLayerName::Audio),
            },
        )
        .unwrap();
        assert_eq!(
            w.live,
            vec![LiveCmd::Budget {
                stream: info.id,
                user: user(2),
                relay: Bitrate::from_mbps(2),
            }]
        );
        // Its replies come from the streamer's id, to viewers only.
        w.hub
            .live_signal(info.id, user(2), MeshSignal::Gone { user: user(1) });
        w.hub
            .live_signal(info.id, user(3), MeshSignal::Gone { user: user(1) });
        w.pump();
        assert!(w.events(2).iter().any(|e| matches!(
            e,
            Event::StreamSignal { from, signal: MeshSignal::Gone { .. }, .. } if *from == user(1)
        )));
        assert!(w.events(3).is_empty());
        // Tickets for /mesh: the stream's members only.
        assert!(matches!(
            w.req(2, Request::StreamMesh { stream: info.id }),
            Ok(Reply::MeshTicket { .. })
        ));
        assert_eq!(
            w.req(3, Request::StreamMesh { stream: info.id }),
            Err(ErrorCode::Forbidden)
        );
        assert!(
            w.live
                .iter()
                .any(|c| matches!(c, LiveCmd::Ticket { user: u, .. } if *u == user(2)))
        );
        assert!(
            !w.live
                .iter()
                .any(|c| matches!(c, LiveCmd::Ticket { user: u, .. } if *u == user(3)))
        );
        assert_eq!(w.req(3, sig(user(1))), Err(ErrorCode::Forbidden));
        assert_eq!(w.req(1, sig(user(3))), Err(ErrorCode::NotFound));
        assert_eq!(w.req(2, sig(user(2))), Err(ErrorCode::BadRequest));
        match w.req(2, Request::StreamList { server }) {
            Ok(Reply::Streams { streams }) => assert_eq!(streams.len(), 1),
            r => panic!("{r:?}"),
        }
        assert_eq!(
            w.req(3, Request::StreamList { server }),
            Err(ErrorCode::NotMember)
        );
        // Leaving tells the streamer; watching again works.
        assert_eq!(
            w.req(2, Request::StreamLeave { stream: info.id }),
            Ok(Reply::Ok)
        );
        assert!(
            w.events(1)
                .iter()
                .any(|e| matches!(e, Event::StreamViewer { joined: false, .. }))
        );
        assert_eq!(
            w.req(2, Request::StreamLeave { stream: info.id }),
            Err(ErrorCode::NotFound)
        );
        w.req(2, join(None)).unwrap();
        // The streamer going offline ends the stream for everyone.
        w.hub.disconnect(3_000, 1);
        w.pump();
        assert!(
            w.events(2)
                .iter()
                .any(|e| matches!(e, Event::StreamEnded { .. }))
        );
        assert_eq!(w.hub.streams.len(), 0);
        assert!(w.live.iter().any(|c| matches!(c, LiveCmd::End { .. })));
        assert_eq!(w.req(2, join(None)), Err(ErrorCode::NotFound));
    }

    #[test]
    fn a_viewer_picks_a_layer_and_switches_without_counting_twice() {
        let mut w = W::new(2);
        let server = server_with_member(&mut w);
        let chan = live_channel(&mut w, server, None);
        let layer = |layer, kbps| StreamLayer {
            layer,
            bitrate: Bitrate::from_kbps(kbps),
            width: 0,
            height: 0,
        };
        let start = |layers| Request::StreamStart {
            channel: chan,
            title: Name::new("t").unwrap(),
            bitrate: Bitrate::from_kbps(500),
            chunk_ms: 250,
            started_ms: None,
            record: false,
            layers,
        };
        let twice = vec![
            layer(StreamLayerName::Low, 100),
            layer(StreamLayerName::Low, 90),
        ];
        assert_eq!(w.req(1, start(twice)), Err(ErrorCode::BadRequest));
        let info = match w.req(
            1,
            start(vec![
                layer(StreamLayerName::High, 500),
                layer(StreamLayerName::Low, 150),
                layer(StreamLayerName::Audio, 40),
            ]),
        ) {
            Ok(Reply::Stream { stream }) => stream,
            r => panic!("{r:?}"),
        };
        assert_eq!(info.layers.len(), 3);
        assert!(w.live.iter().any(|c| matches!(
            c,
            LiveCmd::Start { layers, .. } if layers.len() == 3 && layers[1] == (Layer::Low, Bitrate::from_kbps(150))
        )));
        w.events(1);
        let join = |layer| Request::StreamJoin {
            stream: info.id,
            relay: None,
            layer,
        };
        // No medium layer: the best below it.
        w.live.clear();
        w.req(2, join(Some(StreamLayerName::Medium))).unwrap();
        assert!(w.live.iter().any(|c| matches!(
            c,
            LiveCmd::Joined {
                layer: Layer::Low,
                ..
            }
        )));
        // The same layer again: the offer (unchanged here) updated in place, the swarm kept.
        w.live.clear();
        w.req(2, join(Some(StreamLayerName::Low))).unwrap();
        assert_eq!(
            w.live,
            vec![LiveCmd::Budget {
                stream: info.id,
                user: user(2),
                relay: Bitrate::ZERO,
            }]
        );
        w.live.clear();
        // The same layer, another offer: updated in place, the swarm kept.
        w.req(
            2,
            Request::StreamJoin {
                stream: info.id,
                relay: Some(Bitrate::from_kbps(900)),
                layer: Some(StreamLayerName::Low),
            },
        )
        .unwrap();
        assert_eq!(
            w.live,
            vec![LiveCmd::Budget {
                stream: info.id,
                user: user(2),
                relay: Bitrate::from_kbps(900),
            }]
        );
        w.live.clear();
        w.req(2, join(Some(StreamLayerName::Audio))).unwrap();
        assert!(matches!(
            w.live.as_slice(),
            [
                LiveCmd::Left { .. },
                LiveCmd::Joined {
                    layer: Layer::Audio,
                    ..
                }
            ]
        ));
        // The streamer heard one viewer, once.
        let joins = w
            .events(1)
            .iter()
            .filter(|e| matches!(e, Event::StreamViewer { joined: true, .. }))
            .count();
        assert_eq!(joins, 1);
        match w.req(2, join(None)) {
            Ok(Reply::Stream { stream }) => assert_eq!(stream.viewers, 1),
            r => panic!("{r:?}"),
        }
        assert!(w.live.iter().any(|c| matches!(
            c,
            LiveCmd::Joined {
                layer: Layer::High,
                ..
            }
        )));
    }

    #[test]
    fn a_recordings_swarm_introduces_viewers_and_carries_only_their_signalling() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = W::new(3);
        w.hub
            .set_recordings(crate::recording::Recordings::open(dir.path()).unwrap());
        let server = server_with_member(&mut w);
        let chan = live_channel(&mut w, server, None);
        let stream = match w.req(
            1,
            Request::StreamStart {
                channel: chan,
                title: Name::new("rec").unwrap(),
                bitrate: Bitrate::from_kbps(500),
                chunk_ms: 250,
                started_ms: None,
                record: true,
                layers: vec![],
            },
        ) {
            Ok(Reply::Stream { stream }) => stream.id,
            r => panic!("{r:?}"),
        };
        w.req(1, Request::StreamEnd { stream }).unwrap();
        let id = match w.req(2, Request::RecordingList { server }) {
            Ok(Reply::Recordings { recordings }) => recordings[0].id,
            r => panic!("{r:?}"),
        };
        // User 3 is not in the server: no swarm for it.
        assert_eq!(
            w.req(3, Request::RecordingJoin { recording: id }),
            Err(ErrorCode::NotMember)
        );
        let join = |w: &mut W, n| match w.req(n, Request::RecordingJoin { recording: id }) {
            Ok(Reply::RecordingSwarm { ticket, peers }) => (ticket, peers),
            r => panic!("{r:?}"),
        };
        let (t1, p1) = join(&mut w, 1);
        assert!(p1.is_empty(), "the first viewer is alone");
        let (t2, p2) = join(&mut w, 2);
        assert_eq!(p2, vec![user(1)], "the second is told of the first");
        assert_ne!(t1, t2);
        // Each ticket opens the store for that recording.
        let tickets: Vec<&LiveCmd> = w
            .live
            .iter()
            .filter(|c| matches!(c, LiveCmd::PlayTicket { recording, .. } if *recording == id))
            .collect();
        assert_eq!(tickets.len(), 2);
        let offer = MeshSignal::Offer { sdp: "x".into() };
        w.req(
            2,
            Request::RecordingSignal {
                recording: id,
                to: user(1),
                signal: offer.clone(),
            },
        )
        .unwrap();
        assert!(w.events(1).iter().any(|e| matches!(e,
            Event::RecordingSignal { recording, from, signal }
                if *recording == id && *from == user(2) && *signal == offer)));
        // Tracker signals have no business between viewers of a recording.
        assert_eq!(
            w.req(
                2,
                Request::RecordingSignal {
                    recording: id,
                    to: user(1),
                    signal: MeshSignal::Want { count: 1 },
                },
            ),
            Err(ErrorCode::BadRequest)
        );
        // A viewer who left is no longer reachable, nor told to newcomers.
        w.req(1, Request::RecordingLeave { recording: id }).unwrap();
        assert_eq!(
            w.req(
                2,
                Request::RecordingSignal {
                    recording: id,
                    to: user(1),
                    signal: offer,
                },
            ),
            Err(ErrorCode::NotFound)
        );
        let (_, again) = join(&mut w, 1);
        assert_eq!(again, vec![user(2)]);
    }
}
