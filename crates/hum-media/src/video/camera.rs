//! Cameras through nokhwa (V4L2 on Linux, AVFoundation, Media Foundation).
//!
//! [`list_cameras`] enumerates devices; [`CaptureThread::open_camera`] picks one by index, `/dev/videoN`
//! or name and asks for the closest size and rate it offers. A machine without a camera gets
//! [`VideoError::NoCamera`] ("no camera found: ..."), never a panic. Frames are decoded by
//! nokhwa to RGB (MJPEG and YUYV cameras alike) and converted to I420 on the capture thread.

use std::time::Instant;

use nokhwa::Camera;
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
    Resolution,
};

use super::convert::{PixelLayout, packed_to_i420};
use super::threaded::{Capture, CaptureThread};
use super::{VideoError, VideoFormat};

/// One camera as the system reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraInfo {
    /// Index (pass it to [`CaptureThread::open_camera`]).
    pub index: String,
    pub name: String,
    pub description: String,
}

/// Lists cameras. No camera is an empty list, not an error.
pub fn list_cameras() -> Result<Vec<CameraInfo>, VideoError> {
    let cams = nokhwa::query(ApiBackend::Auto).map_err(|e| VideoError::Camera {
        name: "(listing)".into(),
        reason: e.to_string(),
    })?;
    Ok(cams
        .into_iter()
        .map(|c| CameraInfo {
            index: c.index().to_string(),
            name: c.human_name(),
            description: c.description().to_string(),
        })
        .collect())
}

/// Finds `device` (an index, `/dev/videoN`, or part of a name; `None` = the first camera).
fn pick(cameras: &[CameraInfo], device: Option<&str>) -> Result<CameraInfo, VideoError> {
    if cameras.is_empty() {
        return Err(VideoError::NoCamera {
            detail: " (no /dev/video* device); use a test pattern or a Y4M file instead".into(),
        });
    }
    let Some(want) = device else {
        return Ok(cameras[0].clone());
    };
    let index = want.trim_start_matches("/dev/video");
    cameras
        .iter()
        .find(|c| c.index == index || c.name == want)
        .or_else(|| {
            cameras
                .iter()
                .find(|c| c.name.to_lowercase().contains(&want.to_lowercase()))
        })
        .cloned()
        .ok_or_else(|| VideoError::Camera {
            name: want.to_string(),
            reason: format!(
                "no such camera; available: {}",
                cameras
                    .iter()
                    .map(|c| format!("{} ({})", c.index, c.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

impl CaptureThread {
    /// Opens camera `device` asking for the format closest to `want` (the camera decides; read
    /// [`VideoSource::format`] for what it gave).
    pub fn open_camera(device: Option<&str>, want: VideoFormat) -> Result<Self, VideoError> {
        let info = pick(&list_cameras()?, device)?;
        let name = format!("camera {}", info.name);
        let cam_name = info.name.clone();
        CaptureThread::spawn(name, move || {
            let err = move |e: nokhwa::NokhwaError| VideoError::Camera {
                name: cam_name.clone(),
                reason: e.to_string(),
            };
            let index = match info.index.parse::<u32>() {
                Ok(i) => CameraIndex::Index(i),
                Err(_) => CameraIndex::String(info.index.clone()),
            };
            let requested =
                RequestedFormat::new::<RgbFormat>(RequestedFormatType::Closest(CameraFormat::new(
                    Resolution::new(want.width, want.height),
                    FrameFormat::MJPEG,
                    want.fps,
                )));
            let mut camera = Camera::new(index, requested).map_err(&err)?;
            camera.open_stream().map_err(&err)?;
            let f = camera.camera_format();
            let format = VideoFormat::new(f.width(), f.height(), f.frame_rate());
            let capture: Capture = Box::new(move || {
                let buf = camera.frame().map_err(&err)?;
                let captured = Instant::now();
                let rgb = buf.decode_image::<RgbFormat>().map_err(&err)?;
                let (w, h) = (rgb.width(), rgb.height());
                packed_to_i420(
                    rgb.as_raw(),
                    w,
                    h,
                    w as usize * 3,
                    PixelLayout::Rgb,
                    captured,
                )
            });
            Ok((format, capture))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_camera_is_one_clear_sentence_and_a_wrong_name_lists_the_others() {
        let cams = list_cameras().expect("listing cameras works with or without cameras");
        let want = VideoFormat::new(640, 360, 30);
        if cams.is_empty() {
            let e = CaptureThread::open_camera(None, want).expect_err("no camera here");
            assert!(matches!(e, VideoError::NoCamera { .. }));
            assert_eq!(
                e.to_string(),
                "no camera found: this machine has no video capture device (no /dev/video* \
                 device); use a test pattern or a Y4M file instead"
            );
        } else {
            eprintln!("{} camera(s) present: {cams:?}", cams.len());
        }
        let fake = [CameraInfo {
            index: "0".into(),
            name: "Integrated Webcam".into(),
            description: String::new(),
        }];
        assert_eq!(
            pick(&fake, Some("/dev/video0")).map(|c| c.index).ok(),
            Some("0".into())
        );
        assert_eq!(
            pick(&fake, Some("webcam")).map(|c| c.index).ok(),
            Some("0".into())
        );
        let e = pick(&fake, Some("usb")).expect_err("absent");
        assert!(
            e.to_string().contains("available: 0 (Integrated Webcam)"),
            "{e}"
        );
    }
}
