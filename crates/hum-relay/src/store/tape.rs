//! A store that records or replays its results: how a cluster writes the database once
//! (crate::bus, docs/cluster.md).
//!
//! Every node's hub takes every log entry. For an entry this node logged ([`Mode::Record`]) the
//! calls go to the real database and each result is recorded ([`Effect`]); the server module
//! logs those results after the entry. For another node's entry ([`Mode::Replay`]) nothing is
//! written: each call returns the next recorded result of the origin, so this hub takes the same
//! branch with the same ids the origin's hub took. A hub that asks for more results than were
//! recorded (it would have to have diverged) gets an error, logged.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use hum_proto::signal::{ChannelPermissions, DisplayName, Handle, Name, Role};
use hum_proto::{ChannelId, InviteCode, ServerId, UserId};

use super::{Kind, RawData, Result, StoreBackend, StoreError};
use crate::bus::Effect;

/// What the tape does with the next calls.
#[derive(Debug, Default)]
pub enum Mode {
    /// Write for real, keep every result.
    #[default]
    Record,
    /// Write nothing, return these results in order.
    Replay(VecDeque<Effect>),
}

#[derive(Debug, Default)]
struct State {
    mode: Mode,
    recorded: Vec<Effect>,
}

/// The hub thread's handle on the tape: set the mode before an entry, take the results after.
#[derive(Clone, Debug, Default)]
pub struct TapeControl(Arc<Mutex<State>>);

impl TapeControl {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // One thread uses it; a poisoned lock only means a panic in a hub command, which the
        // hub thread survives; the state is still plain data.
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Record this node's next entry.
    pub fn record(&self) {
        self.with(|s| {
            s.mode = Mode::Record;
            s.recorded.clear();
        });
    }

    /// Replay another node's entry.
    pub fn replay(&self, results: Vec<Effect>) {
        self.with(|s| {
            s.mode = Mode::Replay(results.into());
            s.recorded.clear();
        });
    }

    /// The results recorded since [`TapeControl::record`]; then back to recording.
    pub fn take(&self) -> Vec<Effect> {
        self.with(|s| {
            let left = match &s.mode {
                Mode::Replay(q) => q.len(),
                Mode::Record => 0,
            };
            if left > 0 {
                tracing::error!(left, "cluster: a replayed entry left results unused");
            }
            s.mode = Mode::Record;
            std::mem::take(&mut s.recorded)
        })
    }
}

/// A [`StoreBackend`] that writes through `inner` or replays (see the module doc).
pub struct TapeStore {
    inner: Box<dyn StoreBackend>,
    control: TapeControl,
}

impl TapeStore {
    pub fn new(inner: super::Store, control: TapeControl) -> TapeStore {
        TapeStore {
            inner: inner.0,
            control,
        }
    }

    /// `None` when recording; when replaying, the origin's next result.
    fn replayed<T: Recorded>(&self) -> Option<Result<T>> {
        self.control.with(|s| match &mut s.mode {
            Mode::Record => None,
            Mode::Replay(q) => Some(match q.pop_front() {
                Some(Effect::Failed { error }) => Err(StoreError::Replayed(error)),
                Some(e) => T::from_effect(e).ok_or_else(|| {
                    tracing::error!("cluster: a replayed result has the wrong kind");
                    StoreError::Replayed("the recorded result has another kind".into())
                }),
                None => {
                    tracing::error!(
                        "cluster: a replayed entry asked for more results than recorded"
                    );
                    Err(StoreError::Replayed("no recorded result".into()))
                }
            }),
        })
    }

    /// Keep the result of a real write.
    fn recorded<T: Recorded>(&self, r: Result<T>) -> Result<T> {
        let e = match &r {
            Ok(v) => v.effect(),
            Err(e) => Effect::Failed {
                error: e.to_string(),
            },
        };
        self.control.with(|s| s.recorded.push(e));
        r
    }
}

/// A store result the tape can carry.
trait Recorded: Sized {
    fn effect(&self) -> Effect;
    fn from_effect(e: Effect) -> Option<Self>;
}

