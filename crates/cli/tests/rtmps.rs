//! RTMPS: two clients (ffmpeg and GStreamer's `rtmp2sink`) publish over TLS at once with a
//! self-signed certificate; the certificate files are replaced while they stream (the
//! publishers go on, a new client sees the new certificate) and then broken (the previous
//! one stays); a plain RTMP client and garbage on the RTMPS port are refused with a log
//! line and a metric without touching the publishers. check-config refuses RTMPS without
//! its files and a key that is not the certificate's.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tidegate_testkit::hostile::{closed_by_peer, metric_sum, rtmp_plain_handshake};
use tidegate_testkit::*;

/// Seconds the GStreamer publisher sends.
const GST_SECS: u32 = 30;
/// Seconds the ffmpeg publisher sends.
const FFMPEG_SECS: u32 = 36;

/// Replaces `to` with a copy of `from` in one rename, as a certificate manager does.
fn install(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    fs::copy(from, &tmp).unwrap();
    fs::rename(&tmp, to).unwrap();
}

/// The common name of the certificate a new TLS client of `addr` is shown, or `None` when
/// no handshake completes.
fn served_cn(addr: SocketAddr) -> Option<String> {
    let script = format!(
        "openssl s_client -connect {addr} </dev/null 2>/dev/null | openssl x509 -noout -subject"
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).replace(' ', "");
    let cn = text.split("CN=").nth(1)?.trim().to_owned();
    (!cn.is_empty()).then_some(cn)
}

fn gst_rtmps_publisher(url: &str) -> Proc {
    let gst = require_cmd("gst-launch-1.0");
    for e in [
        "videotestsrc",
        "audiotestsrc",
        "x264enc",
        "h264parse",
        "flvmux",
        "aacparse",
        "rtmp2sink",
    ] {
        require_gst_element(e);
    }
    let aac = gst_aac_encoder();
    let video_buffers = GST_SECS * 25;
    let audio_buffers = (GST_SECS * 48_000).div_ceil(1024);
    // A self-signed certificate: no validation (0 = G_TLS_CERTIFICATE_NO_FLAGS).
    let pipeline = format!(
        "videotestsrc is-live=true num-buffers={video_buffers} \
         ! video/x-raw,format=I420,width=640,height=360,framerate=25/1 \
         ! x264enc key-int-max=50 tune=zerolatency speed-preset=ultrafast bitrate=800 \
         ! h264parse ! queue ! flvmux streamable=true name=m \
         ! rtmp2sink location={url} tls-validation-flags=0 \
         audiotestsrc is-live=true wave=sine num-buffers={audio_buffers} samplesperbuffer=1024 \
         ! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=2 \
         ! {aac} ! aacparse ! queue ! m."
    );
    let mut cmd = Command::new(gst);
    cmd.arg("-e").args(pipeline.split_whitespace());
    Proc::spawn("gst-rtmps", cmd)
}

fn counter(server: &Server, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_sum(&server.metrics(), name, labels)
}

/// Waits until `metric{labels}` is at least `at_least`.
fn wait_counter(server: &Server, name: &str, labels: &[(&str, &str)], at_least: f64) {
    wait_for(
        &format!("{name}{labels:?} >= {at_least}"),
        Duration::from_secs(20),
        Duration::from_millis(300),
        || (counter(server, name, labels) >= at_least).then_some(()),
    );
}

