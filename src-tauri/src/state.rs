//! What the app keeps between commands. Owned by Tauri (`app.manage`), shared by all commands.

use std::path::PathBuf;
use std::sync::{Mutex, RwLock};

use hum_engine::calls::Calls;
use hum_engine::video_preview::CameraShare;
use hum_engine::voice::link::VoiceLink;
use hum_engine::voice::{InputMonitor, VoiceSession};
use hum_engine::{Identity, IdentityError, RelayClient};
use std::sync::Arc;

use crate::channels::{LevelFollower, LevelHub, StatsHub, VideoHub};
use crate::commands::budget::{BudgetRuntime, BudgetStatus};
use crate::commands::servers::{MyVoice, VoiceRooms};
use crate::commands::video::Previews;
use crate::error::{CmdResult, CommandError, ErrorCode};
use crate::settings_store::Kv;

/// Name of the identity file inside the data dir (hum-engine's format, owner-only).
pub const IDENTITY_FILE: &str = "identity.json";

pub struct AppState {
    pub data_dir: PathBuf,
    pub identity: RwLock<Option<Identity>>,
    pub kv: Box<dyn Kv>,
    /// Input level stream (meter) and who feeds it now (a call or the settings monitor).
    pub levels: Arc<LevelHub>,
    pub level_follower: LevelFollower,
    /// Per-peer link statistics stream.
    pub stats: StatsHub,
    /// Encoded video frames to the webview, and the local streams feeding it (my camera).
    pub video: Arc<VideoHub>,
    pub previews: Previews,
    /// My camera's frames for a call's video track (the self-view preview taps them).
    pub camera_share: Arc<CameraShare>,
    /// Channels' voice mode and dominant speaker, as the relay announced them.
    pub rooms: VoiceRooms,
    /// Forwards the running call's received video to `video`.
    pub call_video: Mutex<Option<tokio::task::AbortHandle>>,
    /// The settings screen's microphone monitor, outside calls.
    pub monitor: Mutex<Option<InputMonitor>>,
    /// hum-engine's 1-on-1 call service of the current relay client.
    calls: Mutex<Option<Calls>>,
    /// hum-engine's bandwidth budget, running next to the relay client.
    pub budget: Mutex<Option<BudgetRuntime>>,
    pub budget_status: Mutex<BudgetStatus>,
    relay: Mutex<Option<RelayClient>>,
    my_voice: Mutex<MyVoice>,
    /// The running voice channel (audio + mesh), if any; async because leaving awaits.
    pub link: tokio::sync::Mutex<Option<VoiceLink>>,
    /// Its session, for the sync paths (push-to-talk hotkey, mute, volume).
    session: Mutex<Option<Arc<VoiceSession>>>,
    /// The running channel's end-to-end keys and media routes ("Hide my IP", E2EE).
    pub privacy: crate::commands::privacy::PrivacyRuntime,
}

impl AppState {
    /// Loads what is on disk. A damaged identity file is reported, never overwritten.
    pub fn load(data_dir: PathBuf, kv: Box<dyn Kv>) -> CmdResult<Self> {
        let identity = match Identity::load(&data_dir.join(IDENTITY_FILE)) {
            Ok(id) => Some(id),
            Err(IdentityError::Missing(_)) => None,
            Err(e) => return Err(CommandError::new(ErrorCode::Storage, e.to_string())),
        };
        Ok(Self {
            data_dir,
            identity: RwLock::new(identity),
            kv,
            levels: Arc::new(LevelHub::default()),
            level_follower: LevelFollower::default(),
            stats: StatsHub::default(),
            video: Arc::new(VideoHub::default()),
            previews: Previews::default(),
            camera_share: Arc::new(CameraShare::default()),
            call_video: Mutex::new(None),
            rooms: VoiceRooms::default(),
            monitor: Mutex::new(None),
            calls: Mutex::new(None),
            budget: Mutex::new(None),
            budget_status: Mutex::new(BudgetStatus::default()),
            relay: Mutex::new(None),
            my_voice: Mutex::new(MyVoice::default()),
            link: tokio::sync::Mutex::new(None),
            session: Mutex::new(None),
            privacy: Default::default(),
        })
    }

    pub fn identity_path(&self) -> PathBuf {
        self.data_dir.join(IDENTITY_FILE)
    }

    /// The current identity, or `no_identity` before first run is done.
    pub fn identity(&self) -> CmdResult<Identity> {
        self.identity
            .read()
            .map_err(CommandError::internal)?
            .clone()
            .ok_or_else(|| CommandError::new(ErrorCode::NoIdentity, "Create your identity first."))
    }

    /// The relay client, or `relay_unavailable` if it was never started.
    pub fn relay(&self) -> CmdResult<RelayClient> {
        self.relay_opt()?.ok_or_else(|| {
            CommandError::new(ErrorCode::RelayUnavailable, "Not connected to a relay yet.")
        })
    }

    pub fn relay_opt(&self) -> CmdResult<Option<RelayClient>> {
        Ok(self.relay.lock().map_err(CommandError::internal)?.clone())
    }

    pub fn set_relay(&self, client: RelayClient) -> CmdResult<()> {
        *self.relay.lock().map_err(CommandError::internal)? = Some(client);
        Ok(())
    }

    pub fn take_relay(&self) -> CmdResult<Option<RelayClient>> {
        Ok(self.relay.lock().map_err(CommandError::internal)?.take())
    }

    /// The call service, or `relay_unavailable` before the relay client started.
    pub fn calls(&self) -> CmdResult<Calls> {
        self.calls
            .lock()
            .map_err(CommandError::internal)?
            .clone()
            .ok_or_else(|| {
                CommandError::new(ErrorCode::RelayUnavailable, "Not connected to a relay yet.")
            })
    }

    pub fn set_calls(&self, calls: Calls) -> CmdResult<()> {
        *self.calls.lock().map_err(CommandError::internal)? = Some(calls);
        Ok(())
    }

    pub fn my_voice(&self) -> CmdResult<MyVoice> {
        Ok(self
            .my_voice
            .lock()
            .map_err(CommandError::internal)?
            .clone())
    }

    pub fn set_my_voice(&self, v: MyVoice) -> CmdResult<()> {
        *self.my_voice.lock().map_err(CommandError::internal)? = v;
        Ok(())
    }

    pub fn session(&self) -> Option<Arc<VoiceSession>> {
        self.session.lock().ok()?.clone()
    }

    pub fn set_session(&self, s: Option<Arc<VoiceSession>>) {
        if let Ok(mut slot) = self.session.lock() {
            *slot = s;
        }
    }
}
