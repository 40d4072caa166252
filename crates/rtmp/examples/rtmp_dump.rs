//! Accepts one RTMP publisher, accepts every publish and prints what arrives.
//!
//! `cargo run -p tidegate-rtmp --example rtmp_dump -- 127.0.0.1:1935 [raw-capture-file]`
//! then publish to `rtmp://127.0.0.1:1935/live/key`. With a capture file, every byte the
//! client sent is written there (for building test vectors).
// An example, a tool for people run by hand: it may unwrap, panic and index; the crate's
// deny lints are for its library code, which peer input reaches.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Instant;

use bytes::BytesMut;
use tidegate_rtmp::{Event, ServerSession, SessionConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:1935".into());
    let mut capture = match args.next() {
        Some(path) => Some(std::fs::File::create(path)?),
        None => None,
    };
    let listener = TcpListener::bind(&addr)?;
    println!("listening on {addr}");
    let (mut sock, peer) = listener.accept()?;
    println!("publisher connected from {peer}");
    sock.set_read_timeout(Some(std::time::Duration::from_millis(500)))?;
    let mut session = ServerSession::new(SessionConfig::default(), Instant::now());
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut tmp = vec![0u8; 64 * 1024];
    let (mut audio_msgs, mut audio_bytes, mut video_msgs, mut video_bytes) =
        (0u64, 0u64, 0u64, 0u64);
    let (mut first_ts, mut last_ts) = (None::<u32>, 0u32);
    let result = loop {
        let n = match sock.read(&mut tmp) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if let Err(e) = session.handle_timeout(Instant::now()) {
                    break Err(e);
                }
                continue;
            }
            Err(e) => {
                println!("read error: {e}");
                break Ok(());
            }
        };
        if let Some(f) = capture.as_mut() {
            f.write_all(&tmp[..n])?;
        }
        buf.extend_from_slice(&tmp[..n]);
        let res = session.handle_input(Instant::now(), &mut buf);
        loop {
            while let Some(out) = session.poll_transmit() {
                sock.write_all(&out)?;
            }
            let Some(ev) = session.poll_event() else {
                break;
            };
            match ev {
                Event::PublishRequest {
                    stream_id,
                    app,
                    stream_key,
                    query,
                    publish_type,
                } => {
                    println!(
                        "publish request: stream {stream_id} app={app} key={stream_key} query={query:?} type={publish_type}"
                    );
                    session.accept_publish(stream_id);
                }
                Event::Audio {
                    timestamp, data, ..
                } => {
                    audio_msgs += 1;
                    audio_bytes += data.len() as u64;
                    if audio_msgs == 1 {
                        println!(
                            "first audio: ts={timestamp} header={:02x?}",
                            &data[..data.len().min(2)]
                        );
                    }
                    first_ts.get_or_insert(timestamp);
                    last_ts = last_ts.max(timestamp);
                }
                Event::Video {
                    timestamp, data, ..
                } => {
                    video_msgs += 1;
                    video_bytes += data.len() as u64;
                    if video_msgs == 1 {
                        println!(
                            "first video: ts={timestamp} header={:02x?}",
                            &data[..data.len().min(5)]
                        );
                    }
                    first_ts.get_or_insert(timestamp);
                    last_ts = last_ts.max(timestamp);
                }
                other => println!("{other:?}"),
            }
        }
        if let Err(e) = res {
            break Err(e);
        }
    };
    println!(
        "done: {:?}; audio {audio_msgs} msgs / {audio_bytes} B, video {video_msgs} msgs / {video_bytes} B, ts {:?}..{last_ts} ms, {} bytes received, {} dropped",
        result,
        first_ts,
        session.bytes_received(),
        session.dropped_media_messages()
    );
    Ok(())
}
