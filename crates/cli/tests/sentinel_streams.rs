//! A Redis Sentinel failover under ten live streams on three workers (issue #14, tests 4(b)
//! and 4(c)): a real `redis-server` primary, one replica and three Sentinels
//! (`redis-server --sentinel`) on loopback; three workers with `--state
//! redis+sentinel://…/tidegate` and one media store (a directory, or the S3 server moto);
//! ten ffmpeg publishers (testsrc2 320x180, 2 s GOP, `-c copy` of one file made once), streams
//! spread over the workers. The primary is `kill -9`ed; then, for every stream:
//! - its publisher stays connected (the ffmpeg process is still running at the end);
//! - its playlist grows again on every worker, its media sequence never goes back on any
//!   of them, and a media sequence number always names the same segment;
//! - no segment URL's bytes change: every segment is fetched when first listed and again at
//!   the end through the workers in turn, and every segment and init object of the media store
//!   is hashed when first seen and again at the end;
//! - no epoch was written by two workers: the media store is listed every 250 ms and every
//!   record snapshot `record-E.json` read; each (stream, epoch) must name one owner in all
//!   its versions, every epoch of a segment or init object must have such a snapshot, and
//!   that owner must be the one worker whose log says it admitted a publisher at that epoch
//!   (`publishing … epoch=E`); no worker logs a takeover or a fenced session.
//!
//! hls.js (low-latency mode, the page's default) in headless chromium plays one stream
//! through a round-robin proxy over the three workers across the failover, with no fatal
//! error, and stands still 1 s at most (with either store). Each test prints the promotion time and, per stream, the time from the kill until
//! its playlist was two segments further on every worker.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tidegate_testkit::*;

const STREAMS: usize = 10;
const WORKERS: usize = 3;
/// The stream hls.js plays.
const VIEWED: usize = 0;
/// The longest hls.js may stand still across the failover.
const MAX_STALL_MS: f64 = 1000.0;

#[test]
fn ten_streams_ride_out_a_sentinel_failover_in_chromium_on_file_storage() {
    failover_under_ten_streams(Backend::File, true);
}

#[test]
fn ten_streams_ride_out_a_sentinel_failover_in_chromium_on_s3_storage() {
    failover_under_ten_streams(Backend::S3, true);
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    File,
    S3,
}

fn key(s: usize) -> String {
    format!("sentinel{s}")
}

