//! VP8 through the system libvpx: a real-time encoder whose bitrate the congestion controller
//! sets, keyframes on request, and a decoder that reports what it could not decode.
//!
//! # Encoder settings (all profiles)
//! One pass, CBR, `g_lag_in_frames = 0` (no look-ahead: a frame leaves as soon as it is
//! encoded), `VPX_DL_REALTIME`, error-resilient (probabilities reset per frame, so a lost
//! packet does not poison the entropy state of the frames after it), no alt-ref / temporal
//! layers, automatic keyframes only every 3000 frames (the receiver asks for one with PLI),
//! rate-control buffers 500/600/1000 ms, undershoot 100 % / overshoot 15 %, quantiser 2-56, and
//! an intra-frame cap so a keyframe does not burst the link: libwebrtc's values.
//! The profiles differ in speed and content tuning; see [`EncoderConfig`].
//!
//! # Loss
//! Every VP8 delta frame here references the previous frame, so after a loss nothing decodes
//! correctly until a keyframe. The transport tells the decoder about gaps it saw
//! ([`Vp8Decoder::frame_lost`]); libvpx flags frames that referenced corrupt data; a frame
//! libvpx rejects counts as corrupt. In all three cases the decoder drops delta frames (they
//! would show garbage) until a keyframe arrives, and [`Vp8Decoder::take_keyframe_request`]
//! says once per episode that the sender should be asked for one.

use std::time::Instant;

use hum_proto::units::Bitrate;

use super::vpx::{RawDecoder, RawEncoder, RawEncoderConfig};
use super::{VideoError, VideoFrame};

/// What the encoder is tuned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// A camera: noise reduction off (webcams are already denoised), frame dropping on.
    Camera,
    /// A screen with motion (games, video): like a camera, but no frame dropping at 60 fps is
    /// paid for with a higher speed setting.
    ScreenMotion,
    /// Text and UI at a low frame rate: libvpx's screen-content mode, a static-block
    /// threshold, a lower quantiser ceiling (sharp glyphs), no frame dropping.
    ScreenText,
}

/// Settings for one VP8 encoder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderConfig {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate: Bitrate,
    pub content: Content,
    /// libvpx `cpu-used` (-16..16; negative = real time with that speed, bigger = faster).
    pub cpu_used: i32,
    pub threads: u32,
    /// Let rate control skip a frame when its buffer runs low (percent of the buffer).
    pub drop_frame_pct: u32,
}

impl EncoderConfig {
    /// A camera (or synthetic camera) stream.
    pub fn camera(width: u32, height: u32, fps: u32, bitrate: Bitrate) -> Self {
        Self {
            width,
            height,
            fps,
            bitrate,
            content: Content::Camera,
            cpu_used: -6,
            threads: threads_for(width, height),
            drop_frame_pct: 30,
        }
    }

    /// The same without rate-control frame drops (tests that expect every frame).
    pub fn without_frame_drops(mut self) -> Self {
        self.drop_frame_pct = 0;
        self
    }

    fn raw(&self) -> RawEncoderConfig {
        let text = self.content == Content::ScreenText;
        RawEncoderConfig {
            width: self.width,
            height: self.height,
            bitrate_kbps: kbps(self.bitrate),
            threads: self.threads,
            min_q: 2,
            max_q: if text { 40 } else { 56 },
            drop_frame_pct: self.drop_frame_pct,
            cpu_used: self.cpu_used,
            static_threshold: if text { 100 } else { 1 },
            screen_content: if text { 1 } else { 0 },
            noise_sensitivity: 0,
            // libwebrtc: optimal buffer (600 ms) x 0.5 x fps / 10, at least 300 %.
            max_intra_pct: (600 * self.fps / 20).max(300),
        }
    }
}

fn kbps(b: Bitrate) -> u32 {
    (b.bps() / 1000).clamp(1, u32::MAX as u64) as u32
}

