//! The session layer: rooms, participants, publications, subscriptions, permissions and the
//! events the relay announces. It owns the packet layer's per-subscription forwarders and the
//! room's speaker detector, and decides which layer each subscriber gets; it knows nothing of
//! SDP, ICE or sockets. Time is an input.
//!
//! Invariants (checked in tests): a participant is in at most one room; every publication's
//! owner is a participant of its room; every other participant of that room holds exactly one
//! subscription to it; a subscription never forwards to the publication's owner.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use hum_proto::signal::Permissions;
use hum_proto::units::Bitrate;
use hum_proto::{ChannelId, UserId};
use thiserror::Error;

use crate::packet::audio_level::AudioLevel;
use crate::packet::forwarder::{Forwarder, InPacket};
use crate::packet::layer::{Layer, Quality, choose_layer};
use crate::packet::pli::PliLimiter;
use crate::packet::rewriter::Rewritten;
use crate::packet::speaker::{DominantSpeaker, SpeakerConfig};

/// A room is a voice channel.
pub type RoomId = ChannelId;
/// A participant is a user (one connection per user per room).
pub type ParticipantId = UserId;

/// A publication, unique across the SFU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrackId(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrackKind {
    Audio,
    Video,
}

impl TrackKind {
    pub fn clock_rate(self) -> u32 {
        match self {
            TrackKind::Audio => 48_000,
            TrackKind::Video => 90_000,
        }
    }
}

/// What the relay lets a participant do in a room (filled in from its channel permissions).
pub trait PermissionsHook: Send {
    fn permissions(&self, room: RoomId, who: ParticipantId) -> Permissions;
}

impl<F: Fn(RoomId, ParticipantId) -> Permissions + Send> PermissionsHook for F {
    fn permissions(&self, room: RoomId, who: ParticipantId) -> Permissions {
        self(room, who)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SessionError {
    #[error("already in room {0}")]
    AlreadyInRoom(RoomId),
    #[error("not in a room")]
    NotInRoom,
    #[error("not permitted to publish {0:?} in this room")]
    NotPermitted(TrackKind),
    #[error("no such track")]
    NoSuchTrack,
    #[error("too many participants in the room (limit {0})")]
    RoomFull(usize),
}

/// What the session layer announces (the relay turns these into signalling messages; the
/// runtime acts on keyframe requests and layer pauses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    ParticipantJoined {
        room: RoomId,
        who: ParticipantId,
    },
    ParticipantLeft {
        room: RoomId,
        who: ParticipantId,
    },
    TrackPublished {
        room: RoomId,
        track: TrackId,
        owner: ParticipantId,
        kind: TrackKind,
    },
    TrackUnpublished {
        room: RoomId,
        track: TrackId,
        owner: ParticipantId,
    },
    SpeakerChanged {
        room: RoomId,
        who: ParticipantId,
    },
    /// Ask the publisher for a keyframe of this layer (already rate-limited).
    KeyframeRequest {
        track: TrackId,
        layer: Layer,
    },
    /// Whether any subscriber wants this layer: the publisher stops encoding unwanted ones
    /// and resumes (with a keyframe) when one is wanted again. A publication starts with
    /// every announced layer counted as wanted (the publisher starts encoding them all), so
    /// the first word about a layer nobody takes is `wanted: false`, [`UNWANT_GRACE`] after
    /// nobody takes it; a layer someone takes is wanted again at the next tick.
    LayerWanted {
        track: TrackId,
        layer: Layer,
        wanted: bool,
    },
    /// The rate `who`'s bandwidth estimator should probe towards: while its estimate holds a
    /// video subscription below the layer it asks for, what all its subscriptions would take
    /// at the quality each asks for; [`Bitrate::ZERO`] once none is held (stop probing). A
    /// subscriber held on a lower layer sends less than its estimate, and a congestion
    /// controller does not raise an estimate the sender does not use: without a target it
    /// would stay below for good. Only while held, so a subscriber that has what it asks for
    /// is never disturbed by probe padding. Sent when that starts, stops, or moves by more
    /// than [`WANTED_STEP`] of itself.
    BandwidthWanted {
        who: ParticipantId,
        bitrate: Bitrate,
    },
    /// `who`'s copy of `owner`'s video `track` is paused because it does not fit in `who`'s
    /// estimate (`paused: true`), or no longer (`false`: resumed, or unpublished while paused,
    /// so a front end forgets it). Tell the subscriber, so its tile says why it stopped
    /// instead of freezing. See [`Subscription::paused_for_bandwidth`].
    VideoPaused {
        who: ParticipantId,
        track: TrackId,
        owner: ParticipantId,
        paused: bool,
    },
}

/// The relative change of a held subscriber's wanted bandwidth worth a new
/// [`SessionEvent::BandwidthWanted`].
pub const WANTED_STEP: f64 = 0.1;

