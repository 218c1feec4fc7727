//! Downscaling I420 frames (simulcast layers, fitting a capture to an encoder size).
//!
//! An exact halving averages each 2x2 block (the common simulcast case: 720p -> 360p -> 180p,
//! cascaded); any other ratio uses a separable area filter: each output pixel is the average
//! of the source area it covers, with fractional weights at the edges. Averaging over the
//! footprint is what removes aliasing when shrinking (a bilinear tap of 2 pixels would alias at
//! 4:1). Upscaling uses the same filter, which then degenerates to nearest-neighbour-ish
//! blocks: fine for a rare fallback, not meant for display.

use super::{VideoError, VideoFrame};

/// Scales `src` to `width` x `height`. Returns a clone when the size already matches.
pub fn scale(src: &VideoFrame, width: u32, height: u32) -> Result<VideoFrame, VideoError> {
    if src.width() == width && src.height() == height {
        return Ok(src.clone());
    }
    let mut dst = VideoFrame::black(width, height, src.captured)?;
    let (sw, sh) = (src.width() as usize, src.height() as usize);
    let (dw, dh) = (width as usize, height as usize);
    let (scw, sch) = (src.chroma_width(), src.chroma_height());
    let (dcw, dch) = (dst.chroma_width(), dst.chroma_height());
    let (yp, up, vp) = dst.planes_mut();
    scale_plane(src.y(), sw, sh, yp, dw, dh);
    scale_plane(src.u(), scw, sch, up, dcw, dch);
    scale_plane(src.v(), scw, sch, vp, dcw, dch);
    Ok(dst)
}

/// Scales one 8-bit plane (rows without padding).
pub fn scale_plane(src: &[u8], sw: usize, sh: usize, dst: &mut [u8], dw: usize, dh: usize) {
    if sw == 2 * dw && sh == 2 * dh {
        halve(src, sw, dst, dw, dh);
        return;
    }
    // Horizontal pass into 16.8 fixed point rows, then vertical.
    let xw = weights(sw, dw);
    let yw = weights(sh, dh);
    let mut tmp = vec![0u32; dw * sh];
    for r in 0..sh {
        let row = &src[r * sw..(r + 1) * sw];
        let out = &mut tmp[r * dw..(r + 1) * dw];
        for (o, taps) in out.iter_mut().zip(&xw) {
            *o = taps.iter().map(|&(i, w)| row[i] as u32 * w).sum::<u32>() >> 8;
        }
    }
    for (r, taps) in yw.iter().enumerate() {
        let out = &mut dst[r * dw..(r + 1) * dw];
        for (c, o) in out.iter_mut().enumerate() {
            let acc: u64 = taps
                .iter()
                .map(|&(i, w)| tmp[i * dw + c] as u64 * w as u64)
                .sum();
            // tmp carries 8 fractional bits, the weights 16: round once at the end.
            *o = ((acc + (1 << 23)) >> 24).min(255) as u8;
        }
    }
}

/// Exact 2:1 in both directions: the rounded mean of each 2x2 block.
fn halve(src: &[u8], sw: usize, dst: &mut [u8], dw: usize, dh: usize) {
    for r in 0..dh {
        let a = &src[2 * r * sw..2 * r * sw + sw];
        let b = &src[(2 * r + 1) * sw..(2 * r + 1) * sw + sw];
        let out = &mut dst[r * dw..(r + 1) * dw];
        for (c, o) in out.iter_mut().enumerate() {
            let s = a[2 * c] as u32 + a[2 * c + 1] as u32 + b[2 * c] as u32 + b[2 * c + 1] as u32;
            *o = ((s + 2) >> 2) as u8;
        }
    }
}

/// For each output index, the source indices it covers and their weights (sum = 65536, 16
/// fractional bits; the horizontal pass shifts by 8 so its rows keep 8 fractional bits).
fn weights(src: usize, dst: usize) -> Vec<Vec<(usize, u32)>> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|o| {
            let (lo, hi) = (o as f64 * scale, ((o + 1) as f64 * scale).min(src as f64));
            let mut taps = Vec::new();
            let mut i = lo.floor() as usize;
            while (i as f64) < hi && i < src {
                let cover = (hi.min(i as f64 + 1.0) - lo.max(i as f64)).max(0.0);
                taps.push((i, cover / (hi - lo)));
                i += 1;
            }
            // Integer weights that sum to exactly 65536 (the rounding error goes to the last).
            let mut ints: Vec<(usize, u32)> = taps
                .iter()
                .map(|&(i, w)| (i, (w * 65536.0).round() as u32))
                .collect();
            let sum: i64 = ints.iter().map(|&(_, w)| w as i64).sum();
            if let Some(last) = ints.last_mut() {
                last.1 = (last.1 as i64 + 65536 - sum).max(0) as u32;
            }
            ints
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn ramp(w: u32, h: u32) -> VideoFrame {
        let mut f = VideoFrame::black(w, h, Instant::now()).expect("size");
        let (y, _, _) = f.planes_mut();
        for r in 0..h as usize {
            for c in 0..w as usize {
                y[r * w as usize + c] = ((c * 255) / (w as usize - 1)) as u8;
            }
        }
        f
    }

    #[test]
    fn halving_averages_blocks() {
        let mut f = VideoFrame::black(4, 2, Instant::now()).expect("size");
        f.planes_mut()
            .0
            .copy_from_slice(&[0, 2, 10, 20, 4, 6, 30, 40]);
        let h = scale(&f, 2, 1).expect("scale");
        assert_eq!(h.y(), &[3, 25]);
    }

    #[test]
    fn a_flat_plane_stays_flat_at_any_ratio() {
        for (w, h) in [(640, 360), (333, 181), (100, 50), (1000, 700)] {
            let mut f = VideoFrame::black(1280, 720, Instant::now()).expect("size");
            f.planes_mut().0.fill(77);
            let s = scale(&f, w, h).expect("scale");
            assert!(s.y().iter().all(|&p| p == 77), "{w}x{h}");
            assert!(s.u().iter().all(|&p| p == 128), "{w}x{h}");
        }
    }

    #[test]
    fn area_filter_keeps_a_ramp_a_ramp_and_averages_stripes() {
        let s = scale(&ramp(1280, 8), 300, 2).expect("scale");
        let row = &s.y()[..300];
        assert!(row.windows(2).all(|p| p[1] >= p[0]));
        assert!(row[0] < 3 && row[299] > 252);
        // 1-pixel black/white stripes shrunk 3:1 average to grey instead of aliasing.
        let mut f = VideoFrame::black(96, 4, Instant::now()).expect("size");
        for (i, p) in f.planes_mut().0.iter_mut().enumerate() {
            *p = if i % 2 == 0 { 0 } else { 240 };
        }
        let s = scale(&f, 32, 4).expect("scale");
        assert!(
            s.y().iter().all(|&p| (p as i32 - 120).abs() <= 40),
            "{:?}",
            s.y()
        );
    }
}
