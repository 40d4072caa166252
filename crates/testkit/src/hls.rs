//! The RFC 8216 media-playlist checker: a hand parser cross-checked with `m3u8-rs`, the
//! static rules on one playlist, the progress rules between two fetches of it, fetching every
//! listed map and segment, and polling a playlist until a condition holds.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use crate::http::{resolve, try_get};

/// One media segment as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Its media sequence number.
    pub msn: u64,
    /// URI as written.
    pub uri: String,
    /// `EXTINF` duration in seconds.
    pub duration: f64,
    /// Preceded by `EXT-X-DISCONTINUITY`.
    pub discontinuity: bool,
    /// The `EXT-X-MAP` URI in force for it.
    pub map_uri: Option<String>,
    /// Its `EXT-X-PROGRAM-DATE-TIME`, if one precedes it directly.
    pub program_date_time: Option<String>,
}

/// A parsed media playlist.
#[derive(Debug, Clone)]
pub struct MediaPlaylist {
    /// The URL it was fetched from (for resolving URIs).
    pub url: String,
    /// The text as served.
    pub text: String,
    /// `EXT-X-VERSION`.
    pub version: Option<u64>,
    /// `EXT-X-TARGETDURATION`.
    pub target_duration: u64,
    /// `EXT-X-MEDIA-SEQUENCE`.
    pub media_sequence: u64,
    /// `EXT-X-DISCONTINUITY-SEQUENCE` (0 when absent).
    pub discontinuity_sequence: u64,
    /// The segments, in order.
    pub segments: Vec<Segment>,
    /// `EXT-X-ENDLIST` present.
    pub endlist: bool,
}

impl MediaPlaylist {
    /// The sequence number one past the last segment.
    pub fn next_msn(&self) -> u64 {
        self.media_sequence + self.segments.len() as u64
    }

    /// Sum of the `EXTINF` durations.
    pub fn total_duration(&self) -> f64 {
        self.segments.iter().map(|s| s.duration).sum()
    }

    /// Number of `EXT-X-DISCONTINUITY` tags.
    pub fn discontinuities(&self) -> usize {
        self.segments.iter().filter(|s| s.discontinuity).count()
    }

    /// Absolute URL of a segment.
    pub fn segment_url(&self, seg: &Segment) -> String {
        resolve(&self.url, &seg.uri)
    }

    /// Whether a segment is fMP4 (has an `EXT-X-MAP`).
    pub fn is_fmp4(&self) -> bool {
        self.segments.iter().any(|s| s.map_uri.is_some())
    }
}

fn parse_u64(tag: &str, v: &str) -> Result<u64, String> {
    v.trim()
        .parse::<u64>()
        .map_err(|_| format!("{tag}: `{v}` is not a decimal-integer"))
}

fn attr(list: &str, name: &str) -> Option<String> {
    // Attribute lists: NAME=VALUE,NAME="quoted, with commas"
    let mut rest = list;
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim();
        let after = &rest[eq + 1..];
        let (value, remain) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (q[..end].to_string(), &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        if key == name {
            return Some(value);
        }
        rest = remain.trim_start_matches(',');
    }
    None
}

