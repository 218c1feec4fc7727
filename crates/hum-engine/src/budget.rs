//! The bandwidth budget at runtime: binds hum-budget's sans-IO pieces (settings, limiter, RTT
//! throttler, probe policy, other-apps estimator) to real time, sockets and the OS.
//!
//! - [`BudgetService::spawn`] starts a driver task; the returned handle is cheap to clone.
//! - The app reads [`BudgetService::effective`] for the panel, changes settings with
//!   [`BudgetService::set_settings`], runs [`BudgetService::run_bandwidth_test`], and listens to
//!   [`BudgetService::subscribe`] for [`BudgetEvent`]s ("Reduced relay to protect your
//!   connection", ...).
//! - A livestream viewer's serve queue spends [`BudgetService::relay_budget`] (the limiter's relay
//!   class); [`BudgetService::relay_admit`] waits for room for any other relay upload; own media
//!   is reported with [`BudgetService::own_sent`].
//! - RTT probes go through an [`RttProber`]: UDP echo ([`UdpEchoProber`]) or TCP connect time
//!   ([`TcpConnectProber`], which works against any game server with a TCP port: a SYN-ACK or a
//!   RST both take one round trip through the same uplink queue).
//! - The bandwidth test talks to the relay's `GET /probe` WebSocket ([`run_probe`]).
//! - Other apps' upload and the game list are sampled with sysinfo ([`SystemSampler`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{FutureExt, SinkExt, StreamExt};
/// The settings model and the sans-IO pieces, re-exported so the app needs only hum-engine.
pub use hum_budget as model;
use hum_budget::{
    Admit, BandwidthSettings, EffectiveBudget, LimiterConfig, LimiterStats, MeasuredUpload,
    Measurements, OtherAppsConfig, OtherAppsEstimator, ProbeConfig, ProbeDecision, ProbeError,
    ProbeKind, ProbePath, ProbeScheduler, ProbeStep, ProbeUpload, SettingsError, ThrottleEvent,
    ThrottleOutput, Throttler, ThrottlerConfig, UploadLimiter,
};
use hum_proto::Bitrate;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_tungstenite::tungstenite::Message;

/// Own media this process has handed to the network, in bytes on the wire (see
/// [`count_own_media`]). One meter per process, as the upload is: every bandwidth service charges
/// what was sent after it started to its limiter's total bucket.
static OWN_MEDIA: AtomicU64 = AtomicU64::new(0);

/// RTP/SRTP/UDP/IP bytes around a packet's payload (IPv4 20 + UDP 8 + RTP 12 + header extensions
/// ~8 + SRTP tag 10), and the payload a packet carries at most.
const PACKET_OVERHEAD: u64 = 58;
const PACKET_PAYLOAD: u64 = 1_200;

/// Count own media sent (a voice or video sample handed to its RTP track, a stream chunk to the
/// root): the payload plus an estimate of the packets' headers. Cheap (one atomic add); the
/// bandwidth service reads it before each relay decision, so relaying gets only what own
/// sending leaves of the total upload.
pub fn count_own_media(payload: usize) {
    let payload = payload as u64;
    let wire = payload + payload.div_ceil(PACKET_PAYLOAD).max(1) * PACKET_OVERHEAD;
    OWN_MEDIA.fetch_add(wire, Ordering::Relaxed);
}

/// Something the app should show or act on.
#[derive(Clone, Debug, PartialEq)]
pub enum BudgetEvent {
    /// The panel's numbers changed (settings, a measurement, a game started or stopped).
    Effective(EffectiveBudget),
    /// The throttler moved the relay cap.
    RelayCap { cap: Bitrate },
    /// "Reduced relay to protect your connection".
    RelayReduced {
        cap: Bitrate,
        queuing_delay: Duration,
        message: String,
    },
    /// "Relay restored".
    RelayRestored { cap: Bitrate, message: String },
    /// Even zero relay is not enough: the app should lower its own viewing layer.
    LowerViewingLayer {
        queuing_delay: Duration,
        message: String,
    },
    /// A bandwidth test finished and its result is now the stored total.
    BandwidthMeasured(MeasuredUpload),
    /// A bandwidth test failed (a user-facing message).
    BandwidthTestFailed(String),
    /// A listed game started (`Some(name)`) or stopped (`None`).
    GameRunning(Option<String>),
}

/// See [`BudgetService::relay_budget`].
#[derive(Clone)]
pub struct RelayBudget {
    service: BudgetService,
    origin: Instant,
}

impl std::fmt::Debug for RelayBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.service.lock();
        f.debug_struct("RelayBudget")
            .field("relay_rate", &inner.limiter.relay_rate())
            .field("total_rate", &inner.limiter.total_rate())
            .finish()
    }
}

impl RelayBudget {
    fn instant(&self, t: hum_mesh::Time) -> Instant {
        self.origin + t.offset()
    }
}

impl hum_mesh::serve::UploadBudget for RelayBudget {
    fn refill(&mut self, now: hum_mesh::Time) {
        let now = self.instant(now);
        let mut inner = self.service.lock();
        inner.absorb_own_media(now);
        inner.limiter.refill(now);
    }
    fn holds(&self, bytes: u64) -> bool {
        self.service.lock().limiter.relay_holds(bytes)
    }
    fn charge(&mut self, bytes: u64) {
        let mut inner = self.service.lock();
        inner.limiter.relay_charge(bytes);
        inner.throttler.on_relay_sent(bytes);
    }
    fn holds_at(&self, bytes: u64) -> Option<hum_mesh::Time> {
        let at = self.service.lock().limiter.relay_holds_at(bytes)?;
        Some(hum_mesh::Time::from_offset(
            at.saturating_duration_since(self.origin),
        ))
    }
    fn wait_for(&self, bytes: u64) -> Option<Duration> {
        self.service.lock().limiter.relay_wait_for(bytes)
    }
    fn burst_bytes(&self) -> u64 {
        self.service.lock().limiter.relay_burst_bytes()
    }
    /// The service owns the rate (settings and throttler): a queue's own idea of it is ignored.
    fn set_rate(&mut self, _rate: Bitrate, _now: hum_mesh::Time) {}
    fn clone_box(&self) -> Box<dyn hum_mesh::serve::UploadBudget> {
        Box::new(self.clone())
    }
}

