//! The per-stream change signal ([`Streams::watch`], [`StreamWatch`]): a waiter misses no
//! change, one change wakes every waiter, and N waiters woken together cost one load of
//! the state store.

use std::sync::atomic::AtomicUsize;

use async_trait::async_trait;

use super::*;
use crate::store::fs::FsStateStore;
use crate::store::{TenantRecord, WorkerRecord};

/// The embedded state store, counting its loads.
struct Counting {
    inner: FsStateStore,
    loads: AtomicUsize,
}

#[async_trait]
impl StateStore for Counting {
    async fn load(&self, id: &StreamId) -> Result<Option<StreamRecord>, StoreError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        // A store that takes a while, so waiters pile up behind a load.
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.inner.load(id).await
    }
    async fn compare_and_set(
        &self,
        expected_epoch: Option<u64>,
        record: &StreamRecord,
    ) -> Result<(), StoreError> {
        self.inner.compare_and_set(expected_epoch, record).await
    }
    async fn list(&self) -> Result<Vec<StreamId>, StoreError> {
        self.inner.list().await
    }
    async fn list_active(&self) -> Result<Vec<StreamId>, StoreError> {
        self.inner.list_active().await
    }
    async fn delete(&self, id: &StreamId, epoch: u64) -> Result<bool, StoreError> {
        self.inner.delete(id, epoch).await
    }
    async fn register_worker(&self, worker_id: &str) -> Result<u64, StoreError> {
        self.inner.register_worker(worker_id).await
    }
    async fn put_worker(&self, record: &WorkerRecord, ttl: Duration) -> Result<(), StoreError> {
        self.inner.put_worker(record, ttl).await
    }
    async fn remove_worker(&self, worker_id: &str) -> Result<(), StoreError> {
        self.inner.remove_worker(worker_id).await
    }
    async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        self.inner.workers().await
    }
    async fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        self.inner.tenants().await
    }
    async fn load_tenant(&self, name: &str) -> Result<Option<TenantRecord>, StoreError> {
        self.inner.load_tenant(name).await
    }
    async fn put_tenant(
        &self,
        expected_revision: Option<u64>,
        record: &TenantRecord,
    ) -> Result<(), StoreError> {
        self.inner.put_tenant(expected_revision, record).await
    }
    async fn delete_tenant(&self, name: &str, revision: u64) -> Result<bool, StoreError> {
        self.inner.delete_tenant(name, revision).await
    }
}

/// A registry over a counting embedded state store; returns its directory and the store.
fn counting_streams(tag: &str) -> (std::path::PathBuf, Arc<Counting>, Arc<Streams>) {
    use crate::store::fs::FsMediaStore;
    let dir = std::env::temp_dir().join(format!(
        "tidegate-{tag}-{}-{}",
        std::process::id(),
        unix_ms()
    ));
    let state = Arc::new(Counting {
        inner: FsStateStore::new(dir.join("state")),
        loads: AtomicUsize::new(0),
    });
    let media: Arc<dyn MediaStore> = Arc::new(FsMediaStore::new(dir.join("media")));
    let metrics = Arc::new(Metrics::new());
    let telemetry = Arc::new(Telemetry::new(
        metrics.clone(),
        tidegate_health::HealthConfig::default(),
        "here".into(),
    ));
    let streams = Streams::new(
        state.clone(),
        media,
        test_settings(Duration::from_secs(3600)),
        metrics,
        telemetry,
    );
    (dir, state, streams)
}

/// A record of another worker's stream whose next segment is `next_sequence`.
fn record(id: &StreamId, next_sequence: u64) -> StreamRecord {
    let mut playlist = PlaylistState::new(Container::Fmp4, 6, 2);
    playlist.epoch = 1;
    playlist.next_sequence = next_sequence;
    StreamRecord {
        id: id.clone(),
        playlist,
        updated_ms: unix_ms(),
        publisher_left_ms: None,
        owner: "elsewhere".into(),
        last_media_ms: Some(unix_ms()),
        takeovers: Vec::new(),
        session_started_ms: None,
        holder: None,
    }
}

fn next_msn(view: &Rendered) -> u64 {
    view.state.live_edge().next_msn
}

const SHORT: Duration = Duration::from_millis(200);

