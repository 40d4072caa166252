//! Snapshot lookups for viewers, bounded (issue #14): a viewer's request for a stream the
//! state store has no record of reads the media store (a LIST, then a GET of the newest
//! snapshot, published.rs). Asking for random names must not turn each request into
//! storage operations, so the lookups of a worker are
//!
//! - **single-flight per stream**: a request that finds a lookup of its stream under way
//!   waits for it and takes its answer;
//! - **cached** for [`LOOKUP_TTL`], a miss as well as a hit, in at most [`MAX_CACHED`]
//!   entries (expired ones go first, then the oldest);
//! - **capped**: at most [`MAX_IN_FLIGHT`] lookups run at once; a request beyond that is
//!   answered from the state store alone (404, or 503 when it could not answer) without
//!   touching storage, counted in `tidegate_snapshot_lookups_total{answer="refused"}`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::store::{StreamId, StreamRecord};

/// How long a lookup's answer (a snapshot or none) is reused.
pub const LOOKUP_TTL: Duration = Duration::from_secs(1);
/// Answers kept at most (a few hundred bytes to a few KB each).
pub const MAX_CACHED: usize = 1024;
/// Lookups running at once at most.
pub const MAX_IN_FLIGHT: usize = 16;

/// What a request gets of [`Lookups::begin`].
pub(super) enum Lookup {
    /// A recent answer.
    Cached(Box<Option<StreamRecord>>),
    /// This request looks up; [`Flight::finish`] stores the answer.
    Run(Flight),
    /// A lookup of the stream is under way: wait with [`Wait::done`], then begin again.
    Wait(Wait),
    /// Too many lookups under way: answer without one.
    Refused,
}

/// A lookup under way elsewhere.
pub(super) struct Wait(watch::Receiver<()>);

impl Wait {
    /// Returns when that lookup finished (or was given up).
    pub(super) async fn done(mut self) {
        // Only the sender's drop ends it.
        while self.0.changed().await.is_ok() {}
    }
}

#[derive(Default)]
struct Inner {
    cache: HashMap<StreamId, (Instant, Option<StreamRecord>)>,
    in_flight: HashMap<StreamId, watch::Receiver<()>>,
}

/// The bounded lookups of one worker.
pub(super) struct Lookups {
    inner: Mutex<Inner>,
    ttl: Duration,
    max_cached: usize,
    max_in_flight: usize,
}

impl Default for Lookups {
    fn default() -> Self {
        Self::new(LOOKUP_TTL, MAX_CACHED, MAX_IN_FLIGHT)
    }
}

impl Lookups {
    pub(super) fn new(ttl: Duration, max_cached: usize, max_in_flight: usize) -> Self {
        Self {
            inner: Mutex::default(),
            ttl,
            max_cached: max_cached.max(1),
            max_in_flight: max_in_flight.max(1),
        }
    }

    /// What a request for `id` does now. `max_age`: a cached answer older than this (or
    /// than [`LOOKUP_TTL`]) is looked up again (a stream whose viewers wait for its next
    /// part while the state store is down follows its snapshot at that pace).
    pub(super) fn begin(
        self: &std::sync::Arc<Self>,
        id: &StreamId,
        max_age: Option<Duration>,
    ) -> Lookup {
        let Ok(mut inner) = self.inner.lock() else {
            return Lookup::Refused;
        };
        let ttl = max_age.map_or(self.ttl, |m| m.min(self.ttl));
        if let Some((at, answer)) = inner.cache.get(id) {
            if at.elapsed() < ttl {
                return Lookup::Cached(Box::new(answer.clone()));
            }
        }
        if let Some(rx) = inner.in_flight.get(id) {
            return Lookup::Wait(Wait(rx.clone()));
        }
        if inner.in_flight.len() >= self.max_in_flight {
            return Lookup::Refused;
        }
        let (tx, rx) = watch::channel(());
        inner.in_flight.insert(id.clone(), rx);
        Lookup::Run(Flight {
            lookups: self.clone(),
            id: id.clone(),
            _tx: tx,
        })
    }

