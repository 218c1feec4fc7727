//! Bandwidth auto-detect, sans-IO: when to test ([`ProbeScheduler`]), what to send during a test
//! ([`ProbeUpload`]), and how to turn the relay's report into a stored result.
//!
//! The wire side is the relay's `GET /probe` WebSocket (see `hum_proto::signal::ProbeReport`): the
//! client sends binary frames for a few seconds, then the text frame `done`; the relay answers one
//! text frame `{"bytes": N, "elapsed_ms": M, "mbps": X, "capped": bool}`. The relay measures from
//! its first received byte to its last, so the client's socket buffers do not inflate the result.
//!
//! Policy: a full test (4 s) when there is no result; a brief one (1.5 s) now and then to notice a
//! changed line; never while a listed game runs (a test fills the uplink: exactly the lag this crate
//! exists to prevent); backoff after failures. A brief test only replaces the stored result when it
//! is higher (a short test underestimates: TCP is still ramping), or when two in a row say the line
//! got clearly slower.

use std::time::{Duration, Instant};

use hum_proto::Bitrate;
use hum_proto::signal::ProbeReport;

use crate::settings::{MAX_TOTAL_UPLOAD, MeasuredUpload};

#[derive(Clone, Debug, PartialEq)]
pub struct ProbeConfig {
    pub full_duration: Duration,
    pub brief_duration: Duration,
    /// Size of each binary frame (the relay accepts up to 1 MiB).
    pub frame_bytes: usize,
    /// How long to wait for the report after `done`.
    pub report_timeout: Duration,
    /// A full re-test after this long (ms of wall-clock time).
    pub full_every_ms: u64,
    /// A brief re-test after this long.
    pub brief_every_ms: u64,
    /// Backoff after consecutive failures: 1, 5, 30 minutes, then this last value.
    pub failure_backoff_ms: [u64; 3],
    /// A test shorter than this on the relay's clock says nothing.
    pub min_elapsed_ms: u64,
    /// A brief test this much lower than the stored rate counts as "slower".
    pub slower_fraction: f64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            full_duration: Duration::from_secs(4),
            brief_duration: Duration::from_millis(1_500),
            frame_bytes: 16 * 1024,
            report_timeout: Duration::from_secs(5),
            full_every_ms: 7 * 24 * 3_600_000,
            brief_every_ms: 6 * 3_600_000,
            failure_backoff_ms: [60_000, 5 * 60_000, 30 * 60_000],
            min_elapsed_ms: 300,
            slower_fraction: 0.7,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    Full,
    Brief,
}

/// What the scheduler advises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeDecision {
    RunNow(ProbeKind),
    /// Nothing to do before this Unix time (ms).
    NotBefore(u64),
    /// A test is due, but the user is gaming: ask again later.
    WaitWhileGaming,
}

/// Why a test produced no result.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ProbeError {
    #[error("The relay's bandwidth report could not be read: {0}")]
    BadReport(String),
    #[error("The bandwidth test was too short to measure ({elapsed_ms} ms). It will be retried.")]
    TooShort { elapsed_ms: u64 },
    #[error("The relay received more data ({reported} bytes) than was sent ({sent} bytes).")]
    Inconsistent { reported: u64, sent: u64 },
    #[error("The bandwidth test measured an impossible rate ({mbps} Mbps).")]
    ImpossibleRate { mbps: f64 },
    #[error("The relay did not answer the bandwidth test in time.")]
    Timeout,
    #[error("The bandwidth test could not reach the relay: {0}")]
    Connection(String),
}

/// Remembers results and failures and decides when the next test runs.
#[derive(Clone, Debug, Default)]
pub struct ProbeScheduler {
    config: ProbeConfig,
    last: Option<MeasuredUpload>,
    last_full_at_ms: Option<u64>,
    last_attempt_at_ms: Option<u64>,
    failures: u32,
    slower_streak: u32,
}

