//! The hub's abuse bounds and moderation: new accounts per source address, what one account may
//! create, bans, the friend-request cooldown. In-memory SQLite, virtual time, invariants checked
//! after every request.

use hum_proto::signal::{DisplayName, ErrorCode, Event, Name, Reply, Request, ServerMessage};
use hum_proto::{InviteCode, RequestId, ServerId, UserId};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{ConnId, Hub, HubConfig, Output};
use crate::limits::SourceKey;
use crate::store::Store;

const HOUR_MS: u64 = 3_600_000;

struct T {
    hub: Hub,
    now_ms: u64,
    next: u64,
    events: Vec<(ConnId, Event)>,
}

fn user(n: u8) -> UserId {
    UserId([n; 32])
}

fn src(s: &str) -> Option<SourceKey> {
    Some(SourceKey::of(s.parse().unwrap()))
}

impl T {
    fn new(config: HubConfig) -> T {
        let hub = Hub::new(
            Store::open_in_memory().unwrap(),
            config,
            ChaCha8Rng::seed_from_u64(3),
        )
        .unwrap();
        T {
            hub,
            now_ms: 1_000 * HOUR_MS,
            next: 1,
            events: Vec::new(),
        }
    }

    /// The answer to the last request of `conn`, after checking the invariants.
    fn answer(&mut self, conn: ConnId, re: RequestId) -> Result<Reply, ErrorCode> {
        let mut got = None;
        for out in self.hub.drain() {
            if let Output::Send { to, msg } = out {
                for c in to {
                    match &msg {
                        ServerMessage::Reply { re: r, reply } if c == conn && *r == re => {
                            got = Some(Ok(reply.clone()))
                        }
                        ServerMessage::Error { re: r, code, .. } if c == conn && *r == Some(re) => {
                            got = Some(Err(*code))
                        }
                        ServerMessage::Event { event } => self.events.push((c, event.clone())),
                        _ => {}
                    }
                }
            }
        }
        self.hub.check().unwrap();
        got.expect("every request is answered")
    }

    fn login(&mut self, n: u8, source: Option<SourceKey>) -> Result<Reply, ErrorCode> {
        let re = RequestId(self.next);
        self.next += 1;
        let conn = ConnId::from(n);
        self.hub.disconnect(self.now_ms, conn);
        let name = DisplayName::new(format!("u{n}")).unwrap();
        self.hub
            .login_from(self.now_ms, conn, re, user(n), Some(name), source);
        self.answer(conn, re)
    }

    fn req(&mut self, n: u8, req: Request) -> Result<Reply, ErrorCode> {
        let re = RequestId(self.next);
        self.next += 1;
        let conn = ConnId::from(n);
        self.hub.request(self.now_ms, conn, re, req);
        self.answer(conn, re)
    }

    fn server(&mut self, n: u8, name: &str) -> ServerId {
        match self.req(
            n,
            Request::ServerCreate {
                name: Name::new(name).unwrap(),
            },
        ) {
            Ok(Reply::Server { server }) => server.id,
            other => panic!("server_create: {other:?}"),
        }
    }

    fn invite(&mut self, n: u8, server: ServerId) -> Result<InviteCode, ErrorCode> {
        match self.req(
            n,
            Request::InviteCreate {
                server,
                max_uses: None,
                expires_in_secs: None,
            },
        )? {
            Reply::Invite { invite } => Ok(invite.code),
            other => panic!("invite_create: {other:?}"),
        }
    }
}

