//! The relay cluster's Redis side (docs/cluster.md): node membership with liveness, and the
//! ordered log the nodes' hubs share ([`Log`]; the ordering rules are in [`crate::bus`]).
//!
//! Each node writes its [`NodeInfo`] to `hum:CLUSTER:node:ID` with a time to live
//! ([`Membership::announce`]) and refreshes it well within that time; a node whose key expired
//! is dead. Redis's own expiry is the clock, so nodes need no clock agreement, and a dead node
//! disappears without anyone having to notice its death. [`Membership::live_nodes`] lists the
//! live ones; [`Watcher`] turns Redis keyspace notifications into [`Change`]s (a node came up,
//! left cleanly, or expired) as they happen, so the others can drop a dead node's presence at
//! once instead of polling.
//!
//! The sync client of redis-rs: like the PostgreSQL store, this runs on plain threads (a
//! heartbeat thread, a watcher thread), never on a tokio task.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Duration;

use hum_proto::cluster::{NodeId, NodeInfo, is_label};
use redis::Commands;

/// A failure talking to the cluster's Redis.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0:?} is not a cluster name (1-64 of a-z, 0-9 and '-', not starting with '-')")]
    BadCluster(String),
    #[error(
        "this Redis does not allow enabling keyspace notifications (CONFIG SET notify-keyspace-events): {0}; set notify-keyspace-events to include K, g, $ and x in its configuration"
    )]
    Notifications(redis::RedisError),
    #[error(
        "this cluster is running with live state; a node cannot join it yet (docs/cluster.md): stop every node, then start them together"
    )]
    Running,
    #[error("the cluster's RNG seed in Redis is not 64 hex digits")]
    BadSeed,
}

pub type Result<T> = std::result::Result<T, ClusterError>;

/// The key prefix of a cluster's node keys.
fn node_prefix(cluster: &str) -> Result<String> {
    if !is_label(cluster) {
        return Err(ClusterError::BadCluster(cluster.to_string()));
    }
    Ok(format!("hum:{cluster}:node:"))
}

/// One node's view of the membership: announce itself, leave, list the live nodes.
pub struct Membership {
    conn: redis::Connection,
    prefix: String,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// Connect to Redis at `url` (`redis://HOST:PORT`, `redis+unix:///PATH`) for `cluster`.
    pub fn connect(url: &str, cluster: &str) -> Result<Membership> {
        let prefix = node_prefix(cluster)?;
        let conn = redis::Client::open(url)?.get_connection()?;
        Ok(Membership { conn, prefix })
    }

    fn key(&self, id: &NodeId) -> String {
        format!("{}{id}", self.prefix)
    }

    /// Announce (or refresh) `me`, alive for `ttl` from now. Call it every `ttl / 3` or so.
    pub fn announce(&mut self, me: &NodeInfo, ttl: Duration) -> Result<()> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let key = self.key(&me.id);
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(me.encode())
            .arg("PX")
            .arg(ms)
            .query(&mut self.conn)?;
        Ok(())
    }

    /// Leave the cluster now (a clean shutdown), rather than when the key expires.
    pub fn leave(&mut self, id: &NodeId) -> Result<()> {
        let key = self.key(id);
        let _: usize = self.conn.del(key)?;
        Ok(())
    }

    /// Every live node, by id. A key whose value does not decode (another program, a newer
    /// node's incompatible format) is skipped with a warning.
    pub fn live_nodes(&mut self) -> Result<BTreeMap<NodeId, NodeInfo>> {
        let pattern = format!("{}*", self.prefix);
        let keys = self
            .conn
            .scan_match::<_, String>(&pattern)?
            .collect::<redis::RedisResult<Vec<String>>>()?;
        let mut nodes = BTreeMap::new();
        if keys.is_empty() {
            return Ok(nodes);
        }
        // A key may expire between SCAN and MGET: its value is then nil.
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&keys).query(&mut self.conn)?;
        for (key, value) in keys.iter().zip(values) {
            let Some(value) = value else { continue };
            match NodeInfo::decode(&value) {
                Ok(info) if key.strip_prefix(&self.prefix) == Some(info.id.as_str()) => {
                    nodes.insert(info.id.clone(), info);
                }
                Ok(info) => {
                    tracing::warn!(%key, id = %info.id, "a node key holds another node's info; skipped")
                }
                Err(e) => tracing::warn!(%key, error = %e, "an undecodable node key; skipped"),
            }
        }
        Ok(nodes)
    }
}

