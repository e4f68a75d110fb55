//! The accounting tables: `session_log` (one row per session, written at CONNACK, updated at
//! each checkpoint and at close; short sessions summed per hour), `usage_hours` (counts per
//! principal and hour) and `login_failures` (per principal, hour, address and reason), plus
//! each principal's `last_seen`. Its SQL runs on the directory's pool in the subset of SQL
//! both engines speak; it reads and writes nothing else.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row as _};

use crate::directory::DirectoryError;
use sealrelay_wire::api::{AdminSessionRecord, LoginFailureRecord, Traffic, UsageRecord};
use sealrelay_wire::PrincipalId;

/// `close_reason` of a session that has not closed yet.
pub const LIVE: &str = "live";
/// `close_reason` of a session whose node stopped without closing it.
pub const UNCLEAN: &str = "unclean_shutdown";

/// A session's row as the ledger writes it: at CONNACK, at each checkpoint and at close.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: i64,
    pub principal: PrincipalId,
    /// Per `accounting.ip_mode`.
    pub ip: String,
    pub transport: &'static str,
    pub version: &'static str,
    pub client_id: String,
    pub connected_at: i64,
    /// The close; while live, the last checkpoint.
    pub until: i64,
    /// The writing broker process (a random number drawn at its start).
    pub node: i64,
    pub traffic: Traffic,
    /// [`LIVE`] until the session closes.
    pub close_reason: &'static str,
}

/// Counts of one principal in one hour.
#[derive(Debug, Default, Clone, Copy)]
pub struct Usage {
    pub sessions: u64,
    pub traffic: Traffic,
}

/// Failed logins of one principal in one hour, from one address, for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Failure {
    pub principal: PrincipalId,
    pub hour: i64,
    pub ip: String,
    pub reason: &'static str,
}

/// What one write carries: written in one transaction, or kept whole for the next.
#[derive(Debug, Default)]
pub struct Batch {
    /// The latest state of each row written since the last write.
    pub rows: HashMap<i64, SessionRow>,
    /// Closed sessions shorter than `accounting.aggregate_below_secs`: each row goes, and
    /// its counts join the summed row of its principal, address, close reason and hour.
    pub folds: Vec<SessionRow>,
    pub usage: HashMap<(PrincipalId, i64), Usage>,
    /// How many, and the last when.
    pub failures: HashMap<Failure, (u64, i64)>,
    /// Each principal's latest session close.
    pub seen: HashMap<PrincipalId, i64>,
    /// A checkpoint's time: every live row of `node` not written above was still live then.
    pub alive: Option<(i64, i64)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
            && self.folds.is_empty()
            && self.usage.is_empty()
            && self.failures.is_empty()
            && self.seen.is_empty()
            && self.alive.is_none()
    }
}

/// Unsigned counts as SQL integers (both engines' integers are signed 64-bit).
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// An insert into `session_log` of every column [`insert_row`] binds, in its order, then
/// `$conflict`, the clause for a row already there.
macro_rules! insert_session_row {
    ($conflict:literal) => {
        concat!(
            "INSERT INTO session_log (principal_id, ip, transport, protocol_version, client_id, connected_at, \
             disconnected_at, bytes_in, bytes_out, messages_in, messages_out, wire_bytes_in, wire_bytes_out, \
             close_reason, id, hour, node) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) ",
            $conflict
        )
    };
}

/// A session's own row: its latest counts and state replace the written ones.
const OWN_ROW: &str = insert_session_row!(
    "ON CONFLICT (id) DO UPDATE SET disconnected_at = excluded.disconnected_at, \
     bytes_in = excluded.bytes_in, bytes_out = excluded.bytes_out, \
     messages_in = excluded.messages_in, messages_out = excluded.messages_out, \
     wire_bytes_in = excluded.wire_bytes_in, wire_bytes_out = excluded.wire_bytes_out, \
     close_reason = excluded.close_reason"
);

/// A short session's counts joining the summed row of its principal, address, close reason
/// and hour.
const SUMMED_ROW: &str = insert_session_row!(
    "ON CONFLICT (principal_id, ip, close_reason, hour) WHERE hour IS NOT NULL DO UPDATE SET \
     sessions = session_log.sessions + 1, \
     disconnected_at = CASE WHEN session_log.disconnected_at > excluded.disconnected_at \
         THEN session_log.disconnected_at ELSE excluded.disconnected_at END, \
     bytes_in = session_log.bytes_in + excluded.bytes_in, bytes_out = session_log.bytes_out + excluded.bytes_out, \
     messages_in = session_log.messages_in + excluded.messages_in, \
     messages_out = session_log.messages_out + excluded.messages_out, \
     wire_bytes_in = session_log.wire_bytes_in + excluded.wire_bytes_in, \
     wire_bytes_out = session_log.wire_bytes_out + excluded.wire_bytes_out"
);

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// The write of `r`: as its own row, or (`summed`) into its hour's row of short sessions.
fn insert_row(r: &SessionRow, summed: bool) -> Query<'_> {
    let (sql, id, hour) = match summed {
        false => (OWN_ROW, Some(r.id), None),
        true => (SUMMED_ROW, None, Some(r.connected_at / 3600)),
    };
    let query = sqlx::query(sql)
        .bind(&r.principal.0[..])
        .bind(&r.ip)
        .bind(r.transport)
        .bind(r.version)
        .bind(&r.client_id)
        .bind(r.connected_at)
        .bind(r.until);
    bind_traffic(query, &r.traffic)
        .bind(r.close_reason)
        .bind(id)
        .bind(hour)
        .bind(r.node)
}

