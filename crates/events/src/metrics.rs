//! Every metric the worker exports, named in one place. Labels are bounded: every label but
//! `tenant` and `stream` takes its values from an enum below (a typo does not compile);
//! stream keys and client addresses never become labels.
//!
//! Registration records each metric's name, help, type and labels ([`MetricDoc`], from the
//! Rust types, so it cannot differ from what is exported); the README's metric table is
//! rendered from it ([`markdown_table`]) and a test keeps the two, and every `tidegate_*`
//! name in the docs and the Prometheus rules, in agreement with the code.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};
use tidegate_limits::Refusal;

/// The registry's prefix: every metric is exported as `tidegate_<name>`.
pub const PREFIX: &str = "tidegate";

/// The values of a label, for the documentation.
pub trait LabelValues {
    /// Every value the label can take, or `None` when the set is open (tenant, stream name).
    fn values() -> Option<Vec<&'static str>>;
}

impl LabelValues for String {
    fn values() -> Option<Vec<&'static str>> {
        None
    }
}

/// Defines a closed set of label values: the enum, `ALL`, `as_str()`, `Display`,
/// [`EncodeLabelValue`] and [`LabelValues`], each value written once.
macro_rules! label_values {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in label order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $value,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(
                &self,
                encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
            ) -> Result<(), std::fmt::Error> {
                EncodeLabelValue::encode(&self.as_str(), encoder)
            }
        }

        impl LabelValues for $name {
            fn values() -> Option<Vec<&'static str>> {
                Some(vec![$($value),+])
            }
        }
    };
}

/// A label set's labels, for the documentation.
pub trait LabelSetDoc {
    /// The labels in the order they are exported.
    fn labels() -> Vec<LabelDoc>;
}

