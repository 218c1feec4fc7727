//! The playout clock: when each chunk is due, stalls, skips, buffer health.
//!
//! Playback starts `start_buffer` after the first chunk arrives. From then on chunk `s` is due at
//! `t0 + (s - s0) * duration + stalled`. A chunk present when due plays on time. A chunk missing when
//! due stalls playback (the whole schedule slips, which is what a viewer sees as a spinner and what
//! raises their lag). If it arrives, it plays late. If it has not come after `max_stall` while a later
//! chunk is already here, it is skipped (deadline dropping; the stall stands in for the skipped chunk's
//! slot). With nothing later in hand the player keeps waiting: that is rebuffering, and it adds lag.
//!
//! Catching up: lag a stall added would otherwise stay for the rest of the stream (the schedule only
//! slips one way). While more than [`CATCH_UP_AHEAD`] chunks beyond the start buffer are held
//! ahead of the playhead, and until as much has been taken back as stalls added (never the lag the
//! viewer started with), each chunk plays at [`CATCH_UP_RATE`] (its `play_us` in
//! [`MeshEvent::Played`] is shorter than its duration, so the schedule moves back towards the live
//! edge by a tenth of a chunk per chunk), as low-latency live players do rather than jumping; the
//! media layer plays its frames faster to match. Nothing is skipped, and the buffer it keeps is
//! never less than the start buffer plus a chunk, so catching up does not cause the next stall.
//!
//! The player is evaluated lazily: `advance(now, ..)` catches up everything due by `now`, so a caller
//! calls it before and after every chunk arrival and at `next_wake`, and needs no timer per chunk.

use std::time::Duration;

use crate::{MeshEvent, Time};

/// How much faster than real time a chunk plays while the player catches up (1.1: a 250 ms chunk
/// in ~227 ms; the lag shrinks by ~0.1 s a second).
pub const CATCH_UP_RATE: f64 = 1.1;
/// Catch up only while more than this many chunks beyond the start buffer are held ahead.
pub const CATCH_UP_AHEAD: u64 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    /// The first chunk arrived at `at`; playback begins at `at + start_buffer`.
    Buffering {
        seq0: u64,
        start: Time,
    },
    Playing {
        seq0: u64,
        t0: Time,
    },
}

#[derive(Clone, Debug)]
pub struct Player {
    dur_us: u64,
    start_buffer: Duration,
    max_stall: Duration,
    state: State,
    /// Accumulated slip (stall time), microseconds.
    slip_us: i64,
    /// The next chunk to play.
    next: u64,
    stalled_since: Option<Time>,
    pub on_time: u64,
    pub late: u64,
    pub skipped: u64,
    /// Chunks played at the catch-up rate, and the lag that took back (µs).
    pub caught_up: u64,
    pub caught_up_us: u64,
    /// Time spent stalled, microseconds (closed stalls only; see [`Player::stalled_us`]).
    stall_us: u64,
    /// Held chunks ahead of the playhead above which it catches up; `u64::MAX`: never.
    catch_up_above: u64,
    /// How much stalls slipped the schedule in all (µs): catching up takes back at most this,
    /// never the lag the viewer started with.
    stall_slip_us: u64,
}

impl Player {
    pub fn new(chunk: Duration, start_buffer: Duration, max_stall: Duration) -> Self {
        Player {
            dur_us: chunk.as_micros().max(1) as u64,
            start_buffer,
            max_stall,
            state: State::Idle,
            slip_us: 0,
            next: 0,
            stalled_since: None,
            on_time: 0,
            late: 0,
            skipped: 0,
            caught_up: 0,
            caught_up_us: 0,
            stall_us: 0,
            catch_up_above: start_buffer.as_micros() as u64 / chunk.as_micros().max(1) as u64
                + CATCH_UP_AHEAD,
            stall_slip_us: 0,
        }
    }

