//! The simulation loop: hum-netsim events in, hum-mesh state machines drained, metrics out.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use hum_mesh::chunker::Chunk;
use hum_mesh::host::{LEAVE_QUIET, LEAVE_QUIET_MAX};
use hum_mesh::manifest::{Publisher, Verifier};
use hum_mesh::root::RootSeed;
use hum_mesh::slice::{SliceProof, encoded_slice_len};
use hum_mesh::tracker::{Grant, Tracker, TrackerConfig};
use hum_mesh::viewer::{Viewer, ViewerConfig};
use hum_mesh::{Layer, MeshEvent, MeshMsg, Output, PeerId, Time};
use hum_netsim::{ChurnEvent, ChurnSchedule, Delivery, EventKind, Net, NodeConfig, NodeId};
use hum_proto::Bitrate;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::SimArgs;
use crate::population::{self, Member, RttDist, UploadDist};
use crate::report::{DepartureReport, LagHistogram, Report, RootPolicy, Totals};

/// Bytes of transport framing (SCTP/DTLS/UDP/IP) charged per mesh message.
const FRAMING: u64 = 60;
/// How long a chunk rides a partially reliable channel: lost packets are resent for this long, then
/// the chunk is abandoned (by then the viewer's end-game has asked someone else).
const DATA_LIFETIME: Duration = Duration::from_secs(2);
/// How long before a peer notices that an upstream or downstream vanished.
const DETECT: Duration = Duration::from_millis(500);
/// How often a leaving viewer checks whether its downstreams have stopped asking.
const DRAIN_CHECK: Duration = Duration::from_millis(250);
/// The window after an `--exodus` over which the stayers' continuity is reported.
const DEPARTURE_WINDOW: Duration = Duration::from_secs(10);
/// The root's default hard ceiling, as a multiple of its cap (see `RootSeed::with_ceiling`).
pub const DEFAULT_CEILING_X: u64 = 2;

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub viewers: usize,
    pub bitrate: Bitrate,
    pub chunk: Duration,
    pub duration: Duration,
    pub churn: f64,
    /// Share of departures that are announced (graceful leave); see `SimArgs::graceful`.
    pub graceful: f64,
    /// `(when, share)`: the top `share` of the audience leaves together at `when`.
    pub exodus: Option<(Duration, f64)>,
    pub upload: UploadDist,
    pub rtt: RttDist,
    pub seed: u64,
    pub server_cap: Option<Bitrate>,
    pub server_ceiling: Option<Bitrate>,
    pub malicious: f64,
    pub loss: f64,
    pub join_window: Duration,
    /// The layer this run carries (the single-layer mode: `High`).
    pub layer: Layer,
    /// A pre-drawn audience (multi-layer mode: the viewers of one layer); newcomers after churn
    /// reuse it round-robin. `None`: draw from `upload`/`rtt`.
    pub members: Option<Arc<Vec<Member>>>,
    /// `--layers`: run every layer (see `layers.rs`).
    pub layered: bool,
    /// `--slices`: upstreams sharing each chunk's slices (0: whole chunks).
    pub slice_parts: u8,
    /// `--late-part-repair`: re-ask a late part's slices from a quick sibling part's upstream.
    pub late_part_repair: bool,
}

impl SimConfig {
    pub fn from_args(a: &SimArgs) -> anyhow::Result<Self> {
        if a.viewers == 0 {
            bail!("--viewers must be at least 1");
        }
        if !(100..=500).contains(&a.chunk_ms) {
            bail!("--chunk-ms must be 100-500 (got {})", a.chunk_ms);
        }
        if !(a.bitrate.is_finite() && a.bitrate > 0.0) {
            bail!("--bitrate must be a positive number of Mbit/s");
        }
        if !(a.duration.is_finite() && a.duration >= 1.0) {
            bail!("--duration must be at least 1 second");
        }
        for (name, v) in [
            ("--churn", a.churn),
            ("--graceful", a.graceful),
            ("--exodus", a.exodus),
            ("--malicious", a.malicious),
            ("--loss", a.loss),
        ] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                bail!("{name} must be between 0 and 1");
            }
        }
        let upload = UploadDist::parse(&a.upload_dist)?;
        Ok(SimConfig {
            viewers: a.viewers,
            bitrate: Bitrate::from_mbps_f64(a.bitrate),
            chunk: Duration::from_millis(a.chunk_ms),
            duration: Duration::from_secs_f64(a.duration),
            churn: a.churn,
            graceful: a.graceful,
            exodus: match a.exodus_at {
                _ if a.exodus == 0.0 => None,
                None => Some((Duration::from_secs_f64(a.duration / 2.0), a.exodus)),
                Some(t) if t.is_finite() && t >= 0.0 && t < a.duration => {
                    Some((Duration::from_secs_f64(t), a.exodus))
                }
                Some(_) => bail!("--exodus-at must be within the run (0 to --duration)"),
            },
            upload: upload.clone(),
            rtt: RttDist::parse(&a.rtt_dist)?,
            seed: a.seed,
            server_cap: a.server_cap.map(Bitrate::from_mbps_f64),
            server_ceiling: a.server_ceiling.map(Bitrate::from_mbps_f64),
            malicious: a.malicious,
            // `mobile` brings its own loss unless `--loss` is given.
            loss: if matches!(upload, UploadDist::Mobile) && a.loss == 0.0 {
                population::MOBILE_LOSS
            } else {
                a.loss
            },
            join_window: Duration::from_secs_f64(a.join_window.clamp(0.0, a.duration)),
            layer: Layer::High,
            members: None,
            layered: a.layers,
            slice_parts: a.slices.min(3),
            late_part_repair: a.late_part_repair == "on",
        })
    }

    /// A small default config (for tests).
    pub fn small(viewers: usize, seed: u64) -> Self {
        SimConfig {
            viewers,
            bitrate: Bitrate::from_mbps(4),
            chunk: Duration::from_millis(250),
            duration: Duration::from_secs(20),
            churn: 0.0,
            graceful: 0.0,
            exodus: None,
            upload: UploadDist::Default,
            rtt: RttDist::Default,
            seed,
            server_cap: None,
            server_ceiling: None,
            malicious: 0.0,
            loss: 0.0,
            join_window: Duration::from_secs(2),
            layer: Layer::High,
            members: None,
            layered: false,
            slice_parts: 0,
            late_part_repair: true,
        }
    }
}

