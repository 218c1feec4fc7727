//! Voice preferences: push-to-talk vs voice activity, the global PTT hotkey, sensitivity, noise
//! suppression, devices and per-user volume.
//!
//! ADAPTER: these are stored by the app until hum-engine's voice session takes them as its
//! configuration; the engine then receives them on join and on every change.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use specta::Type;
use tauri::{AppHandle, Manager, State};
use tauri_plugin_global_shortcut::{GlobalShortcutExt, Shortcut, ShortcutState};
use tauri_specta::Event;

use crate::error::{CmdResult, CommandError, ErrorCode};
use crate::settings_store::keys;
use crate::state::AppState;

/// Voice-activity threshold range (dBFS) the slider offers, hum-media's VAD range: -60 picks up
/// quiet speech, -30 needs a loud voice.
pub const SENSITIVITY_RANGE_DBFS: (i16, i16) = (-60, -30);
/// Per-user volume range, percent.
pub const MAX_USER_VOLUME_PERCENT: u16 = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
#[serde(rename_all = "snake_case")]
pub enum TransmitMode {
    VoiceActivity,
    PushToTalk,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Type)]
pub struct VoiceSettings {
    pub transmit_mode: TransmitMode,
    /// Global hotkey, e.g. `F8` or `Ctrl+Shift+Space`; active while another app (a game) has focus.
    pub ptt_shortcut: String,
    /// Voice activity threshold, whole dBFS (an integer: a float could be NaN, which JSON can't carry).
    pub sensitivity_dbfs: i16,
    pub noise_suppression: bool,
    /// `None` = the system default device.
    pub input_device: Option<String>,
    pub output_device: Option<String>,
    /// Public key (hex) to volume percent (0-200); absent = 100.
    pub user_volumes: BTreeMap<String, u16>,
}

impl Default for VoiceSettings {
    fn default() -> Self {
        Self {
            transmit_mode: TransmitMode::VoiceActivity,
            ptt_shortcut: "F8".into(),
            sensitivity_dbfs: -45,
            noise_suppression: true,
            input_device: None,
            output_device: None,
            user_volumes: BTreeMap::new(),
        }
    }
}

/// Push-to-talk went down or up (the global hotkey).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type, Event)]
pub struct PttChanged {
    pub transmitting: bool,
}

pub fn parse_shortcut(s: &str) -> CmdResult<Shortcut> {
    Shortcut::from_str(s.trim()).map_err(|_| {
        CommandError::invalid(format!(
            "\"{s}\" is not a key combination. Use something like F8, Ctrl+Shift+Space or Alt+V."
        ))
    })
}

pub fn validate(v: &VoiceSettings) -> CmdResult<()> {
    let (lo, hi) = SENSITIVITY_RANGE_DBFS;
    if !(lo..=hi).contains(&v.sensitivity_dbfs) {
        return Err(CommandError::invalid(format!(
            "Sensitivity must be between {lo} and {hi} dB."
        )));
    }
    if v.transmit_mode == TransmitMode::PushToTalk || !v.ptt_shortcut.trim().is_empty() {
        parse_shortcut(&v.ptt_shortcut)?;
    }
    if let Some((who, pct)) = v
        .user_volumes
        .iter()
        .find(|(_, p)| **p > MAX_USER_VOLUME_PERCENT)
    {
        return Err(CommandError::invalid(format!(
            "Volume for {who} is {pct}%; the maximum is {MAX_USER_VOLUME_PERCENT}%."
        )));
    }
    Ok(())
}

