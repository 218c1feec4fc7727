//! 1-on-1 calls with a friend: invite, ring, accept or decline, talk, hang up. One API for the
//! app and `hum call`, non-blocking: every action returns as soon as the relay answered it, and
//! everything that happens later (they accept, they hang up, media connects, stats) comes out of
//! one event stream.
//!
//! ```text
//!  app / CLI ──invite/accept/decline/cancel/hang_up──► Calls (handle) ──► actor task
//!                                                                         │  CallMachine (sans-IO)
//!  relay events (call_incoming/accepted/ended, signal) ──────────────────►│  RelayClient requests
//!  media session events (connected, speaking, stats) ────────────────────►│  media session (1 peer)
//!  ◄── CallEvent: State(CallState) | MediaStarted(session) | Media(VoiceEvent) ──┘
//! ```
//!
//! - [`machine`]: the state machine ([`CallState`]: idle, outgoing, incoming, connecting,
//!   active, ended with a reason), unit-tested on injected events.
//! - [`runtime`]: [`Calls`], the handle, and the task that carries out what the machine asks:
//!   relay requests, and a media session with one peer whose SDP/ICE go through the relay in the
//!   call's scope. Devices come from a [`MediaProvider`] (the app opens its chosen devices, the
//!   CLI a WAV or a tone), so the seam stays the same when a call carries camera and screen
//!   tracks next to audio.
//!
//! One call at a time: a second caller is declined while busy.

pub mod machine;
pub mod runtime;

use std::fmt;

use hum_proto::{CallId, UserId};

use crate::relay::ClientError;
use crate::voice::VoiceConfig;
use crate::voice::link::AudioIo;

/// For implementing [`MediaProvider`] without a second dependency.
pub use async_trait::async_trait;
pub use machine::{CallMachine, CallOutput, RelayRequest};
pub use runtime::{CallEvent, Calls, MediaProvider};

/// Who the call is with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallPeer {
    pub id: UserId,
    pub name: String,
}

/// Where the call stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CallState {
    /// No call yet.
    #[default]
    Idle,
    /// I called; it rings on their side (`call` is `None` until the relay gave it an id).
    Outgoing {
        peer: CallPeer,
        call: Option<CallId>,
    },
    /// They call me: accept or decline.
    Incoming { peer: CallPeer, call: CallId },
    /// Accepted; media is being connected.
    Connecting { peer: CallPeer, call: CallId },
    /// Media flows.
    Active {
        peer: CallPeer,
        call: CallId,
        /// They are talking (their voice activity, as heard here).
        peer_speaking: bool,
    },
    /// The last call is over; a new one may start.
    Ended {
        peer: Option<CallPeer>,
        reason: EndReason,
    },
}

impl CallState {
    pub fn peer(&self) -> Option<&CallPeer> {
        match self {
            CallState::Idle => None,
            CallState::Outgoing { peer, .. }
            | CallState::Incoming { peer, .. }
            | CallState::Connecting { peer, .. }
            | CallState::Active { peer, .. } => Some(peer),
            CallState::Ended { peer, .. } => peer.as_ref(),
        }
    }

    pub fn call(&self) -> Option<CallId> {
        match self {
            CallState::Outgoing { call, .. } => *call,
            CallState::Incoming { call, .. }
            | CallState::Connecting { call, .. }
            | CallState::Active { call, .. } => Some(*call),
            CallState::Idle | CallState::Ended { .. } => None,
        }
    }

    /// A short name for logs and the CLI's JSON (`idle`, `outgoing`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            CallState::Idle => "idle",
            CallState::Outgoing { .. } => "outgoing",
            CallState::Incoming { .. } => "incoming",
            CallState::Connecting { .. } => "connecting",
            CallState::Active { .. } => "active",
            CallState::Ended { .. } => "ended",
        }
    }
}

/// Why a call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// I withdrew my call before it was answered.
    Cancelled,
    /// I declined their call.
    Declined,
    /// I hung up.
    HungUp,
    /// They declined my call.
    TheyDeclined,
    /// They gave up calling before I answered.
    TheyCancelled,
    TheyHungUp,
    /// Their connection to the relay dropped.
    TheyDisconnected,
    /// Nobody answered my call in time (the relay's ring timeout).
    NoAnswer,
    /// I did not answer their call in time.
    Missed,
    /// My connection to the relay dropped (the relay ends a disconnected user's calls).
    RelayLost,
    /// The relay refused a step, or media could not start: a sentence for the user.
    Failed(String),
}

