//! Voice channels over the relay: a [`Signaller`] that forwards through [`RelayClient`] (calls
//! use it too, see [`crate::calls`]), and the glue that turns relay events (roster changes,
//! forwarded signals) into session calls, and session events (speaking, mute, deafen) into
//! `voice_update`s every roster shows.
//!
//! Mesh or SFU: the relay says which in `joined` and `channel_mode`. Moving from one to the
//! other is make-before-break: the new path (the SFU connection, or the mesh connections) is
//! opened while the old one still plays; each member's audio switches over at its first packet
//! on the new path ([`super::audio::Router`]); the old path is closed once everyone is heard
//! over the new one (plus a grace second for the others to hear us), or after 4 s.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hum_media::processing::CaptureControls;
use hum_media::{AudioSink, AudioSource};
use hum_proto::signal::{
    Event, Permissions, SignalPayload, SignalScope, VoiceState, VoiceStatePatch, VoiceTopology,
};
use hum_proto::{ChannelId, ServerId, UserId};
use tokio::sync::{broadcast, mpsc};

use super::audio::AudioPath;
use super::sfu::{SfuPeer, SfuSignal};
use super::{Signaller, VideoIo, VoiceConfig, VoiceError, VoiceEvent, VoiceSession};
use crate::relay::{ClientEvent, RelayClient};

/// Sends SDP/ICE through the relay, scoped to a call or a channel.
#[derive(Clone)]
pub struct RelaySignaller {
    client: RelayClient,
    scope: SignalScope,
}

impl std::fmt::Debug for RelaySignaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelaySignaller")
            .field("scope", &self.scope)
            .finish()
    }
}

impl RelaySignaller {
    pub fn new(client: RelayClient, scope: SignalScope) -> Self {
        Self { client, scope }
    }
}

#[async_trait::async_trait]
impl Signaller for RelaySignaller {
    async fn send(&self, to: UserId, payload: SignalPayload) -> Result<(), String> {
        self.client
            .signal(to, self.scope, payload)
            .await
            .map_err(|e| e.to_string())
    }
}

/// A running voice channel. Dropping it does not leave: call [`VoiceLink::leave`]. (1-on-1
/// calls are [`crate::calls::Calls`].)
pub struct VoiceLink {
    pub session: Arc<VoiceSession>,
    client: RelayClient,
    channel: ChannelId,
    server: ServerId,
    pump: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for VoiceLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceLink")
            .field("channel", &self.channel)
            .finish()
    }
}

/// Audio endpoints and settings for a session.
pub struct AudioIo {
    pub source: Box<dyn AudioSource>,
    pub sink: Box<dyn AudioSink>,
    pub controls: CaptureControls,
}

impl std::fmt::Debug for AudioIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioIo")
            .field("source", &self.source.name())
            .field("sink", &self.sink.name())
            .finish()
    }
}

fn relay_err(e: impl std::fmt::Display) -> VoiceError {
    VoiceError::Signalling(e.to_string())
}

impl VoiceLink {
    /// Joins voice channel `channel` and connects to everyone in it: a mesh connection to each
    /// member, or one connection to the relay's SFU when the channel is in SFU mode; and
    /// moves between the two when the relay switches the channel's mode.
    pub async fn join_channel(
        client: RelayClient,
        channel: ChannelId,
        cfg: VoiceConfig,
        io: AudioIo,
    ) -> Result<(Self, mpsc::UnboundedReceiver<VoiceEvent>), VoiceError> {
        Self::join_channel_with_video(client, channel, cfg, io, VideoIo::default()).await
    }

