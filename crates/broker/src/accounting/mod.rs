//! Metadata accounting: for each MQTT session, who, from which address, when, over what,
//! and how many envelopes and bytes each way — never what. A session's row is written at
//! CONNACK and checkpointed while it lives ([`ledger`], one writer task), counts are summed
//! per principal and hour, failed logins against existing principals per hour, all on the
//! directory's database ([`log`]) and purged after the retention period. Uses tokio's I/O
//! traits (to count the bytes a connection carries), the directory's pool and error type;
//! never a payload, a secret or a key.

pub mod ledger;
pub mod log;

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::directory::{unix_now, Directory};
use log::SessionLog;
use sealrelay_wire::api::Traffic;
use sealrelay_wire::PrincipalId;

/// A live session's counts. Written by its session alone (relaxed adds, nothing shared
/// with other sessions), read by the operator's listing of live sessions and by the ledger
/// at each checkpoint and at close.
#[derive(Debug, Default)]
pub struct Counts {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    wire_in: AtomicU64,
    wire_out: AtomicU64,
}

impl Counts {
    /// One envelope of `size` bytes accepted from the client.
    pub fn received(&self, size: u64) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(size, Ordering::Relaxed);
    }

    /// One envelope of `size` bytes written to the client.
    pub fn sent(&self, size: u64) {
        self.messages_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(size, Ordering::Relaxed);
    }

    pub fn totals(&self) -> Traffic {
        Traffic {
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            messages_in: self.messages_in.load(Ordering::Relaxed),
            messages_out: self.messages_out.load(Ordering::Relaxed),
            wire_bytes_in: self.wire_in.load(Ordering::Relaxed),
            wire_bytes_out: self.wire_out.load(Ordering::Relaxed),
        }
    }
}

/// One half of a connection's byte stream, counting what crosses it into [`Counts`]: the
/// reading half the bytes in, the writing half the bytes out. Wrapped around what the
/// transport hands the session (TLS decrypted, WebSocket frames unwrapped), so it counts
/// the MQTT bytes the client's library wrote and read.
pub struct Metered<T> {
    inner: T,
    counts: Arc<Counts>,
}

impl<T> Metered<T> {
    pub fn new(inner: T, counts: Arc<Counts>) -> Self {
        Metered { inner, counts }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        self.counts.wire_in.fetch_add(read, Ordering::Relaxed);
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.counts.wire_out.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What is metered of one session: where from, since when, as whom, its counts, and its
/// row in the ledger once it has one.
pub struct Meter {
    pub ip: IpAddr,
    pub connected_at: i64,
    pub principal: Option<PrincipalId>,
    pub counts: Arc<Counts>,
    /// Set at CONNACK: the id of the session's row ([`ledger::Ledger::open`]).
    pub row: Option<i64>,
}

impl Meter {
    pub fn start(ip: IpAddr) -> Self {
        Meter {
            ip,
            connected_at: unix_now(),
            principal: None,
            counts: Arc::default(),
            row: None,
        }
    }
}

/// Deletes accounting older than `retention_days`, and password material and invites
/// past their time, hourly, for as long as the returned task lives.
pub fn spawn_retention(
    (log, directory): (SessionLog, Arc<Directory>),
    retention_days: u32,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            let cutoff = unix_now() - i64::from(retention_days) * 86_400;
            match log.purge_before(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "purged expired accounting"),
                Err(e) => tracing::warn!(error = %e, "accounting purge failed"),
            }
            // Replaced password material and invites are promised to last only so long.
            match directory.purge_expired_credentials().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "purged expired previous passwords and invites"),
                Err(e) => tracing::warn!(error = %e, "previous password and invite purge failed"),
            }
        }
    })
}
