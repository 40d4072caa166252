//! Cutting a live frame stream into segments.

use std::collections::VecDeque;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tidegate_media::{AudioConfig, Frame, MediaEvent, TrackKind, TrackRun, VideoConfig, TIMESCALE};

use crate::mux::{self, Muxer};
use crate::playlist::FrameTally;
use crate::{Container, PackagerError};

/// Ticks in one second.
const SECOND: u64 = TIMESCALE as u64;

/// Default target segment duration: 2 s (the product's `--segment-duration`).
pub const DEFAULT_TARGET_DURATION: u64 = 2 * SECOND;

/// Default hard cap on one segment's duration: 30 s. A video stream whose keyframes are
/// further apart than this is cut anyway (see [`CutSegment::forced`]).
pub const DEFAULT_MAX_SEGMENT_DURATION: u64 = 30 * SECOND;

/// Hard cap on the payload bytes buffered for one segment (64 MiB, about 30 s at 17 Mbit/s);
/// past it the segment is cut anyway rather than grow.
pub const MAX_SEGMENT_BYTES: u64 = 64 << 20;

/// Hard cap on the frames buffered for one segment (30 s of 240 fps video plus 48 kHz AAC
/// comes to about 8,600); past it the segment is cut anyway rather than grow.
pub const MAX_SEGMENT_FRAMES: usize = 16_384;

/// How far (in ticks, 0.5 s) the stream may run past a closed segment's last frame while the
/// segmenter waits for the next frame of one of its tracks, whose dts ends that track's last
/// sample exactly. Past it, the nominal frame duration is used instead.
pub const END_DTS_WAIT: i64 = (TIMESCALE / 2) as i64;

/// Video frame duration assumed before two frames have been seen (30 fps).
const DEFAULT_VIDEO_FRAME_TICKS: u64 = SECOND / 30;

/// Audio frame duration assumed when the configuration gives no usable sample rate
/// (1024 samples at 48 kHz).
const DEFAULT_AUDIO_FRAME_TICKS: u64 = 1920;

/// Longest frame interval that counts towards the average video frame duration (1 s);
/// longer gaps are stalls, not frame rate.
const MAX_VIDEO_FRAME_TICKS: u64 = SECOND;

/// Largest step back in a track's dts that is repaired by moving the frame forward instead of
/// dropping it. Publishers under load (GStreamer's flvmux, OBS) repeat a timestamp now and
/// then; two samples with one dts would give a zero duration that decoders reject.
pub const MAX_NUDGE_TICKS: i64 = (SECOND / 10) as i64;

/// How a [`Segmenter`] cuts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SegmenterConfig {
    /// The container segments are muxed into.
    pub container: Container,
    /// Target segment duration in 90 kHz ticks: a segment is cut at the first video keyframe
    /// at or past it (audio-only streams: the first audio frame at or past it). At least 1.
    pub target_duration: u64,
    /// Hard cap on a segment's duration in 90 kHz ticks: a segment reaching it is cut even
    /// without a keyframe (flagged [`CutSegment::forced`]). Raised to `target_duration` if
    /// below it.
    pub max_segment_duration: u64,
    /// LL-HLS: cut each fMP4 segment into parts (CMAF chunks) of at most this many 90 kHz
    /// ticks, emitted as [`SegmenterOutput::Part`] as soon as they are complete; clamped to
    /// [`MIN_PART_DURATION`](crate::MIN_PART_DURATION)..=[`MAX_PART_DURATION`](crate::MAX_PART_DURATION).
    /// `None` (the default): no parts, segments exactly as without LL-HLS. Ignored for
    /// MPEG-TS.
    pub part_duration: Option<u64>,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        SegmenterConfig {
            container: Container::Fmp4,
            target_duration: DEFAULT_TARGET_DURATION,
            max_segment_duration: DEFAULT_MAX_SEGMENT_DURATION,
            part_duration: None,
        }
    }
}

/// What a [`Segmenter`] produces, in the order the server must apply it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmenterOutput {
    /// A new init segment (fMP4 only) that the following segments need; emitted before the
    /// first segment and whenever a codec configuration changes.
    Init {
        /// The `ftyp`+`moov` bytes.
        data: Bytes,
        /// Counts the init segments of this segmenter from 0.
        id: u32,
    },
    /// A finished media segment. With parts, its bytes are its parts' bytes concatenated,
    /// and it follows its last [`SegmenterOutput::Part`].
    Segment(CutSegment),
    /// LL-HLS: a finished part of the segment being built (only with
    /// [`SegmenterConfig::part_duration`]).
    Part(CutPart),
}

/// One finished part (CMAF chunk: `moof`+`mdat`, the first of a segment with `styp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutPart {
    /// The chunk.
    pub data: Bytes,
    /// Index of the part in its segment, from 0.
    pub index: u32,
    /// Offset of the part's first byte in its segment.
    pub offset: u64,
    /// Duration in 90 kHz ticks (video track when present), parts of a segment tiling it.
    pub duration: u64,
    /// The dts of the part's first frame.
    pub start_dts: i64,
    /// The part begins with a video keyframe (always true for audio-only streams):
    /// `INDEPENDENT=YES`.
    pub independent: bool,
    /// Wallclock of the segment's first frame, Unix milliseconds (the same for every part
    /// of a segment: `EXT-X-PROGRAM-DATE-TIME` of the open segment).
    pub segment_program_date_time_ms: i64,
    /// The [`SegmenterOutput::Init`] id this part needs.
    pub init_id: Option<u32>,
    /// The segment this part opens follows a discontinuity (first part only).
    pub discontinuity: bool,
    /// The segment's last part: its [`SegmenterOutput::Segment`] comes next, and the part
    /// after this one is the next segment's first (the preload hint must say so: a hint
    /// for index + 1 names a part that never exists).
    pub last: bool,
}

