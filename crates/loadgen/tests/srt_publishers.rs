//! The whole run (`tidegate_loadgen::run`) over SRT against an in-process sink built on
//! tidegate-srt's `Listener` and tidegate-mpegts's `TsDemuxer`: what arrives is one
//! continuous MPEG-TS per publisher across loops of the input (no continuity-counter
//! error, no PCR jump, decode times always increasing), paced in real time, with the
//! stream IDs of the URL template; a sink that drops some data packets shows up in the
//! report as loss the server reported and retransmissions that repaired it.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{tag, FLV_HEADER};
use tidegate_loadgen::report::Outcome;
use tidegate_loadgen::{run, BenchConfig, FlvFile, Input, TsPass};
use tidegate_media::{MediaEvent, TrackKind};
use tidegate_mpegts::{DemuxStats, TsDemuxer};
use tidegate_srt::{
    peek_dest_socket_id, AcceptParams, Connection, Event, Listener, ListenerConfig, ListenerOutput,
    Packet,
};
use tokio::net::UdpSocket;

/// avcC of a real 320x240 baseline H.264 stream (from ffmpeg).
const AVCC: &str =
    "0142c00dffe100186742c00dd90141fb011000000300100000030320f142a48001000568cb83cb20";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// 1 s: 50 fps video (2.5 kB frames, a keyframe every 500 ms) and AAC every 20 ms.
fn clip() -> Arc<FlvFile> {
    let mut f = FLV_HEADER.to_vec();
    let mut seq = vec![0x17, 0, 0, 0, 0];
    seq.extend(hex(AVCC));
    tag(&mut f, 9, 0, &seq);
    tag(&mut f, 8, 0, &[0xaf, 0, 0x11, 0x90]);
    for ms in (0..1000u32).step_by(20) {
        {
            let key = ms.is_multiple_of(500);
            let mut body = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0];
            let nal_len = 2500u32;
            body.extend_from_slice(&nal_len.to_be_bytes());
            body.push(if key { 0x65 } else { 0x41 });
            body.extend(std::iter::repeat_n(0x5a, nal_len as usize - 1));
            tag(&mut f, 9, ms, &body);
        }
        tag(
            &mut f,
            8,
            ms,
            &[0xaf, 1, 0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c],
        );
    }
    Arc::new(FlvFile::parse(Bytes::from(f)).unwrap())
}

/// What the sink saw on one stream ID.
#[derive(Debug, Default)]
struct Seen {
    /// (track, dts) of every frame, in order.
    frames: Vec<(TrackKind, i64)>,
    /// Arrival of the first and last payload.
    first: Option<Instant>,
    last: Option<Instant>,
    demux: DemuxStats,
}

type Log = Arc<Mutex<HashMap<String, Seen>>>;

struct Peer {
    conn: Connection,
    demux: TsDemuxer,
    stream_id: String,
}

/// An SRT sink on 127.0.0.1: accepts every caller and demuxes what it receives. It drops
/// every `drop_every`-th first transmission of a data packet (0: none).
async fn sink(log: Log, drop_every: u64) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut listener = Listener::new(Instant::now(), ListenerConfig::new([9; 32]));
        let mut peers: HashMap<u32, Peer> = HashMap::new();
        let mut buf = vec![0u8; 2048];
        let mut data_seen = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        loop {
            tokio::select! {
                r = socket.recv_from(&mut buf) => {
                    let Ok((n, from)) = r else { continue };
                    let d = &buf[..n];
                    let now = Instant::now();
                    match peek_dest_socket_id(d) {
                        Some(0) => match listener.handle_datagram(now, from, d) {
                            Ok(ListenerOutput::Transmit(r)) => {
                                let _ = socket.send_to(&r, from).await;
                            }
                            Ok(ListenerOutput::Request(req)) => {
                                let sid = req.stream_id().unwrap_or("").to_string();
                                match listener.accept(now, req, AcceptParams::default()) {
                                    Ok((conn, r)) => {
                                        let _ = socket.send_to(&r, from).await;
                                        peers.insert(conn.socket_id(), Peer { conn, demux: TsDemuxer::new(), stream_id: sid });
                                    }
                                    Err(rej) => {
                                        let _ = socket.send_to(&rej.response, from).await;
                                    }
                                }
                            }
                            _ => {}
                        },
                        Some(id) => {
                            if drop_every > 0 {
                                if let Ok(Packet::Data(p)) = Packet::parse(d) {
                                    if !p.retransmitted {
                                        data_seen += 1;
                                        if data_seen.is_multiple_of(drop_every) {
                                            continue;
                                        }
                                    }
                                }
                            }
                            if let Some(p) = peers.get_mut(&id) {
                                let _ = p.conn.handle_datagram(now, d);
                            }
                        }
                        None => {}
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    for p in peers.values_mut() {
                        p.conn.handle_timeout(now);
                    }
                }
            }
            let now = Instant::now();
            let mut log = log.lock().unwrap();
            for p in peers.values_mut() {
                while let Some(d) = p.conn.poll_transmit(now) {
                    let _ = socket.try_send_to(&d, p.conn.peer_addr());
                }
                let seen = log.entry(p.stream_id.clone()).or_default();
                while let Some(ev) = p.conn.poll_event() {
                    if let Event::Payload(data) = ev {
                        seen.first.get_or_insert(now);
                        seen.last = Some(now);
                        p.demux.handle_input(&data).unwrap();
                        while let Some(m) = p.demux.poll_event() {
                            if let MediaEvent::Frame(f) = m {
                                seen.frames.push((f.track, f.dts));
                            }
                        }
                    }
                }
                seen.demux = p.demux.stats().clone();
            }
        }
    });
    addr
}

