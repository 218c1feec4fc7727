//! Serving other peers under an upload budget.
//!
//! The budget is Hum's one token bucket ([`hum_budget::TokenBucket`], counting bits, refilled at
//! the budget rate). Requests for chunks we do not
//! hold yet are *held* until we do (that is how a fresh chunk flows down the mesh without a round of
//! announcements per hop); requests for chunks we hold are *ready*. Ready requests are released in
//! priority order while the bucket is not in debt; one release may take it into debt (a whole chunk), so
//! releases come in small batches instead of one timer per chunk. Viewers order by the requester's
//! reported buffer health (lowest first: the peer closest to a stall), then deadline; the root seed
//! orders by deadline (earliest first), since everything it serves is someone's last resort.

use std::collections::VecDeque;
use std::time::Duration;

use hum_budget::TokenBucket;
use hum_budget::bucket::bits;
use hum_proto::Bitrate;
use hum_proto::mesh::{encoded_slice_len, slice_count};

use crate::{PeerId, Time};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeRequest {
    pub to: PeerId,
    pub seq: u64,
    /// After this the requester cannot use the chunk.
    pub deadline: Time,
    /// The requester's last reported buffer health.
    pub buffer_ms: u32,
    /// What to send: the whole chunk ([`WHOLE`]) or, for a slice request, the next slice (its
    /// index; in what [`ServeQueue::release`] hands out: the slice to send now).
    pub slice: u16,
    /// A slice request's share: slices `i % parts == part` (`parts` 0: a whole-chunk request).
    pub part: u8,
    pub parts: u8,
    /// Of that share, only the slices whose bit is set (`SliceRequest::mask`; all ones: the whole
    /// share).
    pub mask: u128,
    /// Held: slices of the share already made ready. Ready: slices still to send (bit `i` =
    /// slice `i`). One ready entry per request, however many slices it waits to send, so the
    /// queue stays as long as with whole chunks.
    pub sent: u128,
    pub pending: u128,
    /// The chunk's size (a slice's cost on the wire follows from it and the index).
    pub chunk_bytes: u32,
    /// Bytes the next send costs the budget (set when it becomes ready).
    pub cost: u32,
}

/// About how many bytes the slices `share` (bit `i` = slice `i`) of a `whole`-byte chunk are
/// (what a busy check adds to the backlog).
pub fn share_bytes(share: u128, whole: u32) -> u32 {
    let n = slice_count(whole).min(128);
    let all = if n >= 128 {
        u128::MAX
    } else {
        (1u128 << n) - 1
    };
    let k = (share & all).count_ones() as u64;
    (whole as u64 * k / n as u64) as u32
}

/// [`ServeRequest::slice`] of a whole-chunk request.
pub const WHOLE: u16 = u16::MAX;

/// The slices `i % parts == part` (of 128) that are also in `mask`; `parts` 0: none.
pub fn share_mask(part: u8, parts: u8, mask: u128) -> u128 {
    if parts == 0 {
        return 0;
    }
    if parts == 1 {
        return mask;
    }
    let mut m = 0u128;
    let mut i = part as u32;
    while i < 128 {
        m |= 1u128 << i;
        i += parts as u32;
    }
    m & mask
}

impl ServeRequest {
    /// A request for the whole chunk `seq`.
    pub fn whole(to: PeerId, seq: u64, deadline: Time, buffer_ms: u32) -> Self {
        ServeRequest {
            to,
            seq,
            deadline,
            buffer_ms,
            slice: WHOLE,
            part: 0,
            parts: 0,
            mask: u128::MAX,
            sent: 0,
            pending: 0,
            chunk_bytes: 0,
            cost: 0,
        }
    }

    /// A request for the slices `i % parts == part` of chunk `seq`.
    pub fn part(to: PeerId, seq: u64, deadline: Time, buffer_ms: u32, part: u8, parts: u8) -> Self {
        ServeRequest {
            part,
            parts: parts.max(1),
            ..Self::whole(to, seq, deadline, buffer_ms)
        }
    }

    /// Only the slices of the share whose bit is set in `mask` (the end-game's re-ask of the
    /// slices a late part is missing).
    pub fn with_mask(self, mask: u128) -> Self {
        ServeRequest { mask, ..self }
    }

    fn wants(&self, index: u32) -> bool {
        self.parts > 0
            && index < 128
            && index % self.parts as u32 == self.part as u32
            && self.mask & (1u128 << index) != 0
    }

    /// The slices this (slice) request asks for, as a mask (bit `i` = slice `i`).
    pub fn share_mask(&self) -> u128 {
        share_mask(self.part, self.parts, self.mask)
    }

    /// The ready entry of this slice request for the slices in `pending` of a `bytes`-byte chunk.
    fn slices_ready(&self, pending: u128, bytes: u32) -> ServeRequest {
        let mut r = ServeRequest {
            sent: 0,
            pending,
            chunk_bytes: bytes,
            ..*self
        };
        r.next_slice();
        r
    }

