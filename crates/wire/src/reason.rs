//! What the broker answers with: MQTT 5 reason codes ([`Reason`]) and the static labels
//! that say why a session or a message was refused ([`Close`]). `docs/protocol.md` §5.5
//! lists both tables; a test there keeps the doc and these enums from drifting apart.
//! Labels travel as the MQTT 5 Reason String, land in `session_log.close_reason` and in
//! metric labels: they are fixed strings, never built from client input.

/// MQTT 5 reason codes the broker sends, with the MQTT 3.1.1 answer where 3.1.1 has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    /// CONNACK, PUBACK, SUBACK granted QoS 0; 3.1.1: return code 0.
    Success = 0x00,
    /// PUBACK: accepted, but the recipient has no live subscribed session; dropped.
    NoMatchingSubscribers = 0x10,
    /// DISCONNECT after an I/O error; 3.1.1 SUBACK 0x80 (subscription refused).
    UnspecifiedError = 0x80,
    /// DISCONNECT: the packet could not be decoded.
    MalformedPacket = 0x81,
    /// DISCONNECT: a packet before CONNECT, a second CONNECT, PUBREC/PUBCOMP from a client.
    ProtocolError = 0x82,
    /// Protocol level not 4 (3.1.1) or 5: answered in the 3.1.1 form, CONNACK return code 1,
    /// since the broker cannot know the framing of an unknown version.
    UnsupportedProtocolVersion = 0x84,
    /// CONNACK: client id longer than 256 bytes; 3.1.1: return code 2.
    ClientIdNotValid = 0x85,
    /// CONNACK (bad login, one answer for all), SUBACK, PUBACK, DISCONNECT; 3.1.1: return
    /// code 5, SUBACK 0x80, or a close.
    NotAuthorized = 0x87,
    /// DISCONNECT: the broker is stopping.
    ServerShuttingDown = 0x8B,
    /// DISCONNECT: nothing heard for 1.5 × the keepalive.
    KeepAliveTimeout = 0x8D,
    /// DISCONNECT: the same principal connected again with the same client id.
    SessionTakenOver = 0x8E,
    /// DISCONNECT: a PUBLISH topic that is not valid UTF-8 or holds a wildcard.
    TopicNameInvalid = 0x90,
    /// PUBREC (MQTT 5): a QoS 2 PUBLISH reuses the packet id of a different message still
    /// awaiting its PUBREL; not delivered.
    PacketIdInUse = 0x91,
    /// DISCONNECT: more unacknowledged QoS 1/2 publishes than the advertised Receive Maximum.
    ReceiveMaximumExceeded = 0x93,
    /// DISCONNECT: a PUBLISH with a Topic Alias; the broker advertises no Topic Alias Maximum,
    /// which means 0 (MQTT-3.3.2-8).
    TopicAliasInvalid = 0x94,
    /// DISCONNECT: a packet over `mqtt.max_packet_bytes`.
    PacketTooLarge = 0x95,
    /// CONNACK (broker at `mqtt.max_connections`), PUBACK (recipient over its byte budget, or
    /// an envelope over `envelope.max_bytes`), DISCONNECT (the client does not read its own
    /// acknowledgements); 3.1.1: a close.
    QuotaExceeded = 0x97,
    /// DISCONNECT: the session's credentials changed; log in again with the new secret.
    AdministrativeAction = 0x98,
    /// DISCONNECT: the payload is not a valid envelope, or its recipient is not the topic's.
    PayloadFormatInvalid = 0x99,
    /// CONNACK, DISCONNECT: a retained will or publish (MQTT 5 only; 3.1.1 ignores retain).
    RetainNotSupported = 0x9A,
    /// CONNACK: too many failed logins, or too many connections from one address; 3.1.1:
    /// return code 5, or a close.
    ConnectionRateExceeded = 0x9F,
}

