//! End-to-end encryption of a voice channel's media over the relay: runs a
//! [`hum_e2ee::KeyAgent`] on the relay's events (who joins and leaves the channel, sealed keys
//! from the others) and sends the sealed keys it makes as `e2ee_key` signals. The media side
//! is the [`FrameTransform`] the SFU connection applies to every frame
//! ([`crate::voice::VoiceConfig::frame_transform`]). Design and threat model: docs/e2ee.md.
//!
//! Start it *before* joining the channel: the keys of those already there arrive right after
//! the join, and a broadcast receiver only sees what comes after it subscribed.

use std::sync::Arc;

use hum_e2ee::{FrameTransform, KeyAgent, KeyRing, LocalKeys, Outgoing, SealedKey};
use hum_proto::signal::{Event, SignalPayload, SignalScope};
use hum_proto::{ChannelId, UserId};
use rand::SeedableRng;
use tokio::sync::{broadcast, mpsc};

use crate::relay::{ClientEvent, RelayClient};

pub use hum_e2ee::{E2eeError, MediaKind, safety_number};

/// What the key exchange reports, for the UI and the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum E2eeEvent {
    /// `from`'s key of `epoch` arrived and opened: their media decrypts.
    KeyReceived { from: UserId, epoch: u32 },
    /// We encrypt with a new key (someone left) from now on.
    Rotated { epoch: u32 },
    /// A key that claimed to come from `from` was refused (altered, not for us, bad signature).
    KeyRefused { from: UserId, reason: String },
}

/// The key exchange of one voice channel. Dropping it stops the exchange (the transform keeps
/// the keys it has).
pub struct E2eeChannel {
    ring: Arc<KeyRing>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for E2eeChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2eeChannel")
            .field("ring", &self.ring)
            .finish()
    }
}

impl Drop for E2eeChannel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn payload(k: &SealedKey) -> SignalPayload {
    SignalPayload::E2eeKey {
        epoch: k.epoch,
        salt: k.salt,
        sealed: Box::new(k.sealed),
        signature: Box::new(k.signature),
    }
}

impl E2eeChannel {
    /// Starts exchanging keys for `channel` as `keys` (our identity, `Identity::e2ee_keys`).
    pub fn start(
        client: RelayClient,
        keys: LocalKeys,
        channel: ChannelId,
    ) -> Result<(Self, mpsc::UnboundedReceiver<E2eeEvent>), E2eeError> {
        let agent = KeyAgent::new(keys, channel, rand::rngs::StdRng::from_entropy())?;
        let ring = agent.ring();
        let events = client.subscribe();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(agent, client, channel, events, tx));
        Ok((Self { ring, task }, rx))
    }

    /// The transform for [`crate::voice::VoiceConfig::frame_transform`].
    pub fn transform(&self) -> Arc<dyn FrameTransform> {
        self.ring.clone()
    }

    /// Received frames that did not decrypt so far (no key, wrong key, altered, plaintext,
    /// replayed).
    pub fn refused_frames(&self) -> u64 {
        self.ring.refused()
    }

    /// Received frames that decrypted so far.
    pub fn decrypted_frames(&self) -> u64 {
        self.ring.opened()
    }

    /// The epoch of the key we encrypt with now.
    pub fn sending_epoch(&self) -> u32 {
        self.ring.sending_epoch()
    }

    /// Every member whose key we hold, with the newest epoch of it.
    pub fn keys_held(&self) -> Vec<(UserId, u32)> {
        self.ring
            .senders()
            .into_iter()
            .filter_map(|u| Some((u, self.ring.epochs_of(&u).into_iter().max()?)))
            .collect()
    }
}

/// The SFU connection's receive hook: `payload` (one Opus frame) from `from`, decrypted when
/// E2EE is on; `None` (dropped) when it does not decrypt.
pub(crate) fn open_audio(
    transform: Option<&dyn FrameTransform>,
    from: &UserId,
    payload: &[u8],
) -> Option<Vec<u8>> {
    match transform {
        None => Some(payload.to_vec()),
        Some(t) => match t.decrypt(from, MediaKind::Audio, payload) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::trace!("dropped: {e}");
                None
            }
        },
    }
}

/// The SFU connection's send hook: our encoded Opus frame, encrypted when E2EE is on.
pub(crate) fn seal_audio(
    transform: Option<&dyn FrameTransform>,
    frame: bytes::Bytes,
) -> Option<bytes::Bytes> {
    match transform {
        None => Some(frame),
        Some(t) => match t.encrypt(MediaKind::Audio, &frame) {
            Ok(c) => Some(c.into()),
            Err(e) => {
                tracing::warn!("not sent: {e}");
                None
            }
        },
    }
}