/// One finished media segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutSegment {
    /// The muxed segment.
    pub data: Bytes,
    /// Duration in 90 kHz ticks: from the first to the end of the last frame of the video
    /// track (audio track when there is no video), so consecutive durations tile exactly.
    pub duration: u64,
    /// The dts of the segment's first frame (video when present).
    pub start_dts: i64,
    /// Wallclock of `start_dts`, Unix milliseconds (for `EXT-X-PROGRAM-DATE-TIME`).
    pub program_date_time_ms: i64,
    /// The [`SegmenterOutput::Init`] id this segment needs (`None` for MPEG-TS).
    pub init_id: Option<u32>,
    /// The codec configuration changed or the timeline jumped right before this segment.
    pub discontinuity: bool,
    /// The dts of the video keyframe that closed this segment (the first frame of the next
    /// one), for latency metrics; `None` when something else closed it.
    pub keyframe_dts: Option<i64>,
    /// The segment was cut because it reached a size or duration cap, not at a keyframe; the
    /// next segment of a video stream may then not begin with a keyframe.
    pub forced: bool,
    /// `data.len()`.
    pub bytes: u64,
    /// Video frames in the segment.
    pub video_frames: u32,
    /// Audio frames in the segment.
    pub audio_frames: u32,
    /// The segment's regular video frame intervals (see [`regular_intervals`]): their
    /// count and their ticks, for the frame rate; a timeline jump is not one of them.
    pub video_cadence: FrameCadence,
    /// LL-HLS: the segment's parts as (offset, length, duration in ticks, independent), in
    /// order, covering `data` exactly; empty without parts.
    pub parts: Vec<PartSpan>,
}

/// A segment's regular video frame intervals (see [`regular_intervals`]): how many, and
/// their ticks (a segment lasts far less than the 13 h `u32` ticks hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameCadence {
    /// Regular intervals counted.
    pub intervals: u32,
    /// Their total duration in 90 kHz ticks.
    pub ticks: u32,
}

impl FrameCadence {
    /// Both counts together.
    fn plus(self, other: FrameCadence) -> FrameCadence {
        FrameCadence {
            intervals: self.intervals.saturating_add(other.intervals),
            ticks: self.ticks.saturating_add(other.ticks),
        }
    }

    /// As a frame-rate tally (`None` without a regular interval).
    pub fn tally(self) -> Option<FrameTally> {
        (self.intervals > 0 && self.ticks > 0).then_some(FrameTally {
            frames: u64::from(self.intervals),
            ticks: u64::from(self.ticks),
        })
    }
}

/// Where one part lies in its segment's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartSpan {
    /// Offset of the part's first byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Duration in 90 kHz ticks.
    pub duration: u64,
    /// Begins with a keyframe.
    pub independent: bool,
}

/// Counters of what a [`Segmenter`] did with its input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmenterStats {
    /// Segments emitted.
    pub segments: u64,
    /// Init segments emitted.
    pub inits: u64,
    /// Frames dropped while waiting for a video keyframe (stream start, codec change).
    pub dropped_before_keyframe: u64,
    /// Frames dropped because their track had no configuration yet.
    pub dropped_without_config: u64,
    /// Frames dropped because their dts went backwards by more than [`MAX_NUDGE_TICKS`].
    pub dropped_backwards: u64,
    /// Frames whose dts repeated (or stepped back a little) and were moved just past their
    /// predecessor, so every sample keeps a positive duration.
    pub nudged: u64,
    /// Segments cut at a size or duration cap instead of a keyframe.
    pub forced_cuts: u64,
    /// Segments lost because the muxer refused them.
    pub mux_errors: u64,
    /// `TimestampJump` events seen.
    pub timestamp_jumps: u64,
}

/// The segment being filled.
#[derive(Debug, Default)]
struct OpenSegment {
    video: Vec<Frame>,
    audio: Vec<Frame>,
    bytes: u64,
    discontinuity: bool,
}

impl OpenSegment {
    fn is_empty(&self) -> bool {
        self.video.is_empty() && self.audio.is_empty()
    }

    fn frame_count(&self) -> usize {
        self.video.len().saturating_add(self.audio.len())
    }

    /// The segment's timeline origin: its first video frame, else its first audio frame.
    fn start_dts(&self) -> Option<i64> {
        self.video.first().or(self.audio.first()).map(|f| f.dts)
    }

    /// The largest dts in the segment.
    fn last_dts(&self) -> Option<i64> {
        match (self.video.last(), self.audio.last()) {
            (Some(v), Some(a)) => Some(v.dts.max(a.dts)),
            (Some(f), None) | (None, Some(f)) => Some(f.dts),
            (None, None) => None,
        }
    }
}

