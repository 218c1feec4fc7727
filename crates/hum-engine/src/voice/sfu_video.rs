//! Our camera to the SFU as three simulcast layers (RIDs `q`, `h`, `f`: a quarter, a half and
//! the full size, see [`simulcast_ladder`](super::video::simulcast_ladder)) on one VP8 track
//! with one SSRC per layer; the SFU forwards each subscriber the layer it chooses and asks us
//! (PLI on that layer's SSRC) for a keyframe when it switches someone to a layer.
//!
//! Only the layers some subscriber takes are encoded: the relay passes on the SFU's word
//! (`sfu_layers`, [`SimulcastTrack::set_wanted`]) into this track's [`LayerDemand`], the same
//! mask a mesh send loop sets, so the one capture thread pauses the others (and a resumed
//! layer starts with a keyframe, where the SFU switches its subscribers onto it). Until the
//! SFU first says, every layer runs: a new subscriber may take any, and a relay that never
//! says (an older one) still gets them all.
//!
//! Every packet carries the `sdes:mid` and `sdes:rtp-stream-id` header extensions (RFC 8843,
//! RFC 8852): the SDP lists RIDs, not SSRCs, so that is how the SFU (str0m) tells the layers
//! apart. webrtc-rs does not add them itself, so we write them as custom extensions; the mid
//! is read from our own local SDP once it is set ([`track_mid`]; the screen track, one encoding
//! and no RID, writes its mid the same way: `video::screen`).
//!
//! Receiving needs nothing SFU-specific: the SFU sends each remote camera as one ordinary VP8
//! track (owner = `msid` stream id), received like a mesh peer's by [`super::video::receive`].

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hum_media::video::simulcast::{LayerFrame, rid};
use rtc::media::Sample;
use rtc::peer_connection::configuration::interceptor_registry::configure_simulcast_extension_headers;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::extension::HeaderExtension;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sdp::extmap::{SDES_MID_URI, SDES_RTP_STREAM_ID_URI};
use rtc::shared::marshal::{Marshal, MarshalSize};
use tokio::sync::broadcast;
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{MediaEngine, PeerConnection};
use webrtc::rtp_transceiver::RtpSender;

use super::VoiceError;
use super::video::{LayerDemand, SIMULCAST_LAYERS, VideoSender};

/// An RTP header extension whose value is a short string (mid, rid).
struct TextExtension(Vec<u8>);

impl MarshalSize for TextExtension {
    fn marshal_size(&self) -> usize {
        self.0.len()
    }
}

impl Marshal for TextExtension {
    fn marshal_to(&self, buf: &mut [u8]) -> rtc::shared::error::Result<usize> {
        let n = self.0.len();
        if buf.len() < n {
            return Err(rtc::shared::error::Error::ErrBufferTooSmall);
        }
        buf[..n].copy_from_slice(&self.0);
        Ok(n)
    }
}

pub(crate) fn text_extension(uri: &'static str, value: &str) -> HeaderExtension {
    HeaderExtension::Custom {
        uri: Cow::Borrowed(uri),
        extension: Box::new(TextExtension(value.as_bytes().to_vec())),
    }
}

/// Lets the media engine offer `sdes:mid` and `sdes:rtp-stream-id` on video.
pub(crate) fn register_extensions(media: &mut MediaEngine) -> Result<(), VoiceError> {
    configure_simulcast_extension_headers(media)?;
    Ok(())
}

/// The mid of the m-line that carries our track `track_id` (its `a=msid:<stream> <track>`
/// line), in our own local SDP once set: the camera's and the screen's video m-lines apart.
pub(crate) fn track_mid(sdp: &str, track_id: &str) -> Option<String> {
    let mut mid = None;
    let mut ours = false;
    for line in sdp.lines() {
        let line = line.trim_end();
        if line.starts_with("m=") {
            if ours {
                break;
            }
            mid = None;
        } else if let Some(m) = line.strip_prefix("a=mid:") {
            mid = Some(m.to_owned());
        } else if let Some(msid) = line.strip_prefix("a=msid:") {
            ours |= msid.split_whitespace().nth(1) == Some(track_id);
        }
    }
    if ours { mid } else { None }
}

/// The layer mask (bit `i` = layer `i`) of a list of RIDs; RIDs we do not send are ignored.
pub(crate) fn rid_mask<S: AsRef<str>>(rids: &[S]) -> u8 {
    rids.iter()
        .filter_map(|r| (0..SIMULCAST_LAYERS).position(|i| rid(i) == r.as_ref()))
        .fold(0, |m, i| m | (1 << i))
}

