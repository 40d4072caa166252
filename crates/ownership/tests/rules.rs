//! Every ownership rule the cluster, failover, split-brain, drain, pull and lifecycle tests
//! exercise with real processes, on a simulated clock: `T0` plus milliseconds.

use std::time::Duration;

use tidegate_ownership::*;

/// Start of the simulated clock (Unix ms, around 2027).
const T0: i64 = 1_800_000_000_000;
const WINDOW_MS: i64 = 30_000;
const RETENTION_MS: i64 = 3_600_000;

fn policy(takeover: Takeover) -> Policy {
    Policy::new(
        takeover,
        Duration::from_millis(WINDOW_MS as u64),
        Duration::from_millis(RETENTION_MS as u64),
    )
}

fn newest() -> Policy {
    policy(Takeover::Newest)
}

fn refuse() -> Policy {
    policy(Takeover::Refuse)
}

/// A worker with no live session of the stream, writing the stored container.
fn worker(id: &str) -> Here<'_> {
    Here {
        worker: id,
        live_activity_ms: None,
        same_container: true,
    }
}

/// A stream held at `epoch` by `owner`, whose publisher delivered media at `media_ms`.
fn held(owner: &str, epoch: u64, media_ms: i64) -> Record {
    Record {
        epoch,
        owner: owner.to_owned(),
        ended: false,
        updated_ms: media_ms,
        publisher_left_ms: None,
        last_media_ms: Some(media_ms),
        takeovers: Vec::new(),
    }
}

/// A stream whose publisher on `owner` left at `left_ms`.
fn left(owner: &str, epoch: u64, left_ms: i64) -> Record {
    Record {
        publisher_left_ms: Some(left_ms),
        ..held(owner, epoch, left_ms)
    }
}

/// Applies `a` the way a store does: the compare-and-set must match `stored`.
fn commit(stored: Option<&Record>, a: &Admission) -> Record {
    assert!(cas_admits(stored.map(|r| r.epoch), a.expected_epoch));
    a.record.clone()
}

// --- Who may publish -------------------------------------------------------------------

/// `webhooks_cluster`, `drain`, `cluster_failover`: the encoder reconnects through the
/// load balancer to another worker while its old session still looks live; the newcomer
/// takes the stream at the next epoch and the playlist goes on.
#[test]
fn under_newest_a_newcomer_takes_a_live_stream_from_another_worker() {
    let stored = held("a", 7, T0);
    let a = admit(&worker("b"), Some(&stored), T0 + 100, &newest()).unwrap();
    assert_eq!(a.start, Start::Takeover);
    assert_eq!(a.expected_epoch, Some(7));
    assert_eq!(a.epoch(), 8);
    assert_eq!(a.record.owner, "b");
    assert_eq!(a.record.takeovers, vec![T0 + 100]);
    assert!(!a.fence_local);
    // The old holder's next write, at epoch 7, is refused.
    let now = commit(Some(&stored), &a);
    assert!(!cas_admits(Some(now.epoch), Some(7)));
}

/// `takeover-policy = refuse`: the holder keeps a stream whose lease is fresh.
#[test]
fn under_refuse_a_live_holder_on_another_worker_keeps_the_stream() {
    let stored = held("a", 7, T0);
    let just_fresh = T0 + LEASE_TIMEOUT_MS - 1;
    assert_eq!(
        admit(&worker("b"), Some(&stored), just_fresh, &refuse()),
        Err(Refusal::LiveElsewhere)
    );
}

/// `cluster_failover` (kill -9 of the owner), `cluster_split_brain` (SIGSTOP): a holder
/// that stopped renewing its lease loses the stream under either policy.
#[test]
fn a_silent_holder_loses_the_stream_once_its_lease_lapses_under_either_policy() {
    let stored = held("a", 7, T0);
    let lapsed = T0 + LEASE_TIMEOUT_MS;
    for p in [newest(), refuse()] {
        let a = admit(&worker("b"), Some(&stored), lapsed, &p).unwrap();
        assert_eq!(a.start, Start::Takeover, "{p:?}");
        assert_eq!(a.epoch(), 8);
    }
}

