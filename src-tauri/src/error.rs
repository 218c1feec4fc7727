//! The one error type every command returns.
//!
//! The frontend branches on `code` (a stable snake_case string) and shows `message` (a sentence a user
//! can act on). The JSON shape is a wire contract with ui/: the test below pins it, so changing it is a
//! deliberate act that also updates ui/src/lib/bindings.ts.

use serde::Serialize;
use specta::Type;

/// What went wrong, for code to branch on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Type)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The user typed something we cannot accept; `message` says what and how to fix it.
    InvalidInput,
    /// The operation needs an identity and none exists yet (first run not finished).
    NoIdentity,
    /// An identity already exists; creating a second one would orphan the first.
    IdentityExists,
    /// The relay cannot be reached right now.
    RelayUnavailable,
    /// The relay answered with a refusal (no permission, channel full, unknown user...).
    Rejected,
    /// The thing asked for does not exist (channel, server, friend, device).
    NotFound,
    /// An audio device is missing or cannot be opened.
    Device,
    /// Reading or writing local files failed.
    Storage,
    /// A bug or an unexpected state; `message` carries the detail.
    Internal,
}

/// `{ "code": "invalid_input", "message": "..." }` on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Type, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    pub code: ErrorCode,
    pub message: String,
}

impl CommandError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidInput, message)
    }
    pub fn storage(context: &str, err: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::Storage, format!("{context}: {err}"))
    }
    pub fn internal(err: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::Internal, err.to_string())
    }
}

/// What every command returns.
pub type CmdResult<T> = Result<T, CommandError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape_is_pinned() {
        let err = CommandError::invalid("Reserved upload (6 Mbps) exceeds the total (5 Mbps).");
        assert_eq!(
            serde_json::to_string(&err).expect("serialises"),
            r#"{"code":"invalid_input","message":"Reserved upload (6 Mbps) exceeds the total (5 Mbps)."}"#
        );
    }

    #[test]
    fn every_code_is_snake_case() {
        let codes = [
            (ErrorCode::InvalidInput, "invalid_input"),
            (ErrorCode::NoIdentity, "no_identity"),
            (ErrorCode::IdentityExists, "identity_exists"),
            (ErrorCode::RelayUnavailable, "relay_unavailable"),
            (ErrorCode::Rejected, "rejected"),
            (ErrorCode::NotFound, "not_found"),
            (ErrorCode::Device, "device"),
            (ErrorCode::Storage, "storage"),
            (ErrorCode::Internal, "internal"),
        ];
        for (code, wire) in codes {
            assert_eq!(serde_json::to_value(code).expect("serialises"), wire);
        }
    }
}
