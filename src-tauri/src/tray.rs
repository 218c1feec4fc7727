//! The tray icon: open Hum, mute, deafen, leave the voice channel, relay for viewers on/off, quit.
//!
//! The tray only shows state and forwards clicks. The UI owns the actions (the same code as its
//! own buttons) and tells the tray what to show with `tray_sync` whenever the state changes, so the
//! two can never disagree for long. A click on Mute/Deafen/Leave/Relay becomes a `TrayClicked`
//! event for the UI; Open and Quit are handled here.
//!
//! Linux trays go through libayatana-appindicator (StatusNotifierItem), which tray-icon loads at
//! run time and panics on when it is missing: the library is probed first and without it the app
//! simply runs with no tray (and says so in its log). Desktops without a StatusNotifier host
//! (plain GNOME without the AppIndicator extension) show no icon even with the library.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use specta::Type;
use tauri::menu::{CheckMenuItem, Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::{TrayIcon, TrayIconBuilder};
use tauri::{AppHandle, State, Wry};
use tauri_specta::Event;

/// A tray click for the UI to carry out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
#[serde(rename_all = "snake_case")]
pub enum TrayAction {
    Mute,
    Deafen,
    Leave,
    Relay,
}

impl TrayAction {
    fn from_id(id: &str) -> Option<TrayAction> {
        Some(match id {
            "mute" => TrayAction::Mute,
            "deafen" => TrayAction::Deafen,
            "leave" => TrayAction::Leave,
            "relay" => TrayAction::Relay,
            _ => return None,
        })
    }
}

/// The user clicked a tray entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Type, Event)]
pub struct TrayClicked {
    pub action: TrayAction,
}

/// What the tray shows, as the UI knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct TrayView {
    /// The voice channel I am in (its name), if any.
    pub channel: Option<String>,
    pub muted: bool,
    pub deafened: bool,
    /// Relaying livestream chunks for other viewers is on (bandwidth settings' relay level).
    pub relay_on: bool,
}

/// The hover text: where I am and how I sound.
pub fn tooltip(v: &TrayView) -> String {
    let mut s = match &v.channel {
        Some(c) => format!("Hum: in {c}"),
        None => "Hum: not in a voice channel".to_owned(),
    };
    if v.deafened {
        s.push_str(", deafened");
    } else if v.muted {
        s.push_str(", muted");
    }
    if v.relay_on {
        s.push_str(", relaying for viewers");
    }
    s
}

struct Items {
    icon: TrayIcon<Wry>,
    mute: CheckMenuItem<Wry>,
    deafen: CheckMenuItem<Wry>,
    leave: MenuItem<Wry>,
    relay: CheckMenuItem<Wry>,
}

/// The tray, if this desktop has one.
#[derive(Default)]
pub struct TrayState(Mutex<Option<Items>>);

impl TrayState {
    /// A tray icon is shown.
    pub fn present(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }
}

/// Whether the StatusNotifier library tray-icon needs can be loaded.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // dlopen of a system library (below)
fn indicator_library() -> bool {
    [
        "libayatana-appindicator3.so.1",
        "libappindicator3.so.1",
        "libayatana-appindicator3.so",
        "libappindicator3.so",
    ]
    .iter()
    // SAFETY: loading a system library whose initialisers are the toolkit's own; tray-icon loads
    // the same library right after.
    .any(|name| unsafe { libloading::Library::new(name) }.is_ok())
}

#[cfg(not(target_os = "linux"))]
fn indicator_library() -> bool {
    true
}

