//! Hostile HTTP peers against a live worker (issue #10, "Hostile peers" 1): one source
//! address holding more connections than its share, idle keep-alive connections, silent
//! connections and slowly trickled request heads filling the total cap. The worker refuses
//! the excess at once and counts it, closes idle and slow connections after their timeouts,
//! keeps serving the playlist of a stream published with ffmpeg throughout (from other
//! source addresses, and to everyone once the attackers are gone), keeps listing new
//! segments, stays alive, and its open file descriptors come back to where they were.
//!
//! Attackers bind loopback source addresses 127.0.0.2-127.0.0.5 (all of 127.0.0.0/8 is
//! loopback on Linux); the test's own requests come from 127.0.0.1.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tidegate_testkit::*;

const MAX_CONNECTIONS: usize = 64;
const MAX_PER_IP: usize = 32;
/// Both timeouts; the server runs with `--http-header-timeout` and `--http-idle-timeout`
/// set to this.
const TIMEOUT_SECS: u64 = 2;
/// How long a connection may take to be closed by the server, far past the timeouts so
/// that a busy machine does not fail the test.
const CLOSE_WITHIN: Duration = Duration::from_secs(20);
/// The worker's `--admin-token`.
const ADMIN_TOKEN: &str = "flood-test-token";

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

/// Whether the server ended `s` (end of stream or reset) before `deadline`; any bytes the
/// server sent before are read and dropped.
fn closed_by_server(s: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true, // reset
        }
    }
}

/// Sends `GET path` on `s` and reads the answer's head and short body: `Some(status line)`,
/// or `None` when the server closed the connection without answering (a refusal).
fn ask(s: &mut TcpStream, path: &str) -> Option<String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: tidegate\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return None;
    }
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // `/livez` answers "ok\n": read until the body is in.
    while !got.ends_with(b"ok\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    text.lines()
        .next()
        .filter(|l| l.starts_with("HTTP/1.1"))
        .map(str::to_owned)
}

