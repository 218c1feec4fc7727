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
//! Applied as a tiny plugin on every webview the app creates (`on_webview_ready`). One setting has
//! no API, only an environment variable WebKit reads at start: `WEBKIT_DISABLE_DMABUF_RENDERER=1`
//! (the UI process then skips the DMA-BUF renderer's GPU buffers: ~10 MiB less over the app's
//! processes). `reexec_with_env` sets it by re-executing the app once, first thing in `main`, rather
//! than with `set_var` (unsound once other threads may read the environment). A variable the user
//! set is left as it is; `HUM_WEBVIEW_TUNING=0` turns all of this off (WebKit's defaults).

use std::ffi::OsString;

use tauri::Runtime;
use tauri::plugin::TauriPlugin;

/// Environment variables WebKitGTK reads only at start, with the values the app wants.
pub const WEBKIT_ENV: &[(&str, &str)] = &[("WEBKIT_DISABLE_DMABUF_RENDERER", "1")];

/// Whether `HUM_WEBVIEW_TUNING=0` asks for WebKit's defaults.
fn disabled(get: &impl Fn(&str) -> Option<OsString>) -> bool {
    get("HUM_WEBVIEW_TUNING").is_some_and(|v| v == "0")
}

/// The `WEBKIT_ENV` entries to add to an environment read through `get`: those not already set,
/// none when tuning is off.
pub fn missing_env(get: impl Fn(&str) -> Option<OsString>) -> Vec<(&'static str, &'static str)> {
    if disabled(&get) {
        return Vec::new();
    }
    WEBKIT_ENV
        .iter()
        .copied()
        .filter(|(k, _)| get(k).is_none())
        .collect()
}

/// Re-executes the app with `WEBKIT_ENV` set when some of it is missing (Linux only; same pid and
/// arguments). Returns only when nothing was missing or the re-exec failed (then the app runs
/// untuned, which is harmless). Call before anything else in `main`.
pub fn reexec_with_env() {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let missing = missing_env(|k| std::env::var_os(k));
        if missing.is_empty() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .envs(missing)
            .exec();
        eprintln!(
            "hum-app: not re-executed with the WebKit settings ({err}); running without them"
        );
    }
}

/// The plugin that tunes every webview as it is created. A no-op on platforms other than Linux.
pub fn plugin<R: Runtime>() -> TauriPlugin<R> {
    tauri::plugin::Builder::new("webview-tuning")
        .on_webview_ready(|webview| {
            if disabled(&|k| std::env::var_os(k)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn adds_the_webkit_settings_to_a_plain_environment() {
        assert_eq!(missing_env(env(&[("HOME", "/root")])), WEBKIT_ENV.to_vec());
    }

    #[test]
    fn a_value_the_user_set_is_kept() {
        assert!(missing_env(env(&[("WEBKIT_DISABLE_DMABUF_RENDERER", "0")])).is_empty());
    }

    #[test]
    fn tuning_off_adds_nothing() {
        assert!(missing_env(env(&[("HUM_WEBVIEW_TUNING", "0")])).is_empty());
        assert_eq!(
            missing_env(env(&[("HUM_WEBVIEW_TUNING", "1")])),
            WEBKIT_ENV.to_vec()
        );
    }
}
