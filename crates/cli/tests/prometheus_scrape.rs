//! A real Prometheus server (Debian's `prometheus`) scrapes a running worker while an ffmpeg
//! publisher streams to it: its query API returns the stream's bitrate series with a value
//! above zero, the scrape target is up, and the alerting rules of
//! `deploy/prometheus/rules.yml` load and evaluate without error. `promtool check metrics`
//! passes on the worker's `/metrics` body (with the stream's series present).
//!
//! A worker with `--admin-token` and `--metrics-token` is scraped with the metrics token
//! (everything) and without (worker-wide series only, the target still up).
//!
//! The `promtool check metrics` verdict is asserted last, so that a lint finding does not hide
//! whether Prometheus itself can scrape and query the worker.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tidegate_testkit::*;

/// How long Prometheus may take to start, scrape and answer with the series.
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(25);

/// `deploy/prometheus/rules.yml` in this repository.
fn rules_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus/rules.yml")
}

/// `deploy/grafana/tidegate-dashboard.json` in this repository.
fn dashboard_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/tidegate-dashboard.json")
}

/// Every `tidegate_…` series name mentioned in `text`.
fn referenced_series(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("tidegate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // Only whole identifiers (not e.g. `scripts/tidegate_x`).
        let whole = rest[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        // A bare prefix (`tidegate_` in prose) names no series.
        if whole && end > "tidegate_".len() {
            out.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

/// The series names a `/metrics` body's families can produce, from its `# TYPE` lines
/// (OpenMetrics: a counter family `x` has samples `x_total`; a histogram `x_bucket`,
/// `x_sum`, `x_count`), whether or not a family has samples yet.
fn exported_series(body: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in body.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("#") || words.next() != Some("TYPE") {
            continue;
        }
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        let name = name.to_string();
        match kind {
            "counter" => {
                out.insert(format!("{}_total", name.trim_end_matches("_total")));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                out.insert(name);
            }
        }
    }
    out
}

/// Percent-encodes a URL query value (everything but RFC 3986 unreserved characters).
fn encode_query(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The value of the bitrate sample of stream `key` in a `/metrics` body, if present.
fn bitrate_on_metrics(body: &str, key: &str) -> Option<f64> {
    let needle = format!("stream=\"{key}\"");
    body.lines()
        .filter(|l| l.starts_with("tidegate_stream_ingest_bitrate_bps{") && l.contains(&needle))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Runs `promtool check metrics` with `body` on stdin: (success, combined output).
fn promtool_check_metrics(body: &str) -> (bool, String) {
    let mut child = Command::new(require_cmd("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A Prometheus server on a free loopback port with a temporary TSDB, scraping `target`
/// every second and evaluating the project's rules every second.
struct Prometheus {
    proc: Proc,
    base: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        Prometheus::start_jobs(&[("tidegate", target, None)])
    }

    /// Prometheus with one scrape job per `(job, target, bearer token)`; a token is given
    /// as `authorization.credentials_file`, as docs/tokens.md shows.
    fn start_jobs(jobs: &[(&str, &str, Option<&str>)]) -> Prometheus {
        let exe = require_cmd("prometheus");
        let dir = tempfile::Builder::new()
            .prefix("tidegate-prometheus-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("prometheus.yml");
        let rules = rules_file().canonicalize().unwrap();
        let mut scrape_configs = String::new();
        for (job, target, token) in jobs {
            scrape_configs.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
            ));
            if let Some(token) = token {
                let file = dir.path().join(format!("{job}.token"));
                fs::write(&file, token).unwrap();
                scrape_configs.push_str(&format!(
                    "    authorization:\n      type: Bearer\n      credentials_file: {}\n",
                    file.display()
                ));
            }
        }
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n{scrape_configs}",
                rules = rules.display()
            ),
        )
        .unwrap();
        let listen = format!("127.0.0.1:{}", free_tcp_port());
        let mut cmd = Command::new(exe);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .arg("--log.level=info");
        let mut p = Prometheus {
            proc: Proc::spawn("prometheus", cmd),
            base: format!("http://{listen}"),
            _dir: dir,
        };
        let ready = format!("{}/-/ready", p.base);
        wait_for(
            "prometheus /-/ready",
            PROMETHEUS_TIMEOUT,
            Duration::from_millis(200),
            || {
                if let Some(status) = p.proc.try_exit() {
                    panic!(
                        "prometheus exited during startup with {status}; log:\n{}",
                        p.proc.log_tail(40)
                    );
                }
                try_get(&ready).ok().filter(|r| r.status == 200)
            },
        );
        p
    }

    /// `GET /api/v1/<path>` as JSON; panics unless the API says `success`.
    fn api(&self, path: &str) -> serde_json::Value {
        let r = get(&format!("{}/api/v1/{path}", self.base));
        let v: serde_json::Value = serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("/api/v1/{path}: not JSON ({e}): {}", r.text()));
        assert_eq!(
            v["status"], "success",
            "/api/v1/{path}: status {}: {v}",
            r.status
        );
        v
    }

    /// The result vector of an instant query.
    fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let v = self.api(&format!("query?query={}", encode_query(expr)));
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

#[test]
fn prometheus_scrapes_worker_and_queries_stream_bitrate() {
    // Fail early, naming the tool, before starting anything.
    require_cmd("prometheus");
    require_cmd("promtool");

    let mut server = Server::start(&[]);
    let key = unique_name("prom");
    let mut publisher = publish_ffmpeg(Media::H264Aac, &server.rtmp_url(&key), &Publish::forever());

    // The worker exports the stream's bitrate once its sweeper has measured it.
    let body = wait_for(
        "the stream's bitrate > 0 on /metrics",
        Duration::from_secs(20),
        Duration::from_millis(250),
        || {
            let m = server.metrics();
            bitrate_on_metrics(&m, &key).filter(|v| *v > 0.0).map(|_| m)
        },
    );
    for family in [
        "tidegate_stream_status{",
        "tidegate_stream_ingest_bytes_total{",
        "tidegate_stream_frames_total{",
        "tidegate_process_start_time_seconds ",
        "tidegate_segment_latency_seconds_bucket{",
    ] {
        assert!(
            body.contains(family),
            "/metrics lacks {family}…; body:\n{body}"
        );
    }
    let (lint_ok, lint_out) = promtool_check_metrics(&body);

    // The alerting rules and the dashboard only use series the worker exports.
    let exported = exported_series(&body);
    assert!(exported.contains("tidegate_stream_status"), "{exported:?}");
    for file in [rules_file(), dashboard_file()] {
        let text = fs::read_to_string(&file).unwrap();
        let used = referenced_series(&text);
        assert!(used.len() >= 5, "{}: {used:?}", file.display());
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{} uses series the worker does not export: {unknown:?}; exported: {exported:?}",
            file.display()
        );
    }

    let prometheus = Prometheus::start(&server.http.to_string());
    let expr = format!("tidegate_stream_ingest_bitrate_bps{{stream=\"{key}\"}}");
    let sample = wait_for(
        "Prometheus to return the stream's bitrate",
        PROMETHEUS_TIMEOUT,
        Duration::from_millis(500),
        || {
            assert!(publisher.is_running(), "publisher exited early");
            let result = prometheus.query(&expr);
            result.into_iter().find(|s| {
                s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v > 0.0)
            })
        },
    );
    let metric = &sample["metric"];
    assert_eq!(metric["__name__"], "tidegate_stream_ingest_bitrate_bps");
    assert_eq!(metric["stream"], key.as_str());
    assert_eq!(metric["tenant"], "default");
    assert_eq!(metric["protocol"], "rtmp");
    assert_eq!(metric["job"], "tidegate");
    assert_eq!(metric["instance"], server.http.to_string().as_str());

    // The stream is healthy as Prometheus sees it too.
    let healthy = prometheus.query(&format!(
        "tidegate_stream_status{{stream=\"{key}\",status=\"healthy\"}} == 1"
    ));
    assert_eq!(healthy.len(), 1, "healthy status series: {healthy:?}");

    // The only target is up, with no scrape error.
    let targets = prometheus.api("targets?state=active");
    let active = targets["data"]["activeTargets"].as_array().unwrap();
    assert_eq!(active.len(), 1, "targets: {targets}");
    assert_eq!(active[0]["health"], "up", "target: {}", active[0]);
    assert_eq!(active[0]["lastError"], "", "target: {}", active[0]);

    // Every alerting rule loaded, and none fails to evaluate against real series.
    let expected_rules = fs::read_to_string(rules_file())
        .unwrap()
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert!(expected_rules >= 7, "rules.yml has {expected_rules} alerts");
    let rules = wait_for(
        "every rule evaluated once",
        Duration::from_secs(10),
        Duration::from_millis(500),
        || {
            let v = prometheus.api("rules?type=alert");
            let rules: Vec<serde_json::Value> = v["data"]["groups"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            rules
                .iter()
                .all(|r| r["health"] != "unknown")
                .then_some(rules)
        },
    );
    assert_eq!(rules.len(), expected_rules, "rules loaded: {rules:?}");
    for r in &rules {
        assert_eq!(r["health"], "ok", "rule {} failed: {}", r["name"], r);
    }

    // Every dashboard query parses and evaluates on a real Prometheus (variables replaced the
    // way Grafana would with "All" selected).
    let dashboard: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dashboard_file()).unwrap()).unwrap();
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            let expr = expr
                .replace("$tenant", ".*")
                .replace("$instance", ".*")
                .replace("$__rate_interval", "1m");
            // `api` panics unless Prometheus answers `success`.
            prometheus.query(&expr);
            queries += 1;
        }
    }
    assert!(queries >= 10, "dashboard has {queries} queries");
    let bitrate_panel = prometheus.query(&format!(
        "sum by (tenant, stream, protocol) (tidegate_stream_ingest_bitrate_bps{{stream=\"{key}\"}})"
    ));
    assert_eq!(bitrate_panel.len(), 1, "{bitrate_panel:?}");

    server.assert_alive();
    drop(prometheus);
    publisher.kill();

    assert!(
        lint_ok,
        "`promtool check metrics` rejects the worker's /metrics:\n{lint_out}\n--- body ---\n{body}"
    );
}

