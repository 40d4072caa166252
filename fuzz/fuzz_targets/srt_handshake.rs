#![no_main]
//! A Listener fed arbitrary datagrams (split at 0xFF 0xFE markers into several), accepting
//! every request it produces; the resulting connection gets the remaining datagrams. Each
//! datagram also goes through the router (`Routes`), which must never hand a datagram from
//! an address other than the connection's peer to the connection.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use tidegate_srt::{AcceptParams, Listener, ListenerConfig, ListenerOutput, Route, Routes};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let from: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let other: SocketAddr = "127.0.0.1:4001".parse().unwrap();
    let mut routes = Routes::default();
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
                routes.insert(c.socket_id(), from, ());
                conn = Some(c);
            }
        }
        assert!(!matches!(routes.route(other, d), Route::Connection(_)));
        let _ = routes.route(from, d);
        if let Some(c) = &mut conn {
            let _ = c.handle_datagram(now, d);
            c.handle_timeout(now);
            while c.poll_transmit(now).is_some() {}
            while c.poll_event().is_some() {}
            let _ = c.poll_timeout();
        }
    }
});
