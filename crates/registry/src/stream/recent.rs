//! The media objects the origin read last, kept in memory and read once for all the
//! requests that want them at the same time (issue #13, "Performance").
//!
//! Every new LL-HLS part wakes every viewer's held request for it at the same instant
//! (`crates/origin/src/llhls.rs`); reading the object from the media store once per viewer
//! cost 2,000 file reads per part at 2,000 viewers, each a job of the blocking pool, whose
//! 64 threads then fought the origin's one core. Media objects are immutable once written
//! (a part, a segment: a name is never reused), so the bytes read for one request serve the
//! next: the first request for an object reads it, the requests that arrive meanwhile wait
//! for that read and share its bytes ([`RecentObjects::get_or_load`]).
//!
//! An LL-HLS part that requests wait for is handed over by the writer as soon as it is
//! stored ([`RecentObjects::insert`]): the held requests answer from memory at once
//! instead of all waiting for one read of the store.
//!
//! What is not kept: an object the store does not have (it may be written next), and a
//! read that failed (the next request reads again).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::store::StoreError;

/// Objects kept: the parts and segments of the last few seconds of a few dozen streams.
pub const RECENT_OBJECTS: usize = 64;

/// Bytes kept at most (the oldest objects go first past it): 64 segments of 10 Mbit/s and
/// 6 s would be 480 MiB; this keeps the memory bounded whatever the bitrate.
pub const RECENT_OBJECT_BYTES: usize = 64 * 1024 * 1024;

/// One object: its bytes once read (the cell is empty while the first read is under way,
/// and stays empty after a read that found nothing or failed).
type Entry = (String, Arc<OnceCell<Bytes>>);

/// The media objects read last, oldest first, bounded by [`RECENT_OBJECTS`] and
/// [`RECENT_OBJECT_BYTES`].
#[derive(Default)]
pub struct RecentObjects {
    entries: Mutex<VecDeque<Entry>>,
}

/// Why a read did not fill an entry.
enum Miss {
    Absent,
    Failed(StoreError),
}

impl RecentObjects {
    /// The object at `path`: kept bytes, or the bytes of the read another request started,
    /// or `load`'s result (kept when it found the object).
    pub async fn get_or_load<F, Fut>(
        &self,
        path: &str,
        load: F,
    ) -> Result<Option<Bytes>, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Bytes>, StoreError>>,
    {
        let cell = self.entry(path);
        let read = cell
            .get_or_try_init(|| async {
                match load().await {
                    Ok(Some(bytes)) => Ok(bytes),
                    Ok(None) => Err(Miss::Absent),
                    Err(e) => Err(Miss::Failed(e)),
                }
            })
            .await;
        match read {
            Ok(bytes) => {
                let bytes = bytes.clone();
                self.trim();
                Ok(Some(bytes))
            }
            Err(Miss::Absent) => Ok(None),
            Err(Miss::Failed(e)) => Err(e),
        }
    }

    /// Keeps `bytes` as the object at `path` (just written: the writer hands them over so
    /// that the requests held for it do not read them back from the store).
    pub fn insert(&self, path: &str, bytes: Bytes) {
        let _ = self.entry(path).set(bytes);
        self.trim();
    }

