//! What ffprobe and ffmpeg say of the output: its streams, its duration, a clean full
//! decode with increasing timestamps, and segments that start with a keyframe.

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;

use crate::hls::{fetch_all_media, fetch_playlist, Expect, MediaPlaylist};
use crate::http::{get, resolve};
use crate::tools::{ffmpeg, ffprobe, run_ok};

/// One stream as ffprobe sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    /// `video` or `audio`.
    pub codec_type: String,
    /// e.g. `h264`, `hevc`, `av1`, `aac`.
    pub codec_name: String,
    /// Video width.
    pub width: Option<u64>,
    /// Video height.
    pub height: Option<u64>,
}

/// `ffprobe -v error -of json ARGS TARGET`, parsed; panics when ffprobe fails.
pub fn run_ffprobe(args: &[&str], target: &str) -> serde_json::Value {
    let out = run_ok(
        Command::new(ffprobe())
            .args(["-v", "error", "-of", "json"])
            .args(args)
            .arg(target),
        &format!("ffprobe {args:?} {target}"),
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ffprobe output not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The streams of a file or URL.
pub fn probe_streams(target: &str) -> Vec<StreamInfo> {
    let v = run_ffprobe(
        &["-show_entries", "stream=codec_type,codec_name,width,height"],
        target,
    );
    v["streams"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| StreamInfo {
            codec_type: s["codec_type"].as_str().unwrap_or("").to_string(),
            codec_name: s["codec_name"].as_str().unwrap_or("").to_string(),
            width: s["width"].as_u64(),
            height: s["height"].as_u64(),
        })
        .collect()
}

/// Duration of the media at `target` as its packets say (first pts to last pts + duration
/// of the first stream), so it works on playlists too.
pub fn probe_duration(target: &str) -> f64 {
    let v = run_ffprobe(
        &[
            "-select_streams",
            "0",
            "-show_entries",
            "packet=pts_time,duration_time",
        ],
        target,
    );
    let packets = v["packets"].as_array().cloned().unwrap_or_default();
    let mut lo = f64::MAX;
    let mut hi = f64::MIN;
    for p in &packets {
        let pts: f64 = match p["pts_time"].as_str().and_then(|s| s.parse().ok()) {
            Some(t) => t,
            None => continue,
        };
        let dur: f64 = p["duration_time"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0);
        lo = lo.min(pts);
        hi = hi.max(pts + dur);
    }
    assert!(hi > lo, "ffprobe found no timed packets in {target}");
    hi - lo
}

/// Decodes everything at `target` with ffmpeg; panics if ffmpeg reports any error, or if
/// the packets' decode timestamps ever stand still or go back within a stream.
///
/// ffmpeg's null muxer also complains ("non monotonically increasing dts to muxer") when
/// two decoded frames land on one tick of ffmpeg's own output time base: a live publisher
/// whose clock jitters (GStreamer on a busy machine sends video at 85 ms and 90 ms) does
/// that, and the repackaged stream faithfully keeps it. That line says nothing of our
/// output, so it is left out here; the packet timestamps themselves are checked instead.
pub fn assert_decodes_cleanly(target: &str) {
    let out = Command::new(ffmpeg())
        .args(["-nostdin", "-v", "error", "-i", target, "-f", "null", "-"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        // Matched anywhere in the line: ffmpeg's threads can print it glued to another line.
        .filter(|l| !l.contains("non monotonically increasing dts"))
        // ffmpeg's log folds a repeat of the line above into "Last message repeated N
        // times": only ever after that same (left out) line in a decode to null.
        .filter(|l| !l.trim_start().starts_with("Last message repeated"))
        .collect();
    assert!(
        out.status.success() && errors.is_empty(),
        "decoding {target} reported errors (exit {}):\n{err}",
        out.status
    );
    assert_dts_increase(target);
}

/// Panics unless every stream's packet decode timestamps strictly increase, except once
/// per `EXT-X-DISCONTINUITY` of the media playlist at `url` (a new publisher's
/// timestamps start afresh there, as RFC 8216 allows).
pub fn assert_dts_increase(url: &str) {
    let playlist = get(url);
    let resets = String::from_utf8_lossy(&playlist.body)
        .lines()
        .filter(|l| l.trim() == "#EXT-X-DISCONTINUITY")
        .count();
    let v = run_ffprobe(&["-show_entries", "packet=stream_index,dts"], url);
    let mut last: BTreeMap<i64, (i64, usize)> = BTreeMap::new();
    for p in v["packets"].as_array().cloned().unwrap_or_default() {
        let (Some(stream), Some(dts)) = (p["stream_index"].as_i64(), p["dts"].as_i64()) else {
            continue;
        };
        let entry = last.entry(stream).or_insert((i64::MIN, 0));
        if dts <= entry.0 {
            entry.1 += 1;
            assert!(
                entry.1 <= resets,
                "{url}: stream {stream} dts {dts} after {}: not increasing \
                 ({resets} discontinuities in the playlist)",
                entry.0
            );
        }
        entry.0 = dts;
    }
    assert!(!last.is_empty(), "ffprobe found no packets in {url}");
}

/// For every segment of `pl` with video: init + segment decode to a first frame that is a
/// keyframe. Returns how many segments were checked.
pub fn assert_segments_start_with_keyframes(pl: &MediaPlaylist) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for s in &pl.segments {
        let mut bytes = Vec::new();
        if let Some(m) = &s.map_uri {
            let r = get(&resolve(&pl.url, m));
            assert_eq!(r.status, 200, "init {m}");
            bytes.extend_from_slice(&r.body);
        }
        let r = get(&pl.segment_url(s));
        assert_eq!(r.status, 200, "segment {}", s.uri);
        bytes.extend_from_slice(&r.body);
        let ext = if s.map_uri.is_some() { "mp4" } else { "ts" };
        let f = dir.path().join(format!("seg-{}.{ext}", s.msn));
        fs::write(&f, &bytes).unwrap();
        let v = run_ffprobe(
            &[
                "-select_streams",
                "v:0",
                "-show_frames",
                "-read_intervals",
                "%+#1",
                "-show_entries",
                "frame=key_frame,pict_type",
            ],
            f.to_str().unwrap(),
        );
        let frames = v["frames"].as_array().cloned().unwrap_or_default();
        let Some(first) = frames.first() else {
            continue; // no video in this segment (audio-only stream)
        };
        let key =
            first["key_frame"].as_i64() == Some(1) || first["pict_type"].as_str() == Some("I");
        assert!(
            key,
            "segment {} (msn {}) does not start with a keyframe: first frame {first}",
            s.uri, s.msn
        );
        checked += 1;
    }
    checked
}

/// Everything one finished (ENDLIST) single-session playlist must pass: RFC checks,
/// fetchable media, keyframe-first segments (when `video`), ffprobe codecs, clean decode.
/// Returns the ffprobe stream list.
pub fn full_check_ended(url: &str, fmp4: bool, video: bool) -> (MediaPlaylist, Vec<StreamInfo>) {
    let expect = Expect {
        endlist: Some(true),
        fmp4: Some(fmp4),
        min_segments: 1,
    };
    let pl = fetch_playlist(url, &expect).unwrap_or_else(|e| panic!("{e}"));
    fetch_all_media(&pl).unwrap_or_else(|e| panic!("{e}\n--- playlist:\n{}", pl.text));
    if video {
        let n = assert_segments_start_with_keyframes(&pl);
        assert_eq!(n, pl.segments.len(), "every segment should carry video");
    }
    let streams = probe_streams(url);
    assert_decodes_cleanly(url);
    (pl, streams)
}

/// Asserts the probed streams are exactly: one video stream of `video` codec at 640x360
/// (if `Some`) and one AAC stream (if `audio`).
pub fn assert_streams(streams: &[StreamInfo], video: Option<&str>, audio: bool) {
    let v: Vec<_> = streams.iter().filter(|s| s.codec_type == "video").collect();
    let a: Vec<_> = streams.iter().filter(|s| s.codec_type == "audio").collect();
    match video {
        Some(codec) => {
            assert_eq!(v.len(), 1, "one video stream expected: {streams:?}");
            assert_eq!(v[0].codec_name, codec, "{streams:?}");
            assert_eq!(
                (v[0].width, v[0].height),
                (Some(640), Some(360)),
                "{streams:?}"
            );
        }
        None => assert!(v.is_empty(), "no video expected: {streams:?}"),
    }
    if audio {
        assert_eq!(a.len(), 1, "one audio stream expected: {streams:?}");
        assert_eq!(a[0].codec_name, "aac", "{streams:?}");
    } else {
        assert!(a.is_empty(), "no audio expected: {streams:?}");
    }
}
