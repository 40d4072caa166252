//! `tidegate bench`: a load generator for an ingest fleet — N paced RTMP or SRT publishers
//! from one media file, M HLS, LL-HLS or DASH viewers, and a report.
//!
//! Unlike the protocol crates this one owns sockets and a clock (it is a tool, like the
//! server crate); the protocols themselves are [`tidegate_rtmp::ClientSession`] and
//! [`tidegate_srt::Caller`], sans-IO.
//!
//! # The run
//!
//! ```text
//! FlvFile::parse(bytes)          the file, in memory once; tag bodies are Bytes slices
//!        │ Arc
//!        ├─▶ publisher task i    (one per publisher, on one runtime)
//!        │     wait for the ramp-up slot  origin + i / rate
//!        │     TCP connect → ClientSession → NetStream.Publish.Start
//!        │     send onMetaData + sequence headers once
//!        │     base = aligned_start(..)   keyframes at origin + i·gop/N + k·gop
//!        │     loop: Schedule::pop_due(now + COALESCE) → send_video/send_audio
//!        │           poll_transmit → one vectored write; read acks/pings
//!        │     at the end: unpublish, flush, close → PublisherOutcome
//!        ├─▶ viewer task j       polls index.m3u8 like hls.js, fetches init + segments
//!        │                       (or: LL-HLS blocking reloads + parts, llhls_viewer;
//!        │                       a DASH MPD's timeline, dash_viewer), an emulated
//!        │                       playhead → ViewerOutcome (errors, stalls, PDT → listed,
//!        │                       glass-to-glass latency, delivery)
//!        └─▶ run(): progress once a second; at the end a Report (text, JSON) with the
//!                   server's own segment latency (/metrics) and this process's CPU cost
//! ```
//!
//! Publishers loop the file with continuous timestamps ([`schedule::Schedule`]). A
//! publisher's *lag* is how late a tag was handed to the socket compared with real time;
//! a server that reads slowly shows up there (the queue in front of the socket is bounded).
//!
//! SRT ([`srt_publisher`]): the input becomes one pass of MPEG-TS once
//! ([`ts_source::TsPass`]: an FLV file muxed by `tidegate-mpegts`, or a `.ts` file as it
//! is), cut into 1316-byte payloads paced by the transport clock (PCR); each publisher
//! sends it through its own UDP socket and [`tidegate_srt::Caller`], looping with
//! continuous clocks. The ramp-up, the keyframe staggering, the pacing and the accounting
//! are one piece of code for both protocols ([`publisher`]); the report adds the SRT
//! counters (packets sent, retransmitted, reported lost by the server's NAKs, RTT).
#![deny(missing_docs)]

pub mod cpu;
pub mod dash_viewer;
mod error;
pub mod flv_file;
pub mod http;
pub mod llhls_viewer;
pub mod mpd;
pub mod playhead;
pub mod playlist;
pub mod publisher;
pub mod report;
pub mod rtmp_publisher;
pub mod schedule;
pub mod server_metrics;
pub mod srt_publisher;
pub mod target;
pub mod ts_source;
pub mod viewer;

use std::future::Future;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use error::LoadgenError;
pub use flv_file::FlvFile;
pub use report::{Progress, Report};

pub use ts_source::TsPass;

use publisher::PublisherTask;
use report::{
    GeneratorCost, InputSummary, LiveState, PublisherLive, PublisherOutcome, PublisherSummary,
    ServerLatency, ViewerLive, ViewerOutcome, ViewerSummary,
};
use server_metrics::{Histogram, SEGMENT_LATENCY_METRIC};
use target::{expand, Protocol, RtmpTarget, SrtTarget};

