//! Which relay node to dial next (docs/cluster.md, "Node loss"). Sans-IO: the session task
//! asks for a URL per attempt and reports what happened.
//!
//! A relay cluster tells its clients its live nodes (the `nodes` event). The client dials, in
//! turn: the node it was last logged in on (a brief blip should not move it), the URL it was
//! configured with, then the other listed nodes in the relay's order; one URL per attempt,
//! round after round, with the session's usual backoff between attempts. A client given one URL
//! and never told of other nodes (a single relay) dials only that one, as before.
//!
//! The list comes from outside (a relay, which may be buggy or hostile), so each URL is
//! checked ([`check_url`]) and at most [`MAX_NODE_LIST`] are kept. A bad one is dropped, never
//! dialed. A relay reached over `wss://` cannot send the client to a `ws://` node.

use hum_proto::cluster::{MAX_NODE_LIST, MAX_URL_LEN, NodeInfo};
use hum_proto::signal::relay_name_from_url;
use tokio_tungstenite::tungstenite::http::Uri;

/// Why a listed node's URL is not dialed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadNodeUrl {
    #[error("not a ws:// or wss:// URL of at most {MAX_URL_LEN} bytes without spaces")]
    Shape,
    #[error("names no host")]
    NoHost,
    #[error("carries credentials")]
    Credentials,
    #[error("is ws:// but the configured relay is wss:// (no downgrade)")]
    Downgrade,
}

/// Whether a listed node URL may be dialed by a client configured with `configured`.
pub(crate) fn check_url(url: &str, configured: &str) -> Result<(), BadNodeUrl> {
    if !hum_proto::cluster::valid_url(url) {
        return Err(BadNodeUrl::Shape);
    }
    let uri: Uri = url.parse().map_err(|_| BadNodeUrl::Shape)?;
    let authority = uri.authority().ok_or(BadNodeUrl::NoHost)?;
    if authority.as_str().contains('@') {
        return Err(BadNodeUrl::Credentials);
    }
    if authority.host().is_empty() || relay_name_from_url(url).is_none() {
        return Err(BadNodeUrl::NoHost);
    }
    if configured.starts_with("wss://") && !url.starts_with("wss://") {
        return Err(BadNodeUrl::Downgrade);
    }
    Ok(())
}

/// The URLs a session may dial, and whose turn it is.
#[derive(Clone, Debug)]
pub(crate) struct Nodes {
    configured: String,
    /// The last list a relay gave (checked, bounded), in its order.
    listed: Vec<String>,
    /// The node the session was last logged in on.
    last_good: Option<String>,
    /// Attempts since the last successful login.
    cursor: usize,
}

impl Nodes {
    pub fn new(configured: String) -> Nodes {
        Nodes {
            configured,
            listed: Vec::new(),
            last_good: None,
            cursor: 0,
        }
    }

    /// Take a relay's `nodes` list. Returns how many entries were refused (bad URLs, or past
    /// [`MAX_NODE_LIST`]). An empty list changes nothing: the client keeps the last it heard.
    pub fn learn(&mut self, nodes: &[NodeInfo]) -> usize {
        if nodes.is_empty() {
            return 0;
        }
        let mut listed: Vec<String> = Vec::new();
        let mut refused = 0;
        for n in nodes {
            match check_url(&n.ws_url, &self.configured) {
                Ok(()) if listed.len() < MAX_NODE_LIST => {
                    if !listed.contains(&n.ws_url) {
                        listed.push(n.ws_url.clone());
                    }
                }
                Ok(()) => refused += 1,
                Err(e) => {
                    tracing::warn!(node = %n.id, url = %n.ws_url, "a listed relay node's URL {e}; not dialing it");
                    refused += 1;
                }
            }
        }
        self.listed = listed;
        refused
    }

    /// Every URL in dialing order, each once: the last good node, the configured URL, the
    /// listed nodes.
    pub fn order(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::with_capacity(self.listed.len() + 2);
        let first = self.last_good.iter().chain([&self.configured]);
        for u in first.chain(&self.listed) {
            if !out.contains(&u.as_str()) {
                out.push(u);
            }
        }
        out
    }

    /// The URL for the next attempt.
    pub fn next(&mut self) -> String {
        let order = self.order();
        // `order` always holds the configured URL, so it is never empty.
        let url = order[self.cursor % order.len()].to_string();
        self.cursor = self.cursor.wrapping_add(1);
        url
    }

