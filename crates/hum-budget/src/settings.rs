//! The user's bandwidth settings, as the design's settings tree draws them:
//!
//! ```text
//! Bandwidth Settings
//! ├── Total upload limit: [auto-detect | manual]
//! ├── Reserved for other apps: [auto | manual]
//! ├── Available for Hum: [calculated] = total - reserved
//! ├── Relay contribution: [off | low 10% | medium 25% | high 50% | custom (absolute)]
//! └── Download quality: [auto | 1080p | 720p | 480p | audio-only]
//! ```
//!
//! [`BandwidthSettings`] is what the app saves; [`BandwidthSettings::effective`] turns it plus what
//! the engine measured ([`Measurements`]) into the numbers the panel shows ([`EffectiveBudget`]).
//!
//! Invariants (checked in the tests below):
//! - `Default` never relays: relay contribution is opt-in.
//! - effective `reserved <= total`, `available = total - reserved`, `relay <= available`.
//! - a settings file written by an older Hum still loads: [`BandwidthSettings::from_json`] reads the
//!   `version` field (absent = version 0) and migrates.
//!
//! ## Version history
//! - **v0** (no `version` field): the flat shape of the first settings sketch:
//!   `{"upload_limit_kbps": 10000 | null, "reserved_kbps": 5000 | null, "relay": "off" | "low" |
//!   "medium" | "high" | "custom", "relay_custom_kbps": 800 | null, "quality": "720p"}`, where a
//!   null or missing limit meant auto-detect and a null or missing reservation meant auto.
//! - **v1**: this module's types, tagged enums so TypeScript gets discriminated unions.

use std::fmt;

use hum_proto::Bitrate;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The version [`BandwidthSettings::to_json`] writes.
pub const SETTINGS_VERSION: u32 = 1;
/// Below this Hum cannot even carry voice reliably; a smaller manual total is a typo.
pub const MIN_TOTAL_UPLOAD: Bitrate = Bitrate::from_kbps(64);
/// Above this (10 Gbps) a manual total is almost certainly a typo (an extra zero, or bytes vs bits).
pub const MAX_TOTAL_UPLOAD: Bitrate = Bitrate::from_mbps(10_000);
/// The queuing-delay target the throttler defends by default. See docs/budget.md for why 10 ms.
pub const DEFAULT_QUEUING_TARGET_MS: u32 = 10;
/// The range the user may pick the queuing-delay target from.
pub const QUEUING_TARGET_RANGE_MS: (u32, u32) = (5, 100);
/// At most this many game process names (the list is matched against every running process).
pub const MAX_GAME_PROCESSES: usize = 64;
/// In auto-reserve mode without any measurement yet, reserve this fraction of the total.
pub const AUTO_RESERVE_UNMEASURED_FRACTION: f64 = 0.25;
/// In auto-reserve mode, add this fraction of the total as headroom on top of what other apps send,
/// so a burst from the game does not immediately meet a full uplink.
pub const AUTO_RESERVE_HEADROOM_FRACTION: f64 = 0.10;

/// Everything the bandwidth panel saves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BandwidthSettings {
    /// Schema version of this record; see the module docs for the history.
    pub version: u32,
    pub total_upload: TotalUpload,
    pub reserved: ReservedUpload,
    pub relay: RelayContribution,
    pub download_quality: DownloadQuality,
    #[serde(default)]
    pub protection: ProtectionSettings,
    /// The last bandwidth test, kept so auto-detect does not re-test on every start.
    #[serde(default)]
    pub last_probe: Option<MeasuredUpload>,
}

/// Total upload: detected by a bandwidth test, or typed in by the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum TotalUpload {
    /// Use the last bandwidth test ([`BandwidthSettings::last_probe`]).
    Auto,
    Manual {
        rate: Bitrate,
    },
}

/// Upload kept free for other apps (a game, a video call in a browser...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ReservedUpload {
    /// Reserve what other apps are measured to send, plus headroom.
    Auto,
    Manual {
        rate: Bitrate,
    },
}

/// How much of the available upload may relay other viewers' stream chunks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "level", rename_all = "snake_case")]
pub enum RelayContribution {
    /// Receive only, never relay. The default: relaying is opt-in.
    #[default]
    Off,
    /// 10% of available.
    Low,
    /// 25% of available.
    Medium,
    /// 50% of available.
    High,
    /// An exact limit the user picked.
    Custom { rate: Bitrate },
}

impl RelayContribution {
    /// The fraction of the available upload a preset stands for; `None` for `Custom`.
    pub fn fraction(self) -> Option<f64> {
        match self {
            RelayContribution::Off => Some(0.0),
            RelayContribution::Low => Some(0.10),
            RelayContribution::Medium => Some(0.25),
            RelayContribution::High => Some(0.50),
            RelayContribution::Custom { .. } => None,
        }
    }

