//! Friends: list with presence, add by @handle, friend link or public key, accept or decline
//! requests, remove; your own handle and friend link.

use hum_proto::UserId;
use hum_proto::links::{HumLink, PersonRef};
use hum_proto::signal::{Friend, Handle, Status, UserSummary};
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

/// Sends a friend request to `who`: `@handle` (looked up on your relay), a `hum://friend/...` link
/// or a public key (64 hex characters).
#[tauri::command]
#[specta::specta]
pub async fn friend_request(state: State<'_, AppState>, who: String) -> CmdResult<()> {
    let relay = state.relay()?;
    let user = match PersonRef::parse(&who)
        .map_err(|e| CommandError::invalid(capitalise(&e.to_string())))?
    {
        PersonRef::Key(k) => k,
        PersonRef::Handle(h) => relay.handle_lookup(h).await.map_err(client_error)?.0.id,
    };
    if user == state.identity()?.user_id() {
        return Err(CommandError::invalid("That is you."));
    }
    relay.friend_request(user).await.map_err(client_error)
}

/// How others find you: your public key (the account), your handle on this relay if you took one,
/// and the friend link to share (it carries the key, which never changes hands).
#[derive(Clone, Debug, PartialEq, Serialize, Type)]
pub struct FriendCard {
    pub public_key: String,
    pub handle: Option<String>,
    pub friend_link: String,
}

#[tauri::command]
#[specta::specta]
pub async fn friend_card(state: State<'_, AppState>) -> CmdResult<FriendCard> {
    let me = state.identity()?.user_id();
    let handle = state.relay()?.handle_get(me).await.map_err(client_error)?;
    Ok(FriendCard {
        public_key: me.to_hex(),
        handle: handle.map(|h| h.to_string()),
        friend_link: HumLink::Friend(me).to_string(),
    })
}

/// Takes `handle` on this relay (with or without the `@`), or gives yours up (`null` or empty).
/// Returns the handle as the relay stored it.
#[tauri::command]
#[specta::specta]
pub async fn handle_set(
    state: State<'_, AppState>,
    handle: Option<String>,
) -> CmdResult<Option<String>> {
    let handle = match handle.as_deref().map(str::trim).filter(|h| !h.is_empty()) {
        None => None,
        Some(h) => Some(
            Handle::parse(h).map_err(|e| CommandError::invalid(format!("Not a handle: {e}.")))?,
        ),
    };
    let set = state
        .relay()?
        .handle_set(handle)
        .await
        .map_err(client_error)?;
    Ok(set.map(|h| h.to_string()))
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect::<String>() + ".",
        None => String::new(),
    }
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
