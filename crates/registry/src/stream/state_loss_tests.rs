//! A state store that lost a stream's record (issue #14): a new session rebuilds it from
//! the media store's snapshot (the sequence goes on, the epoch is above every published
//! one), a live session writes it again without closing its publisher, and viewers are
//! served the snapshot meanwhile.

use tidegate_packager::SegmentEntry;

use super::*;

fn segment(epoch: u64, n: u64) -> SegmentEntry {
    SegmentEntry {
        sequence: 0,
        uri: format!("seg-{epoch}-{n}.m4s"),
        duration_secs: 2.0,
        program_date_time_ms: 1_000 + 2_000 * i64::try_from(n).unwrap(),
        discontinuity: false,
        map_uri: Some(format!("init-{epoch}-0.mp4")),
        bytes: 10,
        start_ticks: Some(180_000 * i64::try_from(n).unwrap()),
        video_frames: Some(50),
        video_cadence: None,
        period: None,
        parts: Vec::new(),
    }
}

/// A record at `epoch` with `segments` listed (sequences 0..), as its session left it.
fn published_record(id: &StreamId, epoch: u64, segments: u64) -> StreamRecord {
    let mut playlist = PlaylistState::new(Container::Fmp4, 6, 2);
    playlist.epoch = epoch;
    for n in 0..segments {
        playlist.push_segment(segment(epoch, n));
    }
    StreamRecord {
        id: id.clone(),
        playlist,
        updated_ms: unix_ms() - 60_000,
        publisher_left_ms: Some(unix_ms() - 1_000),
        owner: "elsewhere".into(),
        last_media_ms: Some(unix_ms() - 1_000),
        takeovers: Vec::new(),
        session_started_ms: None,
        holder: None,
    }
}

