//! The nouns that requests, replies and events share: names, roles, permissions, voice state,
//! presence, and the summaries of users, servers and channels.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::ids::{ChannelId, InviteCode, ServerId, UserId};

pub use crate::names::NameError;

macro_rules! name_type {
    ($(#[$meta:meta])* $name:ident, $max:expr, $schema_name:literal) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Longest allowed, in Unicode scalar values.
            pub const MAX_CHARS: usize = $max;

            /// Normalised to NFC and checked by [`crate::names::normalize_name`].
            pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
                let s = s.into();
                crate::names::normalize_name(&s, $max).map($name)
            }
            /// A name stored by an older, laxer relay, with what is now refused taken out
            /// ([`crate::names::repair_name`]); `None` if nothing valid is left.
            pub fn repaired(s: &str) -> Option<Self> {
                crate::names::repair_name(s, $max).map($name)
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                $name::new(s)
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                $schema_name.into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "minLength": 1,
                    "maxLength": $max,
                    "description": concat!(
                        "1-", stringify!($max),
                        " characters (Unicode scalar values, NFC); no leading or trailing whitespace; no control, bidirectional-control or invisible format characters; something visible; no word mixing scripts (UTS #39). See docs/protocol.md, Names."
                    ),
                })
            }
        }
    };
}

name_type!(
    /// A user's display name (1-32 characters). Not unique: the [`UserId`] is the identity.
    DisplayName,
    32,
    "DisplayName"
);
name_type!(
    /// The name of a server or a voice channel (1-64 characters).
    Name,
    64,
    "Name"
);

/// A user's handle on a relay, written `@ada` by people and `"ada"` on the wire: unique per relay
/// by [`crate::names::handle_key`] (case and look-alikes folded), chosen and changed by its
/// user; the key ([`UserId`]) stays the account. Rules: [`crate::names::normalize_handle`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Handle(String);

impl Handle {
    pub const MAX_CHARS: usize = crate::names::HANDLE_MAX_CHARS;

    /// Normalised to NFC and checked; no leading `@` (see [`Handle::parse`]).
    pub fn new(s: impl Into<String>) -> Result<Self, crate::names::HandleError> {
        crate::names::normalize_handle(&s.into()).map(Handle)
    }
    /// What a person typed: `@ada` or `ada`.
    pub fn parse(s: &str) -> Result<Self, crate::names::HandleError> {
        Handle::new(crate::names::strip_at(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The uniqueness key ([`crate::names::handle_key`]).
    pub fn key(&self) -> String {
        crate::names::handle_key(&self.0)
    }
}

impl TryFrom<String> for Handle {
    type Error = crate::names::HandleError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Handle::new(s)
    }
}

impl From<Handle> for String {
    fn from(h: Handle) -> String {
        h.0
    }
}

/// `@ada`, as people write it.
impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}", self.0)
    }
}

impl JsonSchema for Handle {
    fn schema_name() -> Cow<'static, str> {
        "Handle".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "minLength": crate::names::HANDLE_MIN_CHARS,
            "maxLength": crate::names::HANDLE_MAX_CHARS,
            "description": "A handle without its @: 2-32 letters and digits (one script, NFC) with single `_`, `.` or `-` between them; unique per relay ignoring case and look-alike characters. See docs/protocol.md, Handles.",
        })
    }
}

/// A user as others see them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UserSummary {
    pub id: UserId,
    pub display_name: DisplayName,
}

/// Online or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Online,
    Offline,
}

/// Where a user is talking, as their friends see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VoiceLocation {
    pub server: ServerId,
    pub server_name: Name,
    pub channel: ChannelId,
    pub channel_name: Name,
}

/// What a friend sees of a user: online or offline, which voice channel they are in (if any),
/// and whether they are in a 1-on-1 call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Presence {
    pub status: Status,
    /// The voice channel the user is in, if any.
    #[serde(default)]
    pub channel: Option<VoiceLocation>,
    /// True while the user is in an accepted 1-on-1 call.
    #[serde(default)]
    pub in_call: bool,
}

impl Presence {
    pub const OFFLINE: Presence = Presence {
        status: Status::Offline,
        channel: None,
        in_call: false,
    };
}

/// A mutual friend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Friend {
    pub user: UserSummary,
    pub presence: Presence,
}

/// A member's role in a server. Ordered: `member < admin < owner`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}

/// What a role may do in a voice channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Permissions {
    /// May join the channel.
    pub join: bool,
    /// May unmute (without it the relay keeps the member muted).
    pub speak: bool,
    /// May send camera video.
    pub video: bool,
    /// May livestream (screen share / broadcast).
    pub stream: bool,
}

impl Permissions {
    pub const ALL: Permissions = Permissions {
        join: true,
        speak: true,
        video: true,
        stream: true,
    };
}

impl Default for Permissions {
    fn default() -> Self {
        Permissions::ALL
    }
}

/// A channel's permissions per role. The owner may always do everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelPermissions {
    pub member: Permissions,
    pub admin: Permissions,
}

