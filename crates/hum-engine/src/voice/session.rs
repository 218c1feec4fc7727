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
use super::{MAX_MESH_PARTICIPANTS, Signaller, VoiceConfig, VoiceError, VoiceEvent};

pub struct VoiceSession {
    me: UserId,
    cfg: VoiceConfig,
    signaller: Arc<dyn Signaller>,
    engine: Arc<AudioEngine>,
    peers: Mutex<BTreeMap<UserId, Arc<Peer>>>,
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
        let (events, rx) = mpsc::unbounded_channel();
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
            peers: Mutex::new(BTreeMap::new()),
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

    pub fn controls(&self) -> &CaptureControls {
        self.engine.controls()
    }

    pub fn set_muted(&self, muted: bool) {
        self.engine.controls().set_muted(muted);
        self.local_state();
    }

    pub fn set_deafened(&self, deafened: bool) {
        self.engine.set_deafened(deafened);
        self.local_state();
    }

    fn local_state(&self) {
        let _ = self.events.send(VoiceEvent::LocalState {
            muted: self.engine.controls().muted(),
            deafened: self.engine.deafened(),
        });
    }

    pub fn set_volume(&self, user: UserId, volume: f32) {
        self.engine.set_volume(user, volume);
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

    async fn ensure_peer(
        self: &Arc<Self>,
        user: UserId,
        offerer: bool,
    ) -> Result<Arc<Peer>, VoiceError> {
        if user == self.me {
            return Err(VoiceError::Signalling("cannot connect to myself".into()));
        }
        let mut peers = self.peers.lock().await;
        if let Some(p) = peers.get(&user) {
            return Ok(p.clone());
        }
        // Us plus the existing peers plus this one.
        Self::check_capacity(peers.len() + 1)?;
        let (state_tx, state_rx) = mpsc::unbounded_channel();
        let peer =
            Arc::new(Peer::new(user, offerer, &self.cfg, self.engine.clone(), state_tx).await?);
        peers.insert(user, peer.clone());
        drop(peers);
        let watcher = tokio::spawn(watch_peer(state_rx, Arc::downgrade(self)));
        if let Ok(mut t) = self.tasks.lock() {
            t.push(watcher);
        }
        Ok(peer)
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
        let peer = self.ensure_peer(user, we_offer).await?;
        if we_offer {
            let sdp = peer.offer(false).await?;
            self.send(user, SignalPayload::Offer { sdp }).await?;
        }
        Ok(())
    }

    /// Someone left: close their connection and forget their audio.
    pub async fn remove_peer(&self, user: UserId, reason: &str) {
        let peer = self.peers.lock().await.remove(&user);
        if let Some(p) = peer {
            p.close().await;
            self.engine.remove_remote(&user);
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
                let peer = self.ensure_peer(from, false).await?;
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
        let _ = tokio::task::spawn_blocking(move || engine.stop()).await;
    }
}

async fn watch_peer(
    mut rx: mpsc::UnboundedReceiver<(UserId, PeerSignal)>,
    session: std::sync::Weak<VoiceSession>,
) {
    while let Some((user, s)) = rx.recv().await {
        let Some(session) = session.upgrade() else {
            return;
        };
        match s {
            PeerSignal::Connected => {
                let _ = session.events.send(VoiceEvent::PeerConnected(user));
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
