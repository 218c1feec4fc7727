//! hum-relay: the signalling server. docs/relay.md explains the design, docs/protocol.md the
//! wire protocol.
//!
//! - [`hub`]: the sans-IO state machine (sessions, friends, calls, servers, channels, signalling);
//! - [`model`] and [`store`]: the persistent data in memory and in SQLite or PostgreSQL;
//! - [`cluster`] and [`bus`]: a cluster of relays over Redis + PostgreSQL (docs/cluster.md);
//!   [`node_list`]: the live nodes a cluster node tells its clients;
//! - [`handshake`] and [`limits`]: per-connection login and rate limiting (sans-IO);
//! - [`server`] and `probe`: the axum/WebSocket shell and the hub thread;
//! - `live` and [`recording`]: every live stream's root seed + tracker (`/mesh`), and recordings;
//! - [`web`]: the browser client's files (`--web-dir`, docs/browser.md).

pub mod accept;
pub mod bus;
pub mod cluster;
pub mod handshake;
pub mod hub;
pub mod limits;
mod live;
pub mod metrics;
pub mod model;
pub mod node_list;
pub mod outbox;
mod probe;
pub mod recording;
pub mod server;
mod sfu;
pub mod store;
pub mod turn;
pub mod web;

pub use server::{RelayConfig, RelayHandle, start};
