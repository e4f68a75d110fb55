//! The MQTT front end: a TCP listener that admits connections under the connection caps
//! and spreads them over one session thread (actix arbiter) per core, where each becomes a
//! [`session::Session`]. actix is confined to `session` and to the [`Workers`] that own its
//! threads; nothing outside this module names an actix type.
//!
//! Shutdown is a protocol, as in tokio's mini-redis: the listener and every session watch
//! one [`CancellationToken`]; every session holds a [`TaskTracker`] token until its metadata
//! is written, so the server waits on the tracker rather than on a sleep.

pub mod codec;
pub mod limits;
pub mod proxy;
pub mod session;
pub mod throttle;
pub mod transport;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Arbiter;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounting::ledger::Ledger;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::directory::Directory;
use crate::metrics;
use crate::rate::Limiter;
use crate::router::Router;
use codec::{Inbound, MqttCodec, Outbound, Version};
use dashmap::DashMap;
use limits::Limits;
use proxy::TrustedProxies;
use sealrelay_wire::{Close, PrincipalId};
use session::Accepted;
use transport::{Front, Kind};

/// Pending connections the kernel may queue before `accept` (capped by net.core.somaxconn).
const LISTEN_BACKLOG: u32 = 4096;
/// Refusals being answered at once; past it an over-cap connection is closed unanswered,
/// so a flood beyond the cap costs no more than a close.
pub(crate) const MAX_REFUSALS_IN_FLIGHT: usize = 256;
/// How long a refused connection may take to send its CONNECT, and how much of it is read.
const REFUSAL_READ_TIMEOUT: Duration = Duration::from_secs(2);
const REFUSAL_READ_LIMIT: usize = 4096;

/// What every session needs, shared across arbiters.
pub struct Shared {
    pub config: Arc<Config>,
    pub directory: Arc<Directory>,
    /// Where each session's row goes at CONNACK and at close.
    pub ledger: Ledger,
    pub authenticator: Arc<Authenticator>,
    pub router: Arc<Router>,
    /// Cancelled once, at shutdown: each session closes with DISCONNECT 0x8B.
    pub shutdown: CancellationToken,
    /// Every session holds a token from here until its metadata record is written.
    pub sessions: TaskTracker,
    /// Principals whose last session ended for too many refused publishes, and until when
    /// their CONNECTs are refused (0x9F). Entries go when they are next looked at.
    pub cooldown: DashMap<PrincipalId, std::time::Instant>,
    /// Counts CONNECTs per address and per principal (`mqtt.connects_per_*`): a reconnect
    /// loop would otherwise write session_log rows as fast as it can connect.
    pub limiter: Arc<Limiter>,
}

/// The session threads. Stopped only after every session has finished (or the grace
/// period ran out): stopping them earlier would drop sessions before they record.
pub struct Workers {
    arbiters: Vec<Arbiter>,
}

impl Workers {
    pub fn new(count: usize) -> Workers {
        Workers {
            arbiters: (0..count).map(|_| Arbiter::new()).collect(),
        }
    }

    pub fn stop(self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

/// A bound listener and the session threads it feeds. Every MQTT listener (TCP, TLS,
/// WebSocket, WebSocket over TLS) is one of these with its own [`Front`]; they share the
/// session threads and the connection caps.
pub struct Listener {
    listener: TcpListener,
    front: Arc<Front>,
    /// Set when this listener takes PROXY headers: from whom they are believed.
    proxies: Option<TrustedProxies>,
    workers: Vec<actix::ArbiterHandle>,
    shared: Arc<Shared>,
    limits: Arc<Limits>,
    refusals: Arc<Semaphore>,
}

impl Listener {
    pub fn bind(
        listen: SocketAddr,
        front: Front,
        proxies: Option<TrustedProxies>,
        shared: Arc<Shared>,
        workers: &Workers,
        limits: Arc<Limits>,
    ) -> std::io::Result<Listener> {
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
        Ok(Listener {
            listener,
            front: Arc::new(front),
            proxies,
            workers: workers.arbiters.iter().map(Arbiter::handle).collect(),
            limits,
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT)),
            shared,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts until shutdown is signalled, then closes the listening socket. Sessions go
    /// round-robin to the session threads.
    pub async fn run(self) {
        static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);
        let mut turn = 0usize;
        loop {
            let accepted = tokio::select! {
                _ = self.shared.shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Behind a trusted proxy the client's address is in the PROXY header, read on the
            // session thread; only the broker-wide place is taken here.
            let proxied = self.proxies.as_ref().is_some_and(|p| p.trusts(peer.ip()));
            let admitted = if proxied {
                self.limits.admit_global()
            } else {
                self.limits.admit(peer.ip())
            };
            let slot = match admitted {
                Ok(slot) => slot,
                Err(why) => {
                    self.refuse(stream, why);
                    continue;
                }
            };
            // Without this, small deliveries wait for Nagle's 40 ms on the subscriber side.
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            // A fixed send buffer (no autotuning up to megabytes): what a client that stops
            // reading pins in the kernel is bounded per socket, as the queues are in here.
            let send_buffer = self.shared.config.mqtt.socket_send_buffer_bytes;
            if send_buffer > 0 {
                if let Err(e) = socket2::SockRef::from(&stream).set_send_buffer_size(send_buffer) {
                    tracing::debug!(error = %e, "cannot set SO_SNDBUF");
                }
            }
            let stream = match stream.into_std() {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot detach accepted socket");
                    continue;
                }
            };
            let worker = &self.workers[turn % self.workers.len()];
            turn = turn.wrapping_add(1);
            let accepted = Accepted {
                stream,
                peer,
                id: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
                slot,
                front: self.front.clone(),
                proxied: proxied.then(|| self.limits.clone()),
            };
            session::Session::spawn(worker, accepted, self.shared.clone());
        }
        tracing::info!(transport = self.front.kind.label(), "MQTT listener closed");
    }

    /// Answers an over-cap connection without giving it a session: an MQTT 5 client on
    /// plain TCP gets CONNACK with `why`'s reason code; anything else (3.1.1, or a TLS or
    /// WebSocket listener, where answering would cost a handshake) a close. Counted either way.
    fn refuse(&self, mut stream: TcpStream, why: Close) {
        metrics::connection(self.front.kind.label(), why.label());
        if self.front.kind != Kind::Tcp {
            return; // Dropping the stream closes it.
        }
        let Ok(permit) = self.refusals.clone().try_acquire_owned() else {
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let mut codec = MqttCodec::server(REFUSAL_READ_LIMIT as u32);
            let mut buf = BytesMut::with_capacity(512);
            let connect = tokio::time::timeout(REFUSAL_READ_TIMEOUT, async {
                while buf.len() < REFUSAL_READ_LIMIT {
                    if stream.read_buf(&mut buf).await.ok()? == 0 {
                        return None;
                    }
                    match codec.decode(&mut buf) {
                        Ok(Some(Inbound::Connect(connect))) => return Some(connect.version),
                        Ok(None) => continue,
                        _ => return None,
                    }
                }
                None
            })
            .await;
            if let Ok(Some(Version::V5)) = connect {
                let mut out = BytesMut::new();
                let connack = Outbound::ConnAck {
                    reason: why.reason(),
                    session_present: false,
                    info: None,
                };
                if MqttCodec::for_version(Version::V5, REFUSAL_READ_LIMIT as u32)
                    .encode(connack, &mut out)
                    .is_ok()
                {
                    let _ = stream.write_all(&out).await;
                }
            }
            let _ = stream.shutdown().await;
        });
    }
}
