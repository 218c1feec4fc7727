//! Hum's livestream mesh: the brain, without clocks or sockets.
//!
//! One streamer, many viewers, a server whose egress should plateau. The root seed (the server)
//! publishes each chunk once per layer, signed; viewers fetch chunks from 3-6 upstream peers and relay
//! them to others under their upload budget; the relay acts as tracker and introduces peers.
//!
//! Everything here is sans-IO in the shape of str0m: state machines take `handle_input(now, from,
//! msg)` and `handle_timeout(now)`, and the caller drains `poll_output()` until it yields
//! [`Output::Timeout`] ("mutate, then drain until Timeout"). Time is a [`Time`] passed in; nothing
//! reads a clock. The same code runs in the app (over WebRTC data channels) and in `hum sim` (over
//! `hum-netsim`).
//!
//! - [`chunker`]: encoded frames in, BLAKE3-named chunks of 100-500 ms out, per layer, with start points.
//! - [`fragment`]: mesh messages split to fit one data-channel message each, and reassembled (bounded).
//! - [`manifest`]: the root seed signs a [`hum_proto::mesh::ChunkRecord`] per chunk (Ed25519); every
//!   chunk is checked against it before use.
//! - [`havemap`]: which chunks a peer holds, over a sliding window; compact announcements.
//! - [`picker`]: what to fetch next (sequential near the deadline, rarest-first for older, drop late).
//! - [`scheduler`]: who to ask and when (weighted upstreams, timeouts, re-requests, end-game, root fallback).
//! - [`slice`]: BLAKE3 verified streaming below the chunk (16 KiB slices checked against the chunk hash).
//! - [`serve`]: a token-bucket upload budget and a queue that favours low-buffer-health peers.
//! - [`player`]: the playout clock, buffer health, stalls and skips (continuity).
//! - [`viewer`]: a viewer peer, composing the above.
//! - [`root`]: the root seed, whose egress is a global cap.
//! - [`tracker`]: the relay's peer introduction (low RTT, spare upload, shallow first).
//! - [`host`]: root seed + tracker keyed by account, as the relay hosts a live stream.
//! - [`layer`]: which layer to watch and which to relay.

pub mod chunker;
pub mod fragment;
pub mod havemap;
pub mod host;
pub mod layer;
pub mod manifest;
pub mod picker;
pub mod player;
pub mod root;
pub mod scheduler;
pub mod serve;
pub mod slice;
pub mod tracker;
pub mod viewer;

pub use hum_proto::mesh::{AbsentReason, ChunkRecord, Layer, MeshMsg};

/// A verified chunk as held for relaying: the root's signed record (shared) and the payload.
pub type StoredChunk = (std::sync::Arc<ChunkRecord>, std::sync::Arc<[u8]>);

/// A peer in the mesh (the relay's session id). Trackers index by it, so ids should be dense.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub u32);

/// The mesh's clock (microseconds since the caller's origin), shared with hum-netsim.
pub use hum_proto::Time;

/// What a state machine wants done. Drain with `poll_output` until a `Timeout`.
#[derive(Debug)]
pub enum Output {
    /// Send `msg` to `to`.
    Send { to: PeerId, msg: MeshMsg },
    /// Something the caller may want to know (playback, penalties, tracker requests).
    Event(MeshEvent),
    /// Nothing more to do until this time (or the next input). `Time::MAX` means "no timer".
    Timeout(Time),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeshEvent {
    /// Playback started at chunk `seq` at time `at`.
    Started { seq: u64, at: Time },
    /// Chunk `seq` played at `at`; `on_time` is false if playback stalled for it. `hops` is how many
    /// links it crossed from the root seed. It plays for `play_us`: its duration, or less while
    /// the player catches up with the live edge (`player::CATCH_UP_RATE`).
    Played {
        seq: u64,
        at: Time,
        on_time: bool,
        hops: u8,
        play_us: u64,
    },
    /// Chunk `seq` was skipped at `at`: it never arrived in time (deadline dropping), or, with
    /// `jump`, playback had fallen so far behind the live edge that it jumped over it.
    Skipped { seq: u64, at: Time, jump: bool },
    /// A chunk from `peer` failed verification; it was dropped and `peer` penalised.
    Penalised { peer: PeerId },
    /// `peer` failed verification too often: it is banned and no longer an upstream.
    Banned { peer: PeerId },
    /// The viewer has fewer upstreams than it wants: ask the tracker for `count` more.
    NeedUpstreams { count: u8 },
    /// A request went to the root seed because the mesh could not meet a deadline.
    Fallback { seq: u64 },
}
