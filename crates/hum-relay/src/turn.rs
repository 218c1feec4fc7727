//! Time-limited TURN credentials in coturn's shared-secret scheme ("TURN REST API",
//! draft-uberti-behave-turn-rest; coturn's `use-auth-secret` + `static-auth-secret`).
//!
//! The relay and the TURN server share a secret and never talk to each other: the relay signs
//! `username = "<expiry unix seconds>:<user id>"` with HMAC-SHA1 and hands out the base64 digest
//! as the password; the TURN server recomputes it and refuses usernames whose time has passed.
//! Pure functions of (secret, user, now): the hub calls them at login and on `turn_credentials`.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use hum_proto::UserId;
use hum_proto::signal::TurnServer;
use sha1::Sha1;

/// The relay's TURN settings (`--turn-url`, `--turn-secret`, `--turn-ttl`).
#[derive(Clone)]
pub struct TurnConfig {
    /// `turn:host:port?transport=udp` URLs handed to clients.
    pub urls: Vec<String>,
    /// Shared with the TURN server (coturn `static-auth-secret`).
    pub secret: String,
    /// How long credentials stay valid.
    pub ttl_secs: u64,
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never log the secret.
        f.debug_struct("TurnConfig")
            .field("urls", &self.urls)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

/// Default lifetime of handed-out credentials: long enough for a long call (an allocation is
/// refreshed with the same username), short enough that a leaked one soon stops working.
pub const DEFAULT_TTL_SECS: u64 = 12 * 3600;

impl TurnConfig {
    /// Credentials for `user`, valid until `now_secs + ttl`.
    pub fn credentials(&self, user: &UserId, now_secs: u64) -> TurnServer {
        let expires_at = now_secs.saturating_add(self.ttl_secs);
        let username = format!("{expires_at}:{user}");
        TurnServer {
            urls: self.urls.clone(),
            credential: rest_password(&self.secret, &username),
            username,
            expires_at,
        }
    }
}

/// base64(HMAC-SHA1(secret, username)), as coturn computes it.
pub fn rest_password(secret: &str, username: &str) -> String {
    // HMAC accepts keys of any length: this cannot fail.
    let mut mac = match Hmac::<Sha1>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_rest_api_reference_value() {
        // RFC 2202 test case 2 (HMAC-SHA1, key "Jefe"), base64 of
        // effcdf6ae5eb2fa2d27416d5f184df9c259a7c79.
        assert_eq!(
            rest_password("Jefe", "what do ya want for nothing?"),
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
    }

    #[test]
    fn credentials_name_the_user_and_expiry() {
        let cfg = TurnConfig {
            urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
            secret: "s3cret".into(),
            ttl_secs: 600,
        };
        let user = UserId([0xa1; 32]);
        let c = cfg.credentials(&user, 1_000);
        assert_eq!(c.expires_at, 1_600);
        assert_eq!(c.username, format!("1600:{user}"));
        assert_eq!(c.credential, rest_password("s3cret", &c.username));
        assert_ne!(c.credential, rest_password("other", &c.username));
    }
}
