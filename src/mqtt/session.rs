//! One actor per MQTT connection: CONNECT and login, the ACL on SUBSCRIBE and PUBLISH,
//! the envelope header check, delivery to the recipient's sessions, QoS 1 in flight
//! toward this client, keepalive and takeover.
//!
//! Writes go through a writer task on the same arbiter rather than actix's `FramedWrite`:
//! its high-watermark pause only triggers on `WouldBlock`, which tokio sockets never
//! return, so its buffer could grow without bound behind a slow reader. Here every byte
//! handed to a session stays counted until it has been flushed to the socket.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_util::codec::{Encoder, FramedRead};
use zeroize::Zeroizing;

use super::codec::{
    CodecError, ConnAckInfo, Connect, Inbound, MqttCodec, Outbound, Publish, Version,
};
use super::Shared;
use crate::accounting::Meter;
use crate::auth::AuthError;
use crate::directory::Credentials;
use crate::envelope::Header;
use crate::metrics;
use crate::protocol::{inbox_owner, PrincipalId, Reason};
use crate::router::{Deliver, Delivery, Kick, SessionLink};

const MAX_CLIENT_ID_LEN: usize = 256;
/// Inbound QoS 1/2 publishes a client may have unacknowledged (MQTT 5 Receive Maximum).
/// Acks are sent as each publish is handled, so this only caps a misbehaving client.
const RECEIVE_MAXIMUM: u16 = 1024;

/// A frame for the writer task, and how many budget bytes to release once it is flushed.
struct Frame {
    bytes: Bytes,
    release: usize,
}

/// The writer task ended: the socket closed or failed, or the session finished it.
#[derive(Message)]
#[rtype(result = "()")]
struct WriterDone;

struct Live {
    principal: PrincipalId,
    inbox: Bytes,
    link: Arc<SessionLink>,
    client_max_packet: Option<u32>,
    max_inflight: usize,
    next_pkid: u16,
    /// QoS 1 deliveries written but not yet acknowledged: packet id → payload size.
    inflight: HashMap<u16, usize>,
    /// QoS 1 deliveries waiting for an in-flight slot.
    waiting: VecDeque<Bytes>,
    /// Inbound QoS 2 packet ids delivered and awaiting PUBREL (exactly-once bookkeeping).
    awaiting_pubrel: HashSet<u16>,
}

enum State {
    AwaitingConnect,
    Live(Box<Live>),
    Closing,
}

pub struct Session {
    id: u64,
    peer: SocketAddr,
    shared: Arc<Shared>,
    state: State,
    version: Version,
    write_half: Option<OwnedWriteHalf>,
    writer: Option<mpsc::UnboundedSender<Frame>>,
    scratch: BytesMut,
    /// Bytes handed to this session and not yet flushed or acknowledged; shared with the
    /// router, which refuses deliveries past the budget.
    pending: Arc<AtomicUsize>,
    /// Bytes of frames queued for the writer task; past the limit the client is not
    /// reading its acknowledgements and the session is closed.
    queued: Arc<AtomicUsize>,
    last_heard: Instant,
    meter: Meter,
    close_reason: &'static str,
}

