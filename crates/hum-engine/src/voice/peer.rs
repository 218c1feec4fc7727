//! One WebRTC connection to one participant: our Opus track out, theirs in; with video (see
//! [`super::video`]) a VP8 track each way too.
//!
//! Negotiation is non-trickle on our side: we wait for ICE gathering to finish (instant on
//! loopback and LANs, bounded by a timeout with STUN) and send one SDP carrying every
//! candidate; that halves the signalling messages and has no candidate-before-offer race.
//! Trickled candidates from the other side (browsers trickle) are accepted, and queued until
//! the remote description is set.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hum_proto::Bitrate;
use hum_proto::UserId;
use rtc::interceptor::{
    Attribute, BandwidthEstimator, CongestionControlBuilder, Interceptor, Packet, Registry, Slot,
    StreamInfo, TaggedPacket, TwccSenderBuilder,
};
use rtc::media::Sample;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use std::collections::VecDeque;
use tokio::sync::{Mutex, mpsc};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::Track;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceCandidateInit, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
};
use webrtc::rtp_transceiver::RtpSender;

use super::audio::AudioEngine;
use super::video::congestion::{self, LayerControl};
use super::video::screen::ScreenLink;
use super::video::{LayerDemand, SIMULCAST_LAYERS, SessionVideo, ladder_rates};
use super::{VoiceConfig, VoiceError};
use hum_media::video::simulcast::LayerFrame;

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
    video: Arc<SessionVideo>,
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
        if track.kind().await == RtpCodecKind::Video {
            if self.video.enabled {
                tokio::spawn(super::video::receive(track, self.user, self.video.clone()));
            }
            return;
        }
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
    ice: crate::ice::IceConfig,
    gathered: Arc<AtomicBool>,
    pending_ice: Mutex<Vec<RTCIceCandidateInit>>,
    closed: Arc<AtomicBool>,
    writer: tokio::task::JoinHandle<()>,
    /// The video send loop and the task reading keyframe requests for our video track.
    video_tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("user", &self.user).finish()
    }
}

