//! Unknown is not zero: two workers share a Redis state store; a publisher is connected to
//! the first. The second answers for the stream with the holder's own figures (bitrate,
//! protocol, packets, published with the lease through the shared state) and their age,
//! never a made-up `0`; when the encoder stalls with its connection open, the second worker
//! shows the holder's `warning` too (figures renew without media); once the publisher has
//! gone, neither worker shows a bitrate.

use std::time::Duration;

use serde_json::Value;
use tidegate_testkit::*;

/// The entry of `key` in `GET /api/v1/streams`.
fn listed(server: &Server, key: &str) -> Value {
    let r = get(&server.url("/api/v1/streams"));
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|s| s["stream"] == key)
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn the_worker_without_the_publisher_answers_with_the_holders_figures() {
    let dir = tempfile::Builder::new()
        .prefix("tidegate-figures-")
        .tempdir()
        .unwrap();
    let redis = RedisServer::start(dir.path());
    let data = dir.path().join("data");
    let config = dir.path().join("tidegate.toml");
    std::fs::write(&config, FAST_HEALTH_TOML).unwrap();
    let args = |id: &'static str| {
        vec![
            "--config".to_owned(),
            config.to_str().unwrap().to_owned(),
            "--state".to_owned(),
            redis.url(),
            "--worker-id".to_owned(),
            id.to_owned(),
            "--reconnect-window".to_owned(),
            "20s".to_owned(),
        ]
    };
    let a_args = args("worker-a");
    let b_args = args("worker-b");
    let mut a = Server::start_in(
        &data,
        &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let mut b = Server::start_in(
        &data,
        &b_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );

    let mut publisher = publish_ffmpeg(Media::H264Aac, &a.rtmp_url("cam"), &Publish::forever());
    // Worker B has no connection from the publisher; it answers with A's figures.
    let remote = b.wait_stream_json(
        "cam",
        "worker B to answer with the holder's bitrate",
        Duration::from_secs(30),
        |v| v["bitrate_bps"].as_u64().unwrap_or(0) > 0,
    );
    assert_eq!(remote["status"], "healthy", "{remote}");
    assert_eq!(remote["live_here"], false, "{remote}");
    assert_eq!(remote["protocol"], "rtmp", "{remote}");
    assert_eq!(remote["held_by"], "worker-a", "{remote}");
    assert_eq!(remote["worker"], "worker-a", "{remote}");
    assert!(remote["packets"].is_object(), "{remote}");
    let age = remote["figures_age_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no figures_age_ms from the non-holder: {remote}"));
    assert!(age <= 5_000, "figures {age} ms old: {remote}");
    // The list says the same.
    let row = listed(&b, "cam");
    assert!(row["bitrate_bps"].as_u64().unwrap_or(0) > 0, "{row}");
    assert_eq!(row["protocol"], "rtmp", "{row}");
    assert!(row["figures_age_ms"].is_u64(), "{row}");

    // The holder measures its own: no age.
    let local = a.stream_json("cam");
    assert_eq!(local["live_here"], true, "{local}");
    assert!(local["figures_age_ms"].is_null(), "{local}");
    assert!(local["bitrate_bps"].as_u64().unwrap_or(0) > 0, "{local}");

    // The encoder stalls with its connection open: the holder judges it `warning`, and the
    // other worker says so too, with fresh figures.
    publisher.signal(19);
    let stalled = b.wait_stream_json(
        "cam",
        "worker B to show the holder's warning",
        Duration::from_secs(30),
        |v| v["status"] == "warning",
    );
    assert!(
        stalled["figures_age_ms"]
            .as_u64()
            .is_some_and(|a| a <= 5_000),
        "{stalled}"
    );
    assert!(
        stalled["reasons"].as_array().is_some_and(|r| !r.is_empty()),
        "{stalled}"
    );

    // The publisher goes: reconnecting on both, and no stale bitrate anywhere.
    publisher.kill();
    for (name, server) in [("A", &a), ("B", &b)] {
        let v = server.wait_stream_json(
            "cam",
            &format!("worker {name} to show the stream reconnecting"),
            Duration::from_secs(20),
            |v| v["status"] == "reconnecting",
        );
        assert!(v["bitrate_bps"].is_null(), "worker {name}: {v}");
        assert!(v["held_by"].is_null(), "worker {name}: {v}");
        let row = listed(server, "cam");
        assert!(row["bitrate_bps"].is_null(), "worker {name}: {row}");
    }
    a.assert_alive();
    b.assert_alive();
}
