//! `GET /probe`: a WebSocket that measures a client's upload rate, for the bandwidth
//! auto-detect. The client sends binary frames for a few seconds, then the text frame `done`;
//! the relay answers with one text frame, a [`ProbeReport`], and closes.
//!
//! The clock starts when the first binary frame arrives and stops at the last one, so connection
//! setup and the client's reaction time are not counted; the first frame's bytes are therefore
//! not counted in the rate either. Each probe is capped in time and bytes (the report then says
//! `capped: true`), and only a few run at once (others get HTTP 503), so a probe cannot starve
//! signalling. One source address may run only `probes_per_address` of them at once (default
//! 1; more get HTTP 429), so one client cannot hold every slot.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hum_proto::signal::{ProbeReport, encode};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::accept::PeerAddr;
use crate::limits::SourceKey;
use crate::server::SharedState;

/// Largest single probe frame.
const PROBE_FRAME_MAX: usize = 1 << 20;

/// A probe slot of one source address, given back on drop.
pub(crate) struct SourceSlot {
    sources: Arc<Mutex<HashMap<SourceKey, usize>>>,
    key: SourceKey,
}

impl SourceSlot {
    /// One of the `max` probe slots of `key`, or `None` if all are taken.
    pub(crate) fn acquire(
        sources: &Arc<Mutex<HashMap<SourceKey, usize>>>,
        key: SourceKey,
        max: usize,
    ) -> Option<SourceSlot> {
        let mut map = sources.lock().ok()?;
        let n = map.entry(key).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            sources: sources.clone(),
            key,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.sources.lock()
            && let Some(n) = map.get_mut(&self.key)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

pub(crate) async fn probe_handler(
    ws: WebSocketUpgrade,
    State(shared): State<SharedState>,
    req_parts: axum::http::request::Parts,
) -> Response {
    // Per address first, so one client cannot hold the relay-wide slots.
    let key = req_parts
        .extensions
        .get::<PeerAddr>()
        .and_then(|peer| shared.config().source_key(peer.0));
    let source = match key {
        Some(key) => {
            let max = shared.config().probes_per_address;
            match SourceSlot::acquire(shared.probe_sources(), key, max) {
                Some(slot) => Some(slot),
                None => {
                    shared
                        .metrics()
                        .probes_refused_per_address
                        .fetch_add(1, Ordering::Relaxed);
                    return (
                        StatusCode::TOO_MANY_REQUESTS,
                        [(axum::http::header::RETRY_AFTER, "10")],
                        format!(
                            "at most {max} bandwidth probe(s) at once from one address; finish the running one first\n"
                        ),
                    )
                        .into_response();
                }
            }
        }
        None => None,
    };
    let Ok(permit) = shared.probe_slots().clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many bandwidth probes running; retry in a few seconds\n",
        )
            .into_response();
    };
    ws.max_message_size(PROBE_FRAME_MAX)
        .max_frame_size(PROBE_FRAME_MAX)
        .read_buffer_size(64 * 1024)
        .on_upgrade(move |socket| run_probe(socket, shared, (permit, source)))
}

async fn run_probe(
    mut socket: WebSocket,
    shared: SharedState,
    _slots: (OwnedSemaphorePermit, Option<SourceSlot>),
) {
    let m = shared.metrics();
    m.probes_total.fetch_add(1, Ordering::Relaxed);
    m.probes_active.fetch_add(1, Ordering::Relaxed);
    let deadline = Instant::now() + shared.config().probe_max_duration;
    let max_bytes = shared.config().probe_max_bytes;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut total: u64 = 0;
    let mut timed: u64 = 0;
    let mut capped = false;
    loop {
        let msg = match tokio::time::timeout_at(deadline, socket.recv()).await {
            Err(_) => {
                capped = true;
                break;
            }
            Ok(None) | Ok(Some(Err(_))) => {
                m.probes_active.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            Ok(Some(Ok(msg))) => msg,
        };
        match msg {
            Message::Binary(b) => {
                let now = Instant::now();
                let n = b.len() as u64;
                total += n;
                if first.is_none() {
                    first = Some(now);
                } else {
                    timed += n;
                }
                last = now;
                if total >= max_bytes {
                    capped = true;
                    break;
                }
            }
            Message::Text(t) if t.trim() == "done" => break,
            Message::Close(_) => {
                m.probes_active.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            _ => {}
        }
    }
    let elapsed_us = first.map_or(0, |f| last.duration_since(f).as_micros() as u64);
    let report = ProbeReport::measure(total, timed, elapsed_us, capped);
    let _ = socket
        .send(Message::Text(Utf8Bytes::from(encode(&report))))
        .await;
    let frame = CloseFrame {
        code: 1000,
        reason: Utf8Bytes::from_static("probe done"),
    };
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        socket.send(Message::Close(Some(frame))),
    )
    .await;
    // The client may still be sending (after a cap): read and discard until its close, briefly,
    // so that closing does not reset the connection under the report before it is read.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    m.probes_active.fetch_sub(1, Ordering::Relaxed);
}
