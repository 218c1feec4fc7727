//! Typed errors the relay sends back: a machine-readable [`ErrorCode`] plus a human sentence.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What went wrong with a request. Clients branch on this; the `message` next to it is for people.
///
/// New codes may be added: treat an unknown code like `internal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not a JSON object (or is a binary frame).
    BadJson,
    /// The JSON has no valid `id`, or a field is missing, of the wrong type or out of range.
    BadRequest,
    /// `type` names no request this relay knows.
    UnknownType,
    /// The frame is larger than `max_message_bytes`.
    TooLarge,
    /// Too many requests: wait and retry. Persistent flooding closes the connection.
    RateLimited,
    /// The relay does not speak the protocol version given in `hello`.
    UnsupportedVersion,
    /// The request came at the wrong point of the handshake (e.g. `login` before `hello`, or
    /// `hello` twice).
    OutOfOrder,
    /// The request needs a logged-in session.
    NotLoggedIn,
    /// The login signature does not verify for that public key and challenge.
    BadSignature,
    /// No such user, server, channel, call, invite or friend request (or not visible to you).
    NotFound,
    /// Your role or the channel's permissions do not allow this.
    Forbidden,
    /// Calls (and call signalling) need a mutual friendship.
    NotFriends,
    /// You are already friends (or the request is already pending).
    AlreadyFriends,
    /// You are not a member of that server.
    NotMember,
    /// You are already a member of that server.
    AlreadyMember,
    /// The invite code is unknown, revoked, expired or used up.
    InviteInvalid,
    /// The voice channel has reached its `max_participants`.
    ChannelFull,
    /// You (or the signalling target) are not in that voice channel.
    NotInChannel,
    /// The call or request is not in a state that allows this (e.g. accepting a call that is
    /// no longer ringing, or signalling in a call that has not been accepted).
    InvalidState,
    /// A relay-wide or per-user limit was reached (servers, channels, members, calls).
    LimitReached,
    /// Something failed inside the relay; the request may be retried.
    Internal,
    /// A display, server or channel name breaks the naming rules (invisible or bidirectional
    /// control characters, nothing visible, scripts mixed inside a word, too long...); the
    /// message says which field and why. See docs/protocol.md, "Names".
    InvalidName,
    /// You are banned from that server: you cannot join it until an admin lifts the ban.
    Banned,
    /// Someone else holds that handle, or one that differs only in case or look-alike
    /// characters (`handle_set`).
    HandleTaken,
    /// The login was signed for another relay name than any this relay is reached by (or, on
    /// a relay that knows its names, not signed for a relay name at all).
    WrongRelay,
}

impl ErrorCode {
    /// The wire spelling, e.g. `"not_friends"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::OutOfOrder => "out_of_order",
            ErrorCode::NotLoggedIn => "not_logged_in",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFriends => "not_friends",
            ErrorCode::AlreadyFriends => "already_friends",
            ErrorCode::NotMember => "not_member",
            ErrorCode::AlreadyMember => "already_member",
            ErrorCode::InviteInvalid => "invite_invalid",
            ErrorCode::ChannelFull => "channel_full",
            ErrorCode::NotInChannel => "not_in_channel",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::LimitReached => "limit_reached",
            ErrorCode::Internal => "internal",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::Banned => "banned",
            ErrorCode::HandleTaken => "handle_taken",
            ErrorCode::WrongRelay => "wrong_relay",
        }
    }

    /// Every code, for docs and metrics.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadJson,
        ErrorCode::BadRequest,
        ErrorCode::UnknownType,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::UnsupportedVersion,
        ErrorCode::OutOfOrder,
        ErrorCode::NotLoggedIn,
        ErrorCode::BadSignature,
        ErrorCode::NotFound,
        ErrorCode::Forbidden,
        ErrorCode::NotFriends,
        ErrorCode::AlreadyFriends,
        ErrorCode::NotMember,
        ErrorCode::AlreadyMember,
        ErrorCode::InviteInvalid,
        ErrorCode::ChannelFull,
        ErrorCode::NotInChannel,
        ErrorCode::InvalidState,
        ErrorCode::LimitReached,
        ErrorCode::Internal,
        ErrorCode::InvalidName,
        ErrorCode::Banned,
        ErrorCode::HandleTaken,
        ErrorCode::WrongRelay,
    ];
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as a value: code plus message. The relay's handlers return this; it goes on the wire
/// as `{"type": "error", "re": <id>, "code": ..., "message": ...}`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtoError {
    pub code: ErrorCode,
    pub message: String,
}

impl ProtoError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtoError {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_matches_serde() {
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_string(code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
        }
    }
}
