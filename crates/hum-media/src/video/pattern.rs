//! The synthetic test pattern: a moving picture that carries its frame number and capture time
//! as a machine-readable code, so a receiver can measure loss, order and latency from the
//! picture alone.
//!
//! # The code
//! 72 bits in a 12 x 6 grid of square cells in the top-left corner, most significant bit first,
//! row by row: a 24-bit frame number, the low 32 bits of the capture time in Unix milliseconds,
//! and a CRC-16/CCITT-FALSE of those 7 bytes. A one bit is a white cell (Y 235), a zero a black
//! one (Y 16); chroma is neutral under the code. The cell side is `min(W, H·16/9) / 40` pixels
//! and the grid starts one cell in from the top and left edges, so the layout scales with the
//! picture: 32 px cells at 1280x720, 8 px at 320x180. A reader samples the mean luma of the
//! middle half of each cell, thresholds at 128 and checks the CRC; it reads the code after VP8
//! at a few hundred kbit/s and after downscaling to 320x180 (tested).
//!
//! # The picture
//! A diagonal luma ramp that scrolls 3 levels per frame, slowly drifting chroma, and a bright box
//! that bounces left and right: motion everywhere, so an encoder cannot skip the frame.

use std::time::Instant;

use super::clock::{FrameClock, WallAnchor};
use super::{VideoError, VideoFormat, VideoFrame, VideoSource};

/// Columns and rows of the code grid.
pub const CODE_COLS: usize = 12;
pub const CODE_ROWS: usize = 6;
const CODE_BITS: usize = CODE_COLS * CODE_ROWS;
/// Frame numbers wrap at 2^24 (6.5 days at 30 fps).
pub const FRAME_MODULUS: u32 = 1 << 24;

const BLACK: u8 = 16;
const WHITE: u8 = 235;

/// What the pattern says about one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PatternCode {
    /// Frame number modulo 2^24.
    pub frame: u32,
    /// Capture time, Unix milliseconds modulo 2^32.
    pub capture_ms: u32,
}

impl PatternCode {
    fn bytes(self) -> [u8; 9] {
        let f = self.frame & (FRAME_MODULUS - 1);
        let t = self.capture_ms;
        let mut b = [
            (f >> 16) as u8,
            (f >> 8) as u8,
            f as u8,
            (t >> 24) as u8,
            (t >> 16) as u8,
            (t >> 8) as u8,
            t as u8,
            0,
            0,
        ];
        let crc = crc16(&b[..7]);
        b[7] = (crc >> 8) as u8;
        b[8] = crc as u8;
        b
    }

    fn from_bytes(b: &[u8; 9]) -> Option<Self> {
        if crc16(&b[..7]) != u16::from_be_bytes([b[7], b[8]]) {
            return None;
        }
        Some(Self {
            frame: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            capture_ms: u32::from_be_bytes([b[3], b[4], b[5], b[6]]),
        })
    }

    /// Latency from capture to `arrival_unix_ms`, in ms (negative if the clocks disagree).
    pub fn latency_ms(self, arrival_unix_ms: u64) -> i64 {
        (arrival_unix_ms as u32).wrapping_sub(self.capture_ms) as i32 as i64
    }
}

/// CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF).
fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Side of one code cell in pixels (fractional: edges are rounded per cell).
fn cell_size(width: u32, height: u32) -> f64 {
    (width as f64).min(height as f64 * 16.0 / 9.0) / 40.0
}

/// Pixel span `[a, b)` of cell index `i` (0 = the margin cell).
fn span(cell: f64, i: usize) -> (usize, usize) {
    (
        (i as f64 * cell).round() as usize,
        ((i + 1) as f64 * cell).round() as usize,
    )
}

