//! Audio devices (cpal, through hum-media) and how a call's audio is opened.
//!
//! A missing device is not fatal: as the `hum` CLI does, the app then sends silence or discards
//! what it hears, and says so (`AudioNotice`), so a laptop with a broken mic can still listen.

use hum_engine::voice::hum_media::device::{CpalSink, CpalSource, list_devices};
use hum_engine::voice::hum_media::pacer::Paced;
use hum_engine::voice::hum_media::processing::{CaptureControls, VoiceMode};
use hum_engine::voice::hum_media::synth::{NullSink, SilenceSource};
use hum_engine::voice::hum_media::{AudioSink, AudioSource, FrameDuration, MediaError};
use hum_engine::voice::link::AudioIo;
use hum_engine::voice::{InputMonitor, play_test_sound_on_device};
use serde::Serialize;
use specta::Type;
use tauri::State;

use super::voice::{SENSITIVITY_RANGE_DBFS, TransmitMode, VoiceSettings};
use crate::error::{CmdResult, CommandError, ErrorCode};
use crate::state::AppState;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Type)]
pub struct DeviceView {
    pub id: String,
    pub name: String,
    pub input: bool,
    pub output: bool,
    pub default_input: bool,
    pub default_output: bool,
}

/// The host's audio devices; an empty list means none (the UI says so). Enumerating probes every
/// ALSA card and can take a while, so it runs off the main thread (a sync command would block the
/// window while it runs).
#[tauri::command]
#[specta::specta]
pub async fn devices_list() -> CmdResult<Vec<DeviceView>> {
    let devices = tauri::async_runtime::spawn_blocking(list_devices)
        .await
        .map_err(CommandError::internal)?
        .map_err(|e| CommandError::new(ErrorCode::Device, e.to_string()))?;
    Ok(devices
        .into_iter()
        .map(|d| DeviceView {
            id: d.id,
            name: d.name,
            input: d.input,
            output: d.output,
            default_input: d.default_input,
            default_output: d.default_output,
        })
        .collect())
}

/// A device error in words: which device, what is wrong, what to do.
pub fn device_error(kind: &str, device: Option<&str>, e: &MediaError) -> CommandError {
    let which = device.map_or_else(
        || format!("the default {kind}"),
        |d| format!("{kind} '{d}'"),
    );
    let message = match e {
        MediaError::NoDevice { .. } if device.is_none() => format!(
            "No {kind} found. Plug one in (or check that the sound system runs), then try again."
        ),
        MediaError::DeviceUnavailable { .. } if device.is_none() => format!(
            "No {kind} found ({e}). Plug one in (or check that the sound system runs), then try again."
        ),
        MediaError::NoDevice { .. } => format!(
            "The {kind} '{}' is not connected. Plug it in or pick another one above.",
            device.unwrap_or_default()
        ),
        other => format!("Could not use {which}: {other}."),
    };
    CommandError::new(ErrorCode::Device, message)
}

/// Plays a one-second chime on an output device (`None` = the system default).
#[tauri::command]
#[specta::specta]
pub async fn device_test_sound(device: Option<String>) -> CmdResult<()> {
    let dev = device.clone();
    tauri::async_runtime::spawn_blocking(move || play_test_sound_on_device(dev.as_deref()))
        .await
        .map_err(CommandError::internal)?
        .map_err(|e| device_error("speaker", device.as_deref(), &e))
}

/// Stops the settings screen's microphone monitor, if one runs.
pub fn stop_monitor(state: &AppState) {
    let monitor = state.monitor.lock().ok().and_then(|mut m| m.take());
    if let Some(m) = monitor {
        m.stop();
        if state.session().is_none() {
            state.level_follower.stop(&state.levels);
        }
    }
}

/// Starts the live input meter outside a call: monitors the chosen microphone with the voice
/// settings (sensitivity, noise suppression) and streams its level to `levels_subscribe`'s
/// channel. In a call the call's own capture already feeds the meter: nothing to start.
#[tauri::command]
#[specta::specta]
pub async fn input_monitor_start(state: State<'_, AppState>) -> CmdResult<()> {
    if state.session().is_some() {
        return Ok(());
    }
    stop_monitor(&state);
    let settings = super::voice::load(&state);
    let controls = CaptureControls::new();
    apply_controls(&controls, &settings, false);
    let device = settings.input_device.clone();
    let monitor = tauri::async_runtime::spawn_blocking(move || {
        InputMonitor::open_device(device.as_deref(), controls, FrameDuration::Ms20)
    })
    .await
    .map_err(CommandError::internal)?
    .map_err(|e| device_error("microphone", settings.input_device.as_deref(), &e))?;
    state
        .level_follower
        .follow(state.levels.clone(), monitor.levels());
    *state.monitor.lock().map_err(CommandError::internal)? = Some(monitor);
    Ok(())
}

#[tauri::command]
#[specta::specta]
pub fn input_monitor_stop(state: State<'_, AppState>) {
    stop_monitor(&state);
}

