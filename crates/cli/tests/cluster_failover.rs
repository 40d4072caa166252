//! Failover on the local cluster (Redis + S3 + three workers behind HAProxy): a publisher
//! that reconnects on failure streams through HAProxy; the worker holding its stream is
//! `kill -9`ed. Measured (and printed): seconds from the kill to the next new segment in
//! the playlist. Asserted: that gap is at most one segment duration + 2 s; the playlist
//! URL answers on every surviving worker throughout; the media sequence never goes back;
//! every segment ever listed stays fetchable while listed; ffmpeg decodes the whole
//! recorded playlist without an error.

use std::thread;
use std::time::{Duration, Instant};

use tidegate_testkit::*;

const KEY: &str = "failover";
/// The goal for kill → next new segment listed.
const GAP_GOAL_SECS: f64 = SEGMENT_SECS + 2.0;

#[test]
fn kill9_of_the_owning_worker_costs_at_most_a_segment_and_two_seconds() {
    let mut c = Cluster::start(ClusterOpts {
        worker_args: ["--reconnect-window", "10s", "--playlist-window", "40"]
            .map(String::from)
            .to_vec(),
        ..ClusterOpts::default()
    });
    let mut publisher = ReconnectingPublisher::start(&media(Media::H264Aac), &c.rtmp_url(KEY));
    let owner = c.wait_owner(KEY, Duration::from_secs(30));
    let owner_url = c.workers[owner].playlist_url(KEY);
    wait_playlist(
        &owner_url,
        Duration::from_secs(30),
        "three segments",
        |pl| pl.segments.len() >= 3,
    );
    let mut watch = ClusterWatch::default();
    for i in c.running() {
        let url = c.workers[i].playlist_url(KEY);
        watch
            .observe(i, &url, &live_fmp4())
            .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    }
    let before = watch
        .observe(owner, &owner_url, &live_fmp4())
        .unwrap_or_else(|e| panic!("{e}"));
    let starts_before = publisher.start_count();
    // The killed worker's epoch. A segment of it may still be listed after the kill: the one
    // it was building, listed whole from its LL-HLS parts by the new owner
    // (crates/registry/src/stream/salvage.rs); new media is a segment of another epoch.
    let killed_epoch = before
        .segments
        .last()
        .and_then(|s| segment_epoch_index(&s.uri))
        .map(|(e, _)| e);
    let is_new = |s: &Segment| {
        s.msn >= before.next_msn() && segment_epoch_index(&s.uri).map(|(e, _)| e) != killed_epoch
    };

    let killed_at = Instant::now();
    c.workers[owner].kill9();
    let survivors: Vec<usize> = c.running();
    assert_eq!(survivors.len(), 2);

    // Poll every survivor until three new segments follow the kill.
    let deadline = killed_at + Duration::from_secs(30);
    let mut gap: Option<f64> = None;
    let mut last_full = Instant::now();
    let mut latest: Option<MediaPlaylist> = None;
    loop {
        for &i in &survivors {
            let url = c.workers[i].playlist_url(KEY);
            let pl = watch
                .observe(i, &url, &live_fmp4())
                .unwrap_or_else(|e| panic!("after the kill: {e}\n{}", c.logs()));
            if gap.is_none() && pl.segments.iter().any(is_new) {
                gap = Some(killed_at.elapsed().as_secs_f64());
            }
            if latest.as_ref().is_none_or(|l| pl.next_msn() > l.next_msn()) {
                latest = Some(pl);
            }
        }
        let newest = latest.as_ref().unwrap();
        if last_full.elapsed() > Duration::from_millis(1500) {
            watch
                .fetch_all_listed(newest)
                .unwrap_or_else(|e| panic!("{e}"));
            last_full = Instant::now();
        }
        if newest.next_msn() >= before.next_msn() + 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no three new segments within 30 s of the kill (gap so far {gap:?}); publisher \
             started {} times\n{}",
            publisher.start_count(),
            c.logs()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let gap = gap.unwrap();
    let latest = latest.unwrap();
    eprintln!(
        "FAILOVER: kill -9 -> next new segment listed in {gap:.2} s (goal <= {GAP_GOAL_SECS} s); \
         publisher restarts: {}",
        publisher.start_count() - starts_before
    );
    let new_owner = c.wait_owner(KEY, Duration::from_secs(10));
    assert_ne!(new_owner, owner, "the dead worker still owns the stream");
    assert!(
        publisher.start_count() > starts_before,
        "the publisher never reconnected"
    );

    // The first segment after the kill starts a new epoch behind a discontinuity.
    let first_new = latest.segments.iter().find(|s| is_new(s)).cloned();
    let mut check_from = latest.clone();
    publisher.stop();
    let end_url = c.workers[new_owner].url(&format!("/api/v1/streams/default/{KEY}/end"));
    assert_eq!(try_post(&end_url), Ok(200), "ending the stream");
    for &i in &survivors {
        let url = c.workers[i].playlist_url(KEY);
        let ended = wait_playlist(&url, Duration::from_secs(10), "EXT-X-ENDLIST", |pl| {
            pl.endlist
        });
        watch
            .observe(
                i,
                &url,
                &Expect {
                    endlist: Some(true),
                    ..live_fmp4()
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
        check_from = ended;
    }
    watch
        .fetch_all_listed(&check_from)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        check_from.media_sequence, 0,
        "the test keeps the whole stream listed:\n{}",
        check_from.text
    );
    let missing = check_epochs(&check_from).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        missing.is_empty(),
        "segments lost inside a session: {missing:?}"
    );
    if let Some(first_new) = first_new {
        assert!(
            first_new.discontinuity,
            "the first segment after the failover must follow EXT-X-DISCONTINUITY:\n{}",
            check_from.text
        );
    }
    assert!(
        check_from.discontinuities() >= 1,
        "no discontinuity:\n{}",
        check_from.text
    );
    assert_decodes_cleanly(&check_from.url);
    assert!(
        gap <= GAP_GOAL_SECS,
        "failover took {gap:.2} s from the kill to the next new segment, goal {GAP_GOAL_SECS} s\n{}",
        c.logs()
    );
}
