//! The settings screen: relay address and the bandwidth panel.
//!
//! The bandwidth model, its validation, its messages and its migrations are hum-budget's. This file
//! only carries it across IPC: the `wire` types mirror hum-budget's serde shape with `specta::Type`
//! added (hum-budget derives schemars, not specta), and a test proves both serialise to the same JSON,
//! so a change in hum-budget that the mirror misses fails `cargo test -p hum-app`.

use hum_budget::{BandwidthSettings as Budget, Measurements, SettingsError};
use serde::{Deserialize, Serialize};
use specta::Type;
use tauri::State;

use crate::error::{CmdResult, CommandError};
use crate::settings_store::keys;
use crate::state::AppState;

/// The relay a fresh install talks to: the one `scripts/run` starts.
pub const DEFAULT_RELAY_URL: &str = "ws://127.0.0.1:7700/ws";

/// Mirrors of hum-budget's settings types; every rate is bits per second.
pub mod wire {
    use super::*;

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
    pub struct BandwidthSettings {
        pub version: u32,
        pub total_upload: TotalUpload,
        pub reserved: ReservedUpload,
        pub relay: RelayContribution,
        pub download_quality: DownloadQuality,
        pub protection: ProtectionSettings,
        pub last_probe: Option<MeasuredUpload>,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
    #[serde(tag = "mode", rename_all = "snake_case")]
    pub enum TotalUpload {
        Auto,
        Manual { rate: u64 },
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
    #[serde(tag = "mode", rename_all = "snake_case")]
    pub enum ReservedUpload {
        Auto,
        Manual { rate: u64 },
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
    #[serde(tag = "level", rename_all = "snake_case")]
    pub enum RelayContribution {
        Off,
        Low,
        Medium,
        High,
        Custom { rate: u64 },
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
    pub enum DownloadQuality {
        #[serde(rename = "auto")]
        Auto,
        #[serde(rename = "1080p")]
        P1080,
        #[serde(rename = "720p")]
        P720,
        #[serde(rename = "480p")]
        P480,
        #[serde(rename = "audio_only")]
        AudioOnly,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
    pub struct ProtectionSettings {
        pub queuing_delay_target_ms: u32,
        pub game_server: Option<String>,
        pub game_processes: Vec<String>,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
    pub struct MeasuredUpload {
        pub rate: u64,
        pub measured_at_unix_ms: u64,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
    #[serde(tag = "source", rename_all = "snake_case")]
    pub enum TotalSource {
        Manual,
        Detected { measured_at_unix_ms: u64 },
        NotMeasured,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
    #[serde(rename_all = "snake_case")]
    pub enum ReservedSource {
        Manual,
        MeasuredOtherApps,
        Estimated,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
    pub struct RelayPresets {
        pub off: u64,
        pub low: u64,
        pub medium: u64,
        pub high: u64,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
    #[serde(rename_all = "snake_case")]
    pub enum SettingsField {
        File,
        TotalUpload,
        Reserved,
        Relay,
        Protection,
    }

    /// One problem with the settings, for the panel to show beside `field`.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Type)]
    pub struct FieldError {
        pub field: SettingsField,
        /// hum-budget's error code, e.g. `reserved_exceeds_total`.
        pub code: String,
        pub message: String,
    }

    /// The calculated numbers the panel shows.
    #[derive(Clone, Debug, PartialEq, Serialize, Type)]
    pub struct EffectiveBudget {
        pub total: u64,
        pub total_source: TotalSource,
        pub reserved: u64,
        pub reserved_source: ReservedSource,
        pub available: u64,
        pub relay: u64,
        pub relay_presets: RelayPresets,
        pub download_quality: DownloadQuality,
        pub conservative: bool,
        pub warnings: Vec<FieldError>,
    }

