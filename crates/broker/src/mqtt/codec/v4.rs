//! MQTT 3.1.1 packets, as rumqttc's `mqttbytes::v4` reads and writes them, mapped to and
//! from the session's vocabulary. 3.1.1 has no reason codes beyond CONNACK's return code
//! and SUBACK's failure flag, and no server DISCONNECT.

use rumqttc::mqttbytes::{v4, QoS};

use super::{Connect, Inbound, Outbound, Publish, Version};
use sealrelay_wire::Reason;

pub(super) fn qos_of(q: QoS) -> u8 {
    q as u8
}

pub(super) fn to_qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

pub(super) fn from_v4(packet: v4::Packet) -> Inbound {
    match packet {
        v4::Packet::Connect(c) => Inbound::Connect(Box::new(Connect {
            version: Version::V311,
            client_id: c.client_id,
            keep_alive: c.keep_alive,
            will_retain: c.last_will.map(|w| w.retain),
            username: c.login.as_ref().map(|l| l.username.clone()),
            password: c.login.map(|l| l.password),
            receive_maximum: None,
            max_packet_size: None,
            clean_start: c.clean_session,
            session_expiry: None,
        })),
        v4::Packet::Publish(p) => Inbound::Publish(Publish {
            topic: p.topic,
            qos: qos_of(p.qos),
            retain: p.retain,
            pkid: p.pkid,
            payload: p.payload,
        }),
        v4::Packet::PubAck(a) => Inbound::PubAck(a.pkid),
        v4::Packet::PubRec(a) => Inbound::PubRec(a.pkid),
        v4::Packet::PubRel(a) => Inbound::PubRel(a.pkid),
        v4::Packet::PubComp(a) => Inbound::PubComp(a.pkid),
        v4::Packet::Subscribe(s) => Inbound::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, qos_of(f.qos)))
                .collect(),
        },
        v4::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        v4::Packet::PingReq => Inbound::PingReq,
        v4::Packet::Disconnect => Inbound::Disconnect {
            session_expiry: None,
        },
        v4::Packet::ConnAck(_)
        | v4::Packet::SubAck(_)
        | v4::Packet::UnsubAck(_)
        | v4::Packet::PingResp => Inbound::ServerOnly,
    }
}

/// MQTT 3.1.1 CONNACK return codes for the reasons sealrelay refuses with.
pub(super) fn v4_connack(reason: Reason) -> v4::ConnectReturnCode {
    use v4::ConnectReturnCode as C;
    match reason {
        Reason::Success => C::Success,
        Reason::UnsupportedProtocolVersion => C::RefusedProtocolVersion,
        Reason::ClientIdNotValid => C::BadClientId,
        Reason::NotAuthorized | Reason::ConnectionRateExceeded => C::NotAuthorized,
        _ => C::ServiceUnavailable,
    }
}

pub(super) fn to_v4(item: Outbound) -> Option<v4::Packet> {
    Some(match item {
        Outbound::ConnAck {
            reason,
            session_present,
            ..
        } => v4::Packet::ConnAck(v4::ConnAck::new(v4_connack(reason), session_present)),
        Outbound::Publish {
            topic,
            qos,
            pkid,
            payload,
            dup,
        } => v4::Packet::Publish(v4::Publish {
            dup,
            qos: to_qos(qos),
            retain: false,
            // Inbox topics are built from ASCII hex, so this never loses anything.
            topic: String::from_utf8_lossy(&topic).into_owned(),
            pkid,
            payload,
        }),
        Outbound::PubAck { pkid, .. } => v4::Packet::PubAck(v4::PubAck::new(pkid)),
        Outbound::PubRec { pkid, .. } => v4::Packet::PubRec(v4::PubRec::new(pkid)),
        Outbound::PubComp { pkid } => v4::Packet::PubComp(v4::PubComp::new(pkid)),
        Outbound::SubAck { pkid, results } => v4::Packet::SubAck(v4::SubAck::new(
            pkid,
            results
                .into_iter()
                .map(|r| match r {
                    Ok(q) => v4::SubscribeReasonCode::Success(to_qos(q)),
                    Err(_) => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        )),
        Outbound::UnsubAck { pkid, .. } => v4::Packet::UnsubAck(v4::UnsubAck::new(pkid)),
        Outbound::PingResp => v4::Packet::PingResp,
        Outbound::Disconnect(..) => return None,
    })
}
