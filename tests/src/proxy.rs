//! A TCP forwarder between a client and a relay whose connections a test can cut, to drop one
//! client's relay connection while the relay and everyone else carry on (a Wi-Fi blip, a NAT
//! timeout, a load balancer restart).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards every connection made to [`CutProxy::addr`] to `target`.
pub struct CutProxy {
    addr: SocketAddr,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl CutProxy {
    /// Listens on a free loopback port. Needs a tokio runtime.
    pub async fn start(target: SocketAddr) -> Result<CutProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let held = links.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let link = tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
                let mut links = held.lock().unwrap_or_else(|e| e.into_inner());
                links.retain(|l| !l.is_finished());
                links.push(link);
            }
        });
        Ok(CutProxy {
            addr,
            links,
            accept,
        })
    }

    /// `ws://` URL of the proxy, for a client that would use the relay's.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Drops every connection open through the proxy now (both sockets close, as when a link
    /// dies); new ones are forwarded again. Returns how many were cut.
    pub fn cut(&self) -> usize {
        let links = std::mem::take(&mut *self.links.lock().unwrap_or_else(|e| e.into_inner()));
        let open = links.iter().filter(|l| !l.is_finished()).count();
        for l in links {
            l.abort();
        }
        open
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
