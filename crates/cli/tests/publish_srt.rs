//! SRT publishers built on libsrt 1.5 (Debian's ffmpeg, `srt-live-transmit`, GStreamer's
//! `srtsink`) stream MPEG-TS into tidegate; the HLS output passes the RFC 8216 checks while
//! live and after it ends, every segment starts with a keyframe, ffprobe sees the codecs
//! sent, it decodes without an error, and its duration is within one segment of what was
//! sent. A caller with a wrong passphrase or key length is refused while a correct one on the
//! same port keeps streaming.

use std::net::SocketAddr;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use tidegate_testkit::*;

const SENT: u32 = 10;

/// `srt://ADDR?streamid=...&...` as libsrt's URI syntax wants it.
fn srt_url(addr: SocketAddr, streamid: &str, extra: &str) -> String {
    format!("srt://{addr}?streamid={streamid}&pkt_size=1316{extra}")
}

/// ffmpeg reads the test file in real time and sends MPEG-TS over SRT.
fn ffmpeg_srt(url: &str, seconds: Option<u32>) -> Proc {
    let mut cmd = Command::new(ffmpeg());
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "warning", "-re"]);
    if seconds.is_none() {
        cmd.args(["-stream_loop", "-1"]);
    }
    cmd.arg("-i").arg(media(Media::H264Aac));
    if let Some(s) = seconds {
        cmd.args(["-t", &s.to_string()]);
    }
    cmd.args(["-c", "copy", "-f", "mpegts", url]);
    Proc::spawn("ffmpeg-srt", cmd)
}

/// A shell pipeline: ffmpeg writes real-time MPEG-TS to stdout, `sink` sends it over SRT.
fn piped(name: &str, sink: &str) -> Proc {
    let ff = ffmpeg();
    let file = media(Media::H264Aac);
    let script = format!(
        "'{}' -hide_banner -nostdin -loglevel warning -re -i '{}' -t {SENT} -c copy -f mpegts - | {sink}",
        ff.display(),
        file.display()
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script);
    Proc::spawn(name, cmd)
}

/// Publishes with `start(srt_addr)`, watches the playlist while it runs, waits for the
/// reconnect window to end it, then runs the full checks.
fn srt_once_and_check(extra: &[&str], start: impl FnOnce(SocketAddr) -> Proc) {
    let mut args = vec!["--reconnect-window", "3s"];
    args.extend_from_slice(extra);
    let mut server = Server::start(&args);
    let url = server.playlist_url("cam");
    let mut publisher = start(server.srt);
    let (mut watch, live_fetches) = watch_while_publishing(&url, true, &mut publisher);
    assert!(live_fetches >= 2, "only {live_fetches} live fetches");
    server.assert_alive();
    let (playlist, streams) =
        check_ended_playlist(&url, Duration::from_secs(25), true, true, &mut watch);
    assert_streams(&streams, Some("h264"), true);
    assert_listed_duration(&playlist, f64::from(SENT), SEGMENT_SECS + 0.5);
    let metrics = server.metrics();
    assert!(
        metrics.contains("tidegate_ingest_bytes_total{protocol=\"srt\"}"),
        "SRT bytes must be counted:\n{metrics}"
    );
    server.assert_alive();
}

#[test]
fn ffmpeg_access_control_streamid() {
    srt_once_and_check(&[], |addr| {
        ffmpeg_srt(
            &srt_url(addr, "#!::r=live/cam,m=publish", "&latency=200000"),
            Some(SENT),
        )
    });
}

#[test]
fn ffmpeg_encrypted_key_lengths_and_latencies() {
    // pbkeylen 16/24/32 with three receive latencies, each against a server that requires
    // the passphrase.
    for (pbkeylen, latency_us) in [(16, 120_000), (24, 500_000), (32, 1_000_000)] {
        srt_once_and_check(&["--srt-passphrase", "correcthorsebattery"], move |addr| {
            ffmpeg_srt(
                &srt_url(
                    addr,
                    "cam",
                    &format!(
                        "&passphrase=correcthorsebattery&pbkeylen={pbkeylen}&latency={latency_us}"
                    ),
                ),
                Some(SENT),
            )
        });
    }
}

#[test]
fn srt_live_transmit() {
    require_cmd("srt-live-transmit");
    srt_once_and_check(&[], |addr| {
        piped(
            "srt-live-transmit",
            // srt-live-transmit does not exit at the end of its input: bounded by timeout.
            &format!(
                "timeout -s INT {} srt-live-transmit -q file://con 'srt://{addr}?streamid=cam&latency=200'",
                SENT + 3
            ),
        )
    });
}

#[test]
fn gstreamer_srtsink() {
    require_gst_element("srtsink");
    srt_once_and_check(&[], |addr| {
        piped(
            "gst-srtsink",
            &format!(
                "gst-launch-1.0 -q fdsrc ! tsparse ! srtsink uri='srt://{addr}?latency=200' streamid=cam wait-for-connection=false"
            ),
        )
    });
}

#[test]
fn wrong_passphrase_or_key_length_is_refused_while_the_right_one_streams() {
    let mut server = Server::start(&[
        "--srt-passphrase",
        "correcthorsebattery",
        "--srt-pbkeylen",
        "32",
    ]);
    let good_url = server.playlist_url("good");
    let mut good = ffmpeg_srt(
        &srt_url(
            server.srt,
            "good",
            "&passphrase=correcthorsebattery&pbkeylen=32&latency=200000",
        ),
        None,
    );
    let live = live_fmp4();
    wait_playlist(
        &good_url,
        Duration::from_secs(25),
        "the good stream",
        |pl| !pl.segments.is_empty(),
    );
    let mut watch = Watch::default();
    let before = watch.observe(&good_url, &live).next_msn();

    // Wrong passphrase, then the right passphrase with the wrong key length, then none.
    for (key, extra) in [
        ("bad1", "&passphrase=wronghorsebattery&pbkeylen=32"),
        ("bad2", "&passphrase=correcthorsebattery&pbkeylen=16"),
        ("bad3", ""),
    ] {
        let mut bad = ffmpeg_srt(&srt_url(server.srt, key, extra), Some(5));
        let exit = bad.wait_exit(Duration::from_secs(20));
        assert!(
            exit.is_some_and(|s| !s.success()),
            "the {key} caller should have been refused; log:\n{}",
            bad.log_tail(20)
        );
        assert_eq!(
            get(&server.playlist_url(key)).status,
            404,
            "a refused caller must not create a stream"
        );
        assert!(good.is_running(), "the good publisher must keep streaming");
    }
    let metrics = server.metrics();
    let refused: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "tidegate_publish_refused_total{protocol=\"srt\",tenant=\"default\",reason=\"passphrase\"} ",
            )
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(
        refused >= 3.0,
        "the three passphrase refusals must be counted as `passphrase`:\n{metrics}"
    );
    // The log names the rule each one broke.
    let log = server.log_text();
    for rule in [
        "wrong passphrase",
        "key length mismatch",
        "does not encrypt",
    ] {
        assert!(log.contains(rule), "no refusal line names `{rule}`:\n{log}");
    }
    // The good stream kept growing throughout.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pl = watch.observe(&good_url, &live);
        if pl.next_msn() >= before + 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the good stream stopped growing");
        thread::sleep(Duration::from_millis(500));
    }
    good.kill();
    server.assert_alive();
}
