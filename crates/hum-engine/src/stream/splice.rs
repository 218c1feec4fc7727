//! Switching layers without a gap (sans-IO): while a viewer moves from one layer's swarm to
//! another, two viewer state machines run side by side, the old one playing from what it holds
//! and the new one fetching from the old one's buffered end. The [`Splicer`] turns both players'
//! events into the one sequence the viewer plays: every sequence number once, in order, each
//! from the old layer until the first one the new layer can give, then from the new layer.
//!
//! Layers share sequence numbers (the streamer cuts every layer at the same media times, one
//! chunk per layer per slot: docs/stream.md, "Layers"), so "the chunk after 41" is 42 in any
//! layer, and a viewer may cut between layers at any chunk boundary (each chunk starts on a
//! keyframe).
//!
//! The cut happens at the first of:
//! - the old layer's player reaching a chunk the new layer already holds (the usual case: the new
//!   machine asked for the chunks after the old one's buffered end at once);
//! - the new layer's player reaching a chunk at or past the playhead (the new one got ahead, or
//!   the old one stalled with nothing left to play).
//!
//! Nothing before the playhead is played twice and nothing is skipped that either layer holds.

use std::time::Duration;

use hum_mesh::Layer;

/// One step of what the viewer plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Play chunk `seq` of `layer` (held, verified, by that layer's machine).
    Play { layer: Layer, seq: u64 },
    /// Chunk `seq` is lost to both layers (the player gave it up).
    Skip { seq: u64 },
}

/// Merges the playout of the layer being left and the layer being joined.
#[derive(Clone, Debug)]
pub struct Splicer {
    active: Layer,
    pending: Option<Layer>,
    /// The next sequence number to play (`None` until the first).
    next: Option<u64>,
    switches: u64,
}

impl Splicer {
    pub fn new(layer: Layer) -> Self {
        Splicer {
            active: layer,
            pending: None,
            next: None,
            switches: 0,
        }
    }

    /// The layer playing now.
    pub fn active(&self) -> Layer {
        self.active
    }

    /// The layer being switched to, until the cut.
    pub fn pending(&self) -> Option<Layer> {
        self.pending
    }

    /// The playhead: the next sequence number to play.
    pub fn next_seq(&self) -> Option<u64> {
        self.next
    }

    /// Cuts done so far.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// Begin moving to `layer` (a switch already under way is redirected; back to the active
    /// layer cancels it).
    pub fn switch_to(&mut self, layer: Layer) {
        self.pending = (layer != self.active).then_some(layer);
    }

    /// A machine's player reached `seq`: `played` (it holds the chunk) or gave it up. `has(l, s)`:
    /// whether layer `l`'s machine holds chunk `s` now. Returns what to play, in order, and whether
    /// the cut to the pending layer happened (its old machine can go).
    pub fn reached(
        &mut self,
        from: Layer,
        seq: u64,
        played: bool,
        has: impl Fn(Layer, u64) -> bool,
    ) -> (Vec<Pick>, bool) {
        let mut out = Vec::new();
        let next = self.next.unwrap_or(seq);
        if seq < next {
            return (out, false);
        }
        let cut = if from == self.active {
            false
        } else if Some(from) == self.pending {
            // The new layer's player is at or past the playhead: it takes over from here.
            self.cut();
            true
        } else {
            return (out, false);
        };
        let mut did_cut = cut;
        for s in next..=seq {
            if let Some(p) = self.pending
                && has(p, s)
            {
                self.cut();
                did_cut = true;
            }
            let here = if s == seq && from == self.active {
                played
            } else {
                has(self.active, s)
            };
            out.push(if here {
                Pick::Play {
                    layer: self.active,
                    seq: s,
                }
            } else {
                Pick::Skip { seq: s }
            });
        }
        self.next = Some(seq + 1);
        (out, did_cut)
    }

    fn cut(&mut self) {
        if let Some(p) = self.pending.take() {
            self.active = p;
            self.switches += 1;
        }
    }
}

