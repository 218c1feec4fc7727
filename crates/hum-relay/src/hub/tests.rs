//! Deterministic tests of the hub: in-memory SQLite, fixed clock, seeded RNG. After every step
//! the invariants of the model and the live state are checked.

use std::collections::HashMap;

use hum_proto::signal::{
    CallEndReason, ChannelPermissions, DisplayName, ErrorCode, Event, Handle, Name, Permissions,
    Reply, Request, RosterLeaveReason, ServerMessage, SignalPayload, SignalScope, VoiceState,
    VoiceStatePatch,
};
use hum_proto::{CallId, ChannelId, InviteCode, RequestId, ServerId, UserId};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{ConnId, Hub, HubConfig, MEMBER_PAGE, Output, close};
use crate::store::Store;

struct World {
    hub: Hub,
    now_ms: u64,
    next_req: u64,
    /// Everything delivered per connection, in order.
    inbox: HashMap<ConnId, Vec<ServerMessage>>,
    closed: Vec<(ConnId, u16)>,
    /// What the hub asked of the SFU, in order.
    sfu: Vec<super::SfuCmd>,
}

fn user(n: u8) -> UserId {
    UserId([n; 32])
}

/// Connection ids: user n on its first connection is conn n*10.
fn conn(n: u8) -> ConnId {
    n as ConnId * 10
}

impl World {
    fn new() -> World {
        Self::with_config(HubConfig::default())
    }

    fn with_config(config: HubConfig) -> World {
        let store = Store::open_in_memory().unwrap();
        let hub = Hub::new(store, config, ChaCha8Rng::seed_from_u64(7)).unwrap();
        World {
            hub,
            now_ms: 1_000_000,
            next_req: 1,
            inbox: HashMap::new(),
            closed: Vec::new(),
            sfu: Vec::new(),
        }
    }

    fn pump(&mut self) {
        for out in self.hub.drain() {
            match out {
                Output::Send { to, msg } => {
                    for c in to {
                        self.inbox.entry(c).or_default().push(msg.clone());
                    }
                }
                Output::Close { conn, code, .. } => self.closed.push((conn, code)),
                Output::Sfu(cmd) => self.sfu.push(cmd),
                Output::Live(_) => {}
            }
        }
        self.hub.check().unwrap();
    }

    fn login_on(&mut self, n: u8, c: ConnId, name: &str) -> Reply {
        let re = RequestId(self.next_req);
        self.next_req += 1;
        self.hub.login(
            self.now_ms,
            c,
            re,
            user(n),
            Some(DisplayName::new(name).unwrap()),
        );
        self.pump();
        self.take_reply(c, re).unwrap()
    }

    fn login(&mut self, n: u8) -> Reply {
        self.login_on(n, conn(n), &format!("user{n}"))
    }

    fn take_reply(&mut self, c: ConnId, re: RequestId) -> Result<Reply, (ErrorCode, String)> {
        let inbox = self.inbox.entry(c).or_default();
        let pos = inbox
            .iter()
            .position(|m| matches!(m, ServerMessage::Reply { re: r, .. } | ServerMessage::Error { re: Some(r), .. } if *r == re))
            .expect("every request gets an answer");
        match inbox.remove(pos) {
            ServerMessage::Reply { reply, .. } => Ok(reply),
            ServerMessage::Error { code, message, .. } => Err((code, message)),
            ServerMessage::Event { .. } => unreachable!(),
        }
    }

    /// Send `req` as user `n` on its default connection; return the answer.
    fn req(&mut self, n: u8, req: Request) -> Result<Reply, (ErrorCode, String)> {
        self.req_on(conn(n), req)
    }

    fn req_on(&mut self, c: ConnId, req: Request) -> Result<Reply, (ErrorCode, String)> {
        let re = RequestId(self.next_req);
        self.next_req += 1;
        self.hub.request(self.now_ms, c, re, req);
        self.pump();
        self.take_reply(c, re)
    }

    fn ok(&mut self, n: u8, req: Request) -> Reply {
        self.req(n, req).unwrap()
    }

    fn code(&mut self, n: u8, req: Request) -> ErrorCode {
        self.req(n, req).unwrap_err().0
    }

    /// Drain the events user `n` got.
    fn events(&mut self, n: u8) -> Vec<Event> {
        self.inbox
            .remove(&conn(n))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| match m {
                ServerMessage::Event { event } => Some(event),
                _ => None,
            })
            .collect()
    }

    fn clear(&mut self) {
        self.inbox.clear();
    }

    fn befriend(&mut self, a: u8, b: u8) {
        self.ok(a, Request::FriendRequest { user: user(b) });
        self.ok(b, Request::FriendAccept { user: user(a) });
    }

    fn server(&mut self, owner: u8, name: &str) -> ServerId {
        match self.ok(
            owner,
            Request::ServerCreate {
                name: Name::new(name).unwrap(),
            },
        ) {
            Reply::Server { server } => server.id,
            r => panic!("unexpected {r:?}"),
        }
    }

    fn channel(&mut self, owner: u8, server: ServerId, max: Option<u32>) -> ChannelId {
        let req = Request::ChannelCreate {
            server,
            name: Name::new("voice").unwrap(),
            max_participants: max,
            permissions: None,
        };
        match self.ok(owner, req) {
            Reply::Channel { channel } => channel.id,
            r => panic!("unexpected {r:?}"),
        }
    }

    fn invite(&mut self, admin: u8, server: ServerId) -> InviteCode {
        let req = Request::InviteCreate {
            server,
            max_uses: None,
            expires_in_secs: None,
        };
        match self.ok(admin, req) {
            Reply::Invite { invite } => invite.code,
            r => panic!("unexpected {r:?}"),
        }
    }

    /// A server owned by 1 with members 2..=n (all online) and one channel.
    fn community(&mut self, n: u8) -> (ServerId, ChannelId) {
        for u in 1..=n {
            self.login(u);
        }
        let s = self.server(1, "club");
        let c = self.channel(1, s, None);
        let code = self.invite(1, s);
        for u in 2..=n {
            self.ok(u, Request::InviteJoin { code: code.clone() });
        }
        self.clear();
        (s, c)
    }
}

fn offer() -> SignalPayload {
    SignalPayload::Offer { sdp: "v=0".into() }
}

#[test]
fn login_creates_account_and_relogin_resumes_it() {
    let mut w = World::new();
    match w.login(1) {
        Reply::Welcome {
            user: u,
            new_account,
            limits,
            turn,
        } => {
            assert_eq!(turn, None, "no TURN server configured");
            assert_eq!(u.id, user(1));
            assert_eq!(u.display_name.as_str(), "user1");
            assert!(new_account);
            assert_eq!(limits.max_message_bytes, 65_536);
        }
        r => panic!("{r:?}"),
    }
    // Same key on a new connection: same account, old session replaced and closed.
    match w.login_on(1, 11, "renamed") {
        Reply::Welcome {
            new_account,
            user: u,
            ..
        } => {
            assert!(!new_account);
            assert_eq!(u.display_name.as_str(), "renamed");
        }
        r => panic!("{r:?}"),
    }
    assert!(w.events(1).contains(&Event::SessionReplaced));
    assert_eq!(w.closed, vec![(conn(1), close::SESSION_REPLACED)]);
    // The replaced connection's late close is ignored.
    w.hub.disconnect(w.now_ms, conn(1));
    w.pump();
    assert_eq!(w.hub.user_of(11), Some(user(1)));
    assert_eq!(w.hub.stats().sessions, 1);
}

#[test]
fn requests_before_login_are_refused() {
    let mut w = World::new();
    assert_eq!(
        w.req_on(99, Request::Ping).unwrap_err().0,
        ErrorCode::NotLoggedIn
    );
    w.login(1);
    assert_eq!(w.ok(1, Request::Ping), Reply::Pong);
    let hello = Request::Hello {
        protocol: 1,
        client: None,
    };
    assert_eq!(w.code(1, hello), ErrorCode::OutOfOrder);
}