    /// Point `slice`/`cost` at the lowest pending slice.
    fn next_slice(&mut self) {
        let i = self.pending.trailing_zeros();
        self.slice = i.min(127) as u16;
        self.cost = encoded_slice_len(self.chunk_bytes, i) as u32;
    }

    /// Bytes this ready entry still costs.
    fn remaining(&self) -> u64 {
        if self.parts == 0 {
            return self.cost as u64;
        }
        // Only the set bits (a 100k run spent 90% of its time looping over all 128 here when
        // the root re-added its queue's bytes after an expiry).
        let mut left = self.pending;
        let mut sum = 0u64;
        while left != 0 {
            let i = left.trailing_zeros();
            sum += encoded_slice_len(self.chunk_bytes, i) as u64;
            left &= left - 1;
        }
        sum
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// Lowest buffer health first, then earliest deadline (viewers).
    BufferHealth,
    /// Earliest deadline first (the root seed).
    Deadline,
}

/// What a serve queue spends, in bytes. The simulator and the root seed use a [`TokenBucket`] of
/// their own ([`OwnBudget`]); a viewer in the app spends from the bandwidth service's upload
/// limiter, the one bucket for everything the client sends (own media first), through its own
/// implementation in hum-engine.
pub trait UploadBudget: std::fmt::Debug + Send {
    /// Earn what the time since the last refill is worth.
    fn refill(&mut self, now: Time);
    /// Does the budget hold `bytes` now (`holds(0)`: not in debt)?
    fn holds(&self, bytes: u64) -> bool;
    /// Charge `bytes` that are being sent (may go into debt).
    fn charge(&mut self, bytes: u64);
    /// When `holds(bytes)` will be true with no further charges (`None`: never).
    fn holds_at(&self, bytes: u64) -> Option<Time>;
    /// How long until `holds(bytes)` (`None`: never).
    fn wait_for(&self, bytes: u64) -> Option<Duration>;
    /// The most it can hold.
    fn burst_bytes(&self) -> u64;
    /// Spend at `rate` from `now` on (a budget owned by someone else may ignore it).
    fn set_rate(&mut self, rate: Bitrate, now: Time);
    fn clone_box(&self) -> Box<dyn UploadBudget>;
}

impl Clone for Box<dyn UploadBudget> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// A budget of the queue's own: a [`TokenBucket`] in bits with a burst of a fixed length.
#[derive(Clone, Debug)]
pub struct OwnBudget {
    bucket: TokenBucket,
    /// The burst as time at the rate (kept when the rate changes).
    burst: Duration,
}

impl OwnBudget {
    /// `rate` with a burst of `burst` at that rate (at least one byte).
    pub fn new(rate: Bitrate, burst: Duration, now: Time) -> Self {
        OwnBudget {
            bucket: TokenBucket::upload(now.offset(), Some(rate), burst, 1),
            burst,
        }
    }
}

impl UploadBudget for OwnBudget {
    fn refill(&mut self, now: Time) {
        self.bucket.refill(now.offset());
    }
    fn holds(&self, bytes: u64) -> bool {
        self.bucket.holds(bits(bytes))
    }
    fn charge(&mut self, bytes: u64) {
        self.bucket.charge(bits(bytes));
    }
    fn holds_at(&self, bytes: u64) -> Option<Time> {
        self.bucket.holds_at(bits(bytes)).map(Time::from_offset)
    }
    fn wait_for(&self, bytes: u64) -> Option<Duration> {
        self.bucket.wait_for(bits(bytes))
    }
    fn burst_bytes(&self) -> u64 {
        self.bucket.burst() / 8
    }
    fn set_rate(&mut self, rate: Bitrate, now: Time) {
        self.bucket
            .set_upload(now.offset(), Some(rate), self.burst, 1);
    }
    fn clone_box(&self) -> Box<dyn UploadBudget> {
        Box::new(self.clone())
    }
}

#[derive(Clone, Debug)]
pub struct ServeQueue {
    budget: Box<dyn UploadBudget>,
    priority: Priority,
    held: Vec<ServeRequest>,
    /// Kept in release order (best first, see [`ServeQueue::key`]): an insert is a binary search
    /// and a move of the shorter side, so the root's queue of thousands is never sorted whole
    /// (it was, on every release: a quarter of a sliced run's CPU).
    ready: VecDeque<ServeRequest>,
    ready_bytes: u64,
    /// No ready (held) request has a deadline before this: expiry scans only run after it.
    ready_expiry: Time,
    held_expiry: Time,
    /// Ready requests below the strict class (`next_wake` needs "are all strict?").
    loose: usize,
    /// Whose ready requests expired in the last `release`.
    expired_to: Vec<PeerId>,
    /// At most this many held requests per requester (a bound on what a peer can make us remember).
    max_held_per_peer: usize,
    /// Requests whose `buffer_ms` is at least this are released only from tokens in hand, never
    /// into debt: see [`ServeQueue::with_strict_class`].
    strict_from: u32,
    /// Bytes the strict request at the head of the queue waits for (0: none waiting).
    strict_need: u32,
    /// Ready requests dropped unserved because their deadline passed (the budget could not serve
    /// them in time: a starved requester; a slice request counts once).
    pub expired: u64,
}

impl ServeQueue {
    /// Where the queues' heap memory is (address, bytes), for prefetching; nothing is read.
    pub fn hot_memory(&self) -> [(*const u8, usize); 2] {
        let (ready, _) = self.ready.as_slices();
        [
            (ready.as_ptr().cast(), std::mem::size_of_val(ready)),
            (
                self.held.as_ptr().cast(),
                std::mem::size_of_val(&self.held[..]),
            ),
        ]
    }

