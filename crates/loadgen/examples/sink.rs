//! An RTMP sink for measuring `tidegate bench` alone: it accepts every publisher
//! (handshake, connect, publish — with tidegate-rtmp's `ServerSession`), discards the media
//! and prints the received rate once a second.
//!
//! ```sh
//! cargo run --release -p tidegate-loadgen --example sink -- 127.0.0.1:19350
//! ```
//!
//! It runs on its own single-threaded runtime; run it under `taskset` on another core than
//! the generator to keep the two apart.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tidegate_rtmp::{Event, ServerSession, SessionConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Totals {
    bytes: AtomicU64,
    messages: AtomicU64,
    publishing: AtomicUsize,
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:19350".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await?;
        eprintln!("sink listening on rtmp://{addr}/live/...");
        let totals = Arc::new(Totals::default());
        tokio::spawn(report(totals.clone()));
        loop {
            let (sock, _) = listener.accept().await?;
            let _ = sock.set_nodelay(true);
            tokio::spawn(serve(sock, totals.clone()));
        }
    })
}

async fn report(totals: Arc<Totals>) {
    let mut last = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let b = totals.bytes.load(Ordering::Relaxed);
        eprintln!(
            "sink: {} publishing, {:.1} Mbit/s, {} messages",
            totals.publishing.load(Ordering::Relaxed),
            (b - last) as f64 * 8.0 / 1e6,
            totals.messages.load(Ordering::Relaxed)
        );
        last = b;
    }
}

async fn serve(mut sock: TcpStream, totals: Arc<Totals>) {
    let mut session = ServerSession::new(SessionConfig::default(), Instant::now());
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut publishing = false;
    loop {
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        let n = match sock.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        totals.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if session.handle_input(Instant::now(), &mut buf).is_err() {
            break;
        }
        while let Some(ev) = session.poll_event() {
            match ev {
                Event::PublishRequest { stream_id, .. } => {
                    session.accept_publish(stream_id);
                    if !publishing {
                        publishing = true;
                        totals.publishing.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Event::Audio { .. } | Event::Video { .. } => {
                    totals.messages.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        while let Some(b) = session.poll_transmit() {
            if sock.write_all(&b).await.is_err() {
                break;
            }
        }
    }
    if publishing {
        totals.publishing.fetch_sub(1, Ordering::Relaxed);
    }
}
