//! Persistence: SQLite with numbered migrations.
//!
//! The relay keeps its whole persistent model in memory ([`crate::model::Model`]) and writes
//! through to SQLite on every change, so reads never touch the disk. The store is owned by the
//! hub thread, which is the only writer; nothing here runs on the async reactor.
//!
//! Migrations are a list of SQL scripts; `schema_migrations` records which have run. A database
//! written by a newer relay (a version we do not know) is refused rather than guessed at.

use std::path::Path;

use hum_proto::signal::{ChannelPermissions, DisplayName, Handle, Name, Role};
use hum_proto::{ChannelId, InviteCode, ServerId, UserId};
use rusqlite::{Connection, OptionalExtension, params};

use crate::model::{ChannelRec, InviteRec, Model, ServerRec, UserRec};

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
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Schema migrations, applied in order; index + 1 is the version.
const MIGRATIONS: &[&str] = &[
    // 1: accounts, friendships, servers, members, channels, invites.
    r#"
    CREATE TABLE users (
        id BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 32),
        display_name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_login INTEGER NOT NULL
    );
    CREATE TABLE friend_requests (
        from_user BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        to_user BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (from_user, to_user)
    );
    -- One row per friendship, with user_a < user_b.
    CREATE TABLE friendships (
        user_a BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        user_b BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        since INTEGER NOT NULL,
        PRIMARY KEY (user_a, user_b),
        CHECK (user_a < user_b)
    );
    CREATE TABLE servers (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        owner BLOB NOT NULL REFERENCES users(id),
        created_at INTEGER NOT NULL
    );
    CREATE TABLE members (
        server INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
        user BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
        joined_at INTEGER NOT NULL,
        PRIMARY KEY (server, user)
    );
    CREATE INDEX members_by_user ON members(user);
    CREATE TABLE channels (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        server INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        max_participants INTEGER NOT NULL,
        permissions TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX channels_by_server ON channels(server);
    CREATE TABLE invites (
        code TEXT PRIMARY KEY NOT NULL,
        server INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
        created_by BLOB NOT NULL REFERENCES users(id),
        uses INTEGER NOT NULL DEFAULT 0,
        max_uses INTEGER,
        expires_at INTEGER,
        created_at INTEGER NOT NULL
    );
    "#,
    // 2: bans (a kicked and banned user cannot rejoin until unbanned) and declined friend
    // requests (the cooldown before asking again). Banned users need not have an account yet.
    r#"
    CREATE TABLE bans (
        server INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
        user BLOB NOT NULL CHECK (length(user) = 32),
        banned_by BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (server, user)
    );
    CREATE TABLE friend_declines (
        from_user BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        to_user BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        declined_at INTEGER NOT NULL,
        PRIMARY KEY (from_user, to_user)
    );
    "#,
    // 3: handles (`@ada`): one per user, unique by key (lower case + UTS #39 skeleton, computed
    // by hum_proto::names::handle_key; recomputed at load in case the rules change).
    r#"
    CREATE TABLE handles (
        user BLOB PRIMARY KEY NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        handle TEXT NOT NULL,
        handle_key TEXT NOT NULL UNIQUE,
        set_at INTEGER NOT NULL
    );
    "#,
];

/// The SQLite database behind the relay.
pub struct Store {
    conn: Connection,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn role_to_str(r: Role) -> &'static str {
    r.as_str()
}

fn role_from_str(s: &str) -> Option<Role> {
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

fn corrupt(table: &'static str, what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        table,
        what: what.to_string(),
    }
}

impl Store {
    /// Open (creating if needed) `relay.sqlite3` in `dir` and bring it to the latest schema.
    pub fn open_dir(dir: &Path) -> Result<Store> {
        let conn = Connection::open(dir.join("relay.sqlite3"))?;
        // WAL: readers never block the writer, commits are cheap; NORMAL sync survives a process
        // kill (only an OS crash can lose the last transactions).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Self::init(conn)
    }

    /// A private in-memory database (tests).
    pub fn open_in_memory() -> Result<Store> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Store> {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = Store { conn };
        store.migrate()?;
        Ok(store)
    }

    /// The schema version the database is at.
    /// Make every later write fail, as a full disk or a read-only file would: for tests of the
    /// hub's rollback paths.
    #[cfg(test)]
    pub(crate) fn refuse_writes(&self) -> Result<()> {
        self.conn.pragma_update(None, "query_only", "ON")?;
        Ok(())
    }

