//! CPU of local video previews without the app: N real-time test-pattern streams through
//! hum-engine's `VideoPreview` (pattern drawing + VP8 encode), frames discarded. The app's
//! hum-app process does this plus the IPC to the webview, so the difference between the two is
//! what the IPC costs hum-app (docs/app.md, "Video: numbers").
//!
//!   cargo run --release -p hum-engine --example preview_bench -- [STREAMS] [WIDTH] [HEIGHT] [SECONDS]
//!
//! Defaults: 1 stream of 1280x720 for 10 s. Prints frames, kbit/s and CPU % of one core
//! (process user + system time from /proc/self/stat over the run).

use std::time::{Duration, Instant};

use hum_engine::video_preview::{PreviewConfig, PreviewSource, VideoPreview};
use hum_engine::voice::hum_media::video::VideoFormat;
use hum_proto::units::Bitrate;

fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let n = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    n(11) + n(12)
}

fn main() {
    let arg = |i: usize, d: u32| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(d)
    };
    let (streams, width, height, secs) = (arg(1, 1), arg(2, 1280), arg(3, 720), arg(4, 10));
    // The rate the app's bench streams use (`video_bench_start`): ~500 kbit/s at 360p30.
    let bitrate = Bitrate::from_bps(u64::from(width) * u64::from(height) * 30 / 14);
    let (c0, t0) = (cpu_ticks(), Instant::now());
    let previews: Vec<VideoPreview> = (0..streams)
        .map(|_| {
            VideoPreview::start(
                PreviewConfig {
                    source: PreviewSource::Pattern,
                    format: VideoFormat::new(width, height, 30),
                    bitrate,
                },
                |_| true,
            )
            .expect("pattern preview")
        })
        .collect();
    std::thread::sleep(Duration::from_secs(u64::from(secs)));
    let stats: Vec<(u64, u64, u64)> = previews.iter().map(VideoPreview::stats).collect();
    let elapsed = t0.elapsed().as_secs_f64();
    let ticks = cpu_ticks() - c0;
    drop(previews);
    let hz = 100.0; // USER_HZ, 100 on every Linux this runs on

    let (frames, bytes): (u64, u64) = stats.iter().fold((0, 0), |a, s| (a.0 + s.0, a.1 + s.1));
    println!(
        "{streams} x {width}x{height}@30 at {} kbit/s each: {frames} frames in {elapsed:.1} s \
         ({:.1} fps per stream), {:.0} kbit/s per stream, CPU {:.1}% of one core",
        bitrate.bps() / 1000,
        frames as f64 / elapsed / f64::from(streams.max(1)),
        bytes as f64 * 8.0 / elapsed / 1000.0 / f64::from(streams.max(1)),
        ticks as f64 / hz / elapsed * 100.0
    );
}
