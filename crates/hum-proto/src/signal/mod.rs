//! The signalling protocol between Hum clients and the relay: JSON text frames over a WebSocket
//! at `/ws`. docs/protocol.md is the full reference with an example of every message;
//! docs/protocol.schema.json is generated from these types.
//!
//! # Envelope
//!
//! Client → relay, one request per text frame, a JSON object with a client-chosen `id` and a
//! `type` ([`ClientMessage`], [`Request`]):
//!
//! ```json
//! {"id": 7, "type": "friend_request", "user": "3b6a27bc…"}
//! ```
//!
//! Relay → client, one [`ServerMessage`] per text frame, whose `type` is one of
//!
//! - `reply`: `{"type": "reply", "re": 7, "reply": {"type": "ok"}}`, the success answer to request 7;
//! - `error`: `{"type": "error", "re": 7, "code": "not_found", "message": "…"}`, its failure;
//! - `event`: `{"type": "event", "event": {"type": "presence", …}}`, pushed at any time.
//!
//! # Correlation
//!
//! Every request gets exactly one answer, a `reply` or an `error`, carrying the request's `id` as
//! `re`. Answers come in request order on a connection, but events may be interleaved anywhere.
//! If a frame is so broken that its `id` cannot be read, the error has `"re": null`. Ids need
//! only be unique among a connection's outstanding requests; a counter from 1 is simplest.
//!
//! # Handshake
//!
//! 1. Client: `hello {protocol: PROTOCOL_VERSION}`. Relay: reply `challenge {protocol, nonce}`,
//!    or error `unsupported_version`.
//! 2. Client signs [`login_signing_bytes`]`(nonce)` (a domain-separation prefix followed by the 32
//!    nonce bytes) with its Ed25519 secret key and sends `login {public_key, signature,
//!    display_name?}`. Relay: reply `welcome {user, new_account, limits}`, or error
//!    `bad_signature`. The public key *is* the account: the same key always resumes the same
//!    account, a new key is a new account. A second login with the same key replaces the older
//!    session (it receives `session_replaced` and is closed).
//! 3. Anything before `hello` or `login` gets `out_of_order` / `not_logged_in`; the connection
//!    stays open so the client can correct itself.
//!
//! # Compatibility
//!
//! Unknown fields are ignored in both directions, so fields may be added without a version bump.
//! New request types, reply types, event types and error codes may appear; clients ignore
//! unknown events and treat unknown error codes like `internal`. Removing or changing the meaning
//! of anything bumps [`PROTOCOL_VERSION`].

mod error;
mod model;
mod probe;
mod reply;
mod request;
mod schema;
mod stream;

pub use error::{ErrorCode, ProtoError};
pub use model::{
    ChannelInfo, ChannelPermissions, DisplayName, Friend, Handle, InviteInfo, Limits, Member, Name,
    NameError, Permissions, Presence, ReleaseError, ReleaseInfo, Role, RosterEntry, ServerInfo,
    ServerSummary, Status, TurnServer, UserSummary, VoiceLocation, VoiceState, VoiceStatePatch,
    VoiceTopology,
};
pub use probe::ProbeReport;
pub use reply::{
    CallEndReason, Event, MemberLeftReason, Reply, RosterLeaveReason, ServerMessage,
    ServerRemovedReason,
};
pub use request::{
    ClientMessage, REQUEST_TYPES, Request, SignalPayload, SignalScope, VideoQuality,
};
pub use schema::protocol_schema;
pub use stream::{
    MeshGrant, MeshSignal, RecordingInfo, StreamInfo, StreamLayer, StreamLayerName, pick_layer,
};

use crate::ids::{Nonce, RequestId};

/// The protocol version this crate speaks, exchanged in `hello` / `challenge`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame (in bytes) either side sends or accepts, unless the relay's `welcome`
/// announces a different `limits.max_message_bytes`.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Prefix of the signed login message, so a login signature can never be mistaken for a
/// signature made for any other purpose with the same key.
pub const LOGIN_CONTEXT: &[u8] = b"hum-relay-login-v1\0";

