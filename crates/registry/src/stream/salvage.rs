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
//! at N + 1 behind the discontinuity. Any doubt (a part missing, parts that do not tile) and
//! the parts are dropped as before.
//!
//! That holds for the first segment of a session too (the dead session never finished
//! one: a worker killed within a segment duration of the publisher's arrival): it is
//! listed behind the discontinuity its session began with, where its first part starts,
//! and the new session follows behind a discontinuity of its own. Dropping it instead
//! left the playlist with one discontinuity where the players had seen two sessions
//! begin: hls.js played the new session's segment N under the dead session's
//! discontinuity sequence, and never reported the new one (`players_failover.rs`).

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
/// parts' segment), duration, wall clock, init segment and parts. It starts where its first
/// part does (`open.start_ticks`), or, in a record stored before that was kept, where
/// `previous` ends when it is of the same session (same init segment, no discontinuity
/// between). `None` when the parts are not its whole beginning (a gap, a part index
/// missing, a first part that does not start with a keyframe) or its start is not known.
/// A discontinuity the playlist has pending (the dead session's start) is
/// [`PlaylistState::push_segment`]'s to apply.
pub(super) fn salvage_entry(
    open: &OpenSegmentEntry,
    previous: Option<&SegmentEntry>,
) -> Option<SegmentEntry> {
    let first = open.parts.first()?;
    if !first.independent {
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
    let start_ticks = match open.start_ticks {
        Some(start) => start,
        None => {
            let previous = previous.filter(|p| !open.discontinuity && p.map_uri == open.map_uri)?;
            previous
                .start_ticks?
                .checked_add(ticks(previous.duration_secs))?
        }
    };
    let duration: i64 = open.parts.iter().map(|p| ticks(p.duration_secs)).sum();
    Some(SegmentEntry {
        sequence: 0,
        uri: segment_uri,
        duration_secs: duration as f64 / f64::from(TIMESCALE),
        program_date_time_ms: open.program_date_time_ms,
        discontinuity: open.discontinuity,
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

    /// The open segment of a record stored before its start was kept.
    fn open(parts: Vec<PartEntry>) -> OpenSegmentEntry {
        OpenSegmentEntry {
            program_date_time_ms: 3_000,
            map_uri: Some("init-7-0.mp4".to_owned()),
            discontinuity: false,
            parts,
            start_ticks: None,
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
        // Without its own start (a record stored before it was kept), only where a previous
        // segment of its session ends says where it starts.
        let o = open(vec![part("seg-7-5.0.m4s", 0, 10, true)]);
        assert!(salvage_entry(&o, None).is_none(), "nothing before it");
        let other_init = OpenSegmentEntry {
            map_uri: Some("init-7-1.mp4".to_owned()),
            ..o.clone()
        };
        assert!(salvage_entry(&other_init, Some(&p)).is_none());
        let after_discontinuity = OpenSegmentEntry {
            discontinuity: true,
            ..o.clone()
        };
        assert!(salvage_entry(&after_discontinuity, Some(&p)).is_none());
    }

    #[test]
    fn a_session_s_first_segment_is_salvaged_from_where_its_first_part_starts() {
        // Epoch 8 never finished a segment: its parts follow epoch 7's last segment.
        let o = OpenSegmentEntry {
            map_uri: Some("init-8-0.mp4".to_owned()),
            start_ticks: Some(2_000_000),
            ..open(vec![
                part("seg-8-0.0.m4s", 0, 10, true),
                part("seg-8-0.1.m4s", 10, 7, false),
            ])
        };
        for previous in [Some(previous()), None] {
            let e = salvage_entry(&o, previous.as_ref()).unwrap();
            assert_eq!(e.uri, "seg-8-0.m4s");
            assert_eq!(e.start_ticks, Some(2_000_000));
            assert_eq!(e.map_uri.as_deref(), Some("init-8-0.mp4"));
            assert_eq!(e.bytes, 17);
            assert!(
                !e.discontinuity,
                "the session's own discontinuity is pending"
            );
        }
        // Its own start wins over the previous segment's end, and a discontinuity of its
        // own (the segmenter's) is kept.
        let mid_session = OpenSegmentEntry {
            start_ticks: Some(1_080_090),
            discontinuity: true,
            ..open(vec![part("seg-7-5.0.m4s", 0, 10, true)])
        };
        let e = salvage_entry(&mid_session, Some(&previous())).unwrap();
        assert_eq!(e.start_ticks, Some(1_080_090));
        assert!(e.discontinuity);
    }

    /// A worker killed before its session cut a segment: the session that takes over lists
    /// that segment behind the dead session's discontinuity and its own media behind a
    /// discontinuity of its own, so a player that loaded the dead session's parts finds the
    /// same media sequence number with the same discontinuity sequence, and the new session
    /// in a discontinuity sequence of its own.
    #[tokio::test]
    async fn a_takeover_lists_the_dead_session_s_first_segment_and_its_own_behind_a_discontinuity()
    {
        use crate::store::fs::FsMediaStore;
        let dir = std::env::temp_dir().join(format!(
            "tidegate-salvage-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let media = FsMediaStore::new(dir.clone());
        let mut playlist = PlaylistState::new(tidegate_packager::Container::Fmp4, 6, 2);
        playlist.part_target_secs = Some(0.334);
        playlist.begin_session();
        let mut first = previous();
        first.sequence = 0;
        playlist.push_segment(first);
        // Epoch 8 (a reconnect) lists two parts of its first segment, then dies.
        playlist.begin_session();
        let parts = [
            part("seg-8-0.0.m4s", 0, 3, true),
            part("seg-8-0.1.m4s", 3, 2, false),
        ];
        for (p, bytes) in parts.iter().zip([&b"abc"[..], &b"de"[..]]) {
            media
                .put(&format!("s/{}", p.uri), Bytes::from_static(bytes))
                .await
                .unwrap();
            playlist.push_part(
                p.clone(),
                5_000,
                Some("init-8-0.mp4".to_owned()),
                Some("seg-8-0.2.m4s".to_owned()),
            );
        }
        if let Some(open) = playlist.open.as_mut() {
            open.start_ticks = Some(2_000_000);
        }
        let seen = playlist.render_media_playlist();
        let cc_of_parts = seen.matches("#EXT-X-DISCONTINUITY\n").count();
        assert_eq!(cc_of_parts, 1, "{seen}");

        // Epoch 9 takes over.
        salvage_open_segment(&media, "s", &mut playlist)
            .await
            .expect("salvaged");
        playlist.begin_session();
        // Until its first part, the new session's discontinuity ends the playlist.
        let waiting = playlist.render_media_playlist();
        assert!(
            waiting.ends_with("seg-8-0.m4s\n#EXT-X-DISCONTINUITY\n"),
            "{waiting}"
        );
        let mut own = previous();
        own.uri = "seg-9-0.m4s".to_owned();
        own.map_uri = Some("init-9-0.mp4".to_owned());
        playlist.push_segment(own);
        let text = playlist.render_media_playlist();
        let listed: Vec<(u64, &str, bool)> = playlist
            .segments
            .iter()
            .map(|s| (s.sequence, s.uri.as_str(), s.discontinuity))
            .collect();
        assert_eq!(
            listed,
            [
                (0, "seg-7-4.m4s", false),
                (1, "seg-8-0.m4s", true),
                (2, "seg-9-0.m4s", true)
            ],
            "{text}"
        );
        // The parts players loaded are listed as they were, before the new discontinuity.
        let at = |needle: &str| {
            text.find(needle)
                .unwrap_or_else(|| panic!("{needle}: {text}"))
        };
        assert!(at("seg-8-0.0.m4s") < at("seg-8-0.1.m4s"));
        assert!(at("seg-8-0.1.m4s") < at("\nseg-8-0.m4s"));
        assert!(at("\nseg-8-0.m4s") < text.rfind("#EXT-X-DISCONTINUITY").unwrap());
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 2, "{text}");
        assert_eq!(
            media.get("s/seg-8-0.m4s").await.unwrap().as_deref(),
            Some(&b"abcde"[..])
        );
        assert_eq!(playlist.segments[1].start_ticks, Some(2_000_000));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
