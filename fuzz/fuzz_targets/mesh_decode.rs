//! The mesh wire decoder, fed arbitrary bytes. It must never panic; anything it accepts must
//! re-encode to exactly the same bytes (the format has one encoding per message) and report its
//! encoded length exactly.
#![no_main]

use hum_proto::mesh::{MAX_MESSAGE_BYTES, MeshMsg};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match MeshMsg::decode(data) {
        Ok(msg) => {
            assert!(data.len() <= MAX_MESSAGE_BYTES);
            assert_eq!(msg.encoded_len(), data.len(), "encoded_len disagrees: {msg:?}");
            let again = msg.encode().expect("a decoded message re-encodes");
            assert_eq!(again, data, "re-encoding changed the bytes: {msg:?}");
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
