//! The `tidegate` binary: parses the command line, layers configuration
//! (flags > `TIDEGATE_*` environment > `--config` TOML file > defaults) and runs the worker.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tidegate_server::config::{PartDuration, PullConfig, SegmentFormat, TakeoverPolicy};
use tidegate_server::ServeConfig;
use tokio_util::sync::CancellationToken;

mod admin;
mod bench;

/// The allocator of every `tidegate` process: mimalloc (built without transparent huge
/// pages), not glibc's malloc, whose `_int_malloc`/`unlink_chunk`/`malloc_consolidate` took
/// about a fifth of a worker's samples serving 2,000 LL-HLS viewers (hyper's 8 KiB read
/// buffer per request, headers, bodies; docs/decisions/0021-mimalloc.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Threads of the runtime's blocking pool (see the runtime builder in `main`).
const BLOCKING_THREADS: usize = 64;

#[derive(Parser)]
#[command(
    name = "tidegate",
    version,
    about = "Unbreakable live-video ingest: RTMP/SRT in, HLS out",
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an ingest worker (RTMP, SRT and HTTP listeners).
    Serve(ServeArgs),
    /// Parse and validate the configuration, print the effective result, and exit.
    CheckConfig(ServeArgs),
    /// Load generator: N paced publishers (and M HLS viewers) from one media file, with a
    /// report.
    Bench(bench::BenchArgs),
    /// Manage tenants through the admin API (create, list, show, update, delete; token).
    Tenant(admin::TenantArgs),
    /// Manage a tenant's stream keys through the admin API (create, list, rotate, revoke).
    Key(admin::KeyArgs),
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// Every flag of `serve`. Each is optional here so that unset flags fall through to the
/// environment (clap's `env`), then to the file, then to the default.
#[derive(Args, Debug, Default)]
#[command(args_override_self = true)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "TIDEGATE_CONFIG")]
    config: Option<PathBuf>,
    /// RTMP publishers [default: 0.0.0.0:1935].
    #[arg(long, env = "TIDEGATE_RTMP_LISTEN")]
    rtmp_listen: Option<SocketAddr>,
    /// RTMP over TLS publishers (needs --tls-cert and --tls-key) [default: off].
    #[arg(long, env = "TIDEGATE_RTMPS_LISTEN")]
    rtmps_listen: Option<SocketAddr>,
    /// PEM certificate chain for RTMPS, leaf first (reloaded when the file changes).
    #[arg(long, env = "TIDEGATE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of the RTMPS certificate (reloaded when the file changes).
    #[arg(long, env = "TIDEGATE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// SRT publishers (UDP) [default: 0.0.0.0:9000].
    #[arg(long, env = "TIDEGATE_SRT_LISTEN")]
    srt_listen: Option<SocketAddr>,
    /// Playback origin, API, dashboard, metrics, health [default: 0.0.0.0:8080].
    #[arg(long, env = "TIDEGATE_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// Embedded state and media [default: ./tidegate-data].
    #[arg(long, env = "TIDEGATE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Shared stream state for a cluster, e.g. redis://host:6379/0 [default: embedded].
    #[arg(long, env = "TIDEGATE_STATE")]
    state: Option<String>,
    /// Where segments go, e.g. s3://bucket/prefix or file:///path [default: embedded].
    #[arg(long, env = "TIDEGATE_STORAGE")]
    storage: Option<String>,
    /// Target segment duration [default: 2s].
    #[arg(long, env = "TIDEGATE_SEGMENT_DURATION", value_parser = duration)]
    segment_duration: Option<Duration>,
    /// LL-HLS part / low-latency DASH chunk target: 200ms to 1s, or off [default: 1/3 s].
    #[arg(long, env = "TIDEGATE_PART_DURATION")]
    part_duration: Option<PartDuration>,
    /// How long a stream waits for its publisher to come back [default: 30s].
    #[arg(long, env = "TIDEGATE_RECONNECT_WINDOW", value_parser = duration)]
    reconnect_window: Option<Duration>,
    /// The dedicated tenant pool this worker serves [default: shared].
    #[arg(long, env = "TIDEGATE_POOL")]
    pool: Option<String>,
    /// Passphrase SRT publishers must encrypt with.
    #[arg(long, env = "TIDEGATE_SRT_PASSPHRASE")]
    srt_passphrase: Option<String>,
    /// AES key length SRT callers must use: 16, 24, 32, or 0 for the caller's [default: 0].
    #[arg(long, env = "TIDEGATE_SRT_PBKEYLEN")]
    srt_pbkeylen: Option<u8>,
    /// SRT receive latency [default: 120ms].
    #[arg(long, env = "TIDEGATE_SRT_LATENCY", value_parser = duration)]
    srt_latency: Option<Duration>,
    /// HLS segment container: fmp4 or ts [default: fmp4].
    #[arg(long, env = "TIDEGATE_SEGMENT_FORMAT")]
    segment_format: Option<SegmentFormat>,
    /// Segments in the sliding-window playlist [default: 10].
    #[arg(long, env = "TIDEGATE_PLAYLIST_WINDOW")]
    playlist_window: Option<usize>,
    /// Time an RTMP client has to finish its handshake [default: 10s].
    #[arg(long, env = "TIDEGATE_RTMP_HANDSHAKE_TIMEOUT", value_parser = duration)]
    rtmp_handshake_timeout: Option<Duration>,
    /// Time a publishing connection may stay silent [default: 30s].
    #[arg(long, env = "TIDEGATE_RTMP_IDLE_TIMEOUT", value_parser = duration)]
    rtmp_idle_timeout: Option<Duration>,
    /// Who wins when a second publisher arrives for a live stream: newest or refuse [default: newest].
    #[arg(long, env = "TIDEGATE_TAKEOVER_POLICY")]
    takeover_policy: Option<TakeoverPolicy>,
    /// On SIGTERM, how long live publishers may stay before they are moved [default: 30s].
    #[arg(long, env = "TIDEGATE_DRAIN_TIMEOUT", value_parser = duration)]
    drain_timeout: Option<Duration>,
    /// Bearer token every /api/v1 call requires [default: none, open].
    #[arg(long, env = "TIDEGATE_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// URL that receives signed stream events (repeat the flag for several; the variable
    /// takes a comma-separated list) [default: none].
    #[arg(
        long = "webhook-url",
        env = "TIDEGATE_WEBHOOK_URLS",
        value_delimiter = ','
    )]
    webhook_urls: Vec<String>,
    /// Secret webhook and on-publish requests are signed with (HMAC-SHA256, 16+ characters).
    #[arg(long, env = "TIDEGATE_WEBHOOK_SECRET")]
    webhook_secret: Option<String>,
    /// Time one webhook attempt may take before it is retried [default: 5s].
    #[arg(long, env = "TIDEGATE_WEBHOOK_TIMEOUT", value_parser = duration)]
    webhook_timeout: Option<Duration>,
    /// Authorisation callback asked before a publisher is accepted (2xx accepts) [default: none].
    #[arg(long, env = "TIDEGATE_ON_PUBLISH")]
    on_publish: Option<String>,
    /// Time the on-publish callback may take; the publisher is refused after it [default: 3s].
    #[arg(long, env = "TIDEGATE_ON_PUBLISH_TIMEOUT", value_parser = duration)]
    on_publish_timeout: Option<Duration>,
    /// Pull stream KEY from a remote SRT listener: KEY=srt://HOST:PORT?streamid=..&passphrase=..
    /// (repeatable; in the environment, space-separated). Replaces the file's [[pull]] list.
    #[arg(
        long = "pull",
        env = "TIDEGATE_PULL",
        value_name = "KEY=URL",
        value_delimiter = ' '
    )]
    pull: Vec<PullConfig>,
    /// This worker's id in the cluster, stable across restarts [default: HOSTNAME-HTTPPORT].
    #[arg(long, env = "TIDEGATE_WORKER_ID")]
    worker_id: Option<String>,
    // --- ingest limits (issue 10, RTMP side) ---
    /// Most open ingest connections, RTMP and SRT together [default: 1024].
    #[arg(long, env = "TIDEGATE_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Most open ingest connections from one source address [default: 64].
    #[arg(long, env = "TIDEGATE_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// Most live publishers on this worker [default: 512].
    #[arg(long, env = "TIDEGATE_MAX_PUBLISHERS")]
    max_publishers: Option<usize>,
    /// Time one write to an RTMP peer may take before the peer is dropped [default: 10s].
    #[arg(long, env = "TIDEGATE_RTMP_WRITE_TIMEOUT", value_parser = duration)]
    rtmp_write_timeout: Option<Duration>,
    // --- HTTP limits (issue #10, helper `http`) ---
    /// Most HTTP connections open at once; more are closed on accept [default: 4096].
    #[arg(long, env = "TIDEGATE_HTTP_MAX_CONNECTIONS")]
    http_max_connections: Option<usize>,
    /// Most HTTP connections from one source address (IPv6: one /64) [default: 256].
    #[arg(long, env = "TIDEGATE_HTTP_MAX_CONNECTIONS_PER_IP")]
    http_max_connections_per_ip: Option<usize>,
    /// Time a client has to send a request's head [default: 10s].
    #[arg(long, env = "TIDEGATE_HTTP_HEADER_TIMEOUT", value_parser = duration)]
    http_header_timeout: Option<Duration>,
    /// Time a connection may move nothing with no request pending before it is closed [default: 60s].
    #[arg(long, env = "TIDEGATE_HTTP_IDLE_TIMEOUT", value_parser = duration)]
    http_idle_timeout: Option<Duration>,
    /// How long an ended stream stays listed before its record and media are deleted [default: 1h].
    #[arg(long, env = "TIDEGATE_ENDED_RETENTION", value_parser = duration)]
    ended_retention: Option<Duration>,
    // --- key guessing (issue #12, helper `attack`) ---
    /// Wrong stream keys one address (IPv6: one /64) may try within --bad-key-window before
    /// its publishes are refused for --bad-key-backoff; 0 turns it off [default: 10].
    #[arg(long, env = "TIDEGATE_BAD_KEY_LIMIT")]
    bad_key_limit: Option<u32>,
    /// The window --bad-key-limit counts wrong keys in [default: 1m].
    #[arg(long, env = "TIDEGATE_BAD_KEY_WINDOW", value_parser = duration)]
    bad_key_window: Option<Duration>,
    /// How long an address past --bad-key-limit is refused [default: 1m].
    #[arg(long, env = "TIDEGATE_BAD_KEY_BACKOFF", value_parser = duration)]
    bad_key_backoff: Option<Duration>,
    // --- scoped admin tokens (issue #12 item 5) ---
    /// Bearer token that reads all of /metrics (for Prometheus); with it or --admin-token
    /// set, a scrape without a token sees only worker-wide series [default: none].
    #[arg(long, env = "TIDEGATE_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
}