/// Defines a label set: the struct, [`EncodeLabelSet`] (as `#[derive(EncodeLabelSet)]`
/// writes it, which does not take type parameters) and [`LabelSetDoc`].
macro_rules! label_set {
    (
        $(#[$meta:meta])*
        pub struct $name:ident $(<$param:ident>)? {
            $( $(#[$fmeta:meta])* pub $field:ident: $ty:ty, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Hash, PartialEq, Eq)]
        pub struct $name $(<$param>)? {
            $( $(#[$fmeta])* pub $field: $ty, )+
        }

        impl $(<$param: EncodeLabelValue>)? EncodeLabelSet for $name $(<$param>)? {
            fn encode(&self, mut encoder: LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
                use prometheus_client::encoding::{EncodeLabelKey, EncodeLabelValue};
                $(
                    let mut label_encoder = encoder.encode_label();
                    let mut key_encoder = label_encoder.encode_label_key()?;
                    EncodeLabelKey::encode(&stringify!($field), &mut key_encoder)?;
                    let mut value_encoder = key_encoder.encode_label_value()?;
                    EncodeLabelValue::encode(&self.$field, &mut value_encoder)?;
                    value_encoder.finish()?;
                )+
                Ok(())
            }
        }

        impl $(<$param: LabelValues>)? LabelSetDoc for $name $(<$param>)? {
            fn labels() -> Vec<LabelDoc> {
                vec![$(LabelDoc {
                    name: stringify!($field),
                    values: <$ty as LabelValues>::values(),
                }),+]
            }
        }
    };
}

label_values! {
    /// Ingest protocols (`protocol` label).
    pub enum Protocol {
        /// RTMP and Enhanced RTMP.
        Rtmp = "rtmp",
        /// RTMP over TLS (`--rtmps-listen`).
        Rtmps = "rtmps",
        /// SRT.
        Srt = "srt",
    }
}

label_values! {
    /// Why a publisher connection ended with an error (`reason` of
    /// `tidegate_connection_errors_total`): the worker's own reasons, then the protocol
    /// crates' error kinds (`RtmpError::kind`, `FlvError::kind`, `TsError::kind`), converted
    /// by the ingest crate's `ErrorReason`.
    pub enum ConnectionErrorReason {
        /// The API kicked the publisher.
        Kicked = "kicked",
        /// Reading the socket failed.
        Read = "read",
        /// Writing the socket failed.
        Write = "write",
        /// No data (or no accepted publish) in time; also the RTMP handshake and publish
        /// timeouts.
        Timeout = "timeout",
        /// Our replies could not be sent in time: the peer is not reading.
        WriteTimeout = "write_timeout",
        /// Unfinished messages across connections passed the ingest buffer budget.
        BufferTotal = "buffer_total",
        /// The stream was taken over or its writer stopped.
        Superseded = "superseded",
        /// The packager refused the media.
        Packager = "packager",
        /// SRT pull: the source's host did not resolve.
        PullResolve = "pull_resolve",
        /// SRT pull: no UDP socket.
        PullSocket = "pull_socket",
        /// SRT pull: no random bytes from the operating system.
        Random = "random",
        /// SRT pull: the source did not answer the handshake in time.
        PullTimeout = "pull_timeout",
        /// SRT pull: the source rejected the handshake.
        PullRejected = "pull_rejected",
        /// SRT pull: the handshake failed otherwise.
        PullHandshake = "pull_handshake",
        /// SRT pull: nobody listens at the source (ICMP port unreachable).
        PullRefused = "pull_refused",
        /// RTMP: an unsupported version in the handshake.
        Handshake = "handshake",
        /// RTMP: a chunk beyond a limit (message size, chunk size, chunk streams, pending).
        Chunk = "chunk",
        /// RTMP: over the unfinished-message bytes allowed before publishing.
        PrepublishBuffer = "prepublish_buffer",
        /// RTMP: over the bytes of unsent replies allowed.
        TransmitBacklog = "transmit_backlog",
        /// RTMP: an AMF0 value that does not decode.
        Amf = "amf",
        /// RTMP: the command protocol broken.
        Protocol = "protocol",
        /// RTMP: the session misused (a driver bug).
        Usage = "usage",
        /// RTMP: the session had already failed.
        Closed = "closed",
        /// FLV: a truncated, malformed or badly framed tag.
        Malformed = "malformed",
        /// FLV: a codec tidegate does not repackage.
        UnsupportedCodec = "unsupported_codec",
        /// FLV: an invalid decoder configuration record.
        MalformedConfig = "malformed_config",
        /// FLV: a frame of another codec than the track's configuration.
        CodecMismatch = "codec_mismatch",
        /// FLV: the demuxer's event queue was not drained (a driver bug).
        Internal = "internal",
        /// MPEG-TS: something the demuxer does not support.
        Unsupported = "unsupported",
        /// MPEG-TS: no tracks.
        NoTracks = "no_tracks",
        /// MPEG-TS: frames of a track that was not configured.
        UnconfiguredTrack = "unconfigured_track",
        /// MPEG-TS: a track twice.
        DuplicateTrack = "duplicate_track",
        /// MPEG-TS: timestamps out of range.
        Timestamp = "timestamp",
        /// MPEG-TS: a malformed frame or configuration record.
        Codec = "codec",
    }
}

label_values! {
    /// Why a publish was refused (`reason` of `tidegate_publish_refused_total`).
    pub enum PublishRefusal {
        /// RTMP: a second `publish` on a connection that publishes.
        SecondPublish = "second_publish",
        /// Open mode: the key is not 1–128 of `[A-Za-z0-9._-]` or starts with `.`.
        BadKey = "bad_key",
        /// Tenants exist and the key is none of theirs (wrong, revoked, rotated away).
        UnknownKey = "unknown_key",
        /// The tenant directory could not be read yet (the state store did not answer).
        KeysUnavailable = "keys_unavailable",
        /// The tenant's pool is not this worker's (`--pool`): a pooled tenant on a shared
        /// worker, another pool's or a shared tenant on a pooled one, anyone on a pooled
        /// worker in open mode; an SRT pull that this worker's pool does not serve.
        Pool = "pool",
        /// SRT: no stream ID.
        MissingStreamid = "missing_streamid",
        /// SRT: `#!::` syntax without `r=KEY`, or an unknown `m=` mode.
        BadStreamid = "bad_streamid",
        /// SRT: `m=request` (play over HLS instead).
        PlaybackRefused = "playback_refused",
        /// SRT: wrong passphrase, encryption on one side only, or another key length.
        Passphrase = "passphrase",
        /// SRT: malformed key material in the handshake.
        Handshake = "handshake",
        /// SRT: the key is live (here, or another worker won it).
        Busy = "busy",
        /// RTMP: a publisher is live on this key and keeps it.
        AlreadyLive = "already_live",
        /// RTMP: another worker won the race for the stream.
        Conflict = "conflict",
        /// Encoders keep taking this key from each other.
        CompetingPublishers = "competing_publishers",
        /// The worker is shutting down.
        Draining = "draining",
        /// The state store failed.
        StoreError = "store_error",
        /// The on-publish callback refused it.
        OnPublishRefused = "on_publish_refused",
        /// The on-publish callback did not answer in time.
        OnPublishUnavailable = "on_publish_unavailable",
        /// SRT: too many on-publish checks in flight.
        OnPublishBusy = "on_publish_busy",
        // --- key guessing (issue #12, helper `attack`) ---
        /// Its source address presented `--bad-key-limit` wrong keys within
        /// `--bad-key-window`: refused before its key is looked at, for `--bad-key-backoff`.
        TooManyBadKeys = "too_many_bad_keys",
        /// The tenant has its `max_streams` live streams (across the cluster).
        QuotaStreams = "quota_streams",
        /// The tenant's live streams measure its `max_total_bitrate_bps` (across the
        /// cluster).
        QuotaBitrate = "quota_bitrate",
        /// The tenant's `max_publish_rate` attempts a second are spent.
        QuotaRate = "quota_rate",
    }
}

label_values! {
    /// Why a connection was not admitted by a connection cap (the `reason` label of
    /// `tidegate_http_connections_refused_total`): `tidegate_limits::Refusal` as a label.
    pub enum ConnectionRefusal {
        /// The listener's connection cap is reached.
        MaxConnections = "max_connections",
        /// The peer's source address holds its share already.
        PerSource = "per_source",
        /// Admitting it would eat into the descriptors kept for storage and state.
        FdReserve = "fd_reserve",
    }
}

label_values! {
    /// Why an ingest connection or publish was refused by a cap (`reason` of
    /// `tidegate_connections_refused_total`): a [`Refusal`], or the publisher cap.
    pub enum IngestRefusal {
        /// The listener's connection cap is reached.
        MaxConnections = "max_connections",
        /// The peer's source address holds its share already.
        PerSource = "per_source",
        /// Admitting it would eat into the descriptors kept for storage and state.
        FdReserve = "fd_reserve",
        /// The worker has `--max-publishers` already.
        MaxPublishers = "max_publishers",
    }
}

impl From<Refusal> for ConnectionRefusal {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::MaxConnections => Self::MaxConnections,
            Refusal::PerSource => Self::PerSource,
            Refusal::FdReserve => Self::FdReserve,
        }
    }
}

impl From<Refusal> for IngestRefusal {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::MaxConnections => Self::MaxConnections,
            Refusal::PerSource => Self::PerSource,
            Refusal::FdReserve => Self::FdReserve,
        }
    }
}

label_values! {
    /// A stream's status (`status` of `tidegate_stream_status`), as
    /// [`tidegate_health::Status`].
    pub enum StreamStatus {
        /// A publisher is connected and no warning reason holds.
        Healthy = "healthy",
        /// A publisher is connected and at least one warning reason holds.
        Warning = "warning",
        /// The publisher is gone; the stream waits for it within the reconnect window.
        Reconnecting = "reconnecting",
        /// No publisher.
        Offline = "offline",
    }
}

impl From<tidegate_health::Status> for StreamStatus {
    /// As [`tidegate_health::Status::as_str`] (a test holds the two equal).
    fn from(s: tidegate_health::Status) -> Self {
        use tidegate_health::Status as S;
        match s {
            S::Healthy => Self::Healthy,
            S::Warning => Self::Warning,
            S::Reconnecting => Self::Reconnecting,
            S::Offline => Self::Offline,
        }
    }
}

label_values! {
    /// A state or storage operation (`op` of `tidegate_store_errors_total`).
    pub enum StoreOp {
        /// Writing a media segment.
        PutSegment = "put_segment",
        /// Writing an init segment.
        PutInit = "put_init",
        /// Writing a stream's record.
        PutState = "put_state",
        /// Writing this worker's record.
        PutWorker = "put_worker",
        /// Reading a stream's record.
        GetState = "get_state",
        /// Reading a media object for a viewer.
        Get = "get",
        /// Deleting media or a record.
        Delete = "delete",
        /// Listing a stream's media.
        ListMedia = "list_media",
        /// Listing the cluster's workers.
        ListWorkers = "list_workers",
        /// Reading or writing the tenants and their stream keys.
        Tenants = "tenants",
        /// Writing a stream's record snapshot to the media store (issue #14).
        PutSnapshot = "put_snapshot",
    }
}

// --- lost state-store writes (issue #14, helper `epoch14`) ---
label_values! {
    /// How a stream record the state store had lost came back (`how` of
    /// `tidegate_stream_records_restored_total`).
    pub enum RecordRestore {
        /// The live session's writer wrote its record again (the store was flushed,
        /// restarted empty, or set back to an older epoch).
        Rewritten = "rewritten",
        /// A new session rebuilt it from the newest snapshot in the media store.
        Rebuilt = "rebuilt",
    }
}

label_set! {
    /// `how` label of restored stream records.
    pub struct RecordRestoreLabels {
        /// How it came back.
        pub how: RecordRestore,
    }
}

label_values! {
    /// A webhook event's final outcome per URL (`result` of
    /// `tidegate_webhook_deliveries_total`).
    pub enum WebhookResult {
        /// A 2xx answer.
        Delivered = "delivered",
        /// Given up after the last attempt.
        Failed = "failed",
        /// The queue was full or the event bus overran.
        Dropped = "dropped",
    }
}

label_values! {
    /// An on-publish callback answer (`result` of `tidegate_on_publish_calls_total`).
    pub enum OnPublishResult {
        /// 2xx: publish.
        Accepted = "accepted",
        /// Another status.
        Refused = "refused",
        /// No answer in time, or unreachable.
        Unavailable = "unavailable",
    }
}

label_values! {
    /// Why the SRT listener dropped a datagram before any connection saw it (`reason` of
    /// `tidegate_srt_packets_ignored_total`).
    pub enum IgnoredReason {
        /// No connection has that socket ID.
        UnknownSocket = "unknown_socket",
        /// A connection's socket ID from another address.
        WrongPeer = "wrong_peer",
        /// A conclusion with a SYN cookie we did not give that address.
        BadCookie = "bad_cookie",
        /// Not an SRT packet.
        Malformed = "malformed",
    }
}

label_values! {
    /// The part of the worker whose log lines were suppressed (`area` of
    /// `tidegate_log_lines_suppressed_total`).
    pub enum LogArea {
        /// The RTMP listener and connections.
        Rtmp = "rtmp",
        /// The RTMPS listener, its TLS handshakes and certificate reloads.
        Rtmps = "rtmps",
        /// The SRT listener.
        Srt = "srt",
        /// The HTTP listener.
        Http = "http",
        /// The admin API's and `/metrics`' refused credentials (issue #12 item 5).
        Admin = "admin",
        /// Refused playback requests (signed playback).
        Playback = "playback",
    }
}

label_values! {
    /// Why a TLS handshake on the RTMPS listener failed (`reason` of
    /// `tidegate_tls_handshake_failures_total`).
    pub enum TlsHandshakeFailure {
        /// The client spoke plain RTMP (its first byte is the RTMP version, 3) to the RTMPS
        /// port.
        PlainRtmp = "plain_rtmp",
        /// The first byte was neither a TLS handshake record nor RTMP: garbage.
        NotTls = "not_tls",
        /// The handshake did not finish within the RTMP handshake timeout.
        Timeout = "timeout",
        /// The client closed the connection before the handshake finished.
        Closed = "closed",
        /// TLS failed: a malformed message, no common version or cipher suite, or the
        /// client's alert (it did not accept our certificate, for one).
        Tls = "tls",
    }
}

label_values! {
    /// The outcome of reading the RTMPS certificate files again after they changed
    /// (`result` of `tidegate_tls_certificate_reloads_total`).
    pub enum CertificateReload {
        /// New handshakes use the new certificate.
        Reloaded = "reloaded",
        /// The files could not be read, did not parse or did not match: the previous
        /// certificate stays in use.
        Failed = "failed",
    }
}

label_set! {
    /// `reason` label of TLS handshake failures.
    pub struct TlsFailureLabels {
        /// Why.
        pub reason: TlsHandshakeFailure,
    }
}

// --- signed playback (issue #12) ---
label_values! {
    /// Why a playback request of a signed tenant was refused (`reason` of
    /// `tidegate_playback_denied_total`).
    pub enum PlaybackDenial {
        /// No `?token=`.
        Missing = "missing",
        /// Not a token: shape, encoding, JSON, claims, an algorithm other than HS256.
        Malformed = "malformed",
        /// Signed with a key the tenant does not have (another tenant's, a dropped one).
        UnknownKey = "unknown_key",
        /// The signature does not match (tampered, or another secret).
        BadSignature = "bad_signature",
        /// Past its expiry (or before its `nbf`).
        Expired = "expired",
        /// Valid, for another stream or tenant.
        OtherStream = "other_stream",
    }
}

impl From<tidegate_model::TokenDenial> for PlaybackDenial {
    fn from(d: tidegate_model::TokenDenial) -> Self {
        use tidegate_model::TokenDenial as T;
        match d {
            T::Malformed => Self::Malformed,
            T::UnknownKey => Self::UnknownKey,
            T::BadSignature => Self::BadSignature,
            T::Expired => Self::Expired,
            T::OtherStream => Self::OtherStream,
        }
    }
}

label_set! {
    /// `tenant` (an existing signed tenant: requests of others are never refused) and
    /// `reason` of refused playback requests.
    pub struct PlaybackDeniedLabels {
        /// The tenant whose stream was asked for.
        pub tenant: String,
        /// Why.
        pub reason: PlaybackDenial,
    }
}

// --- LL-HLS blocking requests (issue #13, helper `llblock`) ---
label_values! {
    /// How a blocking LL-HLS request was answered (`outcome` of
    /// `tidegate_llhls_blocking_answers_total`): a playlist request with `_HLS_msn` /
    /// `_HLS_part`, or a request for the part named by the preload hint.
    pub enum BlockingOutcome {
        /// What it waited for exists (answered with it, at once or after waiting).
        Ready = "ready",
        /// Still missing after the blocking timeout (three target durations): 503.
        Timeout = "timeout",
        /// Malformed directives, or an msn / part too far ahead: 400 at once.
        BadRequest = "bad_request",
        /// A hinted part that will not come (the stream ended, the hint moved past it): 404.
        Gone = "gone",
        /// The worker was shutting down (leaving the cluster) while it held the request: 503.
        ShuttingDown = "shutting_down",
    }
}

label_set! {
    /// `outcome` label of blocking LL-HLS answers.
    pub struct BlockingOutcomeLabels {
        /// How it was answered.
        pub outcome: BlockingOutcome,
    }
}

label_values! {
    /// What a timed-out HTTP connection was waiting for (`phase` of
    /// `tidegate_http_timeouts_total`).
    pub enum HttpPhase {
        /// A request's head took too long.
        Header = "header",
        /// Nothing moved for too long.
        Idle = "idle",
    }
}

label_values! {
    /// An HTTP answer's status class (`class` of `tidegate_http_requests_total`).
    pub enum StatusClass {
        /// 1xx.
        Informational = "1xx",
        /// 2xx.
        Success = "2xx",
        /// 3xx.
        Redirection = "3xx",
        /// 4xx.
        ClientError = "4xx",
        /// 5xx (and anything above).
        ServerError = "5xx",
    }
}

label_set! {
    /// `protocol` label.
    pub struct ProtocolLabels {
        /// The ingest protocol.
        pub protocol: Protocol,
    }
}

label_set! {
    /// `protocol` + `reason` labels; `reason` is one of the enum `R`'s values
    /// ([`ConnectionErrorReason`], [`PublishRefusal`], [`IngestRefusal`]).
    pub struct ReasonLabels<R> {
        /// The ingest protocol.
        pub protocol: Protocol,
        /// Why.
        pub reason: R,
    }
}

label_set! {
    /// `protocol` + `tenant` + `reason` of `tidegate_publish_refused_total`: `tenant` is the
    /// tenant the key resolved to, or [`UNKNOWN_TENANT_LABEL`] when it resolved to none
    /// (an unknown key, a malformed stream id): tenant names only, never a key.
    pub struct RefusedLabels {
        /// The ingest protocol.
        pub protocol: Protocol,
        /// The tenant, or `unknown`.
        pub tenant: String,
        /// Why.
        pub reason: PublishRefusal,
    }
}

/// The `tenant` of a refusal whose key resolved to no tenant.
pub const UNKNOWN_TENANT_LABEL: &str = "unknown";

label_set! {
    /// `tenant` label.
    pub struct TenantLabels {
        /// The tenant.
        pub tenant: String,
    }
}

label_set! {
    /// Per-stream labels: tenant, public stream name, protocol. Stream keys and client
    /// addresses never become labels; series are removed when the stream's session or the
    /// stream ends.
    pub struct StreamLabels {
        /// Tenant.
        pub tenant: String,
        /// Public stream name.
        pub stream: String,
        /// Ingest protocol.
        pub protocol: Protocol,
    }
}

label_set! {
    /// Per-stream labels plus a status value (one series per status, 1 for the current one).
    pub struct StreamStatusLabels {
        /// Tenant.
        pub tenant: String,
        /// Public stream name.
        pub stream: String,
        /// Ingest protocol.
        pub protocol: Protocol,
        /// The status this series is for.
        pub status: StreamStatus,
    }
}

impl StreamStatusLabels {
    /// The labels of `stream` with `status`.
    pub fn of(stream: &StreamLabels, status: tidegate_health::Status) -> Self {
        Self {
            tenant: stream.tenant.clone(),
            stream: stream.stream.clone(),
            protocol: stream.protocol,
            status: status.into(),
        }
    }
}

label_set! {
    /// `op` label for storage operations.
    pub struct OpLabels {
        /// The operation.
        pub op: StoreOp,
    }
}

label_set! {
    /// `result` label: [`WebhookResult`] or [`OnPublishResult`].
    pub struct ResultLabels<R> {
        /// The outcome.
        pub result: R,
    }
}

label_set! {
    /// `reason` label of the SRT datagrams dropped before a connection saw them.
    pub struct ReasonOnlyLabels {
        /// Why.
        pub reason: IgnoredReason,
    }
}

label_set! {
    /// `area` label of suppressed log lines.
    pub struct AreaLabels {
        /// The part of the worker whose lines were suppressed.
        pub area: LogArea,
    }
}

/// A metric's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up; exported as `<name>_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, exported as `<name>_bucket`, `<name>_sum` and `<name>_count`.
    Histogram,
}

impl MetricKind {
    /// The name in the exposition's `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// One label of a metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelDoc {
    /// The label's name.
    pub name: &'static str,
    /// Its values, or `None` when open (tenant, stream name).
    pub values: Option<Vec<&'static str>>,
}

/// One registered metric: what the README's metric table lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricDoc {
    /// The name as registered, without the prefix and the `_total` of counters.
    pub name: &'static str,
    /// The help text.
    pub help: &'static str,
    /// The type.
    pub kind: MetricKind,
    /// The labels, in export order.
    pub labels: Vec<LabelDoc>,
}

