//! Stream records are bounded by the streams that carried media, not by the connections a
//! peer can open: RTMP publishers that connect, publish and send nothing, and SRT callers
//! that complete the handshake and send nothing, leave no record,
//! no listing and no metric series once they are gone; an ended stream leaves the API, the
//! origin and the stores after `--ended-retention` while a live one stays; and a stream
//! that comes back after that gets segment names that cannot be the old ones.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tidegate_rtmp::{ClientConfig, ClientEvent, ClientSession};
use tidegate_testkit::*;

/// Publishers without media in the first test.
const EMPTY_PUBLISHERS: usize = 200;
/// SRT callers without media in the first test.
const EMPTY_CALLERS: usize = 50;
/// How many of them are connected at once (below any per-source connection cap).
const BATCH: usize = 40;

/// Drives a real RTMP client session (handshake, connect, createStream, publish) until the
/// server answers `NetStream.Publish.Start`, and returns the open connection: a publisher
/// that sends no media.
fn publish_without_media(addr: SocketAddr, key: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s.set_nodelay(true).unwrap();
    let config = ClientConfig {
        stream_key: key.to_owned(),
        tc_url: format!("rtmp://{addr}/live"),
        ..ClientConfig::default()
    };
    let start = Instant::now();
    let mut session = ClientSession::new(config, start);
    let mut input = BytesMut::new();
    let mut buf = [0u8; 8192];
    loop {
        while let Some(out) = session.poll_transmit() {
            s.write_all(&out).unwrap();
        }
        while let Some(ev) = session.poll_event() {
            match ev {
                ClientEvent::PublishStarted { .. } => return s,
                ClientEvent::PublishRejected { code, .. } => panic!("{key}: refused: {code}"),
                ClientEvent::Closed => panic!("{key}: session closed before publishing"),
                _ => {}
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{key}: no NetStream.Publish.Start within 20 s"
        );
        match s.read(&mut buf) {
            Ok(0) => panic!("{key}: the server closed the connection"),
            Ok(n) => {
                input.extend_from_slice(&buf[..n]);
                session.handle_input(Instant::now(), &mut input).unwrap();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                session.handle_timeout(Instant::now()).unwrap();
            }
            Err(e) => panic!("{key}: {e}"),
        }
    }
}

/// A real SRT caller (the sans-IO caller of `tidegate-srt` over a UDP socket) completes
/// the handshake with stream id `key` and sends no media; returns its socket and connection.
fn call_without_media(
    addr: SocketAddr,
    key: &str,
    n: usize,
) -> (UdpSocket, tidegate_srt::Connection) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut secret = [7u8; 32];
    secret[..8].copy_from_slice(&(n as u64 + 1).to_le_bytes());
    let mut config = tidegate_srt::CallerConfig::new(secret);
    config.stream_id = Some(key.to_owned());
    let start = Instant::now();
    let mut caller = tidegate_srt::Caller::new(start, addr, config).unwrap();
    let mut buf = [0u8; 2048];
    let conn = loop {
        let now = Instant::now();
        while let Some(d) = caller.poll_transmit(now) {
            sock.send(&d).unwrap();
        }
        if let Some(outcome) = caller.poll_outcome() {
            break outcome.unwrap_or_else(|e| panic!("{key}: handshake failed: {e}"));
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{key}: no SRT connection within 20 s"
        );
        match sock.recv(&mut buf) {
            Ok(n) => {
                let _ = caller.handle_datagram(Instant::now(), &buf[..n]);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                caller.handle_timeout(Instant::now());
            }
            Err(e) => panic!("{key}: {e}"),
        }
    };
    (sock, conn)
}

/// Closes an SRT connection with a shutdown packet.
fn close_srt(sock: UdpSocket, mut conn: tidegate_srt::Connection) {
    let now = Instant::now();
    conn.close(now);
    while let Some(d) = conn.poll_transmit(now) {
        sock.send(&d).unwrap();
    }
}