/// Encoder threads: one, at every size. libvpx's VP8 row threads busy-wait for each other; on
/// a 2-core machine shared with audio, the other layers and the app, two threads per encoder
/// cost 3-5x the CPU time of one (video_bench: 720p30 simulcast 19 % of a core with one
/// thread per layer, far more with two) and one thread still encodes 1080p at ~77 fps.
fn threads_for(_width: u32, _height: u32) -> u32 {
    1
}

/// Screen-share presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScreenProfile {
    /// 1280x720 at 30 fps (what Discord gives for free).
    P720Fps30,
    /// 1920x1080 at 30 fps.
    P1080Fps30,
    /// 1920x1080 at 60 fps, for games.
    P1080Fps60,
    /// Native size at 5 fps, tuned for sharp text.
    Text,
}

impl ScreenProfile {
    /// Encoder settings for a `width` x `height` capture: motion profiles scale the capture to
    /// fit their size (keeping the aspect ratio, even dimensions); `Text` keeps it.
    pub fn config(self, width: u32, height: u32) -> EncoderConfig {
        let fit = |mw: u32, mh: u32| {
            let s = (mw as f64 / width as f64)
                .min(mh as f64 / height as f64)
                .min(1.0);
            let even = |x: f64| ((x * s / 2.0).round() as u32 * 2).max(2);
            (even(width as f64), even(height as f64))
        };
        let (content, (w, h), fps, bitrate, cpu_used) = match self {
            ScreenProfile::P720Fps30 => (
                Content::ScreenMotion,
                fit(1280, 720),
                30,
                Bitrate::from_kbps(1_500),
                -6,
            ),
            ScreenProfile::P1080Fps30 => (
                Content::ScreenMotion,
                fit(1920, 1080),
                30,
                Bitrate::from_kbps(3_000),
                -8,
            ),
            ScreenProfile::P1080Fps60 => (
                Content::ScreenMotion,
                fit(1920, 1080),
                60,
                Bitrate::from_kbps(5_000),
                -12,
            ),
            ScreenProfile::Text => (
                Content::ScreenText,
                (width, height),
                5,
                Bitrate::from_kbps(1_200),
                -6,
            ),
        };
        EncoderConfig {
            width: w,
            height: h,
            fps,
            bitrate,
            content,
            cpu_used,
            threads: threads_for(w, h),
            drop_frame_pct: 0,
        }
    }
}

/// One compressed video frame, ready to packetise (VP8 RTP payload, RFC 7741).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    pub data: Vec<u8>,
    pub keyframe: bool,
    /// The source frame's capture instant (the sender's RTP timestamp comes from it).
    pub captured: Instant,
    pub width: u32,
    pub height: u32,
}

/// A real-time VP8 encoder. See the module doc for its settings.
pub struct Vp8Encoder {
    raw: RawEncoder,
    config: EncoderConfig,
    first: Option<Instant>,
    last_pts: i64,
    keyframe_pending: bool,
}

