//! A relay node's announcement as read from Redis, fed arbitrary bytes: it must never panic, and
//! anything it accepts must re-encode to an announcement that decodes to the same value.
#![no_main]

use hum_proto::cluster::{MAX_NODE_INFO_BYTES, NodeInfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match NodeInfo::decode(data) {
        Ok(info) => {
            assert!(data.len() <= MAX_NODE_INFO_BYTES);
            let again =
                NodeInfo::decode(info.encode().as_bytes()).expect("a decoded node re-decodes");
            assert_eq!(again, info);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
