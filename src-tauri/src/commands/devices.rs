//! Audio devices (cpal, through hum-media) and how a call's audio is opened.
//!
//! A missing device is not fatal: as the `hum` CLI does, the app then sends silence or discards
//! what it hears, and says so (`AudioNotice`), so a laptop with a broken mic can still listen.

use hum_engine::voice::hum_media::device::{CpalSink, CpalSource, list_devices};
use hum_engine::voice::hum_media::pacer::Paced;
use hum_engine::voice::hum_media::processing::{CaptureControls, VoiceMode};
use hum_engine::voice::hum_media::synth::{NullSink, SilenceSource};
use hum_engine::voice::hum_media::{AudioSink, AudioSource};
use hum_engine::voice::link::AudioIo;
use serde::Serialize;
use specta::Type;

use super::voice::{SENSITIVITY_RANGE_DBFS, TransmitMode, VoiceSettings};
use crate::error::{CmdResult, CommandError, ErrorCode};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Type)]
pub struct DeviceView {
    pub id: String,
    pub name: String,
    pub input: bool,
    pub output: bool,
    pub default_input: bool,
    pub default_output: bool,
}

/// The host's audio devices; an empty list means none (the UI says so).
#[tauri::command]
#[specta::specta]
pub fn devices_list() -> CmdResult<Vec<DeviceView>> {
    let devices =
        list_devices().map_err(|e| CommandError::new(ErrorCode::Device, e.to_string()))?;
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

/// Opens the chosen (or default) devices. Returns the audio and notices for what was missing.
pub fn open_audio(v: &VoiceSettings, muted: bool) -> CmdResult<(AudioIo, Vec<String>)> {
    let mut notices = Vec::new();
    let source: Box<dyn AudioSource> = match CpalSource::open(v.input_device.as_deref()) {
        Ok(s) => Box::new(s),
        Err(e) if v.input_device.is_none() => {
            notices.push(format!(
                "No microphone found ({e}). Others will hear silence."
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
                "No speaker found ({e}). You will not hear the others."
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