impl std::fmt::Debug for Vp8Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vp8Encoder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Vp8Encoder {
    pub fn new(config: EncoderConfig) -> Result<Self, VideoError> {
        super::frame::check_size(config.width, config.height)?;
        Ok(Self {
            raw: RawEncoder::new(&config.raw())?,
            config,
            first: None,
            last_pts: -1,
            keyframe_pending: true,
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Sets the target bitrate (from the congestion controller); applies from the next frame.
    pub fn set_bitrate(&mut self, bitrate: Bitrate) -> Result<(), VideoError> {
        if bitrate != self.config.bitrate {
            self.raw.set_rate(kbps(bitrate))?;
            self.config.bitrate = bitrate;
        }
        Ok(())
    }

    pub fn bitrate(&self) -> Bitrate {
        self.config.bitrate
    }

    /// The next encoded frame will be a keyframe (a receiver sent PLI/FIR, or a layer resumed).
    pub fn request_keyframe(&mut self) {
        self.keyframe_pending = true;
    }

    /// Encodes `frame` (which must have the configured size). `None` when rate control dropped
    /// it to stay within the bitrate.
    pub fn encode(&mut self, frame: &VideoFrame) -> Result<Option<EncodedFrame>, VideoError> {
        let first = *self.first.get_or_insert(frame.captured);
        let pts = (frame.captured.saturating_duration_since(first).as_micros() as i64 * 9 / 100)
            .max(self.last_pts + 1);
        self.last_pts = pts;
        let duration = 90_000 / self.config.fps.max(1) as u64;
        let force = std::mem::take(&mut self.keyframe_pending);
        let packets = self.raw.encode(frame, pts, duration, force)?;
        let mut out: Option<EncodedFrame> = None;
        for p in packets {
            match &mut out {
                // One frame in, at most one frame out (no partitions, no lag); append if not.
                Some(e) => e.data.extend_from_slice(&p.data),
                None => {
                    out = Some(EncodedFrame {
                        data: p.data,
                        keyframe: p.keyframe,
                        captured: frame.captured,
                        width: frame.width(),
                        height: frame.height(),
                    })
                }
            }
        }
        if out.is_none() && force {
            // A dropped frame must not swallow a keyframe request.
            self.keyframe_pending = true;
        }
        Ok(out)
    }
}

/// Why the decoder produced no picture for a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discard {
    /// A frame before this one was lost or corrupt; waiting for a keyframe.
    WaitingForKeyframe,
    /// libvpx rejected the frame or flagged the result corrupt.
    Corrupt(String),
}

/// Counters for stats and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecoderStats {
    pub decoded: u64,
    pub discarded: u64,
    pub corrupt: u64,
    pub keyframe_requests: u64,
}

/// A VP8 decoder with loss handling (see the module doc).
pub struct Vp8Decoder {
    raw: RawDecoder,
    waiting_for_keyframe: bool,
    request_pending: bool,
    stats: DecoderStats,
}

impl std::fmt::Debug for Vp8Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vp8Decoder")
            .field("waiting_for_keyframe", &self.waiting_for_keyframe)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Whether a VP8 frame is a keyframe (RFC 6386 9.1: bit 0 of the first byte is 0, and the
/// start code 9d 01 2a follows the 3-byte tag).
pub fn is_keyframe(data: &[u8]) -> bool {
    data.len() >= 10 && data[0] & 1 == 0 && data[3..6] == [0x9d, 0x01, 0x2a]
}

impl Vp8Decoder {
    /// A decoder; it waits for a keyframe before showing anything.
    pub fn new() -> Result<Self, VideoError> {
        Ok(Self {
            raw: RawDecoder::new(2)?,
            waiting_for_keyframe: true,
            request_pending: false,
            stats: DecoderStats::default(),
        })
    }

    pub fn stats(&self) -> DecoderStats {
        self.stats
    }

    /// The transport saw a gap (RTP sequence numbers, VP8 picture ids) before the next frame.
    pub fn frame_lost(&mut self) {
        self.lose();
    }

    fn lose(&mut self) {
        if !self.waiting_for_keyframe {
            self.waiting_for_keyframe = true;
            self.request_pending = true;
            self.stats.keyframe_requests += 1;
        }
    }

    /// True once after each loss or corruption, until the keyframe arrives: the caller should
    /// send the sender a PLI now (and repeat it on its own timer while
    /// [`waiting_for_keyframe`](Self::waiting_for_keyframe) stays true).
    pub fn take_keyframe_request(&mut self) -> bool {
        std::mem::take(&mut self.request_pending)
    }

    pub fn waiting_for_keyframe(&self) -> bool {
        self.waiting_for_keyframe
    }

    /// Decodes one complete VP8 frame (bytes from the network: never panics). `captured` is
    /// stamped on the picture. Delta frames are discarded while waiting for a keyframe.
    pub fn decode(&mut self, data: &[u8], captured: Instant) -> Result<VideoFrame, Discard> {
        let key = is_keyframe(data);
        if self.waiting_for_keyframe && !key {
            self.stats.discarded += 1;
            // A decoder that never saw a keyframe asks too (a receiver joining mid-stream).
            if self.stats.keyframe_requests == 0 {
                self.stats.keyframe_requests += 1;
                self.request_pending = true;
            }
            return Err(Discard::WaitingForKeyframe);
        }
        let fail = |this: &mut Self, why: String| {
            this.stats.corrupt += 1;
            this.stats.discarded += 1;
            this.lose();
            Err(Discard::Corrupt(why))
        };
        match self.raw.decode(data) {
            Ok(false) => {}
            Ok(true) => return fail(self, "the frame references corrupt data".into()),
            Err(e) => return fail(self, e.to_string()),
        }
        match self.raw.take_frame(captured) {
            Ok(Some(f)) => {
                self.waiting_for_keyframe = false;
                self.request_pending = false;
                self.stats.decoded += 1;
                Ok(f)
            }
            Ok(None) => fail(self, "no picture".into()),
            Err(e) => fail(self, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::clock::{FrameClock, WallAnchor};
    use crate::video::pattern::{PatternSource, read_code};
    use crate::video::{PatternAnalyser, VideoSource};

    fn source(w: u32, h: u32) -> (PatternSource, WallAnchor) {
        let t0 = Instant::now();
        let anchor = WallAnchor::fixed(t0, 1_000_000_000);
        let s = PatternSource::new(w, h, FrameClock::virtual_from(t0, 30), anchor).expect("src");
        (s, anchor)
    }

    fn encode_n(cfg: EncoderConfig, n: usize) -> Vec<EncodedFrame> {
        let (mut src, _) = source(cfg.width, cfg.height);
        let mut enc = Vp8Encoder::new(cfg).expect("encoder");
        (0..n)
            .map(|_| {
                enc.encode(&src.read().expect("frame"))
                    .expect("encode")
                    .expect("not dropped")
            })
            .collect()
    }

    #[test]
    fn a_lost_frame_is_reported_and_a_requested_keyframe_recovers() {
        let cfg =
            EncoderConfig::camera(320, 180, 30, Bitrate::from_kbps(300)).without_frame_drops();
        let (mut src, anchor) = source(320, 180);
        let mut enc = Vp8Encoder::new(cfg).expect("encoder");
        let mut dec = Vp8Decoder::new().expect("decoder");
        let mut seen = PatternAnalyser::new(anchor);
        let mut keyframes = Vec::new();
        for k in 0..10u32 {
            let f = src.read().expect("frame");
            let e = enc.encode(&f).expect("encode").expect("not dropped");
            keyframes.push(e.keyframe);
            if k == 3 {
                dec.frame_lost(); // the transport saw the gap
                continue;
            }
            match dec.decode(&e.data, e.captured) {
                Ok(pic) => {
                    assert!(
                        !(3..5).contains(&k),
                        "frame {k} decoded while waiting for a keyframe"
                    );
                    assert_eq!(read_code(&pic).map(|c| c.frame), Some(k));
                    seen.observe(&pic, e.captured);
                }
                Err(Discard::WaitingForKeyframe) => {
                    assert_eq!(k, 4);
                    // The receiver sends PLI once; the sender answers with a keyframe.
                    assert!(dec.take_keyframe_request());
                    assert!(!dec.take_keyframe_request());
                    enc.request_keyframe();
                }
                Err(e) => panic!("frame {k}: {e:?}"),
            }
        }
        assert_eq!(
            keyframes,
            [
                true, false, false, false, false, true, false, false, false, false
            ]
        );
        assert!(!dec.waiting_for_keyframe());
        let stats = dec.stats();
        assert_eq!(
            (stats.decoded, stats.discarded, stats.keyframe_requests),
            (8, 1, 1)
        );
        let r = seen.report();
        assert_eq!((r.decoded, r.lost, r.out_of_order), (8, 2, 0));
    }

    #[test]
    fn garbage_and_truncated_frames_are_reported_not_fatal() {
        let frames = encode_n(
            EncoderConfig::camera(160, 90, 30, Bitrate::from_kbps(200)).without_frame_drops(),
            3,
        );
        let now = Instant::now();
        let mut dec = Vp8Decoder::new().expect("decoder");
        // Before any keyframe: delta frames wait (and ask for a keyframe once).
        assert_eq!(
            dec.decode(&frames[1].data, now),
            Err(Discard::WaitingForKeyframe)
        );
        assert!(dec.take_keyframe_request());
        assert!(dec.decode(&[], now).is_err());
        assert!(
            dec.decode(
                &[0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0xff, 0xff, 0xff, 0xff],
                now
            )
            .is_err()
        );
        let key = &frames[0].data;
        assert!(matches!(
            dec.decode(&key[..key.len() / 3], now),
            Err(Discard::Corrupt(_))
        ));
        dec.decode(key, now).expect("a whole keyframe decodes");
        dec.decode(&frames[1].data, now).expect("delta");
        let mut junk = frames[2].data.clone();
        for (i, b) in junk.iter_mut().enumerate().skip(3) {
            *b ^= (i * 37) as u8;
        }
        // Whatever libvpx makes of it, it must not panic; a rejected frame asks for a keyframe.
        if dec.decode(&junk, now).is_err() {
            assert!(dec.waiting_for_keyframe());
            assert!(dec.take_keyframe_request());
        }
        for _ in 0..50 {
            let _ = dec.decode(&[0x31; 64], now);
        }
    }

    #[test]
    fn the_bitrate_set_from_outside_changes_the_frame_sizes() {
        let cfg =
            EncoderConfig::camera(320, 180, 30, Bitrate::from_kbps(100)).without_frame_drops();
        let (mut src, _) = source(320, 180);
        let mut enc = Vp8Encoder::new(cfg).expect("encoder");
        let mut bytes = |enc: &mut Vp8Encoder, n: usize| -> usize {
            (0..n)
                .map(|_| {
                    let f = src.read().expect("frame");
                    enc.encode(&f).expect("encode").map_or(0, |e| e.data.len())
                })
                .sum()
        };
        bytes(&mut enc, 15);
        let low = bytes(&mut enc, 30);
        enc.set_bitrate(Bitrate::from_kbps(800)).expect("set");
        assert_eq!(enc.bitrate(), Bitrate::from_kbps(800));
        bytes(&mut enc, 15);
        let high = bytes(&mut enc, 30);
        // 30 frames = 1 s: roughly the target in bytes (CBR), and clearly apart.
        assert!(
            high > 3 * low,
            "100 kbit/s: {low} B/s, 800 kbit/s: {high} B/s"
        );
        assert!(low < 100_000 / 8 * 2, "{low}");
    }

    #[test]
    fn screen_profiles_fit_the_capture_and_encode_text_sharply() {
        let c = ScreenProfile::P1080Fps60.config(2560, 1440);
        assert_eq!((c.width, c.height, c.fps), (1920, 1080, 60));
        let c = ScreenProfile::P720Fps30.config(1920, 1200);
        assert_eq!((c.width, c.height, c.fps), (1152, 720, 30));
        let c = ScreenProfile::P1080Fps30.config(1280, 720);
        assert_eq!((c.width, c.height), (1280, 720));
        let text = ScreenProfile::Text.config(640, 360);
        assert_eq!(
            (text.width, text.height, text.fps, text.content),
            (640, 360, 5, Content::ScreenText)
        );
        let frames = encode_n(text, 3);
        let mut dec = Vp8Decoder::new().expect("decoder");
        for f in &frames {
            let pic = dec.decode(&f.data, f.captured).expect("decode");
            assert!(read_code(&pic).is_some());
        }
        assert!(frames[0].keyframe && !frames[1].keyframe);
    }
}