impl MetricDoc {
    /// The family name in the exposition, e.g. `tidegate_connections`.
    pub fn family(&self) -> String {
        format!("{PREFIX}_{}", self.name)
    }

    /// The name a query uses: `tidegate_connections_total` for a counter, the family name
    /// otherwise.
    pub fn exported(&self) -> String {
        match self.kind {
            MetricKind::Counter => format!("{}_total", self.family()),
            _ => self.family(),
        }
    }
}

/// A metric type's kind and labels, for [`MetricDoc`].
pub trait DocumentedMetric {
    /// The type.
    fn kind() -> MetricKind;
    /// The labels (none for a single series).
    fn labels() -> Vec<LabelDoc> {
        Vec::new()
    }
}

impl<N, A> DocumentedMetric for Counter<N, A> {
    fn kind() -> MetricKind {
        MetricKind::Counter
    }
}

impl<N, A> DocumentedMetric for Gauge<N, A> {
    fn kind() -> MetricKind {
        MetricKind::Gauge
    }
}

impl DocumentedMetric for Histogram {
    fn kind() -> MetricKind {
        MetricKind::Histogram
    }
}

impl<S: LabelSetDoc, M: DocumentedMetric, C> DocumentedMetric for Family<S, M, C> {
    fn kind() -> MetricKind {
        M::kind()
    }
    fn labels() -> Vec<LabelDoc> {
        S::labels()
    }
}