enum Ev {
    Msg(MeshMsg),
    Wake,
    Produce(u64),
    Join(usize),
    Churn(ChurnEvent),
    Granted {
        live: u64,
        grants: Vec<Grant>,
    },
    Grants(Vec<Grant>),
    Gone(PeerId),
    /// The tracker says this upstream is leaving (a graceful leave).
    Leaving(PeerId),
    /// The `--exodus`, and the end of the window it is measured over.
    Exodus,
    ExodusEnd,
    /// A leaving viewer: go once drained (or its time is up).
    DrainCheck(NodeId),
}

struct VState {
    v: Viewer,
    malicious: bool,
    joined_at: Time,
    started_at: Option<Time>,
    /// Announced its leave: serving only, no longer watching (its watch time was counted then).
    leaving: bool,
}

/// Leaving viewers still serving: (node, since, its downstreams when it announced).
type Draining = Vec<(NodeId, Time, Vec<PeerId>)>;

/// What the stayers lose after an `--exodus`: their stall time at its start, per node.
#[derive(Debug, Default)]
struct Departure {
    leavers: usize,
    graceful: usize,
    at_start: Vec<(NodeId, u64)>,
    skipped: u64,
    report: Option<DepartureReport>,
}

/// Chunks viewers took from deliveries of forged bytes (not what the broadcaster published), and
/// how many of those they played. Kept by the simulator apart from the viewers' own verification,
/// so a viewer that stored or played unverified bytes shows up in the report. Normally empty.
#[derive(Debug, Default)]
struct ForgedChunks {
    /// (viewer node, seq) of forged chunks a viewer holds.
    held: BTreeSet<(u32, u64)>,
    stored: u64,
    played: u64,
}

impl ForgedChunks {
    /// Forged bytes for `seq` reached `viewer`; `stored`: it now holds chunk `seq` and did not
    /// before, so it took them.
    fn delivered(&mut self, viewer: NodeId, seq: u64, stored: bool) {
        if stored {
            self.held.insert((viewer.0, seq));
            self.stored += 1;
        }
    }

    /// `viewer` played chunk `seq`.
    fn played(&mut self, viewer: NodeId, seq: u64) {
        if self.held.contains(&(viewer.0, seq)) {
            self.played += 1;
        }
    }
}

struct World {
    cfg: SimConfig,
    net: Net<Ev>,
    root: RootSeed,
    tracker: Tracker,
    /// Viewers in the stream now (the root's starvation threshold scales with it).
    audience: u32,
    viewers: Vec<Option<VState>>,
    wake_at: Vec<u64>,
    last_wake: Vec<u64>,
    spins: u64,
    /// `HUM_SIM_TRACE`: print this node's events (read once).
    trace: Option<u32>,
    watch_us: u64,
    stall_us: u64,
    members: Vec<Member>,
    malicious: Vec<bool>,
    initial_nodes: Vec<Option<NodeId>>,
    newcomer_nodes: Vec<Option<NodeId>>,
    verifier: Verifier,
    // metrics
    lag: LagHistogram,
    on_time: u64,
    late: u64,
    skipped: u64,
    startup_us: Vec<u64>,
    max_hops: u8,
    hops_sum: u64,
    data_bytes_delivered: u64,
    root_bytes_at_measure: Option<(Time, u64)>,
    egress_series: Vec<(f64, f64)>,
    last_egress: (Time, u64),
    bans: u64,
    bans_of_honest: u64,
    penalties: u64,
    fallbacks: u64,
    forged: ForgedChunks,
    slices_delivered: u64,
    /// `part_repairs` of viewers that left.
    part_repairs_gone: u64,
    scratch: Vec<MeshEvent>,
    /// Draws which departures are graceful (apart from the main RNG: `--graceful` changes no
    /// other draw).
    grace_rng: ChaCha8Rng,
    draining: Draining,
    departure: Option<Departure>,
}

