//! Persistence: one interface ([`StoreBackend`]), two databases.
//!
//! The relay keeps its whole persistent model in memory ([`crate::model::Model`]) and writes
//! through to the database on every change, so reads never touch the disk. The store is owned by
//! the hub thread, which is the only writer; nothing here runs on the async reactor (the
//! PostgreSQL client blocks on its own small runtime, so it must not be called from a tokio task
//! either: `server::start` opens the store on a blocking thread).
//!
//! - [`sqlite`]: SQLite (rusqlite, bundled), embedded, the default: `relay.sqlite3` in `--data`.
//! - [`postgres`]: PostgreSQL (`--store postgres://...`), the cluster's shared store
//!   (docs/cluster.md).
//!
//! Each has its own list of numbered migrations; `schema_migrations` records which have run and
//! a database written by a newer relay (a version we do not know) is refused rather than guessed
//! at. Version N is the same logical schema in both: append a migration to BOTH lists together
//! (a test checks that the lists have the same length), never renumber or edit an existing one.
//!
//! Reading at startup is shared: each backend reads its tables into [`RawData`] (plain rows) and
//! [`StoreBackend::load`] builds and repairs the model once for both.

use std::ops::{Deref, DerefMut};
use std::path::Path;

use hum_proto::signal::{ChannelPermissions, DisplayName, Handle, Name, Role};
use hum_proto::{ChannelId, InviteCode, ServerId, UserId};

use crate::model::{ChannelRec, InviteRec, Model, ServerRec, UserRec};

pub mod postgres;
pub mod sqlite;
pub mod tape;
/// Throwaway PostgreSQL/Redis servers for tests: shell scripts and Unix users, so Unix only.
#[cfg(unix)]
pub mod testing;

#[cfg(test)]
mod suite;

/// A failure in the database layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "the database is at schema version {found}, newer than this relay knows ({known}); upgrade the relay"
    )]
    TooNew { found: i64, known: i64 },
    #[error("corrupt row in {table}: {what}")]
    Corrupt { table: &'static str, what: String },
    #[error("postgres: {0}")]
    Postgres(#[from] ::postgres::Error),
    #[error("bad --store {0}")]
    BadLocation(String),
    #[error(
        "another relay is using this PostgreSQL database; until the cluster bus lands (docs/cluster.md) one relay per database"
    )]
    InUse,
    /// Another cluster node's write failed; this node replays the failure (crate::bus).
    #[error("replayed from the node that wrote: {0}")]
    Replayed(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Which database a store is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// Where the relay keeps its data: `--store`.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// `relay.sqlite3` in the data directory (the default).
    SqliteIn(std::path::PathBuf),
    /// A PostgreSQL URL (`postgres://user:password@host:port/db`, or
    /// `postgresql:///db?host=/run/postgresql` for a Unix socket).
    Postgres(String),
}

impl Location {
    /// `--store`: absent means SQLite in `data_dir`; otherwise a `postgres://` or
    /// `postgresql://` URL, or `sqlite` (spelled out: the default).
    pub fn parse(store: Option<&str>, data_dir: &Path) -> Result<Location> {
        match store {
            None | Some("sqlite") => Ok(Location::SqliteIn(data_dir.to_path_buf())),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                url.parse::<::postgres::Config>()
                    .map_err(|e| StoreError::BadLocation(format!("{}: {e}", redact(url))))?;
                Ok(Location::Postgres(url.to_string()))
            }
            Some(other) => Err(StoreError::BadLocation(format!(
                "{}: expected `sqlite` or a postgres:// URL",
                redact(other)
            ))),
        }
    }
}

/// Never print a password: logs and errors show the URL without it.
impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::SqliteIn(d) => write!(f, "sqlite in {}", d.display()),
            Location::Postgres(url) => write!(f, "{}", redact(url)),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// `scheme://user:secret@host/...` -> `scheme://user:***@host/...`; a `password=` query
