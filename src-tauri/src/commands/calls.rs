//! 1-on-1 calls with a friend: a thin adapter over hum-engine's call service
//! (`hum_engine::calls`), which owns the state machine, the relay requests and the call's media
//! session (the same service `hum call` uses).
//!
//! This file only: turns the engine's `CallState` into the view the UI shows, its events into
//! Tauri events and streams, its errors into `CommandError`s, and provides the devices
//! (`AppMedia`: the user's chosen microphone and speaker, leaving the voice channel first).
//!
//! One voice session at a time: starting or accepting a call leaves the voice channel, joining a
//! channel hangs up the call.

use std::sync::Arc;

use hum_engine::RelayClient;
use hum_engine::calls::{self, CallError, CallEvent, CallState, Calls, MediaIo, MediaProvider};
use hum_engine::voice::{VideoIo, VoiceEvent, VoiceSession};
use serde::{Deserialize, Serialize};
use specta::Type;
use tauri::{AppHandle, Manager, State};
use tauri_specta::Event as _;

use super::connection::client_error;
use super::servers::{AudioNotice, SelfSpeaking};
use crate::channels::PeerStatsView;
use crate::error::{CmdResult, CommandError, ErrorCode};
use crate::state::AppState;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
#[serde(rename_all = "snake_case")]
pub enum CallPhase {
    Idle,
    /// I called; it rings on their side.
    Outgoing,
    /// They call me: accept or decline.
    Incoming,
    /// Accepted; audio is being connected.
    Connecting,
    /// Audio flows.
    Active,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct CallPeer {
    pub user_id: String,
    pub display_name: String,
}

/// The call as the UI shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct CallView {
    pub phase: CallPhase,
    pub call: Option<u64>,
    pub peer: Option<CallPeer>,
    /// The other side is talking (their voice activity, as heard here).
    pub peer_speaking: bool,
    /// Why the last call ended, while idle ("Bob hung up.", "No answer from Bob.").
    pub ended: Option<String>,
}

impl Default for CallView {
    fn default() -> Self {
        Self {
            phase: CallPhase::Idle,
            call: None,
            peer: None,
            peer_speaking: false,
            ended: None,
        }
    }
}

impl From<&CallState> for CallView {
    fn from(s: &CallState) -> Self {
        let phase = match s {
            CallState::Idle | CallState::Ended { .. } => CallPhase::Idle,
            CallState::Outgoing { .. } => CallPhase::Outgoing,
            CallState::Incoming { .. } => CallPhase::Incoming,
            CallState::Connecting { .. } => CallPhase::Connecting,
            CallState::Active { .. } => CallPhase::Active,
        };
        let peer = s.peer().map(|p| CallPeer {
            user_id: p.id.to_string(),
            display_name: p.name.clone(),
        });
        match s {
            CallState::Ended { reason, .. } => CallView {
                ended: reason.sentence(peer.as_ref().map_or("They", |p| &p.display_name)),
                ..CallView::default()
            },
            _ => CallView {
                phase,
                call: s.call().map(|c| c.0),
                peer,
                peer_speaking: matches!(
                    s,
                    CallState::Active {
                        peer_speaking: true,
                        ..
                    }
                ),
                ended: None,
            },
        }
    }
}

/// The call changed phase (or the peer started/stopped talking).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Type, tauri_specta::Event)]
pub struct CallChanged {
    pub call: CallView,
}

/// The engine's refusals, for the UI.
pub fn call_error(e: CallError) -> CommandError {
    let code = match &e {
        CallError::Busy | CallError::NotFriend => ErrorCode::InvalidInput,
        CallError::NothingToAccept
        | CallError::NothingToDecline
        | CallError::NothingToCancel
        | CallError::NothingToHangUp
        | CallError::Unreachable { .. } => ErrorCode::NotFound,
        CallError::Offline { .. } | CallError::AlreadyCalling { .. } | CallError::TooManyCalls => {
            ErrorCode::Rejected
        }
        CallError::Media(_) => ErrorCode::Device,
        CallError::Stopped => ErrorCode::RelayUnavailable,
        CallError::Relay(c) => return client_error(c.clone()),
    };
    CommandError::new(code, e.to_string())
}

