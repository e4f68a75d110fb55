//! Several broker nodes as one broker, over NATS (`cluster.nats_url`) and one PostgreSQL
//! directory. Each node tells the others which principals it holds sessions of
//! ([`presence`]), hands an envelope for a principal held elsewhere to those nodes as the
//! same sealed bytes (their answer decides a QoS 1 acknowledgement), and publishes the
//! principals each directory commit changed and each revocation, which the other nodes
//! apply: re-reading the principals from the database, closing the sessions.
//!
//! Uses async-nats, the router (through [`Remote`]) and the directory. It must never send
//! anything but node names, principal ids, counts, close codes and sealed envelopes
//! ([`frames`]): what a NATS operator can see is what the broker's own operator sees.

pub mod frames;
pub mod presence;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, Message, StatusCode};
use bytes::Bytes;
use dashmap::DashMap;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::directory::Directory;
use crate::metrics;
use crate::rate::Limiter;
use crate::revocation::Revoked;
use crate::router::parked::Moved;
use crate::router::{Answer, Elsewhere, HandOver, Remote, Router, Tally};
use presence::{Heard, NodeId, Presence};
use sealrelay_wire::PrincipalId;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.nats_user is set but NATS_PASSWORD is not: give the NATS user's password in NATS_PASSWORD")]
    NoPassword,
    #[error("cannot reach NATS at cluster.nats_url ({url}): {source}; check that nats-server runs there and that cluster.nats_user and NATS_PASSWORD are right")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("NATS at cluster.nats_url takes messages of at most {max} bytes, but envelope.max_bytes is {envelope}: raise max_payload in nats-server's configuration, or lower envelope.max_bytes")]
    PayloadTooSmall { max: usize, envelope: u32 },
    #[error("cannot subscribe on NATS: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
}

/// Another node's answer to a question.
enum Reply {
    Body(Bytes),
    /// Nobody subscribes to the subject asked: the node stopped.
    NoResponders,
}

/// One publish for the outbox task.
struct Out {
    subject: String,
    reply: Option<String>,
    body: Bytes,
    /// Bytes of a delivery counted in `outbox_bytes` until published (0 for the rest).
    charged: usize,
}

/// What a delivery to another node counts as when that node cannot take it now (the outbox
/// to NATS is full) or did not answer in time: the broker is busy, and the publisher hears
/// 0x97 `broker_busy` and may send again.
const BUSY: Tally = Tally {
    subscribed: 1,
    taken: 0,
    broker_full: true,
    queue_full: false,
    too_large: false,
};

/// This node's place in the cluster.
pub struct Cluster {
    /// This node's name: 16 hex digits drawn at start.
    me: NodeId,
    client: Client,
    /// Everything this node publishes, in the order it happened: one task drains it, so a
    /// change of holdings, a directory change and the revocation after it reach every other
    /// node in that order.
    outbox: mpsc::UnboundedSender<Out>,
    /// Bytes of deliveries in the outbox: past `mqtt.outbound_total_bytes` a delivery to
    /// another node is refused as the broker being busy, so a stalled NATS link cannot grow
    /// memory without bound.
    outbox_bytes: Arc<AtomicUsize>,
    outbox_limit: usize,
    presence: Presence,
    /// Questions to other nodes (QoS 1 deliveries, takeovers) not yet answered: number →
    /// who waits.
    waiting: DashMap<u64, oneshot::Sender<Reply>>,
    /// The largest message NATS takes: a session's state moved to another node is trimmed
    /// to it.
    max_payload: usize,
    /// What every heartbeat carries: a digest of the prelogin key and the KDF defaults,
    /// which every node must share (prelogin would otherwise answer an unknown name
    /// differently on each node, telling it apart from a known one, and each node would key
    /// the failed-login windows differently).
    fingerprint: Bytes,
    /// Nodes heard with another fingerprint, each reported once.
    mismatched: DashMap<NodeId, ()>,
    next: AtomicU64,
    answer_timeout: Duration,
}

