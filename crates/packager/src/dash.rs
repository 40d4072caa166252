//! The live DASH MPD of one stream (ISO/IEC 23009-1, `isoff-live` profile, DASH-IF live
//! guidelines), rendered from the same [`PlaylistState`] as the HLS playlists: it lists the
//! same CMAF segments and init segments, so nothing is stored twice. A pure function: the
//! state and the clock in, XML out.
//!
//! Layout: `type="dynamic"`, `availabilityStartTime` the Unix epoch (constant for the life of
//! the stream, so every update of the MPD agrees with the previous ones), one `Period` per run
//! of segments without a discontinuity (a reconnect, a failover or a codec change starts a new
//! one, with its own init segment and numbering), each `Period@start` the wall clock of its
//! first segment (never before the end of the previous period), one `AdaptationSet` with one
//! `Representation` (audio and video are muxed in each segment), `SegmentTemplate` with
//! `$Number$` and a `SegmentTimeline` in 90 kHz ticks (the video track's timescale; `S@t` is
//! each segment's `tfdt`, `presentationTimeOffset` the period's first `S@t`).

use std::fmt::Write;

use serde::{Deserialize, Serialize};
use tidegate_media::TIMESCALE;

use crate::datetime::write_program_date_time;
use crate::playlist::{PartEntry, PlaylistState, SegmentEntry};
use crate::{parse_part_uri, Container};

/// The DASH profile every MPD declares: the ISO live profile (`SegmentTemplate`, one init
/// segment per representation, segments starting with a SAP).
pub const DASH_PROFILE: &str = "urn:mpeg:dash:profile:isoff-live:2011";

/// The DASH-IF low-latency profile (DASH-IF IOP, "Low-latency Modes for DASH"), declared
/// besides [`DASH_PROFILE`] when the stream has parts.
pub const LL_DASH_PROFILE: &str = "http://www.dashif.org/guidelines/low-latency-live-v5";

/// `ServiceDescription/Latency@target` in thousandths of a Part Target Duration: 4.5 parts
/// (1.5 s with the default 1/3 s parts): the part being written, the `PART-HOLD-BACK` of
/// LL-HLS (3 parts) and half a part for the request.
pub const LL_LATENCY_TARGET_MILLI_PARTS: u64 = 4500;

/// `MPD@minimumUpdatePeriod` of a low-latency MPD in thousandths of a Part Target Duration:
/// 3 parts (1 s with the default 1/3 s parts, LL-HLS's `PART-HOLD-BACK`), never more than the
/// target segment duration. With `SegmentTimeline` a player learns of the next segment only
/// from an MPD update, and dash.js updates on this timer alone (at most once a second): with
/// a period of a whole segment it learned of a segment up to 2 s after its first part was
/// available, longer than the 1.2 s of media its 1.5 s latency target leaves it, and stood
/// still ~2 s every few segments (`crates/cli/tests/players.rs` on a loaded 2-core machine).
pub const LL_UPDATE_PERIOD_MILLI_PARTS: u64 = 3000;

/// `ServiceDescription/PlaybackRate@min` and `@max`: the player may play 4 % slower or
/// faster to stay at its target latency (DASH-IF's livesim uses the same).
pub const LL_PLAYBACK_RATE: (&str, &str) = ("0.96", "1.04");

/// The `UTCTiming` scheme of the time endpoint: an HTTP GET answering an ISO 8601 date-time.
pub const UTC_TIMING_SCHEME: &str = "urn:mpeg:dash:utc:http-iso:2014";

/// Why a stream has no MPD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MpdUnavailable {
    /// The stream's segments are MPEG-TS, which the DASH live profile cannot carry.
    MpegTs,
    /// No segment is listed yet.
    NoSegments,
}

impl MpdUnavailable {
    /// A sentence for the viewer.
    pub fn reason(self) -> &'static str {
        match self {
            MpdUnavailable::MpegTs => {
                "this stream is packaged as MPEG-TS (its tenant's segment-format is \"ts\"): DASH needs fMP4 segments; play its HLS playlist"
            }
            MpdUnavailable::NoSegments => "no segment yet",
        }
    }
}

