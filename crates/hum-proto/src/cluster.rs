//! Relay cluster nodes (docs/cluster.md): what a relay node announces about itself to the other
//! nodes (through Redis) and to its clients (the `nodes` event: the list a client reconnects
//! with when its node is lost).
//!
//! A [`NodeInfo`] is JSON, at most [`MAX_NODE_INFO_BYTES`]; it comes from a shared database, so
//! [`NodeInfo::decode`] treats it as outside input (typed errors, no panics; fuzzed by
//! fuzz/fuzz_targets/cluster_node.rs). Unknown fields are ignored, so newer nodes may add some.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The largest encoded [`NodeInfo`] accepted.
pub const MAX_NODE_INFO_BYTES: usize = 4096;
/// The longest node id or cluster name.
pub const MAX_LABEL_LEN: usize = 64;
/// The longest `ws_url`.
pub const MAX_URL_LEN: usize = 512;
/// The most nodes a relay lists in a `nodes` event, and the most a client keeps from one.
pub const MAX_NODE_LIST: usize = 64;

/// Why a node announcement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("node info is {0} bytes, more than {MAX_NODE_INFO_BYTES}")]
    TooLarge(usize),
    #[error(
        "{0:?} is not a node id or cluster name (1-{MAX_LABEL_LEN} of a-z, 0-9 and '-', not starting with '-')"
    )]
    BadLabel(String),
    #[error("{0:?} is not a ws:// or wss:// URL of at most {MAX_URL_LEN} bytes")]
    BadUrl(String),
    #[error("node info is not valid JSON: {0}")]
    Json(String),
}

/// True for a valid node id or cluster name: 1-64 of `a-z`, `0-9`, `-`, not starting with `-`.
/// (Safe inside Redis key names and glob patterns.)
pub fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL_LEN
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A relay node's name within its cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

