//! The HLS playlist of one stream: a sliding window of segments that survives publisher
//! reconnects, and its rendering (RFC 8216).

use std::collections::VecDeque;
use std::fmt::Write;

use serde::{Deserialize, Serialize};
use tidegate_media::TIMESCALE;

use crate::datetime::write_program_date_time;
use crate::segmenter::CutSegment;
use crate::{Container, PackagerError};

/// Segments kept in the playlist by default.
pub const DEFAULT_WINDOW: usize = 10;

/// Largest window honoured (a larger `window`, e.g. from a corrupted stored state, is
/// clamped): bounds the memory and the rendering cost of one playlist.
pub const MAX_WINDOW: usize = 1000;

/// Shortest segment (in seconds) whose bitrate counts towards [`PlaylistState::bandwidth`]:
/// a short segment holding little more than a keyframe would overstate the peak.
const MIN_BANDWIDTH_SAMPLE_SECS: f64 = 1.0;

/// One listed media segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentEntry {
    /// Media sequence number (assigned by [`PlaylistState::push_segment`]).
    pub sequence: u64,
    /// The segment's URI, relative to the playlist.
    pub uri: String,
    /// Duration in seconds (`EXTINF`).
    pub duration_secs: f64,
    /// Wallclock of the segment's first frame, Unix milliseconds.
    pub program_date_time_ms: i64,
    /// Preceded by `EXT-X-DISCONTINUITY`.
    pub discontinuity: bool,
    /// The init segment's URI (fMP4), `None` for MPEG-TS.
    pub map_uri: Option<String>,
    /// Size of the segment in bytes.
    pub bytes: u64,
    /// The dts of the segment's first frame in 90 kHz ticks, the segment's `tfdt` (DASH
    /// `S@t`); `None` in a state stored before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<i64>,
    /// Video frames in the segment (DASH `frameRate`); `None` when not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_frames: Option<u32>,
    /// The segment's regular video frame intervals (count and ticks), which the frame rate
    /// is measured from when known (a timeline jump inside the segment is left out); `None`
    /// when not known (the rate is then `video_frames` over the duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_cadence: Option<FrameTally>,
    /// Where the DASH period this segment belongs to starts (set by
    /// [`PlaylistState::push_segment`]), so `Period@start` and `presentationTimeOffset`
    /// never change while the period is listed; `None` in a state stored before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<crate::dash::PeriodAnchor>,
    // --- LL-HLS (issue #13) ---
    /// The segment's partial segments (`EXT-X-PART`), oldest first; empty when the stream
    /// is not packaged with parts. Rendered only near the live edge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartEntry>,
}

/// One partial segment (LL-HLS `EXT-X-PART`, draft-pantos-hls-rfc8216bis §4.4.4.9): a CMAF
/// chunk of its parent segment. Its bytes are the `bytes` bytes at `offset` in the parent
/// segment, so an origin can serve a part from the segment once the segment exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartEntry {
    /// The part's URI, relative to the playlist (see [`crate::part_uri`]).
    pub uri: String,
    /// Duration in seconds (`DURATION`).
    pub duration_secs: f64,
    /// The part starts with a keyframe (`INDEPENDENT=YES`).
    #[serde(default)]
    pub independent: bool,
    /// The part is not available (`GAP=YES`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gap: bool,
    /// Offset of the part's first byte in its parent segment.
    #[serde(default)]
    pub offset: u64,
    /// Size of the part in bytes.
    #[serde(default)]
    pub bytes: u64,
}

impl PartEntry {
    /// The duration in whole milliseconds, as rendered in `DURATION` (nonsense becomes 0).
    fn duration_ms(&self) -> u64 {
        secs_to_ms(self.duration_secs)
    }
}

/// How to answer a request for a part ([`PlaylistState::part_request`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartRequest {
    /// A part of the segment being built: serve its own stored object.
    Stored,
    /// A part of a complete segment: serve `len` bytes at `offset` of the segment's object.
    InSegment {
        /// The parent segment's URI.
        segment_uri: String,
        /// Offset of the part in the segment.
        offset: u64,
        /// Length of the part.
        len: u64,
    },
    /// The preload hint: hold the request until the part exists (then decide again), 503
    /// past the blocking timeout.
    Hinted,
    /// Neither listed nor hinted: 404.
    NotFound,
}

