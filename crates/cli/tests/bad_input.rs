//! Hostile or broken RTMP peers end only their own connection: garbage bytes, a handshake
//! that never completes, an oversized chunk message, a peer that stalls after the
//! handshake, a malformed AMF command. For each, the server closes that connection, logs
//! it, counts it in a `tidegate_*connection*{reason=...}` metric, keeps `/livez` at 200,
//! and a concurrent ffmpeg publisher on another key keeps streaming.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tidegate_testkit::*;

/// The handshake timeout the server runs with here.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.rtmp).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// C0+C1 (plain handshake: zero version field), read S0+S1+S2, send C2 (echo of S1).
fn handshake(s: &mut TcpStream) {
    let mut c0c1 = vec![3u8];
    c0c1.extend_from_slice(&[0; 8]);
    c0c1.extend((0..1528u32).map(|i| (i * 7 + 3) as u8));
    s.write_all(&c0c1).unwrap();
    let mut s0s1s2 = vec![0u8; 1 + 1536 + 1536];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.read_exact(&mut s0s1s2).expect("server handshake reply");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert_eq!(s0s1s2[0], 3, "S0 version");
    s.write_all(&s0s1s2[1..1537]).unwrap();
}

/// Reads until the server closes the connection; panics if it has not within `within`.
/// Returns how long it took from `since`.
fn expect_closed(s: &mut TcpStream, since: Instant, within: Duration, what: &str) -> Duration {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return since.elapsed(),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return since.elapsed(), // reset counts as closed
        }
        if since.elapsed() > within {
            panic!("{what}: the server did not close the connection within {within:?}");
        }
    }
}

/// One RTMP chunk, format 0 on chunk stream 3, message stream 0, carrying `payload` of a
/// message announced as `announced_len` bytes of `msg_type`, split at 128-byte chunks.
fn chunk_message(msg_type: u8, announced_len: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x03, 0, 0, 0];
    out.extend_from_slice(&announced_len.to_be_bytes()[1..]);
    out.push(msg_type);
    out.extend_from_slice(&[0, 0, 0, 0]);
    for (i, part) in payload.chunks(128).enumerate() {
        if i > 0 {
            out.push(0xC3);
        }
        out.extend_from_slice(part);
    }
    out
}

/// Runs `case` against a server that also has a healthy ffmpeg publisher on another key,
/// then checks the aftermath.
fn with_bystander(what: &str, case: impl FnOnce(&Server)) {
    let mut server = Server::start(&["--rtmp-handshake-timeout", "1s"]);
    let url = server.playlist_url("bystander");
    let mut good = publish_ffmpeg(
        Media::H264Aac,
        &server.rtmp_url("bystander"),
        &Publish::forever(),
    );
    let mut watch = Watch::default();
    wait_playlist(
        &url,
        Duration::from_secs(25),
        "the bystander's first segment",
        |pl| !pl.segments.is_empty(),
    );
    let live = Expect {
        endlist: Some(false),
        fmp4: None,
        min_segments: 1,
    };
    let before = watch.observe(&url, &live);
    let rejected_before = rejected_connections(&server.metrics());
    let log_before = server.log_text().len();

    case(&server);

    wait_for(
        &format!("{what}: a tidegate_*connection*{{reason=...}} metric to increase"),
        Duration::from_secs(10),
        Duration::from_millis(250),
        || (rejected_connections(&server.metrics()) > rejected_before).then_some(()),
    );
    let log = server.log_text();
    assert!(
        log.len() > log_before,
        "{what}: the server logged nothing about it"
    );
    assert_eq!(get(&server.url("/livez")).status, 200, "{what}: /livez");
    server.assert_alive();
    assert!(
        good.is_running(),
        "{what}: the bystander publisher died; log:\n{}",
        good.log_tail(20)
    );
    let grown = wait_playlist(
        &url,
        Duration::from_secs(15),
        "the bystander's playlist to keep growing",
        |pl| pl.next_msn() >= before.next_msn() + 2,
    );
    let grown = watch.accept(grown);
    assert_eq!(grown.discontinuities(), 0, "{what}: {}", grown.text);
}

#[test]
fn garbage_bytes() {
    with_bystander("garbage", |server| {
        let mut s = connect(server);
        let t = Instant::now();
        let mut junk = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        junk.extend((0..4000u32).map(|i| (i * 31 + 17) as u8));
        let _ = s.write_all(&junk); // the server may close before it has read it all
        expect_closed(&mut s, t, Duration::from_secs(5), "garbage");
    });
}

#[test]
fn handshake_never_completes() {
    with_bystander("incomplete handshake", |server| {
        // Sends C0+C1 but never C2.
        let mut s = connect(server);
        let t = Instant::now();
        let mut c0c1 = vec![3u8];
        c0c1.extend_from_slice(&[0; 1536]);
        s.write_all(&c0c1).unwrap();
        let took = expect_closed(&mut s, t, Duration::from_secs(6), "no C2");
        assert!(
            took >= HANDSHAKE_TIMEOUT.mul_f32(0.8),
            "closed after {took:?}, before the handshake timeout"
        );
        // Sends nothing at all.
        let mut silent = connect(server);
        let t = Instant::now();
        expect_closed(&mut silent, t, Duration::from_secs(6), "silent peer");
    });
}

#[test]
fn oversized_chunk_message() {
    with_bystander("oversized message", |server| {
        let mut s = connect(server);
        handshake(&mut s);
        let t = Instant::now();
        // An AMF0 command announced as 16 MiB - 1 (the largest a chunk header can say).
        let body = vec![0x05u8; 128 * 64];
        let _ = s.write_all(&chunk_message(20, 0x00FF_FFFF, &body));
        expect_closed(&mut s, t, Duration::from_secs(5), "oversized message");
    });
}

#[test]
fn stalls_after_handshake() {
    with_bystander("stall after handshake", |server| {
        let mut s = connect(server);
        handshake(&mut s);
        let t = Instant::now();
        // Never sends `connect`. The server must not keep the socket forever.
        let took = expect_closed(&mut s, t, Duration::from_secs(15), "stalled peer");
        eprintln!("stalled peer closed after {took:?}");
    });
}

#[test]
fn malformed_amf_command() {
    with_bystander("malformed AMF", |server| {
        let mut s = connect(server);
        handshake(&mut s);
        let t = Instant::now();
        // AMF0 string marker announcing 65535 bytes, then only four.
        let payload = [0x02, 0xFF, 0xFF, b'c', b'o', b'n', b'n'];
        s.write_all(&chunk_message(20, payload.len() as u32, &payload))
            .unwrap();
        expect_closed(&mut s, t, Duration::from_secs(5), "malformed AMF");
    });
}
