//! The connection to the relay: start it, show its state, reconnect on a new address.
//!
//! hum-engine's `RelayClient` owns the socket, the login, keep-alive and reconnect-with-backoff;
//! this module starts it with the stored identity and relay address and forwards what it reports
//! to the UI as typed events: `RelayStatusChanged` for the banner, and `ServersChanged` /
//! `FriendsChanged` nudges telling the UI to refetch (rosters change a few times a second at
//! most; refetching keeps the relay the one source of truth instead of a second model here).

use hum_engine::{ClientError, ClientEvent, ConnectionState, RelayClient, RelayConfig};
use hum_proto::signal::Event as RelayEvent;
use serde::{Deserialize, Serialize};
use specta::Type;
use tauri::{AppHandle, Manager, State};
use tauri_specta::Event;

use crate::error::{CmdResult, CommandError, ErrorCode};
use crate::state::AppState;

/// The relay connection as the UI shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Type)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RelayStatus {
    /// Not started (no identity yet).
    Offline,
    Connecting {
        attempt: u32,
    },
    Connected {
        user_id: String,
        display_name: String,
        /// The relay address logged in on; in a cluster, the node (it changes when a lost node's
        /// clients move to another).
        node: String,
    },
    /// Lost; `retry_in_ms` is null when the client gave up (e.g. the relay rejected our key).
    Disconnected {
        reason: String,
        retry_in_ms: Option<u64>,
    },
    Stopped,
}

impl From<&ConnectionState> for RelayStatus {
    fn from(s: &ConnectionState) -> Self {
        match s {
            ConnectionState::Connecting { attempt } => {
                RelayStatus::Connecting { attempt: *attempt }
            }
            ConnectionState::Connected { user, node, .. } => RelayStatus::Connected {
                user_id: user.id.to_string(),
                display_name: user.display_name.to_string(),
                node: node.clone(),
            },
            ConnectionState::Disconnected { reason, retry_in } => RelayStatus::Disconnected {
                reason: reason.clone(),
                retry_in_ms: retry_in.map(|d| d.as_millis() as u64),
            },
            ConnectionState::Stopped => RelayStatus::Stopped,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Type, Event)]
pub struct RelayStatusChanged {
    pub status: RelayStatus,
}

/// Servers, channels or rosters changed: refetch `servers_list`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type, Event)]
pub struct ServersChanged;

/// Friends, requests or presence changed: refetch `friends_list`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type, Event)]
pub struct FriendsChanged;

/// A server's members changed (someone joined, left or was removed, or a role changed): an open
/// member list reloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type, Event)]
pub struct MembersChanged {
    pub server: u64,
}

/// Why a server left my list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
#[serde(rename_all = "snake_case")]
pub enum GoneReason {
    /// Its owner deleted it.
    Deleted,
    /// An admin or the owner removed me (kick or ban).
    Kicked,
    /// I left (from another session of mine).
    Left,
}

/// I am no longer a member of `server`; the UI says so (the server list refetches anyway).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type, Event)]
pub struct ServerGone {
    pub server: u64,
    pub reason: GoneReason,
}

/// The member-list and membership events a relay event means, if any.
pub fn membership_events(ev: &ClientEvent) -> (Option<MembersChanged>, Option<ServerGone>) {
    use hum_proto::signal::ServerRemovedReason;
    match ev {
        ClientEvent::Relay(
            RelayEvent::MemberJoined { server, .. }
            | RelayEvent::MemberLeft { server, .. }
            | RelayEvent::MemberUpdated { server, .. },
        ) => (Some(MembersChanged { server: server.0 }), None),
        ClientEvent::Relay(RelayEvent::ServerRemoved { server, reason }) => (
            None,
            Some(ServerGone {
                server: server.0,
                reason: match reason {
                    ServerRemovedReason::Deleted => GoneReason::Deleted,
                    ServerRemovedReason::Kicked => GoneReason::Kicked,
                    ServerRemovedReason::Left => GoneReason::Left,
                },
            }),
        ),
        _ => (None, None),
    }
}

/// What a relay event means for the UI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nudge {
    Servers,
    Friends,
    Both,
    None,
}