    /// [`join_channel`](Self::join_channel) with video: our camera to every mesh peer (one
    /// VP8 layer) or to the SFU (three simulcast layers), and everyone's cameras received (see
    /// [`super::video`], [`super::sfu_video`]).
    pub async fn join_channel_with_video(
        client: RelayClient,
        channel: ChannelId,
        cfg: VoiceConfig,
        io: AudioIo,
        video: VideoIo,
    ) -> Result<(Self, mpsc::UnboundedReceiver<VoiceEvent>), VoiceError> {
        let me = client.user_id();
        let relay_events = client.subscribe();
        // Our camera is in the roster (`video`): the others' engines hold back our frames while
        // it says off, and the relay may refuse it (the channel's `video` permission).
        let sends_video = video.source.is_some();
        let initial = VoiceState {
            muted: io.controls.muted(),
            video: sends_video,
            ..Default::default()
        };
        let (info, perms, mode) = client
            .channel_join_mode(channel, initial)
            .await
            .map_err(relay_err)?;
        let others: Vec<UserId> = info
            .roster
            .iter()
            .map(|e| e.user.id)
            .filter(|u| *u != me)
            .collect();
        if mode == VoiceTopology::Mesh
            && let Err(e) = VoiceSession::check_capacity(others.len())
        {
            let _ = client.channel_leave().await;
            return Err(e);
        }
        let signaller = Arc::new(RelaySignaller::new(
            client.clone(),
            SignalScope::Channel(channel),
        ));
        let (session, events) = VoiceSession::start_with_video(
            me,
            cfg.clone(),
            io.source,
            io.sink,
            io.controls,
            video,
            signaller,
        )?;
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        // Before any connection is up: nothing leaves that the channel does not allow.
        session.set_speak_allowed(perms.speak);
        session.set_video_allowed(perms.video);
        for e in &info.roster {
            if e.user.id == me {
                if sends_video && !e.voice.video {
                    // The relay cleared our camera: no `video` permission here.
                    session.set_camera(false);
                    let _ = out_tx.send(VoiceEvent::Error(
                        "you may not send video in this channel: your camera stays off".into(),
                    ));
                }
            } else {
                session.set_remote_camera(e.user.id, e.voice.video);
            }
        }
        let (sfu_tx, sfu_rx) = mpsc::unbounded_channel();
        let mut state = LinkState {
            client: client.clone(),
            session: session.clone(),
            here: channel,
            cfg,
            out: out_tx,
            mode,
            roster: others.iter().copied().collect(),
            sfu: None,
            generation: 0,
            sfu_tx,
            moving_since: None,
        };
        match mode {
            VoiceTopology::Mesh => {
                for u in &others {
                    if let Err(e) = session.add_peer(*u).await {
                        tracing::warn!(user = %u, "connecting: {e}");
                        let _ = state
                            .out
                            .send(VoiceEvent::Error(format!("connecting to {u}: {e}")));
                    }
                }
            }
            VoiceTopology::Sfu => {
                session.audio().prefer(AudioPath::Sfu);
                if let Err(e) = state.connect_sfu().await {
                    session.leave().await;
                    let _ = client.channel_leave().await;
                    return Err(e);
                }
            }
        }
        let pump = tokio::spawn(pump(state, relay_events, events, sfu_rx));
        Ok((
            Self {
                session,
                client,
                channel,
                server: info.server,
                pump,
            },
            out_rx,
        ))
    }

    /// Our microphone level (after noise suppression, before the gate) and whether the gate
    /// (mute / push-to-talk / voice activity) is open, about 20 times a second: for the app's
    /// input meter. The newest value wins; reading it never holds up audio.
    pub fn input_level(&self) -> tokio::sync::watch::Receiver<hum_media::monitor::InputLevel> {
        self.session.controls().input_level()
    }

    pub fn channel(&self) -> ChannelId {
        self.channel
    }

    /// The server the channel belongs to.
    pub fn server(&self) -> ServerId {
        self.server
    }