    /// What the panel gets back for the settings being edited: the numbers, and every error.
    #[derive(Clone, Debug, PartialEq, Serialize, Type)]
    pub struct BandwidthReport {
        pub effective: EffectiveBudget,
        /// Empty when the settings can be saved.
        pub errors: Vec<FieldError>,
    }
}

/// Everything the settings screen loads at start.
#[derive(Clone, Debug, PartialEq, Serialize, Type)]
pub struct AppSettings {
    pub relay_url: String,
    pub bandwidth: wire::BandwidthSettings,
    pub bandwidth_report: wire::BandwidthReport,
    /// Set when the saved bandwidth settings could not be read and were reset: why.
    pub bandwidth_notice: Option<String>,
}

fn convert<A: Serialize, B: serde::de::DeserializeOwned>(a: &A) -> CmdResult<B> {
    serde_json::to_value(a)
        .and_then(serde_json::from_value)
        .map_err(|e| CommandError::internal(format!("bandwidth settings mirror out of date: {e}")))
}

fn field_error(e: &SettingsError) -> CmdResult<wire::FieldError> {
    let code = serde_json::to_value(e)
        .ok()
        .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_owned))
        .unwrap_or_default();
    Ok(wire::FieldError {
        field: convert(&e.field())?,
        code,
        message: e.to_string(),
    })
}

/// What the running budget measured (other apps' upload, a listed game), so previews of edited
/// settings show what the service would enforce. The measured upload itself travels in the
/// settings (`last_probe`, saved by `budget::store_probe`). No service yet: nothing measured.
fn measurements(state: &AppState) -> Measurements {
    super::budget::service(state).map_or_else(Measurements::default, |s| s.measurements())
}

pub fn report(state: &AppState, settings: &Budget) -> CmdResult<wire::BandwidthReport> {
    let eff = settings.effective(&measurements(state));
    let effective = wire::EffectiveBudget {
        total: eff.total.bps(),
        total_source: convert(&eff.total_source)?,
        reserved: eff.reserved.bps(),
        reserved_source: convert(&eff.reserved_source)?,
        available: eff.available.bps(),
        relay: eff.relay.bps(),
        relay_presets: convert(&eff.relay_presets)?,
        download_quality: convert(&eff.download_quality)?,
        conservative: eff.conservative,
        warnings: eff
            .warnings
            .iter()
            .map(field_error)
            .collect::<CmdResult<_>>()?,
    };
    let errors = settings
        .errors()
        .iter()
        .map(field_error)
        .collect::<CmdResult<_>>()?;
    Ok(wire::BandwidthReport { effective, errors })
}

/// The saved bandwidth settings (migrated by hum-budget), or defaults plus the reason they were reset.
pub fn load_bandwidth(state: &AppState) -> (Budget, Option<String>) {
    match state.kv.get(keys::BANDWIDTH) {
        None => (Budget::default(), None),
        Some(v) => {
            let (s, err) = Budget::load_or_default(&v.to_string());
            (s, err.map(|e| e.to_string()))
        }
    }
}

pub fn get(state: &AppState) -> CmdResult<AppSettings> {
    let relay_url = state
        .kv
        .get(keys::RELAY_URL)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| DEFAULT_RELAY_URL.to_owned());
    let (bandwidth, bandwidth_notice) = load_bandwidth(state);
    Ok(AppSettings {
        relay_url,
        bandwidth_report: report(state, &bandwidth)?,
        bandwidth: convert(&bandwidth)?,
        bandwidth_notice,
    })
}

/// Checks a relay address: `ws://` or `wss://` and a host.
pub fn validate_relay_url(url: &str) -> CmdResult<String> {
    let url = url.trim();
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
        .ok_or_else(|| {
            CommandError::invalid("The relay address must start with ws:// or wss:// (for example ws://127.0.0.1:7700/ws).")
        })?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(CommandError::invalid(
            "The relay address needs a host, like 127.0.0.1:7700.",
        ));
    }
    Ok(url.to_owned())
}

pub fn set_relay_url(state: &AppState, url: &str) -> CmdResult<String> {
    let url = validate_relay_url(url)?;
    state
        .kv
        .set(keys::RELAY_URL, url.clone().into())
        .map_err(|e| CommandError::storage("Could not save the relay address", e))?;
    Ok(url)
}

pub fn preview(
    state: &AppState,
    settings: &wire::BandwidthSettings,
) -> CmdResult<wire::BandwidthReport> {
    report(state, &convert::<_, Budget>(settings)?)
}

pub fn save(
    state: &AppState,
    settings: &wire::BandwidthSettings,
) -> CmdResult<wire::BandwidthReport> {
    let mut budget: Budget = convert(settings)?;
    // The measured upload belongs to the budget service: a panel opened before the last test
    // must not overwrite it with its older copy.
    budget.last_probe =
        super::budget::newest(load_bandwidth(state).0.last_probe, budget.last_probe);
    if let Err(e) = budget.validate() {
        return Err(CommandError::invalid(e.to_string()));
    }
    let value = serde_json::from_str(&budget.to_json()).map_err(CommandError::internal)?;
    state
        .kv
        .set(keys::BANDWIDTH, value)
        .map_err(|e| CommandError::storage("Could not save the bandwidth settings", e))?;
    report(state, &budget)
}

/// Everything the settings screen shows.
#[tauri::command]
#[specta::specta]
pub fn settings_get(state: State<'_, AppState>) -> CmdResult<AppSettings> {
    get(&state)
}

/// Validates and saves the relay address; returns it normalised.
#[tauri::command]
#[specta::specta]
pub fn relay_url_set(state: State<'_, AppState>, url: String) -> CmdResult<String> {
    set_relay_url(&state, &url)
}

/// The calculated numbers and every validation error for settings being edited (nothing is saved).
#[tauri::command]
#[specta::specta]
pub fn bandwidth_preview(
    state: State<'_, AppState>,
    settings: wire::BandwidthSettings,
) -> CmdResult<wire::BandwidthReport> {
    preview(&state, &settings)
}

/// Saves valid settings; invalid ones fail with `invalid_input` and the first problem.
#[tauri::command]
#[specta::specta]
pub fn bandwidth_save(
    app: tauri::AppHandle,
    state: State<'_, AppState>,
    settings: wire::BandwidthSettings,
) -> CmdResult<wire::BandwidthReport> {
    let report = save(&state, &settings)?;
    super::budget::settings_saved(&app, &load_bandwidth(&state).0);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::settings_store::MemoryKv;
    use hum_budget::{
        DownloadQuality, ProtectionSettings, RelayContribution, ReservedUpload, TotalUpload,
    };
    use hum_proto::Bitrate;

    fn state() -> (tempfile::TempDir, AppState) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = AppState::load(dir.path().into(), Box::new(MemoryKv::default())).expect("load");
        (dir, s)
    }

