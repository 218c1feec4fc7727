//! Slice messages off the wire (`MeshMsg::Slice` / `SliceRequest`, hum-proto mesh.rs), decoded and
//! then verified as a viewer would (hum_mesh::slice): the decoded slice is checked against its
//! record's hash and fed to an assembler. Properties: nothing panics; a decoded message re-encodes
//! to the same bytes; an accepted slice really is part of the chunk (it verifies again against the
//! hash).
#![no_main]

use hum_mesh::PeerId;
use hum_mesh::slice::{SliceAssembler, verify_slice};
use hum_proto::mesh::MeshMsg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = MeshMsg::decode(data) else {
        return;
    };
    assert_eq!(msg.encode().as_deref(), Ok(data));
    if let MeshMsg::Slice {
        record,
        index,
        encoded,
        ..
    } = msg
    {
        let Ok(mut asm) = SliceAssembler::new(record.clone()) else {
            return;
        };
        if asm
            .accept(PeerId(1), &record, index as u32, &encoded)
            .is_ok()
        {
            assert!(verify_slice(&record.hash, record.bytes, index as u32, &encoded).is_ok());
            assert!(asm.has(index as u32));
        }
    }
});