    /// The relay rate this choice gives for `available` (custom is capped at `available`).
    pub fn rate_for(self, available: Bitrate) -> Bitrate {
        match self {
            RelayContribution::Custom { rate } => rate.min(available),
            preset => available.scale(preset.fraction().unwrap_or(0.0)),
        }
    }
}

/// Which layer of other people's streams to watch.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum DownloadQuality {
    #[default]
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

impl DownloadQuality {
    /// The next lower layer, for "lower your own viewing layer"; `None` at audio-only.
    /// `Auto` steps down from the top layer.
    pub fn lower(self) -> Option<DownloadQuality> {
        match self {
            DownloadQuality::Auto | DownloadQuality::P1080 => Some(DownloadQuality::P720),
            DownloadQuality::P720 => Some(DownloadQuality::P480),
            DownloadQuality::P480 => Some(DownloadQuality::AudioOnly),
            DownloadQuality::AudioOnly => None,
        }
    }
}

/// How the throttler protects the user's game.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProtectionSettings {
    /// Extra queuing delay (ms) the throttler tolerates before it cuts relaying.
    #[serde(default = "default_target")]
    pub queuing_delay_target_ms: u32,
    /// Optional `host:port` of the user's game server; its RTT is probed as well as the relay's.
    #[serde(default)]
    pub game_server: Option<String>,
    /// Process names (e.g. `cs2`, `valorant.exe`); while one runs, relaying is capped at "low".
    #[serde(default)]
    pub game_processes: Vec<String>,
}

fn default_target() -> u32 {
    DEFAULT_QUEUING_TARGET_MS
}

impl Default for ProtectionSettings {
    fn default() -> Self {
        ProtectionSettings {
            queuing_delay_target_ms: DEFAULT_QUEUING_TARGET_MS,
            game_server: None,
            game_processes: Vec::new(),
        }
    }
}

/// One bandwidth test result, with the wall-clock time it was taken (the app stores it across
/// restarts, so this is Unix time, not a monotonic instant).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MeasuredUpload {
    pub rate: Bitrate,
    pub measured_at_unix_ms: u64,
}

/// What the engine measured, as input to [`BandwidthSettings::effective`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Measurements {
    /// Upload other apps are sending right now (interface upload minus Hum's own), smoothed.
    pub other_apps_upload: Option<Bitrate>,
    /// A process from the user's game list is running.
    pub game_running: bool,
}

/// Where the effective total came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum TotalSource {
    Manual,
    Detected {
        measured_at_unix_ms: u64,
    },
    /// Auto-detect is on but no test has run yet: nothing is relayed until one does.
    NotMeasured,
}

/// Where the effective reservation came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReservedSource {
    Manual,
    /// Measured other-app upload plus headroom.
    MeasuredOtherApps,
    /// Auto, but nothing measured yet: a fixed share of the total.
    Estimated,
}

/// The relay rate each preset would give right now, for the panel's labels ("Low (500 kbps)").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RelayPresets {
    pub off: Bitrate,
    pub low: Bitrate,
    pub medium: Bitrate,
    pub high: Bitrate,
}

/// The numbers the bandwidth panel shows, and the caps the limiter enforces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EffectiveBudget {
    pub total: Bitrate,
    pub total_source: TotalSource,
    pub reserved: Bitrate,
    pub reserved_source: ReservedSource,
    /// `total - reserved`: what Hum may use for its own sending plus relaying.
    pub available: Bitrate,
    /// The relay cap the user's choice gives, before the throttler's dynamic cuts.
    pub relay: Bitrate,
    pub relay_presets: RelayPresets,
    pub download_quality: DownloadQuality,
    /// A listed game is running: relaying is capped at the "low" preset.
    pub conservative: bool,
    /// Conflicts that came from measurements rather than from what the user typed (e.g. a manual
    /// reservation above a detected total). The numbers above are already clamped.
    pub warnings: Vec<SettingsError>,
}

/// Which part of the panel a [`SettingsError`] belongs to, so the app can highlight it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SettingsField {
    File,
    TotalUpload,
    Reserved,
    Relay,
    Protection,
}

