//! Livestreams over the real network: the same `hum-mesh` state machines `hum sim` runs, driven by
//! a tokio loop over WebRTC data channels (docs/stream.md).
//!
//! - [`link`]: one WebRTC connection per mesh neighbour, a reliable ordered control channel and an
//!   unordered partially reliable chunk channel.
//! - [`node`]: the loop around a viewer, the streamer's uploader (the relay hosts the root seed
//!   and tracker), or an in-process root seed + tracker (tests without a relay).
//! - [`relay_link`]: the WebSocket to the relay's `/mesh`, the link to a relay-hosted root.
//! - [`playback`]: fetching a recording from the relay, every chunk verified.
//! - [`source`]: the streamer's media: a test pattern through VP8 plus Opus audio, cut into chunks.

pub mod link;
pub mod node;
pub mod playback;
pub mod relay_link;
pub mod source;

pub use node::{
    Command, NodeConfig, NodeHandle, NodeReport, spawn_root, spawn_uploader, spawn_viewer,
};

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
