//! The store test suite, run against both backends: every test below is a generic function,
//! instantiated once on SQLite (a temporary directory) and once on PostgreSQL (a fresh database
//! in the throwaway server of [`super::testing::TempPostgres`]; it fails when PostgreSQL is not
//! installed: `scripts/setup --test` installs it).

use std::collections::BTreeMap;

use hum_proto::signal::{ChannelPermissions, DisplayName, Handle, Name, Role};
use hum_proto::{InviteCode, UserId};

use super::testing::TempPostgres;
use super::{Kind, Location, Model, Store, StoreError};

/// One database, opened as often as a test likes (each open is a relay start).
trait Fixture {
    fn fresh() -> Self;
    fn try_open(&self) -> Result<Store, StoreError>;
    fn open(&self) -> Store {
        self.try_open().expect("opening the store")
    }
}

struct SqliteDb(tempfile::TempDir);

impl Fixture for SqliteDb {
    fn fresh() -> Self {
        SqliteDb(tempfile::tempdir().expect("tempdir"))
    }
    fn try_open(&self) -> Result<Store, StoreError> {
        Store::open_dir(self.0.path())
    }
}

struct PostgresDb(String);

impl Fixture for PostgresDb {
    fn fresh() -> Self {
        PostgresDb(
            TempPostgres::shared()
                .create_database()
                .expect("creating a test database"),
        )
    }
    fn try_open(&self) -> Result<Store, StoreError> {
        Store::open(&Location::Postgres(self.0.clone()))
    }
}

fn u(b: u8) -> UserId {
    UserId([b; 32])
}
fn dn(s: &str) -> DisplayName {
    DisplayName::new(s).expect("display name")
}
fn name(s: &str) -> Name {
    Name::new(s).expect("name")
}
fn h(s: &str) -> Handle {
    Handle::new(s).expect("handle")
}

/// The latest schema version the store's backend knows.
fn known_version(s: &Store) -> i64 {
    (match s.kind() {
        Kind::Sqlite => super::sqlite::MIGRATIONS.len(),
        Kind::Postgres => super::postgres::MIGRATIONS.len(),
    }) as i64
}

/// A BLOB/BYTEA literal in the store's SQL dialect.
fn blob(s: &Store, bytes: &[u8]) -> String {
    match s.kind() {
        Kind::Sqlite => format!("X'{}'", hex::encode(bytes)),
        Kind::Postgres => format!("'\\x{}'::bytea", hex::encode(bytes)),
    }
}

/// The model in a canonical text form (hash maps sorted), to compare two loads.
fn canonical(m: &Model) -> String {
    let users: BTreeMap<_, _> = m
        .users
        .iter()
        .map(|(k, v)| (k, v.display_name.as_str()))
        .collect();
    let friends: BTreeMap<_, _> = m.friends.iter().collect();
    let requests: BTreeMap<_, _> = m.requests_out.iter().collect();
    let invites: BTreeMap<_, _> = m
        .invites
        .iter()
        .map(|(k, v)| (k.as_str(), format!("{v:?}")))
        .collect();
    let declined: BTreeMap<_, _> = m.declined.iter().collect();
    let handles: BTreeMap<_, _> = m.handles.iter().map(|(k, v)| (k, v.as_str())).collect();
    format!(
        "users {users:?}\nfriends {friends:?}\nrequests {requests:?}\nservers {:?}\nchannels {:?}\ninvites {invites:?}\nbans {:?}\ndeclined {declined:?}\nhandles {handles:?}",
        m.servers, m.channels, m.bans
    )
}

