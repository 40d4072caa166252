//! Embedded, single-node stores on the local filesystem (also usable on a shared volume).
//!
//! Durability model: every write goes to a temporary file in the same directory and is
//! renamed over the target, so a reader or a restarted worker sees a whole old or a whole new
//! file. No fsync: a power loss may lose the last writes, a killed process loses nothing
//! written before it died.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Mutex;

use super::{
    valid_name, valid_tenant_name, MediaStore, StateStore, StoreError, StreamId, StreamRecord,
    TenantRecord, WorkerRecord,
};

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `data` to `path` atomically (temporary file + rename), creating directories only
/// when they are missing. All of it runs in one blocking-pool task, and `data` is moved in
/// (no copy of the segment).
async fn write_atomic(path: PathBuf, data: Bytes) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || write_atomic_blocking(&path, &data).map(drop))
        .await
        .map_err(std::io::Error::other)?
}

/// The blocking body of [`write_atomic`]; returns the file's (device, inode).
fn write_atomic_blocking(path: &Path, data: &[u8]) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".tmp-{}-{n}", std::process::id()));
    let write = |tmp: &Path| -> std::io::Result<(u64, u64)> {
        let mut f = std::fs::File::create(tmp)?;
        std::io::Write::write_all(&mut f, data)?;
        let m = f.metadata()?;
        Ok((m.dev(), m.ino()))
    };
    let file = match write(&tmp) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            write(&tmp)?
        }
        Err(e) => return Err(e),
    };
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(file)
}

/// The stamp of the file now at `path`, if it is still the file (device, inode) this
/// process just renamed there. Taken after the rename: a rename changes the file's ctime.
fn stamp_if_ours(path: &Path, file: (u64, u64)) -> Option<FileStamp> {
    let stamp = FileStamp::of(&std::fs::metadata(path).ok()?);
    ((stamp.dev, stamp.ino) == file).then_some(stamp)
}

/// Which file a path named when it was last looked at: device, inode, size and change
/// time. Every write replaces the file by a rename, so a new write by anyone (this
/// process, another worker on a shared volume, an operator) shows as a new stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    ctime_ns: i128,
}

impl FileStamp {
    fn of(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }
}

/// Splits and checks an object path `TENANT/STREAM/FILE` into a filesystem path under `root`.
fn object_path(root: &Path, path: &str) -> Result<PathBuf, StoreError> {
    let mut out = root.to_path_buf();
    let mut parts = 0;
    for part in path.split('/') {
        if !valid_name(part) {
            return Err(StoreError::InvalidPath(path.to_owned()));
        }
        out.push(part);
        parts += 1;
    }
    if parts == 0 || parts > 3 {
        return Err(StoreError::InvalidPath(path.to_owned()));
    }
    Ok(out)
}

/// Media objects as files under a root directory.
#[derive(Debug, Clone)]
pub struct FsMediaStore {
    root: PathBuf,
}

impl FsMediaStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }
}

#[async_trait]
impl MediaStore for FsMediaStore {
    async fn put(&self, path: &str, data: Bytes) -> Result<(), StoreError> {
        let p = object_path(&self.root, path)?;
        write_atomic(p, data).await?;
        Ok(())
    }

