//! Who owns a stream, and when that changes: the decisions, without I/O.
//!
//! Every publish session of a stream holds an *epoch*. The stream's record in the shared
//! state store carries the current epoch, and every write to it is a compare-and-set on the
//! epoch its writer holds ([`cas_admits`]), so a session that lost the stream can never write
//! it again. This crate decides, from what a worker knows, what it may write:
//!
//! - [`admit`]: a publisher arrives. It is refused (another publisher holds the stream and
//!   keeps it, see [`Takeover`], or encoders are fighting over the key), or it gets the next
//!   epoch and starts a new stream, resumes the playlist, takes the stream over, or starts a
//!   new playlist after the old one ended.
//! - [`plan_write`]: a live session's writer stores the playlist and renews its lease (or
//!   learns that a new stream's session came too late to create its record).
//! - [`sweep`]: the sweeper (on any worker) ends a stream whose publisher left, or whose holder
//!   went silent, a reconnect window ago, and expires an ended one past its retention.
//! - [`end`]: an operator ends a stream wherever its publisher is.
//! - [`stand_by_for`]: a pull waits while another worker holds the stream.
//! - [`ViewHolder`]: which local session a worker's rendered view follows.
//!
//! Nothing here reads a clock: the caller passes `now_ms` (Unix milliseconds), reads the
//! record ([`Record`] is the part of it that ownership needs) and performs the compare-and-set
//! the decision names. A driver therefore calls, for one stream: [`admit`] on a publish,
//! then [`plan_write`] at each change or lease tick of that session; [`sweep`] from the
//! sweeper; [`end`] on request.

#![deny(missing_docs)]

use std::time::Duration;

/// A publisher that delivered no media for this long no longer holds its stream against a
/// newcomer (its worker died, or its connection hung).
pub const LEASE_TIMEOUT_MS: i64 = 2_500;
/// How often a live session renews its lease in the record.
pub const LEASE_RENEW: Duration = Duration::from_secs(1);
/// Takeovers within [`FLAP_WINDOW_MS`] after which encoders are considered to be fighting.
pub const FLAP_TAKEOVERS: usize = 4;
/// See [`FLAP_TAKEOVERS`].
pub const FLAP_WINDOW_MS: i64 = 60_000;
/// Takeover times kept per stream.
pub const MAX_TAKEOVER_HISTORY: usize = 8;

/// Who wins when a second publisher arrives for a stream held on another worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Takeover {
    /// The newcomer takes the stream over at once (an encoder reconnecting after its old
    /// connection died), unless encoders keep taking it from each other
    /// ([`FLAP_TAKEOVERS`] within [`FLAP_WINDOW_MS`]): then the newcomer is refused.
    #[default]
    Newest,
    /// The holder keeps the stream while its lease is fresh; a newcomer takes over only
    /// once the holder has been silent for [`LEASE_TIMEOUT_MS`]. Pulls always use it.
    Refuse,
}

/// The rules a worker applies; [`Policy::new`] fills in the fixed ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Who wins when a second publisher arrives.
    pub takeover: Takeover,
    /// How long a stream waits for its publisher before it ends, ms.
    pub reconnect_window_ms: i64,
    /// How long an ended stream keeps its record and media, ms.
    pub ended_retention_ms: i64,
    /// See [`LEASE_TIMEOUT_MS`].
    pub lease_timeout_ms: i64,
    /// See [`FLAP_TAKEOVERS`].
    pub flap_takeovers: usize,
    /// See [`FLAP_WINDOW_MS`].
    pub flap_window_ms: i64,
    /// See [`MAX_TAKEOVER_HISTORY`].
    pub max_takeover_history: usize,
}

impl Policy {
    /// The policy of a worker with the given takeover rule, reconnect window and retention.
    pub fn new(takeover: Takeover, reconnect_window: Duration, ended_retention: Duration) -> Self {
        Self {
            takeover,
            reconnect_window_ms: millis(reconnect_window),
            ended_retention_ms: millis(ended_retention),
            lease_timeout_ms: LEASE_TIMEOUT_MS,
            flap_takeovers: FLAP_TAKEOVERS,
            flap_window_ms: FLAP_WINDOW_MS,
            max_takeover_history: MAX_TAKEOVER_HISTORY,
        }
    }

