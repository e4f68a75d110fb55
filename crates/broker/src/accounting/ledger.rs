//! The ledger: one writer task that owns the accounting writes. Sessions tell it when they
//! reach CONNACK and when they close, the authenticator when a login against an existing
//! principal fails; it writes what it was told in batches (one transaction each, as fast as
//! the database takes them), and on every checkpoint (`accounting.checkpoint_secs`) writes
//! every live session's counts and adds what they grew by to the hour's usage — one batched
//! write per checkpoint, never one per message. A write that fails is kept and retried with
//! the next, so an outage of the database costs nothing while the broker keeps running.
//! Uses tokio's channel and timer and the session log's SQL; knows nothing of MQTT.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::log::{Batch, Failure, SessionLog, SessionRow, Usage, LIVE};
use super::Counts;
use crate::config::IpMode;
use crate::directory::unix_now;
use crate::metrics;
use sealrelay_wire::api::Traffic;
use sealrelay_wire::PrincipalId;

/// Events handled in one write at most: a burst of connects is written in a few large
/// transactions rather than one huge one.
const BATCH_EVENTS: usize = 4096;
/// Rows a failing database may leave waiting; past it everything waiting is dropped
/// (counted), so an outage cannot grow the broker's memory without bound.
const MAX_UNWRITTEN_ROWS: usize = 200_000;

/// A session at CONNACK, as its row starts.
pub struct Opened {
    pub principal: PrincipalId,
    pub ip: IpAddr,
    pub transport: &'static str,
    pub version: &'static str,
    pub client_id: String,
    pub connected_at: i64,
    pub counts: Arc<Counts>,
}