/// Measures one round trip. Implementations must not hold locks across the await.
pub trait RttProber: Send + Sync + 'static {
    fn probe(
        &self,
        seq: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Duration>> + Send + '_>>;
}

/// RTT to a UDP echo service (each probe is 8 bytes: the sequence number).
pub struct UdpEchoProber {
    socket: tokio::net::UdpSocket,
    timeout: Duration,
}

impl UdpEchoProber {
    pub async fn connect(target: SocketAddr, timeout: Duration) -> std::io::Result<Self> {
        let bind: SocketAddr = if target.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let socket = tokio::net::UdpSocket::bind(bind).await?;
        socket.connect(target).await?;
        Ok(UdpEchoProber { socket, timeout })
    }
}

impl RttProber for UdpEchoProber {
    fn probe(
        &self,
        seq: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Duration>> + Send + '_>>
    {
        Box::pin(async move {
            let start = Instant::now();
            self.socket.send(&seq.to_le_bytes()).await?;
            let mut buf = [0u8; 64];
            let deadline = tokio::time::Instant::now() + self.timeout;
            loop {
                let n = tokio::time::timeout_at(deadline, self.socket.recv(&mut buf))
                    .await
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no echo"))??;
                // Replies to older, timed-out probes may still arrive: match the sequence number.
                if n >= 8 && buf[..8] == seq.to_le_bytes() {
                    return Ok(start.elapsed());
                }
            }
        })
    }
}

/// RTT as TCP connect time to `host:port` (connection refused counts too: the RST came back).
pub struct TcpConnectProber {
    target: SocketAddr,
    timeout: Duration,
}

impl TcpConnectProber {
    pub fn new(target: SocketAddr, timeout: Duration) -> Self {
        TcpConnectProber { target, timeout }
    }
}

impl RttProber for TcpConnectProber {
    fn probe(
        &self,
        _seq: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Duration>> + Send + '_>>
    {
        Box::pin(async move {
            let start = Instant::now();
            match tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(self.target))
                .await
            {
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer",
                )),
                Ok(Ok(_stream)) => Ok(start.elapsed()),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    Ok(start.elapsed())
                }
                Ok(Err(e)) => Err(e),
            }
        })
    }
}

/// RTT to the relay over the signalling connection (`ping` / `pong`): no extra socket at the relay.
/// Each probe is one request against the connection's rate limit (50/s by default), so pair it
/// with a `probe_interval` of 100 ms or more (see [`RelayPingProber::THROTTLER_INTERVAL`]).
pub struct RelayPingProber {
    client: crate::relay::RelayClient,
    timeout: Duration,
}

impl RelayPingProber {
    /// The probe interval to configure the throttler with when this prober is used.
    pub const THROTTLER_INTERVAL: Duration = Duration::from_millis(100);

    pub fn new(client: crate::relay::RelayClient, timeout: Duration) -> Self {
        RelayPingProber { client, timeout }
    }
}

impl RttProber for RelayPingProber {
    fn probe(
        &self,
        _seq: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Duration>> + Send + '_>>
    {
        Box::pin(async move {
            let start = Instant::now();
            match tokio::time::timeout(self.timeout, self.client.ping()).await {
                Ok(Ok(())) => Ok(start.elapsed()),
                Ok(Err(e)) => Err(std::io::Error::other(e.to_string())),
                Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no pong")),
            }
        })
    }
}

/// A TCP-connect prober for the game server named in the settings, if one is set and resolves.
/// (The service is wired at spawn; a changed game server takes effect on the next spawn.)
pub async fn game_server_prober(settings: &BandwidthSettings) -> Option<TcpConnectProber> {
    let (host, port) = settings.game_server()?;
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .ok()?
        .next()?;
    Some(TcpConnectProber::new(addr, Duration::from_secs(1)))
}

/// How the service is set up.
pub struct BudgetConfig {
    pub settings: BandwidthSettings,
    /// `ws://host:port/probe` (or `wss://`) of the relay's bandwidth test; `None` disables tests.
    pub probe_url: Option<String>,
    /// RTT to the relay. Without one the throttler cannot see queues and relaying stays at zero.
    pub relay_prober: Option<Arc<dyn RttProber>>,
    /// RTT to the user's game server (for example a [`TcpConnectProber`] built from the settings).
    pub game_prober: Option<Arc<dyn RttProber>>,
    pub throttler: ThrottlerConfig,
    pub limiter: LimiterConfig,
    pub probe: ProbeConfig,
    /// How often interface counters and the process list are sampled (`None`: never, e.g. tests).
    pub system_sample_every: Option<Duration>,
    /// Run the bandwidth test by itself when the policy says one is due.
    pub auto_probe: bool,
}

impl BudgetConfig {
    pub fn new(settings: BandwidthSettings) -> Self {
        let throttler =
            ThrottlerConfig::with_target_ms(settings.protection.queuing_delay_target_ms);
        BudgetConfig {
            settings,
            probe_url: None,
            relay_prober: None,
            game_prober: None,
            throttler,
            limiter: LimiterConfig::default(),
            probe: ProbeConfig::default(),
            system_sample_every: Some(Duration::from_secs(2)),
            auto_probe: false,
        }
    }
}

struct Inner {
    settings: BandwidthSettings,
    measurements: Measurements,
    effective: EffectiveBudget,
    limiter: UploadLimiter,
    throttler: Throttler,
    other_apps: OtherAppsEstimator,
    probes: ProbeScheduler,
    game: Option<String>,
    probe_running: bool,
    /// Bytes Hum sent that the limiter did not see (bandwidth tests, probes).
    extra_sent: u64,
    /// [`OWN_MEDIA`] as far as it has been charged to the limiter.
    own_seen: u64,
}

impl Inner {
    /// Charge own media counted since the last look to the limiter (own sending first).
    fn absorb_own_media(&mut self, now: Instant) {
        let total = OWN_MEDIA.load(Ordering::Relaxed);
        let new = total.saturating_sub(self.own_seen);
        if new > 0 {
            self.limiter.on_own_sent(now, new);
            self.own_seen = total;
        }
    }

