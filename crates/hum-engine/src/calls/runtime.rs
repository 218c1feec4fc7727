//! [`Calls`]: the handle the app and the CLI hold, and the task that runs the [`CallMachine`]
//! against the relay and a media session.
//!
//! One task owns the machine and does everything in order: a user action, a relay event or a
//! media event goes in, then every output is carried out before the next input is read. So the
//! callee's media session exists before the caller's offer is read (it follows the relay's
//! `call_accepted`, which follows our accept), and `hang_up` returns only after the relay was
//! told and the media stopped.

use std::sync::{Arc, Mutex};

use hum_proto::signal::{Event, SignalScope};
use hum_proto::{CallId, UserId};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::machine::{CallMachine, CallOutput, RelayRequest};
use super::{CallError, CallPeer, CallState, MediaIo};
use crate::relay::{ClientEvent, ConnectionState, RelayClient};
use crate::voice::link::RelaySignaller;
use crate::voice::{VideoIo, VoiceEvent, VoiceSession};

/// Opens a call's devices, and hears when its media session starts and stops. The app opens the
/// user's chosen microphone and speaker (and leaves the voice channel first); `hum call` a WAV
/// file or a tone.
#[async_trait::async_trait]
pub trait MediaProvider: Send + Sync + 'static {
    /// Called when the call is accepted (either way), before connecting.
    async fn open(&self, peer: &CallPeer) -> Result<MediaIo, String>;
    /// The call's video (camera or screen to send, whether and how to receive), opened right
    /// after [`open`](Self::open). Default: none, a voice-only call.
    async fn open_video(&self, _peer: &CallPeer) -> Result<VideoIo, String> {
        Ok(VideoIo::default())
    }
    /// The call's media session runs (before the peer is added).
    async fn started(&self, _session: &Arc<VoiceSession>) {}
    /// The call's media session is about to stop.
    async fn stopped(&self, _session: &Arc<VoiceSession>) {}
}

/// What [`Calls`] reports, in order.
#[derive(Debug, Clone)]
pub enum CallEvent {
    /// The call's state changed.
    State(CallState),
    /// From the call's media session: connected, speaking, stats, errors...
    Media(VoiceEvent),
}

type Reply = oneshot::Sender<Result<CallState, CallError>>;

enum Command {
    Invite(UserId, Reply),
    Accept(Reply),
    Decline(Reply),
    Cancel(Reply),
    HangUp(Reply),
}

/// The call service of one relay connection. Cheap to clone; the task ends when the relay
/// client stops or every handle is dropped (hanging up first).
#[derive(Clone)]
pub struct Calls {
    tx: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<CallState>,
    session: Arc<Mutex<Option<Arc<VoiceSession>>>>,
}

impl std::fmt::Debug for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calls")
            .field("state", &*self.state.borrow())
            .finish()
    }
}

impl Calls {
    /// Starts the call service on `client` (listening for incoming calls at once). Must run
    /// inside a tokio runtime.
    pub fn start(
        client: RelayClient,
        provider: Arc<dyn MediaProvider>,
    ) -> (Self, mpsc::UnboundedReceiver<CallEvent>) {
        let relay = client.subscribe();
        let (tx, commands) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(CallState::Idle);
        let (media_tx, media_rx) = mpsc::unbounded_channel();
        let session = Arc::new(Mutex::new(None));
        let actor = Actor {
            client,
            provider,
            machine: CallMachine::new(),
            state: state_tx,
            events,
            media: None,
            media_tx,
            generation: 0,
            session: session.clone(),
            error: None,
        };
        tokio::spawn(actor.run(commands, relay, media_rx));
        (Self { tx, state, session }, events_rx)
    }

    /// The call's state now.
    pub fn state(&self) -> CallState {
        self.state.borrow().clone()
    }

    /// The state as a watch (for waiting on a change).
    pub fn watch(&self) -> watch::Receiver<CallState> {
        self.state.clone()
    }

    /// The running media session (mute, deafen, volume, input level), while connecting or in
    /// the call.
    pub fn session(&self) -> Option<Arc<VoiceSession>> {
        self.session.lock().ok()?.clone()
    }

