//! Living with Hum on the desktop: start on login and close to tray, both off by default (a voice
//! app that starts itself or survives its close button should be the user's choice).
//!
//! Start on login is the platform's own mechanism: an XDG autostart entry
//! ($XDG_CONFIG_HOME/autostart/hum.desktop) on Linux, the `auto-launch` crate's launch agent or Run
//! key on macOS and Windows. What is shown is read back from the system, so an entry removed by hand
//! shows as off. The entry starts
//! `hum-app --minimized`: to the tray when there is one, minimised otherwise.

use serde::{Deserialize, Serialize};
use specta::Type;
use tauri::State;

use crate::error::{CmdResult, CommandError};
use crate::settings_store::keys;
use crate::state::AppState;
use crate::tray::TrayState;

/// The argument the login entry passes.
pub const MINIMIZED_ARG: &str = "--minimized";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
#[serde(default)]
pub struct DesktopSettings {
    /// Start Hum when I log in (to the tray, or minimised).
    pub start_on_login: bool,
    /// The window's close button hides Hum to the tray instead of quitting (needs a tray).
    pub close_to_tray: bool,
}

/// The settings plus what this desktop offers.
#[derive(Clone, Debug, PartialEq, Serialize, Type)]
pub struct DesktopView {
    pub settings: DesktopSettings,
    /// A tray icon is shown (libayatana-appindicator is installed).
    pub tray: bool,
    /// Why start on login cannot be changed here, if it cannot.
    pub autostart_error: Option<String>,
}

pub fn load(state: &AppState) -> DesktopSettings {
    state
        .kv
        .get(keys::DESKTOP)
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

fn own_program() -> Result<std::path::PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("cannot find Hum's own program: {e}"))
}

/// Linux: an XDG autostart entry, written here rather than by `auto-launch` (0.5 fails when
/// ~/.config does not exist yet, ignores XDG_CONFIG_HOME and does not quote the program path).
#[cfg(target_os = "linux")]
mod login {
    use std::path::{Path, PathBuf};

    pub fn entry() -> Result<PathBuf, String> {
        let config = match std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from) {
            Some(dir) if dir.is_absolute() => dir,
            _ => std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".config"))
                .ok_or("no home directory (HOME is not set)")?,
        };
        Ok(config.join("autostart").join("hum.desktop"))
    }

    /// A desktop-entry Exec argument: quoted, with `"`, `` ` ``, `$` and `\` escaped, and the
    /// backslashes doubled again for the file's string syntax.
    fn exec_arg(path: &Path) -> String {
        let mut q = String::from("\"");
        for c in path.to_string_lossy().chars() {
            match c {
                '"' | '`' | '$' => q.push_str(&format!("\\\\{c}")),
                '\\' => q.push_str("\\\\\\\\"),
                c => q.push(c),
            }
        }
        q.push('"');
        q
    }

    pub fn text(program: &Path) -> String {
        format!(
            "[Desktop Entry]\nType=Application\nName=Hum\nComment=Start Hum in the tray when you log in\nExec={} {}\nIcon=hum-app\nTerminal=false\nX-GNOME-Autostart-enabled=true\n",
            exec_arg(program),
            super::MINIMIZED_ARG
        )
    }

    pub fn enabled() -> Result<bool, String> {
        Ok(entry()?.exists())
    }

    pub fn set(on: bool, program: &Path) -> Result<(), String> {
        let path = entry()?;
        if !on {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                _ => Ok(()),
            };
        }
        let dir = path.parent().expect("the entry is in a directory");
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let tmp = dir.join(".hum.desktop.tmp");
        std::fs::write(&tmp, text(program)).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// macOS and Windows: the `auto-launch` crate (a launch agent, the Run key).
#[cfg(not(target_os = "linux"))]
mod login {
    use std::path::Path;

    fn launcher(program: &Path) -> Result<auto_launch::AutoLaunch, String> {
        let exe = program.to_str().ok_or("Hum's program path is not UTF-8")?;
        auto_launch::AutoLaunchBuilder::new()
            .set_app_name("Hum")
            .set_app_path(exe)
            .set_args(&[super::MINIMIZED_ARG])
            .build()
            .map_err(|e| e.to_string())
    }

