//! `hum voice join` and `hum call`: a headless voice participant (calls through hum-engine's
//! `calls` service, the same one the app uses). Plays a WAV (or a tone, or
//! the microphone) into the call and records what it hears (the mix) to a WAV. For bots,
//! demos, tests and benchmarks.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use hum_engine::RelayClient;
use hum_engine::calls::{CallEvent, CallPeer, CallState, Calls, MediaIo, MediaProvider};
use hum_engine::ice::IceConfig;
use hum_engine::voice::hum_media::device::{CpalSink, CpalSource, list_devices};
use hum_engine::voice::hum_media::pacer::Paced;
use hum_engine::voice::hum_media::processing::{CaptureControls, VoiceMode};
use hum_engine::voice::hum_media::synth::{
    BufferSource, NullSink, SilenceSource, ToneSource, WavSink,
};
use hum_engine::voice::hum_media::{AudioSink, AudioSource, FrameDuration};
use hum_engine::voice::link::{AudioIo, VoiceLink};
use hum_engine::voice::{VideoIo, VideoKind, VoiceConfig, VoiceEvent, VoiceSession};
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
        #[command(flatten)]
        video: Box<crate::video::VideoArgs>,
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
    #[command(flatten)]
    pub video: crate::video::VideoArgs,
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
    /// Record what you hear (the mix of everyone) to this WAV file. Its first sample is written
    /// at the `recording` line's `started_unix_ms` (second 0 of the file).
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
    /// Hide my IP: media only through the relay's TURN server (ICE transport policy relay);
    /// no host or server-reflexive address is sent to anyone. Costs latency (an extra hop).
    #[arg(long)]
    pub relay_only: bool,
    /// End-to-end encrypt our audio and video through the SFU (SFrame, docs/e2ee.md): the relay and its
    /// SFU forward frames they cannot decrypt; keys go to each member sealed with their
    /// identity key, and change when someone leaves. Members without it cannot hear or see us,
    /// and we do not play their unencrypted audio or video. Voice channels only.
    #[arg(long)]
    pub e2ee: bool,
}

impl AudioArgs {
    /// Adds the relay's TURN server (if it has one) to `cfg`, and relay-only mode if asked;
    /// relay-only without a TURN server is refused here, before anything is dialled.
    pub async fn add_turn(&self, client: &RelayClient, cfg: &mut VoiceConfig) -> Result<()> {
        cfg.use_ice(IceConfig::from_relay(client, self.relay_only).await?);
        Ok(())
    }
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
    fn io(&self, cli: &Cli) -> Result<(AudioIo, VoiceConfig)> {
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
            Box::new(Stamped {
                inner: Paced::new(WavSink::create(p)?),
                json: cli.json,
                started: false,
            })
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
            video,
        } => {
            crate::video::check(video)?;
            // Opened before joining: a missing camera or file is an error now.
            let video_io = video.io()?;
            let (io, mut cfg) = audio.io(cli)?;
            let client = commands::connect(cli).await?;
            audio.add_turn(&client, &mut cfg).await?;
            let s = resolve::server(&client, server).await?;
            let c = resolve::channel(&client, s.id, channel).await?;
            // Started before joining, to see the keys of those already there.
            let e2ee = if audio.e2ee {
                let keys = commands::load_identity(cli)?.e2ee_keys();
                let (channel, events) =
                    hum_engine::e2ee::E2eeChannel::start(client.clone(), keys, c.id)?;
                cfg.frame_transform = Some(channel.transform());
                spawn_e2ee_printer(cli.json, events);
                Some(channel)
            } else {
                None
            };
            let (link, events) =
                VoiceLink::join_channel_with_video(client, c.id, cfg, io, video_io)
                    .await
                    .with_context(|| format!("joining voice channel {}", c.name.as_str()))?;
            if !cli.json {
                eprintln!(
                    "in voice channel {} ({} others)",
                    c.name.as_str(),
                    c.roster.len()
                );
            }
            let done = run_until_done(cli, link, events, audio, video).await;
            if let Some(e) = e2ee {
                print_line(
                    cli,
                    json!({"type": "e2ee_stats", "refused_frames": e.refused_frames()}),
                );
            }
            done
        }
    }
}

