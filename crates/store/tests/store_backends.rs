//! The cluster backends against real servers: a `redis-server` and an S3-compatible server
//! (`moto_server` from the PyPI package `moto[server]`), each started by the test on a free
//! loopback port and killed when it ends. `scripts/install-test-tools.sh` installs both; a
//! missing one fails the test with a message naming it (never a silent skip).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidegate_config::ServeConfig;
use tidegate_packager::{Container, PlaylistState};
use tidegate_store::fs::FsStateStore;
use tidegate_store::redis::{self as redis_store, RedisStateStore};
use tidegate_store::s3::{self as s3_store, AmazonS3Builder, S3MediaStore};
use tidegate_store::{
    Change, KeyRecord, MediaStore, StateStore, StoreError, StreamId, StreamKey, StreamRecord,
    TenantRecord, TenantSettings, WorkerRecord,
};
use tidegate_testkit::{free_tcp_port, require_cmd, MotoS3, Proc, RedisServer};

/// How long a test service may take to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// Slack over a backend's own timeout for "fails within the timeout".
const SLACK: Duration = Duration::from_millis(700);

/// Sends `request` over a fresh connection and returns what came back before the peer closed
/// (or 2 s passed).
fn raw_exchange(port: u16, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(request)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                // Redis keeps the connection open: one line is the whole answer.
                if out.ends_with(b"\r\n") && request.ends_with(b"PING\r\n") {
                    break;
                }
            }
            Err(e) if out.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    Ok(out)
}

/// Sends `sig` (`-STOP`, `-CONT`) to a test service with `kill(1)`.
fn signal(service: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &service.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {} failed", service.name);
}

/// The process of a running Redis.
fn running(redis: &RedisServer) -> &Proc {
    redis.proc.as_ref().expect("redis-server is running")
}

fn redis_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/0")
}

fn s3_builder(port: u16) -> AmazonS3Builder {
    AmazonS3Builder::new()
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_allow_http(true)
}

fn record(id: &StreamId, epoch: u64, owner: &str) -> StreamRecord {
    let mut playlist = PlaylistState::new(Container::Fmp4, 5, 2);
    playlist.epoch = epoch;
    // Through JSON, so that fields added to the record later (with serde defaults) need no
    // change here.
    serde_json::from_value(serde_json::json!({
        "id": id,
        "playlist": playlist,
        "updated_ms": 1_700_000_000_000_i64,
        "publisher_left_ms": null,
        "owner": owner,
    }))
    .unwrap()
}

/// The compare-and-set scenario of `fs.rs`'s unit test, for any state store; returns each
/// step's outcome so two backends can be compared.
async fn cas_scenario(store: &dyn StateStore) -> Vec<String> {
    let id = StreamId::new("default", "cam").unwrap();
    let other = StreamId::new("acme", "studio-1").unwrap();
    let show = |r: Result<(), StoreError>| match r {
        Ok(()) => "ok".to_owned(),
        Err(StoreError::Conflict { stored, held }) => format!("conflict {stored}/{held}"),
        Err(e) => panic!("unexpected error: {e}"),
    };
    let mut out = Vec::new();
    assert!(store.load(&id).await.unwrap().is_none());
    assert!(store.list().await.unwrap().is_empty());
    out.push(show(
        store.compare_and_set(None, &record(&id, 1, "a")).await,
    ));
    out.push(show(
        store.compare_and_set(None, &record(&id, 1, "b")).await,
    ));
    out.push(show(
        store.compare_and_set(Some(1), &record(&id, 2, "a")).await,
    ));
    out.push(show(
        store.compare_and_set(Some(1), &record(&id, 3, "b")).await,
    ));
    out.push(show(
        store.compare_and_set(Some(3), &record(&id, 4, "b")).await,
    ));
    out.push(show(
        store.compare_and_set(Some(2), &record(&id, 2, "a")).await,
    ));
    out.push(show(
        store
            .compare_and_set(Some(7), &record(&other, 1, "c"))
            .await,
    ));
    out.push(show(
        store.compare_and_set(None, &record(&other, 1, "c")).await,
    ));
    let loaded = store.load(&id).await.unwrap().unwrap();
    assert_eq!(loaded.playlist.epoch, 2);
    assert_eq!(loaded.owner, "a");
    assert_eq!(loaded.id, id);
    assert_eq!(loaded.playlist, record(&id, 2, "a").playlist);
    let mut list = store.list().await.unwrap();
    list.sort();
    assert_eq!(list, vec![other, id]);
    out
}

