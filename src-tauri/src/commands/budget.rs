//! The bandwidth budget at runtime: the app runs hum-engine's `BudgetService` next to the relay
//! client, so auto-detect shows a measured upload (the relay's `/probe`), "measure again" runs a
//! test on demand, and the throttler's relay cap and messages reach the panel.
//!
//! - Started (and restarted) with the relay client: the probe URL is the relay's address with the
//!   path `/probe`. The policy runs a full test when nothing is stored (so a first run measures by
//!   itself within a few seconds of connecting), then brief re-tests every 6 h.
//! - Results are persisted into the saved bandwidth settings (`last_probe`), so they survive a
//!   restart and every preview of edited settings uses them.
//! - The relay RTT probe (a signalling ping every 100 ms) only runs while relaying is on: with the
//!   default "off" there is nothing to protect, and an idle app should not ping 10 times a second.

use std::sync::Arc;
use std::time::Duration;

use hum_budget::{
    BandwidthSettings as Budget, MeasuredUpload, ProbeKind, RelayContribution,
    settings::MeasuredUpload as StoredProbe,
};
use hum_engine::RelayClient;
use hum_engine::budget::{BudgetConfig, BudgetEvent, BudgetService, RelayPingProber};
use serde::{Deserialize, Serialize};
use specta::Type;
use tauri::{AppHandle, Manager, State};
use tauri_specta::Event as _;

use super::settings::{self, wire};
use crate::error::{CmdResult, CommandError, ErrorCode};
use crate::settings_store::keys;
use crate::state::AppState;

/// What the bandwidth panel shows about the running budget.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct BudgetStatus {
    /// The service runs (a relay is configured).
    pub running: bool,
    /// A test started from the panel is running.
    pub measuring: bool,
    /// The throttler's relay cap now, bits per second: the setting, less what it took off to
    /// protect the connection.
    pub relay_cap: u64,
    /// The throttler watches the relay's RTT (only while relaying is on).
    pub throttling: bool,
    /// The latest thing worth telling: "Reduced relay to protect your connection", a failed test.
    pub message: Option<String>,
    /// A game from the user's list is running.
    pub game: Option<String>,
    /// The latest measured upload (also saved in the settings).
    pub last_probe: Option<wire::MeasuredUpload>,
}

/// The budget's status changed (a measurement, the throttler, a game).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Type, tauri_specta::Event)]
pub struct BudgetChanged {
    pub status: BudgetStatus,
}

/// The running service and its event forwarder.
pub struct BudgetRuntime {
    pub service: BudgetService,
    forwarder: tokio::task::JoinHandle<()>,
    relay_on: bool,
}

impl BudgetRuntime {
    pub fn stop(self) {
        self.service.shutdown();
        self.forwarder.abort();
    }
}

/// `ws://host:port/ws` -> `ws://host:port/probe` (the relay's bandwidth test).
pub fn probe_url(relay_url: &str) -> Option<String> {
    let (scheme, rest) = relay_url.split_once("://")?;
    if scheme != "ws" && scheme != "wss" {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}/probe"))
}

/// The newer of two measurements.
pub fn newest(a: Option<StoredProbe>, b: Option<StoredProbe>) -> Option<StoredProbe> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.measured_at_unix_ms > a.measured_at_unix_ms {
            b
        } else {
            a
        }),
        (a, b) => a.or(b),
    }
}

/// Saves a measurement into the stored bandwidth settings (unless a newer one is there).
pub fn store_probe(state: &AppState, m: MeasuredUpload) -> CmdResult<()> {
    let (mut stored, _) = settings::load_bandwidth(state);
    let probe = StoredProbe {
        rate: m.rate,
        measured_at_unix_ms: m.measured_at_unix_ms,
    };
    stored.last_probe = newest(stored.last_probe, Some(probe));
    let value = serde_json::from_str(&stored.to_json()).map_err(CommandError::internal)?;
    state
        .kv
        .set(keys::BANDWIDTH, value)
        .map_err(|e| CommandError::storage("Could not save the measured upload", e))
}

