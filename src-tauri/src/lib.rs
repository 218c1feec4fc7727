//! Hum's desktop app: a thin Tauri adapter over hum-engine.
//!
//! - `commands/`: one module per domain; IPC request/response.
//! - `channels`: `ipc::Channel` streams (levels, stats).
//! - `error`: the one error every command returns.
//! - `bindings`: the tauri-specta builder; generates ui/src/lib/bindings.ts.
//! - `desktop`: one app per data directory; `hum://` links handed over by later launches.
//! - `notifications`: an incoming call, a reduced relay, while the window is in the background.
//! - `tray`: the tray icon (mute, deafen, leave, relay on/off) over the UI's own actions.
//! - `settings_store`: settings persistence (tauri-plugin-store); the identity file is hum-engine's.
//!
//! The app data dir is the platform's (e.g. ~/.local/share/chat.hum.desktop) unless `HUM_DATA_DIR`
//! names another, which the end-to-end test uses to start from a clean slate. The webview keeps its
//! storage (localStorage: dismissed notices, layout choices) in the same directory, so one data
//! directory is one whole profile.

pub mod bindings;
pub mod channels;
pub mod commands;
pub mod desktop;
pub mod error;
pub mod notifications;
pub mod settings_store;
pub mod state;
pub mod tray;
pub mod webview_tuning;

use std::path::PathBuf;

use tauri::Manager;
use tauri_plugin_store::StoreExt;

use crate::settings_store::PluginKv;
use crate::state::AppState;

/// `HUM_DATA_DIR`, else the platform's data directory for `identifier` (what Tauri's
/// `app_data_dir` is; computed without an app so the single-instance check can run first).
pub(crate) fn data_dir(identifier: &str) -> Result<PathBuf, String> {
    match std::env::var_os("HUM_DATA_DIR") {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => dirs::data_dir()
            .map(|d| d.join(identifier))
            .ok_or_else(|| "no data directory (HOME is not set)".to_owned()),
    }
}

/// Creates the main window (tauri.conf.json has it with `create: false`) with its webview storage
/// in `dir`. Tauri's default is the platform's data directory whatever `HUM_DATA_DIR` says, so two
/// profiles (or two end-to-end runs) would share localStorage.
fn main_window(app: &tauri::App, dir: &std::path::Path) -> tauri::Result<()> {
    let config = app
        .config()
        .app
        .windows
        .iter()
        .find(|w| w.label == "main")
        .cloned()
        .unwrap_or_default();
    tauri::WebviewWindowBuilder::from_config(app, &config)?
        .data_directory(dir.to_path_buf())
        .build()?;
    Ok(())
}

pub fn run() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,hum_app_lib=debug".into()),
        )
        .init();

    let context = tauri::generate_context!();
    let dir = match data_dir(&context.config().identifier) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("hum-app: {e}");
            std::process::exit(1);
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    // A second launch hands its arguments (a hum:// link) to the running app and exits here.
    let primary = desktop::claim(&dir, &args);

    let builder = bindings::builder();
    #[cfg(debug_assertions)]
    if std::env::var_os("HUM_NO_BINDINGS_EXPORT").is_none()
        && let Err(e) = bindings::export(&bindings::bindings_path())
    {
        tracing::warn!("could not refresh ui/src/lib/bindings.ts: {e}");
    }

    let result = tauri::Builder::default()
        .plugin(desktop::instance_plugin(primary, args))
        .plugin(tauri_plugin_store::Builder::new().build())
        .plugin(tauri_plugin_global_shortcut::Builder::new().build())
        .plugin(webview_tuning::plugin())
        .invoke_handler(builder.invoke_handler())
        .on_window_event(|window, event| {
            // Close to tray (a setting, off by default; only with a tray to come back from).
            if let tauri::WindowEvent::CloseRequested { api, .. } = event {
                let app = window.app_handle();
                let to_tray = app
                    .try_state::<AppState>()
                    .is_some_and(|s| commands::desktop::load(&s).close_to_tray)
                    && app
                        .try_state::<tray::TrayState>()
                        .is_some_and(|t| t.present());
                if to_tray {
                    api.prevent_close();
                    let _ = window.hide();
                }
            }
        })
        .setup(move |app| {
            builder.mount_events(app);
            std::fs::create_dir_all(&dir)?;
            tracing::info!(data_dir = %dir.display(), "starting");
            main_window(app, &dir)?;
            let store = app.store(dir.join("settings.json"))?;
            let state = AppState::load(dir, Box::new(PluginKv(store)))?;
            let voice = commands::voice::load(&state);
            if let Err(e) = commands::voice::apply_shortcut(app.handle(), &voice) {
                tracing::warn!("push-to-talk hotkey not registered: {}", e.message);
            }
            let tray = tray::TrayState::default();
            match tray::install(app.handle(), &tray) {
                Ok(true) => tracing::info!("tray icon installed"),
                Ok(false) => {}
                Err(e) => tracing::warn!("no tray icon: {e}"),
            }
            let minimized = std::env::args().any(|a| a == commands::desktop::MINIMIZED_ARG);
            if minimized && let Some(w) = app.webview_windows().values().next() {
                // Started at login: out of the way, to the tray when there is one.
                let _ = if tray.present() {
                    w.hide()
                } else {
                    w.minimize()
                };
            }
            app.manage(tray);
            notifications::install(app.handle());
            let has_identity = state.identity().is_ok();
            app.manage(state);
            app.manage(commands::live::LiveState::default());
            if has_identity {
                let handle = app.handle().clone();
                tauri::async_runtime::spawn(async move {
                    if let Err(e) = commands::connection::start(&handle).await {
                        tracing::warn!("relay not started: {}", e.message);
                    }
                });
            }
            Ok(())
        })
        .run(context);
    if let Err(e) = result {
        eprintln!("hum-app: {e}");
        std::process::exit(1);
    }
}