impl Reason {
    /// Every variant, for the docs test and for tools that print the table.
    pub const ALL: [Reason; 21] = [
        Reason::Success,
        Reason::NoMatchingSubscribers,
        Reason::UnspecifiedError,
        Reason::MalformedPacket,
        Reason::ProtocolError,
        Reason::UnsupportedProtocolVersion,
        Reason::ClientIdNotValid,
        Reason::NotAuthorized,
        Reason::ServerShuttingDown,
        Reason::KeepAliveTimeout,
        Reason::SessionTakenOver,
        Reason::TopicNameInvalid,
        Reason::PacketIdInUse,
        Reason::ReceiveMaximumExceeded,
        Reason::TopicAliasInvalid,
        Reason::PacketTooLarge,
        Reason::QuotaExceeded,
        Reason::AdministrativeAction,
        Reason::PayloadFormatInvalid,
        Reason::RetainNotSupported,
        Reason::ConnectionRateExceeded,
    ];

    /// The reason code's byte.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// What the end of a connection does to the session behind it ([`Close::ending`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Refused or abandoned before there was a session: nothing to keep or discard.
    Refused,
    /// The connection blinked (lost, timed out, taken over, ended by the client, or closed
    /// for one bad packet or message): a persistent session outlives it with what it holds.
    Blink,
    /// The credentials or pairing that admitted the session are gone, or the operator ended
    /// it: the session is discarded with what it held, on every node.
    Revoked,
    /// The session's own conduct ended it (too many refusals): discarded, and the principal
    /// waits out a cooldown.
    Penalised,
}

/// Why a session ended or a packet was refused. Each label is sent as the MQTT 5 Reason
/// String where a DISCONNECT carries it, recorded as `session_log.close_reason`, and used
/// as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The client sent DISCONNECT. Recorded only.
    ClientDisconnect,
    /// The socket closed without a DISCONNECT. Recorded only.
    ConnectionLost,
    /// The socket closed before CONNECT. Counted only.
    ClosedBeforeConnect,
    /// Reading or writing the socket failed.
    IoError,
    /// No CONNECT within `mqtt.connect_timeout_secs`. Counted only.
    ConnectTimeout,
    /// A packet out of order: before CONNECT, a second CONNECT, PUBREC/PUBCOMP from a client.
    ProtocolError,
    /// The decoder refused a packet; the DISCONNECT carries the decoder's code (0x81, 0x82,
    /// 0x90, 0x93, 0x94 or 0x95), 0x81 by default.
    BadPacket,
    /// CONNACK: unknown login, wrong secret or no credentials.
    RefusedAuth,
    /// CONNACK: too many failed logins from this address or for this login.
    RefusedRateLimit,
    /// CONNACK: client id longer than 256 bytes.
    RefusedClientId,
    /// CONNACK: a retained will (MQTT 5).
    RefusedRetain,
    /// CONNACK: a protocol level the broker does not speak, or a first packet that is not CONNECT.
    RefusedProtocol,
    /// CONNACK: the broker holds `mqtt.max_connections` connections.
    RefusedCapacity,
    /// CONNACK: this address holds `mqtt.max_connections_per_ip` connections.
    RefusedIpCapacity,
    /// PUBACK (per message): the topic is not an inbox.
    TopicNotInbox,
    /// PUBACK (per message): the recipient is not paired with the sender.
    NotPaired,
    /// PUBACK (per message): the envelope's sender is not the session's principal.
    SenderSpoofed,
    /// PUBACK (per message): the envelope is larger than `envelope.max_bytes`.
    EnvelopeTooLarge,
    /// PUBACK (per message): the payload is not a valid envelope header.
    BadHeader,
    /// PUBACK (per message): the envelope's recipient differs from the topic's.
    RecipientMismatch,
    /// PUBREC (per message): a QoS 2 packet id reused for a different message before PUBREL;
    /// 3.1.1, which has no reason codes: a close.
    PacketIdInUse,
    /// DISCONNECT: more refused publishes than `mqtt.max_refusals_per_minute`.
    TooManyRefusals,
    /// CONNACK: the principal's last session ended for too many refusals; it may connect
    /// again after `mqtt.refusal_cooldown_secs`.
    RefusedCooldown,
    /// DISCONNECT: a retained PUBLISH (MQTT 5).
    RetainRefused,
    /// PUBACK (3.1.1: close, having no negative ack): every recipient session is over its
    /// byte budget.
    RecipientBackpressure,
    /// PUBACK (3.1.1: close): all sessions together are over the broker's byte budget; the
    /// broker is busy, not the recipient.
    BrokerBusy,
    /// PUBACK (3.1.1: close): the recipient is between connections and its persistent
    /// sessions' queue is full.
    OfflineQueueFull,
    /// PUBACK (3.1.1: close): every session of the recipient takes no packet this large (its
    /// client's MQTT 5 Maximum Packet Size).
    RecipientMaxPacket,
    /// DISCONNECT: the client sends faster than it reads its own acknowledgements.
    SlowReader,
    /// Close (no DISCONNECT: the socket is full): the socket took no bytes for
    /// `mqtt.send_timeout_secs` while some were waiting; the client stopped reading.
    SendTimeout,
    /// DISCONNECT: nothing heard for 1.5 × the keepalive.
    KeepaliveTimeout,
    /// DISCONNECT: a packet began to arrive and did not finish within
    /// `mqtt.packet_timeout_secs` (whatever the keepalive).
    PacketTimeout,
    /// DISCONNECT: the same principal connected again with the same client id.
    TakenOver,
    /// DISCONNECT: the login's credentials changed while this session was being admitted.
    ChangedDuringLogin,
    /// DISCONNECT: the user's password was changed.
    CredentialsChanged,
    /// DISCONNECT: the operator issued a reset code for this user.
    PasswordReset,
    /// DISCONNECT: the holder of the previous password undid the last change of password.
    PasswordRolledBack,
    /// DISCONNECT: the instance's token was rotated.
    TokenRotated,
    /// DISCONNECT: the instance was re-enrolled under a new key and token.
    Reenrolled,
    /// DISCONNECT: the instance was removed by its owner.
    InstanceRemoved,
    /// DISCONNECT: the account was deleted.
    AccountDeleted,
    /// CONNACK: the principal already holds `mqtt.max_sessions_per_principal` sessions.
    RefusedSessionCap,
    /// CONNACK: too many CONNECTs this minute from the address or for the principal.
    RefusedConnectRate,
    /// DISCONNECT: the operator closed this principal's sessions (`sealrelay admin kick`).
    KickedByOperator,
    /// DISCONNECT: the broker is stopping.
    ServerShutdown,
}

