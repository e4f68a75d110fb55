//! The MQTT front end: a TCP listener that spreads accepted sockets over one arbiter
//! (thread) per core, where each connection becomes a [`session::Session`] actor.

pub mod codec;
pub mod session;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Arbiter;
use tokio::net::{TcpListener, TcpSocket};

/// Pending connections the kernel may queue before `accept` (capped by net.core.somaxconn).
const LISTEN_BACKLOG: u32 = 4096;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::directory::Directory;
use crate::router::Router;

/// What every session needs, shared across arbiters.
pub struct Shared {
    pub config: Arc<Config>,
    pub directory: Arc<Directory>,
    pub authenticator: Arc<Authenticator>,
    pub router: Arc<Router>,
}

/// A bound listener and the session threads it feeds.
pub struct Listener {
    listener: TcpListener,
    arbiters: Vec<Arbiter>,
    shared: Arc<Shared>,
}

impl Listener {
    pub async fn bind(shared: Arc<Shared>) -> std::io::Result<Listener> {
        let listen = shared.config.mqtt.listen;
        let socket = if listen.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(listen)?;
        // tokio's default backlog (1024) overflows in a connect storm, and each overflowed
        // SYN then waits a full second for its retransmit. The kernel caps this at somaxconn.
        let listener = socket.listen(LISTEN_BACKLOG)?;
        let arbiters = (0..Config::worker_count(shared.config.mqtt.workers))
            .map(|_| Arbiter::new())
            .collect();
        Ok(Listener {
            listener,
            arbiters,
            shared,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts until the task is dropped. Sessions go round-robin to the arbiters.
    pub async fn run(self) {
        static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);
        let mut turn = 0usize;
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Without this, small deliveries wait for Nagle's 40 ms on the subscriber side.
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            let stream = match stream.into_std() {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot detach accepted socket");
                    continue;
                }
            };
            let arbiter = &self.arbiters[turn % self.arbiters.len()];
            turn = turn.wrapping_add(1);
            let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
            session::Session::spawn(&arbiter.handle(), stream, peer, id, self.shared.clone());
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}
