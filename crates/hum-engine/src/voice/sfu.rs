//! The client side of a voice channel on the SFU: one WebRTC connection to the relay's SFU
//! carrying our Opus track out (with the RFC 6464 audio level the SFU's speaker detection
//! reads) and one Opus track in per other member, mixed exactly as mesh peers are (the same
//! [`AudioEngine`], keyed by the track owner's user id, which the SFU puts in `msid`).
//!
//! Negotiation: we offer our track (`sfu_join`), the SFU answers; then the SFU offers the
//! others' tracks whenever they change (`sfu_offer` events) and we answer. Non-trickle, as in
//! the mesh: the SFU is ICE-lite and sends its one candidate in its SDP.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hum_proto::UserId;
use rtc::media::Sample;
use rtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpHeaderExtensionCapability, RtpCodecKind};
use tokio::sync::mpsc;
use webrtc::media_stream::Track;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
};
use webrtc::rtp_transceiver::RtpSender;

use super::audio::{AudioEngine, AudioPath};
use super::sfu_video::{SimulcastTrack, track_mid};
use super::video::SessionVideo;
use super::video::screen::{ScreenLink, screen_track_id};
use super::{VoiceConfig, VoiceError};

/// RFC 6464: client-to-mixer audio level.
const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// What the SFU connection reports to the voice link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SfuSignal {
    Connected,
    /// ICE/DTLS failed or closed.
    Failed,
    /// The first packet of `user`'s audio arrived over the SFU.
    Heard(UserId),
}