/// Most publishers or viewers one run may start.
pub const MAX_CLIENTS: usize = 100_000;
/// Viewers start spread over this much time after their stream's publisher (the reload
/// interval of a 2 s target duration), so that their polls sample every phase of the GOP.
pub const VIEWER_PHASE_SPREAD: Duration = Duration::from_secs(1);
/// Interval of the progress callback.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Where a publish URL takes a key of [`BenchConfig::keys`].
pub const KEY_PLACEHOLDER: &str = "{key}";

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Publish URL template; `{i}` becomes the publisher's index.
    pub url: String,
    /// Publishers.
    pub publishers: usize,
    /// New publisher connections per second.
    pub ramp_up_per_sec: f64,
    /// Length of the whole run, ramp-up included.
    pub duration: Duration,
    /// Viewers (0 for none).
    pub viewers: usize,
    /// Media playlist URL template; viewer `j` plays `{i}` = `j % publishers`.
    pub play_url: Option<String>,
    /// What the viewers emulate: viewer `j` is `viewer_kinds[j % len]` (HLS when empty).
    pub viewer_kinds: Vec<viewer::ViewerKind>,
    /// MPD URL template for the DASH viewers (`{i}` as in `play_url`).
    pub dash_url: Option<String>,
    /// LL-HLS viewers ask for delta updates (`_HLS_skip=YES`) where offered.
    pub ll_skip: bool,
    /// Viewers start this long after their stream's publisher (plus their phase spread):
    /// to join a full live window, as a viewer arriving mid-stream does.
    pub viewer_delay: Duration,
    /// Where to scrape the server's `/metrics`; defaults to `/metrics` on the play URL's
    /// host when viewers are configured.
    pub metrics_url: Option<String>,
    /// Runtime worker threads (reported only; the caller builds the runtime).
    pub threads: usize,
    /// Stream keys for `{key}` in the publish URL: publisher `i` uses `keys[i % len]` (a
    /// tenant's keys, say one per stream). Empty when the URL has no `{key}`.
    pub keys: Vec<String>,
}

impl BenchConfig {
    /// Checks the settings without touching the network.
    pub fn validate(&self) -> Result<(), LoadgenError> {
        if self.publishers == 0 || self.publishers > MAX_CLIENTS {
            return Err(LoadgenError::InvalidConfig(format!(
                "publishers must be between 1 and {MAX_CLIENTS}"
            )));
        }
        if self.viewers > MAX_CLIENTS {
            return Err(LoadgenError::InvalidConfig(format!(
                "viewers must be at most {MAX_CLIENTS}"
            )));
        }
        if !(self.ramp_up_per_sec.is_finite() && self.ramp_up_per_sec > 0.0)
            && self.ramp_up_per_sec != f64::INFINITY
        {
            return Err(LoadgenError::InvalidConfig(
                "the ramp-up rate must be positive".into(),
            ));
        }
        if self.duration.is_zero() {
            return Err(LoadgenError::InvalidConfig(
                "the duration must be positive".into(),
            ));
        }
        if self.url.contains(KEY_PLACEHOLDER) == self.keys.is_empty() {
            return Err(LoadgenError::InvalidConfig(format!(
                "{KEY_PLACEHOLDER} in the publish URL and a list of keys (--keys) go together"
            )));
        }
        match Protocol::parse(&self.url)? {
            Protocol::Rtmp => {
                RtmpTarget::parse(&self.publish_url(0))?;
            }
            Protocol::Srt => {
                SrtTarget::parse(&self.publish_url(0), 0)?;
            }
        }
        if self.viewers > 0 {
            let kinds = self.kinds();
            if kinds.iter().any(|k| *k != viewer::ViewerKind::Dash) {
                let play = self.play_url.as_deref().ok_or_else(|| {
                    LoadgenError::InvalidConfig("--viewers needs --play-url".into())
                })?;
                if !play.starts_with("http://") {
                    return Err(LoadgenError::BadUrl {
                        url: play.into(),
                        why: "the play URL must start with http://",
                    });
                }
            }
            if kinds.contains(&viewer::ViewerKind::Dash) {
                let dash = self.dash_url.as_deref().ok_or_else(|| {
                    LoadgenError::InvalidConfig("DASH viewers need --dash-url".into())
                })?;
                if !dash.starts_with("http://") {
                    return Err(LoadgenError::BadUrl {
                        url: dash.into(),
                        why: "the MPD URL must start with http://",
                    });
                }
            }
        }
        Ok(())
    }

    /// Publisher `i`'s URL: the template with `{i}`, `{N+i}` and `{key}` filled in.
    pub fn publish_url(&self, i: usize) -> String {
        let url = expand(&self.url, i);
        match self.keys.get(i % self.keys.len().max(1)) {
            Some(key) => url.replace(KEY_PLACEHOLDER, key),
            None => url,
        }
    }

