//! LL-HLS: the segment a session left unfinished, listed whole from its parts.
//!
//! A worker that dies (`kill -9`, a lost node) leaves in the stream's record the parts it had
//! listed for the segment it was building: media sequence number N, announced to players
//! through its `EXT-X-PART`s. If the next session dropped them and numbered its own first
//! segment N, a player that had loaded those parts would find N changed under it: another
//! URI and, behind the session's `EXT-X-DISCONTINUITY`, another discontinuity sequence
//! (hls.js stops with a fatal "discontinuity sequence mismatch"; the HLS specification
//! never lets a server change what a media sequence number names). So the session that
//! takes over first lists that segment as it stands: its part objects read back from the
//! media store and stored, concatenated, as the segment (parts are CMAF chunks of their
//! segment, the first one independent), with the parts it had. Its own media then follows
//! at N + 1 behind the discontinuity. Any doubt (a part missing, parts that do not tile, a
//! segment of its own period) and the parts are dropped as before.

use bytes::{Bytes, BytesMut};
use tidegate_media::TIMESCALE;
use tidegate_packager::{parse_part_uri, OpenSegmentEntry, PlaylistState, SegmentEntry};
use tracing::{info, warn};

use crate::store::MediaStore;

/// Seconds to 90 kHz ticks (the part durations were ticks / 90000).
fn ticks(secs: f64) -> i64 {
    if secs.is_finite() && secs > 0.0 {
        // Float-to-int `as` saturates.
        (secs * f64::from(TIMESCALE)).round() as i64
    } else {
        0
    }
}

/// The segment `open` would have become, if its parts can stand for it: its URI (the
/// parts' segment), duration, wall clock, init segment and parts, starting where
/// `previous` ends (the same session: no discontinuity before it). `None` when the parts
/// are not its whole beginning (a gap, a part index missing, a first part that does not
/// start with a keyframe) or there is no segment of the same session before it.
pub(super) fn salvage_entry(
    open: &OpenSegmentEntry,
    previous: Option<&SegmentEntry>,
) -> Option<SegmentEntry> {
    let previous = previous?;
    let first = open.parts.first()?;
    if open.discontinuity || !first.independent || previous.map_uri != open.map_uri {
        return None;
    }
    let (segment_uri, _) = parse_part_uri(&first.uri)?;
    let mut offset = 0u64;
    for (i, part) in open.parts.iter().enumerate() {
        let (uri, index) = parse_part_uri(&part.uri)?;
        if part.gap || uri != segment_uri || usize::try_from(index).ok()? != i {
            return None;
        }
        if part.offset != offset {
            return None;
        }
        offset = offset.checked_add(part.bytes)?;
    }
    let start_ticks = previous
        .start_ticks?
        .checked_add(ticks(previous.duration_secs))?;
    let duration: i64 = open.parts.iter().map(|p| ticks(p.duration_secs)).sum();
    Some(SegmentEntry {
        sequence: 0,
        uri: segment_uri,
        duration_secs: duration as f64 / f64::from(TIMESCALE),
        program_date_time_ms: open.program_date_time_ms,
        discontinuity: false,
        map_uri: open.map_uri.clone(),
        bytes: offset,
        start_ticks: Some(start_ticks),
        video_frames: None,
        video_cadence: None,
        period: None,
        parts: open.parts.clone(),
    })
}

