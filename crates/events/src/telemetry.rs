//! Per-stream observation: the health state machine (`tidegate-health`), the per-stream
//! Prometheus series, and the bus of stream events (published, unpublished, status changed,
//! ended) that webhooks and the dashboard consume.
//!
//! Inputs arrive from the ingest drivers (bytes per read, SRT packet counters) and from the
//! publisher (frames, keyframes, video declared / configured / dropped as undecodable,
//! timestamp jumps); the sweeper evaluates every live stream's health once a second
//! ([`Telemetry::tick`]) and turns its status changes into events. `no_video` and
//! `no_keyframe` are also logged once per publish session, in words an operator can act on.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Serialize;
use tidegate_health::{BitrateCap, HealthConfig, HealthEvent, Reason, Status, StreamHealth};
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::metrics::{Metrics, Protocol, StreamLabels, StreamStatusLabels};
use crate::store::StreamId;
use crate::unix_ms;

/// Events buffered for slow subscribers of the bus (a lagging subscriber skips the oldest).
pub const EVENT_BUS_CAPACITY: usize = 1024;

/// What happened to a stream, as webhooks deliver it (`type` is the event name).
#[derive(Debug, Clone, Serialize)]
pub struct StreamEvent {
    /// `stream.published`, `stream.unpublished`, `stream.status_changed`, `stream.ended`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Unix ms.
    pub at_ms: i64,
    /// Tenant.
    pub tenant: String,
    /// Public stream name.
    pub stream: String,
    /// The publish session's epoch.
    pub epoch: u64,
    /// The worker that saw it.
    pub worker: String,
    /// Ingest protocol (`rtmp`, `srt`), when a session is concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<&'static str>,
    /// For `stream.status_changed`: the previous status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Status>,
    /// The status after the event.
    pub status: Status,
    /// Why the stream is in `warning`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<Reason>,
}

/// One stream's observation on this worker (kept across its publish sessions).
pub struct StreamTelemetry {
    id: StreamId,
    health: Mutex<StreamHealth>,
    protocol: Mutex<Option<Protocol>>,
    epoch: AtomicU64,
    bytes: Mutex<Option<Counter>>,
    frames: Mutex<Option<Counter>>,
    /// This session's `tidegate_video_frames_dropped_total` series.
    video_dropped: Mutex<Option<Counter>>,
    /// Which undecodable-video warnings this session already logged ([`VIDEO_WARNED_NO_VIDEO`],
    /// [`VIDEO_WARNED_NO_KEYFRAME`]): each is logged once per session.
    video_warned: AtomicU8,
    /// The tenant wants a stream over its bitrate cap disconnected
    /// ([`StreamTelemetry::set_bitrate_quota`]).
    disconnect_over_bitrate: AtomicBool,
}

/// `video_warned` bit: `no_video` was logged this session.
const VIDEO_WARNED_NO_VIDEO: u8 = 1;
/// `video_warned` bit: `no_keyframe` was logged this session.
const VIDEO_WARNED_NO_KEYFRAME: u8 = 2;

impl StreamTelemetry {
    fn new(id: StreamId, config: HealthConfig) -> Self {
        Self {
            id,
            health: Mutex::new(StreamHealth::new(config, now_ms())),
            protocol: Mutex::new(None),
            epoch: AtomicU64::new(0),
            bytes: Mutex::new(None),
            frames: Mutex::new(None),
            video_dropped: Mutex::new(None),
            video_warned: AtomicU8::new(0),
            disconnect_over_bitrate: AtomicBool::new(false),
        }
    }

    /// The stream's per-stream bitrate quota (its tenant's `max_bitrate_bps`, tolerated for
    /// `over_bitrate_for_s`): above it for longer, the stream turns `warning` with
    /// `over_bitrate_quota`, and with `disconnect` [`StreamTelemetry::over_bitrate_to_disconnect`]
    /// says so. `None` removes the cap.
    pub fn set_bitrate_quota(&self, cap: Option<BitrateCap>, disconnect: bool) {
        self.disconnect_over_bitrate
            .store(disconnect && cap.is_some(), Ordering::Relaxed);
        self.with_health(|h, _| h.set_bitrate_cap(cap));
    }

