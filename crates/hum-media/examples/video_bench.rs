//! Video encode/decode cost on this machine.
//!
//! cargo run --release -p hum-media --example video_bench            # 10 s per real-time case
//! cargo run --release -p hum-media --example video_bench -- 5      # 5 s per case
//!
//! - `simulcast 720p30`: the three camera layers (320x180 / 640x360 / 1280x720 at
//!   150 / 500 / 1500 kbit/s), fed 1280x720 test-pattern frames at 30 fps in real time;
//!   process CPU (user + system from /proc/self/stat) over wall time = % of one core, and the
//!   frames per second it sustains unpaced.
//! - `screen 1080p30`: the 1080p30 screen profile (3 Mbit/s) fed 1920x1080 frames, same measures.
//! - `decode 720p`: decoding the 1280x720 layer as fast as possible.
//!
//! The frames are generated before the clock starts (a camera or screen grab would add its own
//! capture and colour conversion; `convert` below measures the RGBA -> I420 step of a screen).
//! The pattern moves everywhere, so it is harder to encode than most desktops.

use std::time::{Duration, Instant};

use hum_media::video::convert::{PixelLayout, packed_to_i420};
use hum_media::video::pattern::pattern_frame;
use hum_media::video::scale::scale;
use hum_media::video::{
    EncoderConfig, ScreenProfile, SimulcastEncoder, VideoFrame, Vp8Decoder, Vp8Encoder, WallAnchor,
};

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    // USER_HZ is 100 on Linux x86.
    f.iter().sum::<u64>() as f64 / 100.0
}

fn frames(w: u32, h: u32, n: u64) -> Vec<VideoFrame> {
    let t0 = Instant::now();
    let anchor = WallAnchor::now();
    (0..n)
        .map(|k| pattern_frame(w, h, k, t0, &anchor).expect("frame"))
        .collect()
}

/// Runs `encode` on the frames in real time at `fps` for `secs`: (% of one core, encoded bytes/s).
fn realtime(
    fps: u32,
    secs: u64,
    frames: &[VideoFrame],
    mut encode: impl FnMut(&VideoFrame) -> usize,
) -> (f64, f64) {
    let n = fps as u64 * secs;
    let (c0, t0) = (cpu_seconds(), Instant::now());
    let mut bytes = 0;
    for k in 0..n {
        let due = t0 + Duration::from_nanos(k * 1_000_000_000 / fps as u64);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let mut f = frames[(k as usize) % frames.len()].clone();
        f.captured = due;
        bytes += encode(&f);
    }
    let wall = t0.elapsed().as_secs_f64();
    ((cpu_seconds() - c0) / wall * 100.0, bytes as f64 / wall)
}

