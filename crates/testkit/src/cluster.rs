//! A local cluster on loopback: Redis + S3 (moto) + N workers + HAProxy (TCP mode) for
//! RTMP, and the checks that span its workers (one stream's playlist followed on several of
//! them, segment epochs).

use std::collections::BTreeMap;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::backends::{MotoS3, RedisServer, TcpGate};
use crate::hls::{check_progress, fetch_all_media, fetch_playlist, Expect, MediaPlaylist, Segment};
use crate::http::try_get;
use crate::paths::tidegate_bin;
use crate::ports::{free_tcp_port, free_udp_port};
use crate::process::Proc;
use crate::server::Server;
use crate::tools::require_cmd;

/// How a [`Cluster`] is started.
#[derive(Debug, Clone)]
pub struct ClusterOpts {
    /// Number of workers.
    pub workers: usize,
    /// Extra `tidegate serve` flags for every worker.
    pub worker_args: Vec<String>,
    /// HAProxy closes the sessions of a worker it marks down (`on-marked-down
    /// shutdown-sessions`): a hung (SIGSTOPped) worker's publisher is cut loose and
    /// reconnects elsewhere, as an encoder's own timeout would do. Off for drain tests,
    /// where the worker itself must move its publishers.
    pub shutdown_sessions_on_down: bool,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            workers: 3,
            worker_args: Vec::new(),
            shutdown_sessions_on_down: true,
        }
    }
}

/// HAProxy's health-check period on each worker's `/readyz` (and the check timeout).
pub const HAPROXY_CHECK_MS: u64 = 300;

/// A local cluster on loopback: `redis-server` (append-only), moto S3 behind a
/// [`TcpGate`], N `tidegate serve` workers with `--state redis://… --storage s3://…`, and
/// HAProxy in TCP mode on one RTMP port (the stand-in for a Kubernetes Service), checking
/// each worker's `/readyz` every [`HAPROXY_CHECK_MS`], so a dead or draining worker is taken
/// out. Everything is killed on drop.
pub struct Cluster {
    /// The workers, in start order (a killed one stays in the list, dead).
    pub workers: Vec<Server>,
    /// HAProxy.
    pub haproxy: Proc,
    /// HAProxy's RTMP frontend.
    pub rtmp: SocketAddr,
    /// The state store.
    pub redis: RedisServer,
    /// The gate in front of S3 (close it for an object-storage outage).
    pub s3_gate: TcpGate,
    /// The S3 server.
    pub s3: MotoS3,
    /// The run directory (configs, Redis files, worker data dirs).
    pub dir: tempfile::TempDir,
    /// Workers stopped with SIGSTOP (left out of [`Cluster::running`]).
    pub paused: Vec<usize>,
}

impl Cluster {
    /// Starts everything and waits until every worker is ready and HAProxy listens.
    pub fn start(opts: ClusterOpts) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("tidegate-cluster-")
            .tempdir()
            .unwrap();
        let redis_dir = dir.path().join("redis");
        fs::create_dir_all(&redis_dir).unwrap();
        let redis = RedisServer::start(&redis_dir);
        let s3 = MotoS3::start("tidegate");
        let s3_gate = TcpGate::new(s3.addr);
        let mut workers = Vec::new();
        for i in 0..opts.workers {
            workers.push(Self::spawn_worker(
                dir.path(),
                i,
                &redis.url(),
                s3_gate.addr,
                &s3.bucket,
                &opts.worker_args,
            ));
        }
        for w in &mut workers {
            w.wait_ready(Duration::from_secs(30));
        }
        let rtmp: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let cfg = dir.path().join("haproxy.cfg");
        fs::write(
            &cfg,
            haproxy_config(rtmp, &workers, opts.shutdown_sessions_on_down),
        )
        .unwrap();
        let mut check = Command::new(require_cmd("haproxy"));
        let out = check.arg("-c").arg("-f").arg(&cfg).output().unwrap();
        assert!(
            out.status.success(),
            "haproxy -c rejects the config: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cmd = Command::new(require_cmd("haproxy"));
        cmd.arg("-db").arg("-f").arg(&cfg);
        let mut haproxy = Proc::spawn("haproxy", cmd);
        haproxy.wait_ready(
            "haproxy to listen",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || TcpStream::connect(rtmp).ok(),
        );
        Cluster {
            workers,
            haproxy,
            rtmp,
            redis,
            s3_gate,
            s3,
            dir,
            paused: Vec::new(),
        }
    }

    /// `SIGSTOP`s worker `i`: it keeps its sockets but does nothing (a hung process, a
    /// long GC pause, a partitioned node).
    pub fn pause(&mut self, i: usize) {
        self.workers[i].proc.signal(19);
        self.paused.push(i);
    }

