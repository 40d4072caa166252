//! What the media store says was published: the ground truth a record that lost writes is
//! rebuilt from (issue #14, docs/decisions/0020-media-store-is-the-ground-truth.md).
//!
//! Every object of a stream carries the epoch of the session that wrote it in its name
//! (`seg-E-N.ext`, `seg-E-N.P.m4s`, `init-E-ID.mp4`), and every session keeps a snapshot of
//! its record next to them, `record-E.json`, written before each compare-and-set that
//! changes its playlist (and at its admission, before anything else: the epoch is claimed
//! in the media store first). So the media store tells, whatever the state store forgot:
//!
//! - the highest epoch ever used for the stream ([`Published::highest_epoch`]): a new
//!   session takes one above it, so no name is ever issued twice;
//! - the last playlist any session wrote ([`Published::snapshot`]: the snapshot of the
//!   highest epoch), from which a missing or older record is rebuilt, so the media and
//!   discontinuity sequences never go back and no listed URL changes content.

use bytes::Bytes;
use tracing::warn;

use super::object_epoch;
use crate::store::{MediaStore, StoreError, StreamRecord};

/// Snapshots read, newest first, before giving up on finding a readable one (a snapshot
/// deleted between the listing and the read, or written by a newer version).
const MAX_SNAPSHOTS_TRIED: usize = 3;

/// The name of the snapshot of the record as the session at `epoch` last wrote it.
pub(super) fn snapshot_name(epoch: u64) -> String {
    format!("record-{epoch}.json")
}

/// The epoch of a snapshot's name, if `name` is one.
pub(super) fn snapshot_epoch(name: &str) -> Option<u64> {
    name.strip_prefix("record-")?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

/// What the media store holds of a stream.
#[derive(Debug, Default)]
pub(super) struct Published {
    /// The highest epoch any object (segment, part, init, snapshot) carries.
    pub highest_epoch: Option<u64>,
    /// The record as the session of the highest snapshot epoch last wrote it.
    pub snapshot: Option<StreamRecord>,
    /// The epochs of every snapshot listed (older ones are deleted once a newer session
    /// holds the stream).
    pub snapshot_epochs: Vec<u64>,
}

/// What a snapshot must never be behind: what the playlist lists as far as media sequence
/// numbers go (the listed segments and the sequences, a pending discontinuity, the end,
/// whether a segment is open, i.e. its number announced by a first part) and whether the
/// publisher is connected. The writer stores a snapshot when this changes, not for every
/// LL-HLS part: the parts listed after the open segment's first one are given up by a
/// rebuild from the snapshot (decision 0020, "Snapshot cost"), no sequence number is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Listed {
    epoch: u64,
    media_sequence: u64,
    discontinuity_sequence: u64,
    next_sequence: u64,
    pending_discontinuity: bool,
    ended: bool,
    /// The open segment's discontinuity flag and init segment, when one is open.
    open: Option<(bool, Option<String>)>,
    publisher_left: bool,
}

impl Listed {
    pub(super) fn of(record: &StreamRecord) -> Self {
        let p = &record.playlist;
        Self {
            epoch: p.epoch,
            media_sequence: p.media_sequence,
            discontinuity_sequence: p.discontinuity_sequence,
            next_sequence: p.next_sequence,
            pending_discontinuity: p.pending_discontinuity,
            ended: p.ended,
            open: p
                .open
                .as_ref()
                .map(|o| (o.discontinuity, o.map_uri.clone())),
            publisher_left: record.publisher_left_ms.is_some(),
        }
    }
}

