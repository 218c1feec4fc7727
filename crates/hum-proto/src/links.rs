//! `hum://` links: what a "copy my friend link" button puts on the clipboard and what the desktop
//! opens when someone clicks one (the app registers the `hum` scheme).
//!
//! ```text
//! hum://friend/KEY        befriend the account KEY (64 lowercase hex characters)
//! hum://friend/@handle    befriend whoever holds that handle on your relay (looked up first)
//! hum://invite/CODE       join the server the invite code points at
//! ```
//!
//! A friend link carries the key, not the handle, when it can: the key is the account and never
//! changes, while a handle can be given up and taken by someone else. The parser is for outside
//! bytes (a clipboard, a command line, the OS handing over a URL): bounded, never panics, and
//! refuses anything it does not fully understand (extra path segments, queries, other schemes).

use std::fmt;

use crate::ids::{InviteCode, UserId};
use crate::signal::Handle;

/// The URL scheme.
pub const SCHEME: &str = "hum";
/// Longest link accepted, in bytes (the longest valid one is ~80).
pub const MAX_LINK_BYTES: usize = 512;

/// A parsed `hum://` link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HumLink {
    Friend(UserId),
    FriendHandle(Handle),
    Invite(InviteCode),
}

/// Why a link did not parse. The message says what a valid one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("a link is at most {MAX_LINK_BYTES} bytes")]
    TooLong,
    #[error(
        "not a hum:// link (expected hum://friend/KEY, hum://friend/@handle or hum://invite/CODE)"
    )]
    Scheme,
    #[error("unknown hum:// link kind `{0}` (expected friend or invite)")]
    Kind(String),
    #[error("the link has no {0}")]
    Missing(&'static str),
    #[error(
        "the link has more after its {0} (queries, fragments and extra segments are not allowed)"
    )]
    Trailing(&'static str),
    #[error("not a valid account key: {0}")]
    Key(String),
    #[error("not a valid handle: {0}")]
    Handle(String),
    #[error("not a valid invite code: {0}")]
    Invite(String),
}

impl HumLink {
    /// Parse `hum://kind/value` (the scheme is case-insensitive, as in URLs; surrounding
    /// whitespace is ignored; one trailing `/` is allowed, as some launchers add it).
    pub fn parse(s: &str) -> Result<HumLink, LinkError> {
        if s.len() > MAX_LINK_BYTES {
            return Err(LinkError::TooLong);
        }
        let s = s.trim();
        let rest = s
            .split_once("://")
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(SCHEME))
            .map(|(_, rest)| rest)
            .ok_or(LinkError::Scheme)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (kind, value) = rest.split_once('/').unwrap_or((rest, ""));
        let (what, value) = match kind {
            "friend" => ("account key", value),
            "invite" => ("invite code", value),
            other => return Err(LinkError::Kind(other.chars().take(32).collect())),
        };
        if value.is_empty() {
            return Err(LinkError::Missing(what));
        }
        if value.contains(['/', '?', '#']) {
            return Err(LinkError::Trailing(what));
        }
        match kind {
            "invite" => InviteCode::new(value)
                .map(HumLink::Invite)
                .map_err(|e| LinkError::Invite(e.to_string())),
            _ => match value.strip_prefix('@') {
                Some(h) => Handle::new(
                    percent_decode(h)
                        .ok_or_else(|| LinkError::Handle("bad percent-encoding".to_owned()))?,
                )
                .map(HumLink::FriendHandle)
                .map_err(|e| LinkError::Handle(e.to_string())),
                None => value
                    .to_ascii_lowercase()
                    .parse()
                    .map(HumLink::Friend)
                    .map_err(|e: crate::ids::IdError| LinkError::Key(e.to_string())),
            },
        }
    }
}

/// Someone to befriend, as a person types or pastes them: `@handle`, a `hum://friend/...` link or a
/// bare public key. A handle still has to be looked up on the relay (`handle_lookup`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PersonRef {
    Key(UserId),
    Handle(Handle),
}

