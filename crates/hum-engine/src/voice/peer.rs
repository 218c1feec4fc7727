//! One WebRTC connection to one participant: our Opus track out, theirs in.
//!
//! Negotiation is non-trickle on our side: we wait for ICE gathering to finish (instant on
//! loopback and LANs, bounded by a timeout with STUN) and send one SDP carrying every
//! candidate; that halves the signalling messages and has no candidate-before-offer race.
//! Trickled candidates from the other side (browsers trickle) are accepted, and queued until
//! the remote description is set.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hum_proto::UserId;
use rtc::media::Sample;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::{Mutex, mpsc};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::Track;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceGatheringState, RTCIceServer,
    RTCPeerConnectionState, RTCSessionDescription,
};
use webrtc::rtp_transceiver::RtpSender;

use super::audio::AudioEngine;
use super::{VoiceConfig, VoiceError};

/// Connection-level changes the session reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerSignal {
    Connected,
    Disconnected,
    Failed,
    Closed,
}

struct Handler {
    user: UserId,
    engine: Arc<AudioEngine>,
    gathered: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
    state_tx: mpsc::UnboundedSender<(UserId, PeerSignal)>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        self.gathered
            .store(state == RTCIceGatheringState::Complete, Ordering::SeqCst);
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let s = match state {
            RTCPeerConnectionState::Connected => PeerSignal::Connected,
            RTCPeerConnectionState::Disconnected => PeerSignal::Disconnected,
            RTCPeerConnectionState::Failed => PeerSignal::Failed,
            RTCPeerConnectionState::Closed => PeerSignal::Closed,
            _ => return,
        };
        self.connected
            .store(s == PeerSignal::Connected, Ordering::SeqCst);
        let _ = self.state_tx.send((self.user, s));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if track.kind().await != RtpCodecKind::Audio {
            return;
        }
        let (engine, user) = (self.engine.clone(), self.user);
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                match ev {
                    TrackRemoteEvent::OnRtpPacket(pkt) => {
                        engine.push(&user, pkt.header.timestamp, pkt.payload.to_vec());
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

pub struct Peer {
    pub user: UserId,
    /// Whether we make the offers (and ICE restarts) on this connection.
    pub offerer: bool,
    pub(crate) pc: Arc<dyn PeerConnection>,
    gathered: Arc<AtomicBool>,
    pending_ice: Mutex<Vec<RTCIceCandidateInit>>,
    closed: Arc<AtomicBool>,
    writer: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("user", &self.user).finish()
    }
}

impl Peer {
    pub async fn new(
        user: UserId,
        offerer: bool,
        cfg: &VoiceConfig,
        engine: Arc<AudioEngine>,
        state_tx: mpsc::UnboundedSender<(UserId, PeerSignal)>,
    ) -> Result<Self, VoiceError> {
        let mut media = MediaEngine::default();
        media.register_default_codecs()?;
        let config = RTCConfigurationBuilder::default()
            .with_ice_servers(if cfg.stun.is_empty() {
                vec![]
            } else {
                vec![RTCIceServer {
                    urls: cfg.stun.clone(),
                    ..Default::default()
                }]
            })
            .build();
        let gathered = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicBool::new(false));
        engine.add_remote(user);
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config)
            .with_media_engine(media)
            .with_handler(Arc::new(Handler {
                user,
                engine: engine.clone(),
                gathered: gathered.clone(),
                connected: connected.clone(),
                state_tx,
            }))
            .with_udp_addrs(cfg.bind.clone())
            .build()
            .await?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);

