//! The per-publish-session writer task: stores what the segmenter cut, then lists it.
//!
//! Order of work for every segment: put the object (init segments first, in order), then
//! push it into the playlist and compare-and-set the record on the session's epoch, then
//! render. Faults:
//!
//! - **Media store unreachable**: objects wait in a bounded backlog and are retried; past
//!   [`MAX_BACKLOG_SEGMENTS`] the oldest segment is dropped, counted, and the playlist marks
//!   the gap with a discontinuity.
//! - **State store unreachable**: the playlist goes on in memory (this worker keeps serving
//!   it) and the record is written when the store answers again; `/readyz` fails meanwhile.
//! - **Conflict**: a newer epoch owns the stream. The session is fenced at once: the
//!   connection closes and nothing more is written.
//!
//! What this worker serves of its own session (its view, and the change signal blocking
//! requests wait on) moves only when a compare-and-set of the record succeeded: a part or
//! segment the store never took (the session was fenced while listing it) is never shown,
//! so a newer session may number its own media there. Only the hint of parts given up
//! shows at once, when nothing else is waiting for the store; a store that cannot be
//! reached at all shows the playlist as it goes on here.
//!
//! While live, the record's `last_media_ms` is renewed every [`LEASE_RENEW`] (the lease).
//!
//! LL-HLS parts (docs/decisions/0018-ll-hls-parts.md): each part the segmenter cuts is
//! stored as an object of its own (`seg-E-N.P.m4s`), then listed in the open segment
//! (`push_part`, the next part's URI as the preload hint) and committed like a segment, so
//! other workers see it through the change feed. When the segment is stored and listed its
//! parts become slices of it (`PartEntry { offset, bytes }`) and their objects are deleted a
//! grace period later. Parts are the first thing given up under pressure: the parts still
//! waiting when their segment is cut are dropped (the segment carries them), at most
//! [`MAX_BACKLOG_PARTS`] wait, and once one part of a segment is dropped the rest of that
//! segment's parts are not listed either (a playlist never skips a part). A segment dropped
//! from the backlog takes its listed parts out of the playlist with it.
//!
//! A session of a stream without a record (a new stream) writes nothing until its first
//! media frame: then its first commit creates the record (a compare-and-set on "no record",
//! which fences it if another worker created one first, and is refused outright a retention
//! after the session's admission: see [`ownership::plan_write`]). A session that ends before that
//! leaves nothing in either store; nor does one whose record the state store refused until
//! it ended (the media it stored is deleted).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidegate_media::TIMESCALE;
use tidegate_ownership::{self as ownership, AfterConflict, Write};
use tidegate_packager::{part_uri, CutPart, CutSegment, PartEntry, SegmentEntry, SegmenterOutput};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{published, Stream, StreamInfo, Streams, WriterMsg};
use crate::metrics::{RecordRestore, StoreOp};
use crate::store::{StoreError, StreamRecord};
use crate::unix_ms;

/// Segments (and inits) that may wait between the connection and the writer.
pub(super) const QUEUE_DEPTH: usize = 16;
/// Segments kept while the media store is unreachable (about a minute at 2 s segments).
pub const MAX_BACKLOG_SEGMENTS: usize = 32;
pub use tidegate_ownership::LEASE_RENEW;
/// LL-HLS parts that may wait for the media store; past it the oldest is dropped (and the
/// rest of its segment's parts with it).
pub const MAX_BACKLOG_PARTS: usize = 16;
/// Retry delay after a store failure (doubles up to [`MAX_RETRY`]).
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(2);
/// After the publisher left, how long the writer keeps retrying what is still unstored.
const FINISH_DEADLINE: Duration = Duration::from_secs(30);

enum Object {
    Init {
        path: String,
        uri: String,
        data: Bytes,
    },
    Segment {
        path: String,
        entry: SegmentEntry,
        data: Bytes,
        cut_at: Instant,
        info: Option<StreamInfo>,
        /// The session's count of this segment (`N` of `seg-E-N`).
        counter: u64,
    },
    /// An LL-HLS part of segment `counter`.
    Part {
        path: String,
        entry: PartEntry,
        data: Bytes,
        /// `EXT-X-PROGRAM-DATE-TIME` of its segment.
        program_date_time_ms: i64,
        /// Its segment follows a discontinuity.
        discontinuity: bool,
        /// The dts of its first frame, 90 kHz (the segment's start, for its first part).
        start_dts: i64,
        counter: u64,
        /// The URI of the part after it (the preload hint once it is listed).
        next: String,
    },
}

impl Object {
    fn is_part(&self) -> bool {
        matches!(self, Object::Part { .. })
    }
}

pub(super) struct Writer {
    streams: Arc<Streams>,
    stream: Arc<Stream>,
    epoch: u64,
    generation: u64,
    /// The playlist as this session sees it (ahead of the store while it is unreachable).
    record: StreamRecord,
    /// `record` has changes the state store has not taken yet.
    dirty: bool,
    last_commit: Instant,
    rx: mpsc::Receiver<WriterMsg>,
    fenced: CancellationToken,
    last_media_ms: Arc<AtomicI64>,
    /// The record is in the state store at `epoch` (else the first commit creates it).
    stored: bool,
    /// When the session was admitted, Unix ms (a first commit a retention later is refused).
    admitted_ms: i64,
    /// The publisher delivered a media frame.
    media_seen: Arc<AtomicBool>,
    /// The init segment the next media segments need (fMP4).
    map_uri: Option<String>,
    /// LL-HLS: the segment (its counter) whose parts the playlist lists as the open one.
    open_counter: Option<u64>,
    /// LL-HLS: the stored part objects of the open segment (paths).
    open_part_objects: Vec<String>,
    /// LL-HLS: a part of this segment was dropped: its later parts are not listed.
    parts_given_up: Option<u64>,
    backlog: VecDeque<Object>,
    segment_counter: u64,
    retry: Duration,
    retry_at: Option<Instant>,
    /// [`FINISH_DEADLINE`] (shorter in unit tests).
    finish_deadline: Duration,
    /// What the last snapshot this session stored lists (`None`: none stored yet).
    snapshot_listed: Option<published::Listed>,
    /// The open segment's parts in the last snapshot this session stored.
    snapshot_parts: usize,
    /// The last write of the record failed because the state store could not be reached
    /// (cleared by the next one that succeeds).
    state_failing: bool,
}

