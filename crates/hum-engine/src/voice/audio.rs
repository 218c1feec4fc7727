//! The real-time half of voice: a capture thread and a playout thread, each paced by its
//! device (or a [`Paced`](hum_media::pacer::Paced) synthetic stand-in).
//!
//! Threads, not tasks: audio must keep its 10/20 ms cadence whatever the async runtime is
//! doing, and the WebRTC VAD inside the capture pipeline is not `Send` anyway (so the pipeline
//! is built on its thread).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use hum_media::codec::{LossEstimator, OpusConfig, OpusEncoder};
use hum_media::jitter::JitterConfig;
use hum_media::mixer::Mixer;
use hum_media::monitor::InputLevel;
use hum_media::processing::{CaptureControls, CapturePipeline, VoiceMode};
use hum_media::stream::RemoteAudio;
use hum_media::{AudioSink, AudioSource, FrameDuration, MediaError};
use hum_proto::UserId;
use tokio::sync::{broadcast, mpsc};

use super::{PeerStats, VoiceEvent};

#[derive(Debug, Clone)]
pub struct AudioSettings {
    pub frame: FrameDuration,
    pub bitrate_bps: u32,
    pub controls: CaptureControls,
}

/// One encoded frame, ready for every peer's track.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    pub data: Bytes,
    pub frame: FrameDuration,
}

type Remotes = Arc<Mutex<BTreeMap<UserId, RemoteAudio>>>;
/// Loss of our stream as each peer reported it (e.g. from RTCP receiver reports), 0..=1.
type UplinkLoss = Arc<Mutex<BTreeMap<UserId, f32>>>;

/// The playout thread hands audio to the sink in blocks of this size whatever the codec frame:
/// a packet that just missed a block waits at most 10 ms for the next one, not a whole 20 ms
/// frame (on average 5 ms instead of 10 ms of mouth-to-ear latency).
pub const PLAYOUT_BLOCK: FrameDuration = FrameDuration::Ms10;

/// How often the encoder's expected loss (and so its FEC) is re-estimated.
const LOSS_WINDOW_SAMPLES: usize = hum_media::SAMPLE_RATE as usize;

/// Which connection a remote participant's audio comes over: a mesh peer connection or the
/// channel's one connection to the SFU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AudioPath {
    #[default]
    Mesh,
    Sfu,
}

/// What to do with a packet that arrived over some path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Play,
    /// The first packet over the preferred path: start a fresh jitter buffer, then play.
    Switch,
    Drop,
}

/// While a channel moves between mesh and SFU, a participant's audio arrives over both for a
/// moment (make before break). Each participant is played from one path: the one it was heard
/// on first, until the first packet over the preferred path (the channel's mode) takes over.
/// Packets over the other path are dropped, so nobody is heard twice, and the switch costs one
/// jitter buffer refill instead of the time to tear one connection down and set up the other.
#[derive(Debug, Default)]
pub(crate) struct Router {
    preferred: AudioPath,
    active: BTreeMap<UserId, AudioPath>,
}

impl Router {
    pub(crate) fn on_packet(&mut self, user: UserId, path: AudioPath) -> Route {
        match self.active.get(&user) {
            Some(p) if *p == path => Route::Play,
            Some(_) if path == self.preferred => {
                self.active.insert(user, path);
                Route::Switch
            }
            Some(_) => Route::Drop,
            None => {
                self.active.insert(user, path);
                Route::Play
            }
        }
    }

    /// Whether the connection over `path` may drop `user`'s audio state (it is not playing
    /// from the other path).
    pub(crate) fn release(&mut self, user: &UserId, path: AudioPath) -> bool {
        match self.active.get(user) {
            Some(p) if *p != path => false,
            _ => {
                self.active.remove(user);
                true
            }
        }
    }

    pub(crate) fn path(&self, user: &UserId) -> Option<AudioPath> {
        self.active.get(user).copied()
    }
}