struct Handler {
    engine: Arc<AudioEngine>,
    /// End-to-end decryption of received audio frames (docs/e2ee.md).
    transform: Option<Arc<dyn hum_e2ee::FrameTransform>>,
    video: Arc<SessionVideo>,
    gathered: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
    tx: mpsc::UnboundedSender<SfuSignal>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        self.gathered
            .store(state == RTCIceGatheringState::Complete, Ordering::SeqCst);
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let up = state == RTCPeerConnectionState::Connected;
        self.connected.store(up, Ordering::SeqCst);
        let s = match state {
            RTCPeerConnectionState::Connected => SfuSignal::Connected,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => SfuSignal::Failed,
            _ => return,
        };
        let _ = self.tx.send(s);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // The SFU names each forwarded track's stream after its owner.
        let stream = track.stream_id().await;
        let Ok(user) = stream.parse::<UserId>() else {
            tracing::debug!(%stream, "SFU track with no owner id; ignored");
            return;
        };
        if track.kind().await == RtpCodecKind::Video {
            if self.video.enabled {
                tokio::spawn(super::video::receive_with_transform(
                    track,
                    user,
                    self.video.clone(),
                    self.transform.clone(),
                ));
            }
            return;
        }
        if track.kind().await != RtpCodecKind::Audio {
            return;
        }
        let (engine, tx) = (self.engine.clone(), self.tx.clone());
        let transform = self.transform.clone();
        tokio::spawn(async move {
            let mut heard = false;
            while let Some(ev) = track.poll().await {
                match ev {
                    TrackRemoteEvent::OnRtpPacket(pkt) => {
                        // End to end (docs/e2ee.md): what does not decrypt is dropped.
                        let Some(payload) =
                            crate::e2ee::open_audio(transform.as_deref(), &user, &pkt.payload)
                        else {
                            continue;
                        };
                        let played =
                            engine.push_via(&user, AudioPath::Sfu, pkt.header.timestamp, payload);
                        if played && !heard {
                            heard = true;
                            let _ = tx.send(SfuSignal::Heard(user));
                        }
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

/// Our one connection to the SFU.
pub struct SfuPeer {
    pc: Arc<dyn PeerConnection>,
    ice: crate::ice::IceConfig,
    gathered: Arc<AtomicBool>,
    writer: tokio::task::JoinHandle<()>,
    /// Our camera as simulcast layers (when the session sends video).
    camera: Option<SimulcastTrack>,
    /// Our screen track (in every session with video; idle until a share starts).
    screen: Option<SfuScreen>,
}

/// Our screen share to the SFU: one VP8 encoding (no simulcast: whoever watches a share shows
/// it large), forwarded by the SFU to every member under a `screen-…` track id.
struct SfuScreen {
    track_id: String,
    mid: Arc<std::sync::Mutex<Option<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for SfuScreen {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl std::fmt::Debug for SfuPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SfuPeer").finish_non_exhaustive()
    }
}

impl SfuPeer {
    /// Builds the connection with our audio track (and our camera's simulcast layers when the
    /// session sends video); nothing is sent before [`SfuPeer::offer`].
    pub(crate) async fn new(
        me: UserId,
        cfg: &VoiceConfig,
        engine: Arc<AudioEngine>,
        video: Arc<SessionVideo>,
    ) -> Result<(Self, mpsc::UnboundedReceiver<SfuSignal>), VoiceError> {
        let mut media = MediaEngine::default();
        media.register_default_codecs()?;
        media.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: AUDIO_LEVEL_URI.to_owned(),
            },
            RtpCodecKind::Audio,
            None,
        )?;
        if video.enabled {
            super::sfu_video::register_extensions(&mut media)?;
        }
        let registry = super::peer::interceptors(&mut media)?;
        let ice = cfg.ice();
        let gathered = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::unbounded_channel();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(ice.rtc_configuration()?)
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler {
                engine: engine.clone(),
                transform: cfg.frame_transform.clone(),
                video: video.clone(),
                gathered: gathered.clone(),
                connected: connected.clone(),
                tx,
            }))
            .with_udp_addrs(cfg.bind.clone())
            .build()
            .await?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let b = me.0;
        let ssrc = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) ^ 0x5346_5500;
        let track = super::peer::opus_track(me.to_string(), ssrc)?;
        let sender = pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
        let writer = tokio::spawn(write_loop(
            engine,
            track,
            sender,
            connected.clone(),
            cfg.frame_transform.clone(),
        ));
        let camera = match &video.sender {
            Some(send) => Some(
                SimulcastTrack::add(
                    &pc,
                    me.to_string(),
                    ssrc,
                    send,
                    connected.clone(),
                    cfg.frame_transform.clone(),
                )
                .await?,
            ),
            None => None,
        };
        let screen = if video.enabled {
            let (ssrc, mid) = (ssrc ^ 0x5343_5200, Arc::new(std::sync::Mutex::new(None)));
            let tasks = super::video::screen::add_screen_track(
                &pc,
                &video,
                ScreenLink {
                    stream_id: me.to_string(),
                    ssrc,
                    connected,
                    closed: Arc::new(AtomicBool::new(false)),
                    // The SFU forwards it to every member (who hides it is theirs to say).
                    viewer: Arc::new(AtomicBool::new(true)),
                    mid: Some(mid.clone()),
                    transform: cfg.frame_transform.clone(),
                },
            )
            .await?;
            Some(SfuScreen {
                track_id: screen_track_id(ssrc),
                mid,
                tasks,
            })
        } else {
            None
        };
        Ok((
            Self {
                pc,
                ice,
                gathered,
                writer,
                camera,
                screen,
            },
            rx,
        ))
    }

    async fn gathered_sdp(&self) -> Result<String, VoiceError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.gathered.load(Ordering::SeqCst) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let sdp = self
            .pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| VoiceError::WebRtc("no local description".into()))?;
        self.ice.check_local_sdp(&sdp)?;
        Ok(sdp)
    }

    /// Our offer for `sfu_join`.
    pub async fn offer(&self) -> Result<String, VoiceError> {
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer).await?;
        let sdp = self.gathered_sdp().await?;
        let ours = [
            self.camera.as_ref().map(|c| (&c.track_id, &c.mid)),
            self.screen.as_ref().map(|s| (&s.track_id, &s.mid)),
        ];
        for (track_id, mid) in ours.into_iter().flatten() {
            if let Ok(mut m) = mid.lock() {
                *m = track_mid(&sdp, track_id);
            }
        }
        Ok(sdp)
    }

    /// The SFU's answer to our offer.
    pub async fn accept_answer(&self, sdp: String) -> Result<(), VoiceError> {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(sdp)?)
            .await?;
        Ok(())
    }

    /// An offer from the SFU (others' tracks); returns our answer for `sfu_answer`.
    pub async fn answer(&self, sdp: String) -> Result<String, VoiceError> {
        self.pc
            .set_remote_description(RTCSessionDescription::offer(sdp)?)
            .await?;
        let answer = self.pc.create_answer(None).await?;
        self.gathered.store(false, Ordering::SeqCst);
        self.pc.set_local_description(answer).await?;
        self.gathered_sdp().await
    }

    /// The SFU says which layers of our track `track` some subscriber takes (`sfu_layers`):
    /// our camera encodes only those. Returns the layer mask set, or `None` when `track` is
    /// not our camera (a stale word about an earlier connection's track, or no camera).
    pub fn set_wanted_layers(&self, track: &str, rids: &[String]) -> Option<u8> {
        self.camera.as_ref()?.set_wanted(track, rids)
    }

    pub async fn close(&self) {
        self.writer.abort();
        if let Some(c) = &self.camera {
            c.stop();
        }
        if let Some(s) = &self.screen {
            s.tasks.iter().for_each(|t| t.abort());
        }
        let _ = self.pc.close().await;
    }
}

