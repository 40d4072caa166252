//! Pull mode: the caller receives and the listener sends (a remote encoder or gateway that
//! only listens, as ffmpeg `mode=listener` does). Deterministic simulation.
// A test binary: its helpers (outside `#[test]` functions, which clippy.toml already
// covers) may unwrap, panic and index too; the crate's deny lints are for its library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use tidegate_srt::{AcceptParams, CallerConfig, CloseReason, Event, KeyLength};

fn pull_cfg(latency_ms: u64) -> CallerConfig {
    let mut c = CallerConfig::new([9; 32]);
    c.stream_id = Some("#!::r=live/feed,m=request".into());
    c.latency = Duration::from_millis(latency_ms);
    c
}

/// Streams `seconds` of `bitrate` from the listener to the caller, then runs `tail` more.
fn stream_down(pair: &mut Pair, seconds: u64, bitrate: u64, tail: Duration) -> u64 {
    let interval = Duration::from_nanos(1316 * 8 * 1_000_000_000 / bitrate);
    let end = pair.now + Duration::from_secs(seconds);
    let mut next_send = pair.now;
    let mut i = 0;
    while next_send < end {
        pair.run_until(next_send);
        pair.listener.send(pair.now, payload(i)).unwrap();
        i += 1;
        next_send += interval;
    }
    pair.run_until(end + tail);
    i
}

fn caller_indexes(pair: &Pair) -> Vec<u64> {
    pair.caller_events
        .iter()
        .filter_map(|e| match e {
            Event::Payload(p) => Some(index_of(p)),
            _ => None,
        })
        .collect()
}

#[test]
fn caller_receives_through_loss() {
    let net = Net::new(
        21,
        0.05,
        Duration::from_millis(20),
        Duration::from_millis(5),
    );
    let mut pair = Pair::new(
        net,
        pull_cfg(200),
        AcceptParams {
            latency: Some(Duration::from_millis(120)),
            ..AcceptParams::default()
        },
    );
    // The larger latency wins in both directions.
    assert_eq!(pair.caller.latency(), Duration::from_millis(200));
    assert_eq!(pair.listener.peer_latency(), Duration::from_millis(200));
    let sent = stream_down(&mut pair, 5, 3_000_000, Duration::from_secs(1));
    assert!(sent > 1400, "{sent}");
    assert_eq!(caller_indexes(&pair), (0..sent).collect::<Vec<_>>());
    let rs = pair.caller.stats();
    assert_eq!(rs.packets_dropped, 0, "{rs:?}");
    assert!(rs.packets_lost > 20, "{rs:?}");
    assert!(rs.packets_retransmitted_received > 20, "{rs:?}");
    assert_eq!(pair.listener.stats().packets_sent, sent);
}

#[test]
fn caller_receives_encrypted_all_key_lengths() {
    for kl in [KeyLength::Aes128, KeyLength::Aes192, KeyLength::Aes256] {
        let net = Net::new(22, 0.02, Duration::from_millis(5), Duration::from_millis(2));
        let mut cfg = pull_cfg(120);
        cfg.passphrase = Some("correct horse battery".into());
        cfg.key_length = kl;
        let mut pair = Pair::new(
            net,
            cfg,
            AcceptParams {
                passphrase: Some("correct horse battery".into()),
                ..AcceptParams::default()
            },
        );
        assert!(pair.caller.is_encrypted());
        let sent = stream_down(&mut pair, 1, 2_000_000, Duration::from_millis(500));
        assert_eq!(
            caller_indexes(&pair),
            (0..sent).collect::<Vec<_>>(),
            "{kl:?}"
        );
        assert_eq!(pair.caller.stats().packets_undecryptable, 0);
    }
}

#[test]
fn caller_sees_listener_shutdown_and_silence() {
    let net = Net::new(23, 0.0, Duration::from_millis(5), Duration::ZERO);
    let mut pair = Pair::new(net, pull_cfg(120), AcceptParams::default());
    let sent = stream_down(&mut pair, 1, 1_000_000, Duration::ZERO);
    pair.listener.close(pair.now);
    let t = pair.now + Duration::from_millis(100);
    pair.run_until(t);
    assert_eq!(
        pair.caller_events.last(),
        Some(&Event::Closed {
            reason: CloseReason::PeerShutdown
        })
    );
    assert_eq!(pair.caller.stats().packets_delivered, sent);

    // The remote disappears without a word (ffmpeg killed): the caller times out.
    let net = Net::new(24, 0.0, Duration::from_millis(5), Duration::ZERO);
    let mut cfg = pull_cfg(120);
    cfg.peer_idle_timeout = Duration::from_secs(2);
    let mut pair = Pair::new(net, cfg, AcceptParams::default());
    stream_down(&mut pair, 1, 1_000_000, Duration::ZERO);
    pair.net.loss = 1.0;
    let t = pair.now + Duration::from_secs(3);
    pair.run_until(t);
    assert_eq!(
        pair.caller_events.last(),
        Some(&Event::Closed {
            reason: CloseReason::Timeout
        })
    );
}

#[test]
fn nobody_listening_times_out() {
    // No answer at all: the caller repeats its induction every 250 ms, then gives up.
    let mut now = Instant::now();
    let start = now;
    let mut cfg = pull_cfg(120);
    cfg.connect_timeout = Duration::from_secs(1);
    let mut caller = tidegate_srt::Caller::new(now, listener_addr(), cfg).unwrap();
    let mut sent = 0;
    let outcome = loop {
        caller.handle_timeout(now);
        if let Some(o) = caller.poll_outcome() {
            break o;
        }
        while caller.poll_transmit(now).is_some() {
            sent += 1;
        }
        now = caller.poll_timeout().expect("a deadline while connecting");
    };
    assert_eq!(outcome.err(), Some(tidegate_srt::Error::HandshakeTimeout));
    assert_eq!(now - start, Duration::from_secs(1));
    assert_eq!(sent, 4, "inductions at 0, 250, 500 and 750 ms");
}