/// Where a DASH period starts, fixed when its first segment is pushed: DASH-IF's timing
/// model forbids `Period@start` and `presentationTimeOffset` to change in an MPD update, so
/// they must not follow the window as it slides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodAnchor {
    /// `Period@start`: ms since `availabilityStartTime` (the Unix epoch).
    pub start_ms: i64,
    /// `presentationTimeOffset`, 90 kHz ticks: the `S@t` of the period's first segment.
    pub pto: i64,
}

impl PeriodAnchor {
    /// Where `segment` (of this period) ends on the MPD timeline, ms since the epoch.
    fn end_ms(&self, segment: &SegmentEntry) -> Option<i64> {
        let t = segment.start_ticks?;
        let d = i64::try_from(segment.duration_ticks()).ok()?;
        let ticks = t.saturating_add(d).saturating_sub(self.pto);
        Some(
            self.start_ms
                .saturating_add(ticks.saturating_mul(1000) / i64::from(TIMESCALE)),
        )
    }
}

/// Low-latency DASH: the least time, in milliseconds, between the end of a period's last
/// segment and the start of the period a reconnect or failover starts after it.
///
/// A player at low latency plays to the end of the old period's media before the new period
/// exists (the publisher is away, then its first segment is built), and stands there. When
/// the MPD with the new period arrives, dash.js 5 (its `GapController`, with its default
/// `streaming.gaps.smallGapLimit` of 1.5 s) handles the segment-less rest of the old period
/// in one of two ways: shorter than 1.5 s, it seeks to the period's end "stuck to the
/// buffered range", which lands on the very end of the old media, a seek that never
/// completes and that stops its gap checks: the player stands still for good
/// (`crates/cli/tests/dash.rs`'s reconnect, about one run in two on a busy machine);
/// 1.5 s or longer, it waits for the new period's first segment to be buffered and jumps
/// the gap into it. 2 s leaves half a second for the playhead standing past the listed end
/// (the first frame's composition offset, audio and video ending apart). Decision 0019.
pub const LL_PERIOD_GAP_MIN_MS: i64 = 2000;

/// The period anchor of `entry`, pushed after `previous`: the previous segment's when it
/// continues its period (no discontinuity, same init segment), else a new one at the
/// entry's wall clock, moved past the previous segment's end if that is later (periods must
/// not overlap; a failover to a worker whose clock is behind). With parts (`low_latency`),
/// the new period also starts after the end the previous segment was announced with
/// (`announced_ticks`, its duration when it was announced while being built) and at least
/// [`LL_PERIOD_GAP_MIN_MS`] after its real end.
pub(crate) fn period_anchor(
    previous: Option<&SegmentEntry>,
    entry: &SegmentEntry,
    low_latency: bool,
    announced_ticks: Option<u64>,
) -> Option<PeriodAnchor> {
    let start_ticks = entry.start_ticks?;
    if let Some(prev) = previous {
        if !entry.discontinuity && prev.map_uri == entry.map_uri && prev.period.is_some() {
            return prev.period;
        }
    }
    let previous_end = previous.and_then(|p| {
        let end = p.period?.end_ms(p)?;
        if !low_latency {
            return Some(end);
        }
        // Low-latency DASH announced the previous segment while it was being built, with
        // the duration of the one before it (`announced_ticks`): a player that fetched it
        // then believes it lasts that long, even if it was cut short (the publisher left).
        // The new period starts after that believed end, never inside it, and leaves
        // dash.js a gap it jumps (LL_PERIOD_GAP_MIN_MS).
        let announced_extra_ms =
            announced_ticks
                .filter(|&a| a > p.duration_ticks())
                .map_or(0, |a| {
                    let extra = a.saturating_sub(p.duration_ticks());
                    i64::try_from(extra.saturating_mul(1000).div_ceil(u64::from(TIMESCALE)))
                        .unwrap_or(0)
                });
        Some(end.saturating_add(announced_extra_ms.max(LL_PERIOD_GAP_MIN_MS)))
    });
    Some(PeriodAnchor {
        start_ms: entry
            .program_date_time_ms
            .max(previous_end.unwrap_or(i64::MIN)),
        pto: start_ticks,
    })
}

