//! Webhooks and the on-publish callback against a real receiver on loopback.
//!
//! - Delivery with a retry: the receiver fails the first delivery with 500; the same event
//!   (same id) arrives again after the backoff and every event of a publish session arrives
//!   signed (signature and replay window checked with an independent HMAC), in order.
//! - on-publish: the callback refuses key `denied` (RTMP and SRT publishers fail, nothing is
//!   created), accepts others (they publish), and a callback that answers too late refuses.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tidegate_testkit::hooks::{delivered, describe, Receiver, SECRET};
use tidegate_testkit::*;

fn metric_with(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn events_are_signed_retried_and_in_order() {
    let failed_once = AtomicBool::new(false);
    let rx = Receiver::start(move |_, _| {
        if failed_once.swap(true, Ordering::SeqCst) {
            (200, Duration::ZERO)
        } else {
            (500, Duration::ZERO)
        }
    });
    let hook = rx.url("/hooks/tidegate");
    let mut server = Server::start(&[
        "--webhook-url",
        &hook,
        "--webhook-secret",
        SECRET,
        "--reconnect-window",
        "2s",
    ]);
    let mut publisher = publish_ffmpeg(
        Media::H264Aac,
        &server.rtmp_url("cam"),
        &Publish::for_secs(5),
    );
    wait_publisher_success(&mut publisher, Duration::from_secs(40));
    let hits = rx.wait(Duration::from_secs(30), "stream.ended delivered", |h| {
        !delivered(h, "stream.ended").is_empty()
    });

    // The first attempt failed and the same event came again, with the same id, later.
    let first = &hits[0];
    assert_eq!(first.answered, 500, "{}", describe(&hits));
    let id = first.header("tidegate-event-id").expect("event id header");
    let again = hits[1..]
        .iter()
        .find(|h| h.header("tidegate-event-id") == Some(id))
        .unwrap_or_else(|| panic!("event {id} was not retried:\n{}", describe(&hits)));
    assert_eq!(again.answered, 200);
    assert_eq!(again.body, first.body, "a retry sends the same body");
    let waited = again.at.duration_since(first.at);
    assert!(
        waited >= Duration::from_millis(900),
        "retried after {waited:?}, before the 1 s backoff"
    );
    assert_eq!(
        first.json()["type"],
        "stream.published",
        "{}",
        describe(&hits)
    );

    // Every request is signed and fresh; ids and bodies agree.
    for h in &hits {
        h.verify(SECRET)
            .unwrap_or_else(|e| panic!("{e}\n{}", describe(&hits)));
        assert_eq!(h.path, "/hooks/tidegate");
        assert_eq!(
            h.header("content-type"),
            Some("application/json"),
            "{:?}",
            h.headers
        );
        let v = h.json();
        assert_eq!(h.header("tidegate-event-id"), v["id"].as_str());
        assert_eq!(v["data"]["tenant"], "default");
        assert_eq!(v["data"]["stream"], "cam");
        assert!(v["created_at"].as_str().unwrap_or("").ends_with('Z'), "{v}");
    }
    // One delivery per event (the failed attempt aside), in lifecycle order.
    let ok: Vec<serde_json::Value> = hits
        .iter()
        .filter(|h| h.answered == 200)
        .map(|h| h.json())
        .collect();
    let mut ids: Vec<&str> = ok.iter().filter_map(|v| v["id"].as_str()).collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        n,
        "an event was delivered twice:\n{}",
        describe(&hits)
    );
    let kinds: Vec<&str> = ok.iter().filter_map(|v| v["type"].as_str()).collect();
    let pos = |k: &str| {
        kinds
            .iter()
            .position(|x| *x == k)
            .unwrap_or_else(|| panic!("no {k} in {kinds:?}"))
    };
    assert!(
        pos("stream.published") < pos("stream.unpublished"),
        "{kinds:?}"
    );
    assert!(pos("stream.unpublished") < pos("stream.ended"), "{kinds:?}");
    let published = &ok[pos("stream.published")];
    assert_eq!(published["data"]["protocol"], "rtmp", "{published}");
    assert_eq!(
        ok[pos("stream.unpublished")]["data"]["status"],
        "reconnecting"
    );
    assert_eq!(ok[pos("stream.ended")]["data"]["status"], "offline");

    let m = server.metrics();
    assert!(
        metric_with(
            &m,
            "tidegate_webhook_deliveries_total",
            "result=\"delivered\""
        ) >= n as f64,
        "{m}"
    );
    assert!(
        metric_with(&m, "tidegate_webhook_retries_total", "") >= 1.0,
        "{m}"
    );
    server.assert_alive();
}

