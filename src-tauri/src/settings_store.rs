//! Where the app's settings live: a small key-value seam over tauri-plugin-store.
//!
//! The commands talk to [`Kv`], not to the plugin, so their logic is unit-tested with [`MemoryKv`]
//! while the real app persists through the plugin's JSON file (settings.json in the app data dir).
//! Values are stored as the owning crate's own JSON (hum-budget's versioned `BandwidthSettings`), so
//! migrations stay in that crate.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// Store keys; one per settings record.
pub mod keys {
    pub const RELAY_URL: &str = "relay_url";
    pub const BANDWIDTH: &str = "bandwidth";
    pub const VOICE: &str = "voice";
    pub const DESKTOP: &str = "desktop";
    pub const VIDEO: &str = "video";
    /// "Hide my IP" and end-to-end encryption (commands::privacy).
    pub const PRIVACY: &str = "privacy";
}

pub trait Kv: Send + Sync {
    fn get(&self, key: &str) -> Option<Value>;
    /// Sets and persists; an error means the value may not survive a restart.
    fn set(&self, key: &str, value: Value) -> Result<(), String>;
}

/// For tests.
#[derive(Default)]
pub struct MemoryKv(Mutex<BTreeMap<String, Value>>);

impl Kv for MemoryKv {
    fn get(&self, key: &str) -> Option<Value> {
        self.0.lock().ok()?.get(key).cloned()
    }
    fn set(&self, key: &str, value: Value) -> Result<(), String> {
        self.0
            .lock()
            .map_err(|e| e.to_string())?
            .insert(key.to_owned(), value);
        Ok(())
    }
}

/// The real store: the plugin's file, saved on every change (settings change rarely).
pub struct PluginKv<R: tauri::Runtime>(pub Arc<tauri_plugin_store::Store<R>>);

impl<R: tauri::Runtime> Kv for PluginKv<R> {
    fn get(&self, key: &str) -> Option<Value> {
        self.0.get(key)
    }
    fn set(&self, key: &str, value: Value) -> Result<(), String> {
        self.0.set(key, value);
        self.0.save().map_err(|e| e.to_string())
    }
}
