//! Servers (communities), their members and roles, and invite codes.
//!
//! Roles: the owner may do everything and is the only one who can delete the server or change
//! roles; admins may rename the server, manage channels and invites and remove plain members;
//! members may join channels as the channel permissions allow. Ownership does not move.

use hum_proto::signal::{
    ErrorCode, Event, InviteInfo, MemberLeftReason, Name, ProtoError, Reply, Role,
    RosterLeaveReason, ServerRemovedReason, ServerSummary,
};
use hum_proto::{InviteCode, ServerId, UserId};
use rand::Rng;

use super::{Hub, HubResult, Shape, db_err, err};
use crate::model::{InviteRec, ServerRec};

/// The longest `expires_in_secs` an invite may ask for: 30 days (far below JavaScript's
/// largest safe integer, 2^53 - 1, so every client can hold the resulting `expires_at`).
pub const MAX_INVITE_EXPIRY_SECS: u64 = 30 * 24 * 3600;

/// Letters and digits minus the easily confused ones (0/O, 1/l/I).
const CODE_ALPHABET: &[u8] = b"23456789abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ";
const CODE_LEN: usize = 10;

impl Hub {
    /// The user's role in `server`: `not_found` if there is no such server, `not_member` if the
    /// user is not in it.
    pub(super) fn role_in(&self, server: ServerId, user: &UserId) -> Result<Role, ProtoError> {
        let s = self
            .model
            .servers
            .get(&server)
            .ok_or_else(|| err(ErrorCode::NotFound, "no such server"))?;
        s.members
            .get(user)
            .copied()
            .ok_or_else(|| err(ErrorCode::NotMember, "you are not a member of that server"))
    }

    /// Like [`Hub::role_in`] but also requires at least `min`.
    pub(super) fn require_role(
        &self,
        server: ServerId,
        user: &UserId,
        min: Role,
    ) -> Result<Role, ProtoError> {
        let role = self.role_in(server, user)?;
        if role < min {
            return Err(err(
                ErrorCode::Forbidden,
                format!(
                    "this needs the {} role; you are {}",
                    min.as_str(),
                    role.as_str()
                ),
            ));
        }
        Ok(role)
    }

    pub(super) fn server_create(&mut self, now_secs: u64, user: UserId, name: Name) -> HubResult {
        let owned = self.model.user_servers.get(&user).map_or(0, |ids| {
            ids.iter()
                .filter(|id| self.model.servers.get(id).is_some_and(|s| s.owner == user))
                .count()
        });
        if owned >= self.config.max_owned_servers_per_user {
            return Err(err(
                ErrorCode::LimitReached,
                format!(
                    "you own {owned} servers, the most one account may create; delete one first",
                ),
            ));
        }
        let mine = self.model.user_servers.get(&user).map_or(0, |s| s.len());
        if mine >= self.config.max_servers_per_user {
            return Err(err(
                ErrorCode::LimitReached,
                format!(
                    "at most {} servers per user",
                    self.config.max_servers_per_user
                ),
            ));
        }
        let id = self
            .store
            .create_server(&name, &user, now_secs)
            .map_err(db_err)?;
        self.model.servers.insert(id, ServerRec::new(name, user));
        self.model.add_member(id, user, Role::Owner);
        self.rewatch(&user);
        let info = self
            .server_info(id, &user, Shape::Asked)
            .ok_or_else(|| err(ErrorCode::Internal, "server vanished"))?;
        Ok(Reply::Server { server: info })
    }

