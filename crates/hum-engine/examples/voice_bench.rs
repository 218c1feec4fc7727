//! Voice benchmarks on loopback (real WebRTC, real Opus; signalling in memory).
//!
//! ```text
//! cargo run --release -p hum-engine --example voice_bench -- latency 20   # mouth-to-ear, 20 ms frames
//! cargo run --release -p hum-engine --example voice_bench -- latency 10   # 10 ms frames
//! cargo run --release -p hum-engine --example voice_bench -- cpu 2        # 1-on-1: CPU per client
//! cargo run --release -p hum-engine --example voice_bench -- cpu 8        # 8-person mesh
//! ```
//!
//! Latency: A's source emits a 1 ms burst every second; the time from the burst being "spoken"
//! (its place on A's paced source clock) to being "heard" (its place on B's paced sink clock)
//! is everything Hum adds: capture framing, Opus (incl. its 6.5 ms look-ahead), RTP/SRTP over
//! UDP, the jitter buffer and playout framing. A real sound card adds its own buffers on top.
//!
//! CPU: N clients in one process, each with noise suppression on, sending a tone to everyone;
//! process CPU time (user + system, from /proc/self/stat) over 20 s, divided by N.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hum_engine::voice::hum_media::analysis::first_above;
use hum_engine::voice::hum_media::pacer::Paced;
use hum_engine::voice::hum_media::processing::{CaptureControls, VoiceMode};
use hum_engine::voice::hum_media::synth::{BufferSource, MemorySink, ToneSource};
use hum_engine::voice::hum_media::{AudioSink, AudioSource, FrameDuration, MediaError};
use hum_engine::voice::{MemorySignalHub, VoiceConfig, VoiceEvent, VoiceSession};
use hum_proto::UserId;

/// Records the instant of the first call: the origin of a paced clock.
struct Clocked<T> {
    inner: T,
    first: Arc<Mutex<Option<Instant>>>,
}

impl<T: AudioSource> AudioSource for Clocked<T> {
    fn read(&mut self, frame: &mut [f32]) -> Result<(), MediaError> {
        if let Ok(mut f) = self.first.lock() {
            f.get_or_insert_with(Instant::now);
        }
        self.inner.read(frame)
    }
    fn name(&self) -> String {
        self.inner.name()
    }
}

impl<T: AudioSink> AudioSink for Clocked<T> {
    fn write(&mut self, frame: &[f32]) -> Result<(), MediaError> {
        if let Ok(mut f) = self.first.lock() {
            f.get_or_insert_with(Instant::now);
        }
        self.inner.write(frame)
    }
    fn finish(&mut self) -> Result<(), MediaError> {
        self.inner.finish()
    }
    fn due(&self) -> Option<Instant> {
        self.inner.due()
    }
    fn name(&self) -> String {
        self.inner.name()
    }
}

fn cfg(frame: FrameDuration) -> VoiceConfig {
    VoiceConfig {
        frame,
        bind: vec!["127.0.0.1:0".into()],
        ..Default::default()
    }
}

fn user(n: u8) -> UserId {
    UserId([n; 32])
}

async fn start(
    hub: &MemorySignalHub,
    me: UserId,
    frame: FrameDuration,
    source: Box<dyn AudioSource>,
    sink: Box<dyn AudioSink>,
    controls: CaptureControls,
) -> (
    Arc<VoiceSession>,
    tokio::sync::mpsc::UnboundedReceiver<VoiceEvent>,
) {
    let (signaller, mut inbox) = hub.register(me);
    let (s, ev) = VoiceSession::start(me, cfg(frame), source, sink, controls, signaller)
        .expect("session starts");
    let s2 = s.clone();
    tokio::spawn(async move {
        while let Some((from, p)) = inbox.recv().await {
            let _ = s2.handle_signal(from, p).await;
        }
    });
    (s, ev)
}

async fn wait_connected(ev: &mut tokio::sync::mpsc::UnboundedReceiver<VoiceEvent>, n: usize) {
    let mut seen = 0;
    while seen < n {
        match tokio::time::timeout(Duration::from_secs(20), ev.recv()).await {
            Ok(Some(VoiceEvent::PeerConnected(_))) => seen += 1,
            Ok(Some(_)) => {}
            _ => panic!("peers did not connect"),
        }
    }
}

fn open_mic(ns: bool) -> CaptureControls {
    let c = CaptureControls::new();
    c.set_mode(VoiceMode::Open);
    c.set_noise_suppression(ns);
    c
}

