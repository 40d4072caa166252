//! `ClientSession` ↔ `ServerSession` on a simulated clock: both sides of the crate against
//! each other, with the client's output split at pseudo-random points before the server
//! reads it.
// A test binary: its helpers (outside `#[test]` functions, which clippy.toml already
// covers) may unwrap, panic and index too; the crate's deny lints are for its library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tidegate_rtmp::amf0::Amf0Value;
use tidegate_rtmp::chunk::{message_type, ChunkReader, ChunkWriter};
use tidegate_rtmp::handshake::HANDSHAKE_SIZE;
use tidegate_rtmp::{
    ClientConfig, ClientEvent, ClientSession, Event, RtmpError, ServerSession, SessionConfig,
};

/// xorshift64: deterministic splits and payloads.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Bytes {
        (0..n)
            .map(|_| self.next() as u8)
            .collect::<Vec<u8>>()
            .into()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Answer {
    Accept,
    Reject,
    Ignore,
}

struct Pair {
    client: ClientSession,
    server: ServerSession,
    to_server: BytesMut,
    to_client: BytesMut,
    /// Client bytes not yet handed to the server (fed in random pieces).
    in_flight: Vec<u8>,
    /// Everything the client sent.
    wire: Vec<u8>,
    now: Instant,
    rng: Rng,
    answer: Answer,
    client_events: Vec<ClientEvent>,
    server_events: Vec<Event>,
}

impl Pair {
    fn new(client: ClientConfig, server: SessionConfig, seed: u64) -> Self {
        let now = Instant::now();
        Pair {
            client: ClientSession::new(client, now),
            server: ServerSession::new(server, now),
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
            in_flight: Vec::new(),
            wire: Vec::new(),
            now,
            rng: Rng(seed | 1),
            answer: Answer::Accept,
            client_events: Vec::new(),
            server_events: Vec::new(),
        }
    }

    fn config(key: &str, chunk_size: u32) -> ClientConfig {
        ClientConfig {
            app: "live".into(),
            stream_key: key.into(),
            tc_url: "rtmp://sim:1935/live".into(),
            chunk_size,
            handshake_timeout: Duration::from_secs(5),
            enhanced_fourcc_list: Some(vec!["avc1".into(), "hvc1".into()]),
            seed: 7,
        }
    }

    /// Moves bytes both ways until nothing moves; every client write reaches the server in
    /// pseudo-random pieces, each followed by a server `handle_input`.
    fn run(&mut self) {
        loop {
            let mut moved = false;
            while let Some(b) = self.client.poll_transmit() {
                self.in_flight.extend_from_slice(&b);
                self.wire.extend_from_slice(&b);
            }
            while let Some(e) = self.client.poll_event() {
                self.client_events.push(e);
            }
            while !self.in_flight.is_empty() {
                moved = true;
                let n = 1 + self.rng.below(self.in_flight.len() as u64) as usize;
                self.to_server.extend_from_slice(&self.in_flight[..n]);
                self.in_flight.drain(..n);
                self.now += Duration::from_micros(100);
                self.server
                    .handle_input(self.now, &mut self.to_server)
                    .unwrap();
                self.drain_server();
            }
            while let Some(b) = self.server.poll_transmit() {
                moved = true;
                // and the server's bytes in two pieces
                let cut = self.rng.below(b.len() as u64 + 1) as usize;
                for piece in [b.slice(..cut), b.slice(cut..)] {
                    self.to_client.extend_from_slice(&piece);
                    self.now += Duration::from_micros(100);
                    self.client
                        .handle_input(self.now, &mut self.to_client)
                        .unwrap();
                }
            }
            if !moved && self.client.pending_transmits() == 0 {
                while let Some(e) = self.client.poll_event() {
                    self.client_events.push(e);
                }
                return;
            }
        }
    }

    fn drain_server(&mut self) {
        while let Some(e) = self.server.poll_event() {
            if let Event::PublishRequest { stream_id, .. } = &e {
                match self.answer {
                    Answer::Accept => self.server.accept_publish(*stream_id),
                    Answer::Reject => self.server.reject_publish(
                        *stream_id,
                        "NetStream.Publish.BadName",
                        "no such key",
                    ),
                    Answer::Ignore => {}
                }
            }
            self.server_events.push(e);
        }
    }

