//! A running `tidegate serve` on loopback ports chosen at run time, and what a test asks
//! of it (URLs, the stream API, metrics, signals).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::http::{get, try_get, try_get_with};
use crate::paths::tidegate_bin;
use crate::ports::{free_tcp_port, free_udp_port};
use crate::process::Proc;

/// A `[health]` config section whose short windows turn a stalled stream `warning` within a
/// few seconds (defaults: 10 s warm-up, 5 s low, 60 s average window, 10 s dwell).
pub const FAST_HEALTH_TOML: &str = r#"
[health]
warmup = "2s"
relative-window = "10s"
low-bitrate-for = "2s"
recover-after = "2s"
min-dwell = "1s"
"#;

/// Target segment duration the tests run the server with (its default).
pub const SEGMENT_SECS: f64 = 2.0;

/// A running `tidegate serve` on loopback ports chosen at run time.
pub struct Server {
    /// The process (logs to stderr, captured in `proc.log`).
    pub proc: Proc,
    /// RTMP listen address.
    pub rtmp: SocketAddr,
    /// HTTP listen address.
    pub http: SocketAddr,
    /// SRT listen address (UDP).
    pub srt: SocketAddr,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The token [`Server::metrics`] scrapes with: the `--metrics-token` or `--admin-token`
    /// it was started with (a protected worker shows an anonymous scrape only worker-wide
    /// series).
    pub scrape_token: Option<String>,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server on a fresh data directory with extra flags, and waits until ready.
    pub fn start(extra: &[&str]) -> Server {
        let tmp = tempfile::Builder::new()
            .prefix("tidegate-test-")
            .tempdir()
            .unwrap();
        let mut s = Server::start_in(tmp.path(), extra);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on `data_dir` (kept by the caller, e.g. across a restart).
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Server {
        let exe = tidegate_bin();
        let rtmp: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let srt: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .arg("--rtmp-listen")
            .arg(rtmp.to_string())
            .arg("--http-listen")
            .arg(http.to_string())
            .arg("--srt-listen")
            .arg(srt.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra);
        cmd.env("NO_COLOR", "1");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let mut s = Server::spawned(Proc::spawn("tidegate", cmd), rtmp, http, srt, data_dir);
        s.scrape_token = scrape_token(extra.iter().copied());
        s.wait_ready(Duration::from_secs(20));
        s
    }

    /// A server whose process was just spawned with these addresses (not waited for).
    pub(crate) fn spawned(
        proc: Proc,
        rtmp: SocketAddr,
        http: SocketAddr,
        srt: SocketAddr,
        data_dir: &Path,
    ) -> Server {
        Server {
            proc,
            rtmp,
            http,
            srt,
            data_dir: data_dir.to_path_buf(),
            scrape_token: None,
            _tmp: None,
        }
    }

    /// Waits until `/readyz` answers 200; panics with the log if the process exits first
    /// or `timeout` passes.
    pub(crate) fn wait_ready(&mut self, timeout: Duration) {
        let url = self.url("/readyz");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.proc.try_exit() {
                panic!(
                    "tidegate exited during startup with {status}; log:\n{}",
                    self.proc.log_tail(100)
                );
            }
            if let Ok(r) = try_get(&url) {
                if r.status == 200 {
                    return;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "tidegate not ready ({url}) after {timeout:?}; log:\n{}",
                    self.proc.log_tail(100)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:P{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// `rtmp://127.0.0.1:P/live/KEY`.
    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://{}/live/{key}", self.rtmp)
    }

    /// `GET /api/v1/streams/default/KEY` as JSON (`null` while the stream does not exist);
    /// panics on any other answer than 200 or 404.
    pub fn stream_json(&self, key: &str) -> serde_json::Value {
        let r = get(&self.url(&format!("/api/v1/streams/default/{key}")));
        match r.status {
            404 => serde_json::Value::Null,
            200 => serde_json::from_slice(&r.body).unwrap(),
            s => panic!("API answered {s}: {}", r.text()),
        }
    }

    /// Polls [`Server::stream_json`] until `pred` holds for it and returns that view;
    /// panics with the last view and the server's log after `timeout`.
    pub fn wait_stream_json(
        &self,
        key: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.stream_json(key);
            if pred(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{key}: {what} not seen within {timeout:?}; API: {v}\nserver log:\n{}",
                self.proc.log_tail(40)
            );
            thread::sleep(Duration::from_millis(300));
        }
    }

    /// The open-mode HLS media playlist of stream `key`.
    pub fn playlist_url(&self, key: &str) -> String {
        self.url(&format!("/hls/default/{key}/index.m3u8"))
    }

    /// `kill -9` (no chance to flush or say goodbye).
    pub fn kill9(&mut self) {
        self.proc.kill();
    }

    /// Asserts the process is still running.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.proc.try_exit() {
            panic!(
                "tidegate died with {status}; log:\n{}",
                self.proc.log_tail(100)
            );
        }
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        self.proc.log_text()
    }

    /// Fetches `/metrics` and returns its text.
    pub fn metrics(&self) -> String {
        let r = try_get_with(&self.url("/metrics"), self.scrape_token.as_deref())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status, 200, "/metrics status");
        r.text()
    }

    /// Runs the admin command `tidegate ARGS --api URL [--token T]` against this server
    /// (the environment's token and API address removed): (success, stdout, stderr).
    pub fn cli(&self, token: Option<&str>, args: &[&str]) -> (bool, String, String) {
        let mut cmd = Command::new(tidegate_bin());
        cmd.args(args).args(["--api", &self.url("")]);
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        let out = cmd
            .env_remove("TIDEGATE_ADMIN_TOKEN")
            .env_remove("TIDEGATE_API")
            .output()
            .expect("run tidegate");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The token that reads all of `/metrics` among a worker's flags: `--metrics-token`, else
/// `--admin-token`.
pub(crate) fn scrape_token<'a>(args: impl Iterator<Item = &'a str>) -> Option<String> {
    let args: Vec<&str> = args.collect();
    ["--metrics-token", "--admin-token"]
        .iter()
        .find_map(|flag| {
            args.windows(2)
                .find(|w| w[0] == *flag)
                .map(|w| w[1].to_owned())
                .or_else(|| {
                    let prefix = format!("{flag}=");
                    args.iter()
                        .find_map(|a| a.strip_prefix(prefix.as_str()).map(str::to_owned))
                })
        })
}
