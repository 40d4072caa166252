//! [`StreamHealth`]: the per-stream state machine.

use std::collections::VecDeque;

use crate::config::{fraction, ms, window_secs, HealthConfig};
use crate::ring::{Bucket, Ring};
use crate::status::{HealthEvent, PacketTotals, Reason, Status, REASON_CODES};

/// Rules are evaluated once per second of the driver's clock while a publisher is connected
/// (aligned to whole seconds, the granularity of the bitrate ring).
pub const EVALUATION_INTERVAL_MS: u64 = 1000;

/// Events kept for the API's "recent health events" ([`StreamHealth::history`]).
pub const HISTORY_LEN: usize = 100;

/// Events queued for [`StreamHealth::poll_event`]; a driver that never drains loses the
/// oldest beyond this (they stay in the history while it has room).
pub const MAX_PENDING_EVENTS: usize = 100;

/// Window of [`StreamHealth::bitrate_bps`], the "current" bitrate shown by the API and
/// metrics, in complete seconds.
pub const BITRATE_WINDOW_SECS: u64 = 5;

/// Fewer packets than this in the packet window give no drop or loss rate: 1 dropped out of
/// 3 is noise, not a 33 % drop rate. (A 1 Mbps SRT stream sends about 90 packets a second.)
pub const MIN_PACKETS_FOR_RATE: u64 = 100;

/// Number of reason kinds (slots).
const KINDS: usize = REASON_CODES.len();

/// The configuration in the units the rules use, clamped to what the ring can answer.
#[derive(Debug, Clone)]
struct Limits {
    min_bitrate_bps: Option<u64>,
    relative_fraction: f64,
    relative_window_secs: u64,
    low_for_secs: u64,
    warmup_ms: u64,
    packet_window_secs: u64,
    max_drop_rate: f64,
    max_loss_rate: f64,
    max_keyframe_ms: u64,
    recover_ms: u64,
    recover_secs: u64,
    min_dwell_ms: u64,
}

impl Limits {
    fn from(c: &HealthConfig) -> Self {
        Self {
            min_bitrate_bps: c.min_bitrate_bps.filter(|&v| v > 0),
            relative_fraction: fraction(c.relative_fraction),
            relative_window_secs: window_secs(c.relative_window),
            low_for_secs: window_secs(c.low_bitrate_for),
            warmup_ms: ms(c.warmup),
            packet_window_secs: window_secs(c.packet_window),
            max_drop_rate: fraction(c.max_drop_rate),
            max_loss_rate: fraction(c.max_loss_rate),
            max_keyframe_ms: ms(c.max_keyframe_interval).max(1),
            recover_ms: ms(c.recover_after),
            recover_secs: window_secs(c.recover_after),
            min_dwell_ms: ms(c.min_dwell),
        }
    }
}

/// One reason's hysteresis state.
#[derive(Debug, Clone)]
struct Slot {
    /// The reason is raised.
    active: bool,
    /// Whether its condition held at the last evaluation.
    cond: bool,
    /// Since when `cond` has had its current value (ms).
    since_ms: u64,
    /// The values of the last evaluation at which the condition held.
    value: Reason,
}

impl Slot {
    fn new(value: Reason) -> Self {
        Self {
            active: false,
            cond: false,
            since_ms: 0,
            value,
        }
    }

    /// Raises the reason while the condition holds; clears it once the condition has been
    /// false for `recover_ms`.
    fn settle(&mut self, now_ms: u64, recover_ms: u64) {
        if self.cond {
            self.active = true;
        } else if self.active && now_ms.saturating_sub(self.since_ms) >= recover_ms {
            self.active = false;
        }
    }

    /// Records the condition's value now, remembering when it last changed.
    fn observe(&mut self, cond: bool, now_ms: u64) {
        if cond != self.cond {
            self.cond = cond;
            self.since_ms = now_ms;
        }
    }
}

/// One slot per reason kind, each named, so that no rule can look up a slot that is not
/// there.
#[derive(Debug, Clone)]
struct Slots {
    low_bitrate: Slot,
    high_drop_rate: Slot,
    high_loss_rate: Slot,
    no_keyframe: Slot,
    timestamp_jump: Slot,
    competing_publishers: Slot,
    no_video: Slot,
    over_bitrate_quota: Slot,
}