/// The LL-HLS segment being built: its parts published so far, and the tags its first part
/// carries (`EXT-X-PROGRAM-DATE-TIME`, `EXT-X-MAP`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct OpenSegmentEntry {
    /// Wallclock of the segment's first frame, Unix milliseconds.
    pub program_date_time_ms: i64,
    /// The init segment's URI (fMP4).
    pub map_uri: Option<String>,
    /// Preceded by `EXT-X-DISCONTINUITY` (besides a pending one of the playlist).
    pub discontinuity: bool,
    /// The parts published so far.
    pub parts: Vec<PartEntry>,
    /// The dts of the segment's first frame (its first part's) in 90 kHz ticks: where the
    /// segment starts if a session that takes over lists it whole from its parts (its
    /// `SegmentEntry::start_ticks`); `None` in a state stored before it was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<i64>,
}

/// Seconds to whole milliseconds (nonsense becomes 0).
fn secs_to_ms(secs: f64) -> u64 {
    if secs.is_finite() && secs > 0.0 {
        // Float-to-int `as` saturates.
        (secs * 1000.0).round() as u64
    } else {
        0
    }
}

impl SegmentEntry {
    /// The entry for a segment the [`Segmenter`](crate::Segmenter) cut, stored at `uri`,
    /// needing the init segment at `map_uri`.
    pub fn from_cut(cut: &CutSegment, uri: String, map_uri: Option<String>) -> Self {
        SegmentEntry {
            sequence: 0,
            uri,
            duration_secs: cut.duration as f64 / f64::from(TIMESCALE),
            program_date_time_ms: cut.program_date_time_ms,
            discontinuity: cut.discontinuity,
            map_uri,
            bytes: cut.bytes,
            parts: Vec::new(),
            start_ticks: Some(cut.start_dts),
            video_frames: Some(cut.video_frames),
            video_cadence: cut.video_cadence.tally(),
            period: None,
        }
    }

    /// The duration in 90 kHz ticks, as the segmenter measured it (nonsense becomes 0).
    pub(crate) fn duration_ticks(&self) -> u64 {
        if self.duration_secs.is_finite() && self.duration_secs > 0.0 {
            // Exact: the seconds were ticks / 90000. Float-to-int `as` saturates.
            (self.duration_secs * f64::from(TIMESCALE)).round() as u64
        } else {
            0
        }
    }

    /// The duration in whole milliseconds, as rendered in `EXTINF` (nonsense becomes 0).
    pub(crate) fn duration_ms(&self) -> u64 {
        secs_to_ms(self.duration_secs)
    }
}

/// The persistent playlist state of one stream.
///
/// Lifecycle, as the server drives it (persisting the state after every call, with a
/// compare-and-set on [`PlaylistState::epoch`] so that a superseded worker cannot write):
/// [`PlaylistState::new`] once when the stream first appears; [`PlaylistState::begin_session`]
/// whenever a publisher (re)starts while the stream is live or reconnecting, or
/// [`PlaylistState::reset_for_new_stream`] when the stream had ended;
/// [`PlaylistState::push_segment`] per segment (naming the segment from
/// [`PlaylistState::next_sequence`] before pushing); [`PlaylistState::end`] when the
/// reconnect window runs out. `EXT-X-MEDIA-SEQUENCE` never decreases through any of these,
/// nor through a serde round trip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlaylistState {
    /// Ownership/fencing epoch, bumped on each new publish session.
    pub epoch: u64,
    /// `EXT-X-MEDIA-SEQUENCE`: the sequence number of the first listed segment.
    pub media_sequence: u64,
    /// `EXT-X-DISCONTINUITY-SEQUENCE`: discontinuity tags that have left the window.
    pub discontinuity_sequence: u64,
    /// The sequence number the next pushed segment gets.
    pub next_sequence: u64,
    /// `EXT-X-TARGETDURATION` in seconds; never decreases; every rounded `EXTINF` is at most
    /// this.
    pub target_duration: u32,
    /// The container of the segments.
    pub container: Container,
    /// Segments kept in the playlist (clamped to 1..=[`MAX_WINDOW`]).
    pub window: usize,
    /// The listed segments, oldest first.
    pub segments: VecDeque<SegmentEntry>,
    /// The next pushed segment carries `EXT-X-DISCONTINUITY`.
    pub pending_discontinuity: bool,
    /// The stream has ended (`EXT-X-ENDLIST`).
    pub ended: bool,
    /// `CODECS` for the multivariant playlist.
    pub codecs: Option<String>,
    /// `RESOLUTION` (width, height) for the multivariant playlist.
    pub resolution: Option<(u32, u32)>,
    /// `BANDWIDTH` in bit/s for the multivariant playlist: raised by
    /// [`PlaylistState::push_segment`] to the peak segment bitrate seen.
    pub bandwidth: Option<u64>,
    // --- LL-HLS (issue #13) ---
    /// The Part Target Duration in seconds (`EXT-X-PART-INF:PART-TARGET`): `Some` renders
    /// the low-latency playlist (server control, parts, preload hint); `None` renders the
    /// playlist exactly as without LL-HLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part_target_secs: Option<f64>,
    /// The segment being built, with the parts published so far (LL-HLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open: Option<OpenSegmentEntry>,
    /// The URI of the next part (`EXT-X-PRELOAD-HINT:TYPE=PART`), set by the server after
    /// each part; cleared by [`PlaylistState::end`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preload_hint: Option<String>,
    /// The audio sample rate in Hz (DASH `audioSamplingRate`), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_sample_rate: Option<u32>,
    // --- multivariant FRAME-RATE (issue #13) ---
    /// `FRAME-RATE` of the multivariant playlist in thousandths of a frame per second
    /// (30000 for 30 fps, 29970 for 30000/1001): measured by
    /// [`PlaylistState::push_segment`] from the regular video frame intervals (see
    /// [`SegmentEntry::video_cadence`]; else the frames and durations) of all the
    /// segments since the last discontinuity (not only the listed ones), snapped to a
    /// standard rate when it is one; a rate that is not standard (a source dropping frames)
    /// is kept while new measurements stay within [`FRAME_RATE_HYSTERESIS_PPM`] of it, so it
    /// does not jitter from render to render. `None` without video.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_rate_milli: Option<u32>,
    /// The frames and 90 kHz ticks measured since the last discontinuity, for
    /// [`PlaylistState::frame_rate_milli`].
    #[serde(skip_serializing_if = "FrameTally::is_empty")]
    pub frame_tally: FrameTally,
}

