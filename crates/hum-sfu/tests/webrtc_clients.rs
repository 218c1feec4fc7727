//! End to end in one process: webrtc-rs 0.21 clients (the stack the app uses) publish Opus
//! through the str0m SFU over loopback UDP; real ICE, DTLS and SRTP. Signalling goes through
//! memory in place of the relay. Each client's payloads start with its index, so a receiver
//! counts packets per source without decoding (the SFU never decodes either).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hum_proto::signal::Permissions;
use hum_proto::{ChannelId, UserId};
use hum_sfu::session::{ParticipantId, RoomId};
use hum_sfu::{SessionConfig, SfuEvent, SfuServer};
use rtc::media::Sample;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::Track;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
};
use webrtc::rtp_transceiver::RtpSender;

fn user(n: usize) -> UserId {
    let mut b = [0u8; 32];
    b[0] = 0xa0;
    b[1] = n as u8;
    UserId(b)
}

/// Packets received per source index.
type Counts = Arc<Mutex<BTreeMap<u8, u64>>>;
/// The packet numbers (bytes 1..5 of the payload) received per source index.
type Seen = Arc<Mutex<BTreeMap<u8, std::collections::BTreeSet<u32>>>>;

struct Handler {
    gathered: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
    counts: Counts,
    seen: Seen,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        self.gathered
            .store(state == RTCIceGatheringState::Complete, Ordering::SeqCst);
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.connected
            .store(state == RTCPeerConnectionState::Connected, Ordering::SeqCst);
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let (counts, seen) = (self.counts.clone(), self.seen.clone());
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                match ev {
                    TrackRemoteEvent::OnRtpPacket(pkt) => {
                        if let Some(&src) = pkt.payload.first() {
                            *counts.lock().expect("lock").entry(src).or_default() += 1;
                        }
                        if let (Some(&src), Some(n)) = (pkt.payload.first(), pkt.payload.get(1..5))
                        {
                            let n = u32::from_be_bytes([n[0], n[1], n[2], n[3]]);
                            seen.lock().expect("lock").entry(src).or_default().insert(n);
                        }
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

struct Client {
    index: u8,
    pc: Arc<dyn PeerConnection>,
    gathered: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
    counts: Counts,
    seen: Seen,
    track: Arc<TrackLocalStaticSample>,
    sender: Arc<dyn RtpSender>,
}

impl Client {
    async fn new(index: u8) -> Client {
        let mut media = MediaEngine::default();
        media.register_default_codecs().expect("codecs");
        let gathered = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicBool::new(false));
        let counts: Counts = Arc::default();
        let seen: Seen = Arc::default();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::default().build())
            .with_media_engine(media)
            .with_handler(Arc::new(Handler {
                gathered: gathered.clone(),
                connected: connected.clone(),
                counts: counts.clone(),
                seen: seen.clone(),
            }))
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .build()
            .await
            .expect("peer connection");
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let track = Arc::new(
            TrackLocalStaticSample::new(
                Instant::now(),
                MediaStreamTrack::new(
                    format!("s{index}"),
                    format!("a{index}"),
                    "voice".to_owned(),
                    RtpCodecKind::Audio,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(0x5000 + u32::from(index)),
                            ..Default::default()
                        },
                        codec: RTCRtpCodec {
                            mime_type: MIME_TYPE_OPUS.to_owned(),
                            clock_rate: 48_000,
                            channels: 2,
                            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                            rtcp_feedback: vec![],
                        },
                        ..Default::default()
                    }],
                ),
            )
            .expect("track"),
        );
        let sender = pc
            .add_track(track.clone() as Arc<dyn TrackLocal>)
            .await
            .expect("add track");
        Client {
            index,
            pc,
            gathered,
            connected,
            counts,
            seen,
            track,
            sender,
        }
    }

    async fn local_sdp(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.gathered.load(Ordering::SeqCst) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.pc
            .local_description()
            .await
            .expect("local description")
            .sdp
    }

    async fn offer(&self) -> String {
        let o = self.pc.create_offer(None).await.expect("offer");
        self.pc.set_local_description(o).await.expect("set local");
        self.local_sdp().await
    }

    async fn answer(&self, sdp: String) -> String {
        self.pc
            .set_remote_description(RTCSessionDescription::offer(sdp).expect("sdp"))
            .await
            .expect("set remote offer");
        let a = self.pc.create_answer(None).await.expect("answer");
        self.gathered.store(false, Ordering::SeqCst);
        self.pc.set_local_description(a).await.expect("set local");
        self.local_sdp().await
    }

    fn counts(&self) -> BTreeMap<u8, u64> {
        self.counts.lock().expect("lock").clone()
    }
}

