//! End to end: an ffmpeg-made FLV (H.264 + AAC, 2 s GOPs) → `tidegate-flv` → `Segmenter` →
//! real muxers → files and a playlist on disk → ffprobe/ffmpeg read them back.
//!
//! Needs ffmpeg and ffprobe; without them the test fails under CI (`CI` set) and is
//! skipped locally.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{ffmpeg_testsrc_flv, flv_tags, Error};
use tidegate_flv::FlvDemuxer;
use tidegate_media::MediaEvent;
use tidegate_packager::{
    Container, CutSegment, PlaylistState, SegmentEntry, Segmenter, SegmenterConfig, SegmenterOutput,
};

fn tools_available() -> Result<bool, Error> {
    let ok = ["ffmpeg", "ffprobe"].iter().all(|tool| {
        Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !ok && std::env::var_os("CI").is_some() {
        return Err("ffmpeg/ffprobe missing under CI".into());
    }
    Ok(ok)
}

fn temp_dir(name: &str) -> Result<PathBuf, Error> {
    let dir = std::env::temp_dir().join(format!("tidegate-packager-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// 7 s of 320x240 testsrc2 at 30 fps (GOP 60 frames = 2 s) and a 48 kHz sine, as FLV.
fn make_flv(dir: &Path) -> Result<Vec<u8>, Error> {
    let path = dir.join("in.flv");
    ffmpeg_testsrc_flv(
        &path,
        "320x240",
        "7",
        &["-preset", "ultrafast", "-b:a", "64k"],
    )?;
    Ok(std::fs::read(path)?)
}

/// The media events of an FLV file, through the RTMP path's demuxer.
fn demux(flv: &[u8]) -> Result<Vec<MediaEvent>, Error> {
    let mut demuxer = FlvDemuxer::new();
    let mut events = Vec::new();
    for (kind, ts, body) in flv_tags(flv) {
        match kind {
            8 => demuxer.handle_audio(ts, body)?,
            9 => demuxer.handle_video(ts, body)?,
            _ => {}
        }
        events.extend(std::iter::from_fn(|| demuxer.poll_event()));
    }
    Ok(events)
}

struct Packaged {
    segments: Vec<(CutSegment, PathBuf)>,
    playlist: PathBuf,
    frames: (u32, u32),
}

/// Runs the events through a segmenter and a playlist into `dir`, as the server would.
fn package(events: Vec<MediaEvent>, container: Container, dir: &Path) -> Result<Packaged, Error> {
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
                    std::fs::write(dir.join(&uri), &data)?;
                    init_uri = Some(uri);
                }
                SegmenterOutput::Segment(cut) => {
                    let uri = format!("{}.{}", state.next_sequence, container.segment_extension());
                    let path = dir.join(&uri);
                    std::fs::write(&path, &cut.data)?;
                    frames.0 += cut.video_frames;
                    frames.1 += cut.audio_frames;
                    state.push_segment(SegmentEntry::from_cut(&cut, uri, init_uri.clone()));
                    segments.push((cut, path));
                }
                // No parts without a part duration.
                SegmenterOutput::Part(_) => {}
            }
        }
        std::io::Result::Ok(())
    };
    for (i, event) in events.into_iter().enumerate() {
        segmenter.handle_event(event, 1_700_000_000_000 + i as i64)?;
        drain(&mut segmenter, &mut state)?;
    }
    segmenter.finish();
    drain(&mut segmenter, &mut state)?;
    assert!(segmenter.take_error().is_none());
    state.codecs = segmenter.codecs();
    state.end();
    let playlist = dir.join("index.m3u8");
    std::fs::write(&playlist, state.render_media_playlist())?;
    Ok(Packaged {
        segments,
        playlist,
        frames,
    })
}

/// `(stream type, keyframe flag)` of every packet ffprobe reads from `path`.
fn probe_packets(path: &Path) -> Result<Vec<(String, bool)>, Error> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-allowed_extensions", "ALL"])
        .args(["-show_entries", "packet=codec_type,flags", "-of", "csv=p=0"])
        .arg(path)
        .output()?;
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut fields = line.split(',');
            let kind = fields.next().unwrap_or("").to_string();
            let key = fields.next().unwrap_or("").contains('K');
            (kind, key)
        })
        .collect())
}

fn check(container: Container) -> Result<(), Error> {
    if !tools_available()? {
        eprintln!("skipping: ffmpeg/ffprobe not installed");
        return Ok(());
    }
    let name = match container {
        Container::Fmp4 => "fmp4",
        Container::MpegTs => "ts",
    };
    let dir = temp_dir(name)?;
    let events = demux(&make_flv(&dir)?)?;
    let packaged = package(events, container, &dir)?;

    // Cut at the 2 s keyframes: 4 segments (2+2+2+1 s).
    let durations: Vec<u64> = packaged.segments.iter().map(|(c, _)| c.duration).collect();
    assert_eq!(packaged.segments.len(), 4, "{durations:?}");
    for (cut, _) in packaged.segments.iter().take(3) {
        assert_eq!(cut.duration, 180_000);
    }
    assert_eq!(packaged.frames.0, 210);

    // Every segment, read alone (with its init), starts with a video keyframe.
    for (cut, path) in &packaged.segments {
        let standalone = match (container, cut.init_id) {
            (Container::Fmp4, Some(id)) => {
                let mut bytes = std::fs::read(dir.join(format!("init-{id}.mp4")))?;
                bytes.extend_from_slice(&cut.data);
                let p = path.with_extension("standalone.mp4");
                std::fs::write(&p, bytes)?;
                p
            }
            _ => path.clone(),
        };
        let packets = probe_packets(&standalone)?;
        let first_video = packets
            .iter()
            .find(|(kind, _)| kind == "video")
            .ok_or_else(|| format!("{}: no video packet", path.display()))?;
        assert!(first_video.1, "{} starts with a keyframe", path.display());
        let video = packets.iter().filter(|(k, _)| k == "video").count();
        let audio = packets.iter().filter(|(k, _)| k == "audio").count();
        assert_eq!(video, cut.video_frames as usize);
        assert_eq!(audio, cut.audio_frames as usize);
    }

    // The whole playlist, through ffmpeg's HLS demuxer.
    let packets = probe_packets(&packaged.playlist)?;
    let video = packets.iter().filter(|(k, _)| k == "video").count();
    let audio = packets.iter().filter(|(k, _)| k == "audio").count();
    assert_eq!((video as u32, audio as u32), packaged.frames);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn fmp4_segments_and_playlist_read_back() -> Result<(), Error> {
    check(Container::Fmp4)
}

#[test]
fn mpegts_segments_and_playlist_read_back() -> Result<(), Error> {
    check(Container::MpegTs)
}