fn failover_under_ten_streams(backend: Backend, viewer: bool) {
    let t0 = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("tidegate-sentinel10-")
        .tempdir()
        .unwrap();
    let redis = Sentinels::start(dir.path());
    let (storage, store) = match backend {
        Backend::File => {
            let media = dir.path().join("media");
            std::fs::create_dir_all(&media).unwrap();
            (
                format!("file://{}", media.display()),
                MediaStore::Dir(media),
            )
        }
        Backend::S3 => {
            let s3 = MotoS3::start("tidegate");
            (
                format!("s3://{}/live", s3.bucket),
                MediaStore::S3 {
                    base: format!("http://{}/{}", s3.addr, s3.bucket),
                    prefix: "live/".to_owned(),
                    _s3: s3,
                },
            )
        }
    };
    let workers = start_workers(dir.path(), &redis.state_url(), &storage, &store);
    let file = media_short_gop(40);
    let mut publishers: Vec<Proc> = (0..STREAMS)
        .map(|s| {
            publish_with(
                &ffmpeg(),
                &file,
                &workers[s % WORKERS].rtmp_url(&key(s)),
                &Publish::forever(),
            )
        })
        .collect();
    let history = Arc::new(Mutex::new(History::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let lister = {
        let (history, stop, store) = (history.clone(), stop.clone(), store.clone_handle());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                history.lock().unwrap().observe(&store);
                thread::sleep(Duration::from_millis(250));
            }
        })
    };

    let mut watch = Watch::default();
    watch.until(
        &workers,
        |_| 2,
        Duration::from_secs(40),
        "two segments of every stream on every worker before the failover",
    );
    eprintln!(
        "all {STREAMS} streams live on every worker at {:?}",
        t0.elapsed()
    );

    let proxy = RoundRobinProxy::start(&workers.iter().map(|w| w.http).collect::<Vec<_>>());
    let mut browser = viewer.then(|| {
        let path = format!("/hls/default/{}/index.m3u8", key(VIEWED));
        let mut b = Players::start(&[PlayerSpec::new("hlsjs", Engine::HlsJs, &proxy.url(&path))]);
        let playing = b.wait_started(Duration::from_secs(60));
        assert_eq!(playing.len(), 1, "hls.js is not playing:\n{}", b.output());
        // A few seconds of play before the failure.
        watch.for_a_while(&workers, Duration::from_secs(4));
        b
    });

    // Every epoch write so far was acknowledged by the replica (`WAIT 1`).
    assert!(
        redis
            .cli_primary(&["INFO", "commandstats"])
            .contains("cmdstat_wait:"),
        "no WAIT reached the primary"
    );

    // kill -9 of the primary; the Sentinels promote the replica.
    let before: Vec<u64> = (0..STREAMS).map(|s| watch.highest(s)).collect();
    let (failed_before, failures_before) = (watch.failed, std::mem::take(&mut watch.failures));
    watch.failed = 0;
    let killed = Instant::now();
    let killed_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    redis.kill_primary();
    let promoted = redis.wait_promotion();
    let promoted_after = killed.elapsed();
    let grew = watch.until(
        &workers,
        |s| before[s] + 1,
        Duration::from_secs(40),
        "every stream one segment further on every worker after the failover",
    );
    let recovered = watch.until(
        &workers,
        |s| before[s] + 2,
        Duration::from_secs(40),
        "every stream two segments further on every worker after the failover",
    );
    let since_kill = |at: &[Instant]| -> Vec<Duration> {
        at.iter()
            .map(|at| at.saturating_duration_since(killed))
            .collect()
    };
    let (grew, recovered) = (since_kill(&grew), since_kill(&recovered));
    assert!(promoted, "the Sentinels did not promote the replica");

    // hls.js plays on for a while after the failover.
    let report = browser.take().map(|mut b| {
        watch.for_a_while(&workers, Duration::from_secs(6));
        let fatal = b.wait_line(Duration::from_millis(100), |l| l.starts_with("FATAL "));
        let output = b.output();
        let reports = b.finish();
        assert!(fatal.is_none(), "{fatal:?}\n{output}");
        assert_eq!(reports.len(), 1, "{output}");
        reports.into_iter().next().unwrap()
    });

    for (s, p) in publishers.iter_mut().enumerate() {
        assert!(
            p.is_running(),
            "stream {s}: its publisher was disconnected:\n{}\n{}",
            p.log_tail(20),
            logs(&workers)
        );
    }
    // The same bytes behind every segment URL, through another worker than the first.
    watch.refetch_all(&workers);
    stop.store(true, Ordering::SeqCst);
    lister.join().unwrap();
    let mut history = Arc::try_unwrap(history)
        .map_err(|_| ())
        .unwrap()
        .into_inner()
        .unwrap();
    history.observe(&store.clone_handle());
    let changed = history.changed_bytes(&store);
    assert!(
        changed.is_empty(),
        "objects whose bytes changed: {changed:?}"
    );
    let epochs = history.check_one_writer_per_epoch(&workers);
    for (i, w) in workers.iter().enumerate() {
        let log = w.log_text();
        for bad in [
            "taking the stream over",
            "closing this publisher",
            "session superseded",
        ] {
            assert!(
                !log.contains(bad),
                "worker {i} logged {bad:?}\n{}",
                logs(&workers)
            );
        }
    }
    for p in &mut publishers {
        p.kill();
    }
    let followed = workers
        .iter()
        .filter(|w| w.log_text().contains("Sentinel names a new Redis primary"))
        .count();

    let mut sorted = recovered.clone();
    sorted.sort();
    eprintln!(
        "SENTINEL FAILOVER ({backend:?}, {STREAMS} streams, {WORKERS} workers): promoted {:.1} s \
         after the kill; {followed} workers logged the new primary; every playlist one \
         segment further on every worker after (s): {}; two segments further after (s): {}; \
         median {:.1} s, max {:.1} s; playlist fetches failed: {failed_before} before the kill \
         (while the streams started; first {failures_before:?}), {} after it (first {:?}); {} \
         segment URLs refetched; epochs checked: {epochs}; test took {:.1} s",
        promoted_after.as_secs_f64(),
        seconds(&grew),
        seconds(&recovered),
        sorted[sorted.len() / 2].as_secs_f64(),
        sorted[sorted.len() - 1].as_secs_f64(),
        watch.failed,
        watch.failures,
        watch.bytes.len(),
        t0.elapsed().as_secs_f64()
    );
    if let Some(r) = report {
        eprintln!("PLAYER {}", r.line());
        eprintln!("PROXY:\n{}", proxy.summary());
        eprintln!(
            "primary killed at unix {killed_unix:.3}; requests held 900 ms or more or refused:"
        );
        for r in proxy
            .requests()
            .iter()
            .filter(|r| r.head_ms >= 900 || r.status >= 400)
        {
            eprintln!("  {r:?}");
        }
        assert!(r.fatal().is_empty(), "hls.js: {}", r.line());
        assert!(
            r.played_s() >= 8.0,
            "hls.js played too little: {}",
            r.line()
        );
        // With either store. On S3: 1.3 s and 2.4 s in 2 runs of 10 before the workers that
        // do not ingest read the record every 150 ms while their change feed is down and
        // stopped showing older copies of a playlist (and 404s for its parts); 0-0.7 s in
        // 11 runs since (501, 294, 0, 0, 502, 0, 700, 0, 0, 0, 200 ms). Later, on the file
        // store, 0.9-1.5 s in about half the runs beside other tests: hls.js at 1.5 s latency
        // holds ~1.1 s of buffer, and the workers that do not ingest learned of new parts
        // only once a segment (the snapshot) until the 2.3 s promotion; since the snapshot
        // follows each part during an outage (decision 0020), 0 ms in 4 runs.
        assert!(
            r.longest_stall_ms() <= MAX_STALL_MS,
            "hls.js stood still longer than {MAX_STALL_MS} ms: {}",
            r.line()
        );
    }
}

