//! The worker's configuration: one serde struct, parsed from TOML, overlaid by the
//! environment and the command line (in the `tidegate` binary), then validated.
//!
//! The file stays one flat table; each subsystem receives only its own section, cut from
//! the validated whole with its URLs typed ([`ServeConfig::ingest`], [`ServeConfig::http`],
//! [`ServeConfig::origin`], [`ServeConfig::store`], [`ServeConfig::events`],
//! [`ServeConfig::cluster`], [`ServeConfig::pulls`]).
#![deny(missing_docs)]

pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidegate_model::{SrtSource, StateUrl, StorageUrl, StreamId, WebhookUrl};

/// HLS segment container (defined with the tenants' settings, which may choose one too).
pub use tidegate_model::SegmentFormat;

/// What happens when a publisher arrives for a stream that another publisher holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TakeoverPolicy {
    /// The newcomer takes the stream over at once when its holder is on another worker or has
    /// sent nothing for a moment (an encoder reconnecting after its old connection died); a
    /// holder that is live on this worker keeps it. Encoders that keep taking a stream from
    /// each other are detected and the newcomer is refused for a while.
    #[default]
    Newest,
    /// The holder keeps the stream while it delivers media; a newcomer takes over only once
    /// the holder has been silent for a moment (its worker died or its connection hung).
    Refuse,
}

impl std::str::FromStr for TakeoverPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "newest" => Ok(Self::Newest),
            "refuse" => Ok(Self::Refuse),
            other => Err(format!(
                "unknown takeover policy `{other}` (newest or refuse)"
            )),
        }
    }
}

/// The packager's container of a [`SegmentFormat`].
pub trait ContainerOf {
    /// The packager's container for this format.
    fn container(self) -> tidegate_packager::Container;
}

impl ContainerOf for SegmentFormat {
    fn container(self) -> tidegate_packager::Container {
        match self {
            Self::Fmp4 => tidegate_packager::Container::Fmp4,
            Self::Ts => tidegate_packager::Container::MpegTs,
        }
    }
}

/// The LL-HLS part duration (`--part-duration`): `off` (or `0`) for none, else a duration
/// between 200ms and 1s ([`tidegate_packager::MIN_PART_DURATION`] and
/// [`tidegate_packager::MAX_PART_DURATION`]). Written and read as text: `333ms`, `0.5s`, `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PartDuration(Option<Duration>);

impl PartDuration {
    /// No parts: regular HLS only.
    pub const OFF: Self = Self(None);

    /// Parts of `d` (not checked: see [`PartDuration::check`]).
    pub fn of(d: Duration) -> Self {
        Self(Some(d))
    }

    /// The duration, `None` when off.
    pub fn get(self) -> Option<Duration> {
        self.0
    }

    /// The duration in 90 kHz ticks (rounded to the nearest), `None` when off.
    pub fn ticks(self) -> Option<u64> {
        self.0.map(part_ticks)
    }

    /// `Err` (why) when the duration is outside 200ms..=1s.
    pub fn check(self) -> Result<(), String> {
        match self.ticks() {
            Some(t)
                if !(tidegate_packager::MIN_PART_DURATION
                    ..=tidegate_packager::MAX_PART_DURATION)
                    .contains(&t) =>
            {
                Err("must be between 200ms and 1s, or `off`".to_owned())
            }
            _ => Ok(()),
        }
    }
}

/// A part duration in 90 kHz ticks, rounded to the nearest (1/3 s is 30,000 ticks).
pub fn part_ticks(d: Duration) -> u64 {
    let ticks =
        (d.as_nanos() * u128::from(tidegate_media::TIMESCALE) + 500_000_000) / 1_000_000_000;
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

impl Default for PartDuration {
    /// [`tidegate_packager::DEFAULT_PART_DURATION`] (1/3 s).
    fn default() -> Self {
        let nanos = tidegate_packager::DEFAULT_PART_DURATION * 1_000_000_000
            / u64::from(tidegate_media::TIMESCALE);
        Self(Some(Duration::from_nanos(nanos)))
    }
}

impl std::str::FromStr for PartDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "off" | "0" => Ok(Self::OFF),
            other => match humantime_serde::re::humantime::parse_duration(other) {
                Ok(d) if d.is_zero() => Ok(Self::OFF),
                Ok(d) => Ok(Self(Some(d))),
                Err(e) => Err(format!("`{other}`: {e} (a duration such as 333ms, or off)")),
            },
        }
    }
}

impl TryFrom<String> for PartDuration {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<PartDuration> for String {
    /// `off`, or the duration as it reads back to the same 90 kHz ticks: in whole
    /// milliseconds when they do (`500ms`, `1s`), else in milliseconds to the microsecond
    /// (the default 1/3 s, 30,000 ticks, is `333.333ms`: `333ms` would read back as 29,970).
    fn from(p: PartDuration) -> String {
        let Some(d) = p.0 else {
            return "off".to_owned();
        };
        let ms = (d.as_nanos() + 500_000) / 1_000_000;
        let whole = Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX));
        if part_ticks(whole) == part_ticks(d) {
            return humantime_serde::re::humantime::format_duration(whole).to_string();
        }
        let us = (d.as_nanos() + 500) / 1_000;
        format!("{}.{:03}ms", us / 1_000, us % 1_000)
    }
}

/// A stream this worker pulls from a remote SRT listener (`[[pull]]` in the file,
/// `--pull KEY=URL` on the command line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullConfig {
    /// The stream key it feeds (tenant `default` in open mode).
    pub stream: String,
    /// `srt://HOST:PORT?streamid=..&passphrase=..&pbkeylen=..&latency=..` (libsrt URI
    /// options; times in milliseconds).
    pub url: String,
}

impl std::str::FromStr for PullConfig {
    type Err = String;
    /// `KEY=srt://...`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (stream, url) = s
            .split_once('=')
            .ok_or_else(|| "expected KEY=srt://HOST:PORT?...".to_owned())?;
        Ok(PullConfig {
            stream: stream.to_owned(),
            url: url.to_owned(),
        })
    }
}