/// The key of a cluster's log (a Redis stream).
fn log_key(cluster: &str) -> Result<String> {
    if !is_label(cluster) {
        return Err(ClusterError::BadCluster(cluster.to_string()));
    }
    Ok(format!("hum:{cluster}:log"))
}

/// How this node joined: its number (the top bits of its connection ids, never reused within
/// a cluster) and the seed every node's hub RNG starts from (invite codes, tickets).
#[derive(Clone, Debug)]
pub struct Joined {
    pub number: u64,
    pub seed: [u8; 32],
}

/// Join `cluster` as node `id`: take a node number, and either start a fresh log (no other
/// node is live: a cluster (re)start) or join one that holds nothing but ticks. A running
/// cluster with state is refused: a new node would need the others' live state, which is not
/// transferred yet (docs/cluster.md).
pub fn join(url: &str, cluster: &str, id: &NodeId) -> Result<Joined> {
    let log = log_key(cluster)?;
    let mut members = Membership::connect(url, cluster)?;
    let others = members.live_nodes()?.into_keys().any(|n| n != *id);
    let conn = &mut members.conn;
    let number: u64 = conn.incr(format!("hum:{cluster}:node-numbers"), 1)?;
    let _: () = conn.hset(format!("hum:{cluster}:node-number"), id.as_str(), number)?;
    let seed_key = format!("hum:{cluster}:seed");
    let fresh: [u8; 32] = rand::random();
    if others {
        // Only ticks and death marks may be in the log: they change no state.
        let records: Vec<StreamRecord> = read_range(conn, &log, 10_000)?;
        let stateful = records.iter().any(|(_, fields)| {
            fields.iter().any(|(_, v)| {
                !matches!(
                    crate::bus::Record::decode(v),
                    Ok(crate::bus::Record::Results(_))
                        | Ok(crate::bus::Record::Entry(crate::bus::Entry {
                            input: crate::bus::Input::Tick | crate::bus::Input::NodeDown { .. },
                            ..
                        }))
                )
            })
        });
        if stateful {
            return Err(ClusterError::Running);
        }
        let _: bool = redis::cmd("SET")
            .arg(&seed_key)
            .arg(hex::encode(fresh))
            .arg("NX")
            .query(conn)
            .map(|v: Option<String>| v.is_some())?;
    } else {
        let _: usize = conn.del(&log)?;
        let _: () = conn.set(&seed_key, hex::encode(fresh))?;
    }
    let seed_hex: String = conn.get(&seed_key)?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(seed_hex.trim(), &mut seed).map_err(|_| ClusterError::BadSeed)?;
    Ok(Joined { number, seed })
}

/// The node number `id` took when it joined (`None`: never joined, or the key is gone).
pub fn node_number(
    conn: &mut redis::Connection,
    cluster: &str,
    id: &NodeId,
) -> Result<Option<u64>> {
    Ok(conn.hget(format!("hum:{cluster}:node-number"), id.as_str())?)
}

/// A stream record: its id and its (field, value) pairs.
type StreamRecord = (String, Vec<(String, Vec<u8>)>);

/// Up to `count` records from the start of stream `key`: (id, [(field, value)]).
fn read_range(conn: &mut redis::Connection, key: &str, count: usize) -> Result<Vec<StreamRecord>> {
    let v: redis::Value = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query(conn)?;
    Ok(stream_records(v))
}