/// A stalled encoder's figures are renewed every second, but `updated_ms` and the lease do
/// not move: the lease is its last media, and that lapses.
#[test]
fn a_holder_that_only_renews_its_figures_still_loses_its_lease() {
    let mut stored = held("a", 7, T0);
    let w = plan_write(
        &SessionWrite {
            epoch: 7,
            recorded: true,
            fenced: false,
            changed: false,
            connected: true,
            renewal_due: true,
            written_media_ms: Some(T0),
            media_ms: T0,
            admitted_ms: T0,
            now_ms: T0,
        },
        &newest(),
    );
    assert_eq!(
        w,
        Write::Put {
            expected: Some(7),
            touch: false,
            lease_ms: Some(T0)
        }
    );
    stored.last_media_ms = Some(T0);
    assert!(!stored.live_elsewhere("b", T0 + LEASE_TIMEOUT_MS, &refuse()));
    assert!(admit(
        &worker("b"),
        Some(&stored),
        T0 + LEASE_TIMEOUT_MS,
        &refuse()
    )
    .is_ok());
}

/// `lifecycle::second_publisher_is_refused_while_the_first_streams`: a second encoder on a
/// key that is live on this very worker is refused, whatever the policy.
#[test]
fn a_live_publisher_on_this_worker_keeps_its_stream_under_either_policy() {
    let here = Here {
        live_activity_ms: Some(T0),
        ..worker("a")
    };
    let stored = held("a", 7, T0);
    for p in [newest(), refuse()] {
        assert_eq!(
            admit(&here, Some(&stored), T0 + 1_000, &p),
            Err(Refusal::LiveHere)
        );
        // Also before the stream has a record (no media yet).
        assert_eq!(admit(&here, None, T0 + 1_000, &p), Err(Refusal::LiveHere));
    }
}

/// A hung connection on this worker (no media for the lease timeout) is replaced by the
/// newcomer and fenced at once.
#[test]
fn a_hung_publisher_on_this_worker_is_replaced_and_fenced() {
    let here = Here {
        live_activity_ms: Some(T0),
        ..worker("a")
    };
    let stored = held("a", 7, T0);
    let a = admit(&here, Some(&stored), T0 + LEASE_TIMEOUT_MS, &refuse()).unwrap();
    assert!(a.fence_local);
    assert_eq!(a.start, Start::Takeover);
    assert_eq!(a.epoch(), 8);
    // Replaced before its stream had a record: the newcomer starts one, the old session
    // is fenced locally and never creates it.
    let a = admit(&here, None, T0 + LEASE_TIMEOUT_MS, &newest()).unwrap();
    assert!(a.fence_local);
    assert_eq!(a.start, Start::New);
}

/// Two encoders on one key on two workers take it from each other: after
/// [`FLAP_TAKEOVERS`] takeovers within [`FLAP_WINDOW_MS`] the newcomer is refused while the
/// holder is live.
#[test]
fn flapping_encoders_are_refused_after_four_takeovers_in_a_minute() {
    let p = newest();
    let mut stored = held("a", 1, T0);
    let mut now = T0;
    for i in 0..FLAP_TAKEOVERS {
        now += 1_000;
        let (me, other) = if i % 2 == 0 { ("b", "a") } else { ("a", "b") };
        assert_eq!(stored.owner, other);
        let a = admit(&worker(me), Some(&stored), now, &p).unwrap();
        assert_eq!(a.start, Start::Takeover);
        stored = commit(Some(&stored), &a);
        stored.last_media_ms = Some(now);
    }
    assert_eq!(stored.takeovers.len(), FLAP_TAKEOVERS);
    let me = if stored.owner == "a" { "b" } else { "a" };
    assert_eq!(
        admit(&worker(me), Some(&stored), now + 1_000, &p),
        Err(Refusal::Competing(FLAP_TAKEOVERS))
    );
    // Once the holder is silent, the newcomer gets it all the same.
    assert!(admit(&worker(me), Some(&stored), now + LEASE_TIMEOUT_MS, &p).is_ok());
    // And once the takeovers are older than the window, too.
    let later = stored.takeovers[0] + FLAP_WINDOW_MS;
    stored.last_media_ms = Some(later);
    assert_eq!(stored.recent_takeovers(later, &p), FLAP_TAKEOVERS - 1);
    assert!(admit(&worker(me), Some(&stored), later, &p).is_ok());
}

#[test]
fn the_takeover_history_keeps_the_newest_eight() {
    let mut stored = held("a", 1, T0);
    stored.takeovers = (0..MAX_TAKEOVER_HISTORY as i64)
        .map(|i| T0 - 600_000 + i)
        .collect();
    let a = admit(&worker("b"), Some(&stored), T0, &newest()).unwrap();
    assert_eq!(a.record.takeovers.len(), MAX_TAKEOVER_HISTORY);
    assert_eq!(a.record.takeovers.first(), Some(&(T0 - 600_000 + 1)));
    assert_eq!(a.record.takeovers.last(), Some(&T0));
}

