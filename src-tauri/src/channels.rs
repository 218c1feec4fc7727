//! High-rate streams to the UI over `tauri::ipc::Channel` (not events: Tauri's events are JSON
//! broadcasts meant for rare state changes, a level meter at 20 Hz is not one).
//!
//! A hub keeps every subscribed channel and drops the ones whose webview went away (send fails).
//! Three streams: the input level (from a call's capture thread or, on the settings screen, from
//! hum-engine's `InputMonitor`), per-peer link statistics (`VoiceEvent::Stats`, every 2 s) and
//! encoded video frames ([`VideoPacket`], raw bytes: an `ArrayBuffer` in JS, never JSON).

use std::sync::Mutex;

use hum_engine::video_preview::PreviewFrame;
use hum_engine::voice::{EncodedVideoFrame, InputLevel, PeerStats, VideoKind};
use hum_proto::UserId;
use serde::Serialize;
use specta::Type;
use tauri::ipc::{Channel, InvokeResponseBody, IpcResponse};
use tokio::sync::watch;

/// One input level reading, for the sensitivity meter and the in-channel "you are heard" bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Type)]
pub struct LevelSample {
    /// Loudness over the last ~50 ms, whole dBFS (-100 = silence, 0 = full scale), after noise
    /// suppression and before the gate (so the meter moves while muted).
    pub rms_dbfs: i16,
    /// Loudest sample in that window, whole dBFS.
    pub peak_dbfs: i16,
    /// Whether this audio would be sent right now (mute, push-to-talk or voice activity).
    pub speaking: bool,
    /// The voice-activity floor for the current sensitivity, whole dBFS (the meter's marker).
    pub threshold_dbfs: i16,
    /// False once the source stopped (left the call, closed the settings screen).
    pub live: bool,
}

impl LevelSample {
    /// What the meter shows when nothing is measured.
    pub const IDLE: LevelSample = LevelSample {
        rms_dbfs: -100,
        peak_dbfs: -100,
        speaking: false,
        threshold_dbfs: -45,
        live: false,
    };
}

fn whole_db(db: f32) -> i16 {
    if db.is_finite() {
        db.round().clamp(-100.0, 0.0) as i16
    } else {
        -100
    }
}

impl From<InputLevel> for LevelSample {
    fn from(l: InputLevel) -> Self {
        Self {
            rms_dbfs: whole_db(l.level_db),
            peak_dbfs: whole_db(l.peak_db),
            speaking: l.gate_open,
            threshold_dbfs: whole_db(l.threshold_db),
            live: true,
        }
    }
}

/// Link quality to one peer, as the roster's tooltip and the call panel show it.
#[derive(Clone, Debug, PartialEq, Serialize, Type)]
pub struct PeerStatsView {
    /// Public key, hex.
    pub user_id: String,
    /// Round-trip time of the selected ICE pair, ms to 0.1 (null until measured).
    pub rtt_ms: Option<f32>,
    /// Frames concealed (lost or late), percent 0-100, one decimal.
    pub loss_pct: f32,
    /// Interarrival jitter, ms to 0.1.
    pub jitter_ms: f32,
    /// The jitter buffer's playout delay, ms.
    pub buffer_ms: u32,
    pub packets_received: u64,
    /// `good`, `fair` or `poor`: what the dot's colour says.
    pub quality: String,
}

/// Good below 150 ms and 2 % loss, poor above 300 ms or 8 %, fair between (the thresholds where
/// conversation starts to need turn-taking, and where Opus concealment becomes audible).
pub fn quality(rtt_ms: Option<f32>, loss_pct: f32) -> &'static str {
    let rtt = rtt_ms.unwrap_or(0.0);
    if rtt > 300.0 || loss_pct > 8.0 {
        "poor"
    } else if rtt > 150.0 || loss_pct > 2.0 {
        "fair"
    } else {
        "good"
    }
}