    /// Logged in on `url`: it is dialed first next time.
    pub fn connected(&mut self, url: &str) {
        self.last_good = Some(url.to_string());
        self.cursor = 0;
    }

    /// Whether `url` is the one the client was configured with (its refusals are final; a
    /// listed node's are not: the next node may take the client).
    pub fn is_configured(&self, url: &str) -> bool {
        url == self.configured
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hum_proto::cluster::NodeId;

    fn node(id: &str, url: &str) -> NodeInfo {
        // Built field by field: the relay's list may hold what `NodeInfo::new` refuses.
        NodeInfo {
            id: NodeId::new(id).unwrap(),
            ws_url: url.to_string(),
            started_at_ms: 1,
        }
    }

    const A: &str = "ws://10.0.0.1:7700/ws";
    const B: &str = "ws://10.0.0.2:7700/ws";
    const C: &str = "ws://10.0.0.3:7700/ws";

    #[test]
    fn one_url_and_no_list_dials_only_that_url() {
        let mut n = Nodes::new(A.into());
        for _ in 0..5 {
            assert_eq!(n.next(), A);
        }
        n.connected(A);
        assert_eq!(n.next(), A);
        // An empty list (a relay with nothing to say) changes nothing.
        assert_eq!(n.learn(&[]), 0);
        assert_eq!(n.order(), vec![A]);
    }

    #[test]
    fn after_losing_a_node_the_client_tries_it_then_the_others_round_robin() {
        let mut n = Nodes::new(A.into());
        n.connected(A);
        assert_eq!(n.learn(&[node("a", A), node("b", B), node("c", C)]), 0);
        assert_eq!(n.order(), vec![A, B, C]);
        let tried: Vec<String> = (0..7).map(|_| n.next()).collect();
        assert_eq!(tried, [A, B, C, A, B, C, A]);
        // Logged in on C: C first next time, then the configured URL, then the rest.
        n.connected(C);
        assert_eq!(n.order(), vec![C, A, B]);
        assert_eq!(n.next(), C);
        assert_eq!(n.next(), A);
        // A new list replaces the old one; the configured URL and the last good node stay.
        n.learn(&[node("c", C)]);
        n.connected(C);
        assert_eq!(n.order(), vec![C, A]);
        assert!(n.is_configured(A) && !n.is_configured(C));
    }

    #[test]
    fn bad_listed_urls_are_refused_and_the_list_is_bounded() {
        let mut n = Nodes::new(A.into());
        let bad = [
            node("x1", "http://10.0.0.9/ws"),
            node("x2", "ws://"),
            node("x3", "ws:// 10.0.0.9/ws"),
            node("x4", "ws://user:pw@10.0.0.9/ws"),
            node("x5", "ws://:7700/ws"),
            node("x6", &format!("ws://{}/ws", "a".repeat(600))),
            node("x7", "ws://10.0.0.9\u{0}/ws"),
            node("x8", "wss://"),
            node("x9", "ws://[::1/ws"),
        ];
        assert_eq!(n.learn(&bad), bad.len());
        assert_eq!(n.order(), vec![A]);
        let many: Vec<NodeInfo> = (0..200)
            .map(|i| {
                node(
                    &format!("n{i}"),
                    &format!("ws://10.1.{}.{}:7700/ws", i / 250, i % 250),
                )
            })
            .collect();
        assert_eq!(n.learn(&many), 200 - MAX_NODE_LIST);
        assert_eq!(n.order().len(), MAX_NODE_LIST + 1);
        // Duplicates are dialed once.
        n.learn(&[node("b", B), node("b2", B)]);
        assert_eq!(n.order(), vec![A, B]);
    }

    #[test]
    fn a_wss_client_is_not_sent_to_plain_ws() {
        let wss = "wss://relay.example/ws";
        assert_eq!(check_url(B, wss), Err(BadNodeUrl::Downgrade));
        assert_eq!(check_url("wss://n2.example/ws", wss), Ok(()));
        assert_eq!(check_url("wss://n2.example/ws", A), Ok(()));
        let mut n = Nodes::new(wss.into());
        assert_eq!(
            n.learn(&[node("b", B), node("c", "wss://n3.example:8443/ws")]),
            1
        );
        assert_eq!(n.order(), vec![wss, "wss://n3.example:8443/ws"]);
    }
}
