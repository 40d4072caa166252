//! Media objects in an S3 bucket (AWS or any S3-compatible server), through `object_store`.
//!
//! `--storage s3://bucket/prefix` puts object `TENANT/STREAM/FILE` at key
//! `prefix/TENANT/STREAM/FILE`. The endpoint, region and credentials come from the usual AWS
//! variables (`AWS_ENDPOINT_URL` or `AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP=true` for a plain-http
//! endpoint) via [`AmazonS3Builder::from_env`]. Requests are path-style
//! (`endpoint/bucket/key`) unless `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`, which is what
//! non-AWS servers (MinIO, Ceph, moto, s3s) expect.
//!
//! A PUT replaces an object whole, so readers see the old or the new content, never a mix.
//! Every call is bounded: each HTTP attempt by [`REQUEST_TIMEOUT`], at most [`MAX_RETRIES`]
//! retries of transient failures, and the whole call by [`CALL_TIMEOUT`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
pub use object_store::aws::AmazonS3Builder;
use object_store::aws::AmazonS3ConfigKey;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientConfigKey, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};

pub use tidegate_model::valid_bucket;

use super::{valid_name, MediaStore, StoreError};

/// Upper bound on one HTTP attempt (a 2 s segment of a few MB over a healthy link takes far
/// less; a stalled connection is cut and retried).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bound on opening a connection to the endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Retries of a transient failure (connection error, 5xx, 429) after the first attempt.
pub const MAX_RETRIES: usize = 2;

/// First retry delay; doubled on each further retry.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Upper bound on a whole store call, retries included: a hung endpoint costs a writer at
/// most two attempts, so its bounded queue (a few segments) absorbs the stall.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Most components in an object path (`TENANT/STREAM/FILE`).
const MAX_PATH_PARTS: usize = 3;

/// Media objects in one S3 bucket under an optional key prefix.
#[derive(Debug, Clone)]
pub struct S3MediaStore {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl S3MediaStore {
    /// A store for `bucket` and key `prefix` (may be empty) with endpoint, region and
    /// credentials from the AWS environment variables.
    pub fn from_env(bucket: &str, prefix: &str) -> Result<Self, StoreError> {
        Self::new(AmazonS3Builder::from_env(), bucket, prefix)
    }

    /// A store from an explicit builder (endpoint, credentials…); the bucket, the timeouts and
    /// the retry policy are set here, overriding whatever the builder had for them.
    pub fn new(builder: AmazonS3Builder, bucket: &str, prefix: &str) -> Result<Self, StoreError> {
        let prefix = prefix.trim_matches('/');
        if !valid_bucket(bucket) || (!prefix.is_empty() && !prefix.split('/').all(valid_name)) {
            return Err(StoreError::InvalidPath(format!("s3://{bucket}/{prefix}")));
        }
        let s3 = builder
            .with_bucket_name(bucket)
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                humantime::format_duration(REQUEST_TIMEOUT).to_string(),
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                humantime::format_duration(CONNECT_TIMEOUT).to_string(),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: RETRY_BACKOFF,
                    max_backoff: RETRY_BACKOFF * 4,
                    base: 2.0,
                },
                max_retries: MAX_RETRIES,
                retry_timeout: CALL_TIMEOUT,
            })
            .build()
            .map_err(|e| StoreError::Unavailable(format!("s3 configuration: {e}")))?;
        Ok(Self {
            store: Arc::new(s3),
            prefix: prefix.to_owned(),
        })
    }

    /// The key of object `path` (`TENANT/STREAM/FILE`, or a shorter prefix of it), refusing
    /// anything that is not 1..=3 safe names.
    fn key(&self, path: &str) -> Result<Path, StoreError> {
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() > MAX_PATH_PARTS || !parts.iter().all(|p| valid_name(p)) {
            return Err(StoreError::InvalidPath(path.to_owned()));
        }
        let key = if self.prefix.is_empty() {
            path.to_owned()
        } else {
            format!("{}/{path}", self.prefix)
        };
        Path::parse(key).map_err(|_| StoreError::InvalidPath(path.to_owned()))
    }
}

/// Runs `fut` within [`CALL_TIMEOUT`]; `NotFound` becomes `Ok(None)`.
async fn bounded<T>(
    what: &str,
    path: &str,
    fut: impl std::future::Future<Output = object_store::Result<T>>,
) -> Result<Option<T>, StoreError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(Some(v)),
        Ok(Err(object_store::Error::NotFound { .. })) => Ok(None),
        Ok(Err(e)) => Err(StoreError::Unavailable(format!("s3 {what} {path}: {e}"))),
        Err(_) => Err(StoreError::Unavailable(format!(
            "s3 {what} {path}: took longer than {CALL_TIMEOUT:?}"
        ))),
    }
}

#[async_trait]
impl MediaStore for S3MediaStore {
    async fn put(&self, path: &str, data: Bytes) -> Result<(), StoreError> {
        let key = self.key(path)?;
        bounded("PUT", path, self.store.put(&key, PutPayload::from(data)))
            .await?
            .map(drop)
            .ok_or_else(|| StoreError::Unavailable(format!("s3 PUT {path}: bucket not found")))
    }

    async fn get(&self, path: &str) -> Result<Option<Bytes>, StoreError> {
        let key = self.key(path)?;
        let store = &self.store;
        bounded(
            "GET",
            path,
            async move { store.get(&key).await?.bytes().await },
        )
        .await
    }

    async fn delete(&self, path: &str) -> Result<(), StoreError> {
        let key = self.key(path)?;
        bounded("DELETE", path, self.store.delete(&key))
            .await
            .map(drop)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let key = self.key(prefix)?;
        let listing = bounded("LIST", prefix, self.store.list_with_delimiter(Some(&key))).await?;
        let mut out: Vec<String> = listing
            .map(|l| l.objects)
            .unwrap_or_default()
            .iter()
            .filter_map(|o| o.location.filename())
            .filter(|n| valid_name(n))
            .map(str::to_owned)
            .collect();
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        for good in ["abc", "my-bucket", "my.bucket.1", &"a".repeat(63)] {
            assert!(valid_bucket(good), "{good}");
        }
        for bad in ["", "ab", "-ab", "ab-", "Abc", "a_b", "a/b", &"a".repeat(64)] {
            assert!(!valid_bucket(bad), "{bad}");
        }
    }

    #[test]
    fn keys_carry_the_prefix_and_refuse_unsafe_paths() {
        let builder = AmazonS3Builder::new()
            .with_region("us-east-1")
            .with_endpoint("http://127.0.0.1:9")
            .with_allow_http(true);
        let store = S3MediaStore::new(builder, "bucket", "/live/eu/").unwrap();
        assert_eq!(
            store.key("acme/cam/seg-1-2.m4s").unwrap().as_ref(),
            "live/eu/acme/cam/seg-1-2.m4s"
        );
        for bad in [
            "../x",
            "a/../../b",
            "",
            "a//b",
            ".hidden",
            "a/b/c/d",
            "a/b c",
        ] {
            assert!(
                matches!(store.key(bad), Err(StoreError::InvalidPath(_))),
                "{bad}"
            );
        }
    }
}