    /// The client's messages after the handshake, as a reader sees them.
    fn client_messages(&self) -> Vec<tidegate_rtmp::ChunkMessage> {
        let mut buf = BytesMut::from(&self.wire[1 + 2 * HANDSHAKE_SIZE..]);
        let mut reader = ChunkReader::new();
        let mut out = Vec::new();
        while let Some(m) = reader.read(&mut buf).unwrap() {
            if m.type_id == message_type::SET_CHUNK_SIZE {
                let size = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
                reader.set_chunk_size(size).unwrap();
            }
            out.push(m);
        }
        assert!(buf.is_empty());
        out
    }
}

/// Timestamps that walk over the 24-bit extended-timestamp boundary and the 32-bit wrap.
fn media_plan(rng: &mut Rng) -> Vec<(bool, u32, Bytes)> {
    let mut plan = Vec::new();
    for base in [0u32, 0x00FF_FF00, 0xFFFF_FF00] {
        for i in 0..24u32 {
            let ts = base.wrapping_add(i * 20);
            let video = i % 3 != 0;
            let len = match rng.below(4) {
                0 => rng.below(8) as usize,
                1 => rng.below(200) as usize,
                2 => 4096 + rng.below(3) as usize - 1,
                _ => rng.below(20_000) as usize,
            };
            plan.push((video, ts, rng.bytes(len)));
        }
    }
    plan
}

#[test]
fn publish_accepted_media_arrives_identical() {
    for chunk_size in [128u32, 4096] {
        for seed in 1..=4u64 {
            let mut p = Pair::new(
                Pair::config("k?a=b", chunk_size),
                SessionConfig::default(),
                seed,
            );
            p.run();
            assert_eq!(
                p.client_events,
                vec![
                    ClientEvent::Connected,
                    ClientEvent::PublishStarted { stream_id: 1 }
                ]
            );
            assert!(p.client.is_publishing());
            assert_eq!(p.client.poll_timeout(), None);
            assert_eq!(
                p.server_events,
                vec![
                    Event::Connect {
                        app: "live".into(),
                        tc_url: Some("rtmp://sim:1935/live".into())
                    },
                    Event::PublishRequest {
                        stream_id: 1,
                        app: "live".into(),
                        stream_key: "k".into(),
                        query: Some("a=b".into()),
                        publish_type: "live".into()
                    }
                ]
            );
            p.server_events.clear();

            let meta = Amf0Value::EcmaArray(vec![
                ("width".into(), Amf0Value::Number(1280.0)),
                ("encoder".into(), Amf0Value::String("sim".into())),
            ]);
            p.client.send_metadata(&meta).unwrap();
            let plan = media_plan(&mut Rng(seed * 31));
            for (i, (video, ts, data)) in plan.iter().enumerate() {
                if *video {
                    p.client.send_video(*ts, data.clone()).unwrap();
                } else {
                    p.client.send_audio(*ts, data.clone()).unwrap();
                }
                if i % 5 == 0 {
                    p.run();
                }
            }
            p.run();
            let mut expected = vec![Event::Metadata {
                stream_id: 1,
                data: meta.clone(),
            }];
            expected.extend(plan.iter().map(|(video, ts, data)| {
                if *video {
                    Event::Video {
                        stream_id: 1,
                        timestamp: *ts,
                        data: data.clone(),
                    }
                } else {
                    Event::Audio {
                        stream_id: 1,
                        timestamp: *ts,
                        data: data.clone(),
                    }
                }
            }));
            assert_eq!(
                p.server_events, expected,
                "chunk size {chunk_size} seed {seed}"
            );
            assert_eq!(p.server.dropped_media_messages(), 0);
            assert_eq!(p.client.bytes_sent(), p.wire.len() as u64);
            assert_eq!(p.server.bytes_received(), p.wire.len() as u64);
            // the client announced its chunk size first
            let msgs = p.client_messages();
            assert_eq!(msgs[0].type_id, message_type::SET_CHUNK_SIZE);
            assert_eq!(&msgs[0].payload[..], &chunk_size.to_be_bytes());
            // media on chunk streams 4 (audio) and 6 (video), metadata on 5
            for m in &msgs {
                match m.type_id {
                    message_type::AUDIO => assert_eq!(m.chunk_stream_id, 4),
                    message_type::VIDEO => assert_eq!(m.chunk_stream_id, 6),
                    message_type::DATA_AMF0 => assert_eq!(m.chunk_stream_id, 5),
                    _ => {}
                }
            }

            // unpublish: FCUnpublish + deleteStream reach the server
            p.client.unpublish();
            p.client.unpublish();
            p.run();
            assert_eq!(p.client_events.last(), Some(&ClientEvent::Closed));
            assert!(!p.client.is_publishing());
            assert_eq!(
                p.server_events.last(),
                Some(&Event::Unpublish { stream_id: 1 })
            );
            assert_eq!(
                p.client.send_video(0, Bytes::from_static(&[0x17])),
                Err(RtmpError::NotPublishing)
            );
        }
    }
}

