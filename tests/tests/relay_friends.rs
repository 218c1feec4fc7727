//! Friends, presence, and 1-on-1 calls between mutual friends over a real relay; call
//! signalling reaches only the other party.

use std::time::Duration;

use hum_tests::relay::{Client, Relay};
use serde_json::json;

#[tokio::test]
async fn friends_presence_and_the_mutual_friend_rule() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &[])?;
    let mut ada = Client::login(relay.addr, 1, "Ada").await?;
    let mut bob = Client::login(relay.addr, 2, "Bob").await?;
    let (a, b) = (ada.user(), bob.user());

    // A one-sided request is not a friendship: no call.
    ada.ok("friend_request", json!({"user": b})).await?;
    let req = bob.event("friend_request_received").await?;
    assert_eq!(req["from"]["id"], a);
    assert_eq!(req["from"]["display_name"], "Ada");
    assert_eq!(
        ada.err("call_invite", json!({"user": b})).await?,
        "not_friends"
    );
    let list = bob.ok("friend_list", json!({})).await?;
    assert_eq!(list["incoming"][0]["id"], a);
    assert_eq!(list["friends"], json!([]));
    assert_eq!(
        ada.err("friend_request", json!({"user": b})).await?,
        "already_friends"
    );

    bob.ok("friend_accept", json!({"user": a})).await?;
    let added = ada.event("friend_added").await?;
    assert_eq!(added["friend"]["user"]["id"], b);
    assert_eq!(added["friend"]["presence"]["status"], "online");
    let list = ada.ok("friend_list", json!({})).await?;
    assert_eq!(list["friends"][0]["user"]["display_name"], "Bob");

    // Presence: Bob goes away and comes back; Ada hears both.
    bob.close().await;
    let p = ada
        .event_where("presence", |e| {
            e["user"] == b && e["presence"]["status"] == "offline"
        })
        .await?;
    assert_eq!(p["presence"]["channel"], json!(null));
    let mut bob = Client::login(relay.addr, 2, "Bob").await?;
    ada.event_where("presence", |e| {
        e["user"] == b && e["presence"]["status"] == "online"
    })
    .await?;

    // Unfriending takes the right to call away again.
    bob.ok("friend_remove", json!({"user": a})).await?;
    ada.event_where("friend_removed", |e| e["user"] == b)
        .await?;
    assert_eq!(
        ada.err("call_invite", json!({"user": b})).await?,
        "not_friends"
    );

    // Declines reach the requester.
    ada.ok("friend_request", json!({"user": b})).await?;
    bob.ok("friend_decline", json!({"user": a})).await?;
    ada.event_where("friend_declined", |e| e["user"] == b)
        .await?;
    assert_eq!(
        bob.err("friend_accept", json!({"user": a})).await?,
        "not_found"
    );
    // Unknown users.
    assert_eq!(
        ada.err("friend_request", json!({"user": "ab".repeat(32)}))
            .await?,
        "not_found"
    );
    Ok(())
}

#[tokio::test]
async fn a_call_signals_only_between_its_two_parties() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &[])?;
    let mut ada = Client::login(relay.addr, 1, "Ada").await?;
    let mut bob = Client::login(relay.addr, 2, "Bob").await?;
    let mut eve = Client::login(relay.addr, 3, "Eve").await?;
    let (a, b, e) = (ada.user(), bob.user(), eve.user());
    for (x, y) in [(&mut ada, &b), (&mut eve, &b)] {
        x.ok("friend_request", json!({"user": y})).await?;
    }
    bob.ok("friend_accept", json!({"user": a})).await?;
    bob.ok("friend_accept", json!({"user": e})).await?;

    let call = ada.ok("call_invite", json!({"user": b})).await?["call"].clone();
    let incoming = bob.event("call_incoming").await?;
    assert_eq!(
        (incoming["call"].clone(), incoming["from"]["id"].clone()),
        (call.clone(), json!(a))
    );
    let offer =
        json!({"to": b, "scope": {"call": call}, "payload": {"kind": "offer", "sdp": "v=0 offer"}});
    // Not yet accepted: no signalling.
    assert_eq!(ada.err("signal", offer.clone()).await?, "invalid_state");
    bob.ok("call_accept", json!({"call": call})).await?;
    let acc = ada.event("call_accepted").await?;
    assert_eq!(acc["by"], b);

    ada.ok("signal", offer.clone()).await?;
    let got = bob.event("signal").await?;
    assert_eq!(got["from"], a);
    assert_eq!(got["scope"], json!({"call": call}));
    assert_eq!(got["payload"], json!({"kind": "offer", "sdp": "v=0 offer"}));
    let answer = json!({"to": a, "scope": {"call": call}, "payload": {"kind": "answer", "sdp": "v=0 answer"}});
    bob.ok("signal", answer).await?;
    assert_eq!(ada.event("signal").await?["payload"]["kind"], "answer");
    let ice = json!({"to": a, "scope": {"call": call},
        "payload": {"kind": "ice", "candidate": "candidate:1 1 udp 2122260223 127.0.0.1 40000 typ host", "sdp_mid": "0", "sdp_mline_index": 0}});
    bob.ok("signal", ice).await?;
    assert_eq!(ada.event("signal").await?["payload"]["sdp_mline_index"], 0);

    // Eve is Bob's friend but not in this call: she cannot inject into it, forge `from`, or
    // learn anything about it.
    let inject =
        json!({"to": b, "scope": {"call": call}, "payload": {"kind": "offer", "sdp": "evil"}});
    assert_eq!(eve.err("signal", inject).await?, "not_found");
    let forged = json!({"to": b, "from": a, "scope": {"call": call}, "payload": {"kind": "offer", "sdp": "evil"}});
    assert_eq!(eve.err("signal", forged).await?, "not_found");
    assert_eq!(
        eve.err("call_hangup", json!({"call": call})).await?,
        "not_found"
    );
    // Ada cannot redirect the call's signalling to Eve.
    let redirect =
        json!({"to": e, "scope": {"call": call}, "payload": {"kind": "offer", "sdp": "x"}});
    assert_eq!(ada.err("signal", redirect).await?, "forbidden");
    eve.no_event("signal", Duration::from_millis(300)).await?;
    bob.no_event("signal", Duration::from_millis(100)).await?;

    // Hang up; then the scope is dead.
    bob.ok("call_hangup", json!({"call": call})).await?;
    let ended = ada.event("call_ended").await?;
    assert_eq!(
        (ended["call"].clone(), ended["reason"].clone()),
        (call.clone(), json!("hung_up"))
    );
    assert_eq!(ada.err("signal", offer).await?, "not_found");
    Ok(())
}

#[tokio::test]
async fn a_killed_caller_ends_the_call_promptly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &[])?;
    let mut ada = Client::login(relay.addr, 1, "Ada").await?;
    let mut bob = Client::login(relay.addr, 2, "Bob").await?;
    let (a, b) = (ada.user(), bob.user());
    ada.ok("friend_request", json!({"user": b})).await?;
    bob.ok("friend_accept", json!({"user": a})).await?;
    let call = ada.ok("call_invite", json!({"user": b})).await?["call"].clone();
    bob.ok("call_accept", json!({"call": call})).await?;
    bob.event_where("presence", |e| {
        e["user"] == a && e["presence"]["in_call"] == true
    })
    .await?;
    ada.kill();
    let ended = bob.event("call_ended").await?;
    assert_eq!(ended["reason"], "disconnected");
    // Declines, cancels and ring timeouts are covered in the hub's unit tests.
    Ok(())
}
