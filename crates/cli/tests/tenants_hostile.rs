//! Tenants under attack (issue #12, item 8), against the real binary:
//!
//! 1. A key guesser on 127.0.0.2 tries a couple of hundred wrong keys over RTMP (well-formed
//!    keys with a real key's id, so each costs the server its one hash): the first
//!    `--bad-key-limit` are refused as `unknown stream key`, every later one at once as
//!    `too many wrong stream keys` (counted as `too_many_bad_keys`), even its valid key and
//!    its SRT callers (1402); an SRT-only guesser on 127.0.0.4 is limited the same way.
//!    Meanwhile a legitimate ffmpeg publisher (127.0.0.1) streams on without a gap and a
//!    publisher with a valid key on 127.0.0.3 is accepted; the worker's descriptors and
//!    memory come back near their baseline and its log lines stay rate-limited.
//! 2. A flood of publishes with tenant A's valid keys from one address (more connections
//!    than `--max-connections-per-ip`) holds only that address's share of the connection
//!    slots: tenant B's publishers, from other addresses, get in and stream; the valid keys
//!    of the flood are not taken for guesses.
//!
//! 3. Over RTMPS (the RTMP driver behind TLS) the same limit holds, and ffmpeg shows why.
//!
//! Wrong, expired and other-tenant admin and playback tokens are covered by the scoped-token
//! and signed-playback tests.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidegate_testkit::hostile::*;
use tidegate_testkit::*;

const TOKEN: &str = "tenants-hostile-operator-token";

/// Wrong keys one address may try per window (`--bad-key-limit`).
const LIMIT: usize = 10;
/// The back-off, long enough that every attack below runs inside it.
const BACKOFF: &str = "90s";
/// RTMP publish attempts the guesser makes.
const GUESSES: usize = 200;
/// The longest the guesser's attack may take for the exact counts below to hold (the
/// window and the back-off are longer).
const ATTACK_MAX: Duration = Duration::from_secs(50);

/// Descriptors the worker may hold above its baseline once the guesser is done.
const FD_SLACK: usize = 24;
/// Resident memory it may hold above its baseline then.
const RSS_SLACK_KIB: u64 = 48 * 1024;

/// `method url` with the operator token and an optional JSON body: (status, body).
fn api(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    tidegate_testkit::http::api_as(TOKEN, method, url, body)
}

fn create_tenant(server: &Server, name: &str) {
    let (status, body) = api(
        "POST",
        &server.url("/api/v1/tenants"),
        Some(json!({"name": name})),
    );
    assert_eq!(status, 201, "{body}");
}

/// A new key of `tenant` for `stream`.
fn new_key(server: &Server, tenant: &str, stream: &str) -> String {
    let (status, body) = api(
        "POST",
        &server.url(&format!("/api/v1/tenants/{tenant}/keys")),
        Some(json!({"stream": stream})),
    );
    assert_eq!(status, 201, "{body}");
    body["key"].as_str().unwrap().to_owned()
}

/// Wrong guess `i` at `key`: the same key id, the secret's last 8 hex digits replaced.
fn guess(key: &str, i: usize) -> String {
    let g = format!("{}{:08x}", &key[..key.len() - 8], i);
    if g == key {
        format!("{}{:08x}", &key[..key.len() - 8], i + 1)
    } else {
        g
    }
}

/// What the server answered a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Started,
    UnknownKey,
    TooManyBadKeys,
    /// Anything else: what was seen.
    Other(String),
}

