//! Desktop notifications for what must not be missed while Hum is in the background: an incoming
//! call, and the throttler reducing the relay to protect the connection.
//!
//! Shown only while the window does not have the focus (in front of the user the app's own ring and
//! banner say it already). They go through the freedesktop notification service on the session bus
//! (notify-rust over zbus); without one (no session bus, no notification daemon) they are logged
//! and skipped, never an error for the user.

use std::sync::Mutex;

use tauri::{AppHandle, Manager};
use tauri_specta::Event;

use crate::commands::budget::{BudgetChanged, BudgetStatus};
use crate::commands::calls::{CallChanged, CallPhase, CallView};

/// A notification to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub title: String,
    pub body: String,
}

/// What was already notified, so a repeated event does not notify twice.
#[derive(Default)]
pub struct Seen {
    ringing: Option<u64>,
    message: Option<String>,
}

impl Seen {
    /// A call that starts ringing here (each call once).
    pub fn call(&mut self, v: &CallView) -> Option<Note> {
        if v.phase != CallPhase::Incoming {
            if v.phase == CallPhase::Idle {
                self.ringing = None;
            }
            return None;
        }
        let id = v.call?;
        if self.ringing == Some(id) {
            return None;
        }
        self.ringing = Some(id);
        let who = v
            .peer
            .as_ref()
            .map(|p| p.display_name.clone())
            .unwrap_or_else(|| "Someone".to_owned());
        Some(Note {
            title: "Incoming call".to_owned(),
            body: format!("{who} is calling you"),
        })
    }

    /// The throttler's "Reduced relay to protect your connection" (once per change of message).
    pub fn budget(&mut self, s: &BudgetStatus) -> Option<Note> {
        let msg = s.message.clone();
        if msg == self.message {
            return None;
        }
        self.message = msg.clone();
        let msg = msg?;
        msg.starts_with("Reduced relay").then(|| Note {
            title: msg,
            body: "A game or another app needed your upload: Hum relays less for now and gives it back when the connection is calm."
                .to_owned(),
        })
    }
}

fn focused(app: &AppHandle) -> bool {
    app.webview_windows()
        .values()
        .any(|w| w.is_focused().unwrap_or(false) && w.is_visible().unwrap_or(false))
}

fn show(app: &AppHandle, note: Note) {
    if focused(app) {
        tracing::debug!(?note, "not notified: the window has the focus");
        return;
    }
    tauri::async_runtime::spawn_blocking(move || {
        let r = notify_rust::Notification::new()
            .appname("Hum")
            .summary(&note.title)
            .body(&note.body)
            .icon("hum-app")
            .show();
        match r {
            Ok(_) => tracing::info!(title = %note.title, "notified"),
            Err(e) => tracing::info!(title = %note.title, "no desktop notification: {e}"),
        }
    });
}

/// Starts listening to the events that notify.
pub fn install(app: &AppHandle) {
    let seen = std::sync::Arc::new(Mutex::new(Seen::default()));
    let (h, s) = (app.clone(), seen.clone());
    CallChanged::listen(app, move |e| {
        let note = s
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .call(&e.payload.call);
        if let Some(n) = note {
            show(&h, n);
        }
    });
    let (h, s) = (app.clone(), seen);
    BudgetChanged::listen(app, move |e| {
        let note = s
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .budget(&e.payload.status);
        if let Some(n) = note {
            show(&h, n);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::calls::CallPeer;

    fn ringing(id: u64) -> CallView {
        CallView {
            phase: CallPhase::Incoming,
            call: Some(id),
            peer: Some(CallPeer {
                user_id: "b0".repeat(32),
                display_name: "bob".into(),
            }),
            ..CallView::default()
        }
    }

    #[test]
    fn a_ringing_call_notifies_once_and_the_next_call_again() {
        let mut seen = Seen::default();
        let n = seen.call(&ringing(7)).expect("notified");
        assert_eq!(n.body, "bob is calling you");
        assert_eq!(seen.call(&ringing(7)), None, "the same call again");
        assert_eq!(seen.call(&CallView::default()), None, "idle");
        assert!(seen.call(&ringing(8)).is_some(), "a new call");
        let mut active = ringing(8);
        active.phase = CallPhase::Active;
        assert_eq!(seen.call(&active), None);
    }

    #[test]
    fn only_a_reduced_relay_notifies_and_only_when_it_changes() {
        let mut seen = Seen::default();
        let mut s = BudgetStatus::default();
        assert_eq!(seen.budget(&s), None);
        s.message = Some("Reduced relay to protect your connection".into());
        assert!(seen.budget(&s).is_some());
        assert_eq!(seen.budget(&s), None, "unchanged");
        s.message = Some("Relay restored".into());
        assert_eq!(seen.budget(&s), None);
        s.message = Some("Reduced relay to protect your connection".into());
        assert!(seen.budget(&s).is_some(), "reduced again");
    }
}
