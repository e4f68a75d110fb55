//! Metadata accounting: for each MQTT session, who, from which IP, when, and how many
//! envelopes and bytes each way — never what. Records land in the directory's
//! `session_log` when a session closes and are purged after the retention period.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::directory::{unix_now, Directory, SessionRecord};
use sealrelay_wire::PrincipalId;

/// Per-session counters, owned by the session actor (no atomics on the hot path).
pub struct Meter {
    ip: IpAddr,
    connected_at: i64,
    pub principal: Option<PrincipalId>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub messages_in: u64,
    pub messages_out: u64,
}

impl Meter {
    pub fn start(ip: IpAddr) -> Self {
        Meter {
            ip,
            connected_at: unix_now(),
            principal: None,
            bytes_in: 0,
            bytes_out: 0,
            messages_in: 0,
            messages_out: 0,
        }
    }

    /// The record of a session that authenticated; `None` for one that never did.
    pub fn finish(&self, close_reason: &'static str) -> Option<SessionRecord> {
        Some(SessionRecord {
            principal: self.principal?,
            ip: self.ip.to_string(),
            connected_at: self.connected_at,
            disconnected_at: unix_now(),
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            messages_in: self.messages_in,
            messages_out: self.messages_out,
            close_reason,
        })
    }
}

/// Deletes session metadata older than `retention_days`, hourly, for as long as the
/// returned task lives.
pub fn spawn_retention(
    directory: Arc<Directory>,
    retention_days: u32,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            let cutoff = unix_now() - i64::from(retention_days) * 86_400;
            match directory.purge_sessions_before(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "purged expired session metadata"),
                Err(e) => tracing::warn!(error = %e, "session metadata purge failed"),
            }
        }
    })
}