/// One RTMP publish of `key` from `from`: connect, handshake, `connect`/`createStream`/
/// `publish`, then the server's answer (its status description) and the connection, while
/// it is open (drop it to close it).
fn rtmp_attempt(from: Ipv4Addr, rtmp: SocketAddr, key: &str) -> (Answer, Option<TcpStream>) {
    let mut s = match tcp_from(from, rtmp, None) {
        Ok(s) => s,
        Err(e) => return (Answer::Other(format!("connect: {e}")), None),
    };
    if let Err(e) = rtmp_handshake(&mut s, Duration::from_secs(10)) {
        return (Answer::Other(format!("handshake: {e}")), None);
    }
    if let Err(e) = s.write_all(&rtmp_publish_commands(rtmp, key)) {
        return (Answer::Other(format!("commands: {e}")), None);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&seen);
        if text.contains("NetStream.Publish.Start") {
            return (Answer::Started, Some(s));
        }
        if text.contains("unknown stream key") {
            return (Answer::UnknownKey, Some(s));
        }
        if text.contains("too many wrong stream keys") {
            return (Answer::TooManyBadKeys, Some(s));
        }
        // Another refusal (its status and description come in one small message).
        if text.contains("NetStream.Publish.") {
            let at = text.find("NetStream.Publish.").unwrap_or(0);
            let what: String = text[at..].chars().take(120).collect();
            return (Answer::Other(what), Some(s));
        }
        if Instant::now() > deadline {
            return (Answer::Other(format!("no answer: {text:?}")), Some(s));
        }
        match s.read(&mut buf) {
            Ok(0) => return (Answer::Other(format!("closed: {text:?}")), None),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return (Answer::Other(format!("read: {e}")), None),
        }
    }
}

/// `tidegate_publish_refused_total` for `protocol` and `reason`.
fn refused(metrics: &str, protocol: &str, reason: &str) -> f64 {
    metric_sum(
        metrics,
        "tidegate_publish_refused",
        &[("protocol", protocol), ("reason", reason)],
    )
}

/// How a rejection with SRT reason `code` (e.g. 1401, `SRT_REJX_UNAUTHORIZED`) looks in the
/// handshake's type field: 1000 + the code.
fn srt_rejected(code: u32) -> SrtAnswer {
    SrtAnswer::Rejected(1000 + code)
}

/// An SRT caller from `from` asking to publish `sid`: connected, or the rejection code.
fn srt_attempt(from: Ipv4Addr, srt: SocketAddr, sid: &str, rng: &mut Rng) -> SrtAnswer {
    let sock: UdpSocket = udp_from(from);
    srt_connect_silent(&sock, srt, rng.nonzero_u32(), sid)
}