/// Run one simulation.
pub fn simulate(cfg: &SimConfig) -> anyhow::Result<Report> {
    let wall = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let n = cfg.viewers;
    let r = cfg.bitrate.bps();
    let churn = ChurnSchedule::generate(
        &mut rng,
        n,
        cfg.churn,
        Time::ZERO + cfg.join_window + Duration::from_secs(1),
        Time::ZERO
            + cfg
                .duration
                .saturating_sub(Duration::from_secs(1))
                .max(cfg.join_window + Duration::from_secs(2)),
    );
    let newcomers = churn.leaves();
    let members: Vec<Member> = match &cfg.members {
        None => (0..n + newcomers)
            .map(|_| population::draw(&mut rng, &cfg.upload, &cfg.rtt))
            .collect(),
        Some(p) if !p.is_empty() => (0..n + newcomers).map(|i| p[i % p.len()]).collect(),
        Some(_) => bail!("an empty pre-drawn audience"),
    };
    let malicious: Vec<bool> = (0..n + newcomers)
        .map(|_| rng.gen_range(0.0..1.0) < cfg.malicious)
        .collect();

    // The fluid bound over the starting audience, with each peer's usable upload bounded by its grant
    // slots exactly as the tracker bounds it.
    let probe = TrackerConfig::new(cfg.bitrate, Bitrate::ZERO);
    let slot_cap = probe.max_grants as f64 * probe.grant_unit.bps() as f64;
    let usable: f64 = members[..n]
        .iter()
        .map(|m| (m.relay_mbps * 1e6).min(slot_cap))
        .sum();
    let demand = n as f64 * r as f64;
    let lower_bound = (demand - usable).max(r as f64);
    let cap = cfg
        .server_cap
        .unwrap_or_else(|| default_cap(cfg.bitrate, lower_bound));
    // The tracker may grant 80% of the cap; the rest is kept for fallback requests.
    let mut tracker_cfg = TrackerConfig::new(cfg.bitrate, cap.scale(0.8));
    if lower_bound > r as f64 * 1.000_001 {
        // The population cannot carry the stream on full-rate relays alone: the relay (which knows
        // every budget) lets peers relay from a quarter of the stream up. Each hop through them is
        // slower (`duration * r / budget`), but it is upload the server would otherwise pay for.
        tracker_cfg.min_relay = tracker_cfg.grant_unit;
    }

    let mut key_seed = [0u8; 32];
    rng.fill(&mut key_seed);
    let publisher = Publisher::from_seed(key_seed);
    let verifier = Verifier::new(publisher.public_key());
    let window = (8_000_000u64.div_ceil(cfg.chunk.as_micros() as u64)).max(32);
    // The cap is a target, never a reason to starve viewers: with no ceiling given the root may
    // spend up to twice the cap while viewers starve (the report says how much and why);
    // `--server-ceiling` equal to the cap turns that off.
    let ceiling = cfg
        .server_ceiling
        .unwrap_or(Bitrate::from_bps(cap.bps() * DEFAULT_CEILING_X))
        .max(cap);
    let root = RootSeed::new(cfg.layer, publisher, cap, window, Time::ZERO)
        .with_ceiling(ceiling)
        .with_slice_proof(SliceProof::StandIn);

    let mut net: Net<Ev> = Net::new(cfg.seed ^ 0x6d65_7368);
    net.reserve(n + newcomers + 1, 4 * n + 1024);
    let root_node = net.add_node(NodeConfig::unlimited(Duration::from_millis(10)));
    assert_eq!(root_node, NodeId(0));

    let mut w = World {
        cfg: cfg.clone(),
        net,
        root,
        tracker: Tracker::new(
            tracker_cfg,
            PeerId(0),
            cfg.seed.wrapping_mul(31).wrapping_add(7),
        ),
        viewers: Vec::with_capacity(n + newcomers + 1),
        wake_at: Vec::with_capacity(n + newcomers + 1),
        last_wake: Vec::with_capacity(n + newcomers + 1),
        spins: 0,
        audience: 0,
        trace: std::env::var("HUM_SIM_TRACE")
            .ok()
            .and_then(|v| v.parse().ok()),
        watch_us: 0,
        stall_us: 0,
        members,
        malicious,
        initial_nodes: vec![None; n],
        newcomer_nodes: vec![None; newcomers],
        verifier,
        lag: LagHistogram::new(),
        on_time: 0,
        late: 0,
        skipped: 0,
        startup_us: Vec::with_capacity(n + newcomers),
        max_hops: 0,
        hops_sum: 0,
        data_bytes_delivered: 0,
        root_bytes_at_measure: None,
        egress_series: Vec::new(),
        last_egress: (Time::ZERO, 0),
        bans: 0,
        bans_of_honest: 0,
        penalties: 0,
        fallbacks: 0,
        forged: ForgedChunks::default(),
        slices_delivered: 0,
        part_repairs_gone: 0,
        scratch: Vec::new(),
        grace_rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6772_6163_6566_756c),
        draining: Vec::new(),
        departure: None,
    };
    w.viewers.push(None);
    w.wake_at.push(u64::MAX);
    w.last_wake.push(u64::MAX);

    // Joins over the join window, then churn, then chunk production.
    let jw = cfg.join_window.as_micros() as u64;
    for i in 0..n {
        let at = if jw == 0 { 0 } else { rng.gen_range(0..jw) };
        w.net.schedule(Time::from_micros(at), None, Ev::Join(i));
    }
    for (at, e) in &churn.events {
        w.net.schedule(*at, None, Ev::Churn(*e));
    }
    w.net.schedule(Time::ZERO + cfg.chunk, None, Ev::Produce(0));
    if let Some((at, _)) = cfg.exodus {
        w.net.schedule(Time::ZERO + at, None, Ev::Exodus);
    }

    let end = Time::ZERO + cfg.duration;
    let measure_from = Time::ZERO + cfg.join_window + Duration::from_secs(5).min(cfg.duration / 4);
    let trace_seq: Option<u64> = std::env::var("HUM_SIM_TRACE_SEQ")
        .ok()
        .and_then(|v| v.parse().ok());
    let trace: Option<u32> = std::env::var("HUM_SIM_TRACE")
        .ok()
        .and_then(|v| v.parse().ok());
    while let Some(ev) = w.net.next_event_until(end) {
        let now = ev.at;
        // Memory-bound at scale: a two-stage prefetch while this event runs. The viewer two events
        // ahead: its state (the slot itself, not `Some(vs)`: reading the discriminant would be the
        // very miss). The next event's viewer, whose state was requested one event ago: its heap data.
        if let Some(nd) = w.net.second_node_hint()
            && let Some(slot) = w.viewers.get(nd.index())
        {
            hum_netsim::prefetch::prefetch(slot, 16);
        }
        if let Some(nd) = w.net.next_node_hint()
            && let Some(slot) = w.viewers.get(nd.index())
        {
            hum_netsim::prefetch::prefetch(slot, 16);
            if let Some(x) = w.wake_at.get(nd.index()) {
                hum_netsim::prefetch::prefetch(x, 1);
            }
            if let Some(x) = w.last_wake.get(nd.index()) {
                hum_netsim::prefetch::prefetch(x, 1);
            }
            if let Some(vs) = slot {
                for (p, bytes) in vs.v.hot_memory() {
                    hum_netsim::prefetch::prefetch_raw(p, bytes, 24);
                }
            }
        }
        match ev.kind {
            EventKind::Deliver {
                from,
                to,
                payload: Ev::Msg(msg),
                ..
            } => {
                if let (Some(ts), MeshMsg::Data { record, hops, .. }) = (trace_seq, &msg)
                    && record.seq == ts
                {
                    eprintln!("seq {ts} at {now} hops {hops} {} -> {}", from.0, to.0);
                }
                if trace == Some(to.0) || trace == Some(from.0) {
                    eprintln!("{now} {} -> {}: {}", from.0, to.0, brief(&msg));
                }
                match &msg {
                    MeshMsg::Data { record, .. } => w.data_bytes_delivered += record.bytes as u64,
                    MeshMsg::Slice { record, index, .. } => {
                        w.slices_delivered += 1;
                        w.data_bytes_delivered +=
                            hum_mesh::slice::slice_len(record.bytes, *index as u32) as u64
                    }
                    _ => {}
                }
                if to == root_node {
                    w.root.handle_input(now, PeerId(from.0), msg);
                    w.drain_root();
                } else if let Some(vs) = w.viewers[to.index()].as_mut() {
                    // Bytes the broadcaster did not publish (a malicious peer's): checked here,
                    // apart from the viewer's own verification, by what the viewer then holds.
                    let forged = match &msg {
                        MeshMsg::Data {
                            record, payload, ..
                        } if **payload != chunk_body(record.seq, cfg.seed) => {
                            Some((record.seq, vs.v.has(record.seq)))
                        }
                        MeshMsg::Slice {
                            record, encoded, ..
                        } if **encoded != chunk_body(record.seq, cfg.seed) => {
                            Some((record.seq, vs.v.has(record.seq)))
                        }
                        _ => None,
                    };
                    vs.v.handle_input(now, PeerId(from.0), msg);
                    if let Some((seq, had)) = forged {
                        let stored = !had && vs.v.has(seq);
                        w.forged.delivered(to, seq, stored);
                    }
                    w.drain_viewer(to);
                }
            }
            EventKind::Timer {
                node: Some(nd),
                payload,
            } => w.on_node_timer(now, nd, payload),
            EventKind::Timer {
                node: None,
                payload,
            } => match payload {
                Ev::Produce(seq) => {
                    w.produce(now, seq);
                    if now >= measure_from && w.root_bytes_at_measure.is_none() {
                        w.root_bytes_at_measure = Some((now, w.root.stats.bytes_sent));
                    }
                    let next = Time::ZERO + cfg.chunk * (seq as u32 + 2);
                    if next <= end {
                        w.net.schedule(next, None, Ev::Produce(seq + 1));
                    }
                }
                Ev::Join(i) => w.join(now, i),
                Ev::Churn(ChurnEvent::Leave(i)) => {
                    if let Some(nd) = w.initial_nodes[i] {
                        w.leave(now, nd);
                    }
                }
                Ev::Churn(ChurnEvent::Join(j)) => w.join(now, n + j),
                Ev::Exodus => w.exodus(now),
                Ev::ExodusEnd => w.exodus_end(now),
                Ev::DrainCheck(nd) => w.drain_check(now, nd),
                _ => {}
            },
            EventKind::Deliver { .. } => {}
        }
    }
    for i in 1..w.viewers.len() {
        w.account(NodeId(i as u32), end);
    }
    let wall_s = wall.elapsed().as_secs_f64();
    if trace.is_some() {
        eprintln!(
            "root: {:?}, granted peers {:?} spare {:?}",
            w.root.stats,
            w.root.granted(),
            w.tracker.root_spare()
        );
        for p in w.root.granted() {
            eprintln!("  {p:?}: {:?}", w.tracker.upstreams(*p));
        }
        eprintln!(
            "pools {:?} unpooled {:?}",
            w.tracker.pool_summary(),
            w.tracker.unpooled_with_spare()
        );
        let mut stalls: Vec<(u64, usize)> = w
            .viewers
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.as_ref().map(|v| (v.v.player().stalled_us(end), i)))
            .collect();
        stalls.sort_unstable();
        eprintln!(
            "worst stalls: {:?}",
            &stalls[stalls.len().saturating_sub(6)..]
        );
        let mut shown = 0;
        for (i, v) in w.viewers.iter().enumerate() {
            if let Some(vs) = v
                && vs.started_at.is_none()
                && shown < 8
            {
                shown += 1;
                let ups: Vec<_> = w
                    .tracker
                    .upstreams(PeerId(i as u32))
                    .iter()
                    .map(|g| {
                        let st = w
                            .viewers
                            .get(g.up.0 as usize)
                            .and_then(|x| x.as_ref())
                            .map(|x| x.started_at.is_some());
                        (g.up.0, g.rate.bps() / 1000, st, w.tracker.level(g.up))
                    })
                    .collect();
                eprintln!(
                    "not started {i} level {} sched {:?} ups {ups:?}",
                    w.tracker.level(PeerId(i as u32)),
                    vs.v.scheduler()
                        .upstreams()
                        .iter()
                        .map(|u| (u.peer.0, u.grant.bps() / 1000, u.health))
                        .collect::<Vec<_>>()
                );
            }
        }
    }
    Ok(w.report(lower_bound, usable, cap, ceiling, end, wall_s))
}

