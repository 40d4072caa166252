//! The phase machine on tokio's paused clock: no test here sleeps for real.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::*;

/// What the parts of a test saw, in order.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, line: impl Into<String>) {
        self.0.lock().unwrap().push(line.into());
    }
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

#[test]
fn phases_are_ordered_as_listed_and_named() {
    let names: Vec<_> = Phase::ALL.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        names,
        ["ready", "draining", "closing", "leaving", "offline", "stopped"]
    );
    assert!(Phase::ALL.windows(2).all(|w| w[0] < w[1]));
    for (i, p) in Phase::ALL.iter().enumerate() {
        assert_eq!(p.index(), i);
    }
}

#[test]
fn phases_only_go_forward() {
    let life = Lifecycle::new();
    let watch = life.watch();
    assert!(watch.is_ready());
    assert!(life.enter(Phase::Closing));
    assert!(!life.enter(Phase::Draining), "went back to draining");
    assert!(!life.enter(Phase::Closing), "entered closing twice");
    assert_eq!(watch.phase(), Phase::Closing);
    assert!(!watch.is_ready());
    // Skipping a phase cancels its tokens too: a part stopped at Draining stops.
    assert!(life.stop_at(Phase::Draining).is_cancelled());
    assert!(!life.stop_at(Phase::Leaving).is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn shut_down_enters_every_phase_in_order_and_each_waiter_is_released_at_its_own() {
    let mut life = Lifecycle::new();
    let log = Log::default();
    let mut waiters = Vec::new();
    for phase in Phase::ALL {
        let (watch, log) = (life.watch(), log.clone());
        waiters.push(tokio::spawn(async move {
            watch.reached(phase).await;
            // The phase it was released in: its own, not a later one.
            log.push(format!("{phase} released in {}", watch.phase()));
        }));
    }
    // Each phase's work takes a second of the paused clock: a waiter released early or
    // late would see another phase.
    for phase in &Phase::ALL[1..] {
        let (watch, log, phase) = (life.watch(), log.clone(), *phase);
        life.wait_at(phase, "part", Some(Duration::from_secs(5)), async move {
            log.push(format!("{phase} work starts in {}", watch.phase()));
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
    }
    tokio::task::yield_now().await;
    assert_eq!(log.lines(), ["ready released in ready"]);
    let start = Instant::now();
    life.shut_down().await;
    for w in waiters {
        w.await.unwrap();
    }
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(5),
        "one second per phase"
    );
    let lines = log.lines();
    for phase in &Phase::ALL[1..] {
        let released = lines
            .iter()
            .position(|l| *l == format!("{phase} released in {phase}"));
        let works = lines
            .iter()
            .position(|l| *l == format!("{phase} work starts in {phase}"));
        assert!(released.is_some() && works.is_some(), "{phase}: {lines:?}");
    }
    // The work of each phase starts after the previous phase's work has ended: in order.
    let works: Vec<_> = lines.iter().filter(|l| l.contains("work")).collect();
    assert_eq!(
        works,
        [
            "draining work starts in draining",
            "closing work starts in closing",
            "leaving work starts in leaving",
            "offline work starts in offline",
            "stopped work starts in stopped",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_token_is_cancelled_when_its_phase_is_entered_and_not_before() {
    let mut life = Lifecycle::new();
    let closing = life.stop_at(Phase::Closing);
    let leaving = life.stop_at(Phase::Leaving);
    let log = Log::default();
    for phase in &Phase::ALL[1..] {
        let (c, l, log, phase) = (closing.clone(), leaving.clone(), log.clone(), *phase);
        life.wait_at(phase, "part", None, async move {
            log.push(format!(
                "{phase}: closing {}, leaving {}",
                c.is_cancelled(),
                l.is_cancelled()
            ));
        });
    }
    life.shut_down().await;
    assert_eq!(
        log.lines(),
        [
            "draining: closing false, leaving false",
            "closing: closing true, leaving false",
            "leaving: closing true, leaving true",
            "offline: closing true, leaving true",
            "stopped: closing true, leaving true",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_part_that_overruns_its_bound_is_given_up_at_the_bound() {
    let mut life = Lifecycle::new();
    let watch = life.watch();
    let stop = life.stop_at(Phase::Closing);
    // A part that ignores its stop signal.
    let stuck = tokio::spawn(async move {
        stop.cancelled().await;
        std::future::pending::<()>().await;
    });
    life.wait_at(
        Phase::Closing,
        "ingest",
        Some(Duration::from_secs(10)),
        async {
            let _ = stuck.await;
        },
    );
    let offline_at = Arc::new(Mutex::new(None));
    let seen = offline_at.clone();
    let start = Instant::now();
    let observer = tokio::spawn(async move {
        watch.reached(Phase::Offline).await;
        *seen.lock().unwrap() = Some(start.elapsed());
    });
    life.shut_down().await;
    observer.await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert_eq!(*offline_at.lock().unwrap(), Some(Duration::from_secs(10)));
}

#[tokio::test(start_paused = true)]
async fn the_parts_of_one_phase_are_awaited_at_once() {
    let mut life = Lifecycle::new();
    for secs in [2, 3] {
        life.wait_at(
            Phase::Closing,
            "part",
            Some(Duration::from_secs(5)),
            async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
            },
        );
    }
    // Bounded by itself (as the webhook queues are): awaited to the end.
    life.wait_at(Phase::Stopped, "webhooks", None, async {
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    let start = Instant::now();
    life.shut_down().await;
    assert_eq!(start.elapsed(), Duration::from_secs(3 + 60));
}

#[tokio::test(start_paused = true)]
async fn a_late_subscriber_sees_the_current_phase() {
    let life = Lifecycle::new();
    life.enter(Phase::Leaving);
    let late = life.watch();
    assert_eq!(late.phase(), Phase::Leaving);
    // Already past: returns at once, without the clock moving.
    let start = Instant::now();
    late.reached(Phase::Draining).await;
    late.reached(Phase::Leaving).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    // Not there yet: waits.
    let pending = tokio::time::timeout(Duration::from_secs(1), late.reached(Phase::Offline));
    assert!(pending.await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_watch_outliving_the_lifecycle_stops_waiting() {
    let life = Lifecycle::new();
    let watch = life.watch();
    drop(life);
    watch.reached(Phase::Stopped).await;
    assert_eq!(watch.phase(), Phase::Ready);
}

#[tokio::test(start_paused = true)]
async fn shutting_down_from_a_later_phase_joins_what_the_skipped_phases_wait_for() {
    let mut life = Lifecycle::new();
    let log = Log::default();
    let l = log.clone();
    life.wait_at(
        Phase::Draining,
        "drain",
        None,
        async move { l.push("drain") },
    );
    let l = log.clone();
    life.wait_at(Phase::Offline, "http", None, async move { l.push("http") });
    life.enter(Phase::Closing);
    life.shut_down().await;
    assert_eq!(log.lines(), ["drain", "http"]);
}

#[tokio::test(start_paused = true)]
async fn a_part_that_panics_does_not_stop_the_sequence() {
    let mut life = Lifecycle::new();
    let watch = life.watch();
    life.wait_at(
        Phase::Closing,
        "broken",
        Some(Duration::from_secs(1)),
        async {
            panic!("a part's bug");
        },
    );
    life.shut_down().await;
    assert_eq!(watch.phase(), Phase::Stopped);
}