/// The call's devices: the user's chosen microphone and speaker with their settings.
struct AppMedia {
    app: AppHandle,
}

#[calls::async_trait]
impl MediaProvider for AppMedia {
    async fn open(&self, _peer: &calls::CallPeer) -> Result<MediaIo, String> {
        let state = self.app.state::<AppState>();
        super::servers::leave_voice(&state).await;
        super::devices::stop_monitor(&state);
        let settings = super::voice::load(&state);
        let mut me = state.my_voice().map_err(|e| e.message)?;
        let (audio, notices) = super::devices::open_audio(&settings, me.muted || me.deafened)
            .map_err(|e| e.message)?;
        me.audio_notice = (!notices.is_empty()).then(|| notices.join(" "));
        state.set_my_voice(me).map_err(|e| e.message)?;
        // "Hide my IP" (Settings -> Privacy): media through TURN only.
        let relay = state.relay().map_err(|e| e.message)?;
        let config = super::privacy::voice_config(state.kv.as_ref(), &relay)
            .await
            .map_err(|e| e.message)?;
        Ok(MediaIo { config, audio })
    }

    async fn open_video(&self, _peer: &calls::CallPeer) -> Result<VideoIo, String> {
        Ok(super::video::call_video_io(&self.app.state::<AppState>()))
    }

    async fn started(&self, session: &Arc<VoiceSession>) {
        let state = self.app.state::<AppState>();
        super::video::follow_call_video(&state, session);
        let settings = super::voice::load(&state);
        if state.my_voice().is_ok_and(|m| m.deafened) {
            session.set_deafened(true);
        }
        for (user, pct) in &settings.user_volumes {
            if let Ok(u) = user.parse() {
                session.set_volume(u, f32::from(*pct) / 100.0);
            }
        }
        state.set_session(Some(session.clone()));
        state
            .level_follower
            .follow(state.levels.clone(), session.controls().input_level());
    }

    async fn stopped(&self, session: &Arc<VoiceSession>) {
        let state = self.app.state::<AppState>();
        // Before the session stops: its capture thread waits on my camera's frames.
        super::video::stop_call_video(&state);
        // A voice channel joined since has its own session: leave that one alone.
        if state.session().is_some_and(|s| Arc::ptr_eq(&s, session)) {
            state.set_session(None);
            state.level_follower.stop(&state.levels);
            if let Ok(mut me) = state.my_voice() {
                me.audio_notice = None;
                let _ = state.set_my_voice(me);
            }
        }
    }
}

/// Starts the call service for a (new) relay client and forwards what it reports to the UI.
pub fn start(app: &AppHandle, client: &RelayClient) -> Calls {
    let (calls, mut events) = Calls::start(client.clone(), Arc::new(AppMedia { app: app.clone() }));
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev {
                CallEvent::State(s) => {
                    if let Err(e) = (CallChanged {
                        call: CallView::from(&s),
                    })
                    .emit(&app)
                    {
                        tracing::warn!("call state not delivered: {e}");
                    }
                }
                CallEvent::Media(VoiceEvent::Speaking {
                    user: None,
                    speaking,
                }) => {
                    let _ = SelfSpeaking { speaking }.emit(&app);
                }
                CallEvent::Media(VoiceEvent::Stats { user, stats }) => {
                    app.state::<AppState>()
                        .stats
                        .publish(&PeerStatsView::new(user, &stats));
                }
                CallEvent::Media(VoiceEvent::Error(message)) => {
                    let _ = AudioNotice { message }.emit(&app);
                }
                CallEvent::Media(_) => {}
            }
        }
    });
    calls
}

/// Hangs up whatever call runs (before joining a voice channel).
pub async fn hang_up_for_channel(app: &AppHandle) {
    if let Ok(calls) = app.state::<AppState>().calls() {
        let _ = calls.hang_up().await;
    }
}