impl NodeId {
    pub fn new(s: impl Into<String>) -> Result<NodeId, NodeError> {
        let s = s.into();
        if is_label(&s) {
            Ok(NodeId(s))
        } else {
            Err(NodeError::BadLabel(s))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeId {
    type Error = NodeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        NodeId::new(s)
    }
}

impl From<NodeId> for String {
    fn from(n: NodeId) -> String {
        n.0
    }
}

impl JsonSchema for NodeId {
    fn schema_name() -> Cow<'static, str> {
        "NodeId".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[a-z0-9][a-z0-9-]{0,63}$",
            "description": "A relay node's name within its cluster: 1-64 of a-z, 0-9 and '-', not starting with '-'.",
        })
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a node tells the others about itself (and, in the `nodes` event, its clients).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeInfo {
    pub id: NodeId,
    /// Where clients reach this node's WebSocket (`ws://` or `wss://`).
    pub ws_url: String,
    /// When this node process started (Unix ms): a restarted node is a new incarnation.
    pub started_at_ms: u64,
}

/// True for a URL a node may announce: `ws://` or `wss://` with something after it, at most
/// [`MAX_URL_LEN`] bytes, no whitespace or control characters. (Clients check more: see
/// hum-engine's node list.)
pub fn valid_url(u: &str) -> bool {
    u.len() <= MAX_URL_LEN
        && (u.starts_with("ws://") || u.starts_with("wss://"))
        && u.len() > "wss://".len()
        && !u.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl NodeInfo {
    pub fn new(
        id: NodeId,
        ws_url: impl Into<String>,
        started_at_ms: u64,
    ) -> Result<Self, NodeError> {
        let ws_url = ws_url.into();
        if !valid_url(&ws_url) {
            return Err(NodeError::BadUrl(ws_url));
        }
        Ok(NodeInfo {
            id,
            ws_url,
            started_at_ms,
        })
    }

    /// Parse an announcement (outside input: size-limited, every field checked).
    pub fn decode(bytes: &[u8]) -> Result<NodeInfo, NodeError> {
        if bytes.len() > MAX_NODE_INFO_BYTES {
            return Err(NodeError::TooLarge(bytes.len()));
        }
        let info: NodeInfo =
            serde_json::from_slice(bytes).map_err(|e| NodeError::Json(e.to_string()))?;
        if !valid_url(&info.ws_url) {
            return Err(NodeError::BadUrl(info.ws_url));
        }
        Ok(info)
    }

    /// The JSON announcement (what [`NodeInfo::decode`] reads back).
    pub fn encode(&self) -> String {
        // A struct of strings and a number always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_info_round_trips_and_outside_input_is_checked() {
        let id = NodeId::new("relay-1").unwrap();
        let info = NodeInfo::new(id.clone(), "ws://10.0.0.1:7700/ws", 42).unwrap();
        assert_eq!(NodeInfo::decode(info.encode().as_bytes()).unwrap(), info);
        // Newer nodes may add fields.
        let newer =
            br#"{"id":"relay-1","ws_url":"wss://a.example/ws","started_at_ms":1,"region":"eu"}"#;
        assert_eq!(
            NodeInfo::decode(newer).unwrap().ws_url,
            "wss://a.example/ws"
        );
        for bad in ["", "-a", "A", "a b", "a:b", "a*", &"a".repeat(65)] {
            assert!(NodeId::new(bad).is_err(), "{bad:?}");
        }
        assert!(is_label("a") && is_label("node-7") && is_label(&"a".repeat(64)));
        let cases: [&[u8]; 5] = [
            br#"{"id":"Relay","ws_url":"ws://a/ws","started_at_ms":1}"#,
            br#"{"id":"r","ws_url":"http://a/ws","started_at_ms":1}"#,
            br#"{"id":"r","ws_url":"ws://a b","started_at_ms":1}"#,
            br#"{"id":"r","ws_url":"ws://a/ws","started_at_ms":-1}"#,
            b"\xff\xfe",
        ];
        for bad in cases {
            assert!(
                NodeInfo::decode(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let big = vec![b' '; MAX_NODE_INFO_BYTES + 1];
        assert_eq!(
            NodeInfo::decode(&big),
            Err(NodeError::TooLarge(MAX_NODE_INFO_BYTES + 1))
        );
    }
}

/// The relay cluster's log records (docs/cluster.md; the ordering rules are in hum-relay's
/// `bus` module). Each record is one JSON value in a Redis stream shared by the nodes: outside
/// input, so [`log::Record::decode`] is size-limited and fuzzed
/// (fuzz/fuzz_targets/cluster_record.rs).
pub mod log {
    use serde::{Deserialize, Serialize};

    use crate::RequestId;
    use crate::UserId;
    use crate::signal::{DisplayName, Request};

    /// A relay connection, numbered cluster-wide (the node's number in the top bits).
    pub type Conn = u64;

    /// A log record larger than this is refused (a request is at most 64 KiB of JSON; a login's
    /// fields are small; results are a few per entry).
    pub const MAX_RECORD_BYTES: usize = 256 * 1024;

    /// A hub input, as the log carries it.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "t", rename_all = "snake_case")]
    pub enum Input {
        Login {
            conn: Conn,
            re: RequestId,
            user: UserId,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            display_name: Option<DisplayName>,
            /// The client's source-address key (for per-address limits), in decimal: JSON
            /// numbers in internally tagged enums stop at 64 bits.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            source: Option<String>,
        },
        Request {
            conn: Conn,
            re: RequestId,
            req: Request,
        },
        Disconnect {
            conn: Conn,
        },
        /// Time passes (ring timeouts). Every node ticks the log once a second.
        Tick,
        /// Node number `node` is dead: its sessions end everywhere.
        NodeDown {
            node: u64,
        },
    }

    /// One input with its origin and time.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct Entry {
        /// The origin's node number.
        pub node: u64,
        /// The origin's counter (per incarnation), which its results name.
        pub seq: u64,
        /// The origin's clock when it logged the input (Unix ms): every hub uses this time.
        pub now_ms: u64,
        pub input: Input,
    }

    /// The result of one store call made by the origin's hub.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(tag = "t", rename_all = "snake_case")]
    pub enum Effect {
        Done,
        /// A new row's id (server, channel).
        Id {
            id: u64,
        },
        Failed {
            error: String,
        },
    }

    /// The results of entry (`node`, `seq`), in call order.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Results {
        pub node: u64,
        pub seq: u64,
        pub effects: Vec<Effect>,
    }

    /// What one log record holds.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "k", rename_all = "snake_case")]
    pub enum Record {
        Entry(Entry),
        Results(Results),
    }

    /// A log record that cannot be read (Redis is shared: outside input).
    #[derive(Debug, thiserror::Error)]
    pub enum RecordError {
        #[error("log record of {0} bytes is over the limit")]
        TooLarge(usize),
        #[error("log record does not decode: {0}")]
        Json(String),
    }

    impl Record {
        pub fn encode(&self) -> String {
            // Plain data; serializing it cannot fail.
            serde_json::to_string(self).unwrap_or_default()
        }

        /// Parse a record (size-limited; fuzzed by `fuzz/fuzz_targets/cluster_record.rs`).
        pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
            if bytes.len() > MAX_RECORD_BYTES {
                return Err(RecordError::TooLarge(bytes.len()));
            }
            serde_json::from_slice(bytes).map_err(|e| RecordError::Json(e.to_string()))
        }
    }
}
