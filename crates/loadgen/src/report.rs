//! What a run measured: live counters for the progress line, per-publisher and per-viewer
//! outcomes, and the final [`Report`] (text and JSON).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use serde::Serialize;

/// Live state of one publisher, shared between its task and the progress line.
#[derive(Debug, Default)]
pub struct PublisherLive {
    state: AtomicU8,
    /// Bytes written to the socket so far.
    pub bytes_sent: AtomicU64,
    /// How late the last tag handed to the transport was, in milliseconds.
    pub lag_ms: AtomicU64,
}

/// Where a publisher is, for the progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LiveState {
    /// Waiting for its ramp-up slot.
    Waiting = 0,
    /// Connecting, handshaking, asking to publish.
    Connecting = 1,
    /// Publishing.
    Publishing = 2,
    /// Ended as planned.
    Finished = 3,
    /// Refused by the server.
    Refused = 4,
    /// Never got to publish (TCP, handshake or protocol failure).
    Failed = 5,
    /// Lost while publishing.
    Dropped = 6,
}

impl PublisherLive {
    /// Sets the state.
    pub fn set_state(&self, s: LiveState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// The state.
    pub fn state(&self) -> LiveState {
        match self.state.load(Ordering::Relaxed) {
            1 => LiveState::Connecting,
            2 => LiveState::Publishing,
            3 => LiveState::Finished,
            4 => LiveState::Refused,
            5 => LiveState::Failed,
            6 => LiveState::Dropped,
            _ => LiveState::Waiting,
        }
    }
}

/// Live counters of one viewer.
#[derive(Debug, Default)]
pub struct ViewerLive {
    /// Segments fetched.
    pub segments: AtomicU64,
    /// Errors so far.
    pub errors: AtomicU64,
    /// Stalls so far.
    pub stalls: AtomicU64,
}

/// One line of progress (printed once a second by the CLI).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Progress {
    /// Seconds since the run started.
    pub elapsed_s: f64,
    /// Publishers publishing now.
    pub publishing: usize,
    /// Publishers that reached publishing at some point.
    pub connected: usize,
    /// Refused by the server.
    pub refused: usize,
    /// Failed before publishing.
    pub failed: usize,
    /// Lost while publishing.
    pub dropped: usize,
    /// Send rate over the last interval, megabits per second.
    pub mbps: f64,
    /// The worst current lag among publishers, milliseconds.
    pub worst_lag_ms: u64,
    /// Viewer segments fetched so far.
    pub viewer_segments: u64,
    /// Viewer errors so far.
    pub viewer_errors: u64,
}

impl Progress {
    /// The progress line.
    pub fn line(&self) -> String {
        let mut s = format!(
            "[{:>6.1}s] publishing {} connected {} refused {} failed {} dropped {} | {:.1} Mbps | worst lag {} ms",
            self.elapsed_s,
            self.publishing,
            self.connected,
            self.refused,
            self.failed,
            self.dropped,
            self.mbps,
            self.worst_lag_ms
        );
        if self.viewer_segments > 0 || self.viewer_errors > 0 {
            let _ = write!(
                s,
                " | viewers: {} segments, {} errors",
                self.viewer_segments, self.viewer_errors
            );
        }
        s
    }
}

/// How one publisher ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Published until the end of the run and unpublished cleanly.
    Finished,
    /// The server refused the publish (`code`, e.g. `NetStream.Publish.BadName`).
    Refused,
    /// Never published: TCP connect, handshake or protocol failure (see `detail`).
    Failed,
    /// Published, then lost the connection before the end of the run.
    Dropped,
    /// The run ended before its ramp-up slot.
    #[default]
    NotStarted,
}

