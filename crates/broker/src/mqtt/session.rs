//! One actor per MQTT connection: CONNECT and login, the ACL on SUBSCRIBE and PUBLISH,
//! the envelope header check, delivery to the recipient's sessions, QoS 1 in flight
//! toward this client, keepalive and takeover, and a persistent session's state handed to
//! the router when the connection ends and taken back when the client returns.
//!
//! This is the only module that knows sessions are actix actors: the router reaches one
//! through the [`SessionSink`] it is given, and the listener through [`Session::spawn`].
//!
//! Writes go through a writer task on the same arbiter rather than actix's `FramedWrite`:
//! its high-watermark pause only triggers on `WouldBlock`, which tokio sockets never
//! return, so its buffer could grow without bound behind a slow reader. Here every byte
//! handed to a session stays counted until it has been flushed to the socket.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio_util::codec::{Encoder, FramedRead};
use zeroize::Zeroizing;

use tokio_util::task::task_tracker::TaskTrackerToken;

use super::codec::{
    CodecError, ConnAckInfo, Connect, Inbound, MqttCodec, Outbound, Progress, Publish, Version,
};
use super::limits::{ConnectionSlot, Limits};
use super::proxy::read_header;
use super::throttle::{Throttle, ThrottledRead};
use super::transport::{Front, Kind, Reader, Writer};
use super::Shared;
use crate::accounting::ledger::Opened;
use crate::accounting::{Meter, Metered};
use crate::auth::AuthError;
use crate::directory::Credentials;
use crate::metrics;
use crate::rate::{Counted, Window};
use crate::router::parked::{Parked, Queued};
use crate::router::{Attached, Budget, Delivery, Facts, Routed, SessionHandle, SessionSink};
use sealrelay_wire::envelope::Header;
use sealrelay_wire::{inbox_owner, Close, PrincipalId, Reason};

const MAX_CLIENT_ID_LEN: usize = 256;
/// Inbound QoS 1/2 publishes a client may have unacknowledged (MQTT 5 Receive Maximum).
/// Acks are sent as each publish is handled, so this only caps a misbehaving client.
const RECEIVE_MAXIMUM: u16 = 1024;

/// A frame for the writer task, and how many budget bytes to release once it is flushed.
struct Frame {
    bytes: Bytes,
    release: usize,
    /// A delivery's hand-off to this session: its routing time ends when it is flushed.
    routed: Option<Instant>,
    /// Bytes of an answer to the client's own packets (acknowledgements, PINGRESP, SUBACK),
    /// counted in the session's `answers` until written; 0 for a delivery.
    answer: usize,
}

/// The writer task ended: the socket closed or failed, or the session finished it.
#[derive(Message)]
#[rtype(result = "()")]
struct WriterDone;

/// An envelope for the session's own inbox; the payload is shared across a fan-out.
#[derive(Message)]
#[rtype(result = "()")]
struct Deliver {
    payload: Bytes,
    qos: u8,
    /// When the router handed it over, for `sealrelay_routing_seconds`, if it is one of
    /// the deliveries timed.
    routed: Option<Instant>,
}

/// One delivery in this many is timed for `sealrelay_routing_seconds`: plenty for its
/// percentiles. Timing every one (two clock reads and a histogram sample) cost the broker
/// 6–7% more CPU per message (load-tests/compare-base.sh, docs/benchmarks.md); one in 16 is
/// within run-to-run noise.
const TIMED_EVERY: u32 = 16;