/// Writes one 20 ms "Opus" frame per tick from every connected client: `[index, n, ...]`.
fn start_writers(clients: &[Arc<Client>]) -> Vec<tokio::task::JoinHandle<()>> {
    clients
        .iter()
        .map(|c| {
            let c = c.clone();
            tokio::spawn(async move {
                let mut target = None;
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                let mut n: u32 = 0;
                loop {
                    tick.tick().await;
                    if !c.connected.load(Ordering::SeqCst) {
                        continue;
                    }
                    if target.is_none() {
                        let pt =
                            c.sender.get_parameters().await.ok().and_then(|p| {
                                p.rtp_parameters.codecs.first().map(|x| x.payload_type)
                            });
                        let ssrc = c.track.ssrcs().await.first().copied();
                        target = pt.zip(ssrc);
                    }
                    let Some((pt, ssrc)) = target else { continue };
                    n += 1;
                    let mut data = vec![c.index; 60];
                    data[1..5].copy_from_slice(&n.to_be_bytes());
                    let sample = Sample {
                        data: data.into(),
                        duration: Duration::from_millis(20),
                        ..Sample::new(Instant::now())
                    };
                    let _ = c.track.sample_writer(ssrc, pt).write_sample(&sample).await;
                }
            })
        })
        .collect()
}

/// Answers the SFU's offers on behalf of the clients.
fn start_signalling(
    sfu: Arc<SfuServer>,
    mut events: tokio::sync::mpsc::UnboundedReceiver<SfuEvent>,
    clients: Arc<Mutex<BTreeMap<ParticipantId, Arc<Client>>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let SfuEvent::Offer { who, sdp } = ev {
                let c = clients.lock().expect("lock").get(&who).cloned();
                let Some(c) = c else { continue };
                let answer = c.answer(sdp).await;
                if let Err(e) = sfu.answer(who, answer).await {
                    panic!("answer from {who}: {e}");
                }
            }
        }
    })
}

