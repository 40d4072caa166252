//! Interop with real libsrt 1.5 peers: ffmpeg's `srt://` output and `srt-live-transmit`
//! publish into the `srt_recv` example's receive loop (our `Listener` on a std UDP
//! socket); the received MPEG-TS must decode. Needs `ffmpeg`, `ffprobe` and
//! `srt-live-transmit` (Debian package `srt-tools`); panics with a clear message if any
//! is missing.
// A test binary: its helpers (outside `#[test]` functions, which clippy.toml already
// covers) may unwrap, panic and index too; the crate's deny lints are for its library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[allow(dead_code)]
#[path = "../examples/srt_recv.rs"]
mod srt_recv;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;

use srt_recv::{run, RecvOptions, RecvReport};
use tidegate_srt::RejectReason;

fn require(tool: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "`{tool}` is required by the libsrt interop test: apt-get install -y ffmpeg srt-tools"
    );
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tidegate-srt-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Starts the receiver on a fresh port; returns the port and the join handle.
fn receiver(o: RecvOptions) -> (u16, thread::JoinHandle<RecvReport>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let h = thread::spawn(move || run(&sock, &o).map_err(|e| e.to_string()).unwrap());
    (port, h)
}

/// Like [`decodes`], returning the decoder's complaints instead of panicking on them.
fn try_decodes(path: &Path) -> Result<(), String> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !err.trim().is_empty() {
        return Err(format!("decode errors: {err}"));
    }
    decodes(path);
    Ok(())
}

fn decodes(path: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.trim().is_empty(), "decode errors: {err}");
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    let d: f64 = String::from_utf8_lossy(&probe.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(d > 2.5, "duration {d}");
}

#[test]
fn ffmpeg_publishes_encrypted() {
    require("ffmpeg");
    require("ffprobe");
    // A live ffmpeg closes its SRT socket right after its last write; a datagram of that
    // tail lost on a busy machine is never retransmitted (no later packet reveals the gap),
    // which truncates the last frame. Up to three attempts: the interop itself must hold.
    let mut failures = Vec::new();
    for attempt in 1..=3 {
        match encrypted_attempt(attempt) {
            Ok(()) => return,
            Err(e) => failures.push(e),
        }
    }
    panic!("every attempt failed: {failures:#?}");
}

fn encrypted_attempt(attempt: u32) -> Result<(), String> {
    let out = tmp(&format!("ffmpeg-{attempt}.ts"));
    let (port, h) = receiver(RecvOptions {
        passphrase: Some("interop-passphrase".into()),
        out: Some(out.clone()),
        seconds: Some(20),
        once: true,
        ..RecvOptions::default()
    });
    let url = format!(
        "srt://127.0.0.1:{port}?streamid=#!::r=live/key,m=publish&passphrase=interop-passphrase&pbkeylen=16&latency=200000"
    );
    let st = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
        ])
        .args([
            "-t", "3", "-c:v", "libx264", "-g", "60", "-pix_fmt", "yuv420p",
        ])
        .args(["-f", "mpegts", &url])
        .status()
        .unwrap();
    assert!(st.success(), "ffmpeg failed");
    let report = h.join().unwrap();
    assert_eq!(
        report.stream_ids,
        vec![Some("#!::r=live/key,m=publish".to_owned())]
    );
    assert!(report.bytes > 50_000, "{report:?}");
    let stats = report.stats[0];
    assert_eq!(stats.packets_undecryptable, 0, "{stats:?}");
    assert_eq!(stats.packets_dropped, 0, "{stats:?}");
    try_decodes(&out)
}

#[test]
fn srt_live_transmit_publishes_all_key_lengths() {
    require("ffmpeg");
    require("srt-live-transmit");
    let src = tmp("src.ts");
    let st = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
        ])
        .args([
            "-t", "4", "-c:v", "libx264", "-g", "50", "-pix_fmt", "yuv420p", "-f", "mpegts",
        ])
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    let input = std::fs::read(&src).unwrap();
    for kl in [16, 24, 32] {
        let out = tmp(&format!("slt{kl}.ts"));
        let (port, h) = receiver(RecvOptions {
            passphrase: Some("interop-passphrase".into()),
            out: Some(out.clone()),
            seconds: Some(20),
            once: true,
            ..RecvOptions::default()
        });
        let url = format!(
            "srt://127.0.0.1:{port}?passphrase=interop-passphrase&pbkeylen={kl}&streamid=slt{kl}"
        );
        // srt-live-transmit reads stdin (paced by ffmpeg -re) and does not exit at its end:
        // stop it after the 4 s input (it sends a shutdown when terminated).
        let cmd = format!(
            "ffmpeg -v error -re -i {} -c copy -f mpegts - | timeout 8 srt-live-transmit -q file://con '{url}'; true",
            src.display()
        );
        let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
        assert!(st.success(), "srt-live-transmit failed");
        let report = h.join().unwrap();
        assert_eq!(report.stream_ids, vec![Some(format!("slt{kl}"))]);
        // srt-live-transmit sends whole 1456-byte chunks; at most the tail is missing.
        let got = std::fs::read(&out).unwrap();
        assert!(
            got.len() + 1456 > input.len(),
            "{} of {}",
            got.len(),
            input.len()
        );
        assert_eq!(
            &got[..],
            &input[..got.len()],
            "payload identical (key length {kl})"
        );
    }
}

#[test]
fn libsrt_caller_sees_our_rejections() {
    require("ffmpeg");
    require("srt-live-transmit");
    // Wrong passphrase: SRT_REJ_BADSECRET, which libsrt reports as "Incorrect passphrase".
    let (port, h) = receiver(RecvOptions {
        passphrase: Some("interop-passphrase".into()),
        seconds: Some(3),
        once: false,
        ..RecvOptions::default()
    });
    let cmd = format!(
        "ffmpeg -v error -re -f lavfi -i testsrc2 -t 2 -f mpegts - | timeout 5 srt-live-transmit -v file://con 'srt://127.0.0.1:{port}?passphrase=wrong-passphrase&streamid=x' 2>&1 | head -c 20000; true"
    );
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let report = h.join().unwrap();
    assert!(
        report.rejected.contains(&RejectReason::BADSECRET),
        "{report:?}"
    );
    assert!(text.contains("Incorrect passphrase"), "libsrt said: {text}");
    assert_eq!(report.bytes, 0);
}