/// Writes `code` into the top-left corner of `frame`.
pub fn draw_code(frame: &mut VideoFrame, code: PatternCode) {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let cell = cell_size(frame.width(), frame.height());
    let bytes = code.bytes();
    let cw = frame.chroma_width();
    let (yp, up, vp) = frame.planes_mut();
    // A grey frame around the grid (one cell wide) keeps the background's edges away.
    let (x_end, y_end) = (
        span(cell, CODE_COLS + 1).1.min(w),
        span(cell, CODE_ROWS + 1).1.min(h),
    );
    for row in yp.chunks_exact_mut(w).take(y_end) {
        row[..x_end].fill(128);
    }
    for r in 0..y_end.div_ceil(2) {
        let end = x_end.div_ceil(2).min(cw);
        up[r * cw..r * cw + end].fill(128);
        vp[r * cw..r * cw + end].fill(128);
    }
    for bit in 0..CODE_BITS {
        let on = bytes[bit / 8] & (0x80 >> (bit % 8)) != 0;
        let (x0, x1) = span(cell, 1 + bit % CODE_COLS);
        let (y0, y1) = span(cell, 1 + bit / CODE_COLS);
        for row in yp.chunks_exact_mut(w).take(y1.min(h)).skip(y0) {
            row[x0.min(w)..x1.min(w)].fill(if on { WHITE } else { BLACK });
        }
    }
}

/// Reads the code from a frame of any size with the pattern's aspect ratio; `None` if the
/// frame is too small to carry it or the checksum does not match.
pub fn read_code(frame: &VideoFrame) -> Option<PatternCode> {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let cell = cell_size(frame.width(), frame.height());
    if cell < 2.0 {
        return None;
    }
    let y = frame.y();
    let mut bytes = [0u8; 9];
    for bit in 0..CODE_BITS {
        let (x0, x1) = span(cell, 1 + bit % CODE_COLS);
        let (y0, y1) = span(cell, 1 + bit / CODE_COLS);
        // The middle half of the cell: edges blur under compression and scaling.
        let (qx, qy) = ((x1 - x0) / 4, (y1 - y0) / 4);
        let (xa, xb) = (x0 + qx, (x1 - qx).max(x0 + qx + 1).min(w));
        let (ya, yb) = (y0 + qy, (y1 - qy).max(y0 + qy + 1).min(h));
        if xa >= xb || ya >= yb {
            return None;
        }
        let mut sum = 0u64;
        for r in ya..yb {
            sum += y[r * w + xa..r * w + xb]
                .iter()
                .map(|&p| p as u64)
                .sum::<u64>();
        }
        let mean = sum / ((xb - xa) * (yb - ya)) as u64;
        if mean >= 128 {
            bytes[bit / 8] |= 0x80 >> (bit % 8);
        }
    }
    PatternCode::from_bytes(&bytes)
}

/// Paints frame `k`'s moving background (everything but the code).
fn draw_background(frame: &mut VideoFrame, k: u64) {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let (cw, ch) = (frame.chroma_width(), frame.chroma_height());
    let shift = (k * 3) as usize;
    let box_side = (h / 5).max(2).min(w);
    let travel = (w - box_side).max(1);
    // 8 px a frame at 1280 wide: the same motion at every size.
    let pos = (k as usize * (w / 160).max(1)) % (2 * travel);
    let bx = if pos < travel { pos } else { 2 * travel - pos };
    let by = (h - box_side.min(h)) / 2;
    let (yp, up, vp) = frame.planes_mut();
    for (r, row) in yp.chunks_exact_mut(w).enumerate() {
        for (c, p) in row.iter_mut().enumerate() {
            // A 0..255 ramp over ~256 diagonal pixels that scrolls; fold it so it has no edge.
            let v = ((c + r) / 2 + shift) % 512;
            *p = 16 + ((if v < 256 { v } else { 511 - v }) * 219 / 255) as u8;
        }
        if r >= by && r < by + box_side {
            row[bx..(bx + box_side).min(w)].fill(WHITE);
        }
    }
    for r in 0..ch {
        for c in 0..cw {
            up[r * cw + c] = 64 + ((c + k as usize) % 128) as u8;
            vp[r * cw + c] = 64 + ((2 * r + k as usize / 2) % 128) as u8;
        }
    }
    let (cbx, cby, cs) = (bx / 2, by / 2, box_side / 2);
    for r in cby..(cby + cs).min(ch) {
        up[r * cw + cbx..(r * cw + cbx + cs).min(r * cw + cw)].fill(90);
        vp[r * cw + cbx..(r * cw + cbx + cs).min(r * cw + cw)].fill(240);
    }
}

/// Frame `k` of the pattern captured at `captured`, with its code.
pub fn pattern_frame(
    width: u32,
    height: u32,
    k: u64,
    captured: Instant,
    anchor: &WallAnchor,
) -> Result<VideoFrame, VideoError> {
    let mut f = VideoFrame::black(width, height, captured)?;
    draw_background(&mut f, k);
    draw_code(
        &mut f,
        PatternCode {
            frame: (k % FRAME_MODULUS as u64) as u32,
            capture_ms: anchor.unix_ms(captured) as u32,
        },
    );
    Ok(f)
}