/// Puts the icon in the tray. Ok(false): no tray on this desktop (the app runs without one).
pub fn install(app: &AppHandle, state: &TrayState) -> tauri::Result<bool> {
    if !indicator_library() {
        tracing::warn!(
            "no tray icon: libayatana-appindicator3 is not installed (apt install libayatana-appindicator3-1)"
        );
        return Ok(false);
    }
    let view = TrayView::default();
    let open = MenuItem::with_id(app, "open", "Open Hum", true, None::<&str>)?;
    let mute = CheckMenuItem::with_id(app, "mute", "Mute", false, false, None::<&str>)?;
    let deafen = CheckMenuItem::with_id(app, "deafen", "Deafen", false, false, None::<&str>)?;
    let leave = MenuItem::with_id(app, "leave", "Leave voice channel", false, None::<&str>)?;
    let relay = CheckMenuItem::with_id(
        app,
        "relay",
        "Relay streams for other viewers",
        true,
        false,
        None::<&str>,
    )?;
    let quit = MenuItem::with_id(app, "quit", "Quit Hum", true, None::<&str>)?;
    let menu = Menu::with_items(
        app,
        &[
            &open,
            &PredefinedMenuItem::separator(app)?,
            &mute,
            &deafen,
            &leave,
            &PredefinedMenuItem::separator(app)?,
            &relay,
            &PredefinedMenuItem::separator(app)?,
            &quit,
        ],
    )?;
    let mut builder = TrayIconBuilder::with_id("hum")
        .menu(&menu)
        .tooltip(tooltip(&view))
        .on_menu_event(|app, event| match event.id.as_ref() {
            "open" => crate::desktop::focus_main(app),
            "quit" => app.exit(0),
            id => {
                if let Some(action) = TrayAction::from_id(id)
                    && let Err(e) = (TrayClicked { action }).emit(app)
                {
                    tracing::warn!("tray click not delivered: {e}");
                }
            }
        });
    if let Some(icon) = app.default_window_icon() {
        builder = builder.icon(icon.clone());
    }
    let icon = builder.build(app)?;
    *state.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Items {
        icon,
        mute,
        deafen,
        leave,
        relay,
    });
    Ok(true)
}

fn apply(items: &Items, v: &TrayView) -> tauri::Result<()> {
    let in_voice = v.channel.is_some();
    items.mute.set_enabled(in_voice)?;
    items.mute.set_checked(v.muted || v.deafened)?;
    items.deafen.set_enabled(in_voice)?;
    items.deafen.set_checked(v.deafened)?;
    items.leave.set_enabled(in_voice)?;
    items.leave.set_text(match &v.channel {
        Some(c) => format!("Leave {c}"),
        None => "Leave voice channel".to_owned(),
    })?;
    items.relay.set_checked(v.relay_on)?;
    items.icon.set_tooltip(Some(tooltip(v)))?;
    Ok(())
}

/// Shows `view` in the tray. Returns whether there is a tray.
#[tauri::command]
#[specta::specta]
pub fn tray_sync(tray: State<'_, TrayState>, view: TrayView) -> bool {
    let items = tray.0.lock().unwrap_or_else(|e| e.into_inner());
    match items.as_ref() {
        Some(items) => {
            if let Err(e) = apply(items, &view) {
                tracing::warn!("tray not updated: {e}");
            }
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tooltip_says_where_i_am_and_how_i_sound() {
        let mut v = TrayView::default();
        assert_eq!(tooltip(&v), "Hum: not in a voice channel");
        v.channel = Some("Lobby".into());
        v.muted = true;
        assert_eq!(tooltip(&v), "Hum: in Lobby, muted");
        v.deafened = true;
        v.relay_on = true;
        assert_eq!(tooltip(&v), "Hum: in Lobby, deafened, relaying for viewers");
    }

    #[test]
    fn only_the_ui_actions_become_events() {
        for (id, want) in [
            ("mute", Some(TrayAction::Mute)),
            ("deafen", Some(TrayAction::Deafen)),
            ("leave", Some(TrayAction::Leave)),
            ("relay", Some(TrayAction::Relay)),
            ("open", None),
            ("quit", None),
            ("bogus", None),
        ] {
            assert_eq!(TrayAction::from_id(id), want, "{id}");
        }
    }
}