/// How long a video's lowest layer must keep not fitting in what a subscriber's estimate
/// leaves before it is paused for that subscriber: a dip of the estimate (or its first
/// guess, before probing has raised it) does not pause anything. Checked when the session
/// allocates (each estimate, each rate window of about a second).
pub const PAUSE_AFTER: Duration = Duration::from_secs(3);

/// A video paused for bandwidth resumes once what remains has carried its lowest layer plus
/// [`RESUME_HEADROOM`] of it for this long: a probe's brief overshoot of the estimate does
/// not resume it only to pause it again (each resume costs a keyframe).
pub const RESUME_AFTER: Duration = Duration::from_secs(3);

/// How long the estimate must keep room for a higher layer before a subscription moves up to
/// it for the estimate's sake (the quality asked unchanged): a probe's brief overshoot would
/// otherwise lift a subscriber on a thin link to a layer its link does not carry, for a second,
/// and each switch costs a keyframe. A new ask (a new speaker in the spotlight) moves at once.
pub const UP_AFTER: Duration = Duration::from_secs(3);

/// The margin above a paused video's lowest layer that what remains must have for it to
/// resume: without it a thumbnail would flap at the edge.
pub const RESUME_HEADROOM: f64 = 0.25;

#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    pub max_participants: usize,
    /// The budget a subscriber without a bandwidth estimate gets.
    pub default_bandwidth: Bitrate,
    /// What one audio subscription is assumed to cost when splitting a budget.
    pub audio_cost: Bitrate,
    /// One keyframe request per publication layer per interval.
    pub pli_interval: Duration,
    /// Layer bitrates are measured over this window.
    pub rate_window: Duration,
    pub speaker: SpeakerConfig,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_participants: 5_000,
            default_bandwidth: Bitrate::from_mbps(2),
            audio_cost: Bitrate::from_kbps(50),
            pli_interval: Duration::from_millis(500),
            rate_window: Duration::from_secs(1),
            speaker: SpeakerConfig::default(),
        }
    }
}

/// A subscriber's copy of one publication.
#[derive(Debug)]
pub struct Subscription {
    pub subscriber: ParticipantId,
    /// What the subscriber asked for (`sfu_quality`); `None`: automatic (see
    /// [`Session::effective_quality`]).
    pub asked: Option<Quality>,
    /// What it gets aimed at now (asked, or automatic), before the bandwidth cap.
    pub quality: Quality,
    /// The layer it would get if every announced layer arrived: what keeps a layer wanted
    /// at the publisher. Differs from the forwarder's target when that layer is paused
    /// there (a paused layer is not live, so the target falls back to a live one until the
    /// publisher resumes it).
    pub ideal: Option<Layer>,
    /// While forwarded: since when its lowest layer has not fit in what the subscriber's
    /// estimate leaves after the subscriptions before it (audio first, then video in priority
    /// order). While paused for bandwidth: since when it has fit again with
    /// [`RESUME_HEADROOM`]. `None` while neither.
    pub flip_since: Option<Instant>,
    /// Since when the estimate has had room for a higher layer than the one aimed at, at the
    /// same asked quality (see [`UP_AFTER`]).
    pub up_since: Option<Instant>,
    /// At the last allocation the estimate held it below the best live layer it asks for.
    pub budget_held: bool,
    /// Paused because it does not fit (for [`PAUSE_AFTER`]; until it fits again for
    /// [`RESUME_AFTER`]): nothing is forwarded,
    /// the subscriber is told ([`SessionEvent::VideoPaused`]) and its estimator probes towards
    /// it. The first video in priority order (the speaker) is never paused for bandwidth: a
    /// small picture of the speaker beats none.
    pub paused_for_bandwidth: bool,
    pub forwarder: Forwarder,
}

/// A layer with no packet for this long is not live.
const STALE: Duration = Duration::from_secs(2);

/// A layer's rate before it is measured.
fn nominal_rate(l: Layer) -> Bitrate {
    match l.0 {
        0 => Bitrate::from_kbps(150),
        1 => Bitrate::from_kbps(500),
        _ => Bitrate::from_kbps(1_500),
    }
}

/// A layer nobody takes is announced unwanted only after this long, so a subscriber flipping
/// between qualities (the automatic spotlight following the speaker) does not pause and
/// resume the publisher's encoder, each resume costing a keyframe.
pub const UNWANT_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct LayerRate {
    bytes: u64,
    rate: Option<Bitrate>,
    last_packet: Instant,
}

#[derive(Debug)]
pub struct Publication {
    pub id: TrackId,
    pub room: RoomId,
    pub owner: ParticipantId,
    pub kind: TrackKind,
    /// Simulcast layers announced (empty: one layer).
    pub layers: Vec<Layer>,
    subscribers: Vec<Subscription>,
    rates: BTreeMap<Layer, LayerRate>,
    rate_window_start: Option<Instant>,
    pli: PliLimiter,
    /// The layers last announced wanted (at first: all, as the publisher starts).
    wanted: BTreeSet<Layer>,
    /// Wanted layers nobody takes now, since when (announced unwanted after [`UNWANT_GRACE`]).
    unwanted_since: BTreeMap<Layer, Instant>,
}