fn brief(m: &MeshMsg) -> String {
    match m {
        MeshMsg::Data { record, hops, .. } => format!("data {} hops {hops}", record.seq),
        MeshMsg::Request {
            seq, deadline_ms, ..
        } => format!("req {seq} dl {deadline_ms}"),
        MeshMsg::Absent { seq, reason, .. } => format!("absent {seq} {reason:?}"),
        MeshMsg::Cancel { seq, .. } => format!("cancel {seq}"),
        MeshMsg::Announce { base, bits, .. } => format!("announce {base}+{bits}"),
        MeshMsg::BufferHealth { buffered_ms, .. } => format!("health {buffered_ms}"),
        MeshMsg::SliceRequest {
            seq, part, parts, ..
        } => format!("slice req {seq} {part}/{parts}"),
        MeshMsg::Slice { record, index, .. } => format!("slice {} #{index}", record.seq),
    }
}

/// The server cap when none is given: 1.25x the fluid lower bound `max(r, N*r - usable)`. The tracker
/// grants the bound's worth (one copy of the stream when the population can carry it) to relays and
/// the rest answers deadline misses. `--server-cap` overrides it (e.g. the design's plateau table).
pub fn default_cap(r: Bitrate, lower_bound_bps: f64) -> Bitrate {
    Bitrate::from_bps((1.25 * lower_bound_bps.max(r.bps() as f64)) as u64)
}

/// The bytes the broadcaster publishes as chunk `seq` (the simulation's stand-in for media).
fn chunk_body(seq: u64, seed: u64) -> [u8; 16] {
    let mut body = [0u8; 16];
    body[..8].copy_from_slice(&seq.to_be_bytes());
    body[8..].copy_from_slice(&seed.to_be_bytes());
    body
}

