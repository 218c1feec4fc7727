//! An engine member of a voice channel for end-to-end tests: a real `RelayClient` and
//! `VoiceLink` (real WebRTC and Opus) sending a tone of its own and recording what it hears, so
//! a test can ask whether, and from when, it hears another member.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use hum_engine::voice::link::{AudioIo, VoiceLink};
use hum_engine::voice::{VoiceConfig, VoiceEvent};
use hum_engine::{ClientEvent, Identity, RelayClient, RelayConfig};
use hum_media::pacer::Paced;
use hum_media::processing::{CaptureControls, VoiceMode};
use hum_media::synth::{MemorySink, ToneSource};
use hum_proto::signal::{DisplayName, Event};
use hum_proto::{ChannelId, UserId};
use tokio::sync::{broadcast, mpsc};

use crate::voice::tone_share;

/// Samples per second played out.
pub const RATE: usize = 48_000;
/// How long audio may take to come back after a member is back in the channel.
pub const RECOVERY: Duration = Duration::from_secs(15);

/// A member of a voice channel that sends a tone and records what it hears.
pub struct Talker {
    pub name: &'static str,
    pub client: RelayClient,
    relay_events: broadcast::Receiver<ClientEvent>,
    /// What this member hears.
    pub rec: MemorySink,
    /// The tone this member sends.
    pub tone: f32,
    link: Option<VoiceLink>,
    /// The voice session's events (statistics left out), for failure messages.
    voice_log: Arc<Mutex<Vec<String>>>,
}

impl Talker {
    /// Logs in at `url` (identity from `seed`) and waits until connected; reconnects with a
    /// 100-500 ms backoff.
    pub async fn start(url: &str, seed: u8, name: &'static str, tone: f32) -> Result<Talker> {
        let identity = Identity::from_seed([seed; 32], DisplayName::new(name)?);
        let mut config = RelayConfig::new(url);
        config.backoff_min = Duration::from_millis(100);
        config.backoff_max = Duration::from_millis(500);
        let client = RelayClient::start(identity, config);
        let relay_events = client.subscribe();
        client.wait_connected().await?;
        Ok(Talker {
            name,
            client,
            relay_events,
            rec: MemorySink::new(),
            tone,
            link: None,
            voice_log: Arc::default(),
        })
    }

    /// Joins voice channel `channel` (mesh or SFU, as the relay says) on the loopback address.
    pub async fn join(&mut self, channel: ChannelId) -> Result<()> {
        let controls = CaptureControls::new();
        controls.set_mode(VoiceMode::Open);
        controls.set_noise_suppression(false);
        let io = AudioIo {
            source: Box::new(Paced::new(ToneSource::new(self.tone, 0.3))),
            sink: Box::new(Paced::new(self.rec.clone())),
            controls,
        };
        let cfg = VoiceConfig {
            bind: vec!["127.0.0.1:0".into()],
            ..Default::default()
        };
        let (link, events) = VoiceLink::join_channel(self.client.clone(), channel, cfg, io)
            .await
            .with_context(|| format!("{} joining the channel", self.name))?;
        self.link = Some(link);
        tokio::spawn(log_events(events, self.voice_log.clone()));
        Ok(())
    }

    pub fn id(&self) -> UserId {
        self.client.user_id()
    }

    /// Samples played out so far.
    pub fn played(&self) -> usize {
        self.rec.samples().len()
    }

    /// Waits until this member's relay client says it is back in `channel` (`rejoined`).
    pub async fn rejoined(&mut self, channel: ChannelId) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let ev = tokio::time::timeout_at(deadline, self.relay_events.recv())
                .await
                .with_context(|| format!("{} re-joining the channel", self.name))?;
            match ev {
                Ok(ClientEvent::Rejoined { channel: c }) if c.id == channel => return Ok(()),
                Ok(ClientEvent::RejoinFailed { .. }) => {
                    anyhow::bail!("{}: re-joining failed: {ev:?}", self.name)
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits until this member's relay client hears `who` join `channel`.
    pub async fn sees_join(&mut self, channel: ChannelId, who: UserId) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let ev = tokio::time::timeout_at(deadline, self.relay_events.recv())
                .await
                .with_context(|| format!("{} seeing {who} come back", self.name))?;
            if let Ok(ClientEvent::Relay(Event::RosterJoin {
                channel: c, entry, ..
            })) = ev
                && c == channel
                && entry.user.id == who
            {
                return Ok(());
            }
        }
    }

    /// Waits until a whole second of what this member played after sample `from` is the
    /// other's `hz` tone (80% of its 100 ms blocks), and returns the sample that second starts
    /// at. Silence, or audio that stopped, never passes.
    pub async fn hears_from(&self, hz: f32, from: usize) -> Result<usize> {
        let deadline = Instant::now() + RECOVERY;
        loop {
            let s = self.rec.samples();
            let mut start = from;
            while start + RATE <= s.len() {
                if tone_share(&s[start..start + RATE], hz, 0.7) >= 0.8 {
                    return Ok(start);
                }
                start += RATE / 10;
            }
            ensure!(
                Instant::now() < deadline,
                "{} did not hear the {hz} Hz tone within {RECOVERY:?} (rms per 100 ms since: {:?}; voice events: {:?})",
                self.name,
                rms_per_block(&s[from.min(s.len())..]),
                self.voice_log.lock().map(|l| l.clone()).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Leaves the channel (if in it) and stops the relay client.
    pub async fn stop(mut self) {
        if let Some(link) = self.link.take() {
            link.leave().await;
        }
        self.client.shutdown().await;
    }
}

async fn log_events(mut events: mpsc::UnboundedReceiver<VoiceEvent>, log: Arc<Mutex<Vec<String>>>) {
    let start = Instant::now();
    while let Some(ev) = events.recv().await {
        if matches!(ev, VoiceEvent::Stats { .. } | VoiceEvent::Speaking { .. }) {
            continue;
        }
        if let Ok(mut l) = log.lock() {
            l.push(format!("{:.1}s {ev:?}", start.elapsed().as_secs_f64()));
        }
    }
}

fn rms_per_block(s: &[f32]) -> Vec<String> {
    s.chunks(RATE / 10)
        .map(|c| format!("{:.2}", hum_media::analysis::rms(c)))
        .collect()
}

/// `owner` makes a server "Club" with a voice channel "Room" and invites `guest`; both join
/// the channel. Returns the channel.
pub async fn room_for_two(owner: &mut Talker, guest: &mut Talker) -> Result<ChannelId> {
    use hum_proto::signal::Name;
    let server = owner.client.server_create(Name::new("Club")?).await?;
    let room = owner
        .client
        .channel_create(server.id, Name::new("Room")?, Some(8), None)
        .await?;
    let invite = owner.client.invite_create(server.id, None, None).await?;
    guest.client.invite_join(invite.code).await?;
    owner.join(room.id).await?;
    guest.join(room.id).await?;
    Ok(room.id)
}

/// Both hear each other from sample counts `from` on; returns the longer of the two waits, from
/// `from` to the first good second.
pub async fn both_hear(a: &Talker, b: &Talker, from: (usize, usize)) -> Result<Duration> {
    let at_a = a.hears_from(b.tone, from.0).await?;
    let at_b = b.hears_from(a.tone, from.1).await?;
    let wait = (at_a - from.0).max(at_b - from.1);
    Ok(Duration::from_secs_f64(wait as f64 / RATE as f64))
}
