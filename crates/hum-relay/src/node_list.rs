//! The node list a cluster node tells its clients: the `nodes` event (docs/protocol.md, section
//! 10 "Session"; docs/cluster.md, "Node loss"), so a client whose node dies logs in on another.
//!
//! The list is not hub state. The hub is replicated (every node runs it on the same log, and
//! must reach the same state), while the live nodes are what this node's membership watcher sees
//! in Redis at this moment. So the hub thread keeps the list beside the hub, as part of its
//! delivery glue: a connection gets the list right after its `welcome` reply, and every
//! welcomed connection gets it again when it changes. A single relay has no list and sends
//! nothing.
//!
//! Invariants: a connection is told only after its `welcome` (so a client never sees `nodes`
//! before it is logged in); an empty list is never sent (a client keeps the last one it heard);
//! at most [`MAX_NODE_LIST`] nodes, by id.

use std::collections::{BTreeMap, HashSet};

use hum_proto::cluster::{MAX_NODE_LIST, NodeId, NodeInfo};
use hum_proto::signal::{Event, ServerMessage, encode};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::hub::ConnId;

/// The live nodes as clients get them: by id, at most [`MAX_NODE_LIST`].
pub fn client_list(live: BTreeMap<NodeId, NodeInfo>) -> Vec<NodeInfo> {
    live.into_values().take(MAX_NODE_LIST).collect()
}

/// The current list, its encoded event, and who has been told.
#[derive(Debug, Default)]
pub struct NodeList {
    nodes: Vec<NodeInfo>,
    /// The encoded `nodes` event; `None` until there is a non-empty list.
    frame: Option<Utf8Bytes>,
    /// Connections welcomed since (they hear changes).
    told: HashSet<ConnId>,
}

impl NodeList {
    /// Take `nodes` as the live list. Returns the frame to send every [`NodeList::told`]
    /// connection when it changed (an empty list is kept from clients: they keep the last).
    pub fn set(&mut self, mut nodes: Vec<NodeInfo>) -> Option<Utf8Bytes> {
        nodes.truncate(MAX_NODE_LIST);
        if nodes == self.nodes {
            return None;
        }
        self.nodes = nodes;
        if self.nodes.is_empty() {
            self.frame = None;
            return None;
        }
        let msg = ServerMessage::event(Event::Nodes {
            nodes: self.nodes.clone(),
        });
        let frame = Utf8Bytes::from(encode(&msg));
        self.frame = Some(frame.clone());
        Some(frame)
    }

    /// `conn` was just sent its `welcome`: the frame to send it now, if there is a list.
    pub fn welcomed(&mut self, conn: ConnId) -> Option<Utf8Bytes> {
        let frame = self.frame.clone()?;
        self.told.insert(conn);
        Some(frame)
    }

    /// The connections to tell about a change.
    pub fn told(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.told.iter().copied()
    }

    /// Forget connections that are gone (`alive` false). Cheap to call often: it only walks
    /// the set when it has grown past twice `live` (the number of open connections) + 64.
    pub fn prune(&mut self, live: usize, alive: impl Fn(ConnId) -> bool) {
        if self.told.len() > live.saturating_mul(2).saturating_add(64) {
            self.told.retain(|c| alive(*c));
        }
    }

    #[cfg(test)]
    fn told_count(&self) -> usize {
        self.told.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, started: u64) -> NodeInfo {
        NodeInfo::new(
            NodeId::new(id).unwrap(),
            format!("ws://{id}.test:7700/ws"),
            started,
        )
        .unwrap()
    }

    fn nodes_of(frame: &Utf8Bytes) -> Vec<NodeInfo> {
        match hum_proto::signal::decode_server_message(frame.as_str()).unwrap() {
            ServerMessage::Event {
                event: Event::Nodes { nodes },
            } => nodes,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_connection_hears_the_list_after_welcome_and_on_every_change() {
        let mut list = NodeList::default();
        // No list yet (or a single relay): a welcome brings nothing, and nobody is tracked.
        assert_eq!(list.welcomed(1), None);
        assert_eq!(list.told_count(), 0);
        let ab = vec![node("a", 1), node("b", 2)];
        let f = list.set(ab.clone()).expect("a new list is news");
        assert_eq!(nodes_of(&f), ab);
        // The same list again is not news.
        assert_eq!(list.set(ab.clone()), None);
        let f = list
            .welcomed(2)
            .expect("welcomed after a list: told at once");
        assert_eq!(nodes_of(&f), ab);
        assert_eq!(list.told().collect::<Vec<_>>(), vec![2]);
        // A restarted node (new start time) is a change; so is one gone.
        let f = list.set(vec![node("a", 1), node("b", 3)]).unwrap();
        assert_eq!(nodes_of(&f)[1].started_at_ms, 3);
        let f = list.set(vec![node("b", 3)]).unwrap();
        assert_eq!(nodes_of(&f), vec![node("b", 3)]);
        // An empty list is not sent, and a new client then gets no list.
        assert_eq!(list.set(Vec::new()), None);
        assert_eq!(list.welcomed(3), None);
    }

    #[test]
    fn the_list_is_bounded_by_id_and_the_told_set_is_pruned() {
        let live: BTreeMap<NodeId, NodeInfo> = (0..100)
            .map(|i| {
                let n = node(&format!("n{i:03}"), i);
                (n.id.clone(), n)
            })
            .collect();
        let list = client_list(live);
        assert_eq!(list.len(), MAX_NODE_LIST);
        assert_eq!(list[0].id.as_str(), "n000");
        assert!(list.windows(2).all(|w| w[0].id < w[1].id));

        let mut nl = NodeList::default();
        nl.set(list).unwrap();
        for c in 0..200 {
            nl.welcomed(c);
        }
        // 10 connections open (the even ones below 20): under the bound, nothing is walked...
        nl.prune(100, |c| c < 20 && c % 2 == 0);
        assert_eq!(nl.told_count(), 200);
        // ...past it, the gone ones are dropped.
        nl.prune(10, |c| c < 20 && c % 2 == 0);
        assert_eq!(nl.told_count(), 10);
    }
}