/// Everything `tidegate serve` can be told. Every field has a default, so an empty file (or no
/// file) is a complete single-node configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeConfig {
    /// Where RTMP publishers connect.
    pub rtmp_listen: SocketAddr,
    /// RTMP over TLS listener (needs `tls-cert` and `tls-key`); off when unset.
    pub rtmps_listen: Option<SocketAddr>,
    /// PEM certificate chain for RTMPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for RTMPS.
    pub tls_key: Option<PathBuf>,
    /// Where SRT publishers connect (UDP).
    pub srt_listen: SocketAddr,
    /// Playback origin, API, metrics and health.
    pub http_listen: SocketAddr,
    /// Embedded state and media when no cluster backends are named.
    pub data_dir: PathBuf,
    /// Shared stream state for a cluster (e.g. `redis://host:6379/0`); embedded when unset.
    pub state: Option<String>,
    /// Where segments go (e.g. `s3://bucket/prefix`); embedded when unset.
    pub storage: Option<String>,
    /// Target segment duration; segments are cut at the first video keyframe past it.
    #[serde(with = "humantime_serde")]
    pub segment_duration: Duration,
    /// How long a stream waits for its publisher to come back before it ends.
    #[serde(with = "humantime_serde")]
    pub reconnect_window: Duration,
    /// The dedicated tenant pool this worker serves (shared when unset).
    pub pool: Option<String>,
    /// The passphrase SRT publishers must encrypt with.
    pub srt_passphrase: Option<String>,
    /// AES key length SRT callers must use (16, 24 or 32 bytes); 0 takes the caller's, as
    /// libsrt does.
    pub srt_pbkeylen: u8,
    /// The SRT receive latency this worker asks for.
    #[serde(with = "humantime_serde")]
    pub srt_latency: Duration,
    /// HLS segment container: `fmp4` (CMAF, default) or `ts` (MPEG-TS).
    pub segment_format: SegmentFormat,
    /// LL-HLS part (and low-latency DASH chunk) target duration, 200ms to 1s, or `off`
    /// (regular HLS only). MPEG-TS streams have no parts.
    pub part_duration: PartDuration,
    /// Segments listed in the sliding-window playlist.
    pub playlist_window: usize,
    /// How long an RTMP client may take to finish its handshake and start publishing.
    #[serde(with = "humantime_serde")]
    pub rtmp_handshake_timeout: Duration,
    /// How long a publishing connection may stay silent before it is closed.
    #[serde(with = "humantime_serde")]
    pub rtmp_idle_timeout: Duration,
    /// Who wins when a second publisher arrives for a live stream: `newest` or `refuse`.
    pub takeover_policy: TakeoverPolicy,
    /// On SIGTERM, how long live publishers may stay before they are closed (at a segment
    /// boundary) so their encoders reconnect to another worker.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Bearer token every `/api/v1` call requires; open when unset.
    pub admin_token: Option<String>,
    /// URLs that receive stream events (`stream.published`, `stream.unpublished`,
    /// `stream.status_changed`, `stream.ended`) as signed JSON POSTs; needs `webhook-secret`.
    pub webhooks: Vec<String>,
    /// Secret the webhook (and on-publish) requests are signed with (HMAC-SHA256, header
    /// `Tidegate-Signature: t=<unix s>,v1=<hex>`); at least 16 characters.
    pub webhook_secret: Option<String>,
    /// How long one webhook attempt may take before it counts as failed (and is retried).
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,
    /// Authorisation callback POSTed before a publisher is accepted: 2xx accepts, anything
    /// else (or no answer within `on-publish-timeout`) refuses. Off when unset.
    pub on_publish: Option<String>,
    /// How long the on-publish callback may take; a publisher is refused after it.
    #[serde(with = "humantime_serde")]
    pub on_publish_timeout: Duration,
    /// This worker's id in the cluster, stable across its restarts (so they can be counted);
    /// by default the host name and the HTTP port.
    pub worker_id: Option<String>,
    /// Stream health thresholds (server defaults; tenants may override them).
    pub health: tidegate_health::HealthConfig,
    /// Per-tenant settings, by tenant name (`[tenants.NAME]`).
    pub tenants: std::collections::BTreeMap<String, TenantConfig>,
    /// Streams pulled from remote SRT listeners (this worker calls them).
    pub pull: Vec<PullConfig>,
    // --- ingest limits (issue 10, RTMP side) ---
    /// Most open ingest connections (RTMP and SRT together); more are refused at once.
    pub max_connections: usize,
    /// Most open ingest connections from one source address.
    pub max_connections_per_ip: usize,
    /// Most live publishers on this worker; a publish past it is refused.
    pub max_publishers: usize,
    /// How long one write to an RTMP peer may take; a peer that reads nothing for this long
    /// is dropped.
    #[serde(with = "humantime_serde")]
    pub rtmp_write_timeout: Duration,
    // --- HTTP limits (issue #10, helper `http`) ---
    /// Most HTTP connections open at once; more are closed as soon as they are accepted.
    pub http_max_connections: usize,
    /// Most HTTP connections open at once from one source address (an IPv6 /64 counts as
    /// one address).
    pub http_max_connections_per_ip: usize,
    /// How long a client may take to send a request's head, counted from the connection's
    /// start or from the first byte of a request after the previous answer.
    #[serde(with = "humantime_serde")]
    pub http_header_timeout: Duration,
    /// How long a connection may move no bytes while no request is pending (a keep-alive
    /// connection between requests, or a client that stopped reading an answer) before it
    /// is closed.
    #[serde(with = "humantime_serde")]
    pub http_idle_timeout: Duration,

    // --- stream records (issue #10, registry) ---
    /// How long an ended stream stays listed (API, dashboard, its last playlist) before its
    /// record and its leftover media are deleted.
    #[serde(with = "humantime_serde")]
    pub ended_retention: Duration,

    // --- key guessing (issue #12, helper `attack`) ---
    /// Wrong stream keys one source address (an IPv6 /64 counts as one) may present within
    /// `bad-key-window` before its publish attempts are refused at once for
    /// `bad-key-backoff`; 0 turns the limit off. Open mode has no wrong keys.
    pub bad_key_limit: u32,
    /// The window the wrong keys of `bad-key-limit` are counted in.
    #[serde(with = "humantime_serde")]
    pub bad_key_window: Duration,
    /// How long a source past `bad-key-limit` is refused.
    #[serde(with = "humantime_serde")]
    pub bad_key_backoff: Duration,
    // --- scoped admin tokens (issue #12 item 5) ---
    /// Bearer token that reads the whole of `/metrics` (for Prometheus) and nothing else.
    /// When it or `admin-token` is set, a scrape without a token sees only the worker-wide
    /// series (none labelled with a tenant or a stream); see `docs/tokens.md`.
    pub metrics_token: Option<String>,
}