/// `n` clients join one room; waits until each has `min_packets` from every other one.
async fn room_of(n: usize, min_packets: u64) -> (Arc<SfuServer>, Vec<Arc<Client>>) {
    let (sfu, events) = SfuServer::bind(
        "127.0.0.1:0".parse().expect("addr"),
        None,
        SessionConfig::default(),
        |_room: RoomId, _who: ParticipantId| Permissions::ALL,
    )
    .await
    .expect("bind");
    let sfu = Arc::new(sfu);
    let registry: Arc<Mutex<BTreeMap<ParticipantId, Arc<Client>>>> = Arc::default();
    let _signalling = start_signalling(sfu.clone(), events, registry.clone());
    let room = ChannelId(42);
    let mut clients = vec![];
    for i in 0..n {
        let c = Arc::new(Client::new(i as u8).await);
        registry.lock().expect("lock").insert(user(i), c.clone());
        let offer = c.offer().await;
        let answer = sfu.join(room, user(i), offer).await.expect("join");
        c.pc.set_remote_description(RTCSessionDescription::answer(answer).expect("sdp"))
            .await
            .expect("set answer");
        clients.push(c);
    }
    let writers = start_writers(&clients);
    let done = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let all = clients.iter().all(|c| {
                let got = c.counts();
                (0..n as u8)
                    .filter(|&s| s != c.index)
                    .all(|s| got.get(&s).copied().unwrap_or(0) >= min_packets)
            });
            if all {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    for w in writers {
        w.abort();
    }
    if done.is_err() {
        let table: Vec<_> = clients.iter().map(|c| (c.index, c.counts())).collect();
        let m = sfu.metrics().await.expect("metrics");
        panic!("not every client heard every other within 60 s: {table:?}\n{m:?}");
    }
    (sfu, clients)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_webrtc_rs_clients_hear_each_other_through_the_sfu() {
    let (sfu, clients) = room_of(2, 50).await;
    for c in &clients {
        let got = c.counts();
        assert!(
            !got.contains_key(&c.index),
            "a client never gets its own audio back: {got:?}"
        );
    }
    let m = sfu.metrics().await.expect("metrics");
    assert!(m.rtp_forwarded >= 100, "{m:?}");
    assert_eq!(m.participants, 2);
    // Audio only: no bandwidth estimation, so no pacer between the SFU and them.
    assert_eq!(m.estimating, 0, "{m:?}");
    for c in clients {
        let _ = c.pc.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_clients_in_one_room_each_hear_the_other_fifteen() {
    let (sfu, clients) = room_of(16, 25).await;
    let m = sfu.metrics().await.expect("metrics");
    // 16 sources x 15 receivers x >= 25 packets.
    assert!(m.rtp_forwarded >= 16 * 15 * 25, "{m:?}");
    for c in &clients {
        assert_eq!(
            c.counts().len(),
            15,
            "client {} sources: {:?}",
            c.index,
            c.counts()
        );
    }
    for c in clients {
        let _ = c.pc.close().await;
    }
}

/// Garbage at the SFU's port (random bytes, truncated RTP/RTCP headers, STUN with unknown
/// users, DTLS-looking records) is counted and dropped; a call in progress is not disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_datagrams_are_counted_and_a_call_goes_on() {
    let (sfu, clients) = room_of(2, 25).await;
    let before: Vec<u64> = clients.iter().map(|c| c.counts().values().sum()).collect();
    let writers = start_writers(&clients);
    let attacker = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let target = sfu.local_addr();
    let mut x: u32 = 12345;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let n = 3000;
    for i in 0..n {
        let len = (rnd() % 300) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        match i % 5 {
            // RTP version bits, truncated header.
            0 => d = vec![0x80, 0x6f, 0, 1],
            // RTCP-looking (PT 200..206) garbage.
            1 if d.len() > 2 => {
                d[0] = 0x81;
                d[1] = 200 + (i % 7) as u8;
            }
            // STUN binding request header with an unknown user.
            2 => {
                d = vec![0, 1, 0, 12, 0x21, 0x12, 0xa4, 0x42];
                d.extend_from_slice(&[7; 12]);
                d.extend_from_slice(&[0, 6, 0, 8]);
                d.extend_from_slice(b"nobody:x");
            }
            // DTLS record header, random body.
            3 if d.len() > 13 => {
                d[0] = 22;
                d[1] = 0xfe;
                d[2] = 0xfd;
            }
            _ => {}
        }
        let _ = attacker.send_to(&d, target).await;
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    // The call goes on: both clients keep receiving.
    let ok = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let now: Vec<u64> = clients.iter().map(|c| c.counts().values().sum()).collect();
            if now.iter().zip(&before).all(|(a, b)| *a >= b + 50) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    for w in writers {
        w.abort();
    }
    let m = sfu.metrics().await.expect("the SFU still answers");
    assert!(ok.is_ok(), "audio stopped after the garbage: {m:?}");
    assert!(
        m.unparsable + m.unrouted >= n as u64 * 9 / 10,
        "counted: {m:?}"
    );
    assert_eq!(m.participants, 2);
}

/// Packets that reach the SFU back to back (a video keyframe is 20-30 datagrams in a burst)
/// are all forwarded. str0m in RTP mode holds one received packet until the next
/// `poll_output`; the loop once fed a burst of datagrams to an `Rtc` before draining it, and all
/// but the last of each burst were lost (session 7's video e2e failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_packets_are_forwarded_whole() {
    let (sfu, clients) = room_of(2, 10).await;
    let (tx, rx) = (&clients[0], &clients[1]);
    let pt = tx
        .sender
        .get_parameters()
        .await
        .ok()
        .and_then(|p| p.rtp_parameters.codecs.first().map(|x| x.payload_type))
        .expect("payload type");
    let ssrc = tx.track.ssrcs().await[0];
    const BURSTS: u32 = 20;
    const BURST: u32 = 30;
    let first = 1_000_000u32;
    for b in 0..BURSTS {
        for i in 0..BURST {
            let n = first + b * BURST + i;
            let mut data = vec![tx.index; 200];
            data[1..5].copy_from_slice(&n.to_be_bytes());
            let sample = Sample {
                data: data.into(),
                duration: Duration::from_millis(20),
                ..Sample::new(Instant::now())
            };
            tx.track
                .sample_writer(ssrc, pt)
                .write_sample(&sample)
                .await
                .expect("write");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let want: std::collections::BTreeSet<u32> = (first..first + BURSTS * BURST).collect();
    let missing = |rx: &Client| {
        let seen = rx.seen.lock().expect("lock");
        let got = seen.get(&tx.index).cloned().unwrap_or_default();
        want.difference(&got).count()
    };
    // A hang guard: every packet is expected, so this ends as soon as the last one arrives.
    let done = tokio::time::timeout(Duration::from_secs(60), async {
        while missing(rx) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let m = sfu.metrics().await.expect("metrics");
    assert!(
        done.is_ok(),
        "{} of {} burst packets never arrived: {m:?}",
        missing(rx),
        want.len()
    );
    for c in clients {
        let _ = c.pc.close().await;
    }
}
