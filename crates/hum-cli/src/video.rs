//! Video for `hum call`: what to send (`--video pattern|FILE.y4m|/dev/videoN`) and where to
//! record what is received (`--record-video DIR`: a Y4M file per remote stream plus one JSON
//! line per decoded frame with its layer, size, pattern code and times).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use hum_engine::video_preview::{PreviewConfig, PreviewSource, open_source};
use hum_engine::voice::hum_media::video::pattern::read_code;
use hum_engine::voice::hum_media::video::{
    VideoError, VideoFormat, VideoFrame, VideoSink, WallAnchor, Y4mSink,
};
use hum_engine::voice::{RemoteVideoTrack, VideoIo, VideoSinkFactory};
use hum_proto::Bitrate;
use serde_json::json;

#[derive(Args, Debug, Clone)]
pub struct VideoArgs {
    /// Send video: `pattern` (the moving test pattern with its frame code), a `.y4m` file
    /// (looped), `camera` (the first camera), `/dev/videoN` or `camera:NAME`.
    #[arg(long)]
    pub video: Option<String>,
    /// Size of the video sent (a camera gives the closest it has; a Y4M file its own).
    #[arg(long, default_value = "1280x720", value_parser = parse_size)]
    pub video_size: (u32, u32),
    /// Frame rate of the video sent.
    #[arg(long, default_value_t = 30)]
    pub video_fps: u32,
    /// Bitrate of the video sent, in kbit/s.
    #[arg(long, default_value_t = 1500)]
    pub video_kbps: u64,
    /// Record every received video stream into this folder: `<user>-<track>.y4m` and
    /// `<user>-<track>.jsonl` (one line per decoded frame).
    #[arg(long)]
    pub record_video: Option<PathBuf>,
    /// Accept (and decode) video without sending or recording any.
    #[arg(long)]
    pub receive_video: bool,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once('x')
        .ok_or_else(|| format!("`{s}`: expected WIDTHxHEIGHT, e.g. 1280x720"))?;
    let w = w.trim().parse().map_err(|_| format!("`{s}`: bad width"))?;
    let h = h.trim().parse().map_err(|_| format!("`{s}`: bad height"))?;
    Ok((w, h))
}

/// `pattern`, a path, `camera`, `camera:NAME` or `/dev/videoN`.
fn parse_source(s: &str) -> Result<PreviewSource> {
    if s.starts_with("/dev/video") {
        return Ok(PreviewSource::Camera(Some(s.to_owned())));
    }
    if s.ends_with(".y4m") || s.starts_with("file:") || Path::new(s).is_file() {
        let p = s.strip_prefix("file:").unwrap_or(s);
        return Ok(PreviewSource::Y4m(PathBuf::from(p)));
    }
    Ok(PreviewSource::parse(s)?)
}

impl VideoArgs {
    /// Opens the source now (a missing camera or file fails before anything is dialled) and
    /// the recorder's folder.
    pub fn io(&self) -> Result<VideoIo> {
        let source = match &self.video {
            Some(s) => {
                let config = PreviewConfig {
                    source: parse_source(s)?,
                    format: VideoFormat::new(self.video_size.0, self.video_size.1, self.video_fps),
                    bitrate: Bitrate::from_kbps(self.video_kbps),
                };
                // The error's own sentence once (its source chain repeats it).
                Some(
                    open_source(&config)
                        .map_err(|e| anyhow::anyhow!("cannot send video from `{s}`: {e}"))?,
                )
            }
            None => None,
        };
        let sinks = match &self.record_video {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                Some(Arc::new(Recorder {
                    dir: dir.clone(),
                    anchor: WallAnchor::now(),
                }) as Arc<dyn VideoSinkFactory>)
            }
            None => None,
        };
        Ok(VideoIo {
            receive: source.is_some() || sinks.is_some() || self.receive_video,
            source,
            bitrate: Bitrate::from_kbps(self.video_kbps),
            sinks,
        })
    }
}

/// Opens a [`FrameLog`] per remote stream.
struct Recorder {
    dir: PathBuf,
    anchor: WallAnchor,
}

impl VideoSinkFactory for Recorder {
    fn open(&self, track: &RemoteVideoTrack) -> Result<Box<dyn VideoSink>, String> {
        let user = track.user.to_string();
        let short = &user[..user.len().min(16)];
        let clean: String = track
            .track
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let stem = match &track.layer {
            Some(l) => format!("{short}-{clean}-{l}"),
            None => format!("{short}-{clean}"),
        };
        let y4m = self.dir.join(format!("{stem}.y4m"));
        let log = self.dir.join(format!("{stem}.jsonl"));
        let file = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        Ok(Box::new(FrameLog {
            y4m: Y4mSink::create(&y4m, 30).map_err(|e| e.to_string())?,
            log: BufWriter::new(file),
            layer: track.layer.clone(),
            anchor: self.anchor,
            frames: 0,
        }))
    }
}

/// A Y4M file plus one JSON line per frame.
struct FrameLog {
    y4m: Y4mSink,
    log: BufWriter<File>,
    layer: Option<String>,
    anchor: WallAnchor,
    frames: u64,
}

impl VideoSink for FrameLog {
    fn write(&mut self, frame: &VideoFrame) -> Result<(), VideoError> {
        // `captured` on a decoded frame is when its last packet arrived; now is after decode.
        let decoded = self.anchor.unix_ms(Instant::now());
        let arrival = self.anchor.unix_ms(frame.captured);
        let code = read_code(frame);
        let line = json!({
            "frame": self.frames,
            "layer": self.layer,
            "width": frame.width(),
            "height": frame.height(),
            "code": code.map(|c| c.frame),
            "capture_ms": code.map(|c| c.capture_ms),
            "arrival_unix_ms": arrival,
            "decoded_unix_ms": decoded,
            "latency_ms": code.map(|c| c.latency_ms(decoded)),
        });
        self.frames += 1;
        writeln!(self.log, "{line}").map_err(VideoError::Io)?;
        self.y4m.write(frame)
    }

    fn finish(&mut self) -> Result<(), VideoError> {
        self.log.flush().map_err(VideoError::Io)?;
        self.y4m.finish()
    }

    fn name(&self) -> String {
        "video recorder".into()
    }
}

/// Refuses `--record-video` pointing at a file.
pub fn check(args: &VideoArgs) -> Result<()> {
    if let Some(d) = &args.record_video
        && d.is_file()
    {
        bail!("--record-video wants a folder, {} is a file", d.display());
    }
    Ok(())
}