#[test]
fn friendship_needs_both_sides() {
    let mut w = World::new();
    w.login(1);
    w.login(2);
    assert_eq!(
        w.code(1, Request::FriendRequest { user: user(1) }),
        ErrorCode::BadRequest
    );
    assert_eq!(
        w.code(1, Request::FriendRequest { user: user(9) }),
        ErrorCode::NotFound
    );
    w.ok(1, Request::FriendRequest { user: user(2) });
    assert_eq!(
        w.code(1, Request::FriendRequest { user: user(2) }),
        ErrorCode::AlreadyFriends
    );
    assert!(
        matches!(&w.events(2)[..], [Event::FriendRequestReceived { from }] if from.id == user(1))
    );
    // Not friends yet: the requester cannot accept its own request, nor call.
    assert_eq!(
        w.code(1, Request::FriendAccept { user: user(2) }),
        ErrorCode::NotFound
    );
    assert_eq!(
        w.code(1, Request::CallInvite { user: user(2) }),
        ErrorCode::NotFriends
    );
    match w.ok(2, Request::FriendList) {
        Reply::Friends {
            friends,
            incoming,
            outgoing,
        } => {
            assert!(friends.is_empty() && outgoing.is_empty());
            assert_eq!(incoming[0].id, user(1));
        }
        r => panic!("{r:?}"),
    }
    w.ok(2, Request::FriendAccept { user: user(1) });
    for (me, them) in [(1, 2), (2, 1)] {
        let ev = w.events(me);
        assert!(
            ev.iter().any(|e| matches!(e, Event::FriendAdded { friend } if friend.user.id == user(them) && friend.presence.status == hum_proto::signal::Status::Online)),
            "{ev:?}"
        );
    }
    assert_eq!(
        w.code(2, Request::FriendRequest { user: user(1) }),
        ErrorCode::AlreadyFriends
    );
    // Remove: both sides lose it, the other is told.
    w.ok(2, Request::FriendRemove { user: user(1) });
    assert!(
        w.events(1)
            .contains(&Event::FriendRemoved { user: user(2) })
    );
    assert_eq!(
        w.code(1, Request::CallInvite { user: user(2) }),
        ErrorCode::NotFriends
    );
    assert_eq!(
        w.code(1, Request::FriendRemove { user: user(2) }),
        ErrorCode::NotFound
    );
}

#[test]
fn crossing_requests_make_friends_and_decline_tells_requester() {
    let mut w = World::new();
    for u in 1..=3 {
        w.login(u);
    }
    w.ok(1, Request::FriendRequest { user: user(2) });
    w.ok(2, Request::FriendRequest { user: user(1) });
    assert!(
        matches!(w.ok(1, Request::FriendList), Reply::Friends { friends, .. } if friends.len() == 1)
    );
    w.ok(3, Request::FriendRequest { user: user(1) });
    w.ok(1, Request::FriendDecline { user: user(3) });
    assert!(
        w.events(3)
            .contains(&Event::FriendDeclined { user: user(1) })
    );
    assert_eq!(
        w.code(1, Request::FriendDecline { user: user(3) }),
        ErrorCode::NotFound
    );
}

#[test]
fn presence_follows_login_channel_and_logout() {
    let mut w = World::new();
    let (_, c) = w.community(2);
    w.befriend(1, 2);
    w.clear();
    w.ok(
        2,
        Request::ChannelJoin {
            channel: c,
            voice: None,
        },
    );
    let ev = w.events(1);
    let p = ev
        .iter()
        .find_map(|e| match e {
            Event::Presence { user: u, presence } if *u == user(2) => Some(presence.clone()),
            _ => None,
        })
        .expect("presence pushed to friend");
    assert_eq!(p.channel.map(|l| l.channel), Some(c));
    w.hub.disconnect(w.now_ms, conn(2));
    w.pump();
    let ev = w.events(1);
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::RosterLeave {
            reason: RosterLeaveReason::Disconnected,
            ..
        }
    )));
    assert!(ev.contains(&Event::Presence {
        user: user(2),
        presence: hum_proto::signal::Presence::OFFLINE
    }));
}

#[test]
fn call_lifecycle_and_signalling_only_between_parties() {
    let mut w = World::new();
    for u in 1..=3 {
        w.login(u);
    }
    w.befriend(1, 2);
    w.befriend(1, 3);
    w.clear();
    let call = match w.ok(1, Request::CallInvite { user: user(2) }) {
        Reply::Call { call } => call,
        r => panic!("{r:?}"),
    };
    assert!(
        matches!(&w.events(2)[..], [Event::CallIncoming { call: c, from }] if *c == call && from.id == user(1))
    );
    let sig = |to: u8| Request::Signal {
        to: user(to),
        scope: SignalScope::Call(call),
        payload: offer(),
    };
    // Ringing: no signalling yet; strangers can neither see nor touch the call.
    assert_eq!(w.code(1, sig(2)), ErrorCode::InvalidState);
    assert_eq!(w.code(3, Request::CallAccept { call }), ErrorCode::NotFound);
    assert_eq!(
        w.code(1, Request::CallAccept { call }),
        ErrorCode::Forbidden
    );
    w.ok(2, Request::CallAccept { call });
    assert!(
        w.events(1)
            .contains(&Event::CallAccepted { call, by: user(2) })
    );
    w.ok(1, sig(2));
    assert!(w.events(2).contains(&Event::Signal {
        from: user(1),
        scope: SignalScope::Call(call),
        payload: offer()
    }));
    // A third party cannot inject into the call, and the caller cannot redirect it.
    assert_eq!(
        w.code(
            3,
            Request::Signal {
                to: user(2),
                scope: SignalScope::Call(call),
                payload: offer()
            }
        ),
        ErrorCode::NotFound
    );
    assert_eq!(w.code(1, sig(3)), ErrorCode::Forbidden);
    let ev3 = w.events(3);
    assert!(ev3.iter().all(|e| !matches!(e, Event::Signal { .. })));
    // Friends see the call in presence.
    assert!(ev3.iter().any(
        |e| matches!(e, Event::Presence { user: u, presence } if *u == user(1) && presence.in_call)
    ));
    w.ok(2, Request::CallHangup { call });
    assert!(w.events(1).contains(&Event::CallEnded {
        call,
        reason: CallEndReason::HungUp
    }));
    assert_eq!(w.code(1, sig(2)), ErrorCode::NotFound);
    assert_eq!(w.hub.stats().calls, 0);
}

#[test]
fn calls_end_on_decline_cancel_timeout_and_disconnect() {
    let mut w = World::new();
    for u in 1..=2 {
        w.login(u);
    }
    w.befriend(1, 2);
    w.clear();
    let invite = |w: &mut World| match w.ok(1, Request::CallInvite { user: user(2) }) {
        Reply::Call { call } => call,
        r => panic!("{r:?}"),
    };
    let c = invite(&mut w);
    assert_eq!(
        w.code(1, Request::CallInvite { user: user(2) }),
        ErrorCode::InvalidState
    );
    assert_eq!(
        w.code(1, Request::CallDecline { call: c }),
        ErrorCode::Forbidden
    );
    w.ok(2, Request::CallDecline { call: c });
    assert!(w.events(1).contains(&Event::CallEnded {
        call: c,
        reason: CallEndReason::Declined
    }));

    let c = invite(&mut w);
    w.ok(1, Request::CallCancel { call: c });
    assert!(w.events(2).contains(&Event::CallEnded {
        call: c,
        reason: CallEndReason::Cancelled
    }));

    let c = invite(&mut w);
    w.hub.tick(w.now_ms + 59_999);
    w.pump();
    assert_eq!(w.hub.stats().calls, 1);
    w.hub.tick(w.now_ms + 60_000);
    w.pump();
    for u in [1, 2] {
        assert!(w.events(u).contains(&Event::CallEnded {
            call: c,
            reason: CallEndReason::Timeout
        }));
    }

    let c = invite(&mut w);
    w.ok(2, Request::CallAccept { call: c });
    w.clear();
    w.hub.disconnect(w.now_ms, conn(2));
    w.pump();
    assert!(w.events(1).contains(&Event::CallEnded {
        call: c,
        reason: CallEndReason::Disconnected
    }));
    assert_eq!(w.hub.stats().calls, 0);
    // Calling an offline friend.
    assert_eq!(
        w.code(1, Request::CallInvite { user: user(2) }),
        ErrorCode::NotFound
    );
}

