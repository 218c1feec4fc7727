//! Living on the desktop: one app per data directory, and links handed over by later launches
//! (the desktop entry registers the `hum` URL scheme: `hum-app %u`).
//!
//! The single-instance check is a plugin so it runs while the app is being built, before any window
//! exists: a second launch hands its arguments over and exits without flashing a window.

use tauri::plugin::{Builder, TauriPlugin};
use tauri::{AppHandle, Manager, RunEvent, Runtime};
use tauri_specta::Event;

use hum_engine::instance::{self, Instance};

use crate::commands::links::{LinkInbox, LinkOpened};

/// Held by the app while it is the running instance; dropping it removes the socket.
struct InstanceGuard(std::sync::Mutex<Option<instance::SocketGuard>>);

pub fn instance_plugin() -> TauriPlugin<tauri::Wry> {
    Builder::new("hum-instance")
        .setup(|app, _api| {
            let args: Vec<String> = std::env::args().skip(1).collect();
            let inbox = LinkInbox::default();
            inbox.push_args(&args);
            app.manage(inbox);
            let dir = crate::data_dir(app)?;
            std::fs::create_dir_all(&dir)?;
            match instance::acquire(&dir, &args) {
                Ok(Instance::Forwarded) => {
                    eprintln!("Hum is already running: handed over to it.");
                    app.cleanup_before_exit();
                    std::process::exit(0);
                }
                Ok(Instance::Primary(instance::Primary { incoming, guard })) => {
                    let handle = app.clone();
                    std::thread::Builder::new()
                        .name("hum-links".into())
                        .spawn(move || {
                            for args in incoming {
                                arrived(&handle, &args);
                            }
                        })?;
                    app.manage(InstanceGuard(std::sync::Mutex::new(Some(guard))));
                }
                Err(e) => tracing::warn!("{e}; later launches will open a second window"),
            }
            Ok(())
        })
        .on_event(|app, event| {
            if let RunEvent::Exit = event
                && let Some(guard) = app.try_state::<InstanceGuard>()
            {
                // Give the socket up as soon as we are leaving, so a launch right after us starts
                // fresh instead of handing its arguments to an app that is going away.
                guard.0.lock().unwrap_or_else(|e| e.into_inner()).take();
            }
        })
        .build()
}

/// A later launch: bring the window forward and tell the UI about any link it carried.
fn arrived<R: Runtime>(app: &AppHandle<R>, args: &[String]) {
    tracing::info!(?args, "a second launch handed over");
    focus_main(app);
    if app.state::<LinkInbox>().push_args(args) > 0 {
        let _ = LinkOpened.emit(app);
    }
}

/// Brings the app's window forward (shown if hidden, restored if minimised, focused).
pub fn focus_main<R: Runtime>(app: &AppHandle<R>) {
    if let Some(w) = app.webview_windows().values().next() {
        let _ = w.unminimize();
        let _ = w.show();
        let _ = w.set_focus();
    }
}