/// What one publisher did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PublisherOutcome {
    /// Index (the `{i}` of its URL).
    pub index: usize,
    /// How it ended.
    pub outcome: Outcome,
    /// The refusal code or the error, if any.
    pub detail: Option<String>,
    /// From TCP connect to `NetStream.Publish.Start`, milliseconds.
    pub connect_ms: Option<f64>,
    /// Bytes written to the socket (handshake and RTMP headers included).
    pub bytes_sent: u64,
    /// Media tags handed to the transport.
    pub tags_sent: u64,
    /// The most any tag was late (handed to the transport after its due time), ms.
    pub max_lag_ms: u64,
    /// How far behind real time it was when it stopped, ms.
    pub final_lag_ms: u64,
    /// Seconds of media sent (media time of the last tag).
    pub media_seconds: f64,
    /// The SRT connection's counters (SRT publishers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srt: Option<SrtCounters>,
}

impl PublisherOutcome {
    /// A publisher that has not started (yet): what is reported if it never does.
    pub fn not_started(index: usize) -> Self {
        Self {
            index,
            ..Self::default()
        }
    }
}

/// One SRT publisher's sender-side counters, as its connection saw them at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SrtCounters {
    /// Data packets sent for the first time.
    pub packets_sent: u64,
    /// Data packets sent again after a NAK.
    pub packets_retransmitted: u64,
    /// Distinct packets the server reported lost in its NAKs.
    pub packets_reported_lost: u64,
    /// Packets dropped unacknowledged (older than the latency allows, or buffer full).
    pub packets_send_dropped: u64,
    /// NAK packets received.
    pub naks_received: u64,
    /// The smoothed round-trip time at the end (the server's estimate, from its ACKs), ms.
    pub rtt_ms: f64,
}

/// SRT totals over all publishers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SrtSummary {
    /// Data packets sent for the first time.
    pub packets_sent: u64,
    /// Data packets retransmitted.
    pub packets_retransmitted: u64,
    /// Distinct packets the server reported lost.
    pub packets_reported_lost: u64,
    /// Packets the senders dropped unacknowledged.
    pub packets_send_dropped: u64,
    /// `packets_reported_lost / packets_sent`, percent.
    pub loss_percent: f64,
    /// Distribution of the per-publisher RTT at the end, ms.
    pub rtt_ms: Quantiles,
}

impl SrtSummary {
    /// Totals of the publishers that had an SRT connection; `None` if none had.
    pub fn of(per: &[PublisherOutcome]) -> Option<SrtSummary> {
        let all: Vec<&SrtCounters> = per.iter().filter_map(|p| p.srt.as_ref()).collect();
        if all.is_empty() {
            return None;
        }
        let sum = |f: fn(&SrtCounters) -> u64| all.iter().map(|c| f(c)).sum::<u64>();
        let sent = sum(|c| c.packets_sent);
        let lost = sum(|c| c.packets_reported_lost);
        Some(SrtSummary {
            packets_sent: sent,
            packets_retransmitted: sum(|c| c.packets_retransmitted),
            packets_reported_lost: lost,
            packets_send_dropped: sum(|c| c.packets_send_dropped),
            loss_percent: if sent > 0 {
                lost as f64 * 100.0 / sent as f64
            } else {
                0.0
            },
            rtt_ms: Quantiles::of(&all.iter().map(|c| c.rtt_ms).collect::<Vec<_>>()),
        })
    }
}