/// The low-latency DASH values of a stream with parts, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowLatencyDash {
    /// `availabilityTimeOffset`: the target segment duration less one part (DASH-IF: the
    /// segment duration minus the chunk duration), so a segment is announced available
    /// once its first part is.
    pub availability_time_offset_ms: u64,
    /// `ServiceDescription/Latency@target`.
    pub latency_target_ms: u64,
    /// `MPD@minimumUpdatePeriod` ([`LL_UPDATE_PERIOD_MILLI_PARTS`]).
    pub minimum_update_period_ms: u64,
    /// `ServiceDescription/Latency@min` (3/4 of the target).
    pub latency_min_ms: u64,
    /// `ServiceDescription/Latency@max` (twice the target).
    pub latency_max_ms: u64,
}

/// The segment being built of a stream with parts ([`PlaylistState::segment_in_progress`]):
/// the one low-latency DASH announces before it is complete, and the origin sends with
/// chunked transfer, part by part, as they are stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentInProgress<'a> {
    /// The name the segment will have when complete (`seg-E-N.m4s`): its `$Number$`.
    pub uri: String,
    /// Its parts published so far, in order (empty while only its first part is hinted).
    pub parts: &'a [PartEntry],
    /// It follows a discontinuity (it starts a new period, not announced before it is
    /// complete).
    pub discontinuity: bool,
    /// Its init segment.
    pub map_uri: Option<&'a str>,
}

impl PlaylistState {
    /// The low-latency DASH values, when the stream has parts (LL-HLS
    /// [`PlaylistState::part_target_secs`]) and fMP4 segments; `None` renders the MPD as
    /// without parts.
    pub fn low_latency_dash(&self) -> Option<LowLatencyDash> {
        if self.container != Container::Fmp4 {
            return None;
        }
        let part = self
            .part_target_secs
            .filter(|t| t.is_finite() && *t > 0.0)?;
        // Float-to-int `as` saturates.
        let part_ms = ((part * 1000.0).round() as u64).max(1);
        let target_ms = u64::from(self.target_duration.max(1)).saturating_mul(1000);
        let latency_target_ms = (part * LL_LATENCY_TARGET_MILLI_PARTS as f64)
            .round()
            .max(1.0) as u64;
        let update_ms =
            ((part * LL_UPDATE_PERIOD_MILLI_PARTS as f64).round() as u64).clamp(1, target_ms);
        Some(LowLatencyDash {
            availability_time_offset_ms: target_ms.saturating_sub(part_ms),
            minimum_update_period_ms: update_ms,
            latency_target_ms,
            latency_min_ms: latency_target_ms.saturating_mul(3) / 4,
            latency_max_ms: latency_target_ms.saturating_mul(2),
        })
    }

    /// The segment being built, when the stream has parts and is live: the segment of the
    /// open parts, from its first stored part on. Not a segment whose first part is only
    /// hinted: that one may never exist (the worker dies before cutting it and the session
    /// that takes over has another name), and a player that was told of it by an MPD asks
    /// for it until it gives up (dash.js: a fatal download error, found by
    /// `crates/cli/tests/players_failover.rs`). A segment with a stored part becomes a
    /// listed segment whatever happens next (`salvage.rs` lists it whole after a takeover).
    pub fn segment_in_progress(&self) -> Option<SegmentInProgress<'_>> {
        if self.ended || self.low_latency_dash().is_none() {
            return None;
        }
        let after_discontinuity = self.pending_discontinuity && !self.segments.is_empty();
        let open = self.open.as_ref().filter(|o| !o.parts.is_empty())?;
        let (uri, _) = parse_part_uri(&open.parts.first()?.uri)?;
        Some(SegmentInProgress {
            uri,
            parts: &open.parts,
            discontinuity: open.discontinuity || after_discontinuity,
            map_uri: open.map_uri.as_deref(),
        })
    }

    /// The timeline entry of the segment in progress when it continues the last period
    /// (same init segment, the next number, no discontinuity): it starts where the last
    /// segment ends and is announced with the last segment's duration (or the duration of
    /// its parts so far, if longer); the entry of the complete segment replaces it.
    fn announced_in_progress(&self, last: &Period<'_>) -> Option<SegmentEntry> {
        let building = self.segment_in_progress()?;
        let previous = *last.segments.last()?;
        let (prefix, number, suffix) = split_name(&building.uri)?;
        let continues = !building.discontinuity
            && building.map_uri == Some(last.init)
            && prefix == last.prefix
            && suffix == last.suffix
            && last.last_number.checked_add(1) == Some(number);
        if !continues {
            return None;
        }
        let previous_ticks = previous.duration_ticks();
        let start = previous
            .start_ticks?
            .saturating_add(i64::try_from(previous_ticks).ok()?);
        let parts_ticks: u64 = building
            .parts
            .iter()
            .map(|p| {
                if p.duration_secs.is_finite() && p.duration_secs > 0.0 {
                    // Float-to-int `as` saturates.
                    (p.duration_secs * f64::from(TIMESCALE)).round() as u64
                } else {
                    0
                }
            })
            .sum();
        let ticks = previous_ticks.max(parts_ticks);
        Some(SegmentEntry {
            sequence: self.next_sequence,
            uri: building.uri,
            duration_secs: ticks as f64 / f64::from(TIMESCALE),
            program_date_time_ms: previous.program_date_time_ms,
            discontinuity: false,
            map_uri: building.map_uri.map(str::to_owned),
            bytes: 0,
            start_ticks: Some(start),
            video_frames: None,
            video_cadence: None,
            period: previous.period,
            parts: Vec::new(),
        })
    }
}

