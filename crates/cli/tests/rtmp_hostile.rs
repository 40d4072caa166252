//! Hostile RTMP peers against a live worker while one legitimate ffmpeg publisher plays
//! throughout (issue 10, hostile peers 3, 4 and 6):
//!
//! - (a) connections that handshake and `connect`, then send huge unfinished messages, are
//!   closed after at most 64 KiB (`reason="prepublish_buffer"`) and the worker's memory stays
//!   low;
//! - (b) a publisher that stops reading while the server has replies for it is dropped within
//!   the write timeout (`reason="write_timeout"`); a kick closes a publisher at once even
//!   while the server's write to it is stuck (`reason="kicked"`; the client sees the end);
//! - (c) connections past `--max-connections-per-ip` and `--max-connections`, and a publisher
//!   past `--max-publishers`, are refused and counted;
//! - `publish` with a bad key followed in the same write by chunk headers announcing 32 MiB
//!   holds nothing: the headers are parsed only after the refusal, under the 64 KiB limit;
//! - a connection that trickles a byte a second and never publishes is closed at twice
//!   `--rtmp-handshake-timeout` after its accept;
//! - (d) the legitimate stream (published under another app name than `live`, which is
//!   ignored) keeps listing segments, without a discontinuity.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use tidegate_testkit::hostile::{
    amf0, metric_sum, rss_kib, rtmp_chunks, rtmp_plain_handshake, rtmp_type, Amf,
    RTMP_DEFAULT_CHUNK_SIZE,
};
use tidegate_testkit::*;

/// The server's default `--rtmp-write-timeout`.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections of the pre-publish flood.
const FLOOD: usize = 20;
/// What each flood connection announces (under the old 8 MiB message limit, so a server
/// without the before-publish limit would buffer all of it).
const CLAIM: usize = 8 * 1024 * 1024;

/// Samples of `name` for RTMP with `reason="REASON"`, summed.
fn rtmp_reason(server: &Server, name: &str, reason: &str) -> f64 {
    metric_sum(
        &server.metrics(),
        name,
        &[("protocol", "rtmp"), ("reason", reason)],
    )
}

fn rtmp_errors(server: &Server, reason: &str) -> f64 {
    rtmp_reason(server, "tidegate_connection_errors", reason)
}

fn rtmp_refused(server: &Server, reason: &str) -> f64 {
    rtmp_reason(server, "tidegate_connections_refused", reason)
}

/// Waits until `tidegate_connection_errors{protocol="rtmp",reason}` reaches `at_least`;
/// returns the count then.
fn wait_rtmp_errors(server: &Server, reason: &str, at_least: f64, within: Duration) -> f64 {
    wait_for(
        &format!("{at_least} RTMP connection(s) ended with reason=\"{reason}\""),
        within,
        Duration::from_millis(200),
        || {
            let n = rtmp_errors(server, reason);
            (n >= at_least).then_some(n)
        },
    )
}

/// A command message in default-size (128-byte) chunks: this client never sends Set Chunk
/// Size.
fn command(csid: u8, stream_id: u32, values: &[Amf]) -> Vec<u8> {
    let payload = amf0(values);
    rtmp_chunks(
        csid,
        rtmp_type::COMMAND_AMF0,
        stream_id,
        payload.len() as u32,
        &payload,
        RTMP_DEFAULT_CHUNK_SIZE,
    )
}

/// A User Control Ping Request: the server answers each with a Ping Response.
fn ping() -> Vec<u8> {
    let payload = [0, 6, 0, 0, 0, 1];
    rtmp_chunks(
        2,
        rtmp_type::USER_CONTROL,
        0,
        payload.len() as u32,
        &payload,
        RTMP_DEFAULT_CHUNK_SIZE,
    )
}