impl Cluster {
    /// Connects to NATS, learns the other nodes, and joins `router` and `directory` to them.
    pub async fn join(
        config: &Config,
        (router, directory, limiter): (Arc<Router>, Arc<Directory>, Arc<Limiter>),
        prelogin_key: &[u8],
    ) -> Result<Arc<Cluster>, ClusterError> {
        let cluster = &config.cluster;
        let password = std::env::var("NATS_PASSWORD").map_err(|_| ClusterError::NoPassword)?;
        let (events, mut relinked) = mpsc::unbounded_channel();
        let mut options =
            ConnectOptions::with_user_and_password(cluster.nats_user.clone(), password)
                .name("sealrelay")
                .no_echo()
                .event_callback(move |event| {
                    let events = events.clone();
                    async move {
                        if matches!(event, Event::Connected) {
                            let _ = events.send(());
                        }
                    }
                });
        if !cluster.nats_ca_file.as_os_str().is_empty() {
            options = options
                .require_tls(true)
                .add_root_certificates(cluster.nats_ca_file.clone());
        }
        let servers: Vec<&str> = cluster.nats_url.split(',').map(str::trim).collect();
        let client = options
            .connect(servers.as_slice())
            .await
            .map_err(|source| ClusterError::Connect {
                url: cluster.nats_url.clone(),
                source,
            })?;
        let max = client.server_info().max_payload;
        if max < config.envelope.max_bytes as usize + frames::DELIVERY_OVERHEAD {
            return Err(ClusterError::PayloadTooSmall {
                max,
                envelope: config.envelope.max_bytes,
            });
        }
        let me: NodeId = node_name().into();
        let (outbox, drained) = mpsc::unbounded_channel();
        let node = Arc::new(Cluster {
            me: me.clone(),
            client: client.clone(),
            outbox,
            outbox_bytes: Arc::default(),
            outbox_limit: config.mqtt.outbound_total_bytes,
            presence: Presence::default(),
            waiting: DashMap::new(),
            next: AtomicU64::new(0),
            answer_timeout: Duration::from_millis(cluster.answer_timeout_ms),
            max_payload: max,
            fingerprint: fingerprint(prelogin_key, config.kdf.advertised()),
            mismatched: DashMap::new(),
        });
        let mut news = client.subscribe(frames::CTL_ALL).await?;
        let mut mine = client.subscribe(frames::to_node(&me, ">")).await?;
        tokio::spawn(drain(client.clone(), drained, node.outbox_bytes.clone()));
        let from_nodes = node.clone();
        let deliveries = router.clone();
        tokio::spawn(async move {
            while let Some(message) = mine.next().await {
                from_nodes.addressed(&deliveries, message);
            }
        });
        let reading = node.clone();
        let (readers, changes, counts) = (router.clone(), directory.clone(), limiter.clone());
        tokio::spawn(async move {
            let mut stale = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    message = news.next() => match message {
                        Some(message) => reading.news((&readers, &changes, &counts), &mut stale, message).await,
                        None => break,
                    },
                    Some(()) = relinked.recv() => {
                        // Back on NATS after losing it: what the others said meanwhile is
                        // lost, so relearn every node from its next heartbeat.
                        reading.presence.forget_all();
                    }
                    _ = tick.tick() => reading.heartbeat(&changes, &mut stale).await,
                }
            }
        });
        let outlet = node.clone();
        directory.on_change(move |ids| {
            if !ids.is_empty() {
                outlet.send(frames::ctl(frames::CHANGED, &outlet.me), frames::ids(&ids));
            }
        });
        let outlet = node.clone();
        limiter.on_share(move |key, cleared| {
            outlet.send(
                frames::ctl(frames::COUNTED, &outlet.me),
                frames::counted(key, cleared),
            );
        });
        router.connect(node.clone());
        node.send(frames::ctl(frames::ALIVE, &me), node.fingerprint.clone());
        node.send(frames::ctl(frames::WANT, frames::EVERY_NODE), Bytes::new());
        tracing::info!(node = %me, nats = %cluster.nats_url, "joined the cluster");
        Ok(node)
    }

    /// Whether the NATS link is up now (`/readyz`); async-nats reconnects by itself.
    pub fn linked(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Tells the other nodes this one is leaving, and waits (a second at most: NATS may be
    /// gone, and then the others notice the silence) until NATS has it.
    pub async fn leave(&self) {
        self.send(frames::ctl(frames::BYE, &self.me), Bytes::new());
        // The outbox drains in order: once a flush after the goodbye returns, it is out.
        let said = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.client.flush().await
        };
        if tokio::time::timeout(Duration::from_secs(1), said)
            .await
            .is_err()
        {
            tracing::warn!("could not say goodbye on NATS; the other nodes forget this one after 3 s of silence");
        }
    }

    fn send(&self, subject: String, body: Bytes) {
        self.queue(Out {
            subject,
            reply: None,
            body,
            charged: 0,
        });
    }

    /// Hands `out` to the outbox task, its delivery bytes counted until published.
    fn queue(&self, out: Out) {
        self.outbox_bytes.fetch_add(out.charged, Ordering::AcqRel);
        let _ = self.outbox.send(out);
    }

    /// A message addressed to this node: a delivery to make, a session to hand over, or an
    /// answer to a question it asked.
    fn addressed(self: &Arc<Self>, router: &Arc<Router>, message: Message) {
        let kind = message
            .subject
            .strip_prefix(&*frames::to_node(&self.me, ""))
            .unwrap_or_default();
        if kind == frames::DELIVER {
            let Some((to, qos, envelope)) = frames::read_delivery(&message.payload) else {
                return metrics::refused("cluster_bad_frame");
            };
            let tally = router.deliver_here(to, &envelope, qos);
            if let Some(reply) = message.reply {
                self.send(reply.to_string(), frames::answer(tally));
            }
        } else if kind == frames::TAKEOVER {
            let (Some((principal, client_id, clean_start)), Some(reply)) =
                (frames::read_takeover(&message.payload), message.reply)
            else {
                return metrics::refused("cluster_bad_frame");
            };
            tokio::spawn(self.clone().hand_over(
                router.clone(),
                (principal, client_id, clean_start),
                reply.to_string(),
            ));
        } else if let Some(n) = kind
            .strip_prefix(frames::ANSWER)
            .and_then(|n| n.strip_prefix('.'))
            .and_then(|n| n.parse::<u64>().ok())
        {
            let Some((_, waiter)) = self.waiting.remove(&n) else {
                return; // answered after the asker stopped waiting
            };
            let _ = waiter.send(if message.status == Some(StatusCode::NO_RESPONDERS) {
                Reply::NoResponders
            } else {
                Reply::Body(message.payload)
            });
        }
    }

    /// Hands what this node holds of a session over to the node whose CONNECT takes it
    /// over: a live persistent session is closed and waited for (half the answer timeout)
    /// until it has parked, then its state is sent, trimmed to what one NATS message holds.
    async fn hand_over(
        self: Arc<Self>,
        router: Arc<Router>,
        (principal, client_id, clean_start): (PrincipalId, String, bool),
        reply: String,
    ) {
        let mut handed = router.hand_over(principal, &client_id, clean_start);
        if let HandOver::Closing = handed {
            let deadline = tokio::time::Instant::now() + self.answer_timeout / 2;
            while !router.holds_parked(principal, &client_id)
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            handed = router.hand_over(principal, &client_id, clean_start);
        }
        let moved = match handed {
            HandOver::Parked(mut parked) => {
                let room = self.max_payload.saturating_sub(
                    frames::STATE_FIXED + frames::STATE_PER_ENVELOPE * parked.messages(),
                );
                let (_, dropped) = parked.trim_to(room);
                metrics::offline_discarded("too_large_to_move", dropped);
                Some(parked.moved())
            }
            HandOver::Nothing | HandOver::Closing => None,
        };
        self.send(reply, frames::state(moved.as_ref()));
    }

    /// News from another node (own news is not echoed back: `no_echo`).
    async fn news(
        &self,
        (router, directory, limiter): (&Router, &Directory, &Limiter),
        stale: &mut Vec<PrincipalId>,
        message: Message,
    ) {
        let Some((kind, node)) = message
            .subject
            .strip_prefix("sr.v1.ctl.")
            .and_then(|rest| rest.split_once('.'))
        else {
            return;
        };
        if kind == frames::WANT {
            // Names the node asked (or all of them), not the one asking.
            if node == &*self.me || node == frames::EVERY_NODE {
                router.holdings(|held| self.list(held));
            }
            return;
        }
        if node == &*self.me {
            return;
        }
        let body = &message.payload;
        let heard = match kind {
            frames::ALIVE => {
                if *body != self.fingerprint && !self.mismatched.contains_key(node) {
                    self.mismatched.insert(node.into(), ());
                    metrics::refused("cluster_config_mismatch");
                    tracing::error!(node = %node, "a node of this cluster has another prelogin key or other [kdf] defaults: prelogin tells unknown names apart and failed logins are counted apart; copy directory.prelogin_key_file and [kdf] from one node to every node");
                }
                self.presence.heard(node)
            }
            frames::HELD => match frames::read_held(body) {
                Some(frames::Held::Change(principal, holding)) => {
                    self.presence.changed(node, principal, holding)
                }
                Some(frames::Held::List { principals, first }) => {
                    self.presence.listed(node, &principals, first);
                    Heard::Known
                }
                None => return metrics::refused("cluster_bad_frame"),
            },
            frames::CHANGED => {
                let Some(ids) = frames::ids_of(body) else {
                    return metrics::refused("cluster_bad_frame");
                };
                // Applied before anything published after it (the revocation that usually
                // follows): the old credentials must be gone before their sessions are.
                self.refresh(directory, ids, stale).await;
                Heard::Known
            }
            frames::REVOKED => {
                let Some((why, principals)) = frames::read_revoked(body) else {
                    return metrics::refused("cluster_bad_frame");
                };
                router.revoke_here(Revoked::new(why, principals));
                Heard::Known
            }
            frames::COUNTED => {
                let Some((key, cleared)) = frames::read_counted(body) else {
                    return metrics::refused("cluster_bad_frame");
                };
                if cleared {
                    limiter.clear_key(key);
                } else {
                    limiter.count_key(key);
                }
                Heard::Known
            }
            frames::BYE => {
                self.presence.forget(node);
                return;
            }
            _ => return,
        };
        if heard == Heard::Unknown {
            // A node this one does not know (new, or forgotten while silent): ask for its
            // holdings; its changes from now on come after the list.
            self.send(frames::ctl(frames::WANT, node), Bytes::new());
        }
    }

    /// Sends this node's holdings, in parts.
    fn list(&self, held: Vec<PrincipalId>) {
        let subject = frames::ctl(frames::HELD, &self.me);
        if held.is_empty() {
            return self.send(subject, frames::held_list(&[], true));
        }
        for (i, part) in held.chunks(frames::LIST_PART).enumerate() {
            self.send(subject.clone(), frames::held_list(part, i == 0));
        }
    }

    /// Re-reads principals another node changed. With the database unreachable they are
    /// forgotten (their logins fail) and tried again each second: a password changed
    /// elsewhere must not keep working here.
    async fn refresh(
        &self,
        directory: &Directory,
        ids: Vec<PrincipalId>,
        stale: &mut Vec<PrincipalId>,
    ) {
        if let Err(e) = directory.refresh(&ids).await {
            tracing::warn!(error = %e, principals = ids.len(), "could not re-read principals another node changed; their logins fail until it can");
            directory.forget(&ids);
            stale.extend(ids);
        }
    }

    /// Every second: the heartbeat, forgetting silent nodes, and retrying stale principals.
    async fn heartbeat(&self, directory: &Directory, stale: &mut Vec<PrincipalId>) {
        self.send(
            frames::ctl(frames::ALIVE, &self.me),
            self.fingerprint.clone(),
        );
        for node in self.presence.expire(presence::SILENCE) {
            tracing::warn!(node = %node, "a node fell silent; forgetting its sessions");
        }
        metrics::cluster_nodes(self.presence.nodes() + 1);
        // Deliveries whose publisher stopped waiting (timed out) are never answered now.
        self.waiting.retain(|_, waiter| !waiter.is_closed());
        if !stale.is_empty() {
            let ids = std::mem::take(stale);
            self.refresh(directory, ids, stale).await;
        }
    }

    /// Sends `node` a question (`kind`: a QoS 1 delivery, a takeover) and returns what
    /// waits for its answer.
    fn ask(&self, node: &str, kind: &str, body: Bytes) -> oneshot::Receiver<Reply> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.insert(n, tx);
        self.queue(Out {
            subject: frames::to_node(node, kind),
            reply: Some(format!("{}.{n}", frames::to_node(&self.me, frames::ANSWER))),
            charged: if kind == frames::DELIVER {
                body.len()
            } else {
                0
            },
            body,
        });
        rx
    }
}

