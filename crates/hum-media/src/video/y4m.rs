//! YUV4MPEG2 (Y4M) files: a reader (and [`Y4mSource`]) and a writer (and [`Y4mSink`]).
//!
//! Only 8-bit 4:2:0 progressive video is accepted (`C420`, `C420jpeg`, `C420paldv`,
//! `C420mpeg2`, or no `C` tag); anything else is a clear [`VideoError::Y4m`]. Header lines are
//! at most [`MAX_LINE`] bytes, frames at most [`MAX_PIXELS`](super::frame::MAX_PIXELS); a
//! truncated frame is an error, a clean end of file is the end of the stream. Fuzzed by
//! `fuzz/fuzz_targets/y4m_decode.rs`.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::clock::FrameClock;
use super::frame::{check_size, i420_len};
use super::{VideoError, VideoFormat, VideoFrame, VideoSink, VideoSource};

/// The longest stream-header or frame-header line accepted, in bytes.
pub const MAX_LINE: usize = 1024;

/// What a Y4M stream header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Y4mHeader {
    pub width: u32,
    pub height: u32,
    /// Frame rate as a fraction (`F30000:1001`); 30:1 when absent.
    pub fps_num: u32,
    pub fps_den: u32,
}

impl Y4mHeader {
    /// The frame rate rounded to whole frames per second (at least 1).
    pub fn fps(&self) -> u32 {
        ((self.fps_num as f64 / self.fps_den as f64).round() as u32).max(1)
    }
}

fn ratio(tag: &str, v: &str) -> Result<(u32, u32), VideoError> {
    let (a, b) = v
        .split_once(':')
        .ok_or_else(|| VideoError::y4m("header", format!("{tag}{v}: expected N:D")))?;
    let a: u32 = a
        .parse()
        .map_err(|_| VideoError::y4m("header", format!("{tag}{v}: not a number")))?;
    let b: u32 = b
        .parse()
        .map_err(|_| VideoError::y4m("header", format!("{tag}{v}: not a number")))?;
    Ok((a, b))
}

/// Parses a stream header line (without its newline).
pub fn parse_header(line: &[u8]) -> Result<Y4mHeader, VideoError> {
    if !line.is_ascii() {
        return Err(VideoError::y4m("header", "not ASCII text"));
    }
    let line =
        std::str::from_utf8(line).map_err(|_| VideoError::y4m("header", "not ASCII text"))?;
    let mut words = line.split(' ').filter(|w| !w.is_empty());
    if words.next() != Some("YUV4MPEG2") {
        return Err(VideoError::y4m(
            "header",
            "does not start with YUV4MPEG2 (not a Y4M file)",
        ));
    }
    let (mut width, mut height) = (None, None);
    let (mut fps_num, mut fps_den) = (30, 1);
    for w in words {
        let (tag, v) = w.split_at(1);
        match tag {
            "W" | "H" => {
                let n: u32 = v
                    .parse()
                    .map_err(|_| VideoError::y4m("header", format!("{w}: not a size")))?;
                if tag == "W" {
                    width = Some(n)
                } else {
                    height = Some(n)
                }
            }
            "F" => {
                (fps_num, fps_den) = ratio(tag, v)?;
                // The exact ratio, not integer division: 2001:2 is 1000.5 fps, which rounds to
                // 1001 and would be written back as a header this reader refuses.
                if fps_num == 0 || fps_den == 0 || u64::from(fps_num) > 1000 * u64::from(fps_den) {
                    return Err(VideoError::y4m(
                        "header",
                        format!("frame rate {w} is out of range"),
                    ));
                }
            }
            "I" => {
                if v != "p" && v != "?" {
                    return Err(VideoError::y4m(
                        "header",
                        format!("interlaced video ({w}) is not supported; progressive only"),
                    ));
                }
            }
            "C" => {
                if !matches!(v, "420" | "420jpeg" | "420paldv" | "420mpeg2") {
                    return Err(VideoError::y4m(
                        "header",
                        format!("colour space {v} is not supported; 8-bit 4:2:0 only"),
                    ));
                }
            }
            "A" => {
                ratio(tag, v)?;
            }
            "X" => {}
            _ => {
                return Err(VideoError::y4m("header", format!("unknown field {w}")));
            }
        }
    }
    let (Some(width), Some(height)) = (width, height) else {
        return Err(VideoError::y4m("header", "missing W (width) or H (height)"));
    };
    check_size(width, height)?;
    Ok(Y4mHeader {
        width,
        height,
        fps_num,
        fps_den,
    })
}