/// parameter likewise.
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..].find(['/', '?']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@') {
            let userinfo = &out[rest..rest + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest + colon + 1..rest + at, "***");
            }
        }
    }
    if let Some(p) = out.find("password=") {
        let start = p + "password=".len();
        let end = out[start..].find('&').map_or(out.len(), |i| start + i);
        out.replace_range(start..end, "***");
    }
    out
}

/// An `invites` row: (code, server, uses, max_uses, expires_at, created_by).
pub type InviteRow = (String, i64, i64, Option<i64>, Option<i64>, Vec<u8>);

/// Every table's rows as stored, before any checking: what a backend reads at startup.
#[derive(Debug, Default)]
pub struct RawData {
    /// (id, display_name)
    pub users: Vec<(Vec<u8>, String)>,
    /// (user_a, user_b)
    pub friendships: Vec<(Vec<u8>, Vec<u8>)>,
    /// (from_user, to_user)
    pub requests: Vec<(Vec<u8>, Vec<u8>)>,
    /// (id, name, owner)
    pub servers: Vec<(i64, String, Vec<u8>)>,
    /// (server, user, role)
    pub members: Vec<(i64, Vec<u8>, String)>,
    /// (id, server, name, max_participants, permissions JSON, mesh_limit), by id
    pub channels: Vec<(i64, i64, String, i64, String, Option<i64>)>,
    pub invites: Vec<InviteRow>,
    /// (server, user)
    pub bans: Vec<(i64, Vec<u8>)>,
    /// (from_user, to_user, declined_at)
    pub declines: Vec<(Vec<u8>, Vec<u8>, i64)>,
    /// (user, handle, handle_key), by set_at then user
    pub handles: Vec<(Vec<u8>, String, String)>,
}

/// What the relay stores, whatever the database. Methods taking `&mut self` are one
/// transaction each.
pub trait StoreBackend: Send {
    /// Which database this is.
    fn kind(&self) -> Kind;
    /// The schema version the database is at.
    fn schema_version(&self) -> Result<i64>;
    /// Every table's rows (at startup; see [`StoreBackend::load`]).
    fn read_all(&self) -> Result<RawData>;
    /// Drop `user`'s handle (one the current rules refuse, found at load).
    fn drop_handle(&self, user: &UserId) -> Result<()>;
    /// Rewrite `user`'s handle key (the key rules changed since it was stored).
    fn rekey_handle(&self, user: &UserId, key: &str) -> Result<()>;

    /// Read everything into memory (at startup).
    fn load(&self) -> Result<Model> {
        let (m, fixes) = build_model(self.read_all()?)?;
        for user in fixes.drop {
            self.drop_handle(&user)?;
        }
        for (user, key) in fixes.rekey {
            self.rekey_handle(&user, &key)?;
        }
        Ok(m)
    }

