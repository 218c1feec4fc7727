//! What the rest of the machine uploads, for "reserved for other apps: auto", and whether one of
//! the user's listed games is running. Sans-IO: the engine reads the interface counters and the
//! process list (sysinfo) and feeds them here.
//!
//! Other apps' upload = interface upload - Hum's own upload (plus its header overhead). The
//! reservation must cover the game's bursts, not its average, so the estimate is a peak-hold that
//! decays slowly (half-life 30 s): a burst raises it at once, quiet lowers it gradually.

use std::time::{Duration, Instant};

use hum_proto::Bitrate;

#[derive(Clone, Debug, PartialEq)]
pub struct OtherAppsConfig {
    /// Half-life of the peak-hold's decay.
    pub half_life: Duration,
    /// Hum's bytes are counted above IP/UDP; the interface counts headers too.
    pub hum_header_overhead: f64,
    /// Samples further apart than this restart the measurement (sleep, suspended app).
    pub max_gap: Duration,
}

impl Default for OtherAppsConfig {
    fn default() -> Self {
        OtherAppsConfig {
            half_life: Duration::from_secs(30),
            hum_header_overhead: 0.05,
            max_gap: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct OtherAppsEstimator {
    config: OtherAppsConfig,
    last: Option<(Instant, u64, u64)>,
    peak_bps: Option<f64>,
    instant_bps: Option<f64>,
}

impl OtherAppsEstimator {
    pub fn new(config: OtherAppsConfig) -> Self {
        OtherAppsEstimator {
            config,
            ..Default::default()
        }
    }

    /// A sample of the active interface's transmitted-bytes counter and Hum's own sent-bytes
    /// counter (both monotonic). Returns the current estimate.
    pub fn on_sample(&mut self, now: Instant, iface_tx: u64, hum_tx: u64) -> Option<Bitrate> {
        if let Some((t, i, h)) = self.last {
            let dt = now.saturating_duration_since(t);
            if dt.is_zero() {
                return self.estimate();
            }
            if dt <= self.config.max_gap && iface_tx >= i && hum_tx >= h {
                let secs = dt.as_secs_f64();
                let iface = (iface_tx - i) as f64 * 8.0 / secs;
                let hum =
                    (hum_tx - h) as f64 * 8.0 / secs * (1.0 + self.config.hum_header_overhead);
                let other = (iface - hum).max(0.0);
                let decay = 0.5f64.powf(secs / self.config.half_life.as_secs_f64().max(1e-3));
                self.peak_bps = Some(self.peak_bps.map_or(other, |p| (p * decay).max(other)));
                self.instant_bps = Some(other);
            }
            // else: a counter reset (interface changed) or a long gap: start over from here.
        }
        self.last = Some((now, iface_tx, hum_tx));
        self.estimate()
    }

    /// The peak-hold estimate the auto reservation uses.
    pub fn estimate(&self) -> Option<Bitrate> {
        self.peak_bps.map(|b| Bitrate::from_bps(b.round() as u64))
    }

    /// The last interval's rate, unsmoothed (for the panel's live readout).
    pub fn instant(&self) -> Option<Bitrate> {
        self.instant_bps
            .map(|b| Bitrate::from_bps(b.round() as u64))
    }
}

/// `name` as the game list compares it: lower case, without a trailing `.exe`.
fn normalise(name: &str) -> String {
    let n = name.trim().to_lowercase();
    n.strip_suffix(".exe").map(str::to_string).unwrap_or(n)
}

/// The first listed game among the running process names, if any.
pub fn running_game<'a>(
    listed: &[String],
    running: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    if listed.is_empty() {
        return None;
    }
    let wanted: Vec<String> = listed
        .iter()
        .map(|n| normalise(n))
        .filter(|n| !n.is_empty())
        .collect();
    running
        .into_iter()
        .find(|p| wanted.contains(&normalise(p)))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtracts_hum_and_holds_peaks() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut e = OtherAppsEstimator::new(OtherAppsConfig::default());
        assert_eq!(e.on_sample(s(0), 0, 0), None);
        // 3 Mbps on the interface, Hum sent 1 Mbps (+5% headers): others 1.95 Mbps.
        let got = e.on_sample(s(1), 375_000, 125_000).expect("estimate");
        assert_eq!(got, Bitrate::from_kbps(1_950));
        // Others go quiet: the estimate halves in 30 s instead of dropping at once.
        let mut iface = 375_000;
        let mut hum = 125_000;
        for n in 2..=31 {
            iface += 100_000;
            hum += 100_000;
            e.on_sample(s(n), iface, hum);
        }
        let after = e.estimate().expect("estimate").bps() as f64;
        assert!((after - 975_000.0).abs() < 1_000.0, "{after}");
        assert_eq!(e.instant(), Some(Bitrate::ZERO));
        // A burst raises it at once.
        e.on_sample(s(32), iface + 1_000_000, hum);
        assert_eq!(e.estimate(), Some(Bitrate::from_mbps(8)));
    }

    #[test]
    fn counter_resets_and_gaps_restart_measurement() {
        let t0 = Instant::now();
        let mut e = OtherAppsEstimator::new(OtherAppsConfig::default());
        e.on_sample(t0, 1_000_000, 0);
        // The interface changed (counter went down): no bogus huge or negative rate.
        assert_eq!(e.on_sample(t0 + Duration::from_secs(1), 10, 0), None);
        assert_eq!(
            e.on_sample(t0 + Duration::from_secs(2), 125_010, 0),
            Some(Bitrate::from_mbps(1))
        );
        // A 60 s gap (laptop slept) is not averaged over.
        let before = e.estimate();
        assert_eq!(
            e.on_sample(t0 + Duration::from_secs(62), 999_999_999, 0),
            before
        );
    }

    #[test]
    fn finds_listed_games_case_and_exe_insensitively() {
        let listed = vec![
            "CS2".to_string(),
            "valorant.exe".to_string(),
            " ".to_string(),
        ];
        assert_eq!(running_game(&listed, ["bash", "cs2"]), Some("cs2".into()));
        assert_eq!(
            running_game(&listed, ["VALORANT.EXE"]),
            Some("VALORANT.EXE".into())
        );
        assert_eq!(running_game(&listed, ["valorant"]), Some("valorant".into()));
        assert_eq!(running_game(&listed, ["bash", "firefox", ""]), None);
        assert_eq!(running_game(&[], ["cs2"]), None);
    }
}
