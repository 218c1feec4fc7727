//! Who watches which server: the index behind [`Hub::watchers`](super::Hub).
//!
//! A session watches a server when it is online, a member of it, and either never sent
//! `subscribe` (an older client: every server it is in) or named the server in its last
//! `subscribe`. Member and voice changes of a server go to its watchers, so finding them must
//! not cost a walk over every member: with 5,000 members joining one server, that walk per join
//! made the setup quadratic (docs/cluster.md).
//!
//! Invariant (checked by [`WatchIndex::check`] against a recomputation in `Hub::check`):
//! `by_server[s]` holds `u` exactly when `by_user[u]` holds `s`, and no set is empty. The hub
//! keeps it in step by calling [`WatchIndex::set`] with a user's full watch set after every
//! change to it (login, `subscribe`, session end, joining or leaving a server) and
//! [`WatchIndex::remove_server`] when a server is deleted. The index is part of the hub's
//! deterministic state, so in cluster mode every node, fed the same log, holds the same index.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hum_proto::{ServerId, UserId};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct WatchIndex {
    by_server: BTreeMap<ServerId, BTreeSet<UserId>>,
    by_user: HashMap<UserId, BTreeSet<ServerId>>,
}

impl WatchIndex {
    /// The users watching `server`, in user-id order.
    pub(super) fn watching(&self, server: ServerId) -> impl Iterator<Item = &UserId> {
        self.by_server.get(&server).into_iter().flatten()
    }

    /// Whether `user` watches `server`.
    pub(super) fn watches(&self, user: &UserId, server: ServerId) -> bool {
        self.by_user.get(user).is_some_and(|s| s.contains(&server))
    }

    /// `user` now watches exactly `servers` (empty: nothing, e.g. offline). Costs the size of
    /// the old and new sets, not of any server.
    pub(super) fn set(&mut self, user: UserId, servers: BTreeSet<ServerId>) {
        let old = self.by_user.remove(&user).unwrap_or_default();
        for s in old.difference(&servers) {
            if let Some(set) = self.by_server.get_mut(s) {
                set.remove(&user);
                if set.is_empty() {
                    self.by_server.remove(s);
                }
            }
        }
        for s in servers.difference(&old) {
            self.by_server.entry(*s).or_default().insert(user);
        }
        if !servers.is_empty() {
            self.by_user.insert(user, servers);
        }
    }

    /// `server` is gone: nobody watches it.
    pub(super) fn remove_server(&mut self, server: ServerId) {
        for u in self.by_server.remove(&server).unwrap_or_default() {
            if let Some(set) = self.by_user.get_mut(&u) {
                set.remove(&server);
                if set.is_empty() {
                    self.by_user.remove(&u);
                }
            }
        }
    }

    /// The index is `expected` (a recomputation from scratch) and its two halves agree.
    pub(super) fn check(&self, expected: &WatchIndex) -> Result<(), String> {
        for (s, users) in &self.by_server {
            if users.is_empty() {
                return Err(format!("an empty watcher set is kept for server {s}"));
            }
            if let Some(u) = users
                .iter()
                .find(|u| !self.by_user.get(u).is_some_and(|ss| ss.contains(s)))
            {
                return Err(format!("{u:?} watches {s} by server but not by user"));
            }
        }
        for (u, servers) in &self.by_user {
            if servers.is_empty() {
                return Err(format!("an empty watch set is kept for {u:?}"));
            }
            if let Some(s) = servers
                .iter()
                .find(|s| !self.by_server.get(s).is_some_and(|us| us.contains(u)))
            {
                return Err(format!("{u:?} watches {s} by user but not by server"));
            }
        }
        if self.by_server != expected.by_server {
            return Err(format!(
                "the watch index {:?} differs from a recomputation {:?}",
                self.by_server, expected.by_server
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(n: u8) -> UserId {
        UserId([n; 32])
    }

    fn set(ids: &[u64]) -> BTreeSet<ServerId> {
        ids.iter().map(|i| ServerId(*i)).collect()
    }

    fn watching(i: &WatchIndex, s: u64) -> Vec<UserId> {
        i.watching(ServerId(s)).copied().collect()
    }

    /// Rebuild from `by_user` alone: what `check` compares against.
    fn rebuilt(i: &WatchIndex) -> WatchIndex {
        let mut r = WatchIndex::default();
        for (user, servers) in &i.by_user {
            r.set(*user, servers.clone());
        }
        r
    }

    #[test]
    fn set_moves_a_user_between_servers_and_cleans_up() {
        let mut i = WatchIndex::default();
        i.set(u(2), set(&[1, 2]));
        i.set(u(1), set(&[1]));
        assert_eq!(watching(&i, 1), vec![u(1), u(2)]);
        assert_eq!(watching(&i, 2), vec![u(2)]);
        i.set(u(2), set(&[2, 3]));
        assert_eq!(watching(&i, 1), vec![u(1)]);
        assert_eq!(watching(&i, 3), vec![u(2)]);
        i.check(&rebuilt(&i)).unwrap();
        // Offline: out of everything, no empty sets left behind.
        i.set(u(2), BTreeSet::new());
        i.set(u(1), BTreeSet::new());
        assert_eq!(i, WatchIndex::default());
    }

    #[test]
    fn a_deleted_server_leaves_no_trace() {
        let mut i = WatchIndex::default();
        i.set(u(1), set(&[1, 2]));
        i.set(u(2), set(&[1]));
        i.remove_server(ServerId(1));
        assert!(watching(&i, 1).is_empty());
        assert_eq!(watching(&i, 2), vec![u(1)]);
        i.check(&rebuilt(&i)).unwrap();
        i.remove_server(ServerId(2));
        assert_eq!(i, WatchIndex::default());
    }

    #[test]
    fn check_finds_a_stale_entry() {
        let mut i = WatchIndex::default();
        i.set(u(1), set(&[1]));
        let mut expected = WatchIndex::default();
        expected.set(u(1), set(&[2]));
        assert!(i.check(&expected).is_err());
        // Halves out of step.
        i.by_user.clear();
        assert!(i.check(&WatchIndex::default()).is_err());
    }
}
