//! Caller and listener over a simulated lossy network (deterministic, seeded).
// A test binary: its helpers (outside `#[test]` functions, which clippy.toml already
// covers) may unwrap, panic and index too; the crate's deny lints are for its library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::*;
use tidegate_srt::{AcceptParams, CallerConfig, CloseReason, Event, KeyLength, RejectReason};

fn caller_cfg(latency_ms: u64) -> CallerConfig {
    let mut c = CallerConfig::new([7; 32]);
    c.stream_id = Some("#!::r=live/key,m=publish".into());
    c.latency = Duration::from_millis(latency_ms);
    c
}

#[test]
fn five_percent_loss_delivers_everything_in_order() {
    let net = Net::new(1, 0.05, Duration::from_millis(20), Duration::from_millis(5));
    let mut pair = Pair::new(
        net,
        caller_cfg(300),
        AcceptParams {
            latency: Some(Duration::from_millis(120)),
            ..AcceptParams::default()
        },
    );
    // The larger latency wins.
    assert_eq!(pair.listener.latency(), Duration::from_millis(300));
    let sent = stream(&mut pair, 10, 3_000_000, Duration::ZERO);
    let bitrate = pair.listener.stats().receive_bitrate;
    assert!(bitrate > 2_500_000 && bitrate < 4_000_000, "{bitrate}");
    let t = pair.now + Duration::from_secs(1);
    pair.run_until(t);
    assert!(sent > 2800, "{sent}");
    let got = pair.listener_payloads();
    let idx: Vec<u64> = got.iter().map(|p| index_of(p)).collect();
    assert_eq!(idx, (0..sent).collect::<Vec<_>>(), "all payloads, in order");
    assert!(got.iter().enumerate().all(|(i, p)| *p == payload(i as u64)));
    let rs = pair.listener.stats();
    let ss = pair.caller.stats();
    assert_eq!(rs.packets_dropped, 0);
    assert!(rs.packets_lost > 50, "{rs:?}");
    assert!(rs.packets_retransmitted_received > 50, "{rs:?}");
    assert!(ss.packets_retransmitted >= rs.packets_retransmitted_received);
    assert_eq!(ss.packets_sent, sent);
    // The sender counts each packet the receiver reported missing once, however many NAKs
    // named it; with 5 % loss on NAKs too, a few gaps may never have been reported.
    assert!(
        ss.packets_reported_lost <= rs.packets_lost
            && ss.packets_reported_lost * 10 >= rs.packets_lost * 9,
        "{ss:?} {rs:?}"
    );
    assert!(
        ss.naks_received > 0 && ss.naks_received <= rs.naks_sent,
        "{ss:?} {rs:?}"
    );
    // Everything was acknowledged: the send buffer is empty (what a publisher waits for
    // before closing), and the sender adopted the receiver's RTT estimate from its ACKs.
    assert_eq!(ss.send_buffer_packets, 0, "{ss:?}");
    assert!(
        ss.rtt > Duration::from_millis(35) && ss.rtt < Duration::from_millis(70),
        "{ss:?}"
    );
    // RTT converges to the simulated 40-50 ms round trip.
    assert!(
        rs.rtt > Duration::from_millis(35) && rs.rtt < Duration::from_millis(70),
        "{rs:?}"
    );
}

#[test]
fn thirty_percent_loss_drops_and_counts() {
    let net = Net::new(
        2,
        0.30,
        Duration::from_millis(30),
        Duration::from_millis(10),
    );
    let mut pair = Pair::new(net, caller_cfg(120), AcceptParams::default());
    let sent = stream(&mut pair, 10, 3_000_000, Duration::from_secs(2));
    let idx: Vec<u64> = pair
        .listener_payloads()
        .iter()
        .map(|p| index_of(p))
        .collect();
    assert!(
        idx.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates"
    );
    let rs = pair.listener.stats();
    assert!(rs.packets_dropped > 0, "{rs:?}");
    assert_eq!(rs.packets_delivered, idx.len() as u64);
    let accounted = rs.packets_delivered + rs.packets_dropped;
    assert!(
        accounted <= sent && accounted + 20 >= sent,
        "{accounted} of {sent}: {rs:?}"
    );
    // Most of it still got through thanks to retransmission.
    assert!(rs.packets_delivered * 10 > sent * 8, "{rs:?}");
}

#[test]
fn encrypted_all_key_lengths() {
    for kl in [KeyLength::Aes128, KeyLength::Aes192, KeyLength::Aes256] {
        let net = Net::new(3, 0.02, Duration::from_millis(5), Duration::from_millis(2));
        let mut cfg = caller_cfg(120);
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
        assert!(pair.listener.is_encrypted());
        let sent = stream(&mut pair, 1, 2_000_000, Duration::from_millis(500));
        let idx: Vec<u64> = pair
            .listener_payloads()
            .iter()
            .map(|p| index_of(p))
            .collect();
        assert_eq!(idx, (0..sent).collect::<Vec<_>>(), "{kl:?}");
        assert_eq!(pair.listener.stats().packets_undecryptable, 0);
    }
}

#[test]
fn enforced_key_length_mismatch_is_refused() {
    let mut net = Net::new(4, 0.0, Duration::from_millis(5), Duration::ZERO);
    let mut now = std::time::Instant::now();
    let mut cfg = caller_cfg(120);
    cfg.passphrase = Some("correct horse battery".into());
    cfg.key_length = KeyLength::Aes128;
    let (c, l) = handshake(&mut now, &mut net, cfg, |_| {
        Ok(AcceptParams {
            passphrase: Some("correct horse battery".into()),
            enforce_key_length: Some(KeyLength::Aes256),
            ..AcceptParams::default()
        })
    });
    assert_eq!(l.unwrap().err(), Some(RejectReason::UNSECURE));
    assert_eq!(
        c.err(),
        Some(tidegate_srt::Error::Rejected(RejectReason::UNSECURE))
    );
}