/// Hands the call the devices from the command line (once: `hum call` makes one call).
struct CliMedia(Mutex<Option<MediaIo>>, Mutex<Option<VideoIo>>);

#[hum_engine::calls::async_trait]
impl MediaProvider for CliMedia {
    async fn open(&self, _peer: &CallPeer) -> Result<MediaIo, String> {
        self.0
            .lock()
            .ok()
            .and_then(|mut m| m.take())
            .ok_or_else(|| "the audio of this run was used by an earlier call".into())
    }

    async fn open_video(&self, _peer: &CallPeer) -> Result<VideoIo, String> {
        Ok(self
            .1
            .lock()
            .ok()
            .and_then(|mut m| m.take())
            .unwrap_or_default())
    }
}

/// `hum call FRIEND` rings a friend; `hum call --answer [FRIEND]` waits for a call and accepts
/// it. Both through hum-engine's call service; the process ends when the call does (exit code 0
/// when it was hung up after connecting, an error when it was declined, missed or failed).
pub async fn run_call(cli: &Cli, args: &CallArgs) -> Result<()> {
    let (audio, mut config) = args.audio.io(cli)?;
    crate::video::check(&args.video)?;
    // Opened before dialling: a missing camera or file is an error now, not mid-call.
    let video = args.video.io()?;
    let client = commands::connect(cli).await?;
    args.audio.add_turn(&client, &mut config).await?;
    let friend = args.friend.as_deref().map(resolve::user).transpose()?;
    let media = Arc::new(CliMedia(
        Mutex::new(Some(MediaIo { config, audio })),
        Mutex::new(Some(video)),
    ));
    let (calls, mut events) = Calls::start(client, media);
    // Whether "our" call has begun (rung or accepted): only its end ends the run.
    let mut ours = false;
    if !args.answer {
        let Some(friend) = friend else {
            bail!("whom to call? give a friend's public key, or --answer to wait for a call");
        };
        calls.invite(friend).await?;
        ours = true;
    }
    let ring_end = tokio::time::Instant::now() + args.ring;
    let mut timeline: Option<Timeline> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                calls.hang_up().await?;
                let _ = calls.decline().await;
                return Ok(());
            }
            _ = tokio::time::sleep_until(ring_end), if timeline.is_none() => {
                if args.answer && !ours {
                    bail!("no incoming call within {:?}", args.ring);
                }
                if !args.answer {
                    calls.cancel().await?;
                    bail!("no answer within {:?}", args.ring);
                }
            }
            _ = tick.tick(), if timeline.is_some() => {
                if let (Some(path), Some(session)) = (&args.video.video_off_file, calls.session()) {
                    let on = !path.exists();
                    if session.camera().is_some_and(|c| c != on) {
                        session.set_camera(on);
                    }
                }
                if let (Some(t), Some(session)) = (&mut timeline, calls.session())
                    && t.tick(&session, &args.audio)
                {
                    calls.hang_up().await?;
                }
            }
            ev = events.recv() => {
                let Some(ev) = ev else { bail!("the call service stopped") };
                match ev {
                    CallEvent::State(state) => {
                        print_call_state(cli, &state);
                        match &state {
                            CallState::Incoming { peer, .. } if args.answer && !ours => {
                                if friend.is_none_or(|f| f == peer.id) {
                                    ours = true;
                                    calls.accept().await?;
                                } else {
                                    calls.decline().await?;
                                }
                            }
                            CallState::Connecting { .. } | CallState::Active { .. }
                                if timeline.is_none() =>
                            {
                                if let Some(session) = calls.session() {
                                    timeline = Some(Timeline::start(&session, &args.audio)?);
                                }
                            }
                            CallState::Ended { peer, reason } if ours => {
                                if timeline.is_some() && reason.is_normal_hang_up() {
                                    return Ok(());
                                }
                                let name = peer.as_ref().map_or("they", |p| p.name.as_str());
                                bail!(
                                    "{}",
                                    reason
                                        .sentence(name)
                                        .unwrap_or_else(|| "the call ended".into())
                                );
                            }
                            _ => {}
                        }
                    }
                    CallEvent::Media(ev) => {
                        if timeline.is_none()
                            && let Some(session) = calls.session()
                        {
                            timeline = Some(Timeline::start(&session, &args.audio)?);
                        }
                        print_event(cli, &ev);
                        if let (VoiceEvent::Stats { .. }, Some(s)) = (&ev, calls.session()) {
                            print_video_send(cli, &s);
                        }
                        if let (VoiceEvent::Stats { user, .. }, Some(s)) = (&ev, calls.session()) {
                            print_video_stats(cli, &s, user);
                        }
                    }
                }
            }
        }
    }
}