impl Writer {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        streams: Arc<Streams>,
        stream: Arc<Stream>,
        record: StreamRecord,
        generation: u64,
        rx: mpsc::Receiver<WriterMsg>,
        fenced: CancellationToken,
        last_media_ms: Arc<AtomicI64>,
        stored: bool,
        media_seen: Arc<AtomicBool>,
    ) -> Self {
        Self {
            epoch: record.playlist.epoch,
            admitted_ms: record.session_started_ms.unwrap_or(record.updated_ms),
            streams,
            stream,
            generation,
            record,
            dirty: false,
            last_commit: Instant::now(),
            rx,
            fenced,
            last_media_ms,
            stored,
            media_seen,
            map_uri: None,
            open_counter: None,
            open_part_objects: Vec::new(),
            parts_given_up: None,
            backlog: VecDeque::new(),
            segment_counter: 0,
            retry: FIRST_RETRY,
            retry_at: None,
            finish_deadline: FINISH_DEADLINE,
            snapshot_listed: None,
            snapshot_parts: 0,
            state_failing: false,
        }
    }

    fn accept(&mut self, msg: SegmenterOutput, cut_at: Instant, info: Option<StreamInfo>) {
        let prefix = self.stream.id.prefix();
        match msg {
            SegmenterOutput::Init { data, id } => {
                let uri = format!("init-{}-{}.mp4", self.epoch, id);
                self.backlog.push_back(Object::Init {
                    path: format!("{prefix}/{uri}"),
                    uri,
                    data,
                });
            }
            SegmenterOutput::Part(part) => self.accept_part(part),
            SegmenterOutput::Segment(seg) => {
                let counter = self.segment_counter;
                let uri = self.segment_uri(counter);
                self.segment_counter += 1;
                let mut entry = SegmentEntry::from_cut(&seg, uri.clone(), None);
                entry.parts = segment_parts(&seg, &uri);
                if entry.parts.is_empty() && !seg.parts.is_empty() {
                    warn!(stream = %self.stream.id, segment = %uri, "the segment's parts do not tile it; listed without parts");
                }
                // Parts still waiting are this segment's (or older): the segment carries
                // them, listing them one by one now is pointless.
                self.backlog.retain(|o| !o.is_part());
                self.backlog.push_back(Object::Segment {
                    path: format!("{prefix}/{uri}"),
                    entry,
                    data: seg.data,
                    cut_at,
                    info,
                    counter,
                });
                self.bound_backlog();
            }
        }
    }

    /// The URI of the session's segment number `counter`.
    fn segment_uri(&self, counter: u64) -> String {
        let ext = self.record.playlist.container.segment_extension();
        format!("seg-{}-{}.{}", self.epoch, counter, ext)
    }

    /// LL-HLS: queues a part of the segment being cut (the next segment's counter).
    fn accept_part(&mut self, part: CutPart) {
        let counter = self.segment_counter;
        if self.parts_given_up == Some(counter) {
            return;
        }
        let segment = self.segment_uri(counter);
        let uri = part_uri(&segment, part.index);
        let entry = PartEntry {
            duration_secs: part.duration as f64 / f64::from(TIMESCALE),
            independent: part.independent,
            gap: false,
            offset: part.offset,
            bytes: part.data.len() as u64,
            uri: uri.clone(),
        };
        self.backlog.push_back(Object::Part {
            path: format!("{}/{uri}", self.stream.id.prefix()),
            entry,
            data: part.data,
            program_date_time_ms: part.segment_program_date_time_ms,
            discontinuity: part.discontinuity,
            start_dts: part.start_dts,
            counter,
            // After a segment's last part comes the next segment's first.
            next: if part.last {
                part_uri(&self.segment_uri(counter.saturating_add(1)), 0)
            } else {
                part_uri(&segment, part.index.saturating_add(1))
            },
        });
        if self.backlog.iter().filter(|o| o.is_part()).count() > MAX_BACKLOG_PARTS {
            // The store is slow or away: this segment's parts are given up (it comes whole).
            self.parts_given_up = Some(counter);
            self.backlog.retain(|o| !o.is_part());
            // No part of this segment is coming any more: hint none.
            if self.record.playlist.preload_hint.take().is_some() {
                self.removed();
            }
            warn!(stream = %self.stream.id, "media store backlog: LL-HLS parts dropped until the next segment");
        }
    }

    /// LL-HLS: takes the open segment's parts (and the preload hint) out of the playlist:
    /// its segment will never be listed (dropped, or the session is over). Their objects
    /// are deleted after the grace period.
    fn close_open_parts(&mut self) {
        let playlist = &mut self.record.playlist;
        let had_open = playlist.open.take().is_some();
        let had_hint = playlist.preload_hint.take().is_some();
        if had_open || had_hint {
            // Shown with the next commit: a part following at once (the hinted one, of the
            // next segment) must not find its hint gone meanwhile.
            self.dirty = true;
        }
        self.open_counter = None;
        self.delete_part_objects();
    }

    /// Something was taken out of the playlist for good: shown at once when the rest of it
    /// is what the store holds (a removal lists nothing uncommitted), else with the next
    /// commit.
    fn removed(&mut self) {
        if !self.dirty {
            self.show();
        }
        self.dirty = true;
    }

    /// This session's playlist becomes the view this worker serves (and wakes its waiters).
    fn show(&self) {
        self.stream
            .set_owned_view(&self.record.playlist, self.generation);
    }

    /// Deletes the open segment's part objects after the grace period (a worker with a
    /// slightly older view may still ask for them).
    fn delete_part_objects(&mut self) {
        let grace = self
            .streams
            .settings_for(&self.stream.id.tenant)
            .delete_grace();
        for path in self.open_part_objects.drain(..) {
            self.streams.delete_later(path, grace);
        }
    }

    /// Drops the oldest waiting segments past the bound; the gap becomes a discontinuity.
    fn bound_backlog(&mut self) {
        while self
            .backlog
            .iter()
            .filter(|o| matches!(o, Object::Segment { .. }))
            .count()
            > MAX_BACKLOG_SEGMENTS
        {
            let Some(pos) = self
                .backlog
                .iter()
                .position(|o| matches!(o, Object::Segment { .. }))
            else {
                break;
            };
            if let Some(Object::Segment { counter, .. }) = self.backlog.remove(pos) {
                if self.open_counter == Some(counter) {
                    self.close_open_parts();
                }
            }
            self.streams.metrics.segments_dropped.inc();
            self.record.playlist.mark_discontinuity();
            warn!(stream = %self.stream.id, "media store backlog full: dropped the oldest segment");
        }
    }

    /// Stores what waits, in order, and lists each stored segment. Stops at the first
    /// failure (retried later).
    async fn pump(&mut self) {
        while let Some(obj) = self.backlog.front() {
            let (path, data) = match obj {
                Object::Init { path, data, .. }
                | Object::Segment { path, data, .. }
                | Object::Part { path, data, .. } => (path.clone(), data.clone()),
            };
            if let Err(e) = self.streams.media.put(&path, data).await {
                let op = if matches!(obj, Object::Init { .. }) {
                    StoreOp::PutInit
                } else {
                    StoreOp::PutSegment
                };
                self.streams.metrics.store_error(op);
                self.streams.note_media(false);
                warn!(stream = %self.stream.id, error = %e, waiting = self.backlog.len(), "could not store media; will retry");
                self.schedule_retry();
                return;
            }
            self.streams.note_media(true);
            let Some(obj) = self.backlog.pop_front() else {
                return;
            };
            // A part that requests wait for (its preload hint): handed to the origin's
            // recent objects, so their answers do not read it back.
            if let Object::Part { path, data, .. } = &obj {
                if self.stream.media_waiters() > 0 {
                    self.streams.recent.insert(path, data.clone());
                }
            }
            match obj {
                Object::Init { uri, .. } => self.map_uri = Some(uri),
                Object::Part {
                    path,
                    entry,
                    program_date_time_ms,
                    discontinuity,
                    start_dts,
                    counter,
                    next,
                    ..
                } => {
                    if self.open_counter != Some(counter) {
                        // Parts of a segment that will never be listed go first.
                        self.close_open_parts();
                        self.open_counter = Some(counter);
                    }
                    let playlist = &mut self.record.playlist;
                    playlist.push_part(
                        entry,
                        program_date_time_ms,
                        self.map_uri.clone(),
                        Some(next),
                    );
                    if let Some(open) = playlist.open.as_mut() {
                        open.discontinuity |= discontinuity;
                        // The first part listed is the segment's first (a segment whose
                        // part was dropped lists none): where the segment starts.
                        open.start_ticks.get_or_insert(start_dts);
                    }
                    self.open_part_objects.push(path);
                    // Shown once the record with it is stored (`committed`).
                    self.dirty = true;
                }
                Object::Segment {
                    mut entry,
                    cut_at,
                    info,
                    counter,
                    ..
                } => {
                    entry.map_uri = self.map_uri.clone();
                    if self.open_counter == Some(counter) {
                        self.check_open_parts(&entry);
                    } else {
                        self.close_open_parts();
                    }
                    if let Some(info) = info {
                        self.record.playlist.codecs = info.codecs;
                        self.record.playlist.resolution = info.resolution;
                        self.record.playlist.audio_sample_rate = info.audio_sample_rate;
                    }
                    let sequence = self.record.playlist.next_sequence;
                    let evicted = self.record.playlist.push_segment(entry);
                    if self.record.playlist.part_target_secs.is_some() {
                        // The next part to come: the next segment's first.
                        self.record.playlist.preload_hint =
                            Some(part_uri(&self.segment_uri(counter.saturating_add(1)), 0));
                    }
                    self.open_counter = None;
                    self.delete_part_objects();
                    // Shown once the record with it is stored (`committed`).
                    self.dirty = true;
                    self.streams.metrics.segments.inc();
                    self.streams
                        .metrics
                        .segment_latency
                        .observe(cut_at.elapsed().as_secs_f64());
                    debug!(stream = %self.stream.id, sequence, "segment listed");
                    self.schedule_deletes(evicted);
                }
            }
        }
        self.retry = FIRST_RETRY;
    }

    /// LL-HLS: the parts listed for the segment about to be listed must be the segment's
    /// (same names, same bytes): `push_segment` then replaces them by the segment's own list.
    /// A segment listed without parts (they did not tile it) takes the open parts away.
    fn check_open_parts(&mut self, entry: &SegmentEntry) {
        let Some(open) = self.record.playlist.open.as_ref() else {
            return;
        };
        let agree = open.parts.iter().enumerate().all(|(i, p)| {
            entry
                .parts
                .get(i)
                .is_some_and(|s| s.uri == p.uri && s.offset == p.offset && s.bytes == p.bytes)
        });
        if !agree {
            warn!(stream = %self.stream.id, segment = %entry.uri, "listed parts differ from the segment's; the segment's list wins");
        }
        if entry.parts.is_empty() {
            self.record.playlist.open = None;
        }
    }

    fn schedule_retry(&mut self) {
        self.retry_at = Some(Instant::now() + self.retry);
        self.retry = (self.retry * 2).min(MAX_RETRY);
    }

    /// A new stream whose publisher has sent no media yet: nothing is stored for it.
    fn unborn(&self) -> bool {
        !self.stored && !self.media_seen.load(Ordering::Relaxed)
    }

    /// Writes the record if it changed or the lease is due. `Err` when fenced.
    async fn commit(&mut self, force_lease: bool) -> Result<(), StoreError> {
        // A new stream's record is created as soon as media flows (it is its lease). While
        // connected, the holder's figures are renewed every LEASE_RENEW even when no media
        // came (a stalled encoder must show as `warning` everywhere), without renewing the
        // lease: `updated_ms` and `last_media_ms` move only with a change or new media.
        let plan = ownership::plan_write(
            &ownership::SessionWrite {
                epoch: self.epoch,
                recorded: self.stored,
                fenced: self.fenced.is_cancelled(),
                changed: self.dirty,
                connected: self.record.publisher_left_ms.is_none(),
                renewal_due: force_lease && self.last_commit.elapsed() >= LEASE_RENEW,
                written_media_ms: self.record.last_media_ms,
                media_ms: self.last_media_ms.load(Ordering::Relaxed),
                admitted_ms: self.admitted_ms,
                now_ms: unix_ms(),
            },
            &self
                .streams
                .settings_for(&self.stream.id.tenant)
                .policy(self.streams.settings.takeover_policy),
        );
        let (expected, touch, lease_ms) = match plan {
            // Replaced on this worker before the record existed, or admitted a retention
            // ago (a record may have come and expired since): never create it now.
            Write::Fenced | Write::Lapsed => {
                if plan == Write::Lapsed {
                    warn!(stream = %self.stream.id, "no record yet a retention after this publish was admitted: it may not create one now");
                }
                return Err(StoreError::Conflict {
                    stored: 0,
                    held: self.epoch,
                });
            }
            Write::Skip => return Ok(()),
            Write::Put {
                expected,
                touch,
                lease_ms,
            } => (expected, touch, lease_ms),
        };
        let mut next = self.record.clone();
        if touch {
            next.updated_ms = unix_ms();
        }
        if lease_ms.is_some() {
            next.last_media_ms = lease_ms;
            // Published with the lease, so other workers can answer for this stream.
            next.holder = self.stream.telemetry.holder_figures();
        } else {
            next.holder = None;
        }
        // The media store keeps what the playlist lists before the state store does
        // (published.rs): a record the state store loses is rebuilt from it. A new stream's
        // first snapshot follows its record's creation instead (a session that loses that
        // race must leave no snapshot behind).
        let was_stored = self.stored;
        if self.dirty && was_stored && self.snapshot_due(&next) {
            self.write_snapshot(&next).await;
        }
        match self.streams.state.compare_and_set(expected, &next).await {
            Ok(()) => {
                self.committed(next);
                if !was_stored {
                    let record = self.record.clone();
                    self.write_snapshot(&record).await;
                }
                Ok(())
            }
            Err(StoreError::Conflict { stored, .. }) if was_stored => {
                self.after_conflict(stored, next).await
            }
            Err(e @ StoreError::Conflict { .. }) => Err(e),
            Err(e) => {
                self.state_unavailable(&e);
                Ok(())
            }
        }
    }

    /// Whether `next` needs a snapshot before it is written: when what it lists changed,
    /// not for each LL-HLS part (3 a second: on S3 that doubled a stream's PUTs), except
    /// while the state store cannot be reached. Then the other workers read the stream from
    /// the snapshot (`Streams::viewable_record`), and a snapshot of each part lets their
    /// LL-HLS viewers go on part by part through the outage (a Redis failover) instead of
    /// waiting for the next segment.
    fn snapshot_due(&self, next: &StreamRecord) -> bool {
        self.snapshot_listed.as_ref() != Some(&published::Listed::of(next))
            || (self.state_failing && self.snapshot_parts != open_parts(next))
    }

    /// `next` is in the state store: what it lists is shown now.
    fn committed(&mut self, next: StreamRecord) {
        self.state_failing = false;
        let changed = self.dirty;
        self.stored = true;
        self.record = next;
        if changed {
            self.show();
        }
        self.dirty = false;
        self.last_commit = Instant::now();
        self.streams.note_state(true);
    }

    /// The state store could not be reached: the playlist goes on here, shown by this
    /// worker (not fenced: no conflict came back), and is written when the store returns.
    fn state_unavailable(&mut self, e: &StoreError) {
        self.state_failing = true;
        if self.dirty {
            self.show();
        }
        self.streams.metrics.store_error(StoreOp::PutState);
        self.streams.note_state(false);
        warn!(stream = %self.stream.id, error = %e, "could not update stream state; will retry");
        self.schedule_retry();
    }

    /// Stores the snapshot of `record` in the media store (published.rs). A failure is
    /// counted and logged, not fatal: the state store still has the record (and the next
    /// commit tries again).
    async fn write_snapshot(&mut self, record: &StreamRecord) {
        let prefix = self.stream.id.prefix();
        match published::write(&*self.streams.media, &prefix, record).await {
            Ok(()) => {
                self.snapshot_listed = Some(published::Listed::of(record));
                self.snapshot_parts = open_parts(record);
            }
            Err(e) => {
                self.snapshot_listed = None;
                self.streams.metrics.store_error(StoreOp::PutSnapshot);
                warn!(stream = %self.stream.id, error = %e, "could not store the record snapshot");
            }
        }
    }

    /// A compare-and-set on the session's own epoch, after its record was stored, found
    /// `stored` (0: no record). A newer epoch (in the record or in the media store) fences
    /// the session; a missing or older record is one the state store lost (flushed,
    /// restarted without persistence, failed over to a replica that missed the last
    /// writes): the session writes `next` again over it and goes on, its publisher still
    /// connected (docs/decisions/0020-media-store-is-the-ground-truth.md).
    async fn after_conflict(&mut self, stored: u64, next: StreamRecord) -> Result<(), StoreError> {
        let stored = (stored != 0).then_some(stored);
        let conflict = |published: Option<u64>| StoreError::Conflict {
            stored: stored.max(published).unwrap_or(0),
            held: self.epoch,
        };
        if stored.is_some_and(|s| s > self.epoch) {
            return Err(conflict(None));
        }
        let published = match published::read(&*self.streams.media, &self.stream.id.prefix()).await
        {
            Ok(p) => p.highest_epoch,
            Err(e) => {
                // Cannot tell a lost record from a newer session yet: try again later.
                self.streams.metrics.store_error(StoreOp::ListMedia);
                warn!(stream = %self.stream.id, error = %e, "the stream's record is gone or older, and its media cannot be listed; will retry");
                self.schedule_retry();
                return Ok(());
            }
        };
        let expected = match ownership::after_conflict(self.epoch, stored, published) {
            AfterConflict::Fenced => return Err(conflict(published)),
            AfterConflict::Reestablish { expected } => expected,
        };
        self.write_snapshot(&next).await;
        match self.streams.state.compare_and_set(expected, &next).await {
            Ok(()) => {
                warn!(stream = %self.stream.id, epoch = self.epoch, stored_epoch = ?stored, next_sequence = next.playlist.next_sequence, "the state store had lost this stream's record; written again by its live session");
                self.streams
                    .metrics
                    .record_restored(RecordRestore::Rewritten);
                self.committed(next);
                Ok(())
            }
            // Someone wrote in between: decided again at the next write.
            Err(StoreError::Conflict { .. }) => {
                self.schedule_retry();
                Ok(())
            }
            Err(e) => {
                self.state_unavailable(&e);
                Ok(())
            }
        }
    }

    /// Deletes the objects this session stored and listed when its record was never
    /// written (the state store refused it until the session ended): with no record, the
    /// expiry of ended streams would never find them. Evicted ones are deleted already;
    /// with no record, no other worker serves them.
    async fn discard_unrecorded(&mut self) {
        let prefix = self.stream.id.prefix();
        let mut names: Vec<String> = Vec::new();
        for s in &self.record.playlist.segments {
            names.push(s.uri.clone());
            names.extend(s.map_uri.clone());
        }
        names.extend(self.map_uri.take());
        names.push(published::snapshot_name(self.epoch));
        let prefix_slash = format!("{prefix}/");
        names.extend(
            self.open_part_objects
                .drain(..)
                .filter_map(|p| p.strip_prefix(&prefix_slash).map(str::to_owned)),
        );
        names.sort();
        names.dedup();
        for name in &names {
            if self
                .streams
                .media
                .delete(&format!("{prefix}/{name}"))
                .await
                .is_err()
            {
                self.streams.metrics.store_error(StoreOp::Delete);
            }
        }
        if !names.is_empty() {
            if self.streams.media.remove_prefix(&prefix).await.is_err() {
                self.streams.metrics.store_error(StoreOp::Delete);
            }
            info!(stream = %self.stream.id, objects = names.len(), "session ended before its record could be written; its media deleted");
        }
    }

    /// Deletes evicted segments (and init segments no longer referenced) after the grace
    /// period, so a player that fetched the playlist just before can still fetch them.
    fn schedule_deletes(&self, evicted: Vec<SegmentEntry>) {
        if evicted.is_empty() {
            return;
        }
        let referenced: HashSet<&str> = self
            .record
            .playlist
            .segments
            .iter()
            .filter_map(|s| s.map_uri.as_deref())
            .chain(self.map_uri.as_deref())
            .collect();
        let prefix = self.stream.id.prefix();
        let mut paths: Vec<String> = Vec::new();
        for e in &evicted {
            paths.push(format!("{prefix}/{}", e.uri));
            if let Some(m) = &e.map_uri {
                let p = format!("{prefix}/{m}");
                if !referenced.contains(m.as_str()) && !paths.contains(&p) {
                    paths.push(p);
                }
            }
        }
        let grace = self
            .streams
            .settings_for(&self.stream.id.tenant)
            .delete_grace();
        for p in paths {
            self.streams.delete_later(p, grace);
        }
    }
}

