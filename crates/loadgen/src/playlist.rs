//! A lenient HLS media-playlist reader: just what a viewer needs to play live (target
//! duration, media sequence, segments with their duration, PROGRAM-DATE-TIME and map,
//! ENDLIST), and the low-latency tags of the HLS specification's second edition
//! (draft-pantos-hls-rfc8216bis §4.4.3.7–4.4.5.3): `EXT-X-PART`, `EXT-X-PRELOAD-HINT`,
//! `EXT-X-SERVER-CONTROL`, `EXT-X-PART-INF` and `EXT-X-SKIP` (a delta update). Bounded by
//! [`MAX_SEGMENTS`] and [`MAX_PARTS`]; unknown tags are skipped. No I/O, no clock.

/// Most segments read from one playlist; the rest is ignored (a live window is ~10).
pub const MAX_SEGMENTS: usize = 100_000;
/// Most parts read from one playlist (a few per segment of the last three target
/// durations); the rest is ignored.
pub const MAX_PARTS: usize = 100_000;
/// Target duration assumed when the playlist has none (seconds).
const DEFAULT_TARGET_DURATION: f64 = 2.0;

/// One partial segment (`EXT-X-PART`).
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// URI as written (relative to the playlist).
    pub uri: String,
    /// `DURATION`, seconds.
    pub duration: f64,
    /// `INDEPENDENT=YES`: starts with a keyframe.
    pub independent: bool,
    /// Wall clock of its first frame, Unix milliseconds: its segment's
    /// PROGRAM-DATE-TIME plus the durations of the parts before it.
    pub pdt_ms: Option<i64>,
}

/// One segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Media sequence number.
    pub msn: u64,
    /// URI as written (relative to the playlist).
    pub uri: String,
    /// `EXTINF` duration, seconds.
    pub duration: f64,
    /// `EXT-X-PROGRAM-DATE-TIME` in Unix milliseconds (carried forward from an earlier
    /// segment's plus durations when the tag is absent).
    pub pdt_ms: Option<i64>,
    /// The `EXT-X-MAP` URI in force, if any.
    pub map_uri: Option<String>,
    /// Its parts, in order (listed only near the live edge).
    pub parts: Vec<Part>,
}

/// `EXT-X-SERVER-CONTROL`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerControl {
    /// `CAN-BLOCK-RELOAD=YES`: `_HLS_msn`/`_HLS_part` requests are held.
    pub can_block_reload: bool,
    /// `PART-HOLD-BACK`, seconds: where a low-latency player starts behind the live edge.
    pub part_hold_back: Option<f64>,
    /// `HOLD-BACK`, seconds.
    pub hold_back: Option<f64>,
    /// `CAN-SKIP-UNTIL`, seconds: delta updates (`_HLS_skip=YES`) are offered.
    pub can_skip_until: Option<f64>,
}

/// `EXT-X-PRELOAD-HINT` of type `PART`: the part being written.
#[derive(Debug, Clone, PartialEq)]
pub struct PreloadHint {
    /// URI as written.
    pub uri: String,
    /// The msn of the segment it belongs to.
    pub msn: u64,
    /// Its index in that segment.
    pub part: u64,
}

/// A media playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    /// `EXT-X-TARGETDURATION`, seconds.
    pub target_duration: f64,
    /// `EXT-X-MEDIA-SEQUENCE` (0 when absent).
    pub media_sequence: u64,
    /// Segments in order (after the skipped ones of a delta update).
    pub segments: Vec<Segment>,
    /// `EXT-X-ENDLIST` present.
    pub endlist: bool,
    /// `EXT-X-SERVER-CONTROL`, if present.
    pub server_control: Option<ServerControl>,
    /// `EXT-X-PART-INF:PART-TARGET`, seconds.
    pub part_target: Option<f64>,
    /// `EXT-X-SKIP:SKIPPED-SEGMENTS` (a delta update; 0 otherwise).
    pub skipped_segments: u64,
    /// Parts listed after the last segment: those of the segment being written, whose msn
    /// is [`MediaPlaylist::next_msn`].
    pub open_parts: Vec<Part>,
    /// `EXT-X-PRELOAD-HINT` of type `PART`, if present.
    pub preload_hint: Option<PreloadHint>,
}

impl MediaPlaylist {
    /// The msn the next complete segment will have (the segment being written, whose parts
    /// are [`MediaPlaylist::open_parts`]).
    pub fn next_msn(&self) -> u64 {
        self.media_sequence
            .saturating_add(self.skipped_segments)
            .saturating_add(self.segments.len() as u64)
    }