/// What the MPD needs besides the playlist state.
#[derive(Debug, Clone, Copy)]
pub struct MpdOptions<'a> {
    /// `MPD@id`: stable for the stream (e.g. `TENANT/STREAM`).
    pub id: &'a str,
    /// The `BaseURL` the segment and init segment names resolve against (e.g.
    /// `/hls/TENANT/STREAM/`); `None` for the MPD's own location.
    pub base_url: Option<&'a str>,
    /// A query string (without `?`) every segment and init segment URL carries, e.g.
    /// `token=...` for signed playback.
    pub query: Option<&'a str>,
    /// The URL of the `UTCTiming` endpoint (scheme [`UTC_TIMING_SCHEME`]).
    pub utc_timing_url: &'a str,
    /// Now, Unix milliseconds: `publishTime`.
    pub now_ms: i64,
}

/// One period of the MPD: consecutive segments of one init segment and one name pattern.
struct Period<'a> {
    /// Counts the periods of the stream (the discontinuities before it): the id of a period
    /// without an anchor (a state stored before anchors were kept).
    index: u64,
    /// Where it starts, fixed when its first segment was pushed.
    anchor: Option<PeriodAnchor>,
    segments: Vec<&'a SegmentEntry>,
    /// The number in the first segment's name (`startNumber`), and in the last one's.
    first_number: u64,
    last_number: u64,
    /// `init-E-I.mp4`.
    init: &'a str,
    /// The segment name before and after the number: `seg-E-` and `.m4s`.
    prefix: &'a str,
    suffix: &'a str,
}

/// Splits a segment name around the number at the end of its stem (`seg-5-12.m4s` → `seg-5-`,
/// 12, `.m4s`): the `$Number$` of the template. (The writer numbers a session's segments from
/// 0, independently of the media sequence.)
fn split_name(uri: &str) -> Option<(&str, u64, &str)> {
    let dot = uri.rfind('.').unwrap_or(uri.len());
    let (stem, suffix) = uri.split_at(dot);
    let prefix = stem.trim_end_matches(|c: char| c.is_ascii_digit());
    let number = stem.get(prefix.len()..)?.parse().ok()?;
    Some((prefix, number, suffix))
}

/// Groups the listed segments into periods: a new one at every discontinuity, init segment
/// change or naming change. Segments whose name does not end in their number are left out
/// (a `$Number$` template cannot name them).
///
/// A period is also split where the numbers in the names skip one.
fn periods(state: &PlaylistState) -> Vec<Period<'_>> {
    let mut out: Vec<Period<'_>> = Vec::new();
    let mut index = state.discontinuity_sequence;
    for (position, segment) in state.segments.iter().enumerate() {
        let Some(init) = segment.map_uri.as_deref() else {
            continue;
        };
        let Some((prefix, number, suffix)) = split_name(&segment.uri) else {
            continue;
        };
        if segment.discontinuity {
            index = index.saturating_add(1);
        }
        let continues = out.last().is_some_and(|p| {
            !segment.discontinuity
                && p.init == init
                && p.prefix == prefix
                && p.suffix == suffix
                && p.last_number.checked_add(1) == Some(number)
                && p.anchor == segment.period
        });
        match out.last_mut() {
            Some(period) if continues => {
                period.segments.push(segment);
                period.last_number = number;
            }
            _ => {
                if position > 0 && !segment.discontinuity && !out.is_empty() {
                    // A split without a discontinuity tag (not written by this server's
                    // writer): keep period ids unique.
                    index = index.saturating_add(1);
                }
                out.push(Period {
                    index,
                    anchor: segment.period,
                    segments: vec![segment],
                    first_number: number,
                    last_number: number,
                    init,
                    prefix,
                    suffix,
                });
            }
        }
    }
    out
}