    /// Incoming bitrate over the last seconds, bits per second (0 when not known).
    pub fn bitrate_bps(&self) -> u64 {
        let now = now_ms();
        self.health.lock().map(|h| h.bitrate_bps(now)).unwrap_or(0)
    }

    /// Whether the stream has stayed over its bitrate quota for longer than allowed and its
    /// tenant wants it disconnected then (the sweeper's health tick kicks it).
    pub fn over_bitrate_to_disconnect(&self) -> bool {
        self.disconnect_over_bitrate.load(Ordering::Relaxed)
            && self
                .health
                .lock()
                .map(|h| h.over_bitrate_quota())
                .unwrap_or(false)
    }

    /// Hands the stream's health state and the current time to `f` (a poisoned lock skips
    /// it: health is advisory, the stream goes on).
    fn with_health(&self, f: impl FnOnce(&mut StreamHealth, u64)) {
        if let Ok(mut h) = self.health.lock() {
            f(&mut h, now_ms());
        }
    }

    /// The next pending event of the stream's health machine (`None` when drained, or when
    /// its lock is poisoned).
    fn poll_health_event(&self) -> Option<HealthEvent> {
        self.health.lock().ok().and_then(|mut h| h.poll_event())
    }

    /// The ingest protocol of the current or last session.
    fn protocol(&self) -> Option<Protocol> {
        self.protocol.lock().ok().and_then(|p| *p)
    }

    /// Bytes received from this stream's publisher (called per socket read or datagram).
    pub fn note_bytes(&self, n: u64) {
        self.with_health(|h, now| h.handle_bytes(now, n));
        add_to(&self.bytes, n);
    }

    /// SRT packet counter deltas and the current RTT.
    pub fn note_packets(&self, metrics: &Metrics, delta: PacketDelta, rtt: std::time::Duration) {
        self.with_health(|h, now| {
            h.handle_packets(
                now,
                delta.received,
                delta.lost,
                delta.dropped,
                delta.retransmitted,
            )
        });
        let labels = StreamLabels {
            tenant: self.id.tenant.clone(),
            stream: self.id.name.clone(),
            protocol: Protocol::Srt,
        };
        metrics
            .srt_received
            .get_or_create(&labels)
            .inc_by(delta.received);
        metrics.srt_lost.get_or_create(&labels).inc_by(delta.lost);
        metrics
            .srt_dropped
            .get_or_create(&labels)
            .inc_by(delta.dropped);
        metrics
            .srt_retransmitted
            .get_or_create(&labels)
            .inc_by(delta.retransmitted);
        metrics
            .srt_rtt
            .get_or_create(&labels)
            .set(rtt.as_secs_f64());
    }

    /// One media frame went into the packager.
    pub fn note_frame(&self, video: bool, keyframe: bool) {
        add_to(&self.frames, 1);
        if video && keyframe {
            self.with_health(|h, now| h.handle_keyframe(now));
        }
    }

    /// The session declares a video track or sent its first video frame, decodable or not:
    /// arms the `no_video` and `no_keyframe` rules. (The publisher calls it once a session.)
    pub fn note_video_track(&self) {
        self.with_health(|h, now| h.handle_video_track(now));
    }

    /// The video's decoder configuration (parameter sets, sequence header) arrived.
    pub fn note_video_config(&self) {
        self.with_health(|h, now| h.handle_video_config(now));
    }

    /// `n` video frames were dropped: undecodable (no configuration, no keyframe yet) or
    /// refused by the packager.
    pub fn note_video_dropped(&self, n: u64) {
        add_to(&self.video_dropped, n);
    }