pub struct AudioEngine {
    packets: broadcast::Sender<EncodedFrame>,
    remotes: Remotes,
    router: Mutex<Router>,
    uplink_loss: UplinkLoss,
    mixer: Arc<Mutex<Mixer<UserId>>>,
    controls: CaptureControls,
    /// Set while the channel does not let us speak: the capture thread encodes and sends
    /// nothing (not even the silence a mute sends), to mesh peers and the SFU alike.
    withheld: Arc<AtomicBool>,
    frame: FrameDuration,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for AudioEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioEngine").finish()
    }
}

impl AudioEngine {
    pub fn start(
        source: Box<dyn AudioSource>,
        sink: Box<dyn AudioSink>,
        settings: AudioSettings,
        events: mpsc::UnboundedSender<VoiceEvent>,
    ) -> Result<Self, MediaError> {
        let (packets, _) = broadcast::channel(64);
        let remotes: Remotes = Arc::default();
        let uplink_loss: UplinkLoss = Arc::default();
        let mixer = Arc::new(Mutex::new(Mixer::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let withheld = Arc::new(AtomicBool::new(false));
        // Fail early (not on the thread) if Opus rejects the settings. FEC starts off and
        // follows measured loss (see `capture_loop`).
        let encoder = OpusEncoder::new(OpusConfig {
            frame: settings.frame,
            bitrate_bps: settings.bitrate_bps,
            expected_loss_percent: 0,
            ..Default::default()
        })?;
        let capture = {
            let (packets, stop, events, controls, withheld) = (
                packets.clone(),
                stop.clone(),
                events.clone(),
                settings.controls.clone(),
                withheld.clone(),
            );
            let loss = LossSources {
                remotes: remotes.clone(),
                uplink: uplink_loss.clone(),
            };
            std::thread::Builder::new()
                .name("hum-capture".into())
                .spawn(move || {
                    capture_loop(
                        source,
                        encoder,
                        controls,
                        settings.frame,
                        packets,
                        stop,
                        withheld,
                        events,
                        loss,
                    )
                })?
        };
        let playout = {
            let (remotes, mixer, stop) = (remotes.clone(), mixer.clone(), stop.clone());
            let frame = settings.frame;
            std::thread::Builder::new()
                .name("hum-playout".into())
                .spawn(move || playout_loop(sink, frame, remotes, mixer, stop, events))?
        };
        Ok(Self {
            packets,
            remotes,
            router: Mutex::new(Router::default()),
            uplink_loss,
            mixer,
            controls: settings.controls,
            withheld,
            frame: settings.frame,
            stop,
            threads: Mutex::new(vec![capture, playout]),
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<EncodedFrame> {
        self.packets.subscribe()
    }

    pub fn controls(&self) -> &CaptureControls {
        &self.controls
    }

    /// Stops (`true`) or resumes sending audio at all, whatever the controls say: for a
    /// channel that took our `speak` permission away (see [`super::VoiceSession::set_speak_allowed`]).
    pub fn set_withheld(&self, withheld: bool) {
        self.withheld.store(withheld, Ordering::SeqCst);
    }

    pub fn withheld(&self) -> bool {
        self.withheld.load(Ordering::SeqCst)
    }

    /// Our microphone level (after noise suppression, before the gate) and gate state, ~20 Hz.
    pub fn input_level(&self) -> tokio::sync::watch::Receiver<InputLevel> {
        self.controls.input_level()
    }

    pub fn add_remote(&self, user: UserId) {
        if let Ok(mut r) = self.remotes.lock() {
            r.entry(user).or_insert_with(|| self.new_remote());
        }
    }

    fn new_remote(&self) -> RemoteAudio {
        RemoteAudio::new(JitterConfig {
            frame_samples: self.frame.samples() as u32,
            ..JitterConfig::default()
        })
        .expect("an Opus decoder always builds")
    }

    /// The mesh connection to `user` is gone: forget its audio, unless it plays over the SFU.
    pub fn remove_remote(&self, user: &UserId) {
        self.remove_remote_via(user, AudioPath::Mesh);
    }

    /// The connection over `path` no longer carries `user`: forget its audio unless it is
    /// played from the other path.
    pub fn remove_remote_via(&self, user: &UserId, path: AudioPath) {
        let released = self
            .router
            .lock()
            .map(|mut r| r.release(user, path))
            .unwrap_or(true);
        if !released {
            return;
        }
        if let Ok(mut r) = self.remotes.lock() {
            r.remove(user);
        }
        if let Ok(mut u) = self.uplink_loss.lock() {
            u.remove(user);
        }
    }

    /// How much of our stream `user` reports losing (0..=1), e.g. from RTCP receiver reports.
    /// The encoder plans its FEC for the worst of these and of the loss we see from each peer.
    pub fn set_uplink_loss(&self, user: UserId, fraction: f32) {
        if let Ok(mut u) = self.uplink_loss.lock() {
            u.insert(
                user,
                if fraction.is_finite() {
                    fraction.clamp(0.0, 1.0)
                } else {
                    0.0
                },
            );
        }
    }

    /// An RTP packet from `user` arrived now over a mesh connection.
    pub fn push(&self, user: &UserId, rtp_timestamp: u32, payload: Vec<u8>) {
        self.push_via(user, AudioPath::Mesh, rtp_timestamp, payload);
    }

    /// An RTP packet from `user` arrived now over `path`; played or dropped as the
    /// [`Router`] decides. Returns whether it was played.
    pub fn push_via(
        &self,
        user: &UserId,
        path: AudioPath,
        rtp_timestamp: u32,
        payload: Vec<u8>,
    ) -> bool {
        let now = Instant::now();
        let route = match self.router.lock() {
            Ok(mut r) => r.on_packet(*user, path),
            Err(_) => Route::Play,
        };
        if route == Route::Drop {
            return false;
        }
        let Ok(mut r) = self.remotes.lock() else {
            return false;
        };
        match path {
            // A mesh peer registers its remote when the connection is made.
            AudioPath::Mesh if route == Route::Play => {}
            _ if route == Route::Switch => {
                r.insert(*user, self.new_remote());
            }
            _ => {
                if !r.contains_key(user) {
                    r.insert(*user, self.new_remote());
                }
            }
        }
        match r.get_mut(user) {
            Some(rx) => {
                rx.push(now, rtp_timestamp, payload);
                true
            }
            None => false,
        }
    }

    /// Which connections a participant switching over should be played from from now on.
    pub fn prefer(&self, path: AudioPath) {
        if let Ok(mut r) = self.router.lock() {
            r.preferred = path;
        }
    }

    /// The path `user` is played from now, if heard at all.
    pub fn path_of(&self, user: &UserId) -> Option<AudioPath> {
        self.router.lock().ok().and_then(|r| r.path(user))
    }

    /// Receive-side statistics for `user` (RTT is filled in by the peer connection).
    pub fn stats(&self, user: &UserId) -> Option<PeerStats> {
        let r = self.remotes.lock().ok()?;
        let rx = r.get(user)?;
        let s = rx.stats();
        let frames = s.played + s.concealed;
        Some(PeerStats {
            rtt: None,
            loss: if frames == 0 {
                0.0
            } else {
                s.concealed as f32 / frames as f32
            },
            jitter: rx.jitter_buffer().jitter(),
            jitter_buffer: rx.jitter_buffer().target_delay(),
            buffered: rx.jitter_buffer().depth(),
            packets_received: s.received,
        })
    }

    pub fn set_deafened(&self, d: bool) {
        if let Ok(mut m) = self.mixer.lock() {
            m.set_deafened(d);
        }
    }

    pub fn deafened(&self) -> bool {
        self.mixer.lock().map(|m| m.deafened()).unwrap_or(false)
    }

    pub fn set_volume(&self, user: UserId, volume: f32) {
        if let Ok(mut m) = self.mixer.lock() {
            m.set_volume(user, volume);
        }
    }

    /// Stops both threads and finishes the sink (e.g. writes the WAV header).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let threads = self
            .threads
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for AudioEngine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where the capture thread learns how lossy the network is.
struct LossSources {
    remotes: Remotes,
    uplink: UplinkLoss,
}

impl LossSources {
    /// The worst loss over the last window among all peers: what they report of our stream,
    /// else what we see of theirs (paths are usually lossy both ways). `seen` keeps each peer's
    /// (played, concealed) counters from the previous call.
    fn worst(&self, seen: &mut BTreeMap<UserId, (u64, u64)>) -> f32 {
        let mut worst = 0.0f32;
        if let Ok(r) = self.remotes.lock() {
            seen.retain(|u, _| r.contains_key(u));
            for (user, rx) in r.iter() {
                let s = rx.stats();
                let (p0, c0) = seen
                    .insert(*user, (s.played, s.concealed))
                    .unwrap_or((0, 0));
                let (dp, dc) = (s.played.saturating_sub(p0), s.concealed.saturating_sub(c0));
                if dp + dc > 0 {
                    worst = worst.max(dc as f32 / (dp + dc) as f32);
                }
            }
        }
        if let Ok(u) = self.uplink.lock() {
            worst = u.values().fold(worst, |w, l| w.max(*l));
        }
        worst
    }
}

#[allow(clippy::too_many_arguments)]
fn capture_loop(
    mut source: Box<dyn AudioSource>,
    mut encoder: OpusEncoder,
    controls: CaptureControls,
    frame: FrameDuration,
    packets: broadcast::Sender<EncodedFrame>,
    stop: Arc<AtomicBool>,
    withheld: Arc<AtomicBool>,
    events: mpsc::UnboundedSender<VoiceEvent>,
    loss: LossSources,
) {
    let mut pipeline = CapturePipeline::new(controls, frame.samples());
    let mut buf = vec![0.0f32; frame.samples()];
    let mut speaking = false;
    let mut failed = false;
    let mut estimator = LossEstimator::new();
    let mut seen = BTreeMap::new();
    let mut since_estimate = 0usize;
    while !stop.load(Ordering::SeqCst) {
        if failed {
            // Keep the frame clock running so peers hear silence rather than a stall.
            std::thread::sleep(frame.duration());
            buf.fill(0.0);
        } else if let Err(e) = source.read(&mut buf) {
            let _ = events.send(VoiceEvent::Error(format!(
                "microphone '{}' stopped: {e}; sending silence",
                source.name()
            )));
            failed = true;
            continue;
        }
        let d = pipeline.process(&mut buf);
        // DTX for a gated microphone (a closed gate sends digital silence: 1-byte packets);
        // none for an open one (files, bots, music: continuous audio, and peers whose decoders
        // do not reset after DTX as ours do).
        let dtx = pipeline.controls().mode() != VoiceMode::Open;
        if let Err(e) = encoder.set_dtx(dtx) {
            tracing::warn!("Opus DTX: {e}");
        }
        if d.speaking != speaking {
            speaking = d.speaking;
            let _ = events.send(VoiceEvent::Speaking {
                user: None,
                speaking,
            });
        }
        since_estimate += buf.len();
        if since_estimate >= LOSS_WINDOW_SAMPLES {
            since_estimate = 0;
            let percent = estimator.update(loss.worst(&mut seen));
            if let Err(e) = encoder.set_expected_loss(percent) {
                tracing::warn!("Opus expected loss: {e}");
            }
        }
        if withheld.load(Ordering::Relaxed) {
            // Not allowed to speak: the frame clock runs on (the source is read), nothing is
            // encoded or sent. The encoder picks up again from silence.
            continue;
        }
        match encoder.encode(&buf) {
            Ok(p) => {
                let _ = packets.send(EncodedFrame {
                    data: Bytes::from(p),
                    frame,
                });
            }
            Err(e) => tracing::warn!("Opus encode failed: {e}"),
        }
    }
}

/// How long before a sink's deadline the next frame is mixed: room for decoding and mixing
/// a few peers plus scheduler wake-up jitter.
const JUST_IN_TIME: std::time::Duration = std::time::Duration::from_millis(3);

fn playout_loop(
    mut sink: Box<dyn AudioSink>,
    frame: FrameDuration,
    remotes: Remotes,
    mixer: Arc<Mutex<Mixer<UserId>>>,
    stop: Arc<AtomicBool>,
    events: mpsc::UnboundedSender<VoiceEvent>,
) {
    let block = if frame.samples() < PLAYOUT_BLOCK.samples() {
        frame
    } else {
        PLAYOUT_BLOCK
    };
    let n = block.samples();
    let mut out = vec![0.0f32; n];
    let mut bufs: BTreeMap<UserId, Vec<f32>> = BTreeMap::new();
    let mut speaking: BTreeMap<UserId, bool> = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) {
        // Produce each frame just before the sink takes it, not a whole frame early.
        if let Some(due) = sink.due() {
            let ready = due.checked_sub(JUST_IN_TIME).unwrap_or(due);
            let now = Instant::now();
            if ready > now {
                std::thread::sleep(ready - now);
            }
        }
        let now = Instant::now();
        if let Ok(mut r) = remotes.lock() {
            if !bufs.keys().eq(r.keys()) {
                bufs.retain(|u, _| r.contains_key(u));
                speaking.retain(|u, _| r.contains_key(u));
            }
            for (user, rx) in r.iter_mut() {
                let b = bufs.entry(*user).or_insert_with(|| vec![0.0; n]);
                rx.pull(now, b);
                let s = rx.speaking();
                if speaking.insert(*user, s).unwrap_or(false) != s {
                    let _ = events.send(VoiceEvent::Speaking {
                        user: Some(*user),
                        speaking: s,
                    });
                }
            }
        }
        if let Ok(m) = mixer.lock() {
            m.mix(bufs.iter().map(|(u, b)| (u, &b[..])), &mut out);
        }
        if let Err(e) = sink.write(&out) {
            let _ = events.send(VoiceEvent::Error(format!(
                "speaker '{}' failed: {e}",
                sink.name()
            )));
            // Without a sink keep draining the jitter buffers at the right pace.
            std::thread::sleep(block.duration());
        }
    }
    if let Err(e) = sink.finish() {
        let _ = events.send(VoiceEvent::Error(format!("closing '{}': {e}", sink.name())));
    }
}

#[cfg(test)]
mod router_tests {
    use super::*;

    #[test]
    fn the_preferred_path_takes_over_at_its_first_packet_and_the_other_is_dropped() {
        let (a, b) = (UserId([1; 32]), UserId([2; 32]));
        let mut r = Router::default();
        assert_eq!(r.on_packet(a, AudioPath::Mesh), Route::Play);
        assert_eq!(r.on_packet(b, AudioPath::Mesh), Route::Play);
        // The channel moves to the SFU: mesh audio plays until the SFU delivers.
        r.preferred = AudioPath::Sfu;
        assert_eq!(r.on_packet(a, AudioPath::Mesh), Route::Play);
        assert_eq!(r.on_packet(a, AudioPath::Sfu), Route::Switch);
        assert_eq!(r.on_packet(a, AudioPath::Mesh), Route::Drop);
        assert_eq!(r.on_packet(a, AudioPath::Sfu), Route::Play);
        assert_eq!(r.path(&b), Some(AudioPath::Mesh));
        // Closing the mesh connection to a does not drop a's SFU audio; to b it does.
        assert!(!r.release(&a, AudioPath::Mesh));
        assert!(r.release(&b, AudioPath::Mesh));
        assert_eq!(r.path(&b), None);
        // Someone first heard over the non-preferred path is played from it.
        r.preferred = AudioPath::Mesh;
        assert_eq!(r.on_packet(b, AudioPath::Sfu), Route::Play);
        assert_eq!(r.on_packet(b, AudioPath::Mesh), Route::Switch);
        assert_eq!(r.on_packet(b, AudioPath::Sfu), Route::Drop);
    }
}