/// Our simulcast camera track on the SFU connection and its two tasks.
pub(crate) struct SimulcastTrack {
    /// Our track id (`camera-…`), to find its m-line in our SDP.
    pub(crate) track_id: String,
    /// Our video m-line's mid, filled in when the local description is set.
    pub(crate) mid: Arc<Mutex<Option<String>>>,
    /// The layers the SFU wants encoded (all until it says).
    demand: Arc<LayerDemand>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SimulcastTrack {
    /// Adds the track (three encodings, one SSRC each) and starts its send loop and its
    /// keyframe-request reader.
    pub(crate) async fn add(
        pc: &Arc<dyn PeerConnection>,
        stream_id: String,
        base_ssrc: u32,
        send: &VideoSender,
        connected: Arc<AtomicBool>,
        // End to end (docs/e2ee.md): each layer's frames encrypted before the packetiser.
        transform: Option<Arc<dyn hum_e2ee::FrameTransform>>,
    ) -> Result<Self, VoiceError> {
        let ssrcs: [u32; SIMULCAST_LAYERS] =
            std::array::from_fn(|i| base_ssrc ^ 0x5649_4400 ^ (i as u32 + 1));
        let encodings = (0..SIMULCAST_LAYERS)
            .map(|i| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    rid: rid(i).to_owned(),
                    ssrc: Some(ssrcs[i]),
                    ..Default::default()
                },
                codec: super::peer::vp8_codec(),
                ..Default::default()
            })
            .collect();
        let track_id = format!("camera-{base_ssrc:08x}");
        let track = Arc::new(TrackLocalStaticSample::new(
            Instant::now(),
            MediaStreamTrack::new(
                stream_id,
                track_id.clone(),
                "camera".to_owned(),
                RtpCodecKind::Video,
                encodings,
            ),
        )?);
        let sender = pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
        let mid = Arc::new(Mutex::new(None));
        let flags = send.layer_keyframe_flags();
        let (frames, demand) = send.subscribe_layers();
        let tasks = vec![
            tokio::spawn(keyframe_requests(track.clone(), ssrcs, flags.clone())),
            tokio::spawn(write_loop(
                frames,
                track,
                sender,
                ssrcs,
                mid.clone(),
                connected,
                flags,
                send.format.fps.max(1),
                transform,
            )),
        ];
        Ok(Self {
            track_id,
            mid,
            demand,
            tasks,
        })
    }

    /// The SFU's word on which layers of our track `track` someone takes (`sfu_layers`):
    /// only those are encoded from the next captured frame. Returns the new mask, or `None`
    /// when `track` is not this track.
    pub(crate) fn set_wanted<S: AsRef<str>>(&self, track: &str, rids: &[S]) -> Option<u8> {
        if track != self.track_id {
            return None;
        }
        let mask = rid_mask(rids);
        self.demand.mask.store(mask, Ordering::Relaxed);
        Some(mask)
    }

    pub(crate) fn stop(&self) {
        // Nothing more is sent here: nothing more is encoded for it.
        self.demand.mask.store(0, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for SimulcastTrack {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends each layer's frames on its SSRC, from a keyframe of that layer on.
#[allow(clippy::too_many_arguments)]
async fn write_loop(
    mut frames: broadcast::Receiver<Arc<LayerFrame>>,
    track: Arc<TrackLocalStaticSample>,
    sender: Arc<dyn RtpSender>,
    ssrcs: [u32; SIMULCAST_LAYERS],
    mid: Arc<Mutex<Option<String>>>,
    connected: Arc<AtomicBool>,
    keyframes: Arc<[AtomicBool; SIMULCAST_LAYERS]>,
    fps: u32,
    transform: Option<Arc<dyn hum_e2ee::FrameTransform>>,
) {
    let mut pt: Option<u8> = None;
    let mut started = [false; SIMULCAST_LAYERS];
    let mut prev: [Option<Instant>; SIMULCAST_LAYERS] = [None; SIMULCAST_LAYERS];
    loop {
        let l = match frames.recv().await {
            Ok(l) => l,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Frames skipped on every layer: each restarts on a keyframe.
                started = [false; SIMULCAST_LAYERS];
                for k in keyframes.iter() {
                    k.store(true, Ordering::Relaxed);
                }
                continue;
            }
            Err(_) => return,
        };
        let i = l.layer;
        if i >= SIMULCAST_LAYERS {
            continue;
        }
        if !connected.load(Ordering::SeqCst) {
            started[i] = false;
            continue;
        }
        if !started[i] && !l.frame.keyframe {
            keyframes[i].store(true, Ordering::Relaxed);
            continue;
        }
        let Some(mid) = mid.lock().ok().and_then(|m| m.clone()) else {
            continue;
        };
        if pt.is_none() {
            pt = match sender.get_parameters().await {
                Ok(p) => p
                    .rtp_parameters
                    .codecs
                    .iter()
                    .find(|c| {
                        c.rtp_codec.mime_type.eq_ignore_ascii_case(
                            rtc::peer_connection::configuration::media_engine::MIME_TYPE_VP8,
                        )
                    })
                    .map(|c| c.payload_type),
                Err(_) => None,
            };
        }
        let Some(pt) = pt else { continue };
        let f = &l.frame;
        let frame_time = Duration::from_secs(1) / fps;
        let duration = prev[i]
            .and_then(|p| f.captured.checked_duration_since(p))
            .filter(|d| !d.is_zero() && *d < Duration::from_secs(1))
            .unwrap_or(frame_time);
        prev[i] = Some(f.captured);
        let Some(data) = crate::e2ee::seal_video(transform.as_deref(), &f.data) else {
            continue;
        };
        let sample = Sample {
            data,
            duration,
            ..Sample::new(f.captured)
        };
        match track
            .sample_writer(ssrcs[i], pt)
            .with_extension(text_extension(SDES_MID_URI, &mid))
            .with_extension(text_extension(SDES_RTP_STREAM_ID_URI, rid(i)))
            .write_sample(&sample)
            .await
        {
            Ok(()) => {
                started[i] = true;
                crate::budget::count_own_media(sample.data.len());
            }
            Err(e) => tracing::trace!("simulcast write_sample: {e}"),
        }
    }
}

/// PLI/FIR from the SFU name the layer by its SSRC: a keyframe of that layer only.
async fn keyframe_requests(
    track: Arc<TrackLocalStaticSample>,
    ssrcs: [u32; SIMULCAST_LAYERS],
    flags: Arc<[AtomicBool; SIMULCAST_LAYERS]>,
) {
    loop {
        match track.poll().await {
            Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                for p in &packets {
                    let any = p.as_any();
                    let media: Vec<u32> =
                        if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                            vec![pli.media_ssrc]
                        } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                            fir.fir.iter().map(|e| e.ssrc).collect()
                        } else {
                            continue;
                        };
                    for m in media {
                        match ssrcs.iter().position(|s| *s == m) {
                            Some(i) => flags[i].store(true, Ordering::Relaxed),
                            // An SSRC we do not know: all layers (cheap insurance).
                            None => flags.iter().for_each(|f| f.store(true, Ordering::Relaxed)),
                        }
                    }
                }
            }
            Some(_) => {}
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tracks_mid_is_read_from_its_msid_line() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=msid:me opus-1\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:me camera-0000002a\r\na=mid:1\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=msid:me screen-5343522a\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=recvonly\r\n";
        assert_eq!(track_mid(sdp, "camera-0000002a"), Some("1".into()));
        assert_eq!(track_mid(sdp, "screen-5343522a"), Some("2".into()));
        assert_eq!(track_mid(sdp, "opus-1"), Some("0".into()));
        assert_eq!(track_mid(sdp, "screen-00000000"), None);
        assert_eq!(
            track_mid(sdp, "me"),
            None,
            "the stream id is not a track id"
        );
    }

    #[test]
    fn rids_name_layers_and_unknown_ones_are_ignored() {
        assert_eq!(rid_mask(&["q", "f"]), 0b101);
        assert_eq!(rid_mask(&["f", "h", "q"]), 0b111);
        assert_eq!(rid_mask::<&str>(&[]), 0);
        assert_eq!(rid_mask(&["x", "", "qq", "Q"]), 0, "not ours");
        assert_eq!(rid_mask(&["h", "h"]), 0b010);
    }

    #[test]
    fn text_extensions_marshal_their_bytes() {
        let e = TextExtension(b"q".to_vec());
        let mut buf = [0u8; 4];
        assert_eq!(e.marshal_size(), 1);
        assert_eq!(e.marshal_to(&mut buf).ok(), Some(1));
        assert_eq!(buf[0], b'q');
        assert!(e.marshal_to(&mut []).is_err());
    }
}