#[test]
fn servers_invites_and_roles() {
    let mut w = World::new();
    for u in 1..=4 {
        w.login(u);
    }
    let s = w.server(1, "club");
    // Non-members see nothing; members cannot administer.
    assert_eq!(
        w.code(2, Request::ServerInfo { server: s }),
        ErrorCode::NotMember
    );
    assert_eq!(
        w.code(
            2,
            Request::ServerInfo {
                server: ServerId(999)
            }
        ),
        ErrorCode::NotFound
    );
    let code = w.invite(1, s);
    match w.ok(2, Request::InviteJoin { code: code.clone() }) {
        Reply::Server { server } => {
            assert_eq!(server.role, hum_proto::signal::Role::Member);
            assert_eq!(server.members.len(), 2);
        }
        r => panic!("{r:?}"),
    }
    assert!(
        w.events(1)
            .iter()
            .any(|e| matches!(e, Event::MemberJoined { member, .. } if member.user.id == user(2)))
    );
    assert_eq!(
        w.code(2, Request::InviteJoin { code: code.clone() }),
        ErrorCode::AlreadyMember
    );
    assert_eq!(
        w.code(
            2,
            Request::InviteCreate {
                server: s,
                max_uses: None,
                expires_in_secs: None
            }
        ),
        ErrorCode::Forbidden
    );
    assert_eq!(
        w.code(
            2,
            Request::ServerRename {
                server: s,
                name: Name::new("x").unwrap()
            }
        ),
        ErrorCode::Forbidden
    );
    assert_eq!(
        w.code(
            2,
            Request::ServerLeave {
                server: ServerId(999)
            }
        ),
        ErrorCode::NotFound
    );
    // Promote 2 to admin: now it can invite and rename, but not kick the owner or delete.
    w.ok(
        1,
        Request::MemberSetRole {
            server: s,
            user: user(2),
            role: hum_proto::signal::Role::Admin,
        },
    );
    assert_eq!(
        w.code(
            2,
            Request::MemberSetRole {
                server: s,
                user: user(3),
                role: hum_proto::signal::Role::Admin
            }
        ),
        ErrorCode::Forbidden
    );
    let limited = match w.ok(
        2,
        Request::InviteCreate {
            server: s,
            max_uses: Some(1),
            expires_in_secs: Some(10),
        },
    ) {
        Reply::Invite { invite } => invite,
        r => panic!("{r:?}"),
    };
    assert_eq!(limited.expires_at, Some(w.now_ms / 1000 + 10));
    w.ok(
        3,
        Request::InviteJoin {
            code: limited.code.clone(),
        },
    );
    assert_eq!(
        w.code(
            4,
            Request::InviteJoin {
                code: limited.code.clone()
            }
        ),
        ErrorCode::InviteInvalid
    );
    assert_eq!(
        w.code(
            2,
            Request::MemberKick {
                server: s,
                user: user(1)
            }
        ),
        ErrorCode::Forbidden
    );
    assert_eq!(
        w.code(2, Request::ServerDelete { server: s }),
        ErrorCode::Forbidden
    );
    w.ok(
        2,
        Request::MemberKick {
            server: s,
            user: user(3),
        },
    );
    assert!(w.events(3).contains(&Event::ServerRemoved {
        server: s,
        reason: hum_proto::signal::ServerRemovedReason::Kicked
    }));
    assert_eq!(
        w.code(3, Request::ServerInfo { server: s }),
        ErrorCode::NotMember
    );
    // Expiry.
    let expiring = match w.ok(
        1,
        Request::InviteCreate {
            server: s,
            max_uses: None,
            expires_in_secs: Some(5),
        },
    ) {
        Reply::Invite { invite } => invite.code,
        r => panic!("{r:?}"),
    };
    w.now_ms += 5_000;
    assert_eq!(
        w.code(4, Request::InviteJoin { code: expiring }),
        ErrorCode::InviteInvalid
    );
    // Revoke.
    w.ok(1, Request::InviteRevoke { code: code.clone() });
    assert_eq!(
        w.code(4, Request::InviteJoin { code }),
        ErrorCode::InviteInvalid
    );
    // The owner cannot leave; others can; delete tells everyone.
    assert_eq!(
        w.code(1, Request::ServerLeave { server: s }),
        ErrorCode::Forbidden
    );
    w.clear();
    w.ok(1, Request::ServerDelete { server: s });
    assert!(w.events(2).contains(&Event::ServerRemoved {
        server: s,
        reason: hum_proto::signal::ServerRemovedReason::Deleted
    }));
    assert!(
        matches!(w.ok(2, Request::ServerList), Reply::Servers { servers } if servers.is_empty())
    );
}

#[test]
fn channel_join_roster_and_voice_state() {
    let mut w = World::new();
    let (s, c) = w.community(3);
    match w.ok(
        2,
        Request::ChannelJoin {
            channel: c,
            voice: Some(VoiceState {
                muted: true,
                ..Default::default()
            }),
        },
    ) {
        Reply::Joined {
            channel,
            permissions,
            ..
        } => {
            assert_eq!(channel.roster.len(), 1);
            assert!(channel.roster[0].voice.muted);
            assert!(permissions.speak);
        }
        r => panic!("{r:?}"),
    }
    // Everyone online in the server hears about it, the joiner included.
    for u in 1..=3 {
        assert!(
            w.events(u)
                .iter()
                .any(|e| matches!(e, Event::RosterJoin { entry, .. } if entry.user.id == user(2)))
        );
    }
    match w.ok(
        3,
        Request::ChannelJoin {
            channel: c,
            voice: None,
        },
    ) {
        Reply::Joined { channel, .. } => {
            let ids: Vec<_> = channel.roster.iter().map(|e| e.user.id).collect();
            assert_eq!(ids, vec![user(2), user(3)], "join order, joiner last");
        }
        r => panic!("{r:?}"),
    }
    w.clear();
    w.ok(
        3,
        Request::VoiceUpdate {
            voice: VoiceStatePatch {
                speaking: Some(true),
                ..Default::default()
            },
        },
    );
    let want = Event::RosterUpdate {
        server: s,
        channel: c,
        user: user(3),
        voice: VoiceState {
            speaking: true,
            ..Default::default()
        },
    };
    assert!(w.events(1).contains(&want));
    // Signalling inside the channel works; to someone outside it does not.
    let sig = |to: u8| Request::Signal {
        to: user(to),
        scope: SignalScope::Channel(c),
        payload: offer(),
    };
    w.ok(2, sig(3));
    assert!(
        w.events(3)
            .iter()
            .any(|e| matches!(e, Event::Signal { from, .. } if *from == user(2)))
    );
    assert_eq!(w.code(2, sig(1)), ErrorCode::NotInChannel);
    assert_eq!(w.code(1, sig(2)), ErrorCode::NotInChannel);
    assert!(
        w.events(1)
            .iter()
            .all(|e| !matches!(e, Event::Signal { .. }))
    );
    w.ok(3, Request::ChannelLeave);
    assert_eq!(w.code(3, Request::ChannelLeave), ErrorCode::NotInChannel);
    assert_eq!(
        w.code(
            3,
            Request::VoiceUpdate {
                voice: VoiceStatePatch::default()
            }
        ),
        ErrorCode::NotInChannel
    );
    assert!(w.events(2).iter().any(|e| matches!(e, Event::RosterLeave { user: u, reason: RosterLeaveReason::Left, .. } if *u == user(3))));
}

