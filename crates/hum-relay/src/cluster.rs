//! Cluster node membership with liveness, in Redis (docs/cluster.md). The first piece of the
//! relay cluster; nothing in the relay uses it yet.
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