/// The SFU connection's video receive hook: one VP8 frame from `from` as the assembler put it
/// together, decrypted when E2EE is on (its payload header stayed in clear for the SFU);
/// `None` (dropped, as if lost) when it does not decrypt.
pub(crate) fn open_video(
    transform: Option<&dyn FrameTransform>,
    from: &UserId,
    frame: Vec<u8>,
) -> Option<Vec<u8>> {
    match transform {
        None => Some(frame),
        Some(t) => match t.decrypt(from, MediaKind::Vp8, &frame) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::trace!("video frame dropped: {e}");
                None
            }
        },
    }
}

/// The SFU connection's video send hook: one encoded VP8 frame of a simulcast layer, before the
/// packetiser, encrypted when E2EE is on (the payload header stays in clear, authenticated).
pub(crate) fn seal_video(
    transform: Option<&dyn FrameTransform>,
    frame: &[u8],
) -> Option<bytes::Bytes> {
    match transform {
        None => Some(bytes::Bytes::copy_from_slice(frame)),
        Some(t) => match t.encrypt(MediaKind::Vp8, frame) {
            Ok(c) => Some(c.into()),
            Err(e) => {
                tracing::warn!("video frame not sent: {e}");
                None
            }
        },
    }
}

async fn send_all(client: &RelayClient, channel: ChannelId, out: Vec<Outgoing>) {
    for o in out {
        if let Err(e) = client
            .signal(o.to, SignalScope::Channel(channel), payload(&o.key))
            .await
        {
            // They left meanwhile (the relay refuses signals to non-members): nothing to do.
            tracing::debug!(to = %o.to, "e2ee key not delivered: {e}");
        }
    }
}

async fn run(
    mut agent: KeyAgent,
    client: RelayClient,
    channel: ChannelId,
    mut events: broadcast::Receiver<ClientEvent>,
    tx: mpsc::UnboundedSender<E2eeEvent>,
) {
    loop {
        let timeout = agent.poll_timeout();
        let sleep = async {
            match timeout {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let ev = tokio::select! {
            ev = events.recv() => ev,
            () = sleep => {
                let before = agent.epoch();
                agent.handle_timeout(std::time::Instant::now());
                if agent.epoch() != before {
                    let _ = tx.send(E2eeEvent::Rotated { epoch: agent.epoch() });
                }
                continue;
            }
        };
        let ev = match ev {
            Ok(ClientEvent::Relay(ev)) => ev,
            Ok(ClientEvent::Rejoined { channel: info }) if info.id == channel => {
                let before = agent.epoch();
                let out = agent.rejoined(
                    info.roster.iter().map(|e| e.user.id),
                    std::time::Instant::now(),
                );
                // Our link dropped and we are back: the others dropped our keys when they saw
                // us leave, so they get them again (and send theirs: `KeyReceived`).
                tracing::debug!(
                    members = agent.members().len(),
                    "e2ee: re-joined, keys re-sent"
                );
                if agent.epoch() != before {
                    let _ = tx.send(E2eeEvent::Rotated {
                        epoch: agent.epoch(),
                    });
                }
                send_all(&client, channel, out).await;
                continue;
            }
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                // A missed roster_leave would skip a rotation: say so loudly.
                tracing::warn!("e2ee: {n} relay events missed");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let out = match ev {
            Event::RosterJoin {
                channel: c, entry, ..
            } if c == channel => agent.member_joined(entry.user.id),
            Event::RosterLeave {
                channel: c, user, ..
            } if c == channel => {
                let before = agent.epoch();
                let out = agent.member_left(&user, std::time::Instant::now());
                if agent.epoch() != before {
                    let _ = tx.send(E2eeEvent::Rotated {
                        epoch: agent.epoch(),
                    });
                }
                out
            }
            Event::Signal {
                from,
                scope: SignalScope::Channel(c),
                payload:
                    SignalPayload::E2eeKey {
                        epoch,
                        salt,
                        sealed,
                        signature,
                    },
            } if c == channel => {
                let k = SealedKey {
                    epoch,
                    salt,
                    sealed: *sealed,
                    signature: *signature,
                };
                match agent.receive(from, &k) {
                    Ok(out) => {
                        tracing::debug!(%from, epoch, "e2ee key received");
                        let _ = tx.send(E2eeEvent::KeyReceived { from, epoch });
                        out
                    }
                    Err(e) => {
                        tracing::warn!("e2ee: {e}");
                        let _ = tx.send(E2eeEvent::KeyRefused {
                            from,
                            reason: e.to_string(),
                        });
                        Vec::new()
                    }
                }
            }
            _ => continue,
        };
        send_all(&client, channel, out).await;
    }
}