    pub fn schema_version(&self) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )?)
    }

    fn migrate(&mut self) -> Result<()> {
        self.conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY NOT NULL,
                applied_at INTEGER NOT NULL
            );",
        )?;
        let current = self.schema_version()?;
        let known = MIGRATIONS.len() as i64;
        if current > known {
            return Err(StoreError::TooNew {
                found: current,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let version = i as i64 + 1;
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, strftime('%s','now'))",
                params![version],
            )?;
            tx.commit()?;
            tracing::info!(version, "applied database migration");
        }
        Ok(())
    }

    /// Read everything into memory (at startup).
    pub fn load(&self) -> Result<Model> {
        let mut m = Model::default();
        {
            let mut st = self.conn.prepare("SELECT id, display_name FROM users")?;
            let rows = st.query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
            })?;
            for row in rows {
                let (id, name) = row?;
                let id = user_from_blob("users", id)?;
                let name = stored_name(&name, DisplayName::repaired, || {
                    DisplayName::new(format!("user-{}", &id.to_hex()[..8]))
                })
                .map_err(|e| corrupt("users", e))?;
                m.users.insert(id, UserRec { display_name: name });
            }
        }
        {
            let mut st = self
                .conn
                .prepare("SELECT user_a, user_b FROM friendships")?;
            let rows = st.query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?;
            for row in rows {
                let (a, b) = row?;
                m.add_friendship(
                    user_from_blob("friendships", a)?,
                    user_from_blob("friendships", b)?,
                );
            }
        }
        {
            let mut st = self
                .conn
                .prepare("SELECT from_user, to_user FROM friend_requests")?;
            let rows = st.query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?;
            for row in rows {
                let (a, b) = row?;
                m.add_request(
                    user_from_blob("friend_requests", a)?,
                    user_from_blob("friend_requests", b)?,
                );
            }
        }
        {
            let mut st = self.conn.prepare("SELECT id, name, owner FROM servers")?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })?;
            for row in rows {
                let (id, name, owner) = row?;
                let name = stored_name(&name, Name::repaired, || Name::new(format!("server {id}")))
                    .map_err(|e| corrupt("servers", e))?;
                let owner = user_from_blob("servers", owner)?;
                m.servers
                    .insert(ServerId(id as u64), ServerRec::new(name, owner));
            }
        }
        {
            let mut st = self
                .conn
                .prepare("SELECT server, user, role FROM members")?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            for row in rows {
                let (server, user, role) = row?;
                let user = user_from_blob("members", user)?;
                let role = role_from_str(&role).ok_or_else(|| corrupt("members", role))?;
                m.add_member(ServerId(server as u64), user, role);
            }
        }
        {
            let mut st = self.conn.prepare(
                "SELECT id, server, name, max_participants, permissions FROM channels ORDER BY id",
            )?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })?;
            for row in rows {
                let (id, server, name, max, perms) = row?;
                let name =
                    stored_name(&name, Name::repaired, || Name::new(format!("channel {id}")))
                        .map_err(|e| corrupt("channels", e))?;
                let permissions: ChannelPermissions =
                    serde_json::from_str(&perms).map_err(|e| corrupt("channels", e))?;
                let rec = ChannelRec {
                    server: ServerId(server as u64),
                    name,
                    max_participants: u32::try_from(max).unwrap_or(u32::MAX),
                    permissions,
                    roster: Vec::new(),
                };
                m.add_channel(ChannelId(id as u64), rec);
            }
        }
        {
            let mut st = self.conn.prepare(
                "SELECT code, server, uses, max_uses, expires_at, created_by FROM invites",
            )?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                ))
            })?;
            for row in rows {
                let (code, server, uses, max_uses, expires_at, created_by) = row?;
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
        }
        {
            let mut st = self.conn.prepare("SELECT server, user FROM bans")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
            for row in rows {
                let (server, user) = row?;
                m.bans
                    .entry(ServerId(server as u64))
                    .or_default()
                    .insert(user_from_blob("bans", user)?);
            }
        }
        {
            let mut st = self
                .conn
                .prepare("SELECT from_user, to_user, declined_at FROM friend_declines")?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (a, b, at) = row?;
                m.declined.insert(
                    (
                        user_from_blob("friend_declines", a)?,
                        user_from_blob("friend_declines", b)?,
                    ),
                    at.max(0) as u64,
                );
            }
        }
        self.load_handles(&mut m)?;
        Ok(m)
    }

    /// Handles into `m`. One that the current rules refuse, or whose key another (set earlier)
    /// already holds, is dropped with a warning rather than refusing to start; stored keys are
    /// brought up to date with [`hum_proto::names::handle_key`].
    fn load_handles(&self, m: &mut Model) -> Result<()> {
        let mut st = self
            .conn
            .prepare("SELECT user, handle, handle_key FROM handles ORDER BY set_at, user")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut drop = Vec::new();
        let mut rekey = Vec::new();
        for row in rows {
            let (user, stored, stored_key) = row?;
            let user = user_from_blob("handles", user)?;
            let handle = match Handle::new(stored.clone()) {
                Ok(h) if h.as_str() == stored && m.handle_owner(&h).is_none() => h,
                other => {
                    tracing::warn!(handle = ?stored, result = ?other.map(|h| h.to_string()), "a stored handle breaks the current rules or collides; dropping it");
                    drop.push(user);
                    continue;
                }
            };
            if handle.key() != stored_key {
                rekey.push((user, handle.key()));
            }
            m.set_handle(user, Some(handle));
        }
        for user in drop {
            self.conn
                .execute("DELETE FROM handles WHERE user = ?1", params![&user.0[..]])?;
        }
        for (user, key) in rekey {
            self.conn.execute(
                "UPDATE handles SET handle_key = ?2 WHERE user = ?1",
                params![&user.0[..], key],
            )?;
        }
        Ok(())
    }

    /// Give `user` the handle `h`, or none. The caller checked that nobody else holds its key;
    /// the UNIQUE constraint makes sure.
    pub fn set_handle(&self, user: &UserId, h: Option<&Handle>, now_secs: u64) -> Result<()> {
        match h {
            Some(h) => self.conn.execute(
                "INSERT INTO handles (user, handle, handle_key, set_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(user) DO UPDATE SET handle = excluded.handle,
                                                 handle_key = excluded.handle_key,
                                                 set_at = excluded.set_at",
                params![&user.0[..], h.as_str(), h.key(), now_secs as i64],
            )?,
            None => self
                .conn
                .execute("DELETE FROM handles WHERE user = ?1", params![&user.0[..]])?,
        };
        Ok(())
    }

    /// Ban `user` from `server` (removing the membership, if any, in the same transaction).
    pub fn ban(
        &mut self,
        server: ServerId,
        user: &UserId,
        by: &UserId,
        now_secs: u64,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM members WHERE server = ?1 AND user = ?2",
            params![server.get() as i64, &user.0[..]],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO bans (server, user, banned_by, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![server.get() as i64, &user.0[..], &by.0[..], now_secs as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn unban(&self, server: ServerId, user: &UserId) -> Result<()> {
        self.conn.execute(
            "DELETE FROM bans WHERE server = ?1 AND user = ?2",
            params![server.get() as i64, &user.0[..]],
        )?;
        Ok(())
    }

    /// `to` declined `from`'s friend request at `now_secs` (deletes the request too).
    pub fn decline_friend_request(
        &mut self,
        from: &UserId,
        to: &UserId,
        now_secs: u64,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM friend_requests WHERE from_user = ?1 AND to_user = ?2",
            params![&from.0[..], &to.0[..]],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO friend_declines (from_user, to_user, declined_at) VALUES (?1, ?2, ?3)",
            params![&from.0[..], &to.0[..], now_secs as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn forget_decline(&self, from: &UserId, to: &UserId) -> Result<()> {
        self.conn.execute(
            "DELETE FROM friend_declines WHERE from_user = ?1 AND to_user = ?2",
            params![&from.0[..], &to.0[..]],
        )?;
        Ok(())
    }

    pub fn upsert_user(&self, id: &UserId, name: &DisplayName, now_secs: u64) -> Result<()> {
        self.conn.execute(
            "INSERT INTO users (id, display_name, created_at, last_login) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT(id) DO UPDATE SET display_name = excluded.display_name,
                                           last_login = excluded.last_login",
            params![&id.0[..], name.as_str(), now_secs as i64],
        )?;
        Ok(())
    }

    pub fn set_display_name(&self, id: &UserId, name: &DisplayName) -> Result<()> {
        self.conn.execute(
            "UPDATE users SET display_name = ?2 WHERE id = ?1",
            params![&id.0[..], name.as_str()],
        )?;
        Ok(())
    }

    pub fn add_friend_request(&self, from: &UserId, to: &UserId, now_secs: u64) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO friend_requests (from_user, to_user, created_at) VALUES (?1, ?2, ?3)",
            params![&from.0[..], &to.0[..], now_secs as i64],
        )?;
        Ok(())
    }

    pub fn delete_friend_request(&self, from: &UserId, to: &UserId) -> Result<()> {
        self.conn.execute(
            "DELETE FROM friend_requests WHERE from_user = ?1 AND to_user = ?2",
            params![&from.0[..], &to.0[..]],
        )?;
        Ok(())
    }

    /// Make `a` and `b` friends, dropping any pending requests between them (one transaction).
    pub fn add_friendship(&mut self, a: &UserId, b: &UserId, now_secs: u64) -> Result<()> {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM friend_requests WHERE (from_user = ?1 AND to_user = ?2)
                                          OR (from_user = ?2 AND to_user = ?1)",
            params![&lo.0[..], &hi.0[..]],
        )?;
        tx.execute(
            "INSERT OR IGNORE INTO friendships (user_a, user_b, since) VALUES (?1, ?2, ?3)",
            params![&lo.0[..], &hi.0[..], now_secs as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn delete_friendship(&self, a: &UserId, b: &UserId) -> Result<()> {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        self.conn.execute(
            "DELETE FROM friendships WHERE user_a = ?1 AND user_b = ?2",
            params![&lo.0[..], &hi.0[..]],
        )?;
        Ok(())
    }

    /// Create a server with its owner as first member; returns the new id.
    pub fn create_server(
        &mut self,
        name: &Name,
        owner: &UserId,
        now_secs: u64,
    ) -> Result<ServerId> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO servers (name, owner, created_at) VALUES (?1, ?2, ?3)",
            params![name.as_str(), &owner.0[..], now_secs as i64],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO members (server, user, role, joined_at) VALUES (?1, ?2, 'owner', ?3)",
            params![id, &owner.0[..], now_secs as i64],
        )?;
        tx.commit()?;
        Ok(ServerId(id as u64))
    }

    pub fn rename_server(&self, id: ServerId, name: &Name) -> Result<()> {
        self.conn.execute(
            "UPDATE servers SET name = ?2 WHERE id = ?1",
            params![id.0 as i64, name.as_str()],
        )?;
        Ok(())
    }

    /// Delete a server; members, channels and invites go with it (ON DELETE CASCADE).
    pub fn delete_server(&self, id: ServerId) -> Result<()> {
        self.conn
            .execute("DELETE FROM servers WHERE id = ?1", params![id.0 as i64])?;
        Ok(())
    }

    pub fn add_member(
        &self,
        server: ServerId,
        user: &UserId,
        role: Role,
        now_secs: u64,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO members (server, user, role, joined_at) VALUES (?1, ?2, ?3, ?4)",
            params![server.0 as i64, &user.0[..], role_to_str(role), now_secs as i64],
        )?;
        Ok(())
    }

    pub fn set_role(&self, server: ServerId, user: &UserId, role: Role) -> Result<()> {
        self.conn.execute(
            "UPDATE members SET role = ?3 WHERE server = ?1 AND user = ?2",
            params![server.0 as i64, &user.0[..], role_to_str(role)],
        )?;
        Ok(())
    }

    pub fn remove_member(&self, server: ServerId, user: &UserId) -> Result<()> {
        self.conn.execute(
            "DELETE FROM members WHERE server = ?1 AND user = ?2",
            params![server.0 as i64, &user.0[..]],
        )?;
        Ok(())
    }

    pub fn create_channel(
        &self,
        server: ServerId,
        name: &Name,
        max_participants: u32,
        permissions: &ChannelPermissions,
        now_secs: u64,
    ) -> Result<ChannelId> {
        let perms = serde_json::to_string(permissions).map_err(|e| corrupt("channels", e))?;
        self.conn.execute(
            "INSERT INTO channels (server, name, max_participants, permissions, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                server.0 as i64,
                name.as_str(),
                max_participants as i64,
                perms,
                now_secs as i64
            ],
        )?;
        Ok(ChannelId(self.conn.last_insert_rowid() as u64))
    }

    pub fn update_channel(
        &self,
        id: ChannelId,
        name: &Name,
        max_participants: u32,
        permissions: &ChannelPermissions,
    ) -> Result<()> {
        let perms = serde_json::to_string(permissions).map_err(|e| corrupt("channels", e))?;
        self.conn.execute(
            "UPDATE channels SET name = ?2, max_participants = ?3, permissions = ?4 WHERE id = ?1",
            params![id.0 as i64, name.as_str(), max_participants as i64, perms],
        )?;
        Ok(())
    }

    pub fn delete_channel(&self, id: ChannelId) -> Result<()> {
        self.conn
            .execute("DELETE FROM channels WHERE id = ?1", params![id.0 as i64])?;
        Ok(())
    }

    pub fn create_invite(
        &self,
        code: &InviteCode,
        server: ServerId,
        created_by: &UserId,
        max_uses: Option<u32>,
        expires_at: Option<u64>,
        now_secs: u64,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO invites (code, server, created_by, uses, max_uses, expires_at, created_at)
             VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6)",
            params![
                code.as_str(),
                server.0 as i64,
                &created_by.0[..],
                max_uses.map(i64::from),
                expires_at.map(|v| v.min(i64::MAX as u64) as i64),
                now_secs as i64
            ],
        )?;
        Ok(())
    }

    /// Record a use of an invite and add the member, in one transaction.
    pub fn use_invite(
        &mut self,
        code: &InviteCode,
        server: ServerId,
        user: &UserId,
        now_secs: u64,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE invites SET uses = uses + 1 WHERE code = ?1",
            params![code.as_str()],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO members (server, user, role, joined_at) VALUES (?1, ?2, 'member', ?3)",
            params![server.0 as i64, &user.0[..], now_secs as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn delete_invite(&self, code: &InviteCode) -> Result<()> {
        self.conn.execute(
            "DELETE FROM invites WHERE code = ?1",
            params![code.as_str()],
        )?;
        Ok(())
    }

    /// True if a user row exists (tests and diagnostics).
    pub fn has_user(&self, id: &UserId) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM users WHERE id = ?1",
                params![&id.0[..]],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(b: u8) -> UserId {
        UserId([b; 32])
    }
    fn dn(s: &str) -> DisplayName {
        DisplayName::new(s).unwrap()
    }

    #[test]
    fn migrations_apply_once_and_data_reloads() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Store::open_dir(dir.path()).unwrap();
            assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
            s.upsert_user(&u(1), &dn("ada"), 10).unwrap();
            s.upsert_user(&u(2), &dn("bob"), 10).unwrap();
            s.upsert_user(&u(3), &dn("cy"), 10).unwrap();
            s.add_friendship(&u(2), &u(1), 11).unwrap();
            s.add_friend_request(&u(3), &u(1), 12).unwrap();
            let sid = s
                .create_server(&Name::new("club").unwrap(), &u(1), 13)
                .unwrap();
            s.add_member(sid, &u(2), Role::Admin, 14).unwrap();
            let perms = ChannelPermissions::default();
            let cid = s
                .create_channel(sid, &Name::new("lounge").unwrap(), 8, &perms, 15)
                .unwrap();
            let code = InviteCode::new("abcdef12").unwrap();
            s.create_invite(&code, sid, &u(1), Some(3), None, 16)
                .unwrap();
            s.use_invite(&code, sid, &u(3), 17).unwrap();
            assert!(cid.0 > 0);
        }
        let s = Store::open_dir(dir.path()).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let m = s.load().unwrap();
        assert_eq!(m.users.len(), 3);
        assert!(m.are_friends(&u(1), &u(2)));
        assert!(m.has_request(&u(3), &u(1)));
        let (sid, server) = m.servers.iter().next().unwrap();
        assert_eq!(server.owner, u(1));
        assert_eq!(server.members.get(&u(2)), Some(&Role::Admin));
        assert_eq!(server.members.get(&u(3)), Some(&Role::Member));
        assert_eq!(server.channels.len(), 1);
        let inv = m
            .invites
            .get(&InviteCode::new("abcdef12").unwrap())
            .unwrap();
        assert_eq!((inv.server, inv.uses, inv.max_uses), (*sid, 1, Some(3)));
    }

    #[test]
    fn friendship_replaces_requests_and_server_delete_cascades() {
        let mut s = Store::open_in_memory().unwrap();
        s.upsert_user(&u(1), &dn("a"), 1).unwrap();
        s.upsert_user(&u(2), &dn("b"), 1).unwrap();
        s.add_friend_request(&u(1), &u(2), 1).unwrap();
        s.add_friendship(&u(1), &u(2), 2).unwrap();
        let m = s.load().unwrap();
        assert!(!m.has_request(&u(1), &u(2)));
        assert!(m.are_friends(&u(2), &u(1)));
        let sid = s.create_server(&Name::new("x").unwrap(), &u(1), 3).unwrap();
        s.create_channel(
            sid,
            &Name::new("c").unwrap(),
            4,
            &ChannelPermissions::default(),
            3,
        )
        .unwrap();
        s.delete_server(sid).unwrap();
        let m = s.load().unwrap();
        assert!(m.servers.is_empty() && m.channels.is_empty());
    }

    #[test]
    fn handles_persist_unique_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let h = |s: &str| Handle::new(s).unwrap();
        {
            let s = Store::open_dir(dir.path()).unwrap();
            s.upsert_user(&u(1), &dn("ada"), 10).unwrap();
            s.upsert_user(&u(2), &dn("bob"), 10).unwrap();
            s.set_handle(&u(1), Some(&h("Ada")), 11).unwrap();
            // The database refuses a second holder of the same key whatever the caller checked.
            assert!(s.set_handle(&u(2), Some(&h("ADA")), 12).is_err());
            s.set_handle(&u(2), Some(&h("bob")), 12).unwrap();
            // A change replaces; giving up deletes.
            s.set_handle(&u(2), Some(&h("bobby")), 13).unwrap();
            s.set_handle(&u(1), None, 14).unwrap();
            s.set_handle(&u(1), Some(&h("ada_l")), 15).unwrap();
        }
        let s = Store::open_dir(dir.path()).unwrap();
        let m = s.load().unwrap();
        m.check().unwrap();
        assert_eq!(m.handles.get(&u(1)), Some(&h("ada_l")));
        assert_eq!(m.handles.get(&u(2)), Some(&h("bobby")));
        assert_eq!(m.handle_owner(&h("BOBBY")), Some(u(2)));
        assert_eq!(m.handle_owner(&h("bob")), None);
    }

    #[test]
    fn stored_handles_the_rules_refuse_are_dropped_at_load() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open_dir(dir.path()).unwrap();
            s.upsert_user(&u(1), &dn("ada"), 10).unwrap();
            s.upsert_user(&u(2), &dn("bob"), 10).unwrap();
            // Written by an imagined older relay: a refused handle, and a stale key.
            s.conn
                .execute(
                    "INSERT INTO handles VALUES (?1, 'ad a', 'ad a', 1), (?2, 'Bob', 'stale', 2)",
                    params![&u(1).0[..], &u(2).0[..]],
                )
                .unwrap();
        }
        let s = Store::open_dir(dir.path()).unwrap();
        let m = s.load().unwrap();
        m.check().unwrap();
        assert_eq!(m.handles.len(), 1);
        assert_eq!(m.handles.get(&u(2)).map(Handle::as_str), Some("Bob"));
        // The stale key was rewritten, so the database now refuses a look-alike as well.
        assert!(
            s.set_handle(&u(1), Some(&Handle::new("bob").unwrap()), 3)
                .is_err()
        );
    }

    #[test]
    fn a_newer_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open_dir(dir.path()).unwrap();
            s.conn
                .execute("INSERT INTO schema_migrations VALUES (999, 0)", [])
                .unwrap();
        }
        match Store::open_dir(dir.path()) {
            Err(StoreError::TooNew { found: 999, .. }) => {}
            other => panic!("expected TooNew, got {other:?}"),
        }
    }

    #[test]
    fn names_stored_before_the_stricter_rules_load_repaired() {
        let mut s = Store::open_in_memory().unwrap();
        s.upsert_user(&u(1), &dn("Ada"), 1).unwrap();
        s.upsert_user(&u(2), &dn("Bob"), 1).unwrap();
        let sid = s
            .create_server(&Name::new("club").unwrap(), &u(1), 2)
            .unwrap();
        // As an older relay would have stored them.
        s.conn
            .execute(
                "UPDATE users SET display_name = ?1 WHERE id = ?2",
                rusqlite::params!["\u{202E}Ada\u{200B}", u(1).as_bytes().to_vec()],
            )
            .unwrap();
        s.conn
            .execute(
                "UPDATE users SET display_name = ?1 WHERE id = ?2",
                rusqlite::params!["\u{200B}\u{FEFF}", u(2).as_bytes().to_vec()],
            )
            .unwrap();
        s.conn
            .execute(
                "UPDATE servers SET name = ?1 WHERE id = ?2",
                rusqlite::params!["\u{3164}", sid.get() as i64],
            )
            .unwrap();
        let m = s.load().unwrap();
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
}