/// A raw RTMP client on a blocking socket.
struct Raw {
    s: TcpStream,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        Raw { s }
    }

    /// A client whose kernel receive buffer is as small as Linux allows, so that a server
    /// with replies for it fills it at once.
    fn connect_small_rcvbuf(addr: SocketAddr) -> Raw {
        Raw::connect_with(addr, |sock| sock.set_recv_buffer_size(4096))
    }

    /// A client whose kernel send buffer is small, so that what it could send before the
    /// server closed the connection says what the server read (not what our kernel took).
    fn connect_small_sndbuf(addr: SocketAddr) -> Raw {
        Raw::connect_with(addr, |sock| sock.set_send_buffer_size(16 * 1024))
    }

    fn connect_with(
        addr: SocketAddr,
        set: impl FnOnce(&socket2::Socket) -> std::io::Result<()>,
    ) -> Raw {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        set(&sock).unwrap();
        sock.connect(&addr.into()).unwrap();
        let s: TcpStream = sock.into();
        s.set_nodelay(true).unwrap();
        Raw { s }
    }

    /// C0+C1 (plain), S0+S1+S2, C2; the chunk size stays 128.
    fn handshake(&mut self) {
        rtmp_plain_handshake(&mut self.s, Duration::from_secs(10)).expect("S0+S1+S2");
    }

    fn connect_app(&mut self, app: &str) {
        let tc_url = format!("rtmp://127.0.0.1/{app}");
        let b = command(
            3,
            0,
            &[
                Amf::Str("connect".into()),
                Amf::Num(1.0),
                Amf::Obj(vec![
                    ("app", Amf::Str(app.into())),
                    ("type", Amf::Str("nonprivate".into())),
                    ("tcUrl", Amf::Str(tc_url)),
                ]),
            ],
        );
        self.s.write_all(&b).unwrap();
    }

    /// connect, createStream, publish `key` on stream 1; returns the `NetStream.Publish.*`
    /// code the server answered.
    fn publish(&mut self, key: &str) -> String {
        self.handshake();
        self.connect_app("live");
        self.s.write_all(&create_stream_and_publish(key)).unwrap();
        self.read_code("NetStream.Publish.", Duration::from_secs(15))
    }

    /// Reads until `prefix` followed by a code appears in what the server sent.
    fn read_code(&mut self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        self.s
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        loop {
            let text = String::from_utf8_lossy(&seen).into_owned();
            if let Some(at) = text.find(prefix) {
                let code: String = text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
                    .collect();
                if code.len() > prefix.len() {
                    return code;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {prefix}* from the server within {within:?}"
            );
            match self.s.read(&mut buf) {
                Ok(0) => panic!("the server closed before answering {prefix}*"),
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("reading the answer: {e}"),
            }
        }
    }

    /// Sends ping requests and never reads the responses, until our own writes block (the
    /// server stopped reading because its write to us is stuck). Returns when that happened.
    fn flood_pings_until_blocked(&mut self) -> Instant {
        let batch: Vec<u8> = ping().repeat(1000);
        self.s
            .set_write_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut sent = 0usize;
        loop {
            match self.s.write_all(&batch) {
                Ok(()) => sent += batch.len(),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Instant::now();
                }
                Err(e) => panic!("the server closed a reading-stalled publisher at once: {e}"),
            }
            assert!(
                sent < 256 << 20,
                "256 MiB of pings and the server still reads: it does not answer them?"
            );
        }
    }

    /// Reads until the server has closed the connection (EOF or reset), within `within`.
    fn expect_closed(&mut self, within: Duration, what: &str) -> Duration {
        let since = Instant::now();
        self.s
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.s.read(&mut buf) {
                Ok(0) => return since.elapsed(),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return since.elapsed(), // reset: closed too
            }
            assert!(
                since.elapsed() < within,
                "{what}: the server did not close the connection within {within:?}"
            );
        }
    }
}

/// One connection of the pre-publish flood: handshake, `connect`, then unfinished messages.
/// Even ones announce one 8 MiB message and send its body (or try to); odd ones start 60,000-byte
/// messages on many chunk streams (each under 64 KiB, together far above). Returns the bytes
/// the kernel accepted before the server closed the connection.
fn unfinished_flood(addr: SocketAddr, i: usize) -> usize {
    let mut raw = Raw::connect_small_sndbuf(addr);
    raw.handshake();
    raw.connect_app("live");
    raw.s
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut sent = 0usize;
    let mut send = |raw: &mut Raw, b: &[u8]| -> bool {
        match raw.s.write_all(b) {
            Ok(()) => {
                sent += b.len();
                true
            }
            Err(_) => false,
        }
    };
    if i.is_multiple_of(2) {
        // The header and the first 128-byte chunk, then 64 continuation chunks at a time.
        let first = rtmp_chunks(
            6,
            rtmp_type::VIDEO,
            1,
            CLAIM as u32,
            &[0x55; 128],
            RTMP_DEFAULT_CHUNK_SIZE,
        );
        let mut more = Vec::with_capacity(129 * 64);
        for _ in 0..64 {
            more.push(0xC6);
            more.extend_from_slice(&[0x55; 128]);
        }
        let mut body = 128;
        let mut open = send(&mut raw, &first);
        while open && body < CLAIM {
            open = send(&mut raw, &more);
            body += 128 * 64;
        }
    } else {
        for csid in 4..=40u8 {
            let b = rtmp_chunks(
                csid,
                rtmp_type::VIDEO,
                1,
                60_000,
                &[0x55; 128],
                RTMP_DEFAULT_CHUNK_SIZE,
            );
            if !send(&mut raw, &b) {
                break;
            }
        }
    }
    raw.expect_closed(Duration::from_secs(10), "an unfinished-message flood");
    sent
}