#[test]
fn full_channel_and_switching_channels() {
    let mut w = World::new();
    let (s, c) = w.community(3);
    let small = w.channel(1, s, Some(1));
    w.ok(
        2,
        Request::ChannelJoin {
            channel: small,
            voice: None,
        },
    );
    assert_eq!(
        w.code(
            3,
            Request::ChannelJoin {
                channel: small,
                voice: None
            }
        ),
        ErrorCode::ChannelFull
    );
    // Rejoining the channel you are in is not "full".
    assert!(matches!(
        w.ok(
            2,
            Request::ChannelJoin {
                channel: small,
                voice: None
            }
        ),
        Reply::Joined { .. }
    ));
    // Switching leaves the first channel.
    w.ok(
        2,
        Request::ChannelJoin {
            channel: c,
            voice: None,
        },
    );
    w.ok(
        3,
        Request::ChannelJoin {
            channel: small,
            voice: None,
        },
    );
    assert_eq!(w.hub.stats().voice_participants, 2);
    assert_eq!(
        w.code(
            1,
            Request::ChannelJoin {
                channel: ChannelId(999),
                voice: None
            }
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        w.code(
            1,
            Request::ChannelCreate {
                server: s,
                name: Name::new("x").unwrap(),
                max_participants: Some(0),
                permissions: None
            }
        ),
        ErrorCode::BadRequest
    );
}

/// The `voice_permissions` events `n` got (the only way its client learns a change).
fn told_permissions(w: &mut World, n: u8) -> Vec<Permissions> {
    w.events(n)
        .into_iter()
        .filter_map(|e| match e {
            Event::VoicePermissions { permissions, .. } => Some(permissions),
            _ => None,
        })
        .collect()
}

#[test]
fn a_member_is_told_its_own_permissions_on_join_and_when_they_change() {
    let mut w = World::new();
    let (s, c) = w.community(3);
    let listen_only = ChannelPermissions {
        member: Permissions {
            join: true,
            speak: false,
            video: false,
            stream: false,
        },
        admin: Permissions::ALL,
    };
    let configure = |p: ChannelPermissions| Request::ChannelConfigure {
        channel: c,
        max_participants: None,
        permissions: Some(p),
        mesh_limit: None,
    };
    w.ok(1, configure(listen_only));
    // On join: in the reply.
    match w.ok(
        2,
        Request::ChannelJoin {
            channel: c,
            voice: None,
        },
    ) {
        Reply::Joined { permissions, .. } => assert_eq!(permissions, listen_only.member),
        other => panic!("expected joined, got {other:?}"),
    }
    join(&mut w, 3, c);
    w.clear();
    // The channel's permissions change: each member in it whose own permissions changed is
    // told, alone (the owner's stay ALL: not told).
    w.ok(1, configure(ChannelPermissions::default()));
    assert_eq!(told_permissions(&mut w, 2), [Permissions::ALL]);
    assert_eq!(told_permissions(&mut w, 3), [Permissions::ALL]);
    assert_eq!(told_permissions(&mut w, 1), []);
    // Nothing new for a member: not told again (a configure of the limit alone).
    w.ok(
        1,
        Request::ChannelConfigure {
            channel: c,
            max_participants: Some(5),
            permissions: None,
            mesh_limit: None,
        },
    );
    assert_eq!(told_permissions(&mut w, 2), []);
    w.ok(1, configure(listen_only));
    assert_eq!(told_permissions(&mut w, 2), [listen_only.member]);
    assert_eq!(told_permissions(&mut w, 3), [listen_only.member]);
    // A role change: 2 is promoted (admins may speak), 3 hears nothing of it.
    w.ok(
        1,
        Request::MemberSetRole {
            server: s,
            user: user(2),
            role: hum_proto::signal::Role::Admin,
        },
    );
    assert_eq!(told_permissions(&mut w, 2), [Permissions::ALL]);
    assert_eq!(told_permissions(&mut w, 3), []);
    // Demoted again: speak is gone again, and 2 is muted in the roster.
    w.ok(
        1,
        Request::MemberSetRole {
            server: s,
            user: user(2),
            role: hum_proto::signal::Role::Member,
        },
    );
    let ev = w.events(2);
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::VoicePermissions { server, channel, permissions }
            if *server == s && *channel == c && !permissions.speak
    )));
}

#[test]
fn permissions_are_enforced_and_reapplied() {
    let mut w = World::new();
    let (s, c) = w.community(3);
    let listen_only = ChannelPermissions {
        member: Permissions {
            join: true,
            speak: false,
            video: false,
            stream: false,
        },
        admin: Permissions::ALL,
    };
    assert_eq!(
        w.code(
            2,
            Request::ChannelConfigure {
                channel: c,
                max_participants: None,
                permissions: Some(listen_only),
                mesh_limit: None,
            }
        ),
        ErrorCode::Forbidden
    );
    w.ok(
        2,
        Request::ChannelJoin {
            channel: c,
            voice: Some(VoiceState {
                video: true,
                ..Default::default()
            }),
        },
    );
    w.clear();
    w.ok(
        1,
        Request::ChannelConfigure {
            channel: c,
            max_participants: None,
            permissions: Some(listen_only),
            mesh_limit: None,
        },
    );
    // 2 is clamped at once: muted, no video.
    let ev = w.events(3);
    assert!(ev.iter().any(
        |e| matches!(e, Event::ChannelUpdated { channel } if channel.permissions == listen_only)
    ));
    assert!(ev.iter().any(|e| matches!(e, Event::RosterUpdate { user: u, voice, .. } if *u == user(2) && voice.muted && !voice.video)));
    let unmute = Request::VoiceUpdate {
        voice: VoiceStatePatch {
            muted: Some(false),
            ..Default::default()
        },
    };
    assert_eq!(w.code(2, unmute.clone()), ErrorCode::Forbidden);
    let video = Request::VoiceUpdate {
        voice: VoiceStatePatch {
            video: Some(true),
            ..Default::default()
        },
    };
    assert_eq!(w.code(2, video), ErrorCode::Forbidden);
    // Promotion to admin restores speaking rights (the relay does not unmute by itself).
    w.ok(
        1,
        Request::MemberSetRole {
            server: s,
            user: user(2),
            role: hum_proto::signal::Role::Admin,
        },
    );
    w.ok(2, unmute);
    // Taking `join` away removes members already inside.
    let closed = ChannelPermissions {
        member: Permissions {
            join: false,
            ..Permissions::ALL
        },
        admin: Permissions::ALL,
    };
    w.ok(
        3,
        Request::ChannelJoin {
            channel: c,
            voice: None,
        },
    );
    w.clear();
    w.ok(
        1,
        Request::ChannelConfigure {
            channel: c,
            max_participants: None,
            permissions: Some(closed),
            mesh_limit: None,
        },
    );
    assert!(w.events(3).iter().any(|e| matches!(e, Event::RosterLeave { user: u, reason: RosterLeaveReason::Removed, .. } if *u == user(3))));
    assert_eq!(
        w.code(
            3,
            Request::ChannelJoin {
                channel: c,
                voice: None
            }
        ),
        ErrorCode::Forbidden
    );
    // Renames and deletes are admin-only too, and delete empties the roster.
    assert_eq!(
        w.code(3, Request::ChannelDelete { channel: c }),
        ErrorCode::Forbidden
    );
    w.ok(
        1,
        Request::ChannelRename {
            channel: c,
            name: Name::new("stage").unwrap(),
        },
    );
    w.clear();
    w.ok(1, Request::ChannelDelete { channel: c });
    let ev = w.events(2);
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::RosterLeave {
            reason: RosterLeaveReason::Deleted,
            ..
        }
    )));
    assert!(ev.contains(&Event::ChannelDeleted {
        server: s,
        channel: c
    }));
    assert_eq!(w.hub.stats().voice_participants, 0);
}

#[test]
fn kicked_or_leaving_members_leave_their_channel() {
    let mut w = World::new();
    let (s, c) = w.community(3);
    w.ok(
        2,
        Request::ChannelJoin {
            channel: c,
            voice: None,
        },
    );
    w.ok(
        3,
        Request::ChannelJoin {
            channel: c,
            voice: None,
        },
    );
    w.ok(
        1,
        Request::MemberKick {
            server: s,
            user: user(2),
        },
    );
    w.ok(3, Request::ServerLeave { server: s });
    assert_eq!(w.hub.stats().voice_participants, 0);
    let ev = w.events(1);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::MemberLeft { user: u, .. } if *u == user(3)))
    );
}

#[test]
fn a_refused_channel_write_changes_nothing_and_announces_nothing() {
    let mut w = World::new();
    let (s, c) = w.community(1);
    w.hub.store.refuse_writes().unwrap();
    w.clear();
    assert_eq!(
        w.code(
            1,
            Request::ChannelRename {
                channel: c,
                name: Name::new("renamed").unwrap(),
            },
        ),
        ErrorCode::Internal
    );
    let closed = ChannelPermissions {
        member: Permissions {
            join: false,
            ..Permissions::default()
        },
        ..ChannelPermissions::default()
    };
    assert_eq!(
        w.code(
            1,
            Request::ChannelConfigure {
                channel: c,
                max_participants: Some(2),
                permissions: Some(closed),
                mesh_limit: None,
            },
        ),
        ErrorCode::Internal
    );
    assert!(
        !w.events(1)
            .iter()
            .any(|e| matches!(e, Event::ChannelUpdated { .. })),
        "a change that was not saved must not be announced"
    );
    let ch = w.hub.channel_info(c).unwrap();
    assert_eq!(ch.server, s);
    assert_ne!(ch.name.as_str(), "renamed");
    assert_ne!(ch.max_participants, 2);
    assert_ne!(ch.permissions, closed);
}