impl Slots {
    fn new() -> Self {
        Self {
            low_bitrate: Slot::new(Reason::LowBitrate {
                bps: 0,
                threshold_bps: 0,
            }),
            high_drop_rate: Slot::new(Reason::HighDropRate {
                rate: 0.0,
                threshold: 0.0,
            }),
            high_loss_rate: Slot::new(Reason::HighLossRate {
                rate: 0.0,
                threshold: 0.0,
            }),
            no_keyframe: Slot::new(Reason::NoKeyframe { for_ms: 0 }),
            timestamp_jump: Slot::new(Reason::TimestampJump),
            competing_publishers: Slot::new(Reason::CompetingPublishers),
            no_video: Slot::new(Reason::NoVideo { for_ms: 0 }),
            over_bitrate_quota: Slot::new(Reason::OverBitrateQuota { bps: 0, max_bps: 0 }),
        }
    }

    /// Every slot, in reporting order ([`REASON_CODES`]).
    fn iter(&self) -> impl Iterator<Item = &Slot> {
        [
            &self.low_bitrate,
            &self.high_drop_rate,
            &self.high_loss_rate,
            &self.no_keyframe,
            &self.timestamp_jump,
            &self.competing_publishers,
            &self.no_video,
            &self.over_bitrate_quota,
        ]
        .into_iter()
    }
}

/// Bits per second of `bytes` received over `secs` seconds (0 for an empty window).
fn bps(bytes: u64, secs: u64) -> u64 {
    bytes.saturating_mul(8).checked_div(secs).unwrap_or(0)
}

/// The health of one stream: a sans-IO state machine on a millisecond clock the driver owns
/// (`now_ms`, any monotonic origin; it never reads a clock itself).
///
/// Driver order, one task per stream:
///
/// 1. feed what happens as it happens: [`handle_connected`](Self::handle_connected) /
///    [`handle_disconnected`](Self::handle_disconnected) /
///    [`handle_ended`](Self::handle_ended) from the stream lifecycle;
///    [`handle_bytes`](Self::handle_bytes) per read (O(1), no allocation),
///    [`handle_packets`](Self::handle_packets) with SRT counter deltas,
///    [`handle_video_track`](Self::handle_video_track),
///    [`handle_video_config`](Self::handle_video_config) and
///    [`handle_keyframe`](Self::handle_keyframe) from the demuxed media,
///    [`handle_timestamp_jump`](Self::handle_timestamp_jump) and
///    [`handle_competing_publisher`](Self::handle_competing_publisher);
/// 2. when the clock reaches [`poll_timeout`](Self::poll_timeout), call
///    [`handle_timeout`](Self::handle_timeout) (it evaluates the rules);
/// 3. after any input, drain [`poll_event`](Self::poll_event) until `None` and forward each
///    event to webhooks, metrics and logs; re-arm the timer from `poll_timeout`.
#[derive(Debug, Clone)]
pub struct StreamHealth {
    config: HealthConfig,
    limits: Limits,
    status: Status,
    status_since_ms: u64,
    /// When the last `healthy` ⇄ `warning` change happened (anti-flap dwell); cleared by
    /// lifecycle changes.
    last_flip_ms: Option<u64>,
    /// Set while a publisher is connected.
    connected_at_ms: Option<u64>,
    /// First complete second of the current (or last) connection.
    start_sec: u64,
    ring: Ring,
    slots: Slots,
    /// Threshold fixed when the low-bitrate reason was raised (relative mode): a stalled
    /// stream's own average decays towards zero, and must not clear its own warning.
    low_threshold_bps: u64,
    /// Reasons reported with the current status (capacity reserved up front).
    reasons: Vec<Reason>,
    /// Last keyframe, or when video was announced (or became decodable, before the first
    /// keyframe); `None` = no video seen this connection.
    keyframe_ref_ms: Option<u64>,
    /// When this connection's video track was first declared or seen; `None` = none yet.
    video_since_ms: Option<u64>,
    /// When this connection's video first had a decoder configuration (or a keyframe came
    /// through); `None` = not yet.
    video_config_ms: Option<u64>,
    /// A keyframe arrived on this connection.
    keyframe_seen: bool,
    next_eval_ms: Option<u64>,
    pending: VecDeque<HealthEvent>,
    history: VecDeque<HealthEvent>,
    totals: PacketTotals,
    bytes_total: u64,
    reconnects: u64,
    /// The tenant's per-stream bitrate cap, if any ([`StreamHealth::set_bitrate_cap`]).
    bitrate_cap: Option<BitrateCap>,
}