/// Every write the hub makes, in an order that leaves a bit of everything behind.
fn exercise(s: &mut Store) {
    for (i, n) in ["ada", "bob", "cy", "dee"].iter().enumerate() {
        s.upsert_user(&u(i as u8 + 1), &dn(n), 10).expect("user");
    }
    s.upsert_user(&u(1), &dn("Ada L"), 11)
        .expect("upsert again renames");
    s.set_display_name(&u(2), &dn("Bob B")).expect("rename");
    s.add_friend_request(&u(1), &u(2), 12).expect("request");
    s.add_friend_request(&u(1), &u(2), 12)
        .expect("a repeated request is ignored");
    s.add_friendship(&u(2), &u(1), 13).expect("friends");
    s.add_friend_request(&u(3), &u(1), 14).expect("request");
    s.add_friend_request(&u(4), &u(1), 14).expect("request");
    s.decline_friend_request(&u(4), &u(1), 15).expect("decline");
    s.add_friend_request(&u(1), &u(4), 15).expect("request");
    s.delete_friend_request(&u(1), &u(4)).expect("withdraw");
    s.add_friendship(&u(3), &u(4), 16).expect("friends");
    s.delete_friendship(&u(4), &u(3)).expect("unfriend");
    let club = s.create_server(&name("club"), &u(1), 17).expect("server");
    let gone = s.create_server(&name("gone"), &u(2), 17).expect("server");
    s.rename_server(club, &name("the club"))
        .expect("rename server");
    s.add_member(club, &u(2), Role::Member, 18).expect("member");
    s.set_role(club, &u(2), Role::Admin).expect("role");
    s.add_member(club, &u(4), Role::Member, 18).expect("member");
    s.remove_member(club, &u(4)).expect("leave");
    let perms = ChannelPermissions::default();
    let lounge = s
        .create_channel(club, &name("lounge"), 8, &perms, 19)
        .expect("channel");
    let stage = s
        .create_channel(club, &name("stage"), 50, &perms, 19)
        .expect("channel");
    s.update_channel(lounge, &name("lounge 2"), 12, &perms, Some(3))
        .expect("update channel");
    s.delete_channel(stage).expect("delete channel");
    s.create_channel(gone, &name("x"), 4, &perms, 19)
        .expect("channel");
    let code = InviteCode::new("abcdef12").expect("code");
    s.create_invite(&code, club, &u(1), Some(3), Some(1_000_000), 20)
        .expect("invite");
    s.use_invite(&code, club, &u(3), 21).expect("use invite");
    let once = InviteCode::new("onceonce").expect("code");
    s.create_invite(&once, club, &u(2), None, None, 20)
        .expect("invite");
    s.delete_invite(&once).expect("delete invite");
    s.ban(club, &u(3), &u(1), 22).expect("ban a member");
    s.ban(club, &u(9), &u(1), 22)
        .expect("ban someone without an account");
    s.ban(club, &u(8), &u(1), 22).expect("ban");
    s.unban(club, &u(8)).expect("unban");
    s.forget_decline(&u(3), &u(1))
        .expect("forgetting a decline that is not there");
    s.set_handle(&u(1), Some(&h("ada")), 23).expect("handle");
    s.set_handle(&u(2), Some(&h("bob")), 23).expect("handle");
    s.set_handle(&u(2), Some(&h("bobby")), 24)
        .expect("handle change");
    s.set_handle(&u(3), Some(&h("cy")), 24).expect("handle");
    s.set_handle(&u(3), None, 25).expect("give up a handle");
    s.delete_server(gone).expect("delete server");
}

fn every_write_reloads_as_written<F: Fixture>() {
    let db = F::fresh();
    exercise(&mut db.open());
    let s = db.open();
    let m = s.load().expect("load");
    m.check().expect("model invariants");
    assert_eq!(m.users.len(), 4);
    assert_eq!(m.users[&u(1)].display_name.as_str(), "Ada L");
    assert_eq!(m.users[&u(2)].display_name.as_str(), "Bob B");
    assert!(m.are_friends(&u(1), &u(2)) && !m.are_friends(&u(3), &u(4)));
    assert!(m.has_request(&u(3), &u(1)));
    assert!(!m.has_request(&u(4), &u(1)) && !m.has_request(&u(1), &u(4)));
    assert_eq!(m.declined.get(&(u(4), u(1))), Some(&15));
    assert_eq!(m.servers.len(), 1, "the deleted server is gone");
    let (club, server) = m.servers.iter().next().expect("a server");
    assert_eq!(server.name.as_str(), "the club");
    assert_eq!(server.owner, u(1));
    let members: Vec<_> = server.members.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(members, vec![(u(1), Role::Owner), (u(2), Role::Admin)]);
    assert_eq!(
        m.channels.len(),
        1,
        "deleted channels and the deleted server's are gone"
    );
    let ch = m.channels.values().next().expect("a channel");
    assert_eq!(
        (
            ch.server,
            ch.name.as_str(),
            ch.max_participants,
            ch.mesh_limit
        ),
        (*club, "lounge 2", 12, Some(3))
    );
    assert_eq!(m.invites.len(), 1);
    let inv = &m.invites[&InviteCode::new("abcdef12").expect("code")];
    assert_eq!(
        (
            inv.server,
            inv.uses,
            inv.max_uses,
            inv.expires_at,
            inv.created_by
        ),
        (*club, 1, Some(3), Some(1_000_000), u(1))
    );
    let bans: Vec<_> = m.bans[club].iter().copied().collect();
    assert_eq!(bans, vec![u(3), u(9)]);
    assert_eq!(m.handles.len(), 2);
    assert_eq!(m.handle_owner(&h("BOBBY")), Some(u(2)));
    assert_eq!(m.handle_owner(&h("bob")), None);
    assert!(s.has_user(&u(4)).expect("has_user") && !s.has_user(&u(9)).expect("has_user"));
}