#[test]
fn data_survives_a_restart_but_presence_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let (s, c);
    {
        let store = Store::open_dir(dir.path()).unwrap();
        let hub = Hub::new(store, HubConfig::default(), ChaCha8Rng::seed_from_u64(1)).unwrap();
        let mut w = World {
            hub,
            now_ms: 5_000,
            next_req: 1,
            inbox: HashMap::new(),
            closed: vec![],
            sfu: vec![],
        };
        (s, c) = w.community(2);
        w.befriend(1, 2);
        w.ok(
            2,
            Request::ChannelJoin {
                channel: c,
                voice: None,
            },
        );
    }
    let store = Store::open_dir(dir.path()).unwrap();
    let hub = Hub::new(store, HubConfig::default(), ChaCha8Rng::seed_from_u64(1)).unwrap();
    let mut w = World {
        hub,
        now_ms: 6_000,
        next_req: 1,
        inbox: HashMap::new(),
        closed: vec![],
        sfu: vec![],
    };
    assert!(matches!(
        w.login(1),
        Reply::Welcome {
            new_account: false,
            ..
        }
    ));
    w.login(2);
    assert!(
        matches!(w.ok(1, Request::FriendList), Reply::Friends { friends, .. } if friends.len() == 1)
    );
    match w.ok(2, Request::ServerInfo { server: s }) {
        Reply::Server { server } => {
            assert_eq!(server.members.len(), 2);
            assert_eq!(server.channels.len(), 1);
            assert!(
                server.channels[0].roster.is_empty(),
                "presence is rebuilt by clients, not restored"
            );
        }
        r => panic!("{r:?}"),
    }
}

#[test]
fn limits_are_enforced() {
    let config = HubConfig {
        max_servers_per_user: 1,
        max_calls_per_user: 1,
        max_friends: 1,
        ..HubConfig::default()
    };
    let mut w = World::with_config(config);
    for u in 1..=3 {
        w.login(u);
    }
    w.server(1, "a");
    assert_eq!(
        w.code(
            1,
            Request::ServerCreate {
                name: Name::new("b").unwrap()
            }
        ),
        ErrorCode::LimitReached
    );
    w.befriend(1, 2);
    assert_eq!(
        w.code(1, Request::FriendRequest { user: user(3) }),
        ErrorCode::LimitReached
    );
    w.ok(1, Request::CallInvite { user: user(2) });
    assert_eq!(w.hub.stats().calls, 1);
}

#[test]
fn every_request_gets_exactly_one_answer_under_random_input() {
    // A seeded random walk over requests from five users; after each step exactly one answer
    // arrives on the sender's connection, and the invariants hold (checked in pump).
    use rand::Rng;
    let mut w = World::new();
    let (s, c) = w.community(5);
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut calls = vec![CallId(1), CallId(2)];
    for step in 0..3_000 {
        let me = rng.gen_range(1..=5u8);
        let other = user(rng.gen_range(1..=6u8));
        let call = calls[rng.gen_range(0..calls.len())];
        let chan = if rng.gen_bool(0.8) {
            c
        } else {
            ChannelId(rng.gen_range(1..4))
        };
        let handles = ["ada", "ADA", "bob", "b0b"];
        let handle = Handle::new(handles[rng.gen_range(0..handles.len())]).unwrap();
        let req = match rng.gen_range(0..18) {
            0 => Request::FriendRequest { user: other },
            1 => Request::FriendAccept { user: other },
            2 => Request::FriendRemove { user: other },
            3 => Request::CallInvite { user: other },
            4 => Request::CallAccept { call },
            5 => Request::CallHangup { call },
            6 => Request::ChannelJoin {
                channel: chan,
                voice: None,
            },
            7 => Request::ChannelLeave,
            8 => Request::VoiceUpdate {
                voice: VoiceStatePatch {
                    speaking: Some(rng.gen_bool(0.5)),
                    ..Default::default()
                },
            },
            9 => Request::Signal {
                to: other,
                scope: SignalScope::Channel(chan),
                payload: offer(),
            },
            10 => Request::Signal {
                to: other,
                scope: SignalScope::Call(call),
                payload: offer(),
            },
            11 => Request::CallCancel { call },
            12 => Request::MemberKick {
                server: s,
                user: other,
            },
            13 => {
                w.hub.disconnect(w.now_ms, conn(me));
                w.pump();
                w.login(me);
                Request::Ping
            }
            14 => Request::ChannelConfigure {
                channel: chan,
                max_participants: Some(rng.gen_range(1..4)),
                permissions: None,
                mesh_limit: None,
            },
            15 => Request::HandleSet {
                handle: rng.gen_bool(0.8).then_some(handle),
            },
            16 => Request::HandleLookup { handle },
            _ => Request::FriendList,
        };
        let before = w.inbox.get(&conn(me)).map_or(0, |v| v.len());
        let re = RequestId(w.next_req);
        w.next_req += 1;
        w.hub.request(w.now_ms, conn(me), re, req.clone());
        w.pump();
        let answers = w.inbox[&conn(me)][before..]
            .iter()
            .filter(|m| matches!(m, ServerMessage::Reply { re: r, .. } | ServerMessage::Error { re: Some(r), .. } if *r == re))
            .count();
        assert_eq!(answers, 1, "step {step}: {req:?}");
        if let Ok(Reply::Call { call }) = w.take_reply(conn(me), re) {
            calls.push(call);
        }
        w.now_ms += rng.gen_range(0..2_000);
        w.hub.tick(w.now_ms);
        w.pump();
        if step % 100 == 0 {
            w.clear();
        }
        // Kicked users rejoin so the walk keeps exercising channels.
        for u in 2..=5u8 {
            if w.hub.model.role(s, &user(u)).is_none() {
                let code = w.invite(1, s);
                w.ok(u, Request::InviteJoin { code });
            }
        }
    }
}

#[test]
fn invite_expiry_is_bounded_to_30_days() {
    let mut w = World::new();
    w.login(1);
    let s = w.server(1, "club");
    let ask = |secs| Request::InviteCreate {
        server: s,
        max_uses: None,
        expires_in_secs: Some(secs),
    };
    assert_eq!(w.code(1, ask(u64::MAX)), ErrorCode::BadRequest);
    assert_eq!(w.code(1, ask(30 * 24 * 3600 + 1)), ErrorCode::BadRequest);
    match w.ok(1, ask(30 * 24 * 3600)) {
        Reply::Invite { invite } => {
            let at = invite.expires_at.expect("expires");
            assert!(
                at < (1u64 << 53),
                "{at} is beyond JavaScript's safe integers"
            );
        }
        r => panic!("unexpected {r:?}"),
    }
}

// --- mesh or SFU --------------------------------------------------------------------------------

fn sfu_world() -> World {
    let mut config = HubConfig::default();
    config.mode.sfu_enabled = true;
    World::with_config(config)
}

fn join(w: &mut World, n: u8, channel: ChannelId) -> hum_proto::signal::VoiceTopology {
    match w.ok(
        n,
        Request::ChannelJoin {
            channel,
            voice: None,
        },
    ) {
        Reply::Joined { mode, .. } => mode,
        r => panic!("unexpected {r:?}"),
    }
}

fn modes_seen(w: &mut World, n: u8) -> Vec<hum_proto::signal::VoiceTopology> {
    w.events(n)
        .into_iter()
        .filter_map(|e| match e {
            Event::ChannelMode { mode, .. } => Some(mode),
            _ => None,
        })
        .collect()
}

#[test]
fn the_ninth_joiner_moves_the_channel_to_the_sfu_and_six_move_it_back() {
    use hum_proto::signal::VoiceTopology::{Mesh, Sfu};
    let mut w = sfu_world();
    let (_, c) = w.community(10);
    for n in 1..=8 {
        assert_eq!(join(&mut w, n, c), Mesh, "member {n}");
    }
    // Each joiner heard the mode once (to it alone); nobody heard a change.
    assert_eq!(modes_seen(&mut w, 1), vec![Mesh]);
    w.clear();
    assert_eq!(join(&mut w, 9, c), Sfu);
    // Everyone on the server (member 10 too, not in the channel) hears the switch.
    for n in [1, 5, 9, 10] {
        assert_eq!(modes_seen(&mut w, n), vec![Sfu], "member {n}");
    }
    assert_eq!(join(&mut w, 10, c), Sfu);
    assert_eq!(modes_seen(&mut w, 10), vec![Sfu]);
    // 10 -> 7 members: still the SFU (hysteresis); at 6 it is a mesh again.
    for n in [10, 9, 8] {
        w.ok(n, Request::ChannelLeave);
    }
    assert!(modes_seen(&mut w, 1).is_empty());
    w.ok(7, Request::ChannelLeave);
    assert_eq!(modes_seen(&mut w, 1), vec![Mesh]);
}

