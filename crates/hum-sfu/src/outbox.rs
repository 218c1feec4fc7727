//! Datagrams waiting to leave the SFU's socket, sent in batches: on Linux one `sendmmsg` per
//! [`BATCH`] datagrams instead of a `sendto` each (with thousands of subscribers the per-call
//! cost of the syscall was a large share of the SFU's CPU: `hum bench sfu`, docs/sfu.md);
//! elsewhere one `send_to` each. A datagram the socket refuses (its buffer full, a bad
//! address) is dropped and counted, as a lost packet would be; nothing blocks.

use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// Datagrams per `sendmmsg` call.
pub(crate) const BATCH: usize = 64;

/// What one [`Outbox::flush`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flushed {
    pub sent: u64,
    pub bytes: u64,
    pub dropped: u64,
}

/// Datagrams queued since the last flush, in order.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queue: Vec<(SocketAddr, Vec<u8>)>,
}

impl Outbox {
    pub(crate) fn push(&mut self, to: SocketAddr, datagram: Vec<u8>) {
        self.queue.push((to, datagram));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.queue.len()
    }

    /// Sends everything queued (without waiting) and empties the queue.
    pub(crate) fn flush(&mut self, socket: &UdpSocket) -> Flushed {
        let mut done = Flushed::default();
        if self.queue.is_empty() {
            return done;
        }
        send_all(socket, &self.queue, &mut done);
        self.queue.clear();
        done
    }
}

#[cfg(target_os = "linux")]
fn send_all(socket: &UdpSocket, queue: &[(SocketAddr, Vec<u8>)], done: &mut Flushed) {
    use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;

    let fd = socket.as_raw_fd();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH.min(queue.len()), None);
    let mut start = 0;
    while start < queue.len() {
        let chunk = &queue[start..(start + BATCH).min(queue.len())];
        let slices: Vec<[IoSlice<'_>; 1]> = chunk.iter().map(|(_, d)| [IoSlice::new(d)]).collect();
        let addrs: Vec<Option<SockaddrStorage>> = chunk
            .iter()
            .map(|(to, _)| Some(SockaddrStorage::from(*to)))
            .collect();
        let sent = match sendmmsg(
            fd,
            &mut headers,
            &slices,
            &addrs,
            [],
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(results) => results.count(),
            Err(_) => 0,
        };
        for (_, d) in &chunk[..sent] {
            done.sent += 1;
            done.bytes += d.len() as u64;
        }
        if sent == 0 {
            // The first one failed (buffer full, bad address): drop it, go on with the rest.
            done.dropped += 1;
            start += 1;
        } else {
            start += sent;
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn send_all(socket: &UdpSocket, queue: &[(SocketAddr, Vec<u8>)], done: &mut Flushed) {
    for (to, d) in queue {
        match socket.try_send_to(d, *to) {
            Ok(n) => {
                done.sent += 1;
                done.bytes += n as u64;
            }
            Err(_) => done.dropped += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More than one batch to two receivers, in order, every byte; a datagram to an address
    /// the socket cannot send to (IPv6 from an IPv4 socket) is dropped and counted while the
    /// ones after it still go.
    #[tokio::test]
    async fn a_flush_sends_every_datagram_in_order_and_drops_only_what_fails() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind a");
        let b = UdpSocket::bind("127.0.0.1:0").await.expect("bind b");
        let (to_a, to_b) = (a.local_addr().expect("a"), b.local_addr().expect("b"));
        let bad: SocketAddr = "[::1]:9".parse().expect("v6");
        let mut out = Outbox::default();
        let n = BATCH as u32 + 10;
        for i in 0..n {
            out.push(
                if i % 2 == 0 { to_a } else { to_b },
                i.to_be_bytes().to_vec(),
            );
            if i == 5 {
                out.push(bad, b"nowhere".to_vec());
            }
        }
        assert_eq!(out.len(), n as usize + 1);
        let done = out.flush(&socket);
        assert_eq!(
            done,
            Flushed {
                sent: u64::from(n),
                bytes: 4 * u64::from(n),
                dropped: 1
            }
        );
        assert_eq!(out.len(), 0);
        let mut buf = [0u8; 16];
        for (sock, first) in [(&a, 0u32), (&b, 1)] {
            let got: Vec<u32> = {
                let mut v = vec![];
                for _ in 0..n / 2 {
                    let (len, from) = sock.recv_from(&mut buf).await.expect("recv");
                    assert_eq!(from, socket.local_addr().expect("local"));
                    v.push(u32::from_be_bytes(buf[..len].try_into().expect("4 bytes")));
                }
                v
            };
            let want: Vec<u32> = (0..n).filter(|i| i % 2 == first).collect();
            assert_eq!(got, want);
        }
        // An empty flush sends nothing.
        assert_eq!(out.flush(&socket), Flushed::default());
    }
}
