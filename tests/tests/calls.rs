//! hum-engine's call service (`hum_engine::calls`) against a real relay process: two (or three)
//! engine clients in this process call each other with synthetic audio over real WebRTC on
//! loopback. Invite, ring, accept, media flowing, hang up; decline; cancel (a missed call);
//! a second caller declined while busy; refusals (not a friend, offline); the relay dying
//! mid-call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hum_engine::calls::{
    CallError, CallEvent, CallPeer, CallState, Calls, EndReason, MediaIo, MediaProvider,
};
use hum_engine::voice::link::AudioIo;
use hum_engine::voice::{VoiceConfig, VoiceEvent};
use hum_engine::{Identity, RelayClient, RelayConfig};
use hum_media::pacer::Paced;
use hum_media::processing::{CaptureControls, VoiceMode};
use hum_media::synth::{NullSink, ToneSource};
use hum_proto::signal::DisplayName;
use hum_tests::relay::Relay;
use tokio::sync::mpsc::UnboundedReceiver;

/// A tone in, nothing out; counts how often devices were opened.
struct Tone {
    opened: Mutex<u32>,
}

#[hum_engine::calls::async_trait]
impl MediaProvider for Tone {
    async fn open(&self, _peer: &CallPeer) -> Result<MediaIo, String> {
        if let Ok(mut n) = self.opened.lock() {
            *n += 1;
        }
        let controls = CaptureControls::new();
        controls.set_mode(VoiceMode::Open);
        controls.set_noise_suppression(false);
        Ok(MediaIo {
            config: VoiceConfig {
                bind: vec!["127.0.0.1:0".into()],
                stats_interval: Duration::from_millis(300),
                ..Default::default()
            },
            audio: AudioIo {
                source: Box::new(Paced::new(ToneSource::new(440.0, 0.3))),
                sink: Box::new(Paced::new(NullSink)),
                controls,
            },
        })
    }
}

struct Party {
    client: RelayClient,
    calls: Calls,
    events: UnboundedReceiver<CallEvent>,
    media: Arc<Tone>,
}

impl Party {
    async fn join(relay: &Relay, seed: u8, name: &str) -> Result<Self> {
        let mut c = RelayConfig::new(relay.ws_url());
        c.backoff_min = Duration::from_millis(100);
        c.backoff_max = Duration::from_millis(500);
        c.request_timeout = Duration::from_secs(5);
        let id = Identity::from_seed([seed; 32], DisplayName::new(name)?);
        let client = RelayClient::connect(id, c).await?;
        let media = Arc::new(Tone {
            opened: Mutex::new(0),
        });
        let (calls, events) = Calls::start(client.clone(), media.clone());
        Ok(Self {
            client,
            calls,
            events,
            media,
        })
    }

    fn id(&self) -> hum_proto::UserId {
        self.client.user_id()
    }

    /// The next event that `pick` accepts (a safety timeout only: the test waits for events).
    async fn until<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&CallEvent) -> Option<T>,
    ) -> Result<T> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .with_context(|| format!("timed out waiting for {what}"))?
                .context("call service stopped")?;
            if let Some(t) = pick(&ev) {
                return Ok(t);
            }
        }
    }

    async fn state(&mut self, what: &str, f: impl Fn(&CallState) -> bool) -> Result<CallState> {
        self.until(what, |e| match e {
            CallEvent::State(s) if f(s) => Some(s.clone()),
            _ => None,
        })
        .await
    }

    async fn ended(&mut self) -> Result<EndReason> {
        match self
            .state("the call to end", |s| matches!(s, CallState::Ended { .. }))
            .await?
        {
            CallState::Ended { reason, .. } => Ok(reason),
            s => bail!("not ended: {s:?}"),
        }
    }

    fn opened(&self) -> u32 {
        self.media.opened.lock().map(|n| *n).unwrap_or(0)
    }
}