/// Three workers on one state (Sentinel) and one media store.
fn start_workers(run: &Path, state: &str, storage: &str, store: &MediaStore) -> Vec<Server> {
    if let MediaStore::S3 { base, .. } = store {
        // The workers inherit the S3 settings (nextest runs each test in its own process).
        let endpoint = base.rsplit_once('/').map_or(base.as_str(), |(e, _)| e);
        for (k, v) in [
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ] {
            std::env::set_var(k, v);
        }
        for k in [
            "AWS_ENDPOINT",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
        ] {
            std::env::remove_var(k);
        }
    }
    (0..WORKERS)
        .map(|i| {
            let data = run.join(format!("worker-{i}"));
            std::fs::create_dir_all(&data).unwrap();
            Server::start_in(
                &data,
                &[
                    "--state",
                    state,
                    "--storage",
                    storage,
                    "--reconnect-window",
                    "20s",
                    "--playlist-window",
                    "30",
                ],
            )
        })
        .collect()
}

fn logs(workers: &[Server]) -> String {
    workers
        .iter()
        .enumerate()
        .map(|(i, w)| format!("----- worker {i} -----\n{}\n", w.proc.log_tail(30)))
        .collect()
}

/// `STREAM:SECONDS …`, one a stream.
fn seconds(per_stream: &[Duration]) -> String {
    per_stream
        .iter()
        .enumerate()
        .map(|(s, d)| format!("{s}:{:.1}", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The media store as the test reads it behind the workers' backs.
enum MediaStore {
    Dir(PathBuf),
    S3 {
        /// `http://HOST:PORT/BUCKET`.
        base: String,
        /// The workers' key prefix.
        prefix: String,
        _s3: MotoS3,
    },
}

/// An `Authorization` header moto takes (it reads the access key, checks no signature).
const MOTO_AUTH: &str = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, \
                         SignedHeaders=host, Signature=0";

/// What the lister thread reads with.
#[derive(Clone)]
enum StoreHandle {
    Dir(PathBuf),
    S3 { base: String, prefix: String },
}

impl MediaStore {
    fn clone_handle(&self) -> StoreHandle {
        match self {
            MediaStore::Dir(d) => StoreHandle::Dir(d.clone()),
            MediaStore::S3 { base, prefix, .. } => StoreHandle::S3 {
                base: base.clone(),
                prefix: prefix.clone(),
            },
        }
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The text between every `<tag>` and `</tag>` of `xml`.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&close).map(|(v, _)| v.to_owned()))
        .collect()
}

impl StoreHandle {
    /// Every object's key (relative to the workers' root: `TENANT/KEY/NAME`).
    fn list(&self) -> Vec<String> {
        match self {
            StoreHandle::Dir(root) => {
                let mut out = Vec::new();
                let mut dirs = vec![root.clone()];
                while let Some(d) = dirs.pop() {
                    let Ok(entries) = std::fs::read_dir(&d) else {
                        continue;
                    };
                    for e in entries.flatten() {
                        let p = e.path();
                        if p.is_dir() {
                            dirs.push(p);
                        } else if let Ok(rel) = p.strip_prefix(root) {
                            out.push(rel.display().to_string());
                        }
                    }
                }
                out
            }
            StoreHandle::S3 { base, prefix } => {
                let mut out = Vec::new();
                let mut token: Option<String> = None;
                loop {
                    let mut url = format!("{base}?list-type=2&prefix={}", percent_encode(prefix));
                    if let Some(t) = &token {
                        url.push_str(&format!("&continuation-token={}", percent_encode(t)));
                    }
                    let Ok(r) = try_get(&url) else {
                        return out;
                    };
                    let xml = r.text();
                    out.extend(
                        xml_values(&xml, "Key")
                            .into_iter()
                            .filter_map(|k| k.strip_prefix(prefix.as_str()).map(str::to_owned)),
                    );
                    token = xml_values(&xml, "NextContinuationToken").into_iter().next();
                    if token.is_none() {
                        return out;
                    }
                }
            }
        }
    }

    /// An object's bytes (`None`: gone or unreadable).
    fn get(&self, name: &str) -> Option<Vec<u8>> {
        match self {
            StoreHandle::Dir(root) => std::fs::read(root.join(name)).ok(),
            StoreHandle::S3 { base, prefix } => {
                // moto answers 403 to an anonymous GetObject; it checks no signature.
                let r = ureq::get(&format!("{base}/{prefix}{name}"))
                    .set("Authorization", MOTO_AUTH)
                    .timeout(Duration::from_secs(10))
                    .call()
                    .ok()?;
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut r.into_reader(), &mut body).ok()?;
                Some(body)
            }
        }
    }
}

/// `STREAM/NAME` split into the stream (`TENANT/KEY`) and the object's name.
fn split_object(path: &str) -> Option<(&str, &str)> {
    path.rsplit_once('/')
}

/// The epoch in an object's name: `seg-E-…`, `init-E-…`, `record-E.json`.
fn epoch_of(name: &str) -> Option<u64> {
    let rest = name
        .strip_prefix("seg-")
        .or_else(|| name.strip_prefix("init-"))
        .or_else(|| name.strip_prefix("record-"))?;
    rest.split(['-', '.']).next()?.parse().ok()
}

/// The media store as the lister saw it over time.
#[derive(Default)]
struct History {
    /// Hash of every whole segment and init object when first seen.
    first_bytes: BTreeMap<String, u64>,
    /// (stream, epoch) → the owners its `record-E.json` named in any version read.
    owners: BTreeMap<(String, u64), BTreeSet<String>>,
    /// (stream, epoch) of every segment, part or init object seen.
    media_epochs: BTreeSet<(String, u64)>,
    /// Snapshots listed that could not be read, with why (the last ones).
    unread: Vec<String>,
    lists: usize,
}

impl History {
    fn observe(&mut self, store: &StoreHandle) {
        self.lists += 1;
        for path in store.list() {
            let Some((stream, name)) = split_object(&path) else {
                continue;
            };
            let Some(epoch) = epoch_of(name) else {
                continue;
            };
            if name.starts_with("record-") {
                let Some(bytes) = store.get(&path) else {
                    self.unread.push(format!("{path}: no answer"));
                    continue;
                };
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                    self.unread
                        .push(format!("{path}: {}", String::from_utf8_lossy(&bytes)));
                    continue;
                };
                let owner = v["owner"].as_str().unwrap_or("?").to_owned();
                self.owners
                    .entry((stream.to_owned(), epoch))
                    .or_default()
                    .insert(owner);
                continue;
            }
            self.media_epochs.insert((stream.to_owned(), epoch));
            // Whole segments and init segments; the LL-HLS parts (`seg-E-N.P.m4s`) are
            // many and are checked through their epoch only.
            let whole = name.starts_with("init-") || name.matches('.').count() == 1;
            if whole && !self.first_bytes.contains_key(&path) {
                if let Some(bytes) = store.get(&path) {
                    self.first_bytes.insert(path, hash(&bytes));
                }
            }
        }
    }

    /// The objects (still there) whose bytes differ from what was first read.
    fn changed_bytes(&self, store: &MediaStore) -> Vec<String> {
        let store = store.clone_handle();
        self.first_bytes
            .iter()
            .filter(|(path, h)| store.get(path).is_some_and(|b| hash(&b) != **h))
            .map(|(path, _)| path.clone())
            .collect()
    }

    /// Each (stream, epoch) was written by one worker: its snapshots name one owner, every
    /// epoch of a media object has a snapshot, and the owner is the only worker that logged
    /// admitting a publisher of that stream at that epoch. Returns a summary.
    fn check_one_writer_per_epoch(&self, workers: &[Server]) -> String {
        // (stream, epoch) → the workers whose log says `publishing … epoch=E`.
        let mut admitted: BTreeMap<(String, u64), BTreeSet<usize>> = BTreeMap::new();
        for (i, w) in workers.iter().enumerate() {
            for line in w.log_text().lines() {
                if !line.contains(" publishing") {
                    continue;
                }
                let field = |k: &str| {
                    line.split_whitespace()
                        .find_map(|t| t.strip_prefix(k))
                        .map(|v| v.trim_matches('"').to_owned())
                };
                let (Some(stream), Some(epoch)) = (field("stream="), field("epoch=")) else {
                    continue;
                };
                let Ok(epoch) = epoch.parse::<u64>() else {
                    continue;
                };
                admitted.entry((stream, epoch)).or_default().insert(i);
            }
        }
        let worker_of = |owner: &str| {
            workers
                .iter()
                .position(|w| owner.ends_with(&format!("-{}", w.http.port())))
        };
        for ((stream, epoch), owners) in &self.owners {
            assert_eq!(
                owners.len(),
                1,
                "{stream} epoch {epoch}: its snapshots named several owners: {owners:?}"
            );
            let owner = owners.iter().next().unwrap();
            let by_log = admitted.get(&(stream.clone(), *epoch));
            if let Some(by_log) = by_log {
                assert_eq!(
                    by_log.len(),
                    1,
                    "{stream} epoch {epoch}: several workers admitted a publisher: {by_log:?}"
                );
                assert_eq!(
                    by_log.iter().next().copied(),
                    worker_of(owner),
                    "{stream} epoch {epoch}: the snapshot's owner {owner} is not the worker \
                     that logged the admission"
                );
            }
        }
        for ((stream, epoch), by_log) in &admitted {
            assert_eq!(
                by_log.len(),
                1,
                "{stream} epoch {epoch}: several workers admitted a publisher: {by_log:?}"
            );
        }
        for (stream, epoch) in &self.media_epochs {
            assert!(
                self.owners.contains_key(&(stream.clone(), *epoch)),
                "{stream}: media objects of epoch {epoch} but no snapshot of that epoch was seen; \
                 snapshots seen: {:?}; unread: {:?}",
                self.owners,
                self.unread
            );
        }
        assert!(
            self.first_bytes.len() >= 2 * STREAMS,
            "only {} whole objects of the media store could be read",
            self.first_bytes.len()
        );
        assert!(
            self.owners.len() >= STREAMS,
            "snapshots of {} epochs seen for {STREAMS} streams: {:?}",
            self.owners.len(),
            self.owners
        );
        format!(
            "{} (stream, epoch) pairs, each one owner in its snapshots and one admitting worker \
             in the logs ({} admissions logged); {} listings of the media store, {} whole \
             objects hashed",
            self.owners.len(),
            admitted.len(),
            self.lists,
            self.first_bytes.len()
        )
    }
}

