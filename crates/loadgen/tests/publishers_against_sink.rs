//! The whole run (`tidegate_loadgen::run`) against an in-process RTMP sink built on
//! tidegate-rtmp's `ServerSession`: what arrives (headers once, continuous timestamps over
//! loops, real-time pacing, staggered keyframes) and how refusals and drops are reported.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{tag, FLV_HEADER};
use tidegate_loadgen::report::Outcome;
use tidegate_loadgen::{run, BenchConfig, FlvFile};
use tidegate_rtmp::{Event, ServerSession, SessionConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the sink saw on one stream key: (is video, timestamp, body, arrival).
type Log = Arc<Mutex<HashMap<String, Vec<(bool, u32, Bytes, Instant)>>>>;

/// 1 s of 20 fps "video" with a keyframe every 500 ms and 50 Hz "audio", after an AVC
/// and an AAC sequence header.
fn clip() -> Arc<FlvFile> {
    let mut f = FLV_HEADER.to_vec();
    tag(&mut f, 9, 0, &[0x17, 0, 0, 0, 0, 1, 0x4d]);
    tag(&mut f, 8, 0, &[0xaf, 0, 0x11, 0x90]);
    for i in 0..50u32 {
        let ts = i * 20;
        if ts % 50 == 0 {
            let key = ts % 500 == 0;
            let b0 = if key { 0x17 } else { 0x27 };
            tag(&mut f, 9, ts, &[b0, 1, 0, 0, 0, 0xAA, 0xBB, 0xCC]);
        }
        tag(&mut f, 8, ts, &[0xaf, 1, 0x21, 0x10]);
    }
    Arc::new(FlvFile::parse(Bytes::from(f)).unwrap())
}

/// Accepts every key except `reject*` (refused with BadName) and closes `drop*` after
/// 500 ms of publishing.
async fn sink(log: Log) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                let mut s = ServerSession::new(SessionConfig::default(), Instant::now());
                let mut buf = BytesMut::with_capacity(65536);
                let mut key = String::new();
                let mut since: Option<Instant> = None;
                loop {
                    match sock.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if s.handle_input(Instant::now(), &mut buf).is_err() {
                        return;
                    }
                    while let Some(ev) = s.poll_event() {
                        match ev {
                            Event::PublishRequest {
                                stream_id,
                                stream_key,
                                ..
                            } => {
                                if stream_key.starts_with("reject") {
                                    s.reject_publish(
                                        stream_id,
                                        "NetStream.Publish.BadName",
                                        "taken",
                                    );
                                } else {
                                    s.accept_publish(stream_id);
                                    since = Some(Instant::now());
                                }
                                key = stream_key;
                            }
                            Event::Video {
                                timestamp, data, ..
                            } => log.lock().unwrap().entry(key.clone()).or_default().push((
                                true,
                                timestamp,
                                data,
                                Instant::now(),
                            )),
                            Event::Audio {
                                timestamp, data, ..
                            } => log.lock().unwrap().entry(key.clone()).or_default().push((
                                false,
                                timestamp,
                                data,
                                Instant::now(),
                            )),
                            _ => {}
                        }
                    }
                    while let Some(b) = s.poll_transmit() {
                        if sock.write_all(&b).await.is_err() {
                            return;
                        }
                    }
                    if key.starts_with("drop")
                        && since.is_some_and(|t| t.elapsed() > Duration::from_millis(500))
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn config(addr: SocketAddr, key: &str, n: usize, secs: f64) -> BenchConfig {
    BenchConfig {
        url: format!("rtmp://{addr}/live/{key}{{i}}"),
        publishers: n,
        ramp_up_per_sec: 1000.0,
        duration: Duration::from_secs_f64(secs),
        viewers: 0,
        play_url: None,
        viewer_kinds: Vec::new(),
        dash_url: None,
        ll_skip: false,
        viewer_delay: Duration::ZERO,
        metrics_url: None,
        threads: 1,
        keys: Vec::new(),
    }
}

#[tokio::test]
async fn publishers_pace_loop_and_stagger() {
    let log: Log = Default::default();
    let addr = sink(log.clone()).await;
    let file = clip();
    let report = run(
        config(addr, "bench", 2, 2.6),
        file.clone(),
        std::future::pending(),
        |_| {},
    )
    .await
    .unwrap();
    let p = &report.publishers;
    assert_eq!((p.connected, p.dropped, p.refused, p.failed), (2, 0, 0, 0));
    assert!(p.bytes_sent > 0);
    assert!(p
        .per_publisher
        .iter()
        .all(|o| o.outcome == Outcome::Finished));
    assert_eq!(report.input.gop_ms, 500);
    assert_eq!(report.input.duration_ms, 1000);

    let log = log.lock().unwrap();
    let mut first_key_arrival = vec![];
    for key in ["bench0", "bench1"] {
        let msgs = &log[key];
        // Sequence headers once, first, at timestamp 0.
        assert_eq!(msgs[0].2.as_ref(), &[0x17, 0, 0, 0, 0, 1, 0x4d][..]);
        assert_eq!(msgs[1].2.as_ref(), &[0xaf, 0, 0x11, 0x90][..]);
        let headers = msgs.iter().filter(|m| m.2.get(1) == Some(&0)).count();
        assert_eq!(headers, 2, "{key}: sequence headers are not resent on loop");
        let media = &msgs[2..];
        // Continuous, strictly increasing video timestamps across loops: 100 ms apart
        // (the clip's video is at 0, 100, ..., 900 ms; a pass lasts 1000 ms).
        let vts: Vec<u32> = media.iter().filter(|m| m.0).map(|m| m.1).collect();
        assert!(vts.windows(2).all(|w| w[1] == w[0] + 100), "{key}: {vts:?}");
        assert!(
            *vts.last().unwrap() >= 1000,
            "{key}: looped past one pass: {vts:?}"
        );
        // Paced in real time: arrival - first arrival tracks timestamp - first timestamp.
        let t0 = media[0].3;
        for m in media {
            let wall = m.3.duration_since(t0).as_millis() as i64;
            let drift = wall - i64::from(m.1);
            assert!(
                (-60..=150).contains(&drift),
                "{key}: ts {} arrived at {wall} ms",
                m.1
            );
        }
        first_key_arrival.push(t0);
    }
    // Keyframe phases 0 and 250 ms within the 500 ms GOP.
    let signed_ms = |a: Instant, b: Instant| {
        a.saturating_duration_since(b).as_millis() as i64
            - b.saturating_duration_since(a).as_millis() as i64
    };
    let gap = signed_ms(first_key_arrival[1], first_key_arrival[0]).rem_euclid(500);
    assert!((200..=320).contains(&gap), "stagger {gap} ms");
}

#[tokio::test]
async fn refusals_and_drops_are_reported() {
    let log: Log = Default::default();
    let addr = sink(log.clone()).await;
    let file = clip();
    let r = run(
        config(addr, "reject", 2, 1.0),
        file.clone(),
        std::future::pending(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!((r.publishers.connected, r.publishers.refused), (0, 2));
    assert_eq!(
        r.publishers.per_publisher[0].detail.as_deref(),
        Some("NetStream.Publish.BadName")
    );
    let r = run(
        config(addr, "drop", 1, 2.0),
        file,
        std::future::pending(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!((r.publishers.connected, r.publishers.dropped), (1, 1));
}

#[tokio::test]
async fn nothing_listening_is_a_failure_not_a_hang() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let r = run(
        config(port, "x", 3, 1.0),
        clip(),
        std::future::pending(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!((r.publishers.connected, r.publishers.failed), (0, 3));
}

#[tokio::test]
async fn shutdown_stops_early() {
    let log: Log = Default::default();
    let addr = sink(log).await;
    let t = Instant::now();
    let r = run(
        config(addr, "s", 1, 60.0),
        clip(),
        tokio::time::sleep(Duration::from_millis(800)),
        |_| {},
    )
    .await
    .unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(r.publishers.per_publisher[0].outcome, Outcome::Finished);
}
