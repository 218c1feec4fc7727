//! A server's members and what its owner and admins do to them: roles (the owner), kick and
//! ban (admins remove members; the owner anyone), the ban list and unbanning (admins). The relay
//! decides; its refusals are told in words.

use hum_engine::ClientError;
use hum_proto::ServerId;
use hum_proto::signal::{ErrorCode as RelayCode, Member, Role, UserSummary};
use serde::Serialize;
use specta::Type;
use tauri::State;

use super::connection::client_error;
use super::friends::parse_user;
use super::servers::admin_refusal;
use crate::error::{CmdResult, CommandError, ErrorCode};
use crate::state::AppState;

#[derive(Clone, Debug, PartialEq, Serialize, Type)]
pub struct MemberView {
    /// Public key, hex.
    pub user_id: String,
    pub display_name: String,
    /// `owner`, `admin` or `member`.
    pub role: String,
    pub online: bool,
}

fn view(m: &Member) -> MemberView {
    MemberView {
        user_id: m.user.id.to_string(),
        display_name: m.user.display_name.to_string(),
        role: m.role.as_str().to_owned(),
        online: m.online,
    }
}

/// The members in the order a member list shows them: owner, admins, members; online first
/// within each; then by name.
fn sorted(mut members: Vec<Member>) -> Vec<MemberView> {
    members.sort_by(|a, b| {
        (
            b.role,
            b.online,
            a.user.display_name.as_str().to_lowercase(),
        )
            .cmp(&(
                a.role,
                a.online,
                b.user.display_name.as_str().to_lowercase(),
            ))
    });
    members.iter().map(view).collect()
}

/// Someone banned from a server.
#[derive(Clone, Debug, PartialEq, Serialize, Type)]
pub struct BanView {
    /// Public key, hex.
    pub user_id: String,
    /// Their display name (`user-` and 8 hex digits of the key for someone without an account).
    pub display_name: String,
}

/// The ban list by name (then key), as the dialog shows it.
fn bans_sorted(users: Vec<UserSummary>) -> Vec<BanView> {
    let mut v: Vec<BanView> = users
        .iter()
        .map(|u| BanView {
            user_id: u.id.to_string(),
            display_name: u.display_name.to_string(),
        })
        .collect();
    v.sort_by(|a, b| {
        (a.display_name.to_lowercase(), &a.user_id)
            .cmp(&(b.display_name.to_lowercase(), &b.user_id))
    });
    v
}

fn ban_error(e: ClientError, what: &str) -> CommandError {
    admin_refusal(
        e,
        &format!("Only the server's owner and admins can {what}."),
        "They are no longer banned.",
    )
}

fn member_error(e: ClientError, what: &str) -> CommandError {
    match e.code() {
        Some(RelayCode::Forbidden) => CommandError::new(
            ErrorCode::Rejected,
            format!(
                "You may not {what}: admins act on members only, the owner on everyone, and roles are the owner's."
            ),
        ),
        Some(RelayCode::NotFound) | Some(RelayCode::NotMember) => CommandError::new(
            ErrorCode::NotFound,
            "They are no longer a member of this server.",
        ),
        _ => client_error(e),
    }
}

/// Every member of `server` (all pages).
#[tauri::command]
#[specta::specta]
pub async fn server_members(state: State<'_, AppState>, server: u64) -> CmdResult<Vec<MemberView>> {
    let members = state
        .relay()?
        .members(ServerId(server))
        .await
        .map_err(client_error)?;
    Ok(sorted(members))
}

/// Makes a member an admin (`admin`) or an admin a member again (the owner only).
#[tauri::command]
#[specta::specta]
pub async fn member_role_set(
    state: State<'_, AppState>,
    server: u64,
    user_id: String,
    admin: bool,
) -> CmdResult<()> {
    let user = parse_user(&user_id)?;
    let role = if admin { Role::Admin } else { Role::Member };
    state
        .relay()?
        .member_set_role(ServerId(server), user, role)
        .await
        .map_err(|e| member_error(e, "change roles"))
}

/// Removes a member from `server`; with `ban` they cannot join again until unbanned.
#[tauri::command]
#[specta::specta]
pub async fn member_remove(
    state: State<'_, AppState>,
    server: u64,
    user_id: String,
    ban: bool,
) -> CmdResult<()> {
    let user = parse_user(&user_id)?;
    let relay = state.relay()?;
    let result = if ban {
        relay.member_ban(ServerId(server), user).await
    } else {
        relay.member_kick(ServerId(server), user).await
    };
    result.map_err(|e| member_error(e, if ban { "ban them" } else { "remove them" }))
}

/// Who is banned from `server` (admins and the owner), by name.
#[tauri::command]
#[specta::specta]
pub async fn server_bans(state: State<'_, AppState>, server: u64) -> CmdResult<Vec<BanView>> {
    let users = state
        .relay()?
        .ban_list(ServerId(server))
        .await
        .map_err(|e| ban_error(e, "see who is banned"))?;
    Ok(bans_sorted(users))
}

/// Lifts a ban (admins and the owner): they can join again with an invite.
#[tauri::command]
#[specta::specta]
pub async fn member_unban(
    state: State<'_, AppState>,
    server: u64,
    user_id: String,
) -> CmdResult<()> {
    let user = parse_user(&user_id)?;
    state
        .relay()?
        .member_unban(ServerId(server), user)
        .await
        .map_err(|e| ban_error(e, "lift a ban"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hum_proto::UserId;
    use hum_proto::signal::{DisplayName, UserSummary};

    fn m(b: u8, name: &str, role: Role, online: bool) -> Member {
        Member {
            user: UserSummary {
                id: UserId([b; 32]),
                display_name: DisplayName::new(name).expect("name"),
            },
            role,
            online,
        }
    }

    #[test]
    fn members_list_owner_then_admins_then_members_online_first_then_by_name() {
        let list = sorted(vec![
            m(1, "zed", Role::Member, true),
            m(2, "Amy", Role::Member, false),
            m(3, "bob", Role::Member, true),
            m(4, "cat", Role::Admin, false),
            m(5, "dan", Role::Owner, false),
            m(6, "eve", Role::Admin, true),
        ]);
        let names: Vec<_> = list.iter().map(|v| v.display_name.as_str()).collect();
        assert_eq!(names, ["dan", "eve", "cat", "bob", "zed", "Amy"]);
        assert_eq!(list[0].role, "owner");
        assert_eq!(list[0].user_id, "05".repeat(32));
    }

    #[test]
    fn bans_list_by_name_then_key() {
        let u = |b: u8, name: &str| UserSummary {
            id: UserId([b; 32]),
            display_name: DisplayName::new(name).expect("name"),
        };
        let list = bans_sorted(vec![u(3, "zed"), u(2, "amy"), u(1, "Amy")]);
        let keys: Vec<_> = list.iter().map(|v| &v.user_id[..2]).collect();
        assert_eq!(keys, ["01", "02", "03"]);
        assert_eq!(list[2].display_name, "zed");
    }

    #[test]
    fn ban_refusals_in_words() {
        let e = |code| ClientError::Relay {
            code,
            message: "x".into(),
        };
        let forbidden = ban_error(e(RelayCode::Forbidden), "lift a ban");
        assert_eq!(
            forbidden.message,
            "Only the server's owner and admins can lift a ban."
        );
        assert_eq!(
            ban_error(e(RelayCode::NotFound), "lift a ban").message,
            "They are no longer banned."
        );
    }
}
