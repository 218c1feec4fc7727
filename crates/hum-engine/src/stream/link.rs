//! One mesh link: a WebRTC peer connection to one other member of a stream, with two data channels.
//!
//! | channel | options | carries | why |
//! | --- | --- | --- | --- |
//! | `mesh-ctl` | ordered, reliable | request, cancel, absent, announce, buffer health | small; a lost request would leave a chunk held nowhere and a lost cancel would waste upload, and a cancel must not overtake its request |
//! | `mesh-data` | unordered, `maxPacketLifeTime` 2 s | data (chunks), in fragments | chunks are independent: a lost packet of one must not hold back the next (head-of-line blocking); after 2 s the viewer has asked someone else, so resending is waste (the same model `hum sim --loss` uses) |
//!
//! The downstream side offers and creates both channels; the upstream answers. Negotiation is
//! non-trickle (the SDP carries every candidate, as in voice). Incoming messages go, raw, to the
//! node's loop, which reassembles and decodes them (outside input is handled in one place).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hum_proto::UserId;
use tokio::sync::{Mutex, mpsc, watch};
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
};

use super::StreamError;
use crate::ice::{IceConfig, IceRoute};

pub const CTL_LABEL: &str = "mesh-ctl";
pub const DATA_LABEL: &str = "mesh-data";
/// Partial reliability of the chunk channel.
pub const DATA_LIFETIME_MS: u16 = 2000;

/// Which channel a message rides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    Ctl,
    Data,
}

/// What a link tells the node's loop.
#[derive(Debug)]
pub enum LinkEvent {
    /// Raw bytes off one of the link's channels.
    Message {
        user: UserId,
        lane: Lane,
        bytes: BytesMut,
    },
    /// Both channels are open.
    Open { user: UserId },
    /// The connection failed or closed.
    Closed { user: UserId },
    /// The path an open link's data takes (`None`: the statistics named no selected pair).
    Route {
        user: UserId,
        route: Option<IceRoute>,
    },
}

struct Handler {
    user: UserId,
    gathered: watch::Sender<bool>,
    events: mpsc::UnboundedSender<LinkEvent>,
    channels: Arc<Channels>,
}

struct Channels {
    ctl: Mutex<Option<Arc<dyn DataChannel>>>,
    data: Mutex<Option<Arc<dyn DataChannel>>>,
    open: watch::Sender<u8>,
    closed: AtomicBool,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        let _ = self.gathered.send(state == RTCIceGatheringState::Complete);
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if matches!(
            state,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
        ) && !self.channels.closed.swap(true, Ordering::SeqCst)
        {
            let _ = self.events.send(LinkEvent::Closed { user: self.user });
        }
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        attach(self.user, dc, self.channels.clone(), self.events.clone()).await;
    }
}