// --- Resume, new playlist, new stream ------------------------------------------------------

/// `lifecycle::reconnect_within_window_continues_the_playlist`.
#[test]
fn a_publisher_back_within_the_reconnect_window_resumes_the_playlist() {
    let stored = left("a", 7, T0);
    let a = admit(&worker("a"), Some(&stored), T0 + WINDOW_MS, &newest()).unwrap();
    assert_eq!(a.start, Start::Resume);
    assert_eq!(a.epoch(), 8);
    assert!(a.record.takeovers.is_empty(), "a resume is no takeover");
    // On another worker too (the encoder came back through the load balancer).
    let a = admit(&worker("b"), Some(&stored), T0 + WINDOW_MS, &refuse()).unwrap();
    assert_eq!(a.start, Start::Resume);
}

/// `lifecycle::reconnect_after_window_starts_a_clean_playlist`: one epoch for the old
/// playlist's reset, one for the session.
#[test]
fn a_publisher_back_after_the_reconnect_window_starts_a_new_playlist() {
    let stored = left("a", 7, T0);
    let a = admit(&worker("a"), Some(&stored), T0 + WINDOW_MS + 1, &newest()).unwrap();
    assert_eq!(a.start, Start::NewPlaylist);
    assert_eq!(a.expected_epoch, Some(7));
    assert_eq!(a.epoch(), 9);
    // A holder that went silent counts from its last media.
    let silent = held("b", 7, T0);
    let a = admit(&worker("a"), Some(&silent), T0 + WINDOW_MS + 1, &refuse()).unwrap();
    assert_eq!(a.start, Start::NewPlaylist);
}

#[test]
fn an_ended_stream_gets_a_new_playlist_even_within_the_window() {
    let mut stored = left("a", 7, T0);
    stored.ended = true;
    let a = admit(&worker("a"), Some(&stored), T0 + 1, &newest()).unwrap();
    assert_eq!(a.start, Start::NewPlaylist);
    assert!(!a.record.ended);
}

#[test]
fn a_playlist_in_another_container_is_not_resumed() {
    let stored = left("a", 7, T0);
    let here = Here {
        same_container: false,
        ..worker("a")
    };
    let a = admit(&here, Some(&stored), T0 + 1, &newest()).unwrap();
    assert_eq!(a.start, Start::NewPlaylist);
}

/// `lifecycle::sigkill_and_restart_continue_the_playlist`: the restarted worker finds its
/// own record still marked live; its publisher resumes without a takeover.
#[test]
fn a_worker_restarted_after_a_kill_resumes_its_own_stream() {
    let stored = held("a", 7, T0);
    let a = admit(&worker("a"), Some(&stored), T0 + 5_000, &refuse()).unwrap();
    assert_eq!(a.start, Start::Resume);
    assert!(a.record.takeovers.is_empty());
}

/// A stream without a record: nothing is written until the first media (the writer's
/// compare-and-set on "no record"), at an epoch taken from the clock.
#[test]
fn a_new_stream_takes_its_first_epoch_from_the_clock() {
    let a = admit(&worker("a"), None, T0, &newest()).unwrap();
    assert_eq!(a.start, Start::New);
    assert_eq!(a.expected_epoch, None);
    assert_eq!(a.epoch(), first_epoch(T0));
    assert_eq!(first_epoch(-5), 1);
    assert_eq!(first_epoch(0), 1);
}

#[test]
fn a_new_record_starts_above_every_epoch_of_an_expired_one() {
    // An incarnation created at T0 with a session every second for a day, expired an hour
    // after its last session: its successor starts above its last epoch.
    let last = first_epoch(T0) + 86_400;
    let back = T0 + 86_400_000 + RETENTION_MS;
    assert!(first_epoch(back) > last);
}

