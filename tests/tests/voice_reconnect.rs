//! A voice channel survives its members' relay connections dropping (issue 17, "Node loss"):
//! two engines (real WebRTC, real Opus, each sending its own tone) talk in a mesh channel, each
//! through a TCP forwarder the test can cut. A cut ends that member's relay session: the relay
//! tells the other `roster_leave` then `roster_join` when it is back, and the other closes its
//! connection and makes a new one, while the member who moved still holds its old one. Audio
//! must come back both ways, whichever of the two has the smaller id (the smaller id offers),
//! and after the relay itself is killed and restarted.
//!
//!   cargo test -p hum-tests --test voice_reconnect -- --nocapture   (prints the audio gaps)

use std::time::Instant;

use anyhow::{Result, ensure};
use hum_tests::proxy::CutProxy;
use hum_tests::relay::Relay;
use hum_tests::talker::{Talker, both_hear, room_for_two};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voice_comes_back_after_relay_connections_drop_and_the_relay_restarts() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut relay = Relay::start(dir.path(), &[])?;
    // Each member reaches the relay through a forwarder of its own.
    let proxies = [
        CutProxy::start(relay.addr).await?,
        CutProxy::start(relay.addr).await?,
    ];
    let mut ada = Talker::start(&proxies[0].ws_url(), 1, "Ada", 440.0).await?;
    let mut bob = Talker::start(&proxies[1].ws_url(), 2, "Bob", 660.0).await?;

    let room = room_for_two(&mut ada, &mut bob).await?;
    let first = both_hear(&ada, &bob, (0, 0)).await?;
    eprintln!(
        "connected: both hear each other {:.0} ms in",
        first.as_secs_f64() * 1000.0
    );

    // Each member's relay connection drops in turn: one of the two has the smaller id (and
    // offers), so both roles move.
    let smaller = if ada.id() < bob.id() { "Ada" } else { "Bob" };
    for mover in [0, 1] {
        let (moving, staying) = if mover == 0 {
            (&mut ada, &mut bob)
        } else {
            (&mut bob, &mut ada)
        };
        let cut_at = Instant::now();
        let cut = proxies[mover].cut();
        ensure!(cut >= 1, "{}'s relay connection was not open", moving.name);
        moving.rejoined(room).await?;
        staying.sees_join(room, moving.id()).await?;
        // From here on, the member who stayed has closed its old connection: what it hears now
        // comes over a new one.
        let back = cut_at.elapsed();
        let since = (moving.played(), staying.played());
        let wait = both_hear(moving, staying, since).await?;
        eprintln!(
            "{}'s relay connection cut ({} id, {}): back in the channel after {:.0} ms; both hear each other again {:.0} ms later",
            moving.name,
            if moving.name == smaller {
                "smaller"
            } else {
                "larger"
            },
            if moving.name == smaller {
                "offers"
            } else {
                "answers"
            },
            back.as_secs_f64() * 1000.0,
            wait.as_secs_f64() * 1000.0,
        );
    }

    // The relay dies and comes back on the same address: who is in the channel is rebuilt as
    // the two come back, in either order.
    relay.kill_and_restart(&[])?;
    ada.rejoined(room).await?;
    bob.rejoined(room).await?;
    let since = (ada.played(), bob.played());
    let gap = both_hear(&ada, &bob, since).await?;
    eprintln!(
        "relay restarted: both hear each other {:.0} ms after both re-joined",
        gap.as_secs_f64() * 1000.0
    );

    ada.stop().await;
    bob.stop().await;
    Ok(())
}
