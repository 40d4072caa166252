//! Ingest path micro-benchmark: the bytes an RTMP publisher sends → `ServerSession` →
//! `FlvDemuxer` → `Segmenter` (fMP4 and MPEG-TS) → drained outputs, in MB/s of wire bytes.
//!
//! Setup (once, cached under the target directory): ffmpeg makes 20 s of 1280x720 30 fps
//! testsrc2 + sine as FLV (libx264 3 Mbit/s, 2 s GOPs, AAC); its tags go through
//! `ClientSession` (talking to a `ServerSession` in memory) to get the exact byte stream a
//! publisher would send at chunk size 4096: handshake, commands, metadata, chunks.
//!
//! `cargo bench -p tidegate-packager --bench ingest`

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::time::Instant;

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use tidegate_flv::FlvDemuxer;
use tidegate_packager::{Container, Segmenter, SegmenterConfig, SegmenterOutput};
use tidegate_rtmp::amf0;
use tidegate_rtmp::chunk::{message_type, ChunkReader};
use tidegate_rtmp::handshake::HANDSHAKE_SIZE;
use tidegate_rtmp::{
    ClientConfig, ClientEvent, ClientSession, Event, ServerSession, SessionConfig,
};

use support::{ffmpeg_testsrc_flv, flv_tags, Error, Tag};

/// Bytes handed to `handle_input` per call, as a driver's socket reads would.
const READ_SIZE: usize = 64 * 1024;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// The recorded stream (made once with ffmpeg, then reused).
fn recorded_flv() -> Result<Vec<u8>, Error> {
    let dir = target_dir().join("tidegate-bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("ingest-720p30-3M-20s.flv");
    if let Ok(data) = std::fs::read(&path) {
        return Ok(data);
    }
    let tmp = dir.join(format!("ingest-{}.flv.part", std::process::id()));
    ffmpeg_testsrc_flv(
        &tmp,
        "1280x720",
        "20",
        &[
            "-preset", "veryfast", "-b:v", "3M", "-maxrate", "3M", "-bufsize", "6M", "-pix_fmt",
            "yuv420p", "-b:a", "128k",
        ],
    )?;
    std::fs::rename(&tmp, &path)?;
    Ok(std::fs::read(&path)?)
}

/// The exact bytes a `ClientSession` publisher sends for these tags, and how many of them
/// precede the first media message (handshake and commands up to `publish`).
fn publisher_wire(tags: &[Tag]) -> Result<(Vec<u8>, usize), Error> {
    let now = Instant::now();
    let mut client = ClientSession::new(
        ClientConfig {
            stream_key: "bench".into(),
            chunk_size: 4096,
            ..ClientConfig::default()
        },
        now,
    );
    let mut server = ServerSession::new(SessionConfig::default(), now);
    let mut wire = Vec::new();
    let mut to_server = BytesMut::new();
    let mut to_client = BytesMut::new();
    let mut started = false;
    for _ in 0..20 {
        while let Some(b) = client.poll_transmit() {
            wire.extend_from_slice(&b);
            to_server.extend_from_slice(&b);
        }
        server.handle_input(now, &mut to_server)?;
        while let Some(e) = server.poll_event() {
            if let Event::PublishRequest { stream_id, .. } = e {
                server.accept_publish(stream_id);
            }
        }
        while let Some(b) = server.poll_transmit() {
            to_client.extend_from_slice(&b);
        }
        client.handle_input(now, &mut to_client)?;
        while let Some(e) = client.poll_event() {
            started |= matches!(e, ClientEvent::PublishStarted { .. });
        }
        if started {
            break;
        }
    }
    if !started {
        return Err("publish did not start".into());
    }
    let setup_len = wire.len();
    for (kind, ts, body) in tags {
        match *kind {
            message_type::AUDIO => client.send_audio(*ts, body.clone())?,
            message_type::VIDEO => client.send_video(*ts, body.clone())?,
            message_type::DATA_AMF0 => {
                if let Some(meta) = amf0::decode_all(body)
                    .ok()
                    .and_then(|v| v.into_iter().nth(1))
                {
                    client.send_metadata(&meta)?;
                }
            }
            _ => {}
        }
    }
    client.unpublish();
    while let Some(b) = client.poll_transmit() {
        wire.extend_from_slice(&b);
    }
    Ok((wire, setup_len))
}

/// What one pass produced (kept so the work cannot be optimised away, and checked).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Counts {
    media_messages: u64,
    frames: u64,
    segments: u64,
    output_bytes: u64,
}

