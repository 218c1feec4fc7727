//! Voice channels over the relay: a [`Signaller`] that forwards through [`RelayClient`] (calls
//! use it too, see [`crate::calls`]), and the glue that turns relay events (roster changes,
//! forwarded signals) into session calls, and session events (speaking, mute, deafen) into
//! `voice_update`s every roster shows.

use std::sync::Arc;

use hum_media::processing::CaptureControls;
use hum_media::{AudioSink, AudioSource};
use hum_proto::signal::{Event, SignalPayload, SignalScope, VoiceState, VoiceStatePatch};
use hum_proto::{ChannelId, UserId};
use tokio::sync::{broadcast, mpsc};

use super::{Signaller, VoiceConfig, VoiceError, VoiceEvent, VoiceSession};
use crate::relay::{ClientEvent, RelayClient};

/// Sends SDP/ICE through the relay, scoped to a call or a channel.
#[derive(Clone)]
pub struct RelaySignaller {
    client: RelayClient,
    scope: SignalScope,
}

impl std::fmt::Debug for RelaySignaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelaySignaller")
            .field("scope", &self.scope)
            .finish()
    }
}

impl RelaySignaller {
    pub fn new(client: RelayClient, scope: SignalScope) -> Self {
        Self { client, scope }
    }
}

#[async_trait::async_trait]
impl Signaller for RelaySignaller {
    async fn send(&self, to: UserId, payload: SignalPayload) -> Result<(), String> {
        self.client
            .signal(to, self.scope, payload)
            .await
            .map_err(|e| e.to_string())
    }
}

/// A running voice channel. Dropping it does not leave: call [`VoiceLink::leave`]. (1-on-1
/// calls are [`crate::calls::Calls`].)
pub struct VoiceLink {
    pub session: Arc<VoiceSession>,
    client: RelayClient,
    channel: ChannelId,
    pump: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for VoiceLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceLink")
            .field("channel", &self.channel)
            .finish()
    }
}

/// Audio endpoints and settings for a session.
pub struct AudioIo {
    pub source: Box<dyn AudioSource>,
    pub sink: Box<dyn AudioSink>,
    pub controls: CaptureControls,
}

impl std::fmt::Debug for AudioIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioIo")
            .field("source", &self.source.name())
            .field("sink", &self.sink.name())
            .finish()
    }
}

fn relay_err(e: impl std::fmt::Display) -> VoiceError {
    VoiceError::Signalling(e.to_string())
}

impl VoiceLink {
    /// Joins voice channel `channel` and connects to everyone in it.
    pub async fn join_channel(
        client: RelayClient,
        channel: ChannelId,
        cfg: VoiceConfig,
        io: AudioIo,
    ) -> Result<(Self, mpsc::UnboundedReceiver<VoiceEvent>), VoiceError> {
        let me = client.user_id();
        let relay_events = client.subscribe();
        let initial = VoiceState {
            muted: io.controls.muted(),
            ..Default::default()
        };
        let (info, _perms) = client
            .channel_join(channel, initial)
            .await
            .map_err(relay_err)?;
        let others: Vec<UserId> = info
            .roster
            .iter()
            .map(|e| e.user.id)
            .filter(|u| *u != me)
            .collect();
        if let Err(e) = VoiceSession::check_capacity(others.len()) {
            let _ = client.channel_leave().await;
            return Err(e);
        }
        let signaller = Arc::new(RelaySignaller::new(
            client.clone(),
            SignalScope::Channel(channel),
        ));
        let (session, events) =
            VoiceSession::start(me, cfg, io.source, io.sink, io.controls, signaller)?;
        for u in &others {
            if let Err(e) = session.add_peer(*u).await {
                tracing::warn!(user = %u, "connecting: {e}");
            }
        }
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let pump = tokio::spawn(pump(
            client.clone(),
            session.clone(),
            channel,
            relay_events,
            events,
            out_tx,
        ));
        Ok((
            Self {
                session,
                client,
                channel,
                pump,
            },
            out_rx,
        ))
    }

    /// Our microphone level (after noise suppression, before the gate) and whether the gate
    /// (mute / push-to-talk / voice activity) is open, about 20 times a second: for the app's
    /// input meter. The newest value wins; reading it never holds up audio.
    pub fn input_level(&self) -> tokio::sync::watch::Receiver<hum_media::monitor::InputLevel> {
        self.session.controls().input_level()
    }

    pub fn channel(&self) -> ChannelId {
        self.channel
    }

    /// Leaves the channel, closes every connection and finishes the audio sink.
    pub async fn leave(self) {
        let _ = self.client.channel_leave().await;
        self.session.leave().await;
        self.pump.abort();
    }
}

/// Relay events -> session; session events -> relay (voice state) and the caller.
async fn pump(
    client: RelayClient,
    session: Arc<VoiceSession>,
    here: ChannelId,
    mut relay: broadcast::Receiver<ClientEvent>,
    mut local: mpsc::UnboundedReceiver<VoiceEvent>,
    out: mpsc::UnboundedSender<VoiceEvent>,
) {
    let me = session.me();
    let scope = SignalScope::Channel(here);
    // One sender task keeps voice updates in order (speaking on, then off).
    let (patch_tx, mut patch_rx) = mpsc::unbounded_channel::<VoiceStatePatch>();
    let publisher = client.clone();
    tokio::spawn(async move {
        while let Some(p) = patch_rx.recv().await {
            if let Err(e) = publisher.voice_update(p).await {
                tracing::debug!("voice_update: {e}");
            }
        }
    });
    loop {
        tokio::select! {
            ev = relay.recv() => {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("voice missed {n} relay events");
                        continue;
                    }
                    Err(_) => return,
                };
                let res = match ev {
                    ClientEvent::Relay(Event::Signal { from, scope: s, payload }) if s == scope => {
                        session.handle_signal(from, payload).await
                    }
                    ClientEvent::Relay(Event::RosterJoin { channel, entry, .. })
                        if channel == here && entry.user.id != me =>
                    {
                        session.add_peer(entry.user.id).await
                    }
                    ClientEvent::Relay(Event::RosterLeave { channel, user, reason, .. })
                        if channel == here =>
                    {
                        session.remove_peer(user, &format!("{reason:?}")).await;
                        Ok(())
                    }
                    ClientEvent::Rejoined { channel } if channel.id == here => {
                        // After a relay reconnect: (re)connect to whoever is there now.
                        for e in channel.roster.iter().filter(|e| e.user.id != me) {
                            let _ = session.add_peer(e.user.id).await;
                        }
                        Ok(())
                    }
                    _ => Ok(()),
                };
                if let Err(e) = res {
                    let _ = out.send(VoiceEvent::Error(e.to_string()));
                }
            }
            ev = local.recv() => {
                let Some(ev) = ev else { return };
                // Publish my speaking/mute/deafen to the channel's roster.
                let patch = match &ev {
                    VoiceEvent::Speaking { user: None, speaking } => Some(VoiceStatePatch {
                        speaking: Some(*speaking),
                        ..Default::default()
                    }),
                    VoiceEvent::LocalState { muted, deafened } => Some(VoiceStatePatch {
                        muted: Some(*muted),
                        deafened: Some(*deafened),
                        ..Default::default()
                    }),
                    _ => None,
                };
                if let Some(p) = patch {
                    let _ = patch_tx.send(p);
                }
                if out.send(ev).is_err() {
                    return;
                }
            }
        }
    }
}