/// Encodes as fast as possible for `n` frames: (frames per wall second, process CPU ms per
/// frame). CPU time per frame is the number to trust on a shared machine: wall-clock fps
/// falls when other processes take the cores, CPU time per frame hardly moves.
fn unpaced(
    n: usize,
    frames: &[VideoFrame],
    mut encode: impl FnMut(&VideoFrame) -> usize,
) -> (f64, f64) {
    let c0 = cpu_seconds();
    let t0 = Instant::now();
    let start = Instant::now();
    for k in 0..n {
        let mut f = frames[k % frames.len()].clone();
        f.captured = start + Duration::from_millis(33 * k as u64);
        encode(&f);
    }
    (
        n as f64 / t0.elapsed().as_secs_f64(),
        (cpu_seconds() - c0) * 1000.0 / n as f64,
    )
}

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    println!(
        "video_bench: {secs} s per real-time case, release build, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Simulcast 720p30.
    let f720 = frames(1280, 720, 60);
    let mut sim = SimulcastEncoder::camera(30).expect("simulcast");
    let (cpu, bps) = realtime(30, secs, &f720, |f| {
        sim.encode(f)
            .expect("encode")
            .iter()
            .map(|l| l.frame.data.len())
            .sum()
    });
    let mut sim = SimulcastEncoder::camera(30).expect("simulcast");
    let (fps, ms) = unpaced(150, &f720, |f| sim.encode(f).expect("encode").len());
    println!(
        "simulcast 720p30 (3 layers): real time {cpu:.1}% of one core, {:.0} kbit/s sent; \
         unpaced {fps:.0} fps, {ms:.1} ms CPU/frame = {:.0}% of one core at 30 fps",
        bps * 8.0 / 1000.0,
        ms * 3.0
    );

    // The same with two encoder threads per layer (the default is one): libvpx's row threads
    // busy-wait for each other, which burns CPU time when the cores are shared.
    let mut sim1 = hum_media::video::SimulcastEncoder::with(
        &hum_media::video::simulcast::CAMERA_LAYERS,
        |l| {
            let mut c = EncoderConfig::camera(l.width, l.height, 30, l.bitrate);
            c.threads = 2;
            c
        },
    )
    .expect("simulcast");
    let (cpu1, _) = realtime(30, secs, &f720, |f| {
        sim1.encode(f)
            .expect("encode")
            .iter()
            .map(|l| l.frame.data.len())
            .sum()
    });
    let (fps1, ms1) = unpaced(150, &f720, |f| sim1.encode(f).expect("encode").len());
    println!(
        "  with 2 threads per layer: real time {cpu1:.1}% of one core; unpaced {fps1:.0} fps, \
         {ms1:.1} ms CPU/frame = {:.0}% of one core at 30 fps",
        ms1 * 3.0
    );

    // Layer downscaling alone (part of the simulcast cost).
    let t0 = Instant::now();
    for f in f720.iter().take(60) {
        let h = scale(f, 640, 360).expect("scale");
        let _ = scale(&h, 320, 180).expect("scale");
    }
    println!(
        "  of which downscaling 720p -> 360p -> 180p: {:.2} ms/frame",
        t0.elapsed().as_secs_f64() * 1000.0 / 60.0
    );
    drop(f720);

    // Screen 1080p30.
    let f1080 = frames(1920, 1080, 30);
    let cfg = ScreenProfile::P1080Fps30.config(1920, 1080);
    let mut enc = Vp8Encoder::new(cfg).expect("encoder");
    let (cpu, bps) = realtime(30, secs, &f1080, |f| {
        enc.encode(f).expect("encode").map_or(0, |e| e.data.len())
    });
    let mut enc = Vp8Encoder::new(cfg).expect("encoder");
    let (fps, ms) = unpaced(90, &f1080, |f| {
        enc.encode(f).expect("encode").map_or(0, |e| e.data.len())
    });
    println!(
        "screen 1080p30 ({}): real time {cpu:.1}% of one core, {:.0} kbit/s sent; \
         unpaced {fps:.0} fps, {ms:.1} ms CPU/frame = {:.0}% of one core at 30 fps",
        cfg.bitrate,
        bps * 8.0 / 1000.0,
        ms * 3.0
    );
    let mut cfg1 = cfg;
    cfg1.threads = 2;
    let mut enc = Vp8Encoder::new(cfg1).expect("encoder");
    let (cpu1, _) = realtime(30, secs, &f1080, |f| {
        enc.encode(f).expect("encode").map_or(0, |e| e.data.len())
    });
    let (fps1, ms1) = unpaced(90, &f1080, |f| {
        enc.encode(f).expect("encode").map_or(0, |e| e.data.len())
    });
    println!(
        "  with 2 threads: real time {cpu1:.1}% of one core; unpaced {fps1:.0} fps, \
         {ms1:.1} ms CPU/frame = {:.0}% of one core at 30 fps",
        ms1 * 3.0
    );
    let cfg60 = ScreenProfile::P1080Fps60.config(1920, 1080);
    let mut enc = Vp8Encoder::new(cfg60).expect("encoder");
    let (cpu, _) = realtime(60, secs, &f1080, |f| {
        enc.encode(f).expect("encode").map_or(0, |e| e.data.len())
    });
    println!("screen 1080p60 ({}): {cpu:.1}% of one core", cfg60.bitrate);

    // RGBA -> I420 of a 1080p screen grab.
    let rgba = vec![90u8; 1920 * 1080 * 4];
    let t0 = Instant::now();
    for _ in 0..20 {
        let _ = packed_to_i420(
            &rgba,
            1920,
            1080,
            1920 * 4,
            PixelLayout::Rgba,
            Instant::now(),
        )
        .expect("convert");
    }
    println!(
        "  RGBA -> I420 at 1080p (screen capture): {:.2} ms/frame",
        t0.elapsed().as_secs_f64() * 1000.0 / 20.0
    );
    drop(f1080);

    // Decode 720p.
    let f720 = frames(1280, 720, 60);
    let mut enc = Vp8Encoder::new(EncoderConfig::camera(
        1280,
        720,
        30,
        hum_proto::units::Bitrate::from_kbps(1_500),
    ))
    .expect("encoder");
    let start = Instant::now();
    let encoded: Vec<_> = (0..300)
        .filter_map(|k| {
            let mut f = f720[k % f720.len()].clone();
            f.captured = start + Duration::from_millis(33 * k as u64);
            enc.encode(&f).expect("encode")
        })
        .collect();
    let mut dec = Vp8Decoder::new().expect("decoder");
    let (c0, t0) = (cpu_seconds(), Instant::now());
    for e in &encoded {
        dec.decode(&e.data, e.captured).expect("decode");
    }
    let n = encoded.len() as f64;
    println!(
        "decode 720p at 1.5 Mbit/s: {:.0} fps, {:.2} ms CPU/frame ({} frames)",
        n / t0.elapsed().as_secs_f64(),
        (cpu_seconds() - c0) * 1000.0 / n,
        encoded.len()
    );
}