/// The stream names `/api/v1/streams` lists.
fn listed(server: &Server) -> Vec<String> {
    let r = get(&server.url("/api/v1/streams"));
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["stream"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn state_files(server: &Server) -> Vec<String> {
    let dir = server.data_dir.join("state").join("default");
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn publishers_that_send_no_media_leave_no_record() {
    // A short retention makes the sweeper's full pass (which sets the records gauge) run
    // every second.
    let mut server = Server::start(&["--ended-retention", "4s"]);
    let mut real = publish_ffmpeg(
        Media::H264Aac,
        &server.rtmp_url("real"),
        &Publish::for_secs(60),
    );
    wait_for(
        "the real stream to be listed with a segment",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let r = get(&server.playlist_url("real"));
            (r.status == 200 && r.text().contains("#EXTINF")).then_some(())
        },
    );

    for batch in 0..EMPTY_PUBLISHERS / BATCH {
        let conns: Vec<TcpStream> = (0..BATCH)
            .map(|i| publish_without_media(server.rtmp, &format!("empty-{batch}-{i}")))
            .collect();
        // While connected they are live on this worker, and listed as such.
        let names = listed(&server);
        assert!(
            names.iter().filter(|n| n.starts_with("empty-")).count() >= BATCH,
            "connected publishers are not listed: {names:?}"
        );
        drop(conns);
    }
    for i in 0..EMPTY_CALLERS {
        let key = format!("empty-srt-{i}");
        let (sock, conn) = call_without_media(server.srt, &key, i);
        if i == 0 {
            // A caller is a publisher once connected: listed while it is.
            wait_for(
                "the SRT caller to be listed",
                Duration::from_secs(10),
                Duration::from_millis(100),
                || listed(&server).contains(&key).then_some(()),
            );
        }
        close_srt(sock, conn);
    }

    let names = wait_for(
        "the publishers without media to leave the list",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || {
            let names = listed(&server);
            (!names.iter().any(|n| n.starts_with("empty-"))).then_some(names)
        },
    );
    assert_eq!(names, vec!["real".to_owned()]);
    let files = state_files(&server);
    assert_eq!(
        files,
        vec!["real.json".to_owned()],
        "records in the state directory"
    );
    assert!(
        !server.data_dir.join("media/default/empty-0-0").exists(),
        "media of a publisher that sent none"
    );
    let records = wait_for(
        "the records gauge to count the one real stream",
        Duration::from_secs(10),
        Duration::from_millis(250),
        || {
            let m = server.metrics();
            (metric_value(&m, "tidegate_stream_records") == 1.0).then_some(m)
        },
    );
    assert!(
        !records.contains("stream=\"empty-"),
        "series of streams that are gone:\n{}",
        records
            .lines()
            .filter(|l| l.contains("empty-"))
            .take(10)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        get(&server.playlist_url("empty-0-0")).status == 404,
        "a stream without media has a playlist"
    );
    real.kill();
    server.assert_alive();
}

#[test]
fn an_ended_stream_expires_after_the_retention_while_a_live_one_stays() {
    let mut server = Server::start(&["--reconnect-window", "1s", "--ended-retention", "3s"]);
    let mut stays = publish_ffmpeg(
        Media::H264Aac,
        &server.rtmp_url("stays"),
        &Publish::forever(),
    );
    let mut gone = publish_ffmpeg(
        Media::H264Aac,
        &server.rtmp_url("gone"),
        &Publish::for_secs(4),
    );
    wait_publisher_success(&mut gone, Duration::from_secs(30));
    let ended = wait_playlist(
        &server.playlist_url("gone"),
        Duration::from_secs(20),
        "the short stream to end",
        |pl| pl.endlist,
    );
    let old_epochs: Vec<u64> = ended
        .segments
        .iter()
        .filter_map(|s| segment_epoch_index(&s.uri).map(|(e, _)| e))
        .collect();
    assert!(!old_epochs.is_empty(), "{}", ended.text);
    let old_segment = resolve(&server.playlist_url("gone"), &ended.segments[0].uri);

    // The retention passes: the ended stream leaves the API, the origin and the stores.
    wait_for(
        "the ended stream to expire",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || (!listed(&server).contains(&"gone".to_owned())).then_some(()),
    );
    assert_eq!(get(&server.playlist_url("gone")).status, 404);
    assert_eq!(get(&old_segment).status, 404, "{old_segment}");
    assert!(
        !server.data_dir.join("state/default/gone.json").exists(),
        "the expired record is still there"
    );
    assert!(
        !server.data_dir.join("media/default/gone").exists(),
        "the expired stream's media directory is still there"
    );
    let metrics = server.metrics();
    assert!(
        metric_value(&metrics, "tidegate_stream_records_expired") >= 1.0,
        "expiry not counted"
    );
    assert!(
        !metrics.contains("stream=\"gone\""),
        "series of the expired stream remain"
    );
    // The live stream stays, whatever the retention.
    assert!(listed(&server).contains(&"stays".to_owned()));
    let live = fetch_playlist(&server.playlist_url("stays"), &Expect::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!live.endlist, "{}", live.text);

    // Back after its record expired: a fresh playlist whose segment names are new.
    let mut back = publish_ffmpeg(
        Media::H264Aac,
        &server.rtmp_url("gone"),
        &Publish::for_secs(4),
    );
    let fresh = wait_playlist(
        &server.playlist_url("gone"),
        Duration::from_secs(30),
        "the returning stream's first segment",
        |pl| !pl.segments.is_empty(),
    );
    for s in &fresh.segments {
        let (epoch, _) = segment_epoch_index(&s.uri).unwrap();
        assert!(
            old_epochs.iter().all(|&old| epoch > old),
            "segment {} of the returning stream does not have a newer epoch than {old_epochs:?}",
            s.uri
        );
    }
    wait_publisher_success(&mut back, Duration::from_secs(30));
    stays.kill();
    server.assert_alive();
}