    /// The same policy with another takeover rule (a pull uses [`Takeover::Refuse`]).
    pub fn with_takeover(&self, takeover: Takeover) -> Self {
        Self {
            takeover,
            ..self.clone()
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What ownership needs of a stream's stored record (times in Unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The epoch of the session that holds (or last held) the stream; every write is a
    /// compare-and-set on it.
    pub epoch: u64,
    /// The worker that holds the current epoch.
    pub owner: String,
    /// The stream ended (`EXT-X-ENDLIST`).
    pub ended: bool,
    /// The last write that changed something (not a figures-only renewal).
    pub updated_ms: i64,
    /// When the current epoch's publisher left; `None` while one is connected.
    pub publisher_left_ms: Option<i64>,
    /// When the current epoch's publisher last delivered media (the lease).
    pub last_media_ms: Option<i64>,
    /// Recent takeovers, oldest first, at most [`Policy::max_takeover_history`].
    pub takeovers: Vec<i64>,
}

impl Record {
    /// When the holder last showed it is alive: its last media, or the record's last write
    /// if that is later (a session that just started).
    pub fn last_activity_ms(&self) -> i64 {
        self.last_media_ms
            .unwrap_or(self.updated_ms)
            .max(self.updated_ms)
    }

    /// The record names a publisher on a worker other than `worker` that has not left (its
    /// lease may have lapsed since).
    pub fn held_by_other(&self, worker: &str) -> bool {
        !self.ended && self.publisher_left_ms.is_none() && self.owner != worker
    }

    /// The record is held by a publisher on a worker other than `worker` whose lease is
    /// fresh at `now_ms`.
    pub fn live_elsewhere(&self, worker: &str, now_ms: i64, policy: &Policy) -> bool {
        self.held_by_other(worker)
            && now_ms.saturating_sub(self.last_activity_ms()) < policy.lease_timeout_ms
    }

    /// Takeovers within the flap window before `now_ms`.
    pub fn recent_takeovers(&self, now_ms: i64, policy: &Policy) -> usize {
        self.takeovers
            .iter()
            .filter(|t| now_ms.saturating_sub(**t) < policy.flap_window_ms)
            .count()
    }

    /// The record is an ended stream past its retention at `now_ms`: the sweeper deletes it
    /// and the media of its epochs.
    pub fn expired(&self, now_ms: i64, policy: &Policy) -> bool {
        self.ended && now_ms.saturating_sub(self.updated_ms) >= policy.ended_retention_ms
    }

    /// When the stream lost its publisher: when it left, or (still marked live) its last
    /// sign of life.
    fn left_ms(&self) -> i64 {
        self.publisher_left_ms
            .unwrap_or_else(|| self.last_activity_ms())
    }
}

/// The first epoch of a new record: the wall clock in ms. Epochs only grow within a record,
/// and a record is only deleted a retention after its last session, so a stream that comes
/// back after its record expired starts above every epoch its old incarnation reached
/// (unless that one started more than a session per ms on average), and its segment names
/// cannot be the old ones. A session admitted before the expiry cannot create the record
/// late at its own, older epoch: see [`plan_write`].
pub fn first_epoch(now_ms: i64) -> u64 {
    u64::try_from(now_ms).unwrap_or(0).max(1)
}

/// Whether a compare-and-set expecting `expected` may replace what is stored (`stored`:
/// the stored record's epoch, `None` without a record; `expected`: `None` to create one).
/// Every state store implements exactly this; it is what fences a session that lost its
/// stream.
pub fn cas_admits(stored: Option<u64>, expected: Option<u64>) -> bool {
    stored == expected
}

/// What a worker knows of a stream besides its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Here<'a> {
    /// This worker's id.
    pub worker: &'a str,
    /// The publish session live on this worker for the stream, if any: its last activity
    /// (last media, or its start), Unix ms.
    pub live_activity_ms: Option<i64>,
    /// The stored playlist is in the container this worker writes (another cannot be
    /// resumed; meaningless without a record).
    pub same_container: bool,
}

/// Why a publisher was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A publisher live on this worker holds the stream (its lease is fresh).
    LiveHere,
    /// Under [`Takeover::Refuse`], a publisher on another worker holds the stream with a
    /// fresh lease.
    LiveElsewhere,
    /// Under [`Takeover::Newest`], the stream changed hands this many times within the flap
    /// window while its holder is live: encoders are fighting over the key.
    Competing(usize),
}

