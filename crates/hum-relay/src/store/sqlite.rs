//! The SQLite store: embedded, the default (`relay.sqlite3` in `--data`).
//!
//! MIGRATIONS: only APPEND, never renumber or edit an existing one, and append the same step to
//! `postgres::MIGRATIONS` (see the module note in `store/mod.rs`).

use std::path::Path;

use hum_proto::signal::{ChannelPermissions, DisplayName, Handle, Name, Role};
use hum_proto::{ChannelId, InviteCode, ServerId, UserId};
use rusqlite::{Connection, OptionalExtension, params};

use super::{Kind, RawData, Result, StoreBackend, StoreError, corrupt};

/// Schema migrations, applied in order; index + 1 is the version.
pub(crate) const MIGRATIONS: &[&str] = &[
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
    // 4: a channel's mesh limit set by an admin (NULL: the relay's own), kept across restarts.
    r#"
    ALTER TABLE channels ADD COLUMN mesh_limit INTEGER;
    "#,
];

/// The SQLite database behind the relay.
pub struct SqliteStore {
    conn: Connection,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Open (creating if needed) `relay.sqlite3` in `dir` and bring it to the latest schema.
    pub fn open_dir(dir: &Path) -> Result<SqliteStore> {
        let conn = Connection::open(dir.join("relay.sqlite3"))?;
        // WAL: readers never block the writer, commits are cheap; NORMAL sync survives a process
        // kill (only an OS crash can lose the last transactions).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Self::init(conn)
    }

    /// A private in-memory database (tests).
    pub fn open_in_memory() -> Result<SqliteStore> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<SqliteStore> {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = SqliteStore { conn };
        store.migrate()?;
        Ok(store)
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

    /// Every row of one query, mapped.
    fn rows<T>(
        &self,
        sql: &str,
        f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut st = self.conn.prepare(sql)?;
        let rows = st.query_map([], f)?;
        Ok(rows.collect::<rusqlite::Result<Vec<T>>>()?)
    }
}

impl StoreBackend for SqliteStore {
    fn kind(&self) -> Kind {
        Kind::Sqlite
    }

