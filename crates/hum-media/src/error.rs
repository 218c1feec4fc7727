//! One error type for the crate, with messages a user can act on.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum MediaError {
    #[error("no audio {direction} device found{detail}")]
    NoDevice {
        direction: &'static str,
        detail: String,
    },
    #[error("audio device '{name}' is not available: {reason}")]
    DeviceUnavailable { name: String, reason: String },
    #[error("audio device error: {0}")]
    Device(String),
    #[error("the audio stream ended")]
    Ended,
    #[error("WAV file {path}: {reason}")]
    Wav { path: String, reason: String },
    #[error("Opus: {0}")]
    Opus(#[from] opus::Error),
    #[error("unsupported audio format: {0}")]
    Format(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}