#[test]
fn sfu_requests_are_checked_and_answered_once_the_sfu_is_done() {
    use super::SfuCmd;
    let mut w = sfu_world();
    w.hub.config.mode.mesh_max = 1;
    let (_, c) = w.community(3);
    join(&mut w, 1, c);
    let sfu_join = |channel| Request::SfuJoin {
        channel,
        sdp: "v=0 offer".into(),
    };
    // One member: still a mesh.
    assert_eq!(w.code(1, sfu_join(c)), ErrorCode::InvalidState);
    join(&mut w, 2, c);
    assert_eq!(w.code(3, sfu_join(c)), ErrorCode::NotInChannel);
    assert_eq!(
        w.code(2, Request::SfuAnswer { sdp: "v=0".into() }),
        ErrorCode::InvalidState,
        "an answer before joining the SFU"
    );
    // Accepted: no reply yet, the SFU is asked with the channel permissions.
    let re = RequestId(9_000);
    w.hub.request(w.now_ms, conn(2), re, sfu_join(c));
    w.pump();
    assert!(w.inbox.get(&conn(2)).is_none_or(|m| {
        m.iter()
            .all(|m| !matches!(m, ServerMessage::Reply { re: r, .. } if *r == re))
    }));
    match w.sfu.pop() {
        Some(SfuCmd::Join {
            conn: cn,
            re: r,
            channel,
            user: u,
            permissions,
            ..
        }) => {
            assert_eq!((cn, r, channel, u), (conn(2), re, c, user(2)));
            assert!(permissions.speak);
        }
        other => panic!("expected a join for the SFU, got {other:?}"),
    }
    w.hub
        .sfu_done(conn(2), re, user(2), true, Ok(Some("v=0 answer".into())));
    w.pump();
    assert_eq!(
        w.take_reply(conn(2), re),
        Ok(Reply::Sdp {
            sdp: "v=0 answer".into()
        })
    );
    // The SFU's offers reach the member as events; speaker changes reach the channel; the
    // layers wanted of a member's camera reach that member alone.
    w.hub.sfu_offer(user(2), "v=0 sfu".into());
    w.hub.sfu_speaker(c, user(2));
    w.hub
        .sfu_layers(user(2), "camera-1".into(), vec!["q".into(), "f".into()]);
    // A video paused for member 2's link reaches member 2 alone.
    w.hub.sfu_paused(user(2), user(1), "t4".into(), true);
    w.pump();
    let ev = w.events(2);
    assert!(ev.contains(&Event::SfuOffer {
        channel: c,
        sdp: "v=0 sfu".into()
    }));
    assert!(ev.contains(&Event::SfuLayers {
        channel: c,
        track: "camera-1".into(),
        rids: vec!["q".into(), "f".into()],
    }));
    assert!(ev.contains(&Event::SfuPaused {
        channel: c,
        user: user(1),
        track: "t4".into(),
        paused: true,
    }));
    let (ev1, ev3) = (w.events(1), w.events(3));
    assert!(
        ev1.iter()
            .any(|e| matches!(e, Event::SfuSpeaker { user: u, .. } if *u == user(2)))
    );
    assert!(
        !ev1.iter()
            .any(|e| matches!(e, Event::SfuLayers { .. } | Event::SfuPaused { .. })),
        "another member's layers or pauses went to member 1"
    );
    assert!(
        !ev3.iter().any(|e| matches!(
            e,
            Event::SfuSpeaker { .. }
                | Event::SfuOffer { .. }
                | Event::SfuLayers { .. }
                | Event::SfuPaused { .. }
        )),
        "a server member outside the channel"
    );
    // Leaving the channel takes the member off the SFU.
    w.ok(2, Request::ChannelLeave);
    assert_eq!(w.sfu.pop(), Some(SfuCmd::Leave { user: user(2) }));
    // A failed join forgets the member again.
    join(&mut w, 3, c);
    let re = RequestId(9_001);
    w.hub.request(w.now_ms, conn(3), re, sfu_join(c));
    w.hub
        .sfu_done(conn(3), re, user(3), true, Err("bad SDP".into()));
    w.pump();
    assert_eq!(
        w.take_reply(conn(3), re).unwrap_err().0,
        ErrorCode::BadRequest
    );
    assert_eq!(
        w.code(3, Request::SfuOffer { sdp: "v=0".into() }),
        ErrorCode::InvalidState
    );
}

#[test]
fn without_an_sfu_channels_stay_meshes_and_sfu_join_is_refused() {
    use hum_proto::signal::VoiceTopology::Mesh;
    let mut w = World::new();
    let (_, c) = w.community(10);
    for n in 1..=10 {
        assert_eq!(join(&mut w, n, c), Mesh);
    }
    assert_eq!(
        w.code(
            1,
            Request::SfuJoin {
                channel: c,
                sdp: "v=0".into()
            }
        ),
        ErrorCode::InvalidState
    );
}

#[test]
fn turn_credentials_at_login_and_on_request() {
    // Without a TURN server: nothing at login, not_found on request.
    let mut w = World::new();
    w.login(1);
    assert_eq!(w.code(1, Request::TurnCredentials), ErrorCode::NotFound);

    let mut w = World::with_config(HubConfig {
        turn: Some(crate::turn::TurnConfig {
            urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
            secret: "shared".into(),
            ttl_secs: 600,
        }),
        ..HubConfig::default()
    });
    let now_secs = w.now_ms / 1000;
    let Reply::Welcome { turn: Some(t), .. } = w.login(1) else {
        panic!("no TURN credentials in welcome");
    };
    assert_eq!(t.expires_at, now_secs + 600);
    assert_eq!(t.username, format!("{}:{}", now_secs + 600, user(1)));
    assert_eq!(
        t.credential,
        crate::turn::rest_password("shared", &t.username)
    );
    w.now_ms += 60_000;
    let Reply::Turn { turn: fresh } = w.ok(1, Request::TurnCredentials) else {
        panic!("no turn reply");
    };
    assert_eq!(fresh.expires_at, now_secs + 660);
}

#[test]
fn handles_are_unique_ignoring_case_and_look_alikes() {
    let mut w = World::new();
    for n in 1..=3 {
        w.login(n);
    }
    let h = |s: &str| Handle::new(s).unwrap();
    let set = |w: &mut World, n: u8, s: Option<&str>| {
        w.req(
            n,
            Request::HandleSet {
                handle: s.map(|s| Handle::new(s).unwrap()),
            },
        )
    };
    // Nobody has one yet.
    match w.ok(1, Request::HandleGet { user: user(2) }) {
        Reply::Handle { user: u, handle } => {
            assert_eq!(u.id, user(2));
            assert_eq!(handle, None);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        w.code(1, Request::HandleLookup { handle: h("ada") }),
        ErrorCode::NotFound
    );
    // Ada takes @Ada; case and a Cyrillic look-alike are hers too.
    match set(&mut w, 1, Some("Ada")).unwrap() {
        Reply::Handle { user: u, handle } => {
            assert_eq!(u.id, user(1));
            assert_eq!(handle, Some(h("Ada")));
        }
        other => panic!("{other:?}"),
    }
    for taken in ["ada", "ADA", "\u{0410}\u{0501}\u{0430}"] {
        assert_eq!(
            set(&mut w, 2, Some(taken)).unwrap_err().0,
            ErrorCode::HandleTaken,
            "{taken}"
        );
    }
    for lookup in ["ada", "ADA", "Ada"] {
        match w.ok(3, Request::HandleLookup { handle: h(lookup) }) {
            Reply::Handle { user: u, handle } => {
                assert_eq!(u.id, user(1));
                assert_eq!(u.display_name.as_str(), "user1");
                assert_eq!(handle, Some(h("Ada")), "the holder's spelling");
            }
            other => panic!("{other:?}"),
        }
    }
    // Re-setting your own handle in another case is a change, not a clash.
    set(&mut w, 1, Some("ada")).unwrap();
    assert_eq!(w.hub.model.handles.get(&user(1)), Some(&h("ada")));
    // Changing releases the old one at once.
    set(&mut w, 1, Some("ada_l")).unwrap();
    set(&mut w, 2, Some("ADA")).unwrap();
    assert!(matches!(
        w.ok(3, Request::HandleLookup { handle: h("ada") }),
        Reply::Handle { user: u, .. } if u.id == user(2)
    ));
    // Giving up.
    set(&mut w, 2, None).unwrap();
    assert_eq!(
        w.code(3, Request::HandleLookup { handle: h("ada") }),
        ErrorCode::NotFound
    );
    // Unknown users have no handle to get.
    assert_eq!(
        w.code(1, Request::HandleGet { user: user(9) }),
        ErrorCode::NotFound
    );
    // The handle survives in SQLite: a fresh model loaded from the same store matches.
    let m = w.hub.store.load().unwrap();
    assert_eq!(m.handles, w.hub.model.handles);
    assert_eq!(m.handle_owners, w.hub.model.handle_owners);
}

// --- lazy subscriptions ---------------------------------------------------------------------

fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind()).collect()
}