/// One tenant declared in the file (`[tenants.NAME]`). Declaring a tenant ends open mode:
/// at start the worker writes it to the shared state (created if absent, its pool, quotas
/// and playback set to these if they differ; its stream keys, made through the admin API,
/// are kept).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TenantConfig {
    /// Its dedicated worker pool; unset for the shared pool.
    pub pool: Option<String>,
    /// Its limits (`[tenants.NAME.quotas]`: `max-streams`, `max-bitrate-bps`).
    pub quotas: tidegate_model::Quotas,
    /// `public` (default) or `signed`.
    pub playback: tidegate_model::Playback,
    /// Health thresholds that differ from the server's `[health]`: only the keys given here
    /// change, the rest follow the server (`[tenants.NAME.health]`, same keys as `[health]`).
    pub health: Option<toml::Table>,

    // --- per-tenant stream settings (issue #12 item 3); unset: the server's flag ---
    /// The passphrase its SRT publishers must encrypt with (10 to 79 characters).
    pub srt_passphrase: Option<String>,
    /// AES key length its SRT publishers must use (16, 24, 32; 0 takes the caller's).
    pub srt_pbkeylen: Option<u8>,
    /// The SRT receive latency asked for in its publishers' handshakes.
    #[serde(with = "humantime_serde")]
    pub srt_latency: Option<Duration>,
    /// URLs that receive its streams' events (besides the server's `webhooks`).
    pub webhooks: Vec<String>,
    /// The secret its webhooks are signed with (the server's `webhook-secret` when unset).
    pub webhook_secret: Option<String>,
    /// How long its streams wait for their publisher before they end.
    #[serde(with = "humantime_serde")]
    pub reconnect_window: Option<Duration>,
    /// Its HLS segment container (`fmp4` or `ts`).
    pub segment_format: Option<SegmentFormat>,
    /// Its target segment duration.
    #[serde(with = "humantime_serde")]
    pub segment_duration: Option<Duration>,
    /// Its LL-HLS part duration (`off` for none).
    pub part_duration: Option<PartDuration>,
}

