//! The bandwidth probe at /probe: binary frames in, one JSON report out; capped and limited.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hum_tests::relay::Relay;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn probe_measures_upload_and_reports_json() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &[])?;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/probe", relay.addr)).await?;
    let chunk = vec![0x5a_u8; 32 * 1024];
    let start = std::time::Instant::now();
    let mut sent = 0u64;
    // Half a second or 8 MiB, whichever comes first (well under the relay's 64 MiB cap).
    while start.elapsed() < Duration::from_millis(500) && sent < 8 << 20 {
        ws.send(Message::Binary(chunk.clone().into())).await?;
        sent += chunk.len() as u64;
    }
    ws.send(Message::Text("done".into())).await?;
    let report = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await? {
            Some(Ok(Message::Text(t))) => break serde_json::from_str::<serde_json::Value>(&t)?,
            Some(Ok(_)) => continue,
            other => anyhow::bail!("no report: {other:?}"),
        }
    };
    assert_eq!(report["bytes"].as_u64(), Some(sent), "{report}");
    assert_eq!(report["capped"], false);
    // The relay timed the upload (first to last frame; how long that took is not the point).
    let elapsed = report["elapsed_ms"].as_u64().unwrap_or(0);
    assert!(elapsed > 0, "{report}");
    let mbps = report["mbps"].as_f64().unwrap_or(0.0);
    assert!(mbps > 0.0, "{report}");
    // The report decodes as the typed ProbeReport.
    let typed: hum_proto::signal::ProbeReport = serde_json::from_value(report)?;
    assert_eq!(typed.bytes, sent);
    Ok(())
}

#[tokio::test]
async fn probes_are_capped_in_bytes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path(), &[])?;
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/probe", relay.addr)).await?;
    let (mut tx, mut rx) = ws.split();
    // Keep sending past the 64 MiB cap; the relay reports and closes on its own.
    let sender = tokio::spawn(async move {
        let chunk = vec![1u8; 1 << 20];
        for _ in 0..80 {
            if tx
                .send(Message::Binary(chunk.clone().into()))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let report = loop {
        match tokio::time::timeout(Duration::from_secs(15), rx.next()).await? {
            Some(Ok(Message::Text(t))) => break serde_json::from_str::<serde_json::Value>(&t)?,
            Some(Ok(_)) => continue,
            other => anyhow::bail!("no report: {other:?}"),
        }
    };
    assert_eq!(report["capped"], true, "{report}");
    assert!(
        report["bytes"].as_u64().unwrap_or(0) >= 64 << 20,
        "{report}"
    );
    sender.abort();
    let (status, _) = relay.get("/healthz")?;
    assert_eq!(status, 200);
    Ok(())
}
