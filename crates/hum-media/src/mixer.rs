//! Mixes the remote participants' decoded audio into one output frame, with per-user volume
//! and deafen.

use std::collections::BTreeMap;

/// Per-user volume and the deafen switch. `K` identifies a participant.
#[derive(Debug, Clone)]
pub struct Mixer<K: Ord> {
    volumes: BTreeMap<K, f32>,
    deafened: bool,
}

impl<K: Ord> Default for Mixer<K> {
    fn default() -> Self {
        Self {
            volumes: BTreeMap::new(),
            deafened: false,
        }
    }
}

impl<K: Ord + Clone> Mixer<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// 0 = silent, 1 = as received, up to 2 = louder.
    pub fn set_volume(&mut self, who: K, volume: f32) {
        let v = if volume.is_finite() {
            volume.clamp(0.0, 2.0)
        } else {
            1.0
        };
        self.volumes.insert(who, v);
    }

    pub fn volume(&self, who: &K) -> f32 {
        self.volumes.get(who).copied().unwrap_or(1.0)
    }

    pub fn set_deafened(&mut self, d: bool) {
        self.deafened = d;
    }

    pub fn deafened(&self) -> bool {
        self.deafened
    }

    /// Sums `inputs` into `out` (overwritten). Each input is scaled by its user's volume; the sum
    /// goes through a soft limiter so several loud talkers do not clip harshly.
    pub fn mix<'a>(&self, inputs: impl IntoIterator<Item = (&'a K, &'a [f32])>, out: &mut [f32])
    where
        K: 'a,
    {
        out.fill(0.0);
        if self.deafened {
            return;
        }
        for (who, frame) in inputs {
            let g = self.volume(who);
            if g == 0.0 {
                continue;
            }
            for (o, x) in out.iter_mut().zip(frame) {
                *o += g * x;
            }
        }
        for o in out.iter_mut() {
            *o = soft_clip(*o);
        }
    }
}

/// Linear below 0.75, then a smooth knee towards ±1.
fn soft_clip(x: f32) -> f32 {
    let a = x.abs();
    if a <= 0.75 {
        x
    } else {
        let over = a - 0.75;
        x.signum() * (0.75 + 0.25 * (over / 0.25).tanh())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::tone_purity;
    use crate::synth::tone_samples;

    #[test]
    fn mixes_with_volume_and_deafen() {
        let a = tone_samples(500.0, 0.3, 960);
        let b = tone_samples(1200.0, 0.3, 960);
        let mut m = Mixer::new();
        let mut out = vec![0.0; 960];
        m.mix([(&1, &a[..]), (&2, &b[..])], &mut out);
        assert!(tone_purity(&out, 500.0) > 0.4 && tone_purity(&out, 1200.0) > 0.4);
        m.set_volume(2, 0.0);
        m.mix([(&1, &a[..]), (&2, &b[..])], &mut out);
        assert!(tone_purity(&out, 500.0) > 0.95);
        m.set_deafened(true);
        m.mix([(&1, &a[..]), (&2, &b[..])], &mut out);
        assert!(out.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn never_exceeds_full_scale() {
        let a = vec![0.9; 100];
        let mut m = Mixer::new();
        m.set_volume("x", 2.0);
        m.set_volume("y", f32::NAN);
        assert_eq!(m.volume(&"y"), 1.0);
        let mut out = vec![0.0; 100];
        m.mix([(&"x", &a[..]), (&"y", &a[..])], &mut out);
        assert!(out.iter().all(|&x| x <= 1.0 && x > 0.9));
    }
}