#[test]
fn a_key_guesser_is_refused_cheaply_while_valid_keys_from_other_addresses_stream_on() {
    let server = Server::start(&[
        "--admin-token",
        TOKEN,
        "--bad-key-limit",
        &LIMIT.to_string(),
        "--bad-key-window",
        "90s",
        "--bad-key-backoff",
        BACKOFF,
    ]);
    let pid = server.proc.pid();
    create_tenant(&server, "acme");
    create_tenant(&server, "beta");
    let key = new_key(&server, "acme", "main");
    let beta_key = new_key(&server, "beta", "cam");

    // The legitimate publisher (127.0.0.1) and a viewer that keeps looking.
    let mut legit = publish_ffmpeg(
        Media::H264Aac,
        &format!("rtmp://{}/live/{key}", server.rtmp),
        &Publish::forever(),
    );
    let url = server.url("/hls/acme/main/index.m3u8");
    wait_playlist(&url, Duration::from_secs(30), "acme/main segments", |pl| {
        pl.segments.len() >= 2
    });
    let mut checker = Checker::start(url.clone(), Duration::from_millis(300));
    thread::sleep(Duration::from_secs(1));
    let base_fds = fd_count(pid);
    let base_rss = rss_kib(pid);
    let base_msn = checker.latest_msn();
    let attack_started = Instant::now();

    // The guesser on 127.0.0.2: a real key id, wrong secrets.
    let guesser = attacker_ip(0);
    let mut answers = Vec::new();
    let mut first_refusal = Duration::ZERO;
    let mut blocked_refusals = Duration::ZERO;
    for i in 0..GUESSES {
        let t = Instant::now();
        let (answer, _) = rtmp_attempt(guesser, server.rtmp, &guess(&key, i));
        if i == 0 {
            first_refusal = t.elapsed();
        } else if i >= LIMIT {
            blocked_refusals += t.elapsed();
        }
        answers.push(answer);
    }
    let attack = attack_started.elapsed();
    eprintln!(
        "{GUESSES} RTMP guesses in {attack:?}; the first answered in {first_refusal:?}, \
         those in back-off in {:?} on average (connect, handshake and publish included)",
        blocked_refusals / (GUESSES - LIMIT) as u32
    );
    assert!(
        attack < ATTACK_MAX,
        "the attack took {attack:?}: too slow for the counts below"
    );
    let unknown = answers.iter().filter(|a| **a == Answer::UnknownKey).count();
    assert_eq!(
        answers[..LIMIT],
        vec![Answer::UnknownKey; LIMIT],
        "the first {LIMIT} wrong keys are refused as unknown"
    );
    assert!(
        answers[LIMIT..]
            .iter()
            .all(|a| *a == Answer::TooManyBadKeys),
        "every later attempt is refused for the address: {:?}",
        answers[LIMIT..]
            .iter()
            .filter(|a| **a != Answer::TooManyBadKeys)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert_eq!(unknown, LIMIT);

    // In back-off even a valid key from that address is refused before it is looked at,
    // and so are its SRT callers (1402, SRT_REJX_OVERLOAD).
    assert_eq!(
        rtmp_attempt(guesser, server.rtmp, &beta_key).0,
        Answer::TooManyBadKeys
    );
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    assert_eq!(
        srt_attempt(guesser, server.srt, &beta_key, &mut rng),
        srt_rejected(1402)
    );

    // An SRT-only guesser on 127.0.0.4: the unknown-key code (1401), then 1402.
    let srt_guesser = attacker_ip(2);
    let srt_answers: Vec<SrtAnswer> = (0..LIMIT + 20)
        .map(|i| srt_attempt(srt_guesser, server.srt, &guess(&key, 10_000 + i), &mut rng))
        .collect();
    assert_eq!(
        srt_answers[..LIMIT],
        vec![srt_rejected(1401); LIMIT],
        "{srt_answers:?}"
    );
    assert!(
        srt_answers[LIMIT..]
            .iter()
            .all(|a| *a == srt_rejected(1402)),
        "{srt_answers:?}"
    );

    // A valid key from 127.0.0.3 publishes while both guessers are in back-off.
    let (answer, held) = rtmp_attempt(attacker_ip(1), server.rtmp, &beta_key);
    assert_eq!(answer, Answer::Started, "a valid key from another address");
    drop(held);

    // The legitimate stream went on without a gap.
    let after = Instant::now();
    wait_for(
        "two more acme/main segments",
        Duration::from_secs(20),
        Duration::from_millis(250),
        || (checker.latest_msn() >= base_msn.max(1) + 2).then_some(()),
    );
    let (outage, why) = checker.longest_outage(attack_started);
    assert!(
        outage < Duration::from_secs(6),
        "the legitimate playlist was unreachable for {outage:?} ({why:?})"
    );
    assert!(legit.is_running(), "the legitimate publisher was kept");
    let pl = fetch_playlist(&url, &live_fmp4()).unwrap();
    assert_eq!(pl.discontinuities(), 0, "no gap in acme/main");
    assert!(!pl.endlist);
    checker.stop();

    // Counted, bounded, and quiet.
    let metrics = server.metrics();
    assert_eq!(refused(&metrics, "rtmp", "unknown_key"), LIMIT as f64);
    assert_eq!(
        refused(&metrics, "rtmp", "too_many_bad_keys"),
        (GUESSES - LIMIT + 1) as f64,
        "one increment per refused attempt"
    );
    assert_eq!(refused(&metrics, "srt", "unknown_key"), LIMIT as f64);
    assert!(refused(&metrics, "srt", "too_many_bad_keys") >= 21.0);
    wait_for(
        "the guessers' descriptors to be given back",
        Duration::from_secs(15),
        Duration::from_millis(250),
        || (fd_count(pid) <= base_fds + FD_SLACK).then_some(()),
    );
    let rss = rss_kib(pid);
    assert!(
        rss <= base_rss + RSS_SLACK_KIB,
        "resident memory {rss} KiB, {base_rss} KiB before the guessers"
    );
    let log = server.log_text();
    let refusal_lines = log.lines().filter(|l| l.contains("refused")).count();
    let seconds = after.duration_since(attack_started).as_secs() as usize + 2;
    assert!(
        refusal_lines <= 2 * 10 * seconds,
        "{refusal_lines} refusal lines in {seconds} s: the log is not rate-limited"
    );
    assert!(
        log.contains("too many wrong stream keys from 127.0.0.2"),
        "the back-off is logged"
    );
    assert!(
        !log.contains(&key) && !log.contains(&guess(&key, 3)),
        "no key reaches the log"
    );
    server_alive(&server);
    legit.kill();
}

fn server_alive(server: &Server) {
    let r = try_get(&server.url("/livez")).expect("/livez answers");
    assert_eq!(r.status, 200);
}

#[test]
fn a_flood_of_valid_publishes_from_one_address_leaves_other_tenants_their_slots() {
    const PER_SOURCE: usize = 8;
    let server = Server::start(&[
        "--admin-token",
        TOKEN,
        "--max-connections",
        "40",
        "--max-connections-per-ip",
        &PER_SOURCE.to_string(),
        "--max-publishers",
        "16",
    ]);
    create_tenant(&server, "acme");
    create_tenant(&server, "beta");
    let acme_keys: Vec<String> = (0..3)
        .map(|i| new_key(&server, "acme", &format!("flood{i}")))
        .collect();
    let beta_raw = new_key(&server, "beta", "raw");
    let beta_live = new_key(&server, "beta", "live");

    // Tenant acme's flood from 127.0.0.2: 30 publishes with its valid keys, all held open.
    let flooder = attacker_ip(0);
    let mut held = Vec::new();
    let mut answers = Vec::new();
    for i in 0..30 {
        let (answer, stream) = rtmp_attempt(flooder, server.rtmp, &acme_keys[i % 3]);
        answers.push(answer);
        held.extend(stream);
    }
    let started = answers.iter().filter(|a| **a == Answer::Started).count();
    assert_eq!(started, 3, "one publisher per acme key: {answers:?}");
    eprintln!("flood answers: {answers:?}");

    // Tenant beta, from 127.0.0.3 (a bare publish) and from 127.0.0.1 (ffmpeg with media),
    // gets in while the flood holds its connections.
    let (answer, beta_held) = rtmp_attempt(attacker_ip(1), server.rtmp, &beta_raw);
    assert_eq!(answer, Answer::Started, "beta from another address");
    let mut beta = publish_ffmpeg(
        Media::H264Aac,
        &format!("rtmp://{}/live/{beta_live}", server.rtmp),
        &Publish::forever(),
    );
    wait_playlist(
        &server.url("/hls/beta/live/index.m3u8"),
        Duration::from_secs(30),
        "beta/live segments during acme's flood",
        |pl| pl.segments.len() >= 2,
    );

    let metrics = server.metrics();
    let per_source = metric_sum(
        &metrics,
        "tidegate_connections_refused",
        &[("protocol", "rtmp"), ("reason", "per_source")],
    );
    assert!(
        per_source >= (30 - PER_SOURCE) as f64,
        "the flood past its address's share was refused at accept: {per_source}"
    );
    assert!(refused(&metrics, "rtmp", "already_live") >= 1.0);
    assert_eq!(
        refused(&metrics, "rtmp", "too_many_bad_keys") + refused(&metrics, "rtmp", "unknown_key"),
        0.0,
        "valid keys are no guesses"
    );
    drop(held);
    drop(beta_held);
    server_alive(&server);
    beta.kill();
}

#[test]
fn over_rtmps_a_guessing_address_is_refused_with_the_reason_ffmpeg_shows() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key_file) = self_signed_cert(dir.path(), "guess");
    let rtmps: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let server = Server::start(&[
        "--admin-token",
        TOKEN,
        "--rtmps-listen",
        &rtmps.to_string(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key_file.to_str().unwrap(),
        "--bad-key-limit",
        "2",
    ]);
    create_tenant(&server, "acme");
    let key = new_key(&server, "acme", "secure");
    let publish = |k: &str| {
        let mut p = publish_ffmpeg(
            Media::H264Aac,
            &format!("rtmps://{rtmps}/live/{k}"),
            &Publish::for_secs(5),
        );
        let status = p.wait_exit(Duration::from_secs(20));
        assert!(
            status.is_some_and(|s| !s.success()),
            "ffmpeg was not refused: {status:?}; log:\n{}",
            p.log_tail(20)
        );
        p.log_text()
    };
    for i in 0..2 {
        let log = publish(&guess(&key, i));
        assert!(log.contains("unknown stream key"), "{log}");
    }
    // The address is in back-off now: even the right key is refused, with the reason.
    let log = publish(&key);
    assert!(log.contains("too many wrong stream keys"), "{log}");
    let metrics = server.metrics();
    assert_eq!(refused(&metrics, "rtmps", "unknown_key"), 2.0);
    assert_eq!(refused(&metrics, "rtmps", "too_many_bad_keys"), 1.0);
}
