//! The bandwidth auto-detect against the real relay across a real bottleneck: run by
//! `scripts/test.d/40-budget-netns.sh` with hum-relay inside one namespace and this client in the
//! other, behind the `tc tbf` uplink.
//!
//! ```text
//! netns_probe <ws-url-of-/probe> <link-mbps>
//! ```
//!
//! Runs one full test with hum-budget's [`ProbeUpload`] (what to send, when to stop, how to judge
//! the relay's report) and exits non-zero unless the measured upload is within 70-105% of the link.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use hum_budget::{ProbeConfig, ProbeKind, ProbeStep, ProbeUpload};
use tokio_tungstenite::tungstenite::Message;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(Ok(mbps))) = (args.get(1), args.get(2).map(|m| m.parse::<f64>())) else {
        eprintln!("usage: netns_probe <ws-url-of-/probe> <link-mbps>");
        std::process::exit(2);
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("netns_probe: {e}");
            std::process::exit(2);
        }
    };
    match rt.block_on(run(url, mbps)) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("netns_probe: {e}");
            std::process::exit(2);
        }
    }
}

async fn run(url: &str, link_mbps: f64) -> Result<bool, String> {
    let config = ProbeConfig::default();
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .map_err(|e| format!("connect {url}: {e}"))?;
    let start = Instant::now();
    let mut upload = ProbeUpload::start(start, &config, ProbeKind::Full);
    let frame = vec![0u8; config.frame_bytes];
    let report = loop {
        match upload.poll(Instant::now()) {
            ProbeStep::SendFrame(n) => ws
                .send(Message::Binary(frame[..n].to_vec().into()))
                .await
                .map_err(|e| e.to_string())?,
            ProbeStep::SendDone => ws
                .send(Message::Text("done".into()))
                .await
                .map_err(|e| e.to_string())?,
            ProbeStep::AwaitReport(by) => match tokio::time::timeout_at(by.into(), ws.next()).await
            {
                Ok(Some(Ok(Message::Text(t)))) => break t.to_string(),
                Ok(Some(Ok(_))) => {}
                other => return Err(format!("no report: {other:?}")),
            },
            ProbeStep::TimedOut => return Err("no report in time".into()),
        }
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let took = start.elapsed();
    let m = upload
        .on_report(now_ms, &report)
        .map_err(|e| e.to_string())?;
    let got = m.rate.mbps_f64();
    println!("relay report: {report}");
    println!(
        "bandwidth test through a {link_mbps} Mbit/s tbf uplink: {got:.2} Mbit/s ({:.0}% of the link), {:.1} MB sent in {:.1} s",
        100.0 * got / link_mbps,
        upload.sent_bytes() as f64 / 1e6,
        took.as_secs_f64()
    );
    let ok = got >= 0.7 * link_mbps && got <= 1.05 * link_mbps;
    println!(
        "{} measured upload within 70-105% of the link",
        if ok { "PASS" } else { "FAIL" }
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    Ok(ok)
}
