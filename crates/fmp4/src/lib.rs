//! CMAF / fragmented MP4 writer: the init segment (`ftyp` + `moov`) of a stream's track
//! configuration and its media segments (`styp` + `moof` + `mdat`).
//!
//! The API is two pure functions; there is no state to drive:
//!
//! 1. whenever the track configuration changes, call [`init_segment`] and publish the result
//!    as the `EXT-X-MAP` / DASH initialization segment;
//! 2. for each cut segment, call [`media_segment`] with the segment's [`TrackRun`]s and the
//!    audio configuration (its sample rate is the audio timescale).
//!
//! Layout: video is track 1 with timescale [`TIMESCALE`] (90 kHz, so video timestamps are
//! written unchanged); audio is track 2 with the sample rate as timescale. Each media segment
//! has one `moof` with one `traf` per non-empty run (`tfhd` with default-base-is-moof, `tfdt`
//! version 1, `trun` with a data offset and per-sample duration, size, flags and — for video,
//! version 1 — signed composition offset) and one `mdat` holding the runs' payloads in run
//! order. Audio times are converted from 90 kHz by [`to_timescale`] per sample (duration =
//! next sample's time − this sample's time, the last one ending at `end_dts`), so rounding
//! never accumulates and consecutive segments tile exactly.
//!
//! Boxes are written by hand (see `docs/decisions/0002-own-fmp4-writer.md`): a media segment
//! is one exact-size allocation and one copy of each payload, with no per-sample allocation.
//! Nothing here does I/O.
#![deny(missing_docs)]

mod error;
mod init;
mod segment;
mod writer;

use bytes::Bytes;
use tidegate_media::{AudioConfig, TrackRun, VideoConfig};

pub use error::Fmp4Error;
pub use init::MAX_RECORD_LEN;
pub use segment::{
    to_timescale, MAX_MEDIA_SEGMENT_LEN, MAX_SAMPLES_PER_RUN, SAMPLE_FLAGS_NON_SYNC,
    SAMPLE_FLAGS_SYNC,
};
#[doc(no_inline)]
pub use tidegate_media::TIMESCALE;

/// The video track's ID (its timescale is [`TIMESCALE`]).
pub const VIDEO_TRACK_ID: u32 = 1;
/// The audio track's ID (its timescale is the sample rate).
pub const AUDIO_TRACK_ID: u32 = 2;

/// Builds the init segment (`ftyp` + `moov`) for the given tracks: video as `avc1`+`avcC`,
/// `hvc1`+`hvcC` or `av01`+`av1C` with the configuration record verbatim, audio as
/// `mp4a`+`esds` carrying the AudioSpecificConfig; empty sample tables and one `trex` per
/// track in `mvex`. At least one track is required.
pub fn init_segment(
    video: Option<&VideoConfig>,
    audio: Option<&AudioConfig>,
) -> Result<Bytes, Fmp4Error> {
    init::init_segment(video, audio)
}

/// Builds one CMAF media segment: `styp`, one `moof` (`mfhd` with `sequence_number`, one
/// `traf` per non-empty run) and one `mdat`. `audio` must be the configuration the init
/// segment was built with whenever `runs` has audio frames (it gives the audio timescale).
/// Frames' `dts` must be non-negative and non-decreasing within a run, and each run's
/// `end_dts` at or after its last frame's `dts`.
pub fn media_segment(
    sequence_number: u32,
    runs: &[TrackRun<'_>],
    audio: Option<&AudioConfig>,
) -> Result<Bytes, Fmp4Error> {
    segment::media_segment(sequence_number, runs, audio)
}

/// Builds one CMAF chunk (LL-HLS part): a `moof` and its `mdat`, as [`media_segment`], with
/// the segment's `styp` in front only when `with_styp` (the first chunk of a segment). The
/// chunks of a segment, concatenated, are a valid media segment: each `moof` is
/// self-contained (default-base-is-moof, its own `tfdt`), `sequence_number` must grow from
/// one chunk to the next.
pub fn media_chunk(
    sequence_number: u32,
    runs: &[TrackRun<'_>],
    audio: Option<&AudioConfig>,
    with_styp: bool,
) -> Result<Bytes, Fmp4Error> {
    segment::media_fragment(sequence_number, runs, audio, with_styp)
}
