//! Split brain on the local cluster: the worker holding a stream is frozen (`SIGSTOP`),
//! HAProxy takes it out and cuts its session, the reconnecting publisher moves to another
//! worker, and then the frozen worker is woken (`SIGCONT`) with its stale session. None of
//! its writes may reach the playlist (on any worker, including its own origin), it must drop
//! its stale session, and nothing may be corrupted: the stream stays with the new owner, the
//! publisher is not disturbed, every listed segment stays fetchable and the whole recording
//! decodes.

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use tidegate_testkit::*;

const KEY: &str = "splitbrain";

fn epoch_of(pl: &MediaPlaylist) -> u64 {
    let last = pl.segments.last().expect("a segment");
    segment_epoch_index(&last.uri).expect("seg-EPOCH-N").0
}

#[test]
fn a_frozen_owner_that_wakes_up_writes_nothing_and_lets_go() {
    let mut c = Cluster::start(ClusterOpts {
        worker_args: ["--reconnect-window", "10s", "--playlist-window", "40"]
            .map(String::from)
            .to_vec(),
        ..ClusterOpts::default()
    });
    let mut publisher = ReconnectingPublisher::start(&media(Media::H264Aac), &c.rtmp_url(KEY));
    let old = c.wait_owner(KEY, Duration::from_secs(30));
    let old_url = c.workers[old].playlist_url(KEY);
    let first = wait_playlist(&old_url, Duration::from_secs(30), "two segments", |pl| {
        pl.segments.len() >= 2
    });
    let old_epoch = epoch_of(&first);
    let mut watch = ClusterWatch::default();
    for i in c.running() {
        let url = c.workers[i].playlist_url(KEY);
        watch
            .observe(i, &url, &live_fmp4())
            .unwrap_or_else(|e| panic!("{e}"));
    }

    let paused_at = Instant::now();
    c.pause(old);

    // The publisher moves: HAProxy marks the frozen worker down and cuts its session.
    let new = wait_for(
        "the stream to move off the frozen worker",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || c.owner_of(KEY).filter(|&j| j != old),
    );
    let moved_after = paused_at.elapsed().as_secs_f64();
    let new_url = c.workers[new].playlist_url(KEY);
    let moved = wait_playlist(
        &new_url,
        Duration::from_secs(20),
        "two segments from the new owner",
        |pl| {
            pl.segments
                .iter()
                .filter(|s| segment_epoch_index(&s.uri).is_some_and(|(e, _)| e > old_epoch))
                .count()
                >= 2
        },
    );
    let new_epoch = epoch_of(&moved);
    eprintln!(
        "SPLIT BRAIN: stream on worker {new} {moved_after:.2} s after SIGSTOP, two of its \
         segments listed after {:.2} s (epoch {old_epoch} -> {new_epoch})",
        paused_at.elapsed().as_secs_f64()
    );
    for i in c.running() {
        let url = c.workers[i].playlist_url(KEY);
        watch
            .observe(i, &url, &live_fmp4())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // What the old epoch had listed (in the shared playlist) before it was frozen.
    let old_listed: BTreeSet<String> = watch
        .listed
        .values()
        .filter(|u| segment_epoch_index(u).is_some_and(|(e, _)| e == old_epoch))
        .cloned()
        .collect();
    let starts = publisher.start_count();

    c.resume(old);
    let resumed_at = Instant::now();

    // Right after the wake-up, hammer the woken worker's own origin: it must never serve a
    // segment of its stale epoch that the shared playlist did not have.
    let mut leaks = Vec::new();
    let mut fetches = 0;
    while resumed_at.elapsed() < Duration::from_secs(3) {
        if let Ok(r) = try_get(&old_url) {
            fetches += 1;
            if r.status == 200 {
                if let Ok(pl) = parse_media_playlist(&old_url, &r.text()) {
                    for s in &pl.segments {
                        let stale =
                            segment_epoch_index(&s.uri).is_some_and(|(e, _)| e == old_epoch);
                        if stale && !old_listed.contains(&s.uri) {
                            leaks.push(format!(
                                "{:.3}s after SIGCONT: {} (msn {})\n{}",
                                resumed_at.elapsed().as_secs_f64(),
                                s.uri,
                                s.msn,
                                pl.text
                            ));
                        }
                    }
                }
            }
        }
        thread::sleep(Duration::from_millis(20));
    }

    // It drops its stale session: no live stream left on it, and it says why.
    wait_for(
        "the woken worker to drop its stale session",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || (metric_value(&c.workers[old].metrics(), "tidegate_live_streams") == 0.0).then_some(()),
    );
    let log = c.workers[old].log_text();
    assert!(
        log.contains("newer epoch"),
        "the woken worker never saw it was fenced:\n{}",
        c.workers[old].proc.log_tail(30)
    );

    // For three more segments: every worker (the woken one too) serves a playlist that
    // keeps progressing, and the old epoch gains nothing.
    let until = Instant::now() + Duration::from_secs(3 * SEGMENT_SECS as u64);
    let mut last = None;
    while Instant::now() < until {
        for i in c.running() {
            let url = c.workers[i].playlist_url(KEY);
            let pl = watch
                .observe(i, &url, &live_fmp4())
                .unwrap_or_else(|e| panic!("after SIGCONT: {e}\n{}", c.logs()));
            for s in &pl.segments {
                let stale = segment_epoch_index(&s.uri).is_some_and(|(e, _)| e == old_epoch);
                assert!(
                    !stale || old_listed.contains(&s.uri),
                    "worker {i} lists {} written by the woken worker after it lost the \
                     stream:\n{}",
                    s.uri,
                    pl.text
                );
            }
            last = Some(pl);
        }
        thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        c.owner_of(KEY),
        Some(new),
        "the stream must stay with the worker that took it over"
    );
    assert_eq!(
        publisher.start_count(),
        starts,
        "the woken worker disturbed the live publisher (it had to reconnect)"
    );
    let last = last.unwrap();
    assert!(
        last.next_msn() > moved.next_msn(),
        "the playlist stopped after the wake-up:\n{}",
        last.text
    );

    publisher.stop();
    let end_url = c.workers[new].url(&format!("/api/v1/streams/default/{KEY}/end"));
    assert_eq!(try_post(&end_url), Ok(200), "ending the stream");
    let ended = wait_playlist(&new_url, Duration::from_secs(10), "EXT-X-ENDLIST", |pl| {
        pl.endlist
    });
    watch
        .fetch_all_listed(&ended)
        .unwrap_or_else(|e| panic!("{e}"));
    let missing = check_epochs(&ended).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        missing.is_empty(),
        "segments lost inside a session: {missing:?}"
    );
    assert_decodes_cleanly(&ended.url);
    assert!(
        leaks.is_empty(),
        "the woken worker's origin served {} stale-epoch segment listing(s) the shared \
         playlist never had ({fetches} fetches in 3 s); first:\n{}",
        leaks.len(),
        leaks[0]
    );
}