/// What one viewer saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ViewerOutcome {
    /// Index (the `{i}` of its URL is `index % publishers`).
    pub index: usize,
    /// What it emulates: `hls`, `ll-hls`, `dash` or `ll-dash` (a DASH viewer whose MPD
    /// has an `availabilityTimeOffset`).
    pub kind: String,
    /// The server offered what the kind needs to be low-latency (LL-HLS: blocking reload
    /// and parts; LL-DASH: `availabilityTimeOffset`).
    pub low_latency: bool,
    /// Blocking playlist reloads the server answered with 503 (held too long: by the
    /// specification, not an error; the viewer asks again).
    pub blocking_503: u64,
    /// Parts fetched (LL-HLS).
    pub parts: u64,
    /// Whether it ever got the playlist.
    pub started: bool,
    /// Playlist fetches.
    pub playlists: u64,
    /// Segments (and init segments) fetched with status 200.
    pub segments: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// Errors by kind (`playlist_status`, `segment_status`, `transport`, `timeout`,
    /// `parse`, `never_started`).
    pub errors: BTreeMap<String, u64>,
    /// Times no new segment appeared for more than 2 × target duration (live only).
    pub stalls: u64,
    /// Total time spent stalled, ms.
    pub stall_ms: u64,
    /// Per new segment: when it was first listed minus its PROGRAM-DATE-TIME + duration.
    #[serde(skip)]
    pub pdt_to_listed_ms: Vec<f64>,
    /// Per segment: the time its GET took.
    #[serde(skip)]
    pub fetch_ms: Vec<f64>,
    /// Per piece of media played (segment, or part for LL-HLS): the glass-to-glass latency
    /// of the emulated player's playhead ([`crate::playhead`]).
    #[serde(skip)]
    pub latency_ms: Vec<f64>,
    /// Per piece of media: when its last byte arrived minus when it existed (its wall
    /// clock start + duration).
    #[serde(skip)]
    pub delivery_ms: Vec<f64>,
    /// The same, with the last byte's time taken when the bench's task had it (after its
    /// turn on the bench's core) rather than when the kernel received it.
    #[serde(skip)]
    pub delivery_seen_ms: Vec<f64>,
    /// Per new part (LL-HLS): when the playlist listing it arrived minus its end.
    #[serde(skip)]
    pub part_listed_ms: Vec<f64>,
}

impl ViewerOutcome {
    /// Counts one error of `kind`.
    pub fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_string()).or_default() += 1;
    }

    /// Errors of every kind.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// p50, p99 and max of a set of samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Quantiles {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50: Option<f64>,
    /// 99th percentile (nearest rank).
    pub p99: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

impl Quantiles {
    /// Quantiles of `samples` (nearest rank; NaNs are ignored).
    pub fn of(samples: &[f64]) -> Quantiles {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
        v.sort_by(f64::total_cmp);
        let rank = |q: f64| -> Option<f64> {
            if v.is_empty() {
                return None;
            }
            let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
            v.get(i).copied()
        };
        Quantiles {
            count: v.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: v.last().copied(),
        }
    }

    fn text(&self) -> String {
        match (self.p50, self.p99, self.max) {
            (Some(a), Some(b), Some(c)) => {
                format!(
                    "p50 {a:.0} ms, p99 {b:.0} ms, max {c:.0} ms ({} samples)",
                    self.count
                )
            }
            _ => "no samples".into(),
        }
    }
}

/// The input file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputSummary {
    /// Length of one pass, ms.
    pub duration_ms: u32,
    /// Median keyframe interval, ms.
    pub gop_ms: u32,
    /// Average media bitrate, kbit/s.
    pub bitrate_kbps: u64,
    /// Media tags in one pass (FLV input).
    pub tags: usize,
    /// 1316-byte MPEG-TS payloads in one pass (SRT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts_payloads: Option<usize>,
}

/// Totals over all publishers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PublisherSummary {
    /// Publishers asked for.
    pub requested: usize,
    /// Reached `NetStream.Publish.Start` (including those dropped later).
    pub connected: usize,
    /// Refused by the server.
    pub refused: usize,
    /// Failed before publishing.
    pub failed: usize,
    /// Lost while publishing.
    pub dropped: usize,
    /// Not started before the run ended.
    pub not_started: usize,
    /// Bytes written by all publishers.
    pub bytes_sent: u64,
    /// Average send rate over the run, Mbit/s.
    pub mbps_avg: f64,
    /// Distribution of the per-publisher `max_lag_ms`.
    pub max_lag_ms: Quantiles,
    /// Distribution of the per-publisher `final_lag_ms`.
    pub final_lag_ms: Quantiles,
    /// Distribution of connect times, ms.
    pub connect_ms: Quantiles,
    /// SRT totals (SRT publishers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srt: Option<SrtSummary>,
    /// Each publisher.
    pub per_publisher: Vec<PublisherOutcome>,
}