/// A per-stream bitrate cap: a stream whose bitrate over the last
/// [`BITRATE_WINDOW_SECS`] seconds stays above `max_bps` for `over_for_ms` is flagged
/// `over_bitrate_quota`; the reason clears once it has been at or under the cap for
/// `recover-after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitrateCap {
    /// The cap, bits per second.
    pub max_bps: u64,
    /// How long the bitrate may stay above it before the stream is flagged, ms.
    pub over_for_ms: u64,
}

impl StreamHealth {
    /// A stream that has no publisher yet: `offline`.
    pub fn new(config: HealthConfig, now_ms: u64) -> Self {
        let limits = Limits::from(&config);
        Self {
            config,
            limits,
            status: Status::Offline,
            status_since_ms: now_ms,
            last_flip_ms: None,
            connected_at_ms: None,
            start_sec: now_ms.div_ceil(1000),
            ring: Ring::new(now_ms / 1000),
            slots: Slots::new(),
            low_threshold_bps: 0,
            reasons: Vec::with_capacity(KINDS),
            keyframe_ref_ms: None,
            video_since_ms: None,
            video_config_ms: None,
            keyframe_seen: false,
            next_eval_ms: None,
            pending: VecDeque::with_capacity(MAX_PENDING_EVENTS),
            history: VecDeque::with_capacity(HISTORY_LEN),
            totals: PacketTotals::default(),
            bytes_total: 0,
            reconnects: 0,
            bitrate_cap: None,
        }
    }

    /// Sets (or, with `None`, removes) the stream's bitrate cap, from its tenant's quotas.
    /// It holds across connections until changed; removing it clears its reason at the next
    /// evaluation.
    pub fn set_bitrate_cap(&mut self, cap: Option<BitrateCap>) {
        self.bitrate_cap = cap;
    }

    /// Whether the stream is over its bitrate cap for longer than the cap allows (the
    /// `over_bitrate_quota` condition is raised), whatever the reported status says while
    /// the anti-flap dwell holds it: the driver disconnects on this when the tenant says so.
    pub fn over_bitrate_quota(&self) -> bool {
        self.status.is_live() && self.slots.over_bitrate_quota.active
    }

    /// Replaces the thresholds (a tenant's configuration was reloaded). Raised reasons stay
    /// until the next evaluation decides under the new thresholds.
    pub fn set_config(&mut self, config: HealthConfig) {
        self.limits = Limits::from(&config);
        self.config = config;
    }

    /// The thresholds in force.
    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    // ---- inputs: lifecycle ------------------------------------------------------------

    /// A publisher connected (first time, or back within the reconnect window): the stream is
    /// `healthy` from now, with a fresh bitrate history. Call it before feeding the new
    /// connection's bytes and media.
    pub fn handle_connected(&mut self, now_ms: u64) {
        if self.status == Status::Reconnecting {
            self.reconnects = self.reconnects.saturating_add(1);
        }
        self.ring.reset(now_ms / 1000);
        self.start_sec = now_ms.div_ceil(1000);
        self.connected_at_ms = Some(now_ms);
        self.clear_reasons();
        self.next_eval_ms = Some(Self::next_tick(now_ms));
        self.transition(Status::Healthy, now_ms);
    }

    /// The publisher's connection dropped (or its worker died): `reconnecting`, reasons
    /// cleared. Ignored unless a publisher was connected.
    pub fn handle_disconnected(&mut self, now_ms: u64) {
        if !self.status.is_live() {
            return;
        }
        self.connected_at_ms = None;
        self.clear_reasons();
        self.next_eval_ms = None;
        self.transition(Status::Reconnecting, now_ms);
    }

    /// The stream ended (no publisher for the whole reconnect window, or it was stopped):
    /// `offline`.
    pub fn handle_ended(&mut self, now_ms: u64) {
        self.connected_at_ms = None;
        self.clear_reasons();
        self.next_eval_ms = None;
        self.transition(Status::Offline, now_ms);
    }

