//! Whole-session tests: a small test client state machine drives a `ServerSession` with a
//! simulated clock, plus bytes captured from a real ffmpeg 5.1 publisher.
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
use tidegate_rtmp::amf0::{self, Amf0Value};
use tidegate_rtmp::chunk::{message_type, ChunkReader};
use tidegate_rtmp::handshake::{self, DigestScheme, HANDSHAKE_SIZE};
use tidegate_rtmp::session::{LIMITS_BEFORE_PUBLISH, MAX_PENDING_TRANSMIT_BYTES};
use tidegate_rtmp::{Event, RtmpError, ServerSession, SessionConfig};

fn hex(parts: &[&str]) -> Vec<u8> {
    let s: String = parts.concat().split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// What Debian's ffmpeg 5.1 sent after its handshake when publishing to
/// `rtmp://127.0.0.1:19351/live/key?tok=1` (connect split over two chunks, Set Chunk Size
/// 4096, releaseStream / FCPublish / createStream with fmt-1 headers, publish on stream 1).
const FFMPEG_CONNECT_TO_PUBLISH: &[&str] = &[
    "0300000000008c1400000000020007636f6e6e656374003ff00000000000000300036170700200046c69766500047479",
    "706502000a6e6f6e707269766174650008666c617368566572020024464d4c452f332e302028636f6d70617469626c65",
    "3b204c61766635392e32372e313030290005746355726c02001b72746d703a2f2f3132372e302e302e313a31c3393335",
    "312f6c69766500000902000000000004010000000000001000430000000000261402000d72656c656173655374726561",
    "6d004000000000000000050200096b65793f746f6b3d31430000000000221402000946435075626c6973680040080000",
    "00000000050200096b65793f746f6b3d31430000000000191402000c63726561746553747265616d0040100000000000",
    "00050800000000002714010000000200077075626c697368004014000000000000050200096b65793f746f6b3d310200",
    "046c697665",
];

/// A received server message.
#[derive(Debug, Clone)]
struct Received {
    type_id: u8,
    stream_id: u32,
    payload: Bytes,
}

impl Received {
    fn command(&self) -> Option<Vec<Amf0Value>> {
        (self.type_id == message_type::COMMAND_AMF0)
            .then(|| amf0::decode_all(&self.payload).unwrap())
    }
    fn name(&self) -> Option<String> {
        self.command()?.first()?.as_str().map(str::to_owned)
    }
}

/// A test publisher: writes handshakes and chunks, parses the server's replies.
struct TestClient {
    digest: Option<DigestScheme>,
    c1: Vec<u8>,
    from_server: BytesMut,
    handshake_checked: bool,
    reader: ChunkReader,
    received: Vec<Received>,
    chunk_size: usize,
}

impl TestClient {
    fn new(digest: Option<DigestScheme>) -> Self {
        let mut c1 = vec![0u8; HANDSHAKE_SIZE];
        for (i, b) in c1.iter_mut().enumerate().skip(8) {
            *b = (i * 31 % 253) as u8;
        }
        if let Some(scheme) = digest {
            c1[4..8].copy_from_slice(&[9, 0, 124, 2]);
            handshake::imprint_client_digest(&mut c1, scheme).unwrap();
        }
        TestClient {
            digest,
            c1,
            from_server: BytesMut::new(),
            handshake_checked: false,
            reader: ChunkReader::new(),
            received: Vec::new(),
            chunk_size: 128,
        }
    }

    fn c0_c1(&self) -> Vec<u8> {
        let mut v = vec![3u8];
        v.extend_from_slice(&self.c1);
        v
    }

    fn c2(&self) -> Vec<u8> {
        vec![0x5a; HANDSHAKE_SIZE]
    }

    /// Feeds server output; checks S0/S1/S2 once and collects messages.
    fn receive(&mut self, bytes: &[u8]) {
        self.from_server.extend_from_slice(bytes);
        if !self.handshake_checked {
            if self.from_server.len() < 1 + 2 * HANDSHAKE_SIZE {
                return;
            }
            let hs = self.from_server.split_to(1 + 2 * HANDSHAKE_SIZE);
            assert_eq!(hs[0], 3);
            let s1 = &hs[1..1 + HANDSHAKE_SIZE];
            let s2 = &hs[1 + HANDSHAKE_SIZE..];
            match self.digest {
                None => {
                    assert_eq!(&s1[4..8], &[0, 0, 0, 0]);
                    assert_eq!(s2, &self.c1[..]);
                }
                Some(scheme) => {
                    assert!(handshake::verify_server_digest(s1, scheme));
                    let (_, digest) = handshake::find_client_digest(&self.c1).unwrap();
                    assert!(handshake::verify_s2(s2, &digest));
                }
            }
            self.handshake_checked = true;
        }
        while let Some(m) = self.reader.read(&mut self.from_server).unwrap() {
            if m.type_id == message_type::SET_CHUNK_SIZE {
                let size = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
                self.reader.set_chunk_size(size).unwrap();
            }
            self.received.push(Received {
                type_id: m.type_id,
                stream_id: m.stream_id,
                payload: m.payload,
            });
        }
    }

    fn take_received(&mut self) -> Vec<Received> {
        std::mem::take(&mut self.received)
    }

    /// One message: a header of format `fmt` (fields as given), then type-3 continuations.
    #[allow(clippy::too_many_arguments)]
    fn chunk(
        &self,
        fmt: u8,
        csid: u8,
        ts_field: u32,
        type_id: u8,
        stream_id: u32,
        payload: &[u8],
        repeat_ext: bool,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let ext = ts_field >= 0xFF_FFFF;
        out.push((fmt << 6) | csid);
        let ts3 = if ext { 0xFF_FFFF } else { ts_field };
        if fmt <= 2 {
            out.extend_from_slice(&ts3.to_be_bytes()[1..]);
        }
        if fmt <= 1 {
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
            out.push(type_id);
        }
        if fmt == 0 {
            out.extend_from_slice(&stream_id.to_le_bytes());
        }
        if ext && fmt <= 2 {
            out.extend_from_slice(&ts_field.to_be_bytes());
        }
        for (i, part) in payload.chunks(self.chunk_size).enumerate() {
            if i > 0 {
                out.push(0xc0 | csid);
                if ext && repeat_ext {
                    out.extend_from_slice(&ts_field.to_be_bytes());
                }
            }
            out.extend_from_slice(part);
        }
        out
    }

    fn command(&self, csid: u8, stream_id: u32, values: &[Amf0Value]) -> Vec<u8> {
        let payload = amf0::encode_all(values);
        self.chunk(
            0,
            csid,
            0,
            message_type::COMMAND_AMF0,
            stream_id,
            &payload,
            true,
        )
    }
}

fn s(v: &str) -> Amf0Value {
    Amf0Value::String(v.into())
}
fn n(v: f64) -> Amf0Value {
    Amf0Value::Number(v)
}

/// Feeds bytes to the server, accepting every publish, and passes output to the client.
struct Pair {
    server: ServerSession,
    client: TestClient,
    buf: BytesMut,
    events: Vec<Event>,
    now: Instant,
    accept: bool,
}

impl Pair {
    fn new(digest: Option<DigestScheme>) -> Self {
        let now = Instant::now();
        Pair {
            server: ServerSession::new(SessionConfig::default(), now),
            client: TestClient::new(digest),
            buf: BytesMut::new(),
            events: Vec::new(),
            now,
            accept: true,
        }
    }

    /// Feeds `bytes` like the server's driver: after answering a `publish`, parses what
    /// waited behind it.
    fn send(&mut self, bytes: &[u8]) -> Result<(), RtmpError> {
        self.now += Duration::from_millis(1);
        self.buf.extend_from_slice(bytes);
        loop {
            let before = self.buf.len();
            self.server.handle_input(self.now, &mut self.buf)?;
            self.drain();
            if self.buf.len() == before || self.buf.is_empty() {
                return Ok(());
            }
        }
    }

    fn drain(&mut self) {
        loop {
            while let Some(out) = self.server.poll_transmit() {
                self.client.receive(&out);
            }
            let Some(ev) = self.server.poll_event() else {
                break;
            };
            if let Event::PublishRequest { stream_id, .. } = ev {
                if self.accept {
                    self.server.accept_publish(stream_id);
                }
            }
            self.events.push(ev);
        }
    }

    fn handshake(&mut self) {
        let c0c1 = self.client.c0_c1();
        self.send(&c0c1).unwrap();
        let c2 = self.client.c2();
        self.send(&c2).unwrap();
        assert!(self.server.is_handshake_complete());
    }

    fn connect_and_publish(&mut self, connect_extra: Vec<(String, Amf0Value)>) {
        let mut obj = vec![
            ("app".to_string(), s("live")),
            ("tcUrl".to_string(), s("rtmp://h/live")),
            ("objectEncoding".to_string(), n(0.0)),
        ];
        obj.extend(connect_extra);
        let c = &self.client;
        let mut b = c.command(3, 0, &[s("connect"), n(1.0), Amf0Value::Object(obj)]);
        b.extend(c.command(3, 0, &[s("releaseStream"), n(2.0), Amf0Value::Null, s("k")]));
        b.extend(c.command(3, 0, &[s("FCPublish"), n(3.0), Amf0Value::Null, s("k")]));
        b.extend(c.command(3, 0, &[s("createStream"), n(4.0), Amf0Value::Null]));
        b.extend(c.command(
            4,
            1,
            &[s("publish"), n(5.0), Amf0Value::Null, s("k?a=b"), s("live")],
        ));
        self.send(&b).unwrap();
    }
}

fn ffmpeg_session(digest: Option<DigestScheme>) -> Pair {
    let mut p = Pair::new(digest);
    p.handshake();
    p.send(&hex(FFMPEG_CONNECT_TO_PUBLISH)).unwrap();
    p
}

#[test]
fn ffmpeg_capture_connect_to_publish() {
    for digest in [
        None,
        Some(DigestScheme::Scheme0),
        Some(DigestScheme::Scheme1),
    ] {
        let mut p = ffmpeg_session(digest);
        assert_eq!(
            p.events,
            vec![
                Event::Connect {
                    app: "live".into(),
                    tc_url: Some("rtmp://127.0.0.1:19351/live".into())
                },
                Event::PublishRequest {
                    stream_id: 1,
                    app: "live".into(),
                    stream_key: "key".into(),
                    query: Some("tok=1".into()),
                    publish_type: "live".into()
                }
            ]
        );
        let rx = p.client.take_received();
        let types: Vec<u8> = rx.iter().map(|r| r.type_id).collect();
        // WinAck, PeerBW, ChunkSize, _result(connect), _result(releaseStream), onFCPublish,
        // _result(FCPublish), _result(createStream), StreamBegin, onStatus
        assert_eq!(types, vec![5, 6, 1, 20, 20, 20, 20, 20, 4, 20]);
        assert_eq!(&rx[0].payload[..], &hex(&["002625a0"])[..]);
        assert_eq!(&rx[1].payload[..], &hex(&["002625a0 02"])[..]);
        assert_eq!(&rx[2].payload[..], &hex(&["00001000"])[..]);
        let result = rx[3].command().unwrap();
        assert_eq!(result[0], s("_result"));
        assert_eq!(result[1], n(1.0));
        assert_eq!(result[2].get("fmsVer"), Some(&s("FMS/3,0,1,123")));
        assert_eq!(result[2].get("capabilities"), Some(&n(31.0)));
        assert_eq!(
            result[3].get("code"),
            Some(&s("NetConnection.Connect.Success"))
        );
        let create = rx[7].command().unwrap();
        assert_eq!(create, vec![s("_result"), n(4.0), Amf0Value::Null, n(1.0)]);
        assert_eq!(&rx[8].payload[..], &hex(&["0000 00000001"])[..]);
        let status = rx[9].command().unwrap();
        assert_eq!(rx[9].stream_id, 1);
        assert_eq!(status[3].get("code"), Some(&s("NetStream.Publish.Start")));
    }
}

#[test]
fn ffmpeg_connect_amf0_decodes_and_reencodes() {
    // The connect command, reassembled from the capture's two chunks.
    let bytes = hex(FFMPEG_CONNECT_TO_PUBLISH);
    let mut payload = bytes[12..12 + 128].to_vec();
    payload.extend_from_slice(&bytes[12 + 128 + 1..12 + 128 + 1 + 12]);
    let values = amf0::decode_all(&payload).unwrap();
    assert_eq!(
        values,
        vec![
            s("connect"),
            n(1.0),
            Amf0Value::Object(vec![
                ("app".into(), s("live")),
                ("type".into(), s("nonprivate")),
                ("flashVer".into(), s("FMLE/3.0 (compatible; Lavf59.27.100)")),
                ("tcUrl".into(), s("rtmp://127.0.0.1:19351/live")),
            ])
        ]
    );
    assert_eq!(amf0::encode_all(&values).as_ref(), &payload[..]);
}

/// Split the handshake and the captured ffmpeg bytes at every point: the same events and
/// the same server output.
#[test]
fn split_at_every_byte_handshake_and_commands() {
    for digest in [None, Some(DigestScheme::Scheme0)] {
        let client = TestClient::new(digest);
        let mut all = client.c0_c1();
        all.extend(client.c2());
        all.extend(hex(FFMPEG_CONNECT_TO_PUBLISH));
        let run = |splits: &[usize]| {
            let now = Instant::now();
            let mut server = ServerSession::new(SessionConfig::default(), now);
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            let mut events = Vec::new();
            let mut last = 0;
            for &at in splits.iter().chain(std::iter::once(&all.len())) {
                buf.extend_from_slice(&all[last..at]);
                last = at;
                server.handle_input(now, &mut buf).unwrap();
                while let Some(b) = server.poll_transmit() {
                    out.extend_from_slice(&b);
                }
                while let Some(e) = server.poll_event() {
                    events.push(e);
                }
            }
            assert!(buf.is_empty());
            (out, events)
        };
        let whole = run(&[]);
        assert_eq!(whole.1.len(), 2);
        for at in 0..=all.len() {
            assert_eq!(run(&[at]), whole, "split at {at}");
        }
        // and byte by byte
        let every: Vec<usize> = (1..all.len()).collect();
        assert_eq!(run(&every), whole);
    }
}

fn media_messages(events: &[Event]) -> Vec<(char, u32, usize)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Audio {
                timestamp, data, ..
            } => Some(('a', *timestamp, data.len())),
            Event::Video {
                timestamp, data, ..
            } => Some(('v', *timestamp, data.len())),
            _ => None,
        })
        .collect()
}