/// A fresh connection from `from` asking for `path` (`Connection: close`): the status and
/// the body.
fn get_from(from: &str, to: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut s = connect_from(from, to);
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: tidegate\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut got = Vec::new();
    s.read_to_end(&mut got).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of one labelled series (`name{labels}`) in Prometheus text; 0 when absent.
fn series(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn connection_floods_are_capped_timed_out_and_counted_while_a_stream_plays() {
    let started = Instant::now();
    let timeout = format!("{TIMEOUT_SECS}s");
    let mut server = Server::start(&[
        "--http-max-connections",
        &MAX_CONNECTIONS.to_string(),
        "--http-max-connections-per-ip",
        &MAX_PER_IP.to_string(),
        "--http-idle-timeout",
        &timeout,
        "--http-header-timeout",
        &timeout,
        "--admin-token",
        ADMIN_TOKEN,
    ]);
    let key = unique_name("flood");
    let _publisher = publish_ffmpeg(Media::H264Aac, &server.rtmp_url(&key), &Publish::forever());
    let playlist = server.playlist_url(&key);
    let before = wait_playlist(&playlist, Duration::from_secs(30), "first segments", |pl| {
        pl.segments.len() >= 2
    });
    let pid = server.proc.pid();
    let baseline_fds = open_fds(pid);
    let http = server.http;

    // 1. One source takes more than its share: keep-alive connections that asked once and
    //    then sit idle. The excess is refused at once; other sources are served meanwhile.
    let mut idle: Vec<TcpStream> = (0..MAX_PER_IP + 8)
        .map(|_| connect_from("127.0.0.2", http))
        .collect();
    let answers: Vec<Option<String>> = idle.iter_mut().map(|s| ask(s, "/livez")).collect();
    let answered = answers.iter().filter(|a| a.is_some()).count();
    let refused_per_source = answers.len() - answered;
    assert!(
        answered <= MAX_PER_IP && refused_per_source >= 1,
        "one source got {answered} answers from {} connections (cap {MAX_PER_IP})",
        answers.len()
    );
    for a in answers.iter().flatten() {
        assert!(a.contains(" 200 "), "{a}");
    }
    let (status, _) = get_from("127.0.0.1", http, &format!("/hls/default/{key}/index.m3u8"))
        .expect("playlist from another source while 127.0.0.2 is at its cap");
    assert_eq!(status, 200);
    // The idle ones are closed by the idle timeout.
    let deadline = Instant::now() + CLOSE_WITHIN;
    let mut kept_open = 0;
    for (s, a) in idle.iter_mut().zip(&answers) {
        if a.is_some() && !closed_by_server(s, deadline) {
            kept_open += 1;
        }
    }
    assert_eq!(kept_open, 0, "idle keep-alive connections still open");
    drop(idle);

    // 2. Several sources fill the total: heads trickled a line at a time, and connections
    //    that never send a byte. Past the total, new connections are refused; every admitted
    //    one is closed by the header timeout, trickle or not.
    let mut slow: Vec<TcpStream> = (0..MAX_PER_IP)
        .map(|_| connect_from("127.0.0.3", http))
        .collect();
    for s in &mut slow {
        let _ = s.write_all(b"GET /livez HTTP/1.1\r\nHost: tidegate\r\n");
    }
    let mut silent: Vec<TcpStream> = (0..MAX_PER_IP)
        .map(|_| connect_from("127.0.0.4", http))
        .collect();
    let mut extra: Vec<TcpStream> = (0..8).map(|_| connect_from("127.0.0.5", http)).collect();
    let deadline = Instant::now() + CLOSE_WITHIN;
    // Trickle a header line every half second until the server has closed them all.
    let mut open: Vec<bool> = vec![true; slow.len()];
    while open.iter().any(|o| *o) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        for (s, o) in slow.iter_mut().zip(open.iter_mut()) {
            if *o
                && (s.write_all(b"X-Trickle: 1\r\n").is_err()
                    || closed_by_server(s, Instant::now() + Duration::from_millis(5)))
            {
                *o = false;
            }
        }
    }
    assert!(
        open.iter().all(|o| !o),
        "{} trickling connections still open after {CLOSE_WITHIN:?}",
        open.iter().filter(|o| **o).count()
    );
    let silent_open = silent
        .iter_mut()
        .chain(extra.iter_mut())
        .map(|s| closed_by_server(s, deadline))
        .filter(|closed| !closed)
        .count();
    assert_eq!(silent_open, 0, "silent connections still open");
    drop((slow, silent, extra));

    // 3. The stream went on and is served to anyone again; the refusals and timeouts are
    //    counted, the refusals logged a line a second at most.
    let (status, body) = get_from("127.0.0.5", http, &format!("/hls/default/{key}/index.m3u8"))
        .expect("playlist once the attackers are gone");
    assert_eq!(status, 200, "{body}");
    wait_playlist(&playlist, Duration::from_secs(30), "new segments", |pl| {
        pl.next_msn() >= before.next_msn() + 2
    });
    server.assert_alive();
    // The API token: a missing one is a counted 401; the scheme may be written in any case.
    let streams = server.url("/api/v1/streams");
    assert_eq!(get(&streams).status, 401);
    let lower_case = ureq::get(&streams)
        .set("Authorization", &format!("bearer {ADMIN_TOKEN}"))
        .call()
        .map(|r| r.status())
        .unwrap_or_else(|e| panic!("GET {streams} with `bearer`: {e}"));
    assert_eq!(lower_case, 200);
    let metrics = server.metrics();
    assert_eq!(metric_value(&metrics, "tidegate_http_unauthorized"), 1.0);
    assert!(series(&metrics, "tidegate_http_requests_total{class=\"4xx\"}") >= 1.0);
    let refused = |reason: &str| {
        series(
            &metrics,
            &format!("tidegate_http_connections_refused_total{{reason=\"{reason}\"}}"),
        )
    };
    // (A connection of the first source that the header timeout closed before it asked
    // would read as refused above, so only one refusal is certain.)
    assert!(
        refused("per_source") >= 1.0,
        "per_source refusals: {metrics}"
    );
    assert!(
        refused("max_connections") >= 1.0,
        "max_connections refusals: {metrics}"
    );
    let timeouts = |phase: &str| {
        series(
            &metrics,
            &format!("tidegate_http_timeouts_total{{phase=\"{phase}\"}}"),
        )
    };
    assert!(
        timeouts("idle") >= answered as f64,
        "idle timeouts: {metrics}"
    );
    // At least the trickling source's 32 or the silent source's 32 were admitted (together
    // they are the whole cap) and all of those timed out reading a head.
    assert!(
        timeouts("header") >= MAX_PER_IP as f64,
        "header timeouts: {metrics}"
    );
    assert!(
        series(&metrics, "tidegate_http_requests_total{class=\"2xx\"}") >= answered as f64,
        "2xx answers: {metrics}"
    );
    assert!(
        series(
            &metrics,
            "tidegate_log_lines_suppressed_total{area=\"http\"}"
        ) >= 1.0,
        "suppressed refusal log lines: {metrics}"
    );
    // At most one refusal line a second, the rest counted and summed up.
    let refusal_lines = server
        .log_text()
        .lines()
        .filter(|l| l.contains("HTTP connection refused"))
        .count();
    let elapsed_s = started.elapsed().as_secs() as usize;
    assert!(
        refusal_lines >= 1 && refusal_lines <= elapsed_s + 1,
        "{refusal_lines} refusal log lines in {elapsed_s} s"
    );

    // 4. Descriptors and the open-connections gauge come back.
    wait_for(
        "open descriptors back near the baseline",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || (open_fds(pid) <= baseline_fds + 8).then_some(()),
    );
    wait_for(
        "the open-connections gauge back down",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let m = server.metrics();
            // Only this scrape's connection (and perhaps a pooled one) is open.
            (metric_value(&m, "tidegate_http_connections_open") <= 2.0).then_some(())
        },
    );

    // 5. A name nobody published, asked for by many at once (issue #14): with no record, each
    // request would read the media store for a snapshot; the lookups are single-flight per
    // stream and remembered for a second, so 80 requests cost about one read a second.
    let read = r#"tidegate_snapshot_lookups_total{answer="read"}"#;
    let reads_before = series(&server.metrics(), read);
    let asked = Instant::now();
    let askers: Vec<_> = (0..8)
        .map(|_| {
            let url = server.playlist_url("nobody-published-this");
            std::thread::spawn(move || (0..10).map(|_| get(&url).status).collect::<Vec<u16>>())
        })
        .collect();
    let statuses: Vec<u16> = askers
        .into_iter()
        .flat_map(|t| t.join().unwrap_or_default())
        .collect();
    let took = asked.elapsed();
    assert_eq!(statuses.len(), 80, "an asker thread failed");
    assert!(
        statuses.iter().all(|s| *s == 404),
        "a name nobody published: {statuses:?}"
    );
    let reads = series(&server.metrics(), read) - reads_before;
    let allowed = took.as_secs_f64().ceil() + 1.0;
    assert!(
        (1.0..=allowed).contains(&reads),
        "80 requests for one unpublished name in {took:?} read the media store {reads} times \
         (allowed 1..={allowed}: one lookup a second)"
    );
    server.assert_alive();
}