/// Writes a duration as `PT<seconds>S` with millisecond precision.
fn write_duration_ms(out: &mut String, ms: u64) {
    let _ = write!(out, "PT{}.{:03}S", ms / 1000, ms % 1000);
}

/// Appends `text` escaped for an XML attribute or element.
fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
}

/// Appends `text` for a `SegmentTemplate` attribute: XML-escaped, `$` doubled.
fn push_template(out: &mut String, text: &str) {
    push_escaped(out, &text.replace('$', "$$"));
}

/// `frameRate` from the frames and ticks of the listed segments (their regular frame
/// intervals when known), snapped to a standard rate as `FRAME-RATE` is
/// ([`crate::FrameTally::milli_fps`]): an integer (`30`), an NTSC rate as its exact
/// fraction (`30000/1001`), or another measured rate with denominator 1000.
fn frame_rate(segments: &[&SegmentEntry]) -> Option<String> {
    let mut tally = crate::FrameTally {
        frames: 0,
        ticks: 0,
    };
    for s in segments {
        let counted = crate::FrameTally {
            frames: u64::from(s.video_frames?),
            ticks: s.duration_ticks(),
        };
        tally = tally.plus(
            s.video_cadence
                .filter(|c| c.frames > 0 && c.ticks > 0)
                .unwrap_or(counted),
        );
    }
    let (milli_fps, standard) = tally.measure()?;
    Some(if milli_fps.is_multiple_of(1000) {
        (milli_fps / 1000).to_string()
    } else if standard {
        // N × 1000/1001 fps: N000/1001.
        let n = (f64::from(milli_fps) * 1.001 / 1000.0).round() as u32;
        format!("{}/1001", n * 1000)
    } else {
        format!("{milli_fps}/1000")
    })
}