impl Publication {
    pub fn subscriptions(&self) -> &[Subscription] {
        &self.subscribers
    }

    /// Live layers with their measured (or, before a measurement, nominal) bitrates.
    fn live_layers(&self, now: Instant) -> Vec<(Layer, Bitrate)> {
        let nominal = nominal_rate;
        self.rates
            .iter()
            .filter(|(_, r)| now.saturating_duration_since(r.last_packet) < STALE)
            .map(|(l, r)| (*l, r.rate.unwrap_or_else(|| nominal(*l))))
            .collect()
    }

    /// Every announced layer, live or not, with its last measured (or nominal) bitrate: what
    /// a subscriber would choose from if the publisher ran them all.
    fn announced_layers(&self) -> Vec<(Layer, Bitrate)> {
        self.layers
            .iter()
            .map(|l| {
                let rate = self.rates.get(l).and_then(|r| r.rate);
                (*l, rate.unwrap_or_else(|| nominal_rate(*l)))
            })
            .collect()
    }

    fn new_forwarder(&self, seed: u64) -> Forwarder {
        // The first outgoing sequence number: spread, below 2^15 (no SRTP rollover to signal).
        let initial = (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 49) as u16;
        if self.layers.len() > 1 {
            Forwarder::simulcast(self.kind.clock_rate(), initial)
        } else if self.kind == TrackKind::Video {
            Forwarder::single_video(self.kind.clock_rate(), initial)
        } else {
            Forwarder::single(self.kind.clock_rate(), initial)
        }
    }
}

#[derive(Debug)]
pub struct Participant {
    pub id: ParticipantId,
    pub room: RoomId,
    pub bandwidth: Option<Bitrate>,
    /// The last [`SessionEvent::BandwidthWanted`] for it (ZERO: not probing).
    pub wanted: Bitrate,
    pub publications: BTreeSet<TrackId>,
}

#[derive(Debug)]
pub struct Room {
    pub id: RoomId,
    pub participants: BTreeMap<ParticipantId, Participant>,
    pub publications: BTreeSet<TrackId>,
    speaker: DominantSpeaker<ParticipantId>,
}

impl Room {
    pub fn dominant_speaker(&self) -> Option<ParticipantId> {
        self.speaker.dominant()
    }
}

/// All rooms of one SFU node.
pub struct Session {
    cfg: SessionConfig,
    rooms: BTreeMap<RoomId, Room>,
    where_is: BTreeMap<ParticipantId, RoomId>,
    tracks: BTreeMap<TrackId, Publication>,
    permissions: Box<dyn PermissionsHook>,
    events: VecDeque<SessionEvent>,
    next_track: u64,
    forwarder_seed: u64,
    /// (subscriber, publisher) -> what the subscriber asked for the publisher's video, kept
    /// for cameras published later.
    asks: BTreeMap<(ParticipantId, ParticipantId), Quality>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("rooms", &self.rooms.len())
            .field("tracks", &self.tracks.len())
            .finish()
    }
}

impl Session {
    pub fn new(cfg: SessionConfig, permissions: impl PermissionsHook + 'static) -> Self {
        Session {
            cfg,
            rooms: BTreeMap::new(),
            where_is: BTreeMap::new(),
            tracks: BTreeMap::new(),
            permissions: Box::new(permissions),
            events: VecDeque::new(),
            next_track: 1,
            forwarder_seed: 1,
            asks: BTreeMap::new(),
        }
    }

    pub fn room(&self, id: RoomId) -> Option<&Room> {
        self.rooms.get(&id)
    }

    pub fn publication(&self, id: TrackId) -> Option<&Publication> {
        self.tracks.get(&id)
    }

    pub fn room_of(&self, who: ParticipantId) -> Option<RoomId> {
        self.where_is.get(&who).copied()
    }

    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    pub fn join(
        &mut self,
        room: RoomId,
        who: ParticipantId,
        _now: Instant,
    ) -> Result<(), SessionError> {
        if let Some(r) = self.where_is.get(&who) {
            return Err(SessionError::AlreadyInRoom(*r));
        }
        let cfg = self.cfg;
        let r = self.rooms.entry(room).or_insert_with(|| Room {
            id: room,
            participants: BTreeMap::new(),
            publications: BTreeSet::new(),
            speaker: DominantSpeaker::new(cfg.speaker),
        });
        if r.participants.len() >= cfg.max_participants {
            return Err(SessionError::RoomFull(cfg.max_participants));
        }
        r.participants.insert(
            who,
            Participant {
                id: who,
                room,
                bandwidth: None,
                wanted: Bitrate::ZERO,
                publications: BTreeSet::new(),
            },
        );
        self.where_is.insert(who, room);
        let existing: Vec<TrackId> = r.publications.iter().copied().collect();
        for t in existing {
            self.subscribe(t, who);
        }
        self.events
            .push_back(SessionEvent::ParticipantJoined { room, who });
        Ok(())
    }

