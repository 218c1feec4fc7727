//! Hum's desktop app: a thin Tauri adapter over hum-engine.
//!
//! - `commands/`: one module per domain; IPC request/response.
//! - `channels`: `ipc::Channel` streams (levels, stats).
//! - `error`: the one error every command returns.
//! - `bindings`: the tauri-specta builder; generates ui/src/lib/bindings.ts.
//! - `desktop`: one app per data directory; `hum://` links handed over by later launches.
//! - `settings_store`: settings persistence (tauri-plugin-store); the identity file is hum-engine's.
//!
//! The app data dir is the platform's (e.g. ~/.local/share/chat.hum.desktop) unless `HUM_DATA_DIR`
//! names another, which the end-to-end test uses to start from a clean slate.

pub mod bindings;
pub mod channels;
pub mod commands;
pub mod desktop;
pub mod error;
pub mod settings_store;
pub mod state;
pub mod webview_tuning;

use std::path::PathBuf;

use tauri::Manager;
use tauri_plugin_store::StoreExt;

use crate::settings_store::PluginKv;
use crate::state::AppState;

pub(crate) fn data_dir(app: &tauri::AppHandle) -> Result<PathBuf, Box<dyn std::error::Error>> {
    match std::env::var_os("HUM_DATA_DIR") {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => Ok(app.path().app_data_dir()?),
    }
}

pub fn run() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,hum_app_lib=debug".into()),
        )
        .init();

    let builder = bindings::builder();
    #[cfg(debug_assertions)]
    if std::env::var_os("HUM_NO_BINDINGS_EXPORT").is_none()
        && let Err(e) = bindings::export(&bindings::bindings_path())
    {
        tracing::warn!("could not refresh ui/src/lib/bindings.ts: {e}");
    }

    let result = tauri::Builder::default()
        .plugin(desktop::instance_plugin())
        .plugin(tauri_plugin_store::Builder::new().build())
        .plugin(tauri_plugin_global_shortcut::Builder::new().build())
        .plugin(webview_tuning::plugin())
        .invoke_handler(builder.invoke_handler())
        .setup(move |app| {
            builder.mount_events(app);
            let dir = data_dir(app.handle())?;
            std::fs::create_dir_all(&dir)?;
            tracing::info!(data_dir = %dir.display(), "starting");
            let store = app.store(dir.join("settings.json"))?;
            let state = AppState::load(dir, Box::new(PluginKv(store)))?;
            let voice = commands::voice::load(&state);
            if let Err(e) = commands::voice::apply_shortcut(app.handle(), &voice) {
                tracing::warn!("push-to-talk hotkey not registered: {}", e.message);
            }
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
        .run(tauri::generate_context!());
    if let Err(e) = result {
        eprintln!("hum-app: {e}");
        std::process::exit(1);
    }
}