/// A cut segment waiting for the next frame of each of its tracks (whose dts ends the
/// track's last sample) before it is muxed.
#[derive(Debug)]
struct ClosingSegment {
    frames: OpenSegment,
    video_config: Option<VideoConfig>,
    audio_config: Option<AudioConfig>,
    video_end: Option<i64>,
    audio_end: Option<i64>,
    keyframe_dts: Option<i64>,
    forced: bool,
    /// With parts: these frames are one part; `true` when it is the segment's last.
    final_part: bool,
}

/// With parts: the segment whose parts are being emitted.
#[derive(Debug, Default)]
struct PartedSegment {
    parts: Vec<(Bytes, PartSpan)>,
    start_dts: i64,
    program_date_time_ms: i64,
    init_id: Option<u32>,
    discontinuity: bool,
    video_frames: u32,
    audio_frames: u32,
    video_cadence: FrameCadence,
    /// A part was lost to a muxer error: the segment is not emitted.
    failed: bool,
}

/// Tolerance (1 ms in ticks) on a part's duration: timestamps in milliseconds (RTMP) make
/// frame intervals jitter by a tick of 90.
const PART_JITTER_TICKS: i64 = 90;

impl ClosingSegment {
    fn ends_known(&self) -> bool {
        (self.frames.video.is_empty() || self.video_end.is_some())
            && (self.frames.audio.is_empty() || self.audio_end.is_some())
    }
}

/// Cuts one live publish session's media into segments. Sans-IO: the caller owns the
/// clock and the storage.
///
/// Driver call order:
/// 1. [`Segmenter::new`] when a publish session starts;
/// 2. for every [`MediaEvent`] of the session, in order: [`Segmenter::handle_event`] with
///    the wallclock at which it arrived, then [`Segmenter::poll_output`] until it returns
///    `None` (an `Err` from `handle_event` is for logging; the segmenter stays usable);
/// 3. when the publisher is gone: [`Segmenter::finish`], then drain `poll_output` once more.
///
/// Outputs come strictly in order: an [`SegmenterOutput::Init`] precedes every segment that
/// needs it. A segment is emitted once the next frame of each of its tracks has arrived
/// (so the last sample's duration is exact), at most [`END_DTS_WAIT`] after its cut.
pub struct Segmenter {
    config: SegmenterConfig,
    muxer: Box<dyn Muxer>,
    /// Configurations of the open segment.
    video: Option<VideoConfig>,
    audio: Option<AudioConfig>,
    /// A video configuration waiting for its first keyframe to take effect.
    pending_video: Option<VideoConfig>,
    /// The configuration the muxer was last given successfully.
    muxed: Option<(Option<VideoConfig>, Option<AudioConfig>)>,
    /// The id of the last emitted init segment.
    init_id: Option<u32>,
    next_init_id: u32,
    open: OpenSegment,
    closing: Option<ClosingSegment>,
    /// The stream has video and the open segment must begin with a keyframe: frames are
    /// dropped until one arrives.
    need_keyframe: bool,
    /// The segment opened after the next cut gets a discontinuity.
    discontinuity_next: bool,
    /// A segment has been cut in this session.
    started: bool,
    last_video_dts: Option<i64>,
    last_audio_dts: Option<i64>,
    video_interval_sum: u64,
    video_interval_count: u64,
    /// (dts, wallclock ms) of the first frame, the PDT anchor.
    anchor: Option<(i64, i64)>,
    sequence: u32,
    /// With parts: where the part being filled begins in `open` (video, audio indices).
    part_from: (usize, usize),
    /// With parts: the segment whose parts are being emitted.
    parted: Option<PartedSegment>,
    finished: bool,
    outputs: VecDeque<SegmenterOutput>,
    stats: SegmenterStats,
    error: Option<PackagerError>,
}

impl Segmenter {
    /// A segmenter for one publish session, muxing into `config.container`.
    pub fn new(config: SegmenterConfig) -> Self {
        let muxer = mux::for_container(config.container);
        Self::with_muxer(config, muxer)
    }

    pub(crate) fn with_muxer(mut config: SegmenterConfig, muxer: Box<dyn Muxer>) -> Self {
        config.target_duration = config.target_duration.max(1);
        config.max_segment_duration = config.max_segment_duration.max(config.target_duration);
        config.part_duration = config
            .part_duration
            .filter(|_| config.container == Container::Fmp4)
            .map(|p| p.clamp(crate::MIN_PART_DURATION, crate::MAX_PART_DURATION));
        Segmenter {
            config,
            muxer,
            video: None,
            audio: None,
            pending_video: None,
            muxed: None,
            init_id: None,
            next_init_id: 0,
            open: OpenSegment::default(),
            closing: None,
            need_keyframe: false,
            discontinuity_next: false,
            started: false,
            last_video_dts: None,
            last_audio_dts: None,
            video_interval_sum: 0,
            video_interval_count: 0,
            anchor: None,
            sequence: 1,
            part_from: (0, 0),
            parted: None,
            finished: false,
            outputs: VecDeque::new(),
            stats: SegmenterStats::default(),
            error: None,
        }
    }

    /// The configuration in force (after clamping).
    pub fn config(&self) -> &SegmenterConfig {
        &self.config
    }