impl World {
    fn produce(&mut self, now: Time, seq: u64) {
        let dur_us = self.cfg.chunk.as_micros() as u64;
        let body = chunk_body(seq, self.cfg.seed);
        let chunk = Chunk::new(
            self.cfg.layer,
            seq,
            seq * dur_us,
            dur_us as u32,
            true,
            Arc::from(&body[..]),
        );
        let bytes = (self.cfg.bitrate.bps() as u128 * dur_us as u128 / 8 / 1_000_000) as u32;
        self.root.publish(now, &chunk, bytes);
        self.drain_root();
        let sent = self.root.stats.bytes_sent;
        let (t0, b0) = self.last_egress;
        let dt = now.since(t0).as_secs_f64();
        if dt >= 1.0 {
            self.egress_series
                .push((now.as_secs_f64(), (sent - b0) as f64 * 8.0 / dt / 1e6));
            self.last_egress = (now, sent);
        }
    }

    fn join(&mut self, now: Time, idx: usize) {
        let m = self.members[idx];
        let cfg = NodeConfig::new(
            Bitrate::from_mbps_f64(m.up_mbps),
            Bitrate::from_mbps_f64(m.down_mbps),
            Duration::from_secs_f64(m.access_ms / 1000.0),
        )
        .with_loss(self.cfg.loss);
        let nd = self.net.add_node(cfg);
        let peer = PeerId(nd.0);
        if idx < self.cfg.viewers {
            self.initial_nodes[idx] = Some(nd);
        } else {
            self.newcomer_nodes[idx - self.cfg.viewers] = Some(nd);
        }
        self.audience += 1;
        self.root.set_audience(self.audience);
        let budget = Bitrate::from_mbps_f64(m.relay_mbps);
        let mut vc = ViewerConfig::new(self.cfg.layer, self.cfg.bitrate, self.cfg.chunk, budget);
        if self.cfg.slice_parts > 0 {
            vc.slices = Some(SliceProof::StandIn);
            vc.slice_parts = self.cfg.slice_parts;
            vc.repair_late_parts = self.cfg.late_part_repair;
        }
        let v = Viewer::new(peer, PeerId(0), self.verifier.clone(), vc, now);
        debug_assert_eq!(self.viewers.len(), nd.index());
        self.viewers.push(Some(VState {
            v,
            malicious: self.malicious[idx],
            joined_at: now,
            started_at: None,
            leaving: false,
        }));
        self.wake_at.push(u64::MAX);
        self.last_wake.push(u64::MAX);
        let net = &self.net;
        let (grants, mut orphans) = self
            .tracker
            .join(peer, budget, &|a, b| net.rtt(NodeId(a.0), NodeId(b.0)));
        orphans.extend(self.tracker.take_orphans());
        let rtt = self.net.rtt(nd, NodeId(0));
        let live = self.root.newest().unwrap_or(0);
        self.net
            .schedule(now + rtt, Some(nd), Ev::Granted { live, grants });
        for (o, lost) in orphans {
            if lost != PeerId(0) {
                self.notify_orphan(now, o, lost);
                continue;
            }
            let delay = self.net.rtt(NodeId(o.0), NodeId(0));
            self.net
                .schedule(now + delay, Some(NodeId(o.0)), Ev::Gone(lost));
        }
    }

    /// The tracker moved `o` off `lost` (preemption): both ends hear of it after one relay RTT.
    fn notify_orphan(&mut self, now: Time, o: PeerId, lost: PeerId) {
        let d1 = self.net.rtt(NodeId(o.0), NodeId(0));
        self.net
            .schedule(now + d1, Some(NodeId(o.0)), Ev::Gone(lost));
        let d2 = self.net.rtt(NodeId(lost.0), NodeId(0));
        self.net
            .schedule(now + d2, Some(NodeId(lost.0)), Ev::Gone(o));
    }

    /// A viewer leaves: announced (`--graceful` of the time) or vanishing.
    fn leave(&mut self, now: Time, nd: NodeId) {
        match self.viewers.get(nd.index()).and_then(|v| v.as_ref()) {
            None => return,
            Some(vs) if vs.leaving => return,
            Some(_) => {}
        }
        if self.cfg.graceful > 0.0 && self.grace_rng.gen_range(0.0..1.0) < self.cfg.graceful {
            if let Some(d) = self.departure.as_mut() {
                d.graceful += 1;
            }
            self.leave_announced(now, nd);
        } else {
            self.vanish(now, nd);
        }
    }

    /// A graceful leave, as the relay's host runs it (`RootHost::viewer_leaving`): the tracker
    /// takes the leaver out of its books at once and its downstreams hear `leaving` one relay hop
    /// after the announcement reached the relay (each then asks for new grants, `want`); the
    /// leaver stops watching but keeps serving until its downstreams stop asking, then goes
    /// ([`World::drain_check`]).
    fn leave_announced(&mut self, now: Time, nd: NodeId) {
        let peer = PeerId(nd.0);
        self.account(nd, now);
        if let Some(vs) = self.viewers[nd.index()].as_mut() {
            vs.leaving = true;
            vs.v.leave(now);
        }
        let up = self.net.rtt(nd, NodeId(0)) / 2;
        let downs = self.tracker.leave(peer);
        for &d in &downs {
            let at = now + up + self.net.rtt(NodeId(d.0), NodeId(0)) / 2;
            self.net.schedule(at, Some(NodeId(d.0)), Ev::Leaving(peer));
        }
        self.draining.push((nd, now, downs));
        self.net
            .schedule(now + DRAIN_CHECK, None, Ev::DrainCheck(nd));
        self.drain_viewer(nd);
    }

    /// A leaving viewer goes once no downstream has asked it anything for `LEAVE_QUIET` (or after
    /// `LEAVE_QUIET_MAX`): its links close, the relay tells its old downstreams `gone`.
    fn drain_check(&mut self, now: Time, nd: NodeId) {
        let Some(i) = self.draining.iter().position(|d| d.0 == nd) else {
            return;
        };
        let since = self.draining[i].1;
        let drained = self.viewers[nd.index()]
            .as_ref()
            .is_none_or(|vs| vs.v.drained(now, LEAVE_QUIET));
        if !drained && now.since(since) < LEAVE_QUIET_MAX {
            self.net
                .schedule(now + DRAIN_CHECK, None, Ev::DrainCheck(nd));
            return;
        }
        let (_, _, downs) = self.draining.swap_remove(i);
        let peer = PeerId(nd.0);
        let up = self.net.rtt(nd, NodeId(0)) / 2;
        for d in downs {
            let at = now + up + self.net.rtt(NodeId(d.0), NodeId(0)) / 2;
            self.net.schedule(at, Some(NodeId(d.0)), Ev::Gone(peer));
        }
        self.net.remove_node(nd);
        if let Some(v) = self.viewers[nd.index()].take() {
            self.part_repairs_gone += v.v.stats.part_repairs;
        }
        self.root.peer_gone(peer);
        self.audience = self.audience.saturating_sub(1);
        self.root.set_audience(self.audience);
    }

