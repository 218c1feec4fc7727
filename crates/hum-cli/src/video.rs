//! Video for `hum call`: what to send (`--video pattern|FILE.y4m|/dev/videoN`) and where to
//! record what is received (`--record-video DIR`: a Y4M file per remote stream plus one JSON
//! line per decoded frame with its layer, size, pattern code and times).

use std::fs::File;
use std::io::{LineWriter, Write};
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
use hum_proto::signal::VideoQuality;
use hum_proto::{Bitrate, UserId};
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
    /// In a voice channel (`hum voice join`): the layer wanted of every other member's camera:
    /// high, medium, low, off or auto (in a mesh the sender's default, its full picture; on
    /// the SFU the SFU's: the speaker high, others low).
    #[arg(long, value_parser = parse_quality)]
    pub video_quality: Option<VideoQuality>,
    /// In a call or a voice channel: the camera is off while this file exists and on again
    /// once it is gone (a switch another program flips: tests, demos); the others' tiles
    /// follow.
    #[arg(long)]
    pub video_off_file: Option<PathBuf>,
    /// Change the wanted layer for everyone at a time since joining, e.g. `4s=high`.
    #[arg(long, value_parser = parse_quality_at)]
    pub video_quality_at: Option<(std::time::Duration, VideoQuality)>,
    /// Share a screen (a second video track beside the camera): `screen` (the primary
    /// monitor), `screen:ID`, `window:ID` (X11), `pattern[:WxH]` (the test pattern, 1280x720 by
    /// default) or a `.y4m` file. Mesh calls and channels only (not over the SFU yet).
    #[arg(long)]
    pub screen: Option<String>,
    /// The screen share's encoding: 720p30, 1080p30, 1080p60 or text (native size, 5 fps).
    #[arg(long, default_value = "720p30", value_parser = hum_engine::voice::parse_profile)]
    pub screen_profile: hum_engine::voice::hum_media::video::ScreenProfile,
    /// Change the wanted layer for everyone to what this file says (`high`, `low`, ...) when
    /// it appears or changes (a switch another program flips: tests, demos).
    #[arg(long)]
    pub video_quality_file: Option<PathBuf>,
}

fn parse_quality(s: &str) -> Result<VideoQuality, String> {
    Ok(match s {
        "high" => VideoQuality::High,
        "medium" => VideoQuality::Medium,
        "low" => VideoQuality::Low,
        "off" => VideoQuality::Off,
        "auto" => VideoQuality::Auto,
        _ => return Err(format!("`{s}`: use high, medium, low, off or auto")),
    })
}

fn parse_quality_at(s: &str) -> Result<(std::time::Duration, VideoQuality), String> {
    let (t, q) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected TIME=QUALITY, e.g. 4s=high"))?;
    let t = humantime::parse_duration(t.trim()).map_err(|e| format!("`{t}`: {e}"))?;
    Ok((t, parse_quality(q.trim())?))
}

/// When to ask the SFU for which layer (`--video-quality`, `--video-quality-at`): each member
/// is asked for when first heard, everyone again when the timed change is due.
#[derive(Debug)]
pub struct QualityPlan {
    now: Option<VideoQuality>,
    later: Option<(std::time::Duration, VideoQuality)>,
    file: Option<PathBuf>,
    known: std::collections::BTreeSet<UserId>,
}

impl QualityPlan {
    pub fn new(args: &VideoArgs) -> Self {
        Self {
            now: args.video_quality,
            later: args.video_quality_at,
            file: args.video_quality_file.clone(),
            known: Default::default(),
        }
    }

    /// A member was heard (connected): what to ask for it, if anything.
    pub fn on_peer(&mut self, user: UserId) -> Option<VideoQuality> {
        self.known.insert(user).then_some(self.now).flatten()
    }

    /// At `elapsed` since joining: the timed change, once, for every member heard so far.
    /// Or what `--video-quality-file` says, when it says something new.
    pub fn due(&mut self, elapsed: std::time::Duration) -> Option<(VideoQuality, Vec<UserId>)> {
        if let Some(q) = self
            .file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|t| parse_quality(t.trim()).ok())
            .filter(|q| self.now != Some(*q))
        {
            self.now = Some(q);
            return Some((q, self.known.iter().copied().collect()));
        }
        let (at, q) = self.later?;
        if elapsed < at {
            return None;
        }
        self.later = None;
        self.now = Some(q);
        Some((q, self.known.iter().copied().collect()))
    }
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
        let screen = match &self.screen {
            Some(s) => Some(
                hum_engine::voice::ShareTarget::parse(s)
                    .map_err(anyhow::Error::msg)?
                    .open(self.screen_profile)
                    .map_err(|e| anyhow::anyhow!("cannot share `{s}`: {e}"))?,
            ),
            None => None,
        };
        Ok(VideoIo {
            receive: source.is_some() || sinks.is_some() || self.receive_video,
            source,
            bitrate: Bitrate::from_kbps(self.video_kbps),
            sinks,
            screen,
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
            stem: self.dir.join(stem),
            size: None,
            log: LineWriter::new(file),
            layer: track.layer.clone(),
            anchor: self.anchor,
            frames: 0,
        }))
    }
}

/// A Y4M file plus one JSON line per frame. A stream that changes size (the SFU switched its
/// simulcast layer) goes on in `<stem>.<W>x<H>.y4m` (a Y4M file has one size).
struct FrameLog {
    y4m: Y4mSink,
    stem: PathBuf,
    size: Option<(u32, u32)>,
    /// One line per frame, written out line by line: a reader polling the recording sees every
    /// decoded frame, and a process killed mid-stream loses none (a buffered log lost the last
    /// ~32 lines, all of a stream that decoded fewer: session 22's "no thumbnail decoded").
    log: LineWriter<File>,
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
        let size = (frame.width(), frame.height());
        if self.size.is_some_and(|s| s != size) {
            self.y4m.finish()?;
            let mut name = self.stem.clone().into_os_string();
            name.push(format!(".{}x{}.y4m", size.0, size.1));
            self.y4m = Y4mSink::create(Path::new(&name), 30)?;
        }
        self.size = Some(size);
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
