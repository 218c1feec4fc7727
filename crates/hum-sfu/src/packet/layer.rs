//! Simulcast layer selection for one subscriber of one video publication.
//!
//! Two siblings behind one trait, as LiveKit's `videolayerselector/{simulcast,null}`:
//! - [`SimulcastSelector`] forwards exactly one layer and switches only at a keyframe of the
//!   target layer (a decoder cannot continue on another layer's references);
//! - [`NullSelector`] forwards whatever comes (audio, single-layer video).
//!
//! Which layer to aim at is [`choose_layer`]: the highest layer the client asked for (speaker
//! view high, thumbnail low, or paused) whose measured bitrate fits the subscriber's budget from
//! its bandwidth estimate; the lowest layer when none fits (a small picture beats a frozen one).

use hum_proto::units::Bitrate;

/// A simulcast layer index: 0 is the lowest resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Layer(pub u8);

impl Layer {
    pub const LOW: Layer = Layer(0);

    /// The layer of a simulcast RID, as the clients name them: `q` (quarter), `h` (half), `f`
    /// (full); also `l`/`m`/`h` and `0`/`1`/`2`. Unknown RIDs are `None`.
    pub fn from_rid(rid: &str) -> Option<Layer> {
        match rid {
            "q" | "l" | "0" | "low" => Some(Layer(0)),
            "h" | "m" | "1" | "mid" => Some(Layer(1)),
            "f" | "2" | "high" => Some(Layer(2)),
            _ => None,
        }
    }
}

/// What the subscribing client asked to see of a video publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Quality {
    /// Not shown: forward nothing (and let the publisher pause layers nobody wants).
    Paused,
    /// A thumbnail: the lowest layer.
    Low,
    /// A middle-sized tile: at most the middle layer (640x360 of a camera).
    Medium,
    /// The spotlight: the best layer the bandwidth allows.
    #[default]
    High,
}

/// Picks the target layer. `layers` are the publisher's live layers with their measured
/// bitrates, in any order. Returns `None` when paused or when no layer is live.
pub fn choose_layer(layers: &[(Layer, Bitrate)], want: Quality, budget: Bitrate) -> Option<Layer> {
    let cap = match want {
        Quality::Paused => return None,
        Quality::Low => Layer::LOW,
        Quality::Medium => Layer(1),
        Quality::High => Layer(u8::MAX),
    };
    let lowest = layers.iter().map(|(l, _)| *l).min()?;
    let best_fit = layers
        .iter()
        .filter(|(l, rate)| *l <= cap && *rate <= budget)
        .map(|(l, _)| *l)
        .max();
    Some(best_fit.unwrap_or(lowest))
}

/// The verdict on one incoming packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not for this subscriber.
    Drop,
    /// Forward it, continuing the current layer.
    Forward,
    /// Forward it: the first packet of a new layer (the rewriter must start a new source).
    ForwardSwitched,
}

/// A layer selection policy for one subscriber of one publication.
pub trait LayerSelector {
    /// Sets the layer to aim at (`None` pauses forwarding immediately).
    fn set_target(&mut self, target: Option<Layer>);
    /// The layer being forwarded now.
    fn current(&self) -> Option<Layer>;
    /// Decides on one packet of `layer`; `keyframe_start` when it begins a keyframe.
    fn on_packet(&mut self, layer: Layer, keyframe_start: bool) -> Verdict;
    /// The layer whose keyframe is awaited (the caller asks the publisher, rate-limited).
    fn awaiting_keyframe(&self) -> Option<Layer>;
}

/// Forwards one layer: audio, and video without simulcast (a screen share).
///
/// For video ([`NullSelector::video`]) a subscription starts, and resumes after a pause, at a
/// keyframe: the deltas before it reference pictures the subscriber never saw, and until it
/// comes the selector asks for one ([`LayerSelector::awaiting_keyframe`]) so the publisher is
/// asked at once rather than after the subscriber's decoder gives up and sends a PLI.
#[derive(Debug, Default)]
pub struct NullSelector {
    paused: bool,
    started: bool,
    /// Start only on a keyframe (video).
    keyframes: bool,
}

impl NullSelector {
    /// For single-layer video: starts at a keyframe.
    pub fn video() -> Self {
        NullSelector {
            keyframes: true,
            ..Default::default()
        }
    }
}

impl LayerSelector for NullSelector {
    fn set_target(&mut self, target: Option<Layer>) {
        let paused = target.is_none();
        if paused != self.paused {
            // Resuming continues as a new source: the rewriter closes the gap.
            self.started = false;
        }
        self.paused = paused;
    }
    fn current(&self) -> Option<Layer> {
        (!self.paused && (self.started || !self.keyframes)).then_some(Layer::LOW)
    }
    fn on_packet(&mut self, _layer: Layer, keyframe_start: bool) -> Verdict {
        if self.paused || (!self.started && self.keyframes && !keyframe_start) {
            Verdict::Drop
        } else if !self.started {
            self.started = true;
            Verdict::ForwardSwitched
        } else {
            Verdict::Forward
        }
    }
    fn awaiting_keyframe(&self) -> Option<Layer> {
        (self.keyframes && !self.paused && !self.started).then_some(Layer::LOW)
    }
}