impl ServeArgs {
    /// File (or defaults), then every flag or variable that was given.
    fn resolve(self) -> anyhow::Result<ServeConfig> {
        let mut c = match &self.config {
            Some(path) => ServeConfig::from_file(path)?,
            None => ServeConfig::default(),
        };
        macro_rules! overlay {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { c.$field = v; } )* };
        }
        macro_rules! overlay_opt {
            ($($field:ident),*) => { $( if self.$field.is_some() { c.$field = self.$field; } )* };
        }
        overlay!(
            rtmp_listen,
            srt_listen,
            http_listen,
            data_dir,
            segment_duration,
            part_duration,
            reconnect_window,
            srt_latency,
            srt_pbkeylen,
            segment_format,
            playlist_window,
            rtmp_handshake_timeout,
            rtmp_idle_timeout,
            takeover_policy,
            drain_timeout,
            webhook_timeout,
            on_publish_timeout,
            ended_retention
        );
        // --- ingest limits (issue 10, RTMP side) ---
        overlay!(
            max_connections,
            max_connections_per_ip,
            max_publishers,
            rtmp_write_timeout
        );
        overlay_opt!(
            rtmps_listen,
            tls_cert,
            tls_key,
            state,
            storage,
            pool,
            srt_passphrase,
            admin_token,
            webhook_secret,
            on_publish,
            worker_id
        );
        // HTTP limits (issue #10, helper `http`).
        overlay!(
            http_max_connections,
            http_max_connections_per_ip,
            http_header_timeout,
            http_idle_timeout
        );
        // Key guessing (issue #12, helper `attack`).
        overlay!(bad_key_limit, bad_key_window, bad_key_backoff);
        // Scoped admin tokens (issue #12 item 5).
        overlay_opt!(metrics_token);
        if !self.webhook_urls.is_empty() {
            c.webhooks = self.webhook_urls;
        }
        if !self.pull.is_empty() {
            c.pull = self.pull;
        }
        Ok(c)
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

