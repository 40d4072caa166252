//! The packager: media frames in, HLS segments and playlists out. No I/O, no clock reads.
//!
//! Two independent state machines live here:
//!
//! - [`Segmenter`] (one per live publish session) takes the [`MediaEvent`]s an ingest
//!   session produces, decides where segments are cut (at the first video keyframe at or past
//!   the target duration; on time for audio-only streams), drives the fMP4 or MPEG-TS muxer
//!   and hands out [`SegmenterOutput`]s: init segments and finished [`CutSegment`]s.
//! - [`PlaylistState`] (one per stream, surviving publisher reconnects and worker restarts;
//!   serde-serializable so the server can persist it and fence it on
//!   [`PlaylistState::epoch`]) keeps the sliding window of listed segments and renders the
//!   media and multivariant playlists (RFC 8216).
//!
//! LL-HLS (draft-pantos-hls-rfc8216bis; docs/decisions/0018-ll-hls-parts.md): with
//! [`SegmenterConfig::part_duration`] the segmenter also emits [`SegmenterOutput::Part`]s;
//! with [`PlaylistState::part_target_secs`] the playlist lists them (`push_part`) and renders
//! the low-latency tags and the delta update; [`parse_delivery_directives`] and
//! [`decide_blocking`] decide blocking playlist reloads, [`PlaylistState::part_request`] part
//! requests. All pure: the origin holds the requests and reads the clock.
//!
//! The server's run loop for one stream:
//!
//! ```text
//! state = load() or PlaylistState::new(..)      // persisted between sessions
//! state.begin_session()                         // or reset_for_new_stream() after ENDLIST
//! seg = Segmenter::new(config)
//! for each (event, now_ms) from the ingest session:
//!     seg.handle_event(event, now_ms)           // an Err is logged; the segmenter stays usable
//!     while let Some(out) = seg.poll_output():
//!         Init { data, id }   => store init-<epoch>-<id>.mp4
//!         Segment(cut)        => store the bytes under a name built from state.next_sequence,
//!                                evicted = state.push_segment(SegmentEntry::from_cut(..)),
//!                                persist state, publish state.render_media_playlist(),
//!                                delete the evicted files after a grace period
//! on publisher gone: seg.finish(), drain poll_output() as above, persist
//! when the reconnect window runs out: state.end(), persist, render
//! ```
//!
//! [`MediaEvent`]: tidegate_media::MediaEvent
#![deny(missing_docs)]

mod dash;
mod datetime;
mod llhls;
mod mux;
mod playlist;
mod segmenter;

pub use dash::{
    LowLatencyDash, SegmentInProgress, LL_DASH_PROFILE, LL_LATENCY_TARGET_MILLI_PARTS,
    LL_PLAYBACK_RATE,
};
pub use dash::{MpdOptions, MpdUnavailable, DASH_PROFILE, UTC_TIMING_SCHEME};
pub use datetime::format_program_date_time;
pub use llhls::{
    decide_blocking, parse_delivery_directives, parse_part_uri, part_uri, BadDirective,
    BlockingDecision, DeliveryDirectives, LiveEdge, BLOCKING_TIMEOUT_TARGET_DURATIONS,
    DEFAULT_PART_DURATION, MAX_MSN_AHEAD, MAX_PART_DURATION, MIN_PART_DURATION,
};
pub use playlist::{FrameTally, FRAME_RATE_HYSTERESIS_PPM, FRAME_RATE_SNAP_PPM};
pub use playlist::{
    OpenSegmentEntry, PartEntry, PartRequest, PlaylistState, SegmentEntry, DEFAULT_WINDOW,
    MAX_WINDOW, PART_HOLD_BACK_PARTS, PART_WINDOW_TARGET_DURATIONS, SKIP_BOUNDARY_TARGET_DURATIONS,
};
pub use segmenter::FrameCadence;
pub use segmenter::{
    CutPart, CutSegment, PartSpan, Segmenter, SegmenterConfig, SegmenterOutput, SegmenterStats,
    DEFAULT_MAX_SEGMENT_DURATION, DEFAULT_TARGET_DURATION, END_DTS_WAIT, MAX_SEGMENT_BYTES,
    MAX_SEGMENT_FRAMES,
};

use serde::{Deserialize, Serialize};
use tidegate_media::TrackKind;

/// The segment container a stream is packaged into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Container {
    /// Fragmented MP4 (CMAF) segments with an init segment (`EXT-X-MAP`).
    #[default]
    #[serde(rename = "fmp4")]
    Fmp4,
    /// MPEG-2 transport stream segments, self-contained.
    #[serde(rename = "mpegts")]
    MpegTs,
}

impl Container {
    /// The file extension of media segments (`m4s` or `ts`).
    pub fn segment_extension(self) -> &'static str {
        match self {
            Container::Fmp4 => "m4s",
            Container::MpegTs => "ts",
        }
    }

    /// The MIME type of media segments.
    pub fn segment_mime_type(self) -> &'static str {
        match self {
            Container::Fmp4 => "video/iso.segment",
            Container::MpegTs => "video/mp2t",
        }
    }
}

/// Everything that can go wrong in the packager.
#[derive(Debug, thiserror::Error)]
pub enum PackagerError {
    /// The fMP4 muxer refused the segment (the segment is dropped, the session goes on).
    #[error("fMP4 muxer: {0}")]
    Fmp4(#[from] tidegate_fmp4::Fmp4Error),
    /// The MPEG-TS muxer refused the segment (the segment is dropped, the session goes on).
    #[error("MPEG-TS muxer: {0}")]
    MpegTs(#[from] tidegate_mpegts::TsError),
    /// A frame's dts is below the previous one of its track (the frame is dropped).
    #[error("{track:?} dts went backwards: {dts} after {last}")]
    DtsBackwards {
        /// The track.
        track: TrackKind,
        /// The offending frame's dts.
        dts: i64,
        /// The previous frame's dts on that track.
        last: i64,
    },
    /// A muxer was asked for a segment before being configured (an internal bug).
    #[error("muxer used before it was configured")]
    MuxerNotConfigured,
    /// A playlist state update was attempted by a holder of an outdated epoch.
    #[error("stale playlist epoch: state is at {current}, caller holds {held}")]
    StaleEpoch {
        /// The epoch stored in the state.
        current: u64,
        /// The epoch the caller holds.
        held: u64,
    },
}

impl PackagerError {
    /// True when the publisher's media caused the error (as opposed to a muxer limit or a
    /// bug in tidegate).
    pub fn is_publisher_fault(&self) -> bool {
        matches!(self, PackagerError::DtsBackwards { .. })
    }

    /// True when another session took ownership of the stream (fencing).
    pub fn is_stale_epoch(&self) -> bool {
        matches!(self, PackagerError::StaleEpoch { .. })
    }
}
