//! The per-connection login handshake, before the hub knows the connection:
//! `hello` (version check) → `challenge` (fresh nonce) → `login` (Ed25519 signature over the
//! domain-separated nonce, bound to the relay name the client dialed) → handed to the hub, which
//! answers `welcome`.
//!
//! Login binding: a relay started with its names (`--login-name`) refuses a login signed for any
//! other name, and the unbound form, so a malicious relay cannot hand our challenge to a user,
//! take their signature and log in here as them (docs/security.md). A relay without names
//! accepts both forms (the signature still has to match the name the client sent).
//!
//! Sans-IO: the nonce's randomness is injected. Signature checks run here, on the connection's
//! task, so thousands of logins verify in parallel instead of queueing in the hub.

use ed25519_dalek::{Signature as DalekSignature, VerifyingKey};
use hum_proto::signal::{
    DisplayName, ErrorCode, MAX_RELAY_NAME, PROTOCOL_VERSION, ProtoError, Reply, Request,
    ServerMessage, bound_login_signing_bytes, login_signing_bytes, same_relay_name,
};
use hum_proto::{Nonce, RequestId, UserId};
use rand::RngCore;
use std::sync::Arc;

/// Where the handshake is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    AwaitHello,
    AwaitLogin { nonce: Nonce },
    LoggedIn,
}

/// What the connection should do with a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Answer directly.
    Answer(ServerMessage),
    /// The signature checked out: hand the session to the hub (which sends `welcome`).
    Login {
        re: RequestId,
        user: UserId,
        display_name: Option<DisplayName>,
    },
    /// Logged in already: pass the request on to the hub.
    Forward,
}

#[derive(Clone, Debug)]
pub struct Handshake {
    phase: Phase,
    relay_name: String,
    /// The names (`host[:port]`) clients reach this relay by; empty: logins are not bound.
    login_names: Arc<[String]>,
}

fn error(re: RequestId, code: ErrorCode, message: &str) -> Step {
    Step::Answer(ServerMessage::error(
        Some(re),
        ProtoError::new(code, message),
    ))
}