pub(super) async fn run(mut w: Writer) {
    let mut lease = tokio::time::interval(LEASE_RENEW);
    lease.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut finishing: Option<Instant> = None;
    let outcome: Result<(), StoreError> = loop {
        let retry_at = w.retry_at;
        tokio::select! {
            msg = w.rx.recv(), if finishing.is_none() => match msg {
                Some(WriterMsg::Output(out, cut_at, info)) => w.accept(out, cut_at, info),
                Some(WriterMsg::FirstMedia) => {}
                Some(WriterMsg::Finish) | None => {
                    finishing = Some(Instant::now());
                    w.record.publisher_left_ms = Some(unix_ms());
                    w.dirty = true;
                }
            },
            _ = lease.tick() => {},
            () = async {
                match retry_at {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            } => { w.retry_at = None; },
        }
        if w.retry_at.is_some_and(|t| t > Instant::now()) {
            // Backing off after a failure: only new messages are taken meanwhile.
            if finishing.is_some_and(|f| f.elapsed() > w.finish_deadline) {
                break Ok(());
            }
            continue;
        }
        if !w.unborn() {
            w.pump().await;
            if finishing.is_some() && w.backlog.is_empty() {
                // The session is over: no part of it is coming, the playlist hints none.
                w.close_open_parts();
            }
            if let Err(e) = w.commit(true).await {
                break Err(e);
            }
        }
        if let Some(since) = finishing {
            let done = w.unborn() || (w.backlog.is_empty() && !w.dirty);
            if done || since.elapsed() > w.finish_deadline {
                if !done {
                    warn!(stream = %w.stream.id, waiting = w.backlog.len(), "gave up storing the last segments of a session");
                }
                break Ok(());
            }
        }
    };
    if let Err(StoreError::Conflict { stored, held }) = &outcome {
        info!(stream = %w.stream.id, stored, held, "stream taken over by a newer epoch; closing this publisher");
    }
    w.fenced.cancel();
    let superseded = matches!(outcome, Err(StoreError::Conflict { .. }));
    if !w.stored && !superseded {
        w.discard_unrecorded().await;
    }
    w.streams
        .session_ended(
            &w.stream,
            w.generation,
            w.record.clone(),
            superseded,
            w.stored,
        )
        .await;
}

/// The parts listed of `record`'s open segment.
fn open_parts(record: &StreamRecord) -> usize {
    record.playlist.open.as_ref().map_or(0, |o| o.parts.len())
}

/// LL-HLS: the part entries of a cut segment (names after `uri`), when its parts tile its
/// bytes exactly (a segment is its parts concatenated); empty otherwise.
fn segment_parts(seg: &CutSegment, uri: &str) -> Vec<PartEntry> {
    let mut at = 0u64;
    let mut parts = Vec::with_capacity(seg.parts.len());
    for (index, span) in seg.parts.iter().enumerate() {
        if span.offset != at || span.len == 0 {
            return Vec::new();
        }
        at = at.saturating_add(span.len);
        parts.push(PartEntry {
            uri: part_uri(uri, u32::try_from(index).unwrap_or(u32::MAX)),
            duration_secs: span.duration as f64 / f64::from(TIMESCALE),
            independent: span.independent,
            gap: false,
            offset: span.offset,
            bytes: span.len,
        });
    }
    if at != seg.data.len() as u64 {
        return Vec::new();
    }
    parts
}

#[cfg(test)]
mod tests {
    use tidegate_packager::{Container, PlaylistState};

    use super::*;
    use crate::store::StreamId;

    /// A new stream whose record the state store refused until its publisher left: the
    /// media it stored meanwhile would be listed and expired by nobody, so it is deleted.
    #[tokio::test]
    async fn a_session_whose_record_was_never_written_leaves_no_media() {
        // The state root is a file: every write of a record fails.
        let (dir, streams) = super::super::test_streams("unrecorded", "state-file");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("state-file"), b"").unwrap();
        let id = StreamId::new("default", "orphan").unwrap();
        let stream = streams.get_or_insert(&id).await;
        // A stream without parts, admitted without a session start.
        let mut record = parted_record(&id, 5);
        record.playlist.part_target_secs = None;
        record.session_started_ms = None;
        let (tx, mut w) = test_writer(&streams, stream, record, QUEUE_DEPTH);
        w.finish_deadline = Duration::from_millis(300);
        let task = tokio::spawn(run(w));
        let init = SegmenterOutput::Init {
            data: Bytes::from_static(b"ftyp"),
            id: 0,
        };
        tx.send(WriterMsg::Output(init, Instant::now(), None))
            .await
            .unwrap();
        let path = format!("{}/init-5-0.mp4", id.prefix());
        let deadline = Instant::now() + Duration::from_secs(20);
        while streams.media.get(&path).await.unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the init segment was never stored"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The publisher leaves; the record still cannot be written.
        drop(tx);
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .unwrap()
            .unwrap();
        assert!(streams.media.get(&path).await.unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The record of an LL-HLS session (parts of 1/3 s) of epoch `epoch`, owned here.
    /// A writer of `stream` for `record` (not fenced, its record not yet stored), and the
    /// sender of its queue of `depth` messages.
    fn test_writer(
        streams: &Arc<Streams>,
        stream: Arc<Stream>,
        record: StreamRecord,
        depth: usize,
    ) -> (mpsc::Sender<WriterMsg>, Writer) {
        let (tx, rx) = mpsc::channel(depth);
        let w = Writer::new(
            streams.clone(),
            stream,
            record,
            1,
            rx,
            CancellationToken::new(),
            Arc::new(AtomicI64::new(unix_ms())),
            false,
            Arc::new(AtomicBool::new(true)),
        );
        (tx, w)
    }

    /// Part `index` (1/3 s, the first one independent) of the first segment, at `offset`.
    fn test_part(index: u32, data: Bytes, offset: u64) -> WriterMsg {
        let part = tidegate_packager::CutPart {
            data,
            index,
            offset,
            duration: 30_000,
            start_dts: 30_000 * i64::from(index),
            independent: index == 0,
            segment_program_date_time_ms: 1_000,
            init_id: Some(0),
            discontinuity: false,
            last: false,
        };
        WriterMsg::Output(SegmenterOutput::Part(part), Instant::now(), None)
    }

    /// Ends the writer's session (its publisher left) and waits for its task.
    async fn finish_writer(tx: mpsc::Sender<WriterMsg>, task: tokio::task::JoinHandle<()>) {
        tx.send(WriterMsg::Finish).await.unwrap();
        drop(tx);
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .unwrap()
            .unwrap();
    }

    fn parted_record(id: &StreamId, epoch: u64) -> StreamRecord {
        let mut playlist = PlaylistState::new(Container::Fmp4, 6, 2);
        playlist.epoch = epoch;
        playlist.part_target_secs = Some(1.0 / 3.0);
        StreamRecord {
            id: id.clone(),
            playlist,
            updated_ms: unix_ms(),
            publisher_left_ms: None,
            owner: "here".into(),
            last_media_ms: None,
            takeovers: Vec::new(),
            session_started_ms: Some(unix_ms()),
            holder: None,
        }
    }

    /// LL-HLS: each part is stored, then listed in the open segment with the next part as
    /// the preload hint; the segment takes its parts over (slices of its bytes) and the hint
    /// moves to the next segment's first part; a session that ends leaves neither open parts
    /// nor a hint behind.
    #[tokio::test]
    async fn parts_are_stored_listed_then_folded_into_their_segment() {
        use tidegate_packager::{CutPart, CutSegment, PartSpan};
        let (dir, streams) = super::super::test_streams("parts", "state");
        let id = StreamId::new("default", "parted").unwrap();
        let stream = streams.get_or_insert(&id).await;
        let record = parted_record(&id, 5);
        let (tx, w) = test_writer(&streams, stream, record, QUEUE_DEPTH);
        let task = tokio::spawn(run(w));
        let send = |out: SegmenterOutput| {
            let tx = tx.clone();
            async move {
                tx.send(WriterMsg::Output(out, Instant::now(), None))
                    .await
                    .unwrap();
            }
        };
        let wait = |what: &'static str, pred: Box<dyn Fn(&PlaylistState) -> bool + Send>| {
            let streams = streams.clone();
            let id = id.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    if let Some(r) = streams.state.load(&id).await.unwrap() {
                        if pred(&r.playlist) {
                            return r.playlist;
                        }
                    }
                    assert!(Instant::now() < deadline, "{what}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let chunks = [
            Bytes::from_static(b"styp-moof-mdat-0"),
            Bytes::from_static(b"moof-mdat-1"),
        ];
        send(SegmenterOutput::Init {
            data: Bytes::from_static(b"ftyp-moov"),
            id: 0,
        })
        .await;
        let mut offset = 0u64;
        let mut spans = Vec::new();
        for (index, data) in chunks.iter().enumerate() {
            spans.push(PartSpan {
                offset,
                len: data.len() as u64,
                duration: 30_000,
                independent: index == 0,
            });
            send(SegmenterOutput::Part(CutPart {
                data: data.clone(),
                index: u32::try_from(index).unwrap(),
                offset,
                duration: 30_000,
                start_dts: 450_000 + 30_000 * i64::try_from(index).unwrap(),
                independent: index == 0,
                segment_program_date_time_ms: 1_000,
                init_id: Some(0),
                discontinuity: false,
                last: false,
            }))
            .await;
            offset += data.len() as u64;
        }
        let open = wait(
            "two open parts",
            Box::new(|p| p.open.as_ref().is_some_and(|o| o.parts.len() == 2)),
        )
        .await;
        assert_eq!(open.preload_hint.as_deref(), Some("seg-5-0.2.m4s"));
        assert_eq!(
            open.open.as_ref().and_then(|o| o.start_ticks),
            Some(450_000),
            "the open segment starts where its first part does (for salvage.rs)"
        );
        let part_path = format!("{}/seg-5-0.1.m4s", id.prefix());
        assert_eq!(
            streams.media.get(&part_path).await.unwrap().as_deref(),
            Some(&b"moof-mdat-1"[..]),
            "a part is stored before it is listed"
        );
        let data: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
        send(SegmenterOutput::Segment(CutSegment {
            bytes: data.len() as u64,
            data: Bytes::from(data),
            duration: 60_000,
            start_dts: 450_000,
            program_date_time_ms: 1_000,
            init_id: Some(0),
            discontinuity: false,
            keyframe_dts: None,
            forced: false,
            video_frames: 2,
            audio_frames: 0,
            video_cadence: Default::default(),
            parts: spans,
        }))
        .await;
        let listed = wait("the segment listed", Box::new(|p| p.segments.len() == 1)).await;
        assert!(listed.open.is_none());
        assert_eq!(listed.preload_hint.as_deref(), Some("seg-5-1.0.m4s"));
        let parts = &listed.segments[0].parts;
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (parts[1].uri.as_str(), parts[1].offset, parts[1].bytes),
            ("seg-5-0.1.m4s", 16, 11)
        );
        assert!(parts[0].independent && !parts[1].independent);

        // A part of the next segment, then the publisher leaves before it is finished.
        send(SegmenterOutput::Part(CutPart {
            data: Bytes::from_static(b"styp-moof-mdat-2"),
            index: 0,
            offset: 0,
            duration: 30_000,
            start_dts: 60_000,
            independent: true,
            segment_program_date_time_ms: 1_666,
            init_id: Some(0),
            discontinuity: false,
            // The segment's only part: the hint names the next segment's first.
            last: true,
        }))
        .await;
        let open = wait("the next open part", Box::new(|p| p.open.is_some())).await;
        assert_eq!(open.preload_hint.as_deref(), Some("seg-5-2.0.m4s"));
        finish_writer(tx, task).await;
        let left = streams.state.load(&id).await.unwrap().unwrap().playlist;
        assert!(
            left.open.is_none() && left.preload_hint.is_none(),
            "{left:?}"
        );
        assert_eq!(left.segments.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// LL-HLS through a state-store outage (a Redis failover): the session goes on showing
    /// each part here, and stores a snapshot of the record at each part (not only at each
    /// segment), which the other workers serve meanwhile; once the store answers again the
    /// record is written and the snapshots go back to one per listed change.
    #[tokio::test]
    async fn parts_reach_the_snapshot_one_by_one_while_the_state_store_is_away() {
        let (dir, streams) = super::super::test_streams("parts-state-outage", "state");
        let id = StreamId::new("default", "outage").unwrap();
        let stream = streams.get_or_insert(&id).await;
        let (tx, w) = test_writer(&streams, stream.clone(), parted_record(&id, 9), QUEUE_DEPTH);
        let task = tokio::spawn(run(w));
        let out = |o: SegmenterOutput| WriterMsg::Output(o, Instant::now(), None);
        let part = |index: u32| {
            let data = Bytes::from(format!("moof-mdat-{index}"));
            test_part(index, data, u64::from(index) * 11)
        };
        // The open segment's parts in the record, in the newest snapshot, and as shown here.
        let in_record = || async {
            let record = streams.state.load(&id).await.ok().flatten();
            record.and_then(|r| r.playlist.open.map(|o| o.parts.len()))
        };
        let in_snapshot = || async {
            let published = published::read(&*streams.media, &id.prefix())
                .await
                .unwrap();
            let open = published.snapshot.and_then(|r| r.playlist.open);
            open.map_or(0, |o| o.parts.len())
        };
        let shown = || {
            let view = stream.view.lock().unwrap();
            view.rendered
                .state
                .open
                .as_ref()
                .map_or(0, |o| o.parts.len())
        };
        tx.send(out(SegmenterOutput::Init {
            data: Bytes::from_static(b"ftyp-moov"),
            id: 0,
        }))
        .await
        .unwrap();
        for index in 0..2 {
            tx.send(part(index)).await.unwrap();
        }
        // Stored in the state store: the first snapshot came with the record's creation; a
        // second part, listed in the record, needs none.
        eventually("two parts in the record", || async {
            in_record().await == Some(2)
        })
        .await;
        let before = in_snapshot().await;
        assert!(
            before < 2,
            "a snapshot per part while the store answers: {before}"
        );

        // The state root becomes a file: every write of the record fails.
        let state_root = dir.join("state");
        let aside = dir.join("state-aside");
        std::fs::rename(&state_root, &aside).unwrap();
        std::fs::write(&state_root, b"").unwrap();
        for index in 2..5 {
            tx.send(part(index)).await.unwrap();
            let n = usize::try_from(index).unwrap() + 1;
            eventually("the part shown here and in the snapshot", || async {
                shown() >= n && in_snapshot().await >= n
            })
            .await;
        }

        // The store is back: the record gets the parts, and the next part no snapshot.
        std::fs::remove_file(&state_root).unwrap();
        std::fs::rename(&aside, &state_root).unwrap();
        eventually("the record written again", || async {
            in_record().await == Some(5)
        })
        .await;
        tx.send(part(5)).await.unwrap();
        eventually("the sixth part in the record", || async {
            in_record().await == Some(6)
        })
        .await;
        assert_eq!(
            in_snapshot().await,
            5,
            "no snapshot per part once the store answers"
        );
        finish_writer(tx, task).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Waits (20 s at most) until `check` holds.
    async fn eventually<F, Fut>(what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !check().await {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// LL-HLS under pressure: while the media store refuses every write, parts pile up to
    /// [`MAX_BACKLOG_PARTS`] and are then given up (with the hint); the segment is kept and,
    /// once the store is back, listed whole with all its parts as slices of it.
    #[tokio::test]
    async fn parts_give_way_to_their_segment_while_the_media_store_is_away() {
        use tidegate_packager::{CutPart, CutSegment, PartSpan};
        let (dir, streams) = super::super::test_streams("parts-outage", "state");
        // The media root is a file: every put fails.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("media"), b"").unwrap();
        let id = StreamId::new("default", "pressed").unwrap();
        let stream = streams.get_or_insert(&id).await;
        let record = parted_record(&id, 7);
        let (tx, w) = test_writer(&streams, stream, record, 64);
        let task = tokio::spawn(run(w));
        let out = |o: SegmenterOutput| WriterMsg::Output(o, Instant::now(), None);
        tx.send(out(SegmenterOutput::Init {
            data: Bytes::from_static(b"ftyp-moov"),
            id: 0,
        }))
        .await
        .unwrap();
        let parts = MAX_BACKLOG_PARTS + 4;
        let mut spans = Vec::new();
        let mut data = Vec::new();
        for index in 0..parts {
            let chunk = format!("moof-mdat-{index:02}").into_bytes();
            spans.push(PartSpan {
                offset: data.len() as u64,
                len: chunk.len() as u64,
                duration: 6_000,
                independent: index == 0,
            });
            tx.send(out(SegmenterOutput::Part(CutPart {
                data: Bytes::from(chunk.clone()),
                index: u32::try_from(index).unwrap(),
                offset: data.len() as u64,
                duration: 6_000,
                start_dts: 0,
                independent: index == 0,
                segment_program_date_time_ms: 1_000,
                init_id: Some(0),
                discontinuity: false,
                last: false,
            })))
            .await
            .unwrap();
            data.extend(chunk);
        }
        tx.send(out(SegmenterOutput::Segment(CutSegment {
            bytes: data.len() as u64,
            data: Bytes::from(data.clone()),
            duration: 6_000 * parts as u64,
            start_dts: 0,
            program_date_time_ms: 1_000,
            init_id: Some(0),
            discontinuity: false,
            keyframe_dts: None,
            forced: false,
            video_frames: u32::try_from(parts).unwrap(),
            audio_frames: 0,
            video_cadence: Default::default(),
            parts: spans,
        })))
        .await
        .unwrap();
        // Give the writer time to take every message while the store is away.
        tokio::time::sleep(Duration::from_millis(500)).await;
        std::fs::remove_file(dir.join("media")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let listed = loop {
            if let Some(r) = streams.state.load(&id).await.unwrap() {
                if !r.playlist.segments.is_empty() {
                    break r.playlist;
                }
            }
            assert!(Instant::now() < deadline, "the segment was never listed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(listed.segments.len(), 1, "the segment is never dropped");
        let segment = &listed.segments[0];
        assert_eq!(segment.parts.len(), parts, "listed with all its parts");
        assert!(listed.open.is_none());
        let path = format!("{}/{}", id.prefix(), segment.uri);
        assert_eq!(streams.media.get(&path).await.unwrap().unwrap(), data);
        // No part object was stored: the parts were given up before the store came back.
        let part = format!("{}/{}", id.prefix(), segment.parts[0].uri);
        assert!(streams.media.get(&part).await.unwrap().is_none());
        drop(tx);
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .unwrap()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A new stream's session whose first write comes a retention after its admission (its
    /// worker was frozen, say) never creates the record: it is over, superseded. One admitted
    /// just now creates it.
    #[tokio::test]
    async fn a_first_write_a_retention_after_the_admission_creates_no_record() {
        let (dir, streams) = super::super::test_streams("lapsed", "state");
        let retention_ms = i64::try_from(streams.settings.ended_retention.as_millis()).unwrap();
        for (name, admitted_ms, created) in [
            ("late", unix_ms() - retention_ms, false),
            ("prompt", unix_ms(), true),
        ] {
            let id = StreamId::new("default", name).unwrap();
            let stream = streams.get_or_insert(&id).await;
            let mut playlist = PlaylistState::new(Container::Fmp4, 6, 2);
            playlist.epoch = tidegate_ownership::first_epoch(admitted_ms);
            let record = StreamRecord {
                id: id.clone(),
                playlist,
                updated_ms: admitted_ms,
                publisher_left_ms: None,
                owner: "here".into(),
                last_media_ms: None,
                takeovers: Vec::new(),
                session_started_ms: Some(admitted_ms),
                holder: None,
            };
            let (_tx, rx) = mpsc::channel(QUEUE_DEPTH);
            let fenced = CancellationToken::new();
            let w = Writer::new(
                streams.clone(),
                stream,
                record,
                1,
                rx,
                fenced.clone(),
                Arc::new(AtomicI64::new(unix_ms())),
                false,
                Arc::new(AtomicBool::new(true)),
            );
            let task = tokio::spawn(run(w));
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let stored = streams.state.load(&id).await.unwrap().is_some();
                if stored || fenced.is_cancelled() {
                    break;
                }
                assert!(Instant::now() < deadline, "{name}: the writer did nothing");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(fenced.is_cancelled(), !created, "{name}");
            assert_eq!(
                streams.state.load(&id).await.unwrap().is_some(),
                created,
                "{name}"
            );
            if !created {
                tokio::time::timeout(Duration::from_secs(20), task)
                    .await
                    .unwrap()
                    .unwrap();
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The race of a reconnect to another worker: the new session fences this one while its
    /// writer lists a part. The part's object is stored, but the compare-and-set of the
    /// record with it fails, so this worker never shows it (nor hints past it): its own
    /// viewers saw only what the store took, and the new session may number its media there.
    #[tokio::test]
    async fn a_part_whose_record_write_was_fenced_is_never_shown() {
        let (dir, streams) = super::super::test_streams("fenced-part", "state");
        let id = StreamId::new("default", "raced").unwrap();
        let stream = streams.get_or_insert(&id).await;
        let record = parted_record(&id, 5);
        streams.state.compare_and_set(None, &record).await.unwrap();
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let fenced = CancellationToken::new();
        let w = Writer::new(
            streams.clone(),
            stream.clone(),
            record.clone(),
            1,
            rx,
            fenced.clone(),
            Arc::new(AtomicI64::new(unix_ms())),
            true,
            Arc::new(AtomicBool::new(true)),
        );
        let task = tokio::spawn(run(w));
        let out = |o: SegmenterOutput| WriterMsg::Output(o, Instant::now(), None);
        let part = |index: u32, data: &'static [u8], offset: u64| {
            test_part(index, Bytes::from_static(data), offset)
        };
        let shown = || {
            let v = stream.view.lock().unwrap();
            (v.rendered.state.clone(), v.rendered.media.clone())
        };
        tx.send(out(SegmenterOutput::Init {
            data: Bytes::from_static(b"ftyp-moov"),
            id: 0,
        }))
        .await
        .unwrap();
        tx.send(part(0, b"styp-moof-mdat-0", 0)).await.unwrap();
        // Committed: shown (and in the store).
        let deadline = Instant::now() + Duration::from_secs(20);
        while shown().0.open.as_ref().map(|o| o.parts.len()) != Some(1) {
            assert!(
                Instant::now() < deadline,
                "the committed part was never shown"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stored = streams.state.load(&id).await.unwrap().unwrap();
        assert_eq!(stored.playlist.open.map(|o| o.parts.len()), Some(1));

        // Another worker admits the reconnected publisher: epoch 6 fences this session.
        let mut newer = record.clone();
        newer.playlist.epoch = 6;
        newer.owner = "there".into();
        streams
            .state
            .compare_and_set(Some(5), &newer)
            .await
            .unwrap();
        tx.send(part(1, b"moof-mdat-1", 16)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .unwrap()
            .unwrap();
        assert!(fenced.is_cancelled(), "the session is fenced");
        let part_path = format!("{}/seg-5-0.1.m4s", id.prefix());
        assert!(
            streams.media.get(&part_path).await.unwrap().is_some(),
            "the part object was stored before its record write failed"
        );
        let (state, media) = shown();
        let media = String::from_utf8_lossy(&media);
        let open = state.open.as_ref().map(|o| o.parts.len());
        assert_eq!(open, Some(1), "only the committed part is listed: {media}");
        assert_eq!(state.preload_hint.as_deref(), Some("seg-5-0.1.m4s"));
        assert!(
            !media
                .lines()
                .any(|l| l.starts_with("#EXT-X-PART:") && l.contains("seg-5-0.1.m4s")),
            "{media}"
        );
        assert!(!media.contains("seg-5-0.2.m4s"), "{media}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
