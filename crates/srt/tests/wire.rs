//! Byte-exact vectors (hand-made and captured from libsrt 1.5.1 via ffmpeg), truncation,
//! and hostile input.
// A test binary: its helpers (outside `#[test]` functions, which clippy.toml already
// covers) may unwrap, panic and index too; the crate's deny lints are for its library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Rng;
use tidegate_srt::crypto::KmMessage;
use tidegate_srt::handshake::{srt_flags, HandshakeType, HsExtension};
use tidegate_srt::packet::{
    Ack, AckInfo, ControlBody, ControlPacket, DataPacket, KeyFlag, LossRange, PacketPosition,
};
use tidegate_srt::{
    AcceptParams, Error, KeyLength, Listener, ListenerConfig, ListenerOutput, MsgNo, Packet,
    RejectReason, SeqNo,
};

/// Answers the captured libsrt induction from `from` and returns the captured conclusion with
/// the listener's SYN cookie patched in, ready to send.
fn libsrt_conclusion(l: &mut Listener, t0: Instant, from: SocketAddr) -> Vec<u8> {
    let ListenerOutput::Transmit(resp) =
        l.handle_datagram(t0, from, &hex(LIBSRT_INDUCTION)).unwrap()
    else {
        panic!("no induction answer")
    };
    let mut concl = hex(LIBSRT_CONCLUSION);
    concl[44..48].copy_from_slice(&resp[44..48]);
    concl
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Induction request sent by ffmpeg 5.1 / libsrt 1.5.1 to 127.0.0.1.
const LIBSRT_INDUCTION: &str = "80000000 00000000 0000018e 00000000
    00000004 00000002 42135e81 000005dc 00002000 00000001 14df2102 00000000
    0100007f 00000000 00000000 00000000";

/// Its conclusion: stream ID `#!::r=live/key,m=publish`, passphrase `secret-passphrase`,
/// pbkeylen 16, latency 200 ms.
const LIBSRT_CONCLUSION: &str =
    "80000000 00000000 0000056e 00000000 00000005 00020007 42135e81 000005dc
    00002000 ffffffff 14df2102 13228f80 0100007f 00000000 00000000 00000000
    00010003 00010501 000000bf 00c800c8 00050006 3a3a2123 696c3d72 6b2f6576
    6d2c7965 6275703d 6873696c 0003000e 12202901 00000000 02000200 00000404
    dd998bba 0dd7e400 a6c5ca87 628306f4 adc17832 777b6942 90cba3f6 b43f0b12
    7e62105a 373f929f";

#[test]
fn libsrt_induction_vector() {
    let bytes = hex(LIBSRT_INDUCTION);
    let Packet::Control(ControlPacket {
        body: ControlBody::Handshake(hs),
        dest: 0,
        ..
    }) = Packet::parse(&bytes).unwrap()
    else {
        panic!("not a handshake to socket 0")
    };
    assert_eq!(hs.version, 4);
    assert_eq!(hs.extension_field, 2);
    assert_eq!(hs.hs_type, HandshakeType::Induction);
    assert_eq!(hs.socket_id, 0x14df2102);
    assert_eq!(hs.initial_seq, SeqNo::new(0x42135e81));
    assert_eq!(hs.mtu, 1500);
    assert_eq!(Packet::parse(&bytes).unwrap().to_bytes(), bytes);

    // Our answer: version 5, SRT magic, a cookie, to the caller's socket.
    let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let t0 = Instant::now();
    let mut l = Listener::new(t0, ListenerConfig::new([1; 32]));
    let ListenerOutput::Transmit(resp) = l.handle_datagram(t0, from, &bytes).unwrap() else {
        panic!("no induction response")
    };
    assert_eq!(resp.len(), 64);
    assert_eq!(&resp[..4], &hex("80000000")[..]);
    assert_eq!(&resp[12..16], &hex("14df2102")[..], "dest = caller socket");
    assert_eq!(&resp[16..24], &hex("00000005 00004a17")[..]);
    assert_eq!(&resp[36..40], &hex("00000001")[..], "induction type");
    assert_eq!(
        &resp[48..52],
        &hex("0100007f")[..],
        "peer address, libsrt layout"
    );
    assert_eq!(l.state_len(), 0);
}

#[test]
fn libsrt_conclusion_vector() {
    let bytes = hex(LIBSRT_CONCLUSION);
    let pkt = Packet::parse(&bytes).unwrap();
    assert_eq!(pkt.to_bytes(), bytes, "byte-exact round trip");
    let Packet::Control(ControlPacket {
        body: ControlBody::Handshake(hs),
        ..
    }) = pkt
    else {
        panic!()
    };
    assert_eq!(hs.version, 5);
    assert_eq!(hs.encryption, 2, "AES-128 advertised");
    assert_eq!(hs.extension_field, 7);
    assert_eq!(hs.hs_type, HandshakeType::Conclusion);
    assert_eq!(hs.syn_cookie, 0x13228f80);
    assert_eq!(hs.stream_id(), Some("#!::r=live/key,m=publish"));
    let req = hs.hsreq().unwrap();
    assert_eq!(req.version, 0x010501);
    assert_eq!(req.recv_latency_ms, 200);
    assert_eq!(req.send_latency_ms, 200);
    assert_ne!(req.flags & srt_flags::TSBPDSND, 0);
    assert_ne!(req.flags & srt_flags::TLPKTDROP, 0);
    let km = KmMessage::parse(hs.kmreq().unwrap()).unwrap();
    assert_eq!(km.key_len, KeyLength::Aes128);
    assert_eq!(km.keys, KeyFlag::Even);
    let (even, odd) = km.open("secret-passphrase").unwrap();
    assert_eq!(even.unwrap().as_slice().len(), 16);
    assert!(odd.is_none());
    assert_eq!(
        km.open("other-passphrase"),
        Err(Error::Rejected(tidegate_srt::RejectReason::BADSECRET))
    );
    assert_eq!(km.to_bytes(), hs.kmreq().unwrap().to_vec());
    assert!(matches!(hs.extensions[1], HsExtension::StreamId(_)));
}

#[test]
fn listener_accepts_libsrt_conclusion_shape() {
    // Replays the captured exchange against our listener, with our own cookie patched in.
    let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let t0 = Instant::now();
    let mut l = Listener::new(t0, ListenerConfig::new([1; 32]));
    let concl = libsrt_conclusion(&mut l, t0, from);
    let ListenerOutput::Request(req) = l.handle_datagram(t0, from, &concl).unwrap() else {
        panic!("no request")
    };
    assert_eq!(req.stream_id(), Some("#!::r=live/key,m=publish"));
    assert_eq!(req.key_length(), Some(KeyLength::Aes128));
    // A repeat while the application decides produces nothing new.
    assert!(matches!(
        l.handle_datagram(t0, from, &concl).unwrap(),
        ListenerOutput::Nothing
    ));
    let (conn, answer) = l
        .accept(
            t0,
            req,
            AcceptParams {
                passphrase: Some("secret-passphrase".into()),
                latency: Some(Duration::from_millis(120)),
                enforce_key_length: None,
            },
        )
        .unwrap();
    assert_eq!(
        conn.latency(),
        Duration::from_millis(200),
        "larger latency wins"
    );
    assert!(conn.is_encrypted());
    let Packet::Control(ControlPacket {
        body: ControlBody::Handshake(hs),
        dest,
        ..
    }) = Packet::parse(&answer).unwrap()
    else {
        panic!()
    };
    assert_eq!(dest, 0x14df2102);
    assert_eq!(hs.socket_id, conn.socket_id());
    assert_eq!(hs.hsrsp().unwrap().recv_latency_ms, 200);
    assert_eq!(hs.kmrsp().unwrap(), &hs_kmreq(&concl));
    // Repeated conclusion after acceptance: the same answer again.
    let ListenerOutput::Transmit(again) = l.handle_datagram(t0, from, &concl).unwrap() else {
        panic!()
    };
    assert_eq!(again, answer);
}

fn hs_kmreq(b: &[u8]) -> Bytes {
    match Packet::parse(b).unwrap() {
        Packet::Control(ControlPacket {
            body: ControlBody::Handshake(hs),
            ..
        }) => hs.kmreq().unwrap().clone(),
        _ => panic!(),
    }
}

fn control(body: ControlBody) -> Packet {
    Packet::Control(ControlPacket {
        timestamp: 0x0102_0304,
        dest: 0x0a0b_0c0d,
        body,
    })
}

#[test]
fn hand_made_vectors() {
    let cases: Vec<(Packet, &str)> = vec![
        (
            Packet::Data(DataPacket {
                seq: SeqNo::new(0x7fff_ffff),
                position: PacketPosition::Only,
                in_order: false,
                key: KeyFlag::Odd,
                retransmitted: true,
                msgno: MsgNo::new(5),
                timestamp: 0x0102_0304,
                dest: 0x0a0b_0c0d,
                payload: Bytes::from_static(b"\x47\x00"),
            }),
            "7fffffff d4000005 01020304 0a0b0c0d 4700",
        ),
        (
            control(ControlBody::KeepAlive),
            "80010000 00000000 01020304 0a0b0c0d 00000000",
        ),
        (
            control(ControlBody::Shutdown),
            "80050000 00000000 01020304 0a0b0c0d 00000000",
        ),
        (
            control(ControlBody::AckAck(7)),
            "80060000 00000007 01020304 0a0b0c0d 00000000",
        ),
        (
            control(ControlBody::Ack(Ack {
                ack_number: 3,
                ack_seq: SeqNo::new(100),
                info: AckInfo::Light,
            })),
            "80020000 00000003 01020304 0a0b0c0d 00000064",
        ),
        (
            control(ControlBody::Ack(Ack {
                ack_number: 9,
                ack_seq: SeqNo::new(100),
                info: AckInfo::Full {
                    rtt: 100_000,
                    rtt_var: 50_000,
                    buffer_available: 8192,
                    packet_rate: 300,
                    link_capacity: 1000,
                    receive_rate: 400_000,
                },
            })),
            "80020000 00000009 01020304 0a0b0c0d 00000064 000186a0 0000c350 00002000
             0000012c 000003e8 00061a80",
        ),
        (
            control(ControlBody::Nak(vec![
                LossRange {
                    first: SeqNo::new(5),
                    last: SeqNo::new(5),
                },
                LossRange {
                    first: SeqNo::new(7),
                    last: SeqNo::new(9),
                },
            ])),
            "80030000 00000000 01020304 0a0b0c0d 00000005 80000007 00000009",
        ),
        (
            control(ControlBody::DropRequest {
                msgno: MsgNo::new(4),
                first: SeqNo::new(10),
                last: SeqNo::new(12),
            }),
            "80070000 00000004 01020304 0a0b0c0d 0000000a 0000000c",
        ),
        (
            control(ControlBody::PeerError(4000)),
            "80080000 00000fa0 01020304 0a0b0c0d",
        ),
        (
            control(ControlBody::KmResponse(Bytes::from_static(&[0, 0, 0, 4]))),
            "ffff0004 00000000 01020304 0a0b0c0d 00000004",
        ),
    ];
    for (pkt, want) in cases {
        let want = hex(want);
        assert_eq!(pkt.to_bytes(), want, "{pkt:?}");
        assert_eq!(Packet::parse(&want).unwrap(), pkt);
    }
}

#[test]
fn truncation_never_panics() {
    let vectors = [
        hex(LIBSRT_INDUCTION),
        hex(LIBSRT_CONCLUSION),
        hex("80020000 00000009 01020304 0a0b0c0d 00000064 000186a0 0000c350 00002000 0000012c 000003e8 00061a80"),
        hex("80030000 00000000 01020304 0a0b0c0d 00000005 80000007 00000009"),
        hex("80070000 00000004 01020304 0a0b0c0d 0000000a 0000000c"),
    ];
    for v in &vectors {
        for cut in 0..v.len() {
            let r = Packet::parse(&v[..cut]);
            if cut < 16 {
                assert!(matches!(r, Err(Error::Truncated { .. })), "cut {cut}");
            }
            if v.len() > 64 && (16..64).contains(&cut) {
                assert!(r.is_err(), "handshake cut at {cut}");
            }
        }
        // The split point does not matter when the halves are joined again.
        for cut in 0..v.len() {
            let mut joined = v[..cut].to_vec();
            joined.extend_from_slice(&v[cut..]);
            assert_eq!(Packet::parse(&joined), Packet::parse(v));
        }
    }
    // A NAK range cut in half is an error, and so is a backwards range.
    assert!(Packet::parse(&hex("80030000 00000000 01020304 0a0b0c0d 80000007")).is_err());
    assert!(Packet::parse(&hex(
        "80030000 00000000 01020304 0a0b0c0d 80000009 00000007"
    ))
    .is_err());
}

#[test]
fn handshake_flood_costs_no_state() {
    let t0 = Instant::now();
    let mut l = Listener::new(t0, ListenerConfig::new([3; 32]));
    let induction = hex(LIBSRT_INDUCTION);
    let mut forged = hex(LIBSRT_CONCLUSION);
    for port in 1..=60_000u16 {
        let from = SocketAddr::from(([192, 0, 2, (port % 200) as u8], port));
        let out = l.handle_datagram(t0, from, &induction).unwrap();
        assert!(matches!(out, ListenerOutput::Transmit(_)));
        // A conclusion with a guessed cookie is ignored without a trace (and told apart).
        forged[44..48].copy_from_slice(&u32::from(port).to_be_bytes());
        let out = l.handle_datagram(t0, from, &forged).unwrap();
        assert!(matches!(out, ListenerOutput::BadCookie));
    }
    assert_eq!(l.state_len(), 0);
}

#[test]
fn cookies_expire() {
    let t0 = Instant::now();
    let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut l = Listener::new(t0, ListenerConfig::new([1; 32]));
    let concl = libsrt_conclusion(&mut l, t0, from);
    // From another port the cookie is wrong.
    let other: SocketAddr = "127.0.0.1:40001".parse().unwrap();
    assert!(matches!(
        l.handle_datagram(t0, other, &concl).unwrap(),
        ListenerOutput::BadCookie
    ));
    // Three minutes later it is stale.
    let later = t0 + Duration::from_secs(200);
    assert!(matches!(
        l.handle_datagram(later, from, &concl).unwrap(),
        ListenerOutput::BadCookie
    ));
    // A minute later it is still good.
    let soon = t0 + Duration::from_secs(70);
    assert!(matches!(
        l.handle_datagram(soon, from, &concl).unwrap(),
        ListenerOutput::Request(_)
    ));
}

#[test]
fn hostile_datagrams_never_panic() {
    let mut rng = Rng::new(99);
    let t0 = Instant::now();
    let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut l = Listener::new(t0, ListenerConfig::new([1; 32]));
    // An established connection to attack.
    let concl = libsrt_conclusion(&mut l, t0, from);
    let ListenerOutput::Request(req) = l.handle_datagram(t0, from, &concl).unwrap() else {
        panic!()
    };
    let (mut conn, _) = l
        .accept(
            t0,
            req,
            AcceptParams {
                passphrase: Some("secret-passphrase".into()),
                ..AcceptParams::default()
            },
        )
        .unwrap();
    let seeds = [
        hex(LIBSRT_INDUCTION),
        concl.clone(),
        hex("80020000 00000009 01020304 0a0b0c0d 00000064 000186a0 0000c350 00002000 0000012c 000003e8 00061a80"),
        hex("80030000 00000000 01020304 0a0b0c0d 00000005 80000007 7fffffff"),
        hex("80070000 00000004 01020304 0a0b0c0d 0000000a 7fffffff"),
        hex("7fffffff d4000005 ffffffff 0a0b0c0d 4700"),
        hex("ffff0003 00000000 01020304 0a0b0c0d 12202901 00000000 02000200 00000404"),
    ];
    let mut now = t0;
    for i in 0..200_000u32 {
        let mut d = seeds[(i as usize) % seeds.len()].clone();
        let flips = rng.below(6);
        for _ in 0..flips {
            let at = rng.below(d.len() as u64) as usize;
            d[at] = rng.next_u64() as u8;
        }
        if rng.chance(0.1) {
            d.truncate(rng.below(d.len() as u64 + 1) as usize);
        }
        now += Duration::from_micros(rng.below(3000));
        let _ = l.handle_datagram(now, from, &d);
        let _ = conn.handle_datagram(now, &d);
        if i % 16 == 0 {
            conn.handle_timeout(now);
            while conn.poll_transmit(now).is_some() {}
            while conn.poll_event().is_some() {}
        }
    }
}

#[test]
fn a_verified_request_can_still_be_refused_with_a_code_of_the_applications() {
    // verify → (the stream is busy) → reject: the caller gets the application's code, and a
    // repeat of its conclusion gets the same answer.
    let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let t0 = Instant::now();
    let mut l = Listener::new(t0, ListenerConfig::new([1; 32]));
    let concl = libsrt_conclusion(&mut l, t0, from);
    let ListenerOutput::Request(req) = l.handle_datagram(t0, from, &concl).unwrap() else {
        panic!("no request")
    };
    let params = AcceptParams {
        passphrase: Some("secret-passphrase".into()),
        ..AcceptParams::default()
    };
    let verified = l.verify(t0, req, &params).unwrap();
    assert!(verified.is_encrypted());
    assert_eq!(verified.request().peer_addr(), from);
    let answer = l.reject(t0, verified.into_request(), RejectReason::CONFLICT);
    let hs_type = u32::from_be_bytes([answer[36], answer[37], answer[38], answer[39]]);
    assert_eq!(hs_type, 1000 + 1409);
    let ListenerOutput::Transmit(again) = l.handle_datagram(t0, from, &concl).unwrap() else {
        panic!("a repeated conclusion must get the same answer")
    };
    assert_eq!(again, answer);

    // A wrong passphrase is refused by verify itself.
    let mut l = Listener::new(t0, ListenerConfig::new([2; 32]));
    let concl = libsrt_conclusion(&mut l, t0, from);
    let ListenerOutput::Request(req) = l.handle_datagram(t0, from, &concl).unwrap() else {
        panic!("no request")
    };
    let wrong = AcceptParams {
        passphrase: Some("another-passphrase".into()),
        ..AcceptParams::default()
    };
    let rejection = l.verify(t0, req, &wrong).unwrap_err();
    assert_eq!(rejection.reason, RejectReason::BADSECRET);
}