    /// Which layer of `user`'s camera we want (the spotlight high, thumbnails low, hidden
    /// off). In a mesh it goes to `user` (the `video_quality` signal: they encode the layers
    /// someone wants, once each); on the SFU to the relay (`sfu_quality`; `Auto` lets the SFU
    /// follow the dominant speaker), which keeps it for a camera `user` turns on later.
    pub async fn set_video_quality(
        &self,
        user: UserId,
        quality: hum_proto::signal::VideoQuality,
    ) -> Result<(), VoiceError> {
        self.session.set_video_quality(user, quality).await?;
        let in_mesh = !self.session.peers().await.is_empty();
        match self.client.sfu_quality(user, quality).await {
            Ok(()) => Ok(()),
            // In a mesh the relay has nothing to choose; the peer was told.
            Err(_) if in_mesh => Ok(()),
            Err(e) => Err(relay_err(e)),
        }
    }

    /// Leaves the channel, closes every connection and finishes the audio sink.
    pub async fn leave(self) {
        let _ = self.client.channel_leave().await;
        self.session.leave().await;
        self.pump.abort();
    }
}

/// How long a move between mesh and SFU may take before the old connections are closed
/// anyway (someone who never arrives over the new path is not waited for).
const MOVE_TIMEOUT: Duration = Duration::from_secs(4);
/// Once everyone is heard over the new path, the old one stays this long, so that the others,
/// who may still be hearing us over it, have time to hear us over the new one too.
const MOVE_GRACE: Duration = Duration::from_secs(1);

/// The voice link's own state: the channel's mode, who is in it, and the SFU connection.
struct LinkState {
    client: RelayClient,
    session: Arc<VoiceSession>,
    here: ChannelId,
    cfg: VoiceConfig,
    out: mpsc::UnboundedSender<VoiceEvent>,
    mode: VoiceTopology,
    /// The other members.
    roster: BTreeSet<UserId>,
    sfu: Option<Arc<SfuPeer>>,
    /// Bumped per SFU connection, so signals of a closed one are ignored.
    generation: u64,
    sfu_tx: mpsc::UnboundedSender<(u64, SfuSignal)>,
    /// Moving to `mode` since then; the old path closes once everyone is heard over the new
    /// one (plus [`MOVE_GRACE`]) or after [`MOVE_TIMEOUT`].
    moving_since: Option<Instant>,
}

impl LinkState {
    /// Opens a (new) connection to the SFU: our offer in `sfu_join`, its answer back.
    async fn connect_sfu(&mut self) -> Result<(), VoiceError> {
        self.close_sfu().await;
        self.generation += 1;
        let (peer, mut signals) = SfuPeer::new(
            self.session.me(),
            &self.cfg,
            self.session.audio(),
            self.session.video(),
        )
        .await?;
        let (tx, generation) = (self.sfu_tx.clone(), self.generation);
        tokio::spawn(async move {
            while let Some(s) = signals.recv().await {
                if tx.send((generation, s)).is_err() {
                    return;
                }
            }
        });
        let peer = Arc::new(peer);
        self.sfu = Some(peer.clone());
        let offer = peer.offer().await?;
        let answer = self
            .client
            .sfu_join(self.here, offer)
            .await
            .map_err(relay_err)?;
        peer.accept_answer(answer).await
    }

    async fn close_sfu(&mut self) {
        if let Some(p) = self.sfu.take() {
            p.close().await;
            let audio = self.session.audio();
            for u in &self.roster {
                audio.remove_remote_via(u, AudioPath::Sfu);
            }
        }
    }

    /// Whether every other member is heard over the path of the current mode.
    fn all_moved(&self) -> bool {
        let want = match self.mode {
            VoiceTopology::Mesh => AudioPath::Mesh,
            VoiceTopology::Sfu => AudioPath::Sfu,
        };
        let audio = self.session.audio();
        self.roster.iter().all(|u| audio.path_of(u) == Some(want))
    }