/// A worker with `--admin-token` and `--metrics-token` (issue #12 item 5): Prometheus with
/// the metrics token scrapes every series, the stream's bitrate included; a job without a
/// token still scrapes (`up` is 1) but gets only the worker-wide series, no stream's.
#[test]
fn prometheus_scrapes_a_protected_worker_with_the_metrics_token() {
    require_cmd("prometheus");
    let server = Server::start(&[
        "--admin-token",
        "prometheus-operator-token",
        "--metrics-token",
        "prometheus-metrics-token",
    ]);
    let key = "guarded";
    let mut publisher = publish_ffmpeg(Media::H264Aac, &server.rtmp_url(key), &Publish::forever());
    let target = server.http.to_string();
    let prometheus = Prometheus::start_jobs(&[
        ("tidegate", &target, Some("prometheus-metrics-token")),
        ("anonymous", &target, None),
    ]);
    let expr = format!("tidegate_stream_ingest_bitrate_bps{{stream=\"{key}\"}}");
    let sample = wait_for(
        "Prometheus to return the stream's bitrate through the metrics token",
        PROMETHEUS_TIMEOUT,
        Duration::from_millis(500),
        || {
            assert!(publisher.is_running(), "publisher exited early");
            prometheus.query(&expr).into_iter().find(|s| {
                s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v > 0.0)
            })
        },
    );
    assert_eq!(sample["metric"]["job"], "tidegate", "{sample}");
    let up = wait_for(
        "both jobs scraped",
        PROMETHEUS_TIMEOUT,
        Duration::from_millis(500),
        || {
            let up = prometheus.query("up == 1");
            (up.len() == 2).then_some(up)
        },
    );
    assert_eq!(up.len(), 2, "{up:?}");
    // Two more scrapes of the anonymous job while the stream is live.
    std::thread::sleep(Duration::from_secs(2));
    let anonymous = prometheus.query("count by (__name__) ({job=\"anonymous\", stream!=\"\"})");
    assert!(
        anonymous.is_empty(),
        "no per-stream series without a token: {anonymous:?}"
    );
    let worker_wide = prometheus.query("tidegate_process_start_time_seconds{job=\"anonymous\"}");
    assert_eq!(
        worker_wide.len(),
        1,
        "worker-wide series stay: {worker_wide:?}"
    );
    publisher.kill();
}