/// The descriptor limit this test runs the worker under (inherited from the test process):
/// the worker keeps max(256, limit/8) = 256 of it for storage and state.
const SMALL_FD_LIMIT: usize = 700;

#[test]
fn http_connections_stop_short_of_the_descriptors_kept_for_storage() {
    // Lower this test process's limit, soft and hard, so the worker started below inherits
    // it (and cannot raise it). Each test runs in a process of its own under nextest.
    let status = std::process::Command::new(require_cmd("prlimit"))
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={SMALL_FD_LIMIT}:{SMALL_FD_LIMIT}"))
        .status()
        .unwrap();
    assert!(status.success(), "prlimit failed");
    let mut server = Server::start(&["--http-header-timeout", "20s"]);
    assert!(
        server
            .log_text()
            .contains(&format!("limit={SMALL_FD_LIMIT}")),
        "the worker logs its descriptor limit"
    );
    let key = unique_name("fdreserve");
    let _publisher = publish_ffmpeg(Media::H264Aac, &server.rtmp_url(&key), &Publish::forever());
    let playlist = server.playlist_url(&key);
    let before = wait_playlist(&playlist, Duration::from_secs(30), "first segments", |pl| {
        !pl.segments.is_empty()
    });
    let pid = server.proc.pid();
    let baseline_fds = open_fds(pid);
    let http = server.http;

    // More silent connections than the descriptors left above the reserve, from two
    // sources so the per-source cap (256) is not what stops them.
    let mut held: Vec<TcpStream> = Vec::new();
    for i in 0..500 {
        let from = if i % 2 == 0 { "127.0.0.2" } else { "127.0.0.3" };
        held.push(connect_from(from, http));
    }
    // Refused ones are reset at once; admitted ones stay open (the header timeout is 20 s).
    let deadline = Instant::now() + Duration::from_secs(5);
    let refused = held
        .iter_mut()
        .map(|s| closed_by_server(s, deadline.max(Instant::now() + Duration::from_millis(5))))
        .filter(|closed| *closed)
        .count();
    assert!(
        refused >= 1,
        "no connection refused at the descriptor reserve"
    );
    let peak_fds = open_fds(pid);
    assert!(
        peak_fds + 256 <= SMALL_FD_LIMIT + 8,
        "the worker holds {peak_fds} descriptors of {SMALL_FD_LIMIT}: the reserve is gone"
    );
    // Ingest connections keep out of the reserve too: an RTMP connection is refused now.
    let rtmp = TcpStream::connect(server.rtmp).unwrap();
    wait_for(
        "an RTMP connection refused at the descriptor reserve",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || {
            let m = server.metrics();
            (series(
                &m,
                "tidegate_connections_refused_total{protocol=\"rtmp\",reason=\"fd_reserve\"}",
            ) >= 1.0)
                .then_some(())
        },
    );
    drop(rtmp);
    // While HTTP sits at the reserve, segments keep being written (files need descriptors).
    std::thread::sleep(Duration::from_secs(5));
    drop(held);

    let after = wait_playlist(&playlist, Duration::from_secs(30), "new segments", |pl| {
        pl.next_msn() >= before.next_msn() + 3
    });
    // No gap: every segment in between was written and listed.
    assert!(
        after.segments.windows(2).all(|w| w[1].msn == w[0].msn + 1),
        "{}",
        after.text
    );
    server.assert_alive();
    let metrics = server.metrics();
    assert!(
        series(
            &metrics,
            "tidegate_http_connections_refused_total{reason=\"fd_reserve\"}"
        ) >= refused as f64,
        "fd_reserve refusals: {metrics}"
    );
    assert_eq!(
        metrics
            .lines()
            .filter(|l| l.starts_with("tidegate_store_errors_total"))
            .count(),
        0,
        "store errors while HTTP sat at the reserve: {metrics}"
    );
    assert!(
        !server.log_text().contains("Too many open files"),
        "descriptors ran out"
    );
    wait_for(
        "open descriptors back near the baseline",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || (open_fds(pid) <= baseline_fds + 8).then_some(()),
    );
}
