//! Webhooks in a cluster: two workers share a Redis state store (and a file:// media volume)
//! and send to the same receiver. A publisher on worker A, then a takeover by a publisher on
//! worker B, then B's publisher leaves and the stream ends: every event arrives exactly
//! once, from the worker that made the transition (no `stream.unpublished` from the worker
//! that lost the stream, one `stream.ended` although both sweepers watch the stream).

use std::thread;
use std::time::Duration;

use tidegate_testkit::hooks::{self, delivered, describe, Receiver, SECRET};
use tidegate_testkit::*;

#[test]
fn each_event_is_sent_once_by_the_worker_that_made_it() {
    let rx = Receiver::start(|_, _| (200, Duration::ZERO));
    let dir = tempfile::tempdir().unwrap();
    let redis_dir = dir.path().join("redis");
    std::fs::create_dir_all(&redis_dir).unwrap();
    let redis = RedisServer::start(&redis_dir);
    let media = dir.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    let storage = format!("file://{}", media.display());
    let hook = rx.url("/hook");
    let args = [
        "--state",
        &redis.url(),
        "--storage",
        &storage,
        "--webhook-url",
        &hook,
        "--webhook-secret",
        SECRET,
        "--reconnect-window",
        "3s",
    ];
    let mut a = Server::start(&args);
    let mut b = Server::start(&args);

    let mut on_a = publish_ffmpeg(Media::H264Aac, &a.rtmp_url("cam"), &Publish::forever());
    wait_playlist(
        &a.playlist_url("cam"),
        Duration::from_secs(30),
        "a segment from worker A",
        |pl| !pl.segments.is_empty(),
    );
    rx.wait(Duration::from_secs(15), "stream.published from A", |h| {
        delivered(h, "stream.published").len() == 1
    });

    // The encoder moves to worker B (takeover): A's session is fenced and closed.
    let mut on_b = publish_ffmpeg(Media::H264Aac, &b.rtmp_url("cam"), &Publish::forever());
    rx.wait(Duration::from_secs(30), "stream.published from B", |h| {
        delivered(h, "stream.published").len() >= 2
    });
    assert!(
        on_a.wait_exit(Duration::from_secs(20)).is_some(),
        "A's publisher should have been closed after the takeover"
    );
    wait_playlist(
        &b.playlist_url("cam"),
        Duration::from_secs(30),
        "segments from worker B",
        |pl| pl.segments.len() >= 2,
    );
    on_b.kill();
    rx.wait(Duration::from_secs(30), "stream.ended", |h| {
        !delivered(h, "stream.ended").is_empty()
    });
    // Both sweepers had their chance; nothing more may come.
    thread::sleep(Duration::from_secs(4));
    let hits = rx.hits();
    let all = describe(&hits);
    for h in &hits {
        h.verify(SECRET).unwrap_or_else(|e| panic!("{e}\n{all}"));
    }

    let worker = |h: &hooks::Hit| h.json()["data"]["worker"].as_str().unwrap_or("").to_owned();
    let published = delivered(&hits, "stream.published");
    assert_eq!(published.len(), 2, "{all}");
    let (wa, wb) = (worker(published[0]), worker(published[1]));
    assert_ne!(wa, wb, "the two sessions were on different workers:\n{all}");
    assert!(
        published[1].json()["data"]["epoch"].as_u64()
            > published[0].json()["data"]["epoch"].as_u64(),
        "{all}"
    );
    let unpublished = delivered(&hits, "stream.unpublished");
    assert_eq!(
        unpublished.len(),
        1,
        "one unpublish (B's publisher leaving), none from the fenced session on A:\n{all}"
    );
    assert_eq!(worker(unpublished[0]), wb, "{all}");
    assert_eq!(delivered(&hits, "stream.ended").len(), 1, "{all}");
    // Status changes come only from the worker holding the publisher at the time, and none
    // says `reconnecting` for A's fenced session (the stream was live on B).
    for h in delivered(&hits, "stream.status_changed") {
        let v = h.json();
        if v["data"]["status"] == "reconnecting" {
            assert_eq!(worker(h), wb, "{all}");
        }
    }
    let mut ids: Vec<String> = hits
        .iter()
        .filter_map(|h| h.header("tidegate-event-id").map(str::to_owned))
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "an event id was sent twice:\n{all}");
    a.assert_alive();
    b.assert_alive();
}