#[test]
fn whole_session_librtmp_style_media() {
    for digest in [None, Some(DigestScheme::Scheme1)] {
        let mut p = Pair::new(digest);
        p.handshake();
        p.connect_and_publish(vec![]);
        assert!(matches!(
            p.events.last(),
            Some(Event::PublishRequest { stream_key, query, .. })
                if stream_key == "k" && query.as_deref() == Some("a=b")
        ));
        p.client.take_received();
        let c = &p.client;
        let video: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let audio: Vec<u8> = vec![0xaf; 150];
        // librtmp: fmt 1 on never-seen chunk streams 4 (audio) and 6 (video) ...
        let mut b = c.chunk(1, 6, 0, 9, 0, &video, true);
        b.extend(c.chunk(1, 5, 0, 8, 0, &audio[..20], true));
        // ... then fmt 1/2 deltas and fmt 3 repeats, video and audio chunks interleaved.
        let v2 = c.chunk(2, 6, 40, 9, 0, &video, true);
        let a2 = c.chunk(1, 5, 23, 8, 0, &audio, true);
        // interleave: first chunk of v2 (header 4 + 128 bytes), all of a2, rest of v2
        b.extend_from_slice(&v2[..4 + 128]);
        b.extend_from_slice(&a2);
        b.extend_from_slice(&v2[4 + 128..]);
        b.extend(c.chunk(3, 6, 0, 9, 0, &video, true));
        // an extended timestamp, with and without repetition on continuations
        b.extend(c.chunk(0, 6, 0x0123_4567, 9, 1, &video, true));
        b.extend(c.chunk(0, 5, 0x0123_4567, 8, 1, &audio, false));
        // ping
        b.extend(c.chunk(0, 2, 0, 4, 0, &hex(&["0006 0000abcd"]), true));
        p.send(&b).unwrap();
        assert_eq!(
            media_messages(&p.events),
            vec![
                ('v', 0, 300),
                ('a', 0, 20),
                ('a', 23, 150),
                ('v', 40, 300),
                ('v', 80, 300),
                ('v', 0x0123_4567, 300),
                ('a', 0x0123_4567, 150),
            ]
        );
        let rx = p.client.take_received();
        assert_eq!(rx.len(), 1);
        assert_eq!(rx[0].type_id, 4);
        assert_eq!(&rx[0].payload[..], &hex(&["0007 0000abcd"])[..]);
        // client raises its chunk size, sends a large frame in one chunk
        let mut b = p.client.chunk(0, 2, 0, 1, 0, &hex(&["00010000"]), true);
        p.client.chunk_size = 65536;
        let big = vec![7u8; 60_000];
        b.extend(p.client.chunk(1, 6, 33, 9, 0, &big, true));
        p.send(&b).unwrap();
        assert!(
            matches!(p.events.last(), Some(Event::Video { data, timestamp, .. })
            if data.len() == 60_000 && *timestamp == 0x0123_4567 + 33)
        );
        // FCUnpublish then deleteStream: one Unpublish
        let c = &p.client;
        let mut b = c.command(
            3,
            0,
            &[s("FCUnpublish"), n(6.0), Amf0Value::Null, s("k?a=b")],
        );
        b.extend(c.command(3, 0, &[s("deleteStream"), n(7.0), Amf0Value::Null, n(1.0)]));
        p.send(&b).unwrap();
        let unpublishes = p
            .events
            .iter()
            .filter(|e| matches!(e, Event::Unpublish { stream_id: 1 }))
            .count();
        assert_eq!(unpublishes, 1);
        assert_eq!(p.server.dropped_media_messages(), 0);
    }
}

