//! [`StateUrl`] (`--state`) and [`StorageUrl`] (`--storage`): which backend holds the shared
//! state and the media, parsed once, so that `ServeConfig::validate` refuses exactly what the
//! store could not build.

use std::path::PathBuf;

use crate::valid_name;

/// The state backend a `--state` value names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateUrl {
    /// A Redis server (`redis://` or `rediss://` URL, kept whole for the client).
    Redis(String),
    /// A Redis primary found through Sentinel and followed across failovers
    /// (`redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB]`).
    Sentinel(SentinelUrl),
}

/// A `redis+sentinel://` state URL: the Sentinels to ask, the master name they monitor,
/// the database, and the credentials of the data nodes (the Sentinels are asked without
/// them).
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    /// The URL as written (it may carry a password: do not log it).
    pub url: String,
    /// The Sentinels, `host:port`, in the order given.
    pub sentinels: Vec<String>,
    /// The master name (`sentinel monitor NAME ...`).
    pub master: String,
    /// The database number.
    pub db: i64,
    /// Username for the primary (ACL), if any.
    pub username: Option<String>,
    /// Password for the primary, if any.
    pub password: Option<String>,
}

impl std::fmt::Debug for SentinelUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL nor the password.
        f.debug_struct("SentinelUrl")
            .field("sentinels", &self.sentinels)
            .field("master", &self.master)
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl SentinelUrl {
    /// A `redis://` URL for the data node at `host:port` with this URL's credentials and
    /// database.
    pub fn node_url(&self, host: &str, port: u16) -> String {
        let auth = match (&self.username, &self.password) {
            (Some(u), Some(p)) => format!("{u}:{p}@"),
            (None, Some(p)) => format!(":{p}@"),
            (Some(u), None) => format!("{u}@"),
            (None, None) => String::new(),
        };
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        format!("redis://{auth}{host}:{port}/{}", self.db)
    }
}

/// Parses `redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB]`.
fn parse_sentinel_url(url: &str) -> Result<SentinelUrl, String> {
    const FORM: &str = "redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB]";
    let rest = url
        .strip_prefix("redis+sentinel://")
        .ok_or_else(|| format!("must be {FORM}"))?;
    let (hosts_part, path) = rest
        .split_once('/')
        .ok_or_else(|| format!("names no master: {FORM}"))?;
    let (auth, hosts) = match hosts_part.rsplit_once('@') {
        Some((auth, hosts)) => (Some(auth), hosts),
        None => (None, hosts_part),
    };
    let (username, password) = match auth {
        None => (None, None),
        Some(auth) => {
            let (u, p) = auth.split_once(':').unwrap_or((auth, ""));
            let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
            (some(u), some(p))
        }
    };
    let mut sentinels = Vec::new();
    for h in hosts.split(',') {
        let (host, port) = h
            .rsplit_once(':')
            .ok_or_else(|| format!("Sentinel `{h}` has no port: {FORM}"))?;
        let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
        if host.is_empty() || !port_ok {
            return Err(format!("Sentinel `{h}` is not HOST:PORT: {FORM}"));
        }
        sentinels.push(h.to_owned());
    }
    let (master, db) = match path.split_once('/') {
        Some((master, db)) => (master, db),
        None => (path, ""),
    };
    if master.is_empty() || !valid_name(master) {
        return Err(format!(
            "master name `{master}` must be of [A-Za-z0-9_.-]: {FORM}"
        ));
    }
    let db = if db.is_empty() {
        0
    } else {
        db.parse::<i64>()
            .ok()
            .filter(|d| *d >= 0)
            .ok_or_else(|| format!("database `{db}` is not a number: {FORM}"))?
    };
    Ok(SentinelUrl {
        url: url.to_owned(),
        sentinels,
        master: master.to_owned(),
        db,
        username,
        password,
    })
}

/// The media backend a `--storage` value names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUrl {
    /// Files under an absolute directory (`file:///path`).
    File(PathBuf),
    /// An S3 bucket and an optional key prefix (`s3://bucket[/prefix]`).
    S3 {
        /// The bucket.
        bucket: String,
        /// Key prefix without leading or trailing slash; empty for the bucket's root.
        prefix: String,
    },
}

/// Parses a `--state` value; the error says why it is refused (without echoing credentials).
fn parse_state_url(url: &str) -> Result<StateUrl, String> {
    if url.starts_with("redis+sentinel://") {
        return parse_sentinel_url(url).map(StateUrl::Sentinel);
    }
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(
            "must be a redis://, rediss:// or redis+sentinel:// URL (e.g. redis://host:6379/0)"
                .to_owned(),
        );
    }
    ::redis::Client::open(url)
        .map_err(|e| format!("not a valid Redis URL: {e}"))
        .map(|_| StateUrl::Redis(url.to_owned()))
}

/// Parses a `--storage` value: `file:///absolute/path` or `s3://bucket[/prefix]`.
fn parse_storage_url(url: &str) -> Result<StorageUrl, String> {
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err("a file:// URL needs an absolute path (file:///srv/media)".to_owned());
        }
        return Ok(StorageUrl::File(PathBuf::from(path)));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if !valid_bucket(bucket) {
            return Err(format!(
                "`{bucket}` is not a valid S3 bucket name (3 to 63 of a-z 0-9 . -)"
            ));
        }
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() && !prefix.split('/').all(valid_name) {
            return Err(format!(
                "key prefix `{prefix}` must be /-separated names of [A-Za-z0-9_.-] not starting with a dot"
            ));
        }
        return Ok(StorageUrl::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        });
    }
    Err("must be file:///absolute/path or s3://bucket[/prefix]".to_owned())
}