    /// Counters of what the segmenter did so far.
    pub fn stats(&self) -> SegmenterStats {
        self.stats
    }

    /// The RFC 6381 `CODECS` value of the current tracks (video first), e.g.
    /// `avc1.64001f,mp4a.40.2`; `None` before any configuration.
    pub fn codecs(&self) -> Option<String> {
        let video = self.pending_video.as_ref().or(self.video.as_ref());
        let parts: Vec<&str> = video
            .map(|v| v.codec_string.as_str())
            .into_iter()
            .chain(self.audio.as_ref().map(|a| a.codec_string.as_str()))
            .filter(|s| !s.is_empty())
            .collect();
        (!parts.is_empty()).then(|| parts.join(","))
    }

    /// The audio track's sample rate in Hz, when there is one.
    pub fn audio_sample_rate(&self) -> Option<u32> {
        self.audio
            .as_ref()
            .map(|a| a.sample_rate)
            .filter(|&rate| rate > 0)
    }

    /// The current video resolution, when known.
    pub fn resolution(&self) -> Option<(u32, u32)> {
        let video = self.pending_video.as_ref().or(self.video.as_ref())?;
        (video.width > 0 && video.height > 0).then_some((video.width, video.height))
    }

    /// Feeds one event of the session; `wallclock_ms` is the server's Unix time in ms when
    /// it arrived (used once, for the first frame, to anchor program date times).
    ///
    /// An `Err` reports a dropped frame or a segment the muxer refused; the segmenter stays
    /// consistent and usable. Events after [`Segmenter::finish`] are ignored.
    pub fn handle_event(
        &mut self,
        event: MediaEvent,
        wallclock_ms: i64,
    ) -> Result<(), PackagerError> {
        if self.finished {
            return Ok(());
        }
        match event {
            MediaEvent::VideoConfig(config) => self.on_video_config(config),
            MediaEvent::AudioConfig(config) => self.on_audio_config(config),
            MediaEvent::Frame(frame) => self.on_frame(frame, wallclock_ms)?,
            MediaEvent::TimestampJump { .. } => {
                self.stats.timestamp_jumps = self.stats.timestamp_jumps.saturating_add(1);
                self.flag_discontinuity();
            }
            // Nothing to package: these are for health and metrics.
            MediaEvent::VideoDeclared | MediaEvent::VideoWithoutConfig => {}
        }
        match self.error.take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// The publisher is gone: closes and emits the segment in progress (with nominal
    /// durations for last samples), so viewers lose nothing the encoder sent. Idempotent.
    pub fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finish_closing();
        self.cut(None, false);
        self.finish_closing();
        self.finished = true;
    }

    /// The next output, if any. Call until `None` after every input.
    pub fn poll_output(&mut self) -> Option<SegmenterOutput> {
        self.outputs.pop_front()
    }

    /// The error of a segment the muxer refused during [`Segmenter::finish`], if any.
    pub fn take_error(&mut self) -> Option<PackagerError> {
        self.error.take()
    }

    fn flag_discontinuity(&mut self) {
        if self.open.is_empty() {
            self.open.discontinuity = true;
        } else {
            self.discontinuity_next = true;
        }
    }

    fn on_video_config(&mut self, config: VideoConfig) {
        let current = self.pending_video.as_ref().or(self.video.as_ref());
        if current == Some(&config) {
            return;
        }
        if !self.open.video.is_empty() {
            // Applied at the next keyframe, which closes the open segment.
            self.pending_video = Some(config);
            return;
        }
        if !self.open.audio.is_empty() {
            if self.started {
                // A live audio-only stream gains video: audio keeps flowing into the open
                // segment until the first video keyframe.
                self.pending_video = Some(config);
                return;
            }
            // Start-up with audio ahead of the video configuration: restart cleanly at the
            // first video keyframe.
            let dropped = self.open.audio.len() as u64;
            self.stats.dropped_before_keyframe =
                self.stats.dropped_before_keyframe.saturating_add(dropped);
            self.open.audio.clear();
            self.open.bytes = 0;
        }
        self.pending_video = None;
        self.video = Some(config);
        self.need_keyframe = true;
        if self.started {
            self.open.discontinuity = true;
        }
    }

    fn on_audio_config(&mut self, config: AudioConfig) {
        if self.audio.as_ref() == Some(&config) {
            return;
        }
        if !self.open.audio.is_empty() {
            // Frames of the old configuration end here.
            self.cut(None, false);
            if self.video.is_some() || self.pending_video.is_some() {
                self.need_keyframe = true;
            }
        }
        self.audio = Some(config);
        if self.started {
            // The open segment (possibly holding video already) needs the new init.
            self.open.discontinuity = true;
        }
    }

