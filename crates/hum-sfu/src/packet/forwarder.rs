//! The forwarder of one subscription: layer selector + rewriter (LiveKit's downtrack forwarder).

use std::time::Instant;

use super::layer::{Layer, LayerSelector, NullSelector, SimulcastSelector, Verdict};
use super::rewriter::{Rewriter, Rewritten};

/// One incoming packet as the forwarder sees it (parsed once per publisher packet, shared by
/// all subscribers).
#[derive(Debug, Clone, Copy)]
pub struct InPacket {
    pub layer: Layer,
    /// Extended incoming sequence number.
    pub seq: u64,
    pub timestamp: u32,
    /// The packet begins a keyframe (VP8 descriptor; always false for audio).
    pub keyframe_start: bool,
    pub arrival: Instant,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ForwarderStats {
    pub forwarded: u64,
    pub dropped: u64,
    pub switches: u64,
}

pub struct Forwarder {
    selector: Box<dyn LayerSelector + Send>,
    rewriter: Rewriter,
    target: Option<Layer>,
    pub stats: ForwarderStats,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("current", &self.selector.current())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Forwarder {
    /// A forwarder for audio.
    pub fn single(clock_rate: u32, initial_seq: u16) -> Self {
        Forwarder {
            selector: Box::new(NullSelector::default()),
            rewriter: Rewriter::new(clock_rate, initial_seq),
            target: None,
            stats: ForwarderStats::default(),
        }
    }

    /// A forwarder for single-layer video: starts (and resumes) at a keyframe.
    pub fn single_video(clock_rate: u32, initial_seq: u16) -> Self {
        Forwarder {
            selector: Box::new(NullSelector::video()),
            rewriter: Rewriter::new(clock_rate, initial_seq),
            target: None,
            stats: ForwarderStats::default(),
        }
    }

    /// A forwarder for simulcast video; forwards nothing until a target is set.
    pub fn simulcast(clock_rate: u32, initial_seq: u16) -> Self {
        Forwarder {
            selector: Box::new(SimulcastSelector::default()),
            rewriter: Rewriter::new(clock_rate, initial_seq),
            target: None,
            stats: ForwarderStats::default(),
        }
    }

    pub fn set_target(&mut self, target: Option<Layer>) {
        self.target = target;
        self.selector.set_target(target);
    }

    /// The layer aimed at (the last [`Forwarder::set_target`]).
    pub fn target(&self) -> Option<Layer> {
        self.target
    }

    pub fn current(&self) -> Option<Layer> {
        self.selector.current()
    }

    /// The layer whose keyframe this subscriber waits for.
    pub fn awaiting_keyframe(&self) -> Option<Layer> {
        self.selector.awaiting_keyframe()
    }

    /// Decides and rewrites one packet; `None` means "not for this subscriber".
    pub fn forward(&mut self, p: &InPacket) -> Option<Rewritten> {
        let out = match self.selector.on_packet(p.layer, p.keyframe_start) {
            Verdict::Drop => None,
            Verdict::Forward => self.rewriter.rewrite(p.seq, p.timestamp, p.arrival),
            Verdict::ForwardSwitched => {
                self.stats.switches += 1;
                self.rewriter.switch();
                self.rewriter.rewrite(p.seq, p.timestamp, p.arrival)
            }
        };
        match out {
            Some(_) => self.stats.forwarded += 1,
            None => self.stats.dropped += 1,
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Three simulcast layers, 30 fps, 3 packets a frame, keyframes on each layer every 10
    /// frames at different phases; the subscriber switches up and down. The output must be one
    /// gap-free sequence whose timestamps never go backwards, and each switch lands on a
    /// keyframe of the target.
    #[test]
    fn simulcast_switches_keep_one_continuous_stream() {
        let t0 = Instant::now();
        let mut f = Forwarder::simulcast(90_000, 1);
        f.set_target(Some(Layer(0)));
        let mut out: Vec<(Rewritten, Layer, bool)> = vec![];
        for frame in 0..90u64 {
            if frame == 30 {
                f.set_target(Some(Layer(2)));
            }
            if frame == 60 {
                f.set_target(Some(Layer(1)));
            }
            let at = t0 + Duration::from_millis(frame * 33);
            for l in 0..3u8 {
                for k in 0..3u64 {
                    let key = k == 0 && (frame + u64::from(l) * 3) % 10 == 0;
                    let p = InPacket {
                        layer: Layer(l),
                        seq: 10_000 * u64::from(l) + frame * 3 + k,
                        timestamp: (1_000 + u32::from(l) * 77_777)
                            .wrapping_add(frame as u32 * 3000),
                        keyframe_start: key,
                        arrival: at,
                    };
                    if let Some(r) = f.forward(&p) {
                        out.push((r, Layer(l), key));
                    }
                }
            }
        }
        assert_eq!(f.current(), Some(Layer(1)));
        assert_eq!(f.stats.switches, 3);
        for w in out.windows(2) {
            assert_eq!(w[1].0.seq, w[0].0.seq + 1, "gap-free");
            assert!(
                w[1].0.timestamp.wrapping_sub(w[0].0.timestamp) < 1 << 31,
                "monotonic ts"
            );
            if w[1].1 != w[0].1 {
                assert!(w[1].2, "a layer change lands on a keyframe");
            }
        }
        let layers: Vec<Layer> = out.iter().map(|o| o.1).collect();
        assert!(
            layers.contains(&Layer(0)) && layers.contains(&Layer(2)) && layers.contains(&Layer(1))
        );
    }

    #[test]
    fn audio_forwards_everything_with_its_own_numbering() {
        let t0 = Instant::now();
        let mut f = Forwarder::single(48_000, 7);
        for i in 0..5u64 {
            let p = InPacket {
                layer: Layer::LOW,
                seq: 900 + i,
                timestamp: 960 * i as u32,
                keyframe_start: false,
                arrival: t0 + Duration::from_millis(20 * i),
            };
            assert_eq!(f.forward(&p).map(|r| r.seq), Some(7 + i));
        }
        f.set_target(None);
        assert_eq!(f.stats.forwarded, 5);
    }
}