    /// The newest part listed: its msn, its index in its segment, and the part.
    pub fn last_part(&self) -> Option<(u64, u64, &Part)> {
        if let Some(p) = self.open_parts.last() {
            return Some((self.next_msn(), self.open_parts.len() as u64 - 1, p));
        }
        let s = self.segments.last()?;
        let p = s.parts.last()?;
        Some((s.msn, s.parts.len() as u64 - 1, p))
    }

    /// The delivery directives of the blocking reload that asks for the next part (or, in a
    /// playlist without parts, the next segment) — what hls.js sends in low-latency mode:
    /// `(msn, Some(part))` or `(msn, None)`.
    pub fn next_directives(&self) -> (u64, Option<u64>) {
        if self.part_target.is_none() {
            return (self.next_msn(), None);
        }
        match self.open_parts.len() {
            0 => (self.next_msn(), Some(0)),
            n => (self.next_msn(), Some(n as u64)),
        }
    }

    /// Wall clock of the end of the newest media listed (its last part, else its last
    /// segment), Unix milliseconds.
    pub fn edge_ms(&self) -> Option<i64> {
        if let Some(p) = self.open_parts.last() {
            return Some(p.pdt_ms? + secs_to_ms(p.duration));
        }
        let s = self.segments.last()?;
        Some(s.pdt_ms? + secs_to_ms(s.duration))
    }
}

/// Seconds to whole milliseconds (saturating).
pub(crate) fn secs_to_ms(s: f64) -> i64 {
    (s * 1000.0).round() as i64
}

/// Parses a media playlist; `Err` names what is wrong.
pub fn parse(text: &str) -> Result<MediaPlaylist, &'static str> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some("#EXTM3U") {
        return Err("no #EXTM3U header");
    }
    let mut pl = MediaPlaylist {
        target_duration: DEFAULT_TARGET_DURATION,
        media_sequence: 0,
        segments: Vec::new(),
        endlist: false,
        server_control: None,
        part_target: None,
        skipped_segments: 0,
        open_parts: Vec::new(),
        preload_hint: None,
    };
    let mut duration: Option<f64> = None;
    let mut pdt: Option<i64> = None;
    let mut map: Option<String> = None;
    let mut next_pdt: Option<i64> = None;
    // Parts seen since the last segment URI: they belong to the next segment.
    let mut parts: Vec<Part> = Vec::new();
    let mut part_count = 0usize;
    let mut hint: Option<String> = None;
    for line in lines {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            pl.target_duration = v
                .parse::<f64>()
                .ok()
                .filter(|d| d.is_finite() && *d > 0.0)
                .ok_or("bad EXT-X-TARGETDURATION")?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            pl.media_sequence = v.parse().map_err(|_| "bad EXT-X-MEDIA-SEQUENCE")?;
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            let d = v.split(',').next().unwrap_or("");
            duration = Some(seconds(d).ok_or("bad EXTINF")?);
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            pdt = Some(
                chrono::DateTime::parse_from_rfc3339(v)
                    .map_err(|_| "bad EXT-X-PROGRAM-DATE-TIME")?
                    .timestamp_millis(),
            );
        } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:") {
            map = Some(
                attribute(v, "URI")
                    .ok_or("EXT-X-MAP without URI")?
                    .to_string(),
            );
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
            if part_count >= MAX_PARTS {
                continue;
            }
            part_count += 1;
            let uri = attribute(v, "URI").ok_or("EXT-X-PART without URI")?;
            let duration = attribute(v, "DURATION")
                .and_then(seconds)
                .ok_or("EXT-X-PART without a valid DURATION")?;
            // Wall clock: the segment's PDT (written before its parts) plus the parts before.
            let start = pdt.or(next_pdt).map(|p| {
                parts
                    .iter()
                    .fold(p, |t, q: &Part| t.saturating_add(secs_to_ms(q.duration)))
            });
            parts.push(Part {
                uri: uri.to_string(),
                duration,
                independent: attribute(v, "INDEPENDENT") == Some("YES"),
                pdt_ms: start,
            });
        } else if let Some(v) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
            if attribute(v, "TYPE") == Some("PART") {
                hint = Some(
                    attribute(v, "URI")
                        .ok_or("EXT-X-PRELOAD-HINT without URI")?
                        .to_string(),
                );
            }
        } else if let Some(v) = line.strip_prefix("#EXT-X-SERVER-CONTROL:") {
            pl.server_control = Some(ServerControl {
                can_block_reload: attribute(v, "CAN-BLOCK-RELOAD") == Some("YES"),
                part_hold_back: attribute(v, "PART-HOLD-BACK").and_then(seconds),
                hold_back: attribute(v, "HOLD-BACK").and_then(seconds),
                can_skip_until: attribute(v, "CAN-SKIP-UNTIL").and_then(seconds),
            });
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART-INF:") {
            pl.part_target = Some(
                attribute(v, "PART-TARGET")
                    .and_then(seconds)
                    .filter(|t| *t > 0.0)
                    .ok_or("bad EXT-X-PART-INF")?,
            );
        } else if let Some(v) = line.strip_prefix("#EXT-X-SKIP:") {
            if !pl.segments.is_empty() {
                return Err("EXT-X-SKIP after a segment");
            }
            pl.skipped_segments = attribute(v, "SKIPPED-SEGMENTS")
                .and_then(|n| n.parse().ok())
                .ok_or("bad EXT-X-SKIP")?;
        } else if line == "#EXT-X-ENDLIST" {
            pl.endlist = true;
        } else if line.starts_with('#') {
            // Other tags (version, discontinuity, independent segments, ...).
        } else {
            if pl.segments.len() >= MAX_SEGMENTS {
                break;
            }
            let d = duration.take().ok_or("segment URI without EXTINF")?;
            let msn = pl.next_msn();
            if msn == u64::MAX {
                return Err("media sequence overflow");
            }
            let seg_pdt = pdt.take().or(next_pdt);
            next_pdt = seg_pdt.map(|p| p.saturating_add(secs_to_ms(d)));
            pl.segments.push(Segment {
                msn,
                uri: line.to_string(),
                duration: d,
                pdt_ms: seg_pdt,
                map_uri: map.clone(),
                parts: std::mem::take(&mut parts),
            });
        }
    }
    pl.open_parts = parts;
    if let Some(uri) = hint {
        pl.preload_hint = Some(PreloadHint {
            uri,
            msn: pl.next_msn(),
            part: pl.open_parts.len() as u64,
        });
    }
    Ok(pl)
}

