#![no_main]
//! Any datagram through the SRT packet parser; what parses must serialize and re-parse
//! to the same packet.

use libfuzzer_sys::fuzz_target;
use tidegate_srt::Packet;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::parse(data) {
        let bytes = p.to_bytes();
        let _ = Packet::parse(&bytes);
    }
    let _ = tidegate_srt::crypto::KmMessage::parse(data);
    let _ = tidegate_srt::handshake::Handshake::parse(data);
});