    pub fn leave(&mut self, who: ParticipantId) -> Result<(), SessionError> {
        let room = self.where_is.remove(&who).ok_or(SessionError::NotInRoom)?;
        self.asks.retain(|(s, o), _| *s != who && *o != who);
        let Some(r) = self.rooms.get_mut(&room) else {
            return Ok(());
        };
        let owned = r
            .participants
            .remove(&who)
            .map(|p| p.publications)
            .unwrap_or_default();
        r.speaker.remove(who);
        let pubs: Vec<TrackId> = r.publications.iter().copied().collect();
        for t in owned {
            self.unpublish(t)?;
        }
        for t in pubs {
            if let Some(p) = self.tracks.get_mut(&t) {
                p.subscribers.retain(|s| s.subscriber != who);
            }
        }
        self.events
            .push_back(SessionEvent::ParticipantLeft { room, who });
        if self
            .rooms
            .get(&room)
            .is_some_and(|r| r.participants.is_empty())
        {
            self.rooms.remove(&room);
        }
        Ok(())
    }

    /// Publishes a track; every other participant of the room subscribes to it.
    pub fn publish(
        &mut self,
        who: ParticipantId,
        kind: TrackKind,
        layers: Vec<Layer>,
        now: Instant,
    ) -> Result<TrackId, SessionError> {
        let room = self.room_of(who).ok_or(SessionError::NotInRoom)?;
        let perm = self.permissions.permissions(room, who);
        let allowed = match kind {
            TrackKind::Audio => perm.speak,
            TrackKind::Video => perm.video,
        };
        if !allowed {
            return Err(SessionError::NotPermitted(kind));
        }
        let id = TrackId(self.next_track);
        self.next_track += 1;
        // The publisher starts with every layer running.
        let wanted = layers.iter().copied().collect();
        self.tracks.insert(
            id,
            Publication {
                id,
                room,
                owner: who,
                kind,
                layers,
                subscribers: Vec::new(),
                rates: BTreeMap::new(),
                rate_window_start: Some(now),
                pli: PliLimiter::new(self.cfg.pli_interval),
                wanted,
                unwanted_since: BTreeMap::new(),
            },
        );
        let others: Vec<ParticipantId> = match self.rooms.get_mut(&room) {
            Some(r) => {
                r.publications.insert(id);
                if let Some(p) = r.participants.get_mut(&who) {
                    p.publications.insert(id);
                }
                r.participants
                    .keys()
                    .copied()
                    .filter(|p| *p != who)
                    .collect()
            }
            None => vec![],
        };
        for o in others {
            self.subscribe(id, o);
        }
        self.events.push_back(SessionEvent::TrackPublished {
            room,
            track: id,
            owner: who,
            kind,
        });
        Ok(id)
    }

    pub fn unpublish(&mut self, track: TrackId) -> Result<(), SessionError> {
        let p = self
            .tracks
            .remove(&track)
            .ok_or(SessionError::NoSuchTrack)?;
        if let Some(r) = self.rooms.get_mut(&p.room) {
            r.publications.remove(&track);
            if let Some(o) = r.participants.get_mut(&p.owner) {
                o.publications.remove(&track);
            }
        }
        // Whoever had it paused forgets it (a camera turned on again starts unpaused).
        for s in p.subscribers.iter().filter(|s| s.paused_for_bandwidth) {
            self.events.push_back(SessionEvent::VideoPaused {
                who: s.subscriber,
                track,
                owner: p.owner,
                paused: false,
            });
        }
        self.events.push_back(SessionEvent::TrackUnpublished {
            room: p.room,
            track,
            owner: p.owner,
        });
        Ok(())
    }

    /// Re-reads `who`'s permissions (the relay calls this after an admin changed them) and
    /// withdraws each of its publications they no longer allow (`speak` for audio, `video` for
    /// a camera): subscribers get nothing more of it and see it unpublished. Returns the
    /// withdrawn tracks.
    pub fn enforce_permissions(
        &mut self,
        who: ParticipantId,
    ) -> Result<Vec<TrackId>, SessionError> {
        let room = self.room_of(who).ok_or(SessionError::NotInRoom)?;
        let perm = self.permissions.permissions(room, who);
        let withdraw: Vec<TrackId> = self
            .tracks
            .values()
            .filter(|p| p.owner == who)
            .filter(|p| match p.kind {
                TrackKind::Audio => !perm.speak,
                TrackKind::Video => !perm.video,
            })
            .map(|p| p.id)
            .collect();
        for t in &withdraw {
            self.unpublish(*t)?;
        }
        Ok(withdraw)
    }