/// Why typed or pasted text is not a person or not an invite.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("that is an invite link: open it (or paste it under Join a server) to join the server")]
    InviteNotPerson,
    #[error("that is a friend link, not an invite")]
    PersonNotInvite,
    #[error("not a valid handle: {0}")]
    Handle(String),
    #[error("expected @handle, a hum://friend/ link or a public key (64 hexadecimal characters)")]
    NotPerson,
    #[error("not a valid invite code: {0}")]
    Invite(String),
}

impl PersonRef {
    /// `@handle`, `hum://friend/KEY`, `hum://friend/@handle` or `KEY` (any case, whitespace
    /// around it ignored).
    pub fn parse(spec: &str) -> Result<PersonRef, SpecError> {
        if spec.len() > MAX_LINK_BYTES {
            return Err(LinkError::TooLong.into());
        }
        let spec = spec.trim();
        if let Some(h) = spec.strip_prefix('@') {
            return Handle::new(h)
                .map(PersonRef::Handle)
                .map_err(|e| SpecError::Handle(e.to_string()));
        }
        if spec.contains("://") {
            return match HumLink::parse(spec)? {
                HumLink::Friend(k) => Ok(PersonRef::Key(k)),
                HumLink::FriendHandle(h) => Ok(PersonRef::Handle(h)),
                HumLink::Invite(_) => Err(SpecError::InviteNotPerson),
            };
        }
        spec.to_ascii_lowercase()
            .parse()
            .map(PersonRef::Key)
            .map_err(|_| SpecError::NotPerson)
    }
}

/// An invite code as typed, or a `hum://invite/CODE` link.
pub fn parse_invite(spec: &str) -> Result<InviteCode, SpecError> {
    if spec.len() > MAX_LINK_BYTES {
        return Err(LinkError::TooLong.into());
    }
    let spec = spec.trim();
    if spec.contains("://") {
        return match HumLink::parse(spec)? {
            HumLink::Invite(code) => Ok(code),
            _ => Err(SpecError::PersonNotInvite),
        };
    }
    InviteCode::new(spec).map_err(|e| SpecError::Invite(e.to_string()))
}

