//! The envelope's clear header (protocol §4), which the broker parses on every publish: any
//! bytes parse or are refused, never panic; what parses encodes back to the same header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealrelay_wire::envelope::Header;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = Header::parse(data) {
        let body = &data[data.len() - header.body_len as usize..];
        assert_eq!(&header.encode(body)[..], data);
    }
});