impl TenantConfig {
    /// What the shared state keeps of it. (Health keys that do not parse are left out here;
    /// [`ServeConfig::validate`] refuses them.)
    pub fn settings(&self) -> tidegate_model::TenantSettings {
        tidegate_model::TenantSettings {
            pool: self.pool.clone(),
            quotas: self.quotas.clone(),
            playback: self.playback,
            srt_passphrase: self.srt_passphrase.clone().map(tidegate_model::Secret::new),
            srt_pbkeylen: self.srt_pbkeylen,
            srt_latency: self.srt_latency,
            webhooks: self.webhooks.clone(),
            webhook_secret: self.webhook_secret.clone().map(tidegate_model::Secret::new),
            reconnect_window: self.reconnect_window,
            segment_format: self.segment_format,
            segment_duration: self.segment_duration,
            part_duration: self
                .part_duration
                .map(|p| p.get().unwrap_or(Duration::ZERO)),
            health: self
                .health
                .clone()
                .and_then(|t| t.try_into::<tidegate_health::HealthOverrides>().ok())
                .map(tidegate_model::TenantHealth::from),
        }
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            rtmp_listen: SocketAddr::from(([0, 0, 0, 0], 1935)),
            rtmps_listen: None,
            tls_cert: None,
            tls_key: None,
            srt_listen: SocketAddr::from(([0, 0, 0, 0], 9000)),
            http_listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            data_dir: PathBuf::from("./tidegate-data"),
            state: None,
            storage: None,
            segment_duration: Duration::from_secs(2),
            reconnect_window: Duration::from_secs(30),
            pool: None,
            srt_passphrase: None,
            srt_pbkeylen: 0,
            srt_latency: Duration::from_millis(120),
            segment_format: SegmentFormat::Fmp4,
            part_duration: PartDuration::default(),
            playlist_window: 10,
            rtmp_handshake_timeout: Duration::from_secs(10),
            rtmp_idle_timeout: Duration::from_secs(30),
            takeover_policy: TakeoverPolicy::Newest,
            drain_timeout: Duration::from_secs(30),
            admin_token: None,
            webhooks: Vec::new(),
            webhook_secret: None,
            webhook_timeout: Duration::from_secs(5),
            on_publish: None,
            on_publish_timeout: Duration::from_secs(3),
            worker_id: None,
            health: tidegate_health::HealthConfig::default(),
            tenants: std::collections::BTreeMap::new(),
            pull: Vec::new(),
            max_connections: 1024,
            max_connections_per_ip: 64,
            max_publishers: 512,
            rtmp_write_timeout: Duration::from_secs(10),
            http_max_connections: 4096,
            http_max_connections_per_ip: 256,
            http_header_timeout: Duration::from_secs(10),
            http_idle_timeout: Duration::from_secs(60),
            ended_retention: Duration::from_secs(3600),
            bad_key_limit: 10,
            bad_key_window: Duration::from_secs(60),
            bad_key_backoff: Duration::from_secs(60),
            metrics_token: None,
        }
    }
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML file is not valid.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid setting `{field}`: {reason}")]
    Invalid {
        /// The setting (kebab-case, as in the file and the flag).
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl ServeConfig {
    /// Reads a TOML file (every field optional).
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Parses TOML text (every field optional).
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks ranges and combinations. Parsing and validation are separate steps so that
    /// `tidegate check-config` can report every layer's result.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.segment_duration < Duration::from_millis(500)
            || self.segment_duration > Duration::from_secs(30)
        {
            return invalid("segment-duration", "must be between 500ms and 30s");
        }
        if let Err(reason) = self.part_duration.check() {
            return invalid("part-duration", &reason);
        }
        if self.metrics_token.as_deref().is_some_and(str::is_empty) {
            return invalid("metrics-token", "must not be empty");
        }
        if self.reconnect_window > Duration::from_secs(24 * 3600) {
            return invalid("reconnect-window", "must be at most 24h");
        }
        if self.ended_retention < Duration::from_secs(1)
            || self.ended_retention > Duration::from_secs(30 * 24 * 3600)
        {
            return invalid("ended-retention", "must be between 1s and 30 days");
        }
        if !(3..=1000).contains(&self.playlist_window) {
            return invalid("playlist-window", "must be between 3 and 1000 segments");
        }
        if self.rtmp_handshake_timeout < Duration::from_millis(100) {
            return invalid("rtmp-handshake-timeout", "must be at least 100ms");
        }
        if let Err(e) = self.health.validate() {
            return Err(ConfigError::Invalid {
                field: "health",
                reason: e.to_string(),
            });
        }
        self.tenant_health()?;
        if self.drain_timeout > Duration::from_secs(3600) {
            return invalid("drain-timeout", "must be at most 1h");
        }
        if self.rtmp_idle_timeout < Duration::from_secs(1) {
            return invalid("rtmp-idle-timeout", "must be at least 1s");
        }
        if self.rtmps_listen.is_some() {
            match (&self.tls_cert, &self.tls_key) {
                (Some(_), Some(_)) => {}
                (None, None) => {
                    return invalid(
                        "rtmps-listen",
                        "needs tls-cert and tls-key (PEM files of the certificate chain and its private key)",
                    )
                }
                (None, Some(_)) => {
                    return invalid("rtmps-listen", "needs tls-cert (the PEM certificate chain) as well as tls-key")
                }
                (Some(_), None) => {
                    return invalid("rtmps-listen", "needs tls-key (the PEM private key) as well as tls-cert")
                }
            }
        }
        // The files are read and checked (parse, key matches the certificate) whenever they
        // are given, so check-config finds a broken pair before a start does.
        if let Some(files) = self.tls_files() {
            if let Err(e) = files.load() {
                return Err(ConfigError::Invalid {
                    field: if matches!(e, tls::TlsError::Key { .. }) {
                        "tls-key"
                    } else {
                        "tls-cert"
                    },
                    reason: e.to_string(),
                });
            }
        }
        // `state` and `storage` parse as the stores' section does.
        self.store()?;
        if let Some(id) = &self.worker_id {
            if !tidegate_model::valid_name(id) {
                return invalid(
                    "worker-id",
                    "must be 1 to 128 of [A-Za-z0-9_.-], not starting with a dot",
                );
            }
        }
        if !matches!(self.srt_pbkeylen, 0 | 16 | 24 | 32) {
            return invalid("srt-pbkeylen", "must be 0 (the caller's), 16, 24 or 32");
        }
        if let Some(pass) = &self.srt_passphrase {
            if !(10..=79).contains(&pass.len()) {
                return invalid("srt-passphrase", "must be 10 to 79 characters (SRT rule)");
            }
        }
        for url in &self.webhooks {
            if let Err(reason) = url.parse::<WebhookUrl>() {
                return invalid("webhooks", &reason);
            }
        }
        if let Some(secret) = &self.webhook_secret {
            if secret.len() < 16 {
                return invalid("webhook-secret", "must be at least 16 characters");
            }
        }
        if !self.webhooks.is_empty() && self.webhook_secret.is_none() {
            return invalid(
                "webhooks",
                "needs webhook-secret (receivers must be able to verify what they get)",
            );
        }
        if let Some(url) = &self.on_publish {
            if let Err(reason) = url.parse::<WebhookUrl>() {
                return invalid("on-publish", &reason);
            }
        }
        for (field, d) in [
            ("webhook-timeout", self.webhook_timeout),
            ("on-publish-timeout", self.on_publish_timeout),
        ] {
            if d < Duration::from_millis(100) || d > Duration::from_secs(60) {
                return invalid(field, "must be between 100ms and 60s");
            }
        }
        for (field, n) in [
            ("max-connections", self.max_connections),
            ("max-connections-per-ip", self.max_connections_per_ip),
            ("max-publishers", self.max_publishers),
        ] {
            if n == 0 {
                return invalid(field, "must be at least 1");
            }
        }
        if self.rtmp_write_timeout < Duration::from_millis(100)
            || self.rtmp_write_timeout > Duration::from_secs(600)
        {
            return invalid("rtmp-write-timeout", "must be between 100ms and 10m");
        }
        let mut keys = std::collections::HashSet::new();
        for p in &self.pull {
            if StreamId::new("default", &p.stream).is_none() {
                return Err(ConfigError::Invalid {
                    field: "pull",
                    reason: format!(
                        "stream `{}` is not a valid stream key (letters, digits, `_`, `-`, `.`)",
                        p.stream
                    ),
                });
            }
            if !keys.insert(p.stream.as_str()) {
                return Err(ConfigError::Invalid {
                    field: "pull",
                    reason: format!("stream `{}` is pulled twice", p.stream),
                });
            }
            if let Err(reason) = p.url.parse::<SrtSource>() {
                return Err(ConfigError::Invalid {
                    field: "pull",
                    reason: format!("stream `{}`: url {reason}", p.stream),
                });
            }
        }
        // --- Dedicated pools (issue #12, helper `pools`) ---
        if self
            .pool
            .as_deref()
            .is_some_and(|p| !tidegate_model::valid_tenant_name(p))
        {
            return invalid(
                "pool",
                "must be 1 to 63 of a-z 0-9 _ -, starting with a letter or a digit (as tenant pools)",
            );
        }
        // --- HTTP limits (issue #10, helper `http`) ---
        if self.http_max_connections == 0 {
            return invalid("http-max-connections", "must be at least 1");
        }
        if self.http_max_connections_per_ip == 0 {
            return invalid("http-max-connections-per-ip", "must be at least 1");
        }
        for (field, d) in [
            ("http-header-timeout", self.http_header_timeout),
            ("http-idle-timeout", self.http_idle_timeout),
        ] {
            if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
                return invalid(field, "must be between 100ms and 1h");
            }
        }
        // --- key guessing (issue #12, helper `attack`) ---
        for (field, d) in [
            ("bad-key-window", self.bad_key_window),
            ("bad-key-backoff", self.bad_key_backoff),
        ] {
            if d < Duration::from_secs(1) || d > Duration::from_secs(24 * 3600) {
                return invalid(field, "must be between 1s and 24h");
            }
        }
        Ok(())
    }

    /// A copy safe to print: passphrases, tokens and secrets replaced.
    pub fn redacted(&self) -> Self {
        let mut c = self.clone();
        for secret in [
            &mut c.srt_passphrase,
            &mut c.admin_token,
            &mut c.metrics_token,
            &mut c.webhook_secret,
        ] {
            if secret.is_some() {
                *secret = Some("<redacted>".into());
            }
        }
        for p in &mut c.pull {
            p.url = tidegate_model::redact_url(&p.url);
        }
        for t in c.tenants.values_mut() {
            for secret in [&mut t.srt_passphrase, &mut t.webhook_secret] {
                if secret.is_some() {
                    *secret = Some("<redacted>".into());
                }
            }
        }
        c
    }

    /// The health thresholds of every tenant that overrides some: the server's `[health]`
    /// with the tenant's keys laid over it, validated.
    pub fn tenant_health(
        &self,
    ) -> Result<std::collections::HashMap<String, tidegate_health::HealthConfig>, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            field: "tenants",
            reason,
        };
        let mut out = std::collections::HashMap::new();
        for (tenant, t) in &self.tenants {
            if !tidegate_model::valid_tenant_name(tenant) {
                return Err(invalid(format!(
                    "`{tenant}` is not a valid tenant name (1 to 63 of a-z 0-9 _ -, \
                     starting with a letter or a digit)"
                )));
            }
            if t.pool
                .as_deref()
                .is_some_and(|p| !tidegate_model::valid_tenant_name(p))
            {
                return Err(invalid(format!(
                    "tenants.{tenant}.pool: not a valid pool name (as a tenant name)"
                )));
            }
            tidegate_model::check_stream_settings(&t.settings())
                .map_err(|e| invalid(format!("tenants.{tenant}: {e}")))?;
            if !t.webhooks.is_empty() && t.webhook_secret.is_none() && self.webhook_secret.is_none()
            {
                return Err(invalid(format!(
                    "tenants.{tenant}.webhooks: needs a webhook-secret, the tenant's or the server's"
                )));
            }
            if let Some(overrides) = &t.health {
                toml::Value::Table(overrides.clone())
                    .try_into::<tidegate_health::HealthOverrides>()
                    .map_err(|e| invalid(format!("tenants.{tenant}.health: {e}")))?;
            }
            t.quotas
                .check()
                .map_err(|e| invalid(format!("tenants.{tenant}.quotas: {e}")))?;
            let Some(overrides) = &t.health else { continue };
            let mut table = toml::Table::try_from(&self.health)
                .map_err(|e| invalid(format!("{tenant}: {e}")))?;
            for (k, v) in overrides {
                table.insert(k.clone(), v.clone());
            }
            let health: tidegate_health::HealthConfig = table
                .try_into()
                .map_err(|e| invalid(format!("tenants.{tenant}.health: {e}")))?;
            health
                .validate()
                .map_err(|e| invalid(format!("tenants.{tenant}.health: {e}")))?;
            out.insert(tenant.clone(), health);
        }
        Ok(out)
    }

    /// Target segment duration in 90 kHz ticks.
    pub fn segment_ticks(&self) -> u64 {
        let ticks =
            self.segment_duration.as_micros() * u128::from(tidegate_media::TIMESCALE) / 1_000_000;
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }

    /// Where segments live: `file://` storage or `<data-dir>/media`.
    pub fn media_root(&self) -> PathBuf {
        match &self.storage {
            Some(s) if s.starts_with("file://") => PathBuf::from(&s["file://".len()..]),
            _ => self.data_dir.join("media"),
        }
    }
}

