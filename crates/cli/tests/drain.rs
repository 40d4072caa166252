//! Drain on the local cluster: SIGTERM the worker holding a live publisher. Its `/readyz`
//! must fail at once (so HAProxy takes it out), the publisher must be moved to another
//! worker within the drain timeout (the worker closes it at the first segment boundary
//! past `--drain-timeout`, so: drain timeout + one segment + a reconnect), the playlist must
//! continue without losing the draining worker's last segment, and the worker must exit 0.
//! HAProxy here does not cut sessions of a worker it marks down: the worker moves its
//! publisher itself.

use std::thread;
use std::time::{Duration, Instant};

use tidegate_testkit::*;

const KEY: &str = "drain";
const DRAIN_SECS: f64 = 3.0;
/// Readiness must flip within this of the SIGTERM.
const READY_FLIP: Duration = Duration::from_millis(500);

#[test]
fn sigterm_flips_readiness_and_moves_the_publisher_within_the_drain_timeout() {
    let mut c = Cluster::start(ClusterOpts {
        worker_args: [
            "--reconnect-window",
            "10s",
            "--playlist-window",
            "40",
            "--drain-timeout",
            "3s",
        ]
        .map(String::from)
        .to_vec(),
        shutdown_sessions_on_down: false,
        ..ClusterOpts::default()
    });
    let mut publisher = ReconnectingPublisher::start(&media(Media::H264Aac), &c.rtmp_url(KEY));
    let old = c.wait_owner(KEY, Duration::from_secs(30));
    let old_url = c.workers[old].playlist_url(KEY);
    let first = wait_playlist(&old_url, Duration::from_secs(30), "two segments", |pl| {
        pl.segments.len() >= 2
    });
    let mut watch = ClusterWatch::default();
    watch
        .observe(old, &old_url, &live_fmp4())
        .unwrap_or_else(|e| panic!("{e}"));
    let ready_url = c.workers[old].url("/readyz");
    assert_eq!(get(&ready_url).status, 200);

    let term_at = Instant::now();
    c.workers[old].proc.signal(15);
    let flipped = wait_for(
        "/readyz to fail after SIGTERM",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || match try_get(&ready_url) {
            Ok(r) if r.status == 200 => None,
            _ => Some(term_at.elapsed()),
        },
    );
    eprintln!(
        "DRAIN: /readyz failed {:.3} s after SIGTERM",
        flipped.as_secs_f64()
    );
    assert!(
        flipped <= READY_FLIP,
        "/readyz still 200 {flipped:?} after SIGTERM"
    );

    // The publisher moves to another worker; the playlist goes on (watched on the others).
    let others: Vec<usize> = (0..c.workers.len()).filter(|&i| i != old).collect();
    let mut moved_at = None;
    let mut new_owner = None;
    let deadline = term_at + Duration::from_secs(30);
    let mut latest: Option<MediaPlaylist> = None;
    loop {
        for &i in &others {
            let url = c.workers[i].playlist_url(KEY);
            let pl = watch
                .observe(i, &url, &live_fmp4())
                .unwrap_or_else(|e| panic!("during the drain: {e}\n{}", c.logs()));
            if latest.as_ref().is_none_or(|l| pl.next_msn() > l.next_msn()) {
                latest = Some(pl);
            }
        }
        if moved_at.is_none() {
            if let Some(j) = c.owner_of(KEY).filter(|&j| j != old) {
                moved_at = Some(term_at.elapsed().as_secs_f64());
                new_owner = Some(j);
            }
        }
        let l = latest.as_ref().unwrap();
        let new_segments = l
            .segments
            .iter()
            .filter(|s| s.msn >= first.next_msn() && s.discontinuity)
            .count();
        if moved_at.is_some() && new_segments >= 1 && l.next_msn() >= first.next_msn() + 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the publisher was not moved within 30 s of SIGTERM\n{}",
            c.logs()
        );
        thread::sleep(Duration::from_millis(150));
    }
    let moved_at = moved_at.unwrap();
    let new_owner = new_owner.unwrap();
    eprintln!(
        "DRAIN: publisher on worker {new_owner} {moved_at:.2} s after SIGTERM \
         (drain timeout {DRAIN_SECS} s, segment {SEGMENT_SECS} s)"
    );
    let status = c.workers[old].proc.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "the draining worker did not exit cleanly: {status:?}\n{}",
        c.workers[old].proc.log_tail(30)
    );
    assert!(
        moved_at <= DRAIN_SECS + SEGMENT_SECS + 2.0,
        "the publisher moved {moved_at:.2} s after SIGTERM; the drain timeout is {DRAIN_SECS} s \
         (+ one segment to reach a boundary + 2 s to reconnect)\n{}",
        c.workers[old].proc.log_tail(30)
    );

    publisher.stop();
    let end_url = c.workers[new_owner].url(&format!("/api/v1/streams/default/{KEY}/end"));
    assert_eq!(try_post(&end_url), Ok(200), "ending the stream");
    let url = c.workers[new_owner].playlist_url(KEY);
    let ended = wait_playlist(&url, Duration::from_secs(10), "EXT-X-ENDLIST", |pl| {
        pl.endlist
    });
    watch
        .fetch_all_listed(&ended)
        .unwrap_or_else(|e| panic!("{e}"));
    let missing = check_epochs(&ended).unwrap_or_else(|e| panic!("{e}"));
    assert!(missing.is_empty(), "segments lost: {missing:?}");
    assert_decodes_cleanly(&ended.url);
}