pub fn nudge_for(ev: &ClientEvent) -> Nudge {
    match ev {
        ClientEvent::State(_) => Nudge::Both,
        ClientEvent::Rejoined { .. } | ClientEvent::RejoinFailed { .. } => Nudge::Servers,
        ClientEvent::Relay(e) => match e {
            RelayEvent::Presence { .. }
            | RelayEvent::FriendRequestReceived { .. }
            | RelayEvent::FriendAdded { .. }
            | RelayEvent::FriendDeclined { .. }
            | RelayEvent::FriendRemoved { .. } => Nudge::Friends,
            RelayEvent::UserUpdated { .. } => Nudge::Both,
            RelayEvent::ServerUpdated { .. }
            | RelayEvent::ServerRemoved { .. }
            | RelayEvent::MemberJoined { .. }
            | RelayEvent::MemberLeft { .. }
            | RelayEvent::MemberUpdated { .. }
            | RelayEvent::ChannelCreated { .. }
            | RelayEvent::ChannelUpdated { .. }
            | RelayEvent::ChannelDeleted { .. }
            | RelayEvent::RosterJoin { .. }
            | RelayEvent::RosterLeave { .. }
            | RelayEvent::RosterUpdate { .. } => Nudge::Servers,
            _ => Nudge::None,
        },
    }
}

/// A relay client error as the UI sees it.
pub fn client_error(e: ClientError) -> CommandError {
    match e {
        ClientError::Relay { message, .. } => CommandError::new(ErrorCode::Rejected, message),
        ClientError::Disconnected(reason) => CommandError::new(
            ErrorCode::RelayUnavailable,
            format!("Not connected to the relay ({reason}). Hum keeps retrying."),
        ),
        ClientError::Timeout(_) => CommandError::new(
            ErrorCode::RelayUnavailable,
            "The relay did not answer in time.",
        ),
        ClientError::Stopped => {
            CommandError::new(ErrorCode::RelayUnavailable, "Not connected to the relay.")
        }
        e @ ClientError::UnexpectedReply { .. } => CommandError::internal(e),
    }
}

/// (Re)starts the relay client with the stored identity and address, and forwards its events.
/// Must run inside the async runtime.
pub async fn start(app: &AppHandle) -> CmdResult<RelayStatus> {
    let state = app.state::<AppState>();
    let identity = state.identity()?;
    let url = super::settings::get(&state)?.relay_url;
    if let Some(old) = state.take_relay()? {
        old.shutdown().await;
    }
    let client = RelayClient::start(identity, RelayConfig::new(url.clone()));
    let mut events = client.subscribe();
    let status = RelayStatus::from(&client.state());
    state.set_relay(client.clone())?;
    state.set_calls(super::calls::start(app, &client))?;
    super::budget::start(app, &client, &url);
    super::live::start(app, &client);
    let app = app.clone();
    let me = client.user_id();
    tauri::async_runtime::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let ev = events.recv().await;
            // Kicked, banned, no longer allowed in, or the channel or server deleted: my voice
            // link stops and I am told why (not here: this loop must keep reading).
            if let Some((channel, message)) = ev
                .as_ref()
                .ok()
                .and_then(|e| super::servers::removal_notice(e, me))
            {
                let app = app.clone();
                tauri::async_runtime::spawn(async move {
                    super::servers::taken_out_of_voice(&app, channel, message).await;
                });
            }
            if let Ok(e) = &ev {
                let (members, gone) = membership_events(e);
                if let Some(m) = members {
                    let _ = m.emit(&app);
                }
                if let Some(g) = gone {
                    let _ = g.emit(&app);
                }
            }
            // Mode and speaker announcements change what the channel list and stage show.
            let rooms_changed = ev
                .as_ref()
                .is_ok_and(|e| app.state::<AppState>().rooms.observe(e));
            let nudge = match ev {
                Ok(ClientEvent::State(s)) => {
                    let _ = RelayStatusChanged {
                        status: RelayStatus::from(&s),
                    }
                    .emit(&app);
                    if s == ConnectionState::Stopped {
                        break;
                    }
                    Nudge::Both
                }
                Ok(ev) => nudge_for(&ev),
                Err(RecvError::Lagged(_)) => Nudge::Both,
                Err(RecvError::Closed) => break,
            };
            let nudge = match nudge {
                Nudge::None if rooms_changed => Nudge::Servers,
                Nudge::Friends if rooms_changed => Nudge::Both,
                n => n,
            };
            if matches!(nudge, Nudge::Servers | Nudge::Both) {
                let _ = ServersChanged.emit(&app);
            }
            if matches!(nudge, Nudge::Friends | Nudge::Both) {
                let _ = FriendsChanged.emit(&app);
            }
        }
    });
    Ok(status)
}

