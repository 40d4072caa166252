//! The tidegate ingest worker, wired: [`run`] builds the parts from the configuration, each
//! with its own section and context, runs them, and shuts them down.
//!
//! The parts live in crates of their own, their dependencies going one way:
//! `tidegate-model` (ids, name rules, typed URLs) ← `tidegate-config` ← `tidegate-store`
//! ← `tidegate-events` ← `tidegate-registry` ← `tidegate-ingest` / `tidegate-origin` ← this
//! crate (`tidegate-limits` and `tidegate-lifecycle`, the phases, beside them).
//!
//! ```text
//!  RTMP socket ─▶ ingest::rtmp (tidegate-rtmp session ─▶ tidegate-flv demuxer)
//!  SRT socket  ─▶ ingest::srt  (tidegate-srt connection ─▶ tidegate-mpegts demuxer)
//!  SRT pull    ─▶ ingest::srt_pull (tidegate-srt caller, then the same driver)
//!                        │ MediaEvent
//!                        ▼
//!               stream::Publisher (tidegate-packager Segmenter)
//!                        │ SegmenterOutput (bounded channel)
//!                        ▼
//!               stream writer task ─▶ store::MediaStore (segments)
//!                                   ─▶ store::StateStore (playlist record, CAS on epoch)
//!                                   ─▶ rendered playlist ─▶ origin (HTTP)
//! ```
//!
//! [`run`] wires it together and runs until SIGTERM/SIGINT, then shuts down in the phases
//! of [`tidegate_lifecycle`], each part joined to the phase that stops it, each wait bounded
//! by a [`ShutdownTimeouts`] field:
//!
//! | phase | what stops | waits for (bound) |
//! |---|---|---|
//! | `Draining` | `/readyz` → 503, heartbeat → draining, new publishers refused | publishers finish or move (`drain`), then close at a segment boundary (`boundary`) |
//! | `Closing` | RTMP, RTMPS, SRT listeners and pulls close their connections | their last segments flushed (`ingest_close`) |
//! | `Leaving` | sweeper, change listener, heartbeat | the worker's record removed (`leave`) |
//! | `Offline` | HTTP | open connections (`http_close`) |
//! | `Stopped` | webhooks | their queues flushed (`webhooks::SHUTDOWN_GRACE`, their own) |
#![deny(missing_docs)]

mod shutdown;

pub use tidegate_config as config;

use tidegate_events::{metrics, telemetry, webhooks};
use tidegate_ingest as ingest;
use tidegate_limits as limits;
use tidegate_origin::{http, origin, urls};
use tidegate_registry::{stream, tenants, worker};
use tidegate_store as store;

use std::sync::Arc;

use tidegate_lifecycle::{Lifecycle, Phase};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::ServeConfig;
pub use shutdown::{ShutdownTimeouts, BOUNDARY_POLL_INTERVAL, DRAIN_POLL_INTERVAL};

use config::ContainerOf as _;
use metrics::Metrics;
use stream::{StreamSettings, Streams};

/// A failure to start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is not valid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A listener could not be bound.
    #[error("cannot listen on {what} {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory or the stores could not be opened.
    #[error("cannot open the stores: {0}")]
    Store(String),
    /// The RTMPS certificate could not be loaded.
    #[error("cannot load the RTMPS certificate: {0}")]
    Tls(#[from] config::tls::TlsError),
    /// The operating system gave no random bytes (the SRT listener's cookies and keys need
    /// them).
    #[error(
        "cannot read random bytes from the operating system (needed for SRT cookies and keys): {0}"
    )]
    Entropy(String),
}

