//! Servers, invites, roles, voice channels, rosters and voice state over a real relay; channel
//! signalling reaches only peers in the same channel.

use std::time::Duration;

use hum_tests::relay::{Client, Relay};
use serde_json::{Value, json};

async fn community(relay: &Relay) -> anyhow::Result<(Client, Client, Client, Value, Value)> {
    let mut owner = Client::login(relay.addr, 1, "Owner").await?;
    let mut bob = Client::login(relay.addr, 2, "Bob").await?;
    let mut cy = Client::login(relay.addr, 3, "Cy").await?;
    let server = owner.ok("server_create", json!({"name": "Club"})).await?["server"].clone();
    assert_eq!(server["role"], "owner");
    let sid = server["id"].clone();
    let ch = owner
        .ok(
            "channel_create",
            json!({"server": sid, "name": "Lounge", "max_participants": 2}),
        )
        .await?;
    let cid = ch["channel"]["id"].clone();
    let invite = owner.ok("invite_create", json!({"server": sid})).await?["invite"].clone();
    assert_eq!(invite["server_name"], "Club");
    for c in [&mut bob, &mut cy] {
        let joined = c.ok("invite_join", json!({"code": invite["code"]})).await?;
        assert_eq!(joined["server"]["role"], "member");
        assert_eq!(joined["server"]["channels"][0]["name"], "Lounge");
    }
    owner
        .event_where("member_joined", |e| {
            e["member"]["user"]["display_name"] == "Cy"
        })
        .await?;
    Ok((owner, bob, cy, sid, cid))
}

#[tokio::test]
async fn channels_rosters_voice_state_and_channel_signalling() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &[])?;
    let (mut owner, mut bob, mut cy, sid, cid) = community(&relay).await?;
    let (b, c) = (bob.user(), cy.user());

    let joined = bob
        .ok(
            "channel_join",
            json!({"channel": cid, "voice": {"muted": true}}),
        )
        .await?;
    assert_eq!(joined["type"], "joined");
    assert_eq!(joined["channel"]["roster"][0]["user"]["id"], b);
    assert_eq!(joined["channel"]["roster"][0]["voice"]["muted"], true);
    assert_eq!(
        joined["permissions"],
        json!({"join": true, "speak": true, "video": true, "stream": true})
    );
    // Every online member hears it.
    for m in [&mut owner, &mut cy] {
        let e = m.event("roster_join").await?;
        assert_eq!(
            (e["server"].clone(), e["channel"].clone()),
            (sid.clone(), cid.clone())
        );
        assert_eq!(e["entry"]["user"]["id"], b);
    }
    let joined = cy.ok("channel_join", json!({"channel": cid})).await?;
    let roster: Vec<_> = joined["channel"]["roster"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|e| e["user"]["id"].clone())
        .collect();
    assert_eq!(
        roster,
        vec![json!(b), json!(c)],
        "the joiner is last; it offers to the others"
    );

    // Full (max 2): a typed error.
    assert_eq!(
        owner.err("channel_join", json!({"channel": cid})).await?,
        "channel_full"
    );

    // Voice state changes reach members.
    cy.ok(
        "voice_update",
        json!({"voice": {"speaking": true, "video": true}}),
    )
    .await?;
    let upd = owner
        .event_where("roster_update", |e| e["user"] == c)
        .await?;
    assert_eq!(
        upd["voice"],
        json!({"muted": false, "deafened": false, "speaking": true, "video": true, "streaming": false})
    );

    // Channel signalling: only between peers in the same channel.
    let to_bob =
        json!({"to": b, "scope": {"channel": cid}, "payload": {"kind": "offer", "sdp": "v=0"}});
    cy.ok("signal", to_bob.clone()).await?;
    let got = bob.event("signal").await?;
    assert_eq!(
        (got["from"].clone(), got["scope"].clone()),
        (json!(c), json!({"channel": cid}))
    );
    // The owner is a member but not in the channel: cannot signal into it, nor be signalled.
    assert_eq!(owner.err("signal", to_bob).await?, "not_in_channel");
    let to_owner =
        json!({"to": owner.user(), "scope": {"channel": cid}, "payload": {"kind": "bye"}});
    assert_eq!(cy.err("signal", to_owner).await?, "not_in_channel");
    owner.no_event("signal", Duration::from_millis(200)).await?;

    // Leaving and killing both update the roster promptly.
    cy.ok("channel_leave", json!({})).await?;
    let left = bob.event_where("roster_leave", |e| e["user"] == c).await?;
    assert_eq!(left["reason"], "left");
    owner.ok("channel_join", json!({"channel": cid})).await?;
    bob.kill();
    let left = owner
        .event_where("roster_leave", |e| e["user"] == b)
        .await?;
    assert_eq!(left["reason"], "disconnected");
    let list = owner.ok("channel_list", json!({"server": sid})).await?;
    assert_eq!(
        list["channels"][0]["roster"].as_array().map(Vec::len),
        Some(1)
    );

    // A reply far larger than one frame (the relay fragments it) arrives whole.
    for i in 0..60 {
        owner
            .ok(
                "channel_create",
                json!({"server": sid, "name": format!("Room {i}")}),
            )
            .await?;
    }
    let info = cy.ok("server_info", json!({"server": sid})).await?;
    // Several times the relay's 4 KiB fragment size.
    assert!(
        info.to_string().len() > 12 * 1024,
        "{}",
        info.to_string().len()
    );
    assert_eq!(
        info["server"]["channels"].as_array().map(Vec::len),
        Some(61)
    );
    Ok(())
}

