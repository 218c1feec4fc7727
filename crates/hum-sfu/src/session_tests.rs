//! Session-layer tests: membership, permissions, fan-out, layer choice, speaker events.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hum_proto::signal::Permissions;
use hum_proto::units::Bitrate;
use hum_proto::{ChannelId, UserId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::packet::audio_level::AudioLevel;
use crate::packet::forwarder::InPacket;
use crate::packet::layer::{Layer, Quality};
use crate::packet::vp8;
use crate::session::*;

fn user(n: u8) -> UserId {
    UserId([n; 32])
}

fn open() -> Session {
    Session::new(
        SessionConfig::default(),
        |_room: RoomId, _who: ParticipantId| Permissions::ALL,
    )
}

fn events(s: &mut Session) -> Vec<SessionEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn audio(seq: u64, at: Instant) -> InPacket {
    InPacket {
        layer: Layer::LOW,
        seq,
        timestamp: seq as u32 * 960,
        keyframe_start: false,
        arrival: at,
    }
}

#[test]
fn join_publish_leave_keep_the_invariants() {
    let t0 = Instant::now();
    let room = ChannelId(7);
    let mut s = open();
    s.join(room, user(1), t0).expect("join");
    let a = s
        .publish(user(1), TrackKind::Audio, vec![], t0)
        .expect("publish");
    s.join(room, user(2), t0).expect("join");
    assert_eq!(
        s.join(room, user(2), t0),
        Err(SessionError::AlreadyInRoom(room))
    );
    s.join(room, user(3), t0).expect("join");
    let b = s
        .publish(user(2), TrackKind::Audio, vec![], t0)
        .expect("publish");
    s.check_invariants().expect("invariants");
    assert_eq!(s.publication(a).map(|p| p.subscriptions().len()), Some(2));
    assert_eq!(
        events(&mut s),
        vec![
            SessionEvent::ParticipantJoined { room, who: user(1) },
            SessionEvent::TrackPublished {
                room,
                track: a,
                owner: user(1),
                kind: TrackKind::Audio
            },
            SessionEvent::ParticipantJoined { room, who: user(2) },
            SessionEvent::ParticipantJoined { room, who: user(3) },
            SessionEvent::TrackPublished {
                room,
                track: b,
                owner: user(2),
                kind: TrackKind::Audio
            },
        ]
    );
    s.leave(user(1)).expect("leave");
    s.check_invariants().expect("invariants");
    assert!(s.publication(a).is_none());
    assert_eq!(s.publication(b).map(|p| p.subscriptions().len()), Some(1));
    assert_eq!(
        events(&mut s),
        vec![
            SessionEvent::TrackUnpublished {
                room,
                track: a,
                owner: user(1)
            },
            SessionEvent::ParticipantLeft { room, who: user(1) },
        ]
    );
    assert_eq!(s.leave(user(1)), Err(SessionError::NotInRoom));
}

#[test]
fn permissions_hook_decides_what_may_be_published() {
    let t0 = Instant::now();
    let mut s = Session::new(
        SessionConfig::default(),
        |_room: RoomId, who: ParticipantId| Permissions {
            speak: who != user(9),
            video: false,
            ..Permissions::ALL
        },
    );
    s.join(ChannelId(1), user(9), t0).expect("join");
    s.join(ChannelId(1), user(2), t0).expect("join");
    assert_eq!(
        s.publish(user(9), TrackKind::Audio, vec![], t0),
        Err(SessionError::NotPermitted(TrackKind::Audio))
    );
    assert_eq!(
        s.publish(user(2), TrackKind::Video, vec![], t0),
        Err(SessionError::NotPermitted(TrackKind::Video))
    );
    assert!(s.publish(user(2), TrackKind::Audio, vec![], t0).is_ok());
    assert_eq!(
        s.publish(user(3), TrackKind::Audio, vec![], t0),
        Err(SessionError::NotInRoom)
    );
}

/// An admin takes `speak` (then `video`) away from a member already publishing: its track is
/// withdrawn (subscribers see it unpublished and get no more of its packets); other members'
/// tracks are untouched.
#[test]
fn revoked_permissions_withdraw_published_tracks() {
    use std::sync::{Arc, Mutex};
    let t0 = Instant::now();
    let room = ChannelId(4);
    let perms: Arc<Mutex<BTreeMap<UserId, Permissions>>> = Arc::default();
    let hook = perms.clone();
    let mut s = Session::new(
        SessionConfig::default(),
        move |_room: RoomId, who: ParticipantId| {
            hook.lock()
                .expect("lock")
                .get(&who)
                .copied()
                .unwrap_or(Permissions::ALL)
        },
    );
    for n in 1..=3 {
        s.join(room, user(n), t0).expect("join");
    }
    let a1 = s
        .publish(user(1), TrackKind::Audio, vec![], t0)
        .expect("a1");
    let v1 = s
        .publish(user(1), TrackKind::Video, vec![Layer(0)], t0)
        .expect("v1");
    let a2 = s
        .publish(user(2), TrackKind::Audio, vec![], t0)
        .expect("a2");
    let _ = events(&mut s);
    let forwarded = |s: &mut Session, t: TrackId| {
        let mut n = 0;
        let r = s.on_packet(t, &audio(50, t0), 80, None, |_, _| n += 1);
        r.map(|_| n)
    };
    assert_eq!(forwarded(&mut s, a1), Ok(2));
    // Nothing changed: nothing withdrawn.
    assert_eq!(s.enforce_permissions(user(1)), Ok(vec![]));
    perms.lock().expect("lock").insert(
        user(1),
        Permissions {
            speak: false,
            ..Permissions::ALL
        },
    );
    assert_eq!(s.enforce_permissions(user(1)), Ok(vec![a1]));
    assert_eq!(
        events(&mut s),
        vec![SessionEvent::TrackUnpublished {
            room,
            track: a1,
            owner: user(1)
        }]
    );
    assert_eq!(forwarded(&mut s, a1), Err(SessionError::NoSuchTrack));
    assert_eq!(forwarded(&mut s, a2), Ok(2), "others are untouched");
    assert!(s.publication(v1).is_some(), "video is still allowed");
    perms.lock().expect("lock").insert(
        user(1),
        Permissions {
            speak: false,
            video: false,
            ..Permissions::ALL
        },
    );
    assert_eq!(s.enforce_permissions(user(1)), Ok(vec![v1]));
    assert!(s.publication(v1).is_none());
    assert_eq!(
        s.publish(user(1), TrackKind::Audio, vec![], t0),
        Err(SessionError::NotPermitted(TrackKind::Audio))
    );
    s.check_invariants().expect("invariants");
    assert_eq!(s.enforce_permissions(user(9)), Err(SessionError::NotInRoom));
}

#[test]
fn audio_reaches_every_other_participant_once_and_in_order() {
    let t0 = Instant::now();
    let room = ChannelId(3);
    let mut s = open();
    let mut tracks = vec![];
    for n in 1..=5 {
        s.join(room, user(n), t0).expect("join");
        tracks.push(
            s.publish(user(n), TrackKind::Audio, vec![], t0)
                .expect("publish"),
        );
    }
    let mut got: BTreeMap<(UserId, usize), Vec<u64>> = BTreeMap::new();
    for i in 0..50u64 {
        let at = t0 + Duration::from_millis(20 * i);
        for (k, &t) in tracks.iter().enumerate() {
            s.on_packet(
                t,
                &audio(1000 + i, at),
                80,
                Some(AudioLevel::from_neg_dbov(40)),
                |to, out| {
                    got.entry((to, k)).or_default().push(out.seq);
                },
            )
            .expect("known track");
        }
    }
    assert_eq!(got.len(), 5 * 4, "each of 5 sources to each of 4 others");
    for ((to, k), seqs) in &got {
        assert_ne!(*to, user(*k as u8 + 1), "never back to the owner");
        assert_eq!(seqs.len(), 50);
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    }
    assert_eq!(
        s.on_packet(TrackId(999), &audio(1, t0), 10, None, |_, _| {}),
        Err(SessionError::NoSuchTrack)
    );
}

/// A publisher sends three simulcast layers; subscribers get layers by what they show and by
/// their bandwidth; switching waits for keyframes, which the session asks for (rate-limited).
#[test]
fn simulcast_layers_follow_quality_and_bandwidth() {
    let t0 = Instant::now();
    let room = ChannelId(4);
    let mut s = open();
    for n in 1..=4 {
        s.join(room, user(n), t0).expect("join");
    }
    let v = s
        .publish(
            user(1),
            TrackKind::Video,
            vec![Layer(0), Layer(1), Layer(2)],
            t0,
        )
        .expect("publish");
    // user 2: spotlight, plenty of bandwidth; user 3: spotlight behind 300 kbit/s; user 4: thumbnail.
    s.set_bandwidth(user(2), Bitrate::from_mbps(10), t0)
        .expect("bw");
    s.set_bandwidth(user(3), Bitrate::from_kbps(300), t0)
        .expect("bw");
    s.set_quality(user(4), v, Quality::Low, t0).expect("q");
    let layer_bytes = [200usize, 700, 2000]; // per frame, ~30 fps: 48/168/480 kbit/s
    let mut seen: BTreeMap<UserId, BTreeMap<Layer, u32>> = BTreeMap::new();
    let mut keyframe_requests = 0;
    let mut asked: std::collections::BTreeSet<Layer> = Default::default();
    for frame in 0..150u64 {
        let at = t0 + Duration::from_millis(frame * 33);
        for l in 0..3u8 {
            // Keyframes every 100 frames, and on the next frame when the SFU asks (as encoders do).
            let key = frame % 100 == u64::from(l) * 7 || asked.remove(&Layer(l));
            let payload =
                vp8::synthetic_payload(frame as u16, true, key, layer_bytes[usize::from(l)]);
            let d = vp8::parse(&payload).expect("valid");
            let p = InPacket {
                layer: Layer(l),
                seq: 5000 * u64::from(l) + frame,
                timestamp: frame as u32 * 3000,
                keyframe_start: d.keyframe,
                arrival: at,
            };
            s.on_packet(v, &p, payload.len(), None, |to, _| {
                *seen.entry(to).or_default().entry(Layer(l)).or_default() += 1;
            })
            .expect("track");
        }
        s.tick(at);
        for e in events(&mut s) {
            if let SessionEvent::KeyframeRequest { track, layer } = e {
                assert_eq!(track, v);
                asked.insert(layer);
                keyframe_requests += 1;
            }
        }
    }
    let top = |u: u8| {
        seen.get(&user(u))
            .and_then(|m| m.iter().max_by_key(|(_, n)| **n).map(|(l, _)| *l))
    };
    assert_eq!(top(2), Some(Layer(2)), "{seen:?}");
    // Nominal rates first (only layer 0 fits 300 kbit/s), then the measured 168 kbit/s of
    // layer 1 fits and 480 kbit/s of layer 2 does not: up to it once that room has lasted
    // UP_AFTER (from the first measurement at ~1 s), i.e. for the last ~1 s of the 5.
    let l1 = seen
        .get(&user(3))
        .and_then(|m| m.get(&Layer(1)))
        .copied()
        .unwrap_or(0);
    assert!(
        (10..=40).contains(&l1),
        "300 kbit/s fits the middle layer, after UP_AFTER: {seen:?}"
    );
    assert_eq!(
        seen.get(&user(3)).and_then(|m| m.get(&Layer(2))),
        None,
        "{seen:?}"
    );
    assert_eq!(top(4), Some(Layer(0)), "{seen:?}");
    // A subscriber whose layer comes alive takes that layer's first keyframe (no request);
    // user 2 waits for the top layer's (one request), user 3 switches up once (one more).
    assert!(
        (2..=6).contains(&keyframe_requests),
        "one per layer start at most + one switch: {keyframe_requests}"
    );
    // Nobody subscribes: pausing everyone unwants all layers, after the grace.
    let t6 = t0 + Duration::from_secs(6);
    for n in 2..=4 {
        s.set_quality(user(n), v, Quality::Paused, t6).expect("q");
    }
    events(&mut s);
    s.tick(t6);
    assert!(
        !events(&mut s)
            .iter()
            .any(|e| matches!(e, SessionEvent::LayerWanted { .. })),
        "nothing unwanted before the grace"
    );
    s.tick(t6 + UNWANT_GRACE);
    let unwanted: Vec<Layer> = events(&mut s)
        .into_iter()
        .filter_map(|e| match e {
            SessionEvent::LayerWanted {
                layer,
                wanted: false,
                ..
            } => Some(layer),
            _ => None,
        })
        .collect();
    assert_eq!(unwanted, vec![Layer(0), Layer(1), Layer(2)]);
}

/// The publisher encodes only what the session says is wanted (as the engine does with
/// `LayerWanted`): two thumbnails leave the middle and top layers unwanted after the grace,
/// and nothing else is said; when one subscriber asks for the spotlight, the top layer is
/// wanted again at the next tick (not live, so until then it still gets the low layer), and
/// the resumed layer's first packet, a keyframe, is already its switch.
#[test]
fn layers_nobody_takes_are_unwanted_and_one_taken_again_resumes_at_its_keyframe() {
    let t0 = Instant::now();
    let room = ChannelId(6);
    let mut s = open();
    for n in 1..=3 {
        s.join(room, user(n), t0).expect("join");
        s.set_bandwidth(user(n), Bitrate::from_mbps(10), t0)
            .expect("bw");
    }
    let v = s
        .publish(
            user(1),
            TrackKind::Video,
            vec![Layer(0), Layer(1), Layer(2)],
            t0,
        )
        .expect("publish");
    for n in 2..=3 {
        s.set_quality(user(n), v, Quality::Low, t0).expect("q");
    }
    // The publisher's model: runs every layer at first; a resumed layer starts on a keyframe.
    let mut running = [true; 3];
    let mut key = [true; 3];
    let mut said: Vec<(Duration, Layer, bool)> = vec![];
    // (frame, layer) forwarded to user 2, and the first frame of each layer sent after a pause.
    let mut to_2: Vec<(u64, Layer)> = vec![];
    let mut resumed_at: Option<u64> = None;
    let spotlight = 150; // frame 150 = 5 s
    for frame in 0..300u64 {
        let at = t0 + Duration::from_millis(frame * 33);
        if frame == spotlight {
            s.set_quality(user(2), v, Quality::High, at).expect("q");
        }
        for l in 0..3u8 {
            let i = usize::from(l);
            if !running[i] {
                continue;
            }
            if l == 2 && frame > spotlight && resumed_at.is_none() {
                resumed_at = Some(frame);
            }
            let payload = vp8::synthetic_payload(frame as u16, true, key[i], 300 * (i + 1));
            key[i] = false;
            let d = vp8::parse(&payload).expect("valid");
            let p = InPacket {
                layer: Layer(l),
                seq: 10_000 * u64::from(l) + frame,
                timestamp: frame as u32 * 3000,
                keyframe_start: d.keyframe,
                arrival: at,
            };
            s.on_packet(v, &p, payload.len(), None, |to, _| {
                if to == user(2) {
                    to_2.push((frame, Layer(l)));
                }
            })
            .expect("track");
        }
        s.tick(at);
        for e in events(&mut s) {
            match e {
                SessionEvent::KeyframeRequest { layer, .. } => key[usize::from(layer.0)] = true,
                SessionEvent::LayerWanted { layer, wanted, .. } => {
                    said.push((at - t0, layer, wanted));
                    let i = usize::from(layer.0);
                    if wanted && !running[i] {
                        key[i] = true;
                    }
                    running[i] = wanted;
                }
                _ => {}
            }
        }
        s.check_invariants().expect("invariants");
    }
    let layers: Vec<(Layer, bool)> = said.iter().map(|(_, l, w)| (*l, *w)).collect();
    assert_eq!(
        layers,
        vec![(Layer(1), false), (Layer(2), false), (Layer(2), true)],
        "{said:?}"
    );
    assert!(
        said[..2].iter().all(|(t, _, _)| *t >= UNWANT_GRACE),
        "unwanted only after the grace: {said:?}"
    );
    let spot = Duration::from_millis(spotlight * 33);
    assert!(
        said[2].0 == spot,
        "wanted again at the tick of the ask: {said:?}"
    );
    // User 2: only the low layer before the spotlight; the top layer from its first packet
    // after the resume on, never low again.
    let resumed = resumed_at.expect("the top layer resumed");
    let first_top = to_2
        .iter()
        .position(|(_, l)| *l == Layer(2))
        .expect("user 2 never got the top layer");
    assert_eq!(
        to_2[first_top].0, resumed,
        "the switch waited for another keyframe"
    );
    assert!(to_2[..first_top].iter().all(|(_, l)| *l == Layer(0)));
    assert!(to_2[first_top..].iter().all(|(_, l)| *l == Layer(2)));
    assert!(to_2.len() >= 290, "user 2 missed frames: {}", to_2.len());
}

#[test]
fn speaker_changes_are_announced() {
    let t0 = Instant::now();
    let room = ChannelId(5);
    let mut s = open();
    let mut tracks = vec![];
    for n in 1..=3 {
        s.join(room, user(n), t0).expect("join");
        tracks.push(
            s.publish(user(n), TrackKind::Audio, vec![], t0)
                .expect("publish"),
        );
    }
    events(&mut s);
    let mut speakers = vec![];
    for i in 0..500u64 {
        let at = t0 + Duration::from_millis(20 * i);
        // user 1 talks for 5 s, then user 3.
        let talker = if i < 250 { 0 } else { 2 };
        for (k, &t) in tracks.iter().enumerate() {
            // Syllables for the talker (a constant level would be its noise floor).
            let level = if k == talker && i % 8 < 6 {
                25
            } else if k == talker {
                70
            } else {
                90
            };
            s.on_packet(
                t,
                &audio(i, at),
                80,
                Some(AudioLevel::from_neg_dbov(level)),
                |_, _| {},
            )
            .expect("track");
        }
        s.tick(at);
        for e in events(&mut s) {
            if let SessionEvent::SpeakerChanged { who, .. } = e {
                speakers.push(who);
            }
        }
    }
    assert_eq!(speakers, vec![user(1), user(3)]);
    assert_eq!(
        s.room(room).and_then(|r| r.dominant_speaker()),
        Some(user(3))
    );
}

/// Random joins, leaves, publishes and unpublishes: the invariants hold after every step.
#[test]
fn random_operations_keep_the_invariants() {
    for seed in 0..10 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let t0 = Instant::now();
        let mut s = open();
        let mut tracks: Vec<TrackId> = vec![];
        for step in 0..400 {
            let u = user(rng.gen_range(1..12));
            let room = ChannelId(rng.gen_range(1..3));
            match rng.gen_range(0..5) {
                0 | 1 => {
                    let _ = s.join(room, u, t0);
                }
                2 => {
                    let _ = s.leave(u);
                }
                3 => {
                    let kind = if rng.gen_bool(0.5) {
                        TrackKind::Audio
                    } else {
                        TrackKind::Video
                    };
                    if let Ok(t) = s.publish(u, kind, vec![], t0) {
                        tracks.push(t);
                    }
                }
                _ => {
                    if !tracks.is_empty() {
                        let t = tracks.swap_remove(rng.gen_range(0..tracks.len()));
                        let _ = s.unpublish(t);
                    }
                }
            }
            if let Err(e) = s.check_invariants() {
                panic!("seed {seed} step {step}: {e}");
            }
        }
    }
}

