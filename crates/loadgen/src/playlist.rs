//! A lenient HLS media-playlist reader: just what a viewer needs to play live (target
//! duration, media sequence, segments with their duration, PROGRAM-DATE-TIME and map,
//! ENDLIST). Bounded by [`MAX_SEGMENTS`]; unknown tags are skipped.

/// Most segments read from one playlist; the rest is ignored (a live window is ~10).
pub const MAX_SEGMENTS: usize = 100_000;
/// Target duration assumed when the playlist has none (seconds).
const DEFAULT_TARGET_DURATION: f64 = 2.0;

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
}

/// A media playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    /// `EXT-X-TARGETDURATION`, seconds.
    pub target_duration: f64,
    /// `EXT-X-MEDIA-SEQUENCE` (0 when absent).
    pub media_sequence: u64,
    /// Segments in order.
    pub segments: Vec<Segment>,
    /// `EXT-X-ENDLIST` present.
    pub endlist: bool,
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
    };
    let mut duration: Option<f64> = None;
    let mut pdt: Option<i64> = None;
    let mut map: Option<String> = None;
    let mut next_pdt: Option<i64> = None;
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
            duration = Some(
                d.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|d| d.is_finite() && *d >= 0.0)
                    .ok_or("bad EXTINF")?,
            );
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
        } else if line == "#EXT-X-ENDLIST" {
            pl.endlist = true;
        } else if line.starts_with('#') {
            // Other tags (version, discontinuity, independent segments, ...).
        } else {
            if pl.segments.len() >= MAX_SEGMENTS {
                break;
            }
            let d = duration.take().ok_or("segment URI without EXTINF")?;
            let msn = pl
                .media_sequence
                .checked_add(pl.segments.len() as u64)
                .ok_or("media sequence overflow")?;
            let seg_pdt = pdt.take().or(next_pdt);
            next_pdt = seg_pdt.map(|p| p.saturating_add((d * 1000.0).round() as i64));
            pl.segments.push(Segment {
                msn,
                uri: line.to_string(),
                duration: d,
                pdt_ms: seg_pdt,
                map_uri: map.clone(),
            });
        }
    }
    Ok(pl)
}

/// The value of attribute `name` in an attribute list (`URI="x",BYTERANGE=...`).
fn attribute<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = list;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], q.get(end + 1..).unwrap_or(""))
        } else {
            match after.find(',') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            }
        };
        if key.trim() == name {
            return Some(value);
        }
        rest = tail.trim_start_matches(',');
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
}
