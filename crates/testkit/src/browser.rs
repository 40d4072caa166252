//! Real players in Debian's headless chromium, driven from a test: hls.js, dash.js and Shaka
//! Player (the npm packages pinned in `crates/cli/tests/browser/package.json`), several at
//! once in one browser, each on a page of its own (`crates/cli/tests/browser/players.mjs`).
//! A test starts them with [`Players::start`], watches their progress lines while it acts
//! on the cluster ([`Players::wait_line`]), then stops them and reads what each reported
//! ([`Players::finish`], [`PlayerReport`]).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::paths::log_dir;
use crate::tools::{require_cmd, tool_missing};

/// The npm project of the browser tests (`crates/cli/tests/browser`).
pub fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../cli/tests/browser")
}

/// Debian's chromium (`$CHROMIUM` or `/usr/bin/chromium`) and node, with the npm modules
/// `modules` installed in [`browser_dir`]: (node, chromium), or a panic naming the missing
/// tool and `scripts/install-test-tools.sh`.
pub fn require_browser(modules: &[&str]) -> (PathBuf, PathBuf) {
    let node = require_cmd("node");
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    if !chromium.is_file() {
        tool_missing("chromium", "Debian package chromium");
    }
    for module in ["playwright-core"].iter().chain(modules) {
        if !browser_dir()
            .join(format!("node_modules/{module}/package.json"))
            .is_file()
        {
            tool_missing(module, "npm ci in crates/cli/tests/browser");
        }
    }
    (node, chromium)
}

/// Which player library a page runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// hls.js with `lowLatencyMode: true`.
    HlsJs,
    /// dash.js.
    DashJs,
    /// Shaka Player (HLS or DASH, by the URL).
    Shaka,
}

impl Engine {
    fn arg(self) -> &'static str {
        match self {
            Engine::HlsJs => "hlsjs",
            Engine::DashJs => "dashjs",
            Engine::Shaka => "shaka",
        }
    }

    /// The npm module it comes from.
    pub fn module(self) -> &'static str {
        match self {
            Engine::HlsJs => "hls.js",
            Engine::DashJs => "dashjs",
            Engine::Shaka => "shaka-player",
        }
    }
}

/// One player to start: a name for the messages, its engine, the URL it plays and an
/// optional configuration (JSON, as the engine's own configuration call takes it).
#[derive(Clone, Debug)]
pub struct PlayerSpec {
    /// Name in the output lines.
    pub name: String,
    /// Player library.
    pub engine: Engine,
    /// Playlist or MPD URL.
    pub url: String,
    /// The engine's configuration, merged over the page's defaults.
    pub config: Option<Value>,
}

impl PlayerSpec {
    /// A player with the page's default configuration.
    pub fn new(name: &str, engine: Engine, url: &str) -> PlayerSpec {
        PlayerSpec {
            name: name.to_owned(),
            engine,
            url: url.to_owned(),
            config: None,
        }
    }
}

/// What one player reported at the end (`window.report` of `player_page.js`).
#[derive(Clone, Debug)]
pub struct PlayerReport {
    /// The player's name.
    pub name: String,
    /// The whole report, as JSON.
    pub json: Value,
}

impl PlayerReport {
    fn f64_of(&self, key: &str) -> f64 {
        self.json[key].as_f64().unwrap_or(0.0)
    }

    /// Whether its playhead ever advanced through playback.
    pub fn playing(&self) -> bool {
        self.json["playing"].as_bool().unwrap_or(false)
    }

    /// Seconds of media played (seeks left out).
    pub fn played_s(&self) -> f64 {
        self.f64_of("played")
    }

    /// The longest time the playhead stood still after it first played, in ms.
    pub fn longest_stall_ms(&self) -> f64 {
        self.f64_of("longestStallMs")
    }

    /// The fatal errors it reported.
    pub fn fatal(&self) -> Vec<Value> {
        self.json["fatal"].as_array().cloned().unwrap_or_default()
    }

    /// Discontinuities or periods it crossed into (the first counted).
    pub fn crossings(&self) -> usize {
        self.json["crossings"].as_array().map_or(0, Vec::len)
    }