impl ProbeScheduler {
    /// `stored`: the result saved in the settings, if any (treated as a full test).
    pub fn new(config: ProbeConfig, stored: Option<MeasuredUpload>) -> Self {
        ProbeScheduler {
            config,
            last: stored,
            last_full_at_ms: stored.map(|s| s.measured_at_unix_ms),
            ..ProbeScheduler::default()
        }
    }

    pub fn config(&self) -> &ProbeConfig {
        &self.config
    }

    pub fn last(&self) -> Option<MeasuredUpload> {
        self.last
    }

    pub fn decide(&self, now_ms: u64, gaming: bool) -> ProbeDecision {
        let c = &self.config;
        if self.failures > 0 {
            let i = (self.failures as usize - 1).min(c.failure_backoff_ms.len() - 1);
            let retry = self
                .last_attempt_at_ms
                .unwrap_or(0)
                .saturating_add(c.failure_backoff_ms[i]);
            if now_ms < retry {
                return ProbeDecision::NotBefore(retry);
            }
        }
        let (kind, due) = match (self.last, self.last_full_at_ms) {
            (None, _) | (_, None) => (ProbeKind::Full, 0),
            (Some(last), Some(full)) => {
                let full_due = full.saturating_add(c.full_every_ms);
                let brief_due = last.measured_at_unix_ms.saturating_add(c.brief_every_ms);
                if full_due <= brief_due || full_due <= now_ms {
                    (ProbeKind::Full, full_due)
                } else {
                    (ProbeKind::Brief, brief_due)
                }
            }
        };
        // The stored result may come from a clock that was set wrong; a result "from the future"
        // is simply old.
        let (kind, due) = if self.last.is_some_and(|l| l.measured_at_unix_ms > now_ms) {
            (ProbeKind::Full, 0)
        } else {
            (kind, due)
        };
        if now_ms < due {
            ProbeDecision::NotBefore(due)
        } else if gaming {
            ProbeDecision::WaitWhileGaming
        } else {
            ProbeDecision::RunNow(kind)
        }
    }

    /// A test of `kind` ended. Returns the result to store (and use) if it changes anything.
    pub fn on_result(
        &mut self,
        now_ms: u64,
        kind: ProbeKind,
        result: Result<MeasuredUpload, ProbeError>,
    ) -> Option<MeasuredUpload> {
        self.last_attempt_at_ms = Some(now_ms);
        let m = match result {
            Err(_) => {
                self.failures = self.failures.saturating_add(1);
                return None;
            }
            Ok(m) => m,
        };
        self.failures = 0;
        let accept = match (kind, self.last) {
            (ProbeKind::Full, _) | (_, None) => true,
            (ProbeKind::Brief, Some(last)) => {
                if m.rate >= last.rate {
                    true
                } else if m.rate < last.rate.scale(self.config.slower_fraction) {
                    self.slower_streak += 1;
                    self.slower_streak >= 2
                } else {
                    // Within noise: keep the number, but the line was checked now.
                    self.last = Some(MeasuredUpload {
                        rate: last.rate,
                        measured_at_unix_ms: now_ms,
                    });
                    self.slower_streak = 0;
                    return None;
                }
            }
        };
        if !accept {
            return None;
        }
        self.slower_streak = 0;
        if kind == ProbeKind::Full {
            self.last_full_at_ms = Some(now_ms);
        }
        self.last = Some(m);
        Some(m)
    }
}

/// One test in progress: what to send, and when to stop.
#[derive(Clone, Debug)]
pub struct ProbeUpload {
    kind: ProbeKind,
    frame_bytes: usize,
    send_until: Instant,
    report_by: Option<Instant>,
    report_timeout: Duration,
    min_elapsed_ms: u64,
    sent_bytes: u64,
}

/// The next thing the engine does for a running test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeStep {
    /// Send a binary frame of this many bytes (the content does not matter).
    SendFrame(usize),
    /// Send the text frame `done`, then wait for the report.
    SendDone,
    /// Wait for the report until this instant.
    AwaitReport(Instant),
    /// No report came in time.
    TimedOut,
}

