//! The root seed: the server's end of the mesh.
//!
//! It publishes every chunk (signing its record) and serves requests like any peer, but under a
//! **global cap**: one token bucket for all of its egress. The tracker hands out grants on the root's
//! uplink to at most the cap (minus a reserve for fallback), so the number of peers seeded per chunk is
//! bounded by the cap, not by the audience, and server egress plateaus. Fallback requests (a viewer
//! about to miss a deadline) share the same bucket but come second: the peers the root feeds by grant
//! carry whole subtrees, and starving them to answer fallbacks would turn one late chunk into a late
//! chunk for everyone below them (congestion collapse). Within each class, earliest deadline first; what
//! the cap cannot serve in time is refused with `Absent(Busy)` at once so the viewer does not wait.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use hum_proto::Bitrate;
use hum_proto::mesh::{AbsentReason, ChunkRecord, Layer, MeshMsg};

use crate::chunker::Chunk;
use crate::manifest::Publisher;
use crate::serve::{Priority, ServeQueue, ServeRequest, TokenBucket};
use crate::{Output, PeerId, Time};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RootStats {
    pub bytes_sent: u64,
    pub chunks_sent: u64,
    pub busy: u64,
}

pub struct RootSeed {
    layer: Layer,
    publisher: Publisher,
    window: u64,
    chunks: Vec<Option<(ChunkRecord, Arc<[u8]>)>>,
    newest: Option<u64>,
    serve: ServeQueue,
    lookahead: u64,
    granted: Vec<PeerId>,
    now: Time,
    out: VecDeque<Output>,
    scratch: Vec<ServeRequest>,
    pub stats: RootStats,
}

impl std::fmt::Debug for RootSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootSeed")
            .field("newest", &self.newest)
            .field("stats", &self.stats)
            .finish()
    }
}

impl RootSeed {
    /// `cap` is the server's total mesh egress.
    pub fn new(layer: Layer, publisher: Publisher, cap: Bitrate, window: u64, now: Time) -> Self {
        let window = window.max(8);
        RootSeed {
            layer,
            publisher,
            window,
            chunks: vec![None; window as usize],
            newest: None,
            serve: ServeQueue::new(
                TokenBucket::new(cap.bps(), Duration::from_millis(100), now),
                Priority::Deadline,
            ),
            lookahead: 4,
            granted: Vec::new(),
            now,
            out: VecDeque::new(),
            scratch: Vec::new(),
            stats: RootStats::default(),
        }
    }

    /// `peer` holds (or no longer holds) a grant on the root: its requests are the mesh's feed.
    pub fn set_granted(&mut self, peer: PeerId, granted: bool) {
        self.granted.retain(|p| *p != peer);
        if granted {
            self.granted.push(peer);
        }
    }

    pub fn newest(&self) -> Option<u64> {
        self.newest
    }

    pub fn cap(&self) -> Bitrate {
        Bitrate::from_bps(self.serve.bucket.rate_bps())
    }

    fn get(&self, seq: u64) -> Option<&(ChunkRecord, Arc<[u8]>)> {
        self.chunks[(seq % self.window) as usize]
            .as_ref()
            .filter(|(r, _)| r.seq == seq)
    }

    fn bytes_of(&self, seq: u64) -> u32 {
        self.get(seq).map_or(0, |(r, _)| r.bytes)
    }

    /// Publish the next chunk; `bytes` is the size it counts for. Returns its signed record.
    pub fn publish(&mut self, now: Time, chunk: &Chunk, bytes: u32) -> ChunkRecord {
        self.now = now;
        let rec = self.publisher.sign(chunk, bytes);
        self.chunks[(chunk.seq % self.window) as usize] = Some((rec, chunk.payload.clone()));
        self.newest = Some(self.newest.map_or(chunk.seq, |n| n.max(chunk.seq)));
        self.serve.on_have(chunk.seq, bytes);
        self.release(now);
        rec
    }

    pub fn handle_input(&mut self, now: Time, from: PeerId, msg: MeshMsg) {
        self.now = now;
        match msg {
            MeshMsg::Request {
                layer,
                seq,
                deadline_ms,
            } => {
                let deadline = now + Duration::from_millis(deadline_ms as u64);
                let req = ServeRequest {
                    to: from,
                    seq,
                    deadline,
                    buffer_ms: 0,
                };
                if layer != self.layer {
                    self.out.push_back(Output::Send {
                        to: from,
                        msg: MeshMsg::Absent {
                            layer,
                            seq,
                            reason: AbsentReason::NotHeld,
                        },
                    });
                } else if self.get(seq).is_some() {
                    let b = self.bytes_of(seq);
                    if self
                        .serve
                        .bucket
                        .wait_for(self.serve.backlog_bytes() + b as u64)
                        > Duration::from_millis(deadline_ms as u64)
                    {
                        self.stats.busy += 1;
                        self.out.push_back(Output::Send {
                            to: from,
                            msg: MeshMsg::Absent {
                                layer,
                                seq,
                                reason: AbsentReason::Busy,
                            },
                        });
                    } else {
                        self.serve.push_ready(req, b);
                    }
                } else if self
                    .newest
                    .is_none_or(|n| seq > n && seq <= n + self.lookahead)
                {
                    if !self.serve.push_held(req) {
                        self.stats.busy += 1;
                        self.out.push_back(Output::Send {
                            to: from,
                            msg: MeshMsg::Absent {
                                layer,
                                seq,
                                reason: AbsentReason::Busy,
                            },
                        });
                    }
                } else {
                    let reason = if self.newest.is_some_and(|n| seq <= n) {
                        AbsentReason::TooOld
                    } else {
                        AbsentReason::NotHeld
                    };
                    self.out.push_back(Output::Send {
                        to: from,
                        msg: MeshMsg::Absent { layer, seq, reason },
                    });
                }
            }
            MeshMsg::Cancel { seq, .. } => {
                let b = self.bytes_of(seq);
                self.serve.cancel(from, seq, b);
            }
            MeshMsg::BufferHealth { .. } => {}
            MeshMsg::Data { .. } | MeshMsg::Announce { .. } | MeshMsg::Absent { .. } => {}
        }
        self.release(now);
    }

    /// A peer left: drop its pending requests.
    pub fn peer_gone(&mut self, peer: PeerId) {
        self.serve.forget(peer);
        self.set_granted(peer, false);
    }

    pub fn handle_timeout(&mut self, now: Time) {
        self.now = now;
        self.release(now);
    }

    pub fn poll_output(&mut self) -> Output {
        match self.out.pop_front() {
            Some(o) => o,
            None => Output::Timeout(self.serve.next_wake(self.now).unwrap_or(Time::MAX)),
        }
    }

    fn release(&mut self, now: Time) {
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        {
            let chunks = &self.chunks;
            let w = self.window;
            self.serve.release(
                now,
                |seq| {
                    chunks[(seq % w) as usize]
                        .as_ref()
                        .filter(|(r, _)| r.seq == seq)
                        .map_or(0, |(r, _)| r.bytes)
                },
                &mut out,
            );
        }
        for r in out.iter() {
            if let Some((rec, payload)) = self.get(r.seq) {
                let msg = MeshMsg::Data {
                    record: *rec,
                    hops: 0,
                    payload: payload.clone(),
                };
                self.stats.bytes_sent += rec.bytes as u64;
                self.stats.chunks_sent += 1;
                self.out.push_back(Output::Send { to: r.to, msg });
            }
        }
        self.scratch = out;
    }
}
