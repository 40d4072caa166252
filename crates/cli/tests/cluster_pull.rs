//! SRT pull in a cluster: every worker carries the same `--pull` (one ConfigMap for all
//! replicas). One worker calls the source and publishes; the other stands by without calling
//! it (no second caller, no takeovers back and forth). When the pulling worker is killed,
//! its lease lapses, the other calls the source and the playlist continues at the same URL
//! after one discontinuity.

use std::time::Duration;

use tidegate_testkit::*;

const PULLING: &str = "srt pull: connected, publishing";
const STANDING_BY: &str = "srt pull: standing by";

#[test]
fn one_worker_pulls_the_other_stands_by_then_takes_over() {
    let port = free_udp_port();
    let mut source = srt_ffmpeg_listener(port, "");
    let pull = format!("cam=srt://127.0.0.1:{port}?latency=200&peeridletimeo=3000");
    let mut cluster = Cluster::start(ClusterOpts {
        workers: 2,
        worker_args: vec![
            "--reconnect-window".into(),
            "30s".into(),
            "--pull".into(),
            pull,
        ],
        ..ClusterOpts::default()
    });

    // One of them pulls; the other notices and stands by.
    let pulling = |c: &Cluster| -> Vec<usize> {
        (0..c.workers.len())
            .filter(|&i| c.workers[i].proc.log_text().contains(PULLING))
            .collect()
    };
    let owner = wait_for(
        "a worker to pull the stream",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || pulling(&cluster).first().copied(),
    );
    let standby = 1 - owner;
    let url = cluster.workers[standby].playlist_url("cam");
    wait_playlist(&url, Duration::from_secs(30), "two pulled segments", |pl| {
        pl.segments.len() >= 2
    });
    wait_for(
        "the other worker to stand by",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || {
            cluster.workers[standby]
                .proc
                .log_text()
                .contains(STANDING_BY)
                .then_some(())
        },
    );
    let mut watch = Watch::default();
    for _ in 0..4 {
        watch.observe(&url, &live_fmp4());
        std::thread::sleep(Duration::from_secs(1));
    }
    let steady = fetch_playlist(&url, &live_fmp4()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        pulling(&cluster),
        vec![owner],
        "only one worker may pull while it holds the stream"
    );
    assert_eq!(
        steady.discontinuities(),
        0,
        "no takeover while one worker pulls:\n{}",
        steady.text
    );
    // Both may have called at start (neither held the lease yet; the source served the
    // first); from the moment the other stands by, it must not call again.
    let standby_log = cluster.workers[standby].proc.log_text();
    let since = &standby_log[standby_log.find(STANDING_BY).unwrap()..];
    assert!(
        !since.contains("srt pull: cannot connect") && !since.contains("srt pull: retrying"),
        "the standing-by worker must not call the source:\n{}",
        cluster.workers[standby].proc.log_tail(30)
    );
    watch.accept(steady.clone());

    // The pulling worker dies. The source (an ffmpeg listener serves one caller) is
    // restarted on the same port, as a gateway would still be listening.
    cluster.workers[owner].kill9();
    let killed = std::time::Instant::now();
    source.kill();
    let _source = srt_ffmpeg_listener(port, "");
    wait_for(
        "the other worker to take the pull over",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let log = cluster.workers[standby].proc.log_text();
            let since = &log[log.find(STANDING_BY).unwrap()..];
            since.contains(PULLING).then_some(())
        },
    );
    eprintln!(
        "pull taken over {:.1} s after the kill -9",
        killed.elapsed().as_secs_f64()
    );
    let before = steady.next_msn();
    let after = wait_continued_after_discontinuity(
        &url,
        before,
        2,
        Duration::from_secs(40),
        "segments pulled by the other worker",
    );
    assert!(!after.endlist, "the stream must not have ended");
    watch.accept(fetch_playlist(&url, &live_fmp4()).unwrap_or_else(|e| panic!("{e}")));
    let log = cluster.workers[standby].proc.log_text();
    assert!(
        log.contains("srt pull: the other worker let go; pulling") && log.contains(PULLING),
        "the standing-by worker should have taken the pull over:\n{}",
        cluster.workers[standby].proc.log_tail(40)
    );
    // Every segment still listed (both workers' epochs) is fetchable from the survivor.
    fetch_all_media(&after).unwrap_or_else(|e| panic!("{e}\n--- playlist:\n{}", after.text));
    cluster.workers[standby].assert_alive();
}
