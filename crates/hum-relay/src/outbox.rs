//! A connection's outgoing queue, bounded in bytes rather than frames.
//!
//! The hub thread pushes; the connection task pops and writes. Every queued frame is charged
//! its length plus [`FRAME_OVERHEAD`] (the queue slot and the shared buffer's header), and the
//! charge is given back once the frame has been handed to the socket. A push that would take
//! the queue over its byte budget is refused: the hub then drops the client as too slow, and
//! the connection task stops at once (it does not first drain what was queued), so the memory
//! is freed when the task ends instead of when a slow reader finally catches up.
//!
//! A frame count was the old bound (8,192): with 60 KB signals that is 500 MB for one client.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// What one queued frame costs beyond its text: the channel slot, the `Bytes` header and
/// allocator rounding, so that floods of tiny frames are bounded too.
pub const FRAME_OVERHEAD: usize = 64;

/// To a connection task from the hub.
#[derive(Debug)]
pub enum Outbound {
    Text(Utf8Bytes),
    Close(u16, String),
}

impl Outbound {
    fn cost(&self) -> usize {
        match self {
            Outbound::Text(t) => t.len() + FRAME_OVERHEAD,
            Outbound::Close(_, r) => r.len() + FRAME_OVERHEAD,
        }
    }
}

/// State shared by both ends.
#[derive(Debug)]
struct Shared {
    queued: AtomicUsize,
    limit: usize,
    overflowed: AtomicBool,
    wake: Notify,
    /// Relay-wide total of queued bytes (the `/metrics` gauge).
    total: Arc<AtomicU64>,
}

/// Why a push was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushError {
    /// The queue is over its byte budget: the client is too slow. Further pushes fail too.
    Full,
    /// The connection task has ended.
    Closed,
}

/// The hub's end.
#[derive(Clone, Debug)]
pub struct OutboxTx {
    tx: mpsc::UnboundedSender<Outbound>,
    shared: Arc<Shared>,
}

/// The connection task's end.
#[derive(Debug)]
pub struct OutboxRx {
    rx: mpsc::UnboundedReceiver<Outbound>,
    shared: Arc<Shared>,
}

/// A queue holding at most `limit_bytes` (one frame is always accepted into an empty queue,
/// however large, so a single big message such as a large `server_info` never counts as slow).
pub fn outbox(limit_bytes: usize, total: Arc<AtomicU64>) -> (OutboxTx, OutboxRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        queued: AtomicUsize::new(0),
        limit: limit_bytes,
        overflowed: AtomicBool::new(false),
        wake: Notify::new(),
        total,
    });
    (
        OutboxTx {
            tx,
            shared: shared.clone(),
        },
        OutboxRx { rx, shared },
    )
}

impl OutboxTx {
    /// Queue `msg`, or refuse it if that would exceed the byte budget. After a refusal the
    /// queue is marked overflowed: the connection task stops without writing the rest.
    pub fn push(&self, msg: Outbound) -> Result<(), PushError> {
        let s = &self.shared;
        if s.overflowed.load(Ordering::Relaxed) {
            return Err(PushError::Full);
        }
        let cost = msg.cost();
        let before = s.queued.fetch_add(cost, Ordering::AcqRel);
        if before > 0 && before + cost > s.limit {
            s.queued.fetch_sub(cost, Ordering::AcqRel);
            s.overflowed.store(true, Ordering::Release);
            s.wake.notify_one();
            return Err(PushError::Full);
        }
        s.total.fetch_add(cost as u64, Ordering::Relaxed);
        if self.tx.send(msg).is_err() {
            s.queued.fetch_sub(cost, Ordering::AcqRel);
            s.total.fetch_sub(cost as u64, Ordering::Relaxed);
            return Err(PushError::Closed);
        }
        Ok(())
    }

    /// Like [`OutboxTx::push`] for a close request: always queued (it is small), never refused
    /// for space, so the reason reaches the client.
    pub fn push_close(&self, code: u16, reason: String) {
        let msg = Outbound::Close(code, reason);
        let cost = msg.cost();
        self.shared.queued.fetch_add(cost, Ordering::AcqRel);
        self.shared.total.fetch_add(cost as u64, Ordering::Relaxed);
        if self.tx.send(msg).is_err() {
            self.shared.queued.fetch_sub(cost, Ordering::AcqRel);
            self.shared.total.fetch_sub(cost as u64, Ordering::Relaxed);
        }
    }

