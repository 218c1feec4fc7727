//! The RTT throttler: watches round-trip times to the relay (and optionally to the user's game
//! server), infers the queuing delay on the user's uplink, and moves the relay cap so that queue
//! stays below a small target. This is what keeps a game from lagging while Hum relays.
//!
//! Shape (sans-IO, str0m style): feed [`Throttler::handle_timeout`] at [`Throttler::poll_timeout`],
//! feed probe replies with [`Throttler::on_probe_reply`] (or RTTs measured elsewhere with
//! [`Throttler::on_rtt_sample`]), then drain [`Throttler::poll_output`] until `None`: it yields
//! probes to send and [`ThrottleEvent`]s. Nothing here reads a clock.
//!
//! Control law, per RTT sample:
//! - **base RTT** per path: the minimum over a window of per-interval minima (RFC 6817's base delay
//!   history), plus LEDBAT++-style **periodic slowdowns**: now and then the relay cap drops to zero
//!   for about two RTTs so the uplink queue Hum itself keeps standing drains and the true base is
//!   seen again (otherwise a standing queue would be mistaken for the path's propagation delay).
//! - **current RTT**: the minimum of the last few samples (RFC 6817's CURRENT_FILTER), which
//!   rejects one-off spikes without hiding a queue that persists.
//! - **queuing delay** = current - base, the worst over the probed paths (they share the uplink).
//! - above the target: cut the cap multiplicatively (at most once per `decrease_gap`, so a cut can
//!   show its effect before the next); at zero relay and still above target for a while: tell the
//!   app to lower its own viewing layer (the queue may be on the download side).
//! - below half the target for a quiet period: raise the cap, quickly back to just below where the
//!   last cut happened, slowly around it, faster again beyond it (concave then convex, as CUBIC).
//!
//! Invariants (tested): `0 <= cap <= ceiling`; the cap is zero during warm-up and slowdowns; a
//! `RelayReduced` is followed by at most one `RelayRestored` before the next `RelayReduced`.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use hum_proto::Bitrate;

/// What an RTT sample measured the path to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbePath {
    /// The Hum relay (echo probes over the relay connection).
    Relay,
    /// The user's game server (`host:port` from the settings).
    GameServer,
}

/// Easing (gentle decreases below the target) is only worth telling the user about once it has
/// taken relaying below this fraction of their setting; a hard cut is always reported.
const REPORT_REDUCED_BELOW: f64 = 0.8;

const PATHS: [ProbePath; 2] = [ProbePath::Relay, ProbePath::GameServer];

#[derive(Clone, Debug, PartialEq)]
pub struct ThrottlerConfig {
    /// Queuing delay the throttler defends (default 10 ms; LEDBAT uses 100 ms, GCC's initial
    /// overuse threshold is 12.5 ms: see docs/budget.md).
    pub target: Duration,
    /// How often each enabled path is probed.
    pub probe_interval: Duration,
    /// The game server is probed less often: it is someone else's server, and a TCP-connect probe
    /// every 50 ms would look like a SYN flood to its operator.
    pub game_probe_interval: Duration,
    /// A probe with no reply after this long counts as a sample of this RTT on paths where
    /// timeouts mean congestion (the relay echo), and is dropped elsewhere.
    pub probe_timeout: Duration,
    /// Current RTT = min of this many latest samples.
    pub current_filter: usize,
    /// Base history: one minimum per interval, this many intervals.
    pub base_interval: Duration,
    pub base_history: usize,
    /// Relay path samples before relaying starts.
    pub warmup_samples: usize,
    /// Cap when warm-up ends, as a fraction of the ceiling.
    pub initial_fraction: f64,
    /// Multiplicative decrease factor.
    pub decrease_factor: f64,
    /// Minimum time between two cuts.
    pub decrease_gap: Duration,
    /// Time without an over-target sample before the cap may rise again.
    pub quiet_period: Duration,
    /// One increase (or ease) step per interval.
    pub increase_interval: Duration,
    /// Grow only while the queuing delay is below this fraction of the target...
    pub grow_below: f64,
    /// ... hold between the two, and above this fraction (but below the target) ease off by
    /// `ease_factor` per interval.
    pub ease_above: f64,
    pub ease_factor: f64,
    /// With usage reported ([`Throttler::on_relay_sent`]), the cap grows only while relaying
    /// sends at least this fraction of it.
    pub app_limited_below: f64,
    /// Caps below this become zero (not worth a trickle).
    pub min_rate: Bitrate,
    /// Periodic slowdown: at least this long between slowdowns (and at least 9x the slowdown's
    /// own length, which keeps its cost under 10% as in LEDBAT++).
    pub slowdown_every: Duration,
    /// Slowdown length: max(this, 2 x current RTT).
    pub slowdown_min: Duration,
    /// At zero relay and over target for this long: ask to lower the viewing layer.
    pub lower_layer_after: Duration,
    /// ... and not again within this.
    pub lower_layer_cooldown: Duration,
    /// A path whose last sample is older than this is ignored.
    pub path_stale_after: Duration,
}

