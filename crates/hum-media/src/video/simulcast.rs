//! Simulcast: one source, several independent VP8 encoders at different sizes and bitrates.
//!
//! Layers are ordered low to high (index 0 is the smallest), named by RID `q`, `h`, `f` as
//! browsers do. Each layer is a separate [`Vp8Encoder`] (three libvpx instances; libvpx's
//! `vpx_codec_enc_init_multi` is not used: Debian's build does not promise it). The source is
//! scaled once per layer, cascading from the next larger layer: an exact 2:1 is a 2x2 average,
//! other ratios an area filter ([`super::scale`]).
//!
//! A paused layer costs nothing (no scaling, no encoding). Resuming forces a keyframe on it,
//! since its receivers have nothing to decode against.

use hum_proto::units::Bitrate;

use super::scale::scale;
use super::vp8::{EncodedFrame, EncoderConfig, Vp8Encoder};
use super::{VideoError, VideoFrame};

/// One layer's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerConfig {
    pub width: u32,
    pub height: u32,
    pub bitrate: Bitrate,
}

/// The standard camera ladder: 320x180 / 640x360 / 1280x720.
pub const CAMERA_LAYERS: [LayerConfig; 3] = [
    LayerConfig {
        width: 320,
        height: 180,
        bitrate: Bitrate::from_kbps(150),
    },
    LayerConfig {
        width: 640,
        height: 360,
        bitrate: Bitrate::from_kbps(500),
    },
    LayerConfig {
        width: 1280,
        height: 720,
        bitrate: Bitrate::from_kbps(1_500),
    },
];

/// The RID of layer `index` (0 = lowest): `q`, `h`, `f`.
pub fn rid(index: usize) -> &'static str {
    ["q", "h", "f"].get(index).copied().unwrap_or("x")
}

/// One encoded frame of one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerFrame {
    /// Layer index, 0 = lowest.
    pub layer: usize,
    pub frame: EncodedFrame,
}

struct Layer {
    config: LayerConfig,
    /// The bitrate the layer was created with: its share when the link allows.
    nominal: Bitrate,
    encoder: Vp8Encoder,
    active: bool,
}

/// A multi-layer VP8 encoder. See the module doc.
pub struct SimulcastEncoder {
    layers: Vec<Layer>,
}

impl std::fmt::Debug for SimulcastEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l: Vec<_> = self.layers.iter().map(|l| (l.config, l.active)).collect();
        f.debug_struct("SimulcastEncoder")
            .field("layers", &l)
            .finish()
    }
}

impl SimulcastEncoder {
    /// Layers ordered low to high, all at `fps`, with camera tuning.
    pub fn new(layers: &[LayerConfig], fps: u32) -> Result<Self, VideoError> {
        Self::with(layers, |l| {
            EncoderConfig::camera(l.width, l.height, fps, l.bitrate)
        })
    }

    /// Layers with a custom encoder config per layer (e.g. without frame drops).
    pub fn with(
        layers: &[LayerConfig],
        config: impl Fn(&LayerConfig) -> EncoderConfig,
    ) -> Result<Self, VideoError> {
        if layers.is_empty() {
            return Err(VideoError::Codec {
                op: "simulcast",
                reason: "no layers".into(),
            });
        }
        let layers = layers
            .iter()
            .map(|l| {
                Ok(Layer {
                    config: *l,
                    nominal: l.bitrate,
                    encoder: Vp8Encoder::new(config(l))?,
                    active: true,
                })
            })
            .collect::<Result<Vec<_>, VideoError>>()?;
        Ok(Self { layers })
    }

    /// The standard three camera layers ([`CAMERA_LAYERS`]).
    pub fn camera(fps: u32) -> Result<Self, VideoError> {
        Self::new(&CAMERA_LAYERS, fps)
    }

    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    pub fn layer(&self, index: usize) -> Option<LayerConfig> {
        self.layers.get(index).map(|l| l.config)
    }