#[test]
fn enhanced_rtmp_fourcc_list_is_echoed() {
    let mut p = Pair::new(None);
    p.handshake();
    let list = Amf0Value::StrictArray(vec![s("av01"), s("hvc1"), s("vp09")]);
    p.connect_and_publish(vec![("fourCcList".into(), list.clone())]);
    let rx = p.client.take_received();
    let result = rx
        .iter()
        .find(|r| r.name().as_deref() == Some("_result"))
        .unwrap();
    assert_eq!(result.command().unwrap()[2].get("fourCcList"), Some(&list));
}

#[test]
fn media_behind_publish_waits_for_the_answer_then_flows_or_is_dropped() {
    // Some publishers send media right behind `publish`; it is not parsed (it stays in the
    // driver's buffer) until the driver answers, then flows if accepted.
    let mut p = Pair::new(None);
    p.accept = false;
    p.handshake();
    p.connect_and_publish(vec![]);
    p.client.take_received();
    let b = p.client.chunk(0, 6, 0, 9, 1, &[0x17, 0, 0, 0, 0], true);
    p.send(&b).unwrap();
    assert!(p.server.awaiting_publish_answer());
    assert_eq!(media_messages(&p.events), vec![]);
    assert_eq!(p.buf.len(), b.len(), "the media waits unparsed");
    p.server.accept_publish(1);
    p.send(&[]).unwrap();
    assert_eq!(media_messages(&p.events), vec![('v', 0, 5)]);
    assert!(p.buf.is_empty());
    assert_eq!(p.server.dropped_media_messages(), 0);

    // Refused: what waited behind `publish` is parsed as a nobody's and dropped.
    let mut p = Pair::new(None);
    p.accept = false;
    p.handshake();
    p.connect_and_publish(vec![]);
    p.client.take_received();
    let b = p.client.chunk(0, 6, 0, 9, 1, &[0x17, 0, 0, 0, 0], true);
    p.send(&b).unwrap();
    p.server
        .reject_publish(1, "NetStream.Publish.BadName", "no such key");
    p.send(&[]).unwrap();
    assert_eq!(media_messages(&p.events), vec![]);
    assert_eq!(p.server.dropped_media_messages(), 1);
    let rx = p.client.take_received();
    let status = rx[0].command().unwrap();
    assert_eq!(status[0], s("onStatus"));
    assert_eq!(status[3].get("level"), Some(&s("error")));
    assert_eq!(status[3].get("code"), Some(&s("NetStream.Publish.BadName")));
    // accept after reject does nothing
    p.server.accept_publish(1);
    p.drain();
    assert!(p.client.take_received().is_empty());
}

