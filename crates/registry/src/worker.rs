//! This worker as a member of the cluster: its id, its registration in the state store and
//! the heartbeat that keeps its [`WorkerRecord`] listed.
//!
//! The id is stable across restarts of the same worker (`--worker-id`, or by default the host
//! name and the HTTP port: a Kubernetes pod keeps its name when its container restarts, two
//! workers on one machine differ by port), so the state store's start count for that id
//! ([`StateStore::register_worker`]) tells how often it restarted. That count minus one is
//! the `tidegate_worker_restarts` gauge and the `incarnations` field of `/api/v1/workers`.
//!
//! Every [`WORKER_HEARTBEAT`] the worker samples its load and writes its record with a
//! [`WORKER_TTL`] expiry; a clean exit removes it, a crash leaves it to expire.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::{Protocol, ProtocolLabels, StoreOp};
use crate::store::{
    valid_name, StateStore, WorkerAddresses, WorkerLoad, WorkerRecord, WorkerState,
    WORKER_HEARTBEAT, WORKER_TTL,
};
use crate::stream::Streams;
use crate::unix_ms;
use tidegate_config::ClusterConfig;
use tidegate_lifecycle::PhaseWatch;

/// What the heartbeat reads (built by the server).
pub struct Heartbeat {
    /// Metrics (the load it reports comes from them).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The stream registry (its live publishers).
    pub streams: Arc<Streams>,
    /// This worker.
    pub member: Arc<Member>,
    /// The worker's phase: the record says `draining` from
    /// [`tidegate_lifecycle::Phase::Draining`] on.
    pub phase: PhaseWatch,
}

/// The version every record carries.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Longest default worker id taken from the host name (the port is appended).
const MAX_HOST_PART: usize = 100;

/// `/proc` reports CPU times in USER_HZ ticks, which Linux fixes at 100 for user space.
const USER_HZ: f64 = 100.0;

/// Shortest interval a CPU percentage is computed over (the first heartbeat follows the
/// sampler's creation at once and reports none).
const MIN_CPU_INTERVAL_S: f64 = 0.5;

/// The default worker id: the host name (`HOSTNAME`, else `/etc/hostname`; characters outside
/// `[A-Za-z0-9_.-]` become `-`) and the HTTP port, e.g. `tidegate-7f9c-0-8080`.
pub fn default_id(http_listen: SocketAddr) -> String {
    let host = host_name()
        .map(|h| {
            h.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                        c
                    } else {
                        '-'
                    }
                })
                .take(MAX_HOST_PART)
                .collect::<String>()
        })
        .map(|h| h.trim_start_matches('.').to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tidegate".to_owned());
    let id = format!("{host}-{}", http_listen.port());
    if valid_name(&id) {
        id
    } else {
        format!("tidegate-{}", http_listen.port())
    }
}

/// This host's name: `HOSTNAME`, else `/etc/hostname`.
pub fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// `host:port` others can reach `listen` at: the listen address itself, or, when it is a
/// wildcard, the `POD_IP` environment variable (Kubernetes downward API) or the host name.
pub fn advertised(listen: SocketAddr) -> String {
    if !listen.ip().is_unspecified() {
        return listen.to_string();
    }
    let pod_ip = std::env::var("POD_IP")
        .ok()
        .and_then(|v| v.trim().parse::<IpAddr>().ok());
    match pod_ip {
        Some(ip) => SocketAddr::new(ip, listen.port()).to_string(),
        None => format!(
            "{}:{}",
            host_name().unwrap_or_else(|| "localhost".to_owned()),
            listen.port()
        ),
    }
}

/// This worker's identity and registration.
#[derive(Debug)]
pub struct Member {
    /// The worker id.
    pub id: String,
    /// Unix ms when this process started serving.
    pub started_ms: i64,
    /// Its pool, `None` for the shared pool.
    pub pool: Option<String>,
    /// Where it can be reached.
    pub addresses: WorkerAddresses,
    /// Starts of this id as the state store counted them (0 until registered).
    incarnations: AtomicU64,
}

impl Member {
    /// The member of a worker with this configuration (not yet registered).
    pub fn new(config: &ClusterConfig) -> Self {
        Self {
            id: config
                .worker_id
                .clone()
                .unwrap_or_else(|| default_id(config.http_listen)),
            started_ms: unix_ms(),
            pool: config.pool.clone(),
            addresses: WorkerAddresses {
                http: advertised(config.http_listen),
                rtmp: advertised(config.rtmp_listen),
                srt: advertised(config.srt_listen),
            },
            incarnations: AtomicU64::new(0),
        }
    }

    /// Starts of this id as the state store counted them, this one included; 0 while the
    /// store has not been reached.
    pub fn incarnations(&self) -> u64 {
        self.incarnations.load(Ordering::Relaxed)
    }

