//! The test tooling checks itself: the RFC 8216 checker accepts what ffmpeg's own HLS muxer
//! writes and rejects broken playlists, so the end-to-end scenarios can trust it.

use std::process::Command;
use tidegate_testkit::*;

const GOOD: &str = "#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:10
#EXT-X-DISCONTINUITY-SEQUENCE:1
#EXT-X-MAP:URI=\"init-1.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2024-05-01T10:00:00.000Z
#EXTINF:2.000,
seg-10.m4s
#EXTINF:1.960,
seg-11.m4s
#EXT-X-DISCONTINUITY
#EXT-X-MAP:URI=\"init-2.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2024-05-01T10:01:00.000+0000
#EXTINF:2.4,
seg-12.m4s
";

fn check(text: &str) -> Result<MediaPlaylist, String> {
    check_playlist_text(
        "http://h/hls/default/k/index.m3u8",
        text,
        &Expect::default(),
    )
}

#[test]
fn accepts_a_valid_playlist() {
    let pl = check(GOOD).unwrap();
    assert_eq!(pl.media_sequence, 10);
    assert_eq!(pl.discontinuity_sequence, 1);
    assert_eq!(pl.segments.len(), 3);
    assert!(pl.segments[2].discontinuity);
    assert_eq!(pl.segments[2].map_uri.as_deref(), Some("init-2.mp4"));
    assert_eq!(pl.segments[2].msn, 12);
    assert_eq!(
        pl.segment_url(&pl.segments[0]),
        "http://h/hls/default/k/seg-10.m4s"
    );
    assert!(!pl.endlist);
}

#[test]
fn rejects_broken_playlists() {
    let cases: &[(&str, String)] = &[
        ("no EXTM3U", GOOD.replacen("#EXTM3U\n", "", 1)),
        (
            "EXTINF above target",
            GOOD.replace("#EXTINF:2.4,", "#EXTINF:2.6,"),
        ),
        (
            "no target duration",
            GOOD.replace("#EXT-X-TARGETDURATION:2\n", ""),
        ),
        (
            "no media sequence",
            GOOD.replace("#EXT-X-MEDIA-SEQUENCE:10\n", ""),
        ),
        (
            "bad program date time",
            GOOD.replace("2024-05-01T10:00:00.000Z", "yesterday"),
        ),
        (
            "map with old version",
            GOOD.replace("VERSION:7", "VERSION:3"),
        ),
        ("URI without EXTINF", format!("{GOOD}orphan.m4s\n")),
        (
            "zero duration",
            GOOD.replace("#EXTINF:1.960,", "#EXTINF:0,"),
        ),
    ];
    for (what, text) in cases {
        assert!(check(text).is_err(), "checker accepted: {what}\n{text}");
    }
    let ended = format!("{GOOD}#EXT-X-ENDLIST\n");
    let url = "http://h/i.m3u8";
    let want_end = Expect {
        endlist: Some(true),
        ..Expect::default()
    };
    assert!(check_playlist_text(url, GOOD, &want_end).is_err());
    assert!(check_playlist_text(url, &ended, &want_end).is_ok());
    let want_ts = Expect {
        fmp4: Some(false),
        ..Expect::default()
    };
    assert!(check_playlist_text(url, GOOD, &want_ts).is_err());
}

#[test]
fn progress_rules() {
    let a = check(GOOD).unwrap();
    // Sliding by one segment, no discontinuity dropped: fine.
    let slid = GOOD
        .replace("SEQUENCE:10", "SEQUENCE:11")
        .replace("#EXTINF:2.000,\nseg-10.m4s\n", "")
        + "#EXTINF:2.0,\nseg-13.m4s\n";
    let b = check(&slid).unwrap();
    check_progress(&a, &b).unwrap();
    // Media sequence going back.
    assert!(check_progress(&b, &a).is_err());
    // Same msn, different URI.
    let changed = check(&GOOD.replace("seg-11.m4s", "other.m4s")).unwrap();
    assert!(check_progress(&a, &changed).is_err());
    // Dropping the discontinuity segment without bumping the discontinuity sequence.
    let dropped = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:13\n\
                   #EXT-X-DISCONTINUITY-SEQUENCE:1\n#EXT-X-MAP:URI=\"init-2.mp4\"\n#EXTINF:2,\nseg-13.m4s\n";
    let c = check(dropped).unwrap();
    assert!(check_progress(&a, &c).is_err());
    let c2 =
        check(&dropped.replace("DISCONTINUITY-SEQUENCE:1", "DISCONTINUITY-SEQUENCE:2")).unwrap();
    check_progress(&a, &c2).unwrap();
}

#[test]
fn metrics_matcher() {
    let text = "# HELP tidegate_rtmp_connections_rejected_total x\n\
                tidegate_rtmp_connections_rejected_total{reason=\"handshake\"} 2\n\
                tidegate_rtmp_connections_rejected_total{reason=\"timeout\"} 1.0\n\
                tidegate_rtmp_connections_total 9\n\
                other_connection{reason=\"x\"} 5\n";
    assert_eq!(rejected_connections(text), 3.0);
}

/// ffmpeg's HLS muxer output, served over HTTP, passes every check the scenarios apply.
fn ffmpeg_hls(fmp4: bool) {
    let dir = tempfile::tempdir().unwrap();
    let media = media(Media::H264Aac);
    let mut cmd = Command::new(ffmpeg());
    cmd.args(["-nostdin", "-v", "error", "-i"])
        .arg(&media)
        .args(["-t", "9", "-c", "copy", "-f", "hls", "-hls_time", "2"])
        .args(["-hls_list_size", "0", "-hls_playlist_type", "vod"])
        .args(["-hls_flags", "program_date_time+independent_segments"]);
    if fmp4 {
        cmd.args(["-hls_segment_type", "fmp4"]);
    }
    cmd.arg(dir.path().join("index.m3u8"));
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addr = serve_dir(dir.path().to_path_buf());
    let url = format!("http://{addr}/index.m3u8");
    let (pl, streams) = full_check_ended(&url, fmp4, true);
    assert!(pl.segments.len() >= 4, "{}", pl.text);
    let names: Vec<&str> = streams.iter().map(|s| s.codec_name.as_str()).collect();
    assert!(
        names.contains(&"h264") && names.contains(&"aac"),
        "{streams:?}"
    );
    let v = streams.iter().find(|s| s.codec_type == "video").unwrap();
    assert_eq!((v.width, v.height), (Some(640), Some(360)));
    let sent = 9.0;
    assert!(
        (pl.total_duration() - sent).abs() <= SEGMENT_SECS,
        "EXTINF total {} vs {sent}",
        pl.total_duration()
    );
    let probed = probe_duration(&url);
    assert!(
        (probed - sent).abs() <= SEGMENT_SECS,
        "probed {probed} vs {sent}"
    );
}

#[test]
fn ffmpeg_hls_fmp4_passes() {
    ffmpeg_hls(true);
}

#[test]
fn ffmpeg_hls_ts_passes() {
    ffmpeg_hls(false);
}
