//! The HTTP API: streams with status, health, protocol, codecs and resolution; one stream
//! with its health history; kick and end. With an admin token set, every call needs it.
//! (`openapi.rs` checks the same API against `docs/openapi.yaml`.)

use std::thread;
use std::time::{Duration, Instant};

use tidegate_testkit::*;

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

const TOKEN: &str = "s3cr3t-token";

/// GET with the admin token: (status, body as JSON).
fn get_api(url: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = ureq::get(url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let status = resp.status();
    let body = resp.into_string().unwrap();
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET {url}: {status}, not JSON ({e}): {body}"));
    (status, json)
}

fn stream_json(server: &Server, key: &str) -> serde_json::Value {
    let (status, v) = get_api(
        &server.url(&format!("/api/v1/streams/default/{key}")),
        Some(TOKEN),
    );
    assert_eq!(status, 200, "{v}");
    v
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
    let mut server = Server::start(&["--admin-token", TOKEN, "--reconnect-window", "30s"]);
    let nobody = server.url("/api/v1/streams/default/nobody");
    assert_eq!(get_api(&nobody, Some(TOKEN)).0, 404);
    assert_eq!(get_api(&nobody, None).0, 401, "the token is checked first");
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
    assert!(v["uptime_s"].as_u64().is_some(), "{v}");
    assert_eq!(v["live_here"], true, "{v}");
    assert_eq!(get_api(&server.url("/api/v1/streams"), None).0, 401);
    let (_, list) = get_api(&server.url("/api/v1/streams"), Some(TOKEN));
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["stream"] == "cam"));

    // Admin calls need the token.
    let kick = server.url("/api/v1/streams/default/cam/kick");
    assert_eq!(post(&kick, None), 401);
    assert_eq!(post(&kick, Some("wrong-token-xx")), 401);
    assert_eq!(post(&kick, Some(TOKEN)), 200);
    assert!(
        publisher.wait_exit(Duration::from_secs(20)).is_some(),
        "the kicked publisher's connection must close"
    );
    wait_status(&server, "cam", "reconnecting");

    let end = server.url("/api/v1/streams/default/cam/end");
    assert_eq!(post(&end, None), 401);
    assert_eq!(post(&end, Some(TOKEN)), 200);
    wait_playlist(
        &server.playlist_url("cam"),
        Duration::from_secs(10),
        "ENDLIST",
        |pl| pl.endlist,
    );
    wait_status(&server, "cam", "offline");
    assert_eq!(post(&end, Some(TOKEN)), 404, "already ended");
    server.assert_alive();
}