    /// The viewer kinds in turn (HLS when none is set).
    fn kinds(&self) -> Vec<viewer::ViewerKind> {
        if self.viewer_kinds.is_empty() {
            vec![viewer::ViewerKind::Hls]
        } else {
            self.viewer_kinds.clone()
        }
    }

    fn metrics_url(&self) -> Option<String> {
        if let Some(u) = &self.metrics_url {
            return Some(u.clone());
        }
        let play = self.play_url.as_deref().or(self.dash_url.as_deref())?;
        let rest = play.strip_prefix("http://")?;
        let host = rest.split('/').next()?;
        Some(format!("http://{host}/metrics"))
    }
}

/// The media a run sends, parsed once and shared by every publisher.
#[derive(Debug, Clone)]
pub enum Input {
    /// An FLV file: RTMP sends its tags; SRT muxes it to MPEG-TS first.
    Flv(Arc<FlvFile>),
    /// An MPEG-TS file: SRT only.
    Ts(Arc<TsPass>),
}

impl Input {
    /// Length of one pass, ms.
    pub fn duration_ms(&self) -> u64 {
        match self {
            Input::Flv(f) => u64::from(f.duration_ms),
            Input::Ts(t) => t.duration_ms(),
        }
    }

    /// Typical keyframe interval, ms.
    pub fn gop_ms(&self) -> u32 {
        match self {
            Input::Flv(f) => f.gop_ms,
            Input::Ts(t) => t.gop_ms,
        }
    }

    /// Average bitrate, bits per second (FLV: the media payloads; TS: the whole stream).
    pub fn bitrate_bps(&self) -> u64 {
        match self {
            Input::Flv(f) => f.bitrate_bps(),
            Input::Ts(t) => t.bitrate_bps(),
        }
    }
}

impl From<Arc<FlvFile>> for Input {
    fn from(f: Arc<FlvFile>) -> Input {
        Input::Flv(f)
    }
}

/// Reads and parses the input file (held in memory for the run): FLV (`FLV` signature)
/// or MPEG-TS (a 0x47 sync byte every 188 bytes).
pub fn load_input(path: &Path) -> Result<Input, LoadgenError> {
    let len = std::fs::metadata(path)?.len();
    if len > flv_file::MAX_FILE_BYTES {
        return Err(LoadgenError::TooLarge {
            len,
            max: flv_file::MAX_FILE_BYTES,
        });
    }
    let data = Bytes::from(std::fs::read(path)?);
    if data.first() == Some(&0x47) && data.get(188).is_none_or(|&b| b == 0x47) {
        return Ok(Input::Ts(Arc::new(TsPass::from_ts(data)?)));
    }
    Ok(Input::Flv(Arc::new(FlvFile::parse(data)?)))
}

/// The publishers' destinations and what they send.
enum Plan {
    Rtmp(Fleet<RtmpTarget, FlvFile>),
    Srt(Fleet<SrtTarget, TsPass>),
}

/// What every publisher of a run sends, and where each publishes.
struct Fleet<T, M> {
    media: Arc<M>,
    /// Publisher `i`'s target at `i`.
    targets: Vec<T>,
}

impl<T: Clone, M> Fleet<T, M> {
    /// The task of the publisher in `slot` (`None` past the last target).
    fn task(&self, slot: publisher::Slot) -> Option<PublisherTask<T, M>> {
        Some(PublisherTask {
            target: self.targets.get(slot.index)?.clone(),
            media: self.media.clone(),
            slot,
        })
    }
}

enum Done {
    Publisher(PublisherOutcome),
    Viewer(ViewerOutcome),
}

