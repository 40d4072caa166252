//! Backend outages during a live stream on the local cluster.
//!
//! - **Redis restart** (SIGTERM, a few seconds down, started again on its append-only
//!   file), shorter than the reconnect window: no segment is lost. Ingest goes on into
//!   object storage, the owning worker keeps serving the growing playlist from memory,
//!   `/readyz` fails meanwhile, and the state updates are applied once Redis is back (other
//!   workers then serve them).
//! - **Object storage unreachable** (the S3 relay cut): segments wait in a bounded backlog
//!   with retries; past the bound the oldest are dropped and counted
//!   (`tidegate_segments_dropped_total`), and the playlist marks the gap with
//!   `EXT-X-DISCONTINUITY`.
//!
//! The publisher goes straight to one worker (not through HAProxy): during an outage every
//! worker is rightly not ready, and the point here is what the stream goes through.

use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use tidegate_testkit::*;

/// The two scenarios each run a cluster and a publisher; one at a time keeps the timing
/// honest on a 2-core machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn ready(w: &Server) -> Option<bool> {
    try_get(&w.url("/readyz")).ok().map(|r| r.status == 200)
}

#[test]
fn redis_restart_shorter_than_the_window_loses_no_segment() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const KEY: &str = "redis-restart";
    const OUTAGE: Duration = Duration::from_secs(6);
    let mut c = Cluster::start(ClusterOpts {
        workers: 2,
        worker_args: ["--reconnect-window", "20s", "--playlist-window", "60"]
            .map(String::from)
            .to_vec(),
        ..ClusterOpts::default()
    });
    let mut publisher =
        ReconnectingPublisher::start(&media(Media::H264Aac), &c.workers[0].rtmp_url(KEY));
    let url0 = c.workers[0].playlist_url(KEY);
    let url1 = c.workers[1].playlist_url(KEY);
    wait_playlist(&url0, Duration::from_secs(30), "two segments", |pl| {
        pl.segments.len() >= 2
    });
    let mut watch = ClusterWatch::default();
    watch
        .observe(1, &url1, &live_fmp4())
        .unwrap_or_else(|e| panic!("{e}"));
    let before = watch
        .observe(0, &url0, &live_fmp4())
        .unwrap_or_else(|e| panic!("{e}"));

    c.redis.stop();
    let down_at = Instant::now();
    let mut owner_not_ready = None;
    let mut during = before.clone();
    while down_at.elapsed() < OUTAGE {
        if owner_not_ready.is_none() && ready(&c.workers[0]) == Some(false) {
            owner_not_ready = Some(down_at.elapsed());
        }
        // The owner keeps serving its playlist (from memory), with new segments from S3.
        during = watch
            .observe(0, &url0, &live_fmp4())
            .unwrap_or_else(|e| panic!("while Redis is down: {e}\n{}", c.logs()));
        thread::sleep(Duration::from_millis(200));
    }
    let grown_during = during.next_msn() - before.next_msn();
    c.redis.start_again();
    let up_at = Instant::now();

    // Back: the owner is ready again and every worker serves what was cut meanwhile.
    wait_for(
        "the owner's /readyz after Redis is back",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || (ready(&c.workers[0]) == Some(true)).then_some(()),
    );
    let caught_up = wait_for(
        "the other worker to serve what was cut while Redis was down",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || {
            // Until its Redis connection is back, the other worker answers 503.
            let pl = match watch.observe(1, &url1, &live_fmp4()) {
                Ok(pl) => pl,
                Err(e) if e.contains("status 503") => return None,
                Err(e) => panic!("after Redis is back: {e}\n{}", c.logs()),
            };
            (pl.next_msn() > during.next_msn()).then_some(pl)
        },
    );
    eprintln!(
        "REDIS RESTART: down {:.1} s; owner not ready after {owner_not_ready:?}; {grown_during} \
         segment(s) listed by the owner meanwhile; other worker caught up {:.2} s after the \
         restart",
        OUTAGE.as_secs_f64(),
        up_at.elapsed().as_secs_f64()
    );
    assert!(
        owner_not_ready.is_some(),
        "the owning worker's /readyz stayed 200 while Redis was down"
    );
    assert!(
        grown_during >= 1,
        "ingest stopped while Redis was down: {} -> {}\n{}",
        before.next_msn(),
        during.next_msn(),
        during.text
    );
    assert_eq!(publisher.start_count(), 1, "the publisher was cut off");
    assert_eq!(c.owner_of(KEY), Some(0), "the stream changed hands");

    publisher.stop();
    let end_url = c.workers[0].url(&format!("/api/v1/streams/default/{KEY}/end"));
    assert_eq!(try_post(&end_url), Ok(200), "ending the stream");
    let ended = wait_playlist(&url1, Duration::from_secs(10), "EXT-X-ENDLIST", |pl| {
        pl.endlist
    });
    assert!(ended.next_msn() >= caught_up.next_msn());
    watch
        .fetch_all_listed(&ended)
        .unwrap_or_else(|e| panic!("{e}"));
    let missing = check_epochs(&ended).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        missing.is_empty(),
        "segments lost: {missing:?}\n{}",
        ended.text
    );
    assert_eq!(
        ended.discontinuities(),
        0,
        "one session, no gap: no discontinuity expected\n{}",
        ended.text
    );
    assert_decodes_cleanly(&ended.url);
}