impl Peer {
    pub(crate) async fn new(
        user: UserId,
        offerer: bool,
        cfg: &VoiceConfig,
        engine: Arc<AudioEngine>,
        video: Arc<SessionVideo>,
        state_tx: mpsc::UnboundedSender<(UserId, PeerSignal)>,
    ) -> Result<Self, VoiceError> {
        let mut media = MediaEngine::default();
        media.register_default_codecs()?;
        // With video to send, the path's bandwidth estimate (GCC over TWCC feedback) drives
        // which layer this peer gets and at what rate (see `video::congestion`).
        let estimate = video.sender.as_ref().map(|_| Arc::new(AtomicU64::new(0)));
        let registry = match (&video.sender, &estimate) {
            (Some(s), Some(e)) => congestion_interceptors(&mut media, s.bitrate(), e.clone())?,
            _ => interceptors(&mut media)?,
        };
        let ice = cfg.ice();
        let config = ice.rtc_configuration()?;
        let gathered = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicBool::new(false));
        engine.add_remote(user);
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config)
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler {
                user,
                engine: engine.clone(),
                video: video.clone(),
                gathered: gathered.clone(),
                connected: connected.clone(),
                state_tx,
            }))
            .with_udp_addrs(cfg.bind.clone())
            .build()
            .await?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);

        let ssrc = rand_ssrc(&user);
        let track = opus_track("hum".to_owned(), ssrc)?;
        let sender = pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
        let closed = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(write_loop(
            engine.subscribe(),
            track,
            sender,
            connected.clone(),
            closed.clone(),
        ));
        let mut video_tasks = Vec::new();
        if let Some(send) = &video.sender {
            let video_ssrc = ssrc ^ 0x5649_4400;
            // webrtc-rs routes feedback by track id, looking at received tracks first: an id
            // the peer's own camera track also has would send its PLIs to that track instead.
            let track_id = format!("camera-{video_ssrc:08x}");
            let track = Arc::new(TrackLocalStaticSample::new(
                Instant::now(),
                MediaStreamTrack::new(
                    "hum".to_owned(),
                    track_id,
                    "camera".to_owned(),
                    RtpCodecKind::Video,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(video_ssrc),
                            ..Default::default()
                        },
                        codec: vp8_codec(),
                        ..Default::default()
                    }],
                ),
            )?);
            let sender = pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
            let pli = Arc::new(AtomicBool::new(false));
            video_tasks.push(tokio::spawn(keyframe_requests(track.clone(), pli.clone())));
            let (frames, demand) = send.subscribe_mesh();
            video_tasks.push(tokio::spawn(video_write_loop(
                VideoOut {
                    user,
                    track,
                    sender,
                    connected: connected.clone(),
                    closed: closed.clone(),
                    wish: video.wish(user),
                    demand,
                    estimate: estimate.clone().unwrap_or_default(),
                    total: send.bitrate_knob(),
                    size: (send.format.width, send.format.height),
                    pli,
                    layer_keyframes: send.layer_keyframe_flags(),
                    fps: send.format.fps.max(1),
                },
                frames,
            )));
        } else if video.enabled {
            pc.add_transceiver_from_kind(
                RtpCodecKind::Video,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .await?;
        }
        if video.enabled {
            // The screen track, after the camera's (answerers match video m-lines in order):
            // idle until a share starts, so sharing needs no renegotiation.
            video_tasks.extend(
                super::video::screen::add_screen_track(
                    &pc,
                    &video,
                    ScreenLink {
                        stream_id: "hum".to_owned(),
                        ssrc: ssrc ^ 0x5343_5200,
                        connected: connected.clone(),
                        closed: closed.clone(),
                        viewer: video.screen_viewer(user),
                        mid: None,
                        transform: None,
                    },
                )
                .await?,
            );
        }
        Ok(Self {
            user,
            offerer,
            pc,
            ice,
            gathered,
            pending_ice: Mutex::new(Vec::new()),
            closed,
            writer,
            video_tasks,
        })
    }

    /// Waits (bounded) for ICE gathering, then returns the full local SDP.
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

    /// The path media takes to this peer (the selected candidate pair), once connected.
    pub async fn route(&self) -> Option<crate::ice::IceRoute> {
        crate::ice::selected_route(&self.pc).await
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

    /// Whether `offer` comes from another connection than the one we negotiated with: its SDP
    /// session id (the `o=` line, kept for a connection's whole life, RFC 3264 section 5)
    /// differs from the remote description's. The other side closed its connection to us and
    /// made a new one (its relay session moved, or it restarted), so this one cannot carry it:
    /// applied here the offer would be a renegotiation, which restarts ICE but never redoes
    /// DTLS with the new connection. `false` before any remote description, and for an SDP
    /// that does not parse (applying it reports the error).
    pub async fn is_another_connection(&self, offer: &str) -> bool {
        let Some(current) = self.pc.remote_description().await else {
            return false;
        };
        match (session_id(&current.sdp), session_id(offer)) {
            (Some(a), Some(b)) => a != b,
            _ => false,
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
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
        for t in &self.video_tasks {
            t.abort();
        }
        let _ = self.pc.close().await;
    }
}

/// The SDP session id of a description (the `o=` line).
fn session_id(sdp: &str) -> Option<u64> {
    let d = RTCSessionDescription::offer(sdp.to_owned()).ok()?;
    d.unmarshal().ok().map(|s| s.origin.session_id)
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
        } else {
            crate::budget::count_own_media(sample.data.len());
        }
    }
}

/// VP8 as we send it: the feedback libwebrtc and webrtc-rs offer (NACK, PLI, FIR, REMB).
pub(crate) fn vp8_codec() -> RTCRtpCodec {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![
            fb("goog-remb", ""),
            fb("ccm", "fir"),
            fb("nack", ""),
            fb("nack", "pli"),
        ],
    }
}

/// What a peer's video send loop works with.
struct VideoOut {
    user: UserId,
    track: Arc<TrackLocalStaticSample>,
    sender: Arc<dyn RtpSender>,
    connected: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
    /// The layer the peer asked for (`NO_LAYER`: none, or it never asked).
    wish: Arc<AtomicU8>,
    /// The layers this loop needs encoded now (the capture thread ORs every peer's), and the
    /// rate the path allows for them.
    demand: Arc<LayerDemand>,
    /// The path's bandwidth estimate (bit/s, GCC), copied out of the interceptor chain.
    estimate: Arc<AtomicU64>,
    /// The user's budget for our video (bit/s): the ladder's total.
    total: Arc<AtomicU64>,
    /// Source size, for the ladder's rates.
    size: (u32, u32),
    /// The peer sent a PLI/FIR.
    pli: Arc<AtomicBool>,
    layer_keyframes: Arc<[AtomicBool; SIMULCAST_LAYERS]>,
    fps: u32,
}