/// Runs the bench on the current tokio runtime until `config.duration` has passed or
/// `shutdown` resolves, calling `on_progress` every [`PROGRESS_INTERVAL`].
///
/// `input` is an [`Input`] (or an `Arc<FlvFile>`). SRT accepts both kinds (an FLV file is
/// muxed to MPEG-TS once, before the run starts); RTMP needs FLV.
pub async fn run(
    config: BenchConfig,
    input: impl Into<Input>,
    shutdown: impl Future<Output = ()>,
    mut on_progress: impl FnMut(&Progress),
) -> Result<Report, LoadgenError> {
    config.validate()?;
    let input = input.into();
    let plan = match (Protocol::parse(&config.url)?, &input) {
        (Protocol::Rtmp, Input::Flv(f)) => Plan::Rtmp(Fleet {
            media: f.clone(),
            targets: (0..config.publishers)
                .map(|i| RtmpTarget::parse(&config.publish_url(i)))
                .collect::<Result<Vec<_>, _>>()?,
        }),
        (Protocol::Rtmp, Input::Ts(_)) => {
            return Err(LoadgenError::Media(
                "RTMP publishing needs an FLV input; MPEG-TS input is for srt:// URLs".into(),
            ))
        }
        (Protocol::Srt, _) => {
            let ts = match &input {
                Input::Ts(t) => t.clone(),
                Input::Flv(f) => Arc::new(TsPass::from_flv(f)?),
            };
            Plan::Srt(Fleet {
                media: ts,
                targets: (0..config.publishers)
                    .map(|i| SrtTarget::parse(&config.publish_url(i), i))
                    .collect::<Result<Vec<_>, _>>()?,
            })
        }
    };
    let gop_ms = input.gop_ms();
    let metrics_url = config.metrics_url();
    let metrics_client = http::client();
    let before = match &metrics_url {
        Some(u) => scrape(&metrics_client, u).await,
        None => None,
    };
    let cpu_before = cpu::process_cpu_seconds();
    let origin = Instant::now();
    let end_at = origin + config.duration;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut pub_live = Vec::with_capacity(config.publishers);
    for i in 0..config.publishers {
        let live = Arc::new(PublisherLive::default());
        pub_live.push(live.clone());
        let start_at = origin + schedule::ramp_offset(i, config.ramp_up_per_sec);
        let phase_ms = schedule::stagger_phase_ms(i, config.publishers, gop_ms);
        let slot = publisher::Slot {
            index: i,
            origin,
            start_at,
            phase_ms,
            end_at,
            live,
            stop: stop_rx.clone(),
        };
        let spawned = match &plan {
            Plan::Rtmp(fleet) => fleet.task(slot).map(|task| {
                tasks.spawn(async move { Done::Publisher(rtmp_publisher::run(task).await) })
            }),
            Plan::Srt(fleet) => fleet.task(slot).map(|task| {
                tasks.spawn(async move { Done::Publisher(srt_publisher::run(task).await) })
            }),
        };
        if spawned.is_none() {
            break;
        }
    }
    let mut view_live = Vec::with_capacity(config.viewers);
    let kinds = config.kinds();
    for j in 0..config.viewers {
        let stream = j % config.publishers;
        let kind = kinds[j % kinds.len()];
        let template = match kind {
            viewer::ViewerKind::Dash => config.dash_url.as_deref(),
            viewer::ViewerKind::Hls | viewer::ViewerKind::LlHls => config.play_url.as_deref(),
        };
        let Some(template) = template else {
            continue;
        };
        let live = Arc::new(ViewerLive::default());
        view_live.push(live.clone());
        let task = viewer::ViewerTask {
            index: j,
            kind,
            skip: config.ll_skip,
            url: expand(template, stream),
            // Spread the viewers' polling phases over one reload interval, as real
            // viewers arriving at random would be: otherwise every poll lands at the
            // same point of the GOP and the PDT -> listed figure is biased.
            start_at: origin
                + schedule::ramp_offset(stream, config.ramp_up_per_sec)
                + config.viewer_delay
                + VIEWER_PHASE_SPREAD.mul_f64(j as f64 / config.viewers as f64),
            end_at,
            live,
            stop: stop_rx.clone(),
        };
        tasks.spawn(async move { Done::Viewer(viewer::run(task).await) });
    }

    let mut publishers = Vec::with_capacity(config.publishers);
    let mut viewers = Vec::with_capacity(config.viewers);
    let mut ticker = tokio::time::interval_at(origin + PROGRESS_INTERVAL, PROGRESS_INTERVAL);
    let mut last_bytes = 0u64;
    let mut last_tick = origin;
    let mut stopped = false;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            done = tasks.join_next() => match done {
                Some(Ok(Done::Publisher(p))) => publishers.push(p),
                Some(Ok(Done::Viewer(v))) => viewers.push(v),
                Some(Err(e)) => {
                    // A task panicked or was cancelled: a bug; keep the run's other results.
                    let _ = e;
                }
                None => break,
            },
            _ = &mut shutdown, if !stopped => {
                stopped = true;
                let _ = stop_tx.send(true);
            }
            now = ticker.tick() => {
                let bytes: u64 = pub_live.iter().map(|l| l.bytes_sent.load(Ordering::Relaxed)).sum();
                let secs = now.saturating_duration_since(last_tick).as_secs_f64();
                let p = progress(&pub_live, &view_live, now.duration_since(origin), bytes - last_bytes.min(bytes), secs);
                last_bytes = bytes;
                last_tick = now;
                on_progress(&p);
            }
        }
    }
    let wall = origin.elapsed().as_secs_f64();
    let cpu_after = cpu::process_cpu_seconds();
    let server_segment_latency = match (&metrics_url, before) {
        (Some(u), Some(before)) => scrape(&metrics_client, u).await.map(|after| {
            let d = after.since(&before);
            ServerLatency {
                metrics_url: u.clone(),
                segments: d.count(),
                p50_ms: d.quantile(0.50).map(|s| s * 1000.0),
                p99_ms: d.quantile(0.99).map(|s| s * 1000.0),
            }
        }),
        _ => None,
    };
    let pubs = PublisherSummary::from_outcomes(publishers, wall);
    let cpu_seconds = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => Some((b - a).max(0.0)),
        _ => None,
    };
    let gbit = pubs.bytes_sent as f64 * 8.0 / 1e9;
    Ok(Report {
        input: InputSummary {
            duration_ms: u32::try_from(input.duration_ms()).unwrap_or(u32::MAX),
            gop_ms,
            bitrate_kbps: match &plan {
                Plan::Srt(fleet) => fleet.media.bitrate_bps() / 1000,
                Plan::Rtmp(..) => input.bitrate_bps() / 1000,
            },
            tags: match &input {
                Input::Flv(f) => f.tags.len(),
                Input::Ts(_) => 0,
            },
            ts_payloads: match &plan {
                Plan::Srt(fleet) => Some(fleet.media.chunks.len()),
                Plan::Rtmp(..) => None,
            },
        },
        wall_seconds: wall,
        viewers: (config.viewers > 0).then(|| ViewerSummary::from_outcomes(viewers)),
        server_segment_latency,
        generator: GeneratorCost {
            threads: config.threads,
            cpu_seconds,
            cpu_percent: cpu_seconds.map(|c| c / wall.max(1e-9) * 100.0),
            cpu_seconds_per_gbit: cpu_seconds.filter(|_| gbit > 0.0).map(|c| c / gbit),
        },
        publishers: pubs,
    })
}