async fn befriend(a: &Party, b: &Party) -> Result<()> {
    a.client.friend_request(b.id()).await?;
    b.client.friend_accept(a.id()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_accept_talk_hang_up_decline_cancel_and_busy() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &[])?;
    let mut alice = Party::join(&relay, 11, "alice").await?;
    let mut bob = Party::join(&relay, 12, "bob").await?;
    let mut carol = Party::join(&relay, 13, "carol").await?;

    // Not friends yet: refused before anything rings.
    let err = alice.calls.invite(bob.id()).await.unwrap_err();
    assert!(matches!(err, CallError::NotFriend), "{err}");
    assert_eq!(alice.calls.state(), CallState::Idle);
    befriend(&alice, &bob).await?;
    befriend(&carol, &bob).await?;

    // --- invite returns at once, while it rings -------------------------------------------
    let s = alice.calls.invite(bob.id()).await?;
    let CallState::Outgoing {
        peer,
        call: Some(call),
    } = s
    else {
        bail!("expected a ringing outgoing call, got {s:?}");
    };
    assert_eq!(peer.name, "bob");
    let ring = bob
        .state("the call to ring", |s| {
            matches!(s, CallState::Incoming { .. })
        })
        .await?;
    assert_eq!(ring.call(), Some(call));
    assert_eq!(ring.peer().map(|p| p.name.as_str()), Some("alice"));
    assert!(matches!(
        alice.calls.invite(bob.id()).await,
        Err(CallError::Busy)
    ));

    // A second caller while bob's phone rings is declined for him; alice's call stays.
    carol.calls.invite(bob.id()).await?;
    assert_eq!(carol.ended().await?, EndReason::TheyDeclined);
    assert!(matches!(bob.calls.state(), CallState::Incoming { .. }));

    // --- accept: both sides connect and audio flows ------------------------------------------
    let s = bob.calls.accept().await?;
    assert!(matches!(s, CallState::Connecting { .. }), "{s:?}");
    assert!(bob.calls.session().is_some(), "media runs once accepted");
    for p in [&mut alice, &mut bob] {
        p.state("the call to be active", |s| {
            matches!(s, CallState::Active { .. })
        })
        .await?;
    }
    // Audio flows (packets arrive) and alice is heard talking (her tone opens bob's VAD).
    let (mut packets, mut heard) = (0, None);
    while packets <= 10 || heard.is_none() {
        bob.until("audio from alice", |e| {
            match e {
                CallEvent::Media(VoiceEvent::Stats { stats, .. }) => {
                    packets = packets.max(stats.packets_received);
                }
                CallEvent::State(
                    s @ CallState::Active {
                        peer_speaking: true,
                        ..
                    },
                ) => heard = s.peer().map(|p| p.id),
                _ => {}
            }
            Some(())
        })
        .await?;
    }
    assert_eq!(heard, Some(alice.id()));

    // --- hang up: the relay hears it first, both sides end with the right reason ------------
    let s = alice.calls.hang_up().await?;
    assert_eq!(
        s,
        CallState::Ended {
            peer: Some(CallPeer {
                id: bob.id(),
                name: "bob".into()
            }),
            reason: EndReason::HungUp
        }
    );
    assert!(
        alice.calls.session().is_none(),
        "media stopped before hang_up returned"
    );
    assert_eq!(bob.ended().await?, EndReason::TheyHungUp);
    assert!(bob.calls.session().is_none());

    // --- decline ----------------------------------------------------------------------------
    bob.calls.invite(alice.id()).await?;
    alice
        .state("bob's call to ring", |s| {
            matches!(s, CallState::Incoming { .. })
        })
        .await?;
    let opened = alice.opened();
    alice.calls.decline().await?;
    assert_eq!(bob.ended().await?, EndReason::TheyDeclined);
    assert_eq!(alice.opened(), opened, "declining opens no devices");

    // --- cancel while it rings: a missed call on the other side ------------------------------
    alice.calls.invite(bob.id()).await?;
    bob.state("the call to ring", |s| {
        matches!(s, CallState::Incoming { .. })
    })
    .await?;
    let s = alice.calls.cancel().await?;
    assert!(matches!(
        s,
        CallState::Ended {
            reason: EndReason::Cancelled,
            ..
        }
    ));
    let missed = bob.ended().await?;
    assert_eq!(missed, EndReason::TheyCancelled);
    assert_eq!(
        missed.sentence("alice").as_deref(),
        Some("Missed call from alice.")
    );
    assert!(matches!(
        bob.calls.accept().await,
        Err(CallError::NothingToAccept)
    ));

    // --- an offline friend cannot be called ----------------------------------------------------
    carol.client.shutdown().await;
    let mut seen = bob.client.subscribe();
    while bob
        .client
        .friends()
        .await?
        .friends
        .iter()
        .any(|f| f.user.id == carol.id() && f.presence.status == hum_proto::signal::Status::Online)
    {
        let _ = tokio::time::timeout(Duration::from_secs(5), seen.recv()).await;
    }
    let err = bob.calls.invite(carol.id()).await.unwrap_err();
    assert!(matches!(err, CallError::Offline { .. }), "{err}");
    assert_eq!(err.to_string(), "carol is offline.");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_relay_ends_a_running_call_on_both_sides() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &[])?;
    let mut alice = Party::join(&relay, 21, "alice").await?;
    let mut bob = Party::join(&relay, 22, "bob").await?;
    befriend(&alice, &bob).await?;
    alice.calls.invite(bob.id()).await?;
    bob.state("ring", |s| matches!(s, CallState::Incoming { .. }))
        .await?;
    bob.calls.accept().await?;
    for p in [&mut alice, &mut bob] {
        p.state("active", |s| matches!(s, CallState::Active { .. }))
            .await?;
    }
    relay.kill();
    for p in [&mut alice, &mut bob] {
        assert_eq!(p.ended().await?, EndReason::RelayLost);
        assert!(p.calls.session().is_none(), "media stopped");
    }
    Ok(())
}