/// Auto download quality (sans-IO): the viewer's player counts in, a layer out. Down one layer
/// when the player stalls or skips `DOWN_AFTER` times within `WINDOW` (the layer is more than the
/// download carries); up one layer after `UP_AFTER` without a stall, and that wait doubles each
/// time an upward step had to be undone (up to `UP_MAX`), so a link that cannot carry the better
/// layer is not probed every minute. Never above `best` (the download-quality setting's cap).
#[derive(Clone, Debug)]
pub struct AutoQuality {
    /// Published layers, best first.
    layers: Vec<Layer>,
    best: usize,
    at: usize,
    /// (time, count) of recent stalls and skips.
    trouble: std::collections::VecDeque<Duration>,
    last_count: u64,
    clean_since: Duration,
    up_wait: Duration,
    /// When the last step up was taken (a step down soon after undoes it).
    stepped_up: Option<Duration>,
}

impl AutoQuality {
    pub const WINDOW: Duration = Duration::from_secs(10);
    pub const DOWN_AFTER: usize = 2;
    pub const UP_AFTER: Duration = Duration::from_secs(30);
    pub const UP_MAX: Duration = Duration::from_secs(240);

    /// `layers` best first; watching `start` (clamped to them) at time `now`.
    pub fn new(layers: Vec<Layer>, start: Layer, now: Duration) -> Self {
        let at = layers.iter().position(|l| *l == start).unwrap_or(0);
        AutoQuality {
            layers,
            best: 0,
            at,
            trouble: Default::default(),
            last_count: 0,
            clean_since: now,
            up_wait: Self::UP_AFTER,
            stepped_up: None,
        }
    }

    pub fn layer(&self) -> Layer {
        self.layers.get(self.at).copied().unwrap_or(Layer::Audio)
    }

    /// The player's stalls + skips so far (a running count) at `now`: the layer to watch now
    /// (`Some` when it changed).
    pub fn update(&mut self, now: Duration, stalls_and_skips: u64) -> Option<Layer> {
        let new = stalls_and_skips.saturating_sub(self.last_count);
        self.last_count = stalls_and_skips;
        for _ in 0..new {
            self.trouble.push_back(now);
        }
        while self
            .trouble
            .front()
            .is_some_and(|t| now.saturating_sub(*t) > Self::WINDOW)
        {
            self.trouble.pop_front();
        }
        if new > 0 {
            self.clean_since = now;
        }
        if self.trouble.len() >= Self::DOWN_AFTER
            && let Some(l) = self.step_down(now)
        {
            return Some(l);
        }
        if self.at > self.best && now.saturating_sub(self.clean_since) >= self.up_wait {
            self.at -= 1;
            self.stepped_up = Some(now);
            self.clean_since = now;
            return Some(self.layer());
        }
        None
    }

    /// The bandwidth service asks to lower the viewing layer (even relaying nothing does not
    /// keep the game's ping down): one layer down now, like a step down on stalls.
    pub fn lower(&mut self, now: Duration) -> Option<Layer> {
        self.step_down(now)
    }

    fn step_down(&mut self, now: Duration) -> Option<Layer> {
        if self.at + 1 >= self.layers.len() {
            return None;
        }
        // A step up that did not hold: wait longer before the next probe.
        if self
            .stepped_up
            .is_some_and(|t| now.saturating_sub(t) < Self::UP_AFTER)
        {
            self.up_wait = (self.up_wait * 2).min(Self::UP_MAX);
        }
        self.stepped_up = None;
        self.at += 1;
        self.trouble.clear();
        self.clean_since = now;
        Some(self.layer())
    }
}

/// What the viewer picked in the player's quality menu.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quality {
    /// Auto quality ([`AutoQuality`]), never above the download-quality setting's layer.
    Auto,
    /// This layer (the best published one no better than it) until the viewer picks again;
    /// only the bandwidth service's "lower the viewing layer" moves it, down.
    Fixed(Layer),
}

