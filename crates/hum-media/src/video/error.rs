//! Video errors: typed, with sentences a user can act on.

use thiserror::Error;

/// Everything that can go wrong in video capture, files and codecs.
///
/// Bytes from outside the process (a Y4M file, a network frame) produce an error here, never a
/// panic.
#[derive(Debug, Error)]
pub enum VideoError {
    #[error("Y4M {what}: {reason}")]
    Y4m { what: String, reason: String },
    #[error("unsupported frame size {width}x{height}: {reason}")]
    BadSize {
        width: u32,
        height: u32,
        reason: &'static str,
    },
    #[error("no camera found: this machine has no video capture device{detail}")]
    NoCamera { detail: String },
    #[error("camera '{name}' cannot be used: {reason}")]
    Camera { name: String, reason: String },
    #[error("screen capture: {0}")]
    Screen(String),
    #[error("VP8 {op}: {reason}")]
    Codec { op: &'static str, reason: String },
    #[error("the video stream ended")]
    Ended,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl VideoError {
    pub(crate) fn y4m(what: impl Into<String>, reason: impl Into<String>) -> Self {
        VideoError::Y4m {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
