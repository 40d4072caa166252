//! What a new operator sees when `tidegate serve` starts, or cannot: the publish, play and
//! dashboard URLs with the ports actually bound; a port already taken or an invalid setting
//! is one `error:` line (its cause said once), a non-zero exit and no backtrace, even with
//! `RUST_BACKTRACE=1`; and a start that could not bind is not counted as a restart.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use serde_json::Value;
use tidegate_testkit::*;

/// Runs `tidegate ARGS` (no `TIDEGATE_*` from the test's environment, `RUST_BACKTRACE=1`
/// plus `env`) to its exit, and returns its status and its output (stdout and stderr).
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidegate"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("TIDEGATE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_BACKTRACE", "1").env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut proc = Proc::spawn("tidegate-failing-start", cmd);
    let status = proc
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("tidegate kept running:\n{}", proc.log_tail(40)));
    (status, proc.log_text())
}

/// The lines of `out` that report an error the way the binary does.
fn error_lines(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("error:")).collect()
}

fn assert_no_backtrace(out: &str) {
    assert!(
        !out.to_lowercase().contains("stack backtrace"),
        "a backtrace was printed:\n{out}"
    );
}

fn serve_args<'a>(
    rtmp: &'a str,
    http: &'a str,
    srt: &'a str,
    data: &'a Path,
    id: &'a str,
) -> Vec<&'a str> {
    vec![
        "serve",
        "--rtmp-listen",
        rtmp,
        "--http-listen",
        http,
        "--srt-listen",
        srt,
        "--data-dir",
        data.to_str().unwrap(),
        "--worker-id",
        id,
    ]
}

#[test]
fn a_taken_port_is_one_error_line_and_not_a_restart() {
    let data = tempfile::Builder::new()
        .prefix("tidegate-startup-")
        .tempdir()
        .unwrap();
    let taken = TcpListener::bind(("127.0.0.1", free_tcp_port())).unwrap();
    let rtmp = taken.local_addr().unwrap().to_string();
    let http = format!("127.0.0.1:{}", free_tcp_port());
    let srt = format!("127.0.0.1:{}", free_udp_port());
    let args = serve_args(&rtmp, &http, &srt, data.path(), "startup-test");

    // Twice, as an operator retrying would.
    for attempt in 1..=2 {
        let (status, out) = run_to_exit(&args, &[]);
        assert!(
            !status.success(),
            "attempt {attempt} exited {status}:\n{out}"
        );
        let errors = error_lines(&out);
        assert_eq!(errors.len(), 1, "one error line, attempt {attempt}:\n{out}");
        assert!(errors[0].contains(&rtmp), "the address is named:\n{out}");
        assert!(errors[0].contains("rtmp"), "the listener is named:\n{out}");
        assert_eq!(
            out.matches("Address already in use").count(),
            1,
            "the cause once:\n{out}"
        );
        assert_no_backtrace(&out);
    }
    drop(taken);

    // The same worker id on the same data directory, now with free ports: its first start.
    let server = Server::start_in(data.path(), &["--worker-id", "startup-test"]);
    let metrics = server.metrics();
    assert!(
        metrics.lines().any(|l| l == "tidegate_worker_restarts 0"),
        "failed starts were counted as restarts:\n{metrics}"
    );
    let r = get(&server.url("/api/v1/workers"));
    assert_eq!(r.status, 200, "{}", r.text());
    let list: Value = serde_json::from_slice(&r.body).unwrap();
    let me = list
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == "startup-test")
        .unwrap_or_else(|| panic!("startup-test not listed: {list}"));
    assert_eq!(me["incarnations"], 1, "{me}");

    // It says where to publish and play, with the ports it bound.
    let log = server.log_text();
    for url in [
        format!("rtmp://{}/live/<key>", server.rtmp),
        format!("srt://{}?streamid=#!::r=live/<key>,m=publish", server.srt),
        format!("srt://{}?streamid=<key>", server.srt),
        format!("http://{}/hls/default/<key>/index.m3u8", server.http),
        format!("http://{}/", server.http),
    ] {
        assert!(log.contains(&url), "the startup text lacks {url}:\n{log}");
    }

    // The dashboard's empty state names the same ports.
    let page = get(&server.url("/")).text();
    assert!(
        page.contains(&format!("rtmp://HOST:{}/live/KEY", server.rtmp.port())),
        "{page}"
    );
    assert!(
        page.contains(&format!("srt://HOST:{}?streamid=KEY", server.srt.port())),
        "{page}"
    );
}

/// `serve` with an invalid segment duration (on loopback ports, should it start anyway).
const INVALID: &[&str] = &[
    "serve",
    "--segment-duration",
    "10ms",
    "--rtmp-listen",
    "127.0.0.1:0",
    "--http-listen",
    "127.0.0.1:0",
    "--srt-listen",
    "127.0.0.1:0",
];

#[test]
fn an_invalid_setting_is_one_error_line_and_debug_logging_adds_the_detail() {
    let (status, out) = run_to_exit(INVALID, &[]);
    assert!(!status.success(), "exited {status}:\n{out}");
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 1, "one error line:\n{out}");
    assert!(errors[0].contains("segment-duration"), "{out}");
    assert_no_backtrace(&out);

    // Asked for detail, the operator gets the chain and the backtrace.
    let (status, out) = run_to_exit(INVALID, &[("TIDEGATE_LOG", "debug")]);
    assert!(!status.success(), "exited {status}:\n{out}");
    assert_eq!(error_lines(&out).len(), 1, "{out}");
    assert!(
        out.to_lowercase().contains("stack backtrace"),
        "TIDEGATE_LOG=debug with RUST_BACKTRACE=1 shows the backtrace:\n{out}"
    );
}

#[test]
fn rtmps_flags_are_offered() {
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--rtmp-listen"), "{help}");
    for flag in ["--rtmps-listen", "--tls-cert", "--tls-key"] {
        assert!(help.contains(flag), "{flag} is not offered:\n{help}");
    }
}
