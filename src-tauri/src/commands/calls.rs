//! 1-on-1 calls with a friend: ring, accept or decline, talk, hang up.
//!
//! Two halves:
//! - [`CallTracker`], sans-IO: the call's phase (idle, outgoing, incoming, connecting, active) as
//!   user actions and relay events move it, and what the IO side must do (start or stop audio,
//!   decline a second caller). Unit-tested without a relay.
//! - The IO glue: the relay requests (`call_invite/accept/decline/cancel/hangup`), and a
//!   hum-engine `VoiceSession` with one peer whose SDP/ICE go through the relay in the call's
//!   scope. The caller offers once the callee accepted, as docs/protocol.md suggests.
//!
//! ADAPTER: hum-engine's `VoiceLink::call`/`answer` block until the call is accepted (and `answer`
//! waits for a `call_incoming` that the app has already shown as a prompt), so the app cannot use
//! them for a ringing UI with cancel; it drives the same public pieces (`VoiceSession::start`,
//! `add_peer_as`, `handle_signal`) itself. A `VoiceLink::accept(call)` in the engine would fold
//! this file's media half away.
//!
//! One voice session at a time: starting or accepting a call leaves the voice channel, joining a
//! channel hangs up the call.

use std::sync::Arc;

use hum_engine::voice::{Signaller, VoiceConfig, VoiceEvent, VoiceSession};
use hum_engine::{ClientError, ClientEvent, ConnectionState, RelayClient};
use hum_proto::signal::{CallEndReason, ErrorCode as RelayCode, Event, SignalPayload, SignalScope};
use hum_proto::{CallId, UserId};
use serde::{Deserialize, Serialize};
use specta::Type;
use tauri::{AppHandle, Manager, State};
use tauri_specta::Event as _;
use tokio::sync::{broadcast, mpsc};

use super::connection::client_error;
use super::servers::SelfSpeaking;
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

/// The call changed phase (or the peer started/stopped talking).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Type, tauri_specta::Event)]
pub struct CallChanged {
    pub call: CallView,
}

/// What the IO side must do after the tracker moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallAction {
    None,
    /// The view changed; tell the UI.
    Changed,
    /// The callee accepted my call: start audio, offering.
    StartMedia {
        call: CallId,
        peer: UserId,
    },
    /// The call is over: stop audio (the view changed too).
    StopMedia,
    /// Someone called while I am in another call: decline theirs.
    DeclineBusy(CallId),
}

/// The call's phase, moved by user actions and relay events. Sans-IO.
#[derive(Clone, Debug, Default)]
pub struct CallTracker {
    view: CallView,
    peer_id: Option<UserId>,
}

fn busy() -> CommandError {
    CommandError::invalid("You are already in a call. Hang up first.")
}

fn peer_name(v: &CallView) -> String {
    v.peer
        .as_ref()
        .map_or_else(|| "They".into(), |p| p.display_name.clone())
}

impl CallTracker {
    pub fn view(&self) -> &CallView {
        &self.view
    }

    pub fn is_idle(&self) -> bool {
        self.view.phase == CallPhase::Idle
    }

    fn end(&mut self, why: Option<String>) {
        self.view = CallView {
            ended: why,
            ..CallView::default()
        };
        self.peer_id = None;
    }

    /// I am about to call `peer` (before the relay has given the call an id).
    pub fn begin_outgoing(&mut self, peer: UserId, name: &str) -> CmdResult<()> {
        if !self.is_idle() {
            return Err(busy());
        }
        self.view = CallView {
            phase: CallPhase::Outgoing,
            call: None,
            peer: Some(CallPeer {
                user_id: peer.to_string(),
                display_name: name.to_owned(),
            }),
            peer_speaking: false,
            ended: None,
        };
        self.peer_id = Some(peer);
        Ok(())
    }

    /// The relay gave my outgoing call its id.
    pub fn invited(&mut self, call: CallId) -> CallAction {
        if self.view.phase == CallPhase::Outgoing && self.view.call.is_none() {
            self.view.call = Some(call.0);
            return CallAction::Changed;
        }
        CallAction::None
    }

    /// The invite failed: back to idle with the reason.
    pub fn failed(&mut self, why: String) -> CallAction {
        self.end(Some(why));
        CallAction::StopMedia
    }