/// Video frames and their duration counted for the frame rate (see
/// [`PlaylistState::frame_rate_milli`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FrameTally {
    /// Video frames counted.
    pub frames: u64,
    /// Their duration in 90 kHz ticks.
    pub ticks: u64,
}

impl FrameTally {
    fn is_empty(&self) -> bool {
        self.frames == 0 && self.ticks == 0
    }

    /// Both tallies together.
    pub fn plus(self, other: FrameTally) -> FrameTally {
        FrameTally {
            frames: self.frames.saturating_add(other.frames),
            ticks: self.ticks.saturating_add(other.ticks),
        }
    }

    /// The measured rate in thousandths of a frame per second, snapped to a standard rate
    /// (an integer, or an integer × 1000/1001) within [`FRAME_RATE_SNAP_PPM`].
    pub fn milli_fps(&self) -> Option<u32> {
        self.measure().map(|(milli, _)| milli)
    }

    /// [`FrameTally::milli_fps`], and whether it was snapped to a standard rate.
    pub(crate) fn measure(&self) -> Option<(u32, bool)> {
        if self.frames == 0 || self.ticks == 0 {
            return None;
        }
        let fps = self.frames as f64 * f64::from(TIMESCALE) / self.ticks as f64;
        if !fps.is_finite() || fps <= 0.0 || fps > f64::from(MAX_FRAME_RATE) {
            return None;
        }
        // Timestamps in whole milliseconds (RTMP) put the measured span up to a
        // millisecond off: over a short tally (under 2 s) more than the half of the 0.1 %
        // between 30 and 29.97 fps.
        let uncertainty = TIMESTAMP_JITTER_TICKS as f64 / self.ticks as f64;
        let tolerance = (FRAME_RATE_SNAP_PPM as f64 / 1e6).max(uncertainty);
        let integer = fps.round();
        let ntsc = (fps * 1.001).round() / 1.001;
        // The nearer of the two standard rates (the integer on a tie, or while the tally is
        // too short to rule it out), if near enough.
        let (to_integer, to_ntsc) = ((fps - integer).abs(), (fps - ntsc).abs());
        let (candidate, off) = if to_integer <= to_ntsc || to_integer <= integer * uncertainty {
            (integer, to_integer)
        } else {
            (ntsc, to_ntsc)
        };
        let standard = candidate >= 1.0 && off <= candidate * tolerance;
        let rate = if standard { candidate } else { fps };
        // Float-to-int `as` saturates; the rate is bounded above.
        let milli = (rate * 1000.0).round() as u32;
        (milli > 0).then_some((milli, standard))
    }
}

/// How far off (ticks) a tally's span may be from timestamps in whole milliseconds.
const TIMESTAMP_JITTER_TICKS: u64 = 90;

