//! Friends, profiles and 1-on-1 calls.
//!
//! A friendship is mutual by construction: it exists only once one side asked and the other
//! accepted (or both asked). Calls need a friendship and both parties online; a call is
//! `Ringing` until the callee accepts, then `Active` until someone hangs up, declines, cancels,
//! disconnects, or the ring times out. Call signalling is allowed only while `Active`.

use std::collections::BTreeSet;

use hum_proto::signal::{CallEndReason, DisplayName, ErrorCode, Event, Friend, Handle, Reply};
use hum_proto::{CallId, UserId};

use super::{CallRec, CallState, ConnId, Hub, HubResult, db_err, err};

impl Hub {
    fn known_user(&self, u: &UserId) -> Result<(), hum_proto::signal::ProtoError> {
        if self.model.users.contains_key(u) {
            Ok(())
        } else {
            Err(err(
                ErrorCode::NotFound,
                "no user with that key has ever logged in here",
            ))
        }
    }

    pub(super) fn set_profile(&mut self, user: UserId, name: DisplayName) -> HubResult {
        self.store.set_display_name(&user, &name).map_err(db_err)?;
        if let Some(rec) = self.model.users.get_mut(&user) {
            rec.display_name = name;
        }
        self.push_user_updated(&user);
        Ok(Reply::Ok)
    }

    /// Tell `u`'s online friends and co-members (and `u`'s own session) its current name.
    pub(super) fn push_user_updated(&mut self, u: &UserId) {
        let mut to: BTreeSet<ConnId> = BTreeSet::new();
        if let Some(fs) = self.model.friends.get(u) {
            to.extend(fs.iter().filter_map(|f| self.conn_of(f)));
        }
        if let Some(servers) = self.model.user_servers.get(u) {
            for s in servers {
                if let Some(srv) = self.model.servers.get(s) {
                    to.extend(srv.members.keys().filter_map(|m| self.conn_of(m)));
                }
            }
        }
        to.extend(self.conn_of(u));
        let event = Event::UserUpdated {
            user: self.summary(u),
        };
        self.send(
            to.into_iter().collect(),
            hum_proto::signal::ServerMessage::event(event),
        );
    }

    // --- friends --------------------------------------------------------------------------------

    pub(super) fn friend_request(&mut self, now_secs: u64, user: UserId, to: UserId) -> HubResult {
        if to == user {
            return Err(err(ErrorCode::BadRequest, "you cannot befriend yourself"));
        }
        self.known_user(&to)?;
        if self.model.are_friends(&user, &to) {
            return Err(err(ErrorCode::AlreadyFriends, "you are already friends"));
        }
        if self.model.has_request(&user, &to) {
            return Err(err(
                ErrorCode::AlreadyFriends,
                "your request is already pending",
            ));
        }
        if self.model.has_request(&to, &user) {
            // They asked first: asking back is accepting.
            return self.friend_accept(now_secs, user, to);
        }
        if let Some(&at) = self.model.declined.get(&(user, to)) {
            let until = at.saturating_add(self.config.friend_request_cooldown_secs);
            if now_secs < until {
                let hours = (until - now_secs).div_ceil(3600);
                return Err(err(
                    ErrorCode::RateLimited,
                    format!("they declined your last request; you can ask again in {hours} h"),
                ));
            }
            self.store.forget_decline(&user, &to).map_err(db_err)?;
            self.model.declined.remove(&(user, to));
        }
        let max = self.config.max_friends;
        if self.model.friend_count(&user) >= max || self.model.friend_count(&to) >= max {
            return Err(err(
                ErrorCode::LimitReached,
                format!("at most {max} friends and requests"),
            ));
        }
        self.store
            .add_friend_request(&user, &to, now_secs)
            .map_err(db_err)?;
        self.model.add_request(user, to);
        let from = self.summary(&user);
        self.event_to_user(&to, Event::FriendRequestReceived { from });
        Ok(Reply::Ok)
    }

    pub(super) fn friend_accept(&mut self, now_secs: u64, user: UserId, from: UserId) -> HubResult {
        if !self.model.has_request(&from, &user) {
            return Err(err(
                ErrorCode::NotFound,
                "no pending friend request from that user",
            ));
        }
        self.store
            .add_friendship(&user, &from, now_secs)
            .map_err(db_err)?;
        self.model.add_friendship(user, from);
        for (a, b) in [(user, from), (from, user)] {
            let friend = Friend {
                user: self.summary(&b),
                presence: self.presence(&b),
            };
            self.event_to_user(&a, Event::FriendAdded { friend });
        }
        Ok(Reply::Ok)
    }

