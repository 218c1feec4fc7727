//! Hum's wire protocol. Types only: no sockets, no clocks.
//!
//! - [`ids`]: users (Ed25519 public keys), servers, channels, calls, requests and invites as
//!   newtypes.
//! - [`signal`]: the JSON signalling protocol between clients and the relay.
//! - [`names`]: what display, server and channel names may contain (one home for client and relay).
//! - [`links`]: `hum://friend/KEY` and `hum://invite/CODE` links.
//! - [`cluster`]: relay cluster nodes (node ids, what a node announces).
//! - [`units`]: bitrates and byte counts as newtypes, so a kbps is never mistaken for a bps.

pub mod cluster;
pub mod ids;
pub mod links;
pub mod mesh;
pub mod names;
pub mod signal;
pub mod time;
pub mod units;

pub use ids::{
    CallId, ChannelId, InviteCode, Nonce, RequestId, SealedMediaKey, ServerId, Signature, StreamId,
    UserId,
};
pub use time::Time;
pub use units::Bitrate;
