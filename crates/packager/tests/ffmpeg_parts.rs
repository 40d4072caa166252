//! LL-HLS parts end to end: an ffmpeg-made FLV (H.264 + AAC, 2 s GOPs, 30 fps) →
//! `tidegate-flv` → `Segmenter` with 1/3 s parts → the real fMP4 muxer. ffprobe reads every
//! part alone (with its init segment) and every segment (its parts concatenated), and
//! ffmpeg's HLS demuxer reads the low-latency playlist listing them.
//!
//! Needs ffmpeg and ffprobe; without them the test fails under CI (`CI` set) and is
//! skipped locally.

mod support;

use std::path::Path;
use std::process::Command;

use support::{ffmpeg_testsrc_flv, flv_tags, Error};
use tidegate_flv::FlvDemuxer;
use tidegate_packager::{
    part_uri, Container, PartEntry, PlaylistState, SegmentEntry, Segmenter, SegmenterConfig,
    SegmenterOutput, DEFAULT_PART_DURATION,
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

/// `(stream type, keyframe flag)` of every packet ffprobe reads from `path`.
fn probe_packets(path: &Path) -> Result<Vec<(String, bool)>, Error> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-allowed_extensions", "ALL"])
        .args(["-show_entries", "packet=codec_type,flags", "-of", "csv=p=0"])
        .arg(path)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "ffprobe {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
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

#[test]
fn parts_and_their_segments_read_back_with_ffprobe() -> Result<(), Error> {
    if !tools_available()? {
        eprintln!("skipping: ffmpeg/ffprobe not installed");
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("tidegate-packager-parts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let flv_path = dir.join("in.flv");
    ffmpeg_testsrc_flv(
        &flv_path,
        "320x240",
        "5",
        &["-preset", "ultrafast", "-b:a", "64k"],
    )?;
    let flv = std::fs::read(&flv_path)?;
    let mut demuxer = FlvDemuxer::new();
    let mut events = Vec::new();
    for (kind, ts, body) in flv_tags(&flv) {
        match kind {
            8 => demuxer.handle_audio(ts, body)?,
            9 => demuxer.handle_video(ts, body)?,
            _ => {}
        }
        events.extend(std::iter::from_fn(|| demuxer.poll_event()));
    }

    let mut segmenter = Segmenter::new(SegmenterConfig {
        part_duration: Some(DEFAULT_PART_DURATION),
        ..SegmenterConfig::default()
    });
    let mut state = PlaylistState::new(Container::Fmp4, 100, 2);
    state.part_target_secs = Some(DEFAULT_PART_DURATION as f64 / 90_000.0);
    state.begin_session();
    let mut outputs = Vec::new();
    for (i, event) in events.into_iter().enumerate() {
        segmenter.handle_event(event, 1_700_000_000_000 + i as i64)?;
        outputs.extend(std::iter::from_fn(|| segmenter.poll_output()));
    }
    segmenter.finish();
    outputs.extend(std::iter::from_fn(|| segmenter.poll_output()));

    let mut init = Vec::new();
    let mut counter = 0;
    let (mut parts_seen, mut segments_seen, mut frames) = (0, 0, 0u32);
    for output in outputs {
        match output {
            SegmenterOutput::Init { data, .. } => {
                init = data.to_vec();
                std::fs::write(dir.join("init.mp4"), &data)?;
            }
            SegmenterOutput::Part(part) => {
                let uri = part_uri(&format!("seg-1-{counter}.m4s"), part.index);
                std::fs::write(dir.join(&uri), &part.data)?;
                // The part alone, after its init, is readable; the first of a segment
                // starts with a keyframe.
                let alone = dir.join(format!("{uri}.mp4"));
                std::fs::write(&alone, [init.as_slice(), &part.data].concat())?;
                let packets = probe_packets(&alone)?;
                let first_video = packets.iter().find(|(k, _)| k == "video");
                assert_eq!(
                    first_video.map(|(_, key)| *key),
                    Some(part.independent),
                    "{uri}: first video packet"
                );
                // Millisecond timestamps jitter by a tick of 90: as rendered (whole ms), a
                // part stays within PART-TARGET (rounded up).
                assert!(
                    (part.duration + 45) / 90 <= DEFAULT_PART_DURATION.div_ceil(90),
                    "{uri}: {} ticks",
                    part.duration
                );
                state.push_part(
                    PartEntry {
                        uri: uri.clone(),
                        duration_secs: part.duration as f64 / 90_000.0,
                        independent: part.independent,
                        gap: false,
                        offset: part.offset,
                        bytes: part.data.len() as u64,
                    },
                    part.segment_program_date_time_ms,
                    Some("init.mp4".into()),
                    Some(part_uri(&format!("seg-1-{counter}.m4s"), part.index + 1)),
                );
                parts_seen += 1;
            }
            SegmenterOutput::Segment(cut) => {
                let uri = format!("seg-1-{counter}.m4s");
                counter += 1;
                std::fs::write(dir.join(&uri), &cut.data)?;
                let whole = dir.join(format!("{uri}.mp4"));
                std::fs::write(&whole, [init.as_slice(), &cut.data].concat())?;
                let packets = probe_packets(&whole)?;
                let video = packets.iter().filter(|(k, _)| k == "video").count();
                let audio = packets.iter().filter(|(k, _)| k == "audio").count();
                assert_eq!(
                    (video, audio),
                    (cut.video_frames as usize, cut.audio_frames as usize)
                );
                assert!(packets
                    .iter()
                    .find(|(k, _)| k == "video")
                    .is_some_and(|p| p.1));
                state.push_segment(SegmentEntry::from_cut(&cut, uri, Some("init.mp4".into())));
                segments_seen += 1;
                frames += cut.video_frames;
            }
        }
    }
    // 5 s: segments of 2, 2 and 1 s, 6 + 6 + 3 parts.
    assert_eq!(segments_seen, 3);
    assert_eq!(parts_seen, 15);
    assert_eq!(frames, 150);
    state.end();
    let playlist = dir.join("index.m3u8");
    std::fs::write(&playlist, state.render_media_playlist())?;
    let packets = probe_packets(&playlist)?;
    let video = packets.iter().filter(|(k, _)| k == "video").count() as u32;
    assert_eq!(video, frames);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