/// Sends this peer the layer of our video it asked for, on our one video track: nothing before
/// the connection is up or before it asks (a peer that did not take video costs no encoding),
/// then from a keyframe on. A change of layer keeps sending the old one until the new one's
/// keyframe (asked for) arrives, then switches: the receiver's decoder sees a keyframe of a new
/// size, on the same stream.
async fn video_write_loop(
    out: VideoOut,
    mut frames: tokio::sync::broadcast::Receiver<Arc<LayerFrame>>,
) {
    let VideoOut {
        user,
        track,
        sender,
        connected,
        closed,
        wish,
        demand,
        estimate,
        total,
        size,
        pli,
        layer_keyframes,
        fps,
    } = out;
    let mut control = LayerControl::default();
    let mut target: Option<(u32, u8)> = None;
    // The layer sent now, and whether the peer got a keyframe of it since the last gap.
    let mut current: Option<usize> = None;
    let mut started = false;
    let mut asked_key = false;
    let mut prev: Option<Instant> = None;
    // Wakes the loop while no frames come (nothing wanted yet), to notice a new wish.
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ask_key = |layer: usize| {
        if let Some(f) = layer_keyframes.get(layer) {
            f.store(true, Ordering::Relaxed);
        }
    };
    loop {
        let frame = tokio::select! {
            f = frames.recv() => match f {
                Ok(f) => Some(f),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Frames were skipped: the next delta would reference one the peer never got.
                    started = false;
                    asked_key = false;
                    None
                }
                Err(_) => return,
            },
            _ = tick.tick() => None,
        };
        if closed.load(Ordering::SeqCst) {
            demand.mask.store(0, Ordering::Relaxed);
            return;
        }
        let up = connected.load(Ordering::SeqCst);
        let asked = match wish.load(Ordering::SeqCst) {
            l if up && usize::from(l) < SIMULCAST_LAYERS => Some(usize::from(l)),
            _ => None,
        };
        // Congestion control: at most the layer the path's estimate allows, at the rate it
        // allows.
        let wanted = asked.map(|w| {
            let cap = Bitrate::from_bps(total.load(Ordering::Relaxed));
            let nominal = ladder_rates(size.0, size.1, cap);
            let estimated = Bitrate::from_bps(estimate.load(Ordering::Relaxed));
            let before = control.layer();
            let d = control.update(
                Instant::now(),
                &nominal,
                w,
                congestion::available(estimated, cap),
            );
            if before.is_some_and(|b| b != d.layer) {
                tracing::info!(
                    %user,
                    layer = d.layer,
                    asked = w,
                    estimate_kbps = estimated.bps() / 1000,
                    rate_kbps = d.bitrate.bps() / 1000,
                    "video congestion: layer to peer changed"
                );
            }
            demand.cap_bps.store(d.bitrate.bps(), Ordering::Relaxed);
            d.layer
        });
        if wanted.is_none() {
            if current.take().is_some() {
                tracing::debug!(%user, "video to peer paused");
            }
            started = false;
        }
        // What must be encoded for this peer: the wanted layer, and the one sent now until
        // the wanted one's keyframe arrives.
        let mut mask = wanted.map_or(0, |l| 1u8 << l);
        if let (Some(c), Some(_)) = (current, wanted) {
            mask |= 1 << c;
        }
        demand.mask.store(mask, Ordering::Relaxed);
        if pli.swap(false, Ordering::Relaxed)
            && let Some(l) = current.or(wanted)
        {
            ask_key(l);
        }
        let Some(f) = frame else { continue };
        let Some(want) = wanted else { continue };
        if current != Some(want) {
            if f.layer == want && f.frame.keyframe {
                tracing::debug!(%user, from = ?current, to = want, "video layer switched");
                current = Some(want);
                started = false;
            } else if !asked_key {
                ask_key(want);
                asked_key = true;
            }
        }
        if Some(f.layer) != current {
            continue;
        }
        if !started && !f.frame.keyframe {
            if !asked_key {
                ask_key(f.layer);
                asked_key = true;
            }
            continue;
        }
        if target.is_none() {
            let pt = match sender.get_parameters().await {
                Ok(p) => p
                    .rtp_parameters
                    .codecs
                    .iter()
                    .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(MIME_TYPE_VP8))
                    .map(|c| c.payload_type),
                Err(_) => None,
            };
            let ssrc = track.ssrcs().await.first().copied();
            match (pt, ssrc) {
                (Some(pt), Some(ssrc)) => target = Some((ssrc, pt)),
                _ => continue,
            }
        }
        let Some((ssrc, pt)) = target else { continue };
        // RTP time advances by the capture interval (the receiver's clock is the sender's).
        let frame_time = Duration::from_secs(1) / fps;
        let captured = f.frame.captured;
        let duration = prev
            .and_then(|p| captured.checked_duration_since(p))
            .filter(|d| !d.is_zero() && *d < Duration::from_secs(1))
            .unwrap_or(frame_time);
        prev = Some(captured);
        let sample = Sample {
            data: bytes::Bytes::copy_from_slice(&f.frame.data),
            duration,
            ..Sample::new(captured)
        };
        match track.sample_writer(ssrc, pt).write_sample(&sample).await {
            Ok(()) => {
                started = true;
                asked_key = false;
                crate::budget::count_own_media(sample.data.len());
            }
            Err(e) => tracing::trace!("video write_sample: {e}"),
        }
    }
}