    /// A queue serving at `rate` with a burst of `burst` at that rate (at least one byte).
    pub fn new(rate: Bitrate, burst: Duration, now: Time, priority: Priority) -> Self {
        ServeQueue::with_budget(Box::new(OwnBudget::new(rate, burst, now)), priority)
    }

    /// A queue spending from `budget`.
    pub fn with_budget(budget: Box<dyn UploadBudget>, priority: Priority) -> Self {
        ServeQueue {
            budget,
            priority,
            held: Vec::new(),
            ready: VecDeque::new(),
            ready_bytes: 0,
            ready_expiry: Time::MAX,
            held_expiry: Time::MAX,
            loose: 0,
            expired_to: Vec::new(),
            max_held_per_peer: 16,
            strict_from: u32::MAX,
            strict_need: 0,
            expired: 0,
        }
    }

    /// The budget the queue spends.
    pub fn budget(&self) -> &dyn UploadBudget {
        self.budget.as_ref()
    }

    /// Serve at `rate` from `now` on (tokens earned so far are kept; the burst keeps its length).
    pub fn set_rate(&mut self, rate: Bitrate, now: Time) {
        self.budget.set_rate(rate, now);
    }

    /// How long `bytes` more, queued behind the current debt, would take to leave (`None`: never,
    /// at a zero rate).
    pub fn wait_for(&self, bytes: u64) -> Option<Duration> {
        self.budget.wait_for(bytes)
    }

    /// Requests with `buffer_ms >= class` only spend tokens already in the bucket (they never take it
    /// into debt), so the classes below them find the bucket ready when they arrive. The root seed
    /// uses it for fallbacks: a fallback released just before a publication used to put the cap
    /// into debt and hold the seeds' copy of the new chunk (and so every viewer) back by up to a
    /// chunk time.
    pub fn with_strict_class(mut self, class: u32) -> Self {
        self.strict_from = class;
        self
    }

    /// Requests ready to be served, best first.
    pub fn ready_items(&self) -> impl Iterator<Item = &ServeRequest> {
        self.ready.iter()
    }

    /// Whose ready requests the last [`ServeQueue::release`] dropped at their deadline.
    pub fn expired_to(&self) -> &[PeerId] {
        &self.expired_to
    }

    /// Release order, smallest first: lowest buffer health then earliest deadline (viewers), or
    /// the other way round (the root); then chunk, slice and requester.
    fn key(&self, r: &ServeRequest) -> (u64, u64, u64, u16, u32) {
        match self.priority {
            Priority::BufferHealth => (r.buffer_ms as u64, r.deadline.0, r.seq, r.slice, r.to.0),
            Priority::Deadline => (r.deadline.0, r.buffer_ms as u64, r.seq, r.slice, r.to.0),
        }
    }

    /// Insert `r` in release order (before equal keys: the newest of equals goes first, as the
    /// stable sort this replaced did).
    fn insert_ready(&mut self, r: ServeRequest) {
        let k = self.key(&r);
        let i = self.ready.partition_point(|x| self.key(x) < k);
        self.ready_expiry = self.ready_expiry.min(r.deadline);
        if r.buffer_ms < self.strict_from {
            self.loose += 1;
        }
        self.ready.insert(i, r);
    }

    /// Drop the ready requests `gone` picks; returns the bytes they still cost.
    fn remove_ready(&mut self, mut gone: impl FnMut(&ServeRequest) -> bool) -> u64 {
        let strict_from = self.strict_from;
        let (mut removed, mut loose, mut expiry) = (0u64, 0usize, Time::MAX);
        self.ready.retain(|x| {
            if gone(x) {
                removed += x.remaining();
                return false;
            }
            loose += usize::from(x.buffer_ms < strict_from);
            expiry = expiry.min(x.deadline);
            true
        });
        self.loose = loose;
        self.ready_expiry = expiry;
        removed
    }

    /// `bytes` of the backlog left the ready queue (served, expired, cancelled, replaced).
    fn give_back(&mut self, bytes: u64) {
        debug_assert!(
            bytes <= self.ready_bytes,
            "ready_bytes {} < {bytes}",
            self.ready_bytes
        );
        self.ready_bytes = self.ready_bytes.saturating_sub(bytes);
    }

