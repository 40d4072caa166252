//! Caps on what ingest peers can make the worker hold: connections (in total and per source
//! address), publishers, bytes of unfinished messages across connections, and log lines.
//!
//! Each cap is a small type whose guard gives back what it took when dropped, so a connection
//! task cannot leak a slot on any exit path. The RTMP and SRT drivers share one
//! [`IngestLimits`] through the worker's `Context`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use crate::config::ServeConfig;

/// Most bytes all ingest connections together may hold in unfinished messages and
/// unparsed input. A publisher holds about one frame (a keyframe of a few hundred KB, a few
/// MiB for 4K); a connection that is not publishing holds at most 64 KiB
/// (`tidegate_rtmp::session::LIMITS_BEFORE_PUBLISH`). 256 MiB lets hundreds of publishers
/// carry large keyframes at once, and keeps a swarm of connections far from this machine's
/// memory.
pub const INGEST_BUFFER_BUDGET_BYTES: usize = 256 * 1024 * 1024;

/// The caps every ingest driver (RTMP, SRT) takes from.
pub struct IngestLimits {
    /// Open ingest connections, in total and per source address (`--max-connections`,
    /// `--max-connections-per-ip`).
    pub connections: Arc<ConnectionLimiter>,
    /// Live publishers on this worker (`--max-publishers`).
    pub publishers: Arc<SlotLimiter>,
    /// Bytes of unfinished messages across connections ([`INGEST_BUFFER_BUDGET_BYTES`]).
    pub buffers: Arc<ByteBudget>,
}

impl IngestLimits {
    /// The caps the configuration names.
    pub fn new(config: &ServeConfig) -> Self {
        Self {
            connections: ConnectionLimiter::new(
                config.max_connections,
                config.max_connections_per_ip,
            ),
            publishers: SlotLimiter::new(config.max_publishers),
            buffers: ByteBudget::new(INGEST_BUFFER_BUDGET_BYTES),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data stays consistent under every panic point here (plain counters).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why a connection was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The worker holds its maximum of connections.
    MaxConnections,
    /// The peer's address holds its maximum of connections.
    PerSource,
}

impl Refusal {
    /// The metric's `reason` label.
    pub fn reason(self) -> &'static str {
        match self {
            Self::MaxConnections => "max_connections",
            Self::PerSource => "per_source",
        }
    }
}

/// Counts open connections in total and per source address.
#[derive(Debug)]
pub struct ConnectionLimiter {
    max_total: usize,
    max_per_source: usize,
    open: Mutex<OpenConnections>,
}

#[derive(Debug, Default)]
struct OpenConnections {
    total: usize,
    /// Only addresses with at least one open connection (the map never outgrows `total`).
    per_source: HashMap<IpAddr, usize>,
}

/// One open connection; dropping it gives the slot back.
#[derive(Debug)]
pub struct ConnectionPermit {
    limiter: Arc<ConnectionLimiter>,
    source: IpAddr,
}

impl ConnectionLimiter {
    /// A limiter for at most `max_total` connections, `max_per_source` from one address.
    pub fn new(max_total: usize, max_per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_source,
            open: Mutex::default(),
        })
    }

    /// Takes a slot for a connection from `source`, or says why not.
    pub fn try_acquire(self: &Arc<Self>, source: IpAddr) -> Result<ConnectionPermit, Refusal> {
        // An IPv4 peer on a dual-stack socket is the same source as on an IPv4 socket.
        let source = source.to_canonical();
        let mut open = lock(&self.open);
        if open.total >= self.max_total {
            return Err(Refusal::MaxConnections);
        }
        let from_source = open.per_source.get(&source).copied().unwrap_or(0);
        if from_source >= self.max_per_source {
            return Err(Refusal::PerSource);
        }
        open.total += 1;
        open.per_source.insert(source, from_source + 1);
        Ok(ConnectionPermit {
            limiter: self.clone(),
            source,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        lock(&self.open).total
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut open = lock(&self.limiter.open);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.per_source.remove(&self.source);
            }
        }
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

/// At most `per_second` log lines per second for one area (per-connection lines a flood of
/// peers could multiply); the rest are counted in `suppressed` and summed up in one line
/// ("suppressed K log lines") when the next line is allowed.
#[derive(Debug)]
pub struct LogLimiter {
    area: &'static str,
    per_second: u32,
    suppressed: Counter,
    window: Mutex<LogWindow>,
}

#[derive(Debug, Default)]
struct LogWindow {
    started: Option<Instant>,
    written: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// The length of one window.
    const WINDOW: Duration = Duration::from_secs(1);

    /// A limiter for `area` (a metric label: `rtmp`, `srt`, `http`) that counts what it
    /// suppresses in `suppressed`.
    pub fn new(area: &'static str, per_second: u32, suppressed: Counter) -> Self {
        Self {
            area,
            per_second,
            suppressed,
            window: Mutex::default(),
        }
    }

    /// Whether one more line may be written at `now`. The first line allowed after some
    /// were suppressed is preceded by the summary line.
    pub fn allow(&self, now: Instant) -> bool {
        let mut w = lock(&self.window);
        let expired = w
            .started
            .is_none_or(|t| now.saturating_duration_since(t) >= Self::WINDOW);
        if expired {
            if w.suppressed > 0 {
                tracing::warn!(
                    area = self.area,
                    suppressed = w.suppressed,
                    "suppressed {} log lines (more than {} a second)",
                    w.suppressed,
                    self.per_second
                );
            }
            *w = LogWindow {
                started: Some(now),
                ..LogWindow::default()
            };
        }
        if w.written < self.per_second {
            w.written += 1;
            true
        } else {
            w.suppressed += 1;
            self.suppressed.inc();
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_in_total_and_per_source_and_given_back_on_drop() {
        let limiter = ConnectionLimiter::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = limiter.try_acquire(a).unwrap();
        // The same IPv4 source seen through a dual-stack socket.
        let a2 = limiter
            .try_acquire("::ffff:192.0.2.1".parse().unwrap())
            .unwrap();
        assert_eq!(limiter.try_acquire(a).unwrap_err(), Refusal::PerSource);
        let b1 = limiter.try_acquire(b).unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        assert_eq!(limiter.try_acquire(c).unwrap_err(), Refusal::MaxConnections);
        assert_eq!(limiter.open(), 3);
        drop(a1);
        assert_eq!(limiter.open(), 2);
        let a3 = limiter.try_acquire(a).unwrap();
        drop((a2, a3, b1));
        assert_eq!(limiter.open(), 0);
        assert!(lock(&limiter.open).per_source.is_empty());
        assert_eq!(Refusal::PerSource.reason(), "per_source");
        assert_eq!(Refusal::MaxConnections.reason(), "max_connections");
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
    fn log_lines_past_the_rate_are_suppressed_counted_and_summed_up() {
        let counter = Counter::default();
        let limiter = LogLimiter::new("rtmp", 3, counter.clone());
        let t0 = Instant::now();
        let allowed = (0..10).filter(|_| limiter.allow(t0)).count();
        assert_eq!(allowed, 3);
        assert_eq!(counter.get(), 7);
        // Still the same second.
        assert!(!limiter.allow(t0 + Duration::from_millis(999)));
        assert_eq!(counter.get(), 8);
        // The next second allows lines again (after the summary line).
        assert!(limiter.allow(t0 + Duration::from_secs(1)));
        assert_eq!(lock(&limiter.window).suppressed, 0);
        assert_eq!(counter.get(), 8);
    }
}