impl Remote for Cluster {
    fn held(&self, principal: PrincipalId, holding: bool) {
        self.send(
            frames::ctl(frames::HELD, &self.me),
            frames::held_change(principal, holding),
        );
    }

    fn revoked(&self, revoked: &Revoked) {
        self.send(
            frames::ctl(frames::REVOKED, &self.me),
            frames::revoked(revoked.why(), revoked.principals()),
        );
    }

    fn deliver(&self, to: PrincipalId, payload: &Bytes, qos: u8) -> Elsewhere {
        let nodes = self.presence.holders(to);
        if nodes.is_empty() {
            return Elsewhere::Nowhere;
        }
        let body = frames::delivery(to, qos, payload);
        if self.outbox_bytes.load(Ordering::Acquire) + body.len() * nodes.len() > self.outbox_limit
        {
            metrics::hot().dropped_broker_budget.increment(1);
            return Elsewhere::Pending(Box::pin(async { BUSY }));
        }
        if qos == 0 {
            for node in &nodes {
                self.queue(Out {
                    subject: frames::to_node(node, frames::DELIVER),
                    reply: None,
                    charged: body.len(),
                    body: body.clone(),
                });
            }
            return Elsewhere::Sent;
        }
        let answers: Vec<_> = nodes
            .iter()
            .map(|node| self.ask(node, frames::DELIVER, body.clone()))
            .collect();
        let deadline = tokio::time::Instant::now() + self.answer_timeout;
        Elsewhere::Pending(Box::pin(async move {
            let mut tally = Tally::default();
            for answer in answers {
                let there = match tokio::time::timeout_at(deadline, answer).await {
                    // The node stopped since it said it held the recipient: nothing there
                    // took the envelope.
                    Ok(Ok(Reply::NoResponders)) => Some(Tally::default()),
                    Ok(Ok(Reply::Body(body))) => frames::read_answer(&body),
                    _ => None,
                };
                // No answer in time, or one that made no sense: the broker is busy.
                let there = there.unwrap_or_else(|| {
                    metrics::refused("cluster_no_answer");
                    BUSY
                });
                tally = tally.merge(there);
            }
            tally
        }))
    }