    /// The entry of `path`, added (as the newest) if there is none.
    fn entry(&self, path: &str) -> Arc<OnceCell<Bytes>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, cell)) = entries.iter().rev().find(|(p, _)| p == path) {
            return cell.clone();
        }
        let cell = Arc::new(OnceCell::new());
        entries.push_back((path.to_owned(), cell.clone()));
        if entries.len() > RECENT_OBJECTS {
            entries.pop_front();
        }
        cell
    }

    /// Drops the oldest objects while the kept bytes exceed [`RECENT_OBJECT_BYTES`] (the
    /// newest stays, whatever its size: the requests waiting for it share it anyway).
    fn trim(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut kept: usize = entries
            .iter()
            .filter_map(|(_, c)| c.get().map(Bytes::len))
            .sum();
        while kept > RECENT_OBJECT_BYTES && entries.len() > 1 {
            if let Some((_, c)) = entries.pop_front() {
                kept -= c.get().map_or(0, Bytes::len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn an_object_handed_over_is_not_read_again() {
        let recent = RecentObjects::default();
        recent.insert("t/s/seg-1-0.0.m4s", Bytes::from_static(b"part"));
        let got = recent
            .get_or_load("t/s/seg-1-0.0.m4s", || async {
                panic!("read from the store");
            })
            .await
            .unwrap();
        assert_eq!(got.as_deref(), Some(&b"part"[..]));
    }

    #[tokio::test]
    async fn requests_at_the_same_time_share_one_read() {
        let recent = Arc::new(RecentObjects::default());
        let reads = Arc::new(AtomicUsize::new(0));
        let (go, wait) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (recent, reads, mut wait) = (recent.clone(), reads.clone(), wait.clone());
            tasks.push(tokio::spawn(async move {
                recent
                    .get_or_load("t/s/part-1-0.m4s", || async move {
                        reads.fetch_add(1, Ordering::SeqCst);
                        let _ = wait.wait_for(|go| *go).await;
                        Ok(Some(Bytes::from_static(b"part")))
                    })
                    .await
            }));
        }
        tokio::task::yield_now().await;
        let _ = go.send(true);
        for t in tasks {
            let got = t.await.ok().and_then(Result::ok).flatten();
            assert_eq!(got.as_deref(), Some(&b"part"[..]));
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        // Kept: a later request reads nothing.
        let again = recent
            .get_or_load("t/s/part-1-0.m4s", || async { Ok(None) })
            .await;
        assert_eq!(again.ok().flatten().as_deref(), Some(&b"part"[..]));
    }

    #[tokio::test]
    async fn an_absent_or_failed_object_is_read_again() {
        let recent = RecentObjects::default();
        let absent = recent.get_or_load("t/s/a.m4s", || async { Ok(None) }).await;
        assert!(matches!(absent, Ok(None)));
        let failed = recent
            .get_or_load("t/s/a.m4s", || async {
                Err(StoreError::InvalidPath("t/s/a.m4s".into()))
            })
            .await;
        assert!(failed.is_err());
        let written = recent
            .get_or_load("t/s/a.m4s", || async { Ok(Some(Bytes::from_static(b"a"))) })
            .await;
        assert_eq!(written.ok().flatten().as_deref(), Some(&b"a"[..]));
    }

    #[tokio::test]
    async fn the_oldest_objects_go_first() {
        let recent = RecentObjects::default();
        for i in 0..=RECENT_OBJECTS {
            let bytes = Bytes::from(i.to_string());
            let _ = recent
                .get_or_load(&format!("t/s/{i}.m4s"), || async { Ok(Some(bytes)) })
                .await;
        }
        // The first was dropped: read again; the newest is kept.
        let first = recent.get_or_load("t/s/0.m4s", || async { Ok(None) }).await;
        assert!(matches!(first, Ok(None)));
        let newest = format!("t/s/{RECENT_OBJECTS}.m4s");
        let kept = recent.get_or_load(&newest, || async { Ok(None) }).await;
        assert!(kept.ok().flatten().is_some());
    }

    #[tokio::test]
    async fn the_kept_bytes_are_bounded() {
        let recent = RecentObjects::default();
        let big = Bytes::from(vec![0u8; RECENT_OBJECT_BYTES / 2 + 1]);
        for i in 0..3 {
            let b = big.clone();
            let _ = recent
                .get_or_load(&format!("t/s/{i}.m4s"), || async { Ok(Some(b)) })
                .await;
        }
        let first = recent.get_or_load("t/s/0.m4s", || async { Ok(None) }).await;
        assert!(
            matches!(first, Ok(None)),
            "the oldest went past the byte bound"
        );
        let newest = recent.get_or_load("t/s/2.m4s", || async { Ok(None) }).await;
        assert!(newest.ok().flatten().is_some());
    }
}
