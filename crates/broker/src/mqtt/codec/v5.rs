//! MQTT 5.0 packets, as rumqttc's `v5::mqttbytes::v5` reads and writes them, mapped to and
//! from the session's vocabulary, with reason codes and Reason String labels.

use rumqttc::v5::mqttbytes::{v5, QoS as Qos5};

use super::{Connect, Inbound, Outbound, Publish, Version};
use sealrelay_wire::Reason;

/// PUBACK and PUBREC share one set of reason codes (MQTT 5 §3.4.2.1 and §3.5.2.1), which
/// rumqttc models as two enums with the same variants.
macro_rules! publish_ack_reason {
    ($name:ident, $enum:ty) => {
        fn $name(reason: Reason) -> $enum {
            type A = $enum;
            match reason {
                Reason::Success => A::Success,
                Reason::NoMatchingSubscribers => A::NoMatchingSubscribers,
                Reason::NotAuthorized => A::NotAuthorized,
                Reason::TopicNameInvalid => A::TopicNameInvalid,
                Reason::QuotaExceeded => A::QuotaExceeded,
                Reason::PayloadFormatInvalid => A::PayloadFormatInvalid,
                Reason::PacketIdInUse => A::PacketIdentifierInUse,
                _ => A::UnspecifiedError,
            }
        }
    };
}

publish_ack_reason!(v5_puback, v5::PubAckReason);
publish_ack_reason!(v5_pubrec, v5::PubRecReason);

pub(super) fn qos5_of(q: Qos5) -> u8 {
    q as u8
}

pub(super) fn to_qos5(q: u8) -> Qos5 {
    match q {
        0 => Qos5::AtMostOnce,
        1 => Qos5::AtLeastOnce,
        _ => Qos5::ExactlyOnce,
    }
}

pub(super) fn from_v5(packet: v5::Packet) -> Inbound {
    match packet {
        v5::Packet::Connect(c, will, login) => Inbound::Connect(Box::new(Connect {
            version: Version::V5,
            client_id: c.client_id,
            keep_alive: c.keep_alive,
            will_retain: will.map(|w| w.retain),
            username: login.as_ref().map(|l| l.username.clone()),
            password: login.map(|l| l.password),
            receive_maximum: c.properties.as_ref().and_then(|p| p.receive_maximum),
            max_packet_size: c.properties.as_ref().and_then(|p| p.max_packet_size),
            clean_start: c.clean_start,
            session_expiry: c
                .properties
                .as_ref()
                .and_then(|p| p.session_expiry_interval),
        })),
        v5::Packet::Publish(p) => Inbound::Publish(Publish {
            // A topic that is not UTF-8 can never name an inbox; it fails the ACL check.
            topic: String::from_utf8(p.topic.to_vec()).unwrap_or_default(),
            qos: qos5_of(p.qos),
            retain: p.retain,
            pkid: p.pkid,
            payload: p.payload,
        }),
        v5::Packet::PubAck(a) => Inbound::PubAck(a.pkid),
        v5::Packet::PubRec(a) => Inbound::PubRec(a.pkid),
        v5::Packet::PubRel(a) => Inbound::PubRel(a.pkid),
        v5::Packet::PubComp(a) => Inbound::PubComp(a.pkid),
        v5::Packet::Subscribe(s) => Inbound::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, qos5_of(f.qos)))
                .collect(),
        },
        v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        v5::Packet::PingReq(_) => Inbound::PingReq,
        v5::Packet::Disconnect(d) => Inbound::Disconnect {
            session_expiry: d.properties.and_then(|p| p.session_expiry_interval),
        },
        v5::Packet::Auth(_)
        | v5::Packet::ConnAck(_)
        | v5::Packet::SubAck(_)
        | v5::Packet::UnsubAck(_)
        | v5::Packet::PingResp(_) => Inbound::ServerOnly,
    }
}

pub(super) fn v5_connack(reason: Reason) -> v5::ConnectReturnCode {
    use v5::ConnectReturnCode as C;
    match reason {
        Reason::Success => C::Success,
        Reason::MalformedPacket => C::MalformedPacket,
        Reason::ProtocolError => C::ProtocolError,
        Reason::UnsupportedProtocolVersion => C::UnsupportedProtocolVersion,
        Reason::ClientIdNotValid => C::ClientIdentifierNotValid,
        Reason::NotAuthorized => C::NotAuthorized,
        Reason::PacketTooLarge => C::PacketTooLarge,
        Reason::RetainNotSupported => C::RetainNotSupported,
        Reason::ConnectionRateExceeded => C::ConnectionRateExceeded,
        Reason::QuotaExceeded => C::QuotaExceeded,
        Reason::ServerShuttingDown => C::ServerUnavailable,
        _ => C::UnspecifiedError,
    }
}