    fn recompute(&mut self, now: Instant) -> EffectiveBudget {
        self.effective = self.settings.effective(&self.measurements);
        self.throttler.set_ceiling(self.effective.relay);
        self.apply_rates(now);
        self.effective.clone()
    }

    fn apply_rates(&mut self, now: Instant) {
        // Until the total is known, own sending is not limited and relaying waits.
        let total = match self.effective.total_source {
            hum_budget::TotalSource::NotMeasured => None,
            _ => Some(self.effective.available),
        };
        self.limiter
            .set_rates(now, total, self.throttler.relay_cap());
    }
}

/// The running budget. Clone freely.
#[derive(Clone)]
pub struct BudgetService {
    inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<BudgetEvent>,
    wake_driver: Arc<Notify>,
    cap_changed: Arc<Notify>,
    probe_url: Option<String>,
    probe_config: ProbeConfig,
    stop: Arc<Notify>,
}

impl std::fmt::Debug for BudgetService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetService")
            .field("relay_cap", &self.relay_cap())
            .finish()
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl BudgetService {
    /// Starts the driver task on the current tokio runtime.
    pub fn spawn(config: BudgetConfig) -> BudgetService {
        let now = Instant::now();
        let effective = config.settings.effective(&Measurements::default());
        let mut throttler = Throttler::new(now, config.throttler.clone(), effective.relay);
        if config.game_prober.is_some() {
            throttler.enable_game_server(now, true);
        }
        let limiter = UploadLimiter::new(now, config.limiter, None, Bitrate::ZERO);
        let probes = ProbeScheduler::new(config.probe.clone(), config.settings.last_probe);
        let mut inner = Inner {
            settings: config.settings,
            measurements: Measurements::default(),
            effective,
            limiter,
            throttler,
            other_apps: OtherAppsEstimator::new(OtherAppsConfig::default()),
            probes,
            game: None,
            probe_running: false,
            extra_sent: 0,
            own_seen: OWN_MEDIA.load(Ordering::Relaxed),
        };
        inner.recompute(now);
        let (events, _) = broadcast::channel(256);
        let service = BudgetService {
            inner: Arc::new(Mutex::new(inner)),
            events,
            wake_driver: Arc::new(Notify::new()),
            cap_changed: Arc::new(Notify::new()),
            probe_url: config.probe_url,
            probe_config: config.probe,
            stop: Arc::new(Notify::new()),
        };
        tokio::spawn(service.clone().drive(
            config.relay_prober,
            config.game_prober,
            config.system_sample_every,
            config.auto_probe,
        ));
        service
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<BudgetEvent> {
        self.events.subscribe()
    }

    /// The numbers the bandwidth panel shows.
    pub fn effective(&self) -> EffectiveBudget {
        self.lock().effective.clone()
    }

    pub fn settings(&self) -> BandwidthSettings {
        self.lock().settings.clone()
    }

    /// What the service measured (other apps' upload, a listed game running): the app previews
    /// settings being edited with these, so the panel shows the numbers the service would enforce.
    pub fn measurements(&self) -> Measurements {
        self.lock().measurements
    }

    /// The relay cap right now (the user's setting, less what the throttler took off).
    pub fn relay_cap(&self) -> Bitrate {
        self.lock().throttler.relay_cap()
    }

    /// What to offer a livestream's tracker as this client's relay upload: the settings' relay
    /// share, or the throttler's cap while it holds relaying below the setting to protect the
    /// connection (`Reduced`). Its warm-up, start-up ramp and periodic slowdowns are not
    /// reductions: the limiter paces what leaves meanwhile, and a tracker told half the setting
    /// leaves viewers without upstreams (a peer offering less than the stream rate relays
    /// nothing).
    pub fn relay_offer(&self) -> Bitrate {
        let inner = self.lock();
        let setting = inner.effective.relay;
        match inner.throttler.state() {
            hum_budget::ThrottleState::Reduced => setting.min(inner.throttler.relay_cap()),
            _ => setting,
        }
    }

    /// What the upload limiter has let through so far: own and relayed bytes, and how many relay
    /// sends had to wait for tokens.
    pub fn limiter_stats(&self) -> LimiterStats {
        let mut inner = self.lock();
        inner.absorb_own_media(Instant::now());
        inner.limiter.stats()
    }

    /// Validate and apply new settings. On error nothing changes.
    pub fn set_settings(
        &self,
        mut settings: BandwidthSettings,
    ) -> Result<EffectiveBudget, SettingsError> {
        settings.validate()?;
        let eff = {
            let mut inner = self.lock();
            // The stored probe result belongs to the service, not to the panel's copy.
            settings.last_probe = inner.settings.last_probe.or(settings.last_probe);
            let target = Duration::from_millis(settings.protection.queuing_delay_target_ms as u64);
            inner.throttler.set_target(target);
            inner.settings = settings;
            inner.recompute(Instant::now())
        };
        self.cap_changed.notify_waiters();
        let _ = self.events.send(BudgetEvent::Effective(eff.clone()));
        Ok(eff)
    }

    /// Account Hum's own sending (voice, own video). Never waits.
    pub fn own_sent(&self, bytes: u64) {
        self.lock().limiter.on_own_sent(Instant::now(), bytes);
    }

    /// Wait until `bytes` of relay upload fit in the budget; they are charged when this returns.
    pub async fn relay_admit(&self, bytes: u64) {
        loop {
            let notified = self.cap_changed.notified();
            let admit = {
                let mut inner = self.lock();
                let now = Instant::now();
                inner.absorb_own_media(now);
                let admit = inner.limiter.try_relay(now, bytes);
                if admit == Admit::Now {
                    inner.throttler.on_relay_sent(bytes);
                }
                admit
            };
            match admit {
                Admit::Now => return,
                Admit::At(t) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(t.into()) => {}
                        _ = notified => {}
                    }
                }
                Admit::Blocked => notified.await,
            }
        }
    }