/// Parse a list of stream records `[[id, [field, value, ...]], ...]`; anything else is empty.
fn stream_records(v: redis::Value) -> Vec<StreamRecord> {
    use redis::Value;
    fn text(v: Value) -> Option<Vec<u8>> {
        match v {
            Value::BulkString(b) => Some(b),
            Value::SimpleString(s) => Some(s.into_bytes()),
            _ => None,
        }
    }
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut pair) = item else {
                return None;
            };
            if pair.len() != 2 {
                return None;
            }
            let fields = pair.pop()?;
            let id = String::from_utf8(text(pair.pop()?)?).ok()?;
            let Value::Array(fields) = fields else {
                return None;
            };
            let mut out = Vec::new();
            let mut it = fields.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((String::from_utf8(text(k)?).ok()?, text(v)?));
            }
            Some((id, out))
        })
        .collect()
}

/// Appends to the cluster's log (the hub thread's connection).
pub struct Log {
    conn: redis::Connection,
    key: String,
    me: u64,
    seq: u64,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("key", &self.key)
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// The log is trimmed to about this many records (a node reads it within moments; the rest
/// is history nobody replays).
const LOG_MAXLEN: usize = 1_000_000;

impl Log {
    pub fn connect(url: &str, cluster: &str, me: u64) -> Result<Log> {
        let key = log_key(cluster)?;
        let conn = redis::Client::open(url)?.get_connection()?;
        Ok(Log {
            conn,
            key,
            me,
            seq: 0,
        })
    }

    fn add(&mut self, r: &crate::bus::Record) -> Result<()> {
        let _: String = redis::cmd("XADD")
            .arg(&self.key)
            .arg("MAXLEN")
            .arg("~")
            .arg(LOG_MAXLEN)
            .arg("*")
            .arg("r")
            .arg(r.encode())
            .query(&mut self.conn)?;
        Ok(())
    }

    /// Log one of this node's inputs.
    pub fn entry(&mut self, now_ms: u64, input: crate::bus::Input) -> Result<()> {
        self.seq += 1;
        self.add(&crate::bus::Record::Entry(crate::bus::Entry {
            node: self.me,
            seq: self.seq,
            now_ms,
            input,
        }))
    }

    /// Log the results of this node's entry `seq`.
    pub fn results(&mut self, seq: u64, effects: Vec<crate::bus::Effect>) -> Result<()> {
        self.add(&crate::bus::Record::Results(crate::bus::Results {
            node: self.me,
            seq,
            effects,
        }))
    }
}

/// Reads the cluster's log from the start, in order, and hands each record to `on` until it
/// breaks. Reconnects (from where it was) when Redis fails.
pub fn read_log(
    url: &str,
    cluster: &str,
    mut on: impl FnMut(crate::bus::Record) -> ControlFlow<()>,
) -> Result<()> {
    let key = log_key(cluster)?;
    let client = redis::Client::open(url)?;
    let mut last = "0-0".to_string();
    let mut conn: Option<redis::Connection> = None;
    loop {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match client.get_connection() {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    tracing::warn!(error = %e, "cluster: cannot reach Redis to read the log; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
            },
        };
        let v: redis::Value = match redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(&key)
            .arg(&last)
            .query(c)
        {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: reading the log failed; reconnecting");
                conn = None;
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        // [[key, [records]]] (RESP2), or a map of key to records (RESP3), or nil on timeout.
        let records = match v {
            redis::Value::Array(mut streams) if !streams.is_empty() => match streams.swap_remove(0)
            {
                redis::Value::Array(mut kv) if kv.len() == 2 => stream_records(kv.swap_remove(1)),
                _ => Vec::new(),
            },
            redis::Value::Map(mut streams) if !streams.is_empty() => {
                stream_records(streams.swap_remove(0).1)
            }
            _ => Vec::new(),
        };
        for (id, fields) in records {
            last = id;
            for (_, value) in fields {
                match crate::bus::Record::decode(&value) {
                    Ok(r) => {
                        if on(r).is_break() {
                            return Ok(());
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, id = %last, "cluster: a log record that does not decode; skipped")
                    }
                }
            }
        }
    }
}

/// A membership change seen by a [`Watcher`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The node announced itself, and this watcher had not seen it since it started (or since
    /// it went away).
    Up(NodeId),
    /// The node left cleanly ([`Membership::leave`]).
    Left(NodeId),
    /// The node stopped refreshing its announcement: dead, or cut off from Redis.
    Expired(NodeId),
}

/// Follows a cluster's membership through Redis keyspace notifications.
pub struct Watcher {
    conn: redis::Connection,
    prefix: String,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The keyspace notification classes a watcher needs: K (keyspace channel), g (DEL), $ (SET),
/// x (expired).
const NOTIFY_FLAGS: &str = "Kg$x";

impl Watcher {
    /// Connect, and make sure Redis sends the keyspace notifications the watcher needs (adding
    /// to whatever classes are already on).
    pub fn connect(url: &str, cluster: &str) -> Result<Watcher> {
        let prefix = node_prefix(cluster)?;
        let mut conn = redis::Client::open(url)?.get_connection()?;
        let current: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("notify-keyspace-events")
            .query(&mut conn)
            .map_err(ClusterError::Notifications)?;
        let mut flags = current.get(1).cloned().unwrap_or_default();
        // "A" is "g$lshzxet": it already includes g, $ and x.
        for f in NOTIFY_FLAGS.chars() {
            let covered = flags.contains(f) || (f != 'K' && flags.contains('A'));
            if !covered {
                flags.push(f);
            }
        }
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg(&flags)
            .query(&mut conn)
            .map_err(ClusterError::Notifications)?;
        Ok(Watcher { conn, prefix })
    }