/// Feeds the wire to a fresh server session: the setup bytes in one read (a publisher waits
/// for `NetStream.Publish.Start` before sending media, so the publish is answered before
/// media arrives), then `READ_SIZE` reads. With a container, the media goes on through the
/// demuxer and a segmenter whose outputs are drained.
fn ingest(wire: &[u8], setup_len: usize, container: Option<Container>) -> Result<Counts, Error> {
    let now = Instant::now();
    let mut server = ServerSession::new(SessionConfig::default(), now);
    let mut demuxer = FlvDemuxer::new();
    let mut segmenter = container.map(|container| {
        Segmenter::new(SegmenterConfig {
            container,
            ..SegmenterConfig::default()
        })
    });
    let mut counts = Counts::default();
    let mut buf = BytesMut::with_capacity(2 * READ_SIZE);
    let drain = |segmenter: &mut Segmenter, counts: &mut Counts| {
        while let Some(out) = segmenter.poll_output() {
            match out {
                SegmenterOutput::Init { data, .. } => {
                    counts.output_bytes += black_box(data).len() as u64
                }
                SegmenterOutput::Segment(cut) => {
                    counts.segments += 1;
                    counts.output_bytes += black_box(cut.data).len() as u64;
                }
                // No parts without a part duration.
                SegmenterOutput::Part(_) => {}
            }
        }
    };
    let (setup, media) = wire.split_at(setup_len);
    for read in std::iter::once(setup).chain(media.chunks(READ_SIZE)) {
        buf.extend_from_slice(read);
        server.handle_input(now, &mut buf)?;
        while server.poll_transmit().is_some() {}
        while let Some(event) = server.poll_event() {
            let (video, timestamp, data) = match event {
                Event::PublishRequest { stream_id, .. } => {
                    server.accept_publish(stream_id);
                    continue;
                }
                Event::Video {
                    timestamp, data, ..
                } => (true, timestamp, data),
                Event::Audio {
                    timestamp, data, ..
                } => (false, timestamp, data),
                _ => continue,
            };
            counts.media_messages += 1;
            let Some(segmenter) = segmenter.as_mut() else {
                black_box(data);
                continue;
            };
            if video {
                demuxer.handle_video(timestamp, data)?;
            } else {
                demuxer.handle_audio(timestamp, data)?;
            }
            while let Some(media) = demuxer.poll_event() {
                if matches!(media, tidegate_media::MediaEvent::Frame(_)) {
                    counts.frames += 1;
                }
                let _ = segmenter.handle_event(media, 1_700_000_000_000);
                drain(segmenter, &mut counts);
            }
        }
    }
    if let Some(segmenter) = segmenter.as_mut() {
        segmenter.finish();
        drain(segmenter, &mut counts);
    }
    Ok(counts)
}

/// The chunk reader alone over the post-handshake bytes (Set Chunk Size applied).
fn chunk_reader_only(wire: &[u8]) -> Result<u64, Error> {
    let mut reader = ChunkReader::new();
    let mut buf = BytesMut::with_capacity(2 * READ_SIZE);
    let mut messages = 0u64;
    let chunks = wire
        .get(1 + 2 * HANDSHAKE_SIZE..)
        .ok_or("the wire is shorter than the handshake")?;
    for read in chunks.chunks(READ_SIZE) {
        buf.extend_from_slice(read);
        while let Some(m) = reader.read(&mut buf)? {
            if m.type_id == message_type::SET_CHUNK_SIZE {
                let size = m.payload.first_chunk::<4>().ok_or("short Set Chunk Size")?;
                reader.set_chunk_size(u32::from_be_bytes(*size))?;
            }
            messages += 1;
            black_box(m.payload);
        }
    }
    Ok(messages)
}

/// The recorded stream's publisher wire bytes and how many of them are setup, checked:
/// every tag arrives, and both containers produce 10 segments' worth.
fn setup() -> Result<(Vec<u8>, usize), Error> {
    let flv = recorded_flv()?;
    let tags = flv_tags(&flv);
    let (wire, setup_len) = publisher_wire(&tags)?;
    let media_tags = tags
        .iter()
        .filter(|t| t.0 == message_type::AUDIO || t.0 == message_type::VIDEO)
        .count() as u64;
    let session = ingest(&wire, setup_len, None)?;
    assert_eq!(session.media_messages, media_tags);
    for container in [Container::Fmp4, Container::MpegTs] {
        let counts = ingest(&wire, setup_len, Some(container))?;
        assert_eq!(counts.media_messages, media_tags);
        assert!(counts.segments >= 9, "{container:?}: {counts:?}");
        eprintln!("{container:?}: {counts:?}");
    }
    eprintln!(
        "recorded stream: {} FLV bytes, {} tags, {} RTMP wire bytes",
        flv.len(),
        tags.len(),
        wire.len()
    );
    Ok((wire, setup_len))
}

fn bench(c: &mut Criterion) {
    let (wire, setup_len) = match setup() {
        Ok(setup) => setup,
        Err(e) => {
            eprintln!("ingest bench setup failed: {e}");
            std::process::exit(1);
        }
    };

    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.sample_size(20);
    group.bench_function("chunk_reader", |b| {
        b.iter(|| chunk_reader_only(black_box(&wire)))
    });
    group.bench_function("server_session", |b| {
        b.iter(|| ingest(black_box(&wire), setup_len, None))
    });
    group.bench_function("session_flv_segmenter_fmp4", |b| {
        b.iter(|| ingest(black_box(&wire), setup_len, Some(Container::Fmp4)))
    });
    group.bench_function("session_flv_segmenter_ts", |b| {
        b.iter(|| ingest(black_box(&wire), setup_len, Some(Container::MpegTs)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