/// Reads one line of at most [`MAX_LINE`] bytes; `Ok(None)` at a clean end of input.
fn read_line<R: BufRead>(r: &mut R, what: &str) -> Result<Option<Vec<u8>>, VideoError> {
    let mut line = Vec::new();
    let n = r
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(VideoError::y4m(
            what,
            if line.len() > MAX_LINE {
                format!("line longer than {MAX_LINE} bytes")
            } else {
                "ends without a newline".to_string()
            },
        ));
    }
    line.pop();
    Ok(Some(line))
}

/// Reads frames from any byte stream.
#[derive(Debug)]
pub struct Y4mReader<R> {
    inner: R,
    header: Y4mHeader,
    frames: u64,
}

impl<R: BufRead> Y4mReader<R> {
    /// Reads and checks the stream header.
    pub fn new(mut inner: R) -> Result<Self, VideoError> {
        let line = read_line(&mut inner, "header")?
            .ok_or_else(|| VideoError::y4m("header", "the file is empty"))?;
        let header = parse_header(&line)?;
        Ok(Self {
            inner,
            header,
            frames: 0,
        })
    }

    pub fn header(&self) -> Y4mHeader {
        self.header
    }

    /// The next frame's I420 bytes, or `None` at the end of the stream.
    pub fn read_frame(&mut self) -> Result<Option<Vec<u8>>, VideoError> {
        let what = format!("frame {}", self.frames);
        let Some(line) = read_line(&mut self.inner, &what)? else {
            return Ok(None);
        };
        if !(line == b"FRAME" || line.starts_with(b"FRAME ")) {
            return Err(VideoError::y4m(what, "expected a FRAME line"));
        }
        let len = i420_len(self.header.width, self.header.height);
        // Grow with the data actually present: a lying header cannot make us allocate 50 MB
        // for a 20-byte file.
        let mut data = Vec::with_capacity(len.min(1 << 20));
        self.inner
            .by_ref()
            .take(len as u64)
            .read_to_end(&mut data)?;
        if data.len() != len {
            return Err(VideoError::y4m(
                what,
                format!("truncated: {} of {len} bytes", data.len()),
            ));
        }
        self.frames += 1;
        Ok(Some(data))
    }
}

/// Writes frames to any byte sink.
#[derive(Debug)]
pub struct Y4mWriter<W: Write> {
    inner: W,
    format: VideoFormat,
}

impl<W: Write> Y4mWriter<W> {
    /// Writes the stream header.
    pub fn new(mut inner: W, format: VideoFormat) -> Result<Self, VideoError> {
        check_size(format.width, format.height)?;
        writeln!(
            inner,
            "YUV4MPEG2 W{} H{} F{}:1 Ip A1:1 C420jpeg",
            format.width,
            format.height,
            format.fps.max(1)
        )?;
        Ok(Self { inner, format })
    }

    pub fn write_frame(&mut self, frame: &VideoFrame) -> Result<(), VideoError> {
        if frame.width() != self.format.width || frame.height() != self.format.height {
            return Err(VideoError::y4m(
                "writer",
                format!(
                    "frame is {}x{} but the file is {}x{} (one size per Y4M file)",
                    frame.width(),
                    frame.height(),
                    self.format.width,
                    self.format.height
                ),
            ));
        }
        self.inner.write_all(b"FRAME\n")?;
        self.inner.write_all(frame.as_bytes())?;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), VideoError> {
        self.inner.flush()?;
        Ok(())
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// A Y4M file as a [`VideoSource`], paced by a [`FrameClock`] at the file's frame rate.
#[derive(Debug)]
pub struct Y4mSource {
    path: PathBuf,
    reader: Y4mReader<BufReader<File>>,
    clock: FrameClock,
    looping: bool,
}

impl Y4mSource {
    /// Opens `path` in real time; `looping` starts over at the end instead of ending.
    pub fn open(path: &Path, looping: bool) -> Result<Self, VideoError> {
        let reader = Self::reader(path)?;
        let clock = FrameClock::realtime(reader.header().fps());
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            clock,
            looping,
        })
    }