impl Close {
    /// Every variant, for the docs test. Append only: broker nodes name a revocation's
    /// close to each other by its place here.
    pub const ALL: [Close; 45] = [
        Close::ClientDisconnect,
        Close::ConnectionLost,
        Close::ClosedBeforeConnect,
        Close::IoError,
        Close::ConnectTimeout,
        Close::ProtocolError,
        Close::BadPacket,
        Close::RefusedAuth,
        Close::RefusedRateLimit,
        Close::RefusedClientId,
        Close::RefusedRetain,
        Close::RefusedProtocol,
        Close::RefusedCapacity,
        Close::RefusedIpCapacity,
        Close::TopicNotInbox,
        Close::NotPaired,
        Close::SenderSpoofed,
        Close::EnvelopeTooLarge,
        Close::BadHeader,
        Close::RecipientMismatch,
        Close::PacketIdInUse,
        Close::TooManyRefusals,
        Close::RefusedCooldown,
        Close::RetainRefused,
        Close::RecipientBackpressure,
        Close::BrokerBusy,
        Close::OfflineQueueFull,
        Close::RecipientMaxPacket,
        Close::SlowReader,
        Close::SendTimeout,
        Close::KeepaliveTimeout,
        Close::PacketTimeout,
        Close::TakenOver,
        Close::ChangedDuringLogin,
        Close::CredentialsChanged,
        Close::PasswordReset,
        Close::PasswordRolledBack,
        Close::TokenRotated,
        Close::Reenrolled,
        Close::InstanceRemoved,
        Close::AccountDeleted,
        Close::KickedByOperator,
        Close::RefusedSessionCap,
        Close::RefusedConnectRate,
        Close::ServerShutdown,
    ];