/// Two workers admit a new stream at once: the first media of one creates the record; the
/// other's creation is refused and its session is over.
#[test]
fn of_two_new_sessions_only_the_first_to_write_creates_the_record() {
    let a = admit(&worker("a"), None, T0, &newest()).unwrap();
    let b = admit(&worker("b"), None, T0, &newest()).unwrap();
    assert_eq!(a.epoch(), b.epoch());
    let create = |epoch| {
        plan_write(
            &SessionWrite {
                epoch,
                recorded: false,
                fenced: false,
                changed: false,
                connected: true,
                renewal_due: false,
                written_media_ms: None,
                media_ms: T0 + 10,
                admitted_ms: T0,
                now_ms: T0 + 10,
            },
            &newest(),
        )
    };
    let Write::Put { expected, .. } = create(a.epoch()) else {
        panic!("no creation")
    };
    assert!(cas_admits(None, expected));
    let Write::Put { expected, .. } = create(b.epoch()) else {
        panic!("no creation")
    };
    assert!(!cas_admits(Some(a.epoch()), expected));
}

// --- Writes: fencing and the lease ------------------------------------------------------------

/// `cluster_split_brain`: the owner frozen by SIGSTOP wakes up after the stream moved and
/// writes at its old epoch: refused, whatever it writes.
#[test]
fn a_fenced_stale_owner_cannot_write_at_its_old_epoch() {
    let stored = held("a", 7, T0);
    let taken = commit(
        Some(&stored),
        &admit(
            &worker("b"),
            Some(&stored),
            T0 + LEASE_TIMEOUT_MS,
            &refuse(),
        )
        .unwrap(),
    );
    let stale = plan_write(
        &SessionWrite {
            epoch: 7,
            recorded: true,
            fenced: false,
            changed: true,
            connected: true,
            renewal_due: true,
            written_media_ms: Some(T0),
            media_ms: T0 + 60_000,
            admitted_ms: T0,
            now_ms: T0 + 60_000,
        },
        &newest(),
    );
    let Write::Put { expected, .. } = stale else {
        panic!("{stale:?}")
    };
    assert_eq!(expected, Some(7));
    assert!(!cas_admits(Some(taken.epoch), expected));
}

#[test]
fn a_session_replaced_here_before_its_record_existed_never_creates_it() {
    let w = plan_write(
        &SessionWrite {
            epoch: first_epoch(T0),
            recorded: false,
            fenced: true,
            changed: true,
            connected: true,
            renewal_due: true,
            written_media_ms: None,
            media_ms: T0,
            admitted_ms: T0,
            now_ms: T0,
        },
        &newest(),
    );
    assert_eq!(w, Write::Fenced);
}

/// A writer that lists one more segment after its stream was ended (by request or by the
/// sweeper) must not write it back to not ended.
#[test]
fn a_late_write_from_an_ended_session_is_refused() {
    let stored = held("a", 7, T0);
    let ended = end(&stored, T0 + 1_000).unwrap();
    assert_eq!(ended.expected_epoch, 7);
    assert_eq!(ended.record.epoch, 8);
    assert!(ended.record.ended);
    let late = plan_write(
        &SessionWrite {
            epoch: 7,
            recorded: true,
            fenced: false,
            changed: true,
            connected: false,
            renewal_due: false,
            written_media_ms: Some(T0),
            media_ms: T0,
            admitted_ms: T0,
            now_ms: T0,
        },
        &newest(),
    );
    let Write::Put { expected, .. } = late else {
        panic!("{late:?}")
    };
    assert!(!cas_admits(Some(ended.record.epoch), expected));
}

/// A late write from a session this worker already replaced or ended must not take the
/// rendered view back from the newer session (or from the ended playlist).
#[test]
fn a_late_write_from_an_ended_session_does_not_take_the_view_back() {
    let mut v = ViewHolder::default();
    assert!(v.show(1));
    // Ended by request: released, then its writer lists a last segment.
    assert!(v.release(1));
    assert!(!v.show(1));
    // Session 2 starts; session 1's end is reported late: session 2 keeps the view.
    assert!(v.show(2));
    assert!(!v.release(1));
    assert_eq!(v.owner, Some(2));
    assert!(!v.show(1));
    // A newer session owns the view: an older one cannot take it.
    assert!(v.show(3));
    assert!(!v.show(2));
}

#[test]
fn new_media_moves_the_lease_and_the_record() {
    let w = plan_write(
        &SessionWrite {
            epoch: 7,
            recorded: true,
            fenced: false,
            changed: false,
            connected: true,
            renewal_due: true,
            written_media_ms: Some(T0),
            media_ms: T0 + 900,
            admitted_ms: T0,
            now_ms: T0 + 900,
        },
        &newest(),
    );
    assert_eq!(
        w,
        Write::Put {
            expected: Some(7),
            touch: true,
            lease_ms: Some(T0 + 900)
        }
    );
}