/// Highest frame rate believed (a higher one is a broken timeline, not video).
const MAX_FRAME_RATE: u32 = 1000;

/// How close (parts per million) a measured frame rate must be to a standard rate to be
/// taken as it: 0.06 %, less than the 0.1 % between 30 and 29.97 fps; a 2 s segment of a
/// 30 fps stream timed in whole milliseconds (RTMP) measures within 0.05 %.
pub const FRAME_RATE_SNAP_PPM: u64 = 600;

/// A new frame-rate measurement replaces the one rendered only when it differs by more
/// than this (parts per million), or after a discontinuity.
pub const FRAME_RATE_HYSTERESIS_PPM: u64 = 1000;

impl Default for PlaylistState {
    fn default() -> Self {
        PlaylistState::new(Container::Fmp4, DEFAULT_WINDOW, 2)
    }
}

impl PlaylistState {
    /// An empty playlist (epoch 0: call [`PlaylistState::begin_session`] before pushing).
    pub fn new(container: Container, window: usize, target_duration_secs: u32) -> Self {
        PlaylistState {
            epoch: 0,
            media_sequence: 0,
            discontinuity_sequence: 0,
            next_sequence: 0,
            target_duration: target_duration_secs.max(1),
            container,
            window: window.clamp(1, MAX_WINDOW),
            segments: VecDeque::new(),
            pending_discontinuity: false,
            ended: false,
            codecs: None,
            resolution: None,
            bandwidth: None,
            part_target_secs: None,
            open: None,
            preload_hint: None,
            audio_sample_rate: None,
            frame_rate_milli: None,
            frame_tally: FrameTally::default(),
        }
    }

    /// Fencing check: `Ok` when `held` is the state's current epoch.
    pub fn check_epoch(&self, held: u64) -> Result<(), PackagerError> {
        if held == self.epoch {
            Ok(())
        } else {
            Err(PackagerError::StaleEpoch {
                current: self.epoch,
                held,
            })
        }
    }

    /// A publisher (re)starts on a live or reconnecting stream: bumps the epoch; when
    /// segments are already listed (a resume) the next segment follows an
    /// `EXT-X-DISCONTINUITY`. Clears `ended` (the server calls
    /// [`PlaylistState::reset_for_new_stream`] instead after an end).
    pub fn begin_session(&mut self) {
        self.epoch = self.epoch.saturating_add(1);
        // Parts of a segment the previous session never finished are dropped with it.
        self.open = None;
        self.preload_hint = None;
        if !self.segments.is_empty() {
            self.pending_discontinuity = true;
        }
        self.ended = false;
    }

    /// A publisher starts a stream that had ended: a new playlist. Bumps the epoch, removes
    /// every listed segment (returned, for the server to delete after a grace period) and
    /// forgets the stream info. Numbering stays monotonic: media sequence numbers continue
    /// from the old playlist and the discontinuity sequence moves past every old
    /// discontinuity, so a player holding the old playlist can never mistake new segments
    /// for old ones.
    pub fn reset_for_new_stream(&mut self) -> Vec<SegmentEntry> {
        self.epoch = self.epoch.saturating_add(1);
        self.open = None;
        self.preload_hint = None;
        let removed: Vec<SegmentEntry> = self.segments.drain(..).collect();
        let tags = removed.iter().filter(|s| s.discontinuity).count() as u64;
        self.discontinuity_sequence = self.discontinuity_sequence.saturating_add(tags);
        if !removed.is_empty() {
            // The new stream's content is unrelated to the old one's.
            self.discontinuity_sequence = self.discontinuity_sequence.saturating_add(1);
        }
        self.media_sequence = self.media_sequence.max(self.next_sequence);
        self.pending_discontinuity = false;
        self.ended = false;
        self.codecs = None;
        self.resolution = None;
        self.bandwidth = None;
        self.audio_sample_rate = None;
        self.frame_rate_milli = None;
        self.frame_tally = FrameTally::default();
        removed
    }

