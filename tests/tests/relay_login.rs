//! Login over a real relay: challenge-response with Ed25519, account resumption, session
//! replacement, and every way to get the handshake wrong.

use std::time::Duration;

use ed25519_dalek::Signer;
use hum_tests::relay::{Client, Closed, Relay, key, user_hex};
use serde_json::json;

#[tokio::test]
async fn login_creates_then_resumes_an_account() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &[])?;
    let mut c = Client::connect(relay.addr).await?;
    c.key = key(1);
    let challenge = c
        .ok("hello", json!({"protocol": 1, "client": "e2e"}))
        .await?;
    assert_eq!(challenge["type"], "challenge");
    assert_eq!(challenge["protocol"], 1);
    assert_eq!(challenge["nonce"].as_str().map(str::len), Some(64));
    let nonce: hum_proto::Nonce = serde_json::from_value(challenge["nonce"].clone())?;
    let sig = c.key.sign(&hum_proto::signal::login_signing_bytes(&nonce));
    let welcome = c
        .ok(
            "login",
            json!({"public_key": c.user(), "signature": hex(&sig.to_bytes()), "display_name": "Ada"}),
        )
        .await?;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["new_account"], true);
    assert_eq!(welcome["user"]["id"], c.user());
    assert_eq!(welcome["user"]["display_name"], "Ada");
    assert_eq!(welcome["limits"]["max_message_bytes"], 65536);
    assert_eq!(c.ok("ping", json!({})).await?["type"], "pong");

    // Same key, second connection, no name given: same account and name; the first session is
    // told and closed.
    let mut again = Client::connect(relay.addr).await?;
    again.key = key(1);
    let welcome = again.login_with_name(None).await?;
    assert_eq!(welcome["new_account"], false);
    assert_eq!(welcome["user"]["display_name"], "Ada");
    c.event("session_replaced").await?;
    assert_eq!(
        c.wait_closed(Duration::from_secs(5)).await?,
        Closed::Code(4001)
    );
    assert_eq!(again.ok("ping", json!({})).await?["type"], "pong");
    Ok(())
}

#[tokio::test]
async fn handshake_mistakes_get_typed_errors_and_the_connection_lives() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &[])?;
    let mut c = Client::connect(relay.addr).await?;
    c.key = key(2);
    // Anything before login.
    assert_eq!(c.err("friend_list", json!({})).await?, "not_logged_in");
    assert_eq!(c.err("ping", json!({})).await?, "not_logged_in");
    // Login before hello.
    let fake_sig = "00".repeat(64);
    assert_eq!(
        c.err(
            "login",
            json!({"public_key": c.user(), "signature": fake_sig})
        )
        .await?,
        "out_of_order"
    );
    // Wrong protocol version.
    assert_eq!(
        c.err("hello", json!({"protocol": 999})).await?,
        "unsupported_version"
    );
    // Hello twice.
    let challenge = c.ok("hello", json!({"protocol": 1})).await?;
    assert_eq!(
        c.err("hello", json!({"protocol": 1})).await?,
        "out_of_order"
    );
    // Forged: signed by key 3 but claiming key 2.
    let nonce: hum_proto::Nonce = serde_json::from_value(challenge["nonce"].clone())?;
    let forged = key(3).sign(&hum_proto::signal::login_signing_bytes(&nonce));
    let code = c
        .err(
            "login",
            json!({"public_key": c.user(), "signature": hex(&forged.to_bytes())}),
        )
        .await?;
    assert_eq!(code, "bad_signature");
    // Signature over the bare nonce (no domain prefix) is refused too.
    let challenge = c.ok("hello", json!({"protocol": 1})).await?;
    let nonce: hum_proto::Nonce = serde_json::from_value(challenge["nonce"].clone())?;
    let bare = c.key.sign(nonce.as_bytes());
    let code = c
        .err(
            "login",
            json!({"public_key": c.user(), "signature": hex(&bare.to_bytes())}),
        )
        .await?;
    assert_eq!(code, "bad_signature");
    // Malformed key and signature fields: a decode error, which leaves the challenge standing.
    let challenge = c.ok("hello", json!({"protocol": 1})).await?;
    assert_eq!(
        c.err("login", json!({"public_key": "xyz", "signature": "00"}))
            .await?,
        "bad_request"
    );
    // After all that, a correct login on the same connection works.
    let nonce: hum_proto::Nonce = serde_json::from_value(challenge["nonce"].clone())?;
    let sig = c.key.sign(&hum_proto::signal::login_signing_bytes(&nonce));
    let welcome = c
        .ok("login", json!({"public_key": c.user(), "signature": hex(&sig.to_bytes()), "display_name": "Bea"}))
        .await?;
    assert_eq!(welcome["user"]["id"], user_hex(&key(2)));
    assert_eq!(
        c.err("hello", json!({"protocol": 1})).await?,
        "out_of_order"
    );
    let (status, body) = relay.get("/healthz")?;
    assert_eq!((status, body.trim()), (200, "ok"));
    Ok(())
}