    fn manual(total_mbps: u64, reserved_mbps: u64, relay: RelayContribution) -> Budget {
        Budget {
            total_upload: TotalUpload::Manual {
                rate: Bitrate::from_mbps(total_mbps),
            },
            reserved: ReservedUpload::Manual {
                rate: Bitrate::from_mbps(reserved_mbps),
            },
            relay,
            download_quality: DownloadQuality::P720,
            protection: ProtectionSettings {
                game_server: Some("203.0.113.5:27015".into()),
                game_processes: vec!["cs2".into()],
                ..ProtectionSettings::default()
            },
            ..Budget::default()
        }
    }

    #[test]
    fn mirror_has_the_same_json_as_hum_budget() {
        let samples = [
            Budget::default(),
            manual(10, 5, RelayContribution::Medium),
            manual(
                10,
                2,
                RelayContribution::Custom {
                    rate: Bitrate::from_kbps(800),
                },
            ),
            Budget {
                download_quality: DownloadQuality::AudioOnly,
                relay: RelayContribution::High,
                last_probe: Some(hum_budget::settings::MeasuredUpload {
                    rate: Bitrate::from_mbps(20),
                    measured_at_unix_ms: 1_700_000_000_000,
                }),
                ..Budget::default()
            },
        ];
        for budget in samples {
            let mirrored: wire::BandwidthSettings = convert(&budget).expect("to mirror");
            assert_eq!(
                serde_json::to_value(&mirrored).expect("json"),
                serde_json::to_value(&budget).expect("json")
            );
            let back: Budget = convert(&mirrored).expect("back");
            assert_eq!(back, budget);
        }
    }

    #[test]
    fn design_example_numbers() {
        // The design's example: 10 Mbps total, 5 reserved, 5 available; low = 500 kbps, medium 1.25 Mbps.
        let (_d, s) = state();
        let r = report(&s, &manual(10, 5, RelayContribution::Medium)).expect("report");
        assert!(r.errors.is_empty());
        assert_eq!(r.effective.available, 5_000_000);
        assert_eq!(r.effective.relay_presets.low, 500_000);
        assert_eq!(r.effective.relay, 1_250_000);
    }

    #[test]
    fn invalid_settings_are_refused_with_a_clear_message_and_not_saved() {
        let (_d, s) = state();
        let bad: wire::BandwidthSettings =
            convert(&manual(5, 6, RelayContribution::Off)).expect("mirror");
        let r = preview(&s, &bad).expect("preview");
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.errors[0].field, wire::SettingsField::Reserved);
        assert_eq!(r.errors[0].code, "reserved_exceeds_total");
        let err = save(&s, &bad).expect_err("refused");
        assert_eq!(err.code, ErrorCode::InvalidInput);
        assert!(
            err.message.contains("Reserved for other apps"),
            "{}",
            err.message
        );
        assert_eq!(s.kv.get(keys::BANDWIDTH), None);
    }

    #[test]
    fn saved_settings_come_back() {
        let (_d, s) = state();
        let fresh = get(&s).expect("get");
        assert_eq!(fresh.relay_url, DEFAULT_RELAY_URL);
        assert_eq!(fresh.bandwidth.relay, wire::RelayContribution::Off);
        let good: wire::BandwidthSettings =
            convert(&manual(20, 4, RelayContribution::Low)).expect("mirror");
        save(&s, &good).expect("save");
        let again = get(&s).expect("get");
        assert_eq!(again.bandwidth, good);
        assert_eq!(again.bandwidth_report.effective.relay, 1_600_000);
        assert_eq!(again.bandwidth_notice, None);
    }

    #[test]
    fn unreadable_saved_settings_reset_with_a_notice() {
        let (_d, s) = state();
        s.kv.set(keys::BANDWIDTH, serde_json::json!({"version": 99}))
            .expect("set");
        let got = get(&s).expect("get");
        assert_eq!(got.bandwidth.relay, wire::RelayContribution::Off);
        assert!(
            got.bandwidth_notice
                .expect("notice")
                .contains("newer version")
        );
    }

    #[test]
    fn relay_url_validation() {
        let (_d, s) = state();
        assert_eq!(
            set_relay_url(&s, " ws://10.0.0.1:7700/ws ").expect("ok"),
            "ws://10.0.0.1:7700/ws"
        );
        assert_eq!(get(&s).expect("get").relay_url, "ws://10.0.0.1:7700/ws");
        assert_eq!(
            set_relay_url(&s, "http://x").expect_err("scheme").code,
            ErrorCode::InvalidInput
        );
        assert!(validate_relay_url("ws:///ws").is_err());
        assert!(validate_relay_url("wss://relay.example.org/ws").is_ok());
    }
}