#[test]
fn end_publish_sends_unpublish_success_and_stops_media() {
    let mut p = Pair::new(None);
    p.handshake();
    p.connect_and_publish(vec![]);
    p.client.take_received();
    p.server.end_publish(1);
    p.drain();
    let rx = p.client.take_received();
    assert_eq!(
        rx[0].command().unwrap()[3].get("code"),
        Some(&s("NetStream.Unpublish.Success"))
    );
    let b = p.client.chunk(0, 6, 0, 9, 1, &[0x17], true);
    p.send(&b).unwrap();
    assert_eq!(p.server.dropped_media_messages(), 1);
}

#[test]
fn metadata_amf0_and_amf3_and_aggregate() {
    let mut p = Pair::new(None);
    p.handshake();
    p.connect_and_publish(vec![]);
    let meta = Amf0Value::EcmaArray(vec![("width".into(), n(320.0))]);
    let body = amf0::encode_all(&[s("@setDataFrame"), s("onMetaData"), meta.clone()]);
    let mut b = p.client.chunk(0, 4, 0, 18, 1, &body, true);
    let mut amf3 = vec![0u8];
    amf3.extend_from_slice(&amf0::encode_all(&[s("onMetaData"), meta.clone()]));
    b.extend(p.client.chunk(0, 4, 0, 15, 1, &amf3, true));
    // aggregate: audio tag ts 1000 (2 bytes), video tag ts 1040 (3 bytes); message ts 500
    let agg = hex(&[
        "08 000002 0003e8 00 000000 af01 0000000d",
        "09 000003 000410 00 000000 270100 0000000e",
    ]);
    b.extend(p.client.chunk(0, 4, 500, 22, 1, &agg, true));
    // an AMF3 command (type 17) is understood too
    let mut cmd = vec![0u8];
    cmd.extend_from_slice(&amf0::encode_all(&[
        s("bogusCall"),
        n(9.0),
        Amf0Value::Null,
    ]));
    b.extend(p.client.chunk(0, 3, 0, 17, 0, &cmd, true));
    p.client.take_received();
    p.send(&b).unwrap();
    let metas: Vec<&Event> = p
        .events
        .iter()
        .filter(|e| matches!(e, Event::Metadata { .. }))
        .collect();
    assert_eq!(metas.len(), 2);
    assert_eq!(
        metas[0],
        &Event::Metadata {
            stream_id: 1,
            data: meta
        }
    );
    assert_eq!(
        media_messages(&p.events),
        vec![('a', 500, 2), ('v', 540, 3)]
    );
    let rx = p.client.take_received();
    let err = rx[0].command().unwrap();
    assert_eq!(err[0], s("_error"));
    assert_eq!(err[1], n(9.0));
}

