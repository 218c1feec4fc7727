//! Throwaway PostgreSQL and Redis servers for tests: the store suite (`store/suite.rs`), the
//! cluster membership tests (`cluster.rs`) and end-to-end tests of `hum-relay --store
//! postgres://...` (tests/tests/relay_postgres.rs).
//!
//! Each is a small shell script that makes a temporary directory, starts the server listening
//! on a Unix socket in that directory only (no TCP port, so parallel test binaries never
//! collide), prints `ready DIR`, then waits on its standard input. When the test process ends,
//! however it ends (even `kill -9`), that pipe closes and the script stops the server and
//! deletes the directory. One server per test process ([`TempPostgres::shared`],
//! [`TempRedis::shared`]), started on first use.
//!
//! PostgreSQL: Debian's `postgresql` package gives `initdb` and `pg_ctl` in
//! /usr/lib/postgresql/VERSION/bin. It refuses to run as root, so under root (CI) its script runs
//! as the `postgres` user the package creates (or `nobody`). Redis: Debian's `redis-server`.
//! `scripts/setup --test` installs both. When one is missing its tests fail loudly, naming the
//! fix: CI installs them, so a skip would only hide a broken setup.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

/// A running throwaway PostgreSQL server.
#[derive(Debug)]
pub struct TempPostgres {
    service: Service,
    next_db: AtomicU32,
}

/// The script run (as a non-root user) to own the server's lifetime. `$1`: the bin directory.
const SCRIPT: &str = r#"
set -u
BIN="$1"
D="$(mktemp -d "${TMPDIR:-/tmp}/hum-pg.XXXXXX")" || exit 1
trap 'rm -rf "$D"' EXIT
if ! "$BIN/initdb" -D "$D/data" -U hum -A trust -E UTF8 --no-locale --no-sync >"$D/initdb.log" 2>&1; then
  cat "$D/initdb.log" >&2; exit 1
fi
if ! "$BIN/pg_ctl" -D "$D/data" -w -t 60 -l "$D/server.log" \
    -o "-k $D -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start >/dev/null 2>"$D/pg_ctl.err"; then
  cat "$D/pg_ctl.err" "$D/server.log" >&2; exit 1
fi
echo "ready $D"
exec 2>/dev/null
read -r _ || true
"$BIN/pg_ctl" -D "$D/data" -m immediate -w stop >/dev/null 2>&1 || true
"#;

/// The directory with `initdb` and `pg_ctl`: `$HUM_PG_BINDIR`, else the newest
/// /usr/lib/postgresql/*/bin (Debian), else wherever `PATH` has `initdb`.
pub fn find_bindir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("HUM_PG_BINDIR") {
        return Some(PathBuf::from(d));
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Some(bin);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

/// (uid, gid) of the first of `names` in /etc/passwd.
fn system_user(names: &[&str]) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    names.iter().find_map(|want| {
        passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || f[0] != *want {
                return None;
            }
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        })
    })
}

