//! A viewer's picture and sound: the chunks its player plays (verified, [`PlayedChunk`]) split
//! into their VP8 frames, each handed on at its media time within the chunk, so a decoder
//! downstream (the app's WebCodecs tile) shows motion at the stream's rate rather than a burst
//! per chunk; and their Opus frames, decoded on a thread of their own into an [`AudioSink`] (the
//! speaker, or a synthetic sink), which paces them ([`AudioPlayout`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use hum_media::AudioSink;
use hum_media::codec::OpusDecoder;
use serde::Serialize;

use hum_mesh::chunker::Track;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::node::PlayedChunk;

/// One encoded video frame of a stream, ready for a decoder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlayerFrame {
    pub data: Vec<u8>,
    pub keyframe: bool,
    /// Media time since the stream began, µs (WebCodecs' timestamp unit).
    pub timestamp_us: u64,
    /// When the streamer captured it, Unix ms (the stream's start + media time).
    pub capture_unix_ms: u64,
    pub width: u32,
    pub height: u32,
}

/// The picture size a VP8 keyframe declares (RFC 6386 section 9.1); `None` for a delta frame or
/// anything too short or without the start code.
pub fn vp8_keyframe_size(data: &[u8]) -> Option<(u32, u32)> {
    if data.len() < 10 || data[0] & 1 != 0 || data[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u32::from(u16::from_le_bytes([data[6], data[7]]) & 0x3fff);
    let h = u32::from(u16::from_le_bytes([data[8], data[9]]) & 0x3fff);
    (w > 0 && h > 0).then_some((w, h))
}

/// The video frames of one played chunk, in order; frames before the first keyframe of a
/// stream (size unknown) are left out. `size` carries the last keyframe's size across chunks.
pub fn video_frames(
    c: &PlayedChunk,
    started_ms: u64,
    size: &mut Option<(u32, u32)>,
) -> Vec<PlayerFrame> {
    let Some(frames) = c.frames() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for f in frames.into_iter().filter(|f| f.track == Track::Video) {
        if f.keyframe
            && let Some(s) = vp8_keyframe_size(&f.data)
        {
            *size = Some(s);
        }
        let Some((width, height)) = *size else {
            continue;
        };
        out.push(PlayerFrame {
            keyframe: f.keyframe,
            timestamp_us: f.ts_us,
            capture_unix_ms: started_ms + f.ts_us / 1000,
            width,
            height,
            data: f.data,
        });
    }
    out
}

/// The Opus packets of one played chunk, in order.
pub fn audio_packets(c: &PlayedChunk) -> Vec<Vec<u8>> {
    c.frames()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f.track == Track::Audio)
        .map(|f| f.data)
        .collect()
}

/// Opus samples per 20 ms frame at 48 kHz (the stream's audio: docs/stream.md).
const AUDIO_FRAME: usize = 960;
/// Packets queued for the sink before the oldest is dropped (1 s: a burst of a few chunks).
const AUDIO_QUEUE: usize = 50;

/// What the audio playout did (the `hum watch --json` `audio` object).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AudioReport {
    /// Packets decoded and written to the sink.
    pub frames_played: u64,
    /// Frames the sink needed with no packet queued (the decoder's concealment, or silence).
    pub frames_concealed: u64,
    /// Packets that did not decode (skipped: concealment takes their place).
    pub decode_errors: u64,
    /// Packets dropped because the queue was full (playout fell a second behind).
    pub dropped: u64,
    /// 20 ms frames decoded and left out while the player caught up with the live edge (chunks
    /// played faster than real time: their sound must be shorter too), the quietest it could.
    pub shed: u64,
}

#[derive(Default)]
struct AudioShared {
    queue: Mutex<VecDeque<Vec<u8>>>,
    ready: Condvar,
    stop: AtomicBool,
    played: AtomicU64,
    concealed: AtomicU64,
    errors: AtomicU64,
    dropped: AtomicU64,
    shed: AtomicU64,
    /// Sound still to leave out to keep pace with chunks played fast, µs.
    owed_us: AtomicU64,
}