#[test]
fn hostile_rtmp_peers_cost_little_are_dropped_and_counted_while_a_stream_plays() {
    let started = Instant::now();
    let mut server = Server::start(&[
        "--max-connections-per-ip",
        "30",
        "--max-publishers",
        "3",
        "--reconnect-window",
        "30s",
    ]);
    // The app name is ignored: `other` works like `live`.
    let mut good = publish_ffmpeg(
        Media::H264Aac,
        &format!("rtmp://{}/other/good", server.rtmp),
        &Publish::forever(),
    );
    let url = server.playlist_url("good");
    let live = Expect {
        endlist: Some(false),
        fmp4: None,
        min_segments: 1,
    };
    wait_playlist(&url, Duration::from_secs(25), "the good stream", |pl| {
        !pl.segments.is_empty()
    });
    let mut watch = Watch::default();
    let first = watch.observe(&url, &live);
    let pid = server.proc.pid();
    let rss_before = rss_kib(pid);

    // A refused key is logged by its hint, never whole.
    let mut bad = Raw::connect(server.rtmp);
    assert_eq!(bad.publish("secret$key"), "NetStream.Publish.BadName");
    drop(bad);

    // (a) Unfinished messages before publishing: at most 64 KiB each.
    let floods: Vec<_> = (0..FLOOD)
        .map(|i| {
            let addr = server.rtmp;
            thread::spawn(move || unfinished_flood(addr, i))
        })
        .collect();
    let sent: Vec<usize> = floods.into_iter().map(|t| t.join().unwrap()).collect();
    let rss_after = rss_kib(pid);
    eprintln!(
        "pre-publish flood: RSS {rss_before} → {rss_after} KiB; bytes the kernel took: {sent:?}"
    );
    // The server stops reading at the header that passes 64 KiB; what else got out sits in
    // kernel buffers (ours is 16 KiB, the server's receive buffer some hundred KiB).
    for (i, n) in sent.iter().enumerate() {
        assert!(
            *n < 1 << 20,
            "connection {i} could send {n} bytes of a {CLAIM}-byte message: the server kept reading"
        );
    }
    assert!(
        rss_after < rss_before + 40 * 1024,
        "{FLOOD} connections that never published grew the worker from {rss_before} to {rss_after} KiB"
    );
    let prepublish = wait_rtmp_errors(
        &server,
        "prepublish_buffer",
        FLOOD as f64,
        Duration::from_secs(10),
    );
    assert_eq!(prepublish, FLOOD as f64);
    watch.observe(&url, &live);

    // (b) Two publishers that stop reading while the server has replies for them.
    let mut stuck = Raw::connect_small_rcvbuf(server.rtmp);
    assert_eq!(stuck.publish("stuck"), "NetStream.Publish.Start");
    let stuck_since = stuck.flood_pings_until_blocked();
    let mut kicked = Raw::connect_small_rcvbuf(server.rtmp);
    assert_eq!(kicked.publish("kickme"), "NetStream.Publish.Start");
    kicked.flood_pings_until_blocked();

    // (c) The publisher cap: good, stuck and kickme are three.
    let mut extra = Raw::connect(server.rtmp);
    assert_eq!(extra.publish("extra"), "NetStream.Publish.Rejected");
    assert_eq!(rtmp_refused(&server, "max_publishers"), 1.0);
    drop(extra);

    // Kick closes the socket at once, though the server's write to it is stuck.
    let kick = server.url("/api/v1/streams/default/kickme/kick");
    assert_eq!(try_post(&kick), Ok(200), "kick of a live publisher");
    let took = kicked.expect_closed(Duration::from_secs(8), "a kicked publisher");
    eprintln!("kicked publisher closed {took:?} after the kick");
    wait_rtmp_errors(&server, "kicked", 1.0, Duration::from_secs(5));
    watch.observe(&url, &live);

    // (c) Connections past --max-connections-per-ip from 127.0.0.1 (good and stuck are open).
    let per_source_before = rtmp_refused(&server, "per_source");
    let suppressed_before = metric_sum(
        &server.metrics(),
        "tidegate_log_lines_suppressed",
        &[("area", "rtmp")],
    );
    let held: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(server.rtmp).unwrap())
        .collect();
    thread::sleep(Duration::from_secs(1));
    let mut refused_seen = 0;
    for s in &held {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        match (&*s).read(&mut b) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            _ => refused_seen += 1, // EOF or reset: refused
        }
    }
    let per_source = rtmp_refused(&server, "per_source") - per_source_before;
    assert!(
        refused_seen >= 70,
        "100 connections against a cap of 30 per source: only {refused_seen} refused"
    );
    assert_eq!(
        per_source, refused_seen as f64,
        "every refused connection is counted"
    );
    let suppressed = metric_sum(
        &server.metrics(),
        "tidegate_log_lines_suppressed",
        &[("area", "rtmp")],
    ) - suppressed_before;
    assert!(
        suppressed >= 1.0,
        "{refused_seen} refusals within a second wrote every log line"
    );
    drop(held);
    // The slots come back: a new client gets in.
    wait_for(
        "a connection accepted again after the others left",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || {
            let mut raw = Raw::connect(server.rtmp);
            rtmp_plain_handshake(&mut raw.s, Duration::from_secs(2)).ok()
        },
    );

    // (c) --max-connections, on a worker of its own (all test peers share 127.0.0.1).
    let capped = Server::start(&["--max-connections", "3"]);
    let conns: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(capped.rtmp).unwrap())
        .collect();
    wait_for(
        "two connections refused as max_connections",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || (rtmp_refused(&capped, "max_connections") == 2.0).then_some(()),
    );
    drop(conns);
    drop(capped);

    // (b) The publisher that stopped reading is dropped within the write timeout.
    wait_rtmp_errors(
        &server,
        "write_timeout",
        1.0,
        WRITE_TIMEOUT + Duration::from_secs(15),
    );
    eprintln!(
        "stalled publisher dropped {:?} after its writes blocked",
        stuck_since.elapsed()
    );
    stuck.expect_closed(Duration::from_secs(5), "a reading-stalled publisher");
    assert_eq!(
        rtmp_errors(&server, "write_timeout"),
        1.0,
        "only the stalled publisher timed out (the kicked one was closed by the kick)"
    );

    // (d) The legitimate stream played throughout.
    let log = server.log_text();
    assert!(
        !log.contains("secret$key"),
        "a refused key must not be logged"
    );
    assert!(
        log.contains("secr…"),
        "a refused key is logged by its hint; log:\n{}",
        server.proc.log_tail(40)
    );
    let last = wait_playlist(
        &url,
        Duration::from_secs(15),
        "the good stream to keep growing",
        |pl| pl.next_msn() >= first.next_msn() + 3,
    );
    let last = watch.accept(last);
    assert_eq!(last.discontinuities(), 0, "{}", last.text);
    assert!(
        good.is_running(),
        "the legitimate publisher died; log:\n{}",
        good.log_tail(20)
    );
    assert_eq!(get(&server.url("/livez")).status, 200);
    server.assert_alive();
    eprintln!("hostile RTMP test took {:?}", started.elapsed());
}

