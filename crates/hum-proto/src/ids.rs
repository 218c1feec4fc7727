//! Identifiers as newtypes, so a `ServerId` is never passed where a `ChannelId` was meant.
//!
//! On the wire:
//! - [`UserId`] is the user's Ed25519 public key, 64 lowercase hex characters. The key *is* the
//!   account: there is no other user identifier and no password.
//! - [`ServerId`], [`ChannelId`] and [`CallId`] are positive integers chosen by the relay
//!   (always below 2^53, so JavaScript numbers hold them exactly).
//! - [`RequestId`] is chosen by the client to correlate a reply with its request.
//! - [`InviteCode`] is a short case-sensitive string of letters and digits.
//! - [`Nonce`] and [`Signature`] are fixed-size byte strings in lowercase hex.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a textual id did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("expected {expected} lowercase hex characters, got {got} characters")]
    HexLength { expected: usize, got: usize },
    #[error("not lowercase hex")]
    NotHex,
    #[error("invite code must be {min}-{max} letters or digits")]
    InviteCode { min: usize, max: usize },
}

/// Fixed-size byte strings carried as lowercase hex.
macro_rules! hex_bytes {
    ($(#[$meta:meta])* $name:ident, $len:expr, $schema_name:literal, $desc:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;

            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                $name(bytes)
            }
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                if s.len() != $len * 2 {
                    return Err(IdError::HexLength { expected: $len * 2, got: s.len() });
                }
                // Lowercase only, so one key has exactly one spelling (it is also a map key).
                if !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                    return Err(IdError::NotHex);
                }
                let mut out = [0u8; $len];
                hex::decode_to_slice(s, &mut out).map_err(|_| IdError::NotHex)?;
                Ok($name(out))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Short form: enough to tell keys apart in logs.
                write!(f, "{}({}…)", stringify!($name), &self.to_hex()[..8])
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                $schema_name.into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    // Two hex characters per byte (this once said `{32}` for 32 bytes, which no
                    // real key matched: the schema test validates real frames now).
                    "pattern": format!("^[0-9a-f]{{{}}}$", $len * 2),
                    "minLength": $len * 2,
                    "maxLength": $len * 2,
                    "description": $desc,
                })
            }
        }
    };
}

hex_bytes!(
    /// A user: their Ed25519 public key (32 bytes).
    UserId,
    32,
    "UserId",
    "A user's Ed25519 public key: 32 bytes as 64 lowercase hex characters."
);
hex_bytes!(
    /// The login challenge the relay sends (32 random bytes).
    Nonce,
    32,
    "Nonce",
    "A 32-byte random challenge as 64 lowercase hex characters."
);
hex_bytes!(
    /// An Ed25519 signature (64 bytes).
    Signature,
    64,
    "Signature",
    "An Ed25519 signature: 64 bytes as 128 lowercase hex characters."
);

hex_bytes!(
    /// An end-to-end media key sealed for one member (the `e2ee_key` signal, docs/e2ee.md): one
    /// SFrame header byte, the 32-byte key encrypted with AES-GCM and the 16-byte tag.
    SealedMediaKey,
    49,
    "SealedMediaKey",
    "A media key sealed for one member (SFrame header, AES-GCM ciphertext, tag): 49 bytes as 98 lowercase hex characters."
);

/// Integer ids chosen by the relay (or, for requests, by the client).
macro_rules! int_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl From<u64> for $name {
            fn from(v: u64) -> Self {
                $name(v)
            }
        }
    };
}

int_id!(
    /// A server (community). Assigned by the relay, stable across restarts.
    ServerId
);
int_id!(
    /// A voice channel. Unique across all servers, stable across restarts.
    ChannelId
);
int_id!(
    /// A 1-on-1 call. Assigned by the relay; lives only while the call does.
    CallId
);
int_id!(
    /// Chosen by the client, echoed in the reply as `re`. Unique per connection is enough.
    RequestId
);
int_id!(
    /// A live stream. Assigned by the relay; lives only while the stream does.
    StreamId
);

/// An invite code to a server: 6 to 32 ASCII letters or digits, case-sensitive.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InviteCode(String);

impl InviteCode {
    pub const MIN_LEN: usize = 6;
    pub const MAX_LEN: usize = 32;

    pub fn new(code: impl Into<String>) -> Result<Self, IdError> {
        let code = code.into();
        let ok = (Self::MIN_LEN..=Self::MAX_LEN).contains(&code.len())
            && code.bytes().all(|b| b.is_ascii_alphanumeric());
        if ok {
            Ok(InviteCode(code))
        } else {
            Err(IdError::InviteCode {
                min: Self::MIN_LEN,
                max: Self::MAX_LEN,
            })
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InviteCode {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        InviteCode::new(s)
    }
}

impl From<InviteCode> for String {
    fn from(c: InviteCode) -> String {
        c.0
    }
}

impl fmt::Display for InviteCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for InviteCode {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        InviteCode::new(s)
    }
}

impl JsonSchema for InviteCode {
    fn schema_name() -> Cow<'static, str> {
        "InviteCode".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[A-Za-z0-9]{6,32}$",
            "description": "An invite code: 6-32 ASCII letters or digits, case-sensitive.",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_round_trips_as_lowercase_hex() {
        let id = UserId([0xab; 32]);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<UserId>(&json).unwrap(), id);
    }

    #[test]
    fn user_id_rejects_bad_text() {
        assert!(serde_json::from_str::<UserId>("\"abcd\"").is_err());
        assert!(serde_json::from_str::<UserId>(&format!("\"{}\"", "AB".repeat(32))).is_err());
        assert!(serde_json::from_str::<UserId>(&format!("\"{}\"", "zz".repeat(32))).is_err());
        assert!(serde_json::from_str::<UserId>("42").is_err());
        // Multi-byte characters must not panic the length check.
        assert!(format!("{}é", "a".repeat(62)).parse::<UserId>().is_err());
    }

    #[test]
    fn signature_is_128_hex_chars() {
        let sig = Signature([7; 64]);
        assert_eq!(sig.to_hex().len(), 128);
        assert_eq!(sig.to_hex().parse::<Signature>().unwrap(), sig);
    }

    #[test]
    fn invite_codes_are_validated() {
        assert!(InviteCode::new("abc123XY").is_ok());
        assert!(InviteCode::new("short").is_err());
        assert!(InviteCode::new("has space1").is_err());
        assert!(InviteCode::new("x".repeat(33)).is_err());
        assert!(serde_json::from_str::<InviteCode>("\"bad-code!\"").is_err());
    }

    #[test]
    fn integer_ids_are_plain_numbers() {
        assert_eq!(serde_json::to_string(&ChannelId(12)).unwrap(), "12");
        assert_eq!(serde_json::from_str::<ServerId>("3").unwrap(), ServerId(3));
        assert!(serde_json::from_str::<ServerId>("-3").is_err());
    }
}
