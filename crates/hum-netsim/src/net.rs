//! The event queue, the nodes and their bottleneck queues.
//!
//! Invariants:
//! - events leave [`Net::next_event`] in (time, insertion order) order, so the clock never goes back;
//! - a node's `up_free` / `down_free` (when its queue drains) never decrease;
//! - a message is delivered only if its sender was still up when its last byte left the uplink, and its
//!   receiver is still up at delivery; node ids are never reused, so a departed node stays departed.

use std::collections::BTreeMap;
use std::time::Duration;

use hum_proto::Bitrate;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::Time;
use crate::prefetch::prefetch;
use crate::queue::EventQueue;

/// A node in the network. Ids are dense indices, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// How a node is connected: its access link.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Upload capacity (the bottleneck most home links have).
    pub up: Bitrate,
    /// Download capacity.
    pub down: Bitrate,
    /// One-way delay of this node's access path. The one-way latency between two nodes is the sum of
    /// theirs (so a node's "RTT to a typical peer" is about `4 * access_delay` when peers are alike).
    pub access_delay: Duration,
    /// Probability that a message through this node's access link is lost.
    pub loss: f64,
    /// Tail drop: a message is refused when the uplink backlog already exceeds this (a finite router
    /// buffer). `None` means an unbounded queue.
    pub up_queue_limit: Option<Duration>,
}

impl NodeConfig {
    pub fn new(up: Bitrate, down: Bitrate, access_delay: Duration) -> Self {
        NodeConfig {
            up,
            down,
            access_delay,
            loss: 0.0,
            up_queue_limit: None,
        }
    }
    /// A node with (practically) unlimited capacity: a datacentre server.
    pub fn unlimited(access_delay: Duration) -> Self {
        NodeConfig::new(
            Bitrate::from_bps(u64::MAX),
            Bitrate::from_bps(u64::MAX),
            access_delay,
        )
    }
    pub fn with_loss(mut self, loss: f64) -> Self {
        self.loss = if loss.is_finite() {
            loss.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }
    pub fn with_up_queue_limit(mut self, limit: Duration) -> Self {
        self.up_queue_limit = Some(limit);
        self
    }
}

/// Per-link overrides (both directions are separate entries).
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkOverride {
    /// Replaces the one-way latency computed from the two access delays.
    pub latency: Option<Duration>,
    /// Extra loss probability on this link, on top of the nodes' own.
    pub loss: f64,
}

/// How a message rides the transport, as WebRTC data channels offer it (SCTP underneath). Loss is
/// drawn per packet of [`PACKET_BYTES`] for the two SCTP modes, per message for [`Delivery::Datagram`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The whole message is lost with the link's loss probability and never resent (a datagram; the
    /// model `send` has always used).
    Datagram,
    /// Reliable (SCTP's default): every lost packet is resent until it arrives. A loss followed by
    /// later packets of the message is seen by the sender one RTT later (a SACK gap: fast
    /// retransmit, [`FAST_RETRANSMIT_SLACK`] after the RTT); a lost last packet, or a lost
    /// retransmission, waits for the retransmission timer ([`rto`], doubling per round). Each resent
    /// packet costs the sender's uplink and the receiver's downlink again.
    Reliable,
    /// Partially reliable with a lifetime (SCTP PR-SCTP, `maxPacketLifeTime`): resent as
    /// [`Delivery::Reliable`] while the resend would still leave within the lifetime of the send;
    /// otherwise the message is abandoned (lost), having cost what was sent.
    Lifetime(Duration),
}

/// The packet size loss is drawn over (an SCTP DATA chunk in a ~1,200-byte DTLS record).
pub const PACKET_BYTES: u64 = 1200;
/// What fast retransmit adds to one RTT before a resend leaves (SACK delay, dup-SACK threshold).
pub const FAST_RETRANSMIT_SLACK: Duration = Duration::from_millis(20);
/// The retransmission timer's floor (a timer-driven resend waits at least this).
pub const RTO_MIN: Duration = Duration::from_millis(200);

/// The retransmission timeout for a path of round-trip `rtt`: `max(2 * rtt, RTO_MIN)` (a settled
/// SRTT + 4 * RTTVAR estimate sits near twice the RTT on a jittery home link).
pub fn rto(rtt: Duration) -> Duration {
    (rtt * 2).max(RTO_MIN)
}

