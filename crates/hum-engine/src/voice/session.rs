//! A voice session: us plus up to seven peers, each a WebRTC connection (full mesh). A 1-on-1
//! call is a session with one peer.
//!
//! Who offers: the participant with the smaller user id. Both sides learn about each other
//! from the relay's roster at about the same time; a fixed rule means exactly one offer per
//! pair and no glare handling.
//!
//! Recovery: when a connection drops to `disconnected`/`failed`, the offering side restarts
//! ICE with a fresh offer (a network change makes the old candidate pair useless). The
//! answering side may ask for that with `Renegotiate`.

use std::collections::BTreeMap;
use std::sync::Arc;

use hum_media::processing::CaptureControls;
use hum_media::{AudioSink, AudioSource};
use hum_proto::UserId;
use hum_proto::signal::SignalPayload;
use tokio::sync::{Mutex, mpsc};
use webrtc::peer_connection::RTCIceCandidateInit;

use super::audio::{AudioEngine, AudioSettings};
use super::peer::{Peer, PeerSignal};
use super::video::screen::{ScreenShareStats, ScreenSource, VideoKind};
use super::video::{CameraChange, EncodedVideoFrame, RemoteVideoStats, SessionVideo, VideoIo};
use super::{MAX_MESH_PARTICIPANTS, Signaller, VoiceConfig, VoiceError, VoiceEvent};

pub struct VoiceSession {
    me: UserId,
    cfg: VoiceConfig,
    signaller: Arc<dyn Signaller>,
    engine: Arc<AudioEngine>,
    video: Arc<SessionVideo>,
    peers: Mutex<BTreeMap<UserId, Arc<Peer>>>,
    /// The channel's `video` permission ([`VoiceSession::set_video_allowed`]); always in a call.
    video_allowed: std::sync::atomic::AtomicBool,
    events: mpsc::UnboundedSender<VoiceEvent>,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for VoiceSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceSession")
            .field("me", &self.me)
            .finish()
    }
}

impl VoiceSession {
    /// Starts audio (capture + playout threads) and returns the session and its event stream.
    pub fn start(
        me: UserId,
        cfg: VoiceConfig,
        source: Box<dyn AudioSource>,
        sink: Box<dyn AudioSink>,
        controls: CaptureControls,
        signaller: Arc<dyn Signaller>,
    ) -> Result<(Arc<Self>, mpsc::UnboundedReceiver<VoiceEvent>), VoiceError> {
        Self::start_with_video(
            me,
            cfg,
            source,
            sink,
            controls,
            VideoIo::default(),
            signaller,
        )
    }

    /// [`start`](Self::start) with video: a VP8 track to and from every peer (see
    /// [`super::video`]). With `VideoIo::default()` it is the voice-only session.
    pub fn start_with_video(
        me: UserId,
        cfg: VoiceConfig,
        source: Box<dyn AudioSource>,
        sink: Box<dyn AudioSink>,
        controls: CaptureControls,
        video: VideoIo,
        signaller: Arc<dyn Signaller>,
    ) -> Result<(Arc<Self>, mpsc::UnboundedReceiver<VoiceEvent>), VoiceError> {
        let (events, rx) = mpsc::unbounded_channel();
        let video = Arc::new(SessionVideo::start(video, events.clone())?);
        let engine = Arc::new(AudioEngine::start(
            source,
            sink,
            AudioSettings {
                frame: cfg.frame,
                bitrate_bps: cfg.bitrate_bps,
                controls,
            },
            events.clone(),
        )?);
        let session = Arc::new(Self {
            me,
            cfg,
            signaller,
            engine,
            video,
            peers: Mutex::new(BTreeMap::new()),
            video_allowed: std::sync::atomic::AtomicBool::new(true),
            events,
            tasks: std::sync::Mutex::new(Vec::new()),
        });
        let stats = tokio::spawn(stats_loop(Arc::downgrade(&session)));
        if let Ok(mut t) = session.tasks.lock() {
            t.push(stats);
        }
        Ok((session, rx))
    }

    pub fn me(&self) -> UserId {
        self.me
    }

    /// The audio engine (capture, encoder, mixer) this session's connections share; the SFU
    /// connection of a channel (`voice::sfu`) uses it too.
    pub(crate) fn video(&self) -> Arc<SessionVideo> {
        self.video.clone()
    }

    pub(crate) fn audio(&self) -> Arc<AudioEngine> {
        self.engine.clone()
    }