#[tokio::test]
async fn a_connection_that_never_logs_in_is_closed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &["--login-timeout", "500ms"])?;
    let mut c = Client::connect(relay.addr).await?;
    assert_eq!(
        c.wait_closed(Duration::from_secs(5)).await?,
        Closed::Code(4003)
    );
    Ok(())
}

/// Login binding (docs/security.md): a relay that knows its names takes only logins signed for
/// one of them. The attack it stops: a malicious relay hands this relay's challenge to a user who
/// dialed the malicious relay, and replays the user's signature here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_signed_for_another_relay_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Learn a free port, then start the relay there knowing that name.
    let addr = Relay::start(dir.path(), &[])?.addr;
    let name = format!("127.0.0.1:{}", addr.port());
    let relay = Relay::start_at(
        dir.path(),
        &addr.to_string(),
        &["--login-name", "relay.example", "--login-name", &name],
    )?;

    // Raw logins: (relay field, bytes signed for) -> error code, or None for welcome.
    let mut c = Client::connect(relay.addr).await?;
    c.key = key(7);
    // The user dialed evil.example, which passed this relay's challenge on.
    assert_eq!(
        attempt(&mut c, Some("evil.example"), Some("evil.example"))
            .await?
            .as_deref(),
        Some("wrong_relay")
    );
    // The old unbound form could have been signed for anyone.
    assert_eq!(
        attempt(&mut c, None, None).await?.as_deref(),
        Some("wrong_relay")
    );
    // Relabelling the signed name breaks the signature.
    assert_eq!(
        attempt(&mut c, Some("relay.example"), Some("evil.example"))
            .await?
            .as_deref(),
        Some("bad_signature")
    );
    // Nothing above logged in.
    assert_eq!(c.err("ping", json!({})).await?, "not_logged_in");
    // Signed for one of the relay's names (case and the default port do not matter).
    assert_eq!(
        attempt(&mut c, Some("Relay.Example:443"), Some("Relay.Example:443")).await?,
        None
    );
    assert_eq!(c.ok("ping", json!({})).await?["type"], "pong");

    // The real client signs for the URL it dialed: the relay's address works...
    let ok = hum_engine::RelayClient::connect(
        engine_identity(8),
        hum_engine::RelayConfig::new(format!("ws://{name}/ws")),
    )
    .await?;
    ok.ping().await?;
    // ...while the same relay dialed as `localhost` is a name it does not know: refused at
    // once with the reason (fatal, no retry loop).
    let err = hum_engine::RelayClient::connect(
        engine_identity(9),
        hum_engine::RelayConfig::new(format!("ws://localhost:{}/ws", addr.port())),
    )
    .await
    .expect_err("a login signed for localhost is refused");
    let err = err.to_string();
    assert!(
        err.contains(&format!("signed for localhost:{}", addr.port())),
        "{err}"
    );
    assert!(err.contains("relay.example"), "{err}");
    Ok(())
}

/// One `hello` + `login` whose request carries `sent` as `relay` and whose signature is over the
/// bound bytes for `signed_for` (the unbound form for `None`): the error code, `None` if welcomed.
async fn attempt(
    c: &mut Client,
    sent: Option<&str>,
    signed_for: Option<&str>,
) -> anyhow::Result<Option<String>> {
    let challenge = c.ok("hello", json!({"protocol": 1})).await?;
    let nonce: hum_proto::Nonce = serde_json::from_value(challenge["nonce"].clone())?;
    let bytes = match signed_for {
        Some(n) => hum_proto::signal::bound_login_signing_bytes(n, &nonce),
        None => hum_proto::signal::login_signing_bytes(&nonce),
    };
    let mut fields =
        json!({"public_key": c.user(), "signature": hex(&c.key.sign(&bytes).to_bytes())});
    if let Some(n) = sent {
        fields["relay"] = json!(n);
    }
    let answer = c.request("login", fields).await?;
    Ok(match answer["type"].as_str() {
        Some("error") => Some(answer["code"].as_str().unwrap_or("?").to_string()),
        _ => None,
    })
}

fn engine_identity(seed: u8) -> hum_engine::Identity {
    hum_engine::Identity::from_seed(
        [seed; 32],
        hum_proto::signal::DisplayName::new("binder").expect("a valid name"),
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