/// hum-media's VAD sensitivity (0..=1, -30..-60 dBFS) for the slider's dBFS threshold.
pub fn vad_sensitivity(dbfs: i16) -> f32 {
    let (lo, hi) = SENSITIVITY_RANGE_DBFS;
    let clamped = dbfs.clamp(lo, hi);
    ((hi - clamped) as f32 / (hi - lo) as f32).clamp(0.0, 1.0)
}

/// Applies the user's voice settings to the capture controls.
pub fn apply_controls(controls: &CaptureControls, v: &VoiceSettings, muted: bool) {
    controls.set_mode(match v.transmit_mode {
        TransmitMode::VoiceActivity => VoiceMode::VoiceActivity,
        TransmitMode::PushToTalk => VoiceMode::PushToTalk,
    });
    controls.set_vad_sensitivity(vad_sensitivity(v.sensitivity_dbfs));
    controls.set_noise_suppression(v.noise_suppression);
    controls.set_muted(muted);
}

/// What to add to "No microphone found" for a default device that failed to open: nothing when
/// the system has no such device (the sentence says it all), the system's reason when it has one
/// it cannot open (without repeating "audio device ... is not available"), the error otherwise.
fn missing_detail(e: &MediaError) -> String {
    match e {
        MediaError::NoDevice { .. } => String::new(),
        MediaError::DeviceUnavailable { reason, .. } => {
            format!(" ({})", reason.trim().trim_end_matches('.'))
        }
        other => format!(" ({other})"),
    }
}

/// Opens the chosen (or default) devices. Returns the audio and notices for what was missing.
pub fn open_audio(v: &VoiceSettings, muted: bool) -> CmdResult<(AudioIo, Vec<String>)> {
    let mut notices = Vec::new();
    let source: Box<dyn AudioSource> = match CpalSource::open(v.input_device.as_deref()) {
        Ok(s) => Box::new(s),
        Err(e) if v.input_device.is_none() => {
            notices.push(format!(
                "No microphone found{}. Others will hear silence.",
                missing_detail(&e)
            ));
            Box::new(Paced::new(SilenceSource::new()))
        }
        Err(e) => {
            return Err(CommandError::new(
                ErrorCode::Device,
                format!(
                    "The microphone you chose cannot be opened ({e}). Pick another in Settings."
                ),
            ));
        }
    };
    let sink: Box<dyn AudioSink> = match CpalSink::open(v.output_device.as_deref()) {
        Ok(s) => Box::new(s),
        Err(e) if v.output_device.is_none() => {
            notices.push(format!(
                "No speaker found{}. You will not hear the others.",
                missing_detail(&e)
            ));
            Box::new(Paced::new(NullSink))
        }
        Err(e) => {
            return Err(CommandError::new(
                ErrorCode::Device,
                format!("The speaker you chose cannot be opened ({e}). Pick another in Settings."),
            ));
        }
    };
    let controls = CaptureControls::new();
    apply_controls(&controls, v, muted);
    Ok((
        AudioIo {
            source,
            sink,
            controls,
        },
        notices,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slider_maps_onto_hum_media_sensitivity() {
        assert_eq!(vad_sensitivity(-30), 0.0);
        assert_eq!(vad_sensitivity(-60), 1.0);
        assert!((vad_sensitivity(-45) - 0.5).abs() < 1e-6);
        assert_eq!(vad_sensitivity(0), 0.0);
    }

    #[test]
    fn missing_devices_are_said_plainly() {
        let none = MediaError::NoDevice {
            direction: "output",
            detail: String::new(),
        };
        let e = device_error("speaker", None, &none);
        assert_eq!(e.code, ErrorCode::Device);
        assert!(e.message.starts_with("No speaker found."), "{}", e.message);
        let e = device_error("microphone", Some("USB Mic"), &none);
        assert_eq!(
            e.message,
            "The microphone 'USB Mic' is not connected. Plug it in or pick another one above."
        );
        let busy = MediaError::DeviceUnavailable {
            name: "hw:1".into(),
            reason: "busy".into(),
        };
        let e = device_error("speaker", Some("hw:1"), &busy);
        assert!(
            e.message.starts_with("Could not use speaker 'hw:1'"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_missing_default_device_is_one_plain_sentence() {
        let none = MediaError::NoDevice {
            direction: "input",
            detail: String::new(),
        };
        assert_eq!(missing_detail(&none), "");
        let gone = MediaError::DeviceUnavailable {
            name: "Default Audio Device".into(),
            reason: "The requested audio device is not available. It may have been disconnected."
                .into(),
        };
        assert_eq!(
            missing_detail(&gone),
            " (The requested audio device is not available. It may have been disconnected)"
        );
        assert_eq!(
            missing_detail(&MediaError::Device("ALSA lib failed".into())),
            " (audio device error: ALSA lib failed)"
        );
    }

    #[test]
    fn controls_follow_settings() {
        let c = CaptureControls::new();
        let v = VoiceSettings {
            transmit_mode: TransmitMode::PushToTalk,
            noise_suppression: false,
            ..VoiceSettings::default()
        };
        apply_controls(&c, &v, true);
        assert_eq!(c.mode(), VoiceMode::PushToTalk);
        assert!(!c.noise_suppression());
        assert!(c.muted());
    }
}