/// 100 subscribers each flood PLIs for a simulcast video for 2 s: the publisher is asked at most
/// once per layer per 500 ms, and the flood is counted.
#[test]
fn a_pli_flood_reaches_the_publisher_rate_limited() {
    let t0 = Instant::now();
    let room = ChannelId(6);
    let mut s = open();
    s.join(room, user(1), t0).expect("join");
    let v = s
        .publish(user(1), TrackKind::Video, vec![Layer(0), Layer(1)], t0)
        .expect("publish");
    for n in 2..102 {
        s.join(room, user(n), t0).expect("join");
    }
    // Both layers flowing, keyframes so everyone is on a layer.
    for l in 0..2u8 {
        let p = InPacket {
            layer: Layer(l),
            seq: 1,
            timestamp: 0,
            keyframe_start: true,
            arrival: t0,
        };
        s.on_packet(v, &p, 100, None, |_, _| {}).expect("track");
    }
    events(&mut s);
    let mut upstream = 0;
    for ms in (0..2000u64).step_by(10) {
        let at = t0 + Duration::from_millis(ms);
        for n in 2..102 {
            s.request_keyframe(v, user(n), at).expect("track");
        }
        upstream += events(&mut s)
            .iter()
            .filter(|e| matches!(e, SessionEvent::KeyframeRequest { .. }))
            .count();
    }
    assert!(
        upstream <= 2 * 4,
        "at most 2 layers x 4 intervals: {upstream}"
    );
    let (sent, suppressed) = s.keyframe_request_counts();
    assert_eq!(sent as usize, upstream);
    assert!(suppressed >= 100 * 200 - 8, "{suppressed}");
}