/// Forwards one simulcast layer; switches to the target at the target's next keyframe.
///
/// Invariant: `current` only ever changes to `target`, and only on a keyframe start of it (or
/// to `None` when paused).
#[derive(Debug, Default)]
pub struct SimulcastSelector {
    current: Option<Layer>,
    target: Option<Layer>,
}

impl LayerSelector for SimulcastSelector {
    fn set_target(&mut self, target: Option<Layer>) {
        self.target = target;
        if target.is_none() {
            self.current = None;
        }
    }
    fn current(&self) -> Option<Layer> {
        self.current
    }
    fn on_packet(&mut self, layer: Layer, keyframe_start: bool) -> Verdict {
        if self.target == Some(layer) && self.current != Some(layer) && keyframe_start {
            self.current = Some(layer);
            return Verdict::ForwardSwitched;
        }
        if self.current == Some(layer) {
            Verdict::Forward
        } else {
            Verdict::Drop
        }
    }
    fn awaiting_keyframe(&self) -> Option<Layer> {
        match self.target {
            Some(t) if self.current != Some(t) => Some(t),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers() -> Vec<(Layer, Bitrate)> {
        vec![
            (Layer(2), Bitrate::from_kbps(1_500)),
            (Layer(0), Bitrate::from_kbps(150)),
            (Layer(1), Bitrate::from_kbps(500)),
        ]
    }

    #[test]
    fn choice_follows_want_and_budget() {
        let l = layers();
        assert_eq!(
            choose_layer(&l, Quality::High, Bitrate::from_mbps(5)),
            Some(Layer(2))
        );
        assert_eq!(
            choose_layer(&l, Quality::High, Bitrate::from_kbps(600)),
            Some(Layer(1))
        );
        assert_eq!(
            choose_layer(&l, Quality::High, Bitrate::from_kbps(100)),
            Some(Layer(0))
        );
        assert_eq!(
            choose_layer(&l, Quality::Low, Bitrate::from_mbps(5)),
            Some(Layer(0))
        );
        assert_eq!(
            choose_layer(&l, Quality::Paused, Bitrate::from_mbps(5)),
            None
        );
        assert_eq!(
            choose_layer(&[], Quality::High, Bitrate::from_mbps(5)),
            None
        );
        assert_eq!(
            choose_layer(&l, Quality::Medium, Bitrate::from_mbps(5)),
            Some(Layer(1))
        );
        assert_eq!(
            choose_layer(&l, Quality::Medium, Bitrate::from_kbps(200)),
            Some(Layer(0)),
            "the budget caps a medium tile too"
        );
        // The top layer stopped (the publisher's uplink dropped it): high falls back to the
        // best layer still live.
        let without_top = [
            (Layer(0), Bitrate::from_kbps(150)),
            (Layer(1), Bitrate::from_kbps(500)),
        ];
        assert_eq!(
            choose_layer(&without_top, Quality::High, Bitrate::from_mbps(5)),
            Some(Layer(1))
        );
        // Only the high layer live (others paused at the publisher): take it even for a thumbnail.
        let only_high = [(Layer(2), Bitrate::from_kbps(1_500))];
        assert_eq!(
            choose_layer(&only_high, Quality::Low, Bitrate::from_mbps(5)),
            Some(Layer(2))
        );
    }

    #[test]
    fn rids_map_to_layers() {
        assert_eq!(Layer::from_rid("q"), Some(Layer(0)));
        assert_eq!(Layer::from_rid("h"), Some(Layer(1)));
        assert_eq!(Layer::from_rid("f"), Some(Layer(2)));
        assert_eq!(Layer::from_rid("zz"), None);
    }

    #[test]
    fn simulcast_switches_only_on_a_keyframe_of_the_target() {
        let mut s = SimulcastSelector::default();
        s.set_target(Some(Layer(0)));
        assert_eq!(
            s.on_packet(Layer(0), false),
            Verdict::Drop,
            "no keyframe yet"
        );
        assert_eq!(s.awaiting_keyframe(), Some(Layer(0)));
        assert_eq!(s.on_packet(Layer(2), true), Verdict::Drop, "not the target");
        assert_eq!(s.on_packet(Layer(0), true), Verdict::ForwardSwitched);
        assert_eq!(s.on_packet(Layer(0), false), Verdict::Forward);
        assert_eq!(s.awaiting_keyframe(), None);

        // Upswitch: layer 0 keeps flowing until layer 2's keyframe.
        s.set_target(Some(Layer(2)));
        assert_eq!(s.on_packet(Layer(2), false), Verdict::Drop);
        assert_eq!(s.on_packet(Layer(0), false), Verdict::Forward);
        assert_eq!(s.on_packet(Layer(0), true), Verdict::Forward);
        assert_eq!(s.on_packet(Layer(2), true), Verdict::ForwardSwitched);
        assert_eq!(s.on_packet(Layer(0), false), Verdict::Drop);
        assert_eq!(s.current(), Some(Layer(2)));

        s.set_target(None);
        assert_eq!(s.on_packet(Layer(2), true), Verdict::Drop);
        assert_eq!(s.current(), None);
    }

    /// A layer that stops while forwarded: the next target (the fallback `choose_layer` gives)
    /// is taken at its first keyframe, never on a delta; until then nothing else leaks through.
    #[test]
    fn simulcast_falls_back_when_the_forwarded_layer_stops() {
        let mut s = SimulcastSelector::default();
        s.set_target(Some(Layer(2)));
        assert_eq!(s.on_packet(Layer(2), true), Verdict::ForwardSwitched);
        assert_eq!(s.on_packet(Layer(2), false), Verdict::Forward);
        // Layer 2 goes silent; the session retargets to layer 1.
        s.set_target(Some(Layer(1)));
        assert_eq!(s.current(), Some(Layer(2)), "kept until the new keyframe");
        assert_eq!(s.awaiting_keyframe(), Some(Layer(1)));
        for _ in 0..5 {
            assert_eq!(
                s.on_packet(Layer(1), false),
                Verdict::Drop,
                "delta of layer 1"
            );
            assert_eq!(s.on_packet(Layer(0), true), Verdict::Drop, "not the target");
        }
        assert_eq!(s.on_packet(Layer(1), true), Verdict::ForwardSwitched);
        assert_eq!(s.on_packet(Layer(1), false), Verdict::Forward);
        assert_eq!(s.awaiting_keyframe(), None);
        // Layer 2 comes back: a late packet of it is not forwarded any more.
        assert_eq!(s.on_packet(Layer(2), false), Verdict::Drop);
        assert_eq!(s.on_packet(Layer(2), true), Verdict::Drop, "not targeted");
    }

    /// Audio never waits for a keyframe, whatever a packet says.
    #[test]
    fn null_selector_ignores_keyframes_and_never_asks_for_one() {
        let mut s = NullSelector::default();
        for i in 0..10 {
            let v = s.on_packet(Layer(0), i % 3 == 0);
            assert_ne!(v, Verdict::Drop);
            assert_eq!(s.awaiting_keyframe(), None);
        }
        s.set_target(Some(Layer(2)));
        assert_eq!(s.current(), Some(Layer::LOW));
        assert_eq!(s.on_packet(Layer(0), false), Verdict::Forward);
    }

    #[test]
    fn null_selector_forwards_all_and_restarts_after_pause() {
        let mut s = NullSelector::default();
        assert_eq!(s.on_packet(Layer(0), false), Verdict::ForwardSwitched);
        assert_eq!(s.on_packet(Layer(0), false), Verdict::Forward);
        s.set_target(None);
        assert_eq!(s.on_packet(Layer(0), false), Verdict::Drop);
        s.set_target(Some(Layer::LOW));
        assert_eq!(s.on_packet(Layer(0), false), Verdict::ForwardSwitched);
    }

    /// Single-layer video (a screen share joined mid-stream): nothing is forwarded before a
    /// keyframe, which is asked for until it comes; from it on everything is; a pause and
    /// resume waits for the next keyframe again.
    #[test]
    fn single_layer_video_starts_and_resumes_at_a_keyframe() {
        let mut s = NullSelector::video();
        assert_eq!(s.awaiting_keyframe(), Some(Layer::LOW));
        assert_eq!(s.current(), None, "nothing forwarded yet");
        for _ in 0..5 {
            assert_eq!(s.on_packet(Layer(0), false), Verdict::Drop);
            assert_eq!(s.awaiting_keyframe(), Some(Layer::LOW));
        }
        assert_eq!(s.on_packet(Layer(0), true), Verdict::ForwardSwitched);
        assert_eq!(s.awaiting_keyframe(), None);
        assert_eq!(s.current(), Some(Layer::LOW));
        assert_eq!(s.on_packet(Layer(0), false), Verdict::Forward);
        assert_eq!(s.on_packet(Layer(0), true), Verdict::Forward);
        s.set_target(None);
        assert_eq!(s.awaiting_keyframe(), None, "paused: nothing to ask for");
        assert_eq!(s.on_packet(Layer(0), true), Verdict::Drop);
        s.set_target(Some(Layer::LOW));
        assert_eq!(s.awaiting_keyframe(), Some(Layer::LOW));
        assert_eq!(s.on_packet(Layer(0), false), Verdict::Drop);
        assert_eq!(s.on_packet(Layer(0), true), Verdict::ForwardSwitched);
    }
}