fn running_as_root() -> bool {
    // No libc here: /proc/self/status has "Uid: real effective saved fs".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|u| u.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// A script's process, its `ready DIR` directory and the pipe whose closing stops it.
#[derive(Debug)]
struct Service {
    dir: PathBuf,
    /// Closing it (at drop or process exit) stops the server and deletes its files.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

/// Run `script` with `args` (as `postgres`/`nobody` when `drop_root` and we are root) and wait
/// for its `ready DIR` line.
fn start_service(
    what: &str,
    script: &str,
    args: &[&std::ffi::OsStr],
    drop_root: bool,
) -> Result<Service, String> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .arg(format!("hum-temp-{what}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if drop_root && running_as_root() {
        use std::os::unix::process::CommandExt;
        let (uid, gid) = system_user(&["postgres", "nobody"]).ok_or(format!(
            "running as root and no `postgres` or `nobody` user to run {what} as"
        ))?;
        cmd.uid(uid).gid(gid).env_remove("HOME");
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting sh for {what}: {e}"))?;
    let stdin = child.stdin.take().ok_or("no stdin pipe")?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("reading from the {what} script: {e}"))?;
    let Some(dir) = line.trim_end().strip_prefix("ready ") else {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = child.wait();
        return Err(format!("{what} did not start:\n{err}"));
    };
    Ok(Service {
        dir: PathBuf::from(dir),
        _stdin: Mutex::new(stdin),
        _child: Mutex::new(child),
    })
}

impl TempPostgres {
    /// Start a server (a few seconds: initdb). Errors say what is missing.
    pub fn start() -> Result<TempPostgres, String> {
        let bin = find_bindir().ok_or(
            "PostgreSQL is not installed (no initdb in /usr/lib/postgresql/*/bin or PATH): \
             run `bash scripts/setup --test` (Debian package `postgresql`), or set HUM_PG_BINDIR",
        )?;
        let service = start_service(
            &format!("PostgreSQL ({})", bin.display()),
            SCRIPT,
            &[bin.as_os_str()],
            true,
        )?;
        Ok(TempPostgres {
            service,
            next_db: AtomicU32::new(0),
        })
    }

    /// One server per test process, started on first use. Panics (the test fails) when
    /// PostgreSQL cannot start, with the reason.
    pub fn shared() -> &'static TempPostgres {
        static SHARED: OnceLock<Result<TempPostgres, String>> = OnceLock::new();
        match SHARED.get_or_init(TempPostgres::start) {
            Ok(pg) => pg,
            Err(e) => panic!("the PostgreSQL tests need a PostgreSQL server: {e}"),
        }
    }

    /// The directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.service.dir
    }

    /// A URL for database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql:///{db}?host={}&user=hum",
            self.service.dir.display()
        )
    }

    /// Create a new, empty database and return its URL.
    pub fn create_database(&self) -> Result<String, String> {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let db = format!("hum_test_{}_{n}", std::process::id());
        // Its own thread: the client blocks on a runtime of its own, which tokio forbids inside
        // a runtime (an async test calling this).
        let admin = self.url("postgres");
        let sql = format!("CREATE DATABASE {db}");
        std::thread::spawn(move || -> Result<(), String> {
            let mut c = ::postgres::Client::connect(&admin, ::postgres::NoTls)
                .map_err(|e| format!("connecting to the test PostgreSQL: {e}"))?;
            c.batch_execute(&sql).map_err(|e| format!("{sql}: {e}"))
        })
        .join()
        .map_err(|_| "the thread creating a test database panicked".to_string())??;
        Ok(self.url(&db))
    }
}

/// The script that owns a throwaway Redis's lifetime. `$1`: the redis-server binary.
const REDIS_SCRIPT: &str = r#"
set -u
D="$(mktemp -d "${TMPDIR:-/tmp}/hum-redis.XXXXXX")" || exit 1
trap 'rm -rf "$D"' EXIT
"$1" --port 0 --unixsocket "$D/redis.sock" --unixsocketperm 700 --save '' --appendonly no \
  --dir "$D" --logfile "$D/redis.log" --daemonize no &
pid=$!
i=0
until redis-cli -s "$D/redis.sock" ping >/dev/null 2>&1; do
  i=$((i + 1))
  if [ "$i" -gt 600 ] || ! kill -0 "$pid" 2>/dev/null; then cat "$D/redis.log" >&2; exit 1; fi
  sleep 0.05
done
echo "ready $D"
exec 2>/dev/null
read -r _ || true
kill "$pid"; wait "$pid"
"#;

/// A running throwaway Redis (Debian `redis-server`), on a Unix socket, nothing persisted.
#[derive(Debug)]
pub struct TempRedis {
    service: Service,
}

impl TempRedis {
    /// Start a server (`$HUM_REDIS_SERVER`, else `redis-server` from PATH).
    pub fn start() -> Result<TempRedis, String> {
        let bin = std::env::var_os("HUM_REDIS_SERVER")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::split_paths(&std::env::var_os("PATH")?)
                    .map(|d| d.join("redis-server"))
                    .find(|p| p.is_file())
            })
            .ok_or(
                "Redis is not installed (no redis-server in PATH): run `bash scripts/setup --test` \
                 (Debian package `redis-server`), or set HUM_REDIS_SERVER",
            )?;
        let service = start_service("Redis", REDIS_SCRIPT, &[bin.as_os_str()], false)?;
        Ok(TempRedis { service })
    }

    /// One server per test process, started on first use. Panics (the test fails) when Redis
    /// cannot start, with the reason.
    pub fn shared() -> &'static TempRedis {
        static SHARED: OnceLock<Result<TempRedis, String>> = OnceLock::new();
        match SHARED.get_or_init(TempRedis::start) {
            Ok(r) => r,
            Err(e) => panic!("the Redis tests need a Redis server: {e}"),
        }
    }

    /// Its URL (`redis+unix:///...`).
    pub fn url(&self) -> String {
        format!(
            "redis+unix://{}",
            self.service.dir.join("redis.sock").display()
        )
    }
}