#[test]
fn new_accounts_are_limited_per_source_address() {
    let mut t = T::new(HubConfig {
        new_accounts_per_hour: 2,
        new_accounts_burst: 2,
        ..HubConfig::default()
    });
    let a = src("192.0.2.1");
    assert!(t.login(1, a).is_ok());
    assert!(t.login(2, a).is_ok());
    assert_eq!(t.login(3, a), Err(ErrorCode::RateLimited));
    // Nothing was stored for the refused key.
    assert_eq!(t.hub.stats().users, 2);
    // Existing accounts log in from there as often as they like.
    for _ in 0..5 {
        assert!(t.login(1, a).is_ok());
    }
    // Another address, and the same /64 for IPv6.
    assert!(t.login(3, src("192.0.2.2")).is_ok());
    assert!(t.login(4, src("2001:db8::1")).is_ok());
    assert!(t.login(5, src("2001:db8::2")).is_ok());
    assert_eq!(t.login(6, src("2001:db8::3")), Err(ErrorCode::RateLimited));
    // Half an hour later the first address has earned one more.
    t.now_ms += HOUR_MS / 2;
    assert!(t.login(6, a).is_ok());
    assert_eq!(t.login(7, a), Err(ErrorCode::RateLimited));
    // Logins without a known source (in-process use) are not counted.
    assert!(t.login(7, None).is_ok());
}

#[test]
fn one_account_owns_a_bounded_number_of_servers_and_invites() {
    let mut t = T::new(HubConfig {
        max_owned_servers_per_user: 2,
        max_invites_per_user: 3,
        ..HubConfig::default()
    });
    t.login(1, None).unwrap();
    t.login(2, None).unwrap();
    let s1 = t.server(1, "one");
    let s2 = t.server(1, "two");
    assert_eq!(
        t.req(
            1,
            Request::ServerCreate {
                name: Name::new("three").unwrap()
            }
        ),
        Err(ErrorCode::LimitReached)
    );
    // Someone else's server does not count against user 1's ownership.
    let theirs = t.server(2, "theirs");
    let code = t.invite(2, theirs).unwrap();
    t.req(1, Request::InviteJoin { code }).unwrap();
    // Deleting one frees a slot.
    t.req(1, Request::ServerDelete { server: s2 }).unwrap();
    let s3 = t.server(1, "three");
    // Invites: 3 live per account, across servers.
    t.invite(1, s1).unwrap();
    t.invite(1, s1).unwrap();
    let last = t.invite(1, s3).unwrap();
    assert_eq!(t.invite(1, s3), Err(ErrorCode::LimitReached));
    // Revoking one frees a slot.
    t.req(1, Request::InviteRevoke { code: last }).unwrap();
    t.invite(1, s3).unwrap();
}

#[test]
fn a_banned_member_cannot_rejoin_until_unbanned() {
    let mut t = T::new(HubConfig::default());
    for n in 1..=4 {
        t.login(n, None).unwrap();
    }
    let s = t.server(1, "club");
    let code = t.invite(1, s).unwrap();
    for n in [2, 3, 4] {
        t.req(n, Request::InviteJoin { code: code.clone() })
            .unwrap();
    }
    t.req(
        1,
        Request::MemberSetRole {
            server: s,
            user: user(2),
            role: hum_proto::signal::Role::Admin,
        },
    )
    .unwrap();
    // Members may not ban; admins may not ban admins or the owner.
    assert_eq!(
        t.req(
            3,
            Request::MemberBan {
                server: s,
                user: user(4)
            }
        ),
        Err(ErrorCode::Forbidden)
    );
    assert_eq!(
        t.req(
            2,
            Request::MemberBan {
                server: s,
                user: user(1)
            }
        ),
        Err(ErrorCode::Forbidden)
    );
    assert_eq!(
        t.req(3, Request::BanList { server: s }),
        Err(ErrorCode::Forbidden)
    );
    // An admin bans a member: removed at once, told so.
    t.events.clear();
    t.req(
        2,
        Request::MemberBan {
            server: s,
            user: user(3),
        },
    )
    .unwrap();
    assert!(
        t.events
            .iter()
            .any(|(c, e)| *c == 3
                && matches!(e, Event::ServerRemoved { server, .. } if *server == s))
    );
    assert_eq!(
        t.req(3, Request::ServerInfo { server: s }),
        Err(ErrorCode::NotMember)
    );
    // The invite no longer lets them in, nor does a new one.
    assert_eq!(
        t.req(3, Request::InviteJoin { code: code.clone() }),
        Err(ErrorCode::Banned)
    );
    let fresh = t.invite(1, s).unwrap();
    assert_eq!(
        t.req(3, Request::InviteJoin { code: fresh }),
        Err(ErrorCode::Banned)
    );
    // A key that never joined (or has no account yet) can be banned in advance.
    t.req(
        1,
        Request::MemberBan {
            server: s,
            user: user(9),
        },
    )
    .unwrap();
    match t.req(2, Request::BanList { server: s }) {
        Ok(Reply::Bans { users, .. }) => {
            let ids: Vec<UserId> = users.iter().map(|u| u.id).collect();
            assert_eq!(ids, vec![user(3), user(9)]);
        }
        other => panic!("ban_list: {other:?}"),
    }
    // Unbanned: the old invite works again.
    t.req(
        2,
        Request::MemberUnban {
            server: s,
            user: user(3),
        },
    )
    .unwrap();
    assert_eq!(
        t.req(
            2,
            Request::MemberUnban {
                server: s,
                user: user(3)
            }
        ),
        Err(ErrorCode::NotFound)
    );
    assert!(matches!(
        t.req(3, Request::InviteJoin { code }),
        Ok(Reply::Server { .. })
    ));
}