/// The registry, recording a [`MetricDoc`] for every metric it registers.
struct Registrar {
    registry: Registry,
    docs: Vec<MetricDoc>,
}

impl Registrar {
    fn new() -> Self {
        Self {
            registry: Registry::with_prefix(PREFIX),
            docs: Vec::new(),
        }
    }

    fn register<M: Metric + DocumentedMetric>(
        &mut self,
        name: &'static str,
        help: &'static str,
        metric: M,
    ) {
        self.docs.push(MetricDoc {
            name,
            help,
            kind: M::kind(),
            labels: M::labels(),
        });
        self.registry.register(name, help, metric);
    }
}

/// The README's metric table: one row per metric, with its type, labels (and for a closed
/// label every value) and help.
pub fn markdown_table(docs: &[MetricDoc]) -> String {
    let mut out = String::from("| metric | type | labels | what |\n| --- | --- | --- | --- |\n");
    for d in docs {
        let labels: Vec<String> = d
            .labels
            .iter()
            .map(|l| match &l.values {
                None => format!("`{}`", l.name),
                Some(values) => {
                    let values: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
                    format!("`{}`: {}", l.name, values.join(" "))
                }
            })
            .collect();
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            d.exported(),
            d.kind.as_str(),
            labels.join("; "),
            d.help.replace('|', "\\|"),
        ));
    }
    out
}

/// The worker's metrics.
pub struct Metrics {
    registry: Registry,
    /// What was registered, in order.
    docs: Vec<MetricDoc>,
    /// Connections accepted.
    pub connections: Family<ProtocolLabels, Counter>,
    /// Connections that ended because of an error, by reason.
    pub connection_errors: Family<ReasonLabels<ConnectionErrorReason>, Counter>,
    /// Publish attempts refused, by protocol, tenant and reason.
    pub publish_refused: Family<RefusedLabels, Counter>,
    /// Bytes received from publishers.
    pub ingest_bytes: Family<ProtocolLabels, Counter>,
    /// Streams with a live publisher on this worker.
    pub live_streams: Gauge,
    /// Segments written.
    pub segments: Counter,
    /// Segments dropped because the media store stayed unreachable past the backlog bound.
    pub segments_dropped: Counter,
    /// Streams taken over by a newer publisher.
    pub takeovers: Counter,
    /// Publishers refused because encoders kept taking a key from each other.
    pub competing_publishers: Counter,
    /// Media frames dropped before packaging (before the first keyframe, before a config).
    pub frames_dropped: Counter,
    /// Timestamp jumps seen in publishers' timelines.
    pub timestamp_jumps: Counter,
    /// Storage and state failures by operation.
    pub store_errors: Family<OpLabels, Counter>,
    /// Seconds from a segment-closing keyframe's arrival to the segment being listed.
    pub segment_latency: Histogram,
    /// Unix time the process started.
    pub process_start: Gauge<f64, AtomicU64>,
    /// Previous incarnations of this worker id as the shared state counted them.
    pub worker_restarts: Gauge,
    /// Per stream: incoming bitrate over the last seconds, bits per second.
    pub stream_bitrate: Family<StreamLabels, Gauge>,
    /// Per stream: bytes received from the publisher.
    pub stream_bytes: Family<StreamLabels, Counter>,
    /// Per stream: media frames packaged.
    pub stream_frames: Family<StreamLabels, Counter>,
    /// Per stream: 1 for the current status, 0 for the others.
    pub stream_status: Family<StreamStatusLabels, Gauge>,
    /// Per stream: publisher reconnects (a new session within the reconnect window).
    pub reconnects: Family<StreamLabels, Counter>,
    /// Per SRT stream: data packets received.
    pub srt_received: Family<StreamLabels, Counter>,
    /// Per SRT stream: packets detected lost (recovered or not).
    pub srt_lost: Family<StreamLabels, Counter>,
    /// Per SRT stream: retransmitted packets received.
    pub srt_retransmitted: Family<StreamLabels, Counter>,
    /// Per SRT stream: packets dropped (too late for TSBPD, or never arrived in time).
    pub srt_dropped: Family<StreamLabels, Counter>,
    /// Per SRT stream: smoothed round-trip time, seconds.
    pub srt_rtt: Family<StreamLabels, Gauge<f64, AtomicU64>>,
    /// Webhook events by final outcome: `delivered` (2xx), `failed` (gave up after the last
    /// attempt), `dropped` (queue full or bus overrun), counted once per event and URL.
    pub webhook_deliveries: Family<ResultLabels<WebhookResult>, Counter>,
    /// Webhook attempts that failed and were scheduled again.
    pub webhook_retries: Counter,
    /// on-publish callback answers: `accepted`, `refused`, `unavailable`.
    pub on_publish_calls: Family<ResultLabels<OnPublishResult>, Counter>,
    // --- ingest limits (issue 10, RTMP side) ---
    /// Ingest connections (or publishes) refused by a cap, by [`IngestRefusal`].
    pub connections_refused: Family<ReasonLabels<IngestRefusal>, Counter>,
    // --- HTTP connections and requests (issue #10, helper `http`) ---
    /// HTTP connections open now.
    pub http_connections_open: Gauge,
    /// HTTP connections closed at once on accept, by [`ConnectionRefusal`].
    pub http_connections_refused: Family<HttpRefusalLabels, Counter>,
    /// HTTP connections closed by a timeout, by `phase` (`header`, `idle`).
    pub http_timeouts: Family<PhaseLabels, Counter>,
    /// HTTP answers by status class (`2xx`, `4xx`, ...).
    pub http_requests: Family<ClassLabels, Counter>,
    /// 401 answers of `/api/v1`.
    pub http_unauthorized: Counter,
    /// Log lines suppressed by rate limiting, by area.
    pub log_lines_suppressed: Family<AreaLabels, Counter>,
    // --- SRT under attack (issue #10, helper `srt`) ---
    /// SRT datagrams dropped before any connection saw them: `unknown_socket`, `wrong_peer`
    /// (a connection's socket ID from another address), `bad_cookie` (a conclusion with a
    /// SYN cookie we did not give), `malformed`.
    pub srt_packets_ignored: Family<ReasonOnlyLabels, Counter>,

    // --- RTMPS (issue #12) ---
    /// TLS handshakes on the RTMPS listener that failed, by [`TlsHandshakeFailure`].
    pub tls_handshake_failures: Family<TlsFailureLabels, Counter>,
    /// Reloads of the RTMPS certificate after its files changed, by [`CertificateReload`].
    pub tls_certificate_reloads: Family<ResultLabels<CertificateReload>, Counter>,

    // ---- issue #10, no decodable video (helper `novideo`) ----
    /// Per stream: video frames that never reached a playlist because they could not be
    /// decoded — no decoder configuration yet (parameter sets, sequence header), or no
    /// keyframe to start from — or that the packager refused. Removed with the stream's
    /// other per-session series.
    pub video_frames_dropped: Family<StreamLabels, Counter>,

    // --- stream records (issue #10, registry) ---
    /// Stream records in the state store, as the sweeper last counted them.
    pub stream_records: Gauge,
    /// Ended streams whose record and media were deleted after `--ended-retention`.
    pub stream_records_expired: Counter,

