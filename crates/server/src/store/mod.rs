//! What must outlive a worker, behind two small traits:
//!
//! - [`StateStore`]: per stream, one [`StreamRecord`] (the playlist state and its fencing
//!   epoch). Every write is a compare-and-set on the epoch the writer holds, so a worker that
//!   lost a stream can never write it again. The embedded implementation keeps one JSON file
//!   per stream under `<data-dir>/state`, replaced atomically; a Redis implementation (the
//!   cluster issue) keeps the same records with a Lua compare-and-set.
//! - [`MediaStore`]: segment, init and playlist objects by path. Names are unique per epoch,
//!   so nothing is ever overwritten but the playlist; a reader never sees a half-written
//!   object. The embedded implementation writes files under `<data-dir>/media` via a temporary
//!   file and a rename; an S3 implementation puts objects.

pub mod fs;

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tidegate_packager::PlaylistState;

/// A stream's identity: the tenant and the public stream name. Both are validated path-safe
/// names (see [`StreamId::new`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamId {
    /// The tenant.
    pub tenant: String,
    /// The public stream name.
    pub name: String,
}

/// Longest tenant or stream name accepted.
pub const MAX_NAME_LEN: usize = 128;

impl StreamId {
    /// Builds an id from untrusted parts: each must be 1..=128 of `[A-Za-z0-9_.-]` and must not
    /// start with a dot, so it can name a directory or an object prefix safely.
    pub fn new(tenant: &str, name: &str) -> Option<Self> {
        (valid_name(tenant) && valid_name(name)).then(|| Self {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The key prefix of this stream's objects: `TENANT/NAME`.
    pub fn prefix(&self) -> String {
        format!("{}/{}", self.tenant, self.name)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.name)
    }
}

/// Whether `s` is a safe tenant, stream or object file name.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The durable record of one stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamRecord {
    /// The stream.
    pub id: StreamId,
    /// Playlist state (epoch, sequences, segment list).
    pub playlist: PlaylistState,
    /// Unix ms of the last write: a record that is not ended and older than the reconnect
    /// window belongs to a stream whose publisher never came back.
    pub updated_ms: i64,
    /// Unix ms when the publisher of the current epoch left, or `None` while one is live.
    pub publisher_left_ms: Option<i64>,
    /// The worker that holds the current epoch.
    pub owner: String,
}

/// Errors of either store. `Conflict` is the fencing outcome, not a fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer holds a newer epoch: this writer lost the stream.
    #[error("epoch conflict: stored epoch {stored}, writer holds {held}")]
    Conflict {
        /// The epoch in the store.
        stored: u64,
        /// The epoch the writer held.
        held: u64,
    },
    /// The backend failed (disk, network).
    #[error("store I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A stored record could not be decoded.
    #[error("corrupt record {what}: {reason}")]
    Corrupt {
        /// Which record.
        what: String,
        /// Why.
        reason: String,
    },
    /// A path that is not a safe object name.
    #[error("invalid object path {0:?}")]
    InvalidPath(String),
}

/// Shared stream state with epoch fencing.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// The record of `id`, if any.
    async fn load(&self, id: &StreamId) -> Result<Option<StreamRecord>, StoreError>;
    /// Stores `record` if the stored epoch is `expected_epoch` (or there is no record and
    /// `expected_epoch` is `None`). A newer stored epoch yields [`StoreError::Conflict`].
    async fn compare_and_set(
        &self,
        expected_epoch: Option<u64>,
        record: &StreamRecord,
    ) -> Result<(), StoreError>;
    /// Every stream with a record.
    async fn list(&self) -> Result<Vec<StreamId>, StoreError>;
}

/// Media objects by path (`TENANT/STREAM/FILE`).
#[async_trait]
pub trait MediaStore: Send + Sync + 'static {
    /// Writes an object; readers see the old or the new content, never a mix.
    async fn put(&self, path: &str, data: Bytes) -> Result<(), StoreError>;
    /// Reads an object; `None` when absent.
    async fn get(&self, path: &str) -> Result<Option<Bytes>, StoreError>;
    /// Removes an object; absent is fine.
    async fn delete(&self, path: &str) -> Result<(), StoreError>;
    /// Object names (file part only) under a stream's prefix.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
}