    fn take_over(
        &self,
        principal: PrincipalId,
        client_id: &str,
        clean_start: bool,
    ) -> Option<Answer<Option<Moved>>> {
        let nodes = self.presence.holders(principal);
        if nodes.is_empty() {
            return None;
        }
        let body = frames::takeover(principal, client_id, clean_start);
        let answers: Vec<_> = nodes
            .iter()
            .map(|node| self.ask(node, frames::TAKEOVER, body.clone()))
            .collect();
        let deadline = tokio::time::Instant::now() + self.answer_timeout;
        Some(Box::pin(async move {
            let mut found = None;
            for answer in answers {
                match tokio::time::timeout_at(deadline, answer).await {
                    Ok(Ok(Reply::Body(body))) => match frames::read_state(&body) {
                        Some(Some(moved)) if found.is_none() => found = Some(moved),
                        // A second node with the same session: one client was behind both,
                        // the first state found stands.
                        Some(Some(other)) => metrics::offline_discarded(
                            "session_taken_over",
                            other.unacked.len() + other.queued.len(),
                        ),
                        Some(None) => {}
                        None => metrics::refused("cluster_bad_frame"),
                    },
                    Ok(Ok(Reply::NoResponders)) => {}
                    // No answer in time: what the session there held is lost to this
                    // CONNECT (it ends there when its own connection does).
                    _ => metrics::refused("cluster_no_answer"),
                }
            }
            found
        }))
    }
}

