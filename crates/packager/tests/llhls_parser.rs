//! An independent LL-HLS-aware parser (PyPI `m3u8`, installed by
//! scripts/install-test-tools.sh) reads our low-latency playlist and its delta update and
//! finds the server control, part info, parts, preload hint and skip tags.

// Test helpers: a failure to run the parser is a test failure.
#![allow(clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use tidegate_packager::{part_uri, Container, PartEntry, PlaylistState, SegmentEntry};

const T0: i64 = 1_700_000_000_000;

/// Reads a playlist on stdin with `m3u8` and prints what it found, one fact per line.
const SCRIPT: &str = r#"
import sys, m3u8
p = m3u8.loads(sys.stdin.read())
sc = p.server_control
print("server_control", sc.can_block_reload, sc.part_hold_back, sc.can_skip_until)
print("part_target", p.part_inf.part_target)
print("preload_hint", p.preload_hint.hint_type, p.preload_hint.uri)
print("skip", p.skip.skipped_segments if p.skip else 0)
print("media_sequence", p.media_sequence, "discontinuity_sequence", p.discontinuity_sequence)
for s in p.segments:
    parts = ",".join("%s:%s:%s" % (x.uri, x.duration, x.independent == "YES") for x in s.parts)
    print("segment", s.uri, s.discontinuity, parts)
"#;

fn parse_with_m3u8(playlist: &str) -> String {
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed (scripts/install-test-tools.sh)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(playlist.as_bytes())
        .expect("write the playlist");
    let out = child.wait_with_output().expect("python3 m3u8");
    assert!(
        out.status.success(),
        "the PyPI package m3u8 could not read the playlist (install it with \
         scripts/install-test-tools.sh): {}\n{playlist}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn part(uri: String, independent: bool) -> PartEntry {
    PartEntry {
        uri,
        duration_secs: 1.0 / 3.0,
        independent,
        gap: false,
        offset: 0,
        bytes: 1000,
    }
}

/// 12 segments of 6 parts pushed in a window of 10, a reconnect before segment 8, and two
/// parts of segment 12 published.
fn state() -> PlaylistState {
    let mut state = PlaylistState::new(Container::Fmp4, 10, 2);
    state.part_target_secs = Some(1.0 / 3.0);
    state.begin_session();
    for n in 0..=12u32 {
        if n == 8 {
            state.begin_session();
        }
        let epoch = state.epoch;
        let seg = format!("seg-{epoch}-{n}.m4s");
        let map = Some(format!("init-{epoch}-0.mp4"));
        let pdt = T0 + i64::from(n) * 2000;
        let parts = if n == 12 { 2 } else { 6 };
        for p in 0..parts {
            let next = if p == 5 {
                part_uri(&format!("seg-{epoch}-{}.m4s", n + 1), 0)
            } else {
                part_uri(&seg, p + 1)
            };
            state.push_part(
                part(part_uri(&seg, p), p == 0),
                pdt,
                map.clone(),
                Some(next),
            );
        }
        if n < 12 {
            state.push_segment(SegmentEntry {
                sequence: 0,
                uri: seg,
                duration_secs: 2.0,
                program_date_time_ms: pdt,
                discontinuity: false,
                map_uri: map,
                bytes: 100_000,
                parts: Vec::new(),
                start_ticks: None,
                video_frames: None,
                video_cadence: None,
                period: None,
            });
        }
    }
    state
}

#[test]
fn m3u8_finds_the_low_latency_tags() {
    let state = state();
    let out = parse_with_m3u8(&state.render_media_playlist());
    assert!(out.contains("server_control YES 1.002 12.0\n"), "{out}");
    assert!(out.contains("part_target 0.334\n"), "{out}");
    assert!(out.contains("preload_hint PART seg-2-12.2.m4s\n"), "{out}");
    assert!(out.contains("skip 0\n"), "{out}");
    assert!(
        out.contains("media_sequence 2 discontinuity_sequence 0\n"),
        "{out}"
    );
    let segments: Vec<&str> = out.lines().filter(|l| l.starts_with("segment ")).collect();
    // 10 complete segments and the open one (parts only, no URI).
    assert_eq!(segments.len(), 11, "{out}");
    assert!(
        segments[0].starts_with("segment seg-1-2.m4s False "),
        "{out}"
    );
    assert!(
        segments[6].starts_with("segment seg-2-8.m4s True "),
        "{out}"
    );
    // Parts of the segments within 3 target durations of the end, the first independent.
    assert!(
        segments[9].ends_with(
            "seg-2-11.0.m4s:0.333:True,seg-2-11.1.m4s:0.333:False,seg-2-11.2.m4s:0.333:False,\
             seg-2-11.3.m4s:0.333:False,seg-2-11.4.m4s:0.333:False,seg-2-11.5.m4s:0.333:False"
        ),
        "{out}"
    );
    assert_eq!(
        segments[10],
        "segment None False seg-2-12.0.m4s:0.333:True,seg-2-12.1.m4s:0.333:False"
    );
    assert!(
        segments[0].ends_with(' '),
        "old segments list no parts: {out}"
    );
}

#[test]
fn m3u8_reads_the_delta_update() {
    let state = state();
    let full = parse_with_m3u8(&state.render_media_playlist());
    let delta = parse_with_m3u8(&state.render_delta_update());
    assert!(delta.contains("skip 3\n"), "{delta}");
    assert!(
        delta.contains("media_sequence 2 discontinuity_sequence 0\n"),
        "{delta}"
    );
    assert!(
        delta.contains("preload_hint PART seg-2-12.2.m4s\n"),
        "{delta}"
    );
    // The delta lists the same segments as the full playlist, less the skipped ones.
    let segments = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("segment "))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(segments(&full)[3..], segments(&delta)[..]);
}
