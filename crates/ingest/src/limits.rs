//! Caps on what ingest peers (RTMP and SRT together) can make the worker hold:
//! connections (in total and per source address, through the descriptor reserve),
//! publishers, bytes of unfinished messages across connections, and wrong stream keys per
//! source address (a guesser's publishes are refused before their key costs a hash).
//!
//! Each cap is a small type whose guard gives back what it took when dropped, so a connection
//! task cannot leak a slot on any exit path. The RTMP and SRT drivers share one
//! [`IngestLimits`] through the worker's `Context`; the connection limiter is the one every
//! listener uses ([`crate::limits::ConnectionLimiter`]).

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::metrics::{IngestRefusal, Metrics, Protocol};
use tidegate_config::IngestConfig;
use tidegate_limits::{
    ConnectionGuard, ConnectionLimiter, FailureLimiter, FdBudget, Refusal, FAILURE_SOURCES_MAX,
};

/// Most bytes all ingest connections together may hold in unfinished messages and
/// unparsed input. A publisher holds about one frame (a keyframe of a few hundred KB, a few
/// MiB for 4K); a connection that is not publishing holds at most 64 KiB
/// (`tidegate_rtmp::session::LIMITS_BEFORE_PUBLISH`). 256 MiB lets hundreds of publishers
/// carry large keyframes at once, and keeps a swarm of connections far from this machine's
/// memory.
pub const INGEST_BUFFER_BUDGET_BYTES: usize = 256 * 1024 * 1024;

/// The caps every ingest driver (RTMP, SRT) takes from.
pub struct IngestLimits {
    /// Open ingest connections of both protocols, in total and per source address
    /// (`--max-connections`, `--max-connections-per-ip`), and the descriptor reserve.
    pub connections: ConnectionLimiter,
    /// Live publishers on this worker, of both protocols (`--max-publishers`).
    pub publishers: Arc<SlotLimiter>,
    /// Bytes of unfinished messages across connections ([`INGEST_BUFFER_BUDGET_BYTES`]).
    pub buffers: Arc<ByteBudget>,
    /// Wrong stream keys per source address (`--bad-key-limit`, `--bad-key-window`,
    /// `--bad-key-backoff`; at most [`FAILURE_SOURCES_MAX`] sources remembered): a source
    /// past the limit has its publishes refused before its key is looked at.
    pub bad_keys: FailureLimiter,
}

/// Why a publisher is refused when [`IngestLimits::publisher`] has no slot (the log line).
pub const MAX_PUBLISHERS_RULE: &str =
    "this worker has its maximum of publishers (--max-publishers)";

/// Why a publisher from an address in back-off for wrong keys is refused (RTMP
/// `NetStream.Publish.Rejected` with this description, SRT 1402 `SRT_REJX_OVERLOAD`; the
/// log line).
pub const TOO_MANY_BAD_KEYS: &str = "too many wrong stream keys from this address; try again later";

impl IngestLimits {
    /// The caps the configuration names; connections also keep out of `fds`' reserve.
    pub fn new(config: &IngestConfig, fds: Arc<FdBudget>) -> Self {
        Self {
            connections: ConnectionLimiter::new(
                config.max_connections,
                config.max_connections_per_ip,
                Some(fds),
            ),
            publishers: SlotLimiter::new(config.max_publishers),
            buffers: ByteBudget::new(INGEST_BUFFER_BUDGET_BYTES),
            bad_keys: FailureLimiter::new(
                config.bad_key_limit,
                config.bad_key_window,
                config.bad_key_backoff,
                FAILURE_SOURCES_MAX,
            ),
        }
    }

    /// Admits a `protocol` connection from `ip`, or counts why not in
    /// `tidegate_connections_refused_total{protocol,reason}` and says it.
    pub fn connection(
        &self,
        protocol: Protocol,
        ip: IpAddr,
        metrics: &Metrics,
    ) -> Result<ConnectionGuard, Refusal> {
        self.connections.try_acquire(ip).inspect_err(|refusal| {
            metrics.connection_refused(protocol, (*refusal).into());
        })
    }