/// How an admitted session starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// No record: a new stream. Its record is created (a compare-and-set on "no record") when
    /// its first media arrives.
    New,
    /// The publisher is back within the reconnect window: the same playlist goes on after a
    /// discontinuity.
    Resume,
    /// The stream was held by another publisher (on another worker, or a hung one here): the
    /// newcomer takes it, the same playlist goes on, and the takeover is recorded.
    Takeover,
    /// The stream ended, its window passed, or its playlist is in another container: a new
    /// playlist at the same URL (the sequence numbers go on).
    NewPlaylist,
}

/// A publisher admitted by [`admit`]: what to write, and against which epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// How the session starts.
    pub start: Start,
    /// The compare-and-set that moves the stored record to the new epoch (fencing every
    /// older session); `None` for [`Start::New`], which writes nothing until its first
    /// media (then a compare-and-set on "no record").
    pub expected_epoch: Option<u64>,
    /// The record as the new session holds it: its epoch, this worker as owner, a fresh
    /// lease, not ended.
    pub record: Record,
    /// A publisher live on this worker (a hung one: a fresh one refuses) loses the stream
    /// now and must be fenced.
    pub fence_local: bool,
}

impl Admission {
    /// The epoch the new session holds (its objects are named after it).
    pub fn epoch(&self) -> u64 {
        self.record.epoch
    }
}

/// A publisher arrives for a stream: refuses it, or admits it at the next epoch.
///
/// The rules, in order:
/// 1. A publisher live on this worker with a fresh lease keeps the stream, whatever the
///    policy ([`Refusal::LiveHere`]).
/// 2. A publisher on another worker with a fresh lease keeps it under [`Takeover::Refuse`]
///    ([`Refusal::LiveElsewhere`]); under [`Takeover::Newest`] it loses it, unless the stream
///    changed hands [`Policy::flap_takeovers`] times within the flap window
///    ([`Refusal::Competing`]). A holder whose lease lapsed loses it under either policy.
/// 3. No record: a new stream at [`first_epoch`] of `now_ms`.
/// 4. A record that ended, whose publisher has been gone (or silent) longer than the
///    reconnect window, or in another container: a new playlist, two epochs up (one for the
///    old playlist's reset, one for the session).
/// 5. Otherwise one epoch up: a takeover (recorded in the history) when another publisher
///    held it, else a resume.
pub fn admit(
    here: &Here<'_>,
    stored: Option<&Record>,
    now_ms: i64,
    policy: &Policy,
) -> Result<Admission, Refusal> {
    if let Some(activity) = here.live_activity_ms {
        if now_ms.saturating_sub(activity) < policy.lease_timeout_ms {
            return Err(Refusal::LiveHere);
        }
    }
    let held_by_other = stored.is_some_and(|r| r.held_by_other(here.worker));
    if let Some(r) = stored {
        if here.live_activity_ms.is_none() && held_by_other {
            let fresh = r.live_elsewhere(here.worker, now_ms, policy);
            let recent = r.recent_takeovers(now_ms, policy);
            match policy.takeover {
                Takeover::Refuse if fresh => return Err(Refusal::LiveElsewhere),
                Takeover::Newest if fresh && recent >= policy.flap_takeovers => {
                    return Err(Refusal::Competing(recent))
                }
                _ => {}
            }
        }
    }
    let fence_local = here.live_activity_ms.is_some();
    let takeover = fence_local || held_by_other;
    let held = |epoch: u64, takeovers: Vec<i64>| Record {
        epoch,
        owner: here.worker.to_owned(),
        ended: false,
        updated_ms: now_ms,
        publisher_left_ms: None,
        last_media_ms: None,
        takeovers,
    };
    let Some(r) = stored else {
        return Ok(Admission {
            start: Start::New,
            expected_epoch: None,
            record: held(first_epoch(now_ms), Vec::new()),
            fence_local,
        });
    };
    let window_passed = now_ms.saturating_sub(r.left_ms()) > policy.reconnect_window_ms;
    let resumable = !r.ended && !window_passed && here.same_container;
    let (start, epoch, takeovers) = if !resumable {
        (
            Start::NewPlaylist,
            r.epoch.saturating_add(2),
            r.takeovers.clone(),
        )
    } else if takeover {
        let mut takeovers = r.takeovers.clone();
        takeovers.push(now_ms);
        let excess = takeovers.len().saturating_sub(policy.max_takeover_history);
        takeovers.drain(..excess);
        (Start::Takeover, r.epoch.saturating_add(1), takeovers)
    } else {
        (
            Start::Resume,
            r.epoch.saturating_add(1),
            r.takeovers.clone(),
        )
    };
    Ok(Admission {
        start,
        expected_epoch: Some(r.epoch),
        record: held(epoch, takeovers),
        fence_local,
    })
}

