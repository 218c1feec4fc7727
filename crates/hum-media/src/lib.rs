//! Hum's media: everything between a microphone or camera and an RTP payload, and back.
//!
//! All audio here is 48 kHz mono `f32` in `[-1, 1]`, moved in frames of 10 or 20 ms
//! ([`FrameDuration`]). Nothing in this crate knows about WebRTC or the relay.
//!
//! - [`device`]: the [`AudioSource`] / [`AudioSink`] traits, cpal devices, and listing devices.
//! - [`synth`]: synthetic sources (WAV file, tone, chirp, silence, impulse) and sinks (WAV file,
//!   memory, null) behind the same traits, paced in real time or not.
//! - [`codec`]: Opus encoder/decoder with in-band FEC and DTX.
//! - [`jitter`]: a sans-IO adaptive jitter buffer that conceals loss with Opus PLC/FEC.
//! - [`processing`]: noise suppression, voice activity detection, push-to-talk, mute: the capture
//!   chain that decides what is sent.
//! - [`level`]: audio levels and speaking indicators.
//! - [`stream`]: one remote participant: jitter buffer + decoder, ready to mix.
//! - [`monitor`]: the live input level meter, a microphone monitor outside calls, a test sound.
//! - [`mixer`]: mixes several remote streams with per-user volume and deafen.
//! - [`analysis`]: Goertzel, cross-correlation and chirp detection, used by tests and benchmarks.
//! - [`video`]: I420 frames, video sources and sinks, VP8 with simulcast (docs/video.md).

pub mod analysis;
pub mod codec;
pub mod device;
pub mod error;
pub mod format;
pub mod jitter;
pub mod level;
pub mod mixer;
pub mod monitor;
pub mod pacer;
pub mod processing;
pub mod stream;
pub mod synth;
pub mod video;

pub use device::{AudioSink, AudioSource};
pub use error::MediaError;
pub use format::{FrameDuration, SAMPLE_RATE};
