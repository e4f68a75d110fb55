//! Metadata accounting: for each MQTT session, who, from which IP, when, and how many
//! envelopes and bytes each way — never what. Records land in the session log ([`log`], on
//! the directory's database) when a session closes and are purged after the retention
//! period. Uses the directory's pool and its error type; never a payload.

pub mod log;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::directory::{unix_now, Directory};
use log::{SessionLog, SessionRecord};
use sealrelay_wire::PrincipalId;

/// A live session's envelope and byte counts. Written by its session alone (relaxed adds on
/// its own cache line, nothing shared with other sessions), read by the operator's listing
/// of live sessions and by the record written when the session closes.
#[derive(Debug, Default)]
pub struct Counts {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
}

/// A snapshot of [`Counts`]: bytes and messages in and out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub messages_in: u64,
    pub messages_out: u64,
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

    pub fn totals(&self) -> Totals {
        Totals {
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            messages_in: self.messages_in.load(Ordering::Relaxed),
            messages_out: self.messages_out.load(Ordering::Relaxed),
        }
    }
}

/// What is metered of one session: where from, since when, as whom, and its counts.
pub struct Meter {
    pub ip: IpAddr,
    pub connected_at: i64,
    pub principal: Option<PrincipalId>,
    pub counts: Arc<Counts>,
}

impl Meter {
    pub fn start(ip: IpAddr) -> Self {
        Meter {
            ip,
            connected_at: unix_now(),
            principal: None,
            counts: Arc::default(),
        }
    }

    /// The record of a session that authenticated; `None` for one that never did.
    pub fn finish(&self, close_reason: &'static str) -> Option<SessionRecord> {
        let totals = self.counts.totals();
        Some(SessionRecord {
            principal: self.principal?,
            ip: self.ip.to_string(),
            connected_at: self.connected_at,
            disconnected_at: unix_now(),
            bytes_in: totals.bytes_in,
            bytes_out: totals.bytes_out,
            messages_in: totals.messages_in,
            messages_out: totals.messages_out,
            close_reason,
        })
    }
}

/// Deletes session metadata older than `retention_days`, and password material and invites
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
                Ok(n) => tracing::info!(rows = n, "purged expired session metadata"),
                Err(e) => tracing::warn!(error = %e, "session metadata purge failed"),
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