fn status_update(app: &AppHandle, f: impl FnOnce(&mut BudgetStatus)) {
    let state = app.state::<AppState>();
    let status = {
        let Ok(mut s) = state.budget_status.lock() else {
            return;
        };
        f(&mut s);
        s.clone()
    };
    if let Err(e) = (BudgetChanged { status }).emit(app) {
        tracing::debug!("budget status not delivered: {e}");
    }
}

fn wire_probe(m: MeasuredUpload) -> wire::MeasuredUpload {
    wire::MeasuredUpload {
        rate: m.rate.bps(),
        measured_at_unix_ms: m.measured_at_unix_ms,
    }
}

/// (Re)starts the service for `client` at `relay_url` with the saved settings. Must run inside
/// the async runtime.
pub fn start(app: &AppHandle, client: &RelayClient, relay_url: &str) {
    let state = app.state::<AppState>();
    stop(&state);
    let (saved, _) = settings::load_bandwidth(&state);
    let relay_on = saved.relay != RelayContribution::Off;
    let last_probe = saved.last_probe;
    let mut config = BudgetConfig::new(saved);
    config.probe_url = probe_url(relay_url);
    config.auto_probe = true;
    if relay_on {
        config.relay_prober = Some(Arc::new(RelayPingProber::new(
            client.clone(),
            Duration::from_secs(1),
        )));
        config.throttler.probe_interval = RelayPingProber::THROTTLER_INTERVAL;
    }
    let service = BudgetService::spawn(config);
    let mut events = service.subscribe();
    let handle = app.clone();
    let forwarder = tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let ev = match events.recv().await {
                Ok(ev) => ev,
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            };
            match ev {
                BudgetEvent::BandwidthMeasured(m) => {
                    if let Err(e) = store_probe(&handle.state::<AppState>(), m) {
                        tracing::warn!("{}", e.message);
                    }
                    status_update(&handle, |s| {
                        s.last_probe = Some(wire_probe(m));
                        s.message = None;
                    });
                }
                BudgetEvent::BandwidthTestFailed(msg) => status_update(&handle, |s| {
                    s.message = Some(msg);
                }),
                BudgetEvent::RelayCap { cap } => status_update(&handle, |s| {
                    s.relay_cap = cap.bps();
                }),
                BudgetEvent::RelayReduced { cap, message, .. }
                | BudgetEvent::RelayRestored { cap, message } => status_update(&handle, |s| {
                    s.relay_cap = cap.bps();
                    s.message = Some(message);
                }),
                BudgetEvent::LowerViewingLayer { message, .. } => {
                    status_update(&handle, |s| s.message = Some(message))
                }
                BudgetEvent::GameRunning(game) => status_update(&handle, |s| s.game = game),
                BudgetEvent::Effective(_) => {}
            }
        }
    });
    let cap = service.relay_cap().bps();
    if let Ok(mut slot) = state.budget.lock() {
        *slot = Some(BudgetRuntime {
            service,
            forwarder,
            relay_on,
        });
    }
    status_update(app, |s| {
        s.running = true;
        s.throttling = relay_on;
        s.relay_cap = cap;
        s.last_probe = last_probe.map(|p| wire::MeasuredUpload {
            rate: p.rate.bps(),
            measured_at_unix_ms: p.measured_at_unix_ms,
        });
    });
}

pub fn stop(state: &AppState) {
    let old = state.budget.lock().ok().and_then(|mut b| b.take());
    if let Some(old) = old {
        old.stop();
    }
}

pub fn service(state: &AppState) -> Option<BudgetService> {
    state
        .budget
        .lock()
        .ok()?
        .as_ref()
        .map(|r| r.service.clone())
}