impl std::str::FromStr for StateUrl {
    type Err = String;
    fn from_str(url: &str) -> Result<Self, String> {
        parse_state_url(url)
    }
}

impl std::str::FromStr for StorageUrl {
    type Err = String;
    fn from_str(url: &str) -> Result<Self, String> {
        parse_storage_url(url)
    }
}

/// The URL as written (a Redis URL keeps its credentials: do not log it).
impl std::fmt::Display for StateUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Redis(url) => f.write_str(url),
            Self::Sentinel(s) => f.write_str(&s.url),
        }
    }
}

impl std::fmt::Display for StorageUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "file://{}", path.display()),
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// Whether `b` is a bucket name S3 accepts for path-style requests: 3 to 63 of lower-case
/// letters, digits, `.` and `-`, starting and ending with a letter or digit.
pub fn valid_bucket(b: &str) -> bool {
    let edge_ok = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && edge_ok(b.bytes().next())
        && edge_ok(b.bytes().last())
}

crate::serde_as_string!(StateUrl);
crate::serde_as_string!(StorageUrl);

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn state_urls() {
        assert_eq!(
            parse_state_url("redis://127.0.0.1:6379/0"),
            Ok(StateUrl::Redis("redis://127.0.0.1:6379/0".into()))
        );
        assert!(parse_state_url("rediss://user:pw@redis.example:6380").is_ok());
        for bad in ["", "127.0.0.1:6379", "http://x", "redis:/x", "etcd://x"] {
            assert!(parse_state_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sentinel_urls() {
        let Ok(StateUrl::Sentinel(s)) =
            parse_state_url("redis+sentinel://:pw@10.0.0.1:26379,sentinel-b:26380/mymaster/2")
        else {
            panic!("not parsed");
        };
        assert_eq!(s.sentinels, ["10.0.0.1:26379", "sentinel-b:26380"]);
        assert_eq!((s.master.as_str(), s.db), ("mymaster", 2));
        assert_eq!(s.password.as_deref(), Some("pw"));
        assert_eq!(s.node_url("10.0.0.9", 6380), "redis://:pw@10.0.0.9:6380/2");
        assert!(!format!("{s:?}").contains("pw"));
        let Ok(StateUrl::Sentinel(s)) = parse_state_url("redis+sentinel://h:1/m") else {
            panic!("not parsed");
        };
        assert_eq!((s.db, s.node_url("h", 2)), (0, "redis://h:2/0".to_owned()));
        for bad in [
            "redis+sentinel://h:1",
            "redis+sentinel://h/m",
            "redis+sentinel://h:0/m",
            "redis+sentinel://:1/m",
            "redis+sentinel://h:1,/m",
            "redis+sentinel://h:1/",
            "redis+sentinel://h:1/m/x",
            "redis+sentinel://h:1/m/-1",
        ] {
            assert!(parse_state_url(bad).is_err(), "{bad}");
        }
        let url = "redis+sentinel://a:1,b:2/m/0";
        assert_eq!(url.parse::<StateUrl>().unwrap().to_string(), url);
    }

    #[test]
    fn urls_read_and_write_as_the_strings_they_were_given() {
        use serde::de::value::{Error, StringDeserializer};
        use serde::de::IntoDeserializer;
        use serde::Deserialize;
        for url in [
            "file:///srv/media",
            "s3://my-bucket",
            "s3://my.bucket/live/eu-1",
        ] {
            let parsed: StorageUrl = url.parse().unwrap();
            assert_eq!(parsed.to_string(), url);
            let d: StringDeserializer<Error> = url.to_owned().into_deserializer();
            assert_eq!(StorageUrl::deserialize(d).unwrap(), parsed);
        }
        let d: StringDeserializer<Error> = "gs://bucket".to_owned().into_deserializer();
        assert!(StorageUrl::deserialize(d).is_err());
        let state: StateUrl = "redis://127.0.0.1:6379/0".parse().unwrap();
        assert_eq!(state.to_string(), "redis://127.0.0.1:6379/0");
    }

    #[test]
    fn storage_urls() {
        assert_eq!(
            parse_storage_url("file:///srv/media"),
            Ok(StorageUrl::File(PathBuf::from("/srv/media")))
        );
        assert_eq!(
            parse_storage_url("s3://my-bucket"),
            Ok(StorageUrl::S3 {
                bucket: "my-bucket".into(),
                prefix: String::new()
            })
        );
        assert_eq!(
            parse_storage_url("s3://my.bucket/live/eu-1/"),
            Ok(StorageUrl::S3 {
                bucket: "my.bucket".into(),
                prefix: "live/eu-1".into()
            })
        );
        for bad in [
            "file://relative/path",
            "s3://",
            "s3://ab",
            "s3://Upper",
            "s3://-bucket",
            "s3://b_ucket",
            "s3://bucket/../x",
            "s3://bucket/a//b",
            "s3://bucket/.hidden",
            "gs://bucket",
            "/srv/media",
        ] {
            assert!(parse_storage_url(bad).is_err(), "{bad}");
        }
    }
}