    /// Appends a segment: assigns it [`PlaylistState::next_sequence`], applies a pending
    /// discontinuity, raises the target duration and the bandwidth if needed, and slides the
    /// window. Returns the segments that left the window (the server deletes their files
    /// after a grace period, so players that just loaded the previous playlist can still
    /// fetch them).
    ///
    /// LL-HLS: an entry pushed without parts takes the parts of the open segment
    /// ([`PlaylistState::push_part`]); the open segment is closed either way.
    pub fn push_segment(&mut self, mut entry: SegmentEntry) -> Vec<SegmentEntry> {
        if let Some(open) = self.open.take() {
            if entry.parts.is_empty() {
                entry.parts = open.parts;
            }
            entry.discontinuity |= open.discontinuity;
        }
        entry.sequence = self.next_sequence;
        self.next_sequence = self.next_sequence.saturating_add(1);
        if std::mem::take(&mut self.pending_discontinuity) {
            entry.discontinuity = true;
        }
        let rounded = entry.duration_ms().saturating_add(500) / 1000;
        let rounded = u32::try_from(rounded).unwrap_or(u32::MAX);
        self.target_duration = self.target_duration.max(rounded).max(1);
        if entry.duration_secs.is_finite() && entry.duration_secs >= MIN_BANDWIDTH_SAMPLE_SECS {
            // Float-to-int `as` saturates.
            let bitrate = (entry.bytes as f64 * 8.0 / entry.duration_secs).ceil() as u64;
            self.bandwidth = Some(self.bandwidth.unwrap_or(0).max(bitrate));
        }
        if self.segments.is_empty() {
            self.media_sequence = self.media_sequence.max(entry.sequence);
        }
        // With parts, the last segment was announced to DASH players with the duration of
        // the one before it (crate::dash, the segment being built).
        let announced_ticks = self
            .part_target_secs
            .and_then(|_| self.segments.iter().rev().nth(1))
            .map(SegmentEntry::duration_ticks);
        entry.period = crate::dash::period_anchor(
            self.segments.back(),
            &entry,
            self.low_latency_dash().is_some(),
            announced_ticks,
        );
        self.measure_frame_rate(&entry);
        self.segments.push_back(entry);

        let window = self.window.clamp(1, MAX_WINDOW);
        let mut evicted = Vec::new();
        while self.segments.len() > window {
            let Some(old) = self.segments.pop_front() else {
                break;
            };
            if old.discontinuity {
                self.discontinuity_sequence = self.discontinuity_sequence.saturating_add(1);
            }
            evicted.push(old);
        }
        if let Some(front) = self.segments.front() {
            self.media_sequence = self.media_sequence.max(front.sequence);
        }
        evicted
    }

    /// Counts the video frames of a pushed segment into [`PlaylistState::frame_rate_milli`].
    fn measure_frame_rate(&mut self, entry: &SegmentEntry) {
        if entry.discontinuity {
            // A new session or a codec change: the rate may differ from the previous one.
            self.frame_tally = FrameTally::default();
        }
        let Some(frames) = entry.video_frames.filter(|&f| f > 0) else {
            if entry.discontinuity {
                self.frame_rate_milli = None;
            }
            return;
        };
        // The regular frame intervals when known, else the frames over the duration.
        let sample = entry
            .video_cadence
            .filter(|c| c.frames > 0 && c.ticks > 0)
            .unwrap_or(FrameTally {
                frames: u64::from(frames),
                ticks: entry.duration_ticks(),
            });
        self.frame_tally = self.frame_tally.plus(sample);
        let Some((measured, standard)) = self.frame_tally.measure() else {
            return;
        };
        // A standard rate is taken at once (a longer measurement settles between 30 and
        // 29.97); a rate that is none (a source dropping frames) only when it moved.
        let keep = !entry.discontinuity
            && !standard
            && self.frame_rate_milli.is_some_and(|held| {
                u64::from(held.abs_diff(measured)).saturating_mul(1_000_000)
                    <= u64::from(held).saturating_mul(FRAME_RATE_HYSTERESIS_PPM)
            });
        if !keep {
            self.frame_rate_milli = Some(measured);
        }
    }

    /// The next pushed segment follows an `EXT-X-DISCONTINUITY`.
    pub fn mark_discontinuity(&mut self) {
        self.pending_discontinuity = true;
    }

    /// The stream has ended: the playlist gets `EXT-X-ENDLIST` (and loses its preload hint
    /// and the parts of an unfinished segment: an ended playlist hints nothing).
    pub fn end(&mut self) {
        self.ended = true;
        self.open = None;
        self.preload_hint = None;
    }

    /// LL-HLS: a part of the segment being built was published (stored): it is listed after
    /// the last segment. The first part of a segment opens it with the segment's wallclock
    /// and init segment. `next_hint` is the URI of the part after it (the preload hint).
    pub fn push_part(
        &mut self,
        part: PartEntry,
        program_date_time_ms: i64,
        map_uri: Option<String>,
        next_hint: Option<String>,
    ) {
        let open = self.open.get_or_insert_with(|| OpenSegmentEntry {
            program_date_time_ms,
            map_uri,
            discontinuity: false,
            parts: Vec::new(),
            start_ticks: None,
        });
        open.parts.push(part);
        self.preload_hint = next_hint;
    }

