//! High-rate streams to the UI over `tauri::ipc::Channel` (not events: Tauri's events are JSON
//! broadcasts meant for rare state changes, a level meter at 20-50 Hz is not one).
//!
//! A hub keeps every subscribed channel and drops the ones whose webview went away (send fails).

use std::sync::Mutex;

use serde::Serialize;
use specta::Type;
use tauri::ipc::Channel;

/// One input level reading, for the sensitivity meter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Type)]
pub struct LevelSample {
    /// Loudness of the last frame, whole dBFS (-100 = silence, 0 = full scale).
    pub rms_dbfs: i16,
    /// Whether voice activity detection counts this frame as speech.
    pub speaking: bool,
}

/// Subscribers of one stream.
pub struct Hub<T: Serialize + Clone> {
    subscribers: Mutex<Vec<Channel<T>>>,
}

impl<T: Serialize + Clone> Default for Hub<T> {
    fn default() -> Self {
        Self {
            subscribers: Mutex::new(Vec::new()),
        }
    }
}

impl<T: Serialize + Clone + tauri::ipc::IpcResponse> Hub<T> {
    pub fn subscribe(&self, channel: Channel<T>) {
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.push(channel);
        }
    }

    /// Sends to every live subscriber; returns how many got it.
    pub fn publish(&self, value: &T) -> usize {
        let Ok(mut subs) = self.subscribers.lock() else {
            return 0;
        };
        subs.retain(|ch| ch.send(value.clone()).is_ok());
        subs.len()
    }

    pub fn len(&self) -> usize {
        self.subscribers.lock().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub type LevelHub = Hub<LevelSample>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn publishes_to_every_subscriber() {
        let hub = LevelHub::default();
        let got = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let got = got.clone();
            hub.subscribe(Channel::new(move |_body| {
                got.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }));
        }
        let sent = hub.publish(&LevelSample {
            rms_dbfs: -20,
            speaking: true,
        });
        assert_eq!(sent, 2);
        assert_eq!(got.load(Ordering::SeqCst), 2);
    }
}
