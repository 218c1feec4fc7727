//! A seeded discrete-event network for Hum's tests and the `hum sim` simulator.
//!
//! Everything runs on a virtual clock ([`Time`], microseconds). Nothing here reads a wall clock or
//! opens a socket, and the only randomness is a seeded ChaCha RNG, so the same seed and the same calls
//! give the same run, bit for bit.
//!
//! The model is message-level, not packet-level: a message of `bytes` is one event. Each node has an
//! **upload queue** and a **download queue**, each a FIFO drained at the node's capacity. Sending a
//! message puts it at the back of the sender's upload queue; when its last byte leaves, it crosses the
//! link (one-way latency, maybe lost), then waits in the receiver's download queue and is delivered when
//! its last byte is in. A saturated uplink therefore builds a backlog, and every later message (a game
//! packet as much as a chunk) sees that backlog as queuing delay: the "bottleneck queue" that makes a
//! game lag while a relay runs. See `docs/netsim.md`.
//!
//! - [`Net`]: nodes, `send`, timers, and `next_event` in time order.
//! - [`churn`]: seeded join/leave schedules.

pub mod churn;
mod net;
pub mod prefetch;
mod queue;

pub use churn::{ChurnEvent, ChurnSchedule};
/// The virtual clock (shared with hum-mesh).
pub use hum_proto::Time;
pub use net::{
    Delivery, Event, EventKind, FAST_RETRANSMIT_SLACK, LinkOverride, Net, NodeConfig, NodeId,
    NodeStats, PACKET_BYTES, RTO_MIN, SendOutcome, rto,
};
