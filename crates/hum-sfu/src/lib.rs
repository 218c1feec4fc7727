//! hum-sfu: selective forwarding on str0m.
//!
//! Two layers, as LiveKit splits `pkg/rtc` from `pkg/sfu`:
//! - [`packet`]: per-packet work (VP8 keyframe detection, simulcast layer selection, sequence and
//!   timestamp rewriting, NACK cache, PLI limit, audio levels, dominant speaker);
//! - [`session`]: rooms, participants, publications, subscriptions, permissions and events.
//!
//! Both are sans-IO (time and packets are inputs). [`server`] is the thin runtime: one UDP
//! socket, one str0m `Rtc` per participant, a tokio loop.

mod outbox;
pub mod packet;
pub mod session;

pub mod server;
#[cfg(test)]
mod session_tests;
mod timers;

pub use server::{Metrics, SfuError, SfuEvent, SfuServer};
pub use session::{Session, SessionConfig, SessionEvent, TrackId, TrackKind};