/// The player's quality rule (sans-IO): the viewer's pick, and the layer to watch. A fixed pick
/// is never moved by the player's stalls or clean time (auto steering is off); picking Auto
/// starts auto quality again from the layer watched now, capped at `cap` (the download-quality
/// setting: a layer above it steps down to it at once). A fixed pick may be above the cap (the
/// viewer asked for it). The bandwidth service's asks to lower the layer apply to both: auto
/// steps down and probes up again later; a fixed pick steps down and stays there.
#[derive(Clone, Debug)]
pub struct QualityControl {
    /// Published layers, best first.
    layers: Vec<Layer>,
    /// The best layer auto may pick (a published one).
    cap: Layer,
    choice: Quality,
    /// The layer watched now (or being switched to).
    layer: Layer,
    /// Running while the choice is [`Quality::Auto`].
    auto: Option<AutoQuality>,
}

impl QualityControl {
    /// `layers` as published, best first (at least one); `cap`: the download-quality setting
    /// (`None`: the best); watching what `choice` asks for from `now`, the player's stalls and
    /// skips counted so far `stalls_and_skips`.
    pub fn new(
        layers: Vec<Layer>,
        cap: Option<Layer>,
        choice: Quality,
        now: Duration,
        stalls_and_skips: u64,
    ) -> Self {
        let mut layers = layers;
        layers.sort_unstable();
        layers.dedup();
        if layers.is_empty() {
            layers.push(Layer::High);
        }
        let mut q = QualityControl {
            cap: Layer::High,
            layer: layers[0],
            layers,
            choice: Quality::Fixed(Layer::High),
            auto: None,
        };
        q.cap = q.published(cap.unwrap_or(Layer::High));
        q.layer = match choice {
            Quality::Auto => q.cap,
            Quality::Fixed(l) => q.published(l),
        };
        q.set(now, choice, stalls_and_skips);
        q
    }

    /// The best published layer no better than `l` (the lowest published if all are better).
    fn published(&self, l: Layer) -> Layer {
        self.layers
            .iter()
            .copied()
            .find(|p| *p >= l)
            .unwrap_or(self.layers[self.layers.len() - 1])
    }

    pub fn choice(&self) -> Quality {
        self.choice
    }

    /// The layer to watch now.
    pub fn layer(&self) -> Layer {
        self.layer
    }

    /// The viewer picks `choice` at `now` (the player's running count of stalls and skips:
    /// auto counts only what comes after): the layer to switch to, `Some` when it changes.
    pub fn set(&mut self, now: Duration, choice: Quality, stalls_and_skips: u64) -> Option<Layer> {
        let to = match choice {
            Quality::Fixed(l) => {
                let l = self.published(l);
                self.choice = Quality::Fixed(l);
                self.auto = None;
                l
            }
            Quality::Auto => {
                self.choice = Quality::Auto;
                let start = self.layer.max(self.cap);
                let under_cap: Vec<Layer> = self
                    .layers
                    .iter()
                    .copied()
                    .filter(|l| *l >= self.cap)
                    .collect();
                let mut a = AutoQuality::new(under_cap, start, now);
                a.last_count = stalls_and_skips;
                self.auto = Some(a);
                start
            }
        };
        self.move_to(to)
    }

    /// The player's running count of stalls and skips at `now`: the layer to switch to (only
    /// ever in auto).
    pub fn update(&mut self, now: Duration, stalls_and_skips: u64) -> Option<Layer> {
        let to = self.auto.as_mut()?.update(now, stalls_and_skips)?;
        self.move_to(to)
    }

    /// The bandwidth service asks to lower the viewing layer: one layer down (auto probes up
    /// again later; a fixed pick stays down until the viewer picks again).
    pub fn lower(&mut self, now: Duration) -> Option<Layer> {
        let to = match &mut self.auto {
            Some(a) => a.lower(now)?,
            None => {
                let below = self.layers.iter().copied().find(|l| *l > self.layer)?;
                self.choice = Quality::Fixed(below);
                below
            }
        };
        self.move_to(to)
    }