impl PeerStatsView {
    pub fn new(user: UserId, s: &PeerStats) -> Self {
        let tenths =
            |d: std::time::Duration| (d.as_secs_f64() * 10_000.0).round().min(1e9) as f32 / 10.0;
        let rtt_ms = s.rtt.map(tenths);
        let loss = if s.loss.is_finite() {
            s.loss.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let loss_pct = (loss * 1000.0).round() / 10.0;
        Self {
            user_id: user.to_string(),
            rtt_ms,
            loss_pct,
            jitter_ms: tenths(s.jitter),
            buffer_ms: s.jitter_buffer.as_millis().min(u32::MAX as u128) as u32,
            packets_received: s.packets_received,
            quality: quality(rtt_ms, loss_pct).into(),
        }
    }
}

/// Subscribers of one stream.
pub struct Hub<T: Clone> {
    subscribers: Mutex<Vec<Channel<T>>>,
}

impl<T: Clone> Default for Hub<T> {
    fn default() -> Self {
        Self {
            subscribers: Mutex::new(Vec::new()),
        }
    }
}

impl<T: Clone + IpcResponse> Hub<T> {
    pub fn subscribe(&self, channel: Channel<T>) {
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.push(channel);
        }
    }

    /// Sends to every live subscriber; returns how many got it.
    pub fn publish(&self, value: &T) -> usize {
        let Ok(mut subs) = self.subscribers.lock() else {
            return 0;
        };
        subs.retain(|ch| ch.send(value.clone()).is_ok());
        subs.len()
    }

    pub fn len(&self) -> usize {
        self.subscribers.lock().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub type LevelHub = Hub<LevelSample>;
pub type StatsHub = Hub<PeerStatsView>;
pub type VideoHub = Hub<VideoPacket>;

/// Version byte of [`VideoPacket`]; the UI drops messages of another version.
pub const VIDEO_WIRE_VERSION: u8 = 1;
/// Bytes before the stream id.
pub const VIDEO_HEADER_LEN: usize = 24;
/// Longest stream id (`self`, `<user hex>/camera`, ...), bytes of UTF-8.
pub const MAX_STREAM_ID_LEN: usize = 96;
/// Flag bit: the frame is a keyframe (a decoder may start here).
pub const VIDEO_FLAG_KEYFRAME: u8 = 1;
/// Flag bit: frames before this one were lost; a decoder must wait for a keyframe.
pub const VIDEO_FLAG_AFTER_LOSS: u8 = 2;
/// Flag bit: no frame; the sender turned this stream off (their camera went off): the tile
/// goes now instead of freezing on the last picture.
pub const VIDEO_FLAG_ENDED: u8 = 4;

/// One encoded video frame for the webview, sent as raw bytes through `ipc::Channel` (JS gets an
/// `ArrayBuffer`; a `Vec<u8>` would be a JSON array of numbers, ~4x the bytes and a parse).
///
/// Layout, little-endian (ui/src/lib/video.ts reads it):
/// ```text
///  0  u8   version (1)
///  1  u8   flags (bit 0: keyframe, bit 1: after a loss, bit 2: ended - no frame follows)
///  2  u8   stream id length N (1..=96)
///  3  u8   reserved (0)
///  4  u16  width          6  u16  height
///  8  u64  timestamp, µs of media time since the stream started (WebCodecs' unit)
/// 16  u64  capture time, Unix ms (0 = unknown): latency across processes
/// 24  N    stream id, UTF-8 ("self" = my camera; remote tracks: "<user hex>/<track>")
/// 24+N     the VP8 frame
/// ```
/// One channel carries every stream; the id routes a frame to its tile, so remote tracks use
/// the same channel and the same `VideoTile` as the self-view.
#[derive(Clone, Debug, PartialEq, Eq, Type)]
#[specta(type = specta_typescript::Unknown)]
pub struct VideoPacket(pub Vec<u8>);

/// `HUM_VIDEO_IPC=json` sends [`VideoPacket`]s as JSON arrays of numbers instead of raw bytes:
/// only to measure what the raw path saves (docs/app.md, "Video: numbers"); the UI reads both.
pub const VIDEO_IPC_ENV: &str = "HUM_VIDEO_IPC";

static VIDEO_AS_JSON: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var(VIDEO_IPC_ENV).is_ok_and(|v| v == "json"));

impl VideoPacket {
    fn into_body(self, json: bool) -> tauri::Result<InvokeResponseBody> {
        if json {
            Ok(InvokeResponseBody::Json(serde_json::to_string(&self.0)?))
        } else {
            Ok(InvokeResponseBody::Raw(self.0))
        }
    }
}

impl IpcResponse for VideoPacket {
    fn body(self) -> tauri::Result<InvokeResponseBody> {
        self.into_body(*VIDEO_AS_JSON)
    }
}

/// The header fields of one [`VideoPacket`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoMeta {
    pub keyframe: bool,
    /// Frames before this one were lost (a remote track): a decoder waits for a keyframe.
    pub after_loss: bool,
    pub width: u32,
    pub height: u32,
    pub timestamp_us: u64,
    pub capture_unix_ms: u64,
}

