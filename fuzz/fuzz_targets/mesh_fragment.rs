//! Data-channel fragments off the wire, through the reassembler and on into the mesh decoder, as
//! hum-engine's mesh links hand them over. Properties: nothing panics; a reassembled message is never
//! larger than the mesh limit; the reassembler never holds more than `MAX_PENDING` messages.
#![no_main]

use std::time::Duration;

use hum_mesh::fragment::{MAX_PENDING, Reassembler};
use hum_mesh::{MeshMsg, Time};
use hum_proto::mesh::MAX_MESSAGE_BYTES;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = Reassembler::new(Duration::from_secs(2));
    let mut now = Time::from_millis(1);
    // Frames: [advance ms u8][len u16 BE][len bytes].
    let mut rest = data;
    while rest.len() >= 3 {
        now = now + Duration::from_millis(u64::from(rest[0]) * 16);
        let n = (u16::from_be_bytes([rest[1], rest[2]]) as usize).min(rest.len() - 3);
        let frag = &rest[3..3 + n];
        rest = &rest[3 + n..];
        if let Ok(Some(msg)) = r.push(now, frag) {
            assert!(msg.len() <= MAX_MESSAGE_BYTES);
            let _ = MeshMsg::decode(&msg);
        }
        assert!(r.pending() <= MAX_PENDING);
    }
});
