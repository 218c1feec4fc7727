//! [`CaptureThread`]: a capture back end (camera, screen) on its own thread, as a [`VideoSource`].
//!
//! Constructors live beside their back ends: `CaptureThread::open_camera` (camera.rs),
//! `CaptureThread::open_screen` (screen.rs).
//!
//! Camera and screen libraries keep handles that are not `Send`, and they block in their own
//! way; a thread per capture keeps them off the caller's thread. The hand-over holds one frame:
//! when the reader is slower than the capture, the older frame is dropped (a live source should
//! show the newest picture, not queue up latency).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TrySendError, sync_channel};
use std::thread::JoinHandle;

use super::{VideoError, VideoFormat, VideoFrame, VideoSource};

/// Produces the next frame on the capture thread.
pub(crate) type Capture = Box<dyn FnMut() -> Result<VideoFrame, VideoError>>;

/// A live source whose back end runs on its own thread. See the module doc.
pub struct CaptureThread {
    rx: Receiver<Result<VideoFrame, VideoError>>,
    format: VideoFormat,
    name: String,
    stop: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for CaptureThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureThread")
            .field("name", &self.name)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl CaptureThread {
    /// Spawns a thread that runs `open` (its error is returned here) and then its capture
    /// function until the source is dropped or capture fails.
    pub(crate) fn spawn<F>(name: String, open: F) -> Result<Self, VideoError>
    where
        F: FnOnce() -> Result<(VideoFormat, Capture), VideoError> + Send + 'static,
    {
        let (open_tx, open_rx) = sync_channel(1);
        let (tx, rx) = sync_channel(1);
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let (stop2, dropped2) = (stop.clone(), dropped.clone());
        let thread = std::thread::Builder::new()
            .name(format!("capture {name}"))
            .spawn(move || {
                let mut capture = match open() {
                    Ok((fmt, c)) => {
                        let _ = open_tx.send(Ok(fmt));
                        c
                    }
                    Err(e) => {
                        let _ = open_tx.send(Err(e));
                        return;
                    }
                };
                while !stop2.load(Ordering::Relaxed) {
                    let r = capture();
                    let failed = r.is_err();
                    match tx.try_send(r) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            dropped2.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(TrySendError::Disconnected(_)) => return,
                    }
                    if failed {
                        return;
                    }
                }
            })?;
        let format = open_rx
            .recv()
            .map_err(|_| VideoError::Screen(format!("{name}: the capture thread died")))??;
        Ok(Self {
            rx,
            format,
            name,
            stop,
            dropped,
            thread: Some(thread),
        })
    }

    /// Frames captured but replaced by a newer one before anybody read them.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl VideoSource for CaptureThread {
    fn read(&mut self) -> Result<VideoFrame, VideoError> {
        self.rx.recv().map_err(|_| VideoError::Ended)?
    }
    fn format(&self) -> VideoFormat {
        self.format
    }
    fn name(&self) -> String {
        self.name.clone()
    }
}

impl Drop for CaptureThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblock a capture thread waiting to hand over a frame, then wait for it.
        while self.rx.try_recv().is_ok() {}
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
