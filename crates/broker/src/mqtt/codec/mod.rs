//! MQTT framing for the session. Packets are parsed and written by rumqttc's codec; this
//! module only picks the version from CONNECT and maps both versions onto one small
//! vocabulary, so the session logic is written once. One file per protocol version:
//! `v4` (3.1.1, rumqttc's `mqttbytes::v4`) and `v5` (rumqttc's `v5::mqttbytes::v5`).
//!
//! Framing is checked before rumqttc parses a packet: once a whole frame is buffered, any
//! parse error — including rumqttc's `InsufficientBytes` for a short-form MQTT 5
//! DISCONNECT — is a malformed packet, never a reason to wait for more bytes.

mod v4;
mod v5;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use rumqttc::mqttbytes::{self as mb, v4 as p4};
use rumqttc::v5::mqttbytes::v5 as p5;
use tokio_util::codec::{Decoder, Encoder};
use zeroize::Zeroize;

use super::throttle::Throttle;
use sealrelay_wire::Reason;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V311 => "3.1.1",
            Version::V5 => "5.0",
        }
    }
}

#[derive(Debug)]
pub struct Connect {
    pub version: Version,
    pub client_id: String,
    pub keep_alive: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `Some(retain flag)` when the client set a will.
    pub will_retain: Option<bool>,
    /// MQTT 5: the most unacknowledged QoS 1/2 publishes the client accepts.
    pub receive_maximum: Option<u16>,
    /// MQTT 5: the largest packet the client accepts.
    pub max_packet_size: Option<u32>,
    /// 3.1.1 Clean Session, MQTT 5 Clean Start: `false` resumes a stored session.
    pub clean_start: bool,
    /// MQTT 5: seconds the session outlives the connection (absent: 0).
    pub session_expiry: Option<u32>,
}

#[derive(Debug)]
pub struct Publish {
    pub topic: String,
    pub qos: u8,
    pub retain: bool,
    pub pkid: u16,
    pub payload: Bytes,
}

/// What a client can send, in both versions.
#[derive(Debug)]
pub enum Inbound {
    Connect(Box<Connect>),
    Publish(Publish),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe {
        pkid: u16,
        filters: Vec<(String, u8)>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    /// MQTT 5 may change the session's expiry as it leaves.
    Disconnect {
        session_expiry: Option<u32>,
    },
    /// A packet only a server may send (CONNACK, SUBACK, …): a protocol error.
    ServerOnly,
}

/// CONNACK details that only MQTT 5 can carry.
#[derive(Debug, Clone)]
pub struct ConnAckInfo {
    pub assigned_client_id: Option<String>,
    pub max_packet_size: u32,
    pub receive_maximum: u16,
    pub server_keep_alive: Option<u16>,
    /// The session expiry the broker grants, when it is less than the client asked for.
    pub session_expiry: Option<u32>,
}

/// What the broker sends, in both versions.
#[derive(Debug)]
pub enum Outbound {
    ConnAck {
        reason: Reason,
        /// A stored session was resumed (MQTT-3.2.2-2).
        session_present: bool,
        info: Option<ConnAckInfo>,
    },
    Publish {
        topic: Bytes,
        qos: u8,
        pkid: u16,
        payload: Bytes,
        /// Sent before on an earlier connection and not acknowledged.
        dup: bool,
    },
    /// `label` goes out as the MQTT 5 Reason String of a refusal; 3.1.1 has nowhere to put it.
    PubAck {
        pkid: u16,
        reason: Reason,
        label: Option<&'static str>,
    },
    PubRec {
        pkid: u16,
        reason: Reason,
        label: Option<&'static str>,
    },
    PubComp {
        pkid: u16,
    },
    /// `Ok(granted QoS)` or the refusal reason, per filter.
    SubAck {
        pkid: u16,
        results: Vec<Result<u8, Reason>>,
    },
    UnsubAck {
        pkid: u16,
        count: usize,
    },
    PingResp,
    /// Sent to MQTT 5 clients only; 3.1.1 has no server DISCONNECT, the socket just closes.
    /// The text goes out as the Reason String property: a static label, never data.
    Disconnect(Reason, &'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("packet of {0} bytes exceeds the maximum packet size")]
    TooLarge(usize),
    #[error("malformed packet: {0}")]
    Malformed(String),
    #[error("first packet is not CONNECT")]
    NotConnect,
    #[error("protocol {name} level {level} is not supported (MQTT 3.1.1 and 5.0 are)")]
    UnsupportedProtocol { name: String, level: u8 },
    #[error("cannot encode packet: {0}")]
    Encode(String),
    #[error("a PUBLISH carries a Topic Alias, but the Topic Alias Maximum is 0")]
    TopicAlias,
}

impl CodecError {
    /// The reason code a client is told before the connection closes.
    pub fn reason(&self) -> Reason {
        match self {
            CodecError::TooLarge(_) => Reason::PacketTooLarge,
            CodecError::UnsupportedProtocol { .. } => Reason::UnsupportedProtocolVersion,
            CodecError::NotConnect => Reason::ProtocolError,
            CodecError::TopicAlias => Reason::TopicAliasInvalid,
            _ => Reason::MalformedPacket,
        }
    }
}

/// The largest CONNECT accepted, far above any real one (login ≤ 128 bytes, a 43-character
/// secret, a client id, a few properties): an unauthenticated peer may not make the broker
/// buffer a full-size packet.
pub const MAX_CONNECT_BYTES: u32 = 8 * 1024;

pub struct MqttCodec {
    version: Option<Version>,
    max_packet: u32,
    /// Where the session reads whether a packet is half-received, and since when.
    progress: Option<Arc<Progress>>,
    /// The session's rate limits, told of each PUBLISH decoded.
    throttle: Option<Arc<Throttle>>,
}

/// Since when something unfinished has been waiting on a session's socket, shared with the
/// session: a packet being received (marked by the decoder: a connection that stops
/// mid-packet is closed after `mqtt.packet_timeout_secs` whatever its keepalive), or bytes
/// being written (marked by the writer: after `mqtt.send_timeout_secs` the client is taken
/// to have stopped reading).
pub struct Progress {
    base: Instant,
    /// Milliseconds after `base` when the unfinished packet or write began; 0 when none is.
    partial_since_ms: AtomicU64,
}

impl Progress {
    pub fn new() -> Arc<Progress> {
        Arc::new(Progress {
            base: Instant::now(),
            partial_since_ms: AtomicU64::new(0),
        })
    }