    async fn get(&self, path: &str) -> Result<Option<Bytes>, StoreError> {
        let p = object_path(&self.root, path)?;
        match tokio::fs::read(&p).await {
            Ok(v) => Ok(Some(Bytes::from(v))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, path: &str) -> Result<(), StoreError> {
        let p = object_path(&self.root, path)?;
        match tokio::fs::remove_file(&p).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let p = object_path(&self.root, prefix)?;
        let mut out = Vec::new();
        let mut rd = match tokio::fs::read_dir(&p).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        while let Some(entry) = rd.next_entry().await? {
            if let Some(name) = entry.file_name().to_str() {
                if valid_name(name) {
                    out.push(name.to_owned());
                }
            }
        }
        Ok(out)
    }

    /// Removes the stream's directory if it is empty (a new object since is left alone).
    async fn remove_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        let p = object_path(&self.root, prefix)?;
        match tokio::fs::remove_dir(&p).await {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::DirectoryNotEmpty
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Stream records as JSON files `<root>/TENANT/STREAM.json`, compare-and-set under a
/// per-process lock (the embedded store serves one worker).
///
/// The streams that are not ended have an empty marker file `<root>/.active/TENANT/STREAM`
/// ([`StateStore::list_active`]): created before a record that is not ended is written
/// (at every epoch change, and the first time this process writes the stream), removed
/// after an ended one is. A crash in between leaves at worst a marker too many, which the
/// sweeper reads once and drops.
///
/// Workers live under `<root>/.workers` (a name no tenant can have): `ID.json` holds the
/// [`WorkerRecord`] with its expiry time, `ID.incarnations` the start count. On a shared
/// volume several workers list each other; expiry compares the writer's clock with the
/// reader's, so their clocks must roughly agree (NTP), as for the stream records.
///
/// Tenants live under `<root>/.tenants`: `NAME.json` holds the [`TenantRecord`], replaced
/// atomically; its compare-and-set on the revision runs under a per-process lock.
#[derive(Debug, Clone)]
pub struct FsStateStore {
    root: PathBuf,
    locks: Arc<Mutex<HashMap<StreamId, Arc<Mutex<()>>>>>,
    /// The stamp and epoch of each record file this store last wrote, so that the next
    /// compare-and-set of a stream (one per segment) finds the stored epoch with one
    /// `stat` instead of reading and parsing the whole record back.
    known: Arc<std::sync::Mutex<HashMap<StreamId, (FileStamp, u64)>>>,
    register_lock: Arc<Mutex<()>>,
    /// Serialises the tenant writes of this process.
    tenant_lock: Arc<Mutex<()>>,
    /// Streams whose active marker this store created (and has not removed since).
    marked: Arc<std::sync::Mutex<std::collections::HashSet<StreamId>>>,
}

/// The directory under the state root that holds the worker records.
const WORKERS_DIR: &str = ".workers";

/// The directory under the state root that holds the tenant records (a name no tenant
/// can have).
const TENANTS_DIR: &str = ".tenants";

/// The directory under the state root that holds the markers of the streams that are not
/// ended (a name no tenant can have).
const ACTIVE_DIR: &str = ".active";

/// Creates the empty file at `path` (and its directory) if it is missing.
fn touch(path: &Path) -> std::io::Result<()> {
    let create = |p: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(p)
            .map(drop)
    };
    match create(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            create(path)
        }
        other => other,
    }
}

/// Removes the file at `path`; absent is fine.
fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Valid stream ids from a two-level `TENANT/NAME[suffix]` directory tree under `root`.
async fn list_tree(root: &Path, suffix: &str) -> Result<Vec<StreamId>, StoreError> {
    let mut out = Vec::new();
    let mut tenants = match tokio::fs::read_dir(root).await {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    while let Some(t) = tenants.next_entry().await? {
        let Some(tenant) = t.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !valid_name(&tenant) || !t.file_type().await?.is_dir() {
            continue;
        }
        let mut streams = match tokio::fs::read_dir(t.path()).await {
            Ok(rd) => rd,
            // Removed since the listing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        while let Some(s) = streams.next_entry().await? {
            let fname = s.file_name();
            let Some(name) = fname.to_str().and_then(|n| n.strip_suffix(suffix)) else {
                continue;
            };
            if let Some(id) = StreamId::new(&tenant, name) {
                out.push(id);
            }
        }
    }
    Ok(out)
}

/// A worker record file: the record and when it stops counting.
#[derive(serde::Serialize, serde::Deserialize)]
struct WorkerFile {
    expires_ms: i64,
    worker: WorkerRecord,
}

fn worker_name(worker_id: &str) -> Result<&str, StoreError> {
    if valid_name(worker_id) {
        Ok(worker_id)
    } else {
        Err(StoreError::InvalidPath(worker_id.to_owned()))
    }
}

impl FsStateStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            locks: Arc::default(),
            known: Arc::default(),
            register_lock: Arc::default(),
            tenant_lock: Arc::default(),
            marked: Arc::default(),
        }
    }