    /// LL-HLS: how to answer a request for the part at `uri` (§6.2.6: a hinted part is
    /// held until it exists; "the server SHOULD respond with "Not Found" ... to a request
    /// for a resource that it cannot find and that is not specified by an
    /// EXT-X-PRELOAD-HINT tag").
    pub fn part_request(&self, uri: &str) -> PartRequest {
        if let Some(open) = &self.open {
            if open.parts.iter().any(|p| p.uri == uri) {
                return PartRequest::Stored;
            }
        }
        if let Some((segment_uri, index)) = crate::parse_part_uri(uri) {
            if let Some(segment) = self.segments.iter().find(|s| s.uri == segment_uri) {
                if let Some(part) = usize::try_from(index)
                    .ok()
                    .and_then(|i| segment.parts.get(i))
                {
                    return PartRequest::InSegment {
                        segment_uri,
                        offset: part.offset,
                        len: part.bytes,
                    };
                }
            }
        }
        if !self.ended && self.preload_hint.as_deref() == Some(uri) {
            return PartRequest::Hinted;
        }
        PartRequest::NotFound
    }

    /// Where the live edge is, for blocking playlist reload ([`crate::decide_blocking`]).
    pub fn live_edge(&self) -> crate::LiveEdge {
        crate::LiveEdge {
            next_msn: self.next_sequence,
            last_segment_parts: self
                .segments
                .back()
                .map_or(0, |s| u32::try_from(s.parts.len()).unwrap_or(u32::MAX)),
            open_parts: self
                .open
                .as_ref()
                .map_or(0, |o| u32::try_from(o.parts.len()).unwrap_or(u32::MAX)),
            oldest_msn: self.media_sequence,
            part_target_secs: self.part_target_secs.filter(|t| t.is_finite() && *t > 0.0),
            target_duration_secs: self.target_duration.max(1),
            ended: self.ended,
        }
    }

    /// The `EXT-X-VERSION` the playlist needs: 6 for `EXT-X-MAP` in a media playlist,
    /// 3 for floating-point `EXTINF`.
    fn version(&self) -> u32 {
        match self.container {
            Container::Fmp4 => 6,
            Container::MpegTs => 3,
        }
    }

    /// The media playlist text.
    pub fn render_media_playlist(&self) -> String {
        self.render(false)
    }

    /// LL-HLS: the Playlist Delta Update answering `_HLS_skip=YES` (or `v2`): the segments
    /// further than the Skip Boundary from the end of the last segment are replaced by one
    /// `EXT-X-SKIP:SKIPPED-SEGMENTS=n`. The full playlist when a delta update does not
    /// apply: no LL-HLS (no `CAN-SKIP-UNTIL`), or an ended stream (§6.2.5.1: "A Server MUST
    /// ignore the _HLS_skip directive if the Playlist does not contain the CAN-SKIP-UNTIL
    /// attribute, or if it contains an EXT-X-ENDLIST tag").
    pub fn render_delta_update(&self) -> String {
        self.render(true)
    }

    /// The LL-HLS settings in force, when the playlist renders them.
    fn low_latency(&self) -> Option<LowLatency> {
        let part_target = self
            .part_target_secs
            .filter(|t| t.is_finite() && *t > 0.0)?;
        // Rendered in whole milliseconds, rounded up so that every part's rounded duration
        // stays within it.
        let part_target_ms = (part_target * 1000.0).ceil().max(1.0) as u64;
        let target_ms = u64::from(self.target_duration.max(1)) * 1000;
        Some(LowLatency {
            part_target_ms,
            part_hold_back_ms: part_target_ms.saturating_mul(PART_HOLD_BACK_PARTS),
            skip_boundary_ms: target_ms.saturating_mul(SKIP_BOUNDARY_TARGET_DURATIONS),
            part_window_ms: target_ms.saturating_mul(PART_WINDOW_TARGET_DURATIONS),
        })
    }

    /// How many of the oldest segments a delta update replaces by `EXT-X-SKIP`: those
    /// whose end is further than the Skip Boundary from the end of the last segment.
    fn skippable_segments(&self, skip_boundary_ms: u64) -> usize {
        let mut from_end: u64 = 0;
        let mut keep = 0;
        for segment in self.segments.iter().rev() {
            if from_end > skip_boundary_ms {
                break;
            }
            keep += 1;
            from_end = from_end.saturating_add(segment.duration_ms());
        }
        self.segments.len().saturating_sub(keep)
    }