    /// Video frames dropped this session (what the series says).
    fn video_dropped_count(&self) -> u64 {
        self.video_dropped
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(Counter::get))
            .unwrap_or(0)
    }

    /// The publisher's timeline jumped.
    pub fn note_timestamp_jump(&self) {
        self.with_health(|h, now| h.handle_timestamp_jump(now));
    }

    /// Another encoder tried to take the key.
    pub fn note_competing_publisher(&self) {
        self.with_health(|h, now| h.handle_competing_publisher(now));
    }

    /// What the holder of a live stream publishes with its lease (see
    /// [`crate::store::StreamRecord::holder`]).
    pub fn holder_figures(&self) -> Option<crate::store::HolderFigures> {
        let now = now_ms();
        let protocol = self.protocol().map(|p| protocol_name(p).to_owned());
        let h = self.health.lock().ok()?;
        Some(crate::store::HolderFigures {
            at_ms: unix_ms(),
            status: h.status(),
            reasons: h.reasons().to_vec(),
            bitrate_bps: h.bitrate_bps(now),
            protocol,
            packets: h.packet_totals(),
            reconnects: h.reconnects(),
            status_since_ms: h.status_since_ms(),
        })
    }

    /// Status, reasons, current and average bitrate, reconnects.
    pub fn snapshot(&self) -> HealthSnapshot {
        let now = now_ms();
        match self.health.lock() {
            Ok(h) => HealthSnapshot {
                status: h.status(),
                reasons: h.reasons().to_vec(),
                bitrate_bps: h.bitrate_bps(now),
                average_bitrate_bps: h.average_bitrate_bps(now),
                reconnects: h.reconnects(),
                bytes: h.bytes_total(),
                history: h.history().cloned().collect(),
                protocol: self.protocol().map(protocol_name),
                status_since_ms: h.status_since_ms(),
                connected_since_ms: h.connected_since_ms(),
                packets: h.packet_totals(),
            },
            Err(_) => HealthSnapshot::default(),
        }
    }
}

/// SRT packet counters since the last report.
#[derive(Debug, Clone, Copy, Default)]
pub struct PacketDelta {
    /// Data packets received.
    pub received: u64,
    /// Packets detected lost.
    pub lost: u64,
    /// Packets dropped (too late).
    pub dropped: u64,
    /// Retransmitted packets received.
    pub retransmitted: u64,
}

/// A stream's health as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct HealthSnapshot {
    /// Current status.
    pub status: Status,
    /// Why `warning`.
    pub reasons: Vec<Reason>,
    /// Incoming bitrate over the last seconds.
    pub bitrate_bps: u64,
    /// Average incoming bitrate over the relative window.
    pub average_bitrate_bps: u64,
    /// Publisher reconnects seen by this worker.
    pub reconnects: u64,
    /// Bytes received by this worker.
    pub bytes: u64,
    /// Recent health events (oldest first).
    pub history: Vec<HealthEvent>,
    /// Ingest protocol of the current or last session.
    pub protocol: Option<&'static str>,
    /// Unix ms since which the current status holds.
    pub status_since_ms: u64,
    /// Unix ms since which the current publisher is connected (`None` while none is).
    pub connected_since_ms: Option<u64>,
    /// Cumulative SRT packet counters (all zero for RTMP).
    pub packets: tidegate_health::PacketTotals,
}

impl Default for HealthSnapshot {
    fn default() -> Self {
        Self {
            status: Status::Offline,
            reasons: Vec::new(),
            bitrate_bps: 0,
            average_bitrate_bps: 0,
            reconnects: 0,
            bytes: 0,
            history: Vec::new(),
            protocol: None,
            status_since_ms: 0,
            connected_since_ms: None,
            packets: tidegate_health::PacketTotals::default(),
        }
    }
}

fn now_ms() -> u64 {
    u64::try_from(unix_ms()).unwrap_or(0)
}

fn protocol_name(p: Protocol) -> &'static str {
    p.as_str()
}

/// Adds `n` to this session's series in `slot` (none between sessions; a poisoned lock
/// skips it: the series is advisory).
fn add_to(slot: &Mutex<Option<Counter>>, n: u64) {
    if let Ok(c) = slot.lock() {
        if let Some(c) = c.as_ref() {
            c.inc_by(n);
        }
    }
}