    // ---- inputs: traffic ----------------------------------------------------------------

    /// `bytes` of publisher payload arrived. Call per read or packet: O(1) amortised, never
    /// allocates (a fixed ring of per-second buckets).
    pub fn handle_bytes(&mut self, now_ms: u64, bytes: u64) {
        self.bytes_total = self.bytes_total.saturating_add(bytes);
        self.ring.add(
            now_ms / 1000,
            &Bucket {
                bytes,
                ..Bucket::default()
            },
        );
    }

    /// SRT receiver counters since the previous call (deltas, not totals): packets received,
    /// detected lost (recovered or not), dropped (too late / never arrived) and retransmitted.
    pub fn handle_packets(
        &mut self,
        now_ms: u64,
        received: u64,
        lost: u64,
        dropped: u64,
        retransmitted: u64,
    ) {
        let t = &mut self.totals;
        t.received = t.received.saturating_add(received);
        t.lost = t.lost.saturating_add(lost);
        t.dropped = t.dropped.saturating_add(dropped);
        t.retransmitted = t.retransmitted.saturating_add(retransmitted);
        self.ring.add(
            now_ms / 1000,
            &Bucket {
                bytes: 0,
                received,
                lost,
                dropped,
            },
        );
    }

    /// The connection declares a video track (an MPEG-TS PMT, RTMP metadata) or a video
    /// frame arrived, decodable or not: arms the `no_video` rule (no decoder configuration
    /// within `max-keyframe-interval`) and the keyframe rule from now. Repeated calls keep
    /// the first time. (Audio-only streams never call this and are never flagged.)
    pub fn handle_video_track(&mut self, now_ms: u64) {
        if self.video_since_ms.is_none() {
            self.video_since_ms = Some(now_ms);
        }
        if self.keyframe_ref_ms.is_none() {
            self.keyframe_ref_ms = Some(now_ms);
        }
    }

    /// The video's decoder configuration arrived (parameter sets, a sequence header): the
    /// video can be decoded from its next keyframe on. Clears the `no_video` condition; the
    /// keyframe rule counts from now if no keyframe came yet. Also arms both rules.
    pub fn handle_video_config(&mut self, now_ms: u64) {
        self.handle_video_track(now_ms);
        if self.video_config_ms.is_none() {
            self.video_config_ms = Some(now_ms);
            if !self.keyframe_seen {
                self.keyframe_ref_ms = Some(now_ms);
            }
        }
    }

    /// A decodable video keyframe arrived (it implies a decoder configuration; also arms
    /// the keyframe rule).
    pub fn handle_keyframe(&mut self, now_ms: u64) {
        self.handle_video_track(now_ms);
        self.video_config_ms.get_or_insert(now_ms);
        self.keyframe_seen = true;
        self.keyframe_ref_ms = Some(now_ms);
    }

    /// The ingest session saw the publisher's timestamps jump or drift. Raises
    /// `timestamp_jump` at once; it clears `recover-after` after the last jump.
    pub fn handle_timestamp_jump(&mut self, now_ms: u64) {
        self.raise_instant(|s| &mut s.timestamp_jump, now_ms);
    }

    /// Another publisher tried to take the same stream key. Raises `competing_publishers` at
    /// once; it clears `recover-after` after the last attempt.
    pub fn handle_competing_publisher(&mut self, now_ms: u64) {
        self.raise_instant(|s| &mut s.competing_publishers, now_ms);
    }