impl PlaylistState {
    /// The live DASH MPD of the listed segments (see the [module](crate::dash) for its
    /// layout), or why there is none.
    pub fn render_mpd(&self, options: &MpdOptions<'_>) -> Result<String, MpdUnavailable> {
        if self.container == Container::MpegTs {
            return Err(MpdUnavailable::MpegTs);
        }
        let periods = periods(self);
        if periods.is_empty() {
            return Err(MpdUnavailable::NoSegments);
        }
        let target_ms = u64::from(self.target_duration.max(1)).saturating_mul(1000);
        let listed_ms: u64 = periods
            .iter()
            .flat_map(|p| p.segments.iter())
            .map(|s| s.duration_ms())
            .sum();
        // Rounded up: maxSegmentDuration is an upper bound.
        let longest_ms = periods
            .iter()
            .flat_map(|p| p.segments.iter())
            .map(|s| {
                s.duration_ticks()
                    .saturating_mul(1000)
                    .div_ceil(u64::from(TIMESCALE))
            })
            .max()
            .unwrap_or(0);
        let mut spans = Vec::with_capacity(periods.len());
        let mut previous_end_ms = i64::MIN;
        for period in &periods {
            let span = period_span(period, previous_end_ms);
            previous_end_ms = span.1;
            spans.push(span);
        }
        let low_latency = self.low_latency_dash();
        // Low-latency DASH: the segment being built, announced in the last period.
        let in_progress = periods
            .last()
            .and_then(|last| self.announced_in_progress(last));
        let mut out = String::with_capacity(1200 + 60 * self.segments.len());
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str("<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" id=\"");
        push_escaped(&mut out, options.id);
        let _ = write!(out, "\" profiles=\"{DASH_PROFILE}");
        if low_latency.is_some() {
            let _ = write!(out, ",{LL_DASH_PROFILE}");
        }
        out.push_str(
            "\" type=\"dynamic\" availabilityStartTime=\"1970-01-01T00:00:00Z\" publishTime=\"",
        );
        write_program_date_time(&mut out, options.now_ms);
        out.push('"');
        if self.ended {
            // The end of the live presentation: no more updates, a known duration.
            let end_ms = spans.last().map_or(0, |span| span.1);
            out.push_str(" mediaPresentationDuration=\"");
            write_duration_ms(&mut out, end_ms.max(0).unsigned_abs());
            out.push('"');
        } else {
            out.push_str(" minimumUpdatePeriod=\"");
            let update_ms = low_latency
                .as_ref()
                .map_or(target_ms, |ll| ll.minimum_update_period_ms);
            write_duration_ms(&mut out, update_ms);
            out.push('"');
        }
        out.push_str(" timeShiftBufferDepth=\"");
        write_duration_ms(&mut out, listed_ms.max(target_ms));
        out.push_str("\" suggestedPresentationDelay=\"");
        write_duration_ms(&mut out, target_ms.saturating_mul(3));
        out.push_str("\" minBufferTime=\"");
        write_duration_ms(&mut out, target_ms);
        out.push_str("\" maxSegmentDuration=\"");
        write_duration_ms(&mut out, longest_ms.max(target_ms));
        out.push_str("\">\n");
        if let Some(base) = options.base_url {
            out.push_str("  <BaseURL>");
            push_escaped(&mut out, base);
            out.push_str("</BaseURL>\n");
        }
        if let Some(ll) = &low_latency {
            let (rate_min, rate_max) = LL_PLAYBACK_RATE;
            let _ = write!(
                out,
                "  <ServiceDescription id=\"0\">\n    <Latency target=\"{}\" min=\"{}\" max=\"{}\"/>\n    <PlaybackRate min=\"{rate_min}\" max=\"{rate_max}\"/>\n  </ServiceDescription>\n",
                ll.latency_target_ms, ll.latency_min_ms, ll.latency_max_ms
            );
        }

        let last_index = periods.len().saturating_sub(1);
        for (index, (period, (start_ms, _, pto))) in periods.iter().zip(spans).enumerate() {
            let extra = in_progress.as_ref().filter(|_| index == last_index);
            self.write_period(&mut out, period, start_ms, pto, options, extra);
        }
        let _ = write!(
            out,
            "  <UTCTiming schemeIdUri=\"{UTC_TIMING_SCHEME}\" value=\""
        );
        push_escaped(&mut out, options.utc_timing_url);
        out.push_str("\"/>\n</MPD>\n");
        Ok(out)
    }

