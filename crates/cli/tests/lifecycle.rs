//! The stream lifecycle: a publisher back within the reconnect window continues the same
//! playlist; one back after it starts a clean playlist after the old one ended; a worker
//! killed with SIGKILL and restarted on the same data directory continues the playlist; a
//! second publisher on a live key is refused while the first keeps streaming.

use std::thread;
use std::time::Duration;
use tidegate_testkit::*;

const KEY: &str = "show";

fn live_fmp4() -> Expect {
    Expect {
        endlist: Some(false),
        fmp4: Some(true),
        min_segments: 1,
    }
}

/// The segment that carries the first `EXT-X-DISCONTINUITY`, if any.
fn first_discontinuity(pl: &MediaPlaylist) -> Option<&Segment> {
    pl.segments.iter().find(|s| s.discontinuity)
}

#[test]
fn reconnect_within_window_continues_the_playlist() {
    let mut server = Server::start(&[]); // default 30 s window
    let url = server.playlist_url(KEY);
    let mut p1 = publish_ffmpeg(Media::H264Aac, &server.rtmp_url(KEY), &Publish::for_secs(8));
    wait_publisher_success(&mut p1, Duration::from_secs(30));
    let mut watch = Watch::default();
    let before = watch.observe(&url, &live_fmp4());
    assert!(before.segments.len() >= 3, "{}", before.text);
    assert_eq!(before.discontinuities(), 0, "{}", before.text);

    // Reconnecting: the playlist stays as it was, without ENDLIST.
    thread::sleep(Duration::from_secs(2));
    let still = watch.observe(&url, &live_fmp4());
    assert_eq!(still.next_msn(), before.next_msn(), "{}", still.text);

    let mut p2 = publish_ffmpeg(Media::H264Aac, &server.rtmp_url(KEY), &Publish::for_secs(8));
    let resumed = wait_playlist(
        &url,
        Duration::from_secs(20),
        "new media after a discontinuity",
        |pl| pl.next_msn() >= before.next_msn() + 2,
    );
    let resumed = watch.accept(resumed);
    let disc = first_discontinuity(&resumed).unwrap_or_else(|| {
        panic!(
            "no EXT-X-DISCONTINUITY before the resumed media:\n{}",
            resumed.text
        )
    });
    assert_eq!(
        disc.msn,
        before.next_msn(),
        "the discontinuity must sit right before the first new segment:\n{}",
        resumed.text
    );
    // The old segments still listed are still fetchable (Watch fetched them) and unchanged.
    let kept = resumed
        .segments
        .iter()
        .filter(|s| s.msn < before.next_msn())
        .count();
    assert!(
        kept > 0,
        "no old segment kept in the window:\n{}",
        resumed.text
    );
    wait_publisher_success(&mut p2, Duration::from_secs(30));
    let after = watch.observe(&url, &live_fmp4());
    assert_segments_start_with_keyframes(&after);
    server.assert_alive();
}