/// Feeds `frames` of a three-layer publication (only the layers in `live`), answering the
/// session's keyframe requests on the next frame as an encoder does; returns per subscriber
/// the layers it got, in order of arrival (one entry per frame).
fn feed_simulcast(
    s: &mut Session,
    v: TrackId,
    frames: std::ops::Range<u64>,
    live: &[u8],
    t0: Instant,
) -> BTreeMap<UserId, Vec<Layer>> {
    let mut got: BTreeMap<UserId, Vec<Layer>> = BTreeMap::new();
    let mut asked: std::collections::BTreeSet<Layer> = Default::default();
    for frame in frames {
        let at = t0 + Duration::from_millis(frame * 33);
        for &l in live {
            // No periodic keyframes: only the first frame and those the SFU asks for.
            let key = frame == 0 || asked.remove(&Layer(l));
            let payload =
                vp8::synthetic_payload(frame as u16, true, key, 100 + 300 * usize::from(l));
            let d = vp8::parse(&payload).expect("valid");
            let p = InPacket {
                layer: Layer(l),
                seq: 5000 * u64::from(l) + frame,
                timestamp: frame as u32 * 3000,
                keyframe_start: d.keyframe,
                arrival: at,
            };
            s.on_packet(v, &p, payload.len(), None, |to, _| {
                got.entry(to).or_default().push(Layer(l));
            })
            .expect("track");
        }
        s.tick(at);
        for e in events(s) {
            if let SessionEvent::KeyframeRequest { track, layer } = e {
                assert_eq!(track, v);
                asked.insert(layer);
            }
        }
    }
    got
}