    fn on_frame(&mut self, mut frame: Frame, wallclock_ms: i64) -> Result<(), PackagerError> {
        let (last, has_config) = match frame.track {
            TrackKind::Video => (
                self.last_video_dts,
                self.video.is_some() || self.pending_video.is_some(),
            ),
            TrackKind::Audio => (self.last_audio_dts, self.audio.is_some()),
        };
        if let Some(last) = last {
            if frame.dts <= last {
                if last.saturating_sub(frame.dts) > MAX_NUDGE_TICKS {
                    self.stats.dropped_backwards = self.stats.dropped_backwards.saturating_add(1);
                    return Err(PackagerError::DtsBackwards {
                        track: frame.track,
                        dts: frame.dts,
                        last,
                    });
                }
                // Audio frames are consecutive: a repeated timestamp means "the next frame".
                // Video only needs to be strictly after its predecessor.
                let step = match frame.track {
                    TrackKind::Audio => self
                        .audio
                        .as_ref()
                        .and_then(|a| nominal_audio_ticks(a.samples_per_frame, a.sample_rate))
                        .and_then(|t| i64::try_from(t).ok())
                        .unwrap_or(1),
                    TrackKind::Video => 1,
                };
                let shift = last.saturating_add(step).saturating_sub(frame.dts);
                frame.dts = frame.dts.saturating_add(shift);
                frame.pts = frame.pts.saturating_add(shift).max(frame.dts);
                self.stats.nudged = self.stats.nudged.saturating_add(1);
            }
        }
        if !has_config {
            self.stats.dropped_without_config = self.stats.dropped_without_config.saturating_add(1);
            return Ok(());
        }
        match frame.track {
            TrackKind::Video => {
                if let Some(last) = last {
                    let interval = frame.dts.abs_diff(last);
                    if interval > 0 && interval <= MAX_VIDEO_FRAME_TICKS {
                        self.video_interval_sum = self.video_interval_sum.saturating_add(interval);
                        self.video_interval_count = self.video_interval_count.saturating_add(1);
                    }
                }
                self.last_video_dts = Some(frame.dts);
            }
            TrackKind::Audio => self.last_audio_dts = Some(frame.dts),
        }

        // A closed segment must not wait forever for a track that went quiet.
        if let Some(closing) = &self.closing {
            let waited_from = closing.frames.last_dts();
            debug_assert!(waited_from.is_some(), "a closed segment holds frames");
            let waited_from = waited_from.unwrap_or(frame.dts);
            if frame.dts.saturating_sub(waited_from) > END_DTS_WAIT {
                self.finish_closing();
            }
        }

        match frame.track {
            TrackKind::Video => {
                if self.pending_video.is_some() {
                    if !frame.keyframe {
                        self.drop_before_keyframe();
                        return Ok(());
                    }
                    self.cut(Some(frame.dts), false);
                    if let Some(config) = self.pending_video.take() {
                        if self.video.as_ref() != Some(&config) {
                            self.video = Some(config);
                            if self.started {
                                self.open.discontinuity = true;
                            }
                        }
                    }
                    self.need_keyframe = false;
                } else if self.need_keyframe {
                    if !frame.keyframe {
                        self.drop_before_keyframe();
                        return Ok(());
                    }
                    self.need_keyframe = false;
                } else if frame.keyframe
                    && self.elapsed(frame.dts) >= Some(self.config.target_duration)
                {
                    self.cut(Some(frame.dts), false);
                }
            }
            TrackKind::Audio => {
                if self.video.is_some() && self.need_keyframe {
                    self.drop_before_keyframe();
                    return Ok(());
                }
                if self.video.is_none()
                    && self.elapsed(frame.dts) >= Some(self.config.target_duration)
                {
                    self.cut(None, false);
                }
            }
        }
        self.maybe_cut_part(&frame);
        self.append(frame, wallclock_ms);

        let over_cap = self.open.bytes > MAX_SEGMENT_BYTES
            || self.open.frame_count() >= MAX_SEGMENT_FRAMES
            || self.open_duration() >= Some(self.config.max_segment_duration);
        if over_cap {
            self.stats.forced_cuts = self.stats.forced_cuts.saturating_add(1);
            self.cut(None, true);
        }
        Ok(())
    }

    /// With parts: closes the part being filled when `frame` (about to be appended) would
    /// take it past the part duration. Parts are cut at video frames (audio frames when there
    /// is no video).
    fn maybe_cut_part(&mut self, frame: &Frame) {
        let Some(part_duration) = self.config.part_duration else {
            return;
        };
        let has_video = self.video.is_some();
        let drives = match frame.track {
            TrackKind::Video => true,
            TrackKind::Audio => !has_video,
        };
        if !drives {
            return;
        }
        let (part_start, nominal) = if has_video {
            (
                self.open.video.get(self.part_from.0).map(|f| f.dts),
                i64::try_from(self.nominal_video_ticks()).unwrap_or(i64::MAX),
            )
        } else {
            let nominal = self
                .audio
                .as_ref()
                .and_then(|a| nominal_audio_ticks(a.samples_per_frame, a.sample_rate))
                .unwrap_or(DEFAULT_AUDIO_FRAME_TICKS);
            (
                self.open.audio.get(self.part_from.1).map(|f| f.dts),
                i64::try_from(nominal).unwrap_or(i64::MAX),
            )
        };
        let Some(part_start) = part_start else {
            return;
        };
        let limit = i64::try_from(part_duration)
            .unwrap_or(i64::MAX)
            .saturating_add(PART_JITTER_TICKS);
        // The part would end at this frame's dts plus one more frame if it took it.
        if frame.dts.saturating_sub(part_start).saturating_add(nominal) > limit {
            self.cut_part(frame.dts, frame.track);
        }
    }