/// The exact bytes a client signs to log in: [`LOGIN_CONTEXT`] followed by the 32 nonce bytes.
pub fn login_signing_bytes(nonce: &Nonce) -> Vec<u8> {
    let mut out = Vec::with_capacity(LOGIN_CONTEXT.len() + Nonce::LEN);
    out.extend_from_slice(LOGIN_CONTEXT);
    out.extend_from_slice(nonce.as_bytes());
    out
}

/// Prefix of a login signed for one relay (see [`bound_login_signing_bytes`]).
pub const LOGIN_CONTEXT_BOUND: &[u8] = b"hum-relay-login-v2\0";

/// The longest relay name a login may be signed for (a DNS name of 253 bytes and `:65535`, or a
/// bracketed IPv6 address and port).
pub const MAX_RELAY_NAME: usize = 261;

/// The exact bytes a client signs to log in to one relay: [`LOGIN_CONTEXT_BOUND`], the length of
/// `relay` as two big-endian bytes, `relay` (the `host[:port]` the client dialed, as it sends it
/// in `login.relay`), then the 32 nonce bytes. A relay that knows its names refuses a login
/// signed for another name, so a malicious relay cannot pass our signature on to log in as us
/// elsewhere (docs/security.md, "Login binding").
pub fn bound_login_signing_bytes(relay: &str, nonce: &Nonce) -> Vec<u8> {
    let name = relay.as_bytes();
    let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(LOGIN_CONTEXT_BOUND.len() + 2 + name.len() + Nonce::LEN);
    out.extend_from_slice(LOGIN_CONTEXT_BOUND);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&name[..usize::from(len)]);
    out.extend_from_slice(nonce.as_bytes());
    out
}

/// The relay name (`host[:port]`) of a relay URL such as `ws://Relay.example:9000/ws`: the
/// authority without user info, lower-cased. `None` when the URL has no `scheme://` or no host.
pub fn relay_name_from_url(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let name = authority.trim().to_ascii_lowercase();
    (!name.is_empty() && !name.starts_with(':') && name.len() <= MAX_RELAY_NAME).then_some(name)
}

/// Whether two relay names name the same relay: compared without case, without a trailing dot
/// on the host and without the default ports `:80` and `:443`.
pub fn same_relay_name(a: &str, b: &str) -> bool {
    fn canonical(name: &str) -> String {
        let name = name.trim().to_ascii_lowercase();
        let (host, port) = match name.rsplit_once(':') {
            // `[::1]` alone has colons inside the brackets, not a port.
            Some((h, p)) if !p.contains(']') && p.bytes().all(|b| b.is_ascii_digit()) => {
                (h.to_string(), Some(p.to_string()))
            }
            _ => (name.clone(), None),
        };
        let host = host.strip_suffix('.').unwrap_or(&host).to_string();
        match port.as_deref() {
            None | Some("80") | Some("443") => host,
            Some(p) => format!("{host}:{p}"),
        }
    }
    canonical(a) == canonical(b)
}

/// A client frame the relay could not accept, with what to send back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct DecodeError {
    /// The request id, if it could be read.
    pub re: Option<RequestId>,
    pub error: ProtoError,
}

