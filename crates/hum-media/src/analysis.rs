//! Signal analysis for tests and benchmarks: is this tone there, where is this chirp?
//!
//! These decide whether audio really arrived, so they are deliberately simple and exact:
//! Goertzel for single-frequency power, and a normalised cross-correlation computed with a small
//! radix-2 FFT so a one-second needle can be searched for in a minute of audio quickly.

use crate::SAMPLE_RATE;

/// Power of `freq` in `samples` (Goertzel), normalised so a full-scale sine gives ~0.25·N².
pub fn goertzel_power(samples: &[f32], freq: f32) -> f32 {
    let w = 2.0 * std::f32::consts::PI * freq / SAMPLE_RATE as f32;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for &x in samples {
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// Fraction of the signal's energy that sits at `freq` (0..=1). A clean sine gives ~1, noise
/// or a different tone gives ~0.
pub fn tone_purity(samples: &[f32], freq: f32) -> f32 {
    let energy: f32 = samples.iter().map(|x| x * x).sum();
    if energy <= f32::EPSILON || samples.is_empty() {
        return 0.0;
    }
    // A sine of amplitude A over N samples: Goertzel power A²N²/4, energy A²N/2.
    (2.0 * goertzel_power(samples, freq) / (samples.len() as f32 * energy)).min(1.0)
}

/// Root-mean-square of a slice.
pub fn rms(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|x| x * x).sum::<f32>() / samples.len() as f32).sqrt()
}

/// Where `needle` best matches inside `haystack`, and how well.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match {
    /// Sample offset in the haystack where the needle starts.
    pub offset: usize,
    /// Normalised correlation at that offset, in [-1, 1]; 1 is an exact (scaled) copy.
    pub correlation: f32,
}

/// Finds `needle` in `haystack` by normalised cross-correlation. Returns `None` when the
/// haystack is shorter than the needle or either is silent.
pub fn find(haystack: &[f32], needle: &[f32]) -> Option<Match> {
    let (n, m) = (haystack.len(), needle.len());
    if m == 0 || n < m {
        return None;
    }
    let needle_energy: f64 = needle.iter().map(|&x| (x as f64) * (x as f64)).sum();
    if needle_energy <= 1e-12 {
        return None;
    }
    let size = (n + m).next_power_of_two();
    let mut a: Vec<(f64, f64)> = vec![(0.0, 0.0); size];
    let mut b: Vec<(f64, f64)> = vec![(0.0, 0.0); size];
    for (i, &x) in haystack.iter().enumerate() {
        a[i].0 = x as f64;
    }
    // Correlation = convolution with the reversed needle.
    for (i, &x) in needle.iter().rev().enumerate() {
        b[i].0 = x as f64;
    }
    fft(&mut a, false);
    fft(&mut b, false);
    for (x, y) in a.iter_mut().zip(&b) {
        *x = (x.0 * y.0 - x.1 * y.1, x.0 * y.1 + x.1 * y.0);
    }
    fft(&mut a, true);
    // Prefix sums of the haystack's energy give each window's norm in O(1).
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(0.0f64);
    for &x in haystack {
        let last = *prefix.last().unwrap_or(&0.0);
        prefix.push(last + (x as f64) * (x as f64));
    }
    let mut best: Option<Match> = None;
    for off in 0..=(n - m) {
        let window_energy = prefix[off + m] - prefix[off];
        if window_energy <= 1e-9 {
            continue;
        }
        let c = a[off + m - 1].0 / (needle_energy * window_energy).sqrt();
        if best.is_none_or(|b| c as f32 > b.correlation) {
            best = Some(Match {
                offset: off,
                correlation: c as f32,
            });
        }
    }
    best
}

/// In-place iterative radix-2 FFT; `data.len()` must be a power of two. `inverse` also scales.
fn fft(data: &mut [(f64, f64)], inverse: bool) {
    let n = data.len();
    let mut j = 0;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            data.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let ang = 2.0 * std::f64::consts::PI / len as f64 * if inverse { 1.0 } else { -1.0 };
        let (wr, wi) = (ang.cos(), ang.sin());
        for start in (0..n).step_by(len) {
            let (mut cr, mut ci) = (1.0f64, 0.0f64);
            for k in 0..len / 2 {
                let (ur, ui) = data[start + k];
                let (xr, xi) = data[start + k + len / 2];
                let (vr, vi) = (xr * cr - xi * ci, xr * ci + xi * cr);
                data[start + k] = (ur + vr, ui + vi);
                data[start + k + len / 2] = (ur - vr, ui - vi);
                (cr, ci) = (cr * wr - ci * wi, cr * wi + ci * wr);
            }
        }
        len <<= 1;
    }
    if inverse {
        for x in data.iter_mut() {
            x.0 /= n as f64;
            x.1 /= n as f64;
        }
    }
}

/// Index of the first sample whose magnitude reaches `threshold`: where an impulse landed.
pub fn first_above(samples: &[f32], threshold: f32) -> Option<usize> {
    samples.iter().position(|x| x.abs() >= threshold)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{chirp_samples, tone_samples};

    #[test]
    fn goertzel_tells_tones_apart() {
        let t = tone_samples(1000.0, 0.5, 4800);
        assert!(tone_purity(&t, 1000.0) > 0.9);
        assert!(tone_purity(&t, 1500.0) < 0.05);
        assert_eq!(tone_purity(&[0.0; 100], 1000.0), 0.0);
    }

    #[test]
    fn finds_a_chirp_at_its_offset_through_noise() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let needle = chirp_samples(300.0, 3000.0, 0.5, 9600);
        let mut hay: Vec<f32> = (0..48_000).map(|_| rng.gen_range(-0.05..0.05)).collect();
        for (i, x) in needle.iter().enumerate() {
            hay[12_345 + i] += 0.5 * x;
        }
        let m = find(&hay, &needle).expect("match");
        assert_eq!(m.offset, 12_345);
        assert!(m.correlation > 0.9, "{m:?}");
        // A different chirp is not found with high correlation.
        let other = chirp_samples(3000.0, 300.0, 0.5, 9600);
        let m2 = find(&hay, &other).expect("match");
        assert!(m2.correlation < 0.3, "{m2:?}");
        assert!(find(&needle[..10], &needle).is_none());
    }

    #[test]
    fn impulse_position() {
        let mut s = vec![0.0; 100];
        s[42] = -0.8;
        assert_eq!(first_above(&s, 0.5), Some(42));
        assert_eq!(rms(&[]), 0.0);
    }
}