/// Totals over all viewers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViewerSummary {
    /// Viewers asked for.
    pub requested: usize,
    /// Got their playlist at least once.
    pub started: usize,
    /// Playlist fetches.
    pub playlists: u64,
    /// Segments fetched.
    pub segments: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// Errors of every kind.
    pub errors: u64,
    /// Errors by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Stalls.
    pub stalls: u64,
    /// Segment's PROGRAM-DATE-TIME + duration → first seen in the playlist, ms. Includes
    /// up to half a target duration of polling delay.
    pub pdt_to_listed_ms: Quantiles,
    /// Segment GET times, ms.
    pub segment_fetch_ms: Quantiles,
    /// The same per viewer kind (`hls`, `ll-hls`, `dash`, `ll-dash`), with the latencies.
    pub by_kind: BTreeMap<String, KindSummary>,
    /// Each viewer.
    pub per_viewer: Vec<ViewerOutcome>,
}

/// The viewers of one kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KindSummary {
    /// Viewers of this kind.
    pub viewers: usize,
    /// Those that got a playlist or MPD.
    pub started: usize,
    /// Those the server offered low latency to.
    pub low_latency: usize,
    /// Segments and parts fetched.
    pub fetched: u64,
    /// Parts fetched.
    pub parts: u64,
    /// Errors of every kind.
    pub errors: u64,
    /// Blocking reloads answered 503.
    pub blocking_503: u64,
    /// Stalls of the emulated playhead.
    pub stalls: u64,
    /// Time stalled, ms.
    pub stall_ms: u64,
    /// Glass-to-glass latency: now minus the capture wall clock of the frame on screen, ms.
    pub latency_ms: Quantiles,
    /// A segment's or part's last byte at the viewer minus when it existed, ms.
    pub delivery_ms: Quantiles,
    /// The same as the bench's tasks saw it ([`ViewerOutcome::delivery_seen_ms`]).
    pub delivery_seen_ms: Quantiles,
    /// LL-HLS: a part's end → the blocking reload that listed it answered, ms. HLS: a
    /// segment's end → first seen listed (polling).
    pub listed_ms: Quantiles,
}

impl KindSummary {
    fn of(per: &[&ViewerOutcome]) -> Self {
        let all = |f: fn(&ViewerOutcome) -> &Vec<f64>| -> Vec<f64> {
            per.iter().flat_map(|v| f(v).iter().copied()).collect()
        };
        let mut listed = all(|v| &v.part_listed_ms);
        listed.extend(all(|v| &v.pdt_to_listed_ms));
        KindSummary {
            viewers: per.len(),
            started: per.iter().filter(|v| v.started).count(),
            low_latency: per.iter().filter(|v| v.low_latency).count(),
            fetched: per.iter().map(|v| v.segments).sum(),
            parts: per.iter().map(|v| v.parts).sum(),
            errors: per.iter().map(|v| v.error_count()).sum(),
            blocking_503: per.iter().map(|v| v.blocking_503).sum(),
            stalls: per.iter().map(|v| v.stalls).sum(),
            stall_ms: per.iter().map(|v| v.stall_ms).sum(),
            latency_ms: Quantiles::of(&all(|v| &v.latency_ms)),
            delivery_ms: Quantiles::of(&all(|v| &v.delivery_ms)),
            delivery_seen_ms: Quantiles::of(&all(|v| &v.delivery_seen_ms)),
            listed_ms: Quantiles::of(&listed),
        }
    }
}

/// The server's own keyframe → segment-listed latency, from the growth of its
/// `tidegate_segment_latency_seconds` histogram over the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerLatency {
    /// Where it was scraped.
    pub metrics_url: String,
    /// Segments listed during the run.
    pub segments: u64,
    /// Median, ms (interpolated within the histogram bucket).
    pub p50_ms: Option<f64>,
    /// 99th percentile, ms (interpolated within the histogram bucket).
    pub p99_ms: Option<f64>,
}

/// What the generator itself cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeneratorCost {
    /// Runtime worker threads.
    pub threads: usize,
    /// CPU seconds (user + system) used during the run, all threads.
    pub cpu_seconds: Option<f64>,
    /// `cpu_seconds / wall_seconds * 100` (100 = one core busy).
    pub cpu_percent: Option<f64>,
    /// CPU seconds per gigabit sent = cores busy per Gbit/s of publishing.
    pub cpu_seconds_per_gbit: Option<f64>,
}