/// An impossible or unreadable setting, with a message the user can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum SettingsError {
    #[error(
        "Total upload can't be zero. Enter your connection's upload speed, or choose auto-detect."
    )]
    TotalZero,
    #[error(
        "Total upload of {total} is too low for Hum (at least {min} is needed for voice). Check the number, or choose auto-detect."
    )]
    TotalTooLow { total: Bitrate, min: Bitrate },
    #[error(
        "Total upload of {total} is more than {max}. That's probably a typo (bits vs. bytes?). Check the number, or choose auto-detect."
    )]
    TotalTooHigh { total: Bitrate, max: Bitrate },
    #[error(
        "Reserved for other apps ({reserved}) is more than your total upload ({total}). Lower the reservation or raise the total."
    )]
    ReservedExceedsTotal { reserved: Bitrate, total: Bitrate },
    #[error("Reserved for other apps ({reserved}) is more than {max}. Check the number.")]
    ReservedTooHigh { reserved: Bitrate, max: Bitrate },
    #[error("A custom relay limit of zero means no relaying. Choose \"Off\" instead.")]
    CustomZero,
    #[error(
        "Custom relay limit ({custom}) is more than the {available} available for Hum. Lower it, or reserve less for other apps."
    )]
    CustomExceedsAvailable { custom: Bitrate, available: Bitrate },
    #[error(
        "The lag protection target must be between {min} and {max} ms (you entered {value} ms)."
    )]
    QueuingTargetOutOfRange { value: u32, min: u32, max: u32 },
    #[error(
        "Game server \"{value}\" is not host:port (for example 203.0.113.5:27015 or play.example.com:25565)."
    )]
    InvalidGameServer { value: String },
    #[error("Game process names can't be empty or longer than 255 characters.")]
    InvalidGameProcess,
    #[error("At most {max} game processes can be listed.")]
    TooManyGameProcesses { max: usize },
    #[error(
        "These bandwidth settings were saved by a newer version of Hum (format {found}); this version reads up to {supported}. Update Hum, or reset the bandwidth settings."
    )]
    NewerVersion { found: u64, supported: u32 },
    #[error(
        "The saved bandwidth settings could not be read ({detail}). They were reset to defaults."
    )]
    Malformed { detail: String },
}

impl SettingsError {
    pub fn field(&self) -> SettingsField {
        use SettingsError::*;
        match self {
            TotalZero | TotalTooLow { .. } | TotalTooHigh { .. } => SettingsField::TotalUpload,
            ReservedExceedsTotal { .. } | ReservedTooHigh { .. } => SettingsField::Reserved,
            CustomZero | CustomExceedsAvailable { .. } => SettingsField::Relay,
            QueuingTargetOutOfRange { .. }
            | InvalidGameServer { .. }
            | InvalidGameProcess
            | TooManyGameProcesses { .. } => SettingsField::Protection,
            NewerVersion { .. } | Malformed { .. } => SettingsField::File,
        }
    }
}

impl Default for BandwidthSettings {
    /// Auto-detect the total, auto-reserve for other apps, relay off, auto quality.
    fn default() -> Self {
        BandwidthSettings {
            version: SETTINGS_VERSION,
            total_upload: TotalUpload::Auto,
            reserved: ReservedUpload::Auto,
            relay: RelayContribution::Off,
            download_quality: DownloadQuality::Auto,
            protection: ProtectionSettings::default(),
            last_probe: None,
        }
    }
}

impl BandwidthSettings {
    /// Every error in what the user entered, first the most fundamental. Conflicts that depend on
    /// measurements (auto total, auto reserve) are not errors: [`Self::effective`] clamps and warns.
    pub fn errors(&self) -> Vec<SettingsError> {
        let mut errors = Vec::new();
        let manual_total = match self.total_upload {
            TotalUpload::Manual { rate } => {
                if rate == Bitrate::ZERO {
                    errors.push(SettingsError::TotalZero);
                } else if rate < MIN_TOTAL_UPLOAD {
                    errors.push(SettingsError::TotalTooLow {
                        total: rate,
                        min: MIN_TOTAL_UPLOAD,
                    });
                } else if rate > MAX_TOTAL_UPLOAD {
                    errors.push(SettingsError::TotalTooHigh {
                        total: rate,
                        max: MAX_TOTAL_UPLOAD,
                    });
                }
                Some(rate)
            }
            TotalUpload::Auto => None,
        };
        let manual_reserved = match self.reserved {
            ReservedUpload::Manual { rate } => {
                if rate > MAX_TOTAL_UPLOAD {
                    errors.push(SettingsError::ReservedTooHigh {
                        reserved: rate,
                        max: MAX_TOTAL_UPLOAD,
                    });
                } else if let Some(total) = manual_total
                    && rate > total
                {
                    errors.push(SettingsError::ReservedExceedsTotal {
                        reserved: rate,
                        total,
                    });
                }
                Some(rate)
            }
            ReservedUpload::Auto => None,
        };
        if let RelayContribution::Custom { rate } = self.relay {
            if rate == Bitrate::ZERO {
                errors.push(SettingsError::CustomZero);
            } else if let (Some(total), Some(reserved)) = (manual_total, manual_reserved)
                && reserved <= total
            {
                let available = total - reserved;
                if rate > available {
                    errors.push(SettingsError::CustomExceedsAvailable {
                        custom: rate,
                        available,
                    });
                }
            }
        }
        let p = &self.protection;
        let (min, max) = QUEUING_TARGET_RANGE_MS;
        if !(min..=max).contains(&p.queuing_delay_target_ms) {
            errors.push(SettingsError::QueuingTargetOutOfRange {
                value: p.queuing_delay_target_ms,
                min,
                max,
            });
        }
        if let Some(server) = &p.game_server
            && parse_host_port(server).is_none()
        {
            errors.push(SettingsError::InvalidGameServer {
                value: server.clone(),
            });
        }
        if p.game_processes.len() > MAX_GAME_PROCESSES {
            errors.push(SettingsError::TooManyGameProcesses {
                max: MAX_GAME_PROCESSES,
            });
        }
        if p.game_processes
            .iter()
            .any(|n| n.trim().is_empty() || n.len() > 255)
        {
            errors.push(SettingsError::InvalidGameProcess);
        }
        errors
    }