    pub fn controls(&self) -> &CaptureControls {
        self.engine.controls()
    }

    /// Mutes or unmutes the microphone. Unmuting is refused (we stay muted) while the channel
    /// does not let us speak ([`set_speak_allowed`](Self::set_speak_allowed)); `false` then.
    pub fn set_muted(&self, muted: bool) -> bool {
        let refused = !muted && self.muted_by_channel();
        if !refused {
            self.engine.controls().set_muted(muted);
        }
        self.local_state();
        !refused
    }

    /// Whether the channel lets us speak (its `speak` permission, told by the relay). Taken
    /// away, we are muted and nothing is captured into packets or sent, to mesh peers and the
    /// SFU alike. Given back, we stay muted until the user unmutes ([`set_muted`](Self::set_muted)):
    /// nobody is unmuted behind their back. Reported as [`VoiceEvent::LocalState`].
    pub fn set_speak_allowed(&self, allowed: bool) {
        if allowed != self.muted_by_channel() {
            return;
        }
        if !allowed {
            self.engine.controls().set_muted(true);
        }
        self.engine.set_withheld(!allowed);
        self.local_state();
    }

    /// Muted because the channel does not let us speak (not by the user).
    pub fn muted_by_channel(&self) -> bool {
        self.engine.withheld()
    }

    pub fn set_deafened(&self, deafened: bool) {
        self.engine.set_deafened(deafened);
        self.local_state();
    }

    fn local_state(&self) {
        let _ = self.events.send(VoiceEvent::LocalState {
            muted: self.engine.controls().muted(),
            deafened: self.engine.deafened(),
            muted_by_channel: self.muted_by_channel(),
        });
    }

    pub fn set_volume(&self, user: UserId, volume: f32) {
        self.engine.set_volume(user, volume);
    }

    /// Every VP8 frame received from any peer, before decoding (for a front end that decodes
    /// itself, e.g. WebCodecs in the app). A subscriber that falls 256 frames behind gets
    /// `Lagged`: it should call [`request_keyframe`](Self::request_keyframe) and skip deltas.
    pub fn video_frames(&self) -> tokio::sync::broadcast::Receiver<EncodedVideoFrame> {
        self.video.subscribe()
    }

    /// Asks `user` for a keyframe of their camera (sends a PLI, repeated until it arrives).
    pub fn request_keyframe(&self, user: UserId) {
        self.video.request_keyframe(user, VideoKind::Camera);
    }

    /// Asks `user` for a keyframe of their camera or their screen share.
    pub fn request_keyframe_of(&self, user: UserId, kind: VideoKind) {
        self.video.request_keyframe(user, kind);
    }

    /// Counters of the camera video received from `user`.
    pub fn video_stats(&self, user: &UserId) -> Option<RemoteVideoStats> {
        self.video.stats(user, VideoKind::Camera)
    }

    /// Counters of `user`'s camera or screen share as received.
    pub fn video_stats_of(&self, user: &UserId, kind: VideoKind) -> Option<RemoteVideoStats> {
        self.video.stats(user, kind)
    }

    /// Starts sharing a screen (a monitor, a window, or for tests the pattern / a Y4M file),
    /// replacing a running share: a second VP8 track to every mesh peer that shows video,
    /// encoded once with `share.profile` (one layer). Needs a session with video (every call
    /// and channel the app makes has it): the screen track is negotiated with the connection,
    /// so starting and stopping need no renegotiation. Reported as
    /// [`VoiceEvent::ScreenShare`](super::VoiceEvent::ScreenShare). On the SFU the same track
    /// (one layer) is published to it and forwarded to every member under a `screen-…` id.
    pub fn start_screen_share(&self, share: ScreenSource) -> Result<(), VoiceError> {
        if !self.video.enabled {
            return Err(VoiceError::WebRtc(
                "this session carries no video, so it cannot share a screen".into(),
            ));
        }
        if !self.video_allowed() {
            // The SFU would withhold it too (a screen is a video track there).
            return Err(VoiceError::WebRtc(
                "this channel's permissions do not let you send video, so you cannot share a \
                 screen here"
                    .into(),
            ));
        }
        self.video.screen.start(share)
    }

    /// Stops our screen share; `false` if there was none. Blocks for at most one frame read.
    pub fn stop_screen_share(&self) -> bool {
        self.video.screen.stop()
    }