fn progress(
    pubs: &[Arc<PublisherLive>],
    views: &[Arc<ViewerLive>],
    elapsed: Duration,
    bytes: u64,
    secs: f64,
) -> Progress {
    let mut p = Progress {
        elapsed_s: elapsed.as_secs_f64(),
        mbps: if secs > 0.0 {
            bytes as f64 * 8.0 / secs / 1e6
        } else {
            0.0
        },
        ..Default::default()
    };
    for l in pubs {
        match l.state() {
            LiveState::Publishing => {
                p.publishing += 1;
                p.connected += 1;
                p.worst_lag_ms = p.worst_lag_ms.max(l.lag_ms.load(Ordering::Relaxed));
            }
            LiveState::Finished => p.connected += 1,
            LiveState::Dropped => {
                p.connected += 1;
                p.dropped += 1;
            }
            LiveState::Refused => p.refused += 1,
            LiveState::Failed => p.failed += 1,
            LiveState::Waiting | LiveState::Connecting => {}
        }
    }
    for v in views {
        p.viewer_segments += v.segments.load(Ordering::Relaxed);
        p.viewer_errors += v.errors.load(Ordering::Relaxed);
    }
    p
}

async fn scrape(client: &http::HttpClient, url: &str) -> Option<Histogram> {
    // The second scrape reuses the first one's kept-alive connection, which the server may
    // be closing just then (a run as long as its idle timeout): one more try, on a new one.
    for _ in 0..2 {
        match http::get(client, url).await {
            Ok((200, body)) => {
                return Some(Histogram::parse(
                    &String::from_utf8_lossy(&body),
                    SEGMENT_LATENCY_METRIC,
                ))
            }
            Ok(_) => return None,
            Err(_) => continue,
        }
    }
    None
}