/// The stream id of a remote track: `<user hex>/camera` or `<user hex>/screen` (the sender's
/// track ids carry an SSRC that changes per call; the UI wants one id per person and kind).
pub fn remote_stream_id(user: &UserId, track: &str) -> String {
    let kind = match VideoKind::of_track(track) {
        VideoKind::Screen => "screen",
        VideoKind::Camera => "camera",
    };
    format!("{user}/{kind}")
}

impl VideoPacket {
    /// `None` when the id is empty or too long, or the size does not fit 16 bits.
    pub fn encode(stream_id: &str, f: &PreviewFrame) -> Option<Self> {
        Self::build(
            stream_id,
            VideoMeta {
                keyframe: f.keyframe,
                after_loss: false,
                width: f.width,
                height: f.height,
                timestamp_us: f.timestamp_us,
                capture_unix_ms: f.capture_unix_ms,
            },
            &f.data,
        )
    }

    /// A frame received from a peer, under [`remote_stream_id`].
    pub fn remote(f: &EncodedVideoFrame) -> Option<Self> {
        Self::build(
            &remote_stream_id(&f.user, &f.track),
            VideoMeta {
                keyframe: f.keyframe,
                after_loss: f.after_loss,
                width: f.width,
                height: f.height,
                timestamp_us: f.timestamp_us,
                capture_unix_ms: 0,
            },
            &f.data,
        )
    }

    /// The sender turned `stream_id` off (no frame in it).
    pub fn ended(stream_id: &str) -> Option<Self> {
        let mut p = Self::build(
            stream_id,
            VideoMeta {
                keyframe: false,
                after_loss: false,
                width: 0,
                height: 0,
                timestamp_us: 0,
                capture_unix_ms: 0,
            },
            &[],
        )?;
        p.0[1] = VIDEO_FLAG_ENDED;
        Some(p)
    }

    /// `None` when the id is empty or too long, or the size does not fit 16 bits.
    pub fn build(stream_id: &str, m: VideoMeta, data: &[u8]) -> Option<Self> {
        let id = stream_id.as_bytes();
        if id.is_empty() || id.len() > MAX_STREAM_ID_LEN {
            return None;
        }
        let (w, h) = (u16::try_from(m.width).ok()?, u16::try_from(m.height).ok()?);
        let mut b = Vec::with_capacity(VIDEO_HEADER_LEN + id.len() + data.len());
        b.push(VIDEO_WIRE_VERSION);
        let mut flags = 0;
        if m.keyframe {
            flags |= VIDEO_FLAG_KEYFRAME;
        }
        if m.after_loss {
            flags |= VIDEO_FLAG_AFTER_LOSS;
        }
        b.push(flags);
        b.push(id.len() as u8);
        b.push(0);
        b.extend_from_slice(&w.to_le_bytes());
        b.extend_from_slice(&h.to_le_bytes());
        b.extend_from_slice(&m.timestamp_us.to_le_bytes());
        b.extend_from_slice(&m.capture_unix_ms.to_le_bytes());
        b.extend_from_slice(id);
        b.extend_from_slice(data);
        Some(Self(b))
    }
}

