//! Codec-agnostic media model shared by every ingest protocol and every packager.
//!
//! The pipeline is: an ingest protocol (RTMP, SRT) produces [`MediaEvent`]s (codec
//! configuration changes and [`Frame`]s with timestamps in [`TIMESCALE`]), the packager
//! consumes them. Nothing here does I/O or reads a clock.
//!
//! Conventions every producer must follow:
//! - Timestamps are in [`TIMESCALE`] ticks (90 kHz), unwrapped (64-bit, never wrapping), and
//!   decode order (`dts`) is non-decreasing per track.
//! - Video payloads are in "length-prefixed" sample format, exactly as stored in an MP4 sample:
//!   H.264/HEVC NAL units each preceded by a big-endian length of
//!   [`VideoConfig::nal_length_size`] bytes; AV1 is a sequence of low-overhead OBUs (each with
//!   `obu_has_size_field = 1`), temporal delimiters removed.
//! - Audio payloads are raw access units (AAC without ADTS header).
#![deny(missing_docs)]

pub mod adts;
mod bits;
pub mod codec;
pub mod nal;
pub mod timestamp;

use bytes::Bytes;

/// The one timescale every [`Frame`] timestamp uses: 90 kHz, exact for RTMP's milliseconds
/// and MPEG-TS's PTS.
pub const TIMESCALE: u32 = 90_000;

/// Which elementary stream a frame belongs to. A stream has at most one of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrackKind {
    /// The video track.
    Video,
    /// The audio track.
    Audio,
}

/// One access unit (a video picture or an audio frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The track this frame belongs to.
    pub track: TrackKind,
    /// Decode timestamp in [`TIMESCALE`] ticks.
    pub dts: i64,
    /// Presentation timestamp in [`TIMESCALE`] ticks (`pts >= dts` for well-formed input).
    pub pts: i64,
    /// A random access point: an IDR/IRAP picture or an AV1 key frame. Always true for audio.
    pub keyframe: bool,
    /// The payload in sample format (see the crate documentation).
    pub data: Bytes,
}

/// Video codecs tidegate can repackage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// H.264 / AVC.
    H264,
    /// H.265 / HEVC.
    H265,
    /// AV1.
    Av1,
}

/// Audio codecs tidegate can repackage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    /// MPEG-4 AAC (any object type carried in an AudioSpecificConfig).
    Aac,
}

/// A video track's decoder configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoConfig {
    /// The codec.
    pub codec: VideoCodec,
    /// The configuration record exactly as an MP4 sample entry carries it: the body of `avcC`,
    /// `hvcC` or `av1C` (without the box header).
    pub record: Bytes,
    /// Display width in pixels after the SPS cropping window (what players show; 0 when unknown).
    pub width: u32,
    /// Display height in pixels after the SPS cropping window (0 when unknown).
    pub height: u32,
    /// Bytes in each NAL unit length prefix (1, 2 or 4) for H.264/HEVC; 0 for AV1.
    pub nal_length_size: u8,
    /// RFC 6381 `CODECS` value, e.g. `avc1.64001f`, `hvc1.1.6.L93.B0`, `av01.0.08M.08`.
    pub codec_string: String,
}

/// An audio track's decoder configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioConfig {
    /// The codec.
    pub codec: AudioCodec,
    /// The AudioSpecificConfig bytes (ISO/IEC 14496-3), as an `esds` box carries it.
    pub asc: Bytes,
    /// Sampling rate in Hz.
    pub sample_rate: u32,
    /// Channel count.
    pub channels: u8,
    /// Samples per frame (1024 for AAC-LC).
    pub samples_per_frame: u32,
    /// RFC 6381 `CODECS` value, e.g. `mp4a.40.2`.
    pub codec_string: String,
}

/// What an ingest protocol hands to the packager, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// The video decoder configuration (first, or changed mid-stream).
    VideoConfig(VideoConfig),
    /// The audio decoder configuration (first, or changed mid-stream).
    AudioConfig(AudioConfig),
    /// One access unit.
    Frame(Frame),
    /// The source's timeline jumped (by `delta` ticks, forwards or backwards) on `track`;
    /// the producer has already rebased timestamps so they stay continuous.
    TimestampJump {
        /// The track whose timestamps jumped.
        track: TrackKind,
        /// The jump seen in the source, in [`TIMESCALE`] ticks.
        delta: i64,
    },
    /// The source declares a video track (an MPEG-TS PMT lists one, RTMP metadata names a
    /// video codec), whether or not any of it turns out decodable. Health watches that such
    /// a track gets a decoder configuration; the packager ignores it.
    VideoDeclared,
    /// A video access unit arrived before any decoder configuration (H.264/HEVC parameter
    /// sets, an FLV sequence header) and was dropped: it cannot be decoded. Counted and
    /// watched by health; the packager ignores it.
    VideoWithoutConfig,
}

/// The frames of one track inside one segment, in decode order, as muxers take them.
#[derive(Debug, Clone, Copy)]
pub struct TrackRun<'a> {
    /// The track.
    pub track: TrackKind,
    /// The frames, in decode order (non-decreasing `dts`).
    pub frames: &'a [Frame],
    /// Where the last frame ends, in [`TIMESCALE`] ticks (the next frame's `dts`, or the
    /// last frame's `dts` plus its nominal duration); gives the last sample its duration.
    pub end_dts: i64,
}