    /// `Ok` when [`Self::errors`] is empty, else the first (most fundamental) error.
    pub fn validate(&self) -> Result<(), SettingsError> {
        match self.errors().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The numbers the panel shows and the limiter enforces, given what was measured.
    pub fn effective(&self, m: &Measurements) -> EffectiveBudget {
        let mut warnings = Vec::new();
        let (total, total_source) = match (self.total_upload, self.last_probe) {
            (TotalUpload::Manual { rate }, _) => (rate.min(MAX_TOTAL_UPLOAD), TotalSource::Manual),
            (TotalUpload::Auto, Some(p)) => (
                p.rate.min(MAX_TOTAL_UPLOAD),
                TotalSource::Detected {
                    measured_at_unix_ms: p.measured_at_unix_ms,
                },
            ),
            (TotalUpload::Auto, None) => (Bitrate::ZERO, TotalSource::NotMeasured),
        };
        let (wanted_reserved, reserved_source) = match (self.reserved, m.other_apps_upload) {
            (ReservedUpload::Manual { rate }, _) => (rate, ReservedSource::Manual),
            (ReservedUpload::Auto, Some(other)) => (
                other + total.scale(AUTO_RESERVE_HEADROOM_FRACTION),
                ReservedSource::MeasuredOtherApps,
            ),
            (ReservedUpload::Auto, None) => (
                total.scale(AUTO_RESERVE_UNMEASURED_FRACTION),
                ReservedSource::Estimated,
            ),
        };
        let reserved = wanted_reserved.min(total);
        if reserved_source == ReservedSource::Manual
            && total_source != TotalSource::Manual
            && total_source != TotalSource::NotMeasured
            && wanted_reserved > total
        {
            warnings.push(SettingsError::ReservedExceedsTotal {
                reserved: wanted_reserved,
                total,
            });
        }
        let available = total - reserved;
        let relay_presets = RelayPresets {
            off: RelayContribution::Off.rate_for(available),
            low: RelayContribution::Low.rate_for(available),
            medium: RelayContribution::Medium.rate_for(available),
            high: RelayContribution::High.rate_for(available),
        };
        let mut relay = self.relay.rate_for(available);
        if let RelayContribution::Custom { rate } = self.relay
            && rate > available
            && total_source != TotalSource::NotMeasured
            && !(total_source == TotalSource::Manual && reserved_source == ReservedSource::Manual)
        {
            warnings.push(SettingsError::CustomExceedsAvailable {
                custom: rate,
                available,
            });
        }
        if m.game_running {
            relay = relay.min(relay_presets.low);
        }
        EffectiveBudget {
            total,
            total_source,
            reserved,
            reserved_source,
            available,
            relay,
            relay_presets,
            download_quality: self.download_quality,
            conservative: m.game_running,
            warnings,
        }
    }

    /// The game server as (host, port), if one is set and well-formed.
    pub fn game_server(&self) -> Option<(String, u16)> {
        let s = self.protection.game_server.as_deref()?;
        parse_host_port(s).map(|(h, p)| (h.to_string(), p))
    }

    /// Serialises at the current version.
    pub fn to_json(&self) -> String {
        let mut s = self.clone();
        s.version = SETTINGS_VERSION;
        // A struct of plain fields always serialises.
        serde_json::to_string_pretty(&s).unwrap_or_default()
    }

    /// Reads settings saved by this or any older version of Hum, migrates them, and validates.
    pub fn from_json(json: &str) -> Result<BandwidthSettings, SettingsError> {
        let value: Value = serde_json::from_str(json).map_err(malformed)?;
        let version = match value.get("version") {
            None => 0,
            Some(v) => v.as_u64().ok_or_else(|| SettingsError::Malformed {
                detail: "the version is not a number".into(),
            })?,
        };
        let settings = match version {
            0 => migrate_v0(&value)?,
            1 => serde_json::from_value(value).map_err(malformed)?,
            found => {
                return Err(SettingsError::NewerVersion {
                    found,
                    supported: SETTINGS_VERSION,
                });
            }
        };
        settings.validate()?;
        Ok(BandwidthSettings {
            version: SETTINGS_VERSION,
            ..settings
        })
    }

    /// Like [`Self::from_json`], but falls back to the defaults (relay off) on any error, returning
    /// the error so the app can tell the user why their settings were reset.
    pub fn load_or_default(json: &str) -> (BandwidthSettings, Option<SettingsError>) {
        match Self::from_json(json) {
            Ok(s) => (s, None),
            Err(e) => (BandwidthSettings::default(), Some(e)),
        }
    }
}

fn malformed(e: serde_json::Error) -> SettingsError {
    SettingsError::Malformed {
        detail: e.to_string(),
    }
}

/// v0: see the module docs.
fn migrate_v0(v: &Value) -> Result<BandwidthSettings, SettingsError> {
    let obj = v.as_object().ok_or_else(|| SettingsError::Malformed {
        detail: "expected an object".into(),
    })?;
    let kbps = |key: &str| -> Result<Option<Bitrate>, SettingsError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_u64()
                .map(|k| Some(Bitrate::from_bps(k.saturating_mul(1000))))
                .ok_or_else(|| SettingsError::Malformed {
                    detail: format!("{key} is not a whole number"),
                }),
        }
    };
    let total_upload = match kbps("upload_limit_kbps")? {
        Some(rate) => TotalUpload::Manual { rate },
        None => TotalUpload::Auto,
    };
    let reserved = match kbps("reserved_kbps")? {
        Some(rate) => ReservedUpload::Manual { rate },
        None => ReservedUpload::Auto,
    };
    let relay = match obj.get("relay").and_then(Value::as_str).unwrap_or("off") {
        "off" => RelayContribution::Off,
        "low" => RelayContribution::Low,
        "medium" => RelayContribution::Medium,
        "high" => RelayContribution::High,
        "custom" => match kbps("relay_custom_kbps")? {
            Some(rate) => RelayContribution::Custom { rate },
            None => RelayContribution::Off,
        },
        other => {
            return Err(SettingsError::Malformed {
                detail: format!("unknown relay level {other:?}"),
            });
        }
    };
    let download_quality = match obj.get("quality").and_then(Value::as_str).unwrap_or("auto") {
        "auto" => DownloadQuality::Auto,
        "1080p" => DownloadQuality::P1080,
        "720p" => DownloadQuality::P720,
        "480p" => DownloadQuality::P480,
        "audio-only" | "audio_only" | "audio" => DownloadQuality::AudioOnly,
        other => {
            return Err(SettingsError::Malformed {
                detail: format!("unknown quality {other:?}"),
            });
        }
    };
    Ok(BandwidthSettings {
        version: SETTINGS_VERSION,
        total_upload,
        reserved,
        relay,
        download_quality,
        protection: ProtectionSettings::default(),
        last_probe: None,
    })
}