    /// Whether we share a screen now, and what it cost so far.
    pub fn screen_share_stats(&self) -> ScreenShareStats {
        self.video.screen.stats()
    }

    /// Sets the rate of the video we send (the budget or a congestion controller decides);
    /// applies from the next frame. No-op without a video source.
    pub fn set_video_bitrate(&self, bitrate: hum_proto::Bitrate) {
        if let Some(s) = &self.video.sender {
            s.set_bitrate(bitrate);
        }
    }

    /// Turns the video we send on or off (the camera button). Off, nothing is encoded or sent
    /// (the track stays: on again needs no renegotiation, and starts on a keyframe). Reported
    /// as `VoiceEvent::Video { user: None, .. }`; in a channel the link publishes it in the
    /// roster, where the others' engines read it. `false` without a video source.
    ///
    /// Every peer is told (the `camera` signal), so its tile follows at once in a 1-on-1 call
    /// too, where there is no roster.
    ///
    /// `false` too for `on` while the channel does not let us send video
    /// ([`set_video_allowed`](Self::set_video_allowed)): the camera stays off.
    pub fn set_camera(self: &Arc<Self>, on: bool) -> bool {
        if on && !self.video_allowed.load(std::sync::atomic::Ordering::SeqCst) {
            return false;
        }
        if !self.video.set_local_camera(on) {
            return false;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let me = self.clone();
            rt.spawn(async move {
                for user in me.peers().await {
                    if let Err(e) = me.send(user, SignalPayload::Camera { on }).await {
                        tracing::debug!(%user, "camera: {e}");
                    }
                }
            });
        }
        true
    }

    /// Whether the channel lets us send video (its `video` permission). Taken away, our camera
    /// and screen share go off and [`set_camera`](Self::set_camera) /
    /// [`start_screen_share`](Self::start_screen_share) refuse to start them; given back, they
    /// stay off until the user turns them on.
    pub fn set_video_allowed(self: &Arc<Self>, allowed: bool) {
        use std::sync::atomic::Ordering;
        if self.video_allowed.swap(allowed, Ordering::SeqCst) == allowed {
            return;
        }
        if !allowed && self.camera() == Some(true) {
            self.set_camera(false);
        }
        if !allowed {
            self.stop_screen_share();
        }
    }