impl ProbeUpload {
    pub fn start(now: Instant, config: &ProbeConfig, kind: ProbeKind) -> Self {
        let duration = match kind {
            ProbeKind::Full => config.full_duration,
            ProbeKind::Brief => config.brief_duration,
        };
        ProbeUpload {
            kind,
            frame_bytes: config.frame_bytes.clamp(1_024, 1 << 20),
            send_until: now + duration,
            report_by: None,
            report_timeout: config.report_timeout,
            min_elapsed_ms: config.min_elapsed_ms,
            sent_bytes: 0,
        }
    }

    pub fn kind(&self) -> ProbeKind {
        self.kind
    }

    pub fn sent_bytes(&self) -> u64 {
        self.sent_bytes
    }

    /// Call after each send completes (the WebSocket's backpressure paces the loop).
    pub fn poll(&mut self, now: Instant) -> ProbeStep {
        match self.report_by {
            Some(by) if now >= by => ProbeStep::TimedOut,
            Some(by) => ProbeStep::AwaitReport(by),
            None if now < self.send_until => {
                self.sent_bytes += self.frame_bytes as u64;
                ProbeStep::SendFrame(self.frame_bytes)
            }
            None => {
                let by = now + self.report_timeout;
                self.report_by = Some(by);
                ProbeStep::SendDone
            }
        }
    }

    /// The relay's text frame arrived.
    pub fn on_report(&self, now_ms: u64, text: &str) -> Result<MeasuredUpload, ProbeError> {
        let report: ProbeReport =
            serde_json::from_str(text).map_err(|e| ProbeError::BadReport(e.to_string()))?;
        evaluate_report(&report, self.sent_bytes, now_ms, self.min_elapsed_ms)
    }
}

