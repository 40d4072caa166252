//! Property tests: whatever happens — publishers arriving on several workers at once (the
//! read and the compare-and-set of an admission apart, so other workers interleave), media,
//! lease renewals, departures, ends by request, sweeps from any worker, workers frozen and
//! woken or killed, stale writes from sessions that lost the stream, the clock moving on —
//! no two sessions write the same epoch, and epochs only grow.
//!
//! The simulation drives the crate's decisions the way the server does, against a state store
//! that applies [`cas_admits`]. It freezes workers past the retention too: a session admitted
//! for a stream without a record ([`Start::New`]) whose worker wakes up a retention later,
//! after another session created a record, ended it and saw it expire, is refused its first
//! write ([`Write::Lapsed`]); without that rule it would create the record at an epoch that
//! session wrote, or below it, and the property fails
//! ([`without_the_lapse_rule_the_simulation_finds_the_gap`]). A writer's decision and its
//! compare-and-set are one step here, as [`plan_write`] requires of its caller.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use tidegate_ownership::*;

const T0: i64 = 1_800_000_000_000;
const WORKERS: [&str; 3] = ["w0", "w1", "w2"];
const WINDOW_MS: i64 = 5_000;
const RETENTION_MS: i64 = 12_000;
/// Drivers close a connection that sent no media for this long (the RTMP idle timeout).
const IDLE_MS: i64 = 6_000;
const RENEW_MS: i64 = 1_000;

#[derive(Debug, Clone)]
enum Event {
    /// The clock moves on.
    Advance(u16),
    /// The clock moves on, then every worker's sweeper runs (as it does every second).
    Pass(u16),
    /// A publisher (or a pull) arrives on a worker: the record is read and the decision taken.
    Arrive { worker: usize, pull: bool },
    /// That worker's compare-and-set of its pending admission.
    Commit { worker: usize },
    /// `Arrive` and `Commit` with no other event between them.
    Publish { worker: usize, pull: bool },
    /// The worker's live publisher delivers media (a segment is listed).
    Media { worker: usize },
    /// The writers of every session on the workers that are not frozen run (a change, a
    /// lease tick).
    Tick,
    /// The worker's live publisher leaves.
    Leave { worker: usize },
    /// An operator ends the stream through this worker's API.
    End { worker: usize },
    /// This worker's sweeper runs.
    Sweep { worker: usize },
    /// The worker is frozen (SIGSTOP) or woken (SIGCONT).
    Freeze { worker: usize },
    /// `Media` and, before any writer runs, `Freeze` (a new stream's first media may then
    /// wait past the retention for its first write).
    Stall { worker: usize },
    /// The worker is killed and restarted empty.
    Kill { worker: usize },
    /// A session that once held a record writes at its epoch as if it still held it.
    Stale { session: usize },
}

fn event() -> impl Strategy<Value = Event> {
    let w = 0..WORKERS.len();
    prop_oneof![
        3 => (0u16..4_000).prop_map(Event::Advance),
        // Past a lease, a window, a retention.
        1 => (4_000u16..16_000).prop_map(Event::Advance),
        1 => (4_000u16..30_000).prop_map(Event::Pass),
        2 => (w.clone(), any::<bool>()).prop_map(|(worker, pull)| Event::Arrive { worker, pull }),
        2 => w.clone().prop_map(|worker| Event::Commit { worker }),
        3 => (w.clone(), any::<bool>()).prop_map(|(worker, pull)| Event::Publish { worker, pull }),
        4 => w.clone().prop_map(|worker| Event::Media { worker }),
        5 => Just(Event::Tick),
        1 => w.clone().prop_map(|worker| Event::Leave { worker }),
        1 => w.clone().prop_map(|worker| Event::End { worker }),
        2 => w.clone().prop_map(|worker| Event::Sweep { worker }),
        1 => w.clone().prop_map(|worker| Event::Freeze { worker }),
        1 => w.clone().prop_map(|worker| Event::Stall { worker }),
        1 => w.clone().prop_map(|worker| Event::Kill { worker }),
        2 => (0usize..64).prop_map(|session| Event::Stale { session }),
    ]
}

