//! Losing the state store's data under a live stream (issue #14): two workers sharing one
//! real `redis-server` (no persistence) and one storage directory (`file://`), an encoder
//! that reconnects to the other worker when it loses the first.
//!
//! - **`FLUSHALL`, then `kill -9` of the owner**: the playlist stays served by both workers
//!   through the flush (the owner from its session, the other from the record snapshot in
//!   the media store, then from the record the owner writes again), the publisher stays
//!   connected, and after the kill the other worker takes the stream over where it was.
//! - **Redis restarted empty while the owner dies**: the publisher's reconnect lands on the
//!   other worker, which finds no record and rebuilds it from the media store; meanwhile
//!   that worker kept serving the playlist it knew.
//!
//! Asserted throughout, on every worker: every playlist fetch answers 200 and passes the
//! RFC checks; the media and discontinuity sequences never go back; a media sequence
//! number always names the same segment; and no segment or init name is ever fetched with
//! two different contents (every URL's bytes are hashed when first fetched from either
//! worker, and compared with every later fetch and with the storage directory at the end).

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use tidegate_testkit::*;

/// How often the watchers fetch every worker's playlist.
const POLL: Duration = Duration::from_millis(250);

fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// `redis-cli -p PORT ARGS...`, its output.
fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let out = Command::new(require_cmd("redis-cli"))
        .args(["-p", &redis.port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    assert!(out.status.success(), "redis-cli {args:?} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The stream's record is in Redis.
fn record_in_redis(redis: &RedisServer, key: &str) -> bool {
    let keys = redis_cli(
        redis,
        &["--scan", "--pattern", &format!("*:stream:default/{key}")],
    );
    !keys.is_empty()
}

/// Two workers on one Redis and one storage directory.
struct Pair {
    dir: tempfile::TempDir,
    redis: RedisServer,
    workers: Vec<Server>,
}

impl Pair {
    fn start() -> Pair {
        let dir = tempfile::Builder::new()
            .prefix("tidegate-state-loss-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("media")).unwrap();
        let redis = RedisServer::start_ephemeral();
        let mut p = Pair {
            dir,
            redis,
            workers: Vec::new(),
        };
        for i in 0..2 {
            let w = p.spawn(i);
            p.workers.push(w);
        }
        p
    }

    fn media_root(&self) -> PathBuf {
        self.dir.path().join("media")
    }

    /// Worker `i` (again, on its data directory).
    fn spawn(&self, i: usize) -> Server {
        let data = self.dir.path().join(format!("worker-{i}"));
        std::fs::create_dir_all(&data).unwrap();
        let storage = format!("file://{}", self.media_root().display());
        let redis = self.redis.url();
        Server::start_in(
            &data,
            &[
                "--state",
                &redis,
                "--storage",
                &storage,
                "--reconnect-window",
                "20s",
                "--playlist-window",
                "30",
            ],
        )
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for (i, w) in self.workers.iter().enumerate() {
            s.push_str(&format!(
                "----- worker {i} -----\n{}\n",
                w.proc.log_tail(60)
            ));
        }
        s
    }
}

/// Every playlist fetched from every worker, checked against everything seen before.
#[derive(Default)]
struct Observer {
    prev: BTreeMap<usize, MediaPlaylist>,
    /// Media sequence number → segment name, as ever listed by any worker.
    listed: BTreeMap<u64, String>,
    /// Segment or init name → hash of its bytes, as first fetched.
    hashes: BTreeMap<String, u64>,
    /// The highest `next_msn` seen.
    high: u64,
}

impl Observer {
    /// Fetches worker `i`'s playlist and checks it (see the module documentation).
    fn observe(&mut self, i: usize, url: &str) -> Result<MediaPlaylist, String> {
        let pl = fetch_playlist(url, &live_fmp4()).map_err(|e| format!("worker {i}: {e}"))?;
        if let Some(prev) = self.prev.get(&i) {
            check_progress(prev, &pl).map_err(|e| {
                format!(
                    "worker {i}: {e}\n--- before:\n{}\n--- after:\n{}",
                    prev.text, pl.text
                )
            })?;
        }
        for s in &pl.segments {
            if let Some(old) = self.listed.get(&s.msn) {
                if old != &s.uri {
                    return Err(format!(
                        "worker {i}: msn {} is {} here but was {old} before\n{}",
                        s.msn, s.uri, pl.text
                    ));
                }
            }
            self.listed.insert(s.msn, s.uri.clone());
        }
        // Every segment and map not fetched from this worker yet.
        let mut fresh = pl.clone();
        fresh
            .segments
            .retain(|s| !self.hashes.contains_key(&format!("{i}:{}", s.uri)));
        if !fresh.segments.is_empty() {
            let bodies = fetch_all_media(&fresh).map_err(|e| format!("worker {i}: {e}"))?;
            for (url, body) in bodies {
                let name = url.rsplit('/').next().unwrap_or_default().to_owned();
                let h = hash(&body);
                if let Some(old) = self.hashes.get(&name) {
                    if *old != h {
                        return Err(format!(
                            "worker {i}: {name} changed content ({} bytes now)",
                            body.len()
                        ));
                    }
                }
                self.hashes.insert(name.clone(), h);
                self.hashes.insert(format!("{i}:{name}"), h);
            }
        }
        self.high = self.high.max(pl.next_msn());
        self.prev.insert(i, pl.clone());
        Ok(pl)
    }

    /// Watches the workers `which` for `how_long`; every fetch must pass.
    fn watch(&mut self, p: &Pair, which: &[usize], how_long: Duration, what: &str) {
        let until = Instant::now() + how_long;
        while Instant::now() < until {
            for &i in which {
                let url = p.workers[i].playlist_url(KEY);
                if let Err(e) = self.observe(i, &url) {
                    panic!("{what}: {e}\n{}", p.logs());
                }
            }
            thread::sleep(POLL);
        }
    }

    /// Watches the workers `which` until the playlist grew `segments` past `from`.
    fn watch_growth(&mut self, p: &Pair, which: &[usize], from: u64, segments: u64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(25);
        while self.high < from + segments {
            assert!(
                Instant::now() < deadline,
                "{what}: the playlist did not grow past msn {from} + {segments}\n{}",
                p.logs()
            );
            self.watch(p, which, POLL, what);
        }
    }

    /// No name fetched has other bytes in the storage directory now.
    fn check_storage(&self, root: &Path) {
        let dir = root.join("default").join(KEY);
        let mut compared = 0;
        for (name, h) in &self.hashes {
            if name.contains(':') {
                continue;
            }
            if let Ok(bytes) = std::fs::read(dir.join(name)) {
                assert_eq!(hash(&bytes), *h, "{name} was overwritten in storage");
                compared += 1;
            }
        }
        assert!(
            compared > 0,
            "nothing fetched is left in storage to compare"
        );
    }
}

const KEY: &str = "state-loss";

/// `tidegate_stream_records_restored_total{how}` of worker `w`.
fn restored(w: &Server, how: &str) -> f64 {
    metric_value(
        &w.metrics(),
        &format!("tidegate_stream_records_restored_total{{how=\"{how}\"}}"),
    )
}

fn start_stream(p: &Pair) -> (ReconnectingPublisher, Observer) {
    let urls: Vec<String> = p.workers.iter().map(|w| w.rtmp_url(KEY)).collect();
    let publisher = ReconnectingPublisher::start_rotating(&media(Media::H264Aac), &urls);
    wait_playlist(
        &p.workers[0].playlist_url(KEY),
        Duration::from_secs(30),
        "two segments",
        |pl| pl.segments.len() >= 2,
    );
    let mut obs = Observer::default();
    obs.watch(p, &[0, 1], Duration::from_secs(1), "before the loss");
    (publisher, obs)
}

#[test]
fn flushall_then_kill9_keeps_the_playlist_its_numbers_and_its_names() {
    let mut p = Pair::start();
    let (mut publisher, mut obs) = start_stream(&p);

    // FLUSHALL: the owner keeps its publisher and writes its record again; both workers
    // serve the playlist throughout and it keeps growing.
    let before = obs.high;
    assert_eq!(redis_cli(&p.redis, &["FLUSHALL"]), "OK");
    obs.watch_growth(&p, &[0, 1], before, 2, "after FLUSHALL");
    wait_for(
        "the owner to write its record again",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || record_in_redis(&p.redis, KEY).then_some(()),
    );
    obs.watch(
        &p,
        &[0, 1],
        Duration::from_secs(1),
        "after the record is back",
    );
    assert_eq!(
        publisher.start_count(),
        1,
        "the publisher was disconnected by the flush\n{}",
        p.logs()
    );
    assert!(
        restored(&p.workers[0], "rewritten") >= 1.0,
        "the owner did not count its record as rewritten"
    );

    // kill -9 of the owner: the encoder reconnects to the other worker, which takes the
    // stream over where it was.
    let before = obs.high;
    p.workers[0].kill9();
    obs.watch_growth(&p, &[1], before, 2, "after kill -9 of the owner");
    assert!(publisher.start_count() >= 2);
    // The killed worker, started again, serves the same playlist.
    p.workers[0] = p.spawn(0);
    obs.prev.remove(&0);
    obs.watch(&p, &[0, 1], Duration::from_secs(2), "with the owner back");

    publisher.stop();
    let last = obs.prev.get(&1).cloned().expect("watched");
    check_epochs(&last).unwrap_or_else(|e| panic!("{e}"));
    obs.check_storage(&p.media_root());
    eprintln!(
        "STATE LOSS (FLUSHALL + kill -9): {} segment names fetched, highest msn {}",
        obs.listed.len(),
        obs.high
    );
}

#[test]
fn a_reconnect_to_the_other_worker_after_redis_came_back_empty_continues_the_playlist() {
    let mut p = Pair::start();
    let (mut publisher, mut obs) = start_stream(&p);

    // Redis (no persistence) goes down and the owner dies: the encoder's reconnects are
    // refused until Redis answers again, empty; then the other worker admits it and
    // rebuilds the record from the media store. It serves the playlist it knows
    // throughout.
    let before = obs.high;
    p.redis.stop();
    p.workers[0].kill9();
    obs.watch(&p, &[1], Duration::from_secs(3), "while Redis is down");
    p.redis.start_again();
    assert!(!record_in_redis(&p.redis, KEY), "Redis came back with data");
    obs.watch_growth(&p, &[1], before, 2, "after Redis came back empty");
    assert!(
        record_in_redis(&p.redis, KEY),
        "no record written after the rebuild"
    );
    assert!(
        restored(&p.workers[1], "rebuilt") >= 1.0,
        "the other worker did not rebuild the record from the media store"
    );
    p.workers[0] = p.spawn(0);
    obs.prev.remove(&0);
    obs.watch(
        &p,
        &[0, 1],
        Duration::from_secs(2),
        "with the old owner back",
    );

    publisher.stop();
    let last = obs.prev.get(&1).cloned().expect("watched");
    check_epochs(&last).unwrap_or_else(|e| panic!("{e}"));
    obs.check_storage(&p.media_root());
    eprintln!(
        "STATE LOSS (Redis restarted empty + kill -9): {} segment names fetched, highest msn {}",
        obs.listed.len(),
        obs.high
    );
}