    /// Replaces the clock (e.g. a virtual one, to read as fast as possible).
    pub fn with_clock(mut self, clock: FrameClock) -> Self {
        self.clock = clock;
        self
    }

    fn reader(path: &Path) -> Result<Y4mReader<BufReader<File>>, VideoError> {
        let f = File::open(path).map_err(|e| {
            VideoError::y4m(path.display().to_string(), format!("cannot open: {e}"))
        })?;
        Y4mReader::new(BufReader::new(f)).map_err(|e| match e {
            VideoError::Y4m { what, reason } => {
                VideoError::y4m(format!("{} ({what})", path.display()), reason)
            }
            e => e,
        })
    }
}

impl VideoSource for Y4mSource {
    fn read(&mut self) -> Result<VideoFrame, VideoError> {
        let data = match self.reader.read_frame()? {
            Some(d) => d,
            None if self.looping && self.reader.frames > 0 => {
                self.reader = Self::reader(&self.path)?;
                self.reader.read_frame()?.ok_or(VideoError::Ended)?
            }
            None => return Err(VideoError::Ended),
        };
        let (_, at) = self.clock.tick();
        let h = self.reader.header();
        VideoFrame::from_i420(h.width, h.height, data, at)
    }

    fn format(&self) -> VideoFormat {
        let h = self.reader.header();
        VideoFormat::new(h.width, h.height, h.fps())
    }

    fn name(&self) -> String {
        format!("Y4M file {}", self.path.display())
    }
}

/// A Y4M file as a [`VideoSink`]. The size is fixed by the first frame.
#[derive(Debug)]
pub struct Y4mSink {
    path: PathBuf,
    fps: u32,
    writer: Option<Y4mWriter<BufWriter<File>>>,
    finished: bool,
}

impl Y4mSink {
    /// Creates (truncates) `path`; the header is written with the first frame.
    pub fn create(path: &Path, fps: u32) -> Result<Self, VideoError> {
        Ok(Self {
            path: path.to_path_buf(),
            fps,
            writer: None,
            finished: false,
        })
    }
}

impl VideoSink for Y4mSink {
    fn write(&mut self, frame: &VideoFrame) -> Result<(), VideoError> {
        if self.finished {
            return Err(VideoError::y4m(
                self.path.display().to_string(),
                "written after finish",
            ));
        }
        if self.writer.is_none() {
            let f = File::create(&self.path)?;
            let fmt = VideoFormat::new(frame.width(), frame.height(), self.fps);
            self.writer = Some(Y4mWriter::new(BufWriter::new(f), fmt)?);
        }
        match &mut self.writer {
            Some(w) => w.write_frame(frame),
            None => Ok(()),
        }
    }