/// No record, but a snapshot and objects of a later epoch in the media store: the new
/// session resumes the snapshot's playlist (its sequence goes on), at an epoch above every
/// epoch the media store holds, and writes the record back.
#[tokio::test]
async fn a_lost_record_is_rebuilt_from_the_media_store() {
    let (dir, streams) = test_streams("rebuild", "state");
    let id = StreamId::new("default", "lost").unwrap();
    let prefix = id.prefix();
    let snapshot = published_record(&id, 40, 9);
    published::write(&*streams.media, &prefix, &snapshot)
        .await
        .unwrap();
    // An object of a later session whose record write and snapshot were both lost.
    streams
        .media
        .put(&format!("{prefix}/seg-41-0.m4s"), Bytes::from_static(b"x"))
        .await
        .unwrap();

    let publisher = streams
        .begin_publish(id.clone(), Protocol::Rtmp)
        .await
        .unwrap();
    assert_eq!(publisher.epoch(), 42, "above every published epoch");
    let stored = streams
        .state
        .load(&id)
        .await
        .unwrap()
        .expect("written back");
    assert_eq!(stored.playlist.epoch, 42);
    assert_eq!(stored.playlist.next_sequence, 9, "the sequence goes on");
    assert_eq!(stored.playlist.segments.len(), 6);
    assert_eq!(
        stored.playlist.segments.back().map(|s| s.uri.as_str()),
        Some("seg-40-8.m4s")
    );
    // The new session's epoch is claimed in the media store too.
    let published = published::read(&*streams.media, &prefix).await.unwrap();
    assert_eq!(published.highest_epoch, Some(42));
    assert_eq!(
        published.snapshot.map(|r| r.playlist.epoch),
        Some(42),
        "the new session's snapshot is the newest"
    );
    drop(publisher);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A record older than the newest snapshot (a store set back to a replica that missed the
/// last writes) is rebuilt too; the compare-and-set expects the stale epoch it replaces.
#[tokio::test]
async fn a_record_older_than_the_media_store_is_rebuilt() {
    let (dir, streams) = test_streams("setback", "state");
    let id = StreamId::new("default", "setback").unwrap();
    let old = published_record(&id, 30, 3);
    streams.state.compare_and_set(None, &old).await.unwrap();
    published::write(&*streams.media, &id.prefix(), &published_record(&id, 31, 7))
        .await
        .unwrap();
    let publisher = streams
        .begin_publish(id.clone(), Protocol::Rtmp)
        .await
        .unwrap();
    assert_eq!(publisher.epoch(), 32);
    let stored = streams.state.load(&id).await.unwrap().unwrap();
    assert_eq!(stored.playlist.next_sequence, 7);
    drop(publisher);
    let _ = std::fs::remove_dir_all(&dir);
}

/// While the state store has no record, a viewer is served the media store's snapshot.
#[tokio::test]
async fn viewers_are_served_the_snapshot_while_the_record_is_missing() {
    let (dir, streams) = test_streams("snapshot-view", "state");
    let id = StreamId::new("default", "shown").unwrap();
    assert!(streams.rendered(&id).await.unwrap().is_none());
    published::write(&*streams.media, &id.prefix(), &published_record(&id, 5, 4))
        .await
        .unwrap();
    // The miss above is remembered for a moment (lookups.rs): asked again after it.
    tokio::time::sleep(lookups::LOOKUP_TTL + Duration::from_millis(50)).await;
    let view = streams.rendered(&id).await.unwrap().expect("served");
    let text = String::from_utf8_lossy(&view.media).into_owned();
    assert!(text.contains("seg-5-3.m4s"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The record of a live session disappears (the store was flushed): its writer writes it
/// again at its own epoch at its next lease renewal, and the session is not fenced.
#[tokio::test]
async fn a_live_session_writes_its_lost_record_again() {
    let (dir, streams) = test_streams("rewrite", "state");
    let id = StreamId::new("default", "flushed").unwrap();
    streams
        .state
        .compare_and_set(None, &published_record(&id, 10, 2))
        .await
        .unwrap();
    let publisher = streams
        .begin_publish(id.clone(), Protocol::Rtmp)
        .await
        .unwrap();
    let epoch = publisher.epoch();
    std::fs::remove_file(dir.join("state/default/flushed.json")).unwrap();
    assert!(streams.state.load(&id).await.unwrap().is_none());
    let deadline = Instant::now() + Duration::from_secs(20);
    let back = loop {
        if let Some(r) = streams.state.load(&id).await.unwrap() {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the record was never written again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(back.playlist.epoch, epoch);
    assert_eq!(back.playlist.next_sequence, 2);
    assert!(
        !publisher.closed().is_cancelled(),
        "the publisher was closed"
    );

    // A newer session's snapshot in the media store (its record write lost too) fences
    // it instead.
    let mut newer = back.clone();
    newer.playlist.epoch = epoch + 1;
    published::write(&*streams.media, &id.prefix(), &newer)
        .await
        .unwrap();
    std::fs::remove_file(dir.join("state/default/flushed.json")).unwrap();
    tokio::time::timeout(Duration::from_secs(20), publisher.closed().cancelled())
        .await
        .expect("fenced by the newer epoch");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The sweeper finds a record set back to a session whose publisher left long ago, while the
/// media store has a newer, live snapshot: it leaves the stream alone. Once the snapshot is
/// as stale, it ends the stream as the snapshot has it, at an epoch above every published one.
#[tokio::test]
async fn the_sweeper_decides_on_the_newer_snapshot() {
    let (dir, streams) = test_streams("sweep-setback", "state");
    let id = StreamId::new("default", "setback").unwrap();
    let mut stale = published_record(&id, 8, 3);
    stale.publisher_left_ms = Some(unix_ms() - 600_000);
    streams.state.compare_and_set(None, &stale).await.unwrap();
    let mut live = published_record(&id, 10, 5);
    live.publisher_left_ms = None;
    live.updated_ms = unix_ms();
    live.last_media_ms = Some(unix_ms());
    published::write(&*streams.media, &id.prefix(), &live)
        .await
        .unwrap();
    assert_eq!(streams.sweep().await.unwrap(), 0, "a live stream was ended");
    assert_eq!(
        streams
            .state
            .load(&id)
            .await
            .unwrap()
            .unwrap()
            .playlist
            .epoch,
        8
    );

    let mut gone = live.clone();
    gone.publisher_left_ms = Some(unix_ms() - 600_000);
    published::write(&*streams.media, &id.prefix(), &gone)
        .await
        .unwrap();
    assert_eq!(streams.sweep().await.unwrap(), 1);
    let ended = streams.state.load(&id).await.unwrap().unwrap();
    assert!(ended.playlist.ended);
    assert_eq!(ended.playlist.epoch, 11);
    assert_eq!(
        ended.playlist.next_sequence, 5,
        "ended as the snapshot had it"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