    pub fn enabled() -> Result<bool, String> {
        launcher(&super::own_program()?)?
            .is_enabled()
            .map_err(|e| e.to_string())
    }

    pub fn set(on: bool, program: &Path) -> Result<(), String> {
        let l = launcher(program)?;
        if on { l.enable() } else { l.disable() }.map_err(|e| e.to_string())
    }
}

#[cfg(target_os = "linux")]
pub use login::{entry as autostart_entry, text as autostart_text};

/// Whether the platform will start Hum at login (read back from the system).
pub fn autostart_enabled() -> Result<bool, String> {
    login::enabled()
}

/// Adds or removes the login entry for this program.
pub fn set_autostart(on: bool) -> Result<(), String> {
    login::set(on, &own_program()?)
}

fn view(state: &AppState, tray: &TrayState) -> DesktopView {
    let mut settings = load(state);
    let autostart_error = match autostart_enabled() {
        Ok(on) => {
            settings.start_on_login = on;
            None
        }
        Err(e) => Some(e),
    };
    DesktopView {
        settings,
        tray: tray.present(),
        autostart_error,
    }
}

#[tauri::command]
#[specta::specta]
pub fn desktop_settings_get(state: State<'_, AppState>, tray: State<'_, TrayState>) -> DesktopView {
    view(&state, &tray)
}

/// Saves the settings and adds or removes the login entry.
#[tauri::command]
#[specta::specta]
pub fn desktop_settings_set(
    state: State<'_, AppState>,
    tray: State<'_, TrayState>,
    settings: DesktopSettings,
) -> CmdResult<DesktopView> {
    if settings.close_to_tray && !tray.present() {
        return Err(CommandError::invalid(
            "There is no tray icon on this desktop, so Hum could not be brought back after closing: install libayatana-appindicator3-1 (or your desktop's AppIndicator support) first.",
        ));
    }
    if settings.start_on_login != autostart_enabled().unwrap_or(!settings.start_on_login) {
        set_autostart(settings.start_on_login)
            .map_err(|e| CommandError::storage("Could not change starting Hum at login", e))?;
    }
    let value = serde_json::to_value(&settings).map_err(CommandError::internal)?;
    state
        .kv
        .set(keys::DESKTOP, value)
        .map_err(|e| CommandError::storage("Could not save the desktop settings", e))?;
    Ok(view(&state, &tray))
}

/// What `update_check` found: this app's version and the release the relay announces.
#[derive(Clone, Debug, PartialEq, Serialize, Type)]
pub struct UpdateView {
    /// This app's version.
    pub current: String,
    /// The newest release the relay announces (null: it announces none).
    pub latest: Option<String>,
    /// Where to get it (shown and copied, never opened or downloaded by Hum).
    pub url: Option<String>,
    pub notes: Option<String>,
    /// `latest` is newer than `current`.
    pub newer: bool,
}

/// Asks the relay for the newest client release (`client_release`) and compares it with this
/// app's version. Hum never downloads or replaces itself.
#[tauri::command]
#[specta::specta]
pub async fn update_check(state: State<'_, AppState>) -> CmdResult<UpdateView> {
    use hum_engine::update::{self, UpdateError};
    let relay = state.relay()?;
    let status = update::check(&relay, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| match e {
            UpdateError::Client(e) => crate::commands::connection::client_error(e),
            UpdateError::BadRelease(e) => CommandError::new(
                crate::error::ErrorCode::Rejected,
                format!("The relay announced a release Hum cannot use: {e}."),
            ),
            UpdateError::Current(_) => CommandError::internal(e),
        })?;
    let (latest, url, notes) = match status.release {
        Some(r) => (Some(r.version), Some(r.url), r.notes),
        None => (None, None, None),
    };
    Ok(UpdateView {
        current: status.current,
        latest,
        url,
        notes,
        newer: status.newer,
    })
}
