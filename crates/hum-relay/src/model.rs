//! The relay's persistent data, held in memory (loaded from [`crate::store::Store`] at startup,
//! written through on every change), plus the live channel rosters.
//!
//! Invariants (checked by [`Model::check`] in tests):
//! - friendship is symmetric: `b ∈ friends[a]` ⇔ `a ∈ friends[b]`;
//! - requests mirror: `b ∈ requests_out[a]` ⇔ `a ∈ requests_in[b]`; never both a request and a
//!   friendship between the same two users;
//! - membership mirrors: `u ∈ servers[s].members` ⇔ `s ∈ user_servers[u]`; every server has
//!   exactly one owner, its `owner`;
//! - `c ∈ servers[s].channels` ⇔ `channels[c].server == s`;
//! - every rostered user is a member of the channel's server and appears in one roster at most;
//! - a banned user is not a member of the server; bans of a deleted server are gone;
//! - handles mirror: `handles[u] = h` ⇔ `handle_owners[h.key()] = u`, for known users only, so
//!   no two users hold handles with the same key.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hum_proto::signal::{ChannelPermissions, DisplayName, Handle, Name, Role};
use hum_proto::{ChannelId, InviteCode, ServerId, UserId};

#[derive(Clone, Debug)]
pub struct UserRec {
    pub display_name: DisplayName,
}

#[derive(Clone, Debug)]
pub struct ServerRec {
    pub name: Name,
    pub owner: UserId,
    pub members: BTreeMap<UserId, Role>,
    pub channels: BTreeSet<ChannelId>,
}