    /// The relay class as a livestream serve queue's budget: a viewer relaying chunks spends from
    /// this service's limiter (the one bucket for everything the client sends, own media first;
    /// the relay cap follows the settings and the throttler). `origin` is the instant the mesh's
    /// clock (`hum_mesh::Time`) counts from.
    pub fn relay_budget(&self, origin: Instant) -> RelayBudget {
        RelayBudget {
            service: self.clone(),
            origin,
        }
    }

    /// Run a bandwidth test now against the relay's `/probe` and store the result.
    pub async fn run_bandwidth_test(&self, kind: ProbeKind) -> Result<MeasuredUpload, ProbeError> {
        let url = self
            .probe_url
            .clone()
            .ok_or_else(|| ProbeError::Connection("no relay is configured for the test".into()))?;
        {
            let mut inner = self.lock();
            if inner.probe_running {
                return Err(ProbeError::Connection(
                    "a bandwidth test is already running".into(),
                ));
            }
            inner.probe_running = true;
        }
        let result = run_probe(&url, &self.probe_config, kind).await;
        let now_ms = unix_ms();
        let mut inner = self.lock();
        inner.probe_running = false;
        if let Ok((_, sent)) = &result {
            inner.extra_sent += sent;
        }
        let outcome = result.map(|(m, _)| m);
        let stored = inner.probes.on_result(now_ms, kind, outcome.clone());
        match &outcome {
            Ok(_) => {
                if let Some(m) = stored {
                    inner.settings.last_probe = Some(m);
                    let _ = self.events.send(BudgetEvent::BandwidthMeasured(m));
                    let eff = inner.recompute(Instant::now());
                    let _ = self.events.send(BudgetEvent::Effective(eff));
                }
            }
            Err(e) => {
                let _ = self
                    .events
                    .send(BudgetEvent::BandwidthTestFailed(e.to_string()));
            }
        }
        drop(inner);
        self.cap_changed.notify_waiters();
        outcome
    }

    /// Stop the driver task (probing and sampling end; the handle keeps answering).
    pub fn shutdown(&self) {
        self.stop.notify_one();
    }

    fn emit_throttle(&self, outputs: Vec<ThrottleOutput>) -> Vec<(ProbePath, u64)> {
        let mut probes = Vec::new();
        let mut cap_moved = false;
        for out in outputs {
            match out {
                ThrottleOutput::Probe { path, seq } => probes.push((path, seq)),
                ThrottleOutput::Event(ev) => {
                    let msg = ev.user_message().unwrap_or_default().to_string();
                    let event = match ev {
                        ThrottleEvent::CapChanged { cap } => {
                            cap_moved = true;
                            BudgetEvent::RelayCap { cap }
                        }
                        ThrottleEvent::RelayReduced {
                            cap, queuing_delay, ..
                        } => BudgetEvent::RelayReduced {
                            cap,
                            queuing_delay,
                            message: msg,
                        },
                        ThrottleEvent::RelayRestored { cap } => {
                            BudgetEvent::RelayRestored { cap, message: msg }
                        }
                        ThrottleEvent::LowerViewingLayer { queuing_delay } => {
                            BudgetEvent::LowerViewingLayer {
                                queuing_delay,
                                message: msg,
                            }
                        }
                    };
                    let _ = self.events.send(event);
                }
            }
        }
        if cap_moved {
            self.cap_changed.notify_waiters();
        }
        probes
    }

