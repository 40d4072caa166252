//! Reading live HLS media playlists as a viewer does, and resolving their URIs.

use tidegate_loadgen::playlist::{parse, resolve};

const LIVE: &str = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n\
#EXT-X-MEDIA-SEQUENCE:41\n#EXT-X-MAP:URI=\"init-3.mp4\"\n\
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:24.002Z\n#EXTINF:2.000,\nseg-3-41.m4s\n\
#EXTINF:2.5,\nseg-3-42.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-4.mp4\"\n\
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:14:20.000+00:00\n#EXTINF:1.96,\nseg-4-43.m4s\n";

#[test]
fn parses_a_live_playlist() {
    let pl = parse(LIVE).unwrap();
    assert_eq!(pl.target_duration, 2.0);
    assert_eq!(pl.media_sequence, 41);
    assert!(!pl.endlist);
    let s = &pl.segments;
    assert_eq!(s.len(), 3);
    assert_eq!((s[0].msn, s[0].uri.as_str()), (41, "seg-3-41.m4s"));
    assert_eq!(s[0].pdt_ms, Some(1_700_000_004_002));
    // Carried forward: 2.000 s after the first.
    assert_eq!(s[1].pdt_ms, Some(1_700_000_006_002));
    assert_eq!(s[1].duration, 2.5);
    assert_eq!(s[1].map_uri.as_deref(), Some("init-3.mp4"));
    assert_eq!(s[2].pdt_ms, Some(1_700_000_060_000));
    assert_eq!(s[2].map_uri.as_deref(), Some("init-4.mp4"));
    assert!(parse(&format!("{LIVE}#EXT-X-ENDLIST\n")).unwrap().endlist);
}

#[test]
fn rejects_garbage_without_panicking() {
    assert!(parse("").is_err());
    assert!(parse("#EXTM3U\nseg.ts\n").is_err());
    assert!(parse("#EXTM3U\n#EXTINF:abc,\nseg.ts\n").is_err());
    assert!(parse("#EXTM3U\n#EXT-X-MAP:BYTERANGE=1\n").is_err());
    assert!(parse(
        "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:18446744073709551615\n#EXTINF:1,\na\n#EXTINF:1,\nb\n"
    )
    .is_err());
    // Every prefix of a valid playlist parses or errors; none panics.
    for cut in 0..LIVE.len() {
        let _ = parse(&LIVE[..cut]);
    }
}

#[test]
fn resolves_relative_and_absolute_uris() {
    let base = "http://h:8080/hls/default/s/index.m3u8?x=1";
    assert_eq!(
        resolve(base, "seg-1.m4s"),
        "http://h:8080/hls/default/s/seg-1.m4s"
    );
    assert_eq!(resolve(base, "/other/a.ts"), "http://h:8080/other/a.ts");
    assert_eq!(resolve(base, "https://cdn/a.ts"), "https://cdn/a.ts");
    assert_eq!(resolve("http://h", "a.ts"), "http://h/a.ts");
}
