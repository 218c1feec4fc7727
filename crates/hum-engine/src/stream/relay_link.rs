//! The link to a stream's root when the relay hosts it: a WebSocket to the relay's `/mesh`
//! (opened with a ticket from `stream_mesh`), carrying the same fragments as a WebRTC mesh link's
//! data channels. The streamer uploads each chunk here once; a viewer fetches from the root here.
//!
//! TCP instead of SCTP: both lanes share one ordered, reliable byte stream, so a lost packet
//! delays what follows it (the viewer's scheduler times out and asks a peer, as for any slow
//! upstream). docs/stream.md says why the relay does not run WebRTC data channels.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use hum_proto::UserId;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::StreamError;
use super::link::{Lane, LinkEvent};

/// Largest frame the relay sends (one fragment).
const MAX_FRAME: usize = hum_mesh::fragment::HEADER + hum_mesh::fragment::MAX_FRAGMENT_PAYLOAD;

/// An open `/mesh` WebSocket. Messages from it arrive as [`LinkEvent`]s for `user` (the root).
pub struct RelayLink {
    tx: std::sync::Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>,
    closed: Arc<AtomicBool>,
    reader: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for RelayLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayLink")
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl RelayLink {
    /// Connect to `url` (`ws://RELAY/mesh?ticket=…`); events name `user`.
    pub async fn connect(
        url: &str,
        user: UserId,
        events: mpsc::UnboundedSender<LinkEvent>,
    ) -> Result<RelayLink, StreamError> {
        let mut cfg = WebSocketConfig::default();
        cfg.max_message_size = Some(MAX_FRAME);
        cfg.max_frame_size = Some(MAX_FRAME);
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(cfg), true)
            .await
            .map_err(|e| StreamError::WebRtc(format!("the relay's /mesh: {e}")))?;
        let (mut sink, mut source) = ws.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let closed = Arc::new(AtomicBool::new(false));
        let _ = events.send(LinkEvent::Open { user });
        {
            let closed = closed.clone();
            tokio::spawn(async move {
                while let Some(b) = rx.recv().await {
                    if sink.send(Message::Binary(b.into())).await.is_err() {
                        break;
                    }
                }
                let _ = sink.close().await;
                closed.store(true, Ordering::SeqCst);
            });
        }
        let reader = {
            let closed = closed.clone();
            tokio::spawn(async move {
                while let Some(Ok(m)) = source.next().await {
                    match m {
                        Message::Binary(b) => {
                            let _ = events.send(LinkEvent::Message {
                                user,
                                lane: Lane::Data,
                                bytes: BytesMut::from(&b[..]),
                            });
                        }
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
                if !closed.swap(true, Ordering::SeqCst) {
                    let _ = events.send(LinkEvent::Closed { user });
                }
            })
        };
        Ok(RelayLink {
            tx: std::sync::Mutex::new(Some(tx)),
            closed,
            reader: tokio::sync::Mutex::new(Some(reader)),
        })
    }

    /// Queue one fragment (both lanes share the socket).
    pub fn send(&self, _lane: Lane, bytes: Vec<u8>) {
        if let Ok(tx) = self.tx.lock()
            && let Some(tx) = tx.as_ref()
        {
            let _ = tx.send(bytes);
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Send what is queued, close, and wait (at most 3 s) until the relay has closed its end:
    /// by then it has read everything we sent (an uploader stops like this before it ends the
    /// stream, so the last chunks are not lost to the `stream_end` overtaking them).
    pub async fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let reader = self.reader.lock().await.take();
        if let Some(r) = reader {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), r).await;
        }
        self.closed.store(true, Ordering::SeqCst);
    }
}
