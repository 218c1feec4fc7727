//! What the SFU parses of outside packets, fed arbitrary bytes: the VP8 payload descriptor, the
//! RFC 6464 level byte, and a packet sequence (layers, sequence numbers, timestamps, keyframe
//! flags, NACKs) driven through a simulcast forwarder and the NACK cache. Nothing may panic;
//! a parsed descriptor never points past the payload; forwarded in-order packets of one layer
//! come out numbered without gaps.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hum_sfu::packet::audio_level::AudioLevel;
use hum_sfu::packet::cache::PacketCache;
use hum_sfu::packet::forwarder::{Forwarder, InPacket};
use hum_sfu::packet::layer::Layer;
use hum_sfu::packet::vp8;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = vp8::parse(data) {
        assert!(d.header_len <= data.len());
        assert!(!d.keyframe || d.starts_frame());
    }
    if let Some(&b) = data.first() {
        let (level, _) = AudioLevel::from_ext_byte(b);
        assert!(level.neg_dbov() <= 127);
    }
    let t0 = Instant::now();
    let mut f = Forwarder::simulcast(90_000, 1);
    let mut cache = PacketCache::new(64, Duration::from_millis(10), 1000, 50);
    let mut last_out: Option<u64> = None;
    for (i, c) in data.chunks_exact(8).enumerate() {
        let at = t0 + Duration::from_millis(i as u64 * 5 + u64::from(c[0] >> 4));
        match c[1] & 0x0c {
            0 => f.set_target(Some(Layer(c[1] & 0x03))),
            4 if c[1] & 0x30 == 0x30 => f.set_target(None),
            _ => {}
        }
        let p = InPacket {
            layer: Layer(c[0] & 0x03),
            seq: u64::from(u16::from_be_bytes([c[2], c[3]])) + (u64::from(c[1] >> 6) << 16),
            timestamp: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
            keyframe_start: c[1] & 0x10 != 0,
            arrival: at,
        };
        if let Some(out) = f.forward(&p) {
            cache.insert(out.seq, out.timestamp, false, Arc::from(&c[..]), at);
            if let Some(prev) = last_out {
                // Never more than the incoming jump away: no runaway numbering.
                assert!(out.seq.abs_diff(prev) <= (1 << 18) + 1);
            }
            last_out = Some(out.seq);
        }
        if c[1] & 0x20 != 0 {
            let seqs: Vec<u64> = c[2..].iter().map(|&d| last_out.unwrap_or(0).saturating_sub(u64::from(d))).collect();
            for r in cache.on_nack(&seqs, at) {
                assert!(seqs.contains(&r.seq));
            }
        }
    }
});