    fn subscribe(&mut self, track: TrackId, who: ParticipantId) {
        self.forwarder_seed += 1;
        let seed = self.forwarder_seed;
        if let Some(p) = self.tracks.get_mut(&track) {
            let forwarder = p.new_forwarder(seed);
            let asked = match p.kind {
                TrackKind::Video => self.asks.get(&(who, p.owner)).copied(),
                TrackKind::Audio => None,
            };
            p.subscribers.push(Subscription {
                subscriber: who,
                asked,
                quality: Quality::default(),
                ideal: None,
                flip_since: None,
                up_since: None,
                budget_held: false,
                paused_for_bandwidth: false,
                forwarder,
            });
        }
    }

    /// What a subscriber asked to see of a track (speaker view, thumbnail, hidden).
    pub fn set_quality(
        &mut self,
        who: ParticipantId,
        track: TrackId,
        q: Quality,
        now: Instant,
    ) -> Result<(), SessionError> {
        self.ask(who, track, Some(q))?;
        self.allocate(who, now);
        Ok(())
    }

    fn ask(
        &mut self,
        who: ParticipantId,
        track: TrackId,
        q: Option<Quality>,
    ) -> Result<(), SessionError> {
        let p = self
            .tracks
            .get_mut(&track)
            .ok_or(SessionError::NoSuchTrack)?;
        let s = p
            .subscribers
            .iter_mut()
            .find(|s| s.subscriber == who)
            .ok_or(SessionError::NoSuchTrack)?;
        s.asked = q;
        Ok(())
    }

    /// What `who` asks to see of every video `owner` publishes (the signalled form: clients
    /// know members, not track ids); `None` goes back to automatic. Returns how many tracks
    /// it applied to (0: `owner` publishes no video, which is not an error: a camera may
    /// come later and starts automatic).
    pub fn set_quality_of(
        &mut self,
        who: ParticipantId,
        owner: ParticipantId,
        q: Option<Quality>,
        now: Instant,
    ) -> Result<usize, SessionError> {
        let room = self.room_of(who).ok_or(SessionError::NotInRoom)?;
        match q {
            Some(q) => self.asks.insert((who, owner), q),
            None => self.asks.remove(&(who, owner)),
        };
        let tracks: Vec<TrackId> = self
            .rooms
            .get(&room)
            .and_then(|r| r.participants.get(&owner))
            .map(|p| p.publications.iter().copied().collect())
            .unwrap_or_default();
        let mut n = 0;
        for t in tracks {
            if self
                .tracks
                .get(&t)
                .is_some_and(|p| p.kind == TrackKind::Video)
                && self.ask(who, t, q).is_ok()
            {
                n += 1;
            }
        }
        self.allocate(who, now);
        Ok(n)
    }

    /// The quality a subscription aims at: what the subscriber asked, else automatic: the
    /// room's dominant speaker high and everyone else low (thumbnails); before anyone has
    /// spoken, everyone high (the bandwidth cap still applies).
    pub fn effective_quality(
        asked: Option<Quality>,
        owner: ParticipantId,
        dominant: Option<ParticipantId>,
    ) -> Quality {
        match (asked, dominant) {
            (Some(q), _) => q,
            (None, None) => Quality::High,
            (None, Some(d)) if d == owner => Quality::High,
            (None, Some(_)) => Quality::Low,
        }
    }

    /// A subscriber's downlink estimate (from the runtime's bandwidth estimator).
    pub fn set_bandwidth(
        &mut self,
        who: ParticipantId,
        bw: Bitrate,
        now: Instant,
    ) -> Result<(), SessionError> {
        let room = self.room_of(who).ok_or(SessionError::NotInRoom)?;
        if let Some(p) = self
            .rooms
            .get_mut(&room)
            .and_then(|r| r.participants.get_mut(&who))
        {
            p.bandwidth = Some(bw);
        }
        self.allocate(who, now);
        Ok(())
    }

