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
    /// Where the DASH period this segment belongs to starts (set by
    /// [`PlaylistState::push_segment`]), so `Period@start` and `presentationTimeOffset`
    /// never change while the period is listed; `None` in a state stored before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<crate::dash::PeriodAnchor>,
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
            start_ticks: Some(cut.start_dts),
            video_frames: Some(cut.video_frames),
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
        if self.duration_secs.is_finite() && self.duration_secs > 0.0 {
            // Float-to-int `as` saturates.
            (self.duration_secs * 1000.0).round() as u64
        } else {
            0
        }
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
    /// The audio sample rate in Hz (DASH `audioSamplingRate`), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_sample_rate: Option<u32>,
}

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
            audio_sample_rate: None,
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
        removed
    }

    /// Appends a segment: assigns it [`PlaylistState::next_sequence`], applies a pending
    /// discontinuity, raises the target duration and the bandwidth if needed, and slides the
    /// window. Returns the segments that left the window (the server deletes their files
    /// after a grace period, so players that just loaded the previous playlist can still
    /// fetch them).
    pub fn push_segment(&mut self, mut entry: SegmentEntry) -> Vec<SegmentEntry> {
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
        entry.period = crate::dash::period_anchor(self.segments.back(), &entry);
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

    /// The next pushed segment follows an `EXT-X-DISCONTINUITY`.
    pub fn mark_discontinuity(&mut self) {
        self.pending_discontinuity = true;
    }

    /// The stream has ended: the playlist gets `EXT-X-ENDLIST`.
    pub fn end(&mut self) {
        self.ended = true;
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
        let per_segment: usize = self
            .segments
            .iter()
            .map(|s| 110 + s.uri.len() + s.map_uri.as_ref().map_or(0, |m| m.len() + 20))
            .sum();
        let mut out = String::with_capacity(200 + per_segment);
        // Writing to a String cannot fail; results are ignored below.
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:{}\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:{}\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:{}\n#EXT-X-INDEPENDENT-SEGMENTS\n",
            self.version(),
            self.target_duration.max(1),
            self.media_sequence,
            self.discontinuity_sequence,
        );
        let mut previous_map: Option<&str> = None;
        for (index, segment) in self.segments.iter().enumerate() {
            if segment.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if let Some(map) = segment.map_uri.as_deref() {
                if index == 0 || segment.discontinuity || previous_map != Some(map) {
                    out.push_str("#EXT-X-MAP:URI=\"");
                    push_sanitized(&mut out, map, true);
                    out.push_str("\"\n");
                }
            }
            previous_map = segment.map_uri.as_deref();
            out.push_str("#EXT-X-PROGRAM-DATE-TIME:");
            write_program_date_time(&mut out, segment.program_date_time_ms);
            let ms = segment.duration_ms();
            let _ = write!(out, "\n#EXTINF:{}.{:03},\n", ms / 1000, ms % 1000);
            push_sanitized(&mut out, &segment.uri, false);
            out.push('\n');
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
        out.push('\n');
        push_sanitized(&mut out, media_playlist_uri, false);
        out.push('\n');
        Some(out)
    }
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