impl Recorded for () {
    fn effect(&self) -> Effect {
        Effect::Done
    }
    fn from_effect(e: Effect) -> Option<Self> {
        matches!(e, Effect::Done).then_some(())
    }
}

impl Recorded for ServerId {
    fn effect(&self) -> Effect {
        Effect::Id { id: self.0 }
    }
    fn from_effect(e: Effect) -> Option<Self> {
        match e {
            Effect::Id { id } => Some(ServerId(id)),
            _ => None,
        }
    }
}

impl Recorded for ChannelId {
    fn effect(&self) -> Effect {
        Effect::Id { id: self.0 }
    }
    fn from_effect(e: Effect) -> Option<Self> {
        match e {
            Effect::Id { id } => Some(ChannelId(id)),
            _ => None,
        }
    }
}

/// Replay the origin's result, or write through `inner` and record it.
macro_rules! tape {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self.replayed() {
            Some(r) => r,
            None => {
                let r = $self.inner.$method($($arg),*);
                $self.recorded(r)
            }
        }
    };
}

impl StoreBackend for TapeStore {
    fn kind(&self) -> Kind {
        self.inner.kind()
    }
    fn schema_version(&self) -> Result<i64> {
        self.inner.schema_version()
    }
    fn read_all(&self) -> Result<RawData> {
        self.inner.read_all()
    }
    fn drop_handle(&self, user: &UserId) -> Result<()> {
        self.inner.drop_handle(user)
    }
    fn rekey_handle(&self, user: &UserId, key: &str) -> Result<()> {
        self.inner.rekey_handle(user, key)
    }
    fn has_user(&self, id: &UserId) -> Result<bool> {
        self.inner.has_user(id)
    }
    #[cfg(test)]
    fn refuse_writes(&self) -> Result<()> {
        self.inner.refuse_writes()
    }
    #[cfg(test)]
    fn execute_raw(&self, sql: &str) -> Result<()> {
        self.inner.execute_raw(sql)
    }