fn config(url: String, publishers: usize, duration: Duration) -> BenchConfig {
    BenchConfig {
        url,
        publishers,
        ramp_up_per_sec: f64::INFINITY,
        duration,
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
async fn continuous_ts_across_loops_paced_in_real_time() {
    let log: Log = Arc::default();
    let addr = sink(log.clone(), 0).await;
    let url = format!("srt://{addr}?streamid=%23!::r=live/s{{i}},m=publish&latency=200");
    let report = run(
        config(url, 2, Duration::from_millis(3500)),
        clip(),
        std::future::pending(),
        |_| {},
    )
    .await
    .unwrap();
    // Let the sink's TSBPD (200 ms) deliver the tail.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let p = &report.publishers;
    assert_eq!((p.connected, p.dropped, p.failed), (2, 0, 0), "{report:?}");
    assert!(report.input.ts_payloads.unwrap() > 50);
    let srt = p.srt.as_ref().unwrap();
    assert_eq!(srt.packets_retransmitted, 0, "{srt:?}");
    let log = log.lock().unwrap();
    for key in ["#!::r=live/s0,m=publish", "#!::r=live/s1,m=publish"] {
        let seen = log.get(key).unwrap_or_else(|| panic!("{key}: {log:?}"));
        assert_eq!(seen.demux.cc_errors, 0, "{key}: {:?}", seen.demux);
        assert_eq!(seen.demux.pcr_jumps, 0, "{key}: {:?}", seen.demux);
        assert_eq!(seen.demux.dropped_frames, 0, "{key}: {:?}", seen.demux);
        let video: Vec<i64> = seen
            .frames
            .iter()
            .filter(|(t, _)| *t == TrackKind::Video)
            .map(|&(_, d)| d)
            .collect();
        assert!(
            video.windows(2).all(|w| w[1] > w[0]),
            "{key}: video decode times must increase across loops"
        );
        // Up to one GOP (500 ms) waiting for its keyframe slot, then ~3 s of media: more
        // than two passes over the 1 s clip, at 50 fps, with 20 ms steps everywhere.
        let span = video.last().unwrap() - video.first().unwrap();
        assert!(span >= 2 * 90_000, "{key}: {span} ticks");
        assert!(video.windows(2).all(|w| w[1] - w[0] == 1800), "{key}");
        // Paced: ~3 s of media took ~3 s to arrive (never sent all at once).
        let took = seen.last.unwrap() - seen.first.unwrap();
        let media = Duration::from_micros(span as u64 * 1000 / 90);
        assert!(
            took + Duration::from_secs(1) >= media,
            "{key}: {took:?} for {media:?}"
        );
    }
}

#[tokio::test]
async fn loss_is_reported_and_repaired() {
    let log: Log = Arc::default();
    let addr = sink(log.clone(), 40).await;
    // No stream ID: the default RTMP naming (`bench{i}`).
    let url = format!("srt://{addr}?latency=300");
    let report = run(
        config(url, 1, Duration::from_millis(2500)),
        Input::Ts(Arc::new(TsPass::from_flv(&clip()).unwrap())),
        std::future::pending(),
        |_| {},
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let p = &report.publishers;
    assert_eq!((p.connected, p.dropped), (1, 0), "{report:?}");
    assert_eq!(p.per_publisher[0].outcome, Outcome::Finished);
    let srt = p.srt.as_ref().unwrap();
    // One in 40 first transmissions dropped: the server's NAKs report them, the publisher
    // retransmits, and the stream arrives whole.
    assert!(srt.packets_reported_lost > 0, "{srt:?}");
    assert!(
        srt.packets_retransmitted >= srt.packets_reported_lost,
        "{srt:?}"
    );
    assert!(srt.packets_reported_lost * 30 < srt.packets_sent, "{srt:?}");
    assert!(srt.loss_percent > 0.0 && srt.loss_percent < 4.0, "{srt:?}");
    let log = log.lock().unwrap();
    let seen = log.get("#!::r=live/bench0,m=publish").unwrap();
    assert_eq!(seen.demux.cc_errors, 0, "{:?}", seen.demux);
    assert!(seen.frames.len() > 50);
}