fn migrations_apply_once_and_data_reloads<F: Fixture>() {
    let db = F::fresh();
    {
        let mut s = db.open();
        assert_eq!(s.schema_version().expect("version"), known_version(&s));
        s.upsert_user(&u(1), &dn("ada"), 10).expect("user");
        s.upsert_user(&u(2), &dn("bob"), 10).expect("user");
        s.upsert_user(&u(3), &dn("cy"), 10).expect("user");
        s.add_friendship(&u(2), &u(1), 11).expect("friends");
        s.add_friend_request(&u(3), &u(1), 12).expect("request");
        let sid = s.create_server(&name("club"), &u(1), 13).expect("server");
        s.add_member(sid, &u(2), Role::Admin, 14).expect("member");
        let perms = ChannelPermissions::default();
        let cid = s
            .create_channel(sid, &name("lounge"), 8, &perms, 15)
            .expect("channel");
        let code = InviteCode::new("abcdef12").expect("code");
        s.create_invite(&code, sid, &u(1), Some(3), None, 16)
            .expect("invite");
        s.use_invite(&code, sid, &u(3), 17).expect("use");
        assert!(cid.0 > 0);
    }
    let s = db.open();
    assert_eq!(s.schema_version().expect("version"), known_version(&s));
    let m = s.load().expect("load");
    assert_eq!(m.users.len(), 3);
    assert!(m.are_friends(&u(1), &u(2)));
    assert!(m.has_request(&u(3), &u(1)));
    let (sid, server) = m.servers.iter().next().expect("a server");
    assert_eq!(server.owner, u(1));
    assert_eq!(server.members.get(&u(2)), Some(&Role::Admin));
    assert_eq!(server.members.get(&u(3)), Some(&Role::Member));
    assert_eq!(server.channels.len(), 1);
    let inv = &m.invites[&InviteCode::new("abcdef12").expect("code")];
    assert_eq!((inv.server, inv.uses, inv.max_uses), (*sid, 1, Some(3)));
}

fn friendship_replaces_requests_and_server_delete_cascades<F: Fixture>() {
    let db = F::fresh();
    let mut s = db.open();
    s.upsert_user(&u(1), &dn("a"), 1).expect("user");
    s.upsert_user(&u(2), &dn("b"), 1).expect("user");
    s.add_friend_request(&u(1), &u(2), 1).expect("request");
    s.add_friendship(&u(1), &u(2), 2).expect("friends");
    let m = s.load().expect("load");
    assert!(!m.has_request(&u(1), &u(2)));
    assert!(m.are_friends(&u(2), &u(1)));
    let sid = s.create_server(&name("x"), &u(1), 3).expect("server");
    s.create_channel(sid, &name("c"), 4, &ChannelPermissions::default(), 3)
        .expect("channel");
    let code = InviteCode::new("cascade1").expect("code");
    s.create_invite(&code, sid, &u(1), None, None, 3)
        .expect("invite");
    s.ban(sid, &u(2), &u(1), 3).expect("ban");
    s.delete_server(sid).expect("delete");
    let m = s.load().expect("load");
    assert!(m.servers.is_empty() && m.channels.is_empty());
    assert!(m.invites.is_empty() && m.bans.is_empty());
}

fn ids_are_never_reused<F: Fixture>() {
    let db = F::fresh();
    let mut s = db.open();
    s.upsert_user(&u(1), &dn("a"), 1).expect("user");
    let a = s.create_server(&name("a"), &u(1), 1).expect("server");
    let b = s.create_server(&name("b"), &u(1), 1).expect("server");
    let perms = ChannelPermissions::default();
    let c1 = s.create_channel(b, &name("c"), 4, &perms, 1).expect("ch");
    assert!(b > a);
    s.delete_server(b).expect("delete");
    s.delete_channel(c1).expect("delete");
    drop(s);
    // Also across a restart.
    let mut s = db.open();
    let c = s.create_server(&name("c"), &u(1), 2).expect("server");
    let c2 = s.create_channel(c, &name("c"), 4, &perms, 2).expect("ch");
    assert!(c > b, "{c:?} after {b:?}");
    assert!(c2 > c1, "{c2:?} after {c1:?}");
}

