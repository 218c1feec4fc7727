//! Subscriptions to the high-rate streams (see `crate::channels`): the UI opens one
//! `ipc::Channel` per stream at start and keeps it for the app's life.

use tauri::State;
use tauri::ipc::Channel;

use crate::channels::{LevelSample, PeerStatsView};
use crate::state::AppState;

/// Input levels (~20 a second) while a call runs or the settings screen monitors the microphone.
#[tauri::command]
#[specta::specta]
pub fn levels_subscribe(state: State<'_, AppState>, on_level: Channel<LevelSample>) {
    state.levels.subscribe(on_level);
}

/// Per-peer link statistics (RTT, loss, jitter) every 2 s while a call or channel runs.
#[tauri::command]
#[specta::specta]
pub fn stats_subscribe(state: State<'_, AppState>, on_stats: Channel<PeerStatsView>) {
    state.stats.subscribe(on_stats);
}