    fn move_to(&mut self, to: Layer) -> Option<Layer> {
        (to != self.layer).then(|| {
            self.layer = to;
            to
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Two players over virtual time: the old layer holds `old` and plays one chunk per tick from
    /// `old_from`; the new one holds chunks from `new_from` (arriving at once) and plays from
    /// `new_start_seq` starting at tick `new_start_tick`. Returns the picks.
    fn run(
        old_holds: impl Fn(u64) -> bool,
        new_from: u64,
        new_start_tick: u64,
        new_start_seq: u64,
        switch_tick: u64,
    ) -> (Vec<Pick>, u64) {
        let mut sp = Splicer::new(Layer::High);
        let mut picks = Vec::new();
        let mut cut_at = None;
        let mut old_alive = true;
        for tick in 0..40u64 {
            if tick == switch_tick {
                sp.switch_to(Layer::Low);
            }
            let switched = tick >= switch_tick;
            let has = |l: Layer, s: u64| match l {
                Layer::High => old_holds(s),
                _ => switched && s >= new_from,
            };
            // The old player: chunk `tick` (from 0), as long as its machine lives.
            if old_alive {
                let (p, cut) = sp.reached(Layer::High, tick, old_holds(tick), has);
                picks.extend(p);
                if cut {
                    cut_at.get_or_insert(tick);
                    old_alive = false;
                }
            }
            if switched && tick >= new_start_tick {
                let s = new_start_seq + (tick - new_start_tick);
                let (p, cut) = sp.reached(Layer::Low, s, s >= new_from, has);
                picks.extend(p);
                if cut {
                    cut_at.get_or_insert(tick);
                    old_alive = false;
                }
            }
        }
        (picks, cut_at.expect("the switch happened"))
    }

    fn check_contiguous(picks: &[Pick]) -> BTreeSet<Layer> {
        let mut layers = BTreeSet::new();
        for (i, p) in picks.iter().enumerate() {
            match p {
                Pick::Play { layer, seq } => {
                    assert_eq!(*seq, i as u64, "{picks:?}");
                    layers.insert(*layer);
                }
                Pick::Skip { seq } => panic!("skipped {seq}: {picks:?}"),
            }
        }
        layers
    }

    #[test]
    fn the_old_layer_plays_until_the_new_one_holds_the_next_chunk() {
        // Switch at tick 10; the new layer fetches from 14 (the old one's buffered end + 1) and
        // its player starts late, at tick 18 with chunk 14: the old player's 14 is the cut.
        let (picks, cut) = run(|s| s < 20, 14, 18, 14, 10);
        assert_eq!(cut, 14);
        assert_eq!(check_contiguous(&picks).len(), 2);
        assert!(picks[..14].iter().all(|p| matches!(
            p,
            Pick::Play {
                layer: Layer::High,
                ..
            }
        )));
        assert!(picks[14..].iter().all(|p| matches!(
            p,
            Pick::Play {
                layer: Layer::Low,
                ..
            }
        )));
    }

    #[test]
    fn a_new_layer_ahead_of_the_playhead_takes_over_without_skipping() {
        // The new player starts at tick 11 already at chunk 16: it takes over, and 11..=16 come
        // from the new layer (it holds them from 11).
        let (picks, cut) = run(|s| s < 13, 11, 11, 16, 10);
        assert_eq!(cut, 11);
        check_contiguous(&picks[..11]);
        assert!(picks.iter().all(|p| matches!(p, Pick::Play { .. })));
        let seqs: Vec<u64> = picks
            .iter()
            .map(|p| match p {
                Pick::Play { seq, .. } | Pick::Skip { seq } => *seq,
            })
            .collect();
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    }

    #[test]
    fn a_stalled_old_layer_hands_over_at_the_new_players_first_chunk() {
        // The old machine holds nothing past 12 (its swarm is gone); it stalls. The new one holds
        // from 13 and plays 13 at tick 16: no chunk is lost, the playhead waits (a stall).
        let mut sp = Splicer::new(Layer::High);
        let has = |l: Layer, s: u64| if l == Layer::High { s <= 12 } else { s >= 13 };
        let mut picks = Vec::new();
        for s in 0..=12 {
            picks.extend(sp.reached(Layer::High, s, true, has).0);
        }
        sp.switch_to(Layer::Low);
        // The new player's first chunk: the cut.
        let (p, cut) = sp.reached(Layer::Low, 13, true, has);
        assert!(cut);
        picks.extend(p);
        // The old machine, if it still ran, is ignored now.
        assert_eq!(sp.reached(Layer::High, 14, false, has).0, vec![]);
        picks.extend(sp.reached(Layer::Low, 14, true, has).0);
        assert_eq!(check_contiguous(&picks).len(), 2);
        assert_eq!(sp.active(), Layer::Low);
        assert_eq!(sp.switches(), 1);
        assert_eq!(sp.pending(), None);
    }

    #[test]
    fn lost_chunks_are_skipped_once_and_back_to_the_same_layer_cancels() {
        let mut sp = Splicer::new(Layer::Audio);
        let has = |_: Layer, s: u64| s != 3;
        let mut picks = Vec::new();
        for s in [0, 1, 2, 4, 5] {
            picks.extend(sp.reached(Layer::Audio, s, true, has).0);
        }
        assert_eq!(picks[3], Pick::Skip { seq: 3 });
        assert_eq!(picks.len(), 6);
        sp.switch_to(Layer::Low);
        sp.switch_to(Layer::Audio);
        assert_eq!(sp.pending(), None);
        // A duplicate or stale report plays nothing.
        assert!(sp.reached(Layer::Audio, 5, true, has).0.is_empty());
        assert!(sp.reached(Layer::High, 9, true, has).0.is_empty());
    }

    #[test]
    fn auto_quality_steps_down_on_stalls_and_probes_up_less_often_after_a_failed_step() {
        let layers = vec![Layer::High, Layer::Low, Layer::Audio];
        let s = |x: u64| Duration::from_secs(x);
        let mut q = AutoQuality::new(layers, Layer::High, s(0));
        // One stall is noise; two within 10 s step down.
        assert_eq!(q.update(s(1), 1), None);
        assert_eq!(
            q.update(s(20), 2),
            None,
            "the first stall is out of the window"
        );
        assert_eq!(q.update(s(25), 3), Some(Layer::Low));
        // 30 s clean: probe up.
        assert_eq!(q.update(s(54), 3), None);
        assert_eq!(q.update(s(55), 3), Some(Layer::High));
        // It does not hold: down again, and the next probe waits 60 s.
        assert_eq!(q.update(s(60), 5), Some(Layer::Low));
        assert_eq!(q.update(s(91), 5), None);
        assert_eq!(q.update(s(120), 5), Some(Layer::High));
        // Never below the lowest layer, never above the best.
        let mut q = AutoQuality::new(vec![Layer::Low, Layer::Audio], Layer::Audio, s(0));
        assert_eq!(q.update(s(1), 10), None);
        assert_eq!(q.layer(), Layer::Audio);
        assert_eq!(q.update(s(100), 10), Some(Layer::Low));
        assert_eq!(q.update(s(1000), 10), None);
        assert_eq!(q.layer(), Layer::Low);
    }

    #[test]
    fn a_fixed_quality_is_not_moved_by_stalls_and_auto_resumes_from_where_it_is() {
        let layers = vec![Layer::High, Layer::Low, Layer::Audio];
        let s = |x: u64| Duration::from_secs(x);
        // Auto (the setting: the best) watches `high` and steps down on two stalls.
        let mut q = QualityControl::new(layers.clone(), None, Quality::Auto, s(0), 0);
        assert_eq!(q.layer(), Layer::High);
        assert_eq!(q.update(s(1), 1), None);
        assert_eq!(q.update(s(2), 2), Some(Layer::Low));
        // The viewer picks `high`: switched at once, and no stall or clean minute moves it.
        assert_eq!(
            q.set(s(3), Quality::Fixed(Layer::High), 2),
            Some(Layer::High)
        );
        assert_eq!(q.choice(), Quality::Fixed(Layer::High));
        for (t, n) in [(4, 4), (5, 6), (6, 9), (7, 12)] {
            assert_eq!(q.update(s(t), n), None, "stalls moved a fixed pick");
        }
        // `low`, then a long clean run: it stays at `low` (auto would have probed up at 30 s).
        assert_eq!(
            q.set(s(8), Quality::Fixed(Layer::Low), 12),
            Some(Layer::Low)
        );
        assert_eq!(
            q.update(s(200), 12),
            None,
            "clean time moved a fixed pick up"
        );
        assert_eq!(q.layer(), Layer::Low);
        // Auto again: it starts from `low` (no switch), counts only stalls after the pick...
        assert_eq!(q.set(s(201), Quality::Auto, 12), None);
        assert_eq!(q.choice(), Quality::Auto);
        assert_eq!(q.update(s(202), 12), None);
        // ...probes up after 30 s clean, and steps down on two new stalls.
        assert_eq!(q.update(s(231), 12), Some(Layer::High));
        assert_eq!(q.update(s(232), 13), None);
        assert_eq!(q.update(s(233), 14), Some(Layer::Low));
        // A layer the stream lacks: the best published below it.
        assert_eq!(q.set(s(240), Quality::Fixed(Layer::Medium), 14), None);
        assert_eq!(q.choice(), Quality::Fixed(Layer::Low));
    }

    #[test]
    fn auto_is_capped_by_the_download_setting_and_a_fixed_pick_may_exceed_it() {
        let layers = vec![Layer::High, Layer::Low, Layer::Audio];
        let s = |x: u64| Duration::from_secs(x);
        // The setting says 720p (`medium`): this stream's best under it is `low`.
        let mut q = QualityControl::new(layers, Some(Layer::Medium), Quality::Auto, s(0), 0);
        assert_eq!(q.layer(), Layer::Low);
        assert_eq!(q.update(s(100), 0), None, "auto probed above the setting");
        // The viewer asks for `high` anyway: it gets it.
        assert_eq!(
            q.set(s(101), Quality::Fixed(Layer::High), 0),
            Some(Layer::High)
        );
        // Auto from there steps down to the setting at once.
        assert_eq!(q.set(s(102), Quality::Auto, 0), Some(Layer::Low));
        // The bandwidth service lowers a fixed pick, which stays down.
        let mut q = QualityControl::new(
            vec![Layer::High, Layer::Low, Layer::Audio],
            None,
            Quality::Fixed(Layer::High),
            s(0),
            0,
        );
        assert_eq!(q.lower(s(1)), Some(Layer::Low));
        assert_eq!(q.choice(), Quality::Fixed(Layer::Low));
        assert_eq!(q.update(s(500), 0), None);
        assert_eq!(q.lower(s(501)), Some(Layer::Audio));
        assert_eq!(q.lower(s(502)), None);
    }

    #[test]
    fn the_bandwidth_service_lowers_the_layer_one_step_at_a_time() {
        let layers = vec![Layer::High, Layer::Medium, Layer::Low];
        let s = |x: u64| Duration::from_secs(x);
        let mut q = AutoQuality::new(layers, Layer::High, s(0));
        assert_eq!(q.lower(s(1)), Some(Layer::Medium));
        // No stall since: back up after the usual 30 s...
        assert_eq!(q.update(s(30), 0), None);
        assert_eq!(q.update(s(31), 0), Some(Layer::High));
        // ... and asked again soon after: down, and the next probe waits twice as long.
        assert_eq!(q.lower(s(40)), Some(Layer::Medium));
        assert_eq!(q.update(s(71), 0), None);
        assert_eq!(q.update(s(100), 0), Some(Layer::High));
        assert_eq!(q.lower(s(200)), Some(Layer::Medium));
        assert_eq!(q.lower(s(201)), Some(Layer::Low));
        assert_eq!(q.lower(s(202)), None, "nothing below the lowest layer");
        assert_eq!(q.layer(), Layer::Low);
    }
}