    fn render(&self, delta: bool) -> String {
        let ll = self.low_latency();
        let skipped = match &ll {
            Some(ll) if delta && !self.ended => self.skippable_segments(ll.skip_boundary_ms),
            _ => 0,
        };
        // Segments whose parts are listed: those ending within PART_WINDOW of the end of the
        // playlist (the open segment's parts included).
        let open_ms: u64 = self
            .open
            .as_ref()
            .map_or(0, |o| o.parts.iter().map(PartEntry::duration_ms).sum());
        let mut parts_from = self.segments.len();
        if let Some(ll) = &ll {
            let mut from_end = open_ms;
            for segment in self.segments.iter().rev() {
                if from_end >= ll.part_window_ms {
                    break;
                }
                parts_from -= 1;
                from_end = from_end.saturating_add(segment.duration_ms());
            }
        }

        let per_segment: usize = self
            .segments
            .iter()
            .map(|s| {
                110 + s.uri.len()
                    + s.map_uri.as_ref().map_or(0, |m| m.len() + 20)
                    + if ll.is_some() { s.parts.len() * 60 } else { 0 }
            })
            .sum();
        let mut out = String::with_capacity(400 + per_segment);
        // EXT-X-SKIP needs version 9 (Apple's example of a delta update uses 10, for
        // CAN-SKIP-DATERANGES, which tidegate does not offer).
        let version = if skipped > 0 { 9 } else { self.version() };
        // Writing to a String cannot fail; results are ignored below.
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:{}\n#EXT-X-TARGETDURATION:{}\n",
            version,
            self.target_duration.max(1),
        );
        if let Some(ll) = &ll {
            out.push_str("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=");
            push_secs(&mut out, ll.part_hold_back_ms);
            out.push_str(",CAN-SKIP-UNTIL=");
            push_secs(&mut out, ll.skip_boundary_ms);
            out.push_str("\n#EXT-X-PART-INF:PART-TARGET=");
            push_secs(&mut out, ll.part_target_ms);
            out.push('\n');
        }
        let _ = write!(
            out,
            "#EXT-X-MEDIA-SEQUENCE:{}\n#EXT-X-DISCONTINUITY-SEQUENCE:{}\n#EXT-X-INDEPENDENT-SEGMENTS\n",
            self.media_sequence, self.discontinuity_sequence,
        );
        if skipped > 0 {
            // After EXT-X-DISCONTINUITY-SEQUENCE: hls.js rejects that tag once a segment
            // (which EXT-X-SKIP stands for) has been seen (hls.js#7554).
            let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
        }
        let mut previous_map: Option<&str> = None;
        for (index, segment) in self.segments.iter().enumerate().skip(skipped) {
            if segment.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            push_map(
                &mut out,
                segment.map_uri.as_deref(),
                index == skipped || segment.discontinuity,
                previous_map,
            );
            previous_map = segment.map_uri.as_deref();
            out.push_str("#EXT-X-PROGRAM-DATE-TIME:");
            write_program_date_time(&mut out, segment.program_date_time_ms);
            out.push('\n');
            if ll.is_some() && index >= parts_from {
                for part in &segment.parts {
                    push_part(&mut out, part);
                }
            }
            let ms = segment.duration_ms();
            let _ = writeln!(out, "#EXTINF:{}.{:03},", ms / 1000, ms % 1000);
            push_sanitized(&mut out, &segment.uri, false);
            out.push('\n');
        }
        if let (Some(_), Some(open), false) = (&ll, &self.open, self.ended) {
            if !open.parts.is_empty() {
                let discontinuity =
                    open.discontinuity || (self.pending_discontinuity && !self.segments.is_empty());
                if discontinuity {
                    out.push_str("#EXT-X-DISCONTINUITY\n");
                }
                push_map(
                    &mut out,
                    open.map_uri.as_deref(),
                    self.segments.len() == skipped || discontinuity,
                    previous_map,
                );
                out.push_str("#EXT-X-PROGRAM-DATE-TIME:");
                write_program_date_time(&mut out, open.program_date_time_ms);
                out.push('\n');
                for part in &open.parts {
                    push_part(&mut out, part);
                }
            }
        }
        let open_parts = self.open.as_ref().is_some_and(|o| !o.parts.is_empty());
        let next_after_discontinuity = self.pending_discontinuity && !self.segments.is_empty();
        if ll.is_some() && !self.ended && !open_parts && next_after_discontinuity {
            // A new session before its first part (after a takeover, the segment it
            // salvaged is the last): the segment to come follows a discontinuity. Said
            // now, as the first of its lines (the rest are appended after it), so that
            // a player's record of the segment after the last one is in the new
            // discontinuity sequence: hls.js, given an LL playlist that ends with a
            // segment URI, takes that segment itself for the next one, and stops with
            // "discontinuity sequence mismatch" when the next playlist lists it behind
            // an EXT-X-DISCONTINUITY (players_failover.rs, docs/ll-hls.md).
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if let (Some(_), Some(hint), false) = (&ll, &self.preload_hint, self.ended) {
            out.push_str("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"");
            push_sanitized(&mut out, hint, true);
            out.push_str("\"\n");
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }

    /// The multivariant playlist pointing at the media playlist, or `None` while the
    /// bandwidth is unknown (`BANDWIDTH` is mandatory).
    pub fn render_multivariant_playlist(&self, media_playlist_uri: &str) -> Option<String> {
        let bandwidth = self.bandwidth?;
        let mut out = String::with_capacity(160 + media_playlist_uri.len());
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:{}\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-STREAM-INF:BANDWIDTH={}",
            self.version(),
            bandwidth
        );
        if let Some(codecs) = &self.codecs {
            out.push_str(",CODECS=\"");
            push_sanitized(&mut out, codecs, true);
            out.push('"');
        }
        if let Some((width, height)) = self.resolution {
            let _ = write!(out, ",RESOLUTION={width}x{height}");
        }
        if let Some(milli) = self.frame_rate_milli {
            // RFC 8216 §4.3.4.2: "rounded to three decimal places".
            let _ = write!(out, ",FRAME-RATE={}.{:03}", milli / 1000, milli % 1000);
        }
        out.push('\n');
        push_sanitized(&mut out, media_playlist_uri, false);
        out.push('\n');
        Some(out)
    }
}

/// The LL-HLS values a playlist renders, in milliseconds.
struct LowLatency {
    part_target_ms: u64,
    part_hold_back_ms: u64,
    skip_boundary_ms: u64,
    part_window_ms: u64,
}

/// `PART-HOLD-BACK` in Part Target Durations: §4.4.3.8 "MUST be at least twice the Part
/// Target Duration ... SHOULD be at least three times the Part Target Duration".
pub const PART_HOLD_BACK_PARTS: u64 = 3;

/// `CAN-SKIP-UNTIL` (the Skip Boundary) in Target Durations: §4.4.3.8 "The Skip Boundary
/// MUST be at least six times the Target Duration".
pub const SKIP_BOUNDARY_TARGET_DURATIONS: u64 = 6;

/// Segments whose parts are listed, in Target Durations from the end of the playlist:
/// §6.2.2 "EXT-X-PART tags SHOULD be removed from the Playlist after they are greater than
/// three Target Durations from the end of the Playlist".
pub const PART_WINDOW_TARGET_DURATIONS: u64 = 3;

/// Writes `ms` as decimal seconds with three decimals.
fn push_secs(out: &mut String, ms: u64) {
    let _ = write!(out, "{}.{:03}", ms / 1000, ms % 1000);
}

/// `EXT-X-MAP` when the segment's map differs from the previous one's or `force`.
fn push_map(out: &mut String, map: Option<&str>, force: bool, previous: Option<&str>) {
    if let Some(map) = map {
        if force || previous != Some(map) {
            out.push_str("#EXT-X-MAP:URI=\"");
            push_sanitized(out, map, true);
            out.push_str("\"\n");
        }
    }
}

/// One `EXT-X-PART` line.
fn push_part(out: &mut String, part: &PartEntry) {
    out.push_str("#EXT-X-PART:DURATION=");
    push_secs(out, part.duration_ms());
    out.push_str(",URI=\"");
    push_sanitized(out, &part.uri, true);
    out.push('"');
    if part.independent {
        out.push_str(",INDEPENDENT=YES");
    }
    if part.gap {
        out.push_str(",GAP=YES");
    }
    out.push('\n');
}

/// Appends `text` without line breaks (which would end the tag) and, inside a quoted
/// string, without double quotes.
fn push_sanitized(out: &mut String, text: &str, quoted: bool) {
    out.extend(
        text.chars()
            .filter(|&c| c != '\n' && c != '\r' && !(quoted && c == '"')),
    );
}

#[cfg(test)]
mod tests;
