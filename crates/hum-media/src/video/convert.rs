//! Colour conversion at the capture and display edges: packed RGB(A) <-> I420.
//!
//! BT.601, video range (Y 16-235), integer arithmetic (libyuv's coefficients): what VP8
//! decoders, browsers' WebCodecs and Y4M players assume for untagged 8-bit video. Chroma is the
//! average of each 2x2 block.

use std::time::Instant;

use super::{VideoError, VideoFrame};

/// How one packed pixel is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelLayout {
    Rgb,
    Rgba,
    Bgra,
}

impl PixelLayout {
    fn bytes(self) -> usize {
        match self {
            PixelLayout::Rgb => 3,
            PixelLayout::Rgba | PixelLayout::Bgra => 4,
        }
    }
    #[inline]
    fn rgb(self, p: &[u8]) -> (i32, i32, i32) {
        match self {
            PixelLayout::Rgb | PixelLayout::Rgba => (p[0] as i32, p[1] as i32, p[2] as i32),
            PixelLayout::Bgra => (p[2] as i32, p[1] as i32, p[0] as i32),
        }
    }
}

#[inline]
fn luma(r: i32, g: i32, b: i32) -> u8 {
    (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8
}

#[inline]
fn chroma(r: i32, g: i32, b: i32) -> (u8, u8) {
    let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
    let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
    (u.clamp(0, 255) as u8, v.clamp(0, 255) as u8)
}

/// Converts a packed picture (rows of `stride` bytes) to an I420 frame.
pub fn packed_to_i420(
    pixels: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    layout: PixelLayout,
    captured: Instant,
) -> Result<VideoFrame, VideoError> {
    let bpp = layout.bytes();
    let (w, h) = (width as usize, height as usize);
    let mut frame = VideoFrame::black(width, height, captured)?;
    if stride < w * bpp || pixels.len() < stride * (h - 1) + w * bpp {
        return Err(VideoError::BadSize {
            width,
            height,
            reason: "the pixel buffer is smaller than its stated size",
        });
    }
    let cw = frame.chroma_width();
    let (yp, up, vp) = frame.planes_mut();
    for row in 0..h {
        let src = &pixels[row * stride..row * stride + w * bpp];
        let dst = &mut yp[row * w..(row + 1) * w];
        for (d, p) in dst.iter_mut().zip(src.chunks_exact(bpp)) {
            let (r, g, b) = layout.rgb(p);
            *d = luma(r, g, b);
        }
    }
    for crow in 0..h.div_ceil(2) {
        let r0 = 2 * crow;
        let r1 = (r0 + 1).min(h - 1);
        for ccol in 0..cw {
            let c0 = 2 * ccol;
            let c1 = (c0 + 1).min(w - 1);
            let (mut rs, mut gs, mut bs) = (0, 0, 0);
            for (r, c) in [(r0, c0), (r0, c1), (r1, c0), (r1, c1)] {
                let o = r * stride + c * bpp;
                let (pr, pg, pb) = layout.rgb(&pixels[o..o + bpp]);
                rs += pr;
                gs += pg;
                bs += pb;
            }
            let (u, v) = chroma((rs + 2) >> 2, (gs + 2) >> 2, (bs + 2) >> 2);
            up[crow * cw + ccol] = u;
            vp[crow * cw + ccol] = v;
        }
    }
    Ok(frame)
}

/// Converts an I420 frame to packed RGB (3 bytes a pixel, no padding).
pub fn i420_to_rgb(frame: &VideoFrame) -> Vec<u8> {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let cw = frame.chroma_width();
    let (yp, up, vp) = (frame.y(), frame.u(), frame.v());
    let mut out = Vec::with_capacity(w * h * 3);
    for row in 0..h {
        for col in 0..w {
            let c = yp[row * w + col] as i32 - 16;
            let d = up[(row / 2) * cw + col / 2] as i32 - 128;
            let e = vp[(row / 2) * cw + col / 2] as i32 - 128;
            let clip = |x: i32| ((x + 128) >> 8).clamp(0, 255) as u8;
            out.push(clip(298 * c + 409 * e));
            out.push(clip(298 * c - 100 * d - 208 * e));
            out.push(clip(298 * c + 516 * d));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primaries_and_greys_round_trip_within_a_few_levels() {
        let colours: [[u8; 3]; 6] = [
            [0, 0, 0],
            [255, 255, 255],
            [255, 0, 0],
            [0, 255, 0],
            [0, 0, 255],
            [128, 64, 200],
        ];
        for c in colours {
            // A 2x2 block of one colour, in RGBA and BGRA.
            let rgba: Vec<u8> = (0..4).flat_map(|_| [c[0], c[1], c[2], 255]).collect();
            let bgra: Vec<u8> = (0..4).flat_map(|_| [c[2], c[1], c[0], 255]).collect();
            let a =
                packed_to_i420(&rgba, 2, 2, 8, PixelLayout::Rgba, Instant::now()).expect("convert");
            let b =
                packed_to_i420(&bgra, 2, 2, 8, PixelLayout::Bgra, Instant::now()).expect("convert");
            assert_eq!(a.as_bytes(), b.as_bytes());
            let back = i420_to_rgb(&a);
            for (x, y) in back[..3].iter().zip(c) {
                assert!(
                    (*x as i32 - y as i32).abs() <= 3,
                    "{c:?} -> {:?}",
                    &back[..3]
                );
            }
        }
    }

    #[test]
    fn short_buffers_are_errors() {
        let e =
            packed_to_i420(&[0; 10], 2, 2, 6, PixelLayout::Rgb, Instant::now()).expect_err("short");
        assert!(e.to_string().contains("smaller"), "{e}");
    }
}