    /// The top `share` of the audience (the tracker's shallowest levels, earliest joiners
    /// first) leaves at once; the stayers' stalls are measured from here.
    fn exodus(&mut self, now: Time) {
        let share = self.cfg.exodus.map_or(0.0, |e| e.1);
        let mut alive: Vec<(u8, NodeId)> = (1..self.viewers.len())
            .filter(|&i| self.viewers[i].as_ref().is_some_and(|v| !v.leaving))
            .map(|i| (self.tracker.level(PeerId(i as u32)), NodeId(i as u32)))
            .collect();
        alive.sort_unstable();
        let k = ((alive.len() as f64) * share).round() as usize;
        self.departure = Some(Departure {
            leavers: k,
            ..Departure::default()
        });
        for &(_, nd) in &alive[..k] {
            self.leave(now, nd);
        }
        let at_start: Vec<(NodeId, u64)> = alive[k..]
            .iter()
            .filter_map(|&(_, nd)| {
                let vs = self.viewers[nd.index()].as_ref()?;
                (vs.started_at.is_some() && !vs.malicious && !vs.leaving)
                    .then(|| (nd, vs.v.player().stalled_us(now)))
            })
            .collect();
        if let Some(d) = self.departure.as_mut() {
            d.at_start = at_start;
        }
        self.net
            .schedule(now + DEPARTURE_WINDOW, None, Ev::ExodusEnd);
    }

    fn exodus_end(&mut self, now: Time) {
        let Some(d) = self.departure.as_mut() else {
            return;
        };
        let (mut stall, mut stayers) = (0u64, 0usize);
        for &(nd, s0) in &d.at_start {
            if let Some(vs) = self.viewers[nd.index()].as_ref()
                && !vs.leaving
            {
                stall += vs.v.player().stalled_us(now).saturating_sub(s0);
                stayers += 1;
            }
        }
        let watch = stayers as f64 * DEPARTURE_WINDOW.as_micros() as f64;
        d.report = Some(DepartureReport {
            leavers: d.leavers,
            graceful: d.graceful,
            stayers,
            window_s: DEPARTURE_WINDOW.as_secs_f64(),
            continuity: if watch > 0.0 {
                1.0 - stall as f64 / watch
            } else {
                0.0
            },
            stayers_skipped: d.skipped,
        });
    }

    /// A viewer vanishes (a crash): its downstreams notice after `DETECT`.
    fn vanish(&mut self, now: Time, nd: NodeId) {
        let peer = PeerId(nd.0);
        let orphans = self.tracker.leave(peer);
        for o in orphans {
            self.net
                .schedule(now + DETECT, Some(NodeId(o.0)), Ev::Gone(peer));
        }
        self.net.remove_node(nd);
        self.account(nd, now);
        if let Some(v) = self.viewers[nd.index()].take() {
            self.part_repairs_gone += v.v.stats.part_repairs;
        }
        self.root.peer_gone(peer);
        self.audience = self.audience.saturating_sub(1);
        self.root.set_audience(self.audience);
    }

    fn on_node_timer(&mut self, now: Time, nd: NodeId, ev: Ev) {
        if nd == NodeId(0) {
            if matches!(ev, Ev::Wake) && self.wake_at[0] == now.as_micros() {
                self.wake_at[0] = u64::MAX;
                self.last_wake[0] = now.as_micros();
                self.root.handle_timeout(now);
                self.drain_root();
            }
            return;
        }
        let Some(vs) = self.viewers.get_mut(nd.index()).and_then(|v| v.as_mut()) else {
            return;
        };
        match ev {
            Ev::Wake => {
                if self.wake_at[nd.index()] != now.as_micros() {
                    return;
                }
                self.wake_at[nd.index()] = u64::MAX;
                self.last_wake[nd.index()] = now.as_micros();
                vs.v.handle_timeout(now);
            }
            Ev::Granted { live, grants } => {
                vs.v.join(now, live);
                for g in grants {
                    vs.v.add_upstream(now, g.up, g.rate);
                    if g.up == PeerId(0) {
                        // Only real seeds (a large root grant) are the root's feed; small top-ups
                        // are fallback traffic.
                        let seed = g.rate.bps() * 2 >= self.cfg.bitrate.bps();
                        self.root.set_granted(PeerId(nd.0), seed);
                    }
                }
            }
            Ev::Grants(grants) => {
                for g in grants {
                    vs.v.add_upstream(now, g.up, g.rate);
                    if g.up == PeerId(0) {
                        // Only real seeds (a large root grant) are the root's feed; small top-ups
                        // are fallback traffic.
                        let seed = g.rate.bps() * 2 >= self.cfg.bitrate.bps();
                        self.root.set_granted(PeerId(nd.0), seed);
                    }
                }
            }
            Ev::Gone(p) => {
                vs.v.peer_gone(now, p);
                if p == PeerId(0) {
                    self.root.set_granted(PeerId(nd.0), false);
                }
            }
            Ev::Leaving(p) => vs.v.upstream_leaving(now, p),
            Ev::Msg(_)
            | Ev::Produce(_)
            | Ev::Join(_)
            | Ev::Churn(_)
            | Ev::Exodus
            | Ev::ExodusEnd
            | Ev::DrainCheck(_) => {}
        }
        self.drain_viewer(nd);
    }

