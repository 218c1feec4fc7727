//! docs/protocol.schema.json, generated from the Rust types so it cannot drift from them.
//!
//! The test below fails when the checked-in file is stale; `HUM_BLESS=1 cargo test -p hum-proto`
//! rewrites it.

use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use crate::signal::{ClientMessage, PROTOCOL_VERSION, ProbeReport, ServerMessage};

/// The JSON Schema (draft 2020-12) of every signalling frame in either direction. The root
/// accepts any `ClientMessage` or `ServerMessage`; `ProbeReport` is in `$defs` for `/probe`.
pub fn protocol_schema() -> Value {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let client = generator.subschema_for::<ClientMessage>();
    let server = generator.subschema_for::<ServerMessage>();
    let _probe = generator.subschema_for::<ProbeReport>();
    let defs = generator.take_definitions(true);
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": format!("Hum signalling protocol, version {PROTOCOL_VERSION}"),
        "description": "Every text frame on the relay's /ws WebSocket: ClientMessage from client to relay, ServerMessage from relay to client. See docs/protocol.md. Generated from crates/hum-proto; do not edit.",
        "anyOf": [client, server],
        "$defs": defs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn schema_path() -> PathBuf {
        std::path::PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../docs/protocol.schema.json")
    }

    #[test]
    fn checked_in_schema_is_current() {
        let mut want = serde_json::to_string_pretty(&protocol_schema()).unwrap();
        want.push('\n');
        let path = schema_path();
        if std::env::var_os("HUM_BLESS").is_some() {
            std::fs::write(&path, &want).unwrap();
            return;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is stale: run `HUM_BLESS=1 cargo test -p hum-proto` and commit it",
            path.display()
        );
    }
}
