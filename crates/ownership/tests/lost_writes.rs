//! The rules for a state store that lost writes (issue #14): epochs above everything the
//! media store holds, records rebuilt from its snapshot, writers that re-establish their
//! record instead of taking a lost one for a takeover.

use std::time::Duration;

use tidegate_ownership::*;

fn policy() -> Policy {
    Policy::new(
        Takeover::Newest,
        Duration::from_secs(10),
        Duration::from_secs(60),
    )
}

fn here(worker: &str) -> Here<'_> {
    Here {
        worker,
        live_activity_ms: None,
        same_container: true,
    }
}

#[test]
fn a_new_session_starts_above_every_epoch_the_media_store_holds() {
    let now = 1_000_000;
    // No record (it was lost), but the media store holds objects of a later epoch than
    // the clock would give (a worker whose clock runs ahead).
    let a = admit(&here("b"), None, now, &policy())
        .unwrap()
        .above_published(Some(2_000_000));
    assert_eq!(a.epoch(), 2_000_001);
    assert_eq!(a.start, Start::New);
    // Nothing published above the clock: the clock's epoch stays.
    let a = admit(&here("b"), None, now, &policy())
        .unwrap()
        .above_published(Some(10));
    assert_eq!(a.epoch(), first_epoch(now));
}

#[test]
fn a_resume_on_a_record_that_lost_writes_skips_the_epochs_it_lost() {
    let now = 1_000_000;
    let stale = Record {
        epoch: 7,
        owner: "a".into(),
        ended: false,
        updated_ms: now - 1_000,
        publisher_left_ms: Some(now - 1_000),
        last_media_ms: Some(now - 1_000),
        takeovers: Vec::new(),
    };
    let a = admit(&here("a"), Some(&stale), now, &policy())
        .unwrap()
        .above_published(Some(9));
    assert_eq!(a.start, Start::Resume);
    assert_eq!(a.epoch(), 10);
    assert_eq!(a.expected_epoch, Some(7));
}

#[test]
fn the_newer_of_record_and_snapshot_wins() {
    assert!(!rebuild_from_snapshot(None, None));
    assert!(!rebuild_from_snapshot(Some(3), None));
    assert!(rebuild_from_snapshot(None, Some(3)));
    assert!(rebuild_from_snapshot(Some(3), Some(4)));
    assert!(!rebuild_from_snapshot(Some(4), Some(4)));
    assert!(!rebuild_from_snapshot(Some(5), Some(4)));
}

#[test]
fn a_lost_record_is_written_again_unless_a_newer_epoch_exists() {
    // Flushed: no record, nothing newer in the media store.
    assert_eq!(
        after_conflict(7, None, Some(7)),
        AfterConflict::Reestablish { expected: None }
    );
    // Set back to an older epoch (a promoted replica that missed the last writes).
    assert_eq!(
        after_conflict(7, Some(5), Some(7)),
        AfterConflict::Reestablish { expected: Some(5) }
    );
    // A newer session exists: in the record, or only in the media store (its record write
    // was lost too).
    assert_eq!(after_conflict(7, Some(8), None), AfterConflict::Fenced);
    assert_eq!(after_conflict(7, None, Some(8)), AfterConflict::Fenced);
    assert_eq!(after_conflict(7, Some(5), Some(9)), AfterConflict::Fenced);
}

/// Two sessions that both find their record set back converge on the higher epoch: the
/// lower one re-establishes, then finds the higher one's write and is fenced; the higher one
/// re-establishes over the lower one's.
#[test]
fn two_writers_after_a_lost_write_converge_on_the_higher_epoch() {
    let (old, new) = (7u64, 8u64);
    // The store lost the newer session's write: it holds the old one's.
    let mut stored = Some(old);
    // The old session writes on happily (its own epoch is stored); the new one conflicts.
    match after_conflict(new, stored, Some(new)) {
        AfterConflict::Reestablish { expected } => {
            assert!(cas_admits(stored, expected));
            stored = Some(new);
        }
        AfterConflict::Fenced => panic!("the newer session must win"),
    }
    // The old session's next write conflicts with the newer epoch: it is over.
    assert_eq!(
        after_conflict(old, stored, Some(new)),
        AfterConflict::Fenced
    );
}