#[test]
fn publish_rejected() {
    let mut p = Pair::new(Pair::config("bad", 4096), SessionConfig::default(), 9);
    p.answer = Answer::Reject;
    p.run();
    assert_eq!(
        p.client_events,
        vec![
            ClientEvent::Connected,
            ClientEvent::PublishRejected {
                code: "NetStream.Publish.BadName".into(),
                description: "no such key".into()
            },
            ClientEvent::Closed
        ]
    );
    assert!(!p.client.is_publishing());
    assert_eq!(p.client.poll_timeout(), None);
    assert_eq!(
        p.client.send_audio(0, Bytes::from_static(&[0xaf, 0])),
        Err(RtmpError::NotPublishing)
    );
}

#[test]
fn media_before_publish_start_is_refused() {
    let now = Instant::now();
    let mut c = ClientSession::new(Pair::config("k", 4096), now);
    assert_eq!(
        c.send_video(0, Bytes::from_static(&[0x17])),
        Err(RtmpError::NotPublishing)
    );
    assert_eq!(
        c.send_metadata(&Amf0Value::Object(vec![])),
        Err(RtmpError::NotPublishing)
    );
    assert!(!RtmpError::NotPublishing.is_peer_error());
}

#[test]
fn server_ending_the_publish_is_reported() {
    let mut p = Pair::new(Pair::config("k", 4096), SessionConfig::default(), 3);
    p.run();
    assert!(p.client.is_publishing());
    p.server.end_publish(1);
    p.run();
    assert_eq!(
        &p.client_events[2..],
        &[
            ClientEvent::StatusMessage {
                code: "NetStream.Unpublish.Success".into(),
                level: "status".into(),
                description: "Stop publishing".into()
            },
            ClientEvent::Closed
        ]
    );
    assert!(!p.client.is_publishing());
}

#[test]
fn handshake_and_publish_timeouts() {
    // No server at all: the handshake deadline fires at 5 s, not before.
    let t0 = Instant::now();
    let mut c = ClientSession::new(Pair::config("k", 4096), t0);
    let deadline = c.poll_timeout().unwrap();
    assert_eq!(deadline, t0 + Duration::from_secs(5));
    c.handle_timeout(t0 + Duration::from_millis(4999)).unwrap();
    assert_eq!(c.handle_timeout(deadline), Err(RtmpError::HandshakeTimeout));
    assert_eq!(c.poll_event(), Some(ClientEvent::Closed));
    assert_eq!(c.poll_timeout(), None);
    assert_eq!(
        c.handle_input(deadline, &mut BytesMut::new()),
        Err(RtmpError::Closed)
    );

    // A server that never answers the publish: the same deadline, now a publish timeout.
    let mut p = Pair::new(Pair::config("k", 4096), SessionConfig::default(), 5);
    p.answer = Answer::Ignore;
    p.run();
    assert_eq!(p.client_events, vec![ClientEvent::Connected]);
    let deadline = p.client.poll_timeout().unwrap();
    p.client.handle_timeout(p.now).unwrap();
    assert_eq!(
        p.client.handle_timeout(deadline),
        Err(RtmpError::PublishTimeout)
    );
}

#[test]
fn acknowledgements_follow_the_server_window() {
    let server = SessionConfig {
        window_ack_size: 500,
        ..SessionConfig::default()
    };
    let mut p = Pair::new(Pair::config("k", 4096), server, 11);
    p.run();
    let msgs = p.client_messages();
    // Set Peer Bandwidth 500 is answered with Window Acknowledgement Size 500 ...
    let win: Vec<_> = msgs
        .iter()
        .filter(|m| m.type_id == message_type::WINDOW_ACK_SIZE)
        .collect();
    assert_eq!(win.len(), 1);
    assert_eq!(&win[0].payload[..], &500u32.to_be_bytes());
    // ... and every 500 bytes from the server (3073 of handshake first) are acknowledged
    // with the running count.
    let acks: Vec<u32> = msgs
        .iter()
        .filter(|m| m.type_id == message_type::ACKNOWLEDGEMENT)
        .map(|m| u32::from_be_bytes(m.payload[..4].try_into().unwrap()))
        .collect();
    assert!(!acks.is_empty());
    assert!(acks.windows(2).all(|w| w[1] >= w[0] + 500), "{acks:?}");
    assert!(*acks.last().unwrap() as u64 <= p.client.bytes_received());
    assert!(acks[0] > 2 * HANDSHAKE_SIZE as u32);
}

