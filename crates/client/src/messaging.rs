//! A connected principal: seals to peers, opens what arrives (addressing, witness, sender
//! pin and replay checks first), and correlates a console's request with its reply. Uses
//! the identity, the crypto module, the HTTP API client and the MQTT link.

use std::collections::HashMap;
use std::time::Duration;

use crypto_box::PublicKey;
use zeroize::Zeroizing;

use crate::api::Api;
use crate::crypto::{self, MessageId, ReplayGuard};
use crate::endpoint::Broker;
use crate::link::{Link, MqttVersion};
use crate::{ClientError, Identity};
use sealrelay_wire::envelope::{Kind, VERSION};
use sealrelay_wire::PrincipalId;

/// An opened envelope and who sent it.
#[derive(Debug)]
pub struct Message {
    /// Its sender: proven when `authenticated`.
    pub from: PrincipalId,
    /// Whether the sender is proven (kind 2).
    pub authenticated: bool,
    /// The plaintext, wiped when dropped.
    pub payload: Zeroizing<Vec<u8>>,
    /// Authenticated messages: the sender's id for this message.
    pub id: Option<MessageId>,
    /// Authenticated messages: the id of the message this one answers, if it is a reply.
    pub in_reply_to: Option<MessageId>,
    /// The envelope version it came in: [`Client::reply`] answers in it (protocol §4.3).
    pub version: u8,
    /// Authenticated messages: when the sender sealed it (Unix milliseconds).
    pub sent_at_ms: Option<u64>,
}

/// A broker session kept between connections (protocol §5.6): under this client id, for
/// up to this many seconds after a connection ends.
#[derive(Debug, Clone)]
pub struct Persistence {
    /// The MQTT client id the broker keeps the session under.
    pub client_id: String,
    /// Seconds the broker keeps it after a connection ends (capped by the broker).
    pub expiry_secs: u32,
}

/// A connected principal: seals to peers, opens what arrives, remembers peer keys.
pub struct Client {
    api: Api,
    identity: Identity,
    link: Link,
    broker: Broker,
    version: MqttVersion,
    /// Set for a client whose broker session outlives its connections.
    persistence: Option<Persistence>,
    /// Peer keys checked this session: pinned, and the directory agreed.
    verified: HashMap<PrincipalId, PublicKey>,
    replay: ReplayGuard,
    /// The newest envelope version each peer has sent, sender-authenticated: what it is known
    /// to open, and so what this client seals to it (protocol §4.3); the current one for a
    /// peer not heard from yet.
    peer_versions: HashMap<PrincipalId, u8>,
}

impl Client {
    /// Connects to `broker`, a URL (`mqtt://`, `ws://`, or a bare host:port; TLS schemes
    /// trust the system's roots — see [`Client::connect_to`] for a private CA).
    pub async fn connect(
        api: Api,
        identity: Identity,
        broker: &str,
        version: MqttVersion,
    ) -> Result<Client, ClientError> {
        Self::connect_to(api, identity, Broker::parse(broker, None)?, version).await
    }

    /// Connects to `broker` as `identity` and subscribes to its inbox, on a clean session
    /// under a fresh client id (several consoles of one user each get their own).
    pub async fn connect_to(
        api: Api,
        identity: Identity,
        broker: Broker,
        version: MqttVersion,
    ) -> Result<Client, ClientError> {
        Self::connect_with(api, identity, broker, version, None).await
    }

    /// [`Client::connect_to`] with a persistent session (protocol §5.6): the broker keeps
    /// the inbox subscription and the envelopes sent meanwhile for `persistence.expiry_secs`
    /// (or less, as it grants) between connections, so [`Client::reconnect`] gets what
    /// arrived while the connection was down. One process per client id: a second one takes
    /// the session over.
    pub async fn connect_persistent(
        api: Api,
        identity: Identity,
        broker: Broker,
        version: MqttVersion,
        persistence: Persistence,
    ) -> Result<Client, ClientError> {
        Self::connect_with(api, identity, broker, version, Some(persistence)).await
    }

    async fn connect_with(
        api: Api,
        identity: Identity,
        broker: Broker,
        version: MqttVersion,
        persistence: Option<Persistence>,
    ) -> Result<Client, ClientError> {
        let link = Self::link(&identity, &broker, version, persistence.as_ref()).await?;
        let owner = identity.owner.as_ref().map(|(id, _)| *id);
        let mut client = Client {
            api,
            identity,
            link,
            broker,
            version,
            persistence,
            verified: HashMap::new(),
            replay: ReplayGuard::default(),
            peer_versions: HashMap::new(),
        };
        if let Some(owner) = owner {
            // An instance checks its owner's key at once, so a replaced or substituted one
            // stops it at start-up with PinMismatch rather than at its first message.
            client.key_for(owner).await?;
        }
        Ok(client)
    }

