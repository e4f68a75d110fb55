//! What the server holds about a principal, printed: `sealrelay activity` (the user's own
//! report) and `sealrelay admin activity` / `admin session-log` (the operator's export),
//! as tables or, with `--json`, the API's JSON as it came.

use anyhow::Result;
use sealrelay_wire::api::{Activity, AdminSessionRecord};

use super::when;

/// `90m`, `24h`, `7d`, `30s` → the unix time that long ago.
pub(super) fn since(text: &str) -> Result<i64> {
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    match number.parse::<i64>() {
        Ok(n) if scale > 0 && n >= 0 => {
            Ok(time::OffsetDateTime::now_utc().unix_timestamp() - n * scale)
        }
        _ => anyhow::bail!("--since {text}: write an age like 90m, 24h or 7d"),
    }
}

/// Sessions, newest first, one line each.
pub(super) fn print_sessions(sessions: &[AdminSessionRecord]) {
    println!(
        "{:<18}  {:<9}  {:<24}  {:>6}  {:>6}  {:>10}  {:>10}  {:<20}  connected → ended",
        "address", "via", "client id", "in", "out", "wire in", "wire out", "state"
    );
    for s in sessions {
        // Short sessions are summed per address, reason and hour: say how many.
        let state = match s.sessions {
            1 => s.close_reason.clone(),
            n => format!("{} ×{n}", s.close_reason),
        };
        let via = match (&s.transport, &s.protocol_version) {
            (Some(t), Some(v)) => format!("{t} {v}"),
            _ => "-".to_owned(),
        };
        let ended = match s.close_reason.as_str() {
            "live" => format!("live, counted {}", when(s.disconnected_at)),
            _ => when(s.disconnected_at),
        };
        println!(
            "{:<18}  {:<9}  {:<24}  {:>6}  {:>6}  {:>10}  {:>10}  {:<20}  {} → {}",
            s.ip,
            via,
            s.client_id.as_deref().unwrap_or("-"),
            s.traffic.messages_in,
            s.traffic.messages_out,
            s.traffic.wire_bytes_in,
            s.traffic.wire_bytes_out,
            state,
            when(s.connected_at),
            ended
        );
    }
}

/// The whole report: each principal's stored values, sessions, hourly usage and failed
/// logins; pairings; what is kept for a while.
pub(super) fn print_report(report: &Activity) {
    println!("what the server holds, from {}", when(report.since));
    for p in &report.principals {
        println!();
        println!("{} {} ({})", p.kind.as_str(), p.login, p.id);
        println!("  witness      {}", p.witness);
        println!("  created      {}", when(p.created_at));
        if let Some(at) = p.changed_at {
            println!("  key changed  {}", when(at));
        }
        if let Some(at) = p.last_seen {
            println!("  last seen    {}", when(at));
        }
        if let Some(kdf) = &p.kdf {
            println!(
                "  kdf          argon2id, {} KiB, {} iterations, {} lanes",
                kdf.memory_kib, kdf.iterations, kdf.parallelism
            );
        }
        for blob in &p.stored {
            println!(
                "  stored       {:<13} {:>6} bytes  sha256 {}",
                blob.column, blob.bytes, blob.sha256
            );
        }
        println!("  sessions ({}):", p.sessions.len());
        print_sessions(&p.sessions);
        println!("  usage per hour ({}):", p.usage.len());
        for u in &p.usage {
            println!(
                "    {}  {} sessions  {} in / {} out envelopes  {} / {} wire bytes",
                when(u.hour_start),
                u.sessions,
                u.traffic.messages_in,
                u.traffic.messages_out,
                u.traffic.wire_bytes_in,
                u.traffic.wire_bytes_out
            );
        }
        println!("  failed logins ({}):", p.login_failures.len());
        for f in &p.login_failures {
            println!(
                "    {}  {} × {} from {}, last {}",
                when(f.hour_start),
                f.failures,
                f.reason,
                f.ip,
                when(f.last_at)
            );
        }
    }
    println!();
    for pairing in &report.pairings {
        println!(
            "paired {} with {} since {}{}",
            pairing.user,
            pairing.instance,
            when(pairing.created_at),
            if pairing.stale_owner_key {
                " (to re-enrol)"
            } else {
                ""
            }
        );
    }
    for held in &report.held {
        println!("kept until {}: {}", when(held.expires_at), held.what);
    }
}