    async fn ask(&self, cmd: impl FnOnce(Reply) -> Command) -> Result<CallState, CallError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(cmd(reply)).map_err(|_| CallError::Stopped)?;
        rx.await.map_err(|_| CallError::Stopped)?
    }

    /// Calls a friend. Returns once the relay took the call (state `Outgoing`); whether they
    /// answer comes later as [`CallEvent::State`].
    pub async fn invite(&self, friend: UserId) -> Result<CallState, CallError> {
        self.ask(|r| Command::Invite(friend, r)).await
    }

    /// Accepts the ringing call and starts its media (state `Connecting`, then `Active`).
    pub async fn accept(&self) -> Result<CallState, CallError> {
        self.ask(Command::Accept).await
    }

    /// Declines the ringing call.
    pub async fn decline(&self) -> Result<CallState, CallError> {
        self.ask(Command::Decline).await
    }

    /// Withdraws my call before it is answered.
    pub async fn cancel(&self) -> Result<CallState, CallError> {
        self.ask(Command::Cancel).await
    }

    /// Hangs up (or cancels my call still ringing). Without a call, nothing happens. Returns
    /// after the relay was told and the media stopped.
    pub async fn hang_up(&self) -> Result<CallState, CallError> {
        self.ask(Command::HangUp).await
    }
}

struct Media {
    call: CallId,
    session: Arc<VoiceSession>,
    forward: tokio::task::JoinHandle<()>,
}

struct Actor {
    client: RelayClient,
    provider: Arc<dyn MediaProvider>,
    machine: CallMachine,
    state: watch::Sender<CallState>,
    events: mpsc::UnboundedSender<CallEvent>,
    media: Option<Media>,
    /// Media events, tagged with the session's generation so a stopped session's stragglers
    /// are dropped.
    media_tx: mpsc::UnboundedSender<(u64, VoiceEvent)>,
    generation: u64,
    session: Arc<Mutex<Option<Arc<VoiceSession>>>>,
    /// A refusal met while carrying out the current command, for its reply.
    error: Option<CallError>,
}