#[test]
fn acknowledgements_follow_the_peer_window() {
    let mut p = Pair::new(None);
    p.handshake();
    p.connect_and_publish(vec![]);
    let mut b = p.client.chunk(0, 2, 0, 5, 0, &hex(&["000003e8"]), true); // 1000
    b.extend(p.client.chunk(0, 6, 0, 9, 1, &[0u8; 100], true));
    p.client.take_received();
    p.send(&b).unwrap();
    // handshake + commands already exceed 1000 bytes: one Acknowledgement now.
    let rx = p.client.take_received();
    let acks: Vec<&Received> = rx.iter().filter(|r| r.type_id == 3).collect();
    assert_eq!(acks.len(), 1);
    let seq = u32::from_be_bytes(acks[0].payload[..4].try_into().unwrap());
    assert_eq!(u64::from(seq), p.server.bytes_received());
    // less than a window more: no ack
    let b = p.client.chunk(0, 6, 0, 9, 1, &[0u8; 500], true);
    p.send(&b).unwrap();
    assert!(p.client.take_received().iter().all(|r| r.type_id != 3));
    // past the window: one ack
    let b = p.client.chunk(0, 6, 0, 9, 1, &[0u8; 600], true);
    p.send(&b).unwrap();
    assert_eq!(
        p.client
            .take_received()
            .iter()
            .filter(|r| r.type_id == 3)
            .count(),
        1
    );
}