/// Saved settings changed: the service enforces them now; turning relaying on or off restarts
/// it (the relay RTT probe runs only while relaying is on).
pub fn settings_saved(app: &AppHandle, saved: &Budget) {
    let state = app.state::<AppState>();
    let (svc, was_on) = match state
        .budget
        .lock()
        .ok()
        .and_then(|b| b.as_ref().map(|r| (r.service.clone(), r.relay_on)))
    {
        Some(x) => x,
        None => return,
    };
    if let Err(e) = svc.set_settings(saved.clone()) {
        tracing::warn!("budget refused saved settings: {e}");
    }
    let now_on = saved.relay != RelayContribution::Off;
    if now_on != was_on {
        let app = app.clone();
        tauri::async_runtime::spawn(async move {
            let state = app.state::<AppState>();
            if let (Ok(client), Ok(s)) = (state.relay(), settings::get(&state)) {
                start(&app, &client, &s.relay_url);
            }
        });
    }
}

/// Measures the upload to the relay now (about 4 s) and saves it; returns the panel's numbers.
#[tauri::command]
#[specta::specta]
pub async fn bandwidth_measure(
    app: AppHandle,
    state: State<'_, AppState>,
) -> CmdResult<wire::BandwidthReport> {
    let svc = service(&state).ok_or_else(|| {
        CommandError::new(
            ErrorCode::RelayUnavailable,
            "Connect to a relay first: the test measures your upload to it.",
        )
    })?;
    status_update(&app, |s| {
        s.measuring = true;
        s.message = None;
    });
    let result = svc.run_bandwidth_test(ProbeKind::Full).await;
    status_update(&app, |s| {
        s.measuring = false;
        if let Ok(m) = &result {
            s.last_probe = Some(wire_probe(*m));
        }
    });
    let m = result.map_err(|e| CommandError::new(ErrorCode::RelayUnavailable, e.to_string()))?;
    store_probe(&state, m)?;
    let (saved, _) = settings::load_bandwidth(&state);
    settings::report(&state, &saved)
}

#[tauri::command]
#[specta::specta]
pub fn budget_status(state: State<'_, AppState>) -> CmdResult<BudgetStatus> {
    Ok(state
        .budget_status
        .lock()
        .map_err(CommandError::internal)?
        .clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings_store::MemoryKv;
    use hum_proto::Bitrate;

    #[test]
    fn probe_url_is_the_relays_host_with_path_probe() {
        assert_eq!(
            probe_url("ws://127.0.0.1:7700/ws").as_deref(),
            Some("ws://127.0.0.1:7700/probe")
        );
        assert_eq!(
            probe_url("wss://relay.example.org/ws?x=1").as_deref(),
            Some("wss://relay.example.org/probe")
        );
        assert_eq!(probe_url("http://x/ws"), None);
        assert_eq!(probe_url("ws:///ws"), None);
    }

    #[test]
    fn a_measurement_is_saved_and_the_newer_one_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = AppState::load(dir.path().into(), Box::new(MemoryKv::default())).expect("load");
        let before = settings::get(&s).expect("get");
        assert_eq!(
            before.bandwidth_report.effective.total_source,
            wire::TotalSource::NotMeasured
        );
        let m = |mbps, at| MeasuredUpload {
            rate: Bitrate::from_mbps(mbps),
            measured_at_unix_ms: at,
        };
        store_probe(&s, m(40, 2_000)).expect("store");
        store_probe(&s, m(10, 1_000)).expect("older one ignored");
        let after = settings::get(&s).expect("get");
        assert_eq!(after.bandwidth_report.effective.total, 40_000_000);
        assert_eq!(
            after.bandwidth_report.effective.total_source,
            wire::TotalSource::Detected {
                measured_at_unix_ms: 2_000
            }
        );
        assert_eq!(
            after.bandwidth.last_probe,
            Some(wire::MeasuredUpload {
                rate: 40_000_000,
                measured_at_unix_ms: 2_000
            })
        );
    }
}