fn expect_rejection(caller_pass: Option<&str>, listener_pass: Option<&str>, want: RejectReason) {
    let mut net = Net::new(5, 0.0, Duration::from_millis(5), Duration::ZERO);
    let mut now = std::time::Instant::now();
    let mut cfg = caller_cfg(120);
    cfg.passphrase = caller_pass.map(str::to_owned);
    let lp = listener_pass.map(str::to_owned);
    let (c, l) = handshake(&mut now, &mut net, cfg, move |_| {
        Ok(AcceptParams {
            passphrase: lp.clone(),
            ..AcceptParams::default()
        })
    });
    assert_eq!(l.unwrap().err(), Some(want));
    assert_eq!(c.err(), Some(tidegate_srt::Error::Rejected(want)));
}

#[test]
fn wrong_passphrase_is_badsecret() {
    expect_rejection(
        Some("correct horse battery"),
        Some("incorrect horse battery"),
        RejectReason::BADSECRET,
    );
}

#[test]
fn missing_or_unexpected_passphrase_is_unsecure() {
    expect_rejection(None, Some("correct horse battery"), RejectReason::UNSECURE);
    expect_rejection(Some("correct horse battery"), None, RejectReason::UNSECURE);
}

#[test]
fn application_rejections_reach_the_caller() {
    for reason in [
        RejectReason::FORBIDDEN,
        RejectReason::CONFLICT,
        RejectReason::BAD_REQUEST,
    ] {
        let mut net = Net::new(6, 0.0, Duration::from_millis(5), Duration::ZERO);
        let mut now = std::time::Instant::now();
        let (c, l) = handshake(&mut now, &mut net, caller_cfg(120), |_| Err(reason));
        assert_eq!(l.unwrap().err(), Some(reason));
        assert_eq!(c.err(), Some(tidegate_srt::Error::Rejected(reason)));
    }
}

#[test]
fn stream_id_round_trips() {
    for sid in [
        "a",
        "abcd",
        "#!::r=live/key,m=publish,u=ünïcode",
        &"x".repeat(512),
    ] {
        let mut net = Net::new(7, 0.0, Duration::from_millis(5), Duration::ZERO);
        let mut now = std::time::Instant::now();
        let mut cfg = caller_cfg(120);
        cfg.stream_id = Some(sid.to_owned());
        let want = sid.to_owned();
        let (c, l) = handshake(&mut now, &mut net, cfg, move |req| {
            assert_eq!(req.stream_id(), Some(want.as_str()));
            Ok(AcceptParams::default())
        });
        assert_eq!(l.unwrap().unwrap().stream_id(), Some(sid));
        assert!(c.is_ok());
    }
}

#[test]
fn handshake_survives_loss() {
    // 40% loss: the caller repeats its handshake until it gets through, and the listener
    // answers repeated conclusions from memory without a second request.
    for seed in 10..20 {
        let mut net = Net::new(seed, 0.4, Duration::from_millis(20), Duration::ZERO);
        let mut now = std::time::Instant::now();
        let requests = std::cell::Cell::new(0);
        let (c, l) = handshake(&mut now, &mut net, caller_cfg(120), |_| {
            requests.set(requests.get() + 1);
            Ok(AcceptParams::default())
        });
        match c {
            Ok(conn) => {
                assert_eq!(requests.get(), 1, "seed {seed}");
                assert_eq!(conn.peer_socket_id(), l.unwrap().unwrap().socket_id());
            }
            Err(e) => assert_eq!(e, tidegate_srt::Error::HandshakeTimeout, "seed {seed}"),
        }
    }
}

#[test]
fn peer_idle_timeout_and_shutdown() {
    let net = Net::new(8, 0.0, Duration::from_millis(5), Duration::ZERO);
    let mut pair = Pair::new(net, caller_cfg(120), AcceptParams::default());
    // Keep-alives hold an idle connection open.
    let t = pair.now + Duration::from_secs(20);
    pair.run_until(t);
    assert!(!pair.listener.is_closed() && !pair.caller.is_closed());
    // The network goes dark: both sides time out after 5 s.
    pair.net.loss = 1.0;
    let t = pair.now + Duration::from_secs(6);
    pair.run_until(t);
    assert!(pair.listener_events.contains(&Event::Closed {
        reason: CloseReason::Timeout
    }));

    let net = Net::new(9, 0.0, Duration::from_millis(5), Duration::ZERO);
    let mut pair = Pair::new(net, caller_cfg(120), AcceptParams::default());
    stream(&mut pair, 1, 1_000_000, Duration::ZERO);
    pair.caller.close(pair.now);
    let t = pair.now + Duration::from_millis(100);
    pair.run_until(t);
    assert_eq!(
        pair.listener_events.last(),
        Some(&Event::Closed {
            reason: CloseReason::PeerShutdown
        })
    );
    // Everything sent before the shutdown was delivered.
    assert_eq!(
        pair.listener.stats().packets_delivered,
        pair.caller.stats().packets_sent
    );
}

#[test]
fn tsbpd_delivers_at_latency() {
    let net = Net::new(11, 0.0, Duration::from_millis(10), Duration::ZERO);
    let mut pair = Pair::new(net, caller_cfg(200), AcceptParams::default());
    let sent_at = pair.now;
    pair.caller.send(sent_at, payload(0)).unwrap();
    pair.run_until(sent_at + Duration::from_millis(199));
    assert!(
        pair.listener_payloads().is_empty(),
        "held until its TSBPD time"
    );
    pair.run_until(sent_at + Duration::from_millis(230));
    assert_eq!(pair.listener_payloads().len(), 1);
}