/// Checks a relay report against what was sent and turns it into a stored result.
pub fn evaluate_report(
    report: &ProbeReport,
    sent_bytes: u64,
    now_ms: u64,
    min_elapsed_ms: u64,
) -> Result<MeasuredUpload, ProbeError> {
    if report.bytes > sent_bytes {
        return Err(ProbeError::Inconsistent {
            reported: report.bytes,
            sent: sent_bytes,
        });
    }
    // A test the relay cut short at its size cap moved a lot of data fast: its rate is a lower
    // bound on the line, good enough however short it was.
    let capped_big = report.capped && report.bytes >= 1 << 20 && report.elapsed_ms > 0;
    if report.elapsed_ms < min_elapsed_ms && !capped_big {
        return Err(ProbeError::TooShort {
            elapsed_ms: report.elapsed_ms,
        });
    }
    let rate = Bitrate::from_mbps_f64(report.mbps);
    // The relay's rate leaves out the first frame, so it is at most bytes / elapsed, a little less.
    let upper = report.bytes as f64 * 8.0 / (report.elapsed_ms as f64 / 1e3) / 1e6;
    // (A positive rate that rounds to 0 bps is as useless as zero.)
    if !report.mbps.is_finite() || rate == Bitrate::ZERO || report.mbps > upper * 1.01 + 0.01 {
        return Err(ProbeError::ImpossibleRate { mbps: report.mbps });
    }
    // Faster than any settings value allows (a relay on the same machine): "at least the most".
    let rate = rate.min(MAX_TOTAL_UPLOAD);
    Ok(MeasuredUpload {
        rate,
        measured_at_unix_ms: now_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    fn m(mbps: u64, at: u64) -> MeasuredUpload {
        MeasuredUpload {
            rate: Bitrate::from_mbps(mbps),
            measured_at_unix_ms: at,
        }
    }

    #[test]
    fn first_run_tests_fully_but_not_while_gaming() {
        let s = ProbeScheduler::new(ProbeConfig::default(), None);
        assert_eq!(
            s.decide(1_000, false),
            ProbeDecision::RunNow(ProbeKind::Full)
        );
        assert_eq!(s.decide(1_000, true), ProbeDecision::WaitWhileGaming);
    }

    #[test]
    fn brief_retests_and_weekly_full_tests() {
        let t0 = 1_700_000_000_000;
        let mut s = ProbeScheduler::new(ProbeConfig::default(), Some(m(20, t0)));
        assert_eq!(
            s.decide(t0 + HOUR, false),
            ProbeDecision::NotBefore(t0 + 6 * HOUR)
        );
        assert_eq!(
            s.decide(t0 + 6 * HOUR, false),
            ProbeDecision::RunNow(ProbeKind::Brief)
        );
        // A brief result within noise keeps the number but restarts the brief clock.
        assert_eq!(
            s.on_result(t0 + 6 * HOUR, ProbeKind::Brief, Ok(m(18, t0 + 6 * HOUR))),
            None
        );
        assert_eq!(s.last().map(|l| l.rate), Some(Bitrate::from_mbps(20)));
        assert_eq!(
            s.decide(t0 + 7 * HOUR, false),
            ProbeDecision::NotBefore(t0 + 12 * HOUR)
        );
        // After a week, a full test.
        assert_eq!(
            s.decide(t0 + 7 * 24 * HOUR, false),
            ProbeDecision::RunNow(ProbeKind::Full)
        );
        // A clock set backwards makes the stored result old, not eternal.
        assert_eq!(
            s.decide(t0 - HOUR, false),
            ProbeDecision::RunNow(ProbeKind::Full)
        );
    }

    #[test]
    fn brief_results_replace_when_higher_or_twice_much_lower() {
        let mut s = ProbeScheduler::new(ProbeConfig::default(), Some(m(20, 0)));
        assert_eq!(
            s.on_result(10, ProbeKind::Brief, Ok(m(25, 10))),
            Some(m(25, 10))
        );
        assert_eq!(s.on_result(20, ProbeKind::Brief, Ok(m(5, 20))), None);
        assert_eq!(
            s.on_result(30, ProbeKind::Brief, Ok(m(6, 30))),
            Some(m(6, 30))
        );
        // A full test always replaces.
        assert_eq!(
            s.on_result(40, ProbeKind::Full, Ok(m(3, 40))),
            Some(m(3, 40))
        );
    }

    #[test]
    fn failures_back_off() {
        let mut s = ProbeScheduler::new(ProbeConfig::default(), None);
        let e = || Err(ProbeError::Timeout);
        s.on_result(0, ProbeKind::Full, e());
        assert_eq!(s.decide(1, false), ProbeDecision::NotBefore(60_000));
        s.on_result(60_000, ProbeKind::Full, e());
        assert_eq!(s.decide(60_001, false), ProbeDecision::NotBefore(360_000));
        for i in 0..5 {
            s.on_result(1_000_000 * i, ProbeKind::Full, e());
        }
        assert_eq!(
            s.decide(4_000_001, false),
            ProbeDecision::NotBefore(4_000_000 + 30 * 60_000)
        );
        s.on_result(9_000_000, ProbeKind::Full, Ok(m(9, 9_000_000)));
        assert_eq!(
            s.decide(9_000_001, false),
            ProbeDecision::NotBefore(9_000_000 + 6 * HOUR)
        );
    }

    #[test]
    fn upload_sends_for_its_duration_then_done_then_waits() {
        let t0 = Instant::now();
        let cfg = ProbeConfig::default();
        let mut u = ProbeUpload::start(t0, &cfg, ProbeKind::Brief);
        let mut now = t0;
        let mut frames = 0;
        loop {
            match u.poll(now) {
                ProbeStep::SendFrame(n) => {
                    assert_eq!(n, 16 * 1024);
                    frames += 1;
                    now += Duration::from_millis(10);
                }
                ProbeStep::SendDone => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(frames, 150);
        assert_eq!(u.sent_bytes(), 150 * 16 * 1024);
        assert_eq!(
            u.poll(now),
            ProbeStep::AwaitReport(now + cfg.report_timeout)
        );
        assert_eq!(u.poll(now + cfg.report_timeout), ProbeStep::TimedOut);

        let ok = r#"{"bytes": 2000000, "elapsed_ms": 1400, "mbps": 11.2}"#;
        let got = u.on_report(77, ok).expect("valid");
        assert_eq!(
            got,
            MeasuredUpload {
                rate: Bitrate::from_kbps(11_200),
                measured_at_unix_ms: 77
            }
        );
    }

    #[test]
    fn random_reports_never_panic_and_never_exceed_what_was_sent() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let t0 = Instant::now();
        let mut u = ProbeUpload::start(t0, &ProbeConfig::default(), ProbeKind::Full);
        for _ in 0..100 {
            u.poll(t0);
        }
        for _ in 0..20_000 {
            let bytes: u64 = rng.gen_range(0..4_000_000);
            let elapsed: u64 = rng.gen_range(0..10_000);
            let mbps: f64 = match rng.gen_range(0..4) {
                0 => f64::from_bits(rng.r#gen()),
                1 => -rng.gen_range(0.0..1e3),
                _ => rng.gen_range(0.0..2e4),
            };
            let text = format!(
                r#"{{"bytes": {bytes}, "elapsed_ms": {elapsed}, "mbps": {mbps}, "capped": {}}}"#,
                rng.gen_bool(0.3)
            );
            if let Ok(m) = u.on_report(0, &text) {
                assert!(bytes <= u.sent_bytes());
                assert!(m.rate <= MAX_TOTAL_UPLOAD);
                assert!(m.rate > Bitrate::ZERO);
                // Never more than the bytes could carry in the time the relay saw.
                let upper = bytes as f64 * 8.0 / (elapsed as f64 / 1e3);
                assert!(m.rate.bps() as f64 <= upper * 1.01 + 1e4, "{text}");
            }
        }
    }

    #[test]
    fn bad_reports_are_rejected() {
        let t0 = Instant::now();
        let mut u = ProbeUpload::start(t0, &ProbeConfig::default(), ProbeKind::Full);
        u.poll(t0);
        let sent = u.sent_bytes();
        for (text, want) in [
            ("not json", "BadReport"),
            (r#"{"bytes": 1}"#, "BadReport"),
            (
                &format!(
                    r#"{{"bytes": {}, "elapsed_ms": 1000, "mbps": 0.1}}"#,
                    sent + 1
                ),
                "Inconsistent",
            ),
            (
                r#"{"bytes": 1000, "elapsed_ms": 20, "mbps": 0.4}"#,
                "TooShort",
            ),
            (
                r#"{"bytes": 1000, "elapsed_ms": 20, "mbps": 0.4, "capped": true}"#,
                "TooShort",
            ),
            (
                r#"{"bytes": 1000, "elapsed_ms": 1000, "mbps": 0.0}"#,
                "ImpossibleRate",
            ),
            (
                r#"{"bytes": 1000, "elapsed_ms": 1000, "mbps": 500.0}"#,
                "ImpossibleRate",
            ),
            (
                r#"{"bytes": 1000, "elapsed_ms": 1000, "mbps": -1.0}"#,
                "ImpossibleRate",
            ),
        ] {
            let err = u.on_report(0, text).expect_err(text);
            assert!(format!("{err:?}").starts_with(want), "{text}: {err:?}");
        }
        // Capped at the relay's size limit after a big, fast transfer: a valid lower bound.
        let capped = r#"{"bytes": 67108864, "elapsed_ms": 120, "mbps": 4400.0, "capped": true}"#;
        let mut big = ProbeUpload::start(t0, &ProbeConfig::default(), ProbeKind::Full);
        for _ in 0..5_000 {
            big.poll(t0);
        }
        assert_eq!(
            big.on_report(0, capped).map(|m| m.rate),
            Ok(Bitrate::from_mbps(4_400))
        );
        let huge = r#"{"bytes": 67108864, "elapsed_ms": 20, "mbps": 26000.0, "capped": true}"#;
        assert_eq!(big.on_report(0, huge).map(|m| m.rate), Ok(MAX_TOTAL_UPLOAD));
    }
}