    /// Splits a subscriber's budget over its video subscriptions: audio first, then
    /// spotlighted (High) video, then thumbnails; each gets the best layer that still fits.
    fn allocate(&mut self, who: ParticipantId, now: Instant) {
        let Some(room) = self.room_of(who) else {
            return;
        };
        let Some(r) = self.rooms.get(&room) else {
            return;
        };
        let bw = r
            .participants
            .get(&who)
            .and_then(|p| p.bandwidth)
            .unwrap_or(self.cfg.default_bandwidth);
        let subs: Vec<TrackId> = r
            .publications
            .iter()
            .copied()
            .filter(|t| self.tracks.get(t).is_some_and(|p| p.owner != who))
            .collect();
        let audio = subs
            .iter()
            .filter(|t| {
                self.tracks
                    .get(t)
                    .is_some_and(|p| p.kind == TrackKind::Audio)
            })
            .count() as u64;
        let mut remaining = bw.saturating_sub(Bitrate::from_bps(self.cfg.audio_cost.bps() * audio));
        let dominant = r.dominant_speaker();
        let mut video: Vec<(Quality, TrackId)> = subs
            .iter()
            .filter_map(|t| {
                let p = self.tracks.get(t)?;
                let s = p.subscribers.iter().find(|s| s.subscriber == who)?;
                let q = Self::effective_quality(s.asked, p.owner, dominant);
                (p.kind == TrackKind::Video).then_some((q, *t))
            })
            .collect();
        video.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        // What the subscriptions would take at the quality each asks for, and whether the
        // estimate holds one below that.
        let mut wanted = Bitrate::from_bps(self.cfg.audio_cost.bps() * audio);
        let mut held = false;
        // Whether a video already has a layer: every later one must fit or be paused.
        let mut any_shown = false;
        for (q, t) in video {
            let Some(p) = self.tracks.get_mut(&t) else {
                continue;
            };
            let live = p.live_layers(now);
            let announced = p.announced_layers();
            // What the last allocation left on this subscription.
            let (was_paused, flip_since, was_target, was_quality, up_since, was_held) = p
                .subscribers
                .iter()
                .find(|s| s.subscriber == who)
                .map_or((false, None, None, q, None, false), |s| {
                    (
                        s.paused_for_bandwidth,
                        s.flip_since,
                        s.forwarder.target(),
                        s.quality,
                        s.up_since,
                        s.budget_held,
                    )
                });
            // The lowest layer's cost: measured while live, else its last (or nominal) rate.
            let lowest =
                |ls: &[(Layer, Bitrate)]| ls.iter().min_by_key(|(l, _)| *l).map(|(_, r)| *r);
            let lowest_cost = lowest(&live).or_else(|| lowest(&announced));
            let need = lowest_cost.map(|c| {
                if was_paused {
                    Bitrate::from_bps(c.bps() + (c.bps() as f64 * RESUME_HEADROOM) as u64)
                } else {
                    c
                }
            });
            // The first shown and one the subscriber hides are never paused for bandwidth.
            let exempt = !any_shown || q == Quality::Paused;
            let fits = exempt || need.is_none_or(|n| n <= remaining);
            // Shown but not fitting, or paused but fitting: how long has that held?
            let flip_since = (!exempt && fits == was_paused).then(|| flip_since.unwrap_or(now));
            let wait = if was_paused {
                RESUME_AFTER
            } else {
                PAUSE_AFTER
            };
            let flip = flip_since.is_some_and(|t| now.saturating_duration_since(t) >= wait);
            let paused = !exempt && (was_paused != flip);
            let flip_since = if flip { None } else { flip_since };
            let (mut target, ideal) = if paused {
                (None, None)
            } else {
                (
                    choose_layer(&live, q, remaining),
                    choose_layer(&announced, q, remaining),
                )
            };
            // Up for the estimate's sake (same ask, the layer aimed at still live): only once
            // the room has lasted UP_AFTER.
            let budget_up = q == was_quality
                && was_held
                && was_target.is_some_and(|w| live.iter().any(|(l, _)| *l == w))
                && target > was_target;
            let up_since = budget_up.then(|| up_since.unwrap_or(now));
            let up_since = match up_since {
                Some(t) if now.saturating_duration_since(t) < UP_AFTER => {
                    target = was_target;
                    Some(t)
                }
                _ => None,
            };
            let unlimited = choose_layer(&announced, q, Bitrate::from_bps(u64::MAX));
            held |= !fits || paused || ideal != unlimited;
            wanted = wanted
                + announced
                    .iter()
                    .find(|(l, _)| Some(*l) == unlimited)
                    .map(|(_, r)| *r)
                    .unwrap_or_default();
            if let Some(l) = target {
                any_shown = true;
                let cost = live
                    .iter()
                    .find(|(x, _)| *x == l)
                    .map(|(_, r)| *r)
                    .unwrap_or_default();
                remaining = remaining.saturating_sub(cost);
            }
            if let Some(s) = p.subscribers.iter_mut().find(|s| s.subscriber == who) {
                if s.forwarder.target() != target {
                    tracing::debug!(subscriber = %who, track = t.0, ?q, ?target, budget = %bw, ?live, "layer target");
                }
                s.quality = q;
                s.ideal = ideal;
                s.flip_since = flip_since;
                s.up_since = up_since;
                s.budget_held = target.is_some()
                    && target < choose_layer(&live, q, Bitrate::from_bps(u64::MAX));
                s.forwarder.set_target(target);
                if s.paused_for_bandwidth != paused {
                    s.paused_for_bandwidth = paused;
                    tracing::debug!(subscriber = %who, track = t.0, paused, budget = %bw, "paused for bandwidth");
                    self.events.push_back(SessionEvent::VideoPaused {
                        who,
                        track: t,
                        owner: p.owner,
                        paused,
                    });
                }
            }
        }
        let probe = if held { wanted } else { Bitrate::ZERO };
        let Some(p) = self
            .rooms
            .get_mut(&room)
            .and_then(|r| r.participants.get_mut(&who))
        else {
            return;
        };
        let (was, now_bps) = (p.wanted.bps() as f64, probe.bps() as f64);
        let changed = (was == 0.0) != (now_bps == 0.0) || (now_bps - was).abs() > was * WANTED_STEP;
        if changed {
            tracing::debug!(subscriber = %who, wanted = %probe, "bandwidth wanted");
            p.wanted = probe;
            self.events.push_back(SessionEvent::BandwidthWanted {
                who,
                bitrate: probe,
            });
        }
    }

