//! `hum voice join` and `hum call`: a headless voice participant. Plays a WAV (or a tone, or
//! the microphone) into the call and records what it hears (the mix) to a WAV. For bots,
//! demos, tests and benchmarks.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use hum_engine::voice::hum_media::device::{CpalSink, CpalSource, list_devices};
use hum_engine::voice::hum_media::pacer::Paced;
use hum_engine::voice::hum_media::processing::{CaptureControls, VoiceMode};
use hum_engine::voice::hum_media::synth::{
    BufferSource, NullSink, SilenceSource, ToneSource, WavSink,
};
use hum_engine::voice::hum_media::{AudioSink, AudioSource, FrameDuration};
use hum_engine::voice::link::{AudioIo, VoiceLink};
use hum_engine::voice::{VoiceConfig, VoiceEvent};
use serde_json::json;
use tokio::sync::mpsc;

use crate::{Cli, commands, resolve};

#[derive(Subcommand, Debug)]
pub enum VoiceCmd {
    /// Join a voice channel with audio.
    Join {
        #[arg(long)]
        server: String,
        #[arg(long)]
        channel: String,
        #[command(flatten)]
        audio: Box<AudioArgs>,
    },
    /// List audio devices.
    Devices,
}

#[derive(Args, Debug)]
pub struct CallArgs {
    /// The friend to call (public key). With --answer: only accept a call from them.
    pub friend: Option<String>,
    /// Wait for an incoming call and accept it instead of calling.
    #[arg(long)]
    pub answer: bool,
    /// How long to ring (or, with --answer, to wait for a call).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub ring: Duration,
    #[command(flatten)]
    pub audio: AudioArgs,
}

#[derive(Args, Debug)]
pub struct AudioArgs {
    /// Play this WAV file into the call (any rate/channels; converted to 48 kHz mono).
    #[arg(long, conflicts_with_all = ["tone", "input_device"])]
    pub play: Option<PathBuf>,
    /// Loop the --play file instead of sending silence after it.
    #[arg(long = "loop")]
    pub looping: bool,
    /// Send a sine tone of this frequency (Hz).
    #[arg(long)]
    pub tone: Option<f32>,
    /// Microphone to use (an id from `hum voice devices`); default: the system default.
    #[arg(long)]
    pub input_device: Option<String>,
    /// Record what you hear (the mix of everyone) to this WAV file.
    #[arg(long, conflicts_with = "output_device")]
    pub record: Option<PathBuf>,
    /// Speaker to use; default: the system default, or nothing if there is none.
    #[arg(long)]
    pub output_device: Option<String>,
    /// Hang up / leave after this long; default: stay until interrupted.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Opus frame: 20ms (default) or 10ms (lower latency).
    #[arg(long, default_value = "20ms", value_parser = parse_frame)]
    pub frame: FrameDuration,
    /// Opus bitrate in bits per second.
    #[arg(long, default_value_t = 36_000)]
    pub bitrate: u32,
    /// When to send: vad (voice activity), ptt (push-to-talk; see --ptt-held), open (always).
    /// Default: open for --play/--tone, vad for a microphone.
    #[arg(long, value_parser = parse_mode)]
    pub mode: Option<VoiceMode>,
    /// VAD sensitivity, 0 (only loud speech) to 1 (almost anything).
    #[arg(long, default_value_t = 0.5)]
    pub vad_sensitivity: f32,
    /// With --mode ptt: hold the key during these windows, e.g. `2s-4s,6s-7s`.
    #[arg(long)]
    pub ptt_held: Option<String>,
    /// Noise suppression: on by default for a microphone, off for --play/--tone.
    #[arg(long)]
    pub noise_suppression: Option<bool>,
    /// Join muted.
    #[arg(long)]
    pub muted: bool,
    /// Mute during these windows, e.g. `3s-5s`.
    #[arg(long)]
    pub mute_at: Option<String>,
    /// Join deafened.
    #[arg(long)]
    pub deafened: bool,
    /// STUN server, e.g. stun:stun.example.org:3478 (repeatable). Default: none.
    #[arg(long)]
    pub stun: Vec<String>,
    /// Local UDP address for media (default 0.0.0.0:0).
    #[arg(long)]
    pub bind: Option<String>,
}