/// The ingest listeners' section: RTMP and SRT timeouts, SRT encryption, and the caps on
/// connections and publishers.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// How long an RTMP client may take to finish its handshake and start publishing.
    pub rtmp_handshake_timeout: Duration,
    /// How long a publishing RTMP connection may stay silent before it is closed.
    pub rtmp_idle_timeout: Duration,
    /// How long one write to an RTMP peer may take.
    pub rtmp_write_timeout: Duration,
    /// The passphrase SRT publishers must encrypt with.
    pub srt_passphrase: Option<String>,
    /// AES key length SRT callers must use (0: the caller's).
    pub srt_pbkeylen: u8,
    /// The SRT receive latency this worker asks for.
    pub srt_latency: Duration,
    /// Most open ingest connections (RTMP and SRT together).
    pub max_connections: usize,
    /// Most open ingest connections from one source address.
    pub max_connections_per_ip: usize,
    /// Most live publishers on this worker.
    pub max_publishers: usize,
    // --- key guessing (issue #12, helper `attack`) ---
    /// Wrong stream keys one source may present within `bad_key_window` (0: no limit).
    pub bad_key_limit: u32,
    /// The window wrong keys are counted in.
    pub bad_key_window: Duration,
    /// How long a source past the limit is refused.
    pub bad_key_backoff: Duration,
}

/// A stream this worker pulls, typed (`[[pull]]`).
#[derive(Debug, Clone)]
pub struct Pull {
    /// The stream it feeds (tenant `default`).
    pub stream: StreamId,
    /// Where it pulls from.
    pub source: SrtSource,
}

/// The HTTP listener's section: its caps and timeouts.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Most HTTP connections open at once.
    pub max_connections: usize,
    /// Most HTTP connections open at once from one source address.
    pub max_connections_per_ip: usize,
    /// How long a client may take to send a request's head.
    pub header_timeout: Duration,
    /// How long a connection may move no bytes while no request is pending.
    pub idle_timeout: Duration,
}

/// The origin's section (HLS, API, dashboard).
#[derive(Debug, Clone)]
pub struct OriginConfig {
    /// Bearer token every `/api/v1` call requires; open when unset.
    pub admin_token: Option<String>,
    /// Bearer token that reads the whole of `/metrics` (issue #12 item 5).
    pub metrics_token: Option<String>,
    /// Where RTMP publishers connect (the dashboard shows it).
    pub rtmp_listen: SocketAddr,
    /// Where SRT publishers connect (the dashboard shows it).
    pub srt_listen: SocketAddr,
}

/// The stores' section: where state and media live.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Embedded state and media when no cluster backends are named.
    pub data_dir: PathBuf,
    /// Shared stream state; embedded under `data_dir` when unset.
    pub state: Option<StateUrl>,
    /// Where segments go; embedded under `data_dir` when unset.
    pub storage: Option<StorageUrl>,
    /// Where segments live when they are files: `file://` storage or `<data-dir>/media`.
    pub media_root: PathBuf,
}

/// The events' section: webhooks and the on-publish callback.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// URLs that receive stream events.
    pub webhooks: Vec<WebhookUrl>,
    /// Secret the webhook and on-publish requests are signed with.
    pub webhook_secret: Option<String>,
    /// How long one webhook attempt may take.
    pub webhook_timeout: Duration,
    /// The authorisation callback POSTed before a publisher is accepted.
    pub on_publish: Option<WebhookUrl>,
    /// How long the on-publish callback may take.
    pub on_publish_timeout: Duration,
}

/// The cluster member's section: who this worker is and where it is reached.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This worker's id (by default the host name and the HTTP port).
    pub worker_id: Option<String>,
    /// The dedicated tenant pool this worker serves (shared when unset).
    pub pool: Option<String>,
    /// The HTTP listener (bound: a port 0 reads as the kernel's choice).
    pub http_listen: SocketAddr,
    /// The RTMP listener.
    pub rtmp_listen: SocketAddr,
    /// The SRT listener.
    pub srt_listen: SocketAddr,
}