/// Keyframe requests (PLI, FIR) for our video track from the peer.
pub(crate) async fn keyframe_requests(
    track: Arc<TrackLocalStaticSample>,
    keyframe: Arc<AtomicBool>,
) {
    loop {
        match track.poll().await {
            Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                    tracing::debug!("keyframe request from the peer");
                    keyframe.store(true, Ordering::Relaxed);
                }
            }
            Some(_) => {}
            // Not bound (yet, or any more).
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

pub(crate) fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let p = packet.as_any();
    p.is::<PictureLossIndication>() || p.is::<FullIntraRequest>()
}

/// Marks inbound PLI/FIR for the application: inbound RTCP otherwise ends inside the
/// interceptor chain (webrtc-rs' `rtcp-processing` example does the same). Last in the chain,
/// so every interceptor has seen all of the RTCP first; everything else is dropped here.
#[derive(Default)]
pub(crate) struct KeyframeRequests {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
    /// Where the congestion controller's estimate (bit/s) goes, with congestion control on.
    estimate: Option<Arc<AtomicU64>>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        // The estimate rides on the feedback packet that changed it (wire-most interceptor).
        if let Some(estimate) = &self.estimate
            && let Some(Attribute::TargetBitrateChanged { bits_per_second }) =
                msg.message.get(&Attribute::TargetBitrateChanged {
                    bits_per_second: 0.0,
                })
        {
            estimate.store(*bits_per_second as u64, Ordering::Relaxed);
        }
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| is_keyframe_request(p.as_ref()))
                .cloned()
                .collect();
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(requests);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequests {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Our outgoing Opus track (one stream per peer connection, mesh or SFU): `stream_id` is the msid
/// stream the receiver sees, `ssrc` ours.
pub(crate) fn opus_track(
    stream_id: String,
    ssrc: u32,
) -> Result<Arc<TrackLocalStaticSample>, VoiceError> {
    Ok(Arc::new(TrackLocalStaticSample::new(
        Instant::now(),
        MediaStreamTrack::new(
            stream_id,
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
    )?))
}

/// The interceptors of every connection we make (mesh peers and the SFU): NACK (answered from a
/// send history, asked for on gaps), RTCP reports, TWCC feedback, and keyframe requests handed
/// to us (inbound RTCP otherwise stops inside the chain).
pub(crate) fn interceptors(media: &mut MediaEngine) -> Result<Registry, VoiceError> {
    Ok(register_default_interceptors(Registry::new(), media)?
        .with(Slot::from(14_000), KeyframeRequests::default()))
}

/// [`interceptors`] plus send-side congestion control, for a mesh peer we send video to: our
/// packets get transport-wide sequence numbers (the peer's TWCC receiver, in the default chain
/// on both sides, reports their arrival), GCC estimates the path from those reports, and its
/// estimate is stored in `estimate` (bit/s). No pacer: the encoder follows the estimate, and a
/// pacer would delay audio behind video bursts.
pub(crate) fn congestion_interceptors(
    media: &mut MediaEngine,
    cap: Bitrate,
    estimate: Arc<AtomicU64>,
) -> Result<Registry, VoiceError> {
    let gcc = congestion::estimator(cap);
    estimate.store(gcc.target_bitrate() as u64, Ordering::Relaxed);
    Ok(register_default_interceptors(Registry::new(), media)?
        .with(
            Slot::CongestionControl,
            CongestionControlBuilder::new(gcc).build(),
        )
        .with(Slot::TwccSender, TwccSenderBuilder::new().build())
        .with(
            Slot::from(14_000),
            KeyframeRequests {
                estimate: Some(estimate),
                ..Default::default()
            },
        ))
}