impl Default for ThrottlerConfig {
    fn default() -> Self {
        ThrottlerConfig {
            target: Duration::from_millis(crate::settings::DEFAULT_QUEUING_TARGET_MS as u64),
            probe_interval: Duration::from_millis(50),
            game_probe_interval: Duration::from_millis(250),
            probe_timeout: Duration::from_millis(1_000),
            current_filter: 3,
            base_interval: Duration::from_secs(10),
            base_history: 6,
            warmup_samples: 5,
            initial_fraction: 0.5,
            decrease_factor: 0.75,
            decrease_gap: Duration::from_millis(200),
            quiet_period: Duration::from_millis(500),
            increase_interval: Duration::from_millis(100),
            grow_below: 0.25,
            ease_above: 0.5,
            ease_factor: 0.96,
            app_limited_below: 0.5,
            min_rate: Bitrate::from_kbps(16),
            slowdown_every: Duration::from_secs(15),
            slowdown_min: Duration::from_millis(150),
            lower_layer_after: Duration::from_secs(2),
            lower_layer_cooldown: Duration::from_secs(15),
            path_stale_after: Duration::from_secs(3),
        }
    }
}

impl ThrottlerConfig {
    /// The default configuration with the user's target from the settings.
    pub fn with_target_ms(ms: u32) -> Self {
        ThrottlerConfig {
            target: Duration::from_millis(ms as u64),
            ..Self::default()
        }
    }
}

/// Something the app should know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ThrottleEvent {
    /// The cap moved (apply it to the limiter).
    CapChanged { cap: Bitrate },
    /// Relaying was cut below the user's setting to protect their connection.
    RelayReduced {
        cap: Bitrate,
        ceiling: Bitrate,
        queuing_delay: Duration,
    },
    /// Relaying is back at the user's setting.
    RelayRestored { cap: Bitrate },
    /// Even with relaying at zero the queue stays high: lower your own viewing layer.
    LowerViewingLayer { queuing_delay: Duration },
}

impl ThrottleEvent {
    /// The notification the app shows, if this event deserves one.
    pub fn user_message(&self) -> Option<&'static str> {
        match self {
            ThrottleEvent::CapChanged { .. } => None,
            ThrottleEvent::RelayReduced { .. } => Some("Reduced relay to protect your connection"),
            ThrottleEvent::RelayRestored { .. } => Some("Relay restored"),
            ThrottleEvent::LowerViewingLayer { .. } => {
                Some("Your connection is busy: lowering your stream quality")
            }
        }
    }
}

/// What the engine must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ThrottleOutput {
    /// Send probe `seq` on `path` now; report the reply with [`Throttler::on_probe_reply`].
    Probe {
        path: ProbePath,
        seq: u64,
    },
    Event(ThrottleEvent),
}

/// Public view of the controller's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThrottleState {
    /// Measuring the base RTT; not relaying yet.
    Warmup,
    /// Relaying at the user's setting.
    Full,
    /// Relaying below the user's setting.
    Reduced,
    /// A periodic slowdown: relay paused to re-measure the base RTT.
    Slowdown,
}

#[derive(Clone, Debug)]
enum Mode {
    Warmup,
    Running,
    Slowdown {
        started: Instant,
        until: Instant,
        resume: Bitrate,
    },
}

/// RFC 6817's base delay history: one minimum per interval, the base is the minimum of those.
#[derive(Clone, Debug, Default)]
struct BaseHistory {
    minima: VecDeque<(Instant, Duration)>,
}

impl BaseHistory {
    fn update(&mut self, now: Instant, rtt: Duration, interval: Duration, keep: usize) {
        match self.minima.back_mut() {
            Some((start, min)) if now < *start + interval => *min = (*min).min(rtt),
            _ => {
                self.minima.push_back((now, rtt));
                while self.minima.len() > keep.max(1) {
                    self.minima.pop_front();
                }
            }
        }
    }