/// `%XX` escapes to bytes, then UTF-8 (a browser hands `hum://friend/@zoë` over as `@zo%C3%AB`).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The canonical text of a link (non-ASCII handles are percent-encoded, so the link survives
/// any launcher).
impl fmt::Display for HumLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HumLink::Friend(k) => write!(f, "{SCHEME}://friend/{}", k.to_hex()),
            HumLink::FriendHandle(h) => {
                write!(f, "{SCHEME}://friend/@")?;
                for b in h.as_str().bytes() {
                    if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
                        write!(f, "{}", b as char)?;
                    } else {
                        write!(f, "%{b:02X}")?;
                    }
                }
                Ok(())
            }
            HumLink::Invite(c) => write!(f, "{SCHEME}://invite/{}", c.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> UserId {
        UserId([0xab; 32])
    }

    #[test]
    fn links_round_trip() {
        let links = [
            HumLink::Friend(key()),
            HumLink::FriendHandle(Handle::new("ada").unwrap()),
            HumLink::FriendHandle(Handle::new("zoë").unwrap()),
            HumLink::Invite(InviteCode::new("Ab12Cd34").unwrap()),
        ];
        for l in links {
            let text = l.to_string();
            assert!(text.is_ascii(), "{text}");
            assert_eq!(HumLink::parse(&text), Ok(l), "{text}");
        }
        assert_eq!(
            HumLink::Friend(key()).to_string(),
            format!("hum://friend/{}", "ab".repeat(32))
        );
        assert_eq!(
            HumLink::FriendHandle(Handle::new("zoë").unwrap()).to_string(),
            "hum://friend/@zo%C3%AB"
        );
    }

    #[test]
    fn what_people_paste_is_accepted() {
        let k = "AB".repeat(32);
        assert_eq!(
            HumLink::parse(&format!("  HUM://friend/{k}/\n")),
            Ok(HumLink::Friend(key()))
        );
        assert_eq!(
            HumLink::parse("hum://friend/@Ada"),
            Ok(HumLink::FriendHandle(Handle::new("Ada").unwrap()))
        );
    }

    #[test]
    fn people_and_invites_as_typed() {
        let k = "AB".repeat(32);
        assert_eq!(
            PersonRef::parse(&format!(" {k} ")),
            Ok(PersonRef::Key(key()))
        );
        assert_eq!(
            PersonRef::parse(&format!("hum://friend/{k}")),
            Ok(PersonRef::Key(key()))
        );
        let ada = PersonRef::Handle(Handle::new("ada").unwrap());
        assert_eq!(PersonRef::parse("@ada"), Ok(ada.clone()));
        assert_eq!(PersonRef::parse("hum://friend/@ada"), Ok(ada));
        assert_eq!(
            PersonRef::parse("hum://invite/Ab12Cd34"),
            Err(SpecError::InviteNotPerson)
        );
        assert_eq!(PersonRef::parse("ada"), Err(SpecError::NotPerson));
        assert!(matches!(PersonRef::parse("@"), Err(SpecError::Handle(_))));
        assert!(matches!(
            PersonRef::parse("hum://friend/zz"),
            Err(SpecError::Link(LinkError::Key(_)))
        ));
        let code = InviteCode::new("Ab12Cd34").unwrap();
        assert_eq!(parse_invite(" Ab12Cd34\n"), Ok(code.clone()));
        assert_eq!(parse_invite("hum://invite/Ab12Cd34"), Ok(code));
        assert_eq!(
            parse_invite(&format!("hum://friend/{k}")),
            Err(SpecError::PersonNotInvite)
        );
        assert!(matches!(parse_invite("a!"), Err(SpecError::Invite(_))));
        assert!(matches!(
            parse_invite(&"x".repeat(MAX_LINK_BYTES + 1)),
            Err(SpecError::Link(LinkError::TooLong))
        ));
    }

    #[test]
    fn everything_else_is_refused() {
        let k = "ab".repeat(32);
        for (bad, want) in [
            ("https://friend/x", LinkError::Scheme),
            ("hum:friend/x", LinkError::Scheme),
            ("", LinkError::Scheme),
            ("hum://", LinkError::Kind(String::new())),
            ("hum://server/1", LinkError::Kind("server".into())),
            ("hum://friend", LinkError::Missing("account key")),
            ("hum://friend/", LinkError::Missing("account key")),
            ("hum://invite//", LinkError::Missing("invite code")),
        ] {
            assert_eq!(HumLink::parse(bad), Err(want), "{bad:?}");
        }
        for bad in [
            format!("hum://friend/{k}/x"),
            format!("hum://friend/{k}?a=b"),
            "hum://invite/abcdef#x".to_owned(),
        ] {
            assert!(
                matches!(HumLink::parse(&bad), Err(LinkError::Trailing(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            HumLink::parse("hum://friend/abc"),
            Err(LinkError::Key(_))
        ));
        assert!(matches!(
            HumLink::parse("hum://friend/@a b"),
            Err(LinkError::Handle(_))
        ));
        assert!(matches!(
            HumLink::parse("hum://friend/@%ZZ"),
            Err(LinkError::Handle(_))
        ));
        assert!(matches!(
            HumLink::parse("hum://friend/@%C3"),
            Err(LinkError::Handle(_))
        ));
        assert!(matches!(
            HumLink::parse("hum://invite/a!"),
            Err(LinkError::Invite(_))
        ));
        assert_eq!(
            HumLink::parse(&"x".repeat(MAX_LINK_BYTES + 1)),
            Err(LinkError::TooLong)
        );
    }
}