#[test]
fn handshake_timeout_with_simulated_clock() {
    let t0 = Instant::now();
    let mut s = ServerSession::new(SessionConfig::default(), t0);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    s.handle_input(t0, &mut BytesMut::from(&[3u8, 0, 0][..]))
        .unwrap();
    assert!(s.handle_timeout(t0 + Duration::from_secs(9)).is_ok());
    let err = s.handle_timeout(t0 + Duration::from_secs(10)).unwrap_err();
    assert_eq!(err, RtmpError::HandshakeTimeout);
    assert_eq!(err.kind(), "timeout");
    assert!(err.is_peer_error());
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(
        s.handle_input(t0, &mut BytesMut::new()),
        Err(RtmpError::Closed)
    );
    // no timeout once the handshake is done
    let mut p = Pair::new(None);
    p.handshake();
    assert_eq!(p.server.poll_timeout(), None);
    assert!(p
        .server
        .handle_timeout(p.now + Duration::from_secs(60))
        .is_ok());
}

#[test]
fn oversized_message_and_garbage_are_errors() {
    // Publishing: the full limits (8 MiB per message).
    let mut p = Pair::new(None);
    p.handshake();
    p.connect_and_publish(vec![]);
    let err = p.send(&hex(&["06 000000 ffffff 09 01000000"])).unwrap_err();
    assert!(matches!(err, RtmpError::MessageTooLarge { .. }));
    assert_eq!(err.kind(), "chunk");
    // Not publishing: the before-publish limit.
    let mut p = Pair::new(None);
    p.handshake();
    let err = p.send(&hex(&["06 000000 ffffff 09 01000000"])).unwrap_err();
    assert_eq!(err, RtmpError::PrePublishBuffer(64 * 1024));
    assert_eq!(err.kind(), "prepublish_buffer");

    let mut p = Pair::new(None);
    let err = p.send(b"GET / HTTP/1.1\r\n\r\n").unwrap_err();
    assert_eq!(err, RtmpError::UnsupportedVersion(b'G'));
    assert_eq!(err.kind(), "handshake");

    // a command that is not AMF
    let mut p = Pair::new(None);
    p.handshake();
    let b = p.client.chunk(0, 3, 0, 20, 0, &[0xff, 0xff], true);
    assert_eq!(p.send(&b).unwrap_err().kind(), "amf");
    // a bad chunk size
    let mut p = Pair::new(None);
    p.handshake();
    let b = p.client.chunk(0, 2, 0, 1, 0, &hex(&["80000000"]), true);
    assert_eq!(
        p.send(&b).unwrap_err(),
        RtmpError::InvalidChunkSize(0x8000_0000)
    );
    // publish before connect
    let mut p = Pair::new(None);
    p.handshake();
    let b = p
        .client
        .command(4, 1, &[s("publish"), n(0.0), Amf0Value::Null, s("k")]);
    assert_eq!(p.send(&b).unwrap_err().kind(), "protocol");
}