/// Binds the six counts, in [`Traffic`]'s order.
fn bind_traffic<'q>(query: Query<'q>, t: &Traffic) -> Query<'q> {
    query
        .bind(int(t.bytes_in))
        .bind(int(t.bytes_out))
        .bind(int(t.messages_in))
        .bind(int(t.messages_out))
        .bind(int(t.wire_bytes_in))
        .bind(int(t.wire_bytes_out))
}

/// A count column (never negative as written).
fn count(row: &AnyRow, column: &str) -> Result<u64, sqlx::Error> {
    row.try_get::<i64, _>(column).map(|n| n.max(0) as u64)
}

/// The six count columns of a row.
fn traffic_of(row: &AnyRow) -> Result<Traffic, sqlx::Error> {
    Ok(Traffic {
        bytes_in: count(row, "bytes_in")?,
        bytes_out: count(row, "bytes_out")?,
        messages_in: count(row, "messages_in")?,
        messages_out: count(row, "messages_out")?,
        wire_bytes_in: count(row, "wire_bytes_in")?,
        wire_bytes_out: count(row, "wire_bytes_out")?,
    })
}

/// The accounting tables, on the directory's database.
#[derive(Clone)]
pub struct SessionLog {
    pool: AnyPool,
}

impl SessionLog {
    pub fn new(pool: AnyPool) -> SessionLog {
        SessionLog { pool }
    }