/// The report of a whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The input file.
    pub input: InputSummary,
    /// Wall time of the run, seconds.
    pub wall_seconds: f64,
    /// Publishers.
    pub publishers: PublisherSummary,
    /// Viewers (when `--viewers` was given).
    pub viewers: Option<ViewerSummary>,
    /// The server's segment latency (when its `/metrics` was reachable).
    pub server_segment_latency: Option<ServerLatency>,
    /// The generator's cost.
    pub generator: GeneratorCost,
}

impl PublisherSummary {
    /// Totals from the outcomes, over `wall_seconds`.
    pub fn from_outcomes(mut per: Vec<PublisherOutcome>, wall_seconds: f64) -> Self {
        per.sort_by_key(|p| p.index);
        let count = |o: Outcome| per.iter().filter(|p| p.outcome == o).count();
        let bytes_sent: u64 = per.iter().map(|p| p.bytes_sent).sum();
        let lags = |f: fn(&PublisherOutcome) -> u64| -> Vec<f64> {
            per.iter()
                .filter(|p| p.connect_ms.is_some())
                .map(|p| f(p) as f64)
                .collect()
        };
        let connects: Vec<f64> = per.iter().filter_map(|p| p.connect_ms).collect();
        PublisherSummary {
            requested: per.len(),
            connected: connects.len(),
            refused: count(Outcome::Refused),
            failed: count(Outcome::Failed),
            dropped: count(Outcome::Dropped),
            not_started: count(Outcome::NotStarted),
            bytes_sent,
            mbps_avg: if wall_seconds > 0.0 {
                bytes_sent as f64 * 8.0 / wall_seconds / 1e6
            } else {
                0.0
            },
            max_lag_ms: Quantiles::of(&lags(|p| p.max_lag_ms)),
            final_lag_ms: Quantiles::of(&lags(|p| p.final_lag_ms)),
            connect_ms: Quantiles::of(&connects),
            srt: SrtSummary::of(&per),
            per_publisher: per,
        }
    }
}

impl ViewerSummary {
    /// Totals from the outcomes.
    pub fn from_outcomes(mut per: Vec<ViewerOutcome>) -> Self {
        per.sort_by_key(|v| v.index);
        let mut errors_by_kind = BTreeMap::new();
        for v in &per {
            for (k, n) in &v.errors {
                *errors_by_kind.entry(k.clone()).or_default() += n;
            }
        }
        let all = |f: fn(&ViewerOutcome) -> &Vec<f64>| -> Vec<f64> {
            per.iter().flat_map(|v| f(v).iter().copied()).collect()
        };
        ViewerSummary {
            requested: per.len(),
            started: per.iter().filter(|v| v.started).count(),
            playlists: per.iter().map(|v| v.playlists).sum(),
            segments: per.iter().map(|v| v.segments).sum(),
            bytes: per.iter().map(|v| v.bytes).sum(),
            errors: per.iter().map(ViewerOutcome::error_count).sum(),
            errors_by_kind,
            stalls: per.iter().map(|v| v.stalls).sum(),
            pdt_to_listed_ms: Quantiles::of(&all(|v| &v.pdt_to_listed_ms)),
            segment_fetch_ms: Quantiles::of(&all(|v| &v.fetch_ms)),
            by_kind: {
                let mut kinds: BTreeMap<String, Vec<&ViewerOutcome>> = BTreeMap::new();
                for v in &per {
                    kinds.entry(v.kind.clone()).or_default().push(v);
                }
                kinds
                    .into_iter()
                    .map(|(k, vs)| (k, KindSummary::of(&vs)))
                    .collect()
            },
            per_viewer: per,
        }
    }
}