    pub fn mark(&self, unfinished: bool) {
        if !unfinished {
            self.partial_since_ms.store(0, Ordering::Relaxed);
        } else if self.partial_since_ms.load(Ordering::Relaxed) == 0 {
            let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.partial_since_ms.store(now.max(1), Ordering::Relaxed);
        }
    }

    /// How long the unfinished packet or write has been waiting, if one is.
    pub fn stalled_for(&self) -> Option<Duration> {
        let since = self.partial_since_ms.load(Ordering::Relaxed);
        (since != 0).then(|| {
            self.base
                .elapsed()
                .saturating_sub(Duration::from_millis(since))
        })
    }
}

impl MqttCodec {
    /// A decoder that learns the version from the CONNECT it reads first.
    pub fn server(max_packet: u32) -> Self {
        MqttCodec {
            version: None,
            max_packet,
            progress: None,
            throttle: None,
        }
    }

    /// Reports to `progress` whether a packet is half-received after each read, and each
    /// PUBLISH to `throttle`.
    pub fn watched_by(mut self, progress: Arc<Progress>, throttle: Option<Arc<Throttle>>) -> Self {
        self.progress = Some(progress);
        self.throttle = throttle;
        self
    }

    /// An encoder for a session whose version is known.
    pub fn for_version(version: Version, max_packet: u32) -> Self {
        MqttCodec {
            version: Some(version),
            max_packet,
            progress: None,
            throttle: None,
        }
    }
}

/// Length of the fixed header of a frame `check` accepted: type byte plus the
/// variable-length remaining length (at most 4 bytes, validated by `check`).
fn fixed_header_len(frame: &[u8]) -> usize {
    1 + frame[1..]
        .iter()
        .take(4)
        .position(|b| b & 0x80 == 0)
        .map_or(4, |i| i + 1)
}

/// Reads protocol name and level from a complete CONNECT frame.
fn sniff_version(frame: &[u8], header_len: usize) -> Result<Version, CodecError> {
    let rest = &frame[header_len..];
    let malformed = || CodecError::Malformed("CONNECT variable header is truncated".into());
    let name_len = u16::from_be_bytes([
        *rest.first().ok_or_else(malformed)?,
        *rest.get(1).ok_or_else(malformed)?,
    ]) as usize;
    let name = rest.get(2..2 + name_len).ok_or_else(malformed)?;
    let level = *rest.get(2 + name_len).ok_or_else(malformed)?;
    match (name, level) {
        (b"MQTT", 4) => Ok(Version::V311),
        (b"MQTT", 5) => Ok(Version::V5),
        _ => Err(CodecError::UnsupportedProtocol {
            // Sent before any login and logged at debug: escaped, so a newline or an
            // escape sequence in it cannot forge or garble log lines.
            name: String::from_utf8_lossy(name).escape_debug().to_string(),
            level,
        }),
    }
}

impl Decoder for MqttCodec {
    type Item = Inbound;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, CodecError> {
        let decoded = self.decode_frame(src);
        if let Some(progress) = &self.progress {
            // The stream calls decode until it answers None: that last call knows whether
            // bytes of an unfinished packet are left in the buffer.
            progress.mark(matches!(decoded, Ok(None)) && !src.is_empty());
        }
        if let (Some(throttle), Ok(Some(Inbound::Publish(_)))) = (&self.throttle, &decoded) {
            throttle.spend_publish();
        }
        decoded
    }
}

impl MqttCodec {
    fn decode_frame(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, CodecError> {
        // Before the CONNECT is read the peer is unauthenticated: a small limit.
        let limit = match self.version {
            None => self.max_packet.min(MAX_CONNECT_BYTES),
            Some(_) => self.max_packet,
        };
        let header = match mb::check(src.iter(), limit as usize) {
            Ok(header) => header,
            Err(mb::Error::InsufficientBytes(n)) => {
                src.reserve(n);
                return Ok(None);
            }
            Err(mb::Error::PayloadSizeLimitExceeded(n)) => return Err(CodecError::TooLarge(n)),
            Err(e) => return Err(CodecError::Malformed(e.to_string())),
        };
        let frame_len = header.frame_length();
        let header_len = fixed_header_len(src);
        let remaining_len = frame_len - header_len;
        let packet_type = src[0] >> 4;
        let version = match self.version {
            Some(v) => v,
            None if packet_type == 1 => {
                let v = sniff_version(&src[..frame_len], header_len)?;
                self.version = Some(v);
                v
            }
            None => return Err(CodecError::NotConnect),
        };
        // MQTT 5 DISCONNECT may omit reason code and properties; rumqttc rejects or
        // stalls on those short forms, so they are taken here.
        if version == Version::V5 && src[0] == 0xE0 && remaining_len <= 1 {
            src.advance(frame_len);
            return Ok(Some(Inbound::Disconnect {
                session_expiry: None,
            }));
        }
        let malformed = |e: &dyn std::fmt::Display| CodecError::Malformed(e.to_string());
        let mut frame = if packet_type == 1 {
            // A CONNECT carries the login secret: it is parsed from a copy (freed, and so
            // wiped, by the allocator) and wiped here, in the buffer that lives as long as
            // the connection.
            let copy = BytesMut::from(&src[..frame_len]);
            src[..frame_len].zeroize();
            src.advance(frame_len);
            copy
        } else {
            src.split_to(frame_len)
        };
        let inbound = match version {
            Version::V311 => v4::from_v4(
                p4::Packet::read(&mut frame, self.max_packet as usize)
                    .map_err(|e| malformed(&e))?,
            ),
            Version::V5 => {
                let packet = p5::Packet::read(&mut frame, Some(self.max_packet))
                    .map_err(|e| malformed(&e))?;
                if let p5::Packet::Publish(p) = &packet {
                    if p.properties
                        .as_ref()
                        .is_some_and(|p| p.topic_alias.is_some())
                    {
                        return Err(CodecError::TopicAlias);
                    }
                }
                v5::from_v5(packet)
            }
        };
        Ok(Some(inbound))
    }
}

impl Encoder<Outbound> for MqttCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Outbound, dst: &mut BytesMut) -> Result<(), CodecError> {
        let encode_err = |e: &dyn std::fmt::Display| CodecError::Encode(e.to_string());
        match self.version.unwrap_or(Version::V311) {
            Version::V311 => v4::to_v4(item)
                .map(|p| p.write(dst, usize::MAX).map_err(|e| encode_err(&e)))
                .transpose()?,
            Version::V5 => v5::to_v5(item, self.max_packet)
                .write(dst, None)
                .map(Some)
                .map_err(|e| encode_err(&e))?,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::v4;
    use rumqttc::v5::mqttbytes::v5;

    fn v5_codec() -> MqttCodec {
        MqttCodec::for_version(Version::V5, 1024)
    }

    #[test]
    fn short_v5_disconnects_decode_instead_of_stalling() {
        for bytes in [&[0xE0u8, 0x00][..], &[0xE0, 0x01, 0x8E][..]] {
            let mut buf = BytesMut::from(bytes);
            assert!(
                matches!(
                    v5_codec().decode(&mut buf),
                    Ok(Some(Inbound::Disconnect { .. }))
                ),
                "{bytes:x?}"
            );
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn progress_tracks_an_unfinished_packet_only() {
        let progress = Progress::new();
        let mut codec = v5_codec().watched_by(progress.clone(), None);
        let mut buf = BytesMut::new();
        assert!(matches!(codec.decode(&mut buf), Ok(None)));
        assert!(progress.stalled_for().is_none(), "nothing buffered");
        buf.extend_from_slice(&[0xC0, 0x00, 0xC0]); // PINGREQ, then half of another
        assert!(matches!(codec.decode(&mut buf), Ok(Some(Inbound::PingReq))));
        assert!(matches!(codec.decode(&mut buf), Ok(None)));
        assert!(
            progress.stalled_for().is_some(),
            "one byte of a packet is waiting"
        );
        buf.extend_from_slice(&[0x00]);
        assert!(matches!(codec.decode(&mut buf), Ok(Some(Inbound::PingReq))));
        assert!(matches!(codec.decode(&mut buf), Ok(None)));
        assert!(progress.stalled_for().is_none(), "finished");
    }

    #[test]
    fn partial_frames_wait_and_oversized_frames_fail() {
        let mut buf = BytesMut::from(&[0x30u8, 0x05, 0x00][..]);
        assert!(matches!(v5_codec().decode(&mut buf), Ok(None)));
        let mut big = BytesMut::from(&[0x30u8, 0xFF, 0xFF, 0x03][..]);
        assert!(matches!(
            v5_codec().decode(&mut big),
            Err(CodecError::TooLarge(_))
        ));
    }

    #[test]
    fn server_disconnect_is_well_framed() {
        let mut buf = BytesMut::new();
        v5_codec()
            .encode(Outbound::Disconnect(Reason::NotAuthorized, "x"), &mut buf)
            .unwrap();
        // Type, remaining length, reason, property length, Reason String (0x1F) "x".
        assert_eq!(&buf[..], &[0xE0, 0x06, 0x87, 0x04, 0x1F, 0x00, 0x01, b'x']);
    }

    #[test]
    fn version_is_sniffed_from_connect() {
        for (level, version) in [(4u8, Version::V311), (5, Version::V5)] {
            let mut buf = BytesMut::new();
            let mut codec = MqttCodec::server(1024);
            if level == 4 {
                v4::Packet::Connect(v4::Connect::new("c"))
                    .write(&mut buf, 1024)
                    .unwrap();
            } else {
                v5::Packet::Connect(
                    v5::Connect {
                        keep_alive: 10,
                        client_id: "c".into(),
                        clean_start: true,
                        properties: None,
                    },
                    None,
                    None,
                )
                .write(&mut buf, None)
                .unwrap();
            }
            let Ok(Some(Inbound::Connect(c))) = codec.decode(&mut buf) else {
                panic!("CONNECT level {level} did not decode");
            };
            assert_eq!(c.version, version);
        }
        let mut not_connect = BytesMut::from(&[0xC0u8, 0x00][..]);
        assert!(matches!(
            MqttCodec::server(1024).decode(&mut not_connect),
            Err(CodecError::NotConnect)
        ));
    }

    #[test]
    fn an_unknown_protocol_name_is_escaped_before_it_can_reach_a_log_line() {
        // CONNECT, protocol name "MQ\nINFO forged\x1b[2J" (18 bytes), level 4.
        let mut frame = vec![0x10, 22, 0x00, 18];
        frame.extend_from_slice(b"MQ\nINFO forged\x1b[2J");
        frame.extend_from_slice(&[4, 0]);
        let err = MqttCodec::server(1024)
            .decode(&mut BytesMut::from(&frame[..]))
            .unwrap_err()
            .to_string();
        assert!(!err.contains('\n') && !err.contains('\x1b'), "{err}");
        assert!(err.contains(r"MQ\nINFO forged\u{1b}[2J"), "{err}");
    }
}
