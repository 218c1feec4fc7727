//! docs/protocol.schema.json must accept what hum-proto really sends, and refuse what it does
//! not: frames encoded from the Rust types and every example in docs/protocol.md are validated
//! against the checked-in schema with an independent JSON Schema implementation (`jsonschema`).
//! The schema once required 32 hex characters for a 32-byte key (64 on the wire) and matched no
//! real login; this test is what would have caught it.

// Helpers outside #[test] functions: a failure there fails the test, as an unwrap inside one does.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use hum_proto::signal::{
    ChannelPermissions, ClientMessage, DisplayName, ErrorCode, Event, Limits, Name, ProtoError,
    Reply, Request, ServerMessage, SignalPayload, SignalScope, TurnServer, UserSummary, encode,
};
use hum_proto::{ChannelId, InviteCode, Nonce, RequestId, ServerId, Signature, UserId};
use serde_json::Value;

fn root() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../..")
}

fn validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(root().join("docs/protocol.schema.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::draft202012::new(&schema).expect("the schema compiles")
}

fn check(v: &jsonschema::Validator, frame: &str) {
    let value: Value = serde_json::from_str(frame).unwrap();
    let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{frame}\nfails the schema:\n{}",
        errors.join("\n")
    );
}

fn client(id: u64, request: Request) -> String {
    encode(&ClientMessage {
        id: RequestId(id),
        request,
    })
}

#[test]
fn frames_hum_proto_encodes_validate() {
    let v = validator();
    let ada = UserId([0xa1; 32]);
    let frames = [
        client(
            1,
            Request::Hello {
                protocol: 1,
                client: Some("hum-test".into()),
            },
        ),
        client(
            2,
            Request::Login {
                public_key: ada,
                signature: Signature([0x9f; 64]),
                display_name: Some(DisplayName::new("Ada").unwrap()),
                relay: Some("relay.example:9000".into()),
            },
        ),
        client(3, Request::Ping),
        client(4, Request::TurnCredentials),
        client(4, Request::FriendRequest { user: ada }),
        client(
            5,
            Request::Signal {
                to: ada,
                scope: SignalScope::Channel(ChannelId(5)),
                payload: SignalPayload::Ice {
                    candidate: "candidate:1 1 udp 1 192.0.2.7 5000 typ host".into(),
                    sdp_mid: Some("0".into()),
                    sdp_mline_index: Some(0),
                    username_fragment: None,
                },
            },
        ),
        client(
            6,
            Request::ChannelCreate {
                server: ServerId(3),
                name: Name::new("Lounge").unwrap(),
                max_participants: Some(8),
                permissions: Some(ChannelPermissions::default()),
            },
        ),
        client(
            7,
            Request::InviteJoin {
                code: InviteCode::new("k7Qm2xRtZp").unwrap(),
            },
        ),
        encode(&ServerMessage::reply(
            RequestId(1),
            Reply::Challenge {
                protocol: 1,
                nonce: Nonce([0x3c; 32]),
                relay: "hum-relay/0.1.0".into(),
            },
        )),
        encode(&ServerMessage::reply(
            RequestId(2),
            Reply::Welcome {
                user: UserSummary {
                    id: ada,
                    display_name: DisplayName::new("Ada").unwrap(),
                },
                new_account: true,
                limits: Limits {
                    max_message_bytes: 65_536,
                    rate_per_sec: 50,
                    rate_burst: 200,
                },
                turn: Some(TurnServer {
                    urls: vec!["turn:relay.example:3478?transport=udp".into()],
                    username: "1764930000:a1a1a1a1".into(),
                    credential: "c2VjcmV0LWhtYWMtc2hhMS0yMGJ5dGVz".into(),
                    expires_at: 1_764_930_000,
                }),
            },
        )),
        encode(&ServerMessage::error(
            Some(RequestId(3)),
            ProtoError::new(ErrorCode::InvalidName, "`display_name`: ..."),
        )),
        encode(&ServerMessage::error(
            None,
            ProtoError::new(ErrorCode::BadJson, "not JSON"),
        )),
        encode(&ServerMessage::event(Event::Signal {
            from: ada,
            scope: SignalScope::Call(hum_proto::CallId(1)),
            payload: SignalPayload::Offer { sdp: "v=0".into() },
        })),
    ];
    for f in &frames {
        check(&v, f);
    }
}

#[test]
fn every_protocol_md_example_validates() {
    let v = validator();
    let doc = std::fs::read_to_string(root().join("docs/protocol.md")).unwrap();
    let mut n = 0;
    let mut cur: Option<String> = None;
    for line in doc.lines() {
        if let Some(info) = line.strip_prefix("```") {
            match cur.take() {
                Some(text) => {
                    check(&v, &text);
                    n += 1;
                }
                None if matches!(info.trim(), "json client" | "json relay") => {
                    cur = Some(String::new())
                }
                None => {
                    // Another kind of block: skip to its end.
                    cur = None;
                }
            }
        } else if let Some(text) = cur.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    assert!(n > 50, "only {n} examples found");
}

#[test]
fn the_schema_refuses_what_the_decoder_refuses() {
    let v = validator();
    let bad = [
        // A 32-byte key written as 32 hex characters (the old pattern's length).
        format!(
            r#"{{"id":1,"type":"friend_request","user":"{}"}}"#,
            "ab".repeat(16)
        ),
        // Uppercase hex.
        format!(
            r#"{{"id":1,"type":"friend_request","user":"{}"}}"#,
            "AB".repeat(32)
        ),
        // A 64-byte signature one character short.
        format!(
            r#"{{"id":1,"type":"login","public_key":"{}","signature":"{}"}}"#,
            "ab".repeat(32),
            "9".repeat(127)
        ),
        r#"{"id":1,"type":"server_create","name":""}"#.to_string(),
        r#"{"id":-1,"type":"ping"}"#.to_string(),
        r#"{"id":1,"type":"fly"}"#.to_string(),
    ];
    for f in &bad {
        let value: Value = serde_json::from_str(f).unwrap();
        assert!(!v.is_valid(&value), "the schema accepts {f}");
        assert!(
            hum_proto::signal::decode_client_message(f).is_err(),
            "the decoder accepts {f}"
        );
    }
}
