//! The embedded SFU (hum-sfu) beside the hub: carries out the hub's [`SfuCmd`]s on the SFU's
//! own task and feeds its answers and events back to the hub thread as commands, so the hub
//! stays the one place that decides what each client is told.
//!
//! ```text
//!  hub thread ── SfuCmd ──▶ SfuLink::exec ── spawn ──▶ SfuServer::join/offer/answer/leave
//!      ▲                                                   │
//!      └──── HubCmd::SfuDone / HubCmd::SfuEvent ◀──────────┘ (answers, offers, speakers,
//!                                                              wanted layers)
//! ```
//!
//! Permissions: the hub computes the member's channel permissions when it asks for a join; the
//! SFU's permissions hook reads them from a shared map (`speak` lets audio be published,
//! `video` a camera), so the SFU enforces what a mesh client is only told. When a role or the
//! channel's permissions change, the hub sends [`SfuCmd::Permissions`]: the map is updated and
//! the SFU re-checks what the member publishes (a revoked permission withdraws the track, a
//! restored one publishes it again).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use hum_proto::signal::Permissions;
use hum_proto::{ChannelId, UserId};
use hum_sfu::session::SessionEvent;
use hum_sfu::{SessionConfig, SfuEvent, SfuServer};
use tokio::sync::mpsc;

use crate::hub::{Hub, SfuCmd};
use crate::metrics::Metrics;
use crate::server::HubCmd;

type PermissionMap = Arc<Mutex<HashMap<(ChannelId, UserId), Permissions>>>;

/// The SFU and the way back to the hub.
pub(crate) struct SfuLink {
    sfu: Arc<SfuServer>,
    perms: PermissionMap,
    hub_tx: mpsc::Sender<HubCmd>,
    metrics: Arc<Metrics>,
    rt: tokio::runtime::Handle,
}

impl SfuLink {
    /// Binds the SFU's UDP socket and starts forwarding its events to the hub.
    pub(crate) async fn start(
        bind: SocketAddr,
        public: Option<SocketAddr>,
        hub_tx: mpsc::Sender<HubCmd>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<SfuLink> {
        let perms: PermissionMap = Arc::default();
        let hook_perms = perms.clone();
        let hook = move |room: ChannelId, who: UserId| {
            hook_perms
                .lock()
                .ok()
                .and_then(|m| m.get(&(room, who)).copied())
                .unwrap_or(Permissions {
                    join: true,
                    speak: false,
                    video: false,
                    stream: false,
                })
        };
        let (sfu, mut events) = SfuServer::bind(bind, public, SessionConfig::default(), hook)
            .await
            .with_context(|| format!("binding the SFU's UDP socket on {bind} (--sfu-bind)"))?;
        let tx = hub_tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if tx.send(HubCmd::SfuEvent(ev)).await.is_err() {
                    return;
                }
            }
        });
        tracing::info!(
            addr = %sfu.local_addr(),
            public = ?public,
            "SFU ready (UDP)"
        );
        Ok(SfuLink {
            sfu: Arc::new(sfu),
            perms,
            hub_tx,
            metrics,
            rt: tokio::runtime::Handle::current(),
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.sfu.local_addr()
    }

    /// Carries out one command from the hub (called on the hub thread; never blocks).
    pub(crate) fn exec(&self, cmd: SfuCmd) {
        let (sfu, tx) = (self.sfu.clone(), self.hub_tx.clone());
        match cmd {
            SfuCmd::Join {
                conn,
                re,
                channel,
                user,
                sdp,
                permissions,
            } => {
                if let Ok(mut m) = self.perms.lock() {
                    m.retain(|(_, u), _| *u != user);
                    m.insert((channel, user), permissions);
                }
                self.rt.spawn(async move {
                    // A member joining again (after an ICE failure) replaces its connection.
                    sfu.leave(user);
                    let result = sfu
                        .join(channel, user, sdp)
                        .await
                        .map(Some)
                        .map_err(|e| e.to_string());
                    let _ = tx
                        .send(HubCmd::SfuDone {
                            conn,
                            re,
                            user,
                            joining: true,
                            result,
                        })
                        .await;
                });
            }
            SfuCmd::Offer {
                conn,
                re,
                user,
                sdp,
            } => {
                self.rt.spawn(async move {
                    let result = sfu
                        .offer(user, sdp)
                        .await
                        .map(Some)
                        .map_err(|e| e.to_string());
                    let _ = tx
                        .send(HubCmd::SfuDone {
                            conn,
                            re,
                            user,
                            joining: false,
                            result,
                        })
                        .await;
                });
            }
            SfuCmd::Answer {
                conn,
                re,
                user,
                sdp,
            } => {
                self.rt.spawn(async move {
                    let result = sfu
                        .answer(user, sdp)
                        .await
                        .map(|()| None)
                        .map_err(|e| e.to_string());
                    let _ = tx
                        .send(HubCmd::SfuDone {
                            conn,
                            re,
                            user,
                            joining: false,
                            result,
                        })
                        .await;
                });
            }
            SfuCmd::Quality {
                conn,
                re,
                user,
                owner,
                quality,
            } => {
                use hum_proto::signal::VideoQuality;
                use hum_sfu::packet::layer::Quality;
                let q = match quality {
                    VideoQuality::Auto => None,
                    VideoQuality::High => Some(Quality::High),
                    VideoQuality::Medium => Some(Quality::Medium),
                    VideoQuality::Low => Some(Quality::Low),
                    VideoQuality::Off => Some(Quality::Paused),
                };
                self.rt.spawn(async move {
                    let result = sfu
                        .set_quality_of(user, owner, q)
                        .await
                        .map(|_| None)
                        .map_err(|e| e.to_string());
                    let _ = tx
                        .send(HubCmd::SfuDone {
                            conn,
                            re,
                            user,
                            joining: false,
                            result,
                        })
                        .await;
                });
            }
            SfuCmd::Permissions {
                channel,
                user,
                permissions,
            } => {
                if let Ok(mut m) = self.perms.lock() {
                    m.insert((channel, user), permissions);
                }
                self.sfu.recheck_permissions(user);
            }
            SfuCmd::Leave { user } => {
                if let Ok(mut m) = self.perms.lock() {
                    m.retain(|(_, u), _| *u != user);
                }
                self.sfu.leave(user);
            }
        }
    }

    /// Copies the SFU's counters into the relay's metrics (once a second, off the hub thread).
    pub(crate) fn refresh_metrics(&self) {
        let (sfu, metrics) = (self.sfu.clone(), self.metrics.clone());
        self.rt.spawn(async move {
            if let Ok(m) = sfu.metrics().await
                && let Ok(mut slot) = metrics.sfu.lock()
            {
                *slot = Some(m);
            }
        });
    }
}

/// An SFU event, applied to the hub (on the hub thread).
pub(crate) fn on_event(hub: &mut Hub, ev: SfuEvent) {
    match ev {
        SfuEvent::Offer { who, sdp } => hub.sfu_offer(who, sdp),
        SfuEvent::Disconnected { who } => hub.sfu_disconnected(who),
        SfuEvent::LayersWanted { who, track, rids } => hub.sfu_layers(who, track, rids),
        SfuEvent::VideoPaused {
            who,
            owner,
            track,
            paused,
        } => hub.sfu_paused(who, owner, track, paused),
        SfuEvent::Session(SessionEvent::SpeakerChanged { room, who }) => hub.sfu_speaker(room, who),
        SfuEvent::Session(_) => {}
    }
}
