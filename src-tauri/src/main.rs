// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    hum_app_lib::webview_tuning::reexec_with_env();
    hum_app_lib::run();
}
