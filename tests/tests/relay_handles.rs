//! Friends by handle over a real relay: `hum handle set`, `hum friends add @handle` and
//! `hum friends add hum://friend/KEY` with the real CLI, the relay's refusals (taken, look-alike,
//! invalid, unknown) through raw WebSocket clients, and handles surviving a relay restart.

use std::process::Output;

use anyhow::{Context, Result};
use hum_tests::relay::{Client, Relay, key, user_hex};
use hum_tests::voice::World;
use serde_json::json;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn friends_by_handle_and_link() -> Result<()> {
    let mut w = World::empty()?;
    w.create_users(3)?;
    let (ada, bob, cy) = (w.users[0].clone(), w.users[1].clone(), w.users[2].clone());

    // Ada takes @Ada; the relay answers with what it stored.
    let set = w.run(0, &["handle", "set", "@Ada"])?;
    assert_eq!(set, json!({"user": ada, "handle": "Ada"}));
    assert_eq!(
        w.run(2, &["handle", "show", &ada])?,
        json!({"user": ada, "handle": "Ada"})
    );

    // Bob adds her by handle, in another case: a friend request reaches Ada.
    let out = w.cmd(1, &["friend", "add", "@ada"]).output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    let list = w.run(0, &["friends", "list"])?;
    assert_eq!(list["incoming"][0]["id"], bob, "{list}");

    // The handle (and look-alikes of it) is taken for Bob; his own is free.
    for taken in ["ada", "ADA", "\u{0410}\u{0501}\u{0430}"] {
        let out = w.cmd(1, &["handle", "set", taken]).output()?;
        assert!(!out.status.success(), "{taken} was accepted");
        assert!(
            stderr(&out).contains("is taken on this relay"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(
        w.run(1, &["handle", "set", "bob"])?,
        json!({"user": bob, "handle": "bob"})
    );

    // Nobody holds @nobody: the CLI says so and sends nothing.
    let out = w.cmd(2, &["friends", "add", "@nobody"]).output()?;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("nobody on this relay has the handle @nobody"),
        "{}",
        stderr(&out)
    );

    // Cy adds Bob by his friend link, which is his key.
    let link = w.run(1, &["friends", "link"])?;
    let link = link["link"].as_str().context("link")?.to_owned();
    assert_eq!(link, format!("hum://friend/{bob}"));
    let out = w.cmd(2, &["friends", "add", &link]).output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    // A second add is refused: the request is pending.
    let out = w.cmd(2, &["friends", "add", &link]).output()?;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already pending"), "{}", stderr(&out));
    let list = w.run(1, &["friends", "list"])?;
    assert_eq!(list["incoming"][0]["id"], cy, "{list}");
    Ok(())
}

#[tokio::test]
async fn relay_codes_for_handles_and_persistence() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &[])?;
    let mut ada = Client::login(relay.addr, 1, "Ada").await?;
    let mut bob = Client::login(relay.addr, 2, "Bob").await?;
    let a = user_hex(&key(1));

    // Unknown handle: not_found; a handle against the rules: invalid_name.
    assert_eq!(
        bob.err("handle_lookup", json!({"handle": "nobody"}))
            .await?,
        "not_found"
    );
    for bad in ["@ada", "a", "ada lovelace", "p\u{0430}ypal", "admin"] {
        assert_eq!(
            ada.err("handle_set", json!({"handle": bad})).await?,
            "invalid_name",
            "{bad}"
        );
    }
    let got = ada.ok("handle_set", json!({"handle": "ada"})).await?;
    assert_eq!(got["handle"], "ada");
    assert_eq!(got["user"]["id"], a);
    assert_eq!(
        bob.err("handle_set", json!({"handle": "ADA"})).await?,
        "handle_taken"
    );
    let found = bob.ok("handle_lookup", json!({"handle": "Ada"})).await?;
    assert_eq!(found["user"]["id"], a);
    assert_eq!(found["user"]["display_name"], "Ada");
    assert_eq!(found["handle"], "ada");

    // A restart keeps the handle (SQLite) and its uniqueness.
    drop((ada, bob));
    relay.terminate()?;
    let relay = Relay::start(dir.path(), &[])?;
    let mut bob = Client::login(relay.addr, 2, "Bob").await?;
    let found = bob.ok("handle_lookup", json!({"handle": "ADA"})).await?;
    assert_eq!(found["user"]["id"], a);
    assert_eq!(
        bob.err("handle_set", json!({"handle": "ada"})).await?,
        "handle_taken"
    );
    // Given up, it is free for someone else.
    let mut ada = Client::login(relay.addr, 1, "Ada").await?;
    let got = ada.ok("handle_set", json!({"handle": null})).await?;
    assert_eq!(got["handle"], json!(null));
    let got = bob.ok("handle_set", json!({"handle": "ada"})).await?;
    assert_eq!(got["handle"], "ada");
    Ok(())
}
