//! SRT pull: tidegate calls a remote SRT listener (libsrt: ffmpeg `mode=listener`,
//! `srt-live-transmit`) and publishes what it receives. The HLS playlist appears with the
//! codecs sent; when the source dies and comes back on the same port, tidegate reconnects and
//! the playlist continues after an `EXT-X-DISCONTINUITY` with a growing media sequence.
//! `check-config` rejects a bad pull URL.

use std::process::Command;
use std::time::Duration;

use tidegate_testkit::*;

const PASS: &str = "correcthorsebattery";

/// Waits for two segments, checks the codecs, kills the source, restarts it with
/// `restart()` after `down`, and waits for the playlist to continue after a discontinuity.
fn pull_and_survive_a_source_restart(
    server: &mut Server,
    mut source: Proc,
    down: Duration,
    restart: impl FnOnce() -> Proc,
) {
    let url = server.playlist_url("cam");
    wait_playlist(&url, Duration::from_secs(25), "two pulled segments", |pl| {
        pl.segments.len() >= 2
    });
    let mut watch = Watch::default();
    let first = watch.observe(&url, &live_fmp4());
    assert_eq!(first.discontinuities(), 0, "{}", first.text);
    assert_streams(&probe_streams(&url), Some("h264"), true);

    // The source dies without a word and comes back on the same port.
    source.kill();
    std::thread::sleep(down);
    let mut source = restart();
    let before = first.next_msn();
    let after = wait_continued_after_discontinuity(
        &url,
        before,
        3,
        Duration::from_secs(30),
        "segments after the reconnect",
    );
    assert!(!after.endlist, "the stream must not have ended");
    watch.accept(fetch_playlist(&url, &live_fmp4()).unwrap_or_else(|e| panic!("{e}")));
    assert!(
        source.is_running(),
        "the source stopped: {}",
        source.log_tail(20)
    );
    let log = server.log_text();
    assert!(
        log.matches("srt pull: connected, publishing").count() >= 2,
        "reconnect not logged:\n{}",
        server.proc.log_tail(40)
    );
    assert!(!log.contains(PASS), "the passphrase leaked into the log");
    let metrics = server.metrics();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("tidegate_connections_total{protocol=\"srt\"} ")
                && !l.ends_with(" 0")
        ),
        "pulled connections are counted:\n{metrics}"
    );
    server.assert_alive();
}

#[test]
fn ffmpeg_listener_encrypted_with_restart() {
    let port = free_udp_port();
    let source = srt_ffmpeg_listener(port, &format!("&passphrase={PASS}&pbkeylen=16"));
    let pull = format!(
        "cam=srt://127.0.0.1:{port}?passphrase={PASS}&pbkeylen=16&latency=200&peeridletimeo=3000"
    );
    let mut server = Server::start(&["--reconnect-window", "30s", "--pull", &pull]);
    // Down for a while: the pull notices (ICMP unreachable), then retries with backoff.
    pull_and_survive_a_source_restart(&mut server, source, Duration::from_secs(3), || {
        srt_ffmpeg_listener(port, &format!("&passphrase={PASS}&pbkeylen=16"))
    });
    let log = server.log_text();
    assert!(
        log.contains("reason=\"peer unreachable\"") && log.contains("srt pull: retrying"),
        "the outage should have been detected and retried:\n{}",
        server.proc.log_tail(40)
    );
}

#[test]
fn srt_live_transmit_listener_with_restart() {
    let slt = require_cmd("srt-live-transmit");
    // ffmpeg feeds MPEG-TS over local UDP; srt-live-transmit serves it as an SRT listener.
    let udp = free_udp_port();
    let _feed = ffmpeg_ts_loop(
        "ffmpeg-udp-feed",
        &format!("udp://127.0.0.1:{udp}?pkt_size=1316"),
    );
    let port = free_udp_port();
    let start = || {
        let mut cmd = Command::new(&slt);
        cmd.args([
            "-q".to_owned(),
            format!("udp://127.0.0.1:{udp}"),
            format!("srt://:{port}?mode=listener&latency=200"),
        ]);
        Proc::spawn("srt-live-transmit-listener", cmd)
    };
    let source = start();
    let pull = format!("cam=srt://127.0.0.1:{port}?streamid=cam&peeridletimeo=3000");
    let mut server = Server::start(&["--reconnect-window", "30s", "--pull", &pull]);
    pull_and_survive_a_source_restart(&mut server, source, Duration::from_millis(500), start);
}

#[test]
fn check_config_rejects_bad_pull_urls() {
    let exe = env!("CARGO_BIN_EXE_tidegate");
    for (pull, needle) in [
        ("cam=srt://127.0.0.1", "needs a port"),
        ("cam=http://127.0.0.1:9000", "srt://"),
        ("cam=srt://127.0.0.1:9000?latency=200000", "milliseconds"),
        ("cam=srt://127.0.0.1:9000?passphrase=short", "10 to 79"),
        ("cam=srt://127.0.0.1:9000?bogus=1", "unknown option `bogus`"),
        ("c/m=srt://127.0.0.1:9000", "not a valid stream key"),
    ] {
        let out = Command::new(exe)
            .args(["check-config", "--pull", pull])
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{pull} accepted");
        assert!(
            err.contains("invalid setting `pull`") && err.contains(needle),
            "{pull}: {err}"
        );
    }
    let out = Command::new(exe)
        .args([
            "check-config",
            "--pull",
            &format!("cam=srt://127.0.0.1:9000?passphrase={PASS}"),
        ])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("[[pull]]")
            && shown.contains("passphrase=<redacted>")
            && !shown.contains(PASS),
        "{shown}"
    );
}