/// Feeds a client a fake S0/S1/S2 and returns what it sent after C2.
fn client_after_handshake() -> (ClientSession, Instant) {
    let now = Instant::now();
    let mut c = ClientSession::new(Pair::config("k", 4096), now);
    while c.poll_transmit().is_some() {}
    let mut s = BytesMut::from(&[3u8][..]);
    s.extend_from_slice(&[0u8; 2 * HANDSHAKE_SIZE]);
    c.handle_input(now, &mut s).unwrap();
    assert!(s.is_empty());
    // C2, Set Chunk Size, connect
    let c2 = c.poll_transmit().unwrap();
    assert_eq!(c2.len(), HANDSHAKE_SIZE);
    while c.poll_transmit().is_some() {}
    (c, now)
}

#[test]
fn pings_are_answered() {
    let (mut c, now) = client_after_handshake();
    let mut ping = BytesMut::new();
    ChunkWriter::new().write(
        &mut ping,
        2,
        0,
        message_type::USER_CONTROL,
        0,
        &[0, 6, 0x12, 0x34, 0x56, 0x78],
    );
    c.handle_input(now, &mut ping).unwrap();
    let out: Vec<u8> = std::iter::from_fn(|| c.poll_transmit())
        .flat_map(|b| b.to_vec())
        .collect();
    // type-1 header on chunk stream 2 (it carried Set Chunk Size before), then the pong
    assert_eq!(
        out,
        vec![0x42, 0, 0, 0, 0, 0, 6, 4, 0, 7, 0x12, 0x34, 0x56, 0x78]
    );
}

#[test]
fn connect_error_and_hostile_input() {
    let (mut c, now) = client_after_handshake();
    let mut err = BytesMut::new();
    let payload = tidegate_rtmp::amf0::encode_all(&[
        Amf0Value::String("_error".into()),
        Amf0Value::Number(1.0),
        Amf0Value::Null,
        Amf0Value::Object(vec![
            ("level".into(), Amf0Value::String("error".into())),
            (
                "code".into(),
                Amf0Value::String("NetConnection.Connect.Rejected".into()),
            ),
            ("description".into(), Amf0Value::String("nope".into())),
        ]),
    ]);
    ChunkWriter::new().write(&mut err, 3, 0, message_type::COMMAND_AMF0, 0, &payload);
    c.handle_input(now, &mut err).unwrap();
    assert_eq!(
        c.poll_event(),
        Some(ClientEvent::PublishRejected {
            code: "NetConnection.Connect.Rejected".into(),
            description: "nope".into()
        })
    );
    assert_eq!(c.poll_event(), Some(ClientEvent::Closed));

    // Pseudo-random garbage after a handshake never panics (errors are fine).
    for seed in 1..200u64 {
        let (mut c, now) = client_after_handshake();
        let mut rng = Rng(seed);
        let len = rng.below(600) as usize;
        let mut buf = BytesMut::from(&rng.bytes(len)[..]);
        let _ = c.handle_input(now, &mut buf);
        while c.poll_transmit().is_some() {}
    }
    // A bad S0.
    let mut c = ClientSession::new(Pair::config("k", 4096), now);
    assert_eq!(
        c.handle_input(now, &mut BytesMut::from(&[6u8][..])),
        Err(RtmpError::UnsupportedVersion(6))
    );
}

#[test]
fn media_pieces_are_zero_copy_slices() {
    let mut p = Pair::new(Pair::config("k", 4096), SessionConfig::default(), 2);
    p.run();
    let frame = Bytes::from(vec![0x27u8; 10_000]);
    p.client.send_video(40, frame.clone()).unwrap();
    let pieces: Vec<Bytes> = std::iter::from_fn(|| p.client.poll_transmit()).collect();
    let lens: Vec<usize> = pieces.iter().map(Bytes::len).collect();
    // first video message on chunk stream 6: type-0 header (12 bytes), then type 3
    assert_eq!(lens, vec![12, 4096, 1, 4096, 1, 1808]);
    let base = frame.as_ptr() as usize;
    assert_eq!(pieces[1].as_ptr() as usize, base);
    assert_eq!(pieces[3].as_ptr() as usize, base + 4096);
    assert_eq!(pieces[5].as_ptr() as usize, base + 8192);
    assert_eq!(
        &pieces[0][..],
        &[0x06, 0, 0, 40, 0, 0x27, 0x10, 9, 1, 0, 0, 0]
    );
}