/// Parses a media playlist by hand, enforcing the RFC 8216 rules that a parser can see.
pub fn parse_media_playlist(url: &str, text: &str) -> Result<MediaPlaylist, String> {
    let mut lines = text.lines();
    if lines.next().map(|l| l.trim_end()) != Some("#EXTM3U") {
        return Err("first line is not #EXTM3U".into());
    }
    let mut version = None;
    let mut target = None;
    let mut msn = None;
    let mut dsn = None;
    let mut segments = Vec::new();
    let mut endlist = false;
    let mut pending_inf: Option<f64> = None;
    let mut pending_disc = false;
    let mut pending_pdt = None;
    let mut map: Option<String> = None;
    for (i, raw) in text.lines().enumerate().skip(1) {
        let line = raw.trim_end();
        let lineno = i + 1;
        if line.is_empty() {
            continue;
        }
        if endlist && !line.starts_with('#') {
            return Err(format!("line {lineno}: media segment after EXT-X-ENDLIST"));
        }
        if let Some(v) = line.strip_prefix("#EXT-X-VERSION:") {
            if version.replace(parse_u64("EXT-X-VERSION", v)?).is_some() {
                return Err("EXT-X-VERSION appears twice".into());
            }
        } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            if target
                .replace(parse_u64("EXT-X-TARGETDURATION", v)?)
                .is_some()
            {
                return Err("EXT-X-TARGETDURATION appears twice".into());
            }
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            if !segments.is_empty() || pending_inf.is_some() {
                return Err("EXT-X-MEDIA-SEQUENCE after the first segment".into());
            }
            if msn.replace(parse_u64("EXT-X-MEDIA-SEQUENCE", v)?).is_some() {
                return Err("EXT-X-MEDIA-SEQUENCE appears twice".into());
            }
        } else if let Some(v) = line.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
            if !segments.is_empty() || pending_inf.is_some() {
                return Err("EXT-X-DISCONTINUITY-SEQUENCE after the first segment".into());
            }
            if dsn
                .replace(parse_u64("EXT-X-DISCONTINUITY-SEQUENCE", v)?)
                .is_some()
            {
                return Err("EXT-X-DISCONTINUITY-SEQUENCE appears twice".into());
            }
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            if pending_inf.is_some() {
                return Err(format!("line {lineno}: two EXTINF without a URI between"));
            }
            let d = v.split(',').next().unwrap_or("");
            let d: f64 = d
                .trim()
                .parse()
                .map_err(|_| format!("line {lineno}: EXTINF duration `{d}`"))?;
            if d.is_nan() || d <= 0.0 {
                return Err(format!(
                    "line {lineno}: EXTINF duration {d} is not positive"
                ));
            }
            pending_inf = Some(d);
        } else if line == "#EXT-X-DISCONTINUITY" {
            pending_disc = true;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            parse_pdt(v).map_err(|e| format!("line {lineno}: {e}"))?;
            pending_pdt = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:") {
            let uri = attr(v, "URI").ok_or(format!("line {lineno}: EXT-X-MAP without URI"))?;
            map = Some(uri);
        } else if line == "#EXT-X-ENDLIST" {
            endlist = true;
        } else if line.starts_with('#') {
            // Other tags (INDEPENDENT-SEGMENTS, LL-HLS tags, comments) are not checked here.
        } else {
            let Some(d) = pending_inf.take() else {
                return Err(format!("line {lineno}: URI `{line}` without EXTINF"));
            };
            segments.push(Segment {
                msn: 0,
                uri: line.to_string(),
                duration: d,
                discontinuity: std::mem::take(&mut pending_disc),
                map_uri: map.clone(),
                program_date_time: pending_pdt.take(),
            });
        }
    }
    if pending_inf.is_some() {
        return Err("EXTINF at the end without a URI".into());
    }
    let target_duration = target.ok_or("EXT-X-TARGETDURATION missing")?;
    let media_sequence = msn.ok_or("EXT-X-MEDIA-SEQUENCE missing")?;
    for (i, s) in segments.iter_mut().enumerate() {
        s.msn = media_sequence + i as u64;
    }
    Ok(MediaPlaylist {
        url: url.to_string(),
        text: text.to_string(),
        version,
        target_duration,
        media_sequence,
        discontinuity_sequence: dsn.unwrap_or(0),
        segments,
        endlist,
    })
}

/// Parses an `EXT-X-PROGRAM-DATE-TIME` value (ISO 8601 with a time zone).
pub fn parse_pdt(v: &str) -> Result<chrono::DateTime<chrono::FixedOffset>, String> {
    chrono::DateTime::parse_from_rfc3339(v)
        .or_else(|_| chrono::DateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .map_err(|e| format!("EXT-X-PROGRAM-DATE-TIME `{v}`: {e}"))
}

/// What a check expects of a playlist.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expect {
    /// `Some(true)`: `EXT-X-ENDLIST` must be there; `Some(false)`: must not.
    pub endlist: Option<bool>,
    /// `Some(true)`: fMP4 (every segment under an `EXT-X-MAP`); `Some(false)`: MPEG-TS.
    pub fmp4: Option<bool>,
    /// Minimum number of segments.
    pub min_segments: usize,
}

/// What a live fMP4 media playlist must look like: no `EXT-X-ENDLIST`, at least one
/// segment.
pub fn live_fmp4() -> Expect {
    live_playlist(true)
}

/// What a live media playlist must look like: no `EXT-X-ENDLIST`, at least one segment,
/// fMP4 (`fmp4`) or MPEG-TS segments.
pub fn live_playlist(fmp4: bool) -> Expect {
    Expect {
        endlist: Some(false),
        fmp4: Some(fmp4),
        min_segments: 1,
    }
}

