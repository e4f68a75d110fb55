//! The MQTT side of a client: connect with the derived login, subscribe to the own inbox,
//! publish envelopes to a peer's inbox, receive envelopes. Speaks MQTT 3.1.1 or 5.0 via
//! rumqttc; the event loop runs in its own task and reports through a channel.

use std::time::Duration;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5 as p5;
use sealrelay_wire::Close;
use tokio::sync::{mpsc, oneshot};

use crate::endpoint::{Broker, Scheme};
use crate::ClientError;
use sealrelay_wire::PrincipalId;

/// 1 MiB: above any envelope the broker relays by default.
const MAX_PACKET: usize = 1024 * 1024;
/// How long a QoS 1 publish waits for its PUBACK before the link is taken as stuck.
const PUBACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the broker refused one message (MQTT 5 PUBACK), from its Reason String label (see
/// `docs/protocol.md` §5.5) or, without one, its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishRefusal {
    /// The recipient is not paired with this principal (removed, or never added).
    RecipientNotPaired,
    /// The payload is not a valid envelope, or its recipient is not the topic's.
    InvalidEnvelope,
    /// The envelope names another sender than this session's principal.
    SenderRefused,
    /// The envelope is larger than the broker's `envelope.max_bytes`.
    EnvelopeTooLarge,
    /// Every session of the recipient is over its byte budget: retry later.
    RecipientBusy,
    /// The broker holds its whole budget of undelivered bytes, for every recipient: retry
    /// later; the recipient is not at fault.
    BrokerBusy,
    /// The recipient is between connections and the queue kept for it is full.
    RecipientQueueFull,
    /// The recipient's client takes no packet this large (its MQTT Maximum Packet Size).
    TooLargeForRecipient,
    /// The topic is not an inbox.
    NotAnInbox,
    /// A code this SDK does not know.
    Other,
}

impl PublishRefusal {
    fn from_answer(code: u8, label: Option<&str>) -> PublishRefusal {
        let close = label.and_then(|l| Close::ALL.into_iter().find(|c| c.label() == l));
        match (close, code) {
            (Some(Close::NotPaired), _) => PublishRefusal::RecipientNotPaired,
            (Some(Close::BadHeader | Close::RecipientMismatch), _) | (None, 0x99) => {
                PublishRefusal::InvalidEnvelope
            }
            (Some(Close::SenderSpoofed), _) => PublishRefusal::SenderRefused,
            (Some(Close::EnvelopeTooLarge), _) => PublishRefusal::EnvelopeTooLarge,
            (Some(Close::TopicNotInbox), _) => PublishRefusal::NotAnInbox,
            (Some(Close::BrokerBusy), _) => PublishRefusal::BrokerBusy,
            (Some(Close::OfflineQueueFull), _) => PublishRefusal::RecipientQueueFull,
            (Some(Close::RecipientMaxPacket), _) => PublishRefusal::TooLargeForRecipient,
            (_, 0x97) => PublishRefusal::RecipientBusy,
            _ => PublishRefusal::Other,
        }
    }
}

impl std::fmt::Display for PublishRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PublishRefusal::RecipientNotPaired => {
                "the recipient is not paired with you (removed, or not yours)"
            }
            PublishRefusal::InvalidEnvelope => "it is not a valid envelope for that recipient",
            PublishRefusal::SenderRefused => "its sender is not you",
            PublishRefusal::EnvelopeTooLarge => "it is larger than the broker accepts",
            PublishRefusal::RecipientBusy => {
                "the recipient is not reading fast enough; retry later"
            }
            PublishRefusal::TooLargeForRecipient => {
                "the recipient's client takes no message this large (it set a smaller MQTT Maximum Packet Size); send less"
            }
            PublishRefusal::RecipientQueueFull => {
                "the recipient is disconnected and the messages the broker keeps for it fill its queue; retry once it is back"
            }
            PublishRefusal::BrokerBusy => {
                "the broker holds as many undelivered bytes as it may for all its clients (not this recipient's doing); retry later"
            }
            PublishRefusal::NotAnInbox => "the topic is not an inbox",
            PublishRefusal::Other => "the broker refused it",
        })
    }
}

/// The numeric MQTT 5 reason code of a PUBACK as rumqttc decodes it.
pub fn puback_code(reason: p5::PubAckReason) -> u8 {
    use p5::PubAckReason as R;
    match reason {
        R::Success => 0x00,
        R::NoMatchingSubscribers => 0x10,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicNameInvalid => 0x90,
        R::PacketIdentifierInUse => 0x91,
        R::QuotaExceeded => 0x97,
        R::PayloadFormatInvalid => 0x99,
    }
}