    // --- scoped admin tokens (issue #12 item 5) ---
    /// Credentials the admin API, the dashboard's calls and `/metrics` refused, by
    /// [`AdminAuthFailure`].
    pub admin_auth_failures: Family<AdminAuthFailureLabels, Counter>,
    // --- signed playback (issue #12) ---
    /// Playlist and segment requests of signed tenants refused (403), by tenant and reason.
    pub playback_denied: Family<PlaybackDeniedLabels, Counter>,
    // --- tenant quotas (issue #12, helper `quotas`) ---
    /// Publishers disconnected for staying over their tenant's per-stream bitrate quota.
    pub quota_disconnects: Family<TenantLabels, Counter>,
    // --- LL-HLS blocking requests (issue #13, helper `llblock`) ---
    /// LL-HLS requests held now (blocking playlist reloads and hinted parts waiting).
    pub llhls_held_requests: Gauge,
    /// Blocking LL-HLS requests answered, by [`BlockingOutcome`].
    pub llhls_blocking_answers: Family<BlockingOutcomeLabels, Counter>,
    // --- lost state-store writes (issue #14, helper `epoch14`) ---
    /// Stream records the state store had lost (or set back) that came back, by
    /// [`RecordRestore`].
    pub stream_records_restored: Family<RecordRestoreLabels, Counter>,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registrar::new();
        let connections = Family::<ProtocolLabels, Counter>::default();
        registry.register(
            "connections",
            "Publisher connections accepted",
            connections.clone(),
        );
        let connection_errors = Family::<ReasonLabels<ConnectionErrorReason>, Counter>::default();
        registry.register(
            "connection_errors",
            "Publisher connections ended by an error, by reason",
            connection_errors.clone(),
        );
        let publish_refused = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "publish_refused",
            "Publish attempts refused, by tenant (unknown: the key resolved to none) and reason",
            publish_refused.clone(),
        );
        let ingest_bytes = Family::<ProtocolLabels, Counter>::default();
        registry.register(
            "ingest_bytes",
            "Bytes received from publishers",
            ingest_bytes.clone(),
        );
        let live_streams = Gauge::default();
        registry.register(
            "live_streams",
            "Streams with a live publisher on this worker",
            live_streams.clone(),
        );
        let segments = Counter::default();
        registry.register("segments", "Media segments written", segments.clone());
        let segments_dropped = Counter::default();
        registry.register(
            "segments_dropped",
            "Segments dropped because the media store stayed unreachable",
            segments_dropped.clone(),
        );
        let takeovers = Counter::default();
        registry.register(
            "takeovers",
            "Streams taken over by a newer publisher",
            takeovers.clone(),
        );
        let competing_publishers = Counter::default();
        registry.register(
            "competing_publishers",
            "Publishers refused because encoders kept taking a key from each other",
            competing_publishers.clone(),
        );
        let frames_dropped = Counter::default();
        registry.register(
            "frames_dropped",
            "Frames dropped before packaging",
            frames_dropped.clone(),
        );
        let timestamp_jumps = Counter::default();
        registry.register(
            "timestamp_jumps",
            "Timestamp jumps in publishers' timelines",
            timestamp_jumps.clone(),
        );
        let store_errors = Family::<OpLabels, Counter>::default();
        registry.register(
            "store_errors",
            "State and storage failures by operation",
            store_errors.clone(),
        );
        let segment_latency =
            Histogram::new([0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0]);
        registry.register(
            "segment_latency_seconds",
            "Keyframe arrival to segment listed in the playlist",
            segment_latency.clone(),
        );
        let process_start = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "process_start_time_seconds",
            "Unix time the process started",
            process_start.clone(),
        );
        process_start.set(crate::unix_ms() as f64 / 1000.0);
        let worker_restarts = Gauge::default();
        registry.register(
            "worker_restarts",
            "Previous starts of this worker id as the shared state counted them",
            worker_restarts.clone(),
        );
        let stream_bitrate = Family::<StreamLabels, Gauge>::default();
        registry.register(
            "stream_ingest_bitrate_bps",
            "Incoming bitrate of a live stream over the last seconds, bits per second",
            stream_bitrate.clone(),
        );
        let stream_bytes = Family::<StreamLabels, Counter>::default();
        registry.register(
            "stream_ingest_bytes",
            "Bytes received from a stream's publisher",
            stream_bytes.clone(),
        );
        let stream_frames = Family::<StreamLabels, Counter>::default();
        registry.register(
            "stream_frames",
            "Media frames packaged for a stream",
            stream_frames.clone(),
        );
        let stream_status = Family::<StreamStatusLabels, Gauge>::default();
        registry.register(
            "stream_status",
            "1 for a stream's current status (healthy, warning, reconnecting, offline)",
            stream_status.clone(),
        );
        let srt_received = Family::<StreamLabels, Counter>::default();
        registry.register(
            "stream_srt_packets_received",
            "SRT data packets received",
            srt_received.clone(),
        );
        let srt_lost = Family::<StreamLabels, Counter>::default();
        registry.register(
            "stream_srt_packets_lost",
            "SRT packets detected lost (recovered by retransmission or not)",
            srt_lost.clone(),
        );
        let srt_retransmitted = Family::<StreamLabels, Counter>::default();
        registry.register(
            "stream_srt_packets_retransmitted",
            "SRT retransmitted packets received",
            srt_retransmitted.clone(),
        );
        let srt_dropped = Family::<StreamLabels, Counter>::default();
        registry.register(
            "stream_srt_packets_dropped",
            "SRT packets dropped because they could not be delivered in time",
            srt_dropped.clone(),
        );
        let srt_rtt = Family::<StreamLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "stream_srt_rtt_seconds",
            "SRT smoothed round-trip time",
            srt_rtt.clone(),
        );
        let reconnects = Family::<StreamLabels, Counter>::default();
        registry.register(
            "stream_reconnects",
            "Publisher reconnects within the reconnect window",
            reconnects.clone(),
        );
        let webhook_deliveries = Family::<ResultLabels<WebhookResult>, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook events by outcome (delivered, failed, dropped), per URL",
            webhook_deliveries.clone(),
        );
        let webhook_retries = Counter::default();
        registry.register(
            "webhook_retries",
            "Webhook attempts that failed and were retried",
            webhook_retries.clone(),
        );
        let on_publish_calls = Family::<ResultLabels<OnPublishResult>, Counter>::default();
        registry.register(
            "on_publish_calls",
            "on-publish callback answers (accepted, refused, unavailable)",
            on_publish_calls.clone(),
        );
        // --- ingest limits (issue 10, RTMP side) ---
        let connections_refused = Family::<ReasonLabels<IngestRefusal>, Counter>::default();
        registry.register(
            "connections_refused",
            "Ingest connections or publishes refused by a cap, by reason",
            connections_refused.clone(),
        );
        // --- HTTP connections and requests (issue #10, helper `http`) ---
        let http_connections_open = Gauge::default();
        registry.register(
            "http_connections_open",
            "HTTP connections open now",
            http_connections_open.clone(),
        );
        let http_connections_refused = Family::<HttpRefusalLabels, Counter>::default();
        registry.register(
            "http_connections_refused",
            "HTTP connections closed at once on accept (max_connections, per_source, fd_reserve)",
            http_connections_refused.clone(),
        );
        let http_timeouts = Family::<PhaseLabels, Counter>::default();
        registry.register(
            "http_timeouts",
            "HTTP connections closed by a timeout (header: a request head too slow; idle: nothing moved)",
            http_timeouts.clone(),
        );
        let http_requests = Family::<ClassLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP answers by status class",
            http_requests.clone(),
        );
        let http_unauthorized = Counter::default();
        registry.register(
            "http_unauthorized",
            "401 answers of /api/v1 (missing or wrong admin token)",
            http_unauthorized.clone(),
        );
        let log_lines_suppressed = Family::<AreaLabels, Counter>::default();
        registry.register(
            "log_lines_suppressed",
            "Log lines suppressed by rate limiting, by area",
            log_lines_suppressed.clone(),
        );
        // ---- issue #10, no decodable video (helper `novideo`) ----
        let video_frames_dropped = Family::<StreamLabels, Counter>::default();
        registry.register(
            "video_frames_dropped",
            "Video frames dropped per stream: no decoder configuration (parameter sets), no keyframe yet, or refused by the packager",
            video_frames_dropped.clone(),
        );
        let srt_packets_ignored = Family::<ReasonOnlyLabels, Counter>::default();
        registry.register(
            "srt_packets_ignored",
            "SRT datagrams dropped before reaching a connection (unknown_socket, wrong_peer, bad_cookie, malformed)",
            srt_packets_ignored.clone(),
        );
        // --- RTMPS (issue #12) ---
        let tls_handshake_failures = Family::<TlsFailureLabels, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes on the RTMPS listener that failed (plain_rtmp, not_tls, timeout, closed, tls)",
            tls_handshake_failures.clone(),
        );
        let tls_certificate_reloads = Family::<ResultLabels<CertificateReload>, Counter>::default();
        registry.register(
            "tls_certificate_reloads",
            "Reloads of the RTMPS certificate after its files changed; a failed one keeps the previous certificate",
            tls_certificate_reloads.clone(),
        );
        // --- stream records (issue #10, registry) ---
        let stream_records = Gauge::default();
        registry.register(
            "stream_records",
            "Stream records in the state store, as the sweeper last counted them",
            stream_records.clone(),
        );
        let stream_records_expired = Counter::default();
        registry.register(
            "stream_records_expired",
            "Ended streams whose record and media were deleted after the ended retention",
            stream_records_expired.clone(),
        );
        // --- scoped admin tokens (issue #12 item 5) ---
        let admin_auth_failures = Family::<AdminAuthFailureLabels, Counter>::default();
        registry.register(
            "admin_auth_failures",
            "Admin API and /metrics credentials refused (missing, unknown_token, out_of_scope)",
            admin_auth_failures.clone(),
        );
        // --- signed playback (issue #12) ---
        let playback_denied = Family::<PlaybackDeniedLabels, Counter>::default();
        registry.register(
            "playback_denied",
            "Playlist and segment requests of signed-playback tenants refused with 403, by tenant and reason",
            playback_denied.clone(),
        );
        let quota_disconnects = Family::<TenantLabels, Counter>::default();
        registry.register(
            "quota_disconnects",
            "Publishers disconnected for staying over their tenant's per-stream bitrate quota (disconnect_over_bitrate)",
            quota_disconnects.clone(),
        );
        // --- LL-HLS blocking requests (issue #13, helper `llblock`) ---
        let llhls_held_requests = Gauge::default();
        registry.register(
            "llhls_held_requests",
            "LL-HLS requests held now: blocking playlist reloads (_HLS_msn/_HLS_part) and preload-hinted parts waiting to exist",
            llhls_held_requests.clone(),
        );
        let llhls_blocking_answers = Family::<BlockingOutcomeLabels, Counter>::default();
        registry.register(
            "llhls_blocking_answers",
            "Blocking LL-HLS requests answered, by outcome (ready, timeout = 503, bad_request = 400, gone = 404 for a hinted part that will not come, shutting_down = 503 while the worker leaves)",
            llhls_blocking_answers.clone(),
        );
        // --- lost state-store writes (issue #14, helper `epoch14`) ---
        let stream_records_restored = Family::<RecordRestoreLabels, Counter>::default();
        registry.register(
            "stream_records_restored",
            "Stream records the state store had lost or set back (flushed, restarted empty, failed over), written again by their live session (rewritten) or rebuilt from the media store's snapshot by a new one (rebuilt)",
            stream_records_restored.clone(),
        );
        let Registrar { registry, docs } = registry;
        Self {
            registry,
            docs,
            connections,
            connection_errors,
            publish_refused,
            ingest_bytes,
            live_streams,
            segments,
            segments_dropped,
            takeovers,
            competing_publishers,
            frames_dropped,
            timestamp_jumps,
            store_errors,
            segment_latency,
            process_start,
            worker_restarts,
            stream_bitrate,
            stream_bytes,
            stream_frames,
            stream_status,
            reconnects,
            srt_received,
            srt_lost,
            srt_retransmitted,
            srt_dropped,
            srt_rtt,
            webhook_deliveries,
            webhook_retries,
            on_publish_calls,
            connections_refused,
            http_connections_open,
            http_connections_refused,
            http_timeouts,
            http_requests,
            http_unauthorized,
            log_lines_suppressed,
            srt_packets_ignored,
            tls_handshake_failures,
            tls_certificate_reloads,
            video_frames_dropped,
            stream_records,
            stream_records_expired,
            admin_auth_failures,
            playback_denied,
            quota_disconnects,
            llhls_held_requests,
            llhls_blocking_answers,
            stream_records_restored,
        }
    }

    /// Counts a stream record that came back after the state store lost it.
    pub fn record_restored(&self, how: RecordRestore) {
        self.stream_records_restored
            .get_or_create(&RecordRestoreLabels { how })
            .inc();
    }

    /// Counts a blocking LL-HLS answer.
    pub fn llhls_answered(&self, outcome: BlockingOutcome) {
        self.llhls_blocking_answers
            .get_or_create(&BlockingOutcomeLabels { outcome })
            .inc();
    }

    /// Removes the refused-playback series of a tenant that no longer exists.
    pub fn forget_playback_tenant(&self, tenant: &str) {
        for reason in PlaybackDenial::ALL {
            self.playback_denied.remove(&PlaybackDeniedLabels {
                tenant: tenant.to_owned(),
                reason: *reason,
            });
        }
    }

    /// Counts a refused playback request of a signed tenant.
    pub fn playback_refused(&self, tenant: &str, reason: PlaybackDenial) {
        self.playback_denied
            .get_or_create(&PlaybackDeniedLabels {
                tenant: tenant.to_owned(),
                reason,
            })
            .inc();
    }

    /// Counts a failed TLS handshake on the RTMPS listener.
    pub fn tls_handshake_failed(&self, reason: TlsHandshakeFailure) {
        self.tls_handshake_failures
            .get_or_create(&TlsFailureLabels { reason })
            .inc();
    }

    /// Counts a reload of the RTMPS certificate.
    pub fn tls_certificate_reloaded(&self, result: CertificateReload) {
        self.tls_certificate_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts an ingest connection (or publish) refused by a cap.
    pub fn connection_refused(&self, protocol: Protocol, reason: IngestRefusal) {
        self.connections_refused
            .get_or_create(&ReasonLabels { protocol, reason })
            .inc();
    }

    /// The counter of log lines suppressed in `area`.
    pub fn log_suppressed(&self, area: LogArea) -> Counter {
        self.log_lines_suppressed
            .get_or_create(&AreaLabels { area })
            .clone()
    }

    /// Counts a webhook event's outcome for one URL.
    pub fn webhook_delivery(&self, result: WebhookResult) {
        self.webhook_deliveries
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts an on-publish callback answer.
    pub fn on_publish_call(&self, result: OnPublishResult) {
        self.on_publish_calls
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts a failed connection.
    pub fn connection_error(&self, protocol: Protocol, reason: ConnectionErrorReason) {
        self.connection_errors
            .get_or_create(&ReasonLabels { protocol, reason })
            .inc();
    }

    /// Counts a refused publish whose key resolved to no tenant (`tenant="unknown"`).
    pub fn refused(&self, protocol: Protocol, reason: PublishRefusal) {
        self.refused_for(protocol, UNKNOWN_TENANT_LABEL, reason);
    }

    /// Counts a refused publish of tenant `tenant` (the key resolved to it).
    pub fn refused_for(&self, protocol: Protocol, tenant: &str, reason: PublishRefusal) {
        self.publish_refused
            .get_or_create(&RefusedLabels {
                protocol,
                tenant: tenant.to_owned(),
                reason,
            })
            .inc();
    }

    /// Counts a store failure.
    pub fn store_error(&self, op: StoreOp) {
        self.store_errors.get_or_create(&OpLabels { op }).inc();
    }

    /// The classic Prometheus text format (0.0.4), for clients that do not ask for
    /// OpenMetrics (`promtool check metrics`, older scrapers): counter families are declared
    /// under their `_total` sample name and there is no `# EOF`.
    pub fn encode_prometheus(&self) -> String {
        let open = self.encode();
        let mut counters = std::collections::HashSet::new();
        for line in open.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some(name) = rest.strip_suffix(" counter") {
                    counters.insert(name.to_owned());
                }
            }
        }
        let mut out = String::with_capacity(open.len());
        for line in open.lines() {
            if line == "# EOF" || line.starts_with("# UNIT ") {
                continue;
            }
            let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
                let rest = line.strip_prefix(prefix)?;
                let (name, tail) = rest.split_once(' ')?;
                counters
                    .contains(name)
                    .then(|| format!("{prefix}{name}_total {tail}"))
            });
            match rewritten {
                Some(l) => out.push_str(&l),
                None => out.push_str(line),
            }
            out.push('\n');
        }
        out
    }

    /// Every registered metric's name, help, type and labels, in registration order.
    pub fn docs(&self) -> &[MetricDoc] {
        &self.docs
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

// --- scoped admin tokens (issue #12 item 5) ---

label_values! {
    /// Why a credential was refused (`reason` of `tidegate_admin_auth_failures_total`).
    pub enum AdminAuthFailure {
        /// An operator token is configured and the request carried none (401).
        Missing = "missing",
        /// A token that is neither the operator's nor a current tenant token: wrong,
        /// revoked, of a deleted tenant (401).
        UnknownToken = "unknown_token",
        /// A tenant token asked for what is not its tenant's: an operator-only call (403)
        /// or another tenant's stream or record (answered as if it did not exist).
        OutOfScope = "out_of_scope",
    }
}

label_set! {
    /// `reason` label of refused admin credentials.
    pub struct AdminAuthFailureLabels {
        /// Why.
        pub reason: AdminAuthFailure,
    }
}

impl Metrics {
    /// Counts a refused admin credential.
    pub fn admin_auth_failed(&self, reason: AdminAuthFailure) {
        self.admin_auth_failures
            .get_or_create(&AdminAuthFailureLabels { reason })
            .inc();
    }
}

// --- HTTP connections and requests (issue #10, helper `http`) ---

label_set! {
    /// `reason` label of HTTP refusals.
    pub struct HttpRefusalLabels {
        /// Why the connection was closed at once.
        pub reason: ConnectionRefusal,
    }
}

label_set! {
    /// `phase` label of HTTP timeouts.
    pub struct PhaseLabels {
        /// What the connection was waiting for.
        pub phase: HttpPhase,
    }
}

label_set! {
    /// `class` label of HTTP answers.
    pub struct ClassLabels {
        /// The status class.
        pub class: StatusClass,
    }
}

impl Metrics {
    /// Counts an HTTP connection closed at once on accept.
    pub fn http_refused(&self, refusal: tidegate_limits::Refusal) {
        self.http_connections_refused
            .get_or_create(&HttpRefusalLabels {
                reason: refusal.into(),
            })
            .inc();
    }

    /// Counts an HTTP connection closed by a timeout in `phase`.
    pub fn http_timeout(&self, phase: HttpPhase) {
        self.http_timeouts
            .get_or_create(&PhaseLabels { phase })
            .inc();
    }

    /// Counts an HTTP answer by its status class.
    pub fn http_answer(&self, status: http::StatusCode) {
        let class = match status.as_u16() {
            100..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        };
        self.http_requests
            .get_or_create(&ClassLabels { class })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    //! The code is the truth about metrics; these tests hold the README's metric table, every
    //! `tidegate_*` name in the docs, the Prometheus rules and the Grafana dashboard, and the
    //! protocol crates' error kinds to it.

    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    use super::*;

    /// The README's generated table sits between these lines.
    const TABLE_BEGIN: &str = "<!-- metrics:begin";
    const TABLE_END: &str = "<!-- metrics:end -->";
    /// Set to rewrite the README's table from the code instead of comparing.
    const BLESS_ENV: &str = "TIDEGATE_BLESS";
    /// Labels the scrape and the queries add to every series.
    const SCRAPE_LABELS: [&str; 2] = ["instance", "job"];

    fn repo_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    #[test]
    fn readme_metric_table_is_the_registered_metrics() {
        let path = repo_root().join("README.md");
        let readme = std::fs::read_to_string(&path).expect("README.md");
        let begin = readme
            .find(TABLE_BEGIN)
            .expect("README has a metrics:begin marker");
        let body = begin + readme[begin..].find('\n').expect("marker line ends") + 1;
        let end = readme
            .find(TABLE_END)
            .expect("README has a metrics:end marker");
        assert!(body <= end, "metrics:end comes after metrics:begin");
        let want = markdown_table(Metrics::new().docs());
        if std::env::var_os(BLESS_ENV).is_some_and(|v| !v.is_empty()) {
            let text = format!("{}{want}{}", &readme[..body], &readme[end..]);
            std::fs::write(&path, text).expect("write README.md");
            return;
        }
        assert!(
            readme[body..end] == want,
            "README.md's metric table differs from the registered metrics; rewrite it with \
             `{BLESS_ENV}=1 cargo test -p tidegate-server readme_metric_table`.\n\
             --- README\n{}\n--- code\n{want}",
            &readme[body..end]
        );
    }

    /// Every name a query may use for a metric, with the labels the query may name and, for
    /// a closed label, its values.
    fn queryable() -> BTreeMap<String, Vec<LabelDoc>> {
        let mut names = BTreeMap::new();
        for d in Metrics::new().docs() {
            let family = d.family();
            let mut labels = d.labels.clone();
            let suffixes: &[&str] = match d.kind {
                MetricKind::Counter => &["", "_total"],
                MetricKind::Gauge => &[""],
                MetricKind::Histogram => {
                    labels.push(LabelDoc {
                        name: "le",
                        values: None,
                    });
                    &["", "_bucket", "_sum", "_count"]
                }
            };
            for suffix in suffixes {
                names.insert(format!("{family}{suffix}"), labels.clone());
            }
        }
        names
    }

    /// Text files under `dir` (recursively).
    fn text_files(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                text_files(&path, out);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                out.push((path, text));
            }
        }
    }

    /// A metric mentioned in a document: its name and what stands in the braces right after
    /// it (`{protocol="rtmp",reason}`), if anything.
    struct Mention {
        name: String,
        line: usize,
        selector: Option<String>,
    }

    fn is_name_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '_'
    }

    /// Every `tidegate_*` word in `text` that is not part of a longer word or a Rust path
    /// (`tidegate_server::webhooks`).
    fn mentions(text: &str) -> Vec<Mention> {
        let prefix = format!("{PREFIX}_");
        let mut out = Vec::new();
        let mut from = 0;
        while let Some(at) = text[from..].find(&prefix) {
            let start = from + at;
            let end = text[start..]
                .find(|c: char| !is_name_char(c))
                .map_or(text.len(), |n| start + n);
            from = end.max(start + prefix.len());
            let before = text[..start].chars().next_back();
            if end == start + prefix.len()
                || before.is_some_and(is_name_char)
                || text[end..].starts_with("::")
            {
                continue;
            }
            let selector = text[end..].strip_prefix('{').and_then(|rest| {
                let close = rest.find('}')?;
                Some(rest[..close].replace("\\\"", "\""))
            });
            out.push(Mention {
                name: text[start..end].to_owned(),
                line: text[..start].matches('\n').count() + 1,
                selector,
            });
        }
        out
    }

    /// The label matchers of a selector: `(label, literal values)`. `a="x"|"y"` (the docs'
    /// way to list values) and `a=~"x|y"` both give `x` and `y`; values that are patterns or
    /// dashboard variables are left out.
    fn matchers(selector: &str) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        let mut item = String::new();
        let mut quoted = false;
        for c in selector.chars().chain([',']) {
            match c {
                '"' => {
                    quoted = !quoted;
                    item.push(c);
                }
                ',' if !quoted => {
                    let text = std::mem::take(&mut item);
                    let text = text.trim();
                    let name: String = text.chars().take_while(|c| is_name_char(*c)).collect();
                    if name.is_empty() {
                        continue;
                    }
                    let values = text[name.len()..]
                        .split('"')
                        .skip(1)
                        .step_by(2)
                        .flat_map(|v| v.split('|'))
                        .filter(|v| {
                            !v.is_empty() && !v.contains(['$', '*', '.', '+', '[', '(', '\\'])
                        })
                        .map(str::to_owned)
                        .collect();
                    out.push((name, values));
                }
                _ => item.push(c),
            }
        }
        out
    }

    /// How many lines a table may start below the mention of the metric whose label it
    /// lists.
    const TABLE_AFTER_MENTION_LINES: usize = 3;

    /// Values a document's table lists for a label but the code does not have. A table
    /// whose first column is headed by a label (`` | `reason` | rule | ``) within a few
    /// lines after a metric's mention lists that label's values in its first cells (a
    /// trailing `*` stands for every value with that prefix).
    fn table_errors(
        text: &str,
        found: &[Mention],
        known: &BTreeMap<String, Vec<LabelDoc>>,
    ) -> Vec<(usize, String)> {
        let lines: Vec<&str> = text.lines().collect();
        let mut out = Vec::new();
        for (i, pair) in lines.windows(2).enumerate() {
            let header_line = i + 1;
            if !(pair[0].starts_with("| `") && pair[1].starts_with("| ---")) {
                continue;
            }
            let label = pair[0].split('`').nth(1).unwrap_or_default();
            let metric = found.iter().rev().find(|m| {
                m.line <= header_line && header_line - m.line <= TABLE_AFTER_MENTION_LINES
            });
            let Some(m) = metric else { continue };
            let Some(doc) = known
                .get(&m.name)
                .and_then(|ls| ls.iter().find(|l| l.name == label))
            else {
                out.push((header_line, format!("{} has no label {label}", m.name)));
                continue;
            };
            let Some(allowed) = &doc.values else { continue };
            for (j, row) in lines.iter().enumerate().skip(i + 2) {
                if !row.starts_with('|') {
                    break;
                }
                let cell = row.split('|').nth(1).unwrap_or_default();
                for v in cell.split('`').skip(1).step_by(2) {
                    let ok = match v.strip_suffix('*') {
                        Some(prefix) => allowed.iter().any(|a| a.starts_with(prefix)),
                        None => allowed.contains(&v),
                    };
                    if !ok {
                        out.push((
                            j + 1,
                            format!(
                                "{}{{{label}}} has no value {v:?} (it has {allowed:?})",
                                m.name
                            ),
                        ));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn a_table_of_label_values_is_checked_against_the_metric_it_follows() {
        let known = queryable();
        let text = "counted in `tidegate_publish_refused_total{protocol=\"srt\",reason}`:\n\n\
                    | `reason` | rule |\n| --- | --- |\n| `busy` | x |\n| `bussy`, `on_publish_*` | y |\n\n";
        let errors = table_errors(text, &mentions(text), &known);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, 6);
        assert!(errors[0].1.contains("\"bussy\""), "{errors:?}");
    }

    #[test]
    fn every_metric_the_docs_rules_and_dashboard_name_exists_with_its_labels_and_values() {
        let root = repo_root();
        let mut files = Vec::new();
        if let Ok(text) = std::fs::read_to_string(root.join("README.md")) {
            files.push((root.join("README.md"), text));
        }
        for dir in ["docs", "deploy", "bench"] {
            text_files(&root.join(dir), &mut files);
        }
        let known = queryable();
        let mut wrong = Vec::new();
        let mut seen = BTreeSet::new();
        for (path, text) in &files {
            let shown = path.strip_prefix(&root).unwrap_or(path).display();
            let found = mentions(text);
            for (line, error) in table_errors(text, &found, &known) {
                wrong.push(format!("{shown}:{line}: {error}"));
            }
            for m in found {
                let Some(labels) = known.get(&m.name) else {
                    wrong.push(format!("{shown}:{}: no metric {}", m.line, m.name));
                    continue;
                };
                seen.insert(m.name.clone());
                for (label, values) in m.selector.as_deref().map(matchers).unwrap_or_default() {
                    if SCRAPE_LABELS.contains(&label.as_str()) {
                        continue;
                    }
                    let Some(doc) = labels.iter().find(|l| l.name == label) else {
                        wrong.push(format!(
                            "{shown}:{}: {} has no label {label}",
                            m.line, m.name
                        ));
                        continue;
                    };
                    let Some(allowed) = &doc.values else { continue };
                    for v in values.iter().filter(|v| !allowed.contains(&v.as_str())) {
                        wrong.push(format!(
                            "{shown}:{}: {}{{{label}}} has no value {v:?} (it has {allowed:?})",
                            m.line, m.name
                        ));
                    }
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "docs name what the code does not export:\n{}",
            wrong.join("\n")
        );
        // The scan found the rules and the README's table, not nothing.
        for name in ["tidegate_stream_status", "tidegate_connections_total"] {
            assert!(seen.contains(name), "the scan did not find {name}");
        }
    }

    #[test]
    fn the_scan_finds_names_selectors_and_values_and_skips_rust_paths() {
        let text = "`tidegate_a_total{protocol=\"srt\",reason=\"x\"|\"y\"}` and\n\
                    tidegate_b{area=~\\\"rtmp|$area\\\"} but not tidegate_server::x or \
                    label_tidegate_io_pool";
        let found = mentions(text);
        let names: Vec<&str> = found.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["tidegate_a_total", "tidegate_b"]);
        assert_eq!(found[1].line, 2);
        let a = matchers(found[0].selector.as_deref().unwrap_or_default());
        assert_eq!(
            a,
            [
                ("protocol".to_owned(), vec!["srt".to_owned()]),
                ("reason".to_owned(), vec!["x".to_owned(), "y".to_owned()]),
            ]
        );
        let b = matchers(found[1].selector.as_deref().unwrap_or_default());
        assert_eq!(b, [("area".to_owned(), vec!["rtmp".to_owned()])]);
        assert_eq!(
            matchers("protocol,reason"),
            [
                ("protocol".to_owned(), vec![]),
                ("reason".to_owned(), vec![])
            ]
        );
    }

    #[test]
    fn the_exposition_declares_exactly_the_registered_metrics() {
        let metrics = Metrics::new();
        let declared: BTreeSet<(String, String)> = metrics
            .encode()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
            .collect();
        let registered: BTreeSet<(String, String)> = metrics
            .docs()
            .iter()
            .map(|d| (d.family(), d.kind.as_str().to_owned()))
            .collect();
        assert_eq!(declared, registered);
        assert_eq!(
            registered.len(),
            metrics.docs().len(),
            "a name registered twice"
        );
    }

    #[test]
    fn label_values_are_unique_within_each_label() {
        for d in Metrics::new().docs() {
            for l in &d.labels {
                let Some(values) = &l.values else { continue };
                let unique: BTreeSet<_> = values.iter().collect();
                assert_eq!(
                    unique.len(),
                    values.len(),
                    "{} {}: {values:?}",
                    d.name,
                    l.name
                );
            }
        }
    }

    #[test]
    fn labels_encode_as_before() {
        let m = Metrics::new();
        m.connection_error(Protocol::Rtmp, ConnectionErrorReason::PrepublishBuffer);
        m.refused(Protocol::Srt, PublishRefusal::MissingStreamid);
        m.connection_refused(Protocol::Srt, Refusal::FdReserve.into());
        m.http_answer(http::StatusCode::NOT_FOUND);
        m.stream_status
            .get_or_create(&StreamStatusLabels {
                tenant: "t".into(),
                stream: "s".into(),
                protocol: Protocol::Srt,
                status: StreamStatus::Reconnecting,
            })
            .set(1);
        let text = m.encode();
        for line in [
            "tidegate_connection_errors_total{protocol=\"rtmp\",reason=\"prepublish_buffer\"} 1",
            "tidegate_publish_refused_total{protocol=\"srt\",tenant=\"unknown\",reason=\"missing_streamid\"} 1",
            "tidegate_connections_refused_total{protocol=\"srt\",reason=\"fd_reserve\"} 1",
            "tidegate_http_requests_total{class=\"4xx\"} 1",
            "tidegate_stream_status{tenant=\"t\",stream=\"s\",protocol=\"srt\",status=\"reconnecting\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn health_statuses_convert_to_the_same_label_values() {
        use tidegate_health::Status;
        for s in [
            Status::Healthy,
            Status::Warning,
            Status::Reconnecting,
            Status::Offline,
        ] {
            assert_eq!(StreamStatus::from(s).as_str(), s.as_str());
        }
    }
}
