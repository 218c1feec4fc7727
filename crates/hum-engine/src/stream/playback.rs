//! Fetching a recording from the relay (`recording_open` gives the ticket): chunk by chunk over
//! `/mesh`, a few requests in flight, every chunk verified against the streamer's key (signature,
//! then BLAKE3 hash) before it counts. The relay keeps recordings as content-addressed blocks
//! with the streamer's signed records (docs/stream.md, "Recordings").
//!
//! Not yet the mesh's on-demand mode (viewers of a recording serving each other): the relay
//! serves every chunk.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hum_mesh::fragment::{self, Reassembler};
use hum_mesh::manifest::Verifier;
use hum_mesh::{Layer, MeshMsg, Time};
use hum_proto::UserId;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::StreamError;

/// Requests in flight at once.
const WINDOW: u64 = 8;

/// What fetching a recording found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PlaybackReport {
    pub chunks: u64,
    /// Chunks whose record verified against the streamer's key and whose payload matched it.
    pub verified: u64,
    pub corrupt: u64,
    /// Chunks the relay did not have.
    pub missing: u64,
    pub bytes: u64,
    /// In order, with no gap: chunk i has sequence number i.
    pub in_order: bool,
    /// Media time covered (sum of the records' durations), in ms.
    pub media_ms: u64,
    pub wire_errors: u64,
    /// BLAKE3 over the payloads in order: equal for equal recordings.
    pub content_hash: String,
}

/// Fetch chunks `0..chunks` of a recording from `url` (`ws://RELAY/mesh?ticket=…`), verifying
/// each with `streamer`'s key.
pub async fn fetch_recording(
    url: &str,
    streamer: UserId,
    chunks: u64,
) -> Result<PlaybackReport, StreamError> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(&streamer.0)
        .map_err(|_| StreamError::BadStreamKey)?;
    let verifier = Verifier::new(key);
    let max = fragment::HEADER + fragment::MAX_FRAGMENT_PAYLOAD;
    let mut cfg = WebSocketConfig::default();
    cfg.max_message_size = Some(max);
    cfg.max_frame_size = Some(max);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(cfg), true)
        .await
        .map_err(|e| StreamError::WebRtc(format!("the relay's /mesh: {e}")))?;
    let (mut sink, mut source) = ws.split();
    let start = Instant::now();
    let mut reasm = Reassembler::new(Duration::from_secs(10));
    let mut report = PlaybackReport {
        chunks,
        in_order: true,
        ..PlaybackReport::default()
    };
    let mut hasher = blake3::Hasher::new();
    let mut next_req = 0u64;
    let mut next_msg = 0u32;
    // The relay answers in the order asked: answer i is chunk i.
    let mut next_out = 0u64;
    while next_out < chunks {
        while next_req < chunks && next_req < next_out + WINDOW {
            let req = MeshMsg::Request {
                layer: Layer::High,
                seq: next_req,
                deadline_ms: 10_000,
            }
            .encode()
            .map_err(|e| StreamError::Media(e.to_string()))?;
            for f in fragment::split(next_msg, &req) {
                sink.send(Message::Binary(f.into()))
                    .await
                    .map_err(|e| StreamError::WebRtc(e.to_string()))?;
            }
            next_msg = next_msg.wrapping_add(1);
            next_req += 1;
        }
        let Some(Ok(m)) = source.next().await else {
            break;
        };
        let Message::Binary(b) = m else { continue };
        let now = Time(start.elapsed().as_micros() as u64);
        let whole = match reasm.push(now, &b) {
            Ok(Some(w)) => w,
            Ok(None) => continue,
            Err(_) => {
                report.wire_errors += 1;
                continue;
            }
        };
        match MeshMsg::decode(&whole) {
            Ok(MeshMsg::Data {
                record, payload, ..
            }) => {
                if verifier.verify_chunk(&record, &payload).is_ok() {
                    report.verified += 1;
                    report.bytes += payload.len() as u64;
                    report.media_ms += u64::from(record.duration_us) / 1000;
                    if record.seq != next_out {
                        report.in_order = false;
                    }
                    hasher.update(&payload);
                } else {
                    report.corrupt += 1;
                }
                next_out += 1;
            }
            Ok(MeshMsg::Absent { .. }) => {
                report.missing += 1;
                next_out += 1;
            }
            Ok(_) => {}
            Err(_) => report.wire_errors += 1,
        }
    }
    let _ = sink.close().await;
    if next_out < chunks {
        report.missing += chunks - next_out;
    }
    report.content_hash = hasher.finalize().to_hex().to_string();
    Ok(report)
}