#[test]
fn pseudo_random_garbage_never_panics() {
    // Deterministic xorshift: random bytes after a valid handshake, fed in random splits.
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..300 {
        let mut p = Pair::new(None);
        p.handshake();
        let len = (next() % 4000) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let mut pos = 0;
        while pos < data.len() {
            let step = 1 + (next() % 300) as usize;
            let end = (pos + step).min(data.len());
            if p.send(&data[pos..end]).is_err() {
                break;
            }
            pos = end;
        }
    }
}

#[test]
fn create_stream_limit_and_unknown_commands() {
    let mut p = Pair::new(None);
    p.handshake();
    p.connect_and_publish(vec![]);
    p.client.take_received();
    let mut b = Vec::new();
    for t in 0..10 {
        b.extend(p.client.command(
            3,
            0,
            &[s("createStream"), n(10.0 + t as f64), Amf0Value::Null],
        ));
    }
    b.extend(
        p.client
            .command(3, 0, &[s("_checkbw"), n(30.0), Amf0Value::Null]),
    );
    b.extend(
        p.client
            .command(3, 0, &[s("getStreamLength"), n(31.0), Amf0Value::Null]),
    );
    b.extend(
        p.client
            .command(3, 0, &[s("whatever"), n(0.0), Amf0Value::Null]),
    );
    p.send(&b).unwrap();
    let names: Vec<String> = p
        .client
        .take_received()
        .iter()
        .filter_map(Received::name)
        .collect();
    // 8 streams allowed by default, one already created
    assert_eq!(names.iter().filter(|n| *n == "_result").count(), 7);
    assert_eq!(names.iter().filter(|n| *n == "_error").count(), 3);
    assert_eq!(names.len(), 10);
}

/// The first chunk (128 bytes at the default chunk size) of a video message on `csid`
/// announced as `len` bytes: the message stays unfinished.
fn unfinished_video(csid: u8, len: u32) -> Vec<u8> {
    let mut b = vec![csid, 0, 0, 0];
    b.extend_from_slice(&len.to_be_bytes()[1..]);
    b.extend_from_slice(&hex(&["09 01000000"]));
    b.extend_from_slice(&[0u8; 128]);
    b
}

fn connect_only(p: &mut Pair) {
    let c = &p.client;
    let obj = Amf0Value::Object(vec![("app".to_string(), s("live"))]);
    let b = c.command(3, 0, &[s("connect"), n(1.0), obj]);
    p.send(&b).unwrap();
}

#[test]
fn a_connection_that_is_not_publishing_holds_at_most_64_kib_of_unfinished_messages() {
    let limit = LIMITS_BEFORE_PUBLISH.max_pending_bytes;
    assert_eq!(limit, 64 * 1024);
    // One message announced just above the limit: refused at its header, before a byte of
    // its body is kept.
    let mut p = Pair::new(None);
    p.handshake();
    connect_only(&mut p);
    let err = p.send(&unfinished_video(6, limit as u32 + 1)).unwrap_err();
    assert_eq!(err, RtmpError::PrePublishBuffer(limit));
    assert_eq!(err.kind(), "prepublish_buffer");
    assert!(err.is_peer_error());

    // Several messages under the limit each, together above it: the one that would pass
    // the total is refused; what is held never exceeds the limit.
    let mut p = Pair::new(None);
    p.handshake();
    connect_only(&mut p);
    p.send(&unfinished_video(6, 40_000)).unwrap();
    assert_eq!(p.server.pending_bytes(), 40_000);
    let err = p.send(&unfinished_video(7, 40_000)).unwrap_err();
    assert_eq!(err, RtmpError::PrePublishBuffer(limit));
    assert!(p.server.pending_bytes() <= limit);

    // A whole message under the limit is fine (the limit is on what waits, not on traffic).
    let mut p = Pair::new(None);
    p.handshake();
    connect_only(&mut p);
    for _ in 0..4 {
        let b = p.client.chunk(0, 6, 0, 9, 1, &vec![0u8; 60_000], true);
        p.send(&b).unwrap();
    }
    assert_eq!(p.server.pending_bytes(), 0);
    assert_eq!(p.server.dropped_media_messages(), 4);
}

/// Four first chunks (type-0 header and 128 bytes) on different chunk streams, each
/// announcing an 8 MiB message: 560 bytes that claim 32 MiB.
fn four_8_mib_headers() -> Vec<u8> {
    (6u8..10)
        .flat_map(|csid| unfinished_video(csid, 8 << 20))
        .collect()
}