    /// Closes the part being filled (not the segment): its frames wait, as a closing
    /// segment does, for the next frame of each of its tracks.
    fn cut_part(&mut self, next_dts: i64, next_track: TrackKind) {
        let (from_video, from_audio) = self.part_from;
        let video = self
            .open
            .video
            .get(from_video..)
            .unwrap_or_default()
            .to_vec();
        let audio = self
            .open
            .audio
            .get(from_audio..)
            .unwrap_or_default()
            .to_vec();
        if video.is_empty() && audio.is_empty() {
            return;
        }
        self.finish_closing();
        self.part_from = (self.open.video.len(), self.open.audio.len());
        let first = from_video == 0 && from_audio == 0;
        let frames = OpenSegment {
            bytes: video
                .iter()
                .chain(&audio)
                .map(|f| f.data.len() as u64)
                .sum(),
            discontinuity: first && self.open.discontinuity,
            video,
            audio,
        };
        let closing = ClosingSegment {
            video_end: (next_track == TrackKind::Video && !frames.video.is_empty())
                .then_some(next_dts),
            audio_end: (next_track == TrackKind::Audio && !frames.audio.is_empty())
                .then_some(next_dts),
            frames,
            video_config: self.video.clone(),
            audio_config: self.audio.clone(),
            keyframe_dts: None,
            forced: false,
            final_part: false,
        };
        if closing.ends_known() {
            self.emit(closing);
        } else {
            self.closing = Some(closing);
        }
    }

    fn drop_before_keyframe(&mut self) {
        self.stats.dropped_before_keyframe = self.stats.dropped_before_keyframe.saturating_add(1);
    }

    /// Ticks from the open segment's start to `dts`.
    fn elapsed(&self, dts: i64) -> Option<u64> {
        let start = self.open.start_dts()?;
        Some(u64::try_from(dts.saturating_sub(start)).unwrap_or(0))
    }

    fn open_duration(&self) -> Option<u64> {
        self.elapsed(self.open.last_dts()?)
    }

    fn append(&mut self, frame: Frame, wallclock_ms: i64) {
        if self.anchor.is_none() {
            self.anchor = Some((frame.dts, wallclock_ms));
        }
        if let Some(closing) = &mut self.closing {
            match frame.track {
                TrackKind::Video if !closing.frames.video.is_empty() => {
                    closing.video_end.get_or_insert(frame.dts);
                }
                TrackKind::Audio if !closing.frames.audio.is_empty() => {
                    closing.audio_end.get_or_insert(frame.dts);
                }
                _ => {}
            }
            if closing.ends_known() {
                self.finish_closing();
            }
        }
        self.open.bytes = self.open.bytes.saturating_add(frame.data.len() as u64);
        match frame.track {
            TrackKind::Video => self.open.video.push(frame),
            TrackKind::Audio => self.open.audio.push(frame),
        }
    }

    /// Closes the open segment (if it holds frames); it is muxed once the next frame of
    /// each of its tracks is known. `keyframe_dts`: the video keyframe that closed it.
    fn cut(&mut self, keyframe_dts: Option<i64>, forced: bool) {
        if self.open.is_empty() {
            return;
        }
        // At most one segment waits for its end dts.
        self.finish_closing();
        let mut frames = std::mem::take(&mut self.open);
        self.open.discontinuity = std::mem::take(&mut self.discontinuity_next);
        self.started = true;
        let part_from = std::mem::take(&mut self.part_from);
        let parted = self.config.part_duration.is_some();
        if parted && part_from != (0, 0) {
            // The segment's last part: the frames since the previous part.
            frames.video = frames.video.split_off(part_from.0.min(frames.video.len()));
            frames.audio = frames.audio.split_off(part_from.1.min(frames.audio.len()));
            frames.discontinuity = false;
            frames.bytes = frames
                .video
                .iter()
                .chain(&frames.audio)
                .map(|f| f.data.len() as u64)
                .sum();
            if frames.is_empty() {
                // Nothing since the last part (cannot happen: a part is cut right before a
                // frame is appended): the segment ends with the parts emitted so far.
                self.finish_parted_segment(keyframe_dts, forced);
                return;
            }
        }
        let closing = ClosingSegment {
            video_end: keyframe_dts.filter(|_| !frames.video.is_empty()),
            audio_end: None,
            frames,
            video_config: self.video.clone(),
            audio_config: self.audio.clone(),
            keyframe_dts,
            forced,
            final_part: parted,
        };
        if closing.ends_known() {
            self.emit(closing);
        } else {
            self.closing = Some(closing);
        }
    }

    /// Emits the waiting closed segment, with nominal durations for unknown ends.
    fn finish_closing(&mut self) {
        if let Some(closing) = self.closing.take() {
            self.emit(closing);
        }
    }

    fn nominal_video_ticks(&self) -> u64 {
        self.video_interval_sum
            .checked_div(self.video_interval_count)
            .map_or(DEFAULT_VIDEO_FRAME_TICKS, |avg| {
                avg.clamp(1, MAX_VIDEO_FRAME_TICKS)
            })
    }