fn print_call_state(cli: &Cli, state: &CallState) {
    let peer = state.peer();
    let mut v = json!({"type": "call", "state": state.name(),
        "peer": peer.map(|p| p.id.to_string()), "name": peer.map(|p| p.name.clone())});
    if let CallState::Ended { reason, .. } = state {
        let name = peer.map_or("they", |p| p.name.as_str());
        v["reason"] = json!(reason.code());
        v["message"] = json!(reason.sentence(name));
    }
    if cli.json {
        println!("{v}");
    } else {
        eprintln!("{v}");
    }
}

/// What `--duration`, `--ptt-held` and `--mute-at` do over time, from when media starts.
struct Timeline {
    start: tokio::time::Instant,
    end: Option<tokio::time::Instant>,
    ptt: Option<Vec<(Duration, Duration)>>,
    mutes: Option<Vec<(Duration, Duration)>>,
    was_muted: bool,
}

impl Timeline {
    fn start(session: &VoiceSession, audio: &AudioArgs) -> Result<Self> {
        let start = tokio::time::Instant::now();
        if audio.deafened {
            session.set_deafened(true);
        }
        Ok(Self {
            start,
            end: audio.duration.map(|d| start + d),
            ptt: audio.ptt_held.as_deref().map(parse_windows).transpose()?,
            mutes: audio.mute_at.as_deref().map(parse_windows).transpose()?,
            was_muted: session.controls().muted(),
        })
    }

    /// Applies the windows now; `true` once `--duration` is over.
    fn tick(&mut self, session: &VoiceSession, audio: &AudioArgs) -> bool {
        let t = self.start.elapsed();
        if let Some(w) = &self.ptt {
            session
                .controls()
                .set_ptt_pressed(w.iter().any(|(a, b)| t >= *a && t < *b));
        }
        if let Some(w) = &self.mutes {
            let m = audio.muted || w.iter().any(|(a, b)| t >= *a && t < *b);
            if m != self.was_muted {
                session.set_muted(m);
                self.was_muted = m;
            }
        }
        self.end.is_some_and(|e| tokio::time::Instant::now() >= e)
    }
}