#[test]
fn a_pending_publish_does_not_raise_the_limits_and_bytes_behind_it_wait_for_the_answer() {
    // The attack: `publish` with a key the driver refuses and, in the same read, four
    // chunks announcing 8 MiB each (32 MiB "in progress" for 560 bytes).
    let mut p = Pair::new(None);
    p.accept = false;
    p.handshake();
    let c = &p.client;
    let obj = Amf0Value::Object(vec![("app".to_string(), s("live"))]);
    let mut b = c.command(3, 0, &[s("connect"), n(1.0), obj]);
    b.extend(c.command(3, 0, &[s("createStream"), n(2.0), Amf0Value::Null]));
    b.extend(c.command(
        4,
        1,
        &[
            s("publish"),
            n(3.0),
            Amf0Value::Null,
            s("../bad"),
            s("live"),
        ],
    ));
    let attack = four_8_mib_headers();
    b.extend_from_slice(&attack);
    p.send(&b).unwrap();
    assert!(p.server.awaiting_publish_answer());
    assert_eq!(
        p.server.pending_bytes(),
        0,
        "nothing behind `publish` is parsed"
    );
    assert_eq!(p.buf.len(), attack.len());
    // Refused: the headers are parsed under the before-publish limits.
    p.server
        .reject_publish(1, "NetStream.Publish.BadName", "bad key");
    let err = p.send(&[]).unwrap_err();
    assert_eq!(
        err,
        RtmpError::PrePublishBuffer(LIMITS_BEFORE_PUBLISH.max_message_size as usize)
    );
    assert_eq!(p.server.pending_bytes(), 0);

    // Accepted: the full limits (here 4 x 8 MiB = 32 MiB, the most in progress).
    let mut p = Pair::new(None);
    p.accept = false;
    p.handshake();
    p.connect_and_publish(vec![]);
    p.send(&attack[..attack.len() / 2]).unwrap();
    assert_eq!(p.server.pending_bytes(), 0);
    p.server.accept_publish(1);
    p.send(&attack[attack.len() / 2..]).unwrap();
    assert_eq!(p.server.pending_bytes(), 32 << 20);
}

#[test]
fn an_accepted_publish_gets_the_full_limits_and_an_unpublish_takes_them_back() {
    let mut p = Pair::new(None);
    p.handshake();
    p.connect_and_publish(vec![]);
    p.send(&unfinished_video(6, 4 << 20)).unwrap();
    p.send(&unfinished_video(4, 4 << 20)).unwrap();
    assert_eq!(p.server.pending_bytes(), 8 << 20);
    // The client unpublishes: the connection is nobody again, and what it holds is over
    // the limit.
    let b = p
        .client
        .command(3, 1, &[s("closeStream"), n(0.0), Amf0Value::Null]);
    let err = p.send(&b).unwrap_err();
    assert_eq!(
        err,
        RtmpError::PrePublishBuffer(LIMITS_BEFORE_PUBLISH.max_pending_bytes)
    );

    // A configured lower bound for publishers is honoured too.
    let config = SessionConfig {
        limits_publishing: tidegate_rtmp::chunk::ReaderLimits {
            max_message_size: 1 << 20,
            max_pending_bytes: 1 << 20,
        },
        ..SessionConfig::default()
    };
    let mut p = Pair::new(None);
    p.server = ServerSession::new(config, p.now);
    p.handshake();
    p.connect_and_publish(vec![]);
    let err = p.send(&unfinished_video(6, (1 << 20) + 1)).unwrap_err();
    assert!(matches!(err, RtmpError::MessageTooLarge { .. }), "{err:?}");
}

#[test]
fn replies_the_driver_does_not_write_are_bounded() {
    let mut p = Pair::new(None);
    p.handshake();
    // Ping requests (User Control 6) provoke one 18-byte response each; the driver here
    // never calls poll_transmit.
    let ping = p
        .client
        .chunk(0, 2, 0, 4, 0, &hex(&["0006 00000001"]), true);
    let mut buf = BytesMut::new();
    let mut now = p.now;
    let mut result = Ok(());
    for _ in 0..1000 {
        for _ in 0..100 {
            buf.extend_from_slice(&ping);
        }
        now += Duration::from_millis(1);
        result = p.server.handle_input(now, &mut buf);
        if result.is_err() {
            break;
        }
    }
    let err = result.unwrap_err();
    assert_eq!(err, RtmpError::TransmitBacklog(MAX_PENDING_TRANSMIT_BYTES));
    assert_eq!(err.kind(), "transmit_backlog");
    // What waits is bounded by the cap plus one message's reply.
    let mut waiting = 0;
    while let Some(b) = p.server.poll_transmit() {
        waiting += b.len();
    }
    assert!(waiting <= MAX_PENDING_TRANSMIT_BYTES + 64, "{waiting}");
}