impl Session {
    /// Starts a session on `arbiter` for an accepted socket.
    pub fn spawn(
        arbiter: &ArbiterHandle,
        stream: std::net::TcpStream,
        peer: SocketAddr,
        id: u64,
        shared: Arc<Shared>,
    ) {
        Session::start_in_arbiter(arbiter, move |ctx| {
            let max_packet = shared.config.mqtt.max_packet_bytes;
            let mut session = Session {
                id,
                peer,
                state: State::AwaitingConnect,
                version: Version::V311,
                write_half: None,
                writer: None,
                scratch: BytesMut::new(),
                pending: Arc::new(AtomicUsize::new(0)),
                queued: Arc::new(AtomicUsize::new(0)),
                last_heard: Instant::now(),
                meter: Meter::start(peer.ip()),
                close_reason: "client_disconnect",
                shared,
            };
            // The socket must be registered with this arbiter's runtime, so it is
            // converted here rather than by the listener.
            match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => {
                    let (read, write) = stream.into_split();
                    ctx.add_stream(FramedRead::new(read, MqttCodec::server(max_packet)));
                    session.write_half = Some(write);
                }
                Err(e) => {
                    tracing::warn!(peer = %peer, error = %e, "cannot register accepted socket");
                    session.state = State::Closing;
                    session.close_reason = "io_error";
                    ctx.stop();
                }
            }
            session
        });
    }

    /// Starts the writer task; the encoder speaks `version` from now on.
    fn open_writer(&mut self, ctx: &mut Context<Self>, version: Version) {
        let Some(write_half) = self.write_half.take() else {
            return;
        };
        self.version = version;
        let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
        let (pending, queued, addr) = (self.pending.clone(), self.queued.clone(), ctx.address());
        actix_rt::spawn(async move {
            let mut out = BufWriter::with_capacity(64 * 1024, write_half);
            'write: while let Some(first) = rx.recv().await {
                let mut release = 0;
                let mut next = Some(first);
                // Batch what is already queued into one flush: fewer syscalls under load.
                while let Some(frame) = next {
                    if out.write_all(&frame.bytes).await.is_err() {
                        break 'write;
                    }
                    queued.fetch_sub(frame.bytes.len(), Ordering::AcqRel);
                    release += frame.release;
                    next = rx.try_recv().ok();
                }
                if out.flush().await.is_err() {
                    break;
                }
                pending.fetch_sub(release, Ordering::AcqRel);
            }
            let _ = out.shutdown().await;
            addr.do_send(WriterDone);
        });
        self.writer = Some(tx);
    }

    fn send(&mut self, packet: Outbound, release: usize) {
        let Some(writer) = &self.writer else {
            self.pending.fetch_sub(release, Ordering::AcqRel);
            return;
        };
        let mut encoder =
            MqttCodec::for_version(self.version, self.shared.config.mqtt.max_packet_bytes);
        if let Err(e) = encoder.encode(packet, &mut self.scratch) {
            tracing::warn!(session = self.id, error = %e, "dropping a packet that does not encode");
            self.scratch.clear();
            self.pending.fetch_sub(release, Ordering::AcqRel);
            return;
        }
        let bytes = self.scratch.split().freeze();
        if bytes.is_empty() {
            // MQTT 3.1.1 has no server DISCONNECT: nothing to write.
            self.pending.fetch_sub(release, Ordering::AcqRel);
            return;
        }
        self.queued.fetch_add(bytes.len(), Ordering::AcqRel);
        if writer.send(Frame { bytes, release }).is_err() {
            self.pending.fetch_sub(release, Ordering::AcqRel);
        }
    }

    /// Ends the session: tells the client why where the protocol allows it, lets the
    /// writer flush, and stops once it has.
    fn close(&mut self, ctx: &mut Context<Self>, reason: Reason, label: &'static str) {
        if matches!(self.state, State::Closing) {
            return;
        }
        let was_live = matches!(self.state, State::Live(_));
        self.close_reason = label;
        if was_live && self.version == Version::V5 && reason != Reason::Success {
            self.send(Outbound::Disconnect(reason, label), 0);
        }
        self.leave();
        if self.writer.take().is_none() {
            ctx.stop();
        }
        // Otherwise the writer drains, shuts the socket down and sends WriterDone.
    }

    /// Leaves the router so no new deliveries arrive; returns the budget of those still
    /// held. Idempotent: every path out of `Live` goes through here.
    fn leave(&mut self) {
        if let State::Live(live) = std::mem::replace(&mut self.state, State::Closing) {
            self.shared.router.detach(live.principal, self.id);
            metrics::hot().sessions_active.decrement(1.0);
            let held: usize = live.inflight.values().sum::<usize>()
                + live.waiting.iter().map(Bytes::len).sum::<usize>();
            self.pending.fetch_sub(held, Ordering::AcqRel);
        }
    }

    /// Refuses a CONNECT with `reason` and closes.
    fn refuse_connect(&mut self, ctx: &mut Context<Self>, reason: Reason, label: &'static str) {
        metrics::connection(label);
        self.send(Outbound::ConnAck { reason, info: None }, 0);
        self.close(ctx, reason, label);
    }

    fn on_connect(&mut self, ctx: &mut Context<Self>, mut connect: Connect) {
        if !matches!(self.state, State::AwaitingConnect) {
            // A second CONNECT is a protocol violation (MQTT-3.1.0-2).
            return self.close(ctx, Reason::ProtocolError, "protocol_error");
        }
        self.open_writer(ctx, connect.version);
        if connect.version == Version::V5 && connect.will_retain == Some(true) {
            return self.refuse_connect(ctx, Reason::RetainNotSupported, "refused_retain");
        }
        if connect.client_id.len() > MAX_CLIENT_ID_LEN {
            return self.refuse_connect(ctx, Reason::ClientIdNotValid, "refused_client_id");
        }
        let secret = connect.password.take().map(Zeroizing::new);
        let (Some(login), Some(secret)) = (connect.username.clone(), secret) else {
            return self.refuse_connect(ctx, Reason::NotAuthorized, "refused_auth");
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
                self.refuse_connect(ctx, Reason::NotAuthorized, "refused_auth")
            }
            Err(AuthError::RateLimited) => {
                self.refuse_connect(ctx, Reason::ConnectionRateExceeded, "refused_rate_limit")
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
        let assigned = connect
            .client_id
            .is_empty()
            .then(|| format!("sealrelay-{}", self.id));
        let client_id = assigned.clone().unwrap_or(connect.client_id);
        let link = SessionLink::new(
            self.id,
            client_id,
            self.pending.clone(),
            ctx.address().recipient(),
            ctx.address().recipient(),
        );
        self.shared.router.attach(principal, link.clone());
        let keep_alive =
            (connect.keep_alive > 0).then(|| Duration::from_secs(u64::from(connect.keep_alive)));
        self.state = State::Live(Box::new(Live {
            principal,
            inbox: Bytes::from(principal.inbox_topic()),
            link,
            client_max_packet: connect.max_packet_size,
            max_inflight: usize::from(
                self.shared
                    .config
                    .mqtt
                    .max_inflight
                    .min(connect.receive_maximum.unwrap_or(u16::MAX))
                    .max(1),
            ),
            next_pkid: 0,
            inflight: HashMap::new(),
            waiting: VecDeque::new(),
            awaiting_pubrel: HashSet::new(),
        }));
        self.meter.principal = Some(principal);
        metrics::connection("accepted");
        metrics::hot().sessions_active.increment(1.0);
        let info = (self.version == Version::V5).then(|| ConnAckInfo {
            assigned_client_id: assigned,
            max_packet_size: self.shared.config.mqtt.max_packet_bytes,
            receive_maximum: RECEIVE_MAXIMUM,
            server_keep_alive: None,
        });
        self.send(
            Outbound::ConnAck {
                reason: Reason::Success,
                info,
            },
            0,
        );
        if let Some(keep_alive) = keep_alive {
            // MQTT-3.1.2-24: one and a half keepalive periods without a packet closes.
            let limit = keep_alive + keep_alive / 2;
            ctx.run_interval(
                keep_alive.div_f32(2.0).max(Duration::from_millis(250)),
                move |act, ctx| {
                    if act.last_heard.elapsed() > limit {
                        act.close(ctx, Reason::KeepAliveTimeout, "keepalive_timeout");
                    }
                },
            );
        }
        // A credential change between the check in on_connect and the attach above kicked
        // every session but this one; now that this one is kickable, look again.
        let current = self.shared.directory.credentials(login).map(|c| c.verifier);
        if current != Some(credentials.verifier) {
            self.close(ctx, Reason::NotAuthorized, "credentials_changed");
        }
    }

    fn on_publish(&mut self, ctx: &mut Context<Self>, publish: Publish) {
        let State::Live(live) = &mut self.state else {
            return self.close(ctx, Reason::ProtocolError, "protocol_error");
        };
        if publish.qos == 2 && live.awaiting_pubrel.contains(&publish.pkid) {
            // A resent QoS 2 publish already delivered: acknowledge, do not deliver twice.
            return self.send(
                Outbound::PubRec {
                    pkid: publish.pkid,
                    reason: Reason::Success,
                },
                0,
            );
        }
        if publish.retain && self.version == Version::V5 {
            // CONNACK said Retain Available = 0 (MQTT-3.3.1-4 / 3.2.2.3.5).
            metrics::refused("retain");
            return self.close(ctx, Reason::RetainNotSupported, "retain_refused");
        }
        let me = live.principal;
        let recipient = match self.check_envelope(me, &publish) {
            Ok(recipient) => recipient,
            Err(Refusal::Close(reason, label)) => {
                metrics::refused(label);
                return self.close(ctx, reason, label);
            }
            Err(Refusal::Ack(reason, label)) => {
                metrics::refused(label);
                // MQTT 5 can refuse one publish and keep the session; QoS 0 has no ack
                // and 3.1.1 no negative ack, so for those the only signal is closing.
                if self.version == Version::V5 && publish.qos > 0 {
                    self.ack(publish.qos, publish.pkid, reason);
                } else {
                    self.close(ctx, reason, label);
                }
                return;
            }
        };
        let size = publish.payload.len() as u64;
        self.meter.messages_in += 1;
        self.meter.bytes_in += size;
        let hot = metrics::hot();
        hot.messages_in.increment(1);
        hot.bytes_in.increment(size);
        let outcome = self
            .shared
            .router
            .deliver(recipient, &publish.payload, publish.qos.min(1));
        let reason = match outcome {
            Delivery::Delivered => Reason::Success,
            Delivery::NoSubscriber => Reason::NoMatchingSubscribers,
            Delivery::Backpressure => Reason::QuotaExceeded,
        };
        if outcome == Delivery::Backpressure && publish.qos > 0 && self.version == Version::V311 {
            // 3.1.1 cannot refuse one publish; acknowledging would lose it silently.
            return self.close(ctx, Reason::QuotaExceeded, "recipient_backpressure");
        }
        if publish.qos == 2 && outcome != Delivery::Backpressure {
            if let State::Live(live) = &mut self.state {
                live.awaiting_pubrel.insert(publish.pkid);
            }
        }
        if publish.qos > 0 {
            self.ack(publish.qos, publish.pkid, reason);
        }
    }

    fn ack(&mut self, qos: u8, pkid: u16, reason: Reason) {
        if qos == 2 {
            self.send(Outbound::PubRec { pkid, reason }, 0);
        } else {
            self.send(Outbound::PubAck { pkid, reason }, 0);
        }
    }

    /// The ACL and header checks: whom this envelope may go to, or why not.
    fn check_envelope(&self, me: PrincipalId, publish: &Publish) -> Result<PrincipalId, Refusal> {
        let Some(recipient) = inbox_owner(&publish.topic) else {
            return Err(Refusal::Ack(Reason::NotAuthorized, "topic_not_inbox"));
        };
        if publish.payload.len() > self.shared.config.envelope.max_bytes as usize {
            return Err(Refusal::Close(Reason::PacketTooLarge, "envelope_too_large"));
        }
        let header = Header::parse(&publish.payload)
            .map_err(|_| Refusal::Close(Reason::PayloadFormatInvalid, "bad_header"))?;
        if header.sender != me {
            return Err(Refusal::Close(Reason::NotAuthorized, "sender_spoofed"));
        }
        if header.recipient != recipient {
            return Err(Refusal::Close(
                Reason::PayloadFormatInvalid,
                "recipient_mismatch",
            ));
        }
        if !self.shared.directory.is_paired(me, recipient) {
            return Err(Refusal::Ack(Reason::NotAuthorized, "not_paired"));
        }
        Ok(recipient)
    }

    fn on_subscribe(&mut self, ctx: &mut Context<Self>, pkid: u16, filters: Vec<(String, u8)>) {
        let State::Live(live) = &self.state else {
            return self.close(ctx, Reason::ProtocolError, "protocol_error");
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
            return self.close(ctx, Reason::ProtocolError, "protocol_error");
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

    fn on_puback(&mut self, pkid: u16) {
        if let State::Live(live) = &mut self.state {
            if let Some(size) = live.inflight.remove(&pkid) {
                self.pending.fetch_sub(size, Ordering::AcqRel);
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
            let Some(payload) = live.waiting.pop_front() else {
                return;
            };
            let pkid = loop {
                live.next_pkid = live.next_pkid.wrapping_add(1).max(1);
                if !live.inflight.contains_key(&live.next_pkid) {
                    break live.next_pkid;
                }
            };
            live.inflight.insert(pkid, payload.len());
            let topic = live.inbox.clone();
            self.write_delivery(topic, 1, pkid, payload, 0);
        }
    }

    fn write_delivery(&mut self, topic: Bytes, qos: u8, pkid: u16, payload: Bytes, release: usize) {
        let size = payload.len() as u64;
        self.meter.messages_out += 1;
        self.meter.bytes_out += size;
        let hot = metrics::hot();
        hot.messages_out.increment(1);
        hot.bytes_out.increment(size);
        self.send(
            Outbound::Publish {
                topic,
                qos,
                pkid,
                payload,
            },
            release,
        );
    }
}

enum Refusal {
    /// Refuse this publish; the session may continue where the protocol can say so.
    Ack(Reason, &'static str),
    /// Close the session: the client sent something no correct client sends.
    Close(Reason, &'static str),
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let timeout = Duration::from_secs(self.shared.config.mqtt.connect_timeout_secs);
        ctx.run_later(timeout, |act, ctx| {
            if matches!(act.state, State::AwaitingConnect) {
                act.close(ctx, Reason::ProtocolError, "connect_timeout");
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.leave();
        metrics::session_closed(self.close_reason);
        if let Some(record) = self.meter.finish(self.close_reason) {
            let directory = self.shared.directory.clone();
            actix_rt::spawn(async move {
                if let Err(e) = directory.record_session(&record).await {
                    tracing::warn!(error = %e, "could not record session metadata");
                }
            });
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
            Err(CodecError::Io(_)) => return self.close(ctx, Reason::UnspecifiedError, "io_error"),
            Err(e) => {
                tracing::debug!(session = self.id, error = %e, "closing on a bad packet");
                metrics::refused("bad_packet");
                if matches!(self.state, State::AwaitingConnect) {
                    // Answer in the version the client asked for, if we got that far.
                    if let CodecError::UnsupportedProtocol { .. } = e {
                        self.open_writer(ctx, Version::V311);
                    }
                    return self.refuse_connect(ctx, e.reason(), "refused_protocol");
                }
                return self.close(ctx, e.reason(), "bad_packet");
            }
        };
        match packet {
            Inbound::Connect(connect) => self.on_connect(ctx, *connect),
            _ if !matches!(self.state, State::Live(_)) => {
                self.close(ctx, Reason::ProtocolError, "protocol_error")
            }
            Inbound::Publish(publish) => self.on_publish(ctx, publish),
            Inbound::PubAck(pkid) => self.on_puback(pkid),
            Inbound::PubRel(pkid) => {
                if let State::Live(live) = &mut self.state {
                    live.awaiting_pubrel.remove(&pkid);
                }
                self.send(Outbound::PubComp { pkid }, 0);
            }
            // The broker never sends QoS 2, so a client has no reason to send these.
            Inbound::PubRec(_) | Inbound::PubComp(_) => {
                self.close(ctx, Reason::ProtocolError, "protocol_error")
            }
            Inbound::Subscribe { pkid, filters } => self.on_subscribe(ctx, pkid, filters),
            Inbound::Unsubscribe { pkid, filters } => self.on_unsubscribe(ctx, pkid, filters),
            Inbound::PingReq => self.send(Outbound::PingResp, 0),
            Inbound::Disconnect => self.close(ctx, Reason::Success, "client_disconnect"),
            Inbound::ServerOnly => self.close(ctx, Reason::ProtocolError, "protocol_error"),
        }
        if self.queued.load(Ordering::Acquire) > self.shared.config.mqtt.outbound_queue_bytes {
            // The client sends faster than it reads its own acknowledgements.
            self.close(ctx, Reason::QuotaExceeded, "slow_reader");
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        if !matches!(self.state, State::Closing) {
            let label = if matches!(self.state, State::Live(_)) {
                "connection_lost"
            } else {
                "closed_before_connect"
            };
            self.close(ctx, Reason::UnspecifiedError, label);
        }
    }
}

impl Handler<Deliver> for Session {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _ctx: &mut Self::Context) {
        let State::Live(live) = &mut self.state else {
            self.pending.fetch_sub(msg.payload.len(), Ordering::AcqRel);
            return;
        };
        let size = msg.payload.len();
        let frame_size = size + live.inbox.len() + 16;
        if live
            .client_max_packet
            .is_some_and(|max| frame_size > max as usize)
        {
            // MQTT-3.1.2-25: a packet over the client's maximum is discarded as if sent.
            metrics::refused("client_max_packet");
            self.pending.fetch_sub(size, Ordering::AcqRel);
            return;
        }
        if msg.qos == 0 {
            let topic = live.inbox.clone();
            self.write_delivery(topic, 0, 0, msg.payload, size);
        } else {
            live.waiting.push_back(msg.payload);
            self.pump();
        }
    }
}

impl Handler<Kick> for Session {
    type Result = ();

    fn handle(&mut self, Kick(reason, label): Kick, ctx: &mut Self::Context) {
        self.close(ctx, reason, label);
    }
}

impl Handler<WriterDone> for Session {
    type Result = ();

    fn handle(&mut self, _: WriterDone, ctx: &mut Self::Context) {
        if !matches!(self.state, State::Closing) {
            self.close_reason = "connection_lost";
            self.state = State::Closing;
        }
        ctx.stop();
    }
}
