//! First run: create the identity; afterwards: show it or rename it. The key pair and its file
//! (0600, atomic writes) are hum-engine's `Identity`.

use hum_engine::{Identity, IdentityError};
use hum_proto::signal::DisplayName;
use serde::Serialize;
use specta::Type;
use tauri::State;

use crate::error::{CmdResult, CommandError, ErrorCode};
use crate::state::AppState;

/// What the UI may know about the identity (never the secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Type)]
pub struct IdentityInfo {
    pub display_name: String,
    /// Ed25519 public key, 64 hex characters: what friends add you by.
    pub public_key: String,
}

impl From<&Identity> for IdentityInfo {
    fn from(id: &Identity) -> Self {
        Self {
            display_name: id.display_name().to_string(),
            public_key: id.user_id().to_string(),
        }
    }
}

fn display_name(s: &str) -> CmdResult<DisplayName> {
    let s = s.trim();
    if s.is_empty() {
        return Err(CommandError::invalid("Display name must not be empty."));
    }
    DisplayName::new(s).map_err(|e| CommandError::invalid(format!("Display name: {e}.")))
}

fn storage(e: IdentityError) -> CommandError {
    match e {
        IdentityError::Exists(_) => CommandError::new(ErrorCode::IdentityExists, e.to_string()),
        IdentityError::Name(n) => CommandError::invalid(format!("Display name: {n}.")),
        e => CommandError::new(ErrorCode::Storage, e.to_string()),
    }
}

pub fn get(state: &AppState) -> CmdResult<Option<IdentityInfo>> {
    Ok(state
        .identity
        .read()
        .map_err(CommandError::internal)?
        .as_ref()
        .map(IdentityInfo::from))
}

pub fn create(state: &AppState, name: &str) -> CmdResult<IdentityInfo> {
    let mut slot = state.identity.write().map_err(CommandError::internal)?;
    if slot.is_some() {
        return Err(CommandError::new(
            ErrorCode::IdentityExists,
            "You already have an identity.",
        ));
    }
    let id =
        Identity::create(&state.identity_path(), display_name(name)?, false).map_err(storage)?;
    let info = IdentityInfo::from(&id);
    *slot = Some(id);
    Ok(info)
}

pub fn rename(state: &AppState, name: &str) -> CmdResult<IdentityInfo> {
    let mut slot = state.identity.write().map_err(CommandError::internal)?;
    let mut id = slot
        .clone()
        .ok_or_else(|| CommandError::new(ErrorCode::NoIdentity, "Create your identity first."))?;
    id.set_display_name(display_name(name)?);
    id.save(&state.identity_path()).map_err(storage)?;
    let info = IdentityInfo::from(&id);
    *slot = Some(id);
    Ok(info)
}

/// The identity, or null on first run.
#[tauri::command]
#[specta::specta]
pub fn identity_get(state: State<'_, AppState>) -> CmdResult<Option<IdentityInfo>> {
    get(&state)
}

/// Creates the Ed25519 identity (first run). Fails with `identity_exists` if there is one.
#[tauri::command]
#[specta::specta]
pub fn identity_create(
    state: State<'_, AppState>,
    display_name: String,
) -> CmdResult<IdentityInfo> {
    create(&state, &display_name)
}

/// Changes the display name, keeping the key (and so the account).
#[tauri::command]
#[specta::specta]
pub async fn identity_rename(
    state: State<'_, AppState>,
    display_name: String,
) -> CmdResult<IdentityInfo> {
    let info = rename(&state, &display_name)?;
    if let Some(relay) = state.relay_opt()?
        && let Ok(name) = DisplayName::new(info.display_name.clone())
    {
        // Best effort: the relay learns the new name now, or at the next login.
        let _ = relay.set_display_name(name).await;
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings_store::MemoryKv;

    fn load(dir: &std::path::Path) -> AppState {
        AppState::load(dir.into(), Box::new(MemoryKv::default())).expect("load")
    }

    #[test]
    fn first_run_then_create_then_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = load(dir.path());
        assert_eq!(get(&state).expect("get"), None);
        let err = create(&state, "  ").expect_err("empty name");
        assert_eq!(err.code, ErrorCode::InvalidInput);
        assert_eq!(err.message, "Display name must not be empty.");
        assert_eq!(
            create(&state, &"x".repeat(40)).expect_err("long").code,
            ErrorCode::InvalidInput
        );
        let info = create(&state, " alice ").expect("create");
        assert_eq!(info.display_name, "alice");
        assert_eq!(info.public_key.len(), 64);
        assert_eq!(
            create(&state, "bob").expect_err("twice").code,
            ErrorCode::IdentityExists
        );
        let renamed = rename(&state, "Alice B").expect("rename");
        assert_eq!(renamed.public_key, info.public_key);
        assert_eq!(get(&load(dir.path())).expect("get"), Some(renamed));
    }

    #[cfg(unix)]
    #[test]
    fn key_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let state = load(dir.path());
        create(&state, "carol").expect("create");
        let mode = std::fs::metadata(state.identity_path())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn damaged_identity_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(crate::state::IDENTITY_FILE), "not json").expect("write");
        let err = AppState::load(dir.path().into(), Box::new(MemoryKv::default()))
            .err()
            .expect("err");
        assert_eq!(err.code, ErrorCode::Storage);
    }
}
