#![no_main]
//! Arbitrary bytes into a fresh session's handshake (then whatever follows), in two pieces.
use std::time::Instant;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tidegate_rtmp::{ServerSession, SessionConfig};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut session = ServerSession::new(SessionConfig::default(), now);
    let split = data.first().map_or(0, |b| usize::from(*b) * 13).min(data.len());
    let mut buf = BytesMut::new();
    for part in [&data[..split], &data[split..]] {
        buf.extend_from_slice(part);
        if session.handle_input(now, &mut buf).is_err() {
            break;
        }
        while session.poll_transmit().is_some() {}
        while session.poll_event().is_some() {}
    }
});