    fn marked(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<StreamId>> {
        self.marked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn marker_path(&self, id: &StreamId) -> PathBuf {
        self.root.join(ACTIVE_DIR).join(&id.tenant).join(&id.name)
    }

    async fn stream_lock(&self, id: &StreamId) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().await;
        locks.entry(id.clone()).or_default().clone()
    }

    /// The remembered record stamps (a panic elsewhere while it was held leaves it usable:
    /// at worst an entry is stale, and a stale stamp only means a read).
    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, (FileStamp, u64)>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tenant_path(&self, name: &str) -> Result<PathBuf, StoreError> {
        if !valid_tenant_name(name) {
            return Err(StoreError::InvalidPath(name.to_owned()));
        }
        Ok(self.root.join(TENANTS_DIR).join(format!("{name}.json")))
    }

    async fn read_tenant(&self, name: &str) -> Result<Option<TenantRecord>, StoreError> {
        match tokio::fs::read(self.tenant_path(name)?).await {
            Ok(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    what: format!("tenant {name}"),
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn workers_dir(&self) -> PathBuf {
        self.root.join(WORKERS_DIR)
    }

    fn path(&self, id: &StreamId) -> PathBuf {
        self.root.join(&id.tenant).join(format!("{}.json", id.name))
    }

    async fn read(&self, id: &StreamId) -> Result<Option<StreamRecord>, StoreError> {
        match tokio::fs::read(self.path(id)).await {
            Ok(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    what: id.to_string(),
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// The epoch of the record at `path`: the one remembered in `known` when the file is
/// still the one this store wrote, else read from the file.
fn stored_epoch(
    path: &Path,
    id: &StreamId,
    known: Option<(FileStamp, u64)>,
) -> Result<Option<u64>, StoreError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if let Some((stamp, epoch)) = known {
        if stamp == FileStamp::of(&meta) {
            return Ok(Some(epoch));
        }
    }
    /// Only the epoch is needed; serde skips the rest of the record.
    #[derive(serde::Deserialize)]
    struct Epoch {
        playlist: EpochOnly,
    }
    #[derive(serde::Deserialize)]
    struct EpochOnly {
        epoch: u64,
    }
    match std::fs::read(path) {
        Ok(v) => serde_json::from_slice::<Epoch>(&v)
            .map(|r| Some(r.playlist.epoch))
            .map_err(|e| StoreError::Corrupt {
                what: id.to_string(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[async_trait]
impl StateStore for FsStateStore {
    async fn load(&self, id: &StreamId) -> Result<Option<StreamRecord>, StoreError> {
        self.read(id).await
    }

    async fn compare_and_set(
        &self,
        expected_epoch: Option<u64>,
        record: &StreamRecord,
    ) -> Result<(), StoreError> {
        let lock = self.stream_lock(&record.id).await;
        let _guard = lock.lock().await;
        let json = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt {
            what: record.id.to_string(),
            reason: e.to_string(),
        })?;
        let path = self.path(&record.id);
        let known = self.known().get(&record.id).copied();
        let new_epoch = record.playlist.epoch;
        let id = record.id.clone();
        let ended = record.playlist.ended;
        // The marker goes first for a stream that is not ended (at a new epoch another
        // worker on a shared volume may have removed it), last for an ended one.
        let mark = (!ended
            && (expected_epoch != Some(new_epoch) || !self.marked().contains(&record.id)))
        .then(|| self.marker_path(&record.id));
        let unmark = ended.then(|| self.marker_path(&record.id));
        // Stat, compare, mark, write, rename, stat again (and unmark) in one blocking-pool
        // task.
        let outcome = tokio::task::spawn_blocking(move || {
            let stored = stored_epoch(&path, &id, known)?;
            if stored != expected_epoch {
                return Err(StoreError::Conflict {
                    stored: stored.unwrap_or(0),
                    held: expected_epoch.unwrap_or(0),
                });
            }
            if let Some(marker) = &mark {
                touch(marker)?;
            }
            let file = write_atomic_blocking(&path, &json)?;
            if let Some(marker) = &unmark {
                remove_if_present(marker)?;
            }
            Ok(stamp_if_ours(&path, file))
        })
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))?;
        if outcome.is_ok() {
            let mut marked = self.marked();
            if ended {
                marked.remove(&record.id);
            } else {
                marked.insert(record.id.clone());
            }
        }
        let mut known = self.known();
        match outcome {
            Ok(Some(stamp)) => {
                known.insert(record.id.clone(), (stamp, new_epoch));
                Ok(())
            }
            Ok(None) => {
                known.remove(&record.id);
                Ok(())
            }
            Err(e) => {
                known.remove(&record.id);
                Err(e)
            }
        }
    }

    async fn list(&self) -> Result<Vec<StreamId>, StoreError> {
        list_tree(&self.root, ".json").await
    }

    async fn list_active(&self) -> Result<Vec<StreamId>, StoreError> {
        list_tree(&self.root.join(ACTIVE_DIR), "").await
    }

    async fn delete(&self, id: &StreamId, epoch: u64) -> Result<bool, StoreError> {
        let lock = self.stream_lock(id).await;
        let guard = lock.lock().await;
        let deleted = match self.read(id).await? {
            Some(r) if r.playlist.ended && r.playlist.epoch == epoch => {
                remove_if_present(&self.path(id))?;
                remove_if_present(&self.marker_path(id))?;
                true
            }
            // A marker without its record: dropped.
            None => {
                remove_if_present(&self.marker_path(id))?;
                self.marked().remove(id);
                false
            }
            Some(_) => false,
        };
        if deleted {
            self.known().remove(id);
            self.marked().remove(id);
        }
        drop(guard);
        // Forget the stream's lock unless another call holds it meanwhile.
        let mut locks = self.locks.lock().await;
        if locks.get(id).is_some_and(|l| Arc::strong_count(l) <= 2) {
            locks.remove(id);
        }
        Ok(deleted)
    }

    async fn register_worker(&self, worker_id: &str) -> Result<u64, StoreError> {
        let path = self
            .workers_dir()
            .join(format!("{}.incarnations", worker_name(worker_id)?));
        let _guard = self.register_lock.lock().await;
        let previous = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text.trim().parse::<u64>().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        let count = previous.saturating_add(1);
        write_atomic(path, Bytes::from(format!("{count}\n"))).await?;
        Ok(count)
    }

    async fn put_worker(
        &self,
        record: &WorkerRecord,
        ttl: std::time::Duration,
    ) -> Result<(), StoreError> {
        let path = self
            .workers_dir()
            .join(format!("{}.json", worker_name(&record.id)?));
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let file = WorkerFile {
            expires_ms: crate::unix_ms().saturating_add(ttl_ms),
            worker: record.clone(),
        };
        let json = serde_json::to_vec(&file).map_err(|e| StoreError::Corrupt {
            what: format!("worker {}", record.id),
            reason: e.to_string(),
        })?;
        write_atomic(path, Bytes::from(json)).await?;
        Ok(())
    }

    async fn remove_worker(&self, worker_id: &str) -> Result<(), StoreError> {
        let path = self
            .workers_dir()
            .join(format!("{}.json", worker_name(worker_id)?));
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        let mut out = Vec::new();
        let mut rd = match tokio::fs::read_dir(self.workers_dir()).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        let now = crate::unix_ms();
        while let Some(entry) = rd.next_entry().await? {
            let fname = entry.file_name();
            let Some(id) = fname.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if !valid_name(id) {
                continue;
            }
            let bytes = match tokio::fs::read(entry.path()).await {
                Ok(b) => b,
                // Removed since the listing (a clean exit).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            // A record this version cannot read is skipped, not fatal: one odd file must
            // not hide every other member.
            match serde_json::from_slice::<WorkerFile>(&bytes) {
                Ok(f) if f.expires_ms >= now && f.worker.id == id => out.push(f.worker),
                Ok(_) => {}
                Err(e) => tracing::debug!(worker = id, error = %e, "unreadable worker record"),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let mut out = Vec::new();
        let mut rd = match tokio::fs::read_dir(self.root.join(TENANTS_DIR)).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        while let Some(entry) = rd.next_entry().await? {
            let fname = entry.file_name();
            let Some(name) = fname.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if !valid_tenant_name(name) {
                continue;
            }
            match self.read_tenant(name).await {
                Ok(Some(t)) if t.name == name => out.push(t),
                Ok(_) => {}
                Err(StoreError::Corrupt { what, reason }) => {
                    tracing::warn!(%what, %reason, "unreadable tenant record skipped");
                }
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn load_tenant(&self, name: &str) -> Result<Option<TenantRecord>, StoreError> {
        self.read_tenant(name).await
    }

    async fn put_tenant(
        &self,
        expected_revision: Option<u64>,
        record: &TenantRecord,
    ) -> Result<(), StoreError> {
        let path = self.tenant_path(&record.name)?;
        let json = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt {
            what: format!("tenant {}", record.name),
            reason: e.to_string(),
        })?;
        let _guard = self.tenant_lock.lock().await;
        let stored = self.read_tenant(&record.name).await?.map(|t| t.revision);
        if stored != expected_revision {
            return Err(StoreError::Conflict {
                stored: stored.unwrap_or(0),
                held: expected_revision.unwrap_or(0),
            });
        }
        write_atomic(path.clone(), Bytes::from(json)).await?;
        // Signed playback: a tenant record may hold its playback signing secrets, so the
        // directory of the records is the owner's only.
        if let Some(dir) = path.parent() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    async fn delete_tenant(&self, name: &str, revision: u64) -> Result<bool, StoreError> {
        let path = self.tenant_path(name)?;
        let _guard = self.tenant_lock.lock().await;
        match self.read_tenant(name).await? {
            Some(t) if t.revision == revision => {
                remove_if_present(&path)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidegate_packager::{Container, PlaylistState};

    fn record(id: &StreamId, epoch: u64) -> StreamRecord {
        let mut playlist = PlaylistState::new(Container::Fmp4, 5, 2);
        playlist.epoch = epoch;
        StreamRecord {
            id: id.clone(),
            playlist,
            updated_ms: 0,
            publisher_left_ms: None,
            owner: "w".into(),
            last_media_ms: None,
            takeovers: Vec::new(),
            session_started_ms: None,
            holder: None,
        }
    }

    fn worker(id: &str) -> WorkerRecord {
        WorkerRecord {
            id: id.into(),
            version: "0.0.0".into(),
            pool: None,
            addresses: Default::default(),
            started_ms: 1,
            incarnations: 1,
            heartbeat_ms: 1,
            state: crate::WorkerState::Ready,
            load: Default::default(),
        }
    }

    #[tokio::test]
    async fn workers_register_list_expire_and_leave() {
        let dir = tempdir("tg-workers");
        let store = FsStateStore::new(dir.clone());
        assert!(store.workers().await.unwrap().is_empty());
        assert_eq!(store.register_worker("w-1").await.unwrap(), 1);
        assert_eq!(store.register_worker("w-1").await.unwrap(), 2);
        assert_eq!(store.register_worker("w-2").await.unwrap(), 1);
        assert!(store.register_worker("../x").await.is_err());
        let ttl = std::time::Duration::from_secs(60);
        store.put_worker(&worker("w-2"), ttl).await.unwrap();
        store.put_worker(&worker("w-1"), ttl).await.unwrap();
        let ids: Vec<String> = store
            .workers()
            .await
            .unwrap()
            .into_iter()
            .map(|w| w.id)
            .collect();
        assert_eq!(ids, ["w-1", "w-2"]);
        // Workers are not streams.
        assert!(store.list().await.unwrap().is_empty());
        store.remove_worker("w-1").await.unwrap();
        store.remove_worker("w-1").await.unwrap();
        store
            .put_worker(&worker("w-2"), std::time::Duration::ZERO)
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert!(
            store.workers().await.unwrap().is_empty(),
            "expired or removed"
        );
        // The count survives the record.
        assert_eq!(store.register_worker("w-1").await.unwrap(), 3);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempdir(prefix: &str) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()))
    }

    #[tokio::test]
    async fn compare_and_set_fences_stale_writers() {
        let dir = std::env::temp_dir().join(format!("tg-state-{}", std::process::id()));
        let store = FsStateStore::new(dir.clone());
        let id = StreamId::new("default", "cam").unwrap();
        store.compare_and_set(None, &record(&id, 1)).await.unwrap();
        assert!(matches!(
            store.compare_and_set(None, &record(&id, 1)).await,
            Err(StoreError::Conflict { .. })
        ));
        store
            .compare_and_set(Some(1), &record(&id, 2))
            .await
            .unwrap();
        assert!(matches!(
            store.compare_and_set(Some(1), &record(&id, 3)).await,
            Err(StoreError::Conflict { stored: 2, held: 1 })
        ));
        assert_eq!(store.load(&id).await.unwrap().unwrap().playlist.epoch, 2);
        assert_eq!(store.list().await.unwrap(), vec![id]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn its_own_last_write_is_recognised_without_reading_it() {
        let dir = tempdir("tg-state-stamp");
        let store = FsStateStore::new(dir.clone());
        let id = StreamId::new("default", "cam").unwrap();
        store.compare_and_set(None, &record(&id, 1)).await.unwrap();
        store
            .compare_and_set(Some(1), &record(&id, 1))
            .await
            .unwrap();
        let (stamp, epoch) = store.known().get(&id).copied().expect("remembered");
        assert_eq!(epoch, 1);
        // The remembered epoch is trusted while the file is the one written (a different
        // epoch here proves the file was not read)...
        let path = dir.join("default/cam.json");
        assert_eq!(stored_epoch(&path, &id, Some((stamp, 7))).unwrap(), Some(7));
        // ...and not once it was replaced.
        let replaced = dir.join("default/cam.json.new");
        std::fs::copy(&path, &replaced).unwrap();
        std::fs::rename(&replaced, &path).unwrap();
        assert_eq!(stored_epoch(&path, &id, Some((stamp, 7))).unwrap(), Some(1));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_write_by_another_store_on_the_same_root_is_seen() {
        // Two workers on a shared volume: the first remembers what it wrote, the second
        // takes the stream over; the first must see the newer epoch, not its memory.
        let dir = tempdir("tg-state-shared");
        let a = FsStateStore::new(dir.clone());
        let b = FsStateStore::new(dir.clone());
        let id = StreamId::new("default", "cam").unwrap();
        a.compare_and_set(None, &record(&id, 1)).await.unwrap();
        a.compare_and_set(Some(1), &record(&id, 1)).await.unwrap();
        b.compare_and_set(Some(1), &record(&id, 2)).await.unwrap();
        assert!(matches!(
            a.compare_and_set(Some(1), &record(&id, 1)).await,
            Err(StoreError::Conflict { stored: 2, held: 1 })
        ));
        // An operator removes the record: the next writer starts afresh.
        std::fs::remove_file(dir.join("default/cam.json")).unwrap();
        a.compare_and_set(None, &record(&id, 3)).await.unwrap();
        assert_eq!(b.load(&id).await.unwrap().unwrap().playlist.epoch, 3);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn media_paths_are_confined() {
        let store = FsMediaStore::new(std::env::temp_dir().join("tg-media-confined"));
        for bad in ["../x", "a/../../b", "", "a//b", ".hidden", "a/b/c/d"] {
            assert!(matches!(
                store.put(bad, Bytes::new()).await,
                Err(StoreError::InvalidPath(_))
            ));
        }
    }

    #[test]
    fn stream_ids_reject_unsafe_names() {
        assert!(StreamId::new("default", "cam-1_a.b").is_some());
        for bad in ["", "..", ".x", "a/b", "a b", &"x".repeat(129)] {
            assert!(StreamId::new("default", bad).is_none(), "{bad}");
        }
    }
}
