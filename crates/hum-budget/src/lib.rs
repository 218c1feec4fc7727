//! Hum's bandwidth budget: how much of the user's upload Hum may use, and how much of that may go to
//! relaying other viewers' stream chunks, without making the user's game lag.
//!
//! - [`settings`]: the user's choices (total upload, reserved for other apps, relay contribution,
//!   download quality), validated and versioned, and the effective numbers the settings panel shows.
//! - [`throttler`]: RTT probes, base RTT and queuing delay; cuts the relay cap when a queue
//!   builds on the uplink, restores it when the queue is gone.
//! - [`probe`]: bandwidth auto-detect policy and the upload test against the relay's `/probe`.
//! - [`other_apps`]: other apps' upload (interface minus Hum) and the game-process check.
//! - [`bucket`]: Hum's one token bucket (uploads, the mesh's serve queues, the relay's limits).
//! - [`limiter`]: hierarchical token buckets; relay uploads wait, own sending has priority.
//!
//! Everything here is sans-IO: no clock is read and no socket is owned. Time is an input.

pub mod bucket;
pub mod limiter;
pub mod other_apps;
pub mod probe;
pub mod settings;
pub mod throttler;

pub use bucket::TokenBucket;
/// Every rate in this crate is a [`hum_proto::Bitrate`].
pub use hum_proto::Bitrate;
pub use limiter::{Admit, LimiterConfig, LimiterStats, TrafficClass, UploadLimiter};
pub use other_apps::{OtherAppsConfig, OtherAppsEstimator, running_game};
pub use probe::{
    ProbeConfig, ProbeDecision, ProbeError, ProbeKind, ProbeScheduler, ProbeStep, ProbeUpload,
};
pub use settings::{
    BandwidthSettings, DownloadQuality, EffectiveBudget, MeasuredUpload, Measurements,
    ProtectionSettings, RelayContribution, RelayPresets, ReservedSource, ReservedUpload,
    SettingsError, SettingsField, TotalSource, TotalUpload,
};
pub use throttler::{
    ProbePath, ThrottleEvent, ThrottleOutput, ThrottleState, Throttler, ThrottlerConfig,
};
