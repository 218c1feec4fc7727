//! ICE servers and transport policy: the one place every peer connection of the engine (calls,
//! mesh channels, the SFU connection, stream data channels) gets its `RTCConfiguration`.
//!
//! "Hide my IP" is ICE transport policy `relay`: the agent gathers only relayed candidates from
//! the TURN server, so no host or server-reflexive address is put in an SDP or sent to the relay,
//! the SFU or a peer; all media flows through TURN. It needs TURN credentials, which the relay
//! hands out (`turn_credentials`, docs/protocol.md); without them a relay-only connection cannot
//! exist, and [`IceConfig::rtc_configuration`] says so instead of failing later and silently.

use std::sync::Arc;

use hum_proto::signal::TurnServer;
use webrtc::peer_connection::{
    PeerConnection, RTCConfiguration, RTCConfigurationBuilder, RTCIceCandidateType, RTCIceServer,
    RTCIceTransportPolicy, StatsSelector,
};

/// Where ICE may look for a path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceConfig {
    /// STUN servers (`stun:host:port`). Empty on loopback and LANs.
    pub stun: Vec<String>,
    /// TURN servers with their credentials (from the relay).
    pub turn: Vec<TurnServer>,
    /// Hide my IP: only relayed candidates (ICE transport policy `relay`).
    pub relay_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IceError {
    #[error(
        "\"hide my IP\" (relay-only) needs a TURN server to relay the media, and this relay hands out none (it runs without --turn-url/--turn-secret)"
    )]
    NoTurnServer,
    #[error(
        "\"hide my IP\" (relay-only): no relayed address could be obtained from the TURN server {0}; it is unreachable or refused our credentials"
    )]
    NoRelayCandidate(String),
    #[error("\"hide my IP\" (relay-only): asking the relay for TURN credentials failed: {0}")]
    TurnCredentials(String),
}

impl IceConfig {
    /// What a session on `relay` uses: the relay's TURN server (so a peer behind a strict NAT
    /// still connects) and, with `relay_only`, media through it only. Without relay-only TURN
    /// is a fallback, so a failed request is logged and the session goes on without it; with
    /// it, no TURN server (or no answer) is an error here, before anything is dialled.
    pub async fn from_relay(
        relay: &crate::relay::RelayClient,
        relay_only: bool,
    ) -> Result<IceConfig, IceError> {
        let turn = match relay.turn_credentials().await {
            Ok(t) => t,
            Err(e) if !relay_only => {
                tracing::warn!("no TURN credentials: {e}");
                None
            }
            Err(e) => return Err(IceError::TurnCredentials(e.to_string())),
        };
        let cfg = IceConfig {
            stun: Vec::new(),
            turn: turn.into_iter().collect(),
            relay_only,
        };
        if relay_only && cfg.turn.is_empty() {
            return Err(IceError::NoTurnServer);
        }
        Ok(cfg)
    }

    /// The configuration for a new peer connection.
    pub fn rtc_configuration(&self) -> Result<RTCConfiguration, IceError> {
        if self.relay_only && self.turn.is_empty() {
            return Err(IceError::NoTurnServer);
        }
        let mut servers = Vec::new();
        if !self.stun.is_empty() && !self.relay_only {
            servers.push(RTCIceServer {
                urls: self.stun.clone(),
                ..Default::default()
            });
        }
        for t in &self.turn {
            servers.push(RTCIceServer {
                urls: t.urls.clone(),
                username: t.username.clone(),
                credential: t.credential.clone(),
            });
        }
        let policy = if self.relay_only {
            RTCIceTransportPolicy::Relay
        } else {
            RTCIceTransportPolicy::All
        };
        Ok(RTCConfigurationBuilder::default()
            .with_ice_servers(servers)
            .with_ice_transport_policy(policy)
            .build())
    }

    /// Checks a gathered local SDP: in relay-only mode it must carry a relayed candidate and
    /// nothing else (a host or srflx candidate there would reveal our address).
    pub fn check_local_sdp(&self, sdp: &str) -> Result<(), IceError> {
        if !self.relay_only {
            return Ok(());
        }
        let kinds = candidate_types(sdp);
        if kinds.is_empty() || kinds.iter().any(|k| *k != "relay") {
            let urls: Vec<&str> = self
                .turn
                .iter()
                .flat_map(|t| t.urls.iter().map(String::as_str))
                .collect();
            return Err(IceError::NoRelayCandidate(urls.join(", ")));
        }
        Ok(())
    }
}

/// The `typ` of every `a=candidate` line of an SDP.
pub fn candidate_types(sdp: &str) -> Vec<&str> {
    sdp.lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            it.by_ref().find(|w| *w == "typ")?;
            it.next()
        })
        .collect()
}

/// Kind of one end of the selected candidate pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateKind {
    Host,
    ServerReflexive,
    PeerReflexive,
    Relay,
    Unknown,
}