    /// A publisher slot for a publish over `protocol`, held until dropped; `None` when the
    /// worker has `--max-publishers` already (counted as `reason="max_publishers"`; the
    /// caller refuses the publish, naming [`MAX_PUBLISHERS_RULE`]).
    pub fn publisher(&self, protocol: Protocol, metrics: &Metrics) -> Option<Slot> {
        let slot = self.publishers.try_acquire();
        if slot.is_none() {
            metrics.connection_refused(protocol, IngestRefusal::MaxPublishers);
        }
        slot
    }
}

/// A plain counting cap (publishers).
#[derive(Debug)]
pub struct SlotLimiter {
    max: usize,
    used: AtomicUsize,
}

/// One taken slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct Slot {
    limiter: Arc<SlotLimiter>,
}

impl SlotLimiter {
    /// A cap of `max` slots.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            used: AtomicUsize::new(0),
        })
    }

    /// Takes a slot, or `None` when all are taken.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot {
                limiter: self.clone(),
            })
    }

    /// Slots taken now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let _ = self
            .limiter
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

/// A byte budget shared by many holders (bytes of unfinished messages across connections).
#[derive(Debug)]
pub struct ByteBudget {
    max: usize,
    used: AtomicUsize,
}

/// One holder's share of a [`ByteBudget`]; dropping it gives the bytes back.
#[derive(Debug)]
pub struct BudgetShare {
    budget: Arc<ByteBudget>,
    held: usize,
}

/// Growing a share would pass the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{wanted} more bytes would pass the budget of {max} bytes ({used} in use)")]
pub struct BudgetExceeded {
    /// The growth asked for.
    pub wanted: usize,
    /// Bytes in use by every holder.
    pub used: usize,
    /// The budget.
    pub max: usize,
}

impl ByteBudget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            used: AtomicUsize::new(0),
        })
    }

    /// A share holding nothing yet.
    pub fn share(self: &Arc<Self>) -> BudgetShare {
        BudgetShare {
            budget: self.clone(),
            held: 0,
        }
    }

    /// Bytes held by every share now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The budget.
    pub fn max(&self) -> usize {
        self.max
    }
}