/// Lists the stream's objects under `prefix` and reads its newest snapshot.
pub(super) async fn read(media: &dyn MediaStore, prefix: &str) -> Result<Published, StoreError> {
    let names = media.list(prefix).await?;
    let highest_epoch = names.iter().filter_map(|n| object_epoch(n)).max();
    let mut snapshot_epochs: Vec<u64> = names.iter().filter_map(|n| snapshot_epoch(n)).collect();
    snapshot_epochs.sort_unstable_by(|a, b| b.cmp(a));
    let mut snapshot = None;
    for epoch in snapshot_epochs.iter().take(MAX_SNAPSHOTS_TRIED) {
        let path = format!("{prefix}/{}", snapshot_name(*epoch));
        // `None`: deleted since the listing.
        let Some(bytes) = media.get(&path).await? else {
            continue;
        };
        match serde_json::from_slice::<StreamRecord>(&bytes) {
            Ok(r) if r.playlist.epoch == *epoch && r.id.prefix() == prefix => {
                snapshot = Some(r);
                break;
            }
            Ok(_) => {
                warn!(%path, "a record snapshot of another epoch or stream than its name; skipped")
            }
            Err(e) => warn!(%path, error = %e, "unreadable record snapshot; skipped"),
        }
    }
    Ok(Published {
        highest_epoch,
        snapshot,
        snapshot_epochs,
    })
}

/// Stores the snapshot of `record` (at its epoch) under `prefix`.
pub(super) async fn write(
    media: &dyn MediaStore,
    prefix: &str,
    record: &StreamRecord,
) -> Result<(), StoreError> {
    let json = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt {
        what: record.id.to_string(),
        reason: e.to_string(),
    })?;
    let path = format!("{prefix}/{}", snapshot_name(record.playlist.epoch));
    media.put(&path, Bytes::from(json)).await
}

#[cfg(test)]
mod tests {
    use tidegate_packager::{Container, PartEntry, PlaylistState, SegmentEntry};

    use super::*;
    use crate::store::StreamId;

    fn part(segment: u64, index: u64) -> PartEntry {
        PartEntry {
            uri: format!("seg-3-{segment}.{index}.m4s"),
            duration_secs: 1.0 / 3.0,
            independent: index == 0,
            gap: false,
            offset: 10 * index,
            bytes: 10,
        }
    }

    /// A snapshot is due when a segment is listed, a segment opens, the publisher leaves
    /// or the stream ends; not for the second and later parts of the open segment.
    #[test]
    fn parts_after_the_first_do_not_make_a_snapshot_due() {
        let mut playlist = PlaylistState::new(Container::Fmp4, 6, 2);
        playlist.epoch = 3;
        let mut record = StreamRecord {
            id: StreamId::new("default", "s").unwrap(),
            playlist,
            updated_ms: 0,
            publisher_left_ms: None,
            owner: "here".into(),
            last_media_ms: None,
            takeovers: Vec::new(),
            session_started_ms: None,
            holder: None,
        };
        let mut due = 0;
        let mut last = Listed::of(&record);
        let step = |record: &StreamRecord, last: &mut Listed, due: &mut usize| {
            let now = Listed::of(record);
            if now != *last {
                *due += 1;
                *last = now;
            }
        };
        for segment in 0..5u64 {
            for index in 0..12 {
                record
                    .playlist
                    .push_part(part(segment, index), 0, None, None);
                step(&record, &mut last, &mut due);
            }
            record.playlist.push_segment(SegmentEntry {
                sequence: 0,
                uri: format!("seg-3-{segment}.m4s"),
                duration_secs: 4.0,
                program_date_time_ms: 0,
                discontinuity: false,
                map_uri: None,
                bytes: 120,
                start_ticks: None,
                video_frames: None,
                video_cadence: None,
                period: None,
                parts: (0..12).map(|i| part(segment, i)).collect(),
            });
            step(&record, &mut last, &mut due);
        }
        // Two a segment (its first part, its listing) where 13 were written before.
        assert_eq!(due, 10);
        record.publisher_left_ms = Some(1);
        step(&record, &mut last, &mut due);
        record.playlist.end();
        step(&record, &mut last, &mut due);
        assert_eq!(due, 12);
    }

    #[test]
    fn snapshot_names_carry_their_epoch() {
        assert_eq!(snapshot_name(17), "record-17.json");
        assert_eq!(snapshot_epoch("record-17.json"), Some(17));
        assert_eq!(object_epoch("record-17.json"), Some(17));
        for other in ["record-.json", "record-x.json", "record-5", "seg-5-0.m4s"] {
            assert_eq!(snapshot_epoch(other), None, "{other}");
        }
    }
}