/// Prints a failure as one line an operator can act on: `error: ` and the message, then each
/// cause the message does not already quote (a bind error names its address and the OS
/// error once). No backtrace, even with `RUST_BACKTRACE=1` (panics keep theirs): with
/// `TIDEGATE_LOG` set to debug or trace, the error's full chain follows, with the backtrace
/// when `RUST_BACKTRACE` had it captured.
fn report(e: &anyhow::Error) {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    eprintln!("error: {line}");
    let verbose =
        std::env::var("TIDEGATE_LOG").is_ok_and(|v| v.contains("debug") || v.contains("trace"));
    if verbose {
        eprintln!("\n{e:?}");
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Tenant(args) => admin::tenant(args),
        Command::Key(args) => admin::key(args),
        Command::CheckConfig(args) => {
            let config = args.resolve()?;
            config.validate()?;
            println!("{}", toml::to_string_pretty(&config.redacted())?);
            eprintln!("configuration is valid");
            Ok(())
        }
        Command::Serve(args) => {
            init_tracing();
            let config = args.resolve()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                // The blocking pool runs the embedded stores' file work (store/fs.rs: segment
                // and record writes, reads, deletes; tokio::fs). Each publish session's writer
                // does one such job at a time, so the jobs in flight are bounded by the
                // publishers (--max-publishers) plus the origin's reads; 64 threads keep a disk
                // busy, and past them jobs wait in tokio's queue instead of each growing the
                // process by a thread (tokio's default of 512 let 300 publishers leave 515
                // threads behind).
                .max_blocking_threads(BLOCKING_THREADS)
                .thread_name("tidegate")
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(async move {
                let shutdown = CancellationToken::new();
                tokio::spawn(wait_for_signal(shutdown.clone()));
                tidegate_server::run(config, shutdown).await
            })?;
            Ok(())
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDEGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}