/// Register a channel (ours or the peer's) and pump its events into the node's loop.
async fn attach(
    user: UserId,
    dc: Arc<dyn DataChannel>,
    channels: Arc<Channels>,
    events: mpsc::UnboundedSender<LinkEvent>,
) {
    let lane = match dc.label().await.as_deref() {
        Ok(CTL_LABEL) => Lane::Ctl,
        Ok(DATA_LABEL) => Lane::Data,
        // Not ours: a peer opening other channels gets nothing from us.
        _ => return,
    };
    match lane {
        Lane::Ctl => *channels.ctl.lock().await = Some(dc.clone()),
        Lane::Data => *channels.data.lock().await = Some(dc.clone()),
    }
    tokio::spawn(async move {
        while let Some(ev) = dc.poll().await {
            match ev {
                DataChannelEvent::OnOpen => {
                    let bit = if lane == Lane::Ctl { 1 } else { 2 };
                    let mut now_open = 0;
                    channels.open.send_modify(|v| {
                        *v |= bit;
                        now_open = *v;
                    });
                    if now_open == 3 {
                        let _ = events.send(LinkEvent::Open { user });
                    }
                }
                DataChannelEvent::OnMessage(m) => {
                    let sent = events.send(LinkEvent::Message {
                        user,
                        lane,
                        bytes: m.data,
                    });
                    if sent.is_err() {
                        break;
                    }
                }
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
        if !channels.closed.swap(true, Ordering::SeqCst) {
            let _ = events.send(LinkEvent::Closed { user });
        }
    });
}

/// Outgoing bytes for one link, written by its own task so a slow peer never blocks the node.
type Outbox = mpsc::UnboundedSender<(Lane, Vec<u8>)>;

pub struct MeshLink {
    pub user: UserId,
    ice: IceConfig,
    pc: Arc<dyn PeerConnection>,
    gathered: watch::Receiver<bool>,
    channels: Arc<Channels>,
    events: mpsc::UnboundedSender<LinkEvent>,
    outbox: Outbox,
    writer: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for MeshLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshLink")
            .field("user", &self.user)
            .finish()
    }
}

impl MeshLink {
    /// A new connection to `user`; nothing is negotiated yet (see [`MeshLink::offer`] /
    /// [`MeshLink::answer`]). `bind`: local UDP addresses (loopback in tests); `ice`: TURN and
    /// relay-only ("hide my IP": the link's SDP carries relayed candidates only, checked before
    /// it is sent).
    pub async fn new(
        user: UserId,
        bind: &[String],
        ice: &IceConfig,
        events: mpsc::UnboundedSender<LinkEvent>,
    ) -> Result<Self, StreamError> {
        let config = ice.rtc_configuration()?;
        let mut media = MediaEngine::default();
        media.register_default_codecs()?;
        let (gtx, grx) = watch::channel(false);
        let channels = Arc::new(Channels {
            ctl: Mutex::new(None),
            data: Mutex::new(None),
            open: watch::Sender::new(0),
            closed: AtomicBool::new(false),
        });
        // Fragments are under 64 KiB, the default max-message-size, so nothing to raise here.
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config)
            .with_media_engine(media)
            .with_handler(Arc::new(Handler {
                user,
                gathered: gtx,
                events: events.clone(),
                channels: channels.clone(),
            }))
            .with_udp_addrs(bind.to_vec())
            .build()
            .await?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let (outbox, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_loop(channels.clone(), rx));
        Ok(MeshLink {
            user,
            ice: ice.clone(),
            pc,
            gathered: grx,
            channels,
            events,
            outbox,
            writer,
        })
    }

    /// Downstream side: create the two channels and make the offer.
    pub async fn offer(&self) -> Result<String, StreamError> {
        let ctl = self
            .pc
            .create_data_channel(
                CTL_LABEL,
                Some(RTCDataChannelInit {
                    ordered: true,
                    ..Default::default()
                }),
            )
            .await?;
        let data = self
            .pc
            .create_data_channel(
                DATA_LABEL,
                Some(RTCDataChannelInit {
                    ordered: false,
                    max_packet_life_time: Some(DATA_LIFETIME_MS),
                    ..Default::default()
                }),
            )
            .await?;
        for dc in [ctl, data] {
            attach(self.user, dc, self.channels.clone(), self.events.clone()).await;
        }
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer).await?;
        self.gathered_sdp().await
    }

    /// Upstream side: answer an offer.
    pub async fn answer(&self, sdp: String) -> Result<String, StreamError> {
        self.pc
            .set_remote_description(RTCSessionDescription::offer(sdp)?)
            .await?;
        let answer = self.pc.create_answer(None).await?;
        self.pc.set_local_description(answer).await?;
        self.gathered_sdp().await
    }

    pub async fn accept_answer(&self, sdp: String) -> Result<(), StreamError> {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(sdp)?)
            .await?;
        Ok(())
    }

    async fn gathered_sdp(&self) -> Result<String, StreamError> {
        let mut g = self.gathered.clone();
        // Bounded: on loopback gathering is immediate; without it the SDP still carries host
        // candidates gathered so far.
        let _ = tokio::time::timeout(Duration::from_secs(5), g.wait_for(|v| *v)).await;
        let sdp = self
            .pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| StreamError::WebRtc("no local description".into()))?;
        self.ice.check_local_sdp(&sdp)?;
        Ok(sdp)
    }

    /// The path the link's data takes (both ends of the selected candidate pair), once open.
    pub async fn route(&self) -> Option<IceRoute> {
        crate::ice::selected_route(&self.pc).await
    }

    /// Queue bytes on a lane (sent once the channel is open).
    pub fn send(&self, lane: Lane, bytes: Vec<u8>) {
        let _ = self.outbox.send((lane, bytes));
    }

    pub fn is_closed(&self) -> bool {
        self.channels.closed.load(Ordering::SeqCst)
    }

    pub async fn close(&self) {
        self.channels.closed.store(true, Ordering::SeqCst);
        self.writer.abort();
        let _ = self.pc.close().await;
    }
}

async fn write_loop(channels: Arc<Channels>, mut rx: mpsc::UnboundedReceiver<(Lane, Vec<u8>)>) {
    let mut open = channels.open.subscribe();
    if open.wait_for(|v| *v == 3).await.is_err() {
        return;
    }
    let ctl = channels.ctl.lock().await.clone();
    let data = channels.data.lock().await.clone();
    let (Some(ctl), Some(data)) = (ctl, data) else {
        return;
    };
    let started = Instant::now();
    while let Some((lane, bytes)) = rx.recv().await {
        let dc = match lane {
            Lane::Ctl => &ctl,
            Lane::Data => &data,
        };
        if let Err(e) = dc.send(BytesMut::from(&bytes[..])).await {
            tracing::debug!(after = ?started.elapsed(), "mesh link send failed: {e}");
            return;
        }
    }
}
