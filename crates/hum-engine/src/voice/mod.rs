//! Voice: 1-on-1 calls and voice channels as a full mesh of WebRTC peers (up to 8 people).
//!
//! ```text
//!  AudioSource ─► capture thread ─► CapturePipeline (NS, VAD/PTT, mute) ─► Opus ─► broadcast
//!                                                                              │ one Opus track
//!                                                                              ▼ per peer
//!  AudioSink ◄── playout thread ◄── Mixer ◄── RemoteAudio (jitter buffer + decoder) per peer
//! ```
//!
//! - [`audio`]: the two real-time threads and the shared per-peer receive state.
//! - [`peer`]: one WebRTC connection (one Opus track each way).
//! - [`session`]: the mesh: which peers exist, who offers, join/leave, renegotiation, ICE restart.
//! - [`signalling`]: the seam to the relay: a [`Signaller`] sends SDP/ICE to a user; incoming
//!   signals are handed to [`VoiceSession::handle_signal`]. An in-memory implementation
//!   connects sessions in one process for tests.
//!
//! Everything user-visible comes out of one event stream ([`VoiceEvent`]).

pub mod assembler;
pub mod audio;
pub mod link;
pub mod peer;
pub mod session;
pub mod sfu;
pub mod sfu_video;
pub mod signalling;
pub mod video;

use std::time::Duration;

use hum_media::FrameDuration;
use hum_proto::UserId;

pub use audio::AudioSettings;
/// The audio crate, re-exported so front ends (CLI, app) need no second dependency.
pub use hum_media;
/// The input meter, the microphone monitor for the settings screen and the test sound.
pub use hum_media::monitor::{
    InputLevel, InputMonitor, play_test_sound, play_test_sound_on_device,
};
pub use session::VoiceSession;
pub use signalling::{MemorySignalHub, Signaller};
pub use video::screen::{
    ScreenShareStats, ScreenSource, ShareChoice, ShareChoices, ShareTarget, VideoKind,
    capture_unavailable, parse_profile, share_choices,
};
pub use video::{
    CameraChange, EncodedVideoFrame, RemoteVideoStats, RemoteVideoTrack, VideoIo, VideoSendStats,
    VideoSinkFactory, mesh_layer, video_bitrate_within,
};

/// A full mesh sends every participant's audio to every other one: fine for a handful of
/// people, wasteful beyond. Past this, a channel needs the SFU.
pub const MAX_MESH_PARTICIPANTS: usize = 8;

#[derive(Debug, Clone)]
pub struct VoiceConfig {
    pub frame: FrameDuration,
    pub bitrate_bps: u32,
    /// STUN servers (`stun:host:port`). Empty on loopback and LANs.
    pub stun: Vec<String>,
    /// Local UDP addresses to bind (default all interfaces, any port).
    pub bind: Vec<String>,
    /// How often per-peer statistics are emitted.
    pub stats_interval: Duration,
    /// TURN servers with credentials (from the relay's `turn_credentials`).
    pub turn: Vec<hum_proto::signal::TurnServer>,
    /// "Hide my IP": media only through TURN (ICE transport policy `relay`); see [`crate::ice`].
    pub relay_only: bool,
    /// End-to-end encryption through the SFU (docs/e2ee.md, [`crate::e2ee`]): every audio
    /// frame sent over the SFU is encrypted with it and every frame received over the SFU
    /// decrypted (what does not decrypt is dropped). `None`: off.
    pub frame_transform: Option<std::sync::Arc<dyn hum_e2ee::FrameTransform>>,
}

impl VoiceConfig {
    /// The ICE settings every connection of the session uses.
    pub fn ice(&self) -> crate::ice::IceConfig {
        crate::ice::IceConfig {
            stun: self.stun.clone(),
            turn: self.turn.clone(),
            relay_only: self.relay_only,
        }
    }

    /// Takes the TURN servers and the relay-only choice of `ice` (see
    /// [`crate::ice::IceConfig::from_relay`]); its STUN servers only when it names some.
    pub fn use_ice(&mut self, ice: crate::ice::IceConfig) {
        self.turn = ice.turn;
        self.relay_only = ice.relay_only;
        if !ice.stun.is_empty() {
            self.stun = ice.stun;
        }
    }
}