impl Drop for SfuPeer {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

/// Our encoded frames onto the SFU track, each packet with the frame's audio level.
async fn write_loop(
    engine: Arc<AudioEngine>,
    track: Arc<TrackLocalStaticSample>,
    sender: Arc<dyn RtpSender>,
    connected: Arc<AtomicBool>,
    transform: Option<Arc<dyn hum_e2ee::FrameTransform>>,
) {
    let mut frames = engine.subscribe();
    let level = engine.input_level();
    let mut target: Option<(u32, u8)> = None;
    loop {
        let f = match frames.recv().await {
            Ok(f) => f,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        };
        // As in the mesh: frames from before the connection is up are stale, not queued.
        if !connected.load(Ordering::SeqCst) {
            continue;
        }
        if target.is_none() {
            let pt = match sender.get_parameters().await {
                Ok(p) => p.rtp_parameters.codecs.first().map(|c| c.payload_type),
                Err(_) => None,
            };
            let ssrc = track.ssrcs().await.first().copied();
            match (pt, ssrc) {
                (Some(pt), Some(ssrc)) => target = Some((ssrc, pt)),
                _ => continue,
            }
        }
        let Some((ssrc, pt)) = target else { continue };
        let (db, voice) = {
            let l = level.borrow();
            (l.level_db, l.gate_open)
        };
        // End to end (docs/e2ee.md): encrypted before the packetiser sees it.
        let Some(data) = crate::e2ee::seal_audio(transform.as_deref(), f.data) else {
            continue;
        };
        let sample = Sample {
            data,
            duration: f.frame.duration(),
            ..Sample::new(Instant::now())
        };
        let ext = AudioLevelExtension {
            level: dbov(db, voice),
            voice,
        };
        if let Err(e) = track
            .sample_writer(ssrc, pt)
            .with_audio_level(ext)
            .write_sample(&sample)
            .await
        {
            tracing::trace!("write_sample: {e}");
        } else {
            crate::budget::count_own_media(sample.data.len());
        }
    }
}

/// RFC 6464 level (0 = loudest, 127 = silence, in -dBov) from the meter's dBFS; a closed gate
/// sends silence (the frame is muted or below the VAD).
fn dbov(level_db: f32, gate_open: bool) -> u8 {
    if !gate_open || !level_db.is_finite() {
        return 127;
    }
    (-level_db).round().clamp(0.0, 127.0) as u8
}

#[cfg(test)]
mod tests {
    use super::dbov;

    #[test]
    fn levels_map_to_rfc6464() {
        assert_eq!(dbov(0.0, true), 0);
        assert_eq!(dbov(-20.4, true), 20);
        assert_eq!(dbov(-300.0, true), 127);
        assert_eq!(dbov(f32::NEG_INFINITY, true), 127);
        assert_eq!(dbov(-10.0, false), 127);
    }
}