    /// Drop the ready requests whose deadline is before `now`, noting whose they were; returns
    /// the bytes they still cost. Same result as [`ServeQueue::remove_ready`] with the deadline
    /// test, without rebuilding the queue: in release order each class (a `buffer_ms` value;
    /// [`Priority::Deadline`]: the whole queue) is a run in deadline order, so what expired is a
    /// prefix of each run, found by binary search and drained (the root's queue at 100,000
    /// viewers with slices is long, and rebuilding it on every expiry was most of the run).
    fn drop_expired(&mut self, now: Time, expired: &mut Vec<PeerId>) -> u64 {
        let mut removed = 0u64;
        let mut earliest = Time::MAX;
        let mut i = 0;
        while i < self.ready.len() {
            let end = match self.priority {
                Priority::Deadline => self.ready.len(),
                Priority::BufferHealth => {
                    let class = self.ready[i].buffer_ms;
                    self.search(i, self.ready.len(), |x| x.buffer_ms == class)
                }
            };
            let cut = self.search(i, end, |x| x.deadline < now);
            for x in self.ready.drain(i..cut) {
                expired.push(x.to);
                removed += x.remaining();
                self.loose -= usize::from(x.buffer_ms < self.strict_from);
            }
            let end = end - (cut - i);
            if i < end {
                earliest = earliest.min(self.ready[i].deadline);
            }
            i = end;
        }
        self.ready_expiry = earliest;
        removed
    }