/// A transaction that fails half-way leaves nothing behind (foreign keys are enforced).
fn failed_transactions_leave_nothing<F: Fixture>() {
    let db = F::fresh();
    let mut s = db.open();
    s.upsert_user(&u(1), &dn("a"), 1).expect("user");
    assert!(
        s.create_server(&name("x"), &u(7), 1).is_err(),
        "an owner without an account"
    );
    let sid = s.create_server(&name("y"), &u(1), 1).expect("server");
    let code = InviteCode::new("abcdef12").expect("code");
    s.create_invite(&code, sid, &u(1), Some(2), None, 1)
        .expect("invite");
    // The use is counted, then the member insert fails (no such user): both roll back.
    assert!(s.use_invite(&code, sid, &u(7), 2).is_err());
    assert!(
        s.add_friendship(&u(1), &u(7), 2).is_err(),
        "a friend without an account"
    );
    let m = s.load().expect("load");
    assert_eq!(m.servers.len(), 1);
    assert_eq!(m.invites[&code].uses, 0, "the failed use was rolled back");
    assert!(m.friends.is_empty());
    // And the connection is still usable after the errors.
    s.upsert_user(&u(2), &dn("b"), 3)
        .expect("user after errors");
}

fn handles_persist_unique_by_key<F: Fixture>() {
    let db = F::fresh();
    {
        let s = db.open();
        s.upsert_user(&u(1), &dn("ada"), 10).expect("user");
        s.upsert_user(&u(2), &dn("bob"), 10).expect("user");
        s.set_handle(&u(1), Some(&h("Ada")), 11).expect("handle");
        // The database refuses a second holder of the same key whatever the caller checked.
        assert!(s.set_handle(&u(2), Some(&h("ADA")), 12).is_err());
        s.set_handle(&u(2), Some(&h("bob")), 12).expect("handle");
        // A change replaces; giving up deletes.
        s.set_handle(&u(2), Some(&h("bobby")), 13).expect("handle");
        s.set_handle(&u(1), None, 14).expect("handle");
        s.set_handle(&u(1), Some(&h("ada_l")), 15).expect("handle");
    }
    let s = db.open();
    let m = s.load().expect("load");
    m.check().expect("invariants");
    assert_eq!(m.handles.get(&u(1)), Some(&h("ada_l")));
    assert_eq!(m.handles.get(&u(2)), Some(&h("bobby")));
    assert_eq!(m.handle_owner(&h("BOBBY")), Some(u(2)));
    assert_eq!(m.handle_owner(&h("bob")), None);
}

fn stored_handles_the_rules_refuse_are_dropped_at_load<F: Fixture>() {
    let db = F::fresh();
    {
        let s = db.open();
        s.upsert_user(&u(1), &dn("ada"), 10).expect("user");
        s.upsert_user(&u(2), &dn("bob"), 10).expect("user");
        // Written by an imagined older relay: a refused handle, and a stale key.
        let sql = format!(
            r#"INSERT INTO handles ("user", handle, handle_key, set_at) VALUES ({}, 'ad a', 'ad a', 1), ({}, 'Bob', 'stale', 2)"#,
            blob(&s, &u(1).0),
            blob(&s, &u(2).0)
        );
        s.execute_raw(&sql).expect("plant rows");
    }
    let s = db.open();
    let m = s.load().expect("load");
    m.check().expect("invariants");
    assert_eq!(m.handles.len(), 1);
    assert_eq!(m.handles.get(&u(2)).map(Handle::as_str), Some("Bob"));
    // The stale key was rewritten, so the database now refuses a look-alike as well.
    assert!(s.set_handle(&u(1), Some(&h("bob")), 3).is_err());
    // And the refused one was deleted: a reload finds only the good one.
    assert_eq!(s.read_all().expect("rows").handles.len(), 1);
}

fn a_newer_database_is_refused<F: Fixture>() {
    let db = F::fresh();
    {
        let s = db.open();
        s.execute_raw("INSERT INTO schema_migrations VALUES (999, 0)")
            .expect("plant a version");
    }
    match db.try_open() {
        Err(StoreError::TooNew { found: 999, .. }) => {}
        other => panic!("expected TooNew, got {other:?}"),
    }
}