/// A [`VideoSource`] producing the pattern, paced by a [`FrameClock`].
#[derive(Debug)]
pub struct PatternSource {
    format: VideoFormat,
    clock: FrameClock,
    anchor: WallAnchor,
}

impl PatternSource {
    /// A pattern on `clock`, stamping Unix times through `anchor`.
    pub fn new(
        width: u32,
        height: u32,
        clock: FrameClock,
        anchor: WallAnchor,
    ) -> Result<Self, VideoError> {
        super::frame::check_size(width, height)?;
        Ok(Self {
            format: VideoFormat::new(width, height, clock.fps()),
            clock,
            anchor,
        })
    }

    /// A real-time pattern (what a bot sends as its camera).
    pub fn realtime(format: VideoFormat) -> Result<Self, VideoError> {
        Self::new(
            format.width,
            format.height,
            FrameClock::realtime(format.fps),
            WallAnchor::now(),
        )
    }
}

impl VideoSource for PatternSource {
    fn read(&mut self) -> Result<VideoFrame, VideoError> {
        let (k, at) = self.clock.tick();
        pattern_frame(self.format.width, self.format.height, k, at, &self.anchor)
    }
    fn format(&self) -> VideoFormat {
        self.format
    }
    fn name(&self) -> String {
        format!("test pattern {}", self.format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::scale::scale;

    fn anchor(t0: Instant) -> WallAnchor {
        WallAnchor::fixed(t0, 1_700_000_000_000_000)
    }

    #[test]
    fn the_code_round_trips_at_every_common_size() {
        let t0 = Instant::now();
        for (w, h) in [
            (1920, 1080),
            (1280, 720),
            (640, 360),
            (320, 180),
            (160, 90),
            (640, 480),
        ] {
            let f = pattern_frame(w, h, 123_456, t0, &anchor(t0)).expect("frame");
            let code = read_code(&f).expect("readable");
            assert_eq!(code.frame, 123_456, "{w}x{h}");
            assert_eq!(code.capture_ms, (1_700_000_000_000u64 % (1 << 32)) as u32);
        }
    }

    #[test]
    fn the_code_survives_downscaling_from_720p_to_180p() {
        let t0 = Instant::now();
        let mut src = PatternSource::new(1280, 720, FrameClock::virtual_from(t0, 30), anchor(t0))
            .expect("source");
        for k in 0..5 {
            let f = src.read().expect("frame");
            for (w, h) in [(640, 360), (320, 180), (426, 240)] {
                let s = scale(&f, w, h).expect("scale");
                assert_eq!(read_code(&s).map(|c| c.frame), Some(k), "{w}x{h}");
            }
        }
    }

    #[test]
    fn the_picture_moves_and_a_flipped_bit_fails_the_checksum() {
        let t0 = Instant::now();
        let a = pattern_frame(320, 180, 0, t0, &anchor(t0)).expect("frame");
        let b = pattern_frame(320, 180, 1, t0, &anchor(t0)).expect("frame");
        let differ = a.y().iter().zip(b.y()).filter(|(x, y)| x != y).count();
        assert!(differ > 320 * 180 / 2, "only {differ} pixels changed");
        // Invert one cell (the first bit, at cell (1,1): 8x8 pixels from (8,8)).
        let mut c = a.clone();
        let w = c.width() as usize;
        for r in 8..16 {
            for p in &mut c.planes_mut().0[r * w + 8..r * w + 16] {
                *p = 255 - *p;
            }
        }
        assert_eq!(read_code(&c), None);
        assert_eq!(
            read_code(&VideoFrame::black(320, 180, t0).expect("f")),
            None
        );
        assert_eq!(read_code(&VideoFrame::black(40, 20, t0).expect("f")), None);
    }

    #[test]
    fn latency_wraps_with_the_32_bit_clock() {
        let c = PatternCode {
            frame: 0,
            capture_ms: u32::MAX - 5,
        };
        assert_eq!(c.latency_ms((1u64 << 32) + 10), 16);
        assert_eq!(c.latency_ms(u32::MAX as u64 - 10), -5);
    }
}
