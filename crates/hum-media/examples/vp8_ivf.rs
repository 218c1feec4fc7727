//! Writes the moving test pattern as a VP8 stream in an IVF file (the container libvpx's own
//! tools use: 32-byte header, then per frame a 12-byte header and the frame). For measuring
//! decoders outside the engine, e.g. WebCodecs in the webview (docs/app.md, "Video: numbers").
//!
//! cargo run --release -p hum-media --example vp8_ivf -- OUT.ivf [WxH] [frames] [kbit/s]

use std::io::Write;
use std::time::Instant;

use hum_media::video::pattern::pattern_frame;
use hum_media::video::{EncoderConfig, Vp8Encoder, WallAnchor};
use hum_proto::Bitrate;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args
        .first()
        .ok_or("usage: vp8_ivf OUT.ivf [WxH] [frames] [kbit/s]")?;
    let (w, h) = args
        .get(1)
        .and_then(|s| s.split_once('x'))
        .map(|(w, h)| (w.parse().unwrap_or(640), h.parse().unwrap_or(360)))
        .unwrap_or((640, 360));
    let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(300);
    let kbps: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(500);
    let mut enc = Vp8Encoder::new(EncoderConfig::camera(w, h, 30, Bitrate::from_kbps(kbps)))?;
    let (t0, anchor) = (Instant::now(), WallAnchor::now());
    let mut frames = Vec::new();
    for k in 0..n {
        let at = t0 + std::time::Duration::from_micros(k * 1_000_000 / 30);
        let f = pattern_frame(w, h, k, at, &anchor)?;
        if let Some(e) = enc.encode(&f)? {
            frames.push(e.data);
        }
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    file.write_all(b"DKIF")?;
    file.write_all(&0u16.to_le_bytes())?; // version
    file.write_all(&32u16.to_le_bytes())?; // header size
    file.write_all(b"VP80")?;
    file.write_all(&(w as u16).to_le_bytes())?;
    file.write_all(&(h as u16).to_le_bytes())?;
    file.write_all(&30u32.to_le_bytes())?; // rate
    file.write_all(&1u32.to_le_bytes())?; // scale
    file.write_all(&(frames.len() as u32).to_le_bytes())?;
    file.write_all(&0u32.to_le_bytes())?;
    for (i, f) in frames.iter().enumerate() {
        file.write_all(&(f.len() as u32).to_le_bytes())?;
        file.write_all(&(i as u64).to_le_bytes())?;
        file.write_all(f)?;
    }
    println!("{out}: {} frames of {w}x{h}", frames.len());
    Ok(())
}