/// Counters per node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub msgs_sent: u64,
    pub msgs_received: u64,
    /// Messages refused by a full uplink queue, or sent by/to a departed node.
    pub msgs_dropped: u64,
    /// Messages lost on the wire (a datagram lost, or a partially reliable message abandoned).
    pub msgs_lost: u64,
    /// Packets resent by the reliable transport (each cost the links [`PACKET_BYTES`] again).
    pub packets_resent: u64,
    /// Bytes of those resends (counted in `bytes_sent` too).
    pub bytes_resent: u64,
}

/// What happened to a message handed to [`Net::send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Queued; `queue_delay` is how long it waits behind earlier bytes on the sender's uplink.
    Queued { queue_delay: Duration },
    /// Refused: the uplink queue is over its limit.
    QueueFull,
    /// The sender or receiver is not (or no longer) in the network.
    NoSuchNode,
}

/// An event popped from the network.
#[derive(Debug)]
pub struct Event<P> {
    pub at: Time,
    pub kind: EventKind<P>,
}

#[derive(Debug)]
pub enum EventKind<P> {
    /// A message arrived whole at `to`.
    Deliver {
        from: NodeId,
        to: NodeId,
        bytes: u64,
        payload: P,
    },
    /// A timer set with [`Net::schedule`] fired (`node` is `None` for a global timer).
    Timer { node: Option<NodeId>, payload: P },
}

struct Node {
    cfg: NodeConfig,
    access_us: u64,
    /// When the uplink / downlink FIFO is empty again (virtual microseconds).
    up_free: u64,
    down_free: u64,
    /// Fluid downlink queue: microseconds of work queued as of `down_last`.
    down_backlog: u64,
    down_last: u64,
    left_at: Option<u64>,
    stats: NodeStats,
}

enum Pending<P> {
    Deliver {
        from: NodeId,
        to: NodeId,
        bytes: u64,
        up_done: u64,
        payload: P,
    },
    Timer {
        node: Option<NodeId>,
        payload: P,
    },
}

/// The network: nodes, an event queue and a virtual clock. `P` is whatever the caller sends.
pub struct Net<P> {
    now: u64,
    seq: u64,
    // (time, seq, slot) keys in (time, seq) order (see `queue`). The payloads sit in `slots`, reused
    // through `free`, so the queue holds small Copy keys and steady-state running allocates nothing
    // per event.
    heap: EventQueue,
    slots: Vec<Option<Pending<P>>>,
    free: Vec<u32>,
    nodes: Vec<Node>,
    alive: usize,
    links: BTreeMap<(NodeId, NodeId), LinkOverride>,
    rng: ChaCha8Rng,
}

impl<P> std::fmt::Debug for Net<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("now", &self.now)
            .field("nodes", &self.nodes.len())
            .field("pending", &self.heap.len())
            .finish()
    }
}

/// Microseconds to serialise `bytes` at `rate` (rounded up; zero for an unlimited link).
fn serialise_us(bytes: u64, rate: Bitrate) -> u64 {
    let bps = rate.bps();
    if bps == u64::MAX {
        return 0;
    }
    if bps == 0 {
        return u64::MAX / 4;
    }
    let num = bytes as u128 * 8 * 1_000_000;
    num.div_ceil(bps as u128).min(u64::MAX as u128 / 4) as u64
}