    async fn drive(
        self,
        relay_prober: Option<Arc<dyn RttProber>>,
        game_prober: Option<Arc<dyn RttProber>>,
        sample_every: Option<Duration>,
        auto_probe: bool,
    ) {
        let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<(u64, Instant)>();
        let mut sampler = sample_every.map(|_| SystemSampler::new());
        let mut next_sample = tokio::time::Instant::now();
        loop {
            // Timers and probes.
            let (outputs, deadline) = {
                let mut inner = self.lock();
                let now = Instant::now();
                if inner.throttler.poll_timeout().is_some_and(|t| t <= now) {
                    inner.throttler.handle_timeout(now);
                }
                let mut outs = Vec::new();
                while let Some(o) = inner.throttler.poll_output() {
                    outs.push(o);
                }
                if outs
                    .iter()
                    .any(|o| matches!(o, ThrottleOutput::Event(ThrottleEvent::CapChanged { .. })))
                {
                    inner.apply_rates(now);
                }
                (outs, inner.throttler.poll_timeout())
            };
            for (path, seq) in self.emit_throttle(outputs) {
                let prober = match path {
                    ProbePath::Relay => relay_prober.clone(),
                    ProbePath::GameServer => game_prober.clone(),
                };
                if let Some(p) = prober {
                    let tx = reply_tx.clone();
                    tokio::spawn(async move {
                        // The throttler times the probe from its own send instant; a failed probe
                        // is left to its timeout (congestion on the relay path, ignored on the
                        // game path).
                        if p.probe(seq).await.is_ok() {
                            let _ = tx.send((seq, Instant::now()));
                        }
                    });
                }
            }
            // System sampling and the probe policy.
            if let (Some(every), Some(s)) = (sample_every, sampler.as_mut())
                && tokio::time::Instant::now() >= next_sample
            {
                next_sample += every;
                self.apply_system_sample(Instant::now(), &s.sample());
                if auto_probe && self.probe_url.is_some() {
                    let decision = {
                        let inner = self.lock();
                        if inner.probe_running {
                            None
                        } else {
                            Some(inner.probes.decide(unix_ms(), inner.game.is_some()))
                        }
                    };
                    if let Some(ProbeDecision::RunNow(kind)) = decision {
                        let me = self.clone();
                        tokio::spawn(async move {
                            let _ = me.run_bandwidth_test(kind).await;
                        });
                    }
                }
            }
            let mut wake = deadline.map_or_else(
                || tokio::time::Instant::now() + Duration::from_millis(100),
                tokio::time::Instant::from_std,
            );
            if sample_every.is_some() {
                wake = wake.min(next_sample);
            }
            tokio::select! {
                _ = self.stop.notified() => return,
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.wake_driver.notified() => {}
                Some((seq, at)) = reply_rx.recv() => {
                    let mut inner = self.lock();
                    inner.throttler.on_probe_reply(at, seq);
                }
            }
        }
    }

    /// Feed one reading of the machine (the driver does this every `system_sample_every` with
    /// [`SystemSampler`]; an app with its own source may call it directly).
    pub fn apply_system_sample(&self, now: Instant, sample: &SystemSample) {
        let mut inner = self.lock();
        inner.absorb_own_media(now);
        let stats = inner.limiter.stats();
        let hum_tx = stats.own_bytes + stats.relay_bytes + inner.extra_sent;
        let mut changed = false;
        if let Some(tx) = sample.iface_tx {
            let before = inner.measurements.other_apps_upload;
            inner.measurements.other_apps_upload = inner.other_apps.on_sample(now, tx, hum_tx);
            changed |= before != inner.measurements.other_apps_upload;
        }
        let listed = inner.settings.protection.game_processes.clone();
        let game = hum_budget::running_game(&listed, sample.processes.iter().map(String::as_str));
        if game != inner.game {
            inner.game = game.clone();
            inner.measurements.game_running = game.is_some();
            let _ = self.events.send(BudgetEvent::GameRunning(game));
            changed = true;
        }
        if changed {
            let eff = inner.recompute(now);
            let _ = self.events.send(BudgetEvent::Effective(eff));
        }
    }
}

/// One reading of the machine: the busiest interface's transmitted bytes and the process names.
#[derive(Clone, Debug, Default)]
pub struct SystemSample {
    pub iface: Option<String>,
    pub iface_tx: Option<u64>,
    pub processes: Vec<String>,
}

/// Reads interface counters and process names with sysinfo.
pub struct SystemSampler {
    networks: sysinfo::Networks,
    system: sysinfo::System,
    active: Option<String>,
}

impl Default for SystemSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl SystemSampler {
    pub fn new() -> Self {
        SystemSampler {
            networks: sysinfo::Networks::new_with_refreshed_list(),
            system: sysinfo::System::new(),
            active: None,
        }
    }

    /// Interfaces that never carry the user's internet traffic themselves.
    fn ignored(name: &str) -> bool {
        name == "lo"
            || [
                "veth", "docker", "br-", "virbr", "vnet", "cni", "flannel", "lxc",
            ]
            .iter()
            .any(|p| name.starts_with(p))
    }

    pub fn sample(&mut self) -> SystemSample {
        self.networks.refresh(true);
        // The active interface: the one that moved the most bytes since the last refresh (sticky
        // unless another moves clearly more, so the counter does not jump between interfaces).
        let mut best: Option<(&str, u64)> = None;
        for (name, data) in self.networks.iter() {
            if Self::ignored(name) {
                continue;
            }
            let moved = data.transmitted() + data.received();
            if best.is_none_or(|(_, b)| moved > b) {
                best = Some((name.as_str(), moved));
            }
        }
        let current = self.active.as_deref().and_then(|a| {
            self.networks
                .iter()
                .find(|(n, _)| n.as_str() == a)
                .map(|(n, d)| (n.as_str(), d.transmitted() + d.received()))
        });
        let pick = match (current, best) {
            (Some(c), Some(b)) if b.1 > c.1.saturating_mul(2) + 10_000 => Some(b.0),
            (Some(c), _) => Some(c.0),
            (None, b) => b.map(|b| b.0),
        };
        let pick = pick.map(str::to_string);
        let iface_tx = pick.as_deref().and_then(|p| {
            self.networks
                .iter()
                .find(|(n, _)| n.as_str() == p)
                .map(|(_, d)| d.total_transmitted())
        });
        self.active = pick.clone();
        self.system
            .refresh_processes(sysinfo::ProcessesToUpdate::All, true);
        let processes = self
            .system
            .processes()
            .values()
            .map(|p| p.name().to_string_lossy().into_owned())
            .collect();
        SystemSample {
            iface: pick,
            iface_tx,
            processes,
        }
    }
}