#[test]
fn a_lazy_session_hears_member_and_voice_changes_only_for_what_it_watches() {
    let mut w = World::new();
    let (s, c) = w.community(4);
    let other = w.server(1, "other");
    let c2 = w.channel(1, s, None);
    // 2 watches nothing, 3 watches `s`, 4 never subscribed (an older client: everything).
    assert_eq!(w.ok(2, Request::Subscribe { servers: vec![] }), Reply::Ok);
    assert_eq!(w.ok(3, Request::Subscribe { servers: vec![s] }), Reply::Ok);
    // Not a member of `other`: refused, nothing changes.
    assert_eq!(
        w.code(
            3,
            Request::Subscribe {
                servers: vec![other]
            }
        ),
        ErrorCode::NotFound
    );
    w.clear();
    let join = |ch| Request::ChannelJoin {
        channel: ch,
        voice: None,
    };
    w.ok(1, join(c));
    assert_eq!(kinds(&w.events(2)), Vec::<&str>::new());
    assert_eq!(kinds(&w.events(3)), vec!["roster_join"]);
    assert_eq!(kinds(&w.events(4)), vec!["roster_join"]);
    // 2 joins the channel: it hears its own channel (the roster it needs for WebRTC)...
    let Reply::Joined { channel, .. } = w.ok(2, join(c)) else {
        panic!()
    };
    assert_eq!(channel.roster.len(), 2);
    assert_eq!(kinds(&w.events(2)), vec!["channel_mode", "roster_join"]);
    let speak = Request::VoiceUpdate {
        voice: VoiceStatePatch {
            speaking: Some(true),
            ..Default::default()
        },
    };
    w.clear();
    w.ok(1, speak.clone());
    assert_eq!(kinds(&w.events(2)), vec!["roster_update"]);
    // ...but not another channel's.
    w.clear();
    w.ok(3, join(c2));
    assert_eq!(kinds(&w.events(2)), Vec::<&str>::new());
    assert_eq!(kinds(&w.events(4)), vec!["roster_join"]);
    // Member changes: only watchers.
    w.login(5);
    let code = w.invite(1, s);
    w.clear();
    w.ok(5, Request::InviteJoin { code });
    assert_eq!(kinds(&w.events(2)), Vec::<&str>::new());
    assert_eq!(kinds(&w.events(3)), vec!["member_joined"]);
    assert_eq!(kinds(&w.events(4)), vec!["member_joined"]);
    // Leaving the channel: the leaver and the channel still hear it.
    w.clear();
    w.ok(2, Request::ChannelLeave);
    assert_eq!(kinds(&w.events(2)), vec!["roster_leave"]);
    assert_eq!(kinds(&w.events(1)), vec!["roster_leave"]);
    // Subscribing again replaces the list.
    w.ok(3, Request::Subscribe { servers: vec![] });
    w.clear();
    w.ok(1, speak);
    assert_eq!(kinds(&w.events(3)), Vec::<&str>::new());
    w.hub.check().unwrap();
}

#[test]
fn big_member_lists_page_for_lazy_sessions() {
    let mut w = World::new();
    let n = 250u8;
    let (s, c) = w.community(n);
    w.ok(
        1,
        Request::ChannelJoin {
            channel: c,
            voice: None,
        },
    );
    // An older client gets everything.
    let Reply::Server { server } = w.ok(2, Request::ServerInfo { server: s }) else {
        panic!()
    };
    assert_eq!(server.members.len(), usize::from(n));
    assert_eq!(server.member_count, Some(u32::from(n)));
    // A lazy one: the first page, and no rosters of a server it does not watch.
    w.ok(3, Request::Subscribe { servers: vec![] });
    let Reply::Server { server } = w.ok(3, Request::ServerInfo { server: s }) else {
        panic!()
    };
    assert_eq!(server.members.len(), MEMBER_PAGE);
    assert_eq!(server.member_count, Some(u32::from(n)));
    assert!(server.channels[0].roster.is_empty());
    w.ok(3, Request::Subscribe { servers: vec![s] });
    let Reply::Server { server } = w.ok(3, Request::ServerInfo { server: s }) else {
        panic!()
    };
    assert_eq!(server.channels[0].roster.len(), 1);
    // Paging walks every member once, in order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let Reply::Members { members, next, .. } = w.ok(
            3,
            Request::MemberList {
                server: s,
                after,
                limit: Some(100),
            },
        ) else {
            panic!()
        };
        seen.extend(members.iter().map(|m| m.user.id));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let all: Vec<UserId> = w.hub.model.servers[&s].members.keys().copied().collect();
    assert_eq!(seen, all);
    assert_eq!(
        w.code(
            3,
            Request::MemberList {
                server: s,
                after: None,
                limit: Some(0),
            }
        ),
        ErrorCode::BadRequest
    );
    w.login(251);
    assert_eq!(
        w.code(
            251,
            Request::MemberList {
                server: s,
                after: None,
                limit: None,
            }
        ),
        ErrorCode::NotFound
    );
}

#[test]
fn a_lazy_session_joining_a_server_it_does_not_watch_gets_a_summary() {
    let mut w = World::new();
    let (s, _) = w.community(1);
    for _ in 0..2 {
        w.channel(1, s, None);
    }
    let code = w.invite(1, s);
    // 2 watches nothing (the app shows another server), 3 never subscribed (an older client).
    w.login(2);
    w.login(3);
    w.ok(2, Request::Subscribe { servers: vec![] });
    let Reply::Server { server } = w.ok(2, Request::InviteJoin { code: code.clone() }) else {
        panic!()
    };
    assert!(server.members.is_empty());
    assert!(server.channels.is_empty());
    assert_eq!(server.member_count, Some(2));
    assert_eq!(server.channel_count, Some(3));
    assert!(!server.has_every_channel());
    assert_eq!(server.role, hum_proto::signal::Role::Member);
    let Reply::Server { server } = w.ok(3, Request::InviteJoin { code }) else {
        panic!()
    };
    assert_eq!((server.members.len(), server.channels.len()), (3, 3));
    assert!(server.has_every_channel());
    // Asked for, the server comes whole (a page of members), watched or not.
    let Reply::Server { server } = w.ok(2, Request::ServerInfo { server: s }) else {
        panic!()
    };
    assert_eq!((server.members.len(), server.channels.len()), (3, 3));
    assert!(server.has_every_channel());
    let Reply::Channels { channels, .. } = w.ok(2, Request::ChannelList { server: s }) else {
        panic!()
    };
    assert_eq!(channels.len(), 3);
}

#[test]
fn a_permission_change_on_the_sfu_reaches_the_sfu() {
    use super::SfuCmd;
    let mut w = sfu_world();
    w.hub.config.mode.mesh_max = 1;
    let (s, c) = w.community(3);
    for n in [2, 3] {
        join(&mut w, n, c);
    }
    // Member 2 is on the SFU, member 3 only in the channel (not connected to the SFU).
    w.hub.request(
        w.now_ms,
        conn(2),
        RequestId(9_100),
        Request::SfuJoin {
            channel: c,
            sdp: "v=0 offer".into(),
        },
    );
    w.pump();
    assert!(matches!(w.sfu.pop(), Some(SfuCmd::Join { .. })));
    w.clear();
    let listen_only = ChannelPermissions {
        member: Permissions {
            join: true,
            speak: false,
            video: false,
            stream: false,
        },
        admin: Permissions::ALL,
    };
    w.ok(
        1,
        Request::ChannelConfigure {
            channel: c,
            max_participants: None,
            permissions: Some(listen_only),
            mesh_limit: None,
        },
    );
    // The SFU hears it for 2 alone (3 publishes nothing there).
    assert_eq!(
        w.sfu.pop(),
        Some(SfuCmd::Permissions {
            channel: c,
            user: user(2),
            permissions: listen_only.member,
        })
    );
    assert_eq!(w.sfu.pop(), None);
    // And 2 is told: muted in the roster.
    assert!(w.events(2).iter().any(
        |e| matches!(e, Event::RosterUpdate { user: u, voice, .. } if *u == user(2) && voice.muted)
    ));
    // A promotion gives the rights back, on the SFU too.
    w.ok(
        1,
        Request::MemberSetRole {
            server: s,
            user: user(2),
            role: hum_proto::signal::Role::Admin,
        },
    );
    assert_eq!(
        w.sfu.pop(),
        Some(SfuCmd::Permissions {
            channel: c,
            user: user(2),
            permissions: Permissions::ALL,
        })
    );
}

