//! hum-engine's bandwidth test against the real relay's `GET /probe`: the budget service runs the
//! test, checks the relay's report and stores the result as the auto-detected total.

use std::time::Duration;

use hum_engine::budget::model::{BandwidthSettings, ProbeKind, TotalSource, TotalUpload};
use hum_engine::budget::{BudgetConfig, BudgetEvent, BudgetService, run_probe};
use hum_tests::relay::Relay;

#[tokio::test]
async fn bandwidth_test_against_the_real_relay() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &[])?;
    let url = format!("ws://{}/probe", relay.addr);

    let mut config = BudgetConfig::new(BandwidthSettings {
        total_upload: TotalUpload::Auto,
        ..BandwidthSettings::default()
    });
    config.probe_url = Some(url.clone());
    config.system_sample_every = None;
    // Loopback is fast enough to reach the relay's 64 MiB per-test cap; a capped report is a valid
    // lower bound, so either outcome must be accepted.
    config.probe.brief_duration = Duration::from_millis(800);
    let probe_config = config.probe.clone();
    let service = BudgetService::spawn(config);
    let mut events = service.subscribe();
    assert_eq!(service.effective().total_source, TotalSource::NotMeasured);

    let m = service.run_bandwidth_test(ProbeKind::Brief).await?;
    println!("loopback bandwidth test through the relay: {}", m.rate);
    assert!(m.rate.mbps_f64() > 1.0, "{}", m.rate);
    let eff = service.effective();
    assert_eq!(eff.total, m.rate);
    assert!(matches!(eff.total_source, TotalSource::Detected { .. }));
    let mut measured = false;
    while let Ok(ev) = events.try_recv() {
        measured |= ev == BudgetEvent::BandwidthMeasured(m);
    }
    assert!(measured, "a BandwidthMeasured event was sent");

    // The bare client agrees with itself on a second run (same order of magnitude).
    let (again, sent) = run_probe(&url, &probe_config, ProbeKind::Brief).await?;
    assert!(sent > 0);
    let ratio = again.rate.mbps_f64() / m.rate.mbps_f64();
    assert!((0.1..10.0).contains(&ratio), "{} vs {}", again.rate, m.rate);
    service.shutdown();
    Ok(())
}

#[tokio::test]
async fn throttler_probes_the_real_relay_with_ping() -> anyhow::Result<()> {
    use hum_engine::budget::RelayPingProber;
    use hum_engine::budget::model::{Bitrate, RelayContribution, ReservedUpload};
    use hum_engine::{Identity, RelayClient, RelayConfig};
    use hum_proto::signal::DisplayName;
    use std::sync::Arc;

    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &[])?;
    let identity = Identity::from_seed([7; 32], DisplayName::new("budget")?);
    let client = RelayClient::connect(identity, RelayConfig::new(relay.ws_url())).await?;
    let settings = BandwidthSettings {
        total_upload: TotalUpload::Manual {
            rate: Bitrate::from_mbps(10),
        },
        reserved: ReservedUpload::Manual {
            rate: Bitrate::from_mbps(2),
        },
        relay: RelayContribution::Medium,
        ..BandwidthSettings::default()
    };
    let mut config = BudgetConfig::new(settings);
    config.system_sample_every = None;
    config.throttler.probe_interval = RelayPingProber::THROTTLER_INTERVAL;
    config.relay_prober = Some(Arc::new(RelayPingProber::new(
        client,
        Duration::from_secs(1),
    )));
    let service = BudgetService::spawn(config);
    let mut events = service.subscribe();
    // Five pongs end the warm-up; relaying then starts at half of "medium" (25% of 8 Mbps).
    let cap = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(BudgetEvent::RelayCap { cap }) = events.recv().await {
                return cap;
            }
        }
    })
    .await?;
    assert_eq!(cap, Bitrate::from_mbps(1));
    service.shutdown();
    Ok(())
}