    fn base(&self) -> Option<Duration> {
        self.minima.iter().map(|(_, m)| *m).min()
    }
}

#[derive(Clone, Debug, Default)]
struct PathState {
    enabled: bool,
    next_probe: Option<Instant>,
    recent: VecDeque<Duration>,
    base: BaseHistory,
    last_sample: Option<Instant>,
    samples: u64,
    timeout_is_congestion: bool,
}

/// The controller. See the module docs.
#[derive(Clone, Debug)]
pub struct Throttler {
    config: ThrottlerConfig,
    ceiling: Bitrate,
    cap: Bitrate,
    mode: Mode,
    reduced: bool,
    paths: BTreeMap<ProbePath, PathState>,
    outstanding: BTreeMap<u64, (ProbePath, Instant)>,
    next_seq: u64,
    last_over: Option<Instant>,
    last_decrease: Option<Instant>,
    last_increase: Option<Instant>,
    last_cut_from: Option<Bitrate>,
    over_at_zero_since: Option<Instant>,
    last_lower_layer: Option<Instant>,
    next_slowdown: Option<Instant>,
    usage_known: bool,
    sent_since_step: u64,
    outputs: VecDeque<ThrottleOutput>,
}

impl Throttler {
    /// A throttler protecting a relay cap of at most `ceiling` (the user's setting). The relay path
    /// is probed from `now`; the game server path is off until [`Self::enable_game_server`].
    pub fn new(now: Instant, config: ThrottlerConfig, ceiling: Bitrate) -> Self {
        let mut paths = BTreeMap::new();
        paths.insert(
            ProbePath::Relay,
            PathState {
                enabled: true,
                next_probe: Some(now),
                timeout_is_congestion: true,
                ..PathState::default()
            },
        );
        paths.insert(ProbePath::GameServer, PathState::default());
        Throttler {
            config,
            ceiling,
            cap: Bitrate::ZERO,
            mode: Mode::Warmup,
            reduced: false,
            paths,
            outstanding: BTreeMap::new(),
            next_seq: 0,
            last_over: None,
            last_decrease: None,
            last_increase: None,
            last_cut_from: None,
            over_at_zero_since: None,
            last_lower_layer: None,
            next_slowdown: None,
            usage_known: false,
            sent_since_step: 0,
            outputs: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &ThrottlerConfig {
        &self.config
    }

    /// The relay cap right now: never above the ceiling.
    pub fn relay_cap(&self) -> Bitrate {
        self.cap
    }

    pub fn ceiling(&self) -> Bitrate {
        self.ceiling
    }

    pub fn state(&self) -> ThrottleState {
        match self.mode {
            Mode::Warmup => ThrottleState::Warmup,
            Mode::Slowdown { .. } => ThrottleState::Slowdown,
            Mode::Running if self.reduced => ThrottleState::Reduced,
            Mode::Running => ThrottleState::Full,
        }
    }

    /// The user's setting changed. A lower ceiling applies at once; a higher one is approached
    /// through the normal increase steps.
    pub fn set_ceiling(&mut self, ceiling: Bitrate) {
        self.ceiling = ceiling;
        if let Mode::Slowdown { resume, .. } = &mut self.mode {
            *resume = (*resume).min(ceiling);
        }
        if self.cap > ceiling {
            self.set_cap(ceiling);
        } else if self.cap == Bitrate::ZERO && !self.reduced && matches!(self.mode, Mode::Running) {
            // Relaying was off and the user turned it on: start as after warm-up.
            self.set_cap(ceiling.scale(self.config.initial_fraction));
        }
        if self.cap == ceiling && self.reduced && matches!(self.mode, Mode::Running) {
            self.reduced = false;
            self.outputs
                .push_back(ThrottleOutput::Event(ThrottleEvent::RelayRestored {
                    cap: ceiling,
                }));
        }
    }

    pub fn set_target(&mut self, target: Duration) {
        self.config.target = target;
    }

    /// Start (or stop) probing the user's game server. Its timeouts are not congestion: many game
    /// servers simply do not answer probes.
    pub fn enable_game_server(&mut self, now: Instant, enabled: bool) {
        if let Some(p) = self.paths.get_mut(&ProbePath::GameServer) {
            *p = PathState {
                enabled,
                next_probe: enabled.then_some(now),
                ..PathState::default()
            };
        }
    }

    /// Queuing delay: the worst over fresh paths of (current - base).
    pub fn queuing_delay(&self, now: Instant) -> Option<Duration> {
        self.paths
            .values()
            .filter(|p| {
                p.enabled
                    && p.last_sample
                        .is_some_and(|t| now <= t + self.config.path_stale_after)
                    && p.recent.len() >= self.config.current_filter.clamp(1, 64)
            })
            .filter_map(|p| {
                let current = p.recent.iter().min()?;
                Some(current.saturating_sub(p.base.base()?))
            })
            .max()
    }

    pub fn base_rtt(&self, path: ProbePath) -> Option<Duration> {
        self.paths.get(&path)?.base.base()
    }

    /// The smallest of the latest samples on a path.
    pub fn current_rtt(&self, path: ProbePath) -> Option<Duration> {
        self.paths.get(&path)?.recent.iter().min().copied()
    }

    pub fn poll_output(&mut self) -> Option<ThrottleOutput> {
        self.outputs.pop_front()
    }

    /// When [`Self::handle_timeout`] must next be called (always `Some`: the relay path is
    /// probed for as long as the throttler lives).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut at = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        for p in self.paths.values() {
            if let Some(n) = p.next_probe {
                at(n);
            }
        }
        if let Some((_, (_, sent))) = self.outstanding.iter().next() {
            at(*sent + self.config.probe_timeout);
        }
        match self.mode {
            Mode::Slowdown { until, .. } => at(until),
            Mode::Running => {
                if let Some(n) = self.next_slowdown {
                    at(n);
                }
            }
            Mode::Warmup => {}
        }
        t
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        // Expire lost probes (the map is ordered by seq, and seqs are sent in time order).
        while let Some((&seq, &(path, sent))) = self.outstanding.iter().next() {
            if now < sent + self.config.probe_timeout {
                break;
            }
            self.outstanding.remove(&seq);
            if self
                .paths
                .get(&path)
                .is_some_and(|p| p.timeout_is_congestion)
            {
                self.record(now, path, self.config.probe_timeout);
            }
        }
        // Probes due.
        for path in PATHS {
            let interval = match path {
                ProbePath::Relay => self.config.probe_interval,
                ProbePath::GameServer => self.config.game_probe_interval,
            };
            let Some(p) = self.paths.get_mut(&path) else {
                continue;
            };
            if let Some(next) = p.next_probe
                && next <= now
            {
                // Skip missed slots instead of bursting probes after a stall.
                let mut n = next + interval;
                if n <= now {
                    n = now + interval;
                }
                p.next_probe = Some(n);
                let seq = self.next_seq;
                self.next_seq += 1;
                self.outstanding.insert(seq, (path, now));
                self.outputs.push_back(ThrottleOutput::Probe { path, seq });
            }
        }
        // Slowdowns.
        match self.mode {
            Mode::Running => {
                if let Some(at) = self.next_slowdown
                    && now >= at
                {
                    let rtt = self.current_rtt(ProbePath::Relay).unwrap_or_default();
                    let len = self.config.slowdown_min.max(rtt * 2);
                    let resume = self.cap;
                    self.mode = Mode::Slowdown {
                        started: now,
                        until: now + len,
                        resume,
                    };
                    self.set_cap(Bitrate::ZERO);
                }
            }
            Mode::Slowdown {
                started,
                until,
                resume,
            } if now >= until => {
                let len = until.saturating_duration_since(started);
                self.mode = Mode::Running;
                self.set_cap(resume.min(self.ceiling));
                let gap = self.config.slowdown_every.max(len * 9);
                self.next_slowdown = Some(now + gap);
            }
            _ => {}
        }
    }