enum Event {
    Opened(i64, Opened),
    /// The row, how it closed, and the session's shutdown token: a stopping broker waits
    /// until the close was written (or tried).
    Closed(i64, &'static str, TaskTrackerToken),
    LoginFailed(PrincipalId, IpAddr, &'static str),
}

/// The sending side, one per broker, cloned into every session and the authenticator.
#[derive(Clone)]
pub struct Ledger {
    events: mpsc::UnboundedSender<Event>,
}

impl Ledger {
    /// Closes the rows left live by a broker that stopped without closing them — on a single
    /// node every one (it owns its database), on a cluster (`clustered`) those no node
    /// checkpointed for three intervals, and those again at every checkpoint — then starts
    /// the writer on the current runtime. Called before any session exists.
    pub async fn start(
        log: SessionLog,
        config: &crate::config::Accounting,
        clustered: bool,
    ) -> Ledger {
        let (events, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            log,
            node: random_i64(),
            ip_mode: config.ip_mode,
            aggregate_below: i64::try_from(config.aggregate_below_secs).unwrap_or(i64::MAX),
            every: Duration::from_secs(config.checkpoint_secs.max(1)),
            clustered,
            live: HashMap::new(),
            batch: Batch::default(),
            tokens: Vec::new(),
        };
        writer.sweep().await;
        // Not a task shutdown aborts: it writes the closes shutdown waits for.
        tokio::spawn(writer.run(rx));
        Ledger { events }
    }

    /// A ledger whose events go nowhere, for unit tests of its users.
    #[cfg(test)]
    pub fn nowhere() -> Ledger {
        Ledger {
            events: mpsc::unbounded_channel().0,
        }
    }

    /// A session reached CONNACK: its row is written with the next batch. Returns the
    /// row's id, for [`Ledger::close`].
    pub fn open(&self, opened: Opened) -> i64 {
        let id = random_i64();
        let _ = self.events.send(Event::Opened(id, opened));
        id
    }

    /// The session of row `id` closed for `reason`; `alive` is held until that is written.
    pub fn close(&self, id: i64, reason: &'static str, alive: TaskTrackerToken) {
        let _ = self.events.send(Event::Closed(id, reason, alive));
    }

    /// A login against `principal` from `ip` failed for `reason` (`denied`, `rate_limited`).
    pub fn login_failed(&self, principal: PrincipalId, ip: IpAddr, reason: &'static str) {
        let _ = self.events.send(Event::LoginFailed(principal, ip, reason));
    }
}

/// A row id or a node's number: random, so that nodes draw them without asking each other.
fn random_i64() -> i64 {
    i64::from_ne_bytes(rand_core::RngCore::next_u64(&mut rand_core::OsRng).to_ne_bytes())
}

/// A live session as the writer knows it.
struct Live {
    opened: Opened,
    /// Its counts at the last write: what the hour's usage has already been given.
    written: Traffic,
}

struct Writer {
    log: SessionLog,
    /// This process's number on the rows it writes.
    node: i64,
    ip_mode: IpMode,
    aggregate_below: i64,
    every: Duration,
    /// Other nodes hold live rows too: only stale ones are this node's to close.
    clustered: bool,
    live: HashMap<i64, Live>,
    /// What the next write carries (including what a failed write left).
    batch: Batch,
    /// Shutdown tokens of the closes in `batch`, dropped once it was tried.
    tokens: Vec<TaskTrackerToken>,
}

impl Writer {
    async fn run(mut self, mut events: mpsc::UnboundedReceiver<Event>) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else { break };
                    self.take(event);
                    let mut more = 1;
                    while more < BATCH_EVENTS {
                        let Ok(event) = events.try_recv() else { break };
                        self.take(event);
                        more += 1;
                    }
                    self.write("events").await;
                }
                _ = tick.tick() => {
                    self.checkpoint();
                    self.write("checkpoint").await;
                    if self.clustered {
                        self.sweep().await;
                    }
                }
            }
        }
        self.write("events").await;
    }

    fn take(&mut self, event: Event) {
        let now = unix_now();
        match event {
            Event::Opened(id, opened) => {
                self.usage(opened.principal, opened.connected_at).sessions += 1;
                let live = Live {
                    opened,
                    written: Traffic::default(),
                };
                self.batch.rows.insert(id, self.row(id, &live, now, LIVE));
                self.live.insert(id, live);
            }
            Event::Closed(id, reason, token) => {
                self.tokens.push(token);
                let Some(mut live) = self.live.remove(&id) else {
                    return;
                };
                let row = self.grow(id, &mut live, now, reason);
                self.batch.seen.insert(live.opened.principal, now);
                if now - live.opened.connected_at < self.aggregate_below {
                    self.batch.rows.remove(&id);
                    self.batch.folds.push(row);
                } else {
                    self.batch.rows.insert(id, row);
                }
            }
            Event::LoginFailed(principal, ip, reason) => {
                let failure = Failure {
                    principal,
                    hour: now / 3600,
                    ip: self.ip_mode.show(ip),
                    reason,
                };
                let (count, last) = self.batch.failures.entry(failure).or_default();
                *count += 1;
                *last = now;
            }
        }
    }

    /// Every live session's row as of now, and what it grew by into the hour's usage: the
    /// rows whose counts changed in full, the others by one statement saying they are live.
    fn checkpoint(&mut self) {
        let now = unix_now();
        let mut live = std::mem::take(&mut self.live);
        for (id, session) in &mut live {
            if session.opened.counts.totals() != session.written {
                let row = self.grow(*id, session, now, LIVE);
                self.batch.rows.insert(*id, row);
            }
        }
        self.live = live;
        self.batch.alive = Some((self.node, now));
    }

    /// `live`'s row as of `now`, adding what it counted since the last write to the usage.
    fn grow(&mut self, id: i64, live: &mut Live, now: i64, reason: &'static str) -> SessionRow {
        let totals = live.opened.counts.totals();
        let grown = totals.since(live.written);
        live.written = totals;
        if grown != Traffic::default() {
            self.usage(live.opened.principal, now).traffic.add(grown);
        }
        self.row(id, live, now, reason)
    }

    fn row(&self, id: i64, live: &Live, until: i64, close_reason: &'static str) -> SessionRow {
        let o = &live.opened;
        SessionRow {
            id,
            principal: o.principal,
            ip: self.ip_mode.show(o.ip),
            transport: o.transport,
            version: o.version,
            client_id: o.client_id.clone(),
            connected_at: o.connected_at,
            until,
            node: self.node,
            traffic: live.written,
            close_reason,
        }
    }

    fn usage(&mut self, principal: PrincipalId, at: i64) -> &mut Usage {
        self.batch.usage.entry((principal, at / 3600)).or_default()
    }

    async fn write(&mut self, what: &'static str) {
        if self.batch.is_empty() {
            self.tokens.clear();
            return;
        }
        let started = std::time::Instant::now();
        match self.log.write(&self.batch).await {
            Ok(()) => {
                self.batch = Batch::default();
                metrics::accounting_write(what, "ok", started.elapsed().as_secs_f64());
            }
            Err(e) => {
                metrics::accounting_write(what, "failed", started.elapsed().as_secs_f64());
                tracing::warn!(error = %e, "accounting write failed; it is retried with the next");
                if self.batch.rows.len() + self.batch.folds.len() > MAX_UNWRITTEN_ROWS {
                    tracing::error!(
                        rows = self.batch.rows.len() + self.batch.folds.len(),
                        "accounting dropped rows it could not write"
                    );
                    metrics::accounting_write(what, "dropped", 0.0);
                    self.batch = Batch::default();
                }
            }
        }
        self.tokens.clear();
    }

    /// Closes as `unclean_shutdown` the live rows no broker will close: all of them on a
    /// single node, those nobody checkpointed for three intervals on a cluster.
    async fn sweep(&self) {
        let before = match self.clustered {
            true => unix_now() - 3 * self.every.as_secs() as i64,
            false => i64::MAX,
        };
        match self.log.close_unclean(before).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                sessions = n,
                "closed sessions a stopped broker left open, as unclean_shutdown"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not close sessions a stopped broker left open")
            }
        }
    }
}
