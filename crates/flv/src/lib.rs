//! FLV / Enhanced RTMP audio and video tag demuxing, sans-IO.
//!
//! RTMP Audio and Video messages carry FLV tag bodies. [`FlvDemuxer`] turns them into
//! [`MediaEvent`]s for the packager:
//!
//! ```text
//! RTMP session ──(timestamp, body)──▶ handle_video / handle_audio ──▶ poll_event ──▶ packager
//! ```
//!
//! The driver (the server's connection task) calls [`FlvDemuxer::handle_video`] or
//! [`FlvDemuxer::handle_audio`] for every message, then drains [`FlvDemuxer::poll_event`]
//! until it returns `None`, before handing in the next message. An `Err` means the publisher
//! sent something unusable; the driver ends the connection and counts [`FlvError::kind`].
//!
//! Supported: legacy FLV AVC (codec id 7) and HEVC (codec id 12), legacy AAC (sound format
//! 10), and Enhanced RTMP v1/v2 `avc1`, `hvc1`, `av01` video and `mp4a` audio, including
//! ModEx prefixes (skipped) and multitrack messages (only track 0, the default track, is
//! ingested). Other codecs are rejected with [`FlvError::UnsupportedCodec`].
//!
//! What the demuxer does to the stream:
//! - unwraps RTMP's 32-bit millisecond timestamps (per track) and passes the common
//!   audio+video timeline through one [`JumpDetector`], emitting
//!   [`MediaEvent::TimestampJump`] and shifting both tracks alike when the source jumps;
//! - converts to 90 kHz: `dts = ms * 90`, `pts = (ms + composition time) * 90`;
//! - emits a configuration event only when a sequence header differs from the current one;
//! - drops frames that arrive before their track's configuration, and empty frames
//!   (both counted in [`FlvStats`]); a video frame before any sequence header is also
//!   reported as [`MediaEvent::VideoWithoutConfig`] (it can never be decoded);
//! - checks NAL/OBU framing, strips AV1 temporal delimiters, and otherwise passes payloads
//!   through as slices of the input [`Bytes`] (no copies).
//!
//! [`file`] splits a whole FLV file into its tags (for tools that publish or inspect
//! files; the server receives tag bodies in RTMP messages).
#![deny(missing_docs)]

mod error;
pub mod file;
pub mod tag;

use std::collections::VecDeque;

use bytes::Bytes;
use tidegate_media::codec::{
    av1_strip_temporal_delimiters, parse_aac_asc, parse_av1_record, parse_avc_record,
    parse_hevc_record,
};
use tidegate_media::nal::length_prefixed_nals;
use tidegate_media::timestamp::{JumpDetector, JumpThresholds, RtmpTimestampUnwrapper};
use tidegate_media::{AudioConfig, Frame, MediaEvent, TrackKind, VideoCodec, VideoConfig};

pub use error::FlvError;
pub use tag::{parse_audio_tag, parse_video_tag, AudioTag, Ignored, VideoTag};

/// Events one `handle_*` call can queue at most (a jump and a frame); the queue holds a few
/// calls' worth so a driver that drains after every call never hits the bound.
pub const MAX_QUEUED_EVENTS: usize = 16;

/// 90 kHz ticks per RTMP millisecond.
const TICKS_PER_MS: i64 = (tidegate_media::TIMESCALE / 1000) as i64;

/// Counters of what the demuxer dropped or ignored (for metrics and logs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlvStats {
    /// Video frames emitted.
    pub video_frames: u64,
    /// Audio frames emitted.
    pub audio_frames: u64,
    /// Frames dropped because their track had no configuration yet.
    pub frames_before_config: u64,
    /// Empty messages and frames with no payload, dropped.
    pub empty_frames: u64,
    /// Sequence headers identical to the current configuration, deduplicated.
    pub repeated_configs: u64,
    /// Well-formed messages with nothing for the packager (commands, metadata, sequence
    /// ends, non-default tracks).
    pub ignored_messages: u64,
    /// Timestamp jumps detected.
    pub timestamp_jumps: u64,
}

/// Sans-IO demuxer of RTMP audio/video message bodies into [`MediaEvent`]s. See the crate
/// documentation for the call order.
#[derive(Debug)]
pub struct FlvDemuxer {
    video_clock: RtmpTimestampUnwrapper,
    audio_clock: RtmpTimestampUnwrapper,
    jumps: JumpDetector,
    video: Option<VideoConfig>,
    audio: Option<AudioConfig>,
    events: VecDeque<MediaEvent>,
    stats: FlvStats,
}

impl Default for FlvDemuxer {
    fn default() -> Self {
        Self::new()
    }
}

impl FlvDemuxer {
    /// A demuxer with the default jump thresholds (10 s forwards, 1 s backwards).
    pub fn new() -> Self {
        Self::with_jump_thresholds(JumpThresholds::default())
    }

    /// A demuxer with the given jump thresholds, in 90 kHz ticks.
    pub fn with_jump_thresholds(thresholds: JumpThresholds) -> Self {
        Self {
            video_clock: RtmpTimestampUnwrapper::new(),
            audio_clock: RtmpTimestampUnwrapper::new(),
            jumps: JumpDetector::new(thresholds),
            video: None,
            audio: None,
            events: VecDeque::new(),
            stats: FlvStats::default(),
        }
    }

    /// The current video configuration.
    pub fn video_config(&self) -> Option<&VideoConfig> {
        self.video.as_ref()
    }

    /// The current audio configuration.
    pub fn audio_config(&self) -> Option<&AudioConfig> {
        self.audio.as_ref()
    }