    /// One packet from a publication: calls `emit(subscriber, rewritten)` for each subscriber
    /// that gets it. `level` is the packet's RFC 6464 level (audio).
    pub fn on_packet(
        &mut self,
        track: TrackId,
        pkt: &InPacket,
        payload_len: usize,
        level: Option<AudioLevel>,
        mut emit: impl FnMut(ParticipantId, Rewritten),
    ) -> Result<(), SessionError> {
        let p = self
            .tracks
            .get_mut(&track)
            .ok_or(SessionError::NoSuchTrack)?;
        // A layer comes alive: its first packet, or the first after a pause (the publisher
        // resumed it because someone wants it).
        let fresh_layer = p.kind == TrackKind::Video
            && p.rates
                .get(&pkt.layer)
                .is_none_or(|r| pkt.arrival.saturating_duration_since(r.last_packet) >= STALE);
        let r = p.rates.entry(pkt.layer).or_insert(LayerRate {
            bytes: 0,
            rate: None,
            last_packet: pkt.arrival,
        });
        r.bytes += payload_len as u64;
        r.last_packet = pkt.arrival;
        if fresh_layer {
            // Subscribers waiting for exactly this layer (the publisher resumed it for them)
            // take it at once, so its first packet (a keyframe) is already their switch.
            let waiting: Vec<ParticipantId> = p
                .subscribers
                .iter()
                .filter(|s| s.ideal == Some(pkt.layer))
                .map(|s| s.subscriber)
                .collect();
            for s in waiting {
                self.allocate(s, pkt.arrival);
            }
        }
        let Some(p) = self.tracks.get_mut(&track) else {
            return Err(SessionError::NoSuchTrack);
        };
        for s in p.subscribers.iter_mut() {
            let switches = s.forwarder.stats.switches;
            if let Some(out) = s.forwarder.forward(pkt) {
                emit(s.subscriber, out);
            }
            if s.forwarder.stats.switches != switches {
                tracing::debug!(subscriber = %s.subscriber, track = track.0, layer = pkt.layer.0, "switched layer");
            }
        }
        let (room, owner) = (p.room, p.owner);
        if let Some(level) = level
            && let Some(r) = self.rooms.get_mut(&room)
        {
            r.speaker.on_level(owner, level, pkt.arrival);
        }
        if fresh_layer {
            // Subscribers waiting for nothing (or for a layer that is not live) may now get
            // a target; a switch onto this layer waits for its next keyframe.
            let subs: Vec<ParticipantId> = self
                .tracks
                .get(&track)
                .map(|p| p.subscribers.iter().map(|s| s.subscriber).collect())
                .unwrap_or_default();
            for s in subs {
                self.allocate(s, pkt.arrival);
            }
        }
        Ok(())
    }

    /// A subscriber lost a picture (PLI/FIR from it): ask the publisher for a keyframe of the
    /// layer it receives, through the publication's rate limit. Returns whether a request went
    /// upstream (as a [`SessionEvent::KeyframeRequest`]).
    pub fn request_keyframe(
        &mut self,
        track: TrackId,
        who: ParticipantId,
        now: Instant,
    ) -> Result<bool, SessionError> {
        let p = self
            .tracks
            .get_mut(&track)
            .ok_or(SessionError::NoSuchTrack)?;
        if p.kind != TrackKind::Video {
            return Ok(false);
        }
        let s = p
            .subscribers
            .iter()
            .find(|s| s.subscriber == who)
            .ok_or(SessionError::NoSuchTrack)?;
        let Some(layer) = s.forwarder.current().or(s.forwarder.awaiting_keyframe()) else {
            return Ok(false);
        };
        let sent = p.pli.request(layer, now);
        if sent {
            tracing::debug!(track = track.0, layer = layer.0, subscriber = %who, "keyframe request (subscriber PLI)");
            self.events
                .push_back(SessionEvent::KeyframeRequest { track, layer });
        }
        Ok(sent)
    }