impl ServeConfig {
    /// The RTMPS certificate files, when both are set.
    pub fn tls_files(&self) -> Option<tls::TlsFiles> {
        Some(tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
        })
    }

    /// The RTMPS listener and its certificate files, when RTMPS is on (`rtmps-listen`; a
    /// validated configuration has both files then).
    pub fn rtmps(&self) -> Option<(SocketAddr, tls::TlsFiles)> {
        Some((self.rtmps_listen?, self.tls_files()?))
    }

    /// The ingest listeners' section.
    pub fn ingest(&self) -> IngestConfig {
        IngestConfig {
            rtmp_handshake_timeout: self.rtmp_handshake_timeout,
            rtmp_idle_timeout: self.rtmp_idle_timeout,
            rtmp_write_timeout: self.rtmp_write_timeout,
            srt_passphrase: self.srt_passphrase.clone(),
            srt_pbkeylen: self.srt_pbkeylen,
            srt_latency: self.srt_latency,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_publishers: self.max_publishers,
            bad_key_limit: self.bad_key_limit,
            bad_key_window: self.bad_key_window,
            bad_key_backoff: self.bad_key_backoff,
        }
    }

    /// The pulled streams, typed; an entry [`validate`](Self::validate) refuses is an error
    /// here too.
    pub fn pulls(&self) -> Result<Vec<Pull>, ConfigError> {
        self.pull
            .iter()
            .map(|p| {
                let invalid = |reason: String| ConfigError::Invalid {
                    field: "pull",
                    reason,
                };
                let stream = StreamId::new("default", &p.stream).ok_or_else(|| {
                    invalid(format!("stream `{}` is not a valid stream key", p.stream))
                })?;
                let source = p
                    .url
                    .parse::<SrtSource>()
                    .map_err(|reason| invalid(format!("stream `{}`: url {reason}", p.stream)))?;
                Ok(Pull { stream, source })
            })
            .collect()
    }

    /// The HTTP listener's section.
    pub fn http(&self) -> HttpConfig {
        HttpConfig {
            max_connections: self.http_max_connections,
            max_connections_per_ip: self.http_max_connections_per_ip,
            header_timeout: self.http_header_timeout,
            idle_timeout: self.http_idle_timeout,
        }
    }

    /// The origin's section.
    pub fn origin(&self) -> OriginConfig {
        OriginConfig {
            admin_token: self.admin_token.clone(),
            metrics_token: self.metrics_token.clone(),
            rtmp_listen: self.rtmp_listen,
            srt_listen: self.srt_listen,
        }
    }

    /// The stores' section, its URLs parsed.
    pub fn store(&self) -> Result<StoreConfig, ConfigError> {
        let invalid = |field, reason| ConfigError::Invalid { field, reason };
        Ok(StoreConfig {
            data_dir: self.data_dir.clone(),
            state: self
                .state
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|r| invalid("state", r))?,
            storage: self
                .storage
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|r| invalid("storage", r))?,
            media_root: self.media_root(),
        })
    }

    /// The events' section, its URLs parsed.
    pub fn events(&self) -> Result<EventsConfig, ConfigError> {
        let invalid = |field, reason| ConfigError::Invalid { field, reason };
        Ok(EventsConfig {
            webhooks: self
                .webhooks
                .iter()
                .map(|u| u.parse())
                .collect::<Result<_, _>>()
                .map_err(|r| invalid("webhooks", r))?,
            webhook_secret: self.webhook_secret.clone(),
            webhook_timeout: self.webhook_timeout,
            on_publish: self
                .on_publish
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|r| invalid("on-publish", r))?,
            on_publish_timeout: self.on_publish_timeout,
        })
    }

    /// The cluster member's section.
    pub fn cluster(&self) -> ClusterConfig {
        ClusterConfig {
            worker_id: self.worker_id.clone(),
            pool: self.pool.clone(),
            http_listen: self.http_listen,
            rtmp_listen: self.rtmp_listen,
            srt_listen: self.srt_listen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        let c = ServeConfig::from_toml("").unwrap();
        assert_eq!(c.segment_duration, Duration::from_secs(2));
        assert_eq!(c.rtmp_listen.port(), 1935);
        c.validate().unwrap();
    }

    #[test]
    fn file_values_parse_and_unknown_keys_fail() {
        let c = ServeConfig::from_toml(
            "segment-duration = \"4s\"\nreconnect-window = \"1m\"\nsegment-format = \"ts\"\n",
        )
        .unwrap();
        assert_eq!(c.segment_duration, Duration::from_secs(4));
        assert_eq!(c.reconnect_window, Duration::from_secs(60));
        assert_eq!(c.segment_format, SegmentFormat::Ts);
        assert_eq!(c.segment_ticks(), 360_000);
        assert!(ServeConfig::from_toml("no-such-key = 1").is_err());
    }

    #[test]
    fn tenant_health_overrides_only_what_it_names() {
        let c = ServeConfig::from_toml(
            "[health]\nlow-bitrate-for = \"7s\"\nmax-drop-rate = 0.05\n\
             [tenants.premium.health]\nmin-bitrate-bps = 2000000\nlow-bitrate-for = \"2s\"\n\
             [tenants.basic]\n",
        )
        .unwrap();
        c.validate().unwrap();
        let t = c.tenant_health().unwrap();
        let premium = &t["premium"];
        assert_eq!(premium.min_bitrate_bps, Some(2_000_000));
        assert_eq!(premium.low_bitrate_for, Duration::from_secs(2));
        // Not named by the tenant: the server's value.
        assert!((premium.max_drop_rate - 0.05).abs() < 1e-9);
        assert!(!t.contains_key("basic"), "no overrides, server defaults");

        let bad = ServeConfig::from_toml("[tenants.x.health]\nno-such-threshold = 1\n").unwrap();
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::Invalid {
                field: "tenants",
                ..
            })
        ));
        let out_of_range =
            ServeConfig::from_toml("[tenants.x.health]\nmax-drop-rate = 7.0\n").unwrap();
        assert!(out_of_range.validate().is_err());
    }

    #[test]
    fn a_workers_pool_is_named_as_tenant_pools_are() {
        for good in ["premium", "gold-2"] {
            let c = ServeConfig {
                pool: Some(good.into()),
                ..ServeConfig::default()
            };
            c.validate().unwrap();
        }
        for bad in ["", "Premium", "a b", "-x"] {
            let c = ServeConfig {
                pool: Some(bad.into()),
                ..ServeConfig::default()
            };
            match c.validate() {
                Err(ConfigError::Invalid { field: "pool", .. }) => {}
                other => panic!("pool {bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn tenants_are_declared_with_pool_quotas_and_playback() {
        let c = ServeConfig::from_toml(
            "[tenants.acme]\npool = \"premium\"\nplayback = \"signed\"\n\
             [tenants.acme.quotas]\nmax-streams = 5\nmax-bitrate-bps = 8000000\n\
             [tenants.basic]\n",
        )
        .unwrap();
        c.validate().unwrap();
        let acme = c.tenants["acme"].settings();
        assert_eq!(acme.pool.as_deref(), Some("premium"));
        assert_eq!(acme.quotas.max_streams, Some(5));
        assert_eq!(acme.quotas.max_bitrate_bps, Some(8_000_000));
        assert_eq!(acme.playback, tidegate_model::Playback::Signed);
        assert_eq!(
            c.tenants["basic"].settings(),
            tidegate_model::TenantSettings::default()
        );
        for bad in ["[tenants.Acme]\n", "[tenants.acme]\npool = \"a b\"\n"] {
            let c = ServeConfig::from_toml(bad).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
        assert!(ServeConfig::from_toml("[tenants.acme.quotas]\nmax-sreams = 1\n").is_err());
        // The enforced quotas, in the file's kebab-case, checked by check-config.
        let c = ServeConfig::from_toml(
            "[tenants.acme.quotas]\nmax-total-bitrate-bps = 20000000\nmax-publish-rate = 5\n\
             over-bitrate-for-s = 15\ndisconnect-over-bitrate = true\n",
        )
        .unwrap();
        let q = c.tenants["acme"].settings().quotas;
        assert_eq!(q.max_total_bitrate_bps, Some(20_000_000));
        assert_eq!(q.max_publish_rate, Some(5));
        assert_eq!(q.over_bitrate_for(), std::time::Duration::from_secs(15));
        assert!(q.disconnect_over_bitrate);
        assert!(c.tenant_health().is_ok());
        let c = ServeConfig::from_toml("[tenants.acme.quotas]\nover-bitrate-for-s = 0\n").unwrap();
        assert!(
            c.tenant_health().is_err(),
            "over-bitrate-for-s 0 is refused"
        );
        assert!(ServeConfig::from_toml("[tenants.acme]\nplayback = \"secret\"\n").is_err());
    }

    #[test]
    fn webhook_settings() {
        let c = ServeConfig::from_toml(
            "webhooks = [\"http://127.0.0.1:9/a\", \"https://hooks.example.invalid/b\"]\n\
             webhook-secret = \"0123456789abcdef\"\n\
             on-publish = \"http://127.0.0.1:9/auth\"\n\
             on-publish-timeout = \"1s\"\n",
        )
        .unwrap();
        assert_eq!(c.webhooks.len(), 2);
        assert_eq!(c.on_publish_timeout, Duration::from_secs(1));
        c.validate().unwrap();
        let invalid_field = |c: ServeConfig| match c.validate() {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected invalid, got {other:?}"),
        };
        let no_secret = ServeConfig {
            webhook_secret: None,
            ..c.clone()
        };
        assert_eq!(invalid_field(no_secret), "webhooks");
        let short = ServeConfig {
            webhook_secret: Some("short".into()),
            ..c.clone()
        };
        assert_eq!(invalid_field(short), "webhook-secret");
        let bad_url = ServeConfig {
            on_publish: Some("ftp://x/".into()),
            ..c.clone()
        };
        assert_eq!(invalid_field(bad_url), "on-publish");
        let bad_timeout = ServeConfig {
            webhook_timeout: Duration::ZERO,
            ..c
        };
        assert_eq!(invalid_field(bad_timeout), "webhook-timeout");
    }

    #[test]
    fn pulls_parse_validate_and_redact() {
        let c = ServeConfig::from_toml(
            "[[pull]]\nstream = \"cam\"\nurl = \"srt://127.0.0.1:7001?passphrase=correcthorse\"\n\n[[pull]]\nstream = \"cam2\"\nurl = \"srt://gw:7002\"\n",
        )
        .unwrap();
        assert_eq!(c.pull.len(), 2);
        c.validate().unwrap();
        let shown = toml::to_string_pretty(&c.redacted()).unwrap();
        assert!(!shown.contains("correcthorse"), "{shown}");
        assert!(shown.contains("passphrase=<redacted>"), "{shown}");
        let err = |pull: Vec<PullConfig>| match (ServeConfig {
            pull,
            ..Default::default()
        })
        .validate()
        {
            Err(ConfigError::Invalid {
                field: "pull",
                reason,
            }) => reason,
            other => panic!("{other:?}"),
        };
        let p = |s: &str| s.parse::<PullConfig>().unwrap();
        assert!(err(vec![p("cam=srt://h")]).contains("port"));
        assert!(err(vec![p("c/m=srt://h:1")]).contains("stream key"));
        assert!(err(vec![p("cam=srt://h:1"), p("cam=srt://h:2")]).contains("twice"));
        assert!("nokey".parse::<PullConfig>().is_err());
        assert!(ServeConfig::from_toml(
            "[[pull]]\nstream = \"a\"\nurl = \"srt://h:1\"\nextra = 1\n"
        )
        .is_err());
    }

    #[test]
    fn http_limits_parse_and_validate() {
        let c = ServeConfig::from_toml(
            "http-max-connections = 64\nhttp-max-connections-per-ip = 8\n\
             http-header-timeout = \"2s\"\nhttp-idle-timeout = \"5s\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.http_max_connections, 64);
        assert_eq!(c.http_max_connections_per_ip, 8);
        assert_eq!(c.http_header_timeout, Duration::from_secs(2));
        assert_eq!(c.http_idle_timeout, Duration::from_secs(5));
        let field = |c: ServeConfig| match c.validate() {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected invalid, got {other:?}"),
        };
        let zero = ServeConfig {
            http_max_connections_per_ip: 0,
            ..c.clone()
        };
        assert_eq!(field(zero), "http-max-connections-per-ip");
        let instant = ServeConfig {
            http_idle_timeout: Duration::ZERO,
            ..c
        };
        assert_eq!(field(instant), "http-idle-timeout");
    }

    #[test]
    fn each_subsystem_gets_its_section_with_its_urls_parsed() {
        let c = ServeConfig::from_toml(
            "state = \"redis://127.0.0.1:6379/0\"\nstorage = \"s3://bucket/live\"\n\
             webhooks = [\"http://127.0.0.1:9/a\"]\nwebhook-secret = \"0123456789abcdef\"\n\
             on-publish = \"http://127.0.0.1:9/auth\"\nmax-publishers = 7\n\
             http-max-connections = 64\n\
             [[pull]]\nstream = \"cam\"\nurl = \"srt://127.0.0.1:7001?latency=200\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        let store = c.store().unwrap();
        assert_eq!(
            store.state,
            Some(StateUrl::Redis("redis://127.0.0.1:6379/0".into()))
        );
        assert_eq!(
            store.storage,
            Some(StorageUrl::S3 {
                bucket: "bucket".into(),
                prefix: "live".into()
            })
        );
        let events = c.events().unwrap();
        assert_eq!(events.webhooks[0].as_str(), "http://127.0.0.1:9/a");
        assert_eq!(
            events.on_publish.as_ref().map(WebhookUrl::as_str),
            Some("http://127.0.0.1:9/auth")
        );
        assert_eq!(c.ingest().max_publishers, 7);
        assert_eq!(c.http().max_connections, 64);
        let pulls = c.pulls().unwrap();
        assert_eq!(pulls[0].stream.to_string(), "default/cam");
        assert_eq!(pulls[0].source.remote(), "127.0.0.1:7001");
        // What validate refuses, the section refuses with the same field.
        let bad = ServeConfig {
            storage: Some("gs://bucket".into()),
            ..Default::default()
        };
        assert!(matches!(
            bad.store(),
            Err(ConfigError::Invalid {
                field: "storage",
                ..
            })
        ));
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::Invalid {
                field: "storage",
                ..
            })
        ));
    }

    #[test]
    fn tenants_carry_srt_webhook_reconnect_and_segment_settings() {
        let c = ServeConfig::from_toml(
            "webhook-secret = \"0123456789abcdef\"\n\
             [tenants.acme]\nsrt-passphrase = \"acme-passphrase\"\nsrt-pbkeylen = 32\n\
             srt-latency = \"300ms\"\nwebhooks = [\"http://127.0.0.1:9/acme\"]\n\
             webhook-secret = \"acme-webhook-secret\"\nreconnect-window = \"5s\"\n\
             segment-format = \"ts\"\nsegment-duration = \"4s\"\n\
             [tenants.acme.health]\nmin-bitrate-bps = 1000000\n\
             [tenants.basic]\n",
        )
        .unwrap();
        c.validate().unwrap();
        let acme = c.tenants["acme"].settings();
        assert_eq!(
            acme.srt_passphrase.as_ref().map(|p| p.expose()),
            Some("acme-passphrase")
        );
        assert_eq!(acme.srt_pbkeylen, Some(32));
        assert_eq!(acme.srt_latency, Some(Duration::from_millis(300)));
        assert_eq!(acme.webhooks, ["http://127.0.0.1:9/acme"]);
        assert_eq!(acme.reconnect_window, Some(Duration::from_secs(5)));
        assert_eq!(acme.segment_format, Some(SegmentFormat::Ts));
        assert_eq!(acme.segment_duration, Some(Duration::from_secs(4)));
        assert_eq!(acme.health.and_then(|h| h.min_bitrate_bps), Some(1_000_000));
        assert_eq!(
            c.tenants["basic"].settings(),
            tidegate_model::TenantSettings::default()
        );
        let shown = toml::to_string_pretty(&c.redacted()).unwrap();
        assert!(
            !shown.contains("acme-passphrase") && !shown.contains("acme-webhook-secret"),
            "{shown}"
        );
        for bad in [
            "[tenants.x]\nsrt-passphrase = \"short\"\n",
            "[tenants.x]\nsrt-pbkeylen = 20\n",
            "[tenants.x]\nsegment-duration = \"100ms\"\n",
            "[tenants.x]\nwebhooks = [\"http://127.0.0.1:9/x\"]\n",
        ] {
            let c = ServeConfig::from_toml(bad).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
        assert!(ServeConfig::from_toml("[tenants.x]\nsegment-format = \"mkv\"\n").is_err());
    }

    #[test]
    fn the_part_duration_is_a_third_of_a_second_off_or_200ms_to_1s() {
        let c = ServeConfig::default();
        assert_eq!(
            c.part_duration.ticks(),
            Some(tidegate_packager::DEFAULT_PART_DURATION)
        );
        c.validate().unwrap();
        for (text, ticks) in [
            ("off", None),
            ("0", None),
            ("0s", None),
            ("200ms", Some(18_000)),
            ("500ms", Some(45_000)),
            ("1s", Some(90_000)),
        ] {
            let c = ServeConfig::from_toml(&format!("part-duration = \"{text}\"\n")).unwrap();
            c.validate().unwrap();
            assert_eq!(c.part_duration.ticks(), ticks, "{text}");
        }
        for bad in ["199ms", "1001ms", "2s"] {
            let c = ServeConfig::from_toml(&format!("part-duration = \"{bad}\"\n")).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("part-duration"), "{bad}: {e}");
        }
        assert!(ServeConfig::from_toml("part-duration = \"soon\"\n").is_err());
        // Written back as it reads.
        let shown =
            toml::to_string(&ServeConfig::from_toml("part-duration = \"off\"\n").unwrap()).unwrap();
        assert!(shown.contains("part-duration = \"off\""), "{shown}");
        // Readably, and back to the same ticks: the default 1/3 s is not `333ms 333us 333ns`.
        for (part, text) in [
            (PartDuration::default(), "333.333ms"),
            (PartDuration::of(Duration::from_millis(500)), "500ms"),
            (PartDuration::of(Duration::from_secs(1)), "1s"),
            (
                PartDuration::of(Duration::from_micros(250_400)),
                "250.400ms",
            ),
            (PartDuration::of(Duration::from_nanos(200_000_001)), "200ms"),
        ] {
            assert_eq!(String::from(part), text);
            let back: PartDuration = text.parse().unwrap();
            assert_eq!(back.ticks(), part.ticks(), "{text}");
        }
        let t = ServeConfig::from_toml(
            "[tenants.a]\npart-duration = \"off\"\n[tenants.b]\npart-duration = \"500ms\"\n",
        )
        .unwrap();
        t.validate().unwrap();
        assert_eq!(
            t.tenants["a"].settings().part_duration,
            Some(Duration::ZERO)
        );
        assert_eq!(
            t.tenants["b"].settings().part_duration,
            Some(Duration::from_millis(500))
        );
        let t = ServeConfig::from_toml("[tenants.a]\npart-duration = \"100ms\"\n").unwrap();
        assert!(t.validate().is_err());
    }

    #[test]
    fn validation_rejects_out_of_range() {
        let c = ServeConfig {
            segment_duration: Duration::from_millis(10),
            ..Default::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "segment-duration",
                ..
            })
        ));
    }

    // --- key guessing (issue #12, helper `attack`) ---
    #[test]
    fn the_bad_key_limit_parses_reaches_ingest_and_validates() {
        let defaults = ServeConfig::default().ingest();
        assert_eq!(defaults.bad_key_limit, 10);
        assert_eq!(defaults.bad_key_window, Duration::from_secs(60));
        assert_eq!(defaults.bad_key_backoff, Duration::from_secs(60));
        let c = ServeConfig::from_toml(
            "bad-key-limit = 0\nbad-key-window = \"10s\"\nbad-key-backoff = \"5m\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        let ingest = c.ingest();
        assert_eq!(ingest.bad_key_limit, 0, "0 turns it off");
        assert_eq!(ingest.bad_key_window, Duration::from_secs(10));
        assert_eq!(ingest.bad_key_backoff, Duration::from_secs(300));
        let short = ServeConfig {
            bad_key_backoff: Duration::from_millis(10),
            ..c
        };
        assert!(matches!(
            short.validate(),
            Err(ConfigError::Invalid {
                field: "bad-key-backoff",
                ..
            })
        ));
    }
}