#[test]
fn client_release_is_announced_when_configured() {
    let mut w = World::new();
    w.login(1);
    assert_eq!(
        w.ok(1, Request::ClientRelease),
        Reply::ClientRelease { release: None }
    );

    let release = hum_proto::signal::ReleaseInfo {
        version: "9.1.0".into(),
        url: "https://example.org/hum".into(),
        notes: Some("Video calls".into()),
    };
    let mut w = World::with_config(HubConfig {
        client_release: Some(release.clone()),
        ..HubConfig::default()
    });
    w.login(1);
    assert_eq!(
        w.ok(1, Request::ClientRelease),
        Reply::ClientRelease {
            release: Some(release)
        }
    );
}

#[test]
fn an_admin_lowers_a_channels_mesh_limit_and_channel_list_shows_mode_and_limit() {
    use hum_proto::signal::VoiceTopology::{Mesh, Sfu};
    let mut w = sfu_world();
    let (s, c) = w.community(4);
    let limit = |l| Request::ChannelConfigure {
        channel: c,
        max_participants: None,
        permissions: None,
        mesh_limit: Some(l),
    };
    let listed = |w: &mut World| match w.ok(4, Request::ChannelList { server: s }) {
        Reply::Channels { channels, .. } => (channels[0].mode, channels[0].mesh_limit),
        other => panic!("expected channels, got {other:?}"),
    };
    assert_eq!(listed(&mut w), (Mesh, None));
    assert_eq!(w.code(2, limit(2)), ErrorCode::Forbidden, "a member");
    w.ok(1, limit(2));
    assert!(
        w.events(4).iter().any(
            |e| matches!(e, Event::ChannelUpdated { channel } if channel.mesh_limit == Some(2))
        )
    );
    assert_eq!(listed(&mut w), (Mesh, Some(2)));
    assert_eq!(join(&mut w, 1, c), Mesh);
    assert_eq!(join(&mut w, 2, c), Mesh);
    w.clear();
    // The third member is past the admin's limit (the relay's is 8).
    assert_eq!(join(&mut w, 3, c), Sfu);
    assert_eq!(modes_seen(&mut w, 4), vec![Sfu]);
    assert_eq!(listed(&mut w), (Sfu, Some(2)));
    // The relay's limit clears it: 3 members are back to a mesh (at most 8 - 2).
    w.ok(1, limit(8));
    assert_eq!(modes_seen(&mut w, 4), vec![Mesh]);
    assert_eq!(listed(&mut w), (Mesh, None));
    // Lowering it under the members present moves them to the SFU at once; the limit stays
    // while the channel is empty.
    w.ok(1, limit(0));
    assert_eq!(modes_seen(&mut w, 4), vec![Sfu]);
    for n in 1..=3 {
        w.ok(n, Request::ChannelLeave);
    }
    assert_eq!(listed(&mut w), (Mesh, Some(0)));
    assert_eq!(join(&mut w, 1, c), Sfu, "0: the SFU from the first member");
}

/// Owner 1 flips member 5's role in `s`; which of `conns` heard the `member_updated`.
fn who_hears(w: &mut World, s: ServerId, conns: &[ConnId]) -> Vec<ConnId> {
    use hum_proto::signal::Role;
    w.clear();
    let role = match w.hub.model.role(s, &user(5)) {
        Some(Role::Admin) => Role::Member,
        _ => Role::Admin,
    };
    w.ok(
        1,
        Request::MemberSetRole {
            server: s,
            user: user(5),
            role,
        },
    );
    conns
        .iter()
        .copied()
        .filter(|c| {
            w.inbox.get(c).is_some_and(|msgs| {
                msgs.iter().any(|m| {
                    matches!(
                        m,
                        ServerMessage::Event {
                            event: Event::MemberUpdated { .. }
                        }
                    )
                })
            })
        })
        .collect()
}

#[test]
fn the_watch_index_follows_sessions_subscriptions_and_membership() {
    // `World::pump` also checks the index against a recomputation after every step.
    let mut w = World::new();
    let (s, _) = w.community(5);
    let other = w.server(1, "other");
    let all = [conn(2), conn(3), conn(4)];
    assert_eq!(who_hears(&mut w, s, &all), all);
    // Unsubscribe: 2 watches nothing, 3 only `s`, 4 never subscribed.
    w.ok(2, Request::Subscribe { servers: vec![] });
    w.ok(3, Request::Subscribe { servers: vec![s] });
    assert_eq!(who_hears(&mut w, s, &all), [conn(3), conn(4)]);
    // Re-subscribe.
    w.ok(2, Request::Subscribe { servers: vec![s] });
    assert_eq!(who_hears(&mut w, s, &all), all);
    // A refused subscribe (not a member of `other`) changes nothing.
    assert_eq!(
        w.code(
            2,
            Request::Subscribe {
                servers: vec![s, other]
            }
        ),
        ErrorCode::NotFound
    );
    assert_eq!(who_hears(&mut w, s, &all), all);
    // Session end: out of the index; the next session watches everything again (it has not
    // subscribed yet).
    w.ok(3, Request::Subscribe { servers: vec![] });
    w.hub.disconnect(w.now_ms, conn(3));
    w.pump();
    assert_eq!(who_hears(&mut w, s, &all), [conn(2), conn(4)]);
    w.login(3);
    assert_eq!(who_hears(&mut w, s, &all), all);
    // Several sessions of one user: the newest replaces the older and alone hears, by its own
    // subscription, not the old session's.
    let second = conn(4) + 1;
    let both = [conn(4), second];
    w.ok(4, Request::Subscribe { servers: vec![] });
    w.login_on(4, second, "user4");
    assert!(w.closed.contains(&(conn(4), close::SESSION_REPLACED)));
    assert_eq!(who_hears(&mut w, s, &both), [second]);
    w.req_on(second, Request::Subscribe { servers: vec![] })
        .unwrap();
    assert_eq!(who_hears(&mut w, s, &both), Vec::<ConnId>::new());
    // The old connection's late close changes nothing.
    w.hub.disconnect(w.now_ms, conn(4));
    w.pump();
    w.req_on(second, Request::Subscribe { servers: vec![s] })
        .unwrap();
    assert_eq!(who_hears(&mut w, s, &both), [second]);
    // Leaving the server: no longer watched; rejoining: watched again (the subscription still
    // names it).
    w.ok(2, Request::ServerLeave { server: s });
    assert_eq!(who_hears(&mut w, s, &[conn(2)]), Vec::<ConnId>::new());
    let code = w.invite(1, s);
    w.ok(2, Request::InviteJoin { code });
    assert_eq!(who_hears(&mut w, s, &[conn(2)]), [conn(2)]);
    // A kicked member is out of the index at once.
    w.ok(
        1,
        Request::MemberKick {
            server: s,
            user: user(3),
        },
    );
    assert_eq!(who_hears(&mut w, s, &[conn(2), conn(3)]), [conn(2)]);
    // A cluster node dies: its sessions end together.
    w.hub
        .disconnect_where(w.now_ms, |c| c == conn(2) || c == second);
    w.pump();
    assert_eq!(
        who_hears(&mut w, s, &[conn(2), conn(3), conn(4), second]),
        Vec::<ConnId>::new()
    );
    // A deleted server leaves nothing behind.
    w.ok(1, Request::ServerDelete { server: s });
    assert!(w.hub.watch.watching(s).next().is_none());
    assert!(w.hub.watch.watches(&user(1), other));
}

#[test]
fn a_channels_mesh_limit_survives_a_relay_restart() {
    use hum_proto::signal::VoiceTopology::Sfu;
    let dir = tempfile::tempdir().unwrap();
    let mut config = HubConfig::default();
    config.mode.sfu_enabled = true;
    let world = |now_ms| {
        let store = Store::open_dir(dir.path()).unwrap();
        World {
            hub: Hub::new(store, config.clone(), ChaCha8Rng::seed_from_u64(1)).unwrap(),
            now_ms,
            next_req: 1,
            inbox: HashMap::new(),
            closed: vec![],
            sfu: vec![],
        }
    };
    let (s, c);
    {
        let mut w = world(5_000);
        (s, c) = w.community(2);
        w.ok(
            1,
            Request::ChannelConfigure {
                channel: c,
                max_participants: None,
                permissions: None,
                mesh_limit: Some(0),
            },
        );
    }
    let mut w = world(6_000);
    w.login(1);
    w.login(2);
    match w.ok(2, Request::ChannelList { server: s }) {
        Reply::Channels { channels, .. } => assert_eq!(channels[0].mesh_limit, Some(0)),
        other => panic!("expected channels, got {other:?}"),
    }
    assert_eq!(
        join(&mut w, 2, c),
        Sfu,
        "0 after the restart: the SFU from the first member"
    );
}