impl Report {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report as text for a terminal.
    pub fn to_text(&self) -> String {
        let (p, g) = (&self.publishers, &self.generator);
        let mut out = vec![
            format!("tidegate bench: {:.1} s", self.wall_seconds),
            format!(
                "input: {:.1} s per pass, GOP {} ms, {} kbit/s",
                f64::from(self.input.duration_ms) / 1000.0,
                self.input.gop_ms,
                self.input.bitrate_kbps
            ),
            format!(
                "publishers: {} requested, {} connected, {} refused, {} failed, {} dropped, {} not started",
                p.requested, p.connected, p.refused, p.failed, p.dropped, p.not_started
            ),
            format!(
                "  sent {:.1} MB, {:.1} Mbit/s average",
                p.bytes_sent as f64 / 1e6,
                p.mbps_avg
            ),
            format!("  connect time: {}", p.connect_ms.text()),
            format!(
                "  behind real time, worst per publisher: {}",
                p.max_lag_ms.text()
            ),
            format!("  behind real time at the end: {}", p.final_lag_ms.text()),
        ];
        if let Some(srt) = &p.srt {
            out.push(format!(
                "  SRT: {} packets sent, {} retransmitted, {} reported lost by the server ({:.3} %), {} dropped unacknowledged",
                srt.packets_sent,
                srt.packets_retransmitted,
                srt.packets_reported_lost,
                srt.loss_percent,
                srt.packets_send_dropped
            ));
            out.push(format!("  SRT round-trip time: {}", srt.rtt_ms.text()));
        }
        let unfinished = p
            .per_publisher
            .iter()
            .filter(|o| o.outcome != Outcome::Finished);
        out.extend(unfinished.map(|o| {
            let detail = o.detail.as_deref().unwrap_or("");
            format!("  publisher {}: {:?} {detail}", o.index, o.outcome)
        }));
        if let Some(v) = &self.viewers {
            out.extend([
                format!(
                    "viewers: {} requested, {} started, {} playlists, {} segments, {:.1} MB",
                    v.requested,
                    v.started,
                    v.playlists,
                    v.segments,
                    v.bytes as f64 / 1e6
                ),
                format!("  errors: {} {:?}", v.errors, v.errors_by_kind),
                format!("  stalls: {}", v.stalls),
                format!("  PDT+duration -> listed: {}", v.pdt_to_listed_ms.text()),
                format!("  segment fetch: {}", v.segment_fetch_ms.text()),
            ]);
            for (kind, k) in &v.by_kind {
                out.extend([
                    format!(
                        "  {kind}: {} viewers ({} started, {} offered low latency), {} fetched ({} parts), {} errors, {} blocking 503s, {} stalls ({} ms)",
                        k.viewers, k.started, k.low_latency, k.fetched, k.parts, k.errors, k.blocking_503, k.stalls, k.stall_ms
                    ),
                    format!("    glass-to-glass latency: {}", k.latency_ms.text()),
                    format!("    delivery after it existed: {}", k.delivery_ms.text()),
                ]);
                // LL-HLS viewers time an answer twice: the kernel's receive time and the
                // task's (crates/loadgen/src/http.rs).
                if k.delivery_seen_ms.count > 0 {
                    out.push(format!(
                        "    delivery as the bench's task saw it: {}",
                        k.delivery_seen_ms.text()
                    ));
                }
                out.push(format!(
                    "    listed after it existed: {}",
                    k.listed_ms.text()
                ));
            }
        }
        let opt = |x: Option<f64>, d: usize| x.map_or("-".into(), |v| format!("{v:.d$}"));
        if let Some(l) = &self.server_segment_latency {
            let ms = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.1} ms"));
            out.push(format!(
                "server keyframe -> listed ({} segments): p50 {}, p99 {}",
                l.segments,
                ms(l.p50_ms),
                ms(l.p99_ms)
            ));
        }
        out.push(format!(
            "generator: {} thread(s), {} CPU s ({} %), {} CPU s per Gbit sent\n",
            g.threads,
            opt(g.cpu_seconds, 2),
            opt(g.cpu_percent, 1),
            opt(g.cpu_seconds_per_gbit, 3)
        ));
        out.join("\n")
    }
}
