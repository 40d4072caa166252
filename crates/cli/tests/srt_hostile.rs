//! Hostile SRT input: random datagrams, truncated packets, a handshake flood from many source
//! ports and a peer that stops answering mid-stream; packets forged with a live connection's
//! socket ID from another port; a flood of bad-cookie and refused handshakes; callers refused
//! for each rule. Throughout, a live SRT stream on the same port keeps growing, `/livez`
//! answers, the worker's memory stays bounded, every refusal is counted, and the log stays
//! short.

use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use tidegate_testkit::hostile::{rss_kib, Rng};
use tidegate_testkit::*;

fn ffmpeg_srt(addr: SocketAddr, key: &str) -> Proc {
    ffmpeg_srt_url(&format!(
        "srt://{addr}?streamid={key}&pkt_size=1316&latency=200000"
    ))
}

fn ffmpeg_srt_url(url: &str) -> Proc {
    ffmpeg_ts_loop("ffmpeg-srt", url)
}

/// An SRT v4 induction handshake (what a caller sends first) with socket id `sid`.
fn induction(sid: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&0x8000_0000u32.to_be_bytes()); // control, type handshake
    p.extend_from_slice(&0u32.to_be_bytes()); // type-specific
    p.extend_from_slice(&0u32.to_be_bytes()); // timestamp
    p.extend_from_slice(&0u32.to_be_bytes()); // destination socket id: the listener
    p.extend_from_slice(&4u32.to_be_bytes()); // version
    p.extend_from_slice(&0u16.to_be_bytes()); // encryption
    p.extend_from_slice(&2u16.to_be_bytes()); // extension: UDT_DGRAM
    p.extend_from_slice(&1234u32.to_be_bytes()); // initial sequence number
    p.extend_from_slice(&1500u32.to_be_bytes()); // MTU
    p.extend_from_slice(&8192u32.to_be_bytes()); // flow window
    p.extend_from_slice(&1u32.to_be_bytes()); // handshake type: induction
    p.extend_from_slice(&sid.to_be_bytes()); // socket id
    p.extend_from_slice(&0u32.to_be_bytes()); // SYN cookie
    p.extend_from_slice(&[127, 0, 0, 1]);
    p.extend_from_slice(&[0; 12]);
    p
}

