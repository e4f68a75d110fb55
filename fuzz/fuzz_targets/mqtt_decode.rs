//! The broker's MQTT decoder on arbitrary bytes: the first byte picks a decoder that has not
//! seen a CONNECT yet (it must sniff the version from one), or one already in 3.1.1 or 5.0
//! (every packet a client may send after its CONNECT). Decoding repeats until the input is
//! used up or refused: no panic, no hang, no allocation beyond the packet limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sealrelay_broker::mqtt::codec::{MqttCodec, Version};
use tokio_util::codec::Decoder;

/// The broker's default `mqtt.max_packet_bytes`.
const MAX_PACKET: u32 = 263_168;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let mut codec = match which % 3 {
        0 => MqttCodec::server(MAX_PACKET),
        1 => MqttCodec::for_version(Version::V311, MAX_PACKET),
        _ => MqttCodec::for_version(Version::V5, MAX_PACKET),
    };
    let mut buf = BytesMut::from(rest);
    while let Ok(Some(_)) = codec.decode(&mut buf) {}
});