impl DecodeError {
    fn new(re: Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Self {
        DecodeError {
            re,
            error: ProtoError::new(code, message),
        }
    }
}

/// Decode one client text frame, classifying every failure into a typed error.
///
/// Never panics, whatever the input; frames over [`MAX_MESSAGE_BYTES`] are refused unread.
pub fn decode_client_message(text: &str) -> Result<ClientMessage, DecodeError> {
    decode_client_message_limited(text, MAX_MESSAGE_BYTES)
}

/// [`decode_client_message`] with an explicit size limit.
pub fn decode_client_message_limited(
    text: &str,
    max_bytes: usize,
) -> Result<ClientMessage, DecodeError> {
    if text.len() > max_bytes {
        return Err(DecodeError::new(
            None,
            ErrorCode::TooLarge,
            format!("frame is {} bytes; the limit is {max_bytes}", text.len()),
        ));
    }
    // Fast path: a well-formed request decodes in one go.
    let first_err = match serde_json::from_str::<ClientMessage>(text) {
        Ok(m) => return Ok(m),
        Err(e) => e,
    };
    // Slow path: find out what is wrong, to say so precisely.
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Err(DecodeError::new(
                None,
                ErrorCode::BadJson,
                format!("not JSON: {e}"),
            ));
        }
    };
    let Some(obj) = value.as_object() else {
        return Err(DecodeError::new(
            None,
            ErrorCode::BadJson,
            "a request must be a JSON object",
        ));
    };
    let Some(id) = obj.get("id").and_then(serde_json::Value::as_u64) else {
        return Err(DecodeError::new(
            None,
            ErrorCode::BadRequest,
            "missing or invalid `id`: it must be a non-negative integer",
        ));
    };
    let re = Some(RequestId(id));
    let Some(kind) = obj.get("type").and_then(serde_json::Value::as_str) else {
        return Err(DecodeError::new(
            re,
            ErrorCode::BadRequest,
            "missing or invalid `type`: it must be a string",
        ));
    };
    if !REQUEST_TYPES.contains(&kind) {
        let shown: String = kind.chars().take(40).collect();
        return Err(DecodeError::new(
            re,
            ErrorCode::UnknownType,
            format!("unknown request type `{shown}`"),
        ));
    }
    if let Some(e) = name_error(obj) {
        return Err(DecodeError::new(re, ErrorCode::InvalidName, e));
    }
    Err(DecodeError::new(
        re,
        ErrorCode::BadRequest,
        format!("invalid `{kind}` request: {first_err}"),
    ))
}

/// If a name field of a request that failed to decode breaks the naming rules, say which and
/// why (answered as `invalid_name` rather than a generic `bad_request`).
fn name_error(obj: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    for (field, max) in [
        ("display_name", DisplayName::MAX_CHARS),
        ("name", Name::MAX_CHARS),
    ] {
        if let Some(s) = obj.get(field).and_then(serde_json::Value::as_str)
            && let Err(e) = crate::names::normalize_name(s, max)
        {
            return Some(format!("`{field}`: {e}"));
        }
    }
    if let Some(s) = obj.get("handle").and_then(serde_json::Value::as_str)
        && let Err(e) = crate::names::normalize_handle(s)
    {
        return Some(format!("`handle`: {e}"));
    }
    None
}

/// The `id` of a request frame, if it is a JSON object with a readable one, without decoding
/// the rest (used to answer frames that are refused before decoding, e.g. when rate limited).
pub fn peek_request_id(text: &str) -> Option<RequestId> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<u64>,
    }
    if text.len() > MAX_MESSAGE_BYTES {
        return None;
    }
    serde_json::from_str::<IdOnly>(text).ok()?.id.map(RequestId)
}

/// Decode one relay text frame (the client side).
pub fn decode_server_message(text: &str) -> Result<ServerMessage, serde_json::Error> {
    serde_json::from_str(text)
}

