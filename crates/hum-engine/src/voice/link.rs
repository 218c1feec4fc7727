//! Voice over the relay: a [`Signaller`] that forwards through [`RelayClient`], and the glue
//! that turns relay events (roster changes, call progress, forwarded signals) into session
//! calls, and session events (speaking, mute, deafen) into `voice_update`s every roster shows.

use std::sync::Arc;
use std::time::Duration;

use hum_media::processing::CaptureControls;
use hum_media::{AudioSink, AudioSource};
use hum_proto::signal::{Event, SignalPayload, SignalScope, VoiceState, VoiceStatePatch};
use hum_proto::{CallId, ChannelId, UserId};
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

#[async_trait::async_trait]
impl Signaller for RelaySignaller {
    async fn send(&self, to: UserId, payload: SignalPayload) -> Result<(), String> {
        self.client
            .signal(to, self.scope, payload)
            .await
            .map_err(|e| e.to_string())
    }
}

/// A running voice channel or call. Dropping it does not leave: call [`VoiceLink::leave`].
pub struct VoiceLink {
    pub session: Arc<VoiceSession>,
    client: RelayClient,
    scope: SignalScope,
    pump: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for VoiceLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceLink")
            .field("scope", &self.scope)
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
        let scope = SignalScope::Channel(channel);
        let signaller = Arc::new(RelaySignaller {
            client: client.clone(),
            scope,
        });
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
            scope,
            relay_events,
            events,
            out_tx,
        ));
        Ok((
            Self {
                session,
                client,
                scope,
                pump,
            },
            out_rx,
        ))
    }

    /// Calls `friend` and waits (up to `ring`) for them to accept. The caller offers.
    pub async fn call(
        client: RelayClient,
        friend: UserId,
        ring: Duration,
        cfg: VoiceConfig,
        io: AudioIo,
    ) -> Result<(Self, mpsc::UnboundedReceiver<VoiceEvent>), VoiceError> {
        let mut relay_events = client.subscribe();
        let call = client.call_invite(friend).await.map_err(relay_err)?;
        let accepted = tokio::time::timeout(ring, async {
            loop {
                match relay_events.recv().await {
                    Ok(ClientEvent::Relay(Event::CallAccepted { call: c, .. })) if c == call => {
                        return Ok(());
                    }
                    Ok(ClientEvent::Relay(Event::CallEnded { call: c, reason })) if c == call => {
                        return Err(VoiceError::Signalling(format!("call ended: {reason:?}")));
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return Err(VoiceError::Signalling("relay connection closed".into())),
                }
            }
        })
        .await;
        match accepted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                let _ = client.call_cancel(call).await;
                return Err(VoiceError::Signalling(format!(
                    "{friend} did not answer within {ring:?}"
                )));
            }
        }
        Self::start_call(client, call, friend, true, relay_events, cfg, io).await
    }

    /// Waits (up to `wait`) for an incoming call (from `from`, if given), accepts it and
    /// connects. The callee answers the caller's offer.
    pub async fn answer(
        client: RelayClient,
        from: Option<UserId>,
        wait: Duration,
        cfg: VoiceConfig,
        io: AudioIo,
    ) -> Result<(Self, mpsc::UnboundedReceiver<VoiceEvent>), VoiceError> {
        let mut relay_events = client.subscribe();
        let incoming = tokio::time::timeout(wait, async {
            loop {
                match relay_events.recv().await {
                    Ok(ClientEvent::Relay(Event::CallIncoming { call, from: caller }))
                        if from.is_none_or(|f| f == caller.id) =>
                    {
                        return Some((call, caller.id));
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return None,
                }
            }
        })
        .await;
        let Ok(Some((call, caller))) = incoming else {
            return Err(VoiceError::Signalling(format!(
                "no incoming call within {wait:?}"
            )));
        };
        client.call_accept(call).await.map_err(relay_err)?;
        Self::start_call(client, call, caller, false, relay_events, cfg, io).await
    }

    async fn start_call(
        client: RelayClient,
        call: CallId,
        peer: UserId,
        we_offer: bool,
        relay_events: broadcast::Receiver<ClientEvent>,
        cfg: VoiceConfig,
        io: AudioIo,
    ) -> Result<(Self, mpsc::UnboundedReceiver<VoiceEvent>), VoiceError> {
        let scope = SignalScope::Call(call);
        let signaller = Arc::new(RelaySignaller {
            client: client.clone(),
            scope,
        });
        let (session, events) = VoiceSession::start(
            client.user_id(),
            cfg,
            io.source,
            io.sink,
            io.controls,
            signaller,
        )?;
        // Start pumping before offering so the answer is not missed.
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let pump = tokio::spawn(pump(
            client.clone(),
            session.clone(),
            scope,
            relay_events,
            events,
            out_tx,
        ));
        session.add_peer_as(peer, we_offer).await?;
        Ok((
            Self {
                session,
                client,
                scope,
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

    /// Hangs up / leaves the channel, closes every connection and finishes the audio sink.
    pub async fn leave(self) {
        match self.scope {
            SignalScope::Channel(_) => {
                let _ = self.client.channel_leave().await;
            }
            SignalScope::Call(call) => {
                let _ = self.client.call_hangup(call).await;
            }
        }
        self.session.leave().await;
        self.pump.abort();
    }
}

/// Relay events -> session; session events -> relay (voice state) and the caller.
async fn pump(
    client: RelayClient,
    session: Arc<VoiceSession>,
    scope: SignalScope,
    mut relay: broadcast::Receiver<ClientEvent>,
    mut local: mpsc::UnboundedReceiver<VoiceEvent>,
    out: mpsc::UnboundedSender<VoiceEvent>,
) {
    let me = session.me();
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
                let res = match (ev, scope) {
                    (ClientEvent::Relay(Event::Signal { from, scope: s, payload }), _) if s == scope => {
                        session.handle_signal(from, payload).await
                    }
                    (ClientEvent::Relay(Event::RosterJoin { channel, entry, .. }), SignalScope::Channel(c))
                        if channel == c && entry.user.id != me =>
                    {
                        session.add_peer(entry.user.id).await
                    }
                    (ClientEvent::Relay(Event::RosterLeave { channel, user, reason, .. }), SignalScope::Channel(c))
                        if channel == c =>
                    {
                        session.remove_peer(user, &format!("{reason:?}")).await;
                        Ok(())
                    }
                    (ClientEvent::Rejoined { channel }, SignalScope::Channel(c)) if channel.id == c => {
                        // After a relay reconnect: (re)connect to whoever is there now.
                        for e in channel.roster.iter().filter(|e| e.user.id != me) {
                            let _ = session.add_peer(e.user.id).await;
                        }
                        Ok(())
                    }
                    (ClientEvent::Relay(Event::CallEnded { call, reason }), SignalScope::Call(c)) if call == c => {
                        for u in session.peers().await {
                            session.remove_peer(u, &format!("call ended: {reason:?}")).await;
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
                // Only channels have rosters to publish to.
                if matches!(scope, SignalScope::Channel(_)) {
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
                }
                if out.send(ev).is_err() {
                    return;
                }
            }
        }
    }
}
