//! Forwarding throughput of the sans-IO path: P audio publishers, S listening subscribers in one
//! room; per 20 ms frame every publisher's packet goes through the session layer (fan-out,
//! per-subscriber forwarder with sequence/timestamp rewrite, speaker detection) and each
//! forwarded packet gets its RTP header written into an output buffer. No SRTP, no sockets:
//! this is the SFU's own per-packet cost, the floor under the full path.
//!
//!   cargo run --release -p hum-sfu --example sfu_bench -- --publishers 10 --subscribers 1000
//!
//! Reports forwarded packets per second of CPU time on one core (the loop is single-threaded,
//! as the runtime's is), and the process RSS.
//!
//! `--str0m` adds what the runtime does per forwarded packet after the session layer: each
//! subscriber has a real str0m `Rtc` (DTLS done in memory with a str0m client peer), the packet
//! is `write_rtp`'d to its send stream and polled out SRTP-encrypted as a datagram (which is
//! then dropped instead of going to a socket). Only the UDP syscalls are missing.

use std::time::{Duration, Instant};

use clap::Parser;
use hum_proto::signal::Permissions;
use hum_proto::{ChannelId, UserId};
use hum_sfu::packet::audio_level::AudioLevel;
use hum_sfu::packet::forwarder::InPacket;
use hum_sfu::packet::layer::Layer;
use hum_sfu::session::{ParticipantId, RoomId, Session, SessionConfig, TrackKind};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 10)]
    publishers: usize,
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Media seconds to push through (50 packets per publisher per second).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Payload bytes per packet (Opus at ~32 kbit/s: ~80).
    #[arg(long, default_value_t = 80)]
    payload: usize,
    /// Also run each forwarded packet through a per-subscriber str0m Rtc (RTP write + SRTP).
    #[arg(long)]
    str0m: bool,
}

mod full {
    //! In-memory str0m peers: the SFU side (RTP mode, send-only audio) and a client side.
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use str0m::media::{Direction, MediaKind, Mid};
    use str0m::net::{Protocol, Receive};
    use str0m::{Candidate, Event, Input, Output, Rtc};

    pub struct Sub {
        pub rtc: Rtc,
        pub mid: Mid,
        pub pt: str0m::media::Pt,
    }

    fn drain(rtc: &mut Rtc, from: SocketAddr) -> (Vec<(SocketAddr, Vec<u8>)>, bool) {
        let mut out = vec![];
        let mut connected = false;
        loop {
            match rtc.poll_output() {
                Ok(Output::Transmit(t)) => out.push((from, t.contents.to_vec())),
                Ok(Output::Event(Event::Connected)) => connected = true,
                Ok(Output::Event(_)) => {}
                Ok(Output::Timeout(_)) | Err(_) => break,
            }
        }
        (out, connected)
    }

    /// Connects an SFU-side Rtc to a client Rtc in memory (ICE, DTLS, SRTP keys).
    pub fn connect(n: usize, now: &mut Instant) -> Sub {
        let a: SocketAddr = format!("10.0.{}.{}:5000", n / 250, n % 250 + 1)
            .parse()
            .expect("addr");
        let b: SocketAddr = format!("10.1.{}.{}:6000", n / 250, n % 250 + 1)
            .parse()
            .expect("addr");
        let mut sfu = Rtc::builder()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .build(*now);
        let mut cli = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .build(*now);
        sfu.add_local_candidate(Candidate::host(a, "udp").expect("cand"));
        cli.add_local_candidate(Candidate::host(b, "udp").expect("cand"));
        sfu.add_remote_candidate(Candidate::host(b, "udp").expect("cand"));
        cli.add_remote_candidate(Candidate::host(a, "udp").expect("cand"));
        let mut api = sfu.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().expect("offer");
        let answer = cli.sdp_api().accept_offer(offer).expect("answer");
        sfu.sdp_api()
            .accept_answer(pending, answer)
            .expect("accept");
        let mut up = (false, false);
        for _ in 0..5000 {
            let (to_cli, c1) = drain(&mut sfu, a);
            let (to_sfu, c2) = drain(&mut cli, b);
            up = (up.0 || c1, up.1 || c2);
            for (src, d) in to_cli {
                if let Ok(r) = Receive::new(Protocol::Udp, src, b, &d) {
                    let _ = cli.handle_input(Input::Receive(*now, r));
                }
            }
            for (src, d) in to_sfu {
                if let Ok(r) = Receive::new(Protocol::Udp, src, a, &d) {
                    let _ = sfu.handle_input(Input::Receive(*now, r));
                }
            }
            if up.0 && up.1 {
                break;
            }
            *now += Duration::from_millis(5);
            let _ = sfu.handle_input(Input::Timeout(*now));
            let _ = cli.handle_input(Input::Timeout(*now));
        }
        assert!(up.0 && up.1, "in-memory peers connect");
        let pt = sfu
            .codec_config()
            .find(|p| p.spec().codec == str0m::format::Codec::Opus)
            .map(|p| p.pt())
            .expect("opus");
        Sub { rtc: sfu, mid, pt }
    }
}

fn user(n: usize) -> UserId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&(n as u64).to_be_bytes());
    UserId(b)
}