/// Every stream's playlist followed on every worker.
#[derive(Default)]
struct Watch {
    /// (stream, worker) → the last playlist fetched.
    prev: BTreeMap<(usize, usize), MediaPlaylist>,
    /// (stream, msn) → segment name.
    listed: BTreeMap<(usize, u64), String>,
    /// Segment URL path (`/hls/…`) → the hash of its bytes when first fetched.
    bytes: BTreeMap<String, u64>,
    failed: usize,
    /// The first few failed fetches: (stream, worker, error).
    failures: Vec<(usize, usize, String)>,
}

impl Watch {
    fn highest(&self, s: usize) -> u64 {
        (0..WORKERS)
            .filter_map(|w| self.prev.get(&(s, w)).map(MediaPlaylist::next_msn))
            .max()
            .unwrap_or(0)
    }

    /// Fetches every playlist once; returns which (stream, worker) reached `target(stream)`.
    fn round(&mut self, workers: &[Server], target: &impl Fn(usize) -> u64) -> Vec<Vec<bool>> {
        let mut reached = vec![vec![false; WORKERS]; STREAMS];
        for (s, reached) in reached.iter_mut().enumerate() {
            for (i, w) in workers.iter().enumerate() {
                let pl = match fetch_playlist(&w.playlist_url(&key(s)), &live_fmp4()) {
                    Ok(pl) => pl,
                    Err(e) => {
                        self.failed += 1;
                        if self.failures.len() < 5 {
                            self.failures.push((s, i, e.chars().take(200).collect()));
                        }
                        continue;
                    }
                };
                if let Some(before) = self.prev.get(&(s, i)) {
                    if let Err(e) = check_progress(before, &pl) {
                        panic!(
                            "stream {s} worker {i}: {e}\n--- before:\n{}\n--- after:\n{}\n{}",
                            before.text,
                            pl.text,
                            logs(workers)
                        );
                    }
                }
                for seg in &pl.segments {
                    let uri = self
                        .listed
                        .entry((s, seg.msn))
                        .or_insert_with(|| seg.uri.clone());
                    assert_eq!(
                        uri, &seg.uri,
                        "stream {s} worker {i}: msn {} changed its segment\n{}",
                        seg.msn, pl.text
                    );
                    let url = pl.segment_url(seg);
                    let path = url_path(&url);
                    if let std::collections::btree_map::Entry::Vacant(e) = self.bytes.entry(path) {
                        if let Ok(r) = try_get(&url) {
                            if r.status == 200 {
                                e.insert(hash(&r.body));
                            }
                        }
                    }
                }
                reached[i] = pl.next_msn() >= target(s);
                self.prev.insert((s, i), pl);
            }
        }
        reached
    }

