//! Which layer to watch and which to relay.
//!
//! A viewer watches the best layer its download setting allows and its measured download throughput
//! carries with headroom (20%: a layer that needs the whole link stalls at the first dip). A peer
//! relays every layer for which its upload budget covers at least a quarter of the layer's rate, the
//! tracker's grant unit, so a weak peer may relay only audio; it is still useful there.

use hum_proto::Bitrate;
use hum_proto::mesh::Layer;

/// The rate of each layer, indexed by [`Layer::index`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerRates(pub [Bitrate; 4]);

impl LayerRates {
    /// The design's table: 1080p 4.5 Mbit/s, 720p 2 Mbit/s, 480p 650 kbit/s, audio 64 kbit/s.
    pub fn design_default() -> Self {
        LayerRates([
            Bitrate::from_kbps(4500),
            Bitrate::from_kbps(2000),
            Bitrate::from_kbps(650),
            Bitrate::from_kbps(64),
        ])
    }
    pub fn rate(&self, l: Layer) -> Bitrate {
        self.0[l.index()]
    }
}

/// Throughput needed per unit of layer rate.
pub const DOWNLOAD_HEADROOM: f64 = 1.2;
/// A peer relays a layer if its budget covers this fraction of the layer's rate.
pub const RELAY_MIN_FRACTION: f64 = 0.25;

/// The layer to watch: the best one no better than `cap` (the user's quality setting; `None` = auto)
/// that `measured` download throughput carries with headroom. Audio if nothing else fits.
pub fn choose_watch(cap: Option<Layer>, measured: Bitrate, rates: &LayerRates) -> Layer {
    let best_allowed = cap.unwrap_or(Layer::High);
    Layer::ALL
        .into_iter()
        .filter(|l| *l >= best_allowed)
        .find(|l| rates.rate(*l).bps() as f64 * DOWNLOAD_HEADROOM <= measured.bps() as f64)
        .unwrap_or(Layer::Audio)
}

/// The layers a peer with `budget` of relay upload can usefully relay, best first.
pub fn relayable(budget: Bitrate, rates: &LayerRates) -> Vec<Layer> {
    Layer::ALL
        .into_iter()
        .filter(|l| budget.bps() as f64 >= rates.rate(*l).bps() as f64 * RELAY_MIN_FRACTION)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_layer_follows_setting_and_throughput() {
        let r = LayerRates::design_default();
        assert_eq!(choose_watch(None, Bitrate::from_mbps(50), &r), Layer::High);
        assert_eq!(
            choose_watch(None, Bitrate::from_mbps(5), &r),
            Layer::Medium,
            "4.5 * 1.2 > 5"
        );
        assert_eq!(
            choose_watch(Some(Layer::Low), Bitrate::from_mbps(50), &r),
            Layer::Low
        );
        assert_eq!(
            choose_watch(None, Bitrate::from_kbps(300), &r),
            Layer::Audio
        );
        assert_eq!(choose_watch(None, Bitrate::ZERO, &r), Layer::Audio);
    }

    #[test]
    fn weak_peers_relay_audio_only() {
        let r = LayerRates::design_default();
        assert_eq!(relayable(Bitrate::from_mbps(2), &r), Layer::ALL.to_vec());
        assert_eq!(
            relayable(Bitrate::from_kbps(200), &r),
            vec![Layer::Low, Layer::Audio]
        );
        assert_eq!(relayable(Bitrate::from_kbps(20), &r), vec![Layer::Audio]);
        assert!(relayable(Bitrate::ZERO, &r).is_empty());
    }
}
