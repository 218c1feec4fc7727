//! Memory tuning of the system webview (WebKitGTK on Linux). Measured numbers: docs/app.md, "Memory".
//!
//! Hum's UI is a few forms and lists; WebKit's defaults are a browser's. What costs memory and buys
//! this UI nothing:
//! - Accelerated compositing: the web process composites every layer through EGL. With no GPU (or
//!   Mesa's llvmpipe) that is a software GL pipeline with its own buffers and threads: ~50 MiB of the
//!   web process. The policy `Never` paints with the CPU into shared memory instead.
//! - Browser caches: the page cache (back/forward) and the memory cache sized for a browser. The
//!   `DocumentViewer` cache model is WebKit's setting for a single local document.
//! - WebGL, Web Audio, media, MediaStream, WebRTC: audio and video are hum-engine's (Rust), never
//!   the page's, so the web process need not initialise them.
//!
//! Applied as a tiny plugin on every webview the app creates (`on_webview_ready`).

use tauri::Runtime;
use tauri::plugin::TauriPlugin;

/// The plugin that tunes every webview as it is created. A no-op on platforms other than Linux.
pub fn plugin<R: Runtime>() -> TauriPlugin<R> {
    tauri::plugin::Builder::new("webview-tuning")
        .on_webview_ready(|webview| {
            if std::env::var_os("HUM_WEBVIEW_TUNING").is_some_and(|v| v == "0") {
                return; // WebKit's defaults, to compare or to work around a driver problem
            }
            #[cfg(target_os = "linux")]
            if let Err(e) = webview.with_webview(|platform| linux::tune(&platform.inner())) {
                tracing::warn!("webview memory tuning not applied: {e}");
            }
            #[cfg(not(target_os = "linux"))]
            let _ = webview;
        })
        .build()
}

#[cfg(target_os = "linux")]
mod linux {
    use webkit2gtk::{
        CacheModel, HardwareAccelerationPolicy, SettingsExt, WebContextExt, WebView, WebViewExt,
    };

    pub(super) fn tune(view: &WebView) {
        if let Some(settings) = WebViewExt::settings(view) {
            settings.set_hardware_acceleration_policy(HardwareAccelerationPolicy::Never);
            settings.set_enable_page_cache(false);
            settings.set_enable_webgl(false);
            settings.set_enable_webaudio(false);
            settings.set_enable_media(false);
            settings.set_enable_media_stream(false);
            settings.set_enable_mediasource(false);
            settings.set_enable_encrypted_media(false);
            settings.set_enable_webrtc(false);
        }
        if let Some(context) = view.context() {
            context.set_cache_model(CacheModel::DocumentViewer);
        }
        tracing::debug!("webview tuned: no accelerated compositing, document-viewer caches");
    }
}