/// `createStream` then `publish` of `key` on stream 1, as one write.
fn create_stream_and_publish(key: &str) -> Vec<u8> {
    let mut b = command(
        3,
        0,
        &[Amf::Str("createStream".into()), Amf::Num(2.0), Amf::Null],
    );
    b.extend(command(
        8,
        1,
        &[
            Amf::Str("publish".into()),
            Amf::Num(3.0),
            Amf::Null,
            Amf::Str(key.into()),
            Amf::Str("live".into()),
        ],
    ));
    b
}

/// Connections of the refused-publish attack: more than the 8 that would fill the 256 MiB
/// budget at 32 MiB each if the headers behind a refused `publish` were charged.
const REFUSED_PUBLISH_ATTACKS: usize = 12;

/// `publish` with an invalid key and, in the same write, four first chunks on different
/// chunk streams each announcing an 8 MiB video message (~560 bytes that claim 32 MiB);
/// then nothing more. Returns the connection, still open on our side.
fn refused_publish_with_huge_headers(addr: SocketAddr) -> Raw {
    let mut raw = Raw::connect(addr);
    raw.handshake();
    raw.connect_app("live");
    let mut b = create_stream_and_publish("bad$key");
    for csid in 4..8u8 {
        b.extend(rtmp_chunks(
            csid,
            rtmp_type::VIDEO,
            1,
            CLAIM as u32,
            &[0x55; 128],
            RTMP_DEFAULT_CHUNK_SIZE,
        ));
    }
    raw.s.write_all(&b).unwrap();
    raw
}