    async fn link(
        identity: &Identity,
        broker: &Broker,
        version: MqttVersion,
        persistence: Option<&Persistence>,
    ) -> Result<Link, ClientError> {
        let client_id = match persistence {
            Some(p) => p.client_id.clone(),
            None => format!(
                "{}-{}",
                identity.kind.as_str(),
                hex::encode(&PrincipalId::random().0[..6])
            ),
        };
        let login = (identity.login.as_str(), identity.auth_secret.as_str());
        let expiry = persistence.map(|p| p.expiry_secs);
        Link::connect(broker, version, &client_id, login, identity.id, expiry).await
    }

    /// Replaces a lost connection with a new one to the same broker, as the same principal
    /// (resuming its session, if persistent).
    pub async fn reconnect(&mut self) -> Result<(), ClientError> {
        let persistence = self.persistence.as_ref();
        self.link = Self::link(&self.identity, &self.broker, self.version, persistence).await?;
        Ok(())
    }

    /// The principal this client acts as.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Disconnects cleanly (MQTT DISCONNECT) rather than dropping the socket.
    pub async fn close(self) {
        self.link.disconnect().await;
    }

    /// The key to seal to or verify `peer` with: the pinned one, and only once the
    /// directory agrees with it (a disagreement is refused, loudly, and never cached).
    async fn key_for(&mut self, peer: PrincipalId) -> Result<PublicKey, ClientError> {
        if let Some(key) = self.verified.get(&peer) {
            return Ok(key.clone());
        }
        if self.identity.pinned(peer).is_none() {
            // A typo or someone else's id is not a key-substitution attack: say which it is.
            return Err(
                match self.api.public_key(self.identity.api_login(), peer).await {
                    Err(ClientError::Api { status: 404, .. }) => ClientError::NotYours(peer),
                    Err(e) => e,
                    Ok(_) => ClientError::NotPinned(peer),
                },
            );
        }
        let view = self.api.public_key(self.identity.api_login(), peer).await?;
        let key = self.identity.check_served_key(peer, &view.public_key)?;
        self.verified.insert(peer, key.clone());
        Ok(key)
    }

    /// Seals `payload` to `to` (sender-authenticated) and publishes it; returns the id of
    /// the message, which a reply names (`Message::in_reply_to`).
    pub async fn send(
        &mut self,
        to: PrincipalId,
        payload: &[u8],
        qos: u8,
    ) -> Result<MessageId, ClientError> {
        self.send_message(to, payload, qos, None).await
    }

    /// Seals `payload` to the sender of `request` as its answer, in the envelope version the
    /// request came in (protocol §4.3: a version-1 asker cannot open a version-2 reply), and
    /// publishes it. Only a sender-authenticated message can be answered.
    pub async fn reply(
        &mut self,
        request: &Message,
        payload: &[u8],
    ) -> Result<MessageId, ClientError> {
        let (Some(id), true) = (request.id, request.authenticated) else {
            return Err(ClientError::Usage(
                "only a sender-authenticated message can be answered: its sender is not proven"
                    .into(),
            ));
        };
        self.send_message(request.from, payload, 1, Some((id, request.version)))
            .await
    }

    /// The envelope version sealed to `peer`: the newest it has sent, else the current one.
    fn version_for(&self, peer: PrincipalId) -> u8 {
        self.peer_versions.get(&peer).copied().unwrap_or(VERSION)
    }

    async fn send_message(
        &mut self,
        to: PrincipalId,
        payload: &[u8],
        qos: u8,
        answering: Option<(MessageId, u8)>,
    ) -> Result<MessageId, ClientError> {
        let key = self.key_for(to).await?;
        let version = answering.map_or_else(|| self.version_for(to), |(_, v)| v);
        let (envelope, id) = self.identity.sealer_to(to, &key).seal_in(
            version,
            payload,
            answering.map(|(id, _)| id),
        )?;
        self.link.publish(to, envelope, qos).await?;
        Ok(id)
    }