impl ServerRec {
    pub fn new(name: Name, owner: UserId) -> Self {
        ServerRec {
            name,
            owner,
            members: BTreeMap::new(),
            channels: BTreeSet::new(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ChannelRec {
    pub server: ServerId,
    pub name: Name,
    pub max_participants: u32,
    pub permissions: ChannelPermissions,
    /// The admin's mesh limit (`channel_configure { mesh_limit }`), below the relay's; `None`:
    /// the relay's own limit.
    pub mesh_limit: Option<u32>,
    /// Who is in the channel now, in join order. Live state: not persisted.
    pub roster: Vec<UserId>,
}

#[derive(Clone, Debug)]
pub struct InviteRec {
    pub server: ServerId,
    /// Who made it (counted against their `max_invites_per_user`).
    pub created_by: UserId,
    pub uses: u32,
    pub max_uses: Option<u32>,
    pub expires_at: Option<u64>,
}

impl InviteRec {
    /// Usable at `now_secs`?
    pub fn is_valid(&self, now_secs: u64) -> bool {
        self.max_uses.is_none_or(|m| self.uses < m) && self.expires_at.is_none_or(|t| now_secs < t)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Model {
    pub users: HashMap<UserId, UserRec>,
    pub friends: HashMap<UserId, BTreeSet<UserId>>,
    pub requests_out: HashMap<UserId, BTreeSet<UserId>>,
    pub requests_in: HashMap<UserId, BTreeSet<UserId>>,
    pub servers: BTreeMap<ServerId, ServerRec>,
    pub user_servers: HashMap<UserId, BTreeSet<ServerId>>,
    pub channels: BTreeMap<ChannelId, ChannelRec>,
    pub invites: HashMap<InviteCode, InviteRec>,
    /// Who is banned from which server: they cannot rejoin (by invite) until unbanned.
    pub bans: BTreeMap<ServerId, BTreeSet<UserId>>,
    /// `(from, to)` -> when `to` last declined `from`'s friend request (Unix seconds): `from`
    /// may not ask again during the cooldown.
    pub declined: HashMap<(UserId, UserId), u64>,
    /// Each user's handle, if they took one.
    pub handles: HashMap<UserId, Handle>,
    /// Who holds the handle with a given [`Handle::key`] (case and look-alikes folded).
    pub handle_owners: HashMap<String, UserId>,
}

fn remove_from<K: std::hash::Hash + Eq, V: Ord>(map: &mut HashMap<K, BTreeSet<V>>, k: &K, v: &V) {
    if let Some(set) = map.get_mut(k) {
        set.remove(v);
        if set.is_empty() {
            map.remove(k);
        }
    }
}

impl Model {
    pub fn are_friends(&self, a: &UserId, b: &UserId) -> bool {
        self.friends.get(a).is_some_and(|s| s.contains(b))
    }

    pub fn has_request(&self, from: &UserId, to: &UserId) -> bool {
        self.requests_out.get(from).is_some_and(|s| s.contains(to))
    }

    pub fn friend_count(&self, u: &UserId) -> usize {
        self.friends.get(u).map_or(0, BTreeSet::len)
            + self.requests_out.get(u).map_or(0, BTreeSet::len)
            + self.requests_in.get(u).map_or(0, BTreeSet::len)
    }

    pub fn add_friendship(&mut self, a: UserId, b: UserId) {
        self.remove_request(&a, &b);
        self.remove_request(&b, &a);
        self.friends.entry(a).or_default().insert(b);
        self.friends.entry(b).or_default().insert(a);
    }

    pub fn remove_friendship(&mut self, a: &UserId, b: &UserId) {
        remove_from(&mut self.friends, a, b);
        remove_from(&mut self.friends, b, a);
    }

    pub fn add_request(&mut self, from: UserId, to: UserId) {
        self.requests_out.entry(from).or_default().insert(to);
        self.requests_in.entry(to).or_default().insert(from);
    }

    pub fn remove_request(&mut self, from: &UserId, to: &UserId) {
        remove_from(&mut self.requests_out, from, to);
        remove_from(&mut self.requests_in, to, from);
    }

    /// Who holds `h` or a handle with the same key.
    pub fn handle_owner(&self, h: &Handle) -> Option<UserId> {
        self.handle_owners.get(&h.key()).copied()
    }

    /// Give `user` the handle `h` (or none), releasing their old one.
    pub fn set_handle(&mut self, user: UserId, h: Option<Handle>) {
        if let Some(old) = self.handles.remove(&user) {
            self.handle_owners.remove(&old.key());
        }
        if let Some(h) = h {
            self.handle_owners.insert(h.key(), user);
            self.handles.insert(user, h);
        }
    }

    pub fn is_banned(&self, server: ServerId, user: &UserId) -> bool {
        self.bans.get(&server).is_some_and(|b| b.contains(user))
    }

    pub fn role(&self, server: ServerId, user: &UserId) -> Option<Role> {
        self.servers.get(&server)?.members.get(user).copied()
    }

    pub fn add_member(&mut self, server: ServerId, user: UserId, role: Role) {
        if let Some(s) = self.servers.get_mut(&server) {
            s.members.insert(user, role);
            self.user_servers.entry(user).or_default().insert(server);
        }
    }

    pub fn remove_member(&mut self, server: ServerId, user: &UserId) {
        if let Some(s) = self.servers.get_mut(&server) {
            s.members.remove(user);
        }
        remove_from(&mut self.user_servers, user, &server);
    }

    pub fn add_channel(&mut self, id: ChannelId, rec: ChannelRec) {
        if let Some(s) = self.servers.get_mut(&rec.server) {
            s.channels.insert(id);
            self.channels.insert(id, rec);
        }
    }

    /// Remove a channel; returns it (with its roster) if it existed.
    pub fn remove_channel(&mut self, id: ChannelId) -> Option<ChannelRec> {
        let rec = self.channels.remove(&id)?;
        if let Some(s) = self.servers.get_mut(&rec.server) {
            s.channels.remove(&id);
        }
        Some(rec)
    }

    /// Remove a server with its channels, members and invites; returns it if it existed.
    pub fn remove_server(&mut self, id: ServerId) -> Option<ServerRec> {
        let rec = self.servers.remove(&id)?;
        for c in &rec.channels {
            self.channels.remove(c);
        }
        for u in rec.members.keys() {
            remove_from(&mut self.user_servers, u, &id);
        }
        self.invites.retain(|_, inv| inv.server != id);
        self.bans.remove(&id);
        Some(rec)
    }

    /// Verify the invariants in the module doc; `Err` names the first one broken.
    pub fn check(&self) -> Result<(), String> {
        if self.handles.len() != self.handle_owners.len() {
            return Err("handles and handle_owners differ in size".into());
        }
        for (u, h) in &self.handles {
            if self.handle_owners.get(&h.key()) != Some(u) {
                return Err(format!("handle {h} of {u:?} is not owned by it"));
            }
            if !self.users.contains_key(u) {
                return Err(format!("handle {h} belongs to unknown user {u:?}"));
            }
        }
        for (s, banned) in &self.bans {
            let Some(srv) = self.servers.get(s) else {
                return Err(format!("bans kept for deleted server {s}"));
            };
            if let Some(u) = banned.iter().find(|u| srv.members.contains_key(u)) {
                return Err(format!("{u:?} is banned from {s} and a member of it"));
            }
        }
        for (a, fs) in &self.friends {
            for b in fs {
                if !self.are_friends(b, a) {
                    return Err(format!("friendship {a:?}->{b:?} is one-sided"));
                }
                if self.has_request(a, b) || self.has_request(b, a) {
                    return Err(format!(
                        "{a:?} and {b:?} are friends with a pending request"
                    ));
                }
            }
        }
        for (a, out) in &self.requests_out {
            for b in out {
                if !self.requests_in.get(b).is_some_and(|s| s.contains(a)) {
                    return Err(format!("request {a:?}->{b:?} missing from requests_in"));
                }
            }
        }
        for (b, inc) in &self.requests_in {
            for a in inc {
                if !self.has_request(a, b) {
                    return Err(format!("request {a:?}->{b:?} missing from requests_out"));
                }
            }
        }
        let mut rostered = BTreeSet::new();
        for (sid, s) in &self.servers {
            if s.members.get(&s.owner) != Some(&Role::Owner) {
                return Err(format!(
                    "server {sid} owner is not a member with role owner"
                ));
            }
            if s.members.values().filter(|r| **r == Role::Owner).count() != 1 {
                return Err(format!("server {sid} has more than one owner"));
            }
            for u in s.members.keys() {
                if !self
                    .user_servers
                    .get(u)
                    .is_some_and(|set| set.contains(sid))
                {
                    return Err(format!("member {u:?} of {sid} missing from user_servers"));
                }
            }
            for c in &s.channels {
                match self.channels.get(c) {
                    Some(ch) if ch.server == *sid => {
                        for u in &ch.roster {
                            if !s.members.contains_key(u) {
                                return Err(format!("{u:?} in channel {c} is not a member"));
                            }
                            if !rostered.insert(*u) {
                                return Err(format!("{u:?} is in two rosters"));
                            }
                        }
                    }
                    _ => {
                        return Err(format!(
                            "channel {c} of server {sid} is missing or elsewhere"
                        ));
                    }
                }
            }
        }
        for (u, ss) in &self.user_servers {
            for s in ss {
                if !self
                    .servers
                    .get(s)
                    .is_some_and(|srv| srv.members.contains_key(u))
                {
                    return Err(format!(
                        "user_servers has {u:?} in {s} but the server does not"
                    ));
                }
            }
        }
        for (c, ch) in &self.channels {
            if !self
                .servers
                .get(&ch.server)
                .is_some_and(|s| s.channels.contains(c))
            {
                return Err(format!("channel {c} not listed by its server"));
            }
        }
        Ok(())
    }
}
