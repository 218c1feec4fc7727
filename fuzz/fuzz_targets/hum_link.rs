//! `hum://` links (hum_proto::links), fed arbitrary text as a clipboard or the OS would hand it
//! over. The parser must never panic; a link it accepts must print as a link that parses back to
//! the same value, and a handle in it must pass the handle rules again.
#![no_main]

use hum_proto::links::{HumLink, MAX_LINK_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match HumLink::parse(text) {
        Ok(link) => {
            assert!(text.len() <= MAX_LINK_BYTES);
            let printed = link.to_string();
            assert!(printed.is_ascii(), "{printed}");
            assert_eq!(HumLink::parse(&printed), Ok(link.clone()), "{printed}");
            if let HumLink::FriendHandle(h) = &link {
                assert_eq!(hum_proto::names::normalize_handle(h.as_str()).as_deref(), Ok(h.as_str()));
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