/// A non-negative, finite number of seconds.
fn seconds(v: &str) -> Option<f64> {
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|d| d.is_finite() && *d >= 0.0 && *d < 1e9)
}

/// The value of attribute `name` in an attribute list (`URI="x",BYTERANGE=...`). Byte by
/// byte: a viewer reads thousands of these a second, and the separators are ASCII.
fn attribute<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    let b = list.as_bytes();
    let find = |from: usize, c: u8| b[from..].iter().position(|&x| x == c).map(|p| from + p);
    let mut i = 0;
    while i < b.len() {
        let eq = find(i, b'=')?;
        let key = list[i..eq].trim();
        let (value, next) = if b.get(eq + 1) == Some(&b'"') {
            let end = find(eq + 2, b'"')?;
            (&list[eq + 2..end], end + 1)
        } else {
            let end = find(eq + 1, b',').unwrap_or(b.len());
            (&list[eq + 1..end], end)
        };
        if key == name {
            return Some(value);
        }
        i = next;
        while b.get(i) == Some(&b',') {
            i += 1;
        }
    }
    None
}

/// Resolves a URI found in the playlist at `base`.
pub fn resolve(base: &str, uri: &str) -> String {
    if uri.contains("://") {
        return uri.to_string();
    }
    let base = base.split(['?', '#']).next().unwrap_or(base);
    if let Some(path) = uri.strip_prefix('/') {
        let after_scheme = base.find("://").map_or(0, |i| i + 3);
        let host_end = base
            .get(after_scheme..)
            .and_then(|r| r.find('/'))
            .map_or(base.len(), |i| i + after_scheme);
        return format!("{}/{path}", &base[..host_end]);
    }
    match base.rfind('/') {
        Some(i) if i >= base.find("://").map_or(0, |j| j + 3) => {
            format!("{}{uri}", &base[..=i])
        }
        _ => format!("{base}/{uri}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes() {
        assert_eq!(
            attribute("URI=\"a,b.mp4\",BYTERANGE=\"1@2\"", "URI"),
            Some("a,b.mp4")
        );
        assert_eq!(attribute("BYTERANGE=\"1@2\",URI=\"x\"", "URI"), Some("x"));
        assert_eq!(attribute("A=1,URI=y", "URI"), Some("y"));
        assert_eq!(attribute("URI=\"unterminated", "URI"), None);
    }

    /// The low-latency playlist our packager renders (its byte-exact test's output).
    const LL: &str = "#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.002,CAN-SKIP-UNTIL=12.000
#EXT-X-PART-INF:PART-TARGET=0.334
#EXT-X-MEDIA-SEQUENCE:7
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI=\"init-1-0.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z
#EXTINF:2.000,
seg-1-0.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:22.000Z
#EXT-X-PART:DURATION=0.333,URI=\"seg-1-1.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.333,URI=\"seg-1-1.1.m4s\"
#EXT-X-PART:DURATION=1.334,URI=\"seg-1-1.2.m4s\"
#EXTINF:2.000,
seg-1-1.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:24.000Z
#EXT-X-PART:DURATION=0.333,URI=\"seg-1-2.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.333,URI=\"seg-1-2.1.m4s\"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg-1-2.2.m4s\"
";
    const T0: i64 = 1_700_000_000_000;

    #[test]
    fn low_latency_tags() {
        let pl = parse(LL).unwrap();
        assert_eq!(
            pl.server_control,
            Some(ServerControl {
                can_block_reload: true,
                part_hold_back: Some(1.002),
                hold_back: None,
                can_skip_until: Some(12.0),
            })
        );
        assert_eq!(pl.part_target, Some(0.334));
        assert_eq!(pl.segments.len(), 2);
        assert_eq!(pl.segments[0].msn, 7);
        assert!(pl.segments[0].parts.is_empty());
        let parts = &pl.segments[1].parts;
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].uri, "seg-1-1.0.m4s");
        assert!(parts[0].independent && !parts[1].independent);
        // Part wall clocks: the segment's PDT plus the parts before.
        let t = T0 + 2000;
        assert_eq!(
            parts.iter().map(|p| p.pdt_ms).collect::<Vec<_>>(),
            vec![Some(t), Some(t + 333), Some(t + 666)]
        );
        // The segment being written: msn 9, two parts, the third hinted.
        assert_eq!(pl.next_msn(), 9);
        assert_eq!(pl.open_parts.len(), 2);
        assert_eq!(pl.open_parts[1].pdt_ms, Some(T0 + 4333));
        assert_eq!(
            pl.preload_hint,
            Some(PreloadHint {
                uri: "seg-1-2.2.m4s".into(),
                msn: 9,
                part: 2
            })
        );
        assert_eq!(pl.last_part().map(|(m, i, _)| (m, i)), Some((9, 1)));
        assert_eq!(pl.next_directives(), (9, Some(2)));
        assert_eq!(pl.edge_ms(), Some(T0 + 4666));
    }

    #[test]
    fn next_directives_after_a_complete_segment_and_without_parts() {
        // Cut right after a segment: the next request is part 0 of the next msn.
        let cut = LL
            .split("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:24")
            .next()
            .unwrap();
        let pl = parse(cut).unwrap();
        assert!(pl.open_parts.is_empty() && pl.preload_hint.is_none());
        assert_eq!(pl.last_part().map(|(m, i, _)| (m, i)), Some((8, 2)));
        assert_eq!(pl.next_directives(), (9, Some(0)));
        // A regular playlist: blocking by msn only, no parts.
        let plain = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:3\n#EXTINF:2,\na.ts\n";
        let pl = parse(plain).unwrap();
        assert_eq!(pl.next_directives(), (4, None));
        assert_eq!(pl.last_part(), None);
        assert_eq!(pl.server_control, None);
    }

    #[test]
    fn delta_update_numbers_after_the_skipped_segments() {
        let delta = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-SKIP:SKIPPED-SEGMENTS=3\n#EXT-X-MAP:URI=\"i.mp4\"\n#EXTINF:2,\ns13.m4s\n#EXTINF:2,\ns14.m4s\n";
        let pl = parse(delta).unwrap();
        assert_eq!(pl.skipped_segments, 3);
        assert_eq!(
            pl.segments.iter().map(|s| s.msn).collect::<Vec<_>>(),
            vec![13, 14]
        );
        assert_eq!(pl.next_msn(), 15);
        assert!(parse("#EXTM3U\n#EXTINF:2,\na\n#EXT-X-SKIP:SKIPPED-SEGMENTS=1\n").is_err());
        assert!(parse("#EXTM3U\n#EXT-X-SKIP:SKIPPED-SEGMENTS=x\n").is_err());
    }

    #[test]
    fn malformed_low_latency_tags_are_errors_not_panics() {
        for bad in [
            "#EXTM3U\n#EXT-X-PART:URI=\"a\"\n",
            "#EXTM3U\n#EXT-X-PART:DURATION=1\n",
            "#EXTM3U\n#EXT-X-PART:DURATION=-1,URI=\"a\"\n",
            "#EXTM3U\n#EXT-X-PART-INF:PART-TARGET=0\n",
            "#EXTM3U\n#EXT-X-PRELOAD-HINT:TYPE=PART\n",
            "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:18446744073709551615\n#EXTINF:1,\na\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        // A map hint is not a part hint; unknown server-control attributes are ignored.
        let pl =
            parse("#EXTM3U\n#EXT-X-SERVER-CONTROL:X=1\n#EXT-X-PRELOAD-HINT:TYPE=MAP,URI=\"m\"\n")
                .unwrap();
        assert_eq!(pl.preload_hint, None);
        assert_eq!(pl.server_control, Some(ServerControl::default()));
    }
}
