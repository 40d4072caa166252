//! End to end: an ffmpeg-made FLV (H.264 + AAC, 2 s GOPs) → `tidegate-flv` → `Segmenter` →
//! real muxers → files and a playlist on disk → ffprobe/ffmpeg read them back.
//!
//! Needs ffmpeg and ffprobe; without them the test fails under CI (`CI` set) and is
//! skipped locally.

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use tidegate_flv::FlvDemuxer;
use tidegate_media::MediaEvent;
use tidegate_packager::{
    Container, CutSegment, PlaylistState, SegmentEntry, Segmenter, SegmenterConfig, SegmenterOutput,
};

fn tools_available() -> bool {
    let ok = ["ffmpeg", "ffprobe"].iter().all(|tool| {
        Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !ok && std::env::var_os("CI").is_some() {
        panic!("ffmpeg/ffprobe missing under CI");
    }
    ok
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tidegate-packager-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// 7 s of 320x240 testsrc2 at 30 fps (GOP 60 frames = 2 s) and a 48 kHz sine, as FLV.
fn make_flv(dir: &Path) -> Vec<u8> {
    let path = dir.join("in.flv");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", "7", "-c:v", "libx264", "-preset", "ultrafast"])
        .args(["-g", "60", "-keyint_min", "60", "-sc_threshold", "0"])
        .args(["-c:a", "aac", "-b:a", "64k", "-f", "flv"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(path).unwrap()
}

/// The media events of an FLV file, through the RTMP path's demuxer.
fn demux(flv: &[u8]) -> Vec<MediaEvent> {
    let mut demuxer = FlvDemuxer::new();
    let mut events = Vec::new();
    let mut pos = 13; // header (9) + PreviousTagSize0 (4)
    while pos + 11 <= flv.len() {
        let kind = flv[pos];
        let size = u32::from_be_bytes([0, flv[pos + 1], flv[pos + 2], flv[pos + 3]]) as usize;
        let ts = u32::from_be_bytes([flv[pos + 7], flv[pos + 4], flv[pos + 5], flv[pos + 6]]);
        let body = Bytes::copy_from_slice(&flv[pos + 11..pos + 11 + size]);
        match kind {
            8 => demuxer.handle_audio(ts, body).unwrap(),
            9 => demuxer.handle_video(ts, body).unwrap(),
            _ => {}
        }
        events.extend(std::iter::from_fn(|| demuxer.poll_event()));
        pos += 11 + size + 4;
    }
    events
}

struct Packaged {
    segments: Vec<(CutSegment, PathBuf)>,
    playlist: PathBuf,
    frames: (u32, u32),
}

/// Runs the events through a segmenter and a playlist into `dir`, as the server would.
fn package(events: Vec<MediaEvent>, container: Container, dir: &Path) -> Packaged {
    let mut segmenter = Segmenter::new(SegmenterConfig {
        container,
        ..SegmenterConfig::default()
    });
    let mut state = PlaylistState::new(container, 100, 2);
    state.begin_session();
    let mut segments = Vec::new();
    let mut init_uri = None;
    let mut frames = (0, 0);
    let mut drain = |segmenter: &mut Segmenter, state: &mut PlaylistState| {
        while let Some(output) = segmenter.poll_output() {
            match output {
                SegmenterOutput::Init { data, id } => {
                    let uri = format!("init-{id}.mp4");
                    std::fs::write(dir.join(&uri), &data).unwrap();
                    init_uri = Some(uri);
                }
                SegmenterOutput::Segment(cut) => {
                    let uri = format!("{}.{}", state.next_sequence, container.segment_extension());
                    let path = dir.join(&uri);
                    std::fs::write(&path, &cut.data).unwrap();
                    frames.0 += cut.video_frames;
                    frames.1 += cut.audio_frames;
                    state.push_segment(SegmentEntry::from_cut(&cut, uri, init_uri.clone()));
                    segments.push((cut, path));
                }
            }
        }
    };
    for (i, event) in events.into_iter().enumerate() {
        segmenter
            .handle_event(event, 1_700_000_000_000 + i as i64)
            .unwrap();
        drain(&mut segmenter, &mut state);
    }
    segmenter.finish();
    drain(&mut segmenter, &mut state);
    assert!(segmenter.take_error().is_none());
    state.codecs = segmenter.codecs();
    state.end();
    let playlist = dir.join("index.m3u8");
    std::fs::write(&playlist, state.render_media_playlist()).unwrap();
    Packaged {
        segments,
        playlist,
        frames,
    }
}

/// `(stream type, keyframe flag)` of every packet ffprobe reads from `path`.
fn probe_packets(path: &Path) -> Vec<(String, bool)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-allowed_extensions", "ALL"])
        .args(["-show_entries", "packet=codec_type,flags", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut fields = line.split(',');
            let kind = fields.next().unwrap_or("").to_string();
            let key = fields.next().unwrap_or("").contains('K');
            (kind, key)
        })
        .collect()
}

fn check(container: Container) {
    if !tools_available() {
        eprintln!("skipping: ffmpeg/ffprobe not installed");
        return;
    }
    let name = match container {
        Container::Fmp4 => "fmp4",
        Container::MpegTs => "ts",
    };
    let dir = temp_dir(name);
    let events = demux(&make_flv(&dir));
    let packaged = package(events, container, &dir);

    // Cut at the 2 s keyframes: 4 segments (2+2+2+1 s).
    let durations: Vec<u64> = packaged.segments.iter().map(|(c, _)| c.duration).collect();
    assert_eq!(packaged.segments.len(), 4, "{durations:?}");
    for (cut, _) in &packaged.segments[..3] {
        assert_eq!(cut.duration, 180_000);
    }
    assert_eq!(packaged.frames.0, 210);

    // Every segment, read alone (with its init), starts with a video keyframe.
    for (cut, path) in &packaged.segments {
        let standalone = match (container, cut.init_id) {
            (Container::Fmp4, Some(id)) => {
                let mut bytes = std::fs::read(dir.join(format!("init-{id}.mp4"))).unwrap();
                bytes.extend_from_slice(&cut.data);
                let p = path.with_extension("standalone.mp4");
                std::fs::write(&p, bytes).unwrap();
                p
            }
            _ => path.clone(),
        };
        let packets = probe_packets(&standalone);
        let first_video = packets.iter().find(|(kind, _)| kind == "video").unwrap();
        assert!(first_video.1, "{} starts with a keyframe", path.display());
        let video = packets.iter().filter(|(k, _)| k == "video").count();
        let audio = packets.iter().filter(|(k, _)| k == "audio").count();
        assert_eq!(video, cut.video_frames as usize);
        assert_eq!(audio, cut.audio_frames as usize);
    }

    // The whole playlist, through ffmpeg's HLS demuxer.
    let packets = probe_packets(&packaged.playlist);
    let video = packets.iter().filter(|(k, _)| k == "video").count();
    let audio = packets.iter().filter(|(k, _)| k == "audio").count();
    assert_eq!((video as u32, audio as u32), packaged.frames);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fmp4_segments_and_playlist_read_back() {
    check(Container::Fmp4);
}

#[test]
fn mpegts_segments_and_playlist_read_back() {
    check(Container::MpegTs);
}