/// `/readyz` is what HAProxy (or a Kubernetes Service) uses to send publishers: a worker
/// that cannot reach the state store cannot take one (`begin_publish` reads and writes the
/// record), so it must report not-ready too, not only the worker whose writes fail.
#[test]
fn redis_outage_makes_every_worker_not_ready() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Cluster::start(ClusterOpts {
        workers: 1,
        ..ClusterOpts::default()
    });
    assert_eq!(ready(&c.workers[0]), Some(true));
    c.redis.stop();
    let down_at = Instant::now();
    let seen = wait_for(
        "an idle worker's /readyz to fail while Redis is down",
        Duration::from_secs(8),
        Duration::from_millis(100),
        || (ready(&c.workers[0]) == Some(false)).then(|| down_at.elapsed()),
    );
    eprintln!("REDIS DOWN: idle worker not ready after {seen:?}");
    c.redis.start_again();
    wait_for(
        "/readyz after Redis is back",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || (ready(&c.workers[0]) == Some(true)).then_some(()),
    );
}

#[test]
fn s3_outage_past_the_backlog_drops_the_oldest_and_marks_the_gap() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const KEY: &str = "s3-outage";
    /// `writer::MAX_BACKLOG_SEGMENTS`.
    const BACKLOG: u64 = 32;
    let c = Cluster::start(ClusterOpts {
        workers: 1,
        worker_args: [
            "--segment-duration",
            "500ms",
            "--reconnect-window",
            "30s",
            "--playlist-window",
            "200",
        ]
        .map(String::from)
        .to_vec(),
        ..ClusterOpts::default()
    });
    // 20 fps, a keyframe every 11 frames: 0.55 s segments.
    let mut publisher =
        ReconnectingPublisher::start(&media_short_gop(11), &c.workers[0].rtmp_url(KEY));
    let url = c.workers[0].playlist_url(KEY);
    wait_playlist(&url, Duration::from_secs(30), "three segments", |pl| {
        pl.segments.len() >= 3
    });
    let mut watch = ClusterWatch::default();
    let before = watch
        .observe(0, &url, &live_fmp4())
        .unwrap_or_else(|e| panic!("{e}"));

    c.s3_gate.close();
    let cut_at = Instant::now();
    wait_for(
        "/readyz to fail while S3 is unreachable",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || (ready(&c.workers[0]) == Some(false)).then_some(()),
    );
    // Past the bound, the oldest waiting segments are dropped and counted.
    let dropped = wait_for(
        "tidegate_segments_dropped_total >= 3",
        Duration::from_secs(45),
        Duration::from_millis(250),
        || {
            // The playlist keeps answering (unchanged) meanwhile.
            let pl = fetch_playlist(&url, &live_fmp4()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                pl.next_msn(),
                before.next_msn(),
                "listed a segment S3 never got"
            );
            let n = metric_value(&c.workers[0].metrics(), "tidegate_segments_dropped");
            (n >= 3.0).then_some(n)
        },
    );
    c.s3_gate.open();
    let outage = cut_at.elapsed();
    wait_for(
        "/readyz after S3 is back",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || (ready(&c.workers[0]) == Some(true)).then_some(()),
    );
    // The backlog is flushed in order behind the gap.
    let flushed = wait_playlist(&url, Duration::from_secs(20), "the backlog listed", |pl| {
        pl.next_msn() >= before.next_msn() + BACKLOG
    });
    watch.accept_for(0, &flushed);
    publisher.stop();
    let end_url = c.workers[0].url(&format!("/api/v1/streams/default/{KEY}/end"));
    assert_eq!(try_post(&end_url), Ok(200), "ending the stream");
    let ended = wait_playlist(&url, Duration::from_secs(10), "EXT-X-ENDLIST", |pl| {
        pl.endlist
    });
    let dropped_total = metric_value(&c.workers[0].metrics(), "tidegate_segments_dropped");
    eprintln!(
        "S3 OUTAGE: {:.1} s; dropped {dropped_total} (>= {dropped} when S3 came back); \
         listed {} segments",
        outage.as_secs_f64(),
        ended.segments.len()
    );
    watch
        .fetch_all_listed(&ended)
        .unwrap_or_else(|e| panic!("{e}"));
    let missing = check_epochs(&ended).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        missing.len() as f64,
        dropped_total,
        "the gap in the playlist {missing:?} does not match the dropped counter\n{}",
        ended.text
    );
    assert_eq!(
        ended.discontinuities(),
        1,
        "exactly the gap carries a discontinuity\n{}",
        ended.text
    );
    let gap_at = ended.segments.iter().position(|s| s.discontinuity).unwrap();
    assert!(
        gap_at as u64 + ended.media_sequence >= before.next_msn(),
        "the discontinuity sits before what was listed before the outage\n{}",
        ended.text
    );
    assert_decodes_cleanly(&ended.url);
}