    /// Never play faster than real time (lag a stall added stays).
    pub fn without_catch_up(mut self) -> Self {
        self.catch_up_above = u64::MAX;
        self
    }

    /// How long chunk `next` plays (µs) given what is held ahead of it: its duration, or less while
    /// catching up (and the schedule moves back by the difference).
    fn play_time(&mut self, has: &impl Fn(u64) -> bool) -> u64 {
        if self.catch_up_above == u64::MAX {
            return self.dur_us;
        }
        let play = (self.dur_us as f64 / CATCH_UP_RATE).round() as u64;
        let gained = self.dur_us - play;
        // Only lag that stalls added is taken back: the buffer a viewer started with (its start
        // buffer and however late its first chunk came) is its margin against the next stall.
        // Checked first: a viewer that never stalled (most of them) scans nothing.
        if self.caught_up_us + gained > self.stall_slip_us {
            return self.dur_us;
        }
        let mut ahead = 0;
        while ahead <= self.catch_up_above && has(self.next + 1 + ahead) {
            ahead += 1;
        }
        if ahead <= self.catch_up_above {
            return self.dur_us;
        }
        self.slip_us -= gained as i64;
        self.caught_up += 1;
        self.caught_up_us += gained;
        play
    }

    pub fn is_started(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// The next chunk playback needs (the playhead).
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The first chunk has arrived: begin buffering at `seq`.
    pub fn begin(&mut self, now: Time, seq: u64) {
        if self.state == State::Idle {
            self.state = State::Buffering {
                seq0: seq,
                start: now + self.start_buffer,
            };
            self.next = seq;
        }
    }

    /// When chunk `seq` is due (if the schedule is known).
    pub fn due(&self, seq: u64) -> Option<Time> {
        let (seq0, t0) = match self.state {
            State::Idle => return None,
            State::Buffering { seq0, start } => (seq0, start),
            State::Playing { seq0, t0 } => (seq0, t0),
        };
        Some(Time(
            (t0.0 + seq.saturating_sub(seq0) * self.dur_us).saturating_add_signed(self.slip_us),
        ))
    }

    /// Catch up to `now`. `has(seq)` says whether a chunk is held; `hops(seq)` its hop count.
    pub fn advance(
        &mut self,
        now: Time,
        has: impl Fn(u64) -> bool,
        hops: impl Fn(u64) -> u8,
        out: &mut Vec<MeshEvent>,
    ) {
        if let State::Buffering { seq0, start } = self.state {
            if now < start {
                return;
            }
            self.state = State::Playing { seq0, t0: start };
            out.push(MeshEvent::Started {
                seq: seq0,
                at: start,
            });
        }
        if !matches!(self.state, State::Playing { .. }) {
            return;
        }
        loop {
            let Some(due) = self.due(self.next) else {
                return;
            };
            if due > now {
                return;
            }
            match self.stalled_since {
                None if has(self.next) => {
                    self.on_time += 1;
                    let play_us = self.play_time(&has);
                    out.push(MeshEvent::Played {
                        seq: self.next,
                        at: due,
                        on_time: true,
                        hops: hops(self.next),
                        play_us,
                    });
                    self.next += 1;
                }
                None => self.stalled_since = Some(due),
                Some(since) if has(self.next) => {
                    self.slip_us += now.since(since).as_micros() as i64;
                    self.stall_slip_us += now.since(since).as_micros() as u64;
                    self.stall_us += now.since(since).as_micros() as u64;
                    self.stalled_since = None;
                    self.late += 1;
                    let play_us = self.play_time(&has);
                    out.push(MeshEvent::Played {
                        seq: self.next,
                        at: now,
                        on_time: false,
                        hops: hops(self.next),
                        play_us,
                    });
                    self.next += 1;
                }
                Some(since) if now >= since + self.max_stall && has_later(&has, self.next) => {
                    // Deadline dropping: a later chunk is here, so give this one up rather than wait.
                    // The stall used up the skipped chunk's own slot; only waiting beyond it slips.
                    let waited = now.since(since).as_micros() as u64;
                    self.stall_us += waited;
                    self.slip_us += waited.saturating_sub(self.dur_us) as i64;
                    self.stall_slip_us += waited.saturating_sub(self.dur_us);
                    self.stalled_since = None;
                    self.skipped += 1;
                    out.push(MeshEvent::Skipped {
                        seq: self.next,
                        at: now,
                        jump: false,
                    });
                    self.next += 1;
                }
                Some(_) => return,
            }
        }
    }

    /// Catch up: playback has fallen so far behind that the chunks it waits for are gone from the
    /// mesh. Skip to `seq`, due now (the stall so far stays counted; the lag shrinks). Returns the
    /// chunks jumped over (counted as skipped: the caller reports them as [`MeshEvent::Skipped`]).
    pub fn jump_to(&mut self, now: Time, seq: u64) -> std::ops::Range<u64> {
        let State::Playing { seq0, t0 } = self.state else {
            return seq..seq;
        };
        if seq <= self.next {
            return seq..seq;
        }
        let jumped = self.next..seq;
        if let Some(since) = self.stalled_since.take() {
            self.stall_us += now.since(since).as_micros() as u64;
        }
        self.skipped += seq - self.next;
        self.next = seq;
        let nominal = t0.0 + (seq - seq0) * self.dur_us;
        self.slip_us = now.0 as i64 - nominal as i64;
        jumped
    }

    /// Total time stalled up to `now`, including a stall still going on.
    pub fn stalled_us(&self, now: Time) -> u64 {
        self.stall_us
            + self
                .stalled_since
                .map_or(0, |s| now.since(s).as_micros() as u64)
    }

    /// Chunk slots lost to stalls: stalled time in chunk durations (rounded down).
    pub fn stalled_chunks(&self, now: Time) -> u64 {
        self.stalled_us(now) / self.dur_us
    }

    /// When `advance` next has something to do if no chunk arrives: playback start, the playhead's
    /// deadline if it is missing, or the end of a stall.
    pub fn next_wake(&self, now: Time, has_next: bool) -> Option<Time> {
        match self.state {
            State::Idle => None,
            State::Buffering { start, .. } => Some(start),
            State::Playing { .. } => match self.stalled_since {
                // Past max_stall only an arrival can unblock us (rebuffering): no timer.
                Some(since) => Some(since + self.max_stall).filter(|w| *w > now),
                None if has_next => None,
                None => self.due(self.next),
            },
        }
    }

    /// Media buffered ahead of the playhead: `contiguous` held chunks from the playhead, minus how far
    /// into the current one playback is.
    pub fn buffer_health(&self, now: Time, contiguous: u64) -> Duration {
        let ahead = contiguous * self.dur_us;
        let into = match self.due(self.next) {
            Some(d) if self.stalled_since.is_none() && now > d => now.0 - d.0,
            _ => 0,
        };
        Duration::from_micros(ahead.saturating_sub(into))
    }
}

fn has_later(has: &impl Fn(u64) -> bool, next: u64) -> bool {
    (next + 1..next + 64).any(has)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Time {
        Time::from_millis(x)
    }

    /// Chunks arrive at the given times (ms; None = never). Returns the events as a compact string.
    fn play(arrivals: &[Option<u64>], until_ms: u64) -> (String, Player) {
        let p = Player::new(
            Duration::from_millis(250),
            Duration::from_millis(500),
            Duration::from_millis(250),
        );
        play_on(p, arrivals, until_ms)
    }

    fn play_on(mut p: Player, arrivals: &[Option<u64>], until_ms: u64) -> (String, Player) {
        let mut have = vec![false; arrivals.len()];
        let mut events = vec![];
        let mut times: Vec<(u64, usize)> = arrivals
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.map(|t| (t, i)))
            .collect();
        times.sort();
        let mut cur = 0;
        let step = |p: &mut Player, now: u64, have: &Vec<bool>, ev: &mut Vec<MeshEvent>| {
            p.advance(
                ms(now),
                |s| have.get(s as usize).copied().unwrap_or(false),
                |_| 1,
                ev,
            )
        };
        for (t, i) in times {
            // Wake for anything due before this arrival.
            while let Some(w) = p.next_wake(
                ms(cur),
                have.get(p.next_seq() as usize).copied().unwrap_or(false),
            ) {
                if w.0 > t * 1000 || w.0 <= cur * 1000 {
                    break;
                }
                cur = w.0 / 1000;
                step(&mut p, cur, &have, &mut events);
            }
            cur = t;
            step(&mut p, t, &have, &mut events);
            have[i] = true;
            p.begin(ms(t), i as u64);
            step(&mut p, t, &have, &mut events);
        }
        while let Some(w) = p.next_wake(
            ms(cur),
            have.get(p.next_seq() as usize).copied().unwrap_or(false),
        ) {
            if w.0 > until_ms * 1000 || w.0 <= cur * 1000 {
                break;
            }
            cur = w.0 / 1000;
            step(&mut p, cur, &have, &mut events);
        }
        step(&mut p, until_ms, &have, &mut events);
        let s = events
            .iter()
            .map(|e| match e {
                MeshEvent::Started { seq, at: t } => format!("start{seq}@{}", t.0 / 1000),
                MeshEvent::Played {
                    seq,
                    at: t,
                    on_time: true,
                    play_us: 250_000,
                    ..
                } => format!("p{seq}@{}", t.0 / 1000),
                MeshEvent::Played {
                    seq,
                    at: t,
                    on_time: true,
                    play_us,
                    ..
                } => format!("fast{seq}@{}/{}", t.0 / 1000, play_us / 1000),
                MeshEvent::Played { seq, at: t, .. } => format!("late{seq}@{}", t.0 / 1000),
                MeshEvent::Skipped { seq, at: t, .. } => format!("skip{seq}@{}", t.0 / 1000),
                e => format!("{e:?}"),
            })
            .collect::<Vec<_>>()
            .join(" ");
        (s, p)
    }