    /// Call `on` with each change as it happens, and with `None` every `tick` without one (so
    /// the caller can decide to stop); returns when `on` breaks or Redis fails.
    pub fn run(
        mut self,
        tick: Duration,
        mut on: impl FnMut(Option<Change>) -> ControlFlow<()>,
    ) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        let mut pubsub = self.conn.as_pubsub();
        pubsub.psubscribe(format!("__keyspace@*__:{}*", self.prefix))?;
        pubsub.set_read_timeout(Some(tick.max(Duration::from_millis(1))))?;
        loop {
            let change = match pubsub.get_message() {
                Ok(msg) => {
                    let channel = msg.get_channel_name();
                    let id = channel
                        .split_once("__:")
                        .and_then(|(_, key)| key.strip_prefix(self.prefix.as_str()))
                        .and_then(|id| NodeId::new(id).ok());
                    let event: String = msg.get_payload().unwrap_or_default();
                    match (id, event.as_str()) {
                        (Some(id), "set") => seen.insert(id.clone()).then_some(Change::Up(id)),
                        (Some(id), "del") => {
                            seen.remove(&id);
                            Some(Change::Left(id))
                        }
                        (Some(id), "expired") => {
                            seen.remove(&id);
                            Some(Change::Expired(id))
                        }
                        _ => continue,
                    }
                }
                Err(e) if e.is_timeout() => None,
                Err(e) => return Err(e.into()),
            };
            if on(change).is_break() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::store::testing::TempRedis;

    /// A cluster name of its own per test: tests share one Redis.
    fn cluster(test: &str) -> String {
        format!("t-{}-{test}", std::process::id())
    }

    fn node(id: &str) -> NodeInfo {
        NodeInfo::new(
            NodeId::new(id).unwrap(),
            format!("ws://{id}.test:7700/ws"),
            7,
        )
        .unwrap()
    }

    /// A watcher on its own thread; its changes arrive on the returned channel.
    fn watch(url: &str, cluster: &str) -> mpsc::Receiver<Change> {
        let watcher = Watcher::connect(url, cluster).unwrap();
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            let _ = watcher.run(Duration::from_millis(50), |c| {
                // The first tick comes after the subscription is in place.
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
                match c.map(|c| tx.send(c)) {
                    Some(Err(_)) => ControlFlow::Break(()),
                    _ => ControlFlow::Continue(()),
                }
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the watcher subscribed");
        rx
    }

    /// The next change (waiting for the event; the bound only stops a broken test).
    fn next(rx: &mpsc::Receiver<Change>) -> Change {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("a membership change")
    }

    #[test]
    fn nodes_announce_refresh_and_leave() {
        let redis = TempRedis::shared();
        let c = cluster("leave");
        let changes = watch(&redis.url(), &c);
        let mut a = Membership::connect(&redis.url(), &c).unwrap();
        let mut b = Membership::connect(&redis.url(), &c).unwrap();
        let long = Duration::from_secs(600);
        a.announce(&node("a"), long).unwrap();
        assert_eq!(next(&changes), Change::Up(NodeId::new("a").unwrap()));
        b.announce(&node("b"), long).unwrap();
        assert_eq!(next(&changes), Change::Up(NodeId::new("b").unwrap()));
        // A refresh is not news.
        a.announce(&node("a"), long).unwrap();
        let live = b.live_nodes().unwrap();
        assert_eq!(
            live.values().cloned().collect::<Vec<_>>(),
            vec![node("a"), node("b")]
        );
        a.leave(&NodeId::new("a").unwrap()).unwrap();
        assert_eq!(next(&changes), Change::Left(NodeId::new("a").unwrap()));
        assert_eq!(
            b.live_nodes().unwrap().keys().collect::<Vec<_>>(),
            vec![&NodeId::new("b").unwrap()]
        );
        // Another cluster on the same Redis is invisible.
        let mut other = Membership::connect(&redis.url(), &cluster("other")).unwrap();
        assert!(other.live_nodes().unwrap().is_empty());
    }

    /// A node that stops refreshing expires, the watcher says so as it happens, and the node that
    /// keeps refreshing stays.
    #[test]
    fn a_silent_node_expires_and_the_others_stay() {
        let redis = TempRedis::shared();
        let c = cluster("expire");
        let changes = watch(&redis.url(), &c);
        let mut a = Membership::connect(&redis.url(), &c).unwrap();
        let mut b = Membership::connect(&redis.url(), &c).unwrap();
        b.announce(&node("b"), Duration::from_secs(600)).unwrap();
        assert_eq!(next(&changes), Change::Up(NodeId::new("b").unwrap()));
        // `a` announces once with a short life and then falls silent (a kill -9).
        a.announce(&node("a"), Duration::from_millis(300)).unwrap();
        assert_eq!(next(&changes), Change::Up(NodeId::new("a").unwrap()));
        assert_eq!(next(&changes), Change::Expired(NodeId::new("a").unwrap()));
        let live = b.live_nodes().unwrap();
        assert_eq!(
            live.keys().collect::<Vec<_>>(),
            vec![&NodeId::new("b").unwrap()]
        );
        // Back from the dead: a new incarnation is Up again.
        a.announce(&node("a"), Duration::from_secs(600)).unwrap();
        assert_eq!(next(&changes), Change::Up(NodeId::new("a").unwrap()));
    }

    #[test]
    fn garbage_in_a_node_key_is_skipped_and_bad_names_refused() {
        let redis = TempRedis::shared();
        let c = cluster("garbage");
        let mut a = Membership::connect(&redis.url(), &c).unwrap();
        a.announce(&node("a"), Duration::from_secs(600)).unwrap();
        let mut raw = redis::Client::open(redis.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let prefix = node_prefix(&c).unwrap();
        let _: () = raw
            .set(format!("{prefix}junk"), b"\xff not json".as_slice())
            .unwrap();
        let _: () = raw.set(format!("{prefix}b"), node("c").encode()).unwrap();
        let live = a.live_nodes().unwrap();
        assert_eq!(
            live.keys().collect::<Vec<_>>(),
            vec![&NodeId::new("a").unwrap()]
        );
        for bad in ["", "Hum", "a*", "a:b"] {
            assert!(matches!(
                Membership::connect(&redis.url(), bad),
                Err(ClusterError::BadCluster(_))
            ));
        }
    }
}