/// Connects (or reconnects) to the relay address in the settings.
#[tauri::command]
#[specta::specta]
pub async fn relay_connect(app: AppHandle) -> CmdResult<RelayStatus> {
    start(&app).await
}

/// Where the relay connection stands now.
#[tauri::command]
#[specta::specta]
pub fn relay_status(state: State<'_, AppState>) -> CmdResult<RelayStatus> {
    Ok(state
        .relay_opt()?
        .map_or(RelayStatus::Offline, |c| RelayStatus::from(&c.state())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hum_proto::signal::{DisplayName, UserSummary};
    use hum_proto::{ChannelId, ServerId, UserId};
    use std::time::Duration;

    #[test]
    fn status_wire_shape() {
        let s = RelayStatus::from(&ConnectionState::Disconnected {
            reason: "connection refused".into(),
            retry_in: Some(Duration::from_millis(1500)),
        });
        assert_eq!(
            serde_json::to_string(&s).expect("json"),
            r#"{"state":"disconnected","reason":"connection refused","retry_in_ms":1500}"#
        );
        let user = UserSummary {
            id: UserId([7; 32]),
            display_name: DisplayName::new("bot").expect("name"),
        };
        let s = RelayStatus::from(&ConnectionState::Connected {
            user,
            new_account: false,
            limits: hum_proto::signal::Limits {
                max_message_bytes: 65_536,
                rate_per_sec: 20,
                rate_burst: 40,
            },
            node: "ws://node-2.example:7700/ws".into(),
        });
        assert!(
            matches!(s, RelayStatus::Connected { ref user_id, ref node, .. }
            if user_id.len() == 64 && node == "ws://node-2.example:7700/ws")
        );
    }

    #[test]
    fn roster_events_nudge_servers() {
        let ev = ClientEvent::Relay(RelayEvent::RosterUpdate {
            server: ServerId(1),
            channel: ChannelId(2),
            user: UserId([1; 32]),
            voice: Default::default(),
        });
        assert_eq!(nudge_for(&ev), Nudge::Servers);
        let ev = ClientEvent::Relay(RelayEvent::FriendRemoved {
            user: UserId([1; 32]),
        });
        assert_eq!(nudge_for(&ev), Nudge::Friends);
    }

    #[test]
    fn member_changes_and_removals_are_told_per_server() {
        use hum_proto::signal::{MemberLeftReason, ServerRemovedReason};
        let left = ClientEvent::Relay(RelayEvent::MemberLeft {
            server: ServerId(4),
            user: UserId([1; 32]),
            reason: MemberLeftReason::Kicked,
        });
        assert_eq!(
            membership_events(&left),
            (Some(MembersChanged { server: 4 }), None)
        );
        let gone = ClientEvent::Relay(RelayEvent::ServerRemoved {
            server: ServerId(4),
            reason: ServerRemovedReason::Kicked,
        });
        assert_eq!(
            membership_events(&gone),
            (
                None,
                Some(ServerGone {
                    server: 4,
                    reason: GoneReason::Kicked
                })
            )
        );
        let ev = ClientEvent::Relay(RelayEvent::FriendRemoved {
            user: UserId([1; 32]),
        });
        assert_eq!(membership_events(&ev), (None, None));
        let json = serde_json::to_string(&ServerGone {
            server: 4,
            reason: GoneReason::Deleted,
        })
        .expect("json");
        assert_eq!(json, r#"{"server":4,"reason":"deleted"}"#);
    }
}