    #[test]
    fn steady_arrivals_play_on_time() {
        let (s, p) = play(&[Some(100), Some(300), Some(550), Some(800)], 1700);
        assert_eq!(s, "start0@600 p0@600 p1@850 p2@1100 p3@1350");
        assert_eq!((p.on_time, p.late, p.skipped), (4, 0, 0));
    }

    #[test]
    fn a_late_chunk_stalls_and_slips_the_schedule() {
        // Chunk 1 is due at 850 but arrives at 1000: 150 ms stall, chunk 2 then due at 1250.
        let (s, p) = play(&[Some(100), Some(1000), Some(1100), None], 1400);
        assert_eq!(s, "start0@600 p0@600 late1@1000 p2@1250");
        assert_eq!((p.on_time, p.late), (2, 1));
        assert_eq!(p.due(3), Some(ms(1500)));
    }

    #[test]
    fn a_missing_chunk_is_skipped_once_a_later_one_is_here() {
        let (s, p) = play(&[Some(100), None, Some(400)], 2000);
        assert_eq!(s, "start0@600 p0@600 skip1@1100 p2@1100");
        assert_eq!(
            p.skipped, 1,
            "3 is missing with nothing after it: rebuffering, not skipping"
        );
        assert_eq!(p.stalled_us(ms(2000)), 250_000 + 650_000);
    }

