//! Every message a peer can send, through the real decode and state path. The input is a script of
//! operations; a *wire* operation carries raw bytes from one of a few peers, which go through
//! `MeshMsg::decode` and, if they decode, into a live `Viewer` and the `RootSeed` exactly as a data
//! channel would hand them over. Genuine signed chunks (and genuine records with a corrupt payload)
//! are mixed in so the fuzzer reaches the paths behind verification: serving, relaying, playing. Both
//! state machines are drained after every step ("mutate, then drain until Timeout").
//!
//! Properties: nothing panics or overflows (hostile sequence numbers near `u64::MAX` included);
//! the viewer plays only chunks that arrived genuine, so nothing corrupt is ever played; a timeout is
//! never in the past.
#![no_main]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use hum_mesh::chunker::Chunk;
use hum_mesh::manifest::{Publisher, Verifier};
use hum_mesh::root::RootSeed;
use hum_mesh::viewer::{Viewer, ViewerConfig};
use hum_mesh::{Layer, MeshEvent, MeshMsg, Output, PeerId, Time};
use hum_proto::Bitrate;
use libfuzzer_sys::fuzz_target;

const ROOT: PeerId = PeerId(0);
const ME: PeerId = PeerId(1);
const LIVE: u64 = 1000;
const CHUNK_US: u64 = 250_000;

struct Rig {
    now: Time,
    viewer: Viewer,
    root: RootSeed,
    publisher: Publisher,
    genuine: BTreeSet<u64>,
    published: u64,
}

impl Rig {
    fn new() -> Rig {
        let publisher = Publisher::from_seed([7; 32]);
        let verifier = Verifier::new(publisher.public_key());
        let now = Time::from_millis(1);
        let cfg = ViewerConfig::new(
            Layer::High,
            Bitrate::from_mbps(4),
            Duration::from_micros(CHUNK_US),
            Bitrate::from_mbps(8),
        );
        let mut viewer = Viewer::new(ME, ROOT, verifier, cfg, now);
        viewer.join(now, LIVE);
        viewer.add_upstream(now, PeerId(2), Bitrate::from_mbps(2));
        viewer.add_upstream(now, PeerId(3), Bitrate::from_mbps(2));
        let root = RootSeed::new(
            Layer::High,
            Publisher::from_seed([7; 32]),
            Bitrate::from_mbps(5),
            32,
            now,
        );
        Rig {
            now,
            viewer,
            root,
            publisher,
            genuine: BTreeSet::new(),
            published: LIVE,
        }
    }

    fn chunk(seq: u64) -> Chunk {
        Chunk::new(
            Layer::High,
            seq,
            seq * CHUNK_US,
            CHUNK_US as u32,
            true,
            Arc::from(&seq.to_le_bytes()[..]),
        )
    }

    fn drain(&mut self) {
        loop {
            match self.viewer.poll_output() {
                Output::Send { .. } => {}
                Output::Event(MeshEvent::Played { seq, .. }) => assert!(
                    self.genuine.contains(&seq),
                    "played chunk {seq}, which never arrived genuine"
                ),
                Output::Event(_) => {}
                Output::Timeout(t) => {
                    assert!(t >= self.now, "viewer timeout in the past");
                    break;
                }
            }
        }
        loop {
            match self.root.poll_output() {
                Output::Send { .. } | Output::Event(_) => {}
                Output::Timeout(t) => {
                    assert!(t >= self.now || t == Time::MAX, "root timeout in the past");
                    break;
                }
            }
        }
    }

    fn step(&mut self, op: u8, arg: u8, wire: &[u8]) {
        let from = PeerId(2 + u32::from(arg % 4));
        match op % 7 {
            // Raw bytes off a peer's data channel.
            0 | 1 => {
                if let Ok(msg) = MeshMsg::decode(wire) {
                    self.root.handle_input(self.now, from, msg.clone());
                    self.viewer.handle_input(self.now, from, msg);
                }
            }
            // A genuine chunk near the live edge, relayed by a peer.
            2 => {
                let seq = LIVE + u64::from(arg % 48);
                let c = Rig::chunk(seq);
                let record = Arc::new(self.publisher.sign(&c, 62_500));
                self.genuine.insert(seq);
                let msg = MeshMsg::Data {
                    record,
                    hops: wire.first().copied().unwrap_or(0),
                    payload: c.payload.clone(),
                };
                self.viewer.handle_input(self.now, from, msg);
            }
            // A genuine record with someone else's payload: must be refused, never played.
            3 => {
                let seq = LIVE + u64::from(arg % 48);
                let c = Rig::chunk(seq);
                let record = Arc::new(self.publisher.sign(&c, 62_500));
                let mut bad = c.payload.to_vec();
                bad.push(arg);
                let msg = MeshMsg::Data {
                    record,
                    hops: 0,
                    payload: Arc::from(bad),
                };
                self.viewer.handle_input(self.now, from, msg);
            }
            // Time passes.
            4 => {
                self.now = self.now + Duration::from_millis(u64::from(arg) * 8);
                self.viewer.handle_timeout(self.now);
                self.root.handle_timeout(self.now);
            }
            // The root publishes its next chunk.
            5 => {
                let c = Rig::chunk(self.published);
                self.published += 1;
                self.root.publish(self.now, &c, 62_500);
            }
            // The tracker's view changes: a peer leaves, or a grant arrives.
            _ => {
                if arg & 0x80 != 0 {
                    self.viewer.peer_gone(self.now, from);
                    self.root.peer_gone(from);
                } else {
                    self.viewer.add_upstream(
                        self.now,
                        from,
                        Bitrate::from_kbps(u64::from(arg) * 64),
                    );
                    self.root.set_granted(from, arg & 1 == 1);
                }
            }
        }
        self.drain();
    }
}

fuzz_target!(|data: &[u8]| {
    let mut rig = Rig::new();
    // Frames: [op][arg][len u16 BE][len bytes]; a short tail is one last frame.
    let mut rest = data;
    let mut steps = 0;
    while rest.len() >= 2 && steps < 256 {
        let (op, arg) = (rest[0], rest[1]);
        rest = &rest[2..];
        let len = if rest.len() >= 2 {
            let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            rest = &rest[2..];
            n.min(rest.len())
        } else {
            0
        };
        let (wire, tail) = rest.split_at(len);
        rest = tail;
        rig.step(op, arg, wire);
        steps += 1;
    }
});
