//! The livestream mesh over real WebRTC data channels on loopback, in one process: a root (the
//! streamer's root seed + tracker) and viewers, each its own node with its own UDP sockets, the
//! signalling passed straight between them (the relay's part is tested in tests/tests/stream.rs).
//! Chunks come from the real pattern + VP8 + Opus encoder.

use std::collections::BTreeMap;
use std::time::Duration;

use hum_engine::budget::model::{
    BandwidthSettings, RelayContribution, ReservedUpload, TotalUpload,
};
use hum_engine::budget::{BudgetConfig, BudgetEvent, BudgetService, UdpEchoProber};
use hum_engine::stream::player::FrameHasher;
use hum_engine::stream::source::{SourceConfig, StreamEncoder};
use hum_engine::stream::{
    Command, NodeConfig, NodeHandle, NodeReport, PlayedChunk, spawn_root, spawn_viewer,
};
use hum_mesh::Layer;
use hum_mesh::chunker::Chunk;
use hum_mesh::manifest::Publisher;
use hum_proto::signal::MeshSignal;
use hum_proto::{Bitrate, UserId};
use tokio::sync::mpsc;

fn cfg(source: &SourceConfig, budget: Bitrate, corrupt: bool) -> NodeConfig {
    NodeConfig {
        bind: vec!["127.0.0.1:0".into()],
        layer: Layer::High,
        stream_rate: source.planned_rate(),
        chunk: source.chunk,
        relay_budget: budget,
        ice: hum_engine::ice::IceConfig::default(),
        upload: None,
        started_ms: hum_engine::stream::node::unix_ms(),
        corrupt,
        root_url: None,
        played: None,
    }
}

/// Runs one root and `viewers` (budget, corrupt) for `chunks` chunks; returns their final reports.
async fn run(viewers: &[(Bitrate, bool)], chunks: u64) -> (NodeReport, Vec<NodeReport>) {
    let (root, reports, _) = run_with(viewers, chunks, &[], &[]).await;
    (root, reports)
}