    /// The relay switched the channel's mode: open the new path, keep the old one until the
    /// new one carries everyone.
    async fn switch(&mut self, mode: VoiceTopology) -> Result<(), VoiceError> {
        if mode == self.mode {
            return Ok(());
        }
        tracing::info!(?mode, "the channel changes mode");
        self.mode = mode;
        self.moving_since = Some(Instant::now());
        let audio = self.session.audio();
        match mode {
            VoiceTopology::Sfu => {
                audio.prefer(AudioPath::Sfu);
                self.connect_sfu().await
            }
            VoiceTopology::Mesh => {
                audio.prefer(AudioPath::Mesh);
                for u in self.roster.clone() {
                    if let Err(e) = self.session.add_peer(u).await {
                        tracing::warn!(user = %u, "connecting: {e}");
                    }
                }
                Ok(())
            }
        }
    }

    /// Closes the old path once the move is done (or has taken too long).
    async fn finish_move(&mut self, now: Instant) {
        let Some(since) = self.moving_since else {
            return;
        };
        let waited = now.duration_since(since);
        if waited < MOVE_TIMEOUT && !(self.all_moved() && waited >= MOVE_GRACE) {
            return;
        }
        self.moving_since = None;
        match self.mode {
            VoiceTopology::Sfu => {
                for u in self.session.peers().await {
                    self.session.remove_peer(u, "moved to the SFU").await;
                }
            }
            VoiceTopology::Mesh => {
                self.close_sfu().await;
                if let Err(e) = self.client.sfu_leave().await {
                    tracing::debug!("sfu_leave: {e}");
                }
            }
        }
        tracing::info!(mode = ?self.mode, after = ?waited, "move done; old connections closed");
    }

    async fn on_relay(&mut self, ev: ClientEvent) -> Result<(), VoiceError> {
        let me = self.session.me();
        let here = self.here;
        match ev {
            ClientEvent::Relay(Event::Signal {
                from,
                scope: SignalScope::Channel(c),
                payload,
            }) if c == here => {
                // On the SFU, a mesh offer from someone we have no connection to is a member
                // that had not seen the switch yet: not worth a connection.
                if self.mode == VoiceTopology::Sfu
                    && matches!(payload, SignalPayload::Offer { .. })
                    && !self.session.peers().await.contains(&from)
                {
                    return Ok(());
                }
                self.session.handle_signal(from, payload).await
            }
            ClientEvent::Relay(Event::ChannelMode { channel, mode, .. }) if channel == here => {
                self.switch(mode).await
            }
            ClientEvent::Relay(Event::SfuSpeaker { channel, user, .. }) if channel == here => {
                // The SFU's dominant speaker (a mesh has none: front ends use `Speaking` there).
                if self.mode == VoiceTopology::Sfu {
                    let _ = self.out.send(VoiceEvent::DominantSpeaker { user });
                }
                Ok(())
            }
            ClientEvent::Relay(Event::SfuLayers {
                channel,
                track,
                rids,
            }) if channel == here => {
                // Which layers of our camera anyone on the SFU takes: encode only those.
                if let Some(peer) = &self.sfu {
                    let mask = peer.set_wanted_layers(&track, &rids);
                    tracing::info!(%track, ?rids, ?mask, "SFU wants layers");
                }
                Ok(())
            }
            ClientEvent::Relay(Event::SfuPaused {
                channel,
                user,
                track,
                paused,
            }) if channel == here => {
                // A video of someone's that our link does not carry, paused by the SFU.
                if self.mode == VoiceTopology::Sfu {
                    let kind = super::VideoKind::of_track(&track);
                    tracing::info!(%user, %track, paused, "SFU paused a video for our link");
                    let _ = self
                        .out
                        .send(VoiceEvent::VideoPaused { user, kind, paused });
                }
                Ok(())
            }
            ClientEvent::Relay(Event::SfuOffer { channel, sdp }) if channel == here => {
                let Some(peer) = self.sfu.clone() else {
                    return Ok(());
                };
                let answer = peer.answer(sdp).await?;
                self.client.sfu_answer(answer).await.map_err(relay_err)
            }
            ClientEvent::Relay(Event::RosterJoin { channel, entry, .. })
                if channel == here && entry.user.id != me =>
            {
                self.roster.insert(entry.user.id);
                self.session
                    .set_remote_camera(entry.user.id, entry.voice.video);
                match self.mode {
                    VoiceTopology::Mesh => self.session.add_peer(entry.user.id).await,
                    // The SFU offers the newcomer's track when it publishes.
                    VoiceTopology::Sfu => Ok(()),
                }
            }
            ClientEvent::Relay(Event::RosterLeave {
                channel,
                user,
                reason,
                ..
            }) if channel == here => {
                self.roster.remove(&user);
                self.session.forget_remote_camera(&user);
                self.session.remove_peer(user, &format!("{reason:?}")).await;
                if self.sfu.is_some() && self.session.audio().path_of(&user) == Some(AudioPath::Sfu)
                {
                    self.session
                        .audio()
                        .remove_remote_via(&user, AudioPath::Sfu);
                    let _ = self.out.send(VoiceEvent::PeerLeft {
                        user,
                        reason: format!("{reason:?}"),
                    });
                }
                Ok(())
            }
            ClientEvent::Relay(Event::VoicePermissions {
                channel,
                permissions,
                ..
            }) if channel == here => {
                self.apply_permissions(permissions);
                Ok(())
            }
            ClientEvent::Relay(Event::RosterUpdate {
                channel,
                user,
                voice,
                ..
            }) if channel == here => {
                if user != me {
                    self.session.set_remote_camera(user, voice.video);
                } else if !voice.video && self.session.camera() == Some(true) {
                    // The relay turned our camera off (the `video` permission was taken away).
                    self.session.set_camera(false);
                    let _ = self.out.send(VoiceEvent::Error(
                        "you may no longer send video in this channel: your camera is off".into(),
                    ));
                }
                Ok(())
            }
            ClientEvent::Rejoined { channel } if channel.id == here => {
                for e in &channel.roster {
                    if e.user.id != me {
                        self.session.set_remote_camera(e.user.id, e.voice.video);
                    }
                }
                // After a relay reconnect: (re)connect to whoever is there now.
                self.roster = channel
                    .roster
                    .iter()
                    .map(|e| e.user.id)
                    .filter(|u| *u != me)
                    .collect();
                match self.mode {
                    VoiceTopology::Mesh => {
                        self.reconnect_mesh().await;
                        Ok(())
                    }
                    VoiceTopology::Sfu => self.connect_sfu().await,
                }
            }
            _ => Ok(()),
        }
    }