/// Forwards one level source (a call's or the monitor's `watch` receiver) into the hub. Only one
/// source is followed at a time: following a new one stops the old forwarder.
#[derive(Default)]
pub struct LevelFollower {
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl LevelFollower {
    /// Starts forwarding `rx` (must run inside the async runtime). The newest value wins: a slow
    /// webview never holds up audio.
    pub fn follow(&self, hub: std::sync::Arc<LevelHub>, mut rx: watch::Receiver<InputLevel>) {
        let task = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let sample = LevelSample::from(*rx.borrow_and_update());
                hub.publish(&sample);
            }
        });
        if let Ok(mut slot) = self.task.lock()
            && let Some(old) = slot.replace(task.abort_handle())
        {
            old.abort();
        }
    }

    /// Stops forwarding and tells the meter the source is gone.
    pub fn stop(&self, hub: &LevelHub) {
        if let Ok(mut slot) = self.task.lock()
            && let Some(old) = slot.take()
        {
            old.abort();
            hub.publish(&LevelSample::IDLE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn publishes_to_every_subscriber() {
        let hub = LevelHub::default();
        let got = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let got = got.clone();
            hub.subscribe(Channel::new(move |_body| {
                got.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }));
        }
        let sent = hub.publish(&LevelSample::IDLE);
        assert_eq!(sent, 2);
        assert_eq!(got.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn video_packets_have_the_documented_layout_and_arrive_raw() {
        let f = PreviewFrame {
            data: vec![0x9d, 0x01, 0x2a, 7],
            keyframe: true,
            timestamp_us: 0x0102_0304_0506,
            capture_unix_ms: 1_700_000_000_123,
            width: 1280,
            height: 720,
        };
        let p = VideoPacket::encode("self", &f).expect("packet");
        let b = &p.0;
        assert_eq!(&b[..4], &[VIDEO_WIRE_VERSION, VIDEO_FLAG_KEYFRAME, 4, 0]);
        assert_eq!(u16::from_le_bytes([b[4], b[5]]), 1280);
        assert_eq!(u16::from_le_bytes([b[6], b[7]]), 720);
        assert_eq!(
            u64::from_le_bytes(b[8..16].try_into().expect("8")),
            0x0102_0304_0506
        );
        assert_eq!(
            u64::from_le_bytes(b[16..24].try_into().expect("8")),
            1_700_000_000_123
        );
        assert_eq!(&b[24..28], b"self");
        assert_eq!(&b[28..], &f.data[..]);
        let delta = PreviewFrame {
            keyframe: false,
            ..f.clone()
        };
        assert_eq!(
            VideoPacket::encode("u/camera", &delta).expect("packet").0[1],
            0
        );
        let remote = EncodedVideoFrame {
            user: UserId([0xab; 32]),
            track: "camera-1234abcd".into(),
            layer: None,
            data: vec![1u8, 2, 3].into(),
            keyframe: false,
            timestamp: 90,
            timestamp_us: 1000,
            width: 640,
            height: 360,
            arrival: std::time::Instant::now(),
            after_loss: true,
        };
        let r = VideoPacket::remote(&remote).expect("remote packet").0;
        let id = format!("{}/camera", "ab".repeat(32));
        assert_eq!(r[1], VIDEO_FLAG_AFTER_LOSS);
        assert_eq!(usize::from(r[2]), id.len());
        assert_eq!(&r[24..24 + id.len()], id.as_bytes());
        assert_eq!(&r[24 + id.len()..], &[1, 2, 3]);
        assert_eq!(
            remote_stream_id(&remote.user, "screen-9"),
            format!("{}/screen", "ab".repeat(32))
        );
        // Camera off: the ended flag alone, the id, no frame.
        let e = VideoPacket::ended(&id).expect("ended").0;
        assert_eq!(e[1], VIDEO_FLAG_ENDED);
        assert_eq!(e.len(), VIDEO_HEADER_LEN + id.len());
        assert_eq!(&e[24..], id.as_bytes());
        assert!(VideoPacket::ended("").is_none());
        assert!(VideoPacket::encode("", &f).is_none());
        assert!(VideoPacket::encode(&"x".repeat(MAX_STREAM_ID_LEN + 1), &f).is_none());
        let huge = PreviewFrame {
            width: 70_000,
            ..f.clone()
        };
        assert!(VideoPacket::encode("self", &huge).is_none());
        // Through a channel it is a raw body (an ArrayBuffer in JS), not JSON.
        let hub = VideoHub::default();
        let got = Arc::new(Mutex::new(Vec::new()));
        {
            let got = got.clone();
            hub.subscribe(Channel::new(move |body| {
                got.lock().expect("lock").push(body);
                Ok(())
            }));
        }
        assert_eq!(hub.publish(&p), 1);
        let got = got.lock().expect("lock");
        assert!(
            matches!(&got[0], InvokeResponseBody::Raw(r) if *r == p.0),
            "not raw bytes"
        );
        // The comparison path: the same bytes as a JSON array.
        let json = VideoPacket(vec![1, 0, 255]).into_body(true).expect("json");
        assert!(matches!(json, InvokeResponseBody::Json(j) if j == "[1,0,255]"));
    }

    #[test]
    fn levels_are_whole_db_and_never_nan() {
        let s = LevelSample::from(InputLevel {
            level_db: -23.4,
            peak_db: -19.6,
            gate_open: true,
            threshold_db: -45.0,
        });
        assert_eq!((s.rms_dbfs, s.peak_dbfs, s.threshold_dbfs), (-23, -20, -45));
        assert!(s.speaking && s.live);
        let s = LevelSample::from(InputLevel {
            level_db: f32::NEG_INFINITY,
            peak_db: f32::NAN,
            gate_open: false,
            threshold_db: -300.0,
        });
        assert_eq!(
            (s.rms_dbfs, s.peak_dbfs, s.threshold_dbfs),
            (-100, -100, -100)
        );
        assert_eq!(
            serde_json::to_string(&LevelSample::IDLE).expect("json"),
            r#"{"rms_dbfs":-100,"peak_dbfs":-100,"speaking":false,"threshold_dbfs":-45,"live":false}"#
        );
    }

    #[test]
    fn stats_view_rounds_and_grades() {
        let stats = PeerStats {
            rtt: Some(Duration::from_micros(42_600)),
            loss: 0.0134,
            jitter: Duration::from_millis(3),
            jitter_buffer: Duration::from_millis(40),
            buffered: Duration::from_millis(20),
            packets_received: 500,
        };
        let v = PeerStatsView::new(UserId([3; 32]), &stats);
        assert_eq!(v.rtt_ms, Some(42.6));
        assert_eq!(v.loss_pct, 1.3);
        assert_eq!(
            (v.jitter_ms, v.buffer_ms, v.packets_received),
            (3.0, 40, 500)
        );
        assert_eq!(v.quality, "good");
        assert_eq!(quality(Some(200.0), 0.0), "fair");
        assert_eq!(quality(None, 3.0), "fair");
        assert_eq!(quality(Some(20.0), 9.0), "poor");
        assert_eq!(quality(Some(400.0), 0.0), "poor");
        let sub_ms = PeerStats {
            rtt: Some(Duration::from_micros(190)),
            ..PeerStats::default()
        };
        assert_eq!(
            PeerStatsView::new(UserId([3; 32]), &sub_ms).rtt_ms,
            Some(0.2)
        );
        let nan = PeerStats {
            loss: f32::NAN,
            ..PeerStats::default()
        };
        assert_eq!(PeerStatsView::new(UserId([3; 32]), &nan).loss_pct, 0.0);
    }

    #[tokio::test]
    async fn follower_forwards_the_newest_level_and_says_when_it_stops() {
        let hub = Arc::new(LevelHub::default());
        let got = Arc::new(Mutex::new(Vec::<String>::new()));
        {
            let got = got.clone();
            hub.subscribe(Channel::new(move |body| {
                if let tauri::ipc::InvokeResponseBody::Json(j) = body {
                    got.lock().expect("lock").push(j);
                }
                Ok(())
            }));
        }
        let (tx, rx) = watch::channel(InputLevel::SILENT);
        let follower = LevelFollower::default();
        follower.follow(hub.clone(), rx);
        tx.send_replace(InputLevel {
            level_db: -20.0,
            peak_db: -10.0,
            gate_open: true,
            threshold_db: -45.0,
        });
        for _ in 0..100 {
            if !got.lock().expect("lock").is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        follower.stop(&hub);
        let got = got.lock().expect("lock").clone();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].contains(r#""rms_dbfs":-20"#) && got[0].contains(r#""live":true"#));
        assert!(got[1].contains(r#""live":false"#));
    }
}
