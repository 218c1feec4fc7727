//! Friends: list with presence, add by public key, accept or decline requests, remove.

use hum_proto::UserId;
use hum_proto::signal::{Friend, Status, UserSummary};
use serde::Serialize;
use specta::Type;
use tauri::State;

use super::connection::client_error;
use crate::error::{CmdResult, CommandError};
use crate::state::AppState;

#[derive(Clone, Debug, PartialEq, Serialize, Type)]
pub struct Person {
    pub user_id: String,
    pub display_name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Type)]
pub struct FriendView {
    pub user_id: String,
    pub display_name: String,
    pub online: bool,
    /// The voice channel they are in, if they share a server with you.
    pub in_voice: bool,
    pub in_call: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Type)]
pub struct FriendsView {
    pub friends: Vec<FriendView>,
    pub incoming: Vec<Person>,
    pub outgoing: Vec<Person>,
}

fn person(u: &UserSummary) -> Person {
    Person {
        user_id: u.id.to_string(),
        display_name: u.display_name.to_string(),
    }
}

fn friend(f: &Friend) -> FriendView {
    FriendView {
        user_id: f.user.id.to_string(),
        display_name: f.user.display_name.to_string(),
        online: f.presence.status == Status::Online,
        in_voice: f.presence.channel.is_some(),
        in_call: f.presence.in_call,
    }
}

pub fn parse_user(key: &str) -> CmdResult<UserId> {
    key.trim().to_ascii_lowercase().parse().map_err(|_| {
        CommandError::invalid("A public key is 64 hexadecimal characters (0-9, a-f). Ask your friend to copy it from Settings.")
    })
}

#[tauri::command]
#[specta::specta]
pub async fn friends_list(state: State<'_, AppState>) -> CmdResult<FriendsView> {
    let list = state.relay()?.friends().await.map_err(client_error)?;
    Ok(FriendsView {
        friends: list.friends.iter().map(friend).collect(),
        incoming: list.incoming.iter().map(person).collect(),
        outgoing: list.outgoing.iter().map(person).collect(),
    })
}

/// Sends a friend request to a public key (hex).
#[tauri::command]
#[specta::specta]
pub async fn friend_request(state: State<'_, AppState>, public_key: String) -> CmdResult<()> {
    let user = parse_user(&public_key)?;
    if user == state.identity()?.user_id() {
        return Err(CommandError::invalid("That is your own public key."));
    }
    state
        .relay()?
        .friend_request(user)
        .await
        .map_err(client_error)
}

#[tauri::command]
#[specta::specta]
pub async fn friend_respond(
    state: State<'_, AppState>,
    user_id: String,
    accept: bool,
) -> CmdResult<()> {
    let user = parse_user(&user_id)?;
    let relay = state.relay()?;
    if accept {
        relay.friend_accept(user).await
    } else {
        relay.friend_decline(user).await
    }
    .map_err(client_error)
}

#[tauri::command]
#[specta::specta]
pub async fn friend_remove(state: State<'_, AppState>, user_id: String) -> CmdResult<()> {
    state
        .relay()?
        .friend_remove(parse_user(&user_id)?)
        .await
        .map_err(client_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys_are_validated() {
        assert!(parse_user(&"AB".repeat(32)).is_ok());
        let err = parse_user("not-a-key").expect_err("bad");
        assert!(err.message.contains("64 hexadecimal"));
        assert!(parse_user(&"ab".repeat(31)).is_err());
    }
}
