//! A lenient reader of live DASH MPDs: just what a viewer needs to play ours
//! (crates/packager/src/dash.rs): `MPD@type`, `availabilityStartTime`,
//! `minimumUpdatePeriod`, `suggestedPresentationDelay`, `ServiceDescription/Latency@target`,
//! `BaseURL`, and per `Period` its `start`, the first `SegmentTemplate` (`$Number$` or
//! `$Time$`, `timescale`, `presentationTimeOffset`, `startNumber`, `initialization`,
//! `availabilityTimeOffset` for low-latency DASH) with its `SegmentTimeline`, expanded into
//! segments with their wall-clock times. Bounded by [`MAX_SEGMENTS`] and [`MAX_PERIODS`].
//! No I/O, no clock.

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

/// Most segments expanded from one MPD (all periods); the rest is ignored.
pub const MAX_SEGMENTS: usize = 100_000;
/// Most periods read from one MPD; the rest is ignored.
pub const MAX_PERIODS: usize = 1_000;

/// A segment of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct MpdSegment {
    /// `$Number$`.
    pub number: u64,
    /// `$Time$` (`S@t`), in the template's timescale.
    pub time: i64,
    /// URI from the `media` template (relative to the base URL).
    pub uri: String,
    /// Wall clock of its start, Unix milliseconds (`availabilityStartTime + Period@start +
    /// (t - presentationTimeOffset) / timescale`).
    pub start_ms: i64,
    /// Its duration, milliseconds.
    pub duration_ms: i64,
}

impl MpdSegment {
    /// Wall clock of its end, Unix milliseconds: when a regular DASH client may fetch it.
    pub fn end_ms(&self) -> i64 {
        self.start_ms.saturating_add(self.duration_ms)
    }
}

/// One period (its first adaptation set's first template).
#[derive(Debug, Clone, PartialEq)]
pub struct MpdPeriod {
    /// `Period@id`.
    pub id: Option<String>,
    /// `Period@start`, ms after `availabilityStartTime`.
    pub start_ms: i64,
    /// The init segment URI (`initialization`), if any.
    pub init: Option<String>,
    /// `availabilityTimeOffset`, seconds (`INF` is infinity): a low-latency MPD lets a
    /// segment be fetched this much before its end (chunked transfer of the segment being
    /// written).
    pub availability_time_offset: Option<f64>,
    /// The `media` template, its timescale and start number, to name a segment not yet
    /// listed.
    pub media: String,
    /// `SegmentTemplate@timescale`.
    pub timescale: u64,
    /// `Representation@id`, for `$RepresentationID$`.
    pub representation: String,
    /// `Representation@bandwidth`, for `$Bandwidth$`.
    pub bandwidth: u64,
    /// `presentationTimeOffset` of the template.
    pub pto: i64,
    /// Its segments, in order.
    pub segments: Vec<MpdSegment>,
}

impl MpdPeriod {
    /// The URI of segment `number` starting at `time` (template expansion).
    pub fn media_uri(&self, number: u64, time: i64) -> String {
        expand(
            &self.media,
            &self.representation,
            self.bandwidth,
            number,
            time,
        )
    }

    /// Wall clock of `time` (template ticks), Unix ms, given the MPD's availability start.
    fn wall_ms(&self, ast_ms: i64, time: i64) -> i64 {
        let ticks = i128::from(time) - i128::from(self.pto);
        let ms = ticks * 1000 / i128::from(self.timescale.max(1));
        ast_ms
            .saturating_add(self.start_ms)
            .saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
    }
}

/// A live (or ended) MPD.
#[derive(Debug, Clone, PartialEq)]
pub struct Mpd {
    /// `type="dynamic"`.
    pub dynamic: bool,
    /// `availabilityStartTime`, Unix milliseconds (0 when absent).
    pub availability_start_ms: i64,
    /// `minimumUpdatePeriod`, ms.
    pub minimum_update_period_ms: Option<i64>,
    /// `suggestedPresentationDelay`, ms.
    pub suggested_presentation_delay_ms: Option<i64>,
    /// `ServiceDescription/Latency@target`, ms (low-latency DASH).
    pub target_latency_ms: Option<i64>,
    /// The MPD-level `BaseURL`, if any.
    pub base_url: Option<String>,
    /// Periods in order.
    pub periods: Vec<MpdPeriod>,
}