#[test]
fn hostile_datagrams_floods_and_silent_peers_leave_a_live_stream_alone() {
    let mut server = Server::start(&["--reconnect-window", "30s"]);
    let url = server.playlist_url("good");
    let mut good = ffmpeg_srt(server.srt, "good");
    let live = live_fmp4();
    wait_playlist(&url, Duration::from_secs(25), "the good stream", |pl| {
        !pl.segments.is_empty()
    });
    let mut watch = Watch::default();
    watch.observe(&url, &live);
    let pid = server.proc.pid();
    let rss_before = rss_kib(pid);

    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    let mut grew = 0;
    let mut last_msn = watch.last.as_ref().map_or(0, |p| p.next_msn());
    for round in 0..6 {
        // Random datagrams, including ones that look like SRT data and control packets
        // addressed to random socket ids (and to the good connection's neighbourhood).
        for _ in 0..3000 {
            let len = (rng.next_u64() % 1500) as usize;
            let mut d: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if round % 2 == 0 && d.len() >= 16 {
                d[0] |= 0x80; // control packets
            }
            let _ = attacker.send_to(&d, server.srt);
        }
        // Truncated packets: every prefix of a real induction.
        let hs = induction(0x1000 + round);
        for n in 0..hs.len() {
            let _ = attacker.send_to(&hs[..n], server.srt);
        }
        // A handshake flood from many source ports (each answered statelessly).
        for i in 0..50u32 {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            for j in 0..20u32 {
                let _ = s.send_to(&induction(i * 100 + j + 1), server.srt);
            }
        }
        thread::sleep(Duration::from_millis(700));
        let pl = watch.observe(&url, &live);
        if pl.next_msn() > last_msn {
            grew += 1;
            last_msn = pl.next_msn();
        }
        assert_eq!(get(&server.url("/livez")).status, 200);
        server.assert_alive();
    }
    assert!(
        grew >= 2,
        "the live stream must keep growing under attack ({grew} of 6 rounds grew, {:?})",
        started.elapsed()
    );

    // A peer that stops answering mid-stream: the server times it out (peer idle) and its
    // stream goes to the reconnect window; the good stream is untouched.
    let mut silent = ffmpeg_srt(server.srt, "silent");
    let silent_url = server.playlist_url("silent");
    wait_playlist(
        &silent_url,
        Duration::from_secs(25),
        "the silent stream",
        |pl| !pl.segments.is_empty(),
    );
    silent.signal(libc_sigstop());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = server.log_text();
        if log.contains("peer idle timeout") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the silent peer was never timed out; log:\n{}",
            server.proc.log_tail(40)
        );
        thread::sleep(Duration::from_millis(300));
    }
    silent.kill();
    let before = watch.observe(&url, &live).next_msn();
    let deadline = Instant::now() + Duration::from_secs(15);
    while watch.observe(&url, &live).next_msn() < before + 1 {
        assert!(Instant::now() < deadline, "the good stream stopped");
        thread::sleep(Duration::from_millis(500));
    }
    assert!(good.is_running());

    let rss_after = rss_kib(pid);
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB under hostile input"
    );
    let metrics = server.metrics();
    for reason in ["malformed", "unknown_socket"] {
        assert!(
            counter(
                &metrics,
                "tidegate_srt_packets_ignored_total",
                &format!("reason=\"{reason}\"")
            ) > 0.0,
            "random SRT input must be counted as {reason}:\n{metrics}"
        );
    }
    good.kill();
}

fn libc_sigstop() -> i32 {
    19
}

