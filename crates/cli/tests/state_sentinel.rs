//! A Redis failover under a live stream (issue #14 item 3): a real `redis-server` primary,
//! one replica and three Sentinels (`redis-server --sentinel`) on loopback; two workers with
//! `--state redis+sentinel://…/tidegate` and one storage directory; one stream published to
//! the first worker. The primary is `kill -9`ed: the Sentinels promote the replica, both
//! workers follow it (commands and change feed), and the stream goes on: the playlist grows
//! again on both workers, its media sequence never goes back on either, and a media sequence
//! number always names the same segment.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use tidegate_testkit::*;

const KEY: &str = "sentinel";

#[test]
fn a_sentinel_failover_under_a_live_stream_keeps_it_going_on_both_workers() {
    let t0 = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("tidegate-sentinel-")
        .tempdir()
        .unwrap();
    let media = dir.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    // No persistence; the replica's copy of the primary (a full sync) goes into `dir`. Each
    // Sentinel knows the replica and the two other Sentinels before the failure.
    let redis = Sentinels::start(dir.path());
    let state = redis.state_url();
    let storage = format!("file://{}", media.display());
    let workers: Vec<Server> = (0..2)
        .map(|i| {
            let data = dir.path().join(format!("worker-{i}"));
            std::fs::create_dir_all(&data).unwrap();
            Server::start_in(
                &data,
                &[
                    "--state",
                    &state,
                    "--storage",
                    &storage,
                    "--reconnect-window",
                    "20s",
                    "--playlist-window",
                    "30",
                ],
            )
        })
        .collect();
    let urls: Vec<String> = workers.iter().map(|w| w.rtmp_url(KEY)).collect();
    let mut publisher = ReconnectingPublisher::start_rotating(&media_file(), &urls);
    wait_playlist(
        &workers[0].playlist_url(KEY),
        Duration::from_secs(30),
        "two segments",
        |pl| pl.segments.len() >= 2,
    );

    let mut watch = Watch::default();
    watch.until(&workers, 0, "before the failover");
    let before = watch.high[0].max(watch.high[1]);

    // The admission's epoch write waited for the replica (`WAIT 1`), which acknowledged it.
    assert!(
        redis
            .cli_primary(&["INFO", "commandstats"])
            .contains("cmdstat_wait:"),
        "no WAIT reached the primary"
    );
    for (i, w) in workers.iter().enumerate() {
        let log = w.log_text();
        assert!(
            !log.contains("no Redis replica acknowledged")
                && !log.contains("could not wait for a Redis replica"),
            "worker {i}: an epoch write was not acknowledged by the replica\n{}",
            logs(&workers)
        );
    }

    // kill -9 of the primary; the Sentinels promote the replica.
    redis.kill_primary();
    let killed = Instant::now();
    wait_for(
        "the Sentinels to promote the replica",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || (redis.named_primary() == Some(redis.r_port)).then_some(()),
    );
    let promoted = killed.elapsed();
    watch.until(&workers, before + 2, "after the failover");
    let recovered = killed.elapsed();
    assert_eq!(
        publisher.start_count(),
        1,
        "the publisher was disconnected by the failover\n{}",
        logs(&workers)
    );
    // The stream's record on the new primary lists what was published after the switch.
    let record_key = format!("tidegate:stream:default/{KEY}");
    wait_for(
        "the record on the new primary to list the segments published after the switch",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let json = redis.cli_replica(&["GET", &record_key]);
            let v: serde_json::Value = serde_json::from_str(&json).ok()?;
            let next = v["playlist"]["next_sequence"].as_u64()?;
            (next >= before + 2).then_some(())
        },
    );
    let followed = workers
        .iter()
        .all(|w| w.log_text().contains("Sentinel names a new Redis primary"));
    assert!(
        followed,
        "a worker did not log following the new primary\n{}",
        logs(&workers)
    );
    publisher.stop();
    let failed = watch.failed;
    eprintln!(
        "SENTINEL FAILOVER: promoted {promoted:?} after the kill, both playlists 2 segments \
         further {recovered:?} after it; {failed} playlist fetches failed meanwhile; \
         test took {:?}",
        t0.elapsed()
    );
}

fn media_file() -> std::path::PathBuf {
    media(Media::H264Aac)
}

fn logs(workers: &[Server]) -> String {
    workers
        .iter()
        .enumerate()
        .map(|(i, w)| format!("----- worker {i} -----\n{}\n", w.proc.log_tail(40)))
        .collect()
}

/// Every playlist fetched from both workers: each fetch that answers is checked against the
/// previous one of its worker, and a media sequence number names one segment on both.
/// Fetches may fail while Redis fails over (counted).
#[derive(Default)]
struct Watch {
    prev: BTreeMap<usize, MediaPlaylist>,
    listed: BTreeMap<u64, String>,
    high: [u64; 2],
    failed: usize,
}

impl Watch {
    fn observe(&mut self, workers: &[Server], what: &str) {
        for (i, w) in workers.iter().enumerate() {
            let Ok(pl) = fetch_playlist(&w.playlist_url(KEY), &live_fmp4()) else {
                self.failed += 1;
                continue;
            };
            if let Some(before) = self.prev.get(&i) {
                if let Err(e) = check_progress(before, &pl) {
                    panic!(
                        "{what}: worker {i}: {e}\n--- before:\n{}\n--- after:\n{}\n{}",
                        before.text,
                        pl.text,
                        logs(workers)
                    );
                }
            }
            for s in &pl.segments {
                let uri = self.listed.entry(s.msn).or_insert_with(|| s.uri.clone());
                assert_eq!(
                    uri, &s.uri,
                    "{what}: worker {i}: msn {} changed its segment\n{}",
                    s.msn, pl.text
                );
            }
            self.high[i] = pl.next_msn();
            self.prev.insert(i, pl);
        }
    }

    /// Watches until both workers list up to `target` (30 s at most).
    fn until(&mut self, workers: &[Server], target: u64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.observe(workers, what);
            if self.high.iter().all(|h| *h >= target) && self.prev.len() == 2 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the playlist did not reach msn {target} on both workers ({:?})\n{}",
                self.high,
                logs(workers)
            );
            thread::sleep(Duration::from_millis(250));
        }
    }
}
