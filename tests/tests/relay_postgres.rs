//! `hum-relay --store postgres://...` on a real PostgreSQL (a throwaway server this test starts:
//! `hum_relay::store::testing`; fails when PostgreSQL is not installed, as `scripts/setup --test`
//! installs it). Accounts, friendships, servers, roles, channels and invites survive a SIGKILL and
//! a restart with a different, empty data directory (so they came from PostgreSQL, not from a
//! SQLite file), and a second relay on the same database is refused.

use hum_relay::store::testing::TempPostgres;
use hum_tests::relay::{Client, Relay};
use hum_tests::workspace_bin;
use serde_json::json;

#[tokio::test]
async fn a_relay_on_postgres_keeps_its_data_across_a_kill() -> anyhow::Result<()> {
    let url = TempPostgres::shared()
        .create_database()
        .map_err(anyhow::Error::msg)?;
    let store = ["--store", url.as_str()];
    let first_dir = tempfile::tempdir()?;
    let (sid, cid, code);
    {
        let relay = Relay::start(first_dir.path(), &store)?;
        let mut ada = Client::login(relay.addr, 1, "Ada").await?;
        let mut bob = Client::login(relay.addr, 2, "Bob").await?;
        ada.ok("friend_request", json!({"user": bob.user()}))
            .await?;
        bob.ok("friend_accept", json!({"user": ada.user()})).await?;
        sid = ada.ok("server_create", json!({"name": "Club"})).await?["server"]["id"].clone();
        cid = ada
            .ok(
                "channel_create",
                json!({"server": sid, "name": "Stage", "max_participants": 7}),
            )
            .await?["channel"]["id"]
            .clone();
        let first =
            ada.ok("invite_create", json!({"server": sid})).await?["invite"]["code"].clone();
        bob.ok("invite_join", json!({"code": first})).await?;
        ada.ok(
            "member_set_role",
            json!({"server": sid, "user": bob.user(), "role": "admin"}),
        )
        .await?;
        code = ada
            .ok("invite_create", json!({"server": sid, "max_uses": 5}))
            .await?["invite"]["code"]
            .clone();
        // SIGKILL: no chance to flush anything on the way out.
        relay.kill();
    }
    assert!(
        !first_dir.path().join("relay.sqlite3").exists(),
        "with --store postgres nothing goes to SQLite"
    );

    let second_dir = tempfile::tempdir()?;
    let relay = Relay::start(second_dir.path(), &store)?;
    let mut ada = Client::connect(relay.addr).await?;
    ada.key = hum_tests::relay::key(1);
    let welcome = ada.login_with_name(None).await?;
    assert_eq!(welcome["new_account"], false);
    assert_eq!(welcome["user"]["display_name"], "Ada");
    let friends = ada.ok("friend_list", json!({})).await?;
    assert_eq!(friends["friends"][0]["user"]["display_name"], "Bob");
    let info = ada.ok("server_info", json!({"server": sid})).await?["server"].clone();
    assert_eq!(
        (info["name"].clone(), info["role"].clone()),
        (json!("Club"), json!("owner"))
    );
    let bob_role = info["members"]
        .as_array()
        .and_then(|m| m.iter().find(|x| x["user"]["display_name"] == "Bob"))
        .map(|m| m["role"].clone());
    assert_eq!(bob_role, Some(json!("admin")));
    assert_eq!(
        (
            info["channels"][0]["id"].clone(),
            info["channels"][0]["name"].clone()
        ),
        (cid.clone(), json!("Stage"))
    );
    // The invite made before the kill still works, and new writes land.
    let mut cy = Client::login(relay.addr, 3, "Cy").await?;
    cy.ok("invite_join", json!({"code": code})).await?;
    let joined = cy.ok("channel_join", json!({"channel": cid})).await?;
    assert_eq!(joined["channel"]["id"], cid);

    // A second relay on the same database is refused (one relay per database until the
    // cluster bus lands): it exits with the reason instead of serving a stale copy.
    let bin = workspace_bin("hum-relay", "hum-relay")?;
    let third_dir = tempfile::tempdir()?;
    let args = [
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data".into(),
        third_dir.path().display().to_string(),
        "--store".into(),
        url.clone(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(args)
            .env("RUST_LOG", "error")
            .output()
    })
    .await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second relay must not start");
    assert!(
        stderr.contains("another relay is using this PostgreSQL database"),
        "{stderr}"
    );
    // The first is unaffected.
    let friends = ada.ok("friend_list", json!({})).await?;
    assert_eq!(friends["friends"][0]["user"]["display_name"], "Bob");
    drop(relay);
    Ok(())
}