async fn latency(frame: FrameDuration, phase: Duration) -> Option<f64> {
    let hub = MemorySignalHub::new();
    let period = 48_000;
    let src_clock = Arc::new(Mutex::new(None));
    let sink_clock = Arc::new(Mutex::new(None));
    let rec = MemorySink::new();
    let (a, _ea) = start(
        &hub,
        user(1),
        frame,
        Box::new(Clocked {
            inner: Paced::new(BufferSource::impulse_train(period)),
            first: src_clock.clone(),
        }),
        Box::new(Paced::new(hum_engine::voice::hum_media::synth::NullSink)),
        open_mic(false),
    )
    .await;
    // B's playout clock starts `phase` after A's capture clock: in real calls the two sound
    // cards' frame boundaries are unrelated, so sweep it.
    tokio::time::sleep(phase).await;
    let (b, mut eb) = start(
        &hub,
        user(2),
        frame,
        Box::new(Paced::new(
            hum_engine::voice::hum_media::synth::SilenceSource::new(),
        )),
        Box::new(Clocked {
            inner: Paced::new(rec.clone()),
            first: sink_clock.clone(),
        }),
        open_mic(false),
    )
    .await;
    b.add_peer(user(1)).await.expect("add");
    a.add_peer(user(2)).await.expect("add");
    wait_connected(&mut eb, 1).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    while let Ok(ev) = eb.try_recv() {
        if let VoiceEvent::Stats { stats, .. } = ev
            && std::env::var("HUM_BENCH_VERBOSE").is_ok()
        {
            eprintln!("{stats:?}");
        }
    }
    a.leave().await;
    b.leave().await;

    let first = |c: &Arc<Mutex<Option<Instant>>>| c.lock().ok().and_then(|g| *g);
    let (Some(t_src), Some(t_sink)) = (first(&src_clock), first(&sink_clock)) else {
        panic!("clocks did not start");
    };
    let heard = rec.samples();
    // Sink sample m is heard at t_sink + m/48k; source sample k was spoken at t_src + k/48k.
    let offset_s = t_sink.duration_since(t_src).as_secs_f64();
    let mut lat_ms = Vec::new();
    for i in 1..20u64 {
        let spoken = (i * period as u64) as f64 / 48_000.0;
        // Search from where the burst could first appear (offset) for one period.
        let from_m = ((spoken - offset_s) * 48_000.0).max(0.0) as usize;
        if from_m >= heard.len() {
            break;
        }
        let to_m = (from_m + period).min(heard.len());
        if let Some(m) = first_above(&heard[from_m..to_m], 0.2) {
            let heard_at = offset_s + (from_m + m) as f64 / 48_000.0;
            lat_ms.push((heard_at - spoken) * 1000.0);
        }
    }
    lat_ms.sort_by(f64::total_cmp);
    if lat_ms.is_empty() {
        println!("latency {}ms frames: no bursts found", frame.millis());
        return None;
    }
    let med = lat_ms[lat_ms.len() / 2];
    println!(
        "mouth-to-ear, {} ms frames, playout phase {:>2} ms: median {:.1} ms (min {:.1}, max {:.1}, {} bursts)",
        frame.millis(),
        phase.as_millis(),
        med,
        lat_ms[0],
        lat_ms[lat_ms.len() - 1],
        lat_ms.len()
    );
    Some(med)
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

async fn cpu(n: u8) {
    let hub = MemorySignalHub::new();
    let mut sessions = Vec::new();
    let mut events = Vec::new();
    for i in 1..=n {
        let (s, e) = start(
            &hub,
            user(i),
            FrameDuration::Ms20,
            Box::new(Paced::new(ToneSource::new(200.0 + 100.0 * i as f32, 0.3))),
            Box::new(Paced::new(hum_engine::voice::hum_media::synth::NullSink)),
            open_mic(true),
        )
        .await;
        sessions.push(s);
        events.push(e);
    }
    for s in &sessions {
        for j in 1..=n {
            if user(j) != s.me() {
                s.add_peer(user(j)).await.expect("add");
            }
        }
    }
    for e in events.iter_mut() {
        wait_connected(e, n as usize - 1).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (c0, t0) = (cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (c1, t1) = (cpu_seconds(), Instant::now());
    let per_client = (c1 - c0) / t1.duration_since(t0).as_secs_f64() / n as f64 * 100.0;
    println!(
        "{n} clients ({} peer connections each): {:.2}% of one core per client",
        n - 1,
        per_client
    );
    for s in &sessions {
        s.leave().await;
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match (
        args.get(1).map(String::as_str),
        args.get(2).map(String::as_str),
    ) {
        (Some("latency"), f) => {
            let frame = FrameDuration::parse(f.unwrap_or("20")).expect("10 or 20");
            let mut meds = Vec::new();
            for k in 0..4u64 {
                let phase = Duration::from_millis(frame.millis() * k / 4);
                if let Some(m) = latency(frame, phase).await {
                    meds.push(m);
                }
            }
            if !meds.is_empty() {
                println!(
                    "mouth-to-ear, {} ms frames, mean over phases: {:.1} ms",
                    frame.millis(),
                    meds.iter().sum::<f64>() / meds.len() as f64
                );
            }
        }
        (Some("cpu"), n) => cpu(n.and_then(|n| n.parse().ok()).unwrap_or(2).clamp(2, 8)).await,
        _ => eprintln!("usage: voice_bench latency 20|10 | cpu N"),
    }
}
