//! The HTTP API: streams with status, health, protocol, codecs and resolution; one stream
//! with its health history; kick and end, which need the admin token when one is set.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;

fn post(url: &str, token: Option<&str>) -> u16 {
    let mut req = ureq::post(url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("POST {url}: {e}"),
    }
}

fn stream_json(server: &Server, key: &str) -> serde_json::Value {
    let r = get(&server.url(&format!("/api/v1/streams/default/{key}")));
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

fn wait_status(server: &Server, key: &str, want: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let v = stream_json(server, key);
        if v["status"] == want {
            return v;
        }
        assert!(Instant::now() < deadline, "status never became {want}: {v}");
        thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn streams_health_kick_and_end() {
    let mut server = Server::start(&["--admin-token", "s3cr3t-token", "--reconnect-window", "30s"]);
    assert_eq!(
        get(&server.url("/api/v1/streams/default/nobody")).status,
        404
    );
    let mut publisher =
        publish_ffmpeg(Media::H264Aac, &server.rtmp_url("cam"), &Publish::forever());
    wait_playlist(
        &server.playlist_url("cam"),
        Duration::from_secs(25),
        "a segment",
        |pl| !pl.segments.is_empty(),
    );
    let v = wait_status(&server, "cam", "healthy");
    assert_eq!(v["protocol"], "rtmp", "{v}");
    assert_eq!(v["resolution"], "640x360", "{v}");
    assert!(
        v["codecs"].as_str().unwrap_or("").starts_with("avc1."),
        "{v}"
    );
    assert!(v["bitrate_bps"].as_u64().unwrap_or(0) > 0, "{v}");
    assert!(!v["history"].as_array().unwrap().is_empty(), "{v}");
    let list: serde_json::Value =
        serde_json::from_slice(&get(&server.url("/api/v1/streams")).body).unwrap();
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["stream"] == "cam"));

    // Admin calls need the token.
    let kick = server.url("/api/v1/streams/default/cam/kick");
    assert_eq!(post(&kick, None), 401);
    assert_eq!(post(&kick, Some("wrong-token-xx")), 401);
    assert_eq!(post(&kick, Some("s3cr3t-token")), 200);
    assert!(
        publisher.wait_exit(Duration::from_secs(20)).is_some(),
        "the kicked publisher's connection must close"
    );
    wait_status(&server, "cam", "reconnecting");

    let end = server.url("/api/v1/streams/default/cam/end");
    assert_eq!(post(&end, None), 401);
    assert_eq!(post(&end, Some("s3cr3t-token")), 200);
    wait_playlist(
        &server.playlist_url("cam"),
        Duration::from_secs(10),
        "ENDLIST",
        |pl| pl.endlist,
    );
    wait_status(&server, "cam", "offline");
    assert_eq!(post(&end, Some("s3cr3t-token")), 404, "already ended");
    server.assert_alive();
}