#[tokio::test]
async fn roles_and_channel_permissions_are_enforced() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &[])?;
    let (mut owner, mut bob, mut cy, sid, cid) = community(&relay).await?;
    let b = bob.user();

    // Members cannot administer.
    assert_eq!(
        bob.err("channel_create", json!({"server": sid, "name": "Mine"}))
            .await?,
        "forbidden"
    );
    assert_eq!(
        bob.err("channel_rename", json!({"channel": cid, "name": "X"}))
            .await?,
        "forbidden"
    );
    assert_eq!(
        bob.err("invite_create", json!({"server": sid})).await?,
        "forbidden"
    );
    assert_eq!(
        bob.err("server_delete", json!({"server": sid})).await?,
        "forbidden"
    );
    assert_eq!(
        bob.err("member_kick", json!({"server": sid, "user": cy.user()}))
            .await?,
        "forbidden"
    );

    // Listen-only for members; admins keep everything.
    let listen_only = json!({
        "member": {"join": true, "speak": false, "video": false, "stream": false},
        "admin": {"join": true, "speak": true, "video": true, "stream": true},
    });
    owner
        .ok(
            "channel_configure",
            json!({"channel": cid, "permissions": listen_only}),
        )
        .await?;
    let joined = bob
        .ok(
            "channel_join",
            json!({"channel": cid, "voice": {"muted": false}}),
        )
        .await?;
    assert_eq!(joined["permissions"]["speak"], false);
    assert_eq!(
        joined["channel"]["roster"][0]["voice"]["muted"], true,
        "forced muted"
    );
    assert_eq!(
        bob.err("voice_update", json!({"voice": {"muted": false}}))
            .await?,
        "forbidden"
    );
    assert_eq!(
        bob.err("voice_update", json!({"voice": {"streaming": true}}))
            .await?,
        "forbidden"
    );

    // Promote Bob: now he may speak and administer channels.
    owner
        .ok(
            "member_set_role",
            json!({"server": sid, "user": b, "role": "admin"}),
        )
        .await?;
    cy.event_where("member_updated", |e| {
        e["member"]["user"]["id"] == b && e["member"]["role"] == "admin"
    })
    .await?;
    bob.ok("voice_update", json!({"voice": {"muted": false}}))
        .await?;
    bob.ok("channel_rename", json!({"channel": cid, "name": "Stage"}))
        .await?;
    let upd = cy
        .event_where("channel_updated", |e| e["channel"]["name"] == "Stage")
        .await?;
    assert_eq!(upd["channel"]["id"], cid);
    // An admin cannot kick the owner or change roles.
    assert_eq!(
        bob.err("member_kick", json!({"server": sid, "user": owner.user()}))
            .await?,
        "forbidden"
    );
    assert_eq!(
        bob.err(
            "member_set_role",
            json!({"server": sid, "user": cy.user(), "role": "admin"})
        )
        .await?,
        "forbidden"
    );

    // Closing the channel to members removes Cy if inside; kicking removes from server.
    owner
        .ok(
            "member_set_role",
            json!({"server": sid, "user": b, "role": "member"}),
        )
        .await?;
    let closed = json!({
        "member": {"join": false, "speak": true, "video": true, "stream": true},
        "admin": {"join": true, "speak": true, "video": true, "stream": true},
    });
    owner
        .ok(
            "channel_configure",
            json!({"channel": cid, "permissions": closed}),
        )
        .await?;
    let gone = bob.event_where("roster_leave", |e| e["user"] == b).await?;
    assert_eq!(gone["reason"], "removed");
    assert_eq!(
        cy.err("channel_join", json!({"channel": cid})).await?,
        "forbidden"
    );
    owner
        .ok("member_kick", json!({"server": sid, "user": cy.user()}))
        .await?;
    let removed = cy.event("server_removed").await?;
    assert_eq!(removed["reason"], "kicked");
    assert_eq!(
        cy.err("server_info", json!({"server": sid})).await?,
        "not_member"
    );
    assert_eq!(
        cy.err("channel_list", json!({"server": sid})).await?,
        "not_member"
    );

    // Invites: limited uses, revocation, bad codes.
    let one = owner
        .ok("invite_create", json!({"server": sid, "max_uses": 1}))
        .await?["invite"]["code"]
        .clone();
    cy.ok("invite_join", json!({"code": one})).await?;
    let mut dan = Client::login(relay.addr, 4, "Dan").await?;
    assert_eq!(
        dan.err("invite_join", json!({"code": one})).await?,
        "invite_invalid"
    );
    assert_eq!(
        dan.err("invite_join", json!({"code": "nope!"})).await?,
        "bad_request"
    );
    assert_eq!(
        dan.err("invite_join", json!({"code": "Zzzzzzzzzz"}))
            .await?,
        "invite_invalid"
    );

    // Delete: everyone is told, channels are gone.
    owner.ok("server_delete", json!({"server": sid})).await?;
    for m in [&mut bob, &mut cy] {
        assert_eq!(m.event("server_removed").await?["reason"], "deleted");
    }
    assert_eq!(
        bob.ok("server_list", json!({})).await?["servers"],
        json!([])
    );
    assert_eq!(
        bob.err("channel_join", json!({"channel": cid})).await?,
        "not_found"
    );
    Ok(())
}
