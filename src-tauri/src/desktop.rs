//! Living on the desktop: one app per data directory, and links handed over by later launches
//! (the desktop entry registers the `hum` URL scheme: `hum-app %u`).
//!
//! The single-instance check runs in `run()` before Tauri starts (no toolkit, no window): a second
//! launch hands its arguments over and exits cleanly. The running app's side is a plugin that takes
//! what later launches send.

use tauri::plugin::{Builder, TauriPlugin};
use tauri::{AppHandle, Manager, RunEvent, Runtime};
use tauri_specta::Event;

use hum_engine::instance::{self, Instance};

use crate::commands::links::{LinkInbox, LinkOpened};

/// Held by the app while it is the running instance; dropping it removes the socket.
struct InstanceGuard(std::sync::Mutex<Option<instance::SocketGuard>>);

/// Becomes the running instance for `dir`, or hands `args` to the one that is and exits the process
/// (before any toolkit is loaded). None: no single-instance socket (logged); the app runs anyway.
pub fn claim(dir: &std::path::Path, args: &[String]) -> Option<instance::Primary> {
    if let Err(e) = std::fs::create_dir_all(dir) {
        tracing::warn!("data directory {}: {e}", dir.display());
        return None;
    }
    match instance::acquire(dir, args) {
        Ok(Instance::Forwarded) => {
            eprintln!("Hum is already running: handed over to it.");
            std::process::exit(0);
        }
        Ok(Instance::Primary(p)) => Some(p),
        Err(e) => {
            tracing::warn!("{e}; later launches will open a second window");
            None
        }
    }
}

/// The running instance's side: the links given at start wait in the inbox for the UI, later
/// launches' arguments bring the window forward and add theirs.
pub fn instance_plugin(
    primary: Option<instance::Primary>,
    args: Vec<String>,
) -> TauriPlugin<tauri::Wry> {
    let primary = std::sync::Mutex::new(primary);
    Builder::new("hum-instance")
        .setup(move |app, _api| {
            let inbox = LinkInbox::default();
            inbox.push_args(&args);
            app.manage(inbox);
            if let Some(instance::Primary { incoming, guard }) =
                primary.lock().unwrap_or_else(|e| e.into_inner()).take()
            {
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