/// One 20 ms frame at 48 kHz, in µs.
const AUDIO_FRAME_US: u64 = 20_000;
/// A frame this quiet (RMS) is left out first when sound is owed: cutting near-silence is not
/// heard.
const QUIET_RMS: f32 = 0.01;
/// Owing this much, the next frame is left out however loud (the sound must not drift from the
/// picture).
const OWED_MAX_US: u64 = 3 * AUDIO_FRAME_US;

/// Whether to leave a decoded frame out to pay back `owed_us` of sound (see [`AudioReport::shed`]).
fn shed_frame(pcm: &[f32], owed_us: u64) -> bool {
    if owed_us < AUDIO_FRAME_US {
        return false;
    }
    if owed_us >= OWED_MAX_US {
        return true;
    }
    let energy: f32 = pcm.iter().map(|x| x * x).sum::<f32>() / pcm.len().max(1) as f32;
    energy.sqrt() < QUIET_RMS
}

/// The stream's sound: Opus packets in, decoded 20 ms at a time into a sink on a thread of its
/// own. The sink sets the pace (a device, or `hum_media::Paced` around a synthetic sink); while
/// packets come (a played chunk brings ~12 at once) they are decoded in order, and when none is
/// queued at the sink's turn the decoder conceals. Starts once the first packet arrives, so a
/// stream is not preceded by concealment.
pub struct AudioPlayout {
    shared: Arc<AudioShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for AudioPlayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioPlayout")
            .field("report", &self.report())
            .finish_non_exhaustive()
    }
}