impl Actor {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut relay: broadcast::Receiver<ClientEvent>,
        mut media: mpsc::UnboundedReceiver<(u64, VoiceEvent)>,
    ) {
        loop {
            tokio::select! {
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else {
                        // Every handle is gone: nobody can hang up any more, so do it now.
                        let _ = self.machine.hang_up();
                        let _ = self.machine.decline();
                        self.drain().await;
                        return;
                    };
                    self.command(cmd).await;
                }
                ev = relay.recv() => {
                    let stop = match ev {
                        Ok(ev) => self.relay_event(ev).await,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!("calls missed {n} relay events");
                            false
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            self.machine.connection_lost();
                            true
                        }
                    };
                    self.drain().await;
                    if stop {
                        return;
                    }
                }
                Some((generation, ev)) = media.recv() => {
                    if generation == self.generation {
                        match &ev {
                            VoiceEvent::PeerConnected(_) => self.machine.media_connected(),
                            VoiceEvent::Speaking { user: Some(_), speaking } => {
                                self.machine.peer_speaking(*speaking);
                            }
                            _ => {}
                        }
                        let _ = self.events.send(CallEvent::Media(ev));
                        self.drain().await;
                    }
                }
            }
        }
    }

    /// A relay event; `true` when the client stopped for good.
    async fn relay_event(&mut self, ev: ClientEvent) -> bool {
        match ev {
            ClientEvent::Relay(Event::Signal {
                from,
                scope,
                payload,
            }) => {
                if let Some(m) = &self.media
                    && scope == SignalScope::Call(m.call)
                    && let Err(e) = m.session.handle_signal(from, payload).await
                {
                    tracing::warn!("call signal: {e}");
                }
                false
            }
            ClientEvent::Relay(e) => {
                self.machine.on_relay(&e);
                false
            }
            ClientEvent::State(ConnectionState::Disconnected { .. }) => {
                self.machine.connection_lost();
                false
            }
            ClientEvent::State(ConnectionState::Stopped) => {
                self.machine.connection_lost();
                true
            }
            _ => false,
        }
    }

    async fn command(&mut self, cmd: Command) {
        self.error = None;
        let (result, reply) = match cmd {
            Command::Invite(friend, reply) => (self.invite(friend).await, reply),
            Command::Accept(reply) => (self.machine.accept(), reply),
            Command::Decline(reply) => (self.machine.decline(), reply),
            Command::Cancel(reply) => (self.machine.cancel(), reply),
            Command::HangUp(reply) => (self.machine.hang_up(), reply),
        };
        self.drain().await;
        let result = match (result, self.error.take()) {
            (Err(e), _) | (Ok(()), Some(e)) => Err(e),
            (Ok(()), None) => Ok(self.machine.state().clone()),
        };
        let _ = reply.send(result);
    }

    /// Checks the friend (name, online) before ringing them.
    async fn invite(&mut self, friend: UserId) -> Result<(), CallError> {
        if self.machine.is_busy() {
            return Err(CallError::Busy);
        }
        let list = self.client.friends().await.map_err(CallError::Relay)?;
        let f = list
            .friends
            .iter()
            .find(|f| f.user.id == friend)
            .ok_or(CallError::NotFriend)?;
        let name = f.user.display_name.to_string();
        if f.presence.status != hum_proto::signal::Status::Online {
            return Err(CallError::Offline { name });
        }
        self.machine.invite(CallPeer { id: friend, name })
    }

    fn peer_name(&self) -> String {
        self.machine
            .state()
            .peer()
            .map_or_else(|| "They".into(), |p| p.name.clone())
    }

    /// Carries out everything the machine asks, in order (an output may lead to more).
    async fn drain(&mut self) {
        while let Some(out) = self.machine.poll_output() {
            match out {
                CallOutput::Changed(s) => {
                    tracing::debug!(state = s.name(), "call");
                    self.state.send_replace(s.clone());
                    let _ = self.events.send(CallEvent::State(s));
                }
                CallOutput::Relay(r) => self.relay_request(r).await,
                CallOutput::StartMedia {
                    call,
                    peer,
                    we_offer,
                } => {
                    if let Err(why) = self.start_media(call, peer, we_offer).await {
                        self.machine.media_failed(&why);
                        self.error = Some(CallError::Media(why));
                    }
                }
                CallOutput::StopMedia => self.stop_media().await,
            }
        }
    }

    async fn relay_request(&mut self, r: RelayRequest) {
        let c = &self.client;
        let done = match r {
            RelayRequest::Invite(peer) => match c.call_invite(peer).await {
                Ok(call) => {
                    self.machine.invited(call);
                    return;
                }
                Err(e) => {
                    let err = CallError::from_client(e, &self.peer_name());
                    self.machine.invite_failed(&err);
                    self.error = Some(err);
                    return;
                }
            },
            RelayRequest::Accept(call) => match c.call_accept(call).await {
                Ok(()) => {
                    self.machine.accept_confirmed(call);
                    return;
                }
                Err(e) => {
                    let err = CallError::from_client(e, &self.peer_name());
                    self.machine.accept_failed(call, &err);
                    self.error = Some(err);
                    return;
                }
            },
            // Already over on our side; a refusal means the call was over anyway.
            RelayRequest::Decline(call) => c.call_decline(call).await,
            RelayRequest::Cancel(call) => c.call_cancel(call).await,
            RelayRequest::HangUp(call) => c.call_hangup(call).await,
        };
        if let Err(e) = done {
            tracing::debug!("call request after the end: {e}");
        }
    }

    async fn start_media(
        &mut self,
        call: CallId,
        peer: UserId,
        we_offer: bool,
    ) -> Result<(), String> {
        let who = self.machine.state().peer().cloned().unwrap_or(CallPeer {
            id: peer,
            name: peer.to_string(),
        });
        let io = self.provider.open(&who).await?;
        let video = self.provider.open_video(&who).await?;
        let signaller = Arc::new(RelaySignaller::new(
            self.client.clone(),
            SignalScope::Call(call),
        ));
        let (session, mut rx) = VoiceSession::start_with_video(
            self.client.user_id(),
            io.config,
            io.audio.source,
            io.audio.sink,
            io.audio.controls,
            video,
            signaller,
        )
        .map_err(|e| e.to_string())?;
        self.generation += 1;
        let generation = self.generation;
        let tx = self.media_tx.clone();
        let forward = tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if tx.send((generation, ev)).is_err() {
                    return;
                }
            }
        });
        self.media = Some(Media {
            call,
            session: session.clone(),
            forward,
        });
        if let Ok(mut slot) = self.session.lock() {
            *slot = Some(session.clone());
        }
        self.provider.started(&session).await;
        session
            .add_peer_as(peer, we_offer)
            .await
            .map_err(|e| e.to_string())
    }

    async fn stop_media(&mut self) {
        let Some(m) = self.media.take() else {
            return;
        };
        self.generation += 1;
        if let Ok(mut slot) = self.session.lock() {
            *slot = None;
        }
        self.provider.stopped(&m.session).await;
        m.session.leave().await;
        m.forward.abort();
    }
}
