//! Every metric the worker exports, named in one place. Labels are bounded: protocol,
//! reason and operation come from fixed sets; stream keys and client addresses never become
//! labels.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Ingest protocols (label values `rtmp`, `srt`).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Protocol {
    /// RTMP and Enhanced RTMP.
    Rtmp,
    /// SRT.
    Srt,
}

impl Protocol {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rtmp => "rtmp",
            Self::Srt => "srt",
        }
    }
}

impl EncodeLabelValue for Protocol {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// `protocol` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    /// The ingest protocol.
    pub protocol: Protocol,
}

/// `protocol` + `reason` labels; `reason` is one of a fixed set of short words.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The ingest protocol.
    pub protocol: Protocol,
    /// Why (fixed vocabulary, e.g. `handshake`, `timeout`, `malformed`, `unsupported_codec`).
    pub reason: &'static str,
}

/// Per-stream labels: tenant, public stream name, protocol. Stream keys and client addresses
/// never become labels; series are removed when the stream's session or the stream ends.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    /// Tenant.
    pub tenant: String,
    /// Public stream name.
    pub stream: String,
    /// Ingest protocol.
    pub protocol: Protocol,
}

/// Per-stream labels plus a status value (one series per status, 1 for the current one).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamStatusLabels {
    /// Tenant.
    pub tenant: String,
    /// Public stream name.
    pub stream: String,
    /// Ingest protocol.
    pub protocol: Protocol,
    /// `healthy`, `warning`, `reconnecting`, `offline`.
    pub status: &'static str,
}

impl StreamStatusLabels {
    /// The labels of `stream` with `status`.
    pub fn of(stream: &StreamLabels, status: &'static str) -> Self {
        Self {
            tenant: stream.tenant.clone(),
            stream: stream.stream.clone(),
            protocol: stream.protocol,
            status,
        }
    }
}

/// `op` label for storage operations.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// `put_segment`, `put_init`, `put_state`, `delete`.
    pub op: &'static str,
}

/// `result` label (fixed vocabulary: webhook `delivered`, `failed`, `dropped`; on-publish
/// `accepted`, `refused`, `unavailable`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// The outcome.
    pub result: &'static str,
}

/// `reason` label alone (fixed vocabulary).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonOnlyLabels {
    /// Why (e.g. `unknown_socket`, `wrong_peer`, `bad_cookie`, `malformed`).
    pub reason: &'static str,
}

/// `area` label of suppressed log lines (`rtmp`, `srt`, `http`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AreaLabels {
    /// The part of the worker whose lines were suppressed.
    pub area: &'static str,
}

/// The worker's metrics.
pub struct Metrics {
    registry: Registry,
    /// Connections accepted.
    pub connections: Family<ProtocolLabels, Counter>,
    /// Connections that ended because of an error, by reason.
    pub connection_errors: Family<ReasonLabels, Counter>,
    /// Publish attempts refused, by reason.
    pub publish_refused: Family<ReasonLabels, Counter>,
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
    pub webhook_deliveries: Family<ResultLabels, Counter>,
    /// Webhook attempts that failed and were scheduled again.
    pub webhook_retries: Counter,
    /// on-publish callback answers: `accepted`, `refused`, `unavailable`.
    pub on_publish_calls: Family<ResultLabels, Counter>,
    // --- ingest limits (issue 10, RTMP side) ---
    /// Ingest connections (or publishes) refused by a cap: `max_connections`, `per_source`,
    /// `max_publishers`.
    pub connections_refused: Family<ReasonLabels, Counter>,
    // --- HTTP connections and requests (issue #10, helper `http`) ---
    /// HTTP connections open now.
    pub http_connections_open: Gauge,
    /// HTTP connections closed at once on accept, by `reason` (`tidegate_limits::Refusal`).
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
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tidegate");
        let connections = Family::<ProtocolLabels, Counter>::default();
        registry.register(
            "connections",
            "Publisher connections accepted",
            connections.clone(),
        );
        let connection_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connection_errors",
            "Publisher connections ended by an error, by reason",
            connection_errors.clone(),
        );
        let publish_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "publish_refused",
            "Publish attempts refused, by reason",
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
        let webhook_deliveries = Family::<ResultLabels, Counter>::default();
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
        let on_publish_calls = Family::<ResultLabels, Counter>::default();
        registry.register(
            "on_publish_calls",
            "on-publish callback answers (accepted, refused, unavailable)",
            on_publish_calls.clone(),
        );
        // --- ingest limits (issue 10, RTMP side) ---
        let connections_refused = Family::<ReasonLabels, Counter>::default();
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
        Self {
            registry,
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
            video_frames_dropped,
            stream_records,
            stream_records_expired,
        }
    }

    /// Counts an ingest connection (or publish) refused by a cap.
    pub fn connection_refused(&self, protocol: Protocol, reason: &'static str) {
        self.connections_refused
            .get_or_create(&ReasonLabels { protocol, reason })
            .inc();
    }

    /// The counter of log lines suppressed in `area`.
    pub fn log_suppressed(&self, area: &'static str) -> Counter {
        self.log_lines_suppressed
            .get_or_create(&AreaLabels { area })
            .clone()
    }

    /// Counts a webhook event's outcome for one URL.
    pub fn webhook_delivery(&self, result: &'static str) {
        self.webhook_deliveries
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts an on-publish callback answer.
    pub fn on_publish_call(&self, result: &'static str) {
        self.on_publish_calls
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts a failed connection.
    pub fn connection_error(&self, protocol: Protocol, reason: &'static str) {
        self.connection_errors
            .get_or_create(&ReasonLabels { protocol, reason })
            .inc();
    }

    /// Counts a refused publish.
    pub fn refused(&self, protocol: Protocol, reason: &'static str) {
        self.publish_refused
            .get_or_create(&ReasonLabels { protocol, reason })
            .inc();
    }

    /// Counts a store failure.
    pub fn store_error(&self, op: &'static str) {
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

// --- HTTP connections and requests (issue #10, helper `http`) ---

/// `reason` label of HTTP refusals (`max_connections`, `per_source`, `fd_reserve`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpRefusalLabels {
    /// Why the connection was closed at once.
    pub reason: &'static str,
}

/// `phase` label of HTTP timeouts (`header`, `idle`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// What the connection was waiting for.
    pub phase: &'static str,
}

/// `class` label of HTTP answers (`1xx` .. `5xx`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    /// The status class.
    pub class: &'static str,
}

impl Metrics {
    /// Counts an HTTP connection closed at once on accept.
    pub fn http_refused(&self, refusal: tidegate_limits::Refusal) {
        self.http_connections_refused
            .get_or_create(&HttpRefusalLabels {
                reason: refusal.as_str(),
            })
            .inc();
    }

    /// Counts an HTTP connection closed by a timeout in `phase` (`header` or `idle`).
    pub fn http_timeout(&self, phase: &'static str) {
        self.http_timeouts
            .get_or_create(&PhaseLabels { phase })
            .inc();
    }

    /// Counts an HTTP answer by its status class.
    pub fn http_answer(&self, status: http::StatusCode) {
        let class = match status.as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.http_requests
            .get_or_create(&ClassLabels { class })
            .inc();
    }
}