    /// Counts this start in the state store (once) and sets the restarts gauge.
    pub async fn register(
        &self,
        state: &dyn StateStore,
        metrics: &crate::metrics::Metrics,
    ) -> Result<u64, crate::store::StoreError> {
        if self.incarnations() > 0 {
            return Ok(self.incarnations());
        }
        let n = state.register_worker(&self.id).await?;
        self.incarnations.store(n, Ordering::Relaxed);
        metrics
            .worker_restarts
            .set(i64::try_from(n.saturating_sub(1)).unwrap_or(i64::MAX));
        info!(worker = %self.id, incarnations = n, "worker registered");
        Ok(n)
    }

    /// The record to write now.
    pub fn record(&self, state: WorkerState, load: WorkerLoad) -> WorkerRecord {
        WorkerRecord {
            id: self.id.clone(),
            version: VERSION.to_owned(),
            pool: self.pool.clone(),
            addresses: self.addresses.clone(),
            started_ms: self.started_ms,
            incarnations: self.incarnations(),
            heartbeat_ms: unix_ms(),
            state,
            load,
        }
    }
}

/// Samples the process's load between two heartbeats.
struct LoadSampler {
    at: Instant,
    ingest_bytes: u64,
    cpu_ticks: Option<u64>,
}

fn ingest_bytes(metrics: &crate::metrics::Metrics) -> u64 {
    Protocol::ALL
        .iter()
        .copied()
        .map(|protocol| {
            metrics
                .ingest_bytes
                .get_or_create(&ProtocolLabels { protocol })
                .get()
        })
        .sum()
}

/// utime + stime of this process in USER_HZ ticks (Linux `/proc/self/stat`).
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the file; `rest` starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size from `/proc/self/status` (`VmRSS: N kB`).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

impl LoadSampler {
    fn new(metrics: &crate::metrics::Metrics) -> Self {
        Self {
            at: Instant::now(),
            ingest_bytes: ingest_bytes(metrics),
            cpu_ticks: cpu_ticks(),
        }
    }

    fn sample(&mut self, metrics: &crate::metrics::Metrics, live_publishers: u64) -> WorkerLoad {
        let now = Instant::now();
        let secs = now.duration_since(self.at).as_secs_f64().max(0.001);
        let bytes = ingest_bytes(metrics);
        let cpu = cpu_ticks();
        let load = WorkerLoad {
            live_publishers,
            ingest_bitrate_bps: (bytes.saturating_sub(self.ingest_bytes) as f64 * 8.0 / secs)
                as u64,
            cpu_percent: match (cpu, self.cpu_ticks) {
                // A tick is 10 ms: over a shorter interval one tick would read as a huge load.
                (Some(now), Some(before)) if secs >= MIN_CPU_INTERVAL_S => {
                    let pct = now.saturating_sub(before) as f64 / USER_HZ / secs * 100.0;
                    Some((pct * 10.0).round() / 10.0)
                }
                _ => None,
            },
            rss_bytes: rss_bytes(),
        };
        *self = Self {
            at: now,
            ingest_bytes: bytes,
            cpu_ticks: cpu,
        };
        load
    }
}

/// Keeps this worker's record fresh until `stop`, then removes it. Registers first if the
/// start-up registration failed (the store was unreachable).
pub async fn run_heartbeat(
    ctx: Arc<Heartbeat>,
    state: Arc<dyn StateStore>,
    stop: CancellationToken,
) {
    let mut sampler = LoadSampler::new(&ctx.metrics);
    let mut ticker = tokio::time::interval(WORKER_HEARTBEAT);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => break,
        }
        let live = u64::try_from(ctx.streams.live_count().await).unwrap_or(u64::MAX);
        let load = sampler.sample(&ctx.metrics, live);
        let worker_state = if ctx.phase.is_ready() {
            WorkerState::Ready
        } else {
            WorkerState::Draining
        };
        let result = async {
            ctx.member.register(state.as_ref(), &ctx.metrics).await?;
            state
                .put_worker(&ctx.member.record(worker_state, load), WORKER_TTL)
                .await
        }
        .await;
        match result {
            Ok(()) if failing => {
                failing = false;
                info!("worker heartbeat: state store reachable again");
            }
            Ok(()) => {}
            Err(e) => {
                ctx.metrics.store_error(StoreOp::PutWorker);
                if !failing {
                    warn!(error = %e, "worker heartbeat: cannot write this worker's record");
                }
                failing = true;
            }
        }
    }
    if let Err(e) = state.remove_worker(&ctx.member.id).await {
        warn!(error = %e, "could not remove this worker's record; it expires on its own");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ids_are_valid_names_with_the_port() {
        let id = default_id("0.0.0.0:8080".parse().unwrap());
        assert!(valid_name(&id), "{id}");
        assert!(id.ends_with("-8080"), "{id}");
    }

    #[test]
    fn advertised_keeps_specific_addresses() {
        assert_eq!(advertised("127.0.0.1:80".parse().unwrap()), "127.0.0.1:80");
        assert_eq!(advertised("[::1]:80".parse().unwrap()), "[::1]:80");
        assert!(advertised("0.0.0.0:8080".parse().unwrap()).ends_with(":8080"));
    }

    #[test]
    fn proc_samples_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(cpu_ticks().is_some());
            assert!(rss_bytes().unwrap_or(0) > 0);
        }
    }
}
