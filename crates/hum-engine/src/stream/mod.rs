//! Livestreams over the real network: the same `hum-mesh` state machines `hum sim` runs, driven by
//! a tokio loop over WebRTC data channels (docs/stream.md).
//!
//! - [`link`]: one WebRTC connection per mesh neighbour, a reliable ordered control channel and an
//!   unordered partially reliable chunk channel.
//! - [`node`]: the loop around a root seed + tracker (the streamer's process, for now) or a viewer.
//! - [`source`]: the streamer's media: a test pattern through VP8 plus Opus audio, cut into chunks.

pub mod link;
pub mod node;
pub mod source;

pub use node::{Command, NodeConfig, NodeHandle, NodeReport, spawn_root, spawn_viewer};

/// What can go wrong setting up a stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("WebRTC: {0}")]
    WebRtc(String),
    #[error("the stream key is not a valid Ed25519 public key")]
    BadStreamKey,
    #[error("media: {0}")]
    Media(String),
}

impl From<webrtc::error::Error> for StreamError {
    fn from(e: webrtc::error::Error) -> Self {
        StreamError::WebRtc(e.to_string())
    }
}