/// Prints events until the duration is over, the channel's session ends, or Ctrl-C; then leaves
/// cleanly so the recording is finalised.
async fn run_until_done(
    cli: &Cli,
    link: VoiceLink,
    mut events: mpsc::UnboundedReceiver<VoiceEvent>,
    audio: &AudioArgs,
    video: &crate::video::VideoArgs,
) -> Result<()> {
    let mut timeline = Timeline::start(&link.session, audio)?;
    let mut quality = crate::video::QualityPlan::new(video);
    let started = tokio::time::Instant::now();
    let link = Arc::new(link);
    let ask = |user: hum_proto::UserId, q: hum_proto::signal::VideoQuality| {
        let (link, json) = (link.clone(), cli.json);
        tokio::spawn(async move {
            // In a mesh there is nothing to choose (the relay says so): not worth a line.
            match link.set_video_quality(user, q).await {
                Ok(()) if json => println!(
                    "{}",
                    json!({"type": "video_quality", "user": user.to_string(), "quality": q})
                ),
                Ok(()) => {}
                Err(e) => tracing::debug!(%user, "sfu_quality: {e}"),
            }
        })
    };
    let mut asks = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    // `video_send` and `video_stats` lines come with each peer's stats; on the SFU there are no
    // peers, so at least one a second from the tick (`video_stats` for every member connected).
    let mut last_send_line = tokio::time::Instant::now();
    let mut members: std::collections::BTreeSet<hum_proto::UserId> = Default::default();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                if timeline.tick(&link.session, audio) {
                    break;
                }
                if last_send_line.elapsed() >= Duration::from_secs(1) {
                    print_video_send(cli, &link.session);
                    for u in &members {
                        print_video_stats(cli, &link.session, u);
                    }
                    last_send_line = tokio::time::Instant::now();
                }
                if let Some(path) = &video.video_off_file {
                    let on = !path.exists();
                    if link.session.camera().is_some_and(|c| c != on) {
                        link.session.set_camera(on);
                    }
                }
                if let Some((q, users)) = quality.due(started.elapsed()) {
                    for u in users {
                        asks.push(ask(u, q));
                    }
                }
            }
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                if let VoiceEvent::PeerConnected(u) = &ev {
                    members.insert(*u);
                    if let Some(q) = quality.on_peer(*u) {
                        asks.push(ask(*u, q));
                    }
                }
                if let VoiceEvent::PeerLeft { user, .. } = &ev {
                    members.remove(user);
                }
                print_event(cli, &ev);
                if let VoiceEvent::Stats { user, .. } = &ev {
                    print_video_send(cli, &link.session);
                    print_video_stats(cli, &link.session, user);
                    last_send_line = tokio::time::Instant::now();
                }
            }
        }
    }
    for a in asks {
        let _ = a.await;
    }
    let Ok(link) = Arc::try_unwrap(link) else {
        anyhow::bail!("a quality request still holds the voice link");
    };
    link.leave().await;
    Ok(())
}

/// `user`'s camera as we receive it (with each `stats` line of theirs, `--json`): RTP packets,
/// frames assembled and keyframes among them, losses, keyframe requests we sent, frames decoded.
fn print_video_stats(cli: &Cli, session: &VoiceSession, user: &hum_proto::UserId) {
    if let Some(v) = session.video_stats(user) {
        print_line(
            cli,
            json!({"type": "video_stats", "user": user.to_string(),
                "packets": v.packets, "frames": v.frames, "keyframes": v.keyframes,
                "losses": v.losses, "plis_sent": v.plis_sent, "decoded": v.decoded}),
        );
    }
}

/// What the video we send cost so far (`--json`, with each `stats` line): frames captured,
/// frames encoded per layer (low, medium, high: each at most once per captured frame, however
/// many peers get it) and the layers running now.
fn print_video_send(cli: &Cli, session: &VoiceSession) {
    if let Some(v) = session.video_send_stats().filter(|_| cli.json) {
        print_line(
            cli,
            json!({"type": "video_send", "captured": v.captured, "encoded": v.encoded,
                "active": v.active}),
        );
    }
    let s = session.screen_share_stats();
    if cli.json && (s.sharing || s.captured > 0) {
        print_line(
            cli,
            json!({"type": "screen_send", "sharing": s.sharing, "captured": s.captured,
                "encoded": s.encoded, "width": s.width, "height": s.height, "fps": s.fps,
                "kbps": s.bitrate.bps() / 1000}),
        );
    }
}