    /// The timer from [`poll_timeout`](Self::poll_timeout) fired: evaluates the rules. Early
    /// or spurious calls are harmless.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        match self.next_eval_ms {
            Some(t) if now_ms >= t => self.evaluate(now_ms),
            _ => {}
        }
    }

    // ---- outputs ----------------------------------------------------------------------

    /// When [`handle_timeout`](Self::handle_timeout) should next be called: every second
    /// while a publisher is connected, `None` otherwise.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.next_eval_ms
    }

    /// The next event to forward, oldest first.
    pub fn poll_event(&mut self) -> Option<HealthEvent> {
        self.pending.pop_front()
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Since when (driver clock, ms) the current status holds.
    pub fn status_since_ms(&self) -> u64 {
        self.status_since_ms
    }

    /// Since when (driver clock, ms) the current publisher is connected; `None` while none is.
    pub fn connected_since_ms(&self) -> Option<u64> {
        self.connected_at_ms
    }

    /// The reasons of a `warning` status, in a fixed order (empty otherwise). While the
    /// anti-flap dwell holds a `warning` whose reasons have all cleared, the last reported
    /// ones stay.
    pub fn reasons(&self) -> &[Reason] {
        &self.reasons
    }

    /// Incoming bitrate over the last [`BITRATE_WINDOW_SECS`] complete seconds of the current
    /// (or last) connection, bits per second.
    pub fn bitrate_bps(&self, now_ms: u64) -> u64 {
        self.window_bps(now_ms / 1000, BITRATE_WINDOW_SECS)
    }

    /// Incoming bitrate averaged over `relative-window` (complete seconds of the current or
    /// last connection only), bits per second.
    pub fn average_bitrate_bps(&self, now_ms: u64) -> u64 {
        self.window_bps(now_ms / 1000, self.limits.relative_window_secs)
    }

    /// Cumulative SRT packet counters, for metrics.
    pub fn packet_totals(&self) -> PacketTotals {
        self.totals
    }

    /// Cumulative payload bytes received, for metrics.
    pub fn bytes_total(&self) -> u64 {
        self.bytes_total
    }

    /// How many times a publisher came back while the stream was `reconnecting`.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// The last [`HISTORY_LEN`] events, oldest first, for the API's recent health events.
    pub fn history(&self) -> impl Iterator<Item = &HealthEvent> {
        self.history.iter()
    }

    // ---- internals --------------------------------------------------------------------

    fn next_tick(now_ms: u64) -> u64 {
        (now_ms / EVALUATION_INTERVAL_MS)
            .saturating_add(1)
            .saturating_mul(EVALUATION_INTERVAL_MS)
    }

    fn clear_reasons(&mut self) {
        self.slots = Slots::new();
        self.reasons.clear();
        self.low_threshold_bps = 0;
        self.keyframe_ref_ms = None;
        self.video_since_ms = None;
        self.video_config_ms = None;
        self.keyframe_seen = false;
        self.last_flip_ms = None;
    }

    fn raise_instant(&mut self, slot: fn(&mut Slots) -> &mut Slot, now_ms: u64) {
        if !self.status.is_live() {
            return;
        }
        let slot = slot(&mut self.slots);
        slot.active = true;
        // The condition is an instant: false again from now on, so the reason clears
        // `recover-after` from the last occurrence.
        slot.cond = false;
        slot.since_ms = now_ms;
        self.evaluate(now_ms);
    }

    /// Average bitrate over the last `secs` complete seconds before `cur_sec`, counting only
    /// seconds of the current connection.
    fn window_bps(&self, cur_sec: u64, secs: u64) -> u64 {
        let from = cur_sec.saturating_sub(secs).max(self.start_sec);
        if from >= cur_sec {
            return 0;
        }
        bps(self.ring.sum(from, cur_sec).bytes, cur_sec - from)
    }

    /// Consecutive complete seconds, ending with the one before `cur_sec` and not before the
    /// connection's first, whose "below `threshold`" equals `low`; at most `limit`.
    fn run(&self, cur_sec: u64, threshold: u64, low: bool, limit: u64) -> u64 {
        let mut n = 0;
        let mut s = cur_sec;
        while n < limit && s > self.start_sec {
            s -= 1;
            if (bps(self.ring.get(s).bytes, 1) < threshold) != low {
                break;
            }
            n += 1;
        }
        n
    }

    fn evaluate(&mut self, now_ms: u64) {
        if !self.status.is_live() {
            self.next_eval_ms = None;
            return;
        }
        self.next_eval_ms = Some(Self::next_tick(now_ms));
        let cur = now_ms / 1000;
        self.rule_low_bitrate(now_ms, cur);
        self.rule_packets(now_ms, cur);
        self.rule_no_video(now_ms);
        self.rule_keyframe(now_ms);
        self.rule_over_bitrate_quota(now_ms, cur);
        let recover_ms = self.limits.recover_ms;
        for s in [
            &mut self.slots.timestamp_jump,
            &mut self.slots.competing_publishers,
        ] {
            s.settle(now_ms, recover_ms);
        }
        self.decide(now_ms);
    }

    fn rule_low_bitrate(&mut self, now_ms: u64, cur: u64) {
        let l = &self.limits;
        let Some(connected_at) = self.connected_at_ms else {
            return;
        };
        if now_ms.saturating_sub(connected_at) < l.warmup_ms {
            return;
        }
        let last_bps = bps(self.ring.get(cur.saturating_sub(1)).bytes, 1);
        if self.slots.low_bitrate.active {
            let threshold = self.low_threshold_bps;
            let ok_run = self.run(cur, threshold, false, l.recover_secs);
            let s = &mut self.slots.low_bitrate;
            if ok_run >= l.recover_secs {
                s.active = false;
            } else if last_bps < threshold {
                s.value = Reason::LowBitrate {
                    bps: last_bps,
                    threshold_bps: threshold,
                };
            }
            return;
        }
        let threshold = match l.min_bitrate_bps {
            Some(abs) => abs,
            None => {
                let avg = self.window_bps(cur, l.relative_window_secs);
                // Truncation is intended: a threshold in whole bits per second.
                (avg as f64 * l.relative_fraction) as u64
            }
        };
        if threshold == 0 {
            // Relative rule without an average (nothing received yet): nothing is "low".
            return;
        }
        if self.run(cur, threshold, true, l.low_for_secs) >= l.low_for_secs {
            self.low_threshold_bps = threshold;
            let s = &mut self.slots.low_bitrate;
            s.active = true;
            s.value = Reason::LowBitrate {
                bps: last_bps,
                threshold_bps: threshold,
            };
        }
    }

    fn rule_packets(&mut self, now_ms: u64, cur: u64) {
        let l = self.limits.clone();
        let from = cur.saturating_sub(l.packet_window_secs).max(self.start_sec);
        let w = if from < cur {
            self.ring.sum(from, cur)
        } else {
            Bucket::default()
        };
        let rate = |bad: u64, good: u64| {
            let total = good.saturating_add(bad);
            (total >= MIN_PACKETS_FOR_RATE).then(|| bad as f64 / total as f64)
        };
        let drop_reason: fn(f64, f64) -> Reason =
            |rate, threshold| Reason::HighDropRate { rate, threshold };
        let loss_reason: fn(f64, f64) -> Reason =
            |rate, threshold| Reason::HighLossRate { rate, threshold };
        for (slot, r, max, reason) in [
            (
                &mut self.slots.high_drop_rate,
                rate(w.dropped, w.received),
                l.max_drop_rate,
                drop_reason,
            ),
            (
                &mut self.slots.high_loss_rate,
                rate(w.lost, w.received),
                l.max_loss_rate,
                loss_reason,
            ),
        ] {
            let cond = r.is_some_and(|r| r > max);
            slot.observe(cond, now_ms);
            if let (true, Some(rate)) = (cond, r) {
                slot.value = reason(rate, max);
            }
            slot.settle(now_ms, l.recover_ms);
        }
    }

    /// `no_video`: a video track declared or seen longer than `max-keyframe-interval` ago
    /// that still has no decoder configuration.
    fn rule_no_video(&mut self, now_ms: u64) {
        let (max, recover_ms) = (self.limits.max_keyframe_ms, self.limits.recover_ms);
        let slot = &mut self.slots.no_video;
        let Some(since) = self.video_since_ms else {
            slot.cond = false;
            slot.active = false;
            return;
        };
        let for_ms = now_ms.saturating_sub(since);
        let cond = self.video_config_ms.is_none() && for_ms > max;
        if cond != slot.cond {
            slot.cond = cond;
            // Since when the condition has its value: the moment the bound passed, or the
            // moment the configuration arrived.
            slot.since_ms = if cond {
                since.saturating_add(max)
            } else {
                self.video_config_ms.unwrap_or(now_ms)
            };
        }
        if cond {
            slot.value = Reason::NoVideo { for_ms };
        }
        slot.settle(now_ms, recover_ms);
    }

    /// `no_keyframe`: decodable video (a configuration exists) without a keyframe for longer
    /// than `max-keyframe-interval`. Video without a configuration is `no_video`'s case.
    fn rule_keyframe(&mut self, now_ms: u64) {
        let (max, recover_ms) = (self.limits.max_keyframe_ms, self.limits.recover_ms);
        let video_config = self.video_config_ms.is_some();
        let slot = &mut self.slots.no_keyframe;
        let Some(reference) = self.keyframe_ref_ms.filter(|_| video_config) else {
            slot.cond = false;
            slot.active = false;
            return;
        };
        let for_ms = now_ms.saturating_sub(reference);
        let cond = for_ms > max;
        if cond != slot.cond {
            slot.cond = cond;
            // Since when the condition has its value: the moment the gap exceeded the limit,
            // or the keyframe that ended the gap (later keyframes do not move it).
            slot.since_ms = if cond {
                reference.saturating_add(max)
            } else {
                reference
            };
        }
        if cond {
            slot.value = Reason::NoKeyframe { for_ms };
        }
        slot.settle(now_ms, recover_ms);
    }

    /// `over_bitrate_quota`: the bitrate over the last [`BITRATE_WINDOW_SECS`] complete
    /// seconds has been above the cap at every evaluation for the cap's `over_for_ms`.
    fn rule_over_bitrate_quota(&mut self, now_ms: u64, cur: u64) {
        let recover_ms = self.limits.recover_ms;
        let current = self.window_bps(cur, BITRATE_WINDOW_SECS);
        let slot = &mut self.slots.over_bitrate_quota;
        let Some(cap) = self.bitrate_cap else {
            slot.cond = false;
            slot.active = false;
            return;
        };
        let cond = current > cap.max_bps;
        slot.observe(cond, now_ms);
        if cond {
            slot.value = Reason::OverBitrateQuota {
                bps: current,
                max_bps: cap.max_bps,
            };
            if now_ms.saturating_sub(slot.since_ms) >= cap.over_for_ms {
                slot.active = true;
            }
        } else if slot.active && now_ms.saturating_sub(slot.since_ms) >= recover_ms {
            slot.active = false;
        }
    }

    /// Turns the slots into a status and reasons, applying the anti-flap dwell.
    fn decide(&mut self, now_ms: u64) {
        let mask = self
            .slots
            .iter()
            .filter(|s| s.active)
            .fold(0u8, |m, s| m | (1 << s.value.index()));
        let reported = self.reasons.iter().fold(0u8, |m, r| m | (1 << r.index()));
        let desired = if mask != 0 {
            Status::Warning
        } else {
            Status::Healthy
        };
        if desired != self.status {
            let dwell_ok = self
                .last_flip_ms
                .is_none_or(|t| now_ms.saturating_sub(t) >= self.limits.min_dwell_ms);
            if !dwell_ok {
                // Held by the dwell: a `warning` keeps the reasons it last reported.
                return;
            }
            self.last_flip_ms = Some(now_ms);
            if desired == Status::Warning {
                self.fill_reasons();
            } else {
                self.reasons.clear();
            }
            self.transition(desired, now_ms);
        } else if self.status == Status::Warning {
            self.fill_reasons();
            if mask != reported {
                self.push_event(HealthEvent::ReasonsChanged {
                    status: Status::Warning,
                    reasons: self.reasons.clone(),
                    at_ms: now_ms,
                });
            }
        }
    }

    /// Reported reasons = the active slots' values, in slot order (no reallocation: the
    /// vector's capacity is the number of kinds).
    fn fill_reasons(&mut self) {
        self.reasons.clear();
        for s in self.slots.iter().filter(|s| s.active) {
            self.reasons.push(s.value.clone());
        }
    }

    fn transition(&mut self, to: Status, now_ms: u64) {
        if to == self.status {
            return;
        }
        let from = self.status;
        self.status = to;
        self.status_since_ms = now_ms;
        self.push_event(HealthEvent::StatusChanged {
            from,
            to,
            reasons: self.reasons.clone(),
            at_ms: now_ms,
        });
    }

    fn push_event(&mut self, e: HealthEvent) {
        if self.history.len() >= HISTORY_LEN {
            self.history.pop_front();
        }
        self.history.push_back(e.clone());
        if self.pending.len() >= MAX_PENDING_EVENTS {
            self.pending.pop_front();
        }
        self.pending.push_back(e);
    }
}