    /// What the relay says we may do in the channel now (`voice_permissions`): without `speak`
    /// we send no audio and say we are muted by the channel; without `video` our camera goes
    /// off. Given back, both stay off until the user turns them on.
    fn apply_permissions(&mut self, p: Permissions) {
        let (could_speak, camera) = (
            !self.session.muted_by_channel(),
            self.session.camera() == Some(true),
        );
        self.session.set_speak_allowed(p.speak);
        if could_speak && !p.speak {
            tracing::info!("the channel took our permission to speak: muted, sending no audio");
        }
        self.session.set_video_allowed(p.video);
        if camera && !p.video {
            let _ = self.out.send(VoiceEvent::Error(
                "you may no longer send video in this channel: your camera is off".into(),
            ));
        }
    }

    /// Our relay session is new (a reconnect, or another cluster node after ours died): the
    /// relay ended the old one, so every member saw us leave and come back and closed its
    /// connection to us. Their new ones cannot talk to ours (a new connection needs a new DTLS
    /// handshake, which a renegotiation of an old one never does), so:
    /// - towards members we offer to (the smaller id offers), a new connection and offer;
    /// - towards the others, nothing: their fresh offer replaces our connection when it comes
    ///   ([`VoiceSession::handle_signal`] tells a new connection's offer by its SDP session id),
    ///   in whatever order it and this `rejoined` arrive;
    /// - members no longer in the channel (a relay restart forgets who was in it until they
    ///   come back) are closed; their `roster_join` reconnects them.
    async fn reconnect_mesh(&mut self) {
        let me = self.session.me();
        for u in self.session.peers().await {
            if !self.roster.contains(&u) {
                self.session
                    .remove_peer(u, "not in the channel after reconnecting")
                    .await;
            }
        }
        for u in self.roster.clone() {
            let done = if me < u {
                self.session.reconnect_peer(u).await
            } else {
                self.session.add_peer(u).await
            };
            if let Err(e) = done {
                tracing::warn!(user = %u, "reconnecting: {e}");
                let _ = self
                    .out
                    .send(VoiceEvent::Error(format!("reconnecting to {u}: {e}")));
            }
        }
    }