    /// The label: Reason String, `session_log.close_reason`, metric label.
    pub fn label(self) -> &'static str {
        match self {
            Close::ClientDisconnect => "client_disconnect",
            Close::ConnectionLost => "connection_lost",
            Close::ClosedBeforeConnect => "closed_before_connect",
            Close::IoError => "io_error",
            Close::ConnectTimeout => "connect_timeout",
            Close::ProtocolError => "protocol_error",
            Close::BadPacket => "bad_packet",
            Close::RefusedAuth => "refused_auth",
            Close::RefusedRateLimit => "refused_rate_limit",
            Close::RefusedClientId => "refused_client_id",
            Close::RefusedRetain => "refused_retain",
            Close::RefusedProtocol => "refused_protocol",
            Close::RefusedCapacity => "refused_capacity",
            Close::RefusedIpCapacity => "refused_ip_capacity",
            Close::TopicNotInbox => "topic_not_inbox",
            Close::NotPaired => "not_paired",
            Close::SenderSpoofed => "sender_spoofed",
            Close::EnvelopeTooLarge => "envelope_too_large",
            Close::BadHeader => "bad_header",
            Close::RecipientMismatch => "recipient_mismatch",
            Close::PacketIdInUse => "packet_id_in_use",
            Close::TooManyRefusals => "too_many_refusals",
            Close::RefusedCooldown => "refused_cooldown",
            Close::RetainRefused => "retain_refused",
            Close::RecipientBackpressure => "recipient_backpressure",
            Close::BrokerBusy => "broker_busy",
            Close::OfflineQueueFull => "offline_queue_full",
            Close::RecipientMaxPacket => "recipient_max_packet",
            Close::SlowReader => "slow_reader",
            Close::SendTimeout => "send_timeout",
            Close::KeepaliveTimeout => "keepalive_timeout",
            Close::PacketTimeout => "packet_timeout",
            Close::TakenOver => "taken_over",
            Close::ChangedDuringLogin | Close::CredentialsChanged => "credentials_changed",
            Close::PasswordReset => "password_reset",
            Close::PasswordRolledBack => "password_rolled_back",
            Close::TokenRotated => "token_rotated",
            Close::Reenrolled => "reenrolled",
            Close::InstanceRemoved => "instance_removed",
            Close::AccountDeleted => "account_deleted",
            Close::KickedByOperator => "kicked_by_operator",
            Close::RefusedSessionCap => "refused_sessions_per_principal",
            Close::RefusedConnectRate => "refused_connect_rate",
            Close::ServerShutdown => "server_shutdown",
        }
    }

    /// What this end does to the persistent session behind the connection. The match names
    /// every variant, so a new one cannot join a class without being placed in it.
    pub const fn ending(self) -> Ending {
        match self {
            Close::ClosedBeforeConnect
            | Close::ConnectTimeout
            | Close::RefusedAuth
            | Close::RefusedRateLimit
            | Close::RefusedClientId
            | Close::RefusedRetain
            | Close::RefusedProtocol
            | Close::RefusedCapacity
            | Close::RefusedIpCapacity
            | Close::RefusedCooldown
            | Close::RefusedSessionCap
            | Close::RefusedConnectRate => Ending::Refused,
            // Per-message refusals end a 3.1.1 connection (it has no negative PUBACK); the
            // session is not at fault for one message.
            Close::ClientDisconnect
            | Close::ConnectionLost
            | Close::IoError
            | Close::ProtocolError
            | Close::BadPacket
            | Close::TopicNotInbox
            | Close::NotPaired
            | Close::SenderSpoofed
            | Close::EnvelopeTooLarge
            | Close::BadHeader
            | Close::RecipientMismatch
            | Close::PacketIdInUse
            | Close::RetainRefused
            | Close::RecipientBackpressure
            | Close::BrokerBusy
            | Close::OfflineQueueFull
            | Close::RecipientMaxPacket
            | Close::SlowReader
            | Close::SendTimeout
            | Close::KeepaliveTimeout
            | Close::PacketTimeout
            | Close::TakenOver
            | Close::ServerShutdown => Ending::Blink,
            Close::ChangedDuringLogin
            | Close::CredentialsChanged
            | Close::PasswordReset
            | Close::PasswordRolledBack
            | Close::TokenRotated
            | Close::Reenrolled
            | Close::InstanceRemoved
            | Close::AccountDeleted
            | Close::KickedByOperator => Ending::Revoked,
            Close::TooManyRefusals => Ending::Penalised,
        }
    }

    /// Whether a persistent session outlives a connection that ended this way.
    pub const fn keeps_session(self) -> bool {
        matches!(self.ending(), Ending::Blink | Ending::Refused)
    }

    /// The reason code this label travels with.
    pub fn reason(self) -> Reason {
        match self {
            Close::ClientDisconnect => Reason::Success,
            Close::ConnectionLost | Close::ClosedBeforeConnect | Close::IoError => {
                Reason::UnspecifiedError
            }
            Close::ConnectTimeout | Close::ProtocolError => Reason::ProtocolError,
            Close::BadPacket => Reason::MalformedPacket,
            Close::RefusedAuth
            | Close::TopicNotInbox
            | Close::NotPaired
            | Close::SenderSpoofed
            | Close::ChangedDuringLogin
            | Close::TooManyRefusals
            | Close::InstanceRemoved
            | Close::AccountDeleted => Reason::NotAuthorized,
            Close::RefusedRateLimit
            | Close::RefusedIpCapacity
            | Close::RefusedCooldown
            | Close::RefusedConnectRate => Reason::ConnectionRateExceeded,
            Close::RefusedClientId => Reason::ClientIdNotValid,
            Close::RefusedRetain | Close::RetainRefused => Reason::RetainNotSupported,
            Close::RefusedProtocol => Reason::UnsupportedProtocolVersion,
            // A PUBACK cannot say 0x95: a size limit is a quota (MQTT 5 §3.4.2.1).
            Close::RefusedCapacity
            | Close::RefusedSessionCap
            | Close::RecipientBackpressure
            | Close::BrokerBusy
            | Close::OfflineQueueFull
            | Close::RecipientMaxPacket
            | Close::SlowReader
            | Close::SendTimeout
            | Close::EnvelopeTooLarge => Reason::QuotaExceeded,
            Close::BadHeader | Close::RecipientMismatch => Reason::PayloadFormatInvalid,
            Close::PacketIdInUse => Reason::PacketIdInUse,
            // The nearest MQTT 5 code: the peer stopped sending within the time allowed.
            Close::KeepaliveTimeout | Close::PacketTimeout => Reason::KeepAliveTimeout,
            Close::TakenOver => Reason::SessionTakenOver,
            Close::CredentialsChanged
            | Close::PasswordReset
            | Close::PasswordRolledBack
            | Close::TokenRotated
            | Close::Reenrolled
            | Close::KickedByOperator => Reason::AdministrativeAction,
            Close::ServerShutdown => Reason::ServerShuttingDown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/protocol.md` §5.5 is what client authors read: every code and every label
    /// must be there, each label beside the code it travels with.
    #[test]
    fn protocol_doc_lists_every_reason_and_label() {
        let doc = include_str!("../../../docs/protocol.md");
        let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with("| ")).collect();
        for reason in Reason::ALL {
            let code = format!("| 0x{:02X} |", reason.code());
            assert!(
                rows.iter().any(|r| r.starts_with(&code)),
                "docs/protocol.md has no reason-code row for {reason:?} ({code})"
            );
        }
        for close in Close::ALL {
            let row = format!("| `{}` | 0x{:02X} |", close.label(), close.reason().code());
            assert!(
                rows.iter().any(|r| r.starts_with(&row)),
                "docs/protocol.md has no label row {row} for {close:?}"
            );
        }
    }

    #[test]
    fn all_lists_are_complete_and_labels_are_static_snake_case() {
        let mut labels: Vec<_> = Close::ALL.iter().map(|c| (c.label(), c.reason())).collect();
        labels.sort_by_key(|(l, r)| (*l, r.code()));
        labels.dedup();
        assert_eq!(labels.len(), Close::ALL.len(), "a (label, code) pair twice");
        for (label, _) in labels {
            assert!(label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        let mut codes: Vec<u8> = Reason::ALL.iter().map(|r| r.code()).collect();
        codes.dedup();
        assert_eq!(codes.len(), Reason::ALL.len());
    }

    #[test]
    fn revocations_and_penalties_discard_a_session_and_nothing_else_does() {
        let discarding: Vec<_> = Close::ALL
            .into_iter()
            .filter(|c| !c.keeps_session())
            .map(Close::label)
            .collect();
        assert_eq!(
            discarding,
            [
                "too_many_refusals",
                "credentials_changed",
                "credentials_changed",
                "password_reset",
                "password_rolled_back",
                "token_rotated",
                "reenrolled",
                "instance_removed",
                "account_deleted",
                "kicked_by_operator",
            ]
        );
    }
}
