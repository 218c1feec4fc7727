//! The Y4M reader, fed arbitrary bytes. It must never panic or allocate beyond what the input
//! holds; every frame it returns has exactly the I420 size of the header's dimensions, and a
//! frame it accepts re-encodes through the writer to the same pixels.
#![no_main]

use std::io::Cursor;
use std::time::Instant;

use hum_media::video::frame::i420_len;
use hum_media::video::y4m::{Y4mReader, Y4mWriter};
use hum_media::video::{VideoFormat, VideoFrame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = Y4mReader::new(Cursor::new(data)) else {
        return;
    };
    let h = reader.header();
    for _ in 0..8 {
        match reader.read_frame() {
            Ok(Some(frame)) => {
                assert_eq!(frame.len(), i420_len(h.width, h.height));
                let f = VideoFrame::from_i420(h.width, h.height, frame, Instant::now())
                    .expect("a frame the reader accepted has a valid size");
                let mut w = Y4mWriter::new(Vec::new(), VideoFormat::new(h.width, h.height, h.fps()))
                    .expect("writer");
                w.write_frame(&f).expect("write");
                let out = w.into_inner();
                let mut again = Y4mReader::new(Cursor::new(out)).expect("own output parses");
                let back = again.read_frame().expect("frame").expect("one frame");
                assert_eq!(back, f.as_bytes());
            }
            Ok(None) => break,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                break;
            }
        }
    }
});