fn print_event(cli: &Cli, ev: &VoiceEvent) {
    let v = match ev {
        VoiceEvent::PeerConnected(u) => json!({"type": "peer_connected", "user": u.to_string()}),
        VoiceEvent::PeerLeft { user, reason } => {
            json!({"type": "peer_left", "user": user.to_string(), "reason": reason})
        }
        VoiceEvent::Speaking { user, speaking } => json!({"type": "speaking",
            "user": user.map(|u| u.to_string()), "speaking": speaking}),
        VoiceEvent::LocalState {
            muted,
            deafened,
            muted_by_channel,
        } => json!({"type": "local_state", "muted": muted, "deafened": deafened,
            "muted_by_channel": muted_by_channel}),
        VoiceEvent::Stats { user, stats } => json!({"type": "stats", "user": user.to_string(),
            "rtt_ms": stats.rtt.map(|d| d.as_secs_f64() * 1000.0),
            "loss": stats.loss, "jitter_ms": stats.jitter.as_secs_f64() * 1000.0,
            "jitter_buffer_ms": stats.jitter_buffer.as_secs_f64() * 1000.0,
            "packets": stats.packets_received}),
        VoiceEvent::Error(e) => json!({"type": "error", "message": e}),
        // `at_unix_ms`: when this was printed, after the camera changed (ours: nothing captured
        // later than this was sent while off).
        VoiceEvent::Video { user, camera } => json!({"type": "video",
            "user": user.map(|u| u.to_string()), "camera": camera,
            "at_unix_ms": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)}),
        VoiceEvent::DominantSpeaker { user } => {
            json!({"type": "dominant_speaker", "user": user.to_string()})
        }
        VoiceEvent::Route { user, route } => json!({"type": "route", "user": user.to_string(),
            "local": route.local.name(), "remote": route.remote.name(),
            "relayed": route.relayed()}),
        VoiceEvent::ScreenShare { sharing, reason } => {
            json!({"type": "screen_share", "sharing": sharing, "reason": reason})
        }
        VoiceEvent::VideoPaused { user, kind, paused } => json!({"type": "video_paused",
            "user": user.to_string(), "screen": *kind == VideoKind::Screen, "paused": paused}),
    };
    print_line(cli, v);
}

/// The key exchange's events as lines: `e2ee_key` (a member's key arrived), `e2ee_rotated` (we
/// encrypt with a new key), `e2ee_key_refused`.
fn spawn_e2ee_printer(
    json: bool,
    mut events: tokio::sync::mpsc::UnboundedReceiver<hum_engine::e2ee::E2eeEvent>,
) {
    use hum_engine::e2ee::E2eeEvent;
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            let v = match ev {
                E2eeEvent::KeyReceived { from, epoch } => {
                    json!({"type": "e2ee_key", "user": from.to_string(), "epoch": epoch})
                }
                E2eeEvent::Rotated { epoch } => json!({"type": "e2ee_rotated", "epoch": epoch}),
                E2eeEvent::KeyRefused { from, reason } => {
                    json!({"type": "e2ee_key_refused", "user": from.to_string(), "reason": reason})
                }
            };
            if json {
                println!("{v}");
            } else {
                eprintln!("{v}");
            }
        }
    });
}

/// A recording sink that says when it got its first frame: `{"type":"recording",
/// "started_unix_ms"}`, the wall-clock time of the WAV's second 0 (the session starts writing
/// after it joined, a second or two after the process started), so a test can place windows in
/// the file by the wall clock.
struct Stamped<S> {
    inner: S,
    json: bool,
    started: bool,
}

impl<S: AudioSink> AudioSink for Stamped<S> {
    fn write(&mut self, frame: &[f32]) -> Result<(), hum_engine::voice::hum_media::MediaError> {
        if !self.started {
            self.started = true;
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let line = json!({"type": "recording", "started_unix_ms": ms});
            if self.json {
                println!("{line}");
            } else {
                eprintln!("{line}");
            }
        }
        self.inner.write(frame)
    }
    fn finish(&mut self) -> Result<(), hum_engine::voice::hum_media::MediaError> {
        self.inner.finish()
    }
    fn due(&self) -> Option<std::time::Instant> {
        self.inner.due()
    }
    fn name(&self) -> String {
        self.inner.name()
    }
}

fn print_line(cli: &Cli, v: serde_json::Value) {
    if cli.json {
        println!("{v}");
    } else {
        eprintln!("{v}");
    }
}