impl Handshake {
    pub fn new(relay_name: impl Into<String>, login_names: Arc<[String]>) -> Self {
        Handshake {
            phase: Phase::AwaitHello,
            relay_name: relay_name.into(),
            login_names,
        }
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    pub fn logged_in(&self) -> bool {
        self.phase == Phase::LoggedIn
    }

    pub fn on_request(&mut self, re: RequestId, req: &Request, rng: &mut impl RngCore) -> Step {
        match (&self.phase, req) {
            (Phase::LoggedIn, _) => Step::Forward,
            (Phase::AwaitHello, Request::Hello { protocol, client }) => {
                if *protocol != PROTOCOL_VERSION {
                    let msg = format!(
                        "this relay speaks protocol {PROTOCOL_VERSION}; the client speaks {protocol}"
                    );
                    return Step::Answer(ServerMessage::error(
                        Some(re),
                        ProtoError::new(ErrorCode::UnsupportedVersion, msg),
                    ));
                }
                if client.as_ref().is_some_and(|c| c.chars().count() > 64) {
                    return error(
                        re,
                        ErrorCode::BadRequest,
                        "`client` is limited to 64 characters",
                    );
                }
                let mut bytes = [0u8; 32];
                rng.fill_bytes(&mut bytes);
                let nonce = Nonce(bytes);
                self.phase = Phase::AwaitLogin { nonce };
                Step::Answer(ServerMessage::reply(
                    re,
                    Reply::Challenge {
                        protocol: PROTOCOL_VERSION,
                        nonce,
                        relay: self.relay_name.clone(),
                    },
                ))
            }
            (Phase::AwaitLogin { .. }, Request::Hello { .. }) => error(
                re,
                ErrorCode::OutOfOrder,
                "`hello` was already sent; send `login` next",
            ),
            (Phase::AwaitHello, Request::Login { .. }) => error(
                re,
                ErrorCode::OutOfOrder,
                "send `hello` first to get a challenge",
            ),
            (
                Phase::AwaitLogin { nonce },
                Request::Login {
                    public_key,
                    signature,
                    display_name,
                    relay,
                },
            ) => {
                let nonce = *nonce;
                // A failed login burns the challenge: the next attempt needs a new `hello`.
                self.phase = Phase::AwaitHello;
                if let Some(name) = relay
                    && (name.is_empty()
                        || name.len() > MAX_RELAY_NAME
                        || !name.bytes().all(|b| b.is_ascii_graphic()))
                {
                    return error(
                        re,
                        ErrorCode::BadRequest,
                        "`relay` is the host[:port] you dialed: 1-261 printable ASCII characters",
                    );
                }
                let Ok(key) = VerifyingKey::from_bytes(public_key.as_bytes()) else {
                    return error(
                        re,
                        ErrorCode::BadSignature,
                        "`public_key` is not a valid Ed25519 key",
                    );
                };
                let signed = match relay {
                    Some(name) => bound_login_signing_bytes(name, &nonce),
                    None => login_signing_bytes(&nonce),
                };
                let sig = DalekSignature::from_bytes(signature.as_bytes());
                if key.verify_strict(&signed, &sig).is_err() {
                    return error(
                        re,
                        ErrorCode::BadSignature,
                        "the signature does not match this key and challenge; send `hello` again",
                    );
                }
                if !self.login_names.is_empty() {
                    let names = self.login_names.join(", ");
                    match relay {
                        None => {
                            let msg = format!(
                                "this relay needs a login signed for its name ({names}): \
                                 send `relay` (docs/protocol.md, login)"
                            );
                            return error(re, ErrorCode::WrongRelay, &msg);
                        }
                        Some(name)
                            if !self.login_names.iter().any(|n| same_relay_name(n, name)) =>
                        {
                            let msg = format!(
                                "this login was signed for {name}, but this relay is {names}: \
                                 check the address you connect to"
                            );
                            return error(re, ErrorCode::WrongRelay, &msg);
                        }
                        Some(_) => {}
                    }
                }
                self.phase = Phase::LoggedIn;
                Step::Login {
                    re,
                    user: *public_key,
                    display_name: display_name.clone(),
                }
            }
            (_, _) => error(
                re,
                ErrorCode::NotLoggedIn,
                "log in first: send `hello`, then `login`",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};
    use hum_proto::Signature;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn code(step: &Step) -> Option<ErrorCode> {
        match step {
            Step::Answer(ServerMessage::Error { code, .. }) => Some(*code),
            _ => None,
        }
    }

    fn hello() -> Request {
        Request::Hello {
            protocol: PROTOCOL_VERSION,
            client: Some("test".into()),
        }
    }

    fn challenge(step: Step) -> Nonce {
        match step {
            Step::Answer(ServerMessage::Reply {
                reply: Reply::Challenge { nonce, .. },
                ..
            }) => nonce,
            s => panic!("expected a challenge, got {s:?}"),
        }
    }

    fn login(key: &SigningKey, nonce: &Nonce) -> Request {
        let sig = key.sign(&login_signing_bytes(nonce));
        Request::Login {
            public_key: UserId(key.verifying_key().to_bytes()),
            signature: Signature(sig.to_bytes()),
            display_name: None,
            relay: None,
        }
    }

    /// A login signed for the relay name `relay`.
    fn bound_login(key: &SigningKey, relay: &str, nonce: &Nonce) -> Request {
        let sig = key.sign(&bound_login_signing_bytes(relay, nonce));
        Request::Login {
            public_key: UserId(key.verifying_key().to_bytes()),
            signature: Signature(sig.to_bytes()),
            display_name: None,
            relay: Some(relay.into()),
        }
    }

    fn unbound() -> Handshake {
        Handshake::new("relay", Arc::from(Vec::new()))
    }

    fn named(names: &[&str]) -> Handshake {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        Handshake::new("relay", Arc::from(names))
    }

    fn logs_in(
        h: &mut Handshake,
        rng: &mut ChaCha8Rng,
        login: impl Fn(&Nonce) -> Request,
    ) -> Option<ErrorCode> {
        let nonce = challenge(h.on_request(RequestId(1), &hello(), rng));
        match h.on_request(RequestId(2), &login(&nonce), rng) {
            Step::Login { .. } => None,
            s => Some(code(&s).expect("an error")),
        }
    }

    #[test]
    fn hello_challenge_login() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let key = SigningKey::generate(&mut rng);
        let mut h = unbound();
        assert_eq!(
            code(&h.on_request(RequestId(1), &Request::Ping, &mut rng)),
            Some(ErrorCode::NotLoggedIn)
        );
        assert_eq!(
            code(&h.on_request(RequestId(1), &login(&key, &Nonce([0; 32])), &mut rng)),
            Some(ErrorCode::OutOfOrder)
        );
        let nonce = challenge(h.on_request(RequestId(2), &hello(), &mut rng));
        assert_eq!(
            code(&h.on_request(RequestId(3), &hello(), &mut rng)),
            Some(ErrorCode::OutOfOrder)
        );
        match h.on_request(RequestId(4), &login(&key, &nonce), &mut rng) {
            Step::Login { re, user, .. } => {
                assert_eq!(re, RequestId(4));
                assert_eq!(user.0, key.verifying_key().to_bytes());
            }
            s => panic!("{s:?}"),
        }
        assert!(h.logged_in());
        assert_eq!(
            h.on_request(RequestId(5), &Request::Ping, &mut rng),
            Step::Forward
        );
    }

    #[test]
    fn forged_or_replayed_signatures_fail() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let key = SigningKey::generate(&mut rng);
        let other = SigningKey::generate(&mut rng);
        let mut h = unbound();
        let nonce = challenge(h.on_request(RequestId(1), &hello(), &mut rng));
        // Signed by another key but claiming `key`'s identity.
        let mut forged = login(&other, &nonce);
        if let Request::Login { public_key, .. } = &mut forged {
            *public_key = UserId(key.verifying_key().to_bytes());
        }
        assert_eq!(
            code(&h.on_request(RequestId(2), &forged, &mut rng)),
            Some(ErrorCode::BadSignature)
        );
        // The challenge is burnt: even a good signature over it is now out of order.
        assert_eq!(
            code(&h.on_request(RequestId(3), &login(&key, &nonce), &mut rng)),
            Some(ErrorCode::OutOfOrder)
        );
        // A signature over an old nonce does not work for a new challenge.
        let fresh = challenge(h.on_request(RequestId(4), &hello(), &mut rng));
        assert_ne!(fresh, nonce);
        assert_eq!(
            code(&h.on_request(RequestId(5), &login(&key, &nonce), &mut rng)),
            Some(ErrorCode::BadSignature)
        );
        // Not a curve point / garbage key.
        let _ = challenge(h.on_request(RequestId(6), &hello(), &mut rng));
        let bad = Request::Login {
            public_key: UserId([0xff; 32]),
            signature: Signature([0; 64]),
            display_name: None,
            relay: None,
        };
        assert_eq!(
            code(&h.on_request(RequestId(7), &bad, &mut rng)),
            Some(ErrorCode::BadSignature)
        );
    }

    #[test]
    fn wrong_version_is_refused_but_can_retry() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut h = unbound();
        let old = Request::Hello {
            protocol: 0,
            client: None,
        };
        assert_eq!(
            code(&h.on_request(RequestId(1), &old, &mut rng)),
            Some(ErrorCode::UnsupportedVersion)
        );
        challenge(h.on_request(RequestId(2), &hello(), &mut rng));
    }

