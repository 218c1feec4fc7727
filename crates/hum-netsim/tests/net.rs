use std::time::Duration;

use hum_netsim::{
    ChurnEvent, ChurnSchedule, Delivery, EventKind, FAST_RETRANSMIT_SLACK, Net, NodeConfig,
    NodeStats, PACKET_BYTES, RTO_MIN, SendOutcome, Time,
};
use hum_proto::Bitrate;
use rand::SeedableRng;

fn home(up_mbps: u64) -> NodeConfig {
    NodeConfig::new(
        Bitrate::from_mbps(up_mbps),
        Bitrate::from_mbps(100),
        Duration::from_millis(10),
    )
}

#[test]
fn delivery_time_is_serialisation_plus_latency() {
    let mut net: Net<u32> = Net::new(1);
    let a = net.add_node(home(8)); // 8 Mbit/s = 1 MB/s
    let b = net.add_node(NodeConfig::new(
        Bitrate::from_mbps(8),
        Bitrate::from_bps(u64::MAX),
        Duration::from_millis(5),
    ));
    assert_eq!(
        net.send(a, b, 100_000, 7),
        SendOutcome::Queued {
            queue_delay: Duration::ZERO
        }
    );
    let ev = net.next_event().expect("delivered");
    // 100 kB at 1 MB/s = 100 ms, + 10 + 5 ms one-way latency.
    assert_eq!(ev.at, Time::from_millis(115));
    match ev.kind {
        EventKind::Deliver {
            from,
            to,
            bytes,
            payload,
        } => {
            assert_eq!((from, to, bytes, payload), (a, b, 100_000, 7));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(net.stats(b).bytes_received, 100_000);
}

#[test]
fn saturated_uplink_builds_queuing_delay_for_everything_behind_it() {
    let mut net: Net<&str> = Net::new(1);
    let relay = net.add_node(home(1)); // 1 Mbit/s uplink
    let viewer = net.add_node(home(50));
    let game_server = net.add_node(NodeConfig::unlimited(Duration::from_millis(10)));
    // Ten 25 kB chunks: 2 s of uplink time.
    for _ in 0..10 {
        net.send(relay, viewer, 25_000, "chunk");
    }
    assert_eq!(net.uplink_backlog(relay), Duration::from_millis(2000));
    assert!(net.uplink_backlog_bytes(relay) >= 249_000);
    // A 100-byte game packet now waits behind them.
    let out = net.send(relay, game_server, 100, "game");
    assert_eq!(
        out,
        SendOutcome::Queued {
            queue_delay: Duration::from_millis(2000)
        }
    );
    let mut game_at = None;
    while let Some(ev) = net.next_event() {
        if let EventKind::Deliver {
            payload: "game", ..
        } = ev.kind
        {
            game_at = Some(ev.at);
        }
    }
    let game_at = game_at.expect("game packet delivered");
    assert!(game_at.since(Time::ZERO) >= Duration::from_millis(2000 + 20));
    // Once drained, a packet sees no queue.
    assert_eq!(net.uplink_backlog(relay), Duration::ZERO);
}

#[test]
fn queue_limit_tail_drops() {
    let mut net: Net<()> = Net::new(1);
    let a = net.add_node(home(1).with_up_queue_limit(Duration::from_millis(100)));
    let b = net.add_node(home(1));
    // 12.5 kB = 100 ms at 1 Mbit/s.
    assert!(matches!(
        net.send(a, b, 12_500, ()),
        SendOutcome::Queued { .. }
    ));
    assert!(matches!(
        net.send(a, b, 12_500, ()),
        SendOutcome::Queued { .. }
    ));
    assert_eq!(net.send(a, b, 12_500, ()), SendOutcome::QueueFull);
    assert_eq!(net.stats(a).msgs_dropped, 1);
}

#[test]
fn sender_leaving_mid_transfer_loses_the_message() {
    let mut net: Net<u8> = Net::new(1);
    let a = net.add_node(home(1));
    let b = net.add_node(home(1));
    net.send(a, b, 1_000, 1); // 8 ms on the wire
    net.send(a, b, 125_000, 2); // a further 1 s
    net.schedule(Time::from_millis(500), None, 0);
    let mut got = vec![];
    while let Some(ev) = net.next_event() {
        match ev.kind {
            EventKind::Timer { .. } => net.remove_node(a),
            EventKind::Deliver { payload, .. } => got.push(payload),
        }
    }
    assert_eq!(got, vec![1]);
    assert!(!net.is_alive(a));
    assert_eq!(net.alive_count(), 1);
    assert_eq!(net.send(a, b, 10, 3), SendOutcome::NoSuchNode);
}

#[test]
fn timers_of_departed_nodes_never_fire_and_order_is_stable() {
    let mut net: Net<u8> = Net::new(1);
    let a = net.add_node(home(1));
    let b = net.add_node(home(1));
    net.schedule(Time::from_millis(10), Some(a), 1);
    net.schedule(Time::from_millis(10), Some(b), 2);
    net.schedule(Time::from_millis(10), None, 3);
    net.remove_node(a);
    let fired: Vec<u8> = std::iter::from_fn(|| net.next_event())
        .map(|e| match e.kind {
            EventKind::Timer { payload, .. } => payload,
            EventKind::Deliver { payload, .. } => payload,
        })
        .collect();
    assert_eq!(fired, vec![2, 3]);
}

#[test]
fn loss_is_seeded() {
    fn run(seed: u64) -> Vec<u32> {
        let mut net: Net<u32> = Net::new(seed);
        let a = net.add_node(home(100).with_loss(0.3));
        let b = net.add_node(home(100));
        for i in 0..200 {
            net.send(a, b, 100, i);
        }
        std::iter::from_fn(|| net.next_event())
            .filter_map(|e| match e.kind {
                EventKind::Deliver { payload, .. } => Some(payload),
                _ => None,
            })
            .collect()
    }
    let x = run(5);
    assert_eq!(x, run(5));
    assert_ne!(x, run(6));
    assert!(
        x.len() > 100 && x.len() < 180,
        "about 30% lost, got {}",
        x.len()
    );
}

#[test]
fn next_event_until_stops_the_clock_at_the_horizon() {
    let mut net: Net<u8> = Net::new(1);
    net.schedule(Time::from_secs(2), None, 1);
    assert!(net.next_event_until(Time::from_secs(1)).is_none());
    assert_eq!(net.now(), Time::from_secs(1));
    assert!(net.next_event_until(Time::from_secs(3)).is_some());
}

#[test]
fn churn_schedule_balances_leaves_and_joins() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let s = ChurnSchedule::generate(&mut rng, 50, 0.2, Time::from_secs(1), Time::from_secs(10));
    assert_eq!(s.leaves(), 10);
    assert_eq!(s.events.len(), 20);
    assert!(s.events.windows(2).all(|w| w[0].0 <= w[1].0));
    let mut leavers: Vec<usize> = s
        .events
        .iter()
        .filter_map(|(_, e)| {
            if let ChurnEvent::Leave(i) = e {
                Some(*i)
            } else {
                None
            }
        })
        .collect();
    leavers.sort();
    leavers.dedup();
    assert_eq!(leavers.len(), 10);
}

/// Deliveries (payload, time) of `msgs` messages of `bytes` from a lossy node, sent at once.
fn lossy_run(delivery: Delivery, bytes: u64, msgs: u32) -> (Vec<(u32, Time)>, NodeStats) {
    let mut net: Net<u32> = Net::new(9);
    let a = net.add_node(NodeConfig::unlimited(Duration::from_millis(10)).with_loss(0.05));
    let b = net.add_node(NodeConfig::unlimited(Duration::from_millis(10)));
    for i in 0..msgs {
        net.send_with(a, b, bytes, i, delivery);
    }
    let got = std::iter::from_fn(|| net.next_event())
        .filter_map(|e| match e.kind {
            EventKind::Deliver { payload, .. } => Some((payload, e.at)),
            _ => None,
        })
        .collect();
    (got, net.stats(a))
}

#[test]
fn reliable_delivery_resends_lost_packets_at_a_cost_in_time_and_bytes() {
    // 100 messages of 50 packets at 5% packet loss: nearly every message loses a packet.
    let (got, st) = lossy_run(Delivery::Reliable, 50 * PACKET_BYTES, 100);
    assert_eq!(got.len(), 100, "reliable: everything arrives");
    assert_eq!(st.msgs_lost, 0);
    // Expected resends: 5% of 5,000 packets (plus resends of resends).
    assert!(
        (150..=400).contains(&st.packets_resent),
        "{} packets resent",
        st.packets_resent
    );
    assert_eq!(st.bytes_resent, st.packets_resent * PACKET_BYTES);
    assert_eq!(st.bytes_sent, 100 * 50 * PACKET_BYTES + st.bytes_resent);
    // Unlimited links: a clean message arrives after the 20 ms latency; a repaired one after at least
    // one more RTT (40 ms) plus the fast-retransmit slack, or the RTO for a lost last packet.
    let clean = Time::from_millis(20);
    let late: Vec<_> = got.iter().filter(|(_, t)| *t > clean).collect();
    assert!(late.len() > 70, "{} of 100 repaired", late.len());
    let first_fix = clean + Duration::from_millis(40) + FAST_RETRANSMIT_SLACK;
    assert!(late.iter().all(|(_, t)| *t >= first_fix));
    assert!(
        late.iter().any(|(_, t)| *t >= clean + RTO_MIN),
        "some message waited for the retransmission timer"
    );
}

#[test]
fn a_lifetime_abandons_what_cannot_be_repaired_in_time() {
    // A lifetime shorter than one RTT: any loss abandons the message.
    let (got, st) = lossy_run(
        Delivery::Lifetime(Duration::from_millis(30)),
        50 * PACKET_BYTES,
        100,
    );
    assert_eq!(got.len() as u64 + st.msgs_lost, 100);
    assert!(st.msgs_lost > 70, "{} abandoned", st.msgs_lost);
    assert!(got.iter().all(|(_, t)| *t == Time::from_millis(20)));
    // A lifetime of a few RTOs repairs (almost) everything.
    let (got, st) = lossy_run(
        Delivery::Lifetime(Duration::from_secs(2)),
        50 * PACKET_BYTES,
        100,
    );
    assert_eq!(got.len(), 100);
    assert_eq!(st.msgs_lost, 0);
}

#[test]
fn a_lost_single_packet_message_waits_for_the_timer() {
    let (got, st) = lossy_run(Delivery::Reliable, 100, 400);
    assert_eq!(got.len(), 400);
    let late: Vec<_> = got
        .iter()
        .filter(|(_, t)| *t > Time::from_millis(20))
        .collect();
    assert!((8..=40).contains(&late.len()), "{} of 400 lost", late.len());
    assert!(st.packets_resent >= late.len() as u64);
    // A one-packet message has no later packet to reveal the gap: the RTO (floor 200 ms) decides.
    assert!(
        late.iter()
            .all(|(_, t)| *t >= Time::from_millis(20) + RTO_MIN)
    );
}