    /// A reply to probe `seq` arrived. Unknown or expired seqs are ignored.
    pub fn on_probe_reply(&mut self, now: Instant, seq: u64) {
        if let Some((path, sent)) = self.outstanding.remove(&seq) {
            self.record(now, path, now.saturating_duration_since(sent));
        }
    }

    /// Relay bytes actually sent. Once this is called, the cap only grows while relaying uses at
    /// least `app_limited_below` of it.
    pub fn on_relay_sent(&mut self, bytes: u64) {
        self.usage_known = true;
        self.sent_since_step = self.sent_since_step.saturating_add(bytes);
    }

    /// An RTT measured elsewhere (e.g. WebRTC stats to the relay).
    pub fn on_rtt_sample(&mut self, now: Instant, path: ProbePath, rtt: Duration) {
        self.record(now, path, rtt);
    }

    fn record(&mut self, now: Instant, path: ProbePath, rtt: Duration) {
        let filter = self.config.current_filter.clamp(1, 64);
        let (interval, keep) = (self.config.base_interval, self.config.base_history);
        let Some(p) = self.paths.get_mut(&path) else {
            return;
        };
        if !p.enabled {
            return;
        }
        p.recent.push_back(rtt);
        while p.recent.len() > filter {
            p.recent.pop_front();
        }
        p.base.update(now, rtt, interval, keep);
        p.last_sample = Some(now);
        p.samples += 1;
        self.control(now);
    }

