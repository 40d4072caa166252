//! `deploy/local/cluster.sh`, the local cluster a user tries failover with: `up` on free
//! ports, `restart N` brings a killed worker back under its id, `status` names each worker's
//! id as the API lists it, and `down` stops the workers (letting a live publisher's worker
//! drain) before Redis and the S3 server, so no worker meets a vanished store.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use tidegate_testkit::*;

/// Each worker's drain timeout in this test: long enough that the owner of a live stream is
/// still draining when the old script had already stopped Redis.
const DRAIN: &str = "4s";

/// The script, driven with one run directory and one set of settings.
struct Script {
    path: PathBuf,
    dir: PathBuf,
    rtmp_port: u16,
    srt_port: u16,
    /// Set once `down` ran; otherwise dropping runs it.
    down: bool,
}

impl Script {
    fn new(dir: &Path) -> Script {
        Script {
            path: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/cluster.sh"),
            dir: dir.to_path_buf(),
            rtmp_port: free_tcp_port(),
            srt_port: free_udp_port(),
            down: false,
        }
    }

    /// Runs `cluster.sh ARGS` to its end and asserts it succeeded.
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("bash");
        cmd.arg(&self.path).args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("TIDEGATE_") || k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("CLUSTER_DIR", &self.dir)
            .env("WORKERS", "2")
            .env("RTMP_PORT", self.rtmp_port.to_string())
            .env("SRT_PORT", self.srt_port.to_string())
            .env("TIDEGATE_BIN", env!("CARGO_BIN_EXE_tidegate"))
            .env("WORKER_ARGS", format!("--drain-timeout {DRAIN}"))
            .env("NO_COLOR", "1");
        let out = cmd.output().expect("run deploy/local/cluster.sh");
        assert!(
            out.status.success(),
            "cluster.sh {args:?} exited {}:\nstdout:\n{}\nstderr:\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        out
    }

    fn pid(&self, name: &str) -> u32 {
        std::fs::read_to_string(self.dir.join(format!("{name}.pid")))
            .unwrap_or_else(|e| panic!("{name}.pid: {e}"))
            .trim()
            .parse()
            .unwrap()
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Every worker's log, for failure messages.
    fn logs(&self) -> String {
        (0..2)
            .map(|i| {
                format!(
                    "--- worker-{i}.log ---\n{}",
                    self.log(&format!("worker-{i}"))
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Worker N's HTTP port, from the script's `workers` file (`N RTMP HTTP SRT`).
    fn http_port(&self, n: usize) -> u16 {
        let text = std::fs::read_to_string(self.dir.join("workers")).unwrap();
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.first() == Some(&n.to_string().as_str()))
            .and_then(|f| f.get(2)?.parse().ok())
            .unwrap_or_else(|| panic!("worker {n} not in workers:\n{text}"))
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if !self.down {
            let _ = Command::new("bash")
                .arg(&self.path)
                .arg("down")
                .env("CLUSTER_DIR", &self.dir)
                .output();
        }
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn down_drains_workers_before_the_stores_and_restart_keeps_the_worker_id() {
    for tool in [
        "redis-server",
        "redis-cli",
        "haproxy",
        "nginx",
        "curl",
        "python3",
    ] {
        require_cmd(tool);
    }
    let tmp = tempfile::Builder::new()
        .prefix("tidegate-cluster-script-")
        .tempdir()
        .unwrap();
    let mut script = Script::new(&tmp.path().join("cluster"));
    script.run(&["up"]);

    // A worker killed without a word comes back under the same id: the API counts it as
    // that worker's second start.
    let killed = script.pid("worker-1");
    Command::new("kill")
        .args(["-9", &killed.to_string()])
        .status()
        .unwrap();
    wait_for(
        "worker-1 to die",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || (!alive(killed)).then_some(()),
    );
    script.run(&["restart", "1"]);
    assert_ne!(script.pid("worker-1"), killed);
    assert!(alive(script.pid("worker-1")));
    let h1 = script.http_port(1);
    let r = get(&format!("http://127.0.0.1:{h1}/api/v1/workers"));
    assert_eq!(r.status, 200, "{}", r.text());
    let list: Value = serde_json::from_slice(&r.body).unwrap();
    let w1 = list
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["addresses"]["http"] == format!("127.0.0.1:{h1}"))
        .unwrap_or_else(|| panic!("worker-1 not listed: {list}"));
    assert_eq!(w1["incarnations"], 2, "the same id, started twice: {w1}");
    let id1 = w1["id"].as_str().unwrap().to_owned();

    // `status` names each worker's id as the API shows it.
    let status = String::from_utf8_lossy(&script.run(&["status"]).stdout).into_owned();
    let line = |n: usize| {
        status
            .lines()
            .find(|l| l.starts_with(&format!("worker-{n}: id ")))
            .unwrap_or_else(|| panic!("no id line for worker-{n} in status:\n{status}"))
            .to_owned()
    };
    assert!(line(1).contains(&format!("id {id1} ")), "{status}");
    assert!(line(0).contains("id worker-0 "), "{status}");

    // A live publisher through HAProxy, so that its worker has something to drain.
    let key = unique_name("script");
    let rtmp = format!("rtmp://127.0.0.1:{}/live/{key}", script.rtmp_port);
    let _publisher = publish_ffmpeg(Media::H264Aac, &rtmp, &Publish::forever());
    let playlist = format!(
        "http://127.0.0.1:{}/hls/default/{key}/index.m3u8",
        script.http_port(0)
    );
    wait_playlist(
        &playlist,
        Duration::from_secs(30),
        "a first segment",
        |pl| !pl.segments.is_empty(),
    );

    let pids: Vec<(String, u32)> = ["worker-0", "worker-1", "redis", "s3"]
        .iter()
        .map(|n| (n.to_string(), script.pid(n)))
        .collect();
    let down = script.run(&["down"]);
    script.down = true;
    let log = stderr(&down);
    for (name, pid) in &pids {
        assert!(!alive(*pid), "{name} ({pid}) still runs after down");
    }

    // The script's own steps: workers stopped (drained) before the stores were stopped.
    let pos = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("`{needle}` not in down's log:\n{log}"))
    };
    assert!(
        pos("workers stopped") < pos("stopping redis"),
        "the stores were stopped before the workers were done:\n{log}"
    );
    assert!(
        !log.contains("SIGKILL"),
        "a process had to be killed:\n{log}"
    );

    // And the workers saw it that way: each exited cleanly, the publisher's worker drained,
    // and none logged a state-store error while it did.
    let mut drained = 0;
    for i in 0..2 {
        let text = script.log(&format!("worker-{i}"));
        let last_start = text.rfind("tidegate worker started").unwrap_or(0);
        let run = &text[last_start..];
        assert!(
            run.contains("shutdown: done"),
            "worker-{i} did not finish its shutdown:\n{run}"
        );
        if run.contains("shutdown: waiting for publishers") {
            drained += 1;
        }
        let after_term = &run[run.find("SIGTERM received").unwrap_or(0)..];
        let store_errors: Vec<&str> = after_term
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .filter(|l| {
                let l = l.to_lowercase();
                l.contains("redis") || l.contains("state store") || l.contains("connection refused")
            })
            .collect();
        assert!(
            store_errors.is_empty(),
            "worker-{i} met a stopped store while draining:\n{}",
            store_errors.join("\n")
        );
    }
    assert_eq!(
        drained,
        1,
        "the publisher's worker drained:\n{}",
        script.logs()
    );
}
