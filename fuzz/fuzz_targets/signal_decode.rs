//! The relay's decoder of client frames, fed arbitrary bytes. It must never panic, must classify
//! every failure with a non-empty message, and anything it accepts must survive an
//! encode/decode round trip unchanged. The client-side decoder of relay frames must not panic
//! either.
#![no_main]

use hum_proto::signal::{
    decode_client_message, decode_client_message_limited, decode_server_message, encode,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match decode_client_message(text) {
        Ok(msg) => {
            let again = encode(&msg);
            let back = decode_client_message_limited(&again, usize::MAX)
                .unwrap_or_else(|e| panic!("re-encoded request does not decode: {e}: {again}"));
            assert_eq!(back, msg, "round trip changed the request: {again}");
            // `kind()` agrees with the wire `type`.
            let v: serde_json::Value = serde_json::from_str(&again).expect("encoded JSON parses");
            assert_eq!(v["type"].as_str(), Some(msg.request.kind()));
        }
        Err(e) => assert!(!e.error.message.is_empty(), "error without a message"),
    }
    if let Ok(msg) = decode_server_message(text) {
        let again = encode(&msg);
        let back = decode_server_message(&again).expect("re-encoded server message decodes");
        assert_eq!(back, msg);
    }
});
