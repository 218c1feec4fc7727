//! `hum://` links opened from outside the app: the desktop's URL handler starts
//! `hum-app hum://invite/CODE`, which hands its arguments to the running app (hum-engine's
//! `instance`) and exits. The links wait here until the UI takes them and asks the user; nothing is
//! joined or sent without a click.

use std::sync::Mutex;

use hum_proto::links::HumLink;
use serde::{Deserialize, Serialize};
use specta::Type;
use tauri::State;
use tauri_specta::Event;

/// Links not yet shown to the user, oldest first (bounded: a flood of launches cannot grow it).
#[derive(Default)]
pub struct LinkInbox(Mutex<Vec<HumLink>>);

impl LinkInbox {
    pub const MAX_PENDING: usize = 16;

    /// Keeps every argument that is a `hum://` link; other arguments (flags) are ignored and a
    /// malformed link is logged. Returns how many links were added.
    pub fn push_args(&self, args: &[String]) -> usize {
        let mut added = 0;
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for a in args
            .iter()
            .filter(|a| a.trim_start().to_ascii_lowercase().starts_with("hum:"))
        {
            match HumLink::parse(a) {
                Ok(link) if !q.contains(&link) => {
                    if q.len() == Self::MAX_PENDING {
                        q.remove(0);
                    }
                    q.push(link);
                    added += 1;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("ignored a link from the desktop: {e}"),
            }
        }
        added
    }

    pub fn take(&self) -> Vec<HumLink> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A link for the UI to confirm.
#[derive(Clone, Debug, PartialEq, Serialize, Type)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LinkView {
    /// Join the server behind invite `code`.
    Invite { code: String, link: String },
    /// Befriend `who` (`@handle` or a public key).
    Friend { who: String, link: String },
}

pub fn view(link: &HumLink) -> LinkView {
    match link {
        HumLink::Invite(code) => LinkView::Invite {
            code: code.as_str().to_owned(),
            link: link.to_string(),
        },
        HumLink::Friend(key) => LinkView::Friend {
            who: key.to_hex(),
            link: link.to_string(),
        },
        HumLink::FriendHandle(h) => LinkView::Friend {
            who: h.to_string(),
            link: link.to_string(),
        },
    }
}

/// New links arrived: call `links_take`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type, Event)]
pub struct LinkOpened;

/// The links opened since the last call (also those given to the app at start).
#[tauri::command]
#[specta::specta]
pub fn links_take(inbox: State<'_, LinkInbox>) -> Vec<LinkView> {
    inbox.take().iter().map(view).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn links_among_arguments_are_kept_once_and_bad_ones_dropped() {
        let inbox = LinkInbox::default();
        let key = "ab".repeat(32);
        let added = inbox.push_args(&args(&[
            "--verbose",
            "hum://invite/Ab12Cd34",
            "HUM://friend/@ada",
            "hum://server/1",
            "hum://invite/Ab12Cd34",
            &format!("hum://friend/{key}"),
        ]));
        assert_eq!(added, 3);
        let views: Vec<_> = inbox.take().iter().map(view).collect();
        assert_eq!(
            views,
            vec![
                LinkView::Invite {
                    code: "Ab12Cd34".into(),
                    link: "hum://invite/Ab12Cd34".into()
                },
                LinkView::Friend {
                    who: "@ada".into(),
                    link: "hum://friend/@ada".into()
                },
                LinkView::Friend {
                    who: key.clone(),
                    link: format!("hum://friend/{key}")
                },
            ]
        );
        assert!(inbox.take().is_empty(), "taking empties the inbox");
    }

    #[test]
    fn the_inbox_is_bounded() {
        let inbox = LinkInbox::default();
        let many: Vec<String> = (0..40)
            .map(|i| format!("hum://invite/code{i:04}"))
            .collect();
        inbox.push_args(&many);
        let kept = inbox.take();
        assert_eq!(kept.len(), LinkInbox::MAX_PENDING);
        assert_eq!(kept.last().unwrap().to_string(), "hum://invite/code0039");
    }
}
