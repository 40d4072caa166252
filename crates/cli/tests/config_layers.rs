//! `tidegate check-config`: flags win over `TIDEGATE_*` variables, which win over the TOML
//! file, which wins over the defaults; invalid values are refused with the setting's name.

use std::process::Command;

fn check_config(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidegate"));
    cmd.arg("check-config").args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("TIDEGATE_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run tidegate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn line<'a>(toml: &'a str, key: &str) -> &'a str {
    toml.lines()
        .find(|l| l.starts_with(&format!("{key} =")))
        .unwrap_or_else(|| panic!("no `{key}` in:\n{toml}"))
}

#[test]
fn defaults_with_nothing_given() {
    let (ok, out, err) = check_config(&[], &[]);
    assert!(ok, "{err}");
    assert_eq!(line(&out, "rtmp-listen"), "rtmp-listen = \"0.0.0.0:1935\"");
    assert_eq!(line(&out, "http-listen"), "http-listen = \"0.0.0.0:8080\"");
    assert_eq!(line(&out, "srt-listen"), "srt-listen = \"0.0.0.0:9000\"");
    assert_eq!(line(&out, "data-dir"), "data-dir = \"./tidegate-data\"");
    assert_eq!(line(&out, "segment-duration"), "segment-duration = \"2s\"");
    assert_eq!(line(&out, "reconnect-window"), "reconnect-window = \"30s\"");
    assert_eq!(line(&out, "srt-latency"), "srt-latency = \"120ms\"");
    // 1/3 s, readably and to the 90 kHz tick (not `333ms 333us 333ns`).
    assert_eq!(line(&out, "part-duration"), "part-duration = \"333.333ms\"");
}

#[test]
fn flags_beat_environment_beat_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tidegate.toml");
    std::fs::write(
        &file,
        "segment-duration = \"4s\"\nreconnect-window = \"1m\"\nplaylist-window = 7\nsegment-format = \"ts\"\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();

    // File alone.
    let (ok, out, err) = check_config(&["--config", file], &[]);
    assert!(ok, "{err}");
    assert_eq!(line(&out, "segment-duration"), "segment-duration = \"4s\"");
    assert_eq!(line(&out, "reconnect-window"), "reconnect-window = \"1m\"");
    assert_eq!(line(&out, "playlist-window"), "playlist-window = 7");
    assert_eq!(line(&out, "segment-format"), "segment-format = \"ts\"");

    // The environment beats the file.
    let env = [
        ("TIDEGATE_SEGMENT_DURATION", "3s"),
        ("TIDEGATE_RTMP_LISTEN", "127.0.0.1:2935"),
    ];
    let (ok, out, err) = check_config(&["--config", file], &env);
    assert!(ok, "{err}");
    assert_eq!(line(&out, "segment-duration"), "segment-duration = \"3s\"");
    assert_eq!(
        line(&out, "rtmp-listen"),
        "rtmp-listen = \"127.0.0.1:2935\""
    );
    assert_eq!(line(&out, "reconnect-window"), "reconnect-window = \"1m\"");

    // Flags beat both.
    let (ok, out, err) = check_config(
        &[
            "--config",
            file,
            "--segment-duration",
            "6s",
            "--playlist-window",
            "5",
        ],
        &env,
    );
    assert!(ok, "{err}");
    assert_eq!(line(&out, "segment-duration"), "segment-duration = \"6s\"");
    assert_eq!(line(&out, "playlist-window"), "playlist-window = 5");
    assert_eq!(
        line(&out, "rtmp-listen"),
        "rtmp-listen = \"127.0.0.1:2935\""
    );

    // The config file itself can come from the environment.
    let (ok, out, err) = check_config(&[], &[("TIDEGATE_CONFIG", file)]);
    assert!(ok, "{err}");
    assert_eq!(line(&out, "playlist-window"), "playlist-window = 7");
}

#[test]
fn invalid_values_are_refused_by_name() {
    let (ok, _, err) = check_config(&["--segment-duration", "10ms"], &[]);
    assert!(!ok);
    assert!(err.contains("segment-duration"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "no-such-setting = 1\n").unwrap();
    let (ok, _, err) = check_config(&["--config", file.to_str().unwrap()], &[]);
    assert!(!ok);
    assert!(err.contains("no-such-setting"), "{err}");

    let (ok, _, err) = check_config(&[], &[("TIDEGATE_SEGMENT_FORMAT", "webm")]);
    assert!(!ok);
    assert!(err.contains("webm"), "{err}");
}

#[test]
fn secrets_are_not_printed() {
    let (ok, out, err) = check_config(&["--srt-passphrase", "supersecretpass"], &[]);
    assert!(ok, "{err}");
    assert!(!out.contains("supersecretpass") && !err.contains("supersecretpass"));
    let (ok, out, err) = check_config(
        &[
            "--webhook-url",
            "http://127.0.0.1:9/hook",
            "--webhook-secret",
            "webhook-secret-value-xyz",
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert!(out.contains("http://127.0.0.1:9/hook"), "{out}");
    assert!(
        !out.contains("webhook-secret-value-xyz") && !err.contains("webhook-secret-value-xyz"),
        "{out}"
    ); // Scoped admin tokens (issue #12 item 5): the metrics token is a secret too, and an
       // empty one is refused by name.
    let (ok, out, err) = check_config(&["--metrics-token", "metrics-token-value-xyz"], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("metrics-token"), "{out}");
    assert!(!out.contains("metrics-token-value-xyz") && !err.contains("metrics-token-value-xyz"));
    let (ok, _, err) = check_config(&["--metrics-token", ""], &[]);
    assert!(!ok && err.contains("metrics-token"), "{err}");
}
