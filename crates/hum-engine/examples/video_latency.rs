//! Glass-to-glass video latency of a 1-on-1 call on loopback: A sends the moving test pattern
//! (real time, its capture time drawn into every frame) through the VP8 encoder, RTP and
//! webrtc-rs; B reassembles, decodes and reads the code back. Latency = decoded at B minus the
//! capture time in the picture (both sessions in this process, one clock).
//!
//! ```text
//! cargo run --release -p hum-engine --example video_latency -- [SECONDS] [WxH] [KBPS]
//! ```
//! Defaults: 20 s, 1280x720 at 30 fps, 1500 kbit/s.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hum_engine::voice::hum_media::pacer::Paced;
use hum_engine::voice::hum_media::processing::{CaptureControls, VoiceMode};
use hum_engine::voice::hum_media::synth::{NullSink, SilenceSource};
use hum_engine::voice::hum_media::video::{
    PatternAnalyser, PatternSource, VideoError, VideoFormat, VideoFrame, VideoSink, WallAnchor,
};
use hum_engine::voice::{
    MemorySignalHub, RemoteVideoTrack, VideoIo, VideoSinkFactory, VoiceConfig, VoiceSession,
};
use hum_proto::{Bitrate, UserId};

#[derive(Clone)]
struct Shared(Arc<Mutex<PatternAnalyser>>);

impl VideoSink for Shared {
    fn write(&mut self, frame: &VideoFrame) -> Result<(), VideoError> {
        if let Ok(mut a) = self.0.lock() {
            a.observe(frame, Instant::now());
        }
        Ok(())
    }
    fn name(&self) -> String {
        "latency".into()
    }
}

impl VideoSinkFactory for Shared {
    fn open(&self, _: &RemoteVideoTrack) -> Result<Box<dyn VideoSink>, String> {
        Ok(Box::new(self.clone()))
    }
}

fn session(
    hub: &MemorySignalHub,
    me: UserId,
    video: VideoIo,
) -> Result<Arc<VoiceSession>, Box<dyn std::error::Error>> {
    let controls = CaptureControls::new();
    controls.set_mode(VoiceMode::Open);
    controls.set_noise_suppression(false);
    let (signaller, mut inbox) = hub.register(me);
    let (s, _events) = VoiceSession::start_with_video(
        me,
        VoiceConfig {
            bind: vec!["127.0.0.1:0".into()],
            ..Default::default()
        },
        Box::new(Paced::new(SilenceSource::new())),
        Box::new(Paced::new(NullSink)),
        controls,
        video,
        signaller,
    )?;
    let s2 = s.clone();
    tokio::spawn(async move {
        while let Some((from, payload)) = inbox.recv().await {
            let _ = s2.handle_signal(from, payload).await;
        }
    });
    Ok(s)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let (w, h) = args
        .get(2)
        .and_then(|s| s.split_once('x'))
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .unwrap_or((1280, 720));
    let kbps: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1500);
    let hub = MemorySignalHub::new();
    let (a_id, b_id) = (UserId([1; 32]), UserId([2; 32]));
    let analyser = Shared(Arc::new(Mutex::new(
        PatternAnalyser::new(WallAnchor::now()),
    )));
    let a = session(
        &hub,
        a_id,
        VideoIo {
            source: Some(Box::new(PatternSource::realtime(VideoFormat::new(
                w, h, 30,
            ))?)),
            bitrate: Bitrate::from_kbps(kbps),
            receive: false,
            sinks: None,
            screen: None,
        },
    )?;
    let b = session(
        &hub,
        b_id,
        VideoIo {
            receive: true,
            sinks: Some(Arc::new(analyser.clone())),
            ..Default::default()
        },
    )?;
    b.add_peer(a_id).await?;
    a.add_peer(b_id).await?;
    // Warm-up: the first keyframe and connection setup are not steady state.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let warm = analyser.0.lock().map(|a| a.report()).ok();
    if let Ok(mut an) = analyser.0.lock() {
        *an = PatternAnalyser::new(WallAnchor::now());
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let r = analyser.0.lock().map(|a| a.report()).map_err(|_| "lock")?;
    let stats = b.video_stats(&a_id);
    println!(
        "video_latency {w}x{h}@30 {kbps} kbit/s, {secs} s after 2 s warm-up \
         (warm-up decoded {:?} frames)",
        warm.map(|w| w.decoded)
    );
    println!(
        "frames {} decoded-codes {} lost {} out-of-order {} unreadable {}",
        r.frames, r.decoded, r.lost, r.out_of_order, r.unreadable
    );
    println!(
        "capture -> decoded latency: p50 {:?} ms, p95 {:?} ms, max {:?} ms",
        r.latency_p50_ms, r.latency_p95_ms, r.latency_max_ms
    );
    println!("receiver stats: {stats:?}");
    a.leave().await;
    b.leave().await;
    Ok(())
}
