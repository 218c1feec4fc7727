//! The runtime: one UDP socket, one str0m `Rtc` (ICE-lite, RTP mode) per participant, the
//! session layer in the middle, and a thin tokio loop that feeds them packets and time.
//!
//! The relay drives it through [`SfuServer`]: `join(room, who, offer) -> answer`; the SFU makes
//! its own offers when other participants publish (an [`SfuEvent::Offer`] the relay forwards to
//! the client, whose answer comes back through [`SfuServer::answer`]).
//!
//! Demultiplexing: a datagram goes to the participant last seen at its source address; a new
//! address is found by the ICE username of its STUN check (the SFU's ufrag, one per
//! participant, indexed), and its `Rtc` still has to accept it. Anything else from an address
//! no check came from is unrouted. Timeouts are kept in a [`Timers`] heap, so neither
//! routing nor waking up scans the participants.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hum_proto::units::Bitrate;
use str0m::bwe::BweKind;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::ice::StunMessage;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Rid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::outbox::Outbox;
use crate::packet::audio_level::AudioLevel;
use crate::packet::forwarder::InPacket;
use crate::packet::layer::{Layer, Quality};
use crate::packet::rewriter::Rewritten;
use crate::packet::vp8;
use crate::session::{
    ParticipantId, PermissionsHook, RoomId, Session, SessionConfig, SessionError, SessionEvent,
    TrackId, TrackKind,
};
use crate::timers::Timers;

/// Largest datagram read; WebRTC keeps packets under ~1,200 bytes.
const MAX_DATAGRAM: usize = 2048;
/// How often the session layer's periodic work runs.
const TICK: Duration = Duration::from_millis(50);

#[derive(Debug, Error)]
pub enum SfuError {
    #[error("the SFU has stopped")]
    Closed,
    #[error("{0}")]
    Session(#[from] SessionError),
    #[error("bad SDP: {0}")]
    Sdp(String),
    #[error("WebRTC: {0}")]
    Rtc(String),
    #[error("no SFU offer is waiting for an answer")]
    NoPendingOffer,
    #[error("an SFU offer is waiting for this participant's answer; retry after answering it")]
    Glare,
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// What the SFU tells the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SfuEvent {
    /// Send this SDP offer to the participant; its answer goes to [`SfuServer::answer`].
    Offer {
        who: ParticipantId,
        sdp: String,
    },
    /// The participant's connection ended (ICE timeout, DTLS close); it has left its room.
    Disconnected {
        who: ParticipantId,
    },
    /// The simulcast layers of `who`'s track `track` (its own track id, the `msid`) that some
    /// subscriber wants now, by RID, low to high: the publisher encodes these and pauses the
    /// others. Sent whenever the set changes (from the session's
    /// [`SessionEvent::LayerWanted`]); until the first, the publisher runs every layer.
    LayersWanted {
        who: ParticipantId,
        track: String,
        rids: Vec<String>,
    },
    /// `owner`'s video `track` (the forwarded track id `who` sees, [`forwarded_track_id`]) is
    /// paused for `who` because `who`'s link does not carry it, or resumed (from the
    /// session's [`SessionEvent::VideoPaused`]).
    VideoPaused {
        who: ParticipantId,
        owner: ParticipantId,
        track: String,
        paused: bool,
    },
    Session(SessionEvent),
}

/// Counters; bad input is counted here, never panics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Datagrams that are not STUN, DTLS, RTP or RTCP.
    pub unparsable: u64,
    /// Datagrams no participant accepts (unknown ufrag / address).
    pub unrouted: u64,
    /// Send failures (socket buffer full): dropped.
    pub send_dropped: u64,
    pub rtp_in: u64,
    pub rtp_forwarded: u64,
    /// RTP on a stream that maps to no publication.
    pub unknown_stream: u64,
    /// Video payloads whose VP8 descriptor does not parse: dropped.
    pub malformed_vp8: u64,
    /// Keyframe requests from subscribers.
    pub keyframe_requests_in: u64,
    pub rtc_errors: u64,
    pub participants: u64,
    /// Participants whose send bandwidth the SFU estimates (TWCC + GCC, and str0m's pacer):
    /// those that offered video. An audio-only participant gets neither (see [`new_rtc`]).
    pub estimating: u64,
}

