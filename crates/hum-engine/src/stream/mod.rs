//! Livestreams over the real network: the same `hum-mesh` state machines `hum sim` runs, driven by
//! a tokio loop over WebRTC data channels (docs/stream.md).
//!
//! - [`link`]: one WebRTC connection per mesh neighbour, a reliable ordered control channel and an
//!   unordered partially reliable chunk channel.
//! - [`node`]: the loop around a viewer, the streamer's uploader (the relay hosts the root seed
//!   and tracker), or an in-process root seed + tracker (tests without a relay).
//! - [`relay_link`]: the WebSocket to the relay's `/mesh`, the link to a relay-hosted root.
//! - [`ondemand`]: a recording's viewers fetching its whole range from each other, rarest
//!   first, the relay's store as root.
//! - [`playback`]: fetching a recording from the relay, every chunk verified.
//! - [`source`]: the streamer's media (pattern, Y4M file, camera or screen through VP8; a tone or
//!   the microphone through Opus), cut into chunks.
//! - [`session`]: going live and watching (relay requests + node + source + relay events), what
//!   the CLI and the app both run.
//! - [`player`]: a viewer's played chunks as paced VP8 frames for a decoder.

pub mod link;
pub mod node;
pub mod ondemand;
pub mod playback;
pub mod player;
pub mod relay_link;
pub mod session;
pub mod source;
pub mod splice;

pub use node::{
    Command, NodeConfig, NodeHandle, NodeReport, PlayedChunk, spawn_recording, spawn_root,
    spawn_uploader, spawn_viewer,
};
pub use session::{EndReason, LiveOptions, LiveSession, WatchOptions, WatchSession, layer_label};
pub use splice::Quality;

/// What can go wrong setting up a stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("WebRTC: {0}")]
    WebRtc(String),
    #[error("the stream key is not a valid Ed25519 public key")]
    BadStreamKey,
    #[error("media: {0}")]
    Media(String),
    #[error("{0}")]
    Relay(#[from] crate::ClientError),
    #[error("{0}")]
    Ice(#[from] crate::ice::IceError),
}

impl From<webrtc::error::Error> for StreamError {
    fn from(e: webrtc::error::Error) -> Self {
        StreamError::WebRtc(e.to_string())
    }
}