    fn schema_version(&self) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )?)
    }

    fn read_all(&self) -> Result<RawData> {
        Ok(RawData {
            users: self.rows("SELECT id, display_name FROM users", |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?,
            friendships: self.rows("SELECT user_a, user_b FROM friendships", |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?,
            requests: self.rows("SELECT from_user, to_user FROM friend_requests", |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?,
            servers: self.rows("SELECT id, name, owner FROM servers", |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?,
            members: self.rows("SELECT server, user, role FROM members", |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?,
            channels: self.rows(
                "SELECT id, server, name, max_participants, permissions, mesh_limit
                 FROM channels ORDER BY id",
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )?,
            invites: self.rows(
                "SELECT code, server, uses, max_uses, expires_at, created_by FROM invites",
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )?,
            bans: self.rows("SELECT server, user FROM bans", |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?,
            declines: self.rows(
                "SELECT from_user, to_user, declined_at FROM friend_declines",
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?,
            handles: self.rows(
                "SELECT user, handle, handle_key FROM handles ORDER BY set_at, user",
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?,
        })
    }

    fn drop_handle(&self, user: &UserId) -> Result<()> {
        self.conn
            .execute("DELETE FROM handles WHERE user = ?1", params![&user.0[..]])?;
        Ok(())
    }

    fn rekey_handle(&self, user: &UserId, key: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE handles SET handle_key = ?2 WHERE user = ?1",
            params![&user.0[..], key],
        )?;
        Ok(())
    }

    fn set_handle(&self, user: &UserId, h: Option<&Handle>, now_secs: u64) -> Result<()> {
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

    fn ban(&mut self, server: ServerId, user: &UserId, by: &UserId, now_secs: u64) -> Result<()> {
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

    fn unban(&self, server: ServerId, user: &UserId) -> Result<()> {
        self.conn.execute(
            "DELETE FROM bans WHERE server = ?1 AND user = ?2",
            params![server.get() as i64, &user.0[..]],
        )?;
        Ok(())
    }

    fn decline_friend_request(&mut self, from: &UserId, to: &UserId, now_secs: u64) -> Result<()> {
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

    fn forget_decline(&self, from: &UserId, to: &UserId) -> Result<()> {
        self.conn.execute(
            "DELETE FROM friend_declines WHERE from_user = ?1 AND to_user = ?2",
            params![&from.0[..], &to.0[..]],
        )?;
        Ok(())
    }

    fn upsert_user(&self, id: &UserId, name: &DisplayName, now_secs: u64) -> Result<()> {
        // Every login writes this: the statement is parsed once per connection (cached).
        self.conn
            .prepare_cached(
                "INSERT INTO users (id, display_name, created_at, last_login) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT(id) DO UPDATE SET display_name = excluded.display_name,
                                               last_login = excluded.last_login",
            )?
            .execute(params![&id.0[..], name.as_str(), now_secs as i64])?;
        Ok(())
    }

    fn set_display_name(&self, id: &UserId, name: &DisplayName) -> Result<()> {
        self.conn.execute(
            "UPDATE users SET display_name = ?2 WHERE id = ?1",
            params![&id.0[..], name.as_str()],
        )?;
        Ok(())
    }

    fn add_friend_request(&self, from: &UserId, to: &UserId, now_secs: u64) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO friend_requests (from_user, to_user, created_at) VALUES (?1, ?2, ?3)",
            params![&from.0[..], &to.0[..], now_secs as i64],
        )?;
        Ok(())
    }

    fn delete_friend_request(&self, from: &UserId, to: &UserId) -> Result<()> {
        self.conn.execute(
            "DELETE FROM friend_requests WHERE from_user = ?1 AND to_user = ?2",
            params![&from.0[..], &to.0[..]],
        )?;
        Ok(())
    }

    fn add_friendship(&mut self, a: &UserId, b: &UserId, now_secs: u64) -> Result<()> {
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

    fn delete_friendship(&self, a: &UserId, b: &UserId) -> Result<()> {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        self.conn.execute(
            "DELETE FROM friendships WHERE user_a = ?1 AND user_b = ?2",
            params![&lo.0[..], &hi.0[..]],
        )?;
        Ok(())
    }

    fn create_server(&mut self, name: &Name, owner: &UserId, now_secs: u64) -> Result<ServerId> {
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

    fn rename_server(&self, id: ServerId, name: &Name) -> Result<()> {
        self.conn.execute(
            "UPDATE servers SET name = ?2 WHERE id = ?1",
            params![id.0 as i64, name.as_str()],
        )?;
        Ok(())
    }

    fn delete_server(&self, id: ServerId) -> Result<()> {
        self.conn
            .execute("DELETE FROM servers WHERE id = ?1", params![id.0 as i64])?;
        Ok(())
    }

    fn add_member(&self, server: ServerId, user: &UserId, role: Role, now_secs: u64) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO members (server, user, role, joined_at) VALUES (?1, ?2, ?3, ?4)",
            params![server.0 as i64, &user.0[..], role.as_str(), now_secs as i64],
        )?;
        Ok(())
    }

    fn set_role(&self, server: ServerId, user: &UserId, role: Role) -> Result<()> {
        self.conn.execute(
            "UPDATE members SET role = ?3 WHERE server = ?1 AND user = ?2",
            params![server.0 as i64, &user.0[..], role.as_str()],
        )?;
        Ok(())
    }

    fn remove_member(&self, server: ServerId, user: &UserId) -> Result<()> {
        self.conn.execute(
            "DELETE FROM members WHERE server = ?1 AND user = ?2",
            params![server.0 as i64, &user.0[..]],
        )?;
        Ok(())
    }

    fn create_channel(
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

    fn update_channel(
        &self,
        id: ChannelId,
        name: &Name,
        max_participants: u32,
        permissions: &ChannelPermissions,
        mesh_limit: Option<u32>,
    ) -> Result<()> {
        let perms = serde_json::to_string(permissions).map_err(|e| corrupt("channels", e))?;
        self.conn.execute(
            "UPDATE channels SET name = ?2, max_participants = ?3, permissions = ?4, mesh_limit = ?5
             WHERE id = ?1",
            params![
                id.0 as i64,
                name.as_str(),
                max_participants as i64,
                perms,
                mesh_limit.map(i64::from)
            ],
        )?;
        Ok(())
    }

    fn delete_channel(&self, id: ChannelId) -> Result<()> {
        self.conn
            .execute("DELETE FROM channels WHERE id = ?1", params![id.0 as i64])?;
        Ok(())
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

    fn use_invite(
        &mut self,
        code: &InviteCode,
        server: ServerId,
        user: &UserId,
        now_secs: u64,
    ) -> Result<()> {
        // Every invite join writes this: statements parsed once per connection (cached), both
        // in one transaction (one commit).
        let tx = self.conn.transaction()?;
        tx.prepare_cached("UPDATE invites SET uses = uses + 1 WHERE code = ?1")?
            .execute(params![code.as_str()])?;
        tx.prepare_cached(
            "INSERT OR REPLACE INTO members (server, user, role, joined_at) VALUES (?1, ?2, 'member', ?3)",
        )?
        .execute(params![server.0 as i64, &user.0[..], now_secs as i64])?;
        tx.commit()?;
        Ok(())
    }

    fn delete_invite(&self, code: &InviteCode) -> Result<()> {
        self.conn.execute(
            "DELETE FROM invites WHERE code = ?1",
            params![code.as_str()],
        )?;
        Ok(())
    }

    fn has_user(&self, id: &UserId) -> Result<bool> {
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

    #[cfg(test)]
    fn refuse_writes(&self) -> Result<()> {
        self.conn.pragma_update(None, "query_only", "ON")?;
        Ok(())
    }

    #[cfg(test)]
    fn execute_raw(&self, sql: &str) -> Result<()> {
        self.conn.execute_batch(sql)?;
        Ok(())
    }
}