/// The value of the sample `name{labels}` in a metrics exposition (0 when absent).
fn counter(metrics: &str, name: &str, labels: &str) -> f64 {
    let head = format!("{name}{{{labels}}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&head))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Waits (up to 20 s) until `counter(name{labels})` is at least `min`; returns the metrics.
fn wait_counter(server: &Server, name: &str, labels: &str, min: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = server.metrics();
        if counter(&metrics, name, labels) >= min {
            return metrics;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{{{labels}}} never reached {min}:\n{metrics}\nlog:\n{}",
            server.proc.log_tail(30)
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// The server's socket ID of the live SRT connection of stream `key` (what every packet the
/// publisher sends carries, in clear text), from the "srt: publishing" log line.
fn live_socket_id(server: &Server, key: &str) -> u32 {
    let log = server.log_text();
    let stream = format!("stream=default/{key} ");
    log.lines()
        .rev()
        .filter(|l| l.contains("srt: publishing") && l.contains(&stream))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("socket=")))
        .find_map(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `srt: publishing` line with a socket id for {key}:\n{log}"))
}

/// An SRT control packet of `ctype` to `dest` with `cif` after the 16-byte header.
fn control(ctype: u16, type_specific: u32, dest: u32, cif: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(16 + cif.len());
    p.extend_from_slice(&(0x8000 | ctype).to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&type_specific.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes()); // timestamp
    p.extend_from_slice(&dest.to_be_bytes());
    p.extend_from_slice(cif);
    p
}

/// An SRT data packet to `dest`: sequence `seq`, one whole message of MPEG-TS-looking bytes.
fn data_packet(dest: u32, seq: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(16 + 1316);
    p.extend_from_slice(&(seq & 0x7FFF_FFFF).to_be_bytes());
    p.extend_from_slice(&0xC000_0001u32.to_be_bytes()); // PP=11 (solo), message 1
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&dest.to_be_bytes());
    for i in 0..7u8 {
        p.push(0x47);
        p.extend(std::iter::repeat_n(i, 187));
    }
    p
}

/// An HSv5 conclusion from caller socket `sid` with SYN cookie `cookie` and stream ID
/// `stream_id` (HSREQ of a libsrt 1.5 caller, no encryption).
fn conclusion(sid: u32, cookie: u32, stream_id: &str) -> Vec<u8> {
    let mut cif = Vec::with_capacity(128);
    cif.extend_from_slice(&5u32.to_be_bytes()); // version
    cif.extend_from_slice(&0u16.to_be_bytes()); // encryption
    cif.extend_from_slice(&5u16.to_be_bytes()); // extensions: HSREQ | CONFIG
    cif.extend_from_slice(&1234u32.to_be_bytes()); // initial sequence number
    cif.extend_from_slice(&1500u32.to_be_bytes()); // MTU
    cif.extend_from_slice(&8192u32.to_be_bytes()); // flow window
    cif.extend_from_slice(&0xFFFF_FFFFu32.to_be_bytes()); // conclusion
    cif.extend_from_slice(&sid.to_be_bytes());
    cif.extend_from_slice(&cookie.to_be_bytes());
    cif.extend_from_slice(&[127, 0, 0, 1]);
    cif.extend_from_slice(&[0; 12]);
    // HSREQ: version 1.5.0, TSBPD/TLPKTDROP/NAK/REXMIT flags, 120 ms both ways.
    cif.extend_from_slice(&1u16.to_be_bytes());
    cif.extend_from_slice(&3u16.to_be_bytes());
    cif.extend_from_slice(&0x0001_0500u32.to_be_bytes());
    cif.extend_from_slice(&0x3Bu32.to_be_bytes());
    cif.extend_from_slice(&((120u32 << 16) | 120).to_be_bytes());
    // Stream ID: zero-padded 4-byte words, each byte-reversed (as libsrt writes it).
    let mut sid_bytes = stream_id.as_bytes().to_vec();
    sid_bytes.resize(sid_bytes.len().div_ceil(4) * 4, 0);
    for w in sid_bytes.chunks_exact_mut(4) {
        w.reverse();
    }
    cif.extend_from_slice(&5u16.to_be_bytes());
    cif.extend_from_slice(&((sid_bytes.len() / 4) as u16).to_be_bytes());
    cif.extend_from_slice(&sid_bytes);
    control(0, 0, 0, &cif)
}

/// One full handshake from a fresh UDP socket: induction, the listener's cookie, then a
/// conclusion for `stream_id`. Returns the socket and the handshake type the listener
/// answered the conclusion with (`0xFFFF_FFFF` accepted, `1000 + code` rejected).
fn handshake(server: SocketAddr, sid: u32, stream_id: &str) -> (UdpSocket, u32) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1500];
    s.send_to(&induction(sid), server).unwrap();
    let n = s.recv(&mut buf).expect("no answer to an induction");
    assert!(n >= 48, "short induction answer");
    let cookie = u32::from_be_bytes([buf[44], buf[45], buf[46], buf[47]]);
    s.send_to(&conclusion(sid, cookie, stream_id), server)
        .unwrap();
    let n = s.recv(&mut buf).expect("no answer to a conclusion");
    assert!(n >= 40, "short conclusion answer");
    let hs_type = u32::from_be_bytes([buf[36], buf[37], buf[38], buf[39]]);
    (s, hs_type)
}