    fn emit(&mut self, closing: ClosingSegment) {
        let ClosingSegment {
            frames,
            video_config,
            audio_config,
            video_end,
            audio_end,
            keyframe_dts,
            forced,
            final_part,
        } = closing;
        let parted = self.config.part_duration.is_some();

        let video_nominal = i64::try_from(self.nominal_video_ticks()).unwrap_or(i64::MAX);
        let audio_nominal = audio_config
            .as_ref()
            .and_then(|a| nominal_audio_ticks(a.samples_per_frame, a.sample_rate))
            .unwrap_or(DEFAULT_AUDIO_FRAME_TICKS);
        let audio_nominal = i64::try_from(audio_nominal).unwrap_or(i64::MAX);
        let video_cadence = regular_intervals(&frames.video, video_end, video_nominal);
        let video_end = track_end(&frames.video, video_end, video_nominal);
        let audio_end = track_end(&frames.audio, audio_end, audio_nominal);

        let config = (video_config, audio_config);
        if self.muxed.as_ref() != Some(&config) {
            match self.muxer.configure(config.0.as_ref(), config.1.as_ref()) {
                Ok(init) => {
                    self.init_id = None;
                    if let Some(data) = init {
                        let id = self.next_init_id;
                        self.next_init_id = self.next_init_id.wrapping_add(1);
                        self.init_id = Some(id);
                        self.stats.inits = self.stats.inits.saturating_add(1);
                        self.outputs.push_back(SegmenterOutput::Init { data, id });
                    }
                    self.muxed = Some(config);
                }
                Err(error) => {
                    self.muxed = None;
                    self.fail(error);
                    return;
                }
            }
        }

        let mut runs = Vec::with_capacity(2);
        if let (Some(first), Some(end)) = (frames.video.first(), video_end) {
            runs.push(TrackRun {
                track: TrackKind::Video,
                frames: &frames.video,
                end_dts: end.max(first.dts),
            });
        }
        if let (Some(first), Some(end)) = (frames.audio.first(), audio_end) {
            runs.push(TrackRun {
                track: TrackKind::Audio,
                frames: &frames.audio,
                end_dts: end.max(first.dts),
            });
        }
        let (start_dts, end_dts) = match (
            frames.video.first(),
            video_end,
            frames.audio.first(),
            audio_end,
        ) {
            (Some(first), Some(end), _, _) | (None, _, Some(first), Some(end)) => (first.dts, end),
            _ => {
                // `cut` closes only a segment with frames, and a track with frames has an end.
                debug_assert!(false, "a closed segment without frames or end");
                return;
            }
        };
        // Each track's dts only grows within a session (`on_frame` nudges or drops the
        // others) and a track ends at or after its last frame.
        debug_assert!(end_dts >= start_dts, "segment ends before it starts");

        let sequence = self.sequence;
        self.sequence = self.sequence.wrapping_add(1);
        if parted {
            self.emit_part(&frames, &runs, sequence, (start_dts, end_dts), final_part);
            if let Some(segment) = &mut self.parted {
                segment.video_cadence = segment.video_cadence.plus(video_cadence);
            }
            if final_part {
                self.finish_parted_segment(keyframe_dts, forced);
            }
            return;
        }
        let data = match self.muxer.segment(sequence, &runs) {
            Ok(data) => data,
            Err(error) => {
                self.fail(error);
                return;
            }
        };
        let program_date_time_ms = self.program_date_time_ms(start_dts);
        self.stats.segments = self.stats.segments.saturating_add(1);
        self.outputs.push_back(SegmenterOutput::Segment(CutSegment {
            bytes: data.len() as u64,
            data,
            duration: u64::try_from(end_dts.saturating_sub(start_dts)).unwrap_or(0),
            start_dts,
            program_date_time_ms,
            init_id: self.init_id,
            discontinuity: frames.discontinuity,
            keyframe_dts,
            forced,
            video_frames: u32::try_from(frames.video.len()).unwrap_or(u32::MAX),
            audio_frames: u32::try_from(frames.audio.len()).unwrap_or(u32::MAX),
            video_cadence,
            parts: Vec::new(),
        }));
    }

    /// The wallclock of `dts`, Unix milliseconds, from the anchor (the first frame).
    fn program_date_time_ms(&self, dts: i64) -> i64 {
        // The first frame appended sets the anchor, and every segment holds frames.
        debug_assert!(self.anchor.is_some(), "a segment before the first frame");
        match self.anchor {
            Some((anchor_dts, anchor_ms)) => {
                let ticks = dts.saturating_sub(anchor_dts);
                anchor_ms.saturating_add(ticks.div_euclid(i64::from(TIMESCALE / 1000)))
            }
            None => 0,
        }
    }