#[test]
fn nothing_is_written_without_a_change_or_a_due_renewal() {
    let quiet = SessionWrite {
        epoch: 7,
        recorded: true,
        fenced: false,
        changed: false,
        connected: true,
        renewal_due: false,
        written_media_ms: Some(T0),
        media_ms: T0 + 500,
        admitted_ms: T0,
        now_ms: T0 + 500,
    };
    assert_eq!(plan_write(&quiet, &newest()), Write::Skip);
    // A departed publisher renews nothing.
    let gone = SessionWrite {
        connected: false,
        renewal_due: true,
        ..quiet
    };
    assert_eq!(plan_write(&gone, &newest()), Write::Skip);
}

#[test]
fn a_departing_publisher_writes_its_departure_without_a_lease() {
    let w = plan_write(
        &SessionWrite {
            epoch: 7,
            recorded: true,
            fenced: false,
            changed: true,
            connected: false,
            renewal_due: true,
            written_media_ms: Some(T0),
            media_ms: T0 + 500,
            admitted_ms: T0,
            now_ms: T0 + 500,
        },
        &newest(),
    );
    assert_eq!(
        w,
        Write::Put {
            expected: Some(7),
            touch: true,
            lease_ms: None
        }
    );
}

// --- Pull ---------------------------------------------------------------------------------

/// `cluster_pull`: of two workers with the same pull, the one that does not hold the stream
/// stands by while the holder's lease is fresh, and pulls once it lapses.
#[test]
fn a_pull_stands_by_while_another_worker_holds_a_fresh_lease() {
    let p = newest();
    let stored = held("a", 7, T0);
    assert_eq!(
        stand_by_for("b", false, Some(&stored), T0 + 1_000, &p),
        Some("a")
    );
    assert_eq!(
        stand_by_for("b", false, Some(&stored), T0 + LEASE_TIMEOUT_MS, &p),
        None
    );
    // Nobody holds it, the holder left, or it is this worker's own.
    assert_eq!(stand_by_for("b", false, None, T0, &p), None);
    assert_eq!(
        stand_by_for("b", false, Some(&left("a", 7, T0)), T0, &p),
        None
    );
    assert_eq!(stand_by_for("a", false, Some(&stored), T0, &p), None);
    assert_eq!(stand_by_for("b", true, Some(&stored), T0, &p), None);
}

/// A pull publishes with [`Takeover::Refuse`] whatever the worker's policy: two workers
/// pulling one source would otherwise take it from each other for ever.
#[test]
fn a_pull_never_takes_a_live_stream_from_another_worker() {
    let pull = newest().with_takeover(Takeover::Refuse);
    let stored = held("a", 7, T0);
    assert_eq!(
        admit(&worker("b"), Some(&stored), T0 + 1_000, &pull),
        Err(Refusal::LiveElsewhere)
    );
    let a = admit(&worker("b"), Some(&stored), T0 + LEASE_TIMEOUT_MS, &pull).unwrap();
    assert_eq!(a.start, Start::Takeover);
}

// --- End and expiry -----------------------------------------------------------------------

#[test]
fn the_sweeper_leaves_a_live_or_reconnecting_stream_alone() {
    let p = newest();
    assert_eq!(
        sweep(&held("a", 7, T0), T0 + LEASE_TIMEOUT_MS - 1, &p),
        Sweep::Keep
    );
    assert_eq!(
        sweep(&left("a", 7, T0), T0 + WINDOW_MS - 1, &p),
        Sweep::Keep
    );
}

/// `lifecycle::reconnect_after_window_starts_a_clean_playlist` (the old playlist gets
/// `EXT-X-ENDLIST` first).
#[test]
fn the_sweeper_ends_a_stream_whose_publisher_left_a_window_ago() {
    let Sweep::End(t) = sweep(&left("a", 7, T0), T0 + WINDOW_MS, &newest()) else {
        panic!("not ended")
    };
    assert_eq!(t.expected_epoch, 7);
    assert_eq!(t.record.epoch, 8);
    assert!(t.record.ended);
    assert_eq!(t.record.publisher_left_ms, Some(T0));
    assert_eq!(t.record.updated_ms, T0 + WINDOW_MS);
}