    #[test]
    fn lag_a_stall_added_is_caught_up_without_a_skip() {
        // An upstream outage: chunks 1-6 all come at 1850 ms; the rest as a live edge makes them
        // (one each 250 ms). Chunk 1 is due at 850: a 1 s stall with nothing later in hand.
        let mut arrivals: Vec<Option<u64>> = (0..40).map(|i| Some(100 + 250 * i)).collect();
        for a in &mut arrivals[1..=6] {
            *a = Some(1850);
        }
        let player = || {
            Player::new(
                Duration::from_millis(250),
                Duration::from_millis(500),
                Duration::from_millis(250),
            )
        };
        let (s, p) = play_on(player(), &arrivals, 9_000);
        let (s0, p0) = play_on(player().without_catch_up(), &arrivals, 9_000);
        // Both stall for chunk 1 and skip nothing. Without catching up, the second of lag stays;
        // catching up, chunks play in 227 ms while more than the start buffer plus two chunks
        // are held ahead.
        assert!(
            s0.starts_with("start0@600 p0@600 late1@1850 p2@2100 p3@2350"),
            "{s0}"
        );
        assert!(s.starts_with("start0@600 p0@600 late1@1850 "), "{s}");
        assert!(s.contains("fast2@"), "{s}");
        assert_eq!((p.skipped, p0.skipped), (0, 0));
        assert_eq!((p.late, p0.late), (1, 1), "catching up caused no stall");
        assert_eq!(p0.caught_up, 0);
        assert!(p.caught_up >= 5, "{s}");
        assert_eq!(
            p.caught_up_us,
            p.caught_up * 22_727,
            "250 ms - 250/1.1 ms each"
        );
        // Its schedule is that much earlier: the lag the stall added shrank by as much.
        assert_eq!(p0.due(39).unwrap().0 - p.due(39).unwrap().0, p.caught_up_us);
        // It stopped with the start buffer plus two chunks still held: the last chunks play at 1x.
        assert!(
            s.ends_with(&format!(
                "p{}@{}",
                p.next_seq() - 1,
                p.due(p.next_seq() - 1).unwrap().0 / 1000
            )),
            "{s}"
        );
    }