/// Points `slot` at this session's series (`Some`) or at none (`None`, the session ended).
fn set_series(slot: &Mutex<Option<Counter>>, series: Option<Counter>) {
    if let Ok(mut c) = slot.lock() {
        *c = series;
    }
}

/// Every stream's telemetry on this worker, and the event bus.
pub struct Telemetry {
    metrics: Arc<Metrics>,
    config: HealthConfig,
    /// Tenants whose thresholds differ from `config` (the file's at start, then the
    /// tenants' settings as the shared state holds them: [`Telemetry::set_tenant_health`]).
    tenant_config: std::sync::RwLock<std::collections::HashMap<String, HealthConfig>>,
    /// The tenants' own webhooks ([`Telemetry::set_tenant_hooks`]), for the dispatcher.
    tenant_hooks: tokio::sync::watch::Sender<crate::webhooks::TenantHookMap>,
    worker: String,
    events: broadcast::Sender<StreamEvent>,
}

impl Telemetry {
    /// A telemetry hub with server-wide health thresholds.
    pub fn new(metrics: Arc<Metrics>, config: HealthConfig, worker: String) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUS_CAPACITY);
        Self {
            metrics,
            config,
            tenant_config: std::sync::RwLock::default(),
            tenant_hooks: tokio::sync::watch::Sender::default(),
            worker,
            events,
        }
    }

    /// Health thresholds per tenant, for the tenants that override the server's.
    #[must_use]
    pub fn with_tenant_health(
        self,
        tenants: std::collections::HashMap<String, HealthConfig>,
    ) -> Self {
        self.set_tenant_health(tenants);
        self
    }

    /// Replaces the thresholds of the tenants that override the server's (the tenants'
    /// settings changed). A stream takes its tenant's at its next publish session.
    pub fn set_tenant_health(&self, tenants: std::collections::HashMap<String, HealthConfig>) {
        if let Ok(mut t) = self.tenant_config.write() {
            *t = tenants;
        }
    }

    /// The server's thresholds (what a tenant's overrides are laid over).
    pub fn default_health(&self) -> &HealthConfig {
        &self.config
    }

    /// The health thresholds that apply to `tenant`'s streams.
    pub fn health_config(&self, tenant: &str) -> HealthConfig {
        self.tenant_config
            .read()
            .ok()
            .and_then(|t| t.get(tenant).cloned())
            .unwrap_or_else(|| self.config.clone())
    }

    /// Replaces the tenants' own webhooks (the dispatcher picks them up with the next event).
    pub fn set_tenant_hooks(&self, hooks: crate::webhooks::TenantHookMap) {
        self.tenant_hooks.send_replace(hooks);
    }

    /// The tenants' own webhooks as they change, for the dispatcher.
    pub fn tenant_hooks(&self) -> tokio::sync::watch::Receiver<crate::webhooks::TenantHookMap> {
        self.tenant_hooks.subscribe()
    }

    /// A new stream's telemetry.
    pub fn stream(&self, id: &StreamId) -> Arc<StreamTelemetry> {
        Arc::new(StreamTelemetry::new(
            id.clone(),
            self.health_config(&id.tenant),
        ))
    }

    /// Subscribes to stream events.
    pub fn subscribe(&self) -> broadcast::Receiver<StreamEvent> {
        self.events.subscribe()
    }

    fn labels(t: &StreamTelemetry, protocol: Protocol) -> StreamLabels {
        StreamLabels {
            tenant: t.id.tenant.clone(),
            stream: t.id.name.clone(),
            protocol,
        }
    }

    fn emit(
        &self,
        t: &StreamTelemetry,
        kind: &'static str,
        from: Option<Status>,
        status: Status,
        reasons: Vec<Reason>,
    ) {
        let protocol = t.protocol().map(protocol_name);
        let event = StreamEvent {
            kind,
            at_ms: unix_ms(),
            tenant: t.id.tenant.clone(),
            stream: t.id.name.clone(),
            epoch: t.epoch.load(Ordering::Relaxed),
            worker: self.worker.clone(),
            protocol,
            from,
            status,
            reasons,
        };
        // No subscriber is fine: nobody listens.
        let _ = self.events.send(event);
    }

    /// A publish session started.
    pub fn session_started(&self, t: &StreamTelemetry, protocol: Protocol, epoch: u64) {
        if let Ok(mut p) = t.protocol.lock() {
            *p = Some(protocol);
        }
        t.epoch.store(epoch, Ordering::Relaxed);
        // The tenant's thresholds as they are now (its settings may have changed since the
        // stream was first seen).
        let config = self.health_config(&t.id.tenant);
        t.with_health(|h, _| {
            if *h.config() != config {
                h.set_config(config);
            }
        });
        let labels = Self::labels(t, protocol);
        let series =
            |family: &Family<StreamLabels, Counter>| Some(family.get_or_create(&labels).clone());
        set_series(&t.bytes, series(&self.metrics.stream_bytes));
        set_series(&t.frames, series(&self.metrics.stream_frames));
        set_series(&t.video_dropped, series(&self.metrics.video_frames_dropped));
        t.video_warned.store(0, Ordering::Relaxed);
        let (from, status) = match t.health.lock() {
            Ok(mut h) => {
                let from = h.status();
                if from == Status::Reconnecting {
                    self.metrics.reconnects.get_or_create(&labels).inc();
                }
                h.handle_connected(now_ms());
                (from, h.status())
            }
            Err(_) => return,
        };
        self.set_status_series(t, protocol, status);
        info!(stream = %t.id, epoch, "stream.published");
        self.emit(t, "stream.published", Some(from), status, Vec::new());
        self.drain_health(t);
    }

    /// A publish session ended (the stream enters its reconnect window). `superseded`: the
    /// session lost its stream to a newer epoch (a takeover on another worker, or the API
    /// ended it): the worker that made that transition reports it, so this one emits no
    /// event (each event is sent once across the cluster).
    pub fn session_ended(&self, t: &StreamTelemetry, superseded: bool) {
        let status = match t.health.lock() {
            Ok(mut h) => {
                h.handle_disconnected(now_ms());
                h.status()
            }
            Err(_) => return,
        };
        let protocol = t.protocol();
        if let Some(protocol) = protocol {
            let labels = Self::labels(t, protocol);
            self.metrics.stream_bitrate.remove(&labels);
            self.metrics.stream_bytes.remove(&labels);
            self.metrics.stream_frames.remove(&labels);
            self.metrics.video_frames_dropped.remove(&labels);
            self.metrics.srt_received.remove(&labels);
            self.metrics.srt_lost.remove(&labels);
            self.metrics.srt_dropped.remove(&labels);
            self.metrics.srt_retransmitted.remove(&labels);
            self.metrics.srt_rtt.remove(&labels);
            self.set_status_series(t, protocol, status);
        }
        set_series(&t.bytes, None);
        set_series(&t.frames, None);
        set_series(&t.video_dropped, None);
        if superseded {
            info!(stream = %t.id, "session superseded by a newer epoch; no event from this worker");
            self.drain_health_quietly(t);
        } else {
            self.emit(t, "stream.unpublished", None, status, Vec::new());
            self.drain_health(t);
        }
    }

    /// The stream ended (reconnect window over): its series go away.
    pub fn stream_ended(&self, t: &StreamTelemetry) {
        self.stream_gone(t, true);
    }

    /// The stream is over on this worker: its series go away; `announce` emits
    /// `stream.ended` (not when another worker holds the stream now).
    pub fn stream_gone(&self, t: &StreamTelemetry, announce: bool) {
        if let Ok(mut h) = t.health.lock() {
            h.handle_ended(now_ms());
        }
        if announce {
            self.emit(t, "stream.ended", None, Status::Offline, Vec::new());
            self.drain_health(t);
        } else {
            self.drain_health_quietly(t);
        }
        // After the status change above, which sets the status series once more.
        let protocol = t.protocol();
        if let Some(protocol) = protocol {
            let labels = Self::labels(t, protocol);
            for status in ALL_STATUSES {
                self.metrics
                    .stream_status
                    .remove(&StreamStatusLabels::of(&labels, status));
            }
            self.metrics.reconnects.remove(&labels);
        }
    }

    /// Evaluates a live stream's health and refreshes its gauges (once a second).
    pub fn tick(&self, t: &StreamTelemetry) {
        let now = now_ms();
        let bitrate = match t.health.lock() {
            Ok(mut h) => {
                h.handle_timeout(now);
                h.bitrate_bps(now)
            }
            Err(_) => return,
        };
        if let Some(protocol) = t.protocol() {
            let labels = Self::labels(t, protocol);
            self.metrics
                .stream_bitrate
                .get_or_create(&labels)
                .set(i64::try_from(bitrate).unwrap_or(i64::MAX));
        }
        self.drain_health(t);
    }

    fn set_status_series(&self, t: &StreamTelemetry, protocol: Protocol, status: Status) {
        let labels = Self::labels(t, protocol);
        for s in ALL_STATUSES {
            self.metrics
                .stream_status
                .get_or_create(&StreamStatusLabels::of(&labels, s))
                .set(i64::from(s == status));
        }
    }

    /// Consumes the health machine's pending events without emitting them (series are
    /// still updated).
    fn drain_health_quietly(&self, t: &StreamTelemetry) {
        while let Some(ev) = t.poll_health_event() {
            if let HealthEvent::StatusChanged { to, .. } = ev {
                if let Some(protocol) = t.protocol() {
                    self.set_status_series(t, protocol, to);
                }
            }
        }
    }

    fn drain_health(&self, t: &StreamTelemetry) {
        while let Some(ev) = t.poll_health_event() {
            let (HealthEvent::StatusChanged { reasons, .. }
            | HealthEvent::ReasonsChanged { reasons, .. }) = &ev;
            self.log_undecodable_video(t, reasons);
            if let HealthEvent::StatusChanged {
                from, to, reasons, ..
            } = ev
            {
                let codes: Vec<&str> = reasons.iter().map(Reason::code).collect();
                if to == Status::Warning {
                    warn!(stream = %t.id, from = %from, reasons = ?codes, "stream status: warning");
                } else {
                    info!(stream = %t.id, from = %from, to = %to, "stream status changed");
                }
                if let Some(protocol) = t.protocol() {
                    self.set_status_series(t, protocol, to);
                }
                self.emit(t, "stream.status_changed", Some(from), to, reasons);
            }
        }
    }
}

