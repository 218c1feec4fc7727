//! docs/protocol.md is the reference other-language clients are written from, so its examples
//! must be exact: every ```json client block decodes as a ClientMessage, every ```json relay block
//! as a ServerMessage, every ```json probe block as a ProbeReport; and every request, reply,
//! event and error code appears in it.
//!
//! `HUM_BLESS=1` also writes the client examples to fuzz/seeds/signal_decode/ as the fuzzer's
//! starting corpus.

use std::collections::BTreeSet;
use std::path::PathBuf;

use hum_proto::signal::{
    ClientMessage, ErrorCode, ProbeReport, REQUEST_TYPES, ServerMessage, decode_client_message,
    protocol_schema,
};
use serde_json::Value;

fn root() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../..")
}

/// (info string, block text) for every fenced block.
fn blocks(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(String, String)> = None;
    for line in doc.lines() {
        if let Some(info) = line.strip_prefix("```") {
            match cur.take() {
                Some(b) => out.push(b),
                None => cur = Some((info.trim().to_string(), String::new())),
            }
        } else if let Some((_, text)) = cur.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    out
}

/// The `type` consts of a oneOf definition in the generated schema.
fn schema_types(def: &str) -> BTreeSet<String> {
    let schema = protocol_schema();
    schema["$defs"][def]["oneOf"]
        .as_array()
        .unwrap_or_else(|| panic!("{def} has no oneOf"))
        .iter()
        .filter_map(|v| v["properties"]["type"]["const"].as_str().map(String::from))
        .collect()
}

#[test]
fn every_example_decodes_and_everything_is_documented() {
    let doc = std::fs::read_to_string(root().join("docs/protocol.md")).unwrap();
    let mut requests = BTreeSet::new();
    let mut replies = BTreeSet::new();
    let mut events = BTreeSet::new();
    let mut client_examples = Vec::new();
    for (info, text) in blocks(&doc) {
        let kind = match info.as_str() {
            "json client" => "client",
            "json relay" => "relay",
            "json probe" => "probe",
            _ => continue,
        };
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("example is not JSON ({e}):\n{text}"));
        // One frame on the wire is one compact line.
        let frame = value.to_string();
        match kind {
            "client" => {
                let m: ClientMessage = decode_client_message(&frame)
                    .unwrap_or_else(|e| panic!("client example does not decode ({e}):\n{text}"));
                requests.insert(m.request.kind().to_string());
                client_examples.push(frame);
            }
            "relay" => {
                let m: ServerMessage = serde_json::from_str(&frame)
                    .unwrap_or_else(|e| panic!("relay example does not decode ({e}):\n{text}"));
                match m {
                    ServerMessage::Reply { .. } => {
                        replies.insert(value["reply"]["type"].as_str().unwrap_or("").to_string());
                    }
                    ServerMessage::Event { event } => {
                        events.insert(event.kind().to_string());
                    }
                    ServerMessage::Error { .. } => {}
                }
            }
            _ => {
                serde_json::from_str::<ProbeReport>(&frame)
                    .unwrap_or_else(|e| panic!("probe example does not decode ({e}):\n{text}"));
            }
        }
    }
    let want: BTreeSet<String> = REQUEST_TYPES.iter().map(|s| s.to_string()).collect();
    let missing: Vec<_> = want.difference(&requests).collect();
    assert!(
        missing.is_empty(),
        "requests without an example: {missing:?}"
    );
    // Replies that are only described in prose (same shape as one shown) are listed here.
    let prose_only: BTreeSet<String> = ["ok"].iter().map(|s| s.to_string()).collect();
    let missing: Vec<_> = schema_types("Reply")
        .into_iter()
        .filter(|t| !replies.contains(t) && !prose_only.contains(t))
        .collect();
    assert!(
        missing.is_empty(),
        "replies without an example: {missing:?}"
    );
    let prose_events: BTreeSet<String> =
        ["channel_updated"].iter().map(|s| s.to_string()).collect();
    let missing: Vec<_> = schema_types("Event")
        .into_iter()
        .filter(|t| {
            let in_prose = prose_events.contains(t) && doc.contains(&format!("`{t}`"));
            !events.contains(t) && !in_prose
        })
        .collect();
    assert!(missing.is_empty(), "events without an example: {missing:?}");
    for code in ErrorCode::ALL {
        assert!(
            doc.contains(&format!("| `{}` |", code.as_str())),
            "error code {code} not in the table"
        );
    }
    // The schema's ErrorCode enum and ErrorCode::ALL agree.
    let schema = protocol_schema();
    let n = schema["$defs"]["ErrorCode"]["oneOf"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert_eq!(n, ErrorCode::ALL.len(), "ErrorCode::ALL is missing a code");

    if std::env::var_os("HUM_BLESS").is_some() {
        let dir = root().join("fuzz/seeds/signal_decode");
        std::fs::create_dir_all(&dir).unwrap();
        for (i, frame) in client_examples.iter().enumerate() {
            std::fs::write(dir.join(format!("doc-{i:02}.json")), frame).unwrap();
        }
    }
}