/// The MQTT protocol version a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttVersion {
    /// MQTT 3.1.1: refusals close the connection or are dropped with a PUBACK.
    V311,
    /// MQTT 5: refusals come back as reason codes (CONNACK, PUBACK, DISCONNECT).
    V5,
}

impl std::str::FromStr for MqttVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "3.1.1" | "3" | "4" => Ok(MqttVersion::V311),
            "5" | "5.0" => Ok(MqttVersion::V5),
            other => Err(format!("MQTT version `{other}` is not one of 3.1.1, 5")),
        }
    }
}

enum Event {
    /// CONNACK; `resumed`: the broker kept this client id's session (Session Present).
    Connected {
        resumed: bool,
    },
    Subscribed(Vec<bool>),
    Envelope(Bytes),
    /// CONNACK refused the login: final, unlike a lost connection.
    Refused(String),
    /// CONNACK said the broker is full or rate-limiting this login: retry later.
    Busy(String),
    Closed(String),
}

enum Handle {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// The broker's answer to one MQTT 5 QoS 1 publish: its reason code and Reason String.
type Ack = (u8, Option<String>);

/// QoS 1 publishes waiting for their packet id, in the order they were handed to rumqttc
/// (which numbers them in that order); the event loop then files each under its id.
type AckQueue = Arc<Mutex<VecDeque<oneshot::Sender<Ack>>>>;

/// One MQTT connection as a principal, subscribed to its own inbox: publishes envelopes,
/// hands over what arrives. [`Client`](crate::Client) builds on it.
pub struct Link {
    handle: Handle,
    events: mpsc::UnboundedReceiver<Event>,
    task: tokio::task::JoinHandle<()>,
    acks: AckQueue,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn closed(e: impl Into<LinkError>) -> Event {
    match e.into() {
        LinkError::Refused(code) => Event::Refused(format!("CONNACK {code}")),
        LinkError::Busy(code) => Event::Busy(format!("CONNACK {code}")),
        LinkError::Other(why) => Event::Closed(why),
    }
}

/// A connection error of either rumqttc client, reduced to what the SDK acts on.
enum LinkError {
    /// The login itself was refused: retrying the same credentials cannot help.
    Refused(String),
    /// The broker is full or is rate-limiting: the same login may succeed later.
    Busy(String),
    Other(String),
}

impl From<rumqttc::ConnectionError> for LinkError {
    fn from(e: rumqttc::ConnectionError) -> Self {
        use rumqttc::ConnectReturnCode as C;
        match e {
            rumqttc::ConnectionError::ConnectionRefused(C::ServiceUnavailable) => {
                LinkError::Busy("ServiceUnavailable".into())
            }
            rumqttc::ConnectionError::ConnectionRefused(code) => {
                LinkError::Refused(format!("{code:?}"))
            }
            other => LinkError::Other(other.to_string()),
        }
    }
}

impl From<rumqttc::v5::ConnectionError> for LinkError {
    fn from(e: rumqttc::v5::ConnectionError) -> Self {
        use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as C;
        match e {
            rumqttc::v5::ConnectionError::ConnectionRefused(
                code @ (C::ConnectionRateExceeded
                | C::QuotaExceeded
                | C::ServerBusy
                | C::ServerUnavailable),
            ) => LinkError::Busy(format!("{code:?}")),
            rumqttc::v5::ConnectionError::ConnectionRefused(code) => {
                LinkError::Refused(format!("{code:?}"))
            }
            other => LinkError::Other(other.to_string()),
        }
    }
}

impl Broker {
    /// rumqttc's view: the host argument (the whole URL for WebSocket), port and transport —
    /// for tools that drive rumqttc themselves (the load generator).
    pub fn rumqttc(&self) -> (String, u16, rumqttc::Transport) {
        use rumqttc::{TlsConfiguration, Transport};
        let tls =
            || TlsConfiguration::Rustls(self.tls.clone().expect("TLS schemes carry a config"));
        match self.scheme {
            Scheme::Mqtt => (self.host.clone(), self.port, Transport::Tcp),
            Scheme::Mqtts => (self.host.clone(), self.port, Transport::Tls(tls())),
            Scheme::Ws => (self.to_string(), self.port, Transport::Ws),
            Scheme::Wss => (self.to_string(), self.port, Transport::Wss(tls())),
        }
    }
}

impl Link {
    /// Connects as `login` and subscribes to `me`'s inbox; returns once the SUBACK grants it.
    /// With `persistent` (seconds), asks the broker to keep the session that long between
    /// connections (protocol §5.6); one it kept is resumed, already subscribed, and what
    /// waited for it arrives at once.
    pub async fn connect(
        broker: &Broker,
        version: MqttVersion,
        client_id: &str,
        (login, secret): (&str, &str),
        me: PrincipalId,
        persistent: Option<u32>,
    ) -> Result<Link, ClientError> {
        let (host, port, transport) = broker.rumqttc();
        let (tx, events) = mpsc::unbounded_channel();
        let acks = AckQueue::default();
        let (handle, task) = match version {
            MqttVersion::V311 => {
                let mut options = rumqttc::MqttOptions::new(client_id, host, port);
                options
                    .set_transport(transport)
                    .set_credentials(login, secret)
                    .set_keep_alive(Duration::from_secs(30))
                    .set_clean_session(persistent.is_none())
                    .set_max_packet_size(MAX_PACKET, MAX_PACKET);
                let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 64);
                let task = tokio::spawn(async move {
                    use rumqttc::{Event as E, Packet as P};
                    loop {
                        let event = match eventloop.poll().await {
                            Ok(E::Incoming(P::ConnAck(ack))) => Event::Connected {
                                resumed: ack.session_present,
                            },
                            Ok(E::Incoming(P::SubAck(ack))) => Event::Subscribed(
                                ack.return_codes
                                    .iter()
                                    .map(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)))
                                    .collect(),
                            ),
                            Ok(E::Incoming(P::Publish(p))) => Event::Envelope(p.payload),
                            Ok(_) => continue,
                            Err(e) => {
                                let _ = tx.send(closed(e));
                                return;
                            }
                        };
                        if tx.send(event).is_err() {
                            return;
                        }
                    }
                });
                (Handle::V4(client), task)
            }
            MqttVersion::V5 => {
                let mut options = rumqttc::v5::MqttOptions::new(client_id, host, port);
                options
                    .set_transport(transport)
                    .set_credentials(login, secret)
                    .set_keep_alive(Duration::from_secs(30))
                    .set_clean_start(persistent.is_none())
                    .set_session_expiry_interval(persistent)
                    .set_max_packet_size(Some(MAX_PACKET as u32));
                let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 64);
                let queued = acks.clone();
                let task = tokio::spawn(async move {
                    use rumqttc::v5::{Event as E, Incoming as P};
                    let mut by_pkid: HashMap<u16, oneshot::Sender<Ack>> = HashMap::new();
                    loop {
                        let event = match eventloop.poll().await {
                            Ok(E::Outgoing(rumqttc::Outgoing::Publish(pkid))) if pkid != 0 => {
                                if let Some(waiter) = queued.lock().expect("lock").pop_front() {
                                    by_pkid.insert(pkid, waiter);
                                }
                                continue;
                            }
                            Ok(E::Incoming(P::PubAck(ack))) => {
                                if let Some(waiter) = by_pkid.remove(&ack.pkid) {
                                    let why = ack.properties.and_then(|p| p.reason_string);
                                    let _ = waiter.send((puback_code(ack.reason), why));
                                }
                                continue;
                            }
                            Ok(E::Incoming(P::ConnAck(ack))) => Event::Connected {
                                resumed: ack.session_present,
                            },
                            Ok(E::Incoming(P::SubAck(ack))) => Event::Subscribed(
                                ack.return_codes
                                    .iter()
                                    .map(|c| matches!(c, p5::SubscribeReasonCode::Success(_)))
                                    .collect(),
                            ),
                            Ok(E::Incoming(P::Publish(p))) => Event::Envelope(p.payload),
                            Ok(E::Incoming(P::Disconnect(d))) => {
                                Event::Closed(format!("broker disconnected: {:?}", d.reason_code))
                            }
                            Ok(_) => continue,
                            Err(e) => {
                                let _ = tx.send(closed(e));
                                return;
                            }
                        };
                        if tx.send(event).is_err() {
                            return;
                        }
                    }
                });
                (Handle::V5(client), task)
            }
        };
        let mut link = Link {
            handle,
            events,
            task,
            acks,
        };
        match link.next_event().await? {
            Event::Connected { resumed: true } => return Ok(link),
            Event::Connected { resumed: false } => {}
            Event::Refused(why) => return Err(ClientError::Refused(format!("{broker}: {why}"))),
            Event::Busy(why) => return Err(ClientError::Busy(format!("{broker}: {why}"))),
            // Name the address: "connection refused" or "invalid peer certificate" alone
            // does not say where.
            Event::Closed(why) => return Err(ClientError::Mqtt(format!("{broker}: {why}"))),
            _ => return Err(ClientError::Mqtt("expected CONNACK".into())),
        }
        let inbox = me.inbox_topic();
        match &link.handle {
            Handle::V4(c) => c
                .subscribe(inbox, rumqttc::QoS::AtLeastOnce)
                .await
                .map_err(|e| ClientError::Mqtt(e.to_string()))?,
            Handle::V5(c) => c
                .subscribe(inbox, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                .await
                .map_err(|e| ClientError::Mqtt(e.to_string()))?,
        }
        match link.next_event().await? {
            Event::Subscribed(granted) if granted.iter().all(|ok| *ok) => Ok(link),
            Event::Subscribed(_) => Err(ClientError::Mqtt(
                "the broker refused the inbox subscription".into(),
            )),
            Event::Closed(why) => Err(ClientError::Mqtt(why)),
            _ => Err(ClientError::Mqtt("expected SUBACK".into())),
        }
    }

    async fn next_event(&mut self) -> Result<Event, ClientError> {
        self.events
            .recv()
            .await
            .ok_or_else(|| ClientError::Mqtt("connection task ended".into()))
    }

    /// Publishes a sealed envelope to `to`'s inbox at QoS 0 or 1. Over MQTT 5 at QoS 1 it
    /// waits for the PUBACK and returns the broker's refusal as a typed error; 3.1.1 has no
    /// negative acknowledgement (the broker drops a refused message there and counts it).
    pub async fn publish(
        &self,
        to: PrincipalId,
        envelope: Bytes,
        qos: u8,
    ) -> Result<(), ClientError> {
        let topic = to.inbox_topic();
        let sent = match &self.handle {
            Handle::V4(c) => {
                let qos = if qos == 0 {
                    rumqttc::QoS::AtMostOnce
                } else {
                    rumqttc::QoS::AtLeastOnce
                };
                c.publish_bytes(topic, qos, false, envelope)
                    .await
                    .map_err(|e| ClientError::Mqtt(e.to_string()))?;
                None
            }
            Handle::V5(c) => {
                let (waiter, answer) = oneshot::channel();
                let qos = if qos == 0 {
                    rumqttc::v5::mqttbytes::QoS::AtMostOnce
                } else {
                    self.acks.lock().expect("lock").push_back(waiter);
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce
                };
                c.publish_bytes(topic, qos, false, envelope)
                    .await
                    .map_err(|e| ClientError::Mqtt(e.to_string()))?;
                (qos != rumqttc::v5::mqttbytes::QoS::AtMostOnce).then_some(answer)
            }
        };
        let Some(answer) = sent else {
            return Ok(());
        };
        let (code, label) = tokio::time::timeout(PUBACK_TIMEOUT, answer)
            .await
            .map_err(|_| ClientError::Mqtt(format!("no PUBACK within {PUBACK_TIMEOUT:?}")))?
            .map_err(|_| ClientError::Mqtt("the connection ended before the PUBACK".into()))?;
        if code == 0x10 {
            return Err(ClientError::Offline(to));
        }
        if code < 0x80 {
            return Ok(());
        }
        Err(ClientError::PublishRefused {
            to,
            code,
            why: PublishRefusal::from_answer(code, label.as_deref()),
        })
    }

    /// Sends DISCONNECT and waits (briefly) for the connection to end.
    pub async fn disconnect(mut self) {
        let sent = match &self.handle {
            Handle::V4(c) => c.disconnect().await.is_ok(),
            Handle::V5(c) => c.disconnect().await.is_ok(),
        };
        if sent {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while !matches!(
                    self.events.recv().await,
                    None | Some(Event::Closed(_) | Event::Refused(_) | Event::Busy(_))
                ) {}
            })
            .await;
        }
    }

    /// The next envelope for this principal, or why the connection ended.
    pub async fn recv(&mut self) -> Result<Bytes, ClientError> {
        loop {
            match self.next_event().await? {
                Event::Envelope(bytes) => return Ok(bytes),
                Event::Closed(why) => return Err(ClientError::Mqtt(why)),
                Event::Refused(why) => return Err(ClientError::Refused(why)),
                Event::Busy(why) => return Err(ClientError::Busy(why)),
                Event::Connected { .. } | Event::Subscribed(_) => continue,
            }
        }
    }
}