    fn write_period(
        &self,
        out: &mut String,
        period: &Period<'_>,
        start_ms: i64,
        pto: i64,
        options: &MpdOptions<'_>,
        in_progress: Option<&SegmentEntry>,
    ) {
        if period.segments.is_empty() {
            return;
        }
        // The anchor's start is stable for as long as the period is listed, and unique.
        match period.anchor {
            Some(anchor) => {
                let _ = write!(out, "  <Period id=\"p{}\" start=\"", anchor.start_ms);
            }
            None => {
                let _ = write!(out, "  <Period id=\"d{}\" start=\"", period.index);
            }
        }
        write_duration_ms(out, start_ms.max(0).unsigned_abs());
        out.push_str("\">\n");
        let video = self.resolution.is_some()
            || self.codecs.as_deref().is_some_and(|c| {
                c.split(',').any(|c| {
                    ["avc", "hvc", "hev", "av01", "vp09"]
                        .iter()
                        .any(|v| c.trim().starts_with(v))
                })
            });
        let (content_type, mime) = if video {
            ("video", "video/mp4")
        } else {
            ("audio", "audio/mp4")
        };
        let _ = write!(
            out,
            "    <AdaptationSet id=\"0\" contentType=\"{content_type}\" mimeType=\"{mime}\" segmentAlignment=\"true\" startWithSAP=\"1\">\n      <Representation id=\"0\" bandwidth=\"{}\"",
            self.bandwidth.unwrap_or(1).max(1)
        );
        if let Some(codecs) = &self.codecs {
            out.push_str(" codecs=\"");
            push_escaped(out, codecs);
            out.push('"');
        }
        if video {
            if let Some((width, height)) = self.resolution {
                let _ = write!(out, " width=\"{width}\" height=\"{height}\"");
            }
            if let Some(rate) = frame_rate(&period.segments) {
                let _ = write!(out, " frameRate=\"{rate}\"");
            }
        }
        if let Some(rate) = self.audio_sample_rate {
            let _ = write!(out, " audioSamplingRate=\"{rate}\"");
        }
        out.push_str(">\n");
        let pto = pto.max(0);
        let _ = write!(
            out,
            "        <SegmentTemplate timescale=\"{TIMESCALE}\" presentationTimeOffset=\"{pto}\" startNumber=\"{}\" initialization=\"",
            period.first_number
        );
        let query = options.query.filter(|q| !q.is_empty());
        push_template(out, period.init);
        if let Some(q) = query {
            out.push('?');
            push_template(out, q);
        }
        out.push_str("\" media=\"");
        push_template(out, period.prefix);
        out.push_str("$Number$");
        push_template(out, period.suffix);
        if let Some(q) = query {
            out.push('?');
            push_template(out, q);
        }
        out.push('"');
        if let Some(ll) = self.low_latency_dash() {
            let ato = ll.availability_time_offset_ms;
            let _ = write!(
                out,
                " availabilityTimeOffset=\"{}.{:03}\" availabilityTimeComplete=\"false\"",
                ato / 1000,
                ato % 1000
            );
        }
        out.push_str(">\n          <SegmentTimeline>\n");
        match in_progress {
            Some(building) => {
                let mut segments = period.segments.clone();
                segments.push(building);
                write_timeline(out, &segments);
            }
            None => write_timeline(out, &period.segments),
        }
        out.push_str(
            "          </SegmentTimeline>\n        </SegmentTemplate>\n      </Representation>\n    </AdaptationSet>\n  </Period>\n",
        );
    }
}

/// A period's start and end on the MPD timeline (ms since `availabilityStartTime`, the Unix
/// epoch), and its `presentationTimeOffset`: from its anchor; without one (a state stored
/// before anchors were kept), from its first listed segment, never before the previous
/// period ended (`previous_end_ms`).
fn period_span(period: &Period<'_>, previous_end_ms: i64) -> (i64, i64, i64) {
    let first = period.segments.first();
    let anchor = period.anchor.unwrap_or_else(|| PeriodAnchor {
        start_ms: first
            .map_or(0, |s| s.program_date_time_ms)
            .max(previous_end_ms),
        pto: first.and_then(|s| s.start_ticks).unwrap_or(0),
    });
    let end_ms = period
        .segments
        .last()
        .and_then(|last| anchor.end_ms(last))
        .unwrap_or_else(|| {
            let ticks: u64 = period.segments.iter().map(|s| s.duration_ticks()).sum();
            let ms = i64::try_from(ticks.saturating_mul(1000) / u64::from(TIMESCALE));
            anchor.start_ms.saturating_add(ms.unwrap_or(0))
        });
    (anchor.start_ms, end_ms, anchor.pto)
}

/// The `S` elements: `t` on the first and after a gap, `r` for repeated durations.
fn write_timeline(out: &mut String, segments: &[&SegmentEntry]) {
    // (t if written, d, repeats)
    let mut runs: Vec<(Option<i64>, u64, u64)> = Vec::new();
    let mut expected: Option<i64> = None;
    for segment in segments {
        let d = segment.duration_ticks();
        let t = segment.start_ticks.or(expected).unwrap_or(0);
        let contiguous = expected == Some(t);
        match runs.last_mut() {
            Some((_, last_d, repeats)) if contiguous && *last_d == d => *repeats += 1,
            _ => runs.push(((!contiguous).then_some(t), d, 0)),
        }
        expected = Some(t.saturating_add(i64::try_from(d).unwrap_or(i64::MAX)));
    }
    for (t, d, repeats) in runs {
        out.push_str("            <S");
        if let Some(t) = t {
            let _ = write!(out, " t=\"{t}\"");
        }
        let _ = write!(out, " d=\"{d}\"");
        if repeats > 0 {
            let _ = write!(out, " r=\"{repeats}\"");
        }
        out.push_str("/>\n");
    }
}

#[cfg(test)]
mod tests;