        let ssrc = rand_ssrc(&user);
        let track = Arc::new(TrackLocalStaticSample::new(
            Instant::now(),
            MediaStreamTrack::new(
                "hum".to_owned(),
                "hum-voice".to_owned(),
                "voice".to_owned(),
                RtpCodecKind::Audio,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    codec: RTCRtpCodec {
                        mime_type: MIME_TYPE_OPUS.to_owned(),
                        clock_rate: 48_000,
                        channels: 2,
                        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                        rtcp_feedback: vec![],
                    },
                    ..Default::default()
                }],
            ),
        )?);
        let sender = pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
        let closed = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(write_loop(
            engine.subscribe(),
            track,
            sender,
            connected,
            closed.clone(),
        ));
        Ok(Self {
            user,
            offerer,
            pc,
            gathered,
            pending_ice: Mutex::new(Vec::new()),
            closed,
            writer,
        })
    }

    /// Waits (bounded) for ICE gathering, then returns the full local SDP.
    async fn gathered_sdp(&self) -> Result<String, VoiceError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.gathered.load(Ordering::SeqCst) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| VoiceError::WebRtc("no local description".into()))
    }

    /// Makes an offer (with `ice_restart` fresh ICE credentials).
    pub async fn offer(&self, ice_restart: bool) -> Result<String, VoiceError> {
        if ice_restart {
            self.gathered.store(false, Ordering::SeqCst);
            self.pc.restart_ice().await?;
        }
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer).await?;
        self.gathered_sdp().await
    }

    /// Applies a remote offer and returns our answer.
    pub async fn answer(&self, sdp: String) -> Result<String, VoiceError> {
        self.pc
            .set_remote_description(RTCSessionDescription::offer(sdp)?)
            .await?;
        self.flush_ice().await;
        let answer = self.pc.create_answer(None).await?;
        self.pc.set_local_description(answer).await?;
        self.gathered_sdp().await
    }

    pub async fn accept_answer(&self, sdp: String) -> Result<(), VoiceError> {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(sdp)?)
            .await?;
        self.flush_ice().await;
        Ok(())
    }

    pub async fn add_ice(&self, c: RTCIceCandidateInit) -> Result<(), VoiceError> {
        if self.pc.remote_description().await.is_none() {
            self.pending_ice.lock().await.push(c);
            return Ok(());
        }
        self.pc.add_ice_candidate(c).await?;
        Ok(())
    }

    async fn flush_ice(&self) {
        let pending = std::mem::take(&mut *self.pending_ice.lock().await);
        for c in pending {
            if let Err(e) = self.pc.add_ice_candidate(c).await {
                tracing::debug!(user = %self.user, "dropping ICE candidate: {e}");
            }
        }
    }

    /// ICE round-trip time of the nominated candidate pair.
    pub async fn rtt(&self) -> Option<Duration> {
        let report = self
            .pc
            .get_stats(Instant::now(), webrtc::peer_connection::StatsSelector::None)
            .await;
        report
            .candidate_pairs()
            .filter(|p| p.nominated && p.current_round_trip_time > 0.0)
            .map(|p| Duration::from_secs_f64(p.current_round_trip_time))
            .next()
    }

    pub async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.writer.abort();
        let _ = self.pc.close().await;
    }
}

/// A stable-per-user SSRC is not needed; any value unique within the connection is fine.
fn rand_ssrc(user: &UserId) -> u32 {
    let b = user.0;
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) ^ 0x4855_4d00 ^ (std::process::id() << 8)
}

async fn write_loop(
    mut frames: tokio::sync::broadcast::Receiver<super::audio::EncodedFrame>,
    track: Arc<TrackLocalStaticSample>,
    sender: Arc<dyn RtpSender>,
    connected: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
) {
    let mut target: Option<(u32, u8)> = None;
    loop {
        let f = match frames.recv().await {
            Ok(f) => f,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        };
        if closed.load(Ordering::SeqCst) {
            return;
        }
        // Frames produced before the path is up are dropped, not queued: sending them late
        // would only fill the far end's jitter buffer with stale audio.
        if !connected.load(Ordering::SeqCst) {
            continue;
        }
        if target.is_none() {
            // The payload type exists only once negotiation is done.
            let pt = match sender.get_parameters().await {
                Ok(p) => p.rtp_parameters.codecs.first().map(|c| c.payload_type),
                Err(_) => None,
            };
            let ssrc = track.ssrcs().await.first().copied();
            if let (Some(pt), Some(ssrc)) = (pt, ssrc) {
                target = Some((ssrc, pt));
            } else {
                continue;
            }
        }
        let Some((ssrc, pt)) = target else { continue };
        let sample = Sample {
            data: f.data,
            duration: f.frame.duration(),
            ..Sample::new(Instant::now())
        };
        if let Err(e) = track.sample_writer(ssrc, pt).write_sample(&sample).await {
            tracing::trace!("write_sample: {e}");
        }
    }
}