impl CandidateKind {
    pub fn name(self) -> &'static str {
        match self {
            CandidateKind::Host => "host",
            CandidateKind::ServerReflexive => "srflx",
            CandidateKind::PeerReflexive => "prflx",
            CandidateKind::Relay => "relay",
            CandidateKind::Unknown => "unknown",
        }
    }
}

impl From<RTCIceCandidateType> for CandidateKind {
    fn from(t: RTCIceCandidateType) -> Self {
        match t {
            RTCIceCandidateType::Host => CandidateKind::Host,
            RTCIceCandidateType::Srflx => CandidateKind::ServerReflexive,
            RTCIceCandidateType::Prflx => CandidateKind::PeerReflexive,
            RTCIceCandidateType::Relay => CandidateKind::Relay,
            _ => CandidateKind::Unknown,
        }
    }
}

/// The path media takes: both ends of the selected (nominated) candidate pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IceRoute {
    pub local: CandidateKind,
    pub remote: CandidateKind,
}

impl IceRoute {
    /// Media goes through a TURN server (ours or the peer's).
    pub fn relayed(&self) -> bool {
        self.local == CandidateKind::Relay || self.remote == CandidateKind::Relay
    }
}

/// The selected candidate pair of `pc`, from webrtc-rs' statistics.
pub async fn selected_route(pc: &Arc<dyn PeerConnection>) -> Option<IceRoute> {
    use rtc::statistics::report::RTCStatsReportEntry as E;
    let report = pc
        .get_stats(std::time::Instant::now(), StatsSelector::None)
        .await;
    let selected = report
        .transport()
        .map(|t| t.selected_candidate_pair_id.clone())
        .filter(|id| !id.is_empty());
    let pair = report.candidate_pairs().find(|p| match &selected {
        Some(id) => p.stats.id == *id,
        None => p.nominated,
    })?;
    let kind = |id: &str| match report.get(id) {
        Some(E::LocalCandidate(c)) | Some(E::RemoteCandidate(c)) => c.candidate_type.into(),
        _ => CandidateKind::Unknown,
    };
    let mut route = IceRoute {
        local: kind(&pair.local_candidate_id),
        remote: kind(&pair.remote_candidate_id),
    };
    // webrtc-rs 0.21 registers no candidate entries for relayed (TURN) or remote candidates,
    // so the pair's ends may not resolve; then the SDPs tell, when every candidate of that
    // side has one type (always so in relay-only mode, which checks its own SDP).
    if route.local == CandidateKind::Unknown
        && let Some(d) = pc.local_description().await
    {
        route.local = sdp_kind(&d.sdp);
    }
    if route.remote == CandidateKind::Unknown
        && let Some(d) = pc.remote_description().await
    {
        route.remote = sdp_kind(&d.sdp);
    }
    Some(route)
}

/// The one candidate type of an SDP, or `Unknown` when it has none or several.
fn sdp_kind(sdp: &str) -> CandidateKind {
    let types = candidate_types(sdp);
    let Some(first) = types.first() else {
        return CandidateKind::Unknown;
    };
    if types.iter().any(|t| t != first) {
        return CandidateKind::Unknown;
    }
    match *first {
        "host" => CandidateKind::Host,
        "srflx" => CandidateKind::ServerReflexive,
        "prflx" => CandidateKind::PeerReflexive,
        "relay" => CandidateKind::Relay,
        _ => CandidateKind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn() -> TurnServer {
        TurnServer {
            urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
            username: "1:u".into(),
            credential: "c".into(),
            expires_at: 1,
        }
    }

    #[test]
    fn relay_only_needs_turn() {
        let cfg = IceConfig {
            relay_only: true,
            ..Default::default()
        };
        assert_eq!(cfg.rtc_configuration().err(), Some(IceError::NoTurnServer));
        let cfg = IceConfig {
            relay_only: true,
            stun: vec!["stun:127.0.0.1:3478".into()],
            turn: vec![turn()],
        };
        let c = cfg.rtc_configuration().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.ice_transport_policy(), RTCIceTransportPolicy::Relay);
        // STUN would only find addresses relay-only must not reveal.
        assert_eq!(c.ice_servers().len(), 1);
        assert_eq!(c.ice_servers()[0].username, "1:u");
    }

    #[test]
    fn relay_only_sdp_check() {
        let relay = "v=0\r\na=candidate:1 1 udp 16777215 127.0.0.1 50000 typ relay raddr 0.0.0.0 rport 0\r\n";
        let host = "v=0\r\na=candidate:1 1 udp 2130706431 192.168.1.5 50000 typ host\r\n";
        let cfg = IceConfig {
            relay_only: true,
            turn: vec![turn()],
            ..Default::default()
        };
        assert_eq!(candidate_types(relay), vec!["relay"]);
        assert!(cfg.check_local_sdp(relay).is_ok());
        assert!(cfg.check_local_sdp(host).is_err());
        assert!(cfg.check_local_sdp("v=0\r\n").is_err());
        assert!(IceConfig::default().check_local_sdp(host).is_ok());
    }
}