    fn finish(&mut self) -> Result<(), VideoError> {
        self.finished = true;
        match &mut self.writer {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }

    fn name(&self) -> String {
        format!("Y4M file {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::WallAnchor;
    use crate::video::pattern::{PatternSource, read_code};
    use std::io::Cursor;
    use std::time::Instant;

    #[test]
    fn a_pattern_survives_a_file_round_trip_bit_exact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.y4m");
        let t0 = Instant::now();
        let mut src = PatternSource::new(
            64,
            36,
            FrameClock::virtual_from(t0, 25),
            WallAnchor::fixed(t0, 0),
        )
        .expect("pattern");
        let frames: Vec<_> = (0..4).map(|_| src.read().expect("frame")).collect();
        let mut sink = Y4mSink::create(&path, 25).expect("create");
        for f in &frames {
            sink.write(f).expect("write");
        }
        sink.finish().expect("finish");
        assert!(sink.write(&frames[0]).is_err());

        let mut file = Y4mSource::open(&path, false)
            .expect("open")
            .with_clock(FrameClock::virtual_from(t0, 25));
        assert_eq!(file.format(), VideoFormat::new(64, 36, 25));
        for f in &frames {
            let g = file.read().expect("frame");
            assert_eq!(g.as_bytes(), f.as_bytes());
            assert_eq!(g.captured, f.captured);
        }
        assert!(matches!(file.read(), Err(VideoError::Ended)));
        // Looping starts over.
        let mut looped = Y4mSource::open(&path, true)
            .expect("open")
            .with_clock(FrameClock::virtual_from(t0, 25));
        for _ in 0..5 {
            looped.read().expect("frame");
        }
        let big = PatternSource::new(
            320,
            180,
            FrameClock::virtual_from(t0, 25),
            WallAnchor::now(),
        )
        .expect("pattern")
        .read()
        .expect("frame");
        let mut w = Y4mWriter::new(Vec::new(), VideoFormat::new(320, 180, 25)).expect("w");
        w.write_frame(&big).expect("write");
        let mut r = Y4mReader::new(Cursor::new(w.into_inner())).expect("reader");
        let data = r.read_frame().expect("ok").expect("frame");
        let back = VideoFrame::from_i420(320, 180, data, t0).expect("frame");
        assert_eq!(read_code(&back), read_code(&big));
    }

    fn err(input: &[u8]) -> String {
        match Y4mReader::new(Cursor::new(input.to_vec())) {
            Err(e) => e.to_string(),
            Ok(mut r) => loop {
                match r.read_frame() {
                    Ok(Some(_)) => continue,
                    Ok(None) => return "ok".into(),
                    Err(e) => return e.to_string(),
                }
            },
        }
    }

    #[test]
    fn bad_input_gives_clear_errors_not_panics() {
        let cases: [(&[u8], &str); 16] = [
            (b"", "empty"),
            (b"P6 2 2 255\n", "not a Y4M file"),
            (b"YUV4MPEG2 W2\n", "missing W"),
            (b"YUV4MPEG2 W2 H2 C444\n", "colour space 444"),
            (b"YUV4MPEG2 W2 H2 C420p10\n", "8-bit 4:2:0 only"),
            (b"YUV4MPEG2 W2 H2 It\n", "interlaced"),
            (b"YUV4MPEG2 W2 H2 F0:0\n", "out of range"),
            (b"YUV4MPEG2 W2 H2 F2001:2\n", "out of range"),
            (b"YUV4MPEG2 W2 H2 F1001:1\n", "out of range"),
            (b"YUV4MPEG2 W2 H2 Fx\n", "N:D"),
            (b"YUV4MPEG2 W-1 H2\n", "not a size"),
            (b"YUV4MPEG2 W100000 H2\n", "8192"),
            (b"YUV4MPEG2 W2 H2 Z9\n", "unknown field"),
            (b"YUV4MPEG2 W2 H2\nFRAME\n\x00\x00", "truncated: 2 of 6"),
            (b"YUV4MPEG2 W2 H2\nFRAMX\n", "expected a FRAME"),
            (b"YUV4MPEG2 W2 H2", "without a newline"),
        ];
        for (input, want) in cases {
            let got = err(input);
            assert!(
                got.contains(want),
                "{:?}: {got}",
                String::from_utf8_lossy(input)
            );
        }
        let long = [b"YUV4MPEG2 ".as_slice(), &[b'X'; 2000], b"\n"].concat();
        assert!(err(&long).contains("longer than 1024"));
        // A frame header may carry parameters; a clean end after whole frames is fine.
        assert_eq!(
            err(b"YUV4MPEG2 W2 H2 F30000:1001 A1:1 Xyz\nFRAME Ixx\n123456"),
            "ok"
        );
        let e = Y4mSource::open(Path::new("/nonexistent/x.y4m"), false).expect_err("missing");
        assert!(e.to_string().contains("cannot open"), "{e}");
    }
}