    fn control(&mut self, now: Instant) {
        let c = &self.config;
        match self.mode {
            Mode::Warmup => {
                if self.paths[&ProbePath::Relay].samples >= c.warmup_samples as u64 {
                    self.mode = Mode::Running;
                    self.next_slowdown = Some(now + c.slowdown_every);
                    self.last_increase = Some(now);
                    let start = self.ceiling.scale(c.initial_fraction);
                    self.set_cap(if start < c.min_rate {
                        self.ceiling
                    } else {
                        start
                    });
                    if self.ceiling > Bitrate::ZERO && self.cap < self.ceiling {
                        // Starting below the setting is not a "reduction" worth telling the user.
                        self.reduced = false;
                    }
                }
                return;
            }
            Mode::Slowdown { .. } | Mode::Running => {}
        }
        let Some(qd) = self.queuing_delay(now) else {
            return;
        };
        let target = c.target;
        if qd > target {
            self.last_over = Some(now);
            let may_cut = self.last_decrease.is_none_or(|t| now >= t + c.decrease_gap);
            if matches!(self.mode, Mode::Running) && self.cap > Bitrate::ZERO && may_cut {
                self.last_cut_from = Some(self.cap);
                let mut cap = self.cap.scale(c.decrease_factor);
                if cap < c.min_rate {
                    cap = Bitrate::ZERO;
                }
                self.last_decrease = Some(now);
                self.set_cap(cap);
                self.report_reduced(qd);
            }
            if self.cap > Bitrate::ZERO {
                self.over_at_zero_since = None;
            } else {
                let since = *self.over_at_zero_since.get_or_insert(now);
                let cooled = self
                    .last_lower_layer
                    .is_none_or(|t| now >= t + self.config.lower_layer_cooldown);
                if now >= since + self.config.lower_layer_after && cooled {
                    self.last_lower_layer = Some(now);
                    let ev = ThrottleEvent::LowerViewingLayer { queuing_delay: qd };
                    self.outputs.push_back(ThrottleOutput::Event(ev));
                }
            }
            return;
        }
        self.over_at_zero_since = None;
        let step_due = self
            .last_increase
            .is_none_or(|t| now >= t + c.increase_interval);
        if !matches!(self.mode, Mode::Running) || !step_due {
            return;
        }
        // Below the target there are three zones: ease off, hold, grow.
        if qd.as_secs_f64() > target.as_secs_f64() * c.ease_above {
            // A queue is forming: shave a little now rather than cut hard later.
            if self.cap > Bitrate::ZERO {
                self.last_increase = Some(now);
                self.last_cut_from = Some(self.cap);
                self.set_cap(self.cap.scale(c.ease_factor));
                if self.cap < self.ceiling.scale(REPORT_REDUCED_BELOW) {
                    self.report_reduced(qd);
                }
            }
            return;
        }
        let quiet = self.last_over.is_none_or(|t| now >= t + c.quiet_period);
        if !quiet
            || qd.as_secs_f64() > target.as_secs_f64() * c.grow_below
            || self.cap >= self.ceiling
        {
            return;
        }
        // Cap validation (as RFC 7661 does for cwnd): grow only a cap that is being used. A cap
        // raised while relaying idles would let the next burst meet a full-speed limiter.
        let since = self.last_increase.unwrap_or(now);
        let used = std::mem::take(&mut self.sent_since_step);
        self.last_increase = Some(now);
        if self.usage_known {
            let secs = now.saturating_duration_since(since).as_secs_f64();
            let rate = if secs > 0.0 {
                used as f64 * 8.0 / secs
            } else {
                0.0
            };
            if rate < self.cap.bps() as f64 * c.app_limited_below {
                return;
            }
        }
        let cap = self.cap;
        // Concave-convex growth around the rate of the last cut.
        let factor = match self.last_cut_from {
            Some(k) if cap < k.scale(0.85) => 1.06,
            Some(k) if cap.bps() as f64 <= k.bps() as f64 * 1.1 => 1.01,
            _ => 1.04,
        };
        let grown = Bitrate::from_bps((cap.bps() as f64 * factor) as u64);
        // An absolute floor on the step so recovery from zero does not take forever.
        // 1% of the last knee when there is one (a step relative to a far-too-generous ceiling
        // would overshoot a small link), but not less than 1% of a quarter of the ceiling, so that
        // recovering from a deep cut does not crawl.
        let knee = self.last_cut_from.unwrap_or(self.ceiling).min(self.ceiling);
        let floor_step = knee
            .max(self.ceiling.scale(0.25))
            .scale(0.01)
            .max(c.min_rate);
        let new = grown.max(cap + floor_step).min(self.ceiling);
        self.set_cap(new);
        if new == self.ceiling && self.reduced {
            self.reduced = false;
            let ev = ThrottleEvent::RelayRestored { cap: new };
            self.outputs.push_back(ThrottleOutput::Event(ev));
        }
    }