    async fn on_sfu(&mut self, generation: u64, s: SfuSignal) {
        if generation != self.generation {
            return;
        }
        match s {
            SfuSignal::Heard(user) => {
                let _ = self.out.send(VoiceEvent::PeerConnected(user));
            }
            SfuSignal::Connected => tracing::debug!("connected to the SFU"),
            SfuSignal::Failed if self.mode == VoiceTopology::Sfu && self.sfu.is_some() => {
                let _ = self.out.send(VoiceEvent::Error(
                    "the connection to the SFU failed; reconnecting".into(),
                ));
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Err(e) = self.connect_sfu().await {
                    let _ = self
                        .out
                        .send(VoiceEvent::Error(format!("reconnecting to the SFU: {e}")));
                }
            }
            SfuSignal::Failed => {}
        }
    }
}

/// Relay events -> session / SFU connection; session events -> relay (voice state) and the
/// caller.
async fn pump(
    mut state: LinkState,
    mut relay: broadcast::Receiver<ClientEvent>,
    mut local: mpsc::UnboundedReceiver<VoiceEvent>,
    mut sfu: mpsc::UnboundedReceiver<(u64, SfuSignal)>,
) {
    let client = state.client.clone();
    let out = state.out.clone();
    // One sender task keeps voice updates in order (speaking on, then off).
    let (patch_tx, mut patch_rx) = mpsc::unbounded_channel::<VoiceStatePatch>();
    let publisher = client.clone();
    let (session, errors) = (state.session.clone(), out.clone());
    tokio::spawn(async move {
        while let Some(p) = patch_rx.recv().await {
            if let Err(e) = publisher.voice_update(p).await {
                tracing::debug!("voice_update: {e}");
                if p.video == Some(true) {
                    // Refused (no `video` permission): the camera goes off again.
                    session.set_camera(false);
                    let _ = errors.send(VoiceEvent::Error(format!("camera: {e}")));
                }
            }
        }
    });
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            ev = relay.recv() => {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("voice missed {n} relay events");
                        continue;
                    }
                    Err(_) => return,
                };
                if let Err(e) = state.on_relay(ev).await {
                    let _ = out.send(VoiceEvent::Error(e.to_string()));
                }
            }
            s = sfu.recv() => {
                let Some((generation, s)) = s else { return };
                state.on_sfu(generation, s).await;
            }
            _ = tick.tick(), if state.moving_since.is_some() => {
                state.finish_move(Instant::now()).await;
            }
            ev = local.recv() => {
                let Some(ev) = ev else { return };
                // Publish my speaking/mute/deafen to the channel's roster.
                let patch = match &ev {
                    VoiceEvent::Speaking { user: None, speaking } => Some(VoiceStatePatch {
                        speaking: Some(*speaking),
                        ..Default::default()
                    }),
                    VoiceEvent::LocalState { muted, deafened, .. } => Some(VoiceStatePatch {
                        muted: Some(*muted),
                        deafened: Some(*deafened),
                        ..Default::default()
                    }),
                    VoiceEvent::Video { user: None, camera } => Some(VoiceStatePatch {
                        video: Some(*camera),
                        ..Default::default()
                    }),
                    _ => None,
                };
                if let Some(p) = patch {
                    let _ = patch_tx.send(p);
                }
                if out.send(ev).is_err() {
                    return;
                }
            }
        }
    }
}
