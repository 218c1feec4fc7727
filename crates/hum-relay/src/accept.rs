//! Accepting TCP connections: every connection is counted from `accept` on (not only once it is
//! a WebSocket), must finish its first HTTP request within `upgrade_timeout`, and past the
//! connection cap gets a plain `503` and is closed.
//!
//! Two counts: TCP connections (pending HTTP, plain requests and WebSockets) may exceed
//! `--max-connections` by [`HTTP_HEADROOM`], so that `/healthz` and `/metrics` still answer when
//! the relay is full; WebSockets alone are capped at `--max-connections` (the upgrade answers
//! 503 past it). A flood of connections that never finish their request therefore holds at most
//! `max + headroom` descriptors, each for at most `upgrade_timeout`.
//!
//! Why not `axum::serve`: it has no deadline for the request head and counts nothing, so TCP
//! connections that never send a byte (or send headers slowly, "slowloris") were held forever
//! and took descriptors the relay needed for real clients and `/healthz`.
//!
//! The cap is `--max-connections`, lowered at start to what the process's descriptor limit
//! allows (see [`descriptor_cap`]), so that clients past it get the documented 503 instead of
//! `accept` failing with EMFILE and new logins timing out.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot};
use tower_service::Service;

use crate::server::Shared;

/// Descriptors kept for everything that is not a client connection: stdio, the listener, the
/// database and its WAL, the runtime's epoll and event fds, a few bandwidth probes, and the
/// sockets of refusals in flight.
pub const RESERVED_FDS: u64 = 64;

/// TCP connections allowed beyond `--max-connections` for plain HTTP (health checks, metrics).
pub const HTTP_HEADROOM: usize = 8;

/// The body of the 503 sent past the connection cap.
pub const AT_CAPACITY: &str = "the relay is at its connection limit; retry later\n";

/// Raise the soft `RLIMIT_NOFILE` to the hard limit and return the soft limit now in force
/// (`None` where the platform has no such limit).
pub fn raise_descriptor_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, "could not raise the open-file limit");
                rlimit::getrlimit(rlimit::Resource::NOFILE)
                    .ok()
                    .map(|(soft, _)| soft)
            }
        }
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// How many WebSockets fit under a descriptor limit of `nofile` (one descriptor each,
/// [`RESERVED_FDS`] and the [`HTTP_HEADROOM`] kept back), never more than `configured`.
pub fn descriptor_cap(configured: usize, nofile: Option<u64>) -> usize {
    match nofile {
        Some(n) => {
            let fit = n.saturating_sub(RESERVED_FDS + HTTP_HEADROOM as u64).max(1);
            configured.min(usize::try_from(fit).unwrap_or(usize::MAX))
        }
        None => configured,
    }
}

/// Counts an open TCP connection (pending HTTP, plain HTTP or WebSocket) for as long as it
/// lives; with `ws`, also an open WebSocket.
pub(crate) struct ConnSlot {
    shared: Arc<Shared>,
    ws: bool,
}

fn try_count(counter: &std::sync::atomic::AtomicU64, cap: usize) -> bool {
    let n = counter.fetch_add(1, Ordering::SeqCst);
    if n as usize >= cap {
        counter.fetch_sub(1, Ordering::SeqCst);
        return false;
    }
    true
}

impl ConnSlot {
    /// A new TCP connection, or `None` past `max_connections + HTTP_HEADROOM`.
    pub(crate) fn acquire(shared: &Arc<Shared>) -> Option<ConnSlot> {
        let m = shared.metrics();
        if !try_count(&m.tcp_connections, shared.max_connections() + HTTP_HEADROOM) {
            m.connections_rejected.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(ConnSlot {
            shared: shared.clone(),
            ws: false,
        })
    }

    /// Make this connection a WebSocket, or `None` (the TCP slot stays) past `max_connections`.
    pub(crate) fn upgrade(&mut self) -> bool {
        let m = self.shared.metrics();
        if !try_count(&m.connections, self.shared.max_connections()) {
            m.connections_rejected.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.ws = true;
        true
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let m = self.shared.metrics();
        m.tcp_connections.fetch_sub(1, Ordering::SeqCst);
        if self.ws {
            m.connections.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The client's address, as a request extension (for per-address limits).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerAddr(pub SocketAddr);

/// A TCP connection's slot, reachable from its HTTP requests: `/ws` takes it and keeps it for
/// the WebSocket's life; otherwise it is released when the TCP connection ends.
#[derive(Clone)]
pub(crate) struct SlotCell(Arc<Mutex<Option<ConnSlot>>>);

impl SlotCell {
    pub(crate) fn take(&self) -> Option<ConnSlot> {
        self.0.lock().ok().and_then(|mut s| s.take())
    }
}

/// Accept until `stop` fires.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    router: Router,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    // Refusals in flight each hold a socket; beyond this many, refuse by closing at once.
    let refusing = Arc::new(Semaphore::new(16));
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: the cap should prevent it; back off briefly, never spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => return Ok(()),
        };
        let _ = tcp.set_nodelay(true);
        let Some(slot) = ConnSlot::acquire(&shared) else {
            match refusing.clone().try_acquire_owned() {
                Ok(permit) => {
                    tokio::spawn(async move {
                        refuse(tcp).await;
                        drop(permit);
                    });
                }
                Err(_) => drop(tcp),
            }
            continue;
        };
        let router = router.clone();
        let deadline = shared.config().upgrade_timeout;
        tokio::spawn(serve_connection(tcp, peer, slot, router, deadline));
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    slot: ConnSlot,
    router: Router,
    deadline: Duration,
) {
    let cell = SlotCell(Arc::new(Mutex::new(Some(slot))));
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(cell.clone());
        req.extensions_mut().insert(PeerAddr(peer));
        let mut router = router.clone();
        async move { router.call(req).await }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(deadline)
        .serve_connection(TokioIo::new(tcp), svc)
        .with_upgrades();
    // The whole HTTP part (head, handler, response; until the upgrade hands the socket to the
    // WebSocket task) must be done in time: a connection that sends nothing, or sends its
    // request a byte at a time, is closed here and its slot given back.
    match tokio::time::timeout(deadline, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTP connection ended with an error"),
        Err(_) => tracing::debug!(%peer, "no complete HTTP request in time; closed"),
    }
}

/// Past the cap: read the request briefly (closing with unread input would reset the socket
/// under the answer), answer 503, close.
async fn refuse(mut tcp: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if seen.windows(4).any(|w| w == b"\r\n\r\n") || seen.len() > 16 * 1024 {
                break;
            }
        }
    })
    .await;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nretry-after: 5\r\nconnection: close\r\n\r\n{AT_CAPACITY}",
        AT_CAPACITY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = tcp.write_all(response.as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_the_relays_own_descriptors() {
        assert_eq!(descriptor_cap(10_000, Some(1_024)), 1_024 - 64 - 8);
        assert_eq!(descriptor_cap(10_000, Some(1_048_576)), 10_000);
        assert_eq!(descriptor_cap(100, Some(128)), 56);
        assert_eq!(descriptor_cap(100, Some(10)), 1);
        assert_eq!(descriptor_cap(100, None), 100);
    }
}