    fn wire_bytes(msg: &MeshMsg) -> u64 {
        FRAMING
            + match msg {
                MeshMsg::Data { record, .. } => {
                    record.bytes as u64 + hum_mesh::ChunkRecord::ENCODED_LEN as u64 + 8
                }
                // The stand-in body counts for the slice with its proof.
                MeshMsg::Slice { record, index, .. } => {
                    encoded_slice_len(record.bytes, *index as u32) as u64
                        + hum_mesh::ChunkRecord::ENCODED_LEN as u64
                        + 9
                }
                m => m.encoded_len() as u64,
            }
    }

    /// The data channel a message kind rides (WebRTC data channels over SCTP): control messages
    /// (requests, slice requests, cancels, announcements, absents, buffer health) on a reliable
    /// ordered one; chunks and slices on an unordered partially reliable one with
    /// [`DATA_LIFETIME`] (a repair after that is useless: the end-game has asked someone else).
    /// Without loss both behave alike.
    fn delivery(msg: &MeshMsg) -> Delivery {
        match msg {
            MeshMsg::Data { .. } | MeshMsg::Slice { .. } => Delivery::Lifetime(DATA_LIFETIME),
            _ => Delivery::Reliable,
        }
    }

    fn drain_root(&mut self) {
        loop {
            match self.root.poll_output() {
                Output::Send { to, msg } => {
                    let b = Self::wire_bytes(&msg);
                    let d = Self::delivery(&msg);
                    self.net
                        .send_with(NodeId(0), NodeId(to.0), b, Ev::Msg(msg), d);
                }
                Output::Event(_) => {}
                Output::Timeout(at) => {
                    self.arm(NodeId(0), at);
                    return;
                }
            }
        }
    }

    fn arm(&mut self, nd: NodeId, at: Time) {
        if at == Time::MAX {
            return;
        }
        let now = self.net.now().as_micros();
        // A state machine asking to be woken again at the instant it was just woken would spin; give it
        // a millisecond (a safety net, counted so a bug here shows up in the report).
        let at = if at.0 <= now && self.last_wake.get(nd.index()).is_some_and(|&l| l == now) {
            self.spins += 1;
            now + 1000
        } else {
            at.0.max(now)
        };
        let w = &mut self.wake_at[nd.index()];
        if at < *w || *w < self.net.now().as_micros() {
            *w = at;
            self.net.schedule(Time::from_micros(at), Some(nd), Ev::Wake);
        }
    }

    fn drain_viewer(&mut self, nd: NodeId) {
        let mut events = std::mem::take(&mut self.scratch);
        events.clear();
        let now = self.net.now();
        let joined_at;
        if let Some(vs) = self.viewers[nd.index()].as_ref() {
            for to in vs.v.pending_sends() {
                self.net.prefetch_node(NodeId(to.0));
            }
        }
        loop {
            let Some(vs) = self.viewers[nd.index()].as_mut() else {
                return;
            };
            match vs.v.poll_output() {
                Output::Send { to, msg } => {
                    let msg = match msg {
                        MeshMsg::Data { record, hops, .. } if vs.malicious => MeshMsg::Data {
                            record,
                            hops,
                            payload: Arc::from(&b"not the chunk you asked for"[..]),
                        },
                        MeshMsg::Slice {
                            record,
                            hops,
                            index,
                            ..
                        } if vs.malicious => MeshMsg::Slice {
                            record,
                            hops,
                            index,
                            encoded: Arc::from(&b"not the slice you asked for"[..]),
                        },
                        m => m,
                    };
                    let b = Self::wire_bytes(&msg);
                    let d = Self::delivery(&msg);
                    self.net.send_with(nd, NodeId(to.0), b, Ev::Msg(msg), d);
                }
                Output::Event(e) => events.push(e),
                Output::Timeout(at) => {
                    joined_at = vs.joined_at;
                    self.arm(nd, at);
                    break;
                }
            }
        }
        let dur_us = self.cfg.chunk.as_micros() as u64;
        // A leaving viewer no longer watches: what it plays is not counted.
        let mine_malicious = self.viewers[nd.index()]
            .as_ref()
            .is_some_and(|v| v.malicious || v.leaving);
        let trace = self.trace;
        for e in events.drain(..) {
            if trace == Some(nd.0) {
                eprintln!("{now} {}: {e:?}", nd.0);
            }
            match e {
                MeshEvent::Started { at, .. } => {
                    self.startup_us.push(at.0.saturating_sub(joined_at.0));
                    if let Some(vs) = self.viewers[nd.index()].as_mut() {
                        vs.started_at = Some(at);
                    }
                }
                MeshEvent::Played {
                    seq,
                    at,
                    on_time,
                    hops,
                    ..
                } => {
                    self.forged.played(nd, seq);
                    if !mine_malicious {
                        if on_time {
                            self.on_time += 1;
                        } else {
                            self.late += 1;
                        }
                        self.lag.add(at.0.saturating_sub(seq * dur_us));
                        self.max_hops = self.max_hops.max(hops);
                        self.hops_sum += hops as u64;
                    }
                }
                MeshEvent::Skipped { .. } => {
                    if !mine_malicious {
                        self.skipped += 1;
                        if let Some(d) = self.departure.as_mut()
                            && d.report.is_none()
                        {
                            d.skipped += 1;
                        }
                    }
                }
                MeshEvent::Penalised { .. } => self.penalties += 1,
                MeshEvent::Banned { peer } => {
                    self.bans += 1;
                    if !self.malicious_node(peer) {
                        self.bans_of_honest += 1;
                    }
                    self.tracker.ban(PeerId(nd.0), peer);
                    for (o, lost) in self.tracker.take_orphans() {
                        self.notify_orphan(now, o, lost);
                    }
                }
                MeshEvent::NeedUpstreams { .. } => {
                    let net = &self.net;
                    let grants = self
                        .tracker
                        .refill(PeerId(nd.0), &|a, b| net.rtt(NodeId(a.0), NodeId(b.0)));
                    if !grants.is_empty() {
                        let rtt = self.net.rtt(nd, NodeId(0));
                        self.net.schedule(now + rtt, Some(nd), Ev::Grants(grants));
                    }
                    for (o, lost) in self.tracker.take_orphans() {
                        self.notify_orphan(now, o, lost);
                    }
                }
                MeshEvent::Fallback { .. } => self.fallbacks += 1,
            }
        }
        self.scratch = events;
    }