    #[test]
    fn a_relay_with_names_takes_only_logins_signed_for_one_of_them() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let key = SigningKey::generate(&mut rng);
        let mut h = named(&["relay.example", "10.0.0.5:9000"]);
        // Signed for one of its names (any case, default port written out or not).
        assert_eq!(
            logs_in(&mut h, &mut rng, |n| bound_login(
                &key,
                "Relay.Example:443",
                n
            )),
            None
        );
        let mut h = named(&["relay.example", "10.0.0.5:9000"]);
        assert_eq!(
            logs_in(&mut h, &mut rng, |n| bound_login(&key, "10.0.0.5:9000", n)),
            None
        );
        // Signed for the relay the user thought they reached (the attack this stops).
        let mut h = named(&["relay.example"]);
        assert_eq!(
            logs_in(&mut h, &mut rng, |n| bound_login(&key, "evil.example", n)),
            Some(ErrorCode::WrongRelay)
        );
        assert!(!h.logged_in());
        // The unbound form could have been signed anywhere.
        assert_eq!(
            logs_in(&mut h, &mut rng, |n| login(&key, n)),
            Some(ErrorCode::WrongRelay)
        );
        // A name swapped after signing does not verify.
        let swapped = |n: &Nonce| {
            let mut r = bound_login(&key, "evil.example", n);
            if let Request::Login { relay, .. } = &mut r {
                *relay = Some("relay.example".into());
            }
            r
        };
        assert_eq!(
            logs_in(&mut h, &mut rng, swapped),
            Some(ErrorCode::BadSignature)
        );
        // An unbound signature presented as a bound one does not verify either.
        let relabelled = |n: &Nonce| {
            let mut r = login(&key, n);
            if let Request::Login { relay, .. } = &mut r {
                *relay = Some("relay.example".into());
            }
            r
        };
        assert_eq!(
            logs_in(&mut h, &mut rng, relabelled),
            Some(ErrorCode::BadSignature)
        );
    }

    #[test]
    fn a_relay_without_names_takes_both_forms_and_bad_names_are_refused() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let key = SigningKey::generate(&mut rng);
        let mut h = unbound();
        assert_eq!(logs_in(&mut h, &mut rng, |n| login(&key, n)), None);
        let mut h = unbound();
        assert_eq!(
            logs_in(&mut h, &mut rng, |n| bound_login(&key, "anything:1", n)),
            None
        );
        for bad in ["", "a b", "tab\there", "é.example", &"a".repeat(262)] {
            let mut h = unbound();
            assert_eq!(
                logs_in(&mut h, &mut rng, |n| bound_login(&key, bad, n)),
                Some(ErrorCode::BadRequest),
                "{bad:?}"
            );
        }
    }
}