impl<P> Net<P> {
    pub fn new(seed: u64) -> Self {
        Net {
            now: 0,
            seq: 0,
            heap: EventQueue::new(),
            slots: Vec::new(),
            free: Vec::new(),
            nodes: Vec::new(),
            alive: 0,
            links: BTreeMap::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Pre-size internal tables for about `nodes` nodes and `events` pending events.
    pub fn reserve(&mut self, nodes: usize, events: usize) {
        self.nodes.reserve(nodes);
        self.heap.reserve(events);
        self.slots.reserve(events);
    }

    pub fn now(&self) -> Time {
        Time::from_micros(self.now)
    }

    /// The network's RNG (seeded), for callers that want one stream of randomness.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// A node joins now.
    pub fn add_node(&mut self, cfg: NodeConfig) -> NodeId {
        let id = NodeId(self.nodes.len() as u32);
        let access_us = cfg.access_delay.as_micros().min(u64::MAX as u128 / 4) as u64;
        self.nodes.push(Node {
            cfg,
            access_us,
            up_free: self.now,
            down_free: self.now,
            down_backlog: 0,
            down_last: self.now,
            left_at: None,
            stats: NodeStats::default(),
        });
        self.alive += 1;
        id
    }

    /// The node leaves now: whatever is still in its uplink queue is never delivered, messages to it
    /// are dropped on arrival and its timers never fire.
    pub fn remove_node(&mut self, id: NodeId) {
        if let Some(n) = self.nodes.get_mut(id.index())
            && n.left_at.is_none()
        {
            n.left_at = Some(self.now);
            self.alive -= 1;
        }
    }

    pub fn is_alive(&self, id: NodeId) -> bool {
        self.nodes
            .get(id.index())
            .is_some_and(|n| n.left_at.is_none())
    }

    /// Nodes ever added (ids are `0..node_count()`).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn alive_count(&self) -> usize {
        self.alive
    }

    pub fn config(&self, id: NodeId) -> Option<&NodeConfig> {
        self.nodes.get(id.index()).map(|n| &n.cfg)
    }

    /// Change a node's capacities from now on (bytes already queued keep their times).
    pub fn set_capacity(&mut self, id: NodeId, up: Bitrate, down: Bitrate) {
        if let Some(n) = self.nodes.get_mut(id.index()) {
            n.cfg.up = up;
            n.cfg.down = down;
        }
    }

    pub fn set_link(&mut self, from: NodeId, to: NodeId, link: LinkOverride) {
        self.links.insert((from, to), link);
    }

    pub fn stats(&self, id: NodeId) -> NodeStats {
        self.nodes
            .get(id.index())
            .map(|n| n.stats)
            .unwrap_or_default()
    }

    /// One-way latency from `a` to `b` (without queuing).
    pub fn latency(&self, a: NodeId, b: NodeId) -> Duration {
        Duration::from_micros(self.latency_us(a, b))
    }

    /// Round-trip time between `a` and `b` with empty queues.
    pub fn rtt(&self, a: NodeId, b: NodeId) -> Duration {
        Duration::from_micros(self.latency_us(a, b) + self.latency_us(b, a))
    }

    fn latency_us(&self, a: NodeId, b: NodeId) -> u64 {
        if !self.links.is_empty()
            && let Some(l) = self.links.get(&(a, b)).and_then(|l| l.latency)
        {
            return l.as_micros() as u64;
        }
        let la = self.nodes.get(a.index()).map_or(0, |n| n.access_us);
        let lb = self.nodes.get(b.index()).map_or(0, |n| n.access_us);
        la + lb
    }

    /// How long a message sent now would wait behind bytes already in `id`'s uplink queue.
    pub fn uplink_backlog(&self, id: NodeId) -> Duration {
        self.nodes.get(id.index()).map_or(Duration::ZERO, |n| {
            Duration::from_micros(n.up_free.saturating_sub(self.now))
        })
    }

    /// Bytes still waiting in `id`'s uplink queue (at its current rate).
    pub fn uplink_backlog_bytes(&self, id: NodeId) -> u64 {
        self.nodes.get(id.index()).map_or(0, |n| {
            let us = n.up_free.saturating_sub(self.now) as u128;
            let bps = n.cfg.up.bps();
            if bps == u64::MAX {
                0
            } else {
                (us * bps as u128 / 8 / 1_000_000) as u64
            }
        })
    }

    /// Send `bytes` (the size the network charges) carrying `payload` from `from` to `to`, now, as a
    /// datagram (lost whole, never resent: [`Delivery::Datagram`]).
    pub fn send(&mut self, from: NodeId, to: NodeId, bytes: u64, payload: P) -> SendOutcome {
        self.send_with(from, to, bytes, payload, Delivery::Datagram)
    }

    /// Lost packets among `n` at loss `p`, and whether the last one was among them. Draws one
    /// number per loss plus one (geometric gaps), so a 100-packet chunk at 1% loss costs ~2 draws.
    fn packet_losses(&mut self, n: u64, p: f64) -> (u64, bool) {
        if p >= 1.0 {
            return (n, true);
        }
        let ln_keep = (1.0 - p).ln();
        let (mut at, mut lost, mut last) = (0u64, 0u64, false);
        loop {
            let u: f64 = self.rng.gen_range(f64::MIN_POSITIVE..1.0);
            let gap = (u.ln() / ln_keep).floor();
            if gap.is_nan() || gap >= (n - at) as f64 {
                return (lost, last);
            }
            at += gap as u64;
            lost += 1;
            last = at == n - 1;
            at += 1;
            if at >= n {
                return (lost, last);
            }
        }
    }

    /// Like [`Net::send`], with the transport's [`Delivery`] mode.
    pub fn send_with(
        &mut self,
        from: NodeId,
        to: NodeId,
        bytes: u64,
        payload: P,
        delivery: Delivery,
    ) -> SendOutcome {
        let now = self.now;
        let (fi, ti) = (from.index(), to.index());
        if fi >= self.nodes.len()
            || ti >= self.nodes.len()
            || self.nodes[fi].left_at.is_some()
            || self.nodes[ti].left_at.is_some()
        {
            if let Some(n) = self.nodes.get_mut(fi) {
                n.stats.msgs_dropped += 1;
            }
            return SendOutcome::NoSuchNode;
        }
        let lat = self.latency_us(from, to);
        let link = if self.links.is_empty() {
            None
        } else {
            self.links.get(&(from, to)).copied()
        };

        let sender = &mut self.nodes[fi];
        let start = sender.up_free.max(now);
        let queue_delay = start - now;
        if let Some(limit) = sender.cfg.up_queue_limit
            && queue_delay > limit.as_micros() as u64
        {
            sender.stats.msgs_dropped += 1;
            return SendOutcome::QueueFull;
        }
        let up_done = start + serialise_us(bytes, sender.cfg.up);
        sender.up_free = up_done;
        sender.stats.bytes_sent += bytes;
        sender.stats.msgs_sent += 1;
        let sender_loss = sender.cfg.loss;

        let receiver_loss = self.nodes[ti].cfg.loss;
        let link_loss = link.map_or(0.0, |l| l.loss);
        // Resends: extra bytes on both links, and how much later the last packet arrives.
        let (mut resent_bytes, mut resend_us) = (0u64, 0u64);
        if sender_loss > 0.0 || receiver_loss > 0.0 || link_loss > 0.0 {
            let keep = (1.0 - sender_loss) * (1.0 - receiver_loss) * (1.0 - link_loss);
            let lifetime = match delivery {
                Delivery::Datagram => {
                    if self.rng.gen_range(0.0..1.0) >= keep {
                        self.nodes[fi].stats.msgs_lost += 1;
                        return SendOutcome::Queued {
                            queue_delay: Duration::from_micros(queue_delay),
                        };
                    }
                    None
                }
                Delivery::Reliable => Some(u64::MAX),
                Delivery::Lifetime(l) => Some(l.as_micros().min(u64::MAX as u128) as u64),
            };
            if let Some(lifetime) = lifetime {
                let packets = bytes.div_ceil(PACKET_BYTES).max(1);
                let (mut lost, mut tail) = self.packet_losses(packets, 1.0 - keep);
                let rtt = Duration::from_micros(lat + self.latency_us(to, from));
                let mut timer = rto(rtt);
                let mut first = true;
                let up = self.nodes[fi].cfg.up;
                // Resends leave after the detection delay, behind whatever the uplink holds.
                while lost > 0 {
                    let detect = if first && !tail {
                        rtt + FAST_RETRANSMIT_SLACK
                    } else {
                        let t = timer;
                        timer = (timer * 2).min(Duration::from_secs(60));
                        t
                    };
                    first = false;
                    let b = (lost * PACKET_BYTES).min(bytes.max(1));
                    let wait = (up_done - now) + resend_us + detect.as_micros() as u64;
                    if wait > lifetime {
                        // PR-SCTP abandons the message: what was sent is spent, nothing arrives.
                        let n = &mut self.nodes[fi];
                        n.stats.msgs_lost += 1;
                        n.stats.bytes_sent += resent_bytes;
                        n.up_free = n.up_free.max(up_done + serialise_us(resent_bytes, up));
                        return SendOutcome::Queued {
                            queue_delay: Duration::from_micros(queue_delay),
                        };
                    }
                    resend_us += detect.as_micros() as u64 + serialise_us(b, up);
                    resent_bytes += b;
                    let n = &mut self.nodes[fi];
                    n.stats.packets_resent += lost;
                    n.stats.bytes_resent += b;
                    (lost, tail) = self.packet_losses(lost, 1.0 - keep);
                    tail |= lost > 0;
                }
                if resent_bytes > 0 {
                    // The resent packets take uplink time (approximated as queued now: later
                    // messages on this uplink wait for them).
                    let n = &mut self.nodes[fi];
                    n.stats.bytes_sent += resent_bytes;
                    n.up_free += serialise_us(resent_bytes, up);
                }
            }
        }

        // The downlink is a fluid queue: its backlog (in microseconds of work) drains in real time, and
        // a message waits for the backlog present when it arrives. Computing this at send time keeps
        // one event per message; messages are never delayed by another message's *latency*, only by
        // bytes ahead of them (out-of-order arrivals see the backlog as of the latest arrival).
        let arrive = up_done + resend_us + lat;
        let receiver = &mut self.nodes[ti];
        let ser = serialise_us(bytes + resent_bytes, receiver.cfg.down);
        let drained = arrive.saturating_sub(receiver.down_last);
        let backlog = receiver.down_backlog.saturating_sub(drained);
        let done = arrive + backlog + ser;
        receiver.down_backlog = backlog + ser;
        receiver.down_last = receiver.down_last.max(arrive);
        receiver.down_free = receiver.down_free.max(done);
        self.push(
            done,
            to.0,
            Pending::Deliver {
                from,
                to,
                bytes,
                up_done,
                payload,
            },
        );
        SendOutcome::Queued {
            queue_delay: Duration::from_micros(queue_delay),
        }
    }

    /// Fire a timer carrying `payload` at `at` (clamped to now) for `node`, or a global one if `None`.
    pub fn schedule(&mut self, at: Time, node: Option<NodeId>, payload: P) {
        let at = at.as_micros().max(self.now);
        self.push(
            at,
            node.map_or(u32::MAX, |n| n.0),
            Pending::Timer { node, payload },
        );
    }

    fn push(&mut self, at: u64, node: u32, p: Pending<P>) {
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(p);
                s
            }
            None => {
                self.slots.push(Some(p));
                (self.slots.len() - 1) as u32
            }
        };
        self.heap.push((at, self.seq, slot, node));
        self.seq += 1;
    }

    /// The node the next event is for, if the queue already knows it cheaply (a hint for prefetching
    /// the caller's per-node state; `None` says nothing about what is pending).
    pub fn next_node_hint(&self) -> Option<NodeId> {
        self.heap
            .peek_ready()
            .and_then(|(.., n)| (n != u32::MAX).then_some(NodeId(n)))
    }

    /// Start loading `id`'s link state (a hint before a burst of sends to it).
    pub fn prefetch_node(&self, id: NodeId) {
        if let Some(n) = self.nodes.get(id.index()) {
            prefetch(n, 3);
        }
    }

    /// Like [`Net::next_node_hint`], for the event after the next one.
    pub fn second_node_hint(&self) -> Option<NodeId> {
        self.heap
            .peek_second_ready()
            .and_then(|(.., n)| (n != u32::MAX).then_some(NodeId(n)))
    }

    /// When the next event is due, if any is pending.
    pub fn peek_time(&mut self) -> Option<Time> {
        self.heap.peek().map(|(t, ..)| Time::from_micros(t))
    }

    /// Pending events (including ones that will be dropped because a node left).
    pub fn pending(&self) -> usize {
        self.heap.len()
    }

    /// Pop the next event, advancing the clock to it. Messages from or to departed nodes and timers of
    /// departed nodes are discarded on the way.
    pub fn next_event(&mut self) -> Option<Event<P>> {
        self.next_event_until(Time::MAX)
    }

    /// Like [`Net::next_event`], but stops (returning `None` and setting the clock to `until`) if the next
    /// event is later than `until`.
    pub fn next_event_until(&mut self, until: Time) -> Option<Event<P>> {
        loop {
            let (at, _, slot, _) = self.heap.peek()?;
            if at > until.as_micros() {
                self.now = self.now.max(until.as_micros());
                return None;
            }
            self.heap.pop();
            self.now = at;
            // Start loading the next event's payload and node while this one is handled (only a
            // hint: the next event may still change if this one schedules an earlier one).
            if let Some((_, _, s, n)) = self.heap.peek_ready() {
                if let Some(p) = self.slots.get(s as usize) {
                    prefetch(p, 2);
                }
                if let Some(nd) = self.nodes.get(n as usize) {
                    prefetch(nd, 3);
                }
            }
            let p = self.slots[slot as usize].take();
            self.free.push(slot);
            match p {
                Some(Pending::Deliver {
                    from,
                    to,
                    bytes,
                    up_done,
                    payload,
                }) => {
                    let sender_ok = self.nodes[from.index()]
                        .left_at
                        .is_none_or(|t| t >= up_done);
                    let recv = &mut self.nodes[to.index()];
                    if !sender_ok || recv.left_at.is_some() {
                        recv.stats.msgs_dropped += 1;
                        continue;
                    }
                    recv.stats.bytes_received += bytes;
                    recv.stats.msgs_received += 1;
                    return Some(Event {
                        at: Time::from_micros(at),
                        kind: EventKind::Deliver {
                            from,
                            to,
                            bytes,
                            payload,
                        },
                    });
                }
                Some(Pending::Timer { node, payload }) => {
                    if let Some(n) = node
                        && !self.is_alive(n)
                    {
                        continue;
                    }
                    return Some(Event {
                        at: Time::from_micros(at),
                        kind: EventKind::Timer { node, payload },
                    });
                }
                None => continue,
            }
        }
    }
}
