//! End-to-end encrypted media (hum_e2ee): every received frame is outside bytes (the SFU, the
//! relay or another member chose them), and so is every sealed key. Each input is decrypted as
//! an Opus and as a VP8 frame by a ring holding a sender's keys of two epochs, and read as a
//! sealed key (epoch, salt, sealed, signature) to open. Nothing may panic; whatever decrypts
//! must have carried an SFrame header and tag. The seeds (fuzz/seeds/e2ee_frame, written by
//! `HUM_BLESS=1 cargo test -p hum-e2ee`) really decrypt, so mutations start inside the AEAD.
//! A fresh ring per input: a ring remembers the counters it accepted (anti-replay), so a shared
//! one would refuse every mutation of a seed before the AEAD.
#![no_main]

use hum_e2ee::fixture;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ring = fixture::receiving_ring().expect("fixture keys derive");
    fixture::exercise(data, &ring);
});
