//! Screen and window capture through xcap.
//!
//! Supported: X11 (and so Xvfb) through xcb, a whole monitor or one window, at up to ~60 fps
//! for a 1080p screen (PLATFORM.md). Wayland: xcap's one-shot capture goes through GNOME
//! Shell's screenshot D-Bus API, then the desktop portal's Screenshot (which may ask the user
//! every time), then wlroots' screencopy; it is not meant for video and is untested here (no
//! Wayland compositor on these machines). Continuous Wayland capture needs the ScreenCast
//! portal + PipeWire (xcap's `video_recorder`), not wired yet. Which display is captured is
//! decided by the environment (`DISPLAY` / `WAYLAND_DISPLAY`) of the process.

use std::time::Instant;

use xcap::{Monitor, Window};

use super::clock::FrameClock;
use super::convert::{PixelLayout, packed_to_i420};
use super::threaded::{Capture, CaptureThread};
use super::{VideoError, VideoFormat, VideoFrame};

/// What to capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScreenTarget {
    /// A monitor by id; `None` = the primary (or first) one.
    Monitor(Option<u32>),
    /// A window by id (see [`list_windows`]).
    Window(u32),
}

/// A monitor as xcap reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScreenInfo {
    pub id: u32,
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub primary: bool,
}

/// A window as xcap reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowInfo {
    pub id: u32,
    pub title: String,
    pub app: String,
    pub width: u32,
    pub height: u32,
}

fn err(e: xcap::XCapError) -> VideoError {
    VideoError::Screen(e.to_string())
}

/// Fails early, with a sentence, when there is no display at all.
fn check_display() -> Result<(), VideoError> {
    let set = |v: &str| std::env::var_os(v).is_some_and(|x| !x.is_empty());
    if set("DISPLAY") || set("WAYLAND_DISPLAY") {
        Ok(())
    } else {
        Err(VideoError::Screen(
            "no display to capture: DISPLAY (X11) and WAYLAND_DISPLAY are both unset".into(),
        ))
    }
}

/// Lists monitors.
pub fn list_screens() -> Result<Vec<ScreenInfo>, VideoError> {
    check_display()?;
    Monitor::all()
        .map_err(err)?
        .iter()
        .map(|m| {
            Ok(ScreenInfo {
                id: m.id().map_err(err)?,
                name: m.name().map_err(err)?,
                width: m.width().map_err(err)?,
                height: m.height().map_err(err)?,
                primary: m.is_primary().unwrap_or(false),
            })
        })
        .collect()
}

/// Lists windows that can be captured (not minimised).
pub fn list_windows() -> Result<Vec<WindowInfo>, VideoError> {
    check_display()?;
    Ok(Window::all()
        .map_err(err)?
        .iter()
        .filter(|w| !w.is_minimized().unwrap_or(false))
        .filter_map(|w| {
            Some(WindowInfo {
                id: w.id().ok()?,
                title: w.title().unwrap_or_default(),
                app: w.app_name().unwrap_or_default(),
                width: w.width().ok()?,
                height: w.height().ok()?,
            })
        })
        .collect())
}

fn rgba_frame(img: &xcap::image::RgbaImage, captured: Instant) -> Result<VideoFrame, VideoError> {
    let (w, h) = (img.width(), img.height());
    packed_to_i420(
        img.as_raw(),
        w,
        h,
        w as usize * 4,
        PixelLayout::Rgba,
        captured,
    )
}