thread_local! {
    /// Deliveries handed over on this thread, counting up to the next one timed.
    static HANDED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Asks the session to close, saying why.
#[derive(Message)]
#[rtype(result = "()")]
struct Kick(Close);

/// What the session this one took over held when it ended.
#[derive(Message)]
#[rtype(result = "()")]
struct Adopt(Parked);

/// How the router reaches a session actor.
struct ActorSink(Addr<Session>);

impl SessionSink for ActorSink {
    fn deliver(&self, payload: Bytes, qos: u8) {
        // Unbounded, but the router has already charged the payload to the session's byte
        // budget and refuses deliveries past it.
        // The first on each thread is timed, then one in TIMED_EVERY.
        let handed = HANDED.with(|n| n.replace(n.get().wrapping_add(1)));
        self.0.do_send(Deliver {
            payload,
            qos,
            routed: handed.is_multiple_of(TIMED_EVERY).then(Instant::now),
        });
    }

    fn kick(&self, why: Close) {
        // A full mailbox means the session is already stuck; it still sees the kick
        // when it next runs, because do_send does not drop.
        self.0.do_send(Kick(why));
    }

    fn adopt(&self, parked: Parked) {
        self.0.do_send(Adopt(parked));
    }
}

/// Where a parked session's late deliveries go.
struct ParkedAs {
    principal: PrincipalId,
    /// The account its parked bytes count toward (`Parked::account`).
    account: PrincipalId,
    client_id: String,
    inbox_qos: Option<u8>,
    expiry: Duration,
}

impl ParkedAs {
    fn parked(
        &self,
        unacked: Vec<(u16, Bytes)>,
        waiting: impl IntoIterator<Item = (Bytes, bool)>,
    ) -> Parked {
        let id = self.client_id.clone();
        Parked::new(
            id,
            self.account,
            self.inbox_qos,
            unacked,
            waiting,
            self.expiry,
        )
    }
}

/// A session past its login, attached to the router, on its way to CONNACK.
struct Joining {
    principal: PrincipalId,
    credentials: Credentials,
    login: String,
    link: Arc<SessionHandle>,
    keep_alive: u16,
    receive_maximum: Option<u16>,
    /// The client id the broker assigned, if the client gave none.
    assigned: Option<String>,
    /// Session expiry granted, and asked for.
    expiry: u32,
    asked: u32,
}

/// A QoS 1 or 2 publish of the client's, not yet acknowledged: its recipients on other
/// nodes have not all answered, or an earlier publish waits for theirs (acknowledgements go
/// in the order publishes came, MQTT-4.6.0-2).
struct Owed {
    qos: u8,
    pkid: u16,
    /// For QoS 2, the publish's digest, kept until PUBREL once delivered.
    digest: Option<u64>,
}

/// A QoS 1 delivery waiting for an in-flight slot.
struct Waiting {
    payload: Bytes,
    /// Written before, on a connection that ended without its acknowledgement.
    dup: bool,
    /// When the router handed it to this session; `None` for what waited offline, whose
    /// wait is not routing.
    routed: Option<Instant>,
}

impl From<Queued> for Waiting {
    fn from(q: Queued) -> Waiting {
        Waiting {
            payload: q.payload,
            dup: q.dup,
            routed: None,
        }
    }
}

struct Live {
    principal: PrincipalId,
    /// The user this principal is, or the user who added this instance: what its parked
    /// bytes count toward (`mqtt.offline_account_bytes`).
    account: PrincipalId,
    inbox: Bytes,
    link: Arc<SessionHandle>,
    max_inflight: usize,
    next_pkid: u16,
    /// QoS 1 deliveries written but not yet acknowledged: packet id → (order written,
    /// payload), kept whole so a persistent session can resend them.
    inflight: HashMap<u16, (u64, Bytes)>,
    /// Deliveries written so far: orders `inflight`.
    written: u64,
    /// QoS 1 deliveries waiting for an in-flight slot.
    waiting: VecDeque<Waiting>,
    /// How long the session outlives the connection (0: not at all).
    expiry: Duration,
    /// Inbound QoS 2 packet ids delivered and awaiting PUBREL (exactly-once bookkeeping),
    /// with a keyed digest of topic and payload: a resend of the same message is a
    /// duplicate, another message under the same id is refused.
    awaiting_pubrel: HashMap<u16, u64>,
    /// Keys those digests (random per session, so a client cannot aim for a collision).
    digests: RandomState,
    /// The client's publishes not yet acknowledged, in order, each with its outcome once
    /// known; at most `RECEIVE_MAXIMUM`.
    owed: VecDeque<(Owed, Option<Delivery>)>,
    /// Publishes that waited in `owed` and were acknowledged: numbers the next one.
    owed_total: u64,
    /// Publishes refused in the current minute: past `mqtt.max_refusals_per_minute` the
    /// session ends, so a broken or hostile client cannot make refusals its steady state.
    refusals: Window,
}

enum State {
    AwaitingConnect,
    Live(Box<Live>),
    Closing,
}

pub struct Session {
    id: u64,
    peer: SocketAddr,
    /// The listener it came through: a metric label.
    transport: Kind,
    shared: Arc<Shared>,
    state: State,
    version: Version,
    write_half: Option<Writer>,
    writer: Option<mpsc::UnboundedSender<Frame>>,
    /// The writer task, aborted if its socket stops taking bytes (`mqtt.send_timeout_secs`).
    writer_task: Option<tokio::task::JoinHandle<()>>,
    /// Whether, and since when, the writer has been waiting on the socket.
    sending: Arc<Progress>,
    scratch: BytesMut,
    /// Bytes handed to this session and not yet flushed or acknowledged; shared with the
    /// router, which refuses deliveries past the budget.
    pending: Arc<Budget>,
    /// Bytes of answers to the client's own packets queued for the writer task; past
    /// `mqtt.outbound_queue_bytes` the client sends faster than it reads what it is answered,
    /// and the session is closed. Deliveries are not counted here: `pending` bounds them, and
    /// counting them twice closed a session resuming a full queue of large envelopes.
    answers: Arc<AtomicUsize>,
    last_heard: Instant,
    /// Whether, and since when, a packet is half-received (the decoder reports it).
    progress: Arc<Progress>,
    meter: Meter,
    close_reason: Close,
    /// The login the CONNECT named, for the log line of its refusal.
    attempted: Option<String>,
    /// When the CONNECT was read: its CONNACK is timed from here.
    connect_read: Option<Instant>,
    /// The session's log span once it is live: who, how and from where, on each of its
    /// lines (`Span::none()` before).
    span: tracing::Span,
    /// Set once this session is parked in the router: a delivery still in the mailbox then
    /// joins it there instead of being lost.
    parked_as: Option<ParkedAs>,
    /// This connection's place under the connection caps, given back when the actor drops.
    _slot: ConnectionSlot,
    /// Held until the actor drops; `stopped` takes another for the metadata write, so
    /// shutdown waits for both.
    alive: TaskTrackerToken,
}

/// An accepted connection on its way to becoming a session.
pub struct Accepted {
    pub stream: std::net::TcpStream,
    pub peer: SocketAddr,
    pub id: u64,
    pub slot: ConnectionSlot,
    pub front: Arc<Front>,
    /// From a trusted proxy: a PROXY header comes first, and its client's address takes
    /// its place under these limits.
    pub proxied: Option<Arc<Limits>>,
}

impl Session {
    /// Runs the connection's handshake (TLS, WebSocket) on `arbiter`, bounded by
    /// `mqtt.connect_timeout_secs` and by shutdown, then starts its session there.
    pub fn spawn(arbiter: &ArbiterHandle, mut accepted: Accepted, shared: Arc<Shared>) {
        arbiter.spawn(async move {
            // Shutdown waits for handshakes in progress too.
            let alive = shared.sessions.token();
            let transport = accepted.front.kind;
            // The socket must be registered with this arbiter's runtime, so it is
            // converted here rather than by the listener.
            let mut tcp = match tokio::net::TcpStream::from_std(accepted.stream) {
                Ok(tcp) => tcp,
                Err(e) => {
                    tracing::warn!(peer = %accepted.peer, error = %e, "cannot register accepted socket");
                    return;
                }
            };
            let timeout = Duration::from_secs(shared.config.mqtt.connect_timeout_secs);
            let deadline = tokio::time::Instant::now() + timeout;
            if let Some(limits) = accepted.proxied.take() {
                let header = tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    header = tokio::time::timeout_at(deadline, read_header(&mut tcp)) => header,
                };
                match header {
                    Ok(Ok(client)) => {
                        accepted.peer = client.unwrap_or(accepted.peer);
                        if let Err(why) = limits.admit_ip(&mut accepted.slot, accepted.peer.ip()) {
                            return metrics::connection(transport.label(), why.label());
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(proxy = %accepted.peer, error = %e, "refused a proxied connection");
                        return metrics::connection(transport.label(), "proxy_header_invalid");
                    }
                    Err(_) => return metrics::connection(transport.label(), "handshake_timeout"),
                }
            }
            let opened = tokio::select! {
                _ = shared.shutdown.cancelled() => return,
                opened = tokio::time::timeout_at(deadline, accepted.front.open(tcp)) => opened,
            };
            let (read, write) = match opened {
                Ok(Ok(io)) => io,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %accepted.peer, error = %e, "connection refused before MQTT");
                    return metrics::connection(transport.label(), e.label());
                }
                Err(_) => return metrics::connection(transport.label(), "handshake_timeout"),
            };
            let max_packet = shared.config.mqtt.max_packet_bytes;
            let meter = Meter::start(accepted.peer.ip());
            let read: Reader = Box::new(Metered::new(read, meter.counts.clone()));
            let write: Writer = Box::new(Metered::new(write, meter.counts.clone()));
            Session::create(move |ctx| {
                let progress = Progress::new();
                let mqtt = &shared.config.mqtt;
                let throttle = Throttle::new(mqtt.publishes_per_second, mqtt.bytes_per_second);
                let codec =
                    MqttCodec::server(max_packet).watched_by(progress.clone(), throttle.clone());
                let read: Reader = match throttle {
                    Some(throttle) => Box::new(ThrottledRead::new(read, throttle)),
                    None => read,
                };
                ctx.add_stream(FramedRead::new(read, codec));
                Session {
                    id: accepted.id,
                    peer: accepted.peer,
                    transport,
                    state: State::AwaitingConnect,
                    version: Version::V311,
                    write_half: Some(write),
                    writer: None,
                    writer_task: None,
                    sending: Progress::new(),
                    scratch: BytesMut::new(),
                    pending: shared.router.budget(),
                    answers: Arc::new(AtomicUsize::new(0)),
                    last_heard: Instant::now(),
                    progress,
                    meter,
                    close_reason: Close::ClientDisconnect,
                    attempted: None,
                    connect_read: None,
                    span: tracing::Span::none(),
                    parked_as: None,
                    _slot: accepted.slot,
                    alive,
                    shared,
                }
            });
        });
    }

    /// Times the CONNACK just decided against the CONNECT's reading (once).
    fn connect_answered(&mut self) {
        if let Some(read) = self.connect_read.take() {
            metrics::connect_answered(read.elapsed().as_secs_f64());
        }
    }

    /// Starts the writer task; the encoder speaks `version` from now on.
    fn open_writer(&mut self, ctx: &mut Context<Self>, version: Version) {
        let Some(write_half) = self.write_half.take() else {
            return;
        };
        self.version = version;
        let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
        let (pending, answers, addr) = (self.pending.clone(), self.answers.clone(), ctx.address());
        let sending = self.sending.clone();
        let task = actix_rt::spawn(async move {
            let mut out = BufWriter::with_capacity(64 * 1024, write_half);
            let routing = &metrics::hot().routing;
            let mut routed = Vec::new();
            'write: while let Some(first) = rx.recv().await {
                let mut release = 0;
                let mut next = Some(first);
                // Batch what is already queued into one flush: fewer syscalls under load.
                while let Some(frame) = next {
                    sending.mark(true);
                    let written = out.write_all(&frame.bytes).await;
                    sending.mark(false);
                    if written.is_err() {
                        break 'write;
                    }
                    answers.fetch_sub(frame.answer, Ordering::AcqRel);
                    release += frame.release;
                    routed.extend(frame.routed);
                    next = rx.try_recv().ok();
                }
                sending.mark(true);
                let flushed = out.flush().await;
                sending.mark(false);
                if flushed.is_err() {
                    break;
                }
                pending.release(release);
                for at in routed.drain(..) {
                    routing.record(at.elapsed().as_secs_f64());
                }
            }
            let _ = out.shutdown().await;
            addr.do_send(WriterDone);
        });
        self.writer = Some(tx);
        self.writer_task = Some(task);
    }

    fn send(&mut self, packet: Outbound, release: usize) {
        self.send_timed(packet, release, None);
    }

    /// [`Session::send`] of a delivery handed over at `routed`.
    fn send_timed(&mut self, packet: Outbound, release: usize, routed: Option<Instant>) {
        let Some(writer) = &self.writer else {
            self.pending.release(release);
            return;
        };
        let delivery = matches!(packet, Outbound::Publish { .. });
        let mut encoder =
            MqttCodec::for_version(self.version, self.shared.config.mqtt.max_packet_bytes);
        if let Err(e) = encoder.encode(packet, &mut self.scratch) {
            tracing::warn!(session = self.id, error = %e, "dropping a packet that does not encode");
            self.scratch.clear();
            self.pending.release(release);
            return;
        }
        let bytes = self.scratch.split().freeze();
        if bytes.is_empty() {
            // MQTT 3.1.1 has no server DISCONNECT: nothing to write.
            self.pending.release(release);
            return;
        }
        let answer = if delivery { 0 } else { bytes.len() };
        self.answers.fetch_add(answer, Ordering::AcqRel);
        let frame = Frame {
            bytes,
            release,
            routed,
            answer,
        };
        if writer.send(frame).is_err() {
            self.pending.release(release);
        }
    }

    /// Ends the session: tells the client why where the protocol allows it, lets the
    /// writer flush, and stops once it has.
    fn close(&mut self, ctx: &mut Context<Self>, why: Close) {
        self.close_with(ctx, why.reason(), why);
    }

    /// [`Session::close`] with a reason code other than the label's usual one (the
    /// decoder's verdict on a bad packet).
    fn close_with(&mut self, ctx: &mut Context<Self>, reason: Reason, why: Close) {
        if matches!(self.state, State::Closing) {
            return;
        }
        let was_live = matches!(self.state, State::Live(_));
        self.close_reason = why;
        if was_live && self.version == Version::V5 && reason != Reason::Success {
            self.send(Outbound::Disconnect(reason, why.label()), 0);
        }
        self.leave();
        if self.writer.take().is_none() {
            ctx.stop();
        }
        // Otherwise the writer drains, shuts the socket down and sends WriterDone.
    }

    /// Drops a session whose socket stopped taking bytes (live or already closing): its
    /// writer is aborted with what it still holds (the budget gives the bytes back) and no
    /// DISCONNECT is attempted, since the socket is full.
    fn abandon(&mut self, ctx: &mut Context<Self>) {
        if let Some(task) = self.writer_task.take() {
            task.abort();
        }
        if !matches!(self.state, State::Closing) {
            self.close_reason = Close::SendTimeout;
        }
        self.leave();
        self.writer = None;
        ctx.stop();
    }

    /// Leaves the router so no new deliveries arrive. A persistent session whose
    /// connection blinked is parked there with what it still held (unacknowledged deliveries
    /// in the order written, then those waiting); otherwise what it held is given back.
    /// Idempotent: every path out of `Live` goes through here.
    fn leave(&mut self) {
        let State::Live(live) = std::mem::replace(&mut self.state, State::Closing) else {
            return;
        };
        metrics::hot().sessions_active.decrement(1.0);
        metrics::session_count(self.transport.label(), self.version.as_str(), -1.0);
        let Live {
            principal,
            account,
            link,
            inflight,
            waiting,
            expiry,
            ..
        } = *live;
        let mut unacked: Vec<(u64, u16, Bytes)> = inflight
            .into_iter()
            .map(|(pkid, (order, payload))| (order, pkid, payload))
            .collect();
        unacked.sort_unstable_by_key(|(order, ..)| *order);
        let held = unacked.iter().map(|(.., p)| p.len()).sum::<usize>()
            + waiting.iter().map(|w| w.payload.len()).sum::<usize>();
        let router = &self.shared.router;
        if expiry.is_zero() || !self.close_reason.keeps_session() {
            if !expiry.is_zero() {
                let why = self.close_reason.label();
                metrics::offline_discarded(why, unacked.len() + waiting.len());
            }
            router.detach(principal, self.id, None);
            self.pending.release(held);
            return;
        }
        self.pending.relinquish(held);
        let parked_as = ParkedAs {
            principal,
            account,
            client_id: link.client_id.clone(),
            inbox_qos: link.inbox_qos(),
            expiry,
        };
        let parked = parked_as.parked(
            unacked.into_iter().map(|(_, pkid, p)| (pkid, p)).collect(),
            waiting.into_iter().map(|w| (w.payload, w.dup)),
        );
        router.detach(principal, self.id, Some(parked));
        self.parked_as = Some(parked_as);
    }

    /// Refuses a CONNECT with `reason` and closes.
    fn refuse_connect(&mut self, ctx: &mut Context<Self>, reason: Reason, why: Close) {
        metrics::connection(self.transport.label(), why.label());
        self.connect_answered();
        tracing::info!(
            session = self.id,
            login = self.attempted.as_deref().unwrap_or("-"),
            transport = self.transport.label(),
            version = self.version.as_str(),
            ip = %self.shared.config.accounting.ip_mode.show(self.peer.ip()),
            reason = why.label(),
            "connect refused"
        );
        self.send(
            Outbound::ConnAck {
                reason,
                session_present: false,
                info: None,
            },
            0,
        );
        self.close_with(ctx, reason, why);
    }

    fn on_connect(&mut self, ctx: &mut Context<Self>, mut connect: Connect) {
        if !matches!(self.state, State::AwaitingConnect) {
            // A second CONNECT is a protocol violation (MQTT-3.1.0-2).
            return self.close(ctx, Close::ProtocolError);
        }
        self.open_writer(ctx, connect.version);
        self.attempted = connect.username.clone();
        self.connect_read = Some(Instant::now());
        if connect.version == Version::V5 && connect.will_retain == Some(true) {
            return self.refuse_connect(ctx, Reason::RetainNotSupported, Close::RefusedRetain);
        }
        if connect.client_id.len() > MAX_CLIENT_ID_LEN {
            return self.refuse_connect(ctx, Reason::ClientIdNotValid, Close::RefusedClientId);
        }
        if connect.version == Version::V311 && !connect.clean_start && connect.client_id.is_empty()
        {
            // MQTT-3.1.3-8: a session to come back to needs a name to come back with.
            return self.refuse_connect(ctx, Reason::ClientIdNotValid, Close::RefusedClientId);
        }
        if !self
            .shared
            .limiter
            .admit(Counted::ConnectFrom(self.peer.ip()))
        {
            return self.refuse_connect(
                ctx,
                Reason::ConnectionRateExceeded,
                Close::RefusedConnectRate,
            );
        }
        let secret = connect.password.take().map(Zeroizing::new);
        let (Some(login), Some(secret)) = (connect.username.clone(), secret) else {
            return self.refuse_connect(ctx, Reason::NotAuthorized, Close::RefusedAuth);
        };
        let checked = self.shared.authenticator.authenticate(
            &self.shared.directory,
            self.peer.ip(),
            &login,
            &secret,
        );
        match checked {
            Ok(credentials) => self.go_live(ctx, connect, &login, credentials),
            Err(AuthError::Denied) => {
                self.refuse_connect(ctx, Reason::NotAuthorized, Close::RefusedAuth)
            }
            Err(AuthError::RateLimited) => {
                self.refuse_connect(ctx, Reason::ConnectionRateExceeded, Close::RefusedRateLimit)
            }
        }
    }

    fn go_live(
        &mut self,
        ctx: &mut Context<Self>,
        connect: Connect,
        login: &str,
        credentials: Credentials,
    ) {
        let principal = credentials.id;
        if !self.shared.limiter.admit(Counted::ConnectAs(principal)) {
            return self.refuse_connect(
                ctx,
                Reason::ConnectionRateExceeded,
                Close::RefusedConnectRate,
            );
        }
        if let Some(until) = self.shared.cooldown.get(&principal).map(|u| *u) {
            if Instant::now() < until {
                return self.refuse_connect(
                    ctx,
                    Reason::ConnectionRateExceeded,
                    Close::RefusedCooldown,
                );
            }
            self.shared.cooldown.remove(&principal);
        }
        let assigned = connect
            .client_id
            .is_empty()
            .then(|| format!("sealrelay-{}", self.id));
        let client_id = assigned.clone().unwrap_or(connect.client_id);
        // 3.1.1 has no expiry: a session it asks to keep is kept as long as the broker keeps any.
        let most = self.shared.config.mqtt.max_session_expiry_secs;
        let asked = match self.version {
            Version::V311 if !connect.clean_start => most,
            Version::V311 => 0,
            Version::V5 => connect.session_expiry.unwrap_or(0),
        };
        let expiry = asked.min(most);
        let link = SessionHandle::new(
            self.id,
            client_id,
            self.pending.clone(),
            Box::new(ActorSink(ctx.address())),
            Facts {
                transport: self.transport.label(),
                ip: self.meter.ip,
                since: self.meter.connected_at,
                counts: self.meter.counts.clone(),
            },
            (!connect.clean_start, expiry > 0, connect.max_packet_size),
        );
        let router = &self.shared.router;
        let Some(attached) = router.attach(principal, link.clone(), connect.clean_start) else {
            return self.refuse_connect(ctx, Reason::QuotaExceeded, Close::RefusedSessionCap);
        };
        let joining = Joining {
            principal,
            credentials,
            login: login.to_owned(),
            link,
            keep_alive: connect.keep_alive,
            receive_maximum: connect.receive_maximum,
            assigned,
            expiry,
            asked,
        };
        let clean_start = connect.clean_start;
        let Some(elsewhere) =
            router.take_over_elsewhere(principal, &joining.link.client_id, clean_start)
        else {
            return self.live(ctx, joining, attached);
        };
        // Other nodes hold sessions of this principal: the one of this client id there is
        // taken over, and its state (if kept) comes here before CONNACK, which says whether
        // there was one. Nothing else is handled meanwhile: deliveries wait in the mailbox
        // and come after what the session held.
        ctx.wait(elsewhere.into_actor(self).map(move |moved, act, ctx| {
            let account = act
                .shared
                .directory
                .account_of(principal, joining.credentials.kind);
            let there = moved.map(|moved| {
                let parked = Parked::arrived(moved, joining.link.client_id.clone(), account);
                act.shared.router.arrived(parked)
            });
            let attached = Attached {
                present: attached.present || (there.is_some() && !clean_start),
                parked: match (attached.parked, there) {
                    (Some(mut here), Some(there)) => {
                        here.absorb(there);
                        Some(here)
                    }
                    (here, there) => here.or(there),
                },
            };
            act.live(ctx, joining, attached);
        }));
    }

    /// Takes the session live once whatever it resumes is here: its state, CONNACK, what
    /// it held written again, keepalive.
    fn live(&mut self, ctx: &mut Context<Self>, joining: Joining, attached: Attached) {
        let Joining {
            principal,
            credentials,
            login,
            link,
            keep_alive,
            receive_maximum,
            assigned,
            expiry,
            asked,
        } = joining;
        let (mut resend, mut waiting) = (Vec::new(), VecDeque::new());
        tracing::debug!(
            session = self.id,
            present = attached.present,
            held = attached.parked.as_ref().map_or(0, Parked::messages),
            "session attached"
        );
        if let Some(parked) = attached.parked {
            if let Some(qos) = parked.inbox_qos {
                link.subscribe(qos);
            }
            self.pending.adopt(parked.bytes());
            // MQTT-3.1.2-25: this connection may take smaller packets than the last one did;
            // what it cannot take is discarded, as if sent, and counted.
            let (mut dropped, mut freed) = (0, 0);
            let mut fits = |payload: &Bytes| {
                let takes = link.takes(payload.len());
                if !takes {
                    dropped += 1;
                    freed += payload.len();
                }
                takes
            };
            resend = parked
                .unacked
                .into_iter()
                .filter(|(_, p)| fits(p))
                .collect();
            waiting = parked
                .queued
                .into_iter()
                .filter(|q| fits(&q.payload))
                .map(Waiting::from)
                .collect();
            self.pending.release(freed);
            metrics::offline_discarded("client_max_packet", dropped);
        }
        let keep_alive = (keep_alive > 0).then(|| Duration::from_secs(u64::from(keep_alive)));
        let client_id = link.client_id.clone();
        self.state = State::Live(Box::new(Live {
            principal,
            account: self
                .shared
                .directory
                .account_of(principal, credentials.kind),
            inbox: Bytes::from(principal.inbox_topic()),
            link,
            max_inflight: usize::from(
                self.shared
                    .config
                    .mqtt
                    .max_inflight
                    .min(receive_maximum.unwrap_or(u16::MAX))
                    .max(1),
            ),
            next_pkid: resend.last().map_or(0, |(pkid, _)| *pkid),
            inflight: HashMap::new(),
            written: 0,
            waiting,
            expiry: Duration::from_secs(u64::from(expiry)),
            awaiting_pubrel: HashMap::new(),
            digests: RandomState::new(),
            refusals: Window::default(),
            owed: VecDeque::new(),
            owed_total: 0,
        }));
        self.meter.principal = Some(principal);
        self.meter.row = Some(self.shared.ledger.open(Opened {
            principal,
            ip: self.meter.ip,
            transport: self.transport.label(),
            version: self.version.as_str(),
            client_id: client_id.clone(),
            connected_at: self.meter.connected_at,
            counts: self.meter.counts.clone(),
        }));
        self.span = tracing::info_span!(
            "session",
            session = self.id,
            principal = %principal,
            kind = credentials.kind.as_str(),
            client_id = %client_id,
            transport = self.transport.label(),
            version = self.version.as_str(),
            ip = %self.shared.config.accounting.ip_mode.show(self.meter.ip),
        );
        if self.shared.config.log.connections {
            tracing::info!(parent: &self.span, present = attached.present, "session opened");
        }
        metrics::connection(self.transport.label(), "accepted");
        self.connect_answered();
        metrics::hot().sessions_active.increment(1.0);
        metrics::session_count(self.transport.label(), self.version.as_str(), 1.0);
        let info = (self.version == Version::V5).then(|| ConnAckInfo {
            assigned_client_id: assigned,
            max_packet_size: self.shared.config.mqtt.max_packet_bytes,
            receive_maximum: RECEIVE_MAXIMUM,
            server_keep_alive: None,
            session_expiry: (expiry < asked).then_some(expiry),
        });
        self.send(
            Outbound::ConnAck {
                reason: Reason::Success,
                session_present: attached.present,
                info,
            },
            0,
        );
        // MQTT-4.4.0-1: what the last connection wrote and never had acknowledged goes again
        // first, with its packet ids and DUP, then what waited.
        for (pkid, payload) in resend {
            if let State::Live(live) = &mut self.state {
                live.written += 1;
                live.inflight.insert(pkid, (live.written, payload.clone()));
                self.write_delivery(1, pkid, payload, 0, (true, None));
            }
        }
        self.pump();
        if let Some(keep_alive) = keep_alive {
            // MQTT-3.1.2-24: one and a half keepalive periods without a packet closes.
            let limit = keep_alive + keep_alive / 2;
            ctx.run_interval(
                keep_alive.div_f32(2.0).max(Duration::from_millis(250)),
                move |act, ctx| {
                    if act.last_heard.elapsed() > limit {
                        act.close(ctx, Close::KeepaliveTimeout);
                    }
                },
            );
        }
        // A credential change between the check in on_connect and the attach above kicked
        // every session but this one; now that this one is kickable, look again.
        let current = self
            .shared
            .directory
            .credentials(&login)
            .map(|c| c.verifier);
        if current != Some(credentials.verifier) {
            self.close(ctx, Close::ChangedDuringLogin);
        }
    }

    fn on_publish(&mut self, ctx: &mut Context<Self>, publish: Publish) {
        let State::Live(live) = &mut self.state else {
            return self.close(ctx, Close::ProtocolError);
        };
        // Only QoS 2 keeps per-id state: QoS 0 and 1 publishes are not hashed.
        let digest = (publish.qos == 2).then(|| {
            live.digests
                .hash_one((&publish.topic, &publish.payload[..]))
        });
        if let Some(digest) = digest {
            match live.awaiting_pubrel.get(&publish.pkid) {
                // A resent QoS 2 publish already delivered: acknowledge, do not deliver twice.
                Some(seen) if *seen == digest => {
                    return self.ack(publish.qos, publish.pkid, Reason::Success, None);
                }
                // Another message under an id still in use: never acknowledged as delivered.
                Some(_) if self.version == Version::V311 => {
                    return self.close(ctx, Close::PacketIdInUse);
                }
                Some(_) => return self.refuse_publish(ctx, &publish, Close::PacketIdInUse),
                None => {}
            }
        }
        if publish.retain && self.version == Version::V5 {
            // CONNACK said Retain Available = 0 (MQTT-3.3.1-4 / 3.2.2.3.5).
            metrics::refused("retain");
            return self.close(ctx, Close::RetainRefused);
        }
        let me = live.principal;
        let recipient = match self.check_envelope(me, &publish) {
            Ok(recipient) => recipient,
            Err(why) => return self.refuse_publish(ctx, &publish, why),
        };
        let size = publish.payload.len() as u64;
        self.meter.counts.received(size);
        let hot = metrics::hot();
        hot.messages_in.increment(1);
        hot.bytes_in.increment(size);
        hot.envelope_size.record(size as f64);
        let routed = self
            .shared
            .router
            .route(recipient, &publish.payload, publish.qos.min(1));
        if publish.qos == 0 {
            return;
        }
        let answer = Owed {
            qos: publish.qos,
            pkid: publish.pkid,
            digest,
        };
        let State::Live(live) = &mut self.state else {
            return;
        };
        match routed {
            Routed::Now(outcome) if live.owed.is_empty() => self.answer(ctx, answer, outcome),
            Routed::Now(outcome) => live.owed.push_back((answer, Some(outcome))),
            Routed::Later(_) if live.owed.len() >= usize::from(RECEIVE_MAXIMUM) => {
                // More unanswered publishes than CONNACK allowed (a 3.1.1 client was told
                // nothing, but holds as many unacknowledged itself).
                self.close(ctx, Close::ProtocolError)
            }
            Routed::Later(there) => {
                live.owed.push_back((answer, None));
                let at = live.owed_total + live.owed.len() as u64 - 1;
                ctx.spawn(
                    there
                        .into_actor(self)
                        .map(move |outcome, act, ctx| act.answered(ctx, at, outcome)),
                );
            }
        }
    }

    /// Other nodes' answer for the publish `at` (counted from the session's first that
    /// waited): acknowledges, in the order received, every publish answered so far.
    fn answered(&mut self, ctx: &mut Context<Self>, at: u64, outcome: Delivery) {
        if let State::Live(live) = &mut self.state {
            if let Some((_, slot)) = at
                .checked_sub(live.owed_total)
                .and_then(|i| live.owed.get_mut(i as usize))
            {
                *slot = Some(outcome);
            }
        }
        loop {
            let State::Live(live) = &mut self.state else {
                return;
            };
            match live.owed.pop_front() {
                Some((answer, Some(outcome))) => {
                    live.owed_total += 1;
                    self.answer(ctx, answer, outcome);
                }
                Some(waiting) => return live.owed.push_front(waiting),
                None => return,
            }
        }
    }

    /// Acknowledges one publish with what its recipients' sessions did.
    fn answer(&mut self, ctx: &mut Context<Self>, publish: Owed, outcome: Delivery) {
        let (reason, refused) = match outcome {
            Delivery::Delivered => (Reason::Success, None),
            Delivery::NoSubscriber => (Reason::NoMatchingSubscribers, None),
            Delivery::Backpressure => (Reason::QuotaExceeded, Some(Close::RecipientBackpressure)),
            Delivery::QueueFull => (Reason::QuotaExceeded, Some(Close::OfflineQueueFull)),
            Delivery::BrokerBusy => (Reason::QuotaExceeded, Some(Close::BrokerBusy)),
            Delivery::TooLargeForRecipient => {
                (Reason::QuotaExceeded, Some(Close::RecipientMaxPacket))
            }
        };
        if let Some(why) = refused.filter(|_| self.version == Version::V311) {
            // 3.1.1 cannot refuse one publish; acknowledging would lose it silently.
            return self.close(ctx, why);
        }
        if let Some(digest) = publish.digest.filter(|_| refused.is_none()) {
            if let State::Live(live) = &mut self.state {
                live.awaiting_pubrel.insert(publish.pkid, digest);
            }
        }
        self.ack(publish.qos, publish.pkid, reason, refused.map(Close::label));
    }

    fn ack(&mut self, qos: u8, pkid: u16, reason: Reason, label: Option<&'static str>) {
        if qos == 2 {
            self.send(
                Outbound::PubRec {
                    pkid,
                    reason,
                    label,
                },
                0,
            );
        } else {
            self.send(
                Outbound::PubAck {
                    pkid,
                    reason,
                    label,
                },
                0,
            );
        }
    }

    /// Refuses one publish and keeps the session: MQTT 5 gets PUBACK (PUBREC) with the code
    /// and the label as Reason String. 3.1.1 has no negative acknowledgement, and closing
    /// would only make clients resend the same message after every reconnect (MQTT.js does),
    /// so it gets an ordinary one: the envelope is dropped and counted, as Mosquitto does
    /// for a denied QoS 1 publish. QoS 0 is dropped and counted. A session refused more than
    /// `mqtt.max_refusals_per_minute` times ends (DISCONNECT 0x87) and its principal may not
    /// connect again for `mqtt.refusal_cooldown_secs`.
    fn refuse_publish(&mut self, ctx: &mut Context<Self>, publish: &Publish, why: Close) {
        metrics::publish_refused(why.label());
        tracing::info!(parent: &self.span, reason = why.label(), bytes = publish.payload.len(), "publish refused");
        if publish.qos > 0 {
            let reason = match self.version {
                Version::V5 => why.reason(),
                Version::V311 => Reason::Success,
            };
            self.ack(publish.qos, publish.pkid, reason, Some(why.label()));
        }
        let State::Live(live) = &mut self.state else {
            return;
        };
        if live.refusals.count(Duration::from_secs(60))
            > self.shared.config.mqtt.max_refusals_per_minute
        {
            let cooldown = Duration::from_secs(self.shared.config.mqtt.refusal_cooldown_secs);
            self.shared
                .cooldown
                .insert(live.principal, Instant::now() + cooldown);
            tracing::info!(session = self.id, principal = %live.principal, "session ended for too many refused publishes");
            self.close(ctx, Close::TooManyRefusals);
        }
    }

    /// The ACL and header checks: whom this envelope may go to, or why not.
    fn check_envelope(&self, me: PrincipalId, publish: &Publish) -> Result<PrincipalId, Close> {
        let recipient = inbox_owner(&publish.topic).ok_or(Close::TopicNotInbox)?;
        if publish.payload.len() > self.shared.config.envelope.max_bytes as usize {
            return Err(Close::EnvelopeTooLarge);
        }
        let header = Header::parse(&publish.payload).map_err(|_| Close::BadHeader)?;
        if header.sender != me {
            return Err(Close::SenderSpoofed);
        }
        if header.recipient != recipient {
            return Err(Close::RecipientMismatch);
        }
        if !self.shared.directory.is_paired(me, recipient) {
            return Err(Close::NotPaired);
        }
        Ok(recipient)
    }

    fn on_subscribe(&mut self, ctx: &mut Context<Self>, pkid: u16, filters: Vec<(String, u8)>) {
        let State::Live(live) = &self.state else {
            return self.close(ctx, Close::ProtocolError);
        };
        let results = filters
            .iter()
            .map(|(filter, qos)| {
                if filter.as_bytes() == live.inbox.as_ref() {
                    // QoS 2 is granted as 1: the granted-QoS downgrade of MQTT-3.9.3.
                    let granted = (*qos).min(1);
                    live.link.subscribe(granted);
                    Ok(granted)
                } else {
                    metrics::refused("subscribe_not_own_inbox");
                    Err(Reason::NotAuthorized)
                }
            })
            .collect();
        self.send(Outbound::SubAck { pkid, results }, 0);
    }

    fn on_unsubscribe(&mut self, ctx: &mut Context<Self>, pkid: u16, filters: Vec<String>) {
        let State::Live(live) = &self.state else {
            return self.close(ctx, Close::ProtocolError);
        };
        if filters.iter().any(|f| f.as_bytes() == live.inbox.as_ref()) {
            live.link.unsubscribe();
        }
        self.send(
            Outbound::UnsubAck {
                pkid,
                count: filters.len(),
            },
            0,
        );
    }

    /// A client's DISCONNECT; MQTT 5 may change how long its session outlives it, capped
    /// as at CONNECT, but may not make a session that was to end with the connection
    /// outlive it (MQTT-3.14.2-2).
    fn on_disconnect(&mut self, ctx: &mut Context<Self>, session_expiry: Option<u32>) {
        if let (State::Live(live), Some(asked)) = (&mut self.state, session_expiry) {
            if live.expiry.is_zero() && asked > 0 {
                return self.close(ctx, Close::ProtocolError);
            }
            let most = self.shared.config.mqtt.max_session_expiry_secs;
            live.expiry = Duration::from_secs(u64::from(asked.min(most)));
        }
        self.close(ctx, Close::ClientDisconnect);
    }

    fn on_puback(&mut self, pkid: u16) {
        if let State::Live(live) = &mut self.state {
            if let Some((_, payload)) = live.inflight.remove(&pkid) {
                self.pending.release(payload.len());
                self.pump();
            }
        }
    }

    /// Writes waiting QoS 1 deliveries while in-flight slots are free.
    fn pump(&mut self) {
        loop {
            let State::Live(live) = &mut self.state else {
                return;
            };
            if live.inflight.len() >= live.max_inflight {
                return;
            }
            let Some(Waiting {
                payload,
                dup,
                routed,
            }) = live.waiting.pop_front()
            else {
                return;
            };
            let pkid = loop {
                live.next_pkid = live.next_pkid.wrapping_add(1).max(1);
                if !live.inflight.contains_key(&live.next_pkid) {
                    break live.next_pkid;
                }
            };
            live.written += 1;
            live.inflight.insert(pkid, (live.written, payload.clone()));
            self.write_delivery(1, pkid, payload, 0, (dup, routed));
        }
    }

    /// Writes a delivery to the inbox: `dup` if written before, `routed` when the router
    /// handed it over (`None`: it waited offline).
    fn write_delivery(
        &mut self,
        qos: u8,
        pkid: u16,
        payload: Bytes,
        release: usize,
        (dup, routed): (bool, Option<Instant>),
    ) {
        let State::Live(live) = &self.state else {
            self.pending.release(release);
            return;
        };
        let topic = live.inbox.clone();
        let size = payload.len() as u64;
        self.meter.counts.sent(size);
        let hot = metrics::hot();
        hot.messages_out.increment(1);
        hot.bytes_out.increment(size);
        self.send_timed(
            Outbound::Publish {
                topic,
                qos,
                pkid,
                payload,
                dup,
            },
            release,
            routed,
        );
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let timeout = Duration::from_secs(self.shared.config.mqtt.connect_timeout_secs);
        ctx.run_later(timeout, |act, ctx| {
            if matches!(act.state, State::AwaitingConnect) {
                act.close(ctx, Close::ConnectTimeout);
            }
        });
        let mqtt = &self.shared.config.mqtt;
        let packet_timeout = Duration::from_secs(mqtt.packet_timeout_secs);
        let send_timeout = Duration::from_secs(mqtt.send_timeout_secs);
        ctx.run_interval(
            (packet_timeout.min(send_timeout) / 4).max(Duration::from_millis(250)),
            move |act, ctx| {
                if act.sending.stalled_for().is_some_and(|d| d > send_timeout) {
                    act.abandon(ctx);
                } else if act
                    .progress
                    .stalled_for()
                    .is_some_and(|d| d > packet_timeout)
                {
                    act.close(ctx, Close::PacketTimeout);
                }
            },
        );
        let shutdown = self.shared.shutdown.clone().cancelled_owned();
        ctx.spawn(
            fut::wrap_future::<_, Self>(shutdown)
                .map(|(), act, ctx| act.close(ctx, Close::ServerShutdown)),
        );
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.leave();
        metrics::session_closed(self.close_reason.label());
        if self.shared.config.log.connections && self.meter.principal.is_some() {
            let t = self.meter.counts.totals();
            tracing::info!(
                parent: &self.span,
                reason = self.close_reason.label(),
                bytes_in = t.bytes_in,
                bytes_out = t.bytes_out,
                messages_in = t.messages_in,
                messages_out = t.messages_out,
                wire_bytes_in = t.wire_bytes_in,
                wire_bytes_out = t.wire_bytes_out,
                "session closed"
            );
        }
        if let Some(row) = self.meter.row {
            // Shutdown waits for this token too: the row's close is part of the session.
            let alive = self.alive.clone();
            self.shared
                .ledger
                .close(row, self.close_reason.label(), alive);
        }
    }
}

