//! The cluster's bus: one ordered log of hub inputs in a Redis stream (docs/cluster.md).
//!
//! Every node runs the same deterministic [`crate::hub::Hub`]. In a cluster a node does not feed
//! its clients' logins, requests and disconnects to its hub directly: it appends them to the
//! cluster's log (`XADD hum:CLUSTER:log`), and every node, itself included, reads the log back
//! in one order and feeds each entry to its hub. Same inputs in the same order give every node
//! the same state (who is online where, rosters, calls, servers); each node then delivers only
//! the outputs addressed to its own connections. Connection ids carry their node's number in
//! their top bits ([`conn_base`]), so they never collide.
//!
//! The database is written once, by the entry's *origin*: its hub runs the write for real and
//! records each store call's result (a new id, done, or failed: [`Effect`]); it then appends
//! those results to the log. The other nodes replay them instead of writing
//! ([`crate::store::tape`]), so they make the same choices the origin made, ids included. A
//! node therefore holds another node's entry until its results are in the log ([`Sequencer`]).
//!
//! A node that dies may leave entries without results. The survivors learn of the death from
//! the membership watcher and append [`Input::NodeDown`]; whatever the dead node's entries still
//! lack when that mark is read is dropped, and results that come after it are ignored, so every
//! node decides by log order alone. The mark also disconnects the dead node's sessions in every
//! hub. A node that reads its own death (it was cut off for longer than its TTL) stops: it may
//! have applied entries the others dropped.

use std::collections::{BTreeSet, HashMap, VecDeque};

pub use hum_proto::cluster::log::{
    Effect, Entry, Input, MAX_RECORD_BYTES, Record, RecordError, Results,
};

use crate::hub::ConnId;

/// Connection ids are `node << CONN_BITS | n`: 2^40 connections per node incarnation.
pub const CONN_BITS: u32 = 40;

/// The first connection id of node number `node`.
pub fn conn_base(node: u64) -> ConnId {
    node << CONN_BITS
}

/// The node number a connection id belongs to.
pub fn node_of(conn: ConnId) -> u64 {
    conn >> CONN_BITS
}

/// An entry ready for the hub: with the origin's results, or `None` when this node is the
/// origin (its hub writes for real).
#[derive(Clone, Debug, PartialEq)]
pub struct Ready {
    pub entry: Entry,
    pub results: Option<Vec<Effect>>,
}

/// Puts the log's records in the order the hub takes them (sans-IO; see the module doc).
///
/// Invariant: whether an entry is applied or dropped depends only on the order of records in
/// the log, never on how the reads were batched, so every node decides alike.
#[derive(Debug)]
pub struct Sequencer {
    me: u64,
    pending: VecDeque<Entry>,
    results: HashMap<(u64, u64), Vec<Effect>>,
    /// Nodes whose death mark has been read: their later results and entries are ignored.
    dead: BTreeSet<u64>,
    /// Entries dropped because their origin died before giving results.
    pub dropped: u64,
}

impl Sequencer {
    pub fn new(me: u64) -> Self {
        Sequencer {
            me,
            pending: VecDeque::new(),
            results: HashMap::new(),
            dead: BTreeSet::new(),
            dropped: 0,
        }
    }

    /// The next record, in log order.
    pub fn push(&mut self, r: Record) {
        match r {
            Record::Entry(e) => {
                if self.dead.contains(&e.node) {
                    self.dropped += 1;
                    return;
                }
                if let Input::NodeDown { node } = e.input
                    && node != self.me
                {
                    self.dead.insert(node);
                }
                self.pending.push_back(e);
            }
            Record::Results(r) => {
                if r.node != self.me && !self.dead.contains(&r.node) {
                    self.results.insert((r.node, r.seq), r.effects);
                }
            }
        }
    }

    /// The next entry the hub may take, if any.
    pub fn next_ready(&mut self) -> Option<Ready> {
        loop {
            let front = self.pending.front()?;
            if front.node == self.me {
                let entry = self.pending.pop_front()?;
                return Some(Ready {
                    entry,
                    results: None,
                });
            }
            if let Some(results) = self.results.remove(&(front.node, front.seq)) {
                let entry = self.pending.pop_front()?;
                return Some(Ready {
                    entry,
                    results: Some(results),
                });
            }
            if self.dead.contains(&front.node) {
                // Its origin died before logging results: nobody applies it.
                self.pending.pop_front();
                self.dropped += 1;
                continue;
            }
            return None;
        }
    }