pub(super) fn v5_disconnect(reason: Reason) -> v5::DisconnectReasonCode {
    use v5::DisconnectReasonCode as D;
    match reason {
        Reason::Success => D::NormalDisconnection,
        Reason::MalformedPacket => D::MalformedPacket,
        Reason::ProtocolError => D::ProtocolError,
        Reason::NotAuthorized => D::NotAuthorized,
        Reason::ServerShuttingDown => D::ServerShuttingDown,
        Reason::KeepAliveTimeout => D::KeepAliveTimeout,
        Reason::SessionTakenOver => D::SessionTakenOver,
        Reason::TopicNameInvalid => D::TopicNameInvalid,
        Reason::ReceiveMaximumExceeded => D::ReceiveMaximumExceeded,
        Reason::TopicAliasInvalid => D::TopicAliasInvalid,
        Reason::PacketTooLarge => D::PacketTooLarge,
        Reason::QuotaExceeded => D::QuotaExceeded,
        Reason::AdministrativeAction => D::AdministrativeAction,
        Reason::PayloadFormatInvalid => D::PayloadFormatInvalid,
        Reason::RetainNotSupported => D::RetainNotSupported,
        _ => D::UnspecifiedError,
    }
}

pub(super) fn to_v5(item: Outbound, max_packet: u32) -> v5::Packet {
    match item {
        Outbound::ConnAck {
            reason,
            session_present,
            info,
        } => v5::Packet::ConnAck(v5::ConnAck {
            session_present,
            code: v5_connack(reason),
            properties: info.map(|info| v5::ConnAckProperties {
                session_expiry_interval: info.session_expiry,
                receive_max: Some(info.receive_maximum),
                // QoS 2 is accepted inbound and downgraded to 1 on delivery.
                max_qos: None,
                retain_available: Some(0),
                max_packet_size: Some(info.max_packet_size.min(max_packet)),
                assigned_client_identifier: info.assigned_client_id,
                topic_alias_max: None,
                reason_string: None,
                user_properties: Vec::new(),
                wildcard_subscription_available: Some(0),
                subscription_identifiers_available: Some(0),
                shared_subscription_available: Some(0),
                server_keep_alive: info.server_keep_alive,
                response_information: None,
                server_reference: None,
                authentication_method: None,
                authentication_data: None,
            }),
        }),
        Outbound::Publish {
            topic,
            qos,
            pkid,
            payload,
            dup,
        } => v5::Packet::Publish(v5::Publish {
            dup,
            qos: to_qos5(qos),
            retain: false,
            topic,
            pkid,
            payload,
            properties: None,
        }),
        Outbound::PubAck {
            pkid,
            reason,
            label,
        } => v5::Packet::PubAck(v5::PubAck {
            pkid,
            reason: v5_puback(reason),
            properties: label.map(|why| v5::PubAckProperties {
                reason_string: Some(why.to_owned()),
                user_properties: Vec::new(),
            }),
        }),
        Outbound::PubRec {
            pkid,
            reason,
            label,
        } => v5::Packet::PubRec(v5::PubRec {
            pkid,
            reason: v5_pubrec(reason),
            properties: label.map(|why| v5::PubRecProperties {
                reason_string: Some(why.to_owned()),
                user_properties: Vec::new(),
            }),
        }),
        Outbound::PubComp { pkid } => v5::Packet::PubComp(v5::PubComp::new(pkid, None)),
        Outbound::SubAck { pkid, results } => v5::Packet::SubAck(v5::SubAck {
            pkid,
            return_codes: results
                .into_iter()
                .map(|r| match r {
                    Ok(q) => v5::SubscribeReasonCode::Success(to_qos5(q)),
                    Err(Reason::NotAuthorized) => v5::SubscribeReasonCode::NotAuthorized,
                    Err(_) => v5::SubscribeReasonCode::Unspecified,
                })
                .collect(),
            properties: None,
        }),
        Outbound::UnsubAck { pkid, count } => v5::Packet::UnsubAck(v5::UnsubAck {
            pkid,
            reasons: vec![v5::UnsubAckReason::Success; count],
            properties: None,
        }),
        Outbound::PingResp => v5::Packet::PingResp(v5::PingResp),
        // Always with a properties block: rumqttc writes the property-less form with a
        // wrong remaining length, which its own client then fails to parse.
        Outbound::Disconnect(reason, why) => v5::Packet::Disconnect(v5::Disconnect {
            reason_code: v5_disconnect(reason),
            properties: Some(v5::DisconnectProperties {
                session_expiry_interval: None,
                reason_string: Some(why.to_owned()),
                user_properties: Vec::new(),
                server_reference: None,
            }),
        }),
    }
}