impl Telemetry {
    /// Says once per session, in words an operator can act on, that a stream's video cannot
    /// be decoded (`no_video`) or has no keyframe (`no_keyframe`).
    fn log_undecodable_video(&self, t: &StreamTelemetry, reasons: &[Reason]) {
        let protocol = t.protocol().map(protocol_name);
        for r in reasons {
            let (bit, for_ms) = match r {
                Reason::NoVideo { for_ms } => (VIDEO_WARNED_NO_VIDEO, *for_ms),
                Reason::NoKeyframe { for_ms } => (VIDEO_WARNED_NO_KEYFRAME, *for_ms),
                _ => continue,
            };
            if t.video_warned.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
                continue;
            }
            let dropped = t.video_dropped_count();
            let advice = if bit == VIDEO_WARNED_NO_VIDEO {
                "no decodable video: the publisher declares or sends video but no parameter \
                 sets (SPS/PPS, or an RTMP sequence header) arrived, so every video frame is \
                 dropped and the playlist is audio-only (GStreamer over SRT: put \
                 `h264parse config-interval=-1` before `mpegtsmux`)"
            } else {
                "no video keyframe: the video has its parameter sets but no keyframe \
                 arrived in time; players cannot start decoding it and segments are only \
                 cut at keyframes (set the encoder's keyframe interval to about 2 s)"
            };
            warn!(
                stream = %t.id,
                protocol,
                for_ms,
                video_frames_dropped = dropped,
                "{advice}"
            );
        }
    }
}

const ALL_STATUSES: [Status; 4] = [
    Status::Healthy,
    Status::Warning,
    Status::Reconnecting,
    Status::Offline,
];