#[test]
fn two_clients_publish_over_rtmps_while_the_certificate_changes_and_intruders_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (one_cert, one_key) = self_signed_cert(dir.path(), "one");
    let (two_cert, two_key) = self_signed_cert(dir.path(), "two");
    let cert = dir.path().join("live.crt");
    let key = dir.path().join("live.key");
    install(&one_cert, &cert);
    install(&one_key, &key);
    let rtmps: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let mut server = Server::start(&[
        "--reconnect-window",
        "3s",
        // The whole of each session stays listed, to be checked at the end.
        "--playlist-window",
        "40",
        "--rtmps-listen",
        &rtmps.to_string(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let banner = format!("publish RTMPS rtmps://{rtmps}/live/<key>");
    assert!(
        server.log_text().contains(&banner),
        "the start banner names the RTMPS URL ({banner}):\n{}",
        server.log_text()
    );

    // Two clients at once: ffmpeg (-tls_verify is off by default) and GStreamer.
    let mut ffmpeg = publish_ffmpeg(
        Media::H264Aac,
        &format!("rtmps://{rtmps}/live/ff"),
        &Publish::for_secs(FFMPEG_SECS),
    );
    let mut gst = gst_rtmps_publisher(&format!("rtmps://{rtmps}/live/gst"));
    let ff_url = server.playlist_url("ff");
    let gst_url = server.playlist_url("gst");
    for url in [&ff_url, &gst_url] {
        wait_playlist(url, Duration::from_secs(30), "the first segments", |pl| {
            pl.segments.len() >= 2
        });
    }
    for key in ["ff", "gst"] {
        let json = server.stream_json(key);
        assert!(
            json.to_string().contains("\"protocol\":\"rtmps\""),
            "{key} is published over rtmps: {json}"
        );
    }
    let mut watch = Watch::default();
    watch.observe(&ff_url, &live_fmp4());
    assert_eq!(served_cn(rtmps).as_deref(), Some("one"));

    // The certificate is replaced (certificate, then key, each in one rename): new clients
    // see the new one, the publishers go on.
    install(&two_cert, &cert);
    install(&two_key, &key);
    wait_for(
        "a new client to be shown certificate `two`",
        Duration::from_secs(20),
        Duration::from_millis(500),
        || (served_cn(rtmps).as_deref() == Some("two")).then_some(()),
    );
    wait_counter(
        &server,
        "tidegate_tls_certificate_reloads",
        &[("result", "reloaded")],
        1.0,
    );
    watch.observe(&ff_url, &live_fmp4());

    // A certificate file that does not parse: the previous certificate stays, with a
    // warning and a metric.
    fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    wait_counter(
        &server,
        "tidegate_tls_certificate_reloads",
        &[("result", "failed")],
        1.0,
    );
    assert!(
        server
            .log_text()
            .contains("keeping the previous certificate"),
        "{}",
        server.log_text()
    );
    assert_eq!(served_cn(rtmps).as_deref(), Some("two"));
    install(&two_cert, &cert);

    // A plain RTMP client on the RTMPS port, then garbage: refused, logged, counted.
    let mut plain = TcpStream::connect(rtmps).unwrap();
    assert!(
        rtmp_plain_handshake(&mut plain, Duration::from_secs(10)).is_err(),
        "a plain RTMP handshake on the RTMPS port must not be answered"
    );
    let mut garbage = TcpStream::connect(rtmps).unwrap();
    std::io::Write::write_all(&mut garbage, b"GET / HTTP/1.1\r\n\r\n\x00\xff\x13").unwrap();
    wait_for(
        "the garbage connection to be closed",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || closed_by_peer(&mut garbage).then_some(()),
    );
    wait_counter(
        &server,
        "tidegate_tls_handshake_failures",
        &[("reason", "plain_rtmp")],
        1.0,
    );
    wait_counter(
        &server,
        "tidegate_tls_handshake_failures",
        &[("reason", "not_tls")],
        1.0,
    );
    let log = server.log_text();
    assert!(log.contains("rtmps connection refused"), "{log}");
    assert!(log.contains("plain RTMP"), "{log}");

    // The publishers were never touched: each ends cleanly, one session each (no
    // discontinuity), every segment checked.
    while ffmpeg.is_running() {
        watch.observe(&ff_url, &live_fmp4());
        std::thread::sleep(Duration::from_secs(1));
    }
    wait_publisher_success(&mut ffmpeg, Duration::from_secs(1));
    wait_publisher_success(&mut gst, Duration::from_secs(30));
    server.assert_alive();
    for (url, sent) in [(&ff_url, FFMPEG_SECS), (&gst_url, GST_SECS)] {
        wait_playlist(url, Duration::from_secs(20), "EXT-X-ENDLIST", |pl| {
            pl.endlist
        });
        let (playlist, _streams) = full_check_ended(url, true, true);
        assert_eq!(
            playlist.discontinuities(),
            0,
            "one session from start to end:\n{}",
            playlist.text
        );
        let listed = playlist.total_duration();
        assert!(
            (listed - f64::from(sent)).abs() <= SEGMENT_SECS + 0.5,
            "{url}: {listed:.2}s listed, {sent}s sent\n{}",
            playlist.text
        );
    }
    let metrics = server.metrics();
    assert!(
        metric_sum(&metrics, "tidegate_connections", &[("protocol", "rtmps")]) >= 2.0,
        "{metrics}"
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "tidegate_connection_errors",
            &[("protocol", "rtmps")]
        ),
        0.0,
        "no publisher connection ended with an error:\n{metrics}"
    );
}

fn check_config(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .arg("check-config")
        .args(args)
        .env_remove("TIDEGATE_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_refuses_rtmps_without_a_usable_certificate_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let (one_cert, one_key) = self_signed_cert(dir.path(), "one");
    let (_, two_key) = self_signed_cert(dir.path(), "two");
    let listen = ["--rtmps-listen", "127.0.0.1:1936"];

    let (ok, err) = check_config(&listen);
    assert!(!ok, "{err}");
    assert!(
        err.contains("rtmps-listen") && err.contains("tls-cert") && err.contains("tls-key"),
        "{err}"
    );

    let (ok, err) =
        check_config(&[&listen[..], &["--tls-cert", one_cert.to_str().unwrap()]].concat());
    assert!(!ok, "{err}");
    assert!(err.contains("needs tls-key"), "{err}");

    let (ok, err) = check_config(
        &[
            &listen[..],
            &["--tls-cert", one_cert.to_str().unwrap()],
            &["--tls-key", two_key.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(!ok, "a key that is not the certificate's: {err}");
    assert!(err.contains("does not go with the certificate"), "{err}");

    let missing = dir.path().join("missing.crt");
    let (ok, err) = check_config(
        &[
            &listen[..],
            &["--tls-cert", missing.to_str().unwrap()],
            &["--tls-key", one_key.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(!ok, "{err}");
    assert!(err.contains("missing.crt"), "{err}");

    // Through the environment, as every flag.
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .arg("check-config")
        .env("TIDEGATE_RTMPS_LISTEN", "127.0.0.1:1936")
        .env("TIDEGATE_TLS_CERT", &one_cert)
        .env("TIDEGATE_TLS_KEY", &one_key)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("rtmps-listen = \"127.0.0.1:1936\""), "{text}");

    // And from the file.
    let toml = dir.path().join("tidegate.toml");
    fs::write(
        &toml,
        format!(
            "rtmps-listen = \"127.0.0.1:1936\"\ntls-cert = {:?}\ntls-key = {:?}\n",
            one_cert, one_key
        ),
    )
    .unwrap();
    let (ok, err) = check_config(&["--config", toml.to_str().unwrap()]);
    assert!(ok, "{err}");
}

#[test]
fn a_stalled_tls_handshake_holds_a_connection_slot_and_is_closed_at_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path(), "one");
    let rtmps: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let server = Server::start(&[
        "--rtmps-listen",
        &rtmps.to_string(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--rtmp-handshake-timeout",
        "2s",
        "--max-connections-per-ip",
        "2",
    ]);
    // Two clients start a TLS record and stop: each holds a slot of its source's two.
    let mut stalled: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(rtmps).unwrap();
            std::io::Write::write_all(&mut s, &[0x16, 0x03, 0x01]).unwrap();
            s
        })
        .collect();
    wait_for(
        "the two stalled handshakes to be counted as connections",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            (metric_sum(
                &server.metrics(),
                "tidegate_connections",
                &[("protocol", "rtmps")],
            ) >= 2.0)
                .then_some(())
        },
    );
    // A third from the same source is refused at accept.
    let mut third = TcpStream::connect(rtmps).unwrap();
    wait_for(
        "the third connection to be closed at accept",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || closed_by_peer(&mut third).then_some(()),
    );
    wait_counter(
        &server,
        "tidegate_connections_refused",
        &[("protocol", "rtmps"), ("reason", "per_source")],
        1.0,
    );
    // The stalled ones are closed by the handshake deadline, and counted.
    for s in &mut stalled {
        wait_for(
            "a stalled TLS handshake to be closed",
            Duration::from_secs(15),
            Duration::from_millis(200),
            || closed_by_peer(s).then_some(()),
        );
    }
    wait_counter(
        &server,
        "tidegate_tls_handshake_failures",
        &[("reason", "timeout")],
        2.0,
    );
    // Their slots are free again: a real TLS client completes its handshake.
    assert_eq!(served_cn(rtmps).as_deref(), Some("one"));
}