    /// The live latencies the player computed, one a second while playing.
    pub fn latencies(&self) -> Vec<f64> {
        self.json["latency"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    }

    /// The median of [`PlayerReport::latencies`].
    pub fn median_latency(&self) -> Option<f64> {
        let mut l = self.latencies();
        l.sort_by(f64::total_cmp);
        l.get(l.len() / 2).copied()
    }

    /// One line for the test's output.
    pub fn line(&self) -> String {
        let j = &self.json;
        format!(
            "{}: {} {} played {:.1} s, {} jumps, longest stall {} ms, stalls {}, waiting events {}, \
             fatal {}, recovered errors {} (first: {}), crossings {}, latency median {} (min {}, \
             max {}), {}x{}, low latency {}, stats {}",
            self.name,
            j["engine"].as_str().unwrap_or("?"),
            j["version"].as_str().unwrap_or("?"),
            self.played_s(),
            j["jumps"],
            j["longestStallMs"],
            j["stalls"],
            j["waiting"],
            j["fatal"],
            j["errorCount"],
            j["errors"],
            j["crossings"],
            self.median_latency()
                .map_or("-".to_owned(), |l| format!("{l:.2} s")),
            self.latencies().iter().copied().fold(f64::NAN, f64::min),
            self.latencies().iter().copied().fold(f64::NAN, f64::max),
            j["width"],
            j["height"],
            j["lowLatency"],
            j["stats"],
        )
    }
}

/// The players' browser (`node players.mjs`): its output lines arrive on a channel as they
/// are printed, and are all kept for the messages.
pub struct Players {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
    log: PathBuf,
}

impl Players {
    /// Starts one chromium playing every player of `specs`, each on a page of its own.
    pub fn start(specs: &[PlayerSpec]) -> Players {
        let modules: Vec<&str> = specs.iter().map(|s| s.engine.module()).collect();
        let (node, chromium) = require_browser(&modules);
        let mut cmd = Command::new(node);
        cmd.arg(browser_dir().join("players.mjs"));
        for s in specs {
            let engine = match &s.config {
                Some(c) => format!("{}:{c}", s.engine.arg()),
                None => s.engine.arg().to_owned(),
            };
            cmd.args([s.name.as_str(), engine.as_str(), s.url.as_str()]);
        }
        let log = log_dir().join(format!("{}.log", crate::paths::unique_name("players")));
        let stderr = std::fs::File::create(&log).expect("the players' log");
        let mut child = cmd
            .env("CHROMIUM", chromium)
            .current_dir(browser_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("run node players.mjs");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Players {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            log,
        }
    }

    /// Waits up to `timeout` for a line for which `want` holds, and returns it; `None` if
    /// none came (or the browser exited).
    pub fn wait_line(&mut self, timeout: Duration, want: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    eprintln!("{line}");
                    self.seen.push(line.clone());
                    if want(&line) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Waits until every player played or gave up (`ALL_STARTED`); returns the names of
    /// those that play.
    pub fn wait_started(&mut self, timeout: Duration) -> Vec<String> {
        self.wait_line(timeout, |l| l == "ALL_STARTED");
        self.seen
            .iter()
            .filter_map(|l| l.strip_prefix("PLAYING "))
            .map(str::to_owned)
            .collect()
    }

    /// The output lines read so far.
    pub fn lines(&self) -> &[String] {
        &self.seen
    }

    /// Every output line so far, and the browser's stderr.
    pub fn output(&self) -> String {
        format!(
            "{}\n--- stderr:\n{}",
            self.seen.join("\n"),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// Stops the players and returns what each reported, in start order.
    pub fn finish(mut self) -> Vec<PlayerReport> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "STOP");
        }
        self.wait_line(Duration::from_secs(60), |l| l == "DONE");
        let _ = self.child.kill();
        let _ = self.child.wait();
        let reports: Vec<PlayerReport> = self
            .seen
            .iter()
            .filter_map(|l| l.strip_prefix("RESULT "))
            .filter_map(|l| {
                let (name, json) = l.split_once(' ')?;
                Some(PlayerReport {
                    name: name.to_owned(),
                    json: serde_json::from_str(json).ok()?,
                })
            })
            .collect();
        assert!(
            !reports.is_empty(),
            "the players reported nothing:\n{}",
            self.output()
        );
        reports
    }
}

impl Drop for Players {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