/// Runs one bandwidth test against the relay's `/probe` WebSocket. Returns the result and the
/// bytes sent.
pub async fn run_probe(
    url: &str,
    config: &ProbeConfig,
    kind: ProbeKind,
) -> Result<(MeasuredUpload, u64), ProbeError> {
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async_with_config(url, None, true),
    )
    .await
    .map_err(|_| ProbeError::Connection("timed out connecting".into()))?
    .map_err(|e| ProbeError::Connection(e.to_string()))?;
    let mut upload = ProbeUpload::start(Instant::now(), config, kind);
    let frame = bytes::Bytes::from(vec![0u8; config.frame_bytes.clamp(1_024, 1 << 20)]);
    loop {
        match upload.poll(Instant::now()) {
            ProbeStep::SendFrame(n) => {
                // On a line faster than the relay's size cap allows for the whole test (a relay
                // on this machine, a LAN), the relay stops reading, reports at once and closes:
                // take that report rather than failing on the next write.
                if let Some(Some(Ok(Message::Text(t)))) = ws.next().now_or_never() {
                    let m = upload.on_report(unix_ms(), t.as_str())?;
                    let _ = ws.close(None).await;
                    return Ok((m, upload.sent_bytes()));
                }
                let sent = ws
                    .send(Message::Binary(frame.slice(..n.min(frame.len()))))
                    .await;
                if let Err(e) = sent {
                    return match tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
                        Ok(Some(Ok(Message::Text(t)))) => Ok((
                            upload.on_report(unix_ms(), t.as_str())?,
                            upload.sent_bytes(),
                        )),
                        _ => Err(ProbeError::Connection(e.to_string())),
                    };
                }
            }
            ProbeStep::SendDone => {
                ws.send(Message::Text("done".into()))
                    .await
                    .map_err(|e| ProbeError::Connection(e.to_string()))?;
            }
            ProbeStep::AwaitReport(by) => {
                let next = tokio::time::timeout_at(by.into(), ws.next()).await;
                match next {
                    Err(_) => return Err(ProbeError::Timeout),
                    Ok(None) => {
                        return Err(ProbeError::Connection("the relay closed the test".into()));
                    }
                    Ok(Some(Err(e))) => return Err(ProbeError::Connection(e.to_string())),
                    Ok(Some(Ok(Message::Text(t)))) => {
                        let m = upload.on_report(unix_ms(), t.as_str())?;
                        let _ = ws.close(None).await;
                        return Ok((m, upload.sent_bytes()));
                    }
                    Ok(Some(Ok(_))) => {}
                }
            }
            ProbeStep::TimedOut => return Err(ProbeError::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hum_budget::{RelayContribution, ReservedUpload, TotalUpload};

    fn settings() -> BandwidthSettings {
        BandwidthSettings {
            total_upload: TotalUpload::Manual {
                rate: Bitrate::from_mbps(10),
            },
            reserved: ReservedUpload::Manual {
                rate: Bitrate::from_mbps(2),
            },
            relay: RelayContribution::High,
            ..BandwidthSettings::default()
        }
    }

    async fn udp_echo() -> SocketAddr {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = sock.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let _ = sock.send_to(&buf[..n], from).await;
            }
        });
        addr
    }

    /// A service on [`settings`] whose throttler probes a real UDP echo on loopback, and its
    /// events from the start.
    async fn echo_probed() -> (BudgetService, broadcast::Receiver<BudgetEvent>) {
        let echo = udp_echo().await;
        let prober = UdpEchoProber::connect(echo, Duration::from_secs(1))
            .await
            .expect("prober");
        let mut config = BudgetConfig::new(settings());
        config.relay_prober = Some(Arc::new(prober));
        config.system_sample_every = None;
        let service = BudgetService::spawn(config);
        let events = service.subscribe();
        (service, events)
    }

    #[tokio::test]
    async fn throttler_warms_up_on_real_echoes_and_relay_admits() {
        let (service, mut events) = echo_probed().await;
        let eff = service.effective();
        assert_eq!(eff.available, Bitrate::from_mbps(8));
        assert_eq!(eff.relay, Bitrate::from_mbps(4));
        // Warm-up: five probe round trips on loopback, then relaying starts at half the setting.
        let cap = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Ok(BudgetEvent::RelayCap { cap }) = events.recv().await {
                    return cap;
                }
            }
        })
        .await
        .expect("relay cap within 5 s");
        assert_eq!(cap, Bitrate::from_mbps(2));
        assert_eq!(service.relay_cap(), Bitrate::from_mbps(2));
        // Starting at half is a ramp, not a reduction: a tracker is offered the setting.
        assert_eq!(service.relay_offer(), Bitrate::from_mbps(4));
        // Relaying is admitted: 100 KB go through the limiter at the 2 Mbps cap (~0.4 s; the
        // deadline only guards against a relay that never admits).
        tokio::time::timeout(Duration::from_secs(30), async {
            for _ in 0..100 {
                service.relay_admit(1_000).await;
            }
        })
        .await
        .expect("100 KB of relaying admitted within 30 s at a 2 Mbps cap");
        let stats = service.limiter_stats();
        assert_eq!(stats.relay_bytes, 100_000, "every admitted byte is charged");
        // The cap is enforced, not skipped: the relay bucket holds ~3 KB, so 100 KB sent back
        // to back must wait for tokens (it cannot pass untouched unless each of ~97 sends
        // came 4 ms after the last).
        assert!(stats.relay_deferred > 0, "{stats:?}");
        service.shutdown();
    }

    #[tokio::test]
    async fn own_media_comes_first_for_a_serve_queue_spending_the_relay_class() {
        use hum_mesh::serve::UploadBudget;
        let (service, mut events) = echo_probed().await;
        tokio::time::timeout(Duration::from_secs(5), async {
            while service.relay_cap() == Bitrate::ZERO {
                let _ = events.recv().await;
            }
        })
        .await
        .expect("relay cap within 5 s");
        let origin = Instant::now();
        let mut budget = service.relay_budget(origin);
        let t = |d: Duration| hum_mesh::Time::from_offset(d);
        budget.refill(t(origin.elapsed()));
        assert!(budget.holds(0), "{budget:?}");
        // A second of own media at the whole 8 Mbit/s available (camera + screen, say), sent
        // by the media loops: the total bucket goes into debt and relaying waits for it.
        let before = service.limiter_stats().own_bytes;
        for _ in 0..1_000 {
            count_own_media(1_000);
        }
        budget.refill(t(origin.elapsed()));
        assert!(!budget.holds(0), "own media first: {budget:?}");
        let wait = budget.wait_for(0).expect("nonzero rates");
        assert!(wait > Duration::from_millis(100), "{wait:?}");
        let own = service.limiter_stats().own_bytes - before;
        assert!(own >= 1_000 * (1_000 + PACKET_OVERHEAD), "{own}");
        service.shutdown();
    }

    /// RTT probes answered after whatever delay the test sets (a queue the test builds).
    struct QueueProber(Arc<AtomicU64>);

    impl RttProber for QueueProber {
        fn probe(
            &self,
            _seq: u64,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = std::io::Result<Duration>> + Send + '_>,
        > {
            let rtt = Duration::from_micros(self.0.load(Ordering::Relaxed));
            Box::pin(async move {
                tokio::time::sleep(rtt).await;
                Ok(rtt)
            })
        }
    }

    async fn wait_event(
        events: &mut broadcast::Receiver<BudgetEvent>,
        pred: impl Fn(&BudgetEvent) -> bool,
    ) {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Ok(ev) = events.recv().await
                    && pred(&ev)
                {
                    return;
                }
            }
        })
        .await
        .expect("the event within 10 s")
    }

    #[tokio::test]
    async fn the_tracker_is_offered_the_setting_unless_the_throttler_reduced_relaying() {
        let rtt = Arc::new(AtomicU64::new(2_000));
        let mut config = BudgetConfig::new(settings());
        config.relay_prober = Some(Arc::new(QueueProber(rtt.clone())));
        config.system_sample_every = None;
        let service = BudgetService::spawn(config);
        let mut events = service.subscribe();
        // Before the throttler warmed up (cap 0) and while it ramps from half: the setting.
        assert_eq!(service.relay_offer(), Bitrate::from_mbps(4));
        wait_event(&mut events, |e| matches!(e, BudgetEvent::RelayCap { .. })).await;
        assert_eq!(service.relay_offer(), Bitrate::from_mbps(4));
        // A queue of 60 ms forms (a game's upload): the throttler cuts, and the offer follows.
        rtt.store(62_000, Ordering::Relaxed);
        wait_event(&mut events, |e| {
            matches!(e, BudgetEvent::RelayReduced { .. })
        })
        .await;
        let cap = service.relay_cap();
        assert!(cap < Bitrate::from_mbps(2), "{cap}");
        assert_eq!(service.relay_offer(), cap);
        service.shutdown();
    }

    #[tokio::test]
    async fn relay_waits_while_off_and_settings_are_validated() {
        let mut s = settings();
        s.relay = RelayContribution::Off;
        let mut config = BudgetConfig::new(s.clone());
        config.system_sample_every = None;
        let service = BudgetService::spawn(config);
        let admitted =
            tokio::time::timeout(Duration::from_millis(300), service.relay_admit(1_000)).await;
        assert!(admitted.is_err(), "relay is off: nothing may be relayed");
        let mut bad = s.clone();
        bad.reserved = ReservedUpload::Manual {
            rate: Bitrate::from_mbps(20),
        };
        let err = service.set_settings(bad).expect_err("reserved > total");
        assert!(err.to_string().contains("more than your total upload"));
        assert_eq!(service.settings().relay, RelayContribution::Off);
        service.shutdown();
    }

    #[tokio::test]
    async fn tcp_connect_prober_measures_refused_and_accepted() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let open = listener.local_addr().expect("addr");
        // An answer is an RTT (`Ok`); no answer within the timeout is a `TimedOut` error.
        TcpConnectProber::new(open, Duration::from_secs(10))
            .probe(0)
            .await
            .expect("the open port answers");
        drop(listener);
        // Now closed: the RST is an answer too, not an error.
        TcpConnectProber::new(open, Duration::from_secs(10))
            .probe(1)
            .await
            .expect("the closed port's RST counts as an answer");
    }

    /// A stand-in for the relay's `/probe` that follows the documented protocol.
    async fn fake_probe_endpoint() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let mut ws = tokio_tungstenite::accept_async(stream).await.expect("ws");
            let mut first: Option<Instant> = None;
            let mut last = Instant::now();
            let (mut total, mut timed) = (0u64, 0u64);
            while let Some(Ok(msg)) = ws.next().await {
                match msg {
                    Message::Binary(b) => {
                        total += b.len() as u64;
                        if first.is_some() {
                            timed += b.len() as u64;
                        } else {
                            first = Some(Instant::now());
                        }
                        last = Instant::now();
                    }
                    Message::Text(t) if t.as_str() == "done" => break,
                    _ => {}
                }
            }
            let us = first.map_or(0, |f| last.duration_since(f).as_micros() as u64);
            let mbps = if us == 0 {
                0.0
            } else {
                timed as f64 * 8.0 / us as f64
            };
            let report = format!(
                r#"{{"bytes": {total}, "elapsed_ms": {}, "mbps": {mbps}}}"#,
                us / 1_000
            );
            let _ = ws.send(Message::Text(report.into())).await;
        });
        format!("ws://{addr}/probe")
    }

    /// Like the relay's `/probe` when the client is faster than its size cap: stops reading after
    /// `cap` bytes, reports (`capped`) and closes while the client is still sending.
    async fn capped_probe_endpoint(cap: u64) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let mut ws = tokio_tungstenite::accept_async(stream).await.expect("ws");
            let start = Instant::now();
            let mut total = 0u64;
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Binary(b) = msg {
                    total += b.len() as u64;
                    if total >= cap {
                        break;
                    }
                }
            }
            let ms = (start.elapsed().as_millis() as u64).max(1);
            let mbps = total as f64 * 8.0 / (ms as f64 / 1e3) / 1e6 * 0.99;
            let report = format!(
                r#"{{"bytes": {total}, "elapsed_ms": {ms}, "mbps": {mbps}, "capped": true}}"#
            );
            let _ = ws.send(Message::Text(report.into())).await;
            let _ = ws.close(None).await;
        });
        format!("ws://{addr}/probe")
    }

    #[tokio::test]
    async fn a_test_the_relay_caps_early_still_measures() {
        let mut config = BudgetConfig::new(settings());
        config.system_sample_every = None;
        config.probe_url = Some(capped_probe_endpoint(4 << 20).await);
        config.probe.full_duration = Duration::from_secs(3);
        let service = BudgetService::spawn(config);
        let m = service
            .run_bandwidth_test(ProbeKind::Full)
            .await
            .expect("a capped test is a measurement, not a failure");
        assert!(m.rate > Bitrate::ZERO, "{}", m.rate);
        service.shutdown();
    }

    #[tokio::test]
    async fn bandwidth_test_stores_its_result() {
        let url = fake_probe_endpoint().await;
        let mut s = settings();
        s.total_upload = TotalUpload::Auto;
        let mut config = BudgetConfig::new(s);
        config.system_sample_every = None;
        config.probe_url = Some(url);
        config.probe.brief_duration = Duration::from_millis(600);
        let service = BudgetService::spawn(config);
        assert_eq!(service.effective().total, Bitrate::ZERO);
        let m = service
            .run_bandwidth_test(ProbeKind::Brief)
            .await
            .expect("test runs");
        // How fast loopback is belongs to benchmarks; here: a rate was measured and stored.
        assert!(m.rate > Bitrate::ZERO, "{}", m.rate);
        let eff = service.effective();
        assert_eq!(
            eff.total,
            m.rate.min(hum_budget::settings::MAX_TOTAL_UPLOAD)
        );
        assert_eq!(
            service.settings().effective(&service.measurements()),
            eff,
            "previews from settings + measurements match what the service enforces"
        );
        assert_eq!(service.settings().last_probe, Some(m));
        service.shutdown();
    }

    #[tokio::test]
    async fn game_server_prober_comes_from_the_settings() {
        let mut s = settings();
        assert!(game_server_prober(&s).await.is_none());
        s.protection.game_server = Some("127.0.0.1:9".into());
        let p = game_server_prober(&s).await.expect("resolves");
        assert_eq!(p.target, "127.0.0.1:9".parse::<SocketAddr>().expect("addr"));
    }

    #[tokio::test]
    async fn other_apps_and_games_shape_the_budget() {
        let mut s = settings();
        s.reserved = ReservedUpload::Auto;
        s.protection.game_processes = vec!["cs2".into()];
        let mut config = BudgetConfig::new(s);
        config.system_sample_every = None;
        let service = BudgetService::spawn(config);
        let mut events = service.subscribe();
        let t0 = Instant::now();
        let sample = |tx: u64, procs: &[&str]| SystemSample {
            iface: Some("eth0".into()),
            iface_tx: Some(tx),
            processes: procs.iter().map(|p| p.to_string()).collect(),
        };
        service.apply_system_sample(t0, &sample(1_000_000, &["bash"]));
        // One second later the interface sent 3 Mbps more and Hum sent nothing: others use 3.
        service.apply_system_sample(t0 + Duration::from_secs(1), &sample(1_375_000, &["bash"]));
        let eff = service.effective();
        assert_eq!(eff.reserved, Bitrate::from_mbps(4)); // 3 + 10% of the 10 Mbps total
        assert_eq!(
            service.settings().effective(&service.measurements()),
            eff,
            "the measurements reproduce what the service enforces"
        );
        assert_eq!(eff.relay, Bitrate::from_mbps(3)); // high = 50% of the 6 left
        // The user starts their game: relaying drops to the "low" preset.
        service.apply_system_sample(
            t0 + Duration::from_secs(2),
            &sample(1_750_000, &["bash", "cs2"]),
        );
        let eff = service.effective();
        assert!(eff.conservative);
        assert!(service.measurements().game_running);
        assert_eq!(eff.relay, Bitrate::from_kbps(600));
        let mut saw_game = false;
        while let Ok(ev) = events.try_recv() {
            saw_game |= ev == BudgetEvent::GameRunning(Some("cs2".into()));
        }
        assert!(saw_game);
        service.shutdown();
    }

    #[test]
    fn system_sampler_reads_this_machine() {
        let mut s = SystemSampler::new();
        let a = s.sample();
        // Every machine running this test has processes; there may be no non-loopback interface
        // in a sandbox, so only the process list is asserted.
        assert!(!a.processes.is_empty());
        assert!(a.processes.iter().any(|p| !p.is_empty()));
    }
}