    /// Watches until every stream reaches `target(stream)` on every worker; returns when
    /// each stream did (all its workers).
    fn until(
        &mut self,
        workers: &[Server],
        target: impl Fn(usize) -> u64,
        within: Duration,
        what: &str,
    ) -> Vec<Instant> {
        let deadline = Instant::now() + within;
        let mut done: Vec<Option<Instant>> = vec![None; STREAMS];
        loop {
            let reached = self.round(workers, &target);
            let now = Instant::now();
            for (s, r) in reached.iter().enumerate() {
                if done[s].is_none() && r.iter().all(|x| *x) {
                    done[s] = Some(now);
                }
            }
            if done.iter().all(Option::is_some) {
                return done.into_iter().flatten().collect();
            }
            assert!(
                now < deadline,
                "{what}: not reached after {within:?} by streams {:?}\n{}",
                done.iter()
                    .enumerate()
                    .filter(|(_, d)| d.is_none())
                    .map(|(s, _)| s)
                    .collect::<Vec<_>>(),
                logs(workers)
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    fn for_a_while(&mut self, workers: &[Server], d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.round(workers, &|_| 0);
            thread::sleep(Duration::from_millis(300));
        }
    }

    /// Fetches every segment URL again, through the workers in turn: the bytes must be the
    /// same as when it was first listed.
    fn refetch_all(&self, workers: &[Server]) {
        for (n, (path, h)) in self.bytes.iter().enumerate() {
            let w = &workers[n % WORKERS];
            let r = try_get(&w.url(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
            if r.status == 404 {
                // Slid out of the window and expired: nothing to compare.
                continue;
            }
            assert_eq!(r.status, 200, "{path} through worker {}", n % WORKERS);
            assert_eq!(hash(&r.body), *h, "{path}: its bytes changed");
        }
    }
}

/// `/PATH` of `http://HOST:PORT/PATH`.
fn url_path(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/')
        .map_or("/".to_owned(), |i| rest[i..].to_owned())
}
