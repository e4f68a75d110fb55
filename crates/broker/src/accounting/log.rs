//! The metadata log of closed sessions: who, from where, when, how much — never what.
//! Short sessions are summed per hour; rows are purged after the retention period. Its SQL
//! runs on the directory's pool (the same database, `session_log` and each principal's
//! `last_seen`), in the subset of SQL both engines speak; it reads nothing else.

use sqlx::{AnyPool, Row};

use crate::directory::DirectoryError;
use sealrelay_wire::api::AdminSessionRecord;
use sealrelay_wire::PrincipalId;

/// One closed MQTT session, as the accounting module reports it.
pub struct SessionRecord {
    pub principal: PrincipalId,
    pub ip: String,
    pub connected_at: i64,
    pub disconnected_at: i64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub close_reason: &'static str,
}

/// The log, on the directory's database.
#[derive(Clone)]
pub struct SessionLog {
    pool: AnyPool,
}

impl SessionLog {
    pub fn new(pool: AnyPool) -> SessionLog {
        SessionLog { pool }
    }

    /// Writes a closed session's metadata and moves its principal's `last_seen`, in one
    /// transaction. A session shorter than `aggregate_below_secs` is added into the row of
    /// its principal, address and close reason for the hour, so a reconnect loop cannot add a
    /// row per connection.
    pub async fn record(
        &self,
        r: &SessionRecord,
        aggregate_below_secs: u64,
    ) -> Result<(), DirectoryError> {
        let short = r.disconnected_at.saturating_sub(r.connected_at) < aggregate_below_secs as i64;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO session_log (principal_id, ip, connected_at, disconnected_at, bytes_in, bytes_out, messages_in, messages_out, close_reason, hour) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (principal_id, ip, close_reason, hour) WHERE hour IS NOT NULL DO UPDATE SET \
             sessions = session_log.sessions + 1, \
             disconnected_at = CASE WHEN session_log.disconnected_at > excluded.disconnected_at \
                 THEN session_log.disconnected_at ELSE excluded.disconnected_at END, \
             bytes_in = session_log.bytes_in + excluded.bytes_in, bytes_out = session_log.bytes_out + excluded.bytes_out, \
             messages_in = session_log.messages_in + excluded.messages_in, \
             messages_out = session_log.messages_out + excluded.messages_out",
        )
        .bind(&r.principal.0[..])
        .bind(&r.ip)
        .bind(r.connected_at)
        .bind(r.disconnected_at)
        .bind(r.bytes_in as i64)
        .bind(r.bytes_out as i64)
        .bind(r.messages_in as i64)
        .bind(r.messages_out as i64)
        .bind(r.close_reason)
        .bind(short.then_some(r.connected_at / 3600))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE principals SET last_seen = $1 WHERE id = $2 AND (last_seen IS NULL OR last_seen < $1)",
        )
        .bind(r.disconnected_at)
        .bind(&r.principal.0[..])
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// `principal`'s closed sessions since `since` (unix seconds), newest first, at most
    /// `limit`.
    pub async fn of(
        &self,
        principal: PrincipalId,
        since: i64,
        limit: u32,
    ) -> Result<Vec<AdminSessionRecord>, DirectoryError> {
        sqlx::query(
            "SELECT ip, connected_at, disconnected_at, bytes_in, bytes_out, messages_in, messages_out, close_reason, sessions \
             FROM session_log WHERE principal_id = $1 AND disconnected_at >= $2 \
             ORDER BY disconnected_at DESC LIMIT $3",
        )
        .bind(&principal.0[..])
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            let count = |column| row.try_get::<i64, _>(column).map(|n| n.max(0) as u64);
            Ok(AdminSessionRecord {
                ip: row.try_get("ip")?,
                connected_at: row.try_get("connected_at")?,
                disconnected_at: row.try_get("disconnected_at")?,
                bytes_in: count("bytes_in")?,
                bytes_out: count("bytes_out")?,
                messages_in: count("messages_in")?,
                messages_out: count("messages_out")?,
                close_reason: row.try_get("close_reason")?,
                sessions: count("sessions")?,
            })
        })
        .collect()
    }

    /// Deletes session metadata that closed before `cutoff` (unix seconds).
    pub async fn purge_before(&self, cutoff: i64) -> Result<u64, DirectoryError> {
        Ok(
            sqlx::query("DELETE FROM session_log WHERE disconnected_at < $1")
                .bind(cutoff)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }
}
