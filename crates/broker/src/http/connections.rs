//! The per-address share of the HTTP listeners (`http.max_connections_per_ip`), taken when a
//! connection is accepted (after the TLS handshake on HTTPS) and held for its whole life, so
//! that one client cannot fill `http.max_connections` and keep everyone else waiting in the
//! backlog. An over-share connection is answered 429 on its first request while a few such
//! answers are pending; past them it is closed at once, unanswered, so that answering
//! cannot itself cost descriptors. Trusted proxies are exempt: every client behind them
//! shares their address. Uses actix only through its connect hook and request extensions.

use std::any::Any;
use std::cell::Cell;
use std::net::Shutdown;
use std::sync::Arc;

use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics;
use crate::mqtt::proxy::TrustedProxies;
use crate::peers::{AddressBlock, AddressSlot, PerAddress};
use sealrelay_wire::Close;

/// Over-share connections answered with a 429 at once; past these they are closed.
const ANSWERED_REFUSALS: usize = 64;

pub(crate) struct ConnectionCaps {
    per_ip: PerAddress,
    refusals: Arc<Semaphore>,
    trusted_proxies: TrustedProxies,
}

/// Held in a connection's extensions while it lives: its place in its address's share (none
/// behind a trusted proxy), and whether a request ever came, so that a connection closed
/// without one — headers too slow (actix answers those 408 itself, before there is a request
/// to route) or nothing sent at all — is counted.
pub(crate) struct Admitted {
    _slot: Option<AddressSlot>,
    transport: &'static str,
    requested: Cell<bool>,
}

impl Admitted {
    pub(crate) fn requested(&self) {
        self.requested.set(true);
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        metrics::http_connections(self.transport, -1.0);
        if !self.requested.get() {
            metrics::connection(self.transport, "closed_before_request");
        }
    }
}

/// Marks a connection over its address's share, to be answered 429 and closed; holds one
/// of the few answered refusals.
pub(crate) struct OverShare {
    _answer: OwnedSemaphorePermit,
}

impl ConnectionCaps {
    pub(crate) fn new(
        max_per_ip: usize,
        block: AddressBlock,
        trusted_proxies: TrustedProxies,
    ) -> ConnectionCaps {
        ConnectionCaps {
            per_ip: PerAddress::new(max_per_ip, block),
            refusals: Arc::new(Semaphore::new(ANSWERED_REFUSALS)),
            trusted_proxies,
        }
    }

    /// actix's connect hook: `io` is the plain or the TLS stream of a new connection.
    pub(crate) fn on_connect(&self, io: &dyn Any, extensions: &mut Extensions) {
        type Tls = actix_tls::accept::rustls_0_23::TlsStream<TcpStream>;
        let (tcp, transport) = if let Some(tcp) = io.downcast_ref::<TcpStream>() {
            (tcp, "http")
        } else if let Some(tls) = io.downcast_ref::<Tls>() {
            (tls.get_ref().0, "https")
        } else {
            return;
        };
        let Ok(peer) = tcp.peer_addr() else {
            return;
        };
        let admitted = |slot| {
            metrics::http_connections(transport, 1.0);
            Admitted {
                _slot: slot,
                transport,
                requested: Cell::new(false),
            }
        };
        if self.trusted_proxies.trusts(peer.ip()) {
            extensions.insert(admitted(None));
            return;
        }
        if let Some(slot) = self.per_ip.admit(peer.ip()) {
            extensions.insert(admitted(Some(slot)));
            return;
        }
        metrics::connection(transport, Close::RefusedIpCapacity.label());
        match self.refusals.clone().try_acquire_owned() {
            Ok(permit) => {
                extensions.insert(OverShare { _answer: permit });
            }
            // The dispatcher reads end-of-stream and drops the connection straight away.
            Err(_) => {
                let _ = socket2::SockRef::from(tcp).shutdown(Shutdown::Both);
            }
        }
    }
}