impl AudioPlayout {
    pub fn start(mut sink: Box<dyn AudioSink>) -> Result<Self, super::StreamError> {
        let mut dec = OpusDecoder::new().map_err(|e| super::StreamError::Media(e.to_string()))?;
        let shared = Arc::new(AudioShared::default());
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("hum-stream-audio".into())
            .spawn(move || {
                let mut pcm = vec![0f32; AUDIO_FRAME];
                let mut started = false;
                while !sh.stop.load(Ordering::SeqCst) {
                    let packet = {
                        let Ok(mut q) = sh.queue.lock() else { return };
                        if !started {
                            // Wait for the first packet (or the stop).
                            while q.is_empty() && !sh.stop.load(Ordering::SeqCst) {
                                q = match sh.ready.wait_timeout(q, Duration::from_millis(100)) {
                                    Ok((q, _)) => q,
                                    Err(_) => return,
                                };
                            }
                            started = true;
                        }
                        q.pop_front()
                    };
                    let decoded = match packet {
                        Some(p) => match dec.decode(&p, &mut pcm) {
                            Ok(_) if shed_frame(&pcm, sh.owed_us.load(Ordering::Relaxed)) => {
                                // Decoded (the decoder's state follows the stream) but not
                                // played: the chunks it came in are playing faster.
                                let _ = sh.owed_us.fetch_update(
                                    Ordering::Relaxed,
                                    Ordering::Relaxed,
                                    |o| Some(o.saturating_sub(AUDIO_FRAME_US)),
                                );
                                sh.shed.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            Ok(_) => {
                                sh.played.fetch_add(1, Ordering::Relaxed);
                                true
                            }
                            Err(_) => {
                                sh.errors.fetch_add(1, Ordering::Relaxed);
                                false
                            }
                        },
                        None => false,
                    };
                    if !decoded {
                        sh.concealed.fetch_add(1, Ordering::Relaxed);
                        if dec.conceal(&mut pcm).is_err() {
                            pcm.fill(0.0);
                        }
                    }
                    if sink.write(&pcm).is_err() {
                        return;
                    }
                }
                let _ = sink.finish();
            })
            .map_err(|e| super::StreamError::Media(e.to_string()))?;
        Ok(AudioPlayout {
            shared,
            thread: Some(thread),
        })
    }

    /// Queue a played chunk's audio. A chunk played fast (catching up) leaves as much of its
    /// sound out as it plays short.
    pub fn push(&self, c: &PlayedChunk) {
        let packets = audio_packets(c);
        if packets.is_empty() {
            return;
        }
        if c.is_fast() {
            self.shared
                .owed_us
                .fetch_add(u64::from(c.duration_us - c.play_us), Ordering::Relaxed);
        }
        if let Ok(mut q) = self.shared.queue.lock() {
            for p in packets {
                q.push_back(p);
            }
            while q.len() > AUDIO_QUEUE {
                q.pop_front();
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.shared.ready.notify_one();
    }

    pub fn report(&self) -> AudioReport {
        let s = &self.shared;
        AudioReport {
            frames_played: s.played.load(Ordering::Relaxed),
            frames_concealed: s.concealed.load(Ordering::Relaxed),
            decode_errors: s.errors.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            shed: s.shed.load(Ordering::Relaxed),
        }
    }

    /// Stops (the sink is finished) and returns the counts.
    pub fn stop(mut self) -> AudioReport {
        self.halt();
        self.report()
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.ready.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AudioPlayout {
    fn drop(&mut self) {
        self.halt();
    }
}

/// What [`FrameHasher`] decoded (the `hum watch --json` `decode` object).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DecodeReport {
    /// Pictures decoded (and hashed).
    pub decoded: u64,
    /// Delta frames dropped before the first keyframe.
    pub waiting: u64,
    /// Frames the decoder refused (corrupt, or referencing a lost picture).
    pub corrupt: u64,
}

/// Decodes every video frame of the chunks it is given (VP8, hum-media's decoder, as the app's
/// WebCodecs tile would; one decoder per layer) and hashes each picture (BLAKE3 of its I420
/// planes) by layer and media time. VP8 decoding is deterministic, so a viewer's hashes equal
/// the streamer's own decode of what it published exactly when every frame reached the viewer
/// intact and in order.
pub struct FrameHasher {
    decoders: std::collections::BTreeMap<hum_mesh::Layer, hum_media::video::Vp8Decoder>,
    hashes: std::collections::BTreeMap<(hum_mesh::Layer, u64), blake3::Hash>,
    report: DecodeReport,
}

impl std::fmt::Debug for FrameHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameHasher")
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

impl FrameHasher {
    /// A hasher; its first decoder is made here, so a missing codec is an error now, not later.
    pub fn new() -> Result<Self, hum_media::video::VideoError> {
        let mut decoders = std::collections::BTreeMap::new();
        decoders.insert(hum_mesh::Layer::High, hum_media::video::Vp8Decoder::new()?);
        Ok(FrameHasher {
            decoders,
            hashes: Default::default(),
            report: DecodeReport::default(),
        })
    }

    /// Decode and hash the video frames of `c`, in order.
    pub fn push(&mut self, c: &PlayedChunk) {
        use hum_media::video::vp8::Discard;
        let decoder = match self.decoders.entry(c.layer) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                match hum_media::video::Vp8Decoder::new() {
                    Ok(d) => e.insert(d),
                    Err(_) => {
                        self.report.corrupt += 1;
                        return;
                    }
                }
            }
        };
        for f in c.frames().unwrap_or_default() {
            if f.track != Track::Video {
                continue;
            }
            match decoder.decode(&f.data, std::time::Instant::now()) {
                Ok(pic) => {
                    self.report.decoded += 1;
                    self.hashes
                        .insert((c.layer, f.ts_us), blake3::hash(pic.as_bytes()));
                }
                Err(Discard::WaitingForKeyframe) => self.report.waiting += 1,
                Err(Discard::Corrupt(_)) => self.report.corrupt += 1,
            }
        }
    }

    pub fn report(&self) -> DecodeReport {
        self.report
    }

    /// Each decoded picture's hash by layer and media time (µs since the stream began).
    pub fn hashes(&self) -> &std::collections::BTreeMap<(hum_mesh::Layer, u64), blake3::Hash> {
        &self.hashes
    }

    /// The hashes as text, one picture a line: `layer media_time_us blake3_hex`.
    pub fn to_lines(&self) -> String {
        let mut out = String::new();
        for ((layer, ts), h) in &self.hashes {
            out.push_str(&format!(
                "{} {ts} {}\n",
                super::node::layer_name(*layer),
                h.to_hex()
            ));
        }
        out
    }
}

/// Plays chunks from `rx` until it closes or `on_frame` returns false: each video frame goes to
/// `on_frame` at its offset from the time its chunk was played; its audio goes to `audio`.
pub fn spawn_player(
    mut rx: mpsc::Receiver<PlayedChunk>,
    started_ms: u64,
    audio: Option<Arc<AudioPlayout>>,
    mut on_frame: impl FnMut(PlayerFrame) -> bool + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut size = None;
        while let Some(c) = rx.recv().await {
            if let Some(a) = &audio {
                a.push(&c);
            }
            let at = Instant::now();
            for f in video_frames(&c, started_ms, &mut size) {
                // A chunk played fast (catching up) shows its frames closer together.
                let off = f.timestamp_us.saturating_sub(c.start_us) * u64::from(c.play_us)
                    / u64::from(c.duration_us.max(1));
                tokio::time::sleep_until(at + Duration::from_micros(off)).await;
                if !on_frame(f) {
                    return;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::source::{SourceConfig, StreamEncoder};
    use hum_mesh::Layer;

    /// The chunks of `frames` frames of the test source (picture and tone), as the streamer
    /// makes them.
    fn encoded_chunks(frames: usize) -> Vec<hum_mesh::chunker::Chunk> {
        let mut enc =
            StreamEncoder::new(SourceConfig::small_for_tests(), Layer::High).expect("encoder");
        let mut chunks = Vec::new();
        for _ in 0..frames {
            chunks.extend(enc.next_frame().expect("encode"));
        }
        chunks
    }

    #[test]
    fn played_chunks_become_sized_frames_in_order() {
        let chunks = encoded_chunks(11);
        assert_eq!(chunks.len(), 2);
        let mut size = None;
        let mut all = Vec::new();
        for c in &chunks {
            let played = PlayedChunk::from_chunk(c);
            all.extend(video_frames(&played, 1_000, &mut size));
        }
        assert_eq!(all.len(), 10, "5 video frames a chunk, audio left out");
        assert!(all[0].keyframe && all[5].keyframe && !all[1].keyframe);
        assert!(all.iter().all(|f| (f.width, f.height) == (160, 96)));
        assert_eq!(all[3].timestamp_us, 150_000);
        assert_eq!(all[3].capture_unix_ms, 1_150);
        assert!(
            all.windows(2)
                .all(|w| w[0].timestamp_us < w[1].timestamp_us)
        );
        // Decoding: every picture once, the same hashes from a second decoder fed the same.
        let mut a = FrameHasher::new().expect("decoder");
        let mut b = FrameHasher::new().expect("decoder");
        for c in &chunks {
            a.push(&PlayedChunk::from_chunk(c));
            b.push(&PlayedChunk::from_chunk(c));
        }
        assert_eq!(a.report().decoded, 10);
        assert_eq!(a.hashes(), b.hashes());
        assert_eq!(a.hashes().len(), 10);
        // Joining at the second chunk (a keyframe) decodes the same pictures from there on; a
        // corrupt frame is counted, not a panic, and its picture is not hashed.
        let mut late = FrameHasher::new().expect("decoder");
        late.push(&PlayedChunk::from_chunk(&chunks[1]));
        assert_eq!(late.report().decoded, 5);
        assert!(late.hashes().iter().all(|(k, h)| a.hashes()[k] == *h));
        assert!(a.to_lines().starts_with("high 0 "), "{}", a.to_lines());
        assert_eq!(a.to_lines().lines().count(), 10);
        let mut bad = PlayedChunk::from_chunk(&chunks[0]);
        let mut bytes = bad.payload.to_vec();
        let n = bytes.len();
        bytes[n / 2..].iter_mut().for_each(|b| *b ^= 0x5a);
        bad.payload = bytes.into();
        let mut broken = FrameHasher::new().expect("decoder");
        broken.push(&bad);
        let first: std::collections::BTreeMap<_, _> =
            a.hashes().iter().take(5).map(|(k, h)| (*k, *h)).collect();
        assert_ne!(broken.hashes(), &first, "{:?}", broken.report());
        // Garbage is no frame, never a panic.
        assert_eq!(vp8_keyframe_size(&[0u8; 3]), None);
        assert_eq!(
            vp8_keyframe_size(&[1, 0, 0, 0x9d, 1, 0x2a, 1, 0, 1, 0]),
            None
        );
        let bad = PlayedChunk {
            layer: Layer::High,
            seq: 0,
            start_us: 0,
            duration_us: 1,
            play_us: 1,
            payload: vec![0xffu8; 5].into(),
        };
        assert!(video_frames(&bad, 0, &mut None).is_empty());
    }

    #[test]
    fn the_streams_opus_track_is_decoded_into_the_sink() {
        let chunks = encoded_chunks(21);
        assert_eq!(chunks.len(), 4);
        let sink = hum_media::synth::MemorySink::new();
        // Paced as a device is (1 s of sound takes 1 s), so concealment after the last packet
        // does not spin.
        let audio = AudioPlayout::start(Box::new(hum_media::pacer::Paced::new(sink.clone())))
            .expect("decoder");
        let mut packets = 0;
        for c in &chunks {
            let played = PlayedChunk::from_chunk(c);
            packets += audio_packets(&played).len() as u64;
            audio.push(&played);
        }
        // Wait for the packets (an event: the count), not for time.
        while audio.report().frames_played < packets {
            std::thread::yield_now();
        }
        let r = audio.stop();
        assert_eq!(
            (r.frames_played, r.decode_errors, r.dropped),
            (packets, 0, 0)
        );
        // 1 s of the 440 Hz tone at 0.1: the decoded sound is not silence.
        let pcm = sink.samples();
        assert!(pcm.len() >= packets as usize * AUDIO_FRAME);
        let energy: f32 = pcm[..packets as usize * AUDIO_FRAME]
            .iter()
            .map(|x| x * x)
            .sum::<f32>()
            / (packets as f32 * AUDIO_FRAME as f32);
        assert!(energy > 0.001, "rms^2 {energy}");
    }

    #[test]
    fn chunks_played_fast_leave_as_much_sound_out_quiet_frames_first() {
        let chunks = encoded_chunks(21);
        let sink = hum_media::synth::MemorySink::new();
        let audio = AudioPlayout::start(Box::new(hum_media::pacer::Paced::new(sink.clone())))
            .expect("decoder");
        let mut packets = 0;
        let mut owed = 0;
        for c in &chunks {
            let mut played = PlayedChunk::from_chunk(c);
            // Each chunk plays 10% short, as the mesh player catching up plays it.
            played.play_us = (f64::from(played.duration_us) / 1.1).round() as u32;
            owed += u64::from(played.duration_us - played.play_us);
            packets += audio_packets(&played).len() as u64;
            audio.push(&played);
        }
        while audio.report().frames_played + audio.report().shed < packets {
            std::thread::yield_now();
        }
        let r = audio.stop();
        // A tone has no quiet frame: what is owed is paid a frame at a time once 3 frames are
        // owed, so at most that much is still owed at the end.
        assert_eq!(r.frames_played + r.shed, packets);
        assert_eq!(
            r.shed,
            (owed.saturating_sub(OWED_MAX_US) / AUDIO_FRAME_US + 1).min(owed / AUDIO_FRAME_US),
            "{r:?}, owed {owed} us"
        );
        // Quiet frames go as soon as a frame is owed, loud ones only when much is.
        let quiet = vec![0.001f32; AUDIO_FRAME];
        let loud = vec![0.2f32; AUDIO_FRAME];
        assert!(!shed_frame(&quiet, AUDIO_FRAME_US - 1));
        assert!(shed_frame(&quiet, AUDIO_FRAME_US));
        assert!(!shed_frame(&loud, 2 * AUDIO_FRAME_US));
        assert!(shed_frame(&loud, OWED_MAX_US));
    }
}