impl Mpd {
    /// Whether it is low-latency DASH: a period with an `availabilityTimeOffset`.
    pub fn low_latency(&self) -> bool {
        self.periods
            .iter()
            .any(|p| p.availability_time_offset.is_some_and(|o| o > 0.0))
    }
}

/// Where in the document the reader is, for the elements whose meaning depends on it.
#[derive(Default)]
struct Cursor {
    in_period: bool,
    in_template: bool,
    in_timeline: bool,
    /// The current period has its template already (later ones are other representations).
    template_done: bool,
    /// Reading the text of an MPD-level `BaseURL`.
    in_base_url: bool,
    /// Where the next `S` without `t` starts.
    next_t: i64,
    start_number: u64,
    number: u64,
}

/// Parses an MPD; `Err` names what is wrong.
pub fn parse(text: &str) -> Result<Mpd, &'static str> {
    let mut reader = Reader::from_str(text);
    let mut mpd = Mpd {
        dynamic: false,
        availability_start_ms: 0,
        minimum_update_period_ms: None,
        suggested_presentation_delay_ms: None,
        target_latency_ms: None,
        base_url: None,
        periods: Vec::new(),
    };
    let mut seen_mpd = false;
    let mut c = Cursor::default();
    let mut segments = 0usize;
    loop {
        let event = reader.read_event().map_err(|_| "malformed XML")?;
        let (e, empty) = match &event {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::Text(t) if c.in_base_url => {
                let s = t.decode().map_err(|_| "bad BaseURL")?;
                mpd.base_url
                    .get_or_insert_with(String::new)
                    .push_str(s.trim());
                continue;
            }
            Event::End(e) => {
                match e.local_name().as_ref() {
                    b"Period" => c.in_period = false,
                    b"SegmentTemplate" => {
                        if c.in_template {
                            c.template_done = true;
                        }
                        c.in_template = false;
                    }
                    b"SegmentTimeline" => c.in_timeline = false,
                    b"BaseURL" => c.in_base_url = false,
                    _ => {}
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        match e.local_name().as_ref() {
            b"MPD" => {
                seen_mpd = true;
                mpd.dynamic = attr(e, b"type")?.as_deref() == Some("dynamic");
                if let Some(v) = attr(e, b"availabilityStartTime")? {
                    mpd.availability_start_ms = chrono::DateTime::parse_from_rfc3339(&v)
                        .map_err(|_| "bad availabilityStartTime")?
                        .timestamp_millis();
                }
                mpd.minimum_update_period_ms = duration_attr(e, b"minimumUpdatePeriod")?;
                mpd.suggested_presentation_delay_ms =
                    duration_attr(e, b"suggestedPresentationDelay")?;
            }
            b"BaseURL" if !c.in_period && !empty => c.in_base_url = true,
            b"Latency" => {
                if let Some(v) = attr(e, b"target")? {
                    mpd.target_latency_ms = Some(v.parse().map_err(|_| "bad Latency@target")?);
                }
            }
            b"Period" => {
                if mpd.periods.len() >= MAX_PERIODS {
                    break;
                }
                let start_ms = duration_attr(e, b"start")?.unwrap_or(0);
                mpd.periods.push(MpdPeriod {
                    id: attr(e, b"id")?,
                    start_ms,
                    init: None,
                    availability_time_offset: None,
                    media: String::new(),
                    timescale: 1,
                    representation: String::new(),
                    bandwidth: 0,
                    pto: 0,
                    segments: Vec::new(),
                });
                c = Cursor {
                    in_period: !empty,
                    ..Cursor::default()
                };
            }
            b"Representation" if c.in_period && !c.template_done => {
                if let Some(p) = mpd.periods.last_mut() {
                    if p.representation.is_empty() {
                        p.representation = attr(e, b"id")?.unwrap_or_default();
                        p.bandwidth = attr(e, b"bandwidth")?
                            .and_then(|b| b.parse().ok())
                            .unwrap_or(0);
                    }
                }
            }
            b"SegmentTemplate" if c.in_period && !c.template_done => {
                let Some(p) = mpd.periods.last_mut() else {
                    continue;
                };
                p.timescale = match attr(e, b"timescale")? {
                    Some(v) => v
                        .parse()
                        .ok()
                        .filter(|t| *t > 0)
                        .ok_or("bad SegmentTemplate@timescale")?,
                    None => 1,
                };
                p.pto = int_attr(e, b"presentationTimeOffset")?.unwrap_or(0);
                c.start_number = int_attr(e, b"startNumber")?.unwrap_or(1);
                c.number = c.start_number;
                p.init = attr(e, b"initialization")?;
                p.media = attr(e, b"media")?.ok_or("SegmentTemplate without media")?;
                p.availability_time_offset = match attr(e, b"availabilityTimeOffset")? {
                    Some(v) if v == "INF" => Some(f64::INFINITY),
                    Some(v) => Some(
                        v.parse::<f64>()
                            .ok()
                            .filter(|o| o.is_finite() && *o >= 0.0)
                            .ok_or("bad availabilityTimeOffset")?,
                    ),
                    None => None,
                };
                if empty {
                    c.template_done = true;
                } else {
                    c.in_template = true;
                }
            }
            b"SegmentTimeline" if c.in_template => c.in_timeline = !empty,
            b"S" if c.in_timeline => {
                let Some(p) = mpd.periods.last_mut() else {
                    continue;
                };
                let d: i64 = int_attr(e, b"d")?.ok_or("S without d")?;
                if d <= 0 {
                    return Err("S@d must be positive");
                }
                let mut t: i64 = int_attr(e, b"t")?.unwrap_or(c.next_t);
                // r = -1 (repeat to the next S or the period end) is not used by our MPD:
                // read as no repeat.
                let r: i64 = int_attr(e, b"r")?.unwrap_or(0).max(0);
                for _ in 0..=r {
                    if segments >= MAX_SEGMENTS {
                        break;
                    }
                    segments += 1;
                    let start_ms = p.wall_ms(mpd.availability_start_ms, t);
                    let end_ms = p.wall_ms(mpd.availability_start_ms, t.saturating_add(d));
                    p.segments.push(MpdSegment {
                        number: c.number,
                        time: t,
                        uri: p.media_uri(c.number, t),
                        start_ms,
                        duration_ms: end_ms.saturating_sub(start_ms),
                    });
                    c.number = c.number.saturating_add(1);
                    t = t.saturating_add(d);
                }
                c.next_t = t;
            }
            _ => {}
        }
    }
    if !seen_mpd {
        return Err("no MPD element");
    }
    Ok(mpd)
}

/// The value of attribute `name` of `e`, unescaped.
fn attr(e: &BytesStart<'_>, name: &[u8]) -> Result<Option<String>, &'static str> {
    for a in e.attributes() {
        let a = a.map_err(|_| "malformed attribute")?;
        if a.key.local_name().as_ref() == name {
            let v = a
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|_| "malformed attribute value")?;
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

fn int_attr<T: std::str::FromStr>(
    e: &BytesStart<'_>,
    name: &[u8],
) -> Result<Option<T>, &'static str> {
    match attr(e, name)? {
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| "bad integer attribute"),
        None => Ok(None),
    }
}

fn duration_attr(e: &BytesStart<'_>, name: &[u8]) -> Result<Option<i64>, &'static str> {
    match attr(e, name)? {
        Some(v) => parse_duration_ms(&v).map(Some).ok_or("bad duration"),
        None => Ok(None),
    }
}

/// An `xs:duration` without years or months (`PT2.000S`, `P1DT1H2M3.5S`), in ms.
pub fn parse_duration_ms(v: &str) -> Option<i64> {
    let rest = v.trim().strip_prefix('P')?;
    let (days, time) = match rest.split_once('T') {
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    if (days.is_empty() && time.is_empty()) || (rest.contains('T') && time.is_empty()) {
        return None;
    }
    let mut ms = 0f64;
    if !days.is_empty() {
        ms += days.strip_suffix('D')?.parse::<f64>().ok()? * 86_400_000.0;
    }
    let mut number = String::new();
    for ch in time.chars() {
        let unit = match ch {
            'H' => 3_600_000.0,
            'M' => 60_000.0,
            'S' => 1000.0,
            c if c.is_ascii_digit() || c == '.' => {
                number.push(c);
                continue;
            }
            _ => return None,
        };
        ms += number.parse::<f64>().ok()? * unit;
        number.clear();
    }
    if !number.is_empty() || !ms.is_finite() || !(0.0..1e15).contains(&ms) {
        return None;
    }
    Some(ms.round() as i64)
}

/// Expands a `SegmentTemplate@media` (`$Number$`, `$Time$`, `$RepresentationID$`,
/// `$Bandwidth$`, `$$`, with an optional `%0Nd` width); an unknown identifier stays as is.
pub fn expand(
    template: &str,
    representation: &str,
    bandwidth: u64,
    number: u64,
    time: i64,
) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(j) = after.find('$') else {
            out.push_str(&rest[i..]);
            return out;
        };
        let ident = &after[..j];
        let (name, width) = match ident.split_once('%') {
            Some((n, f)) => (
                n,
                f.strip_prefix('0')
                    .and_then(|w| w.strip_suffix('d'))
                    .and_then(|w| w.parse::<usize>().ok())
                    .map(|w| w.min(32)),
            ),
            None => (ident, None),
        };
        let value = match name {
            "" => Some("$".to_string()),
            "Number" => Some(number.to_string()),
            "Time" => Some(time.to_string()),
            "Bandwidth" => Some(bandwidth.to_string()),
            "RepresentationID" => Some(representation.to_string()),
            _ => None,
        };
        match value {
            Some(v) => {
                let w = width.unwrap_or(0);
                for _ in v.len()..w {
                    out.push('0');
                }
                out.push_str(&v);
            }
            None => {
                out.push('$');
                out.push_str(ident);
                out.push('$');
            }
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape crates/packager/src/dash.rs renders: two periods (a reconnect), a
    /// timeline with a repeat.
    const MPD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" id="default/cam" profiles="urn:mpeg:dash:profile:isoff-live:2011" type="dynamic" availabilityStartTime="1970-01-01T00:00:00Z" publishTime="2023-11-14T22:13:30.000Z" minimumUpdatePeriod="PT2.000S" timeShiftBufferDepth="PT10.000S" suggestedPresentationDelay="PT6.000S" minBufferTime="PT2.000S" maxSegmentDuration="PT2.000S">
  <BaseURL>/hls/default/cam/</BaseURL>
  <Period id="p1700000000000" start="PT1700000000.000S">
    <AdaptationSet id="0" contentType="video" mimeType="video/mp4" segmentAlignment="true" startWithSAP="1">
      <Representation id="0" bandwidth="3000000" codecs="avc1.64001f,mp4a.40.2" width="1280" height="720">
        <SegmentTemplate timescale="90000" presentationTimeOffset="900" startNumber="4" initialization="init-1-0.mp4?token=a&amp;b" media="seg-1-$Number$.m4s?token=a&amp;b">
          <SegmentTimeline>
            <S t="900" d="180000" r="1"/>
            <S d="90000"/>
          </SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
  <Period id="p1700000006000" start="PT1700000006.000S">
    <AdaptationSet id="0" contentType="video" mimeType="video/mp4">
      <Representation id="v" bandwidth="1">
        <SegmentTemplate timescale="1000" startNumber="0" initialization="init-2-0.mp4" media="seg-2-$Time$-$RepresentationID$.m4s" availabilityTimeOffset="1.667">
          <SegmentTimeline><S t="0" d="2000"/></SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
  <ServiceDescription id="0"><Latency target="2500"/></ServiceDescription>
  <UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-iso:2014" value="/dash/time"/>
</MPD>
"#;
    const T0: i64 = 1_700_000_000_000;

    #[test]
    fn reads_our_mpd() {
        let mpd = parse(MPD).unwrap();
        assert!(mpd.dynamic && mpd.low_latency());
        assert_eq!(mpd.availability_start_ms, 0);
        assert_eq!(mpd.minimum_update_period_ms, Some(2000));
        assert_eq!(mpd.suggested_presentation_delay_ms, Some(6000));
        assert_eq!(mpd.target_latency_ms, Some(2500));
        assert_eq!(mpd.base_url.as_deref(), Some("/hls/default/cam/"));
        assert_eq!(mpd.periods.len(), 2);
        let p = &mpd.periods[0];
        assert_eq!(p.id.as_deref(), Some("p1700000000000"));
        assert_eq!(p.init.as_deref(), Some("init-1-0.mp4?token=a&b"));
        assert_eq!(p.availability_time_offset, None);
        let got: Vec<(u64, &str, i64, i64)> = p
            .segments
            .iter()
            .map(|s| (s.number, s.uri.as_str(), s.start_ms, s.duration_ms))
            .collect();
        assert_eq!(
            got,
            vec![
                (4, "seg-1-4.m4s?token=a&b", T0, 2000),
                (5, "seg-1-5.m4s?token=a&b", T0 + 2000, 2000),
                (6, "seg-1-6.m4s?token=a&b", T0 + 4000, 1000),
            ]
        );
        let q = &mpd.periods[1];
        assert_eq!(q.availability_time_offset, Some(1.667));
        assert_eq!(q.segments[0].uri, "seg-2-0-v.m4s");
        assert_eq!(q.segments[0].end_ms(), T0 + 8000);
        assert_eq!(q.media_uri(1, 2000), "seg-2-2000-v.m4s");
    }

    #[test]
    fn durations_and_templates() {
        assert_eq!(parse_duration_ms("PT2.000S"), Some(2000));
        assert_eq!(parse_duration_ms("PT1H2M3.5S"), Some(3_723_500));
        assert_eq!(parse_duration_ms("P1D"), Some(86_400_000));
        assert_eq!(parse_duration_ms("P0DT0.25S"), Some(250));
        for bad in ["2S", "PT", "PTS", "PT1", "PT-1S", "PT1X", "P1Y"] {
            assert!(parse_duration_ms(bad).is_none(), "{bad}");
        }
        assert_eq!(
            expand("a$Number%05d$b$$c$X$", "r", 7, 42, 9),
            "a00042b$c$X$"
        );
        assert_eq!(expand("$Bandwidth$-$Time$-$Num", "r", 7, 42, 9), "7-9-$Num");
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            "",
            "<html/>",
            "<MPD availabilityStartTime=\"yesterday\"/>",
            "<MPD minimumUpdatePeriod=\"2s\"/>",
            "<MPD><Period><SegmentTemplate media=\"x\"><SegmentTimeline><S t=\"0\"/></SegmentTimeline></SegmentTemplate></Period></MPD>",
            "<MPD><Period><SegmentTemplate media=\"x\"><SegmentTimeline><S d=\"0\"/></SegmentTimeline></SegmentTemplate></Period></MPD>",
            "<MPD><Period><SegmentTemplate timescale=\"0\" media=\"x\"/></Period></MPD>",
            "<MPD><Period><SegmentTemplate/></Period></MPD>",
            "<MPD type=\"&bogus;\"/>",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        // A huge repeat count is bounded.
        let big = "<MPD><Period><SegmentTemplate media=\"$Number$\"><SegmentTimeline><S t=\"0\" d=\"1\" r=\"9999999999\"/></SegmentTimeline></SegmentTemplate></Period></MPD>";
        assert_eq!(parse(big).unwrap().periods[0].segments.len(), MAX_SEGMENTS);
    }
}