/// `host:port` with a non-empty host of hostname/IP characters (IPv6 in brackets) and a port > 0.
pub fn parse_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.trim().rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
    if bare.is_empty() || bare.len() > 253 || !bare.chars().all(ok_char) {
        return None;
    }
    // A bare IPv6 address must be bracketed, or the port is ambiguous.
    if bare.contains(':') && bare == host {
        return None;
    }
    Some((bare, port))
}

impl fmt::Display for DownloadQuality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DownloadQuality::Auto => "auto",
            DownloadQuality::P1080 => "1080p",
            DownloadQuality::P720 => "720p",
            DownloadQuality::P480 => "480p",
            DownloadQuality::AudioOnly => "audio only",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manual(total_mbps: u64, reserved_mbps: u64, relay: RelayContribution) -> BandwidthSettings {
        BandwidthSettings {
            total_upload: TotalUpload::Manual {
                rate: Bitrate::from_mbps(total_mbps),
            },
            reserved: ReservedUpload::Manual {
                rate: Bitrate::from_mbps(reserved_mbps),
            },
            relay,
            ..BandwidthSettings::default()
        }
    }

    #[test]
    fn default_is_opt_in_and_valid() {
        let s = BandwidthSettings::default();
        assert_eq!(s.relay, RelayContribution::Off);
        assert_eq!(s.validate(), Ok(()));
        // Even with a measured total, nothing is relayed until the user opts in.
        let s = BandwidthSettings {
            last_probe: Some(MeasuredUpload {
                rate: Bitrate::from_mbps(20),
                measured_at_unix_ms: 1,
            }),
            ..s
        };
        assert_eq!(s.effective(&Measurements::default()).relay, Bitrate::ZERO);
    }

    #[test]
    fn design_example_numbers() {
        // The design's example: 10 Mbps total, 5 reserved for gaming, 5 available.
        let s = manual(10, 5, RelayContribution::Medium);
        let e = s.effective(&Measurements::default());
        assert_eq!(e.available, Bitrate::from_mbps(5));
        assert_eq!(e.relay_presets.off, Bitrate::ZERO);
        assert_eq!(e.relay_presets.low, Bitrate::from_kbps(500));
        assert_eq!(e.relay_presets.medium, Bitrate::from_kbps(1_250));
        assert_eq!(e.relay_presets.high, Bitrate::from_kbps(2_500));
        assert_eq!(e.relay, Bitrate::from_kbps(1_250));
        assert!(e.warnings.is_empty());
    }

    #[test]
    fn impossible_values_are_rejected_with_field_and_message() {
        let s = manual(5, 8, RelayContribution::Low);
        let err = s.validate().unwrap_err();
        assert_eq!(
            err,
            SettingsError::ReservedExceedsTotal {
                reserved: Bitrate::from_mbps(8),
                total: Bitrate::from_mbps(5)
            }
        );
        assert_eq!(err.field(), SettingsField::Reserved);
        assert_eq!(
            err.to_string(),
            "Reserved for other apps (8.00 Mbps) is more than your total upload (5.00 Mbps). Lower the reservation or raise the total."
        );

        let s = manual(
            10,
            5,
            RelayContribution::Custom {
                rate: Bitrate::from_mbps(6),
            },
        );
        assert!(matches!(
            s.validate(),
            Err(SettingsError::CustomExceedsAvailable { .. })
        ));
        let s = manual(
            10,
            5,
            RelayContribution::Custom {
                rate: Bitrate::ZERO,
            },
        );
        assert_eq!(s.validate(), Err(SettingsError::CustomZero));
        let s = manual(0, 0, RelayContribution::Off);
        assert_eq!(s.validate(), Err(SettingsError::TotalZero));
        let s = BandwidthSettings {
            total_upload: TotalUpload::Manual {
                rate: Bitrate::from_kbps(10),
            },
            ..BandwidthSettings::default()
        };
        assert!(matches!(
            s.validate(),
            Err(SettingsError::TotalTooLow { .. })
        ));
        let s = manual(100_000, 0, RelayContribution::Off);
        assert!(matches!(
            s.validate(),
            Err(SettingsError::TotalTooHigh { .. })
        ));
        assert_eq!(
            s.validate().unwrap_err().field(),
            SettingsField::TotalUpload
        );
    }

    #[test]
    fn protection_settings_are_validated() {
        let mut s = BandwidthSettings::default();
        s.protection.queuing_delay_target_ms = 0;
        assert!(matches!(
            s.validate(),
            Err(SettingsError::QueuingTargetOutOfRange { .. })
        ));
        s.protection.queuing_delay_target_ms = 15;
        for bad in [
            "",
            "host",
            "host:0",
            "host:99999",
            ":80",
            "::1:80",
            "a b:80",
            "x:y",
        ] {
            s.protection.game_server = Some(bad.into());
            assert!(
                matches!(s.validate(), Err(SettingsError::InvalidGameServer { .. })),
                "{bad:?} accepted"
            );
        }
        for good in [
            "203.0.113.5:27015",
            "play.example.com:25565",
            "[2001:db8::1]:3074",
        ] {
            s.protection.game_server = Some(good.into());
            assert_eq!(s.validate(), Ok(()), "{good:?} rejected");
        }
        assert_eq!(s.game_server(), Some(("2001:db8::1".to_string(), 3074)));
        s.protection.game_processes = vec!["cs2".into(), "  ".into()];
        assert_eq!(s.validate(), Err(SettingsError::InvalidGameProcess));
    }

    #[test]
    fn errors_lists_every_problem() {
        let mut s = manual(
            5,
            8,
            RelayContribution::Custom {
                rate: Bitrate::ZERO,
            },
        );
        s.protection.queuing_delay_target_ms = 1000;
        let fields: Vec<_> = s.errors().iter().map(SettingsError::field).collect();
        assert_eq!(
            fields,
            [
                SettingsField::Reserved,
                SettingsField::Relay,
                SettingsField::Protection
            ]
        );
    }

    #[test]
    fn auto_total_uses_probe_and_clamps_with_warnings() {
        let mut s = BandwidthSettings {
            reserved: ReservedUpload::Manual {
                rate: Bitrate::from_mbps(8),
            },
            relay: RelayContribution::Custom {
                rate: Bitrate::from_mbps(1),
            },
            ..BandwidthSettings::default()
        };
        // Valid as typed: the total is not known yet.
        assert_eq!(s.validate(), Ok(()));
        let e = s.effective(&Measurements::default());
        assert_eq!(e.total_source, TotalSource::NotMeasured);
        assert_eq!(
            (e.total, e.available, e.relay),
            (Bitrate::ZERO, Bitrate::ZERO, Bitrate::ZERO)
        );
        assert!(e.warnings.is_empty());

        s.last_probe = Some(MeasuredUpload {
            rate: Bitrate::from_mbps(5),
            measured_at_unix_ms: 7,
        });
        let e = s.effective(&Measurements::default());
        assert_eq!(
            e.total_source,
            TotalSource::Detected {
                measured_at_unix_ms: 7
            }
        );
        assert_eq!(e.reserved, Bitrate::from_mbps(5));
        assert_eq!(e.available, Bitrate::ZERO);
        assert_eq!(e.relay, Bitrate::ZERO);
        assert_eq!(e.warnings.len(), 2);
        assert_eq!(e.warnings[0].field(), SettingsField::Reserved);
        assert_eq!(e.warnings[1].field(), SettingsField::Relay);
    }

    #[test]
    fn auto_reserve_follows_other_apps_and_game_caps_relay() {
        let s = BandwidthSettings {
            total_upload: TotalUpload::Manual {
                rate: Bitrate::from_mbps(10),
            },
            reserved: ReservedUpload::Auto,
            relay: RelayContribution::High,
            ..BandwidthSettings::default()
        };
        let e = s.effective(&Measurements::default());
        assert_eq!(e.reserved_source, ReservedSource::Estimated);
        assert_eq!(e.reserved, Bitrate::from_kbps(2_500));
        let m = Measurements {
            other_apps_upload: Some(Bitrate::from_mbps(3)),
            game_running: false,
        };
        let e = s.effective(&m);
        assert_eq!(e.reserved_source, ReservedSource::MeasuredOtherApps);
        assert_eq!(e.reserved, Bitrate::from_mbps(4)); // 3 + 10% of 10 headroom
        assert_eq!(e.available, Bitrate::from_mbps(6));
        assert_eq!(e.relay, Bitrate::from_mbps(3));
        let e = s.effective(&Measurements {
            game_running: true,
            ..m
        });
        assert!(e.conservative);
        assert_eq!(e.relay, Bitrate::from_kbps(600)); // capped at "low"
        // Other apps saturating the link leave nothing, never an underflow.
        let m = Measurements {
            other_apps_upload: Some(Bitrate::from_mbps(50)),
            game_running: false,
        };
        let e = s.effective(&m);
        assert_eq!(
            (e.reserved, e.available, e.relay),
            (e.total, Bitrate::ZERO, Bitrate::ZERO)
        );
    }

    #[test]
    fn effective_invariants_hold_for_many_inputs() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..5_000 {
            let r =
                |rng: &mut rand_chacha::ChaCha8Rng| Bitrate::from_kbps(rng.gen_range(0..200_000));
            let s = BandwidthSettings {
                total_upload: if rng.gen_bool(0.5) {
                    TotalUpload::Auto
                } else {
                    TotalUpload::Manual { rate: r(&mut rng) }
                },
                reserved: if rng.gen_bool(0.5) {
                    ReservedUpload::Auto
                } else {
                    ReservedUpload::Manual { rate: r(&mut rng) }
                },
                relay: match rng.gen_range(0..5) {
                    0 => RelayContribution::Off,
                    1 => RelayContribution::Low,
                    2 => RelayContribution::Medium,
                    3 => RelayContribution::High,
                    _ => RelayContribution::Custom { rate: r(&mut rng) },
                },
                last_probe: rng.gen_bool(0.7).then(|| MeasuredUpload {
                    rate: r(&mut rng),
                    measured_at_unix_ms: 0,
                }),
                ..BandwidthSettings::default()
            };
            let m = Measurements {
                other_apps_upload: rng.gen_bool(0.5).then(|| r(&mut rng)),
                game_running: rng.gen_bool(0.2),
            };
            let e = s.effective(&m);
            assert!(e.reserved <= e.total);
            assert_eq!(e.available, e.total - e.reserved);
            assert!(e.relay <= e.available);
            assert!(e.relay_presets.low <= e.relay_presets.medium);
            assert!(e.relay_presets.medium <= e.relay_presets.high);
            assert!(e.relay_presets.high <= e.available);
            if s.relay == RelayContribution::Off {
                assert_eq!(e.relay, Bitrate::ZERO);
            }
            // Settings the validator accepts never produce user-caused warnings when all manual.
            if s.validate().is_ok()
                && matches!(s.total_upload, TotalUpload::Manual { .. })
                && matches!(s.reserved, ReservedUpload::Manual { .. })
            {
                assert!(e.warnings.is_empty());
            }
        }
    }

    #[test]
    fn round_trips_through_json() {
        let mut s = manual(
            20,
            4,
            RelayContribution::Custom {
                rate: Bitrate::from_kbps(1_500),
            },
        );
        s.download_quality = DownloadQuality::P480;
        s.protection.game_server = Some("203.0.113.5:27015".into());
        s.protection.game_processes = vec!["cs2".into()];
        s.last_probe = Some(MeasuredUpload {
            rate: Bitrate::from_mbps(21),
            measured_at_unix_ms: 99,
        });
        let json = s.to_json();
        assert!(json.contains("\"version\": 1"));
        assert!(json.contains("\"level\": \"custom\""));
        assert!(json.contains("\"download_quality\": \"480p\""));
        assert_eq!(BandwidthSettings::from_json(&json), Ok(s));
    }

    #[test]
    fn v0_fixtures_migrate() {
        let s = BandwidthSettings::from_json(include_str!("../tests/fixtures/settings-v0.json"))
            .expect("v0 loads");
        assert_eq!(s.version, SETTINGS_VERSION);
        assert_eq!(
            s.total_upload,
            TotalUpload::Manual {
                rate: Bitrate::from_mbps(10)
            }
        );
        assert_eq!(
            s.reserved,
            ReservedUpload::Manual {
                rate: Bitrate::from_mbps(5)
            }
        );
        assert_eq!(s.relay, RelayContribution::Medium);
        assert_eq!(s.download_quality, DownloadQuality::P720);
        assert_eq!(s.protection, ProtectionSettings::default());

        let s =
            BandwidthSettings::from_json(include_str!("../tests/fixtures/settings-v0-auto.json"))
                .expect("v0 auto loads");
        assert_eq!(s.total_upload, TotalUpload::Auto);
        assert_eq!(s.reserved, ReservedUpload::Auto);
        assert_eq!(
            s.relay,
            RelayContribution::Custom {
                rate: Bitrate::from_kbps(800)
            }
        );
        assert_eq!(s.download_quality, DownloadQuality::AudioOnly);
        // And the migrated record saves as the current version.
        assert_eq!(BandwidthSettings::from_json(&s.to_json()), Ok(s));
    }

    #[test]
    fn unreadable_files_fall_back_to_defaults_with_a_reason() {
        for bad in [
            "",
            "[]",
            "{\"version\": \"one\"}",
            "{\"version\": 1, \"total_upload\": {\"mode\": \"warp\"}}",
            "{\"relay\": \"max\"}",
            "{\"upload_limit_kbps\": -3}",
        ] {
            let (s, err) = BandwidthSettings::load_or_default(bad);
            assert_eq!(s, BandwidthSettings::default());
            assert!(
                matches!(err, Some(SettingsError::Malformed { .. })),
                "{bad:?}: {err:?}"
            );
        }
        let (_, err) = BandwidthSettings::load_or_default("{\"version\": 9}");
        assert_eq!(
            err,
            Some(SettingsError::NewerVersion {
                found: 9,
                supported: 1
            })
        );
        // Invalid values in a well-formed file are reported as such.
        let (_, err) = BandwidthSettings::load_or_default("{\"upload_limit_kbps\": 0}");
        assert_eq!(err, Some(SettingsError::TotalZero));
    }

    #[test]
    fn mangled_files_never_panic() {
        // Outside bytes (a hand-edited or corrupted file): every mutation either loads a valid
        // record or returns an error; none panics.
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let seeds = [
            manual(
                20,
                4,
                RelayContribution::Custom {
                    rate: Bitrate::from_kbps(1_500),
                },
            )
            .to_json(),
            include_str!("../tests/fixtures/settings-v0.json").to_string(),
            include_str!("../tests/fixtures/settings-v0-auto.json").to_string(),
        ];
        let mut loaded = 0;
        for i in 0..20_000 {
            let mut bytes = seeds[i % seeds.len()].clone().into_bytes();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..bytes.len());
                match rng.gen_range(0..3) {
                    0 => bytes[at] = rng.r#gen(),
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, b"0123456789-.:{}[]\",e"[rng.gen_range(0..19)]),
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(s) = BandwidthSettings::from_json(&text) {
                assert_eq!(s.validate(), Ok(()));
                loaded += 1;
            }
        }
        assert!(
            loaded > 100,
            "some mutations (e.g. in numbers) still load: {loaded}"
        );
    }

    #[test]
    fn json_schema_names_the_public_shape() {
        let schema = schemars::schema_for!(BandwidthSettings);
        let text = serde_json::to_string(&schema).unwrap();
        for needle in [
            "total_upload",
            "relay",
            "download_quality",
            "1080p",
            "custom",
        ] {
            assert!(text.contains(needle), "schema lacks {needle}");
        }
        let _ = schemars::schema_for!(EffectiveBudget);
    }
}