    /// I accept the ringing call; returns it and the caller.
    pub fn accept(&mut self) -> CmdResult<(CallId, UserId)> {
        match (self.view.phase, self.view.call, self.peer_id) {
            (CallPhase::Incoming, Some(call), Some(peer)) => {
                self.view.phase = CallPhase::Connecting;
                Ok((CallId(call), peer))
            }
            _ => Err(CommandError::new(
                ErrorCode::NotFound,
                "There is no incoming call to accept.",
            )),
        }
    }

    /// I decline the ringing call; returns it.
    pub fn decline(&mut self) -> CmdResult<CallId> {
        match (self.view.phase, self.view.call) {
            (CallPhase::Incoming, Some(call)) => {
                self.end(None);
                Ok(CallId(call))
            }
            _ => Err(CommandError::new(
                ErrorCode::NotFound,
                "There is no incoming call to decline.",
            )),
        }
    }

    /// I hang up (or cancel a call still ringing). Returns the call and the phase it was in.
    pub fn hang_up(&mut self) -> Option<(Option<CallId>, CallPhase)> {
        let phase = self.view.phase;
        if phase == CallPhase::Idle || phase == CallPhase::Incoming {
            return None;
        }
        let call = self.view.call.map(CallId);
        let why = if phase == CallPhase::Outgoing {
            "Call cancelled."
        } else {
            "You hung up."
        };
        self.end(Some(why.into()));
        Some((call, phase))
    }

    /// The audio path to the peer is up.
    pub fn media_up(&mut self) -> CallAction {
        if self.view.phase == CallPhase::Connecting {
            self.view.phase = CallPhase::Active;
            return CallAction::Changed;
        }
        CallAction::None
    }

    pub fn peer_speaking(&mut self, speaking: bool) -> CallAction {
        if self.view.phase == CallPhase::Active && self.view.peer_speaking != speaking {
            self.view.peer_speaking = speaking;
            return CallAction::Changed;
        }
        CallAction::None
    }

    /// The relay connection dropped: the relay ends calls of a disconnected user.
    pub fn connection_lost(&mut self) -> CallAction {
        if self.is_idle() {
            return CallAction::None;
        }
        self.end(Some(
            "Call ended: the connection to the relay was lost.".into(),
        ));
        CallAction::StopMedia
    }

    /// A relay event.
    pub fn on_event(&mut self, ev: &Event) -> CallAction {
        match ev {
            Event::CallIncoming { call, from } => {
                if !self.is_idle() {
                    return CallAction::DeclineBusy(*call);
                }
                self.view = CallView {
                    phase: CallPhase::Incoming,
                    call: Some(call.0),
                    peer: Some(CallPeer {
                        user_id: from.id.to_string(),
                        display_name: from.display_name.to_string(),
                    }),
                    peer_speaking: false,
                    ended: None,
                };
                self.peer_id = Some(from.id);
                CallAction::Changed
            }
            Event::CallAccepted { call, by } => {
                let mine = self.view.phase == CallPhase::Outgoing
                    && (self.view.call == Some(call.0)
                        || (self.view.call.is_none() && self.peer_id == Some(*by)));
                if !mine {
                    return CallAction::None;
                }
                self.view.call = Some(call.0);
                self.view.phase = CallPhase::Connecting;
                CallAction::StartMedia {
                    call: *call,
                    peer: *by,
                }
            }
            Event::CallEnded { call, reason } if self.view.call == Some(call.0) => {
                let name = peer_name(&self.view);
                let incoming = self.view.phase == CallPhase::Incoming;
                let why = match reason {
                    CallEndReason::Declined => format!("{name} declined the call."),
                    CallEndReason::Cancelled => format!("Missed call from {name}."),
                    CallEndReason::HungUp => format!("{name} hung up."),
                    CallEndReason::Disconnected => format!("{name} disconnected."),
                    CallEndReason::Timeout if incoming => format!("Missed call from {name}."),
                    CallEndReason::Timeout => format!("No answer from {name}."),
                };
                self.end(Some(why));
                CallAction::StopMedia
            }
            _ => CallAction::None,
        }
    }
}

/// Relay errors for calls, in words.
fn call_error(e: ClientError, name: &str) -> CommandError {
    match e.code() {
        Some(RelayCode::NotFriends) => CommandError::new(
            ErrorCode::Rejected,
            format!("You can only call friends, and {name} is not (or no longer) one."),
        ),
        Some(RelayCode::NotFound) => CommandError::new(
            ErrorCode::NotFound,
            format!("{name} is offline or the call is over."),
        ),
        Some(RelayCode::InvalidState) => CommandError::new(
            ErrorCode::Rejected,
            format!("There is already a call with {name}."),
        ),
        Some(RelayCode::LimitReached) => {
            CommandError::new(ErrorCode::Rejected, "Too many calls at once.")
        }
        _ => client_error(e),
    }
}