impl ChannelPermissions {
    /// Effective permissions for a role.
    pub fn for_role(&self, role: Role) -> Permissions {
        match role {
            Role::Member => self.member,
            Role::Admin => self.admin,
            Role::Owner => Permissions::ALL,
        }
    }
}

/// A participant's voice state in a channel. All false when joining unless given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VoiceState {
    #[serde(default)]
    pub muted: bool,
    #[serde(default)]
    pub deafened: bool,
    #[serde(default)]
    pub speaking: bool,
    #[serde(default)]
    pub video: bool,
    #[serde(default)]
    pub streaming: bool,
}

/// A partial update of [`VoiceState`]: absent fields stay as they are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VoiceStatePatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deafened: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaking: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming: Option<bool>,
}

impl VoiceStatePatch {
    /// The state after this patch.
    pub fn apply(&self, mut s: VoiceState) -> VoiceState {
        if let Some(v) = self.muted {
            s.muted = v;
        }
        if let Some(v) = self.deafened {
            s.deafened = v;
        }
        if let Some(v) = self.speaking {
            s.speaking = v;
        }
        if let Some(v) = self.video {
            s.video = v;
        }
        if let Some(v) = self.streaming {
            s.streaming = v;
        }
        s
    }
}

/// One participant in a voice channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RosterEntry {
    pub user: UserSummary,
    pub voice: VoiceState,
}

/// A persistent voice channel, with who is in it right now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelInfo {
    pub id: ChannelId,
    pub server: ServerId,
    pub name: Name,
    /// Joining when this many are already in gets the `channel_full` error.
    pub max_participants: u32,
    pub permissions: ChannelPermissions,
    /// Who is in the channel now, in join order.
    pub roster: Vec<RosterEntry>,
    /// Mesh or SFU now (as announced by `channel_mode`); `mesh` when absent.
    #[serde(default)]
    pub mode: VoiceTopology,
    /// The admin's mesh limit for this channel (`channel_configure`): the channel moves to the
    /// SFU past this many members (past 6 while a camera is on, whichever is lower). `null`: the
    /// relay's limit (8 unless its operator lowered it).
    #[serde(default)]
    pub mesh_limit: Option<u32>,
}

/// A member of a server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Member {
    pub user: UserSummary,
    pub role: Role,
    pub online: bool,
}

/// A server as listed: enough to show it in a sidebar.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ServerSummary {
    pub id: ServerId,
    pub name: Name,
    pub owner: UserId,
    /// The requesting user's role in it.
    pub role: Role,
}

/// A server: members and channels with their rosters. To a session that sent `subscribe`, a
/// server it does not watch may come as a summary (see `channel_count`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ServerInfo {
    pub id: ServerId,
    pub name: Name,
    pub owner: UserId,
    /// The requesting user's role in it.
    pub role: Role,
    /// All members, or (to a session that sent `subscribe`) the first page of them, or none
    /// in a summary.
    pub members: Vec<Member>,
    /// Every channel, or none in a summary.
    pub channels: Vec<ChannelInfo>,
    /// How many members the server has (absent from older relays: count `members`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_count: Option<u32>,
    /// How many channels the server has (absent from older relays: count `channels`). More
    /// than `channels` holds: this is a summary; `channel_list` gives them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_count: Option<u32>,
}

impl ServerInfo {
    /// Whether `channels` is every channel of the server (false for a summary).
    pub fn has_every_channel(&self) -> bool {
        self.channel_count
            .is_none_or(|n| usize::try_from(n).is_ok_and(|n| n <= self.channels.len()))
    }
}

/// An invite to a server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InviteInfo {
    pub code: InviteCode,
    pub server: ServerId,
    pub server_name: Name,
    /// How many times it has been used.
    pub uses: u32,
    /// `null`: unlimited.
    pub max_uses: Option<u32>,
    /// Unix time in seconds after which it no longer works; `null`: never expires.
    pub expires_at: Option<u64>,
}

/// The relay's limits, sent at login so a client can stay inside them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Limits {
    /// Largest text frame the relay accepts, in bytes.
    pub max_message_bytes: u32,
    /// Sustained requests per second per connection (token bucket refill rate).
    pub rate_per_sec: u32,
    /// Token bucket size: how many requests may be sent at once.
    pub rate_burst: u32,
}

/// How a voice channel carries its audio: a full mesh of peer connections while it is small,
/// or one connection per member to the relay's SFU beyond that. The relay decides (see
/// docs/sfu.md, "Mode switch") and announces it in `joined` and `channel_mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VoiceTopology {
    /// Every member connects to every other one (signalling with `signal`).
    #[default]
    Mesh,
    /// Every member connects once to the SFU (signalling with `sfu_join` / `sfu_answer`).
    Sfu,
}

/// Time-limited credentials for the relay's TURN server (coturn's shared-secret "REST API"
/// scheme: `username` is `<expiry unix seconds>:<user id>`, `credential` the base64 HMAC-SHA1
/// of `username` under the secret coturn and the relay share). Put them in the ICE server
/// list of every peer connection; with "hide my IP" (ICE transport policy `relay`) they are
/// the only way media flows. See docs/security.md.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TurnServer {
    /// `turn:host:port?transport=udp` (and possibly more).
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
    /// Unix time in seconds after which the TURN server refuses them; ask `turn_credentials`
    /// again before that.
    pub expires_at: u64,
}

