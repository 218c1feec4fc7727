//! The IPC contract with ui/: every command and typed event, exported to ui/src/lib/bindings.ts.
//!
//! Debug builds of the app rewrite that file at start; `cargo test -p hum-app` fails when the file in
//! the tree differs from what this builder generates, so a stale binding never reaches main.
//! (`HUM_UPDATE_BINDINGS=1 cargo test -p hum-app bindings` rewrites it.)

use std::path::{Path, PathBuf};

use specta_typescript::Typescript;
use tauri_specta::{Builder, collect_commands, collect_events};

use crate::commands::{
    budget, calls, connection, desktop, devices, friends, identity, links, live, members, privacy,
    screen, servers, settings, streams, video, voice,
};
use crate::tray;

pub fn builder() -> Builder<tauri::Wry> {
    Builder::<tauri::Wry>::new()
        .commands(collect_commands![
            identity::identity_get,
            identity::identity_create,
            identity::identity_rename,
            settings::settings_get,
            settings::relay_url_set,
            settings::bandwidth_preview,
            settings::bandwidth_save,
            voice::voice_settings_get,
            voice::voice_settings_set,
            connection::relay_connect,
            connection::relay_status,
            servers::servers_list,
            servers::servers_watch,
            servers::server_create,
            servers::channel_create,
            servers::channel_configure,
            servers::channel_join,
            servers::channel_leave,
            servers::voice_state_set,
            servers::my_voice,
            servers::user_volume_set,
            servers::invite_create,
            members::server_members,
            members::member_role_set,
            members::member_remove,
            members::server_bans,
            members::member_unban,
            servers::server_rename,
            servers::server_delete,
            servers::server_leave,
            servers::invite_join,
            devices::devices_list,
            devices::device_test_sound,
            devices::input_monitor_start,
            devices::input_monitor_stop,
            streams::levels_subscribe,
            streams::stats_subscribe,
            calls::call_start,
            calls::call_accept,
            calls::call_decline,
            calls::call_hangup,
            calls::call_get,
            budget::bandwidth_measure,
            budget::budget_status,
            friends::friends_list,
            friends::friend_request,
            friends::friend_respond,
            friends::friend_remove,
            friends::friend_card,
            friends::handle_set,
            links::links_take,
            tray::tray_sync,
            desktop::desktop_settings_get,
            desktop::desktop_settings_set,
            desktop::update_check,
            video::video_subscribe,
            video::video_settings_get,
            video::video_settings_set,
            video::video_sources_list,
            video::camera_set,
            video::video_keyframe,
            video::video_quality_set,
            video::video_bench_start,
            screen::screen_targets_list,
            screen::screen_share_start,
            screen::screen_share_stop,
            screen::screen_share_get,
            live::live_list,
            live::live_status,
            live::live_start,
            live::live_stop,
            live::live_watch,
            live::live_leave,
            live::live_quality,
            live::live_dismiss,
            privacy::privacy_get,
            privacy::privacy_set,
            privacy::privacy_status,
            privacy::safety_number,
        ])
        .events(collect_events![
            voice::PttChanged,
            connection::RelayStatusChanged,
            connection::ServersChanged,
            connection::FriendsChanged,
            connection::MembersChanged,
            connection::ServerGone,
            links::LinkOpened,
            tray::TrayClicked,
            servers::AudioNotice,
            servers::SelfSpeaking,
            calls::CallChanged,
            budget::BudgetChanged,
            live::LiveStatusChanged,
            live::LiveChanged,
            privacy::PrivacyChanged
        ])
        .typ::<crate::error::CommandError>()
        .typ::<crate::channels::LevelSample>()
        .typ::<crate::channels::PeerStatsView>()
        .typ::<crate::channels::VideoPacket>()
        // Every u64 here is a bit rate or a Unix time in ms, far below 2^53: safe as a JS number.
        .dangerously_cast_bigints_to_number()
        // One TypeScript type per Rust type: our types serialise and deserialise the same way.
        .disable_serde_phases()
}

/// ui/src/lib/bindings.ts, from this crate's directory.
pub fn bindings_path() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../ui/src/lib/bindings.ts")
}

fn exporter() -> Typescript {
    Typescript::default()
        .header("// Generated by src-tauri/src/bindings.rs. Do not edit.\n// @ts-nocheck\n")
}

/// Writes the bindings to `path`.
pub fn export(path: &Path) -> Result<(), String> {
    builder()
        .export(exporter(), path)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_ts_is_current() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fresh = dir.path().join("bindings.ts");
        export(&fresh).expect("export");
        let fresh = std::fs::read_to_string(&fresh).expect("read fresh");
        if std::env::var_os("HUM_UPDATE_BINDINGS").is_some() {
            std::fs::write(bindings_path(), &fresh).expect("write bindings");
        }
        let committed = std::fs::read_to_string(bindings_path()).unwrap_or_default();
        assert!(
            committed == fresh,
            "ui/src/lib/bindings.ts is stale: run `HUM_UPDATE_BINDINGS=1 cargo test -p hum-app bindings` and commit it"
        );
        assert!(fresh.contains("identityCreate"));
        assert!(fresh.contains("export type CommandError"));
    }
}