/// The static checks on one playlist text: hand parse, `m3u8-rs` parse, and the RFC rules
/// on durations, version, maps and the expectations.
pub fn check_playlist_text(
    url: &str,
    text: &str,
    expect: &Expect,
) -> Result<MediaPlaylist, String> {
    let pl = parse_media_playlist(url, text)?;
    let lib = m3u8_rs::parse_media_playlist_res(text.as_bytes())
        .map_err(|e| format!("m3u8-rs rejects the playlist: {e:?}"))?;
    if lib.media_sequence != pl.media_sequence
        || lib.target_duration != pl.target_duration
        || lib.segments.len() != pl.segments.len()
        || lib.end_list != pl.endlist
        || lib.discontinuity_sequence != pl.discontinuity_sequence
    {
        return Err(format!(
            "m3u8-rs disagrees: msn {} td {} segments {} endlist {} dsn {}",
            lib.media_sequence,
            lib.target_duration,
            lib.segments.len(),
            lib.end_list,
            lib.discontinuity_sequence
        ));
    }
    for (a, b) in lib.segments.iter().zip(&pl.segments) {
        if a.uri != b.uri || a.discontinuity != b.discontinuity {
            return Err(format!("m3u8-rs disagrees on segment {}", b.uri));
        }
    }
    for s in &pl.segments {
        let rounded = s.duration.round() as u64;
        if rounded > pl.target_duration {
            return Err(format!(
                "segment {} (msn {}) EXTINF {} rounds to {rounded} > TARGETDURATION {}",
                s.uri, s.msn, s.duration, pl.target_duration
            ));
        }
    }
    if pl.is_fmp4() && pl.version.unwrap_or(1) < 6 {
        return Err(format!(
            "EXT-X-MAP needs EXT-X-VERSION >= 6, have {:?}",
            pl.version
        ));
    }
    match expect.fmp4 {
        Some(true) => {
            if let Some(s) = pl.segments.iter().find(|s| s.map_uri.is_none()) {
                return Err(format!("fMP4 segment {} without EXT-X-MAP", s.uri));
            }
        }
        Some(false) if pl.is_fmp4() => {
            return Err("EXT-X-MAP in an MPEG-TS playlist".into());
        }
        _ => {}
    }
    match expect.endlist {
        Some(true) if !pl.endlist => return Err("EXT-X-ENDLIST expected, absent".into()),
        Some(false) if pl.endlist => return Err("EXT-X-ENDLIST present, not expected".into()),
        _ => {}
    }
    if pl.segments.len() < expect.min_segments {
        return Err(format!(
            "{} segments, expected at least {}",
            pl.segments.len(),
            expect.min_segments
        ));
    }
    Ok(pl)
}

/// The rules between two successive fetches of the same playlist.
pub fn check_progress(prev: &MediaPlaylist, next: &MediaPlaylist) -> Result<(), String> {
    if next.media_sequence < prev.media_sequence {
        return Err(format!(
            "EXT-X-MEDIA-SEQUENCE went back: {} -> {}",
            prev.media_sequence, next.media_sequence
        ));
    }
    if next.next_msn() < prev.next_msn() {
        return Err(format!(
            "the playlist lost segments at its end: last msn {} -> {}",
            prev.next_msn() as i64 - 1,
            next.next_msn() as i64 - 1
        ));
    }
    if next.discontinuity_sequence < prev.discontinuity_sequence {
        return Err("EXT-X-DISCONTINUITY-SEQUENCE went back".into());
    }
    // Segments in both must be the same segment.
    for s in &next.segments {
        if let Some(p) = prev.segments.iter().find(|p| p.msn == s.msn) {
            if p.uri != s.uri || p.discontinuity != s.discontinuity {
                return Err(format!("msn {} changed: {:?} -> {:?}", s.msn, p.uri, s.uri));
            }
        }
    }
    // Removing a segment that carried EXT-X-DISCONTINUITY must bump the sequence.
    let removed = next.media_sequence - prev.media_sequence;
    if removed as usize <= prev.segments.len() {
        let dropped = prev.segments[..removed as usize]
            .iter()
            .filter(|s| s.discontinuity)
            .count() as u64;
        if next.discontinuity_sequence != prev.discontinuity_sequence + dropped {
            return Err(format!(
                "EXT-X-DISCONTINUITY-SEQUENCE {} -> {} but {dropped} discontinuities left the window",
                prev.discontinuity_sequence, next.discontinuity_sequence
            ));
        }
    }
    if prev.endlist && (!next.endlist || next.next_msn() != prev.next_msn()) {
        return Err("an ended playlist changed".into());
    }
    Ok(())
}

/// Media container of a body, by its first bytes.
pub fn sniff(body: &[u8]) -> &'static str {
    if body.first() == Some(&0x47) && (body.len() < 189 || body.get(188) == Some(&0x47)) {
        "ts"
    } else if body.len() >= 8
        && matches!(&body[4..8], b"ftyp" | b"styp" | b"moof" | b"sidx" | b"moov")
    {
        "mp4"
    } else {
        "unknown"
    }
}

fn content_type_ok(container: &str, ctype: &str) -> bool {
    let ct = ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match container {
        "ts" => ct == "video/mp2t",
        "mp4" => matches!(
            ct.as_str(),
            "video/mp4"
                | "audio/mp4"
                | "video/iso.segment"
                | "audio/iso.segment"
                | "application/mp4"
        ),
        _ => false,
    }
}