enum Command {
    Join {
        room: RoomId,
        who: ParticipantId,
        offer: String,
        reply: oneshot::Sender<Result<String, SfuError>>,
    },
    Offer {
        who: ParticipantId,
        offer: String,
        reply: oneshot::Sender<Result<String, SfuError>>,
    },
    Answer {
        who: ParticipantId,
        answer: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Leave {
        who: ParticipantId,
    },
    SetQuality {
        who: ParticipantId,
        track: TrackId,
        quality: Quality,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    SetQualityOf {
        who: ParticipantId,
        owner: ParticipantId,
        quality: Option<Quality>,
        reply: oneshot::Sender<Result<usize, SfuError>>,
    },
    Metrics {
        reply: oneshot::Sender<Metrics>,
    },
    Permissions {
        who: ParticipantId,
    },
}

/// A running SFU. Dropping it stops the loop.
pub struct SfuServer {
    tx: mpsc::UnboundedSender<Command>,
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for SfuServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SfuServer")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl Drop for SfuServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SfuServer {
    /// Binds the UDP socket and starts the loop. `public_addr` is the address clients reach
    /// (the ICE candidate); `None` uses the bound address.
    pub async fn bind(
        bind: SocketAddr,
        public_addr: Option<SocketAddr>,
        cfg: SessionConfig,
        permissions: impl PermissionsHook + 'static,
    ) -> Result<(SfuServer, mpsc::UnboundedReceiver<SfuEvent>), SfuError> {
        str0m::crypto::from_feature_flags().install_process_default();
        let socket = UdpSocket::bind(bind).await?;
        let local_addr = socket.local_addr()?;
        let public = public_addr.unwrap_or(local_addr);
        let (tx, rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let rt = Runtime {
            socket,
            public,
            session: Session::new(cfg, permissions),
            clients: HashMap::new(),
            by_user: HashMap::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            timers: Timers::default(),
            next_key: 1,
            events: ev_tx,
            metrics: Metrics::default(),
            dirty: Vec::new(),
            outbox: Vec::new(),
            sends: Outbox::default(),
            track_src: HashMap::new(),
        };
        let task = tokio::spawn(rt.run(rx));
        Ok((
            SfuServer {
                tx,
                local_addr,
                task,
            },
            ev_rx,
        ))
    }

    /// The bound socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| SfuError::Closed)?;
        rx.await.map_err(|_| SfuError::Closed)
    }

    /// A participant joins `room` with its first SDP offer (its own tracks); returns the answer.
    /// Other participants' tracks follow in SFU offers ([`SfuEvent::Offer`]).
    pub async fn join(
        &self,
        room: RoomId,
        who: ParticipantId,
        offer: String,
    ) -> Result<String, SfuError> {
        self.call(|reply| Command::Join {
            room,
            who,
            offer,
            reply,
        })
        .await?
    }

    /// A participant renegotiates (publishes or stops a track); returns the answer.
    pub async fn offer(&self, who: ParticipantId, offer: String) -> Result<String, SfuError> {
        self.call(|reply| Command::Offer { who, offer, reply })
            .await?
    }

    /// The participant's answer to an [`SfuEvent::Offer`].
    pub async fn answer(&self, who: ParticipantId, answer: String) -> Result<(), SfuError> {
        self.call(|reply| Command::Answer { who, answer, reply })
            .await?
    }

    pub fn leave(&self, who: ParticipantId) {
        let _ = self.tx.send(Command::Leave { who });
    }

    /// What `who` shows of `track` (spotlight, thumbnail, hidden).
    pub async fn set_quality(
        &self,
        who: ParticipantId,
        track: TrackId,
        quality: Quality,
    ) -> Result<(), SfuError> {
        self.call(|reply| Command::SetQuality {
            who,
            track,
            quality,
            reply,
        })
        .await?
    }

    /// What `who` shows of every video `owner` publishes (`None`: automatic, the speaker high
    /// and others low); the signalled form of [`SfuServer::set_quality`]. Returns how many
    /// tracks it applied to.
    pub async fn set_quality_of(
        &self,
        who: ParticipantId,
        owner: ParticipantId,
        quality: Option<Quality>,
    ) -> Result<usize, SfuError> {
        self.call(|reply| Command::SetQualityOf {
            who,
            owner,
            quality,
            reply,
        })
        .await?
    }

    /// `who`'s permissions changed (the hook now answers differently): tracks they no longer
    /// allow are withdrawn (subscribers see them unpublished), tracks withdrawn or refused
    /// earlier that they allow again are published.
    pub fn recheck_permissions(&self, who: ParticipantId) {
        let _ = self.tx.send(Command::Permissions { who });
    }

    pub async fn metrics(&self) -> Result<Metrics, SfuError> {
        self.call(|reply| Command::Metrics { reply }).await
    }
}

/// Our side of one outgoing (SFU -> participant) track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    /// Waiting to be put in an offer.
    ToOpen,
    Negotiating(Mid),
    Open(Mid),
}

/// An incoming m-line not published (yet): its kind and simulcast layers.
type Withheld = (TrackKind, BTreeMap<Layer, Rid>);

struct Client {
    who: ParticipantId,
    room: RoomId,
    rtc: Rtc,
    /// The SFU's ICE ufrag on this connection (the key of [`Runtime::by_ufrag`]).
    ufrag: String,
    pending: Option<SdpPendingOffer>,
    /// Incoming media (participant -> SFU) by mid.
    tracks_in: HashMap<Mid, TrackId>,
    /// Outgoing copies of other participants' tracks.
    tracks_out: BTreeMap<TrackId, (TrackKind, ParticipantId, OutState)>,
    mid_out: HashMap<Mid, TrackId>,
    /// Incoming media not published (its kind not permitted, or withdrawn since): published
    /// when the permission comes (back).
    withheld: BTreeMap<Mid, Withheld>,
    is_dirty: bool,
    /// Its send bandwidth is estimated (it offered video; see [`new_rtc`]).
    estimating: bool,
}

struct Runtime {
    socket: UdpSocket,
    public: SocketAddr,
    session: Session,
    clients: HashMap<u64, Client>,
    by_user: HashMap<ParticipantId, u64>,
    by_addr: HashMap<SocketAddr, u64>,
    /// Each connection's local ICE ufrag: routes a STUN check from a new address.
    by_ufrag: HashMap<String, u64>,
    /// When each connection's `Rtc` wants its next timeout.
    timers: Timers,
    next_key: u64,
    events: mpsc::UnboundedSender<SfuEvent>,
    metrics: Metrics,
    dirty: Vec<u64>,
    outbox: Vec<(ParticipantId, Rewritten)>,
    /// Datagrams the pumps produced, sent at the end of each pump.
    sends: Outbox,
    /// Where each publication comes from.
    track_src: HashMap<TrackId, Source>,
}

/// Where a publication comes from: its publisher's connection and m-line.
struct Source {
    /// The publisher's client key.
    key: u64,
    mid: Mid,
    /// The RID of each simulcast layer (empty: one layer).
    rids: BTreeMap<Layer, Rid>,
    /// The publisher named the track `screen…` (its `msid`): a screen share.
    screen: bool,
    /// The publisher's track id (its `msid`), to name the track in [`SfuEvent::LayersWanted`].
    track_id: String,
    /// The layers some subscriber wants (at first all: the publisher starts with every one).
    wanted: BTreeSet<Layer>,
}

/// Whether a publisher's track id (`a=msid:<stream> <track>`) says it is a screen share: Hum
/// clients name their screen track `screen-<ssrc>`, their camera `camera-<ssrc>`.
pub fn is_screen_track(track_id: &str) -> bool {
    track_id.starts_with("screen")
}

/// The track id a subscriber sees for publication `track` (its stream id is the owner): a
/// screen share keeps the `screen-` prefix so clients show it as a stream of its own beside
/// the owner's camera.
pub fn forwarded_track_id(track: TrackId, screen: bool) -> String {
    if screen {
        format!("screen-t{}", track.0)
    } else {
        format!("t{}", track.0)
    }
}

/// How many already-due timeouts one pump feeds a client before leaving the rest to the loop.
const MAX_DUE_FEEDS: usize = 1024;

/// A participant's connection. `estimate`: estimate the bandwidth towards it (TWCC + GCC),
/// which simulcast layer selection needs for video. It also puts str0m's leaky-bucket pacer in
/// front of every packet, and that pacer releases one packet per timeout: one `handle_timeout`
/// (a pass over all the connection's streams) per forwarded packet. Audio needs neither (its
/// rate is fixed and small), so a participant that offered no video gets str0m's null pacer,
/// which drains the queue at once (`hum bench sfu`, docs/sfu.md).
fn new_rtc(now: Instant, estimate: bool) -> Rtc {
    Rtc::builder()
        .set_ice_lite(true)
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .enable_bwe(estimate.then(|| str0m::bwe::Bitrate::kbps(1_000)))
        .build(now)
}

/// Whether an SDP offer has a video m-line (to send or to receive): the participant takes
/// part in video, so the SFU estimates its bandwidth. Hum clients without video, like the
/// load generator's subscribers, offer audio only.
fn offers_video(sdp: &str) -> bool {
    sdp.lines().any(|l| l.trim_start().starts_with("m=video"))
}

impl Runtime {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut next_tick = Instant::now() + TICK;
        loop {
            let now = Instant::now();
            let wake = self
                .timers
                .next()
                .map_or(next_tick, |t| t.min(next_tick))
                .max(now);
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, src)) = r {
                        // str0m's rule: every mutation of an `Rtc` (here `handle_input`) is
                        // followed by a full drain of its output before the next one. In RTP
                        // mode it holds ONE received packet for the next `poll_output`: feeding
                        // a second datagram first overwrote the first (session 7: a burst of a
                        // 640x360 keyframe lost most of its packets). So each datagram is
                        // pumped before the next is read. Only its own `Rtc` needs that: the
                        // subscribers it forwarded to are drained once per batch below, not once
                        // per datagram (each drain is a str0m poll and timeout pass per
                        // subscriber; `hum bench sfu`, docs/sfu.md).
                        if let Some(k) = self.on_datagram(&buf[..n], src, Instant::now()) {
                            self.pump_one(k, Instant::now());
                        }
                        // Then what is already queued, one at a time, before the timers.
                        for _ in 0..64 {
                            match self.socket.try_recv_from(&mut buf) {
                                Ok((n, src)) => {
                                    if let Some(k) = self.on_datagram(&buf[..n], src, Instant::now()) {
                                        self.pump_one(k, Instant::now());
                                    }
                                }
                                Err(_) => break,
                            }
                        }
                        self.pump(Instant::now());
                    }
                }
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { return };
                    self.on_command(cmd, Instant::now());
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            let now = Instant::now();
            while let Some(k) = self.timers.pop_due(now) {
                if let Some(c) = self.clients.get_mut(&k) {
                    if c.rtc.handle_input(Input::Timeout(now)).is_err() {
                        self.metrics.rtc_errors += 1;
                    }
                    self.mark(k);
                }
            }
            if now >= next_tick {
                self.session.tick(now);
                next_tick = now + TICK;
            }
            self.pump(now);
        }
    }

    fn mark(&mut self, key: u64) {
        if let Some(c) = self.clients.get_mut(&key)
            && !c.is_dirty
        {
            c.is_dirty = true;
            self.dirty.push(key);
        }
    }

    /// Feeds a datagram to the client it belongs to and returns that client (to be pumped
    /// before the next datagram).
    fn on_datagram(&mut self, data: &[u8], src: SocketAddr, now: Instant) -> Option<u64> {
        self.metrics.datagrams_in += 1;
        self.metrics.bytes_in += data.len() as u64;
        let Ok(recv) = Receive::new(Protocol::Udp, src, self.public, data) else {
            self.metrics.unparsable += 1;
            return None;
        };
        let input = Input::Receive(now, recv);
        let known = self
            .by_addr
            .get(&src)
            .copied()
            .filter(|k| self.clients.get(k).is_some_and(|c| c.rtc.accepts(&input)));
        // A new address (or one that moved to another participant): only a STUN check names
        // its connection, by the SFU's ufrag in USERNAME ("ours:theirs").
        let key = known.or_else(|| {
            let stun = StunMessage::parse(data).ok()?;
            let (ours, _) = stun.split_username()?;
            let k = *self.by_ufrag.get(ours)?;
            self.clients
                .get(&k)
                .is_some_and(|c| c.rtc.accepts(&input))
                .then_some(k)
        });
        let Some(key) = key else {
            self.metrics.unrouted += 1;
            return None;
        };
        self.by_addr.insert(src, key);
        if let Some(c) = self.clients.get_mut(&key)
            && c.rtc.handle_input(input).is_err()
        {
            self.metrics.rtc_errors += 1;
        }
        self.mark(key);
        Some(key)
    }

    fn on_command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Join {
                room,
                who,
                offer,
                reply,
            } => {
                let _ = reply.send(self.join(room, who, &offer, now));
            }
            Command::Offer { who, offer, reply } => {
                let _ = reply.send(self.renegotiate(who, &offer));
            }
            Command::Answer { who, answer, reply } => {
                let _ = reply.send(self.accept_answer(who, &answer));
            }
            Command::Leave { who } => self.leave(who),
            Command::SetQuality {
                who,
                track,
                quality,
                reply,
            } => {
                let r = self
                    .session
                    .set_quality(who, track, quality, now)
                    .map_err(SfuError::from);
                let _ = reply.send(r);
            }
            Command::SetQualityOf {
                who,
                owner,
                quality,
                reply,
            } => {
                let r = self
                    .session
                    .set_quality_of(who, owner, quality, now)
                    .map_err(SfuError::from);
                let _ = reply.send(r);
            }
            Command::Permissions { who } => self.recheck_permissions(who, now),
            Command::Metrics { reply } => {
                self.metrics.participants = self.clients.len() as u64;
                self.metrics.estimating =
                    self.clients.values().filter(|c| c.estimating).count() as u64;
                let _ = reply.send(self.metrics.clone());
            }
        }
        self.drain_session(now);
    }

    fn join(
        &mut self,
        room: RoomId,
        who: ParticipantId,
        offer: &str,
        now: Instant,
    ) -> Result<String, SfuError> {
        let estimating = offers_video(offer);
        let offer = SdpOffer::from_sdp_string(offer).map_err(|e| SfuError::Sdp(e.to_string()))?;
        self.session.join(room, who, now)?;
        let mut rtc = new_rtc(now, estimating);
        let cand = Candidate::host(self.public, "udp").map_err(|e| SfuError::Rtc(e.to_string()))?;
        rtc.add_local_candidate(cand);
        let answer = match rtc.sdp_api().accept_offer(offer) {
            Ok(a) => a,
            Err(e) => {
                let _ = self.session.leave(who);
                return Err(SfuError::Sdp(e.to_string()));
            }
        };
        let key = self.next_key;
        self.next_key += 1;
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        self.by_ufrag.insert(ufrag.clone(), key);
        let mut tracks_out = BTreeMap::new();
        // Existing publications of the room go out in the SFU's first offer.
        if let Some(r) = self.session.room(room) {
            for t in &r.publications {
                if let Some(p) = self.session.publication(*t) {
                    tracks_out.insert(*t, (p.kind, p.owner, OutState::ToOpen));
                }
            }
        }
        self.clients.insert(
            key,
            Client {
                who,
                room,
                rtc,
                ufrag,
                pending: None,
                tracks_in: HashMap::new(),
                tracks_out,
                mid_out: HashMap::new(),
                withheld: BTreeMap::new(),
                is_dirty: false,
                estimating,
            },
        );
        self.by_user.insert(who, key);
        self.mark(key);
        Ok(answer.to_sdp_string())
    }

    fn renegotiate(&mut self, who: ParticipantId, offer: &str) -> Result<String, SfuError> {
        let key = *self
            .by_user
            .get(&who)
            .ok_or(SfuError::Session(SessionError::NotInRoom))?;
        let offer = SdpOffer::from_sdp_string(offer).map_err(|e| SfuError::Sdp(e.to_string()))?;
        let c = self.clients.get_mut(&key).ok_or(SfuError::Closed)?;
        if c.pending.is_some() {
            return Err(SfuError::Glare);
        }
        let answer = c
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SfuError::Sdp(e.to_string()))?;
        // An ICE restart in the offer gives the connection new credentials.
        let ufrag = c.rtc.direct_api().local_ice_credentials().ufrag;
        if ufrag != c.ufrag {
            let old = std::mem::replace(&mut c.ufrag, ufrag.clone());
            self.by_ufrag.remove(&old);
            self.by_ufrag.insert(ufrag, key);
        }
        self.mark(key);
        Ok(answer.to_sdp_string())
    }

    fn accept_answer(&mut self, who: ParticipantId, answer: &str) -> Result<(), SfuError> {
        let key = *self
            .by_user
            .get(&who)
            .ok_or(SfuError::Session(SessionError::NotInRoom))?;
        let answer =
            SdpAnswer::from_sdp_string(answer).map_err(|e| SfuError::Sdp(e.to_string()))?;
        let c = self.clients.get_mut(&key).ok_or(SfuError::Closed)?;
        let pending = c.pending.take().ok_or(SfuError::NoPendingOffer)?;
        c.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| SfuError::Sdp(e.to_string()))?;
        for (t, (_, _, st)) in c.tracks_out.iter_mut() {
            if let OutState::Negotiating(m) = *st {
                *st = OutState::Open(m);
                c.mid_out.insert(m, *t);
            }
        }
        self.mark(key);
        Ok(())
    }

    fn leave(&mut self, who: ParticipantId) {
        let Some(key) = self.by_user.remove(&who) else {
            return;
        };
        if let Some(mut c) = self.clients.remove(&key) {
            c.rtc.disconnect();
            self.by_ufrag.remove(&c.ufrag);
        }
        self.timers.remove(key);
        self.by_addr.retain(|_, k| *k != key);
        self.track_src.retain(|_, src| src.key != key);
        let _ = self.session.leave(who);
        self.drain_session(Instant::now());
    }

    /// Makes an SFU offer for a client when it has tracks to add or remove and none in flight.
    fn negotiate(&mut self, key: u64) {
        let Some(c) = self.clients.get_mut(&key) else {
            return;
        };
        if c.pending.is_some()
            || !c
                .tracks_out
                .values()
                .any(|(_, _, s)| *s == OutState::ToOpen)
        {
            return;
        }
        let mut api = c.rtc.sdp_api();
        let mut added = vec![];
        for (t, (kind, owner, st)) in c.tracks_out.iter() {
            if *st == OutState::ToOpen {
                let mk = match kind {
                    TrackKind::Audio => MediaKind::Audio,
                    TrackKind::Video => MediaKind::Video,
                };
                let screen = self.track_src.get(t).is_some_and(|src| src.screen);
                let mid = api.add_media(
                    mk,
                    Direction::SendOnly,
                    Some(owner.to_string()),
                    Some(forwarded_track_id(*t, screen)),
                    None,
                );
                added.push((*t, mid));
            }
        }
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        for (t, mid) in added {
            if let Some(e) = c.tracks_out.get_mut(&t) {
                e.2 = OutState::Negotiating(mid);
            }
        }
        c.pending = Some(pending);
        let _ = self.events.send(SfuEvent::Offer {
            who: c.who,
            sdp: offer.to_sdp_string(),
        });
    }

    /// Drains every marked client until it only has a timeout left; handles the events.
    fn pump(&mut self, now: Instant) {
        while let Some(key) = self.dirty.pop() {
            self.pump_one(key, now);
        }
        self.flush();
    }

    /// Sends what the pumps produced (a batch of syscalls, see [`Outbox`]).
    fn flush(&mut self) {
        let done = self.sends.flush(&self.socket);
        self.metrics.datagrams_out += done.sent;
        self.metrics.bytes_out += done.bytes;
        self.metrics.send_dropped += done.dropped;
    }

    /// Drains one client until it only has a timeout left; handles its events (which may
    /// mark others).
    fn pump_one(&mut self, key: u64, now: Instant) {
        self.negotiate(key);
        let mut events = vec![];
        let mut dead = false;
        if let Some(c) = self.clients.get_mut(&key) {
            c.is_dirty = false;
            // A timeout already due is fed back at once: str0m's pacer releases queued
            // packets only on `handle_input`, so leaving it for the next loop turn held
            // a subscriber to about one packet per turn (a room of 10 talkers backed up
            // by seconds; `hum bench sfu`, docs/sfu.md). Bounded in case a due timeout
            // makes no progress.
            let mut fed = 0;
            loop {
                match c.rtc.poll_output() {
                    Ok(Output::Timeout(t)) if fed < MAX_DUE_FEEDS && t <= Instant::now() => {
                        fed += 1;
                        if c.rtc.handle_input(Input::Timeout(Instant::now())).is_err() {
                            self.metrics.rtc_errors += 1;
                        }
                    }
                    Ok(Output::Timeout(t)) => {
                        self.timers.set(key, t);
                        break;
                    }
                    Ok(Output::Transmit(t)) => {
                        self.sends.push(t.destination, t.contents.into());
                    }
                    Ok(Output::Event(e)) => events.push(e),
                    Err(_) => {
                        self.metrics.rtc_errors += 1;
                        dead = true;
                        break;
                    }
                }
            }
            if !c.rtc.is_alive() {
                dead = true;
            }
        }
        for e in events {
            self.on_event(key, e, now);
        }
        if dead && let Some(who) = self.clients.get(&key).map(|c| c.who) {
            let _ = self.events.send(SfuEvent::Disconnected { who });
            self.leave(who);
        }
        self.drain_session(now);
    }

    fn on_event(&mut self, key: u64, e: Event, now: Instant) {
        match e {
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                if let Some(c) = self.clients.get_mut(&key) {
                    c.rtc.disconnect();
                }
                self.mark(key);
            }
            Event::MediaAdded(m) => {
                if !matches!(m.direction, Direction::RecvOnly | Direction::SendRecv) {
                    return;
                }
                let Some(c) = self.clients.get(&key) else {
                    return;
                };
                if c.tracks_in.contains_key(&m.mid) || c.mid_out.contains_key(&m.mid) {
                    return;
                }
                let kind = match m.kind {
                    MediaKind::Audio => TrackKind::Audio,
                    MediaKind::Video => TrackKind::Video,
                };
                // str0m keeps simulcast from our side: the layers the participant sends are
                // the ones we receive (`a=simulcast:send q;h;f` in its offer is our `recv`).
                let rids: Vec<Rid> = m
                    .simulcast
                    .map(|s| {
                        let layers = if s.recv.is_empty() { s.send } else { s.recv };
                        layers.iter().map(|r| r.rid).collect()
                    })
                    .unwrap_or_default();
                let mut layers = BTreeMap::new();
                for r in &rids {
                    if let Some(l) = Layer::from_rid(r) {
                        layers.insert(l, *r);
                    }
                }
                self.publish_in(key, m.mid, kind, layers, now);
            }
            Event::RtpPacket(pkt) => self.on_rtp(key, pkt, now),
            Event::KeyframeRequest(req) => {
                self.metrics.keyframe_requests_in += 1;
                let Some(c) = self.clients.get(&key) else {
                    return;
                };
                if let Some(t) = c.mid_out.get(&req.mid).copied() {
                    let who = c.who;
                    let _ = self.session.request_keyframe(t, who, now);
                }
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                if let Some(c) = self.clients.get(&key) {
                    let who = c.who;
                    tracing::trace!(%who, %estimate, "bandwidth estimate");
                    let _ =
                        self.session
                            .set_bandwidth(who, Bitrate::from_bps(estimate.as_u64()), now);
                }
            }
            _ => {}
        }
    }

    /// Publishes one incoming m-line of client `key`, or keeps it withheld when its kind is
    /// not permitted (published later by [`Runtime::recheck_permissions`]).
    fn publish_in(
        &mut self,
        key: u64,
        mid: Mid,
        kind: TrackKind,
        layers: BTreeMap<Layer, Rid>,
        now: Instant,
    ) {
        let Some(c) = self.clients.get_mut(&key) else {
            return;
        };
        let track_id = c
            .rtc
            .media(mid)
            .map(|m| m.track_id().to_string())
            .unwrap_or_default();
        let screen = is_screen_track(&track_id);
        match self
            .session
            .publish(c.who, kind, layers.keys().copied().collect(), now)
        {
            Ok(t) => {
                c.withheld.remove(&mid);
                c.tracks_in.insert(mid, t);
                self.track_src.insert(
                    t,
                    Source {
                        key,
                        mid,
                        wanted: layers.keys().copied().collect(),
                        rids: layers,
                        screen,
                        track_id,
                    },
                );
            }
            Err(e) => {
                tracing::debug!("publish refused: {e}");
                c.withheld.insert(mid, (kind, layers));
            }
        }
    }

    /// Applies `who`'s current permissions to what it publishes (see
    /// [`SfuServer::recheck_permissions`]).
    fn recheck_permissions(&mut self, who: ParticipantId, now: Instant) {
        let Some(&key) = self.by_user.get(&who) else {
            return;
        };
        // What each published m-line is, before the session forgets the withdrawn ones.
        let published: Vec<(Mid, TrackId, TrackKind)> = self
            .clients
            .get(&key)
            .map(|c| {
                c.tracks_in
                    .iter()
                    .filter_map(|(m, t)| Some((*m, *t, self.session.publication(*t)?.kind)))
                    .collect()
            })
            .unwrap_or_default();
        let withdrawn = self.session.enforce_permissions(who).unwrap_or_default();
        if let Some(c) = self.clients.get_mut(&key) {
            for (mid, t, kind) in published {
                if withdrawn.contains(&t) {
                    c.tracks_in.remove(&mid);
                    let layers = self
                        .track_src
                        .get(&t)
                        .map(|src| src.rids.clone())
                        .unwrap_or_default();
                    c.withheld.insert(mid, (kind, layers));
                }
            }
        }
        let retry: Vec<(Mid, Withheld)> = self
            .clients
            .get(&key)
            .map(|c| c.withheld.iter().map(|(m, v)| (*m, v.clone())).collect())
            .unwrap_or_default();
        for (mid, (kind, layers)) in retry {
            let allowed = self
                .clients
                .get(&key)
                .is_some_and(|c| !c.tracks_in.contains_key(&mid));
            if allowed {
                self.publish_in(key, mid, kind, layers, now);
            }
        }
        self.drain_session(now);
    }

    fn on_rtp(&mut self, key: u64, pkt: RtpPacket, now: Instant) {
        self.metrics.rtp_in += 1;
        let Some(c) = self.clients.get_mut(&key) else {
            return;
        };
        let ssrc = pkt.header.ssrc;
        let (mid, rid) = match c.rtc.direct_api().stream_rx(&ssrc) {
            Some(s) => (s.mid(), s.rid()),
            None => {
                self.metrics.unknown_stream += 1;
                return;
            }
        };
        let Some(track) = c.tracks_in.get(&mid).copied() else {
            // Media whose publication is withheld (not permitted) is dropped quietly.
            if !c.withheld.contains_key(&mid) {
                self.metrics.unknown_stream += 1;
            }
            return;
        };
        let Some(kind) = self.session.publication(track).map(|p| p.kind) else {
            return;
        };
        let layer = rid
            .as_deref()
            .and_then(Layer::from_rid)
            .unwrap_or(Layer::LOW);
        let keyframe_start = match kind {
            TrackKind::Audio => false,
            TrackKind::Video => match vp8::parse(&pkt.payload) {
                Ok(d) => d.keyframe,
                Err(_) => {
                    self.metrics.malformed_vp8 += 1;
                    return;
                }
            },
        };
        let level = pkt.header.ext_vals.audio_level.map(AudioLevel::from_dbov);
        let inp = InPacket {
            layer,
            seq: *pkt.seq_no,
            timestamp: pkt.header.timestamp,
            keyframe_start,
            arrival: now,
        };
        let mut outbox = std::mem::take(&mut self.outbox);
        outbox.clear();
        let _ = self
            .session
            .on_packet(track, &inp, pkt.payload.len(), level, |to, rw| {
                outbox.push((to, rw))
            });
        let payload: Arc<[u8]> = pkt.payload.clone();
        let ext = ExtensionValues {
            audio_level: pkt.header.ext_vals.audio_level,
            voice_activity: pkt.header.ext_vals.voice_activity,
            ..Default::default()
        };
        for (to, rw) in outbox.iter() {
            let Some(&k) = self.by_user.get(to) else {
                continue;
            };
            let Some(c) = self.clients.get_mut(&k) else {
                continue;
            };
            let Some((_, _, OutState::Open(mid))) = c.tracks_out.get(&track).copied() else {
                continue;
            };
            let codec = match kind {
                TrackKind::Audio => Codec::Opus,
                TrackKind::Video => Codec::Vp8,
            };
            let Some(pt) = c
                .rtc
                .codec_config()
                .find(|p| p.spec().codec == codec)
                .map(|p| p.pt())
            else {
                continue;
            };
            let mut api = c.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                continue;
            };
            tx.write_rtp(
                RtpWrite::new(pt, rw.seq.into(), rw.timestamp, now, payload.clone())
                    .marker(pkt.header.marker)
                    .ext_vals(ext.clone())
                    .nackable(kind == TrackKind::Video),
            );
            self.metrics.rtp_forwarded += 1;
            self.mark(k);
        }
        self.outbox = outbox;
    }

    /// Acts on session events (new tracks to offer, keyframe requests upstream, wanted
    /// layers to their publisher) and passes them on to the relay.
    fn drain_session(&mut self, _now: Instant) {
        let mut wanted_changed: BTreeSet<TrackId> = BTreeSet::new();
        while let Some(ev) = self.session.poll_event() {
            match &ev {
                SessionEvent::BandwidthWanted { who, bitrate } => {
                    // For this runtime's estimator only; the relay has no use for it.
                    if let Some(&k) = self.by_user.get(who)
                        && let Some(c) = self.clients.get_mut(&k)
                        && c.estimating
                    {
                        let desired = str0m::bwe::Bitrate::bps(bitrate.bps());
                        c.rtc.bwe().set_bitrate(str0m::bwe::Bitrate::ZERO, desired);
                        // Its next timeout may now be a probe's.
                        self.mark(k);
                    }
                    continue;
                }
                SessionEvent::LayerWanted {
                    track,
                    layer,
                    wanted,
                } => {
                    if let Some(src) = self.track_src.get_mut(track) {
                        let changed = if *wanted {
                            src.wanted.insert(*layer)
                        } else {
                            src.wanted.remove(layer)
                        };
                        if changed {
                            wanted_changed.insert(*track);
                        }
                    }
                }
                SessionEvent::TrackPublished {
                    room,
                    track,
                    owner,
                    kind,
                } => {
                    let keys: Vec<u64> = self
                        .clients
                        .iter()
                        .filter(|(_, c)| c.room == *room && c.who != *owner)
                        .map(|(k, _)| *k)
                        .collect();
                    for k in keys {
                        if let Some(c) = self.clients.get_mut(&k) {
                            c.tracks_out
                                .insert(*track, (*kind, *owner, OutState::ToOpen));
                        }
                        self.mark(k);
                    }
                }
                SessionEvent::TrackUnpublished { track, .. } => {
                    // The m-line stays (inactive) until the next renegotiation; nothing is
                    // forwarded on it any more.
                    for c in self.clients.values_mut() {
                        if let Some((_, _, st)) = c.tracks_out.remove(track)
                            && let OutState::Open(m) | OutState::Negotiating(m) = st
                        {
                            c.mid_out.remove(&m);
                        }
                    }
                    self.track_src.remove(track);
                }
                SessionEvent::VideoPaused {
                    who,
                    track,
                    owner,
                    paused,
                } => {
                    // Before its `TrackUnpublished` (if it went): the source is still known.
                    let screen = self.track_src.get(track).is_some_and(|s| s.screen);
                    let _ = self.events.send(SfuEvent::VideoPaused {
                        who: *who,
                        owner: *owner,
                        track: forwarded_track_id(*track, screen),
                        paused: *paused,
                    });
                }
                SessionEvent::KeyframeRequest { track, layer } => {
                    if let Some(Source {
                        key: k, mid, rids, ..
                    }) = self.track_src.get(track)
                    {
                        let rid = rids.get(layer).copied();
                        if let Some(c) = self.clients.get_mut(k) {
                            match c.rtc.direct_api().stream_rx_by_mid(*mid, rid) {
                                Some(rx) => {
                                    tracing::debug!(%mid, ?rid, ssrc = %rx.ssrc(), "PLI upstream");
                                    rx.request_keyframe(KeyframeRequestKind::Pli);
                                }
                                None => {
                                    tracing::debug!(%mid, ?rid, "PLI upstream: no such rx stream")
                                }
                            }
                        }
                        let k = *k;
                        self.mark(k);
                    }
                }
                _ => {}
            }
            let _ = self.events.send(SfuEvent::Session(ev));
        }
        // One word per track and turn, with the whole set (a tick may change several layers).
        for t in wanted_changed {
            let Some(src) = self.track_src.get(&t) else {
                continue;
            };
            let Some(c) = self.clients.get(&src.key) else {
                continue;
            };
            let rids: Vec<String> = src
                .wanted
                .iter()
                .filter_map(|l| src.rids.get(l))
                .map(|r| r.to_string())
                .collect();
            tracing::debug!(who = %c.who, track = %src.track_id, ?rids, "layers wanted");
            let _ = self.events.send(SfuEvent::LayersWanted {
                who: c.who,
                track: src.track_id.clone(),
                rids,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_screen_share_is_forwarded_under_a_screen_id_and_anything_else_by_number() {
        assert!(is_screen_track("screen-5343522a"));
        assert!(!is_screen_track("camera-0000002a"));
        assert!(!is_screen_track("my-screen"));
        assert!(!is_screen_track(""));
        assert_eq!(forwarded_track_id(TrackId(7), true), "screen-t7");
        assert_eq!(forwarded_track_id(TrackId(7), false), "t7");
        // What a Hum client reads back from the forwarded id (`VideoKind::of_track`).
        assert!(is_screen_track(&forwarded_track_id(TrackId(12), true)));
        assert!(!is_screen_track(&forwarded_track_id(TrackId(12), false)));
    }

    #[test]
    fn only_a_participant_that_offers_video_gets_bandwidth_estimation() {
        let audio = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
                     m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\n";
        assert!(!offers_video(audio));
        // A camera, or only the idle screen track a Hum client with video always offers.
        let video = format!("{audio}m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\n");
        assert!(offers_video(&video));
        // Video named elsewhere than on an m-line does not count.
        assert!(!offers_video(&format!("{audio}a=x-note:m=video\r\n")));
    }
}