    fn set_handle(&self, user: &UserId, h: Option<&Handle>, now_secs: u64) -> Result<()> {
        tape!(self.set_handle(user, h, now_secs))
    }
    fn ban(&mut self, server: ServerId, user: &UserId, by: &UserId, now_secs: u64) -> Result<()> {
        tape!(self.ban(server, user, by, now_secs))
    }
    fn unban(&self, server: ServerId, user: &UserId) -> Result<()> {
        tape!(self.unban(server, user))
    }
    fn decline_friend_request(&mut self, from: &UserId, to: &UserId, now_secs: u64) -> Result<()> {
        tape!(self.decline_friend_request(from, to, now_secs))
    }
    fn forget_decline(&self, from: &UserId, to: &UserId) -> Result<()> {
        tape!(self.forget_decline(from, to))
    }
    fn upsert_user(&self, id: &UserId, name: &DisplayName, now_secs: u64) -> Result<()> {
        tape!(self.upsert_user(id, name, now_secs))
    }
    fn set_display_name(&self, id: &UserId, name: &DisplayName) -> Result<()> {
        tape!(self.set_display_name(id, name))
    }
    fn add_friend_request(&self, from: &UserId, to: &UserId, now_secs: u64) -> Result<()> {
        tape!(self.add_friend_request(from, to, now_secs))
    }
    fn delete_friend_request(&self, from: &UserId, to: &UserId) -> Result<()> {
        tape!(self.delete_friend_request(from, to))
    }
    fn add_friendship(&mut self, a: &UserId, b: &UserId, now_secs: u64) -> Result<()> {
        tape!(self.add_friendship(a, b, now_secs))
    }
    fn delete_friendship(&self, a: &UserId, b: &UserId) -> Result<()> {
        tape!(self.delete_friendship(a, b))
    }
    fn create_server(&mut self, name: &Name, owner: &UserId, now_secs: u64) -> Result<ServerId> {
        tape!(self.create_server(name, owner, now_secs))
    }
    fn rename_server(&self, id: ServerId, name: &Name) -> Result<()> {
        tape!(self.rename_server(id, name))
    }
    fn delete_server(&self, id: ServerId) -> Result<()> {
        tape!(self.delete_server(id))
    }
    fn add_member(&self, server: ServerId, user: &UserId, role: Role, now_secs: u64) -> Result<()> {
        tape!(self.add_member(server, user, role, now_secs))
    }
    fn set_role(&self, server: ServerId, user: &UserId, role: Role) -> Result<()> {
        tape!(self.set_role(server, user, role))
    }
    fn remove_member(&self, server: ServerId, user: &UserId) -> Result<()> {
        tape!(self.remove_member(server, user))
    }
    fn create_channel(
        &self,
        server: ServerId,
        name: &Name,
        max_participants: u32,
        permissions: &ChannelPermissions,
        now_secs: u64,
    ) -> Result<ChannelId> {
        tape!(self.create_channel(server, name, max_participants, permissions, now_secs))
    }
    fn update_channel(
        &self,
        id: ChannelId,
        name: &Name,
        max_participants: u32,
        permissions: &ChannelPermissions,
        mesh_limit: Option<u32>,
    ) -> Result<()> {
        tape!(self.update_channel(id, name, max_participants, permissions, mesh_limit))
    }
    fn delete_channel(&self, id: ChannelId) -> Result<()> {
        tape!(self.delete_channel(id))
    }
    fn create_invite(
        &self,
        code: &InviteCode,
        server: ServerId,
        created_by: &UserId,
        max_uses: Option<u32>,
        expires_at: Option<u64>,
        now_secs: u64,
    ) -> Result<()> {
        tape!(self.create_invite(code, server, created_by, max_uses, expires_at, now_secs))
    }
    fn use_invite(
        &mut self,
        code: &InviteCode,
        server: ServerId,
        user: &UserId,
        now_secs: u64,
    ) -> Result<()> {
        tape!(self.use_invite(code, server, user, now_secs))
    }
    fn delete_invite(&self, code: &InviteCode) -> Result<()> {
        tape!(self.delete_invite(code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn the_origin_records_ids_and_a_replica_replays_them_without_writing() {
        let origin_ctl = TapeControl::default();
        let mut origin = TapeStore::new(Store::open_in_memory().unwrap(), origin_ctl.clone());
        let owner = UserId([1; 32]);
        let name = DisplayName::new("ann").unwrap();
        origin_ctl.record();
        origin.upsert_user(&owner, &name, 1).unwrap();
        let sid = origin
            .create_server(&Name::new("club").unwrap(), &owner, 1)
            .unwrap();
        let tape = origin_ctl.take();
        assert_eq!(tape, vec![Effect::Done, Effect::Id { id: sid.0 }]);

        // A replica on another (empty) database: same answers, nothing written.
        let replica_ctl = TapeControl::default();
        let mut replica = TapeStore::new(Store::open_in_memory().unwrap(), replica_ctl.clone());
        replica_ctl.replay(tape);
        replica.upsert_user(&owner, &name, 1).unwrap();
        assert_eq!(
            replica
                .create_server(&Name::new("club").unwrap(), &owner, 1)
                .unwrap(),
            sid
        );
        assert!(replica_ctl.take().is_empty());
        assert!(!replica.has_user(&owner).unwrap());
        // A call past the recording fails rather than inventing an answer.
        replica_ctl.replay(vec![]);
        assert!(replica.upsert_user(&owner, &name, 1).is_err());
    }

    #[test]
    fn a_failed_write_replays_as_a_failure() {
        let ctl = TapeControl::default();
        let store = TapeStore::new(Store::open_in_memory().unwrap(), ctl.clone());
        ctl.replay(vec![Effect::Failed {
            error: "disk full".into(),
        }]);
        let e = store
            .upsert_user(&UserId([2; 32]), &DisplayName::new("bo").unwrap(), 1)
            .unwrap_err();
        assert!(e.to_string().contains("disk full"), "{e}");
    }
}
