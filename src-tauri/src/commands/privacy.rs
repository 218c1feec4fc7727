//! Privacy switches (issue 16): "Hide my IP" (media only through the relay's TURN server) and
//! end-to-end encryption of voice channels on the SFU (SFrame). Both persist in the settings
//! store; both take effect at the next join or call. While in a channel this keeps the running
//! key exchange (hum-engine `e2ee`), the keys it holds and the path media takes per member, for the
//! stage's badges and the safety-number screen. Design: docs/e2ee.md, docs/security.md.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hum_engine::RelayClient;
use hum_engine::e2ee::{E2eeChannel, E2eeEvent};
use hum_engine::ice::{IceConfig, IceError};
use hum_engine::voice::VoiceConfig;
use hum_proto::{ChannelId, UserId};
use serde::{Deserialize, Serialize};
use specta::Type;
use tauri::{AppHandle, State};
use tauri_specta::Event;

use crate::error::{CmdResult, CommandError, ErrorCode};
use crate::settings_store::{Kv, keys};
use crate::state::AppState;

/// The two switches. Both off for a fresh install: relaying costs latency, and a member with
/// E2EE on does not hear members without it on the SFU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct PrivacySettings {
    /// Media only through TURN: peers, the SFU and the relay's signalling never see my address.
    #[serde(default)]
    pub hide_ip: bool,
    /// SFrame on my channel's media when it runs on the relay's SFU (a mesh is already end to
    /// end): the relay and its SFU forward what they cannot decrypt.
    #[serde(default)]
    pub e2ee: bool,
}