    /// Keyframe requests (upstream, suppressed) over all publications.
    pub fn keyframe_request_counts(&self) -> (u64, u64) {
        self.tracks
            .values()
            .fold((0, 0), |(a, b), p| (a + p.pli.sent, b + p.pli.suppressed))
    }

    /// Periodic work: layer rates, reallocation, keyframe requests, wanted layers, speakers.
    pub fn tick(&mut self, now: Instant) {
        let window = self.cfg.rate_window;
        let mut realloc: BTreeSet<ParticipantId> = BTreeSet::new();
        for p in self.tracks.values_mut() {
            if let Some(start) = p.rate_window_start {
                let dt = now.saturating_duration_since(start);
                if dt >= window {
                    for r in p.rates.values_mut() {
                        // A layer that sent nothing (paused at the publisher) keeps its last
                        // rate: what it will cost when it resumes.
                        if r.bytes > 0 {
                            r.rate = Some(Bitrate::from_bps(
                                r.bytes * 8 * 1_000_000 / dt.as_micros().max(1) as u64,
                            ));
                        }
                        r.bytes = 0;
                    }
                    p.rate_window_start = Some(now);
                    if p.kind == TrackKind::Video {
                        realloc.extend(p.subscribers.iter().map(|s| s.subscriber));
                    }
                }
            }
        }
        for who in realloc {
            self.allocate(who, now);
        }
        for p in self.tracks.values_mut() {
            if p.kind != TrackKind::Video {
                continue;
            }
            let mut want: BTreeSet<Layer> = BTreeSet::new();
            let mut key: BTreeSet<Layer> = BTreeSet::new();
            for s in &p.subscribers {
                if s.quality != Quality::Paused {
                    want.extend(s.forwarder.current());
                    want.extend(s.ideal);
                }
                if let Some(l) = s.forwarder.awaiting_keyframe() {
                    want.insert(l);
                    key.insert(l);
                }
            }
            // A single-layer publication that sends nothing (a screen track before a share)
            // is not asked: its first packet will be a keyframe anyway.
            let idle = p.layers.len() <= 1
                && p.rates
                    .values()
                    .all(|r| now.saturating_duration_since(r.last_packet) >= STALE);
            for l in key {
                if idle {
                    continue;
                }
                if p.pli.request(l, now) {
                    tracing::debug!(track = p.id.0, layer = l.0, "keyframe request (switch)");
                    self.events.push_back(SessionEvent::KeyframeRequest {
                        track: p.id,
                        layer: l,
                    });
                }
            }
            for &l in &p.layers {
                let (now_wanted, was) = (want.contains(&l), p.wanted.contains(&l));
                if now_wanted {
                    p.unwanted_since.remove(&l);
                }
                let announce = match (now_wanted, was) {
                    (true, false) => true,
                    (false, true) => {
                        let since = *p.unwanted_since.entry(l).or_insert(now);
                        now.saturating_duration_since(since) >= UNWANT_GRACE
                    }
                    _ => false,
                };
                if announce {
                    tracing::debug!(
                        track = p.id.0,
                        layer = l.0,
                        wanted = now_wanted,
                        "layer wanted"
                    );
                    self.events.push_back(SessionEvent::LayerWanted {
                        track: p.id,
                        layer: l,
                        wanted: now_wanted,
                    });
                    if now_wanted {
                        p.wanted.insert(l);
                    } else {
                        p.wanted.remove(&l);
                        p.unwanted_since.remove(&l);
                    }
                }
            }
        }
        let mut changed: Vec<ParticipantId> = Vec::new();
        for r in self.rooms.values_mut() {
            if let Some(who) = r.speaker.tick(now) {
                self.events
                    .push_back(SessionEvent::SpeakerChanged { room: r.id, who });
                changed.extend(r.participants.keys().copied());
            }
        }
        // Automatic qualities follow the speaker.
        for who in changed {
            self.allocate(who, now);
        }
    }

    /// Checks the invariants in the module doc; returns the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (who, room) in &self.where_is {
            let in_room = self
                .rooms
                .get(room)
                .is_some_and(|r| r.participants.contains_key(who));
            if !in_room {
                return Err(format!("{who:?} indexed in {room} but not there"));
            }
        }
        for (id, p) in &self.tracks {
            let Some(r) = self.rooms.get(&p.room) else {
                return Err(format!("track {id:?} in a missing room"));
            };
            if !r.participants.contains_key(&p.owner) {
                return Err(format!("track {id:?} owner not in room"));
            }
            let mut subs: Vec<ParticipantId> = p.subscribers.iter().map(|s| s.subscriber).collect();
            subs.sort();
            let want: Vec<ParticipantId> = r
                .participants
                .keys()
                .copied()
                .filter(|k| *k != p.owner)
                .collect();
            if subs != want {
                return Err(format!(
                    "track {id:?}: subscribers {} vs others {}",
                    subs.len(),
                    want.len()
                ));
            }
        }
        Ok(())
    }
}
