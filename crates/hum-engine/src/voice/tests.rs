//! Two and three sessions in one process over loopback UDP, signalling through memory.
//! Real WebRTC (ICE, DTLS, SRTP), real Opus, real jitter buffers; only the relay is replaced.

use std::sync::Arc;
use std::time::Duration;

use hum_media::analysis::{find, rms};
use hum_media::pacer::Paced;
use hum_media::processing::{CaptureControls, VoiceMode};
use hum_media::synth::{BufferSource, MemorySink, NullSink, SilenceSource, chirp_samples};
use hum_proto::UserId;
use tokio::sync::mpsc;

use super::*;

fn user(n: u8) -> UserId {
    UserId([n; 32])
}

fn loopback() -> VoiceConfig {
    VoiceConfig {
        bind: vec!["127.0.0.1:0".into()],
        stats_interval: Duration::from_millis(500),
        ..Default::default()
    }
}

/// A bot's capture settings: the file is the signal, so no gate and no noise suppression.
fn open_mic() -> CaptureControls {
    let c = CaptureControls::new();
    c.set_mode(VoiceMode::Open);
    c.set_noise_suppression(false);
    c
}

struct Bot {
    session: Arc<VoiceSession>,
    events: mpsc::UnboundedReceiver<VoiceEvent>,
}

fn bot(
    hub: &MemorySignalHub,
    me: UserId,
    source: Box<dyn hum_media::AudioSource>,
    sink: Box<dyn hum_media::AudioSink>,
    controls: CaptureControls,
) -> Bot {
    let (signaller, mut inbox) = hub.register(me);
    let (session, events) =
        VoiceSession::start(me, loopback(), source, sink, controls, signaller).expect("start");
    let s = session.clone();
    tokio::spawn(async move {
        while let Some((from, payload)) = inbox.recv().await {
            if let Err(e) = s.handle_signal(from, payload).await {
                eprintln!("signal from {from}: {e}");
            }
        }
    });
    Bot { session, events }
}

async fn wait_connected(b: &mut Bot, n: usize) {
    let mut seen = 0;
    tokio::time::timeout(Duration::from_secs(15), async {
        while seen < n {
            if let Some(VoiceEvent::PeerConnected(_)) = b.events.recv().await {
                seen += 1;
            }
        }
    })
    .await
    .expect("peers connect within 15 s");
}

/// What the test tells a [`SteppedMic`].
enum Step {
    /// Capture one more frame.
    Frame,
    /// From now on run in real time.
    Release,
}

/// A microphone whose media clock the test holds: frame `k` is captured only when the test
/// sends [`Step::Frame`], and the test hears (on `ready`) when the capture thread asks for frame
/// `k`, i.e. once frame `k - 1` went all the way through the capture chain. After
/// [`Step::Release`] (or when the test drops its sender) it is an ordinary paced source, its
/// real-time clock starting then.
struct SteppedMic {
    stepping: Option<BufferSource>,
    paced: Option<Paced<BufferSource>>,
    ready: mpsc::UnboundedSender<()>,
    steps: std::sync::mpsc::Receiver<Step>,
}

impl hum_media::AudioSource for SteppedMic {
    fn read(&mut self, frame: &mut [f32]) -> Result<(), hum_media::MediaError> {
        if let Some(p) = self.paced.as_mut() {
            return p.read(frame);
        }
        let _ = self.ready.send(());
        let Some(mut inner) = self.stepping.take() else {
            return Err(hum_media::MediaError::Ended);
        };
        match self.steps.recv() {
            Ok(Step::Frame) => {
                let r = inner.read(frame);
                self.stepping = Some(inner);
                r
            }
            Ok(Step::Release) | Err(_) => self.paced.insert(Paced::new(inner)).read(frame),
        }
    }

    fn name(&self) -> String {
        "stepped chirp train".into()
    }
}