fn names_stored_before_the_stricter_rules_load_repaired<F: Fixture>() {
    let db = F::fresh();
    let mut s = db.open();
    s.upsert_user(&u(1), &dn("Ada"), 1).expect("user");
    s.upsert_user(&u(2), &dn("Bob"), 1).expect("user");
    let sid = s.create_server(&name("club"), &u(1), 2).expect("server");
    // As an older relay would have stored them.
    let sql = format!(
        "UPDATE users SET display_name = '\u{202E}Ada\u{200B}' WHERE id = {};
         UPDATE users SET display_name = '\u{200B}\u{FEFF}' WHERE id = {};
         UPDATE servers SET name = '\u{3164}' WHERE id = {};",
        blob(&s, &u(1).0),
        blob(&s, &u(2).0),
        sid.get()
    );
    s.execute_raw(&sql).expect("plant rows");
    let m = s.load().expect("load");
    assert_eq!(m.users[&u(1)].display_name.as_str(), "Ada");
    assert_eq!(
        m.users[&u(2)].display_name.as_str(),
        format!("user-{}", &u(2).to_hex()[..8])
    );
    assert_eq!(
        m.servers[&sid].name.as_str(),
        format!("server {}", sid.get())
    );
}

/// What the hub's rollback tests rely on: after `refuse_writes` every write fails, reads work.
fn refused_writes_fail_and_reads_still_work<F: Fixture>() {
    let db = F::fresh();
    let mut s = db.open();
    s.upsert_user(&u(1), &dn("a"), 1).expect("user");
    s.refuse_writes().expect("refuse writes");
    assert!(s.upsert_user(&u(2), &dn("b"), 1).is_err());
    assert!(s.create_server(&name("x"), &u(1), 1).is_err());
    assert!(s.set_display_name(&u(1), &dn("z")).is_err());
    assert_eq!(s.load().expect("load").users.len(), 1);
}

macro_rules! suite {
    ($module:ident, $fixture:ty) => {
        mod $module {
            #[test]
            fn every_write_reloads_as_written() {
                super::every_write_reloads_as_written::<$fixture>();
            }
            #[test]
            fn migrations_apply_once_and_data_reloads() {
                super::migrations_apply_once_and_data_reloads::<$fixture>();
            }
            #[test]
            fn friendship_replaces_requests_and_server_delete_cascades() {
                super::friendship_replaces_requests_and_server_delete_cascades::<$fixture>();
            }
            #[test]
            fn ids_are_never_reused() {
                super::ids_are_never_reused::<$fixture>();
            }
            #[test]
            fn failed_transactions_leave_nothing() {
                super::failed_transactions_leave_nothing::<$fixture>();
            }
            #[test]
            fn handles_persist_unique_by_key() {
                super::handles_persist_unique_by_key::<$fixture>();
            }
            #[test]
            fn stored_handles_the_rules_refuse_are_dropped_at_load() {
                super::stored_handles_the_rules_refuse_are_dropped_at_load::<$fixture>();
            }
            #[test]
            fn a_newer_database_is_refused() {
                super::a_newer_database_is_refused::<$fixture>();
            }
            #[test]
            fn names_stored_before_the_stricter_rules_load_repaired() {
                super::names_stored_before_the_stricter_rules_load_repaired::<$fixture>();
            }
            #[test]
            fn refused_writes_fail_and_reads_still_work() {
                super::refused_writes_fail_and_reads_still_work::<$fixture>();
            }
        }
    };
}

suite!(sqlite, super::SqliteDb);
suite!(postgres, super::PostgresDb);

#[test]
fn both_backends_know_the_same_schema_versions() {
    assert_eq!(
        super::sqlite::MIGRATIONS.len(),
        super::postgres::MIGRATIONS.len(),
        "append every migration to both store/sqlite.rs and store/postgres.rs"
    );
}

/// The same writes, loaded back from each backend, give the same model (ids included).
#[test]
fn both_backends_load_the_same_model() {
    let lite = SqliteDb::fresh();
    let pg = PostgresDb::fresh();
    exercise(&mut lite.open());
    exercise(&mut pg.open());
    let a = canonical(&lite.open().load().expect("load sqlite"));
    let b = canonical(&pg.open().load().expect("load postgres"));
    assert_eq!(a, b);
}

/// One relay per PostgreSQL database until the cluster bus lands: a second is refused, and
/// the database is free again once the first closes.
#[test]
fn a_second_relay_on_one_postgres_database_is_refused() {
    let db = PostgresDb::fresh();
    let first = db.open();
    match super::postgres::PgStore::connect_waiting(&db.0, std::time::Duration::ZERO) {
        Err(StoreError::InUse) => {}
        other => panic!("expected InUse, got {other:?}"),
    }
    drop(first);
    db.open();
}