fn parse_frame(s: &str) -> Result<FrameDuration, String> {
    FrameDuration::parse(s).ok_or_else(|| format!("`{s}`: use 10ms or 20ms"))
}

fn parse_mode(s: &str) -> Result<VoiceMode, String> {
    match s {
        "vad" => Ok(VoiceMode::VoiceActivity),
        "ptt" => Ok(VoiceMode::PushToTalk),
        "open" => Ok(VoiceMode::Open),
        _ => Err(format!("`{s}`: use vad, ptt or open")),
    }
}

/// `2s-4s,6s-7s` -> [(2s, 4s), (6s, 7s)].
fn parse_windows(s: &str) -> Result<Vec<(Duration, Duration)>> {
    s.split(',')
        .filter(|w| !w.trim().is_empty())
        .map(|w| {
            let (a, b) = w
                .split_once('-')
                .with_context(|| format!("`{w}`: expected START-END, e.g. 2s-4s"))?;
            let a = humantime::parse_duration(a.trim())?;
            let b = humantime::parse_duration(b.trim())?;
            if b <= a {
                bail!("`{w}`: the window ends before it starts");
            }
            Ok((a, b))
        })
        .collect()
}

impl AudioArgs {
    fn io(&self) -> Result<(AudioIo, VoiceConfig)> {
        let synthetic = self.play.is_some() || self.tone.is_some();
        let source: Box<dyn AudioSource> = if let Some(p) = &self.play {
            let src = BufferSource::from_wav(p)?.looping(self.looping);
            Box::new(Paced::new(src))
        } else if let Some(hz) = self.tone {
            Box::new(Paced::new(ToneSource::new(hz, 0.3)))
        } else {
            match CpalSource::open(self.input_device.as_deref()) {
                Ok(s) => Box::new(s),
                Err(e) if self.input_device.is_none() => {
                    eprintln!("note: no microphone ({e}); sending silence");
                    Box::new(Paced::new(SilenceSource::new()))
                }
                Err(e) => return Err(e.into()),
            }
        };
        let sink: Box<dyn AudioSink> = if let Some(p) = &self.record {
            Box::new(Paced::new(WavSink::create(p)?))
        } else {
            match CpalSink::open(self.output_device.as_deref()) {
                Ok(s) => Box::new(s),
                Err(e) if self.output_device.is_none() => {
                    eprintln!("note: no speaker ({e}); discarding what is heard");
                    Box::new(Paced::new(NullSink))
                }
                Err(e) => return Err(e.into()),
            }
        };
        let controls = CaptureControls::new();
        controls.set_mode(self.mode.unwrap_or(if synthetic {
            VoiceMode::Open
        } else {
            VoiceMode::VoiceActivity
        }));
        controls.set_vad_sensitivity(self.vad_sensitivity);
        controls.set_noise_suppression(self.noise_suppression.unwrap_or(!synthetic));
        controls.set_muted(self.muted);
        let mut cfg = VoiceConfig {
            frame: self.frame,
            bitrate_bps: self.bitrate,
            stun: self.stun.clone(),
            ..Default::default()
        };
        if let Some(b) = &self.bind {
            cfg.bind = vec![b.clone()];
        }
        Ok((
            AudioIo {
                source,
                sink,
                controls,
            },
            cfg,
        ))
    }
}