/// Sends the call's SDP/ICE through the relay.
struct CallSignaller {
    client: RelayClient,
    call: CallId,
}

#[async_trait::async_trait]
impl Signaller for CallSignaller {
    async fn send(&self, to: UserId, payload: SignalPayload) -> Result<(), String> {
        self.client
            .signal(to, SignalScope::Call(self.call), payload)
            .await
            .map_err(|e| e.to_string())
    }
}

/// A call's running audio.
pub struct CallMedia {
    session: Arc<VoiceSession>,
    pump: tokio::task::JoinHandle<()>,
}

fn emit(app: &AppHandle, view: CallView) {
    if let Err(e) = (CallChanged { call: view }).emit(app) {
        tracing::warn!("call state not delivered: {e}");
    }
}

/// Moves the tracker under its lock and returns the action and the new view.
fn update<T>(state: &AppState, f: impl FnOnce(&mut CallTracker) -> T) -> CmdResult<(T, CallView)> {
    let mut t = state.call.lock().map_err(CommandError::internal)?;
    let out = f(&mut t);
    Ok((out, t.view().clone()))
}

/// Carries out what the tracker asked for.
async fn apply(app: &AppHandle, action: CallAction, view: CallView) {
    let state = app.state::<AppState>();
    match action {
        CallAction::None => {}
        CallAction::Changed => emit(app, view),
        CallAction::StopMedia => {
            stop_media(&state).await;
            emit(app, view);
        }
        CallAction::DeclineBusy(call) => {
            if let Ok(relay) = state.relay() {
                let _ = relay.call_decline(call).await;
            }
        }
        CallAction::StartMedia { call, peer } => {
            emit(app, view);
            let started = match state.relay() {
                Ok(relay) => {
                    let events = relay.subscribe();
                    start_media(app, relay, call, peer, true, events).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = started {
                fail(app, call, e.message).await;
            }
        }
    }
}

/// Audio could not start: hang up and say why.
async fn fail(app: &AppHandle, call: CallId, why: String) {
    let state = app.state::<AppState>();
    if let Ok(relay) = state.relay() {
        let _ = relay.call_hangup(call).await;
    }
    if let Ok((action, view)) = update(&state, |t| t.failed(format!("Call failed: {why}"))) {
        Box::pin(apply(app, action, view)).await;
    }
}

/// Relay events that concern calls (called for every client event by the connection's forwarder).
pub async fn on_client_event(app: &AppHandle, ev: &ClientEvent) {
    let state = app.state::<AppState>();
    let step = match ev {
        ClientEvent::Relay(e) => update(&state, |t| t.on_event(e)),
        ClientEvent::State(ConnectionState::Disconnected { .. } | ConnectionState::Stopped) => {
            update(&state, |t| t.connection_lost())
        }
        _ => return,
    };
    if let Ok((action, view)) = step {
        apply(app, action, view).await;
    }
}

/// Starts the call's audio: one peer, SDP/ICE in the call's scope. `events` must have been
/// subscribed before the relay could forward the peer's first signal.
async fn start_media(
    app: &AppHandle,
    relay: RelayClient,
    call: CallId,
    peer: UserId,
    we_offer: bool,
    relay_events: broadcast::Receiver<ClientEvent>,
) -> CmdResult<()> {
    let state = app.state::<AppState>();
    super::servers::leave_voice(&state).await;
    super::devices::stop_monitor(&state);
    let settings = super::voice::load(&state);
    let mut me = state.my_voice()?;
    let (io, notices) = super::devices::open_audio(&settings, me.muted || me.deafened)?;
    let signaller = Arc::new(CallSignaller {
        client: relay.clone(),
        call,
    });
    let (session, events) = VoiceSession::start(
        relay.user_id(),
        VoiceConfig::default(),
        io.source,
        io.sink,
        io.controls,
        signaller,
    )
    .map_err(|e| CommandError::new(ErrorCode::Device, e.to_string()))?;
    if me.deafened {
        session.set_deafened(true);
    }
    if let Some(pct) = settings.user_volumes.get(&peer.to_string()) {
        session.set_volume(peer, f32::from(*pct) / 100.0);
    }
    let pump = tokio::spawn(pump(
        app.clone(),
        session.clone(),
        call,
        relay_events,
        events,
    ));
    state.set_session(Some(session.clone()));
    state
        .level_follower
        .follow(state.levels.clone(), session.controls().input_level());
    *state.call_media.lock().await = Some(CallMedia {
        session: session.clone(),
        pump,
    });
    me.audio_notice = (!notices.is_empty()).then(|| notices.join(" "));
    state.set_my_voice(me)?;
    session
        .add_peer_as(peer, we_offer)
        .await
        .map_err(|e| CommandError::new(ErrorCode::Internal, e.to_string()))?;
    Ok(())
}

/// Stops the call's audio, if any. Returns whether there was any.
pub async fn stop_media(state: &AppState) -> bool {
    let media = state.call_media.lock().await.take();
    let Some(media) = media else {
        return false;
    };
    state.set_session(None);
    state.level_follower.stop(&state.levels);
    media.pump.abort();
    media.session.leave().await;
    if let Ok(mut me) = state.my_voice() {
        me.audio_notice = None;
        let _ = state.set_my_voice(me);
    }
    true
}

/// Hangs up whatever call runs (before joining a voice channel).
pub async fn hang_up_for_channel(app: &AppHandle) {
    let _ = call_hangup(app.clone(), app.state::<AppState>()).await;
}

/// Relay signals for this call -> the session; session events -> the tracker and the UI.
async fn pump(
    app: AppHandle,
    session: Arc<VoiceSession>,
    call: CallId,
    mut relay: broadcast::Receiver<ClientEvent>,
    mut local: mpsc::UnboundedReceiver<VoiceEvent>,
) {
    let scope = SignalScope::Call(call);
    loop {
        tokio::select! {
            ev = relay.recv() => match ev {
                Ok(ClientEvent::Relay(Event::Signal { from, scope: s, payload })) if s == scope => {
                    if let Err(e) = session.handle_signal(from, payload).await {
                        tracing::warn!("call signal: {e}");
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            },
            ev = local.recv() => {
                let Some(ev) = ev else { return };
                let state = app.state::<AppState>();
                let step = match ev {
                    VoiceEvent::PeerConnected(_) => update(&state, |t| t.media_up()),
                    VoiceEvent::Speaking { user: Some(_), speaking } => {
                        update(&state, |t| t.peer_speaking(speaking))
                    }
                    VoiceEvent::Speaking { user: None, speaking } => {
                        let _ = SelfSpeaking { speaking }.emit(&app);
                        continue;
                    }
                    VoiceEvent::Stats { user, stats } => {
                        state.stats.publish(&PeerStatsView::new(user, &stats));
                        continue;
                    }
                    VoiceEvent::Error(message) => {
                        let _ = super::servers::AudioNotice { message }.emit(&app);
                        continue;
                    }
                    _ => continue,
                };
                // Only `Changed` can come from here (audio starts and stops elsewhere).
                if let Ok((CallAction::Changed, view)) = step {
                    emit(&app, view);
                }
            }
        }
    }
}

/// Calls a friend. Returns at once with the phase `outgoing`; `CallChanged` follows when they
/// answer (or decline, or it times out after the relay's 60 s).
#[tauri::command]
#[specta::specta]
pub async fn call_start(
    app: AppHandle,
    state: State<'_, AppState>,
    user_id: String,
) -> CmdResult<CallView> {
    let peer = super::friends::parse_user(&user_id)?;
    let relay = state.relay()?;
    let friends = relay.friends().await.map_err(client_error)?;
    let friend = friends
        .friends
        .iter()
        .find(|f| f.user.id == peer)
        .ok_or_else(|| {
            CommandError::invalid("You can only call friends: send them a friend request first.")
        })?;
    let name = friend.user.display_name.to_string();
    if friend.presence.status != hum_proto::signal::Status::Online {
        return Err(CommandError::new(
            ErrorCode::Rejected,
            format!("{name} is offline."),
        ));
    }
    update(&state, |t| t.begin_outgoing(peer, &name))?.0?;
    match relay.call_invite(peer).await {
        Ok(call) => {
            let (action, view) = update(&state, |t| t.invited(call))?;
            apply(&app, action, view.clone()).await;
            Ok(view)
        }
        Err(e) => {
            let err = call_error(e, &name);
            let (action, view) = update(&state, |t| t.failed(err.message.clone()))?;
            apply(&app, action, view).await;
            Err(err)
        }
    }
}

/// Accepts the ringing call and starts its audio.
#[tauri::command]
#[specta::specta]
pub async fn call_accept(app: AppHandle, state: State<'_, AppState>) -> CmdResult<CallView> {
    let relay = state.relay()?;
    let ((call, peer), view) = {
        let (res, view) = update(&state, |t| t.accept())?;
        (res?, view)
    };
    emit(&app, view);
    // Subscribe before accepting: the caller's offer follows the relay's `call_accepted`.
    let events = relay.subscribe();
    if let Err(e) = relay.call_accept(CallId(call.0)).await {
        let name = peer_name(
            &state
                .call
                .lock()
                .map_err(CommandError::internal)?
                .view()
                .clone(),
        );
        let err = call_error(e, &name);
        let (action, view) = update(&state, |t| t.failed(err.message.clone()))?;
        apply(&app, action, view).await;
        return Err(err);
    }
    if let Err(e) = start_media(&app, relay, call, peer, false, events).await {
        fail(&app, call, e.message.clone()).await;
        return Err(e);
    }
    call_get(state)
}

#[tauri::command]
#[specta::specta]
pub async fn call_decline(app: AppHandle, state: State<'_, AppState>) -> CmdResult<CallView> {
    let (call, view) = update(&state, |t| t.decline())?;
    let call = call?;
    emit(&app, view.clone());
    if let Ok(relay) = state.relay() {
        // Already over (the caller gave up first): nothing left to decline.
        let _ = relay.call_decline(call).await;
    }
    Ok(view)
}

/// Hangs up, or cancels a call still ringing. Idle already: nothing to do.
#[tauri::command]
#[specta::specta]
pub async fn call_hangup(app: AppHandle, state: State<'_, AppState>) -> CmdResult<CallView> {
    let (ended, view) = update(&state, |t| t.hang_up())?;
    let Some((call, phase)) = ended else {
        return Ok(view);
    };
    // Tell the relay first, so the other side hears "hung up" rather than a dropped connection.
    if let (Some(call), Ok(relay)) = (call, state.relay()) {
        let _ = if phase == CallPhase::Outgoing {
            relay.call_cancel(call).await
        } else {
            relay.call_hangup(call).await
        };
    }
    stop_media(&state).await;
    emit(&app, view.clone());
    Ok(view)
}

#[tauri::command]
#[specta::specta]
pub fn call_get(state: State<'_, AppState>) -> CmdResult<CallView> {
    Ok(state
        .call
        .lock()
        .map_err(CommandError::internal)?
        .view()
        .clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hum_proto::signal::{DisplayName, UserSummary};

    fn bob() -> UserSummary {
        UserSummary {
            id: UserId([0xb0; 32]),
            display_name: DisplayName::new("Bob").expect("name"),
        }
    }

    #[test]
    fn outgoing_call_rings_connects_and_ends_when_they_hang_up() {
        let mut t = CallTracker::default();
        t.begin_outgoing(bob().id, "Bob").expect("idle");
        assert_eq!(t.view().phase, CallPhase::Outgoing);
        assert!(
            t.begin_outgoing(bob().id, "Bob").is_err(),
            "one call at a time"
        );
        assert_eq!(t.invited(CallId(4)), CallAction::Changed);
        let act = t.on_event(&Event::CallAccepted {
            call: CallId(4),
            by: bob().id,
        });
        assert_eq!(
            act,
            CallAction::StartMedia {
                call: CallId(4),
                peer: bob().id
            }
        );
        assert_eq!(t.view().phase, CallPhase::Connecting);
        assert_eq!(t.peer_speaking(true), CallAction::None, "not active yet");
        assert_eq!(t.media_up(), CallAction::Changed);
        assert_eq!(t.view().phase, CallPhase::Active);
        assert_eq!(t.peer_speaking(true), CallAction::Changed);
        assert_eq!(t.peer_speaking(true), CallAction::None);
        // Someone else's call ending changes nothing.
        let other = Event::CallEnded {
            call: CallId(9),
            reason: CallEndReason::HungUp,
        };
        assert_eq!(t.on_event(&other), CallAction::None);
        let act = t.on_event(&Event::CallEnded {
            call: CallId(4),
            reason: CallEndReason::HungUp,
        });
        assert_eq!(act, CallAction::StopMedia);
        assert_eq!(t.view().phase, CallPhase::Idle);
        assert_eq!(t.view().ended.as_deref(), Some("Bob hung up."));
        assert_eq!(t.view().peer, None);
    }

    #[test]
    fn an_accept_racing_the_invite_reply_is_still_ours() {
        let mut t = CallTracker::default();
        t.begin_outgoing(bob().id, "Bob").expect("idle");
        let act = t.on_event(&Event::CallAccepted {
            call: CallId(2),
            by: bob().id,
        });
        assert!(matches!(act, CallAction::StartMedia { .. }));
        assert_eq!(t.invited(CallId(2)), CallAction::None);
        assert_eq!(t.view().call, Some(2));
        // An accept from someone else for a call id we never had is not ours.
        let mut t = CallTracker::default();
        t.begin_outgoing(bob().id, "Bob").expect("idle");
        let act = t.on_event(&Event::CallAccepted {
            call: CallId(3),
            by: UserId([1; 32]),
        });
        assert_eq!(act, CallAction::None);
    }

    #[test]
    fn incoming_call_accept_decline_and_busy() {
        let mut t = CallTracker::default();
        assert!(t.accept().is_err(), "nothing rings");
        let ring = Event::CallIncoming {
            call: CallId(7),
            from: bob(),
        };
        assert_eq!(t.on_event(&ring), CallAction::Changed);
        assert_eq!(t.view().phase, CallPhase::Incoming);
        assert_eq!(
            t.view().peer.as_ref().map(|p| p.display_name.as_str()),
            Some("Bob")
        );
        // A second caller while this one rings is declined.
        let second = Event::CallIncoming {
            call: CallId(8),
            from: UserSummary {
                id: UserId([2; 32]),
                display_name: DisplayName::new("Cy").expect("name"),
            },
        };
        assert_eq!(t.on_event(&second), CallAction::DeclineBusy(CallId(8)));
        assert_eq!(t.accept().expect("rings"), (CallId(7), bob().id));
        assert_eq!(t.view().phase, CallPhase::Connecting);
        assert!(t.decline().is_err(), "already accepted");
        assert_eq!(t.hang_up(), Some((Some(CallId(7)), CallPhase::Connecting)));
        assert_eq!(t.view().ended.as_deref(), Some("You hung up."));

        let mut t = CallTracker::default();
        t.on_event(&ring);
        assert_eq!(t.decline().expect("rings"), CallId(7));
        assert!(t.is_idle());
        assert_eq!(t.view().ended, None);
    }

    #[test]
    fn end_reasons_read_well_from_each_side() {
        let ended = |phase_setup: &dyn Fn(&mut CallTracker), reason| {
            let mut t = CallTracker::default();
            phase_setup(&mut t);
            t.on_event(&Event::CallEnded {
                call: CallId(5),
                reason,
            });
            t.view().ended.clone().unwrap_or_default()
        };
        let ringing_me = |t: &mut CallTracker| {
            t.on_event(&Event::CallIncoming {
                call: CallId(5),
                from: bob(),
            });
        };
        let calling_bob = |t: &mut CallTracker| {
            t.begin_outgoing(bob().id, "Bob").expect("idle");
            t.invited(CallId(5));
        };
        assert_eq!(
            ended(&ringing_me, CallEndReason::Cancelled),
            "Missed call from Bob."
        );
        assert_eq!(
            ended(&ringing_me, CallEndReason::Timeout),
            "Missed call from Bob."
        );
        assert_eq!(
            ended(&calling_bob, CallEndReason::Timeout),
            "No answer from Bob."
        );
        assert_eq!(
            ended(&calling_bob, CallEndReason::Declined),
            "Bob declined the call."
        );
        assert_eq!(
            ended(&calling_bob, CallEndReason::Disconnected),
            "Bob disconnected."
        );
    }

    #[test]
    fn losing_the_relay_ends_the_call_and_cancel_reads_as_cancel() {
        let mut t = CallTracker::default();
        assert_eq!(t.connection_lost(), CallAction::None);
        t.begin_outgoing(bob().id, "Bob").expect("idle");
        assert_eq!(t.hang_up(), Some((None, CallPhase::Outgoing)));
        assert_eq!(t.view().ended.as_deref(), Some("Call cancelled."));
        assert_eq!(t.hang_up(), None, "idle: nothing to hang up");
        t.begin_outgoing(bob().id, "Bob").expect("idle");
        assert_eq!(t.connection_lost(), CallAction::StopMedia);
        assert!(
            t.view()
                .ended
                .as_deref()
                .unwrap_or("")
                .contains("relay was lost")
        );
    }

    #[test]
    fn call_view_wire_shape() {
        let v = CallView::default();
        assert_eq!(
            serde_json::to_string(&v).expect("json"),
            r#"{"phase":"idle","call":null,"peer":null,"peer_speaking":false,"ended":null}"#
        );
    }
}