impl StreamHandler<Result<Inbound, CodecError>> for Session {
    fn handle(&mut self, item: Result<Inbound, CodecError>, ctx: &mut Self::Context) {
        if matches!(self.state, State::Closing) {
            return;
        }
        self.last_heard = Instant::now();
        let packet = match item {
            Ok(packet) => packet,
            Err(CodecError::Io(_)) => return self.close(ctx, Close::IoError),
            Err(e) => {
                tracing::debug!(session = self.id, error = %e, "closing on a bad packet");
                metrics::refused("bad_packet");
                if matches!(self.state, State::AwaitingConnect) {
                    // Answer in the version the client asked for, if we got that far.
                    if let CodecError::UnsupportedProtocol { .. } = e {
                        self.open_writer(ctx, Version::V311);
                    }
                    return self.refuse_connect(ctx, e.reason(), Close::RefusedProtocol);
                }
                return self.close_with(ctx, e.reason(), Close::BadPacket);
            }
        };
        match packet {
            Inbound::Connect(connect) => self.on_connect(ctx, *connect),
            _ if !matches!(self.state, State::Live(_)) => self.close(ctx, Close::ProtocolError),
            Inbound::Publish(publish) => self.on_publish(ctx, publish),
            Inbound::PubAck(pkid) => self.on_puback(pkid),
            Inbound::PubRel(pkid) => {
                if let State::Live(live) = &mut self.state {
                    live.awaiting_pubrel.remove(&pkid);
                }
                self.send(Outbound::PubComp { pkid }, 0);
            }
            // The broker never sends QoS 2, so a client has no reason to send these.
            Inbound::PubRec(_) | Inbound::PubComp(_) => self.close(ctx, Close::ProtocolError),
            Inbound::Subscribe { pkid, filters } => self.on_subscribe(ctx, pkid, filters),
            Inbound::Unsubscribe { pkid, filters } => self.on_unsubscribe(ctx, pkid, filters),
            Inbound::PingReq => self.send(Outbound::PingResp, 0),
            Inbound::Disconnect { session_expiry } => self.on_disconnect(ctx, session_expiry),
            Inbound::ServerOnly => self.close(ctx, Close::ProtocolError),
        }
        if self.answers.load(Ordering::Acquire) > self.shared.config.mqtt.outbound_queue_bytes {
            // The client sends faster than it reads its own acknowledgements.
            self.close(ctx, Close::SlowReader);
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        if !matches!(self.state, State::Closing) {
            let why = if matches!(self.state, State::Live(_)) {
                Close::ConnectionLost
            } else {
                Close::ClosedBeforeConnect
            };
            self.close(ctx, why);
        }
    }
}

impl Handler<Deliver> for Session {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _ctx: &mut Self::Context) {
        let State::Live(live) = &mut self.state else {
            match &self.parked_as {
                // Handed over just as the connection ended: it joins the parked session.
                Some(parked_as) if msg.qos >= 1 => {
                    self.pending.relinquish(msg.payload.len());
                    let late = parked_as.parked(Vec::new(), [(msg.payload, false)]);
                    self.shared.router.park(parked_as.principal, late);
                }
                _ => self.pending.release(msg.payload.len()),
            }
            return;
        };
        // The router handed over only what the client takes (its Maximum Packet Size).
        let size = msg.payload.len();
        if msg.qos == 0 {
            self.write_delivery(0, 0, msg.payload, size, (false, msg.routed));
        } else {
            live.waiting.push_back(Waiting {
                payload: msg.payload,
                dup: false,
                routed: msg.routed,
            });
            self.pump();
        }
    }
}

