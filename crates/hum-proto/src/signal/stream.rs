//! Live streams: what the relay lists, and the mesh signalling it forwards between a stream's
//! members (the streamer and its viewers).
//!
//! The streamer's process runs the stream's root seed and tracker for now (docs/stream.md), so the
//! relay only keeps the list of live streams and who watches, and forwards [`MeshSignal`]s between
//! members of the same stream: WebRTC negotiation for the mesh's data channels, and the tracker's
//! grants. The streamer's account key is the stream key: every chunk record is signed with it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{ChannelId, ServerId, StreamId, UserId};
use crate::signal::model::{Name, UserSummary};
use crate::units::Bitrate;

/// A live stream as the relay lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StreamInfo {
    pub id: StreamId,
    pub server: ServerId,
    pub channel: ChannelId,
    /// The streamer; their public key verifies every chunk record of the stream.
    pub streamer: UserSummary,
    pub title: Name,
    /// The stream's bitrate (one layer for now).
    pub bitrate: Bitrate,
    /// Nominal chunk duration in milliseconds (100-500).
    pub chunk_ms: u32,
    /// Unix milliseconds when the stream's media time 0 was captured (for "behind live").
    pub started_ms: u64,
    /// Viewers right now.
    pub viewers: u32,
    /// The relay keeps a recording of this stream (the streamer opted in).
    #[serde(default)]
    pub recording: bool,
    /// The layers the streamer publishes, best first (each its own chunk sequence, swarm and
    /// signed records); absent or empty: one layer, `high` at `bitrate`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<StreamLayer>,
}

/// One quality layer of a stream (docs/stream.md, "Layers").
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum StreamLayerName {
    High,
    Medium,
    Low,
    /// Audio only.
    Audio,
}

impl StreamLayerName {
    /// The mesh's layer (the `layer` byte of every chunk record).
    pub fn mesh(self) -> crate::mesh::Layer {
        match self {
            StreamLayerName::High => crate::mesh::Layer::High,
            StreamLayerName::Medium => crate::mesh::Layer::Medium,
            StreamLayerName::Low => crate::mesh::Layer::Low,
            StreamLayerName::Audio => crate::mesh::Layer::Audio,
        }
    }
    pub fn from_mesh(l: crate::mesh::Layer) -> Self {
        match l {
            crate::mesh::Layer::High => StreamLayerName::High,
            crate::mesh::Layer::Medium => StreamLayerName::Medium,
            crate::mesh::Layer::Low => StreamLayerName::Low,
            crate::mesh::Layer::Audio => StreamLayerName::Audio,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            StreamLayerName::High => "high",
            StreamLayerName::Medium => "medium",
            StreamLayerName::Low => "low",
            StreamLayerName::Audio => "audio",
        }
    }
}

/// A layer the streamer publishes: its name, planned rate and picture size (0x0: audio only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StreamLayer {
    pub layer: StreamLayerName,
    pub bitrate: Bitrate,
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
}

/// The layer a viewer asking for `want` watches: the best published layer no better than it
/// (`None`: the best; nothing that low: the lowest). A stream that lists no layers has `high`.
pub fn pick_layer(layers: &[StreamLayer], want: Option<StreamLayerName>) -> StreamLayerName {
    let Some(lowest) = layers.iter().map(|l| l.layer).max() else {
        return StreamLayerName::High;
    };
    let want = want.unwrap_or(StreamLayerName::High);
    layers
        .iter()
        .map(|l| l.layer)
        .filter(|l| *l >= want)
        .min()
        .unwrap_or(lowest)
}

/// A recording the relay keeps: the chunks of a stream with their signed records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecordingInfo {
    pub id: u64,
    /// The stream it recorded (ids restart with the relay; the recording's id does not).
    pub stream: StreamId,
    pub server: ServerId,
    pub channel: ChannelId,
    /// Whose key signed every chunk.
    pub streamer: UserSummary,
    pub title: Name,
    pub bitrate: Bitrate,
    pub chunk_ms: u32,
    pub started_ms: u64,
    /// Chunks kept so far (sequence numbers 0..chunks), and their payload bytes.
    pub chunks: u64,
    pub bytes: u64,
    /// False while the stream is live.
    pub ended: bool,
    /// The layer kept (every record carries it); absent in recordings made before it was
    /// listed: `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<StreamLayerName>,
}

/// One grant of the tracker: `user` reserves `rate` of its upload for the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MeshGrant {
    pub user: UserId,
    pub rate: Bitrate,
}

/// Mesh signalling between two members of a stream, opaque to the relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MeshSignal {
    /// An SDP offer (complete: ICE gathering finished) for a mesh link; the downstream offers.
    Offer { sdp: String },
    /// The SDP answer.
    Answer { sdp: String },
    /// The sender closed its mesh link to the receiver.
    Bye,
    /// Tracker (streamer) to viewer: your upstreams. The first one also carries the live sequence
    /// number to start from.
    Grants {
        live_seq: u64,
        grants: Vec<MeshGrant>,
    },
    /// Tracker to viewer: `user` is no longer your upstream or downstream (it left or was moved).
    Gone { user: UserId },
    /// Viewer to tracker: I have fewer upstreams than I want.
    Want { count: u8 },
    /// Viewer to tracker: `user` served me chunks that failed verification; I banned it.
    Ban { user: UserId },
    /// Viewer to tracker: I stop watching (a graceful leave, docs/stream.md "Leaving"): grant
    /// me to nobody and tell my downstreams; I keep serving what they ask for a few seconds,
    /// then `stream_leave`. A viewer that goes without it (a crash, a lost connection) is
    /// removed at once as before.
    Leave,
    /// Tracker to viewer: your upstream `user` is leaving. Ask for new upstreams (`want`); ask
    /// it nothing new once they cover the stream; it serves what you ask until its links close
    /// (then `gone`).
    Leaving { user: UserId },
}