/// Runs `scenario` on a fresh Redis and on a fresh embedded store (in a scratch directory
/// named after `tag`); returns what each gave, Redis first.
async fn on_redis_and_embedded(
    tag: &str,
    scenario: impl AsyncFn(&dyn StateStore) -> Vec<String>,
) -> (Vec<String>, Vec<String>) {
    let redis = RedisServer::start_ephemeral();
    let store = RedisStateStore::connect(&redis.url()).await.unwrap();
    let dir = std::env::temp_dir().join(format!("tg-{tag}-compare-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let fs = FsStateStore::new(dir.clone());
    let from_redis = scenario(&store).await;
    let from_fs = scenario(&fs).await;
    let _ = std::fs::remove_dir_all(dir);
    (from_redis, from_fs)
}

#[tokio::test]
async fn redis_compare_and_set_matches_the_embedded_store() {
    let (from_redis, from_fs) = on_redis_and_embedded("cas", cas_scenario).await;
    assert_eq!(
        from_redis,
        [
            "ok",
            "conflict 1/0",
            "ok",
            "conflict 2/1",
            "conflict 2/3",
            "ok",
            "conflict 0/7",
            "ok"
        ]
    );
    assert_eq!(from_redis, from_fs);
}

/// The index of streams that are not ended and the deletion of an expired record, for
/// any state store; returns each step's outcome so two backends can be compared.
async fn expiry_scenario(store: &dyn StateStore) -> Vec<String> {
    let id = StreamId::new("default", "expiring").unwrap();
    let live = StreamId::new("default", "live").unwrap();
    let ended = |epoch| {
        let mut r = record(&id, epoch, "a");
        r.playlist.end();
        r
    };
    let active = || async { store.list_active().await.unwrap() };
    let mut out = Vec::new();
    store
        .compare_and_set(None, &record(&id, 1, "a"))
        .await
        .unwrap();
    store
        .compare_and_set(None, &record(&live, 1, "a"))
        .await
        .unwrap();
    let mut both = active().await;
    both.sort();
    assert_eq!(both, vec![id.clone(), live.clone()]);
    out.push(format!(
        "not ended: {}",
        store.delete(&id, 1).await.unwrap()
    ));
    store.compare_and_set(Some(1), &ended(2)).await.unwrap();
    assert_eq!(
        active().await,
        vec![live.clone()],
        "an ended stream left the index"
    );
    assert_eq!(store.list().await.unwrap().len(), 2);
    out.push(format!(
        "old epoch: {}",
        store.delete(&id, 1).await.unwrap()
    ));
    out.push(format!("expired: {}", store.delete(&id, 2).await.unwrap()));
    assert!(store.load(&id).await.unwrap().is_none());
    assert_eq!(store.list().await.unwrap(), vec![live.clone()]);
    assert_eq!(active().await, vec![live.clone()]);
    out.push(format!("again: {}", store.delete(&id, 2).await.unwrap()));
    // The stream comes back: a new record at an epoch taken from the clock (exact through
    // Redis's Lua numbers too).
    // What `stream::first_epoch` gives for that Unix ms.
    let epoch = 1_800_000_000_000_u64;
    store
        .compare_and_set(None, &record(&id, epoch, "b"))
        .await
        .unwrap();
    store
        .compare_and_set(Some(epoch), &record(&id, epoch + 1, "b"))
        .await
        .unwrap();
    assert_eq!(
        store.load(&id).await.unwrap().unwrap().playlist.epoch,
        epoch + 1
    );
    let mut both = active().await;
    both.sort();
    assert_eq!(both, vec![id, live]);
    out
}

#[tokio::test]
async fn expired_records_are_deleted_alike_in_redis_and_the_embedded_store() {
    let (from_redis, from_fs) = on_redis_and_embedded("expiry", expiry_scenario).await;
    assert_eq!(
        from_redis,
        [
            "not ended: false",
            "old epoch: false",
            "expired: true",
            "again: false"
        ]
    );
    assert_eq!(from_redis, from_fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_compare_and_set_has_exactly_one_winner() {
    let redis = RedisServer::start_ephemeral();
    let url = redis.url();
    let id = StreamId::new("default", "race").unwrap();
    let first = RedisStateStore::connect(&url).await.unwrap();
    first
        .compare_and_set(None, &record(&id, 1, "seed"))
        .await
        .unwrap();
    for round in 0..5u64 {
        // Eight workers, each with its own connection, all holding the same epoch.
        let mut tasks = Vec::new();
        for w in 0..8 {
            let store = RedisStateStore::connect(&url).await.unwrap();
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                let owner = format!("w{w}");
                let r = store
                    .compare_and_set(Some(round + 1), &record(&id, round + 2, &owner))
                    .await;
                (owner, r)
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            let (owner, r) = t.await.unwrap();
            match r {
                Ok(()) => winners.push(owner),
                Err(StoreError::Conflict { stored, held }) => {
                    assert_eq!((stored, held), (round + 2, round + 1));
                }
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let stored = first.load(&id).await.unwrap().unwrap();
        assert_eq!(stored.owner, winners[0]);
        assert_eq!(stored.playlist.epoch, round + 2);
    }
}

async fn next_change(rx: &mut tokio::sync::mpsc::Receiver<Change>) -> Change {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no change notification within 5 s")
        .expect("subscriber task ended")
}

#[tokio::test]
async fn writes_are_published_and_conflicts_are_not() {
    let redis = RedisServer::start_ephemeral();
    let url = redis.url();
    let store = RedisStateStore::connect(&url).await.unwrap();
    let mut changes = redis_store::subscribe_changes(&url).unwrap();
    assert_eq!(next_change(&mut changes).await, Change::Subscribed);

    let a = StreamId::new("default", "a").unwrap();
    let b = StreamId::new("acme", "b").unwrap();
    store
        .compare_and_set(None, &record(&a, 1, "w"))
        .await
        .unwrap();
    assert_eq!(next_change(&mut changes).await, Change::Stream(a.clone()));
    // A refused write publishes nothing: the next notification is b's.
    assert!(store
        .compare_and_set(None, &record(&a, 1, "w"))
        .await
        .is_err());
    store
        .compare_and_set(None, &record(&b, 1, "w"))
        .await
        .unwrap();
    assert_eq!(next_change(&mut changes).await, Change::Stream(b));
    store
        .compare_and_set(Some(1), &record(&a, 2, "w"))
        .await
        .unwrap();
    assert_eq!(next_change(&mut changes).await, Change::Stream(a));
    // The store's own subscription (same default prefix) sees the same channel.
    assert_eq!(store.changes_channel(), "tidegate:changes");
}

/// Runs `call` and asserts it fails as unavailable within `limit`.
async fn fails_fast<T: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Duration {
    let start = Instant::now();
    let r = tokio::time::timeout(limit * 3, call)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for {:?}", limit * 3));
    let took = start.elapsed();
    match r {
        Err(StoreError::Unavailable(reason)) => eprintln!("{what}: failed in {took:?}: {reason}"),
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
    assert!(took <= limit, "{what} took {took:?}, limit {limit:?}");
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_within_the_timeout_and_recovers() {
    let mut redis = RedisServer::start_ephemeral();
    let url = redis.url();
    let store = RedisStateStore::connect(&url).await.unwrap();
    let mut changes = store.subscribe_changes();
    assert_eq!(next_change(&mut changes).await, Change::Subscribed);
    let id = StreamId::new("default", "outage").unwrap();
    store
        .compare_and_set(None, &record(&id, 1, "w"))
        .await
        .unwrap();
    assert_eq!(next_change(&mut changes).await, Change::Stream(id.clone()));
    let limit = redis_store::CALL_TIMEOUT + SLACK;

    // A frozen server (accepts nothing, answers nothing): every call times out.
    signal(running(&redis), "-STOP");
    fails_fast("load (frozen)", limit, store.load(&id)).await;
    fails_fast(
        "compare_and_set (frozen)",
        limit,
        store.compare_and_set(Some(1), &record(&id, 2, "w")),
    )
    .await;
    signal(running(&redis), "-CONT");

    // A dead server: refused connections.
    drop(redis.proc.take());
    fails_fast("load (killed)", limit, store.load(&id)).await;
    fails_fast("list (killed)", limit, store.list()).await;
    fails_fast(
        "compare_and_set (killed)",
        limit,
        store.compare_and_set(Some(1), &record(&id, 2, "w")),
    )
    .await;
    fails_fast("connect (killed)", limit, RedisStateStore::connect(&url)).await;

    // Back on the same port (empty: no persistence): the same store object works again.
    redis.start_again();
    let start = Instant::now();
    loop {
        match store.compare_and_set(None, &record(&id, 5, "w")).await {
            Ok(()) => break,
            Err(StoreError::Unavailable(_)) if start.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("store did not recover: {other:?}"),
        }
    }
    eprintln!("store usable again {:?} after restart", start.elapsed());
    assert_eq!(store.load(&id).await.unwrap().unwrap().playlist.epoch, 5);
    assert_eq!(store.list().await.unwrap(), vec![id.clone()]);
    // The subscriber came back too (it reports Subscribed), and sees new writes. The write
    // that recovered the store may have landed before the resubscription.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = next_change(&mut changes).await;
        if c == Change::Subscribed {
            break;
        }
        assert!(Instant::now() < deadline, "no resubscription");
    }
    store
        .compare_and_set(Some(5), &record(&id, 6, "w"))
        .await
        .unwrap();
    loop {
        if next_change(&mut changes).await == Change::Stream(id.clone()) {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_does_not_freeze_the_change_subscription() {
    let redis = RedisServer::start_ephemeral();
    let url = redis.url();
    let mut changes = redis_store::subscribe_changes(&url).unwrap();
    assert_eq!(next_change(&mut changes).await, Change::Subscribed);
    // Frozen long enough for the liveness probe to be sent and to time out: the connection
    // stays open, so only the probe can notice.
    signal(running(&redis), "-STOP");
    tokio::time::sleep(redis_store::SUBSCRIPTION_PING_INTERVAL + redis_store::CALL_TIMEOUT + SLACK)
        .await;
    // Only the loss itself can arrive while frozen (once the probe has timed out).
    while let Ok(c) = changes.try_recv() {
        assert_eq!(
            c,
            Change::Lost,
            "nothing but the loss can arrive while frozen"
        );
    }
    signal(running(&redis), "-CONT");
    let start = Instant::now();
    let after_thaw = loop {
        let c = next_change(&mut changes).await;
        if c != Change::Lost {
            break c;
        }
    };
    assert_eq!(after_thaw, Change::Subscribed);
    eprintln!("resubscribed {:?} after the server thawed", start.elapsed());
    let store = RedisStateStore::connect(&url).await.unwrap();
    let id = StreamId::new("default", "thawed").unwrap();
    store
        .compare_and_set(None, &record(&id, 1, "w"))
        .await
        .unwrap();
    assert_eq!(next_change(&mut changes).await, Change::Stream(id));
}

/// An entry of the index of active streams whose record is gone (a crash between the two
/// writes) is dropped by `delete`, which the sweeper calls when the record is missing.
#[tokio::test]
async fn an_index_entry_without_a_record_is_dropped_alike() {
    let redis = RedisServer::start_ephemeral();
    let store = RedisStateStore::connect_with_prefix(&redis.url(), "t2")
        .await
        .unwrap();
    let sadd = b"*3\r\n$4\r\nSADD\r\n$9\r\nt2:active\r\n$13\r\ndefault/ghost\r\nQUIT\r\n";
    let reply = raw_exchange(redis.port, sadd).unwrap();
    assert!(
        reply.starts_with(b":1"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let dir = std::env::temp_dir().join(format!("tg-stale-index-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join(".active/default")).unwrap();
    std::fs::write(dir.join(".active/default/ghost"), b"").unwrap();
    let fs = FsStateStore::new(dir.clone());
    let ghost = StreamId::new("default", "ghost").unwrap();
    for store in [&store as &dyn StateStore, &fs] {
        assert_eq!(store.list_active().await.unwrap(), vec![ghost.clone()]);
        assert!(!store.delete(&ghost, 0).await.unwrap());
        assert!(store.list_active().await.unwrap().is_empty());
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn corrupt_records_and_worker_incarnations() {
    let redis = RedisServer::start_ephemeral();
    let store = RedisStateStore::connect_with_prefix(&redis.url(), "t1")
        .await
        .unwrap();
    let id = StreamId::new("default", "junk").unwrap();
    let set = b"*3\r\n$3\r\nSET\r\n$22\r\nt1:stream:default/junk\r\n$5\r\nnope{\r\nQUIT\r\n";
    let reply = raw_exchange(redis.port, set).unwrap();
    assert!(
        reply.starts_with(b"+OK"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(matches!(
        store.load(&id).await,
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        store.compare_and_set(None, &record(&id, 1, "w")).await,
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(store.register_worker("w-1").await.unwrap(), 1);
    assert_eq!(store.register_worker("w-1").await.unwrap(), 2);
    assert_eq!(store.register_worker("w-2").await.unwrap(), 1);
    // Another prefix sees none of it.
    let other = RedisStateStore::connect(&redis.url()).await.unwrap();
    assert!(other.load(&id).await.unwrap().is_none());
    assert!(other.list().await.unwrap().is_empty());
}

fn worker(id: &str) -> WorkerRecord {
    serde_json::from_value(serde_json::json!({
        "id": id,
        "version": "0.0.0",
        "pool": null,
        "addresses": {"http": "127.0.0.1:8080", "rtmp": "127.0.0.1:1935", "srt": "127.0.0.1:9000"},
        "started_ms": 1,
        "incarnations": 1,
        "heartbeat_ms": 1,
        "state": "ready",
        "load": {"live_publishers": 0, "ingest_bitrate_bps": 0, "cpu_percent": null, "rss_bytes": null},
    }))
    .unwrap()
}

fn worker_ids(list: &[WorkerRecord]) -> Vec<&str> {
    list.iter().map(|w| w.id.as_str()).collect()
}

/// Worker records in Redis: listed while fresh, gone when removed or expired (Redis's own
/// TTL), and the member set pruned of expired ids.
#[tokio::test]
async fn redis_worker_records_expire() {
    let redis = RedisServer::start_ephemeral();
    let store = RedisStateStore::connect_with_prefix(&redis.url(), "tw")
        .await
        .unwrap();
    assert!(store.workers().await.unwrap().is_empty());
    let long = Duration::from_secs(60);
    store.put_worker(&worker("w-2"), long).await.unwrap();
    store.put_worker(&worker("w-1"), long).await.unwrap();
    // A refresh replaces the record.
    let mut w1 = worker("w-1");
    w1.incarnations = 3;
    store.put_worker(&w1, long).await.unwrap();
    let list = store.workers().await.unwrap();
    assert_eq!(worker_ids(&list), ["w-1", "w-2"]);
    assert_eq!(list[0], w1);
    assert!(
        store.list().await.unwrap().is_empty(),
        "workers are not streams"
    );
    assert!(store.put_worker(&worker("../x"), long).await.is_err());

    store.remove_worker("w-1").await.unwrap();
    store.remove_worker("w-1").await.unwrap();
    assert_eq!(worker_ids(&store.workers().await.unwrap()), ["w-2"]);

    store
        .put_worker(&worker("w-2"), Duration::from_millis(300))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.workers().await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the expired worker is still listed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let members = raw_exchange(redis.port, b"SMEMBERS tw:workers\r\nQUIT\r\n").unwrap();
    assert!(
        members.starts_with(b"*0\r\n"),
        "expired ids are pruned from the member set: {}",
        String::from_utf8_lossy(&members)
    );
}

#[tokio::test]
async fn s3_round_trip() {
    let s3 = MotoS3::start("media");
    let store = S3MediaStore::new(s3_builder(s3.addr.port()), "media", "live/eu").unwrap();
    let root = S3MediaStore::new(s3_builder(s3.addr.port()), "media", "").unwrap();
    let outer = S3MediaStore::new(s3_builder(s3.addr.port()), "media", "live/eu/acme").unwrap();

    assert_eq!(store.get("acme/cam/seg-1-1.m4s").await.unwrap(), None);
    assert!(store.list("acme/cam").await.unwrap().is_empty());
    let seg = Bytes::from((0..=255u8).cycle().take(300_000).collect::<Vec<u8>>());
    store
        .put("acme/cam/seg-1-1.m4s", seg.clone())
        .await
        .unwrap();
    store
        .put("acme/cam/init-1-0.mp4", Bytes::from_static(b"init"))
        .await
        .unwrap();
    store
        .put("acme/other/seg-1-1.m4s", Bytes::from_static(b"x"))
        .await
        .unwrap();
    store
        .put("acme/cam/index.m3u8", Bytes::from_static(b"#EXTM3U\n"))
        .await
        .unwrap();
    store
        .put("acme/cam/index.m3u8", Bytes::from_static(b"#EXTM3U\n#2\n"))
        .await
        .unwrap();
    assert_eq!(store.get("acme/cam/seg-1-1.m4s").await.unwrap(), Some(seg));
    assert_eq!(
        store.get("acme/cam/index.m3u8").await.unwrap().unwrap(),
        Bytes::from_static(b"#EXTM3U\n#2\n")
    );
    assert_eq!(
        store.list("acme/cam").await.unwrap(),
        ["index.m3u8", "init-1-0.mp4", "seg-1-1.m4s"]
    );
    // Keys carry the prefix.
    assert_eq!(
        outer.get("cam/init-1-0.mp4").await.unwrap(),
        Some(Bytes::from_static(b"init"))
    );
    assert_eq!(root.get("acme/cam/init-1-0.mp4").await.unwrap(), None);

    store.delete("acme/cam/seg-1-1.m4s").await.unwrap();
    store.delete("acme/cam/seg-1-1.m4s").await.unwrap();
    store.delete("acme/cam/never-written").await.unwrap();
    assert_eq!(store.get("acme/cam/seg-1-1.m4s").await.unwrap(), None);
    assert_eq!(
        store.list("acme/cam").await.unwrap(),
        ["index.m3u8", "init-1-0.mp4"]
    );
    assert_eq!(store.list("acme/other").await.unwrap(), ["seg-1-1.m4s"]);
}

#[tokio::test]
async fn s3_refuses_unsafe_paths_and_buckets() {
    // Refused before any request: the endpoint is a closed port.
    let store = S3MediaStore::new(s3_builder(free_tcp_port()), "media", "p").unwrap();
    for bad in [
        "../x",
        "a/../../b",
        "",
        "a//b",
        ".hidden",
        "a/b/c/d",
        "a/b/c d",
        "a\\b",
    ] {
        assert!(
            matches!(
                store.put(bad, Bytes::new()).await,
                Err(StoreError::InvalidPath(_))
            ),
            "put {bad}"
        );
        assert!(
            matches!(store.get(bad).await, Err(StoreError::InvalidPath(_))),
            "get {bad}"
        );
        assert!(
            matches!(store.delete(bad).await, Err(StoreError::InvalidPath(_))),
            "delete {bad}"
        );
        assert!(
            matches!(store.list(bad).await, Err(StoreError::InvalidPath(_))),
            "list {bad}"
        );
    }
    for (bucket, prefix) in [("UPPER", ""), ("ok-bucket", "../x"), ("ok-bucket", "a//b")] {
        assert!(
            S3MediaStore::new(s3_builder(1), bucket, prefix).is_err(),
            "{bucket} {prefix}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_fails_within_the_timeout() {
    let mut s3 = MotoS3::start("media");
    let store = S3MediaStore::new(s3_builder(s3.addr.port()), "media", "").unwrap();
    store
        .put("t/s/seg-1-1.m4s", Bytes::from_static(b"seg"))
        .await
        .unwrap();

    // Frozen: connections are accepted by the kernel but nothing answers.
    signal(&s3.proc, "-STOP");
    let limit = s3_store::CALL_TIMEOUT + SLACK;
    fails_fast("get (frozen)", limit, store.get("t/s/seg-1-1.m4s")).await;
    signal(&s3.proc, "-CONT");
    assert_eq!(
        store.get("t/s/seg-1-1.m4s").await.unwrap(),
        Some(Bytes::from_static(b"seg"))
    );

    s3.proc.kill();
    // Refused connections are retried MAX_RETRIES times with a short backoff: far below the
    // call timeout.
    let fast = Duration::from_secs(3);
    fails_fast("get (stopped)", fast, store.get("t/s/seg-1-1.m4s")).await;
    fails_fast(
        "put (stopped)",
        fast,
        store.put("t/s/seg-1-2.m4s", Bytes::from_static(b"x")),
    )
    .await;
    fails_fast("delete (stopped)", fast, store.delete("t/s/seg-1-1.m4s")).await;
    fails_fast("list (stopped)", fast, store.list("t/s")).await;
}

#[tokio::test]
async fn open_builds_the_configured_backends() {
    let redis = RedisServer::start_ephemeral();
    let dir = std::env::temp_dir().join(format!("tg-open-{}", std::process::id()));
    let config = ServeConfig {
        data_dir: dir.join("data"),
        state: Some(redis.url()),
        storage: Some(format!("file://{}", dir.join("media").display())),
        ..Default::default()
    };
    config.validate().unwrap();
    let (state, media) = open(&config).await.unwrap();
    let id = StreamId::new("default", "opened").unwrap();
    state
        .compare_and_set(None, &record(&id, 1, "w"))
        .await
        .unwrap();
    // It is the Redis server that holds the record.
    let direct = RedisStateStore::connect(&redis.url()).await.unwrap();
    assert_eq!(direct.list().await.unwrap(), vec![id]);
    media
        .put("default/opened/seg-1-1.m4s", Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert!(dir.join("media/default/opened/seg-1-1.m4s").is_file());
    let _ = std::fs::remove_dir_all(&dir);

    // Refused by validate(), and by open() for the same reason.
    for (state, storage) in [
        (Some("http://x:6379"), None),
        (None, Some("file://relative")),
        (None, Some("s3://Bad_Bucket/p")),
        (None, Some("gs://bucket")),
    ] {
        let config = ServeConfig {
            state: state.map(str::to_owned),
            storage: storage.map(str::to_owned),
            ..Default::default()
        };
        assert!(config.validate().is_err(), "{state:?} {storage:?}");
        assert!(open(&config).await.is_err(), "{state:?} {storage:?}");
    }
    // Nothing listening: open fails (within the timeout) instead of starting half-blind.
    let config = ServeConfig {
        state: Some(redis_url(free_tcp_port())),
        ..Default::default()
    };
    let start = Instant::now();
    assert!(open(&config).await.is_err());
    assert!(start.elapsed() < redis_store::CALL_TIMEOUT + SLACK);
}

/// `store::open` with the stores' section of `config` (whose URLs must parse first: a URL
/// that does not is refused as the store once refused it, unavailable).
async fn open(
    config: &ServeConfig,
) -> Result<(Arc<dyn StateStore>, Arc<dyn MediaStore>), StoreError> {
    let section = config
        .store()
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    tidegate_store::open(&section).await
}

/// This test binary, set to run only the `#[ignore]`d helper test `name`: a child process
/// whose environment the caller sets.
fn child_test(name: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--ignored", "--exact", name, "--nocapture"]);
    cmd
}

/// In a helper test: a `ServeConfig` made by `config` from the value of `var`, checked and
/// opened; `None` (with a note) when the helper runs outside its parent test.
async fn open_in_child(
    var: &str,
    config: impl FnOnce(String) -> ServeConfig,
) -> Option<(Arc<dyn StateStore>, Arc<dyn MediaStore>)> {
    let Ok(value) = std::env::var(var) else {
        eprintln!("{var} unset: this helper only runs as a child process");
        return None;
    };
    let config = config(value);
    config.validate().unwrap();
    Some(open(&config).await.unwrap())
}

/// Environment variable naming the `--storage` URL for [`child_open_s3_from_env`].
const CHILD_STORAGE_VAR: &str = "TIDEGATE_TEST_CHILD_STORAGE";

/// The S3 half of `store::open`, which reads the process-wide AWS variables: run in a child
/// process by [`open_reads_the_aws_environment`], so no other test sees them change.
#[tokio::test]
#[ignore = "helper: run in a child process by open_reads_the_aws_environment"]
async fn child_open_s3_from_env() {
    let Some((_, media)) = open_in_child(CHILD_STORAGE_VAR, |storage| ServeConfig {
        storage: Some(storage),
        ..Default::default()
    })
    .await
    else {
        return;
    };
    media
        .put("default/env/seg-1-1.m4s", Bytes::from_static(b"from-env"))
        .await
        .unwrap();
    assert_eq!(media.list("default/env").await.unwrap(), ["seg-1-1.m4s"]);
}

#[tokio::test]
async fn open_reads_the_aws_environment() {
    let s3 = MotoS3::start("env-bucket");
    let output = child_test("child_open_s3_from_env")
        .env(CHILD_STORAGE_VAR, "s3://env-bucket/live/eu")
        .env("AWS_ENDPOINT_URL", format!("http://{}", s3.addr))
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_ALLOW_HTTP", "true")
        .env_remove("AWS_ENDPOINT")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_VIRTUAL_HOSTED_STYLE_REQUEST")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && log.contains("1 passed"),
        "child failed: {log}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The object is where the URL and the environment said, under the key prefix.
    let store = S3MediaStore::new(s3_builder(s3.addr.port()), "env-bucket", "live/eu").unwrap();
    assert_eq!(
        store.get("default/env/seg-1-1.m4s").await.unwrap(),
        Some(Bytes::from_static(b"from-env"))
    );
}

/// Environment variable naming the `rediss://` URL for [`child_rediss`].
const CHILD_REDISS_VAR: &str = "TIDEGATE_TEST_CHILD_REDISS";

/// Runs `openssl` with `args` in `dir`, panicking with its output on failure.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}): apt-get install openssl"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `rediss://` store, in a child process whose `SSL_CERT_FILE` names the test CA (the
/// rustls client reads the platform roots from there).
#[tokio::test]
#[ignore = "helper: run in a child process by rediss_connects_over_tls"]
async fn child_rediss() {
    let Some((state, _)) = open_in_child(CHILD_REDISS_VAR, |url| ServeConfig {
        state: Some(url),
        ..Default::default()
    })
    .await
    else {
        return;
    };
    let id = StreamId::new("default", "tls").unwrap();
    state
        .compare_and_set(None, &record(&id, 1, "w"))
        .await
        .unwrap();
    assert_eq!(state.load(&id).await.unwrap().unwrap().playlist.epoch, 1);
}

#[tokio::test]
async fn rediss_connects_over_tls() {
    let dir = std::env::temp_dir().join(format!("tg-rediss-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=tidegate test CA",
        ],
    );
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "1",
            "-extfile",
            "ext",
        ],
    );
    let port = free_tcp_port();
    let mut cmd = Command::new(require_cmd("redis-server"));
    cmd.args(["--port", "0", "--tls-port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--tls-auth-clients", "no"])
        .arg("--tls-cert-file")
        .arg(dir.join("srv.pem"))
        .arg("--tls-key-file")
        .arg(dir.join("srv.key"))
        .arg("--tls-ca-cert-file")
        .arg(dir.join("ca.pem"));
    let mut redis = Proc::spawn("redis-server-tls", cmd);
    redis.wait_ready(
        "redis-server (TLS) to accept connections",
        START_DEADLINE,
        Duration::from_millis(20),
        || TcpStream::connect(("127.0.0.1", port)).ok(),
    );
    let run = |ca: &std::path::Path| {
        child_test("child_rediss")
            .env(CHILD_REDISS_VAR, format!("rediss://localhost:{port}/0"))
            .env("SSL_CERT_FILE", ca)
            .env_remove("SSL_CERT_DIR")
            .output()
            .unwrap()
    };
    let trusted = run(&dir.join("ca.pem"));
    let log = String::from_utf8_lossy(&trusted.stdout);
    assert!(
        trusted.status.success() && log.contains("1 passed"),
        "rediss with the test CA trusted failed: {log}{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    // The same server with its CA not trusted: refused (an error, not a panic or a hang).
    let untrusted = run(&dir.join("srv.csr"));
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&untrusted.stdout),
        String::from_utf8_lossy(&untrusted.stderr)
    );
    assert!(
        !untrusted.status.success()
            && log.contains("Unavailable(\"redis: invalid peer certificate"),
        "rediss with an untrusted certificate was not refused as unavailable: {log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Tenants and their keys, for any state store: create, conflicting writers, a key added,
/// rotated and revoked, listing, deletion; returns each step's outcome so two backends can
/// be compared.
async fn tenant_scenario(store: &dyn StateStore) -> Vec<String> {
    let show = |r: Result<(), StoreError>| match r {
        Ok(()) => "ok".to_owned(),
        Err(StoreError::Conflict { stored, held }) => format!("conflict {stored}/{held}"),
        Err(StoreError::InvalidPath(p)) => format!("invalid {p}"),
        Err(e) => panic!("unexpected error: {e}"),
    };
    let mut out = Vec::new();
    assert!(store.tenants().await.unwrap().is_empty());
    assert!(store.load_tenant("acme").await.unwrap().is_none());
    let settings: TenantSettings =
        serde_json::from_value(serde_json::json!({"quotas": {"max_streams": 5}})).unwrap();
    let acme = TenantRecord::new("acme", settings);
    out.push(show(store.put_tenant(None, &acme).await));
    // A second creation of the same name loses.
    out.push(show(store.put_tenant(None, &acme).await));
    out.push(show(
        store
            .put_tenant(None, &TenantRecord::new("../x", TenantSettings::default()))
            .await,
    ));
    out.push(show(
        store
            .put_tenant(None, &TenantRecord::new("beta", TenantSettings::default()))
            .await,
    ));

    // A key: only its hash is stored; it verifies, a guess does not.
    let key = StreamKey::generate().unwrap();
    let mut with_key = acme.next_revision();
    with_key.keys.push(KeyRecord {
        id: key.id().clone(),
        stream: "main".into(),
        hash: key.hash(),
        created_ms: 1,
        rotated_ms: None,
    });
    out.push(show(store.put_tenant(Some(1), &with_key).await));
    // Two workers changing the tenant from the same revision: the second loses.
    out.push(show(store.put_tenant(Some(1), &acme.next_revision()).await));
    let loaded = store.load_tenant("acme").await.unwrap().unwrap();
    assert_eq!(loaded, with_key);
    assert_eq!(loaded.verify(&key).map(|k| k.stream.as_str()), Some("main"));
    let guess = StreamKey::generate_for(key.id().clone()).unwrap();
    assert!(loaded.verify(&guess).is_none());

    // Rotation: same id and stream, a new secret; the old one stops verifying.
    let rotated = StreamKey::generate_for(key.id().clone()).unwrap();
    let mut next = loaded.next_revision();
    next.keys[0].hash = rotated.hash();
    next.keys[0].rotated_ms = Some(2);
    out.push(show(store.put_tenant(Some(loaded.revision), &next).await));
    let loaded = store.load_tenant("acme").await.unwrap().unwrap();
    assert!(loaded.verify(&key).is_none());
    assert!(loaded.verify(&rotated).is_some());

    // Revocation.
    let mut next = loaded.next_revision();
    next.keys.clear();
    out.push(show(store.put_tenant(Some(loaded.revision), &next).await));
    assert!(store
        .load_tenant("acme")
        .await
        .unwrap()
        .unwrap()
        .verify(&rotated)
        .is_none());

    let names: Vec<String> = store
        .tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| format!("{}@{}", t.name, t.revision))
        .collect();
    out.push(names.join(","));
    // Tenants are neither streams nor workers.
    assert!(store.list().await.unwrap().is_empty());
    assert!(store.workers().await.unwrap().is_empty());

    // Deletion fences on the revision too.
    out.push(store.delete_tenant("acme", 1).await.unwrap().to_string());
    out.push(store.delete_tenant("acme", 4).await.unwrap().to_string());
    out.push(store.delete_tenant("acme", 4).await.unwrap().to_string());
    assert!(store.load_tenant("acme").await.unwrap().is_none());
    let names: Vec<String> = store
        .tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    out.push(names.join(","));
    out
}

#[tokio::test]
async fn tenants_and_keys_are_stored_alike_in_redis_and_the_embedded_store() {
    let (from_redis, from_fs) = on_redis_and_embedded("tenants", tenant_scenario).await;
    assert_eq!(
        from_redis,
        [
            "ok",
            "conflict 1/0",
            "invalid ../x",
            "ok",
            "ok",
            "conflict 2/1",
            "ok",
            "ok",
            "acme@4,beta@1",
            "false",
            "true",
            "false",
            "beta",
        ]
    );
    assert_eq!(from_redis, from_fs);
}

#[tokio::test]
async fn a_tenant_change_reaches_another_worker_within_a_second() {
    // Two workers' stores on one Redis: a key created through A is announced to B's
    // subscription, and B reads it back, within a second.
    let redis = RedisServer::start_ephemeral();
    let url = redis.url();
    let a = RedisStateStore::connect(&url).await.unwrap();
    let b = RedisStateStore::connect(&url).await.unwrap();
    let mut changes = b.subscribe_changes();
    assert_eq!(next_change(&mut changes).await, Change::Subscribed);

    let mut acme = TenantRecord::new("acme", TenantSettings::default());
    let key = StreamKey::generate().unwrap();
    acme.keys.push(KeyRecord {
        id: key.id().clone(),
        stream: "main".into(),
        hash: key.hash(),
        created_ms: 1,
        rotated_ms: None,
    });
    let started = Instant::now();
    a.put_tenant(None, &acme).await.unwrap();
    let change = tokio::time::timeout(Duration::from_secs(1), changes.recv())
        .await
        .expect("announced within a second")
        .expect("subscriber task ended");
    assert_eq!(change, Change::Tenant("acme".into()));
    let seen = b.load_tenant("acme").await.unwrap().unwrap();
    assert!(seen.verify(&key).is_some());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // A refused write announces nothing; a deletion does.
    assert!(a.put_tenant(None, &acme).await.is_err());
    assert!(a.delete_tenant("acme", 1).await.unwrap());
    assert_eq!(
        next_change(&mut changes).await,
        Change::Tenant("acme".into())
    );
    // A stream write is still a stream change.
    let id = StreamId::new("acme", "main").unwrap();
    a.compare_and_set(None, &record(&id, 1, "w")).await.unwrap();
    assert_eq!(next_change(&mut changes).await, Change::Stream(id));
}

#[tokio::test]
async fn an_unreadable_tenant_record_hides_no_other_tenant() {
    let redis = RedisServer::start_ephemeral();
    let store = RedisStateStore::connect(&redis.url()).await.unwrap();
    store
        .put_tenant(None, &TenantRecord::new("good", TenantSettings::default()))
        .await
        .unwrap();
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::pipe()
        .set("tidegate:tenant:odd", "{not json")
        .sadd("tidegate:tenants", "odd")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let names: Vec<String> = store
        .tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["good"]);
    assert!(matches!(
        store.load_tenant("odd").await,
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        store
            .put_tenant(
                Some(1),
                &TenantRecord::new("odd", TenantSettings::default())
            )
            .await,
        Err(StoreError::Corrupt { .. })
    ));
}

/// A tenant's publish attempts are counted per second across the cluster in Redis (two
/// workers' stores share the count; another second or tenant starts at 1, the counter
/// expires); the embedded store shares nothing and says so.
#[tokio::test]
async fn publish_attempts_are_counted_per_tenant_and_second_in_redis_only() {
    let redis = RedisServer::start_ephemeral();
    let a = RedisStateStore::connect(&redis.url()).await.unwrap();
    let b = RedisStateStore::connect(&redis.url()).await.unwrap();
    assert_eq!(a.count_publish_attempt("acme", 100).await.unwrap(), Some(1));
    assert_eq!(b.count_publish_attempt("acme", 100).await.unwrap(), Some(2));
    assert_eq!(a.count_publish_attempt("acme", 101).await.unwrap(), Some(1));
    assert_eq!(b.count_publish_attempt("beta", 100).await.unwrap(), Some(1));
    assert!(a.count_publish_attempt("../x", 100).await.is_err());
    let ttl = raw_exchange(redis.port, b"TTL tidegate:attempts:acme:100\r\nQUIT\r\n").unwrap();
    let ttl = String::from_utf8_lossy(&ttl);
    assert!(ttl.starts_with(":1") || ttl.starts_with(":2"), "{ttl}");
    let dir = std::env::temp_dir().join(format!("tg-attempts-{}", std::process::id()));
    let fs = FsStateStore::new(dir.clone());
    assert_eq!(fs.count_publish_attempt("acme", 100).await.unwrap(), None);
    let _ = std::fs::remove_dir_all(dir);
}

/// A tenant's records in the active index, alike in Redis (one MGET) and the embedded
/// store: its streams that are not ended, no other tenant's.
#[tokio::test]
async fn a_tenants_active_records_are_read_alike() {
    async fn scenario(store: &dyn StateStore) -> Vec<String> {
        for (tenant, name) in [("acme", "a"), ("acme", "b"), ("beta", "c")] {
            let id = StreamId::new(tenant, name).unwrap();
            store
                .compare_and_set(None, &record(&id, 1, "w"))
                .await
                .unwrap();
        }
        let b = StreamId::new("acme", "b").unwrap();
        let mut ended = record(&b, 2, "w");
        ended.playlist.ended = true;
        store.compare_and_set(Some(1), &ended).await.unwrap();
        let mut out: Vec<String> = store
            .active_records_of("acme")
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id.to_string())
            .collect();
        out.sort();
        out.push(format!(
            "{}",
            store.active_records_of("nobody").await.unwrap().len()
        ));
        out
    }
    let (from_redis, from_fs) = on_redis_and_embedded("active-of", scenario).await;
    assert_eq!(from_redis, ["acme/a", "0"]);
    assert_eq!(from_redis, from_fs);
}
