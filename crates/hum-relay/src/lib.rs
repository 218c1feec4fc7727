//! hum-relay: the signalling server. docs/relay.md explains the design, docs/protocol.md the
//! wire protocol.
//!
//! - [`hub`]: the sans-IO state machine (sessions, friends, calls, servers, channels, signalling);
//! - [`model`] and [`store`]: the persistent data in memory and in SQLite or PostgreSQL;
//! - [`cluster`]: node membership with liveness in Redis (docs/cluster.md; not wired in yet);
//! - [`handshake`] and [`limits`]: per-connection login and rate limiting (sans-IO);
//! - [`server`] and `probe`: the axum/WebSocket shell and the hub thread;
//! - `live` and [`recording`]: every live stream's root seed + tracker (`/mesh`), and recordings.

pub mod accept;
pub mod cluster;
pub mod handshake;
pub mod hub;
pub mod limits;
mod live;
pub mod metrics;
pub mod model;
pub mod outbox;
mod probe;
pub mod recording;
pub mod server;
mod sfu;
pub mod store;
pub mod turn;

pub use server::{RelayConfig, RelayHandle, start};
