//! Video: I420 frames, sources (test pattern, Y4M file, camera, screen), sinks (Y4M file,
//! null, pattern analyser), VP8 encode/decode with simulcast. See docs/video.md.
//!
//! # The seams
//! - [`VideoFrame`]: I420, tightly packed, with `captured: Instant` (the same media clock as
//!   audio: `Instant` everywhere in hum-media).
//! - [`VideoSource`] is *pull*, like [`AudioSource`](crate::AudioSource): `read()` blocks until
//!   the next frame exists (a live source or a real-time [`FrameClock`]) and returns it. The
//!   engine runs one capture thread per track that reads, encodes and hands
//!   [`EncodedFrame`]s to its async send loop; a virtual clock makes the same sources run as
//!   fast as a test wants, with the timestamps of a real-time stream.
//! - [`VideoSink`]: `write(&frame)`; the receiver's decoder output goes there.
//! - Rates are [`Bitrate`](hum_proto::units::Bitrate); VP8 timestamps are derived from
//!   `captured` on the 90 kHz RTP clock.
//!
//! Back ends behind features (all default): `vp8` (system libvpx), `camera` (nokhwa),
//! `screen` (xcap).

pub mod analyser;
pub mod clock;
pub mod convert;
pub mod error;
pub mod frame;
pub mod pattern;
pub mod scale;
pub mod y4m;

#[cfg(any(feature = "camera", feature = "screen"))]
pub mod threaded;

#[cfg(feature = "camera")]
pub mod camera;
#[cfg(feature = "screen")]
pub mod screen;
#[cfg(feature = "vp8")]
pub mod simulcast;
#[cfg(feature = "vp8")]
pub mod vp8;
#[cfg(feature = "vp8")]
mod vpx;

pub use analyser::{PatternAnalyser, PatternReport};
pub use clock::{FrameClock, WallAnchor};
pub use error::VideoError;
pub use frame::{VideoFormat, VideoFrame};
pub use pattern::{PatternCode, PatternSource};
pub use y4m::{Y4mSink, Y4mSource};

#[cfg(any(feature = "camera", feature = "screen"))]
pub use threaded::CaptureThread;

#[cfg(feature = "vp8")]
pub use simulcast::{LayerConfig, LayerFrame, SimulcastEncoder};
#[cfg(feature = "vp8")]
pub use vp8::{EncodedFrame, EncoderConfig, ScreenProfile, Vp8Decoder, Vp8Encoder};

/// Where video comes from. See the module doc for why this is a blocking pull.
pub trait VideoSource: Send {
    /// The next frame; blocks until it exists. [`VideoError::Ended`] at the end of a file.
    fn read(&mut self) -> Result<VideoFrame, VideoError>;
    /// Size and nominal rate of the frames `read` returns.
    fn format(&self) -> VideoFormat;
    /// A human-readable name for logs.
    fn name(&self) -> String;
}

/// Where decoded video goes.
pub trait VideoSink: Send {
    fn write(&mut self, frame: &VideoFrame) -> Result<(), VideoError>;
    /// Flushes and closes; further writes fail.
    fn finish(&mut self) -> Result<(), VideoError> {
        Ok(())
    }
    fn name(&self) -> String;
}

impl<T: VideoSource + ?Sized> VideoSource for Box<T> {
    fn read(&mut self) -> Result<VideoFrame, VideoError> {
        (**self).read()
    }
    fn format(&self) -> VideoFormat {
        (**self).format()
    }
    fn name(&self) -> String {
        (**self).name()
    }
}

impl<T: VideoSink + ?Sized> VideoSink for Box<T> {
    fn write(&mut self, frame: &VideoFrame) -> Result<(), VideoError> {
        (**self).write(frame)
    }
    fn finish(&mut self) -> Result<(), VideoError> {
        (**self).finish()
    }
    fn name(&self) -> String {
        (**self).name()
    }
}

/// Discards frames, counting them.
#[derive(Debug, Default)]
pub struct NullSink {
    pub frames: u64,
}

impl VideoSink for NullSink {
    fn write(&mut self, _frame: &VideoFrame) -> Result<(), VideoError> {
        self.frames += 1;
        Ok(())
    }
    fn name(&self) -> String {
        "null".into()
    }
}
