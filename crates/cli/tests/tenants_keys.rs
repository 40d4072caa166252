//! Stream keys with the clients `tests/tenants.rs` does not cover (issue #12, "Tests that
//! must exist"): GStreamer publishes with a key through `rtmp2sink` and `rtmpsink` (librtmp)
//! and is refused with a wrong one; over SRT, rotation keeps the live publisher and
//! revocation disconnects it (its stream goes `reconnecting`, then ends); on a two-worker
//! Redis cluster a key revoked through worker B's API disconnects its publisher on worker A
//! within seconds.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidegate_testkit::*;

const TOKEN: &str = "tenants-keys-operator-token";

/// `method url` with the operator token and an optional JSON body: (status, body).
fn api(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    tidegate_testkit::http::api_as(TOKEN, method, url, body)
}

/// Creates tenant `name` through the API at `base`.
fn create_tenant(base: &str, name: &str) {
    let (status, body) = api(
        "POST",
        &format!("{base}/api/v1/tenants"),
        Some(json!({"name": name})),
    );
    assert_eq!(status, 201, "{body}");
}

/// A new key of `tenant` for `stream`: (key id, key).
fn new_key(base: &str, tenant: &str, stream: &str) -> (String, String) {
    let (status, body) = api(
        "POST",
        &format!("{base}/api/v1/tenants/{tenant}/keys"),
        Some(json!({"stream": stream})),
    );
    assert_eq!(status, 201, "{body}");
    (
        body["id"].as_str().unwrap().to_owned(),
        body["key"].as_str().unwrap().to_owned(),
    )
}

fn playlist(server: &Server, tenant: &str, stream: &str) -> String {
    server.url(&format!("/hls/{tenant}/{stream}/index.m3u8"))
}

fn wait_segments(url: &str, what: &str) -> u64 {
    wait_playlist(url, Duration::from_secs(30), what, |pl| {
        !pl.segments.is_empty()
    })
    .next_msn()
}

/// The `reason` count of `tidegate_publish_refused_total`, summed over its other labels.
fn refused(metrics: &str, reason: &str) -> f64 {
    tidegate_testkit::hostile::metric_sum(
        metrics,
        "tidegate_publish_refused",
        &[("reason", reason)],
    )
}

/// Waits for a publisher that must be refused or disconnected: it exits with a failure.
fn assert_exits_failing(p: &mut Proc, within: Duration, what: &str) {
    match p.wait_exit(within) {
        Some(s) => assert!(
            !s.success(),
            "{what}: the publisher succeeded; log:\n{}",
            p.log_tail(20)
        ),
        None => panic!(
            "{what}: still publishing after {within:?}; log:\n{}",
            p.log_tail(20)
        ),
    }
}

/// A live GStreamer pipeline (x264 + AAC in FLV) into `sink` at `url`, for up to a minute.
fn gst_publisher(sink: &str, url: &str) -> Proc {
    let gst = require_cmd("gst-launch-1.0");
    for e in [
        "videotestsrc",
        "audiotestsrc",
        "x264enc",
        "h264parse",
        "flvmux",
        "aacparse",
        sink,
    ] {
        require_gst_element(e);
    }
    let aac = gst_aac_encoder();
    let seconds = 60;
    let video_buffers = seconds * 25;
    let audio_buffers = (seconds * 48_000u32).div_ceil(1024);
    let pipeline = format!(
        "videotestsrc is-live=true num-buffers={video_buffers} \
         ! video/x-raw,format=I420,width=320,height=180,framerate=25/1 \
         ! x264enc key-int-max=25 tune=zerolatency speed-preset=ultrafast bitrate=300 \
         ! h264parse ! queue ! flvmux streamable=true name=m ! {sink} location={url} \
         audiotestsrc is-live=true wave=sine num-buffers={audio_buffers} samplesperbuffer=1024 \
         ! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=2 \
         ! {aac} ! aacparse ! queue ! m."
    );
    let mut cmd = Command::new(gst);
    cmd.arg("-e").args(pipeline.split_whitespace());
    Proc::spawn(sink, cmd)
}

#[test]
fn gstreamer_rtmp2sink_and_rtmpsink_publish_with_a_key_and_a_wrong_key_is_refused() {
    // librtmp does not act on a refused publish and waits for the server to close: a
    // connection with no accepted publish is closed after twice the handshake timeout.
    let server = Server::start(&["--admin-token", TOKEN, "--rtmp-handshake-timeout", "3s"]);
    let base = server.url("");
    create_tenant(&base, "acme");
    for (sink, stream) in [("rtmp2sink", "gst2"), ("rtmpsink", "librtmp")] {
        let (_, key) = new_key(&base, "acme", stream);
        let mut publisher = gst_publisher(sink, &format!("rtmp://{}/live/{key}", server.rtmp));
        wait_segments(
            &playlist(&server, "acme", stream),
            &format!("segments of acme/{stream} from {sink}"),
        );
        assert!(publisher.is_running(), "{sink} publishes with its key");
        publisher.kill();

        // The same key with its secret's last digit changed.
        let last = key.chars().last().unwrap();
        let wrong = format!(
            "{}{}",
            &key[..key.len() - 1],
            if last == '0' { '1' } else { '0' }
        );
        let before = refused(&server.metrics(), "unknown_key");
        let mut refused_publisher =
            gst_publisher(sink, &format!("rtmp://{}/live/{wrong}", server.rtmp));
        assert_exits_failing(
            &mut refused_publisher,
            Duration::from_secs(30),
            &format!("{sink} with a wrong key"),
        );
        assert_eq!(
            refused(&server.metrics(), "unknown_key"),
            before + 1.0,
            "{sink}'s wrong key is counted once"
        );
    }
}