    /// Publishes an envelope sealed elsewhere (a relay of a stored envelope, a tool, a test)
    /// to `to`'s inbox as it is. The broker still checks it; over MQTT 5 at QoS 1 a refusal
    /// comes back as [`ClientError::PublishRefused`].
    pub async fn send_envelope(
        &mut self,
        to: PrincipalId,
        envelope: bytes::Bytes,
        qos: u8,
    ) -> Result<(), ClientError> {
        self.link.publish(to, envelope, qos).await
    }

    /// Waits for the next envelope and opens it. An envelope that does not open is an
    /// `Err` for that envelope; the connection stays usable.
    pub async fn next(&mut self) -> Result<Message, ClientError> {
        let envelope = self.link.recv().await?;
        // Addressing and witness first: an envelope sealed to a replaced key is reported as
        // such, whoever its sender is.
        let header = crypto::addressed_to(self.identity.id, &self.identity.secret, &envelope)?;
        let sender_key = match header.kind {
            Kind::Authenticated => Some(self.key_for(header.sender).await?),
            Kind::Anonymous => None,
        };
        let opened = crypto::open(
            self.identity.id,
            &self.identity.secret,
            &envelope,
            sender_key.as_ref(),
            &mut self.replay,
        )?;
        if opened.authenticated {
            // A peer opens at least the newest version it has sent; one heard only in
            // version 1 is an older client (or was answering in it), and gets version 1.
            self.peer_versions
                .entry(opened.sender)
                .and_modify(|v| *v = (*v).max(opened.version))
                .or_insert(opened.version);
        }
        Ok(Message {
            from: opened.sender,
            authenticated: opened.authenticated,
            payload: opened.payload,
            id: opened.message_id,
            in_reply_to: opened.in_reply_to,
            version: opened.version,
            sent_at_ms: opened.sent_at_ms,
        })
    }

    /// Sends `payload` to `to` and waits for the authenticated reply that names it; other
    /// messages arriving meanwhile (status pushes, late answers to earlier requests) are
    /// not it and are skipped. One request at a time: a console with several in flight uses
    /// [`Client::send`] and matches [`Message::in_reply_to`] itself.
    pub async fn request(
        &mut self,
        to: PrincipalId,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        let legacy = self.version_for(to) == 1;
        let id = self.send(to, payload, 1).await?;
        tokio::time::timeout(timeout, async {
            loop {
                match self.next().await {
                    Ok(m) if m.from == to && m.authenticated && m.in_reply_to == Some(id) => {
                        return Ok(m.payload)
                    }
                    // A version-1 reply cannot name its request: the asker's next message
                    // from that peer in version 1 is the answer, as version-1 clients took it.
                    Ok(m) if legacy && m.from == to && m.authenticated && m.version == 1 => {
                        return Ok(m.payload)
                    }
                    Ok(_) => {
                        tracing::debug!("skipping a message that does not answer this request")
                    }
                    Err(ClientError::Open(e)) => {
                        tracing::warn!(error = %e, "ignoring an envelope that does not open")
                    }
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        .map_err(|_| ClientError::Timeout(to, timeout))?
    }

    /// Answers every authenticated envelope with `handler`'s reply, sealed back to its
    /// sender, until the connection ends. Envelopes that do not open are logged (never
    /// their content) and skipped; unauthenticated ones get no reply, since their sender
    /// is not proven.
    pub async fn serve<F>(&mut self, mut handler: F) -> Result<(), ClientError>
    where
        F: FnMut(&Message) -> Vec<u8>,
    {
        loop {
            let message = match self.next().await {
                Ok(m) => m,
                Err(ClientError::Open(e)) => {
                    tracing::warn!(error = %e, "skipping an envelope that does not open");
                    continue;
                }
                Err(ClientError::Api { status: 404, .. } | ClientError::NotYours(_)) => {
                    tracing::warn!("skipping an envelope from a principal that is not paired");
                    continue;
                }
                Err(e @ (ClientError::PinMismatch { .. } | ClientError::NotPinned(_))) => {
                    tracing::error!(error = %e, "refusing an envelope from an untrusted key");
                    continue;
                }
                Err(e) => return Err(e),
            };
            if !message.authenticated {
                tracing::warn!(from = %message.from, "skipping an unauthenticated envelope");
                continue;
            }
            let reply = handler(&message);
            match self.reply(&message, &reply).await {
                // The asker left before the answer: nothing to deliver it to, keep serving.
                Err(ClientError::Offline(to)) => {
                    tracing::warn!(to = %to, "reply not delivered: the asker is no longer connected")
                }
                other => {
                    other?;
                }
            }
        }
    }
}