/// A move of the stored record to a new epoch that no session holds (the stream ends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The compare-and-set's expected epoch (the one the record had when read).
    pub expected_epoch: u64,
    /// The record after it.
    pub record: Record,
}

/// Ends `record` at the next epoch, as of `left_ms`: whoever still holds the old epoch (a
/// stalled holder renewing its figures, a writer storing a session's last segments) is
/// fenced by its next write instead of writing the stream back to not ended.
fn end_at(record: &Record, now_ms: i64, left_ms: i64) -> Transition {
    let mut next = record.clone();
    next.epoch = record.epoch.saturating_add(1);
    next.ended = true;
    next.updated_ms = now_ms;
    next.publisher_left_ms = Some(record.publisher_left_ms.unwrap_or(left_ms));
    Transition {
        expected_epoch: record.epoch,
        record: next,
    }
}

/// An operator ends the stream now, wherever its publisher is. `None` when it has ended
/// already.
pub fn end(record: &Record, now_ms: i64) -> Option<Transition> {
    (!record.ended).then(|| end_at(record, now_ms, now_ms))
}

/// What the sweeper does with a stream (one with no publisher live on the sweeping worker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sweep {
    /// Nothing: it is live, within its reconnect window, or ended within its retention.
    Keep,
    /// Its publisher left, or its holder went silent (lease lapsed), a reconnect window ago:
    /// it ends at the next epoch.
    End(Transition),
    /// Ended and past its retention: its record (if still at this epoch) and the media of its
    /// epochs are deleted.
    Expire {
        /// The epoch the deletion expects.
        epoch: u64,
    },
}

/// The sweeper's decision for `record` at `now_ms`.
pub fn sweep(record: &Record, now_ms: i64, policy: &Policy) -> Sweep {
    if record.ended {
        return if record.expired(now_ms, policy) {
            Sweep::Expire {
                epoch: record.epoch,
            }
        } else {
            Sweep::Keep
        };
    }
    let activity = record.last_activity_ms();
    let left = match record.publisher_left_ms {
        Some(left) => left,
        // Still marked live: abandoned once its owner stopped renewing.
        None if now_ms.saturating_sub(activity) >= policy.lease_timeout_ms => activity,
        None => return Sweep::Keep,
    };
    if now_ms.saturating_sub(left) < policy.reconnect_window_ms {
        return Sweep::Keep;
    }
    Sweep::End(end_at(record, now_ms, left))
}

/// The worker a pull on `worker` must stand by for (not call its source): the owner of a
/// stream held elsewhere with a fresh lease. `None` when this worker may pull: it holds the
/// stream itself (`live_here`), nobody does, or the holder's lease lapsed.
pub fn stand_by_for<'r>(
    worker: &str,
    live_here: bool,
    stored: Option<&'r Record>,
    now_ms: i64,
    policy: &Policy,
) -> Option<&'r str> {
    if live_here {
        return None;
    }
    stored
        .filter(|r| r.live_elsewhere(worker, now_ms, policy))
        .map(|r| r.owner.as_str())
}