/// Lists the unfinished segment of the previous session (see the module documentation):
/// reads its parts under `prefix`, stores them as the segment and pushes it into
/// `playlist` (taking `open` away). Before [`PlaylistState::begin_session`]. `Some` with the segments that left the
/// window (their objects are the caller's to delete) when it did, `None` when it did not
/// (the playlist as it was).
pub(super) async fn salvage_open_segment(
    media: &dyn MediaStore,
    prefix: &str,
    playlist: &mut PlaylistState,
) -> Option<Vec<SegmentEntry>> {
    let entry = salvage_entry(playlist.open.as_ref()?, playlist.segments.back())?;
    let mut data = BytesMut::with_capacity(usize::try_from(entry.bytes).unwrap_or(0));
    for part in &entry.parts {
        match media.get(&format!("{prefix}/{}", part.uri)).await {
            Ok(Some(bytes)) if bytes.len() as u64 == part.bytes => data.extend_from_slice(&bytes),
            Ok(_) => {
                warn!(part = %part.uri, "an unfinished segment's part is missing: its parts are dropped");
                return None;
            }
            Err(e) => {
                warn!(part = %part.uri, error = %e, "could not read an unfinished segment's part: its parts are dropped");
                return None;
            }
        }
    }
    let data: Bytes = data.freeze();
    if let Err(e) = media.put(&format!("{prefix}/{}", entry.uri), data).await {
        warn!(segment = %entry.uri, error = %e, "could not store an unfinished segment: its parts are dropped");
        return None;
    }
    info!(segment = %entry.uri, parts = entry.parts.len(), "listed the previous session's unfinished segment from its parts");
    playlist.open = None;
    playlist.preload_hint = None;
    Some(playlist.push_segment(entry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidegate_packager::PartEntry;

    fn part(uri: &str, offset: u64, bytes: u64, independent: bool) -> PartEntry {
        PartEntry {
            uri: uri.to_owned(),
            duration_secs: 0.32,
            independent,
            gap: false,
            offset,
            bytes,
        }
    }

    fn previous() -> SegmentEntry {
        SegmentEntry {
            sequence: 4,
            uri: "seg-7-4.m4s".to_owned(),
            duration_secs: 2.0,
            program_date_time_ms: 1_000,
            discontinuity: false,
            map_uri: Some("init-7-0.mp4".to_owned()),
            bytes: 100,
            start_ticks: Some(900_000),
            video_frames: Some(50),
            video_cadence: None,
            period: None,
            parts: Vec::new(),
        }
    }

    fn open(parts: Vec<PartEntry>) -> OpenSegmentEntry {
        OpenSegmentEntry {
            program_date_time_ms: 3_000,
            map_uri: Some("init-7-0.mp4".to_owned()),
            discontinuity: false,
            parts,
        }
    }

    #[test]
    fn the_parts_of_an_unfinished_segment_make_it_where_the_previous_one_ends() {
        let o = open(vec![
            part("seg-7-5.0.m4s", 0, 10, true),
            part("seg-7-5.1.m4s", 10, 7, false),
        ]);
        let e = salvage_entry(&o, Some(&previous())).unwrap();
        assert_eq!(e.uri, "seg-7-5.m4s");
        assert_eq!(e.bytes, 17);
        assert_eq!(e.start_ticks, Some(900_000 + 180_000));
        assert!((e.duration_secs - 0.64).abs() < 1e-9);
        assert_eq!(e.program_date_time_ms, 3_000);
        assert_eq!(e.map_uri.as_deref(), Some("init-7-0.mp4"));
        assert_eq!(e.parts, o.parts);
        assert!(!e.discontinuity);
    }

    #[test]
    fn parts_that_cannot_stand_for_their_segment_are_not_salvaged() {
        let p = previous();
        // No keyframe first, a missing index, a hole in the bytes, a gap part, another init.
        for parts in [
            vec![part("seg-7-5.0.m4s", 0, 10, false)],
            vec![part("seg-7-5.1.m4s", 0, 10, true)],
            vec![
                part("seg-7-5.0.m4s", 0, 10, true),
                part("seg-7-5.1.m4s", 11, 7, false),
            ],
            vec![PartEntry {
                gap: true,
                ..part("seg-7-5.0.m4s", 0, 10, true)
            }],
        ] {
            assert!(
                salvage_entry(&open(parts.clone()), Some(&p)).is_none(),
                "{parts:?}"
            );
        }
        let o = open(vec![part("seg-7-5.0.m4s", 0, 10, true)]);
        assert!(salvage_entry(&o, None).is_none(), "nothing before it");
        let other_init = OpenSegmentEntry {
            map_uri: Some("init-7-1.mp4".to_owned()),
            ..o.clone()
        };
        assert!(salvage_entry(&other_init, Some(&p)).is_none());
    }
}