    pub(super) fn server_list(&self, user: &UserId) -> Reply {
        let servers = self
            .model
            .user_servers
            .get(user)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| {
                        let s = self.model.servers.get(id)?;
                        Some(ServerSummary {
                            id: *id,
                            name: s.name.clone(),
                            owner: s.owner,
                            role: *s.members.get(user)?,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Reply::Servers { servers }
    }

    pub(super) fn server_info_req(&self, user: UserId, server: ServerId) -> HubResult {
        self.role_in(server, &user)?;
        let info = self
            .server_info(server, &user, Shape::Asked)
            .ok_or_else(|| err(ErrorCode::NotFound, "no such server"))?;
        Ok(Reply::Server { server: info })
    }

    pub(super) fn server_rename(
        &mut self,
        user: UserId,
        server: ServerId,
        name: Name,
    ) -> HubResult {
        self.require_role(server, &user, Role::Admin)?;
        self.store.rename_server(server, &name).map_err(db_err)?;
        if let Some(s) = self.model.servers.get_mut(&server) {
            s.name = name.clone();
        }
        self.event_to_server(server, Event::ServerUpdated { server, name });
        Ok(Reply::Ok)
    }

    pub(super) fn server_delete(&mut self, user: UserId, server: ServerId) -> HubResult {
        self.require_role(server, &user, Role::Owner)?;
        self.store.delete_server(server).map_err(db_err)?;
        let channels: Vec<_> = self
            .model
            .servers
            .get(&server)
            .map(|s| s.channels.iter().copied().collect())
            .unwrap_or_default();
        for c in channels {
            self.clear_roster(c, RosterLeaveReason::Deleted);
        }
        let members: Vec<UserId> = self
            .model
            .servers
            .get(&server)
            .map(|s| s.members.keys().copied().collect())
            .unwrap_or_default();
        self.model.remove_server(server);
        self.watch.remove_server(server);
        self.event_to_users(
            &members,
            Event::ServerRemoved {
                server,
                reason: ServerRemovedReason::Deleted,
            },
        );
        Ok(Reply::Ok)
    }

    /// Remove `target` from `server`: out of its voice channel first, then the membership.
    fn remove_member(
        &mut self,
        server: ServerId,
        target: &UserId,
        reason: MemberLeftReason,
    ) -> Result<(), ProtoError> {
        self.store.remove_member(server, target).map_err(db_err)?;
        if self.current_server(target) == Some(server) {
            let why = match reason {
                MemberLeftReason::Left => RosterLeaveReason::Left,
                MemberLeftReason::Kicked => RosterLeaveReason::Removed,
            };
            self.leave_channel(target, why);
        }
        self.model.remove_member(server, target);
        self.rewatch(target);
        self.event_to_watchers(
            server,
            None,
            Event::MemberLeft {
                server,
                user: *target,
                reason,
            },
        );
        Ok(())
    }

    pub(super) fn server_leave(&mut self, user: UserId, server: ServerId) -> HubResult {
        let role = self.role_in(server, &user)?;
        if role == Role::Owner {
            return Err(err(
                ErrorCode::Forbidden,
                "the owner cannot leave; delete the server instead",
            ));
        }
        self.remove_member(server, &user, MemberLeftReason::Left)?;
        Ok(Reply::Ok)
    }

    pub(super) fn member_kick(
        &mut self,
        user: UserId,
        server: ServerId,
        target: UserId,
    ) -> HubResult {
        let mine = self.require_role(server, &user, Role::Admin)?;
        if target == user {
            return Err(err(ErrorCode::BadRequest, "use server_leave to leave"));
        }
        let theirs = self
            .model
            .role(server, &target)
            .ok_or_else(|| err(ErrorCode::NotFound, "that user is not a member"))?;
        if theirs >= mine {
            return Err(err(
                ErrorCode::Forbidden,
                "you can only remove members below your role",
            ));
        }
        self.remove_member(server, &target, MemberLeftReason::Kicked)?;
        self.event_to_user(
            &target,
            Event::ServerRemoved {
                server,
                reason: ServerRemovedReason::Kicked,
            },
        );
        Ok(Reply::Ok)
    }

    pub(super) fn member_set_role(
        &mut self,
        user: UserId,
        server: ServerId,
        target: UserId,
        role: Role,
    ) -> HubResult {
        self.require_role(server, &user, Role::Owner)?;
        if role == Role::Owner {
            return Err(err(
                ErrorCode::BadRequest,
                "ownership cannot be transferred",
            ));
        }
        let theirs = self
            .model
            .role(server, &target)
            .ok_or_else(|| err(ErrorCode::NotFound, "that user is not a member"))?;
        if theirs == Role::Owner {
            return Err(err(ErrorCode::BadRequest, "the owner's role cannot change"));
        }
        self.store.set_role(server, &target, role).map_err(db_err)?;
        if let Some(s) = self.model.servers.get_mut(&server) {
            s.members.insert(target, role);
        }
        let member = self.member_view(&target, role);
        self.event_to_watchers(server, None, Event::MemberUpdated { server, member });
        // Channel permissions differ per role: re-check the voice state of someone in a channel.
        if self.current_server(&target) == Some(server) {
            self.enforce_permissions(&target);
        }
        Ok(Reply::Ok)
    }

    // --- bans -----------------------------------------------------------------------------------

    pub(super) fn member_ban(
        &mut self,
        now_secs: u64,
        user: UserId,
        server: ServerId,
        target: UserId,
    ) -> HubResult {
        let mine = self.require_role(server, &user, Role::Admin)?;
        if target == user {
            return Err(err(ErrorCode::BadRequest, "you cannot ban yourself"));
        }
        let theirs = self.model.role(server, &target);
        if theirs.is_some_and(|r| r >= mine) {
            return Err(err(
                ErrorCode::Forbidden,
                "you can only ban members below your role",
            ));
        }
        if self.model.is_banned(server, &target) {
            return Ok(Reply::Ok);
        }
        if theirs.is_some() {
            // Out of the voice channel and the server first (events as for a kick)...
            self.remove_member(server, &target, MemberLeftReason::Kicked)?;
            self.event_to_user(
                &target,
                Event::ServerRemoved {
                    server,
                    reason: ServerRemovedReason::Kicked,
                },
            );
        }
        // ...then the ban (which also deletes any membership row, in one transaction).
        self.store
            .ban(server, &target, &user, now_secs)
            .map_err(db_err)?;
        self.model.bans.entry(server).or_default().insert(target);
        Ok(Reply::Ok)
    }

    pub(super) fn member_unban(
        &mut self,
        user: UserId,
        server: ServerId,
        target: UserId,
    ) -> HubResult {
        self.require_role(server, &user, Role::Admin)?;
        if !self.model.is_banned(server, &target) {
            return Err(err(ErrorCode::NotFound, "that user is not banned"));
        }
        self.store.unban(server, &target).map_err(db_err)?;
        if let Some(b) = self.model.bans.get_mut(&server) {
            b.remove(&target);
            if b.is_empty() {
                self.model.bans.remove(&server);
            }
        }
        Ok(Reply::Ok)
    }

    pub(super) fn ban_list(&self, user: UserId, server: ServerId) -> HubResult {
        self.require_role(server, &user, Role::Admin)?;
        let users = self
            .model
            .bans
            .get(&server)
            .map(|b| b.iter().map(|u| self.summary(u)).collect())
            .unwrap_or_default();
        Ok(Reply::Bans { server, users })
    }

    // --- invites --------------------------------------------------------------------------------

    fn new_code(&mut self) -> Option<InviteCode> {
        for _ in 0..16 {
            let code: String = (0..CODE_LEN)
                .map(|_| CODE_ALPHABET[self.rng.gen_range(0..CODE_ALPHABET.len())] as char)
                .collect();
            let code = InviteCode::new(code).ok()?;
            if !self.model.invites.contains_key(&code) {
                return Some(code);
            }
        }
        None
    }

    fn invite_info(&self, code: &InviteCode) -> Option<InviteInfo> {
        let inv = self.model.invites.get(code)?;
        let server = self.model.servers.get(&inv.server)?;
        Some(InviteInfo {
            code: code.clone(),
            server: inv.server,
            server_name: server.name.clone(),
            uses: inv.uses,
            max_uses: inv.max_uses,
            expires_at: inv.expires_at,
        })
    }

    pub(super) fn invite_create(
        &mut self,
        now_secs: u64,
        user: UserId,
        server: ServerId,
        max_uses: Option<u32>,
        expires_in_secs: Option<u64>,
    ) -> HubResult {
        self.require_role(server, &user, Role::Admin)?;
        if max_uses == Some(0) {
            return Err(err(
                ErrorCode::BadRequest,
                "max_uses must be at least 1 (or null: unlimited)",
            ));
        }
        if expires_in_secs == Some(0) {
            return Err(err(
                ErrorCode::BadRequest,
                "expires_in_secs must be at least 1 (or null: never)",
            ));
        }
        if expires_in_secs.is_some_and(|s| s > MAX_INVITE_EXPIRY_SECS) {
            return Err(err(
                ErrorCode::BadRequest,
                format!(
                    "expires_in_secs is at most {MAX_INVITE_EXPIRY_SECS} (30 days; null: never)"
                ),
            ));
        }
        // Forget dead invites of this server before counting.
        let dead: Vec<InviteCode> = self
            .model
            .invites
            .iter()
            .filter(|(_, i)| i.server == server && !i.is_valid(now_secs))
            .map(|(c, _)| c.clone())
            .collect();
        for c in dead {
            self.store.delete_invite(&c).map_err(db_err)?;
            self.model.invites.remove(&c);
        }
        // And this user's dead invites elsewhere, so only live ones count against them.
        let dead_mine: Vec<InviteCode> = self
            .model
            .invites
            .iter()
            .filter(|(_, i)| i.created_by == user && !i.is_valid(now_secs))
            .map(|(c, _)| c.clone())
            .collect();
        for c in dead_mine {
            self.store.delete_invite(&c).map_err(db_err)?;
            self.model.invites.remove(&c);
        }
        let mine = self
            .model
            .invites
            .values()
            .filter(|i| i.created_by == user)
            .count();
        if mine >= self.config.max_invites_per_user {
            return Err(err(
                ErrorCode::LimitReached,
                format!(
                    "you have {mine} live invites, the most one account may hold; revoke some first"
                ),
            ));
        }
        let live = self
            .model
            .invites
            .values()
            .filter(|i| i.server == server)
            .count();
        if live >= self.config.max_invites_per_server {
            return Err(err(
                ErrorCode::LimitReached,
                format!(
                    "at most {} live invites per server",
                    self.config.max_invites_per_server
                ),
            ));
        }
        let code = self
            .new_code()
            .ok_or_else(|| err(ErrorCode::Internal, "could not pick a code"))?;
        let expires_at = expires_in_secs.map(|s| now_secs.saturating_add(s));
        self.store
            .create_invite(&code, server, &user, max_uses, expires_at, now_secs)
            .map_err(db_err)?;
        self.model.invites.insert(
            code.clone(),
            InviteRec {
                server,
                created_by: user,
                uses: 0,
                max_uses,
                expires_at,
            },
        );
        let invite = self
            .invite_info(&code)
            .ok_or_else(|| err(ErrorCode::Internal, "invite vanished"))?;
        Ok(Reply::Invite { invite })
    }

    pub(super) fn invite_join(
        &mut self,
        now_secs: u64,
        user: UserId,
        code: InviteCode,
    ) -> HubResult {
        let invalid = || {
            err(
                ErrorCode::InviteInvalid,
                "that invite is unknown, revoked, expired or used up",
            )
        };
        let inv = self.model.invites.get(&code).ok_or_else(invalid)?;
        if !inv.is_valid(now_secs) {
            return Err(invalid());
        }
        let server = inv.server;
        let exhausted_after = inv
            .max_uses
            .is_some_and(|m| inv.uses.saturating_add(1) >= m);
        let srv = self.model.servers.get(&server).ok_or_else(invalid)?;
        if self.model.is_banned(server, &user) {
            return Err(err(
                ErrorCode::Banned,
                "you are banned from that server; an admin must lift the ban before you can rejoin",
            ));
        }
        if srv.members.contains_key(&user) {
            return Err(err(
                ErrorCode::AlreadyMember,
                "you are already a member of that server",
            ));
        }
        if srv.members.len() >= self.config.max_members_per_server {
            return Err(err(ErrorCode::LimitReached, "that server is full"));
        }
        let mine = self.model.user_servers.get(&user).map_or(0, |s| s.len());
        if mine >= self.config.max_servers_per_user {
            return Err(err(
                ErrorCode::LimitReached,
                format!(
                    "at most {} servers per user",
                    self.config.max_servers_per_user
                ),
            ));
        }
        self.store
            .use_invite(&code, server, &user, now_secs)
            .map_err(db_err)?;
        if exhausted_after {
            self.store.delete_invite(&code).map_err(db_err)?;
            self.model.invites.remove(&code);
        } else if let Some(inv) = self.model.invites.get_mut(&code) {
            inv.uses = inv.uses.saturating_add(1);
        }
        self.model.add_member(server, user, Role::Member);
        self.rewatch(&user);
        let member = self.member_view(&user, Role::Member);
        self.event_to_watchers(server, None, Event::MemberJoined { server, member });
        let info = self
            .server_info(server, &user, Shape::Joined)
            .ok_or_else(invalid)?;
        Ok(Reply::Server { server: info })
    }

    pub(super) fn invite_revoke(&mut self, user: UserId, code: InviteCode) -> HubResult {
        let server = self
            .model
            .invites
            .get(&code)
            .map(|i| i.server)
            .ok_or_else(|| err(ErrorCode::NotFound, "no such invite"))?;
        self.require_role(server, &user, Role::Admin)?;
        self.store.delete_invite(&code).map_err(db_err)?;
        self.model.invites.remove(&code);
        Ok(Reply::Ok)
    }
}