/// A dead worker, or a stalled encoder whose holder only renews its figures: ended a window
/// after its last media, at a new epoch that fences the holder.
#[test]
fn the_sweeper_ends_a_stream_whose_holder_went_silent_a_window_ago() {
    let p = newest();
    let stored = held("a", 7, T0);
    assert_eq!(sweep(&stored, T0 + WINDOW_MS - 1, &p), Sweep::Keep);
    let Sweep::End(t) = sweep(&stored, T0 + WINDOW_MS, &p) else {
        panic!("not ended")
    };
    assert_eq!(t.record.publisher_left_ms, Some(T0));
    assert!(!cas_admits(Some(t.record.epoch), Some(7)));
}

#[test]
fn ending_by_request_moves_the_epoch_past_the_holder() {
    let stored = held("a", 7, T0);
    let t = end(&stored, T0 + 500).unwrap();
    assert_eq!((t.expected_epoch, t.record.epoch), (7, 8));
    assert_eq!(t.record.publisher_left_ms, Some(T0 + 500));
    // A publisher that had left keeps its departure time.
    let t = end(&left("a", 7, T0), T0 + 500).unwrap();
    assert_eq!(t.record.publisher_left_ms, Some(T0));
    // Ending an ended stream does nothing.
    assert_eq!(end(&t.record, T0 + 600), None);
}

#[test]
fn only_ended_records_past_the_retention_expire() {
    let p = newest();
    let mut r = left("a", 7, T0);
    assert!(!r.expired(T0 + 10 * RETENTION_MS, &p), "not ended");
    r.ended = true;
    assert!(!r.expired(T0 + RETENTION_MS - 1, &p));
    assert!(r.expired(T0 + RETENTION_MS, &p));
    assert_eq!(sweep(&r, T0 + RETENTION_MS - 1, &p), Sweep::Keep);
    assert_eq!(sweep(&r, T0 + RETENTION_MS, &p), Sweep::Expire { epoch: 7 });
}

/// A session admitted for a stream without a record creates it at its first write, a
/// compare-and-set on "no record", at the epoch it took from the clock at admission. If that
/// write comes a retention after the admission (its worker frozen in between), another
/// session may have created a record meanwhile (here in the same millisecond, so at the same
/// epoch), ended it and seen it expire: the late session would recreate the record at an
/// epoch that one already wrote. From a retention after its admission on, it is fenced
/// instead; before that, any record created since is still stored and refuses the creation.
#[test]
fn a_session_without_a_record_is_fenced_a_retention_after_its_admission() {
    let p = newest();
    let late = admit(&worker("a"), None, T0, &p).unwrap();
    let other = admit(&worker("b"), None, T0, &p).unwrap();
    assert_eq!(late.epoch(), other.epoch());
    // b creates the record at T0, the stream ends at once, and its record expires.
    let created = other.record.clone();
    let ended = end(&created, T0).unwrap().record;
    let first = SessionWrite {
        epoch: late.epoch(),
        recorded: false,
        fenced: false,
        changed: true,
        connected: true,
        renewal_due: true,
        written_media_ms: None,
        media_ms: T0,
        admitted_ms: T0,
        now_ms: T0,
    };
    let first_write = |now_ms| {
        plan_write(
            &SessionWrite {
                media_ms: now_ms,
                now_ms,
                ..first
            },
            &p,
        )
    };
    // Just under a retention after a's admission, b's record is still stored: a's creation
    // is refused by the compare-and-set.
    let just_before = T0 + RETENTION_MS - 1;
    assert_eq!(sweep(&ended, just_before, &p), Sweep::Keep);
    let Write::Put { expected, .. } = first_write(just_before) else {
        panic!("no creation")
    };
    assert_eq!(expected, None);
    assert!(!cas_admits(Some(ended.epoch), expected));
    // A retention after it, b's record may be gone: a never creates the record.
    assert_eq!(
        sweep(&ended, T0 + RETENTION_MS, &p),
        Sweep::Expire { epoch: ended.epoch }
    );
    assert_eq!(first_write(T0 + RETENTION_MS), Write::Lapsed);
    assert_eq!(first_write(T0 + 2 * RETENTION_MS), Write::Lapsed);
    // A session with a record is fenced by the compare-and-set alone, however late.
    let recorded = SessionWrite {
        recorded: true,
        now_ms: T0 + 2 * RETENTION_MS,
        ..first
    };
    assert!(matches!(
        plan_write(&recorded, &p),
        Write::Put {
            expected: Some(_),
            ..
        }
    ));
}