    /// Add a viewer's watch time and stall time to the totals (at departure or the end).
    fn account(&mut self, nd: NodeId, now: Time) {
        if let Some(vs) = self.viewers[nd.index()].as_ref()
            && let (Some(st), false) = (vs.started_at, vs.malicious || vs.leaving)
        {
            self.watch_us += now.as_micros().saturating_sub(st.0);
            self.stall_us += vs.v.player().stalled_us(now);
        }
    }

    fn malicious_node(&self, p: PeerId) -> bool {
        // Node ids follow join order; look the member up through the node tables.
        self.initial_nodes
            .iter()
            .position(|x| *x == Some(NodeId(p.0)))
            .map(|i| self.malicious[i])
            .or_else(|| {
                self.newcomer_nodes
                    .iter()
                    .position(|x| *x == Some(NodeId(p.0)))
                    .map(|j| self.malicious[self.cfg.viewers + j])
            })
            .unwrap_or(false)
    }

    fn report(
        &self,
        lower_bound: f64,
        usable: f64,
        cap: Bitrate,
        ceiling: Bitrate,
        end: Time,
        wall_s: f64,
    ) -> Report {
        let r = self.cfg.bitrate.bps() as f64;
        let (m_at, m_bytes) = self.root_bytes_at_measure.unwrap_or((Time::ZERO, 0));
        let secs = end.since(m_at).as_secs_f64().max(1e-9);
        let egress = (self.root.stats.bytes_sent - m_bytes) as f64 * 8.0 / secs;
        let total_played = self.on_time + self.late + self.skipped;
        let mut startup = self.startup_us.clone();
        startup.sort_unstable();
        let pct = |v: &[u64], p: f64| -> f64 {
            if v.is_empty() {
                f64::NAN
            } else {
                v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1e6
            }
        };
        let played = self.on_time + self.late;
        Report {
            viewers: self.cfg.viewers,
            bitrate_mbps: r / 1e6,
            chunk_ms: self.cfg.chunk.as_millis() as u64,
            duration_s: self.cfg.duration.as_secs_f64(),
            churn: self.cfg.churn,
            graceful: self.cfg.graceful,
            departure: self.departure.as_ref().and_then(|d| d.report.clone()),
            seed: self.cfg.seed,
            server_cap_mbps: cap.mbps_f64(),
            root_policy: RootPolicy {
                ceiling_mbps: ceiling.mbps_f64(),
                peak_mbps: self.root.stats.peak_rate.mbps_f64(),
                over_cap_s: self.root.stats.over_cap_us as f64 / 1e6,
                starved_periods: self.root.stats.starved_periods,
                busy_refusals: self.root.stats.busy,
                expired_requests: self.root.stats.expired,
                starving_requests: self.root.stats.starving,
            },
            server_egress_mbps: egress / 1e6,
            lower_bound_mbps: lower_bound / 1e6,
            usable_peer_upload_mbps: usable / 1e6,
            population_can_supply: lower_bound <= r * 1.000_001,
            peer_share: if self.data_bytes_delivered == 0 {
                0.0
            } else {
                1.0 - self.root.stats.bytes_sent as f64 / self.data_bytes_delivered as f64
            },
            continuity: if self.watch_us == 0 {
                0.0
            } else {
                1.0 - self.stall_us as f64 / self.watch_us as f64
            },
            on_time_share: if total_played == 0 {
                0.0
            } else {
                self.on_time as f64 / total_played as f64
            },
            chunks_on_time: self.on_time,
            chunks_late: self.late,
            chunks_skipped: self.skipped,
            startup_s_p50: pct(&startup, 0.5),
            startup_s_p95: pct(&startup, 0.95),
            started_viewers: startup.len(),
            lag_s_p50: self.lag.quantile(0.5),
            lag_s_p95: self.lag.quantile(0.95),
            lag_s_p99: self.lag.quantile(0.99),
            max_hops: self.max_hops,
            mean_hops: if played == 0 {
                0.0
            } else {
                self.hops_sum as f64 / played as f64
            },
            fallback_requests: self.fallbacks,
            penalties: self.penalties,
            bans: self.bans,
            bans_of_honest_peers: self.bans_of_honest,
            wall_s,
            timer_spins: self.spins,
            corrupt_chunks_stored: self.forged.stored,
            corrupt_chunks_played: self.forged.played,
            slice_parts: self.cfg.slice_parts,
            slices_delivered: self.slices_delivered,
            part_repairs: self
                .viewers
                .iter()
                .flatten()
                .map(|v| v.v.stats.part_repairs)
                .sum::<u64>()
                + self.part_repairs_gone,
            egress_series: self.egress_series.clone(),
            lag_cdf: self.lag.cdf(),
            totals: Totals {
                watch_us: self.watch_us,
                stall_us: self.stall_us,
                root_bytes: self.root.stats.bytes_sent,
                delivered_bytes: self.data_bytes_delivered,
                startup_us: startup,
                lag: self.lag.clone(),
                served_by_member: self
                    .initial_nodes
                    .iter()
                    .map(|nd| {
                        nd.and_then(|nd| self.viewers[nd.index()].as_ref())
                            .map_or(0, |vs| vs.v.stats.bytes_served)
                    })
                    .collect(),
            },
            layers: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_chunks_count_only_what_a_viewer_took_and_then_played() {
        let mut f = ForgedChunks::default();
        // Refused forgeries (the viewer verified them) leave nothing, whatever it plays later.
        f.delivered(NodeId(1), 7, false);
        f.played(NodeId(1), 7);
        assert_eq!((f.stored, f.played), (0, 0));
        // A taken forgery counts as stored; playing another seq, or another viewer playing the
        // same seq, is not playing it.
        f.delivered(NodeId(2), 9, true);
        f.played(NodeId(2), 8);
        f.played(NodeId(3), 9);
        assert_eq!((f.stored, f.played), (1, 0));
        f.played(NodeId(2), 9);
        assert_eq!((f.stored, f.played), (1, 1));
    }

    #[test]
    fn only_the_broadcasters_bytes_are_genuine() {
        let body = chunk_body(5, 3);
        assert_eq!(&body[..8], &5u64.to_be_bytes());
        assert_ne!(body, chunk_body(6, 3));
        assert_ne!(body, chunk_body(5, 4));
    }
}