/// ffmpeg sending MPEG-TS over SRT with `streamid=KEY` (looping, real time).
fn srt_publisher(srt: SocketAddr, key: &str) -> Proc {
    ffmpeg_ts_loop(
        "ffmpeg-srt",
        &format!("srt://{srt}?streamid={key}&pkt_size=1316"),
    )
}

#[test]
fn over_srt_rotation_keeps_the_publisher_and_revocation_ends_its_stream() {
    let server = Server::start(&["--admin-token", TOKEN, "--reconnect-window", "3s"]);
    let base = server.url("");
    create_tenant(&base, "acme");
    let (id, key) = new_key(&base, "acme", "field");
    let mut publisher = srt_publisher(server.srt, &key);
    let url = playlist(&server, "acme", "field");
    let seen = wait_segments(&url, "segments of acme/field over SRT");

    // Rotation: the live SRT publisher goes on; the old secret no longer publishes.
    let (status, rotated) = api(
        "POST",
        &format!("{base}/api/v1/tenants/acme/keys/{id}/rotate"),
        None,
    );
    assert_eq!(status, 200, "{rotated}");
    wait_playlist(&url, Duration::from_secs(20), "three more segments", |pl| {
        pl.next_msn() >= seen + 3 && !pl.endlist
    });
    assert!(publisher.is_running(), "rotation kept the SRT publisher");
    let (_, stream) = api("GET", &server.url("/api/v1/streams/acme/field"), None);
    assert_eq!(stream["live_here"], true, "{stream}");
    assert_eq!(stream["protocol"], "srt", "{stream}");
    let mut old = srt_publisher(server.srt, &key);
    assert_exits_failing(&mut old, Duration::from_secs(20), "the rotated-away key");
    let pl = fetch_playlist(&url, &live_fmp4()).unwrap();
    assert_eq!(pl.discontinuities(), 0, "the stream never paused");

    // Revocation: the publisher is disconnected, the stream goes reconnecting, then ends.
    let (status, _) = api(
        "DELETE",
        &format!("{base}/api/v1/tenants/acme/keys/{id}"),
        None,
    );
    assert_eq!(status, 200);
    let revoked = Instant::now();
    assert_exits_failing(
        &mut publisher,
        Duration::from_secs(15),
        "the SRT publisher of a revoked key",
    );
    wait_for(
        "the stream to stop being live",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || {
            let (_, s) = api("GET", &server.url("/api/v1/streams/acme/field"), None);
            (s["live_here"] != true).then_some(())
        },
    );
    wait_playlist(&url, Duration::from_secs(20), "EXT-X-ENDLIST", |pl| {
        pl.endlist
    });
    eprintln!("SRT key revoked → stream ended in {:?}", revoked.elapsed());
    // The rotated secret was revoked with its key.
    let new_key = rotated["key"].as_str().unwrap();
    let mut retry = srt_publisher(server.srt, new_key);
    assert_exits_failing(&mut retry, Duration::from_secs(20), "the revoked key");
}

#[test]
fn a_key_revoked_through_worker_b_disconnects_its_publisher_on_worker_a_within_seconds() {
    let cluster = Cluster::start(ClusterOpts {
        workers: 2,
        worker_args: vec![
            "--admin-token".into(),
            TOKEN.into(),
            "--reconnect-window".into(),
            "3s".into(),
        ],
        ..ClusterOpts::default()
    });
    let a = &cluster.workers[0];
    let b = &cluster.workers[1];
    create_tenant(&a.url(""), "acme");
    let (id, key) = new_key(&a.url(""), "acme", "main");
    let mut publisher = publish_ffmpeg(
        Media::H264Aac,
        &format!("rtmp://{}/live/{key}", a.rtmp),
        &Publish::forever(),
    );
    wait_segments(&playlist(a, "acme", "main"), "segments through worker A");
    wait_segments(
        &playlist(b, "acme", "main"),
        "the stream seen from worker B",
    );

    let (status, body) = api(
        "DELETE",
        &b.url(&format!("/api/v1/tenants/acme/keys/{id}")),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let revoked = Instant::now();
    // Worker A hears of it on the change channel (or at its 5 s re-read at the latest).
    assert_exits_failing(
        &mut publisher,
        Duration::from_secs(15),
        "the publisher on worker A of a key revoked through worker B",
    );
    let took = revoked.elapsed();
    eprintln!("revoked through B → publisher on A disconnected in {took:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    for w in [a, b] {
        wait_playlist(
            &playlist(w, "acme", "main"),
            Duration::from_secs(20),
            "EXT-X-ENDLIST",
            |pl| pl.endlist,
        );
    }
    let mut retry = publish_ffmpeg(
        Media::H264Aac,
        &format!("rtmp://{}/live/{key}", a.rtmp),
        &Publish::for_secs(5),
    );
    assert_exits_failing(&mut retry, Duration::from_secs(20), "the revoked key on A");
}