/// With a Redis state store, follows its change notifications so every worker drops a
/// stream's cached playlist as soon as the owner lists a segment (the origin then serves it
/// at once instead of after [`stream::REMOTE_RENDER_TTL`]), and reads the tenant directory
/// again when a tenant changes (or the subscription comes back). Without notifications the
/// directory is read every [`tenants::TENANT_REFRESH_INTERVAL`] all the same.
fn spawn_change_listener(
    config: &config::StoreConfig,
    streams: Arc<Streams>,
    tenants: Arc<tenants::Tenants>,
    stop: CancellationToken,
) {
    let mut changes = match store::changes(config) {
        Ok(feed) => Some(feed),
        Err(e) => {
            warn!(error = %e, "redis change notifications unavailable; playlists are re-read every {:?}", stream::REMOTE_RENDER_TTL);
            None
        }
    };
    tokio::spawn(async move {
        let mut poll = tokio::time::interval(tenants::TENANT_REFRESH_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await;
        // One line when reading starts failing and one when it works again, not one every
        // few seconds through a store outage.
        let failing = std::sync::atomic::AtomicBool::new(false);
        let refresh = |why: &'static str| {
            let tenants = tenants.clone();
            let failing = &failing;
            async move {
                use std::sync::atomic::Ordering::Relaxed;
                match tenants.refresh().await {
                    Ok(()) => {
                        if failing.swap(false, Relaxed) {
                            info!("the tenants can be read again");
                        }
                    }
                    Err(e) => {
                        if !failing.swap(true, Relaxed) {
                            warn!(error = %e, why, "cannot read the tenants; the previous ones stay");
                        }
                    }
                }
            }
        };
        loop {
            let next = async {
                match changes.as_mut() {
                    Some(feed) => feed.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                c = next => match c {
                    Some(store::Change::Tenant(_)) => refresh("tenant changed").await,
                    Some(c) => {
                        let resubscribed = c == store::Change::Subscribed;
                        streams.apply_change(c).await;
                        if resubscribed {
                            refresh("change feed subscribed").await;
                        }
                    }
                    None => changes = None,
                },
                _ = poll.tick() => refresh("periodic").await,
                () = stop.cancelled() => return,
            }
        }
    });
}

/// The listeners a worker binds before anything else.
struct Listeners {
    rtmp: TcpListener,
    /// When `--rtmps-listen` is set.
    rtmps: Option<TcpListener>,
    http: TcpListener,
    srt: tokio::net::UdpSocket,
}

/// Binds the RTMP, RTMPS, HTTP and SRT listeners, then writes the addresses they bound into
/// `config` (so a port given as 0 reads as the one the kernel chose, in the worker's
/// advertised addresses, the dashboard and the startup text).
async fn bind_listeners(config: &mut ServeConfig) -> Result<Listeners, ServeError> {
    let bind_error = |what, addr| move |source| ServeError::Bind { what, addr, source };
    let rtmp = TcpListener::bind(config.rtmp_listen)
        .await
        .map_err(bind_error("rtmp", config.rtmp_listen))?;
    let http = TcpListener::bind(config.http_listen)
        .await
        .map_err(bind_error("http", config.http_listen))?;
    let srt = ingest::srt::bind(config.srt_listen, ingest::srt::LISTENER_RECV_BUFFER)
        .map_err(bind_error("srt", config.srt_listen))?;
    config.rtmp_listen = rtmp
        .local_addr()
        .map_err(bind_error("rtmp", config.rtmp_listen))?;
    config.http_listen = http
        .local_addr()
        .map_err(bind_error("http", config.http_listen))?;
    config.srt_listen = srt
        .local_addr()
        .map_err(bind_error("srt", config.srt_listen))?;
    let rtmps = match config.rtmps_listen {
        None => None,
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(bind_error("rtmps", addr))?;
            config.rtmps_listen = Some(l.local_addr().map_err(bind_error("rtmps", addr))?);
            Some(l)
        }
    };
    Ok(Listeners {
        rtmp,
        rtmps,
        http,
        srt,
    })
}

/// Raises the descriptor limit to the hard limit, says what it is, and keeps a reserve of
/// it for storage, state and segment files (`limits::fd_reserve_for`).
fn fd_budget() -> Arc<limits::FdBudget> {
    let limit = limits::raise_fd_limit();
    let reserve = limits::fd_reserve_for(limit.now);
    match &limit.error {
        None => info!(
            limit = limit.now,
            raised_from = limit.before,
            reserve,
            "file descriptors"
        ),
        Some(e) => warn!(
            limit = limit.now,
            reserve,
            error = %e,
            "file descriptors: cannot raise the limit to the hard limit"
        ),
    }
    Arc::new(limits::FdBudget::new(limit.now, reserve))
}

