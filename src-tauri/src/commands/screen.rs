//! Screen sharing in a call or a voice channel (mesh): the picker's list, start and stop. A thin
//! adapter over hum-engine (`voice::share_choices`, `ShareTarget`, `VoiceSession::
//! start_screen_share`); the others' shares arrive as `<user hex>/screen` streams on the video
//! channel (`follow_call_video`, `channels::remote_stream_id`).

use hum_engine::voice::hum_media::video::ScreenProfile;
use hum_engine::voice::{ScreenShareStats, ShareTarget, share_choices};
use serde::{Deserialize, Serialize};
use specta::Type;
use tauri::State;

use crate::error::{CmdResult, CommandError, ErrorCode};
use crate::state::AppState;

/// One entry of the share picker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Type)]
pub struct ShareTargetView {
    /// What `screen_share_start` takes: `screen:ID`, `window:ID` or `pattern`.
    pub id: String,
    /// `screen`, `window` or `test`.
    pub kind: String,
    pub name: String,
    pub width: u32,
    pub height: u32,
}

/// What can be shared, and a sentence when screens and windows cannot (no display, Wayland).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Type)]
pub struct ShareTargetsView {
    pub targets: Vec<ShareTargetView>,
    pub unavailable: Option<String>,
}

/// The share's encoding (hum-media's screen profiles).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
pub enum ShareQuality {
    /// Fit in 1280x720, 30 fps, 1.5 Mbit/s.
    #[serde(rename = "720p30")]
    P720Fps30,
    /// Fit in 1920x1080, 30 fps, 3 Mbit/s.
    #[serde(rename = "1080p30")]
    P1080Fps30,
    /// Fit in 1920x1080, 60 fps, 5 Mbit/s (games).
    #[serde(rename = "1080p60")]
    P1080Fps60,
    /// Native size at 5 fps, sharp text.
    #[serde(rename = "text")]
    Text,
}

impl From<ShareQuality> for ScreenProfile {
    fn from(q: ShareQuality) -> Self {
        match q {
            ShareQuality::P720Fps30 => ScreenProfile::P720Fps30,
            ShareQuality::P1080Fps30 => ScreenProfile::P1080Fps30,
            ShareQuality::P1080Fps60 => ScreenProfile::P1080Fps60,
            ShareQuality::Text => ScreenProfile::Text,
        }
    }
}

/// My screen share now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Type)]
pub struct ScreenShareView {
    pub sharing: bool,
    /// Encoded size and the profile's frame rate (0 before the first frame).
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

impl From<ScreenShareStats> for ScreenShareView {
    fn from(s: ScreenShareStats) -> Self {
        Self {
            sharing: s.sharing,
            width: s.width,
            height: s.height,
            fps: s.fps,
        }
    }
}

fn not_sharing() -> ScreenShareView {
    ScreenShareView {
        sharing: false,
        width: 0,
        height: 0,
        fps: 0,
    }
}

/// Monitors and windows (X11), and the test pattern.
#[tauri::command]
#[specta::specta]
pub async fn screen_targets_list() -> CmdResult<ShareTargetsView> {
    let c = tauri::async_runtime::spawn_blocking(share_choices)
        .await
        .map_err(CommandError::internal)?;
    Ok(ShareTargetsView {
        targets: c
            .choices
            .into_iter()
            .map(|c| ShareTargetView {
                id: c.target,
                kind: c.kind.into(),
                name: c.name,
                width: c.width,
                height: c.height,
            })
            .collect(),
        unavailable: c.unavailable,
    })
}

/// Shares `target` (an id from `screen_targets_list`) in my call or voice channel, replacing a
/// running share.
#[tauri::command]
#[specta::specta]
pub async fn screen_share_start(
    state: State<'_, AppState>,
    target: String,
    quality: ShareQuality,
) -> CmdResult<ScreenShareView> {
    let session = state.session().ok_or_else(|| {
        CommandError::new(
            ErrorCode::NotFound,
            "Join a voice channel or call a friend to share your screen.",
        )
    })?;
    let target = ShareTarget::parse(&target).map_err(CommandError::invalid)?;
    // Opening a capture asks the X server: off the main thread.
    let share = tauri::async_runtime::spawn_blocking(move || target.open(quality.into()))
        .await
        .map_err(CommandError::internal)?
        .map_err(|e| {
            CommandError::new(ErrorCode::Device, format!("Cannot share this screen: {e}"))
        })?;
    session
        .start_screen_share(share)
        .map_err(|e| CommandError::new(ErrorCode::Device, e.to_string()))?;
    Ok(session.screen_share_stats().into())
}

/// Stops my screen share (nothing to stop is fine).
#[tauri::command]
#[specta::specta]
pub async fn screen_share_stop(state: State<'_, AppState>) -> CmdResult<ScreenShareView> {
    if let Some(session) = state.session() {
        // Joins the capture thread (at most one frame's read): off the main thread.
        tauri::async_runtime::spawn_blocking(move || session.stop_screen_share())
            .await
            .map_err(CommandError::internal)?;
    }
    Ok(not_sharing())
}

/// Whether I share a screen now (a share ends by itself when its window closes).
#[tauri::command]
#[specta::specta]
pub fn screen_share_get(state: State<'_, AppState>) -> ScreenShareView {
    state
        .session()
        .map_or_else(not_sharing, |s| s.screen_share_stats().into())
}