impl Default for VoiceConfig {
    fn default() -> Self {
        Self {
            frame: FrameDuration::Ms20,
            bitrate_bps: 36_000,
            stun: Vec::new(),
            bind: vec!["0.0.0.0:0".into()],
            stats_interval: Duration::from_secs(2),
            turn: Vec::new(),
            relay_only: false,
            frame_transform: None,
        }
    }
}

/// Per-peer link quality.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PeerStats {
    /// ICE round-trip time of the selected candidate pair.
    pub rtt: Option<Duration>,
    /// Fraction of frames that had to be concealed (lost or late), 0..=1.
    pub loss: f32,
    /// Interarrival jitter (RFC 3550).
    pub jitter: Duration,
    /// Current playout delay target of the jitter buffer.
    pub jitter_buffer: Duration,
    /// Audio queued in the jitter buffer right now.
    pub buffered: Duration,
    pub packets_received: u64,
}

/// What a voice session reports.
#[derive(Debug, Clone, PartialEq)]
pub enum VoiceEvent {
    /// The media path to this peer is up.
    PeerConnected(UserId),
    /// The peer left or its connection failed.
    PeerLeft {
        user: UserId,
        reason: String,
    },
    /// A remote participant (or `None`: we) started or stopped speaking.
    Speaking {
        user: Option<UserId>,
        speaking: bool,
    },
    /// Our own mute/deafen changed, or the channel's permission to speak
    /// ([`VoiceSession::set_speak_allowed`]).
    LocalState {
        muted: bool,
        deafened: bool,
        /// Muted because the channel does not let us speak: unmuting is refused and nothing is
        /// sent until the permission comes back (then we stay muted until the user unmutes).
        muted_by_channel: bool,
    },
    Stats {
        user: UserId,
        stats: PeerStats,
    },
    /// The path media to this peer takes (the selected ICE candidate pair), once connected:
    /// relayed through TURN or direct.
    Route {
        user: UserId,
        route: crate::ice::IceRoute,
    },
    /// Something went wrong that the user should see (device lost, negotiation failed…).
    Error(String),
    /// A camera went on or off: ours (`user: None`, [`VoiceSession::set_camera`]) or another
    /// member's (in a channel, from the roster's `video` flag). While a member's camera is off
    /// their frames are not passed on: a front end hides the tile instead of freezing it.
    Video {
        user: Option<UserId>,
        camera: bool,
    },
    /// The dominant speaker of the SFU room we are in, as the SFU decided it (Volfin-Cohen over
    /// the members' audio levels, with hysteresis; relay event `sfu_speaker`). Only in SFU
    /// mode: it is the spotlight of a big room. May be us.
    DominantSpeaker {
        user: UserId,
    },
    /// On the SFU: `user`'s camera (or screen share) is paused for us because our link does not
    /// carry it (relay event `sfu_paused`; the SFU resumes it once our estimate has room), or
    /// flows again. Frames stop while paused: a front end says so on the tile.
    VideoPaused {
        user: UserId,
        kind: VideoKind,
        paused: bool,
    },
    /// Our screen share started or stopped ([`VoiceSession::start_screen_share`]); `reason`
    /// says why when it ended by itself (the window closed, the source failed).
    ScreenShare {
        sharing: bool,
        reason: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum VoiceError {
    #[error(
        "this channel already has {MAX_MESH_PARTICIPANTS} participants: a full mesh cannot grow \
         further; larger channels need the relay's SFU, which this relay runs without (--sfu-bind off)"
    )]
    NeedsSfu,
    #[error("WebRTC: {0}")]
    WebRtc(String),
    #[error("audio: {0}")]
    Media(#[from] hum_media::MediaError),
    #[error("signalling: {0}")]
    Signalling(String),
    #[error("unknown peer {0}")]
    UnknownPeer(UserId),
    #[error("{0}")]
    Ice(#[from] crate::ice::IceError),
}

impl From<webrtc::error::Error> for VoiceError {
    fn from(e: webrtc::error::Error) -> Self {
        VoiceError::WebRtc(e.to_string())
    }
}

#[cfg(test)]
mod tests;
