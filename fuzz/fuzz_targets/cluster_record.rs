//! A record of the relay cluster's log as read from Redis (hum_proto::cluster::log), fed arbitrary bytes:
//! it must never panic, and anything it accepts must re-encode to a record that decodes to the
//! same value.
#![no_main]

use hum_proto::cluster::log::{MAX_RECORD_BYTES, Record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Record::decode(data) {
        Ok(r) => {
            assert!(data.len() <= MAX_RECORD_BYTES);
            let again = Record::decode(r.encode().as_bytes()).expect("a decoded record re-decodes");
            assert_eq!(again, r);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