    fn store(&self, id: &StreamId, answer: Option<StreamRecord>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.in_flight.remove(id);
        if inner.cache.len() >= self.max_cached && !inner.cache.contains_key(id) {
            let ttl = self.ttl;
            inner.cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if inner.cache.len() >= self.max_cached {
                let oldest = inner
                    .cache
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    inner.cache.remove(&oldest);
                }
            }
        }
        inner.cache.insert(id.clone(), (Instant::now(), answer));
    }

    /// Answers cached now (tests).
    #[cfg(test)]
    fn cached(&self) -> usize {
        self.inner.lock().map(|i| i.cache.len()).unwrap_or(0)
    }
}

/// The lookup this request runs; dropped without [`Flight::finish`] (the request went
/// away), it only frees its place.
pub(super) struct Flight {
    lookups: std::sync::Arc<Lookups>,
    id: StreamId,
    /// Dropped last: the waiters wake once the answer is stored.
    _tx: watch::Sender<()>,
}

impl Flight {
    pub(super) fn finish(self, answer: Option<StreamRecord>) {
        self.lookups.store(&self.id, answer);
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.lookups.inner.lock() {
            inner.in_flight.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn id(n: usize) -> StreamId {
        StreamId::new("default", &format!("s{n}")).unwrap()
    }

    /// Random names cost at most `max_in_flight` lookups at once, each name one lookup per
    /// TTL however many ask, and the cache stays within its cap.
    #[tokio::test]
    async fn lookups_are_single_flight_capped_and_cached_within_bounds() {
        let lookups = Arc::new(Lookups::new(Duration::from_secs(60), 8, 3));
        let a = match lookups.begin(&id(0), None) {
            Lookup::Run(f) => f,
            _ => panic!("the first request looks up"),
        };
        // Same stream: waits for that lookup, does not run its own.
        let wait = match lookups.begin(&id(0), None) {
            Lookup::Wait(w) => w,
            _ => panic!("a second request for the same stream waits"),
        };
        let b = match lookups.begin(&id(1), None) {
            Lookup::Run(f) => f,
            _ => panic!("another stream looks up"),
        };
        let c = match lookups.begin(&id(2), None) {
            Lookup::Run(f) => f,
            _ => panic!("a third one too"),
        };
        // The cap: a fourth stream is refused without a lookup.
        assert!(matches!(lookups.begin(&id(3), None), Lookup::Refused));
        let waiter = tokio::spawn(wait.done());
        a.finish(None);
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(lookups.begin(&id(0), None), Lookup::Cached(a) if a.is_none()));
        // A request that went away frees its place, leaving nothing cached.
        drop(b);
        assert!(matches!(lookups.begin(&id(1), None), Lookup::Run(_)));
        c.finish(None);
        // Many names: the cache keeps at most its cap, and never more than 3 run at once.
        for n in 10..200 {
            match lookups.begin(&id(n), None) {
                Lookup::Run(f) => f.finish(None),
                _ => panic!("a free place looks up"),
            }
            assert!(lookups.cached() <= 8);
        }
        assert_eq!(lookups.cached(), 8);
    }

    #[tokio::test]
    async fn an_answer_is_looked_up_again_after_its_ttl() {
        let lookups = Arc::new(Lookups::new(Duration::from_millis(1), 8, 3));
        match lookups.begin(&id(0), None) {
            Lookup::Run(f) => f.finish(None),
            _ => panic!("looks up"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(matches!(lookups.begin(&id(0), None), Lookup::Run(_)));
    }

    /// A shorter `max_age` than the TTL (a stream viewers wait on while the state store is
    /// down) looks an answer up again sooner; a longer one does not stretch the TTL.
    #[tokio::test]
    async fn a_request_may_want_a_newer_answer_than_the_ttl() {
        let lookups = Arc::new(Lookups::new(Duration::from_secs(60), 8, 3));
        match lookups.begin(&id(0), None) {
            Lookup::Run(f) => f.finish(None),
            _ => panic!("looks up"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let long = Some(Duration::from_secs(3600));
        assert!(matches!(lookups.begin(&id(0), long), Lookup::Cached(_)));
        assert!(matches!(lookups.begin(&id(0), None), Lookup::Cached(_)));
        let short = Some(Duration::from_millis(10));
        assert!(matches!(lookups.begin(&id(0), short), Lookup::Run(_)));
    }
}
