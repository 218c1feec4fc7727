//! The seam between a voice session and whatever carries its SDP/ICE (the relay in production,
//! a channel in tests).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hum_proto::UserId;
use hum_proto::signal::SignalPayload;
use tokio::sync::mpsc;

/// Sends negotiation messages to another participant.
#[async_trait::async_trait]
pub trait Signaller: Send + Sync + 'static {
    async fn send(&self, to: UserId, payload: SignalPayload) -> Result<(), String>;
}

/// An inbox of `(from, payload)`.
pub type Inbox = mpsc::UnboundedReceiver<(UserId, SignalPayload)>;

type Outbox = mpsc::UnboundedSender<(UserId, SignalPayload)>;

/// In-process signalling: every registered user gets an inbox of `(from, payload)`.
#[derive(Debug, Clone, Default)]
pub struct MemorySignalHub {
    inboxes: Arc<Mutex<BTreeMap<UserId, Outbox>>>,
}

impl MemorySignalHub {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `user`; returns its signaller and its inbox.
    pub fn register(
        &self,
        user: UserId,
    ) -> (
        Arc<MemorySignaller>,
        mpsc::UnboundedReceiver<(UserId, SignalPayload)>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut m) = self.inboxes.lock() {
            m.insert(user, tx);
        }
        (
            Arc::new(MemorySignaller {
                me: user,
                hub: self.clone(),
            }),
            rx,
        )
    }
}

#[derive(Debug)]
pub struct MemorySignaller {
    me: UserId,
    hub: MemorySignalHub,
}

#[async_trait::async_trait]
impl Signaller for MemorySignaller {
    async fn send(&self, to: UserId, payload: SignalPayload) -> Result<(), String> {
        let tx = self
            .hub
            .inboxes
            .lock()
            .map_err(|_| "hub poisoned".to_string())?
            .get(&to)
            .cloned()
            .ok_or_else(|| format!("{to} is not connected"))?;
        tx.send((self.me, payload))
            .map_err(|_| format!("{to} went away"))
    }
}