/// `sfu_quality` by owner: one subscriber asks high, one low, one medium; then the low one
/// asks high and gets it from the next keyframe of the top layer, which the session asks for.
#[test]
fn quality_asked_per_owner_picks_the_layer_and_a_change_waits_for_a_keyframe() {
    let t0 = Instant::now();
    let room = ChannelId(7);
    let mut s = open();
    for n in 1..=4 {
        s.join(room, user(n), t0).expect("join");
    }
    let v = s
        .publish(
            user(1),
            TrackKind::Video,
            vec![Layer(0), Layer(1), Layer(2)],
            t0,
        )
        .expect("publish");
    for n in 2..=4 {
        s.set_bandwidth(user(n), Bitrate::from_mbps(10), t0)
            .expect("bw");
    }
    assert_eq!(
        s.set_quality_of(user(2), user(1), Some(Quality::High), t0),
        Ok(1)
    );
    assert_eq!(
        s.set_quality_of(user(3), user(1), Some(Quality::Low), t0),
        Ok(1)
    );
    assert_eq!(
        s.set_quality_of(user(4), user(1), Some(Quality::Medium), t0),
        Ok(1)
    );
    // Asking about someone without video is fine (nothing to apply yet) and is kept for the
    // camera they publish later.
    assert_eq!(
        s.set_quality_of(user(2), user(3), Some(Quality::Low), t0),
        Ok(0)
    );
    let later = s
        .publish(
            user(3),
            TrackKind::Video,
            vec![Layer(0), Layer(1), Layer(2)],
            t0,
        )
        .expect("publish");
    let asked: Vec<Option<Quality>> = s
        .publication(later)
        .map(|p| {
            p.subscriptions()
                .iter()
                .filter(|x| x.subscriber == user(2))
                .map(|x| x.asked)
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(asked, vec![Some(Quality::Low)]);
    s.unpublish(later).expect("unpublish");
    let got = feed_simulcast(&mut s, v, 0..60, &[0, 1, 2], t0);
    let only = |u: u8| -> Vec<Layer> {
        let mut l = got.get(&user(u)).cloned().unwrap_or_default();
        l.dedup();
        l
    };
    assert_eq!(only(2), vec![Layer(2)]);
    assert_eq!(only(3), vec![Layer(0)]);
    assert_eq!(only(4), vec![Layer(1)]);
    assert_eq!(
        got.get(&user(1)),
        None,
        "the owner never gets its own video"
    );

    // user 3 now asks high: it keeps layer 0 until layer 2's keyframe, then only layer 2.
    let t1 = t0 + Duration::from_millis(60 * 33);
    s.set_quality_of(user(3), user(1), Some(Quality::High), t1)
        .expect("q");
    let got = feed_simulcast(&mut s, v, 60..120, &[0, 1, 2], t0);
    let mut l3 = got.get(&user(3)).cloned().unwrap_or_default();
    l3.dedup();
    assert_eq!(l3, vec![Layer(0), Layer(2)], "one switch, up: {l3:?}");
}

/// Automatic quality: the dominant speaker's video high, the others' low.
#[test]
fn automatic_quality_follows_the_speaker() {
    let owner = user(1);
    assert_eq!(Session::effective_quality(None, owner, None), Quality::High);
    assert_eq!(
        Session::effective_quality(None, owner, Some(owner)),
        Quality::High
    );
    assert_eq!(
        Session::effective_quality(None, owner, Some(user(2))),
        Quality::Low
    );
    assert_eq!(
        Session::effective_quality(Some(Quality::Medium), owner, Some(user(2))),
        Quality::Medium,
        "what the client asked wins"
    );
    assert_eq!(
        Session::effective_quality(Some(Quality::Paused), owner, Some(owner)),
        Quality::Paused
    );
}

/// The forwarded top layer stops at the publisher: subscribers fall back to the best live
/// layer at its next keyframe (asked for) and the stream goes on.
#[test]
fn a_layer_that_stops_falls_back_to_the_next_live_one() {
    let t0 = Instant::now();
    let room = ChannelId(8);
    let mut s = open();
    for n in 1..=2 {
        s.join(room, user(n), t0).expect("join");
    }
    let v = s
        .publish(
            user(1),
            TrackKind::Video,
            vec![Layer(0), Layer(1), Layer(2)],
            t0,
        )
        .expect("publish");
    s.set_bandwidth(user(2), Bitrate::from_mbps(10), t0)
        .expect("bw");
    let got = feed_simulcast(&mut s, v, 0..60, &[0, 1, 2], t0);
    assert_eq!(got.get(&user(2)).and_then(|l| l.last()), Some(&Layer(2)));
    // Layer 2 stops; after the staleness window the session retargets to layer 1.
    let got = feed_simulcast(&mut s, v, 60..240, &[0, 1], t0);
    let mut l = got.get(&user(2)).cloned().unwrap_or_default();
    l.dedup();
    assert_eq!(l, vec![Layer(1)], "{l:?}");
    assert!(
        got.get(&user(2)).map_or(0, |l| l.len()) > 60,
        "frames keep coming after the fallback"
    );
}

/// A screen share (one video layer) runs with keyframes only on request (as Hum's share
/// encoder does); a member joins mid-stream. The session asks the publisher for a keyframe for
/// the new subscription at its next tick (not waiting for the subscriber's PLI), forwards it
/// nothing before that keyframe and everything from it on, gap-free; the member who was there
/// from the first keyframe loses nothing. The joiner's own idle screen track (nothing sent) is
/// never asked for one.
#[test]
fn a_subscriber_joining_a_running_single_layer_video_starts_at_a_keyframe() {
    let t0 = Instant::now();
    let room = ChannelId(9);
    let mut s = open();
    s.join(room, user(1), t0).expect("join");
    s.join(room, user(2), t0).expect("join");
    let screen = s
        .publish(user(1), TrackKind::Video, vec![], t0)
        .expect("publish");
    let mut got: BTreeMap<UserId, Vec<(u64, bool)>> = BTreeMap::new();
    let mut asked = 0;
    let mut key_next = true;
    let mut joined_at = None;
    for frame in 0..120u64 {
        let at = t0 + Duration::from_millis(33 * frame);
        if frame == 40 {
            s.join(room, user(3), at).expect("join");
            // Its own screen track, idle (no share): never asked for a keyframe.
            s.publish(user(3), TrackKind::Video, vec![], at)
                .expect("publish");
            joined_at = Some(frame);
        }
        s.tick(at);
        for e in events(&mut s) {
            if let SessionEvent::KeyframeRequest { track, layer } = e {
                assert_eq!((track, layer), (screen, Layer::LOW));
                asked += 1;
                key_next = true;
            }
        }
        let key = std::mem::take(&mut key_next);
        for k in 0..3u64 {
            let p = InPacket {
                layer: Layer::LOW,
                seq: 500 + frame * 3 + k,
                timestamp: frame as u32 * 3000,
                keyframe_start: key && k == 0,
                arrival: at,
            };
            s.on_packet(screen, &p, 1000, None, |to, out| {
                got.entry(to).or_default().push((out.seq, p.keyframe_start));
            })
            .expect("known track");
        }
    }
    assert!(joined_at.is_some());
    // One request, for user 3's join: user 2 subscribed before anything was sent (a new
    // publication starts with a keyframe; an idle one is not asked), and user 3's idle screen
    // is not asked either.
    assert_eq!(asked, 1, "keyframe requests");
    for who in [user(2), user(3)] {
        let pkts = &got[&who];
        assert!(
            pkts[0].1,
            "{who:?}: the first packet forwarded begins a keyframe"
        );
        assert!(
            pkts.windows(2).all(|w| w[1].0 == w[0].0.wrapping_add(1)),
            "{who:?}: gap-free"
        );
    }
    assert_eq!(
        got[&user(2)].len(),
        120 * 3,
        "the member there from the start"
    );
    // User 3 joined at frame 40, and the tick right after asked for a keyframe, which the
    // publisher sends with that frame: user 3 gets frames 40.. and nothing before.
    assert_eq!(got[&user(3)].len(), (120 - 40) * 3, "the member who joined");
    assert!(!got.contains_key(&user(1)), "never back to the owner");
}

/// A subscriber's estimator is asked to probe only while its estimate holds a video
/// subscription below the layer asked for, towards what its subscriptions would take at the
/// quality each asks for (a subscriber held on a lower layer sends less than its estimate, and
/// an unused estimate does not grow); once nothing is held the ask is withdrawn (ZERO), so a
/// subscriber that has what it asks for never gets probe padding.
#[test]
fn a_subscriber_held_below_its_ask_probes_towards_it_and_stops_when_it_has_it() {
    let t0 = Instant::now();
    let room = ChannelId(5);
    let mut s = open();
    for n in 1..=3 {
        s.join(room, user(n), t0).expect("join");
    }
    let wanted = |evs: &[SessionEvent], who: ParticipantId| {
        evs.iter()
            .filter_map(|e| match e {
                SessionEvent::BandwidthWanted { who: w, bitrate } if *w == who => Some(*bitrate),
                _ => None,
            })
            .next_back()
    };
    s.publish(user(1), TrackKind::Audio, vec![], t0)
        .expect("publish");
    let ev = events(&mut s);
    assert_eq!(wanted(&ev, user(2)), None, "audio alone needs no probing");
    let v = s
        .publish(
            user(1),
            TrackKind::Video,
            vec![Layer(0), Layer(1), Layer(2)],
            t0,
        )
        .expect("publish");
    // 600 kbit/s holds user 2 on the medium layer: it probes towards the high one (1.5 Mbit/s
    // nominal) plus the audio (50 kbit/s). User 3 with plenty has what it asks for: no ask.
    // User 1 receives only audio: nothing to probe for.
    s.set_bandwidth(user(2), Bitrate::from_kbps(600), t0)
        .expect("bw");
    s.set_bandwidth(user(3), Bitrate::from_mbps(5), t0)
        .expect("bw");
    s.set_bandwidth(user(1), Bitrate::from_kbps(600), t0)
        .expect("bw");
    let ev = events(&mut s);
    assert_eq!(wanted(&ev, user(2)), Some(Bitrate::from_kbps(1_550)));
    assert_eq!(wanted(&ev, user(3)), None, "not held: no probing");
    assert_eq!(wanted(&ev, user(1)), None, "nobody else publishes video");
    // A thumbnail asks for the low layer, which 600 kbit/s carries: the ask is withdrawn.
    s.set_quality(user(2), v, Quality::Low, t0).expect("q");
    assert_eq!(wanted(&events(&mut s), user(2)), Some(Bitrate::ZERO));
    // Asking high again with room for it: still nothing to probe for.
    s.set_bandwidth(user(2), Bitrate::from_mbps(5), t0)
        .expect("bw");
    s.set_quality(user(2), v, Quality::High, t0).expect("q");
    assert_eq!(wanted(&events(&mut s), user(2)), None);
    // The estimate falls below the high layer: held again, probing again.
    s.set_bandwidth(user(2), Bitrate::from_kbps(700), t0)
        .expect("bw");
    assert_eq!(
        wanted(&events(&mut s), user(2)),
        Some(Bitrate::from_kbps(1_550))
    );
    // A small move of the estimate changes nothing asked for: no event.
    s.set_bandwidth(user(2), Bitrate::from_kbps(750), t0)
        .expect("bw");
    assert_eq!(wanted(&events(&mut s), user(2)), None);
    // Paused: nothing held, the ask is withdrawn.
    s.set_quality(user(2), v, Quality::Paused, t0).expect("q");
    assert_eq!(wanted(&events(&mut s), user(2)), Some(Bitrate::ZERO));
}

/// Packets each (subscriber, track) got.
type Delivered = BTreeMap<(UserId, TrackId), u64>;
/// A [`SessionEvent::VideoPaused`] word: (subscriber, track, paused, the frame it came at).
type PauseWord = (UserId, TrackId, bool, u64);

/// Feeds single-layer (layer 0) video on `tracks` for frames `frames` (30 a second, `body`
/// bytes each, keyframes when the session asks), ticking the session; returns the packets
/// each (subscriber, track) got and the [`SessionEvent::VideoPaused`] words seen, each with
/// the frame it came at.
fn feed_cameras(
    s: &mut Session,
    tracks: &[TrackId],
    frames: std::ops::Range<u64>,
    body: usize,
    t0: Instant,
) -> (Delivered, Vec<PauseWord>) {
    let mut got: Delivered = BTreeMap::new();
    let mut paused = Vec::new();
    let mut asked: std::collections::BTreeSet<TrackId> = Default::default();
    for frame in frames {
        let at = t0 + Duration::from_millis(frame * 33);
        for &v in tracks {
            let key = frame == 0 || asked.remove(&v);
            let payload = vp8::synthetic_payload(frame as u16, true, key, body);
            let p = InPacket {
                layer: Layer(0),
                seq: frame,
                timestamp: frame as u32 * 3000,
                keyframe_start: key,
                arrival: at,
            };
            s.on_packet(v, &p, payload.len(), None, |to, _| {
                *got.entry((to, v)).or_default() += 1;
            })
            .expect("track");
        }
        s.tick(at);
        for e in events(s) {
            match e {
                SessionEvent::KeyframeRequest { track, .. } => {
                    asked.insert(track);
                }
                SessionEvent::VideoPaused {
                    who,
                    track,
                    owner,
                    paused: p,
                } => {
                    assert_eq!(s.publication(track).map(|x| x.owner), Some(owner));
                    paused.push((who, track, p, frame))
                }
                _ => {}
            }
        }
    }
    (got, paused)
}

/// A subscriber whose estimate does not carry every camera's lowest layer: the later ones in
/// priority order are paused for it after [`PAUSE_AFTER`] and it is told; the first (the one
/// it asked high, the speaker) never is; a paused one resumes only with [`RESUME_HEADROOM`]
/// held for [`RESUME_AFTER`]; other subscribers are not touched.
#[test]
fn videos_that_do_not_fit_are_paused_for_that_subscriber_and_resume_with_headroom() {
    let t0 = Instant::now();
    let room = ChannelId(9);
    let mut s = open();
    for n in 1..=5 {
        s.join(room, user(n), t0).expect("join");
    }
    // Three cameras at 30 frames/s of 400 + 13 bytes: ~99 kbit/s each, measured.
    let cams: Vec<TrackId> = (1..=3)
        .map(|n| {
            s.publish(user(n), TrackKind::Video, vec![Layer(0)], t0)
                .expect("publish")
        })
        .collect();
    for n in 1..=5 {
        s.set_bandwidth(user(n), Bitrate::from_mbps(10), t0)
            .expect("bw");
    }
    s.set_quality_of(user(4), user(1), Some(Quality::High), t0)
        .expect("q");
    for n in 2..=3 {
        s.set_quality_of(user(4), user(n), Some(Quality::Low), t0)
            .expect("q");
    }
    let frame = Duration::from_millis(33);
    let at = |f: u64| t0 + frame * f as u32;
    // The session decides when it allocates: on each estimate and each rate window (~1 s).
    let after = |word: u64, set: u64, wait: Duration| {
        let waited = frame * (word - set) as u32;
        assert!(
            waited >= wait && waited <= wait + Duration::from_millis(1_500),
            "{waited:?} after the estimate moved, not {wait:?}"
        );
    };
    // Rates measured (1 s) with plenty: all three reach user 4.
    let (got, paused) = feed_cameras(&mut s, &cams, 0..45, 400, t0);
    for &v in &cams {
        assert!(got.get(&(user(4), v)).copied().unwrap_or(0) > 10, "{got:?}");
    }
    assert!(paused.is_empty(), "{paused:?}");

    // 250 kbit/s: two fit (~198 kbit/s), the third does not: paused after PAUSE_AFTER.
    s.set_bandwidth(user(4), Bitrate::from_kbps(250), at(45))
        .expect("bw");
    let (got, paused) = feed_cameras(&mut s, &cams, 45..200, 400, t0);
    assert_eq!(paused.len(), 1, "{paused:?}");
    let (who, track, p, f) = paused[0];
    assert_eq!((who, track, p), (user(4), cams[2], true));
    after(f, 45, PAUSE_AFTER);
    assert!(
        got[&(user(4), cams[2])] >= (f - 45),
        "forwarded until paused"
    );
    let (got, paused) = feed_cameras(&mut s, &cams, 200..230, 400, t0);
    assert!(paused.is_empty(), "{paused:?}");
    assert_eq!(
        got.get(&(user(4), cams[2])),
        None,
        "paused: nothing forwarded"
    );
    assert_eq!(got.get(&(user(4), cams[0])), Some(&30));
    assert_eq!(got.get(&(user(4), cams[1])), Some(&30));
    assert_eq!(got.get(&(user(5), cams[2])), Some(&30), "others untouched");
    // It probes towards what it lacks.
    assert!(
        s.room(room)
            .and_then(|r| r.participants.get(&user(4)))
            .is_some_and(|p| p.wanted > Bitrate::ZERO),
        "a paused video is held: the estimate is asked to grow"
    );

    // 60 kbit/s is below even the first camera: it keeps it (a small picture of the one it
    // watches beats none); the second goes too.
    s.set_bandwidth(user(4), Bitrate::from_kbps(60), at(230))
        .expect("bw");
    let (got, paused) = feed_cameras(&mut s, &cams, 230..400, 400, t0);
    let words: Vec<_> = paused.iter().map(|w| (w.0, w.1, w.2)).collect();
    assert_eq!(words, vec![(user(4), cams[1], true)]);
    assert_eq!(got.get(&(user(4), cams[0])), Some(&170), "never paused");

    // 310 kbit/s: after the first (~99), 211 remain: the second resumes (needs ~124 with
    // headroom) after RESUME_AFTER; then 112 remain: enough for the third without headroom,
    // not with it.
    s.set_bandwidth(user(4), Bitrate::from_kbps(310), at(400))
        .expect("bw");
    let (_, paused) = feed_cameras(&mut s, &cams, 400..600, 400, t0);
    assert_eq!(paused.len(), 1, "{paused:?}");
    let (who, track, p, f) = paused[0];
    assert_eq!((who, track, p), (user(4), cams[1], false));
    after(f, 400, RESUME_AFTER);
    let (got, paused) = feed_cameras(&mut s, &cams, 600..630, 400, t0);
    assert!(paused.is_empty(), "{paused:?}");
    assert_eq!(got.get(&(user(4), cams[1])), Some(&30), "{got:?}");
    assert_eq!(
        got.get(&(user(4), cams[2])),
        None,
        "no headroom: stays paused"
    );
    // 340 kbit/s: 142 remain after two, the third resumes.
    s.set_bandwidth(user(4), Bitrate::from_kbps(340), at(630))
        .expect("bw");
    let (_, paused) = feed_cameras(&mut s, &cams, 630..800, 400, t0);
    let words: Vec<_> = paused.iter().map(|w| (w.0, w.1, w.2)).collect();
    assert_eq!(words, vec![(user(4), cams[2], false)]);
    let (got, _) = feed_cameras(&mut s, &cams, 800..830, 400, t0);
    assert_eq!(got.get(&(user(4), cams[2])), Some(&30), "{got:?}");

    // Paused again (60 kbit/s), then its owner leaves: user 4 hears it is not paused any
    // more, so a camera the owner turns on later does not start out shown as paused.
    s.set_bandwidth(user(4), Bitrate::from_kbps(60), at(830))
        .expect("bw");
    let (_, paused) = feed_cameras(&mut s, &cams, 830..1000, 400, t0);
    assert!(
        paused.iter().any(|w| (w.1, w.2) == (cams[2], true)),
        "{paused:?}"
    );
    events(&mut s);
    s.leave(user(3)).expect("leave");
    let resumed: Vec<_> = events(&mut s)
        .into_iter()
        .filter_map(|e| match e {
            SessionEvent::VideoPaused {
                who,
                track,
                owner,
                paused,
            } => Some((who, track, owner, paused)),
            _ => None,
        })
        .collect();
    assert_eq!(resumed, vec![(user(4), cams[2], user(3), false)]);
}