    /// Entries waiting for their origin's results.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use hum_proto::RequestId;
    use hum_proto::signal::Request;

    use super::*;

    fn entry(node: u64, seq: u64, input: Input) -> Record {
        Record::Entry(Entry {
            node,
            seq,
            now_ms: 1_000 + seq,
            input,
        })
    }

    fn results(node: u64, seq: u64) -> Record {
        Record::Results(Results {
            node,
            seq,
            effects: vec![Effect::Id { id: seq }],
        })
    }

    fn drain(s: &mut Sequencer) -> Vec<(u64, u64, bool)> {
        std::iter::from_fn(|| s.next_ready())
            .map(|r| (r.entry.node, r.entry.seq, r.results.is_some()))
            .collect()
    }

    #[test]
    fn own_entries_go_at_once_others_wait_for_their_results_in_log_order() {
        let mut s = Sequencer::new(1);
        s.push(entry(1, 1, Input::Tick));
        s.push(entry(2, 1, Input::Tick));
        s.push(entry(1, 2, Input::Tick));
        assert_eq!(drain(&mut s), vec![(1, 1, false)]);
        // Node 1's second entry waits behind node 2's: one order everywhere.
        s.push(results(2, 1));
        assert_eq!(drain(&mut s), vec![(2, 1, true), (1, 2, false)]);
        assert_eq!(s.waiting(), 0);
    }

    #[test]
    fn a_dead_nodes_entries_without_results_are_dropped_and_late_results_ignored() {
        let mut s = Sequencer::new(1);
        s.push(entry(2, 1, Input::Tick));
        s.push(results(2, 1));
        s.push(entry(2, 2, Input::Tick));
        s.push(entry(3, 1, Input::NodeDown { node: 2 }));
        // Results after the death mark do not count, whatever the read batching.
        s.push(results(2, 2));
        s.push(entry(2, 3, Input::Tick));
        s.push(results(3, 1));
        assert_eq!(drain(&mut s), vec![(2, 1, true), (3, 1, true)]);
        assert_eq!(s.dropped, 2);
    }

    #[test]
    fn the_decision_does_not_depend_on_read_batching() {
        let log = vec![
            entry(2, 1, Input::Tick),
            entry(3, 1, Input::Tick),
            results(3, 1),
            entry(4, 1, Input::NodeDown { node: 2 }),
            results(2, 1),
            results(4, 1),
            entry(3, 2, Input::Tick),
            results(3, 2),
        ];
        let mut all = Sequencer::new(1);
        let mut whole = Vec::new();
        for r in log.clone() {
            all.push(r);
        }
        whole.extend(drain(&mut all));
        let mut one = Sequencer::new(1);
        let mut each = Vec::new();
        for r in log {
            one.push(r);
            each.extend(drain(&mut one));
        }
        assert_eq!(whole, each);
        assert_eq!(whole, vec![(3, 1, true), (4, 1, true), (3, 2, true)]);
    }

    #[test]
    fn the_fuzz_seeds_are_valid_records() {
        let dir = std::path::PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../fuzz/seeds/cluster_record");
        let mut n = 0;
        for f in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(f.unwrap().path()).unwrap();
            Record::decode(&bytes).unwrap();
            n += 1;
        }
        assert!(n >= 4);
    }

    #[test]
    fn records_round_trip_and_bad_input_is_refused() {
        let r = entry(
            7,
            9,
            Input::Request {
                conn: conn_base(7) + 3,
                re: RequestId(4),
                req: Request::Ping,
            },
        );
        assert_eq!(Record::decode(r.encode().as_bytes()).unwrap(), r);
        let r = results(7, 9);
        assert_eq!(Record::decode(r.encode().as_bytes()).unwrap(), r);
        assert!(matches!(
            Record::decode(b"{\"k\":\"entry\"}"),
            Err(RecordError::Json(_))
        ));
        let big = vec![b' '; MAX_RECORD_BYTES + 1];
        assert!(matches!(
            Record::decode(&big),
            Err(RecordError::TooLarge(_))
        ));
        assert_eq!(node_of(conn_base(7) + 3), 7);
    }
}
