//! Hum's wire protocol. Types only: no sockets, no clocks.
//!
//! - [`units`]: bitrates and byte counts as newtypes, so a kbps is never mistaken for a bps.

pub mod units;

pub use units::Bitrate;
