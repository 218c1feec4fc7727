//! A server's members and what its owner and admins do to them: roles (the owner), kick and
//! ban (admins remove members; the owner anyone). The relay decides; its refusals are told in
//! words.

use hum_engine::ClientError;
use hum_proto::ServerId;
use hum_proto::signal::{ErrorCode as RelayCode, Member, Role};
use serde::Serialize;
use specta::Type;
use tauri::State;

use super::connection::client_error;
use super::friends::parse_user;
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
}