    fn report_reduced(&mut self, queuing_delay: Duration) {
        if !self.reduced {
            self.reduced = true;
            let ev = ThrottleEvent::RelayReduced {
                cap: self.cap,
                ceiling: self.ceiling,
                queuing_delay,
            };
            self.outputs.push_back(ThrottleOutput::Event(ev));
        }
    }

    fn set_cap(&mut self, cap: Bitrate) {
        let cap = cap.min(self.ceiling);
        if cap != self.cap {
            self.cap = cap;
            self.outputs
                .push_back(ThrottleOutput::Event(ThrottleEvent::CapChanged { cap }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Drives a throttler with a scripted RTT per path: `rtt(now, path)` is the reply delay, or
    /// `None` for a lost probe. Returns every event seen.
    struct Harness {
        t: Throttler,
        now: Instant,
        pending: Vec<(Instant, u64)>,
        events: Vec<(Instant, ThrottleEvent)>,
        probes: BTreeMap<ProbePath, u64>,
    }

    impl Harness {
        fn new(ceiling: Bitrate) -> Self {
            let now = Instant::now();
            Harness {
                t: Throttler::new(now, ThrottlerConfig::default(), ceiling),
                now,
                pending: Vec::new(),
                events: Vec::new(),
                probes: BTreeMap::new(),
            }
        }

        fn run(&mut self, dur: Duration, rtt: impl Fn(Instant, ProbePath) -> Option<Duration>) {
            let end = self.now + dur;
            loop {
                let next_reply = self.pending.iter().map(|p| p.0).min();
                let next = match (self.t.poll_timeout(), next_reply) {
                    (Some(a), Some(b)) => a.min(b),
                    (a, b) => a.or(b).expect("always a timeout"),
                };
                if next > end {
                    self.now = end;
                    break;
                }
                self.now = next.max(self.now);
                let now = self.now;
                let (due, rest): (Vec<_>, Vec<_>) =
                    self.pending.iter().partition(|(at, _)| *at <= now);
                self.pending = rest;
                for (_, seq) in due {
                    self.t.on_probe_reply(now, seq);
                }
                self.t.handle_timeout(now);
                while let Some(out) = self.t.poll_output() {
                    match out {
                        ThrottleOutput::Probe { path, seq } => {
                            *self.probes.entry(path).or_default() += 1;
                            if let Some(d) = rtt(now, path) {
                                self.pending.push((now + d, seq));
                            }
                        }
                        ThrottleOutput::Event(e) => self.events.push((now, e)),
                    }
                }
                assert!(self.t.relay_cap() <= self.t.ceiling());
            }
        }

        fn user_events(&self) -> Vec<&'static str> {
            self.events
                .iter()
                .filter_map(|(_, e)| e.user_message())
                .collect()
        }
    }

    #[test]
    fn warms_up_then_relays_and_grows_to_the_ceiling() {
        let mut h = Harness::new(Bitrate::from_mbps(4));
        h.run(ms(150), |_, _| Some(ms(30)));
        assert_eq!(h.t.state(), ThrottleState::Warmup);
        assert_eq!(h.t.relay_cap(), Bitrate::ZERO);
        h.run(ms(200), |_, _| Some(ms(30)));
        assert_eq!(h.t.state(), ThrottleState::Full);
        // Starts at half the setting (then grows).
        let cap = h.t.relay_cap();
        assert!(
            cap >= Bitrate::from_mbps(2) && cap < Bitrate::from_kbps(2_500),
            "{cap}"
        );
        assert_eq!(h.t.base_rtt(ProbePath::Relay), Some(ms(30)));
        h.run(ms(3_000), |_, _| Some(ms(30)));
        assert_eq!(h.t.relay_cap(), Bitrate::from_mbps(4));
        // Starting below the setting and growing is not news for the user.
        assert!(h.user_events().is_empty());
    }

    #[test]
    fn cuts_on_queuing_delay_and_restores_after_quiet() {
        let mut h = Harness::new(Bitrate::from_mbps(4));
        h.run(ms(4_000), |_, _| Some(ms(30)));
        assert_eq!(h.t.relay_cap(), Bitrate::from_mbps(4));
        let before = h.events.len();
        // A queue of 40 ms for one second.
        h.run(ms(1_000), |_, _| Some(ms(70)));
        assert_eq!(h.t.state(), ThrottleState::Reduced);
        let cap = h.t.relay_cap();
        assert!(cap < Bitrate::from_mbps(2), "{cap}");
        let cuts: Vec<_> = h.events[before..]
            .iter()
            .filter(|(_, e)| matches!(e, ThrottleEvent::CapChanged { .. }))
            .map(|(t, _)| *t)
            .collect();
        // Cuts are spaced by the decrease gap and each is a multiplicative step.
        assert!(cuts.windows(2).all(|w| w[1] - w[0] >= ms(200)));
        assert_eq!(
            h.user_events(),
            ["Reduced relay to protect your connection"]
        );
        // The queue is gone (replies to probes already in flight still show it for one RTT, and
        // may cut once more): nothing rises during the quiet period...
        h.run(ms(150), |_, _| Some(ms(30)));
        let cap = h.t.relay_cap();
        h.run(ms(300), |_, _| Some(ms(30)));
        assert_eq!(h.t.relay_cap(), cap);
        // ... then it grows back to the setting, and the user is told once.
        h.run(ms(10_000), |_, _| Some(ms(30)));
        assert_eq!(h.t.relay_cap(), Bitrate::from_mbps(4));
        assert_eq!(
            h.user_events(),
            ["Reduced relay to protect your connection", "Relay restored"]
        );
        assert_eq!(h.t.state(), ThrottleState::Full);
    }

    #[test]
    fn spikes_shorter_than_the_filter_are_ignored() {
        let mut h = Harness::new(Bitrate::from_mbps(4));
        h.run(ms(4_000), |_, _| Some(ms(30)));
        // Every 4th probe is delayed by 80 ms: jitter, not a queue (the min of three hides it).
        let t0 = h.now;
        h.run(ms(3_000), move |now, _| {
            let slot = (now - t0).as_millis() / 50;
            Some(if slot.is_multiple_of(4) {
                ms(110)
            } else {
                ms(30)
            })
        });
        assert!(h.user_events().is_empty(), "{:?}", h.events);
    }

    #[test]
    fn zero_relay_not_enough_asks_for_a_lower_layer() {
        let mut h = Harness::new(Bitrate::from_mbps(4));
        h.run(ms(2_000), |_, _| Some(ms(30)));
        h.run(ms(10_000), |_, _| Some(ms(90)));
        assert_eq!(h.t.relay_cap(), Bitrate::ZERO);
        let lowers: Vec<_> = h
            .events
            .iter()
            .filter(|(_, e)| matches!(e, ThrottleEvent::LowerViewingLayer { .. }))
            .collect();
        // Once, and only after zero relay was given two seconds to help.
        assert_eq!(lowers.len(), 1);
        // Cooldown passes: asked again.
        h.run(ms(15_000), |_, _| Some(ms(90)));
        let n = h
            .events
            .iter()
            .filter(|(_, e)| matches!(e, ThrottleEvent::LowerViewingLayer { .. }))
            .count();
        assert_eq!(n, 2);
    }

    #[test]
    fn lost_relay_probes_are_congestion_lost_game_probes_are_not() {
        let mut h = Harness::new(Bitrate::from_mbps(4));
        let now = h.now;
        h.t.enable_game_server(now, true);
        h.run(ms(4_000), |_, p| (p == ProbePath::Relay).then_some(ms(20)));
        // 4 s at one probe per 250 ms.
        assert!(
            (15..=17).contains(&h.probes[&ProbePath::GameServer]),
            "{:?}",
            h.probes
        );
        assert_eq!(
            h.t.relay_cap(),
            Bitrate::from_mbps(4),
            "silent game server is not congestion"
        );
        h.run(ms(2_000), |_, p| {
            (p == ProbePath::GameServer).then_some(ms(20))
        });
        assert!(
            h.t.relay_cap() < Bitrate::from_mbps(4),
            "lost relay probes must cut"
        );
    }

    #[test]
    fn the_worst_path_decides() {
        let mut h = Harness::new(Bitrate::from_mbps(4));
        let now = h.now;
        h.t.enable_game_server(now, true);
        h.run(ms(4_000), |_, p| {
            Some(if p == ProbePath::Relay {
                ms(20)
            } else {
                ms(50)
            })
        });
        assert_eq!(h.t.relay_cap(), Bitrate::from_mbps(4));
        // The game path queues (e.g. a busier wifi segment), the relay path does not.
        h.run(ms(1_000), |_, p| {
            Some(if p == ProbePath::Relay {
                ms(20)
            } else {
                ms(80)
            })
        });
        assert!(h.t.relay_cap() < Bitrate::from_mbps(4));
        assert_eq!(h.t.queuing_delay(h.now), Some(ms(30)));
    }

    #[test]
    fn periodic_slowdown_pauses_relay_and_base_follows_route_changes() {
        let mut h = Harness::new(Bitrate::from_mbps(4));
        h.run(ms(14_000), |_, _| Some(ms(30)));
        assert_eq!(h.t.relay_cap(), Bitrate::from_mbps(4));
        h.run(ms(2_000), |_, _| Some(ms(30)));
        let pauses: Vec<_> = h
            .events
            .iter()
            .filter(|(_, e)| *e == ThrottleEvent::CapChanged { cap: Bitrate::ZERO })
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(pauses.len(), 1, "one slowdown in the first 16 s");
        let resumed = h
            .events
            .iter()
            .find(|(t, e)| *t > pauses[0] && matches!(e, ThrottleEvent::CapChanged { .. }))
            .map(|(t, _)| *t)
            .expect("resumed");
        assert!(resumed - pauses[0] >= ms(150) && resumed - pauses[0] < ms(250));
        assert!(h.user_events().is_empty(), "a slowdown is not a reduction");
        // The route gets 40 ms longer for good: the relay cap suffers while the old base is
        // remembered, then the base history forgets it (6 x 10 s) and relaying recovers.
        h.run(ms(75_000), |_, _| Some(ms(70)));
        assert_eq!(h.t.base_rtt(ProbePath::Relay), Some(ms(70)));
        h.run(ms(10_000), |_, _| Some(ms(70)));
        assert_eq!(h.t.relay_cap(), Bitrate::from_mbps(4));
    }

    #[test]
    fn an_unused_cap_does_not_grow() {
        let mut h = Harness::new(Bitrate::from_mbps(4));
        h.t.on_relay_sent(0);
        h.run(ms(500), |_, _| Some(ms(30)));
        let start = h.t.relay_cap();
        assert_eq!(start, Bitrate::from_mbps(2));
        // Relaying idles (a trickle of 100 kbps): the cap stays where it was.
        for _ in 0..30 {
            h.t.on_relay_sent(1_250);
            h.run(ms(100), |_, _| Some(ms(30)));
        }
        assert_eq!(h.t.relay_cap(), start);
        // Relaying uses the cap: it grows again.
        for _ in 0..40 {
            let cap = h.t.relay_cap();
            h.t.on_relay_sent(cap.bytes_per_sec() / 10);
            h.run(ms(100), |_, _| Some(ms(30)));
        }
        assert_eq!(h.t.relay_cap(), Bitrate::from_mbps(4));
    }

    #[test]
    fn lowering_the_ceiling_applies_at_once() {
        let mut h = Harness::new(Bitrate::from_mbps(4));
        h.run(ms(4_000), |_, _| Some(ms(30)));
        h.t.set_ceiling(Bitrate::from_mbps(1));
        assert_eq!(h.t.relay_cap(), Bitrate::from_mbps(1));
        h.t.set_ceiling(Bitrate::ZERO);
        assert_eq!(h.t.relay_cap(), Bitrate::ZERO);
        h.run(ms(2_000), |_, _| Some(ms(30)));
        assert_eq!(h.t.relay_cap(), Bitrate::ZERO);
        h.t.set_ceiling(Bitrate::from_mbps(2));
        h.run(ms(3_000), |_, _| Some(ms(30)));
        assert_eq!(h.t.relay_cap(), Bitrate::from_mbps(2));
    }
}