    /// The first index in `from..to` where `pred` is false (`to` if none; `pred` true, then
    /// false, along the ready queue there).
    fn search(&self, from: usize, to: usize, pred: impl Fn(&ServeRequest) -> bool) -> usize {
        let (mut lo, mut hi) = (from, to);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(&self.ready[mid]) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// Bytes waiting to be released (ready requests).
    pub fn backlog_bytes(&self) -> u64 {
        self.ready_bytes
    }

    /// A request for a chunk we hold (`bytes` long).
    pub fn push_ready(&mut self, mut r: ServeRequest, bytes: u32) {
        if self
            .ready
            .iter()
            .any(|x| x.to == r.to && x.seq == r.seq && x.slice == r.slice)
        {
            let removed =
                self.remove_ready(|x| x.to == r.to && x.seq == r.seq && x.slice == r.slice);
            self.give_back(removed);
        }
        r.cost = bytes;
        self.insert_ready(r);
        self.ready_bytes += bytes as u64;
    }

    /// A slice request (`r` from [`ServeRequest::part`]) for a chunk we hold whole, of `bytes`
    /// bytes: every slice of its share is ready at once (one entry).
    pub fn push_ready_part(&mut self, r: ServeRequest, bytes: u32) {
        let mut pending = 0u128;
        for i in 0..slice_count(bytes) {
            if r.wants(i) {
                pending |= 1u128 << i;
            }
        }
        self.add_pending(r, pending, bytes);
    }

    /// Make the slices `pending` of `r`'s chunk ready for `r.to` (merged into its ready entry).
    fn add_pending(&mut self, r: ServeRequest, pending: u128, bytes: u32) {
        if pending == 0 {
            return;
        }
        if let Some(i) = self
            .ready
            .iter()
            .position(|x| x.to == r.to && x.seq == r.seq && x.parts > 0)
        {
            let x = &mut self.ready[i];
            let new = pending & !x.pending;
            let slice = x.slice;
            x.pending |= new;
            x.next_slice();
            if x.slice != slice {
                // Its place in line moved with its next slice.
                let x = self.ready.remove(i).expect("found above");
                if x.buffer_ms < self.strict_from {
                    self.loose -= 1;
                }
                self.insert_ready(x);
            }
            let add = ServeRequest {
                pending: new,
                chunk_bytes: bytes,
                ..r
            };
            self.ready_bytes += add.remaining();
            return;
        }
        let e = r.slices_ready(pending, bytes);
        self.ready_bytes += e.remaining();
        self.insert_ready(e);
    }

    /// Slice `index` of chunk `seq` (`bytes` long) was verified: held slice requests whose share
    /// includes it get it (forwarded before the rest of the chunk is in).
    pub fn on_slice(&mut self, seq: u64, bytes: u32, index: u32) {
        for i in 0..self.held.len() {
            let h = self.held[i];
            if h.seq == seq && h.wants(index) && h.sent & (1u128 << index) == 0 {
                self.held[i].sent |= 1u128 << index;
                self.add_pending(h, 1u128 << index, bytes);
            }
        }
    }

    /// A request for a chunk we expect to hold. Returns false (refused) if the requester already has too
    /// many held requests.
    pub fn push_held(&mut self, r: ServeRequest) -> bool {
        if let Some(x) = self
            .held
            .iter_mut()
            .find(|x| x.to == r.to && x.seq == r.seq)
        {
            if x.parts == 0 || r.parts == 0 {
                // A whole-chunk request and a slice request: the newer one stands.
                *x = r;
            } else if (x.parts, x.part, x.mask) != (r.parts, r.part, r.mask) {
                // Asked again for another share (the end-game re-asking a late part's missing
                // slices from us): both shares, minus what was already sent.
                let union = x.share_mask() | r.share_mask();
                let sent = x.sent;
                *x = ServeRequest {
                    sent,
                    part: 0,
                    parts: 1,
                    mask: union,
                    ..r
                };
            }
            return true;
        }
        if self.held.iter().filter(|x| x.to == r.to).count() >= self.max_held_per_peer {
            return false;
        }
        self.held_expiry = self.held_expiry.min(r.deadline);
        self.held.push(r);
        true
    }

    /// We now hold `seq` (`bytes` long) whole: its held requests become ready (a slice request's
    /// slices not yet made ready).
    pub fn on_have(&mut self, seq: u64, bytes: u32) {
        let mut i = 0;
        while i < self.held.len() {
            if self.held[i].seq == seq {
                let r = self.held.swap_remove(i);
                if r.parts == 0 {
                    self.insert_ready(ServeRequest { cost: bytes, ..r });
                    self.ready_bytes += bytes as u64;
                } else {
                    let mut pending = 0u128;
                    for s in 0..slice_count(bytes) {
                        if r.wants(s) && r.sent & (1u128 << s) == 0 {
                            pending |= 1u128 << s;
                        }
                    }
                    self.add_pending(r, pending, bytes);
                }
            } else {
                i += 1;
            }
        }
    }

    /// The requester no longer wants it (the whole chunk or any of its slices).
    pub fn cancel(&mut self, to: PeerId, seq: u64) {
        self.held.retain(|x| !(x.to == to && x.seq == seq));
        // At most a whole-chunk entry and a slice entry match: remove them where they are
        // instead of rebuilding the queue (the root's queue at 100,000 viewers with slices
        // is long, and viewers cancel its share of every chunk a quicker upstream completed).
        let mut from = 0;
        while let Some(i) = self
            .ready
            .range(from..)
            .position(|x| x.to == to && x.seq == seq)
        {
            let x = self.ready.remove(from + i).expect("found above");
            from += i;
            if x.buffer_ms < self.strict_from {
                self.loose -= 1;
            }
            // `ready_expiry` stays a lower bound (an expiry scan resets it).
            self.give_back(x.remaining());
        }
    }

    /// Forget everything for a departed peer.
    pub fn forget(&mut self, to: PeerId) {
        self.held.retain(|x| x.to != to);
        let removed = self.remove_ready(|x| x.to == to);
        self.give_back(removed);
    }

    /// Update the buffer health of a requester's pending requests.
    pub fn set_health(&mut self, to: PeerId, buffer_ms: u32) {
        for r in self.held.iter_mut().filter(|r| r.to == to) {
            r.buffer_ms = buffer_ms;
        }
        let mut moved = false;
        for r in self.ready.iter_mut().filter(|r| r.to == to) {
            moved |= r.buffer_ms != buffer_ms;
            r.buffer_ms = buffer_ms;
        }
        if moved {
            // Keys changed: back into release order (stable, as the sort on every release was).
            let mut v = std::mem::take(&mut self.ready);
            v.make_contiguous().sort_by_key(|r| self.key(r));
            self.ready = v;
            let strict_from = self.strict_from;
            self.loose = self
                .ready
                .iter()
                .filter(|r| r.buffer_ms < strict_from)
                .count();
        }
    }

    /// Release what the budget allows now, in priority order, into `out`; expired requests (past their
    /// deadline) are dropped. Each costs what it was made ready with (a chunk's or a slice's bytes).
    pub fn release(&mut self, now: Time, out: &mut Vec<ServeRequest>) {
        self.budget.refill(now);
        self.expired_to.clear();
        if self.held_expiry < now {
            self.held.retain(|r| r.deadline >= now);
            self.held_expiry = self
                .held
                .iter()
                .map(|r| r.deadline)
                .min()
                .unwrap_or(Time::MAX);
        }
        if self.ready.is_empty() {
            return;
        }
        if self.ready_expiry < now {
            let before = self.ready.len();
            let mut expired = std::mem::take(&mut self.expired_to);
            let removed = self.drop_expired(now, &mut expired);
            self.expired_to = expired;
            self.expired += (before - self.ready.len()) as u64;
            // Exact, not re-summed: every entry adds what it costs when it enters and gives
            // it back when it leaves (`ready_bytes_stay_exact` checks it against a re-sum).
            self.give_back(removed);
        }
        if !self.budget.holds(0) {
            return;
        }
        // In release order already: serve from the front.
        let strict_from = self.strict_from;
        let mut front_moved = false;
        while self.budget.holds(0) {
            let Some(mut r) = self.ready.pop_front() else {
                break;
            };
            let b = r.cost;
            if r.buffer_ms >= strict_from && !self.budget.holds(b.into()) {
                self.ready.push_front(r);
                break;
            }
            front_moved = false;
            if r.buffer_ms < strict_from {
                self.loose -= 1;
            }
            self.budget.charge(b.into());
            self.give_back(b as u64);
            out.push(r);
            if r.parts > 0 {
                // The request's next slice, if any, stays first in line: one requester's share
                // goes out back to back, so it completes (and can play) as early as it can.
                r.pending &= !(1u128 << r.slice);
                if r.pending != 0 {
                    r.next_slice();
                    if r.buffer_ms < strict_from {
                        self.loose += 1;
                    }
                    self.ready.push_front(r);
                    front_moved = true;
                }
            }
        }
        // What the best waiting request needs, if it is strict (`next_wake` has no sizes).
        self.strict_need = match self.ready.front() {
            Some(r) if r.buffer_ms >= strict_from => r.cost,
            _ => 0,
        };
        if front_moved {
            // Its next slice moved its key: back to its place in line for the next release.
            let r = self.ready.pop_front().expect("pushed above");
            if r.buffer_ms < strict_from {
                self.loose -= 1;
            }
            self.insert_ready(r);
        }
    }

    /// When `release` could next send something (if anything is ready).
    pub fn next_wake(&self, now: Time) -> Option<Time> {
        if self.ready.is_empty() {
            None
        } else if self.strict_need > 0 && self.loose == 0 {
            // Tokens in hand only: never, if that is more than the burst.
            let need = u64::from(self.strict_need);
            let at = (need <= self.budget.burst_bytes())
                .then(|| self.budget.holds_at(need))
                .flatten();
            Some(at.unwrap_or(Time::MAX).max(now))
        } else {
            Some(self.budget.holds_at(0).unwrap_or(Time::MAX).max(now))
        }
    }

    /// Earliest deadline among held requests (they expire then).
    pub fn next_held_expiry(&self) -> Option<Time> {
        self.held.iter().map(|r| r.deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(to: u32, seq: u64, deadline_ms: u64, buffer_ms: u32) -> ServeRequest {
        ServeRequest::whole(PeerId(to), seq, Time::from_millis(deadline_ms), buffer_ms)
    }

    #[test]
    fn a_masked_share_asks_only_its_slices_and_a_second_share_adds_to_the_first() {
        let mut q = ServeQueue::new(
            Bitrate::from_bps(800_000_000),
            Duration::from_millis(100),
            Time::ZERO,
            Priority::BufferHealth,
        );
        let part = |part, parts, mask| {
            ServeRequest::part(PeerId(1), 3, Time::from_millis(900), 100, part, parts)
                .with_mask(mask)
        };
        assert_eq!(share_mask(1, 2, u128::MAX) & 0xff, 0b1010_1010);
        assert_eq!(share_bytes(0b1010_1010, 125_000), 62_500);
        // Held: part 0 of 2 (slices 0, 2, 4, 6), then the end-game's re-ask of slice 3 alone.
        assert!(q.push_held(part(0, 2, u128::MAX)));
        assert!(q.push_held(part(0, 1, 1 << 3)));
        q.on_have(3, 125_000);
        let mut out = vec![];
        q.release(Time::ZERO, &mut out);
        let sent: Vec<u16> = out.iter().map(|r| r.slice).collect();
        assert_eq!(sent, vec![0, 2, 3, 4, 6]);
        // Ready at once (a chunk held whole): the mask narrows the share.
        q.push_ready_part(part(1, 2, (1 << 5) | (1 << 6)), 125_000);
        out.clear();
        q.release(Time::from_millis(10), &mut out);
        assert_eq!(out.iter().map(|r| r.slice).collect::<Vec<_>>(), vec![5]);
        assert_eq!(q.backlog_bytes(), 0);
    }

    #[test]
    fn a_tiny_debt_wakes_at_least_a_microsecond_later_and_is_repaid_then() {
        let mut q = ServeQueue::new(
            Bitrate::from_bps(52_965_097),
            Duration::from_millis(250),
            Time::ZERO,
            Priority::BufferHealth,
        );
        // One byte past the burst: a debt of a few bits, a fraction of a microsecond to repay.
        let burst_bytes = q.budget().burst_bytes() as u32;
        q.push_ready(req(1, 1, 5000, 0), burst_bytes + 1);
        q.push_ready(req(2, 2, 5000, 0), 1000);
        let mut out = vec![];
        q.release(Time(1000), &mut out);
        assert_eq!(out.len(), 1);
        let budget = q.budget();
        assert!(!budget.holds(0) && budget.wait_for(0) < Some(Duration::from_micros(1)));
        let at = q.next_wake(Time(1000)).expect("a request is ready");
        assert!(at > Time(1000), "{at:?}");
        q.release(at, &mut out);
        assert_eq!(out.len(), 2, "the wake-up it asked for repays the debt");
    }

    #[test]
    fn low_buffer_health_is_served_first_within_the_budget() {
        // 1 MB/s, burst 100 kB; chunks are 100 kB: one release per 100 ms.
        let mut q = ServeQueue::new(
            Bitrate::from_bps(8_000_000),
            Duration::from_millis(100),
            Time::ZERO,
            Priority::BufferHealth,
        );
        q.push_ready(req(1, 5, 5000, 3000), 100_000);
        q.push_ready(req(2, 5, 5000, 200), 100_000);
        q.push_ready(req(3, 5, 5000, 1500), 100_000);
        let mut out = vec![];
        q.release(Time::ZERO, &mut out);
        // A full bucket (100 kB) releases one chunk and goes into debt with the second.
        assert_eq!(out.iter().map(|r| r.to.0).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(q.next_wake(Time::ZERO), Some(Time::from_millis(100)));
        q.release(Time::from_millis(50), &mut out);
        assert_eq!(out.len(), 2, "still in debt");
        q.release(Time::from_millis(100), &mut out);
        assert_eq!(
            out.iter().map(|r| r.to.0).collect::<Vec<_>>(),
            vec![2, 3, 1]
        );
        assert_eq!(q.backlog_bytes(), 0);
    }

    #[test]
    fn held_requests_become_ready_on_have_and_expire_at_deadline() {
        let mut q = ServeQueue::new(
            Bitrate::from_bps(8_000_000),
            Duration::from_millis(500),
            Time::ZERO,
            Priority::Deadline,
        );
        assert!(q.push_held(req(1, 9, 1000, 0)));
        assert!(q.push_held(req(2, 9, 300, 0)));
        assert!(q.push_held(req(3, 10, 100, 0)));
        let mut out = vec![];
        q.release(Time::from_millis(200), &mut out);
        assert!(out.is_empty());
        assert_eq!(q.held_len(), 2, "seq 10's request expired");
        q.on_have(9, 1000);
        q.release(Time::from_millis(200), &mut out);
        assert_eq!(
            out.iter().map(|r| r.to.0).collect::<Vec<_>>(),
            vec![2, 1],
            "earliest deadline first"
        );
    }

    #[test]
    fn a_strict_class_never_takes_the_bucket_into_debt() {
        // 1 MB/s, burst 300 kB; chunks of 200 kB. Class 1 (fallbacks) waits for tokens in hand.
        let mut q = ServeQueue::new(
            Bitrate::from_bps(8_000_000),
            Duration::from_millis(300),
            Time::ZERO,
            Priority::BufferHealth,
        )
        .with_strict_class(1);
        q.push_ready(req(1, 5, 5000, 1), 200_000);
        q.push_ready(req(2, 5, 5000, 1), 200_000);
        let mut out = vec![];
        q.release(Time::ZERO, &mut out);
        assert_eq!(out.len(), 1, "100 kB left: the second fallback waits");
        assert!(q.budget().holds(100_000) && !q.budget().holds(100_001));
        assert_eq!(q.next_wake(Time::ZERO), Some(Time::from_millis(100)));
        // The feed (class 0) may still spend into debt at once.
        q.push_ready(req(3, 6, 5000, 0), 200_000);
        q.release(Time::ZERO, &mut out);
        assert_eq!(out.iter().map(|r| r.to.0).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(q.next_wake(Time::ZERO), Some(Time::from_millis(300)));
        q.release(Time::from_millis(300), &mut out);
        assert_eq!(out.len(), 3, "paid from tokens in hand once they are back");
        assert!(q.budget().holds(0) && !q.budget().holds(1));
    }

    #[test]
    fn a_held_slice_request_gets_each_slice_of_its_share_as_it_verifies() {
        let mut q = ServeQueue::new(
            Bitrate::from_bps(8_000_000),
            Duration::from_millis(500),
            Time::ZERO,
            Priority::BufferHealth,
        );
        let dl = Time::from_millis(5000);
        // Peer 1 wants the even slices of chunk 4, peer 2 the odd ones, peer 3 the whole chunk.
        assert!(q.push_held(ServeRequest::part(PeerId(1), 4, dl, 0, 0, 2)));
        assert!(q.push_held(ServeRequest::part(PeerId(2), 4, dl, 0, 1, 2)));
        assert!(q.push_held(ServeRequest::whole(PeerId(3), 4, dl, 0)));
        let mut out = vec![];
        // A chunk of 5 slices (4 x 16 KiB + 1 byte); a slice's cost follows from its tree.
        let bytes = 4 * 16_384 + 1;
        for i in [2u32, 1, 2] {
            q.on_slice(4, bytes, i);
        }
        q.release(Time::ZERO, &mut out);
        let got: Vec<_> = out.iter().map(|r| (r.to.0, r.slice)).collect();
        assert_eq!(got, vec![(2, 1), (1, 2)], "each slice once, to its share");
        // The rest arrives whole: what was not sent yet.
        out.clear();
        q.on_have(4, bytes);
        q.release(Time::ZERO, &mut out);
        let mut got: Vec<_> = out.iter().map(|r| (r.to.0, r.slice, r.cost)).collect();
        got.sort();
        let c = |i| encoded_slice_len(bytes, i) as u32;
        assert_eq!(
            got,
            vec![(1, 0, c(0)), (1, 4, c(4)), (2, 3, c(3)), (3, WHOLE, bytes)]
        );
        assert_eq!(q.held_len(), 0);
        assert_eq!(q.backlog_bytes(), 0);
    }

    #[test]
    fn held_requests_per_peer_are_bounded_and_cancel_works() {
        let mut q = ServeQueue::new(
            Bitrate::from_bps(1_000_000),
            Duration::from_millis(500),
            Time::ZERO,
            Priority::BufferHealth,
        );
        for s in 0..16 {
            assert!(q.push_held(req(1, s, 10_000, 0)));
        }
        assert!(!q.push_held(req(1, 99, 10_000, 0)));
        assert!(q.push_held(req(2, 99, 10_000, 0)));
        q.cancel(PeerId(1), 3);
        assert_eq!(q.held_len(), 16);
        q.forget(PeerId(1));
        assert_eq!(q.held_len(), 1);
    }

    /// What the queue's accounting must equal whatever happened: the bytes of every ready entry
    /// summed afresh, the loose count, the release order and the earliest deadline the expiry
    /// scan relies on.
    fn check_books(q: &ServeQueue, step: usize) {
        let sum: u64 = q.ready.iter().map(|r| r.remaining()).sum();
        assert_eq!(q.backlog_bytes(), sum, "ready_bytes at step {step}");
        let loose = q
            .ready
            .iter()
            .filter(|r| r.buffer_ms < q.strict_from)
            .count();
        assert_eq!(q.loose, loose, "loose at step {step}");
        if let Some(min) = q.ready.iter().map(|r| r.deadline).min() {
            assert!(q.ready_expiry <= min, "ready_expiry at step {step}");
        }
        assert!(
            q.ready
                .iter()
                .zip(q.ready.iter().skip(1))
                .all(|(a, b)| q.key(a) <= q.key(b)),
            "release order at step {step}"
        );
    }

    #[test]
    fn ready_bytes_stay_exact() {
        use rand::{Rng, SeedableRng};
        use rand_chacha::ChaCha8Rng;
        // Chunks of 1 to 128 slices (a whole-slice size, a 1-byte tail, the 2 MiB limit).
        let sizes = [16_384u32, 20_000, 125_000, 65_537, 300_000, 2 * 1024 * 1024];
        for seed in 0..24u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let priority = if seed % 2 == 0 {
                Priority::Deadline
            } else {
                Priority::BufferHealth
            };
            let rate = [4_000_000u64, 40_000_000, 400_000_000][(seed / 2 % 3) as usize];
            let mut q = ServeQueue::new(
                Bitrate::from_bps(rate),
                Duration::from_millis(500),
                Time::ZERO,
                priority,
            );
            if seed % 4 >= 2 {
                q = q.with_strict_class(1);
            }
            let mut now = Time::ZERO;
            let mut out = vec![];
            let (mut served, mut expired) = (0usize, 0u64);
            for step in 0..3_000 {
                let to = PeerId(rng.gen_range(0..6));
                let seq = rng.gen_range(0..8u64);
                let bytes = sizes[seq as usize % sizes.len()];
                let deadline = now + Duration::from_millis(rng.gen_range(0..600));
                let health = rng.gen_range(0..3u32);
                let part = |rng: &mut ChaCha8Rng| {
                    let parts = rng.gen_range(1..4u8);
                    let mask = if rng.gen_bool(0.5) {
                        u128::MAX
                    } else {
                        rng.r#gen::<u128>()
                    };
                    ServeRequest::part(to, seq, deadline, health, rng.gen_range(0..parts), parts)
                        .with_mask(mask)
                };
                match rng.gen_range(0..10) {
                    0 => q.push_ready(ServeRequest::whole(to, seq, deadline, health), bytes),
                    1 => {
                        let r = part(&mut rng);
                        q.push_ready_part(r, bytes);
                    }
                    2 => {
                        let r = if rng.gen_bool(0.3) {
                            ServeRequest::whole(to, seq, deadline, health)
                        } else {
                            part(&mut rng)
                        };
                        q.push_held(r);
                    }
                    3 => q.on_have(seq, bytes),
                    4 => q.on_slice(seq, bytes, rng.gen_range(0..slice_count(bytes))),
                    5 => q.cancel(to, seq),
                    6 if rng.gen_bool(0.2) => q.forget(to),
                    7 => q.set_health(to, health),
                    _ => {
                        now = now + Duration::from_millis(rng.gen_range(0..40));
                        // The expiry by runs drops exactly what a scan of the whole queue would.
                        let (mut fast, mut scan) = (q.clone(), q.clone());
                        let (mut a, mut b) = (vec![], vec![]);
                        let fast_bytes = fast.drop_expired(now, &mut a);
                        let scan_bytes = scan.remove_ready(|r| {
                            if r.deadline < now {
                                b.push(r.to);
                            }
                            r.deadline < now
                        });
                        assert_eq!((fast_bytes, a), (scan_bytes, b), "step {step}");
                        assert_eq!(fast.ready, scan.ready, "step {step}");
                        assert_eq!(fast.loose, scan.loose, "step {step}");
                        out.clear();
                        q.release(now, &mut out);
                        served += out.len();
                        expired += q.expired_to().len() as u64;
                    }
                }
                check_books(&q, step);
            }
            assert!(served > 20, "seed {seed}: served {served}");
            assert!(expired > 0, "seed {seed}: nothing expired");
            assert_eq!(q.expired, expired, "seed {seed}");
        }
    }
}