/// Encode a message for the wire. Serialising these types cannot fail (string keys only).
pub fn encode<T: serde::Serialize>(msg: &T) -> String {
    serde_json::to_string(msg).unwrap_or_else(|e| {
        // Unreachable for our types; still never panic on the relay.
        format!(r#"{{"type":"error","re":null,"code":"internal","message":"encode failed: {e}"}}"#)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ChannelId, UserId};

    #[test]
    fn request_round_trips_flat() {
        let m = ClientMessage {
            id: RequestId(3),
            request: Request::Signal {
                to: UserId([1; 32]),
                scope: SignalScope::Channel(ChannelId(9)),
                payload: SignalPayload::Ice {
                    candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host".into(),
                    sdp_mid: Some("0".into()),
                    sdp_mline_index: Some(0),
                    username_fragment: None,
                },
            },
        };
        let json = encode(&m);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["id"], 3);
        assert_eq!(v["type"], "signal");
        assert_eq!(v["scope"]["channel"], 9);
        assert_eq!(v["payload"]["kind"], "ice");
        assert_eq!(decode_client_message(&json).unwrap(), m);
    }

    #[test]
    fn unknown_payload_fields_are_dropped_not_forwarded() {
        let m = decode_client_message(
            r#"{"id":1,"type":"signal","to":"0101010101010101010101010101010101010101010101010101010101010101","scope":{"call":1},"payload":{"kind":"offer","sdp":"v=0","smuggled":"x"}}"#,
        )
        .unwrap();
        let Request::Signal { payload, .. } = m.request else {
            panic!("not a signal")
        };
        let forwarded = encode(&payload);
        assert_eq!(forwarded, r#"{"kind":"offer","sdp":"v=0"}"#);
    }

    #[test]
    fn unit_requests_need_only_id_and_type() {
        let m = decode_client_message(r#"{"id":1,"type":"ping"}"#).unwrap();
        assert_eq!(m.request, Request::Ping);
        assert_eq!(m.id, RequestId(1));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let m = decode_client_message(r#"{"id":1,"type":"ping","future":true}"#).unwrap();
        assert_eq!(m.request, Request::Ping);
    }

    #[test]
    fn decode_errors_are_classified() {
        let code = |s: &str| decode_client_message(s).unwrap_err().error.code;
        assert_eq!(code("garbage"), ErrorCode::BadJson);
        assert_eq!(code("[1,2]"), ErrorCode::BadJson);
        assert_eq!(code(r#"{"type":"ping"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"id":-1,"type":"ping"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"id":1}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"id":1,"type":"fly"}"#), ErrorCode::UnknownType);
        assert_eq!(
            code(r#"{"id":1,"type":"friend_request","user":5}"#),
            ErrorCode::BadRequest
        );
        let e = decode_client_message(r#"{"id":4,"type":"friend_request"}"#).unwrap_err();
        assert_eq!(e.re, Some(RequestId(4)));
        assert!(e.error.message.contains("user"), "{}", e.error.message);
        let big = format!(
            r#"{{"id":1,"type":"ping","pad":"{}"}}"#,
            "x".repeat(MAX_MESSAGE_BYTES)
        );
        assert_eq!(code(&big), ErrorCode::TooLarge);
    }

    #[test]
    fn bad_names_are_answered_invalid_name() {
        let e = decode_client_message(
            r#"{"id":5,"type":"set_profile","display_name":"abc\u202egpj.exe"}"#,
        )
        .unwrap_err();
        assert_eq!(e.re, Some(RequestId(5)));
        assert_eq!(e.error.code, ErrorCode::InvalidName);
        assert!(
            e.error.message.contains("display_name"),
            "{}",
            e.error.message
        );
        assert!(e.error.message.contains("U+202E"), "{}", e.error.message);
        let e = decode_client_message(r#"{"id":6,"type":"server_create","name":"\u200b\ufeff"}"#)
            .unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InvalidName);
        let e = decode_client_message(
            r#"{"id":7,"type":"channel_rename","channel":1,"name":"P\u0430ypal"}"#,
        )
        .unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InvalidName);
        assert!(e.error.message.contains("scripts"), "{}", e.error.message);
        // Names arrive normalised to NFC.
        let m =
            decode_client_message(r#"{"id":8,"type":"set_profile","display_name":"Zoe\u0308"}"#)
                .unwrap();
        assert_eq!(
            m.request,
            Request::SetProfile {
                display_name: DisplayName::new("Zo\u{eb}").unwrap()
            }
        );
    }

    #[test]
    fn every_request_type_is_listed() {
        // Each listed type decodes as far as its fields (not `unknown_type`), and `kind()` agrees.
        for t in REQUEST_TYPES {
            let e = decode_client_message(&format!(r#"{{"id":1,"type":"{t}","zzz":1}}"#));
            match e {
                Ok(m) => assert_eq!(m.request.kind(), *t),
                Err(e) => assert_eq!(e.error.code, ErrorCode::BadRequest, "{t}: {e}"),
            }
        }
    }

    #[test]
    fn server_messages_are_tagged() {
        let m = ServerMessage::reply(RequestId(2), Reply::Ok);
        assert_eq!(
            encode(&m),
            r#"{"type":"reply","re":2,"reply":{"type":"ok"}}"#
        );
        let e = ServerMessage::error(None, ProtoError::new(ErrorCode::BadJson, "x"));
        assert_eq!(
            encode(&e),
            r#"{"type":"error","re":null,"code":"bad_json","message":"x"}"#
        );
        assert_eq!(decode_server_message(&encode(&e)).unwrap(), e);
        let ev = ServerMessage::event(Event::SessionReplaced);
        assert_eq!(
            encode(&ev),
            r#"{"type":"event","event":{"type":"session_replaced"}}"#
        );
    }

    #[test]
    fn request_ids_can_be_peeked() {
        assert_eq!(
            peek_request_id(r#"{"type":"x","id":9,"junk":[1,{}]}"#),
            Some(RequestId(9))
        );
        assert_eq!(peek_request_id(r#"{"type":"x"}"#), None);
        assert_eq!(peek_request_id("nonsense"), None);
        assert_eq!(peek_request_id(r#"{"id":"9"}"#), None);
    }

    #[test]
    fn bound_login_bytes_name_the_relay() {
        let b = bound_login_signing_bytes("relay.example:9000", &Nonce([7; 32]));
        assert!(b.starts_with(LOGIN_CONTEXT_BOUND));
        let rest = &b[LOGIN_CONTEXT_BOUND.len()..];
        assert_eq!(&rest[..2], &[0, 18]);
        assert_eq!(&rest[2..20], b"relay.example:9000");
        assert_eq!(&rest[20..], &[7u8; 32]);
        // Another name or nonce signs other bytes; neither form is a prefix of the other.
        assert_ne!(
            b,
            bound_login_signing_bytes("relay.example:9001", &Nonce([7; 32]))
        );
        assert_ne!(
            b,
            bound_login_signing_bytes("relay.example:9000", &Nonce([8; 32]))
        );
        assert!(!b.starts_with(LOGIN_CONTEXT));
    }

    #[test]
    fn relay_names_from_urls() {
        let name = |u| relay_name_from_url(u);
        assert_eq!(
            name("ws://Relay.Example:9000/ws").as_deref(),
            Some("relay.example:9000")
        );
        assert_eq!(
            name("wss://relay.example/ws?x=1").as_deref(),
            Some("relay.example")
        );
        assert_eq!(
            name("ws://user:pw@relay.example:9/").as_deref(),
            Some("relay.example:9")
        );
        assert_eq!(name("ws://[::1]:9000/ws").as_deref(), Some("[::1]:9000"));
        assert_eq!(
            name("ws://127.0.0.1:9000").as_deref(),
            Some("127.0.0.1:9000")
        );
        assert_eq!(name("relay.example:9000"), None);
        assert_eq!(name("ws:///ws"), None);
        assert_eq!(name("ws://:9000/"), None);
    }

    #[test]
    fn same_relay_name_ignores_case_default_ports_and_a_trailing_dot() {
        assert!(same_relay_name("Relay.example", "relay.example"));
        assert!(same_relay_name("relay.example:443", "relay.example"));
        assert!(same_relay_name("relay.example.:80", "relay.example"));
        assert!(same_relay_name("[::1]:9000", "[::1]:9000"));
        assert!(same_relay_name("[::1]", "[::1]:443"));
        assert!(!same_relay_name("relay.example:9000", "relay.example:9001"));
        assert!(!same_relay_name("relay.example:9000", "relay.example"));
        assert!(!same_relay_name("evil.example", "relay.example"));
        assert!(!same_relay_name("127.0.0.1:9000", "localhost:9000"));
    }

    #[test]
    fn login_bytes_are_prefix_then_nonce() {
        let b = login_signing_bytes(&Nonce([9; 32]));
        assert!(b.starts_with(LOGIN_CONTEXT));
        assert_eq!(&b[LOGIN_CONTEXT.len()..], &[9u8; 32]);
    }
}