    /// Muxes and emits one part of the segment being built (its `last`, when the segment
    /// is finished right after).
    fn emit_part(
        &mut self,
        frames: &OpenSegment,
        runs: &[TrackRun<'_>],
        sequence: u32,
        (start_dts, end_dts): (i64, i64),
        last: bool,
    ) {
        let program_date_time_ms = self.program_date_time_ms(start_dts);
        let init_id = self.init_id;
        let segment = self.parted.get_or_insert_with(|| PartedSegment {
            start_dts,
            program_date_time_ms,
            init_id,
            discontinuity: frames.discontinuity,
            ..PartedSegment::default()
        });
        let index = u32::try_from(segment.parts.len()).unwrap_or(u32::MAX);
        let data = match self.muxer.chunk(sequence, runs, index == 0) {
            Ok(data) => data,
            Err(error) => {
                segment.failed = true;
                self.fail(error);
                return;
            }
        };
        let offset: u64 = segment.parts.iter().map(|(_, span)| span.len).sum();
        let independent = match frames.video.first() {
            Some(first) => first.keyframe,
            None => !frames.audio.is_empty(),
        };
        let duration = u64::try_from(end_dts.saturating_sub(start_dts)).unwrap_or(0);
        let span = PartSpan {
            offset,
            len: data.len() as u64,
            duration,
            independent,
        };
        segment.parts.push((data.clone(), span));
        segment.video_frames = segment
            .video_frames
            .saturating_add(u32::try_from(frames.video.len()).unwrap_or(u32::MAX));
        segment.audio_frames = segment
            .audio_frames
            .saturating_add(u32::try_from(frames.audio.len()).unwrap_or(u32::MAX));
        let part = CutPart {
            data,
            index,
            offset,
            duration,
            start_dts,
            independent,
            segment_program_date_time_ms: segment.program_date_time_ms,
            init_id: segment.init_id,
            discontinuity: index == 0 && segment.discontinuity,
            last,
        };
        self.outputs.push_back(SegmenterOutput::Part(part));
    }

    /// Emits the segment made of the parts emitted since the previous one: their bytes
    /// concatenated.
    fn finish_parted_segment(&mut self, keyframe_dts: Option<i64>, forced: bool) {
        let Some(segment) = self.parted.take() else {
            return;
        };
        if segment.failed || segment.parts.is_empty() {
            return;
        }
        let len: usize = segment.parts.iter().map(|(d, _)| d.len()).sum();
        let mut data = bytes::BytesMut::with_capacity(len);
        for (part, _) in &segment.parts {
            data.extend_from_slice(part);
        }
        let parts: Vec<PartSpan> = segment.parts.iter().map(|(_, span)| *span).collect();
        self.stats.segments = self.stats.segments.saturating_add(1);
        self.outputs.push_back(SegmenterOutput::Segment(CutSegment {
            bytes: len as u64,
            data: data.freeze(),
            duration: parts.iter().map(|p| p.duration).sum(),
            start_dts: segment.start_dts,
            program_date_time_ms: segment.program_date_time_ms,
            init_id: segment.init_id,
            discontinuity: segment.discontinuity,
            keyframe_dts,
            forced,
            video_frames: segment.video_frames,
            audio_frames: segment.audio_frames,
            video_cadence: segment.video_cadence,
            parts,
        }));
    }

    fn fail(&mut self, error: PackagerError) {
        self.stats.mux_errors = self.stats.mux_errors.saturating_add(1);
        // The next segment follows a gap.
        self.flag_discontinuity();
        self.error.get_or_insert(error);
    }
}

/// Ticks per audio frame, when the configuration makes sense.
fn nominal_audio_ticks(samples_per_frame: u32, sample_rate: u32) -> Option<u64> {
    if sample_rate == 0 || samples_per_frame == 0 {
        return None;
    }
    let ticks = u64::from(samples_per_frame) * SECOND / u64::from(sample_rate);
    (ticks > 0).then_some(ticks)
}

/// How far (ticks) a video frame interval may be from the stream's mean interval and still
/// be regular: 1.5 ms, more than the ±1 ms jitter of timestamps in whole milliseconds
/// (RTMP: 33/34 ms at 30 fps), less than a small timeline jump (a looped file's 5-6 ms).
const CADENCE_SLACK_TICKS: u64 = 135;

/// The intervals between consecutive video `frames` (and from the last to `known_end`, the
/// next frame's dts, when known) that are regular: within [`CADENCE_SLACK_TICKS`] of
/// `nominal`, the stream's mean interval. A jump in the timeline (a looped source, a
/// reconnecting encoder) or dropped frames are not regular: the frame rate measured from the
/// regular intervals is the rate the frames are shown at (HLS `FRAME-RATE` is the maximum
/// rate), which a few such gaps would otherwise pull off a standard rate.
fn regular_intervals(frames: &[Frame], known_end: Option<i64>, nominal: i64) -> FrameCadence {
    let nominal = nominal.unsigned_abs();
    let dts = frames.iter().map(|f| f.dts).chain(known_end);
    let mut cadence = FrameCadence::default();
    for (from, to) in dts.clone().zip(dts.skip(1)) {
        let interval = to.saturating_sub(from);
        let Ok(interval) = u64::try_from(interval) else {
            continue;
        };
        if interval > 0 && interval.abs_diff(nominal) <= CADENCE_SLACK_TICKS {
            cadence = cadence.plus(FrameCadence {
                intervals: 1,
                ticks: u32::try_from(interval).unwrap_or(u32::MAX),
            });
        }
    }
    cadence
}

/// The end of a track's last sample: the known next dts, else the last dts plus a nominal
/// duration; never before the last dts. `None` for an empty track.
fn track_end(frames: &[Frame], known: Option<i64>, nominal: i64) -> Option<i64> {
    let last = frames.last()?.dts;
    Some(known.unwrap_or(last.saturating_add(nominal)).max(last))
}

#[cfg(test)]
mod tests;