    /// Bytes queued now.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }
}

impl OutboxRx {
    /// The next message, or `None` once the hub dropped its end (the client is gone). The
    /// message is still charged until [`OutboxRx::written`] is called with it.
    pub async fn recv(&mut self) -> Option<Outbound> {
        self.rx.recv().await
    }

    pub fn try_recv(&mut self) -> Result<Outbound, mpsc::error::TryRecvError> {
        self.rx.try_recv()
    }

    /// `msg` left the queue (written or discarded): give its bytes back.
    pub fn written(&self, msg: &Outbound) {
        let cost = msg.cost();
        self.shared.queued.fetch_sub(cost, Ordering::AcqRel);
        self.shared.total.fetch_sub(cost as u64, Ordering::Relaxed);
    }

    /// A handle that tells when the queue overflowed, usable while the receiver is borrowed.
    pub fn overflow(&self) -> Overflow {
        Overflow(self.shared.clone())
    }

    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }
}

/// Tells the connection task that its queue overflowed: stop writing, close as too slow.
#[derive(Debug)]
pub struct Overflow(Arc<Shared>);

impl Overflow {
    pub fn is_set(&self) -> bool {
        self.0.overflowed.load(Ordering::Acquire)
    }

    /// Resolves when the queue overflows (cancel-safe; a notification before the wait is kept).
    pub async fn wait(&self) {
        loop {
            if self.is_set() {
                return;
            }
            self.0.wake.notified().await;
        }
    }
}

impl Drop for OutboxRx {
    fn drop(&mut self) {
        // Whatever is still queued is freed with the receiver: take it off the relay's total.
        self.rx.close();
        while let Ok(m) = self.rx.try_recv() {
            self.written(&m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Outbound {
        Outbound::Text(Utf8Bytes::from("x".repeat(n)))
    }

    #[test]
    fn bounded_in_bytes_not_frames() {
        let total = Arc::new(AtomicU64::new(0));
        let (tx, mut rx) = outbox(100_000, total.clone());
        // Many small frames fit...
        for _ in 0..500 {
            tx.push(text(10)).unwrap();
        }
        assert_eq!(tx.queued(), 500 * (10 + FRAME_OVERHEAD));
        // ...a few large ones do not.
        assert_eq!(tx.push(text(60_000)), Ok(()));
        assert_eq!(tx.push(text(60_000)), Err(PushError::Full));
        assert!(rx.overflow().is_set());
        // Once overflowed, even a small frame is refused: the client is being dropped.
        assert_eq!(tx.push(text(1)), Err(PushError::Full));
        assert_eq!(total.load(Ordering::Relaxed) as usize, tx.queued());
        let m = rx.try_recv().unwrap();
        rx.written(&m);
        assert_eq!(
            tx.queued(),
            499 * (10 + FRAME_OVERHEAD) + 60_000 + FRAME_OVERHEAD
        );
        drop(rx);
        assert_eq!(
            tx.queued(),
            0,
            "dropping the receiver gives everything back"
        );
        assert_eq!(total.load(Ordering::Relaxed), 0);
        assert_eq!(tx.push(text(1)), Err(PushError::Full));
    }

    #[test]
    fn one_large_message_fits_an_empty_queue() {
        let (tx, rx) = outbox(1_000, Arc::new(AtomicU64::new(0)));
        assert_eq!(tx.push(text(600_000)), Ok(()));
        assert!(!rx.overflow().is_set());
        assert_eq!(tx.push(text(1)), Err(PushError::Full));
    }

    #[tokio::test]
    async fn overflow_wakes_the_task() {
        let (tx, rx) = outbox(100, Arc::new(AtomicU64::new(0)));
        tx.push(text(50)).unwrap();
        let _ = tx.push(text(50));
        // The notification came before anyone waited; it is not lost.
        tokio::time::timeout(std::time::Duration::from_secs(5), rx.overflow().wait())
            .await
            .expect("woken");
    }
}