/// What a live session's writer knows when it may write the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionWrite {
    /// The epoch the session holds.
    pub epoch: u64,
    /// The record exists at that epoch (else this write creates it).
    pub recorded: bool,
    /// The session was replaced on this worker.
    pub fenced: bool,
    /// The playlist changed since the last write (a segment listed, the publisher left).
    pub changed: bool,
    /// The publisher is still connected.
    pub connected: bool,
    /// A lease renewal is due (the caller's clock: [`LEASE_RENEW`] since the last write).
    pub renewal_due: bool,
    /// The lease (`last_media_ms`) as last written.
    pub written_media_ms: Option<i64>,
    /// The publisher's last media, Unix ms.
    pub media_ms: i64,
    /// When the session was admitted: the `now_ms` its [`admit`] was given, read before
    /// the record was (Unix ms).
    pub admitted_ms: i64,
    /// Now, Unix ms.
    pub now_ms: i64,
}

/// What the writer does (see [`plan_write`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// The session was replaced here before its record existed: it must never create it
    /// now; it is over, as if the store had answered with a conflict.
    Fenced,
    /// The session has no record yet and was admitted a retention ago or more
    /// ([`Policy::ended_retention_ms`]): it must never create the record now (see
    /// [`plan_write`]); it is over, superseded, as if the store had answered with a conflict.
    Lapsed,
    /// Nothing changed and no renewal is due.
    Skip,
    /// A compare-and-set.
    Put {
        /// The epoch expected in the store: the session's, or `None` to create the record.
        expected: Option<u64>,
        /// The write changes something (a change, the record's creation, new media): its
        /// `updated_ms` moves. A figures-only renewal leaves it.
        touch: bool,
        /// While connected, the lease to write (`last_media_ms`), published with the
        /// holder's figures; `None` once the publisher left (no figures either).
        lease_ms: Option<i64>,
    },
}

/// A live session's writer decides what to write. A connected holder writes its figures
/// every renewal even without new media (a stalled encoder must show everywhere), but only
/// new media moves its lease, so a silent holder loses the stream after
/// [`LEASE_TIMEOUT_MS`] however often it writes.
///
/// A session admitted without a record ([`Start::New`]) creates it with its first write, a
/// compare-and-set on "no record", at the epoch [`first_epoch`] gave it at admission. That
/// compare-and-set cannot see a record created after the admission read none, then ended and
/// expired: such a record may have written this very epoch (a session admitted in the same
/// millisecond) or epochs above it, and a stale writer of it could then write the new record.
/// So a first write a retention or more after the admission is refused ([`Write::Lapsed`]),
/// and that is enough: a record created after the admission has its `updated_ms` at or after
/// it and is deleted only once ended and a retention past its last `updated_ms`, so within a
/// retention of the admission every record created since is still stored and the
/// compare-and-set refuses the creation; and the records expired before the admission have
/// epochs below it ([`first_epoch`]).
///
/// This relies on the workers' clocks agreeing and on epochs growing slower than the clock
/// (as leases, expiry and [`first_epoch`] already do), and on the caller sending its
/// compare-and-set right after deciding: a freeze between the two longer than the retention
/// is not covered (only the store could check that). It changes nothing for a session whose
/// first media comes within the retention of its admission, which the drivers' idle timeouts
/// ensure unless the retention is shorter than them, the worker was frozen, or the state store
/// refused the first write that long. Taking a later epoch at the first write instead
/// (`max(admission epoch, first_epoch(now))`) would not do: the session's objects are already
/// named after its admission epoch, and an expiry deletes the objects of every epoch up to
/// the expired one.
pub fn plan_write(s: &SessionWrite, policy: &Policy) -> Write {
    if !s.recorded && s.fenced {
        return Write::Fenced;
    }
    if !s.recorded && s.now_ms.saturating_sub(s.admitted_ms) >= policy.ended_retention_ms {
        return Write::Lapsed;
    }
    let renew = s.renewal_due && s.connected;
    if !(s.changed || !s.recorded || renew) {
        return Write::Skip;
    }
    let new_media = renew && s.written_media_ms != Some(s.media_ms);
    Write::Put {
        expected: s.recorded.then_some(s.epoch),
        touch: s.changed || !s.recorded || new_media,
        lease_ms: s.connected.then_some(s.media_ms),
    }
}