/// Fetches `url`, checks status and Content-Type of a playlist, and its text.
pub fn fetch_playlist(url: &str, expect: &Expect) -> Result<MediaPlaylist, String> {
    let r = try_get(url)?;
    if r.status != 200 {
        return Err(format!(
            "GET {url}: status {} body {:?}",
            r.status,
            r.text()
        ));
    }
    let ct = r
        .content_type
        .clone()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let ct = ct.split(';').next().unwrap_or("").trim().to_string();
    if !matches!(
        ct.as_str(),
        "application/vnd.apple.mpegurl" | "audio/mpegurl" | "application/x-mpegurl"
    ) {
        return Err(format!("playlist Content-Type {ct:?}"));
    }
    check_playlist_text(url, &r.text(), expect)
        .map_err(|e| format!("{e}\n--- playlist {url}:\n{}", r.text()))
}

/// Fetches every map and segment of `pl`: 200, non-empty, and a Content-Type that fits
/// the bytes. Returns the bodies by absolute URL.
pub fn fetch_all_media(pl: &MediaPlaylist) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    let mut urls = Vec::new();
    for s in &pl.segments {
        if let Some(m) = &s.map_uri {
            let u = resolve(&pl.url, m);
            if !urls.contains(&u) {
                urls.push(u);
            }
        }
        urls.push(pl.segment_url(s));
    }
    for u in urls {
        let r = try_get(&u)?;
        if r.status != 200 {
            return Err(format!("GET {u}: status {}", r.status));
        }
        if r.body.is_empty() {
            return Err(format!("GET {u}: empty body"));
        }
        let container = sniff(&r.body);
        let ct = r.content_type.clone().unwrap_or_default();
        if !content_type_ok(container, &ct) {
            return Err(format!(
                "GET {u}: body looks like {container}, Content-Type is {ct:?}"
            ));
        }
        out.insert(u, r.body);
    }
    Ok(out)
}

/// Follows one playlist across fetches, applying [`check_progress`] each time.
#[derive(Default)]
pub struct Watch {
    /// The latest playlist seen.
    pub last: Option<MediaPlaylist>,
    /// Every distinct segment URL seen, by msn.
    pub seen: BTreeMap<u64, String>,
}

impl Watch {
    /// Fetches and checks the playlist (static rules, progress since the last fetch, and
    /// that every listed segment is fetchable). Panics with the reason.
    pub fn observe(&mut self, url: &str, expect: &Expect) -> MediaPlaylist {
        let pl = fetch_playlist(url, expect).unwrap_or_else(|e| panic!("{e}"));
        self.accept(pl)
    }

    /// Applies the progress and fetchability checks to an already fetched playlist.
    pub fn accept(&mut self, pl: MediaPlaylist) -> MediaPlaylist {
        if let Some(prev) = &self.last {
            check_progress(prev, &pl).unwrap_or_else(|e| {
                panic!("{e}\n--- before:\n{}\n--- after:\n{}", prev.text, pl.text)
            });
        }
        fetch_all_media(&pl).unwrap_or_else(|e| panic!("{e}\n--- playlist:\n{}", pl.text));
        for s in &pl.segments {
            self.seen.insert(s.msn, pl.segment_url(s));
        }
        self.last = Some(pl.clone());
        pl
    }
}

/// Polls a playlist until `pred` holds (fetch errors and 404 count as "not yet").
pub fn wait_playlist(
    url: &str,
    timeout: Duration,
    what: &str,
    mut pred: impl FnMut(&MediaPlaylist) -> bool,
) -> MediaPlaylist {
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        match try_get(url) {
            Ok(r) if r.status == 200 => match parse_media_playlist(url, &r.text()) {
                Ok(pl) if pred(&pl) => return pl,
                Ok(_) => last = r.text(),
                Err(e) => last = format!("unparsable: {e}\n{}", r.text()),
            },
            Ok(r) => last = format!("status {}: {}", r.status, r.text()),
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what} at {url}; last:\n{last}");
        }
        thread::sleep(Duration::from_millis(300));
    }
}

/// Waits until the playlist at `url` goes on after an `EXT-X-DISCONTINUITY`: its next
/// media sequence number at least `min_new` past `before`, and at least two segments after
/// the last discontinuity.
pub fn wait_continued_after_discontinuity(
    url: &str,
    before: u64,
    min_new: u64,
    timeout: Duration,
    what: &str,
) -> MediaPlaylist {
    wait_playlist(url, timeout, what, |pl| {
        pl.discontinuities() >= 1
            && pl.next_msn() >= before + min_new
            && pl
                .text
                .rsplit("#EXT-X-DISCONTINUITY")
                .next()
                .is_some_and(|tail| tail.matches("#EXTINF").count() >= 2)
    })
}