    pub fn is_active(&self, index: usize) -> bool {
        self.layers.get(index).is_some_and(|l| l.active)
    }

    /// Pauses or resumes a layer (nobody watches it / someone does). Resuming forces a keyframe.
    pub fn set_active(&mut self, index: usize, active: bool) {
        if let Some(l) = self.layers.get_mut(index) {
            if active && !l.active {
                l.encoder.request_keyframe();
            }
            l.active = active;
        }
    }

    /// Sets one layer's target bitrate.
    pub fn set_bitrate(&mut self, index: usize, bitrate: Bitrate) -> Result<(), VideoError> {
        match self.layers.get_mut(index) {
            Some(l) => {
                l.config.bitrate = bitrate;
                l.encoder.set_bitrate(bitrate)
            }
            None => Ok(()),
        }
    }

    /// Keyframe on one layer at its next frame.
    pub fn request_keyframe(&mut self, index: usize) {
        if let Some(l) = self.layers.get_mut(index) {
            l.encoder.request_keyframe();
        }
    }

    /// Splits `total` (the congestion controller's estimate for this video track) over the
    /// layers from the lowest up, each up to the bitrate it was created with. The lowest layer
    /// always runs (a blurry picture beats a frozen one; at least 30 kbit/s); each next layer
    /// runs if what is left is at least half its rate, else it and all above it pause.
    /// Returns the number of active layers.
    pub fn allocate(&mut self, total: Bitrate) -> Result<usize, VideoError> {
        let mut left = total;
        let mut active = 0;
        for i in 0..self.layers.len() {
            let want = self.layers[i].nominal;
            let give = if i == 0 {
                Some(left.min(want).max(Bitrate::from_kbps(30)))
            } else if active == i && left.bps() * 2 >= want.bps() {
                Some(left.min(want))
            } else {
                None
            };
            match give {
                Some(b) => {
                    self.set_bitrate(i, b)?;
                    self.set_active(i, true);
                    left = left - b;
                    active += 1;
                }
                None => self.set_active(i, false),
            }
        }
        Ok(active)
    }