    /// Writes `batch` in one transaction.
    pub async fn write(&self, batch: &Batch) -> Result<(), DirectoryError> {
        let mut tx = self.pool.begin().await?;
        for r in batch.rows.values() {
            insert_row(r, false).execute(&mut *tx).await?;
        }
        for r in &batch.folds {
            sqlx::query("DELETE FROM session_log WHERE id = $1")
                .bind(r.id)
                .execute(&mut *tx)
                .await?;
            insert_row(r, true).execute(&mut *tx).await?;
        }
        for ((principal, hour), u) in &batch.usage {
            let query = sqlx::query(
                "INSERT INTO usage_hours (principal_id, hour, sessions, bytes_in, bytes_out, messages_in, messages_out, wire_bytes_in, wire_bytes_out) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (principal_id, hour) DO UPDATE SET sessions = usage_hours.sessions + excluded.sessions, \
                 bytes_in = usage_hours.bytes_in + excluded.bytes_in, bytes_out = usage_hours.bytes_out + excluded.bytes_out, \
                 messages_in = usage_hours.messages_in + excluded.messages_in, \
                 messages_out = usage_hours.messages_out + excluded.messages_out, \
                 wire_bytes_in = usage_hours.wire_bytes_in + excluded.wire_bytes_in, \
                 wire_bytes_out = usage_hours.wire_bytes_out + excluded.wire_bytes_out",
            )
            .bind(&principal.0[..])
            .bind(*hour)
            .bind(int(u.sessions));
            bind_traffic(query, &u.traffic).execute(&mut *tx).await?;
        }
        for (f, (count, last_at)) in &batch.failures {
            sqlx::query(
                "INSERT INTO login_failures (principal_id, hour, ip, reason, failures, last_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (principal_id, hour, ip, reason) DO UPDATE SET failures = login_failures.failures + excluded.failures, \
                 last_at = CASE WHEN login_failures.last_at > excluded.last_at THEN login_failures.last_at ELSE excluded.last_at END",
            )
            .bind(&f.principal.0[..])
            .bind(f.hour)
            .bind(&f.ip)
            .bind(f.reason)
            .bind(int(*count))
            .bind(*last_at)
            .execute(&mut *tx)
            .await?;
        }
        if let Some((node, at)) = batch.alive {
            sqlx::query(
                "UPDATE session_log SET disconnected_at = $1 WHERE close_reason = $2 AND node = $3 AND disconnected_at < $1",
            )
            .bind(at)
            .bind(LIVE)
            .bind(node)
            .execute(&mut *tx)
            .await?;
        }
        for (principal, at) in &batch.seen {
            sqlx::query(
                "UPDATE principals SET last_seen = $1 WHERE id = $2 AND (last_seen IS NULL OR last_seen < $1)",
            )
            .bind(*at)
            .bind(&principal.0[..])
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Closes as [`UNCLEAN`] the rows still live whose last checkpoint is before `before`
    /// (unix seconds): their node stopped without closing them. Their counts stay those of
    /// that checkpoint.
    pub async fn close_unclean(&self, before: i64) -> Result<u64, DirectoryError> {
        Ok(sqlx::query(
            "UPDATE session_log SET close_reason = $1 WHERE close_reason = $2 AND disconnected_at < $3",
        )
        .bind(UNCLEAN)
        .bind(LIVE)
        .bind(before)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// The rows `sql` selects for `principal` (`$1`), bound `$2` and at most `limit` (`$3`),
    /// each read by `read`.
    async fn records<T>(
        &self,
        sql: &str,
        (principal, bound, limit): (PrincipalId, i64, u32),
        read: impl Fn(&AnyRow) -> Result<T, sqlx::Error>,
    ) -> Result<Vec<T>, DirectoryError> {
        let rows = sqlx::query(sql)
            .bind(&principal.0[..])
            .bind(bound)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(read).collect::<Result<_, _>>()?)
    }

    /// `principal`'s sessions, live and closed, that lasted until `since` (unix seconds) or
    /// later, newest first, at most `limit`.
    pub async fn of(
        &self,
        principal: PrincipalId,
        since: i64,
        limit: u32,
    ) -> Result<Vec<AdminSessionRecord>, DirectoryError> {
        let sql = "SELECT ip, transport, protocol_version, client_id, connected_at, disconnected_at, bytes_in, bytes_out, \
             messages_in, messages_out, wire_bytes_in, wire_bytes_out, close_reason, sessions \
             FROM session_log WHERE principal_id = $1 AND disconnected_at >= $2 \
             ORDER BY disconnected_at DESC LIMIT $3";
        self.records(sql, (principal, since, limit), |row| {
            Ok(AdminSessionRecord {
                ip: row.try_get("ip")?,
                transport: row.try_get("transport")?,
                protocol_version: row.try_get("protocol_version")?,
                client_id: row.try_get("client_id")?,
                connected_at: row.try_get("connected_at")?,
                disconnected_at: row.try_get("disconnected_at")?,
                traffic: traffic_of(row)?,
                close_reason: row.try_get("close_reason")?,
                sessions: count(row, "sessions")?,
            })
        })
        .await
    }

    /// `principal`'s counts per hour from the hour of `since` (unix seconds), newest first.
    pub async fn usage_of(
        &self,
        principal: PrincipalId,
        since: i64,
        limit: u32,
    ) -> Result<Vec<UsageRecord>, DirectoryError> {
        let sql = "SELECT hour, sessions, bytes_in, bytes_out, messages_in, messages_out, wire_bytes_in, wire_bytes_out \
             FROM usage_hours WHERE principal_id = $1 AND hour >= $2 ORDER BY hour DESC LIMIT $3";
        self.records(sql, (principal, since / 3600, limit), |row| {
            Ok(UsageRecord {
                hour_start: row.try_get::<i64, _>("hour")? * 3600,
                sessions: count(row, "sessions")?,
                traffic: traffic_of(row)?,
            })
        })
        .await
    }

    /// Failed logins against `principal` from the hour of `since` on, newest first.
    pub async fn failures_of(
        &self,
        principal: PrincipalId,
        since: i64,
        limit: u32,
    ) -> Result<Vec<LoginFailureRecord>, DirectoryError> {
        let sql = "SELECT hour, ip, reason, failures, last_at FROM login_failures \
             WHERE principal_id = $1 AND hour >= $2 ORDER BY hour DESC, last_at DESC LIMIT $3";
        self.records(sql, (principal, since / 3600, limit), |row| {
            Ok(LoginFailureRecord {
                hour_start: row.try_get::<i64, _>("hour")? * 3600,
                ip: row.try_get("ip")?,
                reason: row.try_get("reason")?,
                failures: count(row, "failures")?,
                last_at: row.try_get("last_at")?,
            })
        })
        .await
    }

    /// Deletes accounting of what ended before `cutoff` (unix seconds); the rows deleted.
    pub async fn purge_before(&self, cutoff: i64) -> Result<u64, DirectoryError> {
        let mut purged = 0;
        for (sql, bound) in [
            ("DELETE FROM session_log WHERE disconnected_at < $1", cutoff),
            ("DELETE FROM usage_hours WHERE hour < $1", cutoff / 3600),
            ("DELETE FROM login_failures WHERE hour < $1", cutoff / 3600),
        ] {
            purged += sqlx::query(sql)
                .bind(bound)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(purged)
    }
}