/// A desktop-client release a relay announces (`client_release`). Checked when the operator's
/// file is loaded ([`ReleaseInfo::validate`]) and again by the client before it shows anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseInfo {
    /// A semantic version, e.g. `0.9.0` (see semver.org; no leading `v`).
    pub version: String,
    /// Where to get it: an `https://` (or `http://`) page; the client shows it and never
    /// downloads it by itself.
    pub url: String,
    /// What changed, plain text, at most [`ReleaseInfo::MAX_NOTES_CHARS`] characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// Why a [`ReleaseInfo`] was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    #[error("the release version {0:?} is not a semantic version like 1.2.3: {1}")]
    Version(String, String),
    #[error("the release url must start with https:// or http:// and be at most 512 characters")]
    Url,
    #[error(
        "the release notes are longer than {} characters",
        ReleaseInfo::MAX_NOTES_CHARS
    )]
    NotesTooLong,
}

impl ReleaseInfo {
    pub const MAX_NOTES_CHARS: usize = 2_000;
    const MAX_URL_CHARS: usize = 512;

    /// The parsed version, or why it is not one.
    pub fn semver(&self) -> Result<semver::Version, ReleaseError> {
        semver::Version::parse(self.version.trim())
            .map_err(|e| ReleaseError::Version(self.version.clone(), e.to_string()))
    }

    /// Every field checked: a semantic version, a web address without spaces or control
    /// characters, notes of bounded length.
    pub fn validate(&self) -> Result<(), ReleaseError> {
        self.semver()?;
        let url = self.url.as_str();
        let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
        let host_ok = url.split("://").nth(1).is_some_and(|rest| !rest.is_empty());
        if !scheme_ok
            || !host_ok
            || url.chars().count() > Self::MAX_URL_CHARS
            || url.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ReleaseError::Url);
        }
        if self
            .notes
            .as_ref()
            .is_some_and(|n| n.chars().count() > Self::MAX_NOTES_CHARS)
        {
            return Err(ReleaseError::NotesTooLong);
        }
        Ok(())
    }

    /// True when this release is newer than `current` (pre-releases count as older than their
    /// release, as semver orders them).
    pub fn is_newer_than(&self, current: &semver::Version) -> Result<bool, ReleaseError> {
        Ok(self.semver()? > *current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(version: &str, url: &str) -> ReleaseInfo {
        ReleaseInfo {
            version: version.into(),
            url: url.into(),
            notes: None,
        }
    }

    #[test]
    fn releases_are_validated_and_compared() {
        let current = semver::Version::parse("0.1.0").unwrap();
        let r = release("0.2.0", "https://example.org/hum");
        assert_eq!(r.validate(), Ok(()));
        assert_eq!(r.is_newer_than(&current), Ok(true));
        assert_eq!(
            release("0.1.0", "https://x").is_newer_than(&current),
            Ok(false)
        );
        assert_eq!(
            release("0.1.0-rc.1", "https://x").is_newer_than(&current),
            Ok(false)
        );
        assert_eq!(
            release("0.0.9", "https://x").is_newer_than(&current),
            Ok(false)
        );
        assert!(matches!(
            release("v1", "https://x").validate(),
            Err(ReleaseError::Version(..))
        ));
        for url in [
            "ftp://x",
            "https://",
            "javascript:alert(1)",
            "https://a b",
            "https://a\n",
        ] {
            assert_eq!(
                release("1.0.0", url).validate(),
                Err(ReleaseError::Url),
                "{url}"
            );
        }
        let mut long = release("1.0.0", "https://x");
        long.notes = Some("n".repeat(ReleaseInfo::MAX_NOTES_CHARS + 1));
        assert_eq!(long.validate(), Err(ReleaseError::NotesTooLong));
    }

    #[test]
    fn names_are_validated() {
        assert!(DisplayName::new("Ada").is_ok());
        assert!(DisplayName::new("").is_err());
        assert!(DisplayName::new(" Ada").is_err());
        assert!(DisplayName::new("A\nda").is_err());
        assert!(DisplayName::new("é".repeat(32)).is_ok());
        assert!(DisplayName::new("é".repeat(33)).is_err());
        assert!(Name::new("x".repeat(64)).is_ok());
        assert!(serde_json::from_str::<Name>("\"\"").is_err());
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Member < Role::Admin && Role::Admin < Role::Owner);
        let p = ChannelPermissions {
            member: Permissions {
                join: true,
                speak: false,
                video: false,
                stream: false,
            },
            admin: Permissions::ALL,
        };
        assert!(!p.for_role(Role::Member).speak);
        assert!(p.for_role(Role::Owner).stream);
    }

    #[test]
    fn voice_patch_changes_only_given_fields() {
        let s = VoiceState {
            muted: true,
            video: true,
            ..Default::default()
        };
        let p: VoiceStatePatch = serde_json::from_str(r#"{"muted":false}"#).unwrap();
        let t = p.apply(s);
        assert!(!t.muted && t.video);
    }
}