/// Waits for `bot`'s next statistics with received packets from `other`, checking each report.
async fn stats_with_packets(bot: &mut Bot, other: UserId) {
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match bot.events.recv().await {
                Some(VoiceEvent::Stats { user, stats }) => {
                    assert_eq!(user, other);
                    assert!(
                        stats.jitter_buffer < Duration::from_millis(200),
                        "{stats:?}"
                    );
                    if stats.packets_received > 0 {
                        return;
                    }
                }
                Some(_) => {}
                None => panic!("session ended"),
            }
        }
    })
    .await
    .expect("stats with received packets within 15 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chirp_from_a_arrives_in_b_recording() {
    let hub = MemorySignalHub::new();
    let (a_id, b_id) = (user(1), user(2));
    // 0.5 s chirp every 1.5 s, through a gated microphone (push-to-talk held): the 1 s
    // silences go out as Opus DTX, and each chirp after one must still arrive at its level.
    let a_mic = open_mic();
    a_mic.set_mode(VoiceMode::PushToTalk);
    a_mic.set_ptt_pressed(true);
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let (step, steps) = std::sync::mpsc::channel();
    let mut a = bot(
        &hub,
        a_id,
        Box::new(SteppedMic {
            stepping: Some(BufferSource::chirp_train(24_000, 72_000)),
            paced: None,
            ready: ready_tx,
            steps,
        }),
        Box::new(Paced::new(NullSink)),
        a_mic,
    );
    let mut a_level = a.session.controls().input_level();

    // A's input meter follows its microphone in media time: one level per 60 ms captured
    // (the 50 ms meter window rounded up to whole 20 ms frames), loud with the gate open while
    // a chirp plays (-9 dBFS RMS), silent in the gaps. Two whole periods, frame by frame.
    let frame = loopback().frame.samples();
    let per_level = hum_media::monitor::METER_WINDOW_SAMPLES.div_ceil(frame);
    let frames = 2 * 72_000 / frame;
    let mut levels = Vec::new();
    for k in 0..=frames {
        tokio::time::timeout(Duration::from_secs(10), ready.recv())
            .await
            .expect("the capture thread asks for the next frame within 10 s")
            .expect("capture thread alive");
        let fresh = a_level.has_changed().expect("controls alive");
        assert_eq!(
            fresh,
            k > 0 && k % per_level == 0,
            "after {k} frames of 20 ms: a new level {}",
            if fresh { "appeared" } else { "is missing" }
        );
        if fresh {
            levels.push(*a_level.borrow_and_update());
        }
        if k < frames {
            step.send(Step::Frame).expect("capture thread alive");
        }
    }
    step.send(Step::Release).expect("capture thread alive");
    let window = per_level * frame;
    assert_eq!(levels.len(), 2 * 72_000 / window);
    for (w, l) in levels.iter().enumerate() {
        let (from, to) = ((w * window) % 72_000, (w * window) % 72_000 + window);
        assert!(l.gate_open, "push-to-talk held: window {w}: {l:?}");
        if to <= 24_000 {
            assert!(
                l.level_db > -12.0 && l.level_db < -6.0,
                "window {w} ({from}..{to}) is all chirp: {l:?}"
            );
        } else if from >= 24_000 {
            assert_eq!(l.level_db, -100.0, "window {w} ({from}..{to}) is silence");
        }
    }

    let rec = MemorySink::new();
    let mut b = bot(
        &hub,
        b_id,
        Box::new(Paced::new(SilenceSource::new())),
        Box::new(Paced::new(rec.clone())),
        open_mic(),
    );
    // Shaped like a 1-on-1 call: the caller offers, the callee waits for the offer.
    b.session
        .add_peer_as(a_id, false)
        .await
        .expect("b waits for a");
    a.session
        .add_peer_as(b_id, true)
        .await
        .expect("a offers to b");
    wait_connected(&mut b, 1).await;

    // Stats flow on both ends of a 1-on-1 call, and report a sane jitter buffer.
    stats_with_packets(&mut a, b_id).await;
    stats_with_packets(&mut b, a_id).await;
    // Record 4 s of the call (more than two chirp periods) at B.
    let connected_at = rec.samples().len();
    tokio::time::timeout(Duration::from_secs(30), async {
        while rec.samples().len() < connected_at + 4 * 48_000 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("b records 4 s of the call within 30 s");

    a.session.leave().await;
    b.session.leave().await;
    let heard = rec.samples();
    assert!(
        heard.len() > 48_000 * 3,
        "recorded only {} samples",
        heard.len()
    );
    let chirp = chirp_samples(300.0, 3400.0, 0.5, 24_000);
    if let Ok(p) = std::env::var("HUM_DEBUG_WAV") {
        let _ = hum_media::synth::write_wav(std::path::Path::new(&p), &heard);
    }
    let m = find(&heard, &chirp).expect("something recorded");
    eprintln!("chirp match: {m:?}");
    assert!(m.correlation > 0.9, "chirp not found: {m:?}");
    // Sent at 0.354 RMS; after DTX it must not come back louder (or much softer).
    let got = rms(&heard[m.offset..(m.offset + chirp.len()).min(heard.len())]);
    assert!((got / rms(&chirp) - 1.0).abs() < 0.25, "chirp level {got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_way_mesh_everyone_hears_everyone_and_mute_silences() {
    let hub = MemorySignalHub::new();
    let ids = [user(1), user(2), user(3)];
    let recs: Vec<MemorySink> = (0..3).map(|_| MemorySink::new()).collect();
    let controls: Vec<CaptureControls> = (0..3).map(|_| open_mic()).collect();
    // Each sends a different tone, so each listener can tell who it hears.
    let freqs = [400.0f32, 900.0, 1700.0];
    let mut bots: Vec<Bot> = (0..3)
        .map(|i| {
            bot(
                &hub,
                ids[i],
                Box::new(Paced::new(hum_media::synth::ToneSource::new(freqs[i], 0.3))),
                Box::new(Paced::new(recs[i].clone())),
                controls[i].clone(),
            )
        })
        .collect();
    for (i, b) in bots.iter().enumerate() {
        for (j, id) in ids.iter().enumerate() {
            if i != j {
                b.session.add_peer(*id).await.expect("add");
            }
        }
    }
    for b in bots.iter_mut() {
        wait_connected(b, 2).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Mute participant 0 and let the buffers drain.
    controls[0].set_muted(true);
    let before: Vec<usize> = recs.iter().map(|r| r.samples().len()).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for b in &bots {
        b.session.leave().await;
    }
    for (i, r) in recs.iter().enumerate() {
        let all = r.samples();
        // The 1.5 s before muting: both other tones present, not our own.
        let end = before[i];
        let window = &all[end.saturating_sub(72_000)..end];
        for (j, f) in freqs.iter().enumerate() {
            let p = hum_media::analysis::tone_purity(window, *f);
            if i == j {
                assert!(p < 0.05, "{i} hears itself: {p}");
            } else {
                assert!(p > 0.15, "{i} does not hear {j}: {p}");
            }
        }
        if i != 0 {
            // After the mute (skip 0.5 s of buffered audio), participant 0's tone is gone.
            let after = &all[(end + 24_000).min(all.len())..];
            assert!(after.len() > 24_000);
            let p = hum_media::analysis::tone_purity(after, freqs[0]);
            assert!(p < 0.02, "{i} still hears muted 0: {p}");
            assert!(rms(after) > 0.01, "{i} hears nothing at all after the mute");
        }
    }
}

#[test]
fn a_ninth_participant_is_told_about_the_sfu() {
    assert!(VoiceSession::check_capacity(7).is_ok());
    let e = VoiceSession::check_capacity(8).expect_err("9th");
    assert!(matches!(e, VoiceError::NeedsSfu));
    assert!(e.to_string().contains("SFU"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_way_mesh_everyone_is_heard() {
    let hub = MemorySignalHub::new();
    let ids: Vec<UserId> = (1..=8).map(user).collect();
    let freqs: Vec<f32> = (0..8).map(|i| 350.0 + 250.0 * i as f32).collect();
    let rec = MemorySink::new();
    let mut bots: Vec<Bot> = (0..8)
        .map(|i| {
            let sink: Box<dyn hum_media::AudioSink> = if i == 0 {
                Box::new(Paced::new(rec.clone()))
            } else {
                Box::new(Paced::new(NullSink))
            };
            bot(
                &hub,
                ids[i],
                Box::new(Paced::new(hum_media::synth::ToneSource::new(freqs[i], 0.1))),
                sink,
                open_mic(),
            )
        })
        .collect();
    for (i, b) in bots.iter().enumerate() {
        for (j, id) in ids.iter().enumerate() {
            if i != j {
                b.session.add_peer(*id).await.expect("add");
            }
        }
    }
    for b in bots.iter_mut() {
        wait_connected(b, 7).await;
    }
    assert_eq!(bots[0].session.peers().await.len(), 7);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let n = rec.samples().len();
    for b in &bots {
        b.session.leave().await;
    }
    let all = rec.samples();
    // Judged per 100 ms block over the last 2 s: when the jitter buffer drops or conceals a frame
    // the tone's phase jumps, and over one long window the two halves can cancel out even though
    // the tone is there (each of the 7 tones holds about 1/7 of a block's energy).
    let window = &all[n.saturating_sub(96_000)..n];
    let blocks: Vec<&[f32]> = window.chunks_exact(4_800).collect();
    assert!(blocks.len() >= 10, "only {} blocks recorded", blocks.len());
    for (j, f) in freqs.iter().enumerate().skip(1) {
        let heard = blocks
            .iter()
            .filter(|b| hum_media::analysis::tone_purity(b, *f) > 0.05)
            .count();
        assert!(
            heard * 10 >= blocks.len() * 7,
            "listener hears participant {j} ({f} Hz) in only {heard} of {} blocks",
            blocks.len()
        );
    }
    assert!(hum_media::analysis::tone_purity(window, freqs[0]) < 0.01);
}

/// The newest `packets_received` `bot` reports from `other` over the next `window`.
async fn packets_from(bot: &mut Bot, other: UserId, window: Duration) -> u64 {
    let mut last = None;
    let _ = tokio::time::timeout(window, async {
        while let Some(ev) = bot.events.recv().await {
            if let VoiceEvent::Stats { user, stats } = ev
                && user == other
            {
                last = Some(stats.packets_received);
            }
        }
    })
    .await;
    last.expect("statistics within the window")
}

/// The newest `LocalState` in `bot`'s events so far.
fn local_state(bot: &mut Bot) -> Option<(bool, bool)> {
    let mut last = None;
    while let Ok(ev) = bot.events.try_recv() {
        if let VoiceEvent::LocalState {
            muted,
            muted_by_channel,
            ..
        } = ev
        {
            last = Some((muted, muted_by_channel));
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_the_channel_may_not_hear_sends_nothing_and_stays_muted_after() {
    let hub = MemorySignalHub::new();
    let (a_id, b_id) = (user(1), user(2));
    // An open microphone: a plain mute still sends (silent frames, no DTX), 50 packets a second.
    let mut a = bot(
        &hub,
        a_id,
        Box::new(Paced::new(hum_media::synth::ToneSource::new(440.0, 0.2))),
        Box::new(Paced::new(NullSink)),
        open_mic(),
    );
    let mut b = bot(
        &hub,
        b_id,
        Box::new(Paced::new(SilenceSource)),
        Box::new(Paced::new(NullSink)),
        open_mic(),
    );
    a.session.add_peer(b_id).await.expect("add");
    wait_connected(&mut a, 1).await;
    wait_connected(&mut b, 1).await;
    stats_with_packets(&mut b, a_id).await;
    // The user mutes: the packets go on (digital silence).
    assert!(a.session.set_muted(true));
    let m0 = packets_from(&mut b, a_id, Duration::from_millis(600)).await;
    let m1 = packets_from(&mut b, a_id, Duration::from_millis(1_100)).await;
    assert!(m1 >= m0 + 20, "a user's own mute still sends: {m0} -> {m1}");
    assert!(a.session.set_muted(false));
    // The channel takes `speak` away: muted by the channel, and nothing arrives any more
    // (after what was in flight).
    a.session.set_speak_allowed(false);
    assert_eq!(local_state(&mut a), Some((true, true)));
    assert!(a.session.controls().muted());
    // What was already on its way arrives first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p0 = packets_from(&mut b, a_id, Duration::from_millis(600)).await;
    let p1 = packets_from(&mut b, a_id, Duration::from_millis(1_600)).await;
    assert!(
        p1 <= p0 + 1,
        "packets still arrive from a member without speak: {p0} -> {p1}"
    );
    // The user cannot unmute meanwhile.
    assert!(!a.session.set_muted(false));
    assert!(a.session.controls().muted());
    assert_eq!(local_state(&mut a), Some((true, true)));
    // Given back: still muted (nobody is unmuted behind their back), sending as a mute does.
    a.session.set_speak_allowed(true);
    assert_eq!(local_state(&mut a), Some((true, false)));
    assert!(a.session.controls().muted());
    let q0 = packets_from(&mut b, a_id, Duration::from_millis(600)).await;
    let q1 = packets_from(&mut b, a_id, Duration::from_millis(1_100)).await;
    assert!(
        q1 >= q0 + 20,
        "sending again after speak came back: {q0} -> {q1}"
    );
    // And the user may unmute now.
    assert!(a.session.set_muted(false));
    assert_eq!(local_state(&mut a), Some((false, false)));
    a.session.leave().await;
    b.session.leave().await;
}