pub fn load(state: &AppState) -> VoiceSettings {
    state
        .kv
        .get(keys::VOICE)
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

pub fn save(state: &AppState, v: &VoiceSettings) -> CmdResult<()> {
    validate(v)?;
    let value = serde_json::to_value(v).map_err(CommandError::internal)?;
    state
        .kv
        .set(keys::VOICE, value)
        .map_err(|e| CommandError::storage("Could not save the voice settings", e))
}

/// Registers the PTT hotkey if push-to-talk is on (and unregisters every other one).
pub fn apply_shortcut<R: tauri::Runtime>(app: &AppHandle<R>, v: &VoiceSettings) -> CmdResult<()> {
    let gs = app.global_shortcut();
    gs.unregister_all().map_err(|e| {
        CommandError::new(
            ErrorCode::Internal,
            format!("Could not release the hotkey: {e}"),
        )
    })?;
    if v.transmit_mode != TransmitMode::PushToTalk {
        return Ok(());
    }
    let shortcut = parse_shortcut(&v.ptt_shortcut)?;
    gs.on_shortcut(shortcut, |app, _shortcut, event| {
        let transmitting = event.state == ShortcutState::Pressed;
        if let Some(session) = app.state::<AppState>().session() {
            session.controls().set_ptt_pressed(transmitting);
        }
        if let Err(e) = (PttChanged { transmitting }).emit(app) {
            tracing::warn!("push-to-talk event not delivered: {e}");
        }
    })
    .map_err(|e| {
        CommandError::invalid(format!(
            "Could not register {} as the push-to-talk key (another app may own it): {e}",
            v.ptt_shortcut
        ))
    })
}

#[tauri::command]
#[specta::specta]
pub fn voice_settings_get(state: State<'_, AppState>) -> VoiceSettings {
    load(&state)
}

/// Validates, registers the PTT hotkey when push-to-talk is on, and saves.
#[tauri::command]
#[specta::specta]
pub fn voice_settings_set(
    app: AppHandle,
    state: State<'_, AppState>,
    settings: VoiceSettings,
) -> CmdResult<VoiceSettings> {
    validate(&settings)?;
    apply_shortcut(&app, &settings)?;
    save(&state, &settings)?;
    if let Some(m) = state
        .monitor
        .lock()
        .map_err(CommandError::internal)?
        .as_ref()
    {
        // The settings screen's meter moves its threshold and gate with the slider.
        super::devices::apply_controls(m.controls(), &settings, false);
    }
    if let Some(session) = state.session() {
        // A call in progress picks up the new mode, sensitivity, suppression and volumes now.
        let muted = session.controls().muted();
        super::devices::apply_controls(session.controls(), &settings, muted);
        for (user, pct) in &settings.user_volumes {
            if let Ok(u) = user.parse() {
                session.set_volume(u, f32::from(*pct) / 100.0);
            }
        }
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings_store::MemoryKv;

    #[test]
    fn defaults_then_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = AppState::load(dir.path().into(), Box::new(MemoryKv::default())).expect("load");
        assert_eq!(load(&s), VoiceSettings::default());
        let mut v = VoiceSettings {
            transmit_mode: TransmitMode::PushToTalk,
            ptt_shortcut: "Ctrl+Shift+Space".into(),
            ..VoiceSettings::default()
        };
        v.user_volumes.insert("ab".repeat(32), 150);
        save(&s, &v).expect("save");
        assert_eq!(load(&s), v);
    }

    #[test]
    fn rejects_what_cannot_work() {
        let bad_key = VoiceSettings {
            transmit_mode: TransmitMode::PushToTalk,
            ptt_shortcut: "Hyper+Banana".into(),
            ..VoiceSettings::default()
        };
        let err = validate(&bad_key).expect_err("bad key");
        assert!(
            err.message.contains("not a key combination"),
            "{}",
            err.message
        );
        let loud = VoiceSettings {
            sensitivity_dbfs: 3,
            ..VoiceSettings::default()
        };
        assert_eq!(
            validate(&loud).expect_err("range").code,
            ErrorCode::InvalidInput
        );
        let deaf = VoiceSettings {
            sensitivity_dbfs: -71,
            ..VoiceSettings::default()
        };
        assert!(validate(&deaf).is_err());
        let mut vol = VoiceSettings::default();
        vol.user_volumes.insert("x".into(), 201);
        assert!(validate(&vol).is_err());
        assert!(parse_shortcut("F8").is_ok());
    }
}