impl CaptureThread {
    /// Captures a monitor or window at `fps`.
    pub fn open_screen(target: ScreenTarget, fps: u32) -> Result<Self, VideoError> {
        check_display()?;
        let name = match target {
            ScreenTarget::Monitor(None) => "screen (primary)".to_string(),
            ScreenTarget::Monitor(Some(id)) => format!("screen {id}"),
            ScreenTarget::Window(id) => format!("window {id}"),
        };
        CaptureThread::spawn(name, move || {
            let mut clock = FrameClock::realtime(fps);
            let grab: Box<dyn FnMut() -> Result<xcap::image::RgbaImage, VideoError>> = match target
            {
                ScreenTarget::Monitor(id) => {
                    let all = Monitor::all().map_err(err)?;
                    let m = match id {
                        Some(id) => all.into_iter().find(|m| m.id().ok() == Some(id)),
                        None => {
                            let primary = all.iter().position(|m| m.is_primary().unwrap_or(false));
                            let i = primary.unwrap_or(0);
                            all.into_iter().nth(i)
                        }
                    }
                    .ok_or_else(|| VideoError::Screen("no such monitor".into()))?;
                    Box::new(move || m.capture_image().map_err(err))
                }
                ScreenTarget::Window(id) => {
                    let w = Window::all()
                        .map_err(err)?
                        .into_iter()
                        .find(|w| w.id().ok() == Some(id))
                        .ok_or_else(|| VideoError::Screen(format!("no window with id {id}")))?;
                    Box::new(move || w.capture_image().map_err(err))
                }
            };
            let mut grab = grab;
            // The first picture fixes the format (a window's size is only known by capturing).
            let first = grab()?;
            let format = VideoFormat::new(first.width(), first.height(), fps);
            let mut pending = Some(first);
            let capture: Capture = Box::new(move || {
                clock.tick();
                // Stamped when the grab starts: the closest we get to "when it was on screen".
                let at = Instant::now();
                let img = match pending.take() {
                    Some(i) => i,
                    None => grab()?,
                };
                rgba_frame(&img, at)
            });
            Ok((format, capture))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::VideoSource;
    use crate::video::clock::WallAnchor;
    use crate::video::convert::i420_to_rgb;
    use crate::video::pattern::{pattern_frame, read_code};
    use crate::video::y4m::{Y4mReader, Y4mWriter};
    use std::io::{BufReader, Write};
    use std::process::Command;

    /// Set by the Xvfb test for the child process it starts inside `xvfb-run`.
    const CHILD_ENV: &str = "HUM_TEST_SCREEN_CAPTURE_TO";

    /// Not a test on its own: the body of `a_known_image_drawn_on_xvfb_is_captured`, run in a
    /// child process whose DISPLAY is the Xvfb server (xcap reads DISPLAY from the
    /// environment, which a test must not change in its own process).
    #[test]
    fn xvfb_capture_child() {
        let Some(out) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        let screens = list_screens().expect("list screens");
        assert_eq!(screens.len(), 1, "{screens:?}");
        let mut src =
            CaptureThread::open_screen(ScreenTarget::Monitor(None), 10).expect("open screen");
        let format = src.format();
        let mut w =
            Y4mWriter::new(std::fs::File::create(out).expect("create"), format).expect("writer");
        for _ in 0..3 {
            w.write_frame(&src.read().expect("frame")).expect("write");
        }
        w.flush().expect("flush");
    }

    #[test]
    fn a_known_image_drawn_on_xvfb_is_captured() {
        let have = |bin: &str| {
            std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        };
        if !have("Xvfb") || !have("xvfb-run") {
            eprintln!("SKIPPED: no Xvfb binary (scripts/setup installs the xvfb package)");
            return;
        }
        assert!(
            have("display"),
            "ImageMagick's display is missing (imagemagick package)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let t0 = Instant::now();
        let anchor = WallAnchor::fixed(t0, 1_234_567_000);
        let known = pattern_frame(640, 360, 4242, t0, &anchor).expect("pattern");
        let ppm = dir.path().join("known.ppm");
        let mut f = std::fs::File::create(&ppm).expect("ppm");
        write!(f, "P6\n640 360\n255\n").expect("ppm");
        let rgb = i420_to_rgb(&known);
        f.write_all(&rgb).expect("ppm");
        drop(f);
        let out = dir.path().join("captured.y4m");
        let exe = std::env::current_exe().expect("test binary");
        let status = Command::new("xvfb-run")
            // -noreset: without it the server resets when `display` disconnects, and the root
            // window's background goes back to black.
            .args(["-a", "-s", "-screen 0 640x360x24 -noreset", "sh", "-c"])
            .arg(r#"display -window root "$1" || true; shift; exec "$@""#)
            .arg("sh")
            .arg(&ppm)
            .arg(&exe)
            .args([
                "--exact",
                "video::screen::tests::xvfb_capture_child",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(CHILD_ENV, &out)
            .status()
            .expect("run xvfb-run");
        assert!(status.success(), "capture under Xvfb failed: {status}");
        let mut r = Y4mReader::new(BufReader::new(std::fs::File::open(&out).expect("y4m")))
            .expect("reader");
        assert_eq!((r.header().width, r.header().height), (640, 360));
        let mut last = None;
        while let Some(d) = r.read_frame().expect("frame") {
            last = Some(VideoFrame::from_i420(640, 360, d, t0).expect("frame"));
        }
        let got = last.expect("at least one frame");
        assert_eq!(read_code(&got), read_code(&known));
        assert!(read_code(&got).is_some());
        // What was drawn is the RGB picture; compare with it converted the same way (the
        // I420 -> RGB -> I420 round trip alone costs luma detail at sharp chroma edges).
        let drawn = packed_to_i420(&rgb, 640, 360, 640 * 3, PixelLayout::Rgb, t0).expect("i420");
        let psnr = got.psnr_y(&drawn).expect("same size");
        assert!(psnr > 45.0, "PSNR {psnr:.1} dB against the drawn picture");
    }

    #[test]
    fn no_display_is_a_sentence() {
        if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
            let e = CaptureThread::open_screen(ScreenTarget::Monitor(None), 30)
                .expect_err("no display");
            assert!(e.to_string().contains("no display to capture"), "{e}");
        }
    }
}