    /// `SIGCONT`s worker `i`.
    pub fn resume(&mut self, i: usize) {
        self.workers[i].proc.signal(18);
        self.paused.retain(|&p| p != i);
    }

    fn spawn_worker(
        run: &Path,
        i: usize,
        redis: &str,
        s3: SocketAddr,
        bucket: &str,
        extra: &[String],
    ) -> Server {
        let data_dir = run.join(format!("worker-{i}"));
        fs::create_dir_all(&data_dir).unwrap();
        let rtmp: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let srt: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        let mut cmd = Command::new(tidegate_bin());
        cmd.arg("serve")
            .args(["--rtmp-listen", &rtmp.to_string()])
            .args(["--http-listen", &http.to_string()])
            .args(["--srt-listen", &srt.to_string()])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--state", redis])
            .args(["--storage", &format!("s3://{bucket}/live")])
            .args(extra);
        cmd.env("NO_COLOR", "1")
            .env("AWS_ENDPOINT_URL", format!("http://{s3}"))
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_ENDPOINT")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_VIRTUAL_HOSTED_STYLE_REQUEST")
            .env_remove("TIDEGATE_STATE")
            .env_remove("TIDEGATE_STORAGE");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let mut server = Server::spawned(
            Proc::spawn(&format!("tidegate-w{i}"), cmd),
            rtmp,
            http,
            srt,
            &data_dir,
        );
        server.scrape_token = crate::server::scrape_token(extra.iter().map(String::as_str));
        server
    }

    /// `rtmp://HAPROXY/live/KEY`.
    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://{}/live/{key}", self.rtmp)
    }

    /// Indices of the workers whose process is still running (and not paused).
    pub fn running(&mut self) -> Vec<usize> {
        (0..self.workers.len())
            .filter(|&i| self.workers[i].proc.is_running() && !self.paused.contains(&i))
            .collect()
    }

    /// The worker whose process holds `key` now (the record's owner, as any running worker
    /// reports it), if the stream is live.
    pub fn owner_of(&mut self, key: &str) -> Option<usize> {
        for i in self.running() {
            let url = self.workers[i].url(&format!("/api/v1/streams/default/{key}"));
            let Ok(r) = try_get(&url) else { continue };
            if r.status != 200 {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.body) else {
                continue;
            };
            let owner = v["worker"].as_str().unwrap_or_default().to_string();
            let live = !matches!(v["status"].as_str(), Some("reconnecting" | "offline"));
            if !live {
                return None;
            }
            return (0..self.workers.len())
                // The default worker id is `HOST-HTTPPORT`.
                .find(|&j| owner.ends_with(&format!("-{}", self.workers[j].http.port())));
        }
        None
    }

    /// Waits until `key` is live on some worker and returns it.
    pub fn wait_owner(&mut self, key: &str, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.owner_of(key) {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "no worker holds {key} after {timeout:?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every worker's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for (i, w) in self.workers.iter().enumerate() {
            s.push_str(&format!(
                "----- worker {i} -----\n{}\n",
                w.proc.log_tail(40)
            ));
        }
        s
    }
}

/// The HAProxy configuration of a [`Cluster`] (and the shape `deploy/local/cluster.sh`
/// writes): TCP mode, a connect failure is retried on another worker (`option
/// redispatch`), `/readyz` checked every [`HAPROXY_CHECK_MS`].
pub fn haproxy_config(frontend: SocketAddr, workers: &[Server], shutdown_sessions: bool) -> String {
    let ms = HAPROXY_CHECK_MS;
    let mut cfg = format!(
        "global\n  maxconn 2000\n\n\
         defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n  \
         timeout check {ms}ms\n  retries 3\n  option redispatch\n\n\
         frontend rtmp\n  bind {frontend}\n  default_backend workers\n\n\
         backend workers\n  balance leastconn\n  option httpchk GET /readyz\n  \
         http-check expect status 200\n  \
         default-server inter {ms}ms fastinter {ms}ms downinter {ms}ms fall 2 rise 2{}\n",
        if shutdown_sessions {
            " on-marked-down shutdown-sessions"
        } else {
            ""
        }
    );
    for (i, w) in workers.iter().enumerate() {
        cfg.push_str(&format!(
            "  server w{i} {} check port {}\n",
            w.rtmp,
            w.http.port()
        ));
    }
    cfg
}

/// The sequence number in a segment name `seg-EPOCH-N.ext`: `(EPOCH, N)`.
pub fn segment_epoch_index(uri: &str) -> Option<(u64, u64)> {
    let stem = uri.rsplit('/').next()?.strip_prefix("seg-")?;
    let stem = stem.split('.').next()?;
    let (e, n) = stem.split_once('-')?;
    Some((e.parse().ok()?, n.parse().ok()?))
}