#[test]
fn reconnect_after_window_starts_a_clean_playlist() {
    let mut server = Server::start(&["--reconnect-window", "3s"]);
    let url = server.playlist_url(KEY);
    let mut p1 = publish_ffmpeg(Media::H264Aac, &server.rtmp_url(KEY), &Publish::for_secs(6));
    wait_publisher_success(&mut p1, Duration::from_secs(30));
    wait_playlist(&url, Duration::from_secs(20), "EXT-X-ENDLIST", |pl| {
        pl.endlist
    });
    let ended = fetch_playlist(
        &url,
        &Expect {
            endlist: Some(true),
            fmp4: Some(true),
            min_segments: 2,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    fetch_all_media(&ended).unwrap_or_else(|e| panic!("{e}"));

    let mut p2 = publish_ffmpeg(Media::H264Aac, &server.rtmp_url(KEY), &Publish::for_secs(6));
    let fresh = wait_playlist(
        &url,
        Duration::from_secs(20),
        "the new session's playlist",
        |pl| !pl.endlist && !pl.segments.is_empty(),
    );
    let mut watch = Watch::default();
    let fresh = watch.accept(
        check_playlist_text(&url, &fresh.text, &live_fmp4()).unwrap_or_else(|e| panic!("{e}")),
    );
    assert_eq!(
        fresh.discontinuities(),
        0,
        "a new session must not carry a discontinuity:\n{}",
        fresh.text
    );
    let old: Vec<String> = ended
        .segments
        .iter()
        .map(|s| ended.segment_url(s))
        .collect();
    for s in &fresh.segments {
        assert!(
            !old.contains(&fresh.segment_url(s)),
            "the new session lists an old segment {}:\n{}",
            s.uri,
            fresh.text
        );
    }
    wait_publisher_success(&mut p2, Duration::from_secs(30));
    let last = watch.observe(&url, &live_fmp4());
    assert_segments_start_with_keyframes(&last);
    server.assert_alive();
}

#[test]
fn sigkill_and_restart_continue_the_playlist() {
    let dir = tempfile::tempdir().unwrap();
    let mut s1 = Server::start_in(dir.path(), &[]);
    let mut p1 = publish_ffmpeg(Media::H264Aac, &s1.rtmp_url(KEY), &Publish::forever());
    let mut watch = Watch::default();
    wait_playlist(
        &s1.playlist_url(KEY),
        Duration::from_secs(25),
        "three segments",
        |pl| pl.segments.len() >= 3,
    );
    let before = watch.observe(&s1.playlist_url(KEY), &live_fmp4());
    s1.kill9();
    // The publisher loses its connection and gives up.
    if p1.wait_exit(Duration::from_secs(15)).is_none() {
        p1.kill();
    }

    let mut s2 = Server::start_in(dir.path(), &[]);
    let url = s2.playlist_url(KEY);
    // Before anyone publishes again, the restarted worker serves the same playlist
    // (reconnecting: no ENDLIST, nothing lost that was listed).
    let recovered = wait_playlist(
        &url,
        Duration::from_secs(10),
        "the recovered playlist",
        |_| true,
    );
    let recovered = watch.accept(
        check_playlist_text(&url, &recovered.text, &live_fmp4()).unwrap_or_else(|e| panic!("{e}")),
    );

    let _p2 = publish_ffmpeg(Media::H264Aac, &s2.rtmp_url(KEY), &Publish::forever());
    let resumed = wait_playlist(
        &url,
        Duration::from_secs(25),
        "new media after the restart",
        |pl| pl.next_msn() >= recovered.next_msn() + 2,
    );
    let resumed = watch.accept(resumed);
    let disc = first_discontinuity(&resumed).unwrap_or_else(|| {
        panic!(
            "no EXT-X-DISCONTINUITY after the restart:\n{}",
            resumed.text
        )
    });
    assert!(
        disc.msn >= before.next_msn(),
        "discontinuity at msn {} inside what was listed before the kill:\n{}",
        disc.msn,
        resumed.text
    );
    assert_segments_start_with_keyframes(&resumed);
    s2.assert_alive();
}

#[test]
fn second_publisher_is_refused_while_the_first_streams() {
    let mut server = Server::start(&[]);
    let url = server.playlist_url(KEY);
    let mut first = publish_ffmpeg(Media::H264Aac, &server.rtmp_url(KEY), &Publish::forever());
    wait_playlist(&url, Duration::from_secs(25), "two segments", |pl| {
        pl.segments.len() >= 2
    });
    let mut watch = Watch::default();
    let before = watch.observe(&url, &live_fmp4());

    let mut second = publish_ffmpeg(
        Media::H264Aac,
        &server.rtmp_url(KEY),
        &Publish::for_secs(20),
    );
    let status = second
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| {
            panic!(
                "the second publisher on a live key is still running after 15 s; log:\n{}",
                second.log_tail(20)
            )
        });
    assert!(
        !status.success(),
        "the second publisher was not refused (exit {status}); log:\n{}",
        second.log_tail(20)
    );
    assert!(
        first.is_running(),
        "the first publisher died; log:\n{}",
        first.log_tail(20)
    );

    let grown = wait_playlist(
        &url,
        Duration::from_secs(15),
        "the first publisher's playlist to keep growing",
        |pl| pl.next_msn() >= before.next_msn() + 2,
    );
    let grown = watch.accept(grown);
    assert_eq!(
        grown.discontinuities(),
        0,
        "the refused publisher disturbed the stream:\n{}",
        grown.text
    );
    assert!(first.is_running(), "{}", first.log_tail(20));
    server.assert_alive();
}
