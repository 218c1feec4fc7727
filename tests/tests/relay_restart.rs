//! Persistence over a real relay: accounts, friendships, servers, roles, channels and invites
//! survive a SIGKILL and restart on the same data dir; who is in which channel is rebuilt as
//! clients come back.

use hum_tests::relay::{Client, Relay};
use serde_json::json;

#[tokio::test]
async fn data_survives_a_killed_relay() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (sid, cid, code);
    {
        let relay = Relay::start(dir.path(), &[])?;
        let mut ada = Client::login(relay.addr, 1, "Ada").await?;
        let mut bob = Client::login(relay.addr, 2, "Bob").await?;
        ada.ok("friend_request", json!({"user": bob.user()}))
            .await?;
        bob.ok("friend_accept", json!({"user": ada.user()})).await?;
        sid = ada.ok("server_create", json!({"name": "Club"})).await?["server"]["id"].clone();
        let perms = json!({
            "member": {"join": true, "speak": false, "video": false, "stream": false},
            "admin": {"join": true, "speak": true, "video": true, "stream": true},
        });
        cid = ada
            .ok("channel_create", json!({"server": sid, "name": "Stage", "max_participants": 7, "permissions": perms}))
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
        bob.ok("channel_join", json!({"channel": cid})).await?;
        // SIGKILL: no chance to flush anything on the way out.
        relay.kill();
    }
    let relay = Relay::start(dir.path(), &[])?;
    let mut ada = Client::connect(relay.addr).await?;
    ada.key = hum_tests::relay::key(1);
    let welcome = ada.login_with_name(None).await?;
    assert_eq!(welcome["new_account"], false);
    assert_eq!(welcome["user"]["display_name"], "Ada");
    let friends = ada.ok("friend_list", json!({})).await?;
    assert_eq!(friends["friends"][0]["user"]["display_name"], "Bob");
    assert_eq!(friends["friends"][0]["presence"]["status"], "offline");

    let info = ada.ok("server_info", json!({"server": sid})).await?["server"].clone();
    assert_eq!(info["name"], "Club");
    assert_eq!(info["role"], "owner");
    let bob_member = info["members"]
        .as_array()
        .and_then(|m| m.iter().find(|x| x["user"]["display_name"] == "Bob"))
        .cloned();
    assert_eq!(bob_member.map(|m| m["role"].clone()), Some(json!("admin")));
    let ch = &info["channels"][0];
    assert_eq!(
        (
            ch["id"].clone(),
            ch["name"].clone(),
            ch["max_participants"].clone()
        ),
        (cid.clone(), json!("Stage"), json!(7))
    );
    assert_eq!(ch["permissions"]["member"]["speak"], false);
    assert_eq!(
        ch["roster"],
        json!([]),
        "nobody is in a channel until they rejoin"
    );

    // The invite still works; channel presence is rebuilt as clients come back.
    let mut cy = Client::login(relay.addr, 3, "Cy").await?;
    cy.ok("invite_join", json!({"code": code})).await?;
    let mut bob = Client::login(relay.addr, 2, "Bob").await?;
    bob.ok("channel_join", json!({"channel": cid})).await?;
    let joined = cy.ok("channel_join", json!({"channel": cid})).await?;
    assert_eq!(
        joined["channel"]["roster"].as_array().map(Vec::len),
        Some(2)
    );
    Ok(())
}