/// The same event on another worker than `w0` (workers 1 and 2 only).
fn elsewhere(e: Event) -> Event {
    let o = |worker: usize| 1 + worker % 2;
    match e {
        Event::Arrive { worker, pull } => Event::Arrive {
            worker: o(worker),
            pull,
        },
        Event::Publish { worker, pull } => Event::Publish {
            worker: o(worker),
            pull,
        },
        Event::Commit { worker } => Event::Commit { worker: o(worker) },
        Event::Media { worker } => Event::Media { worker: o(worker) },
        Event::Leave { worker } => Event::Leave { worker: o(worker) },
        Event::End { worker } => Event::End { worker: o(worker) },
        Event::Sweep { worker } => Event::Sweep { worker: o(worker) },
        Event::Freeze { worker } => Event::Freeze { worker: o(worker) },
        Event::Stall { worker } => Event::Stall { worker: o(worker) },
        Event::Kill { worker } => Event::Kill { worker: o(worker) },
        e => e,
    }
}

/// Sequences that freeze `w0` right after a new stream's first media there, let the other
/// workers run (a record may come, end and expire meanwhile), then wake `w0` and run the
/// writers: the situation [`Write::Lapsed`] is for, which the free sequences of [`event`]
/// reach only rarely.
fn frozen_past_the_retention() -> impl Strategy<Value = Vec<Event>> {
    (
        prop::collection::vec(event(), 0..40),
        prop::collection::vec(event().prop_map(elsewhere), 10..200),
        prop::collection::vec(event(), 0..40),
    )
        .prop_map(|(before, meanwhile, after)| {
            let mut events = before;
            events.push(Event::Publish {
                worker: 0,
                pull: false,
            });
            events.push(Event::Stall { worker: 0 });
            events.extend(meanwhile);
            events.push(Event::Freeze { worker: 0 });
            events.push(Event::Tick);
            events.extend(after);
            events
        })
}

/// Event sequences: free ones, and some shaped by [`frozen_past_the_retention`].
fn events() -> impl Strategy<Value = Vec<Event>> {
    prop_oneof![
        1 => prop::collection::vec(event(), 1..300),
        1 => frozen_past_the_retention(),
    ]
}

/// Who wrote a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    Session(usize),
    /// The sweeper or an end request, moving the record to an epoch nobody holds.
    Ender,
}

#[derive(Debug, Clone)]
struct Session {
    worker: usize,
    epoch: u64,
    started_ms: i64,
    /// The record is in the store at `epoch` (or was, until someone moved it).
    recorded: bool,
    fenced: bool,
    connected: bool,
    changed: bool,
    media_seen: bool,
    media_ms: i64,
    written_media_ms: Option<i64>,
    last_write_ms: i64,
    /// The record as this session last wrote it (or was admitted with).
    record: Record,
    /// Its writer still runs.
    running: bool,
}

#[derive(Debug, Default)]
struct Worker {
    live: Option<usize>,
    /// An admission read and decided (at that time), not yet written.
    pending: Option<(Admission, i64)>,
    frozen: bool,
}

/// What a run went through, to show the generator reaches every situation.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    created: usize,
    takeovers: usize,
    resumes: usize,
    new_playlists: usize,
    refused: usize,
    conflicts: usize,
    ended: usize,
    expired: usize,
    recreated: usize,
    stale_refused: usize,
    /// First writes refused a retention after their admission ([`Write::Lapsed`]).
    lapsed: usize,
    /// Of those, the ones that would have reused an epoch, or gone below one: the store had
    /// no record and a higher or equal epoch had been written.
    lapsed_in_the_gap: usize,
}

