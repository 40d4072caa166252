#![no_main]
//! A whole session: a valid plain handshake, then arbitrary bytes fed in pieces whose sizes
//! come from the input; every publish is accepted, timers fire.
use std::time::{Duration, Instant};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tidegate_rtmp::{Event, ServerSession, SessionConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&split_seed, rest)) = data.split_first() else {
        return;
    };
    let mut now = Instant::now();
    let mut session = ServerSession::new(SessionConfig::default(), now);
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[3u8]);
    buf.extend_from_slice(&[0u8; 1536 * 2]);
    if session.handle_input(now, &mut buf).is_err() {
        return;
    }
    let step = usize::from(split_seed) + 1;
    for piece in rest.chunks(step) {
        now += Duration::from_millis(5);
        buf.extend_from_slice(piece);
        if session.handle_input(now, &mut buf).is_err() || session.handle_timeout(now).is_err()
        {
            return;
        }
        while session.poll_transmit().is_some() {}
        while let Some(ev) = session.poll_event() {
            match ev {
                Event::PublishRequest { stream_id, .. } => {
                    if stream_id % 2 == 0 {
                        session.reject_publish(stream_id, "NetStream.Publish.BadName", "no");
                    } else {
                        session.accept_publish(stream_id);
                    }
                }
                Event::Video { stream_id, .. } if split_seed == 0xff => {
                    session.end_publish(stream_id)
                }
                _ => {}
            }
        }
    }
});