    pub fn video_allowed(&self) -> bool {
        self.video_allowed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the video we send is on (`None`: this session sends no video).
    pub fn camera(&self) -> Option<bool> {
        self.video.local_camera()
    }

    /// Members' cameras going on and off (in a channel, from the roster), for a front end that
    /// hides a tile the moment its camera goes off.
    pub fn camera_changes(&self) -> tokio::sync::broadcast::Receiver<CameraChange> {
        self.video.camera_changes()
    }

    /// What `user` says of their camera (the roster's `video` flag): while off, their frames are
    /// held back.
    pub(crate) fn set_remote_camera(&self, user: UserId, camera: bool) {
        self.video.set_remote_camera(user, camera);
    }

    pub(crate) fn forget_remote_camera(&self, user: &UserId) {
        self.video.forget_remote_camera(user);
    }

    /// Which layer of `user`'s video we want (mesh: the `video_quality` signal): `High` for
    /// the speaker, a pinned tile or a screen share, `Low` for a thumbnail, `Off` when not
    /// shown. Kept for the connection's life and said again when it (re)connects; the default
    /// is `Auto` (the sender's choice, its full picture).
    pub async fn set_video_quality(
        &self,
        user: UserId,
        quality: hum_proto::signal::VideoQuality,
    ) -> Result<(), VoiceError> {
        let mut asks = self.video.asks.lock().await;
        asks.insert(user, quality);
        if self.peers.lock().await.contains_key(&user) {
            self.send(user, SignalPayload::VideoQuality { quality })
                .await?;
        }
        Ok(())
    }

    /// Says whether our camera is on (after a connection came up), if we send video.
    async fn send_camera(&self, user: UserId) {
        if let Some(on) = self.video.local_camera()
            && let Err(e) = self.send(user, SignalPayload::Camera { on }).await
        {
            tracing::debug!(%user, "camera: {e}");
        }
    }

    /// Says what we want of `user`'s video (after a connection came up), if we show video.
    async fn send_video_quality(&self, user: UserId) {
        if !self.video.receiving {
            return;
        }
        let asks = self.video.asks.lock().await;
        let quality = asks.get(&user).copied().unwrap_or_default();
        if let Err(e) = self
            .send(user, SignalPayload::VideoQuality { quality })
            .await
        {
            tracing::debug!(%user, "video_quality: {e}");
        }
    }

    /// What the video we send cost so far (frames captured, encoded per layer), if we send.
    pub fn video_send_stats(&self) -> Option<super::video::VideoSendStats> {
        self.video.sender.as_ref().map(|s| s.stats())
    }

    /// The rate of the video we send, if we send video.
    pub fn video_bitrate(&self) -> Option<hum_proto::Bitrate> {
        self.video.sender.as_ref().map(|s| s.bitrate())
    }

    pub async fn peers(&self) -> Vec<UserId> {
        self.peers.lock().await.keys().copied().collect()
    }

    /// Checks that a channel with `others` other participants can take us.
    pub fn check_capacity(others: usize) -> Result<(), VoiceError> {
        if others + 1 > MAX_MESH_PARTICIPANTS {
            return Err(VoiceError::NeedsSfu);
        }
        Ok(())
    }

    /// The connection to `user`, made if there is none yet; `true` if it was just made.
    async fn ensure_peer(
        self: &Arc<Self>,
        user: UserId,
        offerer: bool,
    ) -> Result<(Arc<Peer>, bool), VoiceError> {
        if user == self.me {
            return Err(VoiceError::Signalling("cannot connect to myself".into()));
        }
        let mut peers = self.peers.lock().await;
        if let Some(p) = peers.get(&user) {
            return Ok((p.clone(), false));
        }
        // Us plus the existing peers plus this one.
        Self::check_capacity(peers.len() + 1)?;
        let (state_tx, state_rx) = mpsc::unbounded_channel();
        let peer = Arc::new(
            Peer::new(
                user,
                offerer,
                &self.cfg,
                self.engine.clone(),
                self.video.clone(),
                state_tx,
            )
            .await?,
        );
        peers.insert(user, peer.clone());
        drop(peers);
        let watcher = tokio::spawn(watch_peer(
            state_rx,
            Arc::downgrade(self),
            Arc::downgrade(&peer),
        ));
        if let Ok(mut t) = self.tasks.lock() {
            t.push(watcher);
        }
        Ok((peer, true))
    }

    /// Someone is (now) in the call or channel with us: connect. The smaller id offers; the
    /// other side waits for the offer.
    pub async fn add_peer(self: &Arc<Self>, user: UserId) -> Result<(), VoiceError> {
        self.add_peer_as(user, self.me < user).await
    }

    /// Connects to `user`, making the offer if `we_offer` (a call's caller offers).
    pub async fn add_peer_as(
        self: &Arc<Self>,
        user: UserId,
        we_offer: bool,
    ) -> Result<(), VoiceError> {
        // Only a new connection gets an offer. The same user can be reported twice: the
        // relay sends `roster_join` to every online member of the server, so a join racing
        // ours shows up both in our `joined` roster and as an event; a second offer on a
        // live connection would be answered twice ("stable applying answer" errors).
        let (peer, new) = self.ensure_peer(user, we_offer).await?;
        if we_offer && new {
            let sdp = peer.offer(false).await?;
            self.send(user, SignalPayload::Offer { sdp }).await?;
        }
        Ok(())
    }

    /// Replaces the connection to `user` with a fresh one, offering if the smaller id is ours:
    /// after our own relay session was replaced (a reconnect, another cluster node), `user` saw
    /// us leave and come back and made a new connection, which the old one cannot talk to. The
    /// old connection closes without a [`VoiceEvent::PeerLeft`]: `user` never left.
    pub async fn reconnect_peer(self: &Arc<Self>, user: UserId) -> Result<(), VoiceError> {
        self.drop_connection(user).await;
        self.add_peer(user).await
    }

    /// Closes the connection to `user`, if any, and forgets its audio, without telling anyone
    /// (a new connection to the same member may take its place); `true` if there was one.
    async fn drop_connection(&self, user: UserId) -> bool {
        let Some(peer) = self.peers.lock().await.remove(&user) else {
            return false;
        };
        peer.close().await;
        self.engine.remove_remote(&user);
        true
    }

    /// Someone left: close their connection and forget their audio.
    pub async fn remove_peer(&self, user: UserId, reason: &str) {
        self.video.forget_wish(&user);
        if self.drop_connection(user).await {
            let _ = self.events.send(VoiceEvent::PeerLeft {
                user,
                reason: reason.to_string(),
            });
        }
    }

    async fn send(&self, to: UserId, payload: SignalPayload) -> Result<(), VoiceError> {
        self.signaller
            .send(to, payload)
            .await
            .map_err(VoiceError::Signalling)
    }

    /// A negotiation message from `from` (forwarded by the relay).
    pub async fn handle_signal(
        self: &Arc<Self>,
        from: UserId,
        payload: SignalPayload,
    ) -> Result<(), VoiceError> {
        match payload {
            SignalPayload::Offer { sdp } => {
                // An offer from a new connection of `from` (it saw us leave and come back, or it
                // did): answered from a new connection of ours, the old one closed.
                let old = self.peers.lock().await.get(&from).cloned();
                if let Some(old) = old
                    && old.is_another_connection(&sdp).await
                {
                    tracing::info!(user = %from, "offer from a new connection; replacing ours");
                    self.drop_connection(from).await;
                }
                let (peer, _) = self.ensure_peer(from, false).await?;
                let answer = peer.answer(sdp).await?;
                self.send(from, SignalPayload::Answer { sdp: answer }).await
            }
            SignalPayload::Answer { sdp } => {
                let peer = self.peer(from).await?;
                peer.accept_answer(sdp).await
            }
            SignalPayload::Ice {
                candidate,
                sdp_mid,
                sdp_mline_index,
                username_fragment,
            } => {
                let peer = self.peer(from).await?;
                peer.add_ice(RTCIceCandidateInit {
                    candidate,
                    sdp_mid,
                    sdp_mline_index,
                    username_fragment,
                    ..Default::default()
                })
                .await
            }
            SignalPayload::EndOfCandidates => Ok(()),
            SignalPayload::Renegotiate => self.restart(from).await,
            SignalPayload::Bye => {
                self.remove_peer(from, "hung up").await;
                Ok(())
            }
            // End-to-end keys: read by the key exchange (crate::e2ee) from the relay's events.
            SignalPayload::E2eeKey { .. } => Ok(()),
            SignalPayload::VideoQuality { quality } => {
                self.video.set_wish(from, quality);
                Ok(())
            }
            SignalPayload::Camera { on } => {
                self.video.set_remote_camera(from, on);
                Ok(())
            }
        }
    }

    async fn peer(&self, user: UserId) -> Result<Arc<Peer>, VoiceError> {
        self.peers
            .lock()
            .await
            .get(&user)
            .cloned()
            .ok_or(VoiceError::UnknownPeer(user))
    }

    /// Restarts ICE towards `user` (we offer if we are the offering side, else we ask them).
    pub async fn restart(self: &Arc<Self>, user: UserId) -> Result<(), VoiceError> {
        let peer = self.peer(user).await?;
        if peer.offerer {
            let sdp = peer.offer(true).await?;
            self.send(user, SignalPayload::Offer { sdp }).await
        } else {
            self.send(user, SignalPayload::Renegotiate).await
        }
    }

    /// Leaves: says goodbye, closes every connection and stops audio (finishing the sink).
    pub async fn leave(&self) {
        let peers: Vec<_> = std::mem::take(&mut *self.peers.lock().await)
            .into_values()
            .collect();
        for p in peers {
            let _ = self.signaller.send(p.user, SignalPayload::Bye).await;
            p.close().await;
        }
        if let Ok(mut t) = self.tasks.lock() {
            for h in t.drain(..) {
                h.abort();
            }
        }
        let engine = self.engine.clone();
        let video = self.video.clone();
        let _ = tokio::task::spawn_blocking(move || {
            video.stop();
            engine.stop()
        })
        .await;
    }
}

/// Reacts to one connection's state changes, until it is closed: a connection that was
/// replaced must not restart ICE on (or report for) the one that took its place.
async fn watch_peer(
    mut rx: mpsc::UnboundedReceiver<(UserId, PeerSignal)>,
    session: std::sync::Weak<VoiceSession>,
    peer: std::sync::Weak<Peer>,
) {
    while let Some((user, s)) = rx.recv().await {
        if peer.upgrade().is_none_or(|p| p.is_closed()) {
            return;
        }
        let Some(session) = session.upgrade() else {
            return;
        };
        match s {
            PeerSignal::Connected => {
                let _ = session.events.send(VoiceEvent::PeerConnected(user));
                session.send_video_quality(user).await;
                session.send_camera(user).await;
                let peer = session.peers.lock().await.get(&user).cloned();
                if let Some(route) = match peer {
                    Some(p) => p.route().await,
                    None => None,
                } {
                    let _ = session.events.send(VoiceEvent::Route { user, route });
                }
            }
            PeerSignal::Disconnected => {
                tracing::info!(%user, "connection interrupted; restarting ICE");
                if let Err(e) = session.restart(user).await {
                    tracing::warn!(%user, "ICE restart failed: {e}");
                }
            }
            PeerSignal::Failed => {
                let _ = session.events.send(VoiceEvent::Error(format!(
                    "connection to {user} failed; restarting ICE"
                )));
                if let Err(e) = session.restart(user).await {
                    tracing::warn!(%user, "ICE restart failed: {e}");
                }
            }
            PeerSignal::Closed => return,
        }
    }
}

async fn stats_loop(session: std::sync::Weak<VoiceSession>) {
    loop {
        let interval = match session.upgrade() {
            Some(s) => s.cfg.stats_interval,
            None => return,
        };
        tokio::time::sleep(interval).await;
        let Some(s) = session.upgrade() else { return };
        let peers: Vec<_> = s.peers.lock().await.values().cloned().collect();
        for p in peers {
            if let Some(mut stats) = s.engine.stats(&p.user) {
                stats.rtt = p.rtt().await;
                let _ = s.events.send(VoiceEvent::Stats {
                    user: p.user,
                    stats,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! ICE restart (through the API, from either side) and STUN configuration, in process over
    //! loopback with real WebRTC; signalling in memory, recorded so the SDPs can be inspected.

    use std::sync::Mutex as StdMutex;
    use std::time::Duration;

    use hum_media::analysis::tone_purity;
    use hum_media::pacer::Paced;
    use hum_media::processing::{CaptureControls, VoiceMode};
    use hum_media::synth::{MemorySink, NullSink, SilenceSource, ToneSource};

    use super::*;
    use crate::voice::MemorySignalHub;

    type Log = Arc<StdMutex<Vec<(UserId, UserId, SignalPayload)>>>;

    /// Forwards through a [`MemorySignalHub`] and keeps a copy of every message.
    struct Recording {
        me: UserId,
        inner: Arc<dyn Signaller>,
        log: Log,
    }

    #[async_trait::async_trait]
    impl Signaller for Recording {
        async fn send(&self, to: UserId, payload: SignalPayload) -> Result<(), String> {
            if let Ok(mut l) = self.log.lock() {
                l.push((self.me, to, payload.clone()));
            }
            self.inner.send(to, payload).await
        }
    }

    struct Bot {
        session: Arc<VoiceSession>,
        events: mpsc::UnboundedReceiver<VoiceEvent>,
    }

    fn bot(
        hub: &MemorySignalHub,
        log: &Log,
        me: UserId,
        cfg: VoiceConfig,
        source: Box<dyn hum_media::AudioSource>,
        sink: Box<dyn hum_media::AudioSink>,
    ) -> Bot {
        let (inner, mut inbox) = hub.register(me);
        let signaller = Arc::new(Recording {
            me,
            inner,
            log: log.clone(),
        });
        let controls = CaptureControls::new();
        controls.set_mode(VoiceMode::Open);
        controls.set_noise_suppression(false);
        let (session, events) =
            VoiceSession::start(me, cfg, source, sink, controls, signaller).expect("start");
        let s = session.clone();
        tokio::spawn(async move {
            while let Some((from, payload)) = inbox.recv().await {
                if let Err(e) = s.handle_signal(from, payload).await {
                    eprintln!("signal from {from}: {e}");
                }
            }
        });
        Bot { session, events }
    }

    fn cfg(stun: Vec<String>) -> VoiceConfig {
        VoiceConfig {
            bind: vec!["127.0.0.1:0".into()],
            stun,
            ..Default::default()
        }
    }

    async fn connected(b: &mut Bot) {
        tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match b.events.recv().await {
                    Some(VoiceEvent::PeerConnected(_)) => return,
                    Some(_) => {}
                    None => panic!("session ended"),
                }
            }
        })
        .await
        .expect("connected within 15 s");
    }

    /// The SDPs of kind `kind` ("offer"/"answer") sent by `from`, in order.
    fn sdps(log: &Log, from: UserId, kind: &str) -> Vec<String> {
        log.lock()
            .map(|l| {
                l.iter()
                    .filter(|(f, _, _)| *f == from)
                    .filter_map(|(_, _, p)| match (p, kind) {
                        (SignalPayload::Offer { sdp }, "offer")
                        | (SignalPayload::Answer { sdp }, "answer") => Some(sdp.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn ufrag(sdp: &str) -> String {
        sdp.lines()
            .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no ice-ufrag in {sdp}"))
    }

    async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The share of 100 ms blocks in which `hz` carries most of the energy. Per block, so a
    /// jitter buffer dropping or concealing one frame (a phase jump) costs one block, where over
    /// a whole second it could cancel the tone's Goertzel power out.
    fn tone_share(samples: &[f32], hz: f32) -> f32 {
        let blocks: Vec<&[f32]> = samples.chunks_exact(4800).collect();
        let good = blocks.iter().filter(|b| tone_purity(b, hz) > 0.7).count();
        good as f32 / blocks.len().max(1) as f32
    }

    /// RMS per 100 ms of the last `secs` seconds, for failure messages.
    fn timeline(rec: &MemorySink, secs: f32) -> Vec<String> {
        tail(rec, secs)
            .chunks(4800)
            .map(|c| format!("{:.2}", hum_media::analysis::rms(c)))
            .collect()
    }

    /// The last `secs` seconds of a recording.
    fn tail(rec: &MemorySink, secs: f32) -> Vec<f32> {
        let s = rec.samples();
        s[s.len().saturating_sub((secs * 48_000.0) as usize)..].to_vec()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ice_restarts_from_either_side_renegotiate_credentials_and_audio_keeps_flowing() {
        let hub = MemorySignalHub::new();
        let log: Log = Arc::default();
        let (a_id, b_id) = (UserId([1; 32]), UserId([2; 32]));
        let mut a = bot(
            &hub,
            &log,
            a_id,
            cfg(vec![]),
            Box::new(Paced::new(ToneSource::new(440.0, 0.3))),
            Box::new(Paced::new(NullSink)),
        );
        let rec = MemorySink::new();
        let mut b = bot(
            &hub,
            &log,
            b_id,
            cfg(vec![]),
            Box::new(Paced::new(SilenceSource::new())),
            Box::new(Paced::new(rec.clone())),
        );
        b.session.add_peer(a_id).await.expect("b waits");
        a.session
            .add_peer(b_id)
            .await
            .expect("a offers (smaller id)");
        // Reported again (a roster event racing the join reply): no second offer.
        a.session.add_peer(b_id).await.expect("again");
        connected(&mut a).await;
        connected(&mut b).await;
        wait_until("first answer", || sdps(&log, b_id, "answer").len() == 1).await;
        assert_eq!(sdps(&log, a_id, "offer").len(), 1, "a offered twice");

        // 1. The offering side restarts ICE itself.
        a.session.restart(b_id).await.expect("restart from a");
        wait_until("answer to the restart offer", || {
            sdps(&log, b_id, "answer").len() == 2
        })
        .await;
        // 2. The answering side asks for it (`renegotiate`); the offerer sends a fresh offer.
        b.session.restart(a_id).await.expect("restart from b");
        wait_until("answer to the requested restart", || {
            sdps(&log, b_id, "answer").len() == 3
        })
        .await;
        let asked = log.lock().map(|l| {
            l.iter()
                .any(|(f, _, p)| *f == b_id && *p == SignalPayload::Renegotiate)
        });
        assert_eq!(asked.ok(), Some(true), "b did not send renegotiate");

        // Every offer and every answer carried fresh ICE credentials.
        for (who, kind) in [(a_id, "offer"), (b_id, "answer")] {
            let frags: Vec<String> = sdps(&log, who, kind).iter().map(|s| ufrag(s)).collect();
            assert_eq!(frags.len(), 3, "{kind}s: {frags:?}");
            assert!(
                frags[0] != frags[1] && frags[1] != frags[2] && frags[0] != frags[2],
                "{kind} ufrags not renewed: {frags:?}"
            );
        }
        // Both ends applied the newest credentials.
        let pa = a.session.peer(b_id).await.expect("a's peer");
        let pb = b.session.peer(a_id).await.expect("b's peer");
        let remote_a = pa.pc.remote_description().await.expect("a remote").sdp;
        let remote_b = pb.pc.remote_description().await.expect("b remote").sdp;
        assert_eq!(ufrag(&remote_a), ufrag(&sdps(&log, b_id, "answer")[2]));
        assert_eq!(ufrag(&remote_b), ufrag(&sdps(&log, a_id, "offer")[2]));

        // And audio still flows after the restarts: the last second at B is A's tone.
        let before = rec.samples().len();
        wait_until("1.5 s more of b's playout", || {
            rec.samples().len() >= before + 72_000
        })
        .await;
        let p = tone_share(&tail(&rec, 1.0), 440.0);
        assert!(
            p >= 0.8,
            "a's tone not heard after the ICE restarts: {p}; rms per 100 ms: {:?}",
            timeline(&rec, 4.0)
        );
        // No failure on the way.
        for bot in [&mut a, &mut b] {
            while let Ok(ev) = bot.events.try_recv() {
                assert!(!matches!(ev, VoiceEvent::Error(_)), "{ev:?}");
            }
        }
        a.session.leave().await;
        b.session.leave().await;
    }

    /// A minimal STUN server (RFC 5389 Binding only): answers every Binding request with the
    /// sender's address as XOR-MAPPED-ADDRESS, and counts the requests.
    async fn stun_server() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = sock.local_addr().expect("addr");
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = count.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            const COOKIE: u32 = 0x2112_A442;
            while let Ok((len, from)) = sock.recv_from(&mut buf).await {
                // Binding request, with the magic cookie.
                if len < 20 || buf[0..2] != [0x00, 0x01] || buf[4..8] != COOKIE.to_be_bytes() {
                    continue;
                }
                let std::net::SocketAddr::V4(v4) = from else {
                    continue;
                };
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut out = Vec::with_capacity(32);
                out.extend_from_slice(&[0x01, 0x01, 0x00, 12]); // success, 12 bytes of attrs
                out.extend_from_slice(&buf[4..20]); // cookie + transaction id
                out.extend_from_slice(&[0x00, 0x20, 0x00, 8, 0x00, 0x01]); // XOR-MAPPED-ADDRESS
                out.extend_from_slice(&(v4.port() ^ (COOKIE >> 16) as u16).to_be_bytes());
                out.extend_from_slice(&(u32::from(*v4.ip()) ^ COOKIE).to_be_bytes());
                let _ = sock.send_to(&out, from).await;
            }
        });
        (format!("stun:{addr}"), count)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn configured_stun_server_is_asked_and_its_answer_becomes_a_srflx_candidate() {
        let (url, asked) = stun_server().await;
        let hub = MemorySignalHub::new();
        let log: Log = Arc::default();
        let (a_id, b_id) = (UserId([1; 32]), UserId([2; 32]));
        let a = bot(
            &hub,
            &log,
            a_id,
            cfg(vec![url.clone()]),
            Box::new(Paced::new(ToneSource::new(660.0, 0.3))),
            Box::new(Paced::new(NullSink)),
        );
        let rec = MemorySink::new();
        let mut b = bot(
            &hub,
            &log,
            b_id,
            cfg(vec![url]),
            Box::new(Paced::new(SilenceSource::new())),
            Box::new(Paced::new(rec.clone())),
        );
        b.session.add_peer(a_id).await.expect("b waits");
        a.session.add_peer(b_id).await.expect("a offers");
        connected(&mut b).await;
        // Both gathered through the server: each side's SDP carries a server-reflexive
        // candidate, and gathering completed (the STUN answer ended it) rather than being cut
        // short by the 5 s bound: webrtc-rs writes `a=end-of-candidates` only once gathering
        // is complete.
        assert!(
            asked.load(std::sync::atomic::Ordering::SeqCst) >= 2,
            "the STUN server was asked {} times",
            asked.load(std::sync::atomic::Ordering::SeqCst)
        );
        for (who, kind) in [(a_id, "offer"), (b_id, "answer")] {
            let sdp = sdps(&log, who, kind).pop().expect("sdp");
            assert!(
                sdp.contains("typ srflx"),
                "no srflx candidate in the {kind}: {sdp}"
            );
            assert!(
                sdp.contains("a=end-of-candidates"),
                "the {kind} was sent before gathering completed: {sdp}"
            );
        }
        let before = rec.samples().len();
        wait_until("1.2 s more of b's playout", || {
            rec.samples().len() >= before + 57_600
        })
        .await;
        let p = tone_share(&tail(&rec, 1.0), 660.0);
        assert!(
            p >= 0.8,
            "no audio with STUN configured: {p}; rms per 100 ms: {:?}",
            timeline(&rec, 3.0)
        );
        drop(a.events);
        a.session.leave().await;
        b.session.leave().await;
    }
}