impl EndReason {
    /// What to tell the user, `name` being the other side's; `None` when there is nothing to
    /// explain (I declined).
    pub fn sentence(&self, name: &str) -> Option<String> {
        Some(match self {
            EndReason::Cancelled => "Call cancelled.".into(),
            EndReason::Declined => return None,
            EndReason::HungUp => "You hung up.".into(),
            EndReason::TheyDeclined => format!("{name} declined the call."),
            EndReason::TheyCancelled | EndReason::Missed => format!("Missed call from {name}."),
            EndReason::TheyHungUp => format!("{name} hung up."),
            EndReason::TheyDisconnected => format!("{name} disconnected."),
            EndReason::NoAnswer => format!("No answer from {name}."),
            EndReason::RelayLost => "Call ended: the connection to the relay was lost.".into(),
            EndReason::Failed(why) => why.clone(),
        })
    }

    /// A stable snake_case code (the CLI's JSON).
    pub fn code(&self) -> &'static str {
        match self {
            EndReason::Cancelled => "cancelled",
            EndReason::Declined => "declined",
            EndReason::HungUp => "hung_up",
            EndReason::TheyDeclined => "they_declined",
            EndReason::TheyCancelled => "they_cancelled",
            EndReason::TheyHungUp => "they_hung_up",
            EndReason::TheyDisconnected => "they_disconnected",
            EndReason::NoAnswer => "no_answer",
            EndReason::Missed => "missed",
            EndReason::RelayLost => "relay_lost",
            EndReason::Failed(_) => "failed",
        }
    }

    /// Whether the call ended as calls normally do (someone hung up after talking).
    pub fn is_normal_hang_up(&self) -> bool {
        matches!(self, EndReason::HungUp | EndReason::TheyHungUp)
    }
}

/// Why a call action was refused. Messages are sentences a user can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("You are already in a call. Hang up first.")]
    Busy,
    #[error("There is no incoming call to accept.")]
    NothingToAccept,
    #[error("There is no incoming call to decline.")]
    NothingToDecline,
    #[error("There is no outgoing call to cancel.")]
    NothingToCancel,
    #[error("A ringing call is declined, not hung up.")]
    NothingToHangUp,
    #[error("You can only call friends: send them a friend request first.")]
    NotFriend,
    #[error("{name} is offline.")]
    Offline { name: String },
    #[error("{name} is offline or the call is over.")]
    Unreachable { name: String },
    #[error("There is already a call with {name}.")]
    AlreadyCalling { name: String },
    #[error("Too many calls at once.")]
    TooManyCalls,
    /// The media session could not start (devices, WebRTC).
    #[error("Call failed: {0}")]
    Media(String),
    /// Any other relay failure (not connected, timed out...).
    #[error("{0}")]
    Relay(ClientError),
    #[error("the call service has stopped (the relay client was shut down)")]
    Stopped,
}

impl CallError {
    /// A relay refusal of a call request, in words (`name`: the other side's).
    pub fn from_client(e: ClientError, name: &str) -> Self {
        use hum_proto::signal::ErrorCode;
        match e.code() {
            Some(ErrorCode::NotFriends) => CallError::NotFriend,
            Some(ErrorCode::NotFound) => CallError::Unreachable { name: name.into() },
            Some(ErrorCode::InvalidState) => CallError::AlreadyCalling { name: name.into() },
            Some(ErrorCode::LimitReached) => CallError::TooManyCalls,
            _ => CallError::Relay(e),
        }
    }
}

/// The devices and settings of one call's media session (audio; video comes from
/// [`MediaProvider::open_video`], so providers written before video need no change).
pub struct MediaIo {
    pub config: VoiceConfig,
    pub audio: AudioIo,
}

impl fmt::Debug for MediaIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaIo")
            .field("audio", &self.audio)
            .finish()
    }
}