    #[test]
    fn without_a_stall_the_buffer_it_started_with_is_kept() {
        // Twenty chunks in hand from the start (a burst): far more than the catch-up threshold
        // ahead, but no stall added lag, so nothing plays fast.
        let arrivals: Vec<Option<u64>> = (0..20).map(|_| Some(100)).collect();
        let (s, p) = play(&arrivals, 6_000);
        assert_eq!((p.caught_up, p.late, p.skipped), (0, 0, 0), "{s}");
        assert!(!s.contains("fast"), "{s}");
    }

    #[test]
    fn a_jump_reports_every_slot_it_passes_over() {
        let (_, mut p) = play(&[Some(100), Some(300)], 900);
        assert_eq!(p.next_seq(), 2);
        // Far behind: jump to 7. Slots 2..7 were never played: they are skips, and 7 is due now.
        assert_eq!(p.jump_to(ms(1000), 7), 2..7);
        assert_eq!((p.next_seq(), p.skipped), (7, 5));
        assert_eq!(p.due(7), Some(ms(1000)));
        // Not a jump backwards, nor before playback began.
        assert!(p.jump_to(ms(1100), 5).is_empty());
        let mut idle = Player::new(Duration::from_millis(250), Duration::ZERO, Duration::ZERO);
        assert!(idle.jump_to(ms(0), 3).is_empty());
    }

    #[test]
    fn buffer_health_counts_what_is_ahead() {
        let mut p = Player::new(
            Duration::from_millis(250),
            Duration::ZERO,
            Duration::from_millis(250),
        );
        p.begin(ms(0), 10);
        let mut ev = vec![];
        p.advance(ms(100), |_| true, |_| 0, &mut ev);
        // Chunk 10 played at 0, 11 due at 250; 3 chunks held from 11 -> 750 ms, minus 0 into 11.
        assert_eq!(p.next_seq(), 11);
        assert_eq!(p.buffer_health(ms(100), 3), Duration::from_millis(750));
    }
}
