//! Rate limit for keyframe requests sent upstream to a publisher.
//!
//! Many subscribers switching layers, plus any client flooding PLIs, must not make the publisher
//! send a keyframe per request: one request per layer per `min_interval` goes upstream, the rest
//! are counted and dropped (the keyframe already asked for serves them all).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::layer::Layer;

#[derive(Debug)]
pub struct PliLimiter {
    min_interval: Duration,
    last: BTreeMap<Layer, Instant>,
    pub sent: u64,
    pub suppressed: u64,
}

impl PliLimiter {
    pub fn new(min_interval: Duration) -> Self {
        PliLimiter {
            min_interval,
            last: BTreeMap::new(),
            sent: 0,
            suppressed: 0,
        }
    }

    /// A subscriber wants a keyframe of `layer`: true when the request goes upstream now.
    pub fn request(&mut self, layer: Layer, now: Instant) -> bool {
        match self.last.get(&layer) {
            Some(&at) if now.saturating_duration_since(at) < self.min_interval => {
                self.suppressed += 1;
                false
            }
            _ => {
                self.last.insert(layer, now);
                self.sent += 1;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_becomes_one_request_per_interval_per_layer() {
        let t0 = Instant::now();
        let mut l = PliLimiter::new(Duration::from_millis(500));
        let mut up = 0;
        // 1,000 requests over 2 s for layer 0, plus one for layer 2.
        for i in 0..1000u64 {
            if l.request(Layer(0), t0 + Duration::from_millis(i * 2)) {
                up += 1;
            }
        }
        assert!(l.request(Layer(2), t0));
        assert_eq!(up, 4, "2 s / 500 ms");
        assert_eq!(l.suppressed, 996);
    }
}