impl Seen {
    fn rows(&self) -> [(&'static str, usize); 12] {
        [
            ("created", self.created),
            ("takeovers", self.takeovers),
            ("resumes", self.resumes),
            ("new_playlists", self.new_playlists),
            ("refused", self.refused),
            ("conflicts", self.conflicts),
            ("ended", self.ended),
            ("expired", self.expired),
            ("recreated", self.recreated),
            ("stale_refused", self.stale_refused),
            ("lapsed", self.lapsed),
            ("lapsed_in_the_gap", self.lapsed_in_the_gap),
        ]
    }

    fn add(&mut self, o: &Seen) {
        self.created += o.created;
        self.takeovers += o.takeovers;
        self.resumes += o.resumes;
        self.new_playlists += o.new_playlists;
        self.refused += o.refused;
        self.conflicts += o.conflicts;
        self.ended += o.ended;
        self.expired += o.expired;
        self.recreated += o.recreated;
        self.stale_refused += o.stale_refused;
        self.lapsed += o.lapsed;
        self.lapsed_in_the_gap += o.lapsed_in_the_gap;
    }
}

struct Sim {
    seen: Seen,
    now: i64,
    policy: Policy,
    store: Option<Record>,
    sessions: Vec<Session>,
    workers: Vec<Worker>,
    /// Who wrote each epoch, ever.
    writers: HashMap<u64, Writer>,
    /// The highest epoch ever stored (across expiries).
    highest: u64,
    /// Applies [`Write::Lapsed`]; `false` shows what happens without it.
    lapse_rule: bool,
    /// Every broken invariant, in order.
    violations: Vec<String>,
}

impl Sim {
    fn new(takeover: Takeover) -> Self {
        Self {
            seen: Seen::default(),
            now: T0,
            policy: Policy::new(
                takeover,
                Duration::from_millis(WINDOW_MS as u64),
                Duration::from_millis(RETENTION_MS as u64),
            ),
            store: None,
            sessions: Vec::new(),
            workers: WORKERS.iter().map(|_| Worker::default()).collect(),
            writers: HashMap::new(),
            highest: 0,
            lapse_rule: true,
            violations: Vec::new(),
        }
    }

    fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    /// The state store's compare-and-set, checking the invariants on every write it admits.
    fn cas(&mut self, expected: Option<u64>, record: Record, writer: Writer) -> bool {
        let stored = self.store.as_ref().map(|r| r.epoch);
        if !cas_admits(stored, expected) {
            self.seen.conflicts += 1;
            return false;
        }
        if stored.is_none() {
            self.seen.created += 1;
            if self.highest > 0 {
                self.seen.recreated += 1;
            }
        }
        if writer == Writer::Ender {
            self.seen.ended += 1;
        }
        match stored {
            Some(old) if record.epoch < old => self.violation(format!(
                "the epoch went back from {old} to {} ({writer:?})",
                record.epoch
            )),
            None if record.epoch <= self.highest => self.violation(format!(
                "a new record at epoch {} is not above the old incarnation's {} ({writer:?})",
                record.epoch, self.highest
            )),
            _ => {}
        }
        if let Some(w) = self.writers.insert(record.epoch, writer) {
            if w != writer {
                self.violation(format!(
                    "epoch {} written by {w:?} and by {writer:?}",
                    record.epoch
                ));
            }
        }
        self.highest = self.highest.max(record.epoch);
        self.store = Some(record);
        true
    }