/// Which publish session on this worker (by its local generation, which grows with every
/// session started here) the stream's rendered view follows.
///
/// A session shows its playlist unless a newer one owns the view or it is already over: a
/// late write from an ended session (a segment listed just before its writer learned it
/// was fenced) must not take the view back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewHolder {
    /// The session that keeps the view current, if any.
    pub owner: Option<u64>,
    /// Sessions up to this generation are over.
    pub released: u64,
}

impl ViewHolder {
    /// Session `generation` wants to show its playlist: `true` (and it owns the view) unless
    /// it is over or a newer session owns the view.
    pub fn show(&mut self, generation: u64) -> bool {
        if generation <= self.released || self.owner.is_some_and(|o| o > generation) {
            return false;
        }
        self.owner = Some(generation);
        true
    }

    /// Every session up to `generation` is over. `true` when that released the view's
    /// owner (the view must be read from the store again, or kept as the last one shown).
    pub fn release(&mut self, generation: u64) -> bool {
        self.released = self.released.max(generation);
        if self.owner.is_some_and(|o| o <= generation) {
            self.owner = None;
            true
        } else {
            false
        }
    }
}

// --- Lost writes of the state store (issue #14, docs/decisions/0020-media-store-is-the-ground-truth.md) ---

impl Admission {
    /// The same admission at an epoch above `published`, the highest epoch the media store
    /// holds objects of (segments, inits, parts, record snapshots) for the stream, if above
    /// the epoch the record gave. The record may have lost writes (a flushed or restarted
    /// store, a promoted asynchronous replica) and with them epochs already used: names
    /// carry the epoch, so a session must never take one the media store has seen.
    pub fn above_published(mut self, published: Option<u64>) -> Self {
        if let Some(p) = published {
            self.record.epoch = self.record.epoch.max(p.saturating_add(1));
        }
        self
    }
}

impl Transition {
    /// The same transition at an epoch above `published` (see
    /// [`Admission::above_published`]): an end never takes an epoch the media store has seen,
    /// so its snapshot cannot replace a session's.
    pub fn above_published(mut self, published: Option<u64>) -> Self {
        if let Some(p) = published {
            self.record.epoch = self.record.epoch.max(p.saturating_add(1));
        }
        self
    }
}

/// Which of the stored record and the media store's snapshot of it (the last one written,
/// by epoch) a worker starts from: the one at the higher epoch, so a record that lost
/// writes is rebuilt from the media store. `true`: the snapshot.
pub fn rebuild_from_snapshot(stored: Option<u64>, snapshot: Option<u64>) -> bool {
    match (stored, snapshot) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(s), Some(p)) => p > s,
    }
}

/// What a live session's writer does when its compare-and-set on its own epoch `held`
/// (after its record was stored at that epoch) found the record at `stored` (`None`: no
/// record) instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterConflict {
    /// A newer epoch owns the stream (in the record, or in the media store): the session is
    /// over.
    Fenced,
    /// The state store lost the session's writes (its record is missing, or older): the
    /// session writes its record again, a compare-and-set on what is stored (`expected`),
    /// and goes on. Its publisher stays connected.
    Reestablish {
        /// The epoch the compare-and-set expects (`None`: create the record).
        expected: Option<u64>,
    },
}

/// The writer's decision after a conflict (see [`AfterConflict`]). `published`: the
/// highest epoch in the media store (read after the conflict). Epochs are never reissued
/// ([`Admission::above_published`]), so a record below `held` can only be one that lost
/// writes, and the highest epoch wins: a session that re-establishes its record at `held`
/// is fenced as soon as a newer session's write lands, and a newer session that finds its
/// record set back re-establishes it in turn.
pub fn after_conflict(held: u64, stored: Option<u64>, published: Option<u64>) -> AfterConflict {
    let newer = stored.is_some_and(|s| s > held) || published.is_some_and(|p| p > held);
    if newer || stored == Some(held) {
        AfterConflict::Fenced
    } else {
        AfterConflict::Reestablish { expected: stored }
    }
}