    /// Give `user` the handle `h`, or none. The caller checked that nobody else holds its key;
    /// the UNIQUE constraint makes sure.
    fn set_handle(&self, user: &UserId, h: Option<&Handle>, now_secs: u64) -> Result<()>;
    /// Ban `user` from `server` (removing the membership, if any, in the same transaction).
    fn ban(&mut self, server: ServerId, user: &UserId, by: &UserId, now_secs: u64) -> Result<()>;
    fn unban(&self, server: ServerId, user: &UserId) -> Result<()>;
    /// `to` declined `from`'s friend request at `now_secs` (deletes the request too).
    fn decline_friend_request(&mut self, from: &UserId, to: &UserId, now_secs: u64) -> Result<()>;
    fn forget_decline(&self, from: &UserId, to: &UserId) -> Result<()>;
    fn upsert_user(&self, id: &UserId, name: &DisplayName, now_secs: u64) -> Result<()>;
    fn set_display_name(&self, id: &UserId, name: &DisplayName) -> Result<()>;
    fn add_friend_request(&self, from: &UserId, to: &UserId, now_secs: u64) -> Result<()>;
    fn delete_friend_request(&self, from: &UserId, to: &UserId) -> Result<()>;
    /// Make `a` and `b` friends, dropping any pending requests between them (one transaction).
    fn add_friendship(&mut self, a: &UserId, b: &UserId, now_secs: u64) -> Result<()>;
    fn delete_friendship(&self, a: &UserId, b: &UserId) -> Result<()>;
    /// Create a server with its owner as first member; returns the new id.
    fn create_server(&mut self, name: &Name, owner: &UserId, now_secs: u64) -> Result<ServerId>;
    fn rename_server(&self, id: ServerId, name: &Name) -> Result<()>;
    /// Delete a server; members, channels and invites go with it (ON DELETE CASCADE).
    fn delete_server(&self, id: ServerId) -> Result<()>;
    fn add_member(&self, server: ServerId, user: &UserId, role: Role, now_secs: u64) -> Result<()>;
    fn set_role(&self, server: ServerId, user: &UserId, role: Role) -> Result<()>;
    fn remove_member(&self, server: ServerId, user: &UserId) -> Result<()>;
    fn create_channel(
        &self,
        server: ServerId,
        name: &Name,
        max_participants: u32,
        permissions: &ChannelPermissions,
        now_secs: u64,
    ) -> Result<ChannelId>;
    /// Rewrite a channel's settings (`mesh_limit`: `None` is the relay's own limit).
    fn update_channel(
        &self,
        id: ChannelId,
        name: &Name,
        max_participants: u32,
        permissions: &ChannelPermissions,
        mesh_limit: Option<u32>,
    ) -> Result<()>;
    fn delete_channel(&self, id: ChannelId) -> Result<()>;
    fn create_invite(
        &self,
        code: &InviteCode,
        server: ServerId,
        created_by: &UserId,
        max_uses: Option<u32>,
        expires_at: Option<u64>,
        now_secs: u64,
    ) -> Result<()>;
    /// Record a use of an invite and add the member, in one transaction.
    fn use_invite(
        &mut self,
        code: &InviteCode,
        server: ServerId,
        user: &UserId,
        now_secs: u64,
    ) -> Result<()>;
    fn delete_invite(&self, code: &InviteCode) -> Result<()>;
    /// True if a user row exists (tests and diagnostics).
    fn has_user(&self, id: &UserId) -> Result<bool>;

    /// Make every later write fail, as a full disk or a read-only file would: for tests of the
    /// hub's rollback paths.
    #[cfg(test)]
    fn refuse_writes(&self) -> Result<()>;
    /// Run raw SQL (tests that plant rows an older relay could have written).
    #[cfg(test)]
    fn execute_raw(&self, sql: &str) -> Result<()>;
}

/// The relay's store: SQLite or PostgreSQL behind [`StoreBackend`] (call its methods directly
/// on a `Store`).
pub struct Store(Box<dyn StoreBackend>);

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Store").field(&self.0.kind()).finish()
    }
}

impl Deref for Store {
    type Target = dyn StoreBackend;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl DerefMut for Store {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut *self.0
    }
}

impl Store {
    /// Wrap a backend.
    pub fn new(backend: impl StoreBackend + 'static) -> Store {
        Store(Box::new(backend))
    }

    /// Open the store `--store` names, bringing it to the latest schema. Blocks: call it from
    /// a plain thread (or `spawn_blocking`), not from a tokio task.
    pub fn open(location: &Location) -> Result<Store> {
        match location {
            Location::SqliteIn(dir) => Store::open_dir(dir),
            Location::Postgres(url) => Ok(Store::new(postgres::PgStore::connect(url)?)),
        }
    }

    /// Open the store for one node of a cluster: every node of the cluster shares the
    /// database (PostgreSQL only; no one-relay lock, the bus keeps the nodes in step).
    pub fn open_for_cluster(location: &Location) -> Result<Store> {
        match location {
            Location::Postgres(url) => Ok(Store::new(postgres::PgStore::connect_shared(url)?)),
            Location::SqliteIn(_) => Err(StoreError::BadLocation(
                "a cluster (--redis) needs --store postgres://...: SQLite is one node's".into(),
            )),
        }
    }