/// [`run`], viewer `i` relaying from `upload[i]` (a bandwidth service) and handing what it plays
/// to `played[i]` when there are; also returns the chunks the root published.
async fn run_with(
    viewers: &[(Bitrate, bool)],
    chunks: u64,
    upload: &[Option<BudgetService>],
    played: &[Option<mpsc::Sender<PlayedChunk>>],
) -> (NodeReport, Vec<NodeReport>, Vec<Chunk>) {
    let source = SourceConfig {
        width: 160,
        height: 96,
        fps: 20,
        video_bitrate: Bitrate::from_kbps(200),
        chunk: Duration::from_millis(250),
        audio: true,
        lower: [None; 3],
    };
    let publisher = Publisher::from_seed([3; 32]);
    let streamer = UserId(publisher.public_key().to_bytes());
    let (sig_tx, mut sig_rx) = mpsc::unbounded_channel::<(UserId, UserId, MeshSignal)>();

    // Each node's outgoing signals are tagged with its user and routed by a switch task.
    let tagged = |me: UserId| {
        let (tx, mut rx) = mpsc::unbounded_channel::<(UserId, MeshSignal)>();
        let out = sig_tx.clone();
        tokio::spawn(async move {
            while let Some((to, s)) = rx.recv().await {
                let _ = out.send((me, to, s));
            }
        });
        tx
    };
    let root_cfg = cfg(
        &source,
        Bitrate::from_bps(source.planned_rate().bps() * 5 / 4),
        false,
    );
    let root = spawn_root(streamer, publisher, root_cfg, tagged(streamer));
    let mut nodes: BTreeMap<UserId, NodeHandle> = BTreeMap::new();
    nodes.insert(streamer, root.clone());
    let mut order = Vec::new();
    for (i, &(budget, corrupt)) in viewers.iter().enumerate() {
        let me = UserId([10 + i as u8; 32]);
        let mut c = cfg(&source, budget, corrupt);
        c.upload = upload.get(i).cloned().flatten();
        c.played = played.get(i).cloned().flatten();
        let v = spawn_viewer(me, streamer, c, tagged(me)).expect("valid stream key");
        nodes.insert(me, v);
        order.push(me);
    }
    let switch_nodes = nodes.clone();
    tokio::spawn(async move {
        while let Some((from, to, signal)) = sig_rx.recv().await {
            if let Some(n) = switch_nodes.get(&to) {
                n.send(Command::Signal { from, signal });
            }
        }
    });

    let mut enc = StreamEncoder::new(source, Layer::High).expect("encoder");
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut published = 0;
    let mut sent = Vec::new();
    let mut joined = 0;
    while published < chunks {
        tick.tick().await;
        for c in enc.next_frame().expect("encode") {
            sent.push(c.clone());
            root.send(Command::Publish(c));
            published += 1;
            // Viewers join one per chunk after the first two, the corrupt ones first.
            if published >= 2 && joined < order.len() {
                let relay = viewers[joined].0;
                root.send(Command::ViewerJoined {
                    user: order[joined],
                    relay,
                });
                joined += 1;
            }
        }
    }
    let mut reports = Vec::new();
    for u in &order {
        reports.push(nodes[u].stop().await);
    }
    let root = root.stop().await;
    eprintln!("root: {}", serde_json::to_string(&root).unwrap_or_default());
    for r in &reports {
        eprintln!("viewer: {}", serde_json::to_string(r).unwrap_or_default());
    }
    (root, reports, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_play_verified_chunks_relayed_by_each_other() {
    let strong = Bitrate::from_mbps(4);
    let (root, viewers) = run(&[(strong, false); 4], 40).await;
    assert_eq!(root.published, 40);
    assert_eq!(root.viewers, 4);
    let mut from_peers = 0;
    for (i, v) in viewers.iter().enumerate() {
        assert!(v.started, "viewer {i} never started: {v:?}");
        assert!(v.played >= 10, "viewer {i} played {}: {v:?}", v.played);
        assert_eq!(v.played_verified, v.played, "viewer {i}: {v:?}");
        assert_eq!(v.played_corrupt, 0);
        assert_eq!(v.wire_errors, 0);
        from_peers += v.chunks_from_peers;
    }
    // One server copy (cap 1.25x the stream) feeds one relay; everyone else hears from peers.
    assert!(from_peers > 0, "no chunk came from a peer: {viewers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_serving_corrupt_chunks_is_banned_and_nothing_corrupt_plays() {
    let strong = Bitrate::from_mbps(4);
    // The corrupt viewer joins first with the strongest upload, so the tracker gives it the
    // root's seat and everyone else's grants.
    let (root, viewers) = run(
        &[
            (Bitrate::from_mbps(20), true),
            (strong, false),
            (strong, false),
            (strong, false),
        ],
        48,
    )
    .await;
    let bad = UserId([10; 32]).to_hex();
    let honest = &viewers[1..];
    let bans: usize = honest
        .iter()
        .map(|v| v.banned.iter().filter(|b| **b == bad).count())
        .sum();
    assert!(bans >= 1, "nobody banned the corrupt relay: {honest:?}");
    assert!(root.tracker_bans >= 1);
    for (i, v) in honest.iter().enumerate() {
        assert!(v.penalties >= 1 || v.chunks_from_peers > 0 || v.chunks_from_root > 0);
        assert_eq!(v.played_corrupt, 0, "viewer {i} played a corrupt chunk");
        assert_eq!(v.played_verified, v.played);
        assert!(v.played > 0, "viewer {i} played nothing: {v:?}");
        assert!(
            v.banned.iter().all(|b| *b == bad),
            "an honest peer was banned: {v:?}"
        );
    }
}

/// A bandwidth service with `relay` as the relay setting (10 Mbit/s total, 2 reserved), its
/// throttler warmed up on a real UDP echo so relaying may start.
async fn budget(relay: RelayContribution) -> BudgetService {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let echo = sock.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
    let prober = UdpEchoProber::connect(echo, Duration::from_secs(1))
        .await
        .expect("prober");
    let mut config = BudgetConfig::new(BandwidthSettings {
        total_upload: TotalUpload::Manual {
            rate: Bitrate::from_mbps(10),
        },
        reserved: ReservedUpload::Manual {
            rate: Bitrate::from_mbps(2),
        },
        relay,
        ..BandwidthSettings::default()
    });
    config.relay_prober = Some(std::sync::Arc::new(prober));
    config.system_sample_every = None;
    let service = BudgetService::spawn(config);
    if relay != RelayContribution::Off {
        let mut events = service.subscribe();
        tokio::time::timeout(Duration::from_secs(10), async {
            while service.relay_cap() == Bitrate::ZERO {
                if let Ok(BudgetEvent::RelayCap { .. }) = events.recv().await {}
            }
        })
        .await
        .expect("the throttler lets relaying start");
    }
    service
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_relays_only_what_the_bandwidth_service_admits() {
    // All three tell the tracker they relay 4 Mbit/s; only the first one's settings let it.
    let on = budget(RelayContribution::High).await;
    let off = [
        budget(RelayContribution::Off).await,
        budget(RelayContribution::Off).await,
    ];
    let strong = Bitrate::from_mbps(4);
    let upload = [Some(on.clone()), Some(off[0].clone()), Some(off[1].clone())];
    let (_, viewers, _) = run_with(&[(strong, false); 3], 40, &upload, &[]).await;
    for (i, v) in viewers.iter().enumerate() {
        assert!(v.started, "viewer {i} never started: {v:?}");
        assert!(v.played >= 10, "viewer {i} played {}: {v:?}", v.played);
        assert_eq!(v.played_verified, v.played, "viewer {i}: {v:?}");
    }
    // Relay off in the settings: not one chunk left those two, whatever the tracker asked.
    for (i, s) in off.iter().enumerate() {
        assert_eq!(
            viewers[i + 1].chunks_sent,
            0,
            "viewer {}: {:?}",
            i + 1,
            viewers[i + 1]
        );
        assert_eq!(s.limiter_stats().relay_bytes, 0);
    }
    // What the first relayed was charged to its service's limiter, within its cap.
    let relayed = on.limiter_stats().relay_bytes;
    assert!(viewers[0].chunks_sent > 0, "{:?}", viewers[0]);
    assert!(
        relayed > 0 && relayed <= viewers[0].bytes_sent_data,
        "{relayed} {:?}",
        viewers[0]
    );
    for s in off.iter().chain([&on]) {
        s.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoded_pictures_of_relayed_chunks_hash_the_same_as_the_streamers() {
    // Four viewers relaying to each other; two decode every frame they play.
    let strong = Bitrate::from_mbps(4);
    let mut played = Vec::new();
    let mut decoders = Vec::new();
    for _ in 0..2 {
        let (tx, mut rx) = mpsc::channel::<PlayedChunk>(64);
        played.push(Some(tx));
        decoders.push(tokio::spawn(async move {
            let mut h = FrameHasher::new().expect("decoder");
            while let Some(c) = rx.recv().await {
                h.push(&c);
            }
            h
        }));
    }
    let (_, viewers, sent) = run_with(&[(strong, false); 4], 40, &[], &played).await;
    drop(played);
    let mut streamer = FrameHasher::new().expect("decoder");
    for c in &sent {
        streamer.push(&PlayedChunk::from_chunk(c));
    }
    assert_eq!(streamer.report().corrupt, 0);
    for (i, d) in decoders.into_iter().enumerate() {
        let h = d.await.expect("decoder task");
        let r = h.report();
        assert_eq!(r.corrupt, 0, "viewer {i}: {r:?}");
        // 5 video frames a chunk; every chunk played was decoded, from a keyframe on.
        assert_eq!(
            r.decoded,
            viewers[i].played * 5,
            "viewer {i}: {r:?} {:?}",
            viewers[i]
        );
        assert!(r.decoded >= 50, "viewer {i}: {r:?}");
        for (key, hash) in h.hashes() {
            assert_eq!(
                streamer.hashes().get(key),
                Some(hash),
                "viewer {i} picture {key:?}"
            );
        }
    }
    assert!(
        viewers.iter().map(|v| v.chunks_from_peers).sum::<u64>() > 0,
        "{viewers:?}"
    );
}