/// Runs the worker until `shutdown` is cancelled (the binary cancels it on SIGTERM/SIGINT).
pub async fn run(mut config: ServeConfig, shutdown: CancellationToken) -> Result<(), ServeError> {
    config.validate()?;
    // Listen before anything touches the stores: a start that cannot bind its ports is not
    // a start, and must not be counted as a restart of this worker id.
    let certificate = match config.tls_files() {
        Some(files) if config.rtmps_listen.is_some() => {
            Some(ingest::rtmps::Certificate::load(files)?)
        }
        _ => None,
    };
    let Listeners {
        rtmp,
        rtmps,
        http,
        srt,
    } = bind_listeners(&mut config).await?;
    let srt_secret = ingest::srt::os_secret().map_err(|e| ServeError::Entropy(e.to_string()))?;
    let fds = fd_budget();
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| ServeError::Store(format!("{}: {e}", config.data_dir.display())))?;
    let metrics = Arc::new(Metrics::new());
    let store_config = config.store()?;
    let (state, media) = store::open(&store_config)
        .await
        .map_err(|e| ServeError::Store(e.to_string()))?;
    let member = Arc::new(worker::Member::new(&config.cluster()));
    // Count this start now, so the restarts gauge is right from the first scrape; the
    // heartbeat retries when the store is unreachable.
    if let Err(e) = member.register(state.as_ref(), &metrics).await {
        warn!(error = %e, "cannot register this worker in the state store yet; retrying");
    }
    let settings = StreamSettings {
        container: config.segment_format.container(),
        segment_ticks: config.segment_ticks(),
        segment_duration: config.segment_duration,
        part_ticks: config.part_duration.ticks(),
        playlist_window: config.playlist_window,
        reconnect_window: config.reconnect_window,
        takeover_policy: config.takeover_policy,
        worker_id: member.id.clone(),
        ended_retention: config.ended_retention,
    };
    let tenant_health = config.tenant_health()?;
    let telemetry = Arc::new(
        telemetry::Telemetry::new(
            metrics.clone(),
            config.health.clone(),
            settings.worker_id.clone(),
        )
        .with_tenant_health(tenant_health),
    );
    let mut lifecycle = Lifecycle::new();
    // Subscribed before anything can emit (the first sweep may end streams).
    let events = config.events()?;
    // Always running: a tenant may be given webhooks of its own at any time (its settings).
    let webhooks_task = webhooks::start(
        &events.webhooks,
        events.webhook_secret.as_deref(),
        events.webhook_timeout,
        telemetry.subscribe(),
        telemetry.tenant_hooks(),
        metrics.clone(),
        lifecycle.stop_at(Phase::Stopped),
    );
    // The task bounds its own flush (webhooks::SHUTDOWN_GRACE).
    lifecycle.wait_at(Phase::Stopped, "webhooks", None, async {
        let _ = webhooks_task.await;
    });
    let on_publish = events.on_publish.as_ref().map(|url| {
        webhooks::OnPublish::new(
            url,
            events.webhook_secret.as_deref(),
            events.on_publish_timeout,
            settings.worker_id.clone(),
            metrics.clone(),
        )
    });
    let streams = Streams::new(
        state.clone(),
        media,
        settings.clone(),
        metrics.clone(),
        telemetry.clone(),
    );
    // The tenants' settings are laid over these (per-tenant SRT, webhooks, segments,
    // reconnect window, health: registry/src/settings.rs).
    let defaults = tidegate_registry::settings::Defaults::new(
        config.srt_passphrase.clone(),
        config.srt_pbkeylen,
        config.srt_latency,
        events.webhook_secret.clone(),
    );
    let tenants = tenants::Tenants::with_defaults(state.clone(), streams.clone(), defaults);
    let declared: Vec<_> = config
        .tenants
        .iter()
        .map(|(name, t)| (name.clone(), t.settings()))
        .collect();
    tenants.set_pool(member.pool.clone());
    tenants
        .declare(&declared)
        .await
        .map_err(|e| ServeError::Store(format!("cannot write the file's tenants: {e}")))?;
    tenants
        .refresh()
        .await
        .map_err(|e| ServeError::Store(format!("cannot read the tenants: {e}")))?;
    // Finish what a previous incarnation left: streams whose publisher is long gone end
    // now; the others wait for what is left of their window (the sweeper keeps watching).
    // After the tenants are read, so each stream's window is its tenant's.
    let recovered = streams
        .sweep()
        .await
        .map_err(|e| ServeError::Store(e.to_string()))?;
    if tenants.is_open() == Some(true) {
        match tenants.pool() {
            None => warn!("OPEN MODE: no tenants are configured, so any stream key is accepted and published as tenant `default`"),
            // --- Dedicated pools (issue #12, item 4) ---
            Some(pool) => warn!(
                pool,
                "OPEN MODE with --pool {pool}: no tenants are configured, so none is of this \
                 worker's pool: it refuses every publisher until a tenant names pool {pool}"
            ),
        }
    } else {
        info!("tenants are configured: publishing needs a stream key");
    }
    // --- Dedicated pools (issue #12, item 4) ---
    if let Some(pool) = tenants.pool() {
        if tenants.is_open() != Some(true) {
            let of_pool = tenants.pool_tenants();
            if of_pool.is_empty() {
                warn!(pool, "this worker serves pool {pool} only, and no tenant names it yet: it refuses every publisher until one does");
            } else {
                info!(pool, tenants = %of_pool.join(","), "this worker serves pool {pool} only");
            }
        }
    }
    if config.admin_token.is_none() {
        warn!("admin API is open: set --admin-token to require a bearer token for /api/v1");
    }
    // Scoped admin tokens (issue #12 item 5).
    if config.admin_token.is_some() || config.metrics_token.is_some() {
        info!("/metrics without a token shows worker-wide series only; --metrics-token or the operator token reads all");
    }
    info!(
        rtmp = %config.rtmp_listen,
        rtmps = ?config.rtmps_listen,
        srt = %config.srt_listen,
        http = %config.http_listen,
        data_dir = %config.data_dir.display(),
        worker = %settings.worker_id,
        pool = tenants.pool().unwrap_or("shared"),
        pulls = config.pull.len(),
        incarnations = member.incarnations(),
        ended_on_start = recovered,
        "tidegate worker started"
    );
    let mut urls = urls::Urls::new(config.rtmp_listen, config.srt_listen, config.http_listen);
    if let Some(addr) = config.rtmps_listen {
        urls = urls.with_rtmps(addr);
    }
    info!("{}", urls.banner(worker::host_name().as_deref()));

    let ingest_config = config.ingest();
    let ingest_limits = Arc::new(ingest::limits::IngestLimits::new(
        &ingest_config,
        fds.clone(),
    ));
    let timeouts = ShutdownTimeouts::from_config(&config);
    // Draining's own work, bounded by itself (`drain`, then `boundary`).
    lifecycle.wait_at(
        Phase::Draining,
        "draining",
        None,
        shutdown::drain_publishers(streams.clone(), timeouts),
    );
    let ingest_ctx = Arc::new(ingest::Context {
        config: ingest_config,
        metrics: metrics.clone(),
        streams: streams.clone(),
        tenants: tenants.clone(),
        on_publish,
        ingest_limits,
    });
    let origin_ctx = Arc::new(tidegate_origin::Context {
        config: config.origin(),
        metrics: metrics.clone(),
        streams: streams.clone(),
        state: state.clone(),
        member: member.clone(),
        tenants: tenants.clone(),
        phase: lifecycle.watch(),
        auth_log: tidegate_origin::access::AuthLog::new(&metrics),
    });
    let heartbeat_task = tokio::spawn(worker::run_heartbeat(
        Arc::new(worker::Heartbeat {
            metrics: metrics.clone(),
            streams: streams.clone(),
            member,
            phase: lifecycle.watch(),
        }),
        state,
        lifecycle.stop_at(Phase::Leaving),
    ));
    lifecycle.wait_at(
        Phase::Leaving,
        "the heartbeat",
        Some(timeouts.leave),
        async {
            let _ = heartbeat_task.await;
        },
    );

    let ingest_stop = lifecycle.stop_at(Phase::Closing);
    let rtmp_task = tokio::spawn(ingest::rtmp::serve(
        rtmp,
        ingest_ctx.clone(),
        ingest_stop.clone(),
    ));
    let rtmps_task = match (rtmps, certificate) {
        (Some(listener), Some(cert)) => {
            tokio::spawn(cert.clone().watch(metrics.clone(), ingest_stop.clone()));
            Some(tokio::spawn(ingest::rtmps::serve(
                listener,
                ingest_ctx.clone(),
                cert,
                ingest_stop.clone(),
            )))
        }
        _ => None,
    };
    let srt_task = tokio::spawn(ingest::srt::serve(
        srt,
        srt_secret,
        ingest_ctx.clone(),
        ingest_stop.clone(),
    ));
    let pulls = tokio_util::task::TaskTracker::new();
    for p in config.pulls()? {
        pulls.spawn(ingest::srt_pull::run(
            ingest_ctx.clone(),
            p,
            ingest_stop.clone(),
        ));
    }
    pulls.close();
    lifecycle.wait_at(
        Phase::Closing,
        "publishers",
        Some(timeouts.ingest_close),
        async move {
            info!("shutdown: closing remaining connections and flushing their last segments");
            let _ = rtmp_task.await;
            if let Some(task) = rtmps_task {
                let _ = task.await;
            }
            let _ = srt_task.await;
            pulls.wait().await;
        },
    );
    tokio::spawn(
        streams
            .clone()
            .run_sweeper(lifecycle.stop_at(Phase::Leaving)),
    );
    spawn_change_listener(
        &store_config,
        streams.clone(),
        tenants,
        lifecycle.stop_at(Phase::Leaving),
    );
    let http_task = {
        let limits = http::HttpLimits::from_config(&config.http());
        http::log_limits(&limits, &fds);
        tokio::spawn(http::serve(
            http,
            origin::app(origin_ctx),
            limits,
            fds.clone(),
            metrics.clone(),
            lifecycle.stop_at(Phase::Offline),
        ))
    };
    lifecycle.wait_at(Phase::Offline, "HTTP", Some(timeouts.http_close), async {
        let _ = http_task.await;
    });

    shutdown.cancelled().await;
    lifecycle.shut_down().await;
    info!("shutdown: done");
    Ok(())
}