    /// Open (creating if needed) `relay.sqlite3` in `dir` and bring it to the latest schema.
    pub fn open_dir(dir: &Path) -> Result<Store> {
        Ok(Store::new(sqlite::SqliteStore::open_dir(dir)?))
    }

    /// A private in-memory SQLite database (tests).
    pub fn open_in_memory() -> Result<Store> {
        Ok(Store::new(sqlite::SqliteStore::open_in_memory()?))
    }
}

pub(crate) fn role_from_str(s: &str) -> Option<Role> {
    match s {
        "owner" => Some(Role::Owner),
        "admin" => Some(Role::Admin),
        "member" => Some(Role::Member),
        _ => None,
    }
}

fn user_from_blob(table: &'static str, b: Vec<u8>) -> Result<UserId> {
    let arr: [u8; 32] = b.try_into().map_err(|_| StoreError::Corrupt {
        table,
        what: "user id is not 32 bytes".into(),
    })?;
    Ok(UserId(arr))
}

/// A name as stored. Names written before the naming rules got stricter (bidi controls,
/// invisible characters, mixed scripts: `hum_proto::names`) are repaired in memory, or replaced
/// by `fallback` when nothing valid is left, rather than refusing to start.
fn stored_name<N: std::fmt::Display>(
    stored: &str,
    repaired: impl Fn(&str) -> Option<N>,
    fallback: impl Fn() -> std::result::Result<N, hum_proto::signal::NameError>,
) -> std::result::Result<N, hum_proto::signal::NameError> {
    let name = match repaired(stored) {
        Some(n) => n,
        None => fallback()?,
    };
    if name.to_string() != stored {
        tracing::warn!(stored = ?stored, now = %name, "a stored name breaks the naming rules; serving it repaired");
    }
    Ok(name)
}

pub(crate) fn corrupt(table: &'static str, what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        table,
        what: what.to_string(),
    }
}

/// Stored handles to drop or re-key, found while loading.
#[derive(Debug, Default)]
struct HandleFixes {
    drop: Vec<UserId>,
    rekey: Vec<(UserId, String)>,
}

