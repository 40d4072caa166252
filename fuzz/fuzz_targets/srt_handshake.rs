#![no_main]
//! A Listener fed arbitrary datagrams (split at 0xFF 0xFE markers into several), accepting
//! every request it produces; the resulting connection gets the remaining datagrams.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use tidegate_srt::{AcceptParams, Listener, ListenerConfig, ListenerOutput};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let from: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let mut l = Listener::new(t0, ListenerConfig::new([5; 32]));
    let mut conn = None;
    let mut now = t0;
    for (i, d) in data.split(|b| *b == 0xFE).enumerate() {
        now += Duration::from_millis(7);
        if let Ok(ListenerOutput::Request(req)) = l.handle_datagram(now, from, d) {
            let params = AcceptParams {
                passphrase: (i % 2 == 0).then(|| "fuzzing-passphrase".to_owned()),
                ..AcceptParams::default()
            };
            if let Ok((c, _)) = l.accept(now, req, params) {
                conn = Some(c);
            }
        }
        if let Some(c) = &mut conn {
            let _ = c.handle_datagram(now, d);
            c.handle_timeout(now);
            while c.poll_transmit(now).is_some() {}
            while c.poll_event().is_some() {}
            let _ = c.poll_timeout();
        }
    }
});
