//! The packet layer: per-packet decisions, no knowledge of rooms or signalling. Sans-IO: packets
//! and time are inputs.

pub mod audio_level;
pub mod cache;
pub mod forwarder;
pub mod layer;
pub mod pli;
pub mod rewriter;
pub mod speaker;
pub mod vp8;