pub async fn run_voice(cli: &Cli, cmd: &VoiceCmd) -> Result<()> {
    match cmd {
        VoiceCmd::Devices => {
            let devices = list_devices()?;
            if cli.json {
                let v: Vec<_> = devices
                    .iter()
                    .map(|d| {
                        json!({"id": d.id, "name": d.name, "input": d.input, "output": d.output,
                               "default_input": d.default_input, "default_output": d.default_output})
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if devices.is_empty() {
                println!("no audio devices (use --play/--record with WAV files)");
            } else {
                for d in devices {
                    println!(
                        "{:<40} {}{}{}{}",
                        d.id,
                        if d.input { "in " } else { "" },
                        if d.output { "out " } else { "" },
                        if d.default_input { "(default in) " } else { "" },
                        if d.default_output {
                            "(default out)"
                        } else {
                            ""
                        },
                    );
                }
            }
            Ok(())
        }
        VoiceCmd::Join {
            server,
            channel,
            audio,
        } => {
            let (io, cfg) = audio.io()?;
            let client = commands::connect(cli).await?;
            let s = resolve::server(&client, server).await?;
            let c = resolve::channel(&client, s.id, channel).await?;
            let (link, events) = VoiceLink::join_channel(client, c.id, cfg, io)
                .await
                .with_context(|| format!("joining voice channel {}", c.name.as_str()))?;
            if !cli.json {
                eprintln!(
                    "in voice channel {} ({} others)",
                    c.name.as_str(),
                    c.roster.len()
                );
            }
            run_until_done(cli, link, events, audio).await
        }
    }
}

pub async fn run_call(cli: &Cli, args: &CallArgs) -> Result<()> {
    let (io, cfg) = args.audio.io()?;
    let client = commands::connect(cli).await?;
    let friend = args.friend.as_deref().map(resolve::user).transpose()?;
    let (link, events) = if args.answer {
        VoiceLink::answer(client, friend, args.ring, cfg, io).await?
    } else {
        let Some(friend) = friend else {
            bail!("whom to call? give a friend's public key, or --answer to wait for a call");
        };
        VoiceLink::call(client, friend, args.ring, cfg, io).await?
    };
    run_until_done(cli, link, events, &args.audio).await
}

/// Prints events until the duration is over, the call ends, or Ctrl-C; then leaves cleanly so
/// the recording is finalised.
async fn run_until_done(
    cli: &Cli,
    link: VoiceLink,
    mut events: mpsc::UnboundedReceiver<VoiceEvent>,
    audio: &AudioArgs,
) -> Result<()> {
    let start = tokio::time::Instant::now();
    let end = audio.duration.map(|d| start + d);
    let ptt = audio.ptt_held.as_deref().map(parse_windows).transpose()?;
    let mutes = audio.mute_at.as_deref().map(parse_windows).transpose()?;
    if audio.deafened {
        link.session.set_deafened(true);
    }
    let controls = link.session.controls().clone();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut was_muted = controls.muted();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                let t = start.elapsed();
                if let Some(w) = &ptt {
                    controls.set_ptt_pressed(w.iter().any(|(a, b)| t >= *a && t < *b));
                }
                if let Some(w) = &mutes {
                    let m = audio.muted || w.iter().any(|(a, b)| t >= *a && t < *b);
                    if m != was_muted {
                        link.session.set_muted(m);
                        was_muted = m;
                    }
                }
                if end.is_some_and(|e| tokio::time::Instant::now() >= e) {
                    break;
                }
            }
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                print_event(cli, &ev);
            }
        }
    }
    link.leave().await;
    Ok(())
}

fn print_event(cli: &Cli, ev: &VoiceEvent) {
    let v = match ev {
        VoiceEvent::PeerConnected(u) => json!({"type": "peer_connected", "user": u.to_string()}),
        VoiceEvent::PeerLeft { user, reason } => {
            json!({"type": "peer_left", "user": user.to_string(), "reason": reason})
        }
        VoiceEvent::Speaking { user, speaking } => json!({"type": "speaking",
            "user": user.map(|u| u.to_string()), "speaking": speaking}),
        VoiceEvent::LocalState { muted, deafened } => {
            json!({"type": "local_state", "muted": muted, "deafened": deafened})
        }
        VoiceEvent::Stats { user, stats } => json!({"type": "stats", "user": user.to_string(),
            "rtt_ms": stats.rtt.map(|d| d.as_secs_f64() * 1000.0),
            "loss": stats.loss, "jitter_ms": stats.jitter.as_secs_f64() * 1000.0,
            "jitter_buffer_ms": stats.jitter_buffer.as_secs_f64() * 1000.0,
            "packets": stats.packets_received}),
        VoiceEvent::Error(e) => json!({"type": "error", "message": e}),
    };
    if cli.json {
        println!("{v}");
    } else {
        eprintln!("{v}");
    }
}
