//! SRT over a lossy link: the publisher sends through an impairment relay (a UDP proxy in
//! the test) that drops a share of the publisher's datagrams and delays both directions by
//! 30 ms. A 3 Mbps stream at 300 ms latency arrives with no decode error and the statistics
//! show the retransmissions; at 30 % loss the stream degrades, drops are counted and the
//! server stays healthy.
//!
//! Why not `tc netem` in a network namespace: this kernel has no `sch_netem` (and no module
//! loading): `tc qdisc add ... netem` answers "Specified qdisc kind is unknown". The relay
//! impairs the same traffic in user space, deterministically (seeded).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tidegate_testkit::*;

/// A UDP relay on loopback: publisher → `listen` → server, with loss (publisher → server
/// only, as a percentage set at run time) and a fixed delay each way.
struct Relay {
    listen: SocketAddr,
    loss_percent: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
}

type Queue = Arc<Mutex<BinaryHeap<Reverse<(Instant, u64, Vec<u8>, SocketAddr, bool)>>>>;

impl Relay {
    fn start(server: SocketAddr, delay: Duration) -> Relay {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        front
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        back.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let listen = front.local_addr().unwrap();
        let loss_percent = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let queue: Queue = Arc::default();
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // Publisher → server, with loss.
        {
            let (front, queue, stop, loss, client, seq) = (
                front.try_clone().unwrap(),
                queue.clone(),
                stop.clone(),
                loss_percent.clone(),
                client.clone(),
                seq.clone(),
            );
            thread::spawn(move || {
                let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
                let mut buf = vec![0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = front.recv_from(&mut buf) else {
                        continue;
                    };
                    *client.lock().unwrap() = Some(from);
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    if (rng % 100) < u64::from(loss.load(Ordering::Relaxed)) {
                        continue;
                    }
                    let s = seq.fetch_add(1, Ordering::Relaxed);
                    queue.lock().unwrap().push(Reverse((
                        Instant::now() + delay,
                        s,
                        buf[..n].to_vec(),
                        server,
                        true,
                    )));
                }
            });
        }
        // Server → publisher.
        {
            let (back, queue, stop, client, seq) = (
                back.try_clone().unwrap(),
                queue.clone(),
                stop.clone(),
                client.clone(),
                seq.clone(),
            );
            thread::spawn(move || {
                let mut buf = vec![0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, _)) = back.recv_from(&mut buf) else {
                        continue;
                    };
                    if let Some(to) = *client.lock().unwrap() {
                        let s = seq.fetch_add(1, Ordering::Relaxed);
                        queue.lock().unwrap().push(Reverse((
                            Instant::now() + delay,
                            s,
                            buf[..n].to_vec(),
                            to,
                            false,
                        )));
                    }
                }
            });
        }
        // The delay line.
        {
            let (queue, stop) = (queue.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let due = {
                        let mut q = queue.lock().unwrap();
                        match q.peek() {
                            Some(Reverse((at, ..))) if *at <= Instant::now() => q.pop(),
                            _ => None,
                        }
                    };
                    match due {
                        Some(Reverse((_, _, data, to, to_server))) => {
                            let sock = if to_server { &back } else { &front };
                            let _ = sock.send_to(&data, to);
                        }
                        None => thread::sleep(Duration::from_millis(1)),
                    }
                }
            });
        }
        Relay {
            listen,
            loss_percent,
            stop,
        }
    }

    fn set_loss(&self, percent: u32) {
        self.loss_percent.store(percent, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A 3 Mbps H.264 + AAC MPEG-TS file (2 s GOP), made once per run.
fn clip_3mbps() -> std::path::PathBuf {
    cached_media("h264-3mbps-v1.ts", |tmp| {
        run_ok(
            Command::new(ffmpeg())
                .args(["-y", "-nostdin", "-hide_banner", "-v", "error"])
                .args(lavfi_inputs("testsrc2=size=640x360:rate=25"))
                .args(["-t", "14", "-c:v", "libx264", "-preset", "veryfast"])
                .args(fixed_gop_args(50))
                .args(x264_cbr_args("3M", "1500k"))
                .args(["-c:a", "aac", "-b:a", "96k", "-f", "mpegts"])
                .arg(tmp),
            "ffmpeg",
        );
    })
}

fn publish_via(relay: &Relay, key: &str, secs: u32) -> Proc {
    let clip = clip_3mbps();
    let mut cmd = Command::new(ffmpeg());
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "warning", "-re"]);
    cmd.arg("-i").arg(&clip);
    cmd.args(["-t", &secs.to_string(), "-c", "copy", "-f", "mpegts"]);
    cmd.arg(format!(
        "srt://{}?streamid={key}&pkt_size=1316&latency=300000",
        relay.listen
    ));
    Proc::spawn(&format!("ffmpeg-lossy-{key}"), cmd)
}

/// The value of the first sample of `name` whose labels mention `stream="key"`.
fn sample(metrics: &str, name: &str, key: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(&format!("stream=\"{key}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .next()
        .unwrap_or(0.0)
}

#[test]
fn five_and_thirty_percent_loss() {
    let mut server = Server::start(&["--reconnect-window", "3s"]);
    let relay = Relay::start(server.srt, Duration::from_millis(30));
    relay.set_loss(5);

    // 5 % loss, 30 ms each way, 300 ms latency: everything arrives.
    let key = "lossy5";
    let url = server.playlist_url(key);
    let started = Instant::now();
    let mut publisher = publish_via(&relay, key, 12);
    wait_playlist(&url, Duration::from_secs(30), "the first segment", |pl| {
        !pl.segments.is_empty()
    });
    let mut retransmitted = 0.0;
    while publisher.is_running() {
        // The link heals for the publisher's last two seconds: a live-mode libsrt sender
        // (ffmpeg) closes without lingering, so a packet lost in its last round trip is never
        // retransmitted, and that would be the sender's loss, not the receiver's.
        if started.elapsed() > Duration::from_secs(10) {
            relay.set_loss(0);
        }
        let m = server.metrics();
        retransmitted =
            sample(&m, "tidegate_stream_srt_packets_retransmitted_total", key).max(retransmitted);
        thread::sleep(Duration::from_millis(500));
    }
    wait_publisher_success(&mut publisher, Duration::from_secs(1));
    assert!(
        retransmitted > 0.0,
        "5 % loss must show retransmissions in the metrics"
    );
    wait_playlist(&url, Duration::from_secs(25), "ENDLIST", |pl| pl.endlist);
    let (_, streams) = full_check_ended(&url, true, true);
    assert!(streams.iter().any(|s| s.codec_name == "h264"));
    server.assert_alive();

    // 30 % loss: the stream degrades, drops are counted, the server stays healthy.
    relay.set_loss(30);
    let key = "lossy30";
    let mut publisher = publish_via(&relay, key, 10);
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut lost = 0.0;
    let mut dropped = 0.0;
    while publisher.is_running() && Instant::now() < deadline {
        let m = server.metrics();
        lost = sample(&m, "tidegate_stream_srt_packets_lost_total", key).max(lost);
        dropped = sample(&m, "tidegate_stream_srt_packets_dropped_total", key).max(dropped);
        assert_eq!(get(&server.url("/livez")).status, 200);
        thread::sleep(Duration::from_millis(500));
    }
    publisher.kill();
    assert!(lost > 0.0, "30 % loss must be counted as lost packets");
    assert!(
        dropped > 0.0 || lost > 100.0,
        "30 % loss at 300 ms latency must drop packets (lost {lost}, dropped {dropped})"
    );
    server.assert_alive();
    assert_eq!(get(&server.url("/livez")).status, 200);
}