/// The model from the rows as stored: ids checked, names repaired, handles checked against the
/// current rules. A handle the rules refuse, or whose key another (set earlier) already holds,
/// is dropped with a warning rather than refusing to start; stored keys are brought up to date
/// with [`hum_proto::names::handle_key`].
fn build_model(raw: RawData) -> Result<(Model, HandleFixes)> {
    let mut m = Model::default();
    for (id, name) in raw.users {
        let id = user_from_blob("users", id)?;
        let name = stored_name(&name, DisplayName::repaired, || {
            DisplayName::new(format!("user-{}", &id.to_hex()[..8]))
        })
        .map_err(|e| corrupt("users", e))?;
        m.users.insert(id, UserRec { display_name: name });
    }
    for (a, b) in raw.friendships {
        m.add_friendship(
            user_from_blob("friendships", a)?,
            user_from_blob("friendships", b)?,
        );
    }
    for (a, b) in raw.requests {
        m.add_request(
            user_from_blob("friend_requests", a)?,
            user_from_blob("friend_requests", b)?,
        );
    }
    for (id, name, owner) in raw.servers {
        let name = stored_name(&name, Name::repaired, || Name::new(format!("server {id}")))
            .map_err(|e| corrupt("servers", e))?;
        let owner = user_from_blob("servers", owner)?;
        m.servers
            .insert(ServerId(id as u64), ServerRec::new(name, owner));
    }
    for (server, user, role) in raw.members {
        let user = user_from_blob("members", user)?;
        let role = role_from_str(&role).ok_or_else(|| corrupt("members", role))?;
        m.add_member(ServerId(server as u64), user, role);
    }
    for (id, server, name, max, perms, mesh_limit) in raw.channels {
        let name = stored_name(&name, Name::repaired, || Name::new(format!("channel {id}")))
            .map_err(|e| corrupt("channels", e))?;
        let permissions: ChannelPermissions =
            serde_json::from_str(&perms).map_err(|e| corrupt("channels", e))?;
        let rec = ChannelRec {
            server: ServerId(server as u64),
            name,
            max_participants: u32::try_from(max).unwrap_or(u32::MAX),
            permissions,
            // Out of range (edited by hand): the relay's own limit.
            mesh_limit: mesh_limit.and_then(|l| u32::try_from(l).ok()),
            roster: Vec::new(),
        };
        m.add_channel(ChannelId(id as u64), rec);
    }
    for (code, server, uses, max_uses, expires_at, created_by) in raw.invites {
        let code = InviteCode::new(code).map_err(|e| corrupt("invites", e))?;
        m.invites.insert(
            code,
            InviteRec {
                server: ServerId(server as u64),
                created_by: user_from_blob("invites", created_by)?,
                uses: u32::try_from(uses).unwrap_or(u32::MAX),
                max_uses: max_uses.map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
                expires_at: expires_at.map(|v| v.max(0) as u64),
            },
        );
    }
    for (server, user) in raw.bans {
        m.bans
            .entry(ServerId(server as u64))
            .or_default()
            .insert(user_from_blob("bans", user)?);
    }
    for (a, b, at) in raw.declines {
        m.declined.insert(
            (
                user_from_blob("friend_declines", a)?,
                user_from_blob("friend_declines", b)?,
            ),
            at.max(0) as u64,
        );
    }
    let mut fixes = HandleFixes::default();
    for (user, stored, stored_key) in raw.handles {
        let user = user_from_blob("handles", user)?;
        let handle = match Handle::new(stored.clone()) {
            Ok(h) if h.as_str() == stored && m.handle_owner(&h).is_none() => h,
            other => {
                tracing::warn!(handle = ?stored, result = ?other.map(|h| h.to_string()), "a stored handle breaks the current rules or collides; dropping it");
                fixes.drop.push(user);
                continue;
            }
        };
        if handle.key() != stored_key {
            fixes.rekey.push((user, handle.key()));
        }
        m.set_handle(user, Some(handle));
    }
    Ok((m, fixes))
}

#[cfg(test)]
mod location_tests {
    use super::*;

    #[test]
    fn store_locations_parse_and_never_show_a_password() {
        let dir = Path::new("/data");
        assert_eq!(
            Location::parse(None, dir).unwrap(),
            Location::SqliteIn(dir.into())
        );
        assert_eq!(
            Location::parse(Some("sqlite"), dir).unwrap(),
            Location::SqliteIn(dir.into())
        );
        let pg = Location::parse(Some("postgres://hum:s3cret@db.example:5433/hum"), dir).unwrap();
        assert_eq!(pg.to_string(), "postgres://hum:***@db.example:5433/hum");
        let sock = Location::parse(Some("postgresql:///hum?host=/run/postgresql"), dir).unwrap();
        assert_eq!(sock.to_string(), "postgresql:///hum?host=/run/postgresql");
        assert_eq!(
            redact("postgresql:///hum?user=a&password=pw&host=/x"),
            "postgresql:///hum?user=a&password=***&host=/x"
        );
        for bad in ["mysql://x", "/var/lib/hum", "postgres://h:notaport/db"] {
            match Location::parse(Some(bad), dir) {
                Err(StoreError::BadLocation(msg)) => assert!(!msg.contains("s3cret"), "{msg}"),
                other => panic!("{bad}: expected BadLocation, got {other:?}"),
            }
        }
        match Location::parse(Some("postgres://u:s3cret@h:notaport/db"), dir) {
            Err(StoreError::BadLocation(msg)) => assert!(!msg.contains("s3cret"), "{msg}"),
            other => panic!("expected BadLocation, got {other:?}"),
        }
    }
}