impl Handler<Kick> for Session {
    type Result = ();

    fn handle(&mut self, Kick(why): Kick, ctx: &mut Self::Context) {
        self.close(ctx, why);
    }
}

impl Handler<Adopt> for Session {
    type Result = ();

    /// The session this one took over ended after this one was attached: what it held
    /// comes after what waits here (its unacknowledged deliveries marked DUP), or, if this
    /// one is ending too, goes back to the router to be parked.
    fn handle(&mut self, Adopt(parked): Adopt, _ctx: &mut Self::Context) {
        let State::Live(live) = &mut self.state else {
            self.pending.relinquish(parked.bytes());
            if let Some(principal) = self.meter.principal {
                self.shared.router.park(principal, parked);
            }
            return;
        };
        if let (None, Some(qos)) = (live.link.inbox_qos(), parked.inbox_qos) {
            live.link.subscribe(qos);
        }
        let earlier = parked
            .unacked
            .into_iter()
            .map(|(_, payload)| Waiting {
                payload,
                dup: true,
                routed: None,
            })
            .chain(parked.queued.into_iter().map(Waiting::from));
        let later = std::mem::take(&mut live.waiting);
        live.waiting = earlier.chain(later).collect();
        self.pump();
    }
}

impl Handler<WriterDone> for Session {
    type Result = ();

    fn handle(&mut self, _: WriterDone, ctx: &mut Self::Context) {
        if !matches!(self.state, State::Closing) {
            // The socket went: a live session leaves the router (parked if persistent).
            self.close_reason = Close::ConnectionLost;
            self.leave();
        }
        ctx.stop();
    }
}