    fn step(&mut self, e: &Event) {
        match *e {
            Event::Advance(ms) => {
                self.now += i64::from(ms);
                // Drivers close connections that sent no media for IDLE_MS.
                for s in &mut self.sessions {
                    if s.running
                        && s.connected
                        && !s.media_seen
                        && self.now - s.started_ms >= IDLE_MS
                    {
                        s.connected = false;
                        s.changed = true;
                        s.record.publisher_left_ms = Some(self.now);
                    }
                }
            }
            Event::Kill { worker } => {
                for s in &mut self.sessions {
                    if s.worker == worker {
                        s.running = false;
                    }
                }
                self.workers[worker] = Worker::default();
            }
            Event::Freeze { worker } => {
                self.workers[worker].frozen = !self.workers[worker].frozen;
            }
            Event::Pass(ms) => {
                self.step(&Event::Advance(ms));
                for worker in 0..WORKERS.len() {
                    self.step(&Event::Sweep { worker });
                }
            }
            Event::Stall { worker } => {
                self.step(&Event::Media { worker });
                self.workers[worker].frozen = true;
            }
            Event::Stale { session } => self.stale(session),
            Event::Tick => {
                for i in 0..self.sessions.len() {
                    let s = &self.sessions[i];
                    if s.running && !self.workers[s.worker].frozen {
                        self.write(i);
                    }
                }
            }
            _ => {}
        }
        let worker = match *e {
            Event::Arrive { worker, .. }
            | Event::Publish { worker, .. }
            | Event::Commit { worker }
            | Event::Media { worker }
            | Event::Leave { worker }
            | Event::End { worker }
            | Event::Sweep { worker } => worker,
            _ => return,
        };
        if self.workers[worker].frozen {
            return;
        }
        match *e {
            Event::Arrive { worker, pull } => self.arrive(worker, pull),
            Event::Commit { worker } => self.commit(worker),
            Event::Publish { worker, pull } => {
                self.arrive(worker, pull);
                self.commit(worker);
            }
            Event::Media { worker } => {
                if let Some(s) = self.workers[worker].live {
                    let s = &mut self.sessions[s];
                    if s.connected {
                        s.media_seen = true;
                        s.media_ms = self.now;
                        s.changed = true;
                    }
                }
            }
            Event::Leave { worker } => {
                if let Some(s) = self.workers[worker].live {
                    let s = &mut self.sessions[s];
                    if s.connected {
                        s.connected = false;
                        s.changed = true;
                        s.record.publisher_left_ms = Some(self.now);
                    }
                }
            }
            Event::End { worker } => {
                let Some(t) = self.store.as_ref().and_then(|r| end(r, self.now)) else {
                    return;
                };
                if self.cas(Some(t.expected_epoch), t.record, Writer::Ender) {
                    if let Some(s) = self.workers[worker].live.take() {
                        self.fence(s);
                    }
                }
            }
            Event::Sweep { worker } => {
                if self.workers[worker].live.is_some() {
                    return;
                }
                let Some(r) = self.store.clone() else { return };
                match sweep(&r, self.now, &self.policy) {
                    Sweep::Keep => {}
                    Sweep::End(t) => {
                        self.cas(Some(t.expected_epoch), t.record, Writer::Ender);
                    }
                    Sweep::Expire { epoch } => {
                        if self
                            .store
                            .as_ref()
                            .is_some_and(|r| r.ended && r.epoch == epoch)
                        {
                            self.store = None;
                            self.seen.expired += 1;
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn arrive(&mut self, worker: usize, pull: bool) {
        if self.workers[worker].pending.is_some() {
            // The stream's lock is held by the arrival in progress.
            return;
        }
        let live_activity_ms = self.workers[worker].live.map(|s| {
            let s = &self.sessions[s];
            s.media_ms.max(s.started_ms)
        });
        let here = Here {
            worker: WORKERS[worker],
            live_activity_ms,
            same_container: true,
        };
        let policy = if pull {
            self.policy.with_takeover(Takeover::Refuse)
        } else {
            self.policy.clone()
        };
        let admitted = admit(&here, self.store.as_ref(), self.now, &policy);
        match &admitted {
            Ok(a) if a.start == Start::Takeover => self.seen.takeovers += 1,
            Ok(a) if a.start == Start::Resume => self.seen.resumes += 1,
            Ok(a) if a.start == Start::NewPlaylist => self.seen.new_playlists += 1,
            Ok(_) => {}
            Err(_) => self.seen.refused += 1,
        }
        if let Ok(a) = admitted {
            if let Some(expected) = a.expected_epoch {
                if a.epoch() <= expected {
                    self.violation(format!("admitted at {} over {expected}", a.epoch()));
                }
            }
            self.workers[worker].pending = Some((a, self.now));
        }
    }

    fn commit(&mut self, worker: usize) {
        let Some((a, decided_ms)) = self.workers[worker].pending.take() else {
            return;
        };
        let id = self.sessions.len();
        if let Some(expected) = a.expected_epoch {
            if !self.cas(Some(expected), a.record.clone(), Writer::Session(id)) {
                return;
            }
        }
        if let Some(old) = self.workers[worker].live.take() {
            self.fence(old);
        }
        self.sessions.push(Session {
            worker,
            epoch: a.epoch(),
            started_ms: decided_ms,
            recorded: a.expected_epoch.is_some(),
            fenced: false,
            connected: true,
            changed: false,
            media_seen: false,
            media_ms: decided_ms,
            written_media_ms: None,
            last_write_ms: decided_ms,
            record: a.record,
            running: true,
        });
        self.workers[worker].live = Some(id);
    }

    /// The worker took `s` off (a newer session here, or an end request): its connection
    /// closes; its writer writes what is left and learns it was fenced.
    fn fence(&mut self, s: usize) {
        let now = self.now;
        let s = &mut self.sessions[s];
        s.fenced = true;
        if s.connected {
            s.connected = false;
            s.changed = true;
            s.record.publisher_left_ms = Some(now);
        }
    }

    fn over(&mut self, i: usize) {
        self.sessions[i].running = false;
        let w = self.sessions[i].worker;
        if self.workers[w].live == Some(i) {
            self.workers[w].live = None;
        }
    }

    /// One run of session `i`'s writer.
    fn write(&mut self, i: usize) {
        let s = self.sessions[i].clone();
        if !s.recorded && !s.media_seen {
            // Nothing is stored for a stream before its first media.
            if !s.connected {
                self.over(i);
            }
            return;
        }
        let plan = plan_write(
            &SessionWrite {
                epoch: s.epoch,
                recorded: s.recorded,
                fenced: s.fenced,
                changed: s.changed,
                connected: s.connected,
                renewal_due: self.now - s.last_write_ms >= RENEW_MS,
                written_media_ms: s.written_media_ms,
                media_ms: s.media_ms,
                // Without the rule: as if every first write came right after its admission.
                admitted_ms: if self.lapse_rule {
                    s.started_ms
                } else {
                    self.now
                },
                now_ms: self.now,
            },
            &self.policy,
        );
        match plan {
            Write::Fenced => self.over(i),
            Write::Lapsed => {
                self.seen.lapsed += 1;
                if self.store.is_none() && s.epoch <= self.highest {
                    self.seen.lapsed_in_the_gap += 1;
                }
                self.sessions[i].fenced = true;
                self.over(i);
            }
            Write::Skip => {
                if !s.connected {
                    self.over(i);
                }
            }
            Write::Put {
                expected,
                touch,
                lease_ms,
            } => {
                let mut next = s.record.clone();
                if touch {
                    next.updated_ms = self.now;
                }
                if lease_ms.is_some() {
                    next.last_media_ms = lease_ms;
                }
                if self.cas(expected, next.clone(), Writer::Session(i)) {
                    let now = self.now;
                    let s = &mut self.sessions[i];
                    s.recorded = true;
                    s.changed = false;
                    s.last_write_ms = now;
                    s.written_media_ms = next.last_media_ms;
                    s.record = next;
                    if !s.connected {
                        self.over(i);
                    }
                } else {
                    // A conflict: a newer epoch owns the stream.
                    self.sessions[i].fenced = true;
                    self.over(i);
                }
            }
        }
    }

    /// Session `i` (any, even one whose writer stopped) writes at its epoch as it last knew
    /// the record: only the compare-and-set stands in its way.
    fn stale(&mut self, i: usize) {
        let Some(s) = self.sessions.get(i % self.sessions.len().max(1)).cloned() else {
            return;
        };
        if !s.recorded {
            return;
        }
        let mut next = s.record.clone();
        next.updated_ms = self.now;
        next.ended = false;
        if !self.cas(
            Some(s.epoch),
            next,
            Writer::Session(i % self.sessions.len()),
        ) {
            self.seen.stale_refused += 1;
        }
    }
}

/// Runs the simulation on 200 event sequences from a fixed seed, alternating the takeover
/// policy: what it went through, and every broken invariant.
fn deterministic_runs(lapse_rule: bool) -> (Seen, Vec<String>) {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    let events = events();
    let mut total = Seen::default();
    let mut violations = Vec::new();
    for i in 0..200 {
        let takeover = if i % 2 == 0 {
            Takeover::Newest
        } else {
            Takeover::Refuse
        };
        let mut sim = Sim::new(takeover);
        sim.lapse_rule = lapse_rule;
        for e in &events.new_tree(&mut runner).unwrap().current() {
            sim.step(e);
        }
        total.add(&sim.seen);
        violations.append(&mut sim.violations);
    }
    (total, violations)
}

/// The simulation's event sequences reach every situation the property is about (so that
/// it passing means something): takeovers, conflicts, ends, expiries and records created
/// again after one, refused stale writes, and first writes refused a retention after their
/// admission, some of them after a record came and expired meanwhile.
#[test]
fn the_simulation_reaches_every_situation() {
    let (total, violations) = deterministic_runs(true);
    eprintln!("{total:?}");
    assert_eq!(violations, Vec::<String>::new());
    for (what, n) in total.rows() {
        assert!(n >= 10, "{what}: only {n} in 200 runs");
    }
}

/// The same runs without [`Write::Lapsed`]: a worker frozen past the retention recreates a
/// record at an epoch already written, or below one. (So the property can see the gap.)
#[test]
fn without_the_lapse_rule_the_simulation_finds_the_gap() {
    let (_, violations) = deterministic_runs(false);
    eprintln!("{violations:#?}");
    assert!(
        violations
            .iter()
            .any(|v| v.starts_with("a new record at epoch")),
        "no violation found"
    );
}

fn takeover() -> impl Strategy<Value = Takeover> {
    prop_oneof![Just(Takeover::Newest), Just(Takeover::Refuse)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// No sequence of events lets two sessions (or a session and an end) write the same
    /// epoch, and the stored epoch never goes back, not even across an expiry.
    #[test]
    fn no_two_sessions_ever_write_the_same_epoch_and_epochs_only_grow(
        policy in takeover(),
        events in events(),
    ) {
        let mut sim = Sim::new(policy);
        for e in &events {
            sim.step(e);
        }
        prop_assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    }

    /// Every admission and every end moves the epoch above the one it replaces.
    #[test]
    fn every_decision_that_writes_moves_the_epoch_up(
        epoch in 0u64..1 << 50,
        owner in 0..WORKERS.len(),
        me in 0..WORKERS.len(),
        ended in any::<bool>(),
        left in proptest::option::of(0i64..120_000),
        media in proptest::option::of(0i64..120_000),
        updated in 0i64..120_000,
        takeovers in prop::collection::vec(0i64..120_000, 0..MAX_TAKEOVER_HISTORY),
        local in proptest::option::of(0i64..120_000),
        same_container in any::<bool>(),
        policy in takeover(),
        now in 0i64..200_000,
    ) {
        let record = Record {
            epoch,
            owner: WORKERS[owner].to_owned(),
            ended,
            updated_ms: T0 + updated,
            publisher_left_ms: left.map(|l| T0 + l),
            last_media_ms: media.map(|m| T0 + m),
            takeovers: takeovers.iter().map(|t| T0 + t).collect(),
        };
        let policy = Policy::new(
            policy,
            Duration::from_millis(WINDOW_MS as u64),
            Duration::from_millis(RETENTION_MS as u64),
        );
        let now = T0 + now;
        let here = Here {
            worker: WORKERS[me],
            live_activity_ms: local.map(|l| T0 + l),
            same_container,
        };
        if let Ok(a) = admit(&here, Some(&record), now, &policy) {
            prop_assert_eq!(a.expected_epoch, Some(epoch));
            prop_assert!(a.epoch() > epoch);
            prop_assert!(!a.record.ended);
            prop_assert!(a.record.takeovers.len() <= MAX_TAKEOVER_HISTORY);
        }
        if let Some(t) = end(&record, now) {
            prop_assert_eq!(t.expected_epoch, epoch);
            prop_assert!(t.record.epoch > epoch && t.record.ended);
        }
        if let Sweep::End(t) = sweep(&record, now, &policy) {
            prop_assert_eq!(t.expected_epoch, epoch);
            prop_assert!(t.record.epoch > epoch && t.record.ended);
        }
    }
}