/// ffmpeg sending the test file over SRT with stream id `key`.
fn ffmpeg_srt(server: &Server, key: &str, seconds: Option<u32>) -> Proc {
    let mut cmd = Command::new(ffmpeg());
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "warning", "-re"]);
    if seconds.is_none() {
        cmd.args(["-stream_loop", "-1"]);
    }
    cmd.arg("-i").arg(media(Media::H264Aac));
    if let Some(s) = seconds {
        cmd.args(["-t", &s.to_string()]);
    }
    cmd.args(["-c", "copy", "-f", "mpegts"]);
    cmd.arg(format!(
        "srt://{}?streamid={key}&pkt_size=1316&latency=200000",
        server.srt
    ));
    Proc::spawn("ffmpeg-srt", cmd)
}

#[test]
fn on_publish_accepts_or_refuses() {
    let rx = Receiver::start(|hit, _| {
        let v: serde_json::Value = serde_json::from_slice(&hit.body).unwrap_or_default();
        match v["stream"].as_str() {
            Some("denied") => (403, Duration::ZERO),
            // Answers after the callback timeout: the publisher is refused.
            Some("slow") => (200, Duration::from_secs(3)),
            _ => (204, Duration::ZERO),
        }
    });
    let mut server = Server::start(&[
        "--on-publish",
        &rx.url("/auth"),
        "--on-publish-timeout",
        "1s",
        "--webhook-secret",
        SECRET,
    ]);

    // Accepted over RTMP and SRT.
    let mut ok_rtmp = publish_ffmpeg(
        Media::H264Aac,
        &server.rtmp_url("allowed"),
        &Publish::forever(),
    );
    let mut ok_srt = ffmpeg_srt(&server, "allowed-srt", None);
    for key in ["allowed", "allowed-srt"] {
        wait_playlist(
            &server.playlist_url(key),
            Duration::from_secs(30),
            "a segment of an accepted publisher",
            |pl| !pl.segments.is_empty(),
        );
    }

    // Refused over RTMP and SRT, and when the callback is too slow.
    for (proto, key) in [("rtmp", "denied"), ("srt", "denied"), ("rtmp", "slow")] {
        let mut p = if proto == "rtmp" {
            publish_ffmpeg(Media::H264Aac, &server.rtmp_url(key), &Publish::for_secs(5))
        } else {
            ffmpeg_srt(&server, key, Some(5))
        };
        let exit = p.wait_exit(Duration::from_secs(20));
        assert!(
            exit.is_some_and(|s| !s.success()),
            "{proto} publisher of `{key}` should have been refused; log:\n{}",
            p.log_tail(20)
        );
        assert_eq!(
            get(&server.playlist_url(key)).status,
            404,
            "a refused publisher must not create a stream"
        );
    }
    assert!(ok_rtmp.is_running() && ok_srt.is_running());

    // What the callback received: action, tenant, stream, protocol, client address, signed.
    let hits = rx.hits();
    for (key, proto) in [
        ("allowed", "rtmp"),
        ("allowed-srt", "srt"),
        ("denied", "rtmp"),
        ("denied", "srt"),
    ] {
        let hit = hits
            .iter()
            .find(|h| {
                let v = h.json();
                v["stream"] == key && v["protocol"] == proto
            })
            .unwrap_or_else(|| panic!("no callback for {proto} {key}:\n{}", describe(&hits)));
        let v = hit.json();
        assert_eq!(v["action"], "on_publish", "{v}");
        assert_eq!(v["tenant"], "default", "{v}");
        assert!(
            v["remote_addr"]
                .as_str()
                .unwrap_or("")
                .starts_with("127.0.0.1:"),
            "{v}"
        );
        assert_eq!(hit.path, "/auth");
        hit.verify(SECRET).unwrap();
    }

    let m = server.metrics();
    for (proto, reason, at_least) in [
        ("rtmp", "on_publish_refused", 1.0),
        ("srt", "on_publish_refused", 1.0),
        ("rtmp", "on_publish_unavailable", 1.0),
    ] {
        let v = m
            .lines()
            .filter(|l| {
                l.starts_with("tidegate_publish_refused_total")
                    && l.contains(&format!("protocol=\"{proto}\""))
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        assert!(v >= at_least, "{proto} {reason}: {v}\n{m}");
    }
    assert!(
        metric_with(&m, "tidegate_on_publish_calls_total", "result=\"accepted\"") >= 2.0,
        "{m}"
    );
    let log = server.log_text();
    assert!(
        log.contains("on-publish refused the publisher"),
        "the refusal must be logged"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !(ok_rtmp.is_running() && ok_srt.is_running()) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok_rtmp.is_running() && ok_srt.is_running());
    ok_rtmp.kill();
    ok_srt.kill();
    server.assert_alive();
}
