#![no_main]
//! Names from outside (display names, server and channel names, handles, names read back from an
//! older store): the checks never panic; what they accept is accepted again unchanged (one
//! canonical form), is trimmed, bounded, and holds no control, bidirectional-control or
//! zero-width character; a repaired name is a valid one; a handle's key is a fixed point.
use hum_proto::names::{
    handle_key, is_bidi_control, normalize_handle, normalize_name, repair_name, skeleton,
};
use libfuzzer_sys::fuzz_target;

fn assert_clean(n: &str, max: usize) {
    assert!(!n.is_empty() && n.chars().count() <= max, "{n:?}");
    assert_eq!(n.trim(), n, "untrimmed {n:?}");
    assert!(
        !n.chars().any(|c| c.is_control()
            || is_bidi_control(c)
            || matches!(c, '\u{200B}' | '\u{FEFF}' | '\u{2028}' | '\u{2029}')),
        "{n:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for max in [32, 64] {
        if let Ok(n) = normalize_name(s, max) {
            assert_clean(&n, max);
            assert_eq!(normalize_name(&n, max).as_deref(), Ok(n.as_str()));
        }
        if let Some(r) = repair_name(s, max) {
            assert_eq!(normalize_name(&r, max).as_deref(), Ok(r.as_str()), "repaired {s:?}");
        }
    }
    let _ = skeleton(s);
    if let Ok(h) = normalize_handle(s) {
        assert_clean(&h, hum_proto::names::HANDLE_MAX_CHARS);
        assert_eq!(normalize_handle(&h).as_deref(), Ok(h.as_str()));
        assert!(!h.contains(char::is_whitespace), "{h:?}");
        let _ = handle_key(&h);
    }
});