    pub(super) fn friend_decline(
        &mut self,
        now_secs: u64,
        user: UserId,
        from: UserId,
    ) -> HubResult {
        if !self.model.has_request(&from, &user) {
            return Err(err(
                ErrorCode::NotFound,
                "no pending friend request from that user",
            ));
        }
        // `from` may not ask again for `friend_request_cooldown_secs`.
        self.store
            .decline_friend_request(&from, &user, now_secs)
            .map_err(db_err)?;
        self.model.remove_request(&from, &user);
        self.model.declined.insert((from, user), now_secs);
        self.event_to_user(&from, Event::FriendDeclined { user });
        Ok(Reply::Ok)
    }

    pub(super) fn friend_remove(&mut self, user: UserId, other: UserId) -> HubResult {
        if self.model.are_friends(&user, &other) {
            self.store
                .delete_friendship(&user, &other)
                .map_err(db_err)?;
            self.model.remove_friendship(&user, &other);
            // Calls need a friendship: end any between the two.
            let shared: Vec<CallId> = self
                .online
                .get(&user)
                .map(|o| {
                    o.calls
                        .iter()
                        .filter(|c| self.calls.get(c).and_then(|r| r.other(&user)) == Some(other))
                        .copied()
                        .collect()
                })
                .unwrap_or_default();
            for c in shared {
                self.end_call(c, CallEndReason::HungUp, None);
            }
        } else if self.model.has_request(&user, &other) {
            self.store
                .delete_friend_request(&user, &other)
                .map_err(db_err)?;
            self.model.remove_request(&user, &other);
        } else {
            return Err(err(
                ErrorCode::NotFound,
                "no friendship or pending request with that user",
            ));
        }
        self.event_to_user(&other, Event::FriendRemoved { user });
        Ok(Reply::Ok)
    }