pub fn load(kv: &dyn Kv) -> PrivacySettings {
    kv.get(keys::PRIVACY)
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

pub fn save(kv: &dyn Kv, p: &PrivacySettings) -> CmdResult<()> {
    let v = serde_json::to_value(p).map_err(CommandError::internal)?;
    kv.set(keys::PRIVACY, v)
        .map_err(|e| CommandError::new(ErrorCode::Storage, format!("saving privacy settings: {e}")))
}

#[tauri::command]
#[specta::specta]
pub fn privacy_get(state: State<'_, AppState>) -> PrivacySettings {
    load(state.kv.as_ref())
}

/// Saves the switches; they apply from the next channel join or call.
#[tauri::command]
#[specta::specta]
pub fn privacy_set(
    state: State<'_, AppState>,
    settings: PrivacySettings,
) -> CmdResult<PrivacySettings> {
    save(state.kv.as_ref(), &settings)?;
    Ok(settings)
}

/// What a front end says when "Hide my IP" cannot work on this relay.
pub const NO_TURN: &str = "\"Hide my IP\" needs a TURN server to relay your media, and this relay \
     offers none. Turn \"Hide my IP\" off in Settings → Privacy, or ask the relay's admin to set \
     one up (hum-relay --turn-url/--turn-secret; HUM_TURN=1 scripts/run starts one).";

/// The ICE settings of every peer connection (calls, channels, stream meshes): the relay's TURN
/// server (so a strict NAT still connects) and, with "Hide my IP", media through it only.
pub async fn ice_config(kv: &dyn Kv, relay: &RelayClient) -> CmdResult<IceConfig> {
    IceConfig::from_relay(relay, load(kv).hide_ip)
        .await
        .map_err(|e| match e {
            IceError::NoTurnServer => CommandError::new(ErrorCode::Rejected, NO_TURN),
            e => CommandError::new(ErrorCode::RelayUnavailable, e.to_string()),
        })
}

/// The voice settings of a channel or call ([`ice_config`]).
pub async fn voice_config(kv: &dyn Kv, relay: &RelayClient) -> CmdResult<VoiceConfig> {
    let mut cfg = VoiceConfig::default();
    cfg.use_ice(ice_config(kv, relay).await?);
    Ok(cfg)
}

/// The running channel's privacy state.
#[derive(Default)]
pub struct PrivacyRuntime {
    inner: Mutex<Option<Running>>,
}

struct Running {
    channel: ChannelId,
    hide_ip: bool,
    e2ee: Option<E2eeChannel>,
    /// Members whose key was refused, with why (a relay or member misbehaving).
    refused_keys: Arc<Mutex<BTreeMap<UserId, String>>>,
    /// Per member: relayed through TURN (true) or direct, from the selected candidate pair.
    routes: BTreeMap<UserId, bool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The key exchange or the route of someone changed: the stage refetches `privacy_status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Type, Event)]
pub struct PrivacyChanged {}

impl PrivacyRuntime {
    /// Before joining `channel`: starts the key exchange when E2EE is on (it must see the
    /// others' keys that arrive right after the join) and returns the frame transform for the
    /// channel's voice settings.
    pub fn start(
        &self,
        app: &AppHandle,
        state: &AppState,
        relay: &RelayClient,
        channel: ChannelId,
        cfg: &mut VoiceConfig,
    ) -> CmdResult<()> {
        let p = load(state.kv.as_ref());
        let refused_keys = Arc::new(Mutex::new(BTreeMap::new()));
        let e2ee = if p.e2ee {
            let keys = state.identity()?.e2ee_keys();
            let (e2ee, mut events) = E2eeChannel::start(relay.clone(), keys, channel)
                .map_err(|e| CommandError::internal(format!("end-to-end encryption: {e}")))?;
            cfg.frame_transform = Some(e2ee.transform());
            let (app, refused) = (app.clone(), refused_keys.clone());
            tauri::async_runtime::spawn(async move {
                while let Some(ev) = events.recv().await {
                    if let E2eeEvent::KeyRefused { from, reason } = ev {
                        lock(&refused).insert(from, reason);
                    }
                    let _ = PrivacyChanged {}.emit(&app);
                }
            });
            Some(e2ee)
        } else {
            None
        };
        *lock(&self.inner) = Some(Running {
            channel,
            hide_ip: cfg.relay_only,
            e2ee,
            refused_keys,
            routes: BTreeMap::new(),
        });
        Ok(())
    }

    /// The channel's media to `user` takes this path now.
    pub fn route(&self, user: UserId, relayed: bool) {
        if let Some(r) = lock(&self.inner).as_mut() {
            r.routes.insert(user, relayed);
        }
    }

    /// Left the channel: the key exchange stops.
    pub fn stop(&self) {
        *lock(&self.inner) = None;
    }

    fn status(&self, me: Option<UserId>) -> PrivacyStatus {
        let g = lock(&self.inner);
        let Some(r) = g.as_ref() else {
            return PrivacyStatus::default();
        };
        let refused = lock(&r.refused_keys).clone();
        let mut members: BTreeMap<UserId, MemberPrivacy> = BTreeMap::new();
        fn entry(
            members: &mut BTreeMap<UserId, MemberPrivacy>,
            me: Option<UserId>,
            u: UserId,
        ) -> &mut MemberPrivacy {
            members.entry(u).or_insert_with(|| MemberPrivacy {
                user_id: u.to_string(),
                safety_number: me.map(|me| hum_engine::e2ee::safety_number(&me, &u)),
                ..MemberPrivacy::default()
            })
        }
        if let Some(e) = &r.e2ee {
            for (u, epoch) in e.keys_held() {
                entry(&mut members, me, u).key_epoch = Some(epoch);
            }
        }
        for (u, why) in refused {
            entry(&mut members, me, u).key_refused = Some(why);
        }
        for (u, relayed) in &r.routes {
            entry(&mut members, me, *u).relayed = Some(*relayed);
        }
        PrivacyStatus {
            channel: Some(r.channel.0),
            hide_ip: r.hide_ip,
            e2ee: r.e2ee.is_some(),
            epoch: r.e2ee.as_ref().map(E2eeChannel::sending_epoch),
            decrypted_frames: r.e2ee.as_ref().map_or(0, E2eeChannel::decrypted_frames),
            refused_frames: r.e2ee.as_ref().map_or(0, E2eeChannel::refused_frames),
            members: members.into_values().collect(),
        }
    }
}

/// One other member, as far as privacy goes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Type)]
pub struct MemberPrivacy {
    pub user_id: String,
    /// The epoch of their media key we hold; none: we cannot decrypt them (no E2EE on their
    /// side, or their key has not arrived).
    pub key_epoch: Option<u32>,
    /// Their key arrived but was refused (altered, not for us, bad signature): why.
    pub key_refused: Option<String>,
    /// Media to them goes through TURN (true) or directly (false); none: not connected yet.
    pub relayed: Option<bool>,
    /// 60 digits both of us see the same when nobody swapped a key (hum_e2ee::safety_number).
    pub safety_number: Option<String>,
}

/// The running channel's privacy: what the stage badges and the safety-number screen show.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Type)]
pub struct PrivacyStatus {
    /// The channel this is about; none when not in one.
    pub channel: Option<u64>,
    /// Joined with "Hide my IP" (media through TURN only).
    pub hide_ip: bool,
    /// Joined with end-to-end encryption on.
    pub e2ee: bool,
    /// The epoch of the key I encrypt with now (it changes when someone leaves).
    pub epoch: Option<u32>,
    pub decrypted_frames: u64,
    /// Frames that did not decrypt (from members without E2EE, altered, replayed).
    pub refused_frames: u64,
    /// Other members I hold a key of, or a route to (the UI adds those of the roster it has).
    pub members: Vec<MemberPrivacy>,
}

#[tauri::command]
#[specta::specta]
pub fn privacy_status(state: State<'_, AppState>) -> PrivacyStatus {
    let me = state.identity().ok().map(|i| i.user_id());
    state.privacy.status(me)
}

/// The safety number I share with `user_id` (the same on their screen when no key was swapped).
#[tauri::command]
#[specta::specta]
pub fn safety_number(state: State<'_, AppState>, user_id: String) -> CmdResult<String> {
    let me = state.identity()?.user_id();
    let them = super::friends::parse_user(&user_id)?;
    Ok(hum_engine::e2ee::safety_number(&me, &them))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings_store::MemoryKv;

    #[test]
    fn switches_persist_and_default_off() {
        let kv = MemoryKv::default();
        assert_eq!(load(&kv), PrivacySettings::default());
        let on = PrivacySettings {
            hide_ip: true,
            e2ee: true,
        };
        save(&kv, &on).unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(load(&kv), on);
        // Older or damaged records read as off, field by field.
        kv.set(keys::PRIVACY, serde_json::json!({"e2ee": true}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            load(&kv),
            PrivacySettings {
                hide_ip: false,
                e2ee: true
            }
        );
        kv.set(keys::PRIVACY, serde_json::json!("junk"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(load(&kv), PrivacySettings::default());
    }

    #[test]
    fn the_wire_shape_is_pinned() {
        let v = serde_json::to_value(PrivacySettings {
            hide_ip: true,
            e2ee: false,
        })
        .unwrap_or_default();
        assert_eq!(v, serde_json::json!({"hide_ip": true, "e2ee": false}));
        let s = PrivacyRuntime::default().status(None);
        assert_eq!(s, PrivacyStatus::default());
    }
}
