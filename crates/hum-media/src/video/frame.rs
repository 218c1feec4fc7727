//! [`VideoFrame`]: one picture in I420 (8-bit Y, then U and V at half resolution both ways).

use std::time::Instant;

use super::VideoError;

/// The largest width or height any source, file or decoder may hand us (8K).
pub const MAX_DIMENSION: u32 = 8192;
/// The largest picture in pixels (7680x4320): bounds the memory one frame may take (~50 MB).
pub const MAX_PIXELS: u64 = 7680 * 4320;

/// Size and rate of a video stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoFormat {
    pub width: u32,
    pub height: u32,
    /// Frames per second (nominal: a camera may deliver fewer).
    pub fps: u32,
}

impl VideoFormat {
    pub const fn new(width: u32, height: u32, fps: u32) -> Self {
        Self { width, height, fps }
    }
}

impl std::fmt::Display for VideoFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}@{}", self.width, self.height, self.fps)
    }
}

/// Checks a frame size against [`MAX_DIMENSION`] / [`MAX_PIXELS`].
pub fn check_size(width: u32, height: u32) -> Result<(), VideoError> {
    let bad = |reason| VideoError::BadSize {
        width,
        height,
        reason,
    };
    if width == 0 || height == 0 {
        return Err(bad("width and height must be at least 1"));
    }
    if width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(bad("wider or taller than 8192 pixels"));
    }
    if width as u64 * height as u64 > MAX_PIXELS {
        return Err(bad("more pixels than 8K (7680x4320)"));
    }
    Ok(())
}

/// Bytes of an I420 picture: a full-size Y plane and two chroma planes of
/// `ceil(w/2) x ceil(h/2)`.
pub const fn i420_len(width: u32, height: u32) -> usize {
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    w * h + 2 * cw * ch
}

/// One picture: I420 planes stored back to back without padding (Y, U, V), plus the instant
/// it was captured.
///
/// `captured` is on the media clock hum-media uses everywhere (`std::time::Instant`, as audio's
/// [`AudioSink::due`](crate::AudioSink::due) and the jitter buffer): a sender derives RTP
/// timestamps from it, a receiver sets it to when the frame became displayable. It is never
/// serialised; the test pattern carries a Unix-time copy in its pixels
/// ([`WallAnchor`](super::WallAnchor)).
#[derive(Clone, PartialEq, Eq)]
pub struct VideoFrame {
    width: u32,
    height: u32,
    data: Vec<u8>,
    pub captured: Instant,
}

impl std::fmt::Debug for VideoFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoFrame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("captured", &self.captured)
            .finish_non_exhaustive()
    }
}

impl VideoFrame {
    /// A black frame (Y 16, U/V 128: video-range black).
    pub fn black(width: u32, height: u32, captured: Instant) -> Result<Self, VideoError> {
        check_size(width, height)?;
        let luma = width as usize * height as usize;
        let mut data = vec![128u8; i420_len(width, height)];
        data[..luma].fill(16);
        Ok(Self {
            width,
            height,
            data,
            captured,
        })
    }

    /// Wraps I420 bytes (Y, U, V back to back, no padding). The length must match exactly.
    pub fn from_i420(
        width: u32,
        height: u32,
        data: Vec<u8>,
        captured: Instant,
    ) -> Result<Self, VideoError> {
        check_size(width, height)?;
        if data.len() != i420_len(width, height) {
            return Err(VideoError::BadSize {
                width,
                height,
                reason: "the I420 buffer has the wrong length for this size",
            });
        }
        Ok(Self {
            width,
            height,
            data,
            captured,
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }
    pub fn height(&self) -> u32 {
        self.height
    }
    /// Width (and row stride) of the U and V planes.
    pub fn chroma_width(&self) -> usize {
        (self.width as usize).div_ceil(2)
    }
    pub fn chroma_height(&self) -> usize {
        (self.height as usize).div_ceil(2)
    }
    /// All three planes back to back (what a Y4M frame or an encoder wants).
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }

    fn luma_len(&self) -> usize {
        self.width as usize * self.height as usize
    }
    fn chroma_len(&self) -> usize {
        self.chroma_width() * self.chroma_height()
    }

    /// The Y plane (row stride = width).
    pub fn y(&self) -> &[u8] {
        &self.data[..self.luma_len()]
    }
    pub fn u(&self) -> &[u8] {
        let l = self.luma_len();
        &self.data[l..l + self.chroma_len()]
    }
    pub fn v(&self) -> &[u8] {
        let l = self.luma_len() + self.chroma_len();
        &self.data[l..]
    }
    /// Mutable Y, U and V planes at once.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let (l, c) = (self.luma_len(), self.chroma_len());
        let (y, uv) = self.data.split_at_mut(l);
        let (u, v) = uv.split_at_mut(c);
        (y, u, v)
    }

    /// Luma PSNR against a frame of the same size, in dB (`f64::INFINITY` when identical).
    /// `None` if the sizes differ.
    pub fn psnr_y(&self, other: &VideoFrame) -> Option<f64> {
        if self.width != other.width || self.height != other.height {
            return None;
        }
        let sse: u64 = self
            .y()
            .iter()
            .zip(other.y())
            .map(|(&a, &b)| {
                let d = a as i64 - b as i64;
                (d * d) as u64
            })
            .sum();
        if sse == 0 {
            return Some(f64::INFINITY);
        }
        let mse = sse as f64 / self.luma_len() as f64;
        Some(10.0 * (255.0 * 255.0 / mse).log10())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_have_i420_sizes_even_for_odd_dimensions() {
        let mut f = VideoFrame::black(5, 3, Instant::now()).expect("size");
        assert_eq!(f.as_bytes().len(), 15 + 2 * 3 * 2);
        assert_eq!((f.chroma_width(), f.chroma_height()), (3, 2));
        let (y, u, v) = f.planes_mut();
        assert_eq!((y.len(), u.len(), v.len()), (15, 6, 6));
        assert!(f.y().iter().all(|&p| p == 16));
        assert!(f.v().iter().all(|&p| p == 128));
    }

    #[test]
    fn sizes_are_bounded_and_lengths_checked() {
        let now = Instant::now();
        assert!(VideoFrame::black(0, 10, now).is_err());
        assert!(VideoFrame::black(9000, 10, now).is_err());
        assert!(VideoFrame::black(8192, 8192, now).is_err());
        let e = VideoFrame::from_i420(4, 4, vec![0; 23], now).expect_err("short");
        assert!(e.to_string().contains("wrong length"), "{e}");
        assert!(VideoFrame::from_i420(4, 4, vec![0; 24], now).is_ok());
    }

    #[test]
    fn psnr_is_infinite_for_equal_frames_and_finite_otherwise() {
        let now = Instant::now();
        let a = VideoFrame::black(8, 8, now).expect("size");
        let mut b = a.clone();
        assert_eq!(a.psnr_y(&b), Some(f64::INFINITY));
        b.planes_mut().0[0] = 26;
        let p = a.psnr_y(&b).expect("same size");
        assert!((p - 10.0 * (255.0f64 * 255.0 * 64.0 / 100.0).log10()).abs() < 1e-9);
    }
}