#[test]
fn headers_behind_a_refused_publish_are_parsed_as_a_nobodys_and_close_the_connection() {
    let mut server = Server::start(&["--max-connections-per-ip", "40"]);
    let mut good = publish_ffmpeg(
        Media::H264Aac,
        &format!("rtmp://{}/live/good", server.rtmp),
        &Publish::forever(),
    );
    let url = server.playlist_url("good");
    let first = wait_playlist(&url, Duration::from_secs(25), "the good stream", |pl| {
        !pl.segments.is_empty()
    });
    let pid = server.proc.pid();
    let rss_before = rss_kib(pid);

    // The attack connections send nothing more and keep their end open: only the server
    // can end them, and it must do so at once (the headers pass the 64 KiB before-publish
    // limit once the publish is refused), not after the 20 s pre-publish deadline while
    // charging 32 MiB each to the shared budget.
    let since = Instant::now();
    let mut attacks: Vec<Raw> = (0..REFUSED_PUBLISH_ATTACKS)
        .map(|_| refused_publish_with_huge_headers(server.rtmp))
        .collect();
    for raw in &mut attacks {
        raw.expect_closed(
            Duration::from_secs(8),
            "a refused publish with 32 MiB of headers behind it",
        );
    }
    eprintln!(
        "{REFUSED_PUBLISH_ATTACKS} refused-publish attacks closed within {:?}; RSS {rss_before} → {} KiB",
        since.elapsed(),
        rss_kib(pid)
    );
    wait_rtmp_errors(
        &server,
        "prepublish_buffer",
        REFUSED_PUBLISH_ATTACKS as f64,
        Duration::from_secs(5),
    );
    assert_eq!(
        rtmp_reason(&server, "tidegate_publish_refused", "bad_key"),
        REFUSED_PUBLISH_ATTACKS as f64,
        "every attack connection's publish was answered before the headers behind it were parsed"
    );
    assert_eq!(rtmp_errors(&server, "timeout"), 0.0);
    assert_eq!(rtmp_errors(&server, "buffer_total"), 0.0);

    // Legitimate publishers are untouched: the new one is accepted, the old one plays on.
    let mut late = Raw::connect(server.rtmp);
    assert_eq!(late.publish("late"), "NetStream.Publish.Start");
    wait_playlist(
        &url,
        Duration::from_secs(15),
        "the good stream to keep growing",
        |pl| pl.next_msn() >= first.next_msn() + 2,
    );
    assert!(
        good.is_running(),
        "the legitimate publisher died; log:\n{}",
        good.log_tail(20)
    );
    server.assert_alive();
}

#[test]
fn a_connection_that_trickles_bytes_and_never_publishes_is_closed_at_twice_the_handshake_timeout() {
    let mut server = Server::start(&["--rtmp-handshake-timeout", "2s"]);
    let since = Instant::now();
    let mut raw = Raw::connect(server.rtmp);
    raw.handshake();
    raw.connect_app("live");
    // One byte a second of ping requests, forever: every read moves the last-input time,
    // which must not move the pre-publish deadline (4 s after accept).
    let trickle = ping();
    raw.s
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let closed_after = 'trickle: {
        for b in trickle.iter().cycle() {
            assert!(
                since.elapsed() < Duration::from_secs(20),
                "a trickling connection that never published was held for 20 s (deadline 4 s)"
            );
            if raw.s.write_all(&[*b]).is_err() {
                break 'trickle since.elapsed();
            }
            let until = Instant::now() + Duration::from_secs(1);
            while Instant::now() < until {
                match raw.s.read(&mut buf) {
                    Ok(0) => break 'trickle since.elapsed(),
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break 'trickle since.elapsed(),
                }
            }
        }
        unreachable!("the trickle is endless");
    };
    eprintln!("trickling connection closed {closed_after:?} after connect");
    assert!(
        closed_after >= Duration::from_secs(3),
        "closed after {closed_after:?}, before its 4 s deadline"
    );
    wait_rtmp_errors(&server, "timeout", 1.0, Duration::from_secs(5));
    server.assert_alive();
}