#[test]
fn bans_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s;
    {
        let hub = Hub::new(
            Store::open_dir(dir.path()).unwrap(),
            HubConfig::default(),
            ChaCha8Rng::seed_from_u64(1),
        )
        .unwrap();
        let mut t = T {
            hub,
            now_ms: HOUR_MS,
            next: 1,
            events: Vec::new(),
        };
        t.login(1, None).unwrap();
        t.login(2, None).unwrap();
        s = t.server(1, "club");
        let code = t.invite(1, s).unwrap();
        t.req(2, Request::InviteJoin { code }).unwrap();
        t.req(
            1,
            Request::MemberBan {
                server: s,
                user: user(2),
            },
        )
        .unwrap();
        t.req(1, Request::FriendRequest { user: user(2) }).unwrap();
        t.req(2, Request::FriendDecline { user: user(1) }).unwrap();
    }
    let hub = Hub::new(
        Store::open_dir(dir.path()).unwrap(),
        HubConfig::default(),
        ChaCha8Rng::seed_from_u64(2),
    )
    .unwrap();
    let mut t = T {
        hub,
        now_ms: 2 * HOUR_MS,
        next: 100,
        events: Vec::new(),
    };
    t.login(1, None).unwrap();
    t.login(2, None).unwrap();
    let code = t.invite(1, s).unwrap();
    assert_eq!(
        t.req(2, Request::InviteJoin { code }),
        Err(ErrorCode::Banned)
    );
    assert_eq!(
        t.req(1, Request::FriendRequest { user: user(2) }),
        Err(ErrorCode::RateLimited)
    );
}

#[test]
fn a_declined_friend_request_cannot_be_resent_during_the_cooldown() {
    let mut t = T::new(HubConfig {
        friend_request_cooldown_secs: 3600,
        ..HubConfig::default()
    });
    t.login(1, None).unwrap();
    t.login(2, None).unwrap();
    t.req(1, Request::FriendRequest { user: user(2) }).unwrap();
    t.req(2, Request::FriendDecline { user: user(1) }).unwrap();
    assert_eq!(
        t.req(1, Request::FriendRequest { user: user(2) }),
        Err(ErrorCode::RateLimited)
    );
    // The one who declined may still ask (and that is a normal request).
    t.now_ms += 60_000;
    assert_eq!(
        t.req(1, Request::FriendRequest { user: user(2) }),
        Err(ErrorCode::RateLimited)
    );
    t.req(2, Request::FriendRequest { user: user(1) }).unwrap();
    t.req(2, Request::FriendRemove { user: user(1) }).unwrap();
    // After the cooldown, asking works again.
    t.now_ms += HOUR_MS;
    t.req(1, Request::FriendRequest { user: user(2) }).unwrap();
}