impl BudgetShare {
    /// Sets what this holder holds now. Shrinking always succeeds; growth that would pass
    /// the budget fails and leaves the share as it was (the holder should let go).
    pub fn set(&mut self, holding: usize) -> Result<(), BudgetExceeded> {
        let used = &self.budget.used;
        if holding <= self.held {
            used.fetch_sub(self.held - holding, Ordering::AcqRel);
        } else {
            let wanted = holding - self.held;
            let max = self.budget.max;
            used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                n.checked_add(wanted).filter(|total| *total <= max)
            })
            .map_err(|used| BudgetExceeded { wanted, used, max })?;
        }
        self.held = holding;
        Ok(())
    }

    /// Like [`set`](Self::set), but up to `guaranteed` bytes the growth always succeeds,
    /// even past the budget: an accepted publisher within its fair share
    /// (budget / `--max-publishers`) is never the one let go. The guaranteed shares together
    /// stay within the budget, so going past it only refuses the others' growth.
    pub fn set_within(&mut self, holding: usize, guaranteed: usize) -> Result<(), BudgetExceeded> {
        match self.set(holding) {
            Err(_) if holding <= guaranteed => {
                let wanted = holding - self.held;
                self.budget.used.fetch_add(wanted, Ordering::AcqRel);
                self.held = holding;
                Ok(())
            }
            other => other,
        }
    }

    /// What this holder holds.
    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for BudgetShare {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.held, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(metrics: &Metrics, protocol: Protocol, reason: IngestRefusal) -> u64 {
        metrics
            .connections_refused
            .get_or_create(&crate::metrics::ReasonLabels { protocol, reason })
            .get()
    }

    #[test]
    fn rtmp_and_srt_share_the_connection_and_publisher_caps_and_count_refusals_apart() {
        let config = tidegate_config::ServeConfig {
            max_connections: 10,
            max_connections_per_ip: 2,
            max_publishers: 1,
            ..tidegate_config::ServeConfig::default()
        }
        .ingest();
        let fds = Arc::new(FdBudget::with_counter(
            100_000,
            10,
            || Some(0),
            std::time::Duration::from_secs(3600),
        ));
        let limits = IngestLimits::new(&config, fds.clone());
        let metrics = Metrics::new();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let _rtmp = limits.connection(Protocol::Rtmp, ip, &metrics).unwrap();
        let srt = limits.connection(Protocol::Srt, ip, &metrics).unwrap();
        assert_eq!(
            fds.held(),
            2,
            "ingest connections go through the descriptor budget"
        );
        assert_eq!(
            limits.connection(Protocol::Srt, ip, &metrics).unwrap_err(),
            Refusal::PerSource
        );
        assert_eq!(
            refused(&metrics, Protocol::Srt, IngestRefusal::PerSource),
            1
        );
        assert_eq!(
            refused(&metrics, Protocol::Rtmp, IngestRefusal::PerSource),
            0
        );
        drop(srt);
        let _again = limits.connection(Protocol::Rtmp, ip, &metrics).unwrap();

        let publishing = limits.publisher(Protocol::Rtmp, &metrics).unwrap();
        assert!(limits.publisher(Protocol::Srt, &metrics).is_none());
        assert_eq!(
            refused(&metrics, Protocol::Srt, IngestRefusal::MaxPublishers),
            1
        );
        drop(publishing);
        assert!(limits.publisher(Protocol::Srt, &metrics).is_some());
    }

    #[test]
    fn slots_are_capped_and_given_back_on_drop() {
        let slots = SlotLimiter::new(2);
        let one = slots.try_acquire().unwrap();
        let two = slots.try_acquire().unwrap();
        assert!(slots.try_acquire().is_none());
        assert_eq!(slots.used(), 2);
        drop(one);
        let three = slots.try_acquire().unwrap();
        drop((two, three));
        assert_eq!(slots.used(), 0);
        assert_eq!(slots.max(), 2);
    }

    #[test]
    fn a_share_that_would_pass_the_budget_is_refused_and_shares_give_back_on_drop() {
        let budget = ByteBudget::new(1000);
        let mut a = budget.share();
        let mut b = budget.share();
        a.set(600).unwrap();
        b.set(300).unwrap();
        assert_eq!(budget.used(), 900);
        let err = b.set(500).unwrap_err();
        assert_eq!(
            err,
            BudgetExceeded {
                wanted: 200,
                used: 900,
                max: 1000
            }
        );
        assert_eq!(b.held(), 300, "a refused growth changes nothing");
        a.set(100).unwrap();
        b.set(500).unwrap();
        assert_eq!(budget.used(), 600);
        drop(a);
        assert_eq!(budget.used(), 500);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_guaranteed_share_grows_past_a_full_budget_and_the_others_are_refused() {
        let budget = ByteBudget::new(1000);
        let mut publisher = budget.share();
        let mut others = budget.share();
        others.set(900).unwrap();
        // Within its guaranteed 500 bytes the publisher grows though the budget is full.
        publisher.set_within(400, 500).unwrap();
        assert_eq!(budget.used(), 1300);
        // Above it, it is refused like anyone.
        assert!(publisher.set_within(600, 500).is_err());
        assert_eq!(publisher.held(), 400);
        // The others cannot grow until the total is under the budget again.
        assert!(others.set(901).is_err());
        others.set(100).unwrap();
        others.set(600).unwrap();
        drop((publisher, others));
        assert_eq!(budget.used(), 0);
    }
}