/// Publishes the outbox in order until the cluster is dropped.
async fn drain(client: Client, mut outbox: mpsc::UnboundedReceiver<Out>, bytes: Arc<AtomicUsize>) {
    while let Some(out) = outbox.recv().await {
        let charged = out.charged;
        let sent = match out.reply {
            Some(reply) => {
                client
                    .publish_with_reply(out.subject, reply, out.body)
                    .await
            }
            None => client.publish(out.subject, out.body).await,
        };
        bytes.fetch_sub(charged, Ordering::AcqRel);
        if let Err(e) = sent {
            tracing::warn!(error = %e, "could not publish to NATS");
        }
    }
}

/// 16 bytes that are the same on two nodes exactly when their prelogin keys and KDF
/// defaults are: HKDF-SHA-256 of the key, the parameters in the info. Reveals neither.
fn fingerprint(prelogin_key: &[u8], kdf: sealrelay_wire::KdfParams) -> Bytes {
    let mut info = b"sealrelay cluster fingerprint".to_vec();
    for n in [kdf.memory_kib, kdf.iterations, kdf.parallelism] {
        info.extend(n.to_be_bytes());
    }
    let mut out = [0u8; 16];
    hkdf::Hkdf::<sha2::Sha256>::new(None, prelogin_key)
        .expand(&info, &mut out)
        .expect("16 bytes is a valid HKDF-SHA-256 output length");
    Bytes::copy_from_slice(&out)
}

/// 16 hex digits from the system's random source.
fn node_name() -> String {
    use rand_core::RngCore;
    let mut bytes = [0u8; 8];
    rand_core::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
