//! Hostile SRT input: random datagrams, truncated packets, a handshake flood from many source
//! ports and a peer that stops answering mid-stream. Throughout, a live SRT stream on the same
//! port keeps growing, `/livez` answers, and the worker's memory stays bounded.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

fn ffmpeg_srt(addr: SocketAddr, key: &str) -> Proc {
    ffmpeg_ts_loop(
        "ffmpeg-srt",
        &format!("srt://{addr}?streamid={key}&pkt_size=1316&latency=200000"),
    )
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A deterministic xorshift generator (no external crate, reproducible).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// An SRT v4 induction handshake (what a caller sends first) with socket id `sid`.
fn induction(sid: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&0x8000_0000u32.to_be_bytes()); // control, type handshake
    p.extend_from_slice(&0u32.to_be_bytes()); // type-specific
    p.extend_from_slice(&0u32.to_be_bytes()); // timestamp
    p.extend_from_slice(&0u32.to_be_bytes()); // destination socket id: the listener
    p.extend_from_slice(&4u32.to_be_bytes()); // version
    p.extend_from_slice(&0u16.to_be_bytes()); // encryption
    p.extend_from_slice(&2u16.to_be_bytes()); // extension: UDT_DGRAM
    p.extend_from_slice(&1234u32.to_be_bytes()); // initial sequence number
    p.extend_from_slice(&1500u32.to_be_bytes()); // MTU
    p.extend_from_slice(&8192u32.to_be_bytes()); // flow window
    p.extend_from_slice(&1u32.to_be_bytes()); // handshake type: induction
    p.extend_from_slice(&sid.to_be_bytes()); // socket id
    p.extend_from_slice(&0u32.to_be_bytes()); // SYN cookie
    p.extend_from_slice(&[127, 0, 0, 1]);
    p.extend_from_slice(&[0; 12]);
    p
}

#[test]
fn hostile_datagrams_floods_and_silent_peers_leave_a_live_stream_alone() {
    let mut server = Server::start(&["--reconnect-window", "30s"]);
    let url = server.playlist_url("good");
    let mut good = ffmpeg_srt(server.srt, "good");
    let live = Expect {
        endlist: Some(false),
        fmp4: Some(true),
        min_segments: 1,
    };
    wait_playlist(&url, Duration::from_secs(25), "the good stream", |pl| {
        !pl.segments.is_empty()
    });
    let mut watch = Watch::default();
    watch.observe(&url, &live);
    let pid = server.proc.pid();
    let rss_before = rss_kib(pid);

    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    let mut grew = 0;
    let mut last_msn = watch.last.as_ref().map_or(0, |p| p.next_msn());
    for round in 0..6 {
        // Random datagrams, including ones that look like SRT data and control packets
        // addressed to random socket ids (and to the good connection's neighbourhood).
        for _ in 0..3000 {
            let len = (rng.next() % 1500) as usize;
            let mut d: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if round % 2 == 0 && d.len() >= 16 {
                d[0] |= 0x80; // control packets
            }
            let _ = attacker.send_to(&d, server.srt);
        }
        // Truncated packets: every prefix of a real induction.
        let hs = induction(0x1000 + round);
        for n in 0..hs.len() {
            let _ = attacker.send_to(&hs[..n], server.srt);
        }
        // A handshake flood from many source ports (each answered statelessly).
        for i in 0..50u32 {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            for j in 0..20u32 {
                let _ = s.send_to(&induction(i * 100 + j + 1), server.srt);
            }
        }
        thread::sleep(Duration::from_millis(700));
        let pl = watch.observe(&url, &live);
        if pl.next_msn() > last_msn {
            grew += 1;
            last_msn = pl.next_msn();
        }
        assert_eq!(get(&server.url("/livez")).status, 200);
        server.assert_alive();
    }
    assert!(
        grew >= 2,
        "the live stream must keep growing under attack ({grew} of 6 rounds grew, {:?})",
        started.elapsed()
    );

    // A peer that stops answering mid-stream: the server times it out (peer idle) and its
    // stream goes to the reconnect window; the good stream is untouched.
    let mut silent = ffmpeg_srt(server.srt, "silent");
    let silent_url = server.playlist_url("silent");
    wait_playlist(
        &silent_url,
        Duration::from_secs(25),
        "the silent stream",
        |pl| !pl.segments.is_empty(),
    );
    silent.signal(libc_sigstop());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = server.log_text();
        if log.contains("peer idle timeout") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the silent peer was never timed out; log:\n{}",
            server.proc.log_tail(40)
        );
        thread::sleep(Duration::from_millis(300));
    }
    silent.kill();
    let before = watch.observe(&url, &live).next_msn();
    let deadline = Instant::now() + Duration::from_secs(15);
    while watch.observe(&url, &live).next_msn() < before + 1 {
        assert!(Instant::now() < deadline, "the good stream stopped");
        thread::sleep(Duration::from_millis(500));
    }
    assert!(good.is_running());

    let rss_after = rss_kib(pid);
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB under hostile input"
    );
    let metrics = server.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tidegate_connection_errors_total")
                && l.contains("protocol=\"srt\"")),
        "malformed SRT input must be counted:\n{metrics}"
    );
    good.kill();
}

fn libc_sigstop() -> i32 {
    19
}