/// Calls a friend. Returns at once with the phase `outgoing`; `CallChanged` follows when they
/// answer (or decline, or it times out after the relay's 60 s).
#[tauri::command]
#[specta::specta]
pub async fn call_start(state: State<'_, AppState>, user_id: String) -> CmdResult<CallView> {
    let peer = super::friends::parse_user(&user_id)?;
    let s = state.calls()?.invite(peer).await.map_err(call_error)?;
    Ok(CallView::from(&s))
}

/// Accepts the ringing call and starts its audio.
#[tauri::command]
#[specta::specta]
pub async fn call_accept(state: State<'_, AppState>) -> CmdResult<CallView> {
    let s = state.calls()?.accept().await.map_err(call_error)?;
    Ok(CallView::from(&s))
}

#[tauri::command]
#[specta::specta]
pub async fn call_decline(state: State<'_, AppState>) -> CmdResult<CallView> {
    let s = state.calls()?.decline().await.map_err(call_error)?;
    Ok(CallView::from(&s))
}

/// Hangs up, or cancels a call still ringing. Idle already: nothing to do.
#[tauri::command]
#[specta::specta]
pub async fn call_hangup(state: State<'_, AppState>) -> CmdResult<CallView> {
    let s = state.calls()?.hang_up().await.map_err(call_error)?;
    Ok(CallView::from(&s))
}

#[tauri::command]
#[specta::specta]
pub fn call_get(state: State<'_, AppState>) -> CmdResult<CallView> {
    Ok(state
        .calls()
        .map(|c| CallView::from(&c.state()))
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hum_engine::calls::EndReason;
    use hum_proto::{CallId, UserId};

    fn bob() -> calls::CallPeer {
        calls::CallPeer {
            id: UserId([0xb0; 32]),
            name: "Bob".into(),
        }
    }

    #[test]
    fn call_view_wire_shape() {
        let v = CallView::default();
        assert_eq!(
            serde_json::to_string(&v).expect("json"),
            r#"{"phase":"idle","call":null,"peer":null,"peer_speaking":false,"ended":null}"#
        );
    }

    #[test]
    fn engine_states_map_to_the_view() {
        let v = CallView::from(&CallState::Outgoing {
            peer: bob(),
            call: None,
        });
        assert_eq!(v.phase, CallPhase::Outgoing);
        assert_eq!(v.call, None);
        assert_eq!(
            v.peer.as_ref().map(|p| p.display_name.as_str()),
            Some("Bob")
        );
        let v = CallView::from(&CallState::Active {
            peer: bob(),
            call: CallId(4),
            peer_speaking: true,
        });
        assert_eq!(
            (v.phase, v.call, v.peer_speaking),
            (CallPhase::Active, Some(4), true)
        );
        let v = CallView::from(&CallState::Ended {
            peer: Some(bob()),
            reason: EndReason::TheyHungUp,
        });
        assert_eq!(v.phase, CallPhase::Idle);
        assert_eq!(v.peer, None);
        assert_eq!(v.ended.as_deref(), Some("Bob hung up."));
        // Declining leaves nothing to explain: no bar.
        let v = CallView::from(&CallState::Ended {
            peer: Some(bob()),
            reason: EndReason::Declined,
        });
        assert_eq!(v, CallView::default());
    }

    #[test]
    fn refusals_keep_their_codes() {
        assert_eq!(call_error(CallError::Busy).code, ErrorCode::InvalidInput);
        assert_eq!(
            call_error(CallError::NothingToAccept).code,
            ErrorCode::NotFound
        );
        let e = call_error(CallError::Offline { name: "Bob".into() });
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::Rejected, "Bob is offline.")
        );
        assert_eq!(
            call_error(CallError::Media("no device".into())).code,
            ErrorCode::Device
        );
        assert_eq!(
            call_error(CallError::Relay(hum_engine::ClientError::Stopped)).code,
            ErrorCode::RelayUnavailable
        );
    }
}