/// CPU time of this thread (Linux: /proc/thread-self/schedstat, nanoseconds on CPU).
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn main() {
    let args = Args::parse();
    let t0 = Instant::now();
    let room = ChannelId(1);
    let mut s = Session::new(SessionConfig::default(), |_r: RoomId, _w: ParticipantId| {
        Permissions::ALL
    });
    let mut tracks = vec![];
    for p in 0..args.publishers {
        s.join(room, user(p), t0).expect("join");
        tracks.push(
            s.publish(user(p), TrackKind::Audio, vec![], t0)
                .expect("publish"),
        );
    }
    for k in 0..args.subscribers {
        s.join(room, user(1_000_000 + k), t0).expect("join");
    }
    while s.poll_event().is_some() {}
    // With --str0m: one connected Rtc per subscriber, by user id.
    let mut vnow = t0;
    let mut subs: std::collections::HashMap<UserId, full::Sub> = std::collections::HashMap::new();
    if args.str0m {
        str0m::crypto::from_feature_flags().install_process_default();
        for k in 0..args.subscribers {
            subs.insert(user(1_000_000 + k), full::connect(k, &mut vnow));
        }
    }
    let mut datagrams: u64 = 0;
    let mut datagram_bytes: u64 = 0;
    let rss_before = rss_mib();

    let payload = vec![0x5au8; args.payload];
    // Shared by all copies, as the runtime shares the incoming packet's payload.
    let shared: std::sync::Arc<[u8]> = std::sync::Arc::from(&payload[..]);
    let mut out = vec![0u8; 12 + args.payload];
    let mut forwarded: u64 = 0;
    let mut checksum: u64 = 0;
    let frames = args.seconds * 50;
    let cpu0 = thread_cpu();
    let wall0 = Instant::now();
    for f in 0..frames {
        let at = vnow + Duration::from_millis(20 * f);
        for (i, &t) in tracks.iter().enumerate() {
            let pkt = InPacket {
                layer: Layer::LOW,
                seq: 1000 + f,
                timestamp: (f as u32).wrapping_mul(960),
                keyframe_start: false,
                arrival: at,
            };
            // One talker at a time, the others near silence.
            let level = if (f / 250) as usize % args.publishers == i {
                25
            } else {
                90
            };
            s.on_packet(
                t,
                &pkt,
                payload.len(),
                Some(AudioLevel::from_neg_dbov(level)),
                |to, rw| {
                    // Write the outgoing RTP header (what the send path does before SRTP).
                    out[0] = 0x80;
                    out[1] = 111;
                    out[2..4].copy_from_slice(&(rw.seq as u16).to_be_bytes());
                    out[4..8].copy_from_slice(&rw.timestamp.to_be_bytes());
                    out[8..12].copy_from_slice(&to.0[..4]);
                    out[12..].copy_from_slice(&payload);
                    checksum = checksum.wrapping_add(u64::from(out[3]) ^ u64::from(out[7]));
                    forwarded += 1;
                    if let Some(sub) = subs.get_mut(&to) {
                        let mut api = sub.rtc.direct_api();
                        if let Some(tx) = api.stream_tx_by_mid(sub.mid, None) {
                            tx.write_rtp(str0m::rtp::RtpWrite::new(
                                sub.pt,
                                rw.seq.into(),
                                rw.timestamp,
                                at,
                                shared.clone(),
                            ));
                        }
                        let _ = sub.rtc.handle_input(str0m::Input::Timeout(at));
                        while let Ok(o) = sub.rtc.poll_output() {
                            match o {
                                str0m::Output::Transmit(t) => {
                                    datagrams += 1;
                                    datagram_bytes += t.contents.len() as u64;
                                }
                                str0m::Output::Timeout(_) => break,
                                str0m::Output::Event(_) => {}
                            }
                        }
                    }
                },
            )
            .expect("track");
        }
        if f % 3 == 0 {
            s.tick(at);
            while s.poll_event().is_some() {}
        }
    }
    let cpu = thread_cpu().saturating_sub(cpu0);
    let wall = wall0.elapsed();
    let cpu_s = if cpu.is_zero() {
        wall.as_secs_f64()
    } else {
        cpu.as_secs_f64()
    };
    println!(
        "publishers {} subscribers {} media {} s: forwarded {} packets in {:.3} s CPU ({:.3} s wall)",
        args.publishers,
        args.subscribers,
        args.seconds,
        forwarded,
        cpu_s,
        wall.as_secs_f64()
    );
    if args.str0m {
        println!(
            "str0m path: {datagrams} SRTP datagrams out ({:.0}/s per core), {:.1} bytes each on average",
            datagrams as f64 / cpu_s,
            datagram_bytes as f64 / datagrams.max(1) as f64
        );
    }
    println!(
        "{:.0} forwarded packets/s per core ({:.0} ns per packet); RSS {:.1} MiB (session built: {:.1} MiB); checksum {}",
        forwarded as f64 / cpu_s,
        cpu_s * 1e9 / forwarded.max(1) as f64,
        rss_mib(),
        rss_before,
        checksum % 1000
    );
}