#[test]
fn packets_forged_with_a_live_socket_id_from_another_port_are_ignored_and_counted() {
    let server = Server::start(&[]);
    let url = server.playlist_url("good");
    let mut good = ffmpeg_srt(server.srt, "good");
    wait_playlist(&url, Duration::from_secs(25), "the good stream", |pl| {
        !pl.segments.is_empty()
    });
    let victim = live_socket_id(&server, "good");
    let mut watch = Watch::default();
    let before = watch.observe(&url, &live_fmp4()).next_msn();

    // What an on-path observer can send: the live connection's socket ID, from its own port.
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut ack = Vec::new();
    for v in [1u32, 10_000, 2_000, 8192, 1000, 100_000, 1_000_000] {
        ack.extend_from_slice(&v.to_be_bytes());
    }
    let mut forged = 0u32;
    for i in 0..50u32 {
        for p in [
            control(5, 0, victim, &[0; 4]), // SHUTDOWN
            control(5, 0, victim, &[]),     // SHUTDOWN, the bare 16 bytes
            control(2, i, victim, &ack),    // ACK
            data_packet(victim, i * 7919),  // data
        ] {
            attacker.send_to(&p, server.srt).unwrap();
            forged += 1;
        }
    }
    // The same to a socket ID nobody has.
    for _ in 0..10 {
        attacker
            .send_to(&control(5, 0, victim ^ 0x5a5a_5a5a, &[]), server.srt)
            .unwrap();
    }
    let metrics = wait_counter(
        &server,
        "tidegate_srt_packets_ignored_total",
        "reason=\"wrong_peer\"",
        f64::from(forged),
    );
    assert!(
        counter(
            &metrics,
            "tidegate_srt_packets_ignored_total",
            "reason=\"unknown_socket\""
        ) >= 10.0,
        "packets for an unknown socket id must be counted:\n{metrics}"
    );

    // The publisher never noticed: still publishing, still growing, no "peer shutdown".
    wait_playlist(
        &url,
        Duration::from_secs(20),
        "the good stream after the forgery",
        |pl| pl.next_msn() >= before + 2,
    );
    assert!(good.is_running(), "the forged packets ended the publisher");
    let log = server.log_text();
    assert!(
        !log.contains("peer shutdown") && !log.contains("connection closed"),
        "a forged SHUTDOWN closed the live connection:\n{}",
        server.proc.log_tail(30)
    );
    assert_eq!(
        live_socket_id(&server, "good"),
        victim,
        "the publisher had to reconnect"
    );
    good.kill();
}

