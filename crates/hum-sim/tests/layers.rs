//! `--layers` over hum-netsim, 150 viewers: every layer plays, weak peers relay audio only, and a
//! seed fully determines the run.

use std::time::Duration;

use hum_mesh::Layer;
use hum_mesh::layer::{LayerRates, relayable};
use hum_proto::Bitrate;
use hum_sim::layers::{assign, simulate_layers};
use hum_sim::{Report, SimConfig};

fn cfg(seed: u64) -> SimConfig {
    let mut c = SimConfig::small(150, seed);
    c.duration = Duration::from_secs(20);
    c.layered = true;
    c
}

fn run(seed: u64) -> Report {
    simulate_layers(&cfg(seed)).expect("runs")
}

#[test]
fn every_layer_plays_and_weak_peers_relay_audio_only() {
    let rates = LayerRates::design_default();
    let aud = assign(&cfg(1), &rates);
    // The layer choice and the budget split follow hum-mesh's layer logic.
    for l in Layer::ALL {
        for m in &aud.watchers[l.index()] {
            if m.relay_mbps > 0.0 {
                assert!(relayable(Bitrate::from_mbps_f64(m.relay_mbps), &rates).contains(&l));
            }
        }
    }
    for m in &aud.relay_only[Layer::Audio.index()] {
        let can = relayable(Bitrate::from_mbps_f64(m.relay_mbps), &rates);
        assert!(can.contains(&Layer::Audio), "{can:?}");
    }
    let r = run(1);
    let layers = r.layers.as_ref().expect("per-layer report");
    assert_eq!(layers.len(), 4);
    assert_eq!(layers.iter().map(|l| l.viewers).sum::<usize>(), 150);
    for l in layers {
        assert!(l.viewers > 0, "layer {} has no viewers", l.layer);
        assert!(
            l.continuity > 0.98,
            "layer {}: continuity {}",
            l.layer,
            l.continuity
        );
        assert!(l.peer_share > 0.5, "layer {}: {}", l.layer, l.peer_share);
        assert!(
            l.server_egress_mbps <= l.server_cap_mbps * 1.05,
            "layer {}",
            l.layer
        );
        assert!(l.lower_bound_mbps >= l.bitrate_mbps * 0.999);
    }
    let audio = &layers[3];
    assert!(audio.relay_only > 0, "the population has weak peers");
    assert!(
        audio.relay_only_bytes_served > 0,
        "weak peers relay the audio layer"
    );
    assert!(layers[..3].iter().all(|l| l.relay_only == 0));
    // Top level: totals over the layers.
    let egress: f64 = layers.iter().map(|l| l.server_egress_mbps).sum();
    assert!((r.server_egress_mbps - egress).abs() < 1e-9);
    assert_eq!(r.viewers, 150);
    assert!(r.continuity > 0.98, "{}", r.continuity);
}

#[test]
fn layered_runs_are_deterministic() {
    let a = run(7);
    let b = run(7);
    assert_eq!(a.deterministic_json(), b.deterministic_json());
    assert!(a.deterministic_json().contains("\"layers\""));
    assert_ne!(a.deterministic_json(), run(8).deterministic_json());
}