    /// Encodes `frame` on every active layer, scaling it to each layer's size.
    pub fn encode(&mut self, frame: &VideoFrame) -> Result<Vec<LayerFrame>, VideoError> {
        let mut out = Vec::new();
        // High to low, each scaled from the smallest already-made picture at least its size.
        let mut made: Option<VideoFrame> = None;
        for i in (0..self.layers.len()).rev() {
            let l = &mut self.layers[i];
            if !l.active {
                continue;
            }
            let from = match &made {
                Some(m) if m.width() >= l.config.width && m.height() >= l.config.height => m,
                _ => frame,
            };
            let pic = scale(from, l.config.width, l.config.height)?;
            if let Some(e) = l.encoder.encode(&pic)? {
                out.push(LayerFrame { layer: i, frame: e });
            }
            made = Some(pic);
        }
        out.reverse();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::clock::{FrameClock, WallAnchor};
    use crate::video::pattern::PatternSource;
    use crate::video::vp8::Vp8Decoder;
    use crate::video::{PatternAnalyser, VideoSource};
    use std::time::Instant;

    #[test]
    fn every_code_is_read_at_every_layer_after_encode_and_decode() {
        let t0 = Instant::now();
        let anchor = WallAnchor::fixed(t0, 1_000_000_000);
        let mut src =
            PatternSource::new(1280, 720, FrameClock::virtual_from(t0, 30), anchor).expect("src");
        let mut enc = SimulcastEncoder::with(&CAMERA_LAYERS, |l| {
            EncoderConfig::camera(l.width, l.height, 30, l.bitrate).without_frame_drops()
        })
        .expect("encoder");
        let mut decoders: Vec<_> = (0..3).map(|_| Vp8Decoder::new().expect("dec")).collect();
        let mut analysers: Vec<_> = (0..3).map(|_| PatternAnalyser::new(anchor)).collect();
        let n = 6;
        for _ in 0..n {
            let frame = src.read().expect("frame");
            let out = enc.encode(&frame).expect("encode");
            assert_eq!(out.iter().map(|l| l.layer).collect::<Vec<_>>(), [0, 1, 2]);
            for l in out {
                let pic = decoders[l.layer]
                    .decode(&l.frame.data, l.frame.captured)
                    .expect("decode");
                assert_eq!(
                    (pic.width(), pic.height()),
                    (CAMERA_LAYERS[l.layer].width, CAMERA_LAYERS[l.layer].height)
                );
                analysers[l.layer].observe(&pic, l.frame.captured);
            }
        }
        for (i, a) in analysers.iter().enumerate() {
            let r = a.report();
            assert_eq!(
                (r.frames, r.decoded, r.lost, r.out_of_order),
                (n, n, 0, 0),
                "layer {}",
                rid(i)
            );
            assert_eq!(r.latency_max_ms, Some(0));
        }
    }

    #[test]
    fn paused_layers_send_nothing_and_resume_with_a_keyframe() {
        let t0 = Instant::now();
        let layers = [
            LayerConfig {
                width: 160,
                height: 90,
                bitrate: Bitrate::from_kbps(100),
            },
            LayerConfig {
                width: 320,
                height: 180,
                bitrate: Bitrate::from_kbps(300),
            },
        ];
        let mut src = PatternSource::new(
            320,
            180,
            FrameClock::virtual_from(t0, 30),
            WallAnchor::now(),
        )
        .expect("src");
        let mut enc = SimulcastEncoder::with(&layers, |l| {
            EncoderConfig::camera(l.width, l.height, 30, l.bitrate).without_frame_drops()
        })
        .expect("encoder");
        let mut step = |enc: &mut SimulcastEncoder| -> Vec<(usize, bool)> {
            let f = src.read().expect("frame");
            enc.encode(&f)
                .expect("encode")
                .iter()
                .map(|l| (l.layer, l.frame.keyframe))
                .collect()
        };
        assert_eq!(step(&mut enc), [(0, true), (1, true)]);
        assert_eq!(step(&mut enc), [(0, false), (1, false)]);
        enc.set_active(1, false);
        assert_eq!(step(&mut enc), [(0, false)]);
        enc.set_active(1, true);
        assert_eq!(step(&mut enc), [(0, false), (1, true)]);
        enc.request_keyframe(0);
        assert_eq!(step(&mut enc), [(0, true), (1, false)]);
    }

    #[test]
    fn allocation_fills_layers_from_the_bottom_and_pauses_what_does_not_fit() {
        let mut enc = SimulcastEncoder::camera(30).expect("encoder");
        let state = |e: &SimulcastEncoder| -> Vec<(bool, u64)> {
            (0..3)
                .map(|i| {
                    (
                        e.is_active(i),
                        e.layer(i).map_or(0, |l| l.bitrate.bps() / 1000),
                    )
                })
                .collect()
        };
        assert_eq!(enc.allocate(Bitrate::from_kbps(3_000)).expect("a"), 3);
        assert_eq!(state(&enc), [(true, 150), (true, 500), (true, 1500)]);
        assert_eq!(enc.allocate(Bitrate::from_kbps(2_000)).expect("a"), 3);
        assert_eq!(state(&enc), [(true, 150), (true, 500), (true, 1350)]);
        assert_eq!(enc.allocate(Bitrate::from_kbps(800)).expect("a"), 2);
        assert_eq!(state(&enc)[..2], [(true, 150), (true, 500)]);
        assert!(!enc.is_active(2));
        assert_eq!(enc.allocate(Bitrate::from_kbps(300)).expect("a"), 1);
        assert_eq!(enc.allocate(Bitrate::from_kbps(10)).expect("a"), 1);
        assert_eq!(state(&enc)[0], (true, 30));
        assert_eq!(rid(0), "q");
    }
}