#[test]
fn a_handshake_flood_is_counted_capped_and_keeps_the_log_short() {
    let server = Server::start(&["--max-connections-per-ip", "4"]);
    let url = server.playlist_url("good");
    let mut good = ffmpeg_srt(server.srt, "good");
    wait_playlist(&url, Duration::from_secs(25), "the good stream", |pl| {
        !pl.segments.is_empty()
    });
    let mut watch = Watch::default();
    let before = watch.observe(&url, &live_fmp4()).next_msn();
    let lines_before = server.log_text().lines().count();
    let started = Instant::now();

    // 2,000 induction + conclusion pairs with random socket IDs and guessed cookies.
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..2_000 {
        let sid = (rng.next_u64() as u32 & 0x3FFF_FFFF) | 1;
        let _ = raw.send_to(&induction(sid), server.srt);
        let _ = raw.send_to(&conclusion(sid, rng.next_u64() as u32, "flood"), server.srt);
    }
    // 300 complete handshakes that are refused (players: m=request), each a WARN line
    // without the rate limit.
    for i in 0..300u32 {
        let (_s, answer) = handshake(server.srt, 0x100 + i, &format!("#!::r=live/p{i},m=request"));
        assert_eq!(
            answer,
            1000 + 1405,
            "m=request must be refused with SRT_REJX_BAD_MODE"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "the flood took {:?}",
        started.elapsed()
    );

    // Connection caps: the publisher holds one of this address's 4 slots; three more
    // callers are admitted (and held: nothing is sent, so they time out later), the next
    // ones are refused with SRT_REJX_OVERLOAD.
    let mut held = Vec::new();
    for i in 0..3u32 {
        let (s, answer) = handshake(server.srt, 0x9000 + i, &format!("held{i}"));
        assert_eq!(
            answer, 0xFFFF_FFFF,
            "caller {i} under the cap must be accepted"
        );
        held.push(s);
    }
    for i in 0..2u32 {
        let (_s, answer) = handshake(server.srt, 0x9100 + i, &format!("over{i}"));
        assert_eq!(
            answer,
            1000 + 1402,
            "a caller over the per-IP cap gets SRT_REJX_OVERLOAD"
        );
    }

    let metrics = wait_counter(
        &server,
        "tidegate_srt_packets_ignored_total",
        "reason=\"bad_cookie\"",
        1_900.0,
    );
    for (name, labels, min) in [
        (
            "tidegate_publish_refused_total",
            "protocol=\"srt\",tenant=\"unknown\",reason=\"playback_refused\"",
            300.0,
        ),
        (
            "tidegate_connections_refused_total",
            "protocol=\"srt\",reason=\"per_source\"",
            2.0,
        ),
        ("tidegate_log_lines_suppressed_total", "area=\"srt\"", 1.0),
    ] {
        assert!(
            counter(&metrics, name, labels) >= min,
            "{name}{{{labels}}} must be at least {min}:\n{metrics}"
        );
    }

    // The legitimate stream kept going.
    wait_playlist(
        &url,
        Duration::from_secs(20),
        "the good stream after the flood",
        |pl| pl.next_msn() >= before + 2,
    );
    assert!(good.is_running());
    let log = server.log_text();
    let added = log.lines().count() - lines_before;
    assert!(
        added < 200,
        "the flood wrote {added} log lines:\n{}",
        server.proc.log_tail(40)
    );
    assert!(
        log.contains("srt: suppressed"),
        "the suppressed lines must be summed up"
    );
    drop(held);
    good.kill();
}

/// `srt-live-transmit` calling `url` (sending whatever arrives on a UDP port nobody writes
/// to) for at most 4 s.
fn srt_live_transmit(name: &str, url: &str) -> Proc {
    let mut cmd = std::process::Command::new(require_cmd("srt-live-transmit"));
    cmd.arg("-t:4")
        .arg(format!("udp://127.0.0.1:{}", free_udp_port()))
        .arg(url);
    Proc::spawn(name, cmd)
}

#[test]
fn each_refused_caller_is_told_apart_in_the_log_and_the_metrics() {
    let pass = "correcthorsebattery";
    let server = Server::start(&["--srt-passphrase", pass]);
    let url = server.playlist_url("good");
    let mut good = ffmpeg_srt_url(&format!(
        "srt://{}?streamid=good&passphrase={pass}&pkt_size=1316&latency=200000",
        server.srt
    ));
    wait_playlist(&url, Duration::from_secs(25), "the good stream", |pl| {
        !pl.segments.is_empty()
    });
    let srt = server.srt;
    let cases = [
        (
            "missing_streamid",
            format!("srt://{srt}?passphrase={pass}"),
            "no stream id",
            None,
        ),
        (
            "playback_refused",
            format!("srt://{srt}?streamid=#!::r=live/good,m=request&passphrase={pass}"),
            "m=request",
            None,
        ),
        (
            "bad_key",
            format!("srt://{srt}?streamid=bad!key&passphrase={pass}"),
            "[A-Za-z0-9._-]",
            None,
        ),
        (
            "passphrase",
            format!("srt://{srt}?streamid=secretkey42&passphrase=wronghorsebattery"),
            "wrong passphrase",
            Some("secretkey42"),
        ),
        (
            "passphrase",
            format!("srt://{srt}?streamid=secretkey43"),
            "does not encrypt",
            Some("secretkey43"),
        ),
        (
            "busy",
            format!("srt://{srt}?streamid=good&passphrase={pass}"),
            "already live",
            None,
        ),
    ];
    for (i, (reason, caller_url, rule, key)) in cases.iter().enumerate() {
        // Refused before the key resolved to a tenant: `unknown`; after (open mode): `default`.
        let tenant = if matches!(*reason, "passphrase" | "busy") {
            "default"
        } else {
            "unknown"
        };
        let labels = format!("protocol=\"srt\",tenant=\"{tenant}\",reason=\"{reason}\"");
        let had = counter(&server.metrics(), "tidegate_publish_refused_total", &labels);
        let mut caller = srt_live_transmit(&format!("slt-{reason}"), caller_url);
        wait_counter(
            &server,
            "tidegate_publish_refused_total",
            &labels,
            had + 1.0,
        );
        caller.kill();
        let log = server.log_text();
        let line = log
            .lines()
            .find(|l| {
                l.contains("srt: refused")
                    && l.contains(&format!("reason=\"{reason}\""))
                    && l.contains(rule)
            })
            .unwrap_or_else(|| {
                panic!("case {i}: no refusal line naming `{rule}` for {reason}:\n{log}")
            });
        if let Some(key) = key {
            assert!(
                !log.contains(key),
                "the refused key {key} is in the log:\n{log}"
            );
            assert!(
                line.contains(&key[..4]),
                "the refusal line shows no hint of the key: {line}"
            );
        }
        // Each caller retries a few times at once: leave the per-second log budget to the
        // next one.
        thread::sleep(Duration::from_millis(1100));
    }
    assert!(
        good.is_running(),
        "a refused caller touched the live publisher"
    );
    assert_eq!(get(&server.playlist_url("secretkey42")).status, 404);
    good.kill();
}

#[test]
fn rtmp_and_srt_share_the_ingest_connection_and_publisher_caps() {
    let server = Server::start(&[
        "--max-connections-per-ip",
        "3",
        "--max-publishers",
        "1",
        "--rtmp-handshake-timeout",
        "60s",
    ]);
    let refused = |reason: &str| {
        counter(
            &server.metrics(),
            "tidegate_connections_refused_total",
            &format!("protocol=\"srt\",reason=\"{reason}\""),
        )
    };
    // An RTMP publisher takes one connection of this address and the worker's only
    // publisher slot: an SRT caller is refused for the publisher cap.
    let mut rtmp = publish_ffmpeg(
        Media::H264Aac,
        &server.rtmp_url("rtmp-pub"),
        &Publish::forever(),
    );
    wait_playlist(
        &server.playlist_url("rtmp-pub"),
        Duration::from_secs(25),
        "the RTMP stream",
        |pl| !pl.segments.is_empty(),
    );
    let (_s, answer) = handshake(server.srt, 0x7000, "srt-pub");
    assert_eq!(
        answer,
        1000 + 1402,
        "a caller past --max-publishers gets SRT_REJX_OVERLOAD"
    );
    wait_counter(
        &server,
        "tidegate_connections_refused_total",
        "protocol=\"srt\",reason=\"max_publishers\"",
        1.0,
    );

    // Two more RTMP connections (held open, saying nothing) fill the address's 3 ingest
    // connections: the next SRT caller from it is refused for its share.
    let held: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(server.rtmp).unwrap())
        .collect();
    wait_counter(
        &server,
        "tidegate_connections_total",
        "protocol=\"rtmp\"",
        3.0,
    );
    let (_s, answer) = handshake(server.srt, 0x7001, "srt-pub");
    assert_eq!(
        answer,
        1000 + 1402,
        "a caller past --max-connections-per-ip gets SRT_REJX_OVERLOAD"
    );
    assert_eq!(refused("per_source"), 1.0, "{}", server.metrics());
    assert_eq!(refused("max_publishers"), 1.0);

    // The RTMP connections give their places back (once the server has read their end):
    // then a caller meets the publisher cap again, not the connection cap.
    drop(held);
    let mut sid = 0x7100;
    wait_for(
        "an SRT caller refused for the publisher cap again",
        Duration::from_secs(15),
        Duration::from_millis(300),
        || {
            sid += 1;
            handshake(server.srt, sid, "srt-pub");
            (refused("max_publishers") >= 2.0).then_some(())
        },
    );
    assert!(rtmp.is_running(), "the RTMP publisher was disturbed");
    rtmp.kill();
}