    /// What was dropped or ignored so far.
    pub fn stats(&self) -> &FlvStats {
        &self.stats
    }

    /// The next event, in order.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    fn check_queue(&self) -> Result<(), FlvError> {
        if self.events.len() + 2 > MAX_QUEUED_EVENTS {
            return Err(FlvError::EventQueueFull);
        }
        Ok(())
    }

    /// Handles the body of one RTMP Video message with its (32-bit, millisecond) timestamp.
    pub fn handle_video(&mut self, timestamp_ms: u32, data: Bytes) -> Result<(), FlvError> {
        self.check_queue()?;
        if data.is_empty() {
            self.stats.empty_frames += 1;
            return Ok(());
        }
        match parse_video_tag(data)? {
            VideoTag::SequenceStart { codec, record } => self.video_sequence_start(codec, record),
            VideoTag::Frame {
                codec,
                keyframe,
                composition_time_ms,
                data,
            } => self.video_frame(timestamp_ms, codec, keyframe, composition_time_ms, data),
            VideoTag::Ignored(_) => {
                self.stats.ignored_messages += 1;
                Ok(())
            }
        }
    }

    /// Handles the body of one RTMP Audio message with its (32-bit, millisecond) timestamp.
    pub fn handle_audio(&mut self, timestamp_ms: u32, data: Bytes) -> Result<(), FlvError> {
        self.check_queue()?;
        if data.is_empty() {
            self.stats.empty_frames += 1;
            return Ok(());
        }
        match parse_audio_tag(data)? {
            AudioTag::SequenceStart { asc } => {
                if self.audio.as_ref().is_some_and(|a| a.asc == asc) {
                    self.stats.repeated_configs += 1;
                    return Ok(());
                }
                let config = parse_aac_asc(asc).map_err(|source| FlvError::Config {
                    track: TrackKind::Audio,
                    source,
                })?;
                self.audio = Some(config.clone());
                self.events.push_back(MediaEvent::AudioConfig(config));
                Ok(())
            }
            AudioTag::Frame { data } => {
                if self.audio.is_none() {
                    self.stats.frames_before_config += 1;
                    return Ok(());
                }
                if data.is_empty() {
                    self.stats.empty_frames += 1;
                    return Ok(());
                }
                let ms = self.audio_clock.unwrap(timestamp_ms);
                let dts = self.rebase(TrackKind::Audio, ms);
                self.stats.audio_frames += 1;
                self.events.push_back(MediaEvent::Frame(Frame {
                    track: TrackKind::Audio,
                    dts,
                    pts: dts,
                    keyframe: true,
                    data,
                }));
                Ok(())
            }
            AudioTag::Ignored(_) => {
                self.stats.ignored_messages += 1;
                Ok(())
            }
        }
    }

    fn video_sequence_start(&mut self, codec: VideoCodec, record: Bytes) -> Result<(), FlvError> {
        if self
            .video
            .as_ref()
            .is_some_and(|v| v.codec == codec && v.record == record)
        {
            self.stats.repeated_configs += 1;
            return Ok(());
        }
        let parsed = match codec {
            VideoCodec::H264 => parse_avc_record(record),
            VideoCodec::H265 => parse_hevc_record(record),
            VideoCodec::Av1 => parse_av1_record(record),
        };
        let config = parsed.map_err(|source| FlvError::Config {
            track: TrackKind::Video,
            source,
        })?;
        self.video = Some(config.clone());
        self.events.push_back(MediaEvent::VideoConfig(config));
        Ok(())
    }

    fn video_frame(
        &mut self,
        timestamp_ms: u32,
        codec: VideoCodec,
        keyframe: bool,
        composition_time_ms: i32,
        data: Bytes,
    ) -> Result<(), FlvError> {
        let Some(config) = &self.video else {
            self.stats.frames_before_config += 1;
            self.events.push_back(MediaEvent::VideoWithoutConfig);
            return Ok(());
        };
        if config.codec != codec {
            return Err(FlvError::CodecMismatch {
                track: TrackKind::Video,
            });
        }
        let frame_error = |source| FlvError::Frame {
            track: TrackKind::Video,
            source,
        };
        let data = match codec {
            VideoCodec::H264 | VideoCodec::H265 => {
                for nal in length_prefixed_nals(&data, config.nal_length_size) {
                    nal.map_err(frame_error)?;
                }
                data
            }
            VideoCodec::Av1 => av1_strip_temporal_delimiters(data).map_err(frame_error)?,
        };
        if data.is_empty() {
            self.stats.empty_frames += 1;
            return Ok(());
        }
        let ms = self.video_clock.unwrap(timestamp_ms);
        let dts = self.rebase(TrackKind::Video, ms);
        let pts = dts.saturating_add(i64::from(composition_time_ms) * TICKS_PER_MS);
        self.stats.video_frames += 1;
        self.events.push_back(MediaEvent::Frame(Frame {
            track: TrackKind::Video,
            dts,
            pts,
            keyframe,
            data,
        }));
        Ok(())
    }

    /// Converts an unwrapped millisecond timestamp to 90 kHz on the shared, jump-free
    /// timeline, queueing a jump event if this timestamp is one.
    fn rebase(&mut self, track: TrackKind, ms: i64) -> i64 {
        let rebased = self.jumps.process(ms.saturating_mul(TICKS_PER_MS));
        if let Some(delta) = rebased.jump {
            self.stats.timestamp_jumps += 1;
            self.events
                .push_back(MediaEvent::TimestampJump { track, delta });
        }
        rebased.output
    }
}