#[tokio::test]
async fn a_change_between_the_read_and_the_wait_is_not_missed() {
    let (dir, state, streams) = counting_streams("watch-missed");
    let id = StreamId::new("default", "w").unwrap();
    streams.apply_change(Change::Subscribed).await;
    state.compare_and_set(None, &record(&id, 4)).await.unwrap();
    let mut watch = streams.watch(&id).await.unwrap().unwrap();
    assert_eq!(watch.id(), &id);
    let view = streams.view(&mut watch).await.unwrap().unwrap();
    assert_eq!(next_msn(&view), 4);

    // Nothing changed: the wait does not end (notifications are live; the view is
    // trusted for NOTIFIED_RENDER_TTL, far longer than this).
    assert!(tokio::time::timeout(SHORT, watch.changed()).await.is_err());

    // The change lands after the read and before the wait: the wait ends at once.
    state
        .compare_and_set(Some(1), &record(&id, 5))
        .await
        .unwrap();
    streams.apply_change(Change::Stream(id.clone())).await;
    assert!(tokio::time::timeout(SHORT, watch.changed()).await.is_ok());
    let view = streams.view(&mut watch).await.unwrap().unwrap();
    assert_eq!(next_msn(&view), 5);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn without_notifications_a_waiter_looks_again_when_the_view_expires() {
    let (dir, state, streams) = counting_streams("watch-poll");
    let id = StreamId::new("default", "p").unwrap();
    state.compare_and_set(None, &record(&id, 1)).await.unwrap();
    let mut watch = streams.watch(&id).await.unwrap().unwrap();
    streams.view(&mut watch).await.unwrap().unwrap();
    state
        .compare_and_set(Some(1), &record(&id, 2))
        .await
        .unwrap();
    // No notification comes: the wait ends when the view is due to be read again (a
    // waited-on view is read every UNNOTIFIED_WATCH_POLL while notifications are down).
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), watch.changed())
        .await
        .unwrap();
    assert!(started.elapsed() >= UNNOTIFIED_WATCH_POLL / 2);
    let view = streams.view(&mut watch).await.unwrap().unwrap();
    assert_eq!(next_msn(&view), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Redis failover seen from a worker that does not ingest: the state store cannot be
/// read, so a waiter is served the record's snapshot from the media store (which the owner
/// then writes at each part), and no older than its view may be (UNNOTIFIED_WATCH_POLL),
/// not the viewer lookups' LOOKUP_TTL: each wake shows the newest snapshot.
#[tokio::test]
async fn through_a_state_store_outage_a_waiter_follows_the_snapshot() {
    let (dir, state, streams) = counting_streams("watch-outage");
    let id = StreamId::new("default", "f").unwrap();
    state.compare_and_set(None, &record(&id, 1)).await.unwrap();
    let mut watch = streams.watch(&id).await.unwrap().unwrap();
    assert_eq!(
        next_msn(&streams.view(&mut watch).await.unwrap().unwrap()),
        1
    );
    // The state root becomes a file: every read fails.
    let state_root = dir.join("state");
    std::fs::rename(&state_root, dir.join("state-aside")).unwrap();
    std::fs::write(&state_root, b"").unwrap();
    for next in 2..5 {
        published::write(&*streams.media, &id.prefix(), &record(&id, next))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), watch.changed())
            .await
            .unwrap();
        let view = streams.view(&mut watch).await.unwrap().unwrap();
        assert_eq!(next_msn(&view), next, "the snapshot as the waiter woke");
    }
    assert!(UNNOTIFIED_WATCH_POLL < lookups::LOOKUP_TTL);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_listed_segment_wakes_the_waiters_of_the_owning_worker() {
    let (dir, _state, streams) = counting_streams("watch-owned");
    let id = StreamId::new("default", "o").unwrap();
    let stream = streams.get_or_insert(&id).await;
    let mut playlist = record(&id, 3).playlist;
    stream.set_owned_view(&playlist, 1);
    let mut watch = streams.watch(&id).await.unwrap().unwrap();
    let view = streams.view(&mut watch).await.unwrap().unwrap();
    assert_eq!(next_msn(&view), 3);
    // The owner's view is current: no polling.
    assert!(tokio::time::timeout(SHORT, watch.changed()).await.is_err());
    playlist.next_sequence = 4;
    stream.set_owned_view(&playlist, 1);
    assert!(tokio::time::timeout(SHORT, watch.changed()).await.is_ok());
    assert_eq!(
        next_msn(&streams.view(&mut watch).await.unwrap().unwrap()),
        4
    );
    // The session ends: its waiters are told, and from now on poll the store.
    stream.release_view(1, true);
    assert!(tokio::time::timeout(SHORT, watch.changed()).await.is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Thousands of viewers block on one stream: a change wakes them all, and they share one
/// load of the record instead of making one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_wakes_every_waiter_and_costs_one_load() {
    const WAITERS: usize = 500;
    let (dir, state, streams) = counting_streams("watch-storm");
    let id = StreamId::new("default", "storm").unwrap();
    streams.apply_change(Change::Subscribed).await;
    state.compare_and_set(None, &record(&id, 10)).await.unwrap();
    streams.rendered(&id).await.unwrap().unwrap();

    let waiting = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..WAITERS {
        let streams = streams.clone();
        let id = id.clone();
        let waiting = waiting.clone();
        tasks.push(tokio::spawn(async move {
            let mut watch = streams.watch(&id).await.unwrap().unwrap();
            let before = next_msn(&streams.view(&mut watch).await.unwrap().unwrap());
            waiting.fetch_add(1, Ordering::SeqCst);
            watch.changed().await;
            let after = next_msn(&streams.view(&mut watch).await.unwrap().unwrap());
            (before, after)
        }));
    }
    while waiting.load(Ordering::SeqCst) < WAITERS {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let loads_before = state.loads.load(Ordering::SeqCst);
    state
        .compare_and_set(Some(1), &record(&id, 11))
        .await
        .unwrap();
    streams.apply_change(Change::Stream(id.clone())).await;
    for task in tasks {
        assert_eq!(task.await.unwrap(), (10, 11));
    }
    let loads = state.loads.load(Ordering::SeqCst) - loads_before;
    assert_eq!(loads, 1, "{WAITERS} waiters woken by one change");
    let _ = std::fs::remove_dir_all(&dir);
}