/// Follows one stream's playlist on several workers at once: every fetch must answer 200
/// and pass the RFC checks and the progress rules against the previous fetch from the same
/// worker; every segment URL is fetched once when first listed, and
/// [`ClusterWatch::fetch_all_listed`] re-fetches everything listed.
#[derive(Default)]
pub struct ClusterWatch {
    prev: BTreeMap<usize, MediaPlaylist>,
    /// Segment file names (without the worker's address) ever listed, by msn.
    pub listed: BTreeMap<u64, String>,
    fetched: std::collections::BTreeSet<String>,
    /// Playlist fetches that passed.
    pub fetches: usize,
}

impl ClusterWatch {
    /// Fetches and checks the playlist of worker `i` at `url`; fetches newly listed media.
    pub fn observe(
        &mut self,
        i: usize,
        url: &str,
        expect: &Expect,
    ) -> Result<MediaPlaylist, String> {
        let pl = fetch_playlist(url, expect).map_err(|e| format!("worker {i}: {e}"))?;
        if let Some(prev) = self.prev.get(&i) {
            check_progress(prev, &pl).map_err(|e| {
                format!(
                    "worker {i}: {e}\n--- before:\n{}\n--- after:\n{}",
                    prev.text, pl.text
                )
            })?;
        }
        for s in &pl.segments {
            if let Some(old) = self.listed.get(&s.msn) {
                if old != &s.uri {
                    return Err(format!(
                        "worker {i}: msn {} is {} here but was {old} before\n{}",
                        s.msn, s.uri, pl.text
                    ));
                }
            }
            self.listed.insert(s.msn, s.uri.clone());
        }
        let fresh: Vec<Segment> = pl
            .segments
            .iter()
            .filter(|s| !self.fetched.contains(&s.uri))
            .cloned()
            .collect();
        if !fresh.is_empty() {
            let mut sub = pl.clone();
            sub.segments = fresh.clone();
            fetch_all_media(&sub).map_err(|e| format!("worker {i}: {e}\n{}", pl.text))?;
            self.fetched.extend(fresh.into_iter().map(|s| s.uri));
        }
        self.prev.insert(i, pl.clone());
        self.fetches += 1;
        Ok(pl)
    }

    /// Applies the checks of [`ClusterWatch::observe`] to a playlist already fetched from
    /// worker `i`.
    pub fn accept_for(&mut self, i: usize, pl: &MediaPlaylist) {
        if let Some(prev) = self.prev.get(&i) {
            check_progress(prev, pl).unwrap_or_else(|e| {
                panic!(
                    "worker {i}: {e}\n--- before:\n{}\n--- after:\n{}",
                    prev.text, pl.text
                )
            });
        }
        self.fetch_all_listed(pl).unwrap_or_else(|e| panic!("{e}"));
        for s in &pl.segments {
            self.listed.insert(s.msn, s.uri.clone());
            self.fetched.insert(s.uri.clone());
        }
        self.prev.insert(i, pl.clone());
    }

    /// Fetches every map and segment `pl` lists (all must answer 200).
    pub fn fetch_all_listed(&self, pl: &MediaPlaylist) -> Result<(), String> {
        fetch_all_media(pl)
            .map(|_| ())
            .map_err(|e| format!("{e}\n--- playlist:\n{}", pl.text))
    }
}

/// Checks a finished cluster playlist: segment epochs never go back, each epoch's segment
/// indices are contiguous unless the next listed one carries `EXT-X-DISCONTINUITY`, and
/// every change of epoch carries one. Returns the missing (epoch, index) pairs.
pub fn check_epochs(pl: &MediaPlaylist) -> Result<Vec<(u64, u64)>, String> {
    let mut missing = Vec::new();
    let mut prev: Option<(u64, u64)> = None;
    for s in &pl.segments {
        let (e, n) = segment_epoch_index(&s.uri)
            .ok_or_else(|| format!("segment name {} is not seg-EPOCH-N", s.uri))?;
        if let Some((pe, pn)) = prev {
            if e < pe {
                return Err(format!("epoch went back at {}:\n{}", s.uri, pl.text));
            }
            if e > pe && !s.discontinuity {
                return Err(format!(
                    "new epoch at {} without a discontinuity:\n{}",
                    s.uri, pl.text
                ));
            }
            if e == pe && n != pn + 1 {
                if !s.discontinuity {
                    return Err(format!(
                        "segments {pe}-{pn} .. {e}-{n} missing without a discontinuity:\n{}",
                        pl.text
                    ));
                }
                missing.extend((pn + 1..n).map(|k| (e, k)));
            }
        }
        prev = Some((e, n));
    }
    Ok(missing)
}