    pub(super) fn friend_list(&self, user: &UserId) -> Reply {
        let friends = self
            .model
            .friends
            .get(user)
            .map(|fs| {
                fs.iter()
                    .map(|f| Friend {
                        user: self.summary(f),
                        presence: self.presence(f),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let list = |set: Option<&BTreeSet<UserId>>| {
            set.map(|s| s.iter().map(|u| self.summary(u)).collect())
                .unwrap_or_default()
        };
        Reply::Friends {
            friends,
            incoming: list(self.model.requests_in.get(user)),
            outgoing: list(self.model.requests_out.get(user)),
        }
    }

    // --- handles --------------------------------------------------------------------------------

    fn handle_reply(&self, user: &UserId) -> Reply {
        Reply::Handle {
            user: self.summary(user),
            handle: self.model.handles.get(user).cloned(),
        }
    }

    /// Take `handle` (or give yours up with `None`). Unique by key: nobody else may hold the
    /// same handle in another case or spelled with look-alike characters; your own old handle is
    /// released in the same step, so changing only the case of yours is allowed.
    pub(super) fn handle_set(
        &mut self,
        now_secs: u64,
        user: UserId,
        handle: Option<Handle>,
    ) -> HubResult {
        if let Some(h) = &handle
            && let Some(owner) = self.model.handle_owner(h)
            && owner != user
        {
            return Err(err(
                ErrorCode::HandleTaken,
                format!("{h} (or a handle that looks like it) is taken on this relay"),
            ));
        }
        if self.model.handles.get(&user) == handle.as_ref() {
            return Ok(self.handle_reply(&user));
        }
        self.store
            .set_handle(&user, handle.as_ref(), now_secs)
            .map_err(db_err)?;
        self.model.set_handle(user, handle);
        Ok(self.handle_reply(&user))
    }

    pub(super) fn handle_get(&self, user: UserId) -> HubResult {
        self.known_user(&user)?;
        Ok(self.handle_reply(&user))
    }

    pub(super) fn handle_lookup(&self, handle: &Handle) -> HubResult {
        match self.model.handle_owner(handle) {
            Some(owner) => Ok(self.handle_reply(&owner)),
            None => Err(err(
                ErrorCode::NotFound,
                format!("nobody on this relay has the handle {handle}"),
            )),
        }
    }

    // --- calls ----------------------------------------------------------------------------------

    pub(super) fn call_invite(&mut self, now_ms: u64, user: UserId, to: UserId) -> HubResult {
        if to == user {
            return Err(err(ErrorCode::BadRequest, "you cannot call yourself"));
        }
        if !self.model.are_friends(&user, &to) {
            return Err(err(
                ErrorCode::NotFriends,
                "calls are only between mutual friends",
            ));
        }
        let Some(callee) = self.online.get(&to) else {
            return Err(err(ErrorCode::NotFound, "that friend is offline"));
        };
        let max = self.config.max_calls_per_user;
        let mine = self.online.get(&user).map_or(0, |o| o.calls.len());
        if mine >= max || callee.calls.len() >= max {
            return Err(err(
                ErrorCode::LimitReached,
                format!("at most {max} calls at once"),
            ));
        }
        let already = callee
            .calls
            .iter()
            .any(|c| self.calls.get(c).and_then(|r| r.other(&to)) == Some(user));
        if already {
            return Err(err(
                ErrorCode::InvalidState,
                "you already have a call with that friend",
            ));
        }
        let id = CallId(self.next_call);
        self.next_call += 1;
        self.calls.insert(
            id,
            CallRec {
                caller: user,
                callee: to,
                state: CallState::Ringing { since_ms: now_ms },
            },
        );
        for u in [user, to] {
            if let Some(o) = self.online.get_mut(&u) {
                o.calls.insert(id);
            }
        }
        let from = self.summary(&user);
        self.event_to_user(&to, Event::CallIncoming { call: id, from });
        Ok(Reply::Call { call: id })
    }

    /// The call if `user` is a party to it; `not_found` otherwise (strangers learn nothing).
    fn my_call(
        &self,
        user: &UserId,
        call: CallId,
    ) -> Result<&CallRec, hum_proto::signal::ProtoError> {
        self.calls
            .get(&call)
            .filter(|c| c.other(user).is_some())
            .ok_or_else(|| err(ErrorCode::NotFound, "no such call"))
    }

    pub(super) fn call_accept(&mut self, user: UserId, call: CallId) -> HubResult {
        let c = self.my_call(&user, call)?;
        if c.callee != user {
            return Err(err(ErrorCode::Forbidden, "only the callee can accept"));
        }
        if c.state == CallState::Active {
            return Err(err(ErrorCode::InvalidState, "the call is already accepted"));
        }
        let caller = c.caller;
        if let Some(c) = self.calls.get_mut(&call) {
            c.state = CallState::Active;
        }
        self.event_to_user(&caller, Event::CallAccepted { call, by: user });
        self.push_presence(&caller);
        self.push_presence(&user);
        Ok(Reply::Ok)
    }

    pub(super) fn call_decline(&mut self, user: UserId, call: CallId) -> HubResult {
        let c = self.my_call(&user, call)?;
        if c.callee != user {
            return Err(err(
                ErrorCode::Forbidden,
                "only the callee can decline; the caller cancels",
            ));
        }
        if c.state == CallState::Active {
            return Err(err(
                ErrorCode::InvalidState,
                "the call is already accepted; hang up instead",
            ));
        }
        self.end_call(call, CallEndReason::Declined, Some(&user));
        Ok(Reply::Ok)
    }

    pub(super) fn call_cancel(&mut self, user: UserId, call: CallId) -> HubResult {
        let c = self.my_call(&user, call)?;
        if c.caller != user {
            return Err(err(
                ErrorCode::Forbidden,
                "only the caller can cancel; the callee declines",
            ));
        }
        if c.state == CallState::Active {
            return Err(err(
                ErrorCode::InvalidState,
                "the call is already accepted; hang up instead",
            ));
        }
        self.end_call(call, CallEndReason::Cancelled, Some(&user));
        Ok(Reply::Ok)
    }

    pub(super) fn call_hangup(&mut self, user: UserId, call: CallId) -> HubResult {
        let c = self.my_call(&user, call)?;
        if c.state != CallState::Active {
            return Err(err(
                ErrorCode::InvalidState,
                "the call is still ringing; cancel or decline it",
            ));
        }
        self.end_call(call, CallEndReason::HungUp, Some(&user));
        Ok(Reply::Ok)
    }

    /// Remove a call and tell the parties: everyone but `by` (who asked for it and gets a
    /// reply instead) is told `call_ended`; `by = None` tells both.
    pub(super) fn end_call(&mut self, call: CallId, reason: CallEndReason, by: Option<&UserId>) {
        let Some(c) = self.calls.remove(&call) else {
            return;
        };
        let was_active = c.state == CallState::Active;
        for u in [c.caller, c.callee] {
            if let Some(o) = self.online.get_mut(&u) {
                o.calls.remove(&call);
            }
            if Some(&u) != by {
                self.event_to_user(&u, Event::CallEnded { call, reason });
            }
        }
        if was_active {
            for u in [c.caller, c.callee] {
                if self.online.contains_key(&u) {
                    self.push_presence(&u);
                }
            }
        }
    }

    /// Is `user` in an active call `call` with `to`? For signalling.
    pub(super) fn call_peer(
        &self,
        user: &UserId,
        call: CallId,
    ) -> Result<(UserId, bool), hum_proto::signal::ProtoError> {
        let c = self.my_call(user, call)?;
        let other = c
            .other(user)
            .ok_or_else(|| err(ErrorCode::NotFound, "no such call"))?;
        Ok((other, c.state == CallState::Active))
    }
}
